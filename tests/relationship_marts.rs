//! The relationship marts (loyalty ladder, lifecycle, win-back, cohort retention, CX,
//! touchpoints, journeys): a hand-made fixture with answers worked out by hand (sessions
//! across both daylight-saving switches, out-of-order and duplicate events, a survey with
//! known NPS, CSAT and CES, customers with one purchase and with none), ladder movements
//! between runs, and an independent computation in this file over generated exports.
//!
//! The tests run the real SQL and seeds through a copy of pipelines/customer_marts.yaml
//! reduced to the sources and steps these marts need, so marts appended later for other
//! exports do not break them.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use common::{copy_dir, read_parquet_rows, repo, Project};

type Row = BTreeMap<String, String>;

const AS_OF: &str = "2026-11-22";
const ENV: &str = "stores:\n  exports:\n    url: exports\n  marts:\n    url: marts\n";

const SOURCES: &[&str] = &[
    "erp_customers",
    "erp_orders",
    "erp_order_lines",
    "erp_returns",
    "loyalty_members",
    "loyalty_app_events",
    "loyalty_survey_answers",
    "web_clickstream",
    "rfm_segments",
    "utm_channel_map",
    "touchpoint_types",
    "previous_loyalty_ladder",
    "previous_identity_map",
    "identity_ground_truth",
];

const STEPS: &[&str] = &[
    "staging/stg_customers.sql",
    "staging/stg_orders.sql",
    "staging/stg_order_lines.sql",
    "staging/stg_returns.sql",
    "staging/stg_members.sql",
    "staging/stg_app_events.sql",
    "staging/stg_survey_answers.sql",
    "staging/stg_clickstream.sql",
    "identity/int_identity_erp.sql",
    "identity/int_identity_members.sql",
    "identity/int_identity_web.sql",
    "marts/mart_identity_map.sql",
    "intermediate/int_erp_keys.sql",
    "intermediate/int_member_keys.sql",
    "intermediate/int_order_values.sql",
    "intermediate/int_refunds.sql",
    "intermediate/int_survey_answers.sql",
    "marts/mart_rfm.sql",
    "marts/mart_lifecycle.sql",
    "marts/mart_winback.sql",
    "marts/mart_loyalty_ladder.sql",
    "marts/mart_cohort_retention.sql",
    "intermediate/int_web_sessions.sql",
    "intermediate/int_pain_orders.sql",
    "marts/mart_touchpoints.sql",
    "intermediate/int_customer_sessions.sql",
    "marts/mart_journeys.sql",
    "marts/mart_cx.sql",
    "marts/mart_cx_customers.sql",
];

const MARTS: &[&str] = &[
    "mart_lifecycle",
    "mart_winback",
    "mart_loyalty_ladder",
    "mart_cohort_retention",
    "mart_touchpoints",
    "mart_journeys",
    "mart_cx",
    "mart_cx_customers",
];

/// The real pipeline with its SQL folder made absolute, reduced to SOURCES and STEPS.
fn relationship_pipeline() -> String {
    let text = std::fs::read_to_string(repo().join("pipelines/customer_marts.yaml")).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let map = doc.as_mapping_mut().unwrap();
    map.insert(
        "sql_dir".into(),
        repo().join("sql").to_string_lossy().into_owned().into(),
    );
    map.get_mut("sources")
        .unwrap()
        .as_mapping_mut()
        .unwrap()
        .retain(|k, _| SOURCES.contains(&k.as_str().unwrap()));
    map.get_mut("steps")
        .unwrap()
        .as_sequence_mut()
        .unwrap()
        .retain(|s| {
            s.get("sql")
                .and_then(|v| v.as_str())
                .is_some_and(|f| STEPS.contains(&f))
                || s.get("builtin").and_then(|v| v.as_str()) == Some("identity")
        });
    serde_yaml::to_string(&doc).unwrap()
}

fn project_with_exports(exports: Option<&Path>) -> Project {
    let p = Project::new();
    p.write("config/env.yaml", ENV);
    p.write("pipelines/relationship.yaml", &relationship_pipeline());
    if let Some(dir) = exports {
        copy_dir(dir, &p.path("exports"));
    }
    p
}

fn run_at(p: &Project, as_of: &str) {
    let out = p
        .run(&[
            "run",
            "pipelines/relationship.yaml",
            "--config",
            "config/env.yaml",
            "--as-of",
            as_of,
        ])
        .expect_code(0);
    for mart in MARTS {
        assert!(
            out.stdout().contains(mart),
            "{mart} published:\n{}",
            out.stdout()
        );
    }
    // Every documented check passed and every column is documented.
    assert!(!out.stderr().contains("not documented"), "{}", out.stderr());
    assert!(
        !out.stderr().contains("is not in `mart_"),
        "{}",
        out.stderr()
    );
    let manifests = common::manifest_files(&p.path("marts/_runs"));
    let last = manifests.last().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(last).unwrap()).unwrap();
    for step in manifest["steps"].as_array().unwrap() {
        for check in step["checks"].as_array().into_iter().flatten() {
            assert_eq!(check["failing_rows"], 0, "{} {}", step["file"], check);
        }
    }
}

fn mart(p: &Project, name: &str) -> Vec<Row> {
    read_parquet_rows(&p.path(&format!("marts/{name}.parquet")))
}

/// A readable name for every person of the published identity map: their ERP customer
/// numbers joined by `+`, else their loyalty member ids, else their cookies.
fn person_labels(p: &Project) -> HashMap<String, String> {
    let mut ids: BTreeMap<String, [BTreeSet<String>; 3]> = BTreeMap::new();
    for r in mart(p, "mart_identity_map") {
        let slot = match r["source"].as_str() {
            "erp_customers" => 0,
            "loyalty_members" => 1,
            _ => 2,
        };
        ids.entry(r["customer_key"].clone()).or_default()[slot]
            .insert(r["source_record_id"].clone());
    }
    ids.into_iter()
        .map(|(key, sets)| {
            let set = sets.iter().find(|s| !s.is_empty()).unwrap();
            (key, set.iter().cloned().collect::<Vec<_>>().join("+"))
        })
        .collect()
}

/// The rows of a mart with a `person` column: the label of the row's customer_key (empty
/// when the row has no person).
fn with_persons(p: &Project, name: &str) -> Vec<Row> {
    let labels = person_labels(p);
    mart(p, name)
        .into_iter()
        .map(|mut r| {
            let label = labels.get(&r["customer_key"]).cloned().unwrap_or_default();
            assert!(
                label.is_empty() == r["customer_key"].is_empty(),
                "{name}: unknown customer_key {r:?}"
            );
            r.insert("person".into(), label);
            r
        })
        .collect()
}

/// A per-person mart keyed by the person's label.
fn by_person(p: &Project, name: &str) -> BTreeMap<String, Row> {
    keyed(with_persons(p, name), "person")
}

fn keyed(rows: Vec<Row>, key: &str) -> BTreeMap<String, Row> {
    let n = rows.len();
    let map: BTreeMap<String, Row> = rows.into_iter().map(|r| (r[key].clone(), r)).collect();
    assert_eq!(map.len(), n, "{key} is unique");
    map
}

/// Asserts several columns of one row at once, naming the row.
fn assert_row(row: &Row, what: &str, expected: &[(&str, &str)]) {
    for (col, want) in expected {
        assert_eq!(
            row.get(*col).map(String::as_str),
            Some(*want),
            "{what}: column {col}\n{row:?}"
        );
    }
}

