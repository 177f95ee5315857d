//! Bad input through the whole identity step: empty inputs, all-null attributes, duplicate
//! and missing ids, unicode oddities and one value shared by a crowd. Each gives figures or
//! flags, never a panic and never a giant merge.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Float64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;

use super::config::IdentityConfig;
use super::{records, resolve, Context, Resolution};

fn table(rows: &[(Option<&str>, Option<&str>, Option<&str>)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
    ]);
    let col = |values: Vec<Option<&str>>| Arc::new(StringArray::from(values)) as Arc<dyn Array>;
    let columns = vec![
        col(rows.iter().map(|r| r.0).collect()),
        col(rows.iter().map(|r| r.1).collect()),
        col(rows.iter().map(|r| r.2).collect()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

const CONFIG: &str = r#"
inputs:
  - { table: people, source: s, id: id, attributes: { email: email, name: name } }
deterministic:
  - { attributes: [email] }
comparisons:
  - { name: name, attribute: name, levels: [exact, { jaro_winkler: 0.9 }] }
  - { name: email, attribute: email, levels: [exact] }
blocking: [[name]]
guards: { max_records_per_value: 1000, max_cluster_size: 25, exclusive: [name] }
training: { u_sample_pairs: 2000 }
"#;

async fn run(batch: RecordBatch, config: &str) -> Resolution {
    let ctx = SessionContext::new();
    ctx.register_batch("people", batch).unwrap();
    let settings = serde_yaml::from_str::<IdentityConfig>(config)
        .unwrap()
        .check()
        .unwrap();
    let (recs, load) = records::load(&ctx, &settings).await.unwrap();
    resolve(&settings, &recs, &load, &Context::default()).unwrap()
}

fn metric(r: &Resolution, metric: &str, dimension: &str) -> Option<f64> {
    let m = r
        .quality
        .column_by_name("metric")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let d = r
        .quality
        .column_by_name("dimension")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let v = r
        .quality
        .column_by_name("value")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    (0..m.len())
        .find(|&i| m.value(i) == metric && d.value(i) == dimension)
        .map(|i| v.value(i))
}

fn cluster_sizes(r: &Resolution) -> Vec<u64> {
    let sizes = r
        .map
        .column_by_name("cluster_size")
        .unwrap()
        .as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap();
    sizes.values().to_vec()
}

#[tokio::test]
async fn an_empty_input_gives_empty_outputs() {
    let r = run(table(&[]), CONFIG).await;
    assert_eq!(r.map.num_rows(), 0);
    assert_eq!(r.golden.num_rows(), 0);
    assert_eq!(metric(&r, "records", "all"), Some(0.0));
}

#[tokio::test]
async fn all_null_attributes_leave_every_record_alone() {
    let r = run(
        table(&[
            (Some("1"), None, None),
            (Some("2"), None, None),
            (Some("3"), None, None),
        ]),
        CONFIG,
    )
    .await;
    assert_eq!(cluster_sizes(&r), vec![1, 1, 1]);
    assert_eq!(metric(&r, "persons", "all"), Some(3.0));
}

#[tokio::test]
async fn duplicate_and_missing_ids_are_counted_not_dropped_silently() {
    let rows = [
        (Some("1"), Some("a@x.dk"), Some("ann")),
        (Some("1"), Some("b@x.dk"), Some("bo")),
        (None, Some("c@x.dk"), Some("cy")),
        (Some(" "), None, None),
    ];
    let r = run(table(&rows), CONFIG).await;
    assert_eq!(r.map.num_rows(), 1);
    assert_eq!(metric(&r, "duplicate_record_ids", "all"), Some(1.0));
    assert_eq!(metric(&r, "records_without_id", "all"), Some(2.0));
}

#[tokio::test]
async fn unicode_oddities_do_not_panic() {
    let rows = [
        (Some("1"), Some("\u{200b}"), Some("e\u{301}mile")),
        (Some("2"), Some("🙂@🙂"), Some("émile")),
        (Some("3"), Some("\u{feff}x@y.dk"), Some("\u{0}")),
        (Some("4"), Some("x@y.dk"), Some("ﬁ")),
    ];
    let r = run(table(&rows), CONFIG).await;
    assert_eq!(r.map.num_rows(), 4);
}

#[tokio::test]
async fn one_shared_value_cannot_make_a_giant_cluster() {
    // 200 records with one e-mail and one name: every link is allowed but the size cap.
    let ids: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    let rows: Vec<_> = ids
        .iter()
        .map(|id| (Some(id.as_str()), Some("shared@x.dk"), Some("same")))
        .collect();
    let r = run(table(&rows), CONFIG).await;
    let sizes = cluster_sizes(&r);
    assert!(
        sizes.iter().all(|&s| s <= 25),
        "largest {}",
        sizes.iter().max().unwrap()
    );
    assert!(metric(&r, "persons", "flagged_capped").unwrap() >= 1.0);
    assert!(metric(&r, "links", "deterministic:refused_size").unwrap() >= 1.0);
}

#[tokio::test]
async fn a_crowd_value_is_not_used_as_a_key_past_the_guard() {
    let ids: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    let names: Vec<String> = (0..40).map(|i| format!("person{i}")).collect();
    let rows: Vec<_> = ids
        .iter()
        .zip(&names)
        .map(|(id, n)| (Some(id.as_str()), Some("club@x.dk"), Some(n.as_str())))
        .collect();
    let r = run(
        table(&rows),
        &CONFIG.replace("max_records_per_value: 1000", "max_records_per_value: 30"),
    )
    .await;
    assert_eq!(metric(&r, "oversized_key_values", "rule:email"), Some(1.0));
    assert_eq!(
        metric(&r, "largest_oversized_key_value", "rule:email"),
        Some(40.0)
    );
    assert!(cluster_sizes(&r).iter().all(|&s| s == 1));
}

#[test]
fn configuration_errors_are_named_together() {
    let bad = r#"
inputs:
  - { table: people, source: s, id: id, attributes: { email: email } }
deterministic:
  - { attributes: [email, email] }
comparisons:
  - { name: name, attribute: nmae, levels: [exact, { jaro_winkler: 1.5 }, fuzzy] }
threshold: 1.2
guards: { exclusive: [nope] }
"#;
    let err = serde_yaml::from_str::<IdentityConfig>(bad)
        .unwrap()
        .check()
        .unwrap_err();
    for expected in [
        "attribute `nmae`",
        "`jaro_winkler` needs a number in 0..1",
        "unknown level `fuzzy`",
        "threshold must be",
        "guards.exclusive names `nope`",
        "at least one blocking rule",
        "a deterministic rule names `email` twice",
    ] {
        assert!(err.contains(expected), "{expected} missing from: {err}");
    }
}

/// Two inputs, each with a duplicate inside it, and one person twice in one input and once
/// in the other: the link type says which of those pairs are compared, linked, sampled for
/// u and counted in the prior.
#[tokio::test]
async fn link_types_choose_the_pairs_and_the_prior() {
    let a = table(&[
        (Some("a1"), Some("ann@x.dk"), Some("ann")),
        (Some("a2"), Some("ann@x.dk"), Some("ann")),
        (Some("a3"), Some("bo@x.dk"), Some("bo")),
        (Some("a4"), Some("bo@x.dk"), Some("bo")),
    ]);
    let b = table(&[
        (Some("b1"), Some("bo@x.dk"), Some("bo")),
        (Some("b2"), Some("cy@x.dk"), Some("cy")),
        (Some("b3"), Some("cy@x.dk"), Some("cy")),
    ]);
    let config = |link: &str| {
        format!(
            "inputs:\n  - {{ table: a, source: sa, id: id, attributes: {{ email: email, name: name }} }}\n  - {{ table: b, source: sb, id: id, attributes: {{ email: email, name: name }} }}\n{}\nlink_type: {link}\nkeep_pairs: all\n",
            CONFIG.split_once("deterministic:").map(|(_, rest)| format!("deterministic:{rest}")).unwrap()
        )
    };
    let resolve_with = |link: &'static str| {
        let (a, b) = (a.clone(), b.clone());
        let config = config(link);
        async move {
            let ctx = SessionContext::new();
            ctx.register_batch("a", a).unwrap();
            ctx.register_batch("b", b).unwrap();
            let settings = serde_yaml::from_str::<IdentityConfig>(&config)
                .unwrap()
                .check()
                .unwrap();
            let (recs, load) = records::load(&ctx, &settings).await.unwrap();
            resolve(&settings, &recs, &load, &Context::default()).unwrap()
        }
    };
    let persons = |r: &Resolution| metric(r, "persons", "all").unwrap();
    // Any pair: ann twice in sa, bo twice in sa and once in sb, cy twice in sb -> three
    // persons; 7 records, 21 pairs; the e-mail rule links a1-a2, a3-a4, a3-b1, b2-b3.
    let both = resolve_with("link_and_dedupe").await;
    assert_eq!(persons(&both), 3.0);
    assert_eq!(both.details["possible_pairs"], 21.0);
    assert_eq!(both.details["deterministic_links"], 4);
    // Within an input only: bo stays two persons; 6 + 3 pairs; a1-a2, a3-a4, b2-b3.
    let dedupe = resolve_with("dedupe_only").await;
    assert_eq!(persons(&dedupe), 4.0);
    assert_eq!(dedupe.details["possible_pairs"], 9.0);
    assert_eq!(dedupe.details["deterministic_links"], 3);
    // Across inputs only: ann's and cy's copies stay apart, bo's three records become one
    // person, both of sa's joining through sb's (a3-b1, a4-b1); 4 x 3 pairs.
    let link = resolve_with("link_only").await;
    assert_eq!(persons(&link), 5.0);
    assert_eq!(link.details["possible_pairs"], 12.0);
    assert_eq!(link.details["deterministic_links"], 2);
    // u is estimated on as many pairs as asked for, each of the link type.
    for r in [&both, &dedupe, &link] {
        assert_eq!(r.details["u_pairs_sampled"], 2000, "{}", r.details);
    }
    // The pairs table holds only pairs the link type allows.
    for (r, same_input_allowed, cross_allowed) in [(&dedupe, true, false), (&link, false, true)] {
        let s1 = r
            .pairs
            .column_by_name("source_a")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let s2 = r
            .pairs
            .column_by_name("source_b")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        for i in 0..s1.len() {
            let same = s1.value(i) == s2.value(i);
            assert!(
                if same {
                    same_input_allowed
                } else {
                    cross_allowed
                },
                "pair {i}: {} {}",
                s1.value(i),
                s2.value(i)
            );
        }
    }
    let err = serde_yaml::from_str::<IdentityConfig>(&config("link_only").replace(
        "  - { table: b, source: sb, id: id, attributes: { email: email, name: name } }\n",
        "",
    ))
    .unwrap()
    .check()
    .unwrap_err();
    assert!(err.contains("at least two inputs"), "{err}");
}

/// Records from small name pools, so that blocks repeat, some past the size guard, with
/// swapped names, near spellings, shared and missing e-mails, in two inputs.
fn pooled(input: &str, n: usize, seed: u64) -> RecordBatch {
    const FIRST: [&str; 8] = [
        "anna", "ana", "jon", "john", "smith", "smyth", "berg", "lars",
    ];
    const LAST: [&str; 7] = ["berg", "smith", "smyth", "jensen", "jenson", "lars", "anna"];
    let mut state = seed;
    let mut next = move |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    let rows: Vec<(String, Option<String>, Option<String>, Option<String>)> = (0..n)
        .map(|i| {
            let email = match next(4) {
                0 => None,
                1 => Some(format!("shared{}@x.dk", next(3))),
                _ => Some(format!("p{}@x.dk", next(40))),
            };
            let first = (next(10) > 0).then(|| FIRST[next(FIRST.len())].to_string());
            let last = (next(10) > 0).then(|| LAST[next(LAST.len())].to_string());
            (format!("{input}{i}"), email, first, last)
        })
        .collect();
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("first", DataType::Utf8, true),
        Field::new("last", DataType::Utf8, true),
    ]);
    let col = |f: &dyn Fn(
        &(String, Option<String>, Option<String>, Option<String>),
    ) -> Option<String>| {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>())) as Arc<dyn Array>
    };
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            col(&|r| Some(r.0.clone())),
            col(&|r| r.1.clone()),
            col(&|r| r.2.clone()),
            col(&|r| r.3.clone()),
        ],
    )
    .unwrap()
}

