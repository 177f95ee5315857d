//! `damerau_levenshtein(a, b)`: the fewest insertions, deletions, substitutions and
//! swaps of adjacent characters that turn `a` into `b` (unrestricted Damerau-Levenshtein),
//! as a BIGINT. DataFusion's built-in `levenshtein(a, b)` counts a swap as two edits.
//! NULL when either is NULL.

use datafusion::logical_expr::ScalarUDF;

use super::text::{Body, TextFn};

pub fn udf() -> ScalarUDF {
    TextFn::udf(
        "damerau_levenshtein",
        2,
        Body::Int(|t| i64::try_from(crm_text::damerau_levenshtein(t[0], t[1])).ok()),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::common::ScalarValue;

    use super::super::text::testing::{row, same_for_every_string_type};

    #[tokio::test]
    async fn a_swap_is_one_edit() {
        let got = row(
            "SELECT damerau_levenshtein('jensen', 'jesnen'), levenshtein('jensen', 'jesnen'), \
                       damerau_levenshtein('', 'abc'), damerau_levenshtein(NULL, 'abc')",
        )
        .await;
        assert_eq!(got[0], ScalarValue::Int64(Some(1)));
        assert_eq!(
            got[2..],
            [ScalarValue::Int64(Some(3)), ScalarValue::Int64(None)]
        );
    }

    #[tokio::test]
    async fn every_string_type_scalar_or_column() {
        let got = same_for_every_string_type(
            "damerau_levenshtein('søren', {})",
            &[Some("søern"), None, Some("søren")],
        )
        .await;
        assert_eq!(
            got,
            vec![
                ScalarValue::Int64(Some(1)),
                ScalarValue::Int64(None),
                ScalarValue::Int64(Some(0))
            ]
        );
    }
}
