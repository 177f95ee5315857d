//! Pipelines (`pipelines/*.yaml`): parameters, sources, steps and publishing. The raw
//! `*Config` structs mirror the YAML; [`Pipeline`] is the compiled, validated form with
//! its SQL parsed and its steps in dependency order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diag::{locate, Diagnostic, Diagnostics};
use super::environment::Environment;
use super::mart::{CheckKind, MartSpec};
use super::params::{path_params, ParamType, ParamValue};
use crate::sql::SqlModel;
use crate::steps::{self, BuiltinStep};

/// A pipeline file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Folder of the SQL models, relative to the pipeline file (default `../sql`).
    #[serde(default)]
    pub sql_dir: Option<PathBuf>,
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterConfig>,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    pub publish: PublishConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterConfig {
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub default: Option<serde_yaml::Value>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Csv,
    Ndjson,
    Parquet,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Store name from the environment; omit for a seed.
    #[serde(default)]
    pub store: Option<String>,
    /// Path inside the store: a file, a folder (prefix) or a glob; `{param}` allowed.
    #[serde(default)]
    pub path: Option<String>,
    /// A CSV shipped with the project, relative to `sql/seeds/`.
    #[serde(default)]
    pub seed: Option<String>,
    pub format: SourceFormat,
    #[serde(default)]
    pub csv: Option<CsvConfig>,
    /// Declared columns; rows that do not fit are quarantined. Omit to infer.
    #[serde(default)]
    pub schema: Option<Vec<ColumnConfig>>,
    #[serde(default)]
    pub error_budget: Option<ErrorBudgetConfig>,
    /// When no file exists, read an empty table with the declared schema (e.g. the
    /// previous version of a mart on a first run).
    #[serde(default)]
    pub optional: bool,
    /// Parse and validate only the files that are new or changed since the last
    /// successful run; the others are read from that run's staged copy.
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
    /// Columns that identify a row of the export (`[order_id]`). Rows repeating a key (a
    /// re-export) are counted in the run manifest; the staging model removes them.
    #[serde(default)]
    pub key: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// Files modified less than this long before the last successful run started are read
    /// again even if unchanged: an export still being written when that run listed it, or
    /// a clock that runs behind, is caught by the next run (default 24).
    #[serde(default = "default_late_window_hours")]
    pub late_window_hours: u32,
}

fn default_late_window_hours() -> u32 {
    24
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// One character, or `whitespace` for columns separated by runs of spaces and tabs
    /// (fixed-width style exports).
    #[serde(default)]
    pub delimiter: Option<String>,
    #[serde(default)]
    pub header: Option<bool>,
    #[serde(default)]
    pub quote: Option<char>,
    #[serde(default)]
    pub encoding: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    String,
    Int,
    Float,
    Bool,
    Date,
    Timestamp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    #[serde(default)]
    pub required: bool,
    /// chrono formats tried in order for dates and timestamps.
    #[serde(default)]
    pub formats: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBudgetConfig {
    #[serde(default)]
    pub max_rows: Option<u64>,
    #[serde(default)]
    pub max_fraction: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// A SQL model, relative to the SQL folder; the table is named like the file.
    #[serde(default)]
    pub sql: Option<String>,
    /// A built-in step kind.
    #[serde(default)]
    pub builtin: Option<String>,
    /// Table name of a built-in step.
    #[serde(default)]
    pub name: Option<String>,
    /// Settings of a built-in step.
    #[serde(default)]
    pub with: Option<serde_yaml::Value>,
    /// Publish as a mart (default: models under `marts/`).
    #[serde(default)]
    pub publish: Option<bool>,
    /// Hive-style partition columns of a published mart.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Keep an unpublished model as a table on disk instead of a view.
    #[serde(default)]
    pub materialize: bool,
    /// A published mart that holds this step's table: `run --defer` reads it from there
    /// when the step is outside the selection, instead of running it.
    #[serde(default)]
    pub defer_to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Store the marts, run manifests and quarantine go to.
    pub store: String,
    /// Versions of each mart kept for rollback (default 5).
    #[serde(default)]
    pub keep_versions: Option<usize>,
}

// ---------------------------------------------------------------------------------------
// Compiled forms.

#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    pub sql_dir: PathBuf,
    pub parameters: BTreeMap<String, Parameter>,
    pub sources: Vec<Source>,
    /// Steps in the order they run: every step after the tables it reads.
    pub steps: Vec<Step>,
    pub publish: Publish,
}

