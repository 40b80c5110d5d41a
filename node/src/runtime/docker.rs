//! The Docker runtime, on the Engine API through bollard.
//!
//! Connection: a Unix socket, from the endpoint given, else `DOCKER_HOST`
//! (`unix:///path`), else [`DEFAULT_SOCKET`]. The API version is negotiated
//! with the engine, so engines speaking API 1.41 (Docker 20.10) work.
//!
//! What a deployment makes, all labelled with the team and prefix (see the
//! `LABEL_*` constants in the parent module):
//! - one bridge network per prefix, `shoal-<prefix>`; every container joins
//!   it with its container name as DNS alias, unless its network mode is
//!   `host` or `none`. Networks named in a config are joined too (created,
//!   labelled with the team only, when missing);
//! - named volumes `<prefix>-<name>`; a volume name that is an absolute path
//!   is a bind mount of that host path; `tmpfs` volumes take their `size`;
//! - containers `<prefix>-<container>`, and init containers
//!   `<prefix>-<container>-init-<init>` which share the container's volumes
//!   and network and are removed once they succeed.
//!
//! Pulls: the registry's digest for the reference is read with the
//! distribution API (`GET /distribution/{name}/json`, API ≥ 1.30, with the
//! credentials) and compared with the local image's repo digests; the image
//! is pulled only when they differ or there is no local image. So a wrong
//! password or a missing tag is reported by the registry check even when an
//! image of that name is already on the node.
//!
//! A try, in order: validate and build every container's spec (nothing is
//! touched when a config is invalid); check/pull images concurrently;
//! network and volumes; remove leftover init containers of the prefix and
//! run this try's init containers one after the other; remove the prefix's
//! previous containers (stopped gracefully first); create, then start every
//! container concurrently; wait concurrently for each container's expected
//! state: `running` means running for [`RUNNING_SETTLE`] without a restart,
//! and healthy when it has a health check; `exited` means exited with the
//! expected code (0 when none is given). `{{version}}` in env values is
//! expanded here.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::pin::pin;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig, Mount,
    MountTmpfsOptions, MountType, NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig,
    PortBinding, PortMap, PortSummaryTypeEnum, RestartPolicy as DockerRestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures::future::{join_all, try_join_all};
use futures::{Stream, StreamExt as _};
use serde_json::Value;
use shoal_protocol::model::{
    ContainerAction, ContainerState, ExpectedRunState, HealthCheck, NetworkMode, Port, PortRange,
    Protocol, RestartPolicy, Volume, VolumeKind,
};
use tokio::sync::mpsc;
use tracing::debug;

use super::common::{
    Reporter, error_chain, redact_env, registry_host, runtime_from_run_methods, secret_keys,
};
use super::{
    ContainerInfo, DeployOutcome, DeployPlan, ImageSource, LABEL_CONTAINER, LABEL_DEPLOYMENT,
    LABEL_INIT, LABEL_NAMESPACE, LABEL_PREFIX, LABEL_SECRET_KEYS, LABEL_TEAM, LABEL_TRY,
    LABEL_VERSION, LABEL_VOLUME, LogLine, LogSource, LogStream, PlannedContainer, ProgressEvent,
    PublishedPort, PullPolicy, Removed, RuntimeError, Step, is_dns_label, parse_cpu, parse_memory,
};

/// The engine's socket when neither an endpoint nor `DOCKER_HOST` is given.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// How long one engine request may take to answer (streams then run on).
pub const REQUEST_TIMEOUT_S: u64 = 120;
/// Grace period between SIGTERM and SIGKILL when stopping a container.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Expected-state timeout when the config gives none.
pub const DEFAULT_EXPECTED_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an init container may run.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a container without health check must stay up to count as
/// running (capped by its expected-state timeout).
pub const RUNNING_SETTLE: Duration = Duration::from_secs(2);
/// Time between two state checks while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Prefix of the per-prefix network's name.
pub const NETWORK_PREFIX: &str = "shoal-";
/// Longest health check output quoted in an error.
const HEALTH_OUTPUT_MAX: usize = 200;
/// Docker Hub's server address in registry credentials.
const DOCKER_HUB: &str = "docker.io";

/// The Docker runtime. Cheap to clone (the client is shared).
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
    stop_timeout: Duration,
}

