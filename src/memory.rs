//! Peak resident memory of the process, for the run manifest and the benchmark. Linux keeps
//! the high-water mark (VmHWM) and lets a process reset it; elsewhere nothing is reported.

/// Peak resident set size since start or the last [`reset_peak`], in bytes.
pub fn peak_rss() -> Option<u64> {
    status_bytes("self", "VmHWM:")
}

/// Peak resident set size of another process (a child), in bytes.
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// A figure in kB of `/proc/<process>/status`, in bytes.
fn status_bytes(process: impl std::fmt::Display, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// CPU seconds (user and system) a process (`"self"` or a pid) has used so far, all
/// threads (Linux).
pub fn cpu_seconds_of(process: impl std::fmt::Display) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; the
    // kernel counts them in USER_HZ, 100 on Linux.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// CPU milliseconds this process has used so far (Linux).
pub fn cpu_ms() -> Option<u64> {
    cpu_seconds_of("self").map(|s| (s * 1000.0).round() as u64)
}

/// Starts a new peak measurement (resets VmHWM to the current resident size).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Resident set size now, in bytes (Linux).
pub fn current_rss() -> Option<u64> {
    status_bytes("self", "VmRSS:")
}

/// Share of `memory_limit` given to the query engine's memory pool. The rest is for what
/// the pool does not count: Arrow buffers in flight between operators, Parquet readers and
/// writers, the built-in steps' own data, and the allocator's free pages.
pub const ENGINE_SHARE: f64 = 0.6;

/// How often the guard looks at resident memory.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Watches the process's resident memory against the run's limit. When it passes the
/// limit, [`MemoryGuard::exceeded`] resolves with the resident size seen, so the runner can
/// stop the step that is running and fail the run naming the limit and the step, instead
/// of the kernel killing the process.
pub struct MemoryGuard {
    limit: u64,
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
    notify: std::sync::Arc<tokio::sync::Notify>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    exceeded: Stop,
}

/// Set once the guard has seen resident memory pass the limit. Work that runs on threads
/// of its own, outside the async runtime (identity, the CLV fit, the staging of sources),
/// cannot be cancelled by dropping a future: it asks [`Stop::check`] between chunks of
/// work and gives up, so that its memory is freed and the process can exit.
#[derive(Clone, Default, Debug)]
pub struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Stop {
    /// The stop of the guarded step being run (see [`within`]); one that never fires
    /// outside it.
    pub fn current() -> Self {
        CURRENT_STOP.try_with(Stop::clone).unwrap_or_default()
    }

    pub fn requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An error naming `what` once the limit has been passed.
    pub fn check(&self, what: &str) -> Result<(), String> {
        if self.requested() {
            Err(format!(
                "{what}: stopped, the process passed its memory limit"
            ))
        } else {
            Ok(())
        }
    }

    fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

tokio::task_local! {
    static CURRENT_STOP: Stop;
}

impl MemoryGuard {
    /// Starts watching (a thread of its own, so a busy runtime cannot delay it); `None`
    /// where resident memory cannot be read.
    pub fn start(limit: u64) -> Option<Self> {
        use std::sync::atomic::Ordering;
        current_rss()?;
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let exceeded = Stop::default();
        let (s, n, st, ex) = (seen.clone(), notify.clone(), stop.clone(), exceeded.clone());
        std::thread::Builder::new()
            .name("memory-guard".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    if let Some(rss) = current_rss() {
                        if rss > limit {
                            s.store(rss, Ordering::SeqCst);
                            ex.request();
                            n.notify_waiters();
                            n.notify_one();
                            return;
                        }
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
            .ok()?;
        Some(Self {
            limit,
            seen,
            notify,
            stop,
            exceeded,
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Resolves, with the resident size seen, once memory has passed the limit.
    pub async fn exceeded(&self) -> u64 {
        use std::sync::atomic::Ordering;
        loop {
            let notified = self.notify.notified();
            let seen = self.seen.load(Ordering::SeqCst);
            if seen > 0 {
                return seen;
            }
            notified.await;
        }
    }
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Waits for `future`, unless the guard sees memory pass the limit first. Blocking work
/// started inside `future` finds the guard's [`Stop`] with [`Stop::current`].
pub async fn within<T>(
    guard: Option<&MemoryGuard>,
    future: impl std::future::Future<Output = T>,
) -> Result<T, u64> {
    match guard {
        None => Ok(future.await),
        Some(g) => tokio::select! {
            biased;
            out = CURRENT_STOP.scope(g.exceeded.clone(), future) => Ok(out),
            rss = g.exceeded() => Err(rss),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_guard_stops_what_passes_the_limit() {
        let now = current_rss().unwrap();
        let guard = MemoryGuard::start(now + (64 << 20)).unwrap();
        // Within the limit: the future finishes.
        assert_eq!(within(Some(&guard), async { 7 }).await, Ok(7));
        // 256 MiB touched: past the limit, the guard wins.
        let hog = async {
            let mut v: Vec<Vec<u8>> = Vec::new();
            loop {
                v.push(vec![1u8; 16 << 20]);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                if v.len() > 64 {
                    return v.len();
                }
            }
        };
        let rss = within(Some(&guard), hog).await.unwrap_err();
        assert!(rss > guard.limit(), "{rss}");
        // Blocking work started inside the guarded future sees the stop.
        let stop = within(Some(&guard), async { Stop::current() })
            .await
            .unwrap();
        assert!(stop.requested() && stop.check("identity").is_err());
        assert!(
            !Stop::current().requested(),
            "outside a guarded step nothing stops"
        );
    }
}
