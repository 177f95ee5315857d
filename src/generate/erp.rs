//! The ERP export: customer records (with duplicates), orders, order lines
//! and returns, all `;`-delimited as the Danish ERP writes them.

use std::io;
use std::path::Path;

use rand::Rng;

use super::dist::{chance, pick, poisson, weighted};
use super::mess::{
    render_email, render_name, render_phone, EmailHabits, Fold, NameHabits, SHOP_PHONE, TEST_EMAIL,
};
use super::names::{CATEGORIES, CATEGORY_PRICE_ORE};
use super::out::{add_days, CsvOut};
use super::person::{pick_category, Person};
use super::{Activity, GeneratedFile, Settings, WebOrder};

pub(crate) const CUSTOMERS_HEADER: &[&str] = &[
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "street",
    "postcode",
    "city",
    "birth_date",
    "created_at",
    "loyalty_id",
    "customer_type",
    "contract_id",
];
pub(crate) const ORDERS_HEADER: &[&str] = &[
    "order_id",
    "customer_id",
    "order_date",
    "channel",
    "store_id",
    "status",
    "payment_status",
    "delivery",
];
pub(crate) const LINES_HEADER: &[&str] = &[
    "order_id",
    "line_no",
    "sku",
    "category",
    "quantity",
    "unit_price",
    "discount_amount",
    "unit_cost",
];
pub(crate) const RETURNS_HEADER: &[&str] = &[
    "return_id",
    "order_id",
    "line_no",
    "return_date",
    "quantity",
    "refund_amount",
    "reason",
];

/// SKUs per category; SKU numbers are laid out in category blocks.
pub(crate) const SKUS_PER_CATEGORY: u32 = 250;
const STORES: u8 = 20;
/// Mean of the window fraction (created-in-history and churn shorten it),
/// so that the mean order count comes out near `orders_per_customer`.
const MEAN_WINDOW_FRACTION: f64 = 0.7;
/// Upper bound on one person's orders; only absurd options get near it.
const MAX_ORDERS_PER_PERSON: u64 = 200_000;

const PRIMARY_NAMES: NameHabits = NameHabits {
    fold_rate: 0.12,
    typo_rate: 0.05,
    swap_rate: 0.02,
    upper_rate: 0.04,
    lower_rate: 0.02,
};
/// Duplicates are created in a hurry at the till: messier.
const DUPLICATE_NAMES: NameHabits = NameHabits {
    fold_rate: 0.25,
    typo_rate: 0.10,
    swap_rate: 0.05,
    upper_rate: 0.08,
    lower_rate: 0.04,
};
const PRIMARY_EMAIL: EmailHabits = EmailHabits {
    missing_rate: 0.05,
    case_rate: 0.08,
    dots_rate: 0.10,
    tag_rate: 0.03,
    space_rate: 0.02,
};
const DUPLICATE_EMAIL: EmailHabits = EmailHabits {
    missing_rate: 0.15,
    case_rate: 0.30,
    dots_rate: 0.40,
    tag_rate: 0.15,
    space_rate: 0.05,
};
const ERP_PHONE_FORMATS: [f64; 3] = [0.3, 0.2, 0.5];

/// One ERP customer record of a person.
#[derive(Clone, Copy)]
pub(crate) struct ErpRecord {
    pub(crate) id: u64,
    pub(crate) created: i32,
}

pub(crate) fn customer_id(id: u64) -> String {
    format!("C{id:07}")
}

pub(crate) struct Erp {
    customers: CsvOut,
    orders: CsvOut,
    lines: CsvOut,
    returns: CsvOut,
    next_customer: u64,
    next_order: u64,
    next_return: u64,
    next_contract: u64,
    /// Reused per person: the order dates.
    days: Vec<i32>,
}

impl Erp {
    pub(crate) fn create(root: &Path) -> io::Result<Erp> {
        Ok(Erp {
            customers: CsvOut::create(root, "erp/customers.csv", b';', CUSTOMERS_HEADER)?,
            orders: CsvOut::create(root, "erp/orders.csv", b';', ORDERS_HEADER)?,
            lines: CsvOut::create(root, "erp/order_lines.csv", b';', LINES_HEADER)?,
            returns: CsvOut::create(root, "erp/returns.csv", b';', RETURNS_HEADER)?,
            next_customer: 1,
            next_order: 1,
            next_return: 1,
            next_contract: 1001,
            days: Vec::new(),
        })
    }