#[derive(Debug, Clone)]
pub struct Parameter {
    pub kind: ParamType,
    pub default: Option<ParamValue>,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub location: SourceLocation,
    pub format: SourceFormat,
    pub csv: CsvOptions,
    pub schema: Option<Vec<Column>>,
    pub budget: ErrorBudget,
    pub optional: bool,
    /// Set for an incremental source: the late-data window.
    pub incremental: Option<chrono::Duration>,
    /// Columns identifying a row; repeated keys are counted.
    pub key: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum SourceLocation {
    /// A path template inside a named store.
    Store { store: String, path: String },
    /// A file shipped with the project.
    Seed(PathBuf),
}

#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub delimiter: u8,
    /// Fields are separated by runs of whitespace; quotes have no meaning.
    pub whitespace: bool,
    pub header: bool,
    pub quote: u8,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: ColumnType,
    pub required: bool,
    pub formats: Vec<String>,
}

/// How many bad rows a source may have before the run fails.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ErrorBudget {
    pub max_rows: Option<u64>,
    pub max_fraction: Option<f64>,
}

impl ErrorBudget {
    pub fn exceeded(&self, bad: u64, total: u64) -> bool {
        if bad == 0 {
            return false;
        }
        let rows_ok = self.max_rows.map(|m| bad <= m);
        let frac_ok = self
            .max_fraction
            .map(|f| total > 0 && (bad as f64) <= f * total as f64);
        match (rows_ok, frac_ok) {
            (None, None) => true,
            (Some(a), None) => !a,
            (None, Some(b)) => !b,
            (Some(a), Some(b)) => !(a && b),
        }
    }
}

#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub depends_on: Vec<String>,
    pub publish: Option<Sink>,
    pub materialize: bool,
    pub spec: Option<MartSpec>,
    /// Further tables a built-in step creates (`<name>_golden` ...).
    pub extra_outputs: Vec<String>,
    /// The published mart `run --defer` reads this step's table from.
    pub defer_to: Option<String>,
}

#[derive(Debug)]
pub enum StepKind {
    Sql(SqlModel),
    Builtin {
        kind: &'static str,
        step: Box<dyn BuiltinStep>,
    },
}

#[derive(Debug, Clone)]
pub struct Sink {
    pub partition_by: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Publish {
    pub store: String,
    pub keep_versions: usize,
}

impl Step {
    pub fn file(&self) -> Option<&Path> {
        match &self.kind {
            StepKind::Sql(m) => Some(&m.file),
            StepKind::Builtin { .. } => None,
        }
    }
}

/// ", did you mean `x`?" for the known table closest to `name` (at most a third of its
/// letters edited), or how many tables there are.
pub(crate) fn closest_hint(name: &str, known: &BTreeSet<String>) -> String {
    let best = known
        .iter()
        .map(|k| (crm_text::damerau_levenshtein(name, k), k))
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)));
    match best {
        Some((distance, k)) if distance * 3 <= name.chars().count().max(3) => {
            format!(": did you mean `{k}`?")
        }
        _ if known.len() <= 12 => format!(
            " (tables: {})",
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        _ => format!(
            " (no table of the pipeline's {} sources and steps has a similar name)",
            known.len()
        ),
    }
}

impl Pipeline {
    /// Reads and compiles a pipeline. With an environment, store names are checked too.
    pub fn load(path: &Path, env: Option<&Environment>) -> Result<Self, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::new(
                path,
                format!("cannot read file: {e}"),
            )])
        })?;
        let raw: PipelineConfig = serde_yaml::from_str(&text)
            .map_err(|e| Diagnostics(vec![Diagnostic::from_yaml(path, &e)]))?;
        Compiler {
            file: path,
            text: &text,
            env,
            diags: Diagnostics::default(),
        }
        .compile(raw)
    }
}

struct Compiler<'a> {
    file: &'a Path,
    text: &'a str,
    env: Option<&'a Environment>,
    diags: Diagnostics,
}

