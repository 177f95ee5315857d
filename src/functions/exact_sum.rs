//! `sum` and `avg` of DOUBLE values computed exactly and rounded once.
//!
//! DataFusion adds floating-point values in the order its partitions and threads deliver
//! them, so the same rows summed with another `target_partitions`, or the same settings
//! on a busier machine, can give a result that differs in the last bits. Marts must be
//! the same bit for bit on every run, so crm-marts replaces the built-in `sum` and `avg`
//! (for DOUBLE input; every other type keeps the built-in code): each value is added
//! exactly, and the total is rounded to the nearest double once, at the end, as Python's
//! `math.fsum` does. The result is the correctly rounded sum of the values, whatever the
//! order they came in, and never less accurate than the naive sum.
//!
//! Most values are added to a 128-bit integer counting units of 2^-64, which is exact for
//! every double of magnitude up to 2^62 whose lowest set bit is at least 2^-64: that
//! covers money, counts and ordinary ratios. Any other value (tiny, huge, or a total that
//! would overflow) goes to a list of non-overlapping partial sums (Shewchuk's algorithm),
//! which is exact for all finite doubles. Values of magnitude 2^960 and more go to a list
//! of their own, scaled by 2^-256 (exactly), so that no partial sum overflows whatever the
//! order: `[MAX, MAX, -MAX]` sums to MAX as `[MAX, -MAX, MAX]` does. The parts are
//! combined at the end, exactly unless values from 2^960 up meet bits below 2^-818 in
//! one sum.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, UInt64Array,
    UInt8Array,
};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float64Type, Int64Type, UInt64Type, UInt8Type,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{format_state_name, AggregateOrderSensitivity};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, Expr, GroupsAccumulator,
    Operator, ReversedUDAF, SetMonotonicity, Signature, StatisticsArgs,
};

/// The exact running sum of a set of doubles.
///
/// A hash aggregation holds one per group and per sum (millions of them), so the common
/// case is kept small: 32 bytes, with the rarely needed partial sums behind a box.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExactF64 {
    /// The part held in units of 2^-64.
    fixed: i128,
    /// What `fixed` cannot hold; `None` until a value needs it.
    rest: Option<Box<Rest>>,
    /// NaN, +inf and -inf seen ([`NAN`], [`POS_INF`], [`NEG_INF`]).
    special: u8,
}

/// The parts of an [`ExactF64`] beyond its fixed-point total.
#[derive(Debug, Clone, Default, PartialEq)]
struct Rest {
    /// Non-overlapping partial sums of what `fixed` cannot hold, smallest magnitude first.
    partials: Vec<f64>,
    /// The same for values of magnitude [`HUGE`] and more, each times [`SCALE_DOWN`].
    huge: Vec<f64>,
}

const NAN: u8 = 1;
const POS_INF: u8 = 2;
const NEG_INF: u8 = 4;
/// Values from here up are summed scaled down (2^960).
const HUGE: f64 = power_of_two(960);
/// 2^-256 and 2^256: scaling a double of magnitude [`HUGE`] or more by them is exact.
const SCALE_DOWN: f64 = power_of_two(-256);
const SCALE_UP: f64 = power_of_two(256);

/// 2^e for a normal double's exponent.
const fn power_of_two(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}
/// 2^-64, the unit of [`ExactF64::fixed`].
const UNIT: f64 = 1.0 / 18_446_744_073_709_551_616.0;

/// `x` as a whole number of 2^-64 units when that is exact and leaves headroom.
fn to_fixed(x: f64) -> Option<i128> {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    if exponent == 0 {
        return if x == 0.0 { Some(0) } else { None };
    }
    let mantissa = ((bits & ((1u64 << 52) - 1)) | (1u64 << 52)) as i128;
    // x = mantissa * 2^(exponent - 1075), so x / 2^-64 = mantissa * 2^(exponent - 1011).
    let shift = exponent - 1011;
    let magnitude = if shift >= 0 {
        // mantissa < 2^53: a shift up to 73 keeps |x| < 2^62 units of headroom below i128::MAX.
        if shift > 73 {
            return None;
        }
        mantissa << shift
    } else {
        let down = -shift;
        if down > 52 || mantissa.trailing_zeros() < down as u32 {
            return None;
        }
        mantissa >> down
    };
    Some(if x.is_sign_negative() {
        -magnitude
    } else {
        magnitude
    })
}

