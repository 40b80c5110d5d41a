//! Write leases: one writer at a time per member log made on this node.
//!
//! An op names the hash of the previous op of its log, and the ids it
//! creates are derived from its seq, so two commands of one member that
//! prepare at the same moment through one daemon would both take the next
//! seq and fork the member's log. The sync engine therefore hands out the
//! next seq of a log (author, this node) to one caller at a time: the
//! caller that asks for ids or prepares first holds the lease until its
//! signed op is submitted (or the lease lapses); later callers wait in
//! order. A lease is named by a token that the caller passes back with its
//! prepare, so a prepare that belongs to the holder is told apart from a
//! new writer that must wait.
//!
//! The bookkeeping here is plain data; the sync actor owns it, serves the
//! waiters it releases and expires leases on its tick.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use shoal_protocol::PublicKey;

/// A lease not used for this long lapses: its holder died or hung between
/// preparing and submitting, and the next writer may take the seq.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// Writers waiting for one member's log, at most; more are refused at once.
pub const MAX_WAITERS: usize = 64;
/// A writer waits at most this long for the lease.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The lease of one log, held by one writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub token: u64,
    /// The seq the holder writes.
    pub seq: u64,
    /// The body hash the holder prepared, once it did.
    pub prepared: Option<[u8; 32]>,
    pub expires: Instant,
}

/// Why a writer does not get the lease now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "too many writes of this member are waiting on this node ({MAX_WAITERS}): let some finish, then try again"
    )]
    Busy,
    #[error(
        "this write took too long between its steps and lost its turn ({}s): run the command again",
        LEASE_TTL.as_secs()
    )]
    Lapsed,
    #[error("another write of this member waited too long on this node: run the command again")]
    Timeout,
}

/// What a caller gets: the lease now, or a place in the queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Acquire<W> {
    /// The lease, and the writer handed back to be answered.
    Granted(Held, W),
    Queued,
}

/// Leases and waiters of every log written on this node, by author. `W` is
/// a waiting writer (the actor stores its request and reply channel).
#[derive(Debug)]
pub struct Leases<W> {
    held: HashMap<PublicKey, Held>,
    waiting: HashMap<PublicKey, VecDeque<(Instant, W)>>,
    next_token: u64,
}

impl<W> Default for Leases<W> {
    fn default() -> Self {
        Self {
            held: HashMap::new(),
            waiting: HashMap::new(),
            next_token: 1,
        }
    }
}

impl<W> Leases<W> {
    /// A new writer of `author`'s log whose next seq is `seq`: granted when
    /// the log is free, else queued as `waiter` (handed back by
    /// [`Leases::release`] or [`Leases::expire`] when its turn comes).
    pub fn acquire(
        &mut self,
        author: PublicKey,
        seq: u64,
        now: Instant,
        waiter: W,
    ) -> Result<Acquire<W>, (LeaseError, W)> {
        if self.held.contains_key(&author) {
            let queue = self.waiting.entry(author).or_default();
            if queue.len() >= MAX_WAITERS {
                return Err((LeaseError::Busy, waiter));
            }
            queue.push_back((now, waiter));
            return Ok(Acquire::Queued);
        }
        Ok(Acquire::Granted(self.grant(author, seq, now), waiter))
    }

    /// Grants the free log of `author` (the caller checked it is free).
    pub fn grant(&mut self, author: PublicKey, seq: u64, now: Instant) -> Held {
        let held = Held {
            token: self.next_token,
            seq,
            prepared: None,
            expires: now + LEASE_TTL,
        };
        self.next_token = self.next_token.wrapping_add(1).max(1);
        self.held.insert(author, held.clone());
        held
    }

    /// The lease of `author` if `token` names it; refreshed.
    pub fn holder(&mut self, author: &PublicKey, token: u64, now: Instant) -> Option<&mut Held> {
        let held = self.held.get_mut(author).filter(|h| h.token == token)?;
        held.expires = now + LEASE_TTL;
        Some(held)
    }

