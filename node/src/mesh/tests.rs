#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Mesh actors talking over 127.0.0.1 inside one process.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use shoal_protocol::replica::VersionVector;
use shoal_protocol::{LogId, SecretKey};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::wire::{JOIN_PROTOCOL, SYNC_PROTOCOL, ToAll, WIRE_VERSION};
use super::*;

/// Bound for things that must happen.
const WAIT: Duration = Duration::from_secs(15);
/// How long to watch for things that must not happen.
const QUIET: Duration = Duration::from_secs(2);

struct Node {
    mesh: Mesh,
    handle: MeshHandle,
    events: mpsc::Receiver<MeshEvent>,
    listen: Multiaddr,
}

async fn node_with(seed: u8, psk: u8, cancel: CancellationToken) -> Node {
    let config = MeshConfig {
        identity_seed: [seed; 32],
        psk: [psk; 32],
        mdns: false,
        agent_version: "shoal-test".into(),
    };
    let (mesh, events) = Mesh::spawn(config, cancel).unwrap();
    let handle = mesh.handle();
    let addrs = handle
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    Node {
        mesh,
        handle,
        events,
        listen: addrs[0].clone(),
    }
}

async fn node(seed: u8, psk: u8) -> Node {
    node_with(seed, psk, CancellationToken::new()).await
}

impl Node {
    fn id(&self) -> PeerId {
        self.handle.local_peer_id()
    }

    fn addr(&self) -> Multiaddr {
        self.listen.clone().with(Protocol::P2p(self.id()))
    }

    async fn allow(&self, peers: &[PeerId]) {
        let set: BTreeSet<PeerId> = peers.iter().copied().collect();
        self.handle.set_allowed(set).await.unwrap();
    }

