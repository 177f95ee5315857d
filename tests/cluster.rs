//! The customer-marts pipeline on an Apache DataFusion Ballista cluster of real processes:
//! one scheduler and two executors of the `crm-marts` binary on 127.0.0.1, with the marts
//! (and so the run's shared scratch tables) on the suite's S3 server. Every mart must equal
//! the local engine's on the same exports, bit for bit and in any row order. Then: an
//! executor killed in the middle of a run, a scheduler that does not answer, and an
//! executor that has no hash key.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use common::servers::{make, servers, unique_name};

const HASH_KEY: &str = "cluster-test-hash-key-3f9c1a";
const AS_OF: &str = "2026-11-22";

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_crm-marts")
}

/// A process of the binary that is killed when dropped; what it logs is kept.
struct Process {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    fn spawn(name: &str, args: &[&str], vars: &HashMap<String, String>) -> Self {
        let mut child = Command::new(binary())
            .args(args)
            .current_dir(common::repo())
            .envs(vars)
            .env("CRM_MARTS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the process to exit and returns its exit code.
    fn wait(&mut self, timeout: Duration) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(200));
                return status.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < timeout,
                "{} did not finish within {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port no process listens on, and that no other test of this binary was given: the
/// tests start their clusters at the same time, and the system may hand out a port it
/// just took back.
fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// GET `path` from 127.0.0.1:`port` (HTTP/1.0, so the body is not chunked).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then(|| body.to_string())
        .filter(|_| head.contains(" 200"))
}

/// A scheduler and executors of the binary on free ports.
struct Cluster {
    port: u16,
    scheduler: Process,
    executors: Vec<Process>,
    _work: tempfile::TempDir,
}

impl Cluster {
    fn start(config: &Path, executors: usize, vars: &HashMap<String, String>) -> Self {
        let work = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = config.to_string_lossy().into_owned();
        let bind = format!("127.0.0.1:{port}");
        let scheduler = Process::spawn(
            "scheduler",
            &["scheduler", "--bind", &bind, "--config", &config],
            vars,
        );
        let mut cluster = Self {
            port,
            scheduler,
            executors: Vec::new(),
            _work: work,
        };
        for i in 0..executors {
            let (flight, grpc) = (free_port(), free_port());
            let dir = cluster._work.path().join(format!("executor-{i}"));
            let args = [
                "executor",
                "--scheduler",
                &bind,
                "--bind",
                &format!("127.0.0.1:{flight}"),
                "--grpc-port",
                &grpc.to_string(),
                "--work-dir",
                &dir.to_string_lossy(),
                "--memory-limit",
                "1GiB",
                "--vcores",
                "2",
                "--config",
                &config,
            ]
            .map(str::to_string);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cluster
                .executors
                .push(Process::spawn(&format!("executor {i}"), &args, vars));
        }
        cluster.wait_for_executors(executors);
        cluster
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    fn wait_for_executors(&self, n: usize) {
        let started = Instant::now();
        loop {
            if let Some(body) = http_get(self.port, "/api/executors") {
                let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if list.as_array().is_some_and(|a| a.len() >= n) {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{n} executors did not register within 60 s\n--- scheduler\n{}\n--- executors\n{}",
                self.scheduler.log(),
                self.executors
                    .iter()
                    .map(Process::log)
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Everything the cluster's processes logged.
    fn logs(&self) -> String {
        std::iter::once(&self.scheduler)
            .chain(&self.executors)
            .map(|p| format!("--- {}\n{}", p.name, p.log()))
            .collect()
    }
}

/// The project folder: generated exports, environment files, and the S3 bucket of the
/// cluster's marts.
struct Setup {
    dir: tempfile::TempDir,
    bucket: String,
    vars: HashMap<String, String>,
}

impl Setup {
    fn new(test: &str, customers: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bucket = unique_name(test);
        make("make-bucket", "--s3-endpoint", &servers().s3, &bucket);
        let mut vars = HashMap::new();
        vars.insert("TEST_S3_ENDPOINT".to_string(), servers().s3.clone());
        vars.insert("TEST_AWS_KEY_ID".to_string(), "testing-key-id".to_string());
        vars.insert(
            "TEST_AWS_SECRET".to_string(),
            "s3-secret-that-must-not-leak".to_string(),
        );
        let exports = dir.path().join("exports");
        let out = Command::new(binary())
            .args([
                "generate",
                "--customers",
                &customers.to_string(),
                "--seed",
                "7",
                "--as-of",
                AS_OF,
                "--out",
            ])
            .arg(&exports)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "generate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The shipped pipeline, its clickstream read incrementally (a run parses only new
        // or changed files and reuses the staged copies of the others).
        let text =
            std::fs::read_to_string(common::repo().join("pipelines/customer_marts.yaml")).unwrap();
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let map = doc.as_mapping_mut().unwrap();
        map.insert(
            "sql_dir".into(),
            common::repo()
                .join("sql")
                .to_string_lossy()
                .into_owned()
                .into(),
        );
        let clickstream = map
            .get_mut("sources")
            .unwrap()
            .get_mut("web_clickstream")
            .unwrap()
            .as_mapping_mut()
            .unwrap();
        clickstream.insert(
            "incremental".into(),
            serde_yaml::from_str("{ late_window_hours: 0 }").unwrap(),
        );
        std::fs::write(
            dir.path().join("customer_marts.yaml"),
            serde_yaml::to_string(&doc).unwrap(),
        )
        .unwrap();
        Self { dir, bucket, vars }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// An environment file: exports in the local folder every process of this machine
    /// reads, marts in a local folder or in the bucket, the engine, and the hash key.
    fn env_file(
        &self,
        name: &str,
        marts_on_s3: bool,
        execution: &str,
        hash_key: Option<&str>,
    ) -> PathBuf {
        let marts = if marts_on_s3 {
            format!(
                "    url: s3://{}/marts\n    options:\n      aws_endpoint: ${{TEST_S3_ENDPOINT}}\n      aws_allow_http: \"true\"\n      aws_region: us-east-1\n      aws_access_key_id: ${{TEST_AWS_KEY_ID}}\n      aws_secret_access_key: ${{TEST_AWS_SECRET}}\n      aws_copy_if_not_exists: multipart\n",
                self.bucket
            )
        } else {
            format!("    url: {}\n", self.path("local-marts").display())
        };
        let privacy = hash_key
            .map(|k| format!("privacy:\n  hash_key: {k}\n"))
            .unwrap_or_default();
        let text = format!(
            "stores:\n  exports:\n    url: {}\n  marts:\n{marts}execution:\n  memory_limit: 2GiB\n  target_partitions: 2\n  spill_dir: {}\n{execution}{privacy}",
            self.path("exports").display(),
            self.path("spill").display()
        );
        let file = self.path(&format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        file
    }

    fn run(&self, config: &Path, extra: &[&str]) -> Process {
        let config = config.to_string_lossy().into_owned();
        let pipeline = self
            .path("customer_marts.yaml")
            .to_string_lossy()
            .into_owned();
        let mut args = vec!["run", &pipeline, "--config", &config, "--as-of", AS_OF];
        args.extend_from_slice(extra);
        Process::spawn("run", &args, &self.vars)
    }

    fn s3(&self) -> Arc<dyn ObjectStore> {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&servers().s3)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing-key-id")
            .with_secret_access_key("s3-secret-that-must-not-leak")
            .build()
            .unwrap();
        Arc::new(store)
    }

    /// The live marts of the bucket, copied to a local folder to be read like any.
    fn download_marts(&self, into: &str) -> PathBuf {
        let local = self.path(into);
        let _ = std::fs::remove_dir_all(&local);
        std::fs::create_dir_all(&local).unwrap();
        let store = self.s3();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let prefix = object_store::path::Path::from("marts");
            let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
            for meta in objects {
                let rel = meta
                    .location
                    .as_ref()
                    .trim_start_matches("marts/")
                    .to_string();
                if rel.starts_with('_') {
                    continue;
                }
                let bytes = store
                    .get(&meta.location)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let path = local.join(&rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
        });
        local
    }

    /// Object names under `prefix` of the bucket.
    fn objects(&self, prefix: &str) -> Vec<String> {
        let store = self.s3();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let prefix = object_store::path::Path::from(prefix);
            let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
            objects
                .into_iter()
                .map(|m| m.location.to_string())
                .collect()
        })
    }

    fn manifest(&self, run_id: &str) -> serde_json::Value {
        let store = self.s3();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let path = object_store::path::Path::from(format!("marts/_runs/{run_id}.json"));
            let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
            serde_json::from_slice(&bytes).unwrap()
        })
    }
}

fn run_id_of(log: &str) -> String {
    let at = log
        .find("run_id=")
        .unwrap_or_else(|| panic!("no run id in\n{log}"));
    log[at + 7..]
        .split(|c: char| c.is_whitespace() || c == ',')
        .next()
        .unwrap()
        .trim_matches('"')
        .to_string()
}

#[test]
fn the_pipeline_on_a_cluster_gives_the_local_engines_marts_and_survives_a_lost_executor() {
    let setup = Setup::new("cluster-marts", 400);
    // The local engine's marts: the reference.
    let local_env = setup.env_file("local", false, "", Some(HASH_KEY));
    let mut local = setup.run(&local_env, &[]);
    assert_eq!(
        local.wait(Duration::from_secs(600)),
        0,
        "local run:\n{}",
        local.log()
    );
    let expected = common::mart_contents(&setup.path("local-marts"));
    assert!(expected.len() >= 10, "local marts: {expected:?}");

    // The cluster, configured from one environment file; the client names the engine.
    let cluster_env = setup.env_file("cluster", true, "", Some(HASH_KEY));
    let cluster = Cluster::start(&cluster_env, 2, &setup.vars);
    let mut run = setup.run(
        &cluster_env,
        &["--engine", "ballista", "--scheduler", &cluster.url()],
    );
    let code = run.wait(Duration::from_secs(900));
    assert_eq!(code, 0, "cluster run:\n{}\n{}", run.log(), cluster.logs());
    let got = common::mart_contents(&setup.download_marts("cluster-marts"));
    let differences = common::mart_differences(&expected, &got);
    assert!(
        differences.is_empty(),
        "cluster marts differ from the local engine's:\n{}",
        differences.join("\n")
    );

    // The manifest says which engine ran; the shared scratch tables are gone.
    let run_id = run_id_of(&run.log());
    let manifest = setup.manifest(&run_id);
    assert_eq!(
        manifest["engine"],
        format!("ballista {}", cluster.url()),
        "{manifest}"
    );
    // Identity blocked, compared and scored its candidate pairs as cluster work.
    assert!(
        manifest
            .to_string()
            .contains(r#""pairs_compared_in":"engine""#),
        "{manifest}"
    );
    assert!(
        setup
            .objects(&format!("marts/_scratch/{run_id}"))
            .is_empty(),
        "scratch left behind"
    );
    // The executors really ran the tasks (both took part), and the hash key appeared in
    // no log line and no job's settings.
    for (i, e) in cluster.executors.iter().enumerate() {
        let log = e.log();
        assert!(
            log.contains("Execute task") || log.contains("Received task"),
            "executor {i} ran no task:\n{log}"
        );
    }
    assert!(
        !cluster.logs().contains(HASH_KEY) && !run.log().contains(HASH_KEY),
        "the hash key was logged"
    );
    let jobs: serde_json::Value =
        serde_json::from_str(&http_get(cluster.port, "/api/jobs").expect("jobs")).unwrap();
    let jobs = jobs.as_array().expect("job list");
    assert!(
        jobs.len() > 10,
        "only {} jobs ran on the cluster",
        jobs.len()
    );
    let mut settings_read = 0;
    for job in jobs.iter().take(20) {
        let id = job["job_id"]
            .as_str()
            .or_else(|| job["id"].as_str())
            .unwrap_or_default();
        if let Some(config) = http_get(cluster.port, &format!("/api/job/{id}/config")) {
            assert!(
                !config.contains(HASH_KEY),
                "job {id} carries the hash key in its settings"
            );
            settings_read += 1;
        }
    }
    assert!(
        settings_read > 0,
        "no job's settings could be read: {jobs:?}"
    );
    let runs = Command::new(binary())
        .args(["runs", "--config"])
        .arg(&cluster_env)
        .envs(&setup.vars)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&runs.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.contains(&run_id) && l.contains("ballista")),
        "{listing}"
    );

    // An executor killed in the middle of a run: the run finishes on the other executor or
    // fails naming the cause. A second run builds on the first (stable customer keys), so
    // its reference is a second local run; a failed one leaves the first run's marts live.
    // Late clickstream events arrive (a re-export of some events among them): the next runs
    // parse the new file alone and reuse the staged copy of the first.
    let first = std::fs::read_to_string(setup.path("exports/web/clickstream.ndjson")).unwrap();
    let late: String = first.lines().take(200).map(|l| format!("{l}\n")).collect();
    std::fs::write(setup.path("exports/web/clickstream-late.ndjson"), late).unwrap();
    let mut local_again = setup.run(&local_env, &[]);
    assert_eq!(
        local_again.wait(Duration::from_secs(600)),
        0,
        "second local run:\n{}",
        local_again.log()
    );
    let expected_again = common::mart_contents(&setup.path("local-marts"));
    let mut cluster = cluster;
    let mut second = setup.run(
        &cluster_env,
        &["--engine", "ballista", "--scheduler", &cluster.url()],
    );
    let started = Instant::now();
    while !second.log().contains("step finished") {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the second run did not get to its steps:\n{}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.executors[1].kill();
    let code = second.wait(Duration::from_secs(900));
    let log = second.log();
    let live = common::mart_contents(&setup.download_marts("after-kill"));
    let local_manifest = common::manifest_files(&setup.path("local-marts/_runs"))
        .into_iter()
        .max()
        .unwrap();
    let local_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local_manifest).unwrap()).unwrap();
    assert_eq!(
        clickstream_reads(&local_manifest),
        [
            ("clickstream-late.ndjson".to_string(), false),
            ("clickstream.ndjson".to_string(), true)
        ]
    );
    let differences = if code == 0 {
        assert_eq!(
            clickstream_reads(&setup.manifest(&run_id_of(&log))),
            [
                ("clickstream-late.ndjson".to_string(), false),
                ("clickstream.ndjson".to_string(), true)
            ],
            "the cluster run parsed the clickstream files again"
        );
        common::mart_differences(&expected_again, &live)
    } else {
        assert_eq!(code, 1, "{log}");
        assert!(
            log.contains("run failed") && log.contains("error"),
            "the failure names no cause:\n{log}"
        );
        common::mart_differences(&expected, &live)
    };
    assert!(
        differences.is_empty(),
        "after the lost executor (run exit {code}) the live marts differ:\n{}",
        differences.join("\n")
    );
    eprintln!("the run that lost an executor exited with {code}");
}

/// The clickstream's files of a run, sorted, each with whether its staged copy was reused.
fn clickstream_reads(manifest: &serde_json::Value) -> Vec<(String, bool)> {
    let input = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "web_clickstream")
        .expect("web_clickstream");
    let mut files: Vec<(String, bool)> = input["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                f["reused"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_scheduler_that_does_not_answer_fails_the_run_naming_it() {
    let setup = Setup::new("cluster-down", 50);
    let port = free_port();
    let env = setup.env_file(
        "down",
        true,
        &format!("  engine: ballista\n  scheduler: df://127.0.0.1:{port}\n"),
        Some(HASH_KEY),
    );
    let mut run = setup.run(&env, &[]);
    let code = run.wait(Duration::from_secs(120));
    let log = run.log();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&format!("df://127.0.0.1:{port}")) && log.contains("does not answer"),
        "{log}"
    );
    assert!(
        setup.objects("marts").iter().all(|o| o.contains("/_runs/")),
        "something was published: {:?}",
        setup.objects("marts")
    );
}

