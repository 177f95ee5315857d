//! `normalize_email(text)`: the e-mail address as a matching key: trimmed, lower case,
//! Gmail's dots and `+tag` dropped and `googlemail.com` read as `gmail.com`; NULL when
//! the text is not an address. The rules are `crm_text::normalize_email`'s.

use datafusion::logical_expr::ScalarUDF;

use super::text::{Body, TextFn};

pub fn udf() -> ScalarUDF {
    TextFn::udf(
        "normalize_email",
        1,
        Body::Text(|t| crm_text::normalize_email(t[0])),
    )
}

#[cfg(test)]
mod tests {
    use super::super::text::testing::{null_text, row, same_for_every_string_type, text};

    #[tokio::test]
    async fn normalises_in_sql() {
        let got = row("SELECT normalize_email(' Anna.Jensen+tilbud@GoogleMail.com '), normalize_email('Bo@Example.DK'), \
                       normalize_email('bo@@example.dk'), normalize_email(NULL)")
            .await;
        assert_eq!(
            got,
            vec![
                text("annajensen@gmail.com"),
                text("bo@example.dk"),
                null_text(),
                null_text()
            ]
        );
    }

    #[tokio::test]
    async fn every_string_type_scalar_or_column() {
        let values = [Some("A.B@gmail.com"), None, Some(""), Some("x@y.dk")];
        let got = same_for_every_string_type("normalize_email({})", &values).await;
        assert_eq!(
            got,
            vec![
                text("ab@gmail.com"),
                null_text(),
                null_text(),
                text("x@y.dk")
            ]
        );
    }
}