/// Adds `x` to the non-overlapping partials exactly (Shewchuk; Python's `msum`).
fn add_partial(partials: &mut Vec<f64>, mut x: f64) {
    let mut kept = 0;
    for j in 0..partials.len() {
        let mut y = partials[j];
        if x.abs() < y.abs() {
            std::mem::swap(&mut x, &mut y);
        }
        let hi = x + y;
        let lo = y - (hi - x);
        if lo != 0.0 {
            partials[kept] = lo;
            kept += 1;
        }
        x = hi;
    }
    partials.truncate(kept);
    partials.push(x);
}

/// The correctly rounded value of non-overlapping partials (Python's `fsum`, last step).
fn round_partials(p: &[f64]) -> f64 {
    let Some(&last) = p.last() else { return 0.0 };
    let mut n = p.len() - 1;
    let mut hi = last;
    let mut lo = 0.0;
    while n > 0 {
        n -= 1;
        let x = hi;
        let y = p[n];
        hi = x + y;
        let y_rounded = hi - x;
        lo = y - y_rounded;
        if lo != 0.0 {
            break;
        }
    }
    // Round half to even: when the rest points the same way as the half-way error, the
    // sum is past the half-way point and rounds away.
    if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        if y == x - hi {
            hi = x;
        }
    }
    hi
}

/// The exact pieces of a fixed-point value, each a double, to add to partials.
fn fixed_pieces(fixed: i128) -> [f64; 3] {
    // Three chunks of at most 43 bits each are exact as doubles.
    let mask = (1i128 << 43) - 1;
    let low = (fixed & mask) as f64 * UNIT;
    let mid = ((fixed >> 43) & mask) as f64 * UNIT * (1u64 << 43) as f64;
    let high = (fixed >> 86) as f64 * UNIT * (1u64 << 43) as f64 * (1u64 << 43) as f64;
    [low, mid, high]
}

impl ExactF64 {
    fn partials(&self) -> &[f64] {
        self.rest.as_ref().map_or(&[], |r| &r.partials)
    }

    fn huge(&self) -> &[f64] {
        self.rest.as_ref().map_or(&[], |r| &r.huge)
    }

    fn rest_mut(&mut self) -> &mut Rest {
        self.rest.get_or_insert_with(Box::default)
    }

