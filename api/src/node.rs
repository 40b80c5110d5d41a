//! This daemon itself: `GET /v1/node`, `/v1/node/health` and `/v1/node/store`.

use serde::{Deserialize, Serialize};
use shoal_protocol::model::Runtime;

/// `GET /v1/node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's public key, hex.
    pub key: String,
    /// The name this node enrolls with when it creates or joins a team.
    pub name: String,
    pub runtime: Runtime,
    /// `shoal/<version>`.
    pub agent_version: String,
    /// How many teams the daemon holds.
    pub teams: u64,
}

/// `GET /v1/node/health`: whether the node's runtime answers now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeHealth {
    /// `docker`, `kubernetes` or `none`.
    pub runtime: String,
    /// The runtime answered (always true for `none`).
    pub ok: bool,
    /// What the runtime said, or why it did not answer.
    pub detail: String,
    pub elapsed_ms: u64,
}

/// `GET /v1/node/store`: the node's store file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub path: String,
    pub size_bytes: u64,
    pub schema_version: u32,
    /// The schema this build reads and writes.
    pub supported_schema_version: u32,
    /// The shoal release that last opened the file.
    pub written_by: Option<String>,
}
