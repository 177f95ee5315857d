//! `explain`: why two source records are, or are not, one person in a run. The identity
//! step's inputs are computed again with the run's pipeline and parameters, the records
//! are linked as the run linked them, and the pair's evidence is printed as a waterfall:
//! the prior, the weight each comparison added, the match weight and probability against
//! the threshold, and what became of the pair. Where the run published
//! `mart_identity_pairs` and `mart_identity_map`, its own weight and keys are shown beside,
//! so that a change of the exports since the run shows up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::Serialize;

use crm_marts::config::pipeline::{Pipeline, StepKind};
use crm_marts::identity::explain::PairExplanation;
use crm_marts::storage::{Store, Stores};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The run (see `crm-marts runs`).
    #[arg(long)]
    run: String,
    /// The first record, as SOURCE:ID (the identity input's source name and record id).
    a: String,
    /// The second record, as SOURCE:ID.
    b: String,
    #[arg(long, default_value = "config/local.yaml")]
    config: PathBuf,
    /// The store holding the run's manifest.
    #[arg(long, default_value = "marts")]
    store: String,
    /// The identity step, when the pipeline has several.
    #[arg(long)]
    step: Option<String>,
    /// Also write the waterfall as a self-contained HTML page with an SVG chart.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

fn record(text: &str) -> Result<(String, String)> {
    match text.split_once(':') {
        Some((source, id)) if !source.is_empty() && !id.is_empty() => {
            Ok((source.to_string(), id.to_string()))
        }
        _ => Err(super::UsageError(format!(
            "`{text}`: expected SOURCE:ID, e.g. erp_customers:C000123"
        ))
        .into()),
    }
}

/// What the run itself published about the pair, when it did.
#[derive(Debug, Default, Serialize)]
struct RunFigures {
    /// The pair's match weight in the run's `mart_identity_pairs`.
    match_weight: Option<f64>,
    decision: Option<String>,
    /// Each record's customer_key in the run's `mart_identity_map`.
    key_a: Option<String>,
    key_b: Option<String>,
}

async fn run_figures(
    manifest: &serde_json::Value,
    store: &Store,
    e: &PairExplanation,
) -> Result<RunFigures> {
    let ctx = SessionContext::new();
    store.register(&ctx);
    let mut urls = BTreeMap::new();
    for o in manifest["outputs"].as_array().into_iter().flatten() {
        if let (Some(mart), Some(url)) = (o["mart"].as_str(), o["version_url"].as_str()) {
            urls.insert(mart.to_string(), url.to_string());
        }
    }
    let text = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut figures = RunFigures::default();
    if let Some(url) = urls.get("mart_identity_pairs") {
        ctx.register_parquet("pairs", url, ParquetReadOptions::default())
            .await?;
        let sql = format!(
            "SELECT CAST(match_weight AS DOUBLE), CAST(decision AS VARCHAR) FROM pairs \
             WHERE (source_a = {sa} AND record_id_a = {ia} AND source_b = {sb} AND record_id_b = {ib}) \
                OR (source_a = {sb} AND record_id_a = {ib} AND source_b = {sa} AND record_id_b = {ia})",
            sa = text(&e.a.0),
            ia = text(&e.a.1),
            sb = text(&e.b.0),
            ib = text(&e.b.1)
        );
        for batch in ctx.sql(&sql).await?.collect().await? {
            if batch.num_rows() > 0 {
                figures.match_weight = Some(batch.column(0).as_primitive::<Float64Type>().value(0));
                let decision = datafusion::arrow::compute::cast(batch.column(1), &DataType::Utf8)?;
                figures.decision = Some(decision.as_string::<i32>().value(0).to_string());
            }
        }
    }
    if let Some(url) = urls.get("mart_identity_map") {
        ctx.register_parquet("map", url, ParquetReadOptions::default())
            .await?;
        for (source, id, slot) in [(&e.a.0, &e.a.1, 0), (&e.b.0, &e.b.1, 1)] {
            let sql = format!(
                "SELECT CAST(customer_key AS VARCHAR) FROM map WHERE source = {} AND source_record_id = {}",
                text(source),
                text(id)
            );
            for batch in ctx.sql(&sql).await?.collect().await? {
                let keys = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
                let keys = keys.as_string::<i32>();
                if batch.num_rows() > 0 && !keys.is_null(0) {
                    let key = Some(keys.value(0).to_string());
                    if slot == 0 {
                        figures.key_a = key;
                    } else {
                        figures.key_b = key;
                    }
                }
            }
        }
    }
    Ok(figures)
}