impl Compiler<'_> {
    fn error(&mut self, at: &[&str], message: impl Into<String>) {
        let d = Diagnostic::new(self.file, message).at_opt(locate(self.text, at));
        self.diags.push(d);
    }

    fn check_store(&mut self, at: &[&str], store: &str) {
        if let Some(env) = self.env {
            if !env.stores.contains_key(store) {
                let known: Vec<&str> = env.stores.keys().map(String::as_str).collect();
                let env_file = env
                    .file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default();
                self.error(
                    at,
                    format!(
                        "unknown store `{store}` (stores in {env_file}: {})",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    fn compile(mut self, raw: PipelineConfig) -> Result<Pipeline, Diagnostics> {
        let base = self.file.parent().unwrap_or(Path::new("."));
        let sql_dir = normalize_relative(
            &base.join(
                raw.sql_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("../sql")),
            ),
        );

        let parameters = self.parameters(&raw.parameters);
        let sources = self.sources(&raw.sources, &parameters, &sql_dir);
        let steps = self.steps(&raw.steps, &sources, &parameters, &sql_dir);
        self.check_store(&["publish", "store"], &raw.publish.store);
        let keep_versions = raw.publish.keep_versions.unwrap_or(5);
        if keep_versions == 0 {
            self.error(
                &["publish", "keep_versions"],
                "publish.keep_versions: must be at least 1 (the live version)",
            );
        }
        let steps = self.order(steps);
        let pipeline = Pipeline {
            name: raw.name,
            file: self.file.to_path_buf(),
            sql_dir,
            parameters,
            sources,
            steps,
            publish: Publish {
                store: raw.publish.store,
                keep_versions,
            },
        };
        self.diags.into_result(pipeline)
    }

    fn parameters(
        &mut self,
        raw: &BTreeMap<String, ParameterConfig>,
    ) -> BTreeMap<String, Parameter> {
        let mut out = BTreeMap::new();
        for (name, p) in raw {
            if !is_identifier(name) {
                self.error(
                    &["parameters", name],
                    format!("parameter name `{name}` must be a lower-case identifier"),
                );
            }
            let default = match &p.default {
                None => None,
                Some(v) => match ParamValue::from_yaml(p.kind, v) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.error(
                            &["parameters", name, "default"],
                            format!("parameters.{name}.default: {e}"),
                        );
                        None
                    }
                },
            };
            out.insert(
                name.clone(),
                Parameter {
                    kind: p.kind,
                    default,
                },
            );
        }
        out
    }

    fn sources(
        &mut self,
        raw: &BTreeMap<String, SourceConfig>,
        params: &BTreeMap<String, Parameter>,
        sql_dir: &Path,
    ) -> Vec<Source> {
        let mut out = Vec::new();
        for (name, s) in raw {
            if !is_identifier(name) {
                self.error(
                    &["sources", name],
                    format!(
                        "source name `{name}` must be a lower-case identifier (it becomes a table)"
                    ),
                );
            }
            let location = match (&s.store, &s.path, &s.seed) {
                (Some(store), Some(path), None) => {
                    self.check_store(&["sources", name, "store"], store);
                    for p in path_params(path) {
                        if !params.contains_key(&p) {
                            self.error(
                                &["sources", name, "path"],
                                format!("sources.{name}.path: unknown parameter `{{{p}}}`"),
                            );
                        }
                    }
                    if path.split('/').any(|seg| seg == "..") {
                        self.error(
                            &["sources", name, "path"],
                            format!("sources.{name}.path: `..` may not leave the store"),
                        );
                    }
                    Some(SourceLocation::Store {
                        store: store.clone(),
                        path: path.clone(),
                    })
                }
                (None, None, Some(seed)) => {
                    let file = sql_dir.join("seeds").join(seed);
                    if !file.is_file() {
                        self.error(
                            &["sources", name, "seed"],
                            format!("sources.{name}.seed: file {} not found", file.display()),
                        );
                    }
                    Some(SourceLocation::Seed(file))
                }
                _ => {
                    self.error(
                        &["sources", name],
                        format!("source `{name}` needs either `store` and `path`, or `seed`"),
                    );
                    None
                }
            };
            if s.csv.is_some() && s.format != SourceFormat::Csv {
                self.error(
                    &["sources", name, "csv"],
                    format!("sources.{name}.csv: only for format csv"),
                );
            }
            let mut csv = CsvOptions {
                delimiter: b',',
                whitespace: false,
                header: true,
                quote: b'"',
            };
            if let Some(c) = &s.csv {
                match c.delimiter.as_deref() {
                    None => {}
                    Some("whitespace") => csv.whitespace = true,
                    Some(d) if d.len() == 1 && d.is_ascii() => csv.delimiter = d.as_bytes()[0],
                    Some(d) => self.error(
                        &["sources", name, "csv", "delimiter"],
                        format!("sources.{name}.csv.delimiter: {d:?} must be one ASCII character or `whitespace`"),
                    ),
                }
                if let Some(ch) = c.quote {
                    if ch.is_ascii() {
                        csv.quote = ch as u8;
                    } else {
                        self.error(
                            &["sources", name, "csv", "quote"],
                            format!("sources.{name}.csv.quote: must be one ASCII character"),
                        );
                    }
                }
                csv.header = c.header.unwrap_or(true);
                if let Some(enc) = &c.encoding {
                    if !matches!(enc.to_ascii_lowercase().as_str(), "utf-8" | "utf8") {
                        self.error(&["sources", name, "csv", "encoding"], format!("sources.{name}.csv.encoding: `{enc}` is not supported (expected utf-8)"));
                    }
                }
            }
            let schema = s.schema.as_ref().map(|cols| self.schema(name, cols));
            if schema.is_none() && s.format == SourceFormat::Csv && !csv.header {
                self.error(
                    &["sources", name],
                    format!("source `{name}`: a CSV without header needs a declared schema"),
                );
            }
            let budget = match &s.error_budget {
                Some(b) => {
                    if let Some(f) = b.max_fraction {
                        if !(0.0..=1.0).contains(&f) {
                            self.error(&["sources", name, "error_budget"], format!("sources.{name}.error_budget.max_fraction: {f} is not between 0 and 1"));
                        }
                    }
                    ErrorBudget {
                        max_rows: b.max_rows,
                        max_fraction: b.max_fraction,
                    }
                }
                None => ErrorBudget {
                    max_rows: Some(0),
                    max_fraction: None,
                },
            };
            if s.optional && schema.is_none() {
                self.error(
                    &["sources", name, "optional"],
                    format!("sources.{name}.optional: an optional source needs a declared schema"),
                );
            }
            let incremental = s
                .incremental
                .as_ref()
                .map(|i| chrono::Duration::hours(i64::from(i.late_window_hours)));
            if incremental.is_some() {
                let staged = schema.is_some()
                    && matches!(s.format, SourceFormat::Csv | SourceFormat::Ndjson);
                let in_store = matches!(location, Some(SourceLocation::Store { .. }));
                if !staged || !in_store {
                    self.error(
                        &["sources", name, "incremental"],
                        format!("sources.{name}.incremental: only for CSV or NDJSON exports in a store with a declared schema (their files are parsed and staged one by one)"),
                    );
                }
            }
            let key = s.key.clone().unwrap_or_default();
            if let (Some(columns), Some(_)) = (&schema, &s.key) {
                for k in &key {
                    if !columns.iter().any(|c| &c.name == k) {
                        let declared: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                        self.error(
                            &["sources", name, "key"],
                            format!(
                                "sources.{name}.key: `{k}` is not a declared column ({})",
                                declared.join(", ")
                            ),
                        );
                    }
                }
            }
            if s.key.as_ref().is_some_and(Vec::is_empty) {
                self.error(
                    &["sources", name, "key"],
                    format!("sources.{name}.key: name at least one column"),
                );
            }
            if let Some(location) = location {
                out.push(Source {
                    name: name.clone(),
                    location,
                    format: s.format,
                    csv,
                    schema,
                    budget,
                    optional: s.optional,
                    incremental,
                    key,
                });
            }
        }
        out
    }

    fn schema(&mut self, source: &str, cols: &[ColumnConfig]) -> Vec<Column> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for c in cols {
            if !seen.insert(c.name.clone()) {
                self.error(
                    &["sources", source, "schema"],
                    format!(
                        "sources.{source}.schema: column `{}` declared twice",
                        c.name
                    ),
                );
            }
            let dated = matches!(c.kind, ColumnType::Date | ColumnType::Timestamp);
            if !dated && !c.formats.is_empty() {
                self.error(&["sources", source, "schema"], format!("sources.{source}.schema.{}: `formats` is only for date and timestamp columns", c.name));
            }
            out.push(Column {
                name: c.name.clone(),
                kind: c.kind,
                required: c.required,
                formats: c.formats.clone(),
            });
        }
        out
    }

    fn steps(
        &mut self,
        raw: &[StepConfig],
        sources: &[Source],
        params: &BTreeMap<String, Parameter>,
        sql_dir: &Path,
    ) -> Vec<Step> {
        let mut out: Vec<Step> = Vec::new();
        let mut names: BTreeSet<String> = sources.iter().map(|s| s.name.clone()).collect();
        // Tables whose own step failed to compile, with the index of the first problem it
        // reported: the models that read them are named there, once.
        let mut failed: BTreeMap<String, usize> = BTreeMap::new();
        for (idx, s) in raw.iter().enumerate() {
            let where_ = format!("steps[{idx}]");
            let reported = self.diags.len();
            let intended = match (&s.sql, &s.builtin) {
                (Some(sql), None) => Path::new(sql)
                    .file_stem()
                    .and_then(|n| n.to_str())
                    .map(str::to_string),
                (None, Some(_)) => s.name.clone(),
                _ => None,
            };
            let step = match (&s.sql, &s.builtin) {
                (Some(sql), None) => self.sql_step(&where_, sql, s, params, sql_dir),
                (None, Some(kind)) => self.builtin_step(&where_, kind, s, sql_dir),
                _ => {
                    self.error(
                        &["steps"],
                        format!("{where_}: a step needs exactly one of `sql` or `builtin`"),
                    );
                    None
                }
            };
            let Some(step) = step else {
                if let Some(name) = intended.filter(|_| self.diags.len() > reported) {
                    failed.entry(name).or_insert(reported);
                }
                continue;
            };
            if !names.insert(step.name.clone()) {
                self.error(
                    &["steps"],
                    format!("{where_}: more than one table named `{}`", step.name),
                );
                continue;
            }
            for extra in &step.extra_outputs {
                if !names.insert(extra.clone()) {
                    self.error(
                        &["steps"],
                        format!("{where_}: more than one table named `{extra}`"),
                    );
                }
            }
            out.push(step);
        }
        // A step reading a built-in step's extra table depends on that step.
        let producer: BTreeMap<String, String> = out
            .iter()
            .flat_map(|s| s.extra_outputs.iter().map(|e| (e.clone(), s.name.clone())))
            .collect();
        if !producer.is_empty() {
            for step in &mut out {
                let mut deps: Vec<String> = Vec::new();
                for d in step.depends_on.drain(..) {
                    let d = producer.get(&d).cloned().unwrap_or(d);
                    if !deps.contains(&d) {
                        deps.push(d);
                    }
                }
                step.depends_on = deps;
            }
        }
        for step in &out {
            if let Some(mart) = &step.defer_to {
                if !out.iter().any(|o| {
                    &o.name == mart
                        && o.publish
                            .as_ref()
                            .is_some_and(|p| p.partition_by.is_empty())
                }) {
                    self.error(
                        &["steps"],
                        format!("step `{}`: defer_to `{mart}` must name an unpartitioned published step of this pipeline", step.name),
                    );
                }
            }
        }
        // Every table a step reads must exist.
        let known: BTreeSet<String> = names;
        let mut readers_of_failed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for step in &out {
            for dep in &step.depends_on {
                if known.contains(dep) {
                    continue;
                }
                if failed.contains_key(dep) {
                    readers_of_failed
                        .entry(dep.as_str())
                        .or_default()
                        .push(step.name.as_str());
                    continue;
                }
                let position = match &step.kind {
                    StepKind::Sql(m) => m
                        .references
                        .iter()
                        .find(|r| &r.name == dep)
                        .and_then(|r| r.position()),
                    StepKind::Builtin { .. } => None,
                };
                let file = step
                    .file()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| self.file.to_path_buf());
                self.diags.push(
                    Diagnostic::new(
                        file,
                        format!(
                            "unknown table `{dep}` in `{}`{}",
                            step.name,
                            closest_hint(dep, &known)
                        ),
                    )
                    .at_opt(position),
                );
            }
        }
        for (table, readers) in readers_of_failed {
            let at = failed[table];
            let names: Vec<String> = readers.iter().map(|r| format!("`{r}`")).collect();
            let d = &mut self.diags.0[at];
            d.message.push_str(&format!(
                "; so table `{table}` does not exist, and {} that read{} it cannot be checked until it does",
                names.join(", "),
                if readers.len() == 1 { "s" } else { "" }
            ));
        }
        out
    }

    fn sql_step(
        &mut self,
        where_: &str,
        sql: &str,
        s: &StepConfig,
        params: &BTreeMap<String, Parameter>,
        sql_dir: &Path,
    ) -> Option<Step> {
        if s.name.is_some() || s.with.is_some() {
            self.error(&["steps"], format!("{where_}: `name` and `with` are for built-in steps; a SQL step is named like its file"));
        }
        let file = sql_dir.join(sql);
        let name = Path::new(sql)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if !is_identifier(&name) || !sql.ends_with(".sql") {
            self.error(&["steps"], format!("{where_}: `{sql}` must be a .sql file named like the table it creates (lower-case identifier)"));
            return None;
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    &["steps"],
                    format!("{where_}: SQL file {} cannot be read: {e}", file.display()),
                );
                return None;
            }
        };
        let model = match SqlModel::parse(&file, &text) {
            Ok(m) => m,
            Err(d) => {
                self.diags.push(d);
                return None;
            }
        };
        for p in &model.placeholders {
            if !params.contains_key(&p.name) {
                let declared = params.keys().cloned().collect::<Vec<_>>().join(", ");
                self.diags.push(
                    Diagnostic::new(
                        &file,
                        format!("unknown parameter `${}` (declared: {declared})", p.name),
                    )
                    .at_opt(p.position()),
                );
            }
        }
        let publish = s.publish.unwrap_or_else(|| sql.starts_with("marts/"));
        let spec = self.spec_for(&file, &name);
        let mut depends_on: Vec<String> = model.references.iter().map(|r| r.name.clone()).collect();
        if let Some(spec) = &spec {
            for c in &spec.checks {
                if let CheckKind::Relationships { to, .. } = &c.kind {
                    if !depends_on.contains(to) && to != &name {
                        depends_on.push(to.clone());
                    }
                }
            }
        }
        let sink = self.sink(where_, publish, s);
        Some(Step {
            name,
            kind: StepKind::Sql(model),
            depends_on,
            publish: sink,
            materialize: s.materialize,
            spec,
            extra_outputs: Vec::new(),
            defer_to: s.defer_to.clone(),
        })
    }

    fn builtin_step(
        &mut self,
        where_: &str,
        kind: &str,
        s: &StepConfig,
        sql_dir: &Path,
    ) -> Option<Step> {
        let Some(found) = steps::find(kind) else {
            let known: Vec<&str> = steps::kinds().iter().map(|k| k.name).collect();
            self.error(
                &["steps"],
                format!(
                    "{where_}: unknown built-in step `{kind}` (known: {})",
                    known.join(", ")
                ),
            );
            return None;
        };
        let Some(name) = s.name.clone() else {
            self.error(
                &["steps"],
                format!("{where_}: built-in step `{kind}` needs a `name` for the table it creates"),
            );
            return None;
        };
        if !is_identifier(&name) {
            self.error(
                &["steps"],
                format!("{where_}: step name `{name}` must be a lower-case identifier"),
            );
            return None;
        }
        let with = s.with.clone().unwrap_or(serde_yaml::Value::Null);
        let step = match (found.compile)(&with) {
            Ok(step) => step,
            Err(e) => {
                self.error(&["steps"], format!("{where_} ({kind} `{name}`): {e}"));
                return None;
            }
        };
        let sink = self.sink(where_, s.publish.unwrap_or(false), s);
        let depends_on = step.inputs();
        // A built-in step's table is documented like a mart: sql/marts/<name>.yml.
        let spec = self.spec_for(&sql_dir.join("marts").join(format!("{name}.sql")), &name);
        let extra_outputs = step.extra_outputs(&name);
        Some(Step {
            name,
            kind: StepKind::Builtin {
                kind: found.name,
                step,
            },
            depends_on,
            publish: sink,
            materialize: s.materialize,
            spec,
            extra_outputs,
            defer_to: s.defer_to.clone(),
        })
    }

    fn sink(&mut self, where_: &str, publish: bool, s: &StepConfig) -> Option<Sink> {
        if !publish && !s.partition_by.is_empty() {
            self.error(
                &["steps"],
                format!("{where_}: `partition_by` needs a published step"),
            );
        }
        publish.then(|| Sink {
            partition_by: s.partition_by.clone(),
        })
    }

    fn spec_for(&mut self, sql_file: &Path, table: &str) -> Option<MartSpec> {
        let yml = sql_file.with_extension("yml");
        if !yml.exists() {
            return None;
        }
        match MartSpec::load(&yml, table) {
            Ok(spec) => Some(spec),
            Err(d) => {
                self.diags.extend(d);
                None
            }
        }
    }

    /// Orders steps so each runs after the tables it reads; among ready steps the
    /// declaration order wins, so the order is stable. A cycle is reported with its files.
    fn order(&mut self, steps: Vec<Step>) -> Vec<Step> {
        let names: BTreeSet<String> = steps.iter().map(|s| s.name.clone()).collect();
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut pending: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
        let mut out = Vec::new();
        loop {
            let ready = pending.iter().position(|s| {
                s.as_ref().is_some_and(|s| {
                    s.depends_on
                        .iter()
                        .filter(|d| names.contains(*d) && *d != &s.name)
                        .all(|d| done.contains(d))
                        && !s.depends_on.contains(&s.name)
                })
            });
            match ready {
                Some(i) => {
                    let step = pending[i].take().expect("present");
                    done.insert(step.name.clone());
                    out.push(step);
                }
                None => break,
            }
        }
        let stuck: Vec<Step> = pending.into_iter().flatten().collect();
        if !stuck.is_empty() {
            let cycle = find_cycle(&stuck);
            let described: Vec<String> = cycle
                .iter()
                .map(|n| {
                    let step = stuck.iter().find(|s| &s.name == n).expect("in stuck");
                    match step.file() {
                        Some(f) => format!("{n} ({})", f.display()),
                        None => n.clone(),
                    }
                })
                .collect();
            let first = stuck
                .iter()
                .find(|s| Some(&s.name) == cycle.first())
                .and_then(|s| s.file());
            let file = first
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.file.to_path_buf());
            self.diags.push(Diagnostic::new(
                file,
                format!("dependency cycle: {}", described.join(" -> ")),
            ));
            out.extend(stuck);
        }
        out
    }
}

