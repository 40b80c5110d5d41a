//! One try of a deployment: the namespace, then per container of the plan,
//! in its order, server-side apply of its objects and the wait for its
//! rollout, before the next is applied; at the end, removal of the objects
//! of the product that the plan no longer has. A try touches only the
//! objects of its own product (found by the product label), so several
//! products share a prefix. When a rollout fails, the objects the try
//! changed get their previous versions back (those it created go), so the
//! last good version keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shoal_protocol::model::ContainerState;
use tokio::sync::mpsc;

use super::build::{Objects, build_objects};
use super::meta::{
    apply_params, created_by_shoal, label_of, mark_created, name_of, product_selector, team_label,
    team_selector,
};
use super::{ANNOTATION_REVISION, KubernetesRuntime};
use crate::runtime::common::Reporter;
use crate::runtime::{
    DeployOutcome, DeployPlan, LABEL_CONTAINER, LABEL_PRODUCT, LABEL_TEAM, PlannedContainer,
    ProgressEvent, RuntimeError, Step,
};

/// What the failure reason of a try ends with when the previous version
/// was brought back.
pub const RESTORED: &str = "previous version restored";

/// The kinds of object a try replaces (and restores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deployment,
    Service,
    Secret,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::Service => "service",
            Kind::Secret => "secret",
        }
    }
}

/// The team's objects in the prefix before the try, by name, as apply
/// bodies that bring them back.
#[derive(Default)]
struct Before {
    objects: BTreeMap<(&'static str, String), (Option<String>, Value)>,
}

impl Before {
    fn insert<K: Serialize>(&mut self, kind: &'static str, meta: &ObjectMeta, obj: &K) {
        let product = label_of(meta, LABEL_PRODUCT);
        self.objects
            .insert((kind, name_of(meta).to_owned()), (product, restorable(obj)));
    }

    fn get(&self, kind: &'static str, name: &str) -> Option<&(Option<String>, Value)> {
        self.objects.get(&(kind, name.to_owned()))
    }
}

/// One change a try made: the object, and its previous apply body (`None`:
/// the try created it).
struct Change {
    kind: Kind,
    name: String,
    previous: Option<Value>,
}

/// An object read from the server as an apply body that brings it back:
/// without status and the fields the server owns.
fn restorable<K: Serialize>(obj: &K) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "generation",
            "creationTimestamp",
            "selfLink",
            "ownerReferences",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            m.remove(k);
        }
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(ANNOTATION_REVISION);
        }
    }
    v
}

