//! The demo end to end through the binary, and the RFM and ABC marts checked against an
//! independent computation in this file over the same generated exports.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::NaiveDate;
use common::{read_parquet_rows, repo, Project};

const AS_OF: &str = "2026-11-22";
const WINDOW_DAYS: i64 = 365;

/// Reads a `;`-separated export into rows keyed by header, keeping only rows whose
/// listed columns parse (the pipeline quarantines the others).
fn read_export(path: &Path, delimiter: u8) -> Vec<HashMap<String, String>> {
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

fn date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

fn num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Optional numeric column: empty is fine, anything else must parse.
fn opt_num(s: &str) -> Option<Option<f64>> {
    if s.trim().is_empty() {
        Some(None)
    } else {
        num(s).map(Some)
    }
}

/// ntile(n) as SQL defines it: the first (len % n) buckets get one extra row.
fn ntile(len: usize, n: usize, position: usize) -> i64 {
    let base = len / n;
    let extra = len % n;
    let big = extra * (base + 1);
    if position < big {
        (position / (base + 1)) as i64 + 1
    } else {
        ((position - big) / base.max(1)) as i64 + extra as i64 + 1
    }
}

struct Customer {
    last: NaiveDate,
    frequency: i64,
    monetary: f64,
}

/// RFM inputs per person: orders are grouped by the person (customer_key) the identity map
/// gives their ERP customer number.
fn expected_per_customer(
    exports: &Path,
    person_of: &HashMap<String, String>,
) -> BTreeMap<String, Customer> {
    let as_of = date(AS_OF).unwrap();
    let window_start = as_of - chrono::Duration::days(WINDOW_DAYS);
    let orders = read_export(&exports.join("erp/orders.csv"), b';');
    let lines = read_export(&exports.join("erp/order_lines.csv"), b';');
    let mut order_net: HashMap<String, f64> = HashMap::new();
    for l in &lines {
        let ok_ids = !l["order_id"].trim().is_empty() && l["line_no"].trim().parse::<i64>().is_ok();
        let qty = l["quantity"].trim().parse::<i64>().ok();
        let price = num(&l["unit_price"]);
        let discount = opt_num(&l["discount_amount"]);
        let cost = opt_num(&l["unit_cost"]);
        let (Some(qty), Some(price), Some(discount), Some(_)) = (qty, price, discount, cost) else {
            continue;
        };
        if !ok_ids {
            continue;
        }
        *order_net.entry(l["order_id"].clone()).or_default() +=
            qty as f64 * price - discount.unwrap_or(0.0);
    }
    let mut per: BTreeMap<String, Customer> = BTreeMap::new();
    for o in &orders {
        let (id, cust, status) = (
            o["order_id"].trim(),
            o["customer_id"].trim(),
            o["status"].trim(),
        );
        let Some(d) = date(&o["order_date"]) else {
            continue;
        };
        if id.is_empty() || cust.is_empty() || status != "completed" || d > as_of {
            continue;
        }
        // An order counts only with at least one valid line (the SQL joins lines).
        let Some(net) = order_net.get(&o["order_id"]) else {
            continue;
        };
        let person = person_of
            .get(cust)
            .unwrap_or_else(|| panic!("ERP customer {cust} has a person"));
        let c = per.entry(person.clone()).or_insert(Customer {
            last: d,
            frequency: 0,
            monetary: 0.0,
        });
        c.last = c.last.max(d);
        if d > window_start {
            c.frequency += 1;
            c.monetary += net;
        }
    }
    for c in per.values_mut() {
        c.monetary = (c.monetary * 100.0).round() / 100.0;
    }
    per
}

fn segment_rules() -> Vec<(i64, String, i64, i64, i64, i64)> {
    let mut rules: Vec<_> = read_export(&repo().join("sql/seeds/rfm_segments.csv"), b',')
        .into_iter()
        .map(|r| {
            let n = |k: &str| r[k].parse::<i64>().unwrap();
            (
                n("priority"),
                r["segment"].clone(),
                n("r_min"),
                n("r_max"),
                n("fm_min"),
                n("fm_max"),
            )
        })
        .collect();
    rules.sort();
    rules
}

#[test]
fn demo_runs_end_to_end_and_rfm_and_abc_match_an_independent_computation() {
    let p = Project::new();
    let dir = p.path("demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args(["demo", "--customers", "400", "--seed", "11", "--dir"])
        .arg(&dir)
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed\n{stdout}\n{stderr}");
    for mart in ["mart_rfm", "mart_abc", "mart_abc_summary"] {
        assert!(stdout.contains(mart), "summary names {mart}:\n{stdout}");
    }
    assert!(
        stdout.contains("quarantined rows"),
        "the generator's bad rows are quarantined:\n{stdout}"
    );
    check_run_report(&dir.join("marts"));

    let persons = common::persons_of(&dir.join("marts"), "erp_customers");
    let expected = expected_per_customer(&dir.join("exports"), &persons);
    assert!(
        expected.len() > 200,
        "enough buying customers: {}",
        expected.len()
    );

    // RFM, computed here from the exports.
    let as_of = date(AS_OF).unwrap();
    let ids: Vec<&String> = expected.keys().collect();
    let n = ids.len();
    let rank_by = |key: &dyn Fn(&Customer) -> f64, descending: bool| -> HashMap<String, i64> {
        let mut order: Vec<&String> = ids.clone();
        order.sort_by(|a, b| {
            let (ka, kb) = (key(&expected[*a]), key(&expected[*b]));
            let ord = if descending {
                kb.partial_cmp(&ka)
            } else {
                ka.partial_cmp(&kb)
            };
            ord.unwrap().then_with(|| a.cmp(b))
        });
        order
            .iter()
            .enumerate()
            .map(|(i, id)| ((*id).clone(), ntile(n, 5, i)))
            .collect()
    };
    let recency = |c: &Customer| (as_of - c.last).num_days() as f64;
    let r = rank_by(&recency, true);
    let f = rank_by(&|c: &Customer| c.frequency as f64, false);
    let m = rank_by(&|c: &Customer| c.monetary, false);
    let rules = segment_rules();

    let rows = read_parquet_rows(&dir.join("marts/mart_rfm.parquet"));
    assert_eq!(rows.len(), n, "one row per buying customer");
    for row in &rows {
        let id = &row["customer_key"];
        let c = &expected[id];
        assert_eq!(
            row["recency_days"],
            ((as_of - c.last).num_days()).to_string(),
            "{id}"
        );
        assert_eq!(row["frequency"], c.frequency.to_string(), "{id}");
        let got_m: f64 = row["monetary"].parse().unwrap();
        assert!(
            (got_m - c.monetary).abs() < 0.005,
            "{id}: monetary {got_m} vs {}",
            c.monetary
        );
        let (rs, fs, ms) = (r[id], f[id], m[id]);
        assert_eq!(row["r_score"], rs.to_string(), "{id} r");
        assert_eq!(row["f_score"], fs.to_string(), "{id} f");
        assert_eq!(row["m_score"], ms.to_string(), "{id} m");
        let fm = (fs + ms + 1) / 2;
        let segment = rules
            .iter()
            .find(|(_, _, r0, r1, f0, f1)| (*r0..=*r1).contains(&rs) && (*f0..=*f1).contains(&fm))
            .map(|(_, s, ..)| s.clone())
            .unwrap_or_else(|| "Unclassified".into());
        assert_eq!(row["rfm_segment"], segment, "{id} segment");
    }

    // ABC, computed here.
    let mut by_revenue: Vec<(&String, f64)> =
        expected.iter().map(|(id, c)| (id, c.monetary)).collect();
    by_revenue.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then_with(|| a.0.cmp(b.0)));
    let total: f64 = by_revenue.iter().map(|(_, v)| v).sum();
    let mut before = 0.0;
    let mut class: HashMap<String, String> = HashMap::new();
    for (id, v) in &by_revenue {
        let share_before = before / total;
        let c = if share_before < 0.80 {
            "A"
        } else if share_before < 0.95 {
            "B"
        } else {
            "C"
        };
        class.insert((*id).clone(), c.to_string());
        before += v;
    }
    let rows = read_parquet_rows(&dir.join("marts/mart_abc.parquet"));
    assert_eq!(rows.len(), n);
    for row in &rows {
        assert_eq!(
            row["abc_class"], class[&row["customer_key"]],
            "{}",
            row["customer_key"]
        );
    }
    let summary = read_parquet_rows(&dir.join("marts/mart_abc_summary.parquet"));
    let a = summary.iter().find(|r| r["abc_class"] == "A").unwrap();
    let a_count = class.values().filter(|c| *c == "A").count();
    assert_eq!(a["customers"], a_count.to_string());
    // The generated revenue is skewed the way retail revenue is: a minority makes 80 %.
    assert!(
        (a_count as f64) < 0.5 * n as f64,
        "A class holds {a_count} of {n}"
    );

    // The manifest next to the marts says what happened.
    let manifests = common::manifest_files(&dir.join("marts/_runs"));
    assert_eq!(manifests.len(), 1);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(manifest["status"], "succeeded");
    let outputs: Vec<&str> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["mart"].as_str().unwrap())
        .collect();
    for mart in ["mart_rfm", "mart_abc", "mart_abc_summary"] {
        assert!(outputs.contains(&mart), "{outputs:?}");
    }
    assert!(manifest["quarantined_rows"].as_u64().unwrap() > 0);
    let checks: Vec<&serde_json::Value> = manifest["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["checks"].as_array().unwrap())
        .collect();
    assert!(
        checks.len() > 20 && checks.iter().all(|c| c["passed"] == true),
        "{checks:?}"
    );
}

#[test]
fn ntile_matches_sql() {
    // 7 rows in 5 buckets: 2, 2, 1, 1, 1.
    let got: Vec<i64> = (0..7).map(|i| ntile(7, 5, i)).collect();
    assert_eq!(got, vec![1, 1, 2, 2, 3, 4, 5]);
    let got: Vec<i64> = (0..3).map(|i| ntile(3, 5, i)).collect();
    assert_eq!(got, vec![1, 2, 3]);
}

/// The run report next to the manifest: its numbers are the marts' (the A class's share of
/// customers, an RFM cell's customers, value tiers, lifecycle states and the win-back list,
/// a cohort's retention, the CLV histogram and model, NPS, touchpoints, conversion, F1 and
/// cluster sizes, loyalty-ladder movements), and a real browser renders every chart with a
/// non-empty SVG and without console errors (screenshot under target/screenshots).
fn check_run_report(marts: &Path) {
    let runs: Vec<std::path::PathBuf> = common::walk(&marts.join("_runs"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "html"))
        .collect();
    assert_eq!(runs.len(), 1, "one report per run: {runs:?}");
    let html = std::fs::read_to_string(&runs[0]).unwrap();
    assert!(
        html.contains("<b>succeeded</b>") && html.contains("stg_orders"),
        "run part"
    );
    for external in ["src=\"http", "href=\"http", "<script"] {
        assert!(
            !html.contains(external),
            "the report is self-contained ({external})"
        );
    }
    let abc = common::read_parquet_rows(&marts.join("mart_abc.parquet"));
    let a_share = abc.iter().filter(|r| r["abc_class"] == "A").count() as f64 / abc.len() as f64;
    let shown: f64 = html
        .split("data-class=\"A\" data-customer-share=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|v| v.parse().ok())
        .expect("the Pareto table shows class A");
    assert!(
        (shown - a_share).abs() < 1e-12,
        "A share {shown} in the report, {a_share} in mart_abc"
    );
    let rfm = common::read_parquet_rows(&marts.join("mart_rfm.parquet"));
    let cell = rfm
        .iter()
        .filter(|r| r["r_score"] == "5" && r["fm_score"] == "5")
        .count();
    let marker = "data-r=\"5\" data-fm=\"5\">";
    let shown: usize = html
        .split(marker)
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(shown, cell, "RFM cell R5 FM5");

    // The other customer charts, against their marts.
    let count = |rows: &[BTreeMap<String, String>], column: &str, value: &str| {
        rows.iter().filter(|r| r[column] == value).count()
    };
    let value_tiers = common::read_parquet_rows(&marts.join("mart_customer_value.parquet"));
    for tier in ["MVC", "MGC", "BZ", "Other"] {
        let shown = attr_after(
            figure(&html, "value-tiers"),
            &format!("data-tier=\"{tier}\" data-customers=\""),
        )
        .unwrap_or_else(|| "0".into());
        assert_eq!(
            shown,
            count(&value_tiers, "value_tier", tier).to_string(),
            "customers of value tier {tier}"
        );
    }
    let lifecycle = common::read_parquet_rows(&marts.join("mart_lifecycle.parquet"));
    for state in ["active", "at_risk", "dormant", "lost"] {
        let shown = attr_after(
            figure(&html, "lifecycle"),
            &format!("data-state=\"{state}\" data-customers=\""),
        )
        .unwrap_or_else(|| "0".into());
        assert_eq!(
            shown,
            count(&lifecycle, "lifecycle_state", state).to_string(),
            "customers in lifecycle state {state}"
        );
    }
    let winback = common::read_parquet_rows(&marts.join("mart_winback.parquet"));
    assert_eq!(
        attr_after(figure(&html, "lifecycle"), "data-winback=\""),
        Some(winback.len().to_string()),
        "the win-back list"
    );

    let cohorts = common::read_parquet_rows(&marts.join("mart_cohort_retention.parquet"));
    let cell = cohorts
        .iter()
        .filter(|r| r["month_offset"] == "1")
        .max_by(|a, b| a["cohort_month"].cmp(&b["cohort_month"]))
        .expect("a cohort with a second month");
    let marker = format!(
        "data-row=\"{}\" data-col=\"1\" data-value=\"",
        cell["cohort_month"]
    );
    let shown: f64 = attr_after(figure(&html, "cohorts"), &marker)
        .and_then(|v| v.parse().ok())
        .expect("the heatmap shows the cohort's month 1");
    let expected: f64 = cell["retention_rate"].parse().unwrap();
    assert!(
        (shown - expected).abs() < 1e-12,
        "retention of cohort {} in month 1: {shown} in the report, {expected} in the mart",
        cell["cohort_month"]
    );

    let clv = common::read_parquet_rows(&marts.join("mart_clv.parquet"));
    let in_buckets: usize = figure(&html, "clv")
        .split("data-count=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next().and_then(|v| v.parse::<usize>().ok()))
        .sum();
    assert_eq!(
        in_buckets,
        clv.len(),
        "the CLV histogram counts every customer of mart_clv"
    );
    let model = common::read_parquet_rows(&marts.join("mart_clv_model.parquet"));
    if let Ok(r) = model[0]["r"].parse::<f64>() {
        let shown: f64 = attr_after(figure(&html, "clv"), "data-param=\"r\" data-value=\"")
            .and_then(|v| v.parse().ok())
            .expect("the model's r");
        assert!(
            (shown - r).abs() <= 1e-12 * r.abs().max(1.0),
            "BG/NBD r: {shown} in the report, {r} in mart_clv_model"
        );
    }

    let cx = common::read_parquet_rows(&marts.join("mart_cx.parquet"));
    if let Some(month) = cx
        .iter()
        .filter(|r| r["breakdown"] == "total")
        .max_by(|a, b| a["month"].cmp(&b["month"]))
    {
        let label = month["month"]
            .get(..7)
            .unwrap_or(&month["month"])
            .to_string();
        let shown = attr_after(
            figure(&html, "cx"),
            &format!("data-month=\"{label}\" data-nps=\""),
        )
        .expect("the latest month of mart_cx");
        match (shown.parse::<f64>(), month["nps"].parse::<f64>()) {
            (Ok(a), Ok(b)) => assert!(
                (a - b).abs() < 1e-9,
                "NPS of {label}: {a} in the report, {b} in mart_cx"
            ),
            _ => assert_eq!(shown, month["nps"], "NPS of {label}"),
        }
    }

    let touchpoints = common::read_parquet_rows(&marts.join("mart_touchpoints.parquet"));
    let purchases_online = touchpoints
        .iter()
        .filter(|r| r["stage"] == "purchase" && r["channel"] == "online")
        .count();
    let shown = attr_after(
        figure(&html, "touchpoints"),
        "data-stage=\"purchase\" data-channel=\"online\" data-count=\"",
    )
    .unwrap_or_else(|| "0".into());
    assert_eq!(
        shown,
        purchases_online.to_string(),
        "online touchpoints in the purchase stage"
    );
    let journeys = common::read_parquet_rows(&marts.join("mart_journeys.parquet"));
    let buyers = journeys
        .iter()
        .filter(|r| !r["first_purchase_on"].is_empty())
        .count();
    assert_eq!(
        attr_after(figure(&html, "conversion"), "data-journeys=\""),
        Some(journeys.len().to_string()),
        "customers with a journey"
    );
    assert_eq!(
        attr_after(figure(&html, "conversion"), "data-buyers=\""),
        Some(buyers.to_string()),
        "customers whose journey reached a purchase"
    );

    // Identity, against mart_identity_quality.
    let quality = common::read_parquet_rows(&marts.join("mart_identity_quality.parquet"));
    let figure_of = |metric: &str, dimension: &str| -> Option<f64> {
        quality
            .iter()
            .find(|r| r["metric"] == metric && r["dimension"] == dimension)
            .and_then(|r| r["value"].parse().ok())
    };
    let f1 = figure_of("f1", "pairwise").expect("the demo has a ground truth, so an F1");
    let shown: f64 = attr_after(
        figure(&html, "identity-accuracy"),
        "data-metric=\"f1\" data-value=\"",
    )
    .and_then(|v| v.parse().ok())
    .expect("F1 in the report");
    assert!(
        (shown - f1).abs() < 1e-12,
        "F1 {shown} in the report, {f1} in mart_identity_quality"
    );
    let singles = figure_of("cluster_size", "1").expect("persons with one record");
    let shown: f64 = attr_after(
        figure(&html, "identity-clusters"),
        "data-cluster-size=\"1\" data-persons=\"",
    )
    .and_then(|v| v.parse().ok())
    .expect("cluster size 1");
    assert_eq!(shown, singles, "persons with a single record");

    // What changed: the demo is the store's first run; the identity keys and the loyalty
    // ladder's movements come from this run.
    assert!(
        html.contains("No earlier successful run of this pipeline"),
        "nothing to compare with on a first run"
    );
    if let Some(new_keys) = figure_of("keys", "new") {
        let shown: f64 = attr_after(&html, "data-identity=\"new\">")
            .and_then(|v| v.split('<').next().and_then(|v| v.parse().ok()))
            .expect("new keys");
        assert_eq!(shown, new_keys, "new identity keys");
    }
    let ladder = common::read_parquet_rows(&marts.join("mart_loyalty_ladder.parquet"));
    for movement in ["up", "down", "same", "new"] {
        let shown = attr_after(
            figure(&html, "loyalty-movements"),
            &format!("data-movement=\"{movement}\" data-customers=\""),
        )
        .unwrap_or_else(|| "0".into());
        assert_eq!(
            shown,
            count(&ladder, "movement", movement).to_string(),
            "loyalty-ladder movement {movement}"
        );
    }

    let (dom, log) = common::render(
        &runs[0],
        &common::repo().join("target/screenshots/run-report.png"),
    );
    assert!(
        !log.contains(":CONSOLE") && !log.contains("Uncaught"),
        "console errors:\n{log}"
    );
    for chart in [
        "<figure id=\"pareto\">",
        "<figure id=\"rfm\">",
        "<svg id=\"timeline\"",
    ] {
        assert!(dom.contains(chart), "{chart} not rendered");
    }
    assert!(
        dom.contains("<polyline points=\"0,320 "),
        "the Pareto curve has points"
    );
    let mut figures = vec![
        "value-tiers",
        "lifecycle",
        "cohorts",
        "clv",
        "cx",
        "touchpoints",
        "conversion",
        "identity-clusters",
        "identity-weights",
        "identity-blocking",
        "identity-largest",
        "identity-accuracy",
        "loyalty-movements",
    ];
    if quality.iter().any(|r| r["metric"] == "m_probability") {
        figures.push("identity-levels");
    }
    for id in figures {
        let part = figure(&dom, id);
        let svg = part
            .split("<svg")
            .nth(1)
            .and_then(|s| s.split("</svg>").next())
            .unwrap_or_else(|| panic!("figure {id} has no SVG"));
        assert!(
            ["<rect", "<polyline", "<circle", "<line"]
                .iter()
                .any(|e| svg.contains(e)),
            "figure {id}: empty SVG"
        );
    }
}

/// The part of `html` from `<figure id="ID">` to its `</figure>`.
fn figure<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<figure id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no figure {id} in the report"));
    let rest = &html[start..];
    &rest[..rest
        .find("</figure>")
        .map(|e| e + "</figure>".len())
        .unwrap_or(rest.len())]
}

/// The text after the first `marker` up to the next `"`: the value of the attribute `marker` opens.
fn attr_after(html: &str, marker: &str) -> Option<String> {
    html.split(marker)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(String::from)
}

/// `bench` runs the same exports through the DuckDB peer: every source and every SQL model
/// DuckDB can run (the rest it reads from what crm-marts published) runs there without an
/// error, and the marts of both engines have the same number of rows.
#[test]
fn bench_runs_every_model_on_the_duckdb_peer_beside_crm_marts() {
    let project = Project::new();
    let dir = project.path("bench");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crm-marts"))
        .args([
            "bench",
            "--customers",
            "400",
            "--memory-limit",
            "2GiB",
            "--dir",
        ])
        .arg(&dir)
        .arg("--pipeline")
        .arg(repo().join("pipelines/customer_marts.yaml"))
        .current_dir(repo())
        .env("CRM_MARTS_PEER_PYTHON", common::python())
        .env("CRM_MARTS_LOG", "warn")
        .output()
        .expect("run crm-marts bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let peer = stdout
        .split_once("peer: DuckDB")
        .unwrap_or_else(|| panic!("no peer table:\n{stdout}"))
        .1;
    let mut compared = 0;
    for line in peer.lines().filter(|l| l.starts_with("step ")) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(!line.contains("error"), "{line}");
        let (name, ours, theirs) = (cols[1], cols[2], cols[3]);
        if name.starts_with("mart_") && name != "mart_identity_map" {
            assert_eq!(
                ours, theirs,
                "rows of {name} on crm-marts and DuckDB:\n{line}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 12, "only {compared} marts compared:\n{peer}");
    // The CPU the loading used, from the manifest, as a share of its wall time.
    let load = stdout
        .lines()
        .find(|l| l.starts_with("load sources"))
        .unwrap_or_else(|| panic!("no load line:\n{stdout}"));
    let cpu: f64 = load.split_whitespace().last().unwrap().parse().expect(load);
    assert!(cpu > 0.0 && cpu < 1000.0, "{load}");
    for figure in [
        "loading all sources",
        "SQL models (both ran)",
        "pipeline w/o identity, CLV",
        "us/row",
        "% CPU",
        "DuckDB CPU",
        "run report: ",
    ] {
        assert!(
            stdout.contains(figure),
            "`{figure}` missing from:\n{stdout}"
        );
    }
}
