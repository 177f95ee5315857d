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
    /// The pid namespace (`/proc/self/ns/pid`): a pid means nothing in another one (two
    /// containers with the same host name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pid_namespace: String,
}

impl Owner {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            host: host_name(),
            boot_id: boot_id(),
            pid,
            pid_started: process_start(pid),
            pid_namespace: pid_namespace(),
        }
    }

    fn is_current(&self) -> bool {
        *self == Self::current()
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
        if !self.pid_namespace.is_empty() && self.pid_namespace != pid_namespace() {
            return None;
        }
        if process_start(self.pid).is_none() && hides_processes() {
            // `/proc` mounted with hidepid: another user's process is invisible, not gone.
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

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// True when `/proc` hides other users' processes: init (pid 1) is always there, so not
/// seeing it, as another process than init, means hidepid.
fn hides_processes() -> bool {
    std::process::id() != 1 && !std::path::Path::new("/proc/1/stat").exists()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
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
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|state| state == "Z" || state == "X")
}

fn heartbeat_rel(run_id: &str) -> String {
    format!("_runs/{run_id}.alive")
}

/// Runs of this process that are under way, and those whose run was dropped before it
/// finished (a scheduler's timeout cancels a run's future): the process is alive but the
/// run is not.
#[derive(Default)]
struct Registry {
    active: std::collections::HashSet<String>,
    dropped: Vec<(String, Store)>,
}

static REGISTRY: std::sync::Mutex<Option<Registry>> = std::sync::Mutex::new(None);

fn registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Registry::default))
}

fn is_active_here(run_id: &str) -> bool {
    registry(|r| r.active.contains(run_id))
}

/// Rewrites the run's heartbeat object until stopped; then removes it. While it lives, the
/// run is active in this process's registry.
pub struct Heartbeat {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: std::sync::Arc<tokio::sync::Notify>,
    store: Store,
    run_id: String,
}

impl Heartbeat {
    pub fn start(store: &Store, run_id: &str) -> Self {
        registry(|r| r.active.insert(run_id.to_string()));
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
        Self {
            task: Some(task),
            stop,
            store: store.clone(),
            run_id: run_id.to_string(),
        }
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
        registry(|r| r.active.remove(&self.run_id));
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            // Dropped without `stop`: the run's future was cancelled mid-run.
            task.abort();
            let (run_id, store) = (self.run_id.clone(), self.store.clone());
            registry(|r| {
                r.active.remove(&run_id);
                r.dropped.push((run_id, store));
            });
        }
    }
}

/// Records the runs of this process that were dropped before they finished (see
/// [`Registry`]) as failed with `reason`, keeping what their manifests recorded; returns
/// their run ids. The scheduler calls it when a job's timeout cancels its run.
pub async fn settle_dropped(reason: &str) -> Vec<String> {
    let dropped = registry(|r| std::mem::take(&mut r.dropped));
    let mut settled = Vec::new();
    for (run_id, store) in dropped {
        let rel = format!("_runs/{run_id}.json");
        let Ok(path) = store.path(&rel) else { continue };
        let Ok(Some(m)) = read_manifest(&store, &rel, &path, None).await else {
            continue;
        };
        if m.status() != "running" {
            continue;
        }
        let now = Utc::now();
        let mut v = m.value.clone();
        v["status"] = Value::from("failed");
        v["error_kind"] = Value::from("resource");
        v["finished_at"] = serde_json::to_value(now).unwrap_or(Value::Null);
        v["last_seen_at"] = serde_json::to_value(now).unwrap_or(Value::Null);
        if let Some(errors) = v["errors"].as_array_mut() {
            errors.push(Value::from(reason));
        } else {
            v["errors"] = serde_json::json!([reason]);
        }
        match rewrite(&store, &path, &m, &v).await {
            Ok(true) => {
                if let Ok(alive) = store.path(&heartbeat_rel(&run_id)) {
                    let _ = store.object_store.delete(&alive).await;
                }
                settled.push(run_id);
            }
            Ok(false) => {}
            Err(e) => {
                warn!(run_id = %run_id, error = %e, "could not record that the run was cancelled")
            }
        }
    }
    settled
}