/// A cluster run keeps its tables in the publish store, so one in this process's memory is
/// refused before the scheduler is asked.
#[test]
fn a_cluster_run_refuses_a_publish_store_in_memory() {
    let setup = Setup::new("cluster-memory", 20);
    let port = free_port();
    let env = setup.env_file(
        "memory",
        true,
        &format!("  engine: ballista\n  scheduler: df://127.0.0.1:{port}\n"),
        Some(HASH_KEY),
    );
    let text = std::fs::read_to_string(&env).unwrap();
    let marts_start = text.find("  marts:\n").unwrap();
    let marts_end = text.find("execution:").unwrap();
    std::fs::write(
        &env,
        format!(
            "{}  marts:\n    url: memory:///\n{}",
            &text[..marts_start],
            &text[marts_end..]
        ),
    )
    .unwrap();
    let mut run = setup.run(&env, &[]);
    let code = run.wait(Duration::from_secs(120));
    let log = run.log();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("memory://")
            && log.contains("cannot read")
            && !log.contains("does not answer"),
        "{log}"
    );
}

#[test]
fn an_executor_without_the_hash_key_or_with_another_fails_the_run_instead_of_hashing_wrongly() {
    for (name, executor_key, expected) in [
        ("keyless", None, "no key configured"),
        (
            "other-key",
            Some("another-key-7d2e"),
            "differs from the client's",
        ),
    ] {
        let setup = Setup::new(&format!("cluster-{name}"), 80);
        let client_env = setup.env_file("client", true, "", Some(HASH_KEY));
        let executor_env = setup.env_file(name, true, "", executor_key);
        let cluster = Cluster::start(&executor_env, 1, &setup.vars);
        let mut run = setup.run(&client_env, &["--scheduler", &cluster.url()]);
        let code = run.wait(Duration::from_secs(600));
        let log = run.log();
        assert_eq!(code, 1, "{name}: {log}\n{}", cluster.logs());
        assert!(
            log.contains("keyed_hash") && log.contains(expected),
            "{name}: {log}"
        );
        // A configuration failure: running it again would not help.
        let manifest = setup.manifest(&run_id_of(&log));
        assert_eq!(manifest["error_kind"], "config", "{name}: {manifest}");
        assert!(
            !setup
                .objects("marts")
                .iter()
                .any(|o| o.ends_with("mart_customer.parquet")),
            "{name}: mart_customer was published"
        );
    }
}
