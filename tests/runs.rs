//! `crm-marts runs` lists the runs of a store from their manifests, newest first, with
//! status, marts, rows and the error of a failed run.

mod common;

use common::Project;

#[test]
fn runs_lists_succeeded_and_failed_runs_newest_first() {
    let p = Project::from_fixture("mini");
    let empty = p
        .run(&["runs", "--config", "config/env.yaml"])
        .expect_code(0);
    assert!(empty.stdout().contains("no runs in"), "{}", empty.stdout());

    let ok = p
        .run(&[
            "run",
            "pipelines/mini.yaml",
            "--config",
            "config/env.yaml",
            "--as-of",
            "2026-11-22",
        ])
        .expect_code(0);
    // A second run fails: its SQL no longer plans.
    let sql = std::fs::read_to_string(p.path("sql/staging/stg_orders.sql")).unwrap();
    p.write(
        "sql/staging/stg_orders.sql",
        &sql.replacen("SELECT", "SELECT no_such_column,", 1),
    );
    p.run(&[
        "run",
        "pipelines/mini.yaml",
        "--config",
        "config/env.yaml",
        "--as-of",
        "2026-11-22",
    ]);

    let listing = p
        .run(&["runs", "--config", "config/env.yaml", "--json"])
        .expect_code(0);
    let runs: Vec<serde_json::Value> = listing
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 2, "{}", listing.stdout());
    assert!(
        runs[0]["run_id"].as_str() > runs[1]["run_id"].as_str(),
        "newest first"
    );
    assert_eq!(runs[1]["status"], "succeeded");
    assert!(ok.stdout().contains(runs[1]["run_id"].as_str().unwrap()));
    assert!(runs[1]["marts"].as_u64().unwrap() >= 1);
    assert!(runs[1]["rows"].as_u64().unwrap() >= 1);
    assert_eq!(runs[0]["status"], "failed");
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("no_such_column"),
        "{}",
        runs[0]
    );

    let table = p
        .run(&["runs", "--config", "config/env.yaml", "--limit", "1"])
        .expect_code(0);
    assert_eq!(
        table.stdout().lines().count(),
        2,
        "header and one run:\n{}",
        table.stdout()
    );
    assert!(table.stdout().contains("failed"));
    p.run(&["runs", "--config", "config/env.yaml", "--store", "nope"])
        .expect_code(2);
}
