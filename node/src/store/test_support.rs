//! Helpers shared by the store's unit tests: a store path in a temporary
//! directory, made-up ids and op entries, and raw redb writes that bypass
//! the store's checks.

use std::path::{Path, PathBuf};

use redb::{Database, TableDefinition};
use shoal_protocol::SecretKey;
use shoal_protocol::keys::{LogId, OpHash, TeamId};

use super::records::OpEntry;

pub(super) fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    (dir, path)
}

pub(super) fn team(n: u8) -> TeamId {
    TeamId([n; 32])
}

pub(super) fn hash(n: u8) -> OpHash {
    OpHash([n; 32])
}

pub(super) fn log(n: u8) -> LogId {
    let k = SecretKey::from_seed([n; 32]).public();
    LogId {
        author: k,
        origin: k,
    }
}

pub(super) fn entry(n: u8, log_n: u8, seq: u64) -> OpEntry {
    (hash(n), log(log_n), seq, vec![n; 3 + n as usize])
}

/// Writes raw values with redb, bypassing the store's checks.
pub(super) fn raw_insert<K: redb::Key + 'static>(
    path: &Path,
    table: TableDefinition<K, &[u8]>,
    key: K::SelfType<'_>,
    value: &[u8],
) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(table).unwrap();
        t.insert(key, value).unwrap();
    }
    txn.commit().unwrap();
}
