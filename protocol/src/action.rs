//! The typed, human-readable record of intent every op carries (§3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::keys::{OpHash, PublicKey, Signature};
use crate::model::{
    ContainerAction, ContainerConfig, ContainerState, FrozenConfig, Image, ImageRef, InviteKind,
    ProductKind, RegistryKind, Role, Runtime, Sealed, SealedKey, VersionKind,
};

/// A profile entering the team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMember {
    pub key: PublicKey,
    pub name: String,
    pub email: Option<String>,
    pub enc_key: String,
}

/// A daemon entering the team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewNode {
    pub key: PublicKey,
    pub name: String,
    pub runtime: Runtime,
    pub enc_key: String,
    pub addresses: Vec<String>,
    pub agent_version: String,
    pub protocol_version: u32,
}

/// How a deployment ended, as reported by its target node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Successful,
    Failed { reason: String },
}

/// Partial edit of a deployment; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentEdit {
    pub note: Option<String>,
    pub prefix: Option<String>,
    pub protected: Option<bool>,
    pub env: Option<BTreeMap<String, String>>,
    pub secrets: Option<BTreeMap<String, Sealed>>,
    pub instances: Option<BTreeMap<String, ContainerConfig>>,
}

/// Every operation of the command contract (§6) that changes team state.
///
/// Ids of entities an action creates are derived from the op's log and seq
/// (see [`crate::replica::entity_id`]) so two concurrent creations never collide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    TeamCreate {
        name: String,
        description: String,
        owner: Box<NewMember>,
        node: Box<NewNode>,
    },
    TeamUpdate {
        name: String,
        description: String,
    },
    InviteCreate {
        id: String,
        kind: InviteKind,
        invite_key: PublicKey,
        expires: Hlc,
    },
    InviteRevoke {
        id: String,
    },
    /// Signed by the newcomer's profile key; `proof` is the invite key's
    /// signature over [`crate::replica::join_proof_message`].
    MemberJoin {
        invite: String,
        member: Box<NewMember>,
        node: Option<Box<NewNode>>,
        proof: Signature,
    },
    /// Signed by the new node's own key.
    NodeJoin {
        invite: String,
        node: Box<NewNode>,
        proof: Signature,
    },
    MemberRole {
        member: PublicKey,
        role: Role,
    },
    MemberRemove {
        member: PublicKey,
    },
    NodeRemove {
        node: PublicKey,
    },
    /// A node publishing its own addresses and agent version.
    NodeUpdate {
        addresses: Vec<String>,
        agent_version: String,
        protocol_version: u32,
    },
    RegistryAdd {
        id: String,
        name: String,
        kind: RegistryKind,
        url: Option<String>,
        namespace: Option<String>,
        user: Option<String>,
        password: Option<Sealed>,
    },
    RegistryRemove {
        id: String,
    },
    /// Changes a registry's address or credentials; `None` keeps a field.
    RegistryUpdate {
        id: String,
        url: Option<String>,
        namespace: Option<String>,
        /// New credentials: the user, and the password sealed like
        /// `RegistryAdd`'s (a user alone keeps no password).
        user: Option<String>,
        password: Option<Sealed>,
        /// Drops the user and password.
        clear_credentials: bool,
    },
    ProductCreate {
        id: String,
        name: String,
        kind: ProductKind,
        description: String,
        /// For simple products: the id of the one rolling version created with it.
        version: Option<String>,
    },
    ProductRemove {
        id: String,
    },
    VersionCreate {
        id: String,
        product: String,
        name: String,
        kind: VersionKind,
        changelog: String,
        auto_copy: bool,
    },
    VersionIncrease {
        from: String,
        id: String,
        name: String,
        changelog: String,
        /// New ids for the deployments copied when the version has auto-copy on,
        /// in the order of the source deployments' ids.
        copies: Vec<String>,
    },
    VersionDefault {
        version: String,
    },
    VersionRemove {
        id: String,
    },
    ImageAdd {
        version: String,
        /// Boxed, like every large payload: an action is held for every op
        /// of the history, and an enum is as large as its largest variant.
        image: Box<Image>,
    },
    ImageRemove {
        version: String,
        name: String,
    },
    ImageConfig {
        version: String,
        name: String,
        image: ImageRef,
        config: Box<ContainerConfig>,
    },
    ImageOrder {
        version: String,
        names: Vec<String>,
    },
    DeploymentCreate {
        id: String,
        version: String,
        node: PublicKey,
        prefix: String,
        env: BTreeMap<String, String>,
        secrets: BTreeMap<String, Sealed>,
        instances: BTreeMap<String, ContainerConfig>,
        protected: bool,
        note: String,
        force: bool,
    },
    DeploymentUpdate {
        id: String,
        edit: DeploymentEdit,
    },
    DeploymentStart {
        id: String,
        force: bool,
    },
    /// Redeploying an obsolete deployment of an earlier incremental version.
    DeploymentRollback {
        id: String,
        force: bool,
    },
    DeploymentDelete {
        id: String,
    },
    DeploymentCopy {
        from: String,
        id: String,
        node: PublicKey,
        prefix: String,
    },
    /// Written by the target node at the end of a try.
    DeploymentFinish {
        id: String,
        attempt: u32,
        outcome: Outcome,
        containers: BTreeMap<String, ContainerState>,
        events: Vec<String>,
        frozen: Option<FrozenConfig>,
    },
    ContainerCommand {
        id: String,
        node: PublicKey,
        container: String,
        action: ContainerAction,
    },
    /// Seals the team secrets key to recipients (admins or nodes).
    KeySeal {
        keys: Vec<SealedKey>,
    },
    /// Replaces the team secrets key (§5), after a member or node left: a
    /// new key of the next epoch sealed to every node and admin who remain,
    /// and every registry password sealed again to it (registry id →
    /// password).
    KeyRotate {
        epoch: u32,
        keys: Vec<SealedKey>,
        registries: BTreeMap<String, Sealed>,
    },
    /// A product version with all its images in one op (compose import):
    /// nothing is written unless all of it is valid. With `product_name`
    /// the complex product `product` is created too; else it exists.
    ProductImport {
        product: String,
        product_name: Option<String>,
        description: String,
        /// The new incremental version's id and name.
        version: String,
        name: String,
        changelog: String,
        images: Vec<Image>,
    },
    /// Drops refused ops from every replica's quarantine (and store): the
    /// evidence was looked at and is no longer wanted. Writes nothing else.
    QuarantinePurge {
        ops: Vec<OpHash>,
    },
    /// Replaces a product's description. Appended after every earlier
    /// variant so their postcard encodings (the variant index) stay as
    /// they were.
    ProductUpdate {
        id: String,
        description: String,
    },
    /// Changes a version's metadata; `None` keeps a field. Neither field
    /// touches the version's images or configs, so a frozen version takes
    /// it too.
    VersionUpdate {
        id: String,
        changelog: Option<String>,
        auto_copy: Option<bool>,
    },
    /// Deletes a deployment like `DeploymentDelete` and asks its node to
    /// remove the deployment's named volumes with its containers: a
    /// `remove-volumes` command `command` for the node, kept in the state
    /// so a node that is offline now does it when it comes back.
    DeploymentDeleteVolumes {
        id: String,
        command: String,
    },
    /// Asks node `node` to remove the images that no deployment on it can
    /// roll back to: a `prune-images` command `id` for the node, which
    /// carries it out when it sees it and keeps what it removed.
    NodePrune {
        id: String,
        node: PublicKey,
    },
}