impl DockerRuntime {
    /// Connects to the engine and negotiates the API version. `endpoint` is
    /// `unix:///path` or a socket path; `None` reads `DOCKER_HOST`, then
    /// falls back to [`DEFAULT_SOCKET`].
    pub async fn connect(endpoint: Option<&str>) -> Result<Self, RuntimeError> {
        let endpoint = match endpoint {
            Some(e) => e.to_owned(),
            None => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}")),
        };
        let path = socket_path(&endpoint)?;
        let unreachable = |e: DockerError| RuntimeError::Unreachable {
            endpoint: endpoint.clone(),
            reason: error_chain(&e),
        };
        let docker = Docker::connect_with_unix(&path, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION)
            .map_err(unreachable)?
            .negotiate_version()
            .await
            .map_err(unreachable)?;
        debug!(%endpoint, version = ?docker.client_version(), "connected to the Docker engine");
        Ok(Self {
            docker,
            endpoint,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        })
    }

    /// Sets the grace period given to containers when they are stopped.
    pub fn with_stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Asks the engine for its version: a cheap request that proves it
    /// answers. Returns `Docker <version> (API <api version>)`.
    pub async fn ping(&self) -> Result<String, RuntimeError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| RuntimeError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: error_chain(&e),
            })?;
        Ok(format!(
            "Docker {} (API {})",
            v.version.as_deref().unwrap_or("?"),
            v.api_version.as_deref().unwrap_or("?")
        ))
    }

    /// The endpoint this runtime talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bollard client, for callers that need more of the Engine API.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    // ------------------------------------------------------------ errors

    /// Maps an engine error: a transport failure is [`RuntimeError::Unreachable`].
    fn engine(&self, context: impl Into<String>, e: DockerError) -> RuntimeError {
        if is_transport_error(&e) {
            return RuntimeError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: error_chain(&e),
            };
        }
        RuntimeError::Engine {
            context: context.into(),
            detail: engine_message(&e),
        }
    }

    fn registry_error(&self, reference: &str, e: DockerError) -> RuntimeError {
        if is_transport_error(&e) {
            return self.engine(format!("checking {reference}"), e);
        }
        let detail = engine_message(&e);
        classify_registry_message(reference, detail)
    }

    fn create_error(&self, container: &str, name: &str, e: DockerError) -> RuntimeError {
        match status_of(&e) {
            Some(409) => RuntimeError::NameInUse {
                kind: "container",
                name: name.to_owned(),
            },
            Some(400) => RuntimeError::InvalidConfig {
                container: container.to_owned(),
                reason: engine_message(&e),
            },
            _ => self.engine(format!("creating container {name}"), e),
        }
    }

    fn start_error(&self, container: &str, name: &str, e: DockerError) -> RuntimeError {
        let detail = engine_message(&e);
        if is_port_conflict(&detail) {
            return RuntimeError::PortInUse {
                container: container.to_owned(),
                detail,
            };
        }
        self.engine(format!("starting container {name}"), e)
    }

    // ------------------------------------------------------------ deploy

    async fn run_deploy(
        &self,
        plan: &DeployPlan,
        progress: &mpsc::Sender<ProgressEvent>,
    ) -> Result<DeployOutcome, RuntimeError> {
        validate_plan(plan)?;
        let network = network_name(&plan.prefix);
        let specs = plan
            .containers
            .iter()
            .map(|pc| build_spec(plan, pc, &network))
            .collect::<Result<Vec<_>, _>>()?;
        let report = Reporter::new(progress);

        // Images, each distinct reference once, concurrently.
        let mut sources: BTreeMap<&str, &ImageSource> = BTreeMap::new();
        for pc in &plan.containers {
            sources.entry(&pc.image.reference).or_insert(&pc.image);
            for src in pc.init_images.values() {
                sources.entry(&src.reference).or_insert(src);
            }
        }
        let ready = join_all(sources.values().map(|src| self.ensure_image(src, &report))).await;
        let mut digests = BTreeMap::new();
        let mut pulled = Vec::new();
        for r in ready {
            let r = r?;
            if r.pulled {
                pulled.push(r.reference.clone());
            }
            digests.insert(r.reference, r.digest);
        }

        // Network and volumes.
        self.ensure_network(&plan.team, &plan.prefix, &report)
            .await?;
        let shared: BTreeSet<&str> = specs
            .iter()
            .flat_map(|s| s.extra_networks.iter().map(String::as_str))
            .collect();
        for name in shared {
            self.ensure_shared_network(&plan.team, name, &report)
                .await?;
        }
        self.ensure_volumes(plan, &specs, &report).await?;

        // Init containers, in order, before anything of the previous try goes.
        let stale = self.remove_matching(&plan.team, &plan.prefix, true).await?;
        if !stale.is_empty() {
            report
                .emit(
                    Step::Remove,
                    None,
                    format!("removed {} leftover init container(s)", stale.len()),
                )
                .await;
        }
        for spec in &specs {
            for init in &spec.inits {
                self.run_init(spec, init, &report).await?;
            }
        }

        // Replace the previous containers.
        let old = self
            .remove_matching(&plan.team, &plan.prefix, false)
            .await?;
        if !old.is_empty() {
            report
                .emit(
                    Step::Remove,
                    None,
                    format!("removed previous containers: {}", old.join(", ")),
                )
                .await;
        }
        try_join_all(specs.iter().map(|s| self.create(s, &report))).await?;
        try_join_all(specs.iter().map(|s| self.start(s, &report))).await?;
        let finals = try_join_all(specs.iter().map(|s| self.wait_expected(s, &report))).await?;

        let mut containers = BTreeMap::new();
        for (spec, mut state) in specs.iter().zip(finals) {
            state.image = match digests.get(&spec.reference).cloned().flatten() {
                Some(d) if !spec.reference.contains('@') => format!("{}@{d}", spec.reference),
                _ => spec.reference.clone(),
            };
            containers.insert(spec.container.clone(), state);
        }
        report
            .emit(
                Step::Done,
                None,
                format!(
                    "deployment {} try {} is up ({} container(s))",
                    plan.deployment,
                    plan.try_number,
                    containers.len()
                ),
            )
            .await;
        Ok(DeployOutcome {
            containers,
            pulled,
            events: report.into_events(),
        })
    }

    /// Makes sure the image is present and current.
    async fn ensure_image(
        &self,
        src: &ImageSource,
        report: &Reporter<'_>,
    ) -> Result<ImageReady, RuntimeError> {
        let reference = src.reference.as_str();
        let local = match self.docker.inspect_image(reference).await {
            Ok(image) => Some(image),
            Err(e) if status_of(&e) == Some(404) => None,
            Err(e) => return Err(self.engine(format!("inspecting image {reference}"), e)),
        };
        let local_digests = local
            .as_ref()
            .and_then(|i| i.repo_digests.clone())
            .unwrap_or_default();
        if src.pull == PullPolicy::Never {
            return match local {
                Some(_) => Ok(ImageReady {
                    reference: reference.to_owned(),
                    digest: local_digests.first().and_then(|d| digest_part(d)),
                    pulled: false,
                }),
                None => Err(RuntimeError::ImageNotFound {
                    reference: reference.to_owned(),
                    detail: "not on this node, and its registry is never pulled from".into(),
                }),
            };
        }

        let credentials = docker_credentials(src);
        let remote = self
            .docker
            .inspect_registry_image(reference, credentials.clone())
            .await
            .map_err(|e| self.registry_error(reference, e))?;
        let digest = remote.descriptor.digest;
        if let Some(d) = &digest
            && local_digests
                .iter()
                .any(|l| digest_part(l).as_deref() == Some(d.as_str()))
        {
            report
                .emit(
                    Step::Pull,
                    None,
                    format!("{reference} is up to date ({})", short_digest(d)),
                )
                .await;
            return Ok(ImageReady {
                reference: reference.to_owned(),
                digest,
                pulled: false,
            });
        }

        report
            .emit(Step::Pull, None, format!("pulling {reference}"))
            .await;
        let options = CreateImageOptionsBuilder::new()
            .from_image(reference)
            .build();
        let mut stream = pin!(self.docker.create_image(Some(options), None, credentials));
        while let Some(item) = stream.next().await {
            item.map_err(|e| self.registry_error(reference, e))?;
        }
        report
            .emit(
                Step::Pull,
                None,
                match &digest {
                    Some(d) => format!("pulled {reference} ({})", short_digest(d)),
                    None => format!("pulled {reference}"),
                },
            )
            .await;
        Ok(ImageReady {
            reference: reference.to_owned(),
            digest,
            pulled: true,
        })
    }

    async fn ensure_network(
        &self,
        team: &str,
        prefix: &str,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let name = network_name(prefix);
        match self.docker.inspect_network(&name, None).await {
            Ok(n) => {
                let labels = n.labels.unwrap_or_default();
                if labels.get(LABEL_TEAM).map(String::as_str) != Some(team)
                    || labels.get(LABEL_PREFIX).map(String::as_str) != Some(prefix)
                {
                    return Err(RuntimeError::NameInUse {
                        kind: "network",
                        name,
                    });
                }
                Ok(())
            }
            Err(e) if status_of(&e) == Some(404) => {
                let request = NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(HashMap::from([
                        (LABEL_TEAM.to_owned(), team.to_owned()),
                        (LABEL_PREFIX.to_owned(), prefix.to_owned()),
                    ])),
                    ..Default::default()
                };
                self.docker
                    .create_network(request)
                    .await
                    .map_err(|e| self.engine(format!("creating network {name}"), e))?;
                report
                    .emit(Step::Network, None, format!("created network {name}"))
                    .await;
                Ok(())
            }
            Err(e) => Err(self.engine(format!("inspecting network {name}"), e)),
        }
    }

    /// A network named in a config: used as is, created when missing.
    async fn ensure_shared_network(
        &self,
        team: &str,
        name: &str,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => {
                let request = NetworkCreateRequest {
                    name: name.to_owned(),
                    driver: Some("bridge".into()),
                    labels: Some(HashMap::from([(LABEL_TEAM.to_owned(), team.to_owned())])),
                    ..Default::default()
                };
                self.docker
                    .create_network(request)
                    .await
                    .map_err(|e| self.engine(format!("creating network {name}"), e))?;
                report
                    .emit(Step::Network, None, format!("created network {name}"))
                    .await;
                Ok(())
            }
            Err(e) => Err(self.engine(format!("inspecting network {name}"), e)),
        }
    }

    async fn ensure_volumes(
        &self,
        plan: &DeployPlan,
        specs: &[Spec],
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let mut named: BTreeMap<&str, &str> = BTreeMap::new();
        for spec in specs {
            for (docker_name, config_name) in &spec.named_volumes {
                named.insert(docker_name, config_name);
            }
        }
        for (docker_name, config_name) in named {
            let request = VolumeCreateRequest {
                name: Some(docker_name.to_owned()),
                labels: Some(HashMap::from([
                    (LABEL_TEAM.to_owned(), plan.team.clone()),
                    (LABEL_PREFIX.to_owned(), plan.prefix.clone()),
                    (LABEL_VOLUME.to_owned(), config_name.to_owned()),
                ])),
                ..Default::default()
            };
            // Creating an existing volume returns it unchanged.
            let volume = self
                .docker
                .create_volume(request)
                .await
                .map_err(|e| self.engine(format!("creating volume {docker_name}"), e))?;
            if volume.labels.get(LABEL_TEAM) != Some(&plan.team)
                || volume.labels.get(LABEL_PREFIX) != Some(&plan.prefix)
            {
                return Err(RuntimeError::NameInUse {
                    kind: "volume",
                    name: docker_name.to_owned(),
                });
            }
            report
                .emit(Step::Volume, None, format!("volume {docker_name} ready"))
                .await;
        }
        Ok(())
    }

    async fn run_init(
        &self,
        spec: &Spec,
        init: &InitSpec,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let container = spec.container.as_str();
        report
            .emit(
                Step::Init,
                Some(container),
                format!("running init container {}", init.init),
            )
            .await;
        let options = CreateContainerOptionsBuilder::new()
            .name(&init.name)
            .build();
        self.docker
            .create_container(Some(options), init.body.clone())
            .await
            .map_err(|e| self.create_error(container, &init.name, e))?;
        self.docker
            .start_container(&init.name, None)
            .await
            .map_err(|e| self.start_error(container, &init.name, e))?;
        let failed = |detail: String| RuntimeError::InitFailed {
            container: container.to_owned(),
            init: init.init.clone(),
            detail,
        };
        let deadline = Instant::now() + INIT_TIMEOUT;
        loop {
            let info = self
                .docker
                .inspect_container(&init.name, None)
                .await
                .map_err(|e| self.engine(format!("inspecting container {}", init.name), e))?;
            let seen = Seen::of(&info);
            if matches!(
                seen.status,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            ) {
                let code = seen.exit_code.unwrap_or(-1);
                if code != 0 {
                    return Err(failed(format!(
                        "exited with code {code}; its container {} is kept for its logs",
                        init.name
                    )));
                }
                self.remove_container(&init.name).await?;
                report
                    .emit(
                        Step::Init,
                        Some(container),
                        format!("init container {} done", init.init),
                    )
                    .await;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "still {} after {}s",
                    seen.describe(),
                    INIT_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn create(&self, spec: &Spec, report: &Reporter<'_>) -> Result<(), RuntimeError> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(Some(options), spec.body.clone())
            .await
            .map_err(|e| self.create_error(&spec.container, &spec.name, e))?;
        for network in &spec.extra_networks {
            let request = NetworkConnectRequest {
                container: spec.name.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(vec![spec.container.clone()]),
                    ..Default::default()
                }),
            };
            self.docker
                .connect_network(network, request)
                .await
                .map_err(|e| self.engine(format!("connecting {} to {network}", spec.name), e))?;
        }
        report
            .emit(
                Step::Create,
                Some(&spec.container),
                format!("created {}", spec.name),
            )
            .await;
        Ok(())
    }

    async fn start(&self, spec: &Spec, report: &Reporter<'_>) -> Result<(), RuntimeError> {
        self.docker
            .start_container(&spec.name, None)
            .await
            .map_err(|e| self.start_error(&spec.container, &spec.name, e))?;
        report
            .emit(
                Step::Start,
                Some(&spec.container),
                format!("started {}", spec.name),
            )
            .await;
        Ok(())
    }

    /// Waits until the container is in its expected state, or fails.
    async fn wait_expected(
        &self,
        spec: &Spec,
        report: &Reporter<'_>,
    ) -> Result<ContainerState, RuntimeError> {
        let started = Instant::now();
        let deadline = started + spec.timeout;
        let settle = RUNNING_SETTLE.min(spec.timeout);
        let container = spec.container.clone();
        let expected = spec.expect.describe(spec.has_health);
        loop {
            let info = self
                .docker
                .inspect_container(&spec.name, None)
                .await
                .map_err(|e| self.engine(format!("inspecting container {}", spec.name), e))?;
            let seen = Seen::of(&info);
            let unexpected = |actual: String| RuntimeError::UnexpectedState {
                container: container.clone(),
                expected: expected.clone(),
                actual,
            };
            let exited = matches!(
                seen.status,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            );
            match spec.expect {
                Expect::Running => {
                    if exited {
                        return Err(unexpected(format!(
                            "exited with code {}",
                            seen.exit_code.unwrap_or(-1)
                        )));
                    }
                    if seen.restarts > 0
                        || seen.status == Some(ContainerStateStatusEnum::RESTARTING)
                    {
                        return Err(unexpected(format!(
                            "keeps restarting ({} restart(s), last exit code {})",
                            seen.restarts,
                            seen.exit_code.unwrap_or(-1)
                        )));
                    }
                    if seen.status == Some(ContainerStateStatusEnum::RUNNING) {
                        let done = if spec.has_health {
                            match seen.health {
                                Some(HealthStatusEnum::HEALTHY) => true,
                                Some(HealthStatusEnum::UNHEALTHY) => {
                                    return Err(RuntimeError::Unhealthy {
                                        container,
                                        detail: seen
                                            .health_output
                                            .unwrap_or_else(|| "the health check failed".into()),
                                    });
                                }
                                _ => false,
                            }
                        } else {
                            started.elapsed() >= settle
                        };
                        if done {
                            report
                                .emit(
                                    Step::Wait,
                                    Some(&container),
                                    format!("{} is {}", spec.name, seen.describe()),
                                )
                                .await;
                            return Ok(ContainerState {
                                state: "running".into(),
                                exit_code: None,
                                image: String::new(),
                            });
                        }
                    }
                }
                Expect::Exited(code) => {
                    if exited {
                        let got = seen.exit_code.unwrap_or(-1);
                        if got != code {
                            return Err(unexpected(format!("exited with code {got}")));
                        }
                        report
                            .emit(
                                Step::Wait,
                                Some(&container),
                                format!("{} exited with code {got}", spec.name),
                            )
                            .await;
                        return Ok(ContainerState {
                            state: "exited".into(),
                            exit_code: Some(got),
                            image: String::new(),
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    container,
                    expected,
                    seconds: spec.timeout.as_secs(),
                    last: seen.describe(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    // ------------------------------------------------------------ helpers

    /// The team's containers of a prefix (only init containers when `init_only`).
    async fn list(
        &self,
        team: &str,
        prefix: Option<&str>,
        init_only: bool,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut labels = vec![format!("{LABEL_TEAM}={team}")];
        if let Some(p) = prefix {
            labels.push(format!("{LABEL_PREFIX}={p}"));
        }
        if init_only {
            labels.push(LABEL_INIT.to_owned());
        }
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.engine("listing containers", e))
    }

    /// Stops (gracefully) and removes the matching containers, concurrently.
    async fn remove_matching(
        &self,
        team: &str,
        prefix: &str,
        init_only: bool,
    ) -> Result<Vec<String>, RuntimeError> {
        let found = self.list(team, Some(prefix), init_only).await?;
        let names: Vec<String> = found.iter().filter_map(summary_name).collect();
        try_join_all(names.iter().map(|n| self.stop_and_remove(n))).await?;
        Ok(names)
    }

    async fn stop_and_remove(&self, name: &str) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::new()
            .t(secs_i32(self.stop_timeout))
            .build();
        match self.docker.stop_container(name, Some(options)).await {
            Ok(()) => {}
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => {}
            Err(e) => return Err(self.engine(format!("stopping container {name}"), e)),
        }
        self.remove_container(name).await
    }

    async fn remove_container(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.engine(format!("removing container {name}"), e)),
        }
    }

    /// The team's container by runtime name; another team's container, or
    /// one shoal did not make, is "not found".
    async fn resolve(
        &self,
        team: &str,
        name: &str,
    ) -> Result<ContainerInspectResponse, RuntimeError> {
        let not_found = || RuntimeError::ContainerNotFound {
            name: name.to_owned(),
        };
        if name.is_empty() || name.contains('/') {
            return Err(not_found());
        }
        let info = match self.docker.inspect_container(name, None).await {
            Ok(info) => info,
            Err(e) if status_of(&e) == Some(404) => return Err(not_found()),
            Err(e) => return Err(self.engine(format!("inspecting container {name}"), e)),
        };
        let owner = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_TEAM));
        if owner.map(String::as_str) != Some(team) {
            return Err(not_found());
        }
        Ok(info)
    }

    async fn run_containers(
        &self,
        team: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut out: Vec<ContainerInfo> = self
            .list(team, prefix, false)
            .await?
            .iter()
            .filter_map(container_info)
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
        let info = self.resolve(team, name).await?;
        let id = info.id.unwrap_or_else(|| name.to_owned());
        let container = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_CONTAINER).cloned())
            .unwrap_or_else(|| name.to_owned());
        match action {
            ContainerAction::Start => self
                .docker
                .start_container(&id, None)
                .await
                .map_err(|e| self.start_error(&container, name, e)),
            ContainerAction::Stop => {
                let options = StopContainerOptionsBuilder::new()
                    .t(secs_i32(self.stop_timeout))
                    .build();
                self.docker
                    .stop_container(&id, Some(options))
                    .await
                    .map_err(|e| self.engine(format!("stopping container {name}"), e))
            }
            ContainerAction::Restart => {
                let options = RestartContainerOptionsBuilder::new()
                    .t(secs_i32(self.stop_timeout))
                    .build();
                self.docker
                    .restart_container(&id, Some(options))
                    .await
                    .map_err(|e| {
                        let detail = engine_message(&e);
                        if is_port_conflict(&detail) {
                            RuntimeError::PortInUse {
                                container: container.clone(),
                                detail,
                            }
                        } else {
                            self.engine(format!("restarting container {name}"), e)
                        }
                    })
            }
            ContainerAction::Remove => self.remove_container(&id).await,
        }
    }

    async fn run_logs(
        &self,
        team: &str,
        name: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<LogStream, RuntimeError> {
        let info = self.resolve(team, name).await?;
        let id = info.id.unwrap_or_else(|| name.to_owned());
        let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = LogsOptionsBuilder::new()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let inner = self.docker.logs(&id, Some(options)).boxed();
        let this = self.clone();
        let context = format!("reading the logs of {name}");
        let errors = move |e: DockerError| this.engine(context.clone(), e);
        Ok(log_lines(inner, errors).boxed())
    }

    async fn run_inspect(&self, team: &str, name: &str) -> Result<Value, RuntimeError> {
        let info = self.resolve(team, name).await?;
        let keys = secret_keys(
            info.config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(LABEL_SECRET_KEYS)),
        );
        let mut value = serde_json::to_value(&info).map_err(|e| RuntimeError::Engine {
            context: format!("inspecting container {name}"),
            detail: e.to_string(),
        })?;
        redact_env(&mut value, &keys);
        Ok(value)
    }

    async fn run_remove_prefix(&self, team: &str, prefix: &str) -> Result<Removed, RuntimeError> {
        let mut removed = Removed {
            containers: self.remove_matching(team, prefix, false).await?,
            ..Default::default()
        };

        let network = network_name(prefix);
        match self.docker.inspect_network(&network, None).await {
            Ok(n) => {
                let labels = n.labels.unwrap_or_default();
                if labels.get(LABEL_TEAM).map(String::as_str) == Some(team)
                    && labels.get(LABEL_PREFIX).map(String::as_str) == Some(prefix)
                {
                    match self.docker.remove_network(&network).await {
                        Ok(()) => removed.networks.push(network),
                        Err(e) if status_of(&e) == Some(404) => {}
                        Err(e) => {
                            return Err(self.engine(format!("removing network {network}"), e));
                        }
                    }
                }
            }
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(self.engine(format!("inspecting network {network}"), e)),
        }

        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_TEAM}={team}"),
                format!("{LABEL_PREFIX}={prefix}"),
            ],
        )]);
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let volumes = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| self.engine("listing volumes", e))?
            .volumes
            .unwrap_or_default();
        for v in volumes {
            let options = RemoveVolumeOptionsBuilder::new().force(false).build();
            match self.docker.remove_volume(&v.name, Some(options)).await {
                Ok(()) => removed.volumes.push(v.name),
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(self.engine(format!("removing volume {}", v.name), e)),
            }
        }
        Ok(removed)
    }
}

