//! Data checks declared in a mart's YAML, run as SQL against the built table. Each
//! check counts its failing rows; the manifest records every result.

use datafusion::arrow::array::{Array, Int64Array, UInt64Array};
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::config::mart::{Check, CheckKind, MartSpec, Severity};

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub severity: Severity,
    pub failing_rows: u64,
    pub passed: bool,
}

/// Runs every check of `spec` on `table`, plus a comparison of the documented columns
/// with the table's schema.
pub async fn run(
    ctx: &SessionContext,
    table: &str,
    spec: &MartSpec,
) -> datafusion::error::Result<(Vec<CheckResult>, Vec<String>)> {
    let mut results = Vec::new();
    for check in &spec.checks {
        let sql = check_sql(check);
        let failing = scalar_count(ctx, &sql).await?;
        results.push(CheckResult {
            check: check.label(),
            severity: check.severity,
            failing_rows: failing,
            passed: failing == 0,
        });
    }
    // Documentation must describe what the table really has.
    let schema = ctx.table(table).await?.schema().clone();
    let actual: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut problems = Vec::new();
    for c in &spec.columns {
        if !actual.contains(&c.name) {
            problems.push(format!(
                "documented column `{}` is not in `{table}`",
                c.name
            ));
        }
    }
    for name in &actual {
        if spec.column(name).is_none() {
            problems.push(format!("column `{name}` of `{table}` is not documented"));
        }
    }
    Ok((results, problems))
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string().to_uppercase(),
        serde_yaml::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        serde_yaml::Value::Null => "NULL".into(),
        other => format!(
            "'{}'",
            serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .replace('\'', "''")
        ),
    }
}

/// SQL returning one number: the failing rows of the check.
fn check_sql(check: &Check) -> String {
    let t = quote_ident(&check.table);
    let c = check.column.as_deref().map(quote_ident).unwrap_or_default();
    match &check.kind {
        CheckKind::NotNull => format!("SELECT count(*) FROM {t} WHERE {c} IS NULL"),
        CheckKind::Unique => format!(
            "SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {t} WHERE {c} IS NOT NULL GROUP BY {c} HAVING count(*) > 1) d"
        ),
        CheckKind::AcceptedValues(values) => {
            let list: Vec<String> = values.iter().map(literal).collect();
            format!("SELECT count(*) FROM {t} WHERE {c} IS NOT NULL AND {c} NOT IN ({})", list.join(", "))
        }
        CheckKind::Relationships { to, field } => {
            let to = quote_ident(to);
            let field = quote_ident(field);
            format!(
                "SELECT count(*) FROM {t} child WHERE child.{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {to} parent WHERE parent.{field} = child.{c})"
            )
        }
        CheckKind::Range { min, max } => {
            let mut conds = Vec::new();
            if let Some(min) = min {
                conds.push(format!("{c} < {min:?}"));
            }
            if let Some(max) = max {
                conds.push(format!("{c} > {max:?}"));
            }
            if conds.is_empty() {
                conds.push("FALSE".into());
            }
            format!("SELECT count(*) FROM {t} WHERE {}", conds.join(" OR "))
        }
        CheckKind::RowCount { min, max } => {
            // Failing "rows" of a row-count check: how far the count is outside the bounds.
            let lo = min.map(|m| format!("CASE WHEN count(*) < {m} THEN {m} - count(*) ELSE 0 END")).unwrap_or("0".into());
            let hi = max.map(|m| format!("CASE WHEN count(*) > {m} THEN count(*) - {m} ELSE 0 END")).unwrap_or("0".into());
            format!("SELECT {lo} + {hi} FROM {t}")
        }
    }
}

async fn scalar_count(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<u64> {
    let batches = ctx.sql(sql).await?.collect().await?;
    for b in &batches {
        if b.num_rows() == 0 {
            continue;
        }
        let col = b.column(0);
        if let Some(a) = col.as_any().downcast_ref::<Int64Array>() {
            return Ok(if a.is_null(0) {
                0
            } else {
                a.value(0).max(0) as u64
            });
        }
        if let Some(a) = col.as_any().downcast_ref::<UInt64Array>() {
            return Ok(if a.is_null(0) { 0 } else { a.value(0) });
        }
        let casted =
            datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Int64)?;
        let a = casted
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to Int64");
        return Ok(if a.is_null(0) {
            0
        } else {
            a.value(0).max(0) as u64
        });
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn check(column: Option<&str>, kind: CheckKind) -> Check {
        Check {
            table: "t".into(),
            column: column.map(String::from),
            kind,
            severity: Severity::Error,
        }
    }

    #[tokio::test]
    async fn checks_count_failing_rows() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b'), (2, NULL), (9, 'c')")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        ctx.sql("CREATE TABLE p AS VALUES ('a'), ('b')")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let spec = MartSpec {
            file: "t.yml".into(),
            tests: Vec::new(),
            description: String::new(),
            columns: ["column1", "column2"]
                .map(|n| crate::config::mart::ColumnSpec {
                    name: n.into(),
                    description: String::new(),
                    data_type: None,
                    at: None,
                })
                .into(),
            contract: false,
            checks: vec![
                check(Some("column2"), CheckKind::NotNull),
                check(Some("column1"), CheckKind::Unique),
                check(
                    Some("column1"),
                    CheckKind::AcceptedValues(vec![1.into(), 2.into()]),
                ),
                check(
                    Some("column2"),
                    CheckKind::Relationships {
                        to: "p".into(),
                        field: "column1".into(),
                    },
                ),
                check(
                    Some("column1"),
                    CheckKind::Range {
                        min: Some(1.0),
                        max: Some(5.0),
                    },
                ),
                check(
                    None,
                    CheckKind::RowCount {
                        min: Some(5),
                        max: None,
                    },
                ),
            ],
        };
        let (results, problems) = run(&ctx, "t", &spec).await.unwrap();
        let failing: Vec<u64> = results.iter().map(|r| r.failing_rows).collect();
        assert_eq!(failing, vec![1, 2, 1, 1, 1, 1]);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
