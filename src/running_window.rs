//! Running windows evaluated a batch at a time.
//!
//! DataFusion 55's `BoundedWindowAggExec` evaluates window functions partition by partition
//! and row by row: for every `PARTITION BY` value in a batch it slices the batch, evaluates
//! the arguments on the slice, hashes the key into its state map, and builds each row's
//! result as a `ScalarValue`. Over a clickstream partitioned by cookie (ten events a
//! partition) or a staging model numbering copies of an id (one row a partition) that
//! overhead is most of a query's time.
//!
//! The pipeline's windows are causal and simple: `row_number()`, `lag(x)`, the running
//! `first_value`/`last_value ... IGNORE NULLS` (see `functions::running_value`), and `sum`,
//! `count`, `max`, `min` over `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`. Their
//! input arrives sorted by the partition keys, so a partition is a run of rows. A physical
//! optimizer rule replaces a `BoundedWindowAggExec` whose every function is one of these
//! with [`RunningWindowExec`], which evaluates the arguments once per batch, finds the
//! partition boundaries with one vectorised comparison, and computes every result column
//! in a single pass over the batch, carrying each function's state (the last key, count,
//! running value or carried row) to the next batch. It keeps the window's schema, output
//! partitioning and ordering, and gives the same values: the rows come in the same order,
//! and each function follows the definition `BoundedWindowAggExec` evaluates.
//!
//! Anything else (other functions, frames, `FILTER`, `DISTINCT`, `lag` with an offset
//! other than one or a default, input that is not sorted by the partition keys) keeps
//! DataFusion's operator. The rule is the local engine's: a Ballista cluster plans and
//! runs DataFusion's own operator.

use std::fmt;
use std::sync::Arc;
use std::task::Poll;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanBufferBuilder, Float64Array, Int64Array,
    PrimitiveArray, RecordBatch, UInt64Array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::kernels::cmp::not_distinct;
use datafusion::arrow::compute::{interleave, partition};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, FieldRef, Int16Type, Int32Type,
    Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::window::{PlainAggregateWindowExpr, StandardWindowExpr, WindowExpr};
use datafusion::physical_expr::OrderingRequirements;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::ReplaceChildrenOptions;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::functions::exact_sum::ExactF64;

/// Replaces `BoundedWindowAggExec`s that [`RunningWindowExec`] can run.
#[derive(Debug, Default)]
pub struct RunningWindows;

impl PhysicalOptimizerRule for RunningWindows {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(window) = node.downcast_ref::<BoundedWindowAggExec>() else {
                return Ok(Transformed::no(node));
            };
            Ok(match RunningWindowExec::try_new(window)? {
                Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "crm_marts_running_windows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What a running window function computes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    /// `row_number()`.
    RowNumber,
    /// `lag(x)`: the previous row's value.
    Lag,
    /// `running_first_value(x, offset)` / `running_last_value(x, offset)`.
    Carry {
        first: bool,
        offset: usize,
    },
    /// `sum(x)` of integers (wrapping, as DataFusion's) or of doubles (exact, as
    /// `functions::exact_sum`).
    Sum,
    Count,
    Max,
    Min,
}

#[derive(Debug, Clone)]
struct RunningExpr {
    func: Func,
    arg: Option<Arc<dyn PhysicalExpr>>,
    field: FieldRef,
}

/// True for `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`.
fn running_rows_frame(expr: &Arc<dyn WindowExpr>) -> bool {
    let frame = expr.get_window_frame();
    frame.units == WindowFrameUnits::Rows
        && frame.start_bound.is_unbounded()
        && matches!(frame.start_bound, WindowFrameBound::Preceding(_))
        && frame.end_bound == WindowFrameBound::CurrentRow
}

fn literal(expr: &Arc<dyn PhysicalExpr>) -> Option<&ScalarValue> {
    expr.downcast_ref::<Literal>().map(|l| l.value())
}

/// A primitive type whose values [`running_extreme`] compares as DataFusion's `max`/`min`.
fn ordered_primitive(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
    )
}

/// A partition key type the vectorised comparison handles.
fn comparable_key(t: &DataType) -> bool {
    t.is_primitive()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::Boolean
        )
}

