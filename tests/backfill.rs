//! `crm-marts backfill` runs a date range oldest first, skips dates that already succeeded
//! (so a rerun fills exactly the gaps), stops at the first failing date, and `--force`
//! runs every date again.

mod common;

use common::Project;

const ARGS: &[&str] = &[
    "backfill",
    "pipelines/mini.yaml",
    "--config",
    "config/env.yaml",
];

fn backfill(p: &Project, from: &str, to: &str, extra: &[&str]) -> common::Run {
    let mut args = ARGS.to_vec();
    args.extend(["--from", from, "--to", to]);
    args.extend(extra);
    p.run(&args)
}

/// The as-of dates of the succeeded runs, in the order the runs started.
fn succeeded(p: &Project) -> Vec<String> {
    let mut manifests: Vec<serde_json::Value> = common::manifest_files(&p.path("marts/_runs"))
        .iter()
        .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
        .collect();
    manifests.sort_by(|a, b| a["run_id"].as_str().cmp(&b["run_id"].as_str()));
    manifests
        .iter()
        .filter(|m| m["status"] == "succeeded")
        .map(|m| m["parameters"]["as_of"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn backfill_runs_the_gaps_in_order_and_stops_at_the_first_failure() {
    let p = Project::from_fixture("mini");
    let out = backfill(&p, "2026-11-20", "2026-11-22", &[]).expect_code(0);
    assert!(
        out.stdout()
            .contains("3 dates, 0 already succeeded, 3 to run"),
        "{}",
        out.stdout()
    );
    assert_eq!(succeeded(&p), ["2026-11-20", "2026-11-21", "2026-11-22"]);

    // Nothing left to do.
    let out = backfill(&p, "2026-11-20", "2026-11-22", &[]).expect_code(0);
    assert!(
        out.stdout().contains("3 already succeeded, 0 to run"),
        "{}",
        out.stdout()
    );
    assert_eq!(succeeded(&p).len(), 3);

    // A wider range runs only the dates around the ones done.
    backfill(&p, "2026-11-19", "2026-11-23", &[]).expect_code(0);
    assert_eq!(succeeded(&p)[3..], ["2026-11-19", "2026-11-23"]);

    // A failing date stops the backfill and names the dates not run.
    let sql = std::fs::read_to_string(p.path("sql/staging/stg_orders.sql")).unwrap();
    p.write(
        "sql/staging/stg_orders.sql",
        &sql.replacen("SELECT", "SELECT no_such_column,", 1),
    );
    let out = backfill(&p, "2026-11-24", "2026-11-26", &[]).expect_code(1);
    assert!(
        out.stdout().contains("2026-11-24  failed"),
        "{}",
        out.stdout()
    );
    assert!(
        out.stdout().contains("not run: 2026-11-25, 2026-11-26"),
        "{}",
        out.stdout()
    );
    assert!(
        out.stderr().contains("backfill stopped at 2026-11-24"),
        "{}",
        out.stderr()
    );
    assert_eq!(succeeded(&p).len(), 5);

    // Fixed, the same command continues where it stopped.
    p.write("sql/staging/stg_orders.sql", &sql);
    backfill(&p, "2026-11-20", "2026-11-26", &[]).expect_code(0);
    assert_eq!(
        succeeded(&p)[5..],
        ["2026-11-24", "2026-11-25", "2026-11-26"]
    );

    // --force runs every date again.
    let out = backfill(&p, "2026-11-25", "2026-11-26", &["--force"]).expect_code(0);
    assert!(out.stdout().contains("2 to run"), "{}", out.stdout());
    assert_eq!(succeeded(&p)[8..], ["2026-11-25", "2026-11-26"]);
}

#[test]
fn backfill_rejects_a_bad_range() {
    let p = Project::from_fixture("mini");
    backfill(&p, "2026-11-22", "2026-11-20", &[]).expect_code(2);
    backfill(&p, "2026-11-20", "22-11-2026", &[]).expect_code(2);
    backfill(
        &p,
        "2026-11-20",
        "2026-11-21",
        &["--param", "as_of=2026-11-20"],
    )
    .expect_code(2);
    assert!(!p.path("marts/_runs").exists(), "nothing ran");
}
