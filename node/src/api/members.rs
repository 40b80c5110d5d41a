//! `GET /v1/teams/{team}/members`: every member as the state holds it;
//! `GET /v1/teams/{team}/invites`: the invites and who redeemed them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use shoal_api::members::{InviteEntry, InviteList, MemberList};
use shoal_protocol::model::InviteKind;

use super::common::{Answer, Api, Shared, ok, resolve};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/teams/{team}/members", get(members))
        .route("/v1/teams/{team}/invites", get(invites))
}

/// Removed members included, in key order.
async fn members(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer<MemberList> {
    let state = resolve(&api, &arg).await?.state().await?;
    ok(state.members.into_values().collect())
}

/// Every invite, revoked and expired ones included, with the members and
/// nodes that joined with it.
async fn invites(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer<InviteList> {
    let state = resolve(&api, &arg).await?.state().await?;
    let used = |id: &str| -> Vec<String> {
        let members = state
            .members
            .values()
            .filter(|m| m.invite.as_deref() == Some(id))
            .map(|m| m.key.clone());
        let nodes = state
            .nodes
            .values()
            .filter(|n| n.invite.as_deref() == Some(id))
            .map(|n| n.key.clone());
        members.chain(nodes).collect()
    };
    ok(state
        .invites
        .values()
        .map(|i| {
            let (kind, grants) = match &i.kind {
                InviteKind::Member { role } => ("member", role.as_str().to_string()),
                InviteKind::Node { name, .. } => ("node", name.clone()),
            };
            InviteEntry {
                id: i.id.clone(),
                kind: kind.into(),
                grants,
                creator: i.created_by.clone(),
                creator_name: state.members.get(&i.created_by).map(|m| m.name.clone()),
                created_ms: i.created.ms,
                expires_ms: i.expires.ms,
                revoked: i.revoked,
                used_by: used(&i.id),
            }
        })
        .collect())
}
