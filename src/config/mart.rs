//! A mart's sibling YAML (`sql/marts/mart_x.yml`): what each column means and the data
//! checks that run after the step builds the table.

use std::fmt;
use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::diag::{Diagnostic, Diagnostics};
use crate::contract::ContractType;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MartConfig {
    /// The table this file documents; must equal the SQL file's name.
    pub name: String,
    pub description: String,
    /// The grain: what one row is.
    #[serde(default)]
    pub grain: Option<String>,
    #[serde(default)]
    pub columns: Vec<ColumnDocConfig>,
    /// `enforced`: every column declares its `type`, and a table that does not match is
    /// never published.
    #[serde(default)]
    pub contract: Option<ContractMode>,
    /// Checks on the whole table.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    /// Unit tests: given rows of the tables the model reads, the rows it must give
    /// (`crm-marts test`).
    #[serde(default)]
    pub tests: Vec<UnitTestConfig>,
}

/// One unit test of a SQL model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitTestConfig {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Parameters over the pipeline's defaults.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, serde_yaml::Value>,
    /// Rows of each table the model reads.
    #[serde(default)]
    pub given: std::collections::BTreeMap<String, GivenTable>,
    /// The rows the model must give, in any order; each row names the columns it checks.
    #[serde(default)]
    pub expect: Option<Vec<serde_yaml::Mapping>>,
    /// Largest difference accepted between two floating-point values (default 1e-9).
    #[serde(default)]
    pub tolerance: Option<f64>,
}

/// A given table: rows written in the YAML, or a CSV file with a header under `sql/tests/`.
#[derive(Debug, Clone)]
pub enum GivenTable {
    Rows(Vec<serde_yaml::Mapping>),
    Csv(std::path::PathBuf),
}

