//! Prometheus metrics, served on an opt-in address (`--metrics ADDR`,
//! loopback by default) at `GET /metrics` in the text exposition format.
//!
//! Gauges are read from the running teams at each scrape (nothing to keep in
//! step); the executor's try durations are a process-wide histogram
//! ([`record_try`]). Metric names, all prefixed `shoal_`:
//! - `shoal_info{version}` 1
//! - `shoal_teams` teams this node runs
//! - `shoal_peers_connected{team}` team nodes with a connection now
//! - `shoal_ops_applied{team}` ops in the replica
//! - `shoal_ops_rejected_total{team}` ops refused since the daemon started (counter)
//! - `shoal_ops_quarantined{team}` ops refused and kept in the store's quarantine
//! - `shoal_ops_waiting{team}` ops held back for missing dependencies or a future clock
//! - `shoal_sync_lag_ops{team,peer,direction}` ops one side lacks, from the
//!   peer's version vector as last seen in anti-entropy: `direction="to_peer"`
//!   ops here the peer lacks, `"from_peer"` ops the peer holds that are
//!   missing here; `peer` is the node's name (its key when unnamed)
//! - `shoal_store_size_bytes` size of the store file
//! - `shoal_store_write_transactions_total` store commits since the daemon
//!   started (each one fsync; received ops waiting together share one)
//! - `shoal_nodes{team,status}` nodes by status (connected, unreachable, removed)
//! - `shoal_deployments{team,status}` deployments by status
//! - `shoal_executor_try_seconds{outcome}` histogram of deployment try durations
//! - `shoal_container_state{team,prefix,name,deployment,state}` 1 per
//!   container of the team on this node, labelled with its runtime state
//!   (from the live state the node's live reports carry)
//! - `shoal_container_healthy{team,prefix,name}` 1 healthy, 0 unhealthy or
//!   starting (containers with a health check only)
//! - `shoal_container_restarts{team,prefix,name}` restarts counted by the engine
//! - `shoal_node_cpu_usage_ratio` share of all CPUs busy (0..1) since the
//!   previous look; `shoal_node_cpus`; `shoal_node_memory_used_bytes`,
//!   `shoal_node_memory_total_bytes`; `shoal_node_disk_used_bytes`,
//!   `shoal_node_disk_total_bytes` (the file system of the data directory)

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::teams::TeamMap;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TeamLabel {
    team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TeamStatus {
    team: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabel {
    team: String,
    peer: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabel {
    team: String,
    prefix: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerStateLabel {
    team: String,
    prefix: String,
    name: String,
    deployment: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type TryHistogram = Family<OutcomeLabel, Histogram, fn() -> Histogram>;

/// Outcomes of a try, each reported (at zero) before any try ran.
const TRY_OUTCOMES: [&str; 2] = ["successful", "failed"];

/// Every deployment status, each reported per team (0 when none).
const DEPLOYMENT_STATUSES: [&str; 6] = [
    "preparing",
    "in-progress",
    "successful",
    "failed",
    "obsolete",
    "downgraded",
];

fn try_histogram() -> &'static TryHistogram {
    static H: OnceLock<TryHistogram> = OnceLock::new();
    H.get_or_init(|| {
        let h: TryHistogram =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.25, 2.0, 12)));
        for outcome in TRY_OUTCOMES {
            drop(h.get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            }));
        }
        h
    })
}

/// Records one deployment try's duration (`outcome`: successful or failed).
pub fn record_try(outcome: &str, seconds: f64) {
    try_histogram()
        .get_or_create(&OutcomeLabel {
            outcome: outcome.to_string(),
        })
        .observe(seconds);
}

/// Errors starting the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The running metrics endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl MetricsServer {
    /// Waits for the server to stop (after its token fired).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Serves `/metrics` on `addr` until `cancel` fires.
pub async fn serve(
    addr: SocketAddr,
    teams: TeamMap,
    cancel: CancellationToken,
) -> Result<MetricsServer, MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(teams));
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    });
    Ok(MetricsServer { addr, task })
}

async fn scrape(State(teams): State<Arc<TeamMap>>) -> impl IntoResponse {
    match render(&teams).await {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e,
        ),
    }
}

