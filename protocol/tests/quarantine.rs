#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The quarantine: only authentic refused ops are kept, bounded per author
//! and per team, restored from what a store kept, and purged by an admin.

use shoal_protocol::replica::{
    QUARANTINE_MAX_BYTES_PER_AUTHOR, QUARANTINE_MAX_OPS, QUARANTINE_MAX_OPS_PER_AUTHOR,
    QuarantineEntry, quarantine_overflow,
};
use shoal_protocol::testkit::{Clock, act, genesis, key, sign_op};
use shoal_protocol::{Action, Hlc, OpHash, Rejection, Replica};

fn entry(author: u8, n: u8, ms: u64, bytes: usize) -> QuarantineEntry {
    QuarantineEntry {
        hash: OpHash([n; 32]),
        author: key(author).public(),
        hlc: Hlc { ms, c: 0 },
        bytes,
    }
}

#[test]
fn overflow_drops_the_oldest_of_the_author_over_its_bounds() {
    // Within every bound: nothing goes.
    assert!(quarantine_overflow(&[entry(1, 1, 5, 10), entry(2, 2, 1, 10)]).is_empty());
    // One author over the count: its oldest go, another author's stay.
    let mut e: Vec<_> = (0..QUARANTINE_MAX_OPS_PER_AUTHOR + 2)
        .map(|i| entry(1, i as u8, 100 - i as u64, 1))
        .collect();
    e.push(entry(2, 200, 0, 1));
    let mut out = quarantine_overflow(&e);
    out.sort();
    let oldest = QUARANTINE_MAX_OPS_PER_AUTHOR as u8;
    assert_eq!(out, vec![OpHash([oldest; 32]), OpHash([oldest + 1; 32])]);
    // Over the bytes: the oldest goes until the rest fits.
    let half = QUARANTINE_MAX_BYTES_PER_AUTHOR / 2;
    let e = [
        entry(1, 1, 1, half),
        entry(1, 2, 2, half),
        entry(1, 3, 3, 2),
    ];
    assert_eq!(quarantine_overflow(&e), vec![OpHash([1; 32])]);
    // One op larger than the bound is not kept either.
    let e = [entry(1, 1, 1, QUARANTINE_MAX_BYTES_PER_AUTHOR + 1)];
    assert_eq!(quarantine_overflow(&e), vec![OpHash([1; 32])]);
}

#[test]
fn overflow_over_the_team_bound_takes_from_the_largest_author() {
    let per = QUARANTINE_MAX_OPS_PER_AUTHOR;
    let authors = QUARANTINE_MAX_OPS / per + 1;
    let mut e = Vec::new();
    for a in 0..authors {
        for i in 0..per {
            // Author 0 holds bigger ops than the others.
            let bytes = if a == 0 { 100 } else { 1 };
            e.push(QuarantineEntry {
                hash: OpHash([
                    a as u8, i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                ]),
                author: key(a as u8 + 1).public(),
                hlc: Hlc { ms: i as u64, c: 0 },
                bytes,
            });
        }
    }
    let out = quarantine_overflow(&e);
    assert_eq!(e.len() - out.len(), QUARANTINE_MAX_OPS);
    assert!(out.iter().all(|h| h.0[0] == 0), "{out:?}");
    // The oldest of that author went first.
    assert!(out.iter().all(|h| usize::from(h.0[1]) < out.len()));
}

#[test]
fn forged_ops_are_not_kept_refused_ones_are_restored_and_purged() {
    let (owner, node) = (key(1), key(2));
    let mut clock = Clock(1_000_000);
    let mut r = Replica::from_genesis(genesis(&owner, &node, clock.tick())).unwrap();
    let now = clock.0 + 1_000_000;
    let update = |d: &str| Action::TeamUpdate {
        name: "team".into(),
        description: d.into(),
    };
    // A bad signature: reported, not kept.
    let mut forged = sign_op(&mut r, &owner, node.public(), clock.tick(), update("x")).unwrap();
    forged.sig.0[0] ^= 1;
    let rep = r.apply(forged.clone(), now);
    assert_eq!(rep.rejected, vec![(forged.hash(), Rejection::BadSignature)]);
    assert!(r.quarantine().is_empty());
    // Authentic but refused (the action does not say what the change
    // does): kept.
    let mut body = r
        .prepare(owner.public(), node.public(), clock.tick(), update("y"))
        .unwrap();
    body.action = update("z");
    let refused = body.sign(&owner).unwrap();
    let rep = r.apply(refused.clone(), now);
    assert_eq!(rep.rejected.len(), 1);
    assert!(r.quarantine().contains_key(&refused.hash()));

    // Restored into a fresh replica of the same team, with a forged
    // entry an older release kept: the forged one is handed back.
    let mut again = Replica::from_genesis(r.ops()[0].op.clone()).unwrap();
    let stored = r
        .quarantine()
        .iter()
        .map(|(h, q)| (*h, q.reason.to_string(), q.op.encode()))
        .chain([(forged.hash(), "bad".to_string(), forged.encode())]);
    assert_eq!(again.restore_quarantine(stored), vec![forged.hash()]);
    assert_eq!(
        again.quarantine().keys().collect::<Vec<_>>(),
        vec![&refused.hash()]
    );
    assert_eq!(
        again.quarantine()[&refused.hash()].reason.to_string(),
        r.quarantine()[&refused.hash()].reason.to_string()
    );

    // A user may not purge; the owner may, and every replica drops it.
    let purge = Action::QuarantinePurge {
        ops: vec![refused.hash()],
    };
    let (_, rep) = act(&mut again, &owner, node.public(), clock.tick(), purge).unwrap();
    assert_eq!(rep.applied.len(), 1, "{rep:?}");
    assert!(again.quarantine().is_empty());
}
