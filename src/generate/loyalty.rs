//! The loyalty app's exports: member profiles and app events (NDJSON), and
//! the in-app survey answers (CSV with `,`).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use rand::Rng;
use serde::Serialize;

use super::dist::{chance, gamma, normal, pick, poisson, weighted};
use super::mess::{
    render_email, render_name, render_phone, EmailHabits, NameHabits, SHOP_PHONE, TEST_EMAIL,
};
use super::out::{
    add_days, eu_switch, push_copenhagen, push_date, year_of, CsvOut, Field, JsonOut, SECS_PER_DAY,
};
use super::person::Person;
use super::{Activity, GeneratedFile, Settings};

pub(crate) const SURVEY_HEADER: &[&str] = &[
    "response_id",
    "member_id",
    "answered_at",
    "touchpoint",
    "nps",
    "csat",
    "ces",
    "category_spend_monthly",
    "brands_used",
    "our_rank",
];

/// Members type their own names: fewer typos, more lower case.
const MEMBER_NAMES: NameHabits = NameHabits {
    fold_rate: 0.05,
    typo_rate: 0.03,
    swap_rate: 0.01,
    upper_rate: 0.01,
    lower_rate: 0.06,
};
const MEMBER_EMAIL: EmailHabits = EmailHabits {
    missing_rate: 0.02,
    case_rate: 0.10,
    dots_rate: 0.08,
    tag_rate: 0.06,
    space_rate: 0.03,
};
const APP_PHONE_FORMATS: [f64; 3] = [0.6, 0.1, 0.3];
/// Mean events of a member who uses the app (15 % never do), giving ~10 per member.
const EVENTS_PER_ACTIVE_MEMBER: f64 = 11.8;
const EVENT_TYPES: [&str; 6] = [
    "app_open",
    "store_checkin",
    "coupon_activated",
    "referral_sent",
    "service_contact",
    "complaint",
];
const TOUCHPOINTS: [&str; 5] = ["store", "web", "app", "service", "delivery"];

#[derive(Serialize)]
struct MemberRow<'a> {
    member_id: &'a str,
    #[serde(skip_serializing_if = "Field::is_absent")]
    email: Field<'a>,
    #[serde(skip_serializing_if = "Field::is_absent")]
    phone: Field<'a>,
    #[serde(skip_serializing_if = "Field::is_absent")]
    first_name: Field<'a>,
    #[serde(skip_serializing_if = "Field::is_absent")]
    last_name: Field<'a>,
    #[serde(skip_serializing_if = "Field::is_absent")]
    postcode: Field<'a>,
    #[serde(skip_serializing_if = "Field::is_absent")]
    birth_date: Field<'a>,
    joined_at: &'a str,
    consent_email: bool,
    consent_sms: bool,
}

#[derive(Serialize)]
struct EventRow<'a> {
    event_id: &'a str,
    member_id: &'a str,
    event_time: &'a str,
    event_type: &'a str,
}

pub(crate) fn member_id(id: u64) -> String {
    format!("M{id:06}")
}

pub(crate) struct Loyalty {
    members: JsonOut,
    events: JsonOut,
    survey: CsvOut,
    next_member: u64,
    next_event: u64,
    next_response: u64,
    /// Reused per member: event instants, and string scratch for one row.
    times: Vec<(i64, u8)>,
    event_id: String,
    event_time: String,
}

impl Loyalty {
    pub(crate) fn create(root: &Path) -> io::Result<Loyalty> {
        Ok(Loyalty {
            members: JsonOut::create(root, "loyalty/members.ndjson")?,
            events: JsonOut::create(root, "loyalty/app_events.ndjson")?,
            survey: CsvOut::create(root, "loyalty/survey_answers.csv", b',', SURVEY_HEADER)?,
            next_member: 1,
            next_event: 1,
            next_response: 1,
            times: Vec::new(),
            event_id: String::new(),
            event_time: String::new(),
        })
    }

    pub(crate) fn finish(self) -> io::Result<Vec<GeneratedFile>> {
        Ok(vec![
            self.members.finish()?,
            self.events.finish()?,
            self.survey.finish()?,
        ])
    }

    /// Reserves the member number before the ERP records are written, because
    /// ERP receipts print it as `loyalty_id`.
    pub(crate) fn assign_member(&mut self) -> u64 {
        let id = self.next_member;
        self.next_member += 1;
        id
    }

