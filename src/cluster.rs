//! The processes of a Ballista cluster, from the one `crm-marts` binary: `crm-marts
//! scheduler` and `crm-marts executor`. Both carry crm-marts' SQL functions (the
//! scheduler plans with them, executors run them) and the object stores of the
//! environment file they are given, so that they read the exports, the staged sources and
//! the marts where the client put them. The keyed-hash key comes from each executor's own
//! environment file: it is never part of a query plan or of the session settings that
//! travel with a query.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::prelude::SessionConfig;

use crate::config::environment::Environment;
use crate::functions::FunctionSettings;
use crate::storage::Stores;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("opening the stores of the environment file: {0}")]
    Stores(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Ballista(#[from] ballista_core::error::BallistaError),
    #[error("{0}")]
    Usage(String),
}

/// `crm-marts scheduler`.
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    /// The host name executors and clients reach the scheduler by.
    pub external_host: Option<String>,
    pub env: Environment,
}

/// `crm-marts executor`.
pub struct ExecutorOptions {
    /// The scheduler's `host:port`.
    pub scheduler: String,
    /// Where the executor serves its results and shuffle files (Arrow Flight).
    pub bind: SocketAddr,
    /// Its gRPC port for the scheduler (default: the Flight port + 1).
    pub grpc_port: Option<u16>,
    /// The host name the scheduler, other executors and clients reach it by.
    pub external_host: Option<String>,
    /// Shuffle files and spills.
    pub work_dir: PathBuf,
    /// Memory for the executor's query operators (their pool is the engine's share of
    /// it, as for a local run); past it they spill.
    pub memory_limit: Option<usize>,
    /// Tasks run at once (default: the number of cores).
    pub vcores: Option<usize>,
    pub env: Environment,
}

/// Every function a query of crm-marts may call: DataFusion's and Ballista's, then
/// crm-marts' own, whose exact `sum` and `avg` take the built-ins' place.
pub fn function_registry(settings: &FunctionSettings) -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    // Ballista's default list lacks DataFusion's list functions (`generate_series`, ...).
    for f in datafusion::functions_nested::all_default_nested_functions() {
        for name in std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()) {
            registry
                .scalar_functions
                .entry(name)
                .or_insert_with(|| f.clone());
        }
    }
    for f in crate::functions::functions(settings) {
        for name in std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()) {
            registry.scalar_functions.insert(name, f.clone());
        }
    }
    for f in crate::functions::exact_sum::functions() {
        let f = Arc::new(f);
        for name in std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()) {
            registry.aggregate_functions.insert(name, f.clone());
        }
    }
    for f in crate::functions::ignore_nulls::functions()
        .into_iter()
        .chain(crate::functions::running_value::functions())
    {
        registry.window_functions.insert(f.name().to_string(), f);
    }
    registry
}

/// A runtime whose object store registry knows `stores`.
fn runtime(
    stores: &Stores,
    builder: RuntimeEnvBuilder,
) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let runtime = builder.build_arc()?;
    for store in stores.iter() {
        runtime.register_object_store(&store.base_url, store.object_store.clone());
    }
    Ok(runtime)
}

/// Runs a scheduler until the process is stopped.
pub async fn scheduler(options: SchedulerOptions) -> Result<(), ClusterError> {
    if options.env.execution.functions.hash_key.is_some() {
        tracing::warn!("the scheduler never hashes: leave privacy.hash_key out of its environment file, so the key is on the executors only");
    }
    let stores = Stores::open(&options.env.stores)?;
    let registry = Arc::new(function_registry(&FunctionSettings::default()));
    // The scheduler turns each client's logical plan into stages: it lists the files of
    // every table (so it needs the stores) and plans crm-marts' functions by name (it never
    // runs `keyed_hash`, so it holds no key).
    let session_builder = Arc::new(move |config: SessionConfig| {
        let state = ballista_core::utils::default_session_builder(config)?;
        let mut state = SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime(&stores, RuntimeEnvBuilder::new())?)
            .build();
        for f in registry.scalar_functions.values() {
            state.register_udf(f.clone())?;
        }
        for f in registry.aggregate_functions.values() {
            state.register_udaf(f.clone())?;
        }
        for f in registry.window_functions.values() {
            state.register_udwf(f.clone())?;
        }
        Ok(state)
    });
    let config = SchedulerConfig {
        bind_host: options.bind.ip().to_string(),
        bind_port: options.bind.port(),
        external_host: options
            .external_host
            .unwrap_or_else(|| advertised(&options.bind)),
        override_session_builder: Some(session_builder),
        // Executors report every 5 s; one silent for 30 s is gone and its tasks run again
        // elsewhere (Ballista's default waits 180 s).
        executor_timeout_seconds: 30,
        expire_dead_executor_interval_seconds: 5,
        no_executors_grace_period_seconds: 30,
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await?;
    tracing::info!(bind = %options.bind, "scheduler listening");
    start_server(cluster, options.bind, Arc::new(config)).await?;
    Ok(())
}

