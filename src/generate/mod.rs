//! Deterministic, seeded, streaming generator of the retailer's raw exports.
//!
//! This module owns the sample data: ERP customers, orders, lines and
//! returns; loyalty members, app events and survey answers; the web
//! clickstream; and the `ground_truth.csv` that says which record belongs to
//! which true person (for measuring identity resolution).
//!
//! Every person has one canonical identity; each source record renders it
//! messily (see the domain doc, section 1): transliterated and misspelt
//! names, e-mail and phone variants, old addresses, shared household
//! e-mails, a shop phone number and test e-mails, missing fields, and at
//! `bad_row_rate` deliberately malformed rows in `erp/orders.csv`,
//! `erp/order_lines.csv` and `loyalty/survey_answers.csv`.
//!
//! Determinism: households are drawn in order, each from its own ChaCha8
//! stream (stream number = its first person's index) of a generator seeded
//! with `seed`; ids are sequential counters. The same options therefore give
//! byte-identical files.
//!
//! Streaming: all files are open at once behind buffered writers, and each
//! person's rows are written as they are drawn; only one person's order
//! dates and sessions are held in memory.

mod dist;
mod erp;
mod loyalty;
mod mess;
mod names;
mod out;
mod person;
mod web;

use std::io;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use erp::Erp;
use loyalty::Loyalty;
use out::{add_days, day_of, CsvOut};
use web::Web;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Number of true persons.
    pub customers: u64,
    pub seed: u64,
    /// Last day of history; nothing is generated after it.
    pub as_of: chrono::NaiveDate,
    /// History length in years.
    pub years: u32,
    /// Mean orders per buying person over the history (capped at 10,000).
    pub orders_per_customer: f64,
    /// Fraction of rows deliberately malformed in orders, order lines and
    /// survey answers; clamped into [0, 1].
    pub bad_row_rate: f64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            customers: 1000,
            seed: 42,
            as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap_or_default(),
            years: 3,
            orders_per_customer: 6.0,
            bad_row_rate: 0.001,
        }
    }
}

/// One written export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Relative to the output folder, e.g. `erp/orders.csv`.
    pub path: String,
    /// Data rows (CSV: without the header; NDJSON: lines).
    pub rows: u64,
    /// Rows deliberately malformed.
    pub bad_rows: u64,
}

/// What `generate` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateSummary {
    pub files: Vec<GeneratedFile>,
}

/// How often (in persons) `progress` is called.
const PROGRESS_EVERY: u64 = 10_000;
/// Upper bound on `orders_per_customer`; beyond it runs would never finish.
const MAX_ORDERS_PER_CUSTOMER: f64 = 10_000.0;

/// Options after clamping, on the internal day-number scale.
pub(crate) struct Settings {
    pub(crate) seed: u64,
    pub(crate) as_of: i32,
    /// First day of history; `<= as_of`.
    pub(crate) history_start: i32,
    /// `as_of - history_start + 1`, at least 1.
    pub(crate) history_days: i32,
    pub(crate) orders_per_customer: f64,
    pub(crate) bad_row_rate: f64,
    /// Seed-derived key of the phone-number permutation.
    pub(crate) phone_key: u64,
}

impl Settings {
    fn new(o: &GenerateOptions) -> Settings {
        let as_of = day_of(o.as_of);
        let years = i64::from(o.years);
        let history_start = add_days(as_of, -(years * 365 + years / 4) + 1).min(as_of);
        let finite_or_zero = |x: f64| if x.is_finite() { x } else { 0.0 };
        Settings {
            seed: o.seed,
            as_of,
            history_start,
            history_days: as_of - history_start + 1,
            orders_per_customer: finite_or_zero(o.orders_per_customer)
                .clamp(0.0, MAX_ORDERS_PER_CUSTOMER),
            bad_row_rate: finite_or_zero(o.bad_row_rate).clamp(0.0, 1.0),
            phone_key: o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8,
        }
    }
}

/// A web order, for the clickstream to give it a purchase session.
pub(crate) struct WebOrder {
    pub(crate) day: i32,
    /// Placed on the duplicate ERP record (so the login shows that id).
    pub(crate) on_duplicate: bool,
    pub(crate) sku: u32,
}