    /// Bytes held on the heap, for memory accounting.
    fn heap_size(&self) -> usize {
        self.rest.as_ref().map_or(0, |r| {
            std::mem::size_of::<Rest>() + (r.partials.capacity() + r.huge.capacity()) * 8
        })
    }

    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.special |= if x.is_nan() {
                NAN
            } else if x > 0.0 {
                POS_INF
            } else {
                NEG_INF
            };
            return;
        }
        if let Some(v) = to_fixed(x) {
            if let Some(sum) = self.fixed.checked_add(v) {
                self.fixed = sum;
                return;
            }
        }
        if x.abs() >= HUGE {
            add_partial(&mut self.rest_mut().huge, x * SCALE_DOWN);
            return;
        }
        // Below 2^960, more than 2^63 values would be needed to overflow.
        let partials = &mut self.rest_mut().partials;
        add_partial(partials, x);
        if let Some(&top) = partials.last().filter(|p| !p.is_finite()) {
            // The exact sum left the range of doubles: the result is that infinity.
            partials.clear();
            self.special |= if top > 0.0 { POS_INF } else { NEG_INF };
        }
    }

    fn merge_parts(&mut self, fixed: i128, partials: &[f64], huge: &[f64], special: u8) {
        self.special |= special;
        match self.fixed.checked_add(fixed) {
            Some(sum) => self.fixed = sum,
            None => {
                let rest = self.rest_mut();
                for piece in fixed_pieces(fixed) {
                    add_partial(&mut rest.partials, piece);
                }
            }
        }
        for &p in partials {
            self.add(p);
        }
        if !huge.is_empty() {
            let rest = self.rest_mut();
            for &h in huge {
                add_partial(&mut rest.huge, h);
            }
        }
    }

    pub fn merge(&mut self, other: &ExactF64) {
        self.merge_parts(other.fixed, other.partials(), other.huge(), other.special);
    }

    /// The sum, rounded once to the nearest double.
    pub fn value(&self) -> f64 {
        if self.special & NAN != 0 || self.special & (POS_INF | NEG_INF) == POS_INF | NEG_INF {
            return f64::NAN;
        }
        if self.special & POS_INF != 0 {
            return f64::INFINITY;
        }
        if self.special & NEG_INF != 0 {
            return f64::NEG_INFINITY;
        }
        if !self.huge().is_empty() && round_partials(self.huge()) != 0.0 {
            // Scaled down, the rest joins the huge values; scaling the rounded sum back up
            // is exact (or overflows, as the true sum would).
            let mut all = self.huge().to_vec();
            for &p in self.partials() {
                add_partial(&mut all, p * SCALE_DOWN);
            }
            for piece in fixed_pieces(self.fixed) {
                add_partial(&mut all, piece * SCALE_DOWN);
            }
            return round_partials(&all) * SCALE_UP;
        }
        if self.partials().is_empty() {
            // `as f64` rounds to nearest, ties to even; scaling by 2^-64 is exact.
            return self.fixed as f64 * UNIT;
        }
        let mut all = self.partials().to_vec();
        for piece in fixed_pieces(self.fixed) {
            add_partial(&mut all, piece);
        }
        let v = round_partials(&all);
        if v.is_finite() {
            v
        } else {
            v.signum() * f64::INFINITY
        }
    }
}

/// Which aggregate a [`ExactAggregate`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Sum,
    Avg,
}

/// The built-in `sum` or `avg`, with DOUBLE input summed exactly.
#[derive(Debug)]
struct ExactAggregate {
    kind: Kind,
    builtin: Arc<AggregateUDF>,
}

impl PartialEq for ExactAggregate {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}
impl Eq for ExactAggregate {}
impl std::hash::Hash for ExactAggregate {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

impl ExactAggregate {
    fn inner(&self) -> &dyn AggregateUDFImpl {
        self.builtin.inner().as_ref()
    }

    /// True when this call sums doubles; DISTINCT and other types use the built-in code.
    fn exact(&self, input: &[FieldRef], return_type: &DataType, is_distinct: bool) -> bool {
        !is_distinct
            && return_type == &DataType::Float64
            && input
                .first()
                .is_some_and(|f| f.data_type() == &DataType::Float64)
    }
}

/// The state of one exact sum: count, fixed part (two 64-bit halves), partials, flags.
fn exact_state_fields(name: &str) -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new(
            format_state_name(name, "count"),
            DataType::UInt64,
            true,
        )),
        Arc::new(Field::new(
            format_state_name(name, "fixed_hi"),
            DataType::Int64,
            true,
        )),
        Arc::new(Field::new(
            format_state_name(name, "fixed_lo"),
            DataType::UInt64,
            true,
        )),
        Arc::new(Field::new_list(
            format_state_name(name, "partials"),
            Field::new_list_field(DataType::Float64, true),
            true,
        )),
        Arc::new(Field::new(
            format_state_name(name, "special"),
            DataType::UInt8,
            true,
        )),
        Arc::new(Field::new_list(
            format_state_name(name, "huge"),
            Field::new_list_field(DataType::Float64, true),
            true,
        )),
    ]
}

