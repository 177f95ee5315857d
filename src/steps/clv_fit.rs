//! `clv_fit`: fits the BG/NBD purchase model and the Gamma-Gamma spend model by maximum
//! likelihood on a per-customer summary table, and returns the fitted parameters as a
//! one-row table (`mart_clv_model`). Convergence diagnostics go into the run manifest;
//! a fit that does not converge is reported there and in the table, not hidden.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Deserialize;

use super::{with_block, BuiltinOutput, BuiltinStep};
use crate::config::params::Params;
use crate::value::{BgNbd, FitOptions, FitReport, GammaGamma, Summary};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClvFitConfig {
    /// Table with one row per customer and columns frequency, recency, t, monetary.
    summary: String,
    /// L2 penalty on the parameters (0 = plain maximum likelihood).
    #[serde(default)]
    penalizer: f64,
    /// Iteration cap of each optimiser run.
    #[serde(default = "default_max_iters")]
    max_iters: u64,
}

fn default_max_iters() -> u64 {
    5_000
}

#[derive(Debug)]
struct ClvFit {
    summary: String,
    options: FitOptions,
}

pub fn compile(with: &serde_yaml::Value) -> Result<Box<dyn BuiltinStep>, String> {
    let c: ClvFitConfig = with_block(with)?;
    if !(c.penalizer.is_finite() && c.penalizer >= 0.0) {
        return Err(format!(
            "penalizer must be a non-negative number, got {}",
            c.penalizer
        ));
    }
    Ok(Box::new(ClvFit {
        summary: c.summary.to_lowercase(),
        options: FitOptions {
            penalizer: c.penalizer,
            max_iters: c.max_iters,
        },
    }))
}

fn column(batch: &RecordBatch, name: &str) -> datafusion::error::Result<Float64Array> {
    let col = batch.column_by_name(name).ok_or_else(|| {
        DataFusionError::Plan(format!("clv_fit: the summary table has no column `{name}`"))
    })?;
    let f = cast(col, &DataType::Float64)?;
    Ok(f.as_any()
        .downcast_ref::<Float64Array>()
        .expect("cast to Float64")
        .clone())
}

/// The fitted models and what the optimiser said.
struct Fitted {
    customers: usize,
    repeat_buyers: usize,
    bgnbd: (BgNbd, FitReport),
    gamma_gamma: Option<(GammaGamma, FitReport)>,
    gamma_gamma_error: Option<String>,
}

fn fit(
    summaries: Vec<Summary>,
    spend: Vec<(f64, f64)>,
    options: &FitOptions,
) -> Result<Fitted, String> {
    let bgnbd = BgNbd::fit_with(&summaries, options).map_err(|e| format!("BG/NBD: {e}"))?;
    let (gamma_gamma, gamma_gamma_error) = match GammaGamma::fit_with(&spend, options) {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(format!("Gamma-Gamma: {e}"))),
    };
    Ok(Fitted {
        customers: summaries.len(),
        repeat_buyers: spend.len(),
        bgnbd,
        gamma_gamma,
        gamma_gamma_error,
    })
}

impl BuiltinStep for ClvFit {
    fn inputs(&self) -> Vec<String> {
        vec![self.summary.clone()]
    }

