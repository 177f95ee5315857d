//! SQL models: one query per file, parsed once with DataFusion's SQL parser. This module
//! finds the tables a model reads (its dependencies), the `$parameters` it uses, binds
//! parameters as typed literals in the syntax tree, and turns errors into `file:line:col`.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use datafusion::sql::sqlparser::ast::{
    visit_expressions, visit_expressions_mut, visit_relations, Expr, Spanned, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

use crate::config::diag::Diagnostic;
use crate::config::params::Params;

/// A parsed SQL model.
#[derive(Debug, Clone)]
pub struct SqlModel {
    pub file: PathBuf,
    pub statement: Statement,
    /// Tables the query reads (CTE names excluded), lower-cased, with their position.
    pub references: Vec<Named>,
    /// `$name` parameters the query uses, with their position.
    pub placeholders: Vec<Named>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub line: usize,
    pub column: usize,
}

impl Named {
    pub fn position(&self) -> Option<(usize, usize)> {
        (self.line > 0).then_some((self.line, self.column))
    }
}

impl SqlModel {
    /// Parses one SQL file holding one query.
    pub fn parse(file: &Path, text: &str) -> Result<Self, Diagnostic> {
        let mut statements = Parser::parse_sql(&GenericDialect {}, text)
            .map_err(|e| parser_diagnostic(file, text, &e))?;
        if statements.len() != 1 {
            return Err(Diagnostic::new(
                file,
                format!("expected exactly one SQL query, found {} statements", statements.len()),
            ));
        }
        let statement = statements.pop().expect("one statement");
        if !matches!(statement, Statement::Query(_)) {
            return Err(Diagnostic::new(
                file,
                "a model must be a query (SELECT ... or WITH ... SELECT ...); the step creates the table named like the file",
            )
            .at(1, 1));
        }
        let references = relations(&statement).map_err(|e| Diagnostic::new(file, e))?;
        let placeholders = placeholders(&statement);
        Ok(Self { file: file.to_path_buf(), statement, references, placeholders })
    }

