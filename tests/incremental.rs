//! Incremental sources: a run parses only the export files that are new or changed since
//! the last successful run (by path, size and etag), or modified within the late-data
//! window before it; the rest come from the staged copies that run kept. The marts are the
//! same as a full refresh would give.

mod common;

use std::collections::BTreeMap;

use common::Project;

const HEADER: &str = "order_id,customer_id,order_date,quantity\n";

fn setup(late_window_hours: u32) -> Project {
    let p = Project::from_fixture("mini");
    let text = std::fs::read_to_string(p.path("pipelines/mini.yaml")).unwrap();
    let text = text.replace(
        "    path: orders.csv\n",
        &format!(
            "    path: orders/\n    incremental: {{ late_window_hours: {late_window_hours} }}\n"
        ),
    );
    p.write("pipelines/mini.yaml", &text);
    std::fs::remove_file(p.path("exports/orders.csv")).unwrap();
    p.write(
        "exports/orders/day1.csv",
        &format!("{HEADER}O1,C1,2026-01-01,2\nO2,C2,2026-01-01,3\n"),
    );
    p.write(
        "exports/orders/day2.csv",
        &format!("{HEADER}O3,C1,2026-01-02,5\n"),
    );
    p
}

fn run(p: &Project, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "run",
        "pipelines/mini.yaml",
        "--config",
        "config/env.yaml",
        "--as-of",
        "2026-11-22",
    ];
    args.extend_from_slice(extra);
    p.run(&args).expect_code(0);
    latest_manifest(p)
}

fn latest_manifest(p: &Project) -> serde_json::Value {
    let mut names: Vec<_> = common::manifest_files(&p.path("marts/_runs"));
    names.sort();
    serde_json::from_slice(&std::fs::read(names.last().unwrap()).unwrap()).unwrap()
}