pub async fn run(args: ExplainArgs) -> Result<ExitCode> {
    let a = record(&args.a)?;
    let b = record(&args.b)?;
    let env = super::load_environment(&args.config, &[])?;
    let spec = env.stores.get(&args.store).ok_or_else(|| {
        super::UsageError(format!(
            "no store `{}` in {}",
            args.store,
            args.config.display()
        ))
    })?;
    let store = Store::open(spec)?;
    let manifest = crm_marts::report::manifest(&store, &args.run).await?;
    let pipeline_file = manifest["pipeline_file"]
        .as_str()
        .ok_or_else(|| anyhow!("run {}: the manifest names no pipeline file", args.run))?;
    let pipeline = Pipeline::load(Path::new(pipeline_file), Some(&env))?;
    let given: BTreeMap<String, String> = manifest["parameters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    let params = crm_marts::run::bind_params(&pipeline, &given)?;
    let identity_steps: Vec<_> = pipeline
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Builtin { step, .. } => step
                .identity_settings()
                .map(|settings| (s.name.clone(), settings)),
            StepKind::Sql(_) => None,
        })
        .filter(|(name, _)| args.step.as_ref().is_none_or(|wanted| wanted == name))
        .collect();
    let (step, settings) = match identity_steps.as_slice() {
        [one] => one.clone(),
        [] => bail!(
            "pipeline `{}` has no identity step{}",
            pipeline.name,
            args.step
                .as_ref()
                .map(|s| format!(" named `{s}`"))
                .unwrap_or_default()
        ),
        _ => {
            return Err(super::UsageError(format!(
                "pipeline `{}` has several identity steps: name one with --step",
                pipeline.name
            ))
            .into())
        }
    };
    let stores = Stores::open(&env.stores).context("opening stores")?;
    eprintln!("explain: computing the inputs of `{step}` as run {} would, from the exports as they are now", args.run);
    let computed =
        crm_marts::run::compute_inputs_of(&pipeline, &env.execution, &stores, params, &step)
            .await
            .map_err(|f| anyhow!("computing the inputs of `{step}`: {}", f.message))?;
    let (records, _) = crm_marts::identity::records::load(&computed.ctx, &settings).await?;
    let context = crm_marts::identity::Context {
        stop: crm_marts::memory::Stop::current(),
        ..Default::default()
    };
    let explained = tokio::task::spawn_blocking(move || {
        crm_marts::identity::explain::explain_pair(
            &settings,
            &records,
            &context,
            (&a.0, &a.1),
            (&b.0, &b.1),
        )
    })
    .await?
    .map_err(|e| anyhow!(e))?;
    let figures = run_figures(&manifest, &store, &explained).await?;
    print!("{}", waterfall(&explained, &figures, &args.run));
    if let Some(file) = &args.html {
        std::fs::write(file, html(&explained, &figures, &args.run)?)
            .with_context(|| format!("writing {}", file.display()))?;
        println!("wrote the chart to {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The waterfall's terms (the prior, then each comparison) and the running totals, from 0.
fn steps(e: &PairExplanation, lambda: &str) -> (Vec<(String, f64)>, Vec<f64>) {
    let mut steps: Vec<(String, f64)> =
        vec![(format!("prior ({lambda} {:.3e})", e.prior), e.prior_weight)];
    steps.extend(
        e.terms
            .iter()
            .map(|t| (format!("{}: {}", t.comparison, t.level), t.weight)),
    );
    let mut totals = vec![0.0f64];
    for (_, w) in &steps {
        totals.push(totals.last().copied().unwrap_or(0.0) + w);
    }
    (steps, totals)
}

/// The terminal waterfall: one line per term with its weight, the running total, and a bar
/// from the previous total to the new one on a common scale.
fn waterfall(e: &PairExplanation, run: &RunFigures, run_id: &str) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("{}:{}  and  {}:{}", e.a.0, e.a.1, e.b.0, e.b.1));
    let blocking: Vec<String> = e
        .blocking
        .iter()
        .map(|r| {
            let mark = match (r.agrees, r.oversized_block) {
                (true, Some(n)) => format!("agree, block of {n} skipped"),
                (true, None) => "agree".into(),
                (false, _) => "differ".into(),
            };
            format!("{} ({mark})", r.name)
        })
        .collect();
    line(format!("blocking rules: {}", blocking.join(", ")));
    if !e.deterministic.is_empty() {
        let det: Vec<String> = e
            .deterministic
            .iter()
            .map(|r| format!("{} ({})", r.name, if r.agrees { "agree" } else { "differ" }))
            .collect();
        line(format!("deterministic rules: {}", det.join(", ")));
    }
    line(match &e.found_by {
        Some(rule) => format!("candidate pair, found by blocking rule `{rule}`"),
        None => "not a candidate pair: the weights below are what the model would give it".into(),
    });
    line(String::new());
    let (steps, totals) = steps(e, "lambda");
    let lo = totals.iter().copied().fold(0.0f64, f64::min);
    let hi = totals.iter().copied().fold(0.0f64, f64::max);
    let width = 40.0;
    let scale = if hi > lo { width / (hi - lo) } else { 1.0 };
    let col = |v: f64| ((v - lo) * scale).round() as usize;
    let label_width = steps
        .iter()
        .map(|(l, _)| l.len())
        .max()
        .unwrap_or(10)
        .max(12);
    line(format!(
        "{:<label_width$}  {:>8}  {:>8}  {}",
        "", "weight", "total", "waterfall (0 at |)"
    ));
    for (i, (label, w)) in steps.iter().enumerate() {
        let (from, to) = (col(totals[i]), col(totals[i + 1]));
        let zero = col(0.0);
        let mut bar: Vec<char> = vec![' '; col(hi).max(zero) + 1];
        let (x0, x1) = (from.min(to), from.max(to));
        // A term that adds nothing (a null level) draws no bar.
        let end = if *w == 0.0 { x0 } else { x1.max(x0 + 1) };
        for c in bar.iter_mut().take(end).skip(x0) {
            *c = if *w >= 0.0 { '█' } else { '░' };
        }
        if bar[zero] == ' ' {
            bar[zero] = '|';
        }
        let bar: String = bar.into_iter().collect();
        line(format!(
            "{label:<label_width$}  {w:>+8.3}  {:>8.3}  {}",
            totals[i + 1],
            bar.trim_end()
        ));
    }
    line(format!(
        "{:<label_width$}  {:>+8.3}",
        "match weight", e.match_weight
    ));
    line(format!(
        "probability {:.6} against the threshold {}",
        e.probability, e.threshold
    ));
    line(format!("decision: {} ({})", e.decision, e.reason));
    line(format!(
        "one person in the end: {}",
        if e.same_person { "yes" } else { "no" }
    ));
    if let Some(w) = run.match_weight {
        let same = (w - e.match_weight).abs() < 1e-9;
        line(format!(
            "run {run_id} scored this pair {w:.3} ({}){}",
            run.decision.as_deref().unwrap_or("?"),
            if same {
                ""
            } else {
                ": the exports or the configuration changed since that run"
            }
        ));
    }
    if let (Some(ka), Some(kb)) = (&run.key_a, &run.key_b) {
        let same = ka == kb;
        line(format!(
            "run {run_id} gave them {}{}",
            if same {
                format!("one customer_key, {ka}")
            } else {
                format!("customer_keys {ka} and {kb}")
            },
            if same == e.same_person {
                ""
            } else {
                ": the exports or the configuration changed since that run"
            }
        ));
    }
    out
}

