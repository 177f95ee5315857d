//! `jaro_winkler(a, b)`: Jaro-Winkler similarity of two texts, 0.0 to 1.0, favouring a
//! shared prefix; compares characters as given, so normalise first
//! (`jaro_winkler(normalize_name(a), normalize_name(b))`). NULL when either is NULL.

use datafusion::logical_expr::ScalarUDF;

use super::text::{Body, TextFn};

pub fn udf() -> ScalarUDF {
    TextFn::udf(
        "jaro_winkler",
        2,
        Body::Float(|t| Some(crm_text::jaro_winkler(t[0], t[1]))),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::common::ScalarValue;

    use super::super::text::testing::{row, same_for_every_string_type};

    #[tokio::test]
    async fn scores_in_sql() {
        let got = row("SELECT jaro_winkler('martha', 'marhta'), jaro_winkler('jensen', 'jensen'), jaro_winkler('abc', NULL), \
                       jaro_winkler(normalize_name('Søren'), normalize_name('Soeren'))")
            .await;
        let ScalarValue::Float64(Some(martha)) = got[0] else {
            panic!("{got:?}")
        };
        assert!((martha - 0.9611).abs() < 1e-4);
        assert_eq!(
            got[1..],
            [
                ScalarValue::Float64(Some(1.0)),
                ScalarValue::Float64(None),
                ScalarValue::Float64(Some(1.0))
            ]
        );
    }

    #[tokio::test]
    async fn every_string_type_scalar_or_column() {
        let got = same_for_every_string_type(
            "jaro_winkler({}, 'jensen')",
            &[Some("jensen"), None, Some("")],
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
