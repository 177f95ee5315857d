//! Blocking: records are grouped by the exact values of a rule's attributes, and only records
//! in one group are paired. Several rules are unioned; a pair is attributed to the first rule
//! that finds it and counted once. A group larger than the guard is skipped and reported.

use std::collections::HashMap;

use super::config::LinkType;
use super::records::Records;

/// Records grouped by one rule's key.
pub struct Groups {
    /// Groups of two or more records within the size guard.
    pub groups: Vec<Vec<u32>>,
    /// Per record: whether it sits in one of `groups`.
    pub grouped: Vec<bool>,
    /// Groups skipped for exceeding the guard, and the records in them.
    pub oversized_groups: u64,
    pub oversized_records: u64,
    /// Size of the largest group skipped.
    pub largest_oversized: u64,
}

/// Groups the records that have all of `attrs`, by their values.
pub fn group(records: &Records, attrs: &[usize], max_group: usize) -> Groups {
    let mut map: HashMap<Vec<u32>, Vec<u32>> = HashMap::new();
    'records: for r in 0..records.len() {
        let mut key = Vec::with_capacity(attrs.len());
        for &a in attrs {
            let v = records.attrs[a].values[r];
            if v == 0 {
                continue 'records;
            }
            key.push(v);
        }
        map.entry(key).or_default().push(r as u32);
    }
    let mut out = Groups {
        groups: Vec::new(),
        grouped: vec![false; records.len()],
        oversized_groups: 0,
        oversized_records: 0,
        largest_oversized: 0,
    };
    let mut groups: Vec<Vec<u32>> = map.into_values().filter(|g| g.len() >= 2).collect();
    groups.sort_unstable_by_key(|g| g[0]);
    for g in groups {
        if g.len() > max_group {
            out.oversized_groups += 1;
            out.oversized_records += g.len() as u64;
            out.largest_oversized = out.largest_oversized.max(g.len() as u64);
            continue;
        }
        for &r in &g {
            out.grouped[r as usize] = true;
        }
        out.groups.push(g);
    }
    out
}

/// What one blocking rule contributed.
#[derive(Debug, Clone)]
pub struct RuleStats {
    pub name: String,
    /// Pairs first found by this rule.
    pub pairs: u64,
    pub oversized_groups: u64,
    pub oversized_records: u64,
    pub largest_oversized: u64,
}

pub struct Blocked {
    pub pairs: Vec<(u32, u32)>,
    /// Per pair: index of the rule that found it first.
    pub rule_of: Vec<u8>,
    pub stats: Vec<RuleStats>,
}

/// Whether the records agree on every attribute of a rule (both non-null).
pub fn agree(records: &Records, attrs: &[usize], a: usize, b: usize) -> bool {
    attrs.iter().all(|&x| {
        let column = &records.attrs[x].values;
        column[a] != 0 && column[a] == column[b]
    })
}

/// Candidate pairs of every rule, each pair once, of the pairs `link` allows.
///
/// Every rule groups the records on a thread of its own, then finds its pairs on a thread
/// of its own (a pair is the rule's unless an earlier rule's group holds it too); the
/// pairs are concatenated in rule order, as one pass would list them.
pub fn candidate_pairs(
    records: &Records,
    rules: &[(String, Vec<usize>)],
    max_group: usize,
    link: LinkType,
) -> Blocked {
    let groups: Vec<Groups> = std::thread::scope(|scope| {
        let workers: Vec<_> = rules
            .iter()
            .map(|(_, attrs)| scope.spawn(move || group(records, attrs, max_group)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a blocking rule's grouping panicked"))
            .collect()
    });
    let per_rule: Vec<Vec<(u32, u32)>> = std::thread::scope(|scope| {
        let groups = &groups;
        let workers: Vec<_> = (0..rules.len())
            .map(|r| {
                scope.spawn(move || {
                    let mut pairs = Vec::new();
                    for members in &groups[r].groups {
                        for (i, &a) in members.iter().enumerate() {
                            for &b in &members[i + 1..] {
                                let (a, b) = (a as usize, b as usize);
                                if !link.allows(records.source_of[a], records.source_of[b]) {
                                    continue;
                                }
                                let earlier = (0..r).any(|e| {
                                    groups[e].grouped[a] && agree(records, &rules[e].1, a, b)
                                });
                                if !earlier {
                                    pairs.push((a as u32, b as u32));
                                }
                            }
                        }
                    }
                    pairs
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a blocking rule's pairing panicked"))
            .collect()
    });
    let mut out = Blocked {
        pairs: Vec::with_capacity(per_rule.iter().map(Vec::len).sum()),
        rule_of: Vec::new(),
        stats: Vec::new(),
    };
    for (r, (((name, _), g), pairs)) in rules.iter().zip(&groups).zip(per_rule).enumerate() {
        out.rule_of
            .extend(std::iter::repeat_n(r as u8, pairs.len()));
        out.stats.push(RuleStats {
            name: name.clone(),
            pairs: pairs.len() as u64,
            oversized_groups: g.oversized_groups,
            oversized_records: g.oversized_records,
            largest_oversized: g.largest_oversized,
        });
        out.pairs.extend(pairs);
    }
    out
}
