//! The Kubernetes runtime, on the API server through kube-rs.
//!
//! Connection ([`KubeConnect`], [`load_config`]): the kubeconfig files given
//! (`--kubeconfig`, or `KUBECONFIG`, whose ':'-separated files are merged as
//! kubectl merges them), else the in-cluster service account, else
//! `~/.kube/config`; the context named by `--kube-context`, else the
//! kubeconfig's current one. The daemon loads it once when it starts.
//!
//! A deployment's prefix is a namespace (created when missing, labelled with
//! the team and prefix, and marked [`ANNOTATION_CREATED`] when shoal made
//! it). Each container of the plan becomes, in that namespace:
//! - a `Deployment` named after the container (replicas and strategy from
//!   `config.kubernetes`, env, secret env through `secretKeyRef`, command
//!   and args, ports, volumes, probes, resources, labels and annotations);
//! - a `Service` of the same name when it has ports (`ClusterIP` unless
//!   `service_type` says otherwise);
//! - a `Secret` `<container>-secrets` holding its secret env values;
//! - a `Secret` `<container>-registry` of type
//!   `kubernetes.io/dockerconfigjson` when one of its images needs a login;
//! - a `PersistentVolumeClaim` `<container>-<volume>` per `rw`/`ro` volume
//!   (`tmpfs` volumes are memory-backed `emptyDir`s).
//!
//! The objects are built by pure functions ([`build_objects`]) and written
//! with server-side apply under the field manager [`FIELD_MANAGER`], so a
//! re-deploy of the same plan changes nothing and fields other managers own
//! stay. Objects of the prefix's previous containers that are not in the plan
//! are deleted. The try then waits for every rollout to complete
//! (observed generation caught up, every replica updated and available), or
//! fails with the reason the pods of the revision being rolled out give (the
//! Deployment's newest ReplicaSet, matched by `pod-template-hash`; pods of
//! older revisions and terminating pods decide nothing): an image that
//! cannot be pulled, a crash loop, a pod that cannot be scheduled, a rollout
//! past its deadline.
//!
//! The try checks its rollouts when they change, not on a timer: it watches
//! the team's Deployments and pods in the namespace (`watch=true` from the
//! version of a list; a watch the server ends is opened again from the last
//! version seen, one whose version has expired (410 Gone) lists again), and
//! checks every rollout again on each event. A check also comes every poll
//! interval ([`DEFAULT_POLL_INTERVAL`], [`KubernetesRuntime::with_poll_interval`])
//! as a resync fallback, so a watch that is down or a server without watch
//! only makes the wait slower. The try's timeout ends the wait when it
//! comes: what the last check saw stands.
//!
//! Label values are at most 63 characters, so the team label holds the first
//! [`TEAM_LABEL_CHARS`] characters of the team id; the full id, the version
//! name and the names of the secret env keys are annotations.
//!
//! A container's runtime name is `<prefix>-<container>`, as with Docker.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, LocalObjectReference, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec,
    Probe as KubeProbe, ResourceRequirements, Secret, SecretKeySelector, SecurityContext, Service,
    ServicePort, ServiceSpec, TCPSocketAction, Volume as KubeVolume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shoal_protocol::model::{
    ContainerAction, ContainerState, ExpectedRunState, HealthCheck, NetworkMode, Probe, Protocol,
    Resources, Strategy, VolumeKind,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::debug;

use super::common::{
    Reporter, error_chain, redact_env, registry_host, runtime_from_run_methods, secret_keys,
};
use super::{
    ContainerInfo, DeployOutcome, DeployPlan, ImageSource, LABEL_CONTAINER, LABEL_DEPLOYMENT,
    LABEL_NAMESPACE, LABEL_PREFIX, LABEL_SECRET_KEYS, LABEL_TEAM, LABEL_TRY, LABEL_VERSION,
    LABEL_VOLUME, LogLine, LogSource, LogStream, PlannedContainer, ProgressEvent, PublishedPort,
    PullPolicy, Removed, RuntimeError, Step, is_dns_label, parse_cpu, parse_memory,
};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "shoal";
/// Annotation on a namespace shoal created (so removing the prefix may
/// delete the whole namespace).
pub const ANNOTATION_CREATED: &str = "io.shoal.created";
/// Annotation on a Deployment: the configured replica count, which `start`
/// scales back to.
pub const ANNOTATION_REPLICAS: &str = "io.shoal.replicas";
/// The pod template annotation a rollout restart sets (as `kubectl rollout
/// restart` does).
pub const ANNOTATION_RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Characters of the team id kept in the team label.
pub const TEAM_LABEL_CHARS: usize = 32;
/// Size of a persistent volume claim when the volume gives none.
pub const DEFAULT_VOLUME_SIZE: &str = "1Gi";
/// How long a try waits for its rollouts when no container's expected
/// state gives a timeout.
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time between two rollout checks when no watch event comes first (the
/// resync fallback).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// How long the server keeps one watch open (kube's default, under the
/// client's read timeout).
const WATCH_TIMEOUT_S: u32 = 290;
/// Time before a failed watch is tried again.
const WATCH_RETRY: Duration = Duration::from_secs(2);
/// The annotation numbering a Deployment's revisions, on the Deployment
/// (its current one) and on each of its ReplicaSets (set by the controller).
pub const ANNOTATION_REVISION: &str = "deployment.kubernetes.io/revision";
/// The label the controller puts on a ReplicaSet and its pods: the hash of
/// their pod template.
pub const LABEL_POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Suffix of the Secret holding a container's secret env values.
pub const SECRETS_SUFFIX: &str = "-secrets";
/// Suffix of a container's image pull Secret.
pub const REGISTRY_SUFFIX: &str = "-registry";
/// Docker Hub's key in a `.dockerconfigjson`.
const DOCKER_HUB_AUTH: &str = "https://index.docker.io/v1/";
/// Waiting reasons of a pod's container that fail a rollout at once.
const PULL_FAILURES: [&str; 3] = ["ImagePullBackOff", "ErrImagePull", "InvalidImageName"];
const START_FAILURES: [&str; 3] = [
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The Kubernetes runtime. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct KubernetesRuntime {
    client: Client,
    endpoint: String,
    rollout_timeout: Duration,
    poll_interval: Duration,
}

impl fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("endpoint", &self.endpoint)
            .field("rollout_timeout", &self.rollout_timeout)
            .finish_non_exhaustive()
    }
}

impl KubernetesRuntime {
    /// Connects as `connect` says (see [`load_config`]).
    pub async fn connect(connect: &KubeConnect) -> Result<Self, RuntimeError> {
        Self::from_config(load_config(connect).await?)
    }

    /// Asks the API server for its version: a cheap request that proves
    /// it answers. Returns `Kubernetes <version> at <endpoint>`.
    pub async fn ping(&self) -> Result<String, RuntimeError> {
        let v = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| RuntimeError::Kubernetes {
                context: format!("asking the cluster at {} for its version", self.endpoint),
                detail: error_chain(&e),
            })?;
        Ok(format!("Kubernetes {} at {}", v.git_version, self.endpoint))
    }

    /// A runtime on an explicit client configuration.
    pub fn from_config(config: Config) -> Result<Self, RuntimeError> {
        let endpoint = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| RuntimeError::Kubernetes {
            context: format!("connecting to the cluster at {endpoint}"),
            detail: error_chain(&e),
        })?;
        debug!(%endpoint, "Kubernetes client ready");
        Ok(Self {
            client,
            endpoint,
            rollout_timeout: DEFAULT_ROLLOUT_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
        })
    }

    /// How long a try waits for its rollouts (a container's expected-state
    /// timeout, when longer, wins).
    pub fn with_rollout_timeout(mut self, timeout: Duration) -> Self {
        self.rollout_timeout = timeout;
        self
    }

    /// Time between two rollout checks when no watch event comes first.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The API server's URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The kube client, for callers that need more of the API.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    fn err(&self, context: impl Into<String>, e: kube::Error) -> RuntimeError {
        let context = context.into();
        let detail = match &e {
            kube::Error::Api(status) if !status.message.is_empty() => {
                format!("{} ({})", status.message, status.code)
            }
            kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
            _ => format!(
                "cannot reach the API server at {}: {}",
                self.endpoint,
                error_chain(&e)
            ),
        };
        RuntimeError::Kubernetes { context, detail }
    }

    // ------------------------------------------------------------ deploy

    async fn run_deploy(
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

    async fn apply<K>(&self, ns: &str, obj: &K, kind: &str) -> Result<K, RuntimeError>
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
    async fn delete<K>(&self, ns: &str, name: &str, kind: &str) -> Result<bool, RuntimeError>
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

    async fn wait_rollouts(
        &self,
        plan: &DeployPlan,
        timeout: Duration,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let ns = plan.prefix.as_str();
        let started = Instant::now();
        let mut pending: Vec<&PlannedContainer> = plan.containers.iter().collect();
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        // Started before the first check: its list brings a check of its
        // own, and every change after that list an event.
        let changes = ChangeWatch::start(
            &self.client,
            ns,
            &format!("{},{LABEL_PREFIX}={ns}", team_selector(&plan.team)),
        );
        report
            .emit(
                Step::Wait,
                None,
                format!("waiting for the rollouts of {ns}"),
            )
            .await;
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
            let left = timeout.saturating_sub(started.elapsed());
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

    // ------------------------------------------------------------ commands

    /// Finds a team's Deployment by runtime name `<prefix>-<container>`.
    async fn resolve(&self, team: &str, name: &str) -> Result<Deployment, RuntimeError> {
        let all: Api<Deployment> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default().labels(&team_selector(team)))
            .await
            .map_err(|e| self.err("listing the team's deployments", e))?;
        list.items
            .into_iter()
            .find(|d| runtime_name(d).as_deref() == Some(name))
            .ok_or_else(|| RuntimeError::ContainerNotFound {
                name: name.to_owned(),
            })
    }

    async fn run_containers(
        &self,
        team: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let lp = ListParams::default().labels(&team_selector(team));
        let (deployments, sets, pods) = match prefix {
            Some(ns) => (
                self.api::<Deployment>(ns).list(&lp).await,
                self.api::<ReplicaSet>(ns).list(&lp).await,
                self.api::<Pod>(ns).list(&lp).await,
            ),
            None => (
                Api::<Deployment>::all(self.client.clone()).list(&lp).await,
                Api::<ReplicaSet>::all(self.client.clone()).list(&lp).await,
                Api::<Pod>::all(self.client.clone()).list(&lp).await,
            ),
        };
        let deployments = deployments.map_err(|e| self.err("listing the team's deployments", e))?;
        let sets = sets.map_err(|e| self.err("listing the team's replica sets", e))?;
        let pods = pods.map_err(|e| self.err("listing the team's pods", e))?;
        let mut out: Vec<ContainerInfo> = deployments
            .items
            .iter()
            .filter_map(|d| container_info(d, &sets.items, &pods.items))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn run_command(
        &self,
        team: &str,
        name: &str,
        action: ContainerAction,
    ) -> Result<(), RuntimeError> {
        let d = self.resolve(team, name).await?;
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let dname = name_of(&d.metadata).to_owned();
        let api = self.api::<Deployment>(&ns);
        let merge = |patch: Value| {
            let api = api.clone();
            let dname = dname.clone();
            async move {
                api.patch(&dname, &merge_params(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
        };
        let context = format!("{} deployment {ns}/{dname}", action.as_str());
        match action {
            ContainerAction::Start => {
                let replicas = configured_replicas(&d);
                merge(json!({ "spec": { "replicas": replicas } }))
                    .await
                    .map_err(|e| self.err(context, e))
            }
            ContainerAction::Stop => merge(json!({ "spec": { "replicas": 0 } }))
                .await
                .map_err(|e| self.err(context, e)),
            ContainerAction::Restart => {
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                merge(
                    json!({ "spec": { "template": { "metadata": { "annotations": {
                    ANNOTATION_RESTARTED_AT: now
                } } } } }),
                )
                .await
                .map_err(|e| self.err(context, e))
            }
            ContainerAction::Remove => {
                self.delete::<Deployment>(&ns, &dname, "deployment").await?;
                self.delete::<Service>(&ns, &dname, "service").await?;
                self.delete::<Secret>(&ns, &format!("{dname}{SECRETS_SUFFIX}"), "secret")
                    .await?;
                self.delete::<Secret>(&ns, &format!("{dname}{REGISTRY_SUFFIX}"), "secret")
                    .await?;
                Ok(())
            }
        }
    }

    async fn run_logs(
        &self,
        team: &str,
        name: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<LogStream, RuntimeError> {
        let d = self.resolve(team, name).await?;
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let container = label_of(&d.metadata, LABEL_CONTAINER).unwrap_or_default();
        let prefix = label_of(&d.metadata, LABEL_PREFIX).unwrap_or_default();
        let pods = self
            .api::<Pod>(&ns)
            .list(&ListParams::default().labels(&container_selector(team, &prefix, &container)))
            .await
            .map_err(|e| self.err(format!("listing pods of {name}"), e))?;
        // The newest running pod, else the newest one.
        let mut items = pods.items;
        items.sort_by(|a, b| {
            let key = |p: &Pod| {
                (
                    pod_phase(p) == "Running",
                    p.metadata.creation_timestamp.clone(),
                    p.metadata.name.clone(),
                )
            };
            key(b).cmp(&key(a))
        });
        let pod = items
            .into_iter()
            .next()
            .ok_or_else(|| RuntimeError::Kubernetes {
                context: format!("reading the logs of {name}"),
                detail: "it has no pod (is it stopped?)".into(),
            })?;
        let lp = LogParams {
            container: Some(container),
            follow,
            tail_lines: tail.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            ..LogParams::default()
        };
        let pod_name = name_of(&pod.metadata).to_owned();
        let reader = self
            .api::<Pod>(&ns)
            .log_stream(&pod_name, &lp)
            .await
            .map_err(|e| self.err(format!("reading the logs of pod {ns}/{pod_name}"), e))?;
        let context = format!("reading the logs of pod {ns}/{pod_name}");
        Ok(reader
            .lines()
            .map(move |line| match line {
                Ok(text) => Ok(LogLine {
                    source: LogSource::Console,
                    text,
                }),
                Err(e) => Err(RuntimeError::Kubernetes {
                    context: context.clone(),
                    detail: e.to_string(),
                }),
            })
            .boxed())
    }

    async fn run_inspect(&self, team: &str, name: &str) -> Result<Value, RuntimeError> {
        let d = self.resolve(team, name).await?;
        let secret_keys = secret_keys(
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LABEL_SECRET_KEYS)),
        );
        let mut v = serde_json::to_value(&d).map_err(|e| RuntimeError::Kubernetes {
            context: format!("describing {name}"),
            detail: e.to_string(),
        })?;
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        redact_env(&mut v, &secret_keys);
        Ok(v)
    }

    async fn run_remove_prefix(&self, team: &str, prefix: &str) -> Result<Removed, RuntimeError> {
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        let Some(ns) = ns_api
            .get_opt(prefix)
            .await
            .map_err(|e| self.err(format!("reading namespace {prefix}"), e))?
        else {
            return Ok(Removed::default());
        };
        let lp = ListParams::default().labels(&team_selector(team));
        let deployments = self
            .api::<Deployment>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing deployments of {prefix}"), e))?;
        let claims = self
            .api::<PersistentVolumeClaim>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing volume claims of {prefix}"), e))?;
        let mut removed = Removed {
            containers: deployments.items.iter().filter_map(runtime_name).collect(),
            networks: Vec::new(),
            volumes: claims
                .items
                .iter()
                .map(|c| name_of(&c.metadata).to_owned())
                .collect(),
        };
        let ours = label_of(&ns.metadata, LABEL_TEAM).as_deref() == Some(team_label(team).as_str());
        if ours && created_by_shoal(&ns) {
            match ns_api.delete(prefix, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(self.err(format!("deleting namespace {prefix}"), e)),
            }
            removed.networks.push(prefix.to_owned());
            return Ok(removed);
        }
        for d in &deployments.items {
            self.delete::<Deployment>(prefix, name_of(&d.metadata), "deployment")
                .await?;
        }
        let services = self
            .api::<Service>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing services of {prefix}"), e))?;
        for s in &services.items {
            self.delete::<Service>(prefix, name_of(&s.metadata), "service")
                .await?;
        }
        let secrets = self
            .api::<Secret>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing secrets of {prefix}"), e))?;
        for s in &secrets.items {
            self.delete::<Secret>(prefix, name_of(&s.metadata), "secret")
                .await?;
        }
        for c in &claims.items {
            self.delete::<PersistentVolumeClaim>(prefix, name_of(&c.metadata), "volume claim")
                .await?;
        }
        Ok(removed)
    }
}

runtime_from_run_methods!(KubernetesRuntime);

// --------------------------------------------------------------------- watch

/// Wakes a waiting try when an object it watches changes: one watch of
/// Deployments and one of pods in a namespace, re-established when the
/// server ends them; stopped when dropped.
struct ChangeWatch {
    changed: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl ChangeWatch {
    fn start(client: &Client, ns: &str, selector: &str) -> Self {
        let changed = Arc::new(Notify::new());
        let tasks = vec![
            tokio::spawn(watch_kind(
                Api::<Deployment>::namespaced(client.clone(), ns),
                selector.to_owned(),
                changed.clone(),
            )),
            tokio::spawn(watch_kind(
                Api::<Pod>::namespaced(client.clone(), ns),
                selector.to_owned(),
                changed.clone(),
            )),
        ];
        Self { changed, tasks }
    }

    /// Returns once something changed since the last call (at once when it
    /// already has: many changes make one wake-up).
    async fn changed(&self) {
        self.changed.notified().await;
    }
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How a watch of one kind ended.
enum WatchEnd {
    /// The server closed it (its timeout): watch again from the last
    /// version seen.
    Closed,
    /// The version is older than the server keeps (410 Gone): list again.
    Expired,
    /// Any other error: list again after [`WATCH_RETRY`].
    Failed,
}

/// Watches the objects of `api` matching `selector` for as long as the
/// task lives, notifying `changed` on every change.
async fn watch_kind<K>(api: Api<K>, selector: String, changed: Arc<Notify>)
where
    K: kube::Resource + Clone + DeserializeOwned + fmt::Debug + Send + 'static,
{
    loop {
        // The version to watch from. Changes made while no watch was open
        // are not seen, so the waiting try checks again.
        let lp = ListParams::default().labels(&selector).limit(1);
        let mut version = match api.list(&lp).await {
            Ok(list) => list.metadata.resource_version.unwrap_or_default(),
            Err(e) => {
                debug!(error = %error_chain(&e), "cannot list for a watch; retrying");
                tokio::time::sleep(WATCH_RETRY).await;
                continue;
            }
        };
        changed.notify_one();
        loop {
            let opened = Instant::now();
            match watch_once(&api, &selector, &mut version, &changed).await {
                WatchEnd::Closed => {
                    // A server that ends watches at once must not make a
                    // busy loop.
                    if let Some(rest) = WATCH_RETRY.checked_sub(opened.elapsed()) {
                        tokio::time::sleep(rest).await;
                    }
                }
                WatchEnd::Expired => break,
                WatchEnd::Failed => {
                    tokio::time::sleep(WATCH_RETRY).await;
                    break;
                }
            }
        }
    }
}

/// One watch request from `version`, which follows the events.
async fn watch_once<K>(
    api: &Api<K>,
    selector: &str,
    version: &mut String,
    changed: &Notify,
) -> WatchEnd
where
    K: kube::Resource + Clone + DeserializeOwned + fmt::Debug + Send + 'static,
{
    let wp = WatchParams::default()
        .labels(selector)
        .timeout(WATCH_TIMEOUT_S);
    let stream = match api.watch(&wp, version).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 410 => return WatchEnd::Expired,
        Err(e) => {
            debug!(error = %error_chain(&e), "cannot watch; retrying");
            return WatchEnd::Failed;
        }
    };
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => {
                if let Some(v) = o.meta().resource_version.clone() {
                    *version = v;
                }
                changed.notify_one();
            }
            Ok(WatchEvent::Bookmark(b)) => *version = b.metadata.resource_version,
            Ok(WatchEvent::Error(s)) if s.code == 410 => return WatchEnd::Expired,
            Err(kube::Error::Api(s)) if s.code == 410 => return WatchEnd::Expired,
            Ok(WatchEvent::Error(s)) => {
                debug!(code = s.code, message = %s.message, "the watch failed; retrying");
                return WatchEnd::Failed;
            }
            Err(e) => {
                debug!(error = %error_chain(&e), "the watch failed; retrying");
                return WatchEnd::Failed;
            }
        }
    }
    WatchEnd::Closed
}

// ---------------------------------------------------------------- connection

/// Where the kubernetes runtime finds its cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeConnect {
    /// Kubeconfig files, merged in order as kubectl merges `KUBECONFIG`
    /// (the first file to set a value or name wins). Empty: the in-cluster
    /// service account, else `~/.kube/config`.
    pub kubeconfig: Vec<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    pub context: Option<String>,
}

impl KubeConnect {
    /// The files of a `KUBECONFIG`-style list (separated by ':'; empty
    /// entries are ignored).
    pub fn split_list(list: &OsStr) -> Vec<PathBuf> {
        std::env::split_paths(list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect()
    }
}

/// Where a connection is loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeSource {
    /// The kubeconfig files given, merged.
    Files(Vec<PathBuf>),
    /// The pod's service account.
    InCluster,
    /// `~/.kube/config`.
    DefaultFile(PathBuf),
}

impl fmt::Display for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Files(files) => {
                let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
                write!(f, "the kubeconfig {}", names.join(":"))
            }
            Self::InCluster => f.write_str("the in-cluster service account"),
            Self::DefaultFile(p) => write!(f, "the default kubeconfig {}", p.display()),
        }
    }
}

