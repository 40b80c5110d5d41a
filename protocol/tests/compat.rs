//! A history signed by an earlier build stays valid, and today's build
//! writes it byte for byte the same.
//!
//! Every replica rebuilds each op's Automerge change from its action and
//! refuses it when the bytes differ (§3.1). So any change to how the writer,
//! autosurgeon or the vendored automerge and hexane lay out a change would
//! make upgraded nodes refuse the team's existing history. The fixture
//! (`fixtures/history-v1.ops`) holds the genesis op, the first ops of
//! `testkit::history` and the actions it leaves out ([`extras`]), as
//! length-prefixed encodings; `fixtures/history-v1-more.ops` continues it
//! with the actions both leave out ([`more`]). They were written by running
//! this test with `SHOAL_BLESS=1`. Re-bless them only together with a new op
//! or schema version, never to make a speed-up pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use std::collections::BTreeMap;

use shoal_protocol::action::{Action, DeploymentEdit, Outcome};
use shoal_protocol::model::{
    ContainerAction, ContainerConfig, FrozenConfig, HUB_REGISTRY_ID, Image, ImageRef, InviteKind,
    Port, ProductKind, Protocol, RegistryKind, RestartPolicy, Role, Runtime, VersionKind, Volume,
    VolumeKind,
};
use shoal_protocol::replica::join_proof_message;
use shoal_protocol::{Hlc, Op, OpHash, Replica, SecretKey, testkit};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/history-v1.ops");
const FIXTURE_MORE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/history-v1-more.ops"
);
/// Ten blocks of the history: products, images, deployments created,
/// started, finished and edited, with the genesis' team, owner and node.
const OPS: usize = 100;
const NOW_MS: u64 = 1_800_000_000_000;

fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        let b = op.encode();
        out.extend_from_slice(&u32::try_from(b.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&b);
    }
    out
}

fn decode(mut bytes: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let (op, rest) = rest.split_at(len);
        ops.push(Op::decode(op).expect("a fixture op decodes"));
        bytes = rest;
    }
    ops
}

/// Today's build's ops for the stored history: those of `history-v1.ops`,
/// then those of `history-v1-more.ops`.
fn today() -> (Vec<Op>, Vec<Op>) {
    let (genesis, ops) = testkit::history(OPS);
    let mut r = Replica::from_genesis(genesis.clone()).unwrap();
    for op in &ops {
        assert_eq!(r.apply(op.clone(), NOW_MS).applied.len(), 1);
    }
    let extra = extras(&mut r, ops.last().unwrap().body.hlc.ms + 1_000);
    let last = extra.last().unwrap().body.hlc.ms;
    let first = std::iter::once(genesis).chain(ops).chain(extra).collect();
    (first, more(&mut r, last + 1_000))
}