fn f(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

// ---------------------------------------------------------------------------------------
// The hand-made fixture.
// ---------------------------------------------------------------------------------------

fn fixture() -> Project {
    project_with_exports(Some(&repo().join("tests/fixtures/relationship/exports")))
}

#[test]
fn fixture_ladder_and_lifecycle_have_the_known_answers() {
    let p = fixture();
    run_at(&p, AS_OF);

    let ladder = by_person(&p, "mart_loyalty_ladder");
    // C10 is created after the as-of date; C12 has an order but no master record; M99 is a
    // loyalty member without an ERP record.
    let ids: Vec<&str> = ladder.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        ["C1", "C11", "C12", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "M99"]
    );
    let expect = [
        ("C1", "prospect", "2026-01-10"),
        ("C2", "customer", "2026-06-01"),
        ("C3", "client", "2026-03-05"),
        // First app event in the 90-day window: 22:30 UTC on 24 August is 25 August in
        // Copenhagen; the event an hour earlier is still 24 August, outside the window.
        ("C4", "supporter", "2026-08-25"),
        // Promoter since the first answer of the run 9, 10 that follows the 5.
        ("C5", "advocate", "2026-02-01"),
        // A referral in the last 365 days, although the latest NPS answer is a 3.
        ("C6", "advocate", "2026-03-03"),
        ("C7", "partner", ""),
        // "b2b" without a contract is no partner.
        ("C8", "customer", "2026-09-15"),
        ("C9", "client", "2024-02-09"),
        ("C11", "customer", "2023-05-01"),
        ("C12", "customer", "2026-11-10"),
        // App activity on 10 November and a latest valid NPS of 9 (the 11 is off the
        // scale), promoter since the 10 of 2 November.
        ("M99", "advocate", "2026-11-02"),
    ];
    for (id, rung, on) in expect {
        assert_row(
            &ladder[id],
            id,
            &[
                ("rung", rung),
                ("rung_reached_on", on),
                ("movement", "new"),
                ("previous_rung", ""),
            ],
        );
    }
    assert_row(
        &ladder["C4"],
        "C4",
        &[
            ("app_events_in_window", "3"),
            ("customer_reached_on", "2025-11-30"),
        ],
    );
    // The referral of October 2025 is older than 365 days.
    assert_row(
        &ladder["C5"],
        "C5",
        &[
            ("referrals_in_window", "0"),
            ("latest_nps", "10"),
            ("latest_nps_on", "2026-07-01"),
            ("client_reached_on", "2026-11-20"),
        ],
    );
    // Two orders on one day make a client on that day.
    assert_row(
        &ladder["C6"],
        "C6",
        &[
            ("completed_orders", "2"),
            ("client_reached_on", "2026-11-01"),
            ("latest_nps", "3"),
        ],
    );
    assert_row(
        &ladder["C7"],
        "C7",
        &[("is_partner", "true"), ("customer_type", "B2B")],
    );
    assert_row(
        &ladder["C12"],
        "C12",
        &[("customer_type", ""), ("has_loyalty_id", "false")],
    );
    assert_row(
        &ladder["C5"],
        "C5",
        &[("has_loyalty_id", "true"), ("known_since", "2024-01-01")],
    );
    assert_row(
        &ladder["M99"],
        "M99",
        &[
            ("customer_type", ""),
            ("has_loyalty_id", "true"),
            ("known_since", "2024-06-01"),
            ("completed_orders", "0"),
        ],
    );

    let life = by_person(&p, "mart_lifecycle");
    assert_eq!(
        life.len(),
        10,
        "buyers only: C1 never bought, C10 is unknown yet"
    );
    // (id, orders, purchase days, days since, usual gap, basis, state, since, next, profit)
    let expect = [
        (
            "C2",
            "1",
            "1",
            "174",
            "90.0",
            "default",
            "at_risk",
            "2026-10-15",
            "2027-02-27",
            "40.0",
        ),
        // Gaps 59 and 60 days: median 59.5; 202 days > 3 x 59.5.
        (
            "C3",
            "3",
            "3",
            "202",
            "59.5",
            "median",
            "dormant",
            "2026-10-30",
            "2027-02-26",
            "135.0",
        ),
        (
            "C4",
            "1",
            "1",
            "357",
            "90.0",
            "default",
            "dormant",
            "2026-08-28",
            "2027-02-24",
            "40.0",
        ),
        (
            "C5",
            "2",
            "2",
            "2",
            "236.0",
            "median",
            "active",
            "2026-11-20",
            "2027-11-10",
            "200.0",
        ),
        (
            "C6",
            "2",
            "1",
            "21",
            "90.0",
            "default",
            "active",
            "2026-11-01",
            "2027-03-17",
            "50.0",
        ),
        (
            "C9",
            "3",
            "3",
            "987",
            "30.0",
            "median",
            "lost",
            "2024-08-08",
            "",
            "400.0",
        ),
        (
            "C11",
            "1",
            "1",
            "1301",
            "90.0",
            "default",
            "lost",
            "2024-07-25",
            "",
            "-50.0",
        ),
    ];
    for (id, orders, days, since, gap, basis, state, state_since, next, profit) in expect {
        assert_row(
            &life[id],
            id,
            &[
                ("completed_orders", orders),
                ("purchase_days", days),
                ("days_since_last_purchase", since),
                ("usual_gap_days", gap),
                ("usual_gap_basis", basis),
                ("lifecycle_state", state),
                ("state_since", state_since),
                ("next_state_on", next),
                ("profit", profit),
            ],
        );
    }
    // Net 90 + 200 + 110, cost 40 + 120 + 55, one refund of 50; the cancelled order and
    // the order after the as-of date do not count.
    assert_row(
        &life["C3"],
        "C3",
        &[
            ("net_revenue", "400.0"),
            ("cost", "215.0"),
            ("refunds", "50.0"),
            ("median_gap_days", "59.5"),
        ],
    );

    // Win-back's order and consent rules are pinned by mart_winback's unit tests.
    assert_no_personal_data(&p, &repo().join("tests/fixtures/relationship/exports"));
}

