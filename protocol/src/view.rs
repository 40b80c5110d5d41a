//! Derived views that every replica computes identically from the typed
//! state: concurrency conflicts (§2), version lineage, name lookups.

use crate::hlc::Hlc;
use crate::model::{Deployment, DeploymentStatus, Node, Role, TeamState, Version, VersionKind};
use crate::table::{By, slot};

/// Whether `d` lost a concurrent race for its slot: another deployment of
/// the same version, node and prefix that counts for the rule (any status
/// for rolling versions, `preparing` for incremental ones) was created
/// earlier (by clock, then id).
pub fn deployment_in_conflict(state: &TeamState, d: &Deployment) -> bool {
    conflict_winner(state, d).is_some()
}

/// The deployment that won `d`'s slot when `d` is in conflict: the earliest
/// of the deployments it conflicts with.
pub fn conflict_winner<'a>(state: &'a TeamState, d: &Deployment) -> Option<&'a Deployment> {
    let v = state.versions.get(&d.version)?;
    let counts = |e: &Deployment| match v.kind {
        VersionKind::Rolling => true,
        VersionKind::Incremental => e.status == DeploymentStatus::Preparing,
    };
    if !counts(d) {
        return None;
    }
    state
        .deployments
        .find_by(By::Slot, &slot(&d.node, &d.prefix))
        .filter(|e| {
            e.id != d.id
                && e.version == d.version
                && counts(e)
                && (e.created, &e.id) < (d.created, &d.id)
        })
        .min_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
}

/// Whether the member or node `key` that redeemed `invite` at `joined` lost
/// a concurrent double use of it: the earliest `(joined, key)` wins.
pub fn join_in_conflict(state: &TeamState, invite: &str, key: &str, joined: Hlc) -> bool {
    let earlier = |k: &str, j: Hlc| k != key && (j, k) < (joined, key);
    state
        .members
        .find_by(By::Invite, invite)
        .any(|m| earlier(&m.key, m.joined))
        || state
            .nodes
            .find_by(By::Invite, invite)
            .any(|n| earlier(&n.key, n.joined))
}

/// The role of an active member whose join (if any) is not in conflict.
pub fn effective_role(state: &TeamState, key: &str) -> Option<Role> {
    let m = state.member(key)?;
    if let Some(inv) = &m.invite
        && join_in_conflict(state, inv, &m.key, m.joined)
    {
        return None;
    }
    Some(m.role)
}

/// An active node whose join (its own, or its sponsoring member's) is not in conflict.
pub fn effective_node<'a>(state: &'a TeamState, key: &str) -> Option<&'a Node> {
    let n = state.node(key)?;
    if let Some(inv) = &n.invite
        && join_in_conflict(state, inv, &n.key, n.joined)
    {
        return None;
    }
    if let Some(m) = n.sponsor.as_ref().and_then(|s| state.members.get(s))
        && let Some(inv) = &m.invite
        && join_in_conflict(state, inv, &m.key, m.joined)
    {
        return None;
    }
    Some(n)
}

/// Ancestors of a version, nearest first.
pub fn ancestors<'a>(state: &'a TeamState, v: &Version) -> Vec<&'a Version> {
    let mut out = Vec::new();
    let mut cur = v.parent.as_deref();
    while let Some(id) = cur {
        let Some(p) = state.versions.get(id) else {
            break;
        };
        if out.iter().any(|x: &&Version| x.id == p.id) {
            break;
        }
        out.push(p);
        cur = p.parent.as_deref();
    }
    out
}

/// Descendants of a version, nearest first.
pub fn descendants<'a>(state: &'a TeamState, v: &Version) -> Vec<&'a Version> {
    let mut out = Vec::new();
    let mut cur = v.child.as_deref();
    while let Some(id) = cur {
        let Some(c) = state.versions.get(id) else {
            break;
        };
        if out.iter().any(|x: &&Version| x.id == c.id) {
            break;
        }
        out.push(c);
        cur = c.child.as_deref();
    }
    out
}

/// Finds a node by name or key; among same-named nodes the earliest wins.
pub fn node_by_name<'a>(state: &'a TeamState, name_or_key: &str) -> Option<&'a Node> {
    if let Some(n) = state.node(name_or_key) {
        return Some(n);
    }
    state
        .nodes
        .find_by(By::Name, name_or_key)
        .min_by(|a, b| (a.joined, &a.key).cmp(&(b.joined, &b.key)))
}

/// Finds a member by name or key; among same-named members the earliest wins.
pub fn member_by_name<'a>(
    state: &'a TeamState,
    name_or_key: &str,
) -> Option<&'a crate::model::Member> {
    if let Some(m) = state.member(name_or_key) {
        return Some(m);
    }
    state
        .members
        .values()
        .filter(|m| m.removed.is_none() && m.name == name_or_key)
        .min_by(|a, b| (a.joined, &a.key).cmp(&(b.joined, &b.key)))
}

