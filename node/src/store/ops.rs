//! Applied ops (`ops_v1`), their application order (`order_v1`) and their
//! logs (`logs_v1`): appending a batch in one durable transaction, and
//! reading ops back in order, by hash or by log. An applied
//! `quarantine.purge` deletes the ops it names from `quarantine_v1` in the
//! same transaction. When a late revocation or a lost fork voids ops that
//! were applied, [`Store::rewrite_order`] takes them out and rewrites the
//! order, so a restart rebuilds exactly the state the replica holds.

use redb::ReadableTable;
use shoal_protocol::keys::{LogId, OpHash, TeamId};
use shoal_protocol::{Action, Op};

use super::Store;
use super::error::{At, StoreError, corrupt};
use super::keys::{log_key, op_key, order_key, tail_u64};
use super::records::encode_quarantined;
use super::records::{OpEntry, VoidedEntry};
use super::schema::{LOGS, OPS, ORDER, QUARANTINE, SNAPSHOTS};

/// Index of the next op of `team` in `order_v1` (= the number of ops).
pub(super) fn next_index(
    table: &impl ReadableTable<&'static [u8; 40], &'static [u8; 32]>,
    team: &TeamId,
) -> Result<u64, redb::Error> {
    let lo = order_key(team, 0);
    let hi = order_key(team, u64::MAX);
    Ok(match table.range::<&[u8; 40]>(&lo..=&hi)?.next_back() {
        Some(entry) => tail_u64(entry?.0.value()) + 1,
        None => 0,
    })
}

impl Store {
    /// Appends applied ops of `team`, in the order they were applied, in one
    /// durable transaction: when this returns `Ok` every op of the batch is
    /// on disk; on any error none is. An op already stored, or a second op
    /// for a (log, seq) already held, refuses the whole batch. The ops a
    /// `quarantine.purge` of the batch names leave the quarantine with it.
    ///
    /// Returns the number of ops of `team` stored after the batch.
    pub fn append_ops(&self, team: TeamId, ops: &[OpEntry]) -> Result<u64, StoreError> {
        let p = &self.path;
        let conflict = |detail: String| StoreError::Conflict { team, detail };
        let txn = self.write()?;
        let count = {
            let mut order = txn.open_table(ORDER).at(p)?;
            let mut all = txn.open_table(OPS).at(p)?;
            let mut logs = txn.open_table(LOGS).at(p)?;
            let mut quarantine = txn.open_table(QUARANTINE).at(p)?;
            let mut next = next_index(&order, &team).at(p)?;
            for (hash, log, seq, bytes) in ops {
                if *seq == 0 {
                    return Err(StoreError::Invalid(format!(
                        "op {hash} has seq 0, but log seqs start at 1"
                    )));
                }
                if bytes.is_empty() {
                    return Err(StoreError::Invalid(format!("op {hash} has no bytes")));
                }
                let ok = op_key(&team, hash);
                if all.get(&ok).at(p)?.is_some() {
                    return Err(conflict(format!("op {hash} is already stored")));
                }
                let lk = log_key(&team, log, *seq);
                if let Some(held) = logs.get(&lk).at(p)? {
                    return Err(conflict(format!(
                        "log {log} already holds op {} at seq {seq}, so op {hash} cannot be stored there",
                        OpHash(*held.value())
                    )));
                }
                all.insert(&ok, bytes.as_slice()).at(p)?;
                order.insert(&order_key(&team, next), &hash.0).at(p)?;
                logs.insert(&lk, &hash.0).at(p)?;
                // An op refused once (voided, then offered again) leaves
                // the quarantine when it applies.
                quarantine.remove(&ok).at(p)?;
                if let Ok(Op {
                    body:
                        shoal_protocol::OpBody {
                            action: Action::QuarantinePurge { ops: purged },
                            ..
                        },
                    ..
                }) = Op::decode(bytes)
                {
                    for h in &purged {
                        quarantine.remove(&op_key(&team, h)).at(p)?;
                    }
                }
                next += 1;
            }
            next
        };
        txn.commit().at(p)?;
        Ok(count)
    }

