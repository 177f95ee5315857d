//! One storage test suite, run against every backend: a local folder, memory, S3 (moto),
//! Azure Blob (Azurite) and Google Cloud Storage (fake-gcs-server, behind the script's
//! adapter for the XML API uploads it lacks). The servers are real and listen on 127.0.0.1:
//! `.ci/run` starts them and exports their endpoints, or the suite starts its own
//! (`tests/servers/storage_servers.py`). Each test makes its own bucket or container, and
//! credentials reach the stores only through `${ENV}` references in the environment file.
//!
//! On S3 the client also goes through a fault proxy that the tests switch to dropping
//! connections, answering 500 or answering slowly, to check that transient errors are
//! retried and that an outage mid-write fails the run and publishes nothing.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::servers::{gcs_emulator_key, make, servers, unique_name};
use common::Project;
use crm_marts::config::environment::{compile, EnvironmentConfig};
use crm_marts::config::{Environment, Pipeline};
use crm_marts::joblock::{claim_tick, JobLock, Refused};
use crm_marts::run::{self, NoProgress, RunError};
use crm_marts::storage::Stores;

/// Azurite's well-known development account and key (public, documented by Microsoft).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Local,
    Memory,
    S3,
    Azure,
    Gcs,
}

/// One backend for one test: an environment file naming two stores (`exports`, `marts`)
/// and the variables its `${ENV}` references resolve to.
struct Backend {
    project: Project,
    env_text: String,
    vars: HashMap<String, String>,
}

impl Backend {
    fn new(kind: Kind, test: &str) -> Self {
        Self::with(kind, test, None, "")
    }

    /// `endpoint` replaces the S3 endpoint (the fault proxy); `extra` is appended to every
    /// store's options and settings.
    fn with(kind: Kind, test: &str, endpoint: Option<&str>, extra: &str) -> Self {
        let project = Project::from_fixture("mini");
        let name = unique_name(test);
        let mut vars = HashMap::new();
        let store = |url: &str, options: &str| format!("    url: {url}\n{options}{extra}");
        let stores = match kind {
            Kind::Local => {
                let root = project.path("remote");
                format!(
                    "  exports:\n{}  marts:\n{}",
                    store(&format!("{}/exports", root.display()), ""),
                    store(&format!("{}/marts", root.display()), "")
                )
            }
            Kind::Memory => format!(
                "  exports:\n{}  marts:\n{}",
                store("memory://exports/x", ""),
                store("memory://marts/y", "")
            ),
            Kind::S3 => {
                make("make-bucket", "--s3-endpoint", &servers().s3, &name);
                vars.insert(
                    "TEST_S3_ENDPOINT".into(),
                    endpoint.unwrap_or(&servers().s3).to_string(),
                );
                vars.insert("TEST_AWS_KEY_ID".into(), "testing-key-id".into());
                vars.insert(
                    "TEST_AWS_SECRET".into(),
                    "s3-secret-that-must-not-leak".into(),
                );
                let options = "    options:\n      aws_endpoint: ${TEST_S3_ENDPOINT}\n      aws_allow_http: \"true\"\n      aws_region: us-east-1\n      aws_access_key_id: ${TEST_AWS_KEY_ID}\n      aws_secret_access_key: ${TEST_AWS_SECRET}\n      aws_copy_if_not_exists: multipart\n";
                format!(
                    "  exports:\n{}  marts:\n{}",
                    store(&format!("s3://{name}/exports"), options),
                    store(&format!("s3://{name}/marts"), options)
                )
            }
            Kind::Azure => {
                make(
                    "make-container",
                    "--azure-endpoint",
                    &servers().azure,
                    &name,
                );
                vars.insert("TEST_AZURE_ENDPOINT".into(), servers().azure.clone());
                vars.insert("TEST_AZURE_KEY".into(), AZURITE_KEY.into());
                let options = format!("    options:\n      azure_storage_endpoint: ${{TEST_AZURE_ENDPOINT}}\n      azure_allow_http: \"true\"\n      azure_storage_account_name: {AZURITE_ACCOUNT}\n      azure_storage_account_key: ${{TEST_AZURE_KEY}}\n");
                format!(
                    "  exports:\n{}  marts:\n{}",
                    store(&format!("az://{name}/exports"), &options),
                    store(&format!("az://{name}/marts"), &options)
                )
            }
            Kind::Gcs => {
                make("make-gcs-bucket", "--gcs-endpoint", &servers().gcs, &name);
                vars.insert("TEST_GCS_KEY".into(), gcs_emulator_key(&servers().gcs));
                let options = "    options:\n      google_service_account_key: ${TEST_GCS_KEY}\n";
                format!(
                    "  exports:\n{}  marts:\n{}",
                    store(&format!("gs://{name}/exports"), options),
                    store(&format!("gs://{name}/marts"), options)
                )
            }
        };
        let env_text = format!("stores:\n{stores}");
        Self {
            project,
            env_text,
            vars,
        }
    }

