//! Running part of a pipeline: `run --select mart_rfm+ --exclude mart_cx --defer`.
//!
//! Selectors are dbt's graph operators over the pipeline's steps: `name` (the step),
//! `name+` (it and every step that reads it, directly or not), `+name` (it and every step
//! it reads), `+name+` (both); a source's name with a trailing `+` selects the steps that
//! read it. The selected steps run and only the selected marts are published. The tables
//! they read from outside the selection are computed as well, but not published, unless
//! the run defers: then a table outside the selection that is published (or whose step
//! names a published mart in `defer_to`) is read from the version readers see now, and
//! neither it nor what it reads is computed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::pipeline::{Pipeline, StepKind};

/// What the command line asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    pub defer: bool,
}

impl Selection {
    /// Whether anything narrows the run.
    pub fn is_partial(&self) -> bool {
        !self.select.is_empty() || !self.exclude.is_empty()
    }
}

/// The steps a selection runs, the marts it publishes, the tables it reads from published
/// marts and the sources it loads.
#[derive(Debug, Clone, Default)]
pub struct RunPlan {
    pub selection: Selection,
    /// Every step that runs: the selected ones and what they need that is not deferred.
    pub steps: BTreeSet<String>,
    /// Selected steps.
    pub selected: BTreeSet<String>,
    /// Table read from the published mart of the same or another name.
    pub deferred: BTreeMap<String, String>,
    pub sources: BTreeSet<String>,
}

/// The manifest's record of a selection.
#[derive(Debug, Clone, Serialize)]
pub struct SelectionReport {
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    pub defer: bool,
    /// Steps selected, in run order.
    pub selected: Vec<String>,
    /// Steps run because a selected step reads them; their marts are not published.
    pub upstream: Vec<String>,
    pub deferred: Vec<DeferredTable>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeferredTable {
    pub table: String,
    pub mart: String,
    /// The run id of the mart version read.
    pub version: String,
    pub url: String,
    /// Parameters whose value in the run that built the version differs from this run's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parameters_differ: Vec<String>,
}

impl RunPlan {
    pub fn runs(&self, step: &str) -> bool {
        self.steps.contains(step)
    }

    pub fn publishes(&self, step: &str) -> bool {
        self.selected.contains(step)
    }

    pub fn report(&self, pipeline: &Pipeline, deferred: Vec<DeferredTable>) -> SelectionReport {
        let in_order = |set: &BTreeSet<String>| {
            pipeline
                .steps
                .iter()
                .filter(|s| set.contains(&s.name))
                .map(|s| s.name.clone())
                .collect()
        };
        let upstream: BTreeSet<String> = self.steps.difference(&self.selected).cloned().collect();
        SelectionReport {
            select: self.selection.select.clone(),
            exclude: self.selection.exclude.clone(),
            defer: self.selection.defer,
            selected: in_order(&self.selected),
            upstream: in_order(&upstream),
            deferred,
        }
    }
}

/// The tables a step reads, as written in its SQL or configuration (a built-in step's
/// extra tables by their own names).
fn reads(step: &crate::config::pipeline::Step) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = step.depends_on.iter().cloned().collect();
    match &step.kind {
        StepKind::Sql(model) => out.extend(model.references.iter().map(|r| r.name.clone())),
        StepKind::Builtin { step: builtin, .. } => out.extend(builtin.inputs()),
    }
    out
}

