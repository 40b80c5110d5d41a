//! Teams: listing them, one team's summary, creating one (genesis), what a
//! ticket needs (bootstrap), new entity ids, connected peers and the nodes'
//! liveness (`status`).

use serde::{Deserialize, Serialize};
use shoal_protocol::action::NewMember;

/// One item of `GET /v1/teams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamListItem {
    pub id: String,
    pub name: String,
    pub ops: u64,
}

/// `GET /v1/teams`.
pub type TeamList = Vec<TeamListItem>;

/// `GET /v1/teams/{team}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamInfo {
    pub id: String,
    pub name: String,
    /// Members not removed.
    pub members: u64,
    /// Nodes not removed.
    pub nodes: u64,
    pub ops: u64,
    /// The document's heads, sorted.
    pub heads: Vec<String>,
    /// Hash of the typed state (64 hex): equal states give equal hashes.
    pub state_hash: String,
}

/// `GET /v1/teams/{team}` query: a long poll for the team's next op.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamWait {
    /// An op count seen (`TeamInfo::ops`): answer once the team's op count
    /// differs from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless_ops: Option<u64>,
    /// How long to wait for a change (at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// `POST /v1/teams/genesis` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisRequest {
    pub name: String,
    pub owner: NewMember,
}

/// `POST /v1/teams` answer (its request is an [`crate::ops::OpRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamCreated {
    pub id: String,
    pub name: String,
}

/// `GET /v1/teams/{team}/bootstrap`: what a ticket needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub id: String,
    pub name: String,
    /// The team's network key, 64 hex: a team secret.
    pub psk: String,
    /// `<multiaddr>/p2p/<peer id>`, this node first.
    pub bootstrap: Vec<String>,
}

fn one() -> u32 {
    1
}

/// `POST /v1/teams/{team}/ids` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdsRequest {
    /// The author's public key, hex.
    pub author: String,
    /// How many ids (1 when left out, at most 64 are given).
    #[serde(default = "one")]
    pub count: u32,
    /// Also take the write lease of the author's log on this node: later
    /// writers of that log wait until this one's op is submitted (or the
    /// lease lapses, 10 s after its last step), so the ids stay fresh and
    /// parallel writes do not fork the log. The answer's `lease` names it
    /// in the `prepare` that follows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease: bool,
}

/// `POST /v1/teams/{team}/ids` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub ids: Vec<String>,
    /// The write lease taken (`lease: true`), as a decimal token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

/// `GET /v1/teams/{team}/peers`: the team's nodes connected now, by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peers {
    pub peers: Vec<String>,
}
