//! Clustering: accepted links are edges and persons are connected components, built greedily
//! from the strongest evidence down (deterministic rules in their order, then probabilistic
//! links by match weight). Two guards refuse a link instead of letting one shared value chain
//! unrelated people into a giant component: a link that would grow a cluster past the size
//! cap (the weakest links are the ones left out, and the cluster is flagged), and a link
//! between clusters that clearly disagree on an exclusive comparison.

use super::compare::Comparator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accepted,
    /// Both records were already in one cluster.
    AlreadyLinked,
    RefusedConflict,
    RefusedSize,
}

impl Decision {
    pub fn label(self) -> &'static str {
        match self {
            Decision::Accepted => "accepted",
            Decision::AlreadyLinked => "already_linked",
            Decision::RefusedConflict => "refused_conflict",
            Decision::RefusedSize => "refused_size",
        }
    }
}

/// A link to consider: `method` is a deterministic rule index, or `None` for a probabilistic
/// link with its match probability.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub a: u32,
    pub b: u32,
    pub method: Option<u16>,
    pub probability: f64,
}

pub struct Clustering {
    /// Per record: its cluster (dense, 0..clusters.len()).
    pub cluster_of: Vec<u32>,
    pub clusters: Vec<Vec<u32>>,
    /// Per cluster: a link was refused because of the size cap.
    pub capped: Vec<bool>,
    /// Per record: the first accepted link that touched it.
    pub method: Vec<Option<Option<u16>>>,
    /// Per record: highest probability of an accepted link touching it.
    pub probability: Vec<Option<f64>>,
    /// Per edge (input order).
    pub decisions: Vec<Decision>,
}

struct UnionFind {
    parent: Vec<u32>,
    members: Vec<Vec<u32>>,
    capped: Vec<bool>,
}

impl UnionFind {
    fn find(&mut self, x: u32) -> u32 {
        let mut root = x;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        let mut x = x;
        while self.parent[x as usize] != root {
            let next = self.parent[x as usize];
            self.parent[x as usize] = root;
            x = next;
        }
        root
    }
}

/// Clusters `n` records over `edges`, which must come strongest first.
pub fn cluster(
    cmp: &Comparator,
    n: usize,
    edges: &[Edge],
    exclusive: &[usize],
    max_size: usize,
) -> Clustering {
    let mut uf = UnionFind {
        parent: (0..n as u32).collect(),
        members: (0..n as u32).map(|r| vec![r]).collect(),
        capped: vec![false; n],
    };
    let mut method = vec![None; n];
    let mut probability: Vec<Option<f64>> = vec![None; n];
    let mut decisions = Vec::with_capacity(edges.len());
    for e in edges {
        let (ra, rb) = (uf.find(e.a), uf.find(e.b));
        let decision = if ra == rb {
            Decision::AlreadyLinked
        } else if uf.members[ra as usize].len() + uf.members[rb as usize].len() > max_size {
            uf.capped[ra as usize] = true;
            uf.capped[rb as usize] = true;
            Decision::RefusedSize
        } else if !exclusive.is_empty()
            && uf.members[ra as usize].iter().any(|&x| {
                uf.members[rb as usize]
                    .iter()
                    .any(|&y| cmp.conflict(exclusive, x as usize, y as usize))
            })
        {
            Decision::RefusedConflict
        } else {
            let (big, small) = if uf.members[ra as usize].len() >= uf.members[rb as usize].len() {
                (ra, rb)
            } else {
                (rb, ra)
            };
            let moved = std::mem::take(&mut uf.members[small as usize]);
            uf.members[big as usize].extend(moved);
            uf.parent[small as usize] = big;
            uf.capped[big as usize] |= uf.capped[small as usize];
            Decision::Accepted
        };
        if matches!(decision, Decision::Accepted | Decision::AlreadyLinked) {
            for r in [e.a as usize, e.b as usize] {
                if method[r].is_none() {
                    method[r] = Some(e.method);
                }
                probability[r] =
                    Some(probability[r].map_or(e.probability, |p: f64| p.max(e.probability)));
            }
        }
        decisions.push(decision);
    }
    let mut cluster_of = vec![u32::MAX; n];
    let mut clusters = Vec::new();
    let mut capped = Vec::new();
    for r in 0..n as u32 {
        let root = uf.find(r);
        if cluster_of[root as usize] == u32::MAX {
            let mut members = std::mem::take(&mut uf.members[root as usize]);
            members.sort_unstable();
            let id = clusters.len() as u32;
            for &m in &members {
                cluster_of[m as usize] = id;
            }
            capped.push(uf.capped[root as usize]);
            clusters.push(members);
        }
    }
    Clustering {
        cluster_of,
        clusters,
        capped,
        method,
        probability,
        decisions,
    }
}
