//! The process is killed (SIGKILL) at random points of a run, many times: the previous
//! marts stay readable and complete, no partial mart is ever visible, and the next run
//! succeeds and removes what the killed ones left behind.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{repo, walk, Project};
use rand::{Rng, SeedableRng};

fn run_cmd(data: &Path, tmp: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crm-marts"));
    cmd.args([
        "run",
        "pipelines/customer_marts.yaml",
        "--config",
        "config/local.yaml",
        "--as-of",
        "2026-11-22",
    ])
    .current_dir(repo())
    .env("CRM_DATA_DIR", data)
    // Spill and scratch folders go under the system temp folder: keep them in the test's.
    .env("TMPDIR", tmp)
    .env("CRM_MARTS_LOG", "info");
    cmd
}

/// Every live mart file (`<mart>.parquet` at the top of the marts folder) with its rows.
fn live_marts(marts: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(marts).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(mart) = name.strip_suffix(".parquet") {
            // A torn or half-written file fails here.
            let rows = common::read_parquet_rows(&entry.path()).len();
            out.insert(mart.to_string(), rows);
        }
    }
    out
}

/// `crm-marts runs --json` of the test's marts store, newest first.
fn runs_json(data: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args([
            "runs",
            "--config",
            "config/local.yaml",
            "--json",
            "--limit",
            "100",
        ])
        .current_dir(repo())
        .env("CRM_DATA_DIR", data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn killed_runs_never_leave_a_partial_mart_and_the_next_run_cleans_up() {
    let p = Project::new();
    let data = p.path("data");
    let tmp = p.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args(["generate", "--customers", "300", "--seed", "5", "--out"])
        .arg(data.join("exports"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exports_before: Vec<(PathBuf, Vec<u8>)> = walk(&data.join("exports"))
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect();

    let started = Instant::now();
    let first = run_cmd(&data, &tmp).output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let full = started.elapsed();
    let marts = data.join("marts");
    let baseline = live_marts(&marts);
    assert!(baseline.len() > 20, "{baseline:?}");

    let seed: u64 = std::env::var("CRM_TEST_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let kills = 8;
    for i in 0..kills {
        // Anywhere from start-up to the last publish.
        let at = full.mul_f64(rng.random_range(0.05..1.0));
        let mut child = run_cmd(&data, &tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let killed = Command::new("sh")
            .args(["-c", &format!("kill -KILL {}", child.id())])
            .status()
            .unwrap();
        assert!(killed.success());
        let _ = child.wait();

        // Every live mart is complete: it parses to the end, and the exports are the same
        // for every run, so it has the rows the first run published.
        let live = live_marts(&marts);
        assert_eq!(live, baseline, "kill {i} at {at:?} (seed {seed})");
    }

    // No killed run is listed as running: each that got as far as its manifest is
    // abandoned, with when it was last seen.
    let listed = runs_json(&data);
    let statuses: Vec<&str> = listed
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert!(!statuses.contains(&"running"), "{statuses:?}");
    let abandoned: Vec<&serde_json::Value> = listed
        .iter()
        .filter(|r| r["status"] == "abandoned")
        .collect();
    assert!(
        !abandoned.is_empty() && abandoned.len() <= kills,
        "{statuses:?}"
    );
    for r in &abandoned {
        assert!(
            r["last_seen_at"]
                .as_str()
                .is_some_and(|s| s >= r["started_at"].as_str().unwrap()),
            "{r}"
        );
    }

    // The next run succeeds and removes what the killed runs left.
    let last = run_cmd(&data, &tmp).output().unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    // Each run marked the abandoned runs before it so in their manifests, which it kept;
    // the last run marked the rest.
    let read_manifest = |id: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(marts.join("_runs").join(format!("{id}.json"))).unwrap(),
        )
        .unwrap()
    };
    let mut marked: Vec<String> = runs_json(&data)
        .iter()
        .flat_map(|r| {
            read_manifest(r["run_id"].as_str().unwrap())["marked_abandoned"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    marked.sort();
    let mut expected: Vec<String> = abandoned
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert_eq!(marked, expected, "every abandoned run was marked once");
    assert!(runs_json(&data).iter().all(|r| r["status"] != "running"));
    for r in &abandoned {
        let stored = read_manifest(r["run_id"].as_str().unwrap());
        assert_eq!(stored["status"], "abandoned");
        assert_eq!(stored["last_seen_at"], r["last_seen_at"]);
        assert_eq!(
            stored["pipeline"], "customer_marts",
            "what the run recorded is kept"
        );
    }
    assert_eq!(live_marts(&marts), baseline, "same exports, same marts");
    for mart in baseline.keys() {
        let dir = marts.join("_versions").join(mart);
        let history: Vec<String> =
            serde_json::from_slice(&std::fs::read(dir.join("_history.json")).unwrap()).unwrap();
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.retain(|f| !f.starts_with('_'));
        files.sort();
        let mut expected: Vec<String> = history.iter().map(|v| format!("{v}.parquet")).collect();
        expected.sort();
        assert_eq!(files, expected, "{mart}: only the kept versions remain");
    }
    let scratch: Vec<PathBuf> = walk(&tmp);
    assert!(
        scratch.is_empty(),
        "scratch files of killed runs remain: {:?}",
        &scratch[..scratch.len().min(5)]
    );
    let exports_after: Vec<(PathBuf, Vec<u8>)> = walk(&data.join("exports"))
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect();
    assert!(exports_before == exports_after, "the exports were modified");
}