#[test]
fn fixture_sessions_touchpoints_and_journeys_have_the_known_answers() {
    let p = fixture();
    run_at(&p, AS_OF);

    let tp = keyed(with_persons(&p, "mart_touchpoints"), "touchpoint_id");
    let web: BTreeMap<&str, &Row> = tp
        .iter()
        .filter(|(_, r)| r["source_system"] == "web")
        .map(|(k, r)| (k.as_str(), r))
        .collect();
    // 17 distinct events (W104 and W109 came twice); W204 is 23 November in Copenhagen.
    assert_eq!(web.len(), 16, "{:?}", web.keys());
    assert!(!tp.contains_key("web:W204"));
    let k1 = "c0ffee0000000001";
    let sessions = [
        // Paid search, anonymous until the cookie logs in later.
        ("W101", 1, "ad_visit", "paid", "pre-purchase"),
        ("W102", 1, "page_view", "paid", "pre-purchase"),
        // Across the spring switch: 00:50 and 01:10 UTC are 01:50 CET and 03:10 CEST.
        ("W103", 2, "email_visit", "owned", "pre-purchase"),
        ("W104", 2, "cart", "owned", "purchase"),
        ("W105", 2, "checkout", "owned", "purchase"),
        ("W106", 2, "order_confirmation", "owned", "purchase"),
        // Exactly 30 minutes after W106.
        ("W107", 3, "direct_visit", "owned", "post-purchase"),
        // Across the autumn switch: 02:50 CEST and 02:15 CET, 25 minutes apart.
        ("W108", 4, "social_visit", "earned", "pre-purchase"),
        ("W109", 4, "page_view", "earned", "pre-purchase"),
        ("W110", 5, "direct_visit", "owned", "pre-purchase"),
    ];
    for (id, session, kind, creator, stage) in sessions {
        let row = web[format!("web:{id}").as_str()];
        assert_row(
            row,
            id,
            &[
                ("session_id", &format!("{k1}#{session}")),
                ("touchpoint_type", kind),
                ("creator", creator),
                ("stage", stage),
                ("channel", "online"),
                ("person", "C5"),
            ],
        );
    }
    assert_row(
        web["web:W103"],
        "W103",
        &[
            ("entry_channel", "Email"),
            ("is_session_entry", "true"),
            ("occurred_on", "2026-03-29"),
        ],
    );
    assert_row(
        web["web:W104"],
        "W104",
        &[
            ("is_session_entry", "false"),
            ("occurred_at", "2026-03-29T01:10:00Z"),
        ],
    );
    // An anonymous cookie stays anonymous; 23:30 UTC on 31 October is 1 November locally.
    assert_row(
        web["web:W203"],
        "W203",
        &[
            ("person", ""),
            ("occurred_on", "2026-11-01"),
            ("session_id", "c0ffee0000000002#1"),
            ("entry_channel", "Referral"),
        ],
    );
    assert_row(
        web["web:W202"],
        "W202",
        &[("session_id", "c0ffee0000000002#3")],
    );
    // A shared computer: each session with a login belongs to that login, the anonymous
    // one to the cookie's first login.
    assert_row(web["web:W301"], "W301", &[("person", "C6")]);
    assert_row(web["web:W302"], "W302", &[("person", "C6")]);
    assert_row(web["web:W303"], "W303", &[("person", "C8")]);

    // Other sources.
    assert_row(
        &tp["app:A403"],
        "A403",
        &[
            ("touchpoint_type", "app_check_in"),
            ("channel", "offline"),
            ("occurred_on", "2026-08-25"),
            ("person", "C4"),
        ],
    );
    assert_row(
        &tp["app:A601"],
        "A601",
        &[("touchpoint_type", "referral"), ("creator", "earned")],
    );
    // The member without an ERP record is a person of their own.
    assert_row(
        &tp["app:A991"],
        "A991",
        &[
            ("touchpoint_type", "service_contact"),
            ("is_pain_point", "true"),
            ("person", "M99"),
        ],
    );
    assert_row(
        &tp["failed_payment:O602"],
        "O602",
        &[
            ("stage", "purchase"),
            ("is_pain_point", "true"),
            ("person", "C6"),
        ],
    );
    assert_row(
        &tp["purchase:O602"],
        "O602",
        &[("touchpoint_type", "online_purchase"), ("amount", "40.0")],
    );
    assert_row(
        &tp["purchase:O502"],
        "O502",
        &[
            ("touchpoint_type", "store_purchase"),
            ("channel", "offline"),
        ],
    );
    assert_row(
        &tp["return:R1"],
        "R1",
        &[
            ("stage", "post-purchase"),
            ("channel", "offline"),
            ("amount", "50.0"),
            ("person", "C3"),
        ],
    );
    assert!(
        !tp.contains_key("purchase:O304") && tp.contains_key("failed_payment:O304"),
        "cancelled: no purchase"
    );
    assert!(!tp.contains_key("purchase:O999"), "after the as-of date");
    assert_eq!(
        tp.keys().filter(|k| k.starts_with("survey:")).count(),
        12,
        "S905 came twice"
    );
    assert_eq!(
        tp.len(),
        16 + 10 + 16 + 2 + 2 + 12,
        "web + app + purchases + failed payments + returns + survey"
    );

    let journeys = by_person(&p, "mart_journeys");
    assert_row(
        &journeys["C5"],
        "C5",
        &[
            ("sessions", "5"),
            ("converting_sessions", "1"),
            ("conversion_rate", "0.2"),
            ("first_purchase_on", "2026-03-29"),
            // The first touchpoint is the survey answer of 10 January 2025.
            ("first_touchpoint_on", "2025-01-10"),
            ("days_to_first_purchase", "443"),
            // The session after the confirmation on the purchase day is not on the path.
            ("sessions_before_first_purchase", "2"),
            ("path_to_first_purchase", "Paid search > Email"),
            ("touchpoints", "17"),
            ("pre_purchase_touchpoints", "6"),
            ("purchase_touchpoints", "5"),
            ("post_purchase_touchpoints", "6"),
            ("online_touchpoints", "16"),
            ("offline_touchpoints", "1"),
            ("paid_touchpoints", "2"),
            ("owned_touchpoints", "12"),
            ("earned_touchpoints", "3"),
            ("pain_points", "0"),
        ],
    );
    assert_row(
        &journeys["C6"],
        "C6",
        &[
            ("sessions", "2"),
            ("converting_sessions", "0"),
            ("conversion_rate", "0.0"),
            ("path_to_first_purchase", "Paid search > Direct"),
            ("days_to_first_purchase", "243"),
            ("pain_points", "2"),
        ],
    );
    // Customers without web sessions: no rate, no path.
    assert_row(
        &journeys["C9"],
        "C9",
        &[
            ("sessions", "0"),
            ("conversion_rate", ""),
            ("path_to_first_purchase", ""),
            ("sessions_before_first_purchase", "0"),
            ("pain_points", "1"),
        ],
    );
    assert!(!journeys.contains_key("C1"), "no touchpoint, no journey");
}

#[test]
fn fixture_cx_and_revenue_at_risk_have_the_known_answers() {
    let p = fixture();
    run_at(&p, AS_OF);

    let cx: BTreeMap<(String, String, String), Row> = mart(&p, "mart_cx")
        .into_iter()
        .map(|r| {
            (
                (
                    r["month"].clone(),
                    r["breakdown"].clone(),
                    r["breakdown_value"].clone(),
                ),
                r,
            )
        })
        .collect();
    let row = |b: &str, v: &str| &cx[&("2026-11-01".to_string(), b.to_string(), v.to_string())];
    // November: NPS 10, 9, 8, 7, 3 (and an 11 off the scale): (2 - 1) / 5 = 20; CSAT 5, 4,
    // 3, 2, 5 (and a 6): 3 of 5 = 60 %; CES 1, 2, 3, 7, 5 (and an 8): 3.6. S905 came twice.
    assert_row(
        row("total", "All"),
        "total",
        &[
            ("survey_answers", "7"),
            ("respondents", "4"),
            ("nps_answers", "5"),
            ("promoters", "2"),
            ("passives", "2"),
            ("detractors", "1"),
            ("nps", "20.0"),
            ("csat_answers", "5"),
            ("csat", "60.0"),
            ("ces", "3.6"),
            // Failed payment O602 and complaint A602 (both C6, revenue 100), and a service
            // contact of M99, who has not bought; all revenue in the window is 2200.
            ("pain_points", "3"),
            ("failed_payments", "1"),
            ("complaints", "1"),
            ("service_contacts", "1"),
            ("returns", "0"),
            ("customers_with_pain_points", "2"),
            ("revenue_with_pain_points", "100.0"),
            ("friction_index", "9.09"),
        ],
    );
    assert_row(
        row("touchpoint", "store"),
        "store",
        &[
            ("nps", "100.0"),
            ("csat", "100.0"),
            ("ces", "1.5"),
            ("pain_points", ""),
        ],
    );
    assert_row(
        row("touchpoint", "web"),
        "web",
        &[("nps", "0.0"), ("csat", "0.0"), ("ces", "5.0")],
    );
    assert_row(
        row("touchpoint", "app"),
        "app",
        &[
            ("nps", "-100.0"),
            ("nps_answers", "1"),
            ("csat", "100.0"),
            ("ces", "5.0"),
        ],
    );
    assert_row(
        row("touchpoint", "delivery"),
        "delivery",
        &[
            ("survey_answers", "1"),
            ("nps", ""),
            ("csat", ""),
            ("ces", ""),
        ],
    );
    assert_row(
        row("rfm_segment", "(no purchases)"),
        "no purchases",
        &[
            ("survey_answers", "3"),
            ("nps", "100.0"),
            ("service_contacts", "1"),
        ],
    );
    assert_row(
        &cx[&("2025-01-01".into(), "total".into(), "All".into())],
        "January 2025",
        &[("nps", "100.0"), ("csat", "100.0"), ("ces", "2.0")],
    );

    let risk = by_person(&p, "mart_cx_customers");
    assert_row(
        &risk["C2"],
        "C2",
        &[
            ("risk_reason", "detractor_and_lifecycle"),
            ("revenue_at_risk", "100.0"),
        ],
    );
    assert_row(
        &risk["C3"],
        "C3",
        &[
            ("risk_reason", "lifecycle"),
            ("nps_group", "passive"),
            ("revenue_at_risk", "400.0"),
            ("pain_points", "2"),
            ("friction_weight", "800.0"),
        ],
    );
    assert_row(
        &risk["C6"],
        "C6",
        &[
            ("risk_reason", "detractor"),
            ("revenue_at_risk", "100.0"),
            ("pain_points", "2"),
            ("failed_payments", "1"),
            ("complaints", "1"),
        ],
    );
    assert_row(
        &risk["C5"],
        "C5",
        &[
            ("risk_reason", ""),
            ("nps_group", "promoter"),
            ("revenue_at_risk", "0.0"),
        ],
    );
    let total: f64 = risk.values().map(|r| f(&r["revenue_at_risk"])).sum();
    assert!((total - 680.0).abs() < 1e-9, "revenue at risk {total}");

    // Cohort cells (zero-filled months, the partial month, revenue retention) are pinned by
    // mart_cohort_retention's unit tests; the generated exports are recomputed below.
}