runtime_from_run_methods!(DockerRuntime);

// ---------------------------------------------------------------- specs

struct ImageReady {
    reference: String,
    digest: Option<String>,
    pulled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Running,
    Exited(i64),
}

impl Expect {
    fn describe(self, health: bool) -> String {
        match self {
            Expect::Running if health => "running and healthy".into(),
            Expect::Running => "running".into(),
            Expect::Exited(code) => format!("exited with code {code}"),
        }
    }
}

/// Everything needed to create one container. Holds secret values (in the
/// create body's env): deliberately not `Debug`.
struct Spec {
    /// Name in the version.
    container: String,
    /// Runtime name, `<prefix>-<container>`.
    name: String,
    reference: String,
    body: ContainerCreateBody,
    extra_networks: Vec<String>,
    named_volumes: NamedVolumes,
    expect: Expect,
    timeout: Duration,
    has_health: bool,
    inits: Vec<InitSpec>,
}

struct InitSpec {
    init: String,
    name: String,
    body: ContainerCreateBody,
}

fn network_name(prefix: &str) -> String {
    format!("{NETWORK_PREFIX}{prefix}")
}

/// Container, volume and init names: what Docker accepts in a name.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn validate_plan(plan: &DeployPlan) -> Result<(), RuntimeError> {
    let invalid = |reason: String| Err(RuntimeError::InvalidPlan { reason });
    if !is_dns_label(&plan.prefix) {
        return invalid(format!(
            "prefix {:?} is not a DNS label ([a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters)",
            plan.prefix
        ));
    }
    if plan.team.is_empty() || plan.team.contains([',', '=']) {
        return invalid(format!("team id {:?} is not usable in a label", plan.team));
    }
    if plan.containers.is_empty() {
        return invalid("no containers to deploy".into());
    }
    let mut seen = BTreeSet::new();
    for c in &plan.containers {
        if !is_name(&c.name) {
            return invalid(format!(
                "container name {:?} may only hold letters, digits, '_', '.' and '-'",
                c.name
            ));
        }
        if !seen.insert(c.name.as_str()) {
            return invalid(format!("container name {:?} is used twice", c.name));
        }
    }
    Ok(())
}

