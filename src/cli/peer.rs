//! The peer of `crm-marts bench`: the same exports loaded and the same SQL models run on
//! DuckDB (the PyPI package, installed into `target/duckdb-peer` on first use), as
//! dbt-duckdb would run them: views stay views, tables and marts become tables, marts are
//! written as Parquet. Models calling crm-marts' own functions (identity normalisation,
//! keyed hashes, the CLV model) and built-in steps are not run there: their tables are read
//! from what crm-marts published, so the rest sees the same inputs.
//!
//! The SQL is the models' own, bound with the run's parameters; the few spellings that
//! differ between DataFusion and DuckDB are rewritten, on the parsed statement where the
//! grammar differs (`ToDuckDb`) and on its printed form for casts (`DIALECT`).

use std::collections::BTreeSet;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Deserialize;

use crm_marts::config::params::Params;
use crm_marts::config::pipeline::{ColumnType, Pipeline, SourceFormat, SourceLocation, StepKind};
use datafusion::sql::sqlparser::ast::{
    CteAsMaterialized, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArguments, Ident, JoinOperator, ObjectName, Query, SetExpr, Statement, VisitMut,
    VisitorMut,
};

/// One stage as DuckDB ran it.
#[derive(Debug, Deserialize)]
pub struct PeerStage {
    pub kind: String,
    pub name: String,
    pub seconds: f64,
    /// CPU time of all DuckDB's threads during the stage.
    pub cpu_seconds: f64,
    pub rows: Option<u64>,
    pub peak_rss_bytes: u64,
    pub error: Option<String>,
}

const DRIVER: &str = include_str!("peer.py");

/// Python with DuckDB: `CRM_MARTS_PEER_PYTHON` when set, else a virtualenv under `target/`
/// of the working folder, made on first use.
pub fn python() -> Result<PathBuf> {
    if let Some(py) = std::env::var_os("CRM_MARTS_PEER_PYTHON") {
        return Ok(PathBuf::from(py));
    }
    let venv = Path::new("target").join("duckdb-peer");
    let py = venv.join("bin").join("python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import duckdb"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !ok(&py) {
        eprintln!("bench: installing DuckDB (PyPI) into {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("python3 -m venv")?;
        if !status.success() {
            bail!("cannot create a virtualenv at {}", venv.display());
        }
        let status = Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "duckdb"])
            .status()
            .context("pip install duckdb")?;
        if !status.success() || !ok(&py) {
            bail!("cannot install duckdb into {}", venv.display());
        }
    }
    Ok(std::path::absolute(py)?)
}

