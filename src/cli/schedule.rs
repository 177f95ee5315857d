//! `crm-marts schedule jobs/`: runs the jobs of `jobs/*.yaml` in the foreground.
//!
//! Each job is armed as a one-shot job of tokio-cron-scheduler at its next tick, and
//! re-armed at every tick. The next tick is computed with croner in the job's own time
//! zone every time, so a 02:30 job stays at 02:30 local time across daylight-saving
//! changes (the crate's time-zone cron jobs keep the UTC offset of the day they were
//! created).
//!
//! A tick runs the job's pipelines in order unless the previous run of the job is still
//! going (in this process: skipped with a log line; in another process: the job lock in
//! the store says so) or another scheduler claimed the tick. A failing or timed-out run
//! is logged and recorded; the next tick runs as usual. SIGTERM or SIGINT stops new
//! ticks and waits for running jobs to finish; a second signal aborts them (their marts
//! are not published, the previous ones stay live) after releasing their locks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, SubsecRound, Utc};
use tokio::signal::unix::{signal, SignalKind};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};

use crm_marts::config::job::job_files;
use crm_marts::config::{Diagnostics, Environment, Job};
use crm_marts::joblock::{claim_tick, JobLock, Refused};
use crm_marts::storage::Store;

use super::logging::LogFormat;

/// What the metrics and health endpoints report per job.
#[derive(Debug, Default, Clone)]
struct JobStatus {
    running: bool,
    next_tick: Option<DateTime<Utc>>,
    last_tick: Option<DateTime<Utc>>,
    last_status: Option<&'static str>,
    last_finished: Option<DateTime<Utc>>,
    last_duration: Option<Duration>,
    last_rows: u64,
    last_quarantined: u64,
    last_error: Option<String>,
    /// Each step of the last successful run.
    last_steps: Vec<StepFigure>,
    runs: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone)]
struct StepFigure {
    pipeline: String,
    step: String,
    seconds: f64,
    rows: Option<u64>,
}

struct Scheduler {
    jobs: Vec<Job>,
    holder: String,
    format: LogFormat,
    stopping: AtomicBool,
    running: Vec<AtomicBool>,
    status: Mutex<BTreeMap<String, JobStatus>>,
    /// Locks held by running jobs, released on an aborting second signal.
    held: Mutex<BTreeMap<String, (Store, JobLock)>>,
}