impl AggregateUDFImpl for ExactAggregate {
    fn name(&self) -> &str {
        self.inner().name()
    }
    fn aliases(&self) -> &[String] {
        self.inner().aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner().signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner().return_type(arg_types)
    }
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner().return_field(arg_fields)
    }
    fn is_nullable(&self) -> bool {
        self.inner().is_nullable()
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner().coerce_types(arg_types)
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if self.exact(args.expr_fields, args.return_type(), args.is_distinct) {
            return Ok(Box::new(ExactAccumulator {
                kind: self.kind,
                count: 0,
                sum: ExactF64::default(),
            }));
        }
        self.inner().accumulator(args)
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if self.exact(args.expr_fields, args.return_type(), args.is_distinct) {
            return Ok(Box::new(ExactAccumulator {
                kind: self.kind,
                count: 0,
                sum: ExactF64::default(),
            }));
        }
        self.inner().create_sliding_accumulator(args)
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if self.exact(args.input_fields, args.return_type(), args.is_distinct) {
            return Ok(exact_state_fields(args.name));
        }
        self.inner().state_fields(args)
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        if self.exact(args.expr_fields, args.return_type(), args.is_distinct) {
            return true;
        }
        self.inner().groups_accumulator_supported(args)
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        if self.exact(args.expr_fields, args.return_type(), args.is_distinct) {
            return Ok(Box::new(ExactGroups::new(self.kind)));
        }
        self.inner().create_groups_accumulator(args)
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
    fn simplify_expr_op_literal(
        &self,
        agg_function: &AggregateFunction,
        arg: &Expr,
        op: Operator,
        lit: &Expr,
        arg_is_left: bool,
    ) -> Result<Option<Expr>> {
        self.inner()
            .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
    }
    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner().value_from_stats(statistics_args)
    }
    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner().default_value(data_type)
    }
    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner().set_monotonicity(data_type)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner().documentation()
    }
}

fn split(fixed: i128) -> (i64, u64) {
    ((fixed >> 64) as i64, fixed as u64)
}

fn join(hi: i64, lo: u64) -> i128 {
    ((hi as i128) << 64) | lo as i128
}

fn finish(kind: Kind, count: u64, sum: &ExactF64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    Some(match kind {
        Kind::Sum => sum.value(),
        Kind::Avg => sum.value() / count as f64,
    })
}

#[derive(Debug)]
struct ExactAccumulator {
    kind: Kind,
    count: u64,
    sum: ExactF64,
}

