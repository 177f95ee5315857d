//! The `with:` block of the `identity` step, read with serde and checked into the types the
//! matcher uses. Attribute names are the user's: nothing here knows the generator's columns.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Record sets to resolve: any tables of earlier steps.
    pub inputs: Vec<InputConfig>,
    /// Exact matches on strong keys, strongest first.
    #[serde(default)]
    pub deterministic: Vec<DeterministicConfig>,
    /// Fellegi-Sunter comparisons of the probabilistic model.
    #[serde(default)]
    pub comparisons: Vec<ComparisonConfig>,
    /// Blocking rules: records are compared only when they agree exactly on every attribute
    /// of at least one rule. A pair found by several rules is compared once.
    #[serde(default)]
    pub blocking: Vec<Vec<String>>,
    /// Match probability at or above which a compared pair is linked.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    #[serde(default)]
    pub guards: GuardsConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub survivorship: SurvivorshipConfig,
    /// Table with the previous run's identity map (source, source_record_id, customer_key),
    /// so that persons keep their keys. Empty or absent on a first run.
    pub previous: Option<String>,
    /// Table with the true person of each record (source, record_id, person_id); when set,
    /// pairwise precision, recall and F1 go into the quality table.
    pub ground_truth: Option<String>,
    /// Which compared pairs the `<name>_pairs` table keeps: none, accepted or all.
    #[serde(default)]
    pub keep_pairs: KeepPairs,
    /// Prefix of new customer keys.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Which pairs of records may be the same person, as Splink's link types:
    /// `link_and_dedupe` (any two records, the default), `dedupe_only` (two records of one
    /// input) or `link_only` (two records of different inputs).
    #[serde(default)]
    pub link_type: LinkType,
    /// Where candidate pairs are blocked, compared and scored: `client` (in this process,
    /// the fastest on one machine), `engine` (as query-engine work, which distributes on a
    /// cluster and spills on one machine), or `auto` (the engine on a cluster, this process
    /// otherwise). The results are the same.
    #[serde(default)]
    pub compare_on: CompareOn,
}

/// Where the identity step compares its candidate pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CompareOn {
    #[default]
    Auto,
    Client,
    Engine,
}

/// Which record pairs are compared, linked and counted in the prior.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkType {
    #[default]
    LinkAndDedupe,
    DedupeOnly,
    LinkOnly,
}

impl LinkType {
    /// Whether a record of input `a` and one of input `b` form a pair.
    pub fn allows(self, a: u16, b: u16) -> bool {
        match self {
            Self::LinkAndDedupe => true,
            Self::DedupeOnly => a == b,
            Self::LinkOnly => a != b,
        }
    }

    /// The number of record pairs of this link type, for inputs of `sizes` records: the
    /// denominator of the prior.
    pub fn possible_pairs(self, sizes: &[u64]) -> f64 {
        let within: f64 = sizes
            .iter()
            .map(|&n| n as f64 * n.saturating_sub(1) as f64 / 2.0)
            .sum();
        let n: f64 = sizes.iter().map(|&n| n as f64).sum();
        let all = n * (n - 1.0).max(0.0) / 2.0;
        match self {
            Self::LinkAndDedupe => all,
            Self::DedupeOnly => within,
            Self::LinkOnly => all - within,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LinkAndDedupe => "link_and_dedupe",
            Self::DedupeOnly => "dedupe_only",
            Self::LinkOnly => "link_only",
        }
    }
}

fn default_threshold() -> f64 {
    0.95
}

