//! The rules of §2 and the authority of §3, as pure functions of the state at
//! an op's causal past. The daemon runs them when it prepares an op (so the
//! user hears at once) and every replica runs them again when it applies it.
//!
//! [`check`] sends each action to the rules of its family: `membership`
//! (team, invites, members, nodes, joins), `catalog` (registries, products,
//! versions, images), `deployment` (deployments, container commands) and
//! `keys` (the team secrets key). What they share is in `common`.

mod catalog;
mod common;
mod deployment;
mod keys;
mod membership;

use crate::action::Action;
use crate::model::TeamState;

pub use self::catalog::version_frozen;
pub use self::common::{
    MAX_NAME_LEN, RuleError, check_container_name, check_name, check_prefix, deployment_mutable,
};
pub use self::deployment::{MAX_EVENT_LEN, MAX_EVENTS, deployment_deployable};
pub use self::membership::{MAX_PURGE, check_ticket, join_proof_message};
pub use crate::context::{MAX_NEW_IDS, OpContext, entity_id};

/// Checks `action` by `ctx` against the state `s` at the op's causal past.
pub fn check(s: &TeamState, ctx: &OpContext, action: &Action) -> Result<(), RuleError> {
    use Action as A;
    // No wildcard: a new action does not compile until it has a family here.
    match action {
        A::TeamCreate { .. }
        | A::TeamUpdate { .. }
        | A::InviteCreate { .. }
        | A::InviteRevoke { .. }
        | A::MemberJoin { .. }
        | A::NodeJoin { .. }
        | A::MemberRole { .. }
        | A::MemberRemove { .. }
        | A::NodeRemove { .. }
        | A::NodeUpdate { .. }
        | A::QuarantinePurge { .. } => membership::check(s, ctx, action),
        A::RegistryAdd { .. }
        | A::RegistryUpdate { .. }
        | A::RegistryRemove { .. }
        | A::ProductCreate { .. }
        | A::ProductRemove { .. }
        | A::ProductUpdate { .. }
        | A::VersionCreate { .. }
        | A::VersionIncrease { .. }
        | A::VersionDefault { .. }
        | A::VersionRemove { .. }
        | A::VersionUpdate { .. }
        | A::ImageAdd { .. }
        | A::ImageRemove { .. }
        | A::ImageConfig { .. }
        | A::ImageOrder { .. }
        | A::ProductImport { .. } => catalog::check(s, ctx, action),
        A::DeploymentCreate { .. }
        | A::DeploymentUpdate { .. }
        | A::DeploymentStart { .. }
        | A::DeploymentRollback { .. }
        | A::DeploymentDelete { .. }
        | A::DeploymentDeleteVolumes { .. }
        | A::NodePrune { .. }
        | A::DeploymentCopy { .. }
        | A::DeploymentFinish { .. }
        | A::ContainerCommand { .. } => deployment::check(s, ctx, action),
        A::KeySeal { .. } | A::KeyRotate { .. } => keys::check(s, ctx, action),
    }
}