impl Accumulator for ExactAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<Float64Type>();
        for x in values.iter().flatten() {
            self.sum.add(x);
            self.count += 1;
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<Float64Type>();
        for x in values.iter().flatten() {
            self.sum.add(-x);
            self.count -= 1;
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(finish(
            self.kind, self.count, &self.sum,
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sum.heap_size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let (hi, lo) = split(self.sum.fixed);
        Ok(vec![
            ScalarValue::UInt64(Some(self.count)),
            ScalarValue::Int64(Some(hi)),
            ScalarValue::UInt64(Some(lo)),
            ScalarValue::List(Arc::new(list_of([self.sum.partials()]))),
            ScalarValue::UInt8(Some(self.sum.special)),
            ScalarValue::List(Arc::new(list_of([self.sum.huge()]))),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let state = StateArrays::new(states);
        for i in 0..state.len() {
            state.merge_row(i, &mut self.count, &mut self.sum);
        }
        Ok(())
    }
}

/// One list per sum, null where it is empty.
fn list_of<'a>(lists: impl IntoIterator<Item = &'a [f64]>) -> ListArray {
    ListArray::from_iter_primitive::<Float64Type, _, _>(
        lists
            .into_iter()
            .map(|l| (!l.is_empty()).then(|| l.iter().map(|p| Some(*p)).collect::<Vec<_>>())),
    )
}

/// The state columns of exact sums, as read back for merging.
struct StateArrays<'a> {
    count: &'a UInt64Array,
    hi: &'a Int64Array,
    lo: &'a UInt64Array,
    partials: &'a ListArray,
    special: &'a UInt8Array,
    huge: &'a ListArray,
}

impl<'a> StateArrays<'a> {
    fn new(states: &'a [ArrayRef]) -> Self {
        Self {
            count: states[0].as_primitive::<UInt64Type>(),
            hi: states[1].as_primitive::<Int64Type>(),
            lo: states[2].as_primitive::<UInt64Type>(),
            partials: states[3].as_list::<i32>(),
            special: states[4].as_primitive::<UInt8Type>(),
            huge: states[5].as_list::<i32>(),
        }
    }

    fn len(&self) -> usize {
        self.count.len()
    }

    fn merge_row(&self, i: usize, count: &mut u64, sum: &mut ExactF64) {
        if self.count.is_null(i) {
            return;
        }
        *count += self.count.value(i);
        let values = |lists: &ListArray| -> Vec<f64> {
            if lists.is_null(i) {
                Vec::new()
            } else {
                lists
                    .value(i)
                    .as_primitive::<Float64Type>()
                    .iter()
                    .flatten()
                    .collect()
            }
        };
        let (partials, huge) = (values(self.partials), values(self.huge));
        sum.merge_parts(
            join(self.hi.value(i), self.lo.value(i)),
            &partials,
            &huge,
            self.special.value(i),
        );
    }
}

/// Exact sums for many groups at once, as hash aggregation needs them.
///
/// A group costs 24 bytes: its count and the fixed-point part of its sum. The few sums
/// that need more (partials, huge values, NaN or infinities) keep the rest in a map by
/// group. Hash aggregation holds one of these per `sum` per group (tens of millions of
/// groups at a million customers), so the size decides when an aggregation spills.
struct ExactGroups {
    kind: Kind,
    counts: Vec<u64>,
    fixed: Vec<i128>,
    /// The rest of the sums that need more than `fixed`, by group index.
    rest: std::collections::HashMap<usize, ExactF64>,
    /// Bytes `rest` holds, kept up to date so that [`GroupsAccumulator::size`], which
    /// the aggregation asks after every batch, does not walk the groups.
    heap: usize,
}

/// Bytes a sum in [`ExactGroups::rest`] holds, with its place in the map.
fn rest_bytes(sum: &ExactF64) -> usize {
    std::mem::size_of::<(usize, ExactF64)>() + 8 + sum.heap_size()
}

impl ExactGroups {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            counts: Vec::new(),
            fixed: Vec::new(),
            rest: std::collections::HashMap::new(),
            heap: 0,
        }
    }

    fn resize(&mut self, total_num_groups: usize) {
        self.counts.resize(total_num_groups, 0);
        self.fixed.resize(total_num_groups, 0);
    }

    /// Adds `sum` to group `g`: to its fixed part when that is exact, else to its rest.
    fn add_sum(&mut self, g: usize, sum: &ExactF64) {
        if sum.rest.is_none() && sum.special == 0 {
            if let Some(total) = self.fixed[g].checked_add(sum.fixed) {
                self.fixed[g] = total;
                return;
            }
        }
        let entry = self.rest.entry(g).or_insert_with(|| {
            self.heap += rest_bytes(&ExactF64::default());
            ExactF64::default()
        });
        let before = entry.heap_size();
        entry.merge(sum);
        self.heap += entry.heap_size() - before;
    }

    /// Adds one value to group `g`.
    fn add_value(&mut self, g: usize, x: f64) {
        if let Some(v) = to_fixed(x) {
            if let Some(total) = self.fixed[g].checked_add(v) {
                self.fixed[g] = total;
                return;
            }
        }
        let mut one = ExactF64::default();
        one.add(x);
        self.add_sum(g, &one);
    }

    /// Takes the groups `emit_to` names, as whole sums; the groups after them move up.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<u64>, Vec<ExactF64>) {
        let counts = emit_to.take_needed(&mut self.counts);
        let fixed = emit_to.take_needed(&mut self.fixed);
        let n = fixed.len();
        let mut taken = std::collections::HashMap::new();
        if !self.rest.is_empty() {
            let all = std::mem::take(&mut self.rest);
            for (g, sum) in all {
                if g < n {
                    self.heap -= rest_bytes(&sum);
                    taken.insert(g, sum);
                } else {
                    self.rest.insert(g - n, sum);
                }
            }
        }
        let sums = fixed
            .into_iter()
            .enumerate()
            .map(|(g, fixed)| {
                let mut sum = ExactF64 {
                    fixed,
                    ..Default::default()
                };
                if let Some(rest) = taken.get(&g) {
                    sum.merge(rest);
                }
                sum
            })
            .collect();
        (counts, sums)
    }
}

