//! Bad input gives a clear error naming the file (and line and column where it has
//! one) and the right exit code: 2 for configuration, 1 for a failed run.

mod common;

use common::{read_parquet_rows, Project};

const PIPELINE: &str = include_str!("fixtures/mini/pipelines/mini.yaml");
const MART: &str = include_str!("fixtures/mini/sql/marts/mart_totals.sql");
const ORDERS: &str = include_str!("fixtures/mini/exports/orders.csv");

fn mini() -> Project {
    Project::from_fixture("mini")
}

fn run_mini(p: &Project) -> common::Run {
    p.run(&[
        "run",
        "pipelines/mini.yaml",
        "--config",
        "config/env.yaml",
        "--as-of",
        "2026-11-22",
    ])
}

#[test]
fn the_mini_pipeline_runs_and_quarantines_bad_rows_with_reasons() {
    let p = mini();
    let run = run_mini(&p).expect_code(0);
    assert!(run.stdout().contains("mart_totals"), "{}", run.stdout());
    // C1: 2 + 3; C3: 4 (the row without quantity has NULL and is filtered by >=).
    let rows = read_parquet_rows(&p.path("marts/mart_totals.parquet"));
    let mut got: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["customer_id"].clone(), r["quantity"].clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("C1".into(), "5".into()), ("C3".into(), "4".into())]
    );

    let manifests: Vec<_> = common::manifest_files(&p.path("marts/_runs"));
    assert_eq!(manifests.len(), 1);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(manifest["status"], "succeeded");
    assert_eq!(manifest["quarantined_rows"], 4);
    assert_eq!(manifest["inputs"][0]["rows"], 7);
    assert_eq!(manifest["inputs"][0]["files"][0]["size"], ORDERS.len());

    let q = common::walk(&p.path("marts/_quarantine"));
    assert_eq!(q.len(), 1);
    let mut bad: Vec<(String, String)> = read_parquet_rows(&q[0])
        .iter()
        .map(|r| (r["line"].clone(), r["reason"].clone()))
        .collect();
    bad.sort();
    assert_eq!(
        bad,
        vec![
            (
                "4".to_string(),
                "column `order_date`: \"2026-13-01\" is not a date".to_string()
            ),
            (
                "5".to_string(),
                "column `quantity`: \"two\" is not an integer".to_string()
            ),
            (
                "6".to_string(),
                "required column `order_id` is empty".to_string()
            ),
            ("7".to_string(), "expected 4 fields, found 3".to_string()),
        ]
    );
    // Inputs are never modified or deleted.
    assert_eq!(
        std::fs::read_to_string(p.path("exports/orders.csv")).unwrap(),
        ORDERS
    );

    // The run report shows the quarantine by reason, and its first rows by file and line,
    // without their values.
    let reports: Vec<_> = common::walk(&p.path("marts/_runs"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "html"))
        .collect();
    let html = std::fs::read_to_string(&reports[0]).unwrap();
    let table = html
        .split("<table id=\"quarantine\">")
        .nth(1)
        .expect("a quarantine table")
        .split("</table>")
        .next()
        .unwrap();
    let reasons: u64 = table
        .split("data-reason-rows=\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(reasons, 4, "{table}");
    for line in [":4</code>", ":5</code>", ":6</code>"] {
        assert!(table.contains(line), "{line} in {table}");
    }
    assert!(
        !table.contains("two"),
        "no quarantined value in the report: {table}"
    );
}