/// What the history leaves out: a member's invite, join, demotion and
/// removal, a registry, an incremental version and its child, a rollback, a
/// container command, a copied and a deleted deployment, and configs whose
/// maps and lists hold several entries, then lose and gain some.
fn extras(r: &mut Replica, start_ms: u64) -> Vec<Op> {
    let (owner, node) = (testkit::key(1), testkit::key(2));
    let origin = node.public();
    let mut clock = testkit::Clock(start_ms);
    let mut out = testkit::invite_and_join(
        r,
        &owner,
        origin,
        &testkit::key(3),
        "ada",
        Role::Admin,
        None,
        clock.tick(),
    )
    .unwrap();
    let mut step_as = |r: &mut Replica, who: &SecretKey, action: Action| {
        let now = clock.tick();
        let (op, rep) = testkit::act(r, who, origin, now, action).unwrap();
        assert_eq!(rep.applied.len(), 1, "{:?}", rep.rejected);
        out.push(op);
    };
    let c = testkit::ctx(r, &owner, origin, 0);
    step_as(
        r,
        &owner,
        Action::RegistryAdd {
            id: c.new_id(0),
            name: "lab".into(),
            kind: RegistryKind::V2,
            url: Some("https://registry.example.com".into()),
            namespace: Some("team".into()),
            user: None,
            password: None,
        },
    );
    let product = testkit::ctx(r, &owner, origin, 0).new_id(0);
    step_as(
        r,
        &owner,
        Action::ProductCreate {
            id: product.clone(),
            name: "shop".into(),
            kind: ProductKind::Complex,
            description: "the shop".into(),
            version: None,
        },
    );
    let v1 = testkit::ctx(r, &owner, origin, 0).new_id(0);
    step_as(
        r,
        &owner,
        Action::VersionCreate {
            id: v1.clone(),
            product,
            name: "1.0.0".into(),
            kind: VersionKind::Incremental,
            changelog: "first".into(),
            auto_copy: true,
        },
    );
    let image = |env: &[(&str, &str)], ports: &[u16]| ContainerConfig {
        env: pairs(env),
        labels: pairs(&[("tier", "web"), ("team", "shop")]),
        ports: ports
            .iter()
            .map(|&p| Port {
                internal: p,
                external: Some(p + 10_000),
                protocol: Protocol::Tcp,
            })
            .collect(),
        volumes: vec![Volume {
            name: "data".into(),
            path: "/data".into(),
            kind: VolumeKind::Rw,
            size: None,
        }],
        restart: Some(RestartPolicy::UnlessStopped),
        command: Some(vec!["sh".into(), "-c".into(), "serve".into()]),
        ..Default::default()
    };
    let reference = ImageRef {
        registry: HUB_REGISTRY_ID.into(),
        name: "shoal-test/busybox".into(),
        tag: "1.0".into(),
    };
    step_as(
        r,
        &owner,
        Action::ImageAdd {
            version: v1.clone(),
            image: Box::new(Image {
                name: "web".into(),
                image: reference.clone(),
                config: image(&[("A", "1"), ("B", "2"), ("C", "3")], &[80, 443]),
            }),
        },
    );
    step_as(
        r,
        &owner,
        Action::ImageConfig {
            version: v1.clone(),
            name: "web".into(),
            image: reference,
            config: Box::new(image(&[("B", "20"), ("D", "4"), ("E", "5")], &[443, 8080])),
        },
    );
    let dep = testkit::ctx(r, &owner, origin, 0).new_id(0);
    step_as(
        r,
        &owner,
        Action::DeploymentCreate {
            id: dep.clone(),
            version: v1.clone(),
            node: origin,
            prefix: "shop".into(),
            env: pairs(&[("X", "1"), ("Y", "2")]),
            secrets: BTreeMap::new(),
            instances: BTreeMap::new(),
            protected: true,
            note: "first".into(),
            force: false,
        },
    );
    step_as(
        r,
        &owner,
        Action::DeploymentUpdate {
            id: dep.clone(),
            edit: DeploymentEdit {
                env: Some(pairs(&[("Y", "3"), ("Z", "4")])),
                ..Default::default()
            },
        },
    );
    // The first version succeeds, its child (with the deployment copied)
    // succeeds on the same prefix, and the first is rolled back to.
    let finish = |r: &Replica, id: &str, version: &str| Action::DeploymentFinish {
        id: id.into(),
        attempt: 1,
        outcome: Outcome::Successful,
        containers: BTreeMap::new(),
        events: vec!["pulled".into(), "started".into()],
        frozen: Some(FrozenConfig {
            version_name: r.state().versions[version].name.clone(),
            images: r.state().versions[version].images.clone(),
        }),
    };
    let start = |id: &str, force: bool| Action::DeploymentStart {
        id: id.into(),
        force,
    };
    step_as(r, &owner, start(&dep, false));
    let a = finish(r, &dep, &v1);
    step_as(r, &node, a);
    let c = testkit::ctx(r, &owner, origin, 0);
    let (v2, copy) = (c.new_id(0), c.new_id(1));
    step_as(
        r,
        &owner,
        Action::VersionIncrease {
            from: v1,
            id: v2.clone(),
            name: "1.1.0".into(),
            changelog: "second".into(),
            copies: vec![copy.clone()],
        },
    );
    step_as(r, &owner, start(&copy, true));
    let a = finish(r, &copy, &v2);
    step_as(r, &node, a);
    step_as(
        r,
        &owner,
        Action::DeploymentRollback {
            id: dep,
            force: true,
        },
    );
    step_as(
        r,
        &owner,
        Action::ContainerCommand {
            id: testkit::ctx(r, &owner, origin, 0).new_id(0),
            node: origin,
            container: "shop-web".into(),
            action: ContainerAction::Restart,
        },
    );
    let moved = testkit::ctx(r, &owner, origin, 0).new_id(0);
    step_as(
        r,
        &owner,
        Action::DeploymentCopy {
            from: copy,
            id: moved.clone(),
            node: origin,
            prefix: "shop-next".into(),
        },
    );
    step_as(r, &owner, Action::DeploymentDelete { id: moved });
    // The admin who joined is demoted, then removed.
    let ada = testkit::key(3).public();
    step_as(
        r,
        &owner,
        Action::MemberRole {
            member: ada,
            role: Role::User,
        },
    );
    step_as(r, &owner, Action::MemberRemove { member: ada });
    out
}