/// The labels every object of a container carries.
fn base_labels(plan: &DeployPlan, container: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_TEAM.to_owned(), plan.team.clone()),
        (LABEL_DEPLOYMENT.to_owned(), plan.deployment.clone()),
        (LABEL_PREFIX.to_owned(), plan.prefix.clone()),
        (LABEL_VERSION.to_owned(), plan.version.clone()),
        (LABEL_TRY.to_owned(), plan.try_number.to_string()),
        (LABEL_CONTAINER.to_owned(), container.to_owned()),
    ])
}

fn build_spec(
    plan: &DeployPlan,
    pc: &PlannedContainer,
    network: &str,
) -> Result<Spec, RuntimeError> {
    let container = pc.name.as_str();
    let invalid = |reason: String| RuntimeError::InvalidConfig {
        container: container.to_owned(),
        reason,
    };
    let mut cfg = pc.config.clone();
    cfg.expand_version(&plan.version);

    for (key, decl) in &cfg.secrets {
        if decl.required && !pc.secrets.0.contains_key(key) {
            return Err(RuntimeError::InvalidPlan {
                reason: format!("container {container}: required secret {key} has no value"),
            });
        }
    }
    let mut env = cfg.env.clone();
    for (k, v) in &pc.secrets.0 {
        if k.is_empty() || k.contains('=') {
            return Err(invalid(format!("secret key {k:?} is not an env name")));
        }
        env.insert(k.clone(), v.clone());
    }
    if let Some(k) = env.keys().find(|k| k.is_empty() || k.contains('=')) {
        return Err(invalid(format!("env key {k:?} is not an env name")));
    }
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();

    let mut labels: HashMap<String, String> = cfg
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with(LABEL_NAMESPACE))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(base_labels(plan, container));
    if !pc.secrets.0.is_empty() {
        let keys: Vec<&str> = pc.secrets.keys().collect();
        labels.insert(LABEL_SECRET_KEYS.to_owned(), keys.join(","));
    }

    let mode = cfg.network_mode.unwrap_or(NetworkMode::Bridge);
    if mode != NetworkMode::Bridge
        && !(cfg.ports.is_empty() && cfg.port_ranges.is_empty() && cfg.networks.is_empty())
    {
        return Err(invalid(format!(
            "network mode {} takes no ports and no networks",
            match mode {
                NetworkMode::Host => "host",
                _ => "none",
            }
        )));
    }
    let bindings = port_bindings(&cfg.ports, &cfg.port_ranges).map_err(invalid)?;
    let (mounts, named_volumes) = mounts(&plan.prefix, &cfg.volumes).map_err(invalid)?;
    for n in &cfg.networks {
        if !is_name(n) {
            return Err(invalid(format!("network name {n:?} is not valid")));
        }
    }

    let nano_cpus = cfg
        .cpu
        .as_deref()
        .map(parse_cpu)
        .transpose()
        .map_err(invalid)?;
    let memory = cfg
        .memory
        .as_deref()
        .map(parse_memory)
        .transpose()
        .map_err(invalid)?;
    let healthcheck = cfg
        .health
        .as_ref()
        .map(health_config)
        .transpose()
        .map_err(invalid)?;
    let restart_policy = cfg.restart.map(|r| DockerRestartPolicy {
        name: Some(match r {
            RestartPolicy::No => RestartPolicyNameEnum::NO,
            RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
            RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
            RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        }),
        maximum_retry_count: None,
    });
    let log_config =
        (cfg.log_driver.is_some() || !cfg.log_options.is_empty()).then(|| HostConfigLogConfig {
            typ: cfg.log_driver.clone(),
            config: Some(
                cfg.log_options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        });
    let (network_mode, networking_config) = match mode {
        NetworkMode::Bridge => (
            network.to_owned(),
            Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_owned(),
                    EndpointSettings {
                        aliases: Some(vec![container.to_owned()]),
                        ..Default::default()
                    },
                )])),
            }),
        ),
        NetworkMode::Host => ("host".to_owned(), None),
        NetworkMode::None => ("none".to_owned(), None),
    };

    let (expect, timeout) = match &cfg.expected {
        None => (Expect::Running, DEFAULT_EXPECTED_TIMEOUT),
        Some(e) => (
            match e.state {
                ExpectedRunState::Running => Expect::Running,
                ExpectedRunState::Exited => Expect::Exited(e.exit_code.unwrap_or(0)),
            },
            e.timeout_s
                .map_or(DEFAULT_EXPECTED_TIMEOUT, |s| Duration::from_secs(s.into())),
        ),
    };

    let exposed: Vec<String> = bindings.keys().cloned().collect();
    let port_map: PortMap = bindings
        .into_iter()
        .map(|(key, hosts)| {
            let list = hosts
                .into_iter()
                .map(|h| PortBinding {
                    host_ip: None,
                    host_port: Some(h),
                })
                .collect();
            (key, Some(list))
        })
        .collect();

    let host_config = HostConfig {
        port_bindings: (!port_map.is_empty()).then_some(port_map),
        mounts: (!mounts.is_empty()).then(|| mounts.clone()),
        nano_cpus,
        memory,
        restart_policy,
        log_config,
        network_mode: Some(network_mode.clone()),
        ..Default::default()
    };
    let name = format!("{}-{container}", plan.prefix);
    let body = ContainerCreateBody {
        image: Some(pc.image.reference.clone()),
        user: cfg.user.clone(),
        working_dir: cfg.working_dir.clone(),
        tty: cfg.tty,
        env: Some(env),
        entrypoint: cfg.command.clone(),
        cmd: cfg.args.clone(),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        host_config: Some(host_config),
        networking_config: networking_config.clone(),
        ..Default::default()
    };

    let mut inits = Vec::new();
    for init in &cfg.init_containers {
        if !is_name(&init.name) {
            return Err(invalid(format!(
                "init container name {:?} may only hold letters, digits, '_', '.' and '-'",
                init.name
            )));
        }
        let Some(src) = pc.init_images.get(&init.name) else {
            return Err(RuntimeError::InvalidPlan {
                reason: format!(
                    "container {container}: no image resolved for init container {}",
                    init.name
                ),
            });
        };
        let mut labels = base_labels(plan, container);
        labels.insert(LABEL_INIT.to_owned(), init.name.clone());
        let env = init
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace("{{version}}", &plan.version)))
            .collect();
        inits.push(InitSpec {
            init: init.name.clone(),
            name: format!("{name}-init-{}", init.name),
            body: ContainerCreateBody {
                image: Some(src.reference.clone()),
                env: Some(env),
                entrypoint: (!init.command.is_empty()).then(|| init.command.clone()),
                cmd: (!init.args.is_empty()).then(|| init.args.clone()),
                labels: Some(labels),
                host_config: Some(HostConfig {
                    mounts: (!mounts.is_empty()).then(|| mounts.clone()),
                    network_mode: Some(network_mode.clone()),
                    ..Default::default()
                }),
                networking_config: networking_config.clone(),
                ..Default::default()
            },
        });
    }

    Ok(Spec {
        container: container.to_owned(),
        name,
        reference: pc.image.reference.clone(),
        body,
        extra_networks: cfg.networks.clone(),
        named_volumes,
        expect,
        timeout,
        has_health: healthcheck_is_active(cfg.health.as_ref()),
        inits,
    })
}