    /// Replaces the application order of `team` by `order` (every op the
    /// replica holds applied, in its order) in one durable transaction: the
    /// `voided` ops leave `ops_v1` and `logs_v1`
    /// for `quarantine_v1`; ops of `order` not stored yet come from `new`;
    /// the snapshot is dropped, as it may hold a voided op (the caller saves
    /// a fresh one). Returns the number of ops stored.
    pub fn rewrite_order(
        &self,
        team: TeamId,
        order: &[OpHash],
        new: &[OpEntry],
        voided: &[VoidedEntry],
    ) -> Result<u64, StoreError> {
        let p = &self.path;
        let txn = self.write()?;
        {
            let mut ord = txn.open_table(ORDER).at(p)?;
            let mut all = txn.open_table(OPS).at(p)?;
            let mut logs = txn.open_table(LOGS).at(p)?;
            let mut quarantine = txn.open_table(QUARANTINE).at(p)?;
            let mut snapshots = txn.open_table(SNAPSHOTS).at(p)?;
            for VoidedEntry {
                op: (hash, log, seq, bytes),
                reason,
            } in voided
            {
                all.remove(&op_key(&team, hash)).at(p)?;
                let lk = log_key(&team, log, *seq);
                let holds = logs.get(&lk).at(p)?.map(|h| *h.value());
                if holds == Some(hash.0) {
                    logs.remove(&lk).at(p)?;
                }
                let value = encode_quarantined(reason, bytes)?;
                quarantine
                    .insert(&op_key(&team, hash), value.as_slice())
                    .at(p)?;
            }
            for (hash, log, seq, bytes) in new {
                let ok = op_key(&team, hash);
                if all.get(&ok).at(p)?.is_none() {
                    all.insert(&ok, bytes.as_slice()).at(p)?;
                    logs.insert(&log_key(&team, log, *seq), &hash.0).at(p)?;
                }
            }
            let lo = order_key(&team, 0);
            let hi = order_key(&team, u64::MAX);
            let mut stale = Vec::new();
            for entry in ord.range::<&[u8; 40]>(&lo..=&hi).at(p)? {
                stale.push(*entry.at(p)?.0.value());
            }
            for k in &stale {
                ord.remove(k).at(p)?;
            }
            for (i, hash) in order.iter().enumerate() {
                let ok = op_key(&team, hash);
                if all.get(&ok).at(p)?.is_none() {
                    return Err(StoreError::Invalid(format!(
                        "op {hash} of the new order of team {team} is not stored"
                    )));
                }
                quarantine.remove(&ok).at(p)?;
                ord.insert(&order_key(&team, i as u64), &hash.0).at(p)?;
            }
            snapshots.remove(&team.0).at(p)?;
        }
        txn.commit().at(p)?;
        Ok(order.len() as u64)
    }

