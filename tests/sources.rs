//! Source formats and locations: NDJSON with quarantine, a folder as prefix, a glob,
//! schema inference, Parquet, optional sources and seeds.

mod common;

use common::{read_parquet_rows, Project};

const ENV: &str = "stores:\n  exports:\n    url: exports\n  marts:\n    url: marts\n";

fn project(pipeline: &str, sql: &[(&str, &str)]) -> Project {
    let p = Project::new();
    p.write("config/env.yaml", ENV);
    p.write("pipelines/p.yaml", pipeline);
    for (file, text) in sql {
        p.write(&format!("sql/{file}"), text);
    }
    p
}

fn run(p: &Project) -> common::Run {
    p.run(&["run", "pipelines/p.yaml", "--config", "config/env.yaml"])
}

#[test]
fn ndjson_rows_that_do_not_fit_are_quarantined_with_line_numbers() {
    let p = project(
        r#"name: p
sources:
  events:
    store: exports
    path: app/
    format: ndjson
    error_budget: { max_fraction: 0.6 }
    schema:
      - { name: id, type: int, required: true }
      - { name: at, type: timestamp }
      - { name: ok, type: bool }
steps:
  - sql: marts/mart_events.sql
publish: { store: marts }
"#,
        &[(
            "marts/mart_events.sql",
            "SELECT id, at, ok FROM events ORDER BY id\n",
        )],
    );
    p.write(
        "exports/app/2026-11-01.ndjson",
        "{\"id\": 1, \"at\": \"2026-03-29T02:30:00+02:00\", \"ok\": true}\n{\"id\": \"x\"}\n\n{not json\n",
    );
    p.write(
        "exports/app/2026-11-02.ndjson",
        "{\"id\": 2, \"ok\": \"no\"}\n{\"at\": \"2026-01-01T00:00:00Z\"}\n",
    );
    p.write("exports/app/_SUCCESS", "");
    run(&p).expect_code(0);
    let rows = read_parquet_rows(&p.path("marts/mart_events.parquet"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["at"], "2026-03-29T00:30:00Z", "offsets become UTC");
    assert_eq!(rows[1]["ok"], "false");
    let q = common::walk(&p.path("marts/_quarantine"));
    let mut bad: Vec<(String, String)> = read_parquet_rows(&q[0])
        .iter()
        .map(|r| {
            (
                format!("{}:{}", r["file"].rsplit('/').next().unwrap(), r["line"]),
                r["reason"].clone(),
            )
        })
        .collect();
    bad.sort();
    assert_eq!(
        bad[0],
        (
            "2026-11-01.ndjson:2".into(),
            "column `id`: \"x\" is not an integer".into()
        )
    );
    assert!(
        bad[1].0 == "2026-11-01.ndjson:4" && bad[1].1.starts_with("invalid JSON"),
        "{bad:?}"
    );
    assert_eq!(
        bad[2],
        (
            "2026-11-02.ndjson:2".into(),
            "required column `id` is empty".into()
        )
    );
}

#[test]
fn globs_inference_parquet_seeds_and_optional_sources() {
    let p = project(
        r#"name: p
sources:
  sales:
    store: exports
    path: "sales/*/part-*.csv"
    format: csv
  sales_copy:
    store: marts
    path: mart_sales.parquet
    format: parquet
    optional: true
    schema:
      - { name: region, type: string }
      - { name: amount, type: float }
      - { name: currency, type: string }
  regions:
    seed: regions.csv
    format: csv
steps:
  - sql: marts/mart_sales.sql
  - sql: marts/mart_previous.sql
publish: { store: marts }
"#,
        &[
            ("marts/mart_sales.sql", "SELECT s.region, r.name, sum(s.amount) AS amount FROM sales s JOIN regions r ON r.region = s.region GROUP BY 1, 2\n"),
            ("marts/mart_previous.sql", "SELECT count(*) AS rows_before, count(currency) AS with_currency FROM sales_copy\n"),
            ("seeds/regions.csv", "region,name\nN,North\nS,South\n"),
        ],
    );
    p.write(
        "exports/sales/2026/part-1.csv",
        "region,amount\nN,10.5\nS,1\n",
    );
    p.write("exports/sales/2027/part-2.csv", "region,amount\nN,2\n");
    p.write("exports/sales/2027/other.csv", "region,amount\nN,1000\n");
    run(&p).expect_code(0);
    let mut rows: Vec<(String, String)> = read_parquet_rows(&p.path("marts/mart_sales.parquet"))
        .iter()
        .map(|r| (r["name"].clone(), r["amount"].clone()))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("North".into(), "12.5".into()),
            ("South".into(), "1.0".into())
        ]
    );
    assert_eq!(
        read_parquet_rows(&p.path("marts/mart_previous.parquet"))[0]["rows_before"],
        "0",
        "first run: empty"
    );
    run(&p).expect_code(0);
    let previous = &read_parquet_rows(&p.path("marts/mart_previous.parquet"))[0];
    assert_eq!(
        previous["rows_before"], "2",
        "second run reads the first's mart"
    );
    // A declared optional column the Parquet file lacks reads as NULL; a required one fails.
    assert_eq!(previous["with_currency"], "0");
    let pipeline = std::fs::read_to_string(p.path("pipelines/p.yaml")).unwrap();
    p.write(
        "pipelines/p.yaml",
        &pipeline.replace(
            "{ name: currency, type: string }",
            "{ name: currency, type: string, required: true }",
        ),
    );
    let failed = run(&p).expect_code(1);
    assert!(failed.stderr().contains("currency"), "{}", failed.stderr());
}

