//! Postcodes as matching keys.

use crate::clean::{nfkc, strip_invisible};

/// The postcode as a matching key: upper case, letters and digits only, without a
/// leading country prefix.
///
/// The prefix is the CEPT style of one to three letters and a dash before the digits
/// (`DK-2100`, `D-10115`, `S-123 45`, `LV-1010`); it is stripped only when a dash follows
/// the letters and a digit follows the dash, so a postcode that begins with letters
/// (`SW1A 1AA`, `VLT 1117`, `D02 X285`) is left whole. A prefix written without a dash
/// (`DK2100`) stays, since it cannot be told from such a postcode. Spaces, dashes and
/// other punctuation are removed; full-width digits become ASCII. Returns `None` when no
/// digit is left: every postcode system has digits, and placeholders such as `N/A` or
/// `UNKNOWN` must not become one shared key that blocks thousands of customers together.
///
/// ```
/// use crm_text::normalize_postcode;
///
/// assert_eq!(normalize_postcode("DK-2100"), Some("2100".into()));
/// assert_eq!(normalize_postcode(" dk - 2100 "), Some("2100".into()));
/// assert_eq!(normalize_postcode("sw1a 1aa"), Some("SW1A1AA".into()));
/// assert_eq!(normalize_postcode("123 45"), Some("12345".into()));
/// assert_eq!(normalize_postcode("N/A"), None);
/// ```
pub fn normalize_postcode(raw: &str) -> Option<String> {
    let visible = strip_invisible(raw);
    let text = nfkc(visible.trim()).to_uppercase();
    let code: String = without_country_prefix(&text)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect();
    code.chars().any(|c| c.is_ascii_digit()).then_some(code)
}

fn without_country_prefix(text: &str) -> &str {
    let letters = text.chars().take_while(|c| c.is_ascii_uppercase()).count();
    if !(1..=3).contains(&letters) {
        return text;
    }
    let rest = text[letters..].trim_start();
    match rest.strip_prefix([
        '-', '\u{2010}', '\u{2011}', '\u{2012}', '\u{2013}', '\u{2014}',
    ]) {
        Some(after) if after.trim_start().starts_with(|c: char| c.is_ascii_digit()) => after,
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<String> {
        normalize_postcode(s)
    }

    #[test]
    fn country_prefixes_go() {
        for s in [
            "DK-2100",
            "dk-2100",
            "DK - 2100",
            "DK\u{2013}2100",
            "2100",
            " 2100 ",
            "21 00",
        ] {
            assert_eq!(key(s).as_deref(), Some("2100"), "{s:?}");
        }
        assert_eq!(key("D-10115").as_deref(), Some("10115"));
        assert_eq!(key("S-123 45").as_deref(), Some("12345"));
        assert_eq!(key("NL-1234 ab").as_deref(), Some("1234AB"));
    }

    #[test]
    fn postcodes_with_letters_stay_whole() {
        assert_eq!(key("SW1A 1AA").as_deref(), Some("SW1A1AA"));
        assert_eq!(key("VLT 1117").as_deref(), Some("VLT1117"));
        assert_eq!(key("D02 X285").as_deref(), Some("D02X285"));
        assert_eq!(key("k1a 0b1").as_deref(), Some("K1A0B1"));
        assert_eq!(
            key("DK2100").as_deref(),
            Some("DK2100"),
            "no dash: kept, documented"
        );
        assert_eq!(
            key("ABCD-2100").as_deref(),
            Some("ABCD2100"),
            "four letters: not a country prefix"
        );
        assert_eq!(
            key("DK-A1").as_deref(),
            Some("DKA1"),
            "no digit right after the dash"
        );
    }

    #[test]
    fn unicode_oddities_and_empty() {
        assert_eq!(key("\u{A0}DK-2100\u{A0}").as_deref(), Some("2100"));
        assert_eq!(key("21\u{200B}00").as_deref(), Some("2100"));
        assert_eq!(
            key("\u{FF12}\u{FF11}\u{FF10}\u{FF10}").as_deref(),
            Some("2100")
        );
        assert_eq!(key("2100 \u{1F3E0}").as_deref(), Some("2100"));
        for empty in [
            "",
            "  ",
            "-",
            "\u{200B}",
            "\u{1F3E0}",
            "DK-",
            "N/A",
            "unknown",
        ] {
            assert_eq!(key(empty), None, "{empty:?}");
        }
    }
}