impl GroupsAccumulator for ExactGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let values = values[0].as_primitive::<Float64Type>();
        for (i, &g) in group_indices.iter().enumerate() {
            if values.is_null(i) || opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i)) {
                continue;
            }
            self.add_value(g, values.value(i));
            self.counts[g] += 1;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (counts, sums) = self.take(emit_to);
        let out: Float64Array = counts
            .iter()
            .zip(&sums)
            .map(|(&c, s)| finish(self.kind, c, s))
            .collect();
        Ok(Arc::new(out))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (counts, sums) = self.take(emit_to);
        Ok(state_arrays(counts, &sums))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let state = StateArrays::new(values);
        for (i, &g) in group_indices.iter().enumerate() {
            let mut sum = ExactF64::default();
            state.merge_row(i, &mut self.counts[g], &mut sum);
            self.add_sum(g, &sum);
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row as a state of its own, for aggregations that skip the partial phase.
        let values = values[0].as_primitive::<Float64Type>();
        let (counts, sums): (Vec<u64>, Vec<ExactF64>) = (0..values.len())
            .map(|i| {
                let mut sum = ExactF64::default();
                if values.is_null(i) || opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i)) {
                    return (0, sum);
                }
                sum.add(values.value(i));
                (1, sum)
            })
            .unzip();
        Ok(state_arrays(counts, &sums))
    }

    fn size(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u64>()
            + self.fixed.capacity() * std::mem::size_of::<i128>()
            + self.heap
    }
}

/// The state columns of `sums`: count, fixed part (two 64-bit halves), partials, flags,
/// huge values.
fn state_arrays(counts: Vec<u64>, sums: &[ExactF64]) -> Vec<ArrayRef> {
    let (hi, lo): (Vec<i64>, Vec<u64>) = sums.iter().map(|s| split(s.fixed)).unzip();
    let partials = list_of(sums.iter().map(|s| s.partials()));
    let huge = list_of(sums.iter().map(|s| s.huge()));
    let special: UInt8Array = sums.iter().map(|s| Some(s.special)).collect();
    vec![
        Arc::new(UInt64Array::from(counts)),
        Arc::new(Int64Array::from(hi)),
        Arc::new(UInt64Array::from(lo)),
        Arc::new(partials),
        Arc::new(special),
        Arc::new(huge),
    ]
}

/// True when `udf` is one of this module's functions (a `sum` of doubles is exact).
pub fn is_exact(udf: &AggregateUDF) -> bool {
    udf.inner().is::<ExactAggregate>()
}

