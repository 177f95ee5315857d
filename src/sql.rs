//! SQL models: one query per file, parsed once with DataFusion's SQL parser. This module
//! finds the tables a model reads (its dependencies), the `$parameters` it uses, binds
//! parameters as typed literals in the syntax tree, and turns errors into `file:line:col`.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use datafusion::sql::sqlparser::ast::{
    visit_expressions, visit_expressions_mut, visit_relations, visit_relations_mut, Cte,
    CteAsMaterialized, Expr, Ident, ObjectName, ObjectNamePart, Spanned, Statement, Value, With,
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
    /// CTEs of the top-level `WITH` declared `AS MATERIALIZED`, in order: the runner
    /// computes each once, as a table of the step, instead of at every reference.
    pub materialized: Vec<String>,
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
        let (stripped, hints) = strip_materialized(text);
        let mut statements = Parser::parse_sql(&GenericDialect {}, &stripped)
            .map_err(|e| parser_diagnostic(file, text, &e))?;
        if statements.len() != 1 {
            return Err(Diagnostic::new(
                file,
                format!(
                    "expected exactly one SQL query, found {} statements",
                    statements.len()
                ),
            ));
        }
        let mut statement = statements.pop().expect("one statement");
        if !matches!(statement, Statement::Query(_)) {
            return Err(Diagnostic::new(
                file,
                "a model must be a query (SELECT ... or WITH ... SELECT ...); the step creates the table named like the file",
            )
            .at(1, 1));
        }
        let materialized = mark_materialized(file, &mut statement, &hints)?;
        let references = relations(&statement).map_err(|e| Diagnostic::new(file, e))?;
        let placeholders = placeholders(&statement);
        Ok(Self {
            file: file.to_path_buf(),
            statement,
            references,
            placeholders,
            materialized,
        })
    }

    /// Splits a bound statement into the queries of its materialized CTEs, each named
    /// `<table_prefix>__<cte>`, and the model's query reading them as tables.
    pub fn split_materialized(
        &self,
        statement: Statement,
        table_prefix: &str,
    ) -> (Vec<(String, Statement)>, Statement) {
        let Statement::Query(mut query) = statement else {
            return (Vec::new(), statement);
        };
        let Some(with) = query.with.take() else {
            return (Vec::new(), Statement::Query(query));
        };
        if self.materialized.is_empty() {
            query.with = Some(with);
            return (Vec::new(), Statement::Query(query));
        }
        let renames: Vec<(String, String)> = self
            .materialized
            .iter()
            .map(|c| (c.clone(), format!("{table_prefix}__{c}")))
            .collect();
        let mut kept: Vec<Cte> = Vec::new();
        let mut parts = Vec::new();
        for cte in with.cte_tables.iter() {
            let name = ident_name(&cte.alias.name);
            let Some((_, table)) = renames.iter().find(|(c, _)| *c == name) else {
                kept.push(cte.clone());
                continue;
            };
            // The CTE's query with the plain CTEs before it, which it may read.
            let mut part = (*cte.query).clone();
            if !kept.is_empty() {
                let mut ctes = kept.clone();
                if let Some(inner) = part.with.take() {
                    ctes.extend(inner.cte_tables);
                }
                part.with = Some(With {
                    with_token: with.with_token.clone(),
                    recursive: false,
                    cte_tables: ctes,
                });
            }
            let mut part = Statement::Query(Box::new(part));
            rename_relations(&mut part, &renames);
            parts.push((table.clone(), part));
        }
        if !kept.is_empty() {
            query.with = Some(With {
                cte_tables: kept,
                ..with
            });
        }
        let mut main = Statement::Query(query);
        rename_relations(&mut main, &renames);
        (parts, main)
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
                            failure = Some(Diagnostic::new(
                                &self.file,
                                format!("parameter `${name}`: {e}"),
                            ));
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

/// Position of each `MATERIALIZED` of a `name AS MATERIALIZED (` and the CTE's name;
/// the keyword is blanked out of the text (same length, so positions stay right) because
/// the generic dialect does not parse it.
fn strip_materialized(text: &str) -> (String, Vec<(String, usize, usize)>) {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize_with_location() else {
        return (text.to_string(), Vec::new());
    };
    let significant: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut hints = Vec::new();
    let mut blank: Vec<(usize, usize, usize)> = Vec::new();
    for w in significant.windows(4) {
        let (Token::Word(name), Token::Word(kw_as), Token::Word(kw), Token::LParen) =
            (&w[0].token, &w[1].token, &w[2].token, &w[3].token)
        else {
            continue;
        };
        if kw_as.value.eq_ignore_ascii_case("as")
            && kw.quote_style.is_none()
            && kw.value.eq_ignore_ascii_case("materialized")
        {
            let name = if name.quote_style.is_some() {
                name.value.clone()
            } else {
                name.value.to_lowercase()
            };
            let at = w[2].span.start;
            hints.push((name, at.line as usize, at.column as usize));
            blank.push((at.line as usize, at.column as usize, kw.value.len()));
        }
    }
    if blank.is_empty() {
        return (text.to_string(), hints);
    }
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let mut chars: Vec<char> = line.chars().collect();
        for (l, c, len) in &blank {
            if *l == i + 1 {
                for ch in chars.iter_mut().skip(c - 1).take(*len) {
                    *ch = ' ';
                }
            }
        }
        out.extend(chars);
    }
    (out, hints)
}

