//! The mesh actor: the one task that owns the swarm.
//!
//! Its loop waits on, at once: cancellation, commands from handles, swarm
//! events, the daemon's answers to inbound requests, room in the event
//! channel, and a housekeeping tick (reconnects, closing peers whose join
//! window expired). Nothing in the loop blocks: events the daemon has not
//! taken yet wait in a bounded backlog, so the actor keeps serving commands
//! even when the daemon is busy awaiting one of them.
//!
//! Redialing: every allowed peer without a connection is redialed on the
//! housekeeping tick, with a delay that doubles (with jitter, so two nodes
//! that lost each other do not keep dialing in lockstep) up to
//! [`RECONNECT_MAX_DELAY`]. A new address for such a peer (a node that
//! restarted on another port publishes it in the team) makes it due at once
//! with the shortest delay, and a tick with no address to try does not grow
//! the delay. Both connections of a simultaneous dial are kept: the peer
//! counts as connected while either is up.
//!
//! Admission: a connection from a peer outside the allow list is put on
//! probation. During probation it may only use the join protocol. Its sync
//! requests are left unanswered without closing the connection: a node that
//! has just joined often syncs with a peer that has not applied its join
//! yet, and keeping the connection lets that peer promote it the moment it
//! allows it, with no redial and its backoff. More than
//! [`PROBATION_SYNC_REQUESTS`] of them close it, and it is closed when the
//! probation window ([`JOIN_GRACE`]) expires with no join in flight.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{
    Event as RrEvent, InboundFailure, Message, OutboundRequestId, ResponseChannel,
};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, ping};
use libp2p_stream::Control;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::outbox::{Batch, Outbox, PushKind};
use super::stream::{
    self, MAX_INBOUND_STREAMS_PER_PEER, STREAM_EVENT_CAPACITY, STREAM_RETRY, StreamEvent,
};
use super::swarm::{Behaviour, BehaviourEvent, REQUEST_TIMEOUT};
use super::wire::{self, JoinReply, JoinRequest, SyncRequest, SyncResponse, ToAll, WireMessage};
use super::{Command, LocalAddrs, MeshError, MeshEvent, PushStats};

/// How long a peer outside the allow list may stay connected to make a join
/// request.
pub const JOIN_GRACE: Duration = Duration::from_secs(5);
/// How long such a connection stays up after its last join exchange, so the
/// daemon can admit the peer (and allow it) without a reconnect.
pub const JOIN_LINGER: Duration = Duration::from_secs(2);
/// Sync requests a peer on probation may send (each left unanswered) before
/// its connection is closed: enough for a newcomer's first rounds while our
/// replica catches up with its join, few enough that a stranger gains
/// nothing by sending them.
pub const PROBATION_SYNC_REQUESTS: u32 = 8;
/// First delay before redialing an allowed peer.
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(500);
/// The redial delay doubles up to this. Each wait is drawn between half the
/// delay and the whole of it.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(60);
/// A connection that lived this long resets the redial delay; shorter ones
/// keep doubling it, so a peer that accepts then drops us is not hammered.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
/// Most events held back while the event channel is full.
pub const EVENT_BACKLOG: usize = 1024;
/// Period of reconnect and probation checks.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// After a listener reports its first address, wait this long for the others
/// (a wildcard address expands to one per interface) before replying.
const LISTEN_SETTLE: Duration = Duration::from_millis(50);
/// Address book bounds.
const MAX_ADDRS_PER_PEER: usize = 16;
const MAX_BOOK_PEERS: usize = 4096;
const MAX_OBSERVED_ADDRS: usize = 8;

/// The daemon's answer to an inbound request, with the channel to send it on.
/// `None`: the daemon dropped the reply sender or took too long.
enum Answer {
    Sync {
        peer: PeerId,
        channel: ResponseChannel<Vec<u8>>,
        response: Option<SyncResponse>,
    },
    Join {
        peer: PeerId,
        channel: ResponseChannel<Vec<u8>>,
        response: Option<JoinReply>,
    },
}

/// A connected peer outside the allow list.
struct Probation {
    /// When its connection is closed unless it has a join in flight.
    deadline: Instant,
    /// Sync requests it sent meanwhile (left unanswered).
    refused: u32,
}

struct Backoff {
    next: Instant,
    delay: Duration,
}

struct PendingListen {
    addr: Multiaddr,
    reply: oneshot::Sender<Result<Vec<Multiaddr>, MeshError>>,
    addrs: Vec<Multiaddr>,
    due: Option<Instant>,
}