/// Chooses where to connect from: the files given, else the in-cluster
/// service account when the node runs in a pod (`in_cluster`) and no
/// context is named (a service account has no contexts), else the default
/// kubeconfig. Pure; [`load_config`] looks at the machine.
pub fn choose_source(
    connect: &KubeConnect,
    in_cluster: bool,
    default_file: Option<PathBuf>,
) -> Result<KubeSource, RuntimeError> {
    if !connect.kubeconfig.is_empty() {
        return Ok(KubeSource::Files(connect.kubeconfig.clone()));
    }
    if in_cluster && connect.context.is_none() {
        return Ok(KubeSource::InCluster);
    }
    match default_file {
        Some(p) => Ok(KubeSource::DefaultFile(p)),
        None => Err(RuntimeError::KubeConfig {
            origin: "this machine".into(),
            detail: if connect.context.is_some() {
                "a context is named, but no kubeconfig is given and ~/.kube/config does not exist"
                    .into()
            } else {
                "no kubeconfig is given, ~/.kube/config does not exist, and the node does not run in a cluster".into()
            },
        }),
    }
}

/// True when the node runs in a pod with a service account (as client-go
/// decides: the service host and port are set and the token is mounted).
fn in_cluster_possible() -> bool {
    const TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"]
        .iter()
        .all(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
        && Path::new(TOKEN).is_file()
}

fn default_kubeconfig() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let p = PathBuf::from(home).join(".kube").join("config");
    p.is_file().then_some(p)
}

