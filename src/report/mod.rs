//! The run report: a self-contained HTML page next to each run's manifest
//! (`_runs/<run_id>.html`), readable offline (no scripts, fonts or network; charts are
//! inline SVG). It shows the run (status, parameters, inputs, quarantine, a timeline of
//! the steps with rows, memory and checks, warnings and where a failed run failed); what
//! changed since the previous successful run of the pipeline (rows per mart, identity keys,
//! loyalty-ladder movements); and, from the marts the run published, the customers (ABC
//! Pareto curve with the class cutoffs, RFM grid, value tiers, lifecycle and win-back,
//! cohort retention, CLV distribution and model, NPS/CSAT/CES by month, touchpoints by
//! stage and channel, conversion) and identity (cluster sizes, match weights of the pairs
//! with the threshold, m and u per comparison level, pairs per blocking rule, the largest
//! clusters, precision/recall/F1). A chart appears only when its mart was published by the
//! run. Every figure is an aggregate of bounded size, so the report stays small for big runs.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, UInt64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::future::OptionFuture;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;

use crate::storage::{StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("run `{0}` has no manifest in this store")]
    NoRun(String),
    #[error("the manifest of run `{run}` cannot be read: {message}")]
    Manifest { run: String, message: String },
    #[error("reading the marts of the run: {0}")]
    Marts(#[from] datafusion::error::DataFusionError),
    #[error("rendering the report: {0}")]
    Render(#[from] minijinja::Error),
}

#[derive(Serialize)]
struct Bar {
    name: String,
    x: usize,
    y: usize,
    w: usize,
    ms: u64,
    fill: &'static str,
}

#[derive(Serialize)]
struct Timeline {
    width: usize,
    height: usize,
    bars: Vec<Bar>,
}

#[derive(Serialize)]
struct Cutoff {
    y: f64,
    label: String,
}

#[derive(Serialize)]
struct ClassRow {
    class: String,
    customers: i64,
    customer_share: f64,
    customer_pct: String,
    revenue_pct: String,
}

#[derive(Serialize)]
struct Pareto {
    size: usize,
    points: String,
    cutoffs: Vec<Cutoff>,
    classes: Vec<ClassRow>,
}

#[derive(Serialize)]
struct RfmCell {
    r: i64,
    fm: i64,
    customers: i64,
    revenue: String,
    fill: String,
}

#[derive(Serialize)]
struct Segment {
    segment: String,
    customers: i64,
    revenue: String,
}

#[derive(Serialize)]
struct Rfm {
    cells: Vec<RfmCell>,
    segments: Vec<Segment>,
}

/// Horizontal bars: a label, a bar and the figure it stands for, one row each.
#[derive(Serialize)]
struct BarRow {
    label: String,
    value: String,
    y: usize,
    ty: usize,
    x: f64,
    w: f64,
    tx: f64,
    fill: &'static str,
}

#[derive(Serialize)]
struct Bars {
    width: usize,
    height: usize,
    label_x: usize,
    /// Where the zero line is, for bars that go both ways.
    zero: Option<f64>,
    rows: Vec<BarRow>,
}

/// One column of a histogram.
#[derive(Serialize)]
struct Column {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    lx: f64,
    label: String,
    count: i64,
}

#[derive(Serialize)]
struct Marker {
    x: f64,
    label: String,
}

#[derive(Serialize)]
struct Histogram {
    width: usize,
    height: usize,
    left: f64,
    right: f64,
    base: f64,
    label_y: f64,
    most: i64,
    total: i64,
    /// Named columns (labels under each) rather than ranges of a number (low and high only).
    categorical: bool,
    low: String,
    high: String,
    marker: Option<Marker>,
    columns: Vec<Column>,
}

/// One cell of a heatmap.
#[derive(Serialize)]
struct GridCell {
    x: usize,
    y: usize,
    tx: usize,
    ty: usize,
    fill: String,
    row: String,
    col: String,
    value: String,
    title: String,
    text: String,
}

#[derive(Serialize)]
struct Label {
    x: usize,
    y: usize,
    text: String,
}

#[derive(Serialize)]
struct Grid {
    width: usize,
    height: usize,
    cw: usize,
    ch: usize,
    cells: Vec<GridCell>,
    rows: Vec<Label>,
    cols: Vec<Label>,
}

/// A named figure: `value` as shown, `data` as the mart has it (for data- attributes).
#[derive(Serialize)]
struct Figure {
    name: String,
    value: String,
    data: String,
}

#[derive(Serialize)]
struct TierRow {
    tier: String,
    customers: i64,
    share: String,
    actual: String,
    potential: String,
}

#[derive(Serialize)]
struct Tiers {
    customers: Bars,
    value: Bars,
    rows: Vec<TierRow>,
    mvc_cutoff: String,
    mgc_cutoff: String,
}

#[derive(Serialize)]
struct Lifecycle {
    bars: Bars,
    states: Vec<Figure>,
    winback: Option<i64>,
}

#[derive(Serialize)]
struct CohortRow {
    cohort: String,
    customers: i64,
    m1: String,
    m3: String,
    m6: String,
    m12: String,
}

#[derive(Serialize)]
struct Cohorts {
    grid: Grid,
    rows: Vec<CohortRow>,
}

#[derive(Serialize)]
struct Param {
    name: String,
    value: String,
    data: String,
    numeric: bool,
}

#[derive(Serialize)]
struct Clv {
    hist: Histogram,
    customers: i64,
    mean: String,
    max: String,
    p99: String,
    zero: i64,
}

#[derive(Serialize)]
struct Dot {
    x: f64,
    y: f64,
    title: String,
}

#[derive(Serialize)]
struct Panel {
    name: String,
    top: usize,
    stroke: &'static str,
    points: String,
    dots: Vec<Dot>,
    high: String,
    low: String,
}

#[derive(Serialize)]
struct CxRow {
    month: String,
    answers: i64,
    nps: String,
    csat: String,
    ces: String,
}

#[derive(Serialize)]
struct Cx {
    width: usize,
    height: usize,
    left: usize,
    plot_w: usize,
    plot_h: usize,
    first: String,
    last: String,
    panels: Vec<Panel>,
    months: Vec<CxRow>,
}

#[derive(Serialize)]
struct TouchRow {
    stage: String,
    channel: String,
    count: i64,
}

#[derive(Serialize)]
struct Touchpoints {
    grid: Grid,
    rows: Vec<TouchRow>,
    total: i64,
}

#[derive(Serialize)]
struct Conversion {
    bars: Bars,
    /// From mart_journeys: customers with a journey, those who bought, their share.
    customers: i64,
    buyers: i64,
    share: String,
    share_data: String,
    sessions: i64,
    converting_sessions: i64,
}

#[derive(Serialize)]
struct LevelRow {
    level: String,
    m: String,
    u: String,
    weight: String,
    weight_data: String,
}

#[derive(Serialize)]
struct Identity {
    clusters: Option<Histogram>,
    levels: Vec<LevelRow>,
    level_bars: Option<Bars>,
    blocking: Option<Bars>,
    blocking_rows: Vec<Figure>,
    largest: Option<Bars>,
    largest_rows: Vec<Figure>,
    accuracy: Option<Bars>,
    accuracy_rows: Vec<Figure>,
}

#[derive(Serialize)]
struct PairWeights {
    hist: Histogram,
    pairs: i64,
    threshold: String,
}

#[derive(Serialize)]
struct MartRows {
    mart: String,
    now: String,
    then: String,
    change: String,
}

#[derive(Serialize)]
struct Changes {
    /// The previous successful run of the same pipeline, when there is one.
    previous: Option<String>,
    previous_started: String,
    marts: Vec<MartRows>,
    identity_keys: Vec<Figure>,
    movements: Option<Bars>,
    movement_rows: Vec<Figure>,
}

/// The manifest of run `run_id`, as written.
pub async fn manifest(store: &Store, run_id: &str) -> Result<serde_json::Value, ReportError> {
    let path = store.path(&format!("_runs/{run_id}.json"))?;
    let bytes = match store.object_store.get(&path).await {
        Ok(r) => r.bytes().await.map_err(|e| store.io_error(&path, e))?,
        Err(object_store::Error::NotFound { .. }) => return Err(ReportError::NoRun(run_id.into())),
        Err(e) => return Err(store.io_error(&path, e).into()),
    };
    serde_json::from_slice(&bytes).map_err(|e| ReportError::Manifest {
        run: run_id.into(),
        message: e.to_string(),
    })
}

/// The newest run of the store, by run id (ids sort by time).
pub async fn latest_run(store: &Store) -> Result<Option<String>, ReportError> {
    let dir = store.path("_runs")?;
    let listing: Vec<_> = store
        .object_store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| store.io_error(&dir, e))?;
    Ok(listing
        .iter()
        .filter_map(|m| {
            m.location
                .filename()?
                .strip_suffix(".json")
                .map(String::from)
        })
        .max())
}

