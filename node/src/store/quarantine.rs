//! Refused ops kept with the reason they were refused (`quarantine_v1`);
//! they are never applied. The table holds the same bounded set as the
//! replica's quarantine: each put drops what
//! [`quarantine_overflow`] excludes, and an applied `quarantine.purge`
//! deletes what it names (see `ops.rs`).

use redb::{ReadableTable as _, Table};
use shoal_protocol::Op;
use shoal_protocol::keys::{OpHash, TeamId};
use shoal_protocol::replica::{QuarantineEntry, quarantine_overflow};

use super::Store;
use super::error::{At, StoreError, corrupt};
use super::keys::op_key;
use super::records::{decode_quarantined, encode_quarantined};
use super::schema::QUARANTINE;

impl Store {
    /// Keeps a refused op and the reason (replacing an earlier entry for the
    /// same op), then drops the team's oldest entries beyond the quarantine
    /// bounds, as every replica does.
    pub fn put_quarantined(
        &self,
        team: TeamId,
        hash: OpHash,
        reason: &str,
        op_bytes: &[u8],
    ) -> Result<(), StoreError> {
        let p = &self.path;
        let value = encode_quarantined(reason, op_bytes)?;
        let txn = self.write()?;
        {
            let mut q = txn.open_table(QUARANTINE).at(p)?;
            q.insert(&op_key(&team, &hash), value.as_slice()).at(p)?;
            let over = overflow(&q, team).at(p)?;
            for h in over {
                q.remove(&op_key(&team, &h)).at(p)?;
            }
        }
        txn.commit().at(p)
    }

    /// Deletes quarantined ops of `team` (purged, or refused on load).
    pub fn delete_quarantined(&self, team: TeamId, ops: &[OpHash]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let p = &self.path;
        let txn = self.write()?;
        {
            let mut q = txn.open_table(QUARANTINE).at(p)?;
            for h in ops {
                q.remove(&op_key(&team, h)).at(p)?;
            }
        }
        txn.commit().at(p)
    }

    /// How many ops of `team` are in quarantine.
    pub fn quarantine_count(&self, team: TeamId) -> Result<u64, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        let q = txn.open_table(QUARANTINE).at(p)?;
        let lo = op_key(&team, &OpHash([0; 32]));
        let hi = op_key(&team, &OpHash([0xff; 32]));
        let mut n = 0u64;
        for entry in q.range::<&[u8; 64]>(&lo..=&hi).at(p)? {
            entry.at(p)?;
            n += 1;
        }
        Ok(n)
    }

    /// Every quarantined op of `team` with its reason, ordered by op hash.
    pub fn quarantined(&self, team: TeamId) -> Result<Vec<(OpHash, String, Vec<u8>)>, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        let q = txn.open_table(QUARANTINE).at(p)?;
        let lo = op_key(&team, &OpHash([0; 32]));
        let hi = op_key(&team, &OpHash([0xff; 32]));
        let mut out = Vec::new();
        for entry in q.range::<&[u8; 64]>(&lo..=&hi).at(p)? {
            let (k, v) = entry.at(p)?;
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&k.value()[32..]);
            let hash = OpHash(hash);
            let (reason, op) = decode_quarantined(v.value())
                .ok_or_else(|| corrupt(p, format!("quarantine entry {hash} is malformed")))?;
            out.push((hash, reason.to_string(), op.to_vec()));
        }
        Ok(out)
    }
}

/// The entries of `team` the bounds exclude. An entry whose op does not
/// decode counts for nothing (the node only stores decoded ops).
fn overflow(
    q: &Table<'_, &'static [u8; 64], &'static [u8]>,
    team: TeamId,
) -> Result<Vec<OpHash>, redb::StorageError> {
    let lo = op_key(&team, &OpHash([0; 32]));
    let hi = op_key(&team, &OpHash([0xff; 32]));
    let mut entries = Vec::new();
    for entry in q.range::<&[u8; 64]>(&lo..=&hi)? {
        let (k, v) = entry?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&k.value()[32..]);
        let Some((_, bytes)) = decode_quarantined(v.value()) else {
            continue;
        };
        if let Ok(op) = Op::decode(bytes) {
            entries.push(QuarantineEntry::of(&op, OpHash(hash), bytes.len()));
        }
    }
    Ok(quarantine_overflow(&entries))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    use crate::store::test_support::{hash, team, temp};

    #[test]
    fn quarantine_round_trip() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        let t = team(1);
        assert!(store.quarantined(t).unwrap().is_empty());
        store
            .put_quarantined(t, hash(5), "bad signature", b"op five")
            .unwrap();
        store.put_quarantined(t, hash(3), "", b"").unwrap();
        store
            .put_quarantined(team(2), hash(4), "other team", b"x")
            .unwrap();
        store
            .put_quarantined(t, hash(5), "fork: seq 2 ünïcode", b"op five again")
            .unwrap();
        assert_eq!(
            store.quarantined(t).unwrap(),
            vec![
                (hash(3), String::new(), vec![]),
                (
                    hash(5),
                    "fork: seq 2 ünïcode".to_string(),
                    b"op five again".to_vec()
                ),
            ]
        );
        assert_eq!(store.quarantined(team(2)).unwrap().len(), 1);
    }

    /// Signed `team.update` ops of one author, each with its own time.
    fn signed(n: usize) -> Vec<Op> {
        use shoal_protocol::testkit::{Clock, genesis, key, sign_op};
        let (owner, node) = (key(1), key(2));
        let mut clock = Clock(1_000_000);
        let mut r =
            shoal_protocol::Replica::from_genesis(genesis(&owner, &node, clock.tick())).unwrap();
        (0..n)
            .map(|i| {
                let action = shoal_protocol::Action::TeamUpdate {
                    name: "team".into(),
                    description: format!("{i}"),
                };
                sign_op(&mut r, &owner, node.public(), clock.tick(), action).unwrap()
            })
            .collect()
    }

    #[test]
    fn the_quarantine_is_bounded_and_purged_by_an_applied_purge() {
        use shoal_protocol::replica::QUARANTINE_MAX_OPS_PER_AUTHOR as MAX;
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        let t = team(1);
        let ops = signed(MAX + 3);
        for op in &ops {
            store
                .put_quarantined(t, op.hash(), "refused", &op.encode())
                .unwrap();
        }
        let kept: Vec<OpHash> = store
            .quarantined(t)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(kept.len(), MAX);
        // The oldest three went.
        for op in &ops[..3] {
            assert!(!kept.contains(&op.hash()));
        }
        // An applied purge deletes what it names.
        let purge = shoal_protocol::Action::QuarantinePurge {
            ops: vec![ops[3].hash(), ops[4].hash()],
        };
        let mut op = ops[5].clone();
        op.body.action = purge;
        store
            .append_ops(t, &[(op.hash(), op.log(), 1, op.encode())])
            .unwrap();
        assert_eq!(store.quarantine_count(t).unwrap(), MAX as u64 - 2);
        store.delete_quarantined(t, &[ops[6].hash()]).unwrap();
        assert_eq!(store.quarantine_count(t).unwrap(), MAX as u64 - 3);
    }
}