/// What one person did in the ERP, as the app, survey and web need it.
#[derive(Default)]
pub(crate) struct Activity {
    pub(crate) orders: u32,
    pub(crate) store_orders: u32,
    /// Failed payments, cancellations and returns: fuel for complaints.
    pub(crate) pain: u32,
    /// Net revenue of fulfilled lines after refunds, in øre.
    pub(crate) spend_ore: i64,
    pub(crate) first_order: Option<i32>,
    pub(crate) last_order: Option<i32>,
    pub(crate) web_orders: Vec<WebOrder>,
}

impl Activity {
    fn reset(&mut self) {
        let mut web_orders = std::mem::take(&mut self.web_orders);
        web_orders.clear();
        *self = Activity {
            web_orders,
            ..Activity::default()
        };
    }
}

/// Writes all exports under `out_dir` (creating sub-folders). `progress` is
/// called now and then with the number of persons done.
pub fn generate(
    opts: &GenerateOptions,
    out_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> io::Result<GenerateSummary> {
    let s = Settings::new(opts);
    let mut erp = Erp::create(out_dir)?;
    let mut loyalty = Loyalty::create(out_dir)?;
    let mut web = Web::create(out_dir)?;
    let mut truth = CsvOut::create(
        out_dir,
        "ground_truth.csv",
        b',',
        &["source", "record_id", "person_id"],
    )?;

    let base = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut act = Activity::default();
    let mut cookies: Vec<String> = Vec::new();
    let mut done = 0u64;
    while done < opts.customers {
        let mut rng = base.clone();
        rng.set_stream(done);
        let household = person::draw_household(&mut rng, done + 1, opts.customers - done, &s);
        for p in &household {
            let pid = format!("P{:07}", p.number);
            let member = p.traits.is_member.then(|| loyalty.assign_member());

            let records = erp.write_customers(&mut rng, p, member, &s)?;
            for rec in records.iter().flatten() {
                truth_row(&mut truth, "erp_customers", &erp::customer_id(rec.id), &pid)?;
            }
            act.reset();
            erp.write_orders(&mut rng, p, &records, &s, &mut act)?;

            if let Some(m) = member {
                let joined = loyalty.write_member(&mut rng, p, m, &s)?;
                truth_row(&mut truth, "loyalty_members", &loyalty::member_id(m), &pid)?;
                loyalty.write_events(&mut rng, p, m, joined, &act, &s)?;
                loyalty.write_survey(&mut rng, p, m, joined, &act, &s)?;
            }

            cookies.clear();
            web.write_person(&mut rng, p, &records, &act, &s, &mut cookies)?;
            for c in &cookies {
                truth_row(&mut truth, "web_cookies", c, &pid)?;
            }
        }
        let before = done;
        done += household.len() as u64;
        if before / PROGRESS_EVERY != done / PROGRESS_EVERY {
            progress(done);
        }
    }
    progress(done);

    let mut files = erp.finish()?;
    files.extend(loyalty.finish()?);
    files.extend(web.finish()?);
    files.push(truth.finish()?);
    Ok(GenerateSummary { files })
}

fn truth_row(truth: &mut CsvOut, source: &str, record: &str, person: &str) -> io::Result<()> {
    truth.text(source)?;
    truth.text(record)?;
    truth.text(person)?;
    truth.end_row(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("crm_marts_generate_{}_{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn opts(customers: u64, seed: u64) -> GenerateOptions {
        GenerateOptions {
            customers,
            seed,
            ..GenerateOptions::default()
        }
    }

    fn run(o: &GenerateOptions, name: &str) -> (TempDir, GenerateSummary) {
        let dir = TempDir::new(name);
        let summary = generate(o, &dir.0, &mut |_| {}).unwrap();
        (dir, summary)
    }

    const ALL_FILES: [&str; 9] = [
        "erp/customers.csv",
        "erp/orders.csv",
        "erp/order_lines.csv",
        "erp/returns.csv",
        "loyalty/members.ndjson",
        "loyalty/app_events.ndjson",
        "loyalty/survey_answers.csv",
        "web/clickstream.ndjson",
        "ground_truth.csv",
    ];

    fn read_csv(dir: &Path, rel: &str) -> (Vec<String>, Vec<csv::StringRecord>) {
        let delim = if rel.starts_with("erp/") { b';' } else { b',' };
        let mut r = csv::ReaderBuilder::new()
            .delimiter(delim)
            .from_path(dir.join(rel))
            .unwrap();
        let header = r.headers().unwrap().iter().map(str::to_string).collect();
        // The reader fails on a record with the wrong number of fields.
        let rows = r.records().map(|x| x.unwrap()).collect();
        (header, rows)
    }

    fn read_ndjson(dir: &Path, rel: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        std::fs::read_to_string(dir.join(rel))
            .unwrap()
            .lines()
            .map(|l| match serde_json::from_str(l).unwrap() {
                serde_json::Value::Object(m) => m,
                other => panic!("not an object: {other}"),
            })
            .collect()
    }

    fn col(header: &[String], name: &str) -> usize {
        header.iter().position(|h| h == name).unwrap()
    }

    #[test]
    fn same_seed_gives_identical_bytes_and_another_seed_differs() {
        let (a, _) = run(&opts(300, 7), "det_a");
        let (b, _) = run(&opts(300, 7), "det_b");
        let (c, _) = run(&opts(300, 8), "det_c");
        for f in ALL_FILES {
            let x = std::fs::read(a.0.join(f)).unwrap();
            assert_eq!(
                x,
                std::fs::read(b.0.join(f)).unwrap(),
                "{f} differs between identical runs"
            );
            if f != "erp/returns.csv" {
                assert_ne!(
                    x,
                    std::fs::read(c.0.join(f)).unwrap(),
                    "{f} ignores the seed"
                );
            }
        }
    }

    #[test]
    fn files_have_headers_counts_and_consistent_keys() {
        let (dir, summary) = run(&opts(400, 1), "structure");
        let paths: Vec<&str> = summary.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ALL_FILES);
        let headers: BTreeMap<&str, &[&str]> = [
            ("erp/customers.csv", erp::CUSTOMERS_HEADER),
            ("erp/orders.csv", erp::ORDERS_HEADER),
            ("erp/order_lines.csv", erp::LINES_HEADER),
            ("erp/returns.csv", erp::RETURNS_HEADER),
            ("loyalty/survey_answers.csv", loyalty::SURVEY_HEADER),
            (
                "ground_truth.csv",
                &["source", "record_id", "person_id"][..],
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(erp::CUSTOMERS_HEADER.join(";"), "customer_id;first_name;last_name;email;phone;street;postcode;city;birth_date;created_at;loyalty_id;customer_type;contract_id");
        assert_eq!(
            erp::ORDERS_HEADER.join(";"),
            "order_id;customer_id;order_date;channel;store_id;status;payment_status;delivery"
        );
        assert_eq!(
            erp::LINES_HEADER.join(";"),
            "order_id;line_no;sku;category;quantity;unit_price;discount_amount;unit_cost"
        );
        assert_eq!(
            erp::RETURNS_HEADER.join(";"),
            "return_id;order_id;line_no;return_date;quantity;refund_amount;reason"
        );
        assert_eq!(loyalty::SURVEY_HEADER.join(","), "response_id,member_id,answered_at,touchpoint,nps,csat,ces,category_spend_monthly,brands_used,our_rank");

        let mut record_ids: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for f in &summary.files {
            let text = std::fs::read_to_string(dir.0.join(&f.path)).unwrap();
            if let Some(h) = headers.get(f.path.as_str()) {
                let delim = if f.path.starts_with("erp/") { ";" } else { "," };
                assert_eq!(
                    text.lines().next().unwrap(),
                    h.join(delim),
                    "header of {}",
                    f.path
                );
                let (_, rows) = read_csv(&dir.0, &f.path);
                assert_eq!(rows.len() as u64, f.rows, "{}", f.path);
                assert_eq!(text.lines().count() as u64, f.rows + 1, "{}", f.path);
            } else {
                assert_eq!(
                    read_ndjson(&dir.0, &f.path).len() as u64,
                    f.rows,
                    "{}",
                    f.path
                );
            }
            assert!(f.rows > 0, "{} is empty", f.path);
        }

        let (h, customers) = read_csv(&dir.0, "erp/customers.csv");
        let ids: BTreeSet<String> = customers
            .iter()
            .map(|r| r[col(&h, "customer_id")].to_string())
            .collect();
        assert_eq!(ids.len(), customers.len(), "customer ids are unique");
        let (h, orders) = read_csv(&dir.0, "erp/orders.csv");
        for o in &orders {
            assert!(
                ids.contains(&o[col(&h, "customer_id")]),
                "order of unknown customer {:?}",
                o
            );
        }
        record_ids.insert("erp_customers", ids);
        let members = read_ndjson(&dir.0, "loyalty/members.ndjson");
        record_ids.insert(
            "loyalty_members",
            members
                .iter()
                .map(|m| m["member_id"].as_str().unwrap().to_string())
                .collect(),
        );
        let clicks = read_ndjson(&dir.0, "web/clickstream.ndjson");
        record_ids.insert(
            "web_cookies",
            clicks
                .iter()
                .map(|c| c["cookie_id"].as_str().unwrap().to_string())
                .collect(),
        );

        let (h, truth) = read_csv(&dir.0, "ground_truth.csv");
        let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for t in &truth {
            let fresh = seen
                .entry(
                    record_ids
                        .keys()
                        .find(|k| **k == &t[col(&h, "source")])
                        .unwrap(),
                )
                .or_default();
            assert!(
                fresh.insert(t[col(&h, "record_id")].to_string()),
                "{:?} listed twice",
                t
            );
            assert!(t[col(&h, "person_id")].starts_with('P'));
        }
        assert_eq!(seen, record_ids);
    }

    fn parses_money(s: &str) -> bool {
        let (a, b) = s.split_once('.').unwrap_or(("", ""));
        !a.is_empty() && b.len() == 2 && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
    }

    fn parses_date(s: &str) -> bool {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
    }

    #[test]
    fn zero_bad_row_rate_gives_clean_values() {
        let o = GenerateOptions {
            bad_row_rate: 0.0,
            ..opts(300, 3)
        };
        let (dir, summary) = run(&o, "clean");
        assert!(summary.files.iter().all(|f| f.bad_rows == 0));
        let as_of = o.as_of.format("%Y-%m-%d").to_string();

        let (h, orders) = read_csv(&dir.0, "erp/orders.csv");
        for r in &orders {
            assert!(r[col(&h, "order_id")].starts_with('O'));
            let d = &r[col(&h, "order_date")];
            assert!(parses_date(d) && d <= as_of.as_str(), "{:?}", r);
        }
        let (h, lines) = read_csv(&dir.0, "erp/order_lines.csv");
        for r in &lines {
            assert!(r[col(&h, "quantity")].parse::<u32>().unwrap() >= 1);
            for c in ["unit_price", "discount_amount", "unit_cost"] {
                assert!(parses_money(&r[col(&h, c)]), "{c} in {:?}", r);
            }
        }
        let (h, returns) = read_csv(&dir.0, "erp/returns.csv");
        for r in &returns {
            let d = &r[col(&h, "return_date")];
            assert!(parses_date(d) && d <= as_of.as_str());
            assert!(parses_money(&r[col(&h, "refund_amount")]));
            r[col(&h, "quantity")].parse::<u32>().unwrap();
        }
        let (h, survey) = read_csv(&dir.0, "loyalty/survey_answers.csv");
        for r in &survey {
            assert!(parses_date(&r[col(&h, "answered_at")]));
            for (c, max) in [("nps", 10), ("csat", 5), ("ces", 7), ("brands_used", 6)] {
                let v = &r[col(&h, c)];
                assert!(v.is_empty() || v.parse::<u8>().unwrap() <= max, "{c} = {v}");
            }
            let spend = &r[col(&h, "category_spend_monthly")];
            assert!(spend.is_empty() || parses_money(spend));
        }
        let (h, customers) = read_csv(&dir.0, "erp/customers.csv");
        for r in &customers {
            let b = &r[col(&h, "birth_date")];
            let dmy = chrono::NaiveDate::parse_from_str(b, "%d-%m-%Y").is_ok();
            assert!(b.is_empty() || parses_date(b) || dmy, "birth_date {b}");
            assert!(parses_date(&r[col(&h, "created_at")]));
        }
    }

    #[test]
    fn positive_bad_row_rate_gives_bad_rows() {
        let o = GenerateOptions {
            bad_row_rate: 0.01,
            ..opts(300, 4)
        };
        let (_dir, summary) = run(&o, "bad");
        let rows: u64 = summary
            .files
            .iter()
            .filter(|f| f.bad_rows > 0)
            .map(|f| f.rows)
            .sum();
        let bad: u64 = summary.files.iter().map(|f| f.bad_rows).sum();
        assert!(rows > 2_000 && bad > 0, "rows {rows}, bad {bad}");
        for f in &summary.files {
            let may_be_bad = [
                "erp/orders.csv",
                "erp/order_lines.csv",
                "loyalty/survey_answers.csv",
            ];
            assert!(
                f.bad_rows == 0 || may_be_bad.contains(&f.path.as_str()),
                "{}",
                f.path
            );
        }
    }

    #[test]
    fn zero_customers_writes_headers_only() {
        let (dir, summary) = run(&opts(0, 1), "empty");
        assert_eq!(summary.files.len(), ALL_FILES.len());
        for f in &summary.files {
            assert_eq!(f.rows, 0);
            let text = std::fs::read_to_string(dir.0.join(&f.path)).unwrap();
            let expected = if f.path.ends_with(".csv") { 1 } else { 0 };
            assert_eq!(text.lines().count(), expected, "{}", f.path);
        }
    }

    #[test]
    fn extreme_options_do_not_panic() {
        let cases = [
            GenerateOptions {
                years: 0,
                ..opts(30, 1)
            },
            GenerateOptions {
                years: u32::MAX,
                ..opts(30, 1)
            },
            GenerateOptions {
                orders_per_customer: f64::NAN,
                bad_row_rate: f64::INFINITY,
                ..opts(30, 1)
            },
            GenerateOptions {
                orders_per_customer: -3.0,
                bad_row_rate: -1.0,
                ..opts(30, 1)
            },
            GenerateOptions {
                orders_per_customer: 0.3,
                bad_row_rate: 7.0,
                ..opts(30, 1)
            },
            GenerateOptions {
                as_of: chrono::NaiveDate::MIN,
                ..opts(30, 1)
            },
            GenerateOptions {
                as_of: chrono::NaiveDate::MAX,
                seed: u64::MAX,
                ..opts(30, 1)
            },
        ];
        for (i, o) in cases.iter().enumerate() {
            run(o, &format!("extreme_{i}"));
        }
    }

    #[test]
    fn buying_and_revenue_look_like_a_retailer() {
        let o = GenerateOptions {
            bad_row_rate: 0.0,
            ..opts(1500, 5)
        };
        let (dir, _) = run(&o, "shape");
        let (h, orders) = read_csv(&dir.0, "erp/orders.csv");
        let mut per_customer: BTreeMap<String, u32> = BTreeMap::new();
        let mut customer_of: BTreeMap<String, String> = BTreeMap::new();
        for r in &orders {
            *per_customer
                .entry(r[col(&h, "customer_id")].to_string())
                .or_default() += 1;
            customer_of.insert(
                r[col(&h, "order_id")].to_string(),
                r[col(&h, "customer_id")].to_string(),
            );
        }
        let mean = orders.len() as f64 / per_customer.len() as f64;
        assert!(
            (4.5..8.0).contains(&mean),
            "mean orders per buying customer {mean}"
        );

        let (h, lines) = read_csv(&dir.0, "erp/order_lines.csv");
        let mut revenue: BTreeMap<&str, f64> = BTreeMap::new();
        for r in &lines {
            let q: f64 = r[col(&h, "quantity")].parse().unwrap();
            let p: f64 = r[col(&h, "unit_price")].parse().unwrap();
            let d: f64 = r[col(&h, "discount_amount")].parse().unwrap();
            *revenue
                .entry(&customer_of[&r[col(&h, "order_id")]])
                .or_default() += q * p - d;
        }
        let mut v: Vec<f64> = revenue.into_values().collect();
        v.sort_by(|a, b| b.total_cmp(a));
        let top: f64 = v[..v.len() / 5].iter().sum();
        let share = top / v.iter().sum::<f64>();
        assert!(
            share > 0.6,
            "top 20 % of customers make {share:.2} of revenue"
        );
    }

    #[test]
    fn copenhagen_offsets_follow_eu_summer_time() {
        let at = |y: i32, m: u32, d: u32, h: i64, min: i64, s: i64| {
            let day = day_of(chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap());
            let mut buf = String::new();
            out::push_copenhagen(
                &mut buf,
                i64::from(day) * out::SECS_PER_DAY + h * 3600 + min * 60 + s,
            );
            buf
        };
        assert_eq!(at(2026, 3, 29, 0, 59, 59), "2026-03-29T01:59:59+01:00");
        assert_eq!(at(2026, 3, 29, 1, 0, 0), "2026-03-29T03:00:00+02:00");
        assert_eq!(at(2026, 10, 25, 0, 59, 59), "2026-10-25T02:59:59+02:00");
        assert_eq!(at(2026, 10, 25, 1, 0, 0), "2026-10-25T02:00:00+01:00");
        assert_eq!(at(2026, 1, 15, 12, 0, 0), "2026-01-15T13:00:00+01:00");
    }
}
