//! Profitability, share of wallet and value tiers recomputed in this file from the
//! generated exports (an independent implementation, not the same SQL), plus the
//! Wallet Allocation Rule by hand.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use common::{read_parquet_rows, repo, Project};

const AS_OF: &str = "2026-11-22";
const WINDOW_DAYS: i64 = 365;

fn rows(path: &Path, delimiter: u8) -> Vec<HashMap<String, String>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_path(path)
        .unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader
        .records()
        .map(|r| r.unwrap())
        .filter(|r| r.len() == headers.len())
        .map(|r| {
            headers
                .iter()
                .cloned()
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn ndjson(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

fn f(s: &str) -> Option<f64> {
    s.trim().parse().ok()
}

fn optf(s: &str) -> Option<f64> {
    if s.trim().is_empty() {
        Some(0.0)
    } else {
        f(s)
    }
}

#[derive(Default, Debug)]
struct Expected {
    orders: i64,
    gross: f64,
    discounts: f64,
    cogs: f64,
    refunds: f64,
    returns: i64,
    deliveries: i64,
    contacts: i64,
    our_spend: f64,
}

#[test]
fn wallet_allocation_rule_by_hand() {
    // n = 4 brands, ours ranked 1st: (1 - 1/5) x 2/4 = 0.4; ranked 4th: (1 - 4/5) x 2/4 = 0.1.
    let war = |r: f64, n: f64| (1.0 - r / (n + 1.0)) * 2.0 / n;
    assert!((war(1.0, 4.0) - 0.4).abs() < 1e-12);
    assert!((war(4.0, 4.0) - 0.1).abs() < 1e-12);
    // The shares of all n brands add up to the whole wallet.
    let total: f64 = (1..=4).map(|r| war(r as f64, 4.0)).sum();
    assert!((total - 1.0).abs() < 1e-12);
}

#[test]
fn value_marts_match_an_independent_computation() {
    let p = Project::new();
    let dir = p.path("demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args(["demo", "--customers", "500", "--seed", "21", "--dir"])
        .arg(&dir)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ex = dir.join("exports");
    let as_of = date(AS_OF).unwrap();
    let start = as_of - chrono::Duration::days(WINDOW_DAYS);
    let in_window = |d: NaiveDate| d > start && d <= as_of;

    // The marts are per person: ERP customers and loyalty members are grouped through the
    // published identity map.
    let marts = dir.join("marts");
    let erp_person = common::persons_of(&marts, "erp_customers");
    let member_person = common::persons_of(&marts, "loyalty_members");

    // Orders (valid rows only, as the pipeline quarantines the rest), by person.
    let mut order_customer: HashMap<String, (String, NaiveDate, bool, bool)> = HashMap::new();
    for o in rows(&ex.join("erp/orders.csv"), b';') {
        let Some(d) = date(&o["order_date"]) else {
            continue;
        };
        if o["order_id"].trim().is_empty()
            || o["customer_id"].trim().is_empty()
            || o["status"].trim().is_empty()
        {
            continue;
        }
        let person = erp_person
            .get(o["customer_id"].trim())
            .unwrap_or_else(|| panic!("{} has a person", o["customer_id"]));
        order_customer.insert(
            o["order_id"].clone(),
            (
                person.clone(),
                d,
                o["status"] == "completed",
                o["delivery"] == "home",
            ),
        );
    }
    let mut exp: BTreeMap<String, Expected> = BTreeMap::new();
    let mut counted_orders: HashMap<String, bool> = HashMap::new();
    // Purchases: completed orders up to the as-of date with at least one valid line.
    let mut purchases: std::collections::HashSet<String> = std::collections::HashSet::new();
    for l in rows(&ex.join("erp/order_lines.csv"), b';') {
        let (Some(q), Some(price), Some(disc), Some(cost)) = (
            l["quantity"].trim().parse::<i64>().ok(),
            f(&l["unit_price"]),
            optf(&l["discount_amount"]),
            optf(&l["unit_cost"]),
        ) else {
            continue;
        };
        if l["order_id"].trim().is_empty() || l["line_no"].trim().parse::<i64>().is_err() {
            continue;
        }
        let Some((cust, d, completed, home)) = order_customer.get(&l["order_id"]) else {
            continue;
        };
        if *completed && *d <= as_of {
            purchases.insert(l["order_id"].clone());
        }
        if !completed || !in_window(*d) {
            continue;
        }
        let e = exp.entry(cust.clone()).or_default();
        if counted_orders.insert(l["order_id"].clone(), true).is_none() {
            e.orders += 1;
            e.deliveries += *home as i64;
        }
        e.gross += q as f64 * price;
        e.discounts += disc;
        e.cogs += q as f64 * cost;
        e.our_spend += q as f64 * price - disc;
    }
    // Refunds: returned lines of purchases, dated by the return date or, without one, by
    // the order date (int_refunds).
    for r in rows(&ex.join("erp/returns.csv"), b';') {
        let Some((cust, order_date, ..)) = order_customer.get(&r["order_id"]) else {
            continue;
        };
        if !purchases.contains(&r["order_id"]) {
            continue;
        }
        let d = if r["return_date"].trim().is_empty() {
            *order_date
        } else {
            let Some(d) = date(&r["return_date"]) else {
                continue;
            };
            d
        };
        if r["return_id"].trim().is_empty() || !in_window(d) {
            continue;
        }
        if let Some(e) = exp.get_mut(cust) {
            e.returns += 1;
            e.refunds += optf(&r["refund_amount"]).unwrap_or(0.0);
        }
    }
    // Service contacts of the person's loyalty members; a member id that only ERP records
    // carry belongs to the person of those records.
    let customers = rows(&ex.join("erp/customers.csv"), b';');
    let mut person_of_member = member_person.clone();
    for c in &customers {
        let (m, id) = (c["loyalty_id"].trim(), c["customer_id"].trim());
        if m.is_empty() || member_person.contains_key(m) {
            continue;
        }
        if let Some(k) = erp_person.get(id) {
            let e = person_of_member
                .entry(m.to_string())
                .or_insert_with(|| k.clone());
            if k < e {
                *e = k.clone();
            }
        }
    }
    for e in ndjson(&ex.join("loyalty/app_events.ndjson")) {
        let kind = e["event_type"].as_str().unwrap();
        if kind != "service_contact" && kind != "complaint" {
            continue;
        }
        let at: DateTime<Utc> = DateTime::parse_from_rfc3339(e["event_time"].as_str().unwrap())
            .unwrap()
            .into();
        if !in_window(at.date_naive()) {
            continue;
        }
        if let Some(x) = person_of_member
            .get(e["member_id"].as_str().unwrap())
            .and_then(|k| exp.get_mut(k))
        {
            x.contacts += 1;
        }
    }

    let prof = read_parquet_rows(&marts.join("mart_profitability.parquet"));
    assert_eq!(
        prof.len(),
        exp.len(),
        "one row per customer with an order in the window"
    );
    let close = |a: &str, b: f64| (a.parse::<f64>().unwrap() - b).abs() < 0.011;
    let mut traps = 0;
    for row in &prof {
        let e = &exp[&row["customer_key"]];
        let cost_to_serve =
            e.returns as f64 * 60.0 + e.contacts as f64 * 45.0 + e.deliveries as f64 * 39.0;
        let profit = e.gross - e.discounts - e.refunds - e.cogs - cost_to_serve;
        assert_eq!(row["orders"], e.orders.to_string(), "{row:?}");
        assert!(close(&row["gross_revenue"], e.gross), "{row:?} {e:?}");
        assert!(close(&row["refunds"], e.refunds), "{row:?} {e:?}");
        assert_eq!(
            row["service_contacts"],
            e.contacts.to_string(),
            "{row:?} {e:?}"
        );
        assert!(close(&row["cost_to_serve"], cost_to_serve), "{row:?} {e:?}");
        assert!(close(&row["profit"], profit), "{row:?} {e:?}");
        traps += (row["discount_trap"] == "true") as usize;
    }
    assert!(
        traps > 0,
        "the generator's discount hunters show up as discount traps"
    );

    // Share of wallet: our monthly spend, and the WAR where that method was chosen.
    let sow = read_parquet_rows(&marts.join("mart_share_of_wallet.parquet"));
    let months = WINDOW_DAYS as f64 / 30.4375;
    let mut methods: HashMap<String, usize> = HashMap::new();
    for row in &sow {
        let e = &exp[&row["customer_key"]];
        assert!(
            close(&row["our_monthly_spend"], e.our_spend / months),
            "{row:?}"
        );
        *methods
            .entry(row["category_spend_method"].clone())
            .or_default() += 1;
        if row["category_spend_method"] == "wallet_allocation_rule" {
            let share: f64 = row["wallet_allocation_share"].parse().unwrap();
            let cat: f64 = row["category_monthly_spend"].parse().unwrap();
            assert!(
                (cat - e.our_spend / months / share).abs() / cat < 1e-3,
                "{row:?}"
            );
        }
    }
    assert!(
        methods.contains_key("survey") && methods.contains_key("reference_table"),
        "{methods:?}"
    );

    // Tiers follow their rules, recomputed from the mart's own measures: the cutoffs are
    // interpolated percentiles (as SQL's percentile_cont), computed here by hand.
    let value = read_parquet_rows(&marts.join("mart_customer_value.parquet"));
    let percentile = |mut v: Vec<f64>, p: f64| -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pos = p * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    let mvc_cutoff = percentile(
        value
            .iter()
            .map(|r| r["actual_value"].parse().unwrap())
            .collect(),
        0.90,
    );
    let mgc_cutoff = percentile(
        value
            .iter()
            .map(|r| r["unrealised_potential"].parse().unwrap())
            .collect(),
        0.80,
    );
    assert!((value[0]["mvc_cutoff"].parse::<f64>().unwrap() - mvc_cutoff).abs() < 0.011);
    let mut tiers: HashMap<String, usize> = HashMap::new();
    for row in &value {
        let bz = row["window_profit"]
            .parse::<f64>()
            .map(|p| p < 0.0)
            .unwrap_or(false);
        let actual: f64 = row["actual_value"].parse().unwrap();
        let unrealised: f64 = row["unrealised_potential"].parse().unwrap();
        let expected = if bz {
            "BZ"
        } else if actual >= mvc_cutoff {
            "MVC"
        } else if unrealised >= mgc_cutoff {
            "MGC"
        } else {
            "Other"
        };
        assert_eq!(row["value_tier"], expected, "{row:?}");
        *tiers.entry(expected.to_string()).or_default() += 1;
        let potential: f64 = row["potential_value"].parse().unwrap();
        let clv: f64 = row["clv"].parse().unwrap();
        let wallet: f64 = row["wallet_potential"].parse().unwrap();
        assert!((potential - clv.max(wallet)).abs() < 0.011, "{row:?}");
    }
    assert_eq!(tiers.len(), 4, "all four tiers occur: {tiers:?}");

    // The 360 mart has every person once and no personal data; persons with several ERP
    // records make it shorter than the ERP export.
    let wide = read_parquet_rows(&marts.join("mart_customer_360.parquet"));
    let persons: std::collections::BTreeSet<&String> =
        erp_person.values().chain(member_person.values()).collect();
    assert_eq!(
        wide.len(),
        read_parquet_rows(&marts.join("mart_customer.parquet")).len()
    );
    assert!(
        wide.len() >= persons.len() && wide.len() < customers.len() + member_person.len(),
        "{} persons",
        wide.len()
    );
    let wide_keys: std::collections::BTreeSet<&String> =
        wide.iter().map(|r| &r["customer_key"]).collect();
    assert!(
        persons.iter().all(|k| wide_keys.contains(k)),
        "every ERP and loyalty person is in mart_customer_360"
    );
    for column in ["email", "phone", "first_name", "last_name", "street"] {
        assert!(
            !wide[0].contains_key(column),
            "mart_customer_360 must not carry {column}"
        );
    }
}
