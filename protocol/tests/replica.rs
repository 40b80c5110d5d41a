//! Replica-level behaviour: encoding, the audit view, concurrency outcomes,
//! waiting ops, quarantine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use shoal_protocol::action::Action;
use shoal_protocol::audit::{self, Filter, Problem};
use shoal_protocol::hlc::{Hlc, MAX_FUTURE_MS};
use shoal_protocol::model::*;
use shoal_protocol::op::{DecodeError, OP_VERSION};
use shoal_protocol::replica::{Rejection, Wait};
use shoal_protocol::rules::RuleError;
use shoal_protocol::testkit::{self, Clock, act, ctx, invite_and_join, key, sign_op};
use shoal_protocol::{Op, Replica, SecretKey, view};

const NOW: u64 = 1_800_000_000_000;

struct Team {
    a: Replica,
    b: Replica,
    owner: SecretKey,
    user: SecretKey,
    n1: SecretKey,
    n2: SecretKey,
    clock: Clock,
    version: String,
}

/// Owner on n1 (replica a), a user who joined with node n2 (replica b), a
/// product with a rolling version `edge` holding one image; both replicas in sync.
fn team() -> Team {
    let (owner, user, n1, n2) = (key(1), key(3), key(11), key(12));
    let mut clock = Clock(1_700_000_000_000);
    let g = testkit::genesis(&owner, &n1, clock.tick());
    let mut a = Replica::from_genesis(g.clone()).unwrap();
    let mut ops = invite_and_join(
        &mut a,
        &owner,
        n1.public(),
        &user,
        "user",
        Role::User,
        Some((&n2, "n2", Runtime::Docker)),
        clock.tick(),
    )
    .unwrap();
    let c = ctx(&a, &owner, n1.public(), 0);
    let (product, version) = (c.new_id(0), c.new_id(1));
    ops.push(
        act(
            &mut a,
            &owner,
            n1.public(),
            clock.tick(),
            Action::ProductCreate {
                id: product,
                name: "web".into(),
                kind: ProductKind::Simple,
                description: String::new(),
                version: Some(version.clone()),
            },
        )
        .unwrap()
        .0,
    );
    ops.push(
        act(
            &mut a,
            &owner,
            n1.public(),
            clock.tick(),
            Action::ImageAdd {
                version: version.clone(),
                image: Box::new(Image {
                    name: "app".into(),
                    image: ImageRef {
                        registry: HUB_REGISTRY_ID.into(),
                        name: "busybox".into(),
                        tag: "1".into(),
                    },
                    config: ContainerConfig::default(),
                }),
            },
        )
        .unwrap()
        .0,
    );
    let mut b = Replica::from_genesis(g).unwrap();
    for op in ops {
        assert_eq!(b.apply(op, NOW).applied.len(), 1);
    }
    assert!(a.quarantine().is_empty(), "{:?}", a.quarantine());
    Team {
        a,
        b,
        owner,
        user,
        n1,
        n2,
        clock,
        version,
    }
}

fn create(
    r: &Replica,
    author: &SecretKey,
    origin: &SecretKey,
    version: &str,
    node: &SecretKey,
    prefix: &str,
) -> Action {
    Action::DeploymentCreate {
        id: ctx(r, author, origin.public(), 0).new_id(0),
        version: version.into(),
        node: node.public(),
        prefix: prefix.into(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        instances: BTreeMap::new(),
        protected: false,
        note: String::new(),
        force: false,
    }
}

fn exchange(x: &mut Replica, y: &mut Replica, xs: &[Op], ys: &[Op]) {
    for op in ys {
        x.apply(op.clone(), NOW);
    }
    for op in xs {
        y.apply(op.clone(), NOW);
    }
}

#[test]
fn encoding_round_trips_and_is_versioned() {
    let t = team();
    for a in t.a.ops() {
        let bytes = a.op.encode();
        assert_eq!(bytes[0], OP_VERSION);
        let back = Op::decode(&bytes).unwrap();
        assert_eq!(back, a.op);
        assert_eq!(back.hash(), a.hash);
    }
    let mut bytes = t.a.ops()[1].op.encode();
    bytes[0] = OP_VERSION + 1;
    assert_eq!(
        Op::decode(&bytes),
        Err(DecodeError::Version(OP_VERSION + 1))
    );
    let bytes = t.a.ops()[1].op.encode();
    assert!(matches!(
        Op::decode(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Malformed(_))
    ));
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        Op::decode(&long),
        Err(DecodeError::Malformed(_) | DecodeError::NotCanonical)
    ));
    assert!(matches!(Op::decode(&[]), Err(DecodeError::Malformed(_))));
    assert!(matches!(
        Op::decode(&vec![1u8; 5 * 1024 * 1024]),
        Err(DecodeError::TooLarge(_))
    ));
}

