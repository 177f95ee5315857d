//! String similarity for fuzzy matching: edit distances, Jaro-Winkler and a token-set
//! score. All count Unicode characters (not bytes) of the NFC form, so `é` and `e` +
//! combining accent are one and the same character. None of them normalises further:
//! compare matching keys (`normalize_name`) to ignore case, accents and spacing.

use std::collections::BTreeSet;

use crate::clean::nfc;

/// Jaro-Winkler similarity, 0.0 (nothing in common) to 1.0 (equal), favouring strings
/// that share a prefix (up to four characters), as typos are rarer at the start of a
/// name. Two empty strings are 1.0, one empty string against another is 0.0.
///
/// ```
/// use crm_text::jaro_winkler;
///
/// assert!((jaro_winkler("martha", "marhta") - 0.9611).abs() < 1e-4);
/// assert_eq!(jaro_winkler("jensen", "jensen"), 1.0);
/// assert_eq!(jaro_winkler("", "jensen"), 0.0);
/// ```
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    strsim::jaro_winkler(&nfc(a), &nfc(b))
}

/// Levenshtein distance: the fewest single-character insertions, deletions and
/// substitutions that turn `a` into `b`.
///
/// ```
/// use crm_text::levenshtein;
///
/// assert_eq!(levenshtein("kitten", "sitting"), 3);
/// assert_eq!(levenshtein("jensen", "jesnen"), 2);
/// assert_eq!(levenshtein("", "abc"), 3);
/// ```
pub fn levenshtein(a: &str, b: &str) -> usize {
    strsim::levenshtein(&nfc(a), &nfc(b))
}

/// Damerau-Levenshtein distance: like [`levenshtein`], but swapping two adjacent
/// characters is one edit, the most common typing error. This is the unrestricted
/// distance (a swapped pair may be edited again, so `ca` to `abc` is 2), not the
/// "optimal string alignment" variant.
///
/// ```
/// use crm_text::damerau_levenshtein;
///
/// assert_eq!(damerau_levenshtein("jensen", "jesnen"), 1);
/// assert_eq!(damerau_levenshtein("ca", "abc"), 2);
/// ```
pub fn damerau_levenshtein(a: &str, b: &str) -> usize {
    strsim::damerau_levenshtein(&nfc(a), &nfc(b))
}

/// Token-set similarity, 0.0 to 1.0: rapidfuzz's `token_set_ratio` divided by 100.
///
/// Both strings are split on whitespace into sets of words (order and repeats do not
/// count). With `common` the shared words and `only_a`, `only_b` the rest, each sorted
/// and joined by spaces, the score is the best Indel similarity among `common` vs
/// `common + only_a`, `common` vs `common + only_b` and `common + only_a` vs
/// `common + only_b`. So swapped first and last names score 1.0, a name whose words are
/// all in the other (a missing middle name) scores 1.0, and a typo in one word costs
/// little, unlike Jaccard on tokens, where one typo makes a word count as different.
/// The price of the subset rule: `jensen` against `anna jensen` is 1.0 too, so use it
/// on full names inside a block, next to other evidence. Returns 0.0 when either side
/// has no word: a missing name is no evidence of a match.
///
/// ```
/// use crm_text::token_set_similarity;
///
/// assert_eq!(token_set_similarity("jensen anna", "anna jensen"), 1.0);
/// assert_eq!(token_set_similarity("anna jensen", "anna marie jensen"), 1.0);
/// assert!((token_set_similarity("anna jensen", "anna jenssen") - 22.0 / 23.0).abs() < 1e-12);
/// assert_eq!(token_set_similarity("", "anna"), 0.0);
/// ```
pub fn token_set_similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (nfc(a), nfc(b));
    let words_a: BTreeSet<&str> = a.split_whitespace().collect();
    let words_b: BTreeSet<&str> = b.split_whitespace().collect();
    if words_a.is_empty() || words_b.is_empty() {
        return 0.0;
    }
    let join = |words: Vec<&str>| words.join(" ");
    let common = join(words_a.intersection(&words_b).copied().collect());
    let only_a = join(words_a.difference(&words_b).copied().collect());
    let only_b = join(words_b.difference(&words_a).copied().collect());
    if !common.is_empty() && (only_a.is_empty() || only_b.is_empty()) {
        return 1.0;
    }
    let with = |rest: &str| {
        if common.is_empty() {
            rest.to_string()
        } else {
            format!("{common} {rest}")
        }
    };
    let (with_a, with_b) = (with(&only_a), with(&only_b));
    let ratio = |x: &str, y: &str| rapidfuzz::fuzz::ratio(x.chars(), y.chars());
    let mut best = ratio(&with_a, &with_b);
    if !common.is_empty() {
        best = best
            .max(ratio(&common, &with_a))
            .max(ratio(&common, &with_b));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn jaro_winkler_reference_values() {
        // Winkler's examples, as in strsim and rapidfuzz.
        assert!(close(jaro_winkler("martha", "marhta"), 0.9611));
        assert!(close(jaro_winkler("dwayne", "duane"), 0.84));
        assert!(close(jaro_winkler("dixon", "dicksonx"), 0.8133));
        assert_eq!(jaro_winkler("", ""), 1.0);
        assert_eq!(jaro_winkler("abc", ""), 0.0);
        assert_eq!(jaro_winkler("abc", "xyz"), 0.0);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("jensen", "jesnen"), 2);
        assert_eq!(damerau_levenshtein("jensen", "jesnen"), 1);
        assert_eq!(damerau_levenshtein("ca", "abc"), 2);
        assert_eq!(damerau_levenshtein("", "abc"), 3);
        assert_eq!(damerau_levenshtein("", ""), 0);
    }

    #[test]
    fn token_set_like_rapidfuzz() {
        // rapidfuzz documents token_set_ratio("fuzzy was a bear", "fuzzy fuzzy was a bear") == 100.
        assert_eq!(
            token_set_similarity("fuzzy was a bear", "fuzzy fuzzy was a bear"),
            1.0
        );
        assert_eq!(token_set_similarity("hansen jensen", "jensen  hansen"), 1.0);
        // No shared word: Indel ratio of the sorted words, 1 - 2/12.
        assert!(close(token_set_similarity("jensen", "jenson"), 10.0 / 12.0));
        assert!(close(
            token_set_similarity("anna jensen", "anna jenssen"),
            22.0 / 23.0
        ));
        assert_eq!(token_set_similarity("abc", "xyz"), 0.0);
        assert_eq!(token_set_similarity(" ", "anna"), 0.0);
        assert_eq!(token_set_similarity("", ""), 0.0);
    }

    #[test]
    fn unicode_counts_characters_not_bytes() {
        assert_eq!(levenshtein("s\u{F8}ren", "soren"), 1);
        assert_eq!(levenshtein("jos\u{E9}", "jose\u{301}"), 0);
        assert_eq!(damerau_levenshtein("jos\u{E9}", "jose\u{301}"), 0);
        assert_eq!(jaro_winkler("jos\u{E9}", "jose\u{301}"), 1.0);
        assert_eq!(token_set_similarity("jos\u{E9} ib", "ib jose\u{301}"), 1.0);
        assert_eq!(levenshtein("\u{1F600}", "\u{1F601}"), 1);
        assert_eq!(
            token_set_similarity("anna\u{A0}berg", "berg anna"),
            1.0,
            "NBSP splits words"
        );
    }
}