/// Marks the CTEs named in `hints` as materialized; only the top-level `WITH` of a
/// non-recursive query may hold them.
fn mark_materialized(
    file: &Path,
    statement: &mut Statement,
    hints: &[(String, usize, usize)],
) -> Result<Vec<String>, Diagnostic> {
    if hints.is_empty() {
        return Ok(Vec::new());
    }
    let Statement::Query(query) = statement else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for (name, line, column) in hints {
        let cte = query.with.as_mut().filter(|w| !w.recursive).and_then(|w| {
            w.cte_tables
                .iter_mut()
                .find(|c| ident_name(&c.alias.name) == *name && c.alias.columns.is_empty())
        });
        match cte {
            Some(cte) => {
                cte.materialized = Some(CteAsMaterialized::Materialized);
                names.push(name.clone());
            }
            None => {
                return Err(Diagnostic::new(
                    file,
                    format!("`{name} AS MATERIALIZED`: only a CTE of the query's first, non-recursive WITH, without a column list, can be materialized"),
                )
                .at(*line, *column))
            }
        }
    }
    Ok(names)
}

fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Renames one-part table references `from` to `to`.
fn rename_relations(statement: &mut Statement, renames: &[(String, String)]) {
    let _ = visit_relations_mut(statement, |name: &mut ObjectName| {
        if let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() {
            let text = ident_name(ident);
            if let Some((_, to)) = renames.iter().find(|(from, _)| *from == text) {
                let mut renamed = Ident::new(to.clone());
                renamed.span = ident.span;
                name.0 = vec![ObjectNamePart::Identifier(renamed)];
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

fn literal_expr(text: &str) -> Result<Expr, ParserError> {
    Parser::new(&GenericDialect {})
        .try_with_sql(text)?
        .parse_expr()
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
            .map(|p| {
                p.as_ident()
                    .map(|i| {
                        if i.quote_style.is_some() {
                            i.value.clone()
                        } else {
                            i.value.to_lowercase()
                        }
                    })
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(".");
        if wanted.contains(&text) && !found.iter().any(|n| n.name == text) {
            let start = name.span().start;
            found.push(Named {
                name: text,
                line: start.line as usize,
                column: start.column as usize,
            });
        }
        ControlFlow::<()>::Continue(())
    });
    // Names the visitor could not place still count as dependencies.
    for t in wanted {
        if !found.iter().any(|n| n.name == t) {
            found.push(Named {
                name: t,
                line: 0,
                column: 0,
            });
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
    let position =
        position.or_else(|| message.contains("found: EOF").then(|| end_position(source)));
    Diagnostic::new(file, format!("SQL syntax error: {message}")).at_opt(position)
}

fn end_position(text: &str) -> (usize, usize) {
    let trimmed = text.trim_end();
    let line = trimmed.lines().count().max(1);
    let column = trimmed
        .lines()
        .last()
        .map(|l| l.chars().count() + 1)
        .unwrap_or(1);
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
        Some(span) if span.start.line > 0 => (
            message,
            Some((span.start.line as usize, span.start.column as usize)),
        ),
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
        let sql =
            "WITH x AS (SELECT * FROM stg_orders)\nSELECT * FROM x JOIN stg_customers c ON true";
        let m = SqlModel::parse(Path::new("m.sql"), sql).unwrap();
        let names: Vec<_> = m.references.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["stg_orders", "stg_customers"]);
        assert_eq!((m.references[1].line, m.references[1].column), (2, 22));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err =
            SqlModel::parse(Path::new("m.sql"), "SELECT a\nFROM t\nWHERE b = = 1").unwrap_err();
        assert_eq!((err.line, err.column), (Some(3), Some(11)), "{err}");
        let err = SqlModel::parse(Path::new("m.sql"), "SELECT a,\nFROM t WHERE").unwrap_err();
        assert!(
            err.to_string().starts_with("m.sql:2:13: SQL syntax error"),
            "{err}"
        );
    }

    #[test]
    fn materialized_ctes_become_tables_of_the_step() {
        let sql = "WITH a AS (SELECT * FROM t),\n  b AS MATERIALIZED (SELECT x FROM a),\n  c AS (SELECT x FROM b)\nSELECT * FROM b JOIN c ON b.x = c.x";
        let m = SqlModel::parse(Path::new("m.sql"), sql).unwrap();
        assert_eq!(m.materialized, vec!["b"]);
        assert_eq!(
            m.references
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            vec!["t"]
        );
        let (parts, main) = m.split_materialized(m.statement.clone(), "m");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, "m__b");
        let part = parts[0].1.to_string();
        assert!(
            part.starts_with("WITH a AS (SELECT * FROM t) SELECT x FROM a"),
            "{part}"
        );
        let main = main.to_string();
        assert!(
            main.contains("c AS (SELECT x FROM m__b)") && main.contains("FROM m__b JOIN c"),
            "{main}"
        );
        assert!(!main.contains("b AS"), "{main}");
        // Positions after the hint are unchanged.
        let err = SqlModel::parse(
            Path::new("m.sql"),
            "WITH b AS MATERIALIZED (SELECT 1)\nSELECT * FROM b WHERE = 1",
        )
        .unwrap_err();
        assert_eq!((err.line, err.column), (Some(2), Some(23)), "{err}");
        let err = SqlModel::parse(
            Path::new("m.sql"),
            "SELECT * FROM (WITH b AS MATERIALIZED (SELECT 1) SELECT * FROM b) s",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("m.sql:1:26: `b AS MATERIALIZED`"),
            "{err}"
        );
    }

    #[test]
    fn binds_parameters_as_literals() {
        let m = SqlModel::parse(
            Path::new("m.sql"),
            "SELECT * FROM t WHERE d <= $as_of AND s = $who",
        )
        .unwrap();
        assert_eq!(m.placeholders.len(), 2);
        let mut p = Params::new();
        p.insert(
            "as_of".into(),
            ParamValue::parse(crate::config::params::ParamType::Date, "2026-11-22").unwrap(),
        );
        p.insert("who".into(), ParamValue::String("x' OR 1=1 --".into()));
        let bound = m.bind(&p).unwrap().to_string();
        assert!(bound.contains("d <= DATE '2026-11-22'"), "{bound}");
        assert!(bound.contains("s = 'x'' OR 1=1 --'"), "{bound}");
        p.remove("who");
        assert!(m
            .bind(&p)
            .unwrap_err()
            .message
            .contains("unknown parameter `$who`"));
    }
}
