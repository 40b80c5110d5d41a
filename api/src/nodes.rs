//! The team's nodes: `GET /v1/teams/{team}/nodes` (as the replicated state
//! holds them) and `GET /v1/teams/{team}/status` (liveness from heartbeats).

use serde::{Deserialize, Serialize};

pub use shoal_protocol::heartbeat::HostLoad;
pub use shoal_protocol::model::{Node, Runtime};

/// `GET /v1/teams/{team}/nodes`: every node, removed ones included, in key order.
pub type NodeList = Vec<Node>;

/// A node's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Liveness {
    /// A heartbeat within the last 9 s.
    Connected,
    /// An older heartbeat, or none.
    Unreachable,
    /// The node speaks an older protocol.
    Outdated,
    Removed,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Connected => "connected",
            Liveness::Unreachable => "unreachable",
            Liveness::Outdated => "outdated",
            Liveness::Removed => "removed",
        }
    }
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One item of `GET /v1/teams/{team}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub key: String,
    pub name: String,
    pub status: Liveness,
    /// The node answering is this one.
    pub this_node: bool,
    /// Age of its latest heartbeat; `null` when none was seen.
    pub seen_ms_ago: Option<u64>,
    pub agent_version: String,
    pub addresses: Vec<String>,
    /// Host load from its latest heartbeat; absent when it is not fresh or
    /// carried none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<HostLoad>,
    /// Containers of the team its latest fresh heartbeat lists as running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
}

/// `GET /v1/teams/{team}/status`.
pub type StatusList = Vec<NodeStatus>;
