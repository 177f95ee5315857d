//! `crm-marts test`: unit tests of SQL models written in the model's YAML. The runner is
//! checked on the mini fixture (a passing test, a failing one with its diff, and every
//! mistake a test can make, each located in the YAML), and the shipped marts' own unit
//! tests must pass.

mod common;

use common::Project;

const SPEC_HEAD: &str = "name: mart_totals\ndescription: Quantity per customer.\n";

fn mini_with(tests: &str) -> Project {
    let p = Project::from_fixture("mini");
    p.write(
        "sql/marts/mart_totals.yml",
        &format!("{SPEC_HEAD}tests:\n{tests}"),
    );
    p
}

#[test]
fn passing_and_failing_expectations_with_a_readable_diff() {
    let p = mini_with(
        r#"  - name: sums_per_customer
    params: { as_of: 2026-11-22 }
    given:
      stg_orders:
        - { order_id: o1, customer_id: C1, order_date: 2026-11-01, quantity: 2 }
        - { order_id: o2, customer_id: C1, order_date: 2026-11-02, quantity: 3 }
        - { order_id: o3, customer_id: C2, order_date: 2026-11-02, quantity: 0 }
        - { order_id: o4, customer_id: C3 }
    expect:
      - { customer_id: C1, quantity: 5 }
  - name: the_minimum_is_a_parameter
    params: { as_of: 2026-11-22, min_qty: 3 }
    given:
      stg_orders:
        - { order_id: o1, customer_id: C1, quantity: 2 }
        - { order_id: o2, customer_id: C1, quantity: 3 }
    expect:
      - { customer_id: C1, quantity: 3 }
  - name: from_a_csv_file
    params: { as_of: 2026-11-22 }
    given:
      stg_orders: { csv: totals_orders.csv }
    expect:
      - { customer_id: C1, quantity: 7 }
      - { customer_id: C2, quantity: 1 }
  - name: wrong_on_purpose
    params: { as_of: 2026-11-22 }
    given:
      stg_orders:
        - { order_id: o1, customer_id: C1, quantity: 5 }
        - { order_id: o2, customer_id: C2, quantity: 1 }
    expect:
      - { customer_id: C1, quantity: 6 }
      - { customer_id: C9, quantity: 1 }
"#,
    );
    p.write(
        "sql/tests/totals_orders.csv",
        "order_id,customer_id,quantity\no1,C1,3\no2,C1,4\no3,C2,1\n",
    );
    let run = p.run(&["test", "pipelines/mini.yaml"]).expect_code(1);
    let out = run.stdout();
    for passed in [
        "sums_per_customer",
        "the_minimum_is_a_parameter",
        "from_a_csv_file",
    ] {
        assert!(
            out.contains(&format!("ok      mart_totals :: {passed}")),
            "{out}"
        );
    }
    assert!(
        out.contains("FAILED  mart_totals :: wrong_on_purpose (sql/marts/mart_totals.yml:29:5)"),
        "{out}"
    );
    assert!(
        out.contains("changed row customer_id = \"C1\": quantity: expected 6, got 5"),
        "{out}"
    );
    assert!(
        out.contains("missing row (expected, not produced): { customer_id: \"C9\", quantity: 1 }"),
        "{out}"
    );
    assert!(
        out.contains("extra row (produced, not expected): { customer_id: \"C2\", quantity: 1 }"),
        "{out}"
    );
    assert!(out.contains("4 tests, 3 passed, 1 failed"), "{out}");
    // Without the wrong test, the run passes; --select picks models.
    let p = mini_with(
        &std::fs::read_to_string(p.path("sql/marts/mart_totals.yml"))
            .unwrap()
            .split("tests:\n")
            .nth(1)
            .unwrap()
            .split("  - name: wrong_on_purpose")
            .next()
            .unwrap()
            .to_string(),
    );
    p.write(
        "sql/tests/totals_orders.csv",
        "order_id,customer_id,quantity\no1,C1,3\no2,C1,4\no3,C2,1\n",
    );
    let out = p
        .run(&["test", "pipelines/mini.yaml", "--select", "mart_totals"])
        .expect_code(0)
        .stdout();
    assert!(out.contains("3 tests, 3 passed, 0 failed"), "{out}");
    let err = p
        .run(&["test", "pipelines/mini.yaml", "--select", "mart_totls"])
        .expect_code(2)
        .stderr();
    assert!(
        err.contains("mart_totls") && err.contains("no SQL model"),
        "{err}"
    );
}

