//! The running daemon: one mesh and one sync engine per team, the control
//! API over them, and the team lifecycle (create, join) that adds teams
//! while it runs.
//!
//! [`run`] is an actor loop. It owns the [`Node`] (the store and the node
//! key) and every team's [`Mesh`] and [`SyncEngine`]; the control API talks
//! to it through a [`ServiceHandle`] (bounded channel, oneshot replies) for
//! the few calls that change which teams run, and reads the live team table
//! ([`TeamMap`]) directly for everything else. It stops when its shutdown
//! future completes: the API first, then every engine (each snapshots), then
//! every mesh, then a final snapshot of anything left.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use shoal_protocol::action::{NewMember, NewNode};
use shoal_protocol::model::{InviteKind, Runtime};
use shoal_protocol::ticket::Ticket;
use shoal_protocol::{Action, Op, OpBody, PROTOCOL_VERSION, Replica, SecretKey, TeamId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::daemon::{DaemonError, Node, now_ms};
use crate::executor::{Executor, RuntimeFactory, Unsealer};
use crate::join;
use crate::keeper::KeyKeeper;
use crate::live::LiveWatcher;
use crate::mesh::{Mesh, MeshConfig, MeshEvent};
use crate::metrics;
use crate::query::{self, QueryHandler};
use crate::runtime::kubernetes::KubeConnect;
use crate::runtime::{DockerRuntime, KubernetesRuntime, RuntimeError};
use crate::store::TeamRecord;
use crate::sync::{HeartbeatConfig, Queries, SyncConfig, SyncEngine, SyncHandle};
pub use crate::teams::ServiceError;
use crate::teams::{Command, JoinStep, ServiceHandle, TeamEntry, TeamMap};

/// Capacity of the command channel from the API to the service.
pub const SERVICE_CHANNEL_CAPACITY: usize = 16;
/// How long a member join may wait for its signed op after the team was
/// fetched.
pub const PENDING_JOIN_TTL: Duration = Duration::from_secs(120);
/// Bound on each network step of a join (fetching the team, submitting).
pub const JOIN_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub listen: Multiaddr,
    pub mdns: bool,
    pub socket: PathBuf,
    /// This node's name in teams it creates or joins.
    pub name: String,
    pub runtime: Runtime,
    pub sync: SyncConfig,
    /// Serve Prometheus metrics here (`None`: no metrics endpoint).
    pub metrics: Option<std::net::SocketAddr>,
    /// Do not run deployments (they wait); container queries still answer.
    pub pause_deployments: bool,
    /// How the kubernetes runtime finds its cluster (unused by the others).
    pub kube: KubeConnect,
    /// Time between two heartbeats of this node ([`crate::sync::HEARTBEAT_INTERVAL`]
    /// by default).
    pub heartbeat_interval: Duration,
    /// Longest time between two looks at the live state
    /// ([`crate::live::LIVE_REFRESH`] by default; changes come sooner).
    pub live_refresh: Duration,
}

/// A team being joined: its mesh is up and its ops fetched; it waits for
/// the member's signed join op.
struct PendingJoin {
    record: TeamRecord,
    mesh: Mesh,
    events: mpsc::Receiver<MeshEvent>,
    replica: Replica,
    peer: PeerId,
    addr: Multiaddr,
    body: OpBody,
    since: Instant,
}

struct Running {
    mesh: Mesh,
    sync: SyncEngine,
    executor: Option<Executor>,
    keeper: KeyKeeper,
    live: LiveWatcher,
}

struct Service {
    node: Node,
    config: ServiceConfig,
    agent_version: String,
    teams: TeamMap,
    running: Vec<Running>,
    pending: BTreeMap<TeamId, PendingJoin>,
    cancel: CancellationToken,
    say: Arc<dyn Fn(String) + Send + Sync>,
    /// The cluster client of a kubernetes node, made once at start.
    kube: Option<KubernetesRuntime>,
}