#[test]
fn ladder_movements_compare_with_the_previous_run_and_reruns_keep_them() {
    let p = fixture();
    run_at(&p, "2026-06-15");
    let before = by_person(&p, "mart_loyalty_ladder");
    assert_row(
        &before["C2"],
        "C2 in June",
        &[
            ("rung", "supporter"),
            ("supporter_reached_on", "2026-05-20"),
        ],
    );
    assert_row(&before["C8"], "C8 in June", &[("rung", "prospect")]);
    assert!(
        !before.contains_key("C12"),
        "no order yet, no master record"
    );

    run_at(&p, AS_OF);
    let check = |p: &Project| {
        let after = by_person(p, "mart_loyalty_ladder");
        let moves: BTreeMap<&str, (&str, &str, &str)> = after
            .iter()
            .map(|(id, r)| {
                (
                    id.as_str(),
                    (
                        r["previous_rung"].as_str(),
                        r["rung"].as_str(),
                        r["movement"].as_str(),
                    ),
                )
            })
            .collect();
        assert_eq!(
            moves["C2"],
            ("supporter", "customer", "down"),
            "no app activity since May"
        );
        assert_eq!(moves["C8"], ("prospect", "customer", "up"));
        assert_eq!(moves["C12"], ("", "customer", "new"));
        assert_eq!(moves["M99"], ("prospect", "advocate", "up"));
        for id in ["C1", "C3", "C4", "C5", "C6", "C7", "C9", "C11"] {
            assert_eq!(moves[id].2, "same", "{id}: {:?}", moves[id]);
        }
        for (id, r) in &after {
            if id != "C12" {
                assert_eq!(r["previous_as_of_date"], "2026-06-15", "{id}");
            }
        }
    };
    check(&p);
    // A second run for the same day compares with June again, not with itself.
    run_at(&p, AS_OF);
    check(&p);
}

/// No mart carries a direct identifier: no such column, and no cell equal to an e-mail,
/// phone, name or street of the exports.
fn assert_no_personal_data(p: &Project, exports: &Path) {
    let mut pii: BTreeSet<String> = BTreeSet::new();
    for row in read_export(&exports.join("erp/customers.csv"), b';') {
        for col in ["first_name", "last_name", "email", "phone", "street"] {
            pii.insert(row[col].trim().to_string());
        }
    }
    for row in read_ndjson(&exports.join("loyalty/members.ndjson")) {
        for col in ["first_name", "last_name", "email", "phone"] {
            if let Some(v) = row.get(col).and_then(|v| v.as_str()) {
                pii.insert(v.trim().to_string());
            }
        }
    }
    for row in read_ndjson(&exports.join("web/clickstream.ndjson")) {
        for col in ["checkout_email", "url"] {
            if let Some(v) = row.get(col).and_then(|v| v.as_str()) {
                pii.insert(v.trim().to_string());
            }
        }
    }
    pii.retain(|v| v.chars().count() >= 3);
    for name in MARTS {
        for row in mart(p, name) {
            for (col, value) in &row {
                let banned = [
                    "email",
                    "phone",
                    "first_name",
                    "last_name",
                    "name",
                    "street",
                    "address",
                    "url",
                    "checkout_email",
                    "birth_date",
                ];
                assert!(
                    !banned.contains(&col.as_str()),
                    "{name}.{col} is personal data"
                );
                assert!(
                    !pii.contains(value.trim()),
                    "{name}.{col} holds personal data {value:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Generated exports and an independent computation.
// ---------------------------------------------------------------------------------------

/// Reads a delimited export into rows keyed by header, dropping rows with the wrong
/// number of fields (the pipeline quarantines them).
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

fn read_ndjson(path: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.as_object().cloned())
        .collect()
}

fn date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// Empty is fine (None inside); anything else must parse.
fn opt<T>(s: &str, parse: impl Fn(&str) -> Option<T>) -> Option<Option<T>> {
    if s.trim().is_empty() {
        Some(None)
    } else {
        parse(s.trim()).map(Some)
    }
}

fn int(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

fn num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let k = 10f64.powi(decimals);
    (v * k).round() / k
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn json_str<'a>(o: &'a serde_json::Map<String, serde_json::Value>, k: &str) -> Option<&'a str> {
    o.get(k)
        .and_then(|v| v.as_str())
        .filter(|s| !s.trim().is_empty())
}

/// Last Sunday of a month at 01:00 UTC: when the EU changes its clocks.
fn eu_switch(year: i32, month: u32) -> DateTime<Utc> {
    let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap() - Duration::days(1);
    while d.weekday() != Weekday::Sun {
        d -= Duration::days(1);
    }
    Utc.from_utc_datetime(&d.and_hms_opt(1, 0, 0).unwrap())
}

/// The calendar day in Copenhagen: UTC+2 between the March and October switches, else UTC+1.
fn copenhagen_day(t: DateTime<Utc>) -> NaiveDate {
    let summer = t >= eu_switch(t.year(), 3) && t < eu_switch(t.year(), 10);
    (t + Duration::hours(if summer { 2 } else { 1 })).date_naive()
}

/// SQL LIKE with % and _, as the seeds use it.
fn like(s: &str, pattern: &str) -> bool {
    fn go(s: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(&s[i..], rest)),
            Some(('_', rest)) => !s.is_empty() && go(&s[1..], rest),
            Some((c, rest)) => s.first() == Some(c) && go(&s[1..], rest),
        }
    }
    let (s, p): (Vec<char>, Vec<char>) = (
        s.chars().collect(),
        pattern.to_lowercase().chars().collect(),
    );
    go(&s, &p)
}

/// The first seed row (by priority) whose LIKE patterns match all keys.
fn seed_match<'a>(
    seed: &'a [HashMap<String, String>],
    pairs: &[(&str, &str)],
) -> &'a HashMap<String, String> {
    seed.iter()
        .filter(|r| pairs.iter().all(|(col, key)| like(key, &r[*col])))
        .min_by_key(|r| r["priority"].parse::<i64>().unwrap())
        .unwrap_or_else(|| panic!("no seed rule for {pairs:?}"))
}

fn key_of(v: Option<&str>) -> String {
    v.map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(none)".into())
}

#[derive(Clone)]
struct Purchase {
    order_id: String,
    day: NaiveDate,
    net: f64,
    cost: f64,
}

struct Order {
    customer: String,
    day: NaiveDate,
    status: String,
    channel: Option<String>,
    store: Option<String>,
    payment: Option<String>,
}

impl Order {
    /// The channel part of the ERP touchpoint keys.
    fn channel_key(&self) -> String {
        match &self.channel {
            Some(c) => c.trim().to_lowercase(),
            None if self.store.is_some() => "store".into(),
            None => "(none)".into(),
        }
    }
}

struct Customer {
    created: Option<NaiveDate>,
    loyalty_id: Option<String>,
    kind: Option<String>,
    contract: Option<String>,
}

#[derive(Clone)]
struct AppEvent {
    member: String,
    at: DateTime<Utc>,
    kind: String,
}

#[derive(Clone)]
struct Answer {
    id: String,
    member: String,
    day: NaiveDate,
    touchpoint: Option<String>,
    nps: Option<i64>,
    csat: Option<i64>,
    ces: Option<i64>,
}

#[derive(Clone)]
struct Click {
    id: String,
    cookie: String,
    at: DateTime<Utc>,
    page: Option<String>,
    source: Option<String>,
    medium: Option<String>,
    login: Option<String>,
}

struct Session {
    customer: Option<String>,
    start: DateTime<Utc>,
    converted: bool,
    channel: String,
    click_ids: Vec<String>,
}

