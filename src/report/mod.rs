//! The run report: a self-contained HTML page next to each run's manifest
//! (`_runs/<run_id>.html`), readable offline (no scripts, fonts or network; charts are
//! inline SVG). It shows the run (status, parameters, inputs, quarantine, a timeline of
//! the steps with rows, memory and checks, warnings and where a failed run failed) and,
//! from the marts the run published, the ABC Pareto curve with the class cutoffs and the
//! RFM grid. A chart appears only when its mart was published by the run.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
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

/// The manifest of `run_id` as JSON.
async fn manifest(store: &Store, run_id: &str) -> Result<serde_json::Value, ReportError> {
    let path = store.path(&format!("_runs/{run_id}.json"))?;
    let bytes = match store.object_store.get(&path).await {
        Ok(r) => r.bytes().await.map_err(|e| store.io_error(&path, e))?,
        Err(object_store::Error::NotFound { .. }) => return Err(ReportError::NoRun(run_id.into())),
        Err(e) => return Err(store.io_error(&path, e).into()),
    };
    serde_json::from_slice(&bytes).map_err(|e| ReportError::Manifest { run: run_id.into(), message: e.to_string() })
}

/// The newest run of the store, by run id (ids sort by time).
pub async fn latest_run(store: &Store) -> Result<Option<String>, ReportError> {
    let dir = store.path("_runs")?;
    let listing: Vec<_> = store.object_store.list(Some(&dir)).try_collect().await.map_err(|e| store.io_error(&dir, e))?;
    Ok(listing.iter().filter_map(|m| m.location.filename()?.strip_suffix(".json").map(String::from)).max())
}

fn as_i64(a: &dyn Array, i: usize) -> i64 {
    if a.is_null(i) {
        return 0;
    }
    match a.data_type() {
        datafusion::arrow::datatypes::DataType::Int64 => a.as_primitive::<Int64Type>().value(i),
        datafusion::arrow::datatypes::DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i) as i64,
        datafusion::arrow::datatypes::DataType::Int32 => a.as_primitive::<Int32Type>().value(i) as i64,
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

async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>, ReportError> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

const PARETO_SIZE: usize = 320;
const PARETO_POINTS: i64 = 400;

async fn pareto(ctx: &SessionContext, params: &serde_json::Value) -> Result<Pareto, ReportError> {
    let n = rows(ctx, "SELECT count(*) FROM mart_abc").await?;
    let n = n.first().map(|b| as_i64(b.column(0).as_ref(), 0)).unwrap_or(0).max(1);
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
            cutoffs.push(Cutoff { y: size - v * size, label: format!("{label} at {:.0} %", v * 100.0) });
        }
    }
    let mut classes = Vec::new();
    let batches = rows(ctx, "SELECT abc_class, count(*), coalesce(sum(revenue), 0.0) FROM mart_abc GROUP BY abc_class ORDER BY abc_class").await?;
    let total: f64 = batches.iter().flat_map(|b| (0..b.num_rows()).map(move |i| as_f64(b.column(2).as_ref(), i))).sum();
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
                revenue_pct: if total > 0.0 { format!("{:.1} %", revenue / total * 100.0) } else { "-".into() },
            });
        }
    }
    Ok(Pareto { size: PARETO_SIZE, points: points.join(" "), cutoffs, classes })
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
            cells.push((as_i64(b.column(0).as_ref(), i), as_i64(b.column(1).as_ref(), i), as_i64(b.column(2).as_ref(), i), as_f64(b.column(3).as_ref(), i)));
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
                fill: format!("#{:02x}{:02x}{:02x}", channel(236.0, 31.0), channel(246.0, 111.0), channel(239.0, 67.0)),
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

