//! The node's one durable store (§4 "Storage"): a single redb database per
//! node holding every team's ops, their application order, quarantined ops,
//! document snapshots and the node's own local values.
//!
//! Every table is defined in this module, each with a versioned name and a
//! documented key/value layout. Keys are fixed-width, big-endian byte strings
//! that start with the team id, so everything of one team is a contiguous key
//! range and per-team reads are prefix scans.
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

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{
    Builder, Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use shoal_protocol::keys::{LogId, OpHash, TeamId};
use tracing::{info, warn};

/// Layout version of the whole store that this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Version of the [`TeamRecord`] encoding that this build reads and writes.
pub const TEAM_RECORD_VERSION: u8 = 1;

/// Key of the schema version in `meta_v1`.
const SCHEMA_KEY: &str = "schema_version";

/// Key in `meta_v1` of the shoal release that last opened the file.
const WRITTEN_BY_KEY: &str = "written_by";

/// This build's release, recorded as `written_by`.
const THIS_RELEASE: &str = env!("CARGO_PKG_VERSION");

// ---------------------------------------------------------------------------
// Tables. All integers are big-endian; ids, hashes and keys are their 32 raw
// bytes. "++" is concatenation.
// ---------------------------------------------------------------------------

/// `meta_v1`: store-wide values.
/// - key: a UTF-8 name.
/// - `"schema_version"` → u32 (4 bytes): the layout version of the file.
/// - `"written_by"` → UTF-8: the shoal release that last opened the file
///   (named when a newer file is refused, so the user knows what to install).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");

/// `teams_v1`: the teams this node belongs to.
/// - key: team id (32 bytes).
/// - value: postcard([`TeamRecord`]); its first byte is the record version.
const TEAMS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("teams_v1");

/// `ops_v1`: every applied op, exactly as signed and encoded (`Op::encode`).
/// - key: team id (32) ++ op hash (32) = 64 bytes.
/// - value: the encoded op.
const OPS: TableDefinition<&[u8; 64], &[u8]> = TableDefinition::new("ops_v1");

/// `order_v1`: the order in which this node applied a team's ops (a causal
/// order: replaying it rebuilds the document).
/// - key: team id (32) ++ index (u64, dense from 0) = 40 bytes.
/// - value: op hash (32), the key of the op in `ops_v1` with the same team.
const ORDER: TableDefinition<&[u8; 40], &[u8; 32]> = TableDefinition::new("order_v1");

/// `logs_v1`: the ops of each log (author, origin node), by seq, for version
/// vectors and anti-entropy.
/// - key: team id (32) ++ author key (32) ++ origin node key (32) ++ seq (u64)
///   = 104 bytes.
/// - value: op hash (32).
const LOGS: TableDefinition<&[u8; 104], &[u8; 32]> = TableDefinition::new("logs_v1");

/// `quarantine_v1`: ops that were refused, never applied, and why.
/// - key: team id (32) ++ op hash (32) = 64 bytes.
/// - value: reason length (u32) ++ reason (UTF-8) ++ encoded op.
const QUARANTINE: TableDefinition<&[u8; 64], &[u8]> = TableDefinition::new("quarantine_v1");

/// `snapshots_v1`: the latest saved Automerge document of each team.
/// - key: team id (32).
/// - value: covers (u64: the document holds exactly the first `covers` ops
///   of `order_v1`) ++ saved document bytes.
const SNAPSHOTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("snapshots_v1");

/// `local_v1`: node-local values that are never replicated (executor
/// progress, container logs, the node key seed, ...), grouped by namespace.
/// - key: namespace length (u16) ++ namespace (UTF-8) ++ key (UTF-8). The
///   length prefix keeps namespaces apart, so a namespace is a prefix scan.
/// - value: opaque bytes.
const LOCAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("local_v1");

/// Creates every table of the current schema that does not exist yet.
fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
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
// Errors
// ---------------------------------------------------------------------------

/// Errors of the store. Each message says what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open or write the store at {}: {source}; check that its directory exists and that this user may write to it",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the store at {} is already in use by another shoal daemon; stop that daemon first, or give this one another data directory",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error(
        "the store at {} is damaged or is not a shoal store ({detail}); stop the daemon, move the file aside and restore it from a backup, or start with a fresh store and rejoin this node to its teams",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the store at {} uses an old file format (redb format {found}) that this build cannot read; open it once with the shoal release that wrote it, or start with a fresh store and rejoin this node to its teams",
        path.display()
    )]
    OldFileFormat { path: PathBuf, found: u8 },
    #[error(
        "the store at {} has schema version {found} (last opened by shoal {written_by}), newer than version {supported} that this shoal {THIS_RELEASE} knows; install shoal {written_by} or newer and start it again (the store was not changed)",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
        /// The release that last opened the file, or `"(unknown)"`.
        written_by: String,
    },
    #[error(
        "cannot migrate the store at {} from schema version {from}: {detail}; the store was left unchanged, keep it and run the shoal release that wrote it",
        path.display()
    )]
    Migration {
        path: PathBuf,
        from: u32,
        detail: String,
    },
    #[error(
        "the stored record of team {team} has version {found}, but this shoal build knows only version {supported}; upgrade shoal"
    )]
    TeamRecordVersion {
        team: TeamId,
        found: u8,
        supported: u8,
    },
    #[error("cannot store the ops of team {team}: {detail}; nothing of the batch was written")]
    Conflict { team: TeamId, detail: String },
    #[error("invalid store request: {0}")]
    Invalid(String),
    #[error(
        "the store at {} failed: {detail}; check free disk space and file permissions, then restart the daemon",
        path.display()
    )]
    Storage { path: PathBuf, detail: String },
}

