//! Why two records are, or are not, one person: the weight each comparison added to the
//! prior, as the model weighed it, and what became of the pair (blocked together or not,
//! above the threshold or not, linked or refused by a guard), in the manner of Splink's
//! waterfall chart.

use serde::Serialize;

use super::blocking;
use super::config::Settings;
use super::records::Records;
use super::{train, Linked};

/// One comparison's part of the match weight.
#[derive(Debug, Clone, Serialize)]
pub struct Term {
    pub comparison: String,
    /// The level the two values reached (`null` adds nothing).
    pub level: String,
    /// log2(m / u) of that level, term-frequency adjusted where configured.
    pub weight: f64,
    pub m: Option<f64>,
    pub u: Option<f64>,
}

/// A blocking or deterministic rule and whether the two records agree on its attributes.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub name: String,
    pub agrees: bool,
    /// The records sharing this key value, when more than the guard allows (the rule
    /// skipped them).
    pub oversized_block: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairExplanation {
    pub a: (String, String),
    pub b: (String, String),
    /// The prior as a weight, log2(lambda / (1 - lambda)), and lambda.
    pub prior_weight: f64,
    pub prior: f64,
    pub terms: Vec<Term>,
    /// Prior weight plus every term.
    pub match_weight: f64,
    pub probability: f64,
    pub threshold: f64,
    pub blocking: Vec<Rule>,
    pub deterministic: Vec<Rule>,
    /// Whether the pair was a candidate pair, and the rule that found it first.
    pub candidate: bool,
    pub found_by: Option<String>,
    /// `accepted`, `already_linked`, `refused_conflict`, `refused_size`, `deterministic`
    /// (a deterministic rule's group holds both), `below_threshold`, `not_blocked` (no blocking rule put them together) or
    /// `not_allowed` (the link type never pairs these inputs).
    pub decision: String,
    /// Why, in a sentence.
    pub reason: String,
    /// Whether the records ended in one person (directly or through other records).
    pub same_person: bool,
}

/// Index of the record `id` of input `source`.
pub fn find(records: &Records, source: &str, id: &str) -> Option<usize> {
    (0..records.len()).find(|&r| records.source(r) == source && records.ids[r] == id)
}

fn rule(
    records: &Records,
    name: &str,
    attrs: &[usize],
    a: usize,
    b: usize,
    max_group: usize,
) -> Rule {
    let agrees = blocking::agree(records, attrs, a, b);
    let oversized_block = agrees
        .then(|| {
            let key: Vec<u32> = attrs.iter().map(|&x| records.attrs[x].values[a]).collect();
            let size = (0..records.len())
                .filter(|&r| {
                    attrs
                        .iter()
                        .zip(&key)
                        .all(|(&x, &v)| records.attrs[x].values[r] == v)
                })
                .count() as u64;
            (size > max_group as u64).then_some(size)
        })
        .flatten();
    Rule {
        name: name.to_string(),
        agrees,
        oversized_block,
    }
}

