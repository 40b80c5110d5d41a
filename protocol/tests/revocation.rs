#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Revocation wins: an op whose author lost the right it uses through a
//! concurrent op is void on every replica, in every arrival order.

use shoal_protocol::hlc::Hlc;
use shoal_protocol::model::{InviteKind, Role};
use shoal_protocol::replica::Rejection;
use shoal_protocol::replica::join_proof_message;
use shoal_protocol::testkit::{act, genesis, invite_and_join, key, new_member, sign_op};
use shoal_protocol::{Action, Op, OpHash, Replica};

const T0: u64 = 1_700_000_000_000;

struct Team {
    genesis: Op,
    ops: Vec<Op>,
    r: Replica,
}

/// Owner, and admins bob (key 2) and carol (key 3), all on node key 10.
fn team() -> Team {
    let (owner, node) = (key(1), key(10));
    let g = genesis(&owner, &node, T0);
    let mut r = Replica::from_genesis(g.clone()).unwrap();
    let mut ops = Vec::new();
    ops.extend(
        invite_and_join(
            &mut r,
            &owner,
            node.public(),
            &key(2),
            "bob",
            Role::Admin,
            None,
            T0 + 10,
        )
        .unwrap(),
    );
    ops.extend(
        invite_and_join(
            &mut r,
            &owner,
            node.public(),
            &key(3),
            "carol",
            Role::Admin,
            None,
            T0 + 20,
        )
        .unwrap(),
    );
    Team { genesis: g, ops, r }
}

fn replay(t: &Team, tail: &[&Op]) -> Replica {
    let mut r = Replica::from_genesis(t.genesis.clone()).unwrap();
    for o in t.ops.iter().chain(tail.iter().copied()) {
        r.apply(o.clone(), T0 + 1_000_000);
    }
    r
}

/// Applies `base` then `a` and `b` in both orders; both replicas must end
/// identical, with `void` quarantined as voided by `by`.
fn both_orders(t: &Team, a: &Op, b: &Op, void: &Op, by: OpHash) -> Replica {
    let r1 = replay(t, &[a, b]);
    let r2 = replay(t, &[b, a]);
    for r in [&r1, &r2] {
        assert!(r.op(&void.hash()).is_none(), "the void op applied");
        assert_eq!(
            r.quarantine().get(&void.hash()).map(|q| q.reason.clone()),
            Some(Rejection::Voided { by })
        );
        assert_eq!(r.state(), &r.recompute_state());
    }
    assert_eq!(r1.heads(), r2.heads());
    assert_eq!(r1.state(), r2.state());
    r1
}

#[test]
fn a_removed_admins_backdated_admin_invite_is_void_in_any_order() {
    let mut t = team();
    let (owner, bob, node) = (key(1), key(2), key(10).public());
    let id = t.r.next_context(bob.public(), node, T0 + 100).new_id(0);
    let backdated = sign_op(
        &mut t.r,
        &bob,
        node,
        T0 + 100,
        Action::InviteCreate {
            id,
            kind: InviteKind::Member { role: Role::Admin },
            invite_key: key(50).public(),
            expires: Hlc::new(T0 + 86_400_000, 0),
        },
    )
    .unwrap();
    let (removal, _) = act(
        &mut t.r,
        &owner,
        node,
        T0 + 200,
        Action::MemberRemove {
            member: bob.public(),
        },
    )
    .unwrap();
    let r = both_orders(&t, &removal, &backdated, &backdated, removal.hash());
    assert!(
        r.state()
            .invites
            .values()
            .all(|i| i.created_by != bob.public().to_hex()
                || i.kind != InviteKind::Member { role: Role::Admin }
                || i.expires < Hlc::new(T0 + 1000, 0))
    );
}

#[test]
fn a_demoted_admins_role_change_is_void_in_any_order() {
    let mut t = team();
    let (owner, bob, carol, node) = (key(1), key(2), key(3), key(10).public());
    let demote_carol = sign_op(
        &mut t.r,
        &bob,
        node,
        T0 + 100,
        Action::MemberRole {
            member: carol.public(),
            role: Role::User,
        },
    )
    .unwrap();
    let (demote_bob, _) = act(
        &mut t.r,
        &owner,
        node,
        T0 + 200,
        Action::MemberRole {
            member: bob.public(),
            role: Role::User,
        },
    )
    .unwrap();
    let r = both_orders(
        &t,
        &demote_bob,
        &demote_carol,
        &demote_carol,
        demote_bob.hash(),
    );
    assert_eq!(
        r.state().members[&carol.public().to_hex()].role,
        Role::Admin
    );
    assert_eq!(r.state().members[&bob.public().to_hex()].role, Role::User);
}