/// A cycle among steps that could not be ordered, as names with the first repeated last.
fn find_cycle(stuck: &[Step]) -> Vec<String> {
    let names: BTreeSet<&str> = stuck.iter().map(|s| s.name.as_str()).collect();
    let mut path: Vec<String> = vec![stuck[0].name.clone()];
    loop {
        let current = path.last().expect("non-empty").clone();
        let step = stuck
            .iter()
            .find(|s| s.name == current)
            .expect("stuck step");
        let Some(next) = step.depends_on.iter().find(|d| names.contains(d.as_str())) else {
            return path;
        };
        if let Some(pos) = path.iter().position(|p| p == next) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(next.clone());
            return cycle;
        }
        path.push(next.clone());
    }
}

/// `pipelines/../sql` becomes `sql`, so messages name files the way users wrote them.
fn normalize_relative(path: &Path) -> PathBuf {
    let mut out: Vec<std::path::Component> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if matches!(out.last(), Some(std::path::Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget() {
        let b = ErrorBudget {
            max_rows: Some(0),
            max_fraction: None,
        };
        assert!(!b.exceeded(0, 10));
        assert!(b.exceeded(1, 10));
        let b = ErrorBudget {
            max_rows: None,
            max_fraction: Some(0.1),
        };
        assert!(!b.exceeded(1, 10));
        assert!(b.exceeded(2, 10));
    }
}