#[test]
fn every_mistake_in_a_test_is_located_in_the_yaml() {
    let p = mini_with(
        r#"  - name: checks_nothing
    given:
      stg_orders: []
  - name: reads_another_table
    given:
      orders: []
      stg_orders: []
    expect: []
  - name: a_column_the_table_lacks
    given:
      stg_orders:
        - { order_id: o1, customer: C1 }
    expect: []
  - name: a_value_of_the_wrong_type
    given:
      stg_orders:
        - { order_id: o1, customer_id: C1, quantity: two }
    expect: []
  - name: an_unknown_parameter
    params: { min_quantity: 2 }
    given:
      stg_orders: []
    expect: []
  - name: a_table_not_given
    expect: []
  - name: an_expected_column_the_model_lacks
    given:
      stg_orders: []
    expect:
      - { customer_id: C1, total: 1 }
"#,
    );
    let out = p
        .run(&["test", "pipelines/mini.yaml"])
        .expect_code(1)
        .stdout();
    let expected = [
        "sql/marts/mart_totals.yml:4:5: test `checks_nothing` of mart_totals: it checks nothing",
        "sql/marts/mart_totals.yml:9:7: test `reads_another_table` of mart_totals: given table `orders` is not read by the model, which reads `stg_orders`",
        "sql/marts/mart_totals.yml:15:27: test `a_column_the_table_lacks` of mart_totals: given `stg_orders`: `customer` is not a column of the table",
        "sql/marts/mart_totals.yml:20:44: test `a_value_of_the_wrong_type` of mart_totals: given `stg_orders`: `quantity` is Int64",
        "sql/marts/mart_totals.yml:23:15: test `an_unknown_parameter` of mart_totals: unknown parameter `min_quantity`; the pipeline declares `as_of`, `min_qty`",
        "test `a_table_not_given` of mart_totals: the model reads `stg_orders`: give its rows under `given:`",
        "sql/marts/mart_totals.yml:33:28: test `an_expected_column_the_model_lacks` of mart_totals: expected column `total` is not a column of the model (customer_id, quantity)",
    ];
    for e in expected {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    assert!(out.contains("7 tests, 0 passed, 7 failed"), "{out}");
}

/// The shipped models' unit tests (`tests:` in `sql/**/*.yml`) pass, and every SQL mart
/// under `sql/marts/` has at least two of them.
#[test]
fn the_shipped_models_unit_tests_pass() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .arg("test")
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    let tests: usize = summary
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(tests >= 60, "{stdout}");
    let marts = common::repo().join("sql/marts");
    for entry in std::fs::read_dir(&marts).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            let mart = path.file_stem().unwrap().to_string_lossy().into_owned();
            let passed = stdout
                .lines()
                .filter(|l| l.starts_with("ok") && l.contains(&format!(" {mart} :: ")))
                .count();
            assert!(passed >= 2, "{mart} has {passed} passing unit tests; every mart pins its definitions with at least two:\n{stdout}");
        }
    }
}

