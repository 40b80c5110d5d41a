//! Waiting for rollouts: a Deployment's rollout state from its status, the
//! revision being rolled out, and why its pods fail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;

use super::meta::{container_selector, label_of, name_of, team_selector};
use super::watch::ChangeWatch;
use super::{ANNOTATION_REVISION, KubernetesRuntime, LABEL_POD_TEMPLATE_HASH};
use crate::runtime::common::Reporter;
use crate::runtime::{DeployPlan, LABEL_PREFIX, PlannedContainer, RuntimeError, Step};

/// Waiting reasons of a pod's container that fail a rollout at once.
const PULL_FAILURES: [&str; 3] = ["ImagePullBackOff", "ErrImagePull", "InvalidImageName"];
const START_FAILURES: [&str; 3] = [
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

impl KubernetesRuntime {
    /// Waits until the rollouts of `containers` are complete, until
    /// `deadline` (the try's `timeout` from its start).
    pub(super) async fn wait_rollouts(
        &self,
        plan: &DeployPlan,
        containers: &[&PlannedContainer],
        deadline: Instant,
        timeout: Duration,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let ns = plan.prefix.as_str();
        let mut pending: Vec<&PlannedContainer> = containers.to_vec();
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        // Started before the first check: its list brings a check of its
        // own, and every change after that list an event.
        let changes = ChangeWatch::start(
            &self.client,
            ns,
            &format!("{},{LABEL_PREFIX}={ns}", team_selector(&plan.team)),
        );
        for pc in &pending {
            report
                .emit(
                    Step::Wait,
                    Some(&pc.name),
                    format!("waiting for the rollout of {ns}/{}", pc.name),
                )
                .await;
        }
        loop {
            let mut still = Vec::new();
            for pc in pending {
                let d = self
                    .api::<Deployment>(ns)
                    .get(&pc.name)
                    .await
                    .map_err(|e| self.err(format!("reading deployment {ns}/{}", pc.name), e))?;
                match rollout_state(&d) {
                    Rollout::Complete => {
                        report
                            .emit(Step::Wait, Some(&pc.name), "rollout complete".into())
                            .await;
                    }
                    Rollout::Failed { reason, detail } => {
                        return Err(RuntimeError::Rollout {
                            container: pc.name.clone(),
                            reason,
                            detail,
                        });
                    }
                    Rollout::Progressing(what) => {
                        // Only the pods of the revision being rolled out
                        // decide: an older one's may crash or linger.
                        let selector = container_selector(&plan.team, &plan.prefix, &pc.name);
                        if let Some(hash) = self.current_revision(ns, &d, &selector).await? {
                            let pods = self
                                .api::<Pod>(ns)
                                .list(&ListParams::default().labels(&format!(
                                    "{selector},{LABEL_POD_TEMPLATE_HASH}={hash}"
                                )))
                                .await
                                .map_err(|e| {
                                    self.err(format!("listing pods of {ns}/{}", pc.name), e)
                                })?;
                            if let Some(f) = pod_failure(&pods.items) {
                                return Err(f.into_error(&pc.name, &pc.image.reference));
                            }
                        }
                        last.insert(pc.name.clone(), what);
                        still.push(pc);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            // The next check comes with a change of the prefix's
            // Deployments or pods; the resync covers a watch that is down
            // and a server without watch.
            let left = deadline.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                let resync = self.poll_interval.min(left);
                tokio::select! {
                    () = changes.changed() => continue,
                    () = tokio::time::sleep(resync) => {}
                }
                if resync < left {
                    continue;
                }
            }
            // The deadline: what the last check saw stands.
            let pc = pending[0];
            return Err(RuntimeError::Timeout {
                container: pc.name.clone(),
                expected: "a complete rollout".into(),
                seconds: timeout.as_secs(),
                last: last.remove(&pc.name).unwrap_or_default(),
            });
        }
    }

    /// The pod-template-hash of the revision a Deployment rolls out now, or
    /// `None` while the controller has not made it yet.
    async fn current_revision(
        &self,
        ns: &str,
        d: &Deployment,
        selector: &str,
    ) -> Result<Option<String>, RuntimeError> {
        let sets = self
            .api::<ReplicaSet>(ns)
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                self.err(
                    format!("listing replica sets of {ns}/{}", name_of(&d.metadata)),
                    e,
                )
            })?;
        Ok(current_revision_hash(d, &sets.items))
    }
}

/// Where a Deployment's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// The controller saw the latest spec, and every replica is updated
    /// and available.
    Complete,
    /// Not yet; what is missing.
    Progressing(String),
    /// The Deployment itself reports a failure (progress deadline).
    Failed { reason: String, detail: String },
}

/// The rollout state of a Deployment, from its status alone.
pub fn rollout_state(d: &Deployment) -> Rollout {
    let generation = d.metadata.generation.unwrap_or(0);
    let want = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    if let Some(c) = st.conditions.iter().flatten().find(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Rollout::Failed {
            reason: "ProgressDeadlineExceeded".into(),
            detail: c.message.clone().unwrap_or_default(),
        };
    }
    let observed = st.observed_generation.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    if observed < generation {
        return Rollout::Progressing(format!(
            "the controller has not seen generation {generation} yet"
        ));
    }
    if updated == want && available == want && total <= want {
        return Rollout::Complete;
    }
    Rollout::Progressing(format!(
        "{updated}/{want} updated, {available}/{want} available, {total} total"
    ))
}

