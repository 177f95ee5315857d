//! Coordination of schedulers through the object store, so that several `crm-marts
//! schedule` processes (two containers, a blue-green deploy) can share one jobs folder:
//!
//! * a **tick claim** `_jobs/<job>/ticks/<tick>` is created with a conditional put
//!   (create only if absent): exactly one scheduler runs each tick;
//! * a **lock** `_jobs/<job>/lock.json` with an expiry keeps two runs of one job from
//!   overlapping across ticks; a lock past its expiry was left by a crashed holder and is
//!   taken over, by a conditional update where the store supports one.
//!
//! Conditional puts are enforced by local folders, in-memory stores, S3 (and S3-compatible
//! servers that implement `If-None-Match`), GCS and Azure.

use chrono::{DateTime, Utc};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::storage::{StorageError, Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockRecord {
    pub job: String,
    pub holder: String,
    pub tick: DateTime<Utc>,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A held lock; [`JobLock::release`] removes it.
#[derive(Debug, Clone)]
pub struct JobLock {
    path: ObjectPath,
    pub record: LockRecord,
}

/// Why a lock was not acquired.
#[derive(Debug)]
pub enum Refused {
    /// Another holder's lock is live.
    Held(LockRecord),
}

fn job_dir(job: &str) -> String {
    format!("_jobs/{job}")
}

/// The compact UTC form used in tick claim names, e.g. `20261125T013000Z`.
pub fn tick_name(tick: DateTime<Utc>) -> String {
    tick.format("%Y%m%dT%H%M%SZ").to_string()
}

fn is_exists(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

/// Claims a tick of a job for `holder`. Returns false when another scheduler claimed it.
pub async fn claim_tick(
    store: &Store,
    job: &str,
    tick: DateTime<Utc>,
    holder: &str,
) -> Result<bool, StorageError> {
    let path = store.path(&format!("{}/ticks/{}", job_dir(job), tick_name(tick)))?;
    let body =
        serde_json::json!({ "job": job, "tick": tick, "holder": holder, "claimed_at": Utc::now() })
            .to_string();
    match store
        .object_store
        .put_opts(&path, body.into(), PutOptions::from(PutMode::Create))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_exists(&e) => Ok(false),
        Err(e) => Err(store.io_error(&path, e)),
    }
}

/// Tick claims are kept this long, so `_jobs/<job>/ticks/` does not grow without end.
pub const TICK_CLAIMS_KEPT: chrono::Duration = chrono::Duration::days(7);

/// Deletes the job's tick claims for ticks before `before`; returns how many. Claims are
/// named by their tick, so the name alone says whether one is old; an old claim can no
/// longer be contested, as no scheduler fires a tick that long after it was due.
pub async fn prune_ticks(
    store: &Store,
    job: &str,
    before: DateTime<Utc>,
) -> Result<usize, StorageError> {
    use futures::TryStreamExt;
    let dir = store.path(&format!("{}/ticks", job_dir(job)))?;
    let cutoff = tick_name(before);
    let claims: Vec<_> = store
        .object_store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| store.io_error(&dir, e))?;
    let mut removed = 0;
    for meta in claims {
        let name = meta.location.filename().unwrap_or_default();
        // Both are `%Y%m%dT%H%M%SZ`: text order is time order.
        if name.len() == cutoff.len() && name < cutoff.as_str() {
            match store.object_store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(e) => return Err(store.io_error(&meta.location, e)),
            }
        }
    }
    Ok(removed)
}