/// Runs the daemon until `shutdown` completes. `say` receives the status
/// lines meant for whoever started it (`ready`, listen addresses, ...).
pub async fn run(
    node: Node,
    config: ServiceConfig,
    say: Arc<dyn Fn(String) + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    // A kubernetes node loads its cluster connection once, before anything
    // starts, so a bad kubeconfig stops the daemon with a clear error.
    let kube = match config.runtime {
        Runtime::Kubernetes => {
            let rt = KubernetesRuntime::connect(&config.kube).await?;
            info!(endpoint = rt.endpoint(), "kubernetes runtime connected");
            Some(rt)
        }
        Runtime::Docker | Runtime::None => None,
    };
    let cancel = CancellationToken::new();
    let agent_version = format!("shoal/{}", env!("CARGO_PKG_VERSION"));
    let mut svc = Service {
        node,
        config,
        agent_version,
        teams: TeamMap::default(),
        running: Vec::new(),
        pending: BTreeMap::new(),
        cancel: cancel.clone(),
        say,
        kube,
    };
    let started = svc.start_all().await;
    if let Err(e) = started {
        svc.stop().await;
        return Err(e);
    }
    let (tx, mut rx) = mpsc::channel(SERVICE_CHANNEL_CAPACITY);
    let api_state = ApiState {
        node: svc.node.key(),
        name: svc.config.name.clone(),
        runtime: svc.config.runtime,
        agent_version: svc.agent_version.clone(),
        teams: Arc::clone(&svc.teams),
        service: ServiceHandle { commands: tx },
        store: svc.node.store(),
        kube: svc.kube.clone(),
    };
    let api_cancel = cancel.child_token();
    let server = match api::serve(&svc.config.socket, api_state, api_cancel.clone()).await {
        Ok(s) => s,
        Err(e) => {
            svc.stop().await;
            return Err(e.into());
        }
    };
    let metrics = match svc.config.metrics {
        Some(addr) => {
            match metrics::serve(addr, Arc::clone(&svc.teams), cancel.child_token()).await {
                Ok(m) => {
                    (svc.say)(format!("metrics on http://{}/metrics", m.addr));
                    Some(m)
                }
                Err(e) => {
                    api_cancel.cancel();
                    let _ = server.join().await;
                    svc.stop().await;
                    return Err(ServiceError::Invalid(e.to_string()));
                }
            }
        }
        None => None,
    };
    (svc.say)(format!("control socket {}", server.path().display()));
    (svc.say)(format!("ready; data in {}", svc.node.data_dir().display()));

    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(cmd) = rx.recv() => svc.command(cmd).await,
            _ = sweep.tick() => svc.drop_stale_joins().await,
        }
    }
    api_cancel.cancel();
    let api_done = server.join().await;
    svc.stop().await;
    if let Some(m) = metrics {
        m.join().await;
    }
    api_done?;
    (svc.say)("stopped".into());
    Ok(())
}

impl Service {
    async fn start_all(&mut self) -> Result<(), ServiceError> {
        let teams: Vec<TeamId> = self.node.teams().keys().copied().collect();
        for team in teams {
            let record = self
                .node
                .record(team)?
                .ok_or_else(|| ServiceError::Invalid(format!("team {team} has no record")))?;
            let Some(replica) = self.node.take_replica(team) else {
                continue;
            };
            let (mesh, events) = self.spawn_mesh(record.psk)?;
            self.start_team(record, replica, mesh, events).await?;
        }
        Ok(())
    }

    fn spawn_mesh(&self, psk: [u8; 32]) -> Result<(Mesh, mpsc::Receiver<MeshEvent>), ServiceError> {
        Ok(Mesh::spawn(
            MeshConfig {
                identity_seed: self.node.key_seed(),
                psk,
                mdns: self.config.mdns,
                agent_version: self.agent_version.clone(),
            },
            self.cancel.child_token(),
        )?)
    }