    /// Writes the member profile; returns the day the member joined.
    pub(crate) fn write_member<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        id: u64,
        s: &Settings,
    ) -> io::Result<i32> {
        let joined = rng.random_range(add_days(s.history_start, -730)..=s.as_of);
        let mid = member_id(id);
        let (first, last) = render_name(rng, p.first, p.last, &MEMBER_NAMES);
        let email = if chance(rng, 0.0005) {
            Some(TEST_EMAIL.to_string())
        } else {
            render_email(rng, p.email.as_deref(), &MEMBER_EMAIL)
        };
        let phone = if chance(rng, 0.002) {
            Some(SHOP_PHONE.to_string())
        } else if chance(rng, 0.12) {
            None
        } else {
            p.phone.map(|n| render_phone(rng, n, &APP_PHONE_FORMATS))
        };
        // Members update their address in the app more often than the ERP is updated.
        let addr = match p.old_address {
            Some(old) if rng.random_bool(0.25) => old,
            _ => p.address,
        };
        let mut birth = String::new();
        push_date(&mut birth, p.birth);
        let mut joined_at = String::new();
        push_date(&mut joined_at, joined);

        let row = MemberRow {
            member_id: &mid,
            email: present(rng, email.as_deref(), 0.0),
            phone: present(rng, phone.as_deref(), 0.0),
            first_name: present(rng, Some(&first), 0.01),
            last_name: present(rng, Some(&last), 0.03),
            postcode: present(rng, Some(addr.postcode()), 0.05),
            birth_date: present(rng, Some(&birth), 0.09),
            joined_at: &joined_at,
            consent_email: rng.random_bool(0.7),
            consent_sms: rng.random_bool(0.4),
        };
        self.members.row(&row)?;
        Ok(joined)
    }

    /// Writes the member's app events in time order.
    pub(crate) fn write_events<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        id: u64,
        joined: i32,
        act: &Activity,
        s: &Settings,
    ) -> io::Result<()> {
        let t = &p.traits;
        if t.app_engagement.is_nan() || t.app_engagement <= 0.0 {
            return Ok(());
        }
        let n = poisson(rng, EVENTS_PER_ACTIVE_MEMBER * t.app_engagement).min(10_000);
        let pain = f64::from(act.pain.min(10));
        let weights = [
            55.0,
            15.0 * if act.store_orders > 0 { 1.5 } else { 0.3 },
            15.0 * if t.discount_hunter { 3.0 } else { 1.0 },
            2.0 * if t.satisfaction > 1.0 {
                6.0
            } else if t.satisfaction > 0.0 {
                1.0
            } else {
                0.2
            },
            3.0 + pain,
            0.5 + 0.8 * pain * if t.satisfaction < 0.0 { 2.0 } else { 1.0 },
        ];
        let lo = i64::from(joined) * SECS_PER_DAY;
        let hi = i64::from(s.as_of) * SECS_PER_DAY + SECS_PER_DAY - 1;
        self.times.clear();
        for _ in 0..n {
            let time = event_instant(rng, joined, s.as_of, lo, hi);
            self.times.push((time, weighted(rng, &weights) as u8));
        }
        self.times.sort_unstable();
        let mid = member_id(id);
        for &(time, kind) in &self.times {
            self.event_id.clear();
            let _ = write!(self.event_id, "A{:09}", self.next_event);
            self.next_event += 1;
            self.event_time.clear();
            push_copenhagen(&mut self.event_time, time);
            let row = EventRow {
                event_id: &self.event_id,
                member_id: &mid,
                event_time: &self.event_time,
                event_type: EVENT_TYPES[usize::from(kind)],
            };
            self.events.row(&row)?;
        }
        Ok(())
    }

    /// Writes 1-3 survey answers for ~30 % of members.
    pub(crate) fn write_survey<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        id: u64,
        joined: i32,
        act: &Activity,
        s: &Settings,
    ) -> io::Result<()> {
        if !rng.random_bool(0.30) {
            return Ok(());
        }
        let t = &p.traits;
        let answers = 1 + weighted(rng, &[0.6, 0.3, 0.1]);
        let pain = f64::from(act.pain.min(5));
        let touch_weights = [
            t.channel_weights[0],
            t.channel_weights[1],
            t.channel_weights[2] + 0.1,
            0.1 + 0.05 * pain,
            if act.orders > act.store_orders {
                0.2
            } else {
                0.0
            },
        ];
        // Self-reported monthly category spend: what we get divided by our share.
        let months = match (act.first_order, act.last_order) {
            (Some(a), Some(b)) => (f64::from(b - a) / 30.4 + 1.0).max(1.0),
            _ => 1.0,
        };
        let ours = act.spend_ore.max(0) as f64 / months;
        for _ in 0..answers {
            let bad = chance(rng, s.bad_row_rate).then(|| rng.random_range(0..4u8));
            let sat = t.satisfaction - 0.3 * pain + 0.5 * normal(rng);
            let nps = (7.4 + 2.2 * sat).round().clamp(0.0, 10.0) as u8;
            let csat = (3.9 + 0.9 * sat).round().clamp(1.0, 5.0) as u8;
            let ces = (3.0 - 1.3 * sat).round().clamp(1.0, 7.0) as u8;
            let wallet = if ours > 0.0 {
                ours / t.share_of_wallet * gamma(rng, 16.0, 1.0)
            } else {
                rng.random_range(50_000.0..400_000.0)
            };
            // People answer in round numbers, mostly to 50 kr.
            let step = if rng.random_bool(0.7) { 5_000.0 } else { 100.0 };
            let wallet = ((wallet / step).round() * step).clamp(0.0, 1e12) as i64;
            let brands = 1 + weighted(rng, &[0.15, 0.3, 0.25, 0.15, 0.1, 0.05]) as u8;
            let rank = wallet_rank(rng, brands, t.share_of_wallet);

            let w = &mut self.survey;
            w.raw(format_args!("S{:07}", self.next_response))?;
            self.next_response += 1;
            w.raw(format_args!("M{id:06}"))?;
            match bad {
                Some(2) => w.text("2025-02-30")?,
                _ => w.date(rng.random_range(joined..=s.as_of))?,
            }
            w.text(TOUCHPOINTS[weighted(rng, &touch_weights)])?;
            match bad {
                Some(0) => w.text(pick(rng, &["ten", "9/10", "ni"]))?,
                _ if rng.random_bool(0.03) => w.text("")?,
                _ => w.raw(format_args!("{nps}"))?,
            }
            match bad {
                Some(1) => w.text("fem")?,
                _ if rng.random_bool(0.08) => w.text("")?,
                _ => w.raw(format_args!("{csat}"))?,
            }
            if rng.random_bool(0.12) {
                w.text("")?;
            } else {
                w.raw(format_args!("{ces}"))?;
            }
            match bad {
                // Danish number formatting; contains the delimiter, so it is quoted.
                Some(3) => w.text("1.200,50")?,
                _ if rng.random_bool(0.15) => w.text("")?,
                _ => w.money(wallet)?,
            }
            if rng.random_bool(0.12) {
                w.text("")?;
                w.text("")?;
            } else {
                w.raw(format_args!("{brands}"))?;
                w.raw(format_args!("{rank}"))?;
            }
            w.end_row(bad.is_some())?;
        }
        Ok(())
    }
}

