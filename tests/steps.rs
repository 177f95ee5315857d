//! Built-in steps and materialised tables run like SQL models: they are ordered by the
//! tables they read, can be published, and report rows in the manifest.

mod common;

use common::{read_parquet_rows, Project};

#[test]
fn a_builtin_step_profiles_a_materialised_table_and_is_published() {
    let p = Project::from_fixture("mini");
    let text = std::fs::read_to_string(p.path("pipelines/mini.yaml")).unwrap();
    let text = text.replace(
        "steps:\n",
        "steps:\n  - builtin: describe\n    name: orders_profile\n    publish: true\n    with: { table: stg_orders }\n",
    );
    let text = text.replace(
        "  - sql: staging/stg_orders.sql\n",
        "  - sql: staging/stg_orders.sql\n    materialize: true\n",
    );
    p.write("pipelines/mini.yaml", &text);
    let run = p
        .run(&[
            "run",
            "pipelines/mini.yaml",
            "--config",
            "config/env.yaml",
            "--as-of",
            "2026-11-22",
        ])
        .expect_code(0);
    assert!(run.stdout().contains("orders_profile"), "{}", run.stdout());

    let rows = read_parquet_rows(&p.path("marts/orders_profile.parquet"));
    let count = rows
        .iter()
        .find(|r| r["describe"] == "count")
        .expect("count row");
    assert_eq!(
        count["quantity"], "3.0",
        "three good orders have a quantity: {count:?}"
    );
    let max = rows.iter().find(|r| r["describe"] == "max").unwrap();
    assert_eq!(max["quantity"], "4.0");

    let manifest = common::manifest_files(&p.path("marts/_runs"))
        .pop()
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let steps = manifest["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    // The built-in step was declared first but reads stg_orders, so it runs after it.
    assert_eq!(names, vec!["stg_orders", "orders_profile", "mart_totals"]);
    assert_eq!(steps[0]["output"], "table");
    assert_eq!(steps[0]["rows"], 3);
    assert_eq!(steps[1]["kind"], "describe");
}

#[test]
fn unknown_builtin_kinds_and_bad_settings_are_config_errors() {
    let p = Project::from_fixture("mini");
    let text = std::fs::read_to_string(p.path("pipelines/mini.yaml")).unwrap();
    let bad = text.replace(
        "steps:\n",
        "steps:\n  - builtin: descibe\n    name: a\n  - builtin: describe\n    name: b\n    with: { tabel: stg_orders }\n",
    );
    p.write("pipelines/mini.yaml", &bad);
    let run = p.run(&["validate", "pipelines/mini.yaml"]).expect_code(2);
    let err = run.stderr();
    assert!(
        err.contains("unknown built-in step `descibe` (known: describe, clv_fit, identity)"),
        "{err}"
    );
    assert!(
        err.contains("unknown field `tabel`, expected `table`"),
        "{err}"
    );
}

#[test]
fn a_view_s_materialized_cte_is_computed_once_and_read_by_later_steps() {
    let p = Project::from_fixture("mini");
    // stg_orders stays a view; its CTE is written once, when the view's step runs, and the
    // mart that reads the view later finds it.
    p.write(
        "sql/staging/stg_orders.sql",
        "WITH dated AS MATERIALIZED (\n    SELECT order_id, customer_id, order_date, quantity FROM orders WHERE order_date <= $as_of\n)\nSELECT order_id, customer_id, order_date, quantity FROM dated\n",
    );
    p.run(&[
        "run",
        "pipelines/mini.yaml",
        "--config",
        "config/env.yaml",
        "--as-of",
        "2026-11-22",
    ])
    .expect_code(0);
    let mut rows = read_parquet_rows(&p.path("marts/mart_totals.parquet"));
    rows.sort_by(|a, b| a["customer_id"].cmp(&b["customer_id"]));
    let totals: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["customer_id"].clone(), r["quantity"].clone()))
        .collect();
    let manifest = common::manifest_files(&p.path("marts/_runs"))
        .pop()
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let view = &manifest["steps"][0];
    assert_eq!(view["name"], "stg_orders");
    assert_eq!(view["output"], "view");
    assert_eq!(view["details"]["materialized_ctes"]["dated"], 3, "{view}");
    assert_eq!(
        totals,
        vec![
            ("C1".to_string(), "5".to_string()),
            ("C3".to_string(), "4".to_string())
        ]
    );
}
