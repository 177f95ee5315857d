//! Scheduled jobs (`jobs/*.yaml`): a cron schedule in a time zone, the pipelines to run in
//! order with their parameters, retries, a timeout and the store that holds the job's
//! lock. [`JobConfig`] mirrors the YAML; [`Job`] is the validated form the scheduler runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::Deserialize;

use super::diag::{locate, Diagnostic, Diagnostics};

/// A job file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Job name (default: the file name without extension).
    pub name: Option<String>,
    /// Cron schedule: `sec min hour day-of-month month day-of-week`, or the classic five
    /// fields without seconds.
    pub schedule: String,
    /// IANA time zone the schedule and the date parameters are read in (default UTC).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Environment file with the stores.
    pub config: PathBuf,
    /// Pipeline files, run in this order; a failing pipeline stops the job.
    pub pipelines: Vec<PathBuf>,
    /// Parameters of every pipeline. `{today}` and `{yesterday}` are the tick's date and
    /// the day before in the job's time zone.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub retries: RetriesConfig,
    /// Longest a run of the whole job may take (default 6 hours).
    pub timeout_minutes: Option<u64>,
    #[serde(default)]
    pub lock: LockConfig,
}

fn default_time_zone() -> String {
    "UTC".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesConfig {
    /// Further attempts after a failed pipeline run (default 0).
    #[serde(default)]
    pub attempts: u32,
    /// Wait before the first retry; doubled before each further one (default 60).
    pub backoff_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// Store of the environment that holds the job's lock and tick records (default `marts`).
    pub store: Option<String>,
    /// A lock older than this is taken to be left by a crashed scheduler (default: the
    /// timeout plus 10 minutes).
    pub expire_minutes: Option<u64>,
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub file: PathBuf,
    pub schedule: String,
    pub cron: Cron,
    pub time_zone: Tz,
    pub config: PathBuf,
    pub pipelines: Vec<PathBuf>,
    pub params: BTreeMap<String, String>,
    pub retry_attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    pub lock_store: String,
    pub lock_expiry: Duration,
}

/// Parses a 6-field (with seconds) or 5-field cron schedule. Day of month and day of week
/// combine as in classic cron: either may match.
pub fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(schedule.trim())
        .map_err(|e| format!("schedule {schedule:?} is not a cron expression: {e}"))
}

impl Job {
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::new(
                path,
                format!("cannot read file: {e}"),
            )])
        })?;
        let raw: JobConfig = serde_yaml::from_str(&text)
            .map_err(|e| Diagnostics(vec![Diagnostic::from_yaml(path, &e)]))?;
        compile(path, &text, raw)
    }

    /// The first tick strictly after `after`.
    pub fn next_tick(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.time_zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The job's parameters for a tick, with `{today}` and `{yesterday}` replaced by dates
    /// in the job's time zone.
    pub fn params_at(&self, tick: DateTime<Utc>) -> BTreeMap<String, String> {
        let today: NaiveDate = tick.with_timezone(&self.time_zone).date_naive();
        let yesterday = today.checked_sub_days(Days::new(1)).unwrap_or(today);
        self.params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.replace("{today}", &today.to_string())
                        .replace("{yesterday}", &yesterday.to_string()),
                )
            })
            .collect()
    }
}

