//! The team mesh (§4): libp2p transport, allow list, dialing and the sync
//! and join protocols.
//!
//! The mesh is an actor. One task owns the libp2p `Swarm` and runs until its
//! [`CancellationToken`] is cancelled (or every [`MeshHandle`] is dropped).
//! [`MeshHandle`]s send it commands over a bounded channel and await a
//! oneshot reply; what the daemon must act on (peers coming and going,
//! requests to answer) comes out as [`MeshEvent`]s on a bounded channel.
//!
//! The mesh only moves bytes: it does not own the replica. Incoming sync and
//! join requests are handed to the daemon with a oneshot to answer through.

mod actor;
mod identity;
mod outbox;
mod stream;
mod swarm;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;

use futures::StreamExt as _;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use identity::{key_from_peer_id, keypair_from_seed, peer_id_from_key};
pub use libp2p::{Multiaddr, PeerId};
pub use outbox::{MAX_QUEUED_BYTES, MAX_QUEUED_OPS, PushKind};
pub use stream::{
    MAX_INBOUND_STREAMS_PER_PEER, PUSH_PROTOCOL, PUSH_PROTOCOL_V2, STREAM_EVENT_CAPACITY,
    STREAM_RETRY,
};
pub use swarm::{HANDSHAKE_TIMEOUT, IDENTIFY_PROTOCOL, REQUEST_TIMEOUT};
pub use wire::{JoinReply, JoinRequest, SyncRequest, SyncResponse, WireError};

pub use actor::{
    BACKOFF_RESET_AFTER, EVENT_BACKLOG, JOIN_GRACE, JOIN_LINGER, PROBATION_SYNC_REQUESTS,
    RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY,
};

/// Capacity of the command channel from handles to the actor.
pub const COMMAND_CHANNEL_CAPACITY: usize = 64;
/// Capacity of the event channel from the actor to the daemon.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;

/// What the mesh is started with.
#[derive(Clone)]
pub struct MeshConfig {
    /// The node's ed25519 secret seed: its libp2p identity is its node key.
    pub identity_seed: [u8; 32],
    /// The private-network key, derived from the team secret.
    pub psk: [u8; 32],
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// Announced to peers through identify (binary name and version).
    pub agent_version: String,
}

impl fmt::Debug for MeshConfig {
    // Both keys are secrets: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshConfig")
            .field("mdns", &self.mdns)
            .field("agent_version", &self.agent_version)
            .finish_non_exhaustive()
    }
}

/// Errors of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    #[error("the mesh is shut down")]
    Closed,
    #[error("the mesh must be started inside a tokio runtime")]
    NoRuntime,
    #[error("invalid key: {0}")]
    Key(String),
    #[error("cannot set up the transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot dial: {0}")]
    Dial(String),
    #[error("peer {0} is not in the allow list")]
    NotAllowed(PeerId),
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the mesh task failed: {0}")]
    Task(String),
}

/// Something the daemon must act on.
#[derive(Debug)]
pub enum MeshEvent {
    /// An allowed peer now has a connection (first one).
    PeerConnected(PeerId),
    /// An allowed (or just removed) peer lost its last connection.
    PeerDisconnected(PeerId),
    /// A sync request from an allowed peer. Dropping `reply` leaves the peer
    /// without an answer (it sees a failed request).
    Request {
        peer: PeerId,
        request: SyncRequest,
        reply: oneshot::Sender<SyncResponse>,
    },
    /// A join request, from any peer that holds the team's network key.
    Join {
        peer: PeerId,
        request: JoinRequest,
        reply: oneshot::Sender<JoinReply>,
    },
}

/// This node's addresses: what it listens on and what peers observed.
/// How live pushes travel, for diagnostics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Peers whose push stream is open, sorted.
    pub streams: Vec<PeerId>,
    /// Pushes sent on a push stream since the mesh started.
    pub over_stream: u64,
    /// Pushes sent as request-response exchanges (no stream open yet, a
    /// failed one, or a peer without the protocol).
    pub over_request: u64,
    /// Messages ([`MeshHandle::send`]) sent on a push stream.
    pub messages_over_stream: u64,
    /// Messages sent as request-response exchanges (as pushes, or the
    /// peer's stream is the first version).
    pub messages_over_request: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    pub listen: Vec<Multiaddr>,
    pub observed: Vec<Multiaddr>,
}

