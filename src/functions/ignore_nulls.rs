//! `first_value`, `last_value`, `nth_value`, `lag` and `lead` with `IGNORE NULLS`, under names of their
//! own, for queries that run on a Ballista cluster.
//!
//! DataFusion 55 serialises a physical window function without its `IGNORE NULLS`
//! (`serialize_physical_window_expr` writes `ignore_nulls: false` for every window UDF), so
//! an executor would carry a null forward where the local engine skips it: the marts would
//! silently differ. On a cluster the client's analyzer rewrites each such call to
//! `<name>_ignore_nulls`, a function that ignores nulls whatever the plan says and that
//! travels by name like any other. The column keeps its name, and the SQL stays standard.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    Expr, LimitEffect, LogicalPlan, PartitionEvaluator, ReversedUDWF, Signature,
    WindowFunctionDefinition, WindowUDF, WindowUDFImpl,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::PhysicalExpr;

const WRAPPED: [&str; 5] = ["first_value", "last_value", "nth_value", "lag", "lead"];

/// A window function that always ignores nulls.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IgnoringNulls {
    inner: Arc<WindowUDF>,
    name: String,
}

fn ignoring_nulls(inner: Arc<WindowUDF>) -> Arc<WindowUDF> {
    let name = format!("{}_ignore_nulls", inner.name());
    Arc::new(WindowUDF::new_from_impl(IgnoringNulls { inner, name }))
}

impl WindowUDFImpl for IgnoringNulls {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn expressions(
        &self,
        expr_args: datafusion::logical_expr::function::ExpressionArgs,
    ) -> Vec<Arc<dyn PhysicalExpr>> {
        self.inner.expressions(expr_args)
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let args = PartitionEvaluatorArgs::new(
            args.input_exprs(),
            args.input_fields(),
            args.is_reversed(),
            true,
        );
        self.inner.partition_evaluator_factory(args)
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        self.inner.field(field_args)
    }

    fn sort_options(&self) -> Option<SortOptions> {
        self.inner.sort_options()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn reverse_expr(&self) -> ReversedUDWF {
        match self.inner.reverse_expr() {
            ReversedUDWF::Reversed(reversed) => ReversedUDWF::Reversed(ignoring_nulls(reversed)),
            other => other,
        }
    }

    fn limit_effect(&self, args: &[Arc<dyn PhysicalExpr>]) -> LimitEffect {
        self.inner.inner().limit_effect(args)
    }
}

/// The `_ignore_nulls` functions, for the registries of the client, scheduler and executors.
pub fn functions() -> Vec<Arc<WindowUDF>> {
    datafusion::functions_window::all_default_window_functions()
        .into_iter()
        .filter(|f| WRAPPED.contains(&f.name()))
        .map(ignoring_nulls)
        .collect()
}

/// Rewrites `first_value`/`last_value`/`nth_value(...) IGNORE NULLS` windows to the
/// functions above (see the module's documentation).
#[derive(Debug, Default)]
pub struct IgnoreNullsOnCluster;

impl AnalyzerRule for IgnoreNullsOnCluster {
    fn name(&self) -> &str {
        "crm_marts_ignore_nulls_on_cluster"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        super::rewrite_window_calls(plan, rewrite)
    }
}

/// `expr` with its window function replaced, when it is one that ignores nulls.
fn rewrite(expr: &Expr) -> Result<Option<Expr>> {
    let Expr::WindowFunction(call) = expr else {
        return Ok(None);
    };
    let WindowFunction { fun, params } = call.as_ref();
    match fun {
        WindowFunctionDefinition::WindowUDF(udf)
            if params.null_treatment
                == Some(datafusion::logical_expr::expr::NullTreatment::IgnoreNulls)
                && WRAPPED.contains(&udf.name()) =>
        {
            Ok(Some(Expr::WindowFunction(Box::new(WindowFunction {
                fun: WindowFunctionDefinition::WindowUDF(ignoring_nulls(udf.clone())),
                params: params.clone(),
            }))))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// The rewritten plan gives the same rows as the original, names its columns the same,
    /// and no longer depends on the plan's `IGNORE NULLS` flag.
    #[tokio::test]
    async fn rewritten_windows_ignore_nulls_and_keep_their_names() {
        let sql = "SELECT k, t, last_value(v) IGNORE NULLS OVER (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING) AS carried, \
                   first_value(v) IGNORE NULLS OVER (PARTITION BY k ORDER BY t DESC ROWS UNBOUNDED PRECEDING) AS next_value \
                   FROM (VALUES (1, 1, 'a'), (1, 2, NULL), (1, 3, 'b'), (1, 4, NULL), (2, 1, NULL), (2, 2, 'c')) AS x(k, t, v) ORDER BY k, t";
        let plain = SessionContext::new();
        let expected = datafusion::arrow::util::pretty::pretty_format_batches(
            &plain.sql(sql).await.unwrap().collect().await.unwrap(),
        )
        .unwrap()
        .to_string();
        let ctx = SessionContext::new();
        for f in functions() {
            ctx.register_udwf(f.as_ref().clone());
        }
        ctx.add_analyzer_rule(Arc::new(IgnoreNullsOnCluster));
        let df = ctx.sql(sql).await.unwrap();
        let plan = format!(
            "{}",
            df.clone().into_optimized_plan().unwrap().display_indent()
        );
        assert!(
            plan.contains("last_value_ignore_nulls") && plan.contains("first_value_ignore_nulls"),
            "{plan}"
        );
        let got =
            datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
                .unwrap()
                .to_string();
        assert_eq!(got, expected);
        assert!(
            expected.contains("| 1 | 2 | a       | b          |"),
            "{expected}"
        );
    }
}
