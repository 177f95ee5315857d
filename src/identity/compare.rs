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
                    records.attrs[c.attribute].dict.iter().map(|v| crm_text::double_metaphone(v)).collect()
                })
            })
            .collect();
        Self { records, comparisons, metaphones }
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
        let (sa, sb) = (column.dict[va as usize].as_str(), column.dict[vb as usize].as_str());
        for (i, level) in cmp.levels.iter().enumerate() {
            let hit = match level {
                Level::Exact => va == vb,
                Level::JaroWinkler(t) => va == vb || crm_text::jaro_winkler(sa, sb) >= *t,
                Level::Levenshtein(k) => va == vb || crm_text::levenshtein(sa, sb) <= *k,
                Level::DamerauLevenshtein(k) => va == vb || crm_text::damerau_levenshtein(sa, sb) <= *k,
                Level::TokenSet(t) => va == vb || crm_text::token_set_similarity(sa, sb) >= *t,
                Level::Metaphone => {
                    let codes = self.metaphones[c].as_ref().expect("precomputed");
                    let (pa, aa) = &codes[va as usize];
                    let (pb, ab) = &codes[vb as usize];
                    !pa.is_empty() && (pa == pb || pa == ab || aa == pb || (!aa.is_empty() && aa == ab))
                }
                Level::Swapped(_) => {
                    let other = &self.records.attrs[cmp.swapped_with[i].expect("resolved")];
                    let (oa, ob) = (other.get(a), other.get(b));
                    matches!((oa, ob), (Some(oa), Some(ob)) if oa == sb && ob == sa)
                }
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
        exclusive.iter().any(|&c| self.level(c, a, b) == self.comparisons[c].else_level())
    }
}
