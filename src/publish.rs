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
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet;
use datafusion::parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowLeafColumn, ArrowRowGroupWriterFactory,
};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::file::writer::SerializedFileWriter;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

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
///
/// The file's columns are encoded and compressed in parallel, each by a task of its own
/// (as DataFusion's own Parquet sink does): one encoder would otherwise be a single core's
/// work beside a query that runs on all of them, and for wide tables the encoding is most
/// of a step's time. The bytes are those a sequential `ArrowWriter` writes.
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
    let mut writer = ParallelWriter::try_new(BufWriter::new(store, path.clone()), schema, props)?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).await?;
    }
    let writing = writer.close().await?;
    // `CRM_MARTS_LOG=crm_marts::plan=trace`: the plan as it ran, with each operator's rows,
    // time and spills, and the time the Parquet writer took.
    if tracing::enabled!(target: "crm_marts::plan", tracing::Level::TRACE) {
        let text = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
            plan.as_ref(),
        )
        .indent(true)
        .to_string();
        tracing::trace!(target: "crm_marts::plan", table = %path, rows, parquet_encode_ms = writing.encode.as_millis() as u64, parquet_wait_ms = writing.wait.as_millis() as u64, "plan with metrics:\n{text}");
    }
    Ok(rows)
}

/// The bytes a [`ParallelWriter`]'s file writer has produced and not yet sent on.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

/// One row group's column encoders, each a task fed through a channel.
struct RowGroupEncoders {
    senders: Vec<tokio::sync::mpsc::Sender<ArrowLeafColumn>>,
    tasks: Vec<tokio::task::JoinHandle<parquet::errors::Result<(ArrowColumnChunk, Duration)>>>,
    rows: usize,
}

/// Time a [`ParallelWriter`] took: encoding summed over its column tasks, and the time
/// the query waited for them.
#[derive(Default)]
struct WriteTimes {
    encode: Duration,
    wait: Duration,
}

/// A Parquet file written from a stream of batches, with every column of a row group
/// encoded by a task of its own.
struct ParallelWriter {
    file: SerializedFileWriter<SharedBuffer>,
    columns: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    buffer: SharedBuffer,
    sink: BufWriter,
    max_rows: usize,
    row_group: Option<RowGroupEncoders>,
    row_groups: usize,
    times: WriteTimes,
}

