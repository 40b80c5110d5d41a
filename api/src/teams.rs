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
}

/// `POST /v1/teams/{team}/ids` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub ids: Vec<String>,
}

/// `GET /v1/teams/{team}/peers`: the team's nodes connected now, by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peers {
    pub peers: Vec<String>,
}
