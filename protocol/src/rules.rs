//! The rules of §2 and the authority of §3, as pure functions of the state at
//! an op's causal past. The daemon runs them when it prepares an op (so the
//! user hears at once) and every replica runs them again when it applies it.

use crate::action::{Action, NewMember, NewNode, Outcome};
use crate::context::copy_sources;
use crate::keys::{PublicKey, TeamId};
use crate::model::{
    Deployment, DeploymentStatus, HUB_REGISTRY_ID, InviteKind, ProductKind, RegistryKind, Role,
    Runtime, Sealed, TeamState, Version, VersionKind,
};
use crate::view;

pub use crate::context::{MAX_NEW_IDS, OpContext, entity_id};

/// Limits that keep one op's effect bounded.
pub const MAX_EVENTS: usize = 100;
pub const MAX_EVENT_LEN: usize = 500;
pub const MAX_NAME_LEN: usize = 63;

/// The message an invite key signs to let `newcomer` redeem `invite`.
pub fn join_proof_message(team: &TeamId, invite: &str, newcomer: &PublicKey) -> Vec<u8> {
    let mut m = b"shoal/join-proof/v1".to_vec();
    m.extend_from_slice(&team.0);
    m.extend_from_slice(&(invite.len() as u32).to_be_bytes());
    m.extend_from_slice(invite.as_bytes());
    m.extend_from_slice(newcomer.as_bytes());
    m
}

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

type R = Result<(), RuleError>;

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

