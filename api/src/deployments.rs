//! Deployments: `GET /v1/teams/{team}/deployments[/{deployment}[/sealed]]`
//! (and the rollback target, which has the shape of one deployment).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use shoal_protocol::model::{
    ContainerConfig, ContainerState, DeploymentStatus, Sealed, VersionKind,
};

use crate::products::Image;

/// `GET /v1/teams/{team}/deployments` query; every filter set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentsQuery {
    /// Node name or key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `preparing`, `in-progress`, `successful`, `failed`, `obsolete` or `downgraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Needs `product`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A deployment as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    /// The product's name.
    pub product: Option<String>,
    pub product_id: String,
    /// The version's name.
    pub version: Option<String>,
    pub version_id: String,
    pub version_kind: Option<VersionKind>,
    /// The target node's name.
    pub node: String,
    pub node_key: String,
    pub prefix: String,
    pub status: DeploymentStatus,
    pub tries: u32,
    pub finished_try: u32,
    pub reason: Option<String>,
    pub note: String,
    pub protected: bool,
    /// Lost a concurrent race for its slot: never executed.
    pub conflict: bool,
    pub mutable: bool,
    pub deployable: bool,
    pub created_ms: u64,
    /// The creator's name.
    pub created_by: String,
    /// The keys of the sealed secret values (never the values).
    pub secrets: Vec<String>,
}

/// `GET /v1/teams/{team}/deployments`: oldest first.
pub type DeploymentList = Vec<Deployment>;

/// One deployment (`GET .../deployments/{deployment}`, and the rollback
/// target): the listed fields plus its configuration and last try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentDetail {
    #[serde(flatten)]
    pub deployment: Deployment,
    pub env: BTreeMap<String, String>,
    /// Per-container overrides.
    pub instances: BTreeMap<String, ContainerConfig>,
    /// State per container at the end of the last try.
    pub containers: BTreeMap<String, ContainerState>,
    /// The last try's summary.
    pub events: Vec<String>,
    /// The name of the version whose config was frozen into it.
    pub frozen: Option<String>,
    /// The version's images.
    pub images: Vec<Image>,
    /// Identifies this view, for `?unless=`; sent by the deployment route only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Each container's expected state against the live state in the
    /// target node's latest heartbeat; absent when that heartbeat is not
    /// fresh or carries no live state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<DeploymentLive>,
}

/// A deployment's containers as its node last said they run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentLive {
    /// Age of the heartbeat the live state came from.
    pub seen_ms_ago: u64,
    /// Some container is not in its expected state.
    pub drift: bool,
    /// One per container of the last try, in name order.
    pub containers: Vec<ContainerDrift>,
}

/// One container's expected against actual state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerDrift {
    /// Its name in its version.
    pub container: String,
    /// The runtime's name, `<prefix>-<container>`.
    pub name: String,
    /// The state it reached in the deployment's successful try
    /// (`running`, `exited`); `null` when the deployment is not
    /// `successful` (nothing is expected to run as it is).
    pub expected: Option<String>,
    /// The runtime's state now, `missing` when the node runs no such
    /// container of this deployment.
    pub actual: String,
    pub exit_code: Option<i64>,
    /// `healthy`, `unhealthy` or `starting` for a container with a health check.
    pub health: Option<String>,
    pub restarts: u32,
    /// Actual differs from expected (or is unhealthy).
    pub drift: bool,
}

/// `GET .../deployments/{deployment}` query: a long poll for a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentWait {
    /// A `fingerprint` seen: answer once the deployment differs from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<String>,
    /// How long to wait for a change (at most 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// `GET .../deployments/{deployment}/sealed`: the sealed secret values as
/// the replicated state holds them (ciphertext only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecrets {
    pub id: String,
    pub secrets: BTreeMap<String, Sealed>,
}