/// The running form of `expr`, when it has one.
fn classify(expr: &Arc<dyn WindowExpr>) -> Result<Option<RunningExpr>> {
    let field = expr.field()?;
    let any = expr.as_any();
    if let Some(standard) = any.downcast_ref::<StandardWindowExpr>() {
        let Some(udf) = standard
            .get_standard_func_expr()
            .as_any()
            .downcast_ref::<WindowUDFExpr>()
        else {
            return Ok(None);
        };
        let args = udf.args();
        // DataFusion 55 keeps these flags private; the derived debug form prints them. A
        // reversed `lag` reads the next row, and IGNORE NULLS skips rows: neither is here.
        let debug = format!("{udf:?}");
        if debug.contains("is_reversed: true") || debug.contains("ignore_nulls: true") {
            return Ok(None);
        }
        let func = match udf.fun().name() {
            "row_number" if args.is_empty() => Func::RowNumber,
            "lag" => {
                let offset_one = args.get(1).is_none_or(|a| {
                    literal(a).is_some_and(|v| {
                        v.cast_to(&DataType::Int64).ok() == Some(ScalarValue::Int64(Some(1)))
                    })
                });
                let no_default = args
                    .get(2)
                    .is_none_or(|a| literal(a).is_some_and(|v| v.is_null()));
                if args.is_empty()
                    || args.len() > 3
                    || !offset_one
                    || !no_default
                    || expr.name().contains("IGNORE NULLS")
                {
                    return Ok(None);
                }
                Func::Lag
            }
            name @ ("running_first_value" | "running_last_value") => {
                let offset = args.get(1).and_then(literal).and_then(|v| match *v {
                    ScalarValue::UInt64(Some(n)) => Some(n),
                    ScalarValue::Int64(Some(n)) if n >= 0 => Some(n as u64),
                    _ => None,
                });
                match offset {
                    Some(n @ (0 | 1)) => Func::Carry {
                        first: name == "running_first_value",
                        offset: n as usize,
                    },
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        let arg = match func {
            Func::RowNumber => None,
            _ => Some(Arc::clone(&args[0])),
        };
        return Ok(Some(RunningExpr { func, arg, field }));
    }
    if let Some(window) = any.downcast_ref::<PlainAggregateWindowExpr>() {
        let aggregate = window.get_aggregate_expr();
        let args = aggregate.expressions();
        // DataFusion 55 does not export the trait that reads an aggregate window's FILTER:
        // its debug form (the field comes last) and its name tell.
        let filtered = !format!("{window:?}").ends_with("filter: None }")
            || expr.name().contains("FILTER (WHERE");
        if !running_rows_frame(expr)
            || filtered
            || aggregate.is_distinct()
            || aggregate.is_reversed()
            || !aggregate.order_bys().is_empty()
            || args.len() != 1
        {
            return Ok(None);
        }
        let out = field.data_type();
        let func = match aggregate.fun().name() {
            "sum" if matches!(out, DataType::Int64 | DataType::UInt64) => Func::Sum,
            // A sum of doubles is exact only with crm-marts' `sum` (`functions::exact_sum`).
            "sum"
                if out == &DataType::Float64
                    && crate::functions::exact_sum::is_exact(aggregate.fun()) =>
            {
                Func::Sum
            }
            "count" if out == &DataType::Int64 => Func::Count,
            "max" if ordered_primitive(out) => Func::Max,
            "min" if ordered_primitive(out) => Func::Min,
            _ => return Ok(None),
        };
        return Ok(Some(RunningExpr {
            func,
            arg: Some(Arc::clone(&args[0])),
            field,
        }));
    }
    Ok(None)
}

/// `BoundedWindowAggExec` over input sorted by its partition keys, with every function in
/// its running form (see the module's documentation).
#[derive(Debug)]
pub struct RunningWindowExec {
    /// The operator this one stands for: its expressions, schema and requirements.
    window: Arc<BoundedWindowAggExec>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    exprs: Vec<RunningExpr>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunningWindowExec {
    /// The running form of `window`, or `None` when one of its functions or its input
    /// order has none.
    pub fn try_new(window: &BoundedWindowAggExec) -> Result<Option<Self>> {
        if window.input_order_mode != InputOrderMode::Sorted
            || window.window_expr().is_empty()
            || window.state_observer().is_some()
            || window.partition_by_sort_keys().is_err()
        {
            return Ok(None);
        }
        let input_schema = window.input().schema();
        let partition_by = window.window_expr()[0].partition_by().to_vec();
        for key in &partition_by {
            if !comparable_key(&key.data_type(&input_schema)?) {
                return Ok(None);
            }
        }
        let mut exprs = Vec::with_capacity(window.window_expr().len());
        for expr in window.window_expr() {
            if expr.partition_by() != partition_by.as_slice() {
                return Ok(None);
            }
            match classify(expr)? {
                Some(running) => exprs.push(running),
                None => return Ok(None),
            }
        }
        // Functions that return their argument's values (or sums of them) need the
        // argument to have the result's type.
        for e in &exprs {
            if let (Func::Lag | Func::Carry { .. } | Func::Max | Func::Min | Func::Sum, Some(arg)) =
                (e.func, &e.arg)
            {
                if &arg.data_type(&input_schema)? != e.field.data_type() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(Self {
            window: Arc::new(window.clone()),
            partition_by,
            exprs,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

impl DisplayAs for RunningWindowExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.window.window_expr().iter().map(|e| e.name()).collect();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "RunningWindowExec: wdw=[{}]", names.join(", "))
            }
            DisplayFormatType::TreeRender => writeln!(f, "select_list={}", names.join(", ")),
        }
    }
}

impl ExecutionPlan for RunningWindowExec {
    fn name(&self) -> &str {
        "RunningWindowExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.window.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.window.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let mut recursion = TreeNodeRecursion::Continue;
        for expr in self
            .partition_by
            .iter()
            .chain(self.exprs.iter().filter_map(|e| e.arg.as_ref()))
        {
            recursion = f(expr)?;
            if recursion == TreeNodeRecursion::Stop {
                break;
            }
        }
        Ok(recursion)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.window.input_distribution_requirements()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        self.window.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let window = Arc::clone(&self.window).replace_children(children, options)?;
        let bounded = window
            .downcast_ref::<BoundedWindowAggExec>()
            .expect("a BoundedWindowAggExec with new children is one");
        Ok(match RunningWindowExec::try_new(bounded)? {
            Some(exec) => Arc::new(exec),
            None => window,
        })
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.window.input().execute(partition, context)?;
        let schema = self.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let mut state = RunState {
            schema: Arc::clone(&schema),
            partition_by: self.partition_by.clone(),
            exprs: self
                .exprs
                .iter()
                .map(|e| (e.clone(), FuncState::default()))
                .collect(),
            last_key: None,
        };
        let stream = input.map(move |batch| {
            let batch = batch?;
            let timer = baseline.elapsed_compute().timer();
            let out = state.process(&batch);
            timer.done();
            match baseline.record_poll(Poll::Ready(Some(out))) {
                Poll::Ready(Some(out)) => out,
                _ => unreachable!("a ready batch stays one"),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// What a function carries from one batch to the next, within the current partition.
#[derive(Debug, Default)]
struct FuncState {
    /// Rows of the partition so far (`row_number`, `count`).
    rows: i64,
    /// The running value of `sum`, `max`, `min` (null before the first value).
    scalar: Option<ScalarValue>,
    /// The running exact sum of doubles (none before the first value).
    exact: Option<ExactF64>,
    /// The value carried (the previous row for `lag`), a one-row array.
    carried: Option<ArrayRef>,
    /// For a frame that ends a row back: the last row's value, not yet in the frame.
    pending: Option<ArrayRef>,
}

struct RunState {
    schema: datafusion::arrow::datatypes::SchemaRef,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    exprs: Vec<(RunningExpr, FuncState)>,
    /// The partition key of the last row seen, as one-row arrays.
    last_key: Option<Vec<ArrayRef>>,
}

impl RunState {
    fn process(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut columns = batch.columns().to_vec();
        if n == 0 {
            for (e, _) in &self.exprs {
                columns.push(datafusion::arrow::array::new_empty_array(
                    e.field.data_type(),
                ));
            }
            return Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
        }
        let keys = self
            .partition_by
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(n))
            .collect::<Result<Vec<_>>>()?;
        let mut starts = vec![false; n];
        if keys.is_empty() {
            starts[0] = self.last_key.is_none();
        } else {
            for range in partition(&keys)?.ranges() {
                starts[range.start] = true;
            }
            if let Some(last) = &self.last_key {
                let mut same = true;
                for (prev, key) in last.iter().zip(&keys) {
                    if !not_distinct(prev, &key.slice(0, 1))?.value(0) {
                        same = false;
                        break;
                    }
                }
                starts[0] = !same;
            }
        }
        self.last_key = Some(keys.iter().map(|k| k.slice(n - 1, 1)).collect());
        for (e, state) in &mut self.exprs {
            let values = match &e.arg {
                Some(arg) => Some(arg.evaluate(batch)?.into_array(n)?),
                None => None,
            };
            columns.push(evaluate(e, state, values.as_ref(), &starts)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// One function's results over a batch whose partitions start where `starts` is true.
fn evaluate(
    e: &RunningExpr,
    state: &mut FuncState,
    values: Option<&ArrayRef>,
    starts: &[bool],
) -> Result<ArrayRef> {
    let n = starts.len();
    match e.func {
        Func::RowNumber => {
            let mut out = Vec::with_capacity(n);
            for &start in starts {
                if start {
                    state.rows = 0;
                }
                state.rows += 1;
                out.push(state.rows as u64);
            }
            Ok(Arc::new(UInt64Array::from(out)))
        }
        Func::Count => {
            let values = values.expect("count has an argument");
            // Logical nulls, as DataFusion's count: a NULL-typed or dictionary argument
            // has nulls its validity buffer does not show.
            let nulls = values.logical_nulls();
            let mut out = Vec::with_capacity(n);
            for (i, &start) in starts.iter().enumerate() {
                if start {
                    state.rows = 0;
                }
                if nulls.as_ref().is_none_or(|b| b.is_valid(i)) {
                    state.rows += 1;
                }
                out.push(state.rows);
            }
            Ok(Arc::new(Int64Array::from(out)))
        }
        Func::Lag => {
            let values = values.expect("lag has an argument");
            // Sources: 0 the batch, 1 the previous batch's last row, 2 a null.
            let null = new_null_array(values.data_type(), 1);
            let previous = state.carried.take().unwrap_or_else(|| Arc::clone(&null));
            let indices: Vec<(usize, usize)> = starts
                .iter()
                .enumerate()
                .map(|(i, &start)| match (start, i) {
                    (true, _) => (2, 0),
                    (false, 0) => (1, 0),
                    (false, i) => (0, i - 1),
                })
                .collect();
            state.carried = Some(values.slice(n - 1, 1));
            Ok(interleave(
                &[values.as_ref(), previous.as_ref(), null.as_ref()],
                &indices,
            )?)
        }
        Func::Carry { first, offset } => {
            let values = values.expect("a carried value has an argument");
            // Sources: 0 the batch, 1 the value carried in, 2 the pending one, 3 a null.
            let null = new_null_array(values.data_type(), 1);
            let carried_in = state.carried.take();
            let pending_in = state.pending.take();
            let carried_src = carried_in.clone().unwrap_or_else(|| Arc::clone(&null));
            let pending_src = pending_in.clone().unwrap_or_else(|| Arc::clone(&null));
            let mut current: Option<(usize, usize)> = carried_in.as_ref().map(|_| (1, 0));
            let mut pending: Option<(usize, usize)> = pending_in.as_ref().map(|_| (2, 0));
            let mut indices = Vec::with_capacity(n);
            for (i, &start) in starts.iter().enumerate() {
                if start {
                    current = None;
                    pending = None;
                }
                let here = values.is_valid(i).then_some((0, i));
                if offset == 0 {
                    if here.is_some() && (!first || current.is_none()) {
                        current = here;
                    }
                } else {
                    if let Some(p) = pending.take() {
                        if !first || current.is_none() {
                            current = Some(p);
                        }
                    }
                    pending = here;
                }
                indices.push(current.unwrap_or((3, 0)));
            }
            let sources = [
                values.as_ref(),
                carried_src.as_ref(),
                pending_src.as_ref(),
                null.as_ref(),
            ];
            let pick = |src: Option<(usize, usize)>| -> Option<ArrayRef> {
                src.map(|(a, r)| match a {
                    0 => values.slice(r, 1),
                    1 => Arc::clone(&carried_src),
                    _ => Arc::clone(&pending_src),
                })
            };
            state.carried = pick(current);
            state.pending = pick(pending);
            Ok(interleave(&sources, &indices)?)
        }
        Func::Sum if e.field.data_type() == &DataType::Float64 => {
            let values = values
                .expect("sum has an argument")
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            let mut out = Vec::with_capacity(n);
            let mut sum = state.exact.take();
            for (i, &start) in starts.iter().enumerate() {
                if start {
                    sum = None;
                }
                if values.is_valid(i) {
                    sum.get_or_insert_with(ExactF64::default)
                        .add(values.value(i));
                }
                out.push(sum.as_ref().map(ExactF64::value));
            }
            state.exact = sum;
            Ok(Arc::new(Float64Array::from(out)))
        }
        Func::Sum => {
            let values = values.expect("sum has an argument");
            match values.data_type() {
                DataType::Int64 => {
                    running::<Int64Type>(values, starts, state, &e.field, i64::wrapping_add)
                }
                DataType::UInt64 => {
                    running::<UInt64Type>(values, starts, state, &e.field, u64::wrapping_add)
                }
                t => datafusion::common::internal_err!("running sum of {t}"),
            }
        }
        Func::Max | Func::Min => {
            let values = values.expect("max and min have an argument");
            let max = e.func == Func::Max;
            macro_rules! extreme {
                ($t:ty) => {
                    running::<$t>(values, starts, state, &e.field, |a, b| {
                        if (max && b > a) || (!max && b < a) {
                            b
                        } else {
                            a
                        }
                    })
                };
            }
            match values.data_type() {
                DataType::Int8 => extreme!(Int8Type),
                DataType::Int16 => extreme!(Int16Type),
                DataType::Int32 => extreme!(Int32Type),
                DataType::Int64 => extreme!(Int64Type),
                DataType::UInt8 => extreme!(UInt8Type),
                DataType::UInt16 => extreme!(UInt16Type),
                DataType::UInt32 => extreme!(UInt32Type),
                DataType::UInt64 => extreme!(UInt64Type),
                DataType::Date32 => extreme!(Date32Type),
                DataType::Date64 => extreme!(Date64Type),
                DataType::Timestamp(TimeUnit::Second, _) => extreme!(TimestampSecondType),
                DataType::Timestamp(TimeUnit::Millisecond, _) => extreme!(TimestampMillisecondType),
                DataType::Timestamp(TimeUnit::Microsecond, _) => extreme!(TimestampMicrosecondType),
                DataType::Timestamp(TimeUnit::Nanosecond, _) => extreme!(TimestampNanosecondType),
                t => datafusion::common::internal_err!("running max or min of {t}"),
            }
        }
    }
}

/// A running fold of a primitive column, restarted at each partition and null until the
/// partition's first value.
fn running<T: ArrowPrimitiveType>(
    values: &ArrayRef,
    starts: &[bool],
    state: &mut FuncState,
    field: &FieldRef,
    fold: impl Fn(T::Native, T::Native) -> T::Native,
) -> Result<ArrayRef> {
    let values = values.as_primitive::<T>();
    let n = starts.len();
    let mut current: Option<T::Native> = match state.scalar.take() {
        Some(s) if !s.is_null() => Some(s.to_array()?.as_primitive::<T>().value(0)),
        _ => None,
    };
    let mut out = Vec::with_capacity(n);
    let mut valid = BooleanBufferBuilder::new(n);
    for (i, &start) in starts.iter().enumerate() {
        if start {
            current = None;
        }
        if values.is_valid(i) {
            let v = values.value(i);
            current = Some(match current {
                Some(c) => fold(c, v),
                None => v,
            });
        }
        out.push(current.unwrap_or_default());
        valid.append(current.is_some());
    }
    let array = PrimitiveArray::<T>::new(out.into(), Some(NullBuffer::new(valid.finish())))
        .with_data_type(field.data_type().clone());
    state.scalar = Some(ScalarValue::try_from_array(&array, n - 1)?);
    Ok(Arc::new(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Rows in partitions of 1 to 40 rows, with null keys and values, cut in batches of 50.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("g", DataType::Utf8, true),
            Field::new("h", DataType::Int64, false),
            Field::new("t", DataType::Int64, false),
            Field::new("x", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("s", DataType::Utf8, true),
        ]));
        let (mut id, mut g, mut h, mut t, mut x, mut f, mut ts, mut s) = (
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
        );
        let mut i: i64 = 0;
        for p in 0..400_i64 {
            let len = 1 + (p * 7919 % 40);
            for r in 0..len {
                i += 1;
                id.push(i);
                g.push((p % 13 != 5).then(|| format!("k{}", p / 3)));
                h.push(p % 3);
                // Times repeat across partitions and run backwards in some.
                t.push(if p % 2 == 0 { r } else { len - r } * 10 + i % 3);
                x.push((i % 4 != 1).then_some((i * 37 % 101) - 50));
                f.push((i % 5 != 2).then_some(((i * 53 % 997) as f64) / 10.0 + 1e-3));
                ts.push((i % 6 != 0).then_some(1_700_000_000_000_000 + (i * 7_777 % 100_000)));
                s.push((i % 3 == 0).then(|| format!("v{i}")));
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(id)),
            Arc::new(StringArray::from(g)),
            Arc::new(Int64Array::from(h)),
            Arc::new(Int64Array::from(t)),
            Arc::new(Int64Array::from(x)),
            Arc::new(Float64Array::from(f)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(StringArray::from(s)),
        ];
        let all = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
        let batches: Vec<RecordBatch> = (0..all.num_rows())
            .step_by(50)
            .map(|o| all.slice(o, 50.min(all.num_rows() - o)))
            .collect();
        let half = batches.len() / 2;
        MemTable::try_new(
            schema,
            vec![batches[..half].to_vec(), batches[half..].to_vec()],
        )
        .unwrap()
    }

    fn context(running: bool) -> SessionContext {
        let config = SessionConfig::new()
            .with_batch_size(37)
            .with_target_partitions(3);
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if running {
            builder = builder.with_physical_optimizer_rule(Arc::new(RunningWindows));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        for f in crate::functions::exact_sum::functions() {
            ctx.register_udaf(f);
        }
        for f in crate::functions::running_value::functions() {
            ctx.register_udwf(f.as_ref().clone());
        }
        ctx.add_analyzer_rule(Arc::new(crate::functions::running_value::RunningValues));
        ctx.register_table("e", Arc::new(table())).unwrap();
        ctx
    }

    /// The query's results with and without the rule, and the rule's plan.
    async fn both(sql: &str) -> (String, String, String) {
        let mut out = vec![];
        for running in [false, true] {
            let df = context(running).sql(sql).await.unwrap();
            let plan = df.clone().create_physical_plan().await.unwrap();
            let plan = datafusion::physical_plan::displayable(plan.as_ref())
                .indent(false)
                .to_string();
            let batches = df.collect().await.unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            out.push((text, plan));
        }
        let (running, plain) = (out.pop().unwrap(), out.pop().unwrap());
        (plain.0, running.0, running.1)
    }

    /// Every running function gives DataFusion's own results on partitions that span many
    /// batches, with null partition keys, null values and repeated order keys.
    #[tokio::test]
    async fn running_windows_equal_datafusion_s() {
        let w = "PARTITION BY g, h ORDER BY t, id";
        let r = format!("{w} ROWS UNBOUNDED PRECEDING");
        let sql = format!(
            "SELECT id, g, h, t, x, \
            row_number() OVER ({w}) AS rn, \
            lag(s) OVER ({w}) AS lag_s, lag(x, 1) OVER ({w}) AS lag_x, lag(ts) OVER ({w}) AS lag_ts, \
            sum(x) OVER ({r}) AS sum_x, sum(f) OVER ({r}) AS sum_f, count(x) OVER ({r}) AS count_x, \
            count(*) OVER ({r}) AS count_all, max(ts) OVER ({r}) AS max_ts, min(x) OVER ({r}) AS min_x, \
            max(x) OVER ({r}) AS max_x, \
            first_value(s) IGNORE NULLS OVER ({r}) AS first_s, last_value(s) IGNORE NULLS OVER ({r}) AS last_s, \
            last_value(x) IGNORE NULLS OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_x, \
            first_value(s) IGNORE NULLS OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS first_before \
            FROM e ORDER BY id"
        );
        let (plain, running, plan) = both(&sql).await;
        assert!(plan.contains("RunningWindowExec"), "{plan}");
        assert!(!plan.contains("BoundedWindowAggExec"), "{plan}");
        assert_eq!(running, plain);
        assert!(plain.lines().count() > 8000, "{}", plain.lines().count());

        // lag over the reverse of the input's order (DataFusion reverses it, reading the
        // next row, instead of sorting again), and count of a NULL-typed argument.
        for (sql, operator) in [
            (
                "SELECT id, t, rn, nxt FROM (SELECT id, g, t, rn, \
                 lag(x) OVER (PARTITION BY g ORDER BY t DESC, id DESC) AS nxt \
                 FROM (SELECT id, g, t, x, row_number() OVER (PARTITION BY g ORDER BY t, id) AS rn FROM e)) \
                 ORDER BY id",
                "BoundedWindowAggExec: wdw=[lag",
            ),
            (
                "SELECT id, count(NULL) OVER (PARTITION BY g ORDER BY t, id ROWS UNBOUNDED PRECEDING) AS nothing \
                 FROM e ORDER BY id",
                "RunningWindowExec: wdw=[count(NULL)",
            ),
        ] {
            let (plain, running, plan) = both(sql).await;
            assert!(plan.contains(operator), "{plan}");
            assert_eq!(running, plain);
        }

        // One partition over the whole input, in reverse order.
        let o = "ORDER BY t DESC, id";
        let sql = format!(
            "SELECT id, t, g, row_number() OVER ({o}) AS rn, \
             sum(f) OVER ({o} ROWS UNBOUNDED PRECEDING) AS run_f, lag(g) OVER ({o}) AS lag_g \
             FROM e ORDER BY id"
        );
        let (plain, running, plan) = both(&sql).await;
        assert!(plan.contains("RunningWindowExec"), "{plan}");
        assert_eq!(running, plain);
    }

    /// A window with a function the operator does not run keeps DataFusion's operator.
    #[tokio::test]
    async fn other_windows_keep_datafusion_s_operator() {
        for window in [
            "sum(x) OVER (PARTITION BY g ORDER BY t, id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)",
            "sum(x) OVER (PARTITION BY g ORDER BY t, id)",
            "lag(x, 2) OVER (PARTITION BY g ORDER BY t, id)",
            "lag(x, 1, 0) OVER (PARTITION BY g ORDER BY t, id)",
            "rank() OVER (PARTITION BY g ORDER BY t)",
            "max(f) OVER (PARTITION BY g ORDER BY t, id ROWS UNBOUNDED PRECEDING)",
            "sum(x) FILTER (WHERE x > 0) OVER (PARTITION BY g ORDER BY t, id ROWS UNBOUNDED PRECEDING)",
        ] {
            let sql = format!("SELECT id, {window} AS v FROM e ORDER BY id");
            let (plain, running, plan) = both(&sql).await;
            assert!(!plan.contains("RunningWindowExec"), "{window}: {plan}");
            assert_eq!(running, plain, "{window}");
        }
    }
}