#[test]
fn bad_rows_past_the_budget_fail_the_run() {
    let p = mini();
    p.write(
        "pipelines/mini.yaml",
        &PIPELINE.replace("max_rows: 10", "max_rows: 3"),
    );
    let run = run_mini(&p).expect_code(1);
    let err = run.stderr();
    assert!(
        err.contains("4 of 7 rows quarantined, over the error budget (max_rows 3)"),
        "{err}"
    );
    assert!(
        !p.path("marts/mart_totals.parquet").exists(),
        "nothing is published by a failed run"
    );
    // A failed run gets a report too, saying where it failed.
    let reports: Vec<_> = common::walk(&p.path("marts/_runs"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "html"))
        .collect();
    assert_eq!(reports.len(), 1);
    let html = std::fs::read_to_string(&reports[0]).unwrap();
    assert!(
        html.contains("<b>failed</b>")
            && html.contains("Where it failed")
            && html.contains("over the error budget"),
        "{html}"
    );
    // It renders in a browser: the run part and its timeline, with no console error.
    let (dom, log) = common::render(
        &reports[0],
        &common::repo().join("target/screenshots/failed-run-report.png"),
    );
    assert!(
        !log.contains(":CONSOLE") && !log.contains("Uncaught"),
        "console errors:\n{log}"
    );
    assert!(
        dom.contains("Where it failed") && dom.contains("<svg id=\"timeline\""),
        "{dom}"
    );
    // `crm-marts report` writes the newest run's report again, here to a file.
    p.run(&[
        "report",
        "--config",
        "config/env.yaml",
        "--out",
        "again.html",
    ])
    .expect_code(0);
    assert_eq!(std::fs::read_to_string(p.path("again.html")).unwrap(), html);
}

#[test]
fn malformed_yaml_names_file_line_and_column() {
    let p = mini();
    p.write(
        "pipelines/mini.yaml",
        "name: mini\nsources:\n  orders:\n    store: [exports\n",
    );
    let run = p.run(&["validate", "pipelines/mini.yaml"]).expect_code(2);
    assert!(
        run.stderr().contains("pipelines/mini.yaml:5:1:"),
        "{}",
        run.stderr()
    );
}

#[test]
fn unknown_keys_are_named_with_the_allowed_ones() {
    let p = mini();
    p.write(
        "pipelines/mini.yaml",
        &PIPELINE.replace("error_budget:", "error_budgt:"),
    );
    let run = p.run(&["validate", "pipelines/mini.yaml"]).expect_code(2);
    let err = run.stderr();
    assert!(
        err.contains("pipelines/mini.yaml:10:5: sources.orders: unknown field `error_budgt`"),
        "{err}"
    );
    assert!(
        err.contains(
            "expected one of `store`, `path`, `seed`, `format`, `csv`, `schema`, `error_budget`"
        ),
        "{err}"
    );
}

#[test]
fn validate_reports_every_problem_at_once() {
    let p = mini();
    let broken = PIPELINE
        .replace("store: exports", "store: exprots")
        .replace("staging/stg_orders.sql", "staging/stg_missing.sql")
        .replace(
            "min_qty: { type: int, default: 1 }",
            "min_qty: { type: int, default: lots }",
        );
    p.write("pipelines/mini.yaml", &broken);
    let run = p
        .run(&["validate", "pipelines/mini.yaml", "config/env.yaml"])
        .expect_code(2);
    let err = run.stderr();
    assert!(err.contains("configuration problems found"), "{err}");
    assert!(
        err.contains("pipelines/mini.yaml:7:5: unknown store `exprots`"),
        "{err}"
    );
    assert!(err.contains("pipelines/mini.yaml:16:1: steps[0]: SQL file sql/staging/stg_missing.sql cannot be read"), "{err}");
    assert!(
        err.contains("parameters.min_qty.default: \"lots\" is not an integer"),
        "{err}"
    );
    // The mart reads stg_orders, which no longer exists.
    assert!(
        err.contains("\n  sql/marts/mart_totals.sql:2:6: unknown table `stg_orders`"),
        "{err}"
    );
}

#[test]
fn sql_syntax_errors_name_file_line_and_column() {
    let p = mini();
    p.write(
        "sql/marts/mart_totals.sql",
        "SELECT customer_id,\n  sum(quantity) AS\nFROM stg_orders GROUP BY customer_id\n",
    );
    let run = p.run(&["validate", "pipelines/mini.yaml"]).expect_code(2);
    let err = run.stderr();
    assert!(
        err.contains("sql/marts/mart_totals.sql:3:6: SQL syntax error"),
        "{err}"
    );
}