/// Runs an executor until the process is stopped.
pub async fn executor(options: ExecutorOptions) -> Result<(), ClusterError> {
    let (scheduler_host, scheduler_port) =
        split_host_port(&options.scheduler).ok_or_else(|| {
            ClusterError::Usage(format!(
                "--scheduler {:?}: expected HOST:PORT",
                options.scheduler
            ))
        })?;
    std::fs::create_dir_all(&options.work_dir).map_err(|e| {
        ClusterError::Usage(format!("--work-dir {}: {e}", options.work_dir.display()))
    })?;
    let stores = Stores::open(&options.env.stores)?;
    let work_dir = options.work_dir.clone();
    let runtime_producer = Arc::new(move |_: &SessionConfig| {
        runtime(
            &stores,
            RuntimeEnvBuilder::new().with_temp_file_path(work_dir.clone()),
        )
    });
    let flight_port = options.bind.port();
    let grpc_port = match options.grpc_port {
        Some(p) => p,
        None => flight_port.checked_add(1).ok_or_else(|| {
            ClusterError::Usage(format!(
                "--bind port {flight_port}: no port after it for gRPC; give --grpc-port"
            ))
        })?,
    };
    let config = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        external_host: Some(
            options
                .external_host
                .unwrap_or_else(|| advertised(&options.bind)),
        ),
        port: flight_port,
        grpc_port,
        scheduler_host,
        scheduler_port,
        // Wait for a scheduler that starts at the same time (compose, systemd).
        scheduler_connect_timeout_seconds: 30,
        vcores: options.vcores.unwrap_or(0),
        work_dir: Some(options.work_dir.to_string_lossy().into_owned()),
        memory_pool_size: options
            .memory_limit
            .map(|limit| (limit as f64 * crate::memory::ENGINE_SHARE) as u64),
        override_function_registry: Some(Arc::new(function_registry(
            &options.env.execution.functions,
        ))),
        override_runtime_producer: Some(runtime_producer),
        // Executors report to the scheduler every few seconds, so one that is killed is
        // noticed within a run rather than a minute later.
        executor_heartbeat_interval_seconds: 5,
        ..Default::default()
    };
    tracing::info!(bind = %options.bind, grpc_port, scheduler = %options.scheduler, "executor starting");
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

/// The host others reach a process bound to `bind` by: its address, or `localhost` for
/// a wildcard address (give `--external-host` on a real network).
fn advertised(bind: &SocketAddr) -> String {
    if bind.ip().is_unspecified() {
        "localhost".into()
    } else {
        bind.ip().to_string()
    }
}

fn split_host_port(text: &str) -> Option<(String, u16)> {
    let text = text.trim_start_matches("df://").trim_end_matches('/');
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| {
        (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_carries_crm_marts_functions_and_the_exact_sum() {
        let registry = function_registry(&FunctionSettings::default());
        for name in [
            "keyed_hash",
            "normalize_email",
            "jaro_winkler",
            "upper",
            "row_number",
            "generate_series",
            "make_array",
            "last_value_ignore_nulls",
            "first_value_ignore_nulls",
        ] {
            assert!(
                registry.scalar_functions.contains_key(name)
                    || registry.window_functions.contains_key(name),
                "{name}"
            );
        }
        let exact = crate::functions::exact_sum::functions();
        assert!(*registry.aggregate_functions["sum"] == exact[0]);
        assert!(*registry.aggregate_functions["avg"] == exact[1]);
    }

    #[test]
    fn scheduler_addresses() {
        assert_eq!(
            split_host_port("df://sched:50050"),
            Some(("sched".into(), 50050))
        );
        assert_eq!(
            split_host_port("127.0.0.1:7"),
            Some(("127.0.0.1".into(), 7))
        );
        assert_eq!(split_host_port("sched"), None);
    }
}
