//! Identity resolution: one customer key per person across record sets, in the manner of
//! Splink (Fellegi-Sunter with blocking, u by sampling and m by EM, term-frequency
//! adjustment) plus what the commercial tools add: deterministic rules on strong keys,
//! over-merge guards, keys that stay stable across runs, survivorship and quality figures.
//!
//! The phases, each in its own module: [`records`] loads and interns the inputs, [`blocking`]
//! finds candidate pairs, [`compare`] gives their comparison levels, [`train`] estimates the
//! model, [`cluster`] links records into persons under the guards, [`keys`] keeps keys
//! stable, [`golden`] picks each attribute's surviving value.

pub mod blocking;
pub mod cluster;
pub mod compare;
pub mod config;
pub mod engine;
pub mod explain;
pub mod golden;
pub mod keys;
pub mod records;
pub mod train;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use cluster::{Clustering, Decision, Edge};
use compare::Comparator;
use config::{KeepPairs, Settings};
use keys::Keys;
use records::{LoadReport, Records};
use train::Model;

/// Pairwise quality against a ground truth.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PairwiseQuality {
    pub evaluated_records: u64,
    pub true_pairs: u64,
    pub predicted_pairs: u64,
    pub true_positive_pairs: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Pairwise precision, recall and F1 of `cluster_of` against `truth` (per record, the true
/// person, `None` when unknown), over the record pairs of the link type (`source_of`: each
/// record's input), counted without listing pairs: a group of n records gives n(n-1)/2
/// pairs, of which `dedupe_only` counts those within an input and `link_only` the rest.
pub fn pairwise_quality(
    cluster_of: &[u32],
    truth: &[Option<u32>],
    source_of: &[u16],
    link: config::LinkType,
) -> PairwiseQuality {
    let pairs = |n: u64| n * n.saturating_sub(1) / 2;
    // Per group, its records by input.
    type Groups<K> = HashMap<K, std::collections::BTreeMap<u16, u64>>;
    let mut by_cluster: Groups<u32> = HashMap::new();
    let mut by_person: Groups<u32> = HashMap::new();
    let mut by_both: Groups<(u32, u32)> = HashMap::new();
    let mut evaluated = 0;
    for (r, t) in truth.iter().enumerate() {
        if let Some(p) = t {
            evaluated += 1;
            let s = source_of[r];
            *by_cluster
                .entry(cluster_of[r])
                .or_default()
                .entry(s)
                .or_default() += 1;
            *by_person.entry(*p).or_default().entry(s).or_default() += 1;
            *by_both
                .entry((cluster_of[r], *p))
                .or_default()
                .entry(s)
                .or_default() += 1;
        }
    }
    let allowed = |inputs: &std::collections::BTreeMap<u16, u64>| {
        let all = pairs(inputs.values().sum());
        let within: u64 = inputs.values().map(|&n| pairs(n)).sum();
        match link {
            config::LinkType::LinkAndDedupe => all,
            config::LinkType::DedupeOnly => within,
            config::LinkType::LinkOnly => all - within,
        }
    };
    let predicted: u64 = by_cluster.values().map(allowed).sum();
    let true_pairs: u64 = by_person.values().map(allowed).sum();
    let tp: u64 = by_both.values().map(allowed).sum();
    let precision = if predicted == 0 {
        1.0
    } else {
        tp as f64 / predicted as f64
    };
    let recall = if true_pairs == 0 {
        1.0
    } else {
        tp as f64 / true_pairs as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    PairwiseQuality {
        evaluated_records: evaluated,
        true_pairs,
        predicted_pairs: predicted,
        true_positive_pairs: tp,
        precision,
        recall,
        f1,
    }
}

/// Everything the step returns.
pub struct Resolution {
    pub map: RecordBatch,
    pub golden: RecordBatch,
    pub quality: RecordBatch,
    pub pairs: RecordBatch,
    pub details: serde_json::Value,
}

/// Inputs that are not records: the previous keys and the ground truth.
#[derive(Default)]
pub struct Context {
    pub previous: HashMap<(String, String), String>,
    pub truth: HashMap<(String, String), String>,
    /// Asked between phases and chunks of pairs: the process passed its memory limit.
    pub stop: crate::memory::Stop,
}

struct Metrics(Vec<(String, String, f64)>);

impl Metrics {
    fn add(&mut self, metric: &str, dimension: impl Into<String>, value: f64) {
        self.0.push((metric.to_string(), dimension.into(), value));
    }
}

/// What linking found: candidate pairs with their levels and weights, the model, the
/// links in the order they were tried, and the persons they made.
pub struct Linked<'a> {
    pub cmp: Comparator<'a>,
    pub blocked: blocking::Blocked,
    /// Per candidate pair, its level of each comparison (pairs x comparisons).
    pub levels: Vec<u8>,
    pub model: Option<Model>,
    /// Per candidate pair, the weight of each comparison, and the pair's match weight.
    pub weights: Vec<f64>,
    pub match_weight: Vec<f64>,
    /// All pairs of the link type, and those the deterministic rules join.
    pub all_pairs: f64,
    pub deterministic_pairs: usize,
    /// Per deterministic rule: links, oversized groups, records in them, largest of them.
    pub deterministic_stats: Vec<(u64, u64, u64, u64)>,
    /// Links tried: the deterministic ones first, then `above` in order.
    pub edges: Vec<Edge>,
    pub deterministic_edges: usize,
    /// Candidate pairs at or above the threshold, strongest first.
    pub above: Vec<usize>,
    pub clustering: Clustering,
}

/// All record pairs of the link type.
fn possible_pairs(records: &Records, link: config::LinkType) -> f64 {
    let mut input_sizes = vec![0u64; records.sources.len()];
    for &s in &records.source_of {
        input_sizes[s as usize] += 1;
    }
    link.possible_pairs(&input_sizes)
}

/// The prior as Splink estimates it: pairs the deterministic rules join, scaled up by their
/// assumed recall, over all pairs of the link type (within each input for `dedupe_only`,
/// across inputs for `link_only`).
fn prior(settings: &Settings, deterministic_pairs: usize, all_pairs: f64) -> f64 {
    settings.raw.training.prior.unwrap_or_else(|| {
        let estimate = deterministic_pairs as f64
            / settings.raw.training.deterministic_recall
            / all_pairs.max(1.0);
        estimate.clamp(1e-12, 0.5)
    })
}

/// Per deterministic rule: links, oversized groups, records in them, largest of them.
pub type RuleLinks = (u64, u64, u64, u64);

/// The deterministic rules' links in order, and what each rule contributed.
fn deterministic_links(settings: &Settings, records: &Records) -> (Vec<Edge>, Vec<RuleLinks>) {
    let link = settings.raw.link_type;
    let guards = &settings.raw.guards;
    let mut edges: Vec<Edge> = Vec::new();
    let mut deterministic_stats = Vec::new();
    for (rule, (_, attrs)) in settings.deterministic.iter().enumerate() {
        let g = blocking::group(records, attrs, guards.max_records_per_value);
        let mut links = 0u64;
        let source = |r: u32| records.source_of[r as usize];
        for members in &g.groups {
            // Each member joins the first member of the group it may be paired with, so
            // that every member with a partner of the link type is linked (for
            // `link_only`, a second record of the first input joins through the other
            // input). An edge two members choose each other by is kept once, from the
            // earlier member to the later.
            let mut seen: std::collections::HashSet<(usize, usize)> =
                std::collections::HashSet::new();
            for (i, &m) in members.iter().enumerate() {
                let Some(j) = (0..members.len())
                    .find(|&j| j != i && link.allows(source(members[j]), source(m)))
                else {
                    continue;
                };
                let (first, second) = (i.min(j), i.max(j));
                if seen.insert((first, second)) {
                    edges.push(Edge {
                        a: members[first],
                        b: members[second],
                        method: Some(rule as u16),
                        probability: 1.0,
                    });
                    links += 1;
                }
            }
        }
        deterministic_stats.push((
            links,
            g.oversized_groups,
            g.oversized_records,
            g.largest_oversized,
        ));
    }
    (edges, deterministic_stats)
}

/// What linking found, however the candidate pairs were compared: what the quality table,
/// the map and the golden records are made of.
pub struct Summary {
    pub rule_stats: Vec<blocking::RuleStats>,
    pub candidate_pairs: usize,
    pub model: Option<Model>,
    pub all_pairs: f64,
    pub deterministic_pairs: usize,
    pub deterministic_stats: Vec<RuleLinks>,
    pub deterministic_edges: usize,
    pub above: usize,
    pub clustering: Clustering,
}

/// The step's tables other than the pairs.
pub struct Finished {
    pub map: RecordBatch,
    pub golden: RecordBatch,
    pub quality: RecordBatch,
    pub details: serde_json::Value,
}

type Lap<'t> = dyn FnMut(&'static str, &mut Vec<(&'static str, u64)>) + 't;

/// Blocking, comparing, training, scoring and clustering.
pub fn link<'a>(
    settings: &'a Settings,
    records: &'a Records,
    context: &Context,
    timings: &mut Vec<(&'static str, u64)>,
    lap: &mut Lap<'_>,
) -> Result<Linked<'a>, String> {
    let guards = &settings.raw.guards;
    let cmp = Comparator::new(records, &settings.comparisons);
    let c = settings.comparisons.len();

    // Candidate pairs and their comparison levels.
    let stop = |phase: &str| context.stop.check(&format!("identity ({phase})"));
    let link = settings.raw.link_type;
    let blocked = blocking::candidate_pairs(
        records,
        &settings.blocking,
        guards.max_records_per_value,
        link,
    );
    stop("blocking")?;
    let mut levels = vec![0u8; blocked.pairs.len() * c];
    par_rows(&mut levels, c, |p, row| {
        if p % (1 << 16) == 0 {
            stop("comparing")?;
        }
        let (a, b) = blocked.pairs[p];
        cmp.levels(a as usize, b as usize, row);
        Ok::<(), String>(())
    })?;
    lap("blocking_and_comparison", timings);

    // The model and each pair's weight.
    let all_pairs = possible_pairs(records, link);
    let deterministic_pairs = blocking::candidate_pairs(
        records,
        &settings.deterministic,
        guards.max_records_per_value,
        link,
    )
    .pairs
    .len();
    let prior = prior(settings, deterministic_pairs, all_pairs);
    let model: Option<Model> = (c > 0).then(|| {
        train::train(
            &cmp,
            prior,
            &blocked,
            &levels,
            &settings.blocking,
            settings.raw.training.u_sample_pairs,
            settings.raw.training.seed,
            settings.raw.training.em_max_iterations,
            link,
        )
    });
    lap("training", timings);
    stop("training")?;
    let mut weights = vec![0.0f64; blocked.pairs.len() * c];
    let mut match_weight = vec![0.0f64; blocked.pairs.len()];
    if let Some(model) = &model {
        // Each pair's row: its match weight, then one weight per comparison.
        let mut scored = vec![0.0f64; blocked.pairs.len() * (c + 1)];
        par_rows(&mut scored, c + 1, |p, row| {
            let (total, per) = row.split_first_mut().expect("a row has c + 1 values");
            *total = train::score(
                model,
                &cmp,
                blocked.pairs[p],
                &levels[p * c..(p + 1) * c],
                per,
            );
            Ok::<(), String>(())
        })?;
        for (p, row) in scored.chunks_exact(c + 1).enumerate() {
            match_weight[p] = row[0];
            weights[p * c..(p + 1) * c].copy_from_slice(&row[1..]);
        }
    }

    // Links, strongest first: deterministic rules in order, then probabilistic by weight.
    let (mut edges, deterministic_stats) = deterministic_links(settings, records);
    let deterministic_edges = edges.len();
    let threshold = settings.raw.threshold;
    let mut above: Vec<usize> = (0..blocked.pairs.len())
        .filter(|&p| model.is_some() && train::probability(match_weight[p]) >= threshold)
        .collect();
    above.sort_by(|&x, &y| match_weight[y].total_cmp(&match_weight[x]).then(x.cmp(&y)));
    for &p in &above {
        let (a, b) = blocked.pairs[p];
        edges.push(Edge {
            a,
            b,
            method: None,
            probability: train::probability(match_weight[p]),
        });
    }
    stop("scoring")?;
    let clustering = cluster::cluster(
        &cmp,
        records.len(),
        &edges,
        &settings.exclusive,
        guards.max_cluster_size,
    );
    lap("clustering", timings);
    stop("clustering")?;
    Ok(Linked {
        cmp,
        blocked,
        levels,
        model,
        weights,
        match_weight,
        all_pairs,
        deterministic_pairs,
        deterministic_stats,
        edges,
        deterministic_edges,
        above,
        clustering,
    })
}

/// Runs every phase on loaded records, comparing the candidate pairs in this process.
pub fn resolve(
    settings: &Settings,
    records: &Records,
    load: &LoadReport,
    context: &Context,
) -> Result<Resolution, String> {
    let started = Instant::now();
    let mut timings: Vec<(&str, u64)> = Vec::new();
    let mut lap = laps();
    let Linked {
        cmp: _,
        blocked,
        levels,
        model,
        weights,
        match_weight,
        all_pairs,
        deterministic_pairs,
        deterministic_stats,
        edges: _,
        deterministic_edges,
        above,
        clustering,
    } = self::link(settings, records, context, &mut timings, &mut lap)?;

    // Per candidate pair: what became of it.
    let mut pair_decision: Vec<&'static str> = vec!["below_threshold"; blocked.pairs.len()];
    for (i, &p) in above.iter().enumerate() {
        pair_decision[p] = clustering.decisions[deterministic_edges + i].label();
    }
    let pairs = pairs_batch(
        records,
        &blocked,
        settings,
        &levels,
        &weights,
        &match_weight,
        &pair_decision,
        model.is_some(),
    )?;
    lap("pairs_table", &mut timings);
    let summary = Summary {
        rule_stats: blocked.stats,
        candidate_pairs: blocked.pairs.len(),
        model,
        all_pairs,
        deterministic_pairs,
        deterministic_stats,
        deterministic_edges,
        above: above.len(),
        clustering,
    };
    let Finished {
        map,
        golden,
        quality,
        details,
    } = finish(
        settings, records, load, context, &summary, timings, &mut lap, started, "client",
    )?;
    Ok(Resolution {
        map,
        golden,
        quality,
        pairs,
        details,
    })
}

/// Threads for [`par_map`] and [`par_rows`]: one per core, at most 16.
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, 16)
}