#[test]
fn unknown_parameters_in_sql_are_located() {
    let p = mini();
    p.write(
        "sql/marts/mart_totals.sql",
        &MART.replace("$min_qty", "$min_quantity"),
    );
    let run = p.run(&["validate", "pipelines/mini.yaml"]).expect_code(2);
    let err = run.stderr();
    assert!(err.contains("sql/marts/mart_totals.sql:3:19: unknown parameter `$min_quantity` (declared: as_of, min_qty)"), "{err}");
}

#[test]
fn dependency_cycles_name_the_files() {
    let p = mini();
    p.write("sql/staging/stg_orders.sql", "SELECT * FROM mart_totals\n");
    let run = p.run(&["validate", "pipelines/mini.yaml"]).expect_code(2);
    let err = run.stderr();
    assert!(err.contains("dependency cycle: stg_orders ("), "{err}");
    assert!(err.contains("stg_orders.sql) -> mart_totals ("), "{err}");
    assert!(err.contains("mart_totals.sql) -> stg_orders"), "{err}");
}

#[test]
fn planning_errors_point_into_the_sql_file() {
    let p = mini();
    p.write("sql/marts/mart_totals.sql", "SELECT customer_id,\n       sum(quantiy) AS quantity\nFROM stg_orders\nGROUP BY customer_id\n");
    let run = run_mini(&p).expect_code(1);
    let err = run.stderr();
    assert!(err.contains("sql/marts/mart_totals.sql:2:12"), "{err}");
    assert!(err.contains("quantiy"), "{err}");
}

#[test]
fn a_store_location_that_does_not_exist_is_a_clear_run_error() {
    let p = mini();
    let run = p
        .run(&[
            "run",
            "pipelines/mini.yaml",
            "--config",
            "config/env.yaml",
            "--as-of",
            "2026-11-22",
            "--store",
            "exports=/no/such/folder",
        ])
        .expect_code(1);
    let err = run.stderr();
    assert!(
        err.contains("source `orders`: no files found at file:///no/such/folder/orders.csv"),
        "{err}"
    );
}

#[test]
fn parameters_are_typed_and_required() {
    let p = mini();
    let run = p
        .run(&["run", "pipelines/mini.yaml", "--config", "config/env.yaml"])
        .expect_code(2);
    assert!(
        run.stderr()
            .contains("parameter `as_of` (date) has no default"),
        "{}",
        run.stderr()
    );
    let run = p
        .run(&[
            "run",
            "pipelines/mini.yaml",
            "--config",
            "config/env.yaml",
            "--as-of",
            "2026-11-22'; DROP TABLE x; --",
        ])
        .expect_code(2);
    assert!(run.stderr().contains("is not a date"), "{}", run.stderr());
    let run = p
        .run(&[
            "run",
            "pipelines/mini.yaml",
            "--config",
            "config/env.yaml",
            "--as-of",
            "2026-11-22",
            "--param",
            "nope=1",
        ])
        .expect_code(2);
    assert!(
        run.stderr()
            .contains("unknown parameter `nope` (declared: as_of, min_qty)"),
        "{}",
        run.stderr()
    );
}

#[test]
fn missing_environment_variables_are_named_not_guessed() {
    let p = mini();
    p.write(
        "config/env.yaml",
        "stores:\n  exports:\n    url: s3://${CRM_TEST_UNSET_BUCKET}/x\n  marts:\n    url: marts\n",
    );
    let run = p.run(&["validate", "config/env.yaml"]).expect_code(2);
    assert!(run.stderr().contains("config/env.yaml:3:5: stores.exports.url: environment variable CRM_TEST_UNSET_BUCKET is not set"), "{}", run.stderr());
}

#[test]
fn validate_plans_sql_against_declared_schemas() {
    let p = mini();
    p.write("sql/marts/mart_totals.sql", "SELECT customer_id,\n       sum(quantiy) AS quantity\nFROM stg_orders\nGROUP BY customer_id\n");
    p.write(
        "sql/staging/stg_orders.yml",
        "name: stg_orders\ndescription: x\ncolumns:\n  - name: order_id\n    description: x\n",
    );
    let run = p.run(&["validate", "pipelines/mini.yaml"]).expect_code(2);
    let err = run.stderr();
    assert!(err.contains("sql/marts/mart_totals.sql:2:12:"), "{err}");
    assert!(
        err.contains(
            "sql/staging/stg_orders.yml: column `customer_id` of `stg_orders` is not documented"
        ),
        "{err}"
    );
    let ok = mini();
    ok.run(&["validate", "pipelines/mini.yaml", "config/env.yaml"])
        .expect_code(0);
}

