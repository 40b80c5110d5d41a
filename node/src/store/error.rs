//! The store's errors: [`StoreError`], whose messages each say what the
//! operator can do, and the helpers that turn redb errors into it with the
//! store's path attached.

use std::path::{Path, PathBuf};

use shoal_protocol::keys::TeamId;

/// This build's release: named when a newer store is refused, and recorded
/// as `written_by` in `meta_v1` (see `schema.rs`). Kept here, beside the
/// message that names it, so the errors depend on nothing else of the store.
pub(super) const THIS_RELEASE: &str = env!("CARGO_PKG_VERSION");

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

/// The store error for a redb error on the file at `path`.
pub(super) fn classify(path: &Path, e: redb::Error) -> StoreError {
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
pub(super) trait At<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> At<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| classify(path, e.into()))
    }
}

/// A [`StoreError::Corrupt`] for the file at `path`.
pub(super) fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// A [`StoreError::SchemaTooNew`] for the file at `path`.
pub(super) fn too_new(
    path: &Path,
    found: u32,
    supported: u32,
    written_by: Option<String>,
) -> StoreError {
    StoreError::SchemaTooNew {
        path: path.to_path_buf(),
        found,
        supported,
        written_by: written_by.unwrap_or_else(|| "(unknown)".into()),
    }
}
