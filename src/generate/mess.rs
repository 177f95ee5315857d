//! How a canonical identity gets rendered messily by one source record:
//! ASCII transliterations, typos, swapped names, case changes, e-mail and
//! phone variants, abbreviated streets. Each function takes the clean value
//! and the record's random stream and returns what the export would show.

use rand::Rng;

use super::dist::{chance, pick, weighted};
use super::names::{EMAIL_TAGS, POSTCODES, STREETS};

/// The shop's own phone number, typed by clerks when a customer gives none.
/// Matching on it joins unrelated people into one giant component.
pub(crate) const SHOP_PHONE: &str = "+45 70 10 20 30";
/// Placeholder e-mail used by staff on test and walk-in records.
pub(crate) const TEST_EMAIL: &str = "test@example.com";

/// How a record spells characters outside ASCII.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    /// Keep `æ ø å` and accents.
    Keep,
    /// Danish convention: `ø` → `oe`, `å` → `aa`, `ü` → `ue`.
    Digraph,
    /// Strip to the base letter: `ø` → `o`, `å` → `a`.
    Strip,
}

/// Appends `s` to `out` with non-ASCII letters folded according to `fold`.
pub(crate) fn fold_into(out: &mut String, s: &str, fold: Fold) {
    if fold == Fold::Keep {
        out.push_str(s);
        return;
    }
    let dig = fold == Fold::Digraph;
    for c in s.chars() {
        let rep: &str = match c {
            'æ' => "ae",
            'Æ' => "Ae",
            'ø' | 'ö' => {
                if dig {
                    "oe"
                } else {
                    "o"
                }
            }
            'Ø' | 'Ö' => {
                if dig {
                    "Oe"
                } else {
                    "O"
                }
            }
            'å' => {
                if dig {
                    "aa"
                } else {
                    "a"
                }
            }
            'Å' => {
                if dig {
                    "Aa"
                } else {
                    "A"
                }
            }
            'ü' => {
                if dig {
                    "ue"
                } else {
                    "u"
                }
            }
            'Ü' => {
                if dig {
                    "Ue"
                } else {
                    "U"
                }
            }
            'ß' => "ss",
            'é' | 'è' | 'ë' | 'ê' => "e",
            'á' | 'à' => "a",
            'ó' => "o",
            'ú' => "u",
            'í' | 'ı' => "i",
            'ç' => "c",
            'Ç' => "C",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(rep);
    }
}

pub(crate) fn folded(s: &str, fold: Fold) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    fold_into(&mut out, s, fold);
    out
}

/// One keyboard slip: substitute, transpose or delete a character (never the first).
pub(crate) fn typo<R: Rng>(rng: &mut R, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.len() < 3 {
        return s.to_string();
    }
    let i = rng.random_range(1..chars.len() - 1);
    match rng.random_range(0..3) {
        0 => {
            const NEAR: &[char] = &['e', 'a', 'i', 'n', 'r', 's', 't', 'o', 'l', 'k'];
            let mut c = pick(rng, NEAR);
            if c == chars[i] {
                c = 'x';
            }
            chars[i] = c;
        }
        1 => chars.swap(i, i + 1),
        _ => {
            chars.remove(i);
        }
    }
    chars.into_iter().collect()
}

/// Per-source habits for rendering names.
pub(crate) struct NameHabits {
    pub(crate) fold_rate: f64,
    pub(crate) typo_rate: f64,
    pub(crate) swap_rate: f64,
    pub(crate) upper_rate: f64,
    pub(crate) lower_rate: f64,
}

/// Renders (first, last) for one record.
pub(crate) fn render_name<R: Rng>(
    rng: &mut R,
    first: &str,
    last: &str,
    h: &NameHabits,
) -> (String, String) {
    let fold = if chance(rng, h.fold_rate) {
        if rng.random_bool(0.6) {
            Fold::Digraph
        } else {
            Fold::Strip
        }
    } else {
        Fold::Keep
    };
    let mut f = folded(first, fold);
    let mut l = folded(last, fold);
    if chance(rng, h.typo_rate) {
        f = typo(rng, &f);
    }
    if chance(rng, h.typo_rate) {
        l = typo(rng, &l);
    }
    let x = rng.random::<f64>();
    if x < h.upper_rate {
        f = f.to_uppercase();
        l = l.to_uppercase();
    } else if x < h.upper_rate + h.lower_rate {
        f = f.to_lowercase();
        l = l.to_lowercase();
    }
    if chance(rng, h.swap_rate) {
        std::mem::swap(&mut f, &mut l);
    }
    (f, l)
}

/// Per-source habits for rendering e-mail addresses.
pub(crate) struct EmailHabits {
    pub(crate) missing_rate: f64,
    pub(crate) case_rate: f64,
    pub(crate) dots_rate: f64,
    pub(crate) tag_rate: f64,
    pub(crate) space_rate: f64,
}