    /// Whether `author`'s log is leased.
    pub fn is_held(&self, author: &PublicKey) -> bool {
        self.held.contains_key(author)
    }

    /// Whether an op of `author` at `seq` whose body hashes to `body` may be
    /// submitted: not when the seq is leased to a writer that prepared
    /// another body (the op was prepared under a lease that lapsed, and
    /// taking it would fork the log).
    pub fn admits(&self, author: &PublicKey, seq: u64, body: &[u8; 32]) -> bool {
        match self.held.get(author) {
            Some(h) if h.seq == seq => h.prepared.is_none_or(|p| &p == body),
            _ => true,
        }
    }

    /// The op of `author` at `seq` was submitted (applied or refused): frees
    /// the log when that seq was the leased one and returns the next
    /// waiter, which the caller grants with [`Leases::grant`].
    pub fn release(&mut self, author: &PublicKey, seq: u64) -> Option<W> {
        match self.held.get(author) {
            Some(h) if h.seq == seq => {
                self.held.remove(author);
                self.next_waiter(author)
            }
            _ => None,
        }
    }

    /// Frees `author`'s log whatever its seq (the holder's prepare failed).
    pub fn abandon(&mut self, author: &PublicKey, token: u64) -> Option<W> {
        if self.held.get(author).is_some_and(|h| h.token == token) {
            self.held.remove(author);
            return self.next_waiter(author);
        }
        None
    }

    /// The next waiter of `author`'s free log (the previous one went away).
    pub fn release_waiter(&mut self, author: &PublicKey) -> Option<W> {
        if self.held.contains_key(author) {
            return None;
        }
        self.next_waiter(author)
    }

    fn next_waiter(&mut self, author: &PublicKey) -> Option<W> {
        let queue = self.waiting.get_mut(author)?;
        let next = queue.pop_front().map(|(_, w)| w);
        if queue.is_empty() {
            self.waiting.remove(author);
        }
        next
    }

