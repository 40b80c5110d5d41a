//! Finding the team's entities a route names, and naming keys and ids the
//! way every answer shows them. Names are accepted wherever ids are (among
//! equal names the earliest wins).

use shoal_protocol::model::{Deployment, Product, Registry, TeamState, Version};
use shoal_protocol::view;

use super::common::Fail;
use axum::http::StatusCode;

/// A node's name, or the first characters of its key.
pub(super) fn node_name(s: &TeamState, key: &str) -> String {
    s.nodes
        .get(key)
        .map(|n| n.name.clone())
        .unwrap_or_else(|| key.chars().take(8).collect())
}

/// A member's name, `node NAME` for a node, or the first characters of the key.
pub(super) fn member_name(s: &TeamState, key: &str) -> String {
    s.members
        .get(key)
        .map(|m| m.name.clone())
        .or_else(|| s.nodes.get(key).map(|n| format!("node {}", n.name)))
        .unwrap_or_else(|| key.chars().take(8).collect())
}

pub(super) fn find_registry<'a>(s: &'a TeamState, arg: &str) -> Result<&'a Registry, Fail> {
    view::registry_by_name(s, arg).ok_or_else(|| {
        Fail::not_found(format!(
            "no registry {arg:?} in this team: see `shoal registry list`"
        ))
    })
}

pub(super) fn find_product<'a>(s: &'a TeamState, arg: &str) -> Result<&'a Product, Fail> {
    view::product_by_name(s, arg).ok_or_else(|| {
        Fail::not_found(format!(
            "no product {arg:?} in this team: see `shoal product list`"
        ))
    })
}

pub(super) fn find_version<'a>(
    s: &'a TeamState,
    p: &Product,
    arg: &str,
) -> Result<&'a Version, Fail> {
    view::version_by_name(s, &p.id, arg).ok_or_else(|| {
        Fail::not_found(format!(
            "product {} has no version {arg:?}: see `shoal version list {}`",
            p.name, p.name
        ))
    })
}

pub(super) fn find_node_key(s: &TeamState, arg: &str) -> Result<String, Fail> {
    view::node_by_name(s, arg)
        .map(|n| n.key.clone())
        .ok_or_else(|| {
            Fail::not_found(format!(
                "no node {arg:?} in this team: see `shoal node list`"
            ))
        })
}

/// A deployment by id or by a unique prefix of its id (4 characters at least).
pub(super) fn find_deployment<'a>(s: &'a TeamState, arg: &str) -> Result<&'a Deployment, Fail> {
    if let Some(d) = s.deployments.get(arg) {
        return Ok(d);
    }
    let matches: Vec<&Deployment> = if arg.len() >= 4 {
        s.deployments
            .values()
            .filter(|d| d.id.starts_with(arg))
            .collect()
    } else {
        Vec::new()
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Fail::not_found(format!(
            "no deployment {arg:?} in this team: give its id or the first characters of it (see `shoal deploy list`)"
        ))),
        many => Err(Fail(
            StatusCode::CONFLICT,
            format!(
                "{} deployments start with {arg:?}: give more of the id",
                many.len()
            ),
        )),
    }
}
