//! The run manifest: what one run read, did and wrote, as JSON next to the marts
//! (`_runs/<run_id>.json`). It is written when the run starts (status `running`) and
//! again when it ends, so a killed run is visible as one that never finished.

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;

use crate::checks::CheckResult;
use crate::config::params::Params;
use crate::publish::WrittenMart;
use crate::sources::LoadedSource;
use crate::storage::{StorageError, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Its process is gone without finishing (set by a later run, see [`crate::liveness`]).
    Abandoned,
}

/// What kind of failure ended a run, which says whether running it again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// The pipeline, its SQL or the environment is wrong.
    Config,
    /// The exports are wrong: missing, unreadable, past their error budget.
    Input,
    /// Object storage or the local disk failed (after the store's own retries).
    Storage,
    /// A data check of a mart failed.
    Check,
    /// Memory or disk ran out.
    Resource,
    /// A fault in crm-marts or its engine.
    Internal,
    /// The query cluster did not answer or lost the run's work.
    Cluster,
}

impl FailureKind {
    /// Storage outages and exhausted resources can pass; the rest fails the same way again.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Storage | Self::Resource | Self::Cluster)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Input => "input",
            Self::Storage => "storage",
            Self::Check => "check",
            Self::Resource => "resource",
            Self::Internal => "internal",
            Self::Cluster => "cluster",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    /// `sql` or the built-in kind.
    pub kind: String,
    pub file: Option<String>,
    /// `view`, `table` or `mart`.
    pub output: String,
    /// Rows built; unknown for views, which are computed where they are read.
    pub rows: Option<u64>,
    pub duration_ms: u64,
    /// Peak resident memory of the process during the step (Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// CPU time the process used during the step, all threads (Linux): over
    /// `duration_ms`, how many cores the step kept busy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    pub checks: Vec<CheckResult>,
    pub warnings: Vec<String>,
    /// What a built-in step reports about itself (e.g. a model fit's convergence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuarantineReport {
    pub source: String,
    pub rows: u64,
    pub file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub run_id: String,
    pub pipeline: String,
    pub pipeline_file: String,
    pub status: RunStatus,
    /// The process running the run, to tell a live run from an abandoned one.
    pub owner: crate::liveness::Owner,
    pub started_at: DateTime<Utc>,
    /// When the run last wrote this manifest.
    pub last_seen_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub parameters: Params,
    /// Where the queries ran: `local`, or `ballista df://host:port`.
    pub engine: String,
    pub inputs: Vec<LoadedSource>,
    /// Peak resident memory of the process while the sources loaded (Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources_peak_rss_bytes: Option<u64>,
    /// Wall-clock time of loading every source (they load concurrently).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources_duration_ms: Option<u64>,
    /// CPU time the process used loading the sources, all threads (Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources_cpu_ms: Option<u64>,
    pub steps: Vec<StepReport>,
    pub outputs: Vec<WrittenMart>,
    pub quarantine: Vec<QuarantineReport>,
    pub quarantined_rows: u64,
    pub failing_check_rows: u64,
    pub errors: Vec<String>,
    /// Kind of the failure of a failed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<FailureKind>,
    /// Runs of this store found abandoned (process gone) when this run started, and
    /// marked so in their manifests.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub marked_abandoned: Vec<String>,
    /// Set when only part of the pipeline ran (`run --select/--exclude/--defer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::selection::SelectionReport>,
}

impl Manifest {
    /// Highest peak resident memory of any phase of the run, when measured.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.steps
            .iter()
            .filter_map(|s| s.peak_rss_bytes)
            .chain(self.sources_peak_rss_bytes)
            .max()
    }

    pub fn new(run_id: &str, pipeline: &str, pipeline_file: &str, parameters: Params) -> Self {
        Self {
            run_id: run_id.into(),
            pipeline: pipeline.into(),
            pipeline_file: pipeline_file.into(),
            status: RunStatus::Running,
            owner: crate::liveness::Owner::current(),
            started_at: Utc::now(),
            last_seen_at: Utc::now(),
            finished_at: None,
            duration_ms: None,
            parameters,
            engine: "local".into(),
            inputs: Vec::new(),
            sources_peak_rss_bytes: None,
            sources_cpu_ms: None,
            sources_duration_ms: None,
            steps: Vec::new(),
            outputs: Vec::new(),
            quarantine: Vec::new(),
            quarantined_rows: 0,
            failing_check_rows: 0,
            errors: Vec::new(),
            error_kind: None,
            marked_abandoned: Vec::new(),
            selection: None,
        }
    }

    pub fn finish(&mut self, status: RunStatus) {
        let now = Utc::now();
        self.status = status;
        self.finished_at = Some(now);
        self.duration_ms = Some((now - self.started_at).num_milliseconds().max(0) as u64);
        self.quarantined_rows = self.quarantine.iter().map(|q| q.rows).sum();
        self.failing_check_rows = self
            .steps
            .iter()
            .flat_map(|s| &s.checks)
            .map(|c| c.failing_rows)
            .sum();
    }

    /// Writes the manifest to `_runs/<run_id>.json` in `store`.
    pub async fn write(&mut self, store: &Store) -> Result<String, StorageError> {
        self.last_seen_at = Utc::now();
        let path = store.path(&format!("_runs/{}.json", self.run_id))?;
        let body = serde_json::to_vec_pretty(self).expect("manifest serialises");
        store
            .object_store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| store.io_error(&path, e))?;
        Ok(store.url(&path))
    }
}
