//! Replication of one team (§4 "Replication", "Storage").
//!
//! The sync engine is an actor. One task owns the team's [`Replica`] and is
//! the only writer of the team's ops in the [`Store`]; it runs until its
//! [`CancellationToken`] is cancelled (or every [`SyncHandle`] is dropped),
//! then snapshots the document. [`SyncHandle`]s send it commands over a
//! bounded channel and await a oneshot reply.
//!
//! The loop:
//! - answers the mesh's sync requests: a version vector with ours; a batch of
//!   ops (anti-entropy or live push) by applying each op, committing every
//!   newly applied op in one store transaction (refused ops go to quarantine)
//!   and only then acknowledging — so an acknowledged op is durable;
//! - runs anti-entropy with every connected peer when it connects and every
//!   [`SyncConfig::anti_entropy_interval`]: it asks for the peer's version
//!   vector and sends what the peer lacks in bounded batches. The peer does
//!   the same toward us, so nothing is pulled; anti-entropy alone converges;
//! - pushes ops live (when [`SyncConfig::push`] is on): ops submitted here once
//!   committed, and ops first received by push from a peer, so they flood
//!   across a partial mesh. Each op is pushed at most once per node;
//! - keeps the mesh allow list equal to the team's current nodes (without
//!   this one), so a removed node is disconnected at once;
//! - snapshots the document every [`SNAPSHOT_EVERY`] ops and at shutdown;
//! - admits newcomers holding a ticket ([`crate::join`]): shows them the
//!   team's ops while their invite is good, and applies their join op.
//!
//! Network calls (requests to peers, pushes) run in tasks of their own and
//! report back through an internal channel: the actor never waits on a peer,
//! so two nodes syncing toward each other cannot stall one another.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use shoal_protocol::heartbeat::{
    HEARTBEAT_VERSION, Heartbeat, LIVE_PROTOCOL_VERSION, LIVE_REPORT_VERSION, Live, LiveReport,
    MAX_HEARTBEAT_ADDRESSES, SignedHeartbeat, SignedLive,
};
use shoal_protocol::model::{Member, Node, TeamState};
use shoal_protocol::replica::{PrepareError, VersionVector};
use shoal_protocol::rules;
use shoal_protocol::table::Table;
use shoal_protocol::{
    Action, Hlc, Op, OpBody, OpContext, OpHash, PublicKey, Rejection, Replica, Report, SecretKey,
    TeamId,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::daemon::{SNAPSHOT_EVERY, now_ms};
use crate::heads::{HEAD_CHECK_TIMEOUT, HeadCheck};
use crate::join::{self, JoinAnswer, JoinMsg};
use crate::lease::{Acquire, Held, LeaseError, Leases};
use crate::live::LivePushes;
use crate::mesh::wire::{self, ToAll, split_batches};
use crate::mesh::{
    JoinReply, MeshEvent, MeshHandle, PushKind, SyncRequest, SyncResponse, peer_id_from_key,
};
use crate::query::{Answer, Query, QueryHandler};
use crate::store::{OpEntry, Store, StoreError, VoidedEntry};

/// Capacity of the command channel from handles to the actor.
pub const COMMAND_CHANNEL_CAPACITY: usize = 64;
/// Capacity of the channel on which the actor's network tasks report back.
pub const INTERNAL_CHANNEL_CAPACITY: usize = 256;
/// Default time between two anti-entropy ticks.
pub const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(2);
/// How many connected peers a tick starts an anti-entropy round with, in
/// turn (a peer also gets one when it connects). Rounds with every peer on
/// every tick cost N² rounds per interval in a full mesh of N (in a mesh of
/// 30, over 400 a second, nearly all finding nothing to send); a few peers
/// in turn still reach each one every N/4 ticks, and every node hears from
/// about four peers per tick, so what push missed spreads in a few ticks.
pub const ANTI_ENTROPY_PEERS: usize = 4;
/// How many recently pushed op hashes are remembered, so that an op is not
/// pushed again when it comes back from a peer.
pub const PUSH_DEDUP_CAPACITY: usize = 4096;

/// How many peers a node relays a heartbeat or a pushed op to, when it is
/// not its origin (the origin sends to every connected peer). A relay to
/// every peer makes each message cost N² requests in a full mesh of N;
/// a few random relays still reach every node of a partial mesh, and
/// anti-entropy covers what gossip misses.
pub const RELAY_FANOUT: usize = 4;

/// How many peers a node relays to what it received from the message's own
/// origin. The origin sent it to every peer it is connected to, so in a
/// full mesh every relay is a copy the peer already has (in a mesh of 30,
/// four relays per node were four fifths of all pushes and heartbeats);
/// one relay still carries it on toward peers the origin cannot reach,
/// which relay it to [`RELAY_FANOUT`] in turn.
pub const RELAY_FANOUT_FROM_ORIGIN: usize = 1;

/// The relay fanout for a message that `from` sent and `origin` made.
fn relay_fanout(from: PeerId, origin: Option<PeerId>) -> usize {
    if origin == Some(from) {
        RELAY_FANOUT_FROM_ORIGIN
    } else {
        RELAY_FANOUT
    }
}

/// Up to `fanout` of `connected`, none of `except`, picked by rotating them
/// (in order) by `spin`, so each message (and each relaying node) goes
/// another way.
fn pick_relays(
    connected: &BTreeSet<PeerId>,
    except: &[Option<PeerId>],
    spin: u64,
    fanout: usize,
) -> Vec<PeerId> {
    let mut peers: Vec<PeerId> = connected
        .iter()
        .copied()
        .filter(|p| !except.contains(&Some(*p)))
        .collect();
    if peers.len() <= fanout {
        return peers;
    }
    let n = peers.len();
    let start = usize::try_from(spin % n as u64).unwrap_or(0);
    peers.rotate_left(start);
    peers.truncate(fanout);
    peers
}

/// What each connected peer speaks, as a heartbeat of the peer taken since
/// it connected says ([`shoal_protocol::PROTOCOL_VERSION`]). Nodes of older
/// releases drop the peer of a message they cannot decode, so a peer gets
/// no message of a newer kind (live reports from
/// [`LIVE_PROTOCOL_VERSION`], pushes to all from
/// [`wire::TO_ALL_PROTOCOL_VERSION`]) before its heartbeat says it
/// speaks it, and a peer that reconnects (perhaps with another release) is
/// asked again.
#[derive(Debug, Default)]
struct PeerVersions(BTreeMap<PeerId, u32>);

impl PeerVersions {
    /// The peer (re)connected or left: what it spoke before no longer counts.
    fn forget(&mut self, peer: &PeerId) {
        self.0.remove(peer);
    }

    /// A heartbeat of `peer` was taken, saying it speaks `protocol_version`.
    /// Returns whether it became able to decode live reports just now.
    fn heard(&mut self, peer: PeerId, protocol_version: u32) -> bool {
        let before = self.speaks(&peer, LIVE_PROTOCOL_VERSION);
        self.0.insert(peer, protocol_version);
        !before && protocol_version >= LIVE_PROTOCOL_VERSION
    }

    /// Whether `peer` is known to speak `version` or later.
    fn speaks(&self, peer: &PeerId, version: u32) -> bool {
        self.0.get(peer).is_some_and(|v| *v >= version)
    }

    /// The peers of `connected` that may be sent live reports.
    fn among(&self, connected: &BTreeSet<PeerId>) -> BTreeSet<PeerId> {
        connected
            .iter()
            .filter(|p| self.speaks(p, LIVE_PROTOCOL_VERSION))
            .copied()
            .collect()
    }
}

/// Default time between two heartbeats of a node.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// A node whose latest heartbeat is older than this many intervals is
/// `unreachable`.
pub const HEARTBEAT_STALE_AFTER: u32 = 3;

/// How the sync engine runs.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Push new ops to connected peers at once. Without it, ops spread by
    /// anti-entropy only.
    pub push: bool,
    /// Time between two anti-entropy ticks.
    pub anti_entropy_interval: Duration,
    /// How many connected peers each tick starts a round with, in turn.
    pub anti_entropy_peers: usize,
    /// Send this node's heartbeats (none when `None`; others' are still
    /// taken and forwarded).
    pub heartbeat: Option<HeartbeatConfig>,
    /// Answers peers' questions about this node's containers (refused
    /// when `None`).
    pub queries: Option<Queries>,
    /// How long writes wait after a start to learn this node's log heads
    /// from a peer (see [`crate::heads`]).
    pub head_check_timeout: Duration,
}

/// The query handler of a [`SyncConfig`].
#[derive(Clone)]
pub struct Queries(pub QueryHandler);

impl fmt::Debug for Queries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Queries")
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            push: true,
            anti_entropy_interval: ANTI_ENTROPY_INTERVAL,
            anti_entropy_peers: ANTI_ENTROPY_PEERS,
            heartbeat: None,
            queries: None,
            head_check_timeout: HEAD_CHECK_TIMEOUT,
        }
    }
}

/// What this node says in its heartbeats, and how often.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// The node key that signs them.
    pub key: SecretKey,
    pub interval: Duration,
    pub agent_version: String,
    pub addresses: Vec<String>,
    /// The live state the heartbeats carry (see `crate::live`); `None`
    /// sends none.
    pub live: Option<watch::Receiver<Option<Box<Live>>>>,
}

/// A node's liveness as this node sees it, from heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub key: PublicKey,
    /// Milliseconds since its latest heartbeat arrived.
    pub seen_ms_ago: u64,
    /// The latest heartbeat is fresh.
    pub connected: bool,
    pub agent_version: String,
    pub protocol_version: u32,
    pub addresses: Vec<String>,
    /// What its latest live report said runs on it, when that report is
    /// about as recent as its latest heartbeat.
    pub live: Option<Box<Live>>,
}

