//! Writes: `POST /v1/teams/{team}/prepare` (the unsigned op body) and
//! `POST /v1/teams/{team}/ops` (the signed op), plus the op request body
//! shared by `POST /v1/teams` and `POST /v1/join/{team}`.

use serde::{Deserialize, Serialize};
use shoal_protocol::Action;

/// `POST /v1/teams/{team}/prepare` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareRequest {
    /// The author's public key, hex.
    pub author: String,
    pub action: Action,
}

/// An unsigned op body: the answer of `prepare` and `POST /v1/teams/genesis`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedBody {
    /// Hex of `postcard(OpBody)`.
    pub body: String,
}

/// A signed op: the request of `POST /v1/teams/{team}/ops`, `POST /v1/teams`
/// and `POST /v1/join/{team}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRequest {
    /// Hex of `Op::encode()`.
    pub op: String,
}

/// An op and why it was refused or is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpReason {
    /// The op's hash, hex.
    pub op: String,
    pub reason: String,
}

/// `POST /v1/teams/{team}/ops` answer: what the op did. 200 when nothing was
/// refused, 422 otherwise (then `error` is set when the op itself was refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The op and any held op it unblocked.
    pub applied: Vec<String>,
    pub rejected: Vec<OpReason>,
    /// Ops held until what they depend on arrives.
    pub waiting: Vec<OpReason>,
    /// The op was already held.
    pub duplicate: bool,
}
