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
//! stay. A config field a Deployment cannot honour
//! ([`shoal_protocol::kubernetes::unsupported`]: networks, network modes
//! other than host, restart policies other than always, log drivers, an
//! expected state other than running) is refused, never ignored.
//!
//! Every object carries the product and deployment labels; several products
//! share a namespace, and a try reads, replaces and removes only objects of
//! its own product (a name another product's object holds is refused). The
//! containers roll out one by one in the plan's order: a container's
//! Secrets, Deployment and Service are applied, then the try waits for its
//! rollout to complete (observed generation caught up, every replica
//! updated and available) before the next container is applied; it fails
//! with the reason the pods of the revision being rolled out give (the
//! Deployment's newest ReplicaSet, matched by `pod-template-hash`; pods of
//! older revisions and terminating pods decide nothing): an image that
//! cannot be pulled, a crash loop, a pod that cannot be scheduled, a rollout
//! past its deadline. When a rollout fails and the product had a previous
//! version there, the objects the try changed are applied again as they
//! were before it (those it created are deleted), so the last good version
//! keeps serving, and the try fails with [`RuntimeError::Restored`] (or
//! [`RuntimeError::RestoreFailed`]), as on Docker: the reason ends with
//! [`RESTORED`]. Only after every
//! rollout completed are the product's objects the plan no longer has
//! deleted.
//!
//! Teardown deletes one deployment's objects (by the team and deployment
//! labels; volume claims only when asked), and the namespace when shoal
//! created it and no object of shoal is left in it.
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
//! The live state (`crate::live`) is watched the same way, in every
//! namespace: [`super::Runtime::changes`] is a watch of the team's
//! Deployments and pods whose events make the live state look again
//! within about a second, its periodic look being only the resync.
//!
//! Label values are at most 63 characters, so the team label holds the first
//! [`TEAM_LABEL_CHARS`] characters of the team id; the full id, the version
//! name and the names of the secret env keys are annotations.
//!
//! A container's runtime name is `<prefix>-<container>`, as with Docker.

mod build;
mod command;
mod connect;
mod deploy;
mod inspect;
mod meta;
mod rollout;
mod teardown;
mod watch;

use std::fmt;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use kube::api::Api;
use kube::{Client, Config};
use tracing::debug;

use super::RuntimeError;
use super::common::error_chain;

pub use build::{Objects, build_objects, cpu_quantity, memory_quantity};
pub use connect::{KubeConnect, KubeSource, choose_source, load_config};
pub use deploy::RESTORED;
pub use meta::{is_label_key, is_label_value, team_label};
pub use rollout::{PodFailure, Rollout, current_revision_hash, pod_failure, rollout_state};

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
}

impl super::Runtime for KubernetesRuntime {
    fn deploy<'a>(
        &'a self,
        plan: &'a super::DeployPlan,
        progress: &'a tokio::sync::mpsc::Sender<super::ProgressEvent>,
    ) -> BoxFuture<'a, Result<super::DeployOutcome, RuntimeError>> {
        self.run_deploy(plan, progress).boxed()
    }

    fn containers<'a>(
        &'a self,
        team: &'a str,
        prefix: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<super::ContainerInfo>, RuntimeError>> {
        self.run_containers(team, prefix).boxed()
    }

    fn command<'a>(
        &'a self,
        team: &'a str,
        container: &'a str,
        action: shoal_protocol::model::ContainerAction,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.run_command(team, container, action).boxed()
    }

    fn logs<'a>(
        &'a self,
        team: &'a str,
        container: &'a str,
        follow: bool,
        tail: Option<u64>,
    ) -> BoxFuture<'a, Result<super::LogStream, RuntimeError>> {
        self.run_logs(team, container, follow, tail).boxed()
    }

    fn inspect<'a>(
        &'a self,
        team: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<serde_json::Value, RuntimeError>> {
        self.run_inspect(team, container).boxed()
    }

    fn remove_prefix<'a>(
        &'a self,
        team: &'a str,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<super::Removed, RuntimeError>> {
        self.run_remove_prefix(team, prefix).boxed()
    }

    fn teardown<'a>(
        &'a self,
        team: &'a str,
        deployment: &'a str,
        prefix: &'a str,
        volumes: bool,
    ) -> BoxFuture<'a, Result<super::Removed, RuntimeError>> {
        self.run_teardown(team, deployment, prefix, volumes).boxed()
    }

    fn changes<'a>(
        &'a self,
        team: &'a str,
    ) -> BoxFuture<'a, Result<futures::stream::BoxStream<'static, ()>, RuntimeError>> {
        let selector = meta::team_selector(team);
        let watch = watch::ChangeWatch::everywhere(&self.client, &selector);
        futures::future::ready(Ok(watch.into_stream())).boxed()
    }
}
