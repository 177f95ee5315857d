//! Every mart is read back by the readers BI stacks use, pyarrow and DuckDB, from the
//! layout the README tells BI tools to point at. The suite installs both itself.

mod common;

use common::{repo, run_python, Project};

#[test]
fn pyarrow_and_duckdb_read_every_mart_from_the_documented_layout() {
    let p = Project::new();
    let dir = p.path("demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args(["demo", "--customers", "200", "--seed", "5", "--dir"])
        .arg(&dir)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let marts = dir.join("marts");
    let manifest_path = common::manifest_files(&marts.join("_runs")).pop().unwrap();
    let script = format!(
        r#"
import json, duckdb, pyarrow.parquet as pq
marts = {marts:?}
manifest = json.load(open({manifest:?}))
for out in manifest["outputs"]:
    name = out["mart"]
    path = f"{{marts}}/{{name}}.parquet"
    table = pq.read_table(path)
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{{path}}')").fetchall()[0][0]
    assert table.num_rows == out["rows"] == n, (name, table.num_rows, out["rows"], n)
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD", meta.row_group(0).column(0).compression
    assert meta.row_group(0).column(0).statistics is not None
    print(name, n)
types = {{r[0]: r[1] for r in duckdb.sql(f"DESCRIBE SELECT * FROM '{{marts}}/mart_rfm.parquet'").fetchall()}}
assert types["recency_days"] in ("INTEGER", "BIGINT"), types
assert types["last_order_date"] == "DATE", types
assert types["monetary"] == "DOUBLE", types
segments = duckdb.sql(f"SELECT count(DISTINCT rfm_segment) FROM '{{marts}}/mart_rfm.parquet'").fetchall()[0][0]
assert segments >= 5, segments
q = duckdb.sql(f"SELECT count(*), count(DISTINCT reason) FROM '{{marts}}/_quarantine/*/*.parquet'").fetchall()[0]
assert q[0] == manifest["quarantined_rows"], (q, manifest["quarantined_rows"])
print("quarantine", q[0])
"#,
        marts = marts.to_string_lossy(),
        manifest = manifest_path.to_string_lossy()
    );
    let printed = run_python(&script);
    assert!(
        printed.contains("mart_rfm") && printed.contains("mart_abc_summary"),
        "{printed}"
    );
}

#[test]
fn duckdb_reads_a_partitioned_mart_through_its_live_folder() {
    let p = Project::from_fixture("mini");
    let text = std::fs::read_to_string(p.path("pipelines/mini.yaml")).unwrap();
    p.write(
        "pipelines/mini.yaml",
        &text.replace(
            "  - sql: marts/mart_totals.sql\n",
            "  - sql: marts/mart_totals.sql\n    partition_by: [customer_id]\n",
        ),
    );
    for _ in 0..2 {
        p.run(&[
            "run",
            "pipelines/mini.yaml",
            "--config",
            "config/env.yaml",
            "--as-of",
            "2026-11-22",
        ])
        .expect_code(0);
    }
    let live = p.path("marts/mart_totals");
    let script = format!(
        r#"
import duckdb
rows = duckdb.sql("SELECT customer_id, quantity FROM read_parquet('{live}/**/*.parquet', hive_partitioning = true) ORDER BY 1").fetchall()
assert [(str(c), int(q)) for c, q in rows] == [("C1", 5), ("C3", 4)], rows
print("ok")
"#,
        live = live.to_string_lossy()
    );
    assert_eq!(run_python(&script).trim(), "ok");
}