/// The report of `run_id` as HTML.
pub async fn render(store: &Store, run_id: &str) -> Result<String, ReportError> {
    let m = manifest(store, run_id).await?;
    let get = |k: &str| m.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let duration = m.get("duration_ms").and_then(|v| v.as_u64()).map(|ms| format!("{:.1} s", ms as f64 / 1000.0));
    let params: BTreeMap<String, String> = get("parameters")
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))).collect())
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
    let total_ms: u64 = steps_json.iter().map(|s| num(s.get("duration_ms").unwrap_or(&serde_json::Value::Null))).sum::<u64>().max(1);
    let (label_width, bar_width) = (230usize, 760usize);
    let mut offset = 0u64;
    let mut bars = Vec::new();
    let mut steps = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for (i, s) in steps_json.iter().enumerate() {
        let ms = num(s.get("duration_ms").unwrap_or(&serde_json::Value::Null));
        let name = s.get("name").and_then(|v| v.as_str()).unwrap_or("").to_string();
        let output = s.get("output").and_then(|v| v.as_str()).unwrap_or("").to_string();
        let x = label_width + (offset as f64 / total_ms as f64 * bar_width as f64) as usize;
        let w = ((ms as f64 / total_ms as f64 * bar_width as f64) as usize).max(1);
        let fill = match output.as_str() {
            "mart" => "#2e8b57",
            "table" => "#5b7bb4",
            _ => "#a7b1c2",
        };
        bars.push(Bar { name: name.clone(), x, y: i * 18, w, ms, fill });
        offset += ms;
        let checks = s.get("checks").and_then(|c| c.as_array()).cloned().unwrap_or_default();
        let failing: Vec<String> = checks
            .iter()
            .filter(|c| c.get("passed").and_then(|p| p.as_bool()) == Some(false))
            .map(|c| format!("{} failed on {} rows", c.get("check").and_then(|v| v.as_str()).unwrap_or(""), num(c.get("failing_rows").unwrap_or(&serde_json::Value::Null))))
            .collect();
        for w in s.get("warnings").and_then(|w| w.as_array()).cloned().unwrap_or_default() {
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
    let timeline = Timeline { width: label_width + bar_width + 10, height: steps_json.len() * 18 + 4, bars };

    // Charts from the marts this run published.
    let ctx = SessionContext::new();
    store.register(&ctx);
    let mut published = BTreeMap::new();
    for o in get("outputs").as_array().unwrap_or(&empty) {
        if let (Some(mart), Some(url)) = (o.get("mart").and_then(|v| v.as_str()), o.get("version_url").and_then(|v| v.as_str())) {
            published.insert(mart.to_string(), url.to_string());
        }
    }
    let succeeded = get("status").as_str() == Some("succeeded");
    let chart = |mart: &str| published.get(mart).filter(|_| succeeded).cloned().map(|url| (mart.to_string(), url));
    let (abc, rfm_url) = (chart("mart_abc"), chart("mart_rfm"));
    let pareto_data = match abc {
        Some((mart, url)) => {
            ctx.register_parquet(mart.as_str(), &url, ParquetReadOptions::default()).await?;
            Some(pareto(&ctx, &get("parameters")).await?)
        }
        None => None,
    };
    let rfm_data = match rfm_url {
        Some((mart, url)) => {
            ctx.register_parquet(mart.as_str(), &url, ParquetReadOptions::default()).await?;
            Some(rfm(&ctx).await?)
        }
        None => None,
    };

    let mut env = minijinja::Environment::new();
    env.add_template("report.html", include_str!("report.html"))?;
    let html = env.get_template("report.html")?.render(minijinja::context! {
        run => m,
        duration => duration,
        params => params,
        errors => get("errors"),
        error_kind => get("error_kind"),
        inputs => inputs,
        quarantine => get("quarantine"),
        steps => steps,
        timeline => timeline,
        warnings => warnings,
        pareto => pareto_data,
        rfm => rfm_data,
    })?;
    Ok(html)
}

/// Writes the report of `run_id` next to its manifest; returns its URL.
pub async fn write(store: &Store, run_id: &str) -> Result<String, ReportError> {
    let html = render(store, run_id).await?;
    let path = store.path(&format!("_runs/{run_id}.html"))?;
    store.object_store.put(&path, PutPayload::from(html.into_bytes())).await.map_err(|e| store.io_error(&path, e))?;
    Ok(store.url(&path))
}
