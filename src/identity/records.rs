//! The records of every input, held column by column with each attribute's values interned:
//! a record's value is a small integer (0 = null), so blocking keys, exact comparisons and
//! value frequencies cost no string work, and three million records fit in little memory.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{ident, SessionContext};

use super::config::Settings;

/// One attribute's interned values.
#[derive(Debug, Default)]
pub struct Column {
    /// Per record: index into `dict`, 0 = null.
    pub values: Vec<u32>,
    /// Distinct values; `dict[0]` is the null placeholder.
    pub dict: Vec<String>,
    /// Records per value (same indexes as `dict`).
    pub counts: Vec<u32>,
    lookup: HashMap<String, u32>,
}

impl Column {
    fn new() -> Self {
        Self {
            values: Vec::new(),
            dict: vec![String::new()],
            counts: vec![0],
            lookup: HashMap::new(),
        }
    }

    fn push(&mut self, value: Option<&str>) {
        let id = match value {
            None => 0,
            Some(v) => match self.lookup.get(v) {
                Some(&id) => id,
                None => {
                    let id = self.dict.len() as u32;
                    self.dict.push(v.to_string());
                    self.counts.push(0);
                    self.lookup.insert(v.to_string(), id);
                    id
                }
            },
        };
        self.counts[id as usize] += 1;
        self.values.push(id);
    }

    pub fn get(&self, record: usize) -> Option<&str> {
        match self.values[record] {
            0 => None,
            id => Some(&self.dict[id as usize]),
        }
    }

    /// Records with a value.
    pub fn non_null(&self) -> u64 {
        self.counts.iter().skip(1).map(|&c| c as u64).sum()
    }

    /// Per value (same indexes as `dict`): records with it over records with any value,
    /// the term frequency of the identity model.
    pub fn frequencies(&self) -> Vec<f64> {
        let total = self.non_null().max(1) as f64;
        self.counts.iter().map(|&n| n as f64 / total).collect()
    }

    fn seal(&mut self) {
        self.lookup = HashMap::new();
    }
}

/// What loading found wrong, for the quality table.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// (source, records loaded)
    pub per_source: Vec<(String, u64)>,
    pub missing_ids: u64,
    pub duplicate_ids: u64,
    /// (attribute, values dropped because a guard ignores them)
    pub ignored: Vec<(String, u64)>,
}

#[derive(Debug)]
pub struct Records {
    pub sources: Vec<String>,
    pub trust: Vec<i32>,
    /// Per record: index into `sources`.
    pub source_of: Vec<u16>,
    pub ids: Vec<String>,
    /// Per record: last change as text that sorts in time order (ISO dates/timestamps).
    pub updated_at: Vec<Option<String>>,
    pub attrs: Vec<Column>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn source(&self, record: usize) -> &str {
        &self.sources[self.source_of[record] as usize]
    }
}

/// A guard pattern: exact value or SQL LIKE with `%`.
struct Pattern(Vec<String>, bool);

impl Pattern {
    fn new(p: &str) -> Self {
        let p = p.trim().to_lowercase();
        if p.contains('%') {
            Pattern(p.split('%').map(str::to_string).collect(), true)
        } else {
            Pattern(vec![p], false)
        }
    }

    fn matches(&self, value: &str) -> bool {
        let v = value.trim().to_lowercase();
        if !self.1 {
            return v == self.0[0];
        }
        let parts = &self.0;
        let (first, last) = (&parts[0], &parts[parts.len() - 1]);
        if !v.starts_with(first.as_str())
            || v.len() < first.len() + last.len()
            || !v.ends_with(last.as_str())
        {
            return false;
        }
        let mut rest = &v[first.len()..v.len() - last.len()];
        for mid in &parts[1..parts.len() - 1] {
            match rest.find(mid.as_str()) {
                Some(i) => rest = &rest[i + mid.len()..],
                None => return false,
            }
        }
        true
    }
}

fn strings(array: &dyn Array) -> Result<StringArray> {
    let casted = cast(array, &DataType::Utf8)?;
    Ok(casted
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8")
        .clone())
}

fn clean(v: &str) -> Option<&str> {
    let t = v.trim_matches(|c: char| c.is_whitespace() || c == '\u{200b}' || c == '\u{feff}');
    (!t.is_empty()).then_some(t)
}

/// One input row, cleaned, before it is numbered.
struct RawRecord {
    id: String,
    updated_at: Option<String>,
    attrs: Vec<Option<String>>,
}

/// One source's rows, cleaned and with one row per id, in id order.
struct SourceRows {
    rows: Vec<RawRecord>,
    missing_ids: u64,
    duplicate_ids: u64,
}

