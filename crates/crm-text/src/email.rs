//! E-mail addresses as matching keys.

use crate::clean::{nfc, strip_invisible};

/// How far [`normalize_email_with`] goes beyond case and whitespace.
///
/// The rules for Gmail always apply, because Google documents them: dots in the local
/// part are ignored and everything from a `+` on is a tag, and `googlemail.com` is the
/// same mailbox as `gmail.com`. Other providers decide for themselves what the local part
/// means (RFC 5321 leaves it to the receiving host), so their `+tag` is kept unless
/// `strip_plus_tag` says otherwise. Turning it on merges `anna+shop@example.dk` with
/// `anna@example.dk`, which is right for the big providers (Outlook, iCloud, Fastmail,
/// Proton) and wrong only for a host that really has both mailboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmailOptions {
    /// Drop a `+tag` from the local part at every domain, not only at Gmail.
    pub strip_plus_tag: bool,
}

/// The e-mail address as a matching key, with the default [`EmailOptions`] (Gmail rules,
/// `+tag` kept elsewhere).
///
/// Trims (also non-breaking spaces), drops invisible characters and one trailing dot,
/// lower-cases, and brings the text to Unicode NFC. Returns `None` for an empty or
/// clearly invalid address: not exactly one `@`, an empty local part or domain,
/// whitespace or characters that are not allowed unquoted (`,`, `;`, `<`, `"`, emoji
/// ...), a local part with a leading, trailing or double dot, or a domain that is not
/// at least two dot-separated labels of letters, digits and inner hyphens with a
/// non-numeric top level. Quoted local parts and IP-literal domains are legal but are
/// not customer addresses, so they give `None` too.
///
/// ```
/// use crm_text::normalize_email;
///
/// assert_eq!(normalize_email("  Anna.Jensen@Example.DK "), Some("anna.jensen@example.dk".into()));
/// assert_eq!(normalize_email("a.n.n.a+tilbud@googlemail.com"), Some("anna@gmail.com".into()));
/// assert_eq!(normalize_email("anna+tilbud@example.dk"), Some("anna+tilbud@example.dk".into()));
/// assert_eq!(normalize_email("anna@@example.dk"), None);
/// assert_eq!(normalize_email("anna@localhost"), None);
/// assert_eq!(normalize_email(""), None);
/// ```
pub fn normalize_email(raw: &str) -> Option<String> {
    normalize_email_with(raw, EmailOptions::default())
}

/// [`normalize_email`] with explicit options.
///
/// ```
/// use crm_text::{normalize_email_with, EmailOptions};
///
/// let strip = EmailOptions { strip_plus_tag: true };
/// assert_eq!(normalize_email_with("Anna+Shop@Outlook.com", strip), Some("anna@outlook.com".into()));
/// ```
pub fn normalize_email_with(raw: &str, options: EmailOptions) -> Option<String> {
    let visible = strip_invisible(raw);
    let trimmed = visible.trim();
    // A sentence-final dot copied along with the address.
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    let lower = nfc(&trimmed.to_lowercase()).into_owned();

    let (local, domain) = lower.split_once('@')?;
    if domain.contains('@') || !is_valid_local(local) || !is_valid_domain(domain) {
        return None;
    }
    let (local, domain) = match domain {
        "gmail.com" | "googlemail.com" => (gmail_local(local), "gmail.com"),
        _ if options.strip_plus_tag => (without_tag(local).to_string(), domain),
        _ => (local.to_string(), domain),
    };
    if local.is_empty() {
        return None;
    }
    Some(format!("{local}@{domain}"))
}

fn without_tag(local: &str) -> &str {
    local
        .split_once('+')
        .map_or(local, |(mailbox, _tag)| mailbox)
}

fn gmail_local(local: &str) -> String {
    without_tag(local).chars().filter(|c| *c != '.').collect()
}

/// RFC 5322 dot-atom, with any Unicode letter or digit allowed as in RFC 6531.
fn is_valid_local(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";
    !local.is_empty()
        && local.split('.').all(|atom| !atom.is_empty())
        && local
            .chars()
            .all(|c| c == '.' || c.is_alphanumeric() || SPECIALS.contains(c))
}

fn is_valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.chars().count() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c == '-' || c.is_alphanumeric())
    };
    let top_level_ok = labels
        .last()
        .is_some_and(|t| !t.chars().all(|c| c.is_ascii_digit()));
    labels.len() >= 2 && labels.iter().all(label_ok) && top_level_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<String> {
        normalize_email(s)
    }

    #[test]
    fn case_and_surrounding_space() {
        assert_eq!(key("  ANNA@Example.dk\t"), Some("anna@example.dk".into()));
        assert_eq!(
            key("\u{A0}anna@example.dk\u{A0}"),
            Some("anna@example.dk".into())
        );
        assert_eq!(key("anna@example.dk."), Some("anna@example.dk".into()));
    }

    #[test]
    fn gmail_ignores_dots_and_tags_and_googlemail_is_gmail() {
        let want = Some("annajensen@gmail.com".into());
        assert_eq!(key("anna.jensen@gmail.com"), want);
        assert_eq!(key("Anna.Jensen+nyhedsbrev@Gmail.com"), want);
        assert_eq!(key("a.nna.jensen@googlemail.com"), want);
        assert_eq!(key("annajensen+@gmail.com"), want);
        assert_eq!(key("+tag@gmail.com"), None, "nothing left of the mailbox");
    }

    #[test]
    fn other_domains_keep_dots_and_keep_tags_unless_asked() {
        assert_eq!(
            key("anna.jensen+x@example.dk"),
            Some("anna.jensen+x@example.dk".into())
        );
        let strip = EmailOptions {
            strip_plus_tag: true,
        };
        assert_eq!(
            normalize_email_with("anna.jensen+x@example.dk", strip),
            Some("anna.jensen@example.dk".into())
        );
        assert_eq!(normalize_email_with("+x@example.dk", strip), None);
        assert_eq!(
            normalize_email_with("a.b+x@gmail.com", strip),
            Some("ab@gmail.com".into())
        );
    }

    #[test]
    fn clearly_invalid_addresses_give_none() {
        for bad in [
            "",
            "   ",
            "anna",
            "@example.dk",
            "anna@",
            "anna@@example.dk",
            "anna@x@example.dk",
            "anna jensen@example.dk",
            "anna@exa mple.dk",
            "anna@localhost",
            "anna@example..dk",
            "anna@.example.dk",
            "anna@-example.dk",
            "anna@example-.dk",
            "anna@1.2.3.4",
            ".anna@example.dk",
            "anna.@example.dk",
            "an..na@example.dk",
            "\"anna\"@example.dk",
            "anna@example.dk; bo@example.dk",
            "<anna@example.dk>",
            "anna\u{1F600}@example.dk",
            "anna@[127.0.0.1]",
            "anna,jensen@example.dk",
        ] {
            assert_eq!(key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unicode_oddities() {
        assert_eq!(
            key("an\u{200B}na@exam\u{FEFF}ple.dk"),
            Some("anna@example.dk".into())
        );
        // Composed and decomposed ø/é are one address.
        assert_eq!(
            key("s\u{F8}ren@caf\u{E9}.dk"),
            key("S\u{D8}REN@CAFE\u{301}.DK")
        );
        assert_eq!(
            key("s\u{F8}ren@caf\u{E9}.dk"),
            Some("s\u{F8}ren@caf\u{E9}.dk".into())
        );
        assert_eq!(key("\u{200B}"), None);
    }
}