pub async fn run(
    paths: &[PathBuf],
    listen: Option<SocketAddr>,
    format: LogFormat,
) -> Result<ExitCode> {
    let files = job_files(paths)?;
    if files.is_empty() {
        return Err(super::UsageError(format!(
            "no job files (*.yaml) in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    let mut diags = Diagnostics::default();
    let mut jobs = Vec::new();
    for f in &files {
        match Job::load(f) {
            Ok(j) => jobs.push(j),
            Err(d) => diags.extend(d),
        }
    }
    let mut names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        diags.push(crm_marts::config::Diagnostic::new(
            &files[0],
            format!("two jobs are named `{}`", w[0]),
        ));
    }
    if !diags.is_empty() {
        return Err(crm_marts::run::RunError::Config(diags).into());
    }
    let holder = format!(
        "{}:{}:{}",
        hostname(),
        std::process::id(),
        Utc::now().timestamp_millis()
    );
    let sched = Arc::new(Scheduler {
        running: jobs.iter().map(|_| AtomicBool::new(false)).collect(),
        status: Mutex::new(
            jobs.iter()
                .map(|j| (j.name.clone(), JobStatus::default()))
                .collect(),
        ),
        jobs,
        holder,
        format,
        stopping: AtomicBool::new(false),
        held: Mutex::new(BTreeMap::new()),
    });

    if let Some(addr) = listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics endpoint on {addr}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(%bound, "metrics on http://{bound}/metrics, health on http://{bound}/health");
        tokio::spawn(serve(listener, sched.clone()));
    }

    let mut cron = JobScheduler::new()
        .await
        .context("starting the scheduler")?;
    for idx in 0..sched.jobs.len() {
        arm(cron.clone(), sched.clone(), idx, Utc::now()).await?;
        let j = &sched.jobs[idx];
        tracing::info!(job = %j.name, schedule = %j.schedule, time_zone = %j.time_zone, "job scheduled");
    }
    cron.start().await.context("starting the scheduler")?;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    sched.stopping.store(true, Ordering::SeqCst);
    let _ = cron.shutdown().await;
    let busy: Vec<&str> = busy_jobs(&sched);
    if busy.is_empty() {
        tracing::info!("stopping: no job is running");
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!(jobs = %busy.join(", "), "stopping: no new ticks; waiting for the running jobs to finish (signal again to abort them)");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if busy_jobs(&sched).is_empty() {
                    tracing::info!("stopped: the running jobs finished");
                    return Ok(ExitCode::SUCCESS);
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let held: Vec<(String, (Store, JobLock))> = std::mem::take(&mut *sched.held.lock().unwrap())
        .into_iter()
        .collect();
    for (job, (store, lock)) in held {
        if let Err(e) = lock.release(&store).await {
            tracing::warn!(job, error = %e, "could not release the job lock; it expires by itself");
        }
    }
    tracing::warn!(
        "aborted: the running jobs were stopped before publishing; the previous marts stay live"
    );
    Ok(ExitCode::from(130))
}

fn busy_jobs(s: &Scheduler) -> Vec<&str> {
    s.jobs
        .iter()
        .zip(&s.running)
        .filter(|(_, r)| r.load(Ordering::SeqCst))
        .map(|(j, _)| j.name.as_str())
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Arms job `idx` at its first tick after `after`.
fn arm(
    cron: JobScheduler,
    sched: Arc<Scheduler>,
    idx: usize,
    after: DateTime<Utc>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>> {
    Box::pin(async move {
        let job = &sched.jobs[idx];
        let Some(tick) = job.next_tick(after.trunc_subsecs(0)) else {
            tracing::warn!(job = %job.name, "the schedule has no further tick");
            return Ok(());
        };
        sched
            .status
            .lock()
            .unwrap()
            .entry(job.name.clone())
            .or_default()
            .next_tick = Some(tick);
        let wait = (tick - Utc::now()).to_std().unwrap_or_default();
        let s = sched.clone();
        let one_shot = CronJob::new_one_shot_at_instant_async(Instant::now() + wait, move |_id, cron| {
            let s = s.clone();
            Box::pin(async move {
                // The scheduler fires on whole seconds and may be early by a fraction of one.
                if let Ok(early) = (tick - Utc::now()).to_std() {
                    tokio::time::sleep(early).await;
                }
                if s.stopping.load(Ordering::SeqCst) {
                    return;
                }
                // Arm the next tick first, so a long run never delays it.
                if let Err(e) = arm(cron, s.clone(), idx, tick).await {
                    tracing::error!(job = %s.jobs[idx].name, error = %format!("{e:#}"), "could not schedule the next tick");
                }
                s.tick(idx, tick).await;
            })
        })
        .context("arming a tick")?;
        cron.add(one_shot).await.context("arming a tick")?;
        Ok(())
    })
}

impl Scheduler {
    fn record(&self, job: &str, f: impl FnOnce(&mut JobStatus)) {
        f(self
            .status
            .lock()
            .unwrap()
            .entry(job.to_string())
            .or_default());
    }

    async fn tick(self: &Arc<Self>, idx: usize, tick: DateTime<Utc>) {
        let job = &self.jobs[idx];
        let name = job.name.as_str();
        if self.running[idx].swap(true, Ordering::SeqCst) {
            tracing::warn!(job = name, %tick, "tick skipped: the previous run of this job is still going");
            self.record(name, |s| *s.runs.entry("skipped").or_default() += 1);
            return;
        }
        let outcome = self.tick_inner(job, tick).await;
        self.running[idx].store(false, Ordering::SeqCst);
        if let Err(e) = outcome {
            tracing::error!(job = name, %tick, error = %format!("{e:#}"), "job tick failed before running");
            self.record(name, |s| {
                s.last_status = Some("failed");
                s.last_error = Some(format!("{e:#}"));
                *s.runs.entry("failed").or_default() += 1;
            });
        }
    }

    async fn tick_inner(self: &Arc<Self>, job: &Job, tick: DateTime<Utc>) -> Result<()> {
        let name = job.name.as_str();
        let env = Environment::load(&job.config)?;
        let spec = env.stores.get(&job.lock_store).ok_or_else(|| {
            anyhow::anyhow!(
                "lock.store `{}` is not a store of {}",
                job.lock_store,
                job.config.display()
            )
        })?;
        let store = Store::open(spec)?;
        if !claim_tick(&store, name, tick, &self.holder).await? {
            tracing::info!(job = name, %tick, "tick claimed by another scheduler; not run here");
            return Ok(());
        }
        match crm_marts::joblock::prune_ticks(
            &store,
            name,
            tick - crm_marts::joblock::TICK_CLAIMS_KEPT,
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(job = name, removed = n, "old tick claims removed"),
            Err(e) => {
                tracing::warn!(job = name, error = %e, "old tick claims could not be removed")
            }
        }
        let expires = Utc::now()
            + chrono::Duration::from_std(job.lock_expiry).unwrap_or(chrono::Duration::hours(7));
        let lock = match JobLock::acquire(&store, name, &self.holder, tick, expires).await? {
            Ok(lock) => lock,
            Err(Refused::Held(other)) => {
                tracing::warn!(
                    job = name, %tick, holder = %other.holder, since = %other.acquired_at, until = %other.expires_at,
                    "tick skipped: the job is running in another scheduler"
                );
                self.record(name, |s| *s.runs.entry("skipped").or_default() += 1);
                return Ok(());
            }
        };
        self.held
            .lock()
            .unwrap()
            .insert(name.to_string(), (store.clone(), lock.clone()));
        self.record(name, |s| {
            s.running = true;
            s.last_tick = Some(tick);
        });
        tracing::info!(job = name, %tick, "job started");
        let started = Instant::now();
        let result = tokio::time::timeout(job.timeout, self.run_pipelines(job, &env, tick)).await;
        let (status, error, rows, quarantined, abandoned, steps) = match result {
            Ok(Ok(done)) => (
                "succeeded",
                None,
                done.rows,
                done.quarantined,
                done.abandoned,
                done.steps,
            ),
            Ok(Err(e)) => ("failed", Some(format!("{e:#}")), 0, 0, 0, Vec::new()),
            Err(_) => {
                let reason = format!("timed out after {} minutes", job.timeout.as_secs() / 60);
                // The cancelled run's manifest says so, instead of `running` for ever.
                for run_id in crm_marts::liveness::settle_dropped(&reason).await {
                    tracing::warn!(job = name, run_id = %run_id, "run cancelled by the job's timeout");
                }
                ("failed", Some(reason), 0, 0, 0, Vec::new())
            }
        };
        let elapsed = started.elapsed();
        match &error {
            None => {
                tracing::info!(job = name, %tick, seconds = elapsed.as_secs_f64(), rows, "job succeeded")
            }
            Some(e) => {
                tracing::error!(job = name, %tick, seconds = elapsed.as_secs_f64(), error = %e, "job failed; the next tick runs as scheduled")
            }
        }
        self.record(name, |s| {
            s.running = false;
            s.last_status = Some(status);
            s.last_finished = Some(Utc::now());
            s.last_duration = Some(elapsed);
            s.last_rows = rows;
            s.last_quarantined = quarantined;
            s.last_error = error;
            s.last_steps = steps;
            *s.runs.entry(status).or_default() += 1;
            // Earlier runs whose process died (a scheduler killed mid-run), found now.
            *s.runs.entry("abandoned").or_default() += abandoned;
        });
        self.held.lock().unwrap().remove(name);
        lock.release(&store).await?;
        Ok(())
    }

    /// Runs the job's pipelines in order, each with its retries.
    async fn run_pipelines(
        &self,
        job: &Job,
        env: &Environment,
        tick: DateTime<Utc>,
    ) -> Result<JobDone> {
        let params = job.params_at(tick);
        let (mut rows, mut quarantined, mut abandoned) = (0, 0, 0);
        let mut steps = Vec::new();
        for pipeline in &job.pipelines {
            let mut attempt = 0;
            loop {
                match super::run_pipeline(pipeline, env, &params, self.format).await {
                    Ok(m) => {
                        rows += m.outputs.iter().map(|o| o.rows).sum::<u64>();
                        quarantined += m.quarantined_rows;
                        abandoned += m.marked_abandoned.len() as u64;
                        steps.extend(m.steps.iter().map(|s| StepFigure {
                            pipeline: m.pipeline.clone(),
                            step: s.name.clone(),
                            seconds: s.duration_ms as f64 / 1000.0,
                            rows: s.rows,
                        }));
                        break;
                    }
                    Err(e) if !retryable(&e) => {
                        tracing::warn!(
                            job = %job.name, pipeline = %pipeline.display(), reason = %not_retried_because(&e),
                            "pipeline failed; not retrying"
                        );
                        return Err(e.context(format!("pipeline {}", pipeline.display())));
                    }
                    Err(e)
                        if attempt < job.retry_attempts
                            && !self.stopping.load(Ordering::SeqCst) =>
                    {
                        let wait = job.backoff * 2u32.saturating_pow(attempt);
                        attempt += 1;
                        tracing::warn!(
                            job = %job.name, pipeline = %pipeline.display(), attempt, of = job.retry_attempts,
                            wait_seconds = wait.as_secs(), error = %format!("{e:#}"), "pipeline failed; retrying"
                        );
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => return Err(e.context(format!("pipeline {}", pipeline.display()))),
                }
            }
        }
        Ok(JobDone {
            rows,
            quarantined,
            abandoned,
            steps,
        })
    }
}

/// What a job's successful run did, over all its pipelines.
struct JobDone {
    rows: u64,
    quarantined: u64,
    /// Earlier runs found abandoned and marked so.
    abandoned: u64,
    steps: Vec<StepFigure>,
}

/// Only a storage outage or exhausted resources can pass by themselves; a bad pipeline,
/// bad exports or a failing check fail the same way on every retry.
fn retryable(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<crm_marts::run::RunError>() {
        Some(run) => run.kind().retryable(),
        None => false,
    }
}

fn not_retried_because(e: &anyhow::Error) -> String {
    match e.downcast_ref::<crm_marts::run::RunError>() {
        Some(run) => format!("a {} failure: a retry would fail the same way", run.kind()),
        None => "the pipeline or its environment cannot be loaded: a retry would fail the same way"
            .into(),
    }
}

/// Serves `GET /metrics` (OpenMetrics text, which Prometheus scrapes) and `GET /health`
/// (JSON).
async fn serve(listener: tokio::net::TcpListener, sched: Arc<Scheduler>) {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(s): axum::extract::State<Arc<Scheduler>>| async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics(&s),
                    )
                },
            ),
        )
        .route(
            "/health",
            get(
                |axum::extract::State(s): axum::extract::State<Arc<Scheduler>>| async move {
                    ([(header::CONTENT_TYPE, "application/json")], health(&s))
                },
            ),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /metrics or /health\n",
            )
        })
        .with_state(sched);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}

type Labels = Vec<(&'static str, String)>;

/// The registry of one scrape, filled from the jobs' status.
fn metrics(sched: &Scheduler) -> String {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use std::sync::atomic::AtomicU64;
    type FloatGauge = Gauge<f64, AtomicU64>;

    let status = sched.status.lock().unwrap();
    let mut registry = prometheus_client::registry::Registry::with_prefix("crm_marts");
    let job = |name: &str| -> Labels { vec![("job", name.to_string())] };
    let gauge = |registry: &mut prometheus_client::registry::Registry,
                 name: &str,
                 help: &str,
                 value: &dyn Fn(&JobStatus) -> Option<i64>| {
        let family = Family::<Labels, Gauge>::default();
        for (name, s) in status.iter() {
            if let Some(v) = value(s) {
                family.get_or_create(&job(name)).set(v);
            }
        }
        registry.register(name, help, family);
    };
    gauge(
        &mut registry,
        "job_running",
        "1 while a run of the job is going.",
        &|s| Some(i64::from(s.running)),
    );
    gauge(
        &mut registry,
        "job_last_run_success",
        "1 if the last finished run succeeded, 0 if it failed.",
        &|s| s.last_status.map(|st| i64::from(st == "succeeded")),
    );
    gauge(
        &mut registry,
        "job_last_run_finished_timestamp_seconds",
        "When the last run finished (Unix time).",
        &|s| s.last_finished.map(|t| t.timestamp()),
    );
    gauge(
        &mut registry,
        "job_last_run_rows_written",
        "Rows of the marts the last run published.",
        &|s| s.last_status.map(|_| s.last_rows as i64),
    );
    gauge(
        &mut registry,
        "job_last_run_quarantined_rows",
        "Rows the last run quarantined.",
        &|s| s.last_status.map(|_| s.last_quarantined as i64),
    );
    gauge(
        &mut registry,
        "job_next_tick_timestamp_seconds",
        "When the job runs next (Unix time).",
        &|s| s.next_tick.map(|t| t.timestamp()),
    );

    let duration = Family::<Labels, FloatGauge>::default();
    let step_seconds = Family::<Labels, FloatGauge>::default();
    let step_rows = Family::<Labels, Gauge>::default();
    let runs = Family::<Labels, Counter>::default();
    for (name, s) in status.iter() {
        if let Some(d) = s.last_duration {
            duration.get_or_create(&job(name)).set(d.as_secs_f64());
        }
        for step in &s.last_steps {
            let labels: Labels = vec![
                ("job", name.clone()),
                ("pipeline", step.pipeline.clone()),
                ("step", step.step.clone()),
            ];
            step_seconds.get_or_create(&labels).set(step.seconds);
            if let Some(rows) = step.rows {
                step_rows.get_or_create(&labels).set(rows as i64);
            }
        }
        for outcome in ["succeeded", "failed", "skipped", "abandoned"] {
            let labels: Labels = vec![("job", name.clone()), ("outcome", outcome.to_string())];
            runs.get_or_create(&labels)
                .inc_by(s.runs.get(outcome).copied().unwrap_or(0));
        }
    }
    registry.register(
        "job_last_run_duration_seconds",
        "Duration of the last run.",
        duration,
    );
    registry.register(
        "job_last_run_step_duration_seconds",
        "Duration of each step of the last successful run.",
        step_seconds,
    );
    registry.register(
        "job_last_run_step_rows",
        "Rows each step of the last successful run wrote (tables and marts; views have none).",
        step_rows,
    );
    registry.register(
        "job_runs",
        "Ticks of the job by outcome (abandoned: runs whose process died, found by a later run).",
        runs,
    );
    drop(status);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

fn health(sched: &Scheduler) -> String {
    let status = sched.status.lock().unwrap();
    let jobs: serde_json::Map<String, serde_json::Value> = status
        .iter()
        .map(|(job, s)| {
            (
                job.clone(),
                serde_json::json!({
                    "running": s.running,
                    "last_tick": s.last_tick,
                    "last_status": s.last_status,
                    "last_finished": s.last_finished,
                    "last_duration_seconds": s.last_duration.map(|d| d.as_secs_f64()),
                    "last_rows_written": s.last_rows,
                    "last_quarantined_rows": s.last_quarantined,
                    "last_error": s.last_error,
                    "last_steps": s.last_steps.iter().map(|st| serde_json::json!({
                        "pipeline": st.pipeline, "step": st.step, "seconds": st.seconds, "rows": st.rows,
                    })).collect::<Vec<_>>(),
                    "next_tick": s.next_tick,
                }),
            )
        })
        .collect();
    let stopping = sched.stopping.load(Ordering::SeqCst);
    serde_json::json!({ "status": if stopping { "stopping" } else { "ok" }, "jobs": jobs })
        .to_string()
        + "\n"
}
