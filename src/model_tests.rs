//! Unit tests of SQL models (`crm-marts test`): a model's YAML may hold `tests:`, each
//! with rows given for the tables the model reads and the rows it must give. A test runs
//! the model's SQL on DataFusion over those rows only: no exports, no stores, no other
//! step. The given tables take the schemas `validate` plans for them (a source's declared
//! schema, a model's planned output, a built-in step's tables), so a given column that the
//! table does not have, or a value that does not fit its type, is an error at its line in
//! the YAML. Seeds that a test does not give are read from the project's seed files.
//!
//! ```yaml
//! tests:
//!   - name: one_order
//!     params: { as_of: 2026-11-22 }
//!     given:
//!       int_order_values:
//!         - { order_id: o1, customer_key: a, order_date: 2026-11-01, net_amount: 10.0 }
//!     expect:
//!       - { customer_key: a, frequency: 1, monetary: 10.0 }
//! ```
//!
//! Expected rows are matched in any order; each names the columns it checks. Floating-point
//! values are equal within `tolerance` (default 1e-9).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;

use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::mart::{GivenTable, UnitTestConfig};
use crate::config::params::{ParamValue, Params};
use crate::config::pipeline::{Pipeline, SourceLocation, Step, StepKind};
use crate::sql::SqlModel;

/// The key `keyed_hash` uses in unit tests: expected hashes are reproducible anywhere.
pub const TEST_HASH_KEY: &str = "crm-marts-unit-tests";

const DEFAULT_TOLERANCE: f64 = 1e-9;

/// What became of one test.
#[derive(Debug)]
pub enum Outcome {
    Passed,
    /// The model ran and gave other rows.
    Failed(Vec<String>),
    /// The test could not run as written.
    Invalid(Diagnostics),
}

#[derive(Debug)]
pub struct TestResult {
    pub model: String,
    pub test: String,
    /// `file:line:col` of the test.
    pub location: String,
    pub outcome: Outcome,
    pub duration_ms: u128,
}

/// Runs the unit tests of `pipeline`'s models (those in `select`, or all when it is empty).
pub async fn run_pipeline_tests(pipeline: &Pipeline, select: &[String]) -> Vec<TestResult> {
    let (_, planned) = crate::validate::plan_context(pipeline).await;
    let mut results = Vec::new();
    for step in &pipeline.steps {
        let (StepKind::Sql(model), Some(spec)) = (&step.kind, &step.spec) else {
            continue;
        };
        if !select.is_empty() && !select.iter().any(|s| s.eq_ignore_ascii_case(&step.name)) {
            continue;
        }
        let text = std::fs::read_to_string(&spec.file).unwrap_or_default();
        for test in &spec.tests {
            let started = Instant::now();
            let position = locate_test(&text, &test.name);
            let outcome =
                match run_test(pipeline, step, model, test, &planned, &spec.file, &text).await {
                    Ok(outcome) => outcome,
                    Err(diags) => Outcome::Invalid(diags),
                };
            let location = match position {
                Some((line, column)) => format!("{}:{line}:{column}", spec.file.display()),
                None => spec.file.display().to_string(),
            };
            results.push(TestResult {
                model: step.name.clone(),
                test: test.name.clone(),
                location,
                outcome,
                duration_ms: started.elapsed().as_millis(),
            });
        }
    }
    results
}

/// Steps that `select` names but that are not SQL models of the pipeline.
pub fn unknown_selection(pipeline: &Pipeline, select: &[String]) -> Vec<String> {
    select
        .iter()
        .filter(|s| {
            !pipeline.steps.iter().any(|step| {
                step.name.eq_ignore_ascii_case(s) && matches!(step.kind, StepKind::Sql(_))
            })
        })
        .cloned()
        .collect()
}

