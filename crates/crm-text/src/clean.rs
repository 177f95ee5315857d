//! Cleaning shared by the normalisers: invisible characters and Unicode normal forms.

use std::borrow::Cow;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Characters that render as nothing but make two strings differ: zero-width spaces and
/// joiners, the soft hyphen, bidi marks, word joiners, variation selectors (the emoji
/// presentation selector too), the byte-order mark and tag characters. They slip into
/// exports through copy and paste; no identifier means anything by them.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// `s` without invisible characters; borrows when there are none.
pub(crate) fn strip_invisible(s: &str) -> Cow<'_, str> {
    if s.chars().any(is_invisible) {
        Cow::Owned(s.chars().filter(|c| !is_invisible(*c)).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// `s` in Unicode NFC, so `é` and `e` + combining acute are the same string; borrows when
/// it already is (always for ASCII).
pub(crate) fn nfc(s: &str) -> Cow<'_, str> {
    match is_nfc_quick(s.chars()) {
        IsNormalized::Yes => Cow::Borrowed(s),
        _ => Cow::Owned(s.nfc().collect()),
    }
}

/// `s` in Unicode NFKC: also folds compatibility forms such as full-width digits
/// (`２１００` to `2100`) and ligatures.
pub(crate) fn nfkc(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.nfkc().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_go_and_visible_ones_stay() {
        assert_eq!(strip_invisible("an\u{200B}na\u{FEFF}\u{00AD}"), "anna");
        assert_eq!(strip_invisible("\u{2764}\u{FE0F}"), "\u{2764}");
        assert!(matches!(strip_invisible("plain"), Cow::Borrowed(_)));
        assert_eq!(strip_invisible(""), "");
    }

    #[test]
    fn normal_forms() {
        assert_eq!(nfc("e\u{301}"), "\u{E9}");
        assert!(matches!(nfc("ascii"), Cow::Borrowed(_)));
        assert_eq!(nfkc("\u{FF12}\u{FF11}\u{FF10}\u{FF10}"), "2100");
    }
}