/// `crm-marts new mart`: a first query that plans, the step added to the pipeline with its
/// comments kept, the YAML from the plan; after the SQL changes, `--force` writes the YAML
/// again from the new plan and keeps what the analyst wrote about the columns that stay.
#[test]
fn new_mart_writes_the_sql_the_step_and_the_yaml_from_the_plan() {
    let p = Project::from_fixture("mini");
    let pipeline = std::fs::read_to_string(p.path("pipelines/mini.yaml")).unwrap();
    p.write(
        "pipelines/mini.yaml",
        &pipeline.replace("steps:\n", "steps:\n  # staging first\n"),
    );
    let out = p
        .run(&[
            "new",
            "mart",
            "mart_big_orders",
            "--pipeline",
            "pipelines/mini.yaml",
        ])
        .expect_code(0);
    assert!(
        out.stdout().contains("customer_id  string"),
        "{}",
        out.stdout()
    );
    let sql = std::fs::read_to_string(p.path("sql/marts/mart_big_orders.sql")).unwrap();
    assert!(
        sql.contains("SELECT customer_id\nFROM mart_totals"),
        "{sql}"
    );
    let pipeline = std::fs::read_to_string(p.path("pipelines/mini.yaml")).unwrap();
    assert!(pipeline.contains("  # staging first\n"), "{pipeline}");
    assert!(
        pipeline.contains(
            "  - sql: marts/mart_totals.sql\n  - sql: marts/mart_big_orders.sql\npublish:"
        ),
        "{pipeline}"
    );
    let yml = std::fs::read_to_string(p.path("sql/marts/mart_big_orders.yml")).unwrap();
    assert!(
        yml.contains("contract: enforced\ncolumns:\n  - name: customer_id\n    type: string\n"),
        "{yml}"
    );
    p.run(&["validate", "pipelines/mini.yaml"]).expect_code(0);
    // Running it again neither adds the step twice nor overwrites the YAML.
    let again = p
        .run(&[
            "new",
            "mart",
            "mart_big_orders",
            "--pipeline",
            "pipelines/mini.yaml",
        ])
        .expect_code(2);
    assert!(
        again
            .stderr()
            .contains("mart_big_orders.yml: exists; `--force`"),
        "{}",
        again.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(p.path("pipelines/mini.yaml"))
            .unwrap()
            .matches("mart_big_orders")
            .count(),
        1
    );

    // The analyst writes the query and documents a column; the YAML follows the new plan.
    p.write(
        "sql/marts/mart_big_orders.sql",
        "SELECT customer_id, max(quantity) AS largest_quantity, count(*) AS orders\nFROM stg_orders\nGROUP BY customer_id\n",
    );
    p.write(
        "sql/marts/mart_big_orders.yml",
        &yml.replace(
            "description: ''\n#",
            "description: Largest order per customer.\n#",
        )
        .replace(
            "    type: string\n    description: ''\n",
            "    type: string\n    description: The customer.\n    checks: [not_null, unique]\n",
        ),
    );
    p.run(&[
        "new",
        "mart",
        "mart_big_orders",
        "--pipeline",
        "pipelines/mini.yaml",
        "--force",
    ])
    .expect_code(0);
    let yml = std::fs::read_to_string(p.path("sql/marts/mart_big_orders.yml")).unwrap();
    assert!(
        yml.starts_with("name: mart_big_orders\ndescription: Largest order per customer.\n"),
        "{yml}"
    );
    assert!(yml.contains("  - name: customer_id\n    type: string\n    description: The customer.\n    checks:\n      - not_null\n      - unique\n"), "{yml}");
    assert!(
        yml.contains("  - name: largest_quantity\n    type: bigint\n")
            && yml.contains("  - name: orders\n    type: bigint\n"),
        "{yml}"
    );
    p.run(&["validate", "pipelines/mini.yaml"]).expect_code(0);
    p.run(&[
        "run",
        "pipelines/mini.yaml",
        "--config",
        "config/env.yaml",
        "--as-of",
        "2026-11-22",
    ])
    .expect_code(0);
    assert!(p.path("marts/mart_big_orders.parquet").exists());
}

