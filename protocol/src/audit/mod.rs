//! The audit view (§3): the list of ops *is* the audit log. Listing with
//! filters, and verification of every chain and signature.

mod describe;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::hlc::Hlc;
use crate::keys::{LogId, OpHash, TeamId};
use crate::model::TeamState;
use crate::op::Op;
use crate::replica::Replica;

pub use self::describe::describe;

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub hash: String,
    pub time_ms: u64,
    pub hlc: String,
    pub action: &'static str,
    pub author: String,
    pub author_name: String,
    pub origin: String,
    pub origin_name: String,
    pub seq: u64,
    pub targets: Vec<String>,
    /// What the op did, in words, naming its targets as the team knows
    /// them now (see [`describe`]).
    pub what: String,
    /// `applied`, or `quarantined: <reason>`.
    pub status: String,
}

/// Filters of `shoal audit list`; every set filter must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Author name or key (hex, or a prefix of it).
    pub author: Option<String>,
    /// Exact action name or a prefix ending with '.', e.g. `deployment.`.
    pub action: Option<String>,
    /// An id or key the op is about (or a prefix of it).
    pub target: Option<String>,
}

fn name_of(state: &TeamState, key: &str) -> String {
    state
        .members
        .get(key)
        .map(|m| m.name.clone())
        .or_else(|| state.nodes.get(key).map(|n| format!("node {}", n.name)))
        .unwrap_or_else(|| key.chars().take(8).collect())
}

fn entry(state: &TeamState, op: &Op, hash: &OpHash, status: String) -> Entry {
    let b = &op.body;
    let author = b.author.to_hex();
    let origin = b.origin.to_hex();
    Entry {
        hash: hash.to_hex(),
        time_ms: b.hlc.ms,
        hlc: b.hlc.to_string(),
        action: b.action.name(),
        author_name: name_of(state, &author),
        origin_name: name_of(state, &origin),
        author,
        origin,
        seq: b.seq,
        targets: b.action.targets(),
        what: describe(state, &b.action),
        status,
    }
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        if self.since_ms.is_some_and(|t| e.time_ms < t) {
            return false;
        }
        if self.until_ms.is_some_and(|t| e.time_ms > t) {
            return false;
        }
        if let Some(a) = &self.author
            && !(e.author_name == *a || e.author.starts_with(a.as_str()))
        {
            return false;
        }
        if let Some(a) = &self.action {
            let ok = if a.ends_with('.') {
                e.action.starts_with(a.as_str())
            } else {
                e.action == a
            };
            if !ok {
                return false;
            }
        }
        if let Some(t) = &self.target
            && !e.targets.iter().any(|x| x.starts_with(t.as_str()))
        {
            return false;
        }
        true
    }
}

/// The audit log of a replica, oldest first (by hybrid logical clock),
/// quarantined ops included with their reason.
pub fn list(r: &Replica, filter: &Filter) -> Vec<Entry> {
    let state = r.state();
    let mut out: Vec<(Hlc, Entry)> = r
        .ops()
        .iter()
        .map(|a| {
            (
                a.op.body.hlc,
                entry(state, &a.op, &a.hash, "applied".into()),
            )
        })
        .chain(r.quarantine().iter().map(|(h, q)| {
            (
                q.op.body.hlc,
                entry(state, &q.op, h, format!("quarantined: {}", q.reason)),
            )
        }))
        .filter(|(_, e)| filter.matches(e))
        .collect();
    out.sort_by(|a, b| (a.0, &a.1.hash).cmp(&(b.0, &b.1.hash)));
    out.into_iter().map(|(_, e)| e).collect()
}

