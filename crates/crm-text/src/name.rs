//! Person names as matching keys.

use deunicode::deunicode_char;

use crate::clean::{is_invisible, nfc};

/// A matching key for a person's name: two spellings that a Danish clerk, a web form and
/// an ASCII-only system make of one name give the same key. Not for display.
///
/// The rule, in order:
///
/// 1. Letters are transliterated to ASCII and lower-cased: accents go (`é` to `e`, also
///    when written as `e` + combining accent), and letters without an accent to strip are
///    spelled out (`ø` to `o`, `æ` to `ae`, `ß` to `ss`, `ł` to `l`, Cyrillic and Greek
///    to Latin).
/// 2. Whitespace (also non-breaking), hyphens and dashes, `.`, `,`, `/` and `_` separate
///    words; the key's words are separated by one space. Apostrophes join
///    (`O'Brien` to `obrien`). Digits stay. Everything else (emoji, symbols, invisible
///    characters) is dropped.
/// 3. Within a word, `e` after `a`, `o` or `u` is dropped, and `a` after `a`, so the
///    Nordic and German letters and their two usual ASCII spellings meet:
///    `ø`/`oe`/`ö`/`o` become `o`, `æ`/`ae`/`ä`/`a` and `å`/`aa` become `a`,
///    `ü`/`ue`/`u` become `u`. Runs collapse (`aae` to `a`), so the rule is idempotent.
///
/// Trade-offs, all in the direction of matching more: names that differ only in those
/// letters collide (`Michael`/`Michal`, `Noel`/`Nol`, `Samuel`/`Samul`); a double-barrelled
/// name and its two words are the same key whether hyphenated or not, but `Marie-Louise`
/// and `Marielouise` differ; word order is kept, so swapped first and last names need
/// [`token_set_similarity`](crate::token_set_similarity). Non-Latin scripts are
/// romanised by table, which is good enough to compare a name with itself, not for
/// linguistic romanisation. Returns `None` when nothing is left.
///
/// ```
/// use crm_text::normalize_name;
///
/// let key = normalize_name("Østergaard");
/// assert_eq!(key.as_deref(), Some("ostergard"));
/// assert_eq!(normalize_name("Oestergaard"), key);
/// assert_eq!(normalize_name("OSTERGÅRD"), key);
/// assert_eq!(normalize_name("  Søren   Jørgensen-Kjær "), Some("soren jorgensen kjar".into()));
/// assert_eq!(normalize_name("Soeren Joergensen - Kjaer"), Some("soren jorgensen kjar".into()));
/// assert_eq!(normalize_name(" -- "), None);
/// ```
pub fn normalize_name(raw: &str) -> Option<String> {
    let text = nfc(raw);
    let mut key = Key::default();
    for c in text.chars() {
        if is_separator(c) {
            key.separate();
        } else if c.is_ascii_alphanumeric() {
            key.push(c.to_ascii_lowercase());
        } else if c.is_alphanumeric() {
            let Some(ascii) = deunicode_char(c) else {
                continue;
            };
            ascii
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .for_each(|a| key.push(a.to_ascii_lowercase()));
            // Some transliterations are words ("Bei " for 北).
            if ascii.ends_with(' ') {
                key.separate();
            }
        }
        // Apostrophes, emoji, symbols, invisible characters and combining marks left
        // after NFC are dropped without separating.
    }
    (!key.text.is_empty()).then_some(key.text)
}

fn is_separator(c: char) -> bool {
    (c.is_whitespace() && !is_invisible(c))
        || matches!(
            c,
            '-' | '\u{2010}'
                ..='\u{2015}'
                    | '\u{2212}'
                    | '.'
                    | ','
                    | '/'
                    | '_'
                    | '\u{FE58}'
                    | '\u{FE63}'
                    | '\u{FF0D}'
        )
}

/// The key being built. A word separator is only written once the next letter
/// arrives, so none leads, trails or doubles.
#[derive(Default)]
struct Key {
    text: String,
    pending_space: bool,
}