/// What `extras` leaves out: a node's invite, join, address update and
/// removal; an invite revoked; the team renamed; a registry updated and
/// removed; a product imported with two images, which are reordered and one
/// removed; the product and version described again, another version made
/// default and the imported one removed; a deployment deleted with its
/// volumes; a node's images pruned; a quarantine purge; a product removed.
/// (Key sealing is left out: a sealed key is random, so it cannot be written
/// again byte for byte.)
fn more(r: &mut Replica, start_ms: u64) -> Vec<Op> {
    let (owner, node) = (testkit::key(1), testkit::key(2));
    let origin = node.public();
    let mut clock = testkit::Clock(start_ms);
    let mut out = Vec::new();
    let mut step_as =
        |r: &mut Replica, who: &SecretKey, from: shoal_protocol::PublicKey, action: Action| {
            let now = clock.tick();
            let (op, rep) = testkit::act(r, who, from, now, action).unwrap();
            assert_eq!(rep.applied.len(), 1, "{:?}", rep.rejected);
            out.push(op);
        };
    let new_id = |r: &Replica, n: u32| testkit::ctx(r, &owner, origin, 0).new_id(n);

    // A node joins, publishes its addresses, and is removed.
    let (edge, invite_key) = (testkit::key(4), testkit::key(201));
    let invite = new_id(r, 0);
    step_as(
        r,
        &owner,
        origin,
        Action::InviteCreate {
            id: invite.clone(),
            kind: InviteKind::Node {
                name: "edge".into(),
                runtime: Runtime::Docker,
            },
            invite_key: invite_key.public(),
            expires: Hlc::new(start_ms + 86_400_000, 0),
        },
    );
    let proof = invite_key.sign(&join_proof_message(&r.team(), &invite, &edge.public()));
    step_as(
        r,
        &edge,
        edge.public(),
        Action::NodeJoin {
            invite,
            node: Box::new(shoal_protocol::action::NewNode {
                protocol_version: testkit::HISTORY_PROTOCOL_VERSION,
                ..testkit::new_node(&edge, "edge", Runtime::Docker)
            }),
            proof,
        },
    );
    step_as(
        r,
        &edge,
        edge.public(),
        Action::NodeUpdate {
            addresses: vec![
                "/ip4/127.0.0.1/tcp/4001".into(),
                "/ip4/10.0.0.4/tcp/4001".into(),
            ],
            agent_version: "0.1.0".into(),
            protocol_version: testkit::HISTORY_PROTOCOL_VERSION,
        },
    );
    step_as(
        r,
        &owner,
        origin,
        Action::NodeRemove {
            node: edge.public(),
        },
    );

    // An invite made and revoked; the team renamed.
    let invite = new_id(r, 0);
    step_as(
        r,
        &owner,
        origin,
        Action::InviteCreate {
            id: invite.clone(),
            kind: InviteKind::Member { role: Role::User },
            invite_key: testkit::key(202).public(),
            expires: Hlc::new(start_ms + 3_600_000, 0),
        },
    );
    step_as(r, &owner, origin, Action::InviteRevoke { id: invite });
    step_as(
        r,
        &owner,
        origin,
        Action::TeamUpdate {
            name: "fixture".into(),
            description: "the stored history".into(),
        },
    );

    // A registry updated twice and removed.
    let registry = new_id(r, 0);
    step_as(
        r,
        &owner,
        origin,
        Action::RegistryAdd {
            id: registry.clone(),
            name: "old".into(),
            kind: RegistryKind::Gitlab,
            url: Some("https://gitlab.example.com".into()),
            namespace: Some("group".into()),
            user: None,
            password: None,
        },
    );
    step_as(
        r,
        &owner,
        origin,
        Action::RegistryUpdate {
            id: registry.clone(),
            url: Some("https://gitlab.example.org".into()),
            namespace: None,
            user: Some("bot".into()),
            password: None,
            clear_credentials: false,
        },
    );
    step_as(
        r,
        &owner,
        origin,
        Action::RegistryUpdate {
            id: registry.clone(),
            url: None,
            namespace: Some("other".into()),
            user: None,
            password: None,
            clear_credentials: true,
        },
    );
    step_as(r, &owner, origin, Action::RegistryRemove { id: registry });

    // A product imported with two images; reordered, one removed.
    let (product, imported) = (new_id(r, 0), new_id(r, 1));
    let image = |name: &str, env: &[(&str, &str)], port: u16| Image {
        name: name.into(),
        image: ImageRef {
            registry: HUB_REGISTRY_ID.into(),
            name: format!("shoal-test/{name}"),
            tag: "2.0".into(),
        },
        config: ContainerConfig {
            env: pairs(env),
            ports: vec![Port {
                internal: port,
                external: None,
                protocol: Protocol::Udp,
            }],
            volumes: vec![Volume {
                name: format!("{name}-data"),
                path: "/var/lib/data".into(),
                kind: VolumeKind::Ro,
                size: Some("1G".into()),
            }],
            ..Default::default()
        },
    };
    step_as(
        r,
        &owner,
        origin,
        Action::ProductImport {
            product: product.clone(),
            product_name: Some("store".into()),
            description: "imported".into(),
            version: imported.clone(),
            name: "2.0.0".into(),
            changelog: "from compose".into(),
            images: vec![
                image("web", &[("MODE", "prod"), ("PORT", "8080")], 8080),
                image("db", &[("DATA", "/var/lib/data")], 5432),
            ],
        },
    );
    step_as(
        r,
        &owner,
        origin,
        Action::ImageOrder {
            version: imported.clone(),
            names: vec!["db".into(), "web".into()],
        },
    );
    step_as(
        r,
        &owner,
        origin,
        Action::ImageRemove {
            version: imported.clone(),
            name: "db".into(),
        },
    );
    step_as(
        r,
        &owner,
        origin,
        Action::ProductUpdate {
            id: product.clone(),
            description: "imported, then described".into(),
        },
    );
    step_as(
        r,
        &owner,
        origin,
        Action::VersionUpdate {
            id: imported.clone(),
            changelog: Some("from compose, edited".into()),
            auto_copy: Some(true),
        },
    );
    let rolling = new_id(r, 0);
    step_as(
        r,
        &owner,
        origin,
        Action::VersionCreate {
            id: rolling.clone(),
            product: product.clone(),
            name: "edge".into(),
            kind: VersionKind::Rolling,
            changelog: String::new(),
            auto_copy: false,
        },
    );
    step_as(
        r,
        &owner,
        origin,
        Action::VersionDefault { version: rolling },
    );
    step_as(r, &owner, origin, Action::VersionRemove { id: imported });

    // A deployment of the history's first version, deleted with its
    // volumes; the node's images pruned; a quarantine purge.
    let version = r
        .state()
        .versions
        .iter()
        .find(|(_, v)| !v.images.is_empty())
        .map(|(id, _)| id.clone())
        .unwrap();
    let dep = new_id(r, 0);
    step_as(
        r,
        &owner,
        origin,
        Action::DeploymentCreate {
            id: dep.clone(),
            version,
            node: origin,
            prefix: "vols".into(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            instances: BTreeMap::new(),
            protected: false,
            note: String::new(),
            force: false,
        },
    );
    let command = new_id(r, 0);
    step_as(
        r,
        &owner,
        origin,
        Action::DeploymentDeleteVolumes { id: dep, command },
    );
    let prune = new_id(r, 0);
    step_as(
        r,
        &owner,
        origin,
        Action::NodePrune {
            id: prune,
            node: origin,
        },
    );
    step_as(
        r,
        &owner,
        origin,
        Action::QuarantinePurge {
            ops: vec!["07".repeat(32).parse::<OpHash>().unwrap()],
        },
    );
    step_as(r, &owner, origin, Action::ProductRemove { id: product });
    out
}

fn pairs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The stored ops: `history-v1.ops`, then `history-v1-more.ops`.
fn fixture() -> &'static [Op] {
    static OPS: OnceLock<Vec<Op>> = OnceLock::new();
    OPS.get_or_init(|| {
        if std::env::var_os("SHOAL_BLESS").is_some() {
            let (first, more) = today();
            std::fs::create_dir_all(std::path::Path::new(FIXTURE).parent().unwrap()).unwrap();
            std::fs::write(FIXTURE, encode(&first)).unwrap();
            std::fs::write(FIXTURE_MORE, encode(&more)).unwrap();
        }
        let read =
            |path| std::fs::read(path).expect("the fixture exists (bless it with SHOAL_BLESS=1)");
        let mut ops = decode(&read(FIXTURE));
        ops.extend(decode(&read(FIXTURE_MORE)));
        ops
    })
}