/// file name -> reused?
fn reads(manifest: &serde_json::Value) -> BTreeMap<String, bool> {
    manifest["inputs"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = f["path"].as_str().unwrap();
            (
                path.rsplit('/').next().unwrap().to_string(),
                f["reused"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn totals(p: &Project) -> Vec<(String, String)> {
    common::mart_totals(&p.path("marts"))
}

fn t(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn staged_copies(p: &Project) -> usize {
    std::fs::read_dir(p.path("marts/_state/mini/orders/files"))
        .unwrap()
        .count()
}

/// Sets a file's modification time into the past, as an export delivered earlier.
fn age(p: &Project, rel: &str, hours: u64) {
    let file = std::fs::File::options()
        .write(true)
        .open(p.path(rel))
        .unwrap();
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(hours * 3600);
    file.set_modified(when).unwrap();
}

#[test]
fn only_new_and_changed_files_are_parsed_and_the_marts_match_a_full_refresh() {
    let p = setup(1);
    age(&p, "exports/orders/day1.csv", 48);
    age(&p, "exports/orders/day2.csv", 48);

    let first = run(&p, &[]);
    assert_eq!(
        reads(&first),
        BTreeMap::from([("day1.csv".into(), false), ("day2.csv".into(), false)])
    );
    assert_eq!(totals(&p), t(&[("C1", "7"), ("C2", "3")]));
    assert_eq!(staged_copies(&p), 2);

    // A new file with one bad row: only it is parsed, and only its bad row is quarantined.
    p.write(
        "exports/orders/day3.csv",
        &format!("{HEADER}O4,C2,2026-01-03,1\nO5,C3,2026-13-03,1\n"),
    );
    age(&p, "exports/orders/day3.csv", 48);
    let second = run(&p, &[]);
    assert_eq!(
        reads(&second),
        BTreeMap::from([
            ("day1.csv".into(), true),
            ("day2.csv".into(), true),
            ("day3.csv".into(), false)
        ])
    );
    assert_eq!(second["quarantined_rows"], 1);
    assert_eq!(
        second["inputs"][0]["rows"], 5,
        "rows of all files, reused or parsed"
    );
    assert_eq!(totals(&p), t(&[("C1", "7"), ("C2", "4")]));

    // A corrected export (same name, new content) is parsed again.
    p.write(
        "exports/orders/day2.csv",
        &format!("{HEADER}O3,C1,2026-01-02,5\nO6,C3,2026-01-02,9\n"),
    );
    age(&p, "exports/orders/day2.csv", 48);
    let third = run(&p, &[]);
    assert_eq!(
        reads(&third),
        BTreeMap::from([
            ("day1.csv".into(), true),
            ("day2.csv".into(), false),
            ("day3.csv".into(), true)
        ])
    );
    assert_eq!(totals(&p), t(&[("C1", "7"), ("C2", "4"), ("C3", "9")]));

    // A withdrawn export leaves the marts, and its staged copy is removed.
    std::fs::remove_file(p.path("exports/orders/day1.csv")).unwrap();
    run(&p, &[]);
    assert_eq!(totals(&p), t(&[("C1", "5"), ("C2", "1"), ("C3", "9")]));
    assert_eq!(staged_copies(&p), 2);

    // A file modified within the late-data window before the last run is read again by
    // the next run, even though its size and etag are what that run saw: it may have been
    // still being written when that run listed it.
    p.write(
        "exports/orders/day5.csv",
        &format!("{HEADER}O8,C5,2026-01-05,1\n"),
    );
    let fresh = run(&p, &[]);
    assert_eq!(reads(&fresh)["day5.csv"], false);
    let late = run(&p, &[]);
    assert_eq!(
        reads(&late),
        BTreeMap::from([
            ("day2.csv".into(), true),
            ("day3.csv".into(), true),
            ("day5.csv".into(), false)
        ])
    );

    // A failed run records nothing: the next run reuses what the last good one kept.
    std::fs::remove_file(p.path("exports/orders/day5.csv")).unwrap();
    p.write(
        "exports/orders/day4.csv",
        &format!("{HEADER}O7,C4,2026-01-04,2\n"),
    );
    age(&p, "exports/orders/day4.csv", 48);
    let good_sql = std::fs::read_to_string(p.path("sql/marts/mart_totals.sql")).unwrap();
    p.write(
        "sql/marts/mart_totals.sql",
        "SELECT customer_id, CAST(customer_id AS INT) AS quantity FROM stg_orders\n",
    );
    p.run(&[
        "run",
        "pipelines/mini.yaml",
        "--config",
        "config/env.yaml",
        "--as-of",
        "2026-11-22",
    ])
    .expect_code(1);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.path("marts/_state/mini/orders/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["run_id"], late["run_id"],
        "the failed run did not record its files"
    );
    p.write("sql/marts/mart_totals.sql", &good_sql);
    let after_failure = run(&p, &[]);
    assert_eq!(
        reads(&after_failure),
        BTreeMap::from([
            ("day2.csv".into(), true),
            ("day3.csv".into(), true),
            ("day4.csv".into(), false)
        ]),
    );
    let incremental = totals(&p);
    assert_eq!(
        incremental,
        t(&[("C1", "5"), ("C2", "1"), ("C3", "9"), ("C4", "2")])
    );

    // A full refresh parses everything and gives the same marts.
    let full = run(&p, &["--full-refresh"]);
    assert!(
        reads(&full).values().all(|reused| !reused),
        "{:?}",
        reads(&full)
    );
    assert_eq!(totals(&p), incremental);
    assert_eq!(staged_copies(&p), 3);
}

#[test]
fn a_changed_schema_reads_every_file_again_and_incremental_needs_a_staged_source() {
    let p = setup(0);
    run(&p, &[]);
    let again = run(&p, &[]);
    assert!(
        reads(&again).values().all(|reused| *reused),
        "{:?}",
        reads(&again)
    );
    let text = std::fs::read_to_string(p.path("pipelines/mini.yaml")).unwrap();
    // quantity becomes a float: the staged copies no longer fit.
    p.write(
        "pipelines/mini.yaml",
        &text.replace(
            "{ name: quantity, type: int }",
            "{ name: quantity, type: float }",
        ),
    );
    let m = run(&p, &[]);
    assert!(reads(&m).values().all(|reused| !reused), "{:?}", reads(&m));

    // A Parquet source is read by DataFusion directly: nothing to stage, so it is refused.
    let text = std::fs::read_to_string(p.path("pipelines/mini.yaml")).unwrap();
    p.write(
        "pipelines/mini.yaml",
        &text.replace("format: csv", "format: parquet"),
    );
    let out = p
        .run(&["validate", "pipelines/mini.yaml", "config/env.yaml"])
        .expect_code(2);
    assert!(
        out.stderr().contains("sources.orders.incremental"),
        "{}",
        out.stderr()
    );
    assert!(
        out.stderr().contains("mini.yaml:"),
        "located: {}",
        out.stderr()
    );
}
