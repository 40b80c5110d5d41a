//! Live pushes to one peer, one at a time.
//!
//! The node's one-way messages to the peer (heartbeats, live reports) wait
//! in the same queue, each sent alone, so one stream carries them all.
//!
//! At most one push per peer is unanswered. Ops pushed meanwhile wait in the
//! peer's [`Outbox`] and leave together, as one batch, when the peer
//! acknowledges (or fails) the push in flight. A peer applies and commits
//! its requests one after the other, so more pushes in flight would not make
//! it faster; they would only cost a stream, a request and a store commit
//! each. Under load the batches grow by themselves (the busier the peer,
//! the longer its answer takes and the more ops wait), so the work per op
//! falls as the load rises, and a quiet mesh still sends each op at once.
//! Ops also reach each peer in the order they were pushed.
//!
//! The queue is bounded ([`MAX_QUEUED_OPS`], [`MAX_QUEUED_BYTES`]): a peer
//! that stops answering loses its oldest queued ops, which anti-entropy
//! sends later.

use std::collections::VecDeque;

use super::wire::{MAX_BATCH_BYTES, MAX_BATCH_OPS};

/// Most ops waiting for one peer.
pub const MAX_QUEUED_OPS: usize = 4 * MAX_BATCH_OPS;
/// Most op bytes waiting for one peer: two full batches. Ops are small (a
/// few kB), so this bounds only a peer stalled under ops near the wire's
/// limit.
pub const MAX_QUEUED_BYTES: usize = 2 * MAX_BATCH_BYTES;

/// How a push goes: plainly (the peer relays it), or told that the sender
/// sent it to every node ([`super::wire::ToAll::Push`]; not relayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    Plain,
    ToAll,
}

/// What waits in an outbox: an op of a push, or an encoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Op(PushKind),
    Message,
}

/// What leaves an outbox at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Batch {
    /// Ops of one kind, pushed together.
    Ops(PushKind, Vec<Vec<u8>>),
    /// One encoded request (a heartbeat, a live report).
    Message(Vec<u8>),
}

/// The pushes of one peer: the one in flight (by its request id) and the
/// ops and messages waiting behind it.
#[derive(Debug)]
pub(crate) struct Outbox<Id> {
    in_flight: Option<Id>,
    queued: VecDeque<(Item, Vec<u8>)>,
    bytes: usize,
}