fn as_i64(a: &dyn Array, i: usize) -> i64 {
    if a.is_null(i) {
        return 0;
    }
    match a.data_type() {
        datafusion::arrow::datatypes::DataType::Int64 => a.as_primitive::<Int64Type>().value(i),
        datafusion::arrow::datatypes::DataType::UInt64 => {
            a.as_primitive::<UInt64Type>().value(i) as i64
        }
        datafusion::arrow::datatypes::DataType::Int32 => {
            a.as_primitive::<Int32Type>().value(i) as i64
        }
        _ => 0,
    }
}

fn as_f64(a: &dyn Array, i: usize) -> f64 {
    if a.is_null(i) {
        0.0
    } else {
        a.as_primitive::<Float64Type>().value(i)
    }
}

fn as_string(a: &dyn Array, i: usize) -> String {
    datafusion::arrow::util::display::array_value_to_string(a, i).unwrap_or_default()
}

async fn rows(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>, ReportError> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

const PARETO_SIZE: usize = 320;
const PARETO_POINTS: i64 = 400;

async fn pareto(ctx: &SessionContext, params: &serde_json::Value) -> Result<Pareto, ReportError> {
    let n = rows(ctx, "SELECT count(*) FROM mart_abc").await?;
    let n = n
        .first()
        .map(|b| as_i64(b.column(0).as_ref(), 0))
        .unwrap_or(0)
        .max(1);
    let step = (n / PARETO_POINTS).max(1);
    let sql = format!(
        "SELECT CAST(revenue_rank AS BIGINT) AS rank, cumulative_share FROM mart_abc WHERE revenue_rank % {step} = 0 OR revenue_rank = 1 OR revenue_rank = {n} ORDER BY rank"
    );
    let size = PARETO_SIZE as f64;
    let mut points = vec!["0,320".to_string()];
    for b in rows(ctx, &sql).await? {
        for i in 0..b.num_rows() {
            let x = as_i64(b.column(0).as_ref(), i) as f64 / n as f64 * size;
            let y = size - as_f64(b.column(1).as_ref(), i) * size;
            points.push(format!("{x:.1},{y:.1}"));
        }
    }
    let mut cutoffs = Vec::new();
    for (name, label) in [("abc_a_cutoff", "A | B"), ("abc_b_cutoff", "B | C")] {
        if let Some(v) = params.get(name).and_then(|v| v.as_f64()) {
            cutoffs.push(Cutoff {
                y: size - v * size,
                label: format!("{label} at {:.0} %", v * 100.0),
            });
        }
    }
    let mut classes = Vec::new();
    let batches = rows(ctx, "SELECT abc_class, count(*), coalesce(sum(revenue), 0.0) FROM mart_abc GROUP BY abc_class ORDER BY abc_class").await?;
    let total: f64 = batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| as_f64(b.column(2).as_ref(), i)))
        .sum();
    for b in &batches {
        for i in 0..b.num_rows() {
            let customers = as_i64(b.column(1).as_ref(), i);
            let revenue = as_f64(b.column(2).as_ref(), i);
            let customer_share = customers as f64 / n as f64;
            classes.push(ClassRow {
                class: as_string(b.column(0).as_ref(), i),
                customers,
                customer_share,
                customer_pct: format!("{:.1} %", customer_share * 100.0),
                revenue_pct: if total > 0.0 {
                    format!("{:.1} %", revenue / total * 100.0)
                } else {
                    "-".into()
                },
            });
        }
    }
    Ok(Pareto {
        size: PARETO_SIZE,
        points: points.join(" "),
        cutoffs,
        classes,
    })
}

async fn rfm(ctx: &SessionContext) -> Result<Rfm, ReportError> {
    let batches = rows(
        ctx,
        "SELECT CAST(r_score AS BIGINT) AS r, CAST(fm_score AS BIGINT) AS fm, count(*), coalesce(sum(monetary), 0.0) FROM mart_rfm GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .await?;
    let mut cells = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            cells.push((
                as_i64(b.column(0).as_ref(), i),
                as_i64(b.column(1).as_ref(), i),
                as_i64(b.column(2).as_ref(), i),
                as_f64(b.column(3).as_ref(), i),
            ));
        }
    }
    let most = cells.iter().map(|c| c.2).max().unwrap_or(1).max(1) as f64;
    let cells = cells
        .into_iter()
        .map(|(r, fm, customers, revenue)| {
            // Lighter to darker green by customers.
            let t = customers as f64 / most;
            let channel = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
            RfmCell {
                r,
                fm,
                customers,
                revenue: format!("{revenue:.2}"),
                fill: format!(
                    "#{:02x}{:02x}{:02x}",
                    channel(236.0, 31.0),
                    channel(246.0, 111.0),
                    channel(239.0, 67.0)
                ),
            }
        })
        .collect();
    let mut segments = Vec::new();
    for b in rows(ctx, "SELECT rfm_segment, count(*), coalesce(sum(monetary), 0.0) FROM mart_rfm GROUP BY 1 ORDER BY 2 DESC, 1").await? {
        for i in 0..b.num_rows() {
            segments.push(Segment {
                segment: as_string(b.column(0).as_ref(), i),
                customers: as_i64(b.column(1).as_ref(), i),
                revenue: format!("{:.2}", as_f64(b.column(2).as_ref(), i)),
            });
        }
    }
    Ok(Rfm { cells, segments })
}

fn opt_f64(a: &dyn Array, i: usize) -> Option<f64> {
    if a.is_null(i) {
        None
    } else {
        Some(a.as_primitive::<Float64Type>().value(i))
    }
}

