//! Running a compiled pipeline: bind parameters, load sources, run steps in dependency
//! order, check and write marts out of readers' sight, then publish them all and write
//! the manifest. A failed run publishes nothing and removes what it wrote.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use tracing::{info, warn};

use crate::checks;
use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::environment::Execution;
use crate::config::mart::Severity;
use crate::config::params::{ParamValue, Params};
use crate::config::pipeline::{Pipeline, Step, StepKind};
use crate::manifest::{FailureKind, Manifest, QuarantineReport, RunStatus, StepReport};
use crate::publish::{upload_file, Publisher, WrittenMart};
use crate::sources;
use crate::sql::error_diagnostic;
use crate::steps::BuiltinOutput;
use crate::storage::Stores;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad parameters or configuration: nothing was run.
    #[error("{0}")]
    Config(Diagnostics),
    /// The run started and failed; the manifest says how far it got.
    #[error("run {run_id} failed: {message}")]
    Failed {
        run_id: String,
        kind: FailureKind,
        message: String,
        manifest: Box<Manifest>,
    },
}

impl RunError {
    /// What kind of failure this is: configuration errors are found before anything runs.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Config(_) => FailureKind::Config,
            Self::Failed { kind, .. } => *kind,
        }
    }
}

/// Why a started run failed.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    fn storage(e: impl std::fmt::Display) -> Self {
        Self::new(FailureKind::Storage, e.to_string())
    }

    /// A query engine error, classified by its root cause, with `context` before it.
    fn engine(e: &DataFusionError, context: impl FnOnce(&dyn std::fmt::Display) -> String) -> Self {
        Self::new(engine_kind(e), context(e))
    }
}

/// The kind of a query engine error, from its innermost cause. An I/O or object store
/// error anywhere in the chain of causes makes it a storage failure, or a resource failure
/// when the disk or quota is full.
pub fn engine_kind(e: &DataFusionError) -> FailureKind {
    let root = e.find_root();
    if let Some(kind) = storage_cause(root) {
        return kind;
    }
    match root {
        DataFusionError::ResourcesExhausted(_) => FailureKind::Resource,
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => FailureKind::Storage,
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_)
        | DataFusionError::NotImplemented(_) => FailureKind::Config,
        DataFusionError::Execution(message) => {
            crate::engine::cluster_failure_kind(message).unwrap_or(FailureKind::Input)
        }
        DataFusionError::ArrowError(..) | DataFusionError::ParquetError(_) => FailureKind::Input,
        _ => FailureKind::Internal,
    }
}

/// Walks `error` and its causes for an I/O or object store error.
fn storage_cause(error: &(dyn std::error::Error + 'static)) -> Option<FailureKind> {
    let mut storage = false;
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io_kind(io));
        }
        if let Some(DataFusionError::IoError(io)) = e.downcast_ref::<DataFusionError>() {
            return Some(io_kind(io));
        }
        if e.downcast_ref::<object_store::Error>().is_some()
            || matches!(
                e.downcast_ref::<DataFusionError>(),
                Some(DataFusionError::ObjectStore(_))
            )
        {
            storage = true;
        }
        cause = e.source();
    }
    storage.then_some(FailureKind::Storage)
}

/// A full disk or an exhausted quota is a resource a retry (after clean-up) can get back;
/// any other I/O error is the storage's.
fn io_kind(e: &std::io::Error) -> FailureKind {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    match e.kind() {
        std::io::ErrorKind::StorageFull
        | std::io::ErrorKind::QuotaExceeded
        | std::io::ErrorKind::OutOfMemory => FailureKind::Resource,
        _ if matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT)) => FailureKind::Resource,
        _ => FailureKind::Storage,
    }
}

fn source_kind(e: &sources::SourceError) -> FailureKind {
    use sources::SourceError as E;
    match e {
        E::Config { .. } => FailureKind::Config,
        E::NoFiles { .. } | E::File { .. } | E::BudgetExceeded { .. } => FailureKind::Input,
        E::Storage(..) => FailureKind::Storage,
        E::DataFusion(e, _) => engine_kind(e),
    }
}

fn publish_kind(e: &crate::publish::PublishError) -> FailureKind {
    match e {
        crate::publish::PublishError::Write { source, .. } => engine_kind(source),
        _ => FailureKind::Storage,
    }
}

/// Something that wants to hear how the run is going (a progress bar, a log).
pub trait Progress: Send + Sync {
    fn stage(&self, _message: &str) {}
    fn done(&self) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// Binds command-line values over declared defaults. Every value is parsed as its
/// declared type; unknown names and missing values are configuration errors.
pub fn bind_params(
    pipeline: &Pipeline,
    given: &BTreeMap<String, String>,
) -> Result<Params, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut params = Params::new();
    for (name, text) in given {
        match pipeline.parameters.get(name) {
            None => {
                let declared: Vec<&str> = pipeline.parameters.keys().map(String::as_str).collect();
                diags.push(Diagnostic::new(
                    &pipeline.file,
                    format!(
                        "unknown parameter `{name}` (declared: {})",
                        declared.join(", ")
                    ),
                ));
            }
            Some(p) => match ParamValue::parse(p.kind, text) {
                Ok(v) => {
                    params.insert(name.clone(), v);
                }
                Err(e) => diags.push(Diagnostic::new(
                    &pipeline.file,
                    format!("parameter `{name}`: {e}"),
                )),
            },
        }
    }
    for (name, p) in &pipeline.parameters {
        if params.contains_key(name) {
            continue;
        }
        match &p.default {
            Some(v) => {
                params.insert(name.clone(), v.clone());
            }
            None => diags.push(Diagnostic::new(
                &pipeline.file,
                format!("parameter `{name}` ({}) has no default and no value was given (--param {name}=...)", p.kind),
            )),
        }
    }
    diags.into_result(params)
}