    /// The statement with every `$name` replaced by the typed literal of its value.
    /// Substitution happens in the syntax tree, so a value can never become SQL syntax.
    pub fn bind(&self, params: &Params) -> Result<Statement, Diagnostic> {
        let mut statement = self.statement.clone();
        let mut failure: Option<Diagnostic> = None;
        let _ = visit_expressions_mut(&mut statement, |expr: &mut Expr| {
            if let Expr::Value(v) = expr {
                if let Value::Placeholder(p) = &v.value {
                    let name = p.trim_start_matches(['$', ':', '@']);
                    let start = v.span.start;
                    let Some(value) = params.get(name) else {
                        failure = Some(
                            Diagnostic::new(&self.file, format!("unknown parameter `${name}`"))
                                .at(start.line as usize, start.column as usize),
                        );
                        return ControlFlow::Break(());
                    };
                    match literal_expr(&value.sql_literal()) {
                        Ok(lit) => *expr = lit,
                        Err(e) => {
                            failure = Some(Diagnostic::new(&self.file, format!("parameter `${name}`: {e}")));
                            return ControlFlow::Break(());
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        });
        match failure {
            Some(d) => Err(d),
            None => Ok(statement),
        }
    }
}

fn literal_expr(text: &str) -> Result<Expr, ParserError> {
    Parser::new(&GenericDialect {}).try_with_sql(text)?.parse_expr()
}

/// Table references with CTE names removed, using DataFusion's own resolver so that the
/// dependencies we derive are exactly the tables the planner will look up.
fn relations(statement: &Statement) -> Result<Vec<Named>, String> {
    let df_statement = datafusion::sql::parser::Statement::Statement(Box::new(statement.clone()));
    let (tables, _ctes) = datafusion::sql::resolve::resolve_table_references(&df_statement, true)
        .map_err(|e| e.to_string())?;
    let wanted: BTreeSet<String> = tables.iter().map(|t| t.to_string()).collect();
    let mut found: Vec<Named> = Vec::new();
    let _ = visit_relations(statement, |name| {
        let text = name
            .0
            .iter()
            .map(|p| p.as_ident().map(|i| if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(".");
        if wanted.contains(&text) && !found.iter().any(|n| n.name == text) {
            let start = name.span().start;
            found.push(Named { name: text, line: start.line as usize, column: start.column as usize });
        }
        ControlFlow::<()>::Continue(())
    });
    // Names the visitor could not place still count as dependencies.
    for t in wanted {
        if !found.iter().any(|n| n.name == t) {
            found.push(Named { name: t, line: 0, column: 0 });
        }
    }
    Ok(found)
}

fn placeholders(statement: &Statement) -> Vec<Named> {
    let mut out: Vec<Named> = Vec::new();
    let _ = visit_expressions(statement, |expr: &Expr| {
        if let Expr::Value(v) = expr {
            if let Value::Placeholder(p) = &v.value {
                let start = v.span.start;
                out.push(Named {
                    name: p.trim_start_matches(['$', ':', '@']).to_string(),
                    line: start.line as usize,
                    column: start.column as usize,
                });
            }
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

/// sqlparser writes positions into its messages as "... at Line: L, Column: C".
/// Errors at the end of input carry no position; they point after the last character.
fn parser_diagnostic(file: &Path, text: &str, err: &ParserError) -> Diagnostic {
    let source = text;
    let text = match err {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => "query nests too deeply".to_string(),
    };
    let (message, position) = split_position(&text);
    let position = position.or_else(|| message.contains("found: EOF").then(|| end_position(source)));
    Diagnostic::new(file, format!("SQL syntax error: {message}")).at_opt(position)
}

fn end_position(text: &str) -> (usize, usize) {
    let trimmed = text.trim_end();
    let line = trimmed.lines().count().max(1);
    let column = trimmed.lines().last().map(|l| l.chars().count() + 1).unwrap_or(1);
    (line, column)
}

/// Splits "message at Line: L, Column: C" into the message and the position.
pub fn split_position(text: &str) -> (String, Option<(usize, usize)>) {
    if let Some(idx) = text.rfind(" at Line: ") {
        let tail = &text[idx + " at Line: ".len()..];
        if let Some((line, col)) = tail.split_once(", Column: ") {
            let col: String = col.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let (Ok(l), Ok(c)) = (line.trim().parse(), col.parse()) {
                return (text[..idx].to_string(), Some((l, c)));
            }
        }
    }
    (text.to_string(), None)
}

/// Turns a planning or execution error of a model into a diagnostic with the position
/// DataFusion attached to it, when it did.
pub fn error_diagnostic(file: &Path, err: &datafusion::error::DataFusionError) -> Diagnostic {
    let root = err.iter().last().unwrap_or(err);
    let message = root.message().to_string();
    let span = err.iter().find_map(|e| e.diagnostic()).and_then(|d| d.span);
    let (message, position) = match span {
        Some(span) if span.start.line > 0 => (message, Some((span.start.line as usize, span.start.column as usize))),
        _ => split_position(&message),
    };
    Diagnostic::new(file, message).at_opt(position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::params::ParamValue;

    #[test]
    fn finds_tables_but_not_ctes() {
        let sql = "WITH x AS (SELECT * FROM stg_orders)\nSELECT * FROM x JOIN stg_customers c ON true";
        let m = SqlModel::parse(Path::new("m.sql"), sql).unwrap();
        let names: Vec<_> = m.references.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["stg_orders", "stg_customers"]);
        assert_eq!((m.references[1].line, m.references[1].column), (2, 22));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = SqlModel::parse(Path::new("m.sql"), "SELECT a\nFROM t\nWHERE b = = 1").unwrap_err();
        assert_eq!((err.line, err.column), (Some(3), Some(11)), "{err}");
        let err = SqlModel::parse(Path::new("m.sql"), "SELECT a,\nFROM t WHERE").unwrap_err();
        assert!(err.to_string().starts_with("m.sql:2:13: SQL syntax error"), "{err}");
    }

    #[test]
    fn binds_parameters_as_literals() {
        let m = SqlModel::parse(Path::new("m.sql"), "SELECT * FROM t WHERE d <= $as_of AND s = $who").unwrap();
        assert_eq!(m.placeholders.len(), 2);
        let mut p = Params::new();
        p.insert("as_of".into(), ParamValue::parse(crate::config::params::ParamType::Date, "2026-11-22").unwrap());
        p.insert("who".into(), ParamValue::String("x' OR 1=1 --".into()));
        let bound = m.bind(&p).unwrap().to_string();
        assert!(bound.contains("d <= DATE '2026-11-22'"), "{bound}");
        assert!(bound.contains("s = 'x'' OR 1=1 --'"), "{bound}");
        p.remove("who");
        assert!(m.bind(&p).unwrap_err().message.contains("unknown parameter `$who`"));
    }
}
