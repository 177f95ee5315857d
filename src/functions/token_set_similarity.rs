//! `token_set_similarity(a, b)`: word-set similarity, 0.0 to 1.0 (rapidfuzz's
//! `token_set_ratio` / 100): word order and repeated words do not count, a text whose
//! words are all in the other scores 1.0, a typo in one word costs little. 0.0 when
//! either text has no word, NULL when either is NULL. The definition is
//! `crm_text::token_set_similarity`'s.

use datafusion::logical_expr::ScalarUDF;

use super::text::{Body, TextFn};

pub fn udf() -> ScalarUDF {
    TextFn::udf(
        "token_set_similarity",
        2,
        Body::Float(|t| Some(crm_text::token_set_similarity(t[0], t[1]))),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::common::ScalarValue;

    use super::super::text::testing::{row, same_for_every_string_type};

    #[tokio::test]
    async fn swapped_names_match() {
        let got = row("SELECT token_set_similarity(normalize_name('Jensen, Anna'), normalize_name('anna jensen')), \
                       token_set_similarity('anna jensen', 'anna jenssen'), token_set_similarity('', 'anna'), \
                       token_set_similarity('anna', NULL)")
            .await;
        assert_eq!(got[0], ScalarValue::Float64(Some(1.0)));
        let ScalarValue::Float64(Some(typo)) = got[1] else {
            panic!("{got:?}")
        };
        assert!((typo - 22.0 / 23.0).abs() < 1e-12);
        assert_eq!(
            got[2..],
            [ScalarValue::Float64(Some(0.0)), ScalarValue::Float64(None)]
        );
    }

    #[tokio::test]
    async fn every_string_type_scalar_or_column() {
        let got = same_for_every_string_type(
            "token_set_similarity({}, 'b a')",
            &[Some("a b"), None, Some(" ")],
        )
        .await;
        assert_eq!(
            got,
            vec![
                ScalarValue::Float64(Some(1.0)),
                ScalarValue::Float64(None),
                ScalarValue::Float64(Some(0.0))
            ]
        );
    }
}
