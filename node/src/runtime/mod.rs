//! Container runtimes (§4 "Executor"): the [`Runtime`] trait the executor
//! drives, the plan it hands over and the results it gets back.
//!
//! A [`DeployPlan`] is one try of one deployment, fully resolved by the plan
//! builder: every container's layered config already merged
//! ([`ContainerConfig::merged`]), every image turned into a pull reference
//! with its registry credentials, every secret value unsealed. The runtime
//! does the rest: it expands `{{version}}` in env values itself (so a plan
//! may carry either the raw or the expanded config), pulls, creates,
//! starts and waits.
//!
//! Plaintext secrets cross this boundary in [`SecretValues`] and
//! [`RegistryCredentials`]; both print their keys or user only, never a
//! value, and neither is serialisable. Runtimes never put a secret value in
//! a [`ProgressEvent`], an error, a log line or inspect output.
//!
//! Every object a runtime makes carries the labels below, which is how it
//! finds them again: a container belongs to a team and a prefix by its
//! labels, never by its name alone.

mod common;
pub mod docker;
pub mod kubernetes;

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use shoal_protocol::heartbeat::{LiveContainer, LivePort};
use shoal_protocol::model::{ContainerAction, ContainerConfig, ContainerState, Protocol};
use tokio::sync::mpsc;

pub use docker::DockerRuntime;
pub use kubernetes::KubernetesRuntime;

/// Label: the team id owning the object.
pub const LABEL_TEAM: &str = "io.shoal.team";
/// Label: the deployment id that made the container.
pub const LABEL_DEPLOYMENT: &str = "io.shoal.deployment";
/// Label: the product id of the deployment (several products may share a
/// node and prefix; a try touches only its own product's objects).
pub const LABEL_PRODUCT: &str = "io.shoal.product";
/// Label: the deployment's prefix.
pub const LABEL_PREFIX: &str = "io.shoal.prefix";
/// Label: the version name deployed.
pub const LABEL_VERSION: &str = "io.shoal.version";
/// Label: the deployment try that made the container.
pub const LABEL_TRY: &str = "io.shoal.try";
/// Label: the container's name in its version (without the prefix).
pub const LABEL_CONTAINER: &str = "io.shoal.container";
/// Label on init containers: the init container's name.
pub const LABEL_INIT: &str = "io.shoal.init";
/// Label: comma-separated names (never values) of the env keys that hold
/// secrets, so that inspect output can redact them.
pub const LABEL_SECRET_KEYS: &str = "io.shoal.secret-keys";
/// Label on named volumes: the volume's name in the config (unprefixed).
pub const LABEL_VOLUME: &str = "io.shoal.volume";
/// Every label a runtime sets starts with this; config labels that do are
/// overwritten by the runtime's own.
pub const LABEL_NAMESPACE: &str = "io.shoal.";

/// What replaces a secret value in inspect output.
pub const REDACTED: &str = "<redacted>";

/// One try of one deployment, ready to run.
#[derive(Clone, Debug)]
pub struct DeployPlan {
    pub team: String,
    pub deployment: String,
    /// The product id: objects of other products under the same prefix are
    /// never touched by this plan's try.
    pub product: String,
    /// DNS label; container names are `<prefix>-<container name>`.
    pub prefix: String,
    /// The version name: labels, and `{{version}}` in env values.
    pub version: String,
    pub try_number: u32,
    pub containers: Vec<PlannedContainer>,
}

/// One container of a [`DeployPlan`].
#[derive(Clone, Debug)]
pub struct PlannedContainer {
    /// The container's name in its version.
    pub name: String,
    /// The merged config (image ← deployment ← instance). Its `image` field
    /// is informational: [`PlannedContainer::image`] is what is pulled.
    pub config: ContainerConfig,
    pub image: ImageSource,
    /// The resolved image of each of `config.init_containers`, by init
    /// container name. A missing entry is a plan error.
    pub init_images: BTreeMap<String, ImageSource>,
    /// Secret env values, unsealed. They override `config.env` keys.
    pub secrets: SecretValues,
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSource {
    /// Full pull reference: `registry.example.com/team/app:1.4.0`,
    /// `127.0.0.1:5000/app:1.0`, or `library/nginx:1` for Docker Hub.
    pub reference: String,
    pub credentials: Option<RegistryCredentials>,
    pub pull: PullPolicy,
}

impl ImageSource {
    /// A reference pulled anonymously when it changed.
    pub fn public(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            credentials: None,
            pull: PullPolicy::IfChanged,
        }
    }
}