type Reply<T> = oneshot::Sender<T>;

/// Commands from handles to the actor; each carries its reply channel.
#[derive(Debug)]
pub(crate) enum Command {
    Listen {
        addr: Multiaddr,
        reply: Reply<Result<Vec<Multiaddr>, MeshError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: Reply<Result<(), MeshError>>,
    },
    AddAddresses {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: Reply<()>,
    },
    SetAllowed {
        peers: BTreeSet<PeerId>,
        reply: Reply<()>,
    },
    Peers {
        reply: Reply<Vec<PeerId>>,
    },
    LocalAddrs {
        reply: Reply<LocalAddrs>,
    },
    PushStats {
        reply: Reply<PushStats>,
    },
    Request {
        peer: PeerId,
        request: SyncRequest,
        reply: Reply<Result<SyncResponse, MeshError>>,
    },
    Push {
        kind: PushKind,
        ops: Vec<Vec<u8>>,
        /// Only these peers (those connected and allowed); `None`: all.
        to: Option<Vec<PeerId>>,
        reply: Reply<usize>,
    },
    Send {
        request: SyncRequest,
        to: Vec<PeerId>,
        reply: Reply<Result<usize, MeshError>>,
    },
    Join {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: JoinRequest,
        reply: Reply<Result<JoinReply, MeshError>>,
    },
}

/// A cloneable handle to the mesh actor.
#[derive(Debug, Clone)]
pub struct MeshHandle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
}