#[test]
fn whitespace_separated_exports_are_read_by_position() {
    let p = project(
        r#"name: p
sources:
  tx:
    store: exports
    path: tx.txt
    format: csv
    csv: { delimiter: whitespace, header: false }
    error_budget: { max_rows: 1 }
    schema:
      - { name: customer, type: string, required: true }
      - { name: sample, type: string }
      - { name: day, type: date, formats: ["%Y%m%d"] }
      - { name: quantity, type: int }
      - { name: amount, type: float }
steps:
  - sql: marts/mart_tx.sql
publish: { store: marts }
"#,
        &[("marts/mart_tx.sql", "SELECT customer, min(day) AS first_day, sum(amount) AS amount FROM tx GROUP BY customer\n")],
    );
    p.write("exports/tx.txt", " 00004 0001 19970101  2   29.33\n 00004 0001 19970118  2   29.73\n 00021 0002 19970101  3   63.34\n 00022 0003 1997010x  1   1.00\n");
    run(&p).expect_code(0);
    let mut rows: Vec<(String, String, String)> =
        read_parquet_rows(&p.path("marts/mart_tx.parquet"))
            .iter()
            .map(|r| {
                (
                    r["customer"].clone(),
                    r["first_day"].clone(),
                    r["amount"].clone(),
                )
            })
            .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("00004".into(), "1997-01-01".into(), "59.06".into()),
            ("00021".into(), "1997-01-01".into(), "63.34".into())
        ]
    );
}

#[test]
fn a_header_without_a_declared_column_is_named_in_every_csv_dialect() {
    for (csv, sep) in [
        ("{ delimiter: whitespace, header: true }", "  "),
        ("{ delimiter: \";\" }", ";"),
        ("{ delimiter: \",\" }", ","),
        ("{ delimiter: \"\\t\" }", "\t"),
    ] {
        let p = project(
            &format!(
                r#"name: p
sources:
  tx:
    store: exports
    path: tx.txt
    format: csv
    csv: {csv}
    schema:
      - {{ name: customer_id, type: string, required: true }}
      - {{ name: purchase_date, type: date, required: true }}
steps:
  - sql: marts/mart_tx.sql
publish: {{ store: marts }}
"#
            ),
            &[(
                "marts/mart_tx.sql",
                "SELECT customer_id, purchase_date FROM tx\n",
            )],
        );
        p.write(
            "exports/tx.txt",
            &format!("customer_id{sep}date\n7{sep}2026-01-02\n"),
        );
        let failed = run(&p).expect_code(1);
        let err = failed.stderr();
        assert!(
            err.contains("required column `purchase_date` is missing from the header (header has: customer_id, date)"),
            "{csv}: {err}"
        );
        assert!(!p.path("marts/mart_tx.parquet").exists(), "{csv}");
    }
}

#[test]
fn rows_repeating_a_declared_key_are_counted_in_the_manifest() {
    let pipeline = r#"name: p
sources:
  orders:
    store: exports
    path: orders.csv
    format: csv
    key: [order_id, line]
    schema:
      - { name: order_id, type: string, required: true }
      - { name: line, type: int, required: true }
      - { name: amount, type: float }
steps:
  - sql: marts/mart_orders.sql
publish: { store: marts }
"#;
    let p = project(
        pipeline,
        &[(
            "marts/mart_orders.sql",
            "SELECT DISTINCT order_id, line, amount FROM orders\n",
        )],
    );
    p.write(
        "exports/orders.csv",
        "order_id,line,amount\nA,1,10\nA,2,5\nA,1,10\nB,1,7\nA,1,10\nB,2,1\n",
    );
    run(&p).expect_code(0);
    let manifest = common::walk(&p.path("marts/_runs"))
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    assert_eq!(manifest["inputs"][0]["duplicate_key_rows"], 2, "{manifest}");
    assert_eq!(
        read_parquet_rows(&p.path("marts/mart_orders.parquet")).len(),
        4
    );

    p.write(
        "pipelines/p.yaml",
        &pipeline.replace("key: [order_id, line]", "key: [order_id, line_no]"),
    );
    let err = p
        .run(&["validate", "pipelines/p.yaml"])
        .expect_code(2)
        .stderr();
    assert!(
        err.contains(
            "sources.orders.key: `line_no` is not a declared column (order_id, line, amount)"
        ),
        "{err}"
    );
}