/// A present value, or a missing one shown as `null` or left out (half each).
fn present<'a, R: Rng>(rng: &mut R, v: Option<&'a str>, missing_rate: f64) -> Field<'a> {
    match v {
        Some(v) if !chance(rng, missing_rate) => Field::Val(v),
        _ if rng.random_bool(0.5) => Field::Null,
        _ => Field::Absent,
    }
}

/// An instant in [lo, hi] (seconds), mostly in waking hours; 5 % are put within
/// three hours of a daylight-saving switch so readers meet both offsets and the
/// repeated / skipped local hour.
fn event_instant<R: Rng>(rng: &mut R, joined: i32, as_of: i32, lo: i64, hi: i64) -> i64 {
    if rng.random_bool(0.05) {
        if let Some(t) = near_dst_switch(rng, joined, as_of).filter(|t| (lo..=hi).contains(t)) {
            return t;
        }
    }
    let day = rng.random_range(joined..=as_of);
    let t = i64::from(day) * SECS_PER_DAY + rng.random_range(5 * 3600..22 * 3600);
    t.clamp(lo, hi)
}

/// An instant within three hours of a CET/CEST switch in the years of [from, to].
fn near_dst_switch<R: Rng>(rng: &mut R, from: i32, to: i32) -> Option<i64> {
    let (y0, y1) = (year_of(from)?, year_of(to)?);
    let year = rng.random_range(y0..=y1);
    let month = if rng.random_bool(0.5) { 3 } else { 10 };
    Some(eu_switch(year, month)? + rng.random_range(-3 * 3600..=3 * 3600))
}

/// Our rank among `brands` brands, chosen so the Wallet Allocation Rule
/// share (1 - r/(n+1)) * 2/n lands near the person's true share, with noise.
fn wallet_rank<R: Rng>(rng: &mut R, brands: u8, share: f64) -> u8 {
    let n = f64::from(brands);
    let mut best = 1u8;
    let mut best_err = f64::INFINITY;
    for r in 1..=brands {
        let war = (1.0 - f64::from(r) / (n + 1.0)) * 2.0 / n;
        let err = (war - share).abs();
        if err < best_err {
            best = r;
            best_err = err;
        }
    }
    if rng.random_bool(0.2) {
        best = if rng.random_bool(0.5) {
            best.saturating_sub(1)
        } else {
            best + 1
        };
    }
    best.clamp(1, brands.max(1))
}