impl MeshHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| MeshError::Closed)?;
        rx.await.map_err(|_| MeshError::Closed)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Starts listening on `addr` (`/ip4/0.0.0.0/tcp/0` style) and returns the
    /// addresses actually bound.
    pub async fn listen(&self, addr: Multiaddr) -> Result<Vec<Multiaddr>, MeshError> {
        self.call(|reply| Command::Listen { addr, reply }).await?
    }

    /// Dials an address (with or without a `/p2p/<peer id>` suffix). Returns
    /// once the dial has started; the outcome shows as [`MeshEvent`]s.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), MeshError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Remembers addresses of a peer, used to (re)connect to it.
    pub async fn add_addresses(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), MeshError> {
        self.call(|reply| Command::AddAddresses { peer, addrs, reply })
            .await
    }

    /// Replaces the allow list: the peers that are current nodes of the team.
    /// Connected peers no longer in it are disconnected at once; newly
    /// allowed peers are dialed.
    pub async fn set_allowed(&self, peers: BTreeSet<PeerId>) -> Result<(), MeshError> {
        self.call(|reply| Command::SetAllowed { peers, reply })
            .await
    }

    /// Allowed peers with at least one connection, sorted.
    pub async fn peers(&self) -> Result<Vec<PeerId>, MeshError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// Listen addresses and addresses peers observed for this node.
    pub async fn local_addrs(&self) -> Result<LocalAddrs, MeshError> {
        self.call(|reply| Command::LocalAddrs { reply }).await
    }

    /// Sends one sync request to an allowed peer (dialing it if needed) and
    /// waits for its response.
    /// How live pushes have travelled so far.
    pub async fn push_stats(&self) -> Result<PushStats, MeshError> {
        self.call(|reply| Command::PushStats { reply }).await
    }

    pub async fn request(
        &self,
        peer: PeerId,
        request: SyncRequest,
    ) -> Result<SyncResponse, MeshError> {
        self.call(|reply| Command::Request {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Pushes freshly committed ops to every connected allowed peer, without
    /// waiting for their acknowledgements (see [`Self::push_to`]). Returns
    /// how many peers they went to.
    pub async fn broadcast(&self, ops: Vec<Vec<u8>>) -> Result<usize, MeshError> {
        self.call(|reply| Command::Push {
            kind: PushKind::Plain,
            ops,
            to: None,
            reply,
        })
        .await
    }

    /// Pushes `ops` to those of `peers` that are connected and allowed,
    /// without waiting for their acknowledgements: each peer has at most one
    /// push unanswered, and ops pushed meanwhile wait and leave together
    /// (in batches within the wire's limits) when it is answered. Returns
    /// how many peers they went to.
    pub async fn push_to(
        &self,
        peers: Vec<PeerId>,
        kind: PushKind,
        ops: Vec<Vec<u8>>,
    ) -> Result<usize, MeshError> {
        self.call(|reply| Command::Push {
            kind,
            ops,
            to: Some(peers),
            reply,
        })
        .await
    }

    /// Sends a one-way message (a heartbeat or a live report) to those of
    /// `peers` that are connected and allowed, without waiting for their
    /// answers: it waits in each peer's queue of pushes and travels on the
    /// push stream when the peer's speaks [`PUSH_PROTOCOL_V2`], else as a
    /// request. Returns how many peers it went to.
    pub async fn send(&self, peers: Vec<PeerId>, request: SyncRequest) -> Result<usize, MeshError> {
        self.call(|reply| Command::Send {
            request,
            to: peers,
            reply,
        })
        .await?
    }

    /// Calls the join protocol of `peer` (which need not be allowed), dialing
    /// `addrs` if not connected.
    pub async fn join(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: JoinRequest,
    ) -> Result<JoinReply, MeshError> {
        self.call(|reply| Command::Join {
            peer,
            addrs,
            request,
            reply,
        })
        .await?
    }
}

/// The running mesh: owns the actor task.
#[derive(Debug)]
pub struct Mesh {
    handle: MeshHandle,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Mesh {
    /// Builds the swarm and spawns the actor on the current tokio runtime.
    /// The actor stops when `cancel` is cancelled. Events must be consumed:
    /// while the channel is full they wait in a bounded backlog, and past it
    /// they are dropped (with their reply channels, so requests go unanswered).
    pub fn spawn(
        config: MeshConfig,
        cancel: CancellationToken,
    ) -> Result<(Mesh, mpsc::Receiver<MeshEvent>), MeshError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MeshError::NoRuntime)?;
        let keypair = keypair_from_seed(config.identity_seed)?;
        let local_peer_id = keypair.public().to_peer_id();
        // Building the swarm needs the runtime too (the mDNS watcher).
        let swarm = swarm::build(&keypair, config.psk, config.mdns, config.agent_version)?;
        let mut control = swarm.behaviour().stream.new_control();
        let mut accept = |protocol| {
            control
                .accept(protocol)
                .map_err(|e| MeshError::Transport(format!("push stream: {e}")))
        };
        // Each inbound stream with whether it is the second version.
        let incoming = futures::stream::select(
            accept(PUSH_PROTOCOL)?.map(|(peer, stream)| (peer, stream, false)),
            accept(PUSH_PROTOCOL_V2)?.map(|(peer, stream)| (peer, stream, true)),
        )
        .boxed();
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let actor = actor::Actor::new(swarm, control, incoming, cmd_rx, ev_tx, cancel.clone());
        let task = runtime.spawn(actor.run());
        let handle = MeshHandle {
            commands: cmd_tx,
            local_peer_id,
        };
        Ok((
            Mesh {
                handle,
                cancel,
                task,
            },
            ev_rx,
        ))
    }

    /// A new handle to the actor.
    pub fn handle(&self) -> MeshHandle {
        self.handle.clone()
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.handle.local_peer_id
    }

    /// Waits for the actor task to finish (after its token is cancelled).
    pub async fn join(self) -> Result<(), MeshError> {
        let Mesh { handle, task, .. } = self;
        // Our own handle must not keep the actor's command channel open.
        drop(handle);
        task.await.map_err(|e| MeshError::Task(e.to_string()))
    }

    /// Cancels the actor and waits for it to finish.
    pub async fn shutdown(self) -> Result<(), MeshError> {
        self.cancel.cancel();
        self.join().await
    }
}
