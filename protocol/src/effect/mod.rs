//! What an action does to the state: the exact post-values of every entity it
//! touches. `prepare` writes these into the document; every replica checks
//! that an op's change wrote exactly these and nothing else.
//!
//! [`effect`] sends each action to the effects of its family, split as the
//! rules are: `membership`, `catalog`, `deployment` and `keys`; `common`
//! holds the [`Write`] they produce.

mod catalog;
mod common;
mod deployment;
mod keys;
mod membership;

use crate::action::Action;
use crate::context::OpContext;
use crate::model::TeamState;

pub use self::common::Write;
pub use self::membership::genesis;
pub use crate::context::copy_sources;

/// The writes of `action`, assuming [`crate::rules::check`] accepted it on `s`.
pub fn effect(s: &TeamState, ctx: &OpContext, action: &Action) -> Vec<Write> {
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
        | A::QuarantinePurge { .. } => membership::effect(s, ctx, action),
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
        | A::ProductImport { .. } => catalog::effect(s, ctx, action),
        A::DeploymentCreate { .. }
        | A::DeploymentUpdate { .. }
        | A::DeploymentStart { .. }
        | A::DeploymentRollback { .. }
        | A::DeploymentDelete { .. }
        | A::DeploymentCopy { .. }
        | A::DeploymentDeleteVolumes { .. }
        | A::NodePrune { .. }
        | A::DeploymentFinish { .. }
        | A::ContainerCommand { .. } => deployment::effect(s, ctx, action),
        A::KeySeal { .. } | A::KeyRotate { .. } => keys::effect(s, action),
    }
}
