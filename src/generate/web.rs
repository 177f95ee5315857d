//! The web shop's clickstream (NDJSON): cookies, sessions and page views.
//!
//! A cookie starts anonymous and may log in later; checkout pages carry the
//! e-mail the visitor typed. Every web order gets a session that reaches the
//! confirmation page on the order's day, plus browsing sessions in between.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use rand::Rng;
use serde::Serialize;

use super::dist::{gamma, poisson, weighted};
use super::erp::{customer_id, ErpRecord, SKUS_PER_CATEGORY};
use super::mess::{render_email, EmailHabits};
use super::names::CATEGORIES;
use super::out::{push_utc, JsonOut, SECS_PER_DAY};
use super::person::{pick_category, Person};
use super::{Activity, GeneratedFile, Settings};

const PAGE_TYPES: [&str; 8] = [
    "home",
    "category",
    "product",
    "search",
    "cart",
    "checkout",
    "confirmation",
    "account",
];
const HOME: u8 = 0;
const CATEGORY: u8 = 1;
const PRODUCT: u8 = 2;
const SEARCH: u8 = 3;
const CART: u8 = 4;
const CHECKOUT: u8 = 5;
const CONFIRMATION: u8 = 6;
const ACCOUNT: u8 = 7;

/// Session traffic sources (utm_source, utm_medium); `None` is direct traffic.
/// Every event of a session carries its session's values, as GA-style exports do.
const UTM: [(Option<&str>, Option<&str>); 11] = [
    (None, None),
    (Some("google"), Some("cpc")),
    (Some("google"), Some("organic")),
    (Some("bing"), Some("cpc")),
    (Some("bing"), Some("organic")),
    (Some("facebook"), Some("paid_social")),
    (Some("instagram"), Some("paid_social")),
    (Some("facebook"), Some("social")),
    (Some("instagram"), Some("social")),
    (Some("newsletter"), Some("email")),
    (Some("pricerunner"), Some("referral")),
];
const UTM_WEIGHTS: [f64; 11] = [25.0, 15.0, 20.0, 3.0, 2.0, 8.0, 5.0, 4.0, 3.0, 10.0, 3.0];
/// Mean browsing sessions per cookie (besides the purchase sessions).
const BROWSE_SESSIONS_PER_COOKIE: f64 = 2.2;
const SESSION_GAP_SECS: i64 = 30 * 60;

/// Logged-in checkouts are prefilled from the account: little mess.
const ACCOUNT_EMAIL: EmailHabits = EmailHabits {
    missing_rate: 0.0,
    case_rate: 0.02,
    dots_rate: 0.0,
    tag_rate: 0.0,
    space_rate: 0.0,
};
/// Guests type their address: case, dots, tags and stray spaces.
const TYPED_EMAIL: EmailHabits = EmailHabits {
    missing_rate: 0.03,
    case_rate: 0.15,
    dots_rate: 0.15,
    tag_rate: 0.05,
    space_rate: 0.06,
};

#[derive(Serialize)]
struct ClickRow<'a> {
    event_id: &'a str,
    cookie_id: &'a str,
    ts: &'a str,
    page_type: &'a str,
    url: &'a str,
    utm_source: Option<&'a str>,
    utm_medium: Option<&'a str>,
    login_customer_id: Option<&'a str>,
    checkout_email: Option<&'a str>,
}

#[derive(Clone, Copy)]
struct Session {
    cookie: u8,
    start: i64,
    /// Index into the person's web orders for a purchase session.
    purchase: Option<usize>,
}

pub(crate) struct Web {
    clicks: JsonOut,
    next_event: u64,
    // Per-person scratch, reused so that rows cost no allocation.
    sessions: Vec<Session>,
    pages: Vec<(u8, u32)>,
    event_id: String,
    ts: String,
    url: String,
}

impl Web {
    pub(crate) fn create(root: &Path) -> io::Result<Web> {
        Ok(Web {
            clicks: JsonOut::create(root, "web/clickstream.ndjson")?,
            next_event: 1,
            sessions: Vec::new(),
            pages: Vec::new(),
            event_id: String::new(),
            ts: String::new(),
            url: String::new(),
        })
    }

    pub(crate) fn finish(self) -> io::Result<Vec<GeneratedFile>> {
        Ok(vec![self.clicks.finish()?])
    }

