//! `crm-marts runs`: recent runs of a store, newest first, read from the run manifests
//! (`_runs/<run_id>.json`) the runs wrote next to their marts.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use crm_marts::config::Environment;
use crm_marts::storage::Store;

/// One line of the listing.
struct RunLine {
    run_id: String,
    pipeline: String,
    status: String,
    /// `local` or `ballista` (older manifests did not say: they ran locally).
    engine: String,
    started_at: String,
    seconds: Option<f64>,
    marts: usize,
    rows: u64,
    quarantined: u64,
    failing_checks: u64,
    error: String,
    error_kind: String,
    last_seen_at: String,
}

fn line(m: &Value) -> RunLine {
    let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
    let outputs = m["outputs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    RunLine {
        run_id: text("run_id"),
        pipeline: text("pipeline"),
        status: text("status"),
        engine: m["engine"]
            .as_str()
            .map(|e| e.split(' ').next().unwrap_or(e).to_string())
            .unwrap_or_else(|| "local".into()),
        started_at: text("started_at"),
        seconds: m["duration_ms"].as_u64().map(|ms| ms as f64 / 1000.0),
        marts: outputs.len(),
        rows: outputs.iter().filter_map(|o| o["rows"].as_u64()).sum(),
        quarantined: m["quarantined_rows"].as_u64().unwrap_or(0),
        failing_checks: m["failing_check_rows"].as_u64().unwrap_or(0),
        error: m["errors"]
            .as_array()
            .and_then(|e| e.first())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        error_kind: text("error_kind"),
        last_seen_at: text("last_seen_at"),
    }
}

/// The newest `limit` manifests of `store`, a run whose process is gone shown as
/// `abandoned` with when it was last seen.
pub(super) async fn manifests(store: &Store, limit: usize) -> Result<Vec<Value>> {
    let now = chrono::Utc::now();
    let stored = crm_marts::liveness::manifests(store, limit).await?;
    Ok(stored.iter().map(|m| m.shown(now)).collect())
}

pub async fn list(
    env: &Environment,
    store_name: &str,
    limit: usize,
    json: bool,
) -> Result<ExitCode> {
    let spec = env.stores.get(store_name).ok_or_else(|| {
        let known: Vec<&str> = env.stores.keys().map(String::as_str).collect();
        super::UsageError(format!(
            "--store {store_name}: no such store (stores: {})",
            known.join(", ")
        ))
    })?;
    let store = Store::open(spec)?;
    let runs = manifests(&store, limit).await?;
    if json {
        for m in &runs {
            let l = line(m);
            println!(
                "{}",
                serde_json::json!({
                    "run_id": l.run_id, "pipeline": l.pipeline, "status": l.status, "engine": m["engine"].as_str().unwrap_or("local"), "started_at": l.started_at,
                    "seconds": l.seconds, "marts": l.marts, "rows": l.rows, "quarantined_rows": l.quarantined,
                    "failing_check_rows": l.failing_checks, "error": l.error,
                    "error_kind": (!l.error_kind.is_empty()).then_some(&l.error_kind),
                    "last_seen_at": (!l.last_seen_at.is_empty()).then_some(&l.last_seen_at),
                })
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs in {}", store.display_url);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26} {:<18} {:<10} {:<8} {:>9} {:>5} {:>12} {:>11} {:>10}  error",
        "run",
        "pipeline",
        "status",
        "engine",
        "seconds",
        "marts",
        "rows",
        "quarantined",
        "bad checks"
    );
    for m in &runs {
        let l = line(m);
        let seconds = l
            .seconds
            .map(|s| format!("{s:.1}"))
            .unwrap_or_else(|| "-".into());
        let mut error = if l.status == "abandoned" {
            format!("process gone; last seen {}", l.last_seen_at)
        } else if l.error_kind.is_empty() {
            l.error.replace('\n', " ")
        } else {
            format!("[{}] {}", l.error_kind, l.error.replace('\n', " "))
        };
        if error.chars().count() > 100 {
            error = error.chars().take(99).collect::<String>() + "…";
        }
        println!(
            "{:<26} {:<18} {:<10} {:<8} {:>9} {:>5} {:>12} {:>11} {:>10}  {}",
            l.run_id,
            l.pipeline,
            l.status,
            l.engine,
            seconds,
            l.marts,
            l.rows,
            l.quarantined,
            l.failing_checks,
            error
        );
    }
    Ok(ExitCode::SUCCESS)
}
