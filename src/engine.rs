//! The engine a run's queries execute on, and where the tables it computes between steps
//! are kept so that the engine can read them.
//!
//! On one machine (`engine: local`) DataFusion runs in this process and those tables are
//! Parquet files in the run's work folder. On an Apache DataFusion Ballista cluster
//! (`engine: ballista`) the same logical plans go to the scheduler and run on the
//! executors, which cannot read this process's folders nor its in-memory tables: what the
//! client computes itself (staged sources, built-in steps' results) and what it
//! materialises is written as Parquet under `_scratch/<run_id>/` of the publish store,
//! which every executor reads, and registered as listing tables from there.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::config::environment::{Engine, Execution};
use crate::manifest::FailureKind;
use crate::storage::Store;

/// How long the client waits for the scheduler to accept a connection.
const SCHEDULER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The scheduler does not accept connections.
    #[error("the Ballista scheduler at {url} does not answer: {message} (`execution.scheduler`, or `--scheduler`)")]
    Unreachable { url: String, message: String },
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

/// A session on the run's engine. For a cluster, the scheduler must accept a connection
/// first: Ballista's client would only find out at the first query.
pub async fn context(
    execution: &Execution,
    spill_dir: std::path::PathBuf,
) -> Result<SessionContext, EngineError> {
    match &execution.engine {
        Engine::Local => Ok(crate::run::session(execution, spill_dir)?),
        Engine::Ballista { scheduler } => {
            probe(scheduler).await?;
            // The static distributed planner: Ballista 55's adaptive planner turned one of the
            // pipeline's queries into tens of thousands of stages and never finished it.
            let base = SessionConfig::new_with_ballista()
                .set_bool("ballista.planner.adaptive.enabled", false);
            let config = crate::run::session_config(execution, base)?;
            let state = SessionStateBuilder::new()
                .with_default_features()
                .with_config(config)
                .with_runtime_env(crate::run::runtime_env(execution, spill_dir)?)
                .build();
            let ctx = SessionContext::remote_with_state(scheduler, state).await?;
            // Ballista's client replaces the state's functions with its own list.
            crate::functions::register_all(&ctx, &execution.functions);
            for f in crate::functions::ignore_nulls::functions() {
                ctx.register_udwf(f.as_ref().clone());
            }
            ctx.add_analyzer_rule(Arc::new(
                crate::functions::ignore_nulls::IgnoreNullsOnCluster,
            ));
            // Executors hash with their own key: each call carries this client's key
            // fingerprint, so that an executor with another key fails instead.
            if let Some(key) = &execution.functions.hash_key {
                ctx.add_analyzer_rule(Arc::new(crate::functions::KeyCheckOnCluster::new(key)));
            }
            Ok(ctx)
        }
    }
}

/// The kind of a failure a Ballista cluster reported, from its message; `None` for a
/// message that is not Ballista's.
///
/// Ballista hands every remote failure to the client as one execution error, "Job … failed:
/// …", with the executor's error in Rust's debug notation inside it. Read back, a memory
/// pool that ran out is a resource failure, a plan or configuration error (a function an
/// executor lacks, a hash key that is missing or differs) a configuration failure, an
/// object store or I/O error a storage failure, and an Arrow or Parquet or execution error
/// of the data an input failure, as on one machine. Anything else (an executor lost, a
/// fetch of shuffle data that failed, a gRPC error, a job the scheduler gave up on) is the
/// cluster's, which a later run may not meet.
pub fn cluster_failure_kind(message: &str) -> Option<FailureKind> {
    let ballista = [
        "Job ",
        "Fail to execute query due to",
        "GrpcConnectionError",
        "GrpcError",
        "GrpcActionError",
        "TonicError",
        "FetchFailed",
    ]
    .iter()
    .any(|p| message.starts_with(p));
    if !ballista || (message.starts_with("Job ") && !message.contains(" failed")) {
        return None;
    }
    let has = |needles: &[&str]| needles.iter().any(|n| message.contains(n));
    Some(
        if has(&[
            "FetchFailed",
            "FetchPartitionError",
            "GrpcConnectionError",
            "GrpcError",
            "TonicError",
            "Task cancelled",
            "TaskKilled",
            "executor lost",
            "Executor lost",
            "ExecutorLost",
        ]) {
            FailureKind::Cluster
        } else if has(&["ResourcesExhausted", "Resources exhausted"]) {
            FailureKind::Resource
        } else if has(&[
            "Configuration(",
            "Plan(",
            "SchemaError(",
            "NotImplemented(",
            "SQL(",
            "Invalid or Unsupported Configuration",
            "Error during planning",
        ]) {
            FailureKind::Config
        } else if has(&["ObjectStore(", "IoError(", "IO error"]) {
            FailureKind::Storage
        } else if has(&["ArrowError(", "ParquetError(", "Execution("]) {
            FailureKind::Input
        } else {
            FailureKind::Cluster
        },
    )
}

