//! Publishing is atomic from a reader's point of view: a run that fails while writing or
//! publishing leaves the previous mart readable and complete, and the next good run
//! cleans up what the failed one left behind.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use common::{read_parquet_rows, Project};
use crm_marts::config::{Environment, Pipeline};
use crm_marts::run::{self, NoProgress};
use crm_marts::storage::{Store, Stores};

/// A local store that fails the operations a test asks it to.
#[derive(Debug)]
struct FaultyStore {
    inner: LocalFileSystem,
    /// Fail multipart writes to paths containing this text.
    fail_writes_to: Option<String>,
    /// Fail copies to paths ending with this text.
    fail_copies_to: Option<String>,
    failed: AtomicBool,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore")
    }
}

fn injected(op: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected failure in {op}").into(),
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self
            .fail_writes_to
            .as_deref()
            .is_some_and(|p| location.as_ref().contains(p))
        {
            self.failed.store(true, Ordering::SeqCst);
            return Err(injected("write"));
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if self
            .fail_writes_to
            .as_deref()
            .is_some_and(|p| location.as_ref().contains(p))
        {
            self.failed.store(true, Ordering::SeqCst);
            return Err(injected("write"));
        }
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        if self
            .fail_copies_to
            .as_deref()
            .is_some_and(|p| to.as_ref().ends_with(p))
        {
            self.failed.store(true, Ordering::SeqCst);
            return Err(injected("copy"));
        }
        self.inner.copy_opts(from, to, options).await
    }
}

struct Setup {
    project: Project,
    pipeline: Pipeline,
    env: Environment,
}

fn setup() -> Setup {
    let project = Project::from_fixture("mini");
    // A second mart, so a failure can hit one mart of a run after another was written.
    project.write(
        "sql/marts/mart_orders.sql",
        "SELECT order_id, customer_id, quantity FROM stg_orders\n",
    );
    let mut text = std::fs::read_to_string(project.path("pipelines/mini.yaml")).unwrap();
    text = text.replace(
        "  - sql: marts/mart_totals.sql\n",
        "  - sql: marts/mart_totals.sql\n  - sql: marts/mart_orders.sql\n",
    );
    text = text.replace(
        "publish:\n  store: marts\n",
        "publish:\n  store: marts\n  keep_versions: 2\n",
    );
    project.write("pipelines/mini.yaml", &text);
    let mut env = Environment::empty();
    env.execution.spill_dir = project.path("scratch");
    env.execution.target_partitions = 2;
    let pipeline = Pipeline::load(&project.path("pipelines/mini.yaml"), None).unwrap();
    Setup {
        project,
        pipeline,
        env,
    }
}

fn stores(project: &Project, faulty: Option<Arc<FaultyStore>>) -> Stores {
    let marts_dir = project.path("marts");
    std::fs::create_dir_all(&marts_dir).unwrap();
    let prefix = marts_dir
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string();
    let exports = project
        .path("exports")
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string();
    let mut stores = Stores::default();
    let marts_store: Arc<dyn ObjectStore> = match faulty {
        Some(f) => f,
        None => Arc::new(LocalFileSystem::new()),
    };
    stores.insert(Store::from_object_store(
        "marts",
        "file://",
        marts_store.clone(),
        &prefix,
    ));
    stores.insert(Store::from_object_store(
        "exports",
        "file://",
        marts_store,
        &exports,
    ));
    stores
}

fn params(as_of: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("as_of".to_string(), as_of.to_string())])
}

async fn run_once(
    s: &Setup,
    stores: &Stores,
) -> Result<crm_marts::manifest::Manifest, run::RunError> {
    let params = run::bind_params(&s.pipeline, &params("2026-11-22")).unwrap();
    run::run(&s.pipeline, &s.env.execution, stores, params, &NoProgress).await
}

fn totals(path: &Path) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = read_parquet_rows(path)
        .iter()
        .map(|r| (r["customer_id"].clone(), r["quantity"].clone()))
        .collect();
    rows.sort();
    rows
}

