//! The team secrets key (§5): its state, and a rotation prepared by this
//! node for an admin to sign. Only sealed values ever leave the node.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use shoal_api::keys::{KeyHolder, KeyRotation, KeyWaiting, TeamKeys};

use super::common::{Answer, Api, Fail, Shared, blocking, ok, resolve};
use crate::daemon::Node;
use crate::secrets;

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/teams/{team}/keys", get(keys))
        .route("/v1/teams/{team}/keys/rotation", post(key_rotation))
}

/// The team secrets key as the state holds it: the current epoch and
/// public half, who holds which epoch (sealed copies are not sent), and the
/// nodes and admins still waiting for the current one (or, before the team
/// has a key, everyone who should get the first), with their encryption
/// keys.
async fn keys(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer<TeamKeys> {
    let s = resolve(&api, &team).await?.state().await?;
    let current = secrets::team_public(&s);
    ok(TeamKeys {
        epoch: current.as_ref().map(|(e, _)| *e),
        public: current.map(|(_, p)| p),
        holders: s
            .keys
            .values()
            .map(|k| KeyHolder {
                recipient: k.recipient.clone(),
                epoch: k.epoch,
            })
            .collect(),
        waiting: secrets::key_recipients_missing(&s)
            .into_iter()
            .map(|(recipient, enc_key)| KeyWaiting { recipient, enc_key })
            .collect(),
    })
}

/// A rotation of the team secrets key for an admin to sign: this node
/// makes the next epoch's key, seals it to every node and admin, and seals
/// every registry password again to it (opened with the key this node
/// holds). The action is not submitted.
async fn key_rotation(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer<KeyRotation> {
    let team = resolve(&api, &team).await?;
    let s = team.state().await?;
    let store = Arc::clone(team.entry.sync.store());
    let secret = blocking(move || Node::stored_enc_secret(&store)).await?;
    let r = secrets::rotate(&secret, &api.node.to_hex(), &s).map_err(|e| {
        let status = match e {
            secrets::SecretsError::NoKeyYet => StatusCode::NOT_FOUND,
            _ => StatusCode::CONFLICT,
        };
        Fail(
            status,
            format!("cannot rotate the team key on this node: {e}"),
        )
    })?;
    ok(KeyRotation {
        action: r.action,
        epoch: r.epoch,
        recipients: r.recipients,
        registries: r.registries,
    })
}
