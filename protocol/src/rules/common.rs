//! What the rule families share: the error, the authority checks (member
//! role, origin node, fresh ids), name checks, and the §2 predicates more than
//! one family asks.

use crate::action::Action;
use crate::context::OpContext;
use crate::keys::PublicKey;
use crate::model::{Deployment, DeploymentStatus, Role, TeamState, VersionKind};
use crate::view;

/// Longest name (in bytes) of anything named in the team.
pub const MAX_NAME_LEN: usize = 63;

/// Why an action is refused. Messages say what was wrong and what would make
/// the action possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{who} is not a member of this team: ask an admin for an invite")]
    NotMember { who: String },
    #[error("{action} needs the {needed} role; {who} is {has}: ask an admin or the owner")]
    Role {
        action: &'static str,
        needed: Role,
        who: String,
        has: Role,
    },
    #[error("{origin} is not a node of this team: run the command on a node that is")]
    UnknownOrigin { origin: String },
    #[error("only node {expected} may {what}")]
    NotTheNode {
        expected: String,
        what: &'static str,
    },
    #[error("the team already exists: a team has exactly one genesis")]
    SecondGenesis,
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{what} id {id} is not fresh: ids are derived from the op's log and seq")]
    BadId { what: &'static str, id: String },
    #[error("{what} name {name:?} is already taken: choose another name")]
    NameTaken { what: &'static str, name: String },
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("the owner cannot be removed or demoted")]
    Owner,
    #[error("invite {id} cannot be used: {why}")]
    Invite { id: String, why: String },
    #[error("node {node} still has {count} deployment(s): delete them first")]
    NodeHasDeployments { node: String, count: usize },
    #[error("registry {name} is used by {count} image(s): change or remove those images first")]
    RegistryInUse { name: String, count: usize },
    #[error("the built-in Docker Hub registry cannot be removed")]
    HubRegistry,
    #[error(
        "node {node} has runtime `none` and cannot run deployments: pick a docker or kubernetes node"
    )]
    NoRuntime { node: String },
    #[error("version {version} has no image: add one with `shoal image add` first")]
    NoImages { version: String },
    #[error("a simple product has exactly one version: {why}")]
    SimpleProduct { why: &'static str },
    #[error("version {version} is frozen ({why}): increase it to make a new version")]
    VersionFrozen { version: String, why: String },
    #[error("version {version} cannot be removed: {why}")]
    VersionNotDeletable { version: String, why: String },
    #[error("version {version} already has a child ({child}): increase {child} instead")]
    HasChild { version: String, child: String },
    #[error("only an incremental version can be {what}")]
    NotIncremental { what: &'static str },
    #[error("deployment {id} already exists for this version on {node} with prefix {prefix}{hint}")]
    DuplicateDeployment {
        id: String,
        node: String,
        prefix: String,
        hint: &'static str,
    },
    #[error("deployment {id} is {status}; {what} needs it to be {allowed}")]
    DeploymentState {
        id: String,
        status: DeploymentStatus,
        what: &'static str,
        allowed: &'static str,
    },
    #[error("deployment {id} is protected on {node}/{prefix}: pass --force to replace it")]
    Protected {
        id: String,
        node: String,
        prefix: String,
    },
    #[error(
        "deployment {id} lost a concurrent conflict for its slot: delete it or change its prefix"
    )]
    Conflict { id: String },
    #[error(
        "required secret {key} of container {container} has no value sealed for the target node: set it with `--secret {key}`"
    )]
    MissingSecret { container: String, key: String },
    #[error("secret {key} is sealed to {recipient}, not to the target node: seal it again")]
    SecretRecipient { key: String, recipient: String },
    #[error(
        "container name {name} is already used on {node}/{prefix} by deployment {other}: rename the container or use another prefix"
    )]
    ContainerName {
        name: String,
        node: String,
        prefix: String,
        other: String,
    },
    #[error("try {got} does not match the deployment's current try {expected}")]
    WrongTry { expected: u32, got: u32 },
    #[error("the deployment's frozen config must be set on success and only then")]
    Frozen,
}

pub(super) type R = Result<(), RuleError>;

