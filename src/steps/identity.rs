//! `identity`: resolves the records of several tables into persons with stable customer
//! keys (see [`crate::identity`]). Its table is the identity map; it also creates
//! `<name>_golden` (the golden record, raw values: hash them before publishing),
//! `<name>_quality` (one row per figure) and `<name>_pairs` (compared pairs with the level
//! and weight of every comparison, for explaining any match).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::prelude::{ident, SessionContext};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{with_block, BuiltinOutput, BuiltinStep};
use crate::config::params::Params;
use crate::identity::config::{CompareOn, IdentityConfig, Settings};
use crate::identity::{self, Context};

#[derive(Debug)]
struct Identity {
    settings: Arc<Settings>,
}

pub fn compile(with: &serde_yaml::Value) -> Result<Box<dyn BuiltinStep>, String> {
    let config: IdentityConfig = with_block(with)?;
    Ok(Box::new(Identity {
        settings: Arc::new(config.check()?),
    }))
}

/// Reads `columns` of `table` as text, one Vec per column, sorted by the columns in order
/// (so that of two rows for one record, the same one wins in every run); rows with a null
/// are skipped.
async fn read_text(
    ctx: &SessionContext,
    table: &str,
    columns: &[&str],
) -> datafusion::error::Result<Vec<Vec<String>>> {
    let df = ctx
        .table(table)
        .await?
        .select(columns.iter().map(|c| ident(*c)).collect::<Vec<_>>())?
        .sort(columns.iter().map(|c| ident(*c).sort(true, true)).collect())?;
    let mut out: Vec<Vec<String>> = vec![Vec::new(); columns.len()];
    for batch in df.collect().await? {
        let arrays: Vec<StringArray> = (0..columns.len())
            .map(|i| {
                let a = cast(batch.column(i), &DataType::Utf8)?;
                Ok(a.as_any()
                    .downcast_ref::<StringArray>()
                    .expect("Utf8")
                    .clone())
            })
            .collect::<datafusion::error::Result<_>>()?;
        for row in 0..batch.num_rows() {
            if arrays.iter().any(|a| a.is_null(row)) {
                continue;
            }
            for (i, a) in arrays.iter().enumerate() {
                out[i].push(a.value(row).trim().to_string());
            }
        }
    }
    Ok(out)
}

async fn pairs_by_record(
    ctx: &SessionContext,
    table: &str,
    columns: [&str; 3],
) -> datafusion::error::Result<HashMap<(String, String), String>> {
    let mut cols = read_text(ctx, table, &columns).await?.into_iter();
    let (a, b, c) = (
        cols.next().unwrap_or_default(),
        cols.next().unwrap_or_default(),
        cols.next().unwrap_or_default(),
    );
    Ok(a.into_iter()
        .zip(b)
        .zip(c)
        .map(|((s, r), v)| ((s, r), v))
        .collect())
}

/// [`pairs_by_record`] of `table`, or nothing without one.
async fn optional_pairs(
    ctx: &SessionContext,
    table: Option<&str>,
    columns: [&str; 3],
) -> datafusion::error::Result<HashMap<(String, String), String>> {
    match table {
        Some(table) => pairs_by_record(ctx, &table.to_lowercase(), columns).await,
        None => Ok(HashMap::new()),
    }
}

impl BuiltinStep for Identity {
    fn inputs(&self) -> Vec<String> {
        let raw = &self.settings.raw;
        let mut t: Vec<String> = raw.inputs.iter().map(|i| i.table.to_lowercase()).collect();
        t.extend(raw.previous.iter().map(|p| p.to_lowercase()));
        t.extend(raw.ground_truth.iter().map(|g| g.to_lowercase()));
        t.sort();
        t.dedup();
        t
    }

    fn identity_settings(&self) -> Option<Arc<Settings>> {
        Some(self.settings.clone())
    }

    fn extra_outputs(&self, name: &str) -> Vec<String> {
        ["golden", "quality", "pairs"]
            .iter()
            .map(|s| format!("{name}_{s}"))
            .collect()
    }

    fn run<'a>(
        &'a self,
        ctx: &'a SessionContext,
        _params: &'a Params,
        env: &'a super::StepEnv<'a>,
    ) -> BoxFuture<'a, datafusion::error::Result<BuiltinOutput>> {
        async move {
            let settings = self.settings.clone();
            let reading = std::time::Instant::now();
            // The inputs, the previous map and the ground truth are read at once.
            let raw = &settings.raw;
            let ((records, load), previous, truth) = futures::future::try_join3(
                identity::records::load(ctx, &settings),
                optional_pairs(
                    ctx,
                    raw.previous.as_deref(),
                    ["source", "source_record_id", "customer_key"],
                ),
                optional_pairs(
                    ctx,
                    raw.ground_truth.as_deref(),
                    ["source", "record_id", "person_id"],
                ),
            )
            .await?;
            let mut context = Context {
                previous,
                truth,
                ..Context::default()
            };
            if records.is_empty() && !crate::validate::planning() {
                tracing::warn!("identity: the inputs hold no records");
            }
            context.stop = crate::memory::Stop::current();
            // Reading the inputs (their SQL, the previous map, the ground truth), beside the
            // phases the resolution times.
            let reading_ms = reading.elapsed().as_millis() as u64;
            let with_reading = |mut details: serde_json::Value| {
                if let Some(phases) = details.get_mut("phases_ms").and_then(|p| p.as_object_mut()) {
                    phases.insert("reading_inputs".into(), reading_ms.into());
                }
                details
            };
            let on_engine = match settings.raw.compare_on {
                CompareOn::Client => false,
                CompareOn::Engine => true,
                CompareOn::Auto => env.on_cluster(),
            };
            // Validation plans on empty inputs: the in-process path gives the same tables.
            if on_engine
                && !records.is_empty()
                && !settings.blocking.is_empty()
                && !crate::validate::planning()
            {
                let prefix = format!("__{}", env.name);
                let resolution = identity::engine::resolve(
                    ctx, env, &prefix, &settings, &records, &load, &context,
                )
                .await
                .map_err(|e| e.context("identity"))?;
                let finished = resolution.finished;
                return Ok(BuiltinOutput {
                    frame: ctx.read_batch(finished.map)?,
                    details: Some(with_reading(finished.details)),
                    tables: vec![
                        ("golden".into(), ctx.read_batch(finished.golden)?),
                        ("quality".into(), ctx.read_batch(finished.quality)?),
                        ("pairs".into(), resolution.pairs),
                    ],
                    engine_tables: vec!["pairs".into()],
                });
            }
            let resolution = tokio::task::spawn_blocking(move || {
                identity::resolve(&settings, &records, &load, &context)
            })
            .await
            .map_err(|e| {
                DataFusionError::Context(
                    "identity".into(),
                    Box::new(DataFusionError::ExecutionJoin(Box::new(e))),
                )
            })?
            .map_err(|e| DataFusionError::Execution(format!("identity: {e}")))?;
            Ok(BuiltinOutput {
                frame: ctx.read_batch(resolution.map)?,
                details: Some(with_reading(resolution.details)),
                tables: vec![
                    ("golden".into(), ctx.read_batch(resolution.golden)?),
                    ("quality".into(), ctx.read_batch(resolution.quality)?),
                    ("pairs".into(), ctx.read_batch(resolution.pairs)?),
                ],
                engine_tables: Vec::new(),
            })
        }
        .boxed()
    }
}