/// Everything the marts read, parsed here with the pipeline's validity rules (rows that
/// do not fit their declared types are left out, as the pipeline quarantines them).
struct Reference {
    as_of: NaiveDate,
    orders: BTreeMap<String, Order>,
    purchases: BTreeMap<String, Vec<Purchase>>,
    refunds: HashMap<String, f64>,
    /// Valid returns: (return_id, order_id, date).
    returns: Vec<(String, String, Option<NaiveDate>)>,
    customers: BTreeMap<String, Customer>,
    /// The published identity map: the person of every ERP customer number, loyalty member
    /// id (with member ids only ERP records carry, as int_member_keys) and cookie.
    erp_person: HashMap<String, String>,
    member_person: HashMap<String, String>,
    cookie_person: HashMap<String, String>,
    /// Join dates of the member records the pipeline kept (those in the identity map).
    joined: HashMap<String, Option<NaiveDate>>,
    /// member_id -> (may e-mail, may sms), every record agreeing.
    consent: HashMap<String, (bool, bool)>,
    /// Deduplicated by event_id, up to the as-of date (Copenhagen days).
    app_events: Vec<AppEvent>,
    /// Deduplicated by response_id, up to the as-of date.
    survey: Vec<Answer>,
    /// Deduplicated by event_id, up to the as-of date (Copenhagen days).
    clicks: Vec<Click>,
}

fn text(v: &str) -> Option<String> {
    Some(v.to_string()).filter(|v| !v.trim().is_empty())
}

impl Reference {
    fn load(exports: &Path, marts: &Path, as_of: NaiveDate) -> Self {
        let erp_person = common::persons_of(marts, "erp_customers");
        let cookie_person = common::persons_of(marts, "web_cookies");
        let mut member_person = common::persons_of(marts, "loyalty_members");
        let mut orders = BTreeMap::new();
        for o in read_export(&exports.join("erp/orders.csv"), b';') {
            let Some(day) = date(&o["order_date"]) else {
                continue;
            };
            if o["order_id"].trim().is_empty()
                || o["customer_id"].trim().is_empty()
                || o["status"].trim().is_empty()
            {
                continue;
            }
            orders.insert(
                o["order_id"].clone(),
                Order {
                    customer: o["customer_id"].clone(),
                    day,
                    status: o["status"].clone(),
                    channel: text(&o["channel"]),
                    store: text(&o["store_id"]),
                    payment: text(&o["payment_status"]),
                },
            );
        }
        let mut lines: HashMap<String, (f64, f64)> = HashMap::new();
        for l in read_export(&exports.join("erp/order_lines.csv"), b';') {
            let (Some(q), Some(price), Some(discount), Some(cost)) = (
                int(&l["quantity"]),
                num(&l["unit_price"]),
                opt(&l["discount_amount"], num),
                opt(&l["unit_cost"], num),
            ) else {
                continue;
            };
            if l["order_id"].trim().is_empty() || int(&l["line_no"]).is_none() {
                continue;
            }
            let e = lines.entry(l["order_id"].clone()).or_default();
            e.0 += q as f64 * price - discount.unwrap_or(0.0);
            e.1 += cost.map(|c| q as f64 * c).unwrap_or(0.0);
        }
        let mut purchases: BTreeMap<String, Vec<Purchase>> = BTreeMap::new();
        for (id, o) in &orders {
            if o.status != "completed" || o.day > as_of {
                continue;
            }
            // A purchase needs at least one valid line.
            let Some((net, cost)) = lines.get(id) else {
                continue;
            };
            let person = erp_person
                .get(&o.customer)
                .unwrap_or_else(|| panic!("{} has a person", o.customer));
            purchases.entry(person.clone()).or_default().push(Purchase {
                order_id: id.clone(),
                day: o.day,
                net: *net,
                cost: *cost,
            });
        }
        for list in purchases.values_mut() {
            list.sort_by(|a, b| (a.day, &a.order_id).cmp(&(b.day, &b.order_id)));
        }
        let purchase_of: HashMap<String, (String, NaiveDate)> = purchases
            .iter()
            .flat_map(|(c, l)| {
                l.iter()
                    .map(move |p| (p.order_id.clone(), (c.clone(), p.day)))
            })
            .collect();
        let mut refunds: HashMap<String, f64> = HashMap::new();
        let mut returns = Vec::new();
        for r in read_export(&exports.join("erp/returns.csv"), b';') {
            let (Some(_), Some(day), Some(_), Some(refund)) = (
                opt(&r["line_no"], int),
                opt(&r["return_date"], date),
                opt(&r["quantity"], int),
                opt(&r["refund_amount"], num),
            ) else {
                continue;
            };
            if r["return_id"].trim().is_empty() || r["order_id"].trim().is_empty() {
                continue;
            }
            returns.push((r["return_id"].clone(), r["order_id"].clone(), day));
            if let Some((cust, order_day)) = purchase_of.get(&r["order_id"]) {
                if day.unwrap_or(*order_day) <= as_of {
                    *refunds.entry(cust.clone()).or_default() += refund.unwrap_or(0.0);
                }
            }
        }
        let mut customers = BTreeMap::new();
        for c in read_export(&exports.join("erp/customers.csv"), b';') {
            let birth = c["birth_date"].trim();
            let birth_ok = birth.is_empty()
                || date(birth).is_some()
                || NaiveDate::parse_from_str(birth, "%d-%m-%Y").is_ok();
            let Some(created) = opt(&c["created_at"], date) else {
                continue;
            };
            if !birth_ok || c["customer_id"].trim().is_empty() {
                continue;
            }
            customers.insert(
                c["customer_id"].clone(),
                Customer {
                    created,
                    loyalty_id: text(&c["loyalty_id"]),
                    kind: text(&c["customer_type"]),
                    contract: text(&c["contract_id"]),
                },
            );
        }
        let mut erp_only: BTreeMap<String, String> = BTreeMap::new();
        for (id, c) in &customers {
            let Some(m) = c
                .loyalty_id
                .as_ref()
                .filter(|m| !member_person.contains_key(*m))
            else {
                continue;
            };
            let k = &erp_person[id];
            let e = erp_only.entry(m.clone()).or_insert_with(|| k.clone());
            if k < e {
                *e = k.clone();
            }
        }
        let mut joined: HashMap<String, Option<NaiveDate>> = HashMap::new();
        let mut consent: HashMap<String, (bool, bool)> = HashMap::new();
        for m in read_ndjson(&exports.join("loyalty/members.ndjson")) {
            let Some(id) = json_str(&m, "member_id") else {
                continue;
            };
            if member_person.contains_key(id) {
                joined.insert(id.to_string(), json_str(&m, "joined_at").and_then(date));
            }
            let flag = |k: &str| m.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
            let e = consent.entry(id.to_string()).or_insert((true, true));
            e.0 &= flag("consent_email");
            e.1 &= flag("consent_sms");
        }
        let mut app_events: BTreeMap<String, AppEvent> = BTreeMap::new();
        for e in read_ndjson(&exports.join("loyalty/app_events.ndjson")) {
            let (Some(id), Some(member), Some(at), Some(kind)) = (
                json_str(&e, "event_id"),
                json_str(&e, "member_id"),
                json_str(&e, "event_time"),
                json_str(&e, "event_type"),
            ) else {
                continue;
            };
            let Ok(at) = DateTime::parse_from_rfc3339(at.trim()) else {
                continue;
            };
            let event = AppEvent {
                member: member.to_string(),
                at: at.with_timezone(&Utc),
                kind: kind.to_string(),
            };
            if copenhagen_day(event.at) > as_of {
                continue;
            }
            let slot = app_events
                .entry(id.to_string())
                .or_insert_with(|| event.clone());
            if (event.at, &event.member, &event.kind) < (slot.at, &slot.member, &slot.kind) {
                *slot = event;
            }
        }
        let mut survey: BTreeMap<String, Answer> = BTreeMap::new();
        for s in read_export(&exports.join("loyalty/survey_answers.csv"), b',') {
            let (Some(day), Some(nps), Some(csat), Some(ces), Some(_), Some(_), Some(_)) = (
                date(&s["answered_at"]),
                opt(&s["nps"], int),
                opt(&s["csat"], int),
                opt(&s["ces"], int),
                opt(&s["category_spend_monthly"], num),
                opt(&s["brands_used"], int),
                opt(&s["our_rank"], int),
            ) else {
                continue;
            };
            if s["response_id"].trim().is_empty() || s["member_id"].trim().is_empty() || day > as_of
            {
                continue;
            }
            let answer = Answer {
                id: s["response_id"].clone(),
                member: s["member_id"].clone(),
                day,
                touchpoint: text(&s["touchpoint"]),
                nps,
                csat,
                ces,
            };
            let slot = survey
                .entry(answer.id.clone())
                .or_insert_with(|| answer.clone());
            if (answer.day, &answer.member) < (slot.day, &slot.member) {
                *slot = answer;
            }
        }
        let mut clicks: BTreeMap<String, Click> = BTreeMap::new();
        for c in read_ndjson(&exports.join("web/clickstream.ndjson")) {
            let (Some(id), Some(cookie), Some(ts)) = (
                json_str(&c, "event_id"),
                json_str(&c, "cookie_id"),
                json_str(&c, "ts"),
            ) else {
                continue;
            };
            let Ok(at) = DateTime::parse_from_rfc3339(ts.trim()) else {
                continue;
            };
            let s = |k: &str| json_str(&c, k).map(String::from);
            let click = Click {
                id: id.to_string(),
                cookie: cookie.to_string(),
                at: at.with_timezone(&Utc),
                page: s("page_type"),
                source: s("utm_source"),
                medium: s("utm_medium"),
                login: s("login_customer_id"),
            };
            if copenhagen_day(click.at) > as_of {
                continue;
            }
            let slot = clicks
                .entry(click.id.clone())
                .or_insert_with(|| click.clone());
            if (click.at, &click.cookie) < (slot.at, &slot.cookie) {
                *slot = click;
            }
        }
        member_person.extend(erp_only);
        Reference {
            as_of,
            orders,
            purchases,
            refunds,
            returns,
            customers,
            erp_person,
            member_person,
            cookie_person,
            joined,
            consent,
            app_events: app_events.into_values().collect(),
            survey: survey.into_values().collect(),
            clicks: clicks.into_values().collect(),
        }
    }