/// When an image is pulled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull when the registry's digest for the reference differs from the
    /// local image's (or there is no local image).
    IfChanged,
    /// Never pull: the image must already be on the node (registries of kind
    /// `unchecked` with the `local` name).
    Never,
}

/// A registry login. `Debug` shows the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("user", &self.user)
            .field("password", &REDACTED)
            .finish()
    }
}

/// Secret env values by key. `Debug` shows the keys only; there is no
/// `Serialize`, so a value cannot end up in JSON by accident.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValues(pub BTreeMap<String, String>);

impl SecretValues {
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl From<BTreeMap<String, String>> for SecretValues {
    fn from(m: BTreeMap<String, String>) -> Self {
        Self(m)
    }
}

/// The step of a deployment a [`ProgressEvent`] belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Pull,
    Network,
    Volume,
    Init,
    Remove,
    Create,
    Start,
    Wait,
    Done,
}

/// One line of detailed progress. Never holds a secret value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    pub step: Step,
    /// The container (name in its version) the event is about, if any.
    pub container: Option<String>,
    pub message: String,
}

/// A successful try.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeployOutcome {
    /// Final state of every container, by name in its version; `image` is
    /// the reference, with `@digest` when the engine knows it.
    pub containers: BTreeMap<String, ContainerState>,
    /// References actually pulled (images already up to date are not).
    pub pulled: Vec<String>,
    /// A short summary of what happened, one line per event.
    pub events: Vec<String>,
}

/// A container a runtime runs for a team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The runtime's name: `<prefix>-<container>` (init containers:
    /// `<prefix>-<container>-init-<init>`).
    pub name: String,
    pub id: String,
    pub prefix: String,
    /// The container's name in its version.
    pub container: String,
    pub deployment: String,
    pub version: String,
    pub try_number: u32,
    /// The init container's name, for init containers.
    pub init: Option<String>,
    pub state: ContainerState,
    /// The engine's human status ("Up 3 minutes", "Exited (1) 2 hours ago").
    pub status: String,
    pub ports: Vec<PublishedPort>,
}

/// A container port published on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub internal: u16,
    pub protocol: Protocol,
    pub host_ip: String,
    pub host_port: u16,
}

/// What [`Runtime::remove_prefix`] removed, by runtime name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// Which output a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogSource {
    Stdout,
    Stderr,
    /// A container with a TTY has one combined output.
    Console,
}

/// One line of a container's output, without its line ending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub source: LogSource,
    pub text: String,
}

/// A container's output, line by line. Without `follow` it ends after the
/// last line; with it, when the container is removed or the stream dropped.
pub type LogStream = BoxStream<'static, Result<LogLine, RuntimeError>>;

