//! A whole deployment lifecycle through signed ops, replicated to a second replica.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use shoal_protocol::action::{Action, Outcome};
use shoal_protocol::model::*;
use shoal_protocol::testkit::{self, Clock, act, ctx, key};
use shoal_protocol::{Op, Replica};

fn image(name: &str, tag: &str) -> Image {
    Image {
        name: name.into(),
        image: ImageRef {
            registry: HUB_REGISTRY_ID.into(),
            name: "shoal-test/busybox".into(),
            tag: tag.into(),
        },
        config: ContainerConfig::default(),
    }
}

#[test]
fn lifecycle_replicates_and_rolls_back() {
    let owner = key(1);
    let node = key(2);
    let n = node.public();
    let mut clock = Clock(1_700_000_000_000);
    let g = testkit::genesis(&owner, &node, clock.tick());
    let mut a = Replica::from_genesis(g.clone()).unwrap();
    let mut ops: Vec<Op> = vec![];
    let mut run =
        |a: &mut Replica, author: &shoal_protocol::SecretKey, action: Action, clock: &mut Clock| {
            let now = clock.tick();
            let (op, report) = act(a, author, n, now, action).unwrap();
            assert_eq!(report.applied, vec![op.hash()], "{report:?}");
            ops.push(op);
        };

    let c = ctx(&a, &owner, n, clock.0 + 1000);
    let product = c.new_id(0);
    run(
        &mut a,
        &owner,
        Action::ProductCreate {
            id: product.clone(),
            name: "web".into(),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        },
        &mut clock,
    );
    let c = ctx(&a, &owner, n, clock.0 + 1000);
    let v1 = c.new_id(0);
    run(
        &mut a,
        &owner,
        Action::VersionCreate {
            id: v1.clone(),
            product: product.clone(),
            name: "1.0.0".into(),
            kind: VersionKind::Incremental,
            changelog: String::new(),
            auto_copy: false,
        },
        &mut clock,
    );
    assert_eq!(
        a.state().products[&product].default_version.as_deref(),
        Some(v1.as_str())
    );
    run(
        &mut a,
        &owner,
        Action::ImageAdd {
            version: v1.clone(),
            image: Box::new(image("app", "1.0")),
        },
        &mut clock,
    );

    let c = ctx(&a, &owner, n, clock.0 + 1000);
    let d1 = c.new_id(0);
    run(
        &mut a,
        &owner,
        Action::DeploymentCreate {
            id: d1.clone(),
            version: v1.clone(),
            node: n,
            prefix: "prod".into(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            instances: BTreeMap::new(),
            protected: false,
            note: String::new(),
            force: false,
        },
        &mut clock,
    );
    run(
        &mut a,
        &owner,
        Action::DeploymentStart {
            id: d1.clone(),
            force: false,
        },
        &mut clock,
    );
    assert_eq!(
        a.state().deployments[&d1].status,
        DeploymentStatus::InProgress
    );
    assert_eq!(a.state().deployments[&d1].tries, 1);
    let frozen = FrozenConfig {
        version_name: "1.0.0".into(),
        images: a.state().versions[&v1].images.clone(),
    };
    run(
        &mut a,
        &node,
        Action::DeploymentFinish {
            id: d1.clone(),
            attempt: 1,
            outcome: Outcome::Successful,
            containers: BTreeMap::new(),
            events: vec!["started".into()],
            frozen: Some(frozen),
        },
        &mut clock,
    );
    assert_eq!(
        a.state().deployments[&d1].status,
        DeploymentStatus::Successful
    );

    let c = ctx(&a, &owner, n, clock.0 + 1000);
    let v2 = c.new_id(0);
    run(
        &mut a,
        &owner,
        Action::VersionIncrease {
            from: v1.clone(),
            id: v2.clone(),
            name: "1.1.0".into(),
            changelog: "more".into(),
            copies: vec![],
        },
        &mut clock,
    );
    let c = ctx(&a, &owner, n, clock.0 + 1000);
    let d2 = c.new_id(0);
    run(
        &mut a,
        &owner,
        Action::DeploymentCreate {
            id: d2.clone(),
            version: v2.clone(),
            node: n,
            prefix: "prod".into(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            instances: BTreeMap::new(),
            protected: false,
            note: String::new(),
            force: false,
        },
        &mut clock,
    );
    run(
        &mut a,
        &owner,
        Action::DeploymentStart {
            id: d2.clone(),
            force: false,
        },
        &mut clock,
    );
    let frozen = FrozenConfig {
        version_name: "1.1.0".into(),
        images: a.state().versions[&v2].images.clone(),
    };
    run(
        &mut a,
        &node,
        Action::DeploymentFinish {
            id: d2.clone(),
            attempt: 1,
            outcome: Outcome::Successful,
            containers: BTreeMap::new(),
            events: vec![],
            frozen: Some(frozen),
        },
        &mut clock,
    );
    assert_eq!(
        a.state().deployments[&d1].status,
        DeploymentStatus::Obsolete
    );
    assert_eq!(
        a.state().deployments[&d2].status,
        DeploymentStatus::Successful
    );

    // Rollback: the obsolete 1.0.0 deployment is the target.
    let target =
        shoal_protocol::view::rollback_target(a.state(), &product, &n.to_hex(), "prod").unwrap();
    assert_eq!(target.id, d1);
    run(
        &mut a,
        &owner,
        Action::DeploymentRollback {
            id: d1.clone(),
            force: false,
        },
        &mut clock,
    );
    let frozen = a.state().deployments[&d1].frozen.clone();
    run(
        &mut a,
        &node,
        Action::DeploymentFinish {
            id: d1.clone(),
            attempt: 2,
            outcome: Outcome::Successful,
            containers: BTreeMap::new(),
            events: vec![],
            frozen,
        },
        &mut clock,
    );
    assert_eq!(
        a.state().deployments[&d1].status,
        DeploymentStatus::Successful
    );
    assert_eq!(
        a.state().deployments[&d2].status,
        DeploymentStatus::Downgraded
    );

    // The incrementally kept view equals a fresh read of the document.
    assert_eq!(a.state(), &a.recompute_state());

    // A second replica fed the same ops reaches the same state.
    let mut b = Replica::from_genesis(g).unwrap();
    for op in &ops {
        let r = b.apply(op.clone(), clock.0);
        assert_eq!(r.applied.len(), 1, "{r:?}");
    }
    assert_eq!(a.state(), b.state());
    assert_eq!(a.heads(), b.heads());

    // The same ops in reverse order wait, then all apply.
    let mut c = Replica::from_genesis(testkit::genesis(&owner, &node, 1_700_000_001_000)).unwrap();
    let _ = &mut c;
    let mut d = Replica::from_genesis(b.ops()[0].op.clone()).unwrap();
    for op in ops.iter().rev() {
        d.apply(op.clone(), clock.0);
    }
    assert_eq!(d.state(), a.state());
    assert!(d.quarantine().is_empty());
}
