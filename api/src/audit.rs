//! The audit log: `GET /v1/teams/{team}/audit` and `.../audit/verify`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /v1/teams/{team}/audit` query; every filter set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// A member or node name, or a key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// An action name, or a family ending in `.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// An id or key (or a prefix), or a product, registry, node or member name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub hash: String,
    pub time_ms: u64,
    pub hlc: String,
    /// The action's name (`deployment.start`).
    pub action: String,
    pub author: String,
    pub author_name: String,
    pub origin: String,
    pub origin_name: String,
    pub seq: u64,
    pub targets: Vec<String>,
    /// What the op did, in words.
    pub what: String,
    /// `applied`, or `quarantined: <reason>`.
    pub status: String,
}

/// `GET /v1/teams/{team}/audit`: oldest first.
pub type AuditList = Vec<AuditEntry>;

/// `GET /v1/teams/{team}/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerify {
    /// No problem found.
    pub ok: bool,
    /// Ops the replica applied.
    pub ops: u64,
    pub logs: u64,
    /// Ops stored on disk.
    pub stored_ops: u64,
    pub problems: Vec<Problem>,
    /// Problems by kind.
    pub counts: BTreeMap<ProblemKind, u64>,
}

/// A problem found by the verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
}

/// What kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    BadSignature,
    WrongTeam,
    Gap,
    Fork,
    BrokenLink,
    /// An op the replica refused.
    Refused,
    /// A stored op that cannot be decoded.
    Unreadable,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::BadSignature => "bad-signature",
            ProblemKind::WrongTeam => "wrong-team",
            ProblemKind::Gap => "gap",
            ProblemKind::Fork => "fork",
            ProblemKind::BrokenLink => "broken-link",
            ProblemKind::Refused => "refused",
            ProblemKind::Unreadable => "unreadable",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
