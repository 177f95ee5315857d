//! Comparison levels of a record pair: for each comparison, the first configured level the
//! two values reach, 0 when either is null, and "else" when they reach none.

use super::config::{Comparison, Level};
use super::records::Records;

/// Comparisons with what they need precomputed (phonetic codes per distinct value).
pub struct Comparator<'a> {
    pub records: &'a Records,
    pub comparisons: &'a [Comparison],
    metaphones: Vec<Option<Vec<(String, String)>>>,
}

impl<'a> Comparator<'a> {
    pub fn new(records: &'a Records, comparisons: &'a [Comparison]) -> Self {
        let metaphones = comparisons
            .iter()
            .map(|c| {
                c.levels.contains(&Level::Metaphone).then(|| {
                    let dict = &records.attrs[c.attribute].dict;
                    super::par_map(dict.len(), |i| crm_text::double_metaphone(&dict[i]))
                })
            })
            .collect();
        Self {
            records,
            comparisons,
            metaphones,
        }
    }

    /// Level code of comparison `c` for records `a` and `b`.
    pub fn level(&self, c: usize, a: usize, b: usize) -> u8 {
        let cmp = &self.comparisons[c];
        let column = &self.records.attrs[cmp.attribute];
        let (va, vb) = (column.values[a], column.values[b]);
        if va == 0 || vb == 0 {
            // A missing value is no evidence either way.
            return 0;
        }
        let (sa, sb) = (
            column.dict[va as usize].as_str(),
            column.dict[vb as usize].as_str(),
        );
        for (i, level) in cmp.levels.iter().enumerate() {
            let hit = match level {
                // Values are interned: equal ids are equal texts.
                Level::Exact => va == vb,
                Level::Metaphone => {
                    let codes = self.metaphones[c].as_ref().expect("precomputed");
                    metaphones_agree(&codes[va as usize], &codes[vb as usize])
                }
                Level::Swapped(_) => {
                    let other = &self.records.attrs[cmp.swapped_with[i].expect("resolved")];
                    swapped(sa, sb, other.get(a), other.get(b))
                }
                _ => va == vb || similar(level, sa, sb),
            };
            if hit {
                return (i + 1) as u8;
            }
        }
        cmp.else_level()
    }

    /// All comparison levels of a pair, into `out`.
    pub fn levels(&self, a: usize, b: usize, out: &mut [u8]) {
        for (c, slot) in out.iter_mut().enumerate() {
            *slot = self.level(c, a, b);
        }
    }

    /// Whether `a` and `b` clearly disagree on any of `exclusive` (a comparison falls to else).
    pub fn conflict(&self, exclusive: &[usize], a: usize, b: usize) -> bool {
        exclusive
            .iter()
            .any(|&c| self.level(c, a, b) == self.comparisons[c].else_level())
    }
}

/// Whether two texts reach a similarity level (`Exact`, and the levels that need more than
/// the two texts, are handled by the callers).
fn similar(level: &Level, a: &str, b: &str) -> bool {
    match level {
        Level::Exact => a == b,
        Level::JaroWinkler(t) => crm_text::jaro_winkler(a, b) >= *t,
        Level::Levenshtein(k) => crm_text::levenshtein(a, b) <= *k,
        Level::DamerauLevenshtein(k) => crm_text::damerau_levenshtein(a, b) <= *k,
        Level::TokenSet(t) => crm_text::token_set_similarity(a, b) >= *t,
        Level::Metaphone | Level::Swapped(_) => false,
    }
}

/// Double Metaphone codes (primary, alternate) agree: a non-empty primary equals the other
/// side's primary or alternate, or two non-empty alternates are equal.
fn metaphones_agree((pa, aa): &(String, String), (pb, ab): &(String, String)) -> bool {
    !pa.is_empty() && (pa == pb || pa == ab || aa == pb || (!aa.is_empty() && aa == ab))
}

/// The attribute of each record equals the other record's `other` attribute.
fn swapped(a: &str, b: &str, other_a: Option<&str>, other_b: Option<&str>) -> bool {
    matches!((other_a, other_b), (Some(oa), Some(ob)) if oa == b && ob == a)
}

