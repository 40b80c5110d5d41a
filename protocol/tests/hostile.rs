//! Ops from hostile authors that are validly signed but carry a change their
//! action does not imply, clocks meant to stall everyone else, refused ops
//! followed by honest ones of the same log, and floods of waiting ops (§3.1).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use automerge::transaction::CommitOptions;
use automerge::{self as am, ExpandedChange, ReadDoc as _, legacy};
use shoal_protocol::action::Action;
use shoal_protocol::doc::write_entity;
use shoal_protocol::effect;
use shoal_protocol::hlc::{Hlc, MAX_COUNTER, MAX_FUTURE_MS};
use shoal_protocol::model::*;
use shoal_protocol::op::OP_VERSION;
use shoal_protocol::replica::Rejection;
use shoal_protocol::rules::RuleError;
use shoal_protocol::testkit::{self, Clock, act, ctx, invite_and_join, key, move_start, sign_op};
use shoal_protocol::{Op, OpBody, Replica, SecretKey};

const NOW: u64 = 1_800_000_000_000;

/// The owner on node n0 and an admin on node n1, both with a replica.
struct Team {
    genesis: Op,
    ops: Vec<Op>,
    main: Replica,
    owner: SecretKey,
    admin: SecretKey,
    n0: SecretKey,
    n1: SecretKey,
    clock: Clock,
}

fn team() -> Team {
    let (owner, admin, n0, n1) = (key(1), key(5), key(2), key(6));
    let mut clock = Clock(NOW - 3_600_000);
    let genesis = testkit::genesis(&owner, &n0, clock.tick());
    let mut main = Replica::from_genesis(genesis.clone()).unwrap();
    let ops = invite_and_join(
        &mut main,
        &owner,
        n0.public(),
        &admin,
        "admin",
        Role::Admin,
        Some((&n1, "n1", Runtime::Docker)),
        clock.tick(),
    )
    .unwrap();
    clock.tick();
    Team {
        genesis,
        ops,
        main,
        owner,
        admin,
        n0,
        n1,
        clock,
    }
}

impl Team {
    /// A fresh replica holding the history so far.
    fn replica(&self) -> Replica {
        let mut r = Replica::from_genesis(self.genesis.clone()).unwrap();
        for o in &self.ops {
            let rep = r.apply(o.clone(), NOW);
            assert!(rep.rejected.is_empty(), "{rep:?}");
        }
        r
    }

    /// Runs `action` on the main replica; it joins the history.
    fn run(&mut self, who: &SecretKey, origin: &SecretKey, action: Action) -> Op {
        let (op, rep) = act(
            &mut self.main,
            who,
            origin.public(),
            self.clock.tick(),
            action,
        )
        .unwrap();
        assert_eq!(rep.applied, vec![op.hash()], "{rep:?}");
        self.ops.push(op.clone());
        op
    }

    fn product(&self, who: &SecretKey, origin: &SecretKey, name: &str) -> Action {
        Action::ProductCreate {
            id: ctx(&self.main, who, origin.public(), 0).new_id(0),
            name: name.into(),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        }
    }
}

/// [`testkit::edit_change`], which cannot fail on an op the testkit made.
fn edit_change(op: &Op, author: &SecretKey, f: impl FnOnce(&mut ExpandedChange)) -> Op {
    testkit::edit_change(op, author, f).unwrap()
}

/// The legacy id of an object or op named by `id` in `doc`.
fn legacy_id(id: &am::ObjId) -> legacy::OpId {
    let text = id.to_string();
    let (ctr, actor) = text.split_once('@').unwrap();
    legacy::OpId(
        ctr.parse().unwrap(),
        am::ActorId::from(hex::decode(actor).unwrap()),
    )
}

fn member_obj(doc: &am::Automerge, member: &SecretKey) -> am::ObjId {
    let (_, members) = doc.get(am::ROOT, "members").unwrap().unwrap();
    let (_, m) = doc
        .get(&members, member.public().to_hex())
        .unwrap()
        .unwrap();
    m
}

fn refused(r: &Replica, op: &Op) -> Rejection {
    assert!(r.op(&op.hash()).is_none(), "the op was applied");
    match r.quarantine().get(&op.hash()) {
        Some(q) => q.reason.clone(),
        None => panic!(
            "the op is not in quarantine (pending: {})",
            r.pending().count()
        ),
    }
}

