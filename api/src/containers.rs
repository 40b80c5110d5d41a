//! A node's containers, asked of that node: the list, logs, follow sessions,
//! inspect, and a deployment's progress lines
//! (`/v1/teams/{team}/nodes/{node}/...`).

use serde::{Deserialize, Serialize};

pub use shoal_protocol::model::{ContainerState, Protocol};

/// `GET .../containers` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainersQuery {
    /// Only the containers of this deployment prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Ask the node even when its heartbeat's live state is fresh (to see
    /// the effect of a command at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
}

/// A container a node runs for the team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The runtime's name: `<prefix>-<container>` (init containers:
    /// `<prefix>-<container>-init-<init>`).
    pub name: String,
    /// The engine's id.
    pub id: String,
    pub prefix: String,
    /// The container's name in its version.
    pub container: String,
    pub deployment: String,
    pub version: String,
    pub try_number: u32,
    /// The init container's name, for init containers.
    pub init: Option<String>,
    pub state: ContainerState,
    /// The engine's human status ("Up 3 minutes").
    pub status: String,
    pub ports: Vec<PublishedPort>,
}

/// A container port published on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub internal: u16,
    pub protocol: Protocol,
    pub host_ip: String,
    pub host_port: u16,
}

/// `GET .../containers` answer.
pub type ContainerList = Vec<ContainerInfo>;

/// `GET .../containers/{name}/logs` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    /// The last lines to give (default and at most 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
}

/// `GET .../containers/{name}/logs` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    pub lines: Vec<String>,
}

/// `GET .../containers/{name}/follow` query: without `session`, opens one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowQuery {
    /// Lines of history a new session starts with (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// The number of the next line wanted: `first` + the lines received.
    #[serde(default)]
    pub after: u64,
}

/// `GET .../containers/{name}/follow` answer: lines of a follow session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowChunk {
    pub session: u64,
    /// Number of the first line of `lines` (lines are numbered from 0).
    pub first: u64,
    pub lines: Vec<String>,
    /// Lines the node's buffer no longer held for a reader that fell behind.
    pub dropped: u64,
    /// The output ended; nothing more will come.
    pub ended: bool,
}

/// `GET .../containers/{name}/inspect` answer: the engine's own document,
/// secret env values replaced by `<redacted>`.
pub type Inspect = serde_json::Value;

/// `GET .../deployments/{deployment}/progress` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressQuery {
    /// `TRY/LINE` of the last line seen (`2/14`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Wait up to 10 s for a new line when there is none.
    #[serde(default)]
    pub wait: bool,
}

/// One progress line of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressLine {
    pub attempt: u32,
    pub seq: u32,
    pub text: String,
}

/// `GET .../deployments/{deployment}/progress` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressLines {
    pub lines: Vec<ProgressLine>,
}

/// `GET .../nodes/{node}/commands/{id}`: what became of a command the node
/// carries out (`container.command`, `node.prune`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: String,
    /// `done: ...` or `failed: ...`; `null` while the node has not carried
    /// it out.
    pub result: Option<String>,
}
