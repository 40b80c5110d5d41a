//! The node's one durable store (§4 "Storage"): a single redb database per
//! node holding every team's ops, their application order, quarantined ops,
//! document snapshots and the node's own local values.
//!
//! The store is a folder of files, each depending only on those listed
//! before it:
//! - `error.rs`: [`StoreError`], whose messages say what the operator can do.
//! - `schema.rs`: every table, with its versioned name and documented
//!   key/value layout, the schema version and [`MIGRATIONS`].
//! - `keys.rs`: encoding of the tables' keys.
//! - `records.rs`: the persisted values ([`TeamRecord`], [`OpEntry`], the
//!   quarantine and snapshot layouts) and their encodings.
//! - `probe.rs`: reads an existing file's schema version without changing it.
//! - this file: [`Store`], opening it and migrating its schema.
//! - `teams.rs`, `ops.rs`, `quarantine.rs`, `snapshots.rs`, `local.rs`: the
//!   [`Store`] methods for each group of tables.
//!
//! The layout of the whole file has a schema version, kept in `meta_v1` and
//! checked on every open: a file written by a newer shoal is refused before
//! anything is written to it (the user must install that shoal or a newer
//! one), an older one is migrated in place, in one transaction, through
//! [`MIGRATIONS`], each step logged. So upgrading a node is replacing the
//! binary and restarting the daemon.
//!
//! Every write commits with immediate durability before the call returns, so
//! a caller may acknowledge or forward an op as soon as
//! [`Store::append_ops`] has returned `Ok`.
//!
//! The API is synchronous; async callers run it on a blocking task.

mod error;
mod keys;
mod local;
mod ops;
mod probe;
mod quarantine;
mod records;
mod schema;
mod snapshots;
mod teams;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod test_support;

use std::fs;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{
    Builder, Database, Durability, ReadTransaction, ReadableDatabase, TableHandle, WriteTransaction,
};
use tracing::{info, warn};

use self::error::{At, THIS_RELEASE, corrupt, too_new};
use self::probe::probe_schema;
use self::schema::{META, SCHEMA_KEY, WRITTEN_BY_KEY, create_tables, read_schema, read_written_by};

pub use self::error::StoreError;
pub use self::records::{OpEntry, TEAM_RECORD_VERSION, TeamRecord, VoidedEntry};
pub use self::schema::{MIGRATIONS, Migration, SCHEMA_VERSION};

