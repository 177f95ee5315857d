//! The CLV prediction formulas as SQL functions, so analysts can score customers with
//! fitted parameters (from `mart_clv_model` or their own):
//!
//! * `bgnbd_p_alive(r, alpha, a, b, frequency, recency, t)`
//! * `bgnbd_expected_purchases(r, alpha, a, b, frequency, recency, t, horizon)`
//! * `gamma_gamma_spend(p, q, gamma, frequency, monetary)`
//! * `bgnbd_clv(r, alpha, a, b, frequency, recency, t, spend, margin, periods, period_length, discount_rate)`
//!
//! All arguments are numbers; NULL in any argument gives NULL, and invalid inputs give
//! NULL rather than an error, so one bad customer does not fail a mart.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::value::{clv, BgNbd, ClvOptions, GammaGamma, Summary};

/// A scalar function of n numbers returning a number.
struct NumericFn {
    name: &'static str,
    signature: Signature,
    f: fn(&[f64]) -> Option<f64>,
}

impl std::fmt::Debug for NumericFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for NumericFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for NumericFn {}

impl Hash for NumericFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl NumericFn {
    fn udf(name: &'static str, arity: usize, f: fn(&[f64]) -> Option<f64>) -> ScalarUDF {
        let signature = Signature::uniform(arity, vec![DataType::Float64], Volatility::Immutable);
        ScalarUDF::from(NumericFn { name, signature, f })
    }
}

impl ScalarUDFImpl for NumericFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let columns: Vec<Float64Array> = arrays
            .iter()
            .map(|a| {
                cast(a, &DataType::Float64).map(|c| {
                    c.as_any()
                        .downcast_ref::<Float64Array>()
                        .expect("Float64")
                        .clone()
                })
            })
            .collect::<std::result::Result<_, _>>()?;
        let rows = args.number_rows;
        let mut values = vec![0.0; columns.len()];
        let out: Float64Array = (0..rows)
            .map(|i| {
                for (v, c) in values.iter_mut().zip(&columns) {
                    let idx = if c.len() == 1 { 0 } else { i };
                    if c.is_null(idx) {
                        return None;
                    }
                    *v = c.value(idx);
                }
                (self.f)(&values).filter(|v| v.is_finite())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

fn model(v: &[f64]) -> BgNbd {
    BgNbd {
        r: v[0],
        alpha: v[1],
        a: v[2],
        b: v[3],
    }
}

fn summary(v: &[f64]) -> Summary {
    Summary::new(v[4], v[5], v[6])
}

pub fn functions() -> Vec<ScalarUDF> {
    vec![
        NumericFn::udf("bgnbd_p_alive", 7, |v| Some(model(v).p_alive(&summary(v)))),
        NumericFn::udf("bgnbd_expected_purchases", 8, |v| {
            Some(model(v).expected_purchases(v[7], &summary(v)))
        }),
        NumericFn::udf("gamma_gamma_spend", 5, |v| {
            Some(
                GammaGamma {
                    p: v[0],
                    q: v[1],
                    gamma: v[2],
                }
                .expected_spend(v[3], v[4]),
            )
        }),
        NumericFn::udf("bgnbd_clv", 12, |v| {
            if !(v[9].is_finite() && v[9] >= 0.0 && v[9] <= 10_000.0) {
                return None;
            }
            let options = ClvOptions {
                periods: v[9] as u32,
                period_length: v[10],
                discount_rate: v[11],
                margin: v[8],
            };
            clv(&model(v), &summary(v), v[7], &options).ok()
        }),
    ]
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Float64Array};
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn sql_functions_match_the_library() {
        let ctx = SessionContext::new();
        for f in super::functions() {
            ctx.register_udf(f);
        }
        // Customer with 2 repeat purchases, last at week 30.43, age 38.86 weeks; CDNOW fit.
        let sql = "SELECT bgnbd_p_alive(0.243, 4.414, 0.793, 2.426, 2, 30.43, 38.86), \
                   bgnbd_expected_purchases(0.243, 4.414, 0.793, 2.426, 2, 30.43, 38.86, 39), \
                   gamma_gamma_spend(6.25, 3.74, 15.44, 2, 35.0), \
                   bgnbd_clv(0.243, 4.414, 0.793, 2.426, 2, 30.43, 38.86, 35.0, 0.3, 12, 4.345, 0.01), \
                   bgnbd_p_alive(0.243, 4.414, 0.793, 2.426, 0, 0, 38.86), \
                   bgnbd_p_alive(0.243, 4.414, 0.793, 2.426, NULL, 0, 38.86)";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let v = |i: usize| {
            batches[0]
                .column(i)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .clone()
        };
        let model = crate::value::BgNbd {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        let s = crate::value::Summary::new(2.0, 30.43, 38.86);
        assert!((v(0).value(0) - model.p_alive(&s)).abs() < 1e-12);
        assert!((v(1).value(0) - model.expected_purchases(39.0, &s)).abs() < 1e-12);
        // Gamma-Gamma: p (gamma + x m) / (p x + q - 1), by hand.
        let spend = 6.25 * (15.44 + 2.0 * 35.0) / (6.25 * 2.0 + 3.74 - 1.0);
        assert!((v(2).value(0) - spend).abs() < 1e-9);
        assert!(v(3).value(0) > 0.0);
        assert_eq!(v(4).value(0), 1.0, "no repeat purchase: P(alive) = 1");
        assert!(v(5).is_null(0));
    }
}
