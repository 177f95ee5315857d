//! Phone numbers in E.164.

use std::panic::{catch_unwind, AssertUnwindSafe};

use phonenumber::country::Id;
use phonenumber::Mode;

use crate::clean::{nfkc, strip_invisible};

/// The country [`normalize_phone`] assumes in crm-marts' SQL when none is given.
pub const DEFAULT_COUNTRY: &str = "DK";

/// Longer than any phone number with formatting and an extension; longer input is junk,
/// and bounding it bounds the parser's work.
const MAX_LEN: usize = 64;

/// The phone number in E.164 (`+` and digits), read with Google's libphonenumber rules
/// (the `phonenumber` crate).
///
/// `default_country` is an ISO 3166 alpha-2 code (any case) used for numbers written
/// without a country code: national numbers (`20123456`, `030 1234567` for DE) and
/// numbers dialled with that country's international prefix (`0045...`, `00 46...` from
/// DK). A number that starts with `+` keeps its own country; a trunk `(0)` after the
/// country code (`+49 (0)30 ...`) is dropped. Returns `None` when the
/// text is not a valid number for its country (wrong length, unused range), when it has
/// no country code and `default_country` is not a known code, and for empty input. An
/// extension (`ext. 12`) is dropped, as E.164 has none.
///
/// ```
/// use crm_text::normalize_phone;
///
/// assert_eq!(normalize_phone("+45 20 12 34 56", "DK"), Some("+4520123456".into()));
/// assert_eq!(normalize_phone("0045-20123456", "DK"), Some("+4520123456".into()));
/// assert_eq!(normalize_phone("20123456", "dk"), Some("+4520123456".into()));
/// assert_eq!(normalize_phone("030 901820", "DE"), Some("+4930901820".into()));
/// assert_eq!(normalize_phone("+1 (650) 253-0000", "DK"), Some("+16502530000".into()));
/// assert_eq!(normalize_phone("2012345", "DK"), None); // 7 digits: not a Danish number
/// assert_eq!(normalize_phone("n/a", "DK"), None);
/// ```
pub fn normalize_phone(raw: &str, default_country: &str) -> Option<String> {
    let visible = strip_invisible(raw);
    let text = nfkc(visible.trim());
    if text.is_empty() || text.len() > MAX_LEN || !text.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    // "+44 (0)20 ..." marks the trunk prefix dialled only from inside the country;
    // libphonenumber drops it, the Rust port does not.
    let text = if text.starts_with('+') || text.starts_with("00") {
        text.replace("(0)", "")
    } else {
        text.into_owned()
    };
    let country = default_country
        .trim()
        .to_ascii_uppercase()
        .parse::<Id>()
        .ok();
    // The parser has panicked on malformed input before (rust-phonenumber issues 32
    // and 43); one odd cell must not fail a whole run.
    catch_unwind(AssertUnwindSafe(|| {
        let number = phonenumber::parse(country, &text).ok()?;
        phonenumber::is_valid(&number).then(|| number.format().mode(Mode::E164).to_string())
    }))
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dk(s: &str) -> Option<String> {
        normalize_phone(s, "DK")
    }

    #[test]
    fn danish_formats_agree() {
        let want = Some("+4520123456".to_string());
        for s in [
            "+45 20 12 34 56",
            "0045-20123456",
            "20123456",
            "20 12 34 56",
            "+4520123456",
            "0045 20 12 34 56",
            "(+45) 2012 3456",
            "+45-20-12-34-56",
            "20.12.34.56",
            " 20123456 ",
        ] {
            assert_eq!(dk(s), want, "{s:?}");
        }
    }

    #[test]
    fn other_countries() {
        assert_eq!(
            normalize_phone("0046 70 123 45 67", "DK"),
            Some("+46701234567".into())
        );
        assert_eq!(
            normalize_phone("070-123 45 67", "SE"),
            Some("+46701234567".into())
        );
        assert_eq!(
            normalize_phone("+44 20 7946 0958", "DK"),
            Some("+442079460958".into())
        );
        assert_eq!(
            normalize_phone("020 7946 0958", "GB"),
            Some("+442079460958".into())
        );
        assert_eq!(
            normalize_phone("+44 (0)20 7946 0958", "DK"),
            Some("+442079460958".into())
        );
        assert_eq!(
            normalize_phone("0151 12345678", "DE"),
            Some("+4915112345678".into())
        );
        assert_eq!(
            normalize_phone("+49 151 12345678", "se"),
            Some("+4915112345678".into())
        );
        assert_eq!(
            normalize_phone("(650) 253-0000", "US"),
            Some("+16502530000".into())
        );
        assert_eq!(
            normalize_phone("412 34 567", "NO"),
            Some("+4741234567".into())
        );
    }

    #[test]
    fn country_of_the_text_wins_over_the_default() {
        assert_eq!(
            normalize_phone("+45 20 12 34 56", "SE"),
            Some("+4520123456".into())
        );
    }

    #[test]
    fn invalid_numbers_and_countries_give_none() {
        for bad in [
            "",
            " ",
            "n/a",
            "-",
            "+",
            "2012345",
            "201234567",
            "00000000",
            "+45 12",
            "+999 1234567",
            "abc20123456xyz!",
        ] {
            assert_eq!(dk(bad), None, "{bad:?}");
        }
        assert_eq!(
            normalize_phone("20123456", ""),
            None,
            "no country code and no default"
        );
        assert_eq!(normalize_phone("20123456", "XX"), None);
        assert_eq!(
            normalize_phone("+45 20123456", "XX"),
            Some("+4520123456".into())
        );
        assert_eq!(dk(&"1".repeat(200)), None);
    }

    #[test]
    fn extensions_are_dropped() {
        assert_eq!(dk("20 12 34 56 ext. 12"), Some("+4520123456".into()));
    }

    #[test]
    fn unicode_oddities() {
        assert_eq!(
            dk("\u{A0}20\u{A0}12\u{A0}34\u{A0}56"),
            Some("+4520123456".into())
        );
        assert_eq!(dk("2012\u{200B}3456"), Some("+4520123456".into()));
        assert_eq!(
            dk("\u{FF12}\u{FF10}\u{FF11}\u{FF12}\u{FF13}\u{FF14}\u{FF15}\u{FF16}"),
            Some("+4520123456".into())
        );
        assert_eq!(dk("\u{1F4DE} 20123456"), Some("+4520123456".into()));
        assert_eq!(dk("\u{1F4DE}"), None);
    }

    #[test]
    fn odd_input_never_panics() {
        // A small deterministic fuzz: fragments that have tripped phone parsers before.
        let parts = [
            "+", "00", "0", "45", "(", ")", "-", " ", "#", ":", "x", "ext", "*", "2", "9", ";",
            "tel:", "\u{FF10}", "/", ".",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..(seed % 12) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(parts[(seed % parts.len() as u64) as usize]);
            }
            seed = seed.wrapping_add(1);
            for country in ["DK", "CH", "US", ""] {
                let _ = normalize_phone(&s, country);
            }
        }
        for s in ["  2 22#:", "003-836-4618x3001"] {
            let _ = normalize_phone(s, "CH");
        }
    }
}
