//! What an action does to the state: the exact post-values of every entity it
//! touches. `prepare` writes these into the document; every replica checks
//! that an op's change wrote exactly these and nothing else.

use std::collections::BTreeMap;

use crate::action::{Action, NewMember, NewNode, Outcome};
use crate::context::OpContext;
use crate::model::*;
use crate::view;

pub use crate::context::copy_sources;

/// One entity's value after the op (`None`: deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub collection: Collection,
    pub id: String,
    pub value: Option<Entity>,
}

fn put(value: Entity, id: &str) -> Write {
    Write {
        collection: value.collection(),
        id: id.to_string(),
        value: Some(value),
    }
}

fn del(collection: Collection, id: &str) -> Write {
    Write {
        collection,
        id: id.to_string(),
        value: None,
    }
}

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

fn new_deployment(ctx: &OpContext, id: &str, base: &Deployment) -> Deployment {
    Deployment {
        id: id.to_string(),
        status: DeploymentStatus::Preparing,
        tries: 0,
        created: ctx.hlc,
        created_by: ctx.author.to_hex(),
        reason: None,
        finished_try: 0,
        containers: BTreeMap::new(),
        events: Vec::new(),
        frozen: None,
        ..base.clone()
    }
}

/// The writes of `action`, assuming [`crate::rules::check`] accepted it on `s`.
pub fn effect(s: &TeamState, ctx: &OpContext, action: &Action) -> Vec<Write> {
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
        A::RegistryAdd {
            id,
            name,
            kind,
            url,
            namespace,
            user,
            password,
        } => out.push(put(
            Entity::Registry(Registry {
                id: id.clone(),
                name: name.clone(),
                kind: *kind,
                url: url.clone(),
                namespace: namespace.clone(),
                user: user.clone(),
                password: password.clone(),
                created: ctx.hlc,
            }),
            id,
        )),
        A::RegistryRemove { id } => out.push(del(Collection::Registries, id)),
        A::RegistryUpdate {
            id,
            url,
            namespace,
            user,
            password,
            clear_credentials,
        } => {
            if let Some(r) = s.registries.get(id) {
                let mut r = r.clone();
                if let Some(u) = url {
                    r.url = Some(u.clone());
                }
                if let Some(n) = namespace {
                    r.namespace = Some(n.clone());
                }
                if *clear_credentials {
                    r.user = None;
                    r.password = None;
                }
                if let Some(u) = user {
                    r.user = Some(u.clone());
                    r.password = password.clone();
                }
                out.push(put(Entity::Registry(r), id));
            }
        }
        A::ProductCreate {
            id,
            name,
            kind,
            description,
            version,
        } => {
            out.push(put(
                Entity::Product(Product {
                    id: id.clone(),
                    name: name.clone(),
                    kind: *kind,
                    description: description.clone(),
                    default_version: version.clone(),
                    created: ctx.hlc,
                }),
                id,
            ));
            if let Some(v) = version {
                out.push(put(
                    Entity::Version(Version {
                        id: v.clone(),
                        product: id.clone(),
                        name: "rolling".into(),
                        kind: VersionKind::Rolling,
                        changelog: String::new(),
                        auto_copy: false,
                        parent: None,
                        child: None,
                        images: Vec::new(),
                        created: ctx.hlc,
                    }),
                    v,
                ));
            }
        }
        A::ProductRemove { id } => {
            out.push(del(Collection::Products, id));
            for v in s.versions.values().filter(|v| &v.product == id) {
                out.push(del(Collection::Versions, &v.id));
            }
            for d in s.deployments.values().filter(|d| &d.product == id) {
                out.push(del(Collection::Deployments, &d.id));
            }
        }
        A::VersionCreate {
            id,
            product,
            name,
            kind,
            changelog,
            auto_copy,
        } => {
            out.push(put(
                Entity::Version(Version {
                    id: id.clone(),
                    product: product.clone(),
                    name: name.clone(),
                    kind: *kind,
                    changelog: changelog.clone(),
                    auto_copy: *auto_copy,
                    parent: None,
                    child: None,
                    images: Vec::new(),
                    created: ctx.hlc,
                }),
                id,
            ));
            if let Some(p) = s.products.get(product)
                && p.default_version.is_none()
            {
                out.push(put(
                    Entity::Product(Product {
                        default_version: Some(id.clone()),
                        ..p.clone()
                    }),
                    product,
                ));
            }
        }
        A::VersionIncrease {
            from,
            id,
            name,
            changelog,
            copies,
        } => {
            let Some(v) = s.versions.get(from) else {
                return out;
            };
            out.push(put(
                Entity::Version(Version {
                    child: Some(id.clone()),
                    ..v.clone()
                }),
                from,
            ));
            out.push(put(
                Entity::Version(Version {
                    id: id.clone(),
                    name: name.clone(),
                    changelog: changelog.clone(),
                    parent: Some(from.clone()),
                    child: None,
                    created: ctx.hlc,
                    ..v.clone()
                }),
                id,
            ));
            for (src, new_id) in copy_sources(s, v).into_iter().zip(copies) {
                let mut d = new_deployment(ctx, new_id, src);
                d.version = id.clone();
                out.push(put(Entity::Deployment(Box::new(d)), new_id));
            }
        }
        A::VersionDefault { version } => {
            if let Some(v) = s.versions.get(version)
                && let Some(p) = s.products.get(&v.product)
            {
                out.push(put(
                    Entity::Product(Product {
                        default_version: Some(version.clone()),
                        ..p.clone()
                    }),
                    &p.id,
                ));
            }
        }
        A::VersionRemove { id } => {
            let Some(v) = s.versions.get(id) else {
                return out;
            };
            out.push(del(Collection::Versions, id));
            for d in s.deployments.values().filter(|d| &d.version == id) {
                out.push(del(Collection::Deployments, &d.id));
            }
            if let Some(parent) = v.parent.as_ref().and_then(|p| s.versions.get(p)) {
                out.push(put(
                    Entity::Version(Version {
                        child: None,
                        ..parent.clone()
                    }),
                    &parent.id,
                ));
            }
            if let Some(p) = s.products.get(&v.product)
                && p.default_version.as_deref() == Some(id)
            {
                let next = v.parent.clone().or_else(|| {
                    s.versions
                        .values()
                        .filter(|x| x.product == v.product && &x.id != id)
                        .max_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
                        .map(|x| x.id.clone())
                });
                out.push(put(
                    Entity::Product(Product {
                        default_version: next,
                        ..p.clone()
                    }),
                    &p.id,
                ));
            }
        }
        A::ImageAdd { version, image } => {
            if let Some(v) = s.versions.get(version) {
                let mut v = v.clone();
                v.images.push(image.clone());
                out.push(put(Entity::Version(v), version));
            }
        }
        A::ImageRemove { version, name } => {
            if let Some(v) = s.versions.get(version) {
                let mut v = v.clone();
                v.images.retain(|i| &i.name != name);
                out.push(put(Entity::Version(v), version));
            }
        }
        A::ImageConfig {
            version,
            name,
            image,
            config,
        } => {
            if let Some(v) = s.versions.get(version) {
                let mut v = v.clone();
                for i in v.images.iter_mut().filter(|i| &i.name == name) {
                    i.image = image.clone();
                    i.config = config.clone();
                }
                out.push(put(Entity::Version(v), version));
            }
        }
        A::ImageOrder { version, names } => {
            if let Some(v) = s.versions.get(version) {
                let mut v = v.clone();
                v.images
                    .sort_by_key(|i| names.iter().position(|n| n == &i.name));
                out.push(put(Entity::Version(v), version));
            }
        }
        A::DeploymentCreate {
            id,
            version,
            node,
            prefix,
            env,
            secrets,
            instances,
            protected,
            note,
            ..
        } => {
            let product = s
                .versions
                .get(version)
                .map(|v| v.product.clone())
                .unwrap_or_default();
            out.push(put(
                Entity::Deployment(Box::new(Deployment {
                    id: id.clone(),
                    product,
                    version: version.clone(),
                    node: node.to_hex(),
                    prefix: prefix.clone(),
                    note: note.clone(),
                    protected: *protected,
                    env: env.clone(),
                    secrets: secrets.clone(),
                    instances: instances.clone(),
                    status: DeploymentStatus::Preparing,
                    tries: 0,
                    created: ctx.hlc,
                    created_by: ctx.author.to_hex(),
                    reason: None,
                    finished_try: 0,
                    containers: BTreeMap::new(),
                    events: Vec::new(),
                    frozen: None,
                })),
                id,
            ));
        }
        A::DeploymentUpdate { id, edit } => {
            if let Some(d) = s.deployments.get(id) {
                let mut d = d.clone();
                if let Some(x) = &edit.note {
                    d.note = x.clone();
                }
                if let Some(x) = &edit.prefix {
                    d.prefix = x.clone();
                }
                if let Some(x) = edit.protected {
                    d.protected = x;
                }
                if let Some(x) = &edit.env {
                    d.env = x.clone();
                }
                if let Some(x) = &edit.secrets {
                    d.secrets = x.clone();
                }
                if let Some(x) = &edit.instances {
                    d.instances = x.clone();
                }
                out.push(put(Entity::Deployment(Box::new(d)), id));
            }
        }
        A::DeploymentStart { id, .. } | A::DeploymentRollback { id, .. } => {
            if let Some(d) = s.deployments.get(id) {
                out.push(put(
                    Entity::Deployment(Box::new(Deployment {
                        status: DeploymentStatus::InProgress,
                        tries: d.tries + 1,
                        reason: None,
                        ..d.clone()
                    })),
                    id,
                ));
            }
        }
        A::DeploymentDelete { id } => out.push(del(Collection::Deployments, id)),
        A::DeploymentCopy {
            from,
            id,
            node,
            prefix,
        } => {
            if let Some(src) = s.deployments.get(from) {
                let mut d = new_deployment(ctx, id, src);
                d.node = node.to_hex();
                d.prefix = prefix.clone();
                if d.node != src.node {
                    // Values sealed to another node are useless here.
                    d.secrets.clear();
                }
                out.push(put(Entity::Deployment(Box::new(d)), id));
            }
        }
        A::DeploymentFinish {
            id,
            attempt,
            outcome,
            containers,
            events,
            frozen,
        } => {
            let Some(d) = s.deployments.get(id) else {
                return out;
            };
            let mut done = Deployment {
                finished_try: *attempt,
                containers: containers.clone(),
                events: events.clone(),
                ..d.clone()
            };
            match outcome {
                Outcome::Failed { reason } => {
                    done.status = DeploymentStatus::Failed;
                    done.reason = Some(reason.clone());
                    out.push(put(Entity::Deployment(Box::new(done)), id));
                }
                Outcome::Successful => {
                    done.status = DeploymentStatus::Successful;
                    done.reason = None;
                    done.frozen = frozen.clone();
                    out.push(put(Entity::Deployment(Box::new(done)), id));
                    out.extend(supersede(s, d));
                }
            }
        }
        A::ContainerCommand {
            id,
            node,
            container,
            action,
        } => out.push(put(
            Entity::Command(ContainerCommand {
                id: id.clone(),
                node: node.to_hex(),
                container: container.clone(),
                action: *action,
                requested: ctx.hlc,
                requested_by: ctx.author.to_hex(),
            }),
            id,
        )),
        A::KeySeal { keys } => {
            for k in keys {
                out.push(put(Entity::Key(k.clone()), &k.entity_id()));
            }
        }
        A::KeyRotate {
            epoch,
            keys,
            registries,
        } => {
            // Entries of those who should no longer hold the key, and of
            // epochs before the previous one, go: every registry is sealed
            // to the new key now, and one made concurrently with this op
            // used at most the previous epoch.
            for (id, k) in &s.keys {
                if k.epoch.saturating_add(1) < *epoch
                    || !view::key_recipient_eligible(s, &k.recipient)
                {
                    out.push(del(Collection::Keys, id));
                }
            }
            for k in keys {
                out.push(put(Entity::Key(k.clone()), &k.entity_id()));
            }
            for (id, password) in registries {
                if let Some(r) = s.registries.get(id) {
                    out.push(put(
                        Entity::Registry(Registry {
                            password: Some(password.clone()),
                            ..r.clone()
                        }),
                        id,
                    ));
                }
            }
        }
    }
    out
}

