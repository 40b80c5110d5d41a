//! One try of a deployment: the namespace, server-side apply of the
//! plan's objects, removal of the objects the plan no longer has.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_protocol::model::ContainerState;
use tokio::sync::mpsc;

use super::KubernetesRuntime;
use super::build::{Objects, build_objects};
use super::meta::{
    apply_params, created_by_shoal, mark_created, name_of, team_label, team_selector,
};
use crate::runtime::common::Reporter;
use crate::runtime::{DeployOutcome, DeployPlan, LABEL_TEAM, ProgressEvent, RuntimeError, Step};

impl KubernetesRuntime {
    pub(super) async fn run_deploy(
        &self,
        plan: &DeployPlan,
        progress: &mpsc::Sender<ProgressEvent>,
    ) -> Result<DeployOutcome, RuntimeError> {
        let objects = build_objects(plan)?;
        let report = Reporter::new(progress);
        let ns = plan.prefix.as_str();

        self.ensure_namespace(plan, objects.namespace.clone(), &report)
            .await?;
        for s in &objects.secrets {
            self.apply(ns, s, "secret").await?;
        }
        for c in &objects.claims {
            self.apply(ns, c, "persistent volume claim").await?;
            report
                .emit(
                    Step::Volume,
                    None,
                    format!("volume claim {} applied", name_of(&c.metadata)),
                )
                .await;
        }
        for d in &objects.deployments {
            self.apply(ns, d, "deployment").await?;
            let c = name_of(&d.metadata);
            report
                .emit(
                    Step::Create,
                    Some(c),
                    format!("deployment {ns}/{c} applied"),
                )
                .await;
        }
        for s in &objects.services {
            self.apply(ns, s, "service").await?;
        }
        self.remove_stale(plan, &objects, &report).await?;

        let timeout = plan
            .containers
            .iter()
            .filter_map(|pc| pc.config.expected.as_ref()?.timeout_s)
            .map(|s| Duration::from_secs(u64::from(s)))
            .fold(self.rollout_timeout, Duration::max);
        self.wait_rollouts(plan, timeout, &report).await?;

        let containers = plan
            .containers
            .iter()
            .map(|pc| {
                (
                    pc.name.clone(),
                    ContainerState {
                        state: "running".into(),
                        exit_code: None,
                        image: pc.image.reference.clone(),
                    },
                )
            })
            .collect();
        report
            .emit(
                Step::Done,
                None,
                format!("every rollout of {ns} is complete"),
            )
            .await;
        Ok(DeployOutcome {
            containers,
            pulled: Vec::new(),
            events: report.into_events(),
        })
    }

    pub(super) async fn apply<K>(&self, ns: &str, obj: &K, kind: &str) -> Result<K, RuntimeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        self.api::<K>(ns)
            .patch(&name, &apply_params(), &Patch::Apply(obj))
            .await
            .map_err(|e| self.err(format!("applying {kind} {ns}/{name}"), e))
    }

    async fn ensure_namespace(
        &self,
        plan: &DeployPlan,
        mut ns: Namespace,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = plan.prefix.as_str();
        let existing = api
            .get_opt(name)
            .await
            .map_err(|e| self.err(format!("reading namespace {name}"), e))?;
        match existing {
            Some(found) => {
                let owner = found
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_TEAM));
                if owner.is_some_and(|t| *t != team_label(&plan.team)) {
                    return Err(RuntimeError::NameInUse {
                        kind: "namespace",
                        name: name.to_owned(),
                    });
                }
                // Keep applying the mark, or the apply would drop it.
                if created_by_shoal(&found) {
                    mark_created(&mut ns);
                }
            }
            None => {
                mark_created(&mut ns);
                report
                    .emit(Step::Network, None, format!("creating namespace {name}"))
                    .await;
            }
        }
        api.patch(name, &apply_params(), &Patch::Apply(&ns))
            .await
            .map_err(|e| self.err(format!("applying namespace {name}"), e))?;
        Ok(())
    }

    /// Deletes the team's objects in the prefix that the plan no longer has.
    async fn remove_stale(
        &self,
        plan: &DeployPlan,
        objects: &Objects,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let ns = plan.prefix.as_str();
        let lp = ListParams::default().labels(&team_selector(&plan.team));
        let keep_deployments: BTreeSet<&str> = objects
            .deployments
            .iter()
            .map(|d| name_of(&d.metadata))
            .collect();
        let keep_services: BTreeSet<&str> = objects
            .services
            .iter()
            .map(|d| name_of(&d.metadata))
            .collect();
        let keep_secrets: BTreeSet<&str> = objects
            .secrets
            .iter()
            .map(|d| name_of(&d.metadata))
            .collect();

        let deployments = self
            .api::<Deployment>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing deployments of {ns}"), e))?;
        for d in deployments.items {
            let name = name_of(&d.metadata);
            if !keep_deployments.contains(name) {
                self.delete::<Deployment>(ns, name, "deployment").await?;
                report
                    .emit(
                        Step::Remove,
                        Some(name),
                        format!("removed deployment {ns}/{name}"),
                    )
                    .await;
            }
        }
        let services = self
            .api::<Service>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing services of {ns}"), e))?;
        for s in services.items {
            let name = name_of(&s.metadata);
            if !keep_services.contains(name) {
                self.delete::<Service>(ns, name, "service").await?;
            }
        }
        let secrets = self
            .api::<Secret>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing secrets of {ns}"), e))?;
        for s in secrets.items {
            let name = name_of(&s.metadata);
            if !keep_secrets.contains(name) {
                self.delete::<Secret>(ns, name, "secret").await?;
            }
        }
        Ok(())
    }

    /// Deletes one object; a missing one is not an error. True when it was
    /// there.
    pub(super) async fn delete<K>(
        &self,
        ns: &str,
        name: &str,
        kind: &str,
    ) -> Result<bool, RuntimeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let dp = DeleteParams::background();
        match self.api::<K>(ns).delete(name, &dp).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.err(format!("deleting {kind} {ns}/{name}"), e)),
        }
    }
}