fn version_entries(project: &Project, mart: &str) -> Vec<String> {
    let dir = project.path(&format!("marts/_versions/{mart}"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_while_writing_or_publishing_leave_the_previous_marts_live() {
    let s = setup();
    let first = run_once(&s, &stores(&s.project, None))
        .await
        .expect("first run");
    let live = s.project.path("marts/mart_totals.parquet");
    let v1 = totals(&live);
    assert_eq!(
        v1,
        vec![("C1".into(), "5".into()), ("C3".into(), "4".into())]
    );

    // New data arrives: C1 buys 10 more.
    let mut orders = std::fs::read_to_string(s.project.path("exports/orders.csv")).unwrap();
    orders.push_str("O8,C1,2026-05-01,10\n");
    s.project.write("exports/orders.csv", &orders);

    // 1. The upload of the new version fails half-way through the run.
    let faulty = Arc::new(FaultyStore {
        inner: LocalFileSystem::new(),
        fail_writes_to: Some("_versions/mart_orders/".into()),
        fail_copies_to: None,
        failed: AtomicBool::new(false),
    });
    let err = run_once(&s, &stores(&s.project, Some(faulty.clone())))
        .await
        .expect_err("injected write failure");
    assert!(faulty.failed.load(Ordering::SeqCst));
    assert!(
        err.to_string().contains("injected failure in write"),
        "{err}"
    );
    assert_eq!(totals(&live), v1, "the live mart is untouched");
    assert_eq!(
        version_entries(&s.project, "mart_totals")
            .iter()
            .filter(|n| n.ends_with(".parquet"))
            .count(),
        1,
        "the failed run removed the version it had written"
    );

    // 2. Publishing fails on the second mart's atomic swap.
    let faulty = Arc::new(FaultyStore {
        inner: LocalFileSystem::new(),
        fail_writes_to: None,
        fail_copies_to: Some("mart_orders.parquet".into()),
        failed: AtomicBool::new(false),
    });
    let err = run_once(&s, &stores(&s.project, Some(faulty.clone())))
        .await
        .expect_err("injected copy failure");
    assert!(
        err.to_string().contains("injected failure in copy"),
        "{err}"
    );
    // mart_orders keeps its previous complete version, readable by any Parquet reader.
    let orders_rows = read_parquet_rows(&s.project.path("marts/mart_orders.parquet"));
    assert_eq!(
        orders_rows.len(),
        3,
        "previous mart_orders (3 good orders) still live"
    );
    if let run::RunError::Failed { manifest, .. } = &err {
        assert_eq!(manifest.status, crm_marts::manifest::RunStatus::Failed);
        assert!(!manifest.errors.is_empty());
    }

    // 3. The next good run publishes and cleans up what the failed ones left.
    let third = run_once(&s, &stores(&s.project, None))
        .await
        .expect("third run");
    assert_eq!(
        totals(&live),
        vec![("C1".into(), "15".into()), ("C3".into(), "4".into())]
    );
    assert_eq!(
        read_parquet_rows(&s.project.path("marts/mart_orders.parquet")).len(),
        4
    );
    let entries = version_entries(&s.project, "mart_orders");
    let expected: Vec<String> = {
        let mut v = vec![
            format!("{}.parquet", first.run_id),
            format!("{}.parquet", third.run_id),
            "_current".into(),
            "_history.json".into(),
        ];
        v.sort();
        v
    };
    assert_eq!(entries, expected, "only the kept versions remain");
    let current =
        std::fs::read_to_string(s.project.path("marts/_versions/mart_orders/_current")).unwrap();
    assert_eq!(current, third.run_id);

    // Retention: keep_versions = 2, so a fourth run drops the first version.
    let fourth = run_once(&s, &stores(&s.project, None))
        .await
        .expect("fourth run");
    let entries = version_entries(&s.project, "mart_totals");
    assert!(
        !entries.contains(&format!("{}.parquet", first.run_id)),
        "{entries:?}"
    );
    assert!(
        entries.contains(&format!("{}.parquet", third.run_id))
            && entries.contains(&format!("{}.parquet", fourth.run_id)),
        "{entries:?}"
    );
    // Scratch folders of every run are gone.
    assert!(common::walk(&s.project.path("scratch")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_marts_publish_as_a_folder_swapped_in_one_step() {
    let s = setup();
    let mut text = std::fs::read_to_string(s.project.path("pipelines/mini.yaml")).unwrap();
    text = text.replace(
        "  - sql: marts/mart_orders.sql\n",
        "  - sql: marts/mart_orders.sql\n    partition_by: [customer_id]\n",
    );
    s.project.write("pipelines/mini.yaml", &text);
    let pipeline = Pipeline::load(&s.project.path("pipelines/mini.yaml"), None).unwrap();
    let s = Setup { pipeline, ..s };
    let first = run_once(&s, &stores(&s.project, None))
        .await
        .expect("first run");
    let link = s.project.path("marts/mart_orders");
    assert!(link.is_symlink());
    let files = common::walk(&link);
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("customer_id=C1")),
        "{files:?}"
    );
    let rows = read_parquet_rows(&link);
    assert_eq!(rows.len(), 3);
    let second = run_once(&s, &stores(&s.project, None))
        .await
        .expect("second run");
    assert_ne!(first.run_id, second.run_id);
    let target = std::fs::read_link(&link).unwrap();
    assert!(
        target.to_string_lossy().ends_with(&second.run_id),
        "{target:?}"
    );
}