#[test]
fn a_start_op_near_the_counter_limit_is_refused_and_writers_go_on() {
    let mut t = team();
    let (admin, n1) = (t.admin.clone(), t.n1.clone());
    let action = t.product(&admin, &n1, "big");
    let honest = sign_op(&mut t.main, &admin, n1.public(), t.clock.tick(), action).unwrap();
    // Counters just below the limit (the next change would overflow), and
    // past it (automerge cannot even decode the change).
    let len = am::Change::from_bytes(honest.body.change.clone())
        .unwrap()
        .len() as u64;
    let near = edit_change(&honest, &admin, |e| {
        move_start(e, u64::from(u32::MAX) - len - 1)
    });
    let past = edit_change(&honest, &admin, |e| move_start(e, u64::from(u32::MAX) - 1));
    let mut r = t.replica();
    for forged in [&near, &past] {
        r.apply(forged.clone(), NOW);
        assert!(matches!(refused(&r, forged), Rejection::BadChange(_)));
    }
    let forged = near;
    // Everyone can still prepare and apply ops.
    let owner = t.owner.clone();
    let n0 = t.n0.clone();
    let action = t.product(&owner, &n0, "next");
    let (op, rep) = act(&mut r, &owner, n0.public(), NOW, action).unwrap();
    assert_eq!(rep.applied, vec![op.hash()]);
    t.main.apply(forged.clone(), NOW);
    assert!(t.main.op(&forged.hash()).is_none());
}

#[test]
fn a_pred_naming_an_unseen_removal_cannot_undo_it() {
    let mut t = team();
    let (admin, n1, owner, n0) = (t.admin.clone(), t.n1.clone(), t.owner.clone(), t.n0.clone());
    // The admin, not yet aware of its removal, sets its own role: a write
    // to its own member entry that the rules allow at that causal past.
    let mut past = t.replica();
    let own = Action::MemberRole {
        member: admin.public(),
        role: Role::Admin,
    };
    let honest = sign_op(&mut past, &admin, n1.public(), t.clock.tick(), own).unwrap();
    // The owner removes the admin.
    t.run(
        &owner,
        &n0,
        Action::MemberRemove {
            member: admin.public(),
        },
    );
    let member = member_obj(t.main.doc(), &admin);
    let (_, removal) = t.main.doc().get(&member, "removed").unwrap().unwrap();
    // The admin's change overwrites the removal it never saw.
    let forged = edit_change(&honest, &admin, |e| {
        e.operations.push(legacy::Op {
            action: legacy::OpType::Put(am::ScalarValue::Null),
            obj: legacy::ObjectId::Id(legacy_id(&member)),
            key: legacy::Key::Map("removed".into()),
            pred: vec![legacy_id(&removal)].into(),
            insert: false,
        });
    });
    for first in [false, true] {
        let mut r = Replica::from_genesis(t.genesis.clone()).unwrap();
        if first {
            r.apply(forged.clone(), NOW);
        }
        for o in &t.ops {
            r.apply(o.clone(), NOW);
        }
        r.apply(forged.clone(), NOW);
        refused(&r, &forged);
        let m = &r.state().members[&admin.public().to_hex()];
        assert!(m.removed.is_some(), "the removal was undone");
        assert_eq!(r.state(), t.main.state());
    }
}