#[test]
fn an_invite_dies_with_its_creators_right() {
    let mut t = team();
    let (owner, bob, node) = (key(1), key(2), key(10).public());
    let invite_key = key(60);
    let id = t.r.next_context(bob.public(), node, T0 + 100).new_id(0);
    let (invite, _) = act(
        &mut t.r,
        &bob,
        node,
        T0 + 100,
        Action::InviteCreate {
            id: id.clone(),
            kind: InviteKind::Member { role: Role::User },
            invite_key: invite_key.public(),
            expires: Hlc::new(T0 + 86_400_000, 0),
        },
    )
    .unwrap();
    t.ops.push(invite);
    let dave = key(4);
    let proof = invite_key.sign(&join_proof_message(&t.r.team(), &id, &dave.public()));
    let join_action = Action::MemberJoin {
        invite: id,
        member: Box::new(new_member(&dave, "dave")),
        node: None,
        proof,
    };
    // Made before the creator's removal: concurrent with it, so void.
    let join = sign_op(&mut t.r, &dave, node, T0 + 150, join_action.clone()).unwrap();
    let (removal, _) = act(
        &mut t.r,
        &owner,
        node,
        T0 + 200,
        Action::MemberRemove {
            member: bob.public(),
        },
    )
    .unwrap();
    both_orders(&t, &removal, &join, &join, removal.hash());
    // After the removal the ticket is refused at once.
    assert!(sign_op(&mut t.r, &dave, node, T0 + 300, join_action).is_err());
}

#[test]
fn of_two_admins_removing_each_other_the_earlier_removal_stands() {
    let mut t = team();
    let (bob, carol, node) = (key(2), key(3), key(10).public());
    let x = sign_op(
        &mut t.r,
        &bob,
        node,
        T0 + 100,
        Action::MemberRemove {
            member: carol.public(),
        },
    )
    .unwrap();
    let y = sign_op(
        &mut t.r,
        &carol,
        node,
        T0 + 200,
        Action::MemberRemove {
            member: bob.public(),
        },
    )
    .unwrap();
    let r = both_orders(&t, &x, &y, &y, x.hash());
    assert!(r.op(&x.hash()).is_some());
    assert!(r.state().member(&carol.public().to_hex()).is_none());
    assert!(r.state().member(&bob.public().to_hex()).is_some());
}

/// A removed admin who backdates (an admin invite and a demotion of another
/// admin, on deps from before the removal) and forks its log at one seq,
/// racing its removal: under reordering, duplication and loss every replica
/// ends identical and the removed admin keeps no right.
#[test]
fn a_hostile_removed_admin_backdating_and_forking_gains_nothing_anywhere() {
    let mut t = team();
    let (owner, bob, carol, node) = (key(1), key(2), key(3), key(10).public());
    let invite = |n: u8| Action::InviteCreate {
        id: t.r.next_context(bob.public(), node, T0 + 100).new_id(0),
        kind: InviteKind::Member { role: Role::Admin },
        invite_key: key(n).public(),
        expires: Hlc::new(T0 + 86_400_000, 0),
    };
    let (i1, i2) = (invite(70), invite(71));
    // Three ops at one seq of bob's log, all on deps before the removal.
    let f1 = sign_op(&mut t.r, &bob, node, T0 + 100, i1).unwrap();
    let f2 = sign_op(&mut t.r, &bob, node, T0 + 101, i2).unwrap();
    let demote = sign_op(
        &mut t.r,
        &bob,
        node,
        T0 + 102,
        Action::MemberRole {
            member: carol.public(),
            role: Role::User,
        },
    )
    .unwrap();
    assert_eq!(f1.body.seq, demote.body.seq);
    let (removal, _) = act(
        &mut t.r,
        &owner,
        node,
        T0 + 200,
        Action::MemberRemove {
            member: bob.public(),
        },
    )
    .unwrap();
    let (honest, _) = act(
        &mut t.r,
        &carol,
        node,
        T0 + 300,
        Action::TeamUpdate {
            name: "still-here".into(),
            description: String::new(),
        },
    )
    .unwrap();
    let pool = [removal, honest.clone(), f1, f2, demote];
    let mut seed = 7u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let mut prints = Vec::new();
    for _ in 0..24 {
        let mut r = replay(&t, &[]);
        let mut order: Vec<&Op> = pool.iter().collect();
        for i in (1..order.len()).rev() {
            order.swap(i, next() % (i + 1));
        }
        // Loss: some ops are dropped at first and come again later, with
        // duplicates.
        let (first, later): (Vec<&Op>, Vec<&Op>) = order.iter().partition(|_| next() % 3 != 0);
        for o in first.iter().chain(&later).chain(&first) {
            r.apply((*o).clone(), T0 + 1_000_000);
        }
        let s = r.state();
        assert!(
            s.member(&bob.public().to_hex()).is_none(),
            "bob kept a right"
        );
        assert_eq!(s.members[&carol.public().to_hex()].role, Role::Admin);
        assert!(
            s.invites
                .values()
                .all(|i| i.created_by != bob.public().to_hex())
        );
        assert!(r.op(&honest.hash()).is_some());
        assert_eq!(r.state(), &r.recompute_state());
        let applied: std::collections::BTreeSet<OpHash> = r.ops().iter().map(|a| a.hash).collect();
        prints.push((r.heads(), applied, r.state().clone()));
    }
    assert!(prints.windows(2).all(|w| w[0] == w[1]));
}