/// Loads the client configuration `connect` describes (see
/// [`choose_source`]). Every failure is a [`RuntimeError::KubeConfig`]
/// that names the source.
pub async fn load_config(connect: &KubeConnect) -> Result<Config, RuntimeError> {
    let source = choose_source(connect, in_cluster_possible(), default_kubeconfig())?;
    let fail = |detail: String| RuntimeError::KubeConfig {
        origin: source.to_string(),
        detail,
    };
    let files = match &source {
        KubeSource::InCluster => {
            return Config::incluster().map_err(|e| fail(error_chain(&e)));
        }
        KubeSource::Files(files) => files.clone(),
        KubeSource::DefaultFile(p) => vec![p.clone()],
    };
    let merged = merge_kubeconfigs(&files).map_err(fail)?;
    if let Some(name) = &connect.context
        && !merged.contexts.iter().any(|c| &c.name == name)
    {
        let known: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(fail(format!(
            "it has no context {name:?} (its contexts: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    if connect.context.is_none() && merged.current_context.is_none() {
        return Err(fail(
            "it sets no current-context: name one with --kube-context".into(),
        ));
    }
    let options = KubeConfigOptions {
        context: connect.context.clone(),
        ..KubeConfigOptions::default()
    };
    Config::from_custom_kubeconfig(merged, &options)
        .await
        .map_err(|e| fail(error_chain(&e)))
}

/// Reads and merges kubeconfig files as kubectl merges `KUBECONFIG`: in
/// order, the first to set a value wins; in a list of several, a file that
/// does not exist is skipped, but one of them must.
fn merge_kubeconfigs(files: &[PathBuf]) -> Result<Kubeconfig, String> {
    let mut merged: Option<Kubeconfig> = None;
    let which = |path: &Path, e: &dyn std::error::Error| {
        if files.len() > 1 {
            format!("{}: {}", path.display(), error_chain(e))
        } else {
            error_chain(e)
        }
    };
    for path in files {
        if files.len() > 1 && !path.exists() {
            debug!(path = %path.display(), "kubeconfig in the list does not exist; skipped");
            continue;
        }
        let file = Kubeconfig::read_from(path).map_err(|e| which(path, &e))?;
        merged = Some(match merged {
            None => file,
            Some(m) => m.merge(file).map_err(|e| which(path, &e))?,
        });
    }
    merged.ok_or_else(|| "none of these files exists".to_owned())
}

// ---------------------------------------------------------------- builders

/// Every object of one deployment, in the order they are applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub namespace: Namespace,
    /// Secret env values and image pull secrets.
    pub secrets: Vec<Secret>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
}

/// Builds every object of a plan. Pure: nothing is touched, and an invalid
/// plan or config is refused before anything is applied.
pub fn build_objects(plan: &DeployPlan) -> Result<Objects, RuntimeError> {
    if !is_dns_label(&plan.prefix) {
        return Err(RuntimeError::InvalidPlan {
            reason: format!("prefix {:?} is not a DNS label", plan.prefix),
        });
    }
    if plan.containers.is_empty() {
        return Err(RuntimeError::InvalidPlan {
            reason: "the plan has no containers".into(),
        });
    }
    let mut seen = BTreeSet::new();
    for pc in &plan.containers {
        if !seen.insert(pc.name.as_str()) {
            return Err(RuntimeError::InvalidPlan {
                reason: format!("container {} appears twice", pc.name),
            });
        }
    }
    let mut out = Objects {
        namespace: Namespace {
            metadata: ObjectMeta {
                name: Some(plan.prefix.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_TEAM.to_owned(), team_label(&plan.team)),
                    (LABEL_PREFIX.to_owned(), plan.prefix.clone()),
                ])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        },
        ..Objects::default()
    };
    for pc in &plan.containers {
        build_container(plan, pc, &mut out)?;
    }
    Ok(out)
}

fn invalid(pc: &PlannedContainer, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidConfig {
        container: pc.name.clone(),
        reason: reason.into(),
    }
}

fn build_container(
    plan: &DeployPlan,
    pc: &PlannedContainer,
    out: &mut Objects,
) -> Result<(), RuntimeError> {
    let name = pc.name.as_str();
    // `<name>-registry` must stay a valid Secret name, and the Service a DNS label.
    if !is_dns_label(name) || name.len() > 63 - REGISTRY_SUFFIX.len() {
        return Err(invalid(
            pc,
            format!(
                "{name:?} cannot name Kubernetes objects: use lowercase letters, digits and '-', at most {} characters",
                63 - REGISTRY_SUFFIX.len()
            ),
        ));
    }
    let cfg = &pc.config;
    let kube_cfg = cfg.kubernetes.clone().unwrap_or_default();
    if cfg
        .expected
        .as_ref()
        .is_some_and(|e| e.state == ExpectedRunState::Exited)
    {
        return Err(invalid(
            pc,
            "a container expected to exit cannot run as a Kubernetes Deployment",
        ));
    }
    let per_kind = |m: &BTreeMap<String, BTreeMap<String, String>>, kinds: &[&str]| {
        let mut out = BTreeMap::new();
        for k in kinds {
            if let Some(x) = m.get(*k) {
                out.extend(x.clone());
            }
        }
        out
    };
    for (kind, labels) in &kube_cfg.labels {
        for (k, v) in labels {
            if !is_label_key(k) || !is_label_value(v) {
                return Err(invalid(
                    pc,
                    format!("kubernetes label {k}={v:?} on {kind} is not a valid Kubernetes label"),
                ));
            }
        }
    }

    let selector = BTreeMap::from([
        (LABEL_TEAM.to_owned(), team_label(&plan.team)),
        (LABEL_PREFIX.to_owned(), plan.prefix.clone()),
        (LABEL_CONTAINER.to_owned(), name.to_owned()),
    ]);
    // Config labels: Kubernetes labels where they are valid ones, annotations otherwise.
    let mut config_labels = BTreeMap::new();
    let mut config_annotations = BTreeMap::new();
    for (k, v) in &cfg.labels {
        if k.starts_with(LABEL_NAMESPACE) {
            continue;
        }
        if is_label_key(k) && is_label_value(v) {
            config_labels.insert(k.clone(), v.clone());
        } else {
            config_annotations.insert(k.clone(), v.clone());
        }
    }
    let object_labels = |kinds: &[&str]| {
        let mut l = per_kind(&kube_cfg.labels, kinds);
        l.extend(selector.clone());
        l
    };
    let object_annotations = |kinds: &[&str]| {
        let mut a = per_kind(&kube_cfg.annotations, kinds);
        a.insert(LABEL_TEAM.to_owned(), plan.team.clone());
        a
    };
    let meta = |obj_name: String, kinds: &[&str]| ObjectMeta {
        name: Some(obj_name),
        namespace: Some(plan.prefix.clone()),
        labels: Some(object_labels(kinds)),
        annotations: Some(object_annotations(kinds)),
        ..ObjectMeta::default()
    };

    // Env: plain values with {{version}} expanded, then secrets by reference.
    let secret_name = format!("{name}{SECRETS_SUFFIX}");
    let mut env: BTreeMap<&str, EnvVar> = BTreeMap::new();
    for (k, v) in &cfg.env {
        env.insert(
            k.as_str(),
            EnvVar {
                name: k.clone(),
                value: Some(v.replace("{{version}}", &plan.version)),
                ..EnvVar::default()
            },
        );
    }
    for k in pc.secrets.keys() {
        env.insert(
            k,
            EnvVar {
                name: k.to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret_name.clone(),
                        key: k.to_owned(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        );
    }
    let env: Vec<EnvVar> = env.into_values().collect();
    if !pc.secrets.0.is_empty() {
        out.secrets.push(Secret {
            metadata: meta(secret_name, &["secret"]),
            type_: Some("Opaque".into()),
            data: Some(
                pc.secrets
                    .0
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        });
    }

    // Image pull secret: one per container, for every image that needs a login.
    let init_sources = cfg
        .init_containers
        .iter()
        .map(|i| {
            pc.init_images
                .get(&i.name)
                .ok_or_else(|| RuntimeError::InvalidPlan {
                    reason: format!("init container {} of {name} has no resolved image", i.name),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut auths = BTreeMap::new();
    for src in std::iter::once(&pc.image).chain(init_sources.iter().copied()) {
        if let Some(c) = &src.credentials {
            auths.insert(
                registry_host(&src.reference, DOCKER_HUB_AUTH),
                json!({
                    "username": c.user,
                    "password": c.password,
                    "auth": base64(format!("{}:{}", c.user, c.password).as_bytes()),
                }),
            );
        }
    }
    let pull_secrets = if auths.is_empty() {
        None
    } else {
        let pull_name = format!("{name}{REGISTRY_SUFFIX}");
        let body = serde_json::to_vec(&json!({ "auths": auths })).unwrap_or_default();
        out.secrets.push(Secret {
            metadata: meta(pull_name.clone(), &["secret"]),
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                ByteString(body),
            )])),
            ..Secret::default()
        });
        Some(vec![LocalObjectReference { name: pull_name }])
    };

    // Volumes.
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for v in &cfg.volumes {
        if v.name.starts_with('/') {
            return Err(invalid(
                pc,
                format!(
                    "volume {}: host paths cannot be mounted on Kubernetes",
                    v.name
                ),
            ));
        }
        let claim = format!("{name}-{}", v.name);
        if !is_dns_label(&v.name) || claim.len() > 253 {
            return Err(invalid(
                pc,
                format!(
                    "volume name {:?} is not a DNS label (lowercase letters, digits, '-')",
                    v.name
                ),
            ));
        }
        let size = match &v.size {
            Some(s) => Some(
                memory_quantity(s).map_err(|e| invalid(pc, format!("volume {}: {e}", v.name)))?,
            ),
            None => None,
        };
        let source = match v.kind {
            VolumeKind::Tmpfs => KubeVolume {
                name: v.name.clone(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: size,
                    ..EmptyDirVolumeSource::default()
                }),
                ..KubeVolume::default()
            },
            VolumeKind::Rw | VolumeKind::Ro => {
                let mut labels = object_labels(&["persistentvolumeclaim"]);
                labels.insert(LABEL_VOLUME.to_owned(), v.name.clone());
                out.claims.push(PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        labels: Some(labels),
                        ..meta(claim.clone(), &["persistentvolumeclaim"])
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_owned(),
                                size.unwrap_or_else(|| Quantity(DEFAULT_VOLUME_SIZE.into())),
                            )])),
                            ..VolumeResourceRequirements::default()
                        }),
                        ..PersistentVolumeClaimSpec::default()
                    }),
                    ..PersistentVolumeClaim::default()
                });
                KubeVolume {
                    name: v.name.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim,
                        read_only: (v.kind == VolumeKind::Ro).then_some(true),
                    }),
                    ..KubeVolume::default()
                }
            }
        };
        volumes.push(source);
        mounts.push(VolumeMount {
            name: v.name.clone(),
            mount_path: v.path.clone(),
            read_only: (v.kind == VolumeKind::Ro).then_some(true),
            ..VolumeMount::default()
        });
    }

    // Ports: every port and every port of each range.
    let mut ports: Vec<(u16, u16, Protocol)> = cfg
        .ports
        .iter()
        .map(|p| (p.internal, p.external.unwrap_or(p.internal), p.protocol))
        .collect();
    for r in &cfg.port_ranges {
        if r.internal_to < r.internal_from {
            return Err(invalid(
                pc,
                format!("port range {}-{} is empty", r.internal_from, r.internal_to),
            ));
        }
        for (k, internal) in (r.internal_from..=r.internal_to).enumerate() {
            let external = u16::try_from(usize::from(r.external_from) + k).unwrap_or(internal);
            ports.push((internal, external, r.protocol));
        }
    }
    let container_ports: Vec<ContainerPort> = ports
        .iter()
        .map(|(internal, _, proto)| ContainerPort {
            container_port: i32::from(*internal),
            protocol: Some(kube_protocol(*proto).into()),
            ..ContainerPort::default()
        })
        .collect();

    // Probes: the configured ones; the Docker health check stands in for a
    // missing readiness probe.
    let probe = |p: &Option<Probe>, what: &str| -> Result<Option<KubeProbe>, RuntimeError> {
        p.as_ref()
            .map(|p| build_probe(p, ports.first().map(|x| x.0)))
            .transpose()
            .map_err(|e| invalid(pc, format!("{what} probe: {e}")))
    };
    let readiness = match probe(&kube_cfg.readiness, "readiness")? {
        Some(p) => Some(p),
        None => cfg.health.as_ref().and_then(health_probe),
    };

    // Resources: requests as configured; limits as configured, else the
    // container-wide cpu/memory.
    let requests = resource_map(kube_cfg.requests.as_ref()).map_err(|e| invalid(pc, e))?;
    let limits_src = kube_cfg.limits.clone().unwrap_or(Resources {
        cpu: cfg.cpu.clone(),
        memory: cfg.memory.clone(),
    });
    let limits = resource_map(Some(&limits_src)).map_err(|e| invalid(pc, e))?;
    let resources = (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
        requests,
        limits,
        ..ResourceRequirements::default()
    });

    let security_context = match &cfg.user {
        None => None,
        Some(u) => {
            let (user, group) = match u.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (u.as_str(), None),
            };
            let num = |s: &str| {
                s.parse::<i64>().map_err(|_| {
                    invalid(
                        pc,
                        format!("user {u:?}: Kubernetes needs a numeric uid[:gid]"),
                    )
                })
            };
            Some(SecurityContext {
                run_as_user: Some(num(user)?),
                run_as_group: group.map(num).transpose()?,
                ..SecurityContext::default()
            })
        }
    };

    let pull_policy = |src: &ImageSource| match src.pull {
        PullPolicy::IfChanged => "Always",
        PullPolicy::Never => "Never",
    };
    let init_containers: Vec<Container> = cfg
        .init_containers
        .iter()
        .zip(init_sources.iter().copied())
        .map(|(i, src)| Container {
            name: format!("init-{}", i.name),
            image: Some(src.reference.clone()),
            image_pull_policy: Some(pull_policy(src).into()),
            command: (!i.command.is_empty()).then(|| i.command.clone()),
            args: (!i.args.is_empty()).then(|| i.args.clone()),
            env: (!i.env.is_empty()).then(|| {
                i.env
                    .iter()
                    .map(|(k, v)| EnvVar {
                        name: k.clone(),
                        value: Some(v.replace("{{version}}", &plan.version)),
                        ..EnvVar::default()
                    })
                    .collect()
            }),
            volume_mounts: (!mounts.is_empty()).then(|| mounts.clone()),
            ..Container::default()
        })
        .collect();
    let tty = cfg.tty.unwrap_or(false);
    let container = Container {
        name: name.to_owned(),
        image: Some(pc.image.reference.clone()),
        image_pull_policy: Some(pull_policy(&pc.image).into()),
        command: cfg.command.clone(),
        args: cfg.args.clone(),
        working_dir: cfg.working_dir.clone(),
        env: (!env.is_empty()).then_some(env),
        ports: (!container_ports.is_empty()).then_some(container_ports),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        liveness_probe: probe(&kube_cfg.liveness, "liveness")?,
        readiness_probe: readiness,
        startup_probe: probe(&kube_cfg.startup, "startup")?,
        resources,
        security_context,
        tty: tty.then_some(true),
        stdin: tty.then_some(true),
        ..Container::default()
    };

    let replicas = kube_cfg.replicas.unwrap_or(1);
    let strategy = match kube_cfg.strategy.unwrap_or(Strategy::Rolling) {
        Strategy::Rolling => DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::String("25%".into())),
                max_unavailable: Some(IntOrString::String("25%".into())),
            }),
        },
        Strategy::Recreate => DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        },
    };
    let mut pod_labels = config_labels.clone();
    pod_labels.extend(object_labels(&["pod"]));
    let mut pod_annotations = config_annotations.clone();
    pod_annotations.extend(per_kind(&kube_cfg.annotations, &["pod"]));

    let mut dep_labels = config_labels;
    dep_labels.extend(object_labels(&["deployment"]));
    dep_labels.insert(LABEL_DEPLOYMENT.to_owned(), plan.deployment.clone());
    dep_labels.insert(LABEL_TRY.to_owned(), plan.try_number.to_string());
    if is_label_value(&plan.version) {
        dep_labels.insert(LABEL_VERSION.to_owned(), plan.version.clone());
    }
    let mut dep_annotations = config_annotations;
    dep_annotations.extend(object_annotations(&["deployment"]));
    dep_annotations.insert(LABEL_VERSION.to_owned(), plan.version.clone());
    dep_annotations.insert(ANNOTATION_REPLICAS.to_owned(), replicas.to_string());
    let secret_keys: Vec<&str> = pc.secrets.keys().collect();
    if !secret_keys.is_empty() {
        dep_annotations.insert(LABEL_SECRET_KEYS.to_owned(), secret_keys.join(","));
    }
    out.deployments.push(Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(plan.prefix.clone()),
            labels: Some(dep_labels),
            annotations: Some(dep_annotations),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    image_pull_secrets: pull_secrets,
                    host_network: (cfg.network_mode == Some(NetworkMode::Host)).then_some(true),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    });

    if !ports.is_empty() {
        let service_type = kube_cfg
            .service_type
            .clone()
            .unwrap_or_else(|| "ClusterIP".into());
        if !["ClusterIP", "NodePort", "LoadBalancer"].contains(&service_type.as_str()) {
            return Err(invalid(
                pc,
                format!("service type {service_type:?}: use ClusterIP, NodePort or LoadBalancer"),
            ));
        }
        out.services.push(Service {
            metadata: meta(name.to_owned(), &["service"]),
            spec: Some(ServiceSpec {
                type_: Some(service_type),
                selector: Some(selector),
                ports: Some(
                    ports
                        .iter()
                        .map(|(internal, external, proto)| ServicePort {
                            name: Some(format!("{}-{internal}", proto_name(*proto))),
                            port: i32::from(*external),
                            target_port: Some(IntOrString::Int(i32::from(*internal))),
                            protocol: Some(kube_protocol(*proto).into()),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        });
    }
    Ok(())
}

fn build_probe(p: &Probe, first_port: Option<u16>) -> Result<KubeProbe, String> {
    let port = p.port.or(first_port);
    let mut out = KubeProbe {
        period_seconds: p.period_s.map(|x| i32::try_from(x).unwrap_or(i32::MAX)),
        initial_delay_seconds: p
            .initial_delay_s
            .map(|x| i32::try_from(x).unwrap_or(i32::MAX)),
        failure_threshold: p
            .failure_threshold
            .map(|x| i32::try_from(x).unwrap_or(i32::MAX)),
        ..KubeProbe::default()
    };
    if !p.command.is_empty() {
        out.exec = Some(ExecAction {
            command: Some(p.command.clone()),
        });
    } else if let Some(path) = &p.http_path {
        let port = port.ok_or("an HTTP probe needs a port (the container has none)")?;
        out.http_get = Some(HTTPGetAction {
            path: Some(path.clone()),
            port: IntOrString::Int(i32::from(port)),
            ..HTTPGetAction::default()
        });
    } else if let Some(port) = p.port {
        out.tcp_socket = Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        });
    } else {
        return Err("give a command, an HTTP path or a port".into());
    }
    Ok(out)
}

/// The Docker health check as an exec probe: `CMD` runs its arguments,
/// `CMD-SHELL` runs them with `/bin/sh -c`, `NONE` has no probe.
fn health_probe(h: &HealthCheck) -> Option<KubeProbe> {
    let command = match h.command.first().map(String::as_str) {
        None | Some("NONE") => return None,
        Some("CMD") => h.command[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), h.command[1..].join(" ")],
        Some(_) => h.command.clone(),
    };
    let secs =
        |ms: Option<u64>| ms.map(|ms| i32::try_from(ms.div_ceil(1000).max(1)).unwrap_or(i32::MAX));
    Some(KubeProbe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        period_seconds: secs(h.interval_ms),
        timeout_seconds: secs(h.timeout_ms),
        failure_threshold: h.retries.map(|r| i32::try_from(r).unwrap_or(i32::MAX)),
        initial_delay_seconds: secs(h.start_period_ms),
        ..KubeProbe::default()
    })
}

