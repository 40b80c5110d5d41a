//! After a start, a node learns the heads of its own logs from a peer before
//! it signs anything.
//!
//! A log is one (author, origin node) pair. A store restored from a backup,
//! or a machine cloned from another's image, holds an old head of the logs
//! that name this node as origin: signing from it would give a second op to
//! a seq the team already holds (a fork; the lower hash wins, so this node's
//! op and all that follow it could be voided). So writes wait (the sync
//! actor holds them) until a peer's version vector was seen and every log of
//! this origin is applied up to the seq that peer holds. A team with no
//! other node has nobody to ask; when no peer answers within the timeout
//! the node signs from its own heads, with a warning.
//!
//! Pure bookkeeping: the sync actor feeds it vectors and the clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_protocol::PublicKey;
use shoal_protocol::keys::LogId;
use shoal_protocol::replica::VersionVector;

/// How long writes wait after a start for a peer to tell this node its
/// logs' heads, before it signs from what its store holds.
pub const HEAD_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// A log of this origin that a peer holds further than this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub log: LogId,
    pub ours: u64,
    pub theirs: u64,
}

/// Whether this node may sign, and what it still waits for.
#[derive(Debug, Clone)]
pub struct HeadCheck {
    me: PublicKey,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Known,
    Learning {
        since: Instant,
        /// Per log of this origin, the seq a peer holds.
        want: BTreeMap<LogId, u64>,
        /// A peer's vector was seen.
        answered: bool,
    },
}

impl HeadCheck {
    /// The check of a node `me` that just started. With no other node in
    /// the team there is nobody to learn from: it may sign at once.
    pub fn new(me: PublicKey, other_nodes: bool, now: Instant) -> Self {
        let state = if other_nodes {
            State::Learning {
                since: now,
                want: BTreeMap::new(),
                answered: false,
            }
        } else {
            State::Known
        };
        HeadCheck { me, state }
    }

    /// This node may sign.
    pub fn known(&self) -> bool {
        matches!(self.state, State::Known)
    }

    /// A peer's version vector `theirs` was seen; `ours` is this node's.
    /// Returns the logs of this origin it holds further (this store is
    /// behind them: writes wait again until they are applied).
    pub fn peer_vector(
        &mut self,
        ours: &VersionVector,
        theirs: &VersionVector,
        now: Instant,
    ) -> Vec<Behind> {
        let behind: Vec<Behind> = theirs
            .iter()
            .filter(|(log, _)| log.origin == self.me)
            .filter_map(|(log, &t)| {
                let o = ours.get(log).copied().unwrap_or(0);
                (t > o).then_some(Behind {
                    log: *log,
                    ours: o,
                    theirs: t,
                })
            })
            .collect();
        if let State::Known = self.state
            && !behind.is_empty()
        {
            self.state = State::Learning {
                since: now,
                want: BTreeMap::new(),
                answered: true,
            };
        }
        if let State::Learning { want, answered, .. } = &mut self.state {
            *answered = true;
            for b in &behind {
                let w = want.entry(b.log).or_insert(0);
                *w = (*w).max(b.theirs);
            }
        }
        behind
    }

    /// Checks `ours` against what peers hold: true when this node just
    /// became free to sign.
    pub fn caught_up(&mut self, ours: &VersionVector) -> bool {
        let State::Learning { want, answered, .. } = &self.state else {
            return false;
        };
        let done = *answered
            && want
                .iter()
                .all(|(log, seq)| ours.get(log).copied().unwrap_or(0) >= *seq);
        if done {
            self.state = State::Known;
        }
        done
    }

    /// When the wait ends by `timeout` (`None` when this node may sign).
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.state {
            State::Learning { since, .. } => Some(since + timeout),
            State::Known => None,
        }
    }

    /// Gives up waiting once `timeout` passed since writes started waiting:
    /// true when this node just became free to sign that way.
    pub fn timed_out(&mut self, now: Instant, timeout: Duration) -> bool {
        match self.state {
            State::Learning { since, .. } if now.saturating_duration_since(since) >= timeout => {
                self.state = State::Known;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use shoal_protocol::SecretKey;

    fn key(n: u8) -> PublicKey {
        SecretKey::from_seed([n; 32]).public()
    }

    fn log(author: u8, origin: u8) -> LogId {
        LogId {
            author: key(author),
            origin: key(origin),
        }
    }

    fn vv(entries: &[(LogId, u64)]) -> VersionVector {
        entries.iter().copied().collect()
    }

    #[test]
    fn a_lone_node_signs_at_once() {
        let h = HeadCheck::new(key(1), false, Instant::now());
        assert!(h.known());
    }

    #[test]
    fn writes_wait_for_a_peer_and_for_the_ops_of_this_origin_it_holds() {
        let t0 = Instant::now();
        let mut h = HeadCheck::new(key(1), true, t0);
        assert!(!h.known());
        // Nobody answered yet: not caught up, whatever we hold.
        assert!(!h.caught_up(&vv(&[(log(5, 1), 3)])));
        // The peer holds our member log further; another origin's log does
        // not matter.
        let ours = vv(&[(log(5, 1), 3), (log(6, 2), 1)]);
        let theirs = vv(&[(log(5, 1), 7), (log(6, 2), 9)]);
        let behind = h.peer_vector(&ours, &theirs, t0);
        assert_eq!(
            behind,
            vec![Behind {
                log: log(5, 1),
                ours: 3,
                theirs: 7
            }]
        );
        assert!(!h.caught_up(&ours));
        assert!(!h.caught_up(&vv(&[(log(5, 1), 6)])));
        assert!(h.caught_up(&vv(&[(log(5, 1), 7)])));
        assert!(h.known());
    }

    #[test]
    fn a_peer_at_our_heads_frees_writes() {
        let t0 = Instant::now();
        let mut h = HeadCheck::new(key(1), true, t0);
        let ours = vv(&[(log(1, 1), 4)]);
        assert!(h.peer_vector(&ours, &vv(&[(log(1, 1), 2)]), t0).is_empty());
        assert!(h.caught_up(&ours));
    }

    #[test]
    fn a_later_vector_showing_this_store_behind_makes_writes_wait_again() {
        let t0 = Instant::now();
        let mut h = HeadCheck::new(key(1), false, t0);
        let ours = vv(&[(log(1, 1), 4)]);
        assert_eq!(h.peer_vector(&ours, &vv(&[(log(1, 1), 5)]), t0).len(), 1);
        assert!(!h.known());
        assert!(h.caught_up(&vv(&[(log(1, 1), 5)])));
    }

    #[test]
    fn nobody_answering_ends_the_wait_after_the_timeout() {
        let t0 = Instant::now();
        let mut h = HeadCheck::new(key(1), true, t0);
        assert!(!h.timed_out(t0 + Duration::from_secs(1), Duration::from_secs(5)));
        assert!(h.timed_out(t0 + Duration::from_secs(5), Duration::from_secs(5)));
        assert!(h.known());
        assert!(!h.timed_out(t0 + Duration::from_secs(9), Duration::from_secs(5)));
    }
}