/// A sortable, path-safe run id: `20261125T083012123Z-1a2b`.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let salt: u16 = rand::random();
    format!("{}-{salt:04x}", now.format("%Y%m%dT%H%M%S%3fZ"))
}

/// Names the configured limit and the ways out when the query engine ran out of memory;
/// an exhausted memory pool or a full disk is a resource failure, however it was wrapped.
fn with_resource_hint(failure: Failure, execution: &Execution) -> Failure {
    let message = failure.message;
    let out_of_memory =
        message.contains("Resources exhausted") || message.contains("Not enough memory");
    let disk_full = message.contains("No space left on device");
    let kind = if out_of_memory || disk_full {
        FailureKind::Resource
    } else {
        failure.kind
    };
    let message = match engine_pool(execution) {
        Some(pool) if out_of_memory => format!(
            "{message} (the query engine's memory pool is {:.1} MiB: `execution.engine_memory`, by default 60 % of `execution.memory_limit`; raise it, or lower `target_partitions` so fewer operators share it)",
            pool as f64 / (1024.0 * 1024.0)
        ),
        _ => message,
    };
    Failure { kind, message }
}

/// Memory each sort keeps back for merging its spill files: DataFusion's 10 MiB, or less
/// under a small limit, so that every partition's sort can still spill.
fn sort_spill_reservation(execution: &Execution) -> usize {
    let default = 10 << 20;
    match engine_pool(execution) {
        Some(pool) => default.min(pool / (4 * execution.target_partitions.max(1))),
        None => default,
    }
}

/// The query engine's memory pool: its share of `memory_limit`, which bounds the whole
/// process ([`crate::memory::ENGINE_SHARE`]).
pub fn engine_pool(execution: &Execution) -> Option<usize> {
    execution.engine_memory.or_else(|| {
        execution
            .memory_limit
            .map(|limit| (limit as f64 * crate::memory::ENGINE_SHARE) as usize)
    })
}

/// The DataFusion session for one run on this machine, with the environment's memory
/// limit and spill folder.
pub fn session(
    execution: &Execution,
    spill_dir: PathBuf,
) -> datafusion::error::Result<SessionContext> {
    let config = session_config(execution, SessionConfig::new())?;
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime_env(execution, spill_dir)?)
        .with_default_features()
        // Running windows a batch at a time (see `running_window`); a cluster plans
        // DataFusion's own operator.
        .with_physical_optimizer_rule(Arc::new(crate::running_window::RunningWindows))
        .build();
    let ctx = SessionContext::new_with_state(state);
    crate::functions::register_all(&ctx, &execution.functions);
    Ok(ctx)
}

/// crm-marts' DataFusion settings on `base`, then the environment's own
/// (`execution.datafusion`). On a cluster they travel with every query to the scheduler
/// and the executors.
pub fn session_config(
    execution: &Execution,
    base: SessionConfig,
) -> datafusion::error::Result<SessionConfig> {
    let mut config = base
        .with_target_partitions(execution.target_partitions)
        .with_batch_size(execution.batch_size)
        .with_information_schema(true)
        .set_bool("datafusion.sql_parser.collect_spans", true)
        // Strings are read as Utf8, not Utf8View. The external sort counts a view array's
        // shared buffers once per batch that points into them, so sorts of string columns
        // (window functions over the clickstream) asked for many times the memory they used
        // and failed instead of spilling (apache/datafusion#12136).
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        .set_usize(
            "datafusion.execution.sort_spill_reservation_bytes",
            sort_spill_reservation(execution),
        )
        // Rows hashed to partitions by `cookie_id` are already together for a window or an
        // aggregate over (`cookie_id`, `session_no`): with as many partitions as the plan
        // wants, the subset is kept instead of hashing (and so sorting) the rows again.
        .set_usize(
            "datafusion.optimizer.subset_repartition_threshold",
            execution.target_partitions.max(1),
        );
    for (name, value) in &execution.datafusion {
        config.options_mut().set(name, value)?;
    }
    Ok(config)
}

/// The runtime of a session in this process: the memory pool (the engine's share of
/// `memory_limit`) and the spill folder.
pub fn runtime_env(
    execution: &Execution,
    spill_dir: PathBuf,
) -> datafusion::error::Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    let mut runtime = RuntimeEnvBuilder::new().with_temp_file_path(spill_dir);
    if let Some(pool) = engine_pool(execution) {
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(pool),
            NonZeroUsize::new(5).expect("non-zero"),
        );
        runtime = runtime.with_memory_pool(Arc::new(pool));
    }
    runtime.build_arc()
}