    fn run<'a>(
        &'a self,
        ctx: &'a SessionContext,
        _params: &'a Params,
        _env: &'a super::StepEnv<'a>,
    ) -> BoxFuture<'a, datafusion::error::Result<BuiltinOutput>> {
        async move {
            let df = ctx.table(self.summary.as_str()).await?.select_columns(&["frequency", "recency", "t", "monetary"])?;
            let mut summaries = Vec::new();
            let mut spend = Vec::new();
            for batch in df.collect().await? {
                let (x, tx, t, m) = (column(&batch, "frequency")?, column(&batch, "recency")?, column(&batch, "t")?, column(&batch, "monetary")?);
                for i in 0..batch.num_rows() {
                    if x.is_null(i) || tx.is_null(i) || t.is_null(i) {
                        continue;
                    }
                    summaries.push(Summary::new(x.value(i), tx.value(i), t.value(i)));
                    if x.value(i) > 0.0 && !m.is_null(i) && m.value(i) > 0.0 {
                        spend.push((x.value(i), m.value(i)));
                    }
                }
            }
            // The likelihood is a sum over customers, in floating point: summed in one
            // canonical order, the fit does not depend on the order partitions deliver
            // the summary in. Equal keys are equal values, so the sort needs no tie rule.
            summaries.sort_unstable_by(|a, b| {
                a.frequency.total_cmp(&b.frequency).then(a.recency.total_cmp(&b.recency)).then(a.t.total_cmp(&b.t))
            });
            spend.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let options = self.options.clone();
            let started = std::time::Instant::now();
            let fitted = tokio::task::spawn_blocking(move || fit(summaries, spend, &options))
                .await
                .map_err(|e| DataFusionError::Context("clv_fit".into(), Box::new(DataFusionError::ExecutionJoin(Box::new(e)))))?
                .map_err(|e| DataFusionError::Execution(format!("clv_fit: {e}")))?;
            let fit_ms = started.elapsed().as_millis() as u64;
            let batch = model_batch(&fitted)?;
            let details = details(&fitted, fit_ms);
            if !fitted.bgnbd.1.converged {
                tracing::warn!(termination = %fitted.bgnbd.1.termination, "BG/NBD fit did not converge");
            }
            Ok(BuiltinOutput { frame: ctx.read_batch(batch)?, details: Some(details), tables: Vec::new(), engine_tables: Vec::new() })
        }
        .boxed()
    }
}

fn details(f: &Fitted, fit_ms: u64) -> serde_json::Value {
    let (m, r) = &f.bgnbd;
    let gg = f.gamma_gamma.as_ref().map(|(g, r)| {
        serde_json::json!({
            "p": g.p, "q": g.q, "gamma": g.gamma,
            "log_likelihood": r.log_likelihood, "iterations": r.iterations,
            "converged": r.converged, "termination": r.termination,
        })
    });
    serde_json::json!({
        "customers": f.customers,
        "repeat_buyers": f.repeat_buyers,
        "fit_ms": fit_ms,
        "bgnbd": {
            "r": m.r, "alpha": m.alpha, "a": m.a, "b": m.b,
            "log_likelihood": r.log_likelihood, "iterations": r.iterations,
            "converged": r.converged, "termination": r.termination,
        },
        "gamma_gamma": gg,
        "gamma_gamma_error": f.gamma_gamma_error,
    })
}

fn model_batch(f: &Fitted) -> datafusion::error::Result<RecordBatch> {
    let (m, r) = &f.bgnbd;
    let gg = f.gamma_gamma.as_ref();
    let float = |name: &str, v: Option<f64>| {
        (
            Field::new(name, DataType::Float64, true),
            Arc::new(Float64Array::from(vec![v])) as ArrayRef,
        )
    };
    let columns: Vec<(Field, ArrayRef)> = vec![
        (
            Field::new("customers", DataType::UInt64, false),
            Arc::new(UInt64Array::from(vec![f.customers as u64])),
        ),
        (
            Field::new("repeat_buyers", DataType::UInt64, false),
            Arc::new(UInt64Array::from(vec![f.repeat_buyers as u64])),
        ),
        float("r", Some(m.r)),
        float("alpha", Some(m.alpha)),
        float("a", Some(m.a)),
        float("b", Some(m.b)),
        float("bgnbd_log_likelihood", Some(r.log_likelihood)),
        (
            Field::new("bgnbd_converged", DataType::Boolean, false),
            Arc::new(BooleanArray::from(vec![r.converged])),
        ),
        (
            Field::new("bgnbd_iterations", DataType::UInt64, false),
            Arc::new(UInt64Array::from(vec![r.iterations])),
        ),
        float("p", gg.map(|(g, _)| g.p)),
        float("q", gg.map(|(g, _)| g.q)),
        float("gamma", gg.map(|(g, _)| g.gamma)),
        float(
            "gamma_gamma_log_likelihood",
            gg.map(|(_, r)| r.log_likelihood),
        ),
        (
            Field::new("gamma_gamma_converged", DataType::Boolean, false),
            Arc::new(BooleanArray::from(vec![
                gg.is_some_and(|(_, r)| r.converged)
            ])),
        ),
        (
            Field::new("termination", DataType::Utf8, false),
            Arc::new(StringArray::from(vec![format!(
                "BG/NBD: {}; Gamma-Gamma: {}",
                r.termination,
                gg.map(|(_, r)| r.termination.clone())
                    .or_else(|| f.gamma_gamma_error.clone())
                    .unwrap_or_default()
            )])),
        ),
    ];
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}
