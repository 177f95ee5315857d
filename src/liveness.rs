//! Telling a running run from one whose process is gone.
//!
//! A run's manifest says `running` until the run writes its final state, so a run that
//! was killed (SIGKILL, a lost machine) would say `running` for ever. Two facts decide:
//!
//! * **Who runs it.** The manifest names the process: host, boot id, pid and the pid's
//!   start time. On that host a reader asks the kernel whether that process still lives;
//!   a reboot (another boot id) or a reused pid (another start time) means it is gone.
//! * **When it was last seen.** While it runs, the run rewrites `_runs/<run_id>.alive`
//!   every [`HEARTBEAT`]; readers on other hosts take a run whose heartbeat is older
//!   than [`STALE_AFTER`] as gone.
//!
//! A gone run is shown as `abandoned`, and the next run of the same store rewrites its
//! manifest so: status `abandoned` and `last_seen_at`, everything else as recorded.
//! Manifests are never deleted.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use crate::storage::{StorageError, Store};

/// How often a running run says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A run not heard of for this long is gone (ten heartbeats: a slow store or a busy
/// machine delays a heartbeat, it does not skip ten).
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// The process that runs a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    /// Changes at every boot (Linux); empty elsewhere.
    #[serde(default)]
    pub boot_id: String,
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (Linux), against pid reuse.
    #[serde(default)]
    pub pid_started: Option<u64>,
}

