//! `bench`: generates N customers and times each stage of the customer-marts pipeline
//! under a memory limit, printing rows, seconds and peak memory (peak RSS per stage), the
//! cost per export row of each stage, and the same stages run by the DuckDB peer
//! (`super::peer`) on the same exports beside them.

use std::collections::{BTreeMap, BTreeSet};
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
    /// `ballista`: after the local run, start a scheduler and --executors executors on this
    /// machine, run the pipeline on them and print both side by side.
    #[arg(long, default_value = "local", value_name = "local|ballista")]
    engine: String,
    /// Executors of the bench's cluster; they share --memory-limit and the cores.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// `duckdb`: after the local run, load the same exports and run the same SQL models on
    /// DuckDB (installed from PyPI under target/ on first use), with the same threads and
    /// memory limit, and print both sides per stage. `none` skips it.
    #[arg(long, default_value = "duckdb", value_name = "duckdb|none")]
    peer: String,
}

/// Peak resident memory since the last reset, in bytes (Linux; 0 elsewhere).
fn peak_rss() -> u64 {
    crm_marts::memory::peak_rss().unwrap_or(0)
}

/// CPU seconds this process has used, all threads, user and system (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    process_cpu_seconds("self")
}

fn reset_peak() {
    crm_marts::memory::reset_peak();
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

pub async fn run(args: BenchArgs) -> Result<ExitCode> {
    let limit = parse_bytes(&args.memory_limit)
        .map_err(|e| super::UsageError(format!("--memory-limit: {e}")))?;
    let temp = args.dir.is_none();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("crm-marts-bench-{}", std::process::id()))
    });
    let exports = dir.join("exports");
    println!(
        "bench: {} customers, ~{} orders each, memory limit {}",
        args.customers, args.orders_per_customer, args.memory_limit
    );
    println!(
        "{:<28} {:>14} {:>10} {:>14} {:>7}",
        "stage", "rows", "seconds", "peak RSS MiB", "CPU %"
    );
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
        println!(
            "{:<28} {:>14} {:>10.1} {:>14.0}",
            "generate",
            rows,
            started.elapsed().as_secs_f64(),
            mib(peak_rss())
        );
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
        let spec = StoreSpec::from_location(name, &dir.join(sub).to_string_lossy())
            .map_err(anyhow::Error::msg)?;
        env.stores.insert(name.into(), spec);
    }
    let mut params = BTreeMap::new();
    params.insert(
        "as_of".to_string(),
        GenerateOptions::default()
            .as_of
            .format("%Y-%m-%d")
            .to_string(),
    );
    if !matches!(args.engine.as_str(), "local" | "ballista") {
        return Err(super::UsageError(format!(
            "--engine {:?}: expected local or ballista",
            args.engine
        ))
        .into());
    }
    if !matches!(args.peer.as_str(), "duckdb" | "none") {
        return Err(
            super::UsageError(format!("--peer {:?}: expected duckdb or none", args.peer)).into(),
        );
    }
    reset_peak();
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let manifest =
        super::run_pipeline(Path::new(&args.pipeline), &env, &params, LogFormat::Json).await?;
    let total = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    if args.engine == "ballista" {
        return cluster_bench(&args, &dir, env, &params, &manifest, total).await;
    }
    let export_rows: u64 = manifest.inputs.iter().filter_map(|i| i.rows).sum();
    for input in &manifest.inputs {
        println!(
            "{:<28} {:>14} {:>10} {:>14}",
            format!("source {}", input.name),
            input.rows.unwrap_or(0),
            "",
            ""
        );
    }
    let load_s = manifest.sources_duration_ms.unwrap_or(0) as f64 / 1000.0;
    let load_peak = manifest
        .sources_peak_rss_bytes
        .map(|b| format!("{:.0}", mib(b)))
        .unwrap_or_default();
    println!(
        "{:<28} {:>14} {:>10.1} {:>14} {:>7}",
        "load sources",
        export_rows,
        load_s,
        load_peak,
        cpu_share(
            manifest.sources_cpu_ms,
            manifest.sources_duration_ms.unwrap_or(0)
        )
    );
    for step in &manifest.steps {
        let rows = step
            .rows
            .map(|r| r.to_string())
            .unwrap_or_else(|| "view".into());
        let peak = step
            .peak_rss_bytes
            .map(|b| format!("{:.0}", mib(b)))
            .unwrap_or_default();
        println!(
            "{:<28} {:>14} {:>10.1} {:>14} {:>7}",
            format!("step {}", step.name),
            rows,
            step.duration_ms as f64 / 1000.0,
            peak,
            cpu_share(step.cpu_ms, step.duration_ms)
        );
    }
    println!(
        "{:<28} {:>14} {:>10.1} {:>14.0}",
        "pipeline total",
        "",
        total,
        mib(manifest.peak_rss_bytes().unwrap_or_else(peak_rss))
    );
    let stages = Stages::of(&manifest);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "CPU: {cpu:.1} s over {total:.1} s = {:.0} % ({cores} cores)",
        100.0 * cpu / total.max(1e-9)
    );
    println!();
    println!(
        "cost per export row ({export_rows} rows), and the CPU each stage used of {cores} cores:"
    );
    let load_cpu = manifest.sources_cpu_ms.unwrap_or(0) as f64 / 1000.0;
    for (name, seconds, cpu) in [
        ("load sources", load_s, load_cpu),
        ("SQL models", stages.sql, stages.sql_cpu),
        ("identity", stages.identity, stages.identity_cpu),
        ("CLV fit", stages.clv_fit, stages.clv_fit_cpu),
        ("pipeline total", total, cpu),
    ] {
        println!(
            "  {:<26} {:>10.1} s {:>10.3} us/row {:>7.0} % CPU",
            name,
            seconds,
            per_row_us(seconds, export_rows),
            100.0 * cpu / seconds.max(1e-9)
        );
    }
    // The run report, which every run writes: its size and the time it takes, again.
    if let Some(spec) = env.stores.get("marts") {
        let store = crm_marts::storage::Store::open(spec)?;
        let started = Instant::now();
        let html = crm_marts::report::render(&store, &manifest.run_id).await?;
        println!(
            "run report: {:.0} KiB, rendered in {:.2} s",
            html.len() as f64 / 1024.0,
            started.elapsed().as_secs_f64()
        );
    }
    let code = if args.peer == "duckdb" {
        peer_bench(&args, &dir, &env, &params, &manifest, limit as u64).await?
    } else {
        ExitCode::SUCCESS
    };
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(code)
}