async fn beat(store: &Store, run_id: &str) -> Result<(), StorageError> {
    let path = store.path(&heartbeat_rel(run_id))?;
    let body = serde_json::to_vec(&serde_json::json!({ "run_id": run_id, "at": Utc::now() }))
        .expect("serialises");
    store
        .object_store
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| store.io_error(&path, e))?;
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
    /// The version read, so that a rewrite does not overwrite a newer one.
    version: Option<object_store::UpdateVersion>,
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
        if owner.as_ref().is_some_and(Owner::is_current) {
            // This very process: the run is alive if it is still under way here.
            return !is_active_here(self.value["run_id"].as_str().unwrap_or_default());
        }
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

/// The run manifests of a store as listed (newest first), and when each run's heartbeat
/// was last written.
struct Listing {
    files: Vec<(String, object_store::ObjectMeta)>,
    heartbeats: std::collections::HashMap<String, DateTime<Utc>>,
}

async fn list(store: &Store) -> Result<Listing, StorageError> {
    let prefix = store.path("_runs")?;
    let listed: Vec<_> = store
        .object_store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| store.io_error(&prefix, e))?;
    let mut heartbeats = std::collections::HashMap::new();
    let mut files = Vec::new();
    for meta in listed {
        let rel = store.relative(&meta.location);
        if let Some(run) = rel
            .strip_prefix("_runs/")
            .and_then(|n| n.strip_suffix(".alive"))
        {
            heartbeats.insert(run.to_string(), meta.last_modified);
        } else if rel.ends_with(".json") {
            files.push((rel, meta));
        }
    }
    // Run ids start with their UTC start time, so names sort in time order.
    files.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(Listing { files, heartbeats })
}

/// Reads one manifest; `None` if it was removed meanwhile or is unreadable (logged).
async fn read_manifest(
    store: &Store,
    rel: &str,
    path: &object_store::path::Path,
    heartbeat: Option<DateTime<Utc>>,
) -> Result<Option<StoredManifest>, StorageError> {
    let got = match store.object_store.get(path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store.io_error(path, e)),
    };
    let meta = got.meta.clone();
    let bytes = got.bytes().await.map_err(|e| store.io_error(path, e))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => {
            let recorded = value["last_seen_at"]
                .as_str()
                .and_then(|s| s.parse::<DateTime<Utc>>().ok());
            let last_seen_at = [Some(meta.last_modified), heartbeat, recorded]
                .into_iter()
                .flatten()
                .max();
            let version = Some(object_store::UpdateVersion {
                e_tag: meta.e_tag,
                version: meta.version,
            });
            Ok(Some(StoredManifest {
                value,
                rel: rel.to_string(),
                last_seen_at,
                version,
            }))
        }
        Err(e) => {
            warn!(file = %store.url(path), error = %e, "unreadable run manifest skipped");
            Ok(None)
        }
    }
}

/// The newest `limit` manifests of `store`, newest first.
pub async fn manifests(store: &Store, limit: usize) -> Result<Vec<StoredManifest>, StorageError> {
    let listing = list(store).await?;
    let mut out = Vec::new();
    for (rel, meta) in listing.files.iter().take(limit) {
        let run_id = rel.trim_start_matches("_runs/").trim_end_matches(".json");
        if let Some(m) = read_manifest(
            store,
            rel,
            &meta.location,
            listing.heartbeats.get(run_id).copied(),
        )
        .await?
        {
            out.push(m);
        }
    }
    Ok(out)
}

/// Manifests that [`mark_abandoned`] reads besides those with a heartbeat object: a run
/// killed before its first beat landed has none, and is among the newest.
const NEWEST_WITHOUT_HEARTBEAT: usize = 20;