/// `crm-marts docs`: a page per source and step, the graph with a node per table, column
/// lineage from the plans (through the models to the sources), nothing loaded from the
/// network, and text escaped.
#[test]
fn docs_site_has_every_table_the_graph_and_column_lineage() {
    let p = Project::new();
    let out = p.path("site");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args(["docs", "pipelines/customer_marts.yaml", "--out"])
        .arg(&out)
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let pipeline = crm_marts::config::Pipeline::load(
        &common::repo().join("pipelines/customer_marts.yaml"),
        None,
    )
    .unwrap();
    let tables: Vec<String> = pipeline
        .sources
        .iter()
        .map(|s| s.name.clone())
        .chain(pipeline.steps.iter().map(|s| s.name.clone()))
        .collect();
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(
        index.matches("<rect ").count(),
        tables.len(),
        "one graph node per table"
    );
    for t in &tables {
        assert!(out.join(format!("t/{t}.html")).exists(), "no page for {t}");
        assert!(
            index.contains(&format!("href=\"t/{t}.html\"")),
            "{t} not linked from the index"
        );
    }
    for page in common::walk(&out) {
        let text = std::fs::read_to_string(&page).unwrap();
        for external in ["src=\"http", "href=\"http", "url(http", "@import"] {
            assert!(
                !text.contains(external),
                "{} loads something from the network ({external})",
                page.display()
            );
        }
    }
    let rfm = std::fs::read_to_string(out.join("t/mart_rfm.html")).unwrap();
    assert!(
        rfm.contains("<code>recency_days</code></td><td><code>int</code>"),
        "{rfm}"
    );
    assert!(rfm.contains("FROM int_order_values"), "the SQL is shown");
    // A `>` in the SQL is escaped, not markup.
    assert!(
        !rfm.contains("AS INT) > CAST") && rfm.contains("AS INT) &gt; CAST"),
        "SQL is not escaped"
    );

    let lineage: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("lineage.json")).unwrap()).unwrap();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}.{}",
                    r["table"].as_str().unwrap(),
                    r["column"].as_str().unwrap()
                )
            })
            .collect()
    };
    let monetary = &lineage["mart_rfm"]["monetary"];
    assert_eq!(
        names(&monetary["direct"]),
        ["int_order_values.net_amount", "int_order_values.order_date"]
    );
    let sources = names(&monetary["sources"]);
    for c in [
        "erp_order_lines.quantity",
        "erp_order_lines.unit_price",
        "erp_order_lines.discount_amount",
    ] {
        assert!(sources.contains(&c.to_string()), "{sources:?}");
    }
    assert_eq!(
        names(&lineage["mart_rfm"]["customer_key"]["sources"]),
        ["identity.customer_key"]
    );
    assert_eq!(
        names(&lineage["mart_customer_360"]["frequency"]["direct"]),
        ["mart_rfm.frequency"]
    );

    // A real browser renders the graph and a table page without console errors; the
    // screenshots are kept under target/screenshots for a person to look at.
    let shots = common::repo().join("target/screenshots");
    for (page, shot) in [
        ("index.html", "docs-index.png"),
        ("t/mart_rfm.html", "docs-mart_rfm.png"),
    ] {
        let (dom, log) = common::render(&out.join(page), &shots.join(shot));
        assert!(
            !log.contains(":CONSOLE") && !log.contains("Uncaught"),
            "console errors on {page}:\n{log}"
        );
        assert!(
            std::fs::metadata(shots.join(shot)).unwrap().len() > 10_000,
            "{shot} is blank"
        );
        if page == "index.html" {
            let graph = dom
                .split("<svg id=\"graph\"")
                .nth(1)
                .expect("the graph is in the DOM");
            assert_eq!(
                graph
                    .split("</svg>")
                    .next()
                    .unwrap()
                    .matches("<rect")
                    .count(),
                tables.len(),
                "graph nodes rendered"
            );
        } else {
            assert!(dom.contains("<table class=\"columns\">"), "{dom}");
        }
    }
}