/// Runs `pipeline` with bound `params` on `stores`.
pub async fn run(
    pipeline: &Pipeline,
    execution: &Execution,
    stores: &Stores,
    params: Params,
    progress: &dyn Progress,
) -> Result<Manifest, RunError> {
    let run_id = new_run_id();
    let publish_store = stores.get(&pipeline.publish.store).map_err(|e| {
        RunError::Config(Diagnostics(vec![Diagnostic::new(
            &pipeline.file,
            e.to_string(),
        )]))
    })?;
    let plan = match execution.selection.is_partial() {
        true => {
            Some(crate::selection::plan(pipeline, &execution.selection).map_err(RunError::Config)?)
        }
        false => None,
    };
    let mut manifest = Manifest::new(
        &run_id,
        &pipeline.name,
        &pipeline.file.display().to_string(),
        params.clone(),
    );
    manifest.engine = execution.engine.to_string();
    let failed = |mut manifest: Manifest, failure: Failure| {
        manifest.errors.push(failure.message.clone());
        manifest.error_kind = Some(failure.kind);
        manifest.finish(RunStatus::Failed);
        RunError::Failed {
            run_id: run_id.clone(),
            kind: failure.kind,
            message: failure.message,
            manifest: Box::new(manifest),
        }
    };
    for dir in crate::scratch::Scratch::remove_abandoned(&execution.spill_dir) {
        info!(folder = %dir.display(), "removed the scratch folder of a run that did not finish");
    }
    // Removed when dropped, whichever way this function returns.
    let scratch = match crate::scratch::Scratch::create(&execution.spill_dir, &run_id) {
        Ok(s) => s,
        Err(e) => {
            let dir = execution.spill_dir.join(&run_id);
            return Err(failed(
                manifest,
                Failure::storage(format!(
                    "cannot create scratch folder {}: {e}",
                    dir.display()
                )),
            ));
        }
    };
    let work_dir = scratch.dir.join("work");
    if let Err(e) = std::fs::create_dir_all(&work_dir) {
        return Err(failed(
            manifest,
            Failure::storage(format!(
                "cannot create work folder {}: {e}",
                work_dir.display()
            )),
        ));
    }
    // Runs of this store whose process is gone say so from now on.
    match crate::liveness::mark_abandoned(publish_store).await {
        Ok(marked) => {
            for id in &marked {
                warn!(abandoned_run = %id, "marked a run whose process is gone as abandoned");
            }
            manifest.marked_abandoned = marked;
        }
        Err(e) => warn!(error = %e, "could not check for abandoned runs"),
    }
    // From here to the final manifest, this process says the run is alive: by its
    // heartbeat to other hosts, by the active-run list to other runs in this process.
    let heartbeat = crate::liveness::Heartbeat::start(publish_store, &run_id);
    if let Err(e) = manifest.write(publish_store).await {
        heartbeat.stop().await;
        return Err(failed(manifest, Failure::storage(e)));
    }
    info!(run_id = %run_id, pipeline = %pipeline.name, "run started");
    let publisher = Publisher {
        store: publish_store.clone(),
        run_id: run_id.clone(),
        keep_versions: pipeline.publish.keep_versions,
    };
    let mut written: Vec<WrittenMart> = Vec::new();
    let placement = crate::engine::Placement::for_run(
        execution,
        publish_store,
        &run_id,
        work_dir.join("client-spill"),
    );
    let result = match &placement {
        Ok(placement) => {
            let run = Execute {
                pipeline,
                execution,
                stores,
                params: &params,
                publisher: &publisher,
                placement,
                work_dir: &work_dir,
                plan: plan.as_ref(),
            };
            execute(&run, &mut manifest, &mut written, progress)
                .await
                .map(|_| ())
        }
        Err(e) => Err(Failure::new(FailureKind::Internal, e.to_string())),
    };
    let result = match result {
        Ok(()) => publish_all(&publisher, &written, &mut manifest, progress).await,
        Err(e) => Err(e),
    };
    // The run's tables in shared storage (on a cluster) go with the scratch folder.
    if let Ok(placement) = &placement {
        placement.remove().await;
    }
    // Incremental sources remember what this run read, once it has published. The marts
    // are live by now: a state that cannot be written only means the next run parses
    // those files again.
    if result.is_ok() {
        if let Err(e) = commit_source_states(pipeline, execution, &publisher, &mut manifest).await {
            warn!(error = %e, "the next run will parse these files again");
        }
    }
    drop(scratch);
    progress.done();
    let outcome = match result {
        Ok(()) => {
            manifest.finish(RunStatus::Succeeded);
            if let Err(e) = manifest.write(publish_store).await {
                warn!(error = %e, "could not write the final manifest");
            }
            info!(
                run_id = %run_id,
                marts = manifest.outputs.len(),
                quarantined_rows = manifest.quarantined_rows,
                duration_ms = manifest.duration_ms.unwrap_or(0),
                "run succeeded"
            );
            Ok(manifest)
        }
        Err(failure) => {
            for w in &written {
                if !manifest.outputs.iter().any(|o| o.mart == w.mart) {
                    publisher.discard(w).await;
                }
            }
            let mut err = failed(manifest, failure);
            if let RunError::Failed {
                manifest,
                message,
                kind,
                ..
            } = &mut err
            {
                if let Err(e) = manifest.write(publish_store).await {
                    warn!(error = %e, "could not write the final manifest");
                }
                tracing::error!(run_id = %run_id, kind = %kind, error = %message, "run failed");
            }
            Err(err)
        }
    };
    // The page people look at, next to the manifest; a run does not fail for it.
    match crate::report::write(publish_store, &run_id).await {
        Ok(url) => info!(report = %url, "run report written"),
        Err(e) => warn!(error = %e, "could not write the run report"),
    }
    heartbeat.stop().await;
    outcome
}

/// What one run works with.
struct Execute<'a> {
    pipeline: &'a Pipeline,
    execution: &'a Execution,
    stores: &'a Stores,
    params: &'a Params,
    publisher: &'a Publisher,
    placement: &'a crate::engine::Placement,
    work_dir: &'a std::path::Path,
    /// Set when only part of the pipeline runs.
    plan: Option<&'a crate::selection::RunPlan>,
}

