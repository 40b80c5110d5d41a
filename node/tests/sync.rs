#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Three nodes replicating one team over real meshes on 127.0.0.1, each with
//! its own redb store.

use std::path::Path;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use shoal_node::daemon::{Node, now_ms};
use shoal_node::mesh::{Mesh, MeshConfig};
use shoal_node::store::TeamRecord;
use shoal_node::sync::{SyncConfig, SyncEngine, SyncHandle};
use shoal_protocol::model::{ProductKind, Role, Runtime};
use shoal_protocol::{Action, OpHash, Replica, SecretKey, TeamId, testkit};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// Bound for convergence.
const WAIT: Duration = Duration::from_secs(30);
const PSK: [u8; 32] = [7; 32];

struct Running {
    engine: SyncEngine,
    mesh: Mesh,
    handle: SyncHandle,
    addr: Option<Multiaddr>,
    node: Node,
}

impl Running {
    async fn start(dir: &Path, team: TeamId, config: SyncConfig, listen: bool) -> Running {
        let mut node = Node::open(dir).unwrap();
        let record = node.record(team).unwrap().unwrap();
        let replica = node.take_replica(team).unwrap();
        let cancel = CancellationToken::new();
        let (mesh, events) = Mesh::spawn(
            MeshConfig {
                identity_seed: node.key_seed(),
                psk: record.psk,
                mdns: false,
                agent_version: "shoal-test".into(),
            },
            cancel.clone(),
        )
        .unwrap();
        let mh = mesh.handle();
        let addr = if listen {
            let addrs = mh
                .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                .await
                .unwrap();
            Some(addrs[0].clone().with(Protocol::P2p(mh.local_peer_id())))
        } else {
            None
        };
        let engine = SyncEngine::spawn(
            replica,
            node.store(),
            node.key(),
            mh,
            events,
            config,
            cancel,
        )
        .unwrap();
        let handle = engine.handle();
        // Answered once the engine has set the allow list.
        handle.op_count().await.unwrap();
        Running {
            engine,
            mesh,
            handle,
            addr,
            node,
        }
    }

    async fn dial(&self, to: &Running) {
        self.mesh
            .handle()
            .dial(to.addr.clone().unwrap())
            .await
            .unwrap();
    }

    async fn stop(self) {
        let Running {
            engine, mesh, node, ..
        } = self;
        engine.shutdown().await.unwrap();
        mesh.shutdown().await.unwrap();
        drop(node);
    }
}

/// A mesh with the identity `seed` and no sync engine: the test reads its
/// events itself.
fn bare_mesh(
    seed: [u8; 32],
    cancel: &CancellationToken,
) -> (
    Mesh,
    tokio::sync::mpsc::Receiver<shoal_node::mesh::MeshEvent>,
) {
    Mesh::spawn(
        MeshConfig {
            identity_seed: seed,
            psk: PSK,
            mdns: false,
            agent_version: "shoal-test".into(),
        },
        cancel.clone(),
    )
    .unwrap()
}

/// A team with node A in its genesis and nodes B and C enrolled by member
/// joins, installed in three stores. Returns the dirs, the team, the owner
/// and the two members.
fn team() -> ([TempDir; 3], TeamId, SecretKey, SecretKey, SecretKey) {
    let dirs = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let node_keys: Vec<SecretKey> = dirs
        .iter()
        .map(|d| SecretKey::from_seed(Node::open(d.path()).unwrap().key_seed()))
        .collect();
    let owner = testkit::key(1);
    let bob = testkit::key(2);
    let carol = testkit::key(3);
    let now = now_ms();
    let genesis = testkit::genesis(&owner, &node_keys[0], now);
    let mut r = Replica::from_genesis(genesis.clone()).unwrap();
    let a = node_keys[0].public();
    let mut ops = vec![genesis];
    ops.extend(
        testkit::invite_and_join(
            &mut r,
            &owner,
            a,
            &bob,
            "bob",
            Role::Admin,
            Some((&node_keys[1], "node-b", Runtime::None)),
            now + 10,
        )
        .unwrap(),
    );
    ops.extend(
        testkit::invite_and_join(
            &mut r,
            &owner,
            a,
            &carol,
            "carol",
            Role::Admin,
            Some((&node_keys[2], "node-c", Runtime::None)),
            now + 20,
        )
        .unwrap(),
    );
    assert_eq!(r.ops().len(), 5);
    let team = r.team();
    for d in &dirs {
        let mut node = Node::open(d.path()).unwrap();
        let record = TeamRecord::new("team", PSK, now);
        assert_eq!(node.install_team(record, ops.clone()).unwrap(), team);
    }
    (dirs, team, owner, bob, carol)
}

/// Prepares and signs, on the node behind `h`, the creation of a product
/// as `author`, without submitting it.
async fn product_op(h: &SyncHandle, author: &SecretKey, name: &str) -> shoal_protocol::Op {
    let c = h.next_context(author.public()).await.unwrap();
    let body = h
        .prepare(
            author.public(),
            Action::ProductCreate {
                id: c.new_id(0),
                name: name.into(),
                kind: ProductKind::Simple,
                description: String::new(),
                version: Some(c.new_id(1)),
            },
        )
        .await
        .unwrap();
    body.sign(author).unwrap()
}

/// Creates a product as `author` on the node behind `h`; returns its op.
async fn create_product(h: &SyncHandle, author: &SecretKey, name: &str) -> OpHash {
    let op = product_op(h, author, name).await;
    let hash = op.hash();
    let report = h.submit(op).await.unwrap();
    assert_eq!(report.applied, vec![hash]);
    hash
}