#[test]
fn a_stored_history_is_still_applied_op_by_op() {
    let ops = fixture().to_vec();
    let n = ops.len();
    assert!(
        n > OPS + 40,
        "the fixture holds the history, the extras and more"
    );
    let mut ops = ops.into_iter();
    let mut r = Replica::from_genesis(ops.next().unwrap()).unwrap();
    for (i, op) in ops.enumerate() {
        let rep = r.apply(op, NOW_MS);
        assert!(
            rep.rejected.is_empty() && rep.applied.len() == 1,
            "op {i} of the stored history is not applied: {:?}",
            rep.rejected
        );
    }
    assert_eq!(r.ops().len(), n);
}

#[test]
fn a_stored_history_is_still_applied_when_it_arrives_last_to_first() {
    let ops = fixture().to_vec();
    let n = ops.len();
    let mut ops = ops.into_iter();
    let mut r = Replica::from_genesis(ops.next().unwrap()).unwrap();
    // Last to first: every op but the first waits for its past, then all
    // are applied as their past arrives.
    let mut applied = 0;
    for op in ops.rev() {
        applied += r.apply(op, NOW_MS).applied.len();
    }
    assert_eq!(applied, n - 1);
    assert_eq!(r.pending().count(), 0);
}

#[test]
fn todays_build_writes_the_stored_history_byte_for_byte() {
    let stored = fixture();
    let (mut made, more) = today();
    made.extend(more);
    assert_eq!(stored.len(), made.len());
    for (i, (s, m)) in stored.iter().zip(&made).enumerate() {
        assert!(
            s.body.change == m.body.change,
            "op {i} ({}): today's change differs from the stored one",
            m.body.action.name()
        );
        assert_eq!(s.encode(), m.encode(), "op {i}: the encoding differs");
    }
}