/// The pod-template-hash of the revision a Deployment rolls out now: of its
/// ReplicaSets (owned by it), the one with the newest revision. `None` while
/// the controller has not caught up with the Deployment (it has not seen its
/// generation, or the Deployment names a revision none of `sets` has yet).
pub fn current_revision_hash(d: &Deployment, sets: &[ReplicaSet]) -> Option<String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let observed = d
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    if observed < generation {
        return None;
    }
    let revision = |m: &ObjectMeta| -> Option<u64> {
        m.annotations
            .as_ref()?
            .get(ANNOTATION_REVISION)?
            .parse()
            .ok()
    };
    let owned_by_d = |rs: &&ReplicaSet| {
        rs.metadata.owner_references.iter().flatten().any(|o| {
            o.kind == "Deployment"
                && match (&d.metadata.uid, o.uid.is_empty()) {
                    (Some(uid), false) => &o.uid == uid,
                    _ => o.name == name_of(&d.metadata),
                }
        })
    };
    let (rev, newest) = sets
        .iter()
        .filter(owned_by_d)
        .filter_map(|rs| Some((revision(&rs.metadata)?, rs)))
        .max_by_key(|(rev, _)| *rev)?;
    if revision(&d.metadata).is_some_and(|want| want != rev) {
        return None;
    }
    label_of(&newest.metadata, LABEL_POD_TEMPLATE_HASH)
}

/// Why a pod cannot become ready, when the reason is final enough to fail a
/// try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFailure {
    pub pod: String,
    pub reason: String,
    pub message: String,
}

impl PodFailure {
    fn into_error(self, container: &str, reference: &str) -> RuntimeError {
        let detail = if self.message.is_empty() {
            format!("{} (pod {})", self.reason, self.pod)
        } else {
            format!("{}: {} (pod {})", self.reason, self.message, self.pod)
        };
        if PULL_FAILURES.contains(&self.reason.as_str()) {
            return RuntimeError::Pull {
                reference: reference.to_owned(),
                detail,
            };
        }
        RuntimeError::Rollout {
            container: container.to_owned(),
            reason: self.reason,
            detail,
        }
    }
}

/// The first failure among pods: a container (or init container) waiting
/// on an image pull or a crash loop, or a pod the scheduler cannot place.
pub fn pod_failure(pods: &[Pod]) -> Option<PodFailure> {
    for p in pods {
        // A terminating pod (an old revision going away) decides nothing.
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let pod = name_of(&p.metadata).to_owned();
        let Some(st) = &p.status else { continue };
        let statuses = st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(st.container_statuses.iter().flatten());
        for cs in statuses {
            let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = w.reason.clone().unwrap_or_default();
            if PULL_FAILURES.contains(&reason.as_str()) || START_FAILURES.contains(&reason.as_str())
            {
                return Some(PodFailure {
                    pod,
                    reason,
                    message: w.message.clone().unwrap_or_default(),
                });
            }
        }
        if let Some(c) = st.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        }) {
            return Some(PodFailure {
                pod,
                reason: "Unschedulable".into(),
                message: c.message.clone().unwrap_or_default(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn revision_set(name: &str, owner_uid: &str, revision: &str, hash: &str) -> ReplicaSet {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(
                    LABEL_POD_TEMPLATE_HASH.to_owned(),
                    hash.to_owned(),
                )])),
                annotations: Some(BTreeMap::from([(
                    ANNOTATION_REVISION.to_owned(),
                    revision.to_owned(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: owner_uid.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        }
    }

    #[test]
    fn the_current_revision_is_the_newest_replica_set_of_the_deployment() {
        use k8s_openapi::api::apps::v1::DeploymentStatus;
        let deployment = |generation: i64, observed: i64, revision: Option<&str>| Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                uid: Some("d1".into()),
                generation: Some(generation),
                annotations: revision
                    .map(|r| BTreeMap::from([(ANNOTATION_REVISION.to_owned(), r.to_owned())])),
                ..ObjectMeta::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        };
        let sets = [
            revision_set("web-old", "d1", "9", "old"),
            revision_set("web-new", "d1", "10", "new"),
            // Another Deployment's newer set does not count.
            revision_set("other", "d2", "11", "other"),
        ];
        let current = |d: &Deployment| current_revision_hash(d, &sets);
        assert_eq!(
            current(&deployment(3, 3, Some("10"))).as_deref(),
            Some("new")
        );
        assert_eq!(current(&deployment(3, 3, None)).as_deref(), Some("new"));
        // The controller has not seen the latest spec, or not made its set.
        assert_eq!(current(&deployment(4, 3, Some("10"))), None);
        assert_eq!(current(&deployment(3, 3, Some("11"))), None);
        assert_eq!(current_revision_hash(&deployment(1, 1, None), &[]), None);
    }
}