/// The engine path against the in-process one on every link type, with every kind of
/// level, term frequencies on a comparison whose first level is not exact, blocks past
/// the size guard and a deterministic rule: the same tables, value for value and in the
/// same order, with the same schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_path_gives_the_in_process_tables_on_every_link_type() {
    for link in ["link_and_dedupe", "dedupe_only", "link_only"] {
        let config = format!(
            r#"
inputs:
  - {{ table: a, source: sa, id: id, attributes: {{ email: email, first: first, last: last }} }}
  - {{ table: b, source: sb, id: id, attributes: {{ email: email, first: first, last: last }} }}
deterministic:
  - {{ attributes: [email] }}
comparisons:
  - {{ name: first, attribute: first, levels: [exact, {{ swapped: last }}, metaphone, {{ jaro_winkler: 0.85 }}], term_frequency: true }}
  - {{ name: last, attribute: last, levels: [{{ levenshtein: 1 }}, {{ swapped: first }}, {{ token_set: 0.8 }}], term_frequency: true }}
  - {{ name: email, attribute: email, levels: [exact, {{ damerau_levenshtein: 2 }}] }}
blocking: [[last], [first], [email], [first, last]]
guards: {{ max_records_per_value: 6, max_cluster_size: 25, exclusive: [first] }}
training: {{ u_sample_pairs: 3000 }}
threshold: 0.6
link_type: {link}
keep_pairs: all
"#
        );
        let ctx = SessionContext::new();
        crate::functions::register_all(&ctx, &Default::default());
        ctx.register_batch("a", pooled("a", 70, 1)).unwrap();
        ctx.register_batch("b", pooled("b", 50, 2)).unwrap();
        let settings = serde_yaml::from_str::<IdentityConfig>(&config)
            .unwrap()
            .check()
            .unwrap();
        let (recs, load) = records::load(&ctx, &settings).await.unwrap();
        let client = resolve(&settings, &recs, &load, &Context::default()).unwrap();

        let work = tempfile::tempdir().unwrap();
        let placement = crate::engine::Placement::local();
        let env = crate::steps::StepEnv {
            name: "identity",
            placement: &placement,
            work_dir: work.path(),
        };
        let engine = super::engine::resolve(
            &ctx,
            &env,
            "__identity",
            &settings,
            &recs,
            &load,
            &Context::default(),
        )
        .await
        .unwrap();
        let finished = engine.finished;
        assert_eq!(finished.map, client.map, "{link}: map");
        assert_eq!(finished.golden, client.golden, "{link}: golden records");
        assert_eq!(finished.quality, client.quality, "{link}: quality");
        let pairs = engine.pairs.collect().await.unwrap();
        let pairs = datafusion::arrow::compute::concat_batches(&pairs[0].schema(), &pairs).unwrap();
        assert!(
            client.pairs.num_rows() > 30,
            "{link}: {} pairs",
            client.pairs.num_rows()
        );
        assert_eq!(pairs.num_rows(), client.pairs.num_rows(), "{link}: pairs");
        for (i, field) in client.pairs.schema().fields().iter().enumerate() {
            let other = pairs.schema().field(i).clone();
            assert_eq!(
                (other.name(), other.data_type(), other.is_nullable()),
                (field.name(), field.data_type(), field.is_nullable()),
                "{link}"
            );
            assert_eq!(
                pairs.column(i).as_ref(),
                client.pairs.column(i).as_ref(),
                "{link}: column {}",
                field.name()
            );
        }
        let oversized = metric(&client, "oversized_blocks", "blocking:last").unwrap()
            + metric(&client, "oversized_blocks", "blocking:first").unwrap();
        assert!(oversized > 0.0, "{link}: no block passed the guard");
    }
}