fn healthcheck_is_active(h: Option<&HealthCheck>) -> bool {
    h.is_some_and(|h| h.command.first().map(String::as_str) != Some("NONE"))
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Container port key (`"8080/tcp"`) → host ports (`""` lets the engine
/// pick one; `"9000-9010"` lets it pick in a range).
fn port_bindings(
    ports: &[Port],
    ranges: &[PortRange],
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in ports {
        if p.internal == 0 || p.external == Some(0) {
            return Err(format!("port {}: 0 is not a port", p.internal));
        }
        out.entry(format!("{}/{}", p.internal, proto(p.protocol)))
            .or_default()
            .push(p.external.map(|e| e.to_string()).unwrap_or_default());
    }
    for r in ranges {
        let shown = format!(
            "port range {}-{}:{}-{}",
            r.external_from, r.external_to, r.internal_from, r.internal_to
        );
        if r.internal_from == 0
            || r.external_from == 0
            || r.internal_from > r.internal_to
            || r.external_from > r.external_to
        {
            return Err(format!(
                "{shown}: each range must go from a port up to a port"
            ));
        }
        let internal_len = r.internal_to - r.internal_from;
        let external_len = r.external_to - r.external_from;
        if internal_len == external_len {
            for i in 0..=internal_len {
                out.entry(format!("{}/{}", r.internal_from + i, proto(r.protocol)))
                    .or_default()
                    .push((r.external_from + i).to_string());
            }
        } else if internal_len == 0 {
            out.entry(format!("{}/{}", r.internal_from, proto(r.protocol)))
                .or_default()
                .push(format!("{}-{}", r.external_from, r.external_to));
        } else {
            return Err(format!(
                "{shown}: the ranges must have the same length, or the internal one be a single port"
            ));
        }
    }
    Ok(out)
}

/// Named volumes of a container: (runtime name, config name).
type NamedVolumes = Vec<(String, String)>;

/// Mounts of a container, and its named volumes.
fn mounts(prefix: &str, volumes: &[Volume]) -> Result<(Vec<Mount>, NamedVolumes), String> {
    let mut mounts = Vec::new();
    let mut named = Vec::new();
    for v in volumes {
        if !v.path.starts_with('/') {
            return Err(format!("volume path {:?} must be absolute", v.path));
        }
        let read_only = v.kind == VolumeKind::Ro;
        let mount = match v.kind {
            VolumeKind::Tmpfs => Mount {
                target: Some(v.path.clone()),
                typ: Some(MountType::TMPFS),
                tmpfs_options: match &v.size {
                    Some(size) => Some(MountTmpfsOptions {
                        size_bytes: Some(parse_memory(size)?),
                        mode: None,
                        options: None,
                    }),
                    None => None,
                },
                ..Default::default()
            },
            VolumeKind::Rw | VolumeKind::Ro if v.name.starts_with('/') => Mount {
                target: Some(v.path.clone()),
                source: Some(v.name.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(read_only),
                ..Default::default()
            },
            VolumeKind::Rw | VolumeKind::Ro if v.name.is_empty() => Mount {
                target: Some(v.path.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(read_only),
                ..Default::default()
            },
            VolumeKind::Rw | VolumeKind::Ro => {
                if !is_name(&v.name) {
                    return Err(format!(
                        "volume name {:?} may only hold letters, digits, '_', '.' and '-' (or be an absolute host path)",
                        v.name
                    ));
                }
                let runtime_name = format!("{prefix}-{}", v.name);
                named.push((runtime_name.clone(), v.name.clone()));
                Mount {
                    target: Some(v.path.clone()),
                    source: Some(runtime_name),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(read_only),
                    ..Default::default()
                }
            }
        };
        mounts.push(mount);
    }
    Ok((mounts, named))
}

/// A health check: `CMD`, `CMD-SHELL` or `NONE` first are kept as given;
/// any other command is run as `CMD` (no shell).
fn health_config(h: &HealthCheck) -> Result<HealthConfig, String> {
    let test = match h.command.first().map(String::as_str) {
        None => return Err("the health check has no command".into()),
        Some("CMD" | "CMD-SHELL" | "NONE") => h.command.clone(),
        Some(_) => std::iter::once("CMD".to_owned())
            .chain(h.command.iter().cloned())
            .collect(),
    };
    if test.len() < 2 && test.first().map(String::as_str) != Some("NONE") {
        return Err("the health check has no command".into());
    }
    let nanos = |ms: Option<u64>| {
        ms.map(|ms| {
            i64::try_from(ms)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000)
        })
    };
    Ok(HealthConfig {
        test: Some(test),
        interval: nanos(h.interval_ms),
        timeout: nanos(h.timeout_ms),
        retries: h.retries.map(i64::from),
        start_period: nanos(h.start_period_ms),
        start_interval: None,
    })
}

// ---------------------------------------------------------------- state

/// What one inspect showed of a container's state.
struct Seen {
    status: Option<ContainerStateStatusEnum>,
    exit_code: Option<i64>,
    restarts: i64,
    health: Option<HealthStatusEnum>,
    health_output: Option<String>,
}

impl Seen {
    fn of(info: &ContainerInspectResponse) -> Self {
        let state = info.state.as_ref();
        let health = state.and_then(|s| s.health.as_ref());
        let health_output = health
            .and_then(|h| h.log.as_ref())
            .and_then(|log| log.last())
            .map(|r| {
                let out = r.output.as_deref().unwrap_or("").trim();
                let out: String = out.chars().take(HEALTH_OUTPUT_MAX).collect();
                format!(
                    "the health check exited with code {}{}",
                    r.exit_code.unwrap_or(-1),
                    if out.is_empty() {
                        String::new()
                    } else {
                        format!(": {out}")
                    }
                )
            });
        Self {
            status: state.and_then(|s| s.status),
            exit_code: state.and_then(|s| s.exit_code),
            restarts: info.restart_count.unwrap_or(0),
            health: health.and_then(|h| h.status),
            health_output,
        }
    }

    fn describe(&self) -> String {
        let status = self
            .status
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        match self.health {
            Some(
                h @ (HealthStatusEnum::STARTING
                | HealthStatusEnum::HEALTHY
                | HealthStatusEnum::UNHEALTHY),
            ) => format!("{status} ({h})"),
            _ => status,
        }
    }
}

fn summary_name(s: &ContainerSummary) -> Option<String> {
    s.names
        .as_ref()?
        .first()
        .map(|n| n.trim_start_matches('/').to_owned())
}

fn container_info(s: &ContainerSummary) -> Option<ContainerInfo> {
    let name = summary_name(s)?;
    let labels = s.labels.clone().unwrap_or_default();
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let status = s.status.clone().unwrap_or_default();
    let state = s.state.map_or_else(String::new, |st| st.to_string());
    let exit_code = (state == "exited").then(|| exit_code_of(&status)).flatten();
    let ports = s
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PublishedPort {
                internal: p.private_port,
                protocol: match p.typ {
                    Some(PortSummaryTypeEnum::UDP) => Protocol::Udp,
                    _ => Protocol::Tcp,
                },
                host_ip: p.ip.clone().unwrap_or_default(),
                host_port: p.public_port?,
            })
        })
        .collect();
    Some(ContainerInfo {
        name,
        id: s.id.clone().unwrap_or_default(),
        prefix: label(LABEL_PREFIX),
        container: label(LABEL_CONTAINER),
        deployment: label(LABEL_DEPLOYMENT),
        version: label(LABEL_VERSION),
        try_number: label(LABEL_TRY).parse().unwrap_or(0),
        init: labels.get(LABEL_INIT).cloned(),
        state: ContainerState {
            state,
            exit_code,
            image: s.image.clone().unwrap_or_default(),
        },
        status,
        ports,
    })
}

