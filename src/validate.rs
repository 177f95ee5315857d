//! Validation beyond the YAML: every SQL model is planned against the declared source
//! schemas (empty tables, no storage touched), so unknown columns, type errors and
//! undocumented mart columns are found before a run, each at its file, line and column.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::catalog::MemTable;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;

use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::params::{ParamType, ParamValue, Params};
use crate::config::pipeline::{Pipeline, StepKind};
use crate::sources::arrow_type;
use crate::sql::error_diagnostic;
use crate::steps::BuiltinStep;

/// A stand-in value of each type for parameters that have no default.
fn sample_value(kind: ParamType) -> ParamValue {
    match kind {
        ParamType::Date => {
            ParamValue::Date(chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date"))
        }
        ParamType::Int => ParamValue::Int(1),
        ParamType::Float => ParamValue::Float(1.0),
        ParamType::String => ParamValue::String("x".into()),
        ParamType::Bool => ParamValue::Bool(true),
    }
}

/// A built-in step's tables have schemas that depend on its configuration (the identity
/// pairs table has a level and a weight column per comparison). The step runs here on its
/// inputs as validation sees them, empty tables of the declared schemas, which is quick and
/// gives its tables exactly as a run would shape them, so the SQL after it is planned too.
/// A step that cannot run on empty input leaves its tables unknown, and the steps that
/// read them are not planned.
async fn register_builtin_outputs(
    ctx: &SessionContext,
    name: &str,
    builtin: &dyn BuiltinStep,
    params: &Params,
) {
    let placement = crate::engine::Placement::local();
    let work_dir = std::env::temp_dir();
    let env = crate::steps::StepEnv {
        name,
        placement: &placement,
        work_dir: &work_dir,
    };
    let Ok(out) = PLANNING.scope((), builtin.run(ctx, params, &env)).await else {
        return;
    };
    register_schema(ctx, name, &out.frame);
    for (suffix, frame) in out.tables {
        register_schema(ctx, &format!("{name}_{suffix}"), &frame);
    }
}

/// Registers a planned table as an empty table of its schema, not as a view: the models
/// after it are planned against its name (their plans, and so their lineage, stop at
/// it) without planning it again.
fn register_schema(ctx: &SessionContext, name: &str, df: &DataFrame) {
    let schema = Arc::new(df.schema().as_arrow().clone());
    if let Ok(table) = MemTable::try_new(schema, vec![vec![]]) {
        let _ = ctx.register_table(name, Arc::new(table));
    }
}

tokio::task_local! {
    static PLANNING: ();
}

/// Whether the step being run is only planned by `validate` (on empty inputs), so that it
/// does not warn about what an empty input would mean in a run.
pub fn planning() -> bool {
    PLANNING.try_with(|_| ()).is_ok()
}

/// Plans every step it can. Steps downstream of a source without a declared schema are
/// skipped: their input schemas are only known at run time.
pub async fn plan_pipeline(pipeline: &Pipeline) -> Diagnostics {
    plan_context(pipeline).await.0
}

/// Plans every step it can (see [`plan_pipeline`]) and returns the problems with a
/// session in which each planned table is registered as an empty table of its schema.
pub async fn plan_context(pipeline: &Pipeline) -> (Diagnostics, SessionContext) {
    let (diags, ctx, _) = plan_models(pipeline).await;
    (diags, ctx)
}

/// [`plan_context`], with the logical plan of each SQL model that planned (for lineage).
pub async fn plan_models(
    pipeline: &Pipeline,
) -> (
    Diagnostics,
    SessionContext,
    std::collections::BTreeMap<String, datafusion::logical_expr::LogicalPlan>,
) {
    let mut plans = std::collections::BTreeMap::new();
    let mut diags = Diagnostics::default();
    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new()
            .set_bool("datafusion.sql_parser.collect_spans", true),
    );
    crate::functions::register_all(&ctx, &Default::default());
    let params: Params = pipeline
        .parameters
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                p.default.clone().unwrap_or_else(|| sample_value(p.kind)),
            )
        })
        .collect();
    for source in &pipeline.sources {
        let Some(columns) = &source.schema else {
            continue;
        };
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.kind), !c.required))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        if let Ok(table) = MemTable::try_new(schema, vec![vec![]]) {
            let _ = ctx.register_table(source.name.as_str(), Arc::new(table));
        }
    }
    for step in &pipeline.steps {
        if !step
            .depends_on
            .iter()
            .all(|d| ctx.table_exist(d.as_str()).unwrap_or(false))
        {
            continue;
        }
        let model = match &step.kind {
            StepKind::Sql(model) => model,
            StepKind::Builtin { step: builtin, .. } => {
                register_builtin_outputs(&ctx, &step.name, builtin.as_ref(), &params).await;
                // A step that does not run on empty inputs is planned with its contract's
                // schema, so that the SQL after it is planned (and unit-tested) too.
                if !ctx.table_exist(step.name.as_str()).unwrap_or(false) {
                    if let Some(schema) = step
                        .spec
                        .as_ref()
                        .and_then(crate::contract::contract_schema)
                    {
                        if let Ok(table) = MemTable::try_new(Arc::new(schema), vec![vec![]]) {
                            let _ = ctx.register_table(step.name.as_str(), Arc::new(table));
                        }
                    }
                }
                if let (Some(spec), Ok(table)) = (&step.spec, ctx.table(step.name.as_str()).await) {
                    for v in
                        crate::contract::violations(&step.name, spec, table.schema().as_arrow())
                    {
                        diags.push(Diagnostic::new(&spec.file, v.message).at_opt(v.at));
                    }
                }
                continue;
            }
        };
        let statement = match model.bind(&params) {
            Ok(s) => s,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let state = ctx.state();
        let plan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                statement,
            )))
            .await;
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                diags.push(error_diagnostic(&model.file, &e));
                continue;
            }
        };
        plans.insert(step.name.clone(), plan.clone());
        let df = DataFrame::new(state, plan);
        if let Some(spec) = &step.spec {
            let yml = &spec.file;
            let actual: Vec<String> = df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            if spec.contract {
                for v in crate::contract::violations(&step.name, spec, df.schema().as_arrow()) {
                    diags.push(Diagnostic::new(yml, v.message).at_opt(v.at));
                }
            } else {
                for c in &spec.columns {
                    if !actual.contains(&c.name) {
                        diags.push(
                            Diagnostic::new(
                                yml,
                                format!(
                                    "documented column `{}` is not produced by {}",
                                    c.name,
                                    model.file.display()
                                ),
                            )
                            .at_opt(c.at),
                        );
                    }
                }
                for name in &actual {
                    if spec.column(name).is_none() {
                        diags.push(Diagnostic::new(
                            yml,
                            format!("column `{name}` of `{}` is not documented", step.name),
                        ));
                    }
                }
            }
            for check in &spec.checks {
                if let Some(c) = &check.column {
                    if !actual.contains(c) {
                        diags.push(Diagnostic::new(
                            yml,
                            format!(
                                "check {} names a column the table does not have",
                                check.label()
                            ),
                        ));
                    }
                }
            }
        }
        register_schema(&ctx, &step.name, &df);
    }
    (diags, ctx, plans)
}