/// A problem found by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Problem {
    /// The op's signature does not verify: the entry was altered.
    BadSignature { hash: String, log: String, seq: u64 },
    /// The op names another team.
    WrongTeam { hash: String },
    /// A log has no op at this seq although later ones exist.
    Gap { log: String, seq: u64 },
    /// Two different ops share one (log, seq).
    Fork { log: String, seq: u64 },
    /// The op does not name the hash of its log's previous op.
    BrokenLink { log: String, seq: u64 },
    /// The op was refused when it arrived.
    Quarantined { hash: String, reason: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::BadSignature { hash, log, seq } => {
                write!(
                    f,
                    "op {hash} (log {log}, seq {seq}) is not signed by its author"
                )
            }
            Problem::WrongTeam { hash } => write!(f, "op {hash} belongs to another team"),
            Problem::Gap { log, seq } => write!(f, "log {log} is missing seq {seq}"),
            Problem::Fork { log, seq } => write!(f, "log {log} is forked at seq {seq}"),
            Problem::BrokenLink { log, seq } => {
                write!(f, "log {log} seq {seq} does not link to seq {}", seq - 1)
            }
            Problem::Quarantined { hash, reason } => {
                write!(f, "op {hash} was refused: {reason}")
            }
        }
    }
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ops: usize,
    pub logs: usize,
    pub problems: Vec<Problem>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies a set of ops as stored (for example read back from disk):
/// every signature, every log's hash chain, gaps and forks. `genesis` is
/// the team's genesis op, whose hash is the team id.
pub fn verify_ops<'a>(team: TeamId, ops: impl IntoIterator<Item = &'a Op>) -> Verification {
    let mut problems = Vec::new();
    // Per log, per seq: the ops found there and the previous hash each names.
    type Seqs = BTreeMap<u64, Vec<(OpHash, Option<OpHash>)>>;
    let mut logs: HashMap<LogId, Seqs> = HashMap::new();
    let mut count = 0;
    for op in ops {
        count += 1;
        let hash = op.hash();
        let b = &op.body;
        let log = op.log();
        if !op.verify_signature() {
            problems.push(Problem::BadSignature {
                hash: hash.to_hex(),
                log: log.to_string(),
                seq: b.seq,
            });
            continue;
        }
        let genesis = b.team.is_none() && hash.0 == team.0;
        if !genesis && b.team != Some(team) {
            problems.push(Problem::WrongTeam {
                hash: hash.to_hex(),
            });
            continue;
        }
        logs.entry(log)
            .or_default()
            .entry(b.seq)
            .or_default()
            .push((hash, b.prev));
    }
    let nlogs = logs.len();
    let mut sorted: Vec<_> = logs.into_iter().collect();
    sorted.sort_by_key(|(l, _)| *l);
    for (log, seqs) in sorted {
        let max = seqs.keys().max().copied().unwrap_or(0);
        for seq in 1..=max {
            let Some(here) = seqs.get(&seq) else {
                problems.push(Problem::Gap {
                    log: log.to_string(),
                    seq,
                });
                continue;
            };
            if here.len() > 1 {
                problems.push(Problem::Fork {
                    log: log.to_string(),
                    seq,
                });
            }
            let prev_hashes: Vec<OpHash> = seqs
                .get(&(seq - 1))
                .map(|v| v.iter().map(|(h, _)| *h).collect())
                .unwrap_or_default();
            for (_, prev) in here {
                let links = match (seq, prev) {
                    (1, None) => true,
                    (_, Some(p)) => prev_hashes.contains(p) || !seqs.contains_key(&(seq - 1)),
                    _ => false,
                };
                if !links {
                    problems.push(Problem::BrokenLink {
                        log: log.to_string(),
                        seq,
                    });
                }
            }
        }
    }
    Verification {
        ops: count,
        logs: nlogs,
        problems,
    }
}

/// Verifies a replica's applied ops and reports its quarantined ones.
pub fn verify(r: &Replica) -> Verification {
    let mut v = verify_ops(r.team(), r.ops().iter().map(|a| &a.op));
    for (h, q) in r.quarantine() {
        v.problems.push(Problem::Quarantined {
            hash: h.to_hex(),
            reason: q.reason.to_string(),
        });
    }
    v
}
