//! Peak resident memory of the process, for the run manifest and the benchmark. Linux keeps
//! the high-water mark (VmHWM) and lets a process reset it; elsewhere nothing is reported.

/// Peak resident set size since start or the last [`reset_peak`], in bytes.
pub fn peak_rss() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Starts a new peak measurement (resets VmHWM to the current resident size).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
