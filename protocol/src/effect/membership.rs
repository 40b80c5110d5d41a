//! Effects of the team and its people and machines: the genesis,
//! `team.update`, invites, members, nodes and the two joins.

use crate::action::{Action, NewMember, NewNode};
use crate::context::OpContext;
use crate::model::*;
use crate::view;

use super::common::{Write, del, put};

fn member(m: &NewMember, role: Role, ctx: &OpContext, invite: Option<&str>) -> Member {
    Member {
        key: m.key.to_hex(),
        name: m.name.clone(),
        email: m.email.clone(),
        role,
        enc_key: m.enc_key.clone(),
        joined: ctx.hlc,
        invite: invite.map(str::to_string),
        removed: None,
    }
}

fn node(n: &NewNode, ctx: &OpContext, invite: Option<&str>, sponsor: Option<String>) -> Node {
    Node {
        key: n.key.to_hex(),
        name: n.name.clone(),
        runtime: n.runtime,
        enc_key: n.enc_key.clone(),
        addresses: n.addresses.clone(),
        agent_version: n.agent_version.clone(),
        protocol_version: n.protocol_version,
        joined: ctx.hlc,
        invite: invite.map(str::to_string),
        sponsor,
        removed: None,
    }
}

/// The entities of the genesis op.
pub fn genesis(ctx: &OpContext, action: &Action) -> Vec<Write> {
    let Action::TeamCreate {
        name,
        description,
        owner,
        node: first,
    } = action
    else {
        return Vec::new();
    };
    vec![
        put(
            Entity::Team(TeamInfo {
                name: name.clone(),
                description: description.clone(),
                schema: SCHEMA_VERSION,
                created: ctx.hlc,
            }),
            TEAM_INFO_ID,
        ),
        put(
            Entity::Member(member(owner, Role::Owner, ctx, None)),
            &owner.key.to_hex(),
        ),
        put(
            Entity::Node(node(first, ctx, None, Some(owner.key.to_hex()))),
            &first.key.to_hex(),
        ),
        put(
            Entity::Registry(Registry {
                id: HUB_REGISTRY_ID.into(),
                name: "hub".into(),
                kind: RegistryKind::Hub,
                url: None,
                namespace: None,
                user: None,
                password: None,
                created: ctx.hlc,
            }),
            HUB_REGISTRY_ID,
        ),
    ]
}

/// The writes of a membership action (see [`super::effect`]).
pub(super) fn effect(s: &TeamState, ctx: &OpContext, action: &Action) -> Vec<Write> {
    use Action as A;
    let mut out = Vec::new();
    match action {
        A::TeamCreate { .. } => return genesis(ctx, action),
        A::TeamUpdate { name, description } => {
            if let Some(info) = s.info() {
                out.push(put(
                    Entity::Team(TeamInfo {
                        name: name.clone(),
                        description: description.clone(),
                        ..info.clone()
                    }),
                    TEAM_INFO_ID,
                ));
            }
        }
        A::InviteCreate {
            id,
            kind,
            invite_key,
            expires,
        } => out.push(put(
            Entity::Invite(Invite {
                id: id.clone(),
                kind: kind.clone(),
                invite_key: invite_key.to_hex(),
                expires: *expires,
                created: ctx.hlc,
                created_by: ctx.author.to_hex(),
                revoked: false,
            }),
            id,
        )),
        A::InviteRevoke { id } => {
            if let Some(i) = s.invites.get(id) {
                out.push(put(
                    Entity::Invite(Invite {
                        revoked: true,
                        ..i.clone()
                    }),
                    id,
                ));
            }
        }
        A::MemberJoin {
            invite,
            member: m,
            node: n,
            ..
        } => {
            let role = match s.invites.get(invite).map(|i| &i.kind) {
                Some(InviteKind::Member { role }) => *role,
                _ => Role::User,
            };
            out.push(put(
                Entity::Member(member(m, role, ctx, Some(invite))),
                &m.key.to_hex(),
            ));
            if let Some(n) = n {
                out.push(put(
                    Entity::Node(node(n, ctx, None, Some(m.key.to_hex()))),
                    &n.key.to_hex(),
                ));
            }
        }
        A::NodeJoin {
            invite, node: n, ..
        } => {
            out.push(put(
                Entity::Node(node(n, ctx, Some(invite), None)),
                &n.key.to_hex(),
            ));
        }
        A::MemberRole { member: key, role } => {
            if let Some(m) = s.members.get(&key.to_hex()) {
                out.push(put(
                    Entity::Member(Member {
                        role: *role,
                        ..m.clone()
                    }),
                    &m.key,
                ));
            }
        }
        A::MemberRemove { member: key } => {
            let key = key.to_hex();
            if let Some(m) = s.members.get(&key) {
                out.push(put(
                    Entity::Member(Member {
                        removed: Some(ctx.hlc),
                        ..m.clone()
                    }),
                    &key,
                ));
            }
            for id in view::key_entries_of(s, &format!("member:{key}")) {
                out.push(del(Collection::Keys, &id));
            }
        }
        A::NodeRemove { node: key } => {
            let key = key.to_hex();
            if let Some(n) = s.nodes.get(&key) {
                out.push(put(
                    Entity::Node(Node {
                        removed: Some(ctx.hlc),
                        ..n.clone()
                    }),
                    &key,
                ));
            }
            for id in view::key_entries_of(s, &format!("node:{key}")) {
                out.push(del(Collection::Keys, &id));
            }
        }
        A::NodeUpdate {
            addresses,
            agent_version,
            protocol_version,
        } => {
            let key = ctx.author.to_hex();
            if let Some(n) = s.nodes.get(&key) {
                out.push(put(
                    Entity::Node(Node {
                        addresses: addresses.clone(),
                        agent_version: agent_version.clone(),
                        protocol_version: *protocol_version,
                        ..n.clone()
                    }),
                    &key,
                ));
            }
        }
        // Acts on every replica's quarantine, not on the document: an
        // empty change.
        A::QuarantinePurge { .. } => {}
        // Not of this family: the dispatcher never sends one, and the rules
        // refuse it anyway.
        _ => {}
    }
    out
}