/// Breaking changes of contracted marts: for each mart with `contract: enforced` whose
/// published version can be read from `store`, what its readers would lose if the model as
/// planned in `ctx` (see [`plan_context`]) replaced it. Marts never published have nothing
/// to break. Returns the problems and notes on marts whose published schema could not be
/// read.
pub async fn breaking_changes(
    pipeline: &Pipeline,
    ctx: &SessionContext,
    store: &crate::storage::Store,
) -> (Diagnostics, Vec<String>) {
    let mut diags = Diagnostics::default();
    let mut notes = Vec::new();
    for step in &pipeline.steps {
        let (Some(spec), Some(sink)) = (&step.spec, &step.publish) else {
            continue;
        };
        if !spec.contract {
            continue;
        }
        let Ok(planned) = ctx.table(step.name.as_str()).await else {
            continue;
        };
        let planned = planned.schema().as_arrow().clone();
        match crate::publish::live_schema(store, &step.name).await {
            Ok(None) => {}
            Ok(Some(published)) => {
                for (column, message) in crate::contract::breaking_changes(
                    &step.name,
                    &published,
                    &planned,
                    &sink.partition_by,
                ) {
                    let at = spec.column(&column).and_then(|c| c.at);
                    diags.push(
                        Diagnostic::new(&spec.file, format!("{message} (published in {}); its readers would break; `validate --published --allow-breaking` accepts it once they are updated", store.display_url))
                            .at_opt(at),
                    );
                }
            }
            Err(e) => notes.push(format!(
                "mart `{}`: cannot read the published version's schema: {e}",
                step.name
            )),
        }
    }
    (diags, notes)
}