/// How far this node and one peer are apart, from the peer's version
/// vector as last seen in anti-entropy (its request or its answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLag {
    pub key: PublicKey,
    /// A connection to the peer is open now.
    pub connected: bool,
    /// Ops applied here that the peer lacks (`None`: no vector seen yet).
    pub they_lack: Option<u64>,
    /// Ops the peer holds that this node lacks (`None`: no vector seen yet).
    pub we_lack: Option<u64>,
    /// Milliseconds since the peer's vector was seen.
    pub vector_age_ms: Option<u64>,
}

/// The sync engine's view of its team: peers and their lag, op counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStats {
    /// Connected peers and peers whose vector was seen, by key.
    pub peers: Vec<PeerLag>,
    /// Ops applied in the replica.
    pub applied: u64,
    /// Ops held back for missing dependencies or a future clock.
    pub waiting: u64,
    /// Ops refused by this replica since the daemon started.
    pub rejected: u64,
    /// Lost forks kept as evidence (the other op of their seq holds it).
    pub forks: u64,
    /// Ops void because their author lost the right they use concurrently.
    pub voided: u64,
}

/// Ops `a` holds that `b` lacks, by version vectors.
fn vector_gap(a: &VersionVector, b: &VersionVector) -> u64 {
    a.iter()
        .map(|(log, seq)| seq.saturating_sub(b.get(log).copied().unwrap_or(0)))
        .sum()
}

/// Errors of the sync engine.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the sync engine of this team is shut down")]
    Closed,
    #[error("the op was refused: {0}")]
    Rejected(Rejection),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the sync task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Too many writes wait for this node to learn its log heads.
    #[error(
        "this node started recently and is still learning its own logs' heads from its peers; try again in a few seconds"
    )]
    LearningHeads,
    /// A node asked over the mesh did not answer (not connected, gone, or
    /// too slow); asking again later may succeed.
    #[error("the node did not answer: {0}")]
    Unanswered(String),
}

type Reply<T> = oneshot::Sender<T>;
/// The reply to a writer waiting for a lease: the context its op will have
/// and the lease's token.
type LeaseReply = Reply<Result<(OpContext, u64), SyncError>>;

/// A read-only function run on the replica; it sends its own reply.
struct ReadFn(Box<dyn FnOnce(&Replica) + Send>);

impl fmt::Debug for ReadFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReadFn")
    }
}

/// Commands from handles to the actor; each carries its reply channel.
#[derive(Debug)]
enum Command {
    Submit {
        op: Box<Op>,
        reply: Reply<Result<Report, SyncError>>,
    },
    Prepare {
        author: PublicKey,
        action: Box<Action>,
        /// The write lease the caller holds ([`SyncHandle::lease`]), if any.
        lease: Option<u64>,
        reply: Reply<Result<OpBody, SyncError>>,
    },
    /// Waits for the write lease of `author`'s log on this node.
    Lease {
        author: PublicKey,
        reply: LeaseReply,
    },
    NextContext {
        author: PublicKey,
        reply: Reply<OpContext>,
    },
    State {
        reply: Reply<TeamState>,
    },
    StateHash {
        reply: Reply<[u8; 32]>,
    },
    Heads {
        reply: Reply<Vec<String>>,
    },
    OpCount {
        reply: Reply<usize>,
    },
    VersionVector {
        reply: Reply<VersionVector>,
    },
    Status {
        reply: Reply<Vec<NodeStatus>>,
    },
    Stats {
        reply: Reply<SyncStats>,
    },
    /// Runs a read-only function on the replica inside the actor.
    Read {
        f: ReadFn,
    },
    /// Asks a connected node of the team about its containers.
    Ask {
        peer: PeerId,
        query: Query,
        reply: Reply<Result<Answer, SyncError>>,
    },
}

/// What the actor's network tasks report.
#[derive(Debug)]
enum Internal {
    /// A peer answered our version vector with its own.
    TheirVector { peer: PeerId, vv: VersionVector },
    /// The anti-entropy round with a peer is over (done or failed).
    RoundDone(PeerId),
    /// A batch of a round's ops did not arrive (sent before `RoundDone`).
    RoundFailed(PeerId),
}

/// A cloneable handle to the sync actor of one team.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    commands: mpsc::Sender<Command>,
    team: TeamId,
    /// The number of applied ops, bumped after every commit.
    changes: watch::Receiver<u64>,
    store: Arc<Store>,
}

impl SyncHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SyncError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| SyncError::Closed)?;
        rx.await.map_err(|_| SyncError::Closed)
    }

    pub fn team(&self) -> TeamId {
        self.team
    }

    /// The node's store (shared with the actor): for reads the replica
    /// does not answer, such as the ops as stored or this node's keys.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Applies an op signed here, commits it and (with push on) pushes it to
    /// connected peers. `Ok` means the op is durable (or was already held);
    /// a refused op is quarantined and returned as [`SyncError::Rejected`].
    pub async fn submit(&self, op: Op) -> Result<Report, SyncError> {
        self.call(|reply| Command::Submit {
            op: Box::new(op),
            reply,
        })
        .await?
    }

    /// Prepares an unsigned op of `author` made on this node, against the
    /// current state.
    pub async fn prepare(&self, author: PublicKey, action: Action) -> Result<OpBody, SyncError> {
        self.call(|reply| Command::Prepare {
            author,
            action: Box::new(action),
            lease: None,
            reply,
        })
        .await?
    }

    /// Like [`SyncHandle::prepare`], under the write lease `token` got from
    /// [`SyncHandle::lease`]: refused when the lease lapsed. A refused
    /// prepare gives the lease up.
    pub async fn prepare_leased(
        &self,
        author: PublicKey,
        action: Action,
        token: u64,
    ) -> Result<OpBody, SyncError> {
        self.call(|reply| Command::Prepare {
            author,
            action: Box::new(action),
            lease: Some(token),
            reply,
        })
        .await?
    }

    /// Waits for the write lease of `author`'s log on this node (see
    /// `lease.rs`) and returns the context of the op it may write (to
    /// derive ids) and the lease's token, which its prepare names. The
    /// lease ends when that op is submitted, when its prepare is refused, or
    /// after [`crate::lease::LEASE_TTL`] without a step.
    pub async fn lease(&self, author: PublicKey) -> Result<(OpContext, u64), SyncError> {
        self.call(|reply| Command::Lease { author, reply }).await?
    }

    /// Writes an op of `author` made on this node: waits for the write lease
    /// of its log, prepares `action`, has `sign` sign it and submits it.
    /// Every writer inside the daemon (executor, key keeper, the node's own
    /// updates) goes through here, so their ops take turns instead of
    /// forking the node's log when they run at once.
    pub async fn write_with(
        &self,
        author: PublicKey,
        action: Action,
        sign: impl FnOnce(OpBody) -> Result<Op, String>,
    ) -> Result<Report, SyncError> {
        let (_, token) = self.lease(author).await?;
        let body = self.prepare_leased(author, action, token).await?;
        let op = sign(body).map_err(SyncError::Task)?;
        self.submit(op).await
    }

    /// The context of the next op of `author` on this node (to derive ids).
    pub async fn next_context(&self, author: PublicKey) -> Result<OpContext, SyncError> {
        self.call(|reply| Command::NextContext { author, reply })
            .await
    }

    /// The typed view of the team.
    pub async fn state(&self) -> Result<TeamState, SyncError> {
        self.call(|reply| Command::State { reply }).await
    }

    /// A hash of the typed view: equal on replicas that hold the same state.
    pub async fn state_hash(&self) -> Result<[u8; 32], SyncError> {
        self.call(|reply| Command::StateHash { reply }).await
    }

    /// The document's heads, sorted, as hex.
    pub async fn heads(&self) -> Result<Vec<String>, SyncError> {
        self.call(|reply| Command::Heads { reply }).await
    }

    /// Number of applied ops.
    pub async fn op_count(&self) -> Result<usize, SyncError> {
        self.call(|reply| Command::OpCount { reply }).await
    }

    /// Per log, the highest contiguous seq held.
    pub async fn version_vector(&self) -> Result<VersionVector, SyncError> {
        self.call(|reply| Command::VersionVector { reply }).await
    }

    /// A receiver that changes after every commit of new ops (its value is
    /// the op count), for whoever acts on the state (the executor).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Runs `f` on the team's replica (read-only, inside the actor, so keep
    /// it short) and returns its result: audit views, op listings, plans.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Replica) -> T + Send + 'static,
    ) -> Result<T, SyncError> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Read {
            f: ReadFn(Box::new(move |r| {
                let _ = tx.send(f(r));
            })),
        };
        self.commands
            .send(cmd)
            .await
            .map_err(|_| SyncError::Closed)?;
        rx.await.map_err(|_| SyncError::Closed)
    }

    /// Asks node `peer` about its containers (it must be connected).
    pub async fn ask(&self, peer: PeerId, query: Query) -> Result<Answer, SyncError> {
        self.call(|reply| Command::Ask { peer, query, reply })
            .await?
    }

    /// Every node heard from by heartbeat (this one included when it sends them).
    pub async fn status(&self) -> Result<Vec<NodeStatus>, SyncError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// Peers with their sync lag, and op counts.
    pub async fn stats(&self) -> Result<SyncStats, SyncError> {
        self.call(|reply| Command::Stats { reply }).await
    }
}

