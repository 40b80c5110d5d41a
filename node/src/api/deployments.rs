//! Deployments: the filtered list, one deployment (with a long poll for a
//! change), and its sealed secret values. Secret values never leave the
//! node they are sealed to: answers name them by key.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::get;
use shoal_api::deployments::{
    DeploymentDetail, DeploymentList, DeploymentWait, DeploymentsQuery, SealedSecrets,
};
use shoal_protocol::model::{Deployment, DeploymentStatus};

use super::common::{Answer, Api, Fail, Shared, ok, resolve};
use super::lookup::{find_deployment, find_node_key, find_product, find_version};
use super::views::{deployment_detail, deployment_live, deployment_view};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/teams/{team}/deployments", get(deployments))
        .route("/v1/teams/{team}/deployments/{deployment}", get(deployment))
        .route(
            "/v1/teams/{team}/deployments/{deployment}/sealed",
            get(deployment_sealed),
        )
}

/// Oldest first.
async fn deployments(
    State(api): Shared,
    UrlPath(team): UrlPath<String>,
    Query(q): Query<DeploymentsQuery>,
) -> Answer<DeploymentList> {
    let s = resolve(&api, &team).await?.state().await?;
    let node = match q.node.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => Some(find_node_key(&s, n)?),
        None => None,
    };
    let status = match q.status.as_deref().filter(|x| !x.is_empty()) {
        Some(x) => Some(DeploymentStatus::parse(x).ok_or_else(|| {
            Fail::bad_request(format!(
                "unknown status {x:?}: use preparing, in-progress, successful, failed, obsolete or downgraded"
            ))
        })?),
        None => None,
    };
    let product = match q.product.as_deref().filter(|x| !x.is_empty()) {
        Some(x) => Some(find_product(&s, x)?),
        None => None,
    };
    let version = match (product, q.version.as_deref().filter(|x| !x.is_empty())) {
        (Some(p), Some(x)) => Some(find_version(&s, p, x)?.id.clone()),
        (None, Some(_)) => {
            return Err(Fail::bad_request(
                "a version filter needs a product filter too".into(),
            ));
        }
        _ => None,
    };
    let mut list: Vec<&Deployment> = s
        .deployments
        .values()
        .filter(|d| node.as_ref().is_none_or(|n| &d.node == n))
        .filter(|d| status.is_none_or(|x| d.status == x))
        .filter(|d| product.is_none_or(|p| d.product == p.id))
        .filter(|d| version.as_ref().is_none_or(|v| &d.version == v))
        .collect();
    list.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    ok(list.into_iter().map(|d| deployment_view(&s, d)).collect())
}

/// Longest wait of one `GET .../deployments/{d}?unless=` long poll; short so
/// the daemon's graceful shutdown never waits long on one.
pub const DEPLOYMENT_WAIT_MAX: Duration = Duration::from_secs(5);

/// A fingerprint of a deployment's view (its JSON text: fields in a fixed
/// order, maps sorted, so equal views print equal). Only this daemon
/// compares it, so the std hasher (fixed keys) is enough.
fn fingerprint(d: &DeploymentDetail) -> Result<String, Fail> {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    let text = serde_json::to_string(d).map_err(Fail::internal)?;
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    Ok(format!("{:016x}", h.finish()))
}

/// One deployment; with `unless`, answers once it differs from that
/// fingerprint or `wait_ms` passed.
async fn deployment(
    State(api): Shared,
    UrlPath((team, arg)): UrlPath<(String, String)>,
    Query(q): Query<DeploymentWait>,
) -> Answer<DeploymentDetail> {
    let team = resolve(&api, &team).await?;
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(DEPLOYMENT_WAIT_MAX);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = team.entry.sync.subscribe();
    loop {
        // Marked seen before the state is read, so no change is missed.
        changes.borrow_and_update();
        let s = team.state().await?;
        let found = find_deployment(&s, &arg)?;
        let mut d = deployment_detail(&s, found);
        // The fingerprint covers the replicated view only: a long poll waits
        // for a change of the deployment, not of its node's heartbeats.
        let fp = fingerprint(&d)?;
        let beats = team.entry.sync.status().await?;
        d.live = beats
            .iter()
            .find(|b| b.key.to_hex() == found.node && b.connected)
            .and_then(|b| Some(deployment_live(found, b.live.as_ref()?, b.seen_ms_ago)));
        let unchanged = q.unless.as_deref() == Some(fp.as_str());
        d.fingerprint = Some(fp);
        if !unchanged {
            return ok(d);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out, or the team's sync engine stopped.
            Ok(Err(_)) | Err(_) => return ok(d),
        }
    }
}

/// The sealed secret values of a deployment (ciphertext only, as in the
/// replicated state): what a client re-sends when it edits other secrets.
async fn deployment_sealed(
    State(api): Shared,
    UrlPath((team, arg)): UrlPath<(String, String)>,
) -> Answer<SealedSecrets> {
    let s = resolve(&api, &team).await?.state().await?;
    let d = find_deployment(&s, &arg)?;
    ok(SealedSecrets {
        id: d.id.clone(),
        secrets: d.secrets.clone(),
    })
}