/// Cleans one source's rows and keeps one per id.
///
/// Records are numbered in a canonical order (id, newest first, then every attribute), not
/// in the order partitions deliver them: record numbers break ties in sampling, pair
/// orientation, clustering and keys, so the step's results depend on the input rows alone.
/// Of the copies of one id, the most recently updated is kept; of copies updated at the
/// same time, the one with the most attributes filled, then the first by value.
fn source_rows(
    batches: &[datafusion::arrow::array::RecordBatch],
    attrs: &[String],
) -> Result<SourceRows> {
    let mut missing_ids = 0;
    let mut rows: Vec<RawRecord> = Vec::new();
    for batch in batches {
        let ids = strings(batch.column_by_name("__id").expect("selected"))?;
        let updated = batch
            .column_by_name("__updated_at")
            .map(|a| strings(a))
            .transpose()?;
        let columns: Vec<Option<StringArray>> = attrs
            .iter()
            .map(|a| {
                batch
                    .column_by_name(&format!("__attr_{a}"))
                    .map(|c| strings(c))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        for row in 0..batch.num_rows() {
            let Some(id) = (!ids.is_null(row)).then(|| ids.value(row)).and_then(clean) else {
                missing_ids += 1;
                continue;
            };
            let text = |c: &StringArray| {
                (!c.is_null(row))
                    .then(|| c.value(row))
                    .and_then(clean)
                    .map(str::to_string)
            };
            rows.push(RawRecord {
                id: id.to_string(),
                updated_at: updated.as_ref().and_then(text),
                attrs: columns.iter().map(|c| c.as_ref().and_then(text)).collect(),
            });
        }
    }
    let filled = |r: &RawRecord| r.attrs.iter().filter(|a| a.is_some()).count();
    rows.sort_unstable_by(|a, b| {
        a.id.cmp(&b.id)
            .then_with(|| b.updated_at.cmp(&a.updated_at))
            .then_with(|| filled(b).cmp(&filled(a)))
            .then_with(|| a.attrs.cmp(&b.attrs))
    });
    let before = rows.len();
    rows.dedup_by(|later, first| later.id == first.id);
    Ok(SourceRows {
        duplicate_ids: (before - rows.len()) as u64,
        rows,
        missing_ids,
    })
}

/// Reads every input table. A record without an id is skipped and a repeated (source, id)
/// keeps its most recently updated row; both are counted, never silently dropped.
///
/// The inputs' queries run at once, each source's rows are cleaned and sorted on a thread
/// of its own, and each attribute's values are interned on a thread of its own: the result
/// is the same as one pass in order (sources in their declared order, then ids).
pub async fn load(ctx: &SessionContext, settings: &Settings) -> Result<(Records, LoadReport)> {
    let attrs = &settings.attributes;
    let inputs = &settings.raw.inputs;
    let batches = futures::future::try_join_all(inputs.iter().map(|input| async move {
        let table = input.table.to_lowercase();
        let mut exprs = vec![ident(input.id.as_str()).alias("__id")];
        if let Some(u) = &input.updated_at {
            exprs.push(ident(u.as_str()).alias("__updated_at"));
        }
        for (a, c) in &input.attributes {
            exprs.push(ident(c.as_str()).alias(format!("__attr_{a}")));
        }
        let df = ctx
            .table(table.as_str())
            .await?
            .select(exprs)
            .map_err(|e| DataFusionError::Plan(format!("identity input `{}`: {e}", input.table)))?;
        df.collect().await
    }))
    .await?;
    let sources: Vec<SourceRows> = std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .iter()
            .map(|b| scope.spawn(|| source_rows(b, attrs)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .expect("a source's rows are read without panicking")
            })
            .collect::<Result<Vec<_>>>()
    })?;
    drop(batches);

    let mut report = LoadReport::default();
    for (input, source) in inputs.iter().zip(&sources) {
        report.missing_ids += source.missing_ids;
        report.duplicate_ids += source.duplicate_ids;
        report
            .per_source
            .push((input.source.clone(), source.rows.len() as u64));
    }
    // Each attribute's column, with the values its guards ignore dropped and counted.
    let columns: Vec<(Column, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = attrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let sources = &sources;
                scope.spawn(move || {
                    let patterns: Vec<Pattern> = settings
                        .raw
                        .guards
                        .ignore_values
                        .get(a)
                        .map(|v| v.iter().map(|p| Pattern::new(p)).collect())
                        .unwrap_or_default();
                    let mut column = Column::new();
                    let mut ignored = 0u64;
                    for row in sources.iter().flat_map(|s| &s.rows) {
                        let value = match row.attrs[i].as_deref() {
                            Some(v) if patterns.iter().any(|p| p.matches(v)) => {
                                ignored += 1;
                                None
                            }
                            other => other,
                        };
                        column.push(value);
                    }
                    column.seal();
                    (column, ignored)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a column is built without panicking"))
            .collect()
    });
    report.ignored = attrs
        .iter()
        .zip(&columns)
        .filter(|(_, (_, n))| *n > 0)
        .map(|(a, (_, n))| (a.clone(), *n))
        .collect();
    let mut records = Records {
        sources: inputs.iter().map(|i| i.source.clone()).collect(),
        trust: inputs.iter().map(|i| i.trust).collect(),
        source_of: Vec::new(),
        ids: Vec::new(),
        updated_at: Vec::new(),
        attrs: columns.into_iter().map(|(c, _)| c).collect(),
    };
    for (source_idx, source) in sources.into_iter().enumerate() {
        for row in source.rows {
            records.source_of.push(source_idx as u16);
            records.ids.push(row.id);
            records.updated_at.push(row.updated_at);
        }
    }
    Ok((records, report))
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn like_patterns_match_like_sql() {
        assert!(Pattern::new("test@%").matches("TEST@example.com"));
        assert!(Pattern::new("%@example.com").matches("a@example.com"));
        assert!(Pattern::new("a%b%c").matches("axxbyyc"));
        assert!(!Pattern::new("a%b%c").matches("acb"));
        assert!(Pattern::new("+4570102030").matches(" +4570102030 "));
        assert!(!Pattern::new("+4570102030").matches("+4570102031"));
        assert!(!Pattern::new("ab%ba").matches("aba"));
    }
}