/// Actions are postcard enums: the variant index is on the wire, so a new
/// action is appended and every earlier one keeps its index.
#[test]
fn actions_added_later_keep_the_encodings_of_earlier_ones() {
    let index = |a: &Action| postcard::to_stdvec(a).unwrap()[0];
    let id = || "x".to_string();
    assert_eq!(index(&Action::ProductRemove { id: id() }), 14);
    assert_eq!(index(&Action::VersionRemove { id: id() }), 18);
    assert_eq!(index(&Action::QuarantinePurge { ops: vec![] }), 34);
    let update = index(&Action::ProductUpdate {
        id: id(),
        description: String::new(),
    });
    let version = index(&Action::VersionUpdate {
        id: id(),
        changelog: None,
        auto_copy: Some(true),
    });
    assert!(update > 34 && version > update, "{update} {version}");
}

#[test]
fn concurrent_deployments_for_one_slot_resolve_the_same_everywhere() {
    let mut t = team();
    // Both create a deployment of the rolling version on n2/prod without seeing each other.
    let now = t.clock.tick();
    let cx = create(&t.a, &t.owner, &t.n1, &t.version, &t.n2, "prod");
    let x = act(&mut t.a, &t.owner, t.n1.public(), now, cx).unwrap().0;
    let cy = create(&t.b, &t.user, &t.n2, &t.version, &t.n2, "prod");
    let y = act(&mut t.b, &t.user, t.n2.public(), now + 5, cy)
        .unwrap()
        .0;
    exchange(
        &mut t.a,
        &mut t.b,
        std::slice::from_ref(&x),
        std::slice::from_ref(&y),
    );
    assert!(t.a.quarantine().is_empty() && t.b.quarantine().is_empty());
    assert_eq!(t.a.state(), t.b.state());
    assert_eq!(t.a.heads(), t.b.heads());
    let conflicted = |r: &Replica| -> Vec<String> {
        r.state()
            .deployments
            .values()
            .filter(|d| view::deployment_in_conflict(r.state(), d))
            .map(|d| d.id.clone())
            .collect()
    };
    // The earlier one by clock wins on both replicas.
    let loser = match &y.body.action {
        Action::DeploymentCreate { id, .. } => id.clone(),
        _ => unreachable!(),
    };
    assert_eq!(conflicted(&t.a), vec![loser.clone()]);
    assert_eq!(conflicted(&t.b), vec![loser.clone()]);
    // The loser cannot be started, with a clear reason.
    let err =
        t.b.prepare(
            t.user.public(),
            t.n2.public(),
            t.clock.tick(),
            Action::DeploymentStart {
                id: loser,
                force: false,
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            shoal_protocol::replica::PrepareError::Rule(RuleError::Conflict { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn a_double_used_invite_admits_one_newcomer() {
    let mut t = team();
    let invite_key = key(201);
    let c = ctx(&t.a, &t.owner, t.n1.public(), 0);
    let id = c.new_id(0);
    let now = t.clock.tick();
    let inv = act(
        &mut t.a,
        &t.owner,
        t.n1.public(),
        now,
        Action::InviteCreate {
            id: id.clone(),
            kind: InviteKind::Member { role: Role::User },
            invite_key: invite_key.public(),
            expires: Hlc::new(now + 3_600_000, 0),
        },
    )
    .unwrap()
    .0;
    t.b.apply(inv, NOW);
    let (p, q) = (key(50), key(51));
    let join = |r: &mut Replica, who: &SecretKey, origin: &SecretKey, at: u64| {
        let proof = invite_key.sign(&shoal_protocol::replica::join_proof_message(
            &r.team(),
            &id,
            &who.public(),
        ));
        act(
            r,
            who,
            origin.public(),
            at,
            Action::MemberJoin {
                invite: id.clone(),
                member: Box::new(testkit::new_member(who, "newcomer")),
                node: None,
                proof,
            },
        )
        .unwrap()
        .0
    };
    let now = t.clock.tick();
    let jp = join(&mut t.a, &p, &t.n1, now);
    let jq = join(&mut t.b, &q, &t.n2, now + 1);
    exchange(
        &mut t.a,
        &mut t.b,
        std::slice::from_ref(&jp),
        std::slice::from_ref(&jq),
    );
    assert_eq!(t.a.state(), t.b.state());
    for r in [&t.a, &t.b] {
        assert!(view::effective_role(r.state(), &p.public().to_hex()).is_some());
        assert!(view::effective_role(r.state(), &q.public().to_hex()).is_none());
    }
    // The loser's later ops are refused everywhere: it is not a member.
    let c = ctx(&t.b, &q, t.n2.public(), 0);
    let err =
        t.b.prepare(
            q.public(),
            t.n2.public(),
            t.clock.tick(),
            Action::ProductCreate {
                id: c.new_id(0),
                name: "x".into(),
                kind: ProductKind::Complex,
                description: String::new(),
                version: None,
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        shoal_protocol::replica::PrepareError::Rule(RuleError::NotMember { .. })
    ));
    // A third use after both is refused by the rules.
    let r = key(52);
    let proof = invite_key.sign(&shoal_protocol::replica::join_proof_message(
        &t.a.team(),
        &id,
        &r.public(),
    ));
    let err =
        t.a.prepare(
            r.public(),
            t.n1.public(),
            t.clock.tick(),
            Action::MemberJoin {
                invite: id.clone(),
                member: Box::new(testkit::new_member(&r, "late")),
                node: None,
                proof,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
}

#[test]
fn tampered_and_expired_tickets_are_refused() {
    let mut t = team();
    let invite_key = key(202);
    let c = ctx(&t.a, &t.owner, t.n1.public(), 0);
    let id = c.new_id(0);
    let now = t.clock.tick();
    act(
        &mut t.a,
        &t.owner,
        t.n1.public(),
        now,
        Action::InviteCreate {
            id: id.clone(),
            kind: InviteKind::Member { role: Role::User },
            invite_key: invite_key.public(),
            expires: Hlc::new(now + 10_000, 0),
        },
    )
    .unwrap();
    let who = key(60);
    let wrong = key(203).sign(&shoal_protocol::replica::join_proof_message(
        &t.a.team(),
        &id,
        &who.public(),
    ));
    let err =
        t.a.prepare(
            who.public(),
            t.n1.public(),
            now + 1000,
            Action::MemberJoin {
                invite: id.clone(),
                member: Box::new(testkit::new_member(&who, "x")),
                node: None,
                proof: wrong,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("tampered"), "{err}");
    let good = invite_key.sign(&shoal_protocol::replica::join_proof_message(
        &t.a.team(),
        &id,
        &who.public(),
    ));
    let err =
        t.a.prepare(
            who.public(),
            t.n1.public(),
            now + 20_000,
            Action::MemberJoin {
                invite: id.clone(),
                member: Box::new(testkit::new_member(&who, "x")),
                node: None,
                proof: good,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn ops_from_the_future_wait_until_their_time() {
    let mut t = team();
    let far = NOW + 2 * MAX_FUTURE_MS;
    let c = ctx(&t.a, &t.owner, t.n1.public(), 0);
    let op = sign_op(
        &mut t.a,
        &t.owner,
        t.n1.public(),
        far,
        Action::ProductCreate {
            id: c.new_id(0),
            name: "later".into(),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        },
    )
    .unwrap();
    let r = t.b.apply(op.clone(), NOW);
    assert!(
        matches!(r.waiting.as_slice(), [(_, Wait::Future(_))]),
        "{r:?}"
    );
    assert!(r.applied.is_empty());
    assert!(t.b.retry_future(NOW + 1000).applied.is_empty());
    let r = t.b.retry_future(far);
    assert_eq!(r.applied, vec![op.hash()]);
}

#[test]
fn ops_depending_on_a_rejected_op_are_rejected() {
    let mut t = team();
    // A signed op whose change was replaced by garbage: refused, and the
    // next op of the same log can never apply.
    let c = ctx(&t.a, &t.user, t.n2.public(), 0);
    let good = sign_op(
        &mut t.b,
        &t.user,
        t.n2.public(),
        t.clock.tick(),
        Action::ProductCreate {
            id: c.new_id(0),
            name: "p1".into(),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        },
    )
    .unwrap();
    let mut body = good.body.clone();
    body.action = Action::TeamUpdate {
        name: "hijack".into(),
        description: String::new(),
    };
    let forged = body.sign(&t.user).unwrap();
    let r = t.a.apply(forged.clone(), NOW);
    assert!(
        matches!(
            r.rejected.as_slice(),
            [(_, Rejection::Rule(RuleError::Role { .. }))]
        ),
        "{r:?}"
    );
    // The honest op at the same (log, seq) is a fork of the rejected one and
    // depends on nothing rejected: it applies.
    let r = t.a.apply(good.clone(), NOW);
    assert_eq!(r.applied, vec![good.hash()], "{r:?}");
    let v = audit::verify(&t.a);
    assert!(
        v.problems
            .iter()
            .any(|p| matches!(p, Problem::Quarantined { .. }))
    );
}

#[test]
fn audit_lists_with_filters_and_verifies_chains() {
    let mut t = team();
    let now = t.clock.tick();
    let cx = create(&t.a, &t.owner, &t.n1, &t.version, &t.n2, "prod");
    act(&mut t.a, &t.owner, t.n1.public(), now, cx).unwrap();
    let all = audit::list(&t.a, &Filter::default());
    assert_eq!(all.len(), t.a.ops().len());
    assert!(all.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    assert_eq!(all[0].action, "team.create");
    assert!(all[0].what.starts_with("created team "), "{}", all[0].what);
    let by_user = audit::list(
        &t.a,
        &Filter {
            author: Some("user".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        by_user.iter().map(|e| e.action).collect::<Vec<_>>(),
        vec!["member.join"]
    );
    let deps = audit::list(
        &t.a,
        &Filter {
            action: Some("deployment.".into()),
            ..Default::default()
        },
    );
    assert_eq!(deps.len(), 1);
    assert_eq!(
        deps[0].what,
        format!(
            "created deployment {} of web rolling on n2/prod",
            &deps[0].targets[0][..8]
        )
    );
    let prods = audit::list(
        &t.a,
        &Filter {
            action: Some("product.create".into()),
            ..Default::default()
        },
    );
    assert_eq!(prods.len(), 1);
    let by_version = audit::list(
        &t.a,
        &Filter {
            target: Some(t.version.clone()),
            ..Default::default()
        },
    );
    assert_eq!(
        by_version.iter().map(|e| e.action).collect::<Vec<_>>(),
        vec!["product.create", "image.add", "deployment.create"]
    );
    let by_product = audit::list(
        &t.a,
        &Filter {
            target: Some(prods[0].targets[0].clone()),
            ..Default::default()
        },
    );
    assert_eq!(by_product.len(), 1);
    let late = audit::list(
        &t.a,
        &Filter {
            since_ms: Some(now),
            ..Default::default()
        },
    );
    assert_eq!(late.len(), 1);
    let early = audit::list(
        &t.a,
        &Filter {
            until_ms: Some(now - 1),
            ..Default::default()
        },
    );
    assert_eq!(early.len() + late.len(), all.len());

    // Verification of the stored ops.
    let ops: Vec<Op> = t.a.ops().iter().map(|a| a.op.clone()).collect();
    assert!(audit::verify_ops(t.a.team(), &ops).ok());
    assert!(audit::verify(&t.a).ok());
    // An altered entry.
    let mut altered = ops.clone();
    altered[3].body.hlc = Hlc::new(altered[3].body.hlc.ms + 1, 0);
    let v = audit::verify_ops(t.a.team(), &altered);
    assert!(
        matches!(v.problems.first(), Some(Problem::BadSignature { seq, .. }) if *seq == altered[3].body.seq),
        "{v:?}"
    );
    // A dropped entry leaves a gap in its log.
    let mut dropped = ops.clone();
    let owner_log = dropped[3].log();
    dropped.remove(3);
    let v = audit::verify_ops(t.a.team(), &dropped);
    assert!(
        v.problems.iter().any(|p| matches!(p, Problem::Gap { .. })),
        "{v:?} {owner_log}"
    );
    // A fork: a second op signed at an existing (log, seq).
    let c = ctx(&t.a, &t.owner, t.n1.public(), 0);
    let mut fork = sign_op(
        &mut t.a,
        &t.owner,
        t.n1.public(),
        t.clock.tick(),
        Action::ProductCreate {
            id: c.new_id(0),
            name: "f".into(),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        },
    )
    .unwrap();
    let last =
        t.a.ops()
            .iter()
            .rev()
            .find(|a| a.op.log() == fork.log())
            .unwrap();
    fork.body.seq = last.op.body.seq;
    fork.body.prev = last.op.body.prev;
    let fork = fork.body.sign(&t.owner).unwrap();
    let mut forked = ops.clone();
    forked.push(fork.clone());
    let v = audit::verify_ops(t.a.team(), &forked);
    assert!(
        v.problems.iter().any(|p| matches!(p, Problem::Fork { .. })),
        "{v:?}"
    );
    // The replica refuses it and reports it.
    let r = t.a.apply(fork, NOW);
    assert!(
        matches!(
            r.rejected.as_slice(),
            [(
                _,
                Rejection::Fork { .. } | Rejection::ForkLost { .. } | Rejection::BadChange(_)
            )]
        ),
        "{r:?}"
    );
    assert!(!audit::verify(&t.a).ok());
}

#[test]
fn removed_members_and_nodes_lose_their_rights() {
    let mut t = team();
    let (op, _) = act(
        &mut t.a,
        &t.owner,
        t.n1.public(),
        t.clock.tick(),
        Action::MemberRemove {
            member: t.user.public(),
        },
    )
    .unwrap();
    t.b.apply(op, NOW);
    let c = ctx(&t.b, &t.user, t.n2.public(), 0);
    let err =
        t.b.prepare(
            t.user.public(),
            t.n2.public(),
            t.clock.tick(),
            Action::ProductCreate {
                id: c.new_id(0),
                name: "x".into(),
                kind: ProductKind::Complex,
                description: String::new(),
                version: None,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("not a member"), "{err}");
}

#[test]
fn snapshots_restore_the_same_replica_and_refuse_garbage() {
    let t = team();
    let ops: Vec<Op> = t.a.ops().iter().map(|a| a.op.clone()).collect();
    let snap = t.a.save_doc();
    assert!(snap.starts_with(shoal_protocol::replica::SNAPSHOT_MAGIC));
    let r = Replica::restore(&snap, ops.clone()).unwrap();
    assert_eq!(r.state(), t.a.state());
    assert_eq!(r.heads(), t.a.heads());
    assert_eq!(r.version_vector(), t.a.version_vector());
    // A bare Automerge document (an older snapshot) restores too.
    let r = Replica::restore(&t.a.doc().save(), ops.clone()).unwrap();
    assert_eq!(r.state(), t.a.state());
    // Garbage, a truncated snapshot, or one missing ops is an error, not a panic.
    assert!(Replica::restore(b"garbage", ops.clone()).is_err());
    assert!(Replica::restore(&snap[..snap.len() / 2], ops.clone()).is_err());
    assert!(Replica::restore(&snap, ops[..ops.len() - 1].to_vec()).is_err());
}

/// The state at an op's causal past is the current state patched where
/// concurrent ops wrote; with many concurrent creations in one collection it
/// reads that collection's keys once. Either way it must be exactly the
/// document read whole at those heads.
#[test]
fn the_state_at_a_concurrent_ops_past_is_the_document_read_at_its_deps() {
    let Team {
        mut a,
        mut b,
        owner,
        user,
        n1,
        n2,
        mut clock,
        version,
    } = team();
    let product = a.state().versions[&version].product.clone();
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for i in 0..24 {
        let t = clock.tick();
        let id = ctx(&a, &owner, n1.public(), t).new_id(0);
        let (op, _) = act(
            &mut a,
            &owner,
            n1.public(),
            t,
            Action::ProductCreate {
                id,
                name: format!("a-{i}"),
                kind: ProductKind::Complex,
                description: String::new(),
                version: None,
            },
        )
        .unwrap();
        from_a.push(op);
        let t = clock.tick();
        // b changes an entity the past holds, and creates others.
        let action = if i % 3 == 0 {
            Action::ProductUpdate {
                id: product.clone(),
                description: format!("b edit {i}"),
            }
        } else {
            Action::ProductCreate {
                id: ctx(&b, &user, n2.public(), t).new_id(0),
                name: format!("b-{i}"),
                kind: ProductKind::Complex,
                description: String::new(),
                version: None,
            }
        };
        let (op, rep) = act(&mut b, &user, n2.public(), t, action).unwrap();
        assert_eq!(rep.applied.len(), 1, "{rep:?}");
        from_b.push(op);
    }
    for op in from_b {
        assert_eq!(a.apply(op, NOW).applied.len(), 1);
    }
    for op in from_a {
        assert_eq!(b.apply(op, NOW).applied.len(), 1);
    }
    assert_eq!(a.state(), b.state());
    let mut checked = 0;
    for applied in a.ops().to_vec().iter().skip(1) {
        let change = automerge::Change::from_bytes(applied.op.body.change.clone()).unwrap();
        assert_state_at_is_the_documents(&mut a, change.deps());
        checked += 1;
    }
    assert!(checked > 48);
}

/// The state at deps that name a writer's last op and ops it learned of
/// since (a merge, not one cached op): a third replica that holds
/// everything b wrote before a's ops arrive finds, for each of a's ops, the
/// document's state at its deps; all three replicas agree, and the state
/// each kept op by op (merging concurrent edits of one product, taking a
/// new entity as written) is its document's.
#[test]
fn the_state_at_merged_deps_is_the_documents_there() {
    let Team {
        mut a,
        mut b,
        owner,
        user,
        n1,
        n2,
        mut clock,
        version,
    } = team();
    let mut c = Replica::from_genesis(a.ops()[0].op.clone()).unwrap();
    for applied in &a.ops()[1..] {
        assert_eq!(c.apply(applied.op.clone(), NOW).applied.len(), 1);
    }
    let product = a.state().versions[&version].product.clone();
    // Writer `tag` edits the product both edit (`edit`), or creates one.
    let write =
        |r: &Replica, edit: bool, tag: &str, i: usize, key: &SecretKey, node: &SecretKey, t| {
            if edit {
                Action::ProductUpdate {
                    id: product.clone(),
                    description: format!("{tag} edit {i}"),
                }
            } else {
                Action::ProductCreate {
                    id: ctx(r, key, node.public(), t).new_id(0),
                    name: format!("{tag}-{i}"),
                    kind: ProductKind::Complex,
                    description: String::new(),
                    version: None,
                }
            }
        };
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    let mut learned = 0;
    for i in 0..30 {
        let t = clock.tick();
        let action = write(&b, i % 4 == 0, "b", i, &user, &n2, t);
        let (op, _) = act(&mut b, &user, n2.public(), t, action).unwrap();
        from_b.push(op);
        // a learns of b's ops a few at a time, late, and writes in between.
        if i % 3 == 2 {
            for op in &from_b[learned..from_b.len() - 1] {
                assert_eq!(a.apply(op.clone(), NOW).applied.len(), 1);
            }
            learned = from_b.len() - 1;
        }
        let t = clock.tick();
        // a edits the product b edits too, without seeing b's edit: the
        // replicas merge the two.
        let action = write(&a, i % 5 == 1, "a", i, &owner, &n1, t);
        let (op, _) = act(&mut a, &owner, n1.public(), t, action).unwrap();
        from_a.push(op);
    }
    for op in &from_b {
        assert_eq!(c.apply(op.clone(), NOW).applied.len(), 1);
    }
    let mut merged = 0;
    for op in from_a {
        let change = automerge::Change::from_bytes(op.body.change.clone()).unwrap();
        let deps = change.deps().to_vec();
        merged += usize::from(deps.len() > 1);
        assert_state_at_is_the_documents(&mut c, &deps);
        assert_eq!(c.apply(op.clone(), NOW).applied.len(), 1);
        b.apply(op, NOW);
    }
    for op in &from_b {
        a.apply(op.clone(), NOW);
    }
    assert!(merged >= 8, "only {merged} of a's ops named b's");
    assert_eq!(c.state(), a.state());
    assert_eq!(c.state(), b.state());
    // The typed state each kept op by op is its document's.
    for r in [&a, &b, &c] {
        assert_eq!(r.state(), &r.recompute_state());
    }
}

/// `r`'s typed state at `deps` is its document read whole at them.
fn assert_state_at_is_the_documents(r: &mut Replica, deps: &[automerge::ChangeHash]) {
    let full =
        shoal_protocol::doc::read_state(&shoal_protocol::doc::AtHeads::new(r.doc(), deps)).unwrap();
    assert_eq!(r.state_at(deps).unwrap(), full);
}

/// The causal past of a set of changes, walked over every change's deps.
fn walked_past(
    changes: &BTreeMap<automerge::ChangeHash, automerge::Change>,
    heads: &[automerge::ChangeHash],
) -> std::collections::BTreeSet<automerge::ChangeHash> {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = heads.to_vec();
    while let Some(h) = stack.pop() {
        if seen.insert(h) {
            stack.extend(changes[&h].deps().iter().copied());
        }
    }
    seen
}

/// A replica walks a concurrent op's causal past only down to the point
/// below which all of it is known to be past. With writers that see each
/// other's ops late, in both orders, and merge, the past it finds for every
/// op's deps and for its heads must be the whole walk's, also after a
/// restore from its store.
#[test]
fn the_causal_past_found_is_the_whole_walks() {
    let Team {
        mut a,
        mut b,
        owner,
        user,
        n1,
        n2,
        mut clock,
        ..
    } = team();
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    for round in 0..12 {
        for k in 0..1 + round % 3 {
            let (op, _) = new_product(&mut a, &owner, &n1, clock.tick(), &format!("a-{round}-{k}"));
            to_b.push(op);
        }
        for k in 0..1 + round % 2 {
            let (op, _) = new_product(&mut b, &user, &n2, clock.tick(), &format!("b-{round}-{k}"));
            to_a.push(op);
        }
        // Deliveries lag: a hears from b every round, b from a every third.
        for op in to_a.drain(..) {
            assert_eq!(a.apply(op, NOW).applied.len(), 1);
        }
        if round % 3 == 2 {
            for op in to_b.drain(..) {
                assert_eq!(b.apply(op, NOW).applied.len(), 1);
            }
        }
    }
    let restored = Replica::restore(
        &a.doc().save(),
        a.ops().iter().map(|x| x.op.clone()).collect(),
    )
    .unwrap();
    let mut checked = 0;
    for r in [&a, &b, &restored] {
        let changes: BTreeMap<automerge::ChangeHash, automerge::Change> = r
            .ops()
            .iter()
            .map(|x| {
                let c = automerge::Change::from_bytes(x.op.body.change.clone()).unwrap();
                (c.hash(), c)
            })
            .collect();
        let op_of: BTreeMap<automerge::ChangeHash, _> = r
            .ops()
            .iter()
            .map(|x| {
                let c = automerge::Change::from_bytes(x.op.body.change.clone()).unwrap();
                (c.hash(), x.op.hash())
            })
            .collect();
        let mut sets: Vec<Vec<automerge::ChangeHash>> =
            changes.values().map(|c| c.deps().to_vec()).collect();
        sets.push(r.doc().get_heads());
        for heads in sets {
            let mut want: Vec<_> = walked_past(&changes, &heads)
                .iter()
                .map(|h| op_of[h])
                .collect();
            want.sort();
            let mut got = r.past_ops(&heads);
            got.sort();
            assert_eq!(got, want, "the past of {heads:?}");
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}

/// Creates a complex product named `name` on `r`, applied there.
fn new_product(
    r: &mut Replica,
    author: &SecretKey,
    origin: &SecretKey,
    now: u64,
    name: &str,
) -> (Op, shoal_protocol::Report) {
    let id = ctx(r, author, origin.public(), 0).new_id(0);
    act(
        r,
        author,
        origin.public(),
        now,
        Action::ProductCreate {
            id,
            name: name.into(),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        },
    )
    .unwrap()
}

/// The document a replica holds, byte for byte as a document that only
/// applied the changes of its applied ops: what `prepare` and the judging of
/// a concurrent op wrote into the live document and rolled back left
/// nothing behind.
fn assert_only_applied_changes(r: &Replica) {
    // One change at a time, in the replica's order: a saved document lists
    // its changes in the order they were added.
    let mut fresh = automerge::Automerge::new();
    for a in r.ops() {
        let change = automerge::Change::from_bytes(a.op.body.change.clone()).unwrap();
        fresh.apply_changes([change]).unwrap();
    }
    assert_eq!(r.doc().get_heads(), fresh.get_heads());
    assert_eq!(r.doc().save(), fresh.save());
    assert_eq!(r.state(), &r.recompute_state());
}

#[test]
fn preparing_and_judging_concurrent_ops_leave_the_document_as_it_was() {
    let mut t = team();
    let saved = t.a.doc().save();
    let heads = t.a.doc().get_heads();
    // Prepared, never applied: a creation, an edit of an existing entity and
    // a refused action each leave the document as it was.
    let edit = Action::ProductUpdate {
        id: t.a.state().products.keys().next().unwrap().clone(),
        description: "edited".into(),
    };
    let made = create(&t.a, &t.owner, &t.n1, &t.version, &t.n2, "web");
    for action in [made, edit] {
        t.a.prepare(t.owner.public(), t.n1.public(), NOW, action)
            .unwrap();
        assert_eq!(t.a.doc().get_heads(), heads);
        assert_eq!(t.a.doc().save(), saved);
    }
    let bad = create(&t.a, &t.owner, &t.n1, "no-such-version", &t.n2, "web");
    assert!(
        t.a.prepare(t.owner.public(), t.n1.public(), NOW, bad)
            .is_err()
    );
    assert_eq!(t.a.doc().save(), saved);
    // Concurrent writes on both replicas, then exchanged: every op after the
    // first of each side is judged against its own causal past, its change
    // built isolated at its deps in the live document and rolled back.
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let t_a = t.clock.tick();
        xs.push(new_product(&mut t.a, &t.owner, &t.n1, t_a, &format!("a{i}")).0);
        let t_b = t.clock.tick();
        ys.push(new_product(&mut t.b, &t.user, &t.n2, t_b, &format!("b{i}")).0);
    }
    exchange(&mut t.a, &mut t.b, &xs, &ys);
    assert!(t.a.quarantine().is_empty(), "{:?}", t.a.quarantine());
    assert_eq!(t.a.ops().len(), t.b.ops().len());
    assert_eq!(t.a.state(), t.b.state());
    assert_only_applied_changes(&t.a);
    assert_only_applied_changes(&t.b);
    // And both go on writing changes the other accepts.
    let now = t.clock.tick();
    let (op, rep) = new_product(&mut t.b, &t.user, &t.n2, now, "after");
    assert_eq!(rep.applied.len(), 1);
    assert_eq!(t.a.apply(op, NOW).applied.len(), 1);
    assert_only_applied_changes(&t.a);
}

/// How a document's columns are held in memory (slabs split by local
/// splices, slabs of a loaded file, changes applied in bulk) must not leak
/// into the bytes it saves: every replica and every restart saves the same
/// document the same way.
#[test]
fn a_document_saves_the_same_bytes_however_it_was_built() {
    let (genesis, ops) = testkit::history(1_500);
    let mut live = Replica::from_genesis(genesis).unwrap();
    for op in ops {
        let rep = live.apply(op, 1_800_000_000_000);
        assert_eq!(rep.applied.len(), 1, "{rep:?}");
    }
    let saved = live.doc().save();

    let loaded = automerge::Automerge::load(&saved).unwrap();
    assert_eq!(loaded.save(), saved, "loaded and saved again");

    let changes = live.doc().get_changes(&[]);
    assert_eq!(changes.len(), live.ops().len());
    let mut bulk = automerge::Automerge::new();
    bulk.apply_changes(changes).unwrap();
    assert_eq!(bulk.save(), saved, "changes applied in bulk");
}
