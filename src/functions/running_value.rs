//! `first_value` and `last_value` with `IGNORE NULLS` over a running frame, in constant
//! time per row.
//!
//! DataFusion 55 evaluates `last_value(x) IGNORE NULLS OVER (... ROWS BETWEEN UNBOUNDED
//! PRECEDING AND CURRENT ROW)` by looking through the whole frame again at every row (and
//! `first_value` does the same until it meets a value), and it never lets the window drop
//! the rows it has passed: the work grows with the square of a partition's length and the
//! partition stays in memory. Carrying a value forward is what sessionising a clickstream
//! does on every event, so an analyzer rule rewrites these calls, when the frame is `ROWS
//! BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW` or `... AND n PRECEDING` (with no FILTER
//! and no DISTINCT), to `running_first_value(x, n)` and `running_last_value(x, n)`. They
//! walk the partition once, in its order, keeping the value to carry; the results are the
//! same, and the column keeps its name. Other frames keep DataFusion's functions.
//!
//! They ignore nulls whatever the plan says, so they also travel to a Ballista cluster as
//! they are (see `ignore_nulls`).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::expr::{NullTreatment, WindowFunction};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    lit, Expr, LimitEffect, LogicalPlan, PartitionEvaluator, Signature, Volatility,
    WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition, WindowUDF, WindowUDFImpl,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::PhysicalExpr;

/// Which value a [`RunningValue`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    First,
    Last,
}

/// `running_first_value(x, n)` / `running_last_value(x, n)`: the first or last non-null
/// `x` of the partition's rows up to `n` rows before the current one.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RunningValue {
    kind: Kind,
    name: &'static str,
    signature: Signature,
}

impl RunningValue {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            name: match kind {
                Kind::First => "running_first_value",
                Kind::Last => "running_last_value",
            },
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for RunningValue {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let offset = args
            .input_exprs()
            .get(1)
            .and_then(|e| e.downcast_ref::<Literal>())
            .and_then(|l| match *l.value() {
                ScalarValue::UInt64(Some(n)) => Some(n as usize),
                ScalarValue::Int64(Some(n)) if n >= 0 => Some(n as usize),
                _ => None,
            });
        let Some(offset) = offset else {
            return exec_err!(
                "{}: the second argument must be a non-negative integer literal",
                self.name
            );
        };
        Ok(Box::new(Carry {
            kind: self.kind,
            offset,
            seen: 0,
            pending: VecDeque::new(),
            taken: false,
            current: None,
        }))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let data_type = field_args
            .input_fields()
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Null);
        Ok(Arc::new(Field::new(field_args.name(), data_type, true)))
    }

    fn limit_effect(&self, _args: &[Arc<dyn PhysicalExpr>]) -> LimitEffect {
        LimitEffect::None
    }
}

/// One partition's walk: rows come one at a time, in order.
#[derive(Debug)]
struct Carry {
    kind: Kind,
    /// The frame ends this many rows before the current one.
    offset: usize,
    /// Rows of the partition seen so far.
    seen: usize,
    /// Non-null values of the last `offset` rows, not yet in the frame, with their row.
    pending: VecDeque<(usize, ScalarValue)>,
    /// A `first` value was found (later ones are not kept).
    taken: bool,
    /// The value of the frame so far.
    current: Option<ScalarValue>,
}

impl PartitionEvaluator for Carry {
    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        // Without a window frame, the range is the current row.
        let (array, row) = (&values[0], range.start);
        let position = self.seen;
        self.seen += 1;
        if array.is_valid(row) && !(self.kind == Kind::First && self.taken) {
            self.taken = true;
            self.pending
                .push_back((position, ScalarValue::try_from_array(array, row)?));
        }
        while self
            .pending
            .front()
            .is_some_and(|(p, _)| p + self.offset <= position)
        {
            let (_, value) = self.pending.pop_front().expect("front exists");
            if self.kind == Kind::Last || self.current.is_none() {
                self.current = Some(value);
            }
        }
        match &self.current {
            Some(value) => Ok(value.clone()),
            None => ScalarValue::try_from(array.data_type()),
        }
    }

    fn supports_bounded_execution(&self) -> bool {
        true
    }

    fn uses_window_frame(&self) -> bool {
        false
    }

    fn is_causal(&self) -> bool {
        true
    }
}

/// The two functions, for the registries of the client, scheduler and executors.
pub fn functions() -> Vec<Arc<WindowUDF>> {
    [Kind::First, Kind::Last]
        .into_iter()
        .map(|k| Arc::new(WindowUDF::new_from_impl(RunningValue::new(k))))
        .collect()
}