fn classify(path: &Path, e: redb::Error) -> StoreError {
    let path = path.to_path_buf();
    match e {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::Locked { path }
        }
        redb::Error::Corrupted(detail) => StoreError::Corrupt { path, detail },
        redb::Error::UpgradeRequired(found) => StoreError::OldFileFormat { path, found },
        redb::Error::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt {
                path,
                detail: source.to_string(),
            }
        }
        redb::Error::Io(source) => StoreError::Io { path, source },
        e @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)) => StoreError::Corrupt {
            path,
            detail: e.to_string(),
        },
        e => StoreError::Storage {
            path,
            detail: e.to_string(),
        },
    }
}

/// Attaches the store's path to redb errors.
trait At<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> At<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| classify(path, e.into()))
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// What this node keeps about a team it belongs to (`teams_v1`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRecord {
    /// Encoding version; [`TEAM_RECORD_VERSION`] for records this build writes.
    pub version: u8,
    pub name: String,
    /// The private-network pre-shared key of the team's mesh.
    pub psk: [u8; 32],
    /// When this node joined or created the team (Unix ms).
    pub created_ms: u64,
}

impl TeamRecord {
    /// A record of the current version.
    pub fn new(name: impl Into<String>, psk: [u8; 32], created_ms: u64) -> Self {
        Self {
            version: TEAM_RECORD_VERSION,
            name: name.into(),
            psk,
            created_ms,
        }
    }

    fn encode(&self, team: TeamId) -> Result<Vec<u8>, StoreError> {
        if self.version != TEAM_RECORD_VERSION {
            return Err(StoreError::TeamRecordVersion {
                team,
                found: self.version,
                supported: TEAM_RECORD_VERSION,
            });
        }
        postcard::to_stdvec(self).map_err(|e| StoreError::Invalid(e.to_string()))
    }

    fn decode(team: TeamId, bytes: &[u8], path: &Path) -> Result<Self, StoreError> {
        // postcard writes a u8 as one byte, and `version` comes first: check
        // it before the rest, whose layout may differ in other versions.
        match bytes.first() {
            None => return Err(corrupt(path, format!("empty record for team {team}"))),
            Some(&v) if v != TEAM_RECORD_VERSION => {
                return Err(StoreError::TeamRecordVersion {
                    team,
                    found: v,
                    supported: TEAM_RECORD_VERSION,
                });
            }
            Some(_) => {}
        }
        postcard::from_bytes(bytes)
            .map_err(|e| corrupt(path, format!("unreadable record for team {team}: {e}")))
    }
}

impl fmt::Debug for TeamRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeamRecord")
            .field("version", &self.version)
            .field("name", &self.name)
            .field("psk", &"<redacted>")
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// One op to append: its hash, its log, its seq in that log and its encoded
/// bytes (`Op::encode`).
pub type OpEntry = (OpHash, LogId, u64, Vec<u8>);

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

fn cat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    debug_assert_eq!(at, N, "key parts do not fill the key");
    out
}

fn op_key(team: &TeamId, hash: &OpHash) -> [u8; 64] {
    cat(&[&team.0, &hash.0])
}

fn order_key(team: &TeamId, index: u64) -> [u8; 40] {
    cat(&[&team.0, &index.to_be_bytes()])
}

