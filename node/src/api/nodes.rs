//! The team's nodes: as the state holds them, and their liveness from
//! heartbeats (`status`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use shoal_api::nodes::{Liveness, NodeList, NodeStatus, StatusList};

use super::common::{Answer, Api, Shared, ok, resolve};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/teams/{team}/nodes", get(nodes))
        .route("/v1/teams/{team}/status", get(status))
}

/// Removed nodes included, in key order.
async fn nodes(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer<NodeList> {
    let state = resolve(&api, &arg).await?.state().await?;
    ok(state.nodes.into_values().collect())
}

/// Every node of the team with its liveness from heartbeats: `connected`
/// (fresh heartbeat), `unreachable` (stale or none), `outdated` (speaks an
/// older protocol), `removed`.
async fn status(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer<StatusList> {
    let team = resolve(&api, &arg).await?;
    let state = team.state().await?;
    let beats = team.entry.sync.status().await?;
    let me = api.node.to_hex();
    let list = state
        .nodes
        .values()
        .map(|n| {
            let beat = beats.iter().find(|b| b.key.to_hex() == n.key);
            let fresh = beat
                .filter(|b| b.connected && n.removed.is_none())
                .and_then(|b| b.live.as_ref());
            let status = if n.removed.is_some() {
                Liveness::Removed
            } else if beat.is_some_and(|b| b.protocol_version < shoal_protocol::PROTOCOL_VERSION)
                || n.protocol_version < shoal_protocol::PROTOCOL_VERSION
            {
                Liveness::Outdated
            } else if beat.is_some_and(|b| b.connected) {
                Liveness::Connected
            } else {
                Liveness::Unreachable
            };
            NodeStatus {
                key: n.key.clone(),
                name: n.name.clone(),
                status,
                this_node: n.key == me,
                seen_ms_ago: beat.map(|b| b.seen_ms_ago),
                agent_version: beat.map_or(n.agent_version.clone(), |b| b.agent_version.clone()),
                addresses: beat.map_or(n.addresses.clone(), |b| b.addresses.clone()),
                load: fresh.and_then(|l| l.load),
                running: fresh.map(|l| {
                    let n = l.containers.iter().filter(|c| c.state == "running").count();
                    u32::try_from(n).unwrap_or(u32::MAX)
                }),
            }
        })
        .collect();
    ok(list)
}
