//! The latest saved document of each team (`snapshots_v1`), with the
//! number of ops of the application order it holds.

use shoal_protocol::keys::TeamId;

use super::Store;
use super::error::{At, StoreError, corrupt};
use super::ops::next_index;
use super::records::{decode_snapshot, encode_snapshot};
use super::schema::{ORDER, SNAPSHOTS};

impl Store {
    /// Saves the document of `team` holding exactly its first `covers` ops
    /// in application order, replacing the previous snapshot.
    pub fn put_snapshot(&self, team: TeamId, covers: u64, doc: &[u8]) -> Result<(), StoreError> {
        let p = &self.path;
        let value = encode_snapshot(covers, doc);
        let txn = self.write()?;
        {
            let order = txn.open_table(ORDER).at(p)?;
            let count = next_index(&order, &team).at(p)?;
            if covers > count {
                return Err(StoreError::Invalid(format!(
                    "a snapshot of team {team} cannot cover {covers} ops: only {count} are stored"
                )));
            }
            let mut s = txn.open_table(SNAPSHOTS).at(p)?;
            s.insert(&team.0, value.as_slice()).at(p)?;
        }
        txn.commit().at(p)
    }

    /// The latest snapshot of `team`: how many ops it covers and the saved
    /// document.
    pub fn snapshot(&self, team: TeamId) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        let s = txn.open_table(SNAPSHOTS).at(p)?;
        let Some(v) = s.get(&team.0).at(p)? else {
            return Ok(None);
        };
        let (covers, doc) = decode_snapshot(v.value())
            .ok_or_else(|| corrupt(p, format!("the snapshot of team {team} is malformed")))?;
        Ok(Some((covers, doc.to_vec())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    use crate::store::test_support::{entry, team, temp};

    #[test]
    fn snapshots_round_trip() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        let t = team(1);
        assert_eq!(store.snapshot(t).unwrap(), None);
        store.put_snapshot(t, 0, b"empty").unwrap();
        assert_eq!(store.snapshot(t).unwrap(), Some((0, b"empty".to_vec())));
        store
            .append_ops(t, &[entry(1, 1, 1), entry(2, 1, 2)])
            .unwrap();
        store.put_snapshot(t, 2, b"doc at two").unwrap();
        assert_eq!(
            store.snapshot(t).unwrap(),
            Some((2, b"doc at two".to_vec()))
        );
        let err = store.put_snapshot(t, 3, b"too far").unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        assert_eq!(
            store.snapshot(t).unwrap(),
            Some((2, b"doc at two".to_vec()))
        );
        assert_eq!(store.snapshot(team(2)).unwrap(), None);
    }
}
