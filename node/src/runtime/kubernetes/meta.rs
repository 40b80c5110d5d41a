//! Object metadata: team labels and selectors, label checks, the patch
//! parameters of server-side apply, and reading names, labels and
//! annotations back.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PatchParams;

use super::{ANNOTATION_CREATED, ANNOTATION_REPLICAS, FIELD_MANAGER, TEAM_LABEL_CHARS};
use crate::runtime::{
    LABEL_CONTAINER, LABEL_DEPLOYMENT, LABEL_NAMESPACE, LABEL_PREFIX, LABEL_PRODUCT, LABEL_TEAM,
    is_dns_label,
};

/// The team label's value: the team id, cut to fit a label value.
pub fn team_label(team: &str) -> String {
    if is_label_value(team) {
        team.to_owned()
    } else {
        team.chars().take(TEAM_LABEL_CHARS).collect()
    }
}

pub(super) fn team_selector(team: &str) -> String {
    format!("{LABEL_TEAM}={}", team_label(team))
}

/// The objects of one product in a prefix: what a try of that product may
/// replace or remove.
pub(super) fn product_selector(team: &str, prefix: &str, product: &str) -> String {
    format!(
        "{LABEL_TEAM}={},{LABEL_PREFIX}={prefix},{LABEL_PRODUCT}={product}",
        team_label(team)
    )
}

/// The objects a deployment's latest try applied.
pub(super) fn deployment_selector(team: &str, deployment: &str) -> String {
    format!(
        "{LABEL_TEAM}={},{LABEL_DEPLOYMENT}={deployment}",
        team_label(team)
    )
}

/// True when an object carries a label of shoal's (of any team).
pub(super) fn is_shoal_object(m: &ObjectMeta) -> bool {
    m.deletion_timestamp.is_none()
        && m.labels
            .as_ref()
            .is_some_and(|l| l.keys().any(|k| k.starts_with(LABEL_NAMESPACE)))
}

pub(super) fn container_selector(team: &str, prefix: &str, container: &str) -> String {
    format!(
        "{LABEL_TEAM}={},{LABEL_PREFIX}={prefix},{LABEL_CONTAINER}={container}",
        team_label(team)
    )
}

/// True for a label value: at most 63 characters of `[A-Za-z0-9-_.]`,
/// beginning and ending with a letter or digit (or empty).
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

/// True for a label key: an optional DNS subdomain prefix and `/`, then a
/// non-empty name that is a valid label value.
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
    prefix_ok && !name.is_empty() && is_label_value(name)
}

pub(super) fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

pub(super) fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

pub(super) fn name_of(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or_default()
}

pub(super) fn label_of(m: &ObjectMeta, key: &str) -> Option<String> {
    m.labels.as_ref()?.get(key).cloned()
}

/// `<prefix>-<container>` of a Deployment shoal made.
pub(super) fn runtime_name(d: &Deployment) -> Option<String> {
    let prefix = label_of(&d.metadata, LABEL_PREFIX)?;
    let container = label_of(&d.metadata, LABEL_CONTAINER)?;
    Some(format!("{prefix}-{container}"))
}

pub(super) fn created_by_shoal(ns: &Namespace) -> bool {
    ns.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CREATED))
        .is_some_and(|v| v == "true")
}

pub(super) fn mark_created(ns: &mut Namespace) {
    ns.metadata
        .annotations
        .get_or_insert_default()
        .insert(ANNOTATION_CREATED.into(), "true".into());
}

pub(super) fn configured_replicas(d: &Deployment) -> i32 {
    d.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REPLICAS))
        .and_then(|r| r.parse::<i32>().ok())
        .filter(|r| *r > 0)
        .unwrap_or(1)
}

pub(super) fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Unknown")
}