/// `f(0), f(1), ... f(n - 1)` computed on every core, in order: each thread takes one
/// contiguous range, so the result does not depend on how the work was split.
pub fn par_map<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let threads = worker_threads();
    if threads == 1 || n < 4096 {
        return (0..n).map(f).collect();
    }
    let chunk = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                scope.spawn(move || (start..(start + chunk).min(n)).map(f).collect::<Vec<R>>())
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("an identity worker thread panicked"))
            .collect()
    })
}

/// Fills `out`, rows of `width` values, with `f(row index, row)` on every core: each thread
/// takes one contiguous range of rows. Rows are independent, so the result does not depend
/// on how the work was split; the first error (by row) is returned.
pub fn par_rows<T: Send, E: Send>(
    out: &mut [T],
    width: usize,
    f: impl Fn(usize, &mut [T]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    if width == 0 {
        return Ok(());
    }
    let n = out.len() / width;
    let threads = worker_threads();
    if threads == 1 || n < 4096 {
        return out
            .chunks_mut(width)
            .enumerate()
            .try_for_each(|(i, row)| f(i, row));
    }
    let chunk = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = out
            .chunks_mut(chunk * width)
            .enumerate()
            .map(|(t, rows)| {
                scope.spawn(move || {
                    rows.chunks_mut(width)
                        .enumerate()
                        .try_for_each(|(i, row)| f(t * chunk + i, row))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("an identity worker thread panicked"))
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<Result<(), E>>()
    })
}

/// A stopwatch: each call records the time since the previous one under a phase's name.
pub fn laps() -> impl FnMut(&'static str, &mut Vec<(&'static str, u64)>) {
    let mut last = Instant::now();
    move |name: &'static str, timings: &mut Vec<(&'static str, u64)>| {
        timings.push((name, last.elapsed().as_millis() as u64));
        last = Instant::now();
    }
}