fn who(s: &TeamState, key: &PublicKey) -> String {
    s.members
        .get(&key.to_hex())
        .map(|m| format!("{} ({})", m.name, key.short()))
        .or_else(|| {
            s.nodes
                .get(&key.to_hex())
                .map(|n| format!("node {} ({})", n.name, key.short()))
        })
        .unwrap_or_else(|| key.short())
}

pub(super) fn need_role(s: &TeamState, ctx: &OpContext, action: &'static str, needed: Role) -> R {
    let role =
        view::effective_role(s, &ctx.author.to_hex()).ok_or_else(|| RuleError::NotMember {
            who: who(s, &ctx.author),
        })?;
    if role < needed {
        return Err(RuleError::Role {
            action,
            needed,
            who: who(s, &ctx.author),
            has: role,
        });
    }
    Ok(())
}

pub(super) fn need_origin(s: &TeamState, ctx: &OpContext) -> R {
    if view::effective_node(s, &ctx.origin.to_hex()).is_none() {
        return Err(RuleError::UnknownOrigin {
            origin: ctx.origin.short(),
        });
    }
    Ok(())
}

/// A node acting in its own name: author and origin are its key.
pub(super) fn need_self_node(s: &TeamState, ctx: &OpContext) -> R {
    if ctx.author != ctx.origin || view::effective_node(s, &ctx.author.to_hex()).is_none() {
        return Err(RuleError::NotMember {
            who: who(s, &ctx.author),
        });
    }
    Ok(())
}

pub(super) fn fresh(ctx: &OpContext, what: &'static str, id: &str, exists: bool) -> R {
    if exists || !ctx.is_new_id(id) {
        return Err(RuleError::BadId {
            what,
            id: id.to_string(),
        });
    }
    Ok(())
}

/// Names of teams, members, nodes, products, registries, versions, containers.
pub fn check_name(what: &'static str, name: &str) -> R {
    let bad = |why: &str| {
        Err(RuleError::Invalid {
            what,
            value: name.to_string(),
            why: why.to_string(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 63 characters");
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '/' || c.is_whitespace())
    {
        return bad("use no spaces, slashes or control characters");
    }
    Ok(())
}

/// A deployment prefix: a DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 chars).
pub fn check_prefix(prefix: &str) -> R {
    let ok = !prefix.is_empty()
        && prefix.len() <= 63
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !prefix.starts_with('-')
        && !prefix.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(RuleError::Invalid {
            what: "prefix",
            value: prefix.to_string(),
            why: "a prefix is a DNS label: lowercase letters, digits and '-', not starting or ending with '-', at most 63 characters".into(),
        })
    }
}

/// Container names: DNS labels too, since they become `<prefix>-<name>`.
pub fn check_container_name(name: &str) -> R {
    check_prefix(name).map_err(|_| RuleError::Invalid {
        what: "container name",
        value: name.to_string(),
        why: "use lowercase letters, digits and '-' (at most 63 characters)".into(),
    })
}

pub(super) fn found<'a, T>(
    v: Option<&'a T>,
    what: &'static str,
    id: &str,
) -> Result<&'a T, RuleError> {
    v.ok_or_else(|| RuleError::NotFound {
        what,
        id: id.to_string(),
    })
}

/// mutable(d) of §2.
pub fn deployment_mutable(s: &TeamState, d: &Deployment) -> bool {
    match d.status {
        DeploymentStatus::Preparing | DeploymentStatus::Failed => true,
        DeploymentStatus::Successful => s
            .versions
            .get(&d.version)
            .is_some_and(|v| v.kind == VersionKind::Rolling),
        _ => false,
    }
}

pub(super) fn deployment_state_err(
    d: &Deployment,
    what: &'static str,
    allowed: &'static str,
) -> RuleError {
    RuleError::DeploymentState {
        id: d.id.clone(),
        status: d.status,
        what,
        allowed,
    }
}

/// The error for an action handed to a family it is not of. The dispatcher
/// in `rules` never does that; refusing keeps a slip from passing an op
/// unchecked.
pub(super) fn not_in_family(action: &Action, family: &'static str) -> RuleError {
    RuleError::Invalid {
        what: "action",
        value: action.name().to_string(),
        why: format!("it is not a {family} action"),
    }
}