/// SVG coordinates to a tenth of a pixel, which keeps the page small.
fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn pct(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

/// A figure for people: large ones without decimals, small ones with four.
fn num_text(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// A probability, small ones in scientific notation.
fn prob_text(v: f64) -> String {
    if v == 0.0 || v.abs() >= 0.001 {
        format!("{v:.4}")
    } else {
        format!("{v:.2e}")
    }
}

/// A bucket edge with as many decimals as the bucket width needs.
fn edge_text(v: f64, width: f64) -> String {
    if width >= 10.0 {
        format!("{v:.0}")
    } else if width >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The month of an ISO date (2026-10-01 is 2026-10).
fn month_label(date: &str) -> String {
    date.get(..7).unwrap_or(date).to_string()
}

/// Lighter to darker green as `t` goes from 0 to 1 (the RFM grid's colours).
fn shade(t: f64) -> String {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let channel = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        channel(236.0, 31.0),
        channel(246.0, 111.0),
        channel(239.0, 67.0)
    )
}

/// Names in the order `known` gives, then the others alphabetically.
fn ordered(mut names: Vec<String>, known: &[&str]) -> Vec<String> {
    names.sort();
    names.dedup();
    names.sort_by_key(|n| {
        known
            .iter()
            .position(|k| *k == n.as_str())
            .unwrap_or(known.len())
    });
    names
}

const BAR_LEFT: usize = 200;
const BAR_LENGTH: f64 = 300.0;
const BAR_ROW: usize = 20;

/// Horizontal bars of (label, value, value as shown), the longest `most` long; negative
/// values in red.
fn bar_chart(items: Vec<(String, f64, String)>, fill: &'static str, most: f64) -> Bars {
    let scale = if most > 0.0 && most.is_finite() {
        BAR_LENGTH / most
    } else {
        0.0
    };
    let left = BAR_LEFT as f64;
    let rows: Vec<BarRow> = items
        .into_iter()
        .enumerate()
        .map(|(i, (label, v, value))| {
            let w = if v.is_finite() && v != 0.0 {
                r1((v.abs() * scale).clamp(1.0, BAR_LENGTH))
            } else {
                0.0
            };
            BarRow {
                label,
                value,
                y: i * BAR_ROW,
                ty: i * BAR_ROW + 12,
                x: left,
                w,
                tx: r1(left + w + 4.0),
                fill: if v < 0.0 { "#c0392b" } else { fill },
            }
        })
        .collect();
    Bars {
        width: BAR_LEFT + BAR_LENGTH as usize + 120,
        height: rows.len() * BAR_ROW + 4,
        label_x: BAR_LEFT - 6,
        zero: None,
        rows,
    }
}

/// Horizontal bars scaled to the largest value.
fn scaled_bars(items: Vec<(String, f64, String)>, fill: &'static str) -> Bars {
    let most = items
        .iter()
        .map(|i| i.1.abs())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    bar_chart(items, fill, most)
}

/// Bars left (negative, red) and right (positive, green) of a zero line.
fn diverging(items: Vec<(String, f64, String)>) -> Bars {
    let most = items
        .iter()
        .map(|i| i.1.abs())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let half = BAR_LENGTH / 2.0;
    let zero = BAR_LEFT as f64 + half;
    let scale = if most > 0.0 { half / most } else { 0.0 };
    let rows: Vec<BarRow> = items
        .into_iter()
        .enumerate()
        .map(|(i, (label, v, value))| {
            let w = if v.is_finite() {
                r1((v.abs() * scale).min(half))
            } else {
                0.0
            };
            BarRow {
                label,
                value,
                y: i * BAR_ROW,
                ty: i * BAR_ROW + 12,
                x: if v < 0.0 { r1(zero - w) } else { zero },
                w,
                tx: BAR_LEFT as f64 + BAR_LENGTH + 6.0,
                fill: if v < 0.0 { "#c0392b" } else { "#2e8b57" },
            }
        })
        .collect();
    Bars {
        width: BAR_LEFT + BAR_LENGTH as usize + 120,
        height: rows.len() * BAR_ROW + 4,
        label_x: BAR_LEFT - 6,
        zero: Some(zero),
        rows,
    }
}

const HIST_LEFT: f64 = 44.0;
const HIST_WIDTH: f64 = 420.0;
const HIST_HEIGHT: f64 = 150.0;
const HIST_TOP: f64 = 16.0;

/// Columns of (label, count); `marker` is a vertical line at a share of the width.
fn histogram(
    columns: Vec<(String, i64)>,
    categorical: bool,
    low: String,
    high: String,
    marker: Option<(f64, String)>,
) -> Histogram {
    let most = columns.iter().map(|c| c.1).max().unwrap_or(0).max(0);
    let total: i64 = columns.iter().map(|c| c.1).sum();
    let step = HIST_WIDTH / columns.len().max(1) as f64;
    let base = HIST_TOP + HIST_HEIGHT;
    let columns: Vec<Column> = columns
        .into_iter()
        .enumerate()
        .map(|(i, (label, count))| {
            let h = if most > 0 {
                r1(count.max(0) as f64 / most as f64 * HIST_HEIGHT)
            } else {
                0.0
            };
            Column {
                x: r1(HIST_LEFT + i as f64 * step + 0.5),
                y: r1(base - h),
                w: r1((step - 1.0).max(0.5)),
                h,
                lx: r1(HIST_LEFT + (i as f64 + 0.5) * step),
                label,
                count,
            }
        })
        .collect();
    Histogram {
        width: (HIST_LEFT + HIST_WIDTH + 16.0) as usize,
        height: (base + 30.0) as usize,
        left: HIST_LEFT,
        right: HIST_LEFT + HIST_WIDTH,
        base,
        label_y: base + 14.0,
        most,
        total,
        categorical,
        low,
        high,
        marker: marker.map(|(share, label)| Marker {
            x: r1(HIST_LEFT + share.clamp(0.0, 1.0) * HIST_WIDTH),
            label,
        }),
        columns,
    }
}

const BUCKETS: i64 = 20;

/// Counts of `column` of `table` in BUCKETS equal buckets from `low` to `high` (values at or
/// above `high` in the last, at or below `low` in the first); returns them and the width.
async fn buckets(
    ctx: &SessionContext,
    table: &str,
    column: &str,
    low: f64,
    high: f64,
) -> Result<(Vec<i64>, f64), ReportError> {
    let (low, high) = if low.is_finite() && high.is_finite() {
        (low, high)
    } else {
        (0.0, 0.0)
    };
    let width = if high > low {
        (high - low) / BUCKETS as f64
    } else {
        1.0
    };
    let last = BUCKETS - 1;
    let value = format!("CAST({column} AS DOUBLE)");
    let sql = format!(
        "SELECT CAST(CASE WHEN {value} >= CAST({high} AS DOUBLE) THEN {last} WHEN {value} <= CAST({low} AS DOUBLE) THEN 0 \
         ELSE floor(({value} - CAST({low} AS DOUBLE)) / CAST({width} AS DOUBLE)) END AS BIGINT) AS bucket, CAST(count(*) AS BIGINT) AS n \
         FROM {table} WHERE {column} IS NOT NULL GROUP BY 1"
    );
    let mut counts = vec![0i64; BUCKETS as usize];
    for b in rows(ctx, &sql).await? {
        for i in 0..b.num_rows() {
            let k = as_i64(b.column(0).as_ref(), i).clamp(0, last) as usize;
            counts[k] += as_i64(b.column(1).as_ref(), i);
        }
    }
    Ok((counts, width))
}

/// Customers and value per tier of mart_customer_value.
async fn value_tiers(ctx: &SessionContext) -> Result<Tiers, ReportError> {
    let batches = rows(
        ctx,
        "SELECT value_tier, CAST(count(*) AS BIGINT) AS customers, CAST(coalesce(sum(actual_value), 0.0) AS DOUBLE) AS actual, \
         CAST(coalesce(sum(potential_value), 0.0) AS DOUBLE) AS potential, CAST(max(mvc_cutoff) AS DOUBLE) AS mvc_cutoff, \
         CAST(max(mgc_cutoff) AS DOUBLE) AS mgc_cutoff, \
         CASE value_tier WHEN 'MVC' THEN 1 WHEN 'MGC' THEN 2 WHEN 'Other' THEN 3 WHEN 'BZ' THEN 4 ELSE 5 END AS tier_order \
         FROM mart_customer_value GROUP BY value_tier ORDER BY tier_order, value_tier",
    )
    .await?;
    let mut found: Vec<(String, i64, f64, f64)> = Vec::new();
    let (mut mvc, mut mgc) = (None, None);
    for b in &batches {
        for i in 0..b.num_rows() {
            found.push((
                as_string(b.column(0).as_ref(), i),
                as_i64(b.column(1).as_ref(), i),
                as_f64(b.column(2).as_ref(), i),
                as_f64(b.column(3).as_ref(), i),
            ));
            mvc = mvc.or(opt_f64(b.column(4).as_ref(), i));
            mgc = mgc.or(opt_f64(b.column(5).as_ref(), i));
        }
    }
    let total: i64 = found.iter().map(|f| f.1).sum::<i64>().max(1);
    let customers = scaled_bars(
        found
            .iter()
            .map(|f| (f.0.clone(), f.1 as f64, f.1.to_string()))
            .collect(),
        "#5b7bb4",
    );
    let value = scaled_bars(
        found
            .iter()
            .map(|f| (f.0.clone(), f.2, format!("{:.2}", f.2)))
            .collect(),
        "#2e8b57",
    );
    let table = found
        .into_iter()
        .map(|(tier, customers, actual, potential)| TierRow {
            tier,
            customers,
            share: pct(customers as f64 / total as f64),
            actual: format!("{actual:.2}"),
            potential: format!("{potential:.2}"),
        })
        .collect();
    Ok(Tiers {
        customers,
        value,
        rows: table,
        mvc_cutoff: mvc.map(|v| format!("{v:.2}")).unwrap_or_default(),
        mgc_cutoff: mgc.map(|v| format!("{v:.2}")).unwrap_or_default(),
    })
}

/// Customers per lifecycle state (mart_lifecycle) and the size of the win-back list
/// (mart_winback), whichever of the two the run published.
async fn lifecycle(
    ctx: &SessionContext,
    states: bool,
    winback: bool,
) -> Result<Lifecycle, ReportError> {
    let mut found: Vec<(String, i64)> = Vec::new();
    if states {
        let sql = "SELECT lifecycle_state, CAST(count(*) AS BIGINT) AS customers, \
                   CASE lifecycle_state WHEN 'active' THEN 1 WHEN 'at_risk' THEN 2 WHEN 'dormant' THEN 3 WHEN 'lost' THEN 4 ELSE 5 END AS state_order \
                   FROM mart_lifecycle GROUP BY lifecycle_state ORDER BY state_order, lifecycle_state";
        for b in rows(ctx, sql).await? {
            for i in 0..b.num_rows() {
                found.push((
                    as_string(b.column(0).as_ref(), i),
                    as_i64(b.column(1).as_ref(), i),
                ));
            }
        }
    }
    let mut winback_rows = None;
    if winback {
        let n = rows(ctx, "SELECT CAST(count(*) AS BIGINT) FROM mart_winback").await?;
        winback_rows = Some(
            n.iter()
                .find(|b| b.num_rows() > 0)
                .map(|b| as_i64(b.column(0).as_ref(), 0))
                .unwrap_or(0),
        );
    }
    let mut items: Vec<(String, f64, String)> = found
        .iter()
        .map(|(s, n)| (s.clone(), *n as f64, n.to_string()))
        .collect();
    if let Some(n) = winback_rows {
        items.push(("win-back list".to_string(), n as f64, n.to_string()));
    }
    let mut chart = scaled_bars(items, "#5b7bb4");
    if winback_rows.is_some() {
        if let Some(last) = chart.rows.last_mut() {
            last.fill = "#c77d2e";
        }
    }
    let total: i64 = found.iter().map(|f| f.1).sum::<i64>().max(1);
    let states = found
        .into_iter()
        .map(|(name, n)| Figure {
            value: format!("{n} ({})", pct(n as f64 / total as f64)),
            data: n.to_string(),
            name,
        })
        .collect();
    Ok(Lifecycle {
        bars: chart,
        states,
        winback: winback_rows,
    })
}

const COHORTS: usize = 24;

/// Retention of the last COHORTS cohorts in their first COHORTS months.
async fn cohorts(ctx: &SessionContext) -> Result<Cohorts, ReportError> {
    let sql = format!(
        "WITH recent AS (SELECT DISTINCT cohort_month FROM mart_cohort_retention ORDER BY cohort_month DESC LIMIT {COHORTS}) \
         SELECT CAST(r.cohort_month AS VARCHAR) AS cohort, CAST(r.month_offset AS BIGINT) AS month_offset, \
         CAST(r.retention_rate AS DOUBLE) AS retention_rate, CAST(r.cohort_customers AS BIGINT) AS cohort_customers \
         FROM mart_cohort_retention r JOIN recent c ON r.cohort_month = c.cohort_month \
         WHERE r.month_offset >= 0 AND r.month_offset < {COHORTS} ORDER BY 1, 2"
    );
    let mut found: Vec<(String, i64, f64, i64)> = Vec::new();
    for b in rows(ctx, &sql).await? {
        for i in 0..b.num_rows() {
            found.push((
                as_string(b.column(0).as_ref(), i),
                as_i64(b.column(1).as_ref(), i),
                as_f64(b.column(2).as_ref(), i),
                as_i64(b.column(3).as_ref(), i),
            ));
        }
    }
    let mut months: Vec<String> = found.iter().map(|f| f.0.clone()).collect();
    months.sort();
    months.dedup();
    let offsets = (found
        .iter()
        .map(|f| f.1)
        .max()
        .unwrap_or(0)
        .clamp(0, COHORTS as i64 - 1)
        + 1) as usize;
    let (left, top, cw, ch) = (64usize, 18usize, 22usize, 14usize);
    let cells = found
        .iter()
        .filter_map(|(cohort, offset, rate, customers)| {
            let row = months.iter().position(|m| m == cohort)?;
            if *offset < 0 || *offset >= COHORTS as i64 {
                return None;
            }
            let (x, y) = (left + *offset as usize * cw, top + row * ch);
            Some(GridCell {
                x,
                y,
                tx: x + cw / 2,
                ty: y + ch / 2 + 4,
                fill: shade(rate.max(0.0).sqrt()),
                row: cohort.clone(),
                col: offset.to_string(),
                value: rate.to_string(),
                title: format!(
                    "cohort {} month {offset}: {} of {customers} customers",
                    month_label(cohort),
                    pct(*rate)
                ),
                text: String::new(),
            })
        })
        .collect();
    let row_labels = months
        .iter()
        .enumerate()
        .map(|(i, m)| Label {
            x: left - 4,
            y: top + i * ch + 11,
            text: month_label(m),
        })
        .collect();
    let col_labels = (0..offsets)
        .map(|o| Label {
            x: left + o * cw + cw / 2,
            y: top - 5,
            text: o.to_string(),
        })
        .collect();
    let grid = Grid {
        width: left + offsets * cw + 10,
        height: top + months.len() * ch + 6,
        cw,
        ch,
        cells,
        rows: row_labels,
        cols: col_labels,
    };
    let at = |cohort: &str, offset: i64| {
        found
            .iter()
            .find(|f| f.0 == cohort && f.1 == offset)
            .map(|f| pct(f.2))
            .unwrap_or_default()
    };
    let table = months
        .iter()
        .map(|m| CohortRow {
            cohort: month_label(m),
            customers: found.iter().find(|f| &f.0 == m).map(|f| f.3).unwrap_or(0),
            m1: at(m.as_str(), 1),
            m3: at(m.as_str(), 3),
            m6: at(m.as_str(), 6),
            m12: at(m.as_str(), 12),
        })
        .collect();
    Ok(Cohorts { grid, rows: table })
}

/// Distribution of mart_clv's CLV in BUCKETS buckets up to its 99th percentile (the rest
/// in the last bucket).
async fn clv(ctx: &SessionContext) -> Result<Clv, ReportError> {
    let stats = rows(
        ctx,
        "SELECT CAST(count(*) AS BIGINT), CAST(coalesce(min(clv), 0.0) AS DOUBLE), CAST(coalesce(max(clv), 0.0) AS DOUBLE), \
         CAST(coalesce(avg(clv), 0.0) AS DOUBLE), CAST(coalesce(sum(CASE WHEN clv = 0 THEN 1 ELSE 0 END), 0) AS BIGINT) FROM mart_clv WHERE clv IS NOT NULL",
    )
    .await?;
    let (mut n, mut low, mut high, mut mean, mut zero) = (0i64, 0.0f64, 0.0f64, 0.0f64, 0i64);
    if let Some(b) = stats.iter().find(|b| b.num_rows() > 0) {
        n = as_i64(b.column(0).as_ref(), 0);
        low = as_f64(b.column(1).as_ref(), 0);
        high = as_f64(b.column(2).as_ref(), 0);
        mean = as_f64(b.column(3).as_ref(), 0);
        zero = as_i64(b.column(4).as_ref(), 0);
    }
    let mut top = high;
    if n > 0 {
        let sql = format!("SELECT CAST(clv AS DOUBLE) AS v FROM mart_clv WHERE clv IS NOT NULL ORDER BY v DESC LIMIT 1 OFFSET {}", n / 100);
        let p99 = rows(ctx, &sql).await?;
        if let Some(b) = p99.iter().find(|b| b.num_rows() > 0) {
            top = as_f64(b.column(0).as_ref(), 0);
        }
    }
    if top <= low {
        top = high;
    }
    let (counts, width) = buckets(ctx, "mart_clv", "clv", low, top).await?;
    let columns = counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let from = low + i as f64 * width;
            let label = if i as i64 == BUCKETS - 1 {
                format!("{}+", edge_text(from, width))
            } else {
                format!(
                    "{}-{}",
                    edge_text(from, width),
                    edge_text(from + width, width)
                )
            };
            (label, c)
        })
        .collect();
    let high_label = if top < high {
        format!("{}+", edge_text(top, width))
    } else {
        edge_text(top, width)
    };
    Ok(Clv {
        hist: histogram(columns, false, edge_text(low, width), high_label, None),
        customers: n,
        mean: format!("{mean:.2}"),
        max: format!("{high:.2}"),
        p99: format!("{top:.2}"),
        zero,
    })
}