/// The running sync engine of one team: owns the actor task.
#[derive(Debug)]
pub struct SyncEngine {
    handle: SyncHandle,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl SyncEngine {
    /// Spawns the actor on the current tokio runtime. It takes over the
    /// team's `replica` (loaded from `store`), the mesh's event receiver and
    /// a handle to the mesh; `me` is this node's key. It stops when `cancel`
    /// is cancelled or every handle is dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        replica: Replica,
        store: Arc<Store>,
        me: PublicKey,
        mesh: MeshHandle,
        events: mpsc::Receiver<MeshEvent>,
        config: SyncConfig,
        cancel: CancellationToken,
    ) -> Result<SyncEngine, SyncError> {
        let team = replica.team();
        let stored = store.op_count(team)?;
        let snapshot = store.snapshot(team)?.map_or(0, |(covers, _)| covers);
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
        let (int_tx, int_rx) = mpsc::channel(INTERNAL_CHANNEL_CAPACITY);
        let (changes_tx, changes_rx) = watch::channel(replica.ops().len() as u64);
        let handle_store = Arc::clone(&store);
        let other_nodes = replica.state().nodes.keys().any(|k| {
            shoal_protocol::view::effective_node(replica.state(), k)
                .is_some_and(|n| n.removed.is_none() && n.key != me.to_hex())
        });
        let live_rx = config.heartbeat.as_ref().and_then(|h| h.live.clone());
        let actor = Actor {
            heads: HeadCheck::new(me, other_nodes, Instant::now()),
            held: VecDeque::new(),
            changes: changes_tx,
            team,
            me,
            replica,
            store,
            mesh,
            config,
            commands: cmd_rx,
            events: Some(events),
            internal_tx: int_tx,
            internal_rx: int_rx,
            cancel: cancel.clone(),
            tasks: JoinSet::new(),
            connected: BTreeSet::new(),
            in_round: BTreeSet::new(),
            // Nodes start their turns at different peers, so no peer gets
            // every node's round on the same tick.
            round_turn: me.as_bytes().iter().map(|&b| usize::from(b)).sum(),
            more: BTreeSet::new(),
            allowed: None,
            allowed_from: None,
            addresses: Vec::new(),
            pushed: VecDeque::new(),
            pushed_set: HashSet::new(),
            spin_salt: u64::from_le_bytes(me.as_bytes()[..8].try_into().unwrap_or_default()),
            beats: BTreeMap::new(),
            lives: BTreeMap::new(),
            peer_versions: PeerVersions::default(),
            live_rx,
            live_pushes: LivePushes::default(),
            live_made_ms: 0,
            vectors: BTreeMap::new(),
            prompted: BTreeMap::new(),
            heads_sent: HashMap::new(),
            rejected: 0,
            unsaved: Vec::new(),
            unsaved_voids: Vec::new(),
            stored,
            snapshot,
            leases: Leases::default(),
        };
        let task = tokio::runtime::Handle::try_current()
            .map_err(|e| SyncError::Task(e.to_string()))?
            .spawn(actor.run());
        Ok(SyncEngine {
            handle: SyncHandle {
                commands: cmd_tx,
                team,
                changes: changes_rx,
                store: handle_store,
            },
            cancel,
            task,
        })
    }

    /// A new handle to the actor.
    pub fn handle(&self) -> SyncHandle {
        self.handle.clone()
    }

    /// Waits for the actor to finish (after its token is cancelled).
    pub async fn join(self) -> Result<(), SyncError> {
        let SyncEngine { handle, task, .. } = self;
        drop(handle);
        task.await.map_err(|e| SyncError::Task(e.to_string()))
    }

    /// Cancels the actor and waits for it to finish (it snapshots first).
    pub async fn shutdown(self) -> Result<(), SyncError> {
        self.cancel.cancel();
        self.join().await
    }
}