#[test]
fn a_key_the_action_does_not_name_inside_a_named_entity_is_refused() {
    let mut t = team();
    let (owner, n0) = (t.owner.clone(), t.n0.clone());
    let action = Action::TeamUpdate {
        name: "renamed".into(),
        description: String::new(),
    };
    let honest = sign_op(&mut t.main, &owner, n0.public(), t.clock.0 + 1, action).unwrap();
    let (_, team) = t.main.doc().get(am::ROOT, "team").unwrap().unwrap();
    let (_, info) = t.main.doc().get(&team, TEAM_INFO_ID).unwrap().unwrap();
    let forged = edit_change(&honest, &owner, |e| {
        e.operations.push(legacy::Op {
            action: legacy::OpType::Put(am::ScalarValue::Str("x".into())),
            obj: legacy::ObjectId::Id(legacy_id(&info)),
            key: legacy::Key::Map("smuggled".into()),
            pred: Vec::new().into(),
            insert: false,
        });
    });
    let mut r = t.replica();
    r.apply(forged.clone(), NOW);
    let reason = refused(&r, &forged);
    assert!(
        matches!(
            &reason,
            Rejection::EffectMismatch {
                collection: Collection::Team,
                ..
            }
        ),
        "{reason:?}"
    );
    assert!(r.doc().get(&info, "smuggled").unwrap().is_none());
    // The honest op still applies.
    let rep = r.apply(honest.clone(), NOW);
    assert_eq!(rep.applied, vec![honest.hash()]);
}

#[test]
fn an_honest_concurrent_op_is_reconstructed_at_its_own_deps() {
    let mut t = team();
    let (owner, n0, admin, n1) = (t.owner.clone(), t.n0.clone(), t.admin.clone(), t.n1.clone());
    let mut b = t.replica();
    // Both write concurrently, several times, then exchange.
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..3 {
        mine.push(t.run(&owner, &n0, t.product(&owner, &n0, &format!("a{i}"))));
        let action = Action::ProductCreate {
            id: ctx(&b, &admin, n1.public(), 0).new_id(0),
            name: format!("b{i}"),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        };
        let (op, rep) = act(&mut b, &admin, n1.public(), t.clock.tick(), action).unwrap();
        assert_eq!(rep.applied.len(), 1);
        theirs.push(op);
    }
    for o in &theirs {
        let rep = t.main.apply(o.clone(), NOW);
        assert_eq!(rep.applied, vec![o.hash()], "{rep:?}");
    }
    for o in &mine {
        let rep = b.apply(o.clone(), NOW);
        assert_eq!(rep.applied, vec![o.hash()], "{rep:?}");
    }
    assert_eq!(t.main.heads(), b.heads());
    assert_eq!(t.main.state(), b.state());
    // A change forged at a concurrent past is refused there too.
    let action = t.product(&admin, &n1, "late");
    let late = sign_op(&mut b, &admin, n1.public(), t.clock.tick(), action).unwrap();
    let forged = edit_change(&late, &admin, |e| {
        let s = e.start_op.get();
        move_start(e, s + 1);
    });
    let mut r = t.replica();
    for o in mine.iter().chain(&theirs) {
        r.apply(o.clone(), NOW);
    }
    r.apply(forged.clone(), NOW);
    assert!(matches!(refused(&r, &forged), Rejection::BadChange(_)));
}

/// The op `prepare` would make for `action` on `r` if the clock said `hlc`.
fn with_clock(r: &Replica, who: &SecretKey, origin: &SecretKey, hlc: Hlc, action: Action) -> Op {
    let mut ctx = r.next_context(who.public(), origin.public(), hlc.ms);
    ctx.hlc = hlc;
    let writes = effect::effect(r.state(), &ctx, &action);
    forged(r, who, origin, hlc, action, &writes)
}

/// A validly signed op of `who` that writes `writes` for `action`, made
/// without the rules `prepare` runs.
fn forged(
    r: &Replica,
    who: &SecretKey,
    origin: &SecretKey,
    hlc: Hlc,
    action: Action,
    writes: &[effect::Write],
) -> Op {
    let ctx = r.next_context(who.public(), origin.public(), hlc.ms);
    let log = ctx.log();
    let mut doc = r.doc().fork();
    doc.set_actor(log.actor());
    let mut tx = doc.transaction();
    for w in writes {
        write_entity(&mut tx, w.collection, &w.id, w.value.as_ref()).unwrap();
    }
    tx.commit_with(CommitOptions::default().with_time(hlc.ms as i64));
    let change = doc.get_last_local_change().unwrap();
    let body = OpBody {
        version: OP_VERSION,
        team: Some(r.team()),
        author: who.public(),
        origin: origin.public(),
        seq: ctx.seq,
        prev: r.log_op(&log, ctx.seq - 1).map(|a| a.hash),
        hlc,
        action,
        change: change.raw_bytes().to_vec(),
    };
    body.sign(who).unwrap()
}

