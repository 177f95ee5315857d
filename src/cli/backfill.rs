//! `crm-marts backfill`: runs a pipeline for every as-of date of a range, oldest first.
//! Dates with a succeeded run of the pipeline (read from the run manifests of its publish
//! store) are skipped unless `--force`, so rerunning a backfill fills exactly the gaps a
//! failed or missed night left. The first failing date stops the backfill: later dates
//! may compare with it (loyalty-ladder movements, stable identity keys).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;

use crm_marts::config::{Environment, Pipeline};
use crm_marts::storage::Store;

use super::logging::LogFormat;
use super::UsageError;

pub struct BackfillArgs<'a> {
    pub pipeline: &'a Path,
    pub env: &'a Environment,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub force: bool,
    pub given: BTreeMap<String, String>,
    pub format: LogFormat,
}

/// The as-of dates of the succeeded runs of `pipeline` in the manifests of `store`.
async fn succeeded_dates(store: &Store, pipeline: &str) -> Result<BTreeSet<NaiveDate>> {
    let manifests = super::runs::manifests(store, usize::MAX).await?;
    Ok(manifests
        .iter()
        .filter(|m| m["pipeline"] == pipeline && m["status"] == "succeeded")
        .filter_map(|m| m["parameters"]["as_of"].as_str())
        .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .collect())
}

pub async fn run(args: BackfillArgs<'_>) -> Result<ExitCode> {
    if args.from > args.to {
        return Err(UsageError(format!("--from {} is after --to {}", args.from, args.to)).into());
    }
    if args.given.contains_key("as_of") {
        return Err(UsageError(
            "--param as_of: a backfill sets as_of to each date of --from..--to".into(),
        )
        .into());
    }
    let pipeline = Pipeline::load(args.pipeline, Some(args.env))?;
    let spec = &args.env.stores[&pipeline.publish.store];
    let store = Store::open(spec)?;
    let done = if args.force {
        BTreeSet::new()
    } else {
        succeeded_dates(&store, &pipeline.name).await?
    };
    let dates: Vec<NaiveDate> = args
        .from
        .iter_days()
        .take_while(|d| *d <= args.to)
        .collect();
    let gaps: Vec<NaiveDate> = dates
        .iter()
        .copied()
        .filter(|d| !done.contains(d))
        .collect();
    println!(
        "backfill of `{}` from {} to {}: {} dates, {} already succeeded, {} to run",
        pipeline.name,
        args.from,
        args.to,
        dates.len(),
        dates.len() - gaps.len(),
        gaps.len()
    );
    for (i, day) in gaps.iter().enumerate() {
        let mut given = args.given.clone();
        given.insert("as_of".into(), day.to_string());
        match super::run_pipeline(args.pipeline, args.env, &given, args.format).await {
            Ok(m) => {
                let secs = m.duration_ms.unwrap_or(0) as f64 / 1000.0;
                println!("  {day}  succeeded  run {}  {secs:.1}s", m.run_id);
            }
            Err(e) => {
                println!("  {day}  failed: {e:#}");
                let left: Vec<String> = gaps[i + 1..].iter().map(NaiveDate::to_string).collect();
                if !left.is_empty() {
                    println!("  not run: {}", left.join(", "));
                }
                eprintln!("error: backfill stopped at {day}; rerun the same command to continue from there");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
