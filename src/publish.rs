//! Publishing marts. A run writes each mart as a new immutable version under
//! `_versions/<mart>/`, out of readers' sight; only when every step and check of the run
//! has passed are the versions made live, each by one atomic operation:
//!
//! * an unpartitioned mart is one Parquet file, `<mart>.parquet`, replaced by a
//!   server-side copy (an atomic object replacement on S3, GCS and Azure, a rename on a
//!   local disk): readers see the old file or the new one, never a mix;
//! * a partitioned mart lives in `_versions/<mart>/<run_id>/` (hive layout); the pointer
//!   `_versions/<mart>/_current` names the live version and, on a local disk, the
//!   symlink `<mart>` is swapped to it with one rename.
//!
//! `_versions/<mart>/_history.json` lists published versions; the last N are kept and
//! anything older, or left behind by a failed or killed run, is removed.

use std::sync::Arc;

use datafusion::config::TableParquetOptions;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;

use crate::storage::{StorageError, Store};

/// Rows per row group: large enough for fast scans, small enough that BI readers
/// (DuckDB, Power BI, Spark) can skip and parallelise by row group.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("writing mart `{mart}`: {source}")]
    Write {
        mart: String,
        source: datafusion::error::DataFusionError,
    },
    #[error("reading mart `{mart}`: {source}")]
    Read {
        mart: String,
        source: datafusion::error::DataFusionError,
    },
    #[error("writing mart `{mart}`: {message}")]
    Other { mart: String, message: String },
}

/// A mart version written but not yet live.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenMart {
    pub mart: String,
    pub version: String,
    pub rows: u64,
    pub partitioned: bool,
    /// Where the version's data is, inside the store.
    #[serde(skip)]
    pub version_path: ObjectPath,
    /// URL DataFusion reads the version from.
    pub version_url: String,
    /// Where readers find the live mart.
    pub published_url: String,
}

pub struct Publisher {
    pub store: Store,
    pub run_id: String,
    pub keep_versions: usize,
}

impl Publisher {
    fn versions_dir(&self, mart: &str) -> Result<ObjectPath, StorageError> {
        self.store.path(&format!("_versions/{mart}"))
    }

