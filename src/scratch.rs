//! Scratch folders: every run stages sources, materialized tables and spill files under
//! `<spill_dir>/<run_id>/`. A run removes its own folder when it ends; a run that was
//! killed cannot, so each run holds an exclusive lock on `<folder>/.lock` while it lives,
//! and every new run removes the folders whose lock is free (their run is gone). The
//! operating system releases the lock when a process dies, however it dies.

use std::fs::File;
use std::path::{Path, PathBuf};

/// A run's scratch folder, locked for as long as the value lives and removed on drop.
#[derive(Debug)]
pub struct Scratch {
    pub dir: PathBuf,
    _lock: File,
}

const LOCK: &str = ".lock";

impl Scratch {
    /// Creates and locks `<spill_dir>/<run_id>/`.
    pub fn create(spill_dir: &Path, run_id: &str) -> std::io::Result<Self> {
        let dir = spill_dir.join(run_id);
        std::fs::create_dir_all(&dir)?;
        // Locked under a temporary name, then renamed: a sweeping run never sees an
        // unlocked `.lock` of a run that is only starting.
        let fresh = dir.join(".lock-new");
        let lock = File::create(&fresh)?;
        lock.try_lock()
            .map_err(|e| std::io::Error::other(format!("cannot lock {}: {e}", fresh.display())))?;
        std::fs::rename(&fresh, dir.join(LOCK))?;
        Ok(Self { dir, _lock: lock })
    }

    /// Removes the scratch folders of runs that are no longer running; returns them.
    /// Only folders named like a run id and holding a free `.lock` are touched.
    pub fn remove_abandoned(spill_dir: &Path) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(spill_dir) else {
            return removed;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() || !looks_like_run_id(&name) {
                continue;
            }
            let Ok(lock) = File::options().read(true).write(true).open(path.join(LOCK)) else {
                continue;
            };
            if lock.try_lock().is_ok() {
                // Its run is gone: nobody else can take this lock while we hold it.
                if std::fs::remove_dir_all(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        removed
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `20261125T083012123Z-1a2b`, as [`crate::run::new_run_id`] makes them.
fn looks_like_run_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 24
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..18].iter().all(u8::is_ascii_digit)
        && b[18] == b'Z'
        && b[19] == b'-'
        && b[20..].iter().all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_folders_of_finished_runs_are_removed() {
        let spill = tempfile::tempdir().unwrap();
        let live = Scratch::create(spill.path(), "20261125T083012123Z-1a2b").unwrap();
        // A killed run: its folder and lock file remain, but nobody holds the lock.
        let dead = spill.path().join("20261125T083011000Z-ffff");
        std::fs::create_dir_all(dead.join("work")).unwrap();
        std::fs::write(dead.join(LOCK), "").unwrap();
        // Not a run's folder.
        std::fs::create_dir_all(spill.path().join("keep-me")).unwrap();
        let removed = Scratch::remove_abandoned(spill.path());
        assert_eq!(removed, vec![dead.clone()]);
        assert!(live.dir.exists() && spill.path().join("keep-me").exists() && !dead.exists());
        let dir = live.dir.clone();
        drop(live);
        assert!(!dir.exists());
    }

    #[test]
    fn run_ids_are_recognised() {
        assert!(looks_like_run_id(&crate::run::new_run_id()));
        assert!(!looks_like_run_id("spill"));
    }
}