/// `sum` and `avg` to register over the built-in ones.
pub fn functions() -> Vec<AggregateUDF> {
    use datafusion::functions_aggregate::{average::avg_udaf, sum::sum_udaf};
    vec![
        AggregateUDF::new_from_impl(ExactAggregate {
            kind: Kind::Sum,
            builtin: sum_udaf(),
        }),
        AggregateUDF::new_from_impl(ExactAggregate {
            kind: Kind::Avg,
            builtin: avg_udaf(),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &[f64]) -> f64 {
        let mut s = ExactF64::default();
        values.iter().for_each(|&x| s.add(x));
        s.value()
    }

    #[test]
    fn a_groups_accumulator_counts_its_heap_as_sums_grow_and_leave() {
        // Money-like sums take 24 bytes a group; the rest lives in a side map.
        assert_eq!(std::mem::size_of::<ExactF64>(), 32);
        let mut groups = ExactGroups::new(Kind::Sum);
        let walked = |g: &ExactGroups| g.rest.values().map(rest_bytes).sum::<usize>();
        // 1e-300 needs the partials, 1e300 the huge list, 0.1 and 2.5 neither.
        let values: ArrayRef = Arc::new(Float64Array::from(vec![1e-300, 0.1, 1e300, 2.5, 3e-300]));
        groups
            .update_batch(&[values.clone()], &[0, 1, 0, 2, 1], None, 3)
            .unwrap();
        assert!(groups.heap > 0);
        assert_eq!(groups.heap, walked(&groups));
        assert!(groups.size() >= 3 * 24 + groups.heap);
        // Group 0 leaves as a state (the others move up) and comes back as group 2.
        let state = groups.state(EmitTo::First(1)).unwrap();
        assert_eq!(groups.heap, walked(&groups));
        groups.merge_batch(&state, &[2], 3).unwrap();
        assert_eq!(groups.heap, walked(&groups));
        let sums = groups.evaluate(EmitTo::All).unwrap();
        assert_eq!(groups.heap, 0);
        let sums = sums.as_primitive::<Float64Type>();
        assert_eq!(
            sums.values().to_vec(),
            vec![0.1 + 3e-300, 2.5, 1e300 + 1e-300]
        );

        // Rows turned into states one by one and merged give the sums of one pass.
        let mut direct = ExactGroups::new(Kind::Avg);
        direct
            .update_batch(&[values.clone()], &[0, 1, 0, 2, 1], None, 3)
            .unwrap();
        let mut merged = ExactGroups::new(Kind::Avg);
        let states = merged.convert_to_state(&[values], None).unwrap();
        merged.merge_batch(&states, &[0, 1, 0, 2, 1], 3).unwrap();
        let (a, b) = (
            direct.evaluate(EmitTo::All).unwrap(),
            merged.evaluate(EmitTo::All).unwrap(),
        );
        assert_eq!(
            a.as_primitive::<Float64Type>().values(),
            b.as_primitive::<Float64Type>().values()
        );
    }

    #[test]
    fn sums_are_correctly_rounded_in_any_order() {
        let mut values: Vec<f64> = (0..10_000)
            .map(|i| (i as f64 * 0.37).sin() * 10f64.powi(i % 7 - 3))
            .collect();
        let forward = exact(&values);
        values.reverse();
        assert_eq!(exact(&values).to_bits(), forward.to_bits());
        values.sort_by(f64::total_cmp);
        assert_eq!(exact(&values).to_bits(), forward.to_bits());
    }

    #[test]
    fn cancellation_and_tiny_values_are_exact() {
        // Naively 0.0; exactly 1e-30.
        assert_eq!(exact(&[1e20, 1e-30, -1e20]), 1e-30);
        assert_eq!(exact(&[0.1, 0.2, 0.3, -0.6]), 2.7755575615628914e-17);
        assert_eq!(exact(&[1e300, 1e300, -1e300]), 1e300);
        assert_eq!(exact(&[]), 0.0);
        assert_eq!(
            exact(&[f64::MIN_POSITIVE / 4.0, f64::MIN_POSITIVE / 4.0]),
            f64::MIN_POSITIVE / 2.0
        );
    }

    #[test]
    fn matches_a_reference_on_money() {
        // Cents summed as integers are the reference.
        let cents: Vec<i64> = (0..50_000).map(|i| (i * 7919) % 100_000 - 20_000).collect();
        let values: Vec<f64> = cents.iter().map(|&c| c as f64 / 100.0).collect();
        let total_cents: i64 = cents.iter().sum();
        let reference = total_cents as f64 / 100.0;
        assert!((exact(&values) - reference).abs() <= reference.abs() * f64::EPSILON);
    }

    #[test]
    fn rounds_half_to_even_across_partials() {
        // 1 + 2^-53 is halfway between 1 and the next double: ties to even gives 1;
        // a further tiny positive amount pushes it up.
        let half_ulp = 2f64.powi(-53);
        assert_eq!(exact(&[1.0, half_ulp]), 1.0);
        assert_eq!(exact(&[1.0, half_ulp, 1e-300]), 1.0 + 2.0 * half_ulp);
        assert_eq!(exact(&[1.0, half_ulp, -1e-300]), 1.0);
    }

    #[test]
    fn merging_states_equals_one_pass() {
        let values: Vec<f64> = (0..1000).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let whole = exact(&values);
        let mut a = ExactF64::default();
        let mut b = ExactF64::default();
        for (i, &x) in values.iter().enumerate() {
            if i % 3 == 0 {
                a.add(x)
            } else {
                b.add(x)
            }
        }
        b.merge(&a);
        assert_eq!(b.value().to_bits(), whole.to_bits());
    }

    #[test]
    fn huge_values_sum_alike_in_any_order() {
        let m = f64::MAX;
        for order in [[m, m, -m], [m, -m, m], [-m, m, m]] {
            assert_eq!(exact(&order), m, "{order:?}");
        }
        // Huge and ordinary values in one sum: exact, whichever comes first.
        assert_eq!(exact(&[1e300, 3.5, -1e300]), 3.5);
        assert_eq!(exact(&[3.5, -1e300, 1e300]), 3.5);
        assert_eq!(exact(&[m, 1e292, -m]), 1e292);
        // Merged states carry the huge part.
        let (mut a, mut b) = (ExactF64::default(), ExactF64::default());
        a.add(m);
        a.add(m);
        b.add(-m);
        b.add(0.25);
        a.merge(&b);
        assert_eq!(a.value(), m);
        // A true sum past the largest double is infinite, as before.
        assert_eq!(exact(&[m, m, m, -m]), f64::INFINITY);
    }

    #[test]
    fn infinities_and_nan() {
        assert!(exact(&[1.0, f64::NAN]).is_nan());
        assert_eq!(exact(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(exact(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert_eq!(exact(&[f64::MAX, f64::MAX]), f64::INFINITY);
    }

    /// `sum`/`avg` in SQL, grouped and not, and as window functions, over data split in
    /// partitions: the same bits whatever the partitioning, equal to the exact sum.
    #[tokio::test]
    async fn sql_sums_do_not_depend_on_partitioning() {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::Schema;
        use datafusion::catalog::MemTable;
        use datafusion::prelude::{SessionConfig, SessionContext};

        let n = 20_000;
        let x: Vec<f64> = (0..n)
            .map(|i| ((i * 7919 % 10_007) as f64 - 5_000.0) * 0.013 + 1e-7 * i as f64)
            .collect();
        let g: Vec<i64> = (0..n).map(|i| (i % 13) as i64).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
        ]));
        let mut results = Vec::new();
        for (partitions, chunk) in [(1usize, n), (4, 997), (7, 3001)] {
            let batches: Vec<Vec<RecordBatch>> = (0..n)
                .step_by(chunk)
                .map(|start| {
                    let end = (start + chunk).min(n);
                    vec![RecordBatch::try_new(
                        schema.clone(),
                        vec![
                            Arc::new(Int64Array::from(g[start..end].to_vec())),
                            Arc::new(Float64Array::from(x[start..end].to_vec())),
                        ],
                    )
                    .unwrap()]
                })
                .collect();
            let ctx = SessionContext::new_with_config(
                SessionConfig::new().with_target_partitions(partitions),
            );
            crate::functions::register_all(&ctx, &Default::default());
            ctx.register_table(
                "t",
                Arc::new(MemTable::try_new(schema.clone(), batches).unwrap()),
            )
            .unwrap();
            let sql = "SELECT (SELECT sum(x) FROM t) AS total, (SELECT avg(x) FROM t) AS mean, \
                       (SELECT sum(s) FROM (SELECT g, sum(x) AS s FROM t GROUP BY g)) AS grouped, \
                       (SELECT max(w) FROM (SELECT sum(x) OVER (ORDER BY g, x ROWS BETWEEN 100 PRECEDING AND CURRENT ROW) AS w FROM t)) AS sliding";
            let batch = &ctx.sql(sql).await.unwrap().collect().await.unwrap()[0];
            let row: Vec<u64> = (0..4)
                .map(|c| {
                    batch
                        .column(c)
                        .as_primitive::<Float64Type>()
                        .value(0)
                        .to_bits()
                })
                .collect();
            results.push(row);
        }
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], results[2]);
        assert_eq!(results[0][0], exact(&x).to_bits());
        assert_eq!(
            f64::from_bits(results[0][1]).to_bits(),
            (exact(&x) / n as f64).to_bits()
        );
    }
}