fn need_role(s: &TeamState, ctx: &OpContext, action: &'static str, needed: Role) -> R {
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

fn need_origin(s: &TeamState, ctx: &OpContext) -> R {
    if view::effective_node(s, &ctx.origin.to_hex()).is_none() {
        return Err(RuleError::UnknownOrigin {
            origin: ctx.origin.short(),
        });
    }
    Ok(())
}

/// A node acting in its own name: author and origin are its key.
fn need_self_node(s: &TeamState, ctx: &OpContext) -> R {
    if ctx.author != ctx.origin || view::effective_node(s, &ctx.author.to_hex()).is_none() {
        return Err(RuleError::NotMember {
            who: who(s, &ctx.author),
        });
    }
    Ok(())
}

fn fresh(ctx: &OpContext, what: &'static str, id: &str, exists: bool) -> R {
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

fn found<'a, T>(v: Option<&'a T>, what: &'static str, id: &str) -> Result<&'a T, RuleError> {
    v.ok_or_else(|| RuleError::NotFound {
        what,
        id: id.to_string(),
    })
}

/// Why an incremental version is frozen, if it is.
pub fn version_frozen(s: &TeamState, v: &Version) -> Option<String> {
    if v.kind == VersionKind::Rolling {
        return None;
    }
    if let Some(c) = &v.child {
        let name = s.versions.get(c).map(|v| v.name.as_str()).unwrap_or(c);
        return Some(format!("it has a child version {name}"));
    }
    s.deployments
        .values()
        .find(|d| {
            d.version == v.id
                && matches!(
                    d.status,
                    DeploymentStatus::InProgress
                        | DeploymentStatus::Successful
                        | DeploymentStatus::Obsolete
                        | DeploymentStatus::Downgraded
                )
        })
        .map(|d| format!("deployment {} is {}", d.id, d.status))
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

/// deployable(d) of §2.
pub fn deployment_deployable(s: &TeamState, d: &Deployment) -> bool {
    match d.status {
        DeploymentStatus::Preparing | DeploymentStatus::Failed | DeploymentStatus::Obsolete => true,
        DeploymentStatus::Successful => s
            .versions
            .get(&d.version)
            .is_some_and(|v| v.kind == VersionKind::Rolling),
        _ => false,
    }
}

fn deployment_state_err(d: &Deployment, what: &'static str, allowed: &'static str) -> RuleError {
    RuleError::DeploymentState {
        id: d.id.clone(),
        status: d.status,
        what,
        allowed,
    }
}

fn check_slot(s: &TeamState, v: &Version, node: &str, prefix: &str, except: Option<&str>) -> R {
    let clash = s.deployments.values().find(|e| {
        Some(e.id.as_str()) != except
            && e.version == v.id
            && e.node == node
            && e.prefix == prefix
            && (v.kind == VersionKind::Rolling || e.status == DeploymentStatus::Preparing)
    });
    if let Some(e) = clash {
        return Err(RuleError::DuplicateDeployment {
            id: e.id.clone(),
            node: node_name(s, node),
            prefix: prefix.to_string(),
            hint: match v.kind {
                VersionKind::Rolling => {
                    ": a rolling version has one deployment per node and prefix; start or edit that one"
                }
                VersionKind::Incremental => {
                    " and is still preparing: start, edit or delete that one"
                }
            },
        });
    }
    Ok(())
}

fn node_name(s: &TeamState, key: &str) -> String {
    s.nodes
        .get(key)
        .map(|n| n.name.clone())
        .unwrap_or_else(|| key.to_string())
}

/// A protected deployment on the slot blocks a non-protected one (§2).
#[allow(clippy::too_many_arguments)]
fn check_protected(
    s: &TeamState,
    d_product: &str,
    d_version: &str,
    node: &str,
    prefix: &str,
    protected: bool,
    force: bool,
    except: Option<&str>,
) -> R {
    if protected || force {
        return Ok(());
    }
    let Some(v) = s.versions.get(d_version) else {
        return Ok(());
    };
    let blocker = s.deployments.values().find(|e| {
        Some(e.id.as_str()) != except
            && e.protected
            && e.product == d_product
            && e.node == node
            && e.prefix == prefix
            && e.status == DeploymentStatus::Successful
            && (v.kind == VersionKind::Rolling || e.version != d_version)
    });
    if let Some(e) = blocker {
        return Err(RuleError::Protected {
            id: e.id.clone(),
            node: node_name(s, node),
            prefix: prefix.to_string(),
        });
    }
    Ok(())
}

fn check_sealed_to(node: &str, secrets: &std::collections::BTreeMap<String, Sealed>) -> R {
    let want = format!("node:{node}");
    for (k, v) in secrets {
        if v.recipient != want {
            return Err(RuleError::SecretRecipient {
                key: k.clone(),
                recipient: v.recipient.clone(),
            });
        }
    }
    Ok(())
}

fn target_node<'a>(s: &'a TeamState, key: &str) -> Result<&'a crate::model::Node, RuleError> {
    let n = found(view::effective_node(s, key), "node", key)?;
    if n.runtime == Runtime::None {
        return Err(RuleError::NoRuntime {
            node: n.name.clone(),
        });
    }
    Ok(n)
}

fn check_instances(
    v: &Version,
    instances: &std::collections::BTreeMap<String, crate::model::ContainerConfig>,
) -> R {
    for name in instances.keys() {
        if !v.images.iter().any(|i| &i.name == name) {
            return Err(RuleError::NotFound {
                what: "container",
                id: name.clone(),
            });
        }
    }
    Ok(())
}

fn check_start(s: &TeamState, d: &Deployment, force: bool) -> R {
    if view::deployment_in_conflict(s, d) {
        return Err(RuleError::Conflict { id: d.id.clone() });
    }
    let n = target_node(s, &d.node)?;
    let v = found(s.versions.get(&d.version), "version", &d.version)?;
    let images = match (&d.frozen, d.status) {
        (Some(f), DeploymentStatus::Obsolete) => f.images.clone(),
        _ => v.images.clone(),
    };
    if images.is_empty() {
        return Err(RuleError::NoImages {
            version: v.name.clone(),
        });
    }
    for img in &images {
        let cfg = match d.instances.get(&img.name) {
            Some(inst) => img.config.merged(inst),
            None => img.config.clone(),
        };
        for (key, decl) in &cfg.secrets {
            if decl.required && !d.secrets.contains_key(key) {
                return Err(RuleError::MissingSecret {
                    container: img.name.clone(),
                    key: key.clone(),
                });
            }
        }
        // Container names are `<prefix>-<name>` on the node: another product
        // running on the same slot must not use the same name.
        let other = s.deployments.values().find(|e| {
            e.product != d.product
                && e.node == d.node
                && e.prefix == d.prefix
                && matches!(
                    e.status,
                    DeploymentStatus::InProgress | DeploymentStatus::Successful
                )
                && s.versions
                    .get(&e.version)
                    .is_some_and(|ev| ev.images.iter().any(|i| i.name == img.name))
        });
        if let Some(e) = other {
            return Err(RuleError::ContainerName {
                name: img.name.clone(),
                node: n.name.clone(),
                prefix: d.prefix.clone(),
                other: e.id.clone(),
            });
        }
    }
    check_sealed_to(&d.node, &d.secrets)?;
    check_protected(
        s,
        &d.product,
        &d.version,
        &d.node,
        &d.prefix,
        d.protected,
        force,
        Some(&d.id),
    )
}

fn check_new_member(s: &TeamState, m: &NewMember) -> R {
    check_name("member name", &m.name)?;
    if s.members.contains_key(&m.key.to_hex()) {
        return Err(RuleError::Invalid {
            what: "member",
            value: m.key.short(),
            why: "this profile is or was already a member; a removed profile needs a new key"
                .into(),
        });
    }
    Ok(())
}

fn check_new_node(s: &TeamState, n: &NewNode) -> R {
    check_name("node name", &n.name)?;
    if s.nodes.contains_key(&n.key.to_hex()) {
        return Err(RuleError::Invalid {
            what: "node",
            value: n.key.short(),
            why: "this node is or was already in the team".into(),
        });
    }
    if s.nodes
        .values()
        .any(|x| x.removed.is_none() && x.name == n.name)
    {
        return Err(RuleError::NameTaken {
            what: "node",
            name: n.name.clone(),
        });
    }
    Ok(())
}

fn check_invite(
    s: &TeamState,
    ctx: &OpContext,
    id: &str,
    newcomer: &PublicKey,
    proof: &crate::keys::Signature,
) -> Result<InviteKind, RuleError> {
    let team = ctx.team.ok_or_else(|| RuleError::Invite {
        id: id.to_string(),
        why: "the op names no team".into(),
    })?;
    check_ticket(s, &team, id, newcomer, proof, ctx.hlc)
}

/// Whether `newcomer` may redeem invite `id` of `team` with `proof` at time
/// `now`, in state `s`: the invite exists, is not revoked, expired or used,
/// and the proof is the invite key's signature. Nodes call it before they
/// hand a team's ops to a stranger holding a ticket.
pub fn check_ticket(
    s: &TeamState,
    team: &TeamId,
    id: &str,
    newcomer: &PublicKey,
    proof: &crate::keys::Signature,
    now: crate::hlc::Hlc,
) -> Result<InviteKind, RuleError> {
    let bad = |why: &str| RuleError::Invite {
        id: id.to_string(),
        why: why.to_string(),
    };
    let inv = s
        .invites
        .get(id)
        .ok_or_else(|| bad("no such invite in this team"))?;
    if inv.revoked {
        return Err(bad("it was revoked; ask for a new ticket"));
    }
    if now > inv.expires {
        return Err(bad("it has expired; ask for a new ticket"));
    }
    let used = s.members.values().any(|m| m.invite.as_deref() == Some(id))
        || s.nodes.values().any(|n| n.invite.as_deref() == Some(id));
    if used {
        return Err(bad("it was already used; a ticket works once"));
    }
    let key: PublicKey = inv
        .invite_key
        .parse()
        .map_err(|_| bad("the invite key is malformed"))?;
    if !key.verify(&join_proof_message(team, id, newcomer), proof) {
        return Err(bad(
            "the ticket's proof does not verify: the ticket was tampered with",
        ));
    }
    Ok(inv.kind.clone())
}

/// Checks `action` by `ctx` against the state `s` at the op's causal past.
pub fn check(s: &TeamState, ctx: &OpContext, action: &Action) -> R {
    use Action as A;
    match action {
        A::TeamCreate { .. } => Err(RuleError::SecondGenesis),
        A::TeamUpdate { name, .. } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "team.update", Role::Admin)?;
            check_name("team name", name)
        }
        A::InviteCreate {
            id, kind, expires, ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "invite.create", Role::Admin)?;
            fresh(ctx, "invite", id, s.invites.contains_key(id))?;
            if *expires <= ctx.hlc {
                return Err(RuleError::Invalid {
                    what: "expiry",
                    value: expires.to_string(),
                    why: "it is in the past".into(),
                });
            }
            match kind {
                InviteKind::Member { role } if *role == Role::Owner => Err(RuleError::Owner),
                InviteKind::Member { .. } => Ok(()),
                InviteKind::Node { name, .. } => {
                    check_name("node name", name)?;
                    if s.nodes
                        .values()
                        .any(|n| n.removed.is_none() && &n.name == name)
                    {
                        return Err(RuleError::NameTaken {
                            what: "node",
                            name: name.clone(),
                        });
                    }
                    Ok(())
                }
            }
        }
        A::InviteRevoke { id } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "invite.revoke", Role::Admin)?;
            found(s.invites.get(id), "invite", id).map(|_| ())
        }
        A::MemberJoin {
            invite,
            member,
            node,
            proof,
        } => {
            if ctx.author != member.key {
                return Err(RuleError::Invalid {
                    what: "join",
                    value: member.key.short(),
                    why: "a member join is signed by the joining profile".into(),
                });
            }
            check_new_member(s, member)?;
            match node {
                Some(n) => {
                    if ctx.origin != n.key {
                        return Err(RuleError::UnknownOrigin {
                            origin: ctx.origin.short(),
                        });
                    }
                    check_new_node(s, n)?;
                }
                None => need_origin(s, ctx)?,
            }
            match check_invite(s, ctx, invite, &member.key, proof)? {
                InviteKind::Member { .. } => Ok(()),
                InviteKind::Node { .. } => Err(RuleError::Invite {
                    id: invite.clone(),
                    why: "it is a node ticket: use `shoal node join`".into(),
                }),
            }
        }
        A::NodeJoin {
            invite,
            node,
            proof,
        } => {
            if ctx.author != node.key || ctx.origin != node.key {
                return Err(RuleError::Invalid {
                    what: "join",
                    value: node.key.short(),
                    why: "a node join is signed by the joining node".into(),
                });
            }
            check_new_node(s, node)?;
            match check_invite(s, ctx, invite, &node.key, proof)? {
                InviteKind::Node { name, runtime } => {
                    if name != node.name || runtime != node.runtime {
                        return Err(RuleError::Invite {
                            id: invite.clone(),
                            why: format!("it is bound to node {name} with runtime {runtime}"),
                        });
                    }
                    Ok(())
                }
                InviteKind::Member { .. } => Err(RuleError::Invite {
                    id: invite.clone(),
                    why: "it is a member ticket: use `shoal team join`".into(),
                }),
            }
        }
        A::MemberRole { member, role } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "member.role", Role::Admin)?;
            let m = found(s.member(&member.to_hex()), "member", &member.to_hex())?;
            if m.role == Role::Owner || *role == Role::Owner {
                return Err(RuleError::Owner);
            }
            Ok(())
        }
        A::MemberRemove { member } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "member.remove", Role::Admin)?;
            let m = found(s.member(&member.to_hex()), "member", &member.to_hex())?;
            if m.role == Role::Owner {
                return Err(RuleError::Owner);
            }
            Ok(())
        }
        A::NodeRemove { node } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "node.remove", Role::Admin)?;
            let key = node.to_hex();
            let n = found(s.node(&key), "node", &key)?;
            let count = s.deployments.values().filter(|d| d.node == key).count();
            if count > 0 {
                return Err(RuleError::NodeHasDeployments {
                    node: n.name.clone(),
                    count,
                });
            }
            Ok(())
        }
        A::NodeUpdate { addresses, .. } => {
            need_self_node(s, ctx)?;
            if addresses.len() > 32 {
                return Err(RuleError::Invalid {
                    what: "addresses",
                    value: addresses.len().to_string(),
                    why: "at most 32".into(),
                });
            }
            Ok(())
        }
        A::RegistryAdd {
            id,
            name,
            kind,
            url,
            namespace,
            user,
            password,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "registry.add", Role::Admin)?;
            fresh(ctx, "registry", id, s.registries.contains_key(id))?;
            check_name("registry name", name)?;
            if s.registries.values().any(|r| &r.name == name) {
                return Err(RuleError::NameTaken {
                    what: "registry",
                    name: name.clone(),
                });
            }
            let need = |field: &'static str, ok: bool| {
                if ok {
                    Ok(())
                } else {
                    Err(RuleError::Invalid {
                        what: "registry",
                        value: name.clone(),
                        why: format!("a {} registry needs --{field}", kind.as_str()),
                    })
                }
            };
            match kind {
                RegistryKind::V2 => need("url", url.is_some())?,
                RegistryKind::Github | RegistryKind::Gitlab => {
                    need("namespace", namespace.is_some())?
                }
                RegistryKind::Hub | RegistryKind::Unchecked => {}
            }
            if password.is_some() && user.is_none() {
                return Err(RuleError::Invalid {
                    what: "registry",
                    value: name.clone(),
                    why: "a password needs a --user".into(),
                });
            }
            // Sealed to the team secrets key, or to each node of the team
            // (`nodes`: one sealed copy per node in `data`).
            if let Some(p) = password
                && !(p.recipient.starts_with("team:") || p.recipient == "nodes")
            {
                return Err(RuleError::SecretRecipient {
                    key: "password".into(),
                    recipient: p.recipient.clone(),
                });
            }
            Ok(())
        }
        A::RegistryUpdate {
            id,
            url,
            namespace,
            user,
            password,
            clear_credentials,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "registry.update", Role::Admin)?;
            let r = found(s.registries.get(id), "registry", id)?;
            let invalid = |why: &str| RuleError::Invalid {
                what: "registry update",
                value: r.name.clone(),
                why: why.into(),
            };
            if password.is_some() && user.is_none() {
                return Err(invalid("a password needs a --user"));
            }
            if url.is_none() && namespace.is_none() && user.is_none() && !clear_credentials {
                return Err(invalid(
                    "nothing to change: give --url, --namespace, --user with --password-stdin, or --no-credentials",
                ));
            }
            if *clear_credentials && user.is_some() {
                return Err(invalid(
                    "either new credentials or --no-credentials, not both",
                ));
            }
            if password.is_some() && user.is_none() {
                return Err(invalid("a password needs a --user"));
            }
            if let Some(p) = password
                && !p.recipient.starts_with("team:")
            {
                return Err(RuleError::SecretRecipient {
                    key: "password".into(),
                    recipient: p.recipient.clone(),
                });
            }
            Ok(())
        }
        A::RegistryRemove { id } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "registry.remove", Role::Admin)?;
            let r = found(s.registries.get(id), "registry", id)?;
            if id == HUB_REGISTRY_ID {
                return Err(RuleError::HubRegistry);
            }
            let count = s
                .versions
                .values()
                .flat_map(|v| v.images.iter())
                .filter(|i| {
                    &i.image.registry == id
                        || i.config.image.as_ref().is_some_and(|x| &x.registry == id)
                        || i.config
                            .init_containers
                            .iter()
                            .any(|c| &c.image.registry == id)
                })
                .count();
            if count > 0 {
                return Err(RuleError::RegistryInUse {
                    name: r.name.clone(),
                    count,
                });
            }
            Ok(())
        }
        A::ProductCreate {
            id,
            name,
            kind,
            version,
            ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "product.create", Role::User)?;
            fresh(ctx, "product", id, s.products.contains_key(id))?;
            check_name("product name", name)?;
            if s.products.values().any(|p| &p.name == name) {
                return Err(RuleError::NameTaken {
                    what: "product",
                    name: name.clone(),
                });
            }
            match (kind, version) {
                (ProductKind::Simple, Some(v)) => {
                    if v == id {
                        return Err(RuleError::BadId {
                            what: "version",
                            id: v.clone(),
                        });
                    }
                    fresh(ctx, "version", v, s.versions.contains_key(v))
                }
                (ProductKind::Complex, None) => Ok(()),
                (ProductKind::Simple, None) => Err(RuleError::SimpleProduct {
                    why: "it is created with its rolling version",
                }),
                (ProductKind::Complex, Some(_)) => Err(RuleError::Invalid {
                    what: "product",
                    value: name.clone(),
                    why: "a complex product starts with no version".into(),
                }),
            }
        }
        A::ProductRemove { id } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "product.remove", Role::User)?;
            found(s.products.get(id), "product", id)?;
            if let Some(d) = s
                .deployments
                .values()
                .find(|d| &d.product == id && d.status == DeploymentStatus::InProgress)
            {
                return Err(deployment_state_err(
                    d,
                    "removing its product",
                    "anything but in-progress",
                ));
            }
            Ok(())
        }
        A::VersionCreate {
            id, product, name, ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "version.create", Role::User)?;
            let p = found(s.products.get(product), "product", product)?;
            if p.kind == ProductKind::Simple {
                return Err(RuleError::SimpleProduct {
                    why: "versions cannot be added",
                });
            }
            fresh(ctx, "version", id, s.versions.contains_key(id))?;
            check_name("version name", name)?;
            if s.versions
                .values()
                .any(|v| &v.product == product && &v.name == name)
            {
                return Err(RuleError::NameTaken {
                    what: "version",
                    name: name.clone(),
                });
            }
            Ok(())
        }
        A::VersionIncrease {
            from,
            id,
            name,
            copies,
            ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "version.increase", Role::User)?;
            let v = found(s.versions.get(from), "version", from)?;
            if v.kind != VersionKind::Incremental {
                return Err(RuleError::NotIncremental { what: "increased" });
            }
            if let Some(c) = &v.child {
                return Err(RuleError::HasChild {
                    version: v.name.clone(),
                    child: s
                        .versions
                        .get(c)
                        .map(|c| c.name.clone())
                        .unwrap_or(c.clone()),
                });
            }
            fresh(ctx, "version", id, s.versions.contains_key(id))?;
            check_name("version name", name)?;
            if s.versions
                .values()
                .any(|x| x.product == v.product && &x.name == name)
            {
                return Err(RuleError::NameTaken {
                    what: "version",
                    name: name.clone(),
                });
            }
            let expected = if v.auto_copy {
                copy_sources(s, v).len()
            } else {
                0
            };
            if copies.len() != expected {
                return Err(RuleError::Invalid {
                    what: "copies",
                    value: copies.len().to_string(),
                    why: format!("{expected} deployment(s) are copied"),
                });
            }
            for (i, c) in copies.iter().enumerate() {
                fresh(
                    ctx,
                    "deployment",
                    c,
                    s.deployments.contains_key(c) || copies[..i].contains(c) || c == id,
                )?;
            }
            Ok(())
        }
        A::VersionDefault { version } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "version.default", Role::User)?;
            found(s.versions.get(version), "version", version).map(|_| ())
        }
        A::VersionRemove { id } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "version.remove", Role::User)?;
            let v = found(s.versions.get(id), "version", id)?;
            let p = found(s.products.get(&v.product), "product", &v.product)?;
            if p.kind == ProductKind::Simple {
                return Err(RuleError::SimpleProduct {
                    why: "its version is removed with the product",
                });
            }
            if let Some(c) = &v.child {
                return Err(RuleError::VersionNotDeletable {
                    version: v.name.clone(),
                    why: format!(
                        "it has a child version {}",
                        s.versions.get(c).map(|c| c.name.as_str()).unwrap_or(c)
                    ),
                });
            }
            if let Some(d) = s
                .deployments
                .values()
                .find(|d| &d.version == id && !deployment_mutable(s, d))
            {
                return Err(RuleError::VersionNotDeletable {
                    version: v.name.clone(),
                    why: format!("its deployment {} is {} and cannot change", d.id, d.status),
                });
            }
            Ok(())
        }
        A::ImageAdd { version, image } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "image.add", Role::User)?;
            let v = mutable_version(s, version)?;
            check_container_name(&image.name)?;
            if v.images.iter().any(|i| i.name == image.name) {
                return Err(RuleError::NameTaken {
                    what: "container",
                    name: image.name.clone(),
                });
            }
            found(
                s.registries.get(&image.image.registry),
                "registry",
                &image.image.registry,
            )?;
            check_image_name(&image.image)
        }
        A::ImageRemove { version, name } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "image.remove", Role::User)?;
            let v = mutable_version(s, version)?;
            found(v.images.iter().find(|i| &i.name == name), "container", name).map(|_| ())
        }
        A::ImageConfig {
            version,
            name,
            image,
            config,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "image.config", Role::User)?;
            let v = mutable_version(s, version)?;
            found(v.images.iter().find(|i| &i.name == name), "container", name)?;
            found(
                s.registries.get(&image.registry),
                "registry",
                &image.registry,
            )?;
            check_image_name(image)?;
            if let Some(i) = &config.image {
                found(s.registries.get(&i.registry), "registry", &i.registry)?;
            }
            Ok(())
        }
        A::ImageOrder { version, names } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "image.order", Role::User)?;
            let v = mutable_version(s, version)?;
            let mut a: Vec<&String> = v.images.iter().map(|i| &i.name).collect();
            let mut b: Vec<&String> = names.iter().collect();
            a.sort();
            b.sort();
            if a != b {
                return Err(RuleError::Invalid {
                    what: "image order",
                    value: names.join(","),
                    why: "name every container of the version exactly once".into(),
                });
            }
            Ok(())
        }
        A::DeploymentCreate {
            id,
            version,
            node,
            prefix,
            secrets,
            instances,
            protected,
            force,
            ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.create", Role::User)?;
            fresh(ctx, "deployment", id, s.deployments.contains_key(id))?;
            let v = found(s.versions.get(version), "version", version)?;
            if v.images.is_empty() {
                return Err(RuleError::NoImages {
                    version: v.name.clone(),
                });
            }
            let node = node.to_hex();
            target_node(s, &node)?;
            check_prefix(prefix)?;
            check_slot(s, v, &node, prefix, None)?;
            check_sealed_to(&node, secrets)?;
            check_instances(v, instances)?;
            check_protected(
                s, &v.product, &v.id, &node, prefix, *protected, *force, None,
            )
        }
        A::DeploymentUpdate { id, edit } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.update", Role::User)?;
            let d = found(s.deployments.get(id), "deployment", id)?;
            if !deployment_mutable(s, d) {
                return Err(deployment_state_err(
                    d,
                    "editing",
                    "preparing or failed (or successful, for a rolling version)",
                ));
            }
            let v = found(s.versions.get(&d.version), "version", &d.version)?;
            if let Some(p) = &edit.prefix {
                check_prefix(p)?;
                check_slot(s, v, &d.node, p, Some(id))?;
            }
            if let Some(sec) = &edit.secrets {
                check_sealed_to(&d.node, sec)?;
            }
            if let Some(inst) = &edit.instances {
                check_instances(v, inst)?;
            }
            Ok(())
        }
        A::DeploymentStart { id, force } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.start", Role::User)?;
            let d = found(s.deployments.get(id), "deployment", id)?;
            if !deployment_deployable(s, d) {
                return Err(deployment_state_err(
                    d,
                    "starting",
                    "preparing, failed or obsolete (or successful, for a rolling version)",
                ));
            }
            check_start(s, d, *force)
        }
        A::DeploymentRollback { id, force } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.rollback", Role::User)?;
            let d = found(s.deployments.get(id), "deployment", id)?;
            if d.status != DeploymentStatus::Obsolete {
                return Err(deployment_state_err(d, "rolling back to it", "obsolete"));
            }
            let v = found(s.versions.get(&d.version), "version", &d.version)?;
            if v.kind != VersionKind::Incremental {
                return Err(RuleError::NotIncremental {
                    what: "rolled back to",
                });
            }
            check_start(s, d, *force)
        }
        A::DeploymentDelete { id } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.delete", Role::User)?;
            let d = found(s.deployments.get(id), "deployment", id)?;
            if d.status == DeploymentStatus::InProgress {
                return Err(deployment_state_err(
                    d,
                    "deleting",
                    "anything but in-progress",
                ));
            }
            Ok(())
        }
        A::DeploymentCopy {
            from,
            id,
            node,
            prefix,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.copy", Role::User)?;
            let d = found(s.deployments.get(from), "deployment", from)?;
            if d.status == DeploymentStatus::InProgress {
                return Err(deployment_state_err(
                    d,
                    "copying",
                    "anything but in-progress",
                ));
            }
            fresh(ctx, "deployment", id, s.deployments.contains_key(id))?;
            let v = found(s.versions.get(&d.version), "version", &d.version)?;
            let node = node.to_hex();
            target_node(s, &node)?;
            check_prefix(prefix)?;
            check_slot(s, v, &node, prefix, None)
        }
        A::DeploymentFinish {
            id,
            attempt,
            outcome,
            events,
            frozen,
            ..
        } => {
            let d = found(s.deployments.get(id), "deployment", id)?;
            if ctx.author.to_hex() != d.node {
                return Err(RuleError::NotTheNode {
                    expected: node_name(s, &d.node),
                    what: "report on this deployment",
                });
            }
            need_self_node(s, ctx)?;
            if d.status != DeploymentStatus::InProgress {
                return Err(deployment_state_err(d, "finishing", "in-progress"));
            }
            if *attempt != d.tries {
                return Err(RuleError::WrongTry {
                    expected: d.tries,
                    got: *attempt,
                });
            }
            if events.len() > MAX_EVENTS || events.iter().any(|e| e.len() > MAX_EVENT_LEN) {
                return Err(RuleError::Invalid {
                    what: "events",
                    value: events.len().to_string(),
                    why: format!("at most {MAX_EVENTS} events of {MAX_EVENT_LEN} bytes"),
                });
            }
            match (outcome, frozen) {
                (Outcome::Successful, Some(_)) | (Outcome::Failed { .. }, None) => Ok(()),
                _ => Err(RuleError::Frozen),
            }
        }
        A::ContainerCommand {
            id,
            node,
            container,
            ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "container.command", Role::User)?;
            fresh(ctx, "command", id, s.commands.contains_key(id))?;
            found(
                view::effective_node(s, &node.to_hex()),
                "node",
                &node.to_hex(),
            )?;
            check_name("container", container)
        }
        A::KeySeal { keys } => {
            need_origin(s, ctx)?;
            let is_node =
                ctx.author == ctx.origin && view::effective_node(s, &ctx.author.to_hex()).is_some();
            if !is_node {
                need_role(s, ctx, "key.seal", Role::Admin)?;
            }
            // Copies of keys the team has, or a first key (epoch 1): a new
            // epoch comes only with a rotation, which seals every password.
            let current = view::team_key(s).map_or(0, |(e, _)| e);
            for k in keys {
                check_sealed_key(s, k, k.epoch)?;
                if k.epoch == 0 || (k.epoch > current && k.epoch != 1) {
                    return Err(RuleError::Invalid {
                        what: "key epoch",
                        value: k.epoch.to_string(),
                        why: format!(
                            "the team key is at epoch {current}: a copy is of an epoch the team has, or the first key (1); use `shoal team rotate-key` for a new one"
                        ),
                    });
                }
            }
            Ok(())
        }
        A::KeyRotate {
            epoch,
            keys,
            registries,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "key.rotate", Role::Admin)?;
            let current = view::team_key(s).map_or(0, |(e, _)| e);
            let invalid = |what: &'static str, value: String, why: String| RuleError::Invalid {
                what,
                value,
                why,
            };
            let Some(next) = current.checked_add(1) else {
                return Err(invalid(
                    "key epoch",
                    epoch.to_string(),
                    "the team key is at the last epoch there is".into(),
                ));
            };
            if *epoch != next {
                return Err(invalid(
                    "key epoch",
                    epoch.to_string(),
                    format!("the team key is at epoch {current}, so a new one is {next}"),
                ));
            }
            let mut public = None;
            for k in keys {
                check_sealed_key(s, k, *epoch)?;
                let p = k.public();
                if public.is_some_and(|q| q != p) {
                    return Err(invalid(
                        "key recipient",
                        k.recipient.clone(),
                        "every copy of a new team key is of the same key".into(),
                    ));
                }
                public = Some(p);
            }
            let Some(Some(public)) = public else {
                return Err(invalid(
                    "team key",
                    epoch.to_string(),
                    "a new team key is sealed to at least one node".into(),
                ));
            };
            for (r, _) in view::key_recipients(s) {
                if !keys.iter().any(|k| k.recipient == r) {
                    return Err(invalid(
                        "team key",
                        epoch.to_string(),
                        format!(
                            "the new key must be sealed to every node and admin; {r} is left out"
                        ),
                    ));
                }
            }
            let want = crate::model::team_recipient(*epoch, public);
            for (id, p) in registries {
                let r = found(s.registries.get(id), "registry", id)?;
                if p.recipient != want {
                    return Err(invalid(
                        "registry password",
                        r.name.clone(),
                        format!("sealed to {}, not to the new key {want}", p.recipient),
                    ));
                }
            }
            for r in s.registries.values() {
                let team_sealed = r
                    .password
                    .as_ref()
                    .is_some_and(|p| p.recipient.starts_with("team:"));
                if team_sealed && !registries.contains_key(&r.id) {
                    return Err(invalid(
                        "team key",
                        epoch.to_string(),
                        format!(
                            "the password of registry {} must be sealed again to the new key",
                            r.name
                        ),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// A copy of the team key for a node or an admin, of `epoch`, whose text
/// names that epoch and a public key.
fn check_sealed_key(s: &TeamState, k: &crate::model::SealedKey, epoch: u32) -> R {
    let bad = |why: &str| RuleError::Invalid {
        what: "key recipient",
        value: k.recipient.clone(),
        why: why.into(),
    };
    if !view::key_recipient_eligible(s, &k.recipient) {
        return Err(bad(
            "the team secrets key is sealed only to nodes and admins",
        ));
    }
    match k.named() {
        Some((e, _)) if e == k.epoch && e == epoch => Ok(()),
        Some(_) => Err(bad("the sealed key names another epoch")),
        None => Err(bad(
            "the sealed key is not shoal-team-key-v1:<epoch>:<public key>:<sealed>",
        )),
    }
}

fn check_image_name(r: &crate::model::ImageRef) -> R {
    if r.name.is_empty() || r.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RuleError::Invalid {
            what: "image",
            value: r.name.clone(),
            why: "an image name has no spaces".into(),
        });
    }
    if r.tag.is_empty() || r.tag.len() > 128 || r.tag.chars().any(|c| c.is_whitespace() || c == '/')
    {
        return Err(RuleError::Invalid {
            what: "tag",
            value: r.tag.clone(),
            why: "a tag is 1-128 characters without spaces or slashes".into(),
        });
    }
    Ok(())
}

fn mutable_version<'a>(s: &'a TeamState, id: &str) -> Result<&'a Version, RuleError> {
    let v = found(s.versions.get(id), "version", id)?;
    if let Some(why) = version_frozen(s, v) {
        return Err(RuleError::VersionFrozen {
            version: v.name.clone(),
            why,
        });
    }
    Ok(v)
}
