//! Plumbing shared by the crm-text functions (`normalize_*`, similarity, phonetic
//! codes): arguments of any string type (Utf8, LargeUtf8, Utf8View), scalar or column,
//! and NULL in any argument gives NULL. A function that finds nothing usable
//! (`normalize_email('n/a')`) gives NULL too, never an error, so one bad row does not
//! fail a mart.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, LargeStringArray, StringArray, StringViewArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::{as_large_string_array, as_string_array, as_string_view_array};
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// What a text function computes from the text of its arguments, one row at a time.
#[derive(Clone, Copy)]
pub(super) enum Body {
    Text(fn(&[&str]) -> Option<String>),
    Float(fn(&[&str]) -> Option<f64>),
    Int(fn(&[&str]) -> Option<i64>),
}

/// A scalar function of text arguments.
pub(super) struct TextFn {
    name: &'static str,
    signature: Signature,
    /// Arguments every call gives.
    required: usize,
    /// Values of the trailing arguments that a call may leave out.
    defaults: &'static [&'static str],
    body: Body,
}

impl TextFn {
    /// A function of exactly `arity` text arguments.
    pub(super) fn udf(name: &'static str, arity: usize, body: Body) -> ScalarUDF {
        Self::with_defaults(name, arity, &[], body)
    }

    /// A function of `required` text arguments and then optional ones, which take
    /// `defaults` when a call leaves them out.
    pub(super) fn with_defaults(
        name: &'static str,
        required: usize,
        defaults: &'static [&'static str],
        body: Body,
    ) -> ScalarUDF {
        let arities = (required..=required + defaults.len())
            .map(TypeSignature::String)
            .collect();
        let signature = Signature::one_of(arities, Volatility::Immutable);
        ScalarUDF::from(TextFn {
            name,
            signature,
            required,
            defaults,
            body,
        })
    }
}

impl std::fmt::Debug for TextFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for TextFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TextFn {}

impl Hash for TextFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for TextFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.body {
            Body::Text(_) => DataType::Utf8,
            Body::Float(_) => DataType::Float64,
            Body::Int(_) => DataType::Int64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let mut inputs = args
            .args
            .iter()
            .map(|a| TextArg::new(self.name, a))
            .collect::<Result<Vec<_>>>()?;
        let left_out = self
            .defaults
            .get(inputs.len().saturating_sub(self.required)..)
            .unwrap_or_default();
        inputs.extend(left_out.iter().map(|d| TextArg::Scalar(Some(d))));

        let all_scalar = inputs.iter().all(|a| matches!(a, TextArg::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let out: ArrayRef = match self.body {
            Body::Text(f) => Arc::new(each_row(&inputs, rows, f).collect::<StringArray>()),
            Body::Float(f) => Arc::new(each_row(&inputs, rows, f).collect::<Float64Array>()),
            Body::Int(f) => Arc::new(each_row(&inputs, rows, f).collect::<Int64Array>()),
        };
        if all_scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// `f` of each row's texts; NULL where any argument is NULL.
fn each_row<'a, T: 'a>(
    inputs: &'a [TextArg<'a>],
    rows: usize,
    f: fn(&[&str]) -> Option<T>,
) -> impl Iterator<Item = Option<T>> + 'a {
    let mut texts = Vec::with_capacity(inputs.len());
    (0..rows).map(move |i| {
        texts.clear();
        for input in inputs {
            texts.push(input.get(i)?);
        }
        f(&texts)
    })
}

/// One argument, read as text whatever its string type.
pub(super) enum TextArg<'a> {
    Scalar(Option<&'a str>),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
}

impl<'a> TextArg<'a> {
    pub(super) fn new(function: &str, value: &'a ColumnarValue) -> Result<Self> {
        let array = match value {
            ColumnarValue::Scalar(s) => match s.try_as_str() {
                Some(text) => return Ok(TextArg::Scalar(text)),
                None => return exec_err!("{function}: expected text, got {}", s.data_type()),
            },
            ColumnarValue::Array(a) => a.as_ref(),
        };
        Ok(match array.data_type() {
            DataType::Utf8 => TextArg::Utf8(as_string_array(array)?),
            DataType::LargeUtf8 => TextArg::LargeUtf8(as_large_string_array(array)?),
            DataType::Utf8View => TextArg::Utf8View(as_string_view_array(array)?),
            other => return exec_err!("{function}: expected text, got {other}"),
        })
    }

