//! `double_metaphone(text)` and `double_metaphone_alt(text)`: the primary and the
//! alternate Double Metaphone code of a name (`Schmidt`: `XMT` and `SMT`; the alternate
//! equals the primary when a name has one reading). Names sound alike when any of their
//! codes agree, so block on both. NULL when the text is NULL or has no letter: an empty
//! code would put every such row in one block. The codes are
//! `crm_text::double_metaphone`'s.

use datafusion::logical_expr::ScalarUDF;

use super::text::{Body, TextFn};

pub fn udf() -> ScalarUDF {
    TextFn::udf(
        "double_metaphone",
        1,
        Body::Text(|t| non_empty(crm_text::double_metaphone(t[0]).0)),
    )
}

pub fn alt_udf() -> ScalarUDF {
    TextFn::udf(
        "double_metaphone_alt",
        1,
        Body::Text(|t| non_empty(crm_text::double_metaphone(t[0]).1)),
    )
}

fn non_empty(code: String) -> Option<String> {
    (!code.is_empty()).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::super::text::testing::{null_text, row, same_for_every_string_type, text};

    #[tokio::test]
    async fn primary_and_alternate() {
        let got = row("SELECT double_metaphone('Schmidt'), double_metaphone_alt('Schmidt'), double_metaphone_alt('Thomas'), \
                       double_metaphone('Søren') = double_metaphone('Soren'), double_metaphone('123'), \
                       double_metaphone_alt(NULL)")
            .await;
        assert_eq!(got[..3], [text("XMT"), text("SMT"), text("TMS")]);
        assert_eq!(got[3], datafusion::common::ScalarValue::Boolean(Some(true)));
        assert_eq!(got[4..], [null_text(), null_text()]);
    }

    #[tokio::test]
    async fn every_string_type_scalar_or_column() {
        let values = [Some("Smith"), None, Some(""), Some("Schmidt")];
        let primary = same_for_every_string_type("double_metaphone({})", &values).await;
        assert_eq!(
            primary,
            vec![text("SM0"), null_text(), null_text(), text("XMT")]
        );
        let alternate = same_for_every_string_type("double_metaphone_alt({})", &values).await;
        assert_eq!(
            alternate,
            vec![text("XMT"), null_text(), null_text(), text("SMT")]
        );
    }
}