/// Every column of mart_clv_model's one row.
async fn clv_model(ctx: &SessionContext) -> Result<Vec<Param>, ReportError> {
    let mut params = Vec::new();
    for b in rows(ctx, "SELECT * FROM mart_clv_model LIMIT 1").await? {
        if b.num_rows() == 0 {
            continue;
        }
        let schema = b.schema();
        for (c, field) in schema.fields().iter().enumerate() {
            let a = b.column(c).as_ref();
            let numeric = a.data_type().is_numeric();
            let (value, data) = if a.is_null(0) {
                (String::new(), String::new())
            } else if *a.data_type() == DataType::Float64 {
                let v = as_f64(a, 0);
                (num_text(v), v.to_string())
            } else {
                let s = as_string(a, 0);
                (s.clone(), s)
            };
            params.push(Param {
                name: field.name().to_string(),
                value,
                data,
                numeric,
            });
        }
        break;
    }
    Ok(params)
}

const CX_MONTHS: usize = 36;

/// NPS, CSAT and CES of the whole population (breakdown total) per month, the last CX_MONTHS.
async fn cx(ctx: &SessionContext) -> Result<Cx, ReportError> {
    let sql = format!(
        "SELECT CAST(month AS VARCHAR) AS month, CAST(nps AS DOUBLE) AS nps, CAST(csat AS DOUBLE) AS csat, CAST(ces AS DOUBLE) AS ces, \
         CAST(survey_answers AS BIGINT) AS answers FROM mart_cx WHERE breakdown = 'total' ORDER BY 1 DESC LIMIT {CX_MONTHS}"
    );
    let mut found: Vec<(String, Option<f64>, Option<f64>, Option<f64>, i64)> = Vec::new();
    for b in rows(ctx, &sql).await? {
        for i in 0..b.num_rows() {
            found.push((
                as_string(b.column(0).as_ref(), i),
                opt_f64(b.column(1).as_ref(), i),
                opt_f64(b.column(2).as_ref(), i),
                opt_f64(b.column(3).as_ref(), i),
                as_i64(b.column(4).as_ref(), i),
            ));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let (left, plot_w, plot_h, gap) = (44usize, 420usize, 100usize, 132usize);
    let n = found.len();
    let x_of = |i: usize| {
        if n > 1 {
            r1(left as f64 + i as f64 / (n - 1) as f64 * plot_w as f64)
        } else {
            r1(left as f64 + plot_w as f64 / 2.0)
        }
    };
    let specs: [(&str, f64, f64, &'static str); 3] = [
        ("NPS", -100.0, 100.0, "#1f6f43"),
        ("CSAT (% satisfied)", 0.0, 100.0, "#5b7bb4"),
        ("CES (1 effortless to 7 very hard)", 1.0, 7.0, "#c77d2e"),
    ];
    let mut panels = Vec::new();
    for (k, &(name, lo, hi, stroke)) in specs.iter().enumerate() {
        let mut points = Vec::new();
        let mut dots = Vec::new();
        for (i, row) in found.iter().enumerate() {
            let v = match k {
                0 => row.1,
                1 => row.2,
                _ => row.3,
            };
            let Some(v) = v.filter(|v| v.is_finite()) else {
                continue;
            };
            let y =
                r1(18.0 + plot_h as f64 - ((v - lo) / (hi - lo)).clamp(0.0, 1.0) * plot_h as f64);
            let x = x_of(i);
            points.push(format!("{x},{y}"));
            dots.push(Dot {
                x,
                y,
                title: format!("{} {}: {v}", month_label(&row.0), name),
            });
        }
        panels.push(Panel {
            name: name.to_string(),
            top: k * gap,
            stroke,
            points: points.join(" "),
            dots,
            high: format!("{hi}"),
            low: format!("{lo}"),
        });
    }
    let text = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let months = found
        .iter()
        .map(|r| CxRow {
            month: month_label(&r.0),
            answers: r.4,
            nps: text(r.1),
            csat: text(r.2),
            ces: text(r.3),
        })
        .collect();
    Ok(Cx {
        width: left + plot_w + 16,
        height: 3 * gap + 16,
        left,
        plot_w,
        plot_h,
        first: found.first().map(|r| month_label(&r.0)).unwrap_or_default(),
        last: found.last().map(|r| month_label(&r.0)).unwrap_or_default(),
        panels,
        months,
    })
}

/// Touchpoints of mart_touchpoints by buying stage (rows) and channel (columns).
async fn touchpoints(ctx: &SessionContext) -> Result<Touchpoints, ReportError> {
    let mut found: Vec<(String, String, i64)> = Vec::new();
    let sql = "SELECT coalesce(stage, '(none)') AS stage, coalesce(channel, '(none)') AS channel, CAST(count(*) AS BIGINT) AS n FROM mart_touchpoints GROUP BY 1, 2";
    for b in rows(ctx, sql).await? {
        for i in 0..b.num_rows() {
            found.push((
                as_string(b.column(0).as_ref(), i),
                as_string(b.column(1).as_ref(), i),
                as_i64(b.column(2).as_ref(), i),
            ));
        }
    }
    let stages = ordered(
        found.iter().map(|f| f.0.clone()).collect(),
        &["pre-purchase", "purchase", "post-purchase"],
    );
    let channels = ordered(
        found.iter().map(|f| f.1.clone()).collect(),
        &["online", "offline"],
    );
    found.sort_by_key(|f| {
        (
            stages.iter().position(|s| *s == f.0),
            channels.iter().position(|c| *c == f.1),
        )
    });
    let most = found.iter().map(|f| f.2).max().unwrap_or(1).max(1) as f64;
    let (left, top, cw, ch) = (110usize, 18usize, 110usize, 34usize);
    let cells = found
        .iter()
        .filter_map(|(stage, channel, n)| {
            let (r, c) = (
                stages.iter().position(|s| s == stage)?,
                channels.iter().position(|x| x == channel)?,
            );
            let (x, y) = (left + c * cw, top + r * ch);
            Some(GridCell {
                x,
                y,
                tx: x + cw / 2,
                ty: y + ch / 2 + 4,
                fill: shade(*n as f64 / most),
                row: stage.clone(),
                col: channel.clone(),
                value: n.to_string(),
                title: format!("{stage}, {channel}: {n} touchpoints"),
                text: n.to_string(),
            })
        })
        .collect();
    let row_labels = stages
        .iter()
        .enumerate()
        .map(|(i, s)| Label {
            x: left - 6,
            y: top + i * ch + ch / 2 + 4,
            text: s.clone(),
        })
        .collect();
    let col_labels = channels
        .iter()
        .enumerate()
        .map(|(i, c)| Label {
            x: left + i * cw + cw / 2,
            y: top - 5,
            text: c.clone(),
        })
        .collect();
    let grid = Grid {
        width: left + channels.len() * cw + 10,
        height: top + stages.len() * ch + 6,
        cw,
        ch,
        cells,
        rows: row_labels,
        cols: col_labels,
    };
    let total: i64 = found.iter().map(|f| f.2).sum();
    let table = found
        .into_iter()
        .map(|(stage, channel, count)| TouchRow {
            stage,
            channel,
            count,
        })
        .collect();
    Ok(Touchpoints {
        grid,
        rows: table,
        total,
    })
}

/// Conversion, from mart_journeys: the share of its customers who bought, and the share of
/// their web sessions that reached the order confirmation. (Per entry channel it would
/// take a distinct count over every web touchpoint of mart_touchpoints, the report's
/// largest input: seconds at a million customers.)
async fn conversion(ctx: &SessionContext) -> Result<Conversion, ReportError> {
    let (mut customers, mut buyers, mut sessions, mut converting_sessions) =
        (0i64, 0i64, 0i64, 0i64);
    let sql = "SELECT CAST(count(*) AS BIGINT), CAST(count(first_purchase_on) AS BIGINT), CAST(coalesce(sum(sessions), 0) AS BIGINT), \
               CAST(coalesce(sum(converting_sessions), 0) AS BIGINT) FROM mart_journeys";
    let found = rows(ctx, sql).await?;
    if let Some(b) = found.iter().find(|b| b.num_rows() > 0) {
        customers = as_i64(b.column(0).as_ref(), 0);
        buyers = as_i64(b.column(1).as_ref(), 0);
        sessions = as_i64(b.column(2).as_ref(), 0);
        converting_sessions = as_i64(b.column(3).as_ref(), 0);
    }
    let ratio = |a: i64, b: i64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let (share, session_rate) = (
        ratio(buyers, customers),
        ratio(converting_sessions, sessions),
    );
    let items = vec![
        ("customers who bought".to_string(), share, pct(share)),
        (
            "web sessions converting".to_string(),
            session_rate,
            pct(session_rate),
        ),
    ];
    Ok(Conversion {
        bars: bar_chart(items, "#5b7bb4", 1.0),
        customers,
        buyers,
        share: pct(share),
        share_data: share.to_string(),
        sessions,
        converting_sessions,
    })
}

/// The rows of one metric of mart_identity_quality.
fn metric<'a>(
    found: &'a [(String, String, f64)],
    name: &'a str,
) -> impl Iterator<Item = &'a (String, String, f64)> + 'a {
    found.iter().filter(move |f| f.0 == name)
}

const CLUSTER_SIZES: [&str; 7] = ["1", "2", "3", "4", "5-9", "10-49", "50+"];

/// The identity figures of mart_identity_quality (see `identity::resolve` for the metrics).
async fn identity(ctx: &SessionContext) -> Result<Identity, ReportError> {
    let mut found: Vec<(String, String, f64)> = Vec::new();
    for b in rows(
        ctx,
        "SELECT metric, dimension, CAST(value AS DOUBLE) AS value FROM mart_identity_quality",
    )
    .await?
    {
        for i in 0..b.num_rows() {
            found.push((
                as_string(b.column(0).as_ref(), i),
                as_string(b.column(1).as_ref(), i),
                as_f64(b.column(2).as_ref(), i),
            ));
        }
    }

    let mut sizes: Vec<(String, i64)> = metric(&found, "cluster_size")
        .map(|f| (f.1.clone(), f.2.round() as i64))
        .collect();
    sizes.sort_by_key(|s| {
        CLUSTER_SIZES
            .iter()
            .position(|o| *o == s.0.as_str())
            .unwrap_or(CLUSTER_SIZES.len())
    });
    let clusters = if sizes.is_empty() {
        None
    } else {
        Some(histogram(sizes, true, String::new(), String::new(), None))
    };

    // m, u and weight per comparison level, in the order of the mart.
    let mut levels: Vec<(String, Option<f64>, Option<f64>, Option<f64>)> = Vec::new();
    for (m, dim, v) in &found {
        let slot = match m.as_str() {
            "m_probability" => 1,
            "u_probability" => 2,
            "match_weight" => 3,
            _ => continue,
        };
        let i = match levels.iter().position(|l| &l.0 == dim) {
            Some(i) => i,
            None => {
                levels.push((dim.clone(), None, None, None));
                levels.len() - 1
            }
        };
        match slot {
            1 => levels[i].1 = Some(*v),
            2 => levels[i].2 = Some(*v),
            _ => levels[i].3 = Some(*v),
        }
    }
    let weight_items: Vec<(String, f64, String)> = levels
        .iter()
        .filter_map(|l| l.3.map(|w| (l.0.clone(), w, format!("{w:.2}"))))
        .collect();
    let level_bars = if weight_items.is_empty() {
        None
    } else {
        Some(diverging(weight_items))
    };
    let levels = levels
        .into_iter()
        .map(|(level, m, u, w)| LevelRow {
            level,
            m: m.map(prob_text).unwrap_or_default(),
            u: u.map(prob_text).unwrap_or_default(),
            weight: w.map(|w| format!("{w:.2}")).unwrap_or_default(),
            weight_data: w.map(|w| w.to_string()).unwrap_or_default(),
        })
        .collect();

    let blocking_found: Vec<(String, f64)> = metric(&found, "candidate_pairs")
        .filter_map(|f| {
            f.1.strip_prefix("blocking:")
                .map(|rule| (rule.to_string(), f.2))
        })
        .collect();
    let blocking = if blocking_found.is_empty() {
        None
    } else {
        Some(scaled_bars(
            blocking_found
                .iter()
                .map(|(r, v)| (r.clone(), *v, format!("{v:.0}")))
                .collect(),
            "#5b7bb4",
        ))
    };
    let blocking_rows = blocking_found
        .iter()
        .map(|(r, v)| Figure {
            name: r.clone(),
            value: format!("{v:.0}"),
            data: v.to_string(),
        })
        .collect();

    let mut largest_found: Vec<(String, f64)> = metric(&found, "largest_cluster")
        .map(|f| {
            (
                f.1.strip_prefix("customer_key:")
                    .unwrap_or(&f.1)
                    .to_string(),
                f.2,
            )
        })
        .collect();
    largest_found.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    largest_found.truncate(10);
    let largest = if largest_found.is_empty() {
        None
    } else {
        Some(scaled_bars(
            largest_found
                .iter()
                .map(|(k, v)| (k.clone(), *v, format!("{v:.0}")))
                .collect(),
            "#c77d2e",
        ))
    };
    let largest_rows = largest_found
        .iter()
        .map(|(k, v)| Figure {
            name: k.clone(),
            value: format!("{v:.0}"),
            data: v.to_string(),
        })
        .collect();

    let mut accuracy_found: Vec<(String, f64)> = Vec::new();
    for name in ["precision", "recall", "f1"] {
        if let Some(f) = metric(&found, name).find(|f| f.1 == "pairwise") {
            accuracy_found.push((name.to_string(), f.2));
        }
    }
    let accuracy = if accuracy_found.is_empty() {
        None
    } else {
        Some(bar_chart(
            accuracy_found
                .iter()
                .map(|(n, v)| (n.clone(), *v, format!("{v:.4}")))
                .collect(),
            "#2e8b57",
            1.0,
        ))
    };
    let accuracy_rows = accuracy_found
        .iter()
        .map(|(n, v)| Figure {
            name: n.clone(),
            value: format!("{v:.4}"),
            data: v.to_string(),
        })
        .collect();

    Ok(Identity {
        clusters,
        levels,
        level_bars,
        blocking,
        blocking_rows,
        largest,
        largest_rows,
        accuracy,
        accuracy_rows,
    })
}

/// The match weights of mart_identity_pairs in BUCKETS buckets, with the identity step's
/// threshold (a match probability) as a line where the manifest gives it.
async fn pair_weights(
    ctx: &SessionContext,
    threshold: Option<f64>,
) -> Result<PairWeights, ReportError> {
    let stats = rows(
        ctx,
        "SELECT CAST(count(*) AS BIGINT), CAST(coalesce(min(CAST(match_weight AS DOUBLE)), 0.0) AS DOUBLE), \
         CAST(coalesce(max(CAST(match_weight AS DOUBLE)), 0.0) AS DOUBLE) FROM mart_identity_pairs WHERE match_weight IS NOT NULL",
    )
    .await?;
    let (mut n, mut low, mut high) = (0i64, 0.0f64, 0.0f64);
    if let Some(b) = stats.iter().find(|b| b.num_rows() > 0) {
        n = as_i64(b.column(0).as_ref(), 0);
        low = as_f64(b.column(1).as_ref(), 0);
        high = as_f64(b.column(2).as_ref(), 0);
    }
    let threshold = threshold.filter(|p| *p > 0.0 && *p < 1.0);
    let line = threshold.map(|p| (p / (1.0 - p)).log2());
    if let Some(w) = line {
        if n == 0 {
            (low, high) = (w, w);
        }
        low = low.min(w);
        high = high.max(w);
    }
    let (counts, width) = buckets(ctx, "mart_identity_pairs", "match_weight", low, high).await?;
    let columns = counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let from = low + i as f64 * width;
            (format!("{:.1} to {:.1} bits", from, from + width), c)
        })
        .collect();
    let marker = match (line, threshold) {
        (Some(w), Some(p)) => Some((
            if high > low {
                (w - low) / (high - low)
            } else {
                0.5
            },
            format!("threshold {w:.1} bits (p = {p})"),
        )),
        _ => None,
    };
    Ok(PairWeights {
        hist: histogram(
            columns,
            false,
            format!("{low:.1}"),
            format!("{high:.1}"),
            marker,
        ),
        pairs: n,
        threshold: threshold.map(|p| p.to_string()).unwrap_or_default(),
    })
}