impl Owner {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self { host: host_name(), boot_id: boot_id(), pid, pid_started: process_start(pid) }
    }

    /// `Some(true)` if the process is known alive, `Some(false)` if known gone, `None`
    /// when this host cannot tell (another host).
    pub fn alive(&self) -> Option<bool> {
        if self.host != host_name() {
            return None;
        }
        let boot = boot_id();
        if !self.boot_id.is_empty() && !boot.is_empty() && self.boot_id != boot {
            return Some(false);
        }
        if !std::path::Path::new("/proc/self").exists() {
            return None;
        }
        match (process_start(self.pid), self.pid_started) {
            (None, _) => Some(false),
            (Some(now), Some(then)) => Some(now == then && !is_zombie(self.pid)),
            (Some(_), None) => Some(!is_zombie(self.pid)),
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Fields of `/proc/<pid>/stat` after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn process_start(pid: u32) -> Option<u64> {
    // Field 22 of stat; the 20th after the command name.
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    stat_fields(pid).and_then(|f| f.first().cloned()).is_some_and(|state| state == "Z" || state == "X")
}

fn heartbeat_rel(run_id: &str) -> String {
    format!("_runs/{run_id}.alive")
}

/// Rewrites the run's heartbeat object until stopped; then removes it.
pub struct Heartbeat {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: std::sync::Arc<tokio::sync::Notify>,
    store: Store,
    run_id: String,
}

impl Heartbeat {
    pub fn start(store: &Store, run_id: &str) -> Self {
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let task = {
            let store = store.clone();
            let run_id = run_id.to_string();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(HEARTBEAT);
                loop {
                    tokio::select! {
                        _ = stop.notified() => return,
                        _ = ticks.tick() => {}
                    }
                    // A beat is written to the end, never cut off, so none lands after
                    // the heartbeat object is removed.
                    if let Err(e) = beat(&store, &run_id).await {
                        warn!(error = %e, "could not record that the run is alive");
                    }
                }
            })
        };
        Self { task: Some(task), stop, store: store.clone(), run_id: run_id.to_string() }
    }

    /// Stops beating, waits for a beat being written, and removes the heartbeat object.
    pub async fn stop(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Ok(path) = self.store.path(&heartbeat_rel(&self.run_id)) {
            let _ = self.store.object_store.delete(&path).await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn beat(store: &Store, run_id: &str) -> Result<(), StorageError> {
    let path = store.path(&heartbeat_rel(run_id))?;
    let body = serde_json::to_vec(&serde_json::json!({ "run_id": run_id, "at": Utc::now() })).expect("serialises");
    store.object_store.put(&path, PutPayload::from(body)).await.map_err(|e| store.io_error(&path, e))?;
    Ok(())
}

/// A manifest as read back, with what was seen of its run.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub value: Value,
    /// `_runs/<run_id>.json`, relative to the store.
    pub rel: String,
    /// Last write of the manifest or of the run's heartbeat.
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl StoredManifest {
    pub fn status(&self) -> &str {
        self.value["status"].as_str().unwrap_or_default()
    }

    /// True for a manifest that says `running` whose process is gone.
    pub fn is_abandoned(&self, now: DateTime<Utc>) -> bool {
        if self.status() != "running" {
            return false;
        }
        let owner: Option<Owner> = serde_json::from_value(self.value["owner"].clone()).ok();
        match owner.as_ref().and_then(Owner::alive) {
            Some(alive) => !alive,
            None => match self.last_seen_at {
                Some(seen) => (now - seen).to_std().is_ok_and(|age| age > STALE_AFTER),
                None => false,
            },
        }
    }

    /// The manifest with an abandoned run shown as such.
    pub fn shown(&self, now: DateTime<Utc>) -> Value {
        let mut v = self.value.clone();
        if self.is_abandoned(now) {
            v["status"] = Value::from("abandoned");
            v["last_seen_at"] = serde_json::to_value(self.last_seen_at).unwrap_or(Value::Null);
        }
        v
    }
}

/// The newest `limit` manifests of `store`, newest first.
pub async fn manifests(store: &Store, limit: usize) -> Result<Vec<StoredManifest>, StorageError> {
    let prefix = store.path("_runs")?;
    let listed: Vec<_> =
        store.object_store.list(Some(&prefix)).try_collect().await.map_err(|e| store.io_error(&prefix, e))?;
    let mut heartbeats = std::collections::HashMap::new();
    let mut files = Vec::new();
    for meta in listed {
        let rel = store.relative(&meta.location);
        if let Some(run) = rel.strip_prefix("_runs/").and_then(|n| n.strip_suffix(".alive")) {
            heartbeats.insert(run.to_string(), meta.last_modified);
        } else if rel.ends_with(".json") {
            files.push((rel, meta));
        }
    }
    // Run ids start with their UTC start time, so names sort in time order.
    files.sort_by(|a, b| b.0.cmp(&a.0));
    let mut out = Vec::new();
    for (rel, meta) in files.into_iter().take(limit) {
        let bytes = match store.object_store.get(&meta.location).await {
            Ok(r) => r.bytes().await.map_err(|e| store.io_error(&meta.location, e))?,
            // Removed between listing and reading.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(store.io_error(&meta.location, e)),
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => {
                let run_id = value["run_id"].as_str().unwrap_or_default().to_string();
                let recorded = value["last_seen_at"].as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok());
                let last_seen_at = [Some(meta.last_modified), heartbeats.get(&run_id).copied(), recorded].into_iter().flatten().max();
                out.push(StoredManifest { value, rel, last_seen_at });
            }
            Err(e) => warn!(file = %store.url(&meta.location), error = %e, "unreadable run manifest skipped"),
        }
    }
    Ok(out)
}

/// Rewrites the manifests of abandoned runs as `abandoned`; returns their run ids.
pub async fn mark_abandoned(store: &Store) -> Result<Vec<String>, StorageError> {
    let now = Utc::now();
    let mut marked = Vec::new();
    for m in manifests(store, usize::MAX).await? {
        if !m.is_abandoned(now) {
            continue;
        }
        let path = store.path(&m.rel)?;
        let body = serde_json::to_vec_pretty(&m.shown(now)).expect("manifest serialises");
        store.object_store.put(&path, PutPayload::from(body)).await.map_err(|e| store.io_error(&path, e))?;
        let run_id = m.value["run_id"].as_str().unwrap_or_default().to_string();
        if let Ok(alive) = store.path(&heartbeat_rel(&run_id)) {
            let _ = store.object_store.delete(&alive).await;
        }
        marked.push(run_id);
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_finished_one_is_not() {
        let me = Owner::current();
        assert_eq!(me.alive(), Some(true));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Owner { pid, pid_started: Some(1), ..me.clone() };
        assert_eq!(gone.alive(), Some(false));
        let rebooted = Owner { boot_id: "another-boot".into(), ..me.clone() };
        assert_eq!(rebooted.alive(), Some(false));
        let elsewhere = Owner { host: "another-host".into(), ..me };
        assert_eq!(elsewhere.alive(), None);
    }

    #[test]
    fn a_run_on_another_host_is_abandoned_once_its_heartbeat_is_stale() {
        let now = Utc::now();
        let owner = Owner { host: "another-host".into(), boot_id: String::new(), pid: 1, pid_started: None };
        let m = |seen: DateTime<Utc>| StoredManifest {
            value: serde_json::json!({ "run_id": "r", "status": "running", "owner": owner }),
            rel: "_runs/r.json".into(),
            last_seen_at: Some(seen),
        };
        assert!(!m(now - chrono::Duration::seconds(60)).is_abandoned(now));
        let old = m(now - chrono::Duration::seconds(600));
        assert!(old.is_abandoned(now));
        assert_eq!(old.shown(now)["status"], "abandoned");
        assert_eq!(old.shown(now)["owner"]["host"], "another-host");
    }
}