/// Renders a canonical (lower-case, trimmed) address as one record shows it.
pub(crate) fn render_email<R: Rng>(
    rng: &mut R,
    canonical: Option<&str>,
    h: &EmailHabits,
) -> Option<String> {
    let canonical = canonical?;
    if chance(rng, h.missing_rate) {
        return None;
    }
    let (local, domain) = canonical.split_once('@').unwrap_or((canonical, ""));
    let mut l = local.to_string();
    // Gmail ignores dots, so people (and forms) add and drop them freely.
    if domain == "gmail.com" && chance(rng, h.dots_rate) {
        if l.contains('.') {
            l.retain(|c| c != '.');
        } else {
            let letters = l.bytes().take_while(|b| b.is_ascii_lowercase()).count();
            if letters >= 3 {
                let at = rng.random_range(1..letters - 1);
                l.insert(at, '.');
            }
        }
    }
    if chance(rng, h.tag_rate) {
        l.push('+');
        l.push_str(pick(rng, EMAIL_TAGS));
    }
    let mut out = String::with_capacity(canonical.len() + 12);
    if chance(rng, h.space_rate) {
        out.push(' ');
    }
    let mut d = domain.to_string();
    if chance(rng, h.case_rate) {
        match rng.random_range(0..3) {
            0 => {
                l = l.to_uppercase();
                d = d.to_uppercase();
            }
            1 => {
                if let Some(first) = l.get(..1) {
                    l = first.to_uppercase() + &l[1..];
                }
            }
            _ => {
                if let Some(first) = d.get(..1) {
                    d = first.to_uppercase() + &d[1..];
                }
            }
        }
    }
    out.push_str(&l);
    out.push('@');
    out.push_str(&d);
    if chance(rng, h.space_rate) {
        out.push(' ');
    }
    Some(out)
}

/// Renders an 8-digit Danish number in one of the three formats seen in the exports.
/// `weights` are for `+45 20 12 34 56`, `0045-20123456`, `20123456`.
pub(crate) fn render_phone<R: Rng>(rng: &mut R, number: u32, weights: &[f64; 3]) -> String {
    let d = number % 100_000_000;
    match weighted(rng, weights) {
        0 => format!(
            "+45 {:02} {:02} {:02} {:02}",
            d / 1_000_000,
            d / 10_000 % 100,
            d / 100 % 100,
            d % 100
        ),
        1 => format!("0045-{d:08}"),
        _ => format!("{d:08}"),
    }
}

/// A postal address; indexes into the static street and postcode lists.
#[derive(Clone, Copy)]
pub(crate) struct Address {
    pub(crate) street: u16,
    pub(crate) number: u16,
    /// 0 = house, 1 = ground floor ("st."), 2.. = floor + 1.
    pub(crate) floor: u8,
    /// 0 = th, 1 = tv, 2 = mf.
    pub(crate) side: u8,
    pub(crate) postcode: u16,
}

impl Address {
    pub(crate) fn random<R: Rng>(rng: &mut R) -> Address {
        let floor = if rng.random_bool(0.45) {
            0
        } else {
            rng.random_range(1..=6u8)
        };
        Address {
            street: rng.random_range(0..STREETS.len() as u16),
            number: rng.random_range(1..=180),
            floor,
            side: rng.random_range(0..3),
            postcode: rng.random_range(0..POSTCODES.len() as u16),
        }
    }

    pub(crate) fn postcode(&self) -> &'static str {
        POSTCODES[usize::from(self.postcode) % POSTCODES.len()].0
    }

    /// The official city name or the colloquial one people also write.
    pub(crate) fn city<R: Rng>(&self, rng: &mut R, alt_rate: f64) -> &'static str {
        let (_, city, alt) = POSTCODES[usize::from(self.postcode) % POSTCODES.len()];
        if chance(rng, alt_rate) {
            alt
        } else {
            city
        }
    }

    /// `Nørregade 12, 2. th`, possibly abbreviated (`Nørreg. 12, 2.th`) and folded.
    pub(crate) fn render_street<R: Rng>(
        &self,
        rng: &mut R,
        abbrev_rate: f64,
        fold: Fold,
    ) -> String {
        use std::fmt::Write as _;
        let name = STREETS[usize::from(self.street) % STREETS.len()];
        let abbrev = chance(rng, abbrev_rate);
        let mut out = String::with_capacity(32);
        let short = if abbrev { abbreviate(name) } else { None };
        fold_into(&mut out, short.as_deref().unwrap_or(name), fold);
        let _ = write!(out, " {}", self.number);
        let side = ["th", "tv", "mf"][usize::from(self.side) % 3];
        match self.floor {
            0 => {}
            1 => out.push_str(if abbrev { ", st" } else { ", st." }),
            f => {
                let _ = if abbrev {
                    write!(out, ", {}.{side}", f - 1)
                } else {
                    write!(out, ", {}. {side}", f - 1)
                };
            }
        }
        out
    }
}

/// Clerk abbreviations: `-gade` → `-g.`, `-vej` → `-v.`, `Allé` → `Alle`, `Gammel` → `Gl.`.
fn abbreviate(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("Gammel ") {
        return Some(format!("Gl. {rest}"));
    }
    if let Some(stem) = name.strip_suffix("gade") {
        return Some(format!("{stem}g."));
    }
    if let Some(stem) = name.strip_suffix("vej") {
        return Some(format!("{stem}v."));
    }
    if let Some(stem) = name.strip_suffix("Allé") {
        return Some(format!("{stem}Alle"));
    }
    None
}