    fn environment(&self) -> Environment {
        let file = self.project.write("config/env.yaml", &self.env_text);
        let raw: EnvironmentConfig = serde_yaml::from_str(&self.env_text).unwrap();
        let vars = self.vars.clone();
        let mut env = compile(&file, &self.env_text, raw, &move |k| vars.get(k).cloned())
            .expect("environment compiles");
        env.execution.spill_dir = self.project.path("scratch");
        env.execution.target_partitions = 2;
        env
    }

    fn stores(&self) -> Stores {
        Stores::open(&self.environment().stores).expect("stores open")
    }

    fn pipeline(&self) -> Pipeline {
        Pipeline::load(&self.project.path("pipelines/mini.yaml"), None).unwrap()
    }
}

/// The mini pipeline with a second mart, so a failure can hit one mart after another was written.
fn two_marts(b: &Backend, second_mart_sql: &str) {
    b.project
        .write("sql/marts/mart_orders.sql", second_mart_sql);
    let mut text = std::fs::read_to_string(b.project.path("pipelines/mini.yaml")).unwrap();
    if !text.contains("mart_orders") {
        text = text.replace(
            "  - sql: marts/mart_totals.sql\n",
            "  - sql: marts/mart_totals.sql\n  - sql: marts/mart_orders.sql\n",
        );
        text = text.replace(
            "publish:\n  store: marts\n",
            "publish:\n  store: marts\n  keep_versions: 2\n",
        );
    }
    b.project.write("pipelines/mini.yaml", &text);
}

const GOOD_ORDERS: &str = "SELECT order_id, customer_id, quantity FROM stg_orders\n";
/// Fails while running: 'C1' is not an integer.
const FAILING_ORDERS: &str = "SELECT order_id, CAST(customer_id AS INT) AS n FROM stg_orders\n";

async fn put(stores: &Stores, store: &str, rel: &str, body: &str) {
    let s = stores.get(store).unwrap();
    let path = s.path(rel).unwrap();
    s.object_store
        .put(&path, PutPayload::from(body.to_string()))
        .await
        .unwrap();
}

