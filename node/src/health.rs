//! Runtime health: does this node's container runtime answer now?
//!
//! Asked by `shoal node show` through `GET /v1/node/health`: the daemon
//! asks its runtime the way the executor does (Docker: `DOCKER_HOST` or the
//! default socket; Kubernetes: the cluster client the daemon connected at
//! start, from its kubeconfig or service account) with one cheap request
//! (Docker's version, the API server's version), bounded by
//! [`HEALTH_TIMEOUT`].

use std::time::{Duration, Instant};

use serde::Serialize;
use shoal_protocol::model::Runtime;

use crate::runtime::{DockerRuntime, KubernetesRuntime};

/// How long a health check waits for the runtime.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// The answer of one health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeHealth {
    /// `docker`, `kubernetes` or `none`.
    pub runtime: String,
    /// The runtime answered (always true for `none`, which has nothing to ask).
    pub ok: bool,
    /// What the runtime said (`Docker 27.3.1 (API 1.47)`), or why it did not
    /// answer.
    pub detail: String,
    /// How long the check took.
    pub elapsed_ms: u64,
}

/// Checks `runtime`, waiting at most `timeout`. `kube` is the daemon's
/// cluster client (kubernetes nodes connect once, at start).
pub async fn check(
    runtime: Runtime,
    kube: Option<&KubernetesRuntime>,
    timeout: Duration,
) -> RuntimeHealth {
    let started = Instant::now();
    let answer = match runtime {
        Runtime::None => Ok("this node runs no containers (runtime none)".to_string()),
        Runtime::Docker => within(timeout, async {
            DockerRuntime::connect(None)
                .await
                .map_err(|e| e.to_string())?
                .ping()
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("{e}; the executor cannot run deployments here until it answers")),
        Runtime::Kubernetes => within(timeout, async {
            kube.ok_or_else(|| {
                "no cluster client: the daemon did not connect at start".to_string()
            })?
            .ping()
            .await
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("{e}; the executor cannot run deployments here until it answers")),
    };
    let (ok, detail) = match answer {
        Ok(d) => (true, d),
        Err(e) => (false, e),
    };
    RuntimeHealth {
        runtime: runtime.to_string(),
        ok,
        detail,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

async fn within(
    timeout: Duration,
    fut: impl Future<Output = Result<String, String>>,
) -> Result<String, String> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn none_is_healthy_and_says_why() {
        let h = check(Runtime::None, None, HEALTH_TIMEOUT).await;
        assert!(h.ok);
        assert_eq!(h.runtime, "none");
        assert!(h.detail.contains("no containers"), "{}", h.detail);
    }

    #[tokio::test]
    async fn a_runtime_that_never_answers_times_out() {
        let h = within(Duration::from_millis(20), std::future::pending()).await;
        assert!(h.unwrap_err().contains("no answer within"));
    }
}
