//! Faults that must not lose data: corrupt or truncated exports, a memory limit that is
//! reached, and a full disk. Each run either succeeds with correct marts or fails with a
//! clear error; the previous marts stay live and the exports are never modified.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use common::{read_parquet_rows, walk, Project};

fn run(p: &Project, extra_env: &[(&str, &str)]) -> common::Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crm-marts"));
    cmd.args([
        "run",
        "pipelines/mini.yaml",
        "--config",
        "config/env.yaml",
        "--as-of",
        "2026-11-22",
    ])
    .current_dir(p.dir.path())
    .env("CRM_MARTS_LOG", "info");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    common::Run(cmd.output().unwrap())
}

fn snapshot(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect()
}

fn totals(p: &Project) -> Vec<(String, String)> {
    common::mart_totals(&p.path("marts"))
}

#[test]
fn truncated_and_corrupt_exports_are_quarantined_or_fail_naming_the_file() {
    let p = Project::from_fixture("mini");
    run(&p, &[]).expect_code(0);
    let before = totals(&p);

    // An export cut off in the middle of its last row (a transfer that broke off).
    let mut csv = std::fs::read_to_string(p.path("exports/orders.csv")).unwrap();
    csv.push_str("O9,C1,2026-0");
    p.write("exports/orders.csv", &csv);
    let out = run(&p, &[]).expect_code(0);
    assert!(
        out.stderr().contains("rows quarantined"),
        "{}",
        out.stderr()
    );
    let quarantine: Vec<PathBuf> = walk(&p.path("marts/_quarantine"))
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("orders"))
        .collect();
    let latest = quarantine.iter().max().unwrap();
    let rows = read_parquet_rows(latest);
    let cut = rows
        .iter()
        .find(|r| r["record"].contains("O9"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(cut["file"].ends_with("exports/orders.csv"), "{cut:?}");
    assert_eq!(cut["line"], "9", "{cut:?}");
    assert_eq!(totals(&p), before, "the cut row is not counted");

    // A Parquet export that is not Parquet at all: the run fails naming it.
    let text = std::fs::read_to_string(p.path("pipelines/mini.yaml")).unwrap();
    let text = text.replace(
        "steps:\n",
        "  stock:\n    store: exports\n    path: stock.parquet\n    format: parquet\nsteps:\n",
    );
    p.write("pipelines/mini.yaml", &text);
    p.write("sql/staging/stg_stock.sql", "SELECT * FROM stock\n");
    let text = text.replace(
        "  - sql: staging/stg_orders.sql\n",
        "  - sql: staging/stg_orders.sql\n  - sql: staging/stg_stock.sql\n",
    );
    p.write("pipelines/mini.yaml", &text);
    p.write(
        "exports/stock.parquet",
        "PAR1 this file was overwritten by a broken export job",
    );
    let mut exports = snapshot(&p.path("exports"));
    exports.sort();
    let out = run(&p, &[]).expect_code(1);
    assert!(
        out.stderr().contains("stock.parquet"),
        "the file is named: {}",
        out.stderr()
    );
    assert_eq!(totals(&p), before, "the previous marts stay live");

    let mut after = snapshot(&p.path("exports"));
    after.sort();
    assert!(exports == after, "the exports were modified");
}

/// `rows` orders over `customers` customers, as CSV.
fn orders_csv(rows: usize, customers: usize) -> String {
    let mut csv = String::from("order_id,customer_id,order_date,quantity\n");
    for i in 0..rows {
        let _ = writeln!(
            csv,
            "O{i:07},C{:05},2026-{:02}-{:02},{}",
            (i * 7919) % customers,
            1 + i % 12,
            1 + i % 28,
            1 + i % 5
        );
    }
    csv
}

/// A small pool for the query engine, inside a process limit that leaves room for the rest.
fn with_limit(p: &Project, pool: &str) {
    p.write(
        "config/env.yaml",
        &format!("stores:\n  exports:\n    url: exports\n  marts:\n    url: marts\nexecution:\n  memory_limit: 2GiB\n  engine_memory: {pool}\n  target_partitions: 2\n"),
    );
}

#[test]
fn under_a_small_memory_limit_sorts_spill_and_a_join_that_cannot_fails_naming_the_limit() {
    let p = Project::from_fixture("mini");
    p.write("exports/orders.csv", &orders_csv(600_000, 40_000));
    // A window function over every order: its sort holds more rows than the limit.
    p.write(
        "sql/marts/mart_totals.sql",
        "SELECT customer_id, sum(quantity) AS quantity, max(n) AS orders FROM (\n  SELECT customer_id, quantity, row_number() OVER (PARTITION BY customer_id ORDER BY order_date, order_id) AS n FROM stg_orders\n) t GROUP BY customer_id\n",
    );
    with_limit(&p, "1GiB");
    run(&p, &[]).expect_code(0);
    let unlimited = read_parquet_rows(&p.path("marts/mart_totals.parquet"));
    assert_eq!(unlimited.len(), 40_000);

    with_limit(&p, "16MiB");
    let out = run(
        &p,
        &[(
            "CRM_MARTS_LOG",
            "info,datafusion_physical_plan::sorts=debug",
        )],
    )
    .expect_code(0);
    assert!(
        out.stderr().contains("Spilling sort data"),
        "the sort spilled:\n{}",
        out.stderr()
    );
    let mut limited = read_parquet_rows(&p.path("marts/mart_totals.parquet"));
    let mut expected = unlimited.clone();
    limited.sort();
    expected.sort();
    assert!(limited == expected, "the spilled sort gives the same mart");

    // The hash table of a join cannot spill: past the limit the run fails naming it.
    p.write("sql/marts/mart_totals.sql", "SELECT a.customer_id, count(*) AS quantity FROM stg_orders a JOIN stg_orders b ON a.order_id = b.order_id GROUP BY a.customer_id\n");
    with_limit(&p, "4MiB");
    let out = run(&p, &[]).expect_code(1);
    let err = out.stderr();
    assert!(
        err.contains("Resources exhausted") && err.contains("memory pool is 4.0 MiB"),
        "{err}"
    );
    assert!(err.contains("mart_totals.sql"), "{err}");
    let mut live = read_parquet_rows(&p.path("marts/mart_totals.parquet"));
    live.sort();
    assert!(live == expected, "the previous mart stays live");

    // memory_limit bounds the whole process: a process past it is stopped, naming the
    // limit and what was running, and fails as a resource failure.
    p.write(
        "config/env.yaml",
        "stores:\n  exports:\n    url: exports\n  marts:\n    url: marts\nexecution:\n  memory_limit: 24MiB\n  engine_memory: 8MiB\n",
    );
    let err = run(&p, &[]).expect_code(1).stderr();
    assert!(
        err.contains("loading the sources: the process reached")
            && err.contains("past the run's memory limit of 0.02 GiB"),
        "{err}"
    );
    assert!(err.contains("kind=resource"), "{err}");
    let mut live = read_parquet_rows(&p.path("marts/mart_totals.parquet"));
    live.sort();
    assert!(live == expected, "the previous mart stays live");
}

#[test]
fn a_full_disk_fails_the_run_cleanly() {
    let p = Project::from_fixture("mini");
    p.write("exports/orders.csv", &orders_csv(50_000, 5_000));
    run(&p, &[]).expect_code(0);
    let before = totals(&p);
    let exports = snapshot(&p.path("exports"));
    p.write("exports/orders.csv", &orders_csv(200_000, 5_000));
    let exports_now = snapshot(&p.path("exports"));
    assert!(exports != exports_now);

    // Files may grow to 256 KiB, as on a disk that fills up: writes past it fail with
    // EFBIG ("File too large") instead of the signal that would end the process.
    let bin = env!("CARGO_BIN_EXE_crm-marts");
    let script = format!(
        "ulimit -f 512; trap '' XFSZ; exec '{bin}' run pipelines/mini.yaml --config config/env.yaml --as-of 2026-11-22"
    );
    let out = common::Run(
        Command::new("sh")
            .args(["-c", &script])
            .current_dir(p.dir.path())
            .env("CRM_MARTS_LOG", "info")
            .output()
            .unwrap(),
    );
    let out = out.expect_code(1);
    assert!(
        out.stderr().to_lowercase().contains("file too large"),
        "{}",
        out.stderr()
    );
    assert_eq!(totals(&p), before, "the previous marts stay live");
    assert!(
        snapshot(&p.path("exports")) == exports_now,
        "the exports were not touched"
    );

    // With space again, the next run succeeds.
    run(&p, &[]).expect_code(0);
    assert_ne!(totals(&p), before);
}
