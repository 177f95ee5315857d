//! The data-heavy phases of identity as query-engine work, as Splink runs its blocking and
//! comparisons as SQL on DuckDB or Spark: on a cluster they distribute, and on one machine
//! they spill instead of holding every candidate pair in memory.
//!
//! The records go to the engine as one table (record number, input, interned key values,
//! compared texts, term frequencies). Blocking is a self-join per rule on the record's
//! group (its lowest record number among the records that share the rule's key, for groups
//! within the size guard); a pair an earlier rule found is left out, as in
//! [`super::blocking`]. Each comparison's level comes from `identity_level`, the same code
//! as [`super::compare`]. What comes back to this process is small: agreement-pattern
//! counts for EM, the pairs at or above the threshold for clustering, and counts for the
//! quality table. Scoring uses the trained weights as literals and the pairs table (kept,
//! accepted or all) is an engine query.
//!
//! Every result equals the in-process path's, bit for bit: the same levels, the same float
//! operations in the same order, and the same order among pairs of equal weight (by rule,
//! group, then record numbers, the order the in-process path finds them in).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt16Array,
    UInt32Array, UInt64Array, UInt8Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;

use super::blocking::RuleStats;
use super::cluster::{self, Edge};
use super::compare::{levels_spec, Comparator};
use super::config::{KeepPairs, LinkType, Settings};
use super::records::{LoadReport, Records};
use super::train::{self, Patterns};
use super::{Context, Finished, Summary};

/// Writes a frame where the engine reads it and registers it as table `name`; `in_client`
/// when the frame is over data held in this process.
pub trait Materialize: Send + Sync {
    fn table<'a>(
        &'a self,
        ctx: &'a SessionContext,
        name: &'a str,
        frame: DataFrame,
        in_client: bool,
    ) -> BoxFuture<'a, Result<DataFrame>>;
}

/// The step's tables when the engine compared the pairs.
pub struct EngineResolution {
    pub finished: Finished,
    pub pairs: DataFrame,
}

/// A SQL float literal that reads back as exactly `x` (Rust prints the shortest text that
/// parses to the same double).
fn float(x: f64) -> String {
    format!("({x:?})")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn execution(e: String) -> DataFusionError {
    DataFusionError::Execution(e)
}

/// Blocking on the engine, for one set of rules (`blocking` or `deterministic`).
struct Rules<'s> {
    /// Column prefix of each rule's group: `fb0`, `fd1`, ...
    prefix: &'static str,
    rules: &'s [(String, Vec<usize>)],
}

impl Rules<'_> {
    /// The SQL of rule `j`'s candidate pairs, `select` over `a` and `b` (the two records).
    fn pairs_sql(&self, records: &str, j: usize, link: LinkType, select: &str) -> String {
        let p = self.prefix;
        // Only records in a group of the rule take part: the join's build side stays small
        // for rules most records are alone in (an e-mail, a phone).
        let mut sql = format!(
            "SELECT {select} FROM {records} a JOIN {records} b ON a.{p}{j} = b.{p}{j} \
             WHERE a.{p}{j} IS NOT NULL AND b.{p}{j} IS NOT NULL AND a.r < b.r"
        );
        match link {
            LinkType::LinkAndDedupe => {}
            LinkType::DedupeOnly => sql.push_str(" AND a.s = b.s"),
            LinkType::LinkOnly => sql.push_str(" AND a.s <> b.s"),
        }
        for e in 0..j {
            // In one group of an earlier rule: the pair is that rule's.
            sql.push_str(&format!(" AND NOT ((a.{p}{e} = b.{p}{e}) IS TRUE)"));
        }
        sql
    }
}

/// Columns the records table needs.
struct Layout {
    /// Attributes with interned key columns `k<attr>`.
    keyed: BTreeSet<usize>,
    /// Attributes with text columns `t<attr>`.
    texts: BTreeSet<usize>,
    /// Comparisons with a term-frequency column `tf<c>`.
    tf: Vec<usize>,
}

impl Layout {
    fn new(settings: &Settings) -> Self {
        let keyed = settings
            .blocking
            .iter()
            .chain(&settings.deterministic)
            .flat_map(|(_, a)| a.iter().copied())
            .collect();
        let mut texts = BTreeSet::new();
        let mut tf = Vec::new();
        for (c, comparison) in settings.comparisons.iter().enumerate() {
            texts.insert(comparison.attribute);
            texts.extend(comparison.swapped_with.iter().flatten().copied());
            if comparison.weighs_by_frequency() {
                tf.push(c);
            }
        }
        Self { keyed, texts, tf }
    }
}

