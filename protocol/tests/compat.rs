//! A history signed by an earlier build stays valid, and today's build
//! writes it byte for byte the same.
//!
//! Every replica rebuilds each op's Automerge change from its action and
//! refuses it when the bytes differ (§3.1). So any change to how the writer,
//! autosurgeon or the vendored automerge and hexane lay out a change would
//! make upgraded nodes refuse the team's existing history. The fixture
//! (`fixtures/history-v1.ops`) holds the genesis op, the first ops of
//! `testkit::history` and the actions it leaves out ([`extras`]), as
//! length-prefixed encodings; it was written by
//! running this test with `SHOAL_BLESS=1`. Re-bless it only together with a
//! new op or schema version, never to make a speed-up pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use std::collections::BTreeMap;

use shoal_protocol::action::{Action, DeploymentEdit, Outcome};
use shoal_protocol::model::{
    ContainerAction, ContainerConfig, FrozenConfig, HUB_REGISTRY_ID, Image, ImageRef, Port,
    ProductKind, Protocol, RegistryKind, RestartPolicy, Role, VersionKind, Volume, VolumeKind,
};
use shoal_protocol::{Op, Replica, SecretKey, testkit};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/history-v1.ops");
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

fn today() -> Vec<Op> {
    let (genesis, ops) = testkit::history(OPS);
    let mut r = Replica::from_genesis(genesis.clone()).unwrap();
    for op in &ops {
        assert_eq!(r.apply(op.clone(), NOW_MS).applied.len(), 1);
    }
    let extra = extras(&mut r, ops.last().unwrap().body.hlc.ms + 1_000);
    std::iter::once(genesis).chain(ops).chain(extra).collect()
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

fn pairs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fixture() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        if std::env::var_os("SHOAL_BLESS").is_some() {
            std::fs::create_dir_all(std::path::Path::new(FIXTURE).parent().unwrap()).unwrap();
            std::fs::write(FIXTURE, encode(&today())).unwrap();
        }
        std::fs::read(FIXTURE).expect("the fixture exists (bless it with SHOAL_BLESS=1)")
    })
}

#[test]
fn a_stored_history_is_still_applied_op_by_op() {
    let ops = decode(fixture());
    let n = ops.len();
    assert!(n > OPS + 10, "the fixture holds the history and the extras");
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
    let ops = decode(fixture());
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
    let stored = decode(fixture());
    let made = today();
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
