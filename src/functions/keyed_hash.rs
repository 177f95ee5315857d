//! `keyed_hash(value)`: HMAC-SHA256 of a text under the environment's secret key, as
//! lower-case hex. Marts carry this instead of raw e-mails, phones, names or streets:
//! equal inputs give equal hashes, so BI tools can count and join, but without the
//! key nobody can test a guess. NULL in, NULL out.
//!
//! On a cluster every executor hashes with the key of its own environment file. So that
//! an executor with another key fails the query instead of writing hashes that join with
//! nothing, the client adds its key's fingerprint to each call (`keyed_hash(value,
//! fingerprint)`, see [`KeyCheckOnCluster`]) and the function checks it against its own.
//! The fingerprint is an HMAC of a fixed text under the key: it tells keys apart without
//! revealing one, and says no more about the key than any hash in a mart does.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_string_array;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    lit, ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub struct KeyedHash {
    key: Option<Vec<u8>>,
    signature: Signature,
}

impl KeyedHash {
    pub fn new(key: Option<String>) -> Self {
        Self {
            key: key.filter(|k| !k.is_empty()).map(String::into_bytes),
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                ],
                Volatility::Immutable,
            ),
        }
    }

    fn hash(&self, mac: &Hmac<Sha256>, value: &str) -> String {
        let mut m = mac.clone();
        m.update(value.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedHash")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PartialEq for KeyedHash {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for KeyedHash {}

impl Hash for KeyedHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "keyed_hash".hash(state);
    }
}

impl ScalarUDFImpl for KeyedHash {
    fn name(&self) -> &str {
        "keyed_hash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(key) = &self.key else {
            return Err(DataFusionError::Configuration(
                "keyed_hash: no key configured; set privacy.hash_key in the environment file (e.g. ${CRM_MARTS_HASH_KEY})".into(),
            ));
        };
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|e| DataFusionError::Execution(format!("keyed_hash: {e}")))?;
        if let Some(expected) = args.args.get(1) {
            let ColumnarValue::Scalar(ScalarValue::Utf8(Some(expected))) = expected else {
                return Err(DataFusionError::Plan("keyed_hash: the second argument is the client's key fingerprint, a text literal".into()));
            };
            if *expected != self.hash(&mac, FINGERPRINT_TEXT)[..FINGERPRINT_LEN] {
                return Err(DataFusionError::Configuration(
                    "keyed_hash: this process's hash key differs from the client's; give the client and every executor the same privacy.hash_key".into(),
                ));
            }
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args[..1])?;
        let input = as_string_array(&arrays[0])?;
        let out: StringArray = input
            .iter()
            .map(|v| v.map(|s| self.hash(&mac, s)))
            .collect();
        let out: ArrayRef = Arc::new(out);
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
            && out.len() == 1
        {
            return Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&out, 0)?,
            ));
        }
        Ok(ColumnarValue::Array(out))
    }
}

const FINGERPRINT_TEXT: &str = "crm-marts keyed_hash key fingerprint";
const FINGERPRINT_LEN: usize = 16;

/// The fingerprint of `key`: the first 16 hex digits of its HMAC of a fixed text.
pub fn fingerprint(key: &str) -> String {
    let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    KeyedHash::new(Some(key.to_string())).hash(&mac, FINGERPRINT_TEXT)[..FINGERPRINT_LEN]
        .to_string()
}

/// On a cluster, adds the client's key fingerprint to every `keyed_hash(value)` call (see
/// the module's documentation). An output column keeps its name.
#[derive(Debug)]
pub struct KeyCheckOnCluster {
    fingerprint: String,
}

impl KeyCheckOnCluster {
    pub fn new(key: &str) -> Self {
        Self {
            fingerprint: fingerprint(key),
        }
    }

