//! `crm-marts schedule`: real scheduler processes on a job that ticks every two seconds.
//! They run the job and serve metrics, stop cleanly on SIGTERM, survive a failing job,
//! share ticks so that two schedulers run each tick once, and respect a live job lock
//! while taking over an expired one.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Project;

const JOB: &str = r#"name: mini
schedule: "*/2 * * * * *"
time_zone: Europe/Copenhagen
config: config/env.yaml
pipelines: [pipelines/mini.yaml]
params: { as_of: "{yesterday}" }
timeout_minutes: 5
"#;

struct Scheduler {
    child: Child,
    log: std::path::PathBuf,
}

impl Scheduler {
    fn start(p: &Project, name: &str) -> Self {
        let log = p.path(&format!("{name}.log"));
        // Port 0: the system picks a free port and the scheduler logs it, so parallel tests
        // never race for one.
        let child = Command::new(env!("CARGO_BIN_EXE_crm-marts"))
            .args(["schedule", "jobs", "--listen", "127.0.0.1:0"])
            .current_dir(p.path(""))
            .env("CRM_MARTS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Scheduler { child, log }
    }

    /// The port of the metrics endpoint, from the scheduler's log.
    fn port(&self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if let Some(rest) = log.split("metrics on http://127.0.0.1:").nth(1) {
                return rest.split('/').next().unwrap().parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no metrics address in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get(&self, path: &str) -> String {
        let fail = |e: std::io::Error| -> ! {
            panic!("GET {path}: {e}\n--- scheduler log\n{}", self.log())
        };
        let mut s = TcpStream::connect(("127.0.0.1", self.port())).unwrap_or_else(|e| fail(e));
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap_or_else(|e| fail(e));
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap_or_else(|e| fail(e));
        out
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and returns the exit code.
    fn stop(mut self) -> (i32, String) {
        // The shell's kill builtin, so no procps is needed.
        Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "scheduler did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn manifests(p: &Project) -> Vec<serde_json::Value> {
    let dir = p.path("marts/_runs");
    if !dir.exists() {
        return Vec::new();
    }
    // Manifests only: a running run's heartbeat (`<run_id>.alive`) is JSON too.
    common::walk(&dir)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .filter_map(|f| serde_json::from_slice::<serde_json::Value>(&std::fs::read(f).ok()?).ok())
        .filter(|m| m["status"] != "running")
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn project(job: &str) -> Project {
    let p = Project::from_fixture("mini");
    p.write("jobs/mini.yaml", job);
    p
}

#[test]
fn the_scheduler_runs_ticks_serves_metrics_and_stops_on_sigterm() {
    let p = project(JOB);
    let s = Scheduler::start(&p, "a");
    wait_for("two succeeded runs", Duration::from_secs(40), || {
        manifests(&p)
            .iter()
            .filter(|m| m["status"] == "succeeded")
            .count()
            >= 2
    });
    let runs = manifests(&p);
    // as_of is the day before the tick in Copenhagen.
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Copenhagen)
        .date_naive();
    let yesterday = (today - chrono::Duration::days(1)).to_string();
    let before = (today - chrono::Duration::days(2)).to_string();
    assert!(
        runs.iter().all(|m| [yesterday.as_str(), before.as_str()]
            .contains(&m["parameters"]["as_of"].as_str().unwrap())),
        "{runs:?}"
    );

    let metrics = s.get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("crm_marts_job_last_run_success{job=\"mini\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crm_marts_job_runs_total{job=\"mini\",outcome=\"succeeded\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crm_marts_job_last_run_rows_written{job=\"mini\"}"),
        "{metrics}"
    );
    // Per step of the last run: the mart's rows equal what the run wrote.
    assert!(metrics.contains("crm_marts_job_last_run_step_duration_seconds{job=\"mini\",pipeline=\"mini\",step=\"mart_totals\"}"), "{metrics}");
    let written = metric_value(
        &metrics,
        "crm_marts_job_last_run_rows_written{job=\"mini\"}",
    );
    assert_eq!(
        metric_value(
            &metrics,
            "crm_marts_job_last_run_step_rows{job=\"mini\",pipeline=\"mini\",step=\"mart_totals\"}"
        ),
        written
    );
    assert!(
        metrics.contains("# TYPE crm_marts_job_runs counter")
            && metrics.trim_end().ends_with("# EOF"),
        "{metrics}"
    );
    let health = s.get("/health");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("\"status\":\"ok\""),
        "{health}"
    );
    assert!(s.get("/nope").starts_with("HTTP/1.1 404"));

    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stopp"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn a_failing_job_is_reported_and_the_next_tick_still_runs() {
    let p = project(&format!(
        "{JOB}retries: {{ attempts: 1, backoff_seconds: 0 }}\n"
    ));
    let sql = std::fs::read_to_string(p.path("sql/staging/stg_orders.sql")).unwrap();
    p.write(
        "sql/staging/stg_orders.sql",
        &sql.replacen("SELECT", "SELECT no_such_column,", 1),
    );
    let s = Scheduler::start(&p, "a");
    // A configuration error fails the same way on every retry: one run per tick.
    wait_for("two failed runs", Duration::from_secs(40), || {
        manifests(&p)
            .iter()
            .filter(|m| m["status"] == "failed")
            .count()
            >= 2
    });
    assert!(
        manifests(&p).iter().all(|m| m["error_kind"] == "config"),
        "{:?}",
        manifests(&p)
    );
    let metrics = s.get("/metrics");
    assert!(
        metrics.contains("crm_marts_job_last_run_success{job=\"mini\"} 0"),
        "{metrics}"
    );
    // Fixed, the next tick succeeds: the scheduler survived the failures.
    p.write("sql/staging/stg_orders.sql", &sql);
    wait_for("a succeeded run", Duration::from_secs(40), || {
        manifests(&p).iter().any(|m| m["status"] == "succeeded")
    });
    let (code, log) = s.stop();
    assert_eq!(code, 0);
    assert!(
        log.contains("not retrying") && log.contains("a config failure"),
        "{log}"
    );
    assert!(!log.contains("pipeline failed; retrying"), "{log}");
    assert!(log.contains("the next tick runs as scheduled"), "{log}");
}

#[test]
fn two_schedulers_on_the_same_jobs_run_each_tick_once() {
    let p = project(JOB);
    let a = Scheduler::start(&p, "a");
    let b = Scheduler::start(&p, "b");
    wait_for("four ticks", Duration::from_secs(60), || {
        std::fs::read_dir(p.path("marts/_jobs/mini/ticks"))
            .map(|d| d.count() >= 4)
            .unwrap_or(false)
    });
    let (code_a, log_a) = a.stop();
    let (code_b, log_b) = b.stop();
    assert_eq!((code_a, code_b), (0, 0));
    let ticks = std::fs::read_dir(p.path("marts/_jobs/mini/ticks"))
        .unwrap()
        .count();
    let runs = manifests(&p);
    assert!(runs.iter().all(|m| m["status"] == "succeeded"), "{runs:?}");
    // A claimed tick runs, unless the run of the previous tick still holds the job lock in
    // the other scheduler (a slow machine): then it is skipped, never run twice.
    let logs = format!("{log_a}{log_b}");
    let skipped = logs
        .matches("tick skipped: the job is running in another scheduler")
        .count();
    assert_eq!(
        runs.len() + skipped,
        ticks,
        "one run per claimed tick\n--- a\n{log_a}\n--- b\n{log_b}"
    );
    assert!(runs.len() >= 2, "{runs:?}");
    // Both fired at every tick; the one that lost the claim says so.
    assert!(
        format!("{log_a}{log_b}").contains("tick claimed by another scheduler"),
        "{log_a}\n{log_b}"
    );
}

#[test]
fn a_live_lock_of_another_scheduler_is_respected_and_an_expired_one_taken_over() {
    let p = project(JOB);
    let lock = |expires: chrono::DateTime<chrono::Utc>| {
        serde_json::json!({
            "job": "mini", "holder": "other-host:42:1", "tick": "2026-11-25T01:30:00Z",
            "acquired_at": "2026-11-25T01:30:00Z", "expires_at": expires,
        })
        .to_string()
    };
    p.write(
        "marts/_jobs/mini/lock.json",
        &lock(chrono::Utc::now() + chrono::Duration::hours(1)),
    );
    let s = Scheduler::start(&p, "a");
    wait_for("a skipped tick", Duration::from_secs(30), || {
        s.log().contains("the job is running in another scheduler")
    });
    assert!(
        manifests(&p).is_empty(),
        "nothing ran while the other scheduler holds the lock"
    );
    assert!(s.log().contains("other-host:42:1"));

    // The holder crashed: its lock expires and the next tick takes it over.
    p.write(
        "marts/_jobs/mini/lock.json",
        &lock(chrono::Utc::now() - chrono::Duration::minutes(1)),
    );
    wait_for("a run after the takeover", Duration::from_secs(30), || {
        manifests(&p).iter().any(|m| m["status"] == "succeeded")
    });
    let (code, log) = s.stop();
    assert_eq!(code, 0);
    assert!(log.contains("taking over an expired job lock"), "{log}");
    assert!(
        !p.path("marts/_jobs/mini/lock.json").exists(),
        "released after the run"
    );
}

#[test]
fn bad_job_files_are_reported_with_their_lines() {
    let p = project("name: mini\nschedule: \"every night\"\ntime_zone: Europe/Atlantis\nconfig: config/env.yaml\npipelines: [pipelines/nope.yaml]\n");
    let out = p.run(&["validate", "jobs"]).expect_code(2);
    let err = out.stderr();
    assert!(
        err.contains("jobs/mini.yaml:2:") && err.contains("not a cron expression"),
        "{err}"
    );
    assert!(
        err.contains("jobs/mini.yaml:3:") && err.contains("IANA"),
        "{err}"
    );
    assert!(err.contains("no file pipelines/nope.yaml"), "{err}");
    p.run(&["schedule", "jobs", "--listen", "off"])
        .expect_code(2);

    let p = project(
        &JOB.replace("{yesterday}", "{yesterday}")
            .replace("params: {", "params: { region: north,"),
    );
    let err = p.run(&["validate", "jobs"]).expect_code(2).stderr();
    assert!(
        err.contains("params.region: pipeline pipelines/mini.yaml has no such parameter"),
        "{err}"
    );
    let ok = project(JOB)
        .run(&["validate", "jobs", "config/env.yaml"])
        .expect_code(0);
    assert!(ok.stdout().contains("1 job"), "{}", ok.stdout());
}

/// The value of the sample `series` (name and labels) in an exposition.
fn metric_value(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[series.len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}
