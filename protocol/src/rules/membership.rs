//! Rules of the team and its people and machines: `team.*`, invites,
//! members, nodes and the two joins (and the tickets they redeem).

use crate::action::{Action, NewMember, NewNode};
use crate::context::OpContext;
use crate::hlc::Hlc;
use crate::keys::{PublicKey, Signature, TeamId};
use crate::model::{InviteKind, Role, TeamState};
use crate::table::By;

use super::common::{
    R, RuleError, check_name, found, fresh, need_origin, need_role, need_self_node, not_in_family,
};

/// The message an invite key signs to let `newcomer` redeem `invite`.
pub fn join_proof_message(team: &TeamId, invite: &str, newcomer: &PublicKey) -> Vec<u8> {
    let mut m = b"shoal/join-proof/v1".to_vec();
    m.extend_from_slice(&team.0);
    m.extend_from_slice(&(invite.len() as u32).to_be_bytes());
    m.extend_from_slice(invite.as_bytes());
    m.extend_from_slice(newcomer.as_bytes());
    m
}

/// Checks a membership action (see [`super::check`]).
pub(super) fn check(s: &TeamState, ctx: &OpContext, action: &Action) -> R {
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
                    if s.nodes.any_by(By::Name, name) {
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
            let count = s.deployments.ids_by(By::Node, &key).count();
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
        A::QuarantinePurge { ops } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "quarantine.purge", Role::Admin)?;
            if ops.is_empty() || ops.len() > MAX_PURGE {
                return Err(RuleError::Invalid {
                    what: "quarantine purge",
                    value: ops.len().to_string(),
                    why: format!("names 1 to {MAX_PURGE} ops"),
                });
            }
            Ok(())
        }
        _ => Err(not_in_family(action, "membership")),
    }
}

/// The most ops one `quarantine.purge` names (the quarantine holds fewer).
pub const MAX_PURGE: usize = 4096;

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
    if s.nodes.any_by(By::Name, &n.name) {
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
    proof: &Signature,
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
    proof: &Signature,
    now: Hlc,
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
    // An invite dies with its creator's right to make it: a creator removed
    // or demoted below admin takes the tickets they handed out with them.
    if crate::view::effective_role(s, &inv.created_by).is_none_or(|r| r < Role::Admin) {
        return Err(bad(
            "its creator is no longer an admin; ask for a new ticket",
        ));
    }
    let used = s.members.any_by(By::Invite, id) || s.nodes.any_by(By::Invite, id);
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