/// Two revocations can revoke each other through what they build on: carol
/// removes bob after seeing an op of dave's, while bob, not having seen it,
/// removes dave. Bob's removal voids dave's op and so carol's removal, which
/// depends on it; carol's removal voids bob's. The earlier stands, whichever
/// a replica saw first.
#[test]
fn revocations_that_revoke_each_other_through_a_dependency_resolve_alike_in_any_order() {
    let mut t = team();
    let (owner, bob, carol, dave, node) = (key(1), key(2), key(3), key(4), key(10).public());
    t.ops.extend(
        invite_and_join(
            &mut t.r,
            &owner,
            node,
            &dave,
            "dave",
            Role::User,
            None,
            T0 + 30,
        )
        .unwrap(),
    );
    let mut seen = replay(&t, &[]);
    let id = shoal_protocol::testkit::ctx(&seen, &dave, node, T0 + 150).new_id(0);
    let x = sign_op(
        &mut seen,
        &dave,
        node,
        T0 + 150,
        Action::ProductCreate {
            id,
            name: "dave-app".into(),
            kind: shoal_protocol::model::ProductKind::Complex,
            description: String::new(),
            version: None,
        },
    )
    .unwrap();
    assert_eq!(seen.apply(x.clone(), T0 + 1_000_000).applied.len(), 1);
    let by_carol = sign_op(
        &mut seen,
        &carol,
        node,
        T0 + 300,
        Action::MemberRemove {
            member: bob.public(),
        },
    )
    .unwrap();
    let by_bob = sign_op(
        &mut t.r,
        &bob,
        node,
        T0 + 200,
        Action::MemberRemove {
            member: dave.public(),
        },
    )
    .unwrap();
    let orders: [[&Op; 3]; 3] = [
        [&x, &by_carol, &by_bob],
        [&x, &by_bob, &by_carol],
        [&by_bob, &x, &by_carol],
    ];
    let replicas: Vec<Replica> = orders.iter().map(|o| replay(&t, o)).collect();
    for r in &replicas {
        assert!(r.op(&by_bob.hash()).is_some(), "the earlier removal stands");
        for void in [&x, &by_carol] {
            assert_eq!(
                r.quarantine().get(&void.hash()).map(|q| q.reason.clone()),
                Some(Rejection::Voided { by: by_bob.hash() })
            );
        }
        assert_eq!(r.state(), &r.recompute_state());
        assert!(r.state().member(&dave.public().to_hex()).is_none());
        assert!(r.state().member(&bob.public().to_hex()).is_some());
    }
    assert_eq!(replicas[0].heads(), replicas[1].heads());
    assert_eq!(replicas[0].heads(), replicas[2].heads());
    assert_eq!(replicas[0].state(), replicas[2].state());
}