/// Runs the sources and steps of `run` in a new context, which it returns.
async fn execute(
    run: &Execute<'_>,
    manifest: &mut Manifest,
    written: &mut Vec<WrittenMart>,
    progress: &dyn Progress,
) -> Result<SessionContext, Failure> {
    let Execute {
        pipeline,
        execution,
        stores,
        params,
        publisher,
        placement,
        work_dir,
        plan,
    } = *run;
    if let crate::config::environment::Engine::Ballista { .. } = &execution.engine {
        crate::engine::check_shared(&publisher.store)
            .map_err(|m| Failure::new(FailureKind::Config, m))?;
    }
    let ctx = crate::engine::context(execution, work_dir.join("spill"))
        .await
        .map_err(|e| match e {
            crate::engine::EngineError::Unreachable { .. } => {
                Failure::new(FailureKind::Cluster, e.to_string())
            }
            crate::engine::EngineError::DataFusion(e) => {
                Failure::new(FailureKind::Internal, e.to_string())
            }
        })?;
    for store in stores.iter() {
        store.register(&ctx);
    }

    // Resident memory past the limit stops the step that is running (and so the run).
    let guard = execution
        .memory_limit
        .and_then(|limit| crate::memory::MemoryGuard::start(limit as u64));
    let guard = guard.as_ref();
    let over = |what: &str, rss: u64| {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        Failure::new(
            FailureKind::Resource,
            format!(
                "{what}: the process reached {:.2} GiB resident, past the run's memory limit of {:.2} GiB (`execution.memory_limit`; the query engine's pool is {:.2} GiB of it): raise the limit, lower `execution.engine_memory`, or lower `target_partitions`",
                gib(rss),
                gib(execution.memory_limit.unwrap_or(0) as u64),
                gib(engine_pool(execution).unwrap_or(0) as u64)
            ),
        )
    };

    // Sources load concurrently; every failure is reported, not only the first.
    let sources_to_load: Vec<&crate::config::pipeline::Source> = pipeline
        .sources
        .iter()
        .filter(|s| plan.is_none_or(|p| p.sources.contains(&s.name)))
        .collect();
    progress.stage(&format!("loading {} sources", sources_to_load.len()));
    crate::memory::reset_peak();
    let loading = Instant::now();
    let loading_cpu_ms = crate::memory::cpu_ms();
    let loads = sources_to_load.into_iter().map(|s| {
        let ctx = &ctx;
        async move {
            let started = Instant::now();
            let inc = sources::IncrementalContext {
                store: &publisher.store,
                pipeline: &pipeline.name,
                full_refresh: execution.full_refresh,
            };
            let r = sources::load(ctx, s, stores, params, placement, work_dir, Some(inc)).await;
            (s, r, started.elapsed())
        }
    });
    let results = crate::memory::within(guard, futures::future::join_all(loads))
        .await
        .map_err(|rss| over("loading the sources", rss))?;
    manifest.sources_peak_rss_bytes = crate::memory::peak_rss();
    manifest.sources_duration_ms = Some(loading.elapsed().as_millis() as u64);
    manifest.sources_cpu_ms = crate::memory::cpu_ms()
        .zip(loading_cpu_ms)
        .map(|(now, then)| now.saturating_sub(then));
    let mut errors = Vec::new();
    for (source, result, elapsed) in results {
        match result {
            Ok(loaded) => {
                info!(
                    source = %loaded.name,
                    files = loaded.files.len(),
                    rows = loaded.rows.unwrap_or(0),
                    quarantined = loaded.quarantined,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "source loaded"
                );
                if let Some(file) = &loaded.quarantine_file {
                    let rel = format!("_quarantine/{}/{}.parquet", manifest.run_id, loaded.name);
                    let dest = publisher.store.path(&rel).map_err(Failure::storage)?;
                    upload_file(&publisher.store, file, &dest)
                        .await
                        .map_err(Failure::storage)?;
                    let url = publisher.store.url(&dest);
                    warn!(source = %loaded.name, rows = loaded.quarantined, file = %url, "rows quarantined");
                    manifest.quarantine.push(QuarantineReport {
                        source: loaded.name.clone(),
                        rows: loaded.quarantined,
                        file: url.clone(),
                    });
                    if source
                        .budget
                        .exceeded(loaded.quarantined, loaded.rows.unwrap_or(0))
                    {
                        errors.push((
                            FailureKind::Input,
                            sources::SourceError::BudgetExceeded {
                                source_name: loaded.name.clone(),
                                bad: loaded.quarantined,
                                total: loaded.rows.unwrap_or(0),
                                budget: budget_text(&source.budget),
                                quarantine: url,
                            }
                            .to_string(),
                        ));
                    }
                }
                manifest.inputs.push(loaded);
            }
            Err(e) => errors.push((source_kind(&e), e.to_string())),
        }
    }
    // Re-exported rows are counted here and removed by the staging models.
    for loaded in &mut manifest.inputs {
        let Some(source) = pipeline
            .sources
            .iter()
            .find(|s| s.name == loaded.name && !s.key.is_empty())
        else {
            continue;
        };
        let counted =
            crate::memory::within(guard, duplicate_key_rows(&ctx, &source.name, &source.key))
                .await
                .map_err(|rss| {
                    over(
                        &format!("counting the repeated keys of source `{}`", source.name),
                        rss,
                    )
                })?;
        match counted {
            Ok(0) => loaded.duplicate_key_rows = Some(0),
            Ok(n) => {
                warn!(source = %source.name, rows = n, key = %source.key.join(", "), "rows repeat the key of an earlier row (a re-export); the staging model keeps one");
                loaded.duplicate_key_rows = Some(n);
            }
            Err(e) => errors.push((
                engine_kind(&e),
                format!("source `{}`: counting repeated keys: {e}", source.name),
            )),
        }
    }
    if !errors.is_empty() {
        // Of several failing sources, the kind that a retry cannot fix decides.
        let kind = errors
            .iter()
            .map(|(k, _)| *k)
            .find(|k| !k.retryable())
            .unwrap_or(errors[0].0);
        return Err(Failure::new(
            kind,
            errors
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }

    if let Some(plan) = plan {
        let mut deferred = Vec::new();
        for (table, mart) in &plan.deferred {
            deferred.push(register_deferred(&ctx, &publisher.store, table, mart, params).await?);
        }
        manifest.selection = Some(plan.report(pipeline, deferred));
    }
    let steps: Vec<&Step> = pipeline
        .steps
        .iter()
        .filter(|s| plan.is_none_or(|p| p.runs(&s.name)))
        .collect();
    for (i, step) in steps.iter().enumerate() {
        progress.stage(&format!("step {}/{}: {}", i + 1, steps.len(), step.name));
        let started = Instant::now();
        let cpu_before = crate::memory::cpu_ms();
        crate::memory::reset_peak();
        let publish = plan.is_none_or(|p| p.publishes(&step.name));
        let report = crate::memory::within(
            guard,
            run_step(
                &ctx, pipeline, step, params, publisher, placement, work_dir, written, publish,
            ),
        )
        .await
        .unwrap_or_else(|rss| Err(over(&format!("step `{}`", step.name), rss)));
        let mut report = match report {
            Ok(r) => r,
            Err(failure) => return Err(with_resource_hint(failure, execution)),
        };
        report.duration_ms = started.elapsed().as_millis() as u64;
        report.peak_rss_bytes = crate::memory::peak_rss();
        report.cpu_ms = crate::memory::cpu_ms()
            .zip(cpu_before)
            .map(|(now, then)| now.saturating_sub(then));
        info!(
            step = %step.name,
            output = %report.output,
            rows = ?report.rows,
            elapsed_ms = report.duration_ms,
            "step finished"
        );
        let failed_checks: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| {
                match c.severity {
                    Severity::Warn => {
                        warn!(check = %c.check, failing_rows = c.failing_rows, "check warned")
                    }
                    Severity::Error => {
                        warn!(check = %c.check, failing_rows = c.failing_rows, "check failed")
                    }
                }
                c
            })
            .filter(|c| c.severity == Severity::Error)
            .map(|c| format!("check {} failed on {} rows", c.check, c.failing_rows))
            .collect();
        for w in &report.warnings {
            warn!(step = %step.name, "{w}");
        }
        manifest.steps.push(report);
        if !failed_checks.is_empty() {
            return Err(Failure::new(FailureKind::Check, failed_checks.join("; ")));
        }
        // Progress, and a sign of life, for whoever lists the runs.
        if let Err(e) = manifest.write(&publisher.store).await {
            warn!(error = %e, "could not record the run's progress");
        }
    }
    Ok(ctx)
}

/// Tables computed outside a run, with the scratch folder their materialized tables live
/// in, removed when this is dropped.
pub struct Computed {
    pub ctx: SessionContext,
    _scratch: crate::scratch::Scratch,
}

/// The tables `step` reads, computed now as a run of `pipeline` with `params` would
/// compute them (sources loaded from the current exports, the steps before it run), in a
/// context of this process. Nothing is published and no run is recorded: quarantined rows
/// are only counted, and an incremental source reads all its files. For `explain`, which
/// needs the records the identity step read.
pub async fn compute_inputs_of(
    pipeline: &Pipeline,
    execution: &Execution,
    stores: &Stores,
    params: Params,
    step: &str,
) -> Result<Computed, Failure> {
    let selection = crate::selection::Selection {
        select: vec![format!("+{step}")],
        exclude: Vec::new(),
        defer: false,
    };
    let mut plan = crate::selection::plan(pipeline, &selection)
        .map_err(|d| Failure::new(FailureKind::Config, d.to_string()))?;
    plan.steps.remove(step);
    plan.selected.clear();
    let run_id = new_run_id();
    let mut execution = execution.clone();
    execution.engine = crate::config::environment::Engine::Local;
    let scratch = crate::scratch::Scratch::create(&execution.spill_dir, &run_id).map_err(|e| {
        Failure::storage(format!(
            "cannot create scratch folder under {}: {e}",
            execution.spill_dir.display()
        ))
    })?;
    let work_dir = scratch.dir.join("work");
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| Failure::storage(format!("{}: {e}", work_dir.display())))?;
    let memory = crate::config::environment::StoreSpec::from_location("explain", "memory://")
        .map_err(Failure::storage)?;
    let store = crate::storage::Store::open(&memory).map_err(Failure::storage)?;
    let publisher = Publisher {
        store,
        run_id: run_id.clone(),
        keep_versions: 1,
    };
    let placement = crate::engine::Placement::local();
    let mut manifest = Manifest::new(
        &run_id,
        &pipeline.name,
        &pipeline.file.display().to_string(),
        params.clone(),
    );
    let mut written = Vec::new();
    let run = Execute {
        pipeline,
        execution: &execution,
        stores,
        params: &params,
        publisher: &publisher,
        placement: &placement,
        work_dir: &work_dir,
        plan: Some(&plan),
    };
    let ctx = execute(&run, &mut manifest, &mut written, &NoProgress).await?;
    Ok(Computed {
        ctx,
        _scratch: scratch,
    })
}

