//! Refused ops kept with the reason they were refused (`quarantine_v1`);
//! they are never applied.

use shoal_protocol::keys::{OpHash, TeamId};

use super::Store;
use super::error::{At, StoreError, corrupt};
use super::keys::op_key;
use super::records::{decode_quarantined, encode_quarantined};
use super::schema::QUARANTINE;

impl Store {
    /// Keeps a refused op and the reason (replacing an earlier entry for the
    /// same op).
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
}
