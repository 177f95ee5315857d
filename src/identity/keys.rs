//! Stable customer keys. A cluster inherits the previous run's key that most of its records
//! carried; when clusters compete for one key (a split), the one holding most of its records
//! keeps it. A cluster with no inherited key gets a new key derived from its smallest source
//! record, so a rerun from scratch on the same data gives the same keys too.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::cluster::Clustering;
use super::records::Records;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// No record had a key before.
    New,
    /// Inherited; every record that had a key had this one.
    Kept,
    /// Records of two or more previous persons are one person now.
    Merged,
    /// Part of a previous person that is now two or more persons.
    Split,
}

impl KeyStatus {
    pub fn label(self) -> &'static str {
        match self {
            KeyStatus::New => "new",
            KeyStatus::Kept => "kept",
            KeyStatus::Merged => "merged",
            KeyStatus::Split => "split",
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct KeyReport {
    pub new_keys: u64,
    pub kept_keys: u64,
    pub merges: u64,
    pub splits: u64,
    /// Previous keys no cluster carries any more.
    pub retired_keys: u64,
}

pub struct Keys {
    /// Per cluster.
    pub key: Vec<String>,
    pub status: Vec<KeyStatus>,
    /// Per record: its key in the previous run.
    pub previous: Vec<Option<String>>,
    pub report: KeyReport,
}

fn derived_key(prefix: &str, seed: &str, attempt: u32) -> String {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    if attempt > 0 {
        h.update(attempt.to_le_bytes());
    }
    format!("{prefix}{}", &hex::encode(h.finalize())[..16])
}

/// Assigns a key to every cluster. `previous` maps (source, record id) to the previous key.
pub fn assign(
    records: &Records,
    clustering: &Clustering,
    previous: &HashMap<(String, String), String>,
    prefix: &str,
) -> Keys {
    let previous_of: Vec<Option<String>> = if previous.is_empty() {
        vec![None; records.len()]
    } else {
        super::par_map(records.len(), |r| {
            previous
                .get(&(records.source(r).to_string(), records.ids[r].clone()))
                .cloned()
        })
    };
    let n = clustering.clusters.len();
    // Claims: (records carrying the key, cluster, key).
    let mut claims: Vec<(usize, usize, String)> = Vec::new();
    let mut distinct_previous = vec![0usize; n];
    let mut clusters_of_key: HashMap<&str, HashSet<usize>> = HashMap::new();
    for (c, members) in clustering.clusters.iter().enumerate() {
        let mut tally: HashMap<&str, usize> = HashMap::new();
        for &m in members {
            if let Some(k) = &previous_of[m as usize] {
                *tally.entry(k.as_str()).or_default() += 1;
                clusters_of_key.entry(k.as_str()).or_default().insert(c);
            }
        }
        distinct_previous[c] = tally.len();
        claims.extend(
            tally
                .into_iter()
                .map(|(k, count)| (count, c, k.to_string())),
        );
    }
    claims.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(
                clustering.clusters[b.1]
                    .len()
                    .cmp(&clustering.clusters[a.1].len()),
            )
            .then(a.2.cmp(&b.2))
            .then(a.1.cmp(&b.1))
    });
    let mut key: Vec<Option<String>> = vec![None; n];
    let mut taken: HashSet<String> = previous.values().cloned().collect();
    let mut given: HashSet<String> = HashSet::new();
    for (_, c, k) in claims {
        if key[c].is_none() && !given.contains(&k) {
            given.insert(k.clone());
            key[c] = Some(k);
        }
    }
    // The first candidate key of every cluster that keeps no previous key, on every core:
    // a hash of its smallest (source, id).
    let mut fresh: Vec<Option<(String, String)>> = super::par_map(n, |c| {
        key[c].is_none().then(|| {
            let seed = clustering.clusters[c]
                .iter()
                .map(|&m| {
                    format!(
                        "{}\u{1f}{}",
                        records.source(m as usize),
                        records.ids[m as usize]
                    )
                })
                .min()
                .unwrap_or_default();
            let first = derived_key(prefix, &seed, 0);
            (seed, first)
        })
    });
    let mut report = KeyReport::default();
    let mut status = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for c in 0..n {
        let split = clustering.clusters[c]
            .iter()
            .filter_map(|&m| previous_of[m as usize].as_deref())
            .any(|k| clusters_of_key.get(k).is_some_and(|s| s.len() > 1));
        let s = if distinct_previous[c] > 1 {
            report.merges += 1;
            KeyStatus::Merged
        } else if split {
            KeyStatus::Split
        } else if distinct_previous[c] == 1 {
            KeyStatus::Kept
        } else {
            KeyStatus::New
        };
        let k = match key[c].take() {
            Some(k) => {
                report.kept_keys += 1;
                k
            }
            None => {
                report.new_keys += 1;
                let (seed, first) = fresh[c].take().expect("computed for every keyless cluster");
                let mut k = first;
                let mut attempt = 0;
                while taken.contains(&k) {
                    attempt += 1;
                    k = derived_key(prefix, &seed, attempt);
                }
                k
            }
        };
        taken.insert(k.clone());
        status.push(s);
        out.push(k);
    }
    report.splits = clusters_of_key.values().filter(|s| s.len() > 1).count() as u64;
    let live: HashSet<&str> = out.iter().map(String::as_str).collect();
    let before: HashSet<&str> = previous.values().map(String::as_str).collect();
    report.retired_keys = before.iter().filter(|k| !live.contains(*k)).count() as u64;
    Keys {
        key: out,
        status,
        previous: previous_of,
        report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::cluster::Clustering;
    use crate::identity::records::Records;

    fn records(ids: &[&str]) -> Records {
        Records {
            sources: vec!["s".into()],
            trust: vec![0],
            source_of: vec![0; ids.len()],
            ids: ids.iter().map(|s| s.to_string()).collect(),
            updated_at: vec![None; ids.len()],
            attrs: Vec::new(),
        }
    }

    fn clustering(clusters: Vec<Vec<u32>>, n: usize) -> Clustering {
        let mut cluster_of = vec![0; n];
        for (c, m) in clusters.iter().enumerate() {
            for &r in m {
                cluster_of[r as usize] = c as u32;
            }
        }
        let k = clusters.len();
        Clustering {
            cluster_of,
            clusters,
            capped: vec![false; k],
            method: vec![None; n],
            probability: vec![None; n],
            decisions: vec![],
        }
    }

    fn previous(pairs: &[(&str, &str)]) -> HashMap<(String, String), String> {
        pairs
            .iter()
            .map(|(id, k)| (("s".to_string(), id.to_string()), k.to_string()))
            .collect()
    }

    #[test]
    fn a_split_leaves_the_key_with_the_larger_part_and_a_merge_keeps_the_majority_key() {
        let r = records(&["a", "b", "c", "d", "e", "f"]);
        // Before: {a,b,c} = K1, {d} = K2, {e} = K3. Now: {a,b}, {c,d,e}, {f}.
        let prev = previous(&[
            ("a", "K1"),
            ("b", "K1"),
            ("c", "K1"),
            ("d", "K2"),
            ("e", "K3"),
        ]);
        let keys = assign(
            &r,
            &clustering(vec![vec![0, 1], vec![2, 3, 4], vec![5]], 6),
            &prev,
            "N",
        );
        assert_eq!(
            keys.key[0], "K1",
            "two of K1's three records stay together and keep it"
        );
        assert!(
            keys.key[1] == "K2" || keys.key[1] == "K3",
            "the merged part takes one of its own previous keys"
        );
        assert_eq!(keys.status[1], KeyStatus::Merged);
        assert_eq!(keys.status[0], KeyStatus::Split);
        assert_eq!(keys.status[2], KeyStatus::New);
        assert!(keys.key[2].starts_with('N') && keys.key[2].len() == 17);
        assert_eq!(
            (
                keys.report.merges,
                keys.report.splits,
                keys.report.retired_keys,
                keys.report.new_keys
            ),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn new_keys_are_deterministic_and_never_reuse_a_previous_key() {
        let r = records(&["a", "b"]);
        let c = clustering(vec![vec![0], vec![1]], 2);
        let first = assign(&r, &c, &HashMap::new(), "K");
        let again = assign(&r, &c, &HashMap::new(), "K");
        assert_eq!(first.key, again.key);
        assert_ne!(first.key[0], first.key[1]);
        // A previous key equal to the derived one (held by another record) is not handed out twice.
        let prev = previous(&[("x", first.key[0].as_str())]);
        let r2 = records(&["a", "b", "x"]);
        let c2 = clustering(vec![vec![0], vec![1], vec![2]], 3);
        let k = assign(&r2, &c2, &prev, "K");
        assert_eq!(k.key[2], first.key[0]);
        assert_ne!(k.key[0], first.key[0]);
    }
}
