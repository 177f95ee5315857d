//! The same exports, configuration and as-of date give the same marts, bit for bit,
//! whatever the engine's partitioning and thread timing: the customer-marts pipeline
//! runs with `target_partitions` 1, 8 and 8 again on one set of generated exports, and
//! every mart's content hash (rows in a canonical order, values compared by their bits)
//! must be the same in all three.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{mart_contents, repo, Project};

/// An environment reading `data/exports` and publishing to `data/<marts>`.
fn env(p: &Project, data: &Path, partitions: usize, marts: &str) -> PathBuf {
    p.write(
        &format!("env-{marts}.yaml"),
        &format!(
            "stores:\n  exports:\n    url: {}\n  marts:\n    url: {}\nexecution:\n  memory_limit: 4GiB\n  target_partitions: {partitions}\n  spill_dir: {}\nprivacy:\n  hash_key: determinism-test-key\n",
            data.join("exports").display(),
            data.join(marts).display(),
            p.path("spill").display(),
        ),
    )
}

/// `crm-marts run` of the customer-marts pipeline with `extra` arguments.
fn run_pipeline(config: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args([
            "run",
            "pipelines/customer_marts.yaml",
            "--as-of",
            "2026-11-22",
            "--config",
        ])
        .arg(config)
        .args(extra)
        .current_dir(repo())
        .env("CRM_MARTS_LOG", "warn")
        .output()
        .unwrap()
}

fn run(p: &Project, data: &Path, partitions: usize, marts: &str) -> PathBuf {
    let out = run_pipeline(&env(p, data, partitions, marts), &[]);
    assert!(
        out.status.success(),
        "run with target_partitions {partitions}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data.join(marts)
}

#[test]
fn marts_are_the_same_bit_for_bit_whatever_the_partitioning() {
    let p = Project::new();
    let data = p.path("data");
    p.run(&[
        "generate",
        "--customers",
        "1500",
        "--seed",
        "11",
        "--out",
        "data/exports",
    ])
    .expect_code(0);

    let one = mart_contents(&run(&p, &data, 1, "marts-1"));
    let eight = mart_contents(&run(&p, &data, 8, "marts-8"));
    let again = mart_contents(&run(&p, &data, 8, "marts-8-again"));
    assert!(one.len() > 20, "{:?}", one.keys());

    let mut differences = Vec::new();
    for (label, other) in [
        ("target_partitions 8", &eight),
        ("target_partitions 8, second run", &again),
    ] {
        assert_eq!(
            one.keys().collect::<Vec<_>>(),
            other.keys().collect::<Vec<_>>(),
            "{label}: other marts"
        );
        differences.extend(
            common::mart_differences(&one, other)
                .into_iter()
                .map(|d| format!("({label}) {d}")),
        );
    }
    assert!(
        differences.is_empty(),
        "marts differ from the run with target_partitions 1:\n{}",
        differences.join("\n")
    );
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
    p.run(&[
        "generate",
        "--customers",
        "800",
        "--seed",
        "12",
        "--out",
        "data/exports",
    ])
    .expect_code(0);
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
    assert!(
        changed.is_empty(),
        "re-exported rows changed marts:\n{}",
        changed.join("\n")
    );
}

fn latest_manifest(marts: &Path) -> serde_json::Value {
    let mut runs: Vec<PathBuf> = common::walk(&marts.join("_runs"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .collect();
    runs.sort();
    serde_json::from_slice(&std::fs::read(runs.last().unwrap()).unwrap()).unwrap()
}

fn current(marts: &Path, mart: &str) -> String {
    std::fs::read_to_string(marts.join(format!("_versions/{mart}/_current"))).unwrap()
}

/// `--select mart_rfm+ --defer` after a full run reads identity from the published map
/// (no identity step runs) and gives the same `mart_rfm`; it publishes only the selected
/// marts. Without `--defer` the selection computes what it reads and publishes only what
/// it selected; with nothing published, `--defer` names the table it cannot read.
#[test]
fn a_deferred_selection_reads_identity_from_the_published_map_and_gives_the_same_marts() {
    let p = Project::new();
    let data = p.path("data");
    p.run(&[
        "generate",
        "--customers",
        "400",
        "--seed",
        "13",
        "--out",
        "data/exports",
    ])
    .expect_code(0);
    let marts = run(&p, &data, 2, "marts");
    let full = mart_contents(&marts);
    let abc_before = current(&marts, "mart_abc");
    let identity_before = current(&marts, "mart_identity_map");

    let config = env(&p, &data, 2, "marts");
    let out = run_pipeline(&config, &["--select", "mart_rfm+", "--defer"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = latest_manifest(&marts);
    let steps: Vec<&str> = manifest["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        !steps.contains(&"identity")
            && steps.contains(&"mart_rfm")
            && steps.contains(&"int_order_values"),
        "{steps:?}"
    );
    let selection = &manifest["selection"];
    assert_eq!(selection["select"], serde_json::json!(["mart_rfm+"]));
    let deferred: Vec<(&str, &str)> = selection["deferred"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["table"].as_str().unwrap(), d["mart"].as_str().unwrap()))
        .collect();
    assert!(
        deferred.contains(&("identity", "mart_identity_map")),
        "{deferred:?}"
    );
    let published: Vec<&str> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["mart"].as_str().unwrap())
        .collect();
    let selected: Vec<&str> = selection["selected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        published,
        selected
            .iter()
            .filter(|s| s.starts_with("mart_"))
            .copied()
            .collect::<Vec<_>>()
    );
    assert!(
        published.contains(&"mart_rfm") && !published.contains(&"mart_abc"),
        "{published:?}"
    );
    assert_eq!(
        current(&marts, "mart_rfm"),
        manifest["run_id"].as_str().unwrap()
    );
    assert_eq!(
        current(&marts, "mart_abc"),
        abc_before,
        "a mart outside the selection was published"
    );
    assert_eq!(current(&marts, "mart_identity_map"), identity_before);
    let after = mart_contents(&marts);
    let changed = common::mart_differences(&full, &after);
    assert!(
        changed.is_empty(),
        "the deferred run changed marts:\n{}",
        changed.join("\n")
    );

    // Without --defer, what the selection reads is computed (identity included) and only
    // the selection is published.
    let out = run_pipeline(&config, &["--select", "mart_rfm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = latest_manifest(&marts);
    let steps: Vec<&str> = manifest["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"identity") && !steps.contains(&"mart_abc"),
        "{steps:?}"
    );
    assert_eq!(manifest["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(mart_contents(&marts)["mart_rfm"], full["mart_rfm"]);

    // Nothing published yet: the deferred table is named; a mistyped selector is a
    // configuration error with the closest name.
    let empty = env(&p, &data, 2, "marts-empty");
    let out = run_pipeline(&empty, &["--select", "mart_rfm", "--defer"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--defer: `identity` (from the mart `mart_identity_map`) is outside the selection and has no published version"), "{err}");
    assert!(!data.join("marts-empty/mart_rfm.parquet").exists());
    let out = run_pipeline(&empty, &["--select", "mart_rfmm+"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--select mart_rfmm+: no step or source `mart_rfmm` in the pipeline: did you mean `mart_rfm`?"), "{err}");
}