/// Registers the version of `mart` readers see now as `table`, for a run that defers.
async fn register_deferred(
    ctx: &SessionContext,
    store: &crate::storage::Store,
    table: &str,
    mart: &str,
    params: &Params,
) -> Result<crate::selection::DeferredTable, Failure> {
    let live = crate::publish::live_version(store, mart)
        .await
        .map_err(|e| Failure::new(FailureKind::Storage, e.to_string()))?;
    let Some((version, url)) = live else {
        let what = if table == mart {
            format!("`{table}`")
        } else {
            format!("`{table}` (from the mart `{mart}`)")
        };
        return Err(Failure::new(
            FailureKind::Config,
            format!(
                "--defer: {what} is outside the selection and has no published version in {} to read; run the whole pipeline once, or select it too",
                store.display_url
            ),
        ));
    };
    ctx.register_parquet(table, &url, ParquetReadOptions::default())
        .await
        .map_err(|e| Failure::engine(&e, |e| format!("--defer: reading `{mart}` at {url}: {e}")))?;
    info!(table = %table, mart = %mart, version = %version, "deferred to the published mart");
    // The published version was built with its run's parameters (another as-of date, say):
    // said, not refused, since reading last night's identity map is the point.
    let mut parameters_differ = Vec::new();
    if let Ok(path) = store.path(&format!("_runs/{version}.json")) {
        if let Ok(got) = object_store::ObjectStoreExt::get(store.object_store.as_ref(), &path).await
        {
            if let Ok(bytes) = got.bytes().await {
                let theirs: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let ours = serde_json::to_value(params).unwrap_or_default();
                if let (Some(theirs), Some(ours)) = (
                    theirs.get("parameters").and_then(|p| p.as_object()),
                    ours.as_object(),
                ) {
                    parameters_differ = ours
                        .iter()
                        .filter(|(k, v)| theirs.get(*k) != Some(*v))
                        .map(|(k, _)| k.clone())
                        .collect();
                }
            }
        }
    }
    if !parameters_differ.is_empty() {
        warn!(table = %table, mart = %mart, version = %version, parameters = %parameters_differ.join(", "), "the deferred mart was built with other parameter values than this run's");
    }
    Ok(crate::selection::DeferredTable {
        table: table.into(),
        mart: mart.into(),
        version,
        url,
        parameters_differ,
    })
}

