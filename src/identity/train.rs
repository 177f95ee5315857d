//! Fellegi-Sunter parameters without labels, as Splink estimates them: u (how often two
//! different persons agree at each level) from random record pairs, m (how often the same
//! person does) by expectation-maximisation on the blocked pairs. EM runs once per blocking
//! rule with the comparisons of that rule left out, since inside its blocks they agree by
//! construction; each m is the mean of the sessions that estimated it.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::blocking::{agree, Blocked};
use super::compare::Comparator;
use super::config::{Comparison, LinkType};

/// Agreement patterns of a pair set: level codes -> number of pairs. Ordered, so that EM
/// adds the patterns' masses in the same order in every process.
pub type Patterns = BTreeMap<Vec<u8>, u64>;

#[derive(Debug, Clone)]
pub struct EmSession {
    pub rule: String,
    pub pairs: u64,
    pub iterations: usize,
    pub converged: bool,
    pub lambda: f64,
}

#[derive(Debug, Clone)]
pub struct Model {
    /// Prior: probability that two random records are the same person.
    pub lambda: f64,
    /// Share of matches among the candidate pairs, as EM estimated it (a diagnostic).
    pub lambda_candidates: f64,
    /// Per comparison, per level code (code 0, null, unused).
    pub m: Vec<Vec<f64>>,
    pub u: Vec<Vec<f64>>,
    /// Per comparison with term-frequency adjustment: frequency of each distinct value.
    pub tf: Vec<Option<Vec<f64>>>,
    pub sessions: Vec<EmSession>,
    pub u_pairs: u64,
}

pub const FLOOR: f64 = 1e-6;

impl Model {
    /// Weight (log2 Bayes factor) of one comparison's level; with term frequencies, exact
    /// agreement on value `value` weighs log2(m / tf(value)).
    pub fn weight(&self, comparisons: &[Comparison], c: usize, level: u8, value: u32) -> f64 {
        if level == 0 {
            return 0.0;
        }
        let m = self.m[c][level as usize];
        if level == 1 && comparisons[c].weighs_by_frequency() {
            if let Some(tf) = &self.tf[c] {
                let f = tf[value as usize].max(FLOOR);
                return (m / f).log2();
            }
        }
        (m / self.u[c][level as usize]).log2()
    }

    pub fn prior_weight(&self) -> f64 {
        (self.lambda / (1.0 - self.lambda)).log2()
    }
}

pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