/// Why a runtime call failed. Each message says what was wrong and, where
/// there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "cannot reach the Docker engine at {endpoint}: {reason} (is dockerd running, and may this user open its socket?)"
    )]
    Unreachable { endpoint: String, reason: String },
    #[error("unsupported Docker endpoint {endpoint}: only unix:// sockets are supported")]
    UnsupportedEndpoint { endpoint: String },
    #[error("image {reference} not found: {detail} (check the image name and tag)")]
    ImageNotFound { reference: String, detail: String },
    #[error(
        "the registry refused access to {reference}: {detail} (check the registry's user and password)"
    )]
    RegistryAuth { reference: String, detail: String },
    #[error("cannot reach the registry of {reference}: {detail}")]
    RegistryUnreachable { reference: String, detail: String },
    #[error("pulling {reference} failed: {detail}")]
    Pull { reference: String, detail: String },
    #[error(
        "container {container}: a published port is already in use on this node: {detail} (free the port or choose another external port)"
    )]
    PortInUse { container: String, detail: String },
    #[error(
        "the name {name} is already used by a {kind} that does not belong to this team and prefix (remove or rename it)"
    )]
    NameInUse { kind: &'static str, name: String },
    #[error("invalid plan: {reason}")]
    InvalidPlan { reason: String },
    #[error("invalid config of container {container}: {reason}")]
    InvalidConfig { container: String, reason: String },
    #[error("init container {init} of {container} failed: {detail}")]
    InitFailed {
        container: String,
        init: String,
        detail: String,
    },
    #[error("container {container} {actual}, but {expected} was expected")]
    UnexpectedState {
        container: String,
        expected: String,
        actual: String,
    },
    #[error("container {container} is unhealthy: {detail}")]
    Unhealthy { container: String, detail: String },
    #[error(
        "container {container} did not reach {expected} within {seconds}s (last seen: {last}); raise the expected-state timeout if it needs longer"
    )]
    Timeout {
        container: String,
        expected: String,
        seconds: u64,
        last: String,
    },
    #[error("no container {name} in this team on this node")]
    ContainerNotFound { name: String },
    #[error("Docker engine error while {context}: {detail}")]
    Engine { context: String, detail: String },
    #[error("Kubernetes API error while {context}: {detail}")]
    Kubernetes { context: String, detail: String },
    #[error(
        "cannot load the Kubernetes connection from {origin}: {detail} (pass a working kubeconfig with --kubeconfig PATH or KUBECONFIG, pick one of its contexts with --kube-context NAME, or run the node in a cluster with a service account)"
    )]
    KubeConfig { origin: String, detail: String },
    #[error("container {container}: the rollout failed: {detail}")]
    Rollout {
        container: String,
        /// The Kubernetes reason (`CrashLoopBackOff`, `Unschedulable`, ...).
        reason: String,
        detail: String,
    },
    /// A try failed and the previous containers of its product were
    /// brought back and run again.
    #[error("{failure}; previous version restored")]
    Restored { failure: Box<RuntimeError> },
    /// A try failed and bringing the previous containers back failed too.
    #[error("{failure}; restoring the previous version failed: {detail}")]
    RestoreFailed {
        failure: Box<RuntimeError>,
        detail: String,
    },
}

impl RuntimeError {
    /// Why the try failed, without the restore that followed.
    pub fn root(&self) -> &RuntimeError {
        match self {
            RuntimeError::Restored { failure } | RuntimeError::RestoreFailed { failure, .. } => {
                failure.root()
            }
            other => other,
        }
    }
}