/// The exit code in an engine status like `"Exited (3) 5 seconds ago"`.
fn exit_code_of(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split(')').next()?.parse().ok()
}

// ---------------------------------------------------------------- images

fn docker_credentials(src: &ImageSource) -> Option<DockerCredentials> {
    src.credentials.as_ref().map(|c| DockerCredentials {
        username: Some(c.user.clone()),
        password: Some(c.password.clone()),
        serveraddress: Some(registry_host(&src.reference, DOCKER_HUB)),
        ..Default::default()
    })
}

/// `sha256:…` from `repo@sha256:…`.
fn digest_part(repo_digest: &str) -> Option<String> {
    repo_digest.rsplit_once('@').map(|(_, d)| d.to_owned())
}

fn short_digest(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex.get(..12).unwrap_or(hex)
}

fn classify_registry_message(reference: &str, detail: String) -> RuntimeError {
    let lower = detail.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let reference = reference.to_owned();
    if any(&[
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
        "denied",
        "incorrect username or password",
    ]) {
        RuntimeError::RegistryAuth { reference, detail }
    } else if any(&[
        "manifest unknown",
        "not found",
        "name unknown",
        "does not exist",
        "invalid reference format",
    ]) {
        RuntimeError::ImageNotFound { reference, detail }
    } else if any(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "dial tcp",
        "network is unreachable",
        "server gave http response to https client",
        "tls:",
        "x509:",
        "timeout exceeded",
    ]) {
        RuntimeError::RegistryUnreachable { reference, detail }
    } else {
        RuntimeError::Pull { reference, detail }
    }
}