impl ParallelWriter {
    fn try_new(
        sink: BufWriter,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> parquet::errors::Result<Self> {
        let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
        let buffer = SharedBuffer::default();
        // Through ArrowWriter, so that the file has the same schema and metadata
        // (the embedded Arrow schema) as one ArrowWriter writes alone.
        let (file, columns) = ArrowWriter::try_new(buffer.clone(), schema.clone(), Some(props))?
            .into_serialized_writer()?;
        Ok(Self {
            file,
            columns,
            schema,
            buffer,
            sink,
            max_rows,
            row_group: None,
            row_groups: 0,
            times: WriteTimes::default(),
        })
    }

    async fn write(&mut self, batch: &RecordBatch) -> parquet::errors::Result<()> {
        let mut batch = batch.clone();
        while batch.num_rows() > 0 {
            if self.row_group.is_none() {
                self.row_group = Some(self.start_row_group()?);
            }
            let group = self.row_group.as_mut().expect("just started");
            let take = batch.num_rows().min(self.max_rows - group.rows);
            let part = batch.slice(0, take);
            batch = batch.slice(take, batch.num_rows() - take);
            group.rows += take;
            let started = Instant::now();
            let mut leaves = Vec::with_capacity(group.senders.len());
            for (field, column) in self.schema.fields().iter().zip(part.columns()) {
                leaves.extend(compute_leaves(field, column)?);
            }
            let mut failed = false;
            for (sender, leaf) in group.senders.iter().zip(leaves) {
                failed |= sender.send(leaf).await.is_err();
            }
            self.times.wait += started.elapsed();
            if failed || group.rows == self.max_rows {
                // A task that stopped early has an error to report.
                self.finish_row_group().await?;
            }
        }
        Ok(())
    }

    fn start_row_group(&self) -> parquet::errors::Result<RowGroupEncoders> {
        let writers = self.columns.create_column_writers(self.row_groups)?;
        let (senders, tasks) = writers
            .into_iter()
            .map(|mut writer| {
                // A few batches in flight per column keeps every core busy without
                // holding much more than the encoders do.
                let (sender, mut receiver) = tokio::sync::mpsc::channel::<ArrowLeafColumn>(4);
                let task = tokio::spawn(async move {
                    let mut encode = Duration::ZERO;
                    while let Some(leaf) = receiver.recv().await {
                        let started = Instant::now();
                        writer.write(&leaf)?;
                        encode += started.elapsed();
                    }
                    let started = Instant::now();
                    let chunk = writer.close()?;
                    Ok((chunk, encode + started.elapsed()))
                });
                (sender, task)
            })
            .unzip();
        Ok(RowGroupEncoders {
            senders,
            tasks,
            rows: 0,
        })
    }

    /// Waits for the row group's encoders and appends their column chunks in order.
    async fn finish_row_group(&mut self) -> parquet::errors::Result<()> {
        let Some(RowGroupEncoders { senders, tasks, .. }) = self.row_group.take() else {
            return Ok(());
        };
        drop(senders);
        let started = Instant::now();
        let mut chunks = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (chunk, encode) = task
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))??;
            self.times.encode += encode;
            chunks.push(chunk);
        }
        let mut row_group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.row_groups += 1;
        self.send_on().await?;
        self.times.wait += started.elapsed();
        Ok(())
    }

    async fn send_on(&mut self) -> parquet::errors::Result<()> {
        let bytes = self.buffer.take();
        if !bytes.is_empty() {
            self.sink
                .write_all(&bytes)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        }
        Ok(())
    }

    async fn close(mut self) -> parquet::errors::Result<WriteTimes> {
        self.finish_row_group().await?;
        let started = Instant::now();
        self.file.finish()?;
        self.send_on().await?;
        self.sink
            .shutdown()
            .await
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        self.times.wait += started.elapsed();
        Ok(self.times)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int64Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use object_store::memory::InMemory;

    fn batches(schema: &SchemaRef, sizes: &[usize]) -> Vec<RecordBatch> {
        let mut start = 0usize;
        sizes
            .iter()
            .map(|&n| {
                let rows = start..start + n;
                start += n;
                let ids: ArrayRef = Arc::new(Int64Array::from_iter(
                    rows.clone().map(|i| (i % 7 != 0).then_some(i as i64 * 31)),
                ));
                let names: ArrayRef = Arc::new(StringArray::from_iter(
                    rows.clone()
                        .map(|i| (i % 5 != 0).then(|| format!("name {}", i % 97))),
                ));
                let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                    rows.map(|i| {
                        (i % 3 != 0).then(|| (0..i % 4).map(|j| Some(j as i64)).collect::<Vec<_>>())
                    }),
                ));
                RecordBatch::try_new(schema.clone(), vec![ids, names, lists]).unwrap()
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn columns_encoded_in_parallel_give_the_bytes_of_one_arrow_writer() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new_list("tags", Field::new_list_field(DataType::Int64, true), true),
        ]));
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        // Row groups of 1,000 rows from batches that straddle them, an empty batch, and
        // a table with no rows at all.
        for sizes in [vec![700, 0, 700, 1300, 300], vec![1000], vec![]] {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
                .set_statistics_enabled(EnabledStatistics::Page)
                .set_max_row_group_row_count(Some(1000))
                .set_key_value_metadata(Some(vec![KeyValue::new("k".into(), "v".to_string())]))
                .build();
            let input = batches(&schema, &sizes);
            let mut expected = Vec::new();
            let mut one =
                ArrowWriter::try_new(&mut expected, schema.clone(), Some(props.clone())).unwrap();
            for batch in &input {
                one.write(batch).unwrap();
            }
            one.close().unwrap();

            let path = ObjectPath::from("t.parquet");
            let mut writer = ParallelWriter::try_new(
                BufWriter::new(store.clone(), path.clone()),
                schema.clone(),
                props,
            )
            .unwrap();
            for batch in &input {
                writer.write(batch).await.unwrap();
            }
            writer.close().await.unwrap();
            let written = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(written.as_ref(), expected.as_slice(), "batches {sizes:?}");
        }
    }
}