type SyncReply = oneshot::Sender<Result<SyncResponse, MeshError>>;
type JoinReplyTx = oneshot::Sender<Result<JoinReply, MeshError>>;

/// One live push in flight, by how it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushId {
    Request(OutboundRequestId),
    Stream(u64),
}

/// Our push stream to one connected peer.
enum Link {
    /// Being opened (`ready` false) or open; `batches` feeds its task;
    /// `messages`: the stream is the second version, which carries messages.
    Up {
        link_id: u64,
        batches: mpsc::Sender<(u64, Vec<u8>)>,
        ready: bool,
        messages: bool,
    },
    /// It failed: pushes use request-response until `retry`, then it is
    /// opened again.
    Down { retry: Instant },
    /// The peer does not speak the push protocol (an older release):
    /// request-response until it reconnects.
    Unsupported,
}

/// Batches waiting in a link's channel: the outbox has at most one in
/// flight.
const LINK_CAPACITY: usize = 1;

/// Who waits for the answer to an outbound sync request.
enum Pending {
    /// A caller of [`super::MeshHandle::request`].
    Reply(SyncReply),
    /// The peer's [`Outbox`]: its next batch goes once this one is answered.
    Push(PeerId),
}

pub(crate) struct Actor {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<MeshEvent>,
    backlog: VecDeque<MeshEvent>,
    cancel: CancellationToken,
    allowed: BTreeSet<PeerId>,
    /// Allowed peers announced as connected, with when.
    connected: HashMap<PeerId, Instant>,
    /// Connected peers outside the allow list.
    probation: HashMap<PeerId, Probation>,
    joins_in_flight: HashMap<PeerId, usize>,
    book: HashMap<PeerId, Vec<Multiaddr>>,
    redial: HashMap<PeerId, Backoff>,
    /// Outbound sync requests.
    pending_sync: HashMap<OutboundRequestId, Pending>,
    /// Live pushes per connected peer: the one in flight and those waiting.
    outboxes: HashMap<PeerId, Outbox<PushId>>,
    /// Our push stream to each connected peer.
    links: HashMap<PeerId, Link>,
    next_link: u64,
    next_stream_push: u64,
    push_stats: PushStats,
    control: Control,
    /// Inbound push streams, each with whether it is the second version.
    incoming: BoxStream<'static, (PeerId, libp2p::Stream, bool)>,
    /// The tasks of the push streams, ours and the peers'.
    tasks: JoinSet<()>,
    /// The tasks serving inbound push streams, and their peer.
    inbound: HashMap<TaskId, PeerId>,
    stream_events_tx: mpsc::Sender<StreamEvent>,
    stream_events: mpsc::Receiver<StreamEvent>,
    pending_join: HashMap<OutboundRequestId, (PeerId, JoinReplyTx)>,
    answers: FuturesUnordered<BoxFuture<'static, Answer>>,
    listens: HashMap<libp2p::core::transport::ListenerId, PendingListen>,
    observed: VecDeque<Multiaddr>,
}

