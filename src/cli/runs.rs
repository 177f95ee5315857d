//! `crm-marts runs`: recent runs of a store, newest first, read from the run manifests
//! (`_runs/<run_id>.json`) the runs wrote next to their marts.

use std::process::ExitCode;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::Value;

use crm_marts::config::Environment;
use crm_marts::storage::Store;

/// One line of the listing.
struct RunLine {
    run_id: String,
    pipeline: String,
    status: String,
    started_at: String,
    seconds: Option<f64>,
    marts: usize,
    rows: u64,
    quarantined: u64,
    failing_checks: u64,
    error: String,
}

fn line(m: &Value) -> RunLine {
    let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
    let outputs = m["outputs"].as_array().map(Vec::as_slice).unwrap_or_default();
    RunLine {
        run_id: text("run_id"),
        pipeline: text("pipeline"),
        status: text("status"),
        started_at: text("started_at"),
        seconds: m["duration_ms"].as_u64().map(|ms| ms as f64 / 1000.0),
        marts: outputs.len(),
        rows: outputs.iter().filter_map(|o| o["rows"].as_u64()).sum(),
        quarantined: m["quarantined_rows"].as_u64().unwrap_or(0),
        failing_checks: m["failing_check_rows"].as_u64().unwrap_or(0),
        error: m["errors"].as_array().and_then(|e| e.first()).and_then(Value::as_str).unwrap_or_default().to_string(),
    }
}

/// Reads the newest `limit` manifests of `store`.
pub(super) async fn manifests(store: &Store, limit: usize) -> Result<Vec<Value>> {
    let prefix = store.path("_runs")?;
    let mut files: Vec<_> = store
        .object_store
        .list(Some(&prefix))
        .try_collect::<Vec<_>>()
        .await
        .with_context(|| format!("listing {}", store.url(&prefix)))?
        .into_iter()
        .filter(|o| o.location.as_ref().ends_with(".json"))
        .collect();
    // Run ids start with their UTC start time, so names sort in time order.
    files.sort_by(|a, b| b.location.cmp(&a.location));
    let mut out = Vec::new();
    for meta in files.into_iter().take(limit) {
        let bytes = store.object_store.get(&meta.location).await?.bytes().await?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!(file = %store.url(&meta.location), error = %e, "unreadable run manifest skipped"),
        }
    }
    Ok(out)
}

pub async fn list(env: &Environment, store_name: &str, limit: usize, json: bool) -> Result<ExitCode> {
    let spec = env.stores.get(store_name).ok_or_else(|| {
        let known: Vec<&str> = env.stores.keys().map(String::as_str).collect();
        super::UsageError(format!("--store {store_name}: no such store (stores: {})", known.join(", ")))
    })?;
    let store = Store::open(spec)?;
    let runs = manifests(&store, limit).await?;
    if json {
        for m in &runs {
            let l = line(m);
            println!(
                "{}",
                serde_json::json!({
                    "run_id": l.run_id, "pipeline": l.pipeline, "status": l.status, "started_at": l.started_at,
                    "seconds": l.seconds, "marts": l.marts, "rows": l.rows, "quarantined_rows": l.quarantined,
                    "failing_check_rows": l.failing_checks, "error": l.error,
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
        "{:<26} {:<18} {:<9} {:>9} {:>5} {:>12} {:>11} {:>10}  error",
        "run", "pipeline", "status", "seconds", "marts", "rows", "quarantined", "bad checks"
    );
    for m in &runs {
        let l = line(m);
        let seconds = l.seconds.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
        let mut error = l.error.replace('\n', " ");
        if error.chars().count() > 100 {
            error = error.chars().take(99).collect::<String>() + "…";
        }
        println!(
            "{:<26} {:<18} {:<9} {:>9} {:>5} {:>12} {:>11} {:>10}  {}",
            l.run_id, l.pipeline, l.status, seconds, l.marts, l.rows, l.quarantined, l.failing_checks, error
        );
    }
    Ok(ExitCode::SUCCESS)
}