#[test]
fn a_clock_at_the_counter_limit_does_not_stall_honest_writers() {
    let t = team();
    let (admin, n1, owner, n0) = (t.admin.clone(), t.n1.clone(), t.owner.clone(), t.n0.clone());
    let soon = NOW + MAX_FUTURE_MS - 60_000;
    // Past the bound: refused everywhere.
    let action = t.product(&admin, &n1, "max");
    let max = with_clock(&t.main, &admin, &n1, Hlc::new(soon, u32::MAX), action);
    // At the bound: valid, and honest clocks move past it.
    let action = t.product(&admin, &n1, "bound");
    let bound = with_clock(&t.main, &admin, &n1, Hlc::new(soon, MAX_COUNTER), action);
    let mut a = t.replica();
    let mut b = t.replica();
    for r in [&mut a, &mut b] {
        let rep = r.apply(max.clone(), NOW);
        assert_eq!(
            rep.rejected,
            vec![(max.hash(), Rejection::Counter(u32::MAX))]
        );
        let rep = r.apply(bound.clone(), NOW);
        assert_eq!(rep.applied, vec![bound.hash()], "{rep:?}");
    }
    // Honest writers on both replicas keep writing, and each other's ops apply.
    for i in 0..3 {
        let action = Action::ProductCreate {
            id: ctx(&a, &owner, n0.public(), 0).new_id(0),
            name: format!("a{i}"),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        };
        let (op, rep) = act(&mut a, &owner, n0.public(), NOW + i, action).unwrap();
        assert_eq!(rep.applied, vec![op.hash()], "{rep:?}");
        assert!(op.body.hlc > bound.body.hlc);
        let rep = b.apply(op.clone(), NOW + i);
        assert_eq!(rep.applied, vec![op.hash()], "{rep:?}");
    }
    assert_eq!(a.state(), b.state());
}

#[test]
fn a_refused_op_poisons_only_the_ops_that_depend_on_it() {
    let mut t = team();
    let (admin, n1) = (t.admin.clone(), t.n1.clone());
    t.run(&admin, &n1, t.product(&admin, &n1, "first"));
    // An authentic but invalid op at the log's next seq: it names no `prev`.
    let action = t.product(&admin, &n1, "bad");
    let mut body = t
        .main
        .prepare(admin.public(), n1.public(), t.clock.tick(), action)
        .unwrap();
    body.prev = None;
    let bad = body.sign(&admin).unwrap();
    // An op that builds on the invalid one.
    let mut on_bad = with_clock(
        &t.main,
        &admin,
        &n1,
        Hlc::new(t.clock.tick(), 0),
        t.product(&admin, &n1, "on-bad"),
    )
    .body;
    on_bad.seq = bad.body.seq + 1;
    on_bad.prev = Some(bad.hash());
    let mut e = am::Change::from_bytes(on_bad.change.clone())
        .unwrap()
        .decode();
    e.seq = on_bad.seq;
    e.hash = None;
    on_bad.change = am::Change::from(e).raw_bytes().to_vec();
    let on_bad = on_bad.sign(&admin).unwrap();
    // The valid op at the same seq, and the next one naming it.
    let good = t.run(&admin, &n1, t.product(&admin, &n1, "good"));
    let next = t.run(&admin, &n1, t.product(&admin, &n1, "next"));
    assert_eq!((good.body.seq, bad.body.seq), (bad.body.seq, good.body.seq));
    for order in [
        [&bad, &on_bad, &good, &next],
        [&on_bad, &bad, &next, &good],
        [&next, &on_bad, &good, &bad],
    ] {
        let mut r = Replica::from_genesis(t.genesis.clone()).unwrap();
        for o in &t.ops[..t.ops.len() - 2] {
            r.apply(o.clone(), NOW);
        }
        for o in order {
            r.apply(o.clone(), NOW);
        }
        // Once the valid op is in, the invalid one is also a fork.
        let reason = refused(&r, &bad);
        assert!(
            matches!(reason, Rejection::Chain(_) | Rejection::Fork { .. }),
            "{reason:?}"
        );
        let reason = refused(&r, &on_bad);
        assert!(
            matches!(reason, Rejection::DependsOnRejected | Rejection::Chain(_)),
            "{reason:?}"
        );
        assert!(
            r.op(&good.hash()).is_some(),
            "the valid op at that seq applies"
        );
        assert!(r.op(&next.hash()).is_some(), "the op naming it applies");
        assert_eq!(r.pending().count(), 0);
        assert_eq!(r.state(), t.main.state());
    }
}

