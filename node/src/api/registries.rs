//! Registries: the list, one registry, and an image's tags asked of the
//! registry from this node. No answer holds a password: only whether there
//! is one and which nodes can open it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use shoal_api::registries::{Registry as RegistryView, RegistryList, Tags, TagsQuery};
use shoal_protocol::model::{Registry, TeamState, parse_team_recipient};

use super::common::{Answer, Api, Fail, Shared, blocking, ok, resolve};
use super::lookup::{find_registry, node_name};
use crate::daemon::Node;
use crate::registry::{Credentials, RegistryClient, RegistrySpec, TagsError};
use crate::secrets;

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/teams/{team}/registries", get(registries))
        .route("/v1/teams/{team}/registries/{registry}", get(registry))
        .route("/v1/teams/{team}/registries/{registry}/tags", get(tags))
}

/// How many images (their own ref, config ref or init containers) use a registry.
fn registry_uses(s: &TeamState, id: &str) -> usize {
    s.versions
        .values()
        .flat_map(|v| v.images.iter())
        .filter(|i| {
            i.image.registry == id
                || i.config.image.as_ref().is_some_and(|x| x.registry == id)
                || i.config
                    .init_containers
                    .iter()
                    .any(|c| c.image.registry == id)
        })
        .count()
}

fn registry_view(s: &TeamState, r: &Registry) -> RegistryView {
    // The nodes that can open the password.
    let sealed_for: Option<Vec<String>> = r.password.as_ref().map(|p| {
        if p.recipient.starts_with(secrets::TEAM_RECIPIENT_PREFIX) {
            secrets::team_key_holders(s, &p.recipient)
                .iter()
                .map(|k| node_name(s, k))
                .collect()
        } else {
            secrets::sealed_set(p)
                .map(|set| set.keys().map(|k| node_name(s, k)).collect())
                .unwrap_or_else(|_| vec![p.recipient.clone()])
        }
    });
    let key_epoch = r
        .password
        .as_ref()
        .and_then(|p| parse_team_recipient(&p.recipient))
        .map(|(epoch, _)| epoch);
    RegistryView {
        id: r.id.clone(),
        name: r.name.clone(),
        kind: r.kind,
        url: r.url.clone(),
        namespace: r.namespace.clone(),
        user: r.user.clone(),
        password: r.password.is_some(),
        key_epoch,
        sealed_for,
        images: registry_uses(s, &r.id) as u64,
        builtin: r.id == shoal_protocol::model::HUB_REGISTRY_ID,
        created_ms: r.created.ms,
    }
}

/// Oldest first (the built-in registry first).
async fn registries(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer<RegistryList> {
    let s = resolve(&api, &team).await?.state().await?;
    let mut list: Vec<&Registry> = s.registries.values().collect();
    list.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    ok(list.into_iter().map(|r| registry_view(&s, r)).collect())
}

async fn registry(
    State(api): Shared,
    UrlPath((team, arg)): UrlPath<(String, String)>,
) -> Answer<RegistryView> {
    let s = resolve(&api, &team).await?.state().await?;
    ok(registry_view(&s, find_registry(&s, &arg)?))
}

/// Lists an image's tags with the registry's client; the password, if any,
/// is opened here with this node's encryption key and never leaves.
async fn tags(
    State(api): Shared,
    UrlPath((team, arg)): UrlPath<(String, String)>,
    Query(q): Query<TagsQuery>,
) -> Answer<Tags> {
    let team = resolve(&api, &team).await?;
    let s = team.state().await?;
    let r = find_registry(&s, &arg)?.clone();
    let creds = match (&r.user, &r.password) {
        (Some(user), Some(_)) => {
            let store = Arc::clone(team.entry.sync.store());
            let secret = blocking(move || Node::stored_enc_secret(&store)).await?;
            let password = secrets::open_registry_password(&secret, &api.node.to_hex(), &s, &r)
                .map_err(|e| {
                    Fail(
                        StatusCode::CONFLICT,
                        format!("cannot use the password of registry {}: {e}", r.name),
                    )
                })?
                .unwrap_or_default();
            Some(Credentials::new(user.clone(), password))
        }
        _ => None,
    };
    let client = RegistryClient::new().map_err(Fail::internal)?;
    let spec = RegistrySpec::from(&r);
    match client.list_tags(&spec, &q.image, creds.as_ref()).await {
        Ok(tags) => ok(Tags {
            registry: r.name,
            image: q.image,
            tags,
        }),
        Err(e) => {
            let status = match &e {
                TagsError::NotListable { .. }
                | TagsError::InvalidImage { .. }
                | TagsError::InvalidSpec { .. } => StatusCode::BAD_REQUEST,
                TagsError::UnknownImage { .. } => StatusCode::NOT_FOUND,
                TagsError::Client { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_GATEWAY,
            };
            Err(Fail(status, e.to_string()))
        }
    }
}
