//! `keyed_hash(value)`: HMAC-SHA256 of a text under the environment's secret key, as
//! lower-case hex. Marts carry this instead of raw e-mails, phones, names or streets:
//! equal inputs give equal hashes, so BI tools can count and join, but without the
//! key nobody can test a guess. NULL in, NULL out.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_string_array;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};
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
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
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
        f.debug_struct("KeyedHash").field("key", &self.key.as_ref().map(|_| "<redacted>")).finish()
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
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let input = as_string_array(&arrays[0])?;
        let out: StringArray = input.iter().map(|v| v.map(|s| self.hash(&mac, s))).collect();
        let out: ArrayRef = Arc::new(out);
        if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) && out.len() == 1 {
            return Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn hash_of(key: Option<&str>, sql: &str) -> Result<Vec<Option<String>>> {
        let ctx = SessionContext::new();
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(KeyedHash::new(key.map(String::from))));
        let batches = ctx.sql(sql).await?.collect().await?;
        let col = as_string_array(batches[0].column(0))?.iter().map(|v| v.map(String::from)).collect();
        Ok(col)
    }

    #[tokio::test]
    async fn matches_rfc_4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let got = hash_of(Some("Jefe"), "SELECT keyed_hash('what do ya want for nothing?')").await.unwrap();
        assert_eq!(got[0].as_deref(), Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
    }

    #[tokio::test]
    async fn nulls_stay_null_and_a_missing_key_is_a_clear_error() {
        let got = hash_of(Some("k"), "SELECT keyed_hash(CAST(NULL AS VARCHAR))").await.unwrap();
        assert_eq!(got, vec![None]);
        let err = hash_of(None, "SELECT keyed_hash('x')").await.unwrap_err().to_string();
        assert!(err.contains("no key configured"), "{err}");
        assert!(!format!("{:?}", KeyedHash::new(Some("secret".into()))).contains("secret"));
    }
}