    /// Listens (when the mesh does not yet), starts the team's sync engine,
    /// publishes this node's addresses when they changed, and lists the team.
    async fn start_team(
        &mut self,
        record: TeamRecord,
        replica: Replica,
        mesh: Mesh,
        events: mpsc::Receiver<MeshEvent>,
    ) -> Result<(), ServiceError> {
        let team = replica.team();
        let name = replica
            .state()
            .info()
            .map(|i| i.name.clone())
            .unwrap_or_else(|| record.name.clone());
        let ops = replica.ops().len();
        let mut addrs = mesh.handle().local_addrs().await?.listen;
        if addrs.is_empty() {
            addrs = mesh.handle().listen(self.config.listen.clone()).await?;
        }
        let interval = self.config.heartbeat_interval;
        let queries = self.query_handler(team);
        let mut sync_config = self.config.sync.clone();
        sync_config.queries = Some(Queries(Arc::clone(&queries)));
        let (live, live_state) = LiveWatcher::spawn(
            team,
            self.runtime_factory(),
            self.node.data_dir().to_path_buf(),
            self.config.live_refresh,
            self.cancel.child_token(),
        );
        sync_config.heartbeat = Some(HeartbeatConfig {
            key: SecretKey::from_seed(self.node.key_seed()),
            interval,
            agent_version: self.agent_version.clone(),
            addresses: addrs.iter().map(ToString::to_string).collect(),
            live: Some(live_state.clone()),
        });
        let sync = SyncEngine::spawn(
            replica,
            self.node.store(),
            self.node.key(),
            mesh.handle(),
            events,
            sync_config,
            self.cancel.child_token(),
        )?;
        (self.say)(format!("team {name} ({team}): {ops} ops"));
        let peer = mesh.local_peer_id();
        let full: Vec<String> = addrs.iter().map(|a| format!("{a}/p2p/{peer}")).collect();
        for a in &full {
            (self.say)(format!("listening on {a}"));
        }
        let entry = TeamEntry {
            name,
            queries,
            live: live_state,
            sync: sync.handle(),
            mesh: mesh.handle(),
            psk: record.psk,
            addrs: full,
        };
        if let Ok(mut map) = self.teams.write() {
            map.insert(team, entry.clone());
        }
        let executor = self.executor_for(team, &entry.sync);
        let keeper = KeyKeeper::spawn(
            team,
            entry.sync.clone(),
            SecretKey::from_seed(self.node.key_seed()),
            self.node.enc_secret(),
            self.cancel.child_token(),
        );
        self.running.push(Running {
            mesh,
            sync,
            executor,
            keeper,
            live,
        });
        if let Err(e) = self.publish_node(&entry, &addrs).await {
            warn!(team = %team.short(), "cannot publish this node's addresses: {e}");
        }
        Ok(())
    }

    /// The executor of a team on a node with a container runtime.
    fn executor_for(&self, team: TeamId, sync: &SyncHandle) -> Option<Executor> {
        if self.config.pause_deployments {
            return None;
        }
        let factory = self.runtime_factory()?;
        Some(Executor::spawn(
            team,
            sync.clone(),
            SecretKey::from_seed(self.node.key_seed()),
            self.node.store(),
            factory,
            self.unsealer(),
            self.cancel.child_token(),
        ))
    }

    /// Answers questions about this node's containers of `team`.
    fn query_handler(&self, team: TeamId) -> QueryHandler {
        match self.runtime_factory() {
            Some(f) => query::runtime_handler(team, f, self.node.store()),
            None => query::no_runtime(),
        }
    }

