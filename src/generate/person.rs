//! The true persons behind the records: canonical identity (what a perfect
//! golden record would hold) and behaviour traits (how they buy, churn,
//! use the app and the web shop). Persons come in households of one or two;
//! a two-person household shares the address and sometimes the e-mail.

use rand::Rng;

use super::dist::{gamma, lognormal, normal, pick, weighted};
use super::mess::{fold_into, Address, Fold};
use super::names::{
    CATEGORIES, EMAIL_DOMAINS, FIRST_NAMES_DK, FIRST_NAMES_INTL, LAST_NAMES_DK, LAST_NAMES_INTL,
    WORK_DOMAINS,
};
use super::out::add_days;
use super::Settings;

/// Share of all households whose two members use one e-mail address.
const SHARED_EMAIL_HOUSEHOLDS: f64 = 0.08;
/// Share of households with two persons (the rest are single).
const COUPLE_HOUSEHOLDS: f64 = 0.35;

/// Which sources know the person, and how the person behaves.
pub(crate) struct Traits {
    pub(crate) has_erp: bool,
    pub(crate) erp_duplicate: bool,
    pub(crate) is_member: bool,
    /// Browser cookies (0 = never visits the web shop).
    pub(crate) cookies: u8,
    pub(crate) b2b: bool,
    /// Whether the ERP customer ever orders at all.
    pub(crate) buyer: bool,
    /// Expected orders over a full history (Gamma-distributed across persons).
    pub(crate) order_rate: f64,
    /// Stops ordering at some point before the as-of date.
    pub(crate) churns: bool,
    pub(crate) discount_hunter: bool,
    /// Weights for store, web and app orders.
    pub(crate) channel_weights: [f64; 3],
    /// Category preference weights, same order as `CATEGORIES`.
    pub(crate) category_weights: [f64; 8],
    /// Mean number of extra lines per order (beyond the first).
    pub(crate) extra_lines: f64,
    /// Multiplier on the chance of returning a line.
    pub(crate) return_factor: f64,
    /// Latent satisfaction, standard normal; drives NPS, CSAT, CES and referrals.
    pub(crate) satisfaction: f64,
    /// Multiplier on app usage (0 for members who never open the app).
    pub(crate) app_engagement: f64,
    /// Our share of the person's category spend, for the survey.
    pub(crate) share_of_wallet: f64,
    pub(crate) home_store: u8,
}

/// One true person.
pub(crate) struct Person {
    /// 1-based, rendered as `P0000123`.
    pub(crate) number: u64,
    pub(crate) first: &'static str,
    pub(crate) last: &'static str,
    pub(crate) birth: i32,
    /// Canonical private e-mail (lower case, no spaces), possibly shared with the partner.
    pub(crate) email: Option<String>,
    /// A second, unrelated address (work) that a duplicate ERP record may carry.
    pub(crate) work_email: Option<String>,
    pub(crate) phone: Option<u32>,
    pub(crate) address: Address,
    /// Where the person lived before moving, if they moved during the history.
    pub(crate) old_address: Option<Address>,
    pub(crate) traits: Traits,
}

/// Draws one household (1 or 2 persons, never more than `remaining`) whose
/// first person gets number `first_number`.
pub(crate) fn draw_household<R: Rng>(
    rng: &mut R,
    first_number: u64,
    remaining: u64,
    opts: &Settings,
) -> Vec<Person> {
    let couple = remaining >= 2 && rng.random_bool(COUPLE_HOUSEHOLDS);
    let mut a = draw_person(rng, first_number, opts);
    if !couple {
        return vec![a];
    }
    let mut b = draw_person(rng, first_number + 1, opts);
    b.address = a.address;
    b.old_address = a.old_address;
    if rng.random_bool(0.7) {
        b.last = a.last;
    }
    b.birth = add_days(a.birth, rng.random_range(-2_500..=2_500));
    if rng.random_bool(SHARED_EMAIL_HOUSEHOLDS / COUPLE_HOUSEHOLDS) {
        let shared = if rng.random_bool(0.5) {
            a.email.clone()
        } else {
            Some(family_email(rng, a.last, first_number))
        };
        a.email = shared.clone();
        b.email = shared;
    }
    vec![a, b]
}

fn draw_person<R: Rng>(rng: &mut R, number: u64, opts: &Settings) -> Person {
    let intl = rng.random_bool(0.18);
    let intl_first = intl && rng.random_bool(0.8);
    let first = pick(
        rng,
        if intl_first {
            FIRST_NAMES_INTL
        } else {
            FIRST_NAMES_DK
        },
    );
    let last = pick(rng, if intl { LAST_NAMES_INTL } else { LAST_NAMES_DK });
    let age_days = rng.random_range(18 * 365..=88 * 365);
    let birth = add_days(opts.as_of, -age_days);
    let email = if rng.random_bool(0.96) {
        Some(private_email(rng, first, last, number))
    } else {
        None
    };
    let work_email = if rng.random_bool(0.5) {
        Some(work_email(rng, first, last, number))
    } else {
        None
    };
    let phone = if rng.random_bool(0.93) {
        Some(mobile_number(number, opts.phone_key))
    } else {
        None
    };
    let address = Address::random(rng);
    let old_address = if rng.random_bool(0.10) {
        Some(Address::random(rng))
    } else {
        None
    };
    let traits = draw_traits(rng, address.postcode, opts);
    Person {
        number,
        first,
        last,
        birth,
        email,
        work_email,
        phone,
        address,
        old_address,
        traits,
    }
}

