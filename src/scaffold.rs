//! `crm-marts new mart NAME`: the files of a new mart, started from what the engine
//! plans. The first call writes `sql/marts/NAME.sql` (a query to replace), names it in the
//! pipeline's `steps` and writes `NAME.yml` with the columns and types the query plans to.
//! After the analyst has written the SQL, the same command writes the YAML again from the
//! new plan (`--force` when one exists), keeping the descriptions and checks of columns
//! that stay.

use std::path::{Path, PathBuf};

use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::pipeline::Pipeline;

/// What `new mart` did, for the command's output.
#[derive(Debug, Default)]
pub struct Scaffolded {
    pub sql_written: Option<PathBuf>,
    pub step_added: bool,
    pub yml_written: Option<PathBuf>,
    pub columns: Vec<(String, String)>,
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Adds `- sql: marts/NAME.sql` at the end of the pipeline's `steps:` (as text, so the
/// file's comments and layout stay). Returns whether the file changed.
fn add_step(pipeline_file: &Path, name: &str) -> Result<bool, Diagnostic> {
    let text = std::fs::read_to_string(pipeline_file)
        .map_err(|e| Diagnostic::new(pipeline_file, format!("cannot read file: {e}")))?;
    let entry = format!("marts/{name}.sql");
    if text
        .lines()
        .any(|l| l.trim_start().trim_start_matches("- ").trim() == format!("sql: {entry}"))
    {
        return Ok(false);
    }
    let lines: Vec<&str> = text.lines().collect();
    let top_level = |l: &str| {
        !l.is_empty() && !l.starts_with(' ') && !l.starts_with('#') && !l.starts_with('-')
    };
    let Some(start) = lines.iter().position(|l| l.starts_with("steps:")) else {
        return Err(Diagnostic::new(
            pipeline_file,
            "the pipeline has no `steps:` to add the mart to",
        )
        .at(1, 1));
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| top_level(l))
        .map(|i| start + 1 + i)
        .unwrap_or(lines.len());
    // After the last line of the section that is not blank or a comment.
    let mut insert_at = end;
    while insert_at > start + 1
        && (lines[insert_at - 1].trim().is_empty()
            || lines[insert_at - 1].trim_start().starts_with('#'))
    {
        insert_at -= 1;
    }
    // The indentation of the section's list items.
    let indent = lines[start + 1..end]
        .iter()
        .find_map(|l| {
            l.trim_start()
                .starts_with("- ")
                .then(|| l.len() - l.trim_start().len())
        })
        .unwrap_or(2);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.insert(insert_at, format!("{}- sql: {entry}", " ".repeat(indent)));
    let mut new_text = out.join("\n");
    if text.ends_with('\n') {
        new_text.push('\n');
    }
    std::fs::write(pipeline_file, new_text)
        .map_err(|e| Diagnostic::new(pipeline_file, format!("cannot write file: {e}")))?;
    Ok(true)
}

/// A first query for the mart: the first column of the pipeline's first published table,
/// so that it plans at once.
fn starter_sql(name: &str, pipeline: &Pipeline, first_column: Option<(&str, &str)>) -> String {
    let body = match first_column {
        Some((table, column)) => format!("SELECT {column}\nFROM {table}\n"),
        None => "SELECT 1 AS placeholder\n".to_string(),
    };
    format!(
        "-- {name}: replace this query with the mart's: one SELECT over the sources and\n-- earlier tables of {}. Then run\n-- `crm-marts new mart {name} --force` to write {name}.yml from the columns it plans to.\n{body}",
        pipeline.file.display()
    )
}

fn yaml_string(text: &str) -> String {
    serde_yaml::to_string(text)
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// Creates or refreshes the files of mart `name` in `pipeline_file`'s project.
pub async fn new_mart(
    pipeline_file: &Path,
    name: &str,
    force: bool,
) -> Result<Scaffolded, Diagnostics> {
    let one = |d: Diagnostic| Diagnostics(vec![d]);
    if !is_identifier(name) {
        return Err(one(Diagnostic::new(
            pipeline_file,
            format!("`{name}` is not a table name (lower-case letters, digits and _)"),
        )));
    }
    let mut done = Scaffolded::default();
    let before = Pipeline::load(pipeline_file, None)?;
    let sql_file = before.sql_dir.join("marts").join(format!("{name}.sql"));
    let yml_file = sql_file.with_extension("yml");
    if before.steps.iter().any(|s| s.name == name) && !sql_file.exists() {
        return Err(one(Diagnostic::new(
            pipeline_file,
            format!(
                "the pipeline already has a step `{name}` that is not {}",
                sql_file.display()
            ),
        )));
    }
    if !sql_file.exists() {
        let (_, ctx) = crate::validate::plan_context(&before).await;
        let mut first = None;
        for step in before.steps.iter().filter(|s| s.publish.is_some()) {
            if let Ok(table) = ctx.table(step.name.as_str()).await {
                if let Some(f) = table.schema().fields().first() {
                    first = Some((step.name.clone(), f.name().clone()));
                    break;
                }
            }
        }
        let sql = starter_sql(
            name,
            &before,
            first.as_ref().map(|(t, c)| (t.as_str(), c.as_str())),
        );
        std::fs::create_dir_all(sql_file.parent().expect("a folder"))
            .and_then(|_| std::fs::write(&sql_file, sql))
            .map_err(|e| {
                one(Diagnostic::new(
                    &sql_file,
                    format!("cannot write file: {e}"),
                ))
            })?;
        done.sql_written = Some(sql_file.clone());
    }
    done.step_added = add_step(pipeline_file, name).map_err(one)?;

    // The YAML from the plan of the query as it is now.
    let previous = if yml_file.exists() {
        if !force {
            return Err(one(Diagnostic::new(
                &yml_file,
                "exists; `--force` writes it again from the planned columns (descriptions and checks of the columns that stay are kept)",
            )));
        }
        Some(crate::config::mart::MartSpec::load(&yml_file, name).ok())
    } else {
        None
    };
    // A YAML that no longer fits must not stop the planning of the new one.
    let parked = yml_file.with_extension("yml.previous");
    if previous.is_some() {
        std::fs::rename(&yml_file, &parked).map_err(|e| {
            one(Diagnostic::new(
                &yml_file,
                format!("cannot move aside: {e}"),
            ))
        })?;
    }
    let planned = async {
        let pipeline = Pipeline::load(pipeline_file, None)?;
        let (diags, ctx) = crate::validate::plan_context(&pipeline).await;
        let table = match ctx.table(name).await {
            Ok(t) => t,
            Err(_) => {
                let mut diags = diags;
                if diags.is_empty() {
                    diags.push(Diagnostic::new(
                        &sql_file,
                        "cannot be planned (its inputs have no declared schema)",
                    ));
                }
                return Err(diags);
            }
        };
        Ok(table.schema().as_arrow().clone())
    }
    .await;
    let had_yml = previous.is_some();
    let restore = || {
        if had_yml {
            let _ = std::fs::rename(&parked, &yml_file);
        }
    };
    let schema = match planned {
        Ok(s) => s,
        Err(d) => {
            restore();
            return Err(d);
        }
    };
    let old = previous.flatten();
    let mut yaml = format!("name: {name}\n");
    yaml.push_str(&format!(
        "description: {}\n",
        yaml_string(old.as_ref().map(|o| o.description.as_str()).unwrap_or(""))
    ));
    yaml.push_str("# The columns and types BI tools may rely on: a run never publishes a table\n");
    yaml.push_str("# that differs, and `validate --published` reports a breaking change.\n");
    yaml.push_str("contract: enforced\ncolumns:\n");
    for field in schema.fields() {
        let ty = crate::contract::type_name(field.data_type());
        done.columns.push((field.name().clone(), ty.clone()));
        yaml.push_str(&format!("  - name: {}\n    type: {ty}\n", field.name()));
        let kept = old.as_ref().and_then(|o| o.column(field.name()));
        yaml.push_str(&format!(
            "    description: {}\n",
            yaml_string(kept.map(|c| c.description.as_str()).unwrap_or(""))
        ));
        if let Some(o) = &old {
            let checks: Vec<String> = o
                .checks
                .iter()
                .filter(|c| c.column.as_deref() == Some(field.name().as_str()))
                .filter_map(check_yaml)
                .collect();
            if !checks.is_empty() {
                yaml.push_str("    checks:\n");
                for c in checks {
                    yaml.push_str(&format!("      - {c}\n"));
                }
            }
        }
    }
    if let Some(o) = &old {
        let table_checks: Vec<String> = o
            .checks
            .iter()
            .filter(|c| c.column.is_none())
            .filter_map(check_yaml)
            .collect();
        if !table_checks.is_empty() {
            yaml.push_str("checks:\n");
            for c in table_checks {
                yaml.push_str(&format!("  - {c}\n"));
            }
        }
    }
    std::fs::write(&yml_file, yaml).map_err(|e| {
        restore();
        one(Diagnostic::new(
            &yml_file,
            format!("cannot write file: {e}"),
        ))
    })?;
    let _ = std::fs::remove_file(&parked);
    done.yml_written = Some(yml_file);
    Ok(done)
}

/// A check written back as YAML (flow style, one line).
fn check_yaml(check: &crate::config::mart::Check) -> Option<String> {
    use crate::config::mart::{CheckKind, Severity};
    let severity = match check.severity {
        Severity::Warn => Some("severity: warn".to_string()),
        Severity::Error => None,
    };
    let args = |mut parts: Vec<String>| {
        parts.extend(severity.clone());
        format!("{{ {} }}", parts.join(", "))
    };
    let num = |v: f64| {
        if v.fract() == 0.0 {
            format!("{}", v as i64)
        } else {
            v.to_string()
        }
    };
    Some(match &check.kind {
        CheckKind::NotNull | CheckKind::Unique if severity.is_none() => {
            check.kind.name().to_string()
        }
        CheckKind::NotNull | CheckKind::Unique => {
            format!("{}: {}", check.kind.name(), args(vec![]))
        }
        CheckKind::AcceptedValues(values) => {
            let list: Vec<String> = values
                .iter()
                .map(|v| {
                    serde_yaml::to_string(v)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect();
            format!(
                "accepted_values: {}",
                args(vec![format!("values: [{}]", list.join(", "))])
            )
        }
        CheckKind::Relationships { to, field } => format!(
            "relationships: {}",
            args(vec![format!("to: {to}"), format!("field: {field}")])
        ),
        CheckKind::Range { min, max } => {
            let mut parts = Vec::new();
            if let Some(m) = min {
                parts.push(format!("min: {}", num(*m)));
            }
            if let Some(m) = max {
                parts.push(format!("max: {}", num(*m)));
            }
            format!("range: {}", args(parts))
        }
        CheckKind::RowCount { min, max } => {
            let mut parts = Vec::new();
            if let Some(m) = min {
                parts.push(format!("min: {m}"));
            }
            if let Some(m) = max {
                parts.push(format!("max: {m}"));
            }
            format!("row_count: {}", args(parts))
        }
    })
}