impl<Id> Default for Outbox<Id> {
    fn default() -> Self {
        Self {
            in_flight: None,
            queued: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<Id: Copy + PartialEq> Outbox<Id> {
    /// Queues `ops` behind the others. Returns how many of the oldest
    /// queued ops were dropped to stay within the bounds.
    pub(crate) fn queue(
        &mut self,
        kind: PushKind,
        ops: impl IntoIterator<Item = Vec<u8>>,
    ) -> usize {
        for op in ops {
            self.bytes = self.bytes.saturating_add(op.len());
            self.queued.push_back((Item::Op(kind), op));
        }
        self.bound()
    }

    /// Queues one encoded message behind the others. Returns how many of the
    /// oldest queued items were dropped to stay within the bounds.
    pub(crate) fn queue_message(&mut self, message: Vec<u8>) -> usize {
        self.bytes = self.bytes.saturating_add(message.len());
        self.queued.push_back((Item::Message, message));
        self.bound()
    }

    /// Drops the oldest items while over the bounds; returns how many.
    fn bound(&mut self) -> usize {
        let mut dropped = 0;
        while self.queued.len() > MAX_QUEUED_OPS || self.bytes > MAX_QUEUED_BYTES {
            let Some((_, op)) = self.queued.pop_front() else {
                break;
            };
            self.bytes -= op.len();
            dropped += 1;
        }
        dropped
    }

    /// The next batch to send, when no push is in flight: a message alone,
    /// or the queued ops at the front that share its kind, within
    /// [`MAX_BATCH_OPS`] and [`MAX_BATCH_BYTES`] (an op larger than that
    /// leaves alone, and the wire refuses it). The caller sends it and names
    /// it with [`Self::sent`].
    pub(crate) fn next_batch(&mut self) -> Option<Batch> {
        if self.in_flight.is_some() {
            return None;
        }
        let Item::Op(kind) = self.queued.front()?.0 else {
            let (_, message) = self.queued.pop_front()?;
            self.bytes -= message.len();
            return Some(Batch::Message(message));
        };
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some((k, op)) = self.queued.front() {
            let fits = batch.is_empty()
                || (batch.len() < MAX_BATCH_OPS
                    && bytes.saturating_add(op.len()) <= MAX_BATCH_BYTES);
            if *k != Item::Op(kind) || !fits {
                break;
            }
            bytes = bytes.saturating_add(op.len());
            if let Some((_, op)) = self.queued.pop_front() {
                self.bytes -= op.len();
                batch.push(op);
            }
        }
        Some(Batch::Ops(kind, batch))
    }

    /// The batch from [`Self::next_batch`] is in flight as request `id`.
    pub(crate) fn sent(&mut self, id: Id) {
        self.in_flight = Some(id);
    }

    /// Request `id` was answered or failed. Returns whether it was this
    /// peer's push in flight (then the next batch may go).
    pub(crate) fn answered(&mut self, id: Id) -> bool {
        if self.in_flight == Some(id) {
            self.in_flight = None;
            true
        } else {
            false
        }
    }

    /// The push in flight as `old` was sent again as `new`. Returns whether
    /// `old` was in flight.
    pub(crate) fn resent(&mut self, old: Id, new: Id) -> bool {
        if self.in_flight == Some(old) {
            self.in_flight = Some(new);
            true
        } else {
            false
        }
    }

    /// Whether `id` is in flight.
    pub(crate) fn is_in_flight(&self, id: Id) -> bool {
        self.in_flight == Some(id)
    }

    /// Whether nothing is in flight or queued.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.queued.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ops(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| i.to_le_bytes().to_vec()).collect()
    }

    /// The ops of a batch of ops.
    fn ops_of(b: Option<Batch>) -> Vec<Vec<u8>> {
        match b {
            Some(Batch::Ops(_, ops)) => ops,
            other => panic!("not ops: {other:?}"),
        }
    }

    #[test]
    fn a_message_leaves_alone_in_its_place_in_the_queue() {
        let mut o = Outbox::<u32>::default();
        o.queue(PushKind::ToAll, ops(0..2));
        o.queue_message(b"beat".to_vec());
        o.queue(PushKind::ToAll, ops(2..3));
        o.queue_message(b"live".to_vec());
        o.queue_message(b"beat 2".to_vec());
        let mut got = Vec::new();
        for id in 0.. {
            let Some(b) = o.next_batch() else { break };
            got.push(b);
            o.sent(id);
            assert_eq!(o.next_batch(), None, "one in flight at a time");
            assert!(o.answered(id));
        }
        assert_eq!(
            got,
            vec![
                Batch::Ops(PushKind::ToAll, ops(0..2)),
                Batch::Message(b"beat".to_vec()),
                Batch::Ops(PushKind::ToAll, ops(2..3)),
                Batch::Message(b"live".to_vec()),
                Batch::Message(b"beat 2".to_vec()),
            ]
        );
        assert!(o.is_idle());

        // Messages count toward the bounds; the oldest items go first.
        let mut o = Outbox::<u32>::default();
        o.queue_message(b"old".to_vec());
        let n = MAX_QUEUED_OPS as u32;
        assert_eq!(o.queue(PushKind::Plain, ops(0..n)), 1);
        assert_eq!(ops_of(o.next_batch())[0], ops(0..1)[0]);
        let big = vec![0u8; MAX_QUEUED_BYTES];
        let mut o = Outbox::<u32>::default();
        o.queue(PushKind::Plain, ops(0..1));
        assert_eq!(o.queue_message(big), 1, "bounded by bytes too");
    }

    #[test]
    fn ops_pushed_while_one_is_in_flight_leave_together_in_order() {
        let mut o = Outbox::<u32>::default();
        o.queue(PushKind::ToAll, ops(0..1));
        assert_eq!(o.next_batch(), Some(Batch::Ops(PushKind::ToAll, ops(0..1))));
        o.sent(7);
        o.queue(PushKind::ToAll, ops(1..3));
        o.queue(PushKind::ToAll, ops(3..4));
        assert_eq!(o.next_batch(), None, "one push in flight at a time");
        assert!(!o.answered(8), "another request's answer frees nothing");
        assert_eq!(o.next_batch(), None);
        assert!(o.answered(7));
        assert_eq!(o.next_batch(), Some(Batch::Ops(PushKind::ToAll, ops(1..4))));
        o.sent(9);
        assert!(o.answered(9));
        assert_eq!(o.next_batch(), None);
        assert!(o.is_idle());
    }

    #[test]
    fn a_batch_holds_one_kind_and_stays_within_the_wire_limits() {
        let mut o = Outbox::<u32>::default();
        o.queue(PushKind::Plain, ops(0..2));
        o.queue(PushKind::ToAll, ops(2..3));
        o.queue(PushKind::Plain, ops(3..4));
        let mut got = Vec::new();
        for id in 0.. {
            let Some(b) = o.next_batch() else { break };
            got.push(b);
            o.sent(id);
            o.answered(id);
        }
        assert_eq!(
            got,
            vec![
                Batch::Ops(PushKind::Plain, ops(0..2)),
                Batch::Ops(PushKind::ToAll, ops(2..3)),
                Batch::Ops(PushKind::Plain, ops(3..4)),
            ]
        );

        let n = MAX_BATCH_OPS as u32;
        o.queue(PushKind::ToAll, ops(0..n + 1));
        assert_eq!(ops_of(o.next_batch()).len(), MAX_BATCH_OPS);
        o.sent(1);
        o.answered(1);
        assert_eq!(ops_of(o.next_batch()), ops(n..n + 1));

        // Two ops of half the byte limit and one more byte do not share a batch.
        let big = vec![vec![0u8; MAX_BATCH_BYTES / 2 + 1]; 2];
        o.queue(PushKind::Plain, big);
        assert_eq!(ops_of(o.next_batch()).len(), 1);
        o.sent(2);
        o.answered(2);
        assert_eq!(ops_of(o.next_batch()).len(), 1);
    }

    #[test]
    fn a_peer_that_does_not_answer_loses_its_oldest_ops_not_memory() {
        let mut o = Outbox::<u32>::default();
        o.queue(PushKind::ToAll, ops(0..1));
        let _ = o.next_batch();
        o.sent(1);
        let n = MAX_QUEUED_OPS as u32;
        assert_eq!(o.queue(PushKind::ToAll, ops(0..n + 10)), 10);
        o.answered(1);
        let first = ops_of(o.next_batch());
        assert_eq!(first[0], 10u32.to_le_bytes().to_vec(), "the oldest went");

        let mut o = Outbox::<u32>::default();
        let big = vec![vec![0u8; MAX_BATCH_BYTES / 2]; 5];
        assert_eq!(o.queue(PushKind::Plain, big), 1, "bounded by bytes too");
    }
}