struct Actor {
    team: TeamId,
    me: PublicKey,
    /// Varies relay choices from node to node ([`Actor::relay_peers`]).
    spin_salt: u64,
    replica: Replica,
    store: Arc<Store>,
    mesh: MeshHandle,
    config: SyncConfig,
    commands: mpsc::Receiver<Command>,
    /// `None` once the mesh is gone.
    events: Option<mpsc::Receiver<MeshEvent>>,
    internal_tx: mpsc::Sender<Internal>,
    internal_rx: mpsc::Receiver<Internal>,
    cancel: CancellationToken,
    /// Network tasks (rounds and pushes); aborted at shutdown.
    tasks: JoinSet<()>,
    connected: BTreeSet<PeerId>,
    /// Peers with an anti-entropy round in flight.
    in_round: BTreeSet<PeerId>,
    /// Where the next tick's turn of rounds starts among the connected peers.
    round_turn: usize,
    /// Peers whose last round sent a full page, or that said they lack ops
    /// while a round was in flight: another round follows at once.
    more: BTreeSet<PeerId>,
    /// The allow list last given to the mesh.
    allowed: Option<BTreeSet<PeerId>>,
    /// The node and member tables the allow list was last made from (copies
    /// share their trees, so this is a pointer check): most ops touch
    /// neither, and making the list parses every node's key and addresses.
    allowed_from: Option<(Table<Node>, Table<Member>)>,
    /// The nodes' addresses last given to the mesh: a node that published
    /// new ones (a restart on another port) must be redialed there.
    addresses: Vec<(PeerId, Vec<Multiaddr>)>,
    pushed: VecDeque<OpHash>,
    pushed_set: HashSet<OpHash>,
    /// Told the op count after every commit.
    changes: watch::Sender<u64>,
    /// Each node's latest heartbeat and when it arrived.
    beats: BTreeMap<PublicKey, (SignedHeartbeat, Instant)>,
    /// Each node's latest live report.
    lives: BTreeMap<PublicKey, SignedLive>,
    /// What each peer speaks (live reports, messages to all).
    peer_versions: PeerVersions,
    /// This node's live state (from the heartbeat config), watched for
    /// changes to push; `None` once its sender is gone.
    live_rx: Option<watch::Receiver<Option<Box<Live>>>>,
    /// When to push this node's live report to which peer on change.
    live_pushes: LivePushes,
    /// `made_ms` of this node's latest live report: the next is later, so
    /// peers take it as newer.
    live_made_ms: u64,
    /// Each peer's version vector as last seen in anti-entropy, and when.
    vectors: BTreeMap<PeerId, (VersionVector, Instant)>,
    /// When a peer's vector last showed it lacks ops we hold and a round
    /// toward it was started for that: at most one such round per peer per
    /// anti-entropy interval, so a peer that claims to lack everything
    /// cannot make us send pages back to back.
    prompted: BTreeMap<PeerId, Instant>,
    /// Per connected peer, the (log, seq) at which this node already sent
    /// its own op as fork evidence (see `Internal::TheirVector`): sent once
    /// per head the peer names, not again every round. Forgotten when the
    /// peer disconnects or a round's send fails.
    heads_sent: HashMap<PeerId, HashMap<shoal_protocol::keys::LogId, u64>>,
    /// Ops refused since the actor started.
    rejected: u64,
    /// Applied ops whose commit failed; retried before anything else.
    unsaved: Vec<OpHash>,
    /// Voided ops whose removal from the stored order failed; retried with
    /// `unsaved`.
    unsaved_voids: Vec<VoidedEntry>,
    /// Ops of the team in the store.
    stored: u64,
    /// Ops covered by the latest snapshot.
    snapshot: u64,
    /// Write leases of the logs made on this node, with their waiters.
    leases: Leases<LeaseReply>,
    /// Whether this node may sign yet (see [`crate::heads`]).
    heads: HeadCheck,
    /// Writes waiting for `heads` (at most [`HELD_WRITES_MAX`]).
    held: VecDeque<Command>,
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actor")
            .field("team", &self.team)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl Actor {
    async fn run(mut self) {
        self.update_allowed().await;
        if let Ok(peers) = self.mesh.peers().await {
            self.connected.extend(peers);
        }
        let mut tick = tokio::time::interval(self.config.anti_entropy_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let beat_every = self
            .config
            .heartbeat
            .as_ref()
            .map_or(Duration::from_secs(3600), |h| h.interval);
        let mut beat = tokio::time::interval(beat_every);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The live state at start is a change too (a watch receiver does
        // not report the value it was made with).
        if let Some(rx) = self.live_rx.as_mut() {
            let live = rx.borrow_and_update().clone();
            self.live_pushes.observe(live.as_deref(), Instant::now());
        }
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                ev = recv_event(&mut self.events) => match ev {
                    Some(ev) => self.events_from(ev).await,
                    None => {
                        debug!(team = %self.team.short(), "the mesh is gone; sync continues offline");
                        self.events = None;
                    }
                },
                Some(msg) = self.internal_rx.recv() => self.internal(msg),
                changed = live_changed(&mut self.live_rx) => self.live_changed(changed),
                () = live_push_due(self.live_pushes.due()) => self.push_live(),
                _ = tick.tick() => self.tick().await,
                () = head_deadline(&self.heads, self.config.head_check_timeout) => self.heads_timeout(),
                _ = beat.tick(), if self.config.heartbeat.is_some() => self.send_heartbeat(),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        error!(team = %self.team.short(), "a sync task panicked: {e}");
                    }
                }
            }
            while self.heads.known()
                && let Some(cmd) = self.held.pop_front()
            {
                self.command(cmd).await;
            }
        }
        for cmd in self.held.drain(..) {
            refuse(cmd, SyncError::Closed);
        }
        self.tasks.abort_all();
        for reply in self.leases.drain() {
            let _ = reply.send(Err(SyncError::Closed));
        }
        self.retry_unsaved();
        self.snapshot(true);
        debug!(team = %self.team.short(), "sync stopped");
    }

    async fn command(&mut self, cmd: Command) {
        let write = matches!(
            cmd,
            Command::Prepare { .. } | Command::Lease { .. } | Command::NextContext { .. }
        );
        if write && !self.heads.known() {
            if self.held.len() >= HELD_WRITES_MAX {
                refuse(cmd, SyncError::LearningHeads);
            } else {
                self.held.push_back(cmd);
            }
            return;
        }
        match cmd {
            Command::Submit { op, reply } => {
                let result = self.submit(*op);
                let _ = reply.send(result);
                self.after_change().await;
            }
            Command::Prepare {
                author,
                action,
                lease,
                reply,
            } => {
                let _ = reply.send(self.prepare(author, *action, lease));
            }
            Command::Lease { author, reply } => {
                let seq = self.next_seq(author);
                match self.leases.acquire(author, seq, Instant::now(), reply) {
                    Ok(Acquire::Granted(held, reply)) => self.answer_lease(author, held, reply),
                    Ok(Acquire::Queued) => {}
                    Err((e, reply)) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::NextContext { author, reply } => {
                let _ = reply.send(self.replica.next_context(author, self.me, now_ms()));
            }
            Command::State { reply } => {
                let _ = reply.send(self.replica.state().clone());
            }
            Command::StateHash { reply } => {
                let bytes = postcard::to_stdvec(self.replica.state()).unwrap_or_default();
                let _ = reply.send(shoal_protocol::keys::hash_parts(
                    "shoal/state-hash/v1",
                    &[&bytes],
                ));
            }
            Command::Heads { reply } => {
                let heads = self.replica.heads().iter().map(|h| h.to_string()).collect();
                let _ = reply.send(heads);
            }
            Command::OpCount { reply } => {
                let _ = reply.send(self.replica.ops().len());
            }
            Command::VersionVector { reply } => {
                let _ = reply.send(self.replica.version_vector());
            }
            Command::Status { reply } => {
                let _ = reply.send(self.node_status());
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Read { f } => {
                // A read that panics drops its reply (the caller hears the
                // engine is gone for that call); the engine goes on serving.
                let replica = &self.replica;
                if catch_unwind(AssertUnwindSafe(|| (f.0)(replica))).is_err() {
                    error!(team = %self.team.short(), "a read of the replica panicked");
                }
            }
            Command::Ask { peer, query, reply } => {
                let mesh = self.mesh.clone();
                self.tasks.spawn(async move {
                    let answer = match mesh.request(peer, SyncRequest::Query(query)).await {
                        Ok(SyncResponse::Answer(a)) => Ok(a),
                        Ok(SyncResponse::Refused(why)) => Ok(Answer::Error(why)),
                        Ok(other) => Ok(Answer::Error(format!("unexpected answer: {other:?}"))),
                        Err(e) => Err(SyncError::Unanswered(e.to_string())),
                    };
                    let _ = reply.send(answer);
                });
            }
        }
    }

    /// The seq the next op of `author` on this node takes.
    fn next_seq(&self, author: PublicKey) -> u64 {
        self.replica.next_context(author, self.me, now_ms()).seq
    }

    /// Prepares an op of `author`, under its lease when `lease` names one.
    fn prepare(
        &mut self,
        author: PublicKey,
        action: Action,
        lease: Option<u64>,
    ) -> Result<OpBody, SyncError> {
        let Some(token) = lease else {
            return self.prepare_contained(author, action);
        };
        let seq = match self.leases.holder(&author, token, Instant::now()) {
            Some(held) => held.seq,
            None => return Err(LeaseError::Lapsed.into()),
        };
        let body = match self.prepare_contained(author, action) {
            Ok(body) if body.seq == seq => Ok(body),
            // The log moved on under the lease (an op of this log came from
            // elsewhere): the ids the writer derived are stale.
            Ok(_) => Err(SyncError::Lease(LeaseError::Lapsed)),
            Err(e) => Err(e),
        };
        match body {
            Ok(body) => {
                if let Some(held) = self.leases.holder(&author, token, Instant::now()) {
                    held.prepared = Some(body_hash(&body));
                }
                Ok(body)
            }
            Err(e) => {
                let next = self.leases.abandon(&author, token);
                self.serve_lease(author, next);
                Err(e)
            }
        }
    }

    /// `Replica::prepare`, with a panic inside it (a bug, or a document an
    /// op left in a state the replica cannot extend) turned into an error
    /// for this one op: preparing leaves the replica as it was (a panic
    /// while the change is written is caught inside it, and its document
    /// rebuilt), so the engine goes on.
    fn prepare_contained(
        &mut self,
        author: PublicKey,
        action: Action,
    ) -> Result<OpBody, SyncError> {
        let name = action.name();
        let (replica, me) = (&mut self.replica, self.me);
        match catch_unwind(AssertUnwindSafe(|| {
            replica.prepare(author, me, now_ms(), action)
        })) {
            Ok(body) => Ok(body?),
            Err(_) => {
                error!(team = %self.team.short(), action = name, "preparing an op panicked");
                Err(SyncError::Task(format!(
                    "preparing {name} failed inside this node's replica; nothing was written: see the daemon's log"
                )))
            }
        }
    }

    /// Grants `author`'s free log to the next waiter, if any; waiters that
    /// went away are skipped.
    fn serve_lease(&mut self, author: PublicKey, mut next: Option<LeaseReply>) {
        while let Some(reply) = next.take() {
            if reply.is_closed() {
                next = self.leases.release_waiter(&author);
                continue;
            }
            let held = self
                .leases
                .grant(author, self.next_seq(author), Instant::now());
            self.answer_lease(author, held, reply);
        }
    }

    fn answer_lease(&mut self, author: PublicKey, held: Held, reply: LeaseReply) {
        let ctx = self.replica.next_context(author, self.me, now_ms());
        if reply.send(Ok((ctx, held.token))).is_err() {
            // The writer is gone: pass the log on.
            let next = self.leases.abandon(&author, held.token);
            self.serve_lease(author, next);
        }
    }

    fn submit(&mut self, op: Op) -> Result<Report, SyncError> {
        let (author, seq) = (op.body.author, op.body.seq);
        let leased = op.body.origin == self.me;
        if leased && !self.leases.admits(&author, seq, &body_hash(&op.body)) {
            // Prepared under a lease that lapsed; another write holds the
            // seq now, and taking this one would fork the log.
            return Err(LeaseError::Lapsed.into());
        }
        let result = self.submit_op(op);
        if leased {
            let next = self.leases.release(&author, seq);
            self.serve_lease(author, next);
        }
        result
    }

    fn submit_op(&mut self, op: Op) -> Result<Report, SyncError> {
        let hash = op.hash();
        let report = self.replica.apply(op, now_ms());
        let refused = report
            .rejected
            .iter()
            .find(|(h, _)| *h == hash)
            .map(|(_, why)| why.clone());
        self.persist(&report.applied, &report.rejected, &report.voided)?;
        if let Some(why) = refused {
            return Err(SyncError::Rejected(why));
        }
        if self.config.push {
            self.push(&report.applied, None);
        }
        Ok(report)
    }

    /// Handles `ev` and, when it carries ops, the other batches of ops
    /// already waiting behind it (up to [`COALESCE_REQUESTS`]): all are
    /// applied and committed in one store transaction, then each is
    /// acknowledged. Under load (many peers pushing at once) this turns a
    /// commit per batch into one per turn of the loop.
    async fn events_from(&mut self, ev: MeshEvent) {
        let first = match Received::from_event(ev) {
            Ok(r) => r,
            Err(ev) => return self.event(ev).await,
        };
        let mut requests = vec![first];
        let mut next = None;
        while requests.len() < COALESCE_REQUESTS {
            match self.events.as_mut().map(mpsc::Receiver::try_recv) {
                Some(Ok(ev)) => match Received::from_event(ev) {
                    Ok(r) => requests.push(r),
                    Err(ev) => {
                        next = Some(ev);
                        break;
                    }
                },
                _ => break,
            }
        }
        if self.receive_all(requests) {
            self.after_change().await;
        }
        if let Some(ev) = next {
            self.event(ev).await;
        }
    }

    async fn event(&mut self, ev: MeshEvent) {
        match ev {
            MeshEvent::PeerConnected(peer) => {
                self.connected.insert(peer);
                self.peer_versions.forget(&peer);
                self.live_pushes.forget(&peer);
                self.start_round(peer);
                // Told at once, not at the next beat: its answer says
                // whether it decodes live reports, which then go at once.
                self.heartbeat(Some(peer));
            }
            MeshEvent::PeerDisconnected(peer) => {
                self.connected.remove(&peer);
                self.heads_sent.remove(&peer);
                self.prompted.remove(&peer);
                self.peer_versions.forget(&peer);
                self.live_pushes.forget(&peer);
            }
            MeshEvent::Request {
                peer,
                request: SyncRequest::Query(query),
                reply,
            } => match &self.config.queries {
                Some(Queries(handler)) => {
                    let answer = handler(query);
                    self.tasks.spawn(async move {
                        let _ = reply.send(SyncResponse::Answer(answer.await));
                    });
                }
                None => {
                    debug!(%peer, "container query refused: no runtime here");
                    let _ = reply.send(SyncResponse::Refused(
                        "this node answers no container queries".into(),
                    ));
                }
            },
            MeshEvent::Request {
                peer,
                request,
                reply,
            } => {
                let (response, changed) = match request {
                    SyncRequest::Query(_) => (SyncResponse::Refused("unexpected".into()), false),
                    SyncRequest::VersionVector(theirs) => {
                        let ours = self.replica.version_vector();
                        self.check_heads(peer, &ours, &theirs);
                        self.prompt_round(peer, &ours, &theirs);
                        self.vectors.insert(peer, (theirs, Instant::now()));
                        (SyncResponse::VersionVector(ours), false)
                    }
                    request @ (SyncRequest::Ops(_)
                    | SyncRequest::Push(_)
                    | SyncRequest::ToAll(ToAll::Push(_))) => {
                        let ev = MeshEvent::Request {
                            peer,
                            request,
                            reply,
                        };
                        if let Ok(r) = Received::from_event(ev)
                            && self.receive_all(vec![r])
                        {
                            self.after_change().await;
                        }
                        return;
                    }
                    SyncRequest::Heartbeat(hb) => (self.receive_heartbeat(peer, hb, true), false),
                    SyncRequest::Live(live) => (self.receive_live(peer, live, true), false),
                    SyncRequest::ToAll(ToAll::Heartbeat(hb)) => {
                        (self.receive_heartbeat(peer, hb, false), false)
                    }
                    SyncRequest::ToAll(ToAll::Live(live)) => {
                        (self.receive_live(peer, *live, false), false)
                    }
                };
                let _ = reply.send(response);
                if changed {
                    self.after_change().await;
                }
            }
            MeshEvent::Join {
                peer,
                request,
                reply,
            } => {
                let (answer, changed) = self.join_request(peer, &request.payload);
                let answer = match answer {
                    Ok(a) => match wire::encode(&a) {
                        Ok(bytes) => JoinReply::Accepted(bytes),
                        Err(e) => JoinReply::Refused(format!("cannot encode the answer: {e}")),
                    },
                    Err(why) => {
                        debug!(%peer, team = %self.team.short(), "join refused: {why}");
                        JoinReply::Refused(why)
                    }
                };
                let _ = reply.send(answer);
                if changed {
                    self.after_change().await;
                }
            }
        }
    }

    /// Signs and sends this node's heartbeat (and live report) to every
    /// connected peer.
    fn send_heartbeat(&mut self) {
        self.heartbeat(None);
    }

    /// Signs and sends this node's heartbeat to `to`, else to every
    /// connected peer with its live report to those that decode them.
    fn heartbeat(&mut self, to: Option<PeerId>) {
        let Some(cfg) = &self.config.heartbeat else {
            return;
        };
        let sent_ms = now_ms();
        let beat = Heartbeat {
            version: HEARTBEAT_VERSION,
            team: self.team,
            node: self.me,
            sent_ms,
            agent_version: cfg.agent_version.clone(),
            protocol_version: shoal_protocol::PROTOCOL_VERSION,
            addresses: cfg
                .addresses
                .iter()
                .take(MAX_HEARTBEAT_ADDRESSES)
                .cloned()
                .collect(),
        };
        match SignedHeartbeat::sign(beat, &cfg.key) {
            Ok(signed) => {
                self.beats.insert(self.me, (signed.clone(), Instant::now()));
                match to {
                    Some(peer) => {
                        self.send_each(vec![peer], SyncRequest::Heartbeat(signed), "heartbeat")
                    }
                    None => self.forward_heartbeat(signed, None),
                }
            }
            Err(e) => warn!(team = %self.team.short(), "cannot sign a heartbeat: {e}"),
        }
        if to.is_some() {
            return;
        }
        // The live state goes in its own message, with (about) the
        // heartbeat's time, so its age can be judged against the
        // heartbeat's.
        if let Some(signed) = self.sign_live(sent_ms) {
            for peer in self.peer_versions.among(&self.connected) {
                self.live_pushes.delivered(peer);
            }
            self.forward_live(signed, None);
        }
    }

    /// Signs this node's live state as it is now, made at `made_ms` (or
    /// just after this node's previous report), and holds it as this
    /// node's latest; `None` when there is none.
    fn sign_live(&mut self, made_ms: u64) -> Option<SignedLive> {
        let cfg = self.config.heartbeat.as_ref()?;
        let live = cfg.live.as_ref().and_then(|l| l.borrow().clone())?;
        let made_ms = made_ms.max(self.live_made_ms.saturating_add(1));
        let report = LiveReport {
            version: LIVE_REPORT_VERSION,
            team: self.team,
            node: self.me,
            made_ms,
            live: *live,
        };
        match SignedLive::sign(report, &cfg.key) {
            Ok(signed) => {
                self.live_made_ms = made_ms;
                self.lives.insert(self.me, signed.clone());
                Some(signed)
            }
            Err(e) => {
                warn!(team = %self.team.short(), "cannot sign a live report: {e}");
                None
            }
        }
    }

    /// This node's live state changed (`Err`: its watcher is gone).
    fn live_changed(&mut self, changed: Result<(), watch::error::RecvError>) {
        let Some(rx) = self.live_rx.as_mut().filter(|_| changed.is_ok()) else {
            self.live_rx = None;
            return;
        };
        let live = rx.borrow_and_update().clone();
        self.live_pushes.observe(live.as_deref(), Instant::now());
    }

    /// Pushes this node's live report to the peers it is due to, between
    /// heartbeats (see [`LivePushes`]).
    fn push_live(&mut self) {
        let able = self.peer_versions.among(&self.connected);
        let peers = self.live_pushes.take(&able, Instant::now());
        if peers.is_empty() {
            return;
        }
        if let Some(signed) = self.sign_live(now_ms()) {
            debug!(team = %self.team.short(), peers = peers.len(), "live state changed: report pushed");
            self.send_each(peers, SyncRequest::Live(signed), "live report");
        }
    }

    /// Sends a heartbeat to every connected peer but `except`.
    fn forward_heartbeat(&mut self, hb: SignedHeartbeat, except: Option<PeerId>) {
        let peers: Vec<PeerId> = match except {
            // This node's own heartbeat goes to every connected peer.
            None => {
                let (plain, to_all) = self.split_to_all(self.connected.iter().copied());
                let all = SyncRequest::ToAll(ToAll::Heartbeat(hb.clone()));
                self.send_each(to_all, all, "heartbeat");
                plain
            }
            Some(from) => {
                let origin = peer_id_from_key(&hb.beat.node).ok();
                self.relay_peers(
                    &[Some(from), origin],
                    hb.beat.sent_ms,
                    relay_fanout(from, origin),
                )
            }
        };
        self.send_each(peers, SyncRequest::Heartbeat(hb), "heartbeat");
    }

    /// Sends a live report to the connected peers that decode them, but
    /// `except` (a relay picks up to [`RELAY_FANOUT`] of them).
    fn forward_live(&mut self, live: SignedLive, except: Option<PeerId>) {
        let able = self.peer_versions.among(&self.connected);
        let peers: Vec<PeerId> = match except {
            None => {
                let (plain, to_all) = self.split_to_all(able.into_iter());
                let all = SyncRequest::ToAll(ToAll::Live(Box::new(live.clone())));
                self.send_each(to_all, all, "live report");
                plain
            }
            Some(from) => {
                let origin = peer_id_from_key(&live.report.node).ok();
                pick_relays(
                    &able,
                    &[Some(from), origin],
                    live.report.made_ms.wrapping_add(self.spin_salt),
                    relay_fanout(from, origin),
                )
            }
        };
        self.send_each(peers, SyncRequest::Live(live), "live report");
    }

    /// Sends the one-way `request` to each of `peers`
    /// ([`crate::mesh::MeshHandle::send`]), in a task of the actor (aborted
    /// at shutdown).
    fn send_each(&mut self, peers: Vec<PeerId>, request: SyncRequest, what: &'static str) {
        if peers.is_empty() {
            return;
        }
        let mesh = self.mesh.clone();
        let cancel = self.cancel.clone();
        // Queued behind each peer's pushes, on its push stream where the
        // peer speaks the second version: a request-response exchange
        // each was a stream each, every few seconds to every peer.
        self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                sent = mesh.send(peers, request) => {
                    if let Err(e) = sent {
                        debug!("{what} not sent: {e}");
                    }
                }
            }
        });
    }

    /// Takes a live report: signed by a current node of this team, newer
    /// than the one held, not from the future. New ones are forwarded to
    /// peers that decode them.
    fn receive_live(&mut self, peer: PeerId, live: SignedLive, relay: bool) -> SyncResponse {
        let r = &live.report;
        if r.team != self.team {
            return SyncResponse::Refused("a live report of another team".into());
        }
        let newer = self
            .lives
            .get(&r.node)
            .is_none_or(|held| r.made_ms > held.report.made_ms);
        if !newer || r.node == self.me {
            return SyncResponse::Ack;
        }
        if let Err(e) = live.verify() {
            warn!(%peer, team = %self.team.short(), "live report refused: {e}");
            return SyncResponse::Refused(e.to_string());
        }
        // Held only for current nodes: the map stays bounded by the team.
        let member = shoal_protocol::view::effective_node(self.replica.state(), &r.node.to_hex())
            .is_some_and(|n| n.removed.is_none());
        if !member {
            return SyncResponse::Ack;
        }
        if r.made_ms > now_ms().saturating_add(shoal_protocol::hlc::MAX_FUTURE_MS) {
            return SyncResponse::Refused("a live report from the future".into());
        }
        self.lives.insert(r.node, live.clone());
        if relay {
            self.forward_live(live, Some(peer));
        }
        SyncResponse::Ack
    }

    /// Takes a heartbeat: signed by a current node of this team, newer than
    /// the one held, not from the future. New ones are forwarded.
    fn receive_heartbeat(
        &mut self,
        peer: PeerId,
        hb: SignedHeartbeat,
        relay: bool,
    ) -> SyncResponse {
        let b = &hb.beat;
        if b.team != self.team {
            return SyncResponse::Refused("a heartbeat of another team".into());
        }
        // Copies of a beat arrive from several peers: only one that would
        // replace the held beat is worth checking its signature.
        let newer = self
            .beats
            .get(&b.node)
            .is_none_or(|(held, _)| b.sent_ms > held.beat.sent_ms);
        if !newer || b.node == self.me {
            return SyncResponse::Ack;
        }
        if let Err(e) = hb.verify() {
            warn!(%peer, team = %self.team.short(), "heartbeat refused: {e}");
            return SyncResponse::Refused(e.to_string());
        }
        let key = b.node.to_hex();
        let live = shoal_protocol::view::effective_node(self.replica.state(), &key)
            .is_some_and(|n| n.removed.is_none());
        if !live {
            return SyncResponse::Ack;
        }
        if b.sent_ms > now_ms().saturating_add(shoal_protocol::hlc::MAX_FUTURE_MS) {
            return SyncResponse::Refused("a heartbeat from the future".into());
        }
        self.beats.insert(b.node, (hb.clone(), Instant::now()));
        if let Ok(origin) = peer_id_from_key(&b.node)
            && self.peer_versions.heard(origin, b.protocol_version)
        {
            // It may not hold this node's live state: due at once.
            self.live_pushes.ready(origin, Instant::now());
            // Nor this node's heartbeat (the one sent as it connected may
            // have gone to a join in progress): one back, once per
            // connection, so it learns this node decodes live reports.
            if self.connected.contains(&origin) {
                self.heartbeat(Some(origin));
            }
        }
        if relay {
            self.forward_heartbeat(hb, Some(peer));
        }
        SyncResponse::Ack
    }

    /// Up to `fanout` connected peers, none of `except`.
    fn relay_peers(&self, except: &[Option<PeerId>], spin: u64, fanout: usize) -> Vec<PeerId> {
        pick_relays(
            &self.connected,
            except,
            spin.wrapping_add(self.spin_salt),
            fanout,
        )
    }

    fn stats(&self) -> SyncStats {
        let ours = self.replica.version_vector();
        let peers: BTreeSet<PeerId> = self
            .connected
            .iter()
            .chain(self.vectors.keys())
            .copied()
            .collect();
        let peers = peers
            .into_iter()
            .filter_map(|peer| {
                let key = crate::mesh::key_from_peer_id(&peer).ok()?;
                let seen = self.vectors.get(&peer);
                Some(PeerLag {
                    key,
                    connected: self.connected.contains(&peer),
                    they_lack: seen.map(|(theirs, _)| vector_gap(&ours, theirs)),
                    we_lack: seen.map(|(theirs, _)| vector_gap(theirs, &ours)),
                    vector_age_ms: seen
                        .map(|(_, at)| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)),
                })
            })
            .collect();
        SyncStats {
            peers,
            applied: self.replica.ops().len() as u64,
            waiting: self.replica.pending().count() as u64,
            rejected: self.rejected,
            forks: self.replica.fork_evidence().len() as u64,
            voided: self
                .replica
                .quarantine()
                .values()
                .filter(|q| matches!(q.reason, Rejection::Voided { .. }))
                .count() as u64,
        }
    }

    fn node_status(&self) -> Vec<NodeStatus> {
        let stale = self
            .config
            .heartbeat
            .as_ref()
            .map_or(HEARTBEAT_INTERVAL, |h| h.interval)
            * HEARTBEAT_STALE_AFTER;
        let stale_ms = u64::try_from(stale.as_millis()).unwrap_or(u64::MAX);
        self.beats
            .iter()
            .map(|(key, (hb, at))| NodeStatus {
                key: *key,
                seen_ms_ago: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
                connected: *key == self.me || at.elapsed() <= stale,
                agent_version: hb.beat.agent_version.clone(),
                protocol_version: hb.beat.protocol_version,
                addresses: hb.beat.addresses.clone(),
                // A live report that stopped arriving (a path through
                // older nodes only) is not shown as the node's state.
                live: self
                    .lives
                    .get(key)
                    .filter(|l| l.report.made_ms.saturating_add(stale_ms) >= hb.beat.sent_ms)
                    .map(|l| Box::new(l.report.live.clone())),
            })
            .collect()
    }

    /// Answers a join message from a ticket holder (see [`crate::join`]).
    /// Returns the answer (or why it is refused) and whether the state changed.
    fn join_request(&mut self, peer: PeerId, payload: &[u8]) -> (Result<JoinAnswer, String>, bool) {
        let msg = match wire::decode::<JoinMsg>(payload) {
            Ok(m) => m,
            Err(e) => return (Err(format!("malformed join message: {e}")), false),
        };
        let now = Hlc::new(now_ms(), u32::MAX);
        match msg {
            JoinMsg::Fetch {
                team,
                invite,
                newcomer,
                proof,
                have,
            } => {
                if team != self.team {
                    return (Err("this node serves another team".into()), false);
                }
                let checked = rules::check_ticket(
                    self.replica.state(),
                    &team,
                    &invite,
                    &newcomer,
                    &proof,
                    now,
                );
                match checked {
                    Ok(_) => (Ok(join::fetch_page(&self.replica, &have)), false),
                    Err(e) => (Err(e.to_string()), false),
                }
            }
            JoinMsg::Submit { team, op } => {
                if team != self.team {
                    return (Err("this node serves another team".into()), false);
                }
                let op = match Op::decode(&op) {
                    Ok(op) => op,
                    Err(e) => return (Err(format!("malformed op: {e}")), false),
                };
                // A retried submit of an op already applied is admitted again.
                if self.replica.has(&op.hash()) {
                    return (Ok(JoinAnswer::Admitted), false);
                }
                // Only a join op, for a ticket that is still good, is taken
                // from a stranger: nothing else reaches the replica (or its
                // quarantine) through this door.
                let ticket = match &op.body.action {
                    Action::MemberJoin {
                        invite,
                        member,
                        proof,
                        ..
                    } => (invite, member.key, proof),
                    Action::NodeJoin {
                        invite,
                        node,
                        proof,
                        ..
                    } => (invite, node.key, proof),
                    _ => return (Err("only a join op can be submitted here".into()), false),
                };
                let checked = rules::check_ticket(
                    self.replica.state(),
                    &team,
                    ticket.0,
                    &ticket.1,
                    ticket.2,
                    now,
                );
                if let Err(e) = checked {
                    return (Err(e.to_string()), false);
                }
                // A stranger's op is stored (applied or quarantined) only when
                // it is authentic: signed by the key the ticket admits.
                if op.body.author != ticket.1 || op.body.team != Some(self.team) {
                    return (
                        Err("the join op is not signed by the key the invite proof names".into()),
                        false,
                    );
                }
                if !op.verify_signature() {
                    return (Err("the join op's signature does not verify".into()), false);
                }
                let hash = op.hash();
                match self.submit(op) {
                    Ok(report) if self.replica.has(&hash) => {
                        debug!(%peer, team = %self.team.short(), applied = report.applied.len(), "admitted a newcomer");
                        (Ok(JoinAnswer::Admitted), true)
                    }
                    Ok(_) => (
                        Err(
                            "the join op depends on ops this node does not hold yet: try again"
                                .into(),
                        ),
                        false,
                    ),
                    Err(e) => (Err(e.to_string()), false),
                }
            }
        }
    }

    /// Applies batches of ops from peers, commits everything they applied
    /// in one transaction, and only then acknowledges each (an
    /// acknowledged op is durable). Returns whether anything was applied.
    fn receive_all(&mut self, requests: Vec<Received>) -> bool {
        let now = now_ms();
        let mut rejected = Vec::new();
        let mut voided = Vec::new();
        let mut done = Vec::with_capacity(requests.len());
        for r in requests {
            let mut applied = Vec::new();
            for bytes in r.ops {
                let op = match Op::decode(&bytes) {
                    Ok(op) => op,
                    Err(e) => {
                        warn!(peer = %r.peer, team = %self.team.short(), "dropping a malformed op: {e}");
                        continue;
                    }
                };
                let report = self.replica.apply(op, now);
                applied.extend(report.applied);
                for (hash, why) in &report.rejected {
                    warn!(peer = %r.peer, team = %self.team.short(), op = %hash, "op refused: {why}");
                }
                rejected.extend(report.rejected);
                voided.extend(report.voided);
            }
            done.push((r.peer, r.relay, r.reply, applied));
        }
        for (_, _, _, applied) in &mut done {
            applied.retain(|h| !voided.contains(h));
        }
        let all: Vec<OpHash> = done.iter().flat_map(|d| d.3.iter().copied()).collect();
        if let Err(e) = self.persist(&all, &rejected, &voided) {
            error!(team = %self.team.short(), "cannot commit received ops: {e}");
            for (_, _, reply, _) in done {
                let _ = reply.send(SyncResponse::Refused(format!("cannot commit the ops: {e}")));
            }
            return false;
        }
        self.heads_caught_up();
        for (peer, relay, reply, applied) in done {
            let _ = reply.send(SyncResponse::Ack);
            if relay && self.config.push {
                self.push(&applied, Some(peer));
            }
        }
        !all.is_empty()
    }

    /// Commits newly applied ops (with any earlier ones whose commit failed)
    /// in one transaction, and quarantines refused ones.
    fn persist(
        &mut self,
        applied: &[OpHash],
        rejected: &[(OpHash, Rejection)],
        voided: &[OpHash],
    ) -> Result<(), StoreError> {
        self.unsaved.extend_from_slice(applied);
        // Voided ops leave the applied ops kept, whatever was committed.
        for h in voided {
            if let Some(q) = self.replica.quarantine().get(h) {
                self.unsaved_voids.push(VoidedEntry {
                    op: (*h, q.op.log(), q.op.body.seq, q.op.encode()),
                    reason: q.reason.to_string(),
                });
            }
        }
        self.rejected = self
            .rejected
            .saturating_add((rejected.len() + voided.len()) as u64);
        let entries = |me: &Self| -> Vec<OpEntry> {
            me.unsaved
                .iter()
                .filter_map(|h| me.replica.op(h))
                .map(|a| (a.hash, a.op.log(), a.op.body.seq, a.op.encode()))
                .collect()
        };
        if !self.unsaved_voids.is_empty() {
            let order: Vec<OpHash> = self.replica.ops().iter().map(|a| a.hash).collect();
            self.stored =
                self.store
                    .rewrite_order(self.team, &order, &entries(self), &self.unsaved_voids)?;
            self.unsaved_voids.clear();
            self.unsaved.clear();
            // The stored snapshot was dropped with the voided ops.
            self.snapshot = 0;
            self.changes.send_replace(self.replica.ops().len() as u64);
        } else if !self.unsaved.is_empty() {
            self.stored = self.store.append_ops(self.team, &entries(self))?;
            self.unsaved.clear();
            self.changes.send_replace(self.replica.ops().len() as u64);
        }
        for (hash, why) in rejected {
            if let Some(q) = self.replica.quarantine().get(hash) {
                self.store
                    .put_quarantined(self.team, *hash, &why.to_string(), &q.op.encode())?;
            }
        }
        self.snapshot(self.snapshot == 0);
        Ok(())
    }

    /// Retries the commit of ops that failed to commit, skipping any that
    /// did reach the store.
    fn retry_unsaved(&mut self) {
        if self.unsaved.is_empty() && self.unsaved_voids.is_empty() {
            return;
        }
        let (store, team) = (&self.store, self.team);
        self.unsaved
            .retain(|h| matches!(store.get_op(team, *h), Ok(None)));
        if let Err(e) = self.persist(&[], &[], &[]) {
            error!(team = %self.team.short(), "cannot commit ops: {e}");
        }
    }

    /// Snapshots the document when [`SNAPSHOT_EVERY`] ops were committed
    /// since the last one (or, with `force`, when any was), and only when the
    /// store holds exactly the applied ops.
    fn snapshot(&mut self, force: bool) {
        let applied = self.replica.ops().len() as u64;
        if !self.unsaved.is_empty() || self.stored != applied || self.stored <= self.snapshot {
            return;
        }
        if !force && self.stored - self.snapshot < SNAPSHOT_EVERY {
            return;
        }
        match self
            .store
            .put_snapshot(self.team, self.stored, &self.replica.save_doc())
        {
            Ok(()) => self.snapshot = self.stored,
            Err(e) => warn!(team = %self.team.short(), "cannot snapshot: {e}"),
        }
    }

    /// Pushes committed ops not pushed before to every connected peer.
    /// Pushes newly applied ops: to every connected peer when they start
    /// here (`from` is `None`), else, relaying ops pushed by `from`, to a
    /// few peers ([`RELAY_FANOUT`], or [`RELAY_FANOUT_FROM_ORIGIN`] when
    /// `from` made them all).
    fn push(&mut self, hashes: &[OpHash], from: Option<PeerId>) {
        let mut ops = Vec::new();
        for hash in hashes {
            if !self.pushed_set.insert(*hash) {
                continue;
            }
            self.pushed.push_back(*hash);
            if self.pushed.len() > PUSH_DEDUP_CAPACITY
                && let Some(old) = self.pushed.pop_front()
            {
                self.pushed_set.remove(&old);
            }
            if let Some(a) = self.replica.op(hash) {
                ops.push(a.op.encode());
            }
        }
        if ops.is_empty() || self.connected.is_empty() {
            return;
        }
        let to = from.map(|from| {
            let spin = hashes
                .first()
                .map(|h| u64::from_le_bytes(h.0[..8].try_into().unwrap_or_default()))
                .unwrap_or_default();
            // Ops pushed by the node that made them all: it sent them to
            // every peer it is connected to.
            let origin = hashes
                .iter()
                .filter_map(|h| self.replica.op(h))
                .all(|a| peer_id_from_key(&a.op.body.origin).ok() == Some(from))
                .then_some(from);
            self.relay_peers(&[Some(from)], spin, relay_fanout(from, origin))
        });
        // Not a relay: when every other node of the team is connected, each
        // gets the ops straight from here, and peers that speak it are told
        // so (they relay none); the others get a plain push, which they relay.
        let (plain, to_all) = match to {
            Some(peers) => (peers, Vec::new()),
            None => self.split_to_all(self.connected.iter().copied()),
        };
        if plain.is_empty() && to_all.is_empty() {
            return;
        }
        let mesh = self.mesh.clone();
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let sent = async {
                if !to_all.is_empty() {
                    // Copied only when some peers get it plainly too.
                    let o = if plain.is_empty() {
                        std::mem::take(&mut ops)
                    } else {
                        ops.clone()
                    };
                    mesh.push_to(to_all, PushKind::ToAll, o).await?;
                }
                if !plain.is_empty() {
                    mesh.push_to(plain, PushKind::Plain, ops).await?;
                }
                Ok::<_, crate::mesh::MeshError>(())
            };
            tokio::select! {
                () = cancel.cancelled() => {}
                sent = sent => if let Err(e) = sent {
                    debug!("push failed: {e}");
                },
            }
        });
    }

    /// Whether this node is connected to every other current node of the
    /// team (what it sends to all then reaches each without a relay).
    fn reaches_all(&self) -> bool {
        self.allowed
            .as_ref()
            .is_some_and(|a| a.is_subset(&self.connected))
    }

    /// Splits the peers a message of this node goes to into those that get
    /// it plainly (and relay it) and those told it went to all
    /// ([`SyncRequest::ToAll`]): all that speak it, when this node is
    /// connected to every other node of the team; none otherwise.
    fn split_to_all(&self, peers: impl Iterator<Item = PeerId>) -> (Vec<PeerId>, Vec<PeerId>) {
        if !self.reaches_all() {
            return (peers.collect(), Vec::new());
        }
        peers.partition(|p| !self.peer_versions.speaks(p, wire::TO_ALL_PROTOCOL_VERSION))
    }

    /// After the state changed: the allow list follows the team's nodes.
    async fn after_change(&mut self) {
        self.update_allowed().await;
    }

    async fn update_allowed(&mut self) {
        let state = self.replica.state();
        // Who is allowed follows from the nodes and the members (whose
        // joins may conflict) alone.
        if self
            .allowed_from
            .as_ref()
            .is_some_and(|(n, m)| n.ptr_eq(&state.nodes) && m.ptr_eq(&state.members))
        {
            return;
        }
        let from = (state.nodes.clone(), state.members.clone());
        let me = self.me.to_hex();
        let mut peers = BTreeSet::new();
        let mut addresses: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for key in state.nodes.keys() {
            let Some(node) = shoal_protocol::view::effective_node(state, key) else {
                continue;
            };
            if node.removed.is_some() || node.key == me {
                continue;
            }
            let Ok(pk) = node.key.parse::<PublicKey>() else {
                warn!(team = %self.team.short(), node = %node.key, "a node key does not parse");
                continue;
            };
            let Ok(peer) = peer_id_from_key(&pk) else {
                continue;
            };
            peers.insert(peer);
            let addrs: Vec<Multiaddr> = node
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            if !addrs.is_empty() {
                addresses.push((peer, addrs));
            }
        }
        if self.allowed.as_ref() == Some(&peers) && self.addresses == addresses {
            self.allowed_from = Some(from);
            return;
        }
        for (peer, addrs) in &addresses {
            if let Err(e) = self.mesh.add_addresses(*peer, addrs.clone()).await {
                debug!("cannot record addresses: {e}");
            }
        }
        self.addresses = addresses;
        match self.mesh.set_allowed(peers.clone()).await {
            Ok(()) => {
                self.connected.retain(|p| peers.contains(p));
                self.vectors.retain(|p, _| peers.contains(p));
                self.heads_sent.retain(|p, _| peers.contains(p));
                self.allowed = Some(peers);
                self.allowed_from = Some(from);
            }
            Err(e) => debug!("cannot update the allow list: {e}"),
        }
    }

    fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::TheirVector { peer, vv } => {
                self.check_heads(peer, &self.replica.version_vector(), &vv);
                // One bounded page per round; a full page starts the next round.
                let (page, full) = self
                    .replica
                    .missing_page(&vv, ROUND_MAX_OPS, ROUND_MAX_BYTES);
                let mut ops: Vec<Vec<u8>> = page.into_iter().map(|a| a.op.encode()).collect();
                if full {
                    self.more.insert(peer);
                }
                // Fork evidence travels: a peer at the same seq of a log may
                // hold the other op of a fork, so both ops of every known
                // fork of a log it holds go with the round (it skips those it has).
                for (loser, winner) in self.replica.fork_evidence() {
                    if vv.contains_key(&loser.log()) {
                        ops.push(winner.encode());
                        ops.push(loser.encode());
                    }
                }
                // A version vector names seqs, not ops: the peer's op at its
                // head seq of a log may be the other op of a fork. Our op at
                // that seq goes along (one op per shared log; the peer skips
                // it when it holds it) so a fork is found by whoever holds both.
                // Once per head: a round where no head moved sends nothing.
                let sent = self.heads_sent.entry(peer).or_default();
                for (log, seq) in &vv {
                    if sent.get(log) == Some(seq) {
                        continue;
                    }
                    if let Some(a) = self.replica.log_op(log, *seq) {
                        ops.push(a.op.encode());
                        sent.insert(*log, *seq);
                    }
                }
                self.vectors.insert(peer, (vv, Instant::now()));
                if ops.is_empty() {
                    self.in_round.remove(&peer);
                    if self.more.remove(&peer) && self.connected.contains(&peer) {
                        self.start_round(peer);
                    }
                    return;
                }
                debug!(%peer, count = ops.len(), "sending missing ops");
                let mesh = self.mesh.clone();
                let tx = self.internal_tx.clone();
                self.tasks.spawn(async move {
                    for batch in split_batches(ops) {
                        match mesh.request(peer, SyncRequest::Ops(batch)).await {
                            Ok(SyncResponse::Ack) => {}
                            Ok(other) => {
                                debug!(%peer, "ops not taken: {other:?}");
                                let _ = tx.send(Internal::RoundFailed(peer)).await;
                                break;
                            }
                            Err(e) => {
                                debug!(%peer, "sending ops failed: {e}");
                                let _ = tx.send(Internal::RoundFailed(peer)).await;
                                break;
                            }
                        }
                    }
                    let _ = tx.send(Internal::RoundDone(peer)).await;
                });
            }
            Internal::RoundFailed(peer) => {
                // What this round carried may not have arrived.
                self.heads_sent.remove(&peer);
            }
            Internal::RoundDone(peer) => {
                self.in_round.remove(&peer);
                if self.more.remove(&peer) && self.connected.contains(&peer) {
                    self.start_round(peer);
                }
            }
        }
    }

    /// Notes a peer's vector: tells whether this node's store is behind its
    /// own logs, and frees writes once it is not.
    fn check_heads(&mut self, peer: PeerId, ours: &VersionVector, theirs: &VersionVector) {
        for b in self.heads.peer_vector(ours, theirs, Instant::now()) {
            warn!(
                %peer,
                team = %self.team.short(),
                log = %b.log,
                "this node's store holds seq {} of its own log, the peer holds {}: writes wait until the rest arrives (was the store restored from a backup?)",
                b.ours,
                b.theirs
            );
        }
        self.heads_caught_up();
    }

    fn heads_caught_up(&mut self) {
        if self.heads.caught_up(&self.replica.version_vector()) {
            debug!(team = %self.team.short(), "log heads learned from a peer; writes go on");
        }
    }

    fn heads_timeout(&mut self) {
        if self
            .heads
            .timed_out(Instant::now(), self.config.head_check_timeout)
        {
            warn!(
                team = %self.team.short(),
                "no peer told this node its log heads in {:?}; signing from the heads its store holds",
                self.config.head_check_timeout
            );
        }
    }

    async fn tick(&mut self) {
        let (next, timed_out) = self.leases.expire(Instant::now());
        for reply in timed_out {
            let _ = reply.send(Err(LeaseError::Timeout.into()));
        }
        for (author, reply) in next {
            self.serve_lease(author, Some(reply));
        }
        self.retry_unsaved();
        let report = self.replica.retry_future(now_ms());
        if !report.applied.is_empty() || !report.rejected.is_empty() || !report.voided.is_empty() {
            match self.persist(&report.applied, &report.rejected, &report.voided) {
                Ok(()) if self.config.push => self.push(&report.applied, None),
                Ok(()) => {}
                Err(e) => error!(team = %self.team.short(), "cannot commit ops: {e}"),
            }
            self.after_change().await;
        }
        let peers: Vec<PeerId> = self.connected.iter().copied().collect();
        let turn = self.config.anti_entropy_peers.max(1).min(peers.len());
        for k in 0..turn {
            let peer = peers[self.round_turn.wrapping_add(k) % peers.len()];
            self.start_round(peer);
        }
        self.round_turn = self.round_turn.wrapping_add(turn);
    }

    /// A peer whose round toward us shows that it lacks ops we hold gets a
    /// round from us at once, not when its turn comes: ticks reach each
    /// peer only every few intervals (`ANTI_ENTROPY_PEERS`), and a node
    /// with a single connection (a leaf of a star) learns only from that
    /// peer's rounds. At most once per peer per interval.
    fn prompt_round(&mut self, peer: PeerId, ours: &VersionVector, theirs: &VersionVector) {
        let behind = ours
            .iter()
            .any(|(log, &n)| theirs.get(log).is_none_or(|&t| t < n));
        if !behind || !self.connected.contains(&peer) {
            return;
        }
        let now = Instant::now();
        if self
            .prompted
            .get(&peer)
            .is_some_and(|at| now.duration_since(*at) < self.config.anti_entropy_interval)
        {
            return;
        }
        self.prompted.insert(peer, now);
        if self.in_round.contains(&peer) {
            // The round in flight asked before the peer said this: the next
            // follows it at once.
            self.more.insert(peer);
        } else {
            self.start_round(peer);
        }
    }

    /// Starts an anti-entropy round with `peer` unless one is in flight.
    fn start_round(&mut self, peer: PeerId) {
        if !self.in_round.insert(peer) {
            return;
        }
        let vv = self.replica.version_vector();
        let mesh = self.mesh.clone();
        let tx = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let msg = match mesh.request(peer, SyncRequest::VersionVector(vv)).await {
                Ok(SyncResponse::VersionVector(vv)) => Internal::TheirVector { peer, vv },
                Ok(other) => {
                    debug!(%peer, "unexpected answer to a version vector: {other:?}");
                    Internal::RoundDone(peer)
                }
                Err(e) => {
                    debug!(%peer, "version vector request failed: {e}");
                    Internal::RoundDone(peer)
                }
            };
            let _ = tx.send(msg).await;
        });
    }
}