fn default_key_prefix() -> String {
    "K".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub table: String,
    /// Name of the source in the outputs, e.g. `erp_customers`.
    pub source: String,
    /// Column with the record's id in its source.
    pub id: String,
    /// Higher is more trusted, for survivorship.
    #[serde(default)]
    pub trust: i32,
    /// Column with the record's last change (date or timestamp), for `most_recent`.
    pub updated_at: Option<String>,
    /// Identity attribute -> column of this table.
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeterministicConfig {
    pub name: Option<String>,
    /// Records with equal, non-null values of all these attributes are the same person.
    pub attributes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComparisonConfig {
    pub name: String,
    pub attribute: String,
    /// Levels from the strongest agreement down; a null on either side and "else" (none of
    /// them) are added.
    pub levels: Vec<serde_yaml::Value>,
    /// Exact agreement on a common value says less: weigh it by the value's frequency.
    #[serde(default)]
    pub term_frequency: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardsConfig {
    /// Values that are never evidence (a shop's phone, `test@%`): matched exactly, or as SQL
    /// LIKE patterns with `%`. Compared after the input table's own normalisation.
    #[serde(default)]
    pub ignore_values: BTreeMap<String, Vec<String>>,
    /// A key value (deterministic rule or blocking rule) shared by more records than this is
    /// not used: it would join unrelated persons. Reported in the quality table.
    #[serde(default = "default_max_records_per_value")]
    pub max_records_per_value: usize,
    /// Largest cluster: links that would grow a cluster past it are refused, weakest first,
    /// and the cluster is flagged.
    #[serde(default = "default_max_cluster_size")]
    pub max_cluster_size: usize,
    /// Comparisons on which two clusters must not clearly disagree (fall to "else") to be
    /// joined, e.g. first name and birth date: stops a shared household e-mail from merging
    /// two people.
    #[serde(default)]
    pub exclusive: Vec<String>,
}

impl Default for GuardsConfig {
    fn default() -> Self {
        Self {
            ignore_values: BTreeMap::new(),
            max_records_per_value: default_max_records_per_value(),
            max_cluster_size: default_max_cluster_size(),
            exclusive: Vec::new(),
        }
    }
}

fn default_max_records_per_value() -> usize {
    50
}

fn default_max_cluster_size() -> usize {
    50
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Random record pairs drawn to estimate the u probabilities.
    #[serde(default = "default_u_pairs")]
    pub u_sample_pairs: usize,
    #[serde(default = "default_em_iterations")]
    pub em_max_iterations: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Probability that two records drawn at random are the same person (the model's prior).
    /// When absent it is estimated as Splink does: pairs the deterministic rules join, divided
    /// by `deterministic_recall`, over all record pairs.
    pub prior: Option<f64>,
    /// Share of all true matching pairs the deterministic rules are assumed to find.
    #[serde(default = "default_deterministic_recall")]
    pub deterministic_recall: f64,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            u_sample_pairs: default_u_pairs(),
            em_max_iterations: default_em_iterations(),
            seed: default_seed(),
            prior: None,
            deterministic_recall: default_deterministic_recall(),
        }
    }
}

fn default_deterministic_recall() -> f64 {
    0.8
}

fn default_u_pairs() -> usize {
    1_000_000
}

fn default_em_iterations() -> usize {
    200
}

fn default_seed() -> u64 {
    42
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Survivorship {
    MostRecent,
    #[default]
    MostTrusted,
    MostFrequent,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SurvivorshipConfig {
    #[serde(default)]
    pub default: Survivorship,
    /// Attribute -> rule, for the attributes that differ from the default.
    #[serde(default)]
    pub rules: BTreeMap<String, Survivorship>,
    /// Attributes of the golden record (default: every attribute).
    pub attributes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeepPairs {
    None,
    #[default]
    Accepted,
    All,
}

/// One agreement level of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Level {
    Exact,
    JaroWinkler(f64),
    Levenshtein(usize),
    DamerauLevenshtein(usize),
    TokenSet(f64),
    /// Double Metaphone codes agree (primary or alternate).
    Metaphone,
    /// This attribute equals the other record's `other` and vice versa (swapped names).
    Swapped(String),
}

impl Level {
    pub fn label(&self) -> String {
        match self {
            Level::Exact => "exact".into(),
            Level::JaroWinkler(t) => format!("jaro_winkler>={t}"),
            Level::Levenshtein(k) => format!("levenshtein<={k}"),
            Level::DamerauLevenshtein(k) => format!("damerau_levenshtein<={k}"),
            Level::TokenSet(t) => format!("token_set>={t}"),
            Level::Metaphone => "metaphone".into(),
            Level::Swapped(o) => format!("swapped_with_{o}"),
        }
    }

    fn parse(v: &serde_yaml::Value) -> Result<Level, String> {
        let expected =
            "a level is `exact`, `metaphone` or one of {jaro_winkler: 0..1}, {levenshtein: N}, \
                        {damerau_levenshtein: N}, {token_set: 0..1}, {swapped: attribute}";
        if let Some(s) = v.as_str() {
            return match s {
                "exact" => Ok(Level::Exact),
                "metaphone" => Ok(Level::Metaphone),
                other => Err(format!("unknown level `{other}`: {expected}")),
            };
        }
        let Some(map) = v.as_mapping().filter(|m| m.len() == 1) else {
            return Err(expected.into());
        };
        let (k, val) = map.iter().next().expect("one entry");
        let key = k.as_str().unwrap_or_default();
        let threshold = || {
            val.as_f64()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| format!("`{key}` needs a number in 0..1"))
        };
        let edits = || {
            val.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| format!("`{key}` needs a whole number of edits"))
        };
        match key {
            "jaro_winkler" => Ok(Level::JaroWinkler(threshold()?)),
            "token_set" => Ok(Level::TokenSet(threshold()?)),
            "levenshtein" => Ok(Level::Levenshtein(edits()?)),
            "damerau_levenshtein" => Ok(Level::DamerauLevenshtein(edits()?)),
            "swapped" => Ok(Level::Swapped(
                val.as_str()
                    .ok_or_else(|| "`swapped` needs an attribute name".to_string())?
                    .to_string(),
            )),
            other => Err(format!("unknown level `{other}`: {expected}")),
        }
    }
}

/// A comparison ready to use: levels parsed, attributes resolved to indexes.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub name: String,
    pub attribute: usize,
    pub levels: Vec<Level>,
    /// Attribute index of each `Swapped` level (same order as `levels`).
    pub swapped_with: Vec<Option<usize>>,
    pub term_frequency: bool,
}

impl Comparison {
    /// Level codes: 0 = null on either side, 1..=n the configured levels, n + 1 = else.
    pub fn level_count(&self) -> usize {
        self.levels.len() + 2
    }

    /// Whether exact agreement (its first level) weighs by the value's frequency.
    pub fn weighs_by_frequency(&self) -> bool {
        self.term_frequency && self.levels.first() == Some(&Level::Exact)
    }

    pub fn else_level(&self) -> u8 {
        (self.levels.len() + 1) as u8
    }

    pub fn level_label(&self, code: u8) -> String {
        match code as usize {
            0 => "null".into(),
            c if c <= self.levels.len() => self.levels[c - 1].label(),
            _ => "else".into(),
        }
    }
}

/// The checked configuration.
#[derive(Debug)]
pub struct Settings {
    pub raw: IdentityConfig,
    /// Every attribute named by any input, sorted.
    pub attributes: Vec<String>,
    pub comparisons: Vec<Comparison>,
    /// Deterministic rules as (name, attribute indexes).
    pub deterministic: Vec<(String, Vec<usize>)>,
    pub blocking: Vec<(String, Vec<usize>)>,
    pub exclusive: Vec<usize>,
    pub golden: Vec<(usize, Survivorship)>,
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl IdentityConfig {
    /// Checks names and numbers, reporting every problem at once.
    pub fn check(self) -> Result<Settings, String> {
        let mut problems = Vec::new();
        if self.inputs.is_empty() {
            problems.push("`inputs` names no table".to_string());
        }
        let mut attributes = BTreeSet::new();
        let mut sources = BTreeSet::new();
        for input in &self.inputs {
            if !sources.insert(input.source.clone()) {
                problems.push(format!("source `{}` is named by two inputs", input.source));
            }
            if input.attributes.is_empty() {
                problems.push(format!("input `{}` maps no attributes", input.table));
            }
            for a in input.attributes.keys() {
                if !is_identifier(a) {
                    problems.push(format!("attribute `{a}` must be a lower-case identifier"));
                }
                attributes.insert(a.clone());
            }
        }
        let attributes: Vec<String> = attributes.into_iter().collect();
        let index = |a: &str, what: &str, problems: &mut Vec<String>| -> Option<usize> {
            let found = attributes.iter().position(|x| x == a);
            if found.is_none() {
                problems.push(format!(
                    "{what} names attribute `{a}`, which no input maps (attributes: {})",
                    attributes.join(", ")
                ));
            }
            found
        };
        let mut comparisons = Vec::new();
        for c in &self.comparisons {
            let attribute = index(
                &c.attribute,
                &format!("comparison `{}`", c.name),
                &mut problems,
            );
            let mut levels = Vec::new();
            let mut swapped_with = Vec::new();
            for l in &c.levels {
                match Level::parse(l) {
                    Ok(level) => {
                        swapped_with.push(match &level {
                            Level::Swapped(o) => {
                                index(o, &format!("comparison `{}`", c.name), &mut problems)
                            }
                            _ => None,
                        });
                        levels.push(level);
                    }
                    Err(e) => problems.push(format!("comparison `{}`: {e}", c.name)),
                }
            }
            if c.levels.is_empty() {
                problems.push(format!("comparison `{}` has no levels", c.name));
            }
            if levels.len() > 12 {
                problems.push(format!("comparison `{}` has more than 12 levels", c.name));
            }
            if comparisons.iter().any(|x: &Comparison| x.name == c.name) {
                problems.push(format!("two comparisons are named `{}`", c.name));
            }
            if let Some(attribute) = attribute {
                comparisons.push(Comparison {
                    name: c.name.clone(),
                    attribute,
                    levels,
                    swapped_with,
                    term_frequency: c.term_frequency,
                });
            }
        }
        let rules =
            |list: Vec<(Option<String>, &Vec<String>)>, what: &str, problems: &mut Vec<String>| {
                let mut out = Vec::new();
                for (name, attrs) in list {
                    if attrs.is_empty() {
                        problems.push(format!("a {what} rule names no attribute"));
                        continue;
                    }
                    if let Some(twice) = attrs
                        .iter()
                        .enumerate()
                        .find(|(i, a)| attrs[..*i].contains(a))
                        .map(|(_, a)| a)
                    {
                        problems.push(format!("a {what} rule names `{twice}` twice"));
                        continue;
                    }
                    let idx: Vec<usize> = attrs
                        .iter()
                        .filter_map(|a| index(a, &format!("{what} rule"), problems))
                        .collect();
                    if idx.len() == attrs.len() {
                        out.push((name.unwrap_or_else(|| attrs.join("+")), idx));
                    }
                }
                out
            };
        let deterministic = rules(
            self.deterministic
                .iter()
                .map(|d| (d.name.clone(), &d.attributes))
                .collect(),
            "deterministic",
            &mut problems,
        );
        let blocking = rules(
            self.blocking.iter().map(|b| (None, b)).collect(),
            "blocking",
            &mut problems,
        );
        if !self.comparisons.is_empty() && self.blocking.is_empty() {
            problems.push(
                "comparisons need at least one blocking rule: all pairs are never compared".into(),
            );
        }
        if self.link_type == LinkType::LinkOnly && self.inputs.len() < 2 {
            problems.push("`link_type: link_only` links records of different inputs: name at least two inputs".into());
        }
        if blocking.len() > 250 {
            problems.push("at most 250 blocking rules".into());
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            problems.push(format!(
                "threshold must be a probability strictly between 0 and 1, got {}",
                self.threshold
            ));
        }
        if self.guards.max_cluster_size < 2 {
            problems.push("guards.max_cluster_size must be at least 2".into());
        }
        if self.guards.max_records_per_value < 2 {
            problems.push("guards.max_records_per_value must be at least 2".into());
        }
        for a in self.guards.ignore_values.keys() {
            index(a, "guards.ignore_values", &mut problems);
        }
        let mut exclusive = Vec::new();
        for name in &self.guards.exclusive {
            match comparisons.iter().position(|c| &c.name == name) {
                Some(i) => exclusive.push(i),
                None => problems.push(format!(
                    "guards.exclusive names `{name}`, which is not a comparison"
                )),
            }
        }
        let golden_attrs = self
            .survivorship
            .attributes
            .clone()
            .unwrap_or_else(|| attributes.clone());
        let mut golden = Vec::new();
        for a in &golden_attrs {
            if let Some(i) = index(a, "survivorship", &mut problems) {
                golden.push((
                    i,
                    self.survivorship
                        .rules
                        .get(a)
                        .copied()
                        .unwrap_or(self.survivorship.default),
                ));
            }
        }
        for a in self.survivorship.rules.keys() {
            index(a, "survivorship.rules", &mut problems);
        }
        if let Some(p) = self.training.prior {
            if !(p > 0.0 && p < 1.0) {
                problems.push(format!(
                    "training.prior must be a probability strictly between 0 and 1, got {p}"
                ));
            }
        }
        if !(self.training.deterministic_recall > 0.0 && self.training.deterministic_recall <= 1.0)
        {
            problems.push("training.deterministic_recall must be in (0, 1]".into());
        }
        if self.training.prior.is_none()
            && self.deterministic.is_empty()
            && !self.comparisons.is_empty()
        {
            problems.push("without deterministic rules the model's prior cannot be estimated: set training.prior".into());
        }
        if self.training.u_sample_pairs == 0 && !self.comparisons.is_empty() {
            problems.push("training.u_sample_pairs must be positive".into());
        }
        if self.key_prefix.is_empty()
            || !self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.push("key_prefix must be letters, digits, `_` or `-`".into());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Settings {
            raw: self,
            attributes,
            comparisons,
            deterministic,
            blocking,
            exclusive,
            golden,
        })
    }
}
