//! The same exports, configuration and as-of date give the same marts, bit for bit,
//! whatever the engine's partitioning and thread timing: the customer-marts pipeline
//! runs with `target_partitions` 1, 8 and 8 again on one set of generated exports, and
//! every mart's content hash (rows in a canonical order, values compared by their bits)
//! must be the same in all three.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{mart_contents, repo, Project};

fn run(p: &Project, data: &Path, partitions: usize, marts: &str) -> PathBuf {
    let marts_dir = data.join(marts);
    let config = p.write(
        &format!("env-{marts}.yaml"),
        &format!(
            "stores:\n  exports:\n    url: {}\n  marts:\n    url: {}\nexecution:\n  memory_limit: 4GiB\n  target_partitions: {partitions}\n  spill_dir: {}\nprivacy:\n  hash_key: determinism-test-key\n",
            data.join("exports").display(),
            marts_dir.display(),
            p.path("spill").display(),
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args(["run", "pipelines/customer_marts.yaml", "--as-of", "2026-11-22", "--config"])
        .arg(&config)
        .current_dir(repo())
        .env("CRM_MARTS_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "run with target_partitions {partitions}:\n{}", String::from_utf8_lossy(&out.stderr));
    marts_dir
}

#[test]
fn marts_are_the_same_bit_for_bit_whatever_the_partitioning() {
    let p = Project::new();
    let data = p.path("data");
    p.run(&["generate", "--customers", "1500", "--seed", "11", "--out", "data/exports"]).expect_code(0);

    let one = mart_contents(&run(&p, &data, 1, "marts-1"));
    let eight = mart_contents(&run(&p, &data, 8, "marts-8"));
    let again = mart_contents(&run(&p, &data, 8, "marts-8-again"));
    assert!(one.len() > 20, "{:?}", one.keys());

    let mut differences = Vec::new();
    for (label, other) in [("target_partitions 8", &eight), ("target_partitions 8, second run", &again)] {
        assert_eq!(one.keys().collect::<Vec<_>>(), other.keys().collect::<Vec<_>>(), "{label}: other marts");
        differences.extend(common::mart_differences(&one, other).into_iter().map(|d| format!("({label}) {d}")));
    }
    assert!(differences.is_empty(), "marts differ from the run with target_partitions 1:\n{}", differences.join("\n"));
}

/// Appends a copy of every `step`-th data row of an export (its header stays first): a
/// re-export, as ERP and app exports do.
fn re_export(file: &Path, step: usize) -> usize {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let header = usize::from(file.extension().is_some_and(|e| e == "csv"));
    let copies: Vec<&str> = lines[header..].iter().step_by(step).copied().collect();
    let n = copies.len();
    lines.extend(copies);
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
    n
}

#[test]
fn re_exported_orders_lines_returns_and_answers_change_no_mart() {
    let p = Project::new();
    let data = p.path("data");
    p.run(&["generate", "--customers", "800", "--seed", "12", "--out", "data/exports"]).expect_code(0);
    let before = mart_contents(&run(&p, &data, 2, "marts-before"));

    let exports = data.join("exports");
    for (file, step) in [
        ("erp/orders.csv", 7),
        ("erp/order_lines.csv", 5),
        ("erp/returns.csv", 3),
        ("loyalty/survey_answers.csv", 4),
        ("loyalty/app_events.ndjson", 9),
        ("web/clickstream.ndjson", 11),
    ] {
        assert!(re_export(&exports.join(file), step) > 0, "{file}");
    }
    let after = mart_contents(&run(&p, &data, 2, "marts-after"));
    let changed = common::mart_differences(&before, &after);
    assert!(changed.is_empty(), "re-exported rows changed marts:\n{}", changed.join("\n"));
}