    pub(crate) fn finish(self) -> io::Result<Vec<GeneratedFile>> {
        Ok(vec![
            self.customers.finish()?,
            self.orders.finish()?,
            self.lines.finish()?,
            self.returns.finish()?,
        ])
    }

    /// Writes the person's ERP customer records: the primary one and, for a
    /// few, a later duplicate. Returns them in that order.
    pub(crate) fn write_customers<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        member: Option<u64>,
        s: &Settings,
    ) -> io::Result<[Option<ErpRecord>; 2]> {
        if !p.traits.has_erp {
            return Ok([None, None]);
        }
        // Most ERP customers predate the analysed history; the rest join during it.
        let created = if rng.random_bool(0.6) {
            let lo = add_days(s.history_start, -6 * 365);
            rng.random_range(lo..=add_days(s.history_start, -1).max(lo))
        } else {
            rng.random_range(s.history_start..=s.as_of)
        };
        let primary = ErpRecord {
            id: self.next_customer,
            created,
        };
        self.next_customer += 1;
        // A moved person's primary record may still show the old address.
        let primary_old = p.old_address.is_some() && rng.random_bool(0.5);
        self.write_customer(rng, p, primary, member, false, primary_old)?;
        if !p.traits.erp_duplicate {
            return Ok([Some(primary), None]);
        }
        let from = created.max(s.history_start);
        let dup = ErpRecord {
            id: self.next_customer,
            created: rng.random_range(from..=s.as_of),
        };
        self.next_customer += 1;
        self.write_customer(rng, p, dup, member, true, p.old_address.is_some())?;
        Ok([Some(primary), Some(dup)])
    }

    fn write_customer<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        rec: ErpRecord,
        member: Option<u64>,
        duplicate: bool,
        old_address: bool,
    ) -> io::Result<()> {
        let out = &mut self.customers;
        out.raw(format_args!("C{:07}", rec.id))?;
        let habits = if duplicate {
            &DUPLICATE_NAMES
        } else {
            &PRIMARY_NAMES
        };
        let (first, last) = render_name(rng, p.first, p.last, habits);
        out.text(if chance(rng, 0.01) { "" } else { &first })?;
        out.text(&last)?;

        let email = if chance(rng, 0.001) {
            Some(TEST_EMAIL.to_string())
        } else if duplicate && p.work_email.is_some() && rng.random_bool(0.35) {
            // The duplicate was opened with another address altogether.
            p.work_email.clone()
        } else {
            render_email(
                rng,
                p.email.as_deref(),
                if duplicate {
                    &DUPLICATE_EMAIL
                } else {
                    &PRIMARY_EMAIL
                },
            )
        };
        out.opt(email.as_deref())?;

        let phone = if chance(rng, 0.002) {
            Some(SHOP_PHONE.to_string())
        } else if chance(rng, 0.06) {
            None
        } else {
            p.phone.map(|n| render_phone(rng, n, &ERP_PHONE_FORMATS))
        };
        out.opt(phone.as_deref())?;

        let addr = match (old_address, p.old_address) {
            (true, Some(old)) => old,
            _ => p.address,
        };
        let fold = if rng.random_bool(0.05) {
            Fold::Strip
        } else {
            Fold::Keep
        };
        let street = addr.render_street(rng, if duplicate { 0.4 } else { 0.15 }, fold);
        out.text(if chance(rng, 0.02) { "" } else { &street })?;
        out.text(if chance(rng, 0.02) {
            ""
        } else {
            addr.postcode()
        })?;
        let city = addr.city(rng, 0.1);
        out.text(if chance(rng, 0.03) { "" } else { city })?;

        // Birth dates: mostly ISO, some screens store DD-MM-YYYY.
        let r: f64 = rng.random();
        if r < 0.05 {
            out.text("")?;
        } else if r < 0.15 {
            out.date_dmy(p.birth)?;
        } else {
            out.date(p.birth)?;
        }
        out.date(rec.created)?;

        let loyalty_rate = if duplicate { 0.2 } else { 0.4 };
        match member {
            Some(m) if rng.random_bool(loyalty_rate) => out.raw(format_args!("M{m:06}"))?,
            _ => out.text("")?,
        }
        out.text(if p.traits.b2b { "B2B" } else { "B2C" })?;
        if p.traits.b2b && !duplicate && rng.random_bool(0.5) {
            out.raw(format_args!("K-{:04}", self.next_contract))?;
            self.next_contract += 1;
        } else {
            out.text("")?;
        }
        out.end_row(false)
    }

    /// Writes the person's orders with their lines and returns, and records
    /// what the other sources need to know in `act`.
    pub(crate) fn write_orders<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        records: &[Option<ErpRecord>; 2],
        s: &Settings,
        act: &mut Activity,
    ) -> io::Result<()> {
        let Some(primary) = records[0] else {
            return Ok(());
        };
        let t = &p.traits;
        if !t.buyer || s.orders_per_customer <= 0.0 {
            return Ok(());
        }
        let start = primary.created.max(s.history_start);
        let end = if t.churns {
            rng.random_range(start..=s.as_of)
        } else {
            s.as_of
        };
        let window = f64::from(end - start + 1) / f64::from(s.history_days);
        let n = poisson(rng, t.order_rate * window / MEAN_WINDOW_FRACTION)
            .clamp(1, MAX_ORDERS_PER_PERSON);
        self.days.clear();
        for _ in 0..n {
            self.days.push(rng.random_range(start..=end));
        }
        self.days.sort_unstable();

        let days = std::mem::take(&mut self.days);
        for &day in &days {
            let on_dup = matches!(records[1], Some(d) if day >= d.created && rng.random_bool(0.5));
            let rec = if on_dup {
                records[1].unwrap_or(primary)
            } else {
                primary
            };
            self.write_order(rng, p, rec, day, on_dup, s, act)?;
        }
        self.days = days;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_order<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        rec: ErpRecord,
        day: i32,
        on_dup: bool,
        s: &Settings,
        act: &mut Activity,
    ) -> io::Result<()> {
        let t = &p.traits;
        let order = self.next_order;
        self.next_order += 1;
        let channel = weighted(rng, &t.channel_weights);
        let failed = rng.random_bool(0.02);
        let cancelled = if failed {
            rng.random_bool(0.7)
        } else {
            rng.random_bool(0.025)
        };
        let bad = chance(rng, s.bad_row_rate).then(|| rng.random_range(0..4u8));

        let o = &mut self.orders;
        if bad == Some(0) {
            o.text("")?;
        } else {
            o.raw(format_args!("O{order:08}"))?;
        }
        o.raw(format_args!("C{:07}", rec.id))?;
        match bad {
            Some(1) => o.text("2025-13-45")?,
            Some(2) => o.text("31/02/2025")?,
            Some(3) => o.text("igår")?,
            _ => o.date(day)?,
        }
        o.text(["store", "web", "app"][channel])?;
        if channel == 0 {
            let store = if rng.random_bool(0.85) {
                t.home_store
            } else {
                rng.random_range(1..=STORES)
            };
            o.raw(format_args!("S{store:02}"))?;
        } else {
            o.text("")?;
        }
        o.text(if cancelled { "cancelled" } else { "completed" })?;
        o.text(if failed { "failed" } else { "ok" })?;
        o.text(match channel {
            0 => "none",
            _ if rng.random_bool(0.6) => "home",
            _ => "pickup",
        })?;
        o.end_row(bad.is_some())?;

        act.orders += 1;
        act.pain += u32::from(failed) + u32::from(cancelled);
        act.store_orders += u32::from(channel == 0);
        act.last_order = Some(day);
        act.first_order.get_or_insert(day);

        let lines = 1 + poisson(rng, t.extra_lines).min(4) as u32;
        let mut first_sku = 0;
        for line_no in 1..=lines {
            let sku = self.write_line(
                rng,
                p,
                order,
                line_no,
                day,
                channel,
                !cancelled && !failed,
                s,
                act,
            )?;
            if line_no == 1 {
                first_sku = sku;
            }
        }
        if channel == 1 {
            act.web_orders.push(WebOrder {
                day,
                on_duplicate: on_dup,
                sku: first_sku,
            });
        }
        Ok(())
    }

    /// Writes one order line (and maybe its return); returns the SKU number.
    #[allow(clippy::too_many_arguments)]
    fn write_line<R: Rng>(
        &mut self,
        rng: &mut R,
        p: &Person,
        order: u64,
        line_no: u32,
        day: i32,
        channel: usize,
        fulfilled: bool,
        s: &Settings,
        act: &mut Activity,
    ) -> io::Result<u32> {
        let t = &p.traits;
        let cat = pick_category(rng, t);
        let sku = cat as u32 * SKUS_PER_CATEGORY + rng.random_range(1..=SKUS_PER_CATEGORY);
        let (price, cost) = sku_price(s.seed, sku, cat);
        let mut qty: i64 = 1 + if cat == 0 {
            poisson(rng, 1.0)
        } else {
            poisson(rng, 0.15)
        } as i64;
        if t.b2b {
            qty *= rng.random_range(3..=15);
        }
        let gross = price * qty;
        let (rate, lo, hi) = if t.discount_hunter {
            (0.75, 0.20, 0.50)
        } else {
            (0.12, 0.05, 0.25)
        };
        let discount = if rng.random_bool(rate) {
            (gross as f64 * rng.random_range(lo..hi)).round() as i64
        } else {
            0
        };
        let bad = chance(rng, s.bad_row_rate).then(|| rng.random_range(0..4u8));

        let w = &mut self.lines;
        w.raw(format_args!("O{order:08}"))?;
        w.raw(format_args!("{line_no}"))?;
        w.raw(format_args!("SKU-{sku:05}"))?;
        w.text(CATEGORIES[cat])?;
        match bad {
            Some(0) => w.text(pick(rng, &["two", "to stk", "1 1/2"]))?,
            _ => w.raw(format_args!("{qty}"))?,
        }
        match bad {
            // A thousands separator gone wrong: `129,95,0`.
            Some(1) => w.raw(format_args!("{},{:02},0", price / 100, price % 100))?,
            _ => w.money(price)?,
        }
        match bad {
            Some(2) => w.text("--")?,
            _ => w.money(discount)?,
        }
        match bad {
            Some(3) => w.text("n/a")?,
            _ => w.money(cost)?,
        }
        w.end_row(bad.is_some())?;

        if !fulfilled {
            return Ok(sku);
        }
        let net = gross - discount;
        act.spend_ore += net;
        let cat_factor = [0.3, 0.8, 1.0, 1.3, 2.5, 1.0, 0.8, 1.2][cat];
        let channel_factor = if channel == 0 { 0.8 } else { 1.4 };
        let p_return = 0.045 * cat_factor * channel_factor * t.return_factor;
        if day < s.as_of && chance(rng, p_return) {
            let back = rng.random_range(1..=qty);
            let refund = net * back / qty;
            act.spend_ore -= refund;
            act.pain += 1;
            let r = &mut self.returns;
            r.raw(format_args!("R{:08}", self.next_return))?;
            self.next_return += 1;
            r.raw(format_args!("O{order:08}"))?;
            r.raw(format_args!("{line_no}"))?;
            r.date(add_days(day, rng.random_range(1..=30)).min(s.as_of))?;
            r.raw(format_args!("{back}"))?;
            r.money(refund)?;
            let reasons = if cat == 4 {
                [0.1, 0.6, 0.15, 0.15]
            } else {
                [0.35, 0.05, 0.3, 0.3]
            };
            r.text(
                ["damaged", "wrong_size", "not_as_described", "changed_mind"]
                    [weighted(rng, &reasons)],
            )?;
            r.end_row(false)?;
        }
        Ok(sku)
    }
}

/// List price and unit cost of a SKU in øre, a pure function of (seed, SKU)
/// so that a SKU keeps its price across orders. Prices end in 95 øre.
pub(crate) fn sku_price(seed: u64, sku: u32, cat: usize) -> (i64, i64) {
    let h = splitmix64(seed ^ u64::from(sku).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    let (lo, hi) = CATEGORY_PRICE_ORE[cat % CATEGORY_PRICE_ORE.len()];
    let raw = lo as f64 * (hi as f64 / lo as f64).powf(u);
    let price = ((raw / 100.0).round() as i64 * 100 - 5).max(95);
    let h2 = splitmix64(h);
    let v = (h2 >> 11) as f64 / (1u64 << 53) as f64;
    // A few loss leaders are sold below cost.
    let margin_factor = if v < 0.02 { 1.08 } else { 0.45 + 0.4 * v };
    (price, (price as f64 * margin_factor).round() as i64)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