/// Looks for job files: a folder's `*.yaml` / `*.yml` files in name order, or the files given.
pub fn job_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostics> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| {
                Diagnostics(vec![Diagnostic::new(p, format!("cannot read folder: {e}"))])
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn compile(file: &Path, text: &str, raw: JobConfig) -> Result<Job, Diagnostics> {
    let mut diags = Diagnostics::default();
    let at = |key: &str| locate(text, &[key]);
    let name = raw.name.clone().unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        diags.push(
            Diagnostic::new(
                file,
                format!("name {name:?}: use letters, digits, `_` or `-`"),
            )
            .at_opt(at("name")),
        );
    }
    let cron = match parse_schedule(&raw.schedule) {
        Ok(c) => Some(c),
        Err(e) => {
            diags.push(Diagnostic::new(file, e).at_opt(at("schedule")));
            None
        }
    };
    let time_zone = match raw.time_zone.parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            diags.push(
                Diagnostic::new(
                    file,
                    format!(
                        "time_zone {:?} is not an IANA time zone (e.g. Europe/Copenhagen)",
                        raw.time_zone
                    ),
                )
                .at_opt(at("time_zone")),
            );
            None
        }
    };
    if raw.pipelines.is_empty() {
        diags.push(
            Diagnostic::new(file, "pipelines: name at least one pipeline file")
                .at_opt(at("pipelines")),
        );
    }
    for p in &raw.pipelines {
        if !p.is_file() {
            diags.push(
                Diagnostic::new(file, format!("pipelines: no file {}", p.display()))
                    .at_opt(at("pipelines")),
            );
        }
    }
    if !raw.config.is_file() {
        diags.push(
            Diagnostic::new(file, format!("config: no file {}", raw.config.display()))
                .at_opt(at("config")),
        );
    }
    for (k, v) in &raw.params {
        let rest = v.replace("{today}", "").replace("{yesterday}", "");
        if rest.contains('{') {
            diags.push(
                Diagnostic::new(file, format!("params.{k}: {v:?} has an unknown placeholder (use {{today}} or {{yesterday}})"))
                    .at_opt(locate(text, &["params", k])),
            );
        }
    }
    let timeout = Duration::from_secs(60 * raw.timeout_minutes.unwrap_or(360));
    if timeout.is_zero() {
        diags.push(
            Diagnostic::new(file, "timeout_minutes must be at least 1")
                .at_opt(at("timeout_minutes")),
        );
    }
    let lock_expiry = raw
        .lock
        .expire_minutes
        .map(|m| Duration::from_secs(60 * m))
        .unwrap_or(timeout + Duration::from_secs(600));
    if lock_expiry < timeout {
        diags.push(
            Diagnostic::new(file, "lock.expire_minutes is shorter than timeout_minutes: a running job could lose its lock")
                .at_opt(locate(text, &["lock", "expire_minutes"])),
        );
    }
    match (cron, time_zone) {
        (Some(cron), Some(time_zone)) if diags.is_empty() => Ok(Job {
            name,
            file: file.to_path_buf(),
            schedule: raw.schedule,
            cron,
            time_zone,
            config: raw.config,
            pipelines: raw.pipelines,
            params: raw.params,
            retry_attempts: raw.retries.attempts,
            backoff: Duration::from_secs(raw.retries.backoff_seconds.unwrap_or(60)),
            timeout,
            lock_store: raw.lock.store.unwrap_or_else(|| "marts".into()),
            lock_expiry,
        }),
        _ => Err(diags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(schedule: &str, tz: &str) -> Job {
        let text = format!("schedule: \"{schedule}\"\ntime_zone: {tz}\nconfig: Cargo.toml\npipelines: [Cargo.toml]\nparams: {{ as_of: \"{{yesterday}}\" }}\n");
        let raw: JobConfig = serde_yaml::from_str(&text).unwrap();
        compile(Path::new("jobs/nightly.yaml"), &text, raw).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ticks_follow_the_time_zone_across_daylight_saving_changes() {
        // 02:30 local every day: 00:30 UTC in summer time, 01:30 UTC in winter time.
        let j = job("0 30 2 * * *", "Europe/Copenhagen");
        assert_eq!(
            j.next_tick(utc("2026-03-27T12:00:00Z")),
            Some(utc("2026-03-28T01:30:00Z"))
        );
        assert_eq!(
            j.next_tick(utc("2026-03-29T12:00:00Z")),
            Some(utc("2026-03-30T00:30:00Z"))
        );
        assert_eq!(
            j.next_tick(utc("2026-10-23T12:00:00Z")),
            Some(utc("2026-10-24T00:30:00Z"))
        );
        assert_eq!(
            j.next_tick(utc("2026-10-25T12:00:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
        // Five fields: minute 15 of every hour.
        let j = job("15 * * * *", "UTC");
        assert_eq!(
            j.next_tick(utc("2026-11-01T10:20:00Z")),
            Some(utc("2026-11-01T11:15:00Z"))
        );
    }

    #[test]
    fn yesterday_is_the_day_before_in_the_jobs_time_zone() {
        let j = job("0 30 0 * * *", "Europe/Copenhagen");
        // 23:30 UTC on 24 November is 00:30 on 25 November in Copenhagen.
        assert_eq!(
            j.params_at(utc("2026-11-24T23:30:00Z"))["as_of"],
            "2026-11-24"
        );
        assert_eq!(
            job("0 30 0 * * *", "UTC").params_at(utc("2026-11-24T23:30:00Z"))["as_of"],
            "2026-11-23"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "schedule: \"61 * * * *\"\ntime_zone: Mars/Olympus\nconfig: nope.yaml\npipelines: []\nparams: { as_of: \"{tomorrow}\" }\n";
        let raw: JobConfig = serde_yaml::from_str(text).unwrap();
        let err = compile(Path::new("jobs/bad.yaml"), text, raw)
            .unwrap_err()
            .to_string();
        for want in [
            "jobs/bad.yaml:1:",
            "not a cron expression",
            "jobs/bad.yaml:2:",
            "IANA",
            "config: no file",
            "at least one",
            "unknown placeholder",
        ] {
            assert!(err.contains(want), "{want} in\n{err}");
        }
    }
}