/// Waits until every handle holds `ops` ops with the same heads and state.
async fn converge(handles: &[&SyncHandle], ops: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut views = Vec::new();
        for h in handles {
            views.push((
                h.op_count().await.unwrap(),
                h.heads().await.unwrap(),
                h.state_hash().await.unwrap(),
            ));
        }
        if views[0].0 == ops && views.iter().all(|v| *v == views[0]) {
            let first = handles[0].state().await.unwrap();
            for h in &handles[1..] {
                assert_eq!(h.state().await.unwrap(), first);
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence on {ops} ops: {:?}",
            views.iter().map(|v| (v.0, v.1.len())).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fast(push: bool) -> SyncConfig {
    SyncConfig {
        heartbeat: None,
        queries: None,
        push,
        anti_entropy_interval: Duration::from_millis(500),
        anti_entropy_peers: shoal_node::sync::ANTI_ENTROPY_PEERS,
        head_check_timeout: Duration::from_secs(3),
    }
}

/// Live push only: anti-entropy runs too rarely to matter within [`WAIT`].
fn push_only() -> SyncConfig {
    SyncConfig {
        heartbeat: None,
        queries: None,
        push: true,
        anti_entropy_interval: Duration::from_secs(600),
        anti_entropy_peers: shoal_node::sync::ANTI_ENTROPY_PEERS,
        head_check_timeout: Duration::from_secs(3),
    }
}

/// `base` with heartbeats (and live reports from `live`) signed by `key`
/// every 100 ms.
fn beating(
    key: &SecretKey,
    live: tokio::sync::watch::Receiver<Option<Box<shoal_protocol::heartbeat::Live>>>,
    base: SyncConfig,
) -> SyncConfig {
    SyncConfig {
        heartbeat: Some(shoal_node::sync::HeartbeatConfig {
            key: key.clone(),
            interval: Duration::from_millis(100),
            agent_version: "shoal-test".into(),
            addresses: Vec::new(),
            live: Some(live),
        }),
        ..base
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_on_any_node_reach_every_node_by_push() {
    let (dirs, team, owner, bob, carol) = team();
    let a = Running::start(dirs[0].path(), team, push_only(), true).await;
    let b = Running::start(dirs[1].path(), team, push_only(), true).await;
    let c = Running::start(dirs[2].path(), team, push_only(), true).await;
    b.dial(&a).await;
    c.dial(&a).await;
    converge(&[&a.handle, &b.handle, &c.handle], 5).await;

    create_product(&a.handle, &owner, "web").await;
    converge(&[&a.handle, &b.handle, &c.handle], 6).await;
    // C only knows A: B's op reaches it through A.
    create_product(&b.handle, &bob, "api").await;
    create_product(&c.handle, &carol, "db").await;
    converge(&[&a.handle, &b.handle, &c.handle], 8).await;
    let state = a.handle.state().await.unwrap();
    let mut names: Vec<_> = state.products.values().map(|p| p.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["api", "db", "web"]);

    for r in [a, b, c] {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_node_catches_up_and_nothing_acknowledged_is_lost() {
    let (dirs, team, owner, bob, carol) = team();
    let a = Running::start(dirs[0].path(), team, SyncConfig::default(), true).await;
    let b = Running::start(dirs[1].path(), team, SyncConfig::default(), true).await;
    let c = Running::start(dirs[2].path(), team, SyncConfig::default(), true).await;
    b.dial(&a).await;
    c.dial(&a).await;
    let mut acked = vec![create_product(&a.handle, &owner, "p0").await];
    converge(&[&a.handle, &b.handle, &c.handle], 6).await;

    // Partition: C goes away; A and B keep writing.
    c.stop().await;
    for i in 1..=3 {
        acked.push(create_product(&a.handle, &owner, &format!("a{i}")).await);
        acked.push(create_product(&b.handle, &bob, &format!("b{i}")).await);
    }
    converge(&[&a.handle, &b.handle], 12).await;

    // C writes offline, then restarts from its store.
    let c_off = Running::start(dirs[2].path(), team, SyncConfig::default(), false).await;
    let mut offline = Vec::new();
    for i in 1..=2 {
        offline.push(create_product(&c_off.handle, &carol, &format!("c{i}")).await);
    }
    c_off.stop().await;
    {
        let node = Node::open(dirs[2].path()).unwrap();
        let r = &node.teams()[&team];
        assert_eq!(r.ops().len(), 8);
        assert!(offline.iter().all(|h| r.has(h)));
    }
    acked.extend(offline);

    // Heal.
    let c = Running::start(dirs[2].path(), team, SyncConfig::default(), true).await;
    c.dial(&a).await;
    converge(&[&a.handle, &b.handle, &c.handle], 14).await;

    // Every acknowledged op is durable on every node.
    for r in [a, b, c] {
        r.stop().await;
    }
    let mut heads = Vec::new();
    for d in &dirs {
        let node = Node::open(d.path()).unwrap();
        let r = &node.teams()[&team];
        assert_eq!(r.ops().len(), 14);
        for h in &acked {
            assert!(r.has(h), "op {h} lost");
        }
        heads.push(r.heads());
    }
    assert!(heads.iter().all(|h| *h == heads[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anti_entropy_alone_converges() {
    let (dirs, team, owner, bob, carol) = team();
    let a = Running::start(dirs[0].path(), team, fast(false), true).await;
    let b = Running::start(dirs[1].path(), team, fast(false), true).await;
    let c = Running::start(dirs[2].path(), team, fast(false), true).await;
    b.dial(&a).await;
    c.dial(&a).await;
    create_product(&a.handle, &owner, "web").await;
    create_product(&b.handle, &bob, "api").await;
    create_product(&c.handle, &carol, "db").await;
    converge(&[&a.handle, &b.handle, &c.handle], 8).await;
    for r in [a, b, c] {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_is_disconnected_and_gets_nothing_more() {
    let (dirs, team, owner, _bob, _carol) = team();
    let a = Running::start(dirs[0].path(), team, SyncConfig::default(), true).await;
    let b = Running::start(dirs[1].path(), team, SyncConfig::default(), true).await;
    let c = Running::start(dirs[2].path(), team, SyncConfig::default(), true).await;
    b.dial(&a).await;
    c.dial(&a).await;
    converge(&[&a.handle, &b.handle, &c.handle], 5).await;
    let b_peer = b.mesh.local_peer_id();

    let body = a
        .handle
        .prepare(owner.public(), Action::NodeRemove { node: c.node.key() })
        .await
        .unwrap();
    a.handle.submit(body.sign(&owner).unwrap()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while a.mesh.handle().peers().await.unwrap() != vec![b_peer] {
        assert!(Instant::now() < deadline, "C is still connected to A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    create_product(&a.handle, &owner, "after").await;
    converge(&[&a.handle, &b.handle], 7).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.handle.op_count().await.unwrap() <= 6);
    assert!(c.handle.state().await.unwrap().products.is_empty());
    for r in [a, b, c] {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_forged_ops_are_dropped_or_quarantined() {
    use shoal_node::mesh::{SyncRequest, SyncResponse};

    let (dirs, team, owner, _bob, _carol) = team();
    let a = Running::start(dirs[0].path(), team, SyncConfig::default(), true).await;
    let a_peer = a.mesh.local_peer_id();
    // A bare mesh with B's identity, talking to A directly.
    let seed = Node::open(dirs[1].path()).unwrap().key_seed();
    let cancel = CancellationToken::new();
    let (mesh, mut events) = bare_mesh(seed, &cancel);
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mh = mesh.handle();
    mh.set_allowed([a_peer].into()).await.unwrap();
    mh.dial(a.addr.clone().unwrap()).await.unwrap();

    let id = a
        .handle
        .next_context(owner.public())
        .await
        .unwrap()
        .new_id(0);
    let body = a
        .handle
        .prepare(
            owner.public(),
            Action::ProductCreate {
                id: id.clone(),
                name: "forged".into(),
                kind: ProductKind::Complex,
                description: String::new(),
                version: None,
            },
        )
        .await
        .unwrap();
    let mut forged = body.sign(&owner).unwrap();
    forged.body.action = Action::ProductCreate {
        id,
        name: "other".into(),
        kind: ProductKind::Complex,
        description: String::new(),
        version: None,
    };
    let batch = vec![vec![0xff; 10], vec![1], Vec::new(), forged.encode()];
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        match mh.request(a_peer, SyncRequest::Push(batch.clone())).await {
            Ok(answer) => break answer,
            Err(e) => assert!(Instant::now() < deadline, "A never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer, SyncResponse::Ack);
    assert_eq!(a.handle.op_count().await.unwrap(), 5);

    // Heartbeats: one not signed by its node is refused, however new; an
    // older copy of a held one is ignored, not trusted.
    use shoal_protocol::heartbeat::{HEARTBEAT_VERSION, Heartbeat, SignedHeartbeat};
    let b_key = SecretKey::from_seed(seed);
    let beat = |sent_ms: u64, addr: &str| Heartbeat {
        version: HEARTBEAT_VERSION,
        team,
        node: b_key.public(),
        sent_ms,
        agent_version: "shoal-test".into(),
        protocol_version: 1,
        addresses: vec![addr.into()],
    };
    let sent = now_ms();
    let beat_of_b = |a: &Running| {
        let b = b_key.public();
        let h = a.handle.clone();
        async move {
            h.status()
                .await
                .unwrap()
                .into_iter()
                .find(|n| n.key == b)
                .map(|n| n.addresses)
        }
    };
    let send = |b: Heartbeat, key: &SecretKey| {
        let (mh, hb) = (mh.clone(), SignedHeartbeat::sign(b, key).unwrap());
        async move {
            mh.request(a_peer, SyncRequest::Heartbeat(hb))
                .await
                .unwrap()
        }
    };
    let answer = send(beat(sent + 10, "/ip4/6.6.6.6/tcp/1"), &owner).await;
    assert!(matches!(answer, SyncResponse::Refused(_)), "{answer:?}");
    assert_ne!(
        beat_of_b(&a).await,
        Some(vec!["/ip4/6.6.6.6/tcp/1".to_string()])
    );
    let answer = send(beat(sent + 20, "/ip4/127.0.0.1/tcp/9"), &b_key).await;
    assert_eq!(answer, SyncResponse::Ack);
    assert_eq!(
        beat_of_b(&a).await,
        Some(vec!["/ip4/127.0.0.1/tcp/9".to_string()])
    );
    let answer = send(beat(sent + 15, "/ip4/6.6.6.6/tcp/2"), &owner).await;
    assert_eq!(answer, SyncResponse::Ack);
    assert_eq!(
        beat_of_b(&a).await,
        Some(vec!["/ip4/127.0.0.1/tcp/9".to_string()])
    );

    mesh.shutdown().await.unwrap();
    a.stop().await;
    // The forged op's signature does not verify: it was refused and, being
    // unsigned, never stored (only authentic refused ops are kept).
    let node = Node::open(dirs[0].path()).unwrap();
    let quarantined = node.store().quarantined(team).unwrap();
    assert!(
        quarantined.iter().all(|q| q.0 != forged.hash()),
        "the forged op was stored"
    );
    assert!(quarantined.is_empty(), "{} ops stored", quarantined.len());
}

/// Forty writes of one member made at once through one node, each needing
/// fresh ids, all apply in one unforked log; without leases most of them
/// take the same seq. A writer that lets its lease lapse cannot fork the
/// log with its late op either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_writes_of_one_member_take_turns_and_never_fork() {
    let (dirs, team, owner, _, _) = team();
    let a = Running::start(dirs[0].path(), team, fast(false), false).await;
    let before = a.handle.op_count().await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (h, owner) = (a.handle.clone(), owner.clone());
        writers.spawn(async move {
            let (c, token) = h.lease(owner.public()).await?;
            let action = Action::ProductCreate {
                id: c.new_id(0),
                name: format!("p{i}"),
                kind: ProductKind::Simple,
                description: String::new(),
                version: Some(c.new_id(1)),
            };
            let body = h.prepare_leased(owner.public(), action, token).await?;
            // Give the others a chance to run between prepare and submit.
            tokio::task::yield_now().await;
            let op = body.sign(&owner).unwrap();
            h.submit(op).await.map(|r| r.applied.len())
        });
    }
    let mut applied = 0;
    while let Some(done) = writers.join_next().await {
        applied += done.unwrap().expect("every parallel write applies");
    }
    assert_eq!(applied, 40);
    assert_eq!(a.handle.op_count().await.unwrap(), before + 40);
    let state = a.handle.state().await.unwrap();
    assert_eq!(state.products.len(), 40);
    let refused = a.handle.read(|r| r.quarantine().len()).await.unwrap();
    assert_eq!(refused, 0, "no fork was quarantined");

    // A lease that lapses passes the seq on; the late op is refused at
    // submit instead of forking the log.
    let (c, token) = a.handle.lease(owner.public()).await.unwrap();
    let late = a
        .handle
        .prepare_leased(
            owner.public(),
            Action::ProductCreate {
                id: c.new_id(0),
                name: "late".into(),
                kind: ProductKind::Simple,
                description: String::new(),
                version: Some(c.new_id(1)),
            },
            token,
        )
        .await
        .unwrap()
        .sign(&owner)
        .unwrap();
    let next = tokio::time::timeout(
        shoal_node::lease::LEASE_TTL * 3,
        a.handle.lease(owner.public()),
    )
    .await
    .expect("the lapsed lease passes on")
    .unwrap();
    assert_eq!(next.0.seq, late.body.seq);
    let on_time = a
        .handle
        .prepare_leased(
            owner.public(),
            Action::ProductCreate {
                id: next.0.new_id(0),
                name: "on-time".into(),
                kind: ProductKind::Simple,
                description: String::new(),
                version: Some(next.0.new_id(1)),
            },
            next.1,
        )
        .await
        .unwrap()
        .sign(&owner)
        .unwrap();
    let err = a.handle.submit(late).await.unwrap_err();
    assert!(err.to_string().contains("lost its turn"), "{err}");
    a.handle.submit(on_time).await.unwrap();
    // The lapsed holder's token no longer prepares.
    let err = a
        .handle
        .prepare_leased(
            owner.public(),
            Action::TeamUpdate {
                name: "x".into(),
                description: String::new(),
            },
            token,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lost its turn"), "{err}");
    assert_eq!(a.handle.read(|r| r.quarantine().len()).await.unwrap(), 0);
    a.stop().await;
}

/// The join door takes from a ticket holder only an authentic join op: a
/// join op whose signature was altered, or signed by another key than the
/// invite proof names, is refused before anything is stored; the genuine
/// op is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_join_door_stores_only_authentic_join_ops() {
    use shoal_node::join::{JoinAnswer, JoinMsg};
    use shoal_node::mesh::{JoinReply, JoinRequest, wire};
    use shoal_protocol::model::InviteKind;

    let (dirs, team, owner, _bob, _carol) = team();
    let a = Running::start(dirs[0].path(), team, SyncConfig::default(), true).await;
    let a_peer = a.mesh.local_peer_id();
    // An unused member invite.
    let invite_key = testkit::key(77);
    let c = a.handle.next_context(owner.public()).await.unwrap();
    let invite = c.new_id(0);
    let body = a
        .handle
        .prepare(
            owner.public(),
            Action::InviteCreate {
                id: invite.clone(),
                kind: InviteKind::Member { role: Role::User },
                invite_key: invite_key.public(),
                expires: shoal_protocol::Hlc::new(now_ms() + 3_600_000, 0),
            },
        )
        .await
        .unwrap();
    a.handle.submit(body.sign(&owner).unwrap()).await.unwrap();
    // The newcomer's join op, made on a replica of the team's ops.
    let ops: Vec<shoal_protocol::Op> = a
        .handle
        .read(|r| r.ops().iter().map(|x| x.op.clone()).collect())
        .await
        .unwrap();
    let mut local = Replica::from_genesis(ops[0].clone()).unwrap();
    for op in &ops[1..] {
        local.apply(op.clone(), now_ms());
    }
    let dave = testkit::key(40);
    let proof = invite_key.sign(&shoal_protocol::rules::join_proof_message(
        &team,
        &invite,
        &dave.public(),
    ));
    let (join, _) = testkit::act(
        &mut local,
        &dave,
        a.node.key(),
        now_ms(),
        Action::MemberJoin {
            invite,
            member: Box::new(testkit::new_member(&dave, "dave")),
            node: None,
            proof,
        },
    )
    .unwrap();
    let mut forged = join.clone();
    forged.sig.0[0] ^= 1;
    let mut wrong_key = join.clone();
    wrong_key.body.author = testkit::key(42).public();

    let cancel = CancellationToken::new();
    let (mesh, mut events) = Mesh::spawn(
        MeshConfig {
            identity_seed: [41; 32],
            psk: PSK,
            mdns: false,
            agent_version: "shoal-test".into(),
        },
        cancel.clone(),
    )
    .unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mh = mesh.handle();
    let submit = |op: &shoal_protocol::Op| {
        let payload = wire::encode(&JoinMsg::Submit {
            team,
            op: op.encode(),
        })
        .unwrap();
        let mh = mh.clone();
        let addr = a.addr.clone().unwrap();
        async move {
            mh.join(a_peer, vec![addr], JoinRequest { payload })
                .await
                .unwrap()
        }
    };
    let held = a.handle.op_count().await.unwrap();
    for (op, why) in [
        (&forged, "signature does not verify"),
        (&wrong_key, "not signed by the key"),
    ] {
        match submit(op).await {
            JoinReply::Refused(reason) => assert!(reason.contains(why), "{reason}"),
            other => panic!("a bad join op was not refused: {other:?}"),
        }
    }
    assert_eq!(a.handle.read(|r| r.quarantine().len()).await.unwrap(), 0);
    assert_eq!(a.handle.op_count().await.unwrap(), held);
    match submit(&join).await {
        JoinReply::Accepted(bytes) => {
            assert_eq!(
                wire::decode::<JoinAnswer>(&bytes).unwrap(),
                JoinAnswer::Admitted
            );
        }
        other => panic!("the genuine join op was refused: {other:?}"),
    }
    assert_eq!(a.handle.op_count().await.unwrap(), held + 1);
    cancel.cancel();
    a.stop().await;
}

/// Two signed ops at one seq of the owner's log (a cloned machine), one
/// given to B and the other to C while they are apart: once they reach A,
/// the fork evidence travels and all three nodes keep the same op (the
/// lower hash), with the other quarantined as evidence everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fork_sent_to_two_nodes_resolves_the_same_everywhere() {
    let (dirs, team, owner, _bob, _carol) = team();
    let (x, y) = {
        let mut node = Node::open(dirs[0].path()).unwrap();
        let a_key = SecretKey::from_seed(node.key_seed());
        let mut r = node.take_replica(team).unwrap();
        let now = now_ms();
        let mut make = |name: &str| {
            let c = r.next_context(owner.public(), a_key.public(), now);
            r.prepare(
                owner.public(),
                a_key.public(),
                now,
                Action::ProductCreate {
                    id: c.new_id(0),
                    name: name.into(),
                    kind: ProductKind::Complex,
                    description: String::new(),
                    version: None,
                },
            )
            .unwrap()
            .sign(&owner)
            .unwrap()
        };
        (make("left"), make("right"))
    };
    assert_eq!((x.body.seq, x.body.prev), (y.body.seq, y.body.prev));
    let (winner, loser) = if x.hash() < y.hash() { (x, y) } else { (y, x) };
    let a = Running::start(dirs[0].path(), team, fast(true), true).await;
    let b = Running::start(dirs[1].path(), team, fast(true), true).await;
    let c = Running::start(dirs[2].path(), team, fast(true), true).await;
    // The loser first where it can do the most harm.
    assert!(
        !b.handle
            .submit(loser.clone())
            .await
            .unwrap()
            .applied
            .is_empty()
    );
    assert!(
        !c.handle
            .submit(winner.clone())
            .await
            .unwrap()
            .applied
            .is_empty()
    );
    b.dial(&a).await;
    c.dial(&a).await;
    converge(&[&a.handle, &b.handle, &c.handle], 6).await;
    let (w, l) = (winner.hash(), loser.hash());
    // The evidence travels with the next rounds, after the state agrees.
    let deadline = Instant::now() + WAIT;
    for r in [&a, &b, &c] {
        loop {
            let (has_winner, evidence) = holds_and_evidence(&r.handle, w).await;
            assert!(has_winner);
            if evidence == vec![(l, w)] {
                break;
            }
            assert!(Instant::now() < deadline, "evidence: {evidence:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // B applied and stored the loser before it lost: after a restart B
    // still holds the same state as A, with the loser still evidence.
    let before = a
        .handle
        .read(|rep| (rep.heads(), rep.state().clone()))
        .await
        .unwrap();
    b.stop().await;
    let b = Running::start(dirs[1].path(), team, fast(true), true).await;
    let after = b
        .handle
        .read(|rep| (rep.heads(), rep.state().clone()))
        .await
        .unwrap();
    assert_eq!(after, before, "B's state after a restart differs from A's");
    let (has_loser, evidence) = holds_and_evidence(&b.handle, l).await;
    assert!(!has_loser, "the losing op is applied again after a restart");
    assert_eq!(evidence, vec![(l, w)]);
    for r in [a, b, c] {
        r.stop().await;
    }
}

/// Whether the replica behind `h` holds op `op` applied, and its fork
/// evidence as (loser, winner) hashes.
async fn holds_and_evidence(h: &SyncHandle, op: OpHash) -> (bool, Vec<(OpHash, OpHash)>) {
    h.read(move |rep| {
        (
            rep.op(&op).is_some(),
            rep.fork_evidence()
                .iter()
                .map(|(lo, wi)| (lo.hash(), wi.hash()))
                .collect(),
        )
    })
    .await
    .unwrap()
}

/// Copies the files of `from` into `to` (a node's data dir: its store and
/// key seed).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A node whose store is restored from a backup signs nothing before a
/// peer told it its own logs' heads: its next op follows the ops the team
/// already holds from it, so nothing forks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restored_from_a_backup_learns_its_log_heads_before_it_signs() {
    let (dirs, team, owner, _bob, _carol) = team();
    let backup = tempfile::tempdir().unwrap();
    copy_dir(dirs[0].path(), backup.path());
    let config = || SyncConfig {
        head_check_timeout: Duration::from_secs(120),
        ..fast(true)
    };
    let a = Running::start(dirs[0].path(), team, config(), true).await;
    let b = Running::start(dirs[1].path(), team, config(), true).await;
    b.dial(&a).await;
    for n in 0..3 {
        create_product(&a.handle, &owner, &format!("before-{n}")).await;
    }
    converge(&[&a.handle, &b.handle], 8).await;
    a.stop().await;
    // The backup, made before those three ops, replaces A's store.
    std::fs::remove_dir_all(dirs[0].path()).unwrap();
    copy_dir(backup.path(), dirs[0].path());
    let a = Running::start(dirs[0].path(), team, config(), true).await;
    assert_eq!(a.handle.op_count().await.unwrap(), 5);
    a.dial(&b).await;
    // Asked at once: the context waits until B told A its log's head.
    let hash = create_product(&a.handle, &owner, "after-restore").await;
    converge(&[&a.handle, &b.handle], 9).await;
    for r in [&a, &b] {
        let (seq, forks, refused) = r
            .handle
            .read(move |rep| {
                (
                    rep.op(&hash).map(|o| o.op.body.seq),
                    rep.fork_evidence().len(),
                    rep.quarantine().len(),
                )
            })
            .await
            .unwrap();
        // Genesis, two invites and three products came before it.
        assert_eq!(seq, Some(7));
        assert_eq!((forks, refused), (0, 0));
    }
    a.stop().await;
    b.stop().await;
}

/// A node sends its live reports only to a peer whose heartbeat says it
/// decodes them: a peer of an older release (protocol 1) gets heartbeats
/// only, so it never drops the connection over a message it cannot decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_reports_go_only_to_peers_whose_heartbeat_speaks_them() {
    use shoal_node::mesh::{MeshEvent, SyncRequest, SyncResponse};
    use shoal_protocol::heartbeat::{
        HEARTBEAT_VERSION, Heartbeat, LIVE_PROTOCOL_VERSION, Live, SignedHeartbeat,
    };

    let (dirs, team, _owner, _bob, _carol) = team();
    let a_key = SecretKey::from_seed(Node::open(dirs[0].path()).unwrap().key_seed());
    let live = Live {
        runtime: true,
        ..Live::default()
    };
    let (_live_tx, live_rx) = tokio::sync::watch::channel(Some(Box::new(live.clone())));
    let config = beating(&a_key, live_rx, fast(false));
    let a = Running::start(dirs[0].path(), team, config, true).await;
    let a_peer = a.mesh.local_peer_id();
    // A bare mesh with B's identity: it counts what A sends it.
    let b_seed = Node::open(dirs[1].path()).unwrap().key_seed();
    let b_key = SecretKey::from_seed(b_seed);
    let cancel = CancellationToken::new();
    let (mesh, mut events) = bare_mesh(b_seed, &cancel);
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel::<SyncRequest>(1024);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let MeshEvent::Request { request, reply, .. } = ev {
                let _ = reply.send(SyncResponse::Ack);
                if matches!(request, SyncRequest::Heartbeat(_) | SyncRequest::Live(_)) {
                    let _ = seen_tx.send(request).await;
                }
            }
        }
    });
    let mh = mesh.handle();
    mh.set_allowed([a_peer].into()).await.unwrap();
    mh.dial(a.addr.clone().unwrap()).await.unwrap();
    let sent = now_ms();
    let say = |sent_ms: u64, protocol_version: u32| {
        let beat = Heartbeat {
            version: HEARTBEAT_VERSION,
            team,
            node: b_key.public(),
            sent_ms,
            agent_version: "shoal-test".into(),
            protocol_version,
            addresses: Vec::new(),
        };
        let hb = SignedHeartbeat::sign(beat, &b_key).unwrap();
        let mh = mh.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                match mh.request(a_peer, SyncRequest::Heartbeat(hb.clone())).await {
                    Ok(answer) => break assert_eq!(answer, SyncResponse::Ack),
                    Err(e) => assert!(Instant::now() < deadline, "A never answered: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // What arrives until `beats` heartbeats of A did: the times of the
    // live reports among them.
    async fn next(seen: &mut tokio::sync::mpsc::Receiver<SyncRequest>, beats: usize) -> Vec<u64> {
        let (mut b, mut l) = (0, Vec::new());
        while b < beats {
            match tokio::time::timeout(WAIT, seen.recv()).await {
                Ok(Some(SyncRequest::Heartbeat(_))) => b += 1,
                Ok(Some(SyncRequest::Live(r))) => l.push(r.report.made_ms),
                other => panic!("A's heartbeats stopped: {other:?}"),
            }
        }
        l
    }

    // Before any heartbeat of B, and while B says it is of an older
    // release: heartbeats only.
    assert_eq!(next(&mut seen, 5).await, Vec::<u64>::new());
    say(sent, LIVE_PROTOCOL_VERSION - 1).await;
    assert_eq!(next(&mut seen, 10).await, Vec::<u64>::new());
    // B upgraded: its live reports come, signed by A.
    say(sent + 1, LIVE_PROTOCOL_VERSION).await;
    let deadline = Instant::now() + WAIT;
    let report = loop {
        match tokio::time::timeout_at(deadline.into(), seen.recv()).await {
            Ok(Some(SyncRequest::Live(l))) => break l,
            Ok(Some(_)) => {}
            other => panic!("no live report came: {other:?}"),
        }
    };
    assert_eq!(report.verify(), Ok(()));
    assert_eq!(report.report.node, a_key.public());
    assert_eq!(report.report.live, live);
    // B went back to the older release: none made after A took that
    // heartbeat comes (ones already on their way may).
    say(sent + 2, LIVE_PROTOCOL_VERSION - 1).await;
    let taken = now_ms();
    let late = next(&mut seen, 10).await;
    assert!(
        late.iter().all(|&made| made <= taken),
        "{late:?} after {taken}"
    );

    mesh.shutdown().await.unwrap();
    a.stop().await;
}

/// A node pushes its live report when its containers change, between
/// heartbeats: with heartbeats an hour apart (each node beats once as it
/// starts, before the other is connected), B learns A's live state when
/// they connect and each change of A's containers right after it, so only
/// the heartbeat on connecting and the push on change can bring them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_of_containers_reaches_a_peer_between_heartbeats() {
    use shoal_node::sync::HeartbeatConfig;
    use shoal_protocol::heartbeat::{Live, LiveContainer};

    let (dirs, team, ..) = team();
    let keys: Vec<SecretKey> = dirs[..2]
        .iter()
        .map(|d| SecretKey::from_seed(Node::open(d.path()).unwrap().key_seed()))
        .collect();
    let beats_hourly = |key: &SecretKey, live| SyncConfig {
        heartbeat: Some(HeartbeatConfig {
            key: key.clone(),
            interval: Duration::from_secs(3600),
            agent_version: "shoal-test".into(),
            addresses: Vec::new(),
            live,
        }),
        ..fast(false)
    };
    let web = |state: &str| Live {
        runtime: true,
        containers: vec![LiveContainer {
            name: "shop-web".into(),
            id: "c0ffee".into(),
            prefix: "shop".into(),
            container: "web".into(),
            deployment: "d1".into(),
            version: "1".into(),
            try_number: 1,
            init: None,
            state: state.into(),
            exit_code: (state == "exited").then_some(137),
            image: "web:1".into(),
            status: String::new(),
            health: None,
            restarts: 0,
            ports: Vec::new(),
        }],
        truncated: false,
        load: None,
    };
    let (live_tx, live_rx) = tokio::sync::watch::channel(Some(Box::new(web("running"))));
    let a = Running::start(
        dirs[0].path(),
        team,
        beats_hourly(&keys[0], Some(live_rx)),
        true,
    )
    .await;
    let b = Running::start(dirs[1].path(), team, beats_hourly(&keys[1], None), false).await;
    b.dial(&a).await;
    // What B holds of A's containers.
    let a_key = keys[0].public();
    let seen_by_b = |want: &'static str| {
        let h = b.handle.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let status = h.status().await.unwrap();
                let state = status
                    .iter()
                    .find(|n| n.key == a_key)
                    .and_then(|n| n.live.as_ref())
                    .and_then(|l| l.containers.first())
                    .map(|c| c.state.clone());
                if state.as_deref() == Some(want) {
                    return;
                }
                assert!(Instant::now() < deadline, "B never saw {want}: {state:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    seen_by_b("running").await;
    // The container dies, then comes back: each change reaches B.
    let killed = Instant::now();
    live_tx.send_replace(Some(Box::new(web("exited"))));
    seen_by_b("exited").await;
    // A figure, not an assertion.
    println!(
        "a change of A's containers reached B {:.2}s after it",
        killed.elapsed().as_secs_f64()
    );
    live_tx.send_replace(Some(Box::new(web("running"))));
    seen_by_b("running").await;
    b.stop().await;
    a.stop().await;
}

/// Batches of ops waiting together in the engine's channel are applied and
/// committed in one store transaction, and each is acknowledged only after
/// that commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_ops_waiting_together_share_one_commit() {
    use shoal_node::mesh::{MeshEvent, SyncRequest, SyncResponse, peer_id_from_key};
    const BATCHES: usize = 20;
    let (dirs, team, owner, _bob, _carol) = team();
    // B writes the ops (on its own copy of the team); A receives them.
    let (b_key, ops) = {
        let mut b = Node::open(dirs[1].path()).unwrap();
        let b_key = SecretKey::from_seed(b.key_seed());
        let mut r = b.take_replica(team).unwrap();
        let now = now_ms();
        let ops: Vec<Vec<u8>> = (0..BATCHES)
            .map(|i| {
                let id = testkit::ctx(&r, &owner, b_key.public(), now).new_id(0);
                let (op, rep) = testkit::act(
                    &mut r,
                    &owner,
                    b_key.public(),
                    now + i as u64,
                    Action::ProductCreate {
                        id,
                        name: format!("batch-{i}"),
                        kind: ProductKind::Complex,
                        description: String::new(),
                        version: None,
                    },
                )
                .unwrap();
                assert_eq!(rep.applied.len(), 1);
                op.encode()
            })
            .collect();
        (b_key, ops)
    };
    let b_peer = peer_id_from_key(&b_key.public()).unwrap();
    let mut a = Node::open(dirs[0].path()).unwrap();
    let replica = a.take_replica(team).unwrap();
    let before = replica.ops().len();
    let store = a.store();
    let cancel = CancellationToken::new();
    let (mesh, _mesh_events) = bare_mesh(a.key_seed(), &cancel);
    // Every batch is in the channel before the engine runs.
    let (events_tx, events) = tokio::sync::mpsc::channel(BATCHES);
    let mut replies = Vec::new();
    for bytes in ops {
        let (reply, answer) = tokio::sync::oneshot::channel();
        events_tx
            .try_send(MeshEvent::Request {
                peer: b_peer,
                request: SyncRequest::Push(vec![bytes]),
                reply,
            })
            .unwrap();
        replies.push(answer);
    }
    let writes = store.write_transactions();
    let engine = SyncEngine::spawn(
        replica,
        store.clone(),
        a.key(),
        mesh.handle(),
        events,
        fast(false),
        cancel,
    )
    .unwrap();
    for answer in replies {
        let answer = tokio::time::timeout(WAIT, answer).await.unwrap().unwrap();
        assert_eq!(answer, SyncResponse::Ack);
    }
    // Acknowledged means committed.
    assert_eq!(store.op_count(team).unwrap() as usize, before + BATCHES);
    assert_eq!(engine.handle().op_count().await.unwrap(), before + BATCHES);
    // One commit for the ops (and at most one for the document snapshot a
    // store without one takes), where each batch used to take its own.
    let commits = store.write_transactions() - writes;
    assert!(commits <= 2, "{commits} commits for {BATCHES} batches");
    drop(events_tx);
    engine.shutdown().await.unwrap();
    mesh.shutdown().await.unwrap();
}

/// A bare mesh with the identity `seed` that holds exactly `vv`, connected
/// to `to`: it answers vectors with `vv`, acknowledges everything else, and
/// reports each request it got as (seed's first byte, kind, when).
async fn vector_answerer(
    seed: [u8; 32],
    to: &Running,
    vv: shoal_protocol::replica::VersionVector,
    seen: tokio::sync::mpsc::Sender<(u8, &'static str, Instant)>,
    cancel: &CancellationToken,
) -> Mesh {
    use shoal_node::mesh::{MeshEvent, SyncRequest, SyncResponse};
    let (mesh, mut events) = bare_mesh(seed, cancel);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let MeshEvent::Request { request, reply, .. } = ev {
                let kind = match request {
                    SyncRequest::VersionVector(_) => {
                        let _ = reply.send(SyncResponse::VersionVector(vv.clone()));
                        "vector"
                    }
                    SyncRequest::Ops(_) => {
                        let _ = reply.send(SyncResponse::Ack);
                        "ops"
                    }
                    _ => {
                        let _ = reply.send(SyncResponse::Ack);
                        "other"
                    }
                };
                let _ = seen.send((seed[0], kind, Instant::now())).await;
            }
        }
    });
    let mh = mesh.handle();
    mh.set_allowed([to.mesh.local_peer_id()].into())
        .await
        .unwrap();
    mh.dial(to.addr.clone().unwrap()).await.unwrap();
    mesh
}

/// Anti-entropy sends this node's op at each head the peer names once, as
/// fork evidence, not again in every round: rounds where nothing moved
/// carry no ops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_where_nothing_moved_carry_no_ops() {
    let (dirs, team, _owner, _bob, _carol) = team();
    let a = Running::start(dirs[0].path(), team, fast(false), true).await;
    let vv = a.handle.version_vector().await.unwrap();
    // A bare mesh with B's identity that holds exactly what A holds: it
    // answers A's vectors with the same vector and counts what A sends.
    let b_seed = Node::open(dirs[1].path()).unwrap().key_seed();
    let cancel = CancellationToken::new();
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel(1024);
    let _mesh = vector_answerer(b_seed, &a, vv, seen_tx, &cancel).await;
    // Rounds every 500 ms: count until A has asked for B's vector 6 times.
    let (mut vectors, mut ops) = (0, 0);
    while vectors < 6 {
        match tokio::time::timeout(WAIT, seen.recv()).await {
            Ok(Some((_, "vector", _))) => vectors += 1,
            Ok(Some((_, "ops", _))) => ops += 1,
            Ok(Some(_)) => {}
            other => panic!("A's rounds stopped: {other:?}"),
        }
    }
    // The first round carries A's op at each of B's heads; no other does.
    assert_eq!(ops, 1, "{ops} batches of ops in {vectors} rounds");
    cancel.cancel();
    a.stop().await;
}

/// A tick starts rounds with `anti_entropy_peers` connected peers in turn,
/// not with all of them: with a turn of one and two peers, each tick asks
/// one peer for its vector, and both peers keep being asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_runs_rounds_with_a_turn_of_peers() {
    let (dirs, team, _owner, _bob, _carol) = team();
    let config = SyncConfig {
        anti_entropy_peers: 1,
        ..fast(false)
    };
    let a = Running::start(dirs[0].path(), team, config, true).await;
    let vv = a.handle.version_vector().await.unwrap();
    let cancel = CancellationToken::new();
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel(1024);
    let mut meshes = Vec::new();
    let mut ids = Vec::new();
    for d in &dirs[1..] {
        let seed = Node::open(d.path()).unwrap().key_seed();
        ids.push(seed[0]);
        let mesh = vector_answerer(seed, &a, vv.clone(), seen_tx.clone(), &cancel).await;
        meshes.push(mesh);
    }
    assert_ne!(ids[0], ids[1], "the two peers must be told apart");
    // Each peer gets a round when it connects; look at the ticks after.
    let mut asked: Vec<(u8, Instant)> = Vec::new();
    while asked.len() < 12 {
        match tokio::time::timeout(WAIT, seen.recv()).await {
            Ok(Some((who, "vector", at))) => asked.push((who, at)),
            Ok(Some(_)) => {}
            other => panic!("A's rounds stopped: {other:?}"),
        }
    }
    let steady = &asked[4..];
    // Ticks are 500 ms apart: requests closer than 250 ms are one tick's.
    let mut ticks: Vec<Vec<u8>> = Vec::new();
    let mut last: Option<Instant> = None;
    for (who, at) in steady {
        match (last, ticks.last_mut()) {
            (Some(l), Some(t)) if at.duration_since(l) < Duration::from_millis(250) => t.push(*who),
            _ => ticks.push(vec![*who]),
        }
        last = Some(*at);
    }
    assert!(
        ticks.iter().all(|t| t.len() == 1),
        "a tick asked more than one peer: {ticks:?}"
    );
    for id in &ids {
        assert!(
            steady.iter().any(|(w, _)| w == id),
            "peer {id} was never asked: {ticks:?}"
        );
    }
    cancel.cancel();
    a.stop().await;
}

/// A peer whose vector shows that it lacks ops gets a round at once, not
/// when its turn comes (here ticks never come), and only once per
/// interval however often it asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_lacks_ops_gets_a_round_at_once_and_once() {
    use shoal_node::mesh::SyncRequest;
    let (dirs, team, _owner, _bob, _carol) = team();
    let a = Running::start(dirs[0].path(), team, push_only(), true).await;
    let a_peer = a.mesh.local_peer_id();
    let vv = a.handle.version_vector().await.unwrap();
    assert!(!vv.is_empty());
    let b_seed = Node::open(dirs[1].path()).unwrap().key_seed();
    let cancel = CancellationToken::new();
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel(1024);
    let mesh = vector_answerer(b_seed, &a, vv, seen_tx, &cancel).await;
    let mh = mesh.handle();
    // The round every peer gets as it connects.
    next_vector(&mut seen).await;
    // B says it holds nothing: A starts a round toward it.
    let empty = shoal_protocol::replica::VersionVector::new();
    mh.request(a_peer, SyncRequest::VersionVector(empty.clone()))
        .await
        .unwrap();
    next_vector(&mut seen).await;
    // Asking again within the interval (600 s here) starts no other round.
    for _ in 0..4 {
        mh.request(a_peer, SyncRequest::VersionVector(empty.clone()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut more = 0;
    while let Ok((_, kind, _)) = seen.try_recv() {
        if kind == "vector" {
            more += 1;
        }
    }
    assert_eq!(more, 0, "A started {more} more rounds within one interval");
    cancel.cancel();
    a.stop().await;
}

/// Waits for the next vector request a [`vector_answerer`] saw.
async fn next_vector(seen: &mut tokio::sync::mpsc::Receiver<(u8, &'static str, Instant)>) {
    loop {
        match tokio::time::timeout(WAIT, seen.recv()).await {
            Ok(Some((_, "vector", _))) => return,
            Ok(Some(_)) => {}
            other => panic!("no round from A: {other:?}"),
        }
    }
}

/// A bare mesh with the identity of the node stored in `dir`, allowed to
/// talk to `a`: every request it gets is acknowledged and, when `keep` says
/// so, reported on `tx` as `(name, request)`.
fn recording_peer(
    dir: &TempDir,
    name: char,
    a: libp2p::PeerId,
    keep: fn(&shoal_node::mesh::SyncRequest) -> bool,
    tx: tokio::sync::mpsc::Sender<(char, shoal_node::mesh::SyncRequest)>,
    cancel: &CancellationToken,
) -> (Mesh, SecretKey) {
    use shoal_node::mesh::{MeshEvent, SyncResponse};
    let seed = Node::open(dir.path()).unwrap().key_seed();
    let (mesh, mut events) = bare_mesh(seed, cancel);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let MeshEvent::Request { request, reply, .. } = ev {
                let _ = reply.send(SyncResponse::Ack);
                if keep(&request) {
                    let _ = tx.send((name, request)).await;
                }
            }
        }
    });
    let mh = mesh.handle();
    tokio::spawn(async move { mh.set_allowed([a].into()).await.unwrap() });
    (mesh, SecretKey::from_seed(seed))
}

/// Sends `request` from `mesh` to `to` until it is acknowledged.
async fn ask(mesh: &Mesh, to: libp2p::PeerId, request: shoal_node::mesh::SyncRequest) {
    let mh = mesh.handle();
    let deadline = Instant::now() + WAIT;
    loop {
        match mh.request(to, request.clone()).await {
            Ok(answer) => break assert_eq!(answer, shoal_node::mesh::SyncResponse::Ack),
            Err(e) => assert!(Instant::now() < deadline, "no answer: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A heartbeat of the node `key` of `team` saying it speaks
/// `protocol_version`, sent now.
fn beat(team: TeamId, key: &SecretKey, protocol_version: u32) -> shoal_node::mesh::SyncRequest {
    use shoal_protocol::heartbeat::{HEARTBEAT_VERSION, Heartbeat, SignedHeartbeat};
    let beat = Heartbeat {
        version: HEARTBEAT_VERSION,
        team,
        node: key.public(),
        sent_ms: now_ms(),
        agent_version: "shoal-test".into(),
        protocol_version,
        addresses: Vec::new(),
    };
    shoal_node::mesh::SyncRequest::Heartbeat(SignedHeartbeat::sign(beat, key).unwrap())
}

/// A node connected to every other node of the team pushes what it makes
/// straight to each and tells those that speak it to relay none (the
/// relays were copies each peer already had: half of all pushes in a full
/// mesh); peers of older releases, and any push while a node is missing,
/// get a plain push, which is relayed. A receiver relays what came in a
/// plain push and nothing that came in a push to all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_from_a_node_that_reaches_all_is_not_relayed() {
    use shoal_node::mesh::SyncRequest;
    use shoal_node::mesh::wire::{TO_ALL_PROTOCOL_VERSION, ToAll};
    use shoal_protocol::Op;

    let (dirs, team, owner, bob, _carol) = team();
    let a = Running::start(dirs[0].path(), team, push_only(), true).await;
    let a_peer = a.mesh.local_peer_id();
    let a_addr = a.addr.clone().unwrap();
    let cancel = CancellationToken::new();
    let (tx, mut pushes) = tokio::sync::mpsc::channel(1024);
    let keep =
        |r: &SyncRequest| matches!(r, SyncRequest::Push(_) | SyncRequest::ToAll(ToAll::Push(_)));
    let (b_mesh, b_key) = recording_peer(&dirs[1], 'b', a_peer, keep, tx.clone(), &cancel);
    let (c_mesh, c_key) = recording_peer(&dirs[2], 'c', a_peer, keep, tx, &cancel);
    // The ops of the next `n` pushes that reach B or C, by receiver and kind.
    async fn next(
        pushes: &mut tokio::sync::mpsc::Receiver<(char, SyncRequest)>,
        n: usize,
    ) -> Vec<(char, &'static str, Vec<OpHash>)> {
        let mut got = Vec::new();
        while got.len() < n {
            let (who, request) = tokio::time::timeout(WAIT, pushes.recv())
                .await
                .expect("a push comes")
                .unwrap();
            let (kind, ops) = match request {
                SyncRequest::Push(ops) => ("push", ops),
                SyncRequest::ToAll(ToAll::Push(ops)) => ("to all", ops),
                _ => unreachable!(),
            };
            let hashes = ops.iter().map(|o| Op::decode(o).unwrap().hash()).collect();
            got.push((who, kind, hashes));
        }
        got.sort();
        got
    }

    // B connected, C not: A does not reach every node, so B relays.
    b_mesh.handle().dial(a_addr.clone()).await.unwrap();
    ask(&b_mesh, a_peer, beat(team, &b_key, TO_ALL_PROTOCOL_VERSION)).await;
    let op = create_product(&a.handle, &owner, "one").await;
    assert_eq!(next(&mut pushes, 1).await, [('b', "push", vec![op])]);
    // Both connected: B, which speaks it, gets a push to all; C, of an
    // older release, a plain push.
    c_mesh.handle().dial(a_addr).await.unwrap();
    ask(
        &c_mesh,
        a_peer,
        beat(team, &c_key, TO_ALL_PROTOCOL_VERSION - 1),
    )
    .await;
    let op = create_product(&a.handle, &owner, "two").await;
    assert_eq!(
        next(&mut pushes, 2).await,
        [('b', "to all", vec![op]), ('c', "push", vec![op])]
    );
    // C upgraded: pushes to all for both.
    ask(&c_mesh, a_peer, beat(team, &c_key, TO_ALL_PROTOCOL_VERSION)).await;
    let op = create_product(&a.handle, &owner, "three").await;
    assert_eq!(
        next(&mut pushes, 2).await,
        [('b', "to all", vec![op]), ('c', "to all", vec![op])]
    );

    // Receiving: an op B pushed to all is not relayed to C; one B pushed
    // plainly is. (Both are Bob's; A never had them.)
    let quiet = product_op(&a.handle, &bob, "quiet").await;
    let to_all = SyncRequest::ToAll(ToAll::Push(vec![quiet.encode()]));
    ask(&b_mesh, a_peer, to_all).await;
    let loud = product_op(&a.handle, &bob, "loud").await;
    assert_ne!(loud.body.seq, quiet.body.seq);
    ask(&b_mesh, a_peer, SyncRequest::Push(vec![loud.encode()])).await;
    assert_eq!(
        next(&mut pushes, 1).await,
        [('c', "push", vec![loud.hash()])]
    );
    // Nothing else comes (the relay of `quiet` would have gone first).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), pushes.recv())
            .await
            .is_err()
    );
    assert_eq!(a.handle.op_count().await.unwrap(), 10);

    b_mesh.shutdown().await.unwrap();
    c_mesh.shutdown().await.unwrap();
    a.stop().await;
}

/// The same for heartbeats and live reports: a node connected to every
/// other node sends its own to all to peers that speak it (plainly
/// before), and a receiver relays a heartbeat or live report that came
/// plainly and none that came to all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_and_live_reports_from_a_node_that_reaches_all_are_not_relayed() {
    use shoal_node::mesh::SyncRequest;
    use shoal_node::mesh::wire::{TO_ALL_PROTOCOL_VERSION, ToAll};
    use shoal_protocol::heartbeat::{LIVE_REPORT_VERSION, Live, LiveReport, SignedLive};

    let (dirs, team, ..) = team();
    let a_key = SecretKey::from_seed(Node::open(dirs[0].path()).unwrap().key_seed());
    let (_live_tx, live_rx) = tokio::sync::watch::channel(Some(Box::new(Live::default())));
    let config = beating(&a_key, live_rx, push_only());
    let a = Running::start(dirs[0].path(), team, config, true).await;
    let a_peer = a.mesh.local_peer_id();
    let a_addr = a.addr.clone().unwrap();
    let cancel = CancellationToken::new();
    let (tx, mut seen) = tokio::sync::mpsc::channel(4096);
    let keep = |r: &SyncRequest| {
        matches!(
            r,
            SyncRequest::Heartbeat(_)
                | SyncRequest::Live(_)
                | SyncRequest::ToAll(ToAll::Heartbeat(_) | ToAll::Live(_))
        )
    };
    let (b_mesh, b_key) = recording_peer(&dirs[1], 'b', a_peer, keep, tx.clone(), &cancel);
    let (c_mesh, c_key) = recording_peer(&dirs[2], 'c', a_peer, keep, tx, &cancel);
    // What reaches B or C: receiver, kind, whose, and when it was made.
    let what = |(who, r): (char, SyncRequest)| match r {
        SyncRequest::Heartbeat(h) => (who, "beat", h.beat.node, h.beat.sent_ms),
        SyncRequest::Live(l) => (who, "live", l.report.node, l.report.made_ms),
        SyncRequest::ToAll(ToAll::Heartbeat(h)) => {
            (who, "beat to all", h.beat.node, h.beat.sent_ms)
        }
        SyncRequest::ToAll(ToAll::Live(l)) => (who, "live to all", l.report.node, l.report.made_ms),
        _ => unreachable!(),
    };
    // Waits until `want` arrives; returns everything that came until then.
    async fn until(
        seen: &mut tokio::sync::mpsc::Receiver<(char, SyncRequest)>,
        what: impl Fn((char, SyncRequest)) -> (char, &'static str, shoal_protocol::PublicKey, u64),
        want: impl Fn(&(char, &'static str, shoal_protocol::PublicKey, u64)) -> bool,
    ) -> Vec<(char, &'static str, shoal_protocol::PublicKey, u64)> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = tokio::time::timeout_at(deadline, seen.recv())
                .await
                .unwrap_or_else(|_| panic!("it did not come; came: {got:?}"))
                .unwrap();
            let w = what(r);
            let done = want(&w);
            got.push(w);
            if done {
                return got;
            }
        }
    }
    let a_pub = a_key.public();

    // B connected and speaking it, C not connected: A's beats reach B plainly.
    b_mesh.handle().dial(a_addr.clone()).await.unwrap();
    ask(&b_mesh, a_peer, beat(team, &b_key, TO_ALL_PROTOCOL_VERSION)).await;
    let got = until(&mut seen, what, |w| w.0 == 'b' && w.1 == "live").await;
    assert!(
        got.iter().all(|w| w.1 == "beat" || w.1 == "live"),
        "{got:?}"
    );
    // Both connected and speaking it: A's beats and live reports go to all.
    c_mesh.handle().dial(a_addr).await.unwrap();
    ask(&c_mesh, a_peer, beat(team, &c_key, TO_ALL_PROTOCOL_VERSION)).await;
    for who in ['b', 'c'] {
        for kind in ["beat to all", "live to all"] {
            until(&mut seen, what, |w| {
                w.0 == who && w.1 == kind && w.2 == a_pub
            })
            .await;
        }
    }

    // Receiving: B's beat and live report sent to all are not relayed to C;
    // those sent plainly are.
    let b_live = |made_ms: u64| {
        let report = LiveReport {
            version: LIVE_REPORT_VERSION,
            team,
            node: b_key.public(),
            made_ms,
            live: Live::default(),
        };
        SignedLive::sign(report, &b_key).unwrap()
    };
    let SyncRequest::Heartbeat(quiet) = beat(team, &b_key, TO_ALL_PROTOCOL_VERSION) else {
        unreachable!()
    };
    let quiet_live = b_live(quiet.beat.sent_ms);
    ask(
        &b_mesh,
        a_peer,
        SyncRequest::ToAll(ToAll::Heartbeat(quiet.clone())),
    )
    .await;
    ask(
        &b_mesh,
        a_peer,
        SyncRequest::ToAll(ToAll::Live(Box::new(quiet_live))),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let SyncRequest::Heartbeat(loud) = beat(team, &b_key, TO_ALL_PROTOCOL_VERSION) else {
        unreachable!()
    };
    assert!(loud.beat.sent_ms > quiet.beat.sent_ms);
    ask(&b_mesh, a_peer, SyncRequest::Heartbeat(loud.clone())).await;
    ask(
        &b_mesh,
        a_peer,
        SyncRequest::Live(b_live(loud.beat.sent_ms)),
    )
    .await;
    let b_pub = b_key.public();
    // Both relays, in whichever order they come.
    let both = |got: &[(char, &str, shoal_protocol::PublicKey, u64)]| {
        ["beat", "live"]
            .iter()
            .all(|k| got.iter().any(|w| w.0 == 'c' && w.1 == *k && w.2 == b_pub))
    };
    let mut got = Vec::new();
    while !both(&got) {
        got.extend(until(&mut seen, what, |w| w.0 == 'c' && w.2 == b_pub).await);
    }
    got.sort();
    let from_b: Vec<_> = got.iter().filter(|w| w.2 == b_pub).collect();
    assert_eq!(
        from_b,
        [
            &('c', "beat", b_pub, loud.beat.sent_ms),
            &('c', "live", b_pub, loud.beat.sent_ms)
        ]
    );

    b_mesh.shutdown().await.unwrap();
    c_mesh.shutdown().await.unwrap();
    a.stop().await;
}