// ---------------------------------------------------------------- errors

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message when there is one.
fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        DockerError::DockerStreamError { error } => error.trim().to_owned(),
        other => error_chain(other),
    }
}

/// Failures to talk to the engine at all (as opposed to its answers).
fn is_transport_error(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::IOError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_)
    )
}

fn is_port_conflict(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    lower.contains("port is already allocated") || lower.contains("address already in use")
}

fn socket_path(endpoint: &str) -> Result<String, RuntimeError> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return Ok(path.to_owned());
    }
    if endpoint.starts_with('/') {
        return Ok(endpoint.to_owned());
    }
    Err(RuntimeError::UnsupportedEndpoint {
        endpoint: endpoint.to_owned(),
    })
}

fn secs_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

// ---------------------------------------------------------------- inspect

// ---------------------------------------------------------------- logs

/// Splits raw output chunks into lines, per source.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: BTreeMap<u8, Vec<u8>>,
}

fn source_key(s: LogSource) -> u8 {
    match s {
        LogSource::Stdout => 0,
        LogSource::Stderr => 1,
        LogSource::Console => 2,
    }
}

fn source_of(key: u8) -> LogSource {
    match key {
        0 => LogSource::Stdout,
        1 => LogSource::Stderr,
        _ => LogSource::Console,
    }
}