impl Action {
    /// The audit name, e.g. `deployment.start`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::TeamCreate { .. } => "team.create",
            Action::TeamUpdate { .. } => "team.update",
            Action::InviteCreate { .. } => "invite.create",
            Action::InviteRevoke { .. } => "invite.revoke",
            Action::MemberJoin { .. } => "member.join",
            Action::NodeJoin { .. } => "node.join",
            Action::MemberRole { .. } => "member.role",
            Action::MemberRemove { .. } => "member.remove",
            Action::NodeRemove { .. } => "node.remove",
            Action::NodeUpdate { .. } => "node.update",
            Action::RegistryAdd { .. } => "registry.add",
            Action::RegistryRemove { .. } => "registry.remove",
            Action::RegistryUpdate { .. } => "registry.update",
            Action::ProductCreate { .. } => "product.create",
            Action::ProductRemove { .. } => "product.remove",
            Action::VersionCreate { .. } => "version.create",
            Action::VersionIncrease { .. } => "version.increase",
            Action::VersionDefault { .. } => "version.default",
            Action::VersionRemove { .. } => "version.remove",
            Action::ImageAdd { .. } => "image.add",
            Action::ImageRemove { .. } => "image.remove",
            Action::ImageConfig { .. } => "image.config",
            Action::ImageOrder { .. } => "image.order",
            Action::DeploymentCreate { .. } => "deployment.create",
            Action::DeploymentUpdate { .. } => "deployment.update",
            Action::DeploymentStart { .. } => "deployment.start",
            Action::DeploymentRollback { .. } => "deployment.rollback",
            Action::DeploymentDelete { .. } => "deployment.delete",
            Action::DeploymentCopy { .. } => "deployment.copy",
            Action::DeploymentFinish { .. } => "deployment.finish",
            Action::ContainerCommand { .. } => "container.command",
            Action::KeySeal { .. } => "key.seal",
            Action::KeyRotate { .. } => "key.rotate",
            Action::ProductImport { .. } => "product.import",
            Action::QuarantinePurge { .. } => "quarantine.purge",
            Action::ProductUpdate { .. } => "product.update",
            Action::VersionUpdate { .. } => "version.update",
            Action::DeploymentDeleteVolumes { .. } => "deployment.delete-volumes",
            Action::NodePrune { .. } => "node.prune",
        }
    }

    /// The ids (or keys) of what the action is about, for audit filtering.
    pub fn targets(&self) -> Vec<String> {
        match self {
            Action::TeamCreate { owner, node, .. } => {
                vec![owner.key.to_hex(), node.key.to_hex()]
            }
            Action::TeamUpdate { .. } => vec![],
            Action::InviteCreate { id, .. } | Action::InviteRevoke { id } => vec![id.clone()],
            Action::MemberJoin {
                invite,
                member,
                node,
                ..
            } => {
                let mut v = vec![invite.clone(), member.key.to_hex()];
                if let Some(n) = node {
                    v.push(n.key.to_hex());
                }
                v
            }
            Action::NodeJoin { invite, node, .. } => vec![invite.clone(), node.key.to_hex()],
            Action::MemberRole { member, .. } | Action::MemberRemove { member } => {
                vec![member.to_hex()]
            }
            Action::NodeRemove { node } => vec![node.to_hex()],
            Action::NodeUpdate { .. } => vec![],
            Action::RegistryAdd { id, .. }
            | Action::RegistryRemove { id }
            | Action::RegistryUpdate { id, .. } => vec![id.clone()],
            Action::ProductCreate { id, version, .. } => {
                let mut v = vec![id.clone()];
                v.extend(version.clone());
                v
            }
            Action::ProductRemove { id } | Action::ProductUpdate { id, .. } => vec![id.clone()],
            Action::VersionCreate { id, product, .. } => vec![id.clone(), product.clone()],
            Action::VersionIncrease {
                from, id, copies, ..
            } => {
                let mut v = vec![from.clone(), id.clone()];
                v.extend(copies.iter().cloned());
                v
            }
            Action::VersionDefault { version } => vec![version.clone()],
            Action::VersionRemove { id } | Action::VersionUpdate { id, .. } => vec![id.clone()],
            Action::ImageAdd { version, .. }
            | Action::ImageRemove { version, .. }
            | Action::ImageConfig { version, .. }
            | Action::ImageOrder { version, .. } => vec![version.clone()],
            Action::DeploymentCreate {
                id, version, node, ..
            } => vec![id.clone(), version.clone(), node.to_hex()],
            Action::DeploymentUpdate { id, .. }
            | Action::DeploymentStart { id, .. }
            | Action::DeploymentRollback { id, .. }
            | Action::DeploymentDelete { id }
            | Action::DeploymentFinish { id, .. } => vec![id.clone()],
            Action::DeploymentCopy { from, id, node, .. } => {
                vec![from.clone(), id.clone(), node.to_hex()]
            }
            Action::ContainerCommand { id, node, .. } => vec![id.clone(), node.to_hex()],
            Action::KeySeal { keys } => keys.iter().map(|k| k.recipient.clone()).collect(),
            Action::KeyRotate {
                keys, registries, ..
            } => registries
                .keys()
                .cloned()
                .chain(keys.iter().map(|k| k.recipient.clone()))
                .collect(),
            Action::ProductImport {
                product, version, ..
            } => vec![product.clone(), version.clone()],
            Action::QuarantinePurge { ops } => ops.iter().map(|h| h.to_hex()).collect(),
            Action::DeploymentDeleteVolumes { id, command } => vec![id.clone(), command.clone()],
            Action::NodePrune { id, node } => vec![id.clone(), node.to_hex()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica holds every op of the history, and an enum is as large as
    /// its largest variant: a large payload left inline (an image's config
    /// is 1 KB) would cost its size for every op of every kind. Such
    /// payloads are boxed.
    #[test]
    fn an_action_and_an_op_stay_small() {
        assert!(
            std::mem::size_of::<Action>() <= 256,
            "Action is {} bytes: box the large variant's payload",
            std::mem::size_of::<Action>()
        );
        assert!(
            std::mem::size_of::<crate::Op>() <= 512,
            "Op is {} bytes",
            std::mem::size_of::<crate::Op>()
        );
    }
}
