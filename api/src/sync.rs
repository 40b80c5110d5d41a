//! `GET /v1/teams/{team}/sync`: this node's replication of a team.

use serde::{Deserialize, Serialize};

/// `GET /v1/teams/{team}/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamSync {
    /// The team id.
    pub team: String,
    pub peers: Vec<PeerSync>,
    pub ops: OpCounts,
}

/// A connected peer, or one whose version vector was seen since the daemon started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSync {
    pub key: String,
    /// `null` for a peer the team does not know (yet).
    pub name: Option<String>,
    pub connected: bool,
    /// Ops applied here that the peer lacks; `null` until a vector is seen.
    pub they_lack: Option<u64>,
    /// Ops the peer holds that this node lacks; `null` until a vector is seen.
    pub we_lack: Option<u64>,
    pub vector_age_ms: Option<u64>,
    /// From the peer's latest heartbeat, else from the team state.
    pub addresses: Vec<String>,
}

/// The team's op counts on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    pub applied: u64,
    pub waiting: u64,
    /// Refused ops kept in the store.
    pub quarantined: u64,
    pub rejected_since_start: u64,
    /// Of the quarantined ops: lost forks (another op holds their log seq).
    #[serde(default)]
    pub forks: u64,
    /// Of the quarantined ops: void, as their author lost the right they
    /// use through a concurrent op (a removal, a demotion, a revoked invite).
    #[serde(default)]
    pub voided: u64,
}