impl Actor {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        control: Control,
        incoming: BoxStream<'static, (PeerId, libp2p::Stream, bool)>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<MeshEvent>,
        cancel: CancellationToken,
    ) -> Self {
        let (stream_events_tx, stream_events) = mpsc::channel(STREAM_EVENT_CAPACITY);
        Self {
            swarm,
            commands,
            events,
            backlog: VecDeque::new(),
            cancel,
            allowed: BTreeSet::new(),
            connected: HashMap::new(),
            probation: HashMap::new(),
            joins_in_flight: HashMap::new(),
            book: HashMap::new(),
            redial: HashMap::new(),
            pending_sync: HashMap::new(),
            outboxes: HashMap::new(),
            links: HashMap::new(),
            next_link: 0,
            next_stream_push: 0,
            push_stats: PushStats::default(),
            control,
            incoming,
            tasks: JoinSet::new(),
            inbound: HashMap::new(),
            stream_events_tx,
            stream_events,
            pending_join: HashMap::new(),
            answers: FuturesUnordered::new(),
            listens: HashMap::new(),
            observed: VecDeque::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let local = *self.swarm.local_peer_id();
        info!(peer = %local, "mesh started");
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let listen_due = self.listens.values().filter_map(|l| l.due).min();
            tokio::select! {
                () = self.cancel.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone: nobody can use the mesh any more.
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(answer) = self.answers.next(), if !self.answers.is_empty() => {
                    self.on_answer(answer);
                }
                Some(event) = self.stream_events.recv() => self.on_stream_event(event),
                Some((peer, stream, messages)) = self.incoming.next() => {
                    self.on_inbound_stream(peer, stream, messages);
                }
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.on_task_done(done);
                }
                // An owned permit does not borrow `self` across the handlers.
                permit = self.events.clone().reserve_owned(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => {
                        debug!("event receiver dropped; discarding backlog");
                        self.backlog.clear();
                    }
                },
                () = tokio::time::sleep_until(listen_due.unwrap_or_else(Instant::now)),
                    if listen_due.is_some() => self.flush_listens(),
                _ = tick.tick() => self.housekeeping(),
            }
        }
        // The stream tasks saw the same cancellation (or are aborted).
        self.tasks.shutdown().await;
        // Dropping the swarm closes every connection; dropping the pending
        // reply senders tells waiting callers the mesh is closed.
        info!(peer = %local, "mesh stopped");
    }

    // ---- events to the daemon ----

    fn emit(&mut self, event: MeshEvent) {
        if self.events.is_closed() {
            return;
        }
        if !self.backlog.is_empty() {
            self.push_backlog(event);
            return;
        }
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => self.push_backlog(event),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn push_backlog(&mut self, event: MeshEvent) {
        if self.backlog.len() >= EVENT_BACKLOG {
            // Requests dropped here go unanswered; anti-entropy recovers.
            warn!(
                kind = event_kind(&event),
                "event backlog full; dropping event"
            );
            return;
        }
        self.backlog.push_back(event);
    }

    // ---- commands ----

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.listens.insert(
                        id,
                        PendingListen {
                            addr,
                            reply,
                            addrs: Vec::new(),
                            due: None,
                        },
                    );
                }
                Err(e) => {
                    let _ = reply.send(Err(MeshError::Listen {
                        addr,
                        reason: e.to_string(),
                    }));
                }
            },
            Command::Dial { addr, reply } => {
                let _ = reply.send(self.dial_addr(addr));
            }
            Command::AddAddresses { peer, addrs, reply } => {
                let mut new = false;
                for addr in addrs {
                    new |= self.book_add(peer, addr);
                }
                if new {
                    self.redial_now(peer);
                }
                let _ = reply.send(());
            }
            Command::SetAllowed { peers, reply } => {
                self.set_allowed(peers);
                let _ = reply.send(());
            }
            Command::Peers { reply } => {
                let mut peers: Vec<PeerId> = self
                    .connected
                    .keys()
                    .filter(|p| self.allowed.contains(p))
                    .copied()
                    .collect();
                peers.sort();
                let _ = reply.send(peers);
            }
            Command::PushStats { reply } => {
                let mut stats = self.push_stats.clone();
                stats.streams = self
                    .links
                    .iter()
                    .filter(|(_, l)| matches!(l, Link::Up { ready: true, .. }))
                    .map(|(p, _)| *p)
                    .collect();
                stats.streams.sort();
                let _ = reply.send(stats);
            }
            Command::LocalAddrs { reply } => {
                let _ = reply.send(LocalAddrs {
                    listen: self.swarm.listeners().cloned().collect(),
                    observed: self.observed.iter().cloned().collect(),
                });
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if !self.allowed.contains(&peer) {
                    let _ = reply.send(Err(MeshError::NotAllowed(peer)));
                    return;
                }
                let request = match wire::encode(&request) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        return;
                    }
                };
                let addrs = self.book_addrs(&peer);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request_with_addresses(&peer, request, addrs);
                self.pending_sync.insert(id, Pending::Reply(reply));
            }
            Command::Push {
                kind,
                ops,
                to,
                reply,
            } => {
                let n = self.queue_for(to.as_deref(), |o| o.queue(kind, ops.iter().cloned()));
                let _ = reply.send(n);
            }
            Command::Send { request, to, reply } => {
                let bytes = match wire::encode(&request) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        return;
                    }
                };
                let n = self.queue_for(Some(&to), |o| o.queue_message(bytes.clone()));
                let _ = reply.send(Ok(n));
            }
            Command::Join {
                peer,
                addrs,
                request,
                reply,
            } => {
                let request = match wire::encode(&request) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        return;
                    }
                };
                for addr in addrs {
                    self.book_add(peer, addr);
                }
                let addrs = self.book_addrs(&peer);
                *self.joins_in_flight.entry(peer).or_default() += 1;
                let id = self
                    .swarm
                    .behaviour_mut()
                    .join
                    .send_request_with_addresses(&peer, request, addrs);
                self.pending_join.insert(id, (peer, reply));
            }
        }
    }

    fn dial_addr(&mut self, addr: Multiaddr) -> Result<(), MeshError> {
        let opts = match peer_of(&addr) {
            Some(peer) => {
                self.book_add(peer, addr.clone());
                DialOpts::peer_id(peer).addresses(vec![addr]).build()
            }
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(e) => Err(MeshError::Dial(e.to_string())),
        }
    }

    /// A fresh chance to reach an allowed, unconnected peer (a new address):
    /// redial it on the next tick with the shortest delay, whatever the
    /// failures before.
    fn redial_now(&mut self, peer: PeerId) {
        if self.swarm.is_connected(&peer) {
            return;
        }
        if let Some(b) = self.redial.get_mut(&peer) {
            b.next = Instant::now();
            b.delay = RECONNECT_MIN_DELAY;
        }
    }

    fn set_allowed(&mut self, peers: BTreeSet<PeerId>) {
        let old = std::mem::replace(&mut self.allowed, peers);
        let now = Instant::now();
        for peer in old.difference(&self.allowed) {
            self.redial.remove(peer);
            self.book.remove(peer);
            self.outboxes.remove(peer);
            self.links.remove(peer);
            if self.swarm.is_connected(peer) {
                info!(%peer, "peer removed from the allow list; disconnecting");
                // PeerDisconnected follows when the connection is closed.
                let _ = self.swarm.disconnect_peer_id(*peer);
            }
        }
        let added: Vec<PeerId> = self.allowed.difference(&old).copied().collect();
        for peer in added {
            self.redial.insert(
                peer,
                Backoff {
                    next: now,
                    delay: RECONNECT_MIN_DELAY,
                },
            );
            if self.swarm.is_connected(&peer) {
                // A peer on probation (typically one that just joined) is
                // promoted without reconnecting.
                self.probation.remove(&peer);
                self.announce_connected(peer);
            }
        }
    }

    // ---- swarm events ----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => self.on_connection_established(peer_id, &endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, ?cause, remaining = num_established, "connection closed");
                if num_established == 0 {
                    self.on_peer_gone(peer_id);
                }
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                info!(%address, "listening");
                if let Some(l) = self.listens.get_mut(&listener_id) {
                    l.addrs.push(address);
                    l.due.get_or_insert_with(|| Instant::now() + LISTEN_SETTLE);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(l) = self.listens.remove(&listener_id) {
                    let result = if l.addrs.is_empty() {
                        Err(MeshError::Listen {
                            addr: l.addr,
                            reason: match reason {
                                Ok(()) => "listener closed".to_owned(),
                                Err(e) => e.to_string(),
                            },
                        })
                    } else {
                        Ok(l.addrs)
                    };
                    let _ = l.reply.send(result);
                }
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => debug!(%send_back_addr, %error, "incoming connection failed"),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::NewExternalAddrCandidate { address }
                if !self.observed.contains(&address) =>
            {
                if self.observed.len() >= MAX_OBSERVED_ADDRS {
                    self.observed.pop_front();
                }
                self.observed.push_back(address);
            }
            _ => {}
        }
    }

    /// Reports an allowed peer's first connection.
    fn announce_connected(&mut self, peer: PeerId) {
        if let Entry::Vacant(e) = self.connected.entry(peer) {
            e.insert(Instant::now());
            info!(%peer, "peer connected");
            self.open_link(peer);
            self.emit(MeshEvent::PeerConnected(peer));
        }
    }

    fn on_connection_established(&mut self, peer: PeerId, endpoint: &ConnectedPoint) {
        if self.allowed.contains(&peer) {
            if let ConnectedPoint::Dialer { address, .. } = endpoint {
                self.book_add(peer, address.clone());
            }
            self.announce_connected(peer);
        } else {
            debug!(%peer, "peer outside the allow list connected; join only");
            self.probation.entry(peer).or_insert_with(|| Probation {
                deadline: Instant::now() + JOIN_GRACE,
                refused: 0,
            });
        }
    }

    fn on_peer_gone(&mut self, peer: PeerId) {
        self.probation.remove(&peer);
        // What waited for it is sent by anti-entropy when it is back.
        self.outboxes.remove(&peer);
        self.links.remove(&peer);
        let Some(since) = self.connected.remove(&peer) else {
            return;
        };
        info!(%peer, "peer disconnected");
        self.emit(MeshEvent::PeerDisconnected(peer));
        if let Some(b) = self.redial.get_mut(&peer) {
            if since.elapsed() >= BACKOFF_RESET_AFTER {
                b.delay = RECONNECT_MIN_DELAY;
            }
            b.next = Instant::now() + jittered(b.delay);
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if self.allowed.contains(&peer_id) {
                    for addr in info.listen_addrs.into_iter().take(MAX_ADDRS_PER_PEER) {
                        self.book_add(peer_id, addr);
                    }
                }
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            }) => {
                if !matches!(error, ping::Failure::Unsupported) {
                    // The connection is dead or stuck; closing it lets the
                    // redial logic get a fresh one.
                    debug!(%peer, %error, "ping failed; closing connection");
                    self.swarm.close_connection(connection);
                }
            }
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let now = Instant::now();
                for (peer, addr) in found {
                    if !self.allowed.contains(&peer) {
                        continue;
                    }
                    self.book_add(peer, addr);
                    if !self.swarm.is_connected(&peer)
                        && let Some(b) = self.redial.get_mut(&peer)
                    {
                        b.next = now;
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
            BehaviourEvent::Join(event) => self.on_join_event(event),
            BehaviourEvent::Stream(()) => {}
        }
    }

    fn on_sync_event(&mut self, event: RrEvent<Vec<u8>, Vec<u8>>) {
        match event {
            RrEvent::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if !self.allowed.contains(&peer) {
                    // Only the join protocol is open to unknown peers: the
                    // response channel is dropped unanswered, and the request
                    // never reaches the daemon.
                    self.refuse_sync(peer);
                    return;
                }
                let Some(request) = self.decode_from::<SyncRequest>(peer, &request) else {
                    return;
                };
                let (tx, rx) = oneshot::channel();
                self.emit(MeshEvent::Request {
                    peer,
                    request,
                    reply: tx,
                });
                self.answers.push(
                    wait_answer(rx)
                        .map(move |response| Answer::Sync {
                            peer,
                            channel,
                            response,
                        })
                        .boxed(),
                );
            }
            RrEvent::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some(waiting) = self.pending_sync.remove(&request_id) else {
                    return;
                };
                let result = wire::decode::<SyncResponse>(&response);
                if let Err(e) = &result {
                    warn!(%peer, error = %e, "malformed sync response; disconnecting peer");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                match waiting {
                    Pending::Reply(reply) => {
                        let _ = reply.send(result.map_err(MeshError::from));
                    }
                    Pending::Push(to) => self.push_answered(to, PushId::Request(request_id)),
                }
            }
            RrEvent::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => match self.pending_sync.remove(&request_id) {
                Some(Pending::Reply(reply)) => {
                    let _ = reply.send(Err(MeshError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
                Some(Pending::Push(to)) => {
                    debug!(%peer, %error, "push failed");
                    self.push_answered(to, PushId::Request(request_id));
                }
                None => {}
            },
            RrEvent::InboundFailure { peer, error, .. } => self.on_inbound_failure(peer, &error),
            RrEvent::ResponseSent { .. } => {}
        }
    }

    /// Queues with `add` in the outbox of each connected, allowed peer (of
    /// `to`, or all), then sends what may go. Returns how many peers.
    fn queue_for(
        &mut self,
        to: Option<&[PeerId]>,
        mut add: impl FnMut(&mut Outbox<PushId>) -> usize,
    ) -> usize {
        let peers: Vec<PeerId> = self
            .connected
            .keys()
            .filter(|p| self.allowed.contains(p))
            .filter(|p| to.is_none_or(|to| to.contains(p)))
            .copied()
            .collect();
        for peer in &peers {
            let dropped = add(self.outboxes.entry(*peer).or_default());
            if dropped > 0 {
                debug!(%peer, dropped, "peer slow to take pushes; its oldest queued dropped (anti-entropy sends ops)");
            }
            self.flush_pushes(*peer);
        }
        peers.len()
    }

    /// Sends the next batch waiting for `peer`, unless a push to it is in
    /// flight.
    fn flush_pushes(&mut self, peer: PeerId) {
        if matches!(self.links.get(&peer), Some(Link::Down { retry }) if *retry <= Instant::now()) {
            self.open_link(peer);
        }
        let Some(outbox) = self.outboxes.get_mut(&peer) else {
            return;
        };
        while let Some(batch) = outbox.next_batch() {
            let (encoded, message) = match batch {
                Batch::Ops(PushKind::Plain, ops) => (wire::encode(&SyncRequest::Push(ops)), false),
                Batch::Ops(PushKind::ToAll, ops) => {
                    (wire::encode(&SyncRequest::ToAll(ToAll::Push(ops))), false)
                }
                Batch::Message(bytes) => (Ok(bytes), true),
            };
            match encoded {
                Ok(mut bytes) => {
                    if let Some(Link::Up {
                        batches,
                        ready: true,
                        messages,
                        ..
                    }) = self.links.get(&peer)
                        && (*messages || !message)
                    {
                        let id = self.next_stream_push;
                        match batches.try_send((id, bytes)) {
                            Ok(()) => {
                                self.next_stream_push += 1;
                                if message {
                                    self.push_stats.messages_over_stream += 1;
                                } else {
                                    self.push_stats.over_stream += 1;
                                }
                                outbox.sent(PushId::Stream(id));
                                return;
                            }
                            // Its task ended: its report is on the way.
                            Err(e) => {
                                bytes = e.into_inner().1;
                                let retry = Instant::now() + STREAM_RETRY;
                                self.links.insert(peer, Link::Down { retry });
                            }
                        }
                    }
                    let id = self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
                    if message {
                        self.push_stats.messages_over_request += 1;
                    } else {
                        self.push_stats.over_request += 1;
                    }
                    outbox.sent(PushId::Request(id));
                    self.pending_sync.insert(id, Pending::Push(peer));
                    return;
                }
                // Only an op too large for any batch: it cannot travel on
                // the mesh, and the next batch goes instead.
                Err(e) => warn!(%peer, error = %e, "push not sent"),
            }
        }
        if outbox.is_idle() {
            self.outboxes.remove(&peer);
        }
    }

    /// The push in flight to `peer` as `id` was answered or failed.
    fn push_answered(&mut self, peer: PeerId, id: PushId) {
        if self.outboxes.get_mut(&peer).is_some_and(|o| o.answered(id)) {
            self.flush_pushes(peer);
        }
    }

    // ---- push streams ----

    /// Starts the task of a new push stream to `peer`; pushes use
    /// request-response until it reports the stream open.
    fn open_link(&mut self, peer: PeerId) {
        let link_id = self.next_link;
        self.next_link += 1;
        let (batches, rx) = mpsc::channel(LINK_CAPACITY);
        self.tasks.spawn(stream::push_link(
            self.control.clone(),
            peer,
            link_id,
            rx,
            self.stream_events_tx.clone(),
            self.cancel.child_token(),
        ));
        self.links.insert(
            peer,
            Link::Up {
                link_id,
                batches,
                ready: false,
                messages: false,
            },
        );
    }

    fn on_stream_event(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Opened {
                peer,
                link_id,
                messages,
            } => {
                if let Some(Link::Up {
                    link_id: g,
                    ready,
                    messages: m,
                    ..
                }) = self.links.get_mut(&peer)
                    && *g == link_id
                {
                    debug!(%peer, messages, "push stream open");
                    *ready = true;
                    *m = messages;
                }
            }
            StreamEvent::Answered { peer, id } => self.push_answered(peer, PushId::Stream(id)),
            StreamEvent::Down {
                peer,
                link_id,
                unsupported,
                in_flight,
            } => {
                if matches!(self.links.get(&peer), Some(Link::Up { link_id: g, .. }) if *g == link_id)
                {
                    let link = if unsupported {
                        Link::Unsupported
                    } else {
                        Link::Down {
                            retry: Instant::now() + STREAM_RETRY,
                        }
                    };
                    self.links.insert(peer, link);
                }
                // What the stream was carrying goes again by request: a
                // stream that fails as it opens (the peer dropped it) must
                // not leave the push to anti-entropy.
                if let Some((id, request)) = in_flight
                    && self
                        .outboxes
                        .get(&peer)
                        .is_some_and(|o| o.is_in_flight(PushId::Stream(id)))
                {
                    let rid = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                    self.push_stats.over_request += 1;
                    self.pending_sync.insert(rid, Pending::Push(peer));
                    if let Some(o) = self.outboxes.get_mut(&peer) {
                        o.resent(PushId::Stream(id), PushId::Request(rid));
                    }
                }
            }
            StreamEvent::Request {
                peer,
                request,
                reply,
            } => {
                // A peer removed since its stream was accepted: dropping the
                // reply closes the stream.
                if self.allowed.contains(&peer) {
                    self.emit(MeshEvent::Request {
                        peer,
                        request: *request,
                        reply,
                    });
                }
            }
            StreamEvent::Malformed { peer, error } => {
                warn!(%peer, %error, "malformed push stream; disconnecting peer");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    /// A push stream opened by `peer`: served only for an allowed peer, and
    /// only a few at once.
    fn on_inbound_stream(&mut self, peer: PeerId, stream: libp2p::Stream, messages: bool) {
        if !self.allowed.contains(&peer) {
            // A newcomer opens its stream as soon as it connects, before we
            // admit it: that is not held against its probation. A removed
            // peer is disconnected.
            if self.probation.contains_key(&peer) {
                debug!(%peer, "push stream from a peer on probation; refused");
            } else {
                self.refuse_sync(peer);
            }
            return;
        }
        let open = self.inbound.values().filter(|p| **p == peer).count();
        if open >= MAX_INBOUND_STREAMS_PER_PEER {
            debug!(%peer, "too many push streams from one peer; refused");
            return;
        }
        let task = self.tasks.spawn(stream::serve_pushes(
            peer,
            stream,
            messages,
            self.stream_events_tx.clone(),
            self.cancel.child_token(),
        ));
        self.inbound.insert(task.id(), peer);
    }

    fn on_task_done(&mut self, done: Result<(TaskId, ()), JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                if e.is_panic() {
                    warn!(error = %e, "push stream task panicked");
                }
                e.id()
            }
        };
        self.inbound.remove(&id);
    }

    fn on_join_event(&mut self, event: RrEvent<Vec<u8>, Vec<u8>>) {
        match event {
            RrEvent::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                debug!(%peer, "join request");
                let Some(request) = self.decode_from::<JoinRequest>(peer, &request) else {
                    return;
                };
                *self.joins_in_flight.entry(peer).or_default() += 1;
                let (tx, rx) = oneshot::channel();
                self.emit(MeshEvent::Join {
                    peer,
                    request,
                    reply: tx,
                });
                self.answers.push(
                    wait_answer(rx)
                        .map(move |response| Answer::Join {
                            peer,
                            channel,
                            response,
                        })
                        .boxed(),
                );
            }
            RrEvent::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((peer, reply)) = self.pending_join.remove(&request_id) {
                    let result = wire::decode::<JoinReply>(&response);
                    if let Err(e) = &result {
                        warn!(%peer, error = %e, "malformed join reply; disconnecting peer");
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                    let _ = reply.send(result.map_err(MeshError::from));
                    self.join_done(peer);
                }
            }
            RrEvent::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, reply)) = self.pending_join.remove(&request_id) {
                    let _ = reply.send(Err(MeshError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                    self.join_done(peer);
                }
            }
            RrEvent::InboundFailure { peer, error, .. } => self.on_inbound_failure(peer, &error),
            RrEvent::ResponseSent { .. } => {}
        }
    }

    /// A sync request from a peer outside the allow list. A peer on
    /// probation keeps its connection for its first few (see the module
    /// docs); any other (one just removed, whose connection is closing) or
    /// one past the bound is disconnected.
    fn refuse_sync(&mut self, peer: PeerId) {
        if let Some(p) = self.probation.get_mut(&peer) {
            p.refused += 1;
            if p.refused <= PROBATION_SYNC_REQUESTS {
                debug!(%peer, "sync request from a peer on probation; not answered");
                return;
            }
        }
        warn!(%peer, "sync requests from a peer outside the allow list; disconnecting");
        self.probation.remove(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_inbound_failure(&mut self, peer: PeerId, error: &InboundFailure) {
        debug!(%peer, %error, "inbound request failed");
    }

    /// Decodes a message from `peer`. A malformed one is logged and its sender
    /// disconnected: honest peers never send one.
    fn decode_from<M: WireMessage>(&mut self, peer: PeerId, bytes: &[u8]) -> Option<M> {
        match wire::decode::<M>(bytes) {
            Ok(msg) => Some(msg),
            Err(e) => {
                warn!(%peer, error = %e, "malformed message; disconnecting peer");
                let _ = self.swarm.disconnect_peer_id(peer);
                None
            }
        }
    }

    /// Encodes the daemon's answer; one that cannot be encoded (an oversized
    /// batch) is logged and not sent.
    fn encode_answer<M: WireMessage>(peer: PeerId, msg: &M) -> Option<Vec<u8>> {
        match wire::encode(msg) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                warn!(%peer, error = %e, "cannot encode the answer; not sent");
                None
            }
        }
    }

    fn join_done(&mut self, peer: PeerId) {
        if let Some(n) = self.joins_in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.joins_in_flight.remove(&peer);
            }
        }
        if let Some(p) = self.probation.get_mut(&peer) {
            p.deadline = p.deadline.max(Instant::now() + JOIN_LINGER);
        }
    }

    fn on_answer(&mut self, answer: Answer) {
        match answer {
            Answer::Sync {
                peer,
                channel,
                response,
            } => {
                let Some(response) = response else {
                    debug!(%peer, "sync request left unanswered");
                    return;
                };
                // The peer may have been removed while the daemon worked.
                if !self.allowed.contains(&peer) {
                    return;
                }
                let Some(response) = Self::encode_answer(peer, &response) else {
                    return;
                };
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response)
                    .is_err()
                {
                    debug!(%peer, "peer gone before the sync response");
                }
            }
            Answer::Join {
                peer,
                channel,
                response,
            } => {
                self.join_done(peer);
                let Some(response) = response else {
                    debug!(%peer, "join request left unanswered");
                    return;
                };
                let Some(response) = Self::encode_answer(peer, &response) else {
                    return;
                };
                if self
                    .swarm
                    .behaviour_mut()
                    .join
                    .send_response(channel, response)
                    .is_err()
                {
                    debug!(%peer, "peer gone before the join reply");
                }
            }
        }
    }

    // ---- timers ----

    fn flush_listens(&mut self) {
        let now = Instant::now();
        let due: Vec<_> = self
            .listens
            .iter()
            .filter(|(_, l)| l.due.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(l) = self.listens.remove(&id) {
                let _ = l.reply.send(Ok(l.addrs));
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();

        let expired: Vec<PeerId> = self
            .probation
            .iter()
            .filter(|(peer, p)| p.deadline <= now && !self.joins_in_flight.contains_key(peer))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            debug!(%peer, "join window over; disconnecting peer outside the allow list");
            self.probation.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }

        let due: Vec<PeerId> = self
            .redial
            .iter()
            .filter(|(peer, b)| b.next <= now && !self.swarm.is_connected(peer))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            let addrs = self.book_addrs(&peer);
            // Without an address of our own, only identify's cache may
            // know one: such a try says nothing about the peer, so it does
            // not grow the delay (the address, when it comes, resets it anyway).
            let tried = !addrs.is_empty();
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => debug!(%peer, "redialing"),
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => debug!(%peer, error = %e, "cannot redial"),
            }
            if let Some(b) = self.redial.get_mut(&peer) {
                b.next = now + jittered(b.delay);
                if tried {
                    b.delay = (b.delay * 2).min(RECONNECT_MAX_DELAY);
                }
            }
        }
    }

    // ---- address book ----

    /// Records an address of `peer`; true when it was not known.
    fn book_add(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        let addr = without_p2p(addr);
        if !self.book.contains_key(&peer) && self.book.len() >= MAX_BOOK_PEERS {
            debug!(%peer, "address book full");
            return false;
        }
        let list = self.book.entry(peer).or_default();
        if list.contains(&addr) {
            return false;
        }
        if list.len() >= MAX_ADDRS_PER_PEER {
            list.remove(0);
        }
        list.push(addr);
        true
    }

    fn book_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.book.get(peer).cloned().unwrap_or_default()
    }
}

/// Waits for the daemon's answer, bounded: the remote gives up after the
/// same time anyway.
async fn wait_answer<T>(rx: oneshot::Receiver<T>) -> Option<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, rx).await.ok()?.ok()
}

/// A wait drawn between half of `delay` and all of it, so peers that lost
/// each other at the same moment do not redial in lockstep.
fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    // Without randomness the whole delay is still a correct wait.
    let Ok(r) = getrandom::u64() else {
        return delay;
    };
    let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_millis(r % (spread + 1))
}

/// What an event is, for logs (requests carry op bytes not worth printing).
fn event_kind(event: &MeshEvent) -> &'static str {
    match event {
        MeshEvent::PeerConnected(_) => "peer-connected",
        MeshEvent::PeerDisconnected(_) => "peer-disconnected",
        MeshEvent::Request { .. } => "sync-request",
        MeshEvent::Join { .. } => "join-request",
    }
}

/// The peer id in a trailing `/p2p/<peer id>`, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

fn without_p2p(mut addr: Multiaddr) -> Multiaddr {
    if peer_of(&addr).is_some() {
        addr.pop();
    }
    addr
}