fn draw_traits<R: Rng>(rng: &mut R, postcode: u16, opts: &Settings) -> Traits {
    let has_erp = rng.random_bool(0.85);
    let is_member = rng.random_bool(0.55);
    let cookies = if rng.random_bool(0.60) {
        [1u8, 2, 3][weighted(rng, &[0.6, 0.3, 0.1])]
    } else {
        0
    };
    let b2b = has_erp && rng.random_bool(0.03);
    let store = if b2b { 0.3 } else { rng.random_range(0.2..1.0) };
    let web = if cookies > 0 {
        rng.random_range(0.0..1.2)
    } else {
        0.0
    };
    let app = if is_member {
        rng.random_range(0.0..0.6)
    } else {
        0.0
    };
    let mut category_weights = [0.0; 8];
    for w in &mut category_weights {
        *w = gamma(rng, 0.6, 1.0);
    }
    // Groceries are bought by almost everybody, and in more orders.
    category_weights[0] += 0.5;
    debug_assert_eq!(category_weights.len(), CATEGORIES.len());
    Traits {
        has_erp,
        erp_duplicate: has_erp && rng.random_bool(0.04),
        is_member,
        cookies,
        b2b,
        buyer: rng.random_bool(0.90),
        // Shape below 1: many light buyers, a few very heavy ones (Pareto-like revenue).
        order_rate: gamma(rng, 0.7, opts.orders_per_customer),
        churns: rng.random_bool(0.25),
        discount_hunter: rng.random_bool(0.12),
        channel_weights: [store, web, app],
        category_weights,
        extra_lines: rng.random_range(0.3..2.5),
        return_factor: lognormal(rng, 0.6),
        satisfaction: normal(rng),
        app_engagement: if rng.random_bool(0.15) {
            0.0
        } else {
            gamma(rng, 1.5, 1.0)
        },
        share_of_wallet: rng.random_range(0.08..0.95),
        home_store: (postcode % 20) as u8 + 1,
    }
}

/// Lower-case ASCII form of a name for an e-mail local part.
fn mail_name(out: &mut String, name: &str, fold: Fold) {
    let start = out.len();
    fold_into(out, name, fold);
    let lowered = out[start..].to_lowercase();
    out.truncate(start);
    out.extend(lowered.chars().filter(|c| c.is_ascii_alphanumeric()));
}

/// A private address like `soeren.oestergaard1234@gmail.com`. The trailing
/// number is unique per person (`number * 7 + r`), so two different persons
/// never share an address by accident; only households share on purpose.
fn private_email<R: Rng>(rng: &mut R, first: &str, last: &str, number: u64) -> String {
    let fold = if rng.random_bool(0.5) {
        Fold::Digraph
    } else {
        Fold::Strip
    };
    let mut s = String::with_capacity(40);
    match rng.random_range(0..5) {
        0 => {
            mail_name(&mut s, first, fold);
            s.push('.');
            mail_name(&mut s, last, fold);
        }
        1 => {
            mail_name(&mut s, first, fold);
            mail_name(&mut s, last, fold);
        }
        2 => {
            mail_name(&mut s, first, fold);
            s.truncate(1);
            mail_name(&mut s, last, fold);
        }
        3 => {
            mail_name(&mut s, first, fold);
            s.push('_');
            mail_name(&mut s, last, fold);
        }
        _ => mail_name(&mut s, first, fold),
    }
    let domains: Vec<f64> = EMAIL_DOMAINS.iter().map(|(_, w)| f64::from(*w)).collect();
    let domain = EMAIL_DOMAINS[weighted(rng, &domains)].0;
    let tail = number
        .saturating_mul(7)
        .saturating_add(rng.random_range(0..7));
    format!("{s}{tail}@{domain}")
}

fn work_email<R: Rng>(rng: &mut R, first: &str, last: &str, number: u64) -> String {
    let mut s = String::with_capacity(40);
    mail_name(&mut s, first, Fold::Strip);
    s.truncate(s.chars().take(3).map(char::len_utf8).sum());
    mail_name(&mut s, last, Fold::Strip);
    format!("{s}{number}@{}", pick(rng, WORK_DOMAINS))
}

fn family_email<R: Rng>(rng: &mut R, last: &str, number: u64) -> String {
    let mut s = String::from("familien");
    mail_name(&mut s, last, Fold::Strip);
    let domain = EMAIL_DOMAINS[rng.random_range(0..EMAIL_DOMAINS.len())].0;
    // Unique through the first member's number, like the private addresses.
    format!("{s}{number}@{domain}")
}

/// An 8-digit Danish number from 20000000 to 89999999, a bijection of the
/// person number: random draws would give thousands of persons the same
/// number at a million persons, which the ground truth would contradict.
/// The bijection is a seeded permutation of 27-bit integers, walked until
/// it lands below 70 million (cycle walking keeps it a bijection there).
fn mobile_number(number: u64, key: u64) -> u32 {
    const RANGE: u64 = 70_000_000;
    const MASK: u64 = (1 << 27) - 1;
    let mut x = number % RANGE;
    loop {
        x = (x ^ key) & MASK;
        x = x.wrapping_mul(0x2C1B_3C6D) & MASK;
        x ^= x >> 13;
        x = x.wrapping_mul(0x297A_2D39) & MASK;
        x ^= x >> 11;
        if x < RANGE {
            return (20_000_000 + x) as u32;
        }
    }
}

/// Picks a category index by the person's preferences.
pub(crate) fn pick_category<R: Rng>(rng: &mut R, t: &Traits) -> usize {
    weighted(rng, &t.category_weights)
}