/// Connects to `df://host:port` and hangs up.
async fn probe(url: &str) -> Result<(), EngineError> {
    let address = url
        .trim_start_matches("df://")
        .trim_end_matches('/')
        .to_string();
    let unreachable = |message: String| EngineError::Unreachable {
        url: url.to_string(),
        message,
    };
    match tokio::time::timeout(
        SCHEDULER_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(&address),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no connection within {} s",
            SCHEDULER_CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Whether every executor can read `publish`, where a cluster run keeps its tables: not a
/// `memory://` store, which lives in this process; a `file://` folder only when every host
/// mounts it at the same path, which this process cannot see, so it warns.
pub fn check_shared(publish: &Store) -> Result<(), String> {
    match publish.base_url.scheme() {
        "memory" => Err(format!(
            "the publish store `{}` is memory://, which the executors of a cluster cannot read: on `engine: ballista`, publish to S3, GCS, Azure or a folder every host mounts",
            publish.name
        )),
        "file" => {
            tracing::warn!(store = %publish.name, url = %publish.base_url, "on a cluster the publish store must be a folder every executor host mounts at the same path");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Where the tables a run computes between steps are kept.
pub struct Placement {
    /// Every executor's view of the run's tables: the publish store and `_scratch/<run_id>`.
    shared: Option<(Store, String)>,
    /// A session in this process for frames only the client can execute (built-in steps'
    /// in-memory results) on their way to shared storage.
    client: Option<SessionContext>,
}

impl Placement {
    /// Tables stay in the work folder of this machine.
    pub fn local() -> Self {
        Self {
            shared: None,
            client: None,
        }
    }

    /// The placement for `execution`'s engine: on a cluster, in the publish store.
    pub fn for_run(
        execution: &Execution,
        publish: &Store,
        run_id: &str,
        spill_dir: std::path::PathBuf,
    ) -> datafusion::error::Result<Self> {
        match execution.engine {
            Engine::Local => Ok(Self::local()),
            Engine::Ballista { .. } => Ok(Self {
                shared: Some((publish.clone(), format!("_scratch/{run_id}"))),
                client: Some(crate::run::session(execution, spill_dir)?),
            }),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Registers `local`, a Parquet file or a folder of them written by this process, as
    /// table `name`. On a cluster the files are copied to shared storage first.
    pub async fn register_local(
        &self,
        ctx: &SessionContext,
        name: &str,
        local: &Path,
    ) -> datafusion::error::Result<String> {
        let location = match &self.shared {
            None if local.is_dir() => format!("{}/", local.display()),
            None => local.display().to_string(),
            Some((store, scratch)) => {
                let external =
                    |e: crate::storage::StorageError| DataFusionError::External(Box::new(e));
                if local.is_dir() {
                    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(local)?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
                        .collect();
                    files.sort();
                    for file in &files {
                        let file_name = file
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let dest = store
                            .path(&format!("{scratch}/sources/{name}/{file_name}"))
                            .map_err(external)?;
                        crate::publish::upload_file(store, file, &dest)
                            .await
                            .map_err(external)?;
                    }
                    format!(
                        "{}/",
                        store.url(
                            &store
                                .path(&format!("{scratch}/sources/{name}"))
                                .map_err(external)?
                        )
                    )
                } else {
                    let dest = store
                        .path(&format!("{scratch}/sources/{name}.parquet"))
                        .map_err(external)?;
                    crate::publish::upload_file(store, local, &dest)
                        .await
                        .map_err(external)?;
                    store.url(&dest)
                }
            }
        };
        ctx.register_parquet(name, location.as_str(), ParquetReadOptions::default())
            .await?;
        Ok(location)
    }

    /// Where a table the engine computes is written: a store, a path in it, and its URL.
    pub fn table_target(
        &self,
        work_dir: &Path,
        name: &str,
    ) -> datafusion::error::Result<(Arc<dyn ObjectStore>, ObjectPath, String)> {
        match &self.shared {
            None => {
                let file = format!("{name}.table.parquet");
                let local = object_store::local::LocalFileSystem::new_with_prefix(work_dir)?;
                Ok((
                    Arc::new(local),
                    ObjectPath::from(file.as_str()),
                    work_dir.join(&file).to_string_lossy().into_owned(),
                ))
            }
            Some((store, scratch)) => {
                let path = store
                    .path(&format!("{scratch}/tables/{name}.parquet"))
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let url = store.url(&path);
                Ok((store.object_store.clone(), path, url))
            }
        }
    }

    /// `frame` as the engine can run it: a frame over tables held in this process (a
    /// built-in step's result) is executed here, not sent to a cluster.
    pub fn client_frame(&self, frame: DataFrame) -> DataFrame {
        match &self.client {
            None => frame,
            Some(client) => {
                let (_, plan) = frame.into_parts();
                DataFrame::new(client.state(), plan)
            }
        }
    }

    /// Deletes what the run placed in shared storage.
    pub async fn remove(&self) {
        if let Some((store, scratch)) = &self.shared {
            remove_scratch(store, scratch).await;
        }
    }
}

/// Deletes the objects under `scratch` of `store` (a run's `_scratch/<run_id>`), warning
/// when some remain.
pub async fn remove_scratch(store: &Store, scratch: &str) {
    let Ok(prefix) = store.path(scratch) else {
        return;
    };
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let listed: Result<Vec<_>, _> = store.object_store.list(Some(&prefix)).try_collect().await;
    let failure = match listed {
        Err(e) => Some(e),
        Ok(objects) => {
            let mut failure = None;
            for meta in objects {
                if let Err(e) = store.object_store.delete(&meta.location).await {
                    failure = Some(e);
                }
            }
            failure
        }
    };
    if let Some(e) = failure {
        tracing::warn!(error = %e, scratch = %store.url(&prefix), "could not remove a run's shared scratch files");
    } else if store.base_url.scheme() == "file" {
        // A folder store keeps the emptied folders.
        let _ = std::fs::remove_dir_all(format!("/{prefix}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages as Ballista 55 composes them (`distributed_query.rs`, the scheduler's
    /// `execution_graph.rs` and `FailedTask::from` in `ballista-core`).
    #[test]
    fn cluster_failures_are_classified_by_their_cause() {
        let job =
            |inner: &str| format!("Job aBcD failed: Job failed due to stage 3 failed: {inner}\n");
        let task = |error: &str| {
            job(&format!("Task 0 in Stage 3 failed 4 times, fail the stage, most recent failure reason: \"{error}\""))
        };
        let cases = [
            (job("Task failed due to runtime execution error: DataFusionError(ResourcesExhausted(\"Failed to allocate additional 1.0 MB for SortExec\"))"), FailureKind::Resource),
            (job("Task failed due to runtime execution error: DataFusionError(Configuration(\"keyed_hash: no key configured\"))"), FailureKind::Config),
            (job("Task failed due to runtime execution error: DataFusionError(Plan(\"There is no UDF named \\\"foo\\\" in the registry\"))"), FailureKind::Config),
            (task("Task failed due to IO error: IoError(Os { code: 5, kind: Uncategorized })"), FailureKind::Storage),
            (job("Task failed due to runtime execution error: DataFusionError(ObjectStore(Generic { store: \"S3\" }))"), FailureKind::Storage),
            (job("Task failed due to runtime execution error: DataFusionError(ArrowError(CastError(\"Cannot cast string 'x' to value of Int64 type\"), None))"), FailureKind::Input),
            (job("Executor lost: executor e1 was removed"), FailureKind::Cluster),
            ("GrpcConnectionError(\"Error connecting to Ballista scheduler or executor at http://127.0.0.1:50061\")".to_string(), FailureKind::Cluster),
            (job("Task 2 in Stage 1 failed: FetchPartitionError { executor_id: \"e2\" }"), FailureKind::Cluster),
            (job("something new"), FailureKind::Cluster),
        ];
        for (message, kind) in cases {
            assert_eq!(cluster_failure_kind(&message), Some(kind), "{message}");
        }
        assert_eq!(cluster_failure_kind("Join key types differ"), None);
        assert_eq!(cluster_failure_kind("Job title column is empty"), None);
        // The run's classification goes through the engine error.
        assert_eq!(
            crate::run::engine_kind(&DataFusionError::Execution(job("Executor lost"))),
            FailureKind::Cluster
        );
        assert_eq!(
            crate::run::engine_kind(&DataFusionError::Execution("cast failed".into())),
            FailureKind::Input
        );
    }
}