/// The explanation of records `a` and `b` from what `link` found.
pub fn explain(
    settings: &Settings,
    records: &Records,
    linked: &Linked,
    a: usize,
    b: usize,
) -> PairExplanation {
    let (lo, hi) = (a.min(b), a.max(b));
    let c = settings.comparisons.len();
    let max_group = settings.raw.guards.max_records_per_value;
    let candidate = linked
        .blocked
        .pairs
        .iter()
        .position(|&(x, y)| (x as usize, y as usize) == (lo, hi));
    let mut levels = vec![0u8; c];
    let mut weights = vec![0.0f64; c];
    let match_weight = match (candidate, &linked.model) {
        (Some(p), Some(_)) => {
            levels.copy_from_slice(&linked.levels[p * c..(p + 1) * c]);
            weights.copy_from_slice(&linked.weights[p * c..(p + 1) * c]);
            linked.match_weight[p]
        }
        (None, Some(model)) => {
            linked.cmp.levels(lo, hi, &mut levels);
            train::score(
                model,
                &linked.cmp,
                (lo as u32, hi as u32),
                &levels,
                &mut weights,
            )
        }
        (_, None) => 0.0,
    };
    let model = linked.model.as_ref();
    let terms = settings
        .comparisons
        .iter()
        .enumerate()
        .map(|(ci, comp)| {
            let l = levels[ci] as usize;
            Term {
                comparison: comp.name.clone(),
                level: comp.level_label(levels[ci]),
                weight: weights[ci],
                m: model.filter(|_| l > 0).map(|m| m.m[ci][l]),
                u: model.filter(|_| l > 0).map(|m| m.u[ci][l]),
            }
        })
        .collect();
    let blocking: Vec<Rule> = settings
        .blocking
        .iter()
        .map(|(name, attrs)| rule(records, name, attrs, lo, hi, max_group))
        .collect();
    let deterministic: Vec<Rule> = settings
        .deterministic
        .iter()
        .map(|(name, attrs)| rule(records, name, attrs, lo, hi, max_group))
        .collect();
    let found_by = candidate.map(|p| {
        settings.blocking[linked.blocked.rule_of[p] as usize]
            .0
            .clone()
    });
    let threshold = settings.raw.threshold;
    let probability = train::probability(match_weight);
    let allowed = settings
        .raw
        .link_type
        .allows(records.source_of[lo], records.source_of[hi]);
    let same_person = linked.clustering.cluster_of[lo] == linked.clustering.cluster_of[hi];
    let deterministic_edge = linked.edges[..linked.deterministic_edges]
        .iter()
        .zip(&linked.clustering.decisions)
        .find(|(e, _)| (e.a as usize, e.b as usize) == (lo, hi));
    let guard = |label: &str| match label {
        "accepted" => "linked",
        "already_linked" => "already one person through other records",
        "refused_conflict" => {
            "refused by the guard: the persons clearly disagree on an exclusive attribute"
        }
        _ => "refused by the guard: the person would pass max_cluster_size",
    };
    let (decision, reason) = if let Some((edge, d)) = deterministic_edge {
        let name = &settings.deterministic[edge.method.unwrap_or(0) as usize].0;
        (
            d.label().to_string(),
            format!(
                "deterministic rule `{name}` joins them: {}",
                guard(d.label())
            ),
        )
    } else if let Some(r) = deterministic
        .iter()
        .find(|r| r.agrees && r.oversized_block.is_none())
        .filter(|_| allowed)
    {
        let how = if same_person {
            "one person"
        } else {
            "yet not one person: a guard refused the link"
        };
        ("deterministic".into(), format!("deterministic rule `{}` groups them: linked through the group's first record, {how}", r.name))
    } else if !allowed {
        (
            "not_allowed".into(),
            format!(
                "link type {} never pairs these inputs",
                settings.raw.link_type.as_str()
            ),
        )
    } else if let Some(p) = candidate {
        match linked.above.iter().position(|&q| q == p) {
            Some(i) => {
                let d = linked.clustering.decisions[linked.deterministic_edges + i];
                (
                    d.label().to_string(),
                    format!("above the threshold: {}", guard(d.label())),
                )
            }
            None => (
                "below_threshold".into(),
                format!("probability {probability:.4} is below the threshold {threshold}"),
            ),
        }
    } else {
        let oversized: Vec<String> = blocking
            .iter()
            .filter_map(|r| {
                r.oversized_block
                    .map(|n| format!("`{}` ({n} records share the key)", r.name))
            })
            .collect();
        let why = if oversized.is_empty() {
            "not blocked together: no blocking rule's attributes all agree".to_string()
        } else {
            format!(
                "not blocked together: the blocks of {} pass max_records_per_value {max_group}",
                oversized.join(", ")
            )
        };
        ("not_blocked".into(), why)
    };
    PairExplanation {
        a: (records.source(a).to_string(), records.ids[a].clone()),
        b: (records.source(b).to_string(), records.ids[b].clone()),
        prior_weight: model.map(|m| m.prior_weight()).unwrap_or(0.0),
        prior: model.map(|m| m.lambda).unwrap_or(0.0),
        terms,
        match_weight,
        probability,
        threshold,
        blocking,
        deterministic,
        candidate: candidate.is_some(),
        found_by,
        decision,
        reason,
        same_person,
    }
}

/// Links `records` as a run does and explains the records `a` and `b` (source, id).
pub fn explain_pair(
    settings: &Settings,
    records: &Records,
    context: &super::Context,
    a: (&str, &str),
    b: (&str, &str),
) -> Result<PairExplanation, String> {
    let missing = |(source, id): (&str, &str)| {
        let mut sources: Vec<&str> = records.sources.iter().map(String::as_str).collect();
        sources.dedup();
        format!("no record `{id}` of source `{source}` among the identity step's {} records (sources: {})", records.len(), sources.join(", "))
    };
    let ia = find(records, a.0, a.1).ok_or_else(|| missing(a))?;
    let ib = find(records, b.0, b.1).ok_or_else(|| missing(b))?;
    if ia == ib {
        return Err(format!("{}:{} is named twice", a.0, a.1));
    }
    let mut timings = Vec::new();
    let mut lap = |_: &'static str, _: &mut Vec<(&'static str, u64)>| {};
    let linked = super::link(settings, records, context, &mut timings, &mut lap)?;
    Ok(explain(settings, records, &linked, ia, ib))
}