/// Writes `value` over the manifest `m` was read from, unless it changed since (where
/// the store can tell); `Ok(false)` when it had.
async fn rewrite(
    store: &Store,
    path: &object_store::path::Path,
    m: &StoredManifest,
    value: &Value,
) -> Result<bool, StorageError> {
    use object_store::{PutMode, PutOptions};
    let body = PutPayload::from(serde_json::to_vec_pretty(value).expect("manifest serialises"));
    let conditional = m
        .version
        .clone()
        .filter(|v| v.e_tag.is_some() || v.version.is_some());
    if let Some(version) = conditional {
        match store
            .object_store
            .put_opts(
                path,
                body.clone(),
                PutOptions::from(PutMode::Update(version)),
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(object_store::Error::Precondition { .. }) => return Ok(false),
            // Stores without conditional writes (a local folder) write unconditionally.
            Err(object_store::Error::NotImplemented { .. }) => {}
            Err(e) => return Err(store.io_error(path, e)),
        }
    }
    store
        .object_store
        .put(path, body)
        .await
        .map_err(|e| store.io_error(path, e))?;
    Ok(true)
}

/// Rewrites the manifests of abandoned runs as `abandoned`; returns their run ids. Only
/// runs that may still say `running` are read: those with a heartbeat object (a run
/// removes it when it finishes) and the newest few.
pub async fn mark_abandoned(store: &Store) -> Result<Vec<String>, StorageError> {
    let now = Utc::now();
    let listing = list(store).await?;
    let mut marked = Vec::new();
    for (i, (rel, meta)) in listing.files.iter().enumerate() {
        let run_id = rel.trim_start_matches("_runs/").trim_end_matches(".json");
        let heartbeat = listing.heartbeats.get(run_id).copied();
        if heartbeat.is_none() && i >= NEWEST_WITHOUT_HEARTBEAT {
            continue;
        }
        let Some(m) = read_manifest(store, rel, &meta.location, heartbeat).await? else {
            continue;
        };
        if !m.is_abandoned(now) {
            continue;
        }
        if !rewrite(store, &meta.location, &m, &m.shown(now)).await? {
            // Written meanwhile: the run was not gone after all.
            continue;
        }
        if let Ok(alive) = store.path(&heartbeat_rel(run_id)) {
            let _ = store.object_store.delete(&alive).await;
        }
        // What a run on a cluster left in shared storage.
        crate::engine::remove_scratch(store, &format!("_scratch/{run_id}")).await;
        marked.push(m.value["run_id"].as_str().unwrap_or(run_id).to_string());
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
        let gone = Owner {
            pid,
            pid_started: Some(1),
            ..me.clone()
        };
        assert_eq!(gone.alive(), Some(false));
        let rebooted = Owner {
            boot_id: "another-boot".into(),
            ..me.clone()
        };
        assert_eq!(rebooted.alive(), Some(false));
        let elsewhere = Owner {
            host: "another-host".into(),
            ..me
        };
        assert_eq!(elsewhere.alive(), None);
    }

    #[tokio::test]
    async fn a_run_dropped_mid_run_in_a_live_process_is_settled_not_left_running() {
        let store = Store::from_object_store(
            "mem",
            "memory:///",
            std::sync::Arc::new(object_store::memory::InMemory::new()),
            "",
        );
        let manifest = |id: &str| serde_json::json!({ "run_id": id, "status": "running", "owner": Owner::current(), "errors": [] });
        let put = |id: &str| {
            let (store, body) = (store.clone(), serde_json::to_vec(&manifest(id)).unwrap());
            let path = store.path(&format!("_runs/{id}.json")).unwrap();
            async move {
                store
                    .object_store
                    .put(&path, PutPayload::from(body))
                    .await
                    .unwrap()
            }
        };
        // Under way in this process: running. Its heartbeat dropped (a timeout cancelled
        // the run's future): abandoned, though the process lives.
        put("20260101T000000000Z-live").await;
        let live = Heartbeat::start(&store, "20260101T000000000Z-live");
        put("20260101T000000000Z-cut").await;
        let cut = Heartbeat::start(&store, "20260101T000000000Z-cut");
        drop(cut);
        let now = Utc::now();
        let listed = manifests(&store, 10).await.unwrap();
        let status = |id: &str| {
            listed
                .iter()
                .find(|m| m.value["run_id"] == id)
                .unwrap()
                .shown(now)["status"]
                .clone()
        };
        assert_eq!(status("20260101T000000000Z-live"), "running");
        assert_eq!(status("20260101T000000000Z-cut"), "abandoned");
        // The scheduler settles what it cancelled: failed, with the reason, kept.
        assert_eq!(
            settle_dropped("timed out after 1 minutes").await,
            vec!["20260101T000000000Z-cut".to_string()]
        );
        let listed = manifests(&store, 10).await.unwrap();
        let cut = listed
            .iter()
            .find(|m| m.value["run_id"] == "20260101T000000000Z-cut")
            .unwrap();
        assert_eq!(cut.value["status"], "failed");
        assert_eq!(cut.value["errors"][0], "timed out after 1 minutes");
        assert_eq!(cut.value["owner"]["pid"], std::process::id());
        assert!(
            mark_abandoned(&store).await.unwrap().is_empty(),
            "the live run is not marked"
        );
        live.stop().await;
    }

    /// A run whose process is gone is marked abandoned, and the shared scratch files it
    /// left (a cluster run's) are deleted; a live run's stay.
    #[tokio::test]
    async fn an_abandoned_runs_shared_scratch_files_are_removed() {
        let store = Store::from_object_store(
            "mem",
            "memory:///",
            std::sync::Arc::new(object_store::memory::InMemory::new()),
            "",
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Owner {
            pid,
            pid_started: Some(1),
            ..Owner::current()
        };
        let put = |rel: String, body: Vec<u8>| {
            let store = store.clone();
            async move {
                store
                    .object_store
                    .put(&store.path(&rel).unwrap(), PutPayload::from(body))
                    .await
                    .unwrap()
            }
        };
        for (id, owner) in [
            ("20260101T000000000Z-gone", gone),
            ("20260101T000000000Z-live", Owner::current()),
        ] {
            let manifest = serde_json::json!({ "run_id": id, "status": "running", "owner": owner, "errors": [] });
            put(
                format!("_runs/{id}.json"),
                serde_json::to_vec(&manifest).unwrap(),
            )
            .await;
            put(
                format!("_scratch/{id}/tables/int_orders.parquet"),
                b"PAR1".to_vec(),
            )
            .await;
        }
        let live = Heartbeat::start(&store, "20260101T000000000Z-live");
        assert_eq!(
            mark_abandoned(&store).await.unwrap(),
            vec!["20260101T000000000Z-gone".to_string()]
        );
        live.stop().await;
        let left: Vec<String> = {
            let listed: Vec<_> = store
                .object_store
                .list(Some(&store.path("_scratch").unwrap()))
                .try_collect()
                .await
                .unwrap();
            listed.into_iter().map(|m| m.location.to_string()).collect()
        };
        assert_eq!(
            left,
            vec!["_scratch/20260101T000000000Z-live/tables/int_orders.parquet".to_string()]
        );
    }

    #[test]
    fn a_run_on_another_host_is_abandoned_once_its_heartbeat_is_stale() {
        let now = Utc::now();
        let owner = Owner {
            host: "another-host".into(),
            boot_id: String::new(),
            pid: 1,
            pid_started: None,
            pid_namespace: String::new(),
        };
        let m = |seen: DateTime<Utc>| StoredManifest {
            value: serde_json::json!({ "run_id": "r", "status": "running", "owner": owner }),
            rel: "_runs/r.json".into(),
            last_seen_at: Some(seen),
            version: None,
        };
        assert!(!m(now - chrono::Duration::seconds(60)).is_abandoned(now));
        let old = m(now - chrono::Duration::seconds(600));
        assert!(old.is_abandoned(now));
        assert_eq!(old.shown(now)["status"], "abandoned");
        assert_eq!(old.shown(now)["owner"]["host"], "another-host");
    }
}
