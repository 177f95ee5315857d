//! `normalize_name(text)`: a matching key for a person's name: lower case ASCII, one
//! space between words (hyphens too), accents folded and Nordic letters meeting their
//! ASCII spellings (`Østergaard`, `Oestergaard`, `Ostergaard` all give `ostergard`).
//! NULL when no letter or digit is left. The rule and its trade-offs are
//! `crm_text::normalize_name`'s.

use datafusion::logical_expr::ScalarUDF;

use super::text::{Body, TextFn};

pub fn udf() -> ScalarUDF {
    TextFn::udf(
        "normalize_name",
        1,
        Body::Text(|t| crm_text::normalize_name(t[0])),
    )
}

#[cfg(test)]
mod tests {
    use super::super::text::testing::{null_text, row, same_for_every_string_type, text};

    #[tokio::test]
    async fn nordic_spellings_meet() {
        let got = row("SELECT normalize_name('Østergaard'), normalize_name('Oestergaard'), normalize_name('Ostergaard'), \
                       normalize_name('  Søren  Jørgensen-Kjær '), normalize_name('-'), normalize_name(NULL)")
            .await;
        let o = text("ostergard");
        assert_eq!(
            got,
            vec![
                o.clone(),
                o.clone(),
                o,
                text("soren jorgensen kjar"),
                null_text(),
                null_text()
            ]
        );
    }

    #[tokio::test]
    async fn every_string_type_scalar_or_column() {
        let values = [Some("Jørgensen"), None, Some("Joergensen"), Some("😀")];
        let got = same_for_every_string_type("normalize_name({})", &values).await;
        assert_eq!(
            got,
            vec![
                text("jorgensen"),
                null_text(),
                text("jorgensen"),
                null_text()
            ]
        );
    }
}