    fn days(&self, d: NaiveDate) -> i64 {
        (self.as_of - d).num_days()
    }

    fn known(&self, id: &str) -> Option<&Customer> {
        self.customers
            .get(id)
            .filter(|c| c.created.is_none_or(|d| d <= self.as_of))
    }

    /// (state, usual gap, purchase days, profit) per buying customer.
    fn lifecycle(&self) -> BTreeMap<String, (&'static str, f64, usize, f64)> {
        let mut out = BTreeMap::new();
        for (c, list) in &self.purchases {
            let days: Vec<NaiveDate> = list
                .iter()
                .map(|p| p.day)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut gaps: Vec<f64> = days
                .windows(2)
                .map(|w| (w[1] - w[0]).num_days() as f64)
                .collect();
            gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let gap = if gaps.is_empty() {
                90.0
            } else {
                let n = gaps.len();
                let median = if n % 2 == 1 {
                    gaps[n / 2]
                } else {
                    (gaps[n / 2 - 1] + gaps[n / 2]) / 2.0
                };
                median.max(14.0)
            };
            let since = self.days(*days.last().unwrap()) as f64;
            let state = if since > 5.0 * gap {
                "lost"
            } else if since > 3.0 * gap {
                "dormant"
            } else if since > 1.5 * gap {
                "at_risk"
            } else {
                "active"
            };
            let net: f64 = list.iter().map(|p| p.net).sum();
            let cost: f64 = list.iter().map(|p| p.cost).sum();
            let profit = round_to(net - cost - self.refunds.get(c).copied().unwrap_or(0.0), 2);
            out.insert(c.clone(), (state, gap, days.len(), profit));
        }
        out
    }

    fn window_revenue(&self, c: &str) -> f64 {
        let list = self.purchases.get(c).map(Vec::as_slice).unwrap_or_default();
        round_to(
            list.iter()
                .filter(|p| self.days(p.day) < 365)
                .map(|p| p.net)
                .sum(),
            2,
        )
    }

    /// The person of a loyalty member id.
    fn member(&self, member: &str) -> Option<&str> {
        self.member_person.get(member).map(String::as_str)
    }

    /// Valid NPS answers (0-10) of all member ids of a person, oldest first (date, then
    /// response_id).
    fn nps_answers(&self, person: &str) -> Vec<(NaiveDate, &str, i64)> {
        let mut v: Vec<(NaiveDate, &str, i64)> = self
            .survey
            .iter()
            .filter(|s| self.member(&s.member) == Some(person))
            .filter_map(|s| {
                s.nps
                    .filter(|n| (0..=10).contains(n))
                    .map(|n| (s.day, s.id.as_str(), n))
            })
            .collect();
        v.sort();
        v
    }