fn resource_map(r: Option<&Resources>) -> Result<Option<BTreeMap<String, Quantity>>, String> {
    let Some(r) = r else { return Ok(None) };
    let mut m = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        m.insert("cpu".to_owned(), cpu_quantity(cpu)?);
    }
    if let Some(mem) = &r.memory {
        m.insert("memory".to_owned(), memory_quantity(mem)?);
    }
    Ok((!m.is_empty()).then_some(m))
}

/// A CPU amount as a Kubernetes quantity: whole CPUs (`"2"`) or
/// millicores (`"500m"`).
pub fn cpu_quantity(s: &str) -> Result<Quantity, String> {
    let nanos = parse_cpu(s)?;
    let milli = (nanos + 500_000) / 1_000_000;
    if milli < 1 {
        return Err(format!("cpu {s:?}: less than 1m"));
    }
    if milli % 1000 == 0 {
        return Ok(Quantity((milli / 1000).to_string()));
    }
    Ok(Quantity(format!("{milli}m")))
}

/// A memory size as a Kubernetes quantity in the largest binary unit that
/// divides it (`"256Mi"`, `"1Gi"`, else bytes).
pub fn memory_quantity(s: &str) -> Result<Quantity, String> {
    let bytes = parse_memory(s)?;
    for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes % (1i64 << shift) == 0 {
            return Ok(Quantity(format!("{}{unit}", bytes >> shift)));
        }
    }
    Ok(Quantity(bytes.to_string()))
}