/// A validly signed op of (`author`, `origin`) at `seq` that waits: its
/// log's earlier ops never arrive. `pad` bytes of description make it big.
fn waiting_op(team: &Replica, author: &SecretKey, origin: &SecretKey, seq: u64, pad: usize) -> Op {
    let log = shoal_protocol::keys::LogId {
        author: author.public(),
        origin: origin.public(),
    };
    let hlc = Hlc::new(NOW - 1000, 0);
    let change = ExpandedChange {
        operations: Vec::new(),
        actor_id: log.actor(),
        hash: None,
        seq,
        start_op: std::num::NonZeroU64::new(1).unwrap(),
        time: hlc.ms as i64,
        message: None,
        deps: Vec::new(),
        extra_bytes: Vec::new(),
        author: None,
    };
    let body = OpBody {
        version: OP_VERSION,
        team: Some(team.team()),
        author: author.public(),
        origin: origin.public(),
        seq,
        prev: None,
        hlc,
        action: Action::ProductCreate {
            id: format!("p{seq}"),
            name: format!("p{seq}"),
            kind: ProductKind::Complex,
            description: "x".repeat(pad),
            version: None,
        },
        change: am::Change::from(change).raw_bytes().to_vec(),
    };
    body.sign(author).unwrap()
}

#[test]
fn waiting_ops_are_bounded_per_log_and_in_total() {
    use shoal_protocol::replica::{MAX_PENDING, MAX_PENDING_BYTES_PER_LOG, MAX_PENDING_PER_LOG};
    let mut t = team();
    let mut r = t.replica();
    let n1 = t.n1.clone();
    let pending_of = |r: &Replica, who: &SecretKey| {
        r.pending()
            .filter(|(_, o)| o.body.author == who.public())
            .count()
    };
    // One log: the oldest waiting ops make way.
    let flooder = key(200);
    let ops: Vec<Op> = (2..MAX_PENDING_PER_LOG as u64 + 7)
        .map(|seq| waiting_op(&r, &flooder, &n1, seq, 0))
        .collect();
    let mut dropped = Vec::new();
    for o in &ops {
        let rep = r.apply(o.clone(), NOW);
        assert!(rep.rejected.is_empty() && rep.applied.is_empty(), "{rep:?}");
        dropped.extend(rep.dropped);
    }
    assert_eq!(pending_of(&r, &flooder), MAX_PENDING_PER_LOG);
    let oldest: Vec<_> = ops[..5].iter().map(Op::hash).collect();
    assert_eq!(dropped, oldest);
    assert!(!r.has(&oldest[0]) && r.has(&ops[5].hash()));
    // Bytes of one log.
    let big = key(201);
    let pad = MAX_PENDING_BYTES_PER_LOG / 4;
    for seq in 2..8 {
        r.apply(waiting_op(&r, &big, &n1, seq, pad), NOW);
    }
    let held: usize = r
        .pending()
        .filter(|(_, o)| o.body.author == big.public())
        .map(|(_, o)| o.encode().len())
        .sum();
    assert!(held <= MAX_PENDING_BYTES_PER_LOG, "{held}");
    assert_eq!(pending_of(&r, &big), 3);
    // In total, over many logs.
    for k in 0..(MAX_PENDING / MAX_PENDING_PER_LOG) as u8 + 1 {
        let who = key(210 + k);
        for seq in 2..MAX_PENDING_PER_LOG as u64 + 2 {
            r.apply(waiting_op(&r, &who, &n1, seq, 0), NOW);
        }
    }
    assert_eq!(r.pending().count(), MAX_PENDING);
    assert_eq!(pending_of(&r, &flooder), 0, "the oldest went first");
    // Honest ops still apply, and an honest op that waits is applied when
    // what it waits for arrives.
    let (owner, n0) = (t.owner.clone(), t.n0.clone());
    let first = t.run(&owner, &n0, t.product(&owner, &n0, "one"));
    let second = t.run(&owner, &n0, t.product(&owner, &n0, "two"));
    let rep = r.apply(second.clone(), NOW);
    assert_eq!(rep.waiting.len(), 1, "{rep:?}");
    let rep = r.apply(first.clone(), NOW);
    assert_eq!(rep.applied, vec![first.hash(), second.hash()], "{rep:?}");
    assert_eq!(r.state(), t.main.state());
}

