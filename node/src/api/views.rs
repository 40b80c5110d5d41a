//! How entities of the team state are shown in answers: the views that
//! several resources' routes share (a deployment shows its version's
//! images; a version shows its deployments).

use shoal_api::deployments::{
    ContainerDrift, Deployment as DeploymentView, DeploymentDetail, DeploymentLive,
};
use shoal_api::products::Image as ImageView;
use shoal_protocol::heartbeat::Live;
use shoal_protocol::model::{Deployment, DeploymentStatus, Image, TeamState};
use shoal_protocol::{rules, view};

use super::lookup::{member_name, node_name};

/// An image of a version, its registry named.
pub(super) fn image_view(s: &TeamState, i: &Image) -> ImageView {
    let registry = s
        .registries
        .get(&i.image.registry)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| i.image.registry.clone());
    ImageView {
        name: i.name.clone(),
        registry,
        registry_id: i.image.registry.clone(),
        image: i.image.name.clone(),
        tag: i.image.tag.clone(),
        reference: i.image.to_string(),
        config: i.config.clone(),
    }
}

/// A deployment as listed.
pub(super) fn deployment_view(s: &TeamState, d: &Deployment) -> DeploymentView {
    let v = s.versions.get(&d.version);
    DeploymentView {
        id: d.id.clone(),
        product: s.products.get(&d.product).map(|p| p.name.clone()),
        product_id: d.product.clone(),
        version: v.map(|v| v.name.clone()),
        version_id: d.version.clone(),
        version_kind: v.map(|v| v.kind),
        node: node_name(s, &d.node),
        node_key: d.node.clone(),
        prefix: d.prefix.clone(),
        status: d.status,
        tries: d.tries,
        finished_try: d.finished_try,
        reason: d.reason.clone(),
        note: d.note.clone(),
        protected: d.protected,
        conflict: view::deployment_in_conflict(s, d),
        mutable: rules::deployment_mutable(s, d),
        deployable: rules::deployment_deployable(s, d),
        created_ms: d.created.ms,
        created_by: member_name(s, &d.created_by),
        // Secret values never leave the node they are sealed to: keys only.
        secrets: d.secrets.keys().cloned().collect(),
    }
}

/// One deployment with its configuration and last try (no fingerprint).
pub(super) fn deployment_detail(s: &TeamState, d: &Deployment) -> DeploymentDetail {
    let v = s.versions.get(&d.version);
    DeploymentDetail {
        deployment: deployment_view(s, d),
        env: d.env.clone(),
        instances: d.instances.clone(),
        containers: d.containers.clone(),
        events: d.events.clone(),
        frozen: d.frozen.as_ref().map(|f| f.version_name.clone()),
        images: v
            .map(|v| v.images.iter().map(|i| image_view(s, i)).collect())
            .unwrap_or_default(),
        fingerprint: None,
        live: None,
    }
}

/// A deployment's containers, expected (the states its last try reached,
/// when it is `successful`) against actual (the node's live state).
pub(super) fn deployment_live(d: &Deployment, live: &Live, seen_ms_ago: u64) -> DeploymentLive {
    let expecting = d.status == DeploymentStatus::Successful;
    let containers: Vec<ContainerDrift> = d
        .containers
        .iter()
        .map(|(container, reached)| {
            let name = format!("{}-{container}", d.prefix);
            let now = live
                .containers
                .iter()
                .find(|c| c.name == name && c.deployment == d.id && c.init.is_none());
            let expected = expecting.then(|| reached.state.clone());
            let actual = now.map_or_else(|| "missing".to_owned(), |c| c.state.clone());
            let exit_code = now.and_then(|c| c.exit_code);
            let health = now.and_then(|c| c.health.clone());
            let drift = match expected.as_deref() {
                None => false,
                Some("exited") => actual != "exited" || exit_code != reached.exit_code,
                Some(state) => actual != state || health.as_deref() == Some("unhealthy"),
            };
            ContainerDrift {
                container: container.clone(),
                name,
                expected,
                actual,
                exit_code,
                health,
                restarts: now.map_or(0, |c| c.restarts),
                drift,
            }
        })
        .collect();
    DeploymentLive {
        seen_ms_ago,
        drift: containers.iter().any(|c| c.drift),
        containers,
    }
}