fn log_key(team: &TeamId, log: &LogId, seq: u64) -> [u8; 104] {
    cat(&[
        &team.0,
        log.author.as_bytes(),
        log.origin.as_bytes(),
        &seq.to_be_bytes(),
    ])
}

/// The big-endian u64 that ends a fixed-width key.
fn tail_u64<const N: usize>(key: &[u8; N]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[N - 8..]);
    u64::from_be_bytes(b)
}

fn local_prefix(ns: &str) -> Result<Vec<u8>, StoreError> {
    let len = u16::try_from(ns.len()).map_err(|_| {
        StoreError::Invalid(format!(
            "local namespace is {} bytes, at most {} allowed",
            ns.len(),
            u16::MAX
        ))
    })?;
    let mut k = Vec::with_capacity(2 + ns.len());
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(ns.as_bytes());
    Ok(k)
}

fn local_key(ns: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    let mut k = local_prefix(ns)?;
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

/// Index of the next op of `team` in `order_v1` (= the number of ops).
fn next_index(
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

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/// The schema version stored in the `meta_v1` table.
fn read_schema(
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
fn read_written_by(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    p: &Path,
) -> Result<Option<String>, StoreError> {
    Ok(meta
        .get(WRITTEN_BY_KEY)
        .at(p)?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
}

/// The store file seen through a layer that keeps every write in memory.
///
/// redb writes to a file as soon as it opens it read-write (its header, the
/// allocator state at close), and its read-only open does not verify
/// checksums, so it cannot be trusted with a damaged file. A file is first
/// opened read-write, integrity checked, through this layer: the schema
/// version is read without a byte of the file changed. Locks go to the file,
/// so a running daemon is still detected.
#[derive(Debug)]
struct ProbeBackend {
    file: FileBackend,
    overlay: std::sync::Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    /// The length redb set (the file's until it sets one).
    len: u64,
    /// File bytes at or past this offset read as zero (redb shrank the
    /// storage below it at some point).
    file_valid: u64,
    /// Writes, oldest first.
    writes: Vec<(u64, Vec<u8>)>,
}

impl ProbeBackend {
    fn new(file: fs::File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file: FileBackend::new(file).map_err(std::io::Error::other)?,
            overlay: std::sync::Mutex::new(Overlay {
                len,
                file_valid: len,
                writes: Vec::new(),
            }),
        })
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "read past the end of the store",
    )
}

impl redb::StorageBackend for ProbeBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.overlay().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let o = self.overlay();
        let n = out.len() as u64;
        let end = offset.checked_add(n).ok_or_else(out_of_range)?;
        if end > o.len {
            return Err(out_of_range());
        }
        let from_file = usize::try_from(o.file_valid.saturating_sub(offset).min(n))
            .map_err(|_| out_of_range())?;
        if from_file > 0 {
            self.file.read(offset, &mut out[..from_file])?;
        }
        out[from_file..].fill(0);
        for (at, data) in &o.writes {
            let w_end = at + data.len() as u64;
            if *at >= end || w_end <= offset {
                continue;
            }
            let start = (*at).max(offset);
            let stop = w_end.min(end);
            let (dst, src) = ((start - offset) as usize, (start - at) as usize);
            let len = (stop - start) as usize;
            out[dst..dst + len].copy_from_slice(&data[src..src + len]);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut o = self.overlay();
        if len < o.len {
            o.file_valid = o.file_valid.min(len);
            o.writes.retain(|(at, _)| *at < len);
            for (at, data) in &mut o.writes {
                let keep = usize::try_from(len - *at).unwrap_or(usize::MAX);
                data.truncate(keep);
            }
        }
        o.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut o = self.overlay();
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(out_of_range)?;
        if end > o.len {
            return Err(out_of_range());
        }
        o.writes.push((offset, data.to_vec()));
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// The schema version and `written_by` of an existing, non-empty store
/// file, read through a [`ProbeBackend`] so the file is not changed, after
/// an integrity check. `Ok(None)` for a missing or empty file, or one
/// without `meta_v1` (the read-write open then judges it).
fn probe_schema(path: &Path) -> Result<Option<(u32, Option<String>)>, StoreError> {
    let file = match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if file.metadata().map_err(io)?.len() == 0 {
        return Ok(None);
    }
    let backend = ProbeBackend::new(file).map_err(io)?;
    let mut builder = Builder::new();
    builder.set_check_integrity_on_open(true);
    let db = builder.create_with_backend(backend).at(path)?;
    let txn = db.begin_read().at(path)?;
    let meta = match txn.open_table(META) {
        Ok(m) => m,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(classify(path, e.into())),
    };
    Ok(Some((
        read_schema(&meta, path)?,
        read_written_by(&meta, path)?,
    )))
}

fn too_new(path: &Path, found: u32, supported: u32, written_by: Option<String>) -> StoreError {
    StoreError::SchemaTooNew {
        path: path.to_path_buf(),
        found,
        supported,
        written_by: written_by.unwrap_or_else(|| "(unknown)".into()),
    }
}

/// The node's durable store. Cheap to share behind an `Arc`: every method
/// takes `&self`, reads run concurrently and writes are serialised.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
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
        let db = builder.create_with_backend(backend).at(&path)?;
        let store = Store { db, path };
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

    fn write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().at(&self.path)?;
        txn.set_durability(Durability::Immediate).at(&self.path)?;
        Ok(txn)
    }

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

    // -- teams --------------------------------------------------------------

    /// Adds or replaces the record of `team`. Only records of the current
    /// [`TEAM_RECORD_VERSION`] are written.
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

    // -- ops ----------------------------------------------------------------

    /// Appends applied ops of `team`, in the order they were applied, in one
    /// durable transaction: when this returns `Ok` every op of the batch is
    /// on disk; on any error none is. An op already stored, or a second op
    /// for a (log, seq) already held, refuses the whole batch.
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
                next += 1;
            }
            next
        };
        txn.commit().at(p)?;
        Ok(count)
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

    // -- quarantine ---------------------------------------------------------

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
        let len = u32::try_from(reason.len())
            .map_err(|_| StoreError::Invalid("quarantine reason is too long".into()))?;
        let mut value = Vec::with_capacity(4 + reason.len() + op_bytes.len());
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(reason.as_bytes());
        value.extend_from_slice(op_bytes);
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
            let bad = || corrupt(p, format!("quarantine entry {hash} is malformed"));
            let v = v.value();
            let (len, rest) = v.split_first_chunk::<4>().ok_or_else(bad)?;
            let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| bad())?;
            if rest.len() < len {
                return Err(bad());
            }
            let (reason, op) = rest.split_at(len);
            let reason = std::str::from_utf8(reason).map_err(|_| bad())?;
            out.push((hash, reason.to_string(), op.to_vec()));
        }
        Ok(out)
    }

    // -- snapshots ----------------------------------------------------------

    /// Saves the document of `team` holding exactly its first `covers` ops
    /// in application order, replacing the previous snapshot.
    pub fn put_snapshot(&self, team: TeamId, covers: u64, doc: &[u8]) -> Result<(), StoreError> {
        let p = &self.path;
        let mut value = Vec::with_capacity(8 + doc.len());
        value.extend_from_slice(&covers.to_be_bytes());
        value.extend_from_slice(doc);
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
        let (covers, doc) = v
            .value()
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt(p, format!("the snapshot of team {team} is malformed")))?;
        Ok(Some((u64::from_be_bytes(*covers), doc.to_vec())))
    }

    // -- node-local values --------------------------------------------------

    /// Sets `key` in namespace `ns`.
    pub fn put_local(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let p = &self.path;
        let k = local_key(ns, key)?;
        let txn = self.write()?;
        {
            let mut t = txn.open_table(LOCAL).at(p)?;
            t.insert(k.as_slice(), value).at(p)?;
        }
        txn.commit().at(p)
    }

    /// The value of `key` in namespace `ns`.
    pub fn get_local(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let p = &self.path;
        let k = local_key(ns, key)?;
        let txn = self.read()?;
        let t = txn.open_table(LOCAL).at(p)?;
        Ok(t.get(k.as_slice()).at(p)?.map(|v| v.value().to_vec()))
    }

    /// Removes `key` from namespace `ns`; returns whether it was there.
    pub fn delete_local(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        let p = &self.path;
        let k = local_key(ns, key)?;
        let txn = self.write()?;
        let existed = {
            let mut t = txn.open_table(LOCAL).at(p)?;
            t.remove(k.as_slice()).at(p)?.is_some()
        };
        txn.commit().at(p)?;
        Ok(existed)
    }

    /// Removes `keys` from namespace `ns` in one transaction; returns how
    /// many were there.
    pub fn delete_local_keys(&self, ns: &str, keys: &[String]) -> Result<usize, StoreError> {
        let p = &self.path;
        let txn = self.write()?;
        let mut removed = 0;
        {
            let mut t = txn.open_table(LOCAL).at(p)?;
            for key in keys {
                let k = local_key(ns, key)?;
                if t.remove(k.as_slice()).at(p)?.is_some() {
                    removed += 1;
                }
            }
        }
        txn.commit().at(p)?;
        Ok(removed)
    }

    /// Every key and value of namespace `ns`, ordered by key bytes.
    pub fn list_local(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let p = &self.path;
        let prefix = local_prefix(ns)?;
        let txn = self.read()?;
        let t = txn.open_table(LOCAL).at(p)?;
        let mut out = Vec::new();
        for entry in t.range(prefix.as_slice()..).at(p)? {
            let (k, v) = entry.at(p)?;
            let Some(key) = k.value().strip_prefix(prefix.as_slice()) else {
                break;
            };
            let key = std::str::from_utf8(key)
                .map_err(|_| corrupt(p, format!("a key of local namespace {ns:?} is not UTF-8")))?;
            out.push((key.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    use shoal_protocol::action::{Action, NewMember, NewNode};
    use shoal_protocol::hlc::Hlc;
    use shoal_protocol::model::{InviteKind, Role, Runtime};
    use shoal_protocol::{Op, Replica, SecretKey};

    fn temp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        (dir, path)
    }

    fn team(n: u8) -> TeamId {
        TeamId([n; 32])
    }

    fn hash(n: u8) -> OpHash {
        OpHash([n; 32])
    }

    fn log(n: u8) -> LogId {
        let k = SecretKey::from_seed([n; 32]).public();
        LogId {
            author: k,
            origin: k,
        }
    }

    fn entry(n: u8, log_n: u8, seq: u64) -> OpEntry {
        (hash(n), log(log_n), seq, vec![n; 3 + n as usize])
    }

    /// Writes raw values with redb, bypassing the store's checks.
    fn raw_insert<K: redb::Key + 'static>(
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

    #[test]
    fn local_values_round_trip() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get_local("node", "seed").unwrap(), None);
        store.put_local("node", "seed", &[7; 32]).unwrap();
        store.put_local("exec", "dep-2", b"pulling").unwrap();
        store.put_local("exec", "dep-1", b"started").unwrap();
        store.put_local("exec", "", b"empty key").unwrap();
        // Namespaces that are prefixes of each other stay apart.
        store.put_local("a", "bc", b"1").unwrap();
        store.put_local("ab", "c", b"2").unwrap();
        store.put_local("", "k", b"3").unwrap();
        assert_eq!(store.get_local("node", "seed").unwrap(), Some(vec![7; 32]));
        assert_eq!(
            store.list_local("exec").unwrap(),
            vec![
                (String::new(), b"empty key".to_vec()),
                ("dep-1".to_string(), b"started".to_vec()),
                ("dep-2".to_string(), b"pulling".to_vec()),
            ]
        );
        assert_eq!(
            store.list_local("a").unwrap(),
            vec![("bc".to_string(), b"1".to_vec())]
        );
        assert_eq!(
            store.list_local("ab").unwrap(),
            vec![("c".to_string(), b"2".to_vec())]
        );
        assert_eq!(
            store.list_local("").unwrap(),
            vec![("k".to_string(), b"3".to_vec())]
        );
        assert!(store.list_local("none").unwrap().is_empty());
        store.put_local("exec", "dep-1", b"done").unwrap();
        assert_eq!(
            store.get_local("exec", "dep-1").unwrap(),
            Some(b"done".to_vec())
        );
        assert!(store.delete_local("exec", "dep-1").unwrap());
        assert!(!store.delete_local("exec", "dep-1").unwrap());
        assert_eq!(store.get_local("exec", "dep-1").unwrap(), None);
        assert_eq!(store.list_local("exec").unwrap().len(), 2);
        let gone = ["dep-2".to_string(), "nothing".to_string()];
        assert_eq!(store.delete_local_keys("exec", &gone).unwrap(), 1);
        assert_eq!(
            store.list_local("exec").unwrap(),
            vec![(String::new(), b"empty key".to_vec())]
        );
        assert_eq!(
            store.list_local("ab").unwrap().len(),
            1,
            "other namespaces stay"
        );
        let long = "n".repeat(70_000);
        assert!(matches!(
            store.put_local(&long, "k", b""),
            Err(StoreError::Invalid(_))
        ));
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

    fn sign(r: &Replica, who: &SecretKey, origin: &SecretKey, now: u64, action: Action) -> Op {
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