/// The DuckDB version `python` imports.
pub fn version(python: &Path) -> Result<String> {
    let out = Command::new(python)
        .args(["-c", "import duckdb; print(duckdb.__version__)"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What DuckDB is asked to do: settings and stages of SQL statements.
pub struct PeerPlan {
    pub json: serde_json::Value,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn duckdb_type(kind: &ColumnType) -> &'static str {
    match kind {
        ColumnType::String => "VARCHAR",
        ColumnType::Int => "BIGINT",
        ColumnType::Float => "DOUBLE",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Date => "DATE",
        ColumnType::Timestamp => "TIMESTAMPTZ",
    }
}

/// Spellings of DataFusion SQL that DuckDB writes differently, in the statements' printed
/// form: no `BIGINT UNSIGNED` and no `arrow_cast`.
static DIALECT: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    vec![
        (
            Regex::new(r#"arrow_cast\(NULL, 'Timestamp\(Microsecond, Some\("UTC"\)\)'\)"#).unwrap(),
            "CAST(NULL AS TIMESTAMPTZ)",
        ),
        (Regex::new(r"AS BIGINT UNSIGNED\)").unwrap(), "AS UBIGINT)"),
    ]
});

/// The grammar DuckDB writes differently:
/// - `f(x) IGNORE NULLS OVER w` is `f(x IGNORE NULLS) OVER w` there;
/// - it has no RIGHT SEMI or RIGHT ANTI join: the sides are swapped into its SEMI and ANTI
///   joins, which keep the left side's rows;
/// - it has no cast between DATE or TIMESTAMPTZ and integers: a day number is
///   `d - DATE '1970-01-01'` and back `DATE '1970-01-01' + n`, microseconds `epoch_us(t)`
///   (which operand is a date is read off its name, as the models name their columns);
/// - `percentile_cont(x, p)` is `quantile_cont(x, p)`, and the aggregates
///   `first_value(x ORDER BY y)` and `last_value` are `first` and `last`;
/// - the model's `AS MATERIALIZED` CTEs (taken out of the text DataFusion parses) are put
///   back, since DuckDB reads them too.
struct ToDuckDb<'a> {
    materialized: &'a [String],
}

impl VisitorMut for ToDuckDb<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        swap_right_joins(&mut query.body);
        if let Some(with) = &mut query.with {
            for cte in &mut with.cte_tables {
                if self
                    .materialized
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&cte.alias.name.value))
                {
                    cte.materialized = Some(CteAsMaterialized::Materialized);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            if let (Some(treatment), FunctionArguments::List(list)) =
                (f.null_treatment, &mut f.args)
            {
                list.clauses
                    .push(FunctionArgumentClause::IgnoreOrRespectNulls(treatment));
                f.null_treatment = None;
            }
            let name = f.name.to_string().to_lowercase();
            let renamed = match name.as_str() {
                "percentile_cont" if matches!(&f.args, FunctionArguments::List(l) if l.args.len() == 2) => {
                    Some("quantile_cont")
                }
                // As aggregates (`first_value(x ORDER BY y)`); DuckDB's are window functions only.
                "first_value" if f.over.is_none() => Some("first"),
                "last_value" if f.over.is_none() => Some("last"),
                _ => None,
            };
            if let Some(renamed) = renamed {
                f.name = ObjectName::from(vec![Ident::new(renamed)]);
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = expr
        else {
            return ControlFlow::Continue(());
        };
        let integer = matches!(
            data_type,
            DataType::Int(_) | DataType::Integer(_) | DataType::BigInt(_)
        );
        let rewritten = if integer && dated(inner) == Some(Dated::Date) {
            Some(format!("({inner} - DATE '1970-01-01')"))
        } else if integer && dated(inner) == Some(Dated::Timestamp) {
            Some(format!("epoch_us({inner})"))
        } else if matches!(data_type, DataType::Date)
            && matches!(inner.as_ref(), Expr::BinaryOp { .. })
        {
            // A day number (the result of the rewrite above) back to a date.
            Some(format!("(DATE '1970-01-01' + CAST({inner} AS INTEGER))"))
        } else {
            None
        };
        if let Some(sql) = rewritten {
            *expr = Expr::Nested(Box::new(parse_expr(&sql)));
        }
        ControlFlow::Continue(())
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Dated {
    Date,
    Timestamp,
}

/// Whether `expr` is a date or a timestamp, by its form or the column's name.
fn dated(expr: &Expr) -> Option<Dated> {
    let by_name = |name: &str| {
        let n = name.to_lowercase();
        if n.contains("date") || n.ends_with("_on") || n.ends_with("_day") {
            Some(Dated::Date)
        } else if n.contains("time") || n.ends_with("_at") {
            Some(Dated::Timestamp)
        } else {
            None
        }
    };
    match expr {
        Expr::Identifier(i) => by_name(&i.value),
        Expr::CompoundIdentifier(parts) => parts.last().and_then(|i| by_name(&i.value)),
        Expr::Nested(e) => dated(e),
        Expr::TypedString(t) => match t.data_type {
            DataType::Date => Some(Dated::Date),
            DataType::Timestamp(..) => Some(Dated::Timestamp),
            _ => None,
        },
        Expr::Cast {
            data_type: DataType::Date,
            ..
        } => Some(Dated::Date),
        Expr::Function(f) => {
            let name = f.name.to_string().to_lowercase();
            let keeps_type = [
                "lag",
                "lead",
                "min",
                "max",
                "first_value",
                "last_value",
                "any_value",
                "coalesce",
            ]
            .contains(&name.as_str());
            match &f.args {
                FunctionArguments::List(list) if keeps_type => {
                    list.args.first().and_then(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => dated(e),
                        _ => None,
                    })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn parse_expr(sql: &str) -> Expr {
    use datafusion::sql::sqlparser::{dialect::GenericDialect, parser::Parser};
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .expect("a rewrite parses")
}

fn swap_right_joins(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for from in &mut select.from {
                let [join] = from.joins.as_mut_slice() else {
                    continue;
                };
                let swapped = match &join.join_operator {
                    JoinOperator::RightSemi(c) => JoinOperator::Semi(c.clone()),
                    JoinOperator::RightAnti(c) => JoinOperator::Anti(c.clone()),
                    _ => continue,
                };
                std::mem::swap(&mut from.relation, &mut join.relation);
                join.join_operator = swapped;
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            swap_right_joins(left);
            swap_right_joins(right);
        }
        _ => {}
    }
}

/// A bound statement of a model as DuckDB takes it.
pub fn duckdb_statement(mut statement: Statement, materialized: &[String]) -> String {
    let _ = statement.visit(&mut ToDuckDb { materialized });
    duckdb_sql(&statement.to_string())
}

pub fn duckdb_sql(sql: &str) -> String {
    let mut out = sql.to_string();
    for (pattern, replacement) in DIALECT.iter() {
        out = pattern.replace_all(&out, *replacement).into_owned();
    }
    out
}

/// Whether a file of `dir` matches the source's `pattern`, with the glob syntax the loader
/// reads it with (globset).
fn any_match(dir: &Path, pattern: &str) -> bool {
    let Ok(matcher) = globset::Glob::new(pattern).map(|g| g.compile_matcher()) else {
        return false;
    };
    fn walk(root: &Path, dir: &Path, matcher: &globset::GlobMatcher) -> bool {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries.flatten().any(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(root, &path, matcher)
                    } else {
                        path.strip_prefix(root)
                            .is_ok_and(|rel| matcher.is_match(rel))
                    }
                })
            })
            .unwrap_or(false)
    }
    walk(dir, dir, &matcher)
}

/// The published Parquet of `mart` under `marts`, as a DuckDB table function.
fn published(marts: &Path, mart: &str) -> Option<String> {
    let path = marts.join(format!("{mart}.parquet"));
    if path.is_dir() {
        Some(format!(
            "read_parquet({}, hive_partitioning = true)",
            quote(&format!("{}/**/*.parquet", path.display()))
        ))
    } else if path.exists() {
        Some(format!(
            "read_parquet({})",
            quote(&path.display().to_string())
        ))
    } else {
        None
    }
}

/// The stages DuckDB runs for `pipeline`: every source, then every SQL model.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    pipeline: &Pipeline,
    params: &Params,
    store_dir: &dyn Fn(&str) -> Option<PathBuf>,
    marts: &Path,
    work: &Path,
    threads: usize,
    memory_limit: u64,
    own_functions: &BTreeSet<String>,
    empty: &BTreeSet<String>,
) -> Result<PeerPlan> {
    std::fs::create_dir_all(work.join("marts"))?;
    std::fs::create_dir_all(work.join("tmp"))?;
    let mut stages = Vec::new();
    for source in &pipeline.sources {
        // Dates and timestamps with their own formats are read as text and parsed with
        // each format in turn, as the loader does.
        let formatted = |c: &crm_marts::config::pipeline::Column| {
            !c.formats.is_empty() && !matches!(source.format, SourceFormat::Parquet)
        };
        let columns = source.schema.as_ref().map(|cols| {
            let fields: Vec<String> = cols
                .iter()
                .map(|c| {
                    format!(
                        "{}: {}",
                        quote(&c.name),
                        quote(if formatted(c) {
                            "VARCHAR"
                        } else {
                            duckdb_type(&c.kind)
                        })
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        });
        let parsed: Vec<String> = source
            .schema
            .iter()
            .flatten()
            .filter(|c| formatted(c))
            .map(|c| {
                let tries: Vec<String> = c
                    .formats
                    .iter()
                    .map(|f| format!("try_strptime({}, {})", c.name, quote(f)))
                    .collect();
                format!(
                    "CAST(coalesce({}) AS {}) AS {}",
                    tries.join(", "),
                    duckdb_type(&c.kind),
                    c.name
                )
            })
            .collect();
        let select = if parsed.is_empty() {
            "*".to_string()
        } else {
            format!("* REPLACE ({})", parsed.join(", "))
        };
        let (file, exists) = match &source.location {
            SourceLocation::Seed(path) => (std::path::absolute(path)?, path.exists()),
            SourceLocation::Store { store, path } => {
                let Some(dir) = store_dir(store) else {
                    bail!(
                        "source `{}`: store `{store}` is not a local folder",
                        source.name
                    )
                };
                let exists = any_match(&dir, path);
                (dir.join(path), exists)
            }
        };
        let file = quote(&file.display().to_string());
        let read = match source.format {
            SourceFormat::Csv => {
                let mut args = vec![
                    file.clone(),
                    format!(
                        "delim = {}",
                        quote(&(source.csv.delimiter as char).to_string())
                    ),
                    format!("header = {}", source.csv.header),
                    format!("quote = {}", quote(&(source.csv.quote as char).to_string())),
                    "store_rejects = true".to_string(),
                    format!(
                        "rejects_table = {}",
                        quote(&format!("rejects_{}", source.name))
                    ),
                    format!(
                        "rejects_scan = {}",
                        quote(&format!("rejects_scan_{}", source.name))
                    ),
                ];
                if let Some(c) = &columns {
                    args.push(format!("columns = {c}"));
                }
                format!("read_csv({})", args.join(", "))
            }
            SourceFormat::Ndjson => {
                let mut args = vec![
                    file.clone(),
                    "format = 'newline_delimited'".to_string(),
                    "ignore_errors = true".to_string(),
                ];
                if let Some(c) = &columns {
                    args.push(format!("columns = {c}"));
                }
                format!("read_json({})", args.join(", "))
            }
            SourceFormat::Parquet => format!("read_parquet({file})"),
        };
        let statement = if exists && !empty.contains(&source.name) {
            format!(
                "CREATE OR REPLACE TABLE {} AS SELECT {select} FROM {read}",
                source.name
            )
        } else if source.optional || empty.contains(&source.name) {
            let cols: Vec<String> = source
                .schema
                .iter()
                .flatten()
                .map(|c| format!("{} {}", c.name, duckdb_type(&c.kind)))
                .collect();
            format!(
                "CREATE OR REPLACE TABLE {} ({})",
                source.name,
                cols.join(", ")
            )
        } else {
            bail!("source `{}`: no file at {file}", source.name);
        };
        stages.push(serde_json::json!({ "kind": "source", "name": source.name, "statements": [statement], "count": source.name }));
    }
    // Tables DuckDB has: a model reading any other table (a built-in step's further
    // outputs) is read from what crm-marts published, as are models calling own functions.
    let mut known: BTreeSet<String> = pipeline
        .sources
        .iter()
        .map(|s| s.name.to_lowercase())
        .collect();
    for step in &pipeline.steps {
        let runs_here = match &step.kind {
            StepKind::Builtin { .. } => false,
            StepKind::Sql(model) => {
                let text = model.statement.to_string().to_lowercase();
                !own_functions
                    .iter()
                    .any(|f| text.contains(&format!("{f}(")))
                    && model.references.iter().all(|r| known.contains(&r.name))
            }
        };
        if !runs_here {
            let mart = step.defer_to.as_deref().unwrap_or(step.name.as_str());
            if let Some(read) = published(marts, mart) {
                stages.push(serde_json::json!({
                    "kind": "provided",
                    "name": step.name,
                    "statements": [format!("CREATE OR REPLACE VIEW {} AS SELECT * FROM {read}", step.name)],
                }));
                known.insert(step.name.to_lowercase());
            }
            continue;
        }
        let StepKind::Sql(model) = &step.kind else {
            continue;
        };
        known.insert(step.name.to_lowercase());
        let bound = model.bind(params).map_err(|d| anyhow::anyhow!("{d}"))?;
        let sql = duckdb_statement(bound, &model.materialized);
        let (statements, count) = if step.publish.is_some() {
            let out = work.join("marts").join(format!("{}.parquet", step.name));
            (
                vec![
                    format!("CREATE OR REPLACE TABLE {} AS {sql}", step.name),
                    format!(
                        "COPY {} TO {} (FORMAT parquet)",
                        step.name,
                        quote(&out.display().to_string())
                    ),
                ],
                Some(step.name.clone()),
            )
        } else if step.materialize {
            (
                vec![format!("CREATE OR REPLACE TABLE {} AS {sql}", step.name)],
                Some(step.name.clone()),
            )
        } else {
            (
                vec![format!("CREATE OR REPLACE VIEW {} AS {sql}", step.name)],
                None,
            )
        };
        stages.push(serde_json::json!({ "kind": "step", "name": step.name, "statements": statements, "count": count }));
    }
    Ok(PeerPlan {
        json: serde_json::json!({
            "database": work.join("peer.duckdb").display().to_string(),
            "threads": threads,
            "memory_limit": format!("{}MB", memory_limit / 1_000_000),
            "temp_directory": work.join("tmp").display().to_string(),
            "stages": stages,
        }),
    })
}

/// Runs `plan` with `python`, returning each stage as DuckDB reports it.
pub fn run(python: &Path, plan: &PeerPlan, work: &Path) -> Result<Vec<PeerStage>> {
    let driver = work.join("peer.py");
    std::fs::write(&driver, DRIVER)?;
    // The statements as DuckDB ran them, to read or rerun by hand.
    std::fs::write(
        work.join("peer-plan.json"),
        serde_json::to_vec_pretty(&plan.json)?,
    )?;
    let _ = std::fs::remove_file(work.join("peer.duckdb"));
    let mut child = Command::new(python)
        .arg(&driver)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(plan.json.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("the DuckDB peer exited with {}", output.status);
    }
    let mut stages = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        stages.push(
            serde_json::from_str(line).with_context(|| format!("DuckDB peer output: {line}"))?,
        );
    }
    let _ = std::fs::remove_file(work.join("peer.duckdb"));
    Ok(stages)
}

#[cfg(test)]
mod tests {
    use super::duckdb_statement;
    use datafusion::sql::sqlparser::{dialect::GenericDialect, parser::Parser};

    fn duck(sql: &str) -> String {
        let statement = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        duckdb_statement(statement, &["shared".to_string()])
    }

    #[test]
    fn rewrites_the_spellings_duckdb_lacks() {
        assert_eq!(
            duck("SELECT CAST(DATE '2026-11-22' AS INT) - CAST(o.order_date AS INT) FROM o"),
            "SELECT ((DATE '2026-11-22' - DATE '1970-01-01')) - ((o.order_date - DATE '1970-01-01')) FROM o"
        );
        assert_eq!(
            duck("SELECT CAST(CAST(last_order_date AS INT) + n AS DATE) FROM t"),
            "SELECT ((DATE '1970-01-01' + CAST(((last_order_date - DATE '1970-01-01')) + n AS INTEGER))) FROM t"
        );
        assert_eq!(
            duck("SELECT CAST(lag(order_date) OVER (ORDER BY order_date) AS INT) FROM t"),
            "SELECT ((lag(order_date) OVER (ORDER BY order_date) - DATE '1970-01-01')) FROM t"
        );
        assert_eq!(
            duck("SELECT CAST(event_time AS BIGINT) FROM t"),
            "SELECT (epoch_us(event_time)) FROM t"
        );
        assert_eq!(
            duck("SELECT CAST(postcode AS INT) FROM t"),
            "SELECT CAST(postcode AS INT) FROM t"
        );
        assert_eq!(
            duck("SELECT CAST(a - b + 1 AS BIGINT UNSIGNED) FROM t"),
            "SELECT CAST(a - b + 1 AS UBIGINT) FROM t"
        );
        assert_eq!(
            duck("SELECT last_value(x) IGNORE NULLS OVER (ORDER BY t) FROM e"),
            "SELECT last_value(x IGNORE NULLS) OVER (ORDER BY t) FROM e"
        );
        assert_eq!(
            duck("SELECT c.id FROM (SELECT id FROM r) AS r RIGHT ANTI JOIN c ON c.id = r.id"),
            "SELECT c.id FROM c ANTI JOIN (SELECT id FROM r) AS r ON c.id = r.id"
        );
        assert_eq!(
            duck("SELECT percentile_cont(v, 0.9) FROM t"),
            "SELECT quantile_cont(v, 0.9) FROM t"
        );
        assert_eq!(
            duck("SELECT first_value(c ORDER BY o), first_value(c) OVER (ORDER BY o) FROM t"),
            "SELECT first(c ORDER BY o), first_value(c) OVER (ORDER BY o) FROM t"
        );
        assert_eq!(
            duck("WITH shared AS (SELECT 1 AS x), other AS (SELECT 2 AS y) SELECT * FROM shared, other"),
            "WITH shared AS MATERIALIZED (SELECT 1 AS x), other AS (SELECT 2 AS y) SELECT * FROM shared, other"
        );
    }
}