/// The level code of two values of one comparison from their texts alone, as
/// [`Comparator::level`] gives it from interned records: what the query engine computes
/// when it compares candidate pairs (`identity_level` in SQL). `others` holds, per
/// `Swapped` level in order, the two records' values of the other attribute.
pub fn level_of_texts(
    levels: &[Level],
    a: Option<&str>,
    b: Option<&str>,
    others: &[(Option<&str>, Option<&str>)],
) -> u8 {
    let (Some(sa), Some(sb)) = (a, b) else {
        return 0;
    };
    let mut swaps = others.iter();
    for (i, level) in levels.iter().enumerate() {
        let hit = match level {
            Level::Metaphone => metaphones_agree(
                &crm_text::double_metaphone(sa),
                &crm_text::double_metaphone(sb),
            ),
            Level::Swapped(_) => {
                let (oa, ob) = swaps.next().copied().unwrap_or((None, None));
                swapped(sa, sb, oa, ob)
            }
            _ => sa == sb || similar(level, sa, sb),
        };
        if hit {
            return (i + 1) as u8;
        }
    }
    (levels.len() + 1) as u8
}

/// Levels as one line of text, for `identity_level`'s first argument: `exact`,
/// `jaro_winkler>=0.92`, ... joined by `;` (a float prints so that it parses back to
/// itself).
pub fn levels_spec(levels: &[Level]) -> String {
    levels
        .iter()
        .map(|l| match l {
            Level::Swapped(_) => "swapped".to_string(),
            other => other.label(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses [`levels_spec`]'s text.
pub fn parse_levels_spec(spec: &str) -> Result<Vec<Level>, String> {
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    spec.split(';')
        .map(|part| {
            let bad = || format!("identity_level: bad level `{part}`");
            let float = |v: &str| v.parse::<f64>().map_err(|_| bad());
            let int = |v: &str| v.parse::<usize>().map_err(|_| bad());
            Ok(match part {
                "exact" => Level::Exact,
                "metaphone" => Level::Metaphone,
                "swapped" => Level::Swapped(String::new()),
                _ => match part.split_once(">=").or_else(|| part.split_once("<=")) {
                    Some(("jaro_winkler", v)) => Level::JaroWinkler(float(v)?),
                    Some(("token_set", v)) => Level::TokenSet(float(v)?),
                    Some(("levenshtein", v)) => Level::Levenshtein(int(v)?),
                    Some(("damerau_levenshtein", v)) => Level::DamerauLevenshtein(int(v)?),
                    _ => return Err(bad()),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_back_as_its_levels() {
        let levels = vec![
            Level::Exact,
            Level::JaroWinkler(0.9234567891234),
            Level::Levenshtein(2),
            Level::DamerauLevenshtein(1),
            Level::TokenSet(0.8),
            Level::Metaphone,
            Level::Swapped(String::new()),
        ];
        assert_eq!(parse_levels_spec(&levels_spec(&levels)).unwrap(), levels);
        assert!(parse_levels_spec("jaro_winkler>=x").is_err());
    }

    #[test]
    fn levels_from_texts_by_hand() {
        let levels = [
            Level::Exact,
            Level::Swapped("last".into()),
            Level::JaroWinkler(0.9),
            Level::Metaphone,
        ];
        let level = |a, b, o: (Option<&str>, Option<&str>)| level_of_texts(&levels, a, b, &[o]);
        assert_eq!(level(Some("anna"), Some("anna"), (None, None)), 1);
        assert_eq!(level(None, Some("anna"), (None, None)), 0);
        // First and last names swapped.
        assert_eq!(
            level(Some("anna"), Some("berg"), (Some("berg"), Some("anna"))),
            2
        );
        assert_eq!(level(Some("martha"), Some("marhta"), (None, None)), 3);
        // Smith / Smyth: Jaro-Winkler 0.893, below 0.9; the same metaphone.
        assert_eq!(level(Some("smith"), Some("smyth"), (None, None)), 4);
        assert_eq!(level(Some("anna"), Some("zoe"), (None, None)), 5);
    }
}
