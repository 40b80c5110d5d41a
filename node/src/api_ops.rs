//! Routes of the control API for operating a node (`shoal node show`): the
//! runtime's health, the store, and each team's sync with its peers.
//! Merged into [`crate::api::router`]; documented in `docs/api.md`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::api::{Answer, ApiState, Fail, Shared, ok, resolve};
use crate::health;

/// The operating routes.
pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/node/health", get(node_health))
        .route("/v1/node/store", get(node_store))
        .route("/v1/teams/{team}/sync", get(team_sync))
}

/// Asks this node's runtime whether it answers (at most
/// [`health::HEALTH_TIMEOUT`]). Always 200: `ok` says how it went.
async fn node_health(State(api): Shared) -> Answer {
    let h = health::check(api.runtime, api.kube.as_ref(), health::HEALTH_TIMEOUT).await;
    ok(serde_json::to_value(h)
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?)
}

/// The store file: its path, size on disk and schema version.
async fn node_store(State(api): Shared) -> Answer {
    let store = Arc::clone(&api.store);
    let info = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>(json!({
            "path": store.path().display().to_string(),
            "size_bytes": store.size_bytes()?,
            "schema_version": store.schema_version()?,
            "supported_schema_version": crate::store::SCHEMA_VERSION,
            "written_by": store.written_by()?,
        }))
    })
    .await
    .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    ok(info)
}

/// This node's sync with the team: every connected peer (and every peer
/// whose version vector was seen) with its lag, and op counts.
async fn team_sync(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer {
    let (id, state, entry) = resolve(&api, &arg).await?;
    let stats = entry.sync.stats().await?;
    let beats = entry.sync.status().await?;
    let store = Arc::clone(entry.sync.store());
    let quarantined = tokio::task::spawn_blocking(move || store.quarantine_count(id))
        .await
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let peers: Vec<Value> = stats
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
            json!({
                "key": key,
                "name": node.map(|n| n.name.clone()),
                "connected": p.connected,
                "they_lack": p.they_lack,
                "we_lack": p.we_lack,
                "vector_age_ms": p.vector_age_ms,
                "addresses": addresses,
            })
        })
        .collect();
    ok(json!({
        "team": id.to_hex(),
        "peers": peers,
        "ops": {
            "applied": stats.applied,
            "waiting": stats.waiting,
            "quarantined": quarantined,
            "rejected_since_start": stats.rejected,
        },
    }))
}