    /// Number of ops of `team` stored in `order_v1`.
    pub fn op_count(&self, team: TeamId) -> Result<u64, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        let order = txn.open_table(ORDER).at(p)?;
        next_index(&order, &team).at(p)
    }

    /// Every encoded op of `team`, in application order.
    pub fn ops_in_order(&self, team: TeamId) -> Result<Vec<Vec<u8>>, StoreError> {
        self.ops_from(team, 0)
    }

    /// The encoded ops of `team` from index `start` (0-based) of the
    /// application order on: after loading a snapshot that covers `n` ops,
    /// `ops_from(team, n)` are the ops still to apply.
    pub fn ops_from(&self, team: TeamId, start: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        let order = txn.open_table(ORDER).at(p)?;
        let all = txn.open_table(OPS).at(p)?;
        let lo = order_key(&team, start);
        let hi = order_key(&team, u64::MAX);
        let mut out = Vec::new();
        for entry in order.range::<&[u8; 40]>(&lo..=&hi).at(p)? {
            let (k, h) = entry.at(p)?;
            let hash = OpHash(*h.value());
            let op = all.get(&op_key(&team, &hash)).at(p)?.ok_or_else(|| {
                corrupt(
                    p,
                    format!(
                        "op {hash} at position {} of team {team} is missing",
                        tail_u64(k.value())
                    ),
                )
            })?;
            out.push(op.value().to_vec());
        }
        Ok(out)
    }

    /// The encoded op `hash` of `team`, if stored.
    pub fn get_op(&self, team: TeamId, hash: OpHash) -> Result<Option<Vec<u8>>, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        let all = txn.open_table(OPS).at(p)?;
        Ok(all
            .get(&op_key(&team, &hash))
            .at(p)?
            .map(|v| v.value().to_vec()))
    }

    /// The highest seq of `log` stored for `team`, if any.
    pub fn log_head(&self, team: TeamId, log: LogId) -> Result<Option<u64>, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        let logs = txn.open_table(LOGS).at(p)?;
        let lo = log_key(&team, &log, 0);
        let hi = log_key(&team, &log, u64::MAX);
        match logs.range::<&[u8; 104]>(&lo..=&hi).at(p)?.next_back() {
            Some(entry) => Ok(Some(tail_u64(entry.at(p)?.0.value()))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    use crate::store::test_support::{entry, hash, log, team, temp};

    #[test]
    fn ops_round_trip() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        let t = team(1);
        assert_eq!(store.op_count(t).unwrap(), 0);
        assert!(store.ops_in_order(t).unwrap().is_empty());
        assert_eq!(store.log_head(t, log(1)).unwrap(), None);

        let first = vec![entry(10, 1, 1), entry(11, 2, 1), entry(12, 1, 2)];
        assert_eq!(store.append_ops(t, &first).unwrap(), 3);
        let second = vec![entry(13, 1, 3), entry(14, 2, 2)];
        assert_eq!(store.append_ops(t, &second).unwrap(), 5);
        assert_eq!(store.append_ops(t, &[]).unwrap(), 5);
        // Another team's ops are kept apart.
        let other = team(2);
        store.append_ops(other, &[entry(10, 1, 1)]).unwrap();

        let all: Vec<OpEntry> = first.iter().chain(&second).cloned().collect();
        let bytes: Vec<Vec<u8>> = all.iter().map(|e| e.3.clone()).collect();
        assert_eq!(store.ops_in_order(t).unwrap(), bytes);
        assert_eq!(store.ops_from(t, 3).unwrap(), bytes[3..].to_vec());
        assert!(store.ops_from(t, 5).unwrap().is_empty());
        assert_eq!(store.op_count(t).unwrap(), 5);
        assert_eq!(store.op_count(other).unwrap(), 1);
        assert_eq!(store.ops_in_order(other).unwrap(), vec![bytes[0].clone()]);
        for e in &all {
            assert_eq!(store.get_op(t, e.0).unwrap(), Some(e.3.clone()));
        }
        assert_eq!(store.get_op(t, hash(99)).unwrap(), None);
        assert_eq!(store.get_op(other, hash(11)).unwrap(), None);
        assert_eq!(store.log_head(t, log(1)).unwrap(), Some(3));
        assert_eq!(store.log_head(t, log(2)).unwrap(), Some(2));
        assert_eq!(store.log_head(t, log(3)).unwrap(), None);
        assert_eq!(store.log_head(other, log(1)).unwrap(), Some(1));
        assert_eq!(store.log_head(other, log(2)).unwrap(), None);
    }

    #[test]
    fn rewrite_order_takes_voided_ops_out_and_frees_their_seats() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        let t = team(1);
        let other = team(2);
        let ops = [
            entry(10, 1, 1),
            entry(11, 2, 1),
            entry(12, 2, 2),
            entry(13, 1, 2),
        ];
        store.append_ops(t, &ops).unwrap();
        store.append_ops(other, &[entry(10, 1, 1)]).unwrap();
        store.put_snapshot(t, 4, b"doc").unwrap();
        // 11 is voided (12 depends on it), 14 is new, applied after them.
        let voided: Vec<VoidedEntry> = [&ops[1], &ops[2]]
            .iter()
            .map(|e| VoidedEntry {
                op: (*e).clone(),
                reason: "voided by ff".into(),
            })
            .collect();
        let order = [hash(10), hash(13), hash(14)];
        let count = store
            .rewrite_order(t, &order, &[entry(14, 3, 1)], &voided)
            .unwrap();
        assert_eq!(count, 3);
        assert_eq!(
            store.ops_in_order(t).unwrap(),
            vec![ops[0].3.clone(), ops[3].3.clone(), entry(14, 3, 1).3]
        );
        assert_eq!(store.get_op(t, hash(11)).unwrap(), None);
        assert_eq!(store.log_head(t, log(2)).unwrap(), None);
        assert_eq!(store.log_head(t, log(3)).unwrap(), Some(1));
        // The snapshot held a voided op: it is gone.
        assert_eq!(store.snapshot(t).unwrap(), None);
        let q = store.quarantined(t).unwrap();
        assert_eq!(q.len(), 2);
        assert!(q.iter().all(|(_, why, _)| why == "voided by ff"));
        // The freed seat takes another op; the other team is untouched.
        assert_eq!(store.append_ops(t, &[entry(15, 2, 1)]).unwrap(), 4);
        assert_eq!(store.op_count(other).unwrap(), 1);
        // An order naming an op that is not stored is refused whole.
        let err = store
            .rewrite_order(t, &[hash(10), hash(99)], &[], &[])
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        assert_eq!(store.op_count(t).unwrap(), 4);
    }

    #[test]
    fn append_ops_is_all_or_nothing() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        let t = team(1);
        store.append_ops(t, &[entry(1, 1, 1)]).unwrap();

        let check_unchanged = |store: &Store| {
            assert_eq!(store.op_count(t).unwrap(), 1);
            assert_eq!(store.ops_in_order(t).unwrap(), vec![entry(1, 1, 1).3]);
            assert_eq!(store.get_op(t, hash(2)).unwrap(), None);
            assert_eq!(store.get_op(t, hash(3)).unwrap(), None);
            assert_eq!(store.log_head(t, log(1)).unwrap(), Some(1));
            assert_eq!(store.log_head(t, log(2)).unwrap(), None);
        };

        // The last op of the batch repeats one already stored.
        let err = store
            .append_ops(t, &[entry(2, 1, 2), entry(3, 2, 1), entry(1, 1, 1)])
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("nothing of the batch was written"));
        check_unchanged(&store);

        // The batch repeats one of its own ops.
        let err = store
            .append_ops(t, &[entry(2, 1, 2), entry(2, 1, 2)])
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        check_unchanged(&store);

        // A second op at a (log, seq) already held: a fork.
        let err = store
            .append_ops(t, &[entry(3, 2, 1), entry(2, 1, 1)])
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        check_unchanged(&store);

        // Malformed entries.
        assert!(matches!(
            store.append_ops(t, &[entry(2, 1, 2), entry(3, 2, 0)]),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.append_ops(t, &[entry(2, 1, 2), (hash(3), log(2), 1, vec![])]),
            Err(StoreError::Invalid(_))
        ));
        check_unchanged(&store);

        // Nothing was left behind: the same ops still append cleanly.
        drop(store);
        let store = Store::open(&path).unwrap();
        check_unchanged(&store);
        assert_eq!(
            store
                .append_ops(t, &[entry(2, 1, 2), entry(3, 2, 1)])
                .unwrap(),
            3
        );
    }
}
