//! A history signed by an earlier build stays valid, and today's build
//! writes it byte for byte the same.
//!
//! Every replica rebuilds each op's Automerge change from its action and
//! refuses it when the bytes differ (§3.1). So any change to how the writer,
//! autosurgeon or the vendored automerge and hexane lay out a change would
//! make upgraded nodes refuse the team's existing history. The fixture
//! (`fixtures/history-v1.ops`) holds the genesis op and the first ops of
//! `testkit::history`, as length-prefixed encodings; it was written by
//! running this test with `SHOAL_BLESS=1`. Re-bless it only together with a
//! new op or schema version, never to make a speed-up pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use std::collections::BTreeMap;

use shoal_protocol::action::{Action, DeploymentEdit};
use shoal_protocol::model::{
    ContainerConfig, HUB_REGISTRY_ID, Image, ImageRef, Port, ProductKind, Protocol, RegistryKind,
    RestartPolicy, Role, VersionKind, Volume, VolumeKind,
};
use shoal_protocol::{Op, Replica, testkit};

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

/// What the history leaves out: a member's invite and join, a registry,
/// an incremental version and its child, and configs whose maps and lists
/// hold several entries, then lose and gain some.
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
    let mut step = |r: &mut Replica, action: Action| {
        let now = clock.tick();
        let (op, rep) = testkit::act(r, &owner, origin, now, action).unwrap();
        assert_eq!(rep.applied.len(), 1, "{:?}", rep.rejected);
        out.push(op);
    };
    let c = testkit::ctx(r, &owner, origin, 0);
    step(
        r,
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
    step(
        r,
        Action::ProductCreate {
            id: product.clone(),
            name: "shop".into(),
            kind: ProductKind::Complex,
            description: "the shop".into(),
            version: None,
        },
    );
    let v1 = testkit::ctx(r, &owner, origin, 0).new_id(0);
    step(
        r,
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
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        labels: [("tier", "web"), ("team", "shop")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
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
    step(
        r,
        Action::ImageAdd {
            version: v1.clone(),
            image: Box::new(Image {
                name: "web".into(),
                image: reference.clone(),
                config: image(&[("A", "1"), ("B", "2"), ("C", "3")], &[80, 443]),
            }),
        },
    );
    step(
        r,
        Action::ImageConfig {
            version: v1.clone(),
            name: "web".into(),
            image: reference,
            config: Box::new(image(&[("B", "20"), ("D", "4"), ("E", "5")], &[443, 8080])),
        },
    );
    let dep = testkit::ctx(r, &owner, origin, 0).new_id(0);
    step(
        r,
        Action::DeploymentCreate {
            id: dep.clone(),
            version: v1.clone(),
            node: origin,
            prefix: "shop".into(),
            env: [("X", "1"), ("Y", "2")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secrets: BTreeMap::new(),
            instances: BTreeMap::new(),
            protected: true,
            note: "first".into(),
            force: false,
        },
    );
    step(
        r,
        Action::DeploymentUpdate {
            id: dep,
            edit: DeploymentEdit {
                env: Some(
                    [("Y", "3"), ("Z", "4")]
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
        },
    );
    let c = testkit::ctx(r, &owner, origin, 0);
    step(
        r,
        Action::VersionIncrease {
            from: v1,
            id: c.new_id(0),
            name: "1.1.0".into(),
            changelog: "second".into(),
            copies: vec![c.new_id(1)],
        },
    );
    out
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
fn a_stored_history_is_still_applied_in_one_batch_out_of_order() {
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
