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
pub fn candidate_pairs(
    records: &Records,
    rules: &[(String, Vec<usize>)],
    max_group: usize,
    link: LinkType,
) -> Blocked {
    let mut out = Blocked {
        pairs: Vec::new(),
        rule_of: Vec::new(),
        stats: Vec::new(),
    };
    let mut grouped_by: Vec<Vec<bool>> = Vec::new();
    for (r, (name, attrs)) in rules.iter().enumerate() {
        let g = group(records, attrs, max_group);
        let mut count = 0u64;
        for members in &g.groups {
            for (i, &a) in members.iter().enumerate() {
                for &b in &members[i + 1..] {
                    let (a, b) = (a as usize, b as usize);
                    if !link.allows(records.source_of[a], records.source_of[b]) {
                        continue;
                    }
                    let earlier =
                        (0..r).any(|e| grouped_by[e][a] && agree(records, &rules[e].1, a, b));
                    if !earlier {
                        out.pairs.push((a as u32, b as u32));
                        out.rule_of.push(r as u8);
                        count += 1;
                    }
                }
            }
        }
        out.stats.push(RuleStats {
            name: name.clone(),
            pairs: count,
            oversized_groups: g.oversized_groups,
            oversized_records: g.oversized_records,
            largest_oversized: g.largest_oversized,
        });
        grouped_by.push(g.grouped);
    }
    out
}