/// What a lease remembers of a prepared op: the hash of its body.
fn body_hash(body: &OpBody) -> [u8; 32] {
    let bytes = postcard::to_stdvec(body).unwrap_or_default();
    shoal_protocol::keys::hash_parts("shoal/lease-body/v1", &[&bytes])
}

/// Resolves when the wait for this node's log heads times out; never while
/// it may sign.
async fn head_deadline(heads: &HeadCheck, timeout: Duration) {
    match heads.deadline(timeout) {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Resolves when this node's live state changes (never without one).
async fn live_changed(
    rx: &mut Option<watch::Receiver<Option<Box<Live>>>>,
) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// Resolves when a live push is due (never when none is).
async fn live_push_due(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// At most this many waiting batches of ops are applied and committed
/// together (see `Actor::events_from`).
pub const COALESCE_REQUESTS: usize = 64;

/// A batch of ops received from a peer, to be acknowledged once committed.
struct Received {
    peer: PeerId,
    ops: Vec<Vec<u8>>,
    /// Pushed live and to be relayed further: not sent by anti-entropy,
    /// nor pushed by an origin that reached every node.
    relay: bool,
    reply: oneshot::Sender<SyncResponse>,
}

impl Received {
    /// The batch of ops `ev` carries, or `ev` itself when it carries none.
    // The event only moves back to the caller; boxing it would allocate.
    #[allow(clippy::result_large_err)]
    fn from_event(ev: MeshEvent) -> Result<Received, MeshEvent> {
        match ev {
            MeshEvent::Request {
                peer,
                request: SyncRequest::Push(ops),
                reply,
            } => Ok(Received {
                peer,
                ops,
                relay: true,
                reply,
            }),
            MeshEvent::Request {
                peer,
                request: SyncRequest::ToAll(ToAll::Push(ops)),
                reply,
            } => Ok(Received {
                peer,
                ops,
                relay: false,
                reply,
            }),
            MeshEvent::Request {
                peer,
                request: SyncRequest::Ops(ops),
                reply,
            } => Ok(Received {
                peer,
                ops,
                relay: false,
                reply,
            }),
            other => Err(other),
        }
    }
}

async fn recv_event(events: &mut Option<mpsc::Receiver<MeshEvent>>) -> Option<MeshEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// At most this many writes wait for the node to learn its log heads after
/// a start; more are refused with [`SyncError::LearningHeads`].
pub const HELD_WRITES_MAX: usize = 1024;

/// Answers a held write command with `err`.
fn refuse(cmd: Command, err: SyncError) {
    match cmd {
        Command::Prepare { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Command::Lease { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        // A context carries no error: the caller hears the engine is gone.
        _ => {}
    }
}

/// At most this many ops are sent to one peer per anti-entropy round.
const ROUND_MAX_OPS: usize = 1000;
/// At most about this many encoded bytes of ops are sent per round.
const ROUND_MAX_BYTES: usize = 8 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_reports_go_only_to_peers_whose_heartbeat_since_they_connected_speaks_them() {
        let old = PeerId::random();
        let new = PeerId::random();
        let quiet = PeerId::random();
        let connected: BTreeSet<PeerId> = [old, new, quiet].into();
        let mut lp = PeerVersions::default();
        // No heartbeat yet: nobody.
        assert!(lp.among(&connected).is_empty());
        lp.heard(old, LIVE_PROTOCOL_VERSION - 1);
        lp.heard(new, shoal_protocol::PROTOCOL_VERSION);
        assert_eq!(lp.among(&connected), [new].into());
        // A peer that comes back (perhaps downgraded) gets none until its
        // heartbeat says again what it speaks.
        lp.forget(&new);
        assert!(lp.among(&connected).is_empty());
        lp.heard(new, LIVE_PROTOCOL_VERSION);
        assert_eq!(lp.among(&connected), [new].into());
        lp.heard(new, 1);
        assert!(lp.among(&connected).is_empty());
        // Only connected peers.
        lp.heard(old, LIVE_PROTOCOL_VERSION);
        assert_eq!(lp.among(&[new, quiet].into()), BTreeSet::new());
    }

    #[test]
    fn a_peer_speaks_what_its_last_heartbeat_since_it_connected_says() {
        let (peer, quiet) = (PeerId::random(), PeerId::random());
        let to_all = wire::TO_ALL_PROTOCOL_VERSION;
        let mut pv = PeerVersions::default();
        assert!(!pv.speaks(&quiet, 1));
        // Heard to speak live reports just now: once.
        assert!(pv.heard(peer, to_all - 1));
        assert!(!pv.speaks(&peer, to_all));
        assert!(pv.speaks(&peer, LIVE_PROTOCOL_VERSION));
        assert!(!pv.heard(peer, to_all));
        assert!(pv.speaks(&peer, to_all));
        // Downgraded, or reconnected: no longer.
        assert!(!pv.heard(peer, 1));
        assert!(!pv.speaks(&peer, LIVE_PROTOCOL_VERSION));
        assert!(pv.heard(peer, to_all));
        pv.forget(&peer);
        assert!(!pv.speaks(&peer, 1));
    }
    use shoal_protocol::keys::LogId;

    fn log(n: u8) -> LogId {
        let k = SecretKey::from_seed([n; 32]).public();
        LogId {
            author: k,
            origin: k,
        }
    }

    #[test]
    fn relays_go_to_a_few_peers_never_back_and_vary() {
        let peers: BTreeSet<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        let all: Vec<PeerId> = peers.iter().copied().collect();
        let from = Some(all[3]);
        let origin = Some(all[7]);
        let mut seen = BTreeSet::new();
        for spin in 0..20 {
            let got = pick_relays(&peers, &[from, origin], spin, 4);
            assert_eq!(got.len(), 4);
            assert!(!got.contains(&all[3]) && !got.contains(&all[7]), "{got:?}");
            let distinct: BTreeSet<_> = got.iter().collect();
            assert_eq!(distinct.len(), 4);
            seen.extend(got);
        }
        assert_eq!(seen.len(), 8, "every other peer gets its turn");
        // Few peers: all of them but the excluded.
        let few: BTreeSet<PeerId> = all[..3].iter().copied().collect();
        assert_eq!(pick_relays(&few, &[Some(all[0])], 9, 4), all[1..3].to_vec());
    }

    #[test]
    fn vector_gap_counts_what_one_side_lacks_per_log() {
        let ours: VersionVector = [(log(1), 5), (log(2), 3)].into_iter().collect();
        let theirs: VersionVector = [(log(1), 2), (log(3), 4)].into_iter().collect();
        // They lack 3 ops of log 1 and all 3 of log 2.
        assert_eq!(vector_gap(&ours, &theirs), 6);
        // We lack the 4 ops of log 3; they are behind on log 1, not ahead.
        assert_eq!(vector_gap(&theirs, &ours), 4);
        assert_eq!(vector_gap(&ours, &ours), 0);
        assert_eq!(vector_gap(&VersionVector::new(), &ours), 0);
    }
}