/// Keys, quality figures, the map and the golden records from what linking found.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    settings: &Settings,
    records: &Records,
    load: &LoadReport,
    context: &Context,
    summary: &Summary,
    mut timings: Vec<(&'static str, u64)>,
    lap: &mut Lap<'_>,
    started: Instant,
    compared_in: &str,
) -> Result<Finished, String> {
    let link = settings.raw.link_type;
    let Summary {
        rule_stats,
        candidate_pairs,
        model,
        all_pairs,
        deterministic_pairs,
        deterministic_stats,
        deterministic_edges,
        above,
        clustering,
    } = summary;
    let (deterministic_pairs, deterministic_edges, above, all_pairs) = (
        *deterministic_pairs,
        *deterministic_edges,
        *above,
        *all_pairs,
    );
    let keys = keys::assign(
        records,
        clustering,
        &context.previous,
        &settings.raw.key_prefix,
    );
    lap("keys", &mut timings);

    let truth: Option<Vec<Option<u32>>> = (!context.truth.is_empty()).then(|| {
        let mut ids: HashMap<&str, u32> = HashMap::new();
        (0..records.len())
            .map(|r| {
                context
                    .truth
                    .get(&(records.source(r).to_string(), records.ids[r].clone()))
                    .map(|p| {
                        let next = ids.len() as u32;
                        *ids.entry(p.as_str()).or_insert(next)
                    })
            })
            .collect()
    });
    let quality = truth
        .as_ref()
        .map(|t| pairwise_quality(&clustering.cluster_of, t, &records.source_of, link));

    // Quality table.
    let mut q = Metrics(Vec::new());
    q.add("records", "all", records.len() as f64);
    for (source, n) in &load.per_source {
        q.add("records", format!("source:{source}"), *n as f64);
    }
    q.add("records_without_id", "all", load.missing_ids as f64);
    q.add("duplicate_record_ids", "all", load.duplicate_ids as f64);
    for (a, n) in &load.ignored {
        q.add("ignored_values", format!("attribute:{a}"), *n as f64);
    }
    for s in rule_stats {
        q.add(
            "candidate_pairs",
            format!("blocking:{}", s.name),
            s.pairs as f64,
        );
        q.add(
            "oversized_blocks",
            format!("blocking:{}", s.name),
            s.oversized_groups as f64,
        );
        q.add(
            "records_in_oversized_blocks",
            format!("blocking:{}", s.name),
            s.oversized_records as f64,
        );
        q.add(
            "largest_oversized_block",
            format!("blocking:{}", s.name),
            s.largest_oversized as f64,
        );
    }
    q.add("candidate_pairs", "all", *candidate_pairs as f64);
    for ((name, _), (links, groups, recs, largest)) in
        settings.deterministic.iter().zip(deterministic_stats)
    {
        q.add("deterministic_links", format!("rule:{name}"), *links as f64);
        q.add(
            "oversized_key_values",
            format!("rule:{name}"),
            *groups as f64,
        );
        q.add(
            "records_with_oversized_key_values",
            format!("rule:{name}"),
            *recs as f64,
        );
        q.add(
            "largest_oversized_key_value",
            format!("rule:{name}"),
            *largest as f64,
        );
    }
    q.add("pairs_above_threshold", "all", above as f64);
    for d in [
        Decision::Accepted,
        Decision::AlreadyLinked,
        Decision::RefusedConflict,
        Decision::RefusedSize,
    ] {
        let det = clustering.decisions[..deterministic_edges]
            .iter()
            .filter(|x| **x == d)
            .count();
        let prob = clustering.decisions[deterministic_edges..]
            .iter()
            .filter(|x| **x == d)
            .count();
        q.add("links", format!("deterministic:{}", d.label()), det as f64);
        q.add("links", format!("probabilistic:{}", d.label()), prob as f64);
    }
    let sizes: Vec<usize> = clustering.clusters.iter().map(Vec::len).collect();
    q.add("persons", "all", sizes.len() as f64);
    q.add(
        "persons",
        "flagged_capped",
        clustering.capped.iter().filter(|&&x| x).count() as f64,
    );
    for (label, lo, hi) in [
        ("1", 1, 1),
        ("2", 2, 2),
        ("3", 3, 3),
        ("4", 4, 4),
        ("5-9", 5, 9),
        ("10-49", 10, 49),
        ("50+", 50, usize::MAX),
    ] {
        q.add(
            "cluster_size",
            label,
            sizes.iter().filter(|&&s| s >= lo && s <= hi).count() as f64,
        );
    }
    let mut largest: Vec<usize> = (0..sizes.len()).collect();
    largest.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    for &cl in largest.iter().take(10) {
        q.add(
            "largest_cluster",
            format!("customer_key:{}", keys.key[cl]),
            sizes[cl] as f64,
        );
    }
    let kr = &keys.report;
    q.add("keys", "new", kr.new_keys as f64);
    q.add("keys", "kept", kr.kept_keys as f64);
    q.add("keys", "retired", kr.retired_keys as f64);
    q.add("merges", "all", kr.merges as f64);
    q.add("splits", "all", kr.splits as f64);
    if let Some(model) = model {
        q.add("prior", "random_pair", model.lambda);
        q.add("lambda", "candidate_pairs", model.lambda_candidates);
        q.add("deterministic_pairs", "all", deterministic_pairs as f64);
        for (ci, comp) in settings.comparisons.iter().enumerate() {
            for l in 1..comp.level_count() {
                let dim = format!("{}:{}", comp.name, comp.level_label(l as u8));
                q.add("m_probability", dim.clone(), model.m[ci][l]);
                q.add("u_probability", dim.clone(), model.u[ci][l]);
                q.add(
                    "match_weight",
                    dim,
                    (model.m[ci][l] / model.u[ci][l]).log2(),
                );
            }
        }
    }
    if let Some(pq) = &quality {
        q.add("ground_truth_records", "all", pq.evaluated_records as f64);
        q.add("true_pairs", "all", pq.true_pairs as f64);
        q.add("predicted_pairs", "all", pq.predicted_pairs as f64);
        q.add("precision", "pairwise", pq.precision);
        q.add("recall", "pairwise", pq.recall);
        q.add("f1", "pairwise", pq.f1);
    }
    lap("quality", &mut timings);

    let map = map_batch(records, clustering, &keys, settings)?;
    let golden = golden_batch(records, clustering, &keys, settings)?;
    let quality_batch = quality_batch(&q)?;
    lap("outputs", &mut timings);

    let details = serde_json::json!({
        "records": records.len(),
        "link_type": link.as_str(),
        "pairs_compared_in": compared_in,
        "possible_pairs": all_pairs,
        "candidate_pairs": candidate_pairs,
        "deterministic_links": deterministic_edges,
        "pairs_above_threshold": above,
        "threshold": settings.raw.threshold,
        "persons": sizes.len(),
        "largest_cluster": sizes.iter().max().copied().unwrap_or(0),
        "capped_clusters": clustering.capped.iter().filter(|&&x| x).count(),
        "prior": model.as_ref().map(|m| m.lambda),
        "lambda_candidate_pairs": model.as_ref().map(|m| m.lambda_candidates),
        "u_pairs_sampled": model.as_ref().map(|m| m.u_pairs),
        "em_sessions": model.as_ref().map(|m| m.sessions.iter().map(|s| serde_json::json!({
            "rule": s.rule, "pairs": s.pairs, "iterations": s.iterations, "converged": s.converged, "lambda": s.lambda,
        })).collect::<Vec<_>>()),
        "keys": { "new": kr.new_keys, "kept": kr.kept_keys, "retired": kr.retired_keys, "merges": kr.merges, "splits": kr.splits },
        "quality": quality,
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "phases_ms": timings.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    Ok(Finished {
        map,
        golden,
        quality: quality_batch,
        details,
    })
}

fn batch(columns: Vec<(Field, ArrayRef)>) -> Result<RecordBatch, String> {
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
}

fn text(name: &str, values: Vec<Option<String>>) -> (Field, ArrayRef) {
    (
        Field::new(name, DataType::Utf8, true),
        Arc::new(StringArray::from(values)),
    )
}

fn method_label(settings: &Settings, method: Option<Option<u16>>) -> String {
    match method {
        None => "unmatched".into(),
        Some(None) => "probabilistic".into(),
        Some(Some(rule)) => format!("deterministic:{}", settings.deterministic[rule as usize].0),
    }
}

fn map_batch(
    records: &Records,
    clustering: &Clustering,
    keys: &Keys,
    settings: &Settings,
) -> Result<RecordBatch, String> {
    let n = records.len();
    let cl = |r: usize| clustering.cluster_of[r] as usize;
    batch(vec![
        text(
            "source",
            (0..n)
                .map(|r| Some(records.source(r).to_string()))
                .collect(),
        ),
        text(
            "source_record_id",
            records.ids.iter().cloned().map(Some).collect(),
        ),
        text(
            "customer_key",
            (0..n).map(|r| Some(keys.key[cl(r)].clone())).collect(),
        ),
        text(
            "match_method",
            (0..n)
                .map(|r| Some(method_label(settings, clustering.method[r])))
                .collect(),
        ),
        (
            Field::new("match_probability", DataType::Float64, true),
            Arc::new(Float64Array::from(clustering.probability.clone())),
        ),
        (
            Field::new("cluster_size", DataType::UInt64, false),
            Arc::new(UInt64Array::from(
                (0..n)
                    .map(|r| clustering.clusters[cl(r)].len() as u64)
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            Field::new("cluster_capped", DataType::Boolean, false),
            Arc::new(BooleanArray::from(
                (0..n).map(|r| clustering.capped[cl(r)]).collect::<Vec<_>>(),
            )),
        ),
        text("previous_customer_key", keys.previous.clone()),
        text(
            "key_status",
            (0..n)
                .map(|r| Some(keys.status[cl(r)].label().to_string()))
                .collect(),
        ),
    ])
}

fn golden_batch(
    records: &Records,
    clustering: &Clustering,
    keys: &Keys,
    settings: &Settings,
) -> Result<RecordBatch, String> {
    let k = clustering.clusters.len();
    let mut columns = vec![
        text("customer_key", keys.key.iter().cloned().map(Some).collect()),
        (
            Field::new("records", DataType::UInt64, false),
            Arc::new(UInt64Array::from(
                clustering
                    .clusters
                    .iter()
                    .map(|m| m.len() as u64)
                    .collect::<Vec<_>>(),
            )),
        ),
        text(
            "sources",
            clustering
                .clusters
                .iter()
                .map(|m| {
                    let mut s: Vec<&str> = m.iter().map(|&r| records.source(r as usize)).collect();
                    s.sort_unstable();
                    s.dedup();
                    Some(s.join(","))
                })
                .collect(),
        ),
        text(
            "key_status",
            keys.status
                .iter()
                .map(|s| Some(s.label().to_string()))
                .collect(),
        ),
    ];
    for &(attr, rule) in &settings.golden {
        let name = &settings.attributes[attr];
        let chosen: Vec<Option<u32>> = (0..k)
            .map(|c| golden::survivor(records, &clustering.clusters[c], attr, rule))
            .collect();
        columns.push(text(
            name,
            chosen
                .iter()
                .map(|r| r.and_then(|r| records.attrs[attr].get(r as usize).map(str::to_string)))
                .collect(),
        ));
        columns.push(text(
            &format!("{name}_source"),
            chosen
                .iter()
                .map(|r| r.map(|r| records.source(r as usize).to_string()))
                .collect(),
        ));
        columns.push(text(
            &format!("{name}_record_id"),
            chosen
                .iter()
                .map(|r| r.map(|r| records.ids[r as usize].clone()))
                .collect(),
        ));
    }
    batch(columns)
}

#[allow(clippy::too_many_arguments)]
fn pairs_batch(
    records: &Records,
    blocked: &blocking::Blocked,
    settings: &Settings,
    levels: &[u8],
    weights: &[f64],
    match_weight: &[f64],
    decision: &[&'static str],
    scored: bool,
) -> Result<RecordBatch, String> {
    let c = settings.comparisons.len();
    let keep: Vec<usize> = match settings.raw.keep_pairs {
        KeepPairs::None => Vec::new(),
        _ if !scored => Vec::new(),
        KeepPairs::All => (0..blocked.pairs.len()).collect(),
        KeepPairs::Accepted => (0..blocked.pairs.len())
            .filter(|&p| decision[p] != "below_threshold")
            .collect(),
    };
    let side = |p: usize, first: bool| {
        let (a, b) = blocked.pairs[p];
        (if first { a } else { b }) as usize
    };
    let mut columns = vec![
        text(
            "source_a",
            keep.iter()
                .map(|&p| Some(records.source(side(p, true)).to_string()))
                .collect(),
        ),
        text(
            "record_id_a",
            keep.iter()
                .map(|&p| Some(records.ids[side(p, true)].clone()))
                .collect(),
        ),
        text(
            "source_b",
            keep.iter()
                .map(|&p| Some(records.source(side(p, false)).to_string()))
                .collect(),
        ),
        text(
            "record_id_b",
            keep.iter()
                .map(|&p| Some(records.ids[side(p, false)].clone()))
                .collect(),
        ),
        text(
            "blocking_rule",
            keep.iter()
                .map(|&p| Some(settings.blocking[blocked.rule_of[p] as usize].0.clone()))
                .collect(),
        ),
    ];
    for (ci, comp) in settings.comparisons.iter().enumerate() {
        columns.push(text(
            &format!("level_{}", comp.name),
            keep.iter()
                .map(|&p| Some(comp.level_label(levels[p * c + ci])))
                .collect(),
        ));
        columns.push((
            Field::new(format!("weight_{}", comp.name), DataType::Float64, false),
            Arc::new(Float64Array::from(
                keep.iter()
                    .map(|&p| weights[p * c + ci])
                    .collect::<Vec<_>>(),
            )),
        ));
    }
    columns.push((
        Field::new("match_weight", DataType::Float64, false),
        Arc::new(Float64Array::from(
            keep.iter().map(|&p| match_weight[p]).collect::<Vec<_>>(),
        )),
    ));
    columns.push((
        Field::new("match_probability", DataType::Float64, false),
        Arc::new(Float64Array::from(
            keep.iter()
                .map(|&p| train::probability(match_weight[p]))
                .collect::<Vec<_>>(),
        )),
    ));
    columns.push(text(
        "decision",
        keep.iter()
            .map(|&p| Some(decision[p].to_string()))
            .collect(),
    ));
    batch(columns)
}

fn quality_batch(q: &Metrics) -> Result<RecordBatch, String> {
    batch(vec![
        text(
            "metric",
            q.0.iter().map(|(m, _, _)| Some(m.clone())).collect(),
        ),
        text(
            "dimension",
            q.0.iter().map(|(_, d, _)| Some(d.clone())).collect(),
        ),
        (
            Field::new("value", DataType::Float64, false),
            Arc::new(Float64Array::from(
                q.0.iter().map(|(_, _, v)| *v).collect::<Vec<_>>(),
            )),
        ),
    ])
}

#[cfg(test)]
mod quality_tests {
    use super::config::LinkType;
    use super::pairwise_quality;

    #[test]
    fn par_map_keeps_the_order_on_every_core_and_below_its_threshold() {
        for n in [0, 1, 4095, 4096, 100_003] {
            let got = super::par_map(n, |i| i * 3 + 1);
            assert_eq!(
                got,
                (0..n).map(|i| i * 3 + 1).collect::<Vec<_>>(),
                "n = {n}"
            );
        }
    }

    #[test]
    fn par_rows_fills_every_row_from_its_index_and_returns_the_first_error() {
        for (n, width) in [(0, 3), (1, 3), (4095, 2), (4096, 1), (100_003, 4)] {
            let mut out = vec![0usize; n * width];
            super::par_rows(&mut out, width, |p, row| {
                for (k, v) in row.iter_mut().enumerate() {
                    *v = p * 10 + k;
                }
                Ok::<(), String>(())
            })
            .unwrap();
            let want: Vec<usize> = (0..n)
                .flat_map(|p| (0..width).map(move |k| p * 10 + k))
                .collect();
            assert_eq!(out, want, "n = {n}, width = {width}");
        }
        let mut out = vec![0u8; 50_000];
        let err = super::par_rows(&mut out, 1, |p, _| {
            if p % 7_000 == 6_999 {
                Err(p)
            } else {
                Ok(())
            }
        });
        assert_eq!(err, Err(6_999));
    }

    #[test]
    fn pairwise_quality_counts_pairs_by_hand() {
        // Truth: persons {0,1,2} and {3,4}. Prediction: {0,1}, {2,3,4}.
        let truth = [Some(0), Some(0), Some(0), Some(1), Some(1), None];
        let clusters = [0, 0, 1, 1, 1, 2];
        let q = pairwise_quality(&clusters, &truth, &[0; 6], LinkType::LinkAndDedupe);
        // True pairs 3 + 1 = 4; predicted 1 + 3 = 4; true positives (0,1) and (3,4) = 2.
        assert_eq!(
            (q.true_pairs, q.predicted_pairs, q.true_positive_pairs),
            (4, 4, 2)
        );
        assert!(
            (q.precision - 0.5).abs() < 1e-12
                && (q.recall - 0.5).abs() < 1e-12
                && (q.f1 - 0.5).abs() < 1e-12
        );
        assert_eq!(q.evaluated_records, 5);

        // Records 0, 2, 3 from input 0 and 1, 4 from input 1.
        let inputs = [0, 1, 0, 0, 1, 0];
        // link_only: true pairs (0,1) (1,2) (3,4) = 3; predicted (0,1), (2,4) (3,4) = 3;
        // true positives (0,1) (3,4) = 2.
        let q = pairwise_quality(&clusters, &truth, &inputs, LinkType::LinkOnly);
        assert_eq!(
            (q.true_pairs, q.predicted_pairs, q.true_positive_pairs),
            (3, 3, 2)
        );
        // dedupe_only: true (0,2); predicted (2,3); none right.
        let q = pairwise_quality(&clusters, &truth, &inputs, LinkType::DedupeOnly);
        assert_eq!(
            (q.true_pairs, q.predicted_pairs, q.true_positive_pairs),
            (1, 1, 0)
        );
    }
}
