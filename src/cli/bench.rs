//! `bench`: generates N customers and times each stage of the customer-marts pipeline
//! under a memory limit, printing rows, seconds and peak memory (peak RSS per stage).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crm_marts::config::environment::{parse_bytes, StoreSpec};
use crm_marts::config::Environment;
use crm_marts::generate::GenerateOptions;

use super::demo::{generate_to, DEMO_PIPELINE};
use super::logging::LogFormat;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 100_000)]
    customers: u64,
    #[arg(long, default_value_t = 20.0)]
    orders_per_customer: f64,
    /// Memory limit of the whole process (the query engine gets 60 % of it).
    #[arg(long, default_value = "4GiB")]
    memory_limit: String,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Folder for data (default: a folder under the system temp dir, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Reuse exports already in --dir instead of generating them.
    #[arg(long)]
    reuse: bool,
    /// Pipeline to time.
    #[arg(long, default_value = DEMO_PIPELINE)]
    pipeline: PathBuf,
}

/// Peak resident memory since the last reset, in bytes (Linux; 0 elsewhere).
fn peak_rss() -> u64 {
    crm_marts::memory::peak_rss().unwrap_or(0)
}

fn reset_peak() {
    crm_marts::memory::reset_peak();
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

pub async fn run(args: BenchArgs) -> Result<ExitCode> {
    let limit = parse_bytes(&args.memory_limit).map_err(|e| super::UsageError(format!("--memory-limit: {e}")))?;
    let temp = args.dir.is_none();
    let dir = args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("crm-marts-bench-{}", std::process::id())));
    let exports = dir.join("exports");
    println!("bench: {} customers, ~{} orders each, memory limit {}", args.customers, args.orders_per_customer, args.memory_limit);
    println!("{:<28} {:>14} {:>10} {:>14}", "stage", "rows", "seconds", "peak RSS MiB");
    if !args.reuse {
        reset_peak();
        let started = Instant::now();
        let options = GenerateOptions {
            customers: args.customers,
            seed: args.seed,
            orders_per_customer: args.orders_per_customer,
            ..Default::default()
        };
        let summary = generate_to(&options, &exports.to_string_lossy()).await?;
        let rows: u64 = summary.files.iter().map(|f| f.rows).sum();
        println!("{:<28} {:>14} {:>10.1} {:>14.0}", "generate", rows, started.elapsed().as_secs_f64(), mib(peak_rss()));
        for f in &summary.files {
            println!("  {:<26} {:>14}", f.path, f.rows);
        }
    }
    let mut env = Environment::empty();
    env.execution.memory_limit = Some(limit);
    env.execution.spill_dir = dir.join("spill");
    // Generated data only: a fresh random key per benchmark, never printed.
    env.execution.functions.hash_key = Some(format!("bench-{:016x}", rand::random::<u64>()));
    for (name, sub) in [("exports", "exports"), ("marts", "marts")] {
        let spec = StoreSpec::from_location(name, &dir.join(sub).to_string_lossy()).map_err(anyhow::Error::msg)?;
        env.stores.insert(name.into(), spec);
    }
    let mut params = BTreeMap::new();
    params.insert("as_of".to_string(), GenerateOptions::default().as_of.format("%Y-%m-%d").to_string());
    reset_peak();
    let started = Instant::now();
    let manifest = super::run_pipeline(Path::new(&args.pipeline), &env, &params, LogFormat::Json).await?;
    let total = started.elapsed().as_secs_f64();
    for input in &manifest.inputs {
        println!("{:<28} {:>14} {:>10} {:>14}", format!("source {}", input.name), input.rows.unwrap_or(0), "", "");
    }
    if let Some(peak) = manifest.sources_peak_rss_bytes {
        println!("{:<28} {:>14} {:>10} {:>14.0}", "load sources", "", "", mib(peak));
    }
    for step in &manifest.steps {
        let rows = step.rows.map(|r| r.to_string()).unwrap_or_else(|| "view".into());
        let peak = step.peak_rss_bytes.map(|b| format!("{:.0}", mib(b))).unwrap_or_default();
        println!("{:<28} {:>14} {:>10.1} {:>14}", format!("step {}", step.name), rows, step.duration_ms as f64 / 1000.0, peak);
    }
    println!("{:<28} {:>14} {:>10.1} {:>14.0}", "pipeline total", "", total, mib(manifest.peak_rss_bytes().unwrap_or_else(peak_rss)));
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::SUCCESS)
}
