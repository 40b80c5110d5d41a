//! Routes for operating a node (`shoal node show`): the node itself, its
//! runtime's health, its store, and each team's sync with its peers.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use shoal_api::node::{NodeInfo, RuntimeHealth, StoreInfo};
use shoal_api::sync::{OpCounts, PeerSync, TeamSync};

use super::common::{Answer, Api, Shared, blocking, ok, resolve};
use crate::health;

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/node", get(node))
        .route("/v1/node/health", get(node_health))
        .route("/v1/node/store", get(node_store))
        .route("/v1/teams/{team}/sync", get(team_sync))
}

async fn node(State(api): Shared) -> Answer<NodeInfo> {
    ok(NodeInfo {
        key: api.node.to_hex(),
        name: api.name.clone(),
        runtime: api.runtime,
        agent_version: api.agent_version.clone(),
        teams: api.teams().len() as u64,
    })
}

/// Asks this node's runtime whether it answers (at most
/// [`health::HEALTH_TIMEOUT`]). Always 200: `ok` says how it went.
async fn node_health(State(api): Shared) -> Answer<RuntimeHealth> {
    let h = health::check(api.runtime, api.kube.as_ref(), health::HEALTH_TIMEOUT).await;
    ok(RuntimeHealth {
        runtime: h.runtime,
        ok: h.ok,
        detail: h.detail,
        elapsed_ms: h.elapsed_ms,
    })
}

/// The store file: its path, size on disk and schema version.
async fn node_store(State(api): Shared) -> Answer<StoreInfo> {
    let store = Arc::clone(&api.store);
    let info = blocking(move || {
        Ok::<_, crate::store::StoreError>(StoreInfo {
            path: store.path().display().to_string(),
            size_bytes: store.size_bytes()?,
            schema_version: store.schema_version()?,
            supported_schema_version: crate::store::SCHEMA_VERSION,
            written_by: store.written_by()?,
        })
    })
    .await?;
    ok(info)
}

/// This node's sync with the team: every connected peer (and every peer
/// whose version vector was seen) with its lag, and op counts.
async fn team_sync(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer<TeamSync> {
    let team = resolve(&api, &arg).await?;
    let state = team.state().await?;
    let sync = &team.entry.sync;
    let stats = sync.stats().await?;
    let beats = sync.status().await?;
    let store = Arc::clone(sync.store());
    let id = team.id;
    let quarantined = blocking(move || store.quarantine_count(id)).await?;
    let peers = stats
        .peers
        .iter()
        .map(|p| {
            let key = p.key.to_hex();
            let node = state.nodes.get(&key);
            let addresses = beats
                .iter()
                .find(|b| b.key == p.key)
                .map(|b| b.addresses.clone())
                .or_else(|| node.map(|n| n.addresses.clone()))
                .unwrap_or_default();
            PeerSync {
                key,
                name: node.map(|n| n.name.clone()),
                connected: p.connected,
                they_lack: p.they_lack,
                we_lack: p.we_lack,
                vector_age_ms: p.vector_age_ms,
                addresses,
            }
        })
        .collect();
    ok(TeamSync {
        team: team.id.to_hex(),
        peers,
        ops: OpCounts {
            applied: stats.applied,
            waiting: stats.waiting,
            quarantined,
            rejected_since_start: stats.rejected,
            forks: stats.forks,
            voided: stats.voided,
        },
    })
}