#[derive(Serialize)]
struct Bar {
    label: String,
    weight: String,
    x: f64,
    width: f64,
    y: f64,
    positive: bool,
    total: bool,
}

fn html(e: &PairExplanation, run: &RunFigures, run_id: &str) -> Result<String> {
    let (steps, totals) = steps(e, "λ");
    let lo = totals.iter().copied().fold(0.0f64, f64::min);
    let hi = totals.iter().copied().fold(0.0f64, f64::max);
    let (left, plot) = (220.0, 520.0);
    let scale = if hi > lo { plot / (hi - lo) } else { 1.0 };
    let x = |v: f64| left + (v - lo) * scale;
    let row = 24.0;
    let mut bars: Vec<Bar> = steps
        .iter()
        .enumerate()
        .map(|(i, (label, w))| {
            let (a, b) = (x(totals[i]), x(totals[i + 1]));
            Bar {
                label: label.clone(),
                weight: format!("{w:+.2}"),
                x: a.min(b),
                width: (a - b).abs().max(1.0),
                y: 10.0 + i as f64 * row,
                positive: *w >= 0.0,
                total: false,
            }
        })
        .collect();
    let (z, m) = (x(0.0), x(e.match_weight));
    bars.push(Bar {
        label: "match weight".into(),
        weight: format!("{:+.2}", e.match_weight),
        x: z.min(m),
        width: (z - m).abs().max(1.0),
        y: 10.0 + steps.len() as f64 * row,
        positive: e.match_weight >= 0.0,
        total: true,
    });
    let height = 20.0 + bars.len() as f64 * row;
    let mut env = minijinja::Environment::new();
    env.add_template("explain.html", include_str!("explain.html"))?;
    let terms: Vec<BTreeMap<&str, String>> = e
        .terms
        .iter()
        .map(|t| {
            BTreeMap::from([
                ("comparison", t.comparison.clone()),
                ("level", t.level.clone()),
                ("m", t.m.map(|m| format!("{m:.4}")).unwrap_or_default()),
                ("u", t.u.map(|u| format!("{u:.6}")).unwrap_or_default()),
                ("weight", format!("{:+.3}", t.weight)),
            ])
        })
        .collect();
    Ok(env
        .get_template("explain.html")?
        .render(minijinja::context! {
            e => e,
            terms => terms,
            match_weight => format!("{:.3}", e.match_weight),
            probability => format!("{:.6}", e.probability),
            run_weight => run.match_weight.map(|w| format!("{w:.3}")),
            run => run,
            run_id => run_id,
            bars => bars,
            zero => z,
            height => height,
            width => left + plot + 80.0,
        })?)
}