async fn get(stores: &Stores, store: &str, rel: &str) -> Option<Bytes> {
    let s = stores.get(store).unwrap();
    match s.object_store.get(&s.path(rel).unwrap()).await {
        Ok(r) => Some(r.bytes().await.unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{rel}: {e}"),
    }
}

async fn list(stores: &Stores, store: &str, rel: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let s = stores.get(store).unwrap();
    let prefix = s.path(rel).unwrap();
    let mut names: Vec<String> = s
        .object_store
        .list(Some(&prefix))
        .map_ok(|m| s.relative(&m.location))
        .try_collect()
        .await
        .unwrap();
    names.sort();
    names
}

/// Rows of a Parquet object as (column -> value text) maps.
fn parquet_rows(bytes: Bytes) -> Vec<BTreeMap<String, String>> {
    common::parquet_rows(bytes)
}

async fn totals(stores: &Stores) -> Vec<(String, String)> {
    let bytes = get(stores, "marts", "mart_totals.parquet")
        .await
        .expect("mart_totals.parquet is live");
    let mut rows: Vec<(String, String)> = parquet_rows(bytes)
        .into_iter()
        .map(|r| (r["customer_id"].clone(), r["quantity"].clone()))
        .collect();
    rows.sort();
    rows
}

async fn run_once(b: &Backend, stores: &Stores) -> Result<crm_marts::manifest::Manifest, RunError> {
    let pipeline = b.pipeline();
    let params = run::bind_params(
        &pipeline,
        &BTreeMap::from([("as_of".to_string(), "2026-11-22".to_string())]),
    )
    .unwrap();
    run::run(
        &pipeline,
        &b.environment().execution,
        stores,
        params,
        &NoProgress,
    )
    .await
}

const ORDERS_CSV: &str = include_str!("fixtures/mini/exports/orders.csv");

fn v1() -> Vec<(String, String)> {
    vec![("C1".into(), "5".into()), ("C3".into(), "4".into())]
}

/// Exports are read from the store, marts, quarantine and manifest are written to it, a
/// second run replaces the live mart and keeps both versions.
async fn exports_are_read_and_marts_published(kind: Kind) {
    let b = Backend::new(kind, "publish");
    two_marts(&b, GOOD_ORDERS);
    let stores = b.stores();
    put(&stores, "exports", "orders.csv", ORDERS_CSV).await;

    let first = run_once(&b, &stores).await.expect("first run");
    assert_eq!(totals(&stores).await, v1());
    assert_eq!(first.quarantined_rows, 4, "{kind:?}");
    let quarantine = list(&stores, "marts", &format!("_quarantine/{}", first.run_id)).await;
    assert_eq!(
        quarantine,
        vec![format!("_quarantine/{}/orders.parquet", first.run_id)]
    );
    assert_eq!(
        parquet_rows(get(&stores, "marts", &quarantine[0]).await.unwrap()).len(),
        4
    );
    let manifest = get(&stores, "marts", &format!("_runs/{}.json", first.run_id))
        .await
        .expect("manifest written");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["status"], "succeeded");
    assert_eq!(
        manifest["inputs"][0]["files"][0]["size"].as_u64(),
        Some(ORDERS_CSV.len() as u64),
        "{manifest}"
    );

    put(
        &stores,
        "exports",
        "orders.csv",
        &format!("{ORDERS_CSV}O8,C1,2026-05-01,10\n"),
    )
    .await;
    let second = run_once(&b, &stores).await.expect("second run");
    assert_eq!(
        totals(&stores).await,
        vec![("C1".into(), "15".into()), ("C3".into(), "4".into())]
    );
    let versions = list(&stores, "marts", "_versions/mart_totals").await;
    for run in [&first, &second] {
        assert!(
            versions.contains(&format!("_versions/mart_totals/{}.parquet", run.run_id)),
            "{kind:?}: {versions:?}"
        );
    }
    // The exports are never modified.
    assert_eq!(
        get(&stores, "exports", "orders.csv").await.unwrap(),
        format!("{ORDERS_CSV}O8,C1,2026-05-01,10\n")
    );
}