    fn add_fingerprint(&self, expr: Expr) -> Result<Transformed<Expr>> {
        expr.transform_up(|e| match e {
            Expr::ScalarFunction(mut call)
                if call.func.name() == "keyed_hash" && call.args.len() == 1 =>
            {
                call.args.push(lit(self.fingerprint.clone()));
                Ok(Transformed::yes(Expr::ScalarFunction(call)))
            }
            other => Ok(Transformed::no(other)),
        })
    }
}

impl AnalyzerRule for KeyCheckOnCluster {
    fn name(&self) -> &str {
        "crm_marts_key_check_on_cluster"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            // Expressions that name an output column keep the name they had.
            let names_columns = matches!(
                node,
                LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
            );
            node.map_expressions(|e| {
                let name = (names_columns && !matches!(e, Expr::Alias(_)))
                    .then(|| e.schema_name().to_string());
                let rewritten = self.add_fingerprint(e)?;
                match name {
                    Some(name) if rewritten.transformed => {
                        Ok(rewritten.update_data(|e| e.alias(name)))
                    }
                    _ => Ok(rewritten),
                }
            })
        })
        .map(|t| t.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn hash_of(key: Option<&str>, sql: &str) -> Result<Vec<Option<String>>> {
        let ctx = SessionContext::new();
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(KeyedHash::new(
            key.map(String::from),
        )));
        let batches = ctx.sql(sql).await?.collect().await?;
        let col = as_string_array(batches[0].column(0))?
            .iter()
            .map(|v| v.map(String::from))
            .collect();
        Ok(col)
    }

    #[tokio::test]
    async fn matches_rfc_4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let got = hash_of(
            Some("Jefe"),
            "SELECT keyed_hash('what do ya want for nothing?')",
        )
        .await
        .unwrap();
        assert_eq!(
            got[0].as_deref(),
            Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[tokio::test]
    async fn nulls_stay_null_and_a_missing_key_is_a_clear_error() {
        let got = hash_of(Some("k"), "SELECT keyed_hash(CAST(NULL AS VARCHAR))")
            .await
            .unwrap();
        assert_eq!(got, vec![None]);
        let err = hash_of(None, "SELECT keyed_hash('x')")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no key configured"), "{err}");
        assert!(!format!("{:?}", KeyedHash::new(Some("secret".into()))).contains("secret"));
    }

    /// With the client's fingerprint added, a process with the same key hashes as before
    /// (the column keeps its name) and one with another key, or none, refuses.
    #[tokio::test]
    async fn a_process_with_another_key_refuses_the_clients_calls() {
        let sql = "SELECT keyed_hash(v), upper(keyed_hash(v)) AS shouted, count(*) FROM (VALUES ('a'), ('b'), (NULL)) AS t(v) GROUP BY keyed_hash(v) ORDER BY 2";
        let run = |process_key: Option<&str>, check: bool| {
            let sql = sql.to_string();
            let process_key = process_key.map(String::from);
            async move {
                let ctx = SessionContext::new();
                ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(KeyedHash::new(
                    process_key,
                )));
                if check {
                    ctx.add_analyzer_rule(Arc::new(KeyCheckOnCluster::new("client-key")));
                }
                let df = ctx.sql(&sql).await?;
                let names: Vec<String> = df
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let plan = format!("{}", df.clone().into_unoptimized_plan().display_indent());
                let rows =
                    datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await?)?
                        .to_string();
                Ok::<_, DataFusionError>((names, plan, rows))
            }
        };
        let (names, _, expected) = run(Some("client-key"), false).await.unwrap();
        let (checked_names, _, got) = run(Some("client-key"), true).await.unwrap();
        assert_eq!(checked_names, names);
        assert_eq!(got, expected);
        let err = run(Some("other-key"), true).await.unwrap_err().to_string();
        assert!(err.contains("differs from the client's"), "{err}");
        let err = run(None, true).await.unwrap_err().to_string();
        assert!(err.contains("no key configured"), "{err}");
        assert_eq!(fingerprint("client-key").len(), 16);
        assert_ne!(fingerprint("client-key"), fingerprint("other-key"));
    }
}