/// Customers of mart_loyalty_ladder per movement since the previous run's ladder.
async fn movements(ctx: &SessionContext) -> Result<Vec<(String, i64)>, ReportError> {
    let sql = "SELECT movement, CAST(count(*) AS BIGINT) AS customers, \
               CASE movement WHEN 'up' THEN 1 WHEN 'down' THEN 2 WHEN 'same' THEN 3 WHEN 'new' THEN 4 ELSE 5 END AS movement_order \
               FROM mart_loyalty_ladder GROUP BY movement ORDER BY movement_order, movement";
    let mut found = Vec::new();
    for b in rows(ctx, sql).await? {
        for i in 0..b.num_rows() {
            found.push((
                as_string(b.column(0).as_ref(), i),
                as_i64(b.column(1).as_ref(), i),
            ));
        }
    }
    Ok(found)
}

/// How many earlier manifests `previous_success` reads at most.
const PREVIOUS_LOOKUPS: usize = 200;

/// The manifest of the newest run before `run_id` of `pipeline` that succeeded.
async fn previous_success(
    store: &Store,
    run_id: &str,
    pipeline: &serde_json::Value,
) -> Result<Option<serde_json::Value>, ReportError> {
    let dir = store.path("_runs")?;
    let listing: Vec<_> = store
        .object_store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| store.io_error(&dir, e))?;
    let mut ids: Vec<String> = listing
        .iter()
        .filter_map(|m| {
            m.location
                .filename()?
                .strip_suffix(".json")
                .map(String::from)
        })
        .filter(|id| id.as_str() < run_id)
        .collect();
    ids.sort();
    ids.dedup();
    for id in ids.iter().rev().take(PREVIOUS_LOOKUPS) {
        let Ok(m) = manifest(store, id).await else {
            continue;
        };
        if m.get("pipeline") == Some(pipeline)
            && m.get("status").and_then(|s| s.as_str()) == Some("succeeded")
        {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// Rows per mart a manifest says its run published.
fn output_rows(m: &serde_json::Value) -> BTreeMap<String, u64> {
    let mut rows = BTreeMap::new();
    for o in m
        .get("outputs")
        .and_then(|o| o.as_array())
        .map(|a| a.as_slice())
        .unwrap_or(&[])
    {
        if let (Some(mart), Some(n)) = (
            o.get("mart").and_then(|v| v.as_str()),
            o.get("rows").and_then(|v| v.as_u64()),
        ) {
            rows.insert(mart.to_string(), n);
        }
    }
    rows
}

/// The marts the report reads, registered when the run published them.
const CHART_MARTS: [&str; 14] = [
    "mart_abc",
    "mart_rfm",
    "mart_customer_value",
    "mart_lifecycle",
    "mart_winback",
    "mart_cohort_retention",
    "mart_clv",
    "mart_clv_model",
    "mart_cx",
    "mart_touchpoints",
    "mart_journeys",
    "mart_identity_quality",
    "mart_identity_pairs",
    "mart_loyalty_ladder",
];

/// `future`, with its time in the debug log.
async fn timed<T>(chart: &'static str, future: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = future.await;
    tracing::debug!(
        chart,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "report chart"
    );
    out
}

/// The report of `run_id` as HTML.
pub async fn render(store: &Store, run_id: &str) -> Result<String, ReportError> {
    let m = manifest(store, run_id).await?;
    let get = |k: &str| m.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let duration = m
        .get("duration_ms")
        .and_then(|v| v.as_u64())
        .map(|ms| format!("{:.1} s", ms as f64 / 1000.0));
    let params: BTreeMap<String, String> = get("parameters")
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let empty = Vec::new();
    let inputs: Vec<serde_json::Value> = get("inputs")
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|i| {
            let files = i.get("files").and_then(|f| f.as_array()).cloned().unwrap_or_default();
            serde_json::json!({
                "name": i.get("name"),
                "files": files.len(),
                "bytes": files.iter().map(|f| num(f.get("size").unwrap_or(&serde_json::Value::Null))).sum::<u64>(),
                "rows": i.get("rows"),
                "quarantined": i.get("quarantined"),
                "reused": files.iter().filter(|f| f.get("reused").and_then(|r| r.as_bool()).unwrap_or(false)).count(),
            })
        })
        .collect();
    let steps_json = get("steps").as_array().cloned().unwrap_or_default();
    let total_ms: u64 = steps_json
        .iter()
        .map(|s| num(s.get("duration_ms").unwrap_or(&serde_json::Value::Null)))
        .sum::<u64>()
        .max(1);
    let (label_width, bar_width) = (230usize, 760usize);
    let mut offset = 0u64;
    let mut bars = Vec::new();
    let mut steps = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for (i, s) in steps_json.iter().enumerate() {
        let ms = num(s.get("duration_ms").unwrap_or(&serde_json::Value::Null));
        let name = s
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let output = s
            .get("output")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let x = label_width + (offset as f64 / total_ms as f64 * bar_width as f64) as usize;
        let w = ((ms as f64 / total_ms as f64 * bar_width as f64) as usize).max(1);
        let fill = match output.as_str() {
            "mart" => "#2e8b57",
            "table" => "#5b7bb4",
            _ => "#a7b1c2",
        };
        bars.push(Bar {
            name: name.clone(),
            x,
            y: i * 18,
            w,
            ms,
            fill,
        });
        offset += ms;
        let checks = s
            .get("checks")
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default();
        let failing: Vec<String> = checks
            .iter()
            .filter(|c| c.get("passed").and_then(|p| p.as_bool()) == Some(false))
            .map(|c| {
                format!(
                    "{} failed on {} rows",
                    c.get("check").and_then(|v| v.as_str()).unwrap_or(""),
                    num(c.get("failing_rows").unwrap_or(&serde_json::Value::Null))
                )
            })
            .collect();
        for w in s
            .get("warnings")
            .and_then(|w| w.as_array())
            .cloned()
            .unwrap_or_default()
        {
            warnings.push(format!("{name}: {}", w.as_str().unwrap_or("")));
        }
        steps.push(serde_json::json!({
            "name": name,
            "output": output,
            "rows": s.get("rows").and_then(|r| r.as_u64()).map(|r| r.to_string()).unwrap_or_default(),
            "ms": ms,
            "peak_mib": s.get("peak_rss_bytes").and_then(|r| r.as_u64()).map(|b| format!("{:.0}", b as f64 / 1048576.0)).unwrap_or_default(),
            "failing": failing,
            "passed": checks.len() - failing.len(),
        }));
    }
    let timeline = Timeline {
        width: label_width + bar_width + 10,
        height: steps_json.len() * 18 + 4,
        bars,
    };

    // Charts from the marts this run published (none unless it succeeded). Filters are
    // applied while decoding Parquet, so a filtered scan of a large mart decodes the other
    // columns of the matching rows only.
    let config = datafusion::prelude::SessionConfig::new()
        .set_bool("datafusion.execution.parquet.pushdown_filters", true);
    let ctx = SessionContext::new_with_config(config);
    store.register(&ctx);

    // Quarantine by source and kind of reason, with the first rows' file and line: not their
    // values (nor the quarantine file's reasons, which quote them), which may be personal
    // data.
    let mut quarantine = Vec::new();
    for (n, q) in get("quarantine")
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        let source = q
            .get("source")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let reasons: Vec<serde_json::Value> = get("inputs")
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter(|i| i.get("name").and_then(|v| v.as_str()) == Some(source.as_str()))
            .flat_map(|i| {
                i.get("reasons")
                    .and_then(|r| r.as_object())
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|(reason, rows)| serde_json::json!({ "reason": reason, "rows": rows }))
            .collect();
        let mut samples = Vec::new();
        if let Some(url) = q.get("file").and_then(|v| v.as_str()) {
            let table = format!("quarantine_{n}");
            let sql = format!("SELECT CAST(file AS VARCHAR), CAST(line AS BIGINT) FROM {table} ORDER BY 1, 2 LIMIT 3");
            // A quarantine file that cannot be read leaves its samples out, not the report.
            if ctx
                .register_parquet(table.as_str(), url, ParquetReadOptions::default())
                .await
                .is_ok()
            {
                if let Ok(batches) = rows(&ctx, &sql).await {
                    for b in &batches {
                        for i in 0..b.num_rows() {
                            samples.push(serde_json::json!({
                                "file": as_string(b.column(0).as_ref(), i),
                                "line": as_i64(b.column(1).as_ref(), i),
                            }));
                        }
                    }
                }
            }
        }
        quarantine.push(serde_json::json!({
            "source": source,
            "rows": q.get("rows"),
            "file": q.get("file"),
            "reasons": reasons,
            "samples": samples,
        }));
    }
    let succeeded = get("status").as_str() == Some("succeeded");
    let mut published = BTreeMap::new();
    if succeeded {
        for o in get("outputs").as_array().unwrap_or(&empty) {
            if let (Some(mart), Some(url)) = (
                o.get("mart").and_then(|v| v.as_str()),
                o.get("version_url").and_then(|v| v.as_str()),
            ) {
                published.insert(mart.to_string(), url.to_string());
            }
        }
    }
    for mart in CHART_MARTS {
        if let Some(url) = published.get(mart) {
            ctx.register_parquet(mart, url, ParquetReadOptions::default())
                .await?;
        }
    }
    let has = |mart: &str| published.contains_key(mart);
    let identity_details = steps_json
        .iter()
        .find(|s| s.get("kind").and_then(|k| k.as_str()) == Some("identity"))
        .and_then(|s| s.get("details"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let threshold = identity_details.get("threshold").and_then(|t| t.as_f64());
    // The charts' queries run together: most are small and wait on planning and on reading
    // Parquet footers more than on the cores.
    let parameters = get("parameters");
    let chart = |mart: &str| has(mart);
    let (
        pareto_data,
        rfm_data,
        tiers_data,
        lifecycle_data,
        cohorts_data,
        clv_data,
        clv_model_data,
        cx_data,
        touchpoints_data,
        conversion_data,
        identity_data,
        pairs_data,
    ) = futures::join!(
        timed(
            "pareto",
            OptionFuture::from(chart("mart_abc").then(|| pareto(&ctx, &parameters)))
        ),
        timed(
            "rfm",
            OptionFuture::from(chart("mart_rfm").then(|| rfm(&ctx)))
        ),
        timed(
            "value_tiers",
            OptionFuture::from(chart("mart_customer_value").then(|| value_tiers(&ctx)))
        ),
        timed(
            "lifecycle",
            OptionFuture::from(
                (chart("mart_lifecycle") || chart("mart_winback")).then(|| lifecycle(
                    &ctx,
                    chart("mart_lifecycle"),
                    chart("mart_winback")
                ))
            )
        ),
        timed(
            "cohorts",
            OptionFuture::from(chart("mart_cohort_retention").then(|| cohorts(&ctx)))
        ),
        timed(
            "clv",
            OptionFuture::from(chart("mart_clv").then(|| clv(&ctx)))
        ),
        timed(
            "clv_model",
            OptionFuture::from(chart("mart_clv_model").then(|| clv_model(&ctx)))
        ),
        timed("cx", OptionFuture::from(chart("mart_cx").then(|| cx(&ctx)))),
        timed(
            "touchpoints",
            OptionFuture::from(chart("mart_touchpoints").then(|| touchpoints(&ctx)))
        ),
        timed(
            "conversion",
            OptionFuture::from(chart("mart_journeys").then(|| conversion(&ctx)))
        ),
        timed(
            "identity",
            OptionFuture::from(chart("mart_identity_quality").then(|| identity(&ctx)))
        ),
        timed(
            "identity_pairs",
            OptionFuture::from(chart("mart_identity_pairs").then(|| pair_weights(&ctx, threshold)))
        ),
    );
    let pareto_data = pareto_data.transpose()?;
    let rfm_data = rfm_data.transpose()?;
    let tiers_data = tiers_data.transpose()?;
    let lifecycle_data = lifecycle_data.transpose()?;
    let cohorts_data = cohorts_data.transpose()?;
    let clv_data = clv_data.transpose()?;
    let clv_model_data = clv_model_data.transpose()?;
    let cx_data = cx_data.transpose()?;
    let touchpoints_data = touchpoints_data.transpose()?;
    let conversion_data = conversion_data.transpose()?;
    let identity_data = identity_data.transpose()?;
    let pairs_data = pairs_data.transpose()?;

    // What changed since the previous successful run of the pipeline.
    let changes = if succeeded {
        let previous = previous_success(store, run_id, &get("pipeline")).await?;
        let now = output_rows(&m);
        let mut marts = Vec::new();
        if let Some(p) = &previous {
            let then = output_rows(p);
            let mut names: Vec<&String> = now.keys().chain(then.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let (a, b) = (now.get(name).copied(), then.get(name).copied());
                marts.push(MartRows {
                    mart: name.clone(),
                    now: a.map(|v| v.to_string()).unwrap_or_default(),
                    then: b.map(|v| v.to_string()).unwrap_or_default(),
                    change: match (a, b) {
                        (Some(a), Some(b)) => format!("{:+}", a as i64 - b as i64),
                        (Some(_), None) => "new".to_string(),
                        (None, Some(_)) => "not published".to_string(),
                        (None, None) => String::new(),
                    },
                });
            }
        }
        let mut keys = Vec::new();
        if let Some(k) = identity_details.get("keys") {
            for name in ["new", "kept", "retired", "merges", "splits"] {
                if let Some(v) = k.get(name).and_then(|v| v.as_u64()) {
                    keys.push(Figure {
                        name: name.to_string(),
                        value: v.to_string(),
                        data: v.to_string(),
                    });
                }
            }
        }
        let (movement_bars, movement_rows): (Option<Bars>, Vec<Figure>) =
            if has("mart_loyalty_ladder") {
                let found = movements(&ctx).await?;
                let chart = scaled_bars(
                    found
                        .iter()
                        .map(|(name, n)| (name.clone(), *n as f64, n.to_string()))
                        .collect(),
                    "#5b7bb4",
                );
                (
                    Some(chart),
                    found
                        .into_iter()
                        .map(|(name, n)| Figure {
                            name,
                            value: n.to_string(),
                            data: n.to_string(),
                        })
                        .collect(),
                )
            } else {
                (None, Vec::new())
            };
        Some(Changes {
            previous: previous
                .as_ref()
                .and_then(|p| p.get("run_id"))
                .and_then(|v| v.as_str())
                .map(String::from),
            previous_started: previous
                .as_ref()
                .and_then(|p| p.get("started_at"))
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            marts,
            identity_keys: keys,
            movements: movement_bars,
            movement_rows,
        })
    } else {
        None
    };

    let mut env = minijinja::Environment::new();
    env.add_template("report.html", include_str!("report.html"))?;
    let html = env
        .get_template("report.html")?
        .render(minijinja::context! {
            run => m,
            duration => duration,
            params => params,
            errors => get("errors"),
            error_kind => get("error_kind"),
            inputs => inputs,
            quarantine => quarantine,
            steps => steps,
            timeline => timeline,
            warnings => warnings,
            changes => changes,
            pareto => pareto_data,
            rfm => rfm_data,
            tiers => tiers_data,
            lifecycle => lifecycle_data,
            cohorts => cohorts_data,
            clv => clv_data,
            clv_model => clv_model_data,
            cx => cx_data,
            touchpoints => touchpoints_data,
            conversion => conversion_data,
            identity => identity_data,
            pairs => pairs_data,
        })?;
    Ok(html)
}

/// Writes the report of `run_id` next to its manifest; returns its URL.
pub async fn write(store: &Store, run_id: &str) -> Result<String, ReportError> {
    let html = render(store, run_id).await?;
    let path = store.path(&format!("_runs/{run_id}.html"))?;
    store
        .object_store
        .put(&path, PutPayload::from(html.into_bytes()))
        .await
        .map_err(|e| store.io_error(&path, e))?;
    Ok(store.url(&path))
}