    /// Makes this node's runtime for each try or query; `None` without one.
    fn runtime_factory(&self) -> Option<RuntimeFactory> {
        let factory: RuntimeFactory = match self.config.runtime {
            Runtime::None => return None,
            Runtime::Docker => Arc::new(|| {
                Box::pin(async {
                    let docker = DockerRuntime::connect(None).await?;
                    Ok(Arc::new(docker) as Arc<dyn crate::runtime::Runtime>)
                })
            }),
            Runtime::Kubernetes => {
                // Loaded at start; cloning shares the client.
                let kube = self.kube.clone()?;
                Arc::new(move || {
                    let kube = kube.clone();
                    Box::pin(async move {
                        Ok::<_, RuntimeError>(Arc::new(kube) as Arc<dyn crate::runtime::Runtime>)
                    })
                })
            }
        };
        Some(factory)
    }

    /// Opens values sealed to this node (to it alone, in a per-node set, or
    /// to the team secrets key it holds).
    fn unsealer(&self) -> Unsealer {
        let secret = Arc::new(self.node.enc_secret());
        let me = self.node.key().to_hex();
        Arc::new(move |state, sealed| {
            crate::secrets::open_sealed(&secret, &me, state, "the value", sealed)
                .map_err(|e| e.to_string())
        })
    }

