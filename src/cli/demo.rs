//! `demo` and `generate`: sample exports into local folders or a store, and the
//! customer-marts pipeline run end to end on them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crm_marts::config::environment::StoreSpec;
use crm_marts::config::Environment;
use crm_marts::generate::{self, GenerateOptions, GenerateSummary};
use crm_marts::publish::upload_file;
use crm_marts::storage::Store;

use super::logging::LogFormat;

pub const DEMO_PIPELINE: &str = "pipelines/customer_marts.yaml";
pub const DEMO_CONFIG: &str = "config/local.yaml";

/// Generates into a local folder, or into a temporary folder uploaded to a store URL.
pub async fn generate_to(options: &GenerateOptions, out: &str) -> Result<GenerateSummary> {
    let local_dir = local_folder(out);
    let (dir, temp) = match &local_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = std::env::temp_dir().join(format!("crm-marts-generate-{}", std::process::id()));
            (t.clone(), Some(t))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = std::time::Instant::now();
    let opts = GenerateOptions { ..*options };
    let dir_for_task = dir.clone();
    let summary = tokio::task::spawn_blocking(move || {
        let mut last = 0u64;
        generate::generate(&opts, &dir_for_task, &mut |done| {
            if done >= last + 100_000 {
                last = done;
                tracing::info!(persons = done, "generating");
            }
        })
    })
    .await?
    .with_context(|| format!("generating sample data into {}", dir.display()))?;
    if let Some(temp) = temp {
        let spec = StoreSpec::from_location("out", out).map_err(anyhow::Error::msg)?;
        let store = Store::open(&spec)?;
        for f in &summary.files {
            let dest = store.path(&f.path)?;
            upload_file(&store, &temp.join(&f.path), &dest).await?;
        }
        let _ = std::fs::remove_dir_all(&temp);
    }
    let rows: u64 = summary.files.iter().map(|f| f.rows).sum();
    tracing::info!(
        files = summary.files.len(),
        rows,
        elapsed_ms = started.elapsed().as_millis() as u64,
        out,
        "sample data written"
    );
    Ok(summary)
}

fn local_folder(out: &str) -> Option<PathBuf> {
    if let Some(rest) = out.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    (!out.contains("://")).then(|| PathBuf::from(out))
}

pub async fn run(dir: &Path, customers: u64, seed: u64, format: LogFormat) -> Result<ExitCode> {
    if !Path::new(DEMO_PIPELINE).exists() {
        anyhow::bail!(super::UsageError(format!(
            "{DEMO_PIPELINE} not found: run the demo from the project folder (where pipelines/ and sql/ are)"
        )));
    }
    let options = GenerateOptions {
        customers,
        seed,
        ..Default::default()
    };
    let exports = dir.join("exports");
    let summary = generate_to(&options, &exports.to_string_lossy()).await?;
    let mut env = if Path::new(DEMO_CONFIG).exists() {
        Environment::load(Path::new(DEMO_CONFIG))?
    } else {
        Environment::empty()
    };
    for (name, sub) in [("exports", "exports"), ("marts", "marts")] {
        let location = dir.join(sub);
        let spec = StoreSpec::from_location(name, &location.to_string_lossy())
            .map_err(anyhow::Error::msg)?;
        env.stores.insert(name.to_string(), spec);
    }
    let mut params = BTreeMap::new();
    params.insert(
        "as_of".to_string(),
        options.as_of.format("%Y-%m-%d").to_string(),
    );
    let manifest = super::run_pipeline(Path::new(DEMO_PIPELINE), &env, &params, format).await?;
    let rows: u64 = summary.files.iter().map(|f| f.rows).sum();
    println!(
        "generated {} export files ({rows} rows) for {customers} customers in {}",
        summary.files.len(),
        exports.display()
    );
    super::print_summary(&manifest);
    println!(
        "run manifest: {}/_runs/{}.json",
        dir.join("marts").display(),
        manifest.run_id
    );
    println!("try: duckdb -c \"SELECT rfm_segment, count(*) FROM '{}/marts/mart_rfm.parquet' GROUP BY 1 ORDER BY 2 DESC\"", dir.display());
    Ok(ExitCode::SUCCESS)
}