fn per_row_us(seconds: f64, rows: u64) -> f64 {
    if rows == 0 {
        0.0
    } else {
        seconds * 1e6 / rows as f64
    }
}

/// A step's CPU time over its wall time, as a percentage (100 % = one core busy).
fn cpu_share(cpu_ms: Option<u64>, wall_ms: u64) -> String {
    match cpu_ms {
        Some(cpu) if wall_ms >= 50 => format!("{:.0}", 100.0 * cpu as f64 / wall_ms as f64),
        _ => String::new(),
    }
}

/// Seconds and CPU seconds of a run by kind of step.
#[derive(Default)]
struct Stages {
    sql: f64,
    sql_cpu: f64,
    identity: f64,
    identity_cpu: f64,
    clv_fit: f64,
    clv_fit_cpu: f64,
}

impl Stages {
    fn of(manifest: &crm_marts::manifest::Manifest) -> Self {
        let mut stages = Stages::default();
        for step in &manifest.steps {
            let s = step.duration_ms as f64 / 1000.0;
            let cpu = step.cpu_ms.unwrap_or(0) as f64 / 1000.0;
            let (wall, used) = match step.kind.as_str() {
                "sql" => (&mut stages.sql, &mut stages.sql_cpu),
                "identity" => (&mut stages.identity, &mut stages.identity_cpu),
                "clv_fit" => (&mut stages.clv_fit, &mut stages.clv_fit_cpu),
                _ => continue,
            };
            *wall += s;
            *used += cpu;
        }
        stages
    }
}

