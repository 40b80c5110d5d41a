//! The teams this node belongs to (`teams_v1`): their records, and removing
//! a team with everything of it.

use redb::ReadableTable;
use shoal_protocol::keys::{OpHash, TeamId};

use super::Store;
use super::error::{At, StoreError};
use super::keys::{op_key, order_key};
use super::records::TeamRecord;
use super::schema::{LOGS, OPS, ORDER, QUARANTINE, SNAPSHOTS, TEAMS};

impl Store {
    /// Adds or replaces the record of `team`. Only records of the current
    /// [`TEAM_RECORD_VERSION`](super::TEAM_RECORD_VERSION) are written.
    pub fn put_team(&self, team: TeamId, record: &TeamRecord) -> Result<(), StoreError> {
        let p = &self.path;
        let bytes = record.encode(team)?;
        let txn = self.write()?;
        {
            let mut t = txn.open_table(TEAMS).at(p)?;
            t.insert(&team.0, bytes.as_slice()).at(p)?;
        }
        txn.commit().at(p)
    }

    /// The record of `team`, if this node belongs to it.
    pub fn team(&self, team: TeamId) -> Result<Option<TeamRecord>, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        let t = txn.open_table(TEAMS).at(p)?;
        match t.get(&team.0).at(p)? {
            Some(v) => Ok(Some(TeamRecord::decode(team, v.value(), p)?)),
            None => Ok(None),
        }
    }

    /// Every team of this node, ordered by team id.
    pub fn teams(&self) -> Result<Vec<(TeamId, TeamRecord)>, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        let t = txn.open_table(TEAMS).at(p)?;
        let mut out = Vec::new();
        for entry in t.iter().at(p)? {
            let (k, v) = entry.at(p)?;
            let team = TeamId(*k.value());
            out.push((team, TeamRecord::decode(team, v.value(), p)?));
        }
        Ok(out)
    }

    /// Removes `team` and everything of it (record, ops, order, logs,
    /// quarantine, snapshot) in one transaction. Used to undo a join that
    /// the team refused.
    pub fn delete_team(&self, team: TeamId) -> Result<(), StoreError> {
        let p = &self.path;
        let txn = self.write()?;
        {
            txn.open_table(TEAMS).at(p)?.remove(&team.0).at(p)?;
            txn.open_table(SNAPSHOTS).at(p)?.remove(&team.0).at(p)?;
            let (lo, hi) = (
                op_key(&team, &OpHash([0; 32])),
                op_key(&team, &OpHash([0xff; 32])),
            );
            txn.open_table(OPS)
                .at(p)?
                .retain_in::<&[u8; 64], _>(&lo..=&hi, |_, _| false)
                .at(p)?;
            txn.open_table(QUARANTINE)
                .at(p)?
                .retain_in::<&[u8; 64], _>(&lo..=&hi, |_, _| false)
                .at(p)?;
            let (lo, hi) = (order_key(&team, 0), order_key(&team, u64::MAX));
            txn.open_table(ORDER)
                .at(p)?
                .retain_in::<&[u8; 40], _>(&lo..=&hi, |_, _| false)
                .at(p)?;
            let mut lo = [0u8; 104];
            let mut hi = [0xffu8; 104];
            lo[..32].copy_from_slice(&team.0);
            hi[..32].copy_from_slice(&team.0);
            txn.open_table(LOGS)
                .at(p)?
                .retain_in::<&[u8; 104], _>(&lo..=&hi, |_, _| false)
                .at(p)?;
        }
        txn.commit().at(p)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    use crate::store::test_support::{entry, hash, log, raw_insert, team, temp};

    #[test]
    fn teams_round_trip() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        let a = TeamRecord::new("alpha", [1; 32], 1_000);
        let b = TeamRecord::new("beta", [2; 32], 2_000);
        store.put_team(team(2), &b).unwrap();
        store.put_team(team(1), &a).unwrap();
        assert_eq!(
            store.teams().unwrap(),
            vec![(team(1), a.clone()), (team(2), b.clone())]
        );
        assert_eq!(store.team(team(1)).unwrap(), Some(a));
        assert_eq!(store.team(team(3)).unwrap(), None);
        let renamed = TeamRecord::new("beta2", [2; 32], 2_000);
        store.put_team(team(2), &renamed).unwrap();
        assert_eq!(store.team(team(2)).unwrap(), Some(renamed));
        assert_eq!(store.teams().unwrap().len(), 2);
        assert!(
            !format!("{b:?}").contains("2, 2"),
            "psk must not be printed"
        );
    }

    #[test]
    fn delete_team_removes_only_that_team() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        for t in [team(1), team(2)] {
            store
                .put_team(t, &TeamRecord::new("x", [1; 32], 0))
                .unwrap();
            store
                .append_ops(t, &[entry(1, 1, 1), entry(2, 1, 2)])
                .unwrap();
            store.put_quarantined(t, hash(9), "bad", &[9]).unwrap();
            store.put_snapshot(t, 2, &[1, 2, 3]).unwrap();
        }
        store.delete_team(team(1)).unwrap();
        assert_eq!(store.team(team(1)).unwrap(), None);
        assert_eq!(store.op_count(team(1)).unwrap(), 0);
        assert!(store.ops_in_order(team(1)).unwrap().is_empty());
        assert!(store.quarantined(team(1)).unwrap().is_empty());
        assert!(store.snapshot(team(1)).unwrap().is_none());
        assert_eq!(store.log_head(team(1), log(1)).unwrap(), None);
        assert_eq!(store.get_op(team(1), hash(1)).unwrap(), None);
        // The other team is untouched, and the deleted one can come back.
        assert_eq!(store.op_count(team(2)).unwrap(), 2);
        assert_eq!(store.quarantined(team(2)).unwrap().len(), 1);
        assert_eq!(store.log_head(team(2), log(1)).unwrap(), Some(2));
        store.append_ops(team(1), &[entry(1, 1, 1)]).unwrap();
        assert_eq!(store.op_count(team(1)).unwrap(), 1);
    }

    #[test]
    fn unknown_team_record_version_is_refused() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        let mut future = TeamRecord::new("x", [0; 32], 0);
        future.version = 2;
        let err = store.put_team(team(1), &future).unwrap_err();
        assert!(matches!(
            err,
            StoreError::TeamRecordVersion { found: 2, .. }
        ));
        assert!(store.teams().unwrap().is_empty());
        drop(store);

        // A record written by a newer build.
        let t = team(7);
        raw_insert(&path, TEAMS, &t.0, &[9, 1, 2, 3]);
        let store = Store::open(&path).unwrap();
        let err = store.teams().unwrap_err();
        assert!(
            matches!(err, StoreError::TeamRecordVersion { found: 9, supported: 1, team } if team == t),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade shoal"), "{err}");
        assert!(store.team(t).is_err());
    }
}