impl<'de> Deserialize<'de> for GivenTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct CsvFile {
            csv: std::path::PathBuf,
        }
        let value = serde_yaml::Value::deserialize(deserializer)?;
        match value {
            serde_yaml::Value::Sequence(_) => serde_yaml::from_value(value)
                .map(GivenTable::Rows)
                .map_err(|e| {
                    D::Error::custom(format!(
                        "given rows: each row is a mapping of column to value ({e})"
                    ))
                }),
            serde_yaml::Value::Mapping(_) => serde_yaml::from_value::<CsvFile>(value)
                .map(|f| GivenTable::Csv(f.csv))
                .map_err(|e| {
                    D::Error::custom(format!(
                        "a given table is a list of rows or {{ csv: FILE }} ({e})"
                    ))
                }),
            _ => Err(D::Error::custom(
                "a given table is a list of rows (`[]` for an empty table) or { csv: FILE }",
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractMode {
    Enforced,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDocConfig {
    pub name: String,
    pub description: String,
    /// The column's type (`string`, `bigint`, `double`, `date`, `decimal(12,2)`, ...), checked
    /// when the mart's contract is enforced.
    #[serde(rename = "type", default)]
    pub data_type: Option<String>,
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Error,
    Warn,
}

/// One data check. Written as a bare name (`- not_null`) or as a one-key mapping with
/// arguments (`- accepted_values: { values: [1, 2], severity: warn }`).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    pub severity: Severity,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    NotNull,
    Unique,
    AcceptedValues(Vec<serde_yaml::Value>),
    Relationships { to: String, field: String },
    Range { min: Option<f64>, max: Option<f64> },
    RowCount { min: Option<u64>, max: Option<u64> },
}

const CHECK_NAMES: &str = "not_null, unique, accepted_values, relationships, range, row_count";

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::NotNull => "not_null",
            CheckKind::Unique => "unique",
            CheckKind::AcceptedValues(_) => "accepted_values",
            CheckKind::Relationships { .. } => "relationships",
            CheckKind::Range { .. } => "range",
            CheckKind::RowCount { .. } => "row_count",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckKind::Relationships { to, field } => write!(f, "relationships({to}.{field})"),
            other => f.write_str(other.name()),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SeverityOnly {
    #[serde(default)]
    severity: Severity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptedValuesArgs {
    values: Vec<serde_yaml::Value>,
    #[serde(default)]
    severity: Severity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelationshipsArgs {
    to: String,
    field: String,
    #[serde(default)]
    severity: Severity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeArgs {
    min: Option<f64>,
    max: Option<f64>,
    #[serde(default)]
    severity: Severity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowCountArgs {
    min: Option<u64>,
    max: Option<u64>,
    #[serde(default)]
    severity: Severity,
}

impl<'de> Deserialize<'de> for CheckConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_yaml::Value::deserialize(deserializer)?;
        let (name, args) = match value {
            serde_yaml::Value::String(name) => (name, serde_yaml::Value::Null),
            serde_yaml::Value::Mapping(map) if map.len() == 1 => {
                let (k, v) = map.into_iter().next().expect("one entry");
                match k {
                    serde_yaml::Value::String(name) => (name, v),
                    _ => return Err(D::Error::custom("a check name must be a string")),
                }
            }
            _ => {
                return Err(D::Error::custom(format!(
                    "expected a check: a name or a one-key mapping, one of {CHECK_NAMES}"
                )))
            }
        };
        let args_or_default = |v: serde_yaml::Value| {
            if v.is_null() {
                serde_yaml::Value::Mapping(Default::default())
            } else {
                v
            }
        };
        let de = |e: serde_yaml::Error| D::Error::custom(format!("check `{name}`: {e}"));
        let (kind, severity) = match name.as_str() {
            "not_null" | "unique" => {
                let a: SeverityOnly = serde_yaml::from_value(args_or_default(args)).map_err(de)?;
                let kind = if name == "unique" {
                    CheckKind::Unique
                } else {
                    CheckKind::NotNull
                };
                (kind, a.severity)
            }
            "accepted_values" => {
                let a: AcceptedValuesArgs = serde_yaml::from_value(args).map_err(de)?;
                (CheckKind::AcceptedValues(a.values), a.severity)
            }
            "relationships" => {
                let a: RelationshipsArgs = serde_yaml::from_value(args).map_err(de)?;
                (
                    CheckKind::Relationships {
                        to: a.to,
                        field: a.field,
                    },
                    a.severity,
                )
            }
            "range" => {
                let a: RangeArgs = serde_yaml::from_value(args).map_err(de)?;
                (
                    CheckKind::Range {
                        min: a.min,
                        max: a.max,
                    },
                    a.severity,
                )
            }
            "row_count" => {
                let a: RowCountArgs = serde_yaml::from_value(args).map_err(de)?;
                (
                    CheckKind::RowCount {
                        min: a.min,
                        max: a.max,
                    },
                    a.severity,
                )
            }
            other => {
                return Err(D::Error::custom(format!(
                    "unknown check `{other}`, expected one of {CHECK_NAMES}"
                )))
            }
        };
        Ok(CheckConfig { kind, severity })
    }
}

/// A check bound to its table and column, ready to run.
#[derive(Debug, Clone)]
pub struct Check {
    pub table: String,
    pub column: Option<String>,
    pub kind: CheckKind,
    pub severity: Severity,
}

impl Check {
    pub fn label(&self) -> String {
        match &self.column {
            Some(c) => format!("{}.{} {}", self.table, c, self.kind),
            None => format!("{} {}", self.table, self.kind),
        }
    }
}

/// A documented column.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    pub description: String,
    pub data_type: Option<ContractType>,
    /// Line and column of its entry in the YAML.
    pub at: Option<(usize, usize)>,
}

/// A compiled mart spec.
#[derive(Debug, Clone)]
pub struct MartSpec {
    /// The YAML file.
    pub file: std::path::PathBuf,
    pub description: String,
    pub columns: Vec<ColumnSpec>,
    /// Whether the column types are a contract (`contract: enforced`).
    pub contract: bool,
    pub checks: Vec<Check>,
    pub tests: Vec<UnitTestConfig>,
}

impl MartSpec {
    /// Reads `path` as the spec of `table`; problems are reported, not returned early.
    pub fn load(path: &Path, table: &str) -> Result<Self, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::new(
                path,
                format!("cannot read file: {e}"),
            )])
        })?;
        let raw: MartConfig = serde_yaml::from_str(&text)
            .map_err(|e| Diagnostics(vec![Diagnostic::from_yaml(path, &e)]))?;
        let mut diags = Diagnostics::default();
        if raw.name != table {
            diags.push(
                Diagnostic::new(
                    path,
                    format!("name `{}` does not match the model `{table}`", raw.name),
                )
                .at_opt(super::diag::locate(&text, &["name"])),
            );
        }
        let mut checks = Vec::new();
        for c in raw.checks {
            if !matches!(c.kind, CheckKind::RowCount { .. }) {
                diags.push(
                    Diagnostic::new(
                        path,
                        format!(
                            "check `{}` belongs to a column, not to the table",
                            c.kind.name()
                        ),
                    )
                    .at_opt(super::diag::locate(&text, &["checks"])),
                );
                continue;
            }
            checks.push(Check {
                table: table.to_string(),
                column: None,
                kind: c.kind,
                severity: c.severity,
            });
        }
        let contract = raw.contract == Some(ContractMode::Enforced);
        let mut columns = Vec::new();
        for col in raw.columns {
            let at = locate_column(&text, &col.name);
            let data_type = match &col.data_type {
                Some(t) => match ContractType::parse(t) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        diags.push(
                            Diagnostic::new(path, format!("column `{}`: {e}", col.name)).at_opt(at),
                        );
                        None
                    }
                },
                None => {
                    if contract {
                        diags.push(
                            Diagnostic::new(
                                path,
                                format!("column `{}` has no `type`; a mart with `contract: enforced` declares the type of every column", col.name),
                            )
                            .at_opt(at),
                        );
                    }
                    None
                }
            };
            for c in col.checks {
                if matches!(c.kind, CheckKind::RowCount { .. }) {
                    diags.push(Diagnostic::new(
                        path,
                        format!(
                            "check `row_count` on column `{}` belongs to the table's `checks`",
                            col.name
                        ),
                    ));
                    continue;
                }
                checks.push(Check {
                    table: table.to_string(),
                    column: Some(col.name.clone()),
                    kind: c.kind,
                    severity: c.severity,
                });
            }
            columns.push(ColumnSpec {
                name: col.name,
                description: col.description,
                data_type,
                at,
            });
        }
        diags.into_result(MartSpec {
            file: path.to_path_buf(),
            description: raw.description,
            columns,
            contract,
            checks,
            tests: raw.tests,
        })
    }

    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The line and column of `name:` in the entry `- name: <column>` under `columns:`.