impl KubernetesRuntime {
    pub(super) async fn run_deploy(
        &self,
        plan: &DeployPlan,
        progress: &mpsc::Sender<ProgressEvent>,
    ) -> Result<DeployOutcome, RuntimeError> {
        let objects = build_objects(plan)?;
        let report = Reporter::new(progress);
        let ns = plan.prefix.as_str();
        let timeout = plan
            .containers
            .iter()
            .filter_map(|pc| pc.config.expected.as_ref()?.timeout_s)
            .map(|s| Duration::from_secs(u64::from(s)))
            .fold(self.rollout_timeout, Duration::max);
        let deadline = Instant::now() + timeout;

        // Read (and refused on a name clash) before anything is applied.
        let before = self.before(plan, &objects).await?;
        self.ensure_namespace(plan, objects.namespace.clone(), &report)
            .await?;
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
        // A previous version to go back to: one of the plan's Deployments
        // was there before the try.
        let has_previous = objects
            .deployments
            .iter()
            .any(|d| before.get("deployment", name_of(&d.metadata)).is_some());
        let mut changes = Vec::new();
        for pc in &plan.containers {
            let r = self
                .roll_out(
                    plan,
                    pc,
                    &objects,
                    &before,
                    &mut changes,
                    deadline,
                    timeout,
                    &report,
                )
                .await;
            if let Err(e) = r {
                if !has_previous {
                    return Err(e);
                }
                return Err(self.restore(plan, e, changes, &report).await);
            }
        }
        self.remove_stale(plan, &objects, &report).await?;

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

    /// Reads the team's objects in the prefix, and refuses a plan whose
    /// object names are taken by another product's.
    async fn before(&self, plan: &DeployPlan, objects: &Objects) -> Result<Before, RuntimeError> {
        let ns = plan.prefix.as_str();
        let lp = ListParams::default().labels(&team_selector(&plan.team));
        let mut before = Before::default();
        let ctx = |what: &str| format!("listing {what} of {ns}");
        for d in self
            .api::<Deployment>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("deployments"), e))?
        {
            before.insert("deployment", &d.metadata, &d);
        }
        for s in self
            .api::<Service>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("services"), e))?
        {
            before.insert("service", &s.metadata, &s);
        }
        for s in self
            .api::<Secret>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("secrets"), e))?
        {
            before.insert("secret", &s.metadata, &s);
        }
        for c in self
            .api::<PersistentVolumeClaim>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("volume claims"), e))?
        {
            before.insert("volume claim", &c.metadata, &c);
        }
        let names = objects
            .deployments
            .iter()
            .map(|d| ("deployment", &d.metadata))
            .chain(objects.services.iter().map(|s| ("service", &s.metadata)))
            .chain(objects.secrets.iter().map(|s| ("secret", &s.metadata)))
            .chain(objects.claims.iter().map(|c| ("volume claim", &c.metadata)));
        for (kind, meta) in names {
            let name = name_of(meta);
            if let Some((Some(product), _)) = before.get(kind, name)
                && *product != plan.product
            {
                return Err(RuntimeError::NameInUse {
                    kind,
                    name: format!("{ns}/{name} (of another product)"),
                });
            }
        }
        Ok(before)
    }

    /// Applies one container's objects and waits for its rollout.
    #[allow(clippy::too_many_arguments)]
    async fn roll_out(
        &self,
        plan: &DeployPlan,
        pc: &PlannedContainer,
        objects: &Objects,
        before: &Before,
        changes: &mut Vec<Change>,
        deadline: Instant,
        timeout: Duration,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let ns = plan.prefix.as_str();
        let mine = |m: &ObjectMeta| label_of(m, LABEL_CONTAINER).as_deref() == Some(&pc.name);
        let mut record = |kind: Kind, name: &str| {
            changes.push(Change {
                kind,
                name: name.to_owned(),
                previous: before.get(kind.as_str(), name).map(|(_, v)| v.clone()),
            });
        };
        for s in objects.secrets.iter().filter(|s| mine(&s.metadata)) {
            record(Kind::Secret, name_of(&s.metadata));
            self.apply(ns, s, "secret").await?;
        }
        for d in objects.deployments.iter().filter(|d| mine(&d.metadata)) {
            record(Kind::Deployment, name_of(&d.metadata));
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
        for s in objects.services.iter().filter(|s| mine(&s.metadata)) {
            record(Kind::Service, name_of(&s.metadata));
            self.apply(ns, s, "service").await?;
        }
        self.wait_rollouts(plan, &[pc], deadline, timeout, report)
            .await
    }

    /// Undoes `changes` after `failure` (the previous objects applied again,
    /// those the try created deleted); the error to report.
    async fn restore(
        &self,
        plan: &DeployPlan,
        failure: RuntimeError,
        changes: Vec<Change>,
        report: &Reporter<'_>,
    ) -> RuntimeError {
        let ns = plan.prefix.as_str();
        for c in changes.iter().rev() {
            let r = match (&c.previous, c.kind) {
                (Some(prev), Kind::Deployment) => {
                    self.apply_value::<Deployment>(ns, &c.name, prev).await
                }
                (Some(prev), Kind::Service) => self.apply_value::<Service>(ns, &c.name, prev).await,
                (Some(prev), Kind::Secret) => self.apply_value::<Secret>(ns, &c.name, prev).await,
                (None, Kind::Deployment) => self
                    .delete::<Deployment>(ns, &c.name, "deployment")
                    .await
                    .map(drop),
                (None, Kind::Service) => self
                    .delete::<Service>(ns, &c.name, "service")
                    .await
                    .map(drop),
                (None, Kind::Secret) => {
                    self.delete::<Secret>(ns, &c.name, "secret").await.map(drop)
                }
            };
            if let Err(e) = r {
                // As the Docker runtime reports it: the failure, then why
                // the previous version is not back.
                return RuntimeError::RestoreFailed {
                    failure: Box::new(failure),
                    detail: e.to_string(),
                };
            }
            if c.kind == Kind::Deployment {
                let what = if c.previous.is_some() {
                    format!(
                        "previous version of deployment {ns}/{} applied again",
                        c.name
                    )
                } else {
                    format!("deployment {ns}/{} of the failed try removed", c.name)
                };
                report.emit(Step::Remove, Some(&c.name), what).await;
            }
        }
        RuntimeError::Restored {
            failure: Box::new(failure),
        }
    }

    /// Server-side apply of a raw body (a previous version of an object).
    async fn apply_value<K>(&self, ns: &str, name: &str, body: &Value) -> Result<(), RuntimeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        self.api::<K>(ns)
            .patch(name, &apply_params(), &Patch::Apply(body))
            .await
            .map(drop)
            .map_err(|e| self.err(format!("restoring {ns}/{name}"), e))
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

    /// Deletes the objects of the plan's product in the prefix that the plan
    /// no longer has (left by its earlier deployments and tries).
    async fn remove_stale(
        &self,
        plan: &DeployPlan,
        objects: &Objects,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let ns = plan.prefix.as_str();
        // Only the product's own objects: other products share the prefix.
        let lp = ListParams::default().labels(&product_selector(
            &plan.team,
            &plan.prefix,
            &plan.product,
        ));
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