    /// Writes the person's clickstream; pushes the ids of the cookies that
    /// appear in it onto `cookies` (a cookie without events is in no export).
    pub(crate) fn write_person<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        records: &[Option<ErpRecord>; 2],
        act: &Activity,
        s: &Settings,
        cookies: &mut Vec<String>,
    ) -> io::Result<()> {
        let n = p.traits.cookies;
        if n == 0 {
            return Ok(());
        }
        let cookie_ids: Vec<String> = (0..n)
            .map(|_| format!("{:016x}", rng.random::<u64>()))
            .collect();
        let mut seen = [false; 256];
        // Cookies follow one another (new device, cleared browser): each covers a slice of time.
        let mut web_start = rng.random_range(s.history_start..=s.as_of);
        if let Some(first) = act.web_orders.first() {
            web_start = web_start.min(first.day);
        }
        let span = i64::from(s.as_of - web_start) + 1;
        let cookie_of = |day: i32| -> u8 {
            let k = (i64::from(day - web_start).max(0) * i64::from(n)) / span;
            k.clamp(0, i64::from(n) - 1) as u8
        };

        self.sessions.clear();
        for cookie in 0..n {
            let lo = web_start + (span * i64::from(cookie) / i64::from(n)) as i32;
            let hi = (web_start + (span * i64::from(cookie + 1) / i64::from(n)) as i32 - 1).max(lo);
            let rate = gamma(rng, 1.0, BROWSE_SESSIONS_PER_COOKIE);
            for _ in 0..poisson(rng, rate).min(1_000) {
                let day = rng.random_range(lo..=hi);
                let start = i64::from(day) * SECS_PER_DAY + rng.random_range(6 * 3600..22 * 3600);
                self.sessions.push(Session {
                    cookie,
                    start,
                    purchase: None,
                });
            }
        }
        for (i, order) in act.web_orders.iter().enumerate() {
            let start = i64::from(order.day) * SECS_PER_DAY + rng.random_range(7 * 3600..21 * 3600);
            self.sessions.push(Session {
                cookie: cookie_of(order.day),
                start,
                purchase: Some(i),
            });
        }
        self.sessions.sort_unstable_by_key(|x| (x.cookie, x.start));

        let logins = [
            records[0].map(|r| customer_id(r.id)),
            records[1].map(|r| customer_id(r.id)),
        ];
        let end_of_history = i64::from(s.as_of) * SECS_PER_DAY + SECS_PER_DAY - 1;
        let sessions = std::mem::take(&mut self.sessions);
        let mut prev: Option<(u8, i64)> = None;
        let mut logged_in_before = false;
        for sess in &sessions {
            let mut start = sess.start;
            match prev {
                Some((c, end)) if c == sess.cookie => {
                    // Keep sessions apart, or a reader would merge them into one.
                    if start < end + SESSION_GAP_SECS {
                        start = end + SESSION_GAP_SECS + rng.random_range(60..6 * 3600);
                    }
                }
                _ => logged_in_before = false,
            }
            if start > end_of_history {
                continue;
            }
            let cookie_id = &cookie_ids[usize::from(sess.cookie)];
            seen[usize::from(sess.cookie)] = true;
            let login = match sess.purchase {
                Some(i) if act.web_orders[i].on_duplicate => logins[1].as_deref(),
                _ => logins[0].as_deref(),
            };
            let ctx = SessionCtx {
                cookie_id,
                login,
                start,
                end_of_history,
            };
            let end =
                self.write_session(rng, p, act, sess.purchase, &ctx, &mut logged_in_before)?;
            prev = Some((sess.cookie, end));
        }
        self.sessions = sessions;
        cookies.extend(
            cookie_ids
                .into_iter()
                .zip(seen)
                .filter(|(_, s)| *s)
                .map(|(id, _)| id),
        );
        Ok(())
    }

    /// Writes one session's page views; returns the last event's instant.
    fn write_session<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        act: &Activity,
        purchase: Option<usize>,
        ctx: &SessionCtx<'_>,
        logged_in_before: &mut bool,
    ) -> io::Result<i64> {
        self.plan_pages(rng, p, act, purchase);
        let utm = UTM[weighted(rng, &UTM_WEIGHTS)];
        let can_login = ctx.login.is_some();
        // From which page on the visitor is logged in (`usize::MAX` = never).
        let mut login_from = usize::MAX;
        if can_login
            && *logged_in_before
            && rng.random_bool(if purchase.is_some() { 0.7 } else { 0.6 })
        {
            login_from = 0;
        } else if can_login && rng.random_bool(if purchase.is_some() { 0.5 } else { 0.15 }) {
            let at = if purchase.is_some() {
                CHECKOUT
            } else {
                ACCOUNT
            };
            if purchase.is_none() {
                self.pages.push((ACCOUNT, 0));
            }
            login_from = self
                .pages
                .iter()
                .position(|(pg, _)| *pg == at)
                .unwrap_or(usize::MAX);
        }
        if login_from != usize::MAX {
            *logged_in_before = true;
        }
        let checkout_email = if login_from == usize::MAX {
            render_email(
                rng,
                p.email.as_deref().or(p.work_email.as_deref()),
                &TYPED_EMAIL,
            )
        } else {
            render_email(rng, p.email.as_deref(), &ACCOUNT_EMAIL)
        };

        let mut t = ctx.start;
        let pages = std::mem::take(&mut self.pages);
        for (i, &(page, arg)) in pages.iter().enumerate() {
            if i > 0 {
                // Long enough to look real, short enough to stay one session.
                t += rng.random_range(5..600);
            }
            if t > ctx.end_of_history {
                break;
            }
            self.event_id.clear();
            let _ = write!(self.event_id, "W{:010}", self.next_event);
            self.next_event += 1;
            self.ts.clear();
            push_utc(&mut self.ts, t);
            self.url.clear();
            self.url.push_str("https://www.shop.dk");
            let _ = match page {
                HOME => write!(self.url, "/"),
                CATEGORY => write!(
                    self.url,
                    "/c/{}",
                    CATEGORIES[arg as usize % CATEGORIES.len()]
                ),
                PRODUCT => write!(self.url, "/p/sku-{arg:05}"),
                SEARCH => write!(
                    self.url,
                    "/search?q={}",
                    CATEGORIES[arg as usize % CATEGORIES.len()]
                ),
                CART => write!(self.url, "/cart"),
                CHECKOUT => write!(self.url, "/checkout"),
                CONFIRMATION => write!(self.url, "/checkout/confirmation"),
                _ => write!(self.url, "/account"),
            };
            let row = ClickRow {
                event_id: &self.event_id,
                cookie_id: ctx.cookie_id,
                ts: &self.ts,
                page_type: PAGE_TYPES[usize::from(page)],
                url: &self.url,
                utm_source: utm.0,
                utm_medium: utm.1,
                login_customer_id: if i >= login_from { ctx.login } else { None },
                checkout_email: if page == CHECKOUT {
                    checkout_email.as_deref()
                } else {
                    None
                },
            };
            self.clicks.row(&row)?;
        }
        self.pages = pages;
        Ok(t.min(ctx.end_of_history))
    }

    /// Fills `self.pages` with the session's (page type, category or SKU).
    fn plan_pages<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        act: &Activity,
        purchase: Option<usize>,
    ) {
        self.pages.clear();
        let landing = [HOME, CATEGORY, PRODUCT, SEARCH, ACCOUNT]
            [weighted(rng, &[35.0, 20.0, 25.0, 15.0, 5.0])];
        self.pages.push((landing, browse_arg(rng, p, landing)));
        let extra = if purchase.is_some() {
            poisson(rng, 1.5).min(4)
        } else {
            poisson(rng, 2.0).min(7)
        };
        for _ in 0..extra {
            let page = [HOME, CATEGORY, PRODUCT, SEARCH][weighted(rng, &[10.0, 25.0, 50.0, 15.0])];
            self.pages.push((page, browse_arg(rng, p, page)));
        }
        match purchase {
            Some(i) => {
                self.pages.push((PRODUCT, act.web_orders[i].sku));
                self.pages
                    .extend_from_slice(&[(CART, 0), (CHECKOUT, 0), (CONFIRMATION, 0)]);
            }
            // Some browsing sessions put things in the cart and abandon it.
            None if rng.random_bool(0.10) => {
                self.pages.push((CART, 0));
                if rng.random_bool(0.4) {
                    self.pages.push((CHECKOUT, 0));
                }
            }
            None => {}
        }
    }
}

struct SessionCtx<'a> {
    cookie_id: &'a str,
    login: Option<&'a str>,
    start: i64,
    end_of_history: i64,
}

/// The category (for category and search pages) or SKU (product pages) viewed.
fn browse_arg<R: Rng>(rng: &mut R, p: &Person, page: u8) -> u32 {
    let cat = pick_category(rng, &p.traits) as u32;
    match page {
        PRODUCT => cat * SKUS_PER_CATEGORY + rng.random_range(1..=SKUS_PER_CATEGORY),
        CATEGORY | SEARCH => cat,
        _ => 0,
    }
}