impl Key {
    fn separate(&mut self) {
        self.pending_space = !self.text.is_empty();
    }

    fn push(&mut self, c: char) {
        if self.pending_space {
            self.text.push(' ');
            self.pending_space = false;
        }
        push_folded(&mut self.text, c);
    }
}

/// Appends `c` unless the digraph rule (step 3) drops it after the last letter.
fn push_folded(key: &mut String, c: char) {
    let drop = matches!(
        (key.as_bytes().last(), c),
        (Some(b'a'), 'a' | 'e') | (Some(b'o' | b'u'), 'e')
    );
    if !drop {
        key.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<String> {
        normalize_name(s)
    }

    fn all_same(names: &[&str]) {
        let first = key(names[0]);
        assert!(first.is_some(), "{:?}", names[0]);
        for n in names {
            assert_eq!(key(n), first, "{n:?} vs {:?}", names[0]);
        }
    }

    #[test]
    fn nordic_letters_and_their_ascii_spellings_meet() {
        all_same(&[
            "Østergaard",
            "Oestergaard",
            "Ostergaard",
            "ØSTERGÅRD",
            "Östergaard",
            "østergård",
        ]);
        all_same(&["Søren", "Soeren", "Soren", "SØREN", "Sören"]);
        all_same(&["Jørgensen", "Joergensen", "Jorgensen", "Jörgensen"]);
        all_same(&["Kjær", "Kjaer", "Kjär", "Kjar"]);
        all_same(&["Åse", "Aase", "Ase"]);
        all_same(&["Müller", "Mueller", "Muller"]);
        all_same(&["Aabenraa", "Åbenrå", "Abenra"]);
        assert_eq!(key("Østergaard").as_deref(), Some("ostergard"));
    }

    #[test]
    fn whitespace_and_hyphens_are_one_separator() {
        all_same(&[
            "Hansen-Jensen",
            "Hansen Jensen",
            "  hansen  -  jensen ",
            "Hansen\u{2013}Jensen",
            "HANSEN\u{A0}JENSEN",
            "Hansen\t\nJensen",
        ]);
        assert_eq!(
            key("Anne-Marie  Hansen").as_deref(),
            Some("anne marie hansen")
        );
        assert_eq!(key("J. P. Jensen").as_deref(), Some("j p jensen"));
    }

    #[test]
    fn accents_punctuation_and_scripts() {
        all_same(&["José", "Jose", "JOSE\u{301}", "jose\u{301}"]);
        all_same(&["O'Brien", "OBrien", "O\u{2019}Brien"]);
        assert_eq!(key("Straße").as_deref(), Some("strasse"));
        assert_eq!(key("Łukasz").as_deref(), Some("lukasz"));
        assert_eq!(key("Наталья").as_deref(), Some("natalia"));
        assert_eq!(key("Carl 2").as_deref(), Some("carl 2"));
    }

    #[test]
    fn unicode_oddities() {
        all_same(&[
            "Anna",
            "An\u{200B}na",
            "\u{FEFF}Anna",
            "An\u{00AD}na",
            "Anna \u{1F600}",
            "\u{1F469}\u{200D}\u{1F4BB}Anna",
        ]);
        assert_eq!(key("Anna \u{1F600} Berg").as_deref(), Some("anna berg"));
        for empty in [
            "",
            "   ",
            "\u{A0}",
            "\u{200B}",
            "\u{1F600}",
            "-",
            "'",
            "\u{301}",
        ] {
            assert_eq!(key(empty), None, "{empty:?}");
        }
    }

    #[test]
    fn the_key_is_its_own_key() {
        for n in [
            "Østergaard",
            "Haae",
            "Aaeae",
            "Noel Poe",
            "Jørgensen-Kjær",
            "Israel",
            "北京",
            "Ålborg",
        ] {
            let k = key(n).unwrap();
            assert_eq!(key(&k), Some(k.clone()), "{n:?}");
        }
    }
}