impl JobLock {
    /// Takes the job's lock for `holder` until `expires_at`, or says who holds it.
    pub async fn acquire(
        store: &Store,
        job: &str,
        holder: &str,
        tick: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Result<JobLock, Refused>, StorageError> {
        let path = store.path(&format!("{}/lock.json", job_dir(job)))?;
        let record = LockRecord {
            job: job.into(),
            holder: holder.into(),
            tick,
            acquired_at: Utc::now(),
            expires_at,
        };
        let body = serde_json::to_vec(&record).expect("lock record serialises");
        // Two attempts: the second after a stale lock was taken over or vanished.
        for _ in 0..2 {
            match store
                .object_store
                .put_opts(
                    &path,
                    body.clone().into(),
                    PutOptions::from(PutMode::Create),
                )
                .await
            {
                Ok(_) => return Ok(Ok(JobLock { path, record })),
                Err(e) if is_exists(&e) => {}
                Err(e) => return Err(store.io_error(&path, e)),
            }
            let current = match store.object_store.get(&path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(store.io_error(&path, e)),
            };
            let version = UpdateVersion {
                e_tag: current.meta.e_tag.clone(),
                version: current.meta.version.clone(),
            };
            let bytes = match current.bytes().await {
                Ok(b) => b,
                // Removed by a taker between the open and the read (a local folder).
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(store.io_error(&path, e)),
            };
            let existing: Option<LockRecord> = serde_json::from_slice(&bytes).ok();
            if let Some(live) = existing.as_ref().filter(|r| r.expires_at > Utc::now()) {
                return Ok(Err(Refused::Held(live.clone())));
            }
            tracing::warn!(
                job,
                previous_holder = existing
                    .as_ref()
                    .map(|r| r.holder.as_str())
                    .unwrap_or("(unreadable lock)"),
                "taking over an expired job lock"
            );
            // Replace the stale lock only if nobody replaced it meanwhile.
            match store
                .object_store
                .put_opts(
                    &path,
                    body.clone().into(),
                    PutOptions::from(PutMode::Update(version)),
                )
                .await
            {
                Ok(_) => return Ok(Ok(JobLock { path, record })),
                Err(e) if is_exists(&e) => continue,
                Err(object_store::Error::NotImplemented { .. }) => {
                    // Local folders cannot update conditionally: remove and create again.
                    match store.object_store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(store.io_error(&path, e)),
                    }
                }
                Err(e) => return Err(store.io_error(&path, e)),
            }
        }
        // Lost the race for a stale lock: whoever won holds it now. On a local folder the
        // winner may be between its delete and its create: then the lock is free to create.
        for _ in 0..3 {
            match store.object_store.get(&path).await {
                Ok(r) => match r.bytes().await {
                    Ok(bytes) => {
                        return match serde_json::from_slice::<LockRecord>(&bytes) {
                            Ok(rec) => Ok(Err(Refused::Held(rec))),
                            Err(_) => Ok(Err(Refused::Held(record))),
                        }
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store.io_error(&path, e)),
                },
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store.io_error(&path, e)),
            }
            match store
                .object_store
                .put_opts(
                    &path,
                    body.clone().into(),
                    PutOptions::from(PutMode::Create),
                )
                .await
            {
                Ok(_) => return Ok(Ok(JobLock { path, record })),
                Err(e) if is_exists(&e) => {}
                Err(e) => return Err(store.io_error(&path, e)),
            }
        }
        match store.object_store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| store.io_error(&path, e))?;
                match serde_json::from_slice::<LockRecord>(&bytes) {
                    Ok(rec) => Ok(Err(Refused::Held(rec))),
                    Err(_) => Ok(Err(Refused::Held(record))),
                }
            }
            Err(e) => Err(store.io_error(&path, e)),
        }
    }

    /// Removes the lock if it is still ours.
    pub async fn release(self, store: &Store) -> Result<(), StorageError> {
        if let Ok(r) = store.object_store.get(&self.path).await {
            let bytes = r.bytes().await.map_err(|e| store.io_error(&self.path, e))?;
            let current: Option<LockRecord> = serde_json::from_slice(&bytes).ok();
            if current.is_some_and(|c| {
                c.holder != self.record.holder || c.acquired_at != self.record.acquired_at
            }) {
                tracing::warn!(job = %self.record.job, "the job lock was taken over while running; left in place");
                return Ok(());
            }
        }
        match store.object_store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store.io_error(&self.path, e)),
        }
    }
}