/// u probabilities from `pairs` random record pairs of the link type, each pair of the
/// type equally likely, and the number of pairs drawn (zero when the type allows none).
pub fn estimate_u(
    cmp: &Comparator,
    pairs: usize,
    seed: u64,
    link: LinkType,
) -> (Vec<Vec<f64>>, u64) {
    let n = cmp.records.len();
    let mut counts: Vec<Vec<u64>> = cmp
        .comparisons
        .iter()
        .map(|c| vec![0; c.level_count()])
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sampler = PairSampler::new(&cmp.records.source_of, link);
    let mut sampled = 0u64;
    if n >= 2 && sampler.total > 0 {
        // The pairs are drawn in one sequence, then compared on every core: the counts are
        // sums, so they do not depend on how the work was split.
        let drawn: Vec<(u32, u32)> = (0..pairs)
            .map(|_| {
                let (a, b) = sampler.draw(&mut rng);
                (a as u32, b as u32)
            })
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .clamp(1, 16);
        let chunk = drawn.len().div_ceil(threads).max(1);
        let partials: Vec<Vec<Vec<u64>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = drawn
                .chunks(chunk)
                .map(|part| {
                    let mut local: Vec<Vec<u64>> = counts.clone();
                    scope.spawn(move || {
                        for &(a, b) in part {
                            for (c, count) in local.iter_mut().enumerate() {
                                count[cmp.level(c, a as usize, b as usize) as usize] += 1;
                            }
                        }
                        local
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a u-sampling thread panicked"))
                .collect()
        });
        for partial in partials {
            for (count, part) in counts.iter_mut().zip(partial) {
                for (total, p) in count.iter_mut().zip(part) {
                    *total += p;
                }
            }
        }
        sampled = drawn.len() as u64;
    }
    let u = counts
        .iter()
        .map(|count| {
            let levels = count.len() - 1;
            let total: u64 = count[1..].iter().sum();
            let mut u = vec![0.0; count.len()];
            for l in 1..count.len() {
                u[l] = ((count[l] as f64 + 0.5) / (total as f64 + 0.5 * levels as f64)).max(FLOOR);
            }
            u
        })
        .collect();
    (u, sampled)
}

/// Draws record pairs uniformly among the pairs a link type allows.
///
/// For `link_and_dedupe`, two distinct records. For `dedupe_only`, an input chosen with
/// weight n_i (n_i - 1), then two distinct records of it. For `link_only`, an input chosen
/// with weight n_i (n - n_i), a record of it, and a record of any other input. Each
/// allowed unordered pair then has the same chance.
struct PairSampler {
    link: LinkType,
    n: usize,
    /// Record indices by input.
    by_input: Vec<Vec<usize>>,
    /// Records not in each input, for `link_only`.
    outside: Vec<Vec<usize>>,
    /// Cumulative input weights.
    cumulative: Vec<u64>,
    total: u64,
}

impl PairSampler {
    fn new(source_of: &[u16], link: LinkType) -> Self {
        let n = source_of.len();
        let inputs = source_of.iter().map(|&s| s as usize + 1).max().unwrap_or(0);
        let mut by_input = vec![Vec::new(); inputs];
        for (r, &s) in source_of.iter().enumerate() {
            by_input[s as usize].push(r);
        }
        let outside = match link {
            LinkType::LinkOnly => (0..inputs)
                .map(|i| (0..n).filter(|&r| source_of[r] as usize != i).collect())
                .collect(),
            _ => Vec::new(),
        };
        let weight = |size: usize| -> u64 {
            let size = size as u64;
            match link {
                LinkType::LinkAndDedupe => 0,
                LinkType::DedupeOnly => size * size.saturating_sub(1),
                LinkType::LinkOnly => size * (n as u64 - size),
            }
        };
        let mut cumulative = Vec::with_capacity(inputs);
        let mut total = 0u64;
        for members in &by_input {
            total += weight(members.len());
            cumulative.push(total);
        }
        if link == LinkType::LinkAndDedupe {
            total = (n as u64) * (n as u64).saturating_sub(1);
        }
        Self {
            link,
            n,
            by_input,
            outside,
            cumulative,
            total,
        }
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> (usize, usize) {
        let distinct = |rng: &mut ChaCha8Rng, len: usize| {
            let a = rng.random_range(0..len);
            let mut b = rng.random_range(0..len - 1);
            if b >= a {
                b += 1;
            }
            (a, b)
        };
        if self.link == LinkType::LinkAndDedupe {
            return distinct(rng, self.n);
        }
        let at = rng.random_range(0..self.total);
        let input = self.cumulative.partition_point(|&c| c <= at);
        let members = &self.by_input[input];
        match self.link {
            LinkType::DedupeOnly => {
                let (a, b) = distinct(rng, members.len());
                (members[a], members[b])
            }
            _ => {
                let others = &self.outside[input];
                (
                    members[rng.random_range(0..members.len())],
                    others[rng.random_range(0..others.len())],
                )
            }
        }
    }
}
/// Pattern counts of the pairs for which `keep` holds.
pub fn patterns(
    cmp: &Comparator,
    blocked: &Blocked,
    levels: &[u8],
    keep: impl Fn(usize) -> bool,
) -> Patterns {
    let c = cmp.comparisons.len();
    let mut out = Patterns::new();
    for p in 0..blocked.pairs.len() {
        if keep(p) {
            *out.entry(levels[p * c..(p + 1) * c].to_vec()).or_default() += 1;
        }
    }
    out
}

fn initial_m(c: &Comparison) -> Vec<f64> {
    let n = c.level_count();
    let mut m = vec![0.0; n];
    let rest = n - 2;
    m[1] = 0.8;
    for v in m.iter_mut().skip(2) {
        *v = 0.2 / rest as f64;
    }
    m
}

/// EM over `patterns` with u fixed; comparisons not `active` are ignored. Returns m, lambda,
/// iterations and convergence.
fn em(
    patterns: &Patterns,
    comparisons: &[Comparison],
    u: &[Vec<f64>],
    active: &[bool],
    start_m: &[Vec<f64>],
    max_iterations: usize,
    update_m: bool,
) -> (Vec<Vec<f64>>, f64, usize, bool) {
    let mut m: Vec<Vec<f64>> = start_m.to_vec();
    let mut lambda = 0.3;
    let total: u64 = patterns.values().sum();
    if total == 0 {
        return (m, lambda, 0, false);
    }
    for iteration in 1..=max_iterations {
        let mut acc: Vec<Vec<f64>> = comparisons
            .iter()
            .map(|c| vec![0.0; c.level_count()])
            .collect();
        let mut matched = 0.0;
        for (pattern, &count) in patterns {
            let mut lm = lambda.ln();
            let mut lu = (1.0 - lambda).ln();
            for (c, &l) in pattern.iter().enumerate() {
                if l != 0 && active[c] {
                    lm += m[c][l as usize].max(FLOOR).ln();
                    lu += u[c][l as usize].ln();
                }
            }
            let w = 1.0 / (1.0 + (lu - lm).exp());
            let mass = w * count as f64;
            matched += mass;
            for (c, &l) in pattern.iter().enumerate() {
                if l != 0 && active[c] {
                    acc[c][l as usize] += mass;
                }
            }
        }
        let new_lambda = (matched / total as f64).clamp(FLOOR, 1.0 - FLOOR);
        let mut change = (new_lambda - lambda).abs();
        lambda = new_lambda;
        if update_m {
            for c in 0..comparisons.len() {
                if !active[c] {
                    continue;
                }
                let sum: f64 = acc[c][1..].iter().sum();
                if sum <= 0.0 {
                    continue;
                }
                for l in 1..acc[c].len() {
                    let v = (acc[c][l] / sum).max(FLOOR);
                    change = change.max((v - m[c][l]).abs());
                    m[c][l] = v;
                }
            }
        }
        if change < 1e-7 {
            return (m, lambda, iteration, true);
        }
    }
    (m, lambda, max_iterations, false)
}

/// Estimates the model: u by sampling, m by one EM session per blocking rule, lambda on all
/// candidate pairs.
#[allow(clippy::too_many_arguments)]
pub fn train(
    cmp: &Comparator,
    prior: f64,
    blocked: &Blocked,
    levels: &[u8],
    rules: &[(String, Vec<usize>)],
    u_pairs: usize,
    seed: u64,
    max_iterations: usize,
    link: LinkType,
) -> Model {
    let sessions: Vec<Patterns> = rules
        .iter()
        .map(|(_, attrs)| {
            patterns(cmp, blocked, levels, |p| {
                let (a, b) = blocked.pairs[p];
                agree(cmp.records, attrs, a as usize, b as usize)
            })
        })
        .collect();
    let all = patterns(cmp, blocked, levels, |_| true);
    train_on_patterns(
        cmp,
        prior,
        &sessions,
        &all,
        rules,
        u_pairs,
        seed,
        max_iterations,
        link,
    )
}

/// [`train`] from agreement-pattern counts: per blocking rule, of the candidate pairs that
/// agree on the rule's attributes (`sessions`), and of all candidate pairs (`all`).
#[allow(clippy::too_many_arguments)]
pub fn train_on_patterns(
    cmp: &Comparator,
    prior: f64,
    sessions_patterns: &[Patterns],
    all: &Patterns,
    rules: &[(String, Vec<usize>)],
    u_pairs: usize,
    seed: u64,
    max_iterations: usize,
    link: LinkType,
) -> Model {
    let comparisons = cmp.comparisons;
    let (u, u_sampled) = estimate_u(cmp, u_pairs, seed, link);
    let start: Vec<Vec<f64>> = comparisons.iter().map(initial_m).collect();
    let mut sums: Vec<Vec<f64>> = comparisons
        .iter()
        .map(|c| vec![0.0; c.level_count()])
        .collect();
    let mut estimated = vec![0usize; comparisons.len()];
    let mut sessions = Vec::new();
    for ((name, attrs), pats) in rules.iter().zip(sessions_patterns) {
        let active: Vec<bool> = comparisons
            .iter()
            .map(|c| !attrs.contains(&c.attribute))
            .collect();
        if !active.iter().any(|&a| a) {
            continue;
        }
        let pairs: u64 = pats.values().sum();
        if pairs == 0 {
            continue;
        }
        let (m, lambda, iterations, converged) =
            em(pats, comparisons, &u, &active, &start, max_iterations, true);
        for c in 0..comparisons.len() {
            if active[c] {
                estimated[c] += 1;
                for l in 1..m[c].len() {
                    sums[c][l] += m[c][l];
                }
            }
        }
        sessions.push(EmSession {
            rule: name.clone(),
            pairs,
            iterations,
            converged,
            lambda,
        });
    }
    let everything = vec![true; comparisons.len()];
    let mut m = start.clone();
    if estimated.contains(&0) {
        let (fallback, lambda, iterations, converged) = em(
            all,
            comparisons,
            &u,
            &everything,
            &start,
            max_iterations,
            true,
        );
        sessions.push(EmSession {
            rule: "(all candidate pairs)".into(),
            pairs: all.values().sum(),
            iterations,
            converged,
            lambda,
        });
        for c in 0..comparisons.len() {
            if estimated[c] == 0 {
                m[c] = fallback[c].clone();
            }
        }
    }
    for c in 0..comparisons.len() {
        if estimated[c] > 0 {
            m[c] = sums[c].iter().map(|s| s / estimated[c] as f64).collect();
        }
    }
    let (_, lambda_candidates, _, _) =
        em(all, comparisons, &u, &everything, &m, max_iterations, false);
    let tf = comparisons
        .iter()
        .map(|c| {
            c.term_frequency
                .then(|| cmp.records.attrs[c.attribute].frequencies())
        })
        .collect();
    Model {
        lambda: prior,
        lambda_candidates,
        m,
        u,
        tf,
        sessions,
        u_pairs: u_sampled,
    }
}

/// The weight of each comparison and the total match weight of pair `p`.
pub fn score(
    model: &Model,
    cmp: &Comparator,
    pair: (u32, u32),
    levels: &[u8],
    weights: &mut [f64],
) -> f64 {
    let mut total = model.prior_weight();
    for (c, (&l, w)) in levels.iter().zip(weights.iter_mut()).enumerate() {
        let value = cmp.records.attrs[cmp.comparisons[c].attribute].values[pair.0 as usize];
        *w = model.weight(cmp.comparisons, c, l, value);
        total += *w;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::config::Level;

    fn comparison(levels: usize) -> Comparison {
        Comparison {
            name: "x".into(),
            attribute: 0,
            levels: vec![Level::Exact; levels],
            swapped_with: vec![None; levels],
            term_frequency: false,
        }
    }

    /// Pairs drawn from a known two-class mixture: EM must recover m and lambda.
    #[test]
    fn em_recovers_a_known_mixture() {
        let comparisons: Vec<Comparison> = (0..3).map(|_| comparison(1)).collect();
        // Level 1 = agree, 2 = disagree. True m(agree) = 0.9, u(agree) = 0.05, lambda = 0.2.
        let (m_true, u_true, lambda_true) = (0.9, 0.05, 0.2);
        let mut patterns = Patterns::new();
        let n = 1_000_000.0;
        for bits in 0..8u8 {
            let pattern: Vec<u8> = (0..3)
                .map(|c| if bits >> c & 1 == 1 { 1 } else { 2 })
                .collect();
            let p = |q: f64| {
                pattern
                    .iter()
                    .map(|&l| if l == 1 { q } else { 1.0 - q })
                    .product::<f64>()
            };
            let expected = n * (lambda_true * p(m_true) + (1.0 - lambda_true) * p(u_true));
            patterns.insert(pattern, expected.round() as u64);
        }
        let u: Vec<Vec<f64>> = (0..3).map(|_| vec![0.0, u_true, 1.0 - u_true]).collect();
        let start: Vec<Vec<f64>> = comparisons.iter().map(initial_m).collect();
        let (m, lambda, _, converged) =
            em(&patterns, &comparisons, &u, &[true; 3], &start, 1000, true);
        assert!(converged);
        assert!((lambda - lambda_true).abs() < 1e-3, "lambda {lambda}");
        for mc in &m {
            assert!((mc[1] - m_true).abs() < 1e-3, "m {mc:?}");
        }
    }

    #[test]
    fn probability_is_the_logistic_of_the_weight_in_bits() {
        assert!((probability(0.0) - 0.5).abs() < 1e-12);
        assert!((probability(1.0) - 2.0 / 3.0).abs() < 1e-12);
        assert!((probability(-1.0) - 1.0 / 3.0).abs() < 1e-12);
    }
}