/// A run that fails after writing one mart leaves every previous mart live and removes
/// what it wrote; the next good run publishes.
async fn a_failed_run_leaves_the_previous_marts_live(kind: Kind) {
    let b = Backend::new(kind, "failed-run");
    two_marts(&b, GOOD_ORDERS);
    let stores = b.stores();
    put(&stores, "exports", "orders.csv", ORDERS_CSV).await;
    let first = run_once(&b, &stores).await.expect("first run");
    let orders_before = get(&stores, "marts", "mart_orders.parquet").await.unwrap();

    put(
        &stores,
        "exports",
        "orders.csv",
        &format!("{ORDERS_CSV}O8,C1,2026-05-01,10\n"),
    )
    .await;
    two_marts(&b, FAILING_ORDERS);
    let err = run_once(&b, &stores).await.expect_err("the cast fails");
    assert!(
        err.to_string().contains("mart_orders.sql"),
        "{kind:?}: {err}"
    );
    assert_eq!(
        totals(&stores).await,
        v1(),
        "{kind:?}: the live mart is the first run's"
    );
    assert_eq!(
        get(&stores, "marts", "mart_orders.parquet").await.unwrap(),
        orders_before
    );
    let versions = list(&stores, "marts", "_versions/mart_totals").await;
    assert_eq!(
        versions
            .iter()
            .filter(|v| v.ends_with(".parquet"))
            .collect::<Vec<_>>(),
        vec![&format!("_versions/mart_totals/{}.parquet", first.run_id)],
        "{kind:?}: the failed run's version was removed"
    );

    two_marts(&b, GOOD_ORDERS);
    run_once(&b, &stores).await.expect("third run");
    assert_eq!(
        totals(&stores).await,
        vec![("C1".into(), "15".into()), ("C3".into(), "4".into())]
    );
}