    pub(super) fn get(&self, i: usize) -> Option<&'a str> {
        fn at<'b>(a: &'b impl Array, i: usize, value: impl FnOnce() -> &'b str) -> Option<&'b str> {
            (!a.is_null(i)).then(value)
        }
        match self {
            TextArg::Scalar(s) => *s,
            TextArg::Utf8(a) => at(*a, i, || a.value(i)),
            TextArg::LargeUtf8(a) => at(*a, i, || a.value(i)),
            TextArg::Utf8View(a) => at(*a, i, || a.value(i)),
        }
    }
}

/// Runs SQL with every crm-marts function registered, for the functions' tests.
#[cfg(test)]
pub(super) mod testing {
    use datafusion::common::ScalarValue;
    use datafusion::prelude::SessionContext;

    /// The rows of the query's result, each as its column values.
    pub(in crate::functions) async fn rows(sql: &str) -> Vec<Vec<ScalarValue>> {
        let ctx = SessionContext::new();
        crate::functions::register_all(&ctx, &Default::default());
        let batches = ctx
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .collect()
            .await
            .unwrap();
        let mut out = Vec::new();
        for batch in batches {
            for i in 0..batch.num_rows() {
                out.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| ScalarValue::try_from_array(c.as_ref(), i).unwrap())
                        .collect(),
                );
            }
        }
        out
    }

    /// The only row of the query's result.
    pub(in crate::functions) async fn row(sql: &str) -> Vec<ScalarValue> {
        let mut all = rows(sql).await;
        assert_eq!(all.len(), 1, "{sql}");
        all.remove(0)
    }

    pub(in crate::functions) fn text(s: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(s.to_string()))
    }

    pub(in crate::functions) fn null_text() -> ScalarValue {
        ScalarValue::Utf8(None)
    }

    /// `sql_expr` with `{}` replaced by each literal in each string type, as a column and
    /// as a scalar: the function must give the same results for all of them.
    pub(in crate::functions) async fn same_for_every_string_type(
        sql_expr: &str,
        values: &[Option<&str>],
    ) -> Vec<ScalarValue> {
        let literals: Vec<String> = values
            .iter()
            .map(|v| {
                v.map_or("NULL".to_string(), |s| {
                    format!("'{}'", s.replace('\'', "''"))
                })
            })
            .collect();
        let table = literals
            .iter()
            .enumerate()
            .map(|(i, l)| format!("({i}, {l})"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut expected: Option<Vec<ScalarValue>> = None;
        for ty in ["Utf8", "LargeUtf8", "Utf8View"] {
            let column = sql_expr.replace("{}", &format!("arrow_cast(v, '{ty}')"));
            let sql = format!("SELECT {column} FROM (VALUES {table}) AS t(i, v) ORDER BY i");
            let got: Vec<ScalarValue> = rows(&sql)
                .await
                .into_iter()
                .map(|mut r| r.remove(0))
                .collect();
            let mut scalars = Vec::new();
            for l in &literals {
                let expr = sql_expr.replace("{}", &format!("arrow_cast({l}, '{ty}')"));
                scalars.push(row(&format!("SELECT {expr}")).await.remove(0));
            }
            assert_eq!(
                got, scalars,
                "{sql_expr} over a {ty} column vs {ty} scalars"
            );
            match &expected {
                Some(e) => assert_eq!(&got, e, "{sql_expr} over {ty}"),
                None => expected = Some(got),
            }
        }
        expected.unwrap()
    }

    #[tokio::test]
    async fn dictionary_encoded_text_is_read_as_text() {
        let got = rows(
            "SELECT normalize_name(arrow_cast(v, 'Dictionary(Int32, Utf8)')), \
                        jaro_winkler(arrow_cast(v, 'Dictionary(Int32, Utf8)'), 'Søren') \
                        FROM (VALUES (1, 'Søren'), (2, NULL)) AS t(i, v) ORDER BY i",
        )
        .await;
        assert_eq!(got[0], vec![text("soren"), ScalarValue::Float64(Some(1.0))]);
        assert_eq!(got[1], vec![null_text(), ScalarValue::Float64(None)]);
    }

    #[tokio::test]
    async fn text_functions_do_not_shadow_datafusion_builtins() {
        let builtins = SessionContext::new().state().scalar_functions().clone();
        for f in crate::functions::functions(&Default::default()) {
            assert!(
                !builtins.contains_key(f.name()),
                "{} is a DataFusion built-in",
                f.name()
            );
        }
    }
}