async fn run_test(
    pipeline: &Pipeline,
    step: &Step,
    model: &SqlModel,
    test: &UnitTestConfig,
    planned: &SessionContext,
    yml: &Path,
    text: &str,
) -> Result<Outcome, Diagnostics> {
    let test_at = locate_test(text, &test.name);
    let problem = |message: String, at: Option<(usize, usize)>| {
        Diagnostic::new(
            yml,
            format!("test `{}` of {}: {message}", test.name, step.name),
        )
        .at_opt(at.or(test_at))
    };
    let mut diags = Diagnostics::default();
    let Some(expect) = &test.expect else {
        diags.push(problem("it checks nothing: give the rows the model must produce under `expect:` (`[]` for none)".into(), None));
        return Err(diags);
    };

    // Parameters: the pipeline's defaults, then the test's.
    let mut params: Params = pipeline
        .parameters
        .iter()
        .filter_map(|(n, p)| p.default.clone().map(|d| (n.clone(), d)))
        .collect();
    for (name, value) in &test.params {
        let at = locate_in_test(text, &test.name, &["params", name.as_str()]);
        match pipeline.parameters.get(name) {
            None => diags.push(problem(
                format!(
                    "unknown parameter `{name}`; the pipeline declares {}",
                    pipeline
                        .parameters
                        .keys()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                at,
            )),
            Some(p) => match ParamValue::from_yaml(p.kind, value) {
                Ok(v) => {
                    params.insert(name.clone(), v);
                }
                Err(e) => diags.push(problem(format!("parameter `{name}`: {e}"), at)),
            },
        }
    }
    for placeholder in &model.placeholders {
        if !params.contains_key(&placeholder.name) {
            diags.push(problem(
                format!(
                    "the model uses `${}`, which has no default: give it under `params:`",
                    placeholder.name
                ),
                None,
            ));
        }
    }

    // The tables the model reads: each given, or a seed read from its file.
    let reads: Vec<String> = {
        let mut r: Vec<String> = model.references.iter().map(|n| n.name.clone()).collect();
        r.dedup();
        r
    };
    let given: HashMap<String, &GivenTable> = test
        .given
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    for name in test.given.keys() {
        if !reads.contains(&name.to_lowercase()) {
            diags.push(problem(
                format!(
                    "given table `{name}` is not read by the model, which reads {}",
                    reads
                        .iter()
                        .map(|r| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                locate_in_test(text, &test.name, &["given", name.as_str()]),
            ));
        }
    }
    let ctx = session().map_err(|e| Diagnostics(vec![problem(e.to_string(), None)]))?;
    for table in &reads {
        let schema = match planned.table_provider(table.as_str()).await {
            Ok(provider) => nullable(provider.schema()),
            Err(_) => {
                diags.push(problem(format!("the schema of `{table}` is unknown (its source declares none, or its step does not plan)"), None));
                continue;
            }
        };
        match given.get(table) {
            Some(GivenTable::Rows(rows)) => {
                let given_name = test.given.keys().find(|k| k.to_lowercase() == *table).cloned().unwrap_or_default();
                match rows_batch(&schema, rows, |i, column| locate_row(text, &test.name, &["given", given_name.as_str()], i, column)) {
                    Ok(batch) => register(&ctx, table, batch),
                    Err(errors) => {
                        for (message, at) in errors {
                            diags.push(problem(format!("given `{table}`: {message}"), at));
                        }
                    }
                }
            }
            Some(GivenTable::Csv(file)) => {
                let path = csv_path(&pipeline.sql_dir, file);
                let at = locate_in_test(text, &test.name, &["given", table.as_str(), "csv"]);
                match csv_batch(&schema, &path) {
                    Ok(batch) => register(&ctx, table, batch),
                    Err(message) => diags.push(problem(format!("given `{table}` ({}): {message}", path.display()), at)),
                }
            }
            None => match pipeline.sources.iter().find(|s| s.name.eq_ignore_ascii_case(table) && matches!(s.location, SourceLocation::Seed(_))) {
                Some(seed) => {
                    if let Err(e) = load_seed(&ctx, seed).await {
                        diags.push(problem(format!("seed `{table}`: {e}"), None));
                    }
                }
                None => diags.push(problem(format!("the model reads `{table}`: give its rows under `given:` (`{table}: []` for an empty table)"), None)),
            },
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }

    // Run the model.
    let statement = model.bind(&params).map_err(|d| Diagnostics(vec![d]))?;
    let state = ctx.state();
    let plan = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement,
        )))
        .await
        .map_err(|e| Diagnostics(vec![crate::sql::error_diagnostic(&model.file, &e)]))?;
    let frame = DataFrame::new(state, plan);
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(|e| Diagnostics(vec![problem(format!("the model failed: {e}"), None)]))?;

    // The expected rows, in the types of the model's columns.
    let tolerance = test.tolerance.unwrap_or(DEFAULT_TOLERANCE);
    let mut expected: Vec<Vec<(usize, ScalarValue)>> = Vec::new();
    for (i, row) in expect.iter().enumerate() {
        let mut cells = Vec::new();
        for (key, value) in row {
            let Some(column) = key.as_str() else {
                diags.push(problem(
                    "a column name must be text".into(),
                    locate_row(text, &test.name, &["expect"], i, None),
                ));
                continue;
            };
            let at = locate_row(text, &test.name, &["expect"], i, Some(column));
            let Ok(index) = schema.index_of(column) else {
                diags.push(problem(
                    format!(
                        "expected column `{column}` is not a column of the model ({})",
                        names(&schema)
                    ),
                    at,
                ));
                continue;
            };
            match cell(schema.field(index), value) {
                Ok(v) => cells.push((index, v)),
                Err(e) => diags.push(problem(format!("expected `{column}`: {e}"), at)),
            }
        }
        expected.push(cells);
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let actual = scalar_rows(&batches, schema.fields().len())
        .map_err(|e| Diagnostics(vec![problem(e.to_string(), None)]))?;
    let diff = compare(&schema, &expected, &actual, tolerance);
    Ok(if diff.is_empty() {
        Outcome::Passed
    } else {
        Outcome::Failed(diff)
    })
}

/// A session as a run's, with a fixed hash key.
fn session() -> datafusion::error::Result<SessionContext> {
    let mut execution = crate::config::environment::Execution {
        target_partitions: 2,
        ..Default::default()
    };
    execution.functions.hash_key = Some(TEST_HASH_KEY.into());
    crate::run::session(&execution, std::env::temp_dir().join("crm-marts-tests"))
}

fn register(ctx: &SessionContext, name: &str, batch: RecordBatch) {
    let schema = batch.schema();
    if let Ok(table) = MemTable::try_new(schema, vec![vec![batch]]) {
        let _ = ctx.register_table(name, Arc::new(table));
    }
}

/// Every column nullable: a test gives only the columns it needs.
fn nullable(schema: SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ))
}

fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn csv_path(sql_dir: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        sql_dir.join("tests").join(file)
    }
}

/// One value in the type of `field`, decoded as the engine's JSON reader decodes it
/// (numbers and text into numbers, text into dates and timestamps).
fn cell(field: &Field, value: &serde_yaml::Value) -> Result<ScalarValue, String> {
    let schema = Arc::new(Schema::new(vec![field.clone().with_nullable(true)]));
    let json = serde_json::json!({ field.name(): yaml_json(value)? });
    let batch = decode(&schema, &[json])?;
    ScalarValue::try_from_array(batch.column(0), 0).map_err(|e| e.to_string())
}

fn yaml_json(value: &serde_yaml::Value) -> Result<serde_json::Value, String> {
    match value {
        serde_yaml::Value::Sequence(_)
        | serde_yaml::Value::Mapping(_)
        | serde_yaml::Value::Tagged(_) => Err(format!(
            "expected a single value, found {}",
            crate::config::params::yaml_kind(value)
        )),
        other => serde_json::to_value(other).map_err(|e| e.to_string()),
    }
}

fn decode(schema: &SchemaRef, rows: &[serde_json::Value]) -> Result<RecordBatch, String> {
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(schema.clone())
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    decoder
        .serialize(rows)
        .map_err(|e| clean_json_error(&e.to_string()))?;
    let batch = decoder
        .flush()
        .map_err(|e| clean_json_error(&e.to_string()))?;
    Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

fn clean_json_error(message: &str) -> String {
    message.trim_start_matches("Json error: ").to_string()
}

/// The given rows as a batch of `schema` (columns not given are null), or each problem
/// with where it is.
fn rows_batch(
    schema: &SchemaRef,
    rows: &[serde_yaml::Mapping],
    at: impl Fn(usize, Option<&str>) -> Option<(usize, usize)>,
) -> Result<RecordBatch, Vec<(String, Option<(usize, usize)>)>> {
    let mut errors = Vec::new();
    let mut json_rows = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let mut object = serde_json::Map::new();
        for (key, value) in row {
            let Some(column) = key.as_str() else {
                errors.push(("a column name must be text".to_string(), at(i, None)));
                continue;
            };
            let Ok(index) = schema.index_of(column) else {
                errors.push((
                    format!(
                        "`{column}` is not a column of the table ({})",
                        names(schema)
                    ),
                    at(i, Some(column)),
                ));
                continue;
            };
            match yaml_json(value).and_then(|json| cell(schema.field(index), value).map(|_| json)) {
                Ok(json) => {
                    object.insert(column.to_string(), json);
                }
                Err(e) => errors.push((
                    format!("`{column}` is {}: {e}", schema.field(index).data_type()),
                    at(i, Some(column)),
                )),
            }
        }
        json_rows.push(serde_json::Value::Object(object));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    decode(schema, &json_rows).map_err(|e| vec![(e, at(0, None))])
}

/// A CSV file with a header naming some of `schema`'s columns; the others are null.
fn csv_batch(schema: &SchemaRef, path: &Path) -> Result<RecordBatch, String> {
    let mut reader = datafusion::arrow::csv::reader::Format::default().with_header(true);
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let (header, _) = reader
        .clone()
        .infer_schema(std::io::BufReader::new(file), Some(0))
        .map_err(|e| e.to_string())?;
    let mut fields = Vec::new();
    for f in header.fields() {
        let index = schema.index_of(f.name()).map_err(|_| {
            format!(
                "`{}` is not a column of the table ({})",
                f.name(),
                names(schema)
            )
        })?;
        fields.push(schema.field(index).clone());
    }
    let file_schema = Arc::new(Schema::new(fields));
    reader = reader.with_header(true);
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let csv = datafusion::arrow::csv::ReaderBuilder::new(file_schema.clone())
        .with_format(reader)
        .build(std::io::BufReader::new(file))
        .map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch> = csv.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let read = datafusion::arrow::compute::concat_batches(&file_schema, &batches)
        .map_err(|e| e.to_string())?;
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match file_schema.index_of(f.name()) {
            Ok(i) => read.column(i).clone(),
            Err(_) => new_null_array(f.data_type(), read.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

/// Loads a seed as a run does.
async fn load_seed(
    ctx: &SessionContext,
    seed: &crate::config::pipeline::Source,
) -> Result<(), String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let work = std::env::temp_dir().join(format!(
        "crm-marts-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let stores = crate::storage::Stores::open(&BTreeMap::new()).map_err(|e| e.to_string())?;
    let loaded = async {
        crate::sources::load(
            ctx,
            seed,
            &stores,
            &Params::new(),
            &crate::engine::Placement::local(),
            &work,
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
        ctx.table(seed.name.as_str())
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    // The staged copy lives in `work`: the rows are kept in memory instead.
    let _ = std::fs::remove_dir_all(&work);
    let batches = loaded?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    let _ = ctx.deregister_table(seed.name.as_str());
    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| e.to_string())?;
    ctx.register_table(seed.name.as_str(), Arc::new(table))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn scalar_rows(
    batches: &[RecordBatch],
    columns: usize,
) -> datafusion::error::Result<Vec<Vec<ScalarValue>>> {
    let mut rows = Vec::new();
    for batch in batches {
        for r in 0..batch.num_rows() {
            rows.push(
                (0..columns)
                    .map(|c| ScalarValue::try_from_array(batch.column(c), r))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
    }
    Ok(rows)
}

fn equal(a: &ScalarValue, b: &ScalarValue, tolerance: f64) -> bool {
    if a.is_null() || b.is_null() {
        return a.is_null() && b.is_null();
    }
    let float = |v: &ScalarValue| match v {
        ScalarValue::Float64(Some(x)) => Some(*x),
        ScalarValue::Float32(Some(x)) => Some(*x as f64),
        ScalarValue::Float16(Some(x)) => Some(f64::from(*x)),
        _ => None,
    };
    // Text is text whichever string type the plan chose (a CAST(NULL AS VARCHAR) in a
    // UNION may make a column Utf8View in one branch and Utf8 in the schema).
    let text = |v: &ScalarValue| match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        _ => None,
    };
    match (float(a), float(b)) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= tolerance,
        _ => match (text(a), text(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn show(v: &ScalarValue) -> String {
    if v.is_null() {
        return "null".into();
    }
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The differences between the expected rows (each a few columns) and the model's rows:
/// expected rows no produced row matches, produced rows no expected row matched, and,
/// where a missing and an extra row agree on the first column the test names, the values
/// that changed.
fn compare(
    schema: &Schema,
    expected: &[Vec<(usize, ScalarValue)>],
    actual: &[Vec<ScalarValue>],
    tolerance: f64,
) -> Vec<String> {
    let matches = |e: &[(usize, ScalarValue)], a: &[ScalarValue]| {
        e.iter().all(|(c, v)| equal(v, &a[*c], tolerance))
    };
    let mut used = vec![false; actual.len()];
    let mut missing = Vec::new();
    for (i, e) in expected.iter().enumerate() {
        match (0..actual.len()).find(|&a| !used[a] && matches(e, &actual[a])) {
            Some(a) => used[a] = true,
            None => missing.push(i),
        }
    }
    let mut extra: Vec<usize> = (0..actual.len()).filter(|&a| !used[a]).collect();
    let name = |c: usize| schema.field(c).name().clone();
    let mut out = Vec::new();
    let mut still_missing = Vec::new();
    for i in missing {
        let e = &expected[i];
        let key = e.first();
        let partner = key.and_then(|(c, v)| {
            extra
                .iter()
                .position(|&a| equal(v, &actual[a][*c], tolerance))
        });
        match (key, partner) {
            (Some((kc, kv)), Some(p)) => {
                let a = &actual[extra.remove(p)];
                let changes: Vec<String> = e
                    .iter()
                    .filter(|(c, v)| !equal(v, &a[*c], tolerance))
                    .map(|(c, v)| {
                        format!("{}: expected {}, got {}", name(*c), show(v), show(&a[*c]))
                    })
                    .collect();
                out.push(format!(
                    "changed row {} = {}: {}",
                    name(*kc),
                    show(kv),
                    changes.join("; ")
                ));
            }
            _ => still_missing.push(i),
        }
    }
    for i in still_missing {
        let cells: Vec<String> = expected[i]
            .iter()
            .map(|(c, v)| format!("{}: {}", name(*c), show(v)))
            .collect();
        out.push(format!(
            "missing row (expected, not produced): {{ {} }}",
            cells.join(", ")
        ));
    }
    for a in extra {
        let columns: Vec<usize> = {
            let mut named: Vec<usize> = expected
                .iter()
                .flat_map(|e| e.iter().map(|(c, _)| *c))
                .collect();
            named.sort_unstable();
            named.dedup();
            if named.is_empty() {
                (0..schema.fields().len()).collect()
            } else {
                named
            }
        };
        let cells: Vec<String> = columns
            .iter()
            .map(|&c| format!("{}: {}", name(c), show(&actual[a][c])))
            .collect();
        out.push(format!(
            "extra row (produced, not expected): {{ {} }}",
            cells.join(", ")
        ));
    }
    out
}

// Positions in the YAML text. serde_yaml gives none for values that parsed, so they are
// found by the layout: a test is the list item with `name: <test>` under `tests:`, and its
// keys, given tables and rows are the lines indented below it.

struct Line<'a> {
    number: usize,
    indent: usize,
    /// After the indentation and any `- ` list markers.
    body: &'a str,
    /// Where `body` starts, 1-based.
    body_column: usize,
    item: bool,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                return None;
            }
            let indent = raw.len() - trimmed.len();
            let mut body = trimmed;
            let mut item = false;
            while let Some(rest) =
                body.strip_prefix("- ")
                    .or_else(|| if body == "-" { Some("") } else { None })
            {
                item = true;
                body = rest.trim_start();
            }
            let body_column = raw.len() - body.len() + 1;
            Some(Line {
                number: i + 1,
                indent,
                body,
                body_column,
                item,
            })
        })
        .collect()
}

fn key_of(body: &str) -> Option<&str> {
    let (key, _) = body.split_once(':')?;
    Some(key.trim().trim_matches('"').trim_matches('\''))
}

/// The lines of the test named `name`: from its item to the next item at its indentation.
fn test_block<'a>(all: &'a [Line<'a>], name: &str) -> Option<&'a [Line<'a>]> {
    let tests = all
        .iter()
        .position(|l| l.indent == 0 && key_of(l.body) == Some("tests"))?;
    let start = (tests + 1..all.len()).find(|&i| {
        let body = all[i].body;
        key_of(body) == Some("name")
            && body
                .split_once(':')
                .map(|(_, v)| v.trim().trim_matches('"').trim_matches('\''))
                == Some(name)
    })?;
    // The item line that holds `name:` (it may be `- name: x` itself).
    let item = (tests + 1..=start).rev().find(|&i| all[i].item)?;
    let indent = all[item].indent;
    let end = (start + 1..all.len())
        .find(|&i| {
            all[i].indent < indent || (all[i].indent == indent && all[i].item) || all[i].indent == 0
        })
        .unwrap_or(all.len());
    Some(&all[item..end])
}

fn locate_test(text: &str, name: &str) -> Option<(usize, usize)> {
    let all = lines(text);
    let block = test_block(&all, name)?;
    Some((block[0].number, block[0].body_column))
}

/// The position of the key path `keys` inside the test (the deepest key found).
fn locate_in_test(text: &str, name: &str, keys: &[&str]) -> Option<(usize, usize)> {
    let all = lines(text);
    let block = test_block(&all, name)?;
    key_lines(block, keys).map(|(i, column)| (block[i].number, column))
}

/// Where `key` is a key of a flow mapping in `body` (`{ a: 1, key: 2 }`), 0-based.
fn inline_key(body: &str, key: &str) -> Option<usize> {
    [
        format!("{{ {key}:"),
        format!("{{{key}:"),
        format!(", {key}:"),
        format!(",{key}:"),
    ]
    .iter()
    .find_map(|pattern| {
        body.find(pattern.as_str())
            .map(|p| p + pattern.find(key).unwrap_or(0))
    })
}

/// The index in `block` of the line of the last key of `keys` found, and its column.
fn key_lines(block: &[Line<'_>], keys: &[&str]) -> Option<(usize, usize)> {
    let mut at: Option<(usize, usize)> = None;
    let mut from = 0;
    for key in keys {
        // A key of a flow mapping on the line of the key before it.
        if let Some((i, _)) = at {
            if let Some(p) = inline_key(block[i].body, key) {
                at = Some((i, block[i].body_column + p));
                continue;
            }
        }
        let found = (from..block.len()).find_map(|i| {
            if key_of(block[i].body) == Some(key) {
                Some((i, block[i].body_column))
            } else {
                inline_key(block[i].body, key).map(|p| (i, block[i].body_column + p))
            }
        });
        match found {
            Some(f) => {
                at = Some(f);
                from = f.0 + 1;
            }
            None => break,
        }
    }
    at
}

/// Row `row` of the list under `keys` (a given table or `expect`), at `column` when given.
fn locate_row(
    text: &str,
    name: &str,
    keys: &[&str],
    row: usize,
    column: Option<&str>,
) -> Option<(usize, usize)> {
    let all = lines(text);
    let block = test_block(&all, name)?;
    let (list, _) = key_lines(block, keys)?;
    let list_indent = block[list].indent;
    let mut rows: Vec<usize> = Vec::new();
    for (i, line) in block.iter().enumerate().skip(list + 1) {
        if line.indent < list_indent || (line.indent == list_indent && !line.item) {
            break;
        }
        if line.item && (rows.is_empty() || line.indent == block[rows[0]].indent) {
            rows.push(i);
        }
    }
    let start = *rows.get(row)?;
    let line = &block[start];
    let Some(column) = column else {
        return Some((line.number, line.body_column));
    };
    // The column's key on the row's line or the lines that continue it.
    let end = rows.get(row + 1).copied().unwrap_or(block.len());
    for l in &block[start..end] {
        let raw = l.body;
        if let Some(p) = inline_key(raw, column) {
            return Some((l.number, l.body_column + p));
        }
        if key_of(raw) == Some(column) {
            return Some((l.number, l.body_column));
        }
    }
    Some((line.number, line.body_column))
}

/// Prints the results; returns whether every test passed.
pub fn print_report(
    results: &[TestResult],
    out: &mut impl std::io::Write,
) -> std::io::Result<bool> {
    let mut failed = 0;
    for r in results {
        match &r.outcome {
            Outcome::Passed => writeln!(
                out,
                "ok      {} :: {} ({} ms)",
                r.model, r.test, r.duration_ms
            )?,
            Outcome::Failed(diff) => {
                failed += 1;
                writeln!(out, "FAILED  {} :: {} ({})", r.model, r.test, r.location)?;
                for line in diff {
                    writeln!(out, "          {line}")?;
                }
            }
            Outcome::Invalid(diags) => {
                failed += 1;
                writeln!(out, "ERROR   {} :: {}", r.model, r.test)?;
                for d in diags.iter() {
                    writeln!(out, "          {d}")?;
                }
            }
        }
    }
    writeln!(
        out,
        "{} tests, {} passed, {} failed",
        results.len(),
        results.len() - failed,
        failed
    )?;
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;

    const YAML: &str = "name: m\ndescription: d\ntests:\n  - name: first\n    given:\n      orders:\n        - { id: 1, amount: 2.5 }\n        - { id: 2, amonut: 3 }\n    expect:\n      - { id: 1 }\n  - name: second\n    expect: []\n";

    #[test]
    fn positions_of_tests_rows_and_columns() {
        assert_eq!(locate_test(YAML, "first"), Some((4, 5)));
        assert_eq!(locate_test(YAML, "second"), Some((11, 5)));
        assert_eq!(
            locate_in_test(YAML, "first", &["given", "orders"]),
            Some((6, 7))
        );
        assert_eq!(
            locate_row(YAML, "first", &["given", "orders"], 1, Some("amonut")),
            Some((8, 20))
        );
        assert_eq!(
            locate_row(YAML, "first", &["given", "orders"], 0, None),
            Some((7, 11))
        );
        assert_eq!(
            locate_row(YAML, "first", &["expect"], 0, Some("id")),
            Some((10, 11))
        );
    }

    #[test]
    fn rows_compare_in_any_order_with_a_float_tolerance_and_name_what_changed() {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Float64, true),
        ]);
        let row = |k: &str, v: f64| vec![ScalarValue::from(k), ScalarValue::from(v)];
        let actual = vec![row("b", 2.0), row("a", 1.0 + 1e-12)];
        let expect = |k: &str, v: f64| vec![(0, ScalarValue::from(k)), (1, ScalarValue::from(v))];
        assert!(compare(
            &schema,
            &[expect("a", 1.0), expect("b", 2.0)],
            &actual,
            1e-9
        )
        .is_empty());
        let diff = compare(
            &schema,
            &[expect("a", 1.5), expect("c", 3.0)],
            &actual,
            1e-9,
        );
        assert_eq!(diff.len(), 3, "{diff:?}");
        assert!(
            diff[0].starts_with("changed row k = \"a\": v: expected 1.5, got 1.000000000001"),
            "{diff:?}"
        );
        assert!(
            diff[1].contains("missing row") && diff[1].contains("\"c\""),
            "{diff:?}"
        );
        assert!(
            diff[2].contains("extra row") && diff[2].contains("\"b\""),
            "{diff:?}"
        );
    }
}