    /// Lapses leases past their time and gives up on writers that waited
    /// too long. Returns, per author whose log became free, the next waiter
    /// (to grant), and the writers that timed out.
    pub fn expire(&mut self, now: Instant) -> (Vec<(PublicKey, W)>, Vec<W>) {
        let mut timed_out = Vec::new();
        for queue in self.waiting.values_mut() {
            while let Some((since, _)) = queue.front() {
                if now.duration_since(*since) < MAX_WAIT {
                    break;
                }
                if let Some((_, w)) = queue.pop_front() {
                    timed_out.push(w);
                }
            }
        }
        self.waiting.retain(|_, q| !q.is_empty());
        let lapsed: Vec<PublicKey> = self
            .held
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(a, _)| *a)
            .collect();
        let mut next = Vec::new();
        for author in lapsed {
            self.held.remove(&author);
            if let Some(w) = self.next_waiter(&author) {
                next.push((author, w));
            }
        }
        (next, timed_out)
    }

    /// Every waiter, for a shutdown.
    pub fn drain(&mut self) -> Vec<W> {
        self.held.clear();
        self.waiting
            .drain()
            .flat_map(|(_, q)| q.into_iter().map(|(_, w)| w))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use shoal_protocol::SecretKey;

    use super::*;

    fn key(n: u8) -> PublicKey {
        SecretKey::from_seed([n; 32]).public()
    }

    #[test]
    fn one_writer_per_log_others_wait_in_order() {
        let (a, b) = (key(1), key(2));
        let now = Instant::now();
        let mut l: Leases<&str> = Leases::default();
        let Ok(Acquire::Granted(first, "w1")) = l.acquire(a, 5, now, "w1") else {
            panic!("the free log is granted");
        };
        assert_eq!(first.seq, 5);
        assert_eq!(l.acquire(a, 5, now, "w2"), Ok(Acquire::Queued));
        assert_eq!(l.acquire(a, 5, now, "w3"), Ok(Acquire::Queued));
        // Another member's log is independent.
        assert!(matches!(
            l.acquire(b, 1, now, "x"),
            Ok(Acquire::Granted(_, "x"))
        ));
        // Only the holder's token finds the lease.
        assert!(l.holder(&a, first.token + 100, now).is_none());
        assert!(l.holder(&a, first.token, now).is_some());
        // A submit of another seq frees nothing; the leased seq frees it.
        assert_eq!(l.release(&a, 4), None);
        assert_eq!(l.release(&a, 5), Some("w2"));
        assert!(!l.is_held(&a));
        let second = l.grant(a, 6, now);
        assert_ne!(second.token, first.token);
        assert_eq!(l.release(&a, 6), Some("w3"));
        assert_eq!(l.release(&a, 7), None);
    }

    #[test]
    fn a_lapsed_lease_passes_on_and_its_late_op_is_refused() {
        let a = key(1);
        let now = Instant::now();
        let mut l: Leases<u32> = Leases::default();
        let Ok(Acquire::Granted(h, 0)) = l.acquire(a, 3, now, 0) else {
            panic!("granted");
        };
        if let Some(h) = l.holder(&a, h.token, now) {
            h.prepared = Some([1; 32]);
        }
        assert_eq!(l.acquire(a, 3, now, 1), Ok(Acquire::Queued));
        let (next, timed_out) = l.expire(now + LEASE_TTL / 2);
        assert!(next.is_empty() && timed_out.is_empty());
        let (next, _) = l.expire(now + LEASE_TTL);
        assert_eq!(next, vec![(a, 1)]);
        let h2 = l.grant(a, 3, now + LEASE_TTL);
        if let Some(h) = l.holder(&a, h2.token, now + LEASE_TTL) {
            h.prepared = Some([2; 32]);
        }
        // The first writer's op at seq 3 would fork the log: refused.
        assert!(!l.admits(&a, 3, &[1; 32]));
        assert!(l.admits(&a, 3, &[2; 32]));
        assert!(l.admits(&a, 4, &[1; 32]));
        assert!(l.holder(&a, h.token, now).is_none());
    }

    #[test]
    fn the_queue_is_bounded_and_waiters_time_out() {
        let a = key(1);
        let now = Instant::now();
        let mut l: Leases<usize> = Leases::default();
        assert!(matches!(
            l.acquire(a, 1, now, 0),
            Ok(Acquire::Granted(_, 0))
        ));
        for i in 1..=MAX_WAITERS {
            assert_eq!(l.acquire(a, 1, now, i), Ok(Acquire::Queued));
        }
        assert_eq!(
            l.acquire(a, 1, now, 999),
            Err((LeaseError::Busy, 999)),
            "one more than the bound is refused"
        );
        // The holder keeps its lease alive; the waiters give up.
        let later = now + MAX_WAIT;
        if let Some(h) = l.held.get_mut(&a) {
            h.expires = later + LEASE_TTL;
        }
        let (next, timed_out) = l.expire(later);
        assert!(next.is_empty());
        assert_eq!(timed_out.len(), MAX_WAITERS);
        assert!(l.is_held(&a));
    }

    #[test]
    fn abandoning_frees_only_the_holders_lease() {
        let a = key(1);
        let now = Instant::now();
        let mut l: Leases<u8> = Leases::default();
        let Ok(Acquire::Granted(h, 0)) = l.acquire(a, 1, now, 0) else {
            panic!("granted");
        };
        assert_eq!(l.acquire(a, 1, now, 7), Ok(Acquire::Queued));
        assert_eq!(l.abandon(&a, h.token + 1), None);
        assert!(l.is_held(&a));
        assert_eq!(l.abandon(&a, h.token), Some(7));
        assert_eq!(l.drain(), Vec::<u8>::new());
    }
}