/// redb's page cache. Its default (1 GiB) keeps every page the daemon
/// writes or reads in memory, so a daemon's resident memory grew with its
/// store. The replica holds the ops in memory and the store is read whole
/// only at start, so a few MiB do.
pub const STORE_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// The node's durable store. Cheap to share behind an `Arc`: every method
/// takes `&self`, reads run concurrently and writes are serialised.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Write transactions begun since the store was opened (each commits
    /// with an fsync): `shoal_store_write_transactions_total`.
    writes: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens the store at `path`, creating the file (mode 0600) and its
    /// parent directory (mode 0700) if they are missing. Checks the file's
    /// integrity and schema version, and migrates an older schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Self::open_with(path.as_ref(), SCHEMA_VERSION, MIGRATIONS)
    }

    fn open_with(path: &Path, current: u32, migrations: &[Migration]) -> Result<Store, StoreError> {
        // A file of a newer schema is refused before it is opened for
        // writing: opening it read-write would already rewrite its header.
        // The probe's integrity check also reports a damaged file.
        if let Some((found, written_by)) = probe_schema(path)?
            && found > current
        {
            return Err(too_new(path, found, current, written_by));
        }
        let path = path.to_path_buf();
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(io)?;
        }
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(io)?;
        let backend = FileBackend::new(file).at(&path)?;
        let mut builder = Builder::new();
        // Verify every page on open: a damaged file is reported, not trusted.
        builder.set_check_integrity_on_open(true);
        builder.set_cache_size(STORE_CACHE_BYTES);
        let db = builder.create_with_backend(backend).at(&path)?;
        let store = Store {
            db,
            path,
            writes: std::sync::atomic::AtomicU64::new(0),
        };
        store.prepare_schema(current, migrations)?;
        Ok(store)
    }

    /// Checks the schema version, initialises a new file and migrates an
    /// older one, all in one transaction.
    fn prepare_schema(&self, current: u32, migrations: &[Migration]) -> Result<(), StoreError> {
        let p = &self.path;
        let txn = self.write()?;
        let names: Vec<String> = txn
            .list_tables()
            .at(p)?
            .map(|t| t.name().to_string())
            .collect();
        let (found, written_by) = if names.iter().any(|n| n == META.name()) {
            let meta = txn.open_table(META).at(p)?;
            (Some(read_schema(&meta, p)?), read_written_by(&meta, p)?)
        } else if names.is_empty() {
            (None, None)
        } else {
            return Err(corrupt(
                p,
                "it holds tables but no schema version, so it was not written by shoal",
            ));
        };
        match found {
            None => {}
            Some(0) => return Err(corrupt(p, "its schema version is 0")),
            Some(v) if v > current => return Err(too_new(p, v, current, written_by)),
            Some(v) if v == current => {}
            Some(v) => {
                info!(
                    store = %p.display(),
                    from = v,
                    to = current,
                    last_opened_by = written_by.as_deref().unwrap_or("(unknown)"),
                    "migrating the store to this shoal's schema"
                );
                for from in v..current {
                    let fail = |detail: String| StoreError::Migration {
                        path: p.clone(),
                        from,
                        detail,
                    };
                    let step = usize::try_from(from - 1)
                        .ok()
                        .and_then(|i| migrations.get(i))
                        .ok_or_else(|| fail("this build has no migration for it".into()))?;
                    step(&txn).map_err(|e| {
                        warn!(store = %p.display(), from, "store migration failed: {e}");
                        fail(e.to_string())
                    })?;
                    info!(store = %p.display(), from, to = from + 1, "store migrated one schema step");
                }
            }
        }
        create_tables(&txn).at(p)?;
        {
            let mut meta = txn.open_table(META).at(p)?;
            if found != Some(current) {
                meta.insert(SCHEMA_KEY, current.to_be_bytes().as_slice())
                    .at(p)?;
            }
            if written_by.as_deref() != Some(THIS_RELEASE) {
                meta.insert(WRITTEN_BY_KEY, THIS_RELEASE.as_bytes()).at(p)?;
            }
        }
        txn.commit().at(p)?;
        if let Some(from) = found.filter(|v| *v != current) {
            info!(store = %p.display(), from, to = current, "store migration complete");
        }
        Ok(())
    }

    /// A write transaction that commits with immediate durability (the
    /// methods of every table group go through it).
    fn write(&self) -> Result<WriteTransaction, StoreError> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut txn = self.db.begin_write().at(&self.path)?;
        txn.set_durability(Durability::Immediate).at(&self.path)?;
        Ok(txn)
    }

    /// Write transactions begun since the store was opened.
    pub fn write_transactions(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A read transaction on a consistent view of the file.
    fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().at(&self.path)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the store file in bytes.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        read_schema(&txn.open_table(META).at(p)?, p)
    }

    /// The shoal release recorded as the last to open the file.
    pub fn written_by(&self) -> Result<Option<String>, StoreError> {
        let p = &self.path;
        let txn = self.read()?;
        read_written_by(&txn.open_table(META).at(p)?, p)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    use redb::TableDefinition;
    use shoal_protocol::action::{Action, NewMember, NewNode};
    use shoal_protocol::hlc::Hlc;
    use shoal_protocol::keys::LogId;
    use shoal_protocol::model::{InviteKind, Role, Runtime};
    use shoal_protocol::{Op, Replica, SecretKey};

    use crate::store::keys::local_key;
    use crate::store::schema::LOCAL;
    use crate::store::test_support::{entry, hash, log, raw_insert, team, temp};

    #[test]
    fn open_creates_missing_directories_and_the_schema() {
        let (_dir, base) = temp();
        let path = base.with_file_name("a").join("b").join("node.redb");
        let store = Store::open(&path).unwrap();
        assert!(path.exists());
        assert_eq!(store.path(), path);
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(store.size_bytes().unwrap() > 0);
        assert!(store.teams().unwrap().is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the store must not be readable by others");
        }
    }

    #[test]
    fn reopening_keeps_everything() {
        let (_dir, path) = temp();
        let t = team(1);
        let record = TeamRecord::new("alpha", [9; 32], 42);
        let ops = vec![entry(1, 1, 1), entry(2, 2, 1), entry(3, 1, 2)];
        {
            let store = Store::open(&path).unwrap();
            store.put_team(t, &record).unwrap();
            store.append_ops(t, &ops).unwrap();
            store.put_quarantined(t, hash(9), "why", b"op").unwrap();
            store.put_snapshot(t, 2, b"doc").unwrap();
            store.put_local("node", "seed", b"seed").unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.teams().unwrap(), vec![(t, record)]);
        assert_eq!(
            store.ops_in_order(t).unwrap(),
            ops.iter().map(|e| e.3.clone()).collect::<Vec<_>>()
        );
        assert_eq!(store.op_count(t).unwrap(), 3);
        assert_eq!(store.get_op(t, hash(2)).unwrap(), Some(ops[1].3.clone()));
        assert_eq!(store.log_head(t, log(1)).unwrap(), Some(2));
        assert_eq!(
            store.quarantined(t).unwrap(),
            vec![(hash(9), "why".to_string(), b"op".to_vec())]
        );
        assert_eq!(store.snapshot(t).unwrap(), Some((2, b"doc".to_vec())));
        assert_eq!(
            store.get_local("node", "seed").unwrap(),
            Some(b"seed".to_vec())
        );
        // Appending continues the order after a reopen.
        assert_eq!(store.append_ops(t, &[entry(4, 2, 2)]).unwrap(), 4);
        assert_eq!(store.ops_from(t, 3).unwrap(), vec![entry(4, 2, 2).3]);
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused_as_locked() {
        let (_dir, path) = temp();
        let _store = Store::open(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another shoal daemon"), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (_dir, path) = temp();
        {
            let store = Store::open(&path).unwrap();
            store.put_local("node", "seed", b"keep me").unwrap();
            assert_eq!(store.written_by().unwrap().as_deref(), Some(THIS_RELEASE));
        }
        let newer = (SCHEMA_VERSION + 1).to_be_bytes();
        raw_insert(&path, META, SCHEMA_KEY, &newer);
        raw_insert(&path, META, WRITTEN_BY_KEY, b"9.8.7");
        let before = fs::read(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::SchemaTooNew { found, supported, written_by, .. }
                if *found == SCHEMA_VERSION + 1 && *supported == SCHEMA_VERSION && written_by == "9.8.7"),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("install shoal 9.8.7 or newer"), "{msg}");
        assert!(msg.contains("not changed"), "{msg}");
        // Not one byte of the file was written.
        assert!(
            fs::read(&path).unwrap() == before,
            "the refused store was changed"
        );
    }

    fn add_marker(txn: &WriteTransaction, name: &str) -> Result<(), StoreError> {
        let mut t = txn
            .open_table(LOCAL)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let k = local_key("migrations", name)?;
        t.insert(k.as_slice(), b"done".as_slice())
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(())
    }

    fn to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
        add_marker(txn, "1-2")
    }

    fn to_v3(txn: &WriteTransaction) -> Result<(), StoreError> {
        add_marker(txn, "2-3")
    }

    fn failing(txn: &WriteTransaction) -> Result<(), StoreError> {
        add_marker(txn, "half done")?;
        Err(StoreError::Invalid("cannot rewrite ops_v1".into()))
    }

    #[test]
    fn an_older_schema_is_migrated_step_by_step() {
        let (_dir, path) = temp();
        {
            let store = Store::open(&path).unwrap();
            store.put_local("node", "seed", b"s").unwrap();
        }
        // A build at schema 3 opens the version-1 file.
        let store = Store::open_with(&path, 3, &[to_v2, to_v3]).unwrap();
        assert_eq!(store.schema_version().unwrap(), 3);
        assert_eq!(
            store.list_local("migrations").unwrap(),
            vec![
                ("1-2".to_string(), b"done".to_vec()),
                ("2-3".to_string(), b"done".to_vec()),
            ]
        );
        assert_eq!(
            store.get_local("node", "seed").unwrap(),
            Some(b"s".to_vec())
        );
        drop(store);
        // This build then refuses it.
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::SchemaTooNew { found: 3, .. })
        ));
    }

    #[test]
    fn a_failed_or_missing_migration_leaves_the_store_unchanged() {
        let (_dir, path) = temp();
        drop(Store::open(&path).unwrap());
        let err = Store::open_with(&path, 3, &[to_v2, failing]).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { from: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("cannot rewrite ops_v1"), "{err}");
        let err = Store::open_with(&path, 2, &[]).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { from: 1, .. }),
            "{err}"
        );
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 1);
        assert!(store.list_local("migrations").unwrap().is_empty());
    }

    #[test]
    fn a_garbage_file_is_refused_clearly() {
        let (_dir, path) = temp();
        let mut junk = Vec::new();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..(64 * 1024) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            junk.push(x as u8);
        }
        fs::write(&path, &junk).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("move the file aside"), "{err}");
        // Text is no better.
        fs::write(&path, "this is not a database\n".repeat(100)).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        // Nor a short file.
        fs::write(&path, b"x").unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_damaged_store_is_refused_clearly() {
        let (_dir, path) = temp();
        {
            let store = Store::open(&path).unwrap();
            let t = team(1);
            let ops: Vec<OpEntry> = (1..=200u8).map(|n| entry(n, 1, u64::from(n))).collect();
            store.append_ops(t, &ops).unwrap();
            store.put_snapshot(t, 100, &[5; 10_000]).unwrap();
        }
        let clean = fs::read(&path).unwrap();

        // A few flipped bits inside the data of one page.
        let mut bytes = clean.clone();
        let at = bytes
            .windows(64)
            .position(|w| w.iter().all(|&b| b == 5))
            .unwrap();
        bytes[at + 10] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

        // Everything after the header damaged.
        let mut bytes = clean;
        for b in bytes.iter_mut().skip(4096) {
            *b ^= 0x5a;
        }
        fs::write(&path, &bytes).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_redb_file_of_someone_else_is_not_a_store() {
        let (_dir, path) = temp();
        const OTHER: TableDefinition<&str, &[u8]> = TableDefinition::new("other");
        raw_insert(&path, OTHER, "k", b"v");
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("not written by shoal"), "{err}");
    }

    // -- a real team ----------------------------------------------------------

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn sign(r: &mut Replica, who: &SecretKey, origin: &SecretKey, now: u64, action: Action) -> Op {
        r.prepare(who.public(), origin.public(), now, action)
            .unwrap()
            .sign(who)
            .unwrap()
    }

    fn entries(ops: &[shoal_protocol::replica::Applied]) -> Vec<OpEntry> {
        ops.iter()
            .map(|a| (a.hash, a.op.log(), a.op.body.seq, a.op.encode()))
            .collect()
    }

    #[test]
    fn a_real_team_survives_a_restart_from_snapshot_and_ops() {
        let (_dir, path) = temp();
        let owner = key(1);
        let node = key(2);
        let mut now = 1_700_000_000_000u64;
        let genesis = Replica::genesis_body(
            now,
            "team",
            "a real team",
            NewMember {
                key: owner.public(),
                name: "owner".into(),
                email: None,
                enc_key: "00".repeat(32),
            },
            NewNode {
                key: node.public(),
                name: "node-0".into(),
                runtime: Runtime::Docker,
                enc_key: "11".repeat(32),
                addresses: vec![],
                agent_version: "test".into(),
                protocol_version: shoal_protocol::PROTOCOL_VERSION,
            },
        )
        .unwrap()
        .sign(&owner)
        .unwrap();
        let mut replica = Replica::from_genesis(genesis).unwrap();
        let t = replica.team();

        let store = Store::open(&path).unwrap();
        store
            .put_team(t, &TeamRecord::new("team", [3; 32], now))
            .unwrap();
        store.append_ops(t, &entries(replica.ops())).unwrap();

        let clock = std::cell::Cell::new(now);
        let apply = |replica: &mut Replica, action: Action| {
            let now = clock.get() + 1_000;
            clock.set(now);
            let op = sign(replica, &owner, &node, now, action);
            let before = replica.ops().len();
            let report = replica.apply(op, now);
            assert_eq!(report.applied.len(), 1, "{report:?}");
            store
                .append_ops(t, &entries(&replica.ops()[before..]))
                .unwrap();
        };
        apply(
            &mut replica,
            Action::TeamUpdate {
                name: "renamed".into(),
                description: "first rename".into(),
            },
        );
        let ctx = replica.next_context(owner.public(), node.public(), clock.get() + 1_000);
        apply(
            &mut replica,
            Action::InviteCreate {
                id: ctx.new_id(0),
                kind: InviteKind::Member { role: Role::User },
                invite_key: key(9).public(),
                expires: Hlc::new(clock.get() + 86_400_000, 0),
            },
        );
        // A snapshot after three ops, then more ops after it.
        let covers = replica.ops().len() as u64;
        store.put_snapshot(t, covers, &replica.save_doc()).unwrap();
        apply(
            &mut replica,
            Action::TeamUpdate {
                name: "renamed-again".into(),
                description: "after the snapshot".into(),
            },
        );
        store
            .put_quarantined(t, hash(1), "refused by the rules", b"bytes")
            .unwrap();
        let want = replica.state().clone();
        let want_heads = replica.heads();
        now = clock.get();
        assert_eq!(store.op_count(t).unwrap(), 4);
        drop(store);

        // Restart: load the snapshot and apply only the ops after it.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.teams().unwrap()[0].0, t);
        let (covers, doc) = store.snapshot(t).unwrap().unwrap();
        assert_eq!(covers, 3);
        let ops: Vec<Op> = store
            .ops_in_order(t)
            .unwrap()
            .iter()
            .map(|b| Op::decode(b).unwrap())
            .collect();
        assert_eq!(ops.len(), 4);
        let (old, new) = ops.split_at(covers as usize);
        let mut restored = Replica::restore(&doc, old.to_vec()).unwrap();
        assert_eq!(restored.team(), t);
        for op in new {
            let report = restored.apply(op.clone(), now);
            assert_eq!(report.applied, vec![op.hash()], "{report:?}");
        }
        assert_eq!(restored.state(), &want);
        assert_eq!(restored.heads(), want_heads);
        assert_eq!(restored.state().clone(), restored.recompute_state());
        assert_eq!(store.ops_from(t, covers).unwrap().len(), 1);
        for a in restored.ops() {
            assert_eq!(store.get_op(t, a.hash).unwrap(), Some(a.op.encode()));
        }
        assert_eq!(
            store
                .log_head(
                    t,
                    LogId {
                        author: owner.public(),
                        origin: node.public()
                    }
                )
                .unwrap(),
            Some(4)
        );

        // A snapshot at the end restores on its own.
        store.put_snapshot(t, 4, &restored.save_doc()).unwrap();
        let (covers, doc) = store.snapshot(t).unwrap().unwrap();
        let again = Replica::restore(&doc, ops[..covers as usize].to_vec()).unwrap();
        assert_eq!(again.state(), &want);
    }
}