/// Rows of `table` whose `key` an earlier row already has.
async fn duplicate_key_rows(
    ctx: &SessionContext,
    table: &str,
    key: &[String],
) -> datafusion::error::Result<u64> {
    let columns: Vec<String> = key
        .iter()
        .map(|k| format!("\"{}\"", k.replace('"', "\"\"")))
        .collect();
    let sql = format!(
        "SELECT CAST(coalesce(sum(copies - 1), 0) AS BIGINT) FROM (SELECT count(*) AS copies FROM \"{table}\" GROUP BY {}) WHERE copies > 1",
        columns.join(", ")
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    use datafusion::arrow::array::AsArray;
    let n = batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0)
        })
        .unwrap_or(0);
    Ok(n.max(0) as u64)
}

fn budget_text(b: &crate::config::pipeline::ErrorBudget) -> String {
    let mut parts = Vec::new();
    if let Some(r) = b.max_rows {
        parts.push(format!("max_rows {r}"));
    }
    if let Some(f) = b.max_fraction {
        parts.push(format!("max_fraction {f}"));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// The step's frame. A SQL model's `AS MATERIALIZED` CTEs are computed first, each once,
/// into a table of the step (`<step>__<cte>`, named in `ctes` with its rows), so the
/// model's query reads them instead of recomputing them at every reference.
async fn step_frame(
    ctx: &SessionContext,
    step: &Step,
    params: &Params,
    placement: &crate::engine::Placement,
    work_dir: &std::path::Path,
    ctes: &mut Vec<(String, u64)>,
) -> Result<BuiltinOutput, Failure> {
    match &step.kind {
        StepKind::Sql(model) => {
            let bound = model
                .bind(params)
                .map_err(|d| Failure::new(FailureKind::Config, d.to_string()))?;
            let located = |e: DataFusionError| {
                Failure::new(
                    engine_kind(&e),
                    error_diagnostic(&model.file, &e).to_string(),
                )
            };
            let (parts, main) = model.split_materialized(bound, &step.name);
            for (table, statement) in parts {
                let state = ctx.state();
                let plan = state
                    .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                        statement,
                    )))
                    .await
                    .map_err(located)?;
                let (store, path, url) =
                    placement.table_target(work_dir, &table).map_err(located)?;
                let props = crate::publish::scratch_props();
                let rows =
                    crate::publish::write_stream(store, path, DataFrame::new(state, plan), props)
                        .await
                        .map_err(located)?;
                ctx.register_parquet(table.as_str(), &url, ParquetReadOptions::default())
                    .await
                    .map_err(located)?;
                tracing::debug!(step = %step.name, table = %table, rows, "materialized a CTE");
                ctes.push((table, rows));
            }
            let state = ctx.state();
            let plan = state
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                    main,
                )))
                .await
                .map_err(located)?;
            Ok(DataFrame::new(state, plan).into())
        }
        StepKind::Builtin {
            kind,
            step: builtin,
        } => {
            let env = crate::steps::StepEnv {
                name: &step.name,
                placement,
                work_dir,
            };
            builtin
                .run(ctx, params, &env)
                .await
                .map_err(|e| Failure::engine(&e, |e| format!("step `{}` ({kind}): {e}", step.name)))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    ctx: &SessionContext,
    pipeline: &Pipeline,
    step: &Step,
    params: &Params,
    publisher: &Publisher,
    placement: &crate::engine::Placement,
    work_dir: &std::path::Path,
    written: &mut Vec<WrittenMart>,
    publish: bool,
) -> Result<StepReport, Failure> {
    let mut ctes = Vec::new();
    let report = step_tables(
        ctx, pipeline, step, params, publisher, placement, work_dir, written, publish, &mut ctes,
    )
    .await;
    // A materialized CTE lives as long as its step.
    for (table, _) in &ctes {
        let _ = ctx.deregister_table(table.as_str());
    }
    let mut report = report?;
    if !ctes.is_empty() && report.details.is_none() {
        let rows: serde_json::Map<String, serde_json::Value> = ctes
            .iter()
            .map(|(table, rows)| {
                (
                    table
                        .trim_start_matches(&format!("{}__", step.name))
                        .to_string(),
                    (*rows).into(),
                )
            })
            .collect();
        report.details = Some(serde_json::json!({ "materialized_ctes": rows }));
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn step_tables(
    ctx: &SessionContext,
    pipeline: &Pipeline,
    step: &Step,
    params: &Params,
    publisher: &Publisher,
    placement: &crate::engine::Placement,
    work_dir: &std::path::Path,
    written: &mut Vec<WrittenMart>,
    publish: bool,
    ctes: &mut Vec<(String, u64)>,
) -> Result<StepReport, Failure> {
    let BuiltinOutput {
        frame: df,
        details,
        tables,
        engine_tables,
    } = step_frame(ctx, step, params, placement, work_dir, ctes).await?;
    let place = |e: &dyn std::fmt::Display| match step.file() {
        Some(f) => format!("{}: {e}", f.display()),
        None => format!("step `{}`: {e}", step.name),
    };
    let located = |e: &DataFusionError| Failure::engine(e, place);
    let builtin = matches!(step.kind, StepKind::Builtin { .. });
    // A built-in step's tables are computed here, in memory; a cluster reads them from
    // shared storage. Its main table is then materialised like any table.
    let env = crate::steps::StepEnv {
        name: &step.name,
        placement,
        work_dir,
    };
    for (suffix, frame) in tables {
        let name = format!("{}_{suffix}", step.name);
        if builtin && placement.is_shared() && !engine_tables.contains(&suffix) {
            use crate::identity::engine::Materialize;
            env.table(ctx, &name, frame, true)
                .await
                .map_err(|e| located(&e))?;
        } else {
            ctx.register_table(name.as_str(), frame.into_view())
                .map_err(|e| located(&e))?;
        }
    }
    // A mart outside the selection that a selected step reads is kept as a table, not
    // published.
    let sink = step.publish.as_ref().filter(|_| publish);
    let materialize = step.materialize
        || (builtin && placement.is_shared())
        || (step.publish.is_some() && !publish);
    let df = if builtin && placement.is_shared() {
        placement.client_frame(df)
    } else {
        df
    };
    if tracing::enabled!(target: "crm_marts::plan", tracing::Level::DEBUG)
        && (sink.is_some() || materialize)
    {
        // The physical plan as it will run (`CRM_MARTS_LOG=crm_marts::plan=debug`), to see
        // which side of each join is built in memory and which operators may spill.
        let plan = df
            .clone()
            .create_physical_plan()
            .await
            .map_err(|e| located(&e))?;
        let text = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        tracing::debug!(target: "crm_marts::plan", step = %step.name, "physical plan:\n{text}");
    }
    // A table that breaks its contract is never written, so never published: the readers'
    // live mart stays as it is.
    if let Some(spec) = &step.spec {
        let broken = crate::contract::violations(&step.name, spec, df.schema().as_arrow());
        if !broken.is_empty() {
            let lines: Vec<String> = broken
                .iter()
                .map(|v| match v.at {
                    Some((line, column)) => {
                        format!("{}:{line}:{column}: {}", spec.file.display(), v.message)
                    }
                    None => format!("{}: {}", spec.file.display(), v.message),
                })
                .collect();
            return Err(Failure::new(FailureKind::Config, lines.join("; ")));
        }
    }
    let (output, rows) = if let Some(sink) = sink {
        let schema = df.schema().as_arrow().clone();
        let w = publisher
            .write_version(&pipeline.name, &step.name, df, &sink.partition_by)
            .await
            .map_err(|e| Failure::new(publish_kind(&e), place(&e)))?;
        let rows = w.rows;
        let mut options = ParquetReadOptions::default();
        let partition_cols: Vec<(String, datafusion::arrow::datatypes::DataType)> = sink
            .partition_by
            .iter()
            .filter_map(|c| {
                schema
                    .field_with_name(c)
                    .ok()
                    .map(|f| (c.clone(), f.data_type().clone()))
            })
            .collect();
        if !partition_cols.is_empty() {
            options = options.table_partition_cols(partition_cols);
        }
        let url = w.version_url.clone();
        written.push(w);
        ctx.register_parquet(step.name.as_str(), &url, options)
            .await
            .map_err(|e| located(&e))?;
        ("mart", Some(rows))
    } else if materialize {
        let (store, path, url) = placement
            .table_target(work_dir, &step.name)
            .map_err(|e| located(&e))?;
        let props = crate::publish::scratch_props();
        let rows = crate::publish::write_stream(store, path, df, props)
            .await
            .map_err(|e| located(&e))?;
        ctx.register_parquet(step.name.as_str(), &url, ParquetReadOptions::default())
            .await
            .map_err(|e| located(&e))?;
        ("table", Some(rows))
    } else {
        ctx.register_table(step.name.as_str(), df.into_view())
            .map_err(|e| located(&e))?;
        ("view", None)
    };
    let (checks, warnings) = match &step.spec {
        Some(spec) => checks::run(ctx, &step.name, spec)
            .await
            .map_err(|e| located(&e))?,
        None if step.publish.is_some() => (
            Vec::new(),
            vec![format!(
                "mart `{}` has no sibling .yml documenting its columns",
                step.name
            )],
        ),
        None => (Vec::new(), Vec::new()),
    };
    Ok(StepReport {
        name: step.name.clone(),
        kind: match &step.kind {
            StepKind::Sql(_) => "sql".into(),
            StepKind::Builtin { kind, .. } => (*kind).into(),
        },
        file: step.file().map(|f| f.display().to_string()),
        output: output.into(),
        rows,
        duration_ms: 0,
        peak_rss_bytes: None,
        cpu_ms: None,
        checks,
        warnings,
        details,
    })
}

async fn commit_source_states(
    pipeline: &Pipeline,
    execution: &Execution,
    publisher: &Publisher,
    manifest: &mut Manifest,
) -> Result<(), String> {
    let inc = sources::IncrementalContext {
        store: &publisher.store,
        pipeline: &pipeline.name,
        full_refresh: execution.full_refresh,
    };
    for loaded in &mut manifest.inputs {
        if let Some(mut state) = loaded.next_state.take() {
            state.run_id = manifest.run_id.clone();
            state.run_started_at = manifest.started_at;
            sources::commit_state(&inc, &loaded.name, &state)
                .await
                .map_err(|e| {
                    format!(
                        "source `{}`: recording the incremental state: {e}",
                        loaded.name
                    )
                })?;
        }
    }
    Ok(())
}

async fn publish_all(
    publisher: &Publisher,
    written: &[WrittenMart],
    manifest: &mut Manifest,
    progress: &dyn Progress,
) -> Result<(), Failure> {
    progress.stage(&format!("publishing {} marts", written.len()));
    for w in written {
        publisher
            .publish(w)
            .await
            .map_err(|e| Failure::new(publish_kind(&e), e.to_string()))?;
        info!(mart = %w.mart, rows = w.rows, url = %w.published_url, "mart published");
        manifest.outputs.push(w.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_are_classified_by_their_root_cause() {
        let wrapped = |e: DataFusionError| DataFusionError::Context("step".into(), Box::new(e));
        assert_eq!(
            engine_kind(&wrapped(DataFusionError::ResourcesExhausted("pool".into()))),
            FailureKind::Resource
        );
        assert_eq!(
            engine_kind(&wrapped(DataFusionError::Plan("no column".into()))),
            FailureKind::Config
        );
        let io = std::io::Error::other("connection reset");
        assert_eq!(
            engine_kind(&DataFusionError::IoError(io)),
            FailureKind::Storage
        );
        let store = object_store::Error::Generic {
            store: "S3",
            source: "timeout".into(),
        };
        assert_eq!(
            engine_kind(&wrapped(DataFusionError::ObjectStore(Box::new(store)))),
            FailureKind::Storage
        );
        assert_eq!(
            engine_kind(&DataFusionError::Internal("bug".into())),
            FailureKind::Internal
        );
        // Causes deep in the chain count: a full disk under a Parquet writer's error is a
        // resource, an object store error under an Arrow error is the storage's.
        let full = std::io::Error::from_raw_os_error(28);
        let parquet = datafusion::parquet::errors::ParquetError::External(Box::new(full));
        assert_eq!(
            engine_kind(&wrapped(DataFusionError::ParquetError(Box::new(parquet)))),
            FailureKind::Resource
        );
        let store = object_store::Error::Generic {
            store: "S3",
            source: "timeout".into(),
        };
        let arrow = datafusion::arrow::error::ArrowError::ExternalError(Box::new(store));
        assert_eq!(
            engine_kind(&DataFusionError::ArrowError(Box::new(arrow), None)),
            FailureKind::Storage
        );
        let quota = std::io::Error::new(std::io::ErrorKind::QuotaExceeded, "quota");
        let store = object_store::Error::Generic {
            store: "local",
            source: Box::new(quota),
        };
        assert_eq!(
            engine_kind(&DataFusionError::External(Box::new(store))),
            FailureKind::Resource
        );
        assert_eq!(
            engine_kind(&DataFusionError::External("a panic".into())),
            FailureKind::Internal
        );
        assert!(FailureKind::Storage.retryable() && FailureKind::Resource.retryable());
        assert!(
            !FailureKind::Config.retryable()
                && !FailureKind::Input.retryable()
                && !FailureKind::Check.retryable()
        );
    }

    #[test]
    fn a_full_disk_or_memory_pool_is_a_resource_failure_however_it_was_wrapped() {
        let execution = Execution::default();
        let f = with_resource_hint(
            Failure::new(
                FailureKind::Storage,
                "writing spill: No space left on device (os error 28)",
            ),
            &execution,
        );
        assert_eq!(f.kind, FailureKind::Resource);
        let f = with_resource_hint(
            Failure::new(
                FailureKind::Internal,
                "External error: Resources exhausted: Failed to allocate",
            ),
            &execution,
        );
        assert_eq!(f.kind, FailureKind::Resource);
    }
}
