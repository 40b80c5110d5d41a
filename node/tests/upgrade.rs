#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Upgrading a node is replacing the binary and restarting: the store a
//! previous release wrote must open with everything in it, and a store
//! written by a newer release must be refused without a byte changed.
//!
//! The schema-1 file is written here with redb directly, byte for byte as
//! the layout documented in `node/src/store/schema.rs` says, not through `Store`:
//! so a layout change that forgets its migration fails this test. When the
//! schema moves past 1, this file keeps writing schema 1 and the test then
//! checks the real migration.

use std::path::Path;

use redb::{Database, TableDefinition};
use shoal_node::store::{SCHEMA_VERSION, Store, StoreError, TeamRecord};
use shoal_protocol::keys::{LogId, OpHash, TeamId};
use shoal_protocol::{PublicKey, SecretKey};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
const TEAMS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("teams_v1");
const OPS: TableDefinition<&[u8; 64], &[u8]> = TableDefinition::new("ops_v1");
const ORDER: TableDefinition<&[u8; 40], &[u8; 32]> = TableDefinition::new("order_v1");
const LOGS: TableDefinition<&[u8; 104], &[u8; 32]> = TableDefinition::new("logs_v1");
const QUARANTINE: TableDefinition<&[u8; 64], &[u8]> = TableDefinition::new("quarantine_v1");
const SNAPSHOTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("snapshots_v1");
const LOCAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("local_v1");

const TEAM: TeamId = TeamId([7; 32]);
const CREATED_MS: u64 = 1_700_000_000_123;

fn key(n: u8) -> PublicKey {
    SecretKey::from_seed([n; 32]).public()
}

fn log() -> LogId {
    LogId {
        author: key(1),
        origin: key(2),
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// postcard's unsigned varint (LEB128).
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn op_bytes(n: u8) -> Vec<u8> {
    vec![n; 10 + n as usize]
}

/// A store as shoal with schema 1 wrote it: one team with two ops of one
/// log, a quarantined op, a snapshot and the node's key seed.
fn write_schema_1(path: &Path) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("schema_version", 1u32.to_be_bytes().as_slice())
            .unwrap();
        meta.insert("written_by", b"0.0.9".as_slice()).unwrap();

        // TeamRecord: version u8, name (varint length ++ UTF-8), psk (32
        // bytes), created_ms (varint).
        let record = cat(&[&[1], &varint(4), b"crew", &[9; 32], &varint(CREATED_MS)]);
        txn.open_table(TEAMS)
            .unwrap()
            .insert(&TEAM.0, record.as_slice())
            .unwrap();

        let mut ops = txn.open_table(OPS).unwrap();
        let mut order = txn.open_table(ORDER).unwrap();
        let mut logs = txn.open_table(LOGS).unwrap();
        for (index, n) in [1u8, 2].into_iter().enumerate() {
            let hash = [n; 32];
            let k: [u8; 64] = cat(&[&TEAM.0, &hash]).try_into().unwrap();
            ops.insert(&k, op_bytes(n).as_slice()).unwrap();
            let k: [u8; 40] = cat(&[&TEAM.0, &(index as u64).to_be_bytes()])
                .try_into()
                .unwrap();
            order.insert(&k, &hash).unwrap();
            let l = log();
            let k: [u8; 104] = cat(&[
                &TEAM.0,
                l.author.as_bytes(),
                l.origin.as_bytes(),
                &u64::from(n).to_be_bytes(),
            ])
            .try_into()
            .unwrap();
            logs.insert(&k, &hash).unwrap();
        }

        let reason = "signature does not verify";
        let value = cat(&[
            &(reason.len() as u32).to_be_bytes(),
            reason.as_bytes(),
            &op_bytes(3),
        ]);
        let k: [u8; 64] = cat(&[&TEAM.0, &[3; 32]]).try_into().unwrap();
        txn.open_table(QUARANTINE)
            .unwrap()
            .insert(&k, value.as_slice())
            .unwrap();

        let snap = cat(&[&2u64.to_be_bytes(), b"automerge bytes"]);
        txn.open_table(SNAPSHOTS)
            .unwrap()
            .insert(&TEAM.0, snap.as_slice())
            .unwrap();

        let ns = "node";
        let k = cat(&[&(ns.len() as u16).to_be_bytes(), ns.as_bytes(), b"seed"]);
        txn.open_table(LOCAL)
            .unwrap()
            .insert(k.as_slice(), [5u8; 32].as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
}

fn check_contents(store: &Store) {
    assert_eq!(
        store.teams().unwrap(),
        vec![(TEAM, TeamRecord::new("crew", [9; 32], CREATED_MS))]
    );
    assert_eq!(store.op_count(TEAM).unwrap(), 2);
    assert_eq!(
        store.ops_in_order(TEAM).unwrap(),
        vec![op_bytes(1), op_bytes(2)]
    );
    assert_eq!(
        store.get_op(TEAM, OpHash([2; 32])).unwrap(),
        Some(op_bytes(2))
    );
    assert_eq!(store.log_head(TEAM, log()).unwrap(), Some(2));
    assert_eq!(store.quarantine_count(TEAM).unwrap(), 1);
    assert_eq!(
        store.quarantined(TEAM).unwrap(),
        vec![(
            OpHash([3; 32]),
            "signature does not verify".to_string(),
            op_bytes(3)
        )]
    );
    assert_eq!(
        store.snapshot(TEAM).unwrap(),
        Some((2, b"automerge bytes".to_vec()))
    );
    assert_eq!(
        store.get_local("node", "seed").unwrap(),
        Some([5u8; 32].to_vec())
    );
}

#[test]
fn a_store_of_schema_1_opens_migrated_with_everything_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoal.redb");
    write_schema_1(&path);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    // The file now records this release as the last to open it.
    assert_eq!(
        store.written_by().unwrap().as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    check_contents(&store);
    // It takes new writes, and they and the old data survive a reopen.
    store.put_local("node", "after", b"upgrade").unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    check_contents(&store);
    assert_eq!(
        store.get_local("node", "after").unwrap(),
        Some(b"upgrade".to_vec())
    );
}

#[test]
fn a_store_of_a_newer_schema_is_refused_and_left_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoal.redb");
    write_schema_1(&path);
    drop(Store::open(&path).unwrap());
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(
                "schema_version",
                (SCHEMA_VERSION + 1).to_be_bytes().as_slice(),
            )
            .unwrap();
            meta.insert("written_by", b"42.0.0".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();

    for _ in 0..2 {
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::SchemaTooNew { found, supported, written_by, .. }
                if *found == SCHEMA_VERSION + 1
                    && *supported == SCHEMA_VERSION
                    && written_by == "42.0.0"),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("install shoal 42.0.0 or newer"),
            "the message says what to install: {msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            std::fs::read(&path).unwrap() == before,
            "the refused store was modified"
        );
    }
}
