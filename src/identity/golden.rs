//! Survivorship: the golden record of a person takes each attribute from one of its source
//! records by a rule (most recent, most trusted source, most frequent value), and keeps which
//! record that was. Ties fall through to the other criteria and finally to the smallest
//! (source, record id), so the choice is deterministic.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::config::Survivorship;
use super::records::Records;

/// For one cluster and attribute: the record whose value survives, if any has one.
pub fn survivor(
    records: &Records,
    members: &[u32],
    attribute: usize,
    rule: Survivorship,
) -> Option<u32> {
    let column = &records.attrs[attribute];
    let mut frequency: HashMap<u32, usize> = HashMap::new();
    for &m in members {
        let v = column.values[m as usize];
        if v != 0 {
            *frequency.entry(v).or_default() += 1;
        }
    }
    let trust = |r: u32| records.trust[records.source_of[r as usize] as usize];
    let recency = |r: u32| records.updated_at[r as usize].as_deref();
    let freq = |r: u32| frequency[&column.values[r as usize]];
    let identity = |r: u32| (records.source(r as usize), records.ids[r as usize].as_str());
    members
        .iter()
        .copied()
        .filter(|&m| column.values[m as usize] != 0)
        .max_by(|&a, &b| {
            let by_trust = trust(a).cmp(&trust(b));
            let by_recency = recency(a).cmp(&recency(b));
            let by_frequency = freq(a).cmp(&freq(b));
            let primary = match rule {
                Survivorship::MostTrusted => by_trust.then(by_recency).then(by_frequency),
                Survivorship::MostRecent => by_recency.then(by_trust).then(by_frequency),
                Survivorship::MostFrequent => by_frequency.then(by_trust).then(by_recency),
            };
            // max_by keeps the last maximum: reverse the identity so the smallest wins ties.
            primary.then_with(|| match identity(a).cmp(&identity(b)) {
                Ordering::Less => Ordering::Greater,
                Ordering::Greater => Ordering::Less,
                Ordering::Equal => Ordering::Equal,
            })
        })
}