/// The DuckDB peer on the same exports, printed beside the local run: per source, per SQL
/// model, and the totals the speed goals are stated in (loading, SQL models, the pipeline
/// without identity and the CLV fit).
async fn peer_bench(
    args: &BenchArgs,
    dir: &Path,
    env: &Environment,
    given: &BTreeMap<String, String>,
    local: &crm_marts::manifest::Manifest,
    limit: u64,
) -> Result<ExitCode> {
    use crm_marts::config::pipeline::Pipeline;
    let pipeline = Pipeline::load(&args.pipeline, Some(env))?;
    let params = crm_marts::run::bind_params(&pipeline, given)?;
    let store_dir = |name: &str| -> Option<PathBuf> {
        let spec = env.stores.get(name)?;
        (spec.url.scheme() == "file")
            .then(|| spec.url.to_file_path().ok())
            .flatten()
    };
    let own: BTreeSet<String> = crm_marts::functions::functions(&Default::default())
        .iter()
        .map(|f| f.name().to_lowercase())
        .collect();
    let work = dir.join("duckdb");
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // What crm-marts found empty (the previous run's marts on a first run) DuckDB gets empty.
    let empty: BTreeSet<String> = pipeline
        .sources
        .iter()
        .filter(|s| {
            !local
                .inputs
                .iter()
                .any(|i| i.name == s.name && !i.files.is_empty())
        })
        .map(|s| s.name.clone())
        .collect();
    let plan = super::peer::plan(
        &pipeline,
        &params,
        &store_dir,
        &dir.join("marts"),
        &work,
        threads,
        limit,
        &own,
        &empty,
    )?;
    let python = super::peer::python()?;
    println!();
    println!(
        "peer: DuckDB {} on the same exports, {threads} threads, memory limit {}",
        super::peer::version(&python)?,
        args.memory_limit
    );
    let peer = super::peer::run(&python, &plan, &work)?;
    println!(
        "{:<28} {:>12} {:>12} {:>9} {:>9} {:>6} {:>9} {:>9}",
        "stage", "rows", "duckdb rows", "crm s", "duckdb s", "ratio", "crm MiB", "duck MiB"
    );
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    let opt_mib = |b: Option<u64>| b.map(|b| format!("{:.0}", mib(b))).unwrap_or_default();
    let duck_cpu: f64 = peer.iter().map(|s| s.cpu_seconds).sum();
    let duck_wall: f64 = peer.iter().map(|s| s.seconds).sum();
    let mut duck_load = 0.0;
    let mut duck_sql = 0.0;
    let mut crm_sql = 0.0;
    let mut failed = Vec::new();
    for stage in &peer {
        if let Some(e) = &stage.error {
            failed.push(format!("{} {}: {e}", stage.kind, stage.name));
        }
        let duck_rows = stage.rows.map(|r| r.to_string()).unwrap_or_else(|| {
            if stage.error.is_some() {
                "error".into()
            } else {
                "view".into()
            }
        });
        match stage.kind.as_str() {
            "source" => {
                duck_load += stage.seconds;
                let ours = local.inputs.iter().find(|i| i.name == stage.name);
                let rows = ours
                    .and_then(|i| i.rows)
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                println!(
                    "{:<28} {:>12} {:>12} {:>9} {:>9.1} {:>6} {:>9} {:>9.0}",
                    format!("source {}", stage.name),
                    rows,
                    duck_rows,
                    "",
                    stage.seconds,
                    "",
                    "",
                    mib(stage.peak_rss_bytes)
                );
            }
            "step" => {
                duck_sql += stage.seconds;
                let Some(ours) = local.steps.iter().find(|s| s.name == stage.name) else {
                    continue;
                };
                let s = ours.duration_ms as f64 / 1000.0;
                crm_sql += s;
                let rows = ours
                    .rows
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "view".into());
                println!(
                    "{:<28} {:>12} {:>12} {:>9.1} {:>9.1} {:>6} {:>9} {:>9.0}",
                    format!("step {}", stage.name),
                    rows,
                    duck_rows,
                    s,
                    stage.seconds,
                    ratio(s, stage.seconds),
                    opt_mib(ours.peak_rss_bytes),
                    mib(stage.peak_rss_bytes)
                );
            }
            _ => {}
        }
    }
    let crm_load = local.sources_duration_ms.unwrap_or(0) as f64 / 1000.0;
    println!(
        "{:<28} {:>12} {:>12} {:>9.1} {:>9.1} {:>6}",
        "loading all sources",
        "",
        "",
        crm_load,
        duck_load,
        ratio(crm_load, duck_load)
    );
    println!(
        "{:<28} {:>12} {:>12} {:>9.1} {:>9.1} {:>6}",
        "SQL models (both ran)",
        "",
        "",
        crm_sql,
        duck_sql,
        ratio(crm_sql, duck_sql)
    );
    println!(
        "{:<28} {:>12} {:>12} {:>9.1} {:>9.1} {:>6}",
        "pipeline w/o identity, CLV",
        "",
        "",
        crm_load + crm_sql,
        duck_load + duck_sql,
        ratio(crm_load + crm_sql, duck_load + duck_sql)
    );
    println!(
        "DuckDB CPU: {duck_cpu:.1} s over {duck_wall:.1} s = {:.0} %",
        100.0 * duck_cpu / duck_wall.max(1e-9)
    );
    println!("(models that call crm-marts' own functions, and built-in steps, ran only in crm-marts; DuckDB read their published tables)");
    if !failed.is_empty() {
        eprintln!("bench: the DuckDB peer failed {} stage(s):", failed.len());
        for f in &failed {
            eprintln!("  {f}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The same pipeline on a cluster of this machine, printed beside the local run.
async fn cluster_bench(
    args: &BenchArgs,
    dir: &Path,
    mut env: Environment,
    params: &BTreeMap<String, String>,
    local: &crm_marts::manifest::Manifest,
    local_total: f64,
) -> Result<ExitCode> {
    let limit = env.execution.memory_limit.unwrap_or(4 << 30);
    let executors = args.executors.max(1);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // The executors' environment: the stores are local folders every process here reads;
    // the key reaches them through their own environment, not their command line.
    let env_file = dir.join("cluster.yaml");
    std::fs::write(&env_file, "privacy:\n  hash_key: ${CRM_BENCH_HASH_KEY}\n")?;
    let key = env.execution.functions.hash_key.clone().unwrap_or_default();
    let exe = std::env::current_exe()?;
    let port = free_port()?;
    let bind = format!("127.0.0.1:{port}");
    let mut children = Vec::new();
    let spawn = |args: Vec<String>| {
        std::process::Command::new(&exe)
            .args(args)
            .env("CRM_BENCH_HASH_KEY", &key)
            .env("CRM_MARTS_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
    };
    children.push(Killed(spawn(vec![
        "scheduler".into(),
        "--bind".into(),
        bind.clone(),
        "--config".into(),
        env_file.display().to_string(),
    ])?));
    for i in 0..executors {
        let (flight, grpc) = (free_port()?, free_port()?);
        children.push(Killed(spawn(vec![
            "executor".into(),
            "--scheduler".into(),
            bind.clone(),
            "--bind".into(),
            format!("127.0.0.1:{flight}"),
            "--grpc-port".into(),
            grpc.to_string(),
            "--work-dir".into(),
            dir.join(format!("executor-{i}")).display().to_string(),
            "--memory-limit".into(),
            format!("{}", limit / executors),
            "--vcores".into(),
            (cores / executors).max(1).to_string(),
            "--config".into(),
            env_file.display().to_string(),
        ])?));
    }
    wait_for_executors(port, executors).await?;
    let spec = StoreSpec::from_location("marts", &dir.join("marts-ballista").to_string_lossy())
        .map_err(anyhow::Error::msg)?;
    env.stores.insert("marts".into(), spec);
    env.execution.engine = crm_marts::config::environment::Engine::Ballista {
        scheduler: format!("df://{bind}"),
    };
    reset_peak();
    let cpu_before = cpu_seconds();
    let children_before: Vec<f64> = children
        .iter()
        .map(|c| process_cpu_seconds(c.0.id()))
        .collect();
    let started = Instant::now();
    let cluster =
        super::run_pipeline(Path::new(&args.pipeline), &env, params, LogFormat::Json).await?;
    let cluster_total = started.elapsed().as_secs_f64();
    // Each process's CPU over the run and its peak memory, read before the cluster stops.
    let client_cpu = cpu_seconds() - cpu_before;
    let client_peak = peak_rss();
    let usage: Vec<(f64, u64)> = children
        .iter()
        .zip(&children_before)
        .map(|(c, before)| {
            (
                process_cpu_seconds(c.0.id()) - before,
                crm_marts::memory::peak_rss_of(c.0.id()).unwrap_or(0),
            )
        })
        .collect();
    drop(children);
    // The cluster's working files: its marts, shuffle files and spills.
    let _ = std::fs::remove_dir_all(dir.join("marts-ballista"));
    for i in 0..executors {
        let _ = std::fs::remove_dir_all(dir.join(format!("executor-{i}")));
    }
    println!();
    println!("ballista: 1 scheduler and {executors} executors on this machine, {} vcores and {:.1} GiB each", (cores / executors).max(1), (limit / executors) as f64 / (1u64 << 30) as f64);
    println!(
        "{:<28} {:>14} {:>10} {:>10} {:>7}",
        "stage", "rows", "local s", "ballista s", "ratio"
    );
    let ratio = |a: f64, b: f64| {
        if a > 0.0 {
            format!("{:.2}", b / a)
        } else {
            "-".into()
        }
    };
    for step in &local.steps {
        let Some(other) = cluster.steps.iter().find(|s| s.name == step.name) else {
            continue;
        };
        let (a, b) = (
            step.duration_ms as f64 / 1000.0,
            other.duration_ms as f64 / 1000.0,
        );
        let rows = step
            .rows
            .map(|r| r.to_string())
            .unwrap_or_else(|| "view".into());
        println!(
            "{:<28} {:>14} {:>10.1} {:>10.1} {:>7}",
            format!("step {}", step.name),
            rows,
            a,
            b,
            ratio(a, b)
        );
    }
    println!(
        "{:<28} {:>14} {:>10.1} {:>10.1} {:>7}",
        "pipeline total",
        "",
        local_total,
        cluster_total,
        ratio(local_total, cluster_total)
    );
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let wall = cluster_total.max(1e-9);
    println!(
        "{:<28} {:>10} {:>12} {:>9}",
        "process", "CPU s", "CPU % of run", "peak GiB"
    );
    println!(
        "{:<28} {:>10.1} {:>12.0} {:>9.2}",
        "client (crm-marts run)",
        client_cpu,
        100.0 * client_cpu / wall,
        gib(client_peak)
    );
    for (i, (cpu, peak)) in usage.iter().enumerate() {
        let name = if i == 0 {
            "scheduler".to_string()
        } else {
            format!("executor {}", i - 1)
        };
        println!(
            "{:<28} {:>10.1} {:>12.0} {:>9.2}",
            name,
            cpu,
            100.0 * cpu / wall,
            gib(*peak)
        );
    }
    let all: f64 = client_cpu + usage.iter().map(|u| u.0).sum::<f64>();
    println!(
        "all processes: {:.0} % CPU of {cores} cores over {:.1} s",
        100.0 * all / wall,
        cluster_total
    );
    Ok(ExitCode::SUCCESS)
}

fn process_cpu_seconds(process: impl std::fmt::Display) -> f64 {
    crm_marts::memory::cpu_seconds_of(process).unwrap_or(0.0)
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls the scheduler's REST API until `n` executors have registered.
async fn wait_for_executors(port: u16, n: usize) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = stream
                .write_all(b"GET /api/executors HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await;
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response).await;
            let body = response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b)
                .unwrap_or_default();
            let listed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            if listed.as_array().is_some_and(|a| a.len() >= n) {
                return Ok(());
            }
        }
        if started.elapsed().as_secs() > 60 {
            anyhow::bail!("the bench cluster's {n} executors did not register within 60 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