/// A container runtime. Object safe: the executor holds a `dyn Runtime`.
/// `team` is the team id; every call only sees and touches that team's
/// objects.
pub trait Runtime: Send + Sync + fmt::Debug {
    /// Runs one try: pulls the images that changed, makes the prefix's
    /// network and volumes, runs init containers to completion, replaces the
    /// previous containers of the plan's product (never another product's)
    /// with the plan's, starting them in the plan's order, each in its
    /// expected state before the next. The previous containers are kept
    /// until then; when the try fails they are brought back
    /// ([`RuntimeError::Restored`]). Run again after being cut short, a try
    /// finishes or undoes the replacement it left. Progress goes to
    /// `progress`, which the caller must drain. A failed first try leaves
    /// its containers in place for inspection; [`Runtime::containers`]
    /// lists them.
    fn deploy<'a>(
        &'a self,
        plan: &'a DeployPlan,
        progress: &'a mpsc::Sender<ProgressEvent>,
    ) -> BoxFuture<'a, Result<DeployOutcome, RuntimeError>>;

    /// The team's containers, of one prefix or all.
    fn containers<'a>(
        &'a self,
        team: &'a str,
        prefix: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ContainerInfo>, RuntimeError>>;

    /// Starts, stops, restarts or removes one of the team's containers, by
    /// runtime name (`<prefix>-<container>`).
    fn command<'a>(
        &'a self,
        team: &'a str,
        container: &'a str,
        action: ContainerAction,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// A container's output: the last `tail` lines (all when `None`), then,
    /// with `follow`, new lines as they come.
    fn logs<'a>(
        &'a self,
        team: &'a str,
        container: &'a str,
        follow: bool,
        tail: Option<u64>,
    ) -> BoxFuture<'a, Result<LogStream, RuntimeError>>;

    /// The engine's description of a container, with secret env values
    /// replaced by [`REDACTED`].
    fn inspect<'a>(
        &'a self,
        team: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<serde_json::Value, RuntimeError>>;

    /// Removes everything of a prefix: containers, its network, its volumes.
    fn remove_prefix<'a>(
        &'a self,
        team: &'a str,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Removed, RuntimeError>>;

    /// Removes exactly one deployment's objects (found by their team and
    /// deployment labels), the prefix's network when nothing else uses it,
    /// and with `volumes` its volumes. Nothing left to remove is success.
    fn teardown<'a>(
        &'a self,
        team: &'a str,
        deployment: &'a str,
        prefix: &'a str,
        volumes: bool,
    ) -> BoxFuture<'a, Result<Removed, RuntimeError>> {
        let _ = (team, deployment, prefix, volumes);
        Box::pin(async {
            Err(RuntimeError::InvalidPlan {
                reason: "this runtime cannot tear a deployment down yet".into(),
            })
        })
    }

    /// The team's containers as they are now, for the live state in
    /// heartbeats. By default read from
    /// [`Runtime::containers`], with the health the engine's status names
    /// and no restart count.
    fn live<'a>(
        &'a self,
        team: &'a str,
    ) -> BoxFuture<'a, Result<Vec<LiveContainer>, RuntimeError>> {
        Box::pin(async move {
            Ok(self
                .containers(team, None)
                .await?
                .iter()
                .map(|c| live_container(c, None))
                .collect())
        })
    }

    /// Removes the images of the repositories `repos` (references without
    /// their tag, as the plans name them) whose reference is not in `keep`
    /// and that no container uses; returns the references removed. Images
    /// of other repositories are never touched.
    fn prune_images<'a>(
        &'a self,
        repos: &'a std::collections::BTreeSet<String>,
        keep: &'a std::collections::BTreeSet<String>,
    ) -> BoxFuture<'a, Result<Vec<String>, RuntimeError>> {
        let _ = (repos, keep);
        Box::pin(async {
            Err(RuntimeError::InvalidPlan {
                reason: "this runtime does not manage images (on Kubernetes the kubelet does)"
                    .into(),
            })
        })
    }

    /// Yields each time one of the team's containers changed (started,
    /// stopped, died, health changed, ...); it ends when the runtime stops
    /// telling (the engine restarted), and the caller asks again. By default
    /// it never yields: the caller looks at [`Runtime::live`] periodically.
    fn changes<'a>(
        &'a self,
        team: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, ()>, RuntimeError>> {
        let _ = team;
        Box::pin(async { Ok(futures::StreamExt::boxed(futures::stream::pending())) })
    }
}

/// The error of a command that is not carried out on one container
/// (`remove-volumes` goes with its deployment's teardown, `prune-images`
/// with [`Runtime::prune_images`]).
pub fn not_a_container_command(action: ContainerAction) -> RuntimeError {
    RuntimeError::InvalidPlan {
        reason: format!(
            "{} is not a command on one container: the deployment's teardown carries it out",
            action.as_str()
        ),
    }
}

/// The live state of a listed container; `restarts` is the engine's
/// restart count when the caller knows it.
pub fn live_container(c: &ContainerInfo, restarts: Option<u32>) -> LiveContainer {
    // Docker's status names the health: "Up 3 minutes (healthy)",
    // "Up 2 seconds (health: starting)".
    let health = if c.status.contains("(healthy)") {
        Some("healthy")
    } else if c.status.contains("(unhealthy)") {
        Some("unhealthy")
    } else if c.status.contains("(health: starting)") {
        Some("starting")
    } else {
        None
    };
    LiveContainer {
        name: c.name.clone(),
        id: c.id.clone(),
        prefix: c.prefix.clone(),
        container: c.container.clone(),
        deployment: c.deployment.clone(),
        version: c.version.clone(),
        try_number: c.try_number,
        init: c.init.clone(),
        state: c.state.state.clone(),
        exit_code: c.state.exit_code,
        image: c.state.image.clone(),
        status: c.status.clone(),
        health: health.map(str::to_owned),
        restarts: restarts.unwrap_or(0),
        ports: c
            .ports
            .iter()
            .map(|p| LivePort {
                internal: p.internal,
                udp: p.protocol == Protocol::Udp,
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
            })
            .collect(),
    }
}