#[test]
fn the_shipped_pipeline_and_config_validate() {
    let root = common::repo();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args([
            "validate",
            "pipelines/customer_marts.yaml",
            "config/local.yaml",
            "config/production.example.yaml",
            "config/cluster/cluster.yaml",
            "config/cluster/scheduler.yaml",
        ])
        .current_dir(&root)
        .env("CRM_EXPORTS_BUCKET", "b")
        .env("CRM_MARTS_BUCKET", "b")
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("CRM_MARTS_HASH_KEY", "h")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A built-in step's tables are shaped by its configuration: the FEBRL pipeline's identity
/// step has no `street` comparison, so SQL reading `weight_street` from its pairs fails at
/// validate time, at the column's line and column, and SQL reading what it has validates.
#[test]
fn validate_plans_sql_after_built_in_steps() {
    let p = Project::from_fixture("febrl");
    for file in [
        "marts/mart_identity_quality.sql",
        "marts/mart_identity_quality.yml",
    ] {
        p.write(
            &format!("sql/{file}"),
            &std::fs::read_to_string(common::repo().join("sql").join(file)).unwrap(),
        );
    }
    let pipeline = std::fs::read_to_string(p.path("pipelines/febrl.yaml")).unwrap();
    assert!(pipeline.contains("\npublish:"));
    let with_step = |sql: &str| {
        p.write("sql/intermediate/int_pairs.sql", sql);
        p.write(
            "pipelines/febrl.yaml",
            &pipeline.replace(
                "\npublish:",
                "\n  - sql: intermediate/int_pairs.sql\npublish:",
            ),
        );
    };
    with_step(
        "SELECT\n    record_id_a,\n    weight_surname,\n    weight_street\nFROM identity_pairs\n",
    );
    let err = p
        .run(&["validate", "pipelines/febrl.yaml"])
        .expect_code(2)
        .stderr();
    assert!(err.contains("sql/intermediate/int_pairs.sql:4:5"), "{err}");
    assert!(err.contains("weight_street"), "{err}");
    with_step("SELECT record_id_a, weight_surname, match_weight FROM identity_pairs\n");
    p.run(&["validate", "pipelines/febrl.yaml"]).expect_code(0);
}

/// A table unknown because its own step failed is reported once, as the cause, naming the
/// models that read it; a misspelt table gets the closest known name.
#[test]
fn a_missing_model_is_reported_once_and_a_misspelt_table_gets_a_suggestion() {
    let p = mini();
    std::fs::remove_file(p.path("sql/staging/stg_orders.sql")).unwrap();
    let err = p
        .run(&["validate", "pipelines/mini.yaml"])
        .expect_code(2)
        .stderr();
    assert!(err.contains("1 configuration problem found"), "{err}");
    assert!(
        err.contains("SQL file sql/staging/stg_orders.sql cannot be read") && err.contains("so table `stg_orders` does not exist, and `mart_totals` that reads it cannot be checked until it does"),
        "{err}"
    );
    assert!(!err.contains("unknown table"), "{err}");

    let p = mini();
    p.write(
        "sql/marts/mart_totals.sql",
        &MART.replace("FROM stg_orders", "FROM stg_ordres"),
    );
    let err = p
        .run(&["validate", "pipelines/mini.yaml"])
        .expect_code(2)
        .stderr();
    assert!(err.contains("sql/marts/mart_totals.sql:2:6: unknown table `stg_ordres` in `mart_totals`: did you mean `stg_orders`?"), "{err}");
}

const CONTRACT: &str = "name: mart_totals
description: Units per customer.
contract: enforced
columns:
  - name: customer_id
    type: string
    description: The customer.
  - name: quantity
    type: bigint
    description: Units ordered.
";

#[test]
fn a_contracted_mart_that_breaks_its_contract_fails_validate_and_is_never_published() {
    let p = mini();
    p.write("sql/marts/mart_totals.yml", CONTRACT);
    run_mini(&p).expect_code(0);
    let live = std::fs::read(p.path("marts/mart_totals.parquet")).unwrap();
    p.run(&[
        "validate",
        "--published",
        "pipelines/mini.yaml",
        "config/env.yaml",
    ])
    .expect_code(0);

    // A renamed column: validate names both sides at the contract's line, a run fails
    // before writing and the live mart stays as it was.
    p.write(
        "sql/marts/mart_totals.sql",
        &MART.replace("AS quantity", "AS total_quantity"),
    );
    let v = p.run(&["validate", "pipelines/mini.yaml"]).expect_code(2);
    let err = v.stderr();
    assert!(
        err.contains("mart_totals.yml:8:5: contract of `mart_totals`: column `quantity` (bigint) is not produced by the model"),
        "{err}"
    );
    assert!(err.contains("the model produces column `total_quantity` (bigint), which the contract does not declare"), "{err}");
    let run = run_mini(&p).expect_code(1);
    assert!(
        run.stderr()
            .contains("column `quantity` (bigint) is not produced by the model"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        std::fs::read(p.path("marts/mart_totals.parquet")).unwrap(),
        live,
        "the live mart changed"
    );
    assert!(
        !common::walk(&p.path("marts/_versions/mart_totals"))
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "parquet") && !live_version_file(&p, f)),
        "a version of the broken table was left behind"
    );

    // A retyped column.
    p.write(
        "sql/marts/mart_totals.sql",
        &MART.replace(
            "sum(quantity) AS quantity",
            "CAST(sum(quantity) AS DOUBLE) AS quantity",
        ),
    );
    let err = p
        .run(&["validate", "pipelines/mini.yaml"])
        .expect_code(2)
        .stderr();
    assert!(err.contains("mart_totals.yml:8:5: contract of `mart_totals`: column `quantity` is double, the contract says bigint"), "{err}");

    // Contract and model changed together: valid on its own, a breaking change against
    // the published version when validate sees the environment.
    p.write(
        "sql/marts/mart_totals.yml",
        &CONTRACT.replace("type: bigint", "type: double"),
    );
    p.run(&["validate", "pipelines/mini.yaml"]).expect_code(0);
    // Without --published, validate does not read storage.
    p.run(&["validate", "pipelines/mini.yaml", "config/env.yaml"])
        .expect_code(0);
    let err = p
        .run(&[
            "validate",
            "--published",
            "pipelines/mini.yaml",
            "config/env.yaml",
        ])
        .expect_code(2)
        .stderr();
    assert!(
        err.contains("mart_totals.yml:8:5: breaking change to `mart_totals`: column `quantity` was bigint in the published version, is now double"),
        "{err}"
    );
    let ok = p
        .run(&[
            "validate",
            "--published",
            "--allow-breaking",
            "pipelines/mini.yaml",
            "config/env.yaml",
        ])
        .expect_code(0);
    assert!(
        ok.stderr().contains("warning:") && ok.stderr().contains("breaking change"),
        "{}",
        ok.stderr()
    );
    // An added column breaks no reader.
    p.write(
        "sql/marts/mart_totals.yml",
        &format!("{CONTRACT}  - name: orders\n    type: bigint\n    description: Orders.\n"),
    );
    p.write(
        "sql/marts/mart_totals.sql",
        &MART.replace("AS quantity", "AS quantity, count(*) AS orders"),
    );
    p.run(&[
        "validate",
        "--published",
        "pipelines/mini.yaml",
        "config/env.yaml",
    ])
    .expect_code(0);
}

/// Whether `file` is the version that is live now.
fn live_version_file(p: &Project, file: &std::path::Path) -> bool {
    let current = std::fs::read_to_string(p.path("marts/_versions/mart_totals/_current")).unwrap();
    file.file_stem()
        .is_some_and(|s| s.to_string_lossy() == current.trim())
}