    fn writer_props(&self, pipeline: &str) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(format!("crm-marts {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![
                KeyValue::new("crm_marts.run_id".into(), self.run_id.clone()),
                KeyValue::new("crm_marts.pipeline".into(), pipeline.to_string()),
            ]))
            .build()
    }

    /// Writes `df` as a new version of `mart`, streaming batches to storage.
    pub async fn write_version(
        &self,
        pipeline: &str,
        mart: &str,
        df: DataFrame,
        partition_by: &[String],
    ) -> Result<WrittenMart, PublishError> {
        let dir = self.versions_dir(mart)?;
        if partition_by.is_empty() {
            let path = dir
                .clone()
                .join(format!("{}.parquet", self.run_id).as_str());
            let rows = write_stream(
                self.store.object_store.clone(),
                path.clone(),
                df,
                self.writer_props(pipeline),
            )
            .await
            .map_err(|source| PublishError::Write {
                mart: mart.into(),
                source,
            })?;
            let live = self.store.path(&format!("{mart}.parquet"))?;
            Ok(WrittenMart {
                mart: mart.into(),
                version: self.run_id.clone(),
                rows,
                partitioned: false,
                version_url: self.store.url(&path),
                version_path: path,
                published_url: self.store.url(&live),
            })
        } else {
            let path = dir.clone().join(self.run_id.as_str());
            let url = format!("{}/", self.store.url(&path));
            let mut options = TableParquetOptions::default();
            options.global.compression = Some("zstd(3)".into());
            options.global.max_row_group_size = ROW_GROUP_ROWS;
            options.global.created_by = format!("crm-marts {}", env!("CARGO_PKG_VERSION"));
            let write = DataFrameWriteOptions::new().with_partition_by(partition_by.to_vec());
            let counts = df
                .write_parquet(&url, write, Some(options))
                .await
                .map_err(|source| PublishError::Write {
                    mart: mart.into(),
                    source,
                })?;
            let rows = count_rows(&counts);
            let live = self.store.path(mart)?;
            Ok(WrittenMart {
                mart: mart.into(),
                version: self.run_id.clone(),
                rows,
                partitioned: true,
                version_url: url,
                version_path: path,
                published_url: format!("{}/", self.store.url(&live)),
            })
        }
    }

    /// Makes a written version live, records it in the history and applies retention.
    pub async fn publish(&self, written: &WrittenMart) -> Result<(), PublishError> {
        let store = &self.store;
        let os = &store.object_store;
        let dir = self.versions_dir(&written.mart)?;
        if written.partitioned {
            self.swap_local_link(written)?;
        } else {
            let live = store.path(&format!("{}.parquet", written.mart))?;
            copy_over(store, &written.version_path, &live)
                .await
                .map_err(|e| store.io_error(&live, e))?;
        }
        let pointer = dir.clone().join("_current");
        os.put(
            &pointer,
            PutPayload::from(written.version.clone().into_bytes()),
        )
        .await
        .map_err(|e| store.io_error(&pointer, e))?;
        let mut history = self.history(&written.mart).await?;
        history.retain(|v| v != &written.version);
        history.push(written.version.clone());
        let keep_from = history.len().saturating_sub(self.keep_versions);
        let kept: Vec<String> = history[keep_from..].to_vec();
        let history_path = dir.clone().join("_history.json");
        let body = serde_json::to_vec_pretty(&kept).expect("serialisable");
        os.put(&history_path, PutPayload::from(body))
            .await
            .map_err(|e| store.io_error(&history_path, e))?;
        self.remove_stale(&written.mart, &kept).await
    }

    /// Published versions of a mart, oldest first.
    pub async fn history(&self, mart: &str) -> Result<Vec<String>, PublishError> {
        let path = self.versions_dir(mart)?.join("_history.json");
        match self.store.object_store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.store.io_error(&path, e))?;
                serde_json::from_slice(&bytes).map_err(|e| PublishError::Other {
                    mart: mart.into(),
                    message: format!("{path}: {e}"),
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(self.store.io_error(&path, e).into()),
        }
    }

    /// Deletes versions that are neither kept nor newer than this run (a newer one may
    /// belong to a run still going).
    async fn remove_stale(&self, mart: &str, kept: &[String]) -> Result<(), PublishError> {
        let store = &self.store;
        let dir = self.versions_dir(mart)?;
        let objects: Vec<_> = store
            .object_store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| store.io_error(&dir, e))?;
        let dir_parts = dir.parts().count();
        let mut doomed = Vec::new();
        for meta in objects {
            let Some(first) = meta.location.parts().nth(dir_parts) else {
                continue;
            };
            let first = first.as_ref();
            if first.starts_with('_') {
                continue;
            }
            let version = first.trim_end_matches(".parquet");
            if !kept.iter().any(|k| k == version) && version <= self.run_id.as_str() {
                doomed.push(meta.location);
            }
        }
        for path in doomed {
            match store.object_store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store.io_error(&path, e).into()),
            }
        }
        if let Some(local) = self.local_dir(&format!("_versions/{mart}")) {
            remove_empty_dirs(&local);
        }
        Ok(())
    }

    /// Removes a version that will not be published (the run failed).
    pub async fn discard(&self, written: &WrittenMart) {
        let store = &self.store;
        let listing: Vec<_> = store
            .object_store
            .list(Some(&written.version_path))
            .try_collect()
            .await
            .unwrap_or_default();
        for meta in listing {
            let _ = store.object_store.delete(&meta.location).await;
        }
        let _ = store.object_store.delete(&written.version_path).await;
    }

    fn local_dir(&self, rel: &str) -> Option<std::path::PathBuf> {
        if self.store.base_url.scheme() != "file" {
            return None;
        }
        let url = url::Url::parse(&self.store.url(&self.store.path(rel).ok()?)).ok()?;
        url.to_file_path().ok()
    }

    /// On a local disk, points the symlink `<mart>` at the new version with one rename.
    fn swap_local_link(&self, written: &WrittenMart) -> Result<(), PublishError> {
        let Some(link) = self.local_dir(&written.mart) else {
            return Ok(());
        };
        let target =
            std::path::PathBuf::from(format!("_versions/{}/{}", written.mart, written.version));
        let tmp = link.with_file_name(format!(".{}.{}.link", written.mart, written.version));
        let io = |e: std::io::Error| PublishError::Other {
            mart: written.mart.clone(),
            message: format!("{}: {e}", link.display()),
        };
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &tmp).map_err(io)?;
        if link.is_dir() && !link.is_symlink() {
            return Err(PublishError::Other {
                mart: written.mart.clone(),
                message: format!(
                    "{} is a folder, not a link made by crm-marts; move it away",
                    link.display()
                ),
            });
        }
        std::fs::rename(&tmp, &link).map_err(io)?;
        Ok(())
    }
}