/// The metrics text of every running team.
pub async fn render(teams: &TeamMap) -> Result<String, String> {
    let entries = teams.read().map(|m| m.clone()).unwrap_or_default();
    let mut reg = Registry::with_prefix("shoal");
    let info = Family::<VersionLabel, Gauge>::default();
    info.get_or_create(&VersionLabel {
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
    .set(1);
    reg.register("info", "This build of shoal", info);
    let team_count = Gauge::<i64>::default();
    team_count.set(entries.len() as i64);
    reg.register("teams", "Teams this node runs", team_count);

    let peers = Family::<TeamLabel, Gauge>::default();
    let applied = Family::<TeamLabel, Gauge>::default();
    let rejected = Family::<TeamLabel, Counter>::default();
    let lag = Family::<LagLabel, Gauge>::default();
    let store_size = Gauge::<i64>::default();
    let store_writes = Counter::<u64>::default();
    let quarantined = Family::<TeamLabel, Gauge>::default();
    let waiting = Family::<TeamLabel, Gauge>::default();
    let nodes = Family::<TeamStatus, Gauge>::default();
    let deployments = Family::<TeamStatus, Gauge>::default();
    let container_state = Family::<ContainerStateLabel, Gauge>::default();
    let container_healthy = Family::<ContainerLabel, Gauge>::default();
    let container_restarts = Family::<ContainerLabel, Gauge>::default();
    let mut load = None;
    for (id, entry) in &entries {
        let team = id.to_hex();
        let label = TeamLabel { team: team.clone() };
        let live = entry.live.borrow().clone();
        if let Some(live) = live {
            load = load.or(live.load);
            for c in &live.containers {
                let l = ContainerLabel {
                    team: team.clone(),
                    prefix: c.prefix.clone(),
                    name: c.name.clone(),
                };
                container_state
                    .get_or_create(&ContainerStateLabel {
                        team: team.clone(),
                        prefix: c.prefix.clone(),
                        name: c.name.clone(),
                        deployment: c.deployment.clone(),
                        state: c.state.clone(),
                    })
                    .set(1);
                container_restarts
                    .get_or_create(&l)
                    .set(i64::from(c.restarts));
                if let Some(h) = &c.health {
                    container_healthy
                        .get_or_create(&l)
                        .set(i64::from(h == "healthy"));
                }
            }
        }
        if let Ok(p) = entry.mesh.peers().await {
            peers.get_or_create(&label).set(p.len() as i64);
        }
        let counts = entry
            .sync
            .read(|r| {
                let s = r.state();
                let mut by_status: std::collections::BTreeMap<String, i64> = DEPLOYMENT_STATUSES
                    .iter()
                    .map(|s| (s.to_string(), 0))
                    .collect();
                for d in s.deployments.values() {
                    *by_status.entry(d.status.as_str().to_string()).or_default() += 1;
                }
                by_status
            })
            .await;
        let Ok(by_status) = counts else {
            continue;
        };
        let store = Arc::clone(entry.sync.store());
        let team_id = *id;
        let on_disk = tokio::task::spawn_blocking(move || {
            (store.quarantine_count(team_id), store.size_bytes())
        })
        .await
        .map_err(|e| e.to_string())?;
        let quar = on_disk.0.map_err(|e| e.to_string())?;
        store_size.set(i64::try_from(on_disk.1.map_err(|e| e.to_string())?).unwrap_or(i64::MAX));
        // One store per node: every team's entry names the same one.
        let writes = entry.sync.store().write_transactions();
        store_writes.inc_by(writes.saturating_sub(store_writes.get()));
        quarantined
            .get_or_create(&label)
            .set(i64::try_from(quar).unwrap_or(i64::MAX));
        let Ok(stats) = entry.sync.stats().await else {
            continue;
        };
        applied
            .get_or_create(&label)
            .set(i64::try_from(stats.applied).unwrap_or(i64::MAX));
        waiting
            .get_or_create(&label)
            .set(i64::try_from(stats.waiting).unwrap_or(i64::MAX));
        rejected.get_or_create(&label).inc_by(stats.rejected);
        let state = entry.sync.state().await.map_err(|e| e.to_string())?;
        for p in &stats.peers {
            let key = p.key.to_hex();
            let peer = state
                .nodes
                .get(&key)
                .map(|n| n.name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or(key);
            for (direction, n) in [("to_peer", p.they_lack), ("from_peer", p.we_lack)] {
                if let Some(n) = n {
                    lag.get_or_create(&LagLabel {
                        team: team.clone(),
                        peer: peer.clone(),
                        direction: direction.to_string(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
        }
        for (status, n) in by_status {
            deployments
                .get_or_create(&TeamStatus {
                    team: team.clone(),
                    status,
                })
                .set(n);
        }
        if let Ok(list) = entry.sync.status().await {
            for n in state.nodes.values() {
                let status = if n.removed.is_some() {
                    "removed"
                } else if list.iter().any(|b| b.key.to_hex() == n.key && b.connected) {
                    "connected"
                } else {
                    "unreachable"
                };
                nodes
                    .get_or_create(&TeamStatus {
                        team: team.clone(),
                        status: status.to_string(),
                    })
                    .inc();
            }
        }
    }
    reg.register("peers_connected", "Team nodes with a connection now", peers);
    reg.register("ops_applied", "Ops in the team's replica", applied);
    reg.register(
        "ops_rejected",
        "Ops refused by this replica since the daemon started",
        rejected,
    );
    reg.register(
        "ops_quarantined",
        "Ops refused and kept in quarantine",
        quarantined,
    );
    reg.register(
        "ops_waiting",
        "Ops held back for missing dependencies or a future clock",
        waiting,
    );
    reg.register(
        "sync_lag_ops",
        "Ops one side lacks, by peer: to_peer (the peer lacks) and from_peer (missing here), as of the last anti-entropy exchange",
        lag,
    );
    reg.register(
        "store_size_bytes",
        "Size of the store file on disk",
        store_size,
    );
    reg.register(
        "store_write_transactions",
        "Store commits since the daemon started (each one fsync)",
        store_writes,
    );
    reg.register("nodes", "Nodes of the team by status", nodes);
    reg.register("deployments", "Deployments by status", deployments);
    reg.register(
        "container_state",
        "The team's containers on this node, by runtime state (1 each)",
        container_state,
    );
    reg.register(
        "container_healthy",
        "1 when the container's health check passes, 0 otherwise",
        container_healthy,
    );
    reg.register(
        "container_restarts",
        "Restarts of the container counted by the engine",
        container_restarts,
    );
    if let Some(l) = load {
        let cpu = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        cpu.set(f64::from(l.cpu_permille) / 1000.0);
        reg.register(
            "node_cpu_usage_ratio",
            "Share of all CPUs busy since the previous look (0 to 1)",
            cpu,
        );
        for (name, help, v) in [
            ("node_cpus", "CPUs of this host", u64::from(l.cpus)),
            (
                "node_memory_used_bytes",
                "Memory in use (total less available)",
                l.memory_used_bytes,
            ),
            (
                "node_memory_total_bytes",
                "Memory of this host",
                l.memory_total_bytes,
            ),
            (
                "node_disk_used_bytes",
                "Used space of the data directory's file system",
                l.disk_used_bytes,
            ),
            (
                "node_disk_total_bytes",
                "Size of the data directory's file system",
                l.disk_total_bytes,
            ),
        ] {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            reg.register(name, help, g);
        }
    }
    reg.register(
        "executor_try_seconds",
        "Duration of deployment tries on this node",
        try_histogram().clone(),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::model::DeploymentStatus;

    #[test]
    fn every_deployment_status_is_reported() {
        for s in DEPLOYMENT_STATUSES {
            assert!(DeploymentStatus::parse(s).is_some(), "{s}");
        }
        let all = [
            DeploymentStatus::Preparing,
            DeploymentStatus::InProgress,
            DeploymentStatus::Successful,
            DeploymentStatus::Failed,
            DeploymentStatus::Obsolete,
            DeploymentStatus::Downgraded,
        ];
        for d in all {
            // A new status must be added to the list above, and here.
            match d {
                DeploymentStatus::Preparing
                | DeploymentStatus::InProgress
                | DeploymentStatus::Successful
                | DeploymentStatus::Failed
                | DeploymentStatus::Obsolete
                | DeploymentStatus::Downgraded => {
                    assert!(DEPLOYMENT_STATUSES.contains(&d.as_str()));
                }
            }
        }
    }

    #[tokio::test]
    async fn families_are_served_before_anything_happened() {
        let text = render(&TeamMap::default()).await.unwrap();
        for family in ["shoal_info", "shoal_teams", "shoal_executor_try_seconds"] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
        assert!(
            text.contains("shoal_executor_try_seconds_count{outcome=\"failed\"} 0"),
            "{text}"
        );
    }
}
