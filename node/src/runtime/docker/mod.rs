//! The Docker runtime, on the Engine API through bollard.
//!
//! Connection: a Unix socket, from the endpoint given, else `DOCKER_HOST`
//! (`unix:///path`), else [`DEFAULT_SOCKET`]. The API version is negotiated
//! with the engine, so engines speaking API 1.41 (Docker 20.10) work.
//!
//! What a deployment makes, all labelled with the team and prefix (see the
//! `LABEL_*` constants in the parent module; containers also with their
//! product and deployment):
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
//! run this try's init containers one after the other; set the product's
//! previous containers aside (renamed `<name>.prev-up` / `<name>.prev` and
//! stopped; other products of the prefix are never touched, see
//! `replace.rs`); create and start the containers one by one in the plan's
//! order, each waited for in its expected state before the next: `running`
//! means healthy when it has a health check, else up without a restart for
//! [`STEP_SETTLE`] before the next starts and for [`RUNNING_SETTLE`] (all
//! checked again at the end) before the try succeeds; `exited` means exited
//! with the expected code (0 when none is given). Then the containers aside are removed; when the try
//! fails they get their names back and run again. `{{version}}` in env
//! values is expanded here.
//!
//! Teardown (`teardown.rs`) removes one deployment's containers, found by
//! their team and deployment labels, the prefix's network when no container
//! of the prefix is left, and with `volumes` the named volumes they mounted
//! that nothing else uses.

mod command;
mod deploy;
mod error;
mod inspect;
mod live;
mod logs;
mod network;
mod pull;
mod replace;
mod spec;
mod state;
mod teardown;

use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::{API_DEFAULT_VERSION, Docker};
use tracing::debug;

use super::RuntimeError;
use super::common::{error_chain, runtime_from_run_methods};

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
/// How long such a container must stay up before the next one in the
/// version's order starts: it did not exit or restart at once. Every one is
/// held to [`RUNNING_SETTLE`] before the try succeeds, so ordering does not
/// cost a full settle per container.
pub const STEP_SETTLE: Duration = Duration::from_millis(250);
/// Time between two state checks while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Prefix of the per-prefix network's name.
pub const NETWORK_PREFIX: &str = "shoal-";

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
}

runtime_from_run_methods!(DockerRuntime, {
    fn teardown<'a>(
        &'a self,
        team: &'a str,
        deployment: &'a str,
        prefix: &'a str,
        volumes: bool,
    ) -> futures::future::BoxFuture<'a, Result<crate::runtime::Removed, RuntimeError>> {
        futures::FutureExt::boxed(self.run_teardown(team, deployment, prefix, volumes))
    }

    fn live<'a>(
        &'a self,
        team: &'a str,
    ) -> futures::future::BoxFuture<
        'a,
        Result<Vec<shoal_protocol::heartbeat::LiveContainer>, RuntimeError>,
    > {
        futures::FutureExt::boxed(self.run_live(team))
    }

    fn prune_images<'a>(
        &'a self,
        repos: &'a std::collections::BTreeSet<String>,
        keep: &'a std::collections::BTreeSet<String>,
    ) -> futures::future::BoxFuture<'a, Result<Vec<String>, RuntimeError>> {
        futures::FutureExt::boxed(self.run_prune_images(repos, keep))
    }

    fn changes<'a>(
        &'a self,
        team: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<futures::stream::BoxStream<'static, ()>, RuntimeError>>
    {
        futures::FutureExt::boxed(self.run_changes(team))
    }
});

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