#[test]
fn metadata_updates_apply_everywhere_and_outsiders_or_smuggled_images_are_refused() {
    let mut t = team();
    let (owner, n0, admin, n1) = (t.owner.clone(), t.n0.clone(), t.admin.clone(), t.n1.clone());
    let create = t.product(&owner, &n0, "web");
    let Action::ProductCreate { id: product, .. } = &create else {
        unreachable!()
    };
    let product = product.clone();
    t.run(&owner, &n0, create);
    let version = ctx(&t.main, &admin, n1.public(), 0).new_id(0);
    t.run(
        &admin,
        &n1,
        Action::VersionCreate {
            id: version.clone(),
            product: product.clone(),
            name: "1.0.0".into(),
            kind: VersionKind::Incremental,
            changelog: String::new(),
            auto_copy: false,
        },
    );
    let describe = Action::ProductUpdate {
        id: product.clone(),
        description: "the shop".into(),
    };
    let note = Action::VersionUpdate {
        id: version.clone(),
        changelog: Some("first cut".into()),
        auto_copy: Some(true),
    };
    // Prepared and applied here (`run` asserts it applied), then accepted
    // by a replica that only sees the ops.
    t.run(&admin, &n1, describe.clone());
    t.run(&owner, &n0, note);
    let r = t.replica();
    for s in [t.main.state(), r.state()] {
        assert_eq!(s.products[&product].description, "the shop");
        assert_eq!(s.versions[&version].changelog, "first cut");
        assert!(s.versions[&version].auto_copy);
    }
    assert_eq!(r.state(), t.main.state());
    // Someone outside the team is refused when preparing, and a signed op of
    // theirs is refused by every replica.
    let outsider = key(77);
    let err = sign_op(
        &mut t.main,
        &outsider,
        n0.public(),
        t.clock.0 + 1,
        describe.clone(),
    );
    assert!(
        matches!(
            err,
            Err(shoal_protocol::replica::PrepareError::Rule(
                RuleError::NotMember { .. }
            ))
        ),
        "{err:?}"
    );
    let hlc = Hlc::new(t.clock.0 + 1, 0);
    let note = Action::VersionUpdate {
        id: version.clone(),
        changelog: Some("defaced".into()),
        auto_copy: None,
    };
    let op = with_clock(&t.main, &outsider, &n0, hlc, note);
    let mut r = t.replica();
    r.apply(op.clone(), NOW);
    assert!(
        matches!(
            refused(&r, &op),
            Rejection::Rule(RuleError::NotMember { .. })
        ),
        "{:?}",
        refused(&r, &op)
    );
    // A version update changes metadata only: one that also writes an image
    // does not do what it says and is refused.
    let mut v = t.main.state().versions[&version].clone();
    v.changelog = "second cut".into();
    v.images.push(Image {
        name: "smuggled".into(),
        image: ImageRef {
            registry: HUB_REGISTRY_ID.into(),
            name: "evil".into(),
            tag: "1".into(),
        },
        config: ContainerConfig::default(),
    });
    let writes = vec![effect::Write {
        collection: Collection::Versions,
        id: version.clone(),
        value: Some(Entity::Version(v)),
    }];
    let action = Action::VersionUpdate {
        id: version.clone(),
        changelog: Some("second cut".into()),
        auto_copy: None,
    };
    let op = forged(&t.main, &admin, &n1, hlc, action, &writes);
    let mut r = t.replica();
    r.apply(op.clone(), NOW);
    assert!(
        matches!(refused(&r, &op), Rejection::EffectMismatch { .. }),
        "{:?}",
        refused(&r, &op)
    );
    assert!(r.state().versions[&version].images.is_empty());
}
