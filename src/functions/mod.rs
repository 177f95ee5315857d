//! SQL functions crm-marts adds to DataFusion, one per file, registered in one place.

mod clv;
mod damerau_levenshtein;
mod double_metaphone;
pub mod exact_sum;
mod identity_level;
pub mod ignore_nulls;
mod jaro_winkler;
mod keyed_hash;
mod normalize_email;
mod normalize_name;
mod normalize_phone;
mod normalize_postcode;
pub mod running_value;
mod text;
mod token_set_similarity;

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use keyed_hash::{KeyCheckOnCluster, KeyedHash};

/// What functions need from the environment.
#[derive(Clone, Default)]
pub struct FunctionSettings {
    /// Key of `keyed_hash`; never logged.
    pub hash_key: Option<String>,
}

impl std::fmt::Debug for FunctionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionSettings")
            .field("hash_key", &self.hash_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Every function of crm-marts.
pub fn functions(settings: &FunctionSettings) -> Vec<Arc<ScalarUDF>> {
    let mut all = vec![Arc::new(ScalarUDF::from(KeyedHash::new(
        settings.hash_key.clone(),
    )))];
    all.extend(clv::functions().into_iter().map(Arc::new));
    all.extend(
        [
            normalize_email::udf(),
            normalize_phone::udf(),
            normalize_name::udf(),
            normalize_postcode::udf(),
            jaro_winkler::udf(),
            damerau_levenshtein::udf(),
            token_set_similarity::udf(),
            double_metaphone::udf(),
            double_metaphone::alt_udf(),
            identity_level::udf(),
            identity_level::probability_udf(),
        ]
        .into_iter()
        .map(Arc::new),
    );
    all
}

/// `plan` with every window expression `rewrite` replaces swapped for its replacement,
/// under the column name it had: the walk both window analyzer rules share.
pub(crate) fn rewrite_window_calls(
    plan: datafusion::logical_expr::LogicalPlan,
    rewrite: impl Fn(
        &datafusion::logical_expr::Expr,
    ) -> datafusion::error::Result<Option<datafusion::logical_expr::Expr>>,
) -> datafusion::error::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::{Expr, LogicalPlan};
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::Window(_) => node.map_expressions(|e| match e {
            Expr::Alias(mut alias) => match rewrite(alias.expr.as_ref())? {
                Some(call) => {
                    alias.expr = Box::new(call);
                    Ok(Transformed::yes(Expr::Alias(alias)))
                }
                None => Ok(Transformed::no(Expr::Alias(alias))),
            },
            e => match rewrite(&e)? {
                Some(call) => Ok(Transformed::yes(call.alias(e.schema_name().to_string()))),
                None => Ok(Transformed::no(e)),
            },
        }),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

pub fn register_all(ctx: &SessionContext, settings: &FunctionSettings) {
    for f in functions(settings) {
        ctx.register_udf(f.as_ref().clone());
    }
    // Over the built-in `sum` and `avg`: DOUBLE sums that do not depend on partitioning.
    for f in exact_sum::functions() {
        ctx.register_udaf(f);
    }
    // Running `first_value`/`last_value ... IGNORE NULLS` in constant time per row.
    for f in running_value::functions() {
        ctx.register_udwf(f.as_ref().clone());
    }
    ctx.add_analyzer_rule(Arc::new(running_value::RunningValues));
}