/// The version of `mart` readers see now (its run id) and the URL of that version's
/// immutable copy (`_versions/<mart>/<run_id>.parquet`, or its folder for a partitioned
/// mart); `None` when the mart was never published.
pub async fn live_version(
    store: &Store,
    mart: &str,
) -> Result<Option<(String, String)>, PublishError> {
    let pointer = store.path(&format!("_versions/{mart}/_current"))?;
    let version = match store.object_store.get(&pointer).await {
        Ok(r) => r.bytes().await.map_err(|e| store.io_error(&pointer, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store.io_error(&pointer, e).into()),
    };
    let version = String::from_utf8_lossy(&version).trim().to_string();
    let file = store.path(&format!("_versions/{mart}/{version}.parquet"))?;
    let url = match store.object_store.head(&file).await {
        Ok(_) => store.url(&file),
        Err(object_store::Error::NotFound { .. }) => format!(
            "{}/",
            store.url(&store.path(&format!("_versions/{mart}/{version}"))?)
        ),
        Err(e) => return Err(store.io_error(&file, e).into()),
    };
    Ok(Some((version, url)))
}

/// The Arrow schema of the version of `mart` readers see now, read from its Parquet
/// footers (partition columns of a partitioned mart are in its paths, not in the files);
/// `None` when the mart was never published.
pub async fn live_schema(
    store: &Store,
    mart: &str,
) -> Result<Option<datafusion::arrow::datatypes::SchemaRef>, PublishError> {
    let Some((_, url)) = live_version(store, mart).await? else {
        return Ok(None);
    };
    let ctx = datafusion::prelude::SessionContext::new();
    store.register(&ctx);
    let read = |source| PublishError::Read {
        mart: mart.into(),
        source,
    };
    let df = ctx
        .read_parquet(url, datafusion::prelude::ParquetReadOptions::default())
        .await
        .map_err(read)?;
    Ok(Some(Arc::new(df.schema().as_arrow().clone())))
}

fn remove_empty_dirs(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                remove_empty_dirs(&path);
                let _ = std::fs::remove_dir(&path);
            }
        }
    }
}

/// How a run writes the tables it keeps for itself between steps (materialized tables and
/// CTEs, built-in steps' results): read once or twice and then deleted, so written for
/// speed: no dictionaries (most of their text, ids and keys, is distinct, and building a
/// dictionary only to drop it costs more than the rest of the encoding) and statistics per
/// row group, not per page.
pub fn scratch_props() -> WriterProperties {
    WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .build()
}

/// Streams a DataFrame into one Parquet file, batch by batch; returns the rows written.
pub async fn write_stream(
    store: Arc<dyn object_store::ObjectStore>,
    path: ObjectPath,
    df: DataFrame,
    props: WriterProperties,
) -> Result<u64, datafusion::error::DataFusionError> {
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    // The physical schema, not the logical one: they can differ (e.g. timestamp units).
    let mut stream = datafusion::physical_plan::execute_stream(plan.clone(), task)?;
    let schema = stream.schema();
    let sink = BufWriter::new(store, path.clone());
    let mut writer = AsyncArrowWriter::try_new(sink, schema, Some(props))?;
    let mut rows = 0u64;
    let mut writing = std::time::Duration::ZERO;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        let started = std::time::Instant::now();
        writer.write(&batch).await?;
        writing += started.elapsed();
    }
    let started = std::time::Instant::now();
    writer.close().await?;
    writing += started.elapsed();
    // `CRM_MARTS_LOG=crm_marts::plan=trace`: the plan as it ran, with each operator's rows,
    // time and spills, and the time the Parquet writer took.
    if tracing::enabled!(target: "crm_marts::plan", tracing::Level::TRACE) {
        let text = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
            plan.as_ref(),
        )
        .indent(true)
        .to_string();
        tracing::trace!(target: "crm_marts::plan", table = %path, rows, parquet_write_ms = writing.as_millis() as u64, "plan with metrics:\n{text}");
    }
    Ok(rows)
}

fn count_rows(batches: &[datafusion::arrow::array::RecordBatch]) -> u64 {
    use datafusion::arrow::array::{Array, UInt64Array};
    batches
        .iter()
        .filter_map(|b| {
            b.column_by_name("count").and_then(|c| {
                c.as_any()
                    .downcast_ref::<UInt64Array>()
                    .map(|a| a.iter().flatten().sum::<u64>())
            })
        })
        .sum()
}

/// Copies `from` over `to` on the server, replacing what `to` held in one operation.
/// object_store 0.13's GCS client swaps its copy modes (apache/arrow-rs-object-store#712,
/// fixed in 0.14): there the overwriting copy is the one asked for as `CopyMode::Create`.
/// Should a release fix it, that copy refuses an existing `to`, and the copy asked for as
/// `CopyMode::Overwrite` is then the overwriting one.
async fn copy_over(store: &Store, from: &ObjectPath, to: &ObjectPath) -> object_store::Result<()> {
    let copy = |mode| {
        store.object_store.copy_opts(
            from,
            to,
            object_store::CopyOptions {
                mode,
                ..Default::default()
            },
        )
    };
    if store.base_url.scheme() == "gs" {
        match copy(object_store::CopyMode::Create).await {
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {}
            other => return other,
        }
    }
    copy(object_store::CopyMode::Overwrite).await
}

/// Copies a local file into the store, streaming.
pub async fn upload_file(
    store: &Store,
    local: &std::path::Path,
    dest: &ObjectPath,
) -> Result<(), StorageError> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|e| store.local_error(local, e))?;
    let mut writer = BufWriter::new(store.object_store.clone(), dest.clone());
    tokio::io::copy(&mut file, &mut writer)
        .await
        .map_err(|e| store.local_error(local, e))?;
    writer
        .shutdown()
        .await
        .map_err(|e| store.local_error(local, e))?;
    Ok(())
}