/// Resolves `selection` on `pipeline`. Unknown names and a selection of nothing are
/// configuration errors at the pipeline file.
pub fn plan(pipeline: &Pipeline, selection: &Selection) -> Result<RunPlan, Diagnostics> {
    let steps: BTreeMap<&str, &crate::config::pipeline::Step> = pipeline
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let sources: BTreeSet<&str> = pipeline.sources.iter().map(|s| s.name.as_str()).collect();
    // Table -> the step that creates it (a built-in step's extra tables included).
    let mut producer: BTreeMap<String, &str> = BTreeMap::new();
    for s in &pipeline.steps {
        producer.insert(s.name.clone(), s.name.as_str());
        for extra in &s.extra_outputs {
            producer.insert(extra.clone(), s.name.as_str());
        }
    }
    let parents = |name: &str| -> Vec<String> {
        steps[name]
            .depends_on
            .iter()
            .filter_map(|d| producer.get(d).copied())
            .filter(|p| *p != name)
            .map(String::from)
            .collect()
    };
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &pipeline.steps {
        for p in parents(&s.name) {
            children.entry(p).or_default().push(s.name.clone());
        }
    }
    let closure = |start: Vec<String>, next: &dyn Fn(&str) -> Vec<String>| -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut stack = start;
        while let Some(n) = stack.pop() {
            if !seen.contains(&n) {
                stack.extend(next(&n));
                seen.insert(n);
            }
        }
        seen
    };
    let known: BTreeSet<String> = steps
        .keys()
        .map(|s| s.to_string())
        .chain(sources.iter().map(|s| s.to_string()))
        .collect();
    let mut diags = Diagnostics::default();
    let mut resolve = |selector: &str, flag: &str| -> BTreeSet<String> {
        let ancestors = selector.starts_with('+');
        let descendants = selector.ends_with('+') && selector.len() > 1;
        let name = selector.trim_start_matches('+').trim_end_matches('+');
        let start: Vec<String> = if let Some(p) = producer.get(name) {
            vec![p.to_string()]
        } else if sources.contains(name) {
            if !descendants || ancestors {
                diags.push(Diagnostic::new(
                    &pipeline.file,
                    format!("{flag} {selector}: `{name}` is a source, not a step; `{name}+` selects the steps that read it"),
                ));
                return BTreeSet::new();
            }
            pipeline
                .steps
                .iter()
                .filter(|s| s.depends_on.iter().any(|d| d == name))
                .map(|s| s.name.clone())
                .collect()
        } else {
            let hint = crate::config::pipeline::closest_hint(name, &known);
            diags.push(Diagnostic::new(
                &pipeline.file,
                format!("{flag} {selector}: no step or source `{name}` in the pipeline{hint}"),
            ));
            return BTreeSet::new();
        };
        let mut out: BTreeSet<String> = start.iter().cloned().collect();
        if ancestors {
            out.extend(closure(start.clone(), &|n| parents(n)));
        }
        if descendants {
            out.extend(closure(start, &|n| {
                children.get(n).cloned().unwrap_or_default()
            }));
        }
        out
    };
    let mut selected: BTreeSet<String> = if selection.select.is_empty() {
        steps.keys().map(|s| s.to_string()).collect()
    } else {
        selection
            .select
            .iter()
            .flat_map(|s| resolve(s, "--select"))
            .collect()
    };
    for s in &selection.exclude {
        for n in resolve(s, "--exclude") {
            selected.remove(&n);
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    if selected.is_empty() {
        return Err(Diagnostics(vec![Diagnostic::new(
            &pipeline.file,
            "the selection (--select, --exclude) leaves no step to run",
        )]));
    }

    // What the selected steps need: computed, or read from a published mart.
    let mut run = selected.clone();
    let mut deferred: BTreeMap<String, String> = BTreeMap::new();
    let mut needed_sources: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = selected.iter().cloned().collect();
    while let Some(name) = stack.pop() {
        let step = steps[name.as_str()];
        // Which tables of each producer this step reads.
        let mut by_producer: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for table in reads(step) {
            if sources.contains(table.as_str()) {
                needed_sources.insert(table);
            } else if let Some(p) = producer.get(&table) {
                if *p != name {
                    by_producer.entry(*p).or_default().insert(table);
                }
            }
        }
        for (p, tables) in by_producer {
            if run.contains(p) {
                continue;
            }
            let producer_step = steps[p];
            // Only the step's own table has a published stand-in, never its extra tables.
            let only_main = tables.iter().all(|t| t == p);
            let stand_in = match (&producer_step.publish, &producer_step.defer_to) {
                (Some(sink), _) if sink.partition_by.is_empty() => Some(p.to_string()),
                (_, Some(mart)) => Some(mart.clone()),
                _ => None,
            };
            match stand_in.filter(|_| selection.defer && only_main) {
                Some(mart) => {
                    deferred.insert(p.to_string(), mart);
                }
                None => {
                    run.insert(p.to_string());
                    stack.push(p.to_string());
                }
            }
        }
    }
    // A table both deferred (for one reader) and computed (for another) is computed.
    deferred.retain(|t, _| !run.contains(t));
    Ok(RunPlan {
        selection: selection.clone(),
        steps: run,
        selected,
        deferred,
        sources: needed_sources,
    })
}

#[cfg(test)]
mod tests {
    use super::{plan, Selection};
    use crate::config::pipeline::Pipeline;

    fn pipeline() -> Pipeline {
        Pipeline::load(std::path::Path::new("pipelines/customer_marts.yaml"), None)
            .expect("the shipped pipeline loads")
    }

    fn select(select: &[&str], exclude: &[&str], defer: bool) -> Selection {
        Selection {
            select: select.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            defer,
        }
    }

    fn has(set: &std::collections::BTreeSet<String>, names: &[&str]) -> bool {
        names.iter().all(|n| set.contains(*n))
    }

    #[test]
    fn ancestors_descendants_several_selectors_and_exclusions() {
        let p = pipeline();
        // +mart_rfm: it and everything it reads, through identity down to staging.
        let up = plan(&p, &select(&["+mart_rfm"], &[], false)).unwrap();
        assert!(
            has(
                &up.selected,
                &[
                    "mart_rfm",
                    "int_order_values",
                    "stg_orders",
                    "stg_order_lines",
                    "int_erp_keys",
                    "identity",
                    "int_identity_erp"
                ]
            ),
            "{:?}",
            up.selected
        );
        assert!(
            !up.selected.contains("mart_abc") && !up.selected.contains("mart_lifecycle"),
            "{:?}",
            up.selected
        );
        assert!(
            up.sources.contains("erp_orders")
                && up.sources.contains("rfm_segments")
                && !up.sources.contains("loyalty_survey_answers")
        );

        // mart_abc+: it and what reads it, nothing it reads.
        let down = plan(&p, &select(&["mart_abc+"], &[], false)).unwrap();
        assert!(
            has(&down.selected, &["mart_abc", "mart_abc_summary"]),
            "{:?}",
            down.selected
        );
        assert!(!down.selected.contains("int_order_values") && !down.selected.contains("mart_rfm"));
        // What it reads runs, unpublished.
        assert!(down.runs("int_order_values") && !down.publishes("int_order_values"));

        // Several selectors: the union; nothing else is published.
        let two = plan(&p, &select(&["mart_abc", "mart_rfm"], &[], false)).unwrap();
        assert_eq!(
            two.selected.iter().map(String::as_str).collect::<Vec<_>>(),
            ["mart_abc", "mart_rfm"]
        );
        assert!(two.runs("identity") && two.deferred.is_empty());

        // --exclude takes selectors away from the selection.
        let less = plan(&p, &select(&["mart_abc+"], &["mart_abc_summary"], false)).unwrap();
        assert!(less.selected.contains("mart_abc") && !less.selected.contains("mart_abc_summary"));
        let none_of_rfm = plan(&p, &select(&[], &["mart_rfm+"], false)).unwrap();
        assert!(
            !none_of_rfm.selected.contains("mart_rfm")
                && !none_of_rfm.selected.contains("mart_winback")
        );
        assert!(none_of_rfm.selected.contains("mart_abc"));

        // A source with `+`: the steps that read it, and what reads those.
        let returns = plan(&p, &select(&["erp_returns+"], &[], false)).unwrap();
        assert!(
            has(
                &returns.selected,
                &["stg_returns", "int_refunds", "mart_lifecycle"]
            ),
            "{:?}",
            returns.selected
        );
        assert!(!returns.selected.contains("stg_orders"));
    }

    #[test]
    fn deferring_reads_identity_from_its_published_map() {
        let p = pipeline();
        let run = plan(&p, &select(&["mart_rfm+"], &[], true)).unwrap();
        // int_erp_keys is a view nobody publishes: it runs, reading identity from the map.
        assert_eq!(
            run.deferred.get("identity").map(String::as_str),
            Some("mart_identity_map")
        );
        assert!(!run.runs("identity") && !run.runs("int_identity_erp") && run.runs("int_erp_keys"));
        // A published mart outside the selection is read, not computed.
        let winback = plan(&p, &select(&["mart_winback"], &[], true)).unwrap();
        assert!(
            winback.deferred.contains_key("mart_rfm")
                && winback.deferred.contains_key("mart_lifecycle"),
            "{:?}",
            winback.deferred
        );
        assert!(!winback.runs("mart_rfm"));
    }

    #[test]
    fn mistakes_are_named() {
        let p = pipeline();
        let typo = plan(&p, &select(&["mart_rmf+"], &[], false))
            .unwrap_err()
            .to_string();
        assert!(
            typo.contains("--select mart_rmf+: no step or source `mart_rmf`")
                && typo.contains("mart_rfm"),
            "{typo}"
        );
        let source = plan(&p, &select(&["+erp_orders"], &[], false))
            .unwrap_err()
            .to_string();
        assert!(
            source.contains("`erp_orders` is a source, not a step"),
            "{source}"
        );
        let nothing = plan(&p, &select(&["mart_abc"], &["mart_abc"], false))
            .unwrap_err()
            .to_string();
        assert!(nothing.contains("leaves no step to run"), "{nothing}");
    }
}
