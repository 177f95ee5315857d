//! `describe`: a column profile of any table, for data engineers checking an export.

use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Deserialize;

use super::{with_block, BuiltinOutput, BuiltinStep};
use crate::config::params::Params;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DescribeConfig {
    /// The table to profile.
    table: String,
}

#[derive(Debug)]
struct Describe {
    table: String,
}

pub fn compile(with: &serde_yaml::Value) -> Result<Box<dyn BuiltinStep>, String> {
    let config: DescribeConfig = with_block(with)?;
    Ok(Box::new(Describe {
        table: config.table.to_lowercase(),
    }))
}

impl BuiltinStep for Describe {
    fn inputs(&self) -> Vec<String> {
        vec![self.table.clone()]
    }

    fn run<'a>(
        &'a self,
        ctx: &'a SessionContext,
        _params: &'a Params,
        _env: &'a super::StepEnv<'a>,
    ) -> BoxFuture<'a, datafusion::error::Result<BuiltinOutput>> {
        async move {
            Ok(ctx
                .table(self.table.as_str())
                .await?
                .describe()
                .await?
                .into())
        }
        .boxed()
    }
}
