//! `identity_level(levels, a, b [, other_a, other_b]...)`: the comparison level of two
//! values as the identity step codes it (0 when either is NULL, 1..n the first of the
//! `levels` they reach, n + 1 otherwise), so that candidate pairs can be compared by the
//! query engine, on a cluster too. `levels` is a literal such as
//! `exact;jaro_winkler>=0.92;metaphone`; each `swapped` level takes the two records' values
//! of the other attribute, in order.
//!
//! `match_probability(weight)`: the probability of a match weight in bits,
//! 1 / (1 + 2^-weight), exactly as the identity step computes it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, UInt8Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_float64_array;
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::text::TextArg;
use crate::identity::compare::{level_of_texts, parse_levels_spec};

#[derive(Debug, PartialEq, Eq, Hash)]
struct IdentityLevel {
    signature: Signature,
}

pub fn udf() -> ScalarUDF {
    ScalarUDF::from(IdentityLevel {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

impl ScalarUDFImpl for IdentityLevel {
    fn name(&self) -> &str {
        "identity_level"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() < 3 || arg_types.len().is_multiple_of(2) {
            return exec_err!(
                "identity_level(levels, a, b [, other_a, other_b]...) takes 3, 5, 7... arguments"
            );
        }
        Ok(DataType::UInt8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let spec = match &args.args[0] {
            ColumnarValue::Scalar(s) => s.try_as_str().flatten().unwrap_or_default().to_string(),
            ColumnarValue::Array(_) => {
                return exec_err!("identity_level: the levels must be a literal")
            }
        };
        let levels =
            parse_levels_spec(&spec).map_err(datafusion::error::DataFusionError::Execution)?;
        let inputs = args.args[1..]
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(ScalarValue::Null) => Ok(TextArg::Scalar(None)),
                a => TextArg::new("identity_level", a),
            })
            .collect::<Result<Vec<_>>>()?;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let mut others = Vec::with_capacity((inputs.len() - 2) / 2);
        let out: UInt8Array = (0..rows)
            .map(|i| {
                others.clear();
                others.extend(inputs[2..].chunks(2).map(|p| (p[0].get(i), p[1].get(i))));
                Some(level_of_texts(
                    &levels,
                    inputs[0].get(i),
                    inputs[1].get(i),
                    &others,
                ))
            })
            .collect();
        if all_scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct MatchProbability {
    signature: Signature,
}

pub fn probability_udf() -> ScalarUDF {
    ScalarUDF::from(MatchProbability {
        signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
    })
}

impl ScalarUDFImpl for MatchProbability {
    fn name(&self) -> &str {
        "match_probability"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let probability = crate::identity::train::probability;
        match &args.args[0] {
            ColumnarValue::Scalar(s) => {
                let ScalarValue::Float64(w) = s else {
                    return exec_err!("match_probability: expected a DOUBLE weight");
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Float64(
                    w.map(probability),
                )))
            }
            ColumnarValue::Array(a) => {
                let out: Float64Array = as_float64_array(a)?
                    .iter()
                    .map(|w| w.map(probability))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::common::ScalarValue;

    use super::super::text::testing::row;

    #[tokio::test]
    async fn levels_and_probabilities_in_sql() {
        let got = row("SELECT identity_level('exact;jaro_winkler>=0.9;metaphone', 'martha', 'marhta'), \
                       identity_level('exact;swapped', 'anna', 'berg', arrow_cast('berg', 'Utf8View'), 'anna'), \
                       identity_level('exact;swapped', 'anna', 'berg', NULL, 'anna'), \
                       identity_level('exact', NULL, 'x'), \
                       match_probability(1.0), match_probability(CAST(NULL AS DOUBLE))")
        .await;
        assert_eq!(
            got,
            vec![
                ScalarValue::UInt8(Some(2)),
                ScalarValue::UInt8(Some(2)),
                ScalarValue::UInt8(Some(3)),
                ScalarValue::UInt8(Some(0)),
                ScalarValue::Float64(Some(2.0 / 3.0)),
                ScalarValue::Float64(None),
            ]
        );
    }
}
