//! Loading sources. Exports with a declared schema are read row by row: rows that fit
//! become typed Arrow batches staged as Parquet in the work folder, rows that do not are
//! written to a quarantine file with file, line and reason. Parquet exports and sources
//! without a schema are handed to DataFusion directly. Inputs are only ever read.
//!
//! An incremental source (`incremental:` in the pipeline) stages each file on its own and
//! keeps the staged copies in the publish store under `_state/<pipeline>/<source>/`, with
//! `state.json` naming each file by path, size and etag. The next run parses only files
//! that are new, changed, or modified within the late-data window before the last
//! successful run started; the others are read from their staged copy.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use futures::StreamExt;
use globset::Glob;
use object_store::{GetResultPayload, ObjectMeta, ObjectStoreExt};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::params::{render_path, Params};
use crate::config::pipeline::{Column, ColumnType, Source, SourceFormat, SourceLocation};
use crate::engine::Placement;
use crate::storage::{StorageError, Store, Stores};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{source_name}`: {message}")]
    Config {
        source_name: String,
        message: String,
    },
    #[error("source `{source_name}`: no files found at {location}")]
    NoFiles {
        source_name: String,
        location: String,
    },
    #[error("source `{source_name}`: {0}", source_name = .1)]
    Storage(#[source] StorageError, String),
    #[error("source `{source_name}`: {file}: {message}")]
    File {
        source_name: String,
        file: String,
        message: String,
    },
    #[error(
        "source `{source_name}`: {bad} of {total} rows quarantined, over the error budget ({budget}); see {quarantine}"
    )]
    BudgetExceeded {
        source_name: String,
        bad: u64,
        total: u64,
        budget: String,
        quarantine: String,
    },
    #[error("source `{source_name}`: {0}", source_name = .1)]
    DataFusion(#[source] datafusion::error::DataFusionError, String),
}

/// One input file as the manifest records it.
#[derive(Debug, Clone, Serialize)]
pub struct InputFile {
    pub path: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: DateTime<Utc>,
    pub rows: Option<u64>,
    pub quarantined: u64,
    /// Read from the staged copy of an earlier run (incremental sources).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
}

/// What loading one source did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedSource {
    pub name: String,
    pub files: Vec<InputFile>,
    /// Rows read (good and bad), when the rows were read one by one.
    pub rows: Option<u64>,
    pub quarantined: u64,
    /// Quarantined rows by reason kind, e.g. `orders.quantity: not an integer`.
    pub reasons: BTreeMap<String, u64>,
    /// Rows that repeat the key of an earlier row (`key:` of the source), when declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_key_rows: Option<u64>,
    /// Local quarantine file to publish, when rows were quarantined.
    #[serde(skip)]
    pub quarantine_file: Option<PathBuf>,
    /// For an incremental source: the state to record once the run has succeeded.
    #[serde(skip)]
    pub next_state: Option<SourceState>,
}

/// Where incremental sources keep their state: the publish store of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct IncrementalContext<'a> {
    pub store: &'a Store,
    pub pipeline: &'a str,
    /// Parse every file again, as if no earlier run existed.
    pub full_refresh: bool,
}

/// What an incremental source knows after a successful run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceState {
    /// Changes when the declared schema or the parsing options change: the staged copies
    /// of an older fingerprint are not reused.
    pub fingerprint: String,
    pub run_id: String,
    pub run_started_at: DateTime<Utc>,
    pub files: Vec<StagedFile>,
}

/// One export file and its staged copy (`files/<staged>` under the state folder).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedFile {
    pub path: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: DateTime<Utc>,
    pub staged: String,
    pub rows: u64,
}

fn state_dir(ctx: &IncrementalContext<'_>, source: &str) -> String {
    format!("_state/{}/{source}", ctx.pipeline)
}

/// The fingerprint of everything that decides how a file is parsed.
fn fingerprint(source: &Source) -> String {
    use sha2::{Digest, Sha256};
    let text = format!("{:?}|{:?}|{:?}", source.format, source.csv, source.schema);
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

async fn read_state(
    ctx: &IncrementalContext<'_>,
    source: &str,
) -> Result<Option<SourceState>, StorageError> {
    let path = ctx
        .store
        .path(&format!("{}/state.json", state_dir(ctx, source)))?;
    match ctx.store.object_store.get(&path).await {
        Ok(r) => {
            let bytes = r.bytes().await.map_err(|e| ctx.store.io_error(&path, e))?;
            match serde_json::from_slice(&bytes) {
                Ok(state) => Ok(Some(state)),
                Err(e) => {
                    tracing::warn!(source, error = %e, "unreadable incremental state; every file is read again");
                    Ok(None)
                }
            }
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(ctx.store.io_error(&path, e)),
    }
}

/// Records the state of a source after a successful run and removes staged copies no
/// longer named by it.
pub async fn commit_state(
    ctx: &IncrementalContext<'_>,
    source: &str,
    state: &SourceState,
) -> Result<(), StorageError> {
    use futures::TryStreamExt;
    let dir = state_dir(ctx, source);
    let path = ctx.store.path(&format!("{dir}/state.json"))?;
    let body = serde_json::to_vec_pretty(state).expect("state serialises");
    ctx.store
        .object_store
        .put(&path, body.into())
        .await
        .map_err(|e| ctx.store.io_error(&path, e))?;
    let files = ctx.store.path(&format!("{dir}/files"))?;
    let listed: Vec<ObjectMeta> = ctx
        .store
        .object_store
        .list(Some(&files))
        .try_collect()
        .await
        .map_err(|e| ctx.store.io_error(&files, e))?;
    for meta in listed {
        let name = meta.location.filename().unwrap_or_default();
        if !state.files.iter().any(|f| f.staged == name) {
            match ctx.store.object_store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(ctx.store.io_error(&meta.location, e)),
            }
        }
    }
    Ok(())
}

/// Lists the files of a source: one file, every file under a prefix, or a glob.
pub async fn list_files(
    source: &Source,
    stores: &Stores,
    params: &Params,
) -> Result<(Store, Vec<ObjectMeta>), SourceError> {
    let name = &source.name;
    let (store, rel) = match &source.location {
        SourceLocation::Store { store, path } => {
            let store = stores
                .get(store)
                .map_err(|e| SourceError::Storage(e, name.clone()))?
                .clone();
            let rel = render_path(path, params).map_err(|message| SourceError::Config {
                source_name: name.clone(),
                message,
            })?;
            (store, rel)
        }
        SourceLocation::Seed(file) => {
            let dir = file.parent().unwrap_or(Path::new("."));
            let dir = std::fs::canonicalize(dir).map_err(|e| SourceError::Config {
                source_name: name.clone(),
                message: format!("seed folder {}: {e}", dir.display()),
            })?;
            // A plain local file system with the folder as prefix: registering it for
            // file:// must not change how other local paths resolve.
            let prefix = dir.to_string_lossy().trim_start_matches('/').to_string();
            let local = object_store::local::LocalFileSystem::new();
            let mut store = Store::from_object_store("seeds", "file://", Arc::new(local), &prefix);
            store.display_url = url::Url::from_directory_path(&dir)
                .expect("absolute dir")
                .to_string();
            let file_name = file
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_default()
                .to_string();
            (store, file_name)
        }
    };
    let is_glob = rel.contains(['*', '?', '[']);
    let mut files = Vec::new();
    if is_glob {
        let static_part: Vec<&str> = rel
            .split('/')
            .take_while(|s| !s.contains(['*', '?', '[']))
            .collect();
        let prefix = store
            .path(&static_part.join("/"))
            .map_err(|e| SourceError::Storage(e, name.clone()))?;
        let full_glob = format!("{}/{}", store.prefix.as_ref(), rel.trim_start_matches('/'));
        let full_glob = full_glob.trim_start_matches('/');
        let matcher = Glob::new(full_glob)
            .map_err(|e| SourceError::Config {
                source_name: name.clone(),
                message: format!("bad glob {rel:?}: {e}"),
            })?
            .compile_matcher();
        let mut listing = store.object_store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta =
                meta.map_err(|e| SourceError::Storage(store.io_error(&prefix, e), name.clone()))?;
            if matcher.is_match(meta.location.as_ref()) {
                files.push(meta);
            }
        }
    } else {
        let path = store
            .path(&rel)
            .map_err(|e| SourceError::Storage(e, name.clone()))?;
        match store.object_store.head(&path).await {
            Ok(meta) => files.push(meta),
            Err(object_store::Error::NotFound { .. }) => {
                let mut listing = store.object_store.list(Some(&path));
                while let Some(meta) = listing.next().await {
                    files.push(meta.map_err(|e| {
                        SourceError::Storage(store.io_error(&path, e), name.clone())
                    })?);
                }
            }
            Err(e) => return Err(SourceError::Storage(store.io_error(&path, e), name.clone())),
        }
    }
    // Hidden and in-progress files are never inputs.
    files.retain(|m| {
        m.location
            .filename()
            .is_some_and(|f| !f.starts_with('.') && !f.starts_with('_') && !f.contains('#'))
    });
    files.sort_by(|a, b| a.location.cmp(&b.location));
    if files.is_empty() {
        return Err(SourceError::NoFiles {
            source_name: name.clone(),
            location: format!("{}{}", store.display_url, rel),
        });
    }
    Ok((store, files))
}

/// Loads a source and registers it as a table named like the source.
pub async fn load(
    ctx: &SessionContext,
    source: &Source,
    stores: &Stores,
    params: &Params,
    placement: &Placement,
    work_dir: &Path,
    incremental: Option<IncrementalContext<'_>>,
) -> Result<LoadedSource, SourceError> {
    let name = source.name.clone();
    let (store, metas) = match list_files(source, stores, params).await {
        Err(SourceError::NoFiles { .. }) if source.optional => {
            let columns = source.schema.as_deref().unwrap_or_default();
            let fields: Vec<Field> = columns
                .iter()
                .map(|c| Field::new(&c.name, arrow_type(c.kind), true))
                .collect();
            let schema = Arc::new(Schema::new(fields));
            let df_err = |e| SourceError::DataFusion(e, name.clone());
            if placement.is_shared() {
                // A cluster cannot read an in-memory table: an empty Parquet file instead.
                let empty = work_dir.join(format!("{name}.empty.parquet"));
                let file = File::create(&empty).map_err(|e| df_err(e.into()))?;
                datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None)
                    .and_then(|w| w.close().map(|_| ()))
                    .map_err(|e| df_err(e.into()))?;
                placement
                    .register_local(ctx, &name, &empty)
                    .await
                    .map_err(df_err)?;
            } else {
                let table =
                    datafusion::catalog::MemTable::try_new(schema, vec![vec![]]).map_err(df_err)?;
                ctx.register_table(name.as_str(), Arc::new(table))
                    .map_err(df_err)?;
            }
            return Ok(LoadedSource {
                name,
                files: vec![],
                rows: Some(0),
                quarantined: 0,
                reasons: BTreeMap::new(),
                duplicate_key_rows: None,
                quarantine_file: None,
                next_state: None,
            });
        }
        other => other?,
    };
    store.register(ctx);
    let mut files: Vec<InputFile> = metas
        .iter()
        .map(|m| InputFile {
            path: store.url(&m.location),
            size: m.size,
            etag: m.e_tag.clone(),
            last_modified: m.last_modified,
            rows: None,
            quarantined: 0,
            reused: false,
        })
        .collect();
    let urls: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    let df_err = |e| SourceError::DataFusion(e, name.clone());

    let schema = match (&source.schema, source.format) {
        (Some(schema), SourceFormat::Csv | SourceFormat::Ndjson) => schema,
        (declared, format) => {
            let df = match format {
                SourceFormat::Parquet => match ctx
                    .read_parquet(urls.clone(), ParquetReadOptions::default())
                    .await
                {
                    Ok(df) => Ok(df),
                    // Name the file that cannot be read, not only the source.
                    Err(e) => {
                        for url in &urls {
                            if let Err(file_error) = ctx
                                .read_parquet(url.as_str(), ParquetReadOptions::default())
                                .await
                            {
                                return Err(SourceError::File {
                                    source_name: name.clone(),
                                    file: url.clone(),
                                    message: file_error.to_string(),
                                });
                            }
                        }
                        Err(e)
                    }
                },
                SourceFormat::Csv if source.csv.whitespace => {
                    return Err(SourceError::Config {
                        source_name: name.clone(),
                        message: "a whitespace-separated CSV needs a declared schema".into(),
                    })
                }
                SourceFormat::Csv => {
                    let opts = CsvReadOptions::new()
                        .has_header(source.csv.header)
                        .delimiter(source.csv.delimiter)
                        .quote(source.csv.quote)
                        .file_extension("");
                    ctx.read_csv(urls, opts).await
                }
                SourceFormat::Ndjson => {
                    ctx.read_json(urls, JsonReadOptions::default().file_extension(""))
                        .await
                }
            }
            .map_err(df_err)?;
            let df = match declared {
                Some(cols) => project_declared(df, cols, &name).map_err(df_err)?,
                None => df,
            };
            ctx.register_table(name.as_str(), df.into_view())
                .map_err(df_err)?;
            return Ok(LoadedSource {
                name,
                files,
                rows: None,
                quarantined: 0,
                reasons: BTreeMap::new(),
                duplicate_key_rows: None,
                quarantine_file: None,
                next_state: None,
            });
        }
    };

    if let (Some(window), Some(inc)) = (source.incremental, incremental) {
        return load_incremental(
            ctx, source, schema, &store, &metas, files, placement, work_dir, window, inc,
        )
        .await;
    }
    let staged = work_dir.join(format!("{name}.parquet"));
    let quarantine_path = work_dir.join(format!("{name}.quarantine.parquet"));
    let mut stager = Stager::new(&name, schema, &staged, &quarantine_path).map_err(|message| {
        SourceError::File {
            source_name: name.clone(),
            file: staged.display().to_string(),
            message,
        }
    })?;
    for (meta, file) in metas.iter().zip(files.iter_mut()) {
        stager = stage_file(stager, source, &store, meta, file, work_dir).await?;
    }
    let summary = stager.finish().map_err(|message| SourceError::File {
        source_name: name.clone(),
        file: staged.display().to_string(),
        message,
    })?;
    placement
        .register_local(ctx, &name, &staged)
        .await
        .map_err(df_err)?;
    Ok(LoadedSource {
        name,
        files,
        rows: Some(summary.rows),
        quarantined: summary.bad,
        reasons: summary.reasons,
        duplicate_key_rows: None,
        quarantine_file: (summary.bad > 0).then_some(quarantine_path),
        next_state: None,
    })
}

/// Reads one export file through the stager (into its current staged file), and gives
/// the stager back.
async fn stage_file(
    stager: Stager,
    source: &Source,
    store: &Store,
    meta: &ObjectMeta,
    file: &mut InputFile,
    work_dir: &Path,
) -> Result<Stager, SourceError> {
    let name = source.name.clone();
    let local = local_copy(store, meta, work_dir)
        .await
        .map_err(|e| SourceError::Storage(e, name.clone()))?;
    let url = file.path.clone();
    let format = source.format;
    let csv = source.csv.clone();
    let stop = crate::memory::Stop::current();
    let (stager, result) = tokio::task::spawn_blocking(move || {
        let mut stager = stager;
        stager.stop = stop;
        let result = match format {
            SourceFormat::Csv => stager.read_csv(&local.path, &url, &csv),
            _ => stager.read_ndjson(&local.path, &url),
        };
        drop(local);
        (stager, result)
    })
    .await
    .expect("source reader panicked");
    let (rows, bad) = result.map_err(|message| SourceError::File {
        source_name: name.clone(),
        file: file.path.clone(),
        message,
    })?;
    file.rows = Some(rows);
    file.quarantined = bad;
    Ok(stager)
}

/// Loads an incremental source: files unchanged since the last successful run (and older
/// than the late-data window before it) are read from their staged copies; the others
/// are parsed, each into a staged file of its own, which is kept for the next run.
#[allow(clippy::too_many_arguments)]
async fn load_incremental(
    ctx: &SessionContext,
    source: &Source,
    schema: &[Column],
    store: &Store,
    metas: &[ObjectMeta],
    mut files: Vec<InputFile>,
    placement: &Placement,
    work_dir: &Path,
    window: chrono::Duration,
    inc: IncrementalContext<'_>,
) -> Result<LoadedSource, SourceError> {
    let name = source.name.clone();
    let storage = |e: StorageError| SourceError::Storage(e, name.clone());
    let file_err = |file: &Path, message: String| SourceError::File {
        source_name: name.clone(),
        file: file.display().to_string(),
        message,
    };
    let fingerprint = fingerprint(source);
    let previous = if inc.full_refresh {
        None
    } else {
        read_state(&inc, &name).await.map_err(storage)?.filter(|s| {
            let same = s.fingerprint == fingerprint;
            if !same {
                tracing::info!(source = %name, "schema or parsing options changed; every file is read again");
            }
            same
        })
    };
    let dir = work_dir.join(format!("{name}.staged"));
    std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e.to_string()))?;
    let state_files = format!("{}/files", state_dir(&inc, &name));
    // The first staged file holds no rows: it gives the table its schema when every file
    // is reused.
    let quarantine_path = work_dir.join(format!("{name}.quarantine.parquet"));
    let first = dir.join("000000-schema.parquet");
    let mut stager =
        Stager::new(&name, schema, &first, &quarantine_path).map_err(|m| file_err(&first, m))?;
    let mut next = SourceState {
        fingerprint: fingerprint.clone(),
        run_id: String::new(),
        run_started_at: Utc::now(),
        files: Vec::new(),
    };
    let mut fresh: Vec<(PathBuf, String)> = Vec::new();
    let mut total_rows = 0u64;
    let mut reused = 0usize;
    for (i, (meta, file)) in metas.iter().zip(files.iter_mut()).enumerate() {
        let local = dir.join(format!("{:06}.parquet", i + 1));
        let known = previous.as_ref().and_then(|p| {
            p.files
                .iter()
                .find(|f| f.path == file.path && f.size == file.size && f.etag == file.etag)
                .filter(|_| file.last_modified < p.run_started_at - window)
        });
        if let Some(known) = known {
            let cached = inc
                .store
                .path(&format!("{state_files}/{}", known.staged))
                .map_err(storage)?;
            match download(inc.store, &cached, &local).await {
                Ok(()) => {
                    file.rows = Some(known.rows);
                    file.reused = true;
                    total_rows += known.rows;
                    reused += 1;
                    next.files.push(known.clone());
                    continue;
                }
                // A staged copy that went missing is rebuilt from the export.
                Err(e) => {
                    tracing::warn!(source = %name, file = %file.path, error = %e, "staged copy unreadable; reading the export again")
                }
            }
        }
        stager.rotate(&local).map_err(|m| file_err(&local, m))?;
        stager = stage_file(stager, source, store, meta, file, work_dir).await?;
        let staged = format!(
            "{}.parquet",
            file_id(&file.path, file.size, file.etag.as_deref(), &fingerprint)
        );
        total_rows += file.rows.unwrap_or(0);
        next.files.push(StagedFile {
            path: file.path.clone(),
            size: file.size,
            etag: file.etag.clone(),
            last_modified: file.last_modified,
            staged: staged.clone(),
            rows: file.rows.unwrap_or(0),
        });
        fresh.push((local, staged));
    }
    let summary = stager.finish().map_err(|m| file_err(&dir, m))?;
    // Keep the new staged files for the next run. They are named by their export's path,
    // size and etag, so a copy left by a run that then failed is simply reused.
    for (local, staged) in &fresh {
        let dest = inc
            .store
            .path(&format!("{state_files}/{staged}"))
            .map_err(storage)?;
        crate::publish::upload_file(inc.store, local, &dest)
            .await
            .map_err(storage)?;
    }
    tracing::info!(source = %name, parsed = fresh.len(), reused, "incremental source");
    placement
        .register_local(ctx, &name, &dir)
        .await
        .map_err(|e| SourceError::DataFusion(e, name.clone()))?;
    Ok(LoadedSource {
        name: name.clone(),
        files,
        rows: Some(total_rows),
        quarantined: summary.bad,
        reasons: summary.reasons,
        duplicate_key_rows: None,
        quarantine_file: (summary.bad > 0).then_some(quarantine_path),
        next_state: Some(next),
    })
}

/// A staged copy's name: the export's path, size and etag, and the parsing fingerprint.
fn file_id(path: &str, size: u64, etag: Option<&str>, fingerprint: &str) -> String {
    use sha2::{Digest, Sha256};
    let text = format!("{path}\n{size}\n{}\n{fingerprint}", etag.unwrap_or(""));
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

async fn download(
    store: &Store,
    from: &object_store::path::Path,
    to: &Path,
) -> Result<(), StorageError> {
    let result = store
        .object_store
        .get(from)
        .await
        .map_err(|e| store.io_error(from, e))?;
    write_to_file(store, from, result.into_stream(), to).await
}

/// Writes the body of object `from` to the local file `to`.
async fn write_to_file(
    store: &Store,
    from: &object_store::path::Path,
    mut stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    to: &Path,
) -> Result<(), StorageError> {
    use tokio::io::AsyncWriteExt;
    let mut out = tokio::fs::File::create(to)
        .await
        .map_err(|e| store.local_error(to, e))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| store.io_error(from, e))?;
        out.write_all(&chunk)
            .await
            .map_err(|e| store.local_error(to, e))?;
    }
    out.flush().await.map_err(|e| store.local_error(to, e))?;
    Ok(())
}

/// Keeps the declared columns of a typed source, cast to the declared types.
fn project_declared(
    df: datafusion::dataframe::DataFrame,
    cols: &[Column],
    source: &str,
) -> datafusion::error::Result<datafusion::dataframe::DataFrame> {
    use datafusion::prelude::{cast, ident, lit};
    use datafusion::scalar::ScalarValue;
    let present: std::collections::HashSet<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut exprs = Vec::with_capacity(cols.len());
    for c in cols {
        if present.contains(&c.name) || c.required {
            // A missing required column fails here, naming the column.
            exprs.push(cast(ident(&c.name), arrow_type(c.kind)).alias(&c.name));
        } else {
            // An optional column the files lack (a mart written before the column was
            // added, say) reads as NULL rather than failing the run.
            tracing::warn!(source, column = %c.name, "declared column not in the Parquet files; read as NULL");
            exprs.push(cast(lit(ScalarValue::Null), arrow_type(c.kind)).alias(&c.name));
        }
    }
    df.select(exprs)
}

/// A local readable copy of an object: the file itself for local stores, otherwise a
/// download into the work folder that is removed when dropped.
struct LocalFile {
    path: PathBuf,
    temporary: bool,
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn local_copy(
    store: &Store,
    meta: &ObjectMeta,
    work_dir: &Path,
) -> Result<LocalFile, StorageError> {
    let result = store
        .object_store
        .get(&meta.location)
        .await
        .map_err(|e| store.io_error(&meta.location, e))?;
    match result.payload {
        GetResultPayload::File(_, path) => Ok(LocalFile {
            path,
            temporary: false,
        }),
        GetResultPayload::Stream(stream) => {
            let name = meta.location.as_ref().replace('/', "_");
            let path = work_dir.join(format!("download-{name}"));
            let local = LocalFile {
                path: path.clone(),
                temporary: true,
            };
            write_to_file(store, &meta.location, stream, &path).await?;
            Ok(local)
        }
    }
}

pub fn arrow_type(kind: ColumnType) -> DataType {
    match kind {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

const BATCH_ROWS: usize = 65_536;

/// A parsed cell, borrowed from the row being read.
enum Cell<'a> {
    Null,
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(i32),
    Timestamp(i64),
}

struct StageSummary {
    rows: u64,
    bad: u64,
    reasons: BTreeMap<String, u64>,
}

/// Validates rows against the declared columns and writes good rows to the staged
/// Parquet file and bad rows to the quarantine file.
struct Stager {
    source: String,
    columns: Vec<Column>,
    schema: SchemaRef,
    builders: Vec<Box<dyn ArrayBuilder>>,
    pending: usize,
    writer: StagedWriter,
    quarantine: Quarantine,
    rows: u64,
    bad: u64,
    reasons: BTreeMap<String, u64>,
    /// Set when the process passes its memory limit: reading stops at the next batch.
    stop: crate::memory::Stop,
}

impl Stager {
    fn new(
        source: &str,
        columns: &[Column],
        staged: &Path,
        quarantine: &Path,
    ) -> Result<Self, String> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.kind), !c.required))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let writer = StagedWriter::create(staged, schema.clone())?;
        Ok(Self {
            source: source.to_string(),
            columns: columns.to_vec(),
            builders: new_builders(columns),
            schema,
            pending: 0,
            writer,
            quarantine: Quarantine::new(quarantine)?,
            rows: 0,
            bad: 0,
            reasons: BTreeMap::new(),
            stop: crate::memory::Stop::default(),
        })
    }

    /// Closes the current staged file and writes the next rows to `staged`.
    fn rotate(&mut self, staged: &Path) -> Result<(), String> {
        self.flush()?;
        let writer = StagedWriter::create(staged, self.schema.clone())?;
        std::mem::replace(&mut self.writer, writer).close()
    }

    fn read_csv(
        &mut self,
        path: &Path,
        url: &str,
        csv: &crate::config::pipeline::CsvOptions,
    ) -> Result<(u64, u64), String> {
        if csv.whitespace {
            return self.read_whitespace(path, url, csv.header);
        }
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(csv.delimiter)
            .quote(csv.quote)
            .has_headers(csv.header)
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        // Where each declared column sits in the file.
        let positions: Vec<Option<usize>> = if csv.header {
            let header = reader
                .byte_headers()
                .map_err(|e| format!("cannot read header: {e}"))?
                .clone();
            let names: Vec<String> = header
                .iter()
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .collect();
            self.header_positions(&names)?
        } else {
            (0..self.columns.len()).map(Some).collect()
        };
        let (mut rows, mut bad) = (0u64, 0u64);
        let mut record = csv::ByteRecord::new();
        let names: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        let expected_fields = if csv.header {
            reader.byte_headers().map(|h| h.len()).unwrap_or(0)
        } else {
            self.columns.len()
        };
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    rows += 1;
                    bad += 1;
                    self.reject(
                        url,
                        line,
                        "unreadable CSV record",
                        format!("unreadable CSV record: {e}"),
                        "",
                    )?;
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(format!("read error at line {line}: {e}"));
                    }
                    continue;
                }
            }
            rows += 1;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            if record.len() != expected_fields && csv.header {
                bad += 1;
                let raw = raw_record(&record, csv.delimiter);
                let reason = format!("expected {expected_fields} fields, found {}", record.len());
                self.reject(url, line, "wrong number of fields", reason, &raw)?;
                continue;
            }
            let good = self.take_row(
                url,
                line,
                |i| match positions[i].and_then(|p| record.get(p)) {
                    None => Ok(None),
                    Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| {
                        let name = &names[i];
                        (
                            format!("{name}: invalid UTF-8"),
                            format!("column `{name}`: invalid UTF-8"),
                        )
                    }),
                },
                &|| raw_record(&record, csv.delimiter),
            )?;
            if !good {
                bad += 1;
            }
        }
        Ok((rows, bad))
    }

    /// Where each declared column sits in a file with this header; a required column the
    /// header lacks fails the file, naming the column and the header found (every CSV
    /// dialect reads its header through here).
    fn header_positions(&self, header: &[String]) -> Result<Vec<Option<usize>>, String> {
        let names: Vec<&str> = header
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').trim())
            .collect();
        let mut positions = Vec::new();
        for c in &self.columns {
            let pos = names.iter().position(|n| *n == c.name);
            if pos.is_none() && c.required {
                return Err(format!(
                    "required column `{}` is missing from the header (header has: {})",
                    c.name,
                    names.join(", ")
                ));
            }
            positions.push(pos);
        }
        Ok(positions)
    }

    /// Columns separated by runs of spaces or tabs, matched to the declared columns by
    /// position (or by header name when there is a header).
    fn read_whitespace(
        &mut self,
        path: &Path,
        url: &str,
        header: bool,
    ) -> Result<(u64, u64), String> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let reader = BufReader::with_capacity(1 << 20, file);
        let (mut rows, mut bad) = (0u64, 0u64);
        let mut positions: Vec<Option<usize>> = (0..self.columns.len()).map(Some).collect();
        let mut expected = self.columns.len();
        for (idx, line) in reader.split(b'\n').enumerate() {
            let line_no = idx as u64 + 1;
            let bytes = line.map_err(|e| format!("read error at line {line_no}: {e}"))?;
            let text = match std::str::from_utf8(&bytes) {
                Ok(t) => t.trim_end_matches('\r'),
                Err(_) => {
                    rows += 1;
                    bad += 1;
                    self.reject(
                        url,
                        line_no,
                        "invalid UTF-8",
                        "invalid UTF-8".into(),
                        &String::from_utf8_lossy(&bytes),
                    )?;
                    continue;
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = text.split_whitespace().collect();
            if header && idx == 0 {
                let names: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
                positions = self.header_positions(&names)?;
                expected = fields.len();
                continue;
            }
            rows += 1;
            if fields.len() != expected {
                bad += 1;
                let reason = format!("expected {expected} fields, found {}", fields.len());
                self.reject(url, line_no, "wrong number of fields", reason, text)?;
                continue;
            }
            if !self.take_row(
                url,
                line_no,
                |i| Ok(positions[i].and_then(|p| fields.get(p).copied())),
                &|| text.to_string(),
            )? {
                bad += 1;
            }
        }
        Ok((rows, bad))
    }

    fn read_ndjson(&mut self, path: &Path, url: &str) -> Result<(u64, u64), String> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let (mut rows, mut bad) = (0u64, 0u64);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = reader
                .by_ref()
                .read_until(b'\n', &mut buf)
                .map_err(|e| format!("read error after line {line_no}: {e}"))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => t.trim(),
                Err(_) => {
                    rows += 1;
                    bad += 1;
                    self.reject(
                        url,
                        line_no,
                        "invalid UTF-8",
                        "invalid UTF-8".into(),
                        &String::from_utf8_lossy(&buf),
                    )?;
                    continue;
                }
            };
            if text.is_empty() {
                continue;
            }
            rows += 1;
            let texts = match json_row_texts(text, &self.columns) {
                Ok(texts) => texts,
                Err(e) => {
                    bad += 1;
                    self.reject(
                        url,
                        line_no,
                        "invalid JSON",
                        format!("invalid JSON: {e}"),
                        text,
                    )?;
                    continue;
                }
            };
            if !self.take_row(url, line_no, |i| Ok(texts[i].as_deref()), &|| {
                text.to_string()
            })? {
                bad += 1;
            }
        }
        Ok((rows, bad))
    }

    /// Parses one row, cell by cell (`cell(i)` is the text of declared column i), and
    /// stages it or quarantines it with the first reason found. Returns whether it was good.
    fn take_row<'r>(
        &mut self,
        url: &str,
        line: u64,
        cell: impl Fn(usize) -> Result<Option<&'r str>, (String, String)>,
        raw: &dyn Fn() -> String,
    ) -> Result<bool, String> {
        let mut cells: Vec<Cell<'r>> = Vec::with_capacity(self.columns.len());
        let mut failure = None;
        for (i, c) in self.columns.iter().enumerate() {
            match cell(i).and_then(|text| parse_cell(c, text)) {
                Ok(parsed) => cells.push(parsed),
                Err(f) => {
                    failure = Some(f);
                    break;
                }
            }
        }
        match failure {
            None => {
                self.accept(&cells)?;
                Ok(true)
            }
            Some((kind, reason)) => {
                drop(cells);
                self.reject(url, line, &kind, reason, &raw())?;
                Ok(false)
            }
        }
    }

    fn accept(&mut self, cells: &[Cell]) -> Result<(), String> {
        self.rows += 1;
        for (builder, cell) in self.builders.iter_mut().zip(cells) {
            append(builder.as_mut(), cell);
        }
        self.pending += 1;
        if self.pending >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn reject(
        &mut self,
        file: &str,
        line: u64,
        kind: &str,
        reason: String,
        raw: &str,
    ) -> Result<(), String> {
        self.rows += 1;
        self.bad += 1;
        *self
            .reasons
            .entry(format!("{}: {kind}", self.source))
            .or_default() += 1;
        self.quarantine.push(&self.source, file, line, &reason, raw)
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.pending == 0 {
            return Ok(());
        }
        self.stop
            .check(&format!("reading source `{}`", self.source))?;
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| e.to_string())?;
        self.writer.write(batch)?;
        self.pending = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<StageSummary, String> {
        self.flush()?;
        self.writer.close()?;
        self.quarantine.finish()?;
        Ok(StageSummary {
            rows: self.rows,
            bad: self.bad,
            reasons: self.reasons,
        })
    }
}

/// The texts of the declared columns in one NDJSON line (an object), in column order:
/// `None` for a missing key or `null`, a string's value (borrowed from the line when it
/// has no escapes), and any other value as its JSON text. Keys that are not declared are
/// skipped without building their values; a repeated key keeps its last value.
fn json_row_texts<'t>(
    text: &'t str,
    columns: &[Column],
) -> Result<Vec<Option<Cow<'t, str>>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let texts = de.deserialize_map(JsonRow { columns })?;
    de.end()?;
    Ok(texts)
}

struct JsonRow<'c> {
    columns: &'c [Column],
}

impl<'de> serde::de::Visitor<'de> for JsonRow<'_> {
    type Value = Vec<Option<Cow<'de, str>>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut texts = vec![None; self.columns.len()];
        while let Some(key) = map.next_key_seed(JsonText)? {
            let key = key.unwrap_or_default();
            match self.columns.iter().position(|c| c.name == key) {
                Some(i) => texts[i] = map.next_value_seed(JsonText)?,
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(texts)
    }
}

/// One JSON value as text: see [`json_row_texts`].
struct JsonText;

impl<'de> serde::de::DeserializeSeed<'de> for JsonText {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonText {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // As serde_json writes a number it read, e.g. `1e2` as `100.0`.
        Ok(Some(Cow::Owned(serde_json::Value::from(v).to_string())))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let value =
            serde_json::Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Some(Cow::Owned(value.to_string())))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let value =
            serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(Some(Cow::Owned(value.to_string())))
    }
}

/// A staged Parquet file written by a thread of its own: encoding and compressing a batch
/// overlaps the parsing of the next rows, which is the other half of a source's reading.
struct StagedWriter {
    batches: Option<std::sync::mpsc::SyncSender<RecordBatch>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl StagedWriter {
    fn create(path: &Path, schema: SchemaRef) -> Result<Self, String> {
        let file = File::create(path).map_err(|e| format!("cannot create staging file: {e}"))?;
        let mut writer =
            ArrowWriter::try_new(file, schema, Some(staging_props())).map_err(|e| e.to_string())?;
        // Two batches in flight: the parser runs ahead of the writer by little memory.
        let (batches, received) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
        let thread = std::thread::Builder::new()
            .name("crm-marts-stage".into())
            .spawn(move || {
                for batch in received {
                    writer.write(&batch).map_err(|e| e.to_string())?;
                }
                writer.close().map(|_| ()).map_err(|e| e.to_string())
            })
            .map_err(|e| format!("cannot start the staging writer: {e}"))?;
        Ok(Self {
            batches: Some(batches),
            thread: Some(thread),
        })
    }

    fn write(&mut self, batch: RecordBatch) -> Result<(), String> {
        let sent = self.batches.as_ref().is_some_and(|b| b.send(batch).is_ok());
        if sent {
            return Ok(());
        }
        // The writer stopped on an error: that error.
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| "the staging writer stopped".into()))
    }

    /// Waits for the writer to write what it was sent and close the file.
    fn close(mut self) -> Result<(), String> {
        self.join()
    }

    fn join(&mut self) -> Result<(), String> {
        self.batches.take();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err("the staging writer panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for StagedWriter {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

fn staging_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(crate::publish::ROW_GROUP_ROWS))
        .build()
}

fn raw_record(record: &csv::ByteRecord, delimiter: u8) -> String {
    let parts: Vec<String> = record
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    parts.join(&(delimiter as char).to_string())
}

fn new_builders(columns: &[Column]) -> Vec<Box<dyn ArrayBuilder>> {
    columns
        .iter()
        .map(|c| -> Box<dyn ArrayBuilder> {
            match c.kind {
                ColumnType::String => Box::new(StringBuilder::new()),
                ColumnType::Int => Box::new(Int64Builder::new()),
                ColumnType::Float => Box::new(Float64Builder::new()),
                ColumnType::Bool => Box::new(BooleanBuilder::new()),
                ColumnType::Date => Box::new(Date32Builder::new()),
                ColumnType::Timestamp => {
                    Box::new(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                }
            }
        })
        .collect()
}

fn append(builder: &mut dyn ArrayBuilder, cell: &Cell) {
    let any = builder.as_any_mut();
    match cell {
        Cell::Null => {
            if let Some(b) = any.downcast_mut::<StringBuilder>() {
                b.append_null()
            } else if let Some(b) = any.downcast_mut::<Int64Builder>() {
                b.append_null()
            } else if let Some(b) = any.downcast_mut::<Float64Builder>() {
                b.append_null()
            } else if let Some(b) = any.downcast_mut::<BooleanBuilder>() {
                b.append_null()
            } else if let Some(b) = any.downcast_mut::<Date32Builder>() {
                b.append_null()
            } else if let Some(b) = any.downcast_mut::<TimestampMicrosecondBuilder>() {
                b.append_null()
            }
        }
        Cell::Str(s) => any
            .downcast_mut::<StringBuilder>()
            .expect("string column")
            .append_value(s),
        Cell::Int(v) => any
            .downcast_mut::<Int64Builder>()
            .expect("int column")
            .append_value(*v),
        Cell::Float(v) => any
            .downcast_mut::<Float64Builder>()
            .expect("float column")
            .append_value(*v),
        Cell::Bool(v) => any
            .downcast_mut::<BooleanBuilder>()
            .expect("bool column")
            .append_value(*v),
        Cell::Date(v) => any
            .downcast_mut::<Date32Builder>()
            .expect("date column")
            .append_value(*v),
        Cell::Timestamp(v) => any
            .downcast_mut::<TimestampMicrosecondBuilder>()
            .expect("timestamp column")
            .append_value(*v),
    }
}

/// Parses one cell as its declared type. Errors carry a short kind (for counting) and a
/// reason that quotes the value.
fn parse_cell<'a>(c: &Column, raw: Option<&'a str>) -> Result<Cell<'a>, (String, String)> {
    let value = match raw {
        Some(v) if !v.trim().is_empty() => v,
        _ => {
            if c.required {
                return Err((
                    format!("{}: missing", c.name),
                    format!("required column `{}` is empty", c.name),
                ));
            }
            return Ok(Cell::Null);
        }
    };
    let t = value.trim();
    let fail = |what: &str| {
        let shown: String = t.chars().take(60).collect();
        (
            format!("{}: not {what}", c.name),
            format!("column `{}`: {shown:?} is not {what}", c.name),
        )
    };
    match c.kind {
        ColumnType::String => Ok(Cell::Str(value)),
        ColumnType::Int => t.parse().map(Cell::Int).map_err(|_| fail("an integer")),
        ColumnType::Float => match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Cell::Float(v)),
            _ => Err(fail("a number")),
        },
        ColumnType::Bool => match t.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => Ok(Cell::Bool(true)),
            "false" | "f" | "no" | "n" | "0" => Ok(Cell::Bool(false)),
            _ => Err(fail("a boolean")),
        },
        ColumnType::Date => parse_date(t, &c.formats)
            .map(Cell::Date)
            .ok_or_else(|| fail("a date")),
        ColumnType::Timestamp => parse_timestamp(t, &c.formats)
            .map(Cell::Timestamp)
            .ok_or_else(|| fail("a timestamp")),
    }
}

const EPOCH_DAYS_CE: i32 = 719_163;

fn parse_date(t: &str, formats: &[String]) -> Option<i32> {
    let default = ["%Y-%m-%d".to_string()];
    let formats = if formats.is_empty() {
        &default[..]
    } else {
        formats
    };
    formats
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(t, f).ok())
        .map(|d| {
            use chrono::Datelike;
            d.num_days_from_ce() - EPOCH_DAYS_CE
        })
}

/// Timestamps become UTC microseconds. Without formats, RFC 3339 is expected; a format
/// without an offset is read as UTC.
fn parse_timestamp(t: &str, formats: &[String]) -> Option<i64> {
    if formats.is_empty() {
        return DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|d| d.timestamp_micros());
    }
    formats.iter().find_map(|f| {
        if f.contains("%z") || f.contains("%:z") || f.contains("%#z") {
            DateTime::parse_from_str(t, f)
                .ok()
                .map(|d| d.timestamp_micros())
        } else {
            NaiveDateTime::parse_from_str(t, f)
                .ok()
                .map(|d| d.and_utc().timestamp_micros())
        }
    })
}

/// Quarantined rows: source, file, line, reason and the raw record.
struct Quarantine {
    path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    schema: SchemaRef,
    source: StringBuilder,
    file: StringBuilder,
    line: UInt64Builder,
    reason: StringBuilder,
    record: StringBuilder,
    pending: usize,
}

impl Quarantine {
    fn new(path: &Path) -> Result<Self, String> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("file", DataType::Utf8, false),
            Field::new("line", DataType::UInt64, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new("record", DataType::Utf8, false),
        ]));
        Ok(Self {
            path: path.to_path_buf(),
            writer: None,
            schema,
            source: StringBuilder::new(),
            file: StringBuilder::new(),
            line: UInt64Builder::new(),
            reason: StringBuilder::new(),
            record: StringBuilder::new(),
            pending: 0,
        })
    }

    fn push(
        &mut self,
        source: &str,
        file: &str,
        line: u64,
        reason: &str,
        record: &str,
    ) -> Result<(), String> {
        self.source.append_value(source);
        self.file.append_value(file);
        self.line.append_value(line);
        self.reason.append_value(reason);
        self.record.append_value(record);
        self.pending += 1;
        if self.pending >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.pending == 0 {
            return Ok(());
        }
        if self.writer.is_none() {
            let file = File::create(&self.path)
                .map_err(|e| format!("cannot create quarantine file: {e}"))?;
            self.writer = Some(
                ArrowWriter::try_new(file, self.schema.clone(), Some(staging_props()))
                    .map_err(|e| e.to_string())?,
            );
        }
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.source.finish()),
            Arc::new(self.file.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.record.finish()),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| e.to_string())?;
        self.writer
            .as_mut()
            .expect("writer")
            .write(&batch)
            .map_err(|e| e.to_string())?;
        self.pending = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<(), String> {
        self.flush()?;
        if let Some(w) = self.writer.take() {
            w.close().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: ColumnType, required: bool) -> Column {
        Column {
            name: name.into(),
            kind,
            required,
            formats: vec![],
        }
    }

    #[test]
    fn ndjson_cells_are_the_texts_a_parsed_json_object_gives() {
        let columns = [
            col("id", ColumnType::String, true),
            col("n", ColumnType::Float, false),
            col("tags", ColumnType::String, false),
            col("gone", ColumnType::String, false),
            col("ok", ColumnType::Bool, false),
        ];
        // The reference: the whole object parsed to a map, values rendered as JSON text.
        let reference = |text: &str| -> Result<Vec<Option<String>>, ()> {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).map_err(|_| ())?;
            Ok(columns
                .iter()
                .map(|c| match object.get(&c.name) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                })
                .collect())
        };
        for line in [
            r#"{"id":"A1","n":1e2,"tags":["x",{"y": 1}],"extra":{"deep":[1,2]},"ok":true}"#,
            r#"{"id":"caf\u00e9 \"q\"","n":-0.5,"tags":null,"ok":false,"id2":"z"}"#,
            r#"{"n":12345678901234567890,"id":"a","id":"last wins","gone":null}"#,
            r#"{ "\u0069d" : "escaped key" , "n" : 3 }"#,
            r#"{}"#,
            r#"{"id":"A1","n":1,}"#,
            r#"{"id":"A1"} trailing"#,
            r#"["id","A1"]"#,
            r#""A1""#,
        ] {
            let ours = json_row_texts(line, &columns)
                .map(|t| {
                    t.into_iter()
                        .map(|c| c.map(|c| c.into_owned()))
                        .collect::<Vec<_>>()
                })
                .map_err(|_| ());
            assert_eq!(ours, reference(line), "{line}");
        }
        // A string without escapes is borrowed from the line, not copied.
        let texts = json_row_texts(r#"{"id":"A1"}"#, &columns).unwrap();
        assert!(matches!(texts[0], Some(Cow::Borrowed("A1"))));
    }

    #[test]
    fn cells_parse_or_say_why() {
        assert!(matches!(
            parse_cell(&col("q", ColumnType::Int, false), Some(" 3 ")),
            Ok(Cell::Int(3))
        ));
        let (_, reason) = parse_cell(&col("q", ColumnType::Int, false), Some("two"))
            .err()
            .unwrap();
        assert_eq!(reason, "column `q`: \"two\" is not an integer");
        assert!(matches!(
            parse_cell(&col("q", ColumnType::Int, false), Some("")),
            Ok(Cell::Null)
        ));
        assert!(parse_cell(&col("id", ColumnType::String, true), Some(" ")).is_err());
        assert!(parse_cell(&col("d", ColumnType::Date, false), Some("2025-13-45")).is_err());
        let d = Column {
            formats: vec!["%Y-%m-%d".into(), "%d-%m-%Y".into()],
            ..col("d", ColumnType::Date, false)
        };
        assert!(matches!(
            parse_cell(&d, Some("12-03-1985")),
            Ok(Cell::Date(_))
        ));
        assert!(parse_cell(&col("p", ColumnType::Float, false), Some("12,50,0")).is_err());
    }

    #[test]
    fn timestamps_keep_their_offset() {
        let a = parse_timestamp("2026-03-29T03:30:00+02:00", &[]).unwrap();
        let b = parse_timestamp("2026-03-29T01:30:00Z", &[]).unwrap();
        assert_eq!(a, b);
    }
}
