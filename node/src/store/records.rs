//! The values the store persists and their encodings: the [`TeamRecord`]
//! of `teams_v1` (versioned), the [`OpEntry`] batches appended to the op
//! tables, and the byte layouts of `quarantine_v1` and `snapshots_v1`
//! values (documented with the tables in `schema.rs`).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_protocol::keys::{LogId, OpHash, TeamId};

use super::error::{StoreError, corrupt};

/// Version of the [`TeamRecord`] encoding that this build reads and writes.
pub const TEAM_RECORD_VERSION: u8 = 1;

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

    pub(super) fn encode(&self, team: TeamId) -> Result<Vec<u8>, StoreError> {
        if self.version != TEAM_RECORD_VERSION {
            return Err(StoreError::TeamRecordVersion {
                team,
                found: self.version,
                supported: TEAM_RECORD_VERSION,
            });
        }
        postcard::to_stdvec(self).map_err(|e| StoreError::Invalid(e.to_string()))
    }

    pub(super) fn decode(team: TeamId, bytes: &[u8], path: &Path) -> Result<Self, StoreError> {
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

/// An applied op that was voided (a late revocation, a lost fork): the op
/// as an [`OpEntry`] and the reason it moves to quarantine for.
#[derive(Debug, Clone)]
pub struct VoidedEntry {
    pub op: OpEntry,
    pub reason: String,
}

/// The `quarantine_v1` value of a refused op: reason length (u32) ++
/// reason (UTF-8) ++ encoded op.
pub(super) fn encode_quarantined(reason: &str, op_bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len = u32::try_from(reason.len())
        .map_err(|_| StoreError::Invalid("quarantine reason is too long".into()))?;
    let mut value = Vec::with_capacity(4 + reason.len() + op_bytes.len());
    value.extend_from_slice(&len.to_be_bytes());
    value.extend_from_slice(reason.as_bytes());
    value.extend_from_slice(op_bytes);
    Ok(value)
}

/// The reason and encoded op of a `quarantine_v1` value; `None` if the
/// value is malformed.
pub(super) fn decode_quarantined(value: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = value.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (reason, op) = rest.split_at(len);
    Some((std::str::from_utf8(reason).ok()?, op))
}

/// The `snapshots_v1` value of a document that holds exactly the first
/// `covers` ops of the application order: covers (u64) ++ document bytes.
pub(super) fn encode_snapshot(covers: u64, doc: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + doc.len());
    value.extend_from_slice(&covers.to_be_bytes());
    value.extend_from_slice(doc);
    value
}

/// How many ops a `snapshots_v1` value covers and its document bytes;
/// `None` if the value is malformed.
pub(super) fn decode_snapshot(value: &[u8]) -> Option<(u64, &[u8])> {
    let (covers, doc) = value.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*covers), doc))
}
