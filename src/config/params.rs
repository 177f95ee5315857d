//! Pipeline parameters: declared with a type, bound from defaults and the command line,
//! and rendered into SQL as typed literals and into paths as checked path segments.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Date,
    Int,
    Float,
    String,
    Bool,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Date => "date",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::String => "string",
            ParamType::Bool => "bool",
        })
    }
}

/// A typed parameter value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Date(NaiveDate),
    Int(i64),
    Float(f64),
    String(String),
    Bool(bool),
}

impl ParamValue {
    /// Parses text (from the command line or a job) as the declared type.
    pub fn parse(kind: ParamType, text: &str) -> Result<Self, String> {
        let t = text.trim();
        match kind {
            ParamType::Date => NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .map(ParamValue::Date)
                .map_err(|_| format!("{text:?} is not a date (expected YYYY-MM-DD)")),
            ParamType::Int => t
                .parse()
                .map(ParamValue::Int)
                .map_err(|_| format!("{text:?} is not an integer")),
            ParamType::Float => match t.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(ParamValue::Float(v)),
                _ => Err(format!("{text:?} is not a finite number")),
            },
            ParamType::String => Ok(ParamValue::String(text.to_string())),
            ParamType::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(ParamValue::Bool(true)),
                "false" | "no" | "0" => Ok(ParamValue::Bool(false)),
                _ => Err(format!(
                    "{text:?} is not a boolean (expected true or false)"
                )),
            },
        }
    }

    /// Converts a YAML default to the declared type.
    pub fn from_yaml(kind: ParamType, value: &serde_yaml::Value) -> Result<Self, String> {
        match value {
            serde_yaml::Value::String(s) => Self::parse(kind, s),
            serde_yaml::Value::Number(n) => Self::parse(kind, &n.to_string()),
            serde_yaml::Value::Bool(b) => Self::parse(kind, &b.to_string()),
            other => Err(format!(
                "expected a {kind} value, found {}",
                yaml_kind(other)
            )),
        }
    }

    /// The value as a SQL literal of its type. Strings are quoted with `'` doubled, so
    /// no value can end the literal; dates are `DATE 'YYYY-MM-DD'`.
    pub fn sql_literal(&self) -> String {
        match self {
            ParamValue::Date(d) => format!("DATE '{}'", d.format("%Y-%m-%d")),
            ParamValue::Int(i) => format!("CAST({i} AS BIGINT)"),
            ParamValue::Float(v) => format!("CAST({v:?} AS DOUBLE)"),
            ParamValue::String(s) => format!("'{}'", s.replace('\'', "''")),
            ParamValue::Bool(b) => b.to_string().to_uppercase(),
        }
    }

    /// The value as one path segment. Values that could leave the store prefix or
    /// change the path's structure (`/`, `..`, control characters) are refused.
    pub fn path_segment(&self) -> Result<String, String> {
        let text = self.to_string();
        let bad = text.is_empty()
            || text == "."
            || text == ".."
            || text.contains(['/', '\\'])
            || text.chars().any(|c| c.is_control())
            || text.contains("..");
        if bad {
            Err(format!("value {text:?} cannot be used in a path"))
        } else {
            Ok(text)
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::String(s) => f.write_str(s),
            ParamValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

pub fn yaml_kind(value: &serde_yaml::Value) -> &'static str {
    match value {
        serde_yaml::Value::Null => "null",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// Bound parameter values of one run, by name.
pub type Params = BTreeMap<String, ParamValue>;

/// Replaces `{name}` in a path template by the parameter's path segment.
pub fn render_path(template: &str, params: &Params) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in path {template:?}"))?;
        let name = &after[..end];
        let value = params
            .get(name)
            .ok_or_else(|| format!("path {template:?} names unknown parameter `{name}`"))?;
        out.push_str(
            &value
                .path_segment()
                .map_err(|e| format!("parameter `{name}`: {e}"))?,
        );
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parameter names a path template refers to.
pub fn path_params(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                names.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_break_out() {
        let v = ParamValue::String("x'; DROP TABLE t; --".into());
        assert_eq!(v.sql_literal(), "'x''; DROP TABLE t; --'");
        let d = ParamValue::parse(ParamType::Date, "2026-11-22").unwrap();
        assert_eq!(d.sql_literal(), "DATE '2026-11-22'");
        assert!(ParamValue::parse(ParamType::Date, "2026-11-22'--").is_err());
    }

    #[test]
    fn paths_stay_inside_their_prefix() {
        let mut p = Params::new();
        p.insert(
            "as_of".into(),
            ParamValue::parse(ParamType::Date, "2026-11-22").unwrap(),
        );
        p.insert("evil".into(), ParamValue::String("../../etc".into()));
        assert_eq!(
            render_path("erp/{as_of}/orders.csv", &p).unwrap(),
            "erp/2026-11-22/orders.csv"
        );
        assert!(render_path("erp/{evil}/x", &p).is_err());
        assert!(render_path("erp/{nope}/x", &p).is_err());
    }
}
