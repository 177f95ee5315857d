//! Problems found in configuration files, each tied to a file and, where known, a line
//! and column, so that `validate` can report every one of them at once.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one configuration or SQL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    pub fn at_opt(self, position: Option<(usize, usize)>) -> Self {
        match position {
            Some((line, column)) => self.at(line, column),
            None => self,
        }
    }

    /// The diagnostic for a YAML document that serde could not read: serde_yaml knows
    /// where it stopped and what it expected.
    pub fn from_yaml(file: &Path, err: &serde_yaml::Error) -> Self {
        let mut message = err.to_string();
        // serde_yaml appends " at line L column C"; we print the position as file:line:col.
        if let Some(idx) = message.find(" at line ") {
            message.truncate(idx);
        }
        let diag = Diagnostic::new(file, message);
        match err.location() {
            Some(loc) => diag.at(loc.line(), loc.column()),
            None => diag,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while compiling configuration; an error only when non-empty.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing was reported, otherwise every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration problem{} found:",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.0 {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Finds where a key path (`["sources", "orders", "store"]`) sits in a block-style YAML
/// document, so that problems found after parsing still point at a line and column.
/// serde_yaml keeps no positions for values; this scan covers the block style our
/// files use and gives up (None) on anything else.
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let mut found: Option<(usize, usize)> = None;
    let mut depth_indent: Option<usize> = None;
    let mut want = 0;
    for (idx, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut body = trimmed;
        // A list item "- key: v" opens a mapping two columns further in.
        while let Some(rest) = body.strip_prefix("- ") {
            indent += 2;
            body = rest.trim_start();
        }
        if let Some(parent) = depth_indent {
            if indent <= parent && want > 0 {
                // Left the block of the last matched key without finding the next one.
                if let Some(pos) = found {
                    if want < path.len() {
                        return Some(pos);
                    }
                }
                return found;
            }
        }
        if want == 0 && indent != 0 {
            continue;
        }
        let key = body
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"')
            .trim_matches('\'');
        if want < path.len() && key == path[want] && body.contains(':') {
            found = Some((idx + 1, indent + 1));
            depth_indent = Some(indent);
            want += 1;
            if want == path.len() {
                return found;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys() {
        let text = "name: x\nsources:\n  orders:\n    store: exprots\n    path: a.csv\nsteps:\n  - sql: a.sql\n";
        assert_eq!(locate(text, &["sources", "orders", "store"]), Some((4, 5)));
        assert_eq!(locate(text, &["steps"]), Some((6, 1)));
        assert_eq!(locate(text, &["sources", "missing"]), Some((2, 1)));
    }

    #[test]
    fn prints_file_line_column() {
        let d = Diagnostic::new("p.yaml", "unknown store").at(3, 7);
        assert_eq!(d.to_string(), "p.yaml:3:7: unknown store");
    }
}
