//! `normalize_phone(text [, default_country])`: the phone number in E.164
//! (`+4520123456`). `default_country` (ISO 3166 alpha-2, a literal or a column) is the
//! country of numbers written without a country code, 'DK' when left out. NULL when the
//! text is not a valid number, and when either argument is NULL (use
//! `coalesce(country, 'DK')` to default a missing country). The rules are
//! `crm_text::normalize_phone`'s.

use datafusion::logical_expr::ScalarUDF;

use super::text::{Body, TextFn};

pub fn udf() -> ScalarUDF {
    TextFn::with_defaults(
        "normalize_phone",
        1,
        &[crm_text::DEFAULT_COUNTRY],
        Body::Text(|t| crm_text::normalize_phone(t[0], t[1])),
    )
}

#[cfg(test)]
mod tests {
    use super::super::text::testing::{null_text, row, rows, same_for_every_string_type, text};

    #[tokio::test]
    async fn the_three_danish_formats_meet() {
        let got = row("SELECT normalize_phone('+45 20 12 34 56'), normalize_phone('0045-20123456'), \
                       normalize_phone('20123456'), normalize_phone('20123456', 'DK'), normalize_phone('n/a')")
            .await;
        let want = text("+4520123456");
        assert_eq!(
            got,
            vec![want.clone(), want.clone(), want.clone(), want, null_text()]
        );
    }

    #[tokio::test]
    async fn country_from_a_column_and_nulls() {
        let got = rows("SELECT normalize_phone(n, c) FROM (VALUES (1, '070-123 45 67', 'SE'), (2, '20123456', 'dk'), \
                        (3, '20123456', NULL), (4, NULL, 'DK'), (5, '+45 20123456', 'SE')) AS t(i, n, c) ORDER BY i")
            .await;
        let got: Vec<_> = got.into_iter().map(|mut r| r.remove(0)).collect();
        assert_eq!(
            got,
            vec![
                text("+46701234567"),
                text("+4520123456"),
                null_text(),
                null_text(),
                text("+4520123456")
            ]
        );
    }

    #[tokio::test]
    async fn every_string_type_scalar_or_column() {
        let values = [Some("0045-20123456"), None, Some(""), Some("2012345")];
        let want = vec![text("+4520123456"), null_text(), null_text(), null_text()];
        assert_eq!(
            same_for_every_string_type("normalize_phone({})", &values).await,
            want
        );
        assert_eq!(
            same_for_every_string_type(
                "normalize_phone({}, arrow_cast('DK', 'Utf8View'))",
                &values
            )
            .await,
            want
        );
        let swapped = same_for_every_string_type(
            "normalize_phone('070-123 45 67', {})",
            &[Some("SE"), None, Some("XX")],
        )
        .await;
        assert_eq!(
            swapped,
            vec![text("+46701234567"), null_text(), null_text()]
        );
    }
}