fn locate_column(text: &str, column: &str) -> Option<(usize, usize)> {
    let mut inside = false;
    for (idx, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if raw.len() == trimmed.len()
            && !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && !trimmed.starts_with('-')
        {
            inside = trimmed.starts_with("columns:");
            continue;
        }
        if !inside {
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("- ") else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(value) = rest.strip_prefix("name:") else {
            continue;
        };
        let value = value
            .split(" #")
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        if value == column {
            let col = raw.len() - rest.len() + 1;
            return Some((idx + 1, col));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse_in_both_forms() {
        let yaml =
            "- not_null\n- unique: { severity: warn }\n- accepted_values: { values: [1, 2] }\n";
        let checks: Vec<CheckConfig> = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(checks[0].kind, CheckKind::NotNull);
        assert_eq!(checks[1].severity, Severity::Warn);
        assert_eq!(checks[2].kind.name(), "accepted_values");
        let err = serde_yaml::from_str::<Vec<CheckConfig>>("- not_nul\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown check `not_nul`") && err.contains("not_null"),
            "{err}"
        );
    }

    #[test]
    fn a_contract_needs_a_known_type_on_every_column_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yml");
        let yaml = "name: m\ndescription: d\ncontract: enforced\ncolumns:\n  - name: a\n    description: x\n    type: bigint\n  - name: b\n    description: y\n  - name: c\n    description: z\n    type: strin\n";
        std::fs::write(&path, yaml).unwrap();
        let text = MartSpec::load(&path, "m").unwrap_err().to_string();
        assert!(
            text.contains("m.yml:8:5: column `b` has no `type`"),
            "{text}"
        );
        assert!(
            text.contains("m.yml:10:5: column `c`: unknown type `strin`"),
            "{text}"
        );
        std::fs::write(
            &path,
            yaml.replace("    type: strin\n", "    type: double\n")
                .replace("description: y\n", "description: y\n    type: date\n"),
        )
        .unwrap();
        let spec = MartSpec::load(&path, "m").unwrap();
        assert!(spec.contract);
        assert_eq!(
            spec.column("a").unwrap().data_type,
            Some(ContractType::BigInt)
        );
        assert_eq!(spec.column("c").unwrap().at, Some((11, 5)));
    }
}