/// On success of `d`: the other deployments of its slot become `obsolete`
/// (same version or ancestors) or `downgraded` (descendants).
fn supersede(s: &TeamState, d: &Deployment) -> Vec<Write> {
    let Some(v) = s.versions.get(&d.version) else {
        return Vec::new();
    };
    let (older, newer): (Vec<String>, Vec<String>) = match v.kind {
        VersionKind::Rolling => (Vec::new(), Vec::new()),
        VersionKind::Incremental => (
            view::ancestors(s, v).iter().map(|v| v.id.clone()).collect(),
            view::descendants(s, v)
                .iter()
                .map(|v| v.id.clone())
                .collect(),
        ),
    };
    let mut out = Vec::new();
    for e in s.deployments.values() {
        if e.id == d.id || e.node != d.node || e.prefix != d.prefix {
            continue;
        }
        if matches!(
            e.status,
            DeploymentStatus::Preparing | DeploymentStatus::InProgress
        ) {
            continue;
        }
        let status = if e.version == d.version || older.contains(&e.version) {
            DeploymentStatus::Obsolete
        } else if newer.contains(&e.version) {
            DeploymentStatus::Downgraded
        } else {
            continue;
        };
        if e.status != status {
            out.push(put(
                Entity::Deployment(Box::new(Deployment {
                    status,
                    ..e.clone()
                })),
                &e.id,
            ));
        }
    }
    out
}