/// A container of a heartbeat's live state as listed (the inverse of
/// [`live_container`]).
pub fn listed_container(c: &LiveContainer) -> ContainerInfo {
    ContainerInfo {
        name: c.name.clone(),
        id: c.id.clone(),
        prefix: c.prefix.clone(),
        container: c.container.clone(),
        deployment: c.deployment.clone(),
        version: c.version.clone(),
        try_number: c.try_number,
        init: c.init.clone(),
        state: ContainerState {
            state: c.state.clone(),
            exit_code: c.exit_code,
            image: c.image.clone(),
        },
        status: c.status.clone(),
        ports: c
            .ports
            .iter()
            .map(|p| PublishedPort {
                internal: p.internal,
                protocol: if p.udp { Protocol::Udp } else { Protocol::Tcp },
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
            })
            .collect(),
    }
}

/// Parses a memory size: bytes, or a number with a binary unit suffix
/// `k`, `m`, `g`, `t` (also `kb`/`ki`/`kib`, ... in any case), as Docker
/// does: `"256m"`, `"1g"`, `"1.5G"`, `"512Mi"`, `"1048576"`.
pub fn parse_memory(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("memory {s:?}: expected a number, like 256m or 1g"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("memory {s:?}: {num:?} is not a number"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        other => {
            return Err(format!(
                "memory {s:?}: unknown unit {other:?} (use b, k, m, g or t)"
            ));
        }
    };
    let bytes = value * f64::from(1u32 << 10).powi(shift / 10);
    if !bytes.is_finite() || bytes < 1.0 || bytes > i64::MAX as f64 {
        return Err(format!("memory {s:?}: out of range"));
    }
    Ok(bytes.round() as i64)
}

/// Parses a CPU limit into nano CPUs: a number of CPUs (`"0.5"`, `"2"`) or
/// millicores (`"500m"`).
pub fn parse_cpu(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (num, scale) = match t.strip_suffix('m') {
        Some(milli) => (milli, 1e6),
        None => (t, 1e9),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("cpu {s:?}: expected a number of CPUs, like 0.5 or 500m"))?;
    let nanos = (value * scale).round();
    if !nanos.is_finite() || nanos < 1.0 || nanos > i64::MAX as f64 {
        return Err(format!("cpu {s:?}: out of range"));
    }
    Ok(nanos as i64)
}

/// True for a DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 chars.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(ok)
        && b.last().is_some_and(ok)
        && b.iter().all(|c| ok(c) || *c == b'-')
}

/// Makes the runtime for a try; an error fails the try with its message
/// (e.g. the Docker engine does not answer).
pub type RuntimeFactory = std::sync::Arc<
    dyn Fn()
            -> futures::future::BoxFuture<'static, Result<std::sync::Arc<dyn Runtime>, RuntimeError>>
        + Send
        + Sync,
>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn memory_sizes_parse_with_binary_units() {
        assert_eq!(parse_memory("256m").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_memory("64kb").unwrap(), 64 << 10);
        assert_eq!(parse_memory("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_memory(" 2t ").unwrap(), 2 << 40);
        for bad in ["", "m", "12x", "-1m", "0", "1.2.3g", "99999999999t"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn cpu_limits_parse_into_nano_cpus() {
        assert_eq!(parse_cpu("0.5").unwrap(), 500_000_000);
        assert_eq!(parse_cpu("2").unwrap(), 2_000_000_000);
        assert_eq!(parse_cpu("1.25").unwrap(), 1_250_000_000);
        assert_eq!(parse_cpu("500m").unwrap(), 500_000_000);
        assert_eq!(parse_cpu("100m").unwrap(), 100_000_000);
        for bad in ["", "x", "0", "-1", "m", "1 cpu"] {
            assert!(parse_cpu(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn secrets_and_passwords_never_print() {
        let s = SecretValues::from(BTreeMap::from([("TOKEN".into(), "hunter2".into())]));
        let c = RegistryCredentials {
            user: "bob".into(),
            password: "hunter3".into(),
        };
        let out = format!("{s:?} {c:?}");
        assert!(out.contains("TOKEN") && out.contains("bob"), "{out}");
        assert!(!out.contains("hunter"), "{out}");
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("web"));
        assert!(is_dns_label("a-1"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("a-"));
        assert!(!is_dns_label("A"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
