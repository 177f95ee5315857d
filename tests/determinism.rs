//! The same exports, configuration and as-of date give the same marts, bit for bit,
//! whatever the engine's partitioning and thread timing: the customer-marts pipeline
//! runs with `target_partitions` 1, 8 and 8 again on one set of generated exports, and
//! every mart's content hash (rows in a canonical order, values compared by their bits)
//! must be the same in all three.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{repo, walk, Project};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

/// Every batch of every Parquet file of a mart (a file, or a partitioned folder).
fn mart_batches(path: &Path) -> Vec<RecordBatch> {
    let files: Vec<PathBuf> =
        if path.is_dir() { walk(path).into_iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")).collect() } else { vec![path.to_path_buf()] };
    let mut out = Vec::new();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap()).unwrap().build().unwrap();
        out.extend(reader.map(Result::unwrap));
    }
    out
}

/// Hash of the rows of `columns` in sorted order: equal exactly when the two multisets of
/// rows are equal, with floats compared by their bits.
fn rows_hash(batches: &[RecordBatch], columns: &[usize]) -> String {
    let Some(first) = batches.first() else { return "empty".into() };
    let schema = first.schema();
    let fields = columns.iter().map(|&c| SortField::new(schema.field(c).data_type().clone())).collect();
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

/// Mart name -> (content hash, hash per column).
fn content(marts: &Path) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
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
                (0..width).map(|c| (schema.field(c).name().clone(), rows_hash(&batches, &[c]))).collect()
            })
            .unwrap_or_default();
        out.insert(mart, (rows_hash(&batches, &all), per_column));
    }
    out
}

fn run(p: &Project, data: &Path, partitions: usize, marts: &str) -> PathBuf {
    let marts_dir = data.join(marts);
    let config = p.write(
        &format!("env-{marts}.yaml"),
        &format!(
            "stores:\n  exports:\n    url: {}\n  marts:\n    url: {}\nexecution:\n  memory_limit: 4GiB\n  target_partitions: {partitions}\n  spill_dir: {}\nprivacy:\n  hash_key: determinism-test-key\n",
            data.join("exports").display(),
            marts_dir.display(),
            p.path("spill").display(),
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args(["run", "pipelines/customer_marts.yaml", "--as-of", "2026-11-22", "--config"])
        .arg(&config)
        .current_dir(repo())
        .env("CRM_MARTS_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "run with target_partitions {partitions}:\n{}", String::from_utf8_lossy(&out.stderr));
    marts_dir
}

#[test]
fn marts_are_the_same_bit_for_bit_whatever_the_partitioning() {
    let p = Project::new();
    let data = p.path("data");
    let out = Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args(["generate", "--customers", "1500", "--seed", "11", "--out"])
        .arg(data.join("exports"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let one = content(&run(&p, &data, 1, "marts-1"));
    let eight = content(&run(&p, &data, 8, "marts-8"));
    let again = content(&run(&p, &data, 8, "marts-8-again"));
    assert!(one.len() > 20, "{:?}", one.keys());

    let mut differences = Vec::new();
    for (label, other) in [("target_partitions 8", &eight), ("target_partitions 8, second run", &again)] {
        assert_eq!(one.keys().collect::<Vec<_>>(), other.keys().collect::<Vec<_>>(), "{label}: other marts");
        for (mart, (hash, columns)) in &one {
            let (other_hash, other_columns) = &other[mart];
            if hash != other_hash {
                let changed: Vec<&String> = columns.iter().filter(|(c, h)| other_columns.get(*c) != Some(h)).map(|(c, _)| c).collect();
                differences.push(format!("{mart} ({label}): {hash} vs {other_hash}; columns differing: {changed:?}"));
            }
        }
    }
    assert!(differences.is_empty(), "marts differ from the run with target_partitions 1:\n{}", differences.join("\n"));
}