/// Finds a product by name or id (earliest wins among same names).
pub fn product_by_name<'a>(
    state: &'a TeamState,
    name_or_id: &str,
) -> Option<&'a crate::model::Product> {
    if let Some(p) = state.products.get(name_or_id) {
        return Some(p);
    }
    state
        .products
        .find_by(By::Name, name_or_id)
        .min_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
}

/// Finds a version of a product by name or id.
pub fn version_by_name<'a>(
    state: &'a TeamState,
    product: &str,
    name_or_id: &str,
) -> Option<&'a Version> {
    if let Some(v) = state
        .versions
        .get(name_or_id)
        .filter(|v| v.product == product)
    {
        return Some(v);
    }
    state
        .versions
        .find_by(By::Name, &slot(product, name_or_id))
        .min_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
}

/// Finds a registry by name or id.
pub fn registry_by_name<'a>(
    state: &'a TeamState,
    name_or_id: &str,
) -> Option<&'a crate::model::Registry> {
    if let Some(r) = state.registries.get(name_or_id) {
        return Some(r);
    }
    state
        .registries
        .find_by(By::Name, name_or_id)
        .min_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
}

/// The deployment `deploy rollback` redeploys: the newest `obsolete`
/// deployment of an earlier version than the one now successful on
/// (node, prefix), or of any incremental version if none is.
pub fn rollback_target<'a>(
    state: &'a TeamState,
    product: &str,
    node: &str,
    prefix: &str,
) -> Option<&'a Deployment> {
    let key = slot(node, prefix);
    let on_slot = |d: &&Deployment| d.product == product;
    let current = state
        .deployments
        .find_by(By::Slot, &key)
        .filter(on_slot)
        .filter(|d| d.status == DeploymentStatus::Successful)
        .max_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    let earlier: Vec<String> = match current.and_then(|c| state.versions.get(&c.version)) {
        Some(v) => ancestors(state, v).iter().map(|v| v.id.clone()).collect(),
        None => state.versions.keys().cloned().collect(),
    };
    state
        .deployments
        .find_by(By::Slot, &key)
        .filter(on_slot)
        .filter(|d| d.status == DeploymentStatus::Obsolete && earlier.contains(&d.version))
        .filter(|d| {
            state
                .versions
                .get(&d.version)
                .is_some_and(|v| v.kind == VersionKind::Incremental)
        })
        .max_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
}

/// Whether `recipient` (`node:<key>` or `member:<key>`) should hold the team
/// secrets key (§5): a live node, or a member who is an admin or the owner.
pub fn key_recipient_eligible(state: &TeamState, recipient: &str) -> bool {
    match recipient.split_once(':') {
        Some(("node", key)) => effective_node(state, key).is_some(),
        Some(("member", key)) => effective_role(state, key).is_some_and(|r| r >= Role::Admin),
        _ => false,
    }
}

/// Everyone who should hold the team secrets key and can (has an
/// encryption key): (recipient, encryption key), nodes first.
pub fn key_recipients(state: &TeamState) -> Vec<(String, String)> {
    let nodes = state
        .nodes
        .values()
        .filter(|n| effective_node(state, &n.key).is_some())
        .map(|n| (format!("node:{}", n.key), &n.enc_key));
    let admins = state
        .members
        .values()
        .filter(|m| effective_role(state, &m.key).is_some_and(|r| r >= Role::Admin))
        .map(|m| (format!("member:{}", m.key), &m.enc_key));
    nodes
        .chain(admins)
        .filter(|(_, enc)| !enc.is_empty())
        .map(|(r, enc)| (r, enc.clone()))
        .collect()
}

/// The team's current secrets key: the greatest (epoch, public key hex)
/// any well-formed entry holds, the same on every replica even when two
/// keys of one epoch were made concurrently. `None` before the first.
pub fn team_key(state: &TeamState) -> Option<(u32, String)> {
    state
        .keys
        .values()
        .filter_map(|k| k.named().filter(|(e, _)| *e == k.epoch))
        .max()
        .map(|(e, p)| (e, p.to_string()))
}

/// Whether `recipient` holds the team key (`epoch`, `public`).
pub fn holds_key(state: &TeamState, recipient: &str, epoch: u32, public: &str) -> bool {
    state
        .keys
        .values()
        .any(|k| k.recipient == recipient && k.epoch == epoch && k.public() == Some(public))
}

/// The ids of `recipient`'s entries in the keys collection.
pub fn key_entries_of(state: &TeamState, recipient: &str) -> Vec<String> {
    state
        .keys
        .iter()
        .filter(|(_, k)| k.recipient == recipient)
        .map(|(id, _)| id.clone())
        .collect()
}