/// The records as the engine sees them.
fn records_batch(settings: &Settings, records: &Records, layout: &Layout) -> Result<RecordBatch> {
    let n = records.len();
    let mut fields = vec![
        Field::new("r", DataType::UInt32, false),
        Field::new("s", DataType::UInt16, false),
        Field::new("id", DataType::Utf8, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(0..n as u32)),
        Arc::new(UInt16Array::from(records.source_of.clone())),
        Arc::new(StringArray::from_iter_values(records.ids.iter())),
    ];
    for &x in &layout.keyed {
        fields.push(Field::new(format!("k{x}"), DataType::UInt32, true));
        columns.push(Arc::new(
            records.attrs[x]
                .values
                .iter()
                .map(|&v| (v != 0).then_some(v))
                .collect::<UInt32Array>(),
        ));
    }
    for &x in &layout.texts {
        fields.push(Field::new(format!("t{x}"), DataType::Utf8, true));
        columns.push(Arc::new(
            (0..n)
                .map(|r| records.attrs[x].get(r))
                .collect::<StringArray>(),
        ));
    }
    for &c in &layout.tf {
        // The frequencies the model weighs with.
        let column = &records.attrs[settings.comparisons[c].attribute];
        let frequency = column.frequencies();
        fields.push(Field::new(format!("tf{c}"), DataType::Float64, true));
        columns.push(Arc::new(
            column
                .values
                .iter()
                .map(|&v| (v != 0).then(|| frequency[v as usize]))
                .collect::<Float64Array>(),
        ));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn u64_at(batch: &RecordBatch, column: usize, row: usize) -> Result<u64> {
    let a = cast(batch.column(column), &DataType::UInt64)?;
    let a = a.as_any().downcast_ref::<UInt64Array>().expect("UInt64");
    Ok(if a.is_null(row) { 0 } else { a.value(row) })
}

async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    tracing::debug!(target: "crm_marts::identity", "{sql}");
    ctx.sql(sql).await?.collect().await
}

/// Resolves the records with blocking, comparing and scoring as engine queries; `prefix`
/// names the step's working tables.
#[allow(clippy::too_many_arguments)]
pub async fn resolve(
    ctx: &SessionContext,
    place: &dyn Materialize,
    prefix: &str,
    settings: &Settings,
    records: &Records,
    load: &LoadReport,
    context: &Context,
) -> Result<EngineResolution> {
    let started = Instant::now();
    let mut timings: Vec<(&'static str, u64)> = Vec::new();
    let mut lap = super::laps();
    let stop = |phase: &str| {
        context
            .stop
            .check(&format!("identity ({phase})"))
            .map_err(execution)
    };
    let link = settings.raw.link_type;
    let max_group = settings.raw.guards.max_records_per_value;
    let layout = Layout::new(settings);
    let cmp = Comparator::new(records, &settings.comparisons);
    let c = settings.comparisons.len();
    let blocking = Rules {
        prefix: "fb",
        rules: &settings.blocking,
    };
    let deterministic = Rules {
        prefix: "fd",
        rules: &settings.deterministic,
    };

    // The records, and each record's group under every rule.
    let raw = format!("{prefix}_records_in");
    place
        .table(
            ctx,
            &raw,
            ctx.read_batch(records_batch(settings, records, &layout)?)?,
            true,
        )
        .await?;
    let mut select = vec![format!("{raw}.*")];
    let mut joins = String::new();
    let mut oversized_sql = Vec::new();
    for rules in [&blocking, &deterministic] {
        for (j, (_, attrs)) in rules.rules.iter().enumerate() {
            let g = format!("g_{}{j}", rules.prefix);
            let keys: Vec<String> = attrs.iter().map(|x| format!("k{x}")).collect();
            let groups = format!(
                "SELECT {}, count(*) AS n, min(r) AS grp FROM {raw} WHERE {} GROUP BY {}",
                keys.join(", "),
                keys.iter()
                    .map(|k| format!("{k} IS NOT NULL"))
                    .collect::<Vec<_>>()
                    .join(" AND "),
                keys.join(", ")
            );
            if rules.prefix == "fb" {
                oversized_sql.push(format!(
                    "SELECT count(*) AS groups, sum(n) AS records, max(n) AS largest FROM ({groups}) WHERE n > {max_group}"
                ));
            }
            joins.push_str(&format!(
                " LEFT JOIN (SELECT * FROM ({groups}) WHERE n >= 2 AND n <= {max_group}) {g} ON {}",
                keys.iter()
                    .map(|k| format!("{raw}.{k} = {g}.{k}"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            ));
            select.push(format!("{g}.grp AS {}{j}", rules.prefix));
        }
    }
    let grouped = format!("{prefix}_records");
    let frame = ctx
        .sql(&format!("SELECT {} FROM {raw}{joins}", select.join(", ")))
        .await?;
    place.table(ctx, &grouped, frame, false).await?;
    stop("blocking")?;

    // Candidate pairs with their levels, and which blocking rules each agrees on (the EM
    // sessions' pairs).
    let mut columns = vec!["a.r AS a".to_string(), "b.r AS b".to_string()];
    for (ci, comparison) in settings.comparisons.iter().enumerate() {
        let x = comparison.attribute;
        let mut args = vec![
            quote(&levels_spec(&comparison.levels)),
            format!("a.t{x}"),
            format!("b.t{x}"),
        ];
        for o in comparison.swapped_with.iter().flatten() {
            args.push(format!("a.t{o}"));
            args.push(format!("b.t{o}"));
        }
        columns.push(format!("identity_level({}) AS l{ci}", args.join(", ")));
    }
    for (k, (_, attrs)) in settings.blocking.iter().enumerate() {
        let agree: Vec<String> = attrs.iter().map(|x| format!("a.k{x} = b.k{x}")).collect();
        columns.push(format!("({}) IS TRUE AS e{k}", agree.join(" AND ")));
    }
    for &ci in &layout.tf {
        columns.push(format!("a.tf{ci} AS tf{ci}"));
    }
    // One rule at a time, each into a table of its own: a union would run every rule's
    // join at once, each holding its build side.
    let mut union = Vec::new();
    for j in 0..settings.blocking.len() {
        let select = format!(
            "CAST({j} AS INT) AS blk, a.fb{j} AS grp, {}",
            columns.join(", ")
        );
        let table = format!("{prefix}_candidates_{j}");
        let frame = ctx
            .sql(&blocking.pairs_sql(&grouped, j, link, &select))
            .await?;
        place.table(ctx, &table, frame, false).await?;
        union.push(format!("SELECT * FROM {table}"));
        stop("comparing")?;
    }
    let pairs = format!("{prefix}_candidates");
    let _ = ctx.deregister_table(pairs.as_str());
    ctx.register_table(
        pairs.as_str(),
        ctx.sql(&union.join(" UNION ALL ")).await?.into_view(),
    )?;

    // Per rule: pairs it found first, and groups past the guard.
    let mut found = vec![0u64; settings.blocking.len()];
    for batch in rows(
        ctx,
        &format!("SELECT blk, count(*) FROM {pairs} GROUP BY blk"),
    )
    .await?
    {
        for row in 0..batch.num_rows() {
            found[u64_at(&batch, 0, row)? as usize] = u64_at(&batch, 1, row)?;
        }
    }
    let mut rule_stats = Vec::new();
    for (j, sql) in oversized_sql.iter().enumerate() {
        let batch = rows(ctx, sql).await?.into_iter().find(|b| b.num_rows() > 0);
        let stat = |col: usize| {
            batch
                .as_ref()
                .map(|b| u64_at(b, col, 0))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        rule_stats.push(RuleStats {
            name: settings.blocking[j].0.clone(),
            pairs: found[j],
            oversized_groups: stat(0)?,
            oversized_records: stat(1)?,
            largest_oversized: stat(2)?,
        });
    }
    let candidate_pairs: u64 = found.iter().sum();
    let deterministic_pairs = if settings.deterministic.is_empty() {
        0
    } else {
        let union: Vec<String> = (0..settings.deterministic.len())
            .map(|j| deterministic.pairs_sql(&grouped, j, link, "1 AS one"))
            .collect();
        let batch = rows(
            ctx,
            &format!("SELECT count(*) FROM ({})", union.join(" UNION ALL ")),
        )
        .await?;
        batch
            .first()
            .map(|b| u64_at(b, 0, 0))
            .transpose()?
            .unwrap_or(0) as usize
    };
    lap("blocking_and_comparison", &mut timings);

    // The model, from agreement-pattern counts.
    let all_pairs = super::possible_pairs(records, link);
    let prior = super::prior(settings, deterministic_pairs, all_pairs);
    let model = if c == 0 {
        None
    } else {
        let levels: Vec<String> = (0..c).map(|ci| format!("l{ci}")).collect();
        let agree: Vec<String> = (0..settings.blocking.len())
            .map(|k| format!("e{k}"))
            .collect();
        let keys = [levels.clone(), agree.clone()].concat().join(", ");
        let mut sessions = vec![Patterns::new(); settings.blocking.len()];
        let mut all = Patterns::new();
        for batch in rows(
            ctx,
            &format!("SELECT {keys}, count(*) AS n FROM {pairs} GROUP BY {keys}"),
        )
        .await?
        {
            let level_columns: Vec<&UInt8Array> = (0..c)
                .map(|ci| {
                    batch
                        .column(ci)
                        .as_any()
                        .downcast_ref::<UInt8Array>()
                        .expect("identity_level is UInt8")
                })
                .collect();
            let agree_columns: Vec<&BooleanArray> = (0..agree.len())
                .map(|k| {
                    batch
                        .column(c + k)
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .expect("IS TRUE is Boolean")
                })
                .collect();
            let counts = batch
                .column(c + agree.len())
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("count is Int64");
            for row in 0..batch.num_rows() {
                let pattern: Vec<u8> = level_columns.iter().map(|a| a.value(row)).collect();
                let n = counts.value(row) as u64;
                *all.entry(pattern.clone()).or_default() += n;
                for (k, column) in agree_columns.iter().enumerate() {
                    if column.value(row) {
                        *sessions[k].entry(pattern.clone()).or_default() += n;
                    }
                }
            }
        }
        let training = &settings.raw.training;
        Some(train::train_on_patterns(
            &cmp,
            prior,
            &sessions,
            &all,
            &settings.blocking,
            training.u_sample_pairs,
            training.seed,
            training.em_max_iterations,
            link,
        ))
    };
    lap("training", &mut timings);
    stop("training")?;

    // Each pair's weights: the trained weights as literals, in the order the in-process
    // path adds them.
    let mut weight_columns = Vec::new();
    let mut match_weight = String::from("CAST(0.0 AS DOUBLE)");
    if let Some(model) = &model {
        match_weight = float(model.prior_weight());
        for (ci, comparison) in settings.comparisons.iter().enumerate() {
            let mut case = format!("CASE l{ci}");
            for l in 1..comparison.level_count() {
                let m = model.m[ci][l];
                let w = if l == 1 && layout.tf.contains(&ci) {
                    format!(
                        "log2({} / greatest(tf{ci}, {}))",
                        float(m),
                        float(train::FLOOR)
                    )
                } else {
                    float((m / model.u[ci][l]).log2())
                };
                case.push_str(&format!(" WHEN {l} THEN {w}"));
            }
            case.push_str(" ELSE CAST(0.0 AS DOUBLE) END");
            match_weight = format!("{match_weight} + w{ci}");
            weight_columns.push(format!("{case} AS w{ci}"));
        }
    }
    let scored = format!(
        "(SELECT *, {match_weight} AS match_weight FROM (SELECT *{} FROM {pairs}))",
        weight_columns
            .iter()
            .map(|w| format!(", {w}"))
            .collect::<String>()
    );

    // Links, strongest first: deterministic rules in order, then the pairs at or above the
    // threshold by weight, ties in the order the pairs were found.
    let (mut edges, deterministic_stats) = super::deterministic_links(settings, records);
    let deterministic_edges = edges.len();
    let mut above: Vec<(u32, u32, (i64, u64), f64)> = Vec::new();
    if model.is_some() {
        let sql = format!(
            "SELECT a, b, blk, grp, match_weight FROM {scored} WHERE match_probability(match_weight) >= {}",
            float(settings.raw.threshold)
        );
        for batch in rows(ctx, &sql).await? {
            let a = cast(batch.column(0), &DataType::UInt32)?;
            let b = cast(batch.column(1), &DataType::UInt32)?;
            let rule = cast(batch.column(2), &DataType::Int64)?;
            let first = cast(batch.column(3), &DataType::UInt64)?;
            let w = cast(batch.column(4), &DataType::Float64)?;
            let (a, b) = (
                a.as_any().downcast_ref::<UInt32Array>().expect("u32"),
                b.as_any().downcast_ref::<UInt32Array>().expect("u32"),
            );
            let rule = rule.as_any().downcast_ref::<Int64Array>().expect("i64");
            let first = first.as_any().downcast_ref::<UInt64Array>().expect("u64");
            let w = w.as_any().downcast_ref::<Float64Array>().expect("f64");
            for row in 0..batch.num_rows() {
                above.push((
                    a.value(row),
                    b.value(row),
                    (rule.value(row), first.value(row)),
                    w.value(row),
                ));
            }
        }
    }
    above.sort_by(|x, y| {
        y.3.total_cmp(&x.3)
            .then((x.2, x.0, x.1).cmp(&(y.2, y.0, y.1)))
    });
    for &(a, b, _, w) in &above {
        edges.push(Edge {
            a,
            b,
            method: None,
            probability: train::probability(w),
        });
    }
    stop("scoring")?;
    let clustering = cluster::cluster(
        &cmp,
        records.len(),
        &edges,
        &settings.exclusive,
        settings.raw.guards.max_cluster_size,
    );
    lap("clustering", &mut timings);
    stop("clustering")?;

    // The pairs table, on the engine.
    let decisions = format!("{prefix}_decisions");
    let decided = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::UInt32, false),
            Field::new("b", DataType::UInt32, false),
            Field::new("decision", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(above.iter().map(|p| p.0).collect::<UInt32Array>()),
            Arc::new(above.iter().map(|p| p.1).collect::<UInt32Array>()),
            Arc::new(
                (0..above.len())
                    .map(|i| Some(clustering.decisions[deterministic_edges + i].label()))
                    .collect::<StringArray>(),
            ),
        ],
    )?;
    place
        .table(ctx, &decisions, ctx.read_batch(decided)?, true)
        .await?;
    let source = |side: &str| {
        let mut case = format!("CASE {side}.s");
        for (i, name) in records.sources.iter().enumerate() {
            case.push_str(&format!(" WHEN {i} THEN {}", quote(name)));
        }
        format!("arrow_cast({case} END, 'Utf8')")
    };
    let mut out = vec![
        format!("{} AS source_a", source("ra")),
        "nullif(arrow_cast(ra.id, 'Utf8'), '') AS record_id_a".to_string(),
        format!("{} AS source_b", source("rb")),
        "nullif(arrow_cast(rb.id, 'Utf8'), '') AS record_id_b".to_string(),
    ];
    let mut rule = "arrow_cast(CASE p.blk".to_string();
    for (j, (name, _)) in settings.blocking.iter().enumerate() {
        rule.push_str(&format!(" WHEN {j} THEN {}", quote(name)));
    }
    out.push(format!("{rule} END, 'Utf8') AS blocking_rule"));
    for (ci, comparison) in settings.comparisons.iter().enumerate() {
        let mut label = format!("arrow_cast(CASE p.l{ci}");
        for l in 0..comparison.level_count() {
            label.push_str(&format!(
                " WHEN {l} THEN {}",
                quote(&comparison.level_label(l as u8))
            ));
        }
        out.push(format!(
            "{label} END, 'Utf8') AS {}",
            quote_ident(&format!("level_{}", comparison.name))
        ));
        let weight = if model.is_some() {
            format!("p.w{ci}")
        } else {
            "CAST(0.0 AS DOUBLE)".into()
        };
        // Never NULL; `coalesce` with a literal says so in the schema, as the in-process
        // path's does (and `nullif(.., '')` below keeps texts nullable as there).
        out.push(format!(
            "coalesce({weight}, CAST(0.0 AS DOUBLE)) AS {}",
            quote_ident(&format!("weight_{}", comparison.name))
        ));
    }
    out.push("coalesce(p.match_weight, CAST(0.0 AS DOUBLE)) AS match_weight".into());
    out.push(
        "coalesce(match_probability(p.match_weight), CAST(0.0 AS DOUBLE)) AS match_probability"
            .into(),
    );
    out.push(
        "nullif(arrow_cast(coalesce(d.decision, 'below_threshold'), 'Utf8'), '') AS decision"
            .into(),
    );
    let keep = match settings.raw.keep_pairs {
        KeepPairs::None => "false",
        _ if model.is_none() => "false",
        KeepPairs::All => "true",
        KeepPairs::Accepted => "d.decision IS NOT NULL",
    };
    let frame = ctx
        .sql(&format!(
            "SELECT {} FROM {scored} p JOIN {grouped} ra ON p.a = ra.r JOIN {grouped} rb ON p.b = rb.r \
             LEFT JOIN {decisions} d ON p.a = d.a AND p.b = d.b WHERE {keep} ORDER BY p.blk, p.grp, p.a, p.b",
            out.join(", ")
        ))
        .await?;
    let summary = Summary {
        rule_stats,
        candidate_pairs: candidate_pairs as usize,
        model,
        all_pairs,
        deterministic_pairs,
        deterministic_stats,
        deterministic_edges,
        above: above.len(),
        clustering,
    };
    let finished = super::finish(
        settings, records, load, context, &summary, timings, &mut lap, started, "engine",
    )
    .map_err(execution)?;
    Ok(EngineResolution {
        finished,
        pairs: frame,
    })
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
