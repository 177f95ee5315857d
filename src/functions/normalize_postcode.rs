//! `normalize_postcode(text)`: the postcode in upper case without spaces, dashes or a
//! `DK-` style country prefix (`dk-2100` gives `2100`); NULL when no digit is left.
//! The rules are `crm_text::normalize_postcode`'s.

use datafusion::logical_expr::ScalarUDF;

use super::text::{Body, TextFn};

pub fn udf() -> ScalarUDF {
    TextFn::udf(
        "normalize_postcode",
        1,
        Body::Text(|t| crm_text::normalize_postcode(t[0])),
    )
}

#[cfg(test)]
mod tests {
    use super::super::text::testing::{null_text, row, same_for_every_string_type, text};

    #[tokio::test]
    async fn prefixes_and_spaces_go() {
        let got = row("SELECT normalize_postcode('DK-2100'), normalize_postcode('sw1a 1aa'), normalize_postcode('N/A'), \
                       normalize_postcode(NULL)")
            .await;
        assert_eq!(
            got,
            vec![text("2100"), text("SW1A1AA"), null_text(), null_text()]
        );
    }

    #[tokio::test]
    async fn every_string_type_scalar_or_column() {
        let got = same_for_every_string_type(
            "normalize_postcode({})",
            &[Some(" dk - 2100"), None, Some("")],
        )
        .await;
        assert_eq!(got, vec![text("2100"), null_text(), null_text()]);
    }
}