fn kube_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The team label's value: the team id, cut to fit a label value.
pub fn team_label(team: &str) -> String {
    if is_label_value(team) {
        team.to_owned()
    } else {
        team.chars().take(TEAM_LABEL_CHARS).collect()
    }
}

fn team_selector(team: &str) -> String {
    format!("{LABEL_TEAM}={}", team_label(team))
}

fn container_selector(team: &str, prefix: &str, container: &str) -> String {
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

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

fn name_of(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or_default()
}

fn label_of(m: &ObjectMeta, key: &str) -> Option<String> {
    m.labels.as_ref()?.get(key).cloned()
}

/// `<prefix>-<container>` of a Deployment shoal made.
fn runtime_name(d: &Deployment) -> Option<String> {
    let prefix = label_of(&d.metadata, LABEL_PREFIX)?;
    let container = label_of(&d.metadata, LABEL_CONTAINER)?;
    Some(format!("{prefix}-{container}"))
}

fn created_by_shoal(ns: &Namespace) -> bool {
    ns.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CREATED))
        .is_some_and(|v| v == "true")
}

fn mark_created(ns: &mut Namespace) {
    ns.metadata
        .annotations
        .get_or_insert_default()
        .insert(ANNOTATION_CREATED.into(), "true".into());
}

fn configured_replicas(d: &Deployment) -> i32 {
    d.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REPLICAS))
        .and_then(|r| r.parse::<i32>().ok())
        .filter(|r| *r > 0)
        .unwrap_or(1)
}

fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Unknown")
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

fn container_info(d: &Deployment, sets: &[ReplicaSet], pods: &[Pod]) -> Option<ContainerInfo> {
    let prefix = label_of(&d.metadata, LABEL_PREFIX)?;
    let container = label_of(&d.metadata, LABEL_CONTAINER)?;
    let want = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let available = st.available_replicas.unwrap_or(0);
    // The pods of the current revision (none while it is being made).
    let hash = current_revision_hash(d, sets);
    let own: Vec<Pod> = pods
        .iter()
        .filter(|p| {
            label_of(&p.metadata, LABEL_PREFIX).as_deref() == Some(prefix.as_str())
                && label_of(&p.metadata, LABEL_CONTAINER).as_deref() == Some(container.as_str())
                && hash.is_some()
                && label_of(&p.metadata, LABEL_POD_TEMPLATE_HASH) == hash
        })
        .cloned()
        .collect();
    let failure = pod_failure(&own);
    let state = match (&failure, rollout_state(d)) {
        (_, _) if want == 0 => "stopped".to_owned(),
        (Some(f), _) => f.reason.clone(),
        (None, Rollout::Complete) => "running".to_owned(),
        (None, Rollout::Failed { reason, .. }) => reason,
        (None, Rollout::Progressing(_)) => "starting".to_owned(),
    };
    let spec_container = d
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first());
    let image = spec_container
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let ports = spec_container
        .and_then(|c| c.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(PublishedPort {
                internal: u16::try_from(p.container_port).ok()?,
                protocol: if p.protocol.as_deref() == Some("UDP") {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                host_ip: String::new(),
                host_port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect();
    Some(ContainerInfo {
        name: format!("{prefix}-{container}"),
        id: d.metadata.uid.clone().unwrap_or_default(),
        prefix,
        container,
        deployment: label_of(&d.metadata, LABEL_DEPLOYMENT).unwrap_or_default(),
        version: d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LABEL_VERSION))
            .cloned()
            .unwrap_or_default(),
        try_number: label_of(&d.metadata, LABEL_TRY)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        init: None,
        state: ContainerState {
            state,
            exit_code: None,
            image,
        },
        status: format!("{available}/{want} available"),
        ports,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(memory_quantity("256m").unwrap().0, "256Mi");
        assert_eq!(memory_quantity("1g").unwrap().0, "1Gi");
        assert_eq!(memory_quantity("1.5g").unwrap().0, "1536Mi");
        assert_eq!(memory_quantity("1000").unwrap().0, "1000");
        assert_eq!(cpu_quantity("0.5").unwrap().0, "500m");
        assert_eq!(cpu_quantity("2").unwrap().0, "2");
        assert_eq!(cpu_quantity("250m").unwrap().0, "250m");
        assert!(cpu_quantity("x").is_err());
    }

    #[test]
    fn labels_and_hosts() {
        assert!(is_label_value("1.4.0"));
        assert!(!is_label_value("a b"));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(is_label_key("app.kubernetes.io/name"));
        assert!(is_label_key("tier"));
        assert!(!is_label_key("/x"));
        assert_eq!(team_label(&"ab".repeat(32)).len(), TEAM_LABEL_CHARS);
        assert_eq!(
            registry_host("ghcr.io/acme/web:1", DOCKER_HUB_AUTH),
            "ghcr.io"
        );
        assert_eq!(
            registry_host("127.0.0.1:5000/web:1", DOCKER_HUB_AUTH),
            "127.0.0.1:5000"
        );
        assert_eq!(
            registry_host("library/nginx:1", DOCKER_HUB_AUTH),
            "https://index.docker.io/v1/"
        );
        assert_eq!(base64(b"bob:pw"), "Ym9iOnB3");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn the_connection_source_follows_the_documented_order() {
        let home = Some(PathBuf::from("/home/me/.kube/config"));
        let given = KubeConnect {
            kubeconfig: vec!["/etc/a".into(), "/etc/b".into()],
            context: None,
        };
        // The files given win over the service account and ~/.kube/config.
        assert_eq!(
            choose_source(&given, true, home.clone()).unwrap(),
            KubeSource::Files(vec!["/etc/a".into(), "/etc/b".into()])
        );
        // Then the in-cluster service account, then ~/.kube/config.
        let none = KubeConnect::default();
        assert_eq!(
            choose_source(&none, true, home.clone()).unwrap(),
            KubeSource::InCluster
        );
        assert_eq!(
            choose_source(&none, false, home.clone()).unwrap(),
            KubeSource::DefaultFile("/home/me/.kube/config".into())
        );
        // A named context lives in a kubeconfig, never in a service account.
        let named = KubeConnect {
            kubeconfig: Vec::new(),
            context: Some("prod".into()),
        };
        assert_eq!(
            choose_source(&named, true, home).unwrap(),
            KubeSource::DefaultFile("/home/me/.kube/config".into())
        );
        // Nothing at all: the error says what to do.
        let err = choose_source(&none, false, None).unwrap_err();
        assert!(matches!(err, RuntimeError::KubeConfig { .. }), "{err}");
        assert!(err.to_string().contains("--kubeconfig"), "{err}");
        assert!(choose_source(&named, true, None).is_err());
    }

    #[test]
    fn a_kubeconfig_list_splits_on_colons() {
        assert_eq!(
            KubeConnect::split_list(OsStr::new("/a/config::/b/config:")),
            [PathBuf::from("/a/config"), PathBuf::from("/b/config")]
        );
        assert!(KubeConnect::split_list(OsStr::new("")).is_empty());
    }

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

    #[test]
    fn health_checks_become_exec_probes() {
        let h = |c: &[&str]| HealthCheck {
            command: c.iter().map(|s| s.to_string()).collect(),
            interval_ms: Some(1500),
            timeout_ms: None,
            retries: Some(3),
            start_period_ms: None,
        };
        let p = health_probe(&h(&["CMD-SHELL", "curl -f localhost"])).unwrap();
        assert_eq!(
            p.exec.unwrap().command.unwrap(),
            ["/bin/sh", "-c", "curl -f localhost"]
        );
        assert_eq!(p.period_seconds, Some(2));
        assert!(health_probe(&h(&["NONE"])).is_none());
        let p = health_probe(&h(&["CMD", "true"])).unwrap();
        assert_eq!(p.exec.unwrap().command.unwrap(), ["true"]);
    }
}