    /// Records this node's addresses and version in the team when they
    /// differ from what the team holds, so peers can dial it.
    async fn publish_node(
        &self,
        entry: &TeamEntry,
        addrs: &[Multiaddr],
    ) -> Result<(), ServiceError> {
        let state = entry.sync.state().await?;
        let me = self.node.key().to_hex();
        let Some(current) = state.nodes.get(&me).filter(|n| n.removed.is_none()) else {
            return Ok(());
        };
        let addresses: Vec<String> = addrs.iter().take(32).map(ToString::to_string).collect();
        let agent_version = self.agent_version.clone();
        if current.addresses == addresses
            && current.agent_version == agent_version
            && current.protocol_version == PROTOCOL_VERSION
        {
            return Ok(());
        }
        let action = Action::NodeUpdate {
            addresses,
            agent_version,
            protocol_version: PROTOCOL_VERSION,
        };
        let node = &self.node;
        entry
            .sync
            .write_with(node.key(), action, |body| {
                node.sign(body).map_err(|e| e.to_string())
            })
            .await?;
        Ok(())
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::GenesisBody { name, owner, reply } => {
                let body = self
                    .node
                    .new_team_body(
                        &name,
                        owner,
                        &self.config.name,
                        self.config.runtime,
                        now_ms(),
                    )
                    .map_err(ServiceError::from);
                let _ = reply.send(body);
            }
            Command::CreateTeam { op, reply } => {
                let _ = reply.send(self.create_team(*op).await);
            }
            Command::Join {
                ticket,
                member,
                reply,
            } => {
                let _ = reply.send(self.join(*ticket, member).await);
            }
            Command::FinishJoin { team, op, reply } => {
                let _ = reply.send(self.finish_join(team, *op).await);
            }
        }
    }

    async fn create_team(&mut self, op: Op) -> Result<(TeamId, String), ServiceError> {
        let team = self.node.install_genesis(op)?;
        let record = self
            .node
            .record(team)?
            .ok_or_else(|| ServiceError::Invalid("the new team has no record".into()))?;
        let replica = self
            .node
            .take_replica(team)
            .ok_or_else(|| ServiceError::Invalid("the new team has no replica".into()))?;
        let name = record.name.clone();
        let (mesh, events) = self.spawn_mesh(record.psk)?;
        self.start_team(record, replica, mesh, events).await?;
        info!(team = %team.short(), %name, "created team");
        Ok((team, name))
    }

    fn this_node(&self) -> NewNode {
        NewNode {
            key: self.node.key(),
            name: self.config.name.clone(),
            runtime: self.config.runtime,
            enc_key: self.node.enc_public(),
            addresses: Vec::new(),
            agent_version: self.agent_version.clone(),
            protocol_version: PROTOCOL_VERSION,
        }
    }

    async fn join(
        &mut self,
        ticket: Ticket,
        member: Option<NewMember>,
    ) -> Result<JoinStep, ServiceError> {
        ticket.check_fresh(now_ms())?;
        let team = ticket.team;
        if self.node.record(team)?.is_some() || self.teams_has(team) {
            return Err(ServiceError::AlreadyIn(ticket.team_name.clone()));
        }
        match (&ticket.kind, &member) {
            (InviteKind::Node { .. }, Some(_)) => {
                return Err(ServiceError::Invalid(
                    "this is a node ticket: redeem it with `shoal node join` on the new machine"
                        .into(),
                ));
            }
            (InviteKind::Member { .. }, None) => {
                return Err(ServiceError::Invalid(
                    "this is a member ticket: redeem it with `shoal team join`".into(),
                ));
            }
            _ => {}
        }
        // A join started earlier and never finished is replaced.
        if let Some(old) = self.pending.remove(&team) {
            let _ = old.mesh.shutdown().await;
        }
        let newcomer = member.as_ref().map_or(self.node.key(), |m| m.key);
        let (mesh, events) = self.spawn_mesh(ticket.psk)?;
        let result = self
            .fetch_and_prepare(&ticket, member, &mesh, newcomer)
            .await;
        let (replica, peer, addr, body) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = mesh.shutdown().await;
                return Err(e);
            }
        };
        let record = TeamRecord::new(ticket.team_name.clone(), ticket.psk, now_ms());
        let pending = PendingJoin {
            record,
            mesh,
            events,
            replica,
            peer,
            addr,
            body: body.clone(),
            since: Instant::now(),
        };
        if matches!(ticket.kind, InviteKind::Node { .. }) {
            let op = self.node.sign(body)?;
            return self.complete(team, pending, op).await;
        }
        self.pending.insert(team, pending);
        Ok(JoinStep {
            team,
            name: ticket.team_name,
            body: Some(body),
        })
    }

    async fn fetch_and_prepare(
        &self,
        ticket: &Ticket,
        member: Option<NewMember>,
        mesh: &Mesh,
        newcomer: shoal_protocol::PublicKey,
    ) -> Result<(Replica, PeerId, Multiaddr, OpBody), ServiceError> {
        mesh.handle().listen(self.config.listen.clone()).await?;
        let bootstrap = join::bootstrap_peers(&ticket.bootstrap);
        let fetched = tokio::time::timeout(
            JOIN_STEP_TIMEOUT,
            join::fetch(
                &mesh.handle(),
                &bootstrap,
                ticket.team,
                &ticket.invite,
                newcomer,
                ticket.proof_for(&newcomer),
                now_ms,
            ),
        )
        .await
        .map_err(|_| ServiceError::Timeout("fetching the team"))??;
        let (peer, addr, mut replica) = fetched;
        let proof = ticket.proof_for(&newcomer);
        let node = self.this_node();
        let (author, action) = match member {
            Some(m) => (
                m.key,
                Action::MemberJoin {
                    invite: ticket.invite.clone(),
                    member: Box::new(m),
                    node: Some(Box::new(node)),
                    proof,
                },
            ),
            None => (
                self.node.key(),
                Action::NodeJoin {
                    invite: ticket.invite.clone(),
                    node: Box::new(node),
                    proof,
                },
            ),
        };
        let body = replica
            .prepare(author, self.node.key(), now_ms(), action)
            .map_err(DaemonError::from)?;
        Ok((replica, peer, addr, body))
    }

    async fn finish_join(&mut self, team: TeamId, op: Op) -> Result<JoinStep, ServiceError> {
        let pending = self
            .pending
            .remove(&team)
            .ok_or_else(|| ServiceError::NoPendingJoin(team.short()))?;
        if op.body != pending.body {
            let step = Err(ServiceError::Invalid(
                "the signed op is not the join op this node prepared: run `shoal team join` again"
                    .into(),
            ));
            let _ = pending.mesh.shutdown().await;
            return step;
        }
        self.complete(team, pending, op).await
    }

    /// Applies the join op locally, commits the team, hands the op to the
    /// admitting node, and starts the team; on refusal, forgets the team.
    async fn complete(
        &mut self,
        team: TeamId,
        pending: PendingJoin,
        op: Op,
    ) -> Result<JoinStep, ServiceError> {
        let PendingJoin {
            record,
            mesh,
            events,
            mut replica,
            peer,
            addr,
            ..
        } = pending;
        let hash = op.hash();
        let report = replica.apply(op.clone(), now_ms());
        if let Some((_, why)) = report.rejected.iter().find(|(h, _)| *h == hash) {
            let _ = mesh.shutdown().await;
            return Err(ServiceError::Invalid(format!(
                "the join op is refused: {why}"
            )));
        }
        // Committed before it is handed to anyone.
        if let Err(e) = self.node.persist_team(&record, &replica) {
            let _ = mesh.shutdown().await;
            return Err(e.into());
        }
        // Once the team applies the op, its nodes talk to this one at once:
        // allow them now (their requests wait for the sync engine below).
        let allowed = team_peers(&replica, self.node.key());
        if let Err(e) = mesh.handle().set_allowed(allowed).await {
            warn!(team = %team.short(), "cannot allow the team's nodes: {e}");
        }
        let submitted = tokio::time::timeout(
            JOIN_STEP_TIMEOUT,
            join::submit(&mesh.handle(), peer, &addr, team, &op),
        )
        .await
        .map_err(|_| ServiceError::Timeout("handing over the join op"))
        .and_then(|r| r.map_err(ServiceError::from));
        if let Err(e) = submitted {
            let _ = mesh.shutdown().await;
            if let Err(del) = self.node.store().delete_team(team) {
                warn!(team = %team.short(), "cannot forget the refused team: {del}");
            }
            return Err(e);
        }
        // The admitting node is a known peer from now on.
        let _ = mesh.handle().add_addresses(peer, vec![addr]).await;
        let name = record.name.clone();
        self.start_team(record, replica, mesh, events).await?;
        info!(team = %team.short(), %name, "joined team");
        Ok(JoinStep {
            team,
            name,
            body: None,
        })
    }

    fn teams_has(&self, team: TeamId) -> bool {
        self.teams
            .read()
            .map(|m| m.contains_key(&team))
            .unwrap_or(false)
    }

    async fn drop_stale_joins(&mut self) {
        let stale: Vec<TeamId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.since.elapsed() > PENDING_JOIN_TTL)
            .map(|(t, _)| *t)
            .collect();
        for team in stale {
            if let Some(p) = self.pending.remove(&team) {
                let _ = p.mesh.shutdown().await;
            }
        }
    }

    /// Stops every engine (each snapshots) and mesh, then snapshots what is
    /// left with the node.
    async fn stop(&mut self) {
        self.cancel.cancel();
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.mesh.join().await;
        }
        for Running {
            mesh,
            sync,
            executor,
            keeper,
            live,
        } in self.running.drain(..)
        {
            if let Some(x) = executor {
                x.shutdown().await;
            }
            keeper.shutdown().await;
            live.shutdown().await;
            if let Err(e) = sync.shutdown().await {
                warn!("a sync engine did not stop cleanly: {e}");
            }
            if let Err(e) = mesh.join().await {
                warn!("a mesh did not stop cleanly: {e}");
            }
        }
        if let Err(e) = self.node.snapshot_all() {
            warn!("cannot save the final snapshot: {e}");
        }
    }
}

/// The peer ids of a team's current nodes, without `me`.
fn team_peers(
    replica: &Replica,
    me: shoal_protocol::PublicKey,
) -> std::collections::BTreeSet<PeerId> {
    let state = replica.state();
    state
        .nodes
        .keys()
        .filter_map(|k| shoal_protocol::view::effective_node(state, k))
        .filter(|n| n.removed.is_none())
        .filter_map(|n| n.key.parse::<shoal_protocol::PublicKey>().ok())
        .filter(|k| *k != me)
        .filter_map(|k| crate::mesh::peer_id_from_key(&k).ok())
        .collect()
}
