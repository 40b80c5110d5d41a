//! The layout of the store file: every redb table, each with its versioned
//! name and its key/value layout, the schema version of the whole file and
//! the migrations from older versions. No table is defined anywhere else.
//!
//! Keys are fixed-width, big-endian byte strings that start with the team
//! id (built in `keys.rs`), so everything of one team is a contiguous key
//! range and per-team reads are prefix scans.

use std::path::Path;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::error::{At, StoreError, corrupt};

/// Layout version of the whole store that this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Key of the schema version in `meta_v1`.
pub(super) const SCHEMA_KEY: &str = "schema_version";

/// Key in `meta_v1` of the shoal release that last opened the file.
pub(super) const WRITTEN_BY_KEY: &str = "written_by";

// ---------------------------------------------------------------------------
// Tables. All integers are big-endian; ids, hashes and keys are their 32 raw
// bytes. "++" is concatenation.
// ---------------------------------------------------------------------------

/// `meta_v1`: store-wide values.
/// - key: a UTF-8 name.
/// - `"schema_version"` → u32 (4 bytes): the layout version of the file.
/// - `"written_by"` → UTF-8: the shoal release that last opened the file
///   (named when a newer file is refused, so the user knows what to install;
///   this build's is `THIS_RELEASE` in `error.rs`).
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");

/// `teams_v1`: the teams this node belongs to.
/// - key: team id (32 bytes).
/// - value: postcard([`TeamRecord`](super::records::TeamRecord)); its first byte is the record version.
pub(super) const TEAMS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("teams_v1");

/// `ops_v1`: every applied op, exactly as signed and encoded (`Op::encode`).
/// - key: team id (32) ++ op hash (32) = 64 bytes.
/// - value: the encoded op.
pub(super) const OPS: TableDefinition<&[u8; 64], &[u8]> = TableDefinition::new("ops_v1");

/// `order_v1`: the order in which this node applied a team's ops (a causal
/// order: replaying it rebuilds the document).
/// - key: team id (32) ++ index (u64, dense from 0) = 40 bytes.
/// - value: op hash (32), the key of the op in `ops_v1` with the same team.
pub(super) const ORDER: TableDefinition<&[u8; 40], &[u8; 32]> = TableDefinition::new("order_v1");

/// `logs_v1`: the ops of each log (author, origin node), by seq, for version
/// vectors and anti-entropy.
/// - key: team id (32) ++ author key (32) ++ origin node key (32) ++ seq (u64)
///   = 104 bytes.
/// - value: op hash (32).
pub(super) const LOGS: TableDefinition<&[u8; 104], &[u8; 32]> = TableDefinition::new("logs_v1");

/// `quarantine_v1`: ops that were refused, never applied, and why.
/// - key: team id (32) ++ op hash (32) = 64 bytes.
/// - value: reason length (u32) ++ reason (UTF-8) ++ encoded op.
pub(super) const QUARANTINE: TableDefinition<&[u8; 64], &[u8]> =
    TableDefinition::new("quarantine_v1");

/// `snapshots_v1`: the latest saved Automerge document of each team.
/// - key: team id (32).
/// - value: covers (u64: the document holds exactly the first `covers` ops
///   of `order_v1`) ++ saved document bytes.
pub(super) const SNAPSHOTS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("snapshots_v1");

/// `local_v1`: node-local values that are never replicated (executor
/// progress, container logs, the node key seed, ...), grouped by namespace.
/// - key: namespace length (u16) ++ namespace (UTF-8) ++ key (UTF-8). The
///   length prefix keeps namespaces apart, so a namespace is a prefix scan.
/// - value: opaque bytes.
pub(super) const LOCAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("local_v1");

/// Creates every table of the current schema that does not exist yet.
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(META)?;
    txn.open_table(TEAMS)?;
    txn.open_table(OPS)?;
    txn.open_table(ORDER)?;
    txn.open_table(LOGS)?;
    txn.open_table(QUARANTINE)?;
    txn.open_table(SNAPSHOTS)?;
    txn.open_table(LOCAL)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------

/// One migration step: rewrites the tables of schema `n` into those of
/// schema `n + 1`, inside the opening write transaction.
pub type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` migrates a store from schema version `i + 1` to `i + 2`.
/// Version 1 is the first layout, so there is nothing to migrate yet; a
/// layout change bumps [`SCHEMA_VERSION`], adds new `_v2` tables and appends
/// the step that fills them from the old ones (and deletes those).
pub const MIGRATIONS: &[Migration] = &[];

const _: () = assert!(MIGRATIONS.len() as u64 + 1 == SCHEMA_VERSION as u64);

// ---------------------------------------------------------------------------
// Meta values
// ---------------------------------------------------------------------------

/// The schema version stored in the `meta_v1` table.
pub(super) fn read_schema(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    p: &Path,
) -> Result<u32, StoreError> {
    let v = meta
        .get(SCHEMA_KEY)
        .at(p)?
        .ok_or_else(|| corrupt(p, "it has no schema version"))?;
    let bytes: [u8; 4] = v
        .value()
        .try_into()
        .map_err(|_| corrupt(p, "its schema version is malformed"))?;
    Ok(u32::from_be_bytes(bytes))
}

/// The release recorded as `written_by` in `meta_v1`, if any.
pub(super) fn read_written_by(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    p: &Path,
) -> Result<Option<String>, StoreError> {
    Ok(meta
        .get(WRITTEN_BY_KEY)
        .at(p)?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
}
