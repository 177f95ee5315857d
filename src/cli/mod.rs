//! Command-line interface: what the user typed is parsed by clap, then resolved into
//! compiled configuration before anything runs.

mod backfill;
mod bench;
mod demo;
mod explain;
mod logging;
mod peer;
mod runs;
mod schedule;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crm_marts::config::environment::StoreSpec;
use crm_marts::config::{Diagnostics, Environment, Pipeline};
use crm_marts::manifest::Manifest;
use crm_marts::run::{self, RunError};
use crm_marts::storage::Stores;

use logging::{LogFormat, Spinner};

#[derive(Debug, Parser)]
#[command(
    name = "crm-marts",
    version,
    about = "Customer-analytics marts from a retailer's raw exports"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: LogFormat,
    /// More log detail (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum NewCommand {
    /// Write sql/marts/NAME.sql (when missing), add it to the pipeline's steps, and write
    /// NAME.yml with the columns and types the SQL plans to.
    Mart {
        /// The table name, e.g. mart_top_customers.
        name: String,
        /// The pipeline the mart joins.
        #[arg(long, default_value = "pipelines/customer_marts.yaml")]
        pipeline: PathBuf,
        /// Write NAME.yml again from the current SQL (keeping the descriptions and checks of
        /// the columns that stay).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline.
    Run {
        /// Pipeline file, e.g. pipelines/customer_marts.yaml.
        pipeline: PathBuf,
        /// Environment file with stores and limits.
        #[arg(long, default_value = "config/local.yaml")]
        config: PathBuf,
        /// The as-of date (sets the `as_of` parameter).
        #[arg(long)]
        as_of: Option<String>,
        /// A parameter value, `name=value` (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Replace a store's location, `name=url-or-path` (repeatable).
        #[arg(long = "store", value_name = "NAME=URL")]
        stores: Vec<String>,
        /// Incremental sources parse every export file again instead of reusing the
        /// staged copies of earlier runs.
        #[arg(long)]
        full_refresh: bool,
        /// Where the queries run, over `execution.engine`: `local` or `ballista`.
        #[arg(long, value_name = "local|ballista")]
        engine: Option<String>,
        /// The Ballista scheduler, `df://host:50050`, over `execution.scheduler`.
        #[arg(long, value_name = "URL")]
        scheduler: Option<String>,
        /// Run only these steps: `name`, `name+` (and what reads it), `+name` (and what it
        /// reads), `+name+`; several may follow one flag. Only selected marts are published.
        #[arg(long = "select", value_name = "SELECTOR", num_args = 1..)]
        select: Vec<String>,
        /// Leave these steps out (same selectors).
        #[arg(long = "exclude", value_name = "SELECTOR", num_args = 1..)]
        exclude: Vec<String>,
        /// Read the tables the selection needs from the published marts (the last
        /// successful run's versions) instead of computing them.
        #[arg(long, requires = "select")]
        defer: bool,
    },
    /// Run a Ballista scheduler that plans crm-marts' queries for its executors.
    Scheduler {
        /// Address to listen on (gRPC and the REST API).
        #[arg(long, default_value = "0.0.0.0:50050")]
        bind: std::net::SocketAddr,
        /// Host name executors and clients reach this scheduler by.
        #[arg(long)]
        external_host: Option<String>,
        /// Environment file whose stores the scheduler lists tables in.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a Ballista executor that runs crm-marts' queries for a scheduler.
    Executor {
        /// The scheduler, HOST:PORT.
        #[arg(long, default_value = "localhost:50050")]
        scheduler: String,
        /// Address of the executor's Arrow Flight service (results and shuffle files).
        #[arg(long, default_value = "0.0.0.0:50051")]
        bind: std::net::SocketAddr,
        /// The executor's gRPC port (default: the --bind port + 1).
        #[arg(long)]
        grpc_port: Option<u16>,
        /// Host name the scheduler, other executors and clients reach this executor by.
        #[arg(long)]
        external_host: Option<String>,
        /// Shuffle files and spills.
        #[arg(long, default_value = "/var/tmp/crm-marts")]
        work_dir: PathBuf,
        /// Memory of the executor, e.g. `8GiB`; its query operators spill past their share.
        #[arg(long)]
        memory_limit: Option<String>,
        /// Tasks run at once (default: the number of cores).
        #[arg(long)]
        vcores: Option<usize>,
        /// Environment file with the stores the executor reads and writes, and its
        /// `privacy.hash_key`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check pipelines and environment files without touching storage; reports every problem.
    Validate {
        /// Pipeline and environment files; pipelines are checked against the environments given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also compare each contracted mart with the version published in the
        /// environments' publish stores (reads storage) and fail on a breaking change.
        #[arg(long)]
        published: bool,
        /// With --published: report breaking changes as warnings, without failing (once
        /// the readers are updated).
        #[arg(long, requires = "published")]
        allow_breaking: bool,
    },
    /// Run the unit tests of SQL models (`tests:` in a model's YAML) on given rows, with no
    /// exports and no stores.
    Test {
        /// Pipeline files whose models are tested (default: every pipeline in pipelines/).
        pipelines: Vec<PathBuf>,
        /// Only these models (repeatable).
        #[arg(long = "select", value_name = "MODEL")]
        select: Vec<String>,
    },
    /// Write a static documentation site of a pipeline: every source and model with its
    /// columns, types, checks and SQL, the model graph and column-level lineage.
    Docs {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Folder of the site (index.html, t/<table>.html, lineage.json).
        #[arg(long, default_value = "docs")]
        out: PathBuf,
    },
    /// Write the HTML report of a run (the newest by default), as each run does next to
    /// its manifest.
    Report {
        /// The run id (see `crm-marts runs`).
        run_id: Option<String>,
        #[arg(long, default_value = "config/local.yaml")]
        config: PathBuf,
        /// The store holding the manifests.
        #[arg(long, default_value = "marts")]
        store: String,
        /// Write the report to this file instead of next to the manifest.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Start a new model: `crm-marts new mart NAME`.
    New {
        #[command(subcommand)]
        what: NewCommand,
    },
    /// Write realistic, messy sample exports (deterministic for a seed).
    Generate {
        #[arg(long, default_value_t = 1000)]
        customers: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write: a local folder or a store URL.
        #[arg(long)]
        out: String,
        /// Last day of the generated history.
        #[arg(long, default_value = "2026-11-22")]
        as_of: String,
        /// Mean orders per buying customer over the history.
        #[arg(long, default_value_t = 6.0)]
        orders_per_customer: f64,
        /// Share of rows made deliberately malformed.
        #[arg(long, default_value_t = 0.001)]
        bad_row_rate: f64,
    },
    /// Generate sample data and run the customer-marts pipeline on it, in local folders.
    Demo {
        /// Folder for the sample exports and marts.
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        customers: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Time each stage on generated data and print rows, seconds and peak memory.
    Bench(bench::BenchArgs),
    /// Why two source records are, or are not, one person in a run: the weight each
    /// comparison added, the probability against the threshold, and what became of the
    /// pair (not blocked together, below the threshold, refused by a guard).
    Explain(explain::ExplainArgs),
    /// Run a pipeline for every as-of date from --from to --to, oldest first, skipping dates
    /// that already succeeded (unless --force); stops at the first failing date.
    Backfill {
        /// Pipeline file, e.g. pipelines/customer_marts.yaml.
        pipeline: PathBuf,
        /// Environment file with stores and limits.
        #[arg(long, default_value = "config/local.yaml")]
        config: PathBuf,
        /// First as-of date (YYYY-MM-DD).
        #[arg(long)]
        from: String,
        /// Last as-of date (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: String,
        /// Run dates that already succeeded again.
        #[arg(long)]
        force: bool,
        /// A parameter value, `name=value` (repeatable); as_of comes from the range.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Replace a store's location, `name=url-or-path` (repeatable).
        #[arg(long = "store", value_name = "NAME=URL")]
        stores: Vec<String>,
    },
    /// Run the jobs of job files (or of every *.yaml in a folder) on their cron schedules,
    /// in the foreground; SIGTERM or SIGINT finishes the running jobs and exits.
    Schedule {
        /// Job files or folders of job files, e.g. jobs/.
        #[arg(required = true)]
        jobs: Vec<PathBuf>,
        /// Address of the metrics (/metrics) and health (/health) endpoint; `off` for none.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: String,
    },
    /// List recent runs from their manifests: status, duration, marts, rows, errors.
    Runs {
        /// Environment file with the stores.
        #[arg(long, default_value = "config/local.yaml")]
        config: PathBuf,
        /// The store the pipelines publish to.
        #[arg(long, default_value = "marts")]
        store: String,
        /// How many runs, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON object per run instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    logging::init(cli.log_format, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(dispatch(cli));
    // Blocking work still running (a step stopped by the memory guard that has not reached
    // its next check) does not hold the exit up for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    match outcome {
        Ok(code) => code,
        Err(e) => {
            if let Some(diags) = e.downcast_ref::<Diagnostics>() {
                eprint!("error: {diags}");
                return ExitCode::from(2);
            }
            if let Some(RunError::Config(diags)) = e.downcast_ref::<RunError>() {
                eprint!("error: {diags}");
                return ExitCode::from(2);
            }
            if e.downcast_ref::<UsageError>().is_some() {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A mistake in what the user typed (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            pipeline,
            config,
            as_of,
            params,
            stores,
            full_refresh,
            engine,
            scheduler,
            select,
            exclude,
            defer,
        } => {
            let mut env = load_environment(&config, &stores)?;
            env.execution.full_refresh = full_refresh;
            env.execution.selection = crm_marts::selection::Selection {
                select,
                exclude,
                defer,
            };
            if engine.is_some() || scheduler.is_some() {
                let current = env.execution.engine.clone();
                let name = engine.as_deref().unwrap_or(if scheduler.is_some() {
                    "ballista"
                } else {
                    current.name()
                });
                let url = match (&scheduler, &current) {
                    (Some(url), _) => Some(url.as_str()),
                    (None, crm_marts::config::environment::Engine::Ballista { scheduler })
                        if name == "ballista" =>
                    {
                        Some(scheduler.as_str())
                    }
                    _ => None,
                };
                env.execution.engine = crm_marts::config::environment::Engine::parse(name, url)
                    .map_err(|(key, e)| UsageError(format!("--{key}: {e}")))?;
            }
            let mut given = parse_pairs(&params, "--param")?;
            if let Some(as_of) = as_of {
                given.insert("as_of".into(), as_of);
            }
            let manifest = run_pipeline(&pipeline, &env, &given, cli.log_format).await?;
            print_summary(&manifest);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            files,
            published,
            allow_breaking,
        } => validate(&files, published, allow_breaking).await,
        Command::Test { pipelines, select } => test_models(&pipelines, &select).await,
        Command::New {
            what:
                NewCommand::Mart {
                    name,
                    pipeline,
                    force,
                },
        } => new_mart(&pipeline, &name, force).await,
        Command::Report {
            run_id,
            config,
            store,
            out,
        } => {
            let env = load_environment(&config, &[])?;
            let spec = env
                .stores
                .get(&store)
                .ok_or_else(|| UsageError(format!("no store `{store}` in {}", config.display())))?;
            let store = crm_marts::storage::Store::open(spec)?;
            let run_id = match run_id {
                Some(id) => id,
                None => crm_marts::report::latest_run(&store)
                    .await?
                    .ok_or_else(|| UsageError(format!("no runs in {}", store.display_url)))?,
            };
            match out {
                Some(file) => {
                    let html = crm_marts::report::render(&store, &run_id).await?;
                    std::fs::write(&file, html)
                        .with_context(|| format!("writing {}", file.display()))?;
                    println!("wrote the report of run {run_id} to {}", file.display());
                }
                None => println!(
                    "wrote the report of run {run_id} to {}",
                    crm_marts::report::write(&store, &run_id).await?
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Docs { pipeline, out } => {
            let compiled = Pipeline::load(&pipeline, None)?;
            let pages = crm_marts::docs::write_site(&compiled, &out).await?;
            println!(
                "wrote {} files of the docs of `{}` to {} (open {})",
                pages.len(),
                compiled.name,
                out.display(),
                out.join("index.html").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            customers,
            seed,
            out,
            as_of,
            orders_per_customer,
            bad_row_rate,
        } => {
            let as_of = chrono::NaiveDate::parse_from_str(&as_of, "%Y-%m-%d")
                .map_err(|_| UsageError(format!("--as-of {as_of:?} is not a date (YYYY-MM-DD)")))?;
            let options = crm_marts::generate::GenerateOptions {
                customers,
                seed,
                as_of,
                orders_per_customer,
                bad_row_rate,
                ..Default::default()
            };
            demo::generate_to(&options, &out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            dir,
            customers,
            seed,
        } => demo::run(&dir, customers, seed, cli.log_format).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Explain(args) => explain::run(args).await,
        Command::Backfill {
            pipeline,
            config,
            from,
            to,
            force,
            params,
            stores,
        } => {
            let env = load_environment(&config, &stores)?;
            let date = |flag: &str, text: &str| {
                chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map_err(|_| UsageError(format!("{flag} {text:?} is not a date (YYYY-MM-DD)")))
            };
            let args = backfill::BackfillArgs {
                pipeline: &pipeline,
                env: &env,
                from: date("--from", &from)?,
                to: date("--to", &to)?,
                force,
                given: parse_pairs(&params, "--param")?,
                format: cli.log_format,
            };
            backfill::run(args).await
        }
        Command::Schedule { jobs, listen } => {
            let listen = match listen.as_str() {
                "off" | "" => None,
                addr => Some(addr.parse().map_err(|_| {
                    UsageError(format!("--listen {addr:?}: expected HOST:PORT or off"))
                })?),
            };
            schedule::run(&jobs, listen, cli.log_format).await
        }
        Command::Scheduler {
            bind,
            external_host,
            config,
        } => {
            let env = optional_environment(config.as_deref())?;
            crm_marts::cluster::scheduler(crm_marts::cluster::SchedulerOptions {
                bind,
                external_host,
                env,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Executor {
            scheduler,
            bind,
            grpc_port,
            external_host,
            work_dir,
            memory_limit,
            vcores,
            config,
        } => {
            let env = optional_environment(config.as_deref())?;
            let memory_limit = match memory_limit {
                Some(text) => Some(
                    crm_marts::config::environment::parse_bytes(&text)
                        .map_err(|e| UsageError(format!("--memory-limit {text:?}: {e}")))?,
                ),
                None => env.execution.memory_limit,
            };
            let options = crm_marts::cluster::ExecutorOptions {
                scheduler,
                bind,
                grpc_port,
                external_host,
                work_dir,
                memory_limit,
                vcores,
                env,
            };
            crm_marts::cluster::executor(options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs {
            config,
            store,
            limit,
            json,
        } => {
            let env = load_environment(&config, &[])?;
            runs::list(&env, &store, limit, json).await
        }
    }
}

/// The environment file of a cluster process, if it was given one.
fn optional_environment(config: Option<&Path>) -> Result<Environment> {
    Ok(match config {
        Some(file) => Environment::load(file)?,
        None => Environment::empty(),
    })
}

/// Loads an environment and applies `--store name=url` overrides.
pub fn load_environment(config: &Path, overrides: &[String]) -> Result<Environment> {
    let mut env = Environment::load(config)?;
    for (name, location) in parse_pairs(overrides, "--store")? {
        let spec = StoreSpec::from_location(&name, &location)
            .map_err(|e| UsageError(format!("--store {name}: {e}")))?;
        env.stores.insert(name, spec);
    }
    Ok(env)
}

fn parse_pairs(pairs: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            return Err(UsageError(format!("{flag} {p:?}: expected NAME=VALUE")).into());
        };
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

pub async fn run_pipeline(
    pipeline_file: &Path,
    env: &Environment,
    given: &BTreeMap<String, String>,
    format: LogFormat,
) -> Result<Manifest> {
    let pipeline = Pipeline::load(pipeline_file, Some(env))?;
    let params = run::bind_params(&pipeline, given)?;
    let stores = Stores::open(&env.stores).context("opening stores")?;
    let spinner = Spinner::new(format);
    let manifest = run::run(&pipeline, &env.execution, &stores, params, &spinner).await?;
    Ok(manifest)
}

pub fn print_summary(m: &Manifest) {
    let secs = m.duration_ms.unwrap_or(0) as f64 / 1000.0;
    println!(
        "run {} of `{}` succeeded in {secs:.1}s",
        m.run_id, m.pipeline
    );
    if let Some(sel) = &m.selection {
        let deferred: Vec<String> = sel
            .deferred
            .iter()
            .map(|d| {
                if d.table == d.mart {
                    d.table.clone()
                } else {
                    format!("{} (from {})", d.table, d.mart)
                }
            })
            .collect();
        println!(
            "  selection: {} step{} selected, {} run for them unpublished{}",
            sel.selected.len(),
            plural(sel.selected.len()),
            sel.upstream.len(),
            if deferred.is_empty() {
                String::new()
            } else {
                format!(", read from published marts: {}", deferred.join(", "))
            }
        );
    }
    let width = m
        .outputs
        .iter()
        .map(|o| o.mart.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("  {:<width$}  {:>10}  location", "mart", "rows");
    for o in &m.outputs {
        println!("  {:<width$}  {:>10}  {}", o.mart, o.rows, o.published_url);
    }
    if m.quarantined_rows > 0 {
        println!("  quarantined rows: {}", m.quarantined_rows);
        for q in &m.quarantine {
            println!("    {:<20} {:>6}  {}", q.source, q.rows, q.file);
        }
    }
}

/// `crm-marts test`: every unit test of the pipelines' models, once per model file.
async fn new_mart(pipeline: &Path, name: &str, force: bool) -> Result<ExitCode> {
    let done = crm_marts::scaffold::new_mart(pipeline, name, force).await?;
    if let Some(sql) = &done.sql_written {
        println!(
            "wrote {} (a first query: replace it with the mart's)",
            sql.display()
        );
    }
    if done.step_added {
        println!(
            "added `- sql: marts/{name}.sql` to the steps of {}",
            pipeline.display()
        );
    }
    if let Some(yml) = &done.yml_written {
        println!(
            "wrote {} with the {} planned column{}:",
            yml.display(),
            done.columns.len(),
            plural(done.columns.len())
        );
        for (column, ty) in &done.columns {
            println!("  {column}  {ty}");
        }
        println!("describe the mart and its columns there; `crm-marts new mart {name} --force` writes it again after the SQL changes");
    }
    Ok(ExitCode::SUCCESS)
}

async fn test_models(pipelines: &[PathBuf], select: &[String]) -> Result<ExitCode> {
    let files: Vec<PathBuf> = if pipelines.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir("pipelines")
            .context("reading pipelines/ (give pipeline files, or run from the project folder)")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        found.sort();
        found
    } else {
        pipelines.to_vec()
    };
    let mut results = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut unknown: Vec<String> = select.to_vec();
    for file in &files {
        let pipeline = match Pipeline::load(file, None) {
            Ok(p) => p,
            Err(d) => {
                eprintln!("{d}");
                return Ok(ExitCode::from(2));
            }
        };
        let missing = crm_marts::model_tests::unknown_selection(&pipeline, select);
        unknown.retain(|s| missing.contains(s));
        for result in crm_marts::model_tests::run_pipeline_tests(&pipeline, select).await {
            // A model in several pipelines is tested once.
            if seen.insert((
                result
                    .location
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                result.test.clone(),
            )) {
                results.push(result);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(UsageError(format!(
            "--select {}: no SQL model of that name in {}",
            unknown.join(", "),
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    let passed = crm_marts::model_tests::print_report(&results, &mut std::io::stdout().lock())?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Validates files: environments first, so pipelines can be checked against their stores.
async fn validate(paths: &[PathBuf], published: bool, allow_breaking: bool) -> Result<ExitCode> {
    // A folder stands for its *.yaml files (`crm-marts validate jobs/`).
    let files = &crm_marts::config::job::job_files(paths)?;
    let mut diags = Diagnostics::default();
    let mut envs: Vec<Environment> = Vec::new();
    let mut pipelines: Vec<&PathBuf> = Vec::new();
    let mut jobs = 0;
    for file in files {
        match file_kind(file) {
            Ok(FileKind::Environment) => match Environment::load(file) {
                Ok(env) => envs.push(env),
                Err(d) => diags.extend(d),
            },
            Ok(FileKind::Pipeline) => pipelines.push(file),
            Ok(FileKind::Job) => {
                jobs += 1;
                diags.extend(validate_job(file).await);
            }
            Err(d) => diags.push(d),
        }
    }
    let mut checked = 0;
    for file in pipelines {
        let mut compiled = None;
        if envs.is_empty() {
            match Pipeline::load(file, None) {
                Ok(p) => compiled = Some(p),
                Err(d) => diags.extend(d),
            }
        }
        let mut publish_stores = Vec::new();
        for env in &envs {
            match Pipeline::load(file, Some(env)) {
                Ok(p) => {
                    if let Some(spec) = env.stores.get(&p.publish.store).filter(|_| published) {
                        publish_stores.push(spec.clone());
                    }
                    compiled = Some(p);
                }
                Err(d) => diags.extend(d),
            }
        }
        if let Some(pipeline) = compiled {
            let (planned, ctx) = crm_marts::validate::plan_context(&pipeline).await;
            diags.extend(planned);
            // Contracted marts against the versions their readers see now.
            for spec in &publish_stores {
                let store = match crm_marts::storage::Store::open(spec) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("note: {e}; breaking changes were not checked");
                        continue;
                    }
                };
                let limit = std::time::Duration::from_secs(60);
                let Ok((breaking, notes)) = tokio::time::timeout(
                    limit,
                    crm_marts::validate::breaking_changes(&pipeline, &ctx, &store),
                )
                .await
                else {
                    diags.push(crm_marts::config::Diagnostic::new(
                        file,
                        format!(
                            "--published: store `{}` ({}) did not answer within {} s",
                            store.name,
                            store.display_url,
                            limit.as_secs()
                        ),
                    ));
                    continue;
                };
                for note in notes {
                    eprintln!("note: {note}; breaking changes were not checked");
                }
                if allow_breaking {
                    for d in &breaking.0 {
                        eprintln!("warning: {d}");
                    }
                } else {
                    diags.extend(breaking);
                }
            }
        }
        checked += 1;
    }
    if !diags.is_empty() {
        return Err(diags.into());
    }
    println!(
        "{} file{} valid ({checked} pipeline{}, {} environment{}, {jobs} job{})",
        files.len(),
        plural(files.len()),
        plural(checked),
        envs.len(),
        plural(envs.len()),
        plural(jobs)
    );
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

enum FileKind {
    Pipeline,
    Environment,
    Job,
}

/// Checks a job file, its environment and its pipelines under that environment.
async fn validate_job(file: &Path) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let job = match crm_marts::config::Job::load(file) {
        Ok(j) => j,
        Err(d) => return d,
    };
    let env = match Environment::load(&job.config) {
        Ok(e) => e,
        Err(d) => return d,
    };
    if !env.stores.contains_key(&job.lock_store) {
        diags.push(crm_marts::config::Diagnostic::new(
            file,
            format!(
                "lock.store `{}` is not a store of {}",
                job.lock_store,
                job.config.display()
            ),
        ));
    }
    for p in &job.pipelines {
        match Pipeline::load(p, Some(&env)) {
            Ok(pipeline) => {
                diags.extend(crm_marts::validate::plan_pipeline(&pipeline).await);
                for name in job.params.keys() {
                    if !pipeline.parameters.contains_key(name) {
                        diags.push(crm_marts::config::Diagnostic::new(
                            file,
                            format!(
                                "params.{name}: pipeline {} has no such parameter",
                                p.display()
                            ),
                        ));
                    }
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    diags
}

/// Tells a pipeline from an environment by its top-level keys.
fn file_kind(file: &Path) -> std::result::Result<FileKind, crm_marts::config::Diagnostic> {
    use crm_marts::config::Diagnostic;
    let text = std::fs::read_to_string(file)
        .map_err(|e| Diagnostic::new(file, format!("cannot read file: {e}")))?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| Diagnostic::from_yaml(file, &e))?;
    let has = |k: &str| value.get(k).is_some();
    if has("schedule") {
        Ok(FileKind::Job)
    } else if has("steps") || has("sources") || has("publish") {
        Ok(FileKind::Pipeline)
    } else if has("stores") || has("execution") {
        Ok(FileKind::Environment)
    } else {
        Err(Diagnostic::new(file, "not a pipeline (sources, steps, publish), an environment (stores, execution) or a job (schedule)").at(1, 1))
    }
}