/// Rewrites running `first_value`/`last_value(...) IGNORE NULLS` windows to the functions
/// above (see the module's documentation).
#[derive(Debug, Default)]
pub struct RunningValues;

impl AnalyzerRule for RunningValues {
    fn name(&self) -> &str {
        "crm_marts_running_values"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        super::rewrite_window_calls(plan, rewrite)
    }
}

/// The running function that computes `expr`, when it is one of the calls rewritten.
fn rewrite(expr: &Expr) -> Result<Option<Expr>> {
    let Expr::WindowFunction(call) = expr else {
        return Ok(None);
    };
    let WindowFunction { fun, params } = call.as_ref();
    let WindowFunctionDefinition::WindowUDF(udf) = fun else {
        return Ok(None);
    };
    let kind = match udf.name() {
        "first_value" => Kind::First,
        "last_value" => Kind::Last,
        _ => return Ok(None),
    };
    let frame = &params.window_frame;
    let offset = match &frame.end_bound {
        WindowFrameBound::CurrentRow => 0,
        WindowFrameBound::Preceding(ScalarValue::UInt64(Some(n))) => *n,
        _ => return Ok(None),
    };
    if params.null_treatment != Some(NullTreatment::IgnoreNulls)
        || frame.units != WindowFrameUnits::Rows
        || !matches!(
            frame.start_bound,
            WindowFrameBound::Preceding(ScalarValue::UInt64(None))
        )
        || params.filter.is_some()
        || params.distinct
        || params.args.len() != 1
        || params.order_by.is_empty()
    {
        return Ok(None);
    }
    let mut params = params.clone();
    params.args.push(lit(ScalarValue::UInt64(Some(offset))));
    params.null_treatment = None;
    let running = Arc::new(WindowUDF::new_from_impl(RunningValue::new(kind)));
    Ok(Some(Expr::WindowFunction(Box::new(WindowFunction {
        fun: WindowFunctionDefinition::WindowUDF(running),
        params,
    }))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn pretty(batches: &[datafusion::arrow::array::RecordBatch]) -> String {
        datafusion::arrow::util::pretty::pretty_format_batches(batches)
            .unwrap()
            .to_string()
    }

    /// The rewritten windows give DataFusion's own results, keep their names, and leave
    /// other frames alone; partitions that span many batches are carried across them.
    #[tokio::test]
    async fn running_values_equal_the_built_in_windows() {
        let rows: Vec<String> = (0..5000)
            .map(|i| {
                let v = if i % 7 == 0 || i % 11 == 3 {
                    format!("'v{i}'")
                } else {
                    "NULL".to_string()
                };
                format!("({}, {i}, {v})", i % 3)
            })
            .collect();
        let sql = format!(
            "SELECT k, t, \
             last_value(v) IGNORE NULLS OVER (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING) AS carried, \
             first_value(v) IGNORE NULLS OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS first_seen, \
             last_value(v) IGNORE NULLS OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before, \
             first_value(v) IGNORE NULLS OVER (PARTITION BY k ORDER BY t DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 3 PRECEDING) AS later, \
             last_value(v) OVER (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING) AS plain, \
             last_value(v) IGNORE NULLS OVER (PARTITION BY k ORDER BY t ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS sliding \
             FROM (VALUES {}) AS x(k, t, v) ORDER BY k, t",
            rows.join(", ")
        );
        let plain = SessionContext::new();
        let expected = pretty(&plain.sql(&sql).await.unwrap().collect().await.unwrap());
        let config = datafusion::prelude::SessionConfig::new().with_batch_size(64);
        let ctx = SessionContext::new_with_config(config);
        for f in functions() {
            ctx.register_udwf(f.as_ref().clone());
        }
        ctx.add_analyzer_rule(Arc::new(RunningValues));
        let df = ctx.sql(&sql).await.unwrap();
        let plan = format!(
            "{}",
            df.clone().into_optimized_plan().unwrap().display_indent()
        );
        assert_eq!(plan.matches("running_last_value").count(), 2, "{plan}");
        assert_eq!(plan.matches("running_first_value").count(), 2, "{plan}");
        let got = pretty(&df.collect().await.unwrap());
        assert_eq!(got, expected);
        // Partition 0 at t = 6: v3 carried (t = 6 itself is null), v0 first, v3 before it.
        let line = expected
            .lines()
            .find(|l| l.starts_with("| 0 | 6 "))
            .unwrap();
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(&cells[3..6], ["v3", "v0", "v3"], "{line}");
    }
}