/// Eight schedulers claim the same tick at once: exactly one wins. The job lock has one
/// holder, and an expired lock is taken over.
async fn one_claim_per_tick_and_one_lock_holder(kind: Kind) {
    let b = Backend::new(kind, "locks");
    let stores = b.stores();
    let store = stores.get("marts").unwrap().clone();
    let tick = Utc::now();
    let claims = futures::future::join_all((0..8).map(|i| {
        let store = store.clone();
        async move {
            claim_tick(&store, "nightly", tick, &format!("scheduler-{i}"))
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(
        claims.iter().filter(|c| **c).count(),
        1,
        "{kind:?}: {claims:?}"
    );

    let in_an_hour = Utc::now() + chrono::Duration::hours(1);
    let held = JobLock::acquire(&store, "nightly", "a", tick, in_an_hour)
        .await
        .unwrap()
        .expect("a takes the lock");
    match JobLock::acquire(&store, "nightly", "b", tick, in_an_hour)
        .await
        .unwrap()
    {
        Err(Refused::Held(r)) => assert_eq!(r.holder, "a"),
        Ok(_) => panic!("{kind:?}: two holders"),
    }
    held.release(&store).await.unwrap();
    let b_lock = JobLock::acquire(&store, "nightly", "b", tick, in_an_hour)
        .await
        .unwrap()
        .expect("free again");
    b_lock.release(&store).await.unwrap();

    // Claims older than the retention are pruned; younger ones stay.
    let old = tick - chrono::Duration::days(30);
    assert!(claim_tick(&store, "nightly", old, "s").await.unwrap());
    let removed =
        crm_marts::joblock::prune_ticks(&store, "nightly", tick - chrono::Duration::days(7))
            .await
            .unwrap();
    assert_eq!(removed, 1, "{kind:?}");
    let claims = list(&stores, "marts", "_jobs/nightly/ticks").await;
    assert_eq!(
        claims,
        vec![format!(
            "_jobs/nightly/ticks/{}",
            crm_marts::joblock::tick_name(tick)
        )]
    );

    // A crashed holder: its lock has expired. Of four takers, exactly one gets it.
    let expired = Utc::now() - chrono::Duration::seconds(1);
    let _crashed = JobLock::acquire(&store, "nightly", "crashed", tick, expired)
        .await
        .unwrap()
        .expect("c");
    let takers = futures::future::join_all((0..4).map(|i| {
        let store = store.clone();
        async move {
            JobLock::acquire(&store, "nightly", &format!("taker-{i}"), tick, in_an_hour)
                .await
                .unwrap()
                .is_ok()
        }
    }))
    .await;
    let winners = takers.iter().filter(|t| **t).count();
    // Local folders replace a stale lock by delete and create, which two takers can both
    // pass in a race; object stores update it conditionally.
    if kind == Kind::Local {
        assert!(winners >= 1, "{takers:?}");
    } else {
        assert_eq!(winners, 1, "{kind:?}: {takers:?}");
    }
}

macro_rules! for_every_backend {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() { super::$test(Kind::Local).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() { super::$test(Kind::Memory).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() { super::$test(Kind::S3).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn azure() { super::$test(Kind::Azure).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn gcs() { super::$test(Kind::Gcs).await }
        }
    )*};
}

for_every_backend!(
    exports_are_read_and_marts_published,
    a_failed_run_leaves_the_previous_marts_live,
    one_claim_per_tick_and_one_lock_holder
);

// ---------------------------------------------------------------------------------------
// Faults between the client and a real S3 server.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Forward the request.
    Pass,
    /// Close the connection without an answer, as a stopped server would.
    Drop,
    /// Answer 500 Internal Server Error.
    Error500,
    /// Forward the request after a pause.
    Slow(Duration),
}

#[derive(Default)]
struct ProxyState {
    /// The fault every request gets from now on.
    fault: Option<Fault>,
    /// (method, path part, fault): the first request that matches switches to `fault`.
    trigger: Option<(String, String, Fault)>,
    /// Every n-th request answers 500 (transient errors).
    every_nth_500: Option<usize>,
    requests: usize,
    faults: usize,
}

/// A TCP proxy in front of moto that reads each request's head and applies a fault. The
/// client is told not to keep idle connections (`pool_max_idle_per_host: 0`), so every
/// request arrives on a connection of its own.
struct FaultProxy {
    url: String,
    state: Arc<Mutex<ProxyState>>,
}

impl FaultProxy {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let _ = handle(client, &upstream, &state).await;
                });
            }
        });
        Self { url, state }
    }

    fn set(&self, f: impl FnOnce(&mut ProxyState)) {
        f(&mut self.state.lock().unwrap());
    }

    fn faults(&self) -> usize {
        self.state.lock().unwrap().faults
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: &str,
    state: &Mutex<ProxyState>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut words = text.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("").to_string(),
    );
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        if let Some((m, part, fault)) = s.trigger.clone() {
            if method == m && target.contains(&part) {
                s.fault = Some(fault);
                s.trigger = None;
            }
        }
        let mut fault = s.fault.unwrap_or(Fault::Pass);
        if fault == Fault::Pass && s.every_nth_500.is_some_and(|n| s.requests % n == 0) {
            fault = Fault::Error500;
        }
        if fault != Fault::Pass {
            s.faults += 1;
        }
        fault
    };
    match fault {
        Fault::Drop => return Ok(()),
        Fault::Error500 => {
            // Read the body the client sends before answering, so it sees the answer.
            let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let length: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            let mut have = head.len() - end;
            while have < length {
                let n = client.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                have += n;
            }
            let body = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
            let answer = format!("HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            client.write_all(answer.as_bytes()).await?;
            return client.shutdown().await;
        }
        Fault::Slow(pause) => tokio::time::sleep(pause).await,
        Fault::Pass => {}
    }
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// An S3 backend whose client goes through a fault proxy, retrying quickly.
async fn s3_behind_proxy(test: &str, extra: &str) -> (Backend, FaultProxy, Stores) {
    let proxy = FaultProxy::start(&servers().s3).await;
    let options = format!("      pool_max_idle_per_host: \"0\"\n{extra}");
    let mut b = Backend::with(Kind::S3, test, Some(&proxy.url), "");
    // The options block is the last lines of each store: add the proxy settings to both.
    b.env_text = b.env_text.replace(
        "      aws_copy_if_not_exists: multipart\n",
        &format!("      aws_copy_if_not_exists: multipart\n{options}"),
    );
    b.env_text = b.env_text.replace(
        "    options:\n",
        "    retry: { max_retries: 3, timeout_seconds: 5, initial_backoff_ms: 20, max_backoff_seconds: 0.2 }\n    options:\n",
    );
    two_marts(&b, GOOD_ORDERS);
    let stores = b.stores();
    (b, proxy, stores)
}

/// The same bucket without the proxy, to see what a reader sees.
fn direct(b: &Backend) -> Stores {
    let mut vars = b.vars.clone();
    vars.insert("TEST_S3_ENDPOINT".into(), servers().s3.clone());
    let raw: EnvironmentConfig = serde_yaml::from_str(&b.env_text).unwrap();
    let env = compile(Path::new("env.yaml"), &b.env_text, raw, &move |k| {
        vars.get(k).cloned()
    })
    .unwrap();
    Stores::open(&env.stores).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_transient_500s_are_retried() {
    let (b, proxy, stores) = s3_behind_proxy("retry-500", "").await;
    put(&stores, "exports", "orders.csv", ORDERS_CSV).await;
    proxy.set(|s| s.every_nth_500 = Some(3));
    run_once(&b, &stores)
        .await
        .expect("every third request fails once; retries carry the run");
    assert!(
        proxy.faults() >= 5,
        "only {} faults were injected",
        proxy.faults()
    );
    assert_eq!(totals(&direct(&b)).await, v1());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_mid_write_fails_the_run_and_publishes_nothing() {
    for (label, fault) in [("stopped", Fault::Drop), ("500s", Fault::Error500)] {
        let (b, proxy, stores) = s3_behind_proxy(&format!("outage-{label}"), "").await;
        put(&stores, "exports", "orders.csv", ORDERS_CSV).await;
        let first = run_once(&b, &stores).await.expect("first run");
        let reader = direct(&b);
        let orders_before = get(&reader, "marts", "mart_orders.parquet").await.unwrap();
        put(
            &stores,
            "exports",
            "orders.csv",
            &format!("{ORDERS_CSV}O8,C1,2026-05-01,10\n"),
        )
        .await;

        // The server goes away as the second mart's new version is uploaded.
        proxy.set(|s| s.trigger = Some(("PUT".into(), "_versions/mart_orders/".into(), fault)));
        let started = std::time::Instant::now();
        let err = run_once(&b, &stores)
            .await
            .expect_err("the upload cannot succeed");
        let message = err.to_string();
        assert!(message.contains("mart_orders"), "{label}: {message}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{label}: retries are bounded"
        );
        assert!(
            proxy.faults() > 1,
            "{label}: the client retried ({} faults)",
            proxy.faults()
        );
        assert!(
            !message.contains("s3-secret-that-must-not-leak"),
            "{message}"
        );

        // A reader sees the first run's marts, complete.
        assert_eq!(totals(&reader).await, v1(), "{label}");
        assert_eq!(
            get(&reader, "marts", "mart_orders.parquet").await.unwrap(),
            orders_before,
            "{label}"
        );

        // The server is back: the next run publishes and removes what the failed one left.
        proxy.set(|s| s.fault = None);
        let third = run_once(&b, &stores).await.expect("third run");
        assert_eq!(
            totals(&reader).await,
            vec![("C1".into(), "15".into()), ("C3".into(), "4".into())]
        );
        let versions: Vec<String> = list(&reader, "marts", "_versions/mart_orders")
            .await
            .into_iter()
            .filter(|v| v.ends_with(".parquet"))
            .collect();
        assert_eq!(
            versions,
            vec![
                format!("_versions/mart_orders/{}.parquet", first.run_id),
                format!("_versions/mart_orders/{}.parquet", third.run_id)
            ],
            "{label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_slow_responses_time_out_with_a_clear_error() {
    let (b, proxy, stores) = s3_behind_proxy("slow", "      timeout: 1s\n").await;
    put(&stores, "exports", "orders.csv", ORDERS_CSV).await;
    run_once(&b, &stores).await.expect("first run");

    // Slow but within the timeout: the run succeeds.
    proxy.set(|s| s.fault = Some(Fault::Slow(Duration::from_millis(200))));
    run_once(&b, &stores)
        .await
        .expect("a slow store is still a working store");

    // Slower than the timeout on reading the export: the run fails naming the file.
    proxy.set(|s| {
        s.fault = None;
        s.trigger = Some((
            "GET".into(),
            "orders.csv".into(),
            Fault::Slow(Duration::from_secs(3)),
        ));
    });
    let err = run_once(&b, &stores)
        .await
        .expect_err("reading the export times out");
    let message = format!("{err}");
    assert!(message.contains("orders.csv"), "{message}");
    assert!(
        message.to_lowercase().contains("timed out") || message.to_lowercase().contains("timeout"),
        "{message}"
    );
    proxy.set(|s| s.fault = None);
    assert_eq!(totals(&direct(&b)).await, v1());
}

// ---------------------------------------------------------------------------------------
// Secrets and paths.

/// Runs the binary in the backend's project with its `${ENV}` variables set.
fn cli(b: &Backend, args: &[&str], extra_env: &[(&str, &str)]) -> common::Run {
    b.project.write("config/env.yaml", &b.env_text);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crm-marts"));
    cmd.args(args)
        .current_dir(b.project.dir.path())
        .env("CRM_MARTS_LOG", "trace")
        .env_remove("CRM_DATA_DIR");
    for (k, v) in &b.vars {
        cmd.env(k, v);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    common::Run(cmd.output().expect("run crm-marts"))
}

/// Store credentials and the keyed-hash key appear in no log line (at the most verbose
/// level, human or JSON), no manifest and no error message, whether the run succeeds,
/// fails on storage, or fails on configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_manifests_or_errors() {
    const SECRET: &str = "s3-secret-that-must-not-leak";
    const HASH_KEY: &str = "hash-key-that-must-not-leak";
    let mut b = Backend::new(Kind::S3, "secrets");
    b.env_text
        .push_str("privacy:\n  hash_key: ${TEST_HASH_KEY}\n");
    b.vars.insert("TEST_HASH_KEY".into(), HASH_KEY.into());
    // The mart hashes a column with the key, so the key is really used.
    b.project.write("sql/marts/mart_totals.sql", "SELECT keyed_hash(customer_id) AS customer_hash, sum(quantity) AS quantity FROM stg_orders GROUP BY customer_id\n");
    let stores = b.stores();
    put(&stores, "exports", "orders.csv", ORDERS_CSV).await;
    let leaks = |what: &str, text: &str| {
        for secret in [SECRET, HASH_KEY] {
            assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
        }
    };

    for format in ["human", "json"] {
        let run = cli(
            &b,
            &[
                "run",
                "pipelines/mini.yaml",
                "--config",
                "config/env.yaml",
                "--as-of",
                "2026-11-22",
                "-vv",
                "--log-format",
                format,
            ],
            &[],
        );
        let run = run.expect_code(0);
        leaks("the log", &format!("{}{}", run.stdout(), run.stderr()));
    }
    let validate = cli(
        &b,
        &[
            "validate",
            "pipelines/mini.yaml",
            "--config",
            "config/env.yaml",
        ],
        &[],
    );
    leaks(
        "validate",
        &format!("{}{}", validate.stdout(), validate.stderr()),
    );
    let runs = cli(&b, &["runs", "--config", "config/env.yaml", "--json"], &[]);
    leaks("runs", &format!("{}{}", runs.stdout(), runs.stderr()));
    let manifests = list(&stores, "marts", "_runs").await;
    assert!(manifests.len() >= 2, "{manifests:?}");
    for m in &manifests {
        leaks(
            m,
            &String::from_utf8_lossy(&get(&stores, "marts", m).await.unwrap()),
        );
    }

    // The store cannot be reached: the error names the store, not its credentials.
    let mut down = Backend::new(Kind::Local, "secrets-down");
    down.env_text = b.env_text.clone();
    down.vars = b.vars.clone();
    down.vars
        .insert("TEST_S3_ENDPOINT".into(), "http://127.0.0.1:9".into());
    down.env_text = down.env_text.replace(
        "    options:\n",
        "    retry: { max_retries: 1, timeout_seconds: 2 }\n    options:\n",
    );
    let failed = cli(
        &down,
        &[
            "run",
            "pipelines/mini.yaml",
            "--config",
            "config/env.yaml",
            "--as-of",
            "2026-11-22",
            "-vv",
        ],
        &[],
    );
    assert_ne!(failed.code(), 0);
    assert!(
        failed.stderr().contains("store `marts`"),
        "{}",
        failed.stderr()
    );
    leaks(
        "a storage error",
        &format!("{}{}", failed.stdout(), failed.stderr()),
    );

    // A mistyped option: the message names the key, never a value.
    let mut typo = Backend::new(Kind::Local, "secrets-typo");
    typo.env_text = b
        .env_text
        .replace("aws_secret_access_key:", "aws_secret_acess_key:");
    typo.vars = b.vars.clone();
    let bad = cli(
        &typo,
        &[
            "run",
            "pipelines/mini.yaml",
            "--config",
            "config/env.yaml",
            "--as-of",
            "2026-11-22",
        ],
        &[],
    );
    assert_ne!(bad.code(), 0);
    assert!(
        bad.stderr().contains("aws_secret_acess_key"),
        "{}",
        bad.stderr()
    );
    leaks(
        "a configuration error",
        &format!("{}{}", bad.stdout(), bad.stderr()),
    );
}

/// A parameter rendered into a source path cannot leave the store's prefix, whatever the
/// caller passes on the command line.
#[test]
fn parameters_in_paths_cannot_escape_the_store_prefix() {
    let b = Backend::new(Kind::Local, "escape");
    b.project.write(
        "remote/secret.csv",
        "order_id,customer_id,order_date,quantity\nX,EVIL,2026-01-01,1\n",
    );
    b.project.write("remote/exports/eu/orders.csv", ORDERS_CSV);
    let mut text = std::fs::read_to_string(b.project.path("pipelines/mini.yaml")).unwrap();
    text = text.replace(
        "  min_qty: { type: int, default: 1 }\n",
        "  min_qty: { type: int, default: 1 }\n  region: { type: string, default: eu }\n",
    );
    text = text.replace(
        "    path: orders.csv\n",
        "    path: \"{region}/orders.csv\"\n",
    );
    b.project.write("pipelines/mini.yaml", &text);
    let run = |region: &str| {
        cli(
            &b,
            &[
                "run",
                "pipelines/mini.yaml",
                "--config",
                "config/env.yaml",
                "--as-of",
                "2026-11-22",
                "--param",
                &format!("region={region}"),
            ],
            &[],
        )
    };
    run("eu").expect_code(0);
    for evil in ["..", "../..", "eu/../..", "/etc", "eu/..", "..\\.."] {
        let r = run(evil);
        assert_ne!(r.code(), 0, "region={evil} ran:\n{}", r.stderr());
        assert!(
            r.stderr().contains("region"),
            "region={evil}: {}",
            r.stderr()
        );
    }
    // Nothing outside the exports prefix was read: the live mart is the good run's.
    let rows = common::read_parquet_rows(&b.project.path("remote/marts/mart_totals.parquet"));
    assert!(rows.iter().all(|r| r["customer_id"] != "EVIL"), "{rows:?}");
    assert_eq!(rows.len(), 2);
}