    /// (rung, reached on) per person.
    fn ladder(&self) -> BTreeMap<String, (&'static str, Option<NaiveDate>)> {
        // ERP records known on the as-of date, per person.
        let mut records: BTreeMap<&str, Vec<(&str, &Customer)>> = BTreeMap::new();
        for (id, c) in &self.customers {
            if self.known(id).is_some() {
                records
                    .entry(self.erp_person[id].as_str())
                    .or_default()
                    .push((id.as_str(), c));
            }
        }
        // Members who had joined on the as-of date: the earliest join date per person.
        let mut joined: BTreeMap<&str, Option<NaiveDate>> = BTreeMap::new();
        for (m, day) in &self.joined {
            if day.is_none_or(|d| d <= self.as_of) {
                let e = joined.entry(self.member_person[m].as_str()).or_insert(*day);
                *e = match (*e, *day) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let mut population: BTreeSet<&str> = records.keys().copied().collect();
        population.extend(joined.keys().copied());
        population.extend(self.purchases.keys().map(String::as_str));
        let mut out = BTreeMap::new();
        for person in population {
            let recs = records.get(person).map(Vec::as_slice).unwrap_or_default();
            let list = self.purchases.get(person).cloned().unwrap_or_default();
            let created = recs.iter().filter_map(|(_, c)| c.created).min();
            let known_since = match (created, joined.get(person).copied().flatten()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let (mut first_active, mut referral) = (None::<NaiveDate>, None::<NaiveDate>);
            for e in self
                .app_events
                .iter()
                .filter(|e| self.member(&e.member) == Some(person))
            {
                let day = copenhagen_day(e.at);
                if self.days(day) < 90 {
                    first_active = Some(first_active.map_or(day, |d| d.min(day)));
                }
                if e.kind.trim().to_lowercase() == "referral_sent" && self.days(day) < 365 {
                    referral = Some(referral.map_or(day, |d| d.min(day)));
                }
            }
            let mut promoter_since = None;
            let answers = self.nps_answers(person);
            if answers.last().is_some_and(|a| a.2 >= 9) {
                let run_start = answers.iter().rposition(|a| a.2 < 9).map_or(0, |i| i + 1);
                promoter_since = Some(answers[run_start].0);
            }
            let partner = recs.iter().any(|(_, c)| {
                c.kind
                    .as_deref()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("B2B"))
                    && c.contract.as_deref().is_some_and(|k| !k.trim().is_empty())
            });
            let advocate = match (promoter_since, referral) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let rung = if partner {
                ("partner", None)
            } else if advocate.is_some() {
                ("advocate", advocate)
            } else if first_active.is_some() {
                ("supporter", first_active)
            } else if list.len() >= 2 {
                ("client", Some(list[1].day))
            } else if list.len() == 1 {
                ("customer", Some(list[0].day))
            } else {
                ("prospect", known_since)
            };
            out.insert(person.to_string(), rung);
        }
        out
    }

    /// Web sessions: per cookie in time order (then event_id), cut where the gap is 30
    /// minutes or more; owned by the person of the session's first login, else of the
    /// cookie's first login, else of the cookie itself (a checkout e-mail).
    fn sessions(&self, utm_seed: &[HashMap<String, String>]) -> Vec<Session> {
        let mut by_cookie: BTreeMap<&str, Vec<&Click>> = BTreeMap::new();
        for c in &self.clicks {
            by_cookie.entry(c.cookie.as_str()).or_default().push(c);
        }
        let mut out = Vec::new();
        for events in by_cookie.values_mut() {
            events.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            let person =
                |login: Option<&String>| login.and_then(|l| self.erp_person.get(l)).cloned();
            let cookie_login = person(events.iter().find_map(|e| e.login.as_ref()));
            let cookie_person = self.cookie_person.get(&events[0].cookie).cloned();
            let mut start = 0;
            for i in 1..=events.len() {
                if i < events.len() && events[i].at - events[i - 1].at < Duration::minutes(30) {
                    continue;
                }
                let part = &events[start..i];
                let (src, med) = (
                    key_of(part[0].source.as_deref()),
                    key_of(part[0].medium.as_deref()),
                );
                let rule = seed_match(utm_seed, &[("utm_source", &src), ("utm_medium", &med)]);
                out.push(Session {
                    customer: person(part.iter().find_map(|e| e.login.as_ref()))
                        .or_else(|| cookie_login.clone())
                        .or_else(|| cookie_person.clone()),
                    start: part[0].at,
                    converted: part
                        .iter()
                        .any(|e| key_of(e.page.as_deref()) == "confirmation"),
                    channel: rule["entry_channel"].clone(),
                    click_ids: part.iter().map(|e| e.id.clone()).collect(),
                });
                start = i;
            }
        }
        out
    }
}

fn month_no(d: NaiveDate) -> i32 {
    d.year() * 12 + d.month0() as i32
}

#[test]
fn generated_exports_match_an_independent_computation() {
    let p = project_with_exports(None);
    p.run(&[
        "generate",
        "--customers",
        "500",
        "--seed",
        "7",
        "--out",
        "exports",
    ])
    .expect_code(0);
    run_at(&p, AS_OF);
    let as_of = date(AS_OF).unwrap();
    let r = Reference::load(&p.path("exports"), &p.path("marts"), as_of);
    // The marts are per person: some persons have several ERP records, and the member ids
    // and cookies of a person count together.
    let erp_persons: BTreeSet<&String> = r.erp_person.values().collect();
    assert!(
        erp_persons.len() < r.erp_person.len(),
        "persons with several ERP records"
    );
    assert!(
        r.purchases.len() > 250,
        "enough buyers: {}",
        r.purchases.len()
    );

    // Lifecycle.
    let life_ref = r.lifecycle();
    let life = keyed(mart(&p, "mart_lifecycle"), "customer_key");
    assert_eq!(
        life.keys().collect::<Vec<_>>(),
        life_ref.keys().collect::<Vec<_>>()
    );
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, (state, gap, days, profit)) in &life_ref {
        let row = &life[id];
        assert_eq!(row["lifecycle_state"], *state, "{id} {row:?}");
        assert!(
            close(f(&row["usual_gap_days"]), round_to(*gap, 1), 1e-9),
            "{id} gap {gap} {row:?}"
        );
        assert_eq!(row["purchase_days"], days.to_string(), "{id}");
        assert!(
            close(f(&row["profit"]), *profit, 0.011),
            "{id} profit {profit} {row:?}"
        );
        *states.entry(state).or_default() += 1;
    }
    assert_eq!(states.len(), 4, "every state occurs: {states:?}");

    // Win-back: dormant or lost, profitable, reachable; by profit.
    let mut expected: Vec<(f64, &String)> = life_ref
        .iter()
        .filter(|(_, (state, _, _, profit))| ["dormant", "lost"].contains(state) && *profit > 0.0)
        .filter(|(person, _)| {
            // Every member record of the person must agree; persons without one are skipped.
            let flags: Vec<(bool, bool)> = r
                .joined
                .keys()
                .filter(|m| r.member_person[*m] == **person)
                .map(|m| r.consent[m])
                .collect();
            !flags.is_empty() && (flags.iter().all(|f| f.0) || flags.iter().all(|f| f.1))
        })
        .map(|(id, (.., profit))| (*profit, id))
        .collect();
    expected.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then_with(|| a.1.cmp(b.1)));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id.clone()).collect();
    let got: Vec<String> = mart(&p, "mart_winback")
        .into_iter()
        .map(|r| r["customer_key"].clone())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);

    // Loyalty ladder.
    let ladder_ref = r.ladder();
    let ladder = keyed(mart(&p, "mart_loyalty_ladder"), "customer_key");
    assert_eq!(ladder.len(), ladder_ref.len());
    let mut rungs: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, (rung, on)) in &ladder_ref {
        let row = &ladder[id];
        assert_eq!(row["rung"], *rung, "{id} {row:?}");
        assert_eq!(
            row["rung_reached_on"],
            on.map(|d| d.to_string()).unwrap_or_default(),
            "{id} {row:?}"
        );
        *rungs.entry(rung).or_default() += 1;
    }
    assert_eq!(rungs.len(), 6, "every rung occurs: {rungs:?}");

    // Cohort retention.
    let mut sizes: BTreeMap<i32, usize> = BTreeMap::new();
    let mut cells: BTreeMap<(i32, i32), (BTreeSet<&str>, f64)> = BTreeMap::new();
    for (c, list) in &r.purchases {
        let cohort = month_no(list[0].day);
        *sizes.entry(cohort).or_default() += 1;
        for pch in list {
            let cell = cells
                .entry((cohort, month_no(pch.day) - cohort))
                .or_default();
            cell.0.insert(c);
            cell.1 += pch.net;
        }
    }
    let rows = mart(&p, "mart_cohort_retention");
    let expected_rows: i32 = sizes.keys().map(|c| month_no(as_of) - c + 1).sum();
    assert_eq!(rows.len() as i32, expected_rows);
    for row in &rows {
        let cohort = month_no(date(&row["cohort_month"]).unwrap());
        let offset: i32 = row["month_offset"].parse().unwrap();
        let (active, revenue) = cells
            .get(&(cohort, offset))
            .map(|(s, v)| (s.len(), *v))
            .unwrap_or((0, 0.0));
        assert_eq!(
            row["cohort_customers"],
            sizes[&cohort].to_string(),
            "{row:?}"
        );
        assert_eq!(row["active_customers"], active.to_string(), "{row:?}");
        assert!(
            close(f(&row["revenue"]), revenue, 0.011),
            "{row:?} revenue {revenue}"
        );
    }

    // Web sessions and journeys.
    let utm_seed = read_export(&repo().join("sql/seeds/utm_channel_map.csv"), b',');
    let sessions = r.sessions(&utm_seed);
    let touch = mart(&p, "mart_touchpoints");
    let session_of: HashMap<&str, &str> = touch
        .iter()
        .filter(|t| !t["session_id"].is_empty())
        .map(|t| (t["touchpoint_id"].as_str(), t["session_id"].as_str()))
        .collect();
    assert_eq!(
        session_of.values().collect::<BTreeSet<_>>().len(),
        sessions.len(),
        "sessions"
    );
    for s in &sessions {
        // The same events make one session in the mart.
        let ids: BTreeSet<&str> = s
            .click_ids
            .iter()
            .map(|id| session_of[format!("web:{id}").as_str()])
            .collect();
        assert_eq!(ids.len(), 1, "{:?}", s.click_ids);
    }
    let mut per_customer: BTreeMap<&str, Vec<&Session>> = BTreeMap::new();
    for s in &sessions {
        if let Some(c) = &s.customer {
            per_customer.entry(c.as_str()).or_default().push(s);
        }
    }
    let journeys = keyed(mart(&p, "mart_journeys"), "customer_key");
    let mut paths = 0;
    for (c, list) in per_customer.iter_mut() {
        let row = journeys.get(*c).unwrap_or_else(|| {
            let ids: Vec<_> = list
                .iter()
                .flat_map(|s| s.click_ids.iter())
                .take(5)
                .collect();
            let rows: Vec<_> = touch
                .iter()
                .filter(|t| ids.iter().any(|i| t["touchpoint_id"] == format!("web:{i}")))
                .collect();
            panic!("{c}: no journey; sessions {ids:?}; mart rows {rows:?}")
        });
        assert_eq!(row["sessions"], list.len().to_string(), "{c}");
        assert_eq!(
            row["converting_sessions"],
            list.iter().filter(|s| s.converted).count().to_string(),
            "{c}"
        );
        let Some(first) = r.purchases.get(*c).map(|l| l[0].day) else {
            assert_eq!(row["path_to_first_purchase"], "", "{c}");
            continue;
        };
        list.sort_by_key(|s| s.start);
        let converting_start = list
            .iter()
            .filter(|s| s.converted && copenhagen_day(s.start) == first)
            .map(|s| s.start)
            .min();
        let path: Vec<&str> = list
            .iter()
            .filter(|s| {
                let day = copenhagen_day(s.start);
                day < first || (day == first && converting_start.is_none_or(|t| s.start <= t))
            })
            .map(|s| s.channel.as_str())
            .collect();
        let shown = if path.len() > 20 {
            format!("... > {}", path[path.len() - 20..].join(" > "))
        } else {
            path.join(" > ")
        };
        assert_eq!(row["path_to_first_purchase"], shown, "{c}");
        assert_eq!(
            row["sessions_before_first_purchase"],
            path.len().to_string(),
            "{c}"
        );
        paths += usize::from(!path.is_empty());
    }
    assert!(
        paths > 20,
        "customers with a web path to their first purchase: {paths}"
    );

    // Touchpoints per customer, stage and pain point, classified here with the seed.
    let types = read_export(&repo().join("sql/seeds/touchpoint_types.csv"), b',');
    let mut counted: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut add = |customer: Option<&str>, key: String| {
        let Some(c) = customer else { return };
        let rule = seed_match(&types, &[("event_pattern", &key)]);
        let e = counted.entry(c.to_string()).or_default();
        *e.entry("touchpoints".into()).or_default() += 1;
        *e.entry(rule["stage"].clone()).or_default() += 1;
        if rule["is_pain_point"] == "true" {
            *e.entry("pain_points".into()).or_default() += 1;
        }
    };
    let by_id: HashMap<&str, &Click> = r.clicks.iter().map(|c| (c.id.as_str(), c)).collect();
    for s in &sessions {
        for id in &s.click_ids {
            add(
                s.customer.as_deref(),
                format!("web:{}", key_of(by_id[id.as_str()].page.as_deref())),
            );
        }
    }
    for (c, list) in &r.purchases {
        for pch in list {
            add(
                Some(c),
                format!("erp:purchase:{}", r.orders[&pch.order_id].channel_key()),
            );
        }
    }
    for o in r.orders.values() {
        if o.day <= as_of && key_of(o.payment.as_deref()) == "failed" {
            add(
                r.erp_person.get(&o.customer).map(String::as_str),
                format!("erp:failed_payment:{}", o.channel_key()),
            );
        }
    }
    let mut seen_returns = BTreeSet::new();
    for (rid, oid, day) in &r.returns {
        let Some(o) = r.orders.get(oid).filter(|o| o.day <= as_of) else {
            continue;
        };
        if day.unwrap_or(o.day) <= as_of && seen_returns.insert(rid.clone()) {
            add(
                r.erp_person.get(&o.customer).map(String::as_str),
                format!("erp:return:{}", o.channel_key()),
            );
        }
    }
    for e in &r.app_events {
        add(
            r.member(&e.member),
            format!("app:{}", key_of(Some(&e.kind))),
        );
    }
    for s in &r.survey {
        add(
            r.member(&s.member),
            format!("survey:{}", key_of(s.touchpoint.as_deref())),
        );
    }
    assert_eq!(journeys.len(), counted.len(), "customers with touchpoints");
    for (c, counts) in &counted {
        let n = |k: &str| counts.get(k).copied().unwrap_or(0).to_string();
        assert_row(
            &journeys[c],
            c,
            &[
                ("touchpoints", &n("touchpoints")),
                ("pre_purchase_touchpoints", &n("pre-purchase")),
                ("purchase_touchpoints", &n("purchase")),
                ("post_purchase_touchpoints", &n("post-purchase")),
                ("pain_points", &n("pain_points")),
            ],
        );
    }

    // CX scores per month, in total and per survey touchpoint.
    let mut months: BTreeMap<(String, String), Vec<&Answer>> = BTreeMap::new();
    for s in &r.survey {
        let month = NaiveDate::from_ymd_opt(s.day.year(), s.day.month(), 1)
            .unwrap()
            .to_string();
        let touch = s
            .touchpoint
            .as_deref()
            .map(str::trim)
            .unwrap_or("(none)")
            .to_string();
        months
            .entry((month.clone(), "All".into()))
            .or_default()
            .push(s);
        months.entry((month, touch)).or_default().push(s);
    }
    let cx: BTreeMap<(String, String), Row> = mart(&p, "mart_cx")
        .into_iter()
        .filter(|r| r["breakdown"] != "rfm_segment" && r["survey_answers"] != "0")
        .map(|r| ((r["month"].clone(), r["breakdown_value"].clone()), r))
        .collect();
    assert_eq!(
        cx.len(),
        months.len(),
        "months with answers (total rows also exist for months with pain points only)"
    );
    for (key, answers) in &months {
        let row = &cx[key];
        let nps: Vec<i64> = answers
            .iter()
            .filter_map(|a| a.nps)
            .filter(|n| (0..=10).contains(n))
            .collect();
        let csat: Vec<i64> = answers
            .iter()
            .filter_map(|a| a.csat)
            .filter(|n| (1..=5).contains(n))
            .collect();
        let ces: Vec<i64> = answers
            .iter()
            .filter_map(|a| a.ces)
            .filter(|n| (1..=7).contains(n))
            .collect();
        assert_eq!(row["survey_answers"], answers.len().to_string(), "{key:?}");
        if !nps.is_empty() {
            let promoters = nps.iter().filter(|n| **n >= 9).count() as f64;
            let detractors = nps.iter().filter(|n| **n <= 6).count() as f64;
            let score = 100.0 * (promoters - detractors) / nps.len() as f64;
            assert!(
                close(f(&row["nps"]), round_to(score, 1), 1e-9),
                "{key:?} nps {score} {row:?}"
            );
        }
        if !csat.is_empty() {
            let score = 100.0 * csat.iter().filter(|n| **n >= 4).count() as f64 / csat.len() as f64;
            assert!(
                close(f(&row["csat"]), round_to(score, 1), 1e-9),
                "{key:?} csat {score} {row:?}"
            );
        }
        if !ces.is_empty() {
            let mean = ces.iter().sum::<i64>() as f64 / ces.len() as f64;
            assert!(
                close(f(&row["ces"]), round_to(mean, 2), 1e-9),
                "{key:?} ces {mean} {row:?}"
            );
        }
    }

    // Revenue at risk: detractors and at-risk or dormant customers, each counted once.
    let mut at_risk = 0.0;
    for (c, (state, ..)) in &life_ref {
        let latest = r.nps_answers(c).last().map(|a| a.2);
        if latest.is_some_and(|n| n <= 6) || ["at_risk", "dormant"].contains(state) {
            at_risk += r.window_revenue(c);
        }
    }
    let got: f64 = mart(&p, "mart_cx_customers")
        .iter()
        .map(|r| f(&r["revenue_at_risk"]))
        .sum();
    assert!(
        at_risk > 0.0 && close(got, at_risk, 0.05),
        "revenue at risk {got} vs {at_risk}"
    );

    assert_no_personal_data(&p, &p.path("exports"));
}

#[test]
fn reference_helpers() {
    // Copenhagen: 00:59 UTC on the spring switch day is still CET, 01:00 is CEST.
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    assert_eq!(eu_switch(2026, 3), t("2026-03-29T01:00:00Z"));
    assert_eq!(eu_switch(2026, 10), t("2026-10-25T01:00:00Z"));
    assert_eq!(
        copenhagen_day(t("2026-10-31T23:30:00Z")),
        date("2026-11-01").unwrap()
    );
    assert_eq!(
        copenhagen_day(t("2026-08-24T21:30:00Z")),
        date("2026-08-24").unwrap()
    );
    assert_eq!(
        copenhagen_day(t("2026-08-24T22:30:00Z")),
        date("2026-08-25").unwrap()
    );
    assert!(like("app:store_checkin", "app:%check%in%"));
    assert!(like("erp:purchase:web", "erp:purchase:%"));
    assert!(!like("web:home", "web:checkout%"));
    assert!(like("paid_social", "paid_social") && !like("social", "paid%"));
}