    /// The next event matching `pred` within `within`; other events are
    /// skipped (their reply channels dropped).
    async fn next(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&MeshEvent) -> bool,
    ) -> Option<MeshEvent> {
        timeout(within, async {
            loop {
                let ev = self.events.recv().await?;
                if pred(&ev) {
                    return Some(ev);
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    async fn expect_connected(&mut self, peer: PeerId) {
        let ev = self
            .next(
                WAIT,
                |e| matches!(e, MeshEvent::PeerConnected(p) if *p == peer),
            )
            .await;
        assert!(ev.is_some(), "{} never saw {peer} connect", self.id());
    }

    async fn expect_disconnected(&mut self, peer: PeerId) {
        let ev = self
            .next(
                WAIT,
                |e| matches!(e, MeshEvent::PeerDisconnected(p) if *p == peer),
            )
            .await;
        assert!(ev.is_some(), "{} never saw {peer} disconnect", self.id());
    }

    /// The next sync request, with its sender and its reply channel (left
    /// unanswered until the caller answers or drops it).
    async fn take_request(&mut self) -> (PeerId, SyncRequest, oneshot::Sender<SyncResponse>) {
        let ev = self
            .next(WAIT, |e| matches!(e, MeshEvent::Request { .. }))
            .await;
        let Some(MeshEvent::Request {
            peer,
            request,
            reply,
        }) = ev
        else {
            panic!("{} got no sync request", self.id());
        };
        (peer, request, reply)
    }

    /// Answers the next sync request with `response`, returning the request.
    async fn answer(&mut self, response: SyncResponse) -> (PeerId, SyncRequest) {
        let (peer, request, reply) = self.take_request().await;
        reply.send(response).unwrap();
        (peer, request)
    }

    async fn shutdown(self) {
        timeout(WAIT, self.mesh.shutdown())
            .await
            .expect("mesh did not stop in time")
            .unwrap();
    }
}

/// Two nodes that allow each other, connected.
async fn pair(seed_a: u8, seed_b: u8) -> (Node, Node) {
    let mut a = node(seed_a, 7).await;
    let mut b = node(seed_b, 7).await;
    a.allow(&[b.id()]).await;
    b.allow(&[a.id()]).await;
    a.handle.dial(b.addr()).await.unwrap();
    a.expect_connected(b.id()).await;
    b.expect_connected(a.id()).await;
    (a, b)
}

/// A (who allows nobody yet) and C, a newcomer that knows A, connected:
/// C is on probation at A.
async fn newcomer() -> (Node, Node) {
    let a = node(1, 7).await;
    let mut c = node(3, 7).await;
    c.allow(&[a.id()]).await;
    c.handle.dial(a.addr()).await.unwrap();
    c.expect_connected(a.id()).await;
    (a, c)
}

fn sample_vv() -> VersionVector {
    let author = SecretKey::from_seed([1; 32]).public();
    let origin = SecretKey::from_seed([2; 32]).public();
    VersionVector::from([(LogId { author, origin }, 3)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_peers_connect_request_and_push() {
    let (a, mut b) = pair(1, 2).await;
    assert_eq!(a.handle.peers().await.unwrap(), vec![b.id()]);
    assert_eq!(b.handle.peers().await.unwrap(), vec![a.id()]);

    // Anti-entropy round trip: A sends its vector, B answers with a batch.
    let batch = SyncResponse::Ops {
        ops: vec![b"op-1".to_vec(), b"op-2".to_vec()],
        more: false,
    };
    let (response, (from, request)) = tokio::join!(
        a.handle
            .request(b.id(), SyncRequest::VersionVector(sample_vv())),
        b.answer(batch.clone()),
    );
    assert_eq!(response.unwrap(), batch);
    assert_eq!(from, a.id());
    assert_eq!(request, SyncRequest::VersionVector(sample_vv()));

    // Live push reaches B as an event.
    let sent = a.handle.broadcast(vec![b"live-op".to_vec()]).await.unwrap();
    assert_eq!(sent, 1);
    let (from, request) = b.answer(SyncResponse::Ack).await;
    assert_eq!(from, a.id());
    assert_eq!(request, SyncRequest::Push(vec![b"live-op".to_vec()]));

    // More ops than a batch holds go as two pushes, in order.
    let many: Vec<Vec<u8>> = (0..=wire::MAX_BATCH_OPS as u32)
        .map(|i| i.to_le_bytes().to_vec())
        .collect();
    assert_eq!(a.handle.broadcast(many.clone()).await.unwrap(), 1);
    let (_, first) = b.answer(SyncResponse::Ack).await;
    let (_, second) = b.answer(SyncResponse::Ack).await;
    assert_eq!(
        first,
        SyncRequest::Push(many[..wire::MAX_BATCH_OPS].to_vec())
    );
    assert_eq!(
        second,
        SyncRequest::Push(many[wire::MAX_BATCH_OPS..].to_vec())
    );

    let addrs = a.handle.local_addrs().await.unwrap();
    assert_eq!(addrs.listen, vec![a.listen.clone()]);

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_made_while_one_is_unanswered_leave_together_in_order() {
    let (a, mut b) = pair(1, 2).await;
    let op = |s: &str| s.as_bytes().to_vec();
    a.handle
        .push_to(vec![b.id()], PushKind::ToAll, vec![op("1")])
        .await
        .unwrap();
    let (_, request, reply) = b.take_request().await;
    assert_eq!(request, SyncRequest::ToAll(ToAll::Push(vec![op("1")])));
    // While B has not answered, A's next pushes wait at A.
    for o in ["2", "3"] {
        a.handle
            .push_to(vec![b.id()], PushKind::ToAll, vec![op(o)])
            .await
            .unwrap();
    }
    a.handle
        .push_to(vec![b.id()], PushKind::Plain, vec![op("4"), op("5")])
        .await
        .unwrap();
    let early = b
        .next(QUIET, |e| matches!(e, MeshEvent::Request { .. }))
        .await;
    assert!(
        early.is_none(),
        "a second push went before the first was answered"
    );
    reply.send(SyncResponse::Ack).unwrap();
    // Then they go as one batch per kind, in order.
    let (_, next) = b.answer(SyncResponse::Ack).await;
    assert_eq!(
        next,
        SyncRequest::ToAll(ToAll::Push(vec![op("2"), op("3")]))
    );
    let (_, last) = b.answer(SyncResponse::Ack).await;
    assert_eq!(last, SyncRequest::Push(vec![op("4"), op("5")]));

    // A refused push frees the way as well as an acknowledged one.
    a.handle.broadcast(vec![op("6")]).await.unwrap();
    let (_, r) = b.answer(SyncResponse::Refused("busy".into())).await;
    assert_eq!(r, SyncRequest::Push(vec![op("6")]));
    a.handle.broadcast(vec![op("7")]).await.unwrap();
    let (_, r) = b.answer(SyncResponse::Ack).await;
    assert_eq!(r, SyncRequest::Push(vec![op("7")]));

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_a_peer_that_never_answers_resume_when_it_reconnects() {
    let (mut a, mut b) = pair(1, 2).await;
    a.handle.broadcast(vec![b"1".to_vec()]).await.unwrap();
    // B takes the push but never answers; then it goes away, with a push
    // still waiting for it at A.
    let (_, _, reply) = b.take_request().await;
    a.handle.broadcast(vec![b"2".to_vec()]).await.unwrap();
    let b_id = b.id();
    b.shutdown().await;
    drop(reply);
    a.expect_disconnected(b_id).await;
    // Back (same key, new port): what waited for the old connection is
    // left to anti-entropy, and a new push goes at once.
    let mut b = node(2, 7).await;
    b.allow(&[a.id()]).await;
    a.handle.dial(b.addr()).await.unwrap();
    b.expect_connected(a.id()).await;
    a.expect_connected(b_id).await;
    assert_eq!(a.handle.broadcast(vec![b"3".to_vec()]).await.unwrap(), 1);
    let (_, r) = b.answer(SyncResponse::Ack).await;
    assert_eq!(r, SyncRequest::Push(vec![b"3".to_vec()]));

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_network_key_cannot_connect() {
    let mut a = node(1, 7).await;
    let mut c = node(3, 8).await;
    a.allow(&[c.id()]).await;
    c.allow(&[a.id()]).await;
    c.handle.dial(a.addr()).await.unwrap();

    let is_connect = |e: &MeshEvent| matches!(e, MeshEvent::PeerConnected(_));
    let (seen_a, seen_c) = tokio::join!(a.next(QUIET, is_connect), c.next(QUIET, is_connect));
    assert!(seen_a.is_none(), "A accepted a peer with another key");
    assert!(seen_c.is_none(), "C connected with another key");
    assert!(a.handle.peers().await.unwrap().is_empty());
    assert!(c.handle.peers().await.unwrap().is_empty());

    // A request has to dial, and gets nowhere. (A key mismatch shows up as
    // garbage in the Noise handshake, which fails only at its timeout, so
    // only the absence of an answer is checked.)
    let r = timeout(
        QUIET,
        c.handle
            .request(a.id(), SyncRequest::VersionVector(VersionVector::new())),
    )
    .await;
    assert!(!matches!(r, Ok(Ok(_))), "{r:?}");

    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peer_may_only_join() {
    let (mut a, mut c) = newcomer().await;

    let (r, seen) = tokio::join!(
        c.handle
            .request(a.id(), SyncRequest::VersionVector(VersionVector::new())),
        a.next(QUIET, |e| !matches!(e, MeshEvent::Join { .. })),
    );
    assert!(matches!(r, Err(MeshError::Request { .. })), "{r:?}");
    assert!(
        seen.is_none(),
        "A surfaced {seen:?} for a peer outside the allow list"
    );
    assert!(a.handle.peers().await.unwrap().is_empty());

    // The join protocol is still answered.
    let request = JoinRequest {
        payload: b"ticket".to_vec(),
    };
    let (reply, ()) = tokio::join!(
        c.handle
            .join(a.id(), vec![a.listen.clone()], request.clone()),
        async {
            let ev = a
                .next(WAIT, |e| {
                    assert!(
                        matches!(e, MeshEvent::Join { .. }),
                        "A surfaced {e:?} for a peer outside the allow list"
                    );
                    true
                })
                .await;
            let Some(MeshEvent::Join {
                peer,
                request: got,
                reply,
            }) = ev
            else {
                panic!("A got no join request");
            };
            assert_eq!(peer, c.id());
            assert_eq!(got, request);
            reply
                .send(JoinReply::Accepted(b"welcome".to_vec()))
                .unwrap();
        }
    );
    assert_eq!(reply.unwrap(), JoinReply::Accepted(b"welcome".to_vec()));
    assert!(a.handle.peers().await.unwrap().is_empty());

    // Admitting the peer promotes it on the connection it has: the refused
    // sync request did not close it, so C never saw A go.
    a.allow(&[c.id()]).await;
    a.expect_connected(c.id()).await;
    let gone = c
        .next(QUIET, |e| matches!(e, MeshEvent::PeerDisconnected(_)))
        .await;
    assert!(gone.is_none(), "C lost A: {gone:?}");
    let (r, (_, got)) = tokio::join!(
        c.handle
            .request(a.id(), SyncRequest::VersionVector(VersionVector::new())),
        a.answer(SyncResponse::Ack),
    );
    assert_eq!(r.unwrap(), SyncResponse::Ack);
    assert_eq!(got, SyncRequest::VersionVector(VersionVector::new()));

    a.shutdown().await;
    c.shutdown().await;
}

/// A newcomer that syncs before the peer has admitted it keeps its
/// connection for a few requests, not for any number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_on_probation_is_closed_after_too_many_sync_requests() {
    let (mut a, mut c) = newcomer().await;
    let connected = tokio::time::Instant::now();

    let handle = c.handle.clone();
    let a_id = a.id();
    let ask = || handle.request(a_id, SyncRequest::VersionVector(VersionVector::new()));
    for i in 0..PROBATION_SYNC_REQUESTS {
        let r = ask().await;
        assert!(matches!(r, Err(MeshError::Request { .. })), "{i}: {r:?}");
    }
    let gone = c
        .next(QUIET, |e| matches!(e, MeshEvent::PeerDisconnected(_)))
        .await;
    assert!(gone.is_none(), "closed within the bound: {gone:?}");
    assert!(ask().await.is_err());
    c.expect_disconnected(a.id()).await;
    // Closed by the bound, not by the end of the window.
    assert!(
        connected.elapsed() < JOIN_GRACE,
        "{:?}",
        connected.elapsed()
    );
    let seen = a.next(QUIET, |_| true).await;
    assert!(seen.is_none(), "A surfaced {seen:?}");

    a.shutdown().await;
    c.shutdown().await;
}

/// A peer on probation that is never admitted is closed when its window
/// ends, refused sync requests or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_on_probation_is_closed_when_its_window_ends() {
    let (a, mut c) = newcomer().await;
    let r = c
        .handle
        .request(a.id(), SyncRequest::VersionVector(VersionVector::new()))
        .await;
    assert!(r.is_err(), "{r:?}");

    let t = tokio::time::Instant::now();
    c.expect_disconnected(a.id()).await;
    // Closed by the window (which began before the request), not by the
    // request.
    assert!(t.elapsed() >= JOIN_GRACE / 2, "{:?}", t.elapsed());
    assert!(a.handle.peers().await.unwrap().is_empty());

    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_peer_disconnects_it() {
    let (mut a, mut b) = pair(1, 2).await;
    a.allow(&[]).await;
    a.expect_disconnected(b.id()).await;
    b.expect_disconnected(a.id()).await;
    assert!(a.handle.peers().await.unwrap().is_empty());

    // B still allows A and may reconnect, but gets no sync answers.
    let (r, seen) = tokio::join!(
        b.handle
            .request(a.id(), SyncRequest::VersionVector(VersionVector::new())),
        a.next(QUIET, |e| !matches!(e, MeshEvent::PeerDisconnected(_))),
    );
    assert!(r.is_err(), "{r:?}");
    assert!(seen.is_none(), "A surfaced {seen:?} for a removed peer");
    assert!(a.handle.peers().await.unwrap().is_empty());

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peer_gets_none_of_the_pushes_waiting_for_it() {
    let (mut a, mut b) = pair(1, 2).await;
    a.handle.broadcast(vec![b"1".to_vec()]).await.unwrap();
    let (_, _, reply) = b.take_request().await;
    // "2" waits behind "1" when B is removed; the answer to "1" then
    // frees the way to a peer that is no longer allowed.
    a.handle.broadcast(vec![b"2".to_vec()]).await.unwrap();
    a.allow(&[]).await;
    let _ = reply.send(SyncResponse::Ack);
    a.expect_disconnected(b.id()).await;
    let late = b
        .next(QUIET, |e| matches!(e, MeshEvent::Request { .. }))
        .await;
    assert!(late.is_none(), "a removed peer got {late:?}");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_token_stops_the_actor() {
    let cancel = CancellationToken::new();
    let a = node_with(1, 7, cancel.child_token()).await;
    let mut b = node(2, 7).await;
    a.allow(&[b.id()]).await;
    b.allow(&[a.id()]).await;
    b.handle.dial(a.addr()).await.unwrap();
    b.expect_connected(a.id()).await;

    let (a_id, handle) = (a.id(), a.handle.clone());
    cancel.cancel();
    timeout(WAIT, a.mesh.join())
        .await
        .expect("actor did not stop in time")
        .unwrap();
    assert_eq!(handle.peers().await, Err(MeshError::Closed));
    b.expect_disconnected(a_id).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_actor() {
    let a = node(1, 7).await;
    let Node { mesh, handle, .. } = a;
    drop(handle);
    timeout(WAIT, mesh.join())
        .await
        .expect("actor did not stop in time")
        .unwrap();
}

#[derive(NetworkBehaviour)]
/// Speaks the mesh protocols with arbitrary bytes: the mesh codec only frames
/// messages, decoding happens in the actor.
struct RawBehaviour {
    sync: request_response::Behaviour<wire::Codec>,
    join: request_response::Behaviour<wire::Codec>,
}

fn raw_swarm(seed: u8, psk: u8) -> Swarm<RawBehaviour> {
    let keypair = keypair_from_seed([seed; 32]).unwrap();
    let transport = swarm::transport(&keypair, [psk; 32]).unwrap();
    let rr = |p| {
        request_response::Behaviour::with_codec(
            wire::Codec::new(1 << 20, 1 << 20),
            [(p, ProtocolSupport::Full)],
            request_response::Config::default(),
        )
    };
    let behaviour = RawBehaviour {
        sync: rr(SYNC_PROTOCOL),
        join: rr(JOIN_PROTOCOL),
    };
    let config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(Duration::from_secs(60));
    Swarm::new(transport, behaviour, keypair.public().to_peer_id(), config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_do_not_break_the_actor() {
    let (mut a, b) = pair(1, 2).await;
    let mut raw = raw_swarm(9, 7);
    a.allow(&[b.id(), *raw.local_peer_id()]).await;

    raw.dial(a.addr()).unwrap();
    let mut outcomes = 0;
    let mut closed = false;
    timeout(WAIT, async {
        // Both requests fail, and A drops the misbehaving peer.
        while outcomes < 2 || !closed {
            match raw.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == a.id() => {
                    // Wrong version byte on sync; right version but garbage
                    // on join.
                    raw.behaviour_mut()
                        .sync
                        .send_request(&peer_id, vec![0xff, 1, 2, 3]);
                    raw.behaviour_mut()
                        .join
                        .send_request(&peer_id, vec![WIRE_VERSION, 0xff, 0xff, 0xff, 0xff]);
                }
                SwarmEvent::ConnectionClosed {
                    num_established: 0, ..
                } => closed = true,
                SwarmEvent::Behaviour(RawBehaviourEvent::Sync(e))
                | SwarmEvent::Behaviour(RawBehaviourEvent::Join(e)) => match e {
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    } => panic!("garbage got a response: {response:?}"),
                    request_response::Event::OutboundFailure { .. } => outcomes += 1,
                    _ => {}
                },
                _ => {}
            }
        }
    })
    .await
    .expect("garbage requests did not fail, or the peer was not dropped, in time");
    drop(raw);

    // Nothing undecodable reached the daemon side.
    let seen = a
        .next(QUIET, |e| {
            matches!(e, MeshEvent::Request { .. } | MeshEvent::Join { .. })
        })
        .await;
    assert!(seen.is_none(), "{seen:?}");

    // A still serves B.
    let (response, _) = tokio::join!(
        b.handle
            .request(a.id(), SyncRequest::VersionVector(VersionVector::new())),
        a.answer(SyncResponse::VersionVector(sample_vv())),
    );
    assert_eq!(response.unwrap(), SyncResponse::VersionVector(sample_vv()));
    assert_eq!(a.handle.peers().await.unwrap(), vec![b.id()]);

    a.shutdown().await;
    b.shutdown().await;
}

impl Node {
    /// Waits until this node's push stream to `peer` is open.
    async fn expect_push_stream(&self, peer: PeerId) {
        timeout(WAIT, async {
            while !self
                .handle
                .push_stats()
                .await
                .unwrap()
                .streams
                .contains(&peer)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the push stream did not open in time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_travel_on_the_push_stream_once_it_is_open() {
    let (a, mut b) = pair(1, 2).await;
    a.expect_push_stream(b.id()).await;
    b.expect_push_stream(a.id()).await;
    let before = a.handle.push_stats().await.unwrap();
    for i in 0..3u8 {
        a.handle
            .push_to(vec![b.id()], PushKind::Plain, vec![vec![i]])
            .await
            .unwrap();
        let (from, request) = b.answer(SyncResponse::Ack).await;
        assert_eq!(from, a.id());
        assert_eq!(request, SyncRequest::Push(vec![vec![i]]));
    }
    a.handle
        .push_to(vec![b.id()], PushKind::ToAll, vec![b"to-all".to_vec()])
        .await
        .unwrap();
    // A refusal is an answer too: it frees the way for the next push.
    let (_, request) = b.answer(SyncResponse::Refused("no".into())).await;
    assert_eq!(
        request,
        SyncRequest::ToAll(ToAll::Push(vec![b"to-all".to_vec()]))
    );
    a.handle
        .push_to(vec![b.id()], PushKind::Plain, vec![b"last".to_vec()])
        .await
        .unwrap();
    let (_, request) = b.answer(SyncResponse::Ack).await;
    assert_eq!(request, SyncRequest::Push(vec![b"last".to_vec()]));

    let after = a.handle.push_stats().await.unwrap();
    assert_eq!(after.over_stream - before.over_stream, 5, "{after:?}");
    assert_eq!(after.over_request, before.over_request, "{after:?}");
    assert_eq!(after.streams, vec![b.id()]);

    a.shutdown().await;
    b.shutdown().await;
}

/// A signed heartbeat of node `seed` (its content does not matter to the
/// mesh, which only carries it).
fn beat(seed: u8, sent_ms: u64) -> SyncRequest {
    use shoal_protocol::heartbeat::{HEARTBEAT_VERSION, Heartbeat, SignedHeartbeat};
    let key = SecretKey::from_seed([seed; 32]);
    let beat = Heartbeat {
        version: HEARTBEAT_VERSION,
        team: shoal_protocol::TeamId([3; 32]),
        node: key.public(),
        sent_ms,
        agent_version: "test".into(),
        protocol_version: shoal_protocol::PROTOCOL_VERSION,
        addresses: vec![],
    };
    SyncRequest::ToAll(ToAll::Heartbeat(SignedHeartbeat::sign(beat, &key).unwrap()))
}

/// Heartbeats go on the push stream (its second version), queued with the
/// pushes and in order with them, and none as a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_travel_on_the_push_stream_with_the_pushes() {
    let (a, mut b) = pair(1, 2).await;
    a.expect_push_stream(b.id()).await;
    let before = a.handle.push_stats().await.unwrap();
    // A push in flight holds back what follows; all leave in order.
    a.handle
        .push_to(vec![b.id()], PushKind::ToAll, vec![b"op".to_vec()])
        .await
        .unwrap();
    for ms in [1, 2] {
        assert_eq!(a.handle.send(vec![b.id()], beat(1, ms)).await.unwrap(), 1);
    }
    let (_, first) = b.answer(SyncResponse::Ack).await;
    assert_eq!(first, SyncRequest::ToAll(ToAll::Push(vec![b"op".to_vec()])));
    for ms in [1, 2] {
        let (from, got) = b.answer(SyncResponse::Ack).await;
        assert_eq!(from, a.id());
        assert_eq!(got, beat(1, ms));
    }
    // A refused heartbeat is an answer too.
    a.handle.send(vec![b.id()], beat(1, 3)).await.unwrap();
    let (_, got) = b.answer(SyncResponse::Refused("stale".into())).await;
    assert_eq!(got, beat(1, 3));
    a.handle.send(vec![b.id()], beat(1, 4)).await.unwrap();
    assert_eq!(b.answer(SyncResponse::Ack).await.1, beat(1, 4));

    let after = a.handle.push_stats().await.unwrap();
    assert_eq!(
        after.messages_over_stream - before.messages_over_stream,
        4,
        "{after:?}"
    );
    assert_eq!(after.over_stream - before.over_stream, 1, "{after:?}");
    assert_eq!(
        after.messages_over_request, before.messages_over_request,
        "{after:?}"
    );
    assert_eq!(after.over_request, before.over_request, "{after:?}");

    // Nobody else gets it: a message goes only to connected, allowed peers.
    let stranger = SecretKey::from_seed([42; 32]).public();
    let stranger = identity::peer_id_from_key(&stranger).unwrap();
    assert_eq!(a.handle.send(vec![stranger], beat(1, 5)).await.unwrap(), 0);

    a.shutdown().await;
    b.shutdown().await;
}

/// A peer of an older release (no push stream) still gets every push, as
/// request-response exchanges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_push_stream_gets_pushes_by_request() {
    let mut a = node(1, 7).await;
    let mut raw = raw_swarm(9, 7);
    let raw_id = *raw.local_peer_id();
    a.allow(&[raw_id]).await;
    raw.dial(a.addr()).unwrap();
    let a_id = a.id();
    let (requests_tx, mut requests) = mpsc::channel(8);
    let (cancel, task) = drive(raw, move |raw, event| {
        if let SwarmEvent::Behaviour(RawBehaviourEvent::Sync(request_response::Event::Message {
            peer,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        })) = event
        {
            assert_eq!(peer, a_id);
            ack(
                &mut raw.behaviour_mut().sync,
                &request,
                channel,
                &requests_tx,
            );
        }
    });
    a.expect_connected(raw_id).await;

    for o in ["1", "2"] {
        a.handle
            .push_to(vec![raw_id], PushKind::Plain, vec![o.as_bytes().to_vec()])
            .await
            .unwrap();
        let got = timeout(WAIT, requests.recv()).await.unwrap().unwrap();
        assert_eq!(got, SyncRequest::Push(vec![o.as_bytes().to_vec()]));
        // Time for A to learn that the peer has no push stream.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stats = a.handle.push_stats().await.unwrap();
    assert_eq!(
        stats,
        PushStats {
            streams: vec![],
            over_stream: 0,
            over_request: 2,
            messages_over_stream: 0,
            messages_over_request: 0,
        }
    );

    cancel.cancel();
    task.await.unwrap();
    a.shutdown().await;
}

/// Runs `swarm` in a task, handing each event to `on_event`, until the
/// returned token is cancelled.
fn drive<B>(
    mut swarm: Swarm<B>,
    mut on_event: impl FnMut(&mut Swarm<B>, SwarmEvent<B::ToSwarm>) + Send + 'static,
) -> (CancellationToken, tokio::task::JoinHandle<()>)
where
    B: NetworkBehaviour + Send + 'static,
    B::ConnectionHandler: Send,
{
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                e = swarm.select_next_some() => on_event(&mut swarm, e),
            }
        }
    });
    (cancel, task)
}

/// Answers a sync request with an ack and reports it on `to`.
fn ack(
    sync: &mut request_response::Behaviour<wire::Codec>,
    request: &[u8],
    channel: request_response::ResponseChannel<Vec<u8>>,
    to: &mpsc::Sender<SyncRequest>,
) {
    let request: SyncRequest = wire::decode(request).unwrap();
    let ack = wire::encode(&SyncResponse::Ack).unwrap();
    sync.send_response(channel, ack).unwrap();
    to.try_send(request).unwrap();
}

#[derive(NetworkBehaviour)]
/// A peer that speaks the push stream by hand.
struct StreamBehaviour {
    sync: request_response::Behaviour<wire::Codec>,
    stream: libp2p_stream::Behaviour,
}

/// A hand-driven peer connected to a node that allows it. Its swarm runs in
/// a task that answers every sync request with an ack and reports it on
/// `requests`; `closed` reports the end of its connection.
struct RawPeer {
    control: libp2p_stream::Control,
    /// The push streams A opens.
    incoming: libp2p_stream::IncomingStreams,
    requests: mpsc::Receiver<SyncRequest>,
    closed: mpsc::Receiver<()>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn raw_stream_peer(seed: u8, a: &mut Node) -> RawPeer {
    let keypair = keypair_from_seed([seed; 32]).unwrap();
    let id = keypair.public().to_peer_id();
    a.allow(&[id]).await;
    let transport = swarm::transport(&keypair, [7; 32]).unwrap();
    let behaviour = StreamBehaviour {
        sync: request_response::Behaviour::with_codec(
            wire::Codec::new(1 << 20, 1 << 20),
            [(SYNC_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
        stream: libp2p_stream::Behaviour::new(),
    };
    let config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(Duration::from_secs(60));
    let mut raw = Swarm::new(transport, behaviour, id, config);
    let mut control = raw.behaviour().stream.new_control();
    // Before dialing: A opens its push stream as soon as it is connected.
    let incoming = control.accept(PUSH_PROTOCOL).unwrap();
    raw.dial(a.addr()).unwrap();
    let (requests_tx, requests) = mpsc::channel(8);
    let (closed_tx, closed) = mpsc::channel(1);
    let (established_tx, mut established) = mpsc::channel(1);
    let (cancel, task) = drive(raw, move |raw, event| match event {
        SwarmEvent::ConnectionEstablished { .. } => {
            let _ = established_tx.try_send(());
        }
        SwarmEvent::ConnectionClosed {
            num_established: 0, ..
        } => {
            let _ = closed_tx.try_send(());
        }
        SwarmEvent::Behaviour(StreamBehaviourEvent::Sync(request_response::Event::Message {
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        })) => ack(
            &mut raw.behaviour_mut().sync,
            &request,
            channel,
            &requests_tx,
        ),
        _ => {}
    });
    a.expect_connected(id).await;
    // Its own swarm must know the connection too: a stream opened before
    // that asks libp2p-stream to dial a peer it is connected to, which
    // never answers.
    timeout(WAIT, established.recv())
        .await
        .expect("the raw peer did not see its connection");
    RawPeer {
        control,
        incoming,
        requests,
        closed,
        cancel,
        task,
    }
}

impl RawPeer {
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

async fn write_raw_frame(stream: &mut libp2p::Stream, bytes: &[u8]) {
    use futures::AsyncWriteExt;
    let mut frame = u32::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await.unwrap();
    stream.flush().await.unwrap();
}

async fn read_raw_frame(stream: &mut libp2p::Stream) -> Vec<u8> {
    use futures::AsyncReadExt;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut bytes = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut bytes).await.unwrap();
    bytes
}

/// When the push stream breaks, the push it carried goes again by
/// request-response (the peer may not have it), so do the next pushes, and
/// the stream is opened again after a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_push_stream_falls_back_to_requests_then_reopens() {
    let mut a = node(1, 7).await;
    let mut raw = raw_stream_peer(9, &mut a).await;
    let raw_id = keypair_from_seed([9; 32]).unwrap().public().to_peer_id();
    let op = |s: &str| vec![s.as_bytes().to_vec()];

    // The first stream: take one push and close without answering.
    let (from, mut stream) = timeout(WAIT, raw.incoming.next()).await.unwrap().unwrap();
    assert_eq!(from, a.id());
    a.expect_push_stream(raw_id).await;
    a.handle
        .push_to(vec![raw_id], PushKind::Plain, op("1"))
        .await
        .unwrap();
    let first: SyncRequest = wire::decode(&read_raw_frame(&mut stream).await).unwrap();
    assert_eq!(first, SyncRequest::Push(op("1")));
    drop(stream);

    // It comes again by request.
    let again = timeout(WAIT, raw.requests.recv()).await.unwrap().unwrap();
    assert_eq!(again, SyncRequest::Push(op("1")));

    // Meanwhile pushes go as requests.
    timeout(WAIT, async {
        while !a.handle.push_stats().await.unwrap().streams.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("A kept using a closed stream");
    a.handle
        .push_to(vec![raw_id], PushKind::Plain, op("2"))
        .await
        .unwrap();
    let got = timeout(WAIT, raw.requests.recv()).await.unwrap().unwrap();
    assert_eq!(got, SyncRequest::Push(op("2")));

    // After the retry delay, a push opens the stream again (that push
    // itself goes as a request), and the next ones use the new stream.
    tokio::time::sleep(STREAM_RETRY).await;
    a.handle
        .push_to(vec![raw_id], PushKind::Plain, op("3"))
        .await
        .unwrap();
    let got = timeout(WAIT, raw.requests.recv()).await.unwrap().unwrap();
    assert_eq!(got, SyncRequest::Push(op("3")));
    let (_, mut stream) = timeout(WAIT, raw.incoming.next()).await.unwrap().unwrap();
    a.expect_push_stream(raw_id).await;
    a.handle
        .push_to(vec![raw_id], PushKind::Plain, op("4"))
        .await
        .unwrap();
    let fourth: SyncRequest = wire::decode(&read_raw_frame(&mut stream).await).unwrap();
    assert_eq!(fourth, SyncRequest::Push(op("4")));
    write_raw_frame(&mut stream, &wire::encode(&SyncResponse::Ack).unwrap()).await;

    let stats = a.handle.push_stats().await.unwrap();
    assert_eq!(stats.over_stream, 2, "{stats:?}");
    assert_eq!(stats.over_request, 3, "{stats:?}");
    assert!(raw.closed.try_recv().is_err(), "the connection was closed");

    raw.stop().await;
    a.shutdown().await;
}

/// A peer of the previous release speaks only the first push stream: its
/// pushes go on it, and heartbeats as requests (which it reads), never on
/// the stream (whose first version it would call malformed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_the_first_push_stream_gets_messages_by_request() {
    let mut a = node(1, 7).await;
    let mut raw = raw_stream_peer(9, &mut a).await;
    let raw_id = keypair_from_seed([9; 32]).unwrap().public().to_peer_id();
    let (_, mut stream) = timeout(WAIT, raw.incoming.next()).await.unwrap().unwrap();
    a.expect_push_stream(raw_id).await;

    // A pushes `op`; the peer reads it on its stream and acknowledges it.
    let push_on_stream = async |stream: &mut libp2p::Stream, op: &[u8]| {
        a.handle
            .push_to(vec![raw_id], PushKind::Plain, vec![op.to_vec()])
            .await
            .unwrap();
        let got: SyncRequest = wire::decode(&read_raw_frame(stream).await).unwrap();
        assert_eq!(got, SyncRequest::Push(vec![op.to_vec()]));
        write_raw_frame(stream, &wire::encode(&SyncResponse::Ack).unwrap()).await;
    };
    push_on_stream(&mut stream, b"1").await;

    for ms in [1, 2] {
        assert_eq!(a.handle.send(vec![raw_id], beat(1, ms)).await.unwrap(), 1);
        let got = timeout(WAIT, raw.requests.recv()).await.unwrap().unwrap();
        assert_eq!(got, beat(1, ms));
    }
    // The stream still carries the pushes.
    push_on_stream(&mut stream, b"2").await;

    let stats = a.handle.push_stats().await.unwrap();
    assert_eq!(
        stats,
        PushStats {
            streams: vec![raw_id],
            over_stream: 2,
            over_request: 0,
            messages_over_stream: 0,
            messages_over_request: 2,
        }
    );
    assert!(raw.closed.try_recv().is_err(), "the connection was closed");

    raw.stop().await;
    a.shutdown().await;
}

/// What no honest peer writes on a push stream closes its connection, and
/// none of it reaches the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_push_stream_disconnects_its_peer() {
    let mut a = node(1, 7).await;
    let vv = wire::encode(&SyncRequest::VersionVector(VersionVector::new())).unwrap();
    let heartbeat = wire::encode(&beat(9, 1)).unwrap();
    let cases: [(&str, StreamProtocol, Vec<u8>); 6] = [
        ("garbage", PUSH_PROTOCOL, vec![0xff, 1, 2, 3]),
        ("not a push", PUSH_PROTOCOL, vv.clone()),
        ("empty frame", PUSH_PROTOCOL, vec![]),
        // A length over the limit, with no body behind it.
        ("oversized", PUSH_PROTOCOL, vec![]),
        // The first version carries pushes only.
        ("a heartbeat on the first version", PUSH_PROTOCOL, heartbeat),
        ("a request on the second version", PUSH_PROTOCOL_V2, vv),
    ];
    for (i, (case, protocol, bytes)) in cases.into_iter().enumerate() {
        let mut raw = raw_stream_peer(9 + u8::try_from(i).unwrap(), &mut a).await;
        let mut stream = timeout(WAIT, raw.control.open_stream(a.id(), protocol))
            .await
            .expect("the stream did not open in time")
            .unwrap();
        if case == "oversized" {
            use futures::AsyncWriteExt;
            let len = u32::try_from(wire::MAX_SYNC_MESSAGE_BYTES + 1).unwrap();
            stream.write_all(&len.to_be_bytes()).await.unwrap();
            stream.flush().await.unwrap();
        } else {
            write_raw_frame(&mut stream, &bytes).await;
        }
        let closed = timeout(WAIT, raw.closed.recv()).await;
        assert!(closed.is_ok(), "{case}: the peer was not disconnected");
        raw.stop().await;
    }
    let seen = a
        .next(QUIET, |e| matches!(e, MeshEvent::Request { .. }))
        .await;
    assert!(seen.is_none(), "{seen:?}");
    a.shutdown().await;
}