fn line_of(source: LogSource, mut bytes: Vec<u8>) -> LogLine {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    LogLine {
        source,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

impl LineSplitter {
    fn push(&mut self, source: LogSource, chunk: &[u8], out: &mut VecDeque<LogLine>) {
        let buf = self.partial.entry(source_key(source)).or_default();
        buf.extend_from_slice(chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let rest = buf.split_off(i + 1);
            let mut line = std::mem::replace(buf, rest);
            line.pop();
            out.push_back(line_of(source, line));
        }
    }

    fn finish(&mut self, out: &mut VecDeque<LogLine>) {
        for (key, buf) in std::mem::take(&mut self.partial) {
            if !buf.is_empty() {
                out.push_back(line_of(source_of(key), buf));
            }
        }
    }
}

/// Turns the engine's output chunks into lines.
fn log_lines<S, F>(inner: S, errors: F) -> impl Stream<Item = Result<LogLine, RuntimeError>>
where
    S: Stream<Item = Result<LogOutput, DockerError>> + Unpin + Send + 'static,
    F: Fn(DockerError) -> RuntimeError + Send + 'static,
{
    struct State<S, F> {
        inner: S,
        errors: F,
        splitter: LineSplitter,
        ready: VecDeque<LogLine>,
        done: bool,
    }
    let state = State {
        inner,
        errors,
        splitter: LineSplitter::default(),
        ready: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(line) = st.ready.pop_front() {
                return Some((Ok(line), st));
            }
            if st.done {
                return None;
            }
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    let (source, bytes) = match &chunk {
                        LogOutput::StdOut { message } => (LogSource::Stdout, message),
                        LogOutput::StdErr { message } => (LogSource::Stderr, message),
                        LogOutput::Console { message } => (LogSource::Console, message),
                        LogOutput::StdIn { .. } => continue,
                    };
                    st.splitter.push(source, bytes, &mut st.ready);
                }
                Some(Err(e)) => {
                    st.done = true;
                    let err = (st.errors)(e);
                    return Some((Err(err), st));
                }
                None => {
                    st.done = true;
                    st.splitter.finish(&mut st.ready);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn port(internal: u16, external: Option<u16>, protocol: Protocol) -> Port {
        Port {
            internal,
            external,
            protocol,
        }
    }

    fn range(i: (u16, u16), e: (u16, u16), protocol: Protocol) -> PortRange {
        PortRange {
            internal_from: i.0,
            internal_to: i.1,
            external_from: e.0,
            external_to: e.1,
            protocol,
        }
    }

    #[test]
    fn ports_map_to_keys_with_protocol_and_host_ports() {
        let m = port_bindings(
            &[
                port(8080, Some(80), Protocol::Tcp),
                port(53, Some(5353), Protocol::Udp),
                port(9000, None, Protocol::Tcp),
                port(8080, Some(8080), Protocol::Tcp),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(m["8080/tcp"], vec!["80", "8080"]);
        assert_eq!(m["53/udp"], vec!["5353"]);
        assert_eq!(m["9000/tcp"], vec![""]);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn port_ranges_map_one_to_one_or_onto_a_host_range() {
        let m = port_bindings(
            &[],
            &[
                range((7000, 7002), (17000, 17002), Protocol::Udp),
                range((80, 80), (8000, 8010), Protocol::Tcp),
            ],
        )
        .unwrap();
        assert_eq!(m["7000/udp"], vec!["17000"]);
        assert_eq!(m["7001/udp"], vec!["17001"]);
        assert_eq!(m["7002/udp"], vec!["17002"]);
        assert_eq!(m["80/tcp"], vec!["8000-8010"]);
        assert_eq!(m.len(), 4);

        for bad in [
            range((7000, 7003), (17000, 17001), Protocol::Tcp),
            range((7003, 7000), (17000, 17003), Protocol::Tcp),
            range((0, 0), (1, 1), Protocol::Tcp),
        ] {
            assert!(
                port_bindings(&[], std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
        assert!(port_bindings(&[port(0, None, Protocol::Tcp)], &[]).is_err());
    }

    #[test]
    fn volumes_map_to_prefixed_named_volumes_binds_and_tmpfs() {
        let vol = |name: &str, path: &str, kind, size: Option<&str>| Volume {
            name: name.into(),
            path: path.into(),
            kind,
            size: size.map(Into::into),
        };
        let (m, named) = mounts(
            "shop",
            &[
                vol("data", "/data", VolumeKind::Rw, None),
                vol("conf", "/etc/app", VolumeKind::Ro, None),
                vol("", "/scratch", VolumeKind::Tmpfs, Some("64m")),
                vol("/srv/host", "/host", VolumeKind::Ro, None),
            ],
        )
        .unwrap();
        assert_eq!(m[0].source.as_deref(), Some("shop-data"));
        assert_eq!(m[0].typ, Some(MountType::VOLUME));
        assert_eq!(m[0].read_only, Some(false));
        assert_eq!(m[1].source.as_deref(), Some("shop-conf"));
        assert_eq!(m[1].read_only, Some(true));
        assert_eq!(m[2].typ, Some(MountType::TMPFS));
        assert_eq!(
            m[2].tmpfs_options.as_ref().and_then(|t| t.size_bytes),
            Some(64 << 20)
        );
        assert_eq!(m[3].typ, Some(MountType::BIND));
        assert_eq!(m[3].source.as_deref(), Some("/srv/host"));
        assert_eq!(
            named,
            vec![
                ("shop-data".to_owned(), "data".to_owned()),
                ("shop-conf".to_owned(), "conf".to_owned())
            ]
        );
        assert!(mounts("p", &[vol("x", "relative", VolumeKind::Rw, None)]).is_err());
        assert!(mounts("p", &[vol("a b", "/x", VolumeKind::Rw, None)]).is_err());
        assert!(mounts("p", &[vol("", "/x", VolumeKind::Tmpfs, Some("lots"))]).is_err());
    }

    #[test]
    fn health_checks_run_as_cmd_unless_told_otherwise() {
        let h = |cmd: &[&str]| HealthCheck {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            interval_ms: Some(500),
            timeout_ms: None,
            retries: Some(3),
            start_period_ms: Some(1000),
        };
        let c = health_config(&h(&["wget", "-q", "localhost"])).unwrap();
        assert_eq!(c.test.unwrap(), vec!["CMD", "wget", "-q", "localhost"]);
        assert_eq!(c.interval, Some(500_000_000));
        assert_eq!(c.start_period, Some(1_000_000_000));
        assert_eq!(c.retries, Some(3));
        assert_eq!(c.timeout, None);
        let c = health_config(&h(&["CMD-SHELL", "test -f /ok"])).unwrap();
        assert_eq!(c.test.unwrap(), vec!["CMD-SHELL", "test -f /ok"]);
        assert!(health_config(&h(&[])).is_err());
        assert!(health_config(&h(&["CMD"])).is_err());
    }

    #[test]
    fn registry_hosts_and_digests() {
        assert_eq!(
            registry_host("127.0.0.1:5000/a/b:1", DOCKER_HUB),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host("ghcr.io/org/app:1", DOCKER_HUB), "ghcr.io");
        assert_eq!(registry_host("localhost/app", DOCKER_HUB), "localhost");
        assert_eq!(registry_host("library/nginx:1", DOCKER_HUB), "docker.io");
        assert_eq!(registry_host("nginx", DOCKER_HUB), "docker.io");
        assert_eq!(
            digest_part("127.0.0.1:5000/a@sha256:abc").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
    }

    #[test]
    fn registry_messages_classify() {
        let c = |m: &str| classify_registry_message("r", m.to_owned());
        assert!(matches!(
            c("Head \"http://h/v2/x/manifests/1\": no basic auth credentials"),
            RuntimeError::RegistryAuth { .. }
        ));
        assert!(matches!(
            c("unauthorized: authentication required"),
            RuntimeError::RegistryAuth { .. }
        ));
        assert!(matches!(
            c("manifest unknown: manifest unknown"),
            RuntimeError::ImageNotFound { .. }
        ));
        assert!(matches!(
            c(
                "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused"
            ),
            RuntimeError::RegistryUnreachable { .. }
        ));
        assert!(matches!(c("something else"), RuntimeError::Pull { .. }));
    }

    #[test]
    fn engine_status_exit_codes() {
        assert_eq!(exit_code_of("Exited (3) 5 seconds ago"), Some(3));
        assert_eq!(exit_code_of("Exited (137) About a minute ago"), Some(137));
        assert_eq!(exit_code_of("Up 3 minutes"), None);
    }

    #[test]
    fn output_chunks_split_into_lines_per_source() {
        let mut s = LineSplitter::default();
        let mut out = VecDeque::new();
        s.push(LogSource::Stdout, b"one\ntw", &mut out);
        s.push(LogSource::Stderr, b"err\r\n", &mut out);
        s.push(LogSource::Stdout, b"o\nthree", &mut out);
        s.finish(&mut out);
        let got: Vec<(LogSource, String)> = out.into_iter().map(|l| (l.source, l.text)).collect();
        assert_eq!(
            got,
            vec![
                (LogSource::Stdout, "one".to_owned()),
                (LogSource::Stderr, "err".to_owned()),
                (LogSource::Stdout, "two".to_owned()),
                (LogSource::Stdout, "three".to_owned()),
            ]
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(socket_path("unix:///run/d.sock").unwrap(), "/run/d.sock");
        assert_eq!(socket_path("/run/d.sock").unwrap(), "/run/d.sock");
        assert!(matches!(
            socket_path("tcp://1.2.3.4:2375"),
            Err(RuntimeError::UnsupportedEndpoint { .. })
        ));
    }
}
