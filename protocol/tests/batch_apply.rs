//! The vendored automerge's batch apply skips the keys of a large map that
//! a change leaves alone (`MapWalker::skip_to`, vendor/automerge/PATCHES.md)
//! instead of walking them. Where it puts each op must not change: a
//! document that takes changes as remote ones holds, op for op, the op set
//! of the one that made them, and replicas that take the same changes in
//! any order hold the same op set. (Debug builds also check the op order
//! after every batch apply.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::Transactable as _;
use automerge::{self as am, ActorId, ROOT, ReadDoc as _};
use proptest::prelude::*;
use shoal_protocol::testkit::Rng;

/// A random map key.
fn key(rng: &mut Rng) -> String {
    format!("{:08x}", rng.next_u64() as u32)
}

/// A document with a map `m` of `n` keys, each holding a small map.
fn base(n: usize, rng: &mut Rng) -> (am::Automerge, am::ObjId, Vec<String>) {
    let mut d = am::Automerge::new();
    d.set_actor(ActorId::from(vec![0xa0; 16]));
    let mut keys = Vec::new();
    let mut tx = d.transaction();
    let m = tx.put_object(ROOT, "m", am::ObjType::Map).unwrap();
    for _ in 0..n {
        let k = key(rng);
        let e = tx.put_object(&m, k.as_str(), am::ObjType::Map).unwrap();
        tx.put(&e, "v", 1_i64).unwrap();
        keys.push(k);
    }
    tx.commit();
    (d, m, keys)
}

/// `commits` local changes on a fork of `doc` by `actor`: new keys (a map
/// each, as a create writes an entity), and, when `edits`, some overwrites
/// and deletes of existing keys. Returns the fork and its new changes.
fn writer(
    doc: &am::Automerge,
    m: &am::ObjId,
    keys: &[String],
    actor: u8,
    commits: usize,
    edits: bool,
    rng: &mut Rng,
) -> (am::Automerge, Vec<am::Change>) {
    let mut d = doc.fork();
    d.set_actor(ActorId::from(vec![actor; 16]));
    let before = d.get_heads();
    for _ in 0..commits {
        let mut tx = d.transaction();
        for _ in 0..1 + rng.below(3) {
            let k = key(rng);
            let e = tx.put_object(m, k.as_str(), am::ObjType::Map).unwrap();
            tx.put(&e, "v", rng.below(100) as i64).unwrap();
            tx.put(&e, "w", "x").unwrap();
        }
        if edits && !keys.is_empty() {
            let k = &keys[rng.below(keys.len())];
            match rng.below(3) {
                0 => tx.delete(m, k.as_str()).unwrap(),
                _ => tx.put(m, k.as_str(), rng.below(100) as i64).unwrap(),
            }
        }
        tx.commit();
    }
    let changes = d.get_changes(&before);
    (d, changes)
}

fn apply_one_by_one(doc: &am::Automerge, changes: &[am::Change]) -> am::Automerge {
    let mut d = doc.clone();
    for c in changes {
        d.apply_changes([c.clone()]).unwrap();
    }
    d
}

fn check(seed: u64, n: usize, edits: bool) {
    let mut rng = Rng(seed);
    let (doc, m, keys) = base(n, &mut rng);
    let (x, xs) = writer(&doc, &m, &keys, 0xb1, 1 + rng.below(6), edits, &mut rng);
    let (y, ys) = writer(&doc, &m, &keys, 0xc2, 1 + rng.below(6), edits, &mut rng);
    // Taken as remote changes, one writer's changes land where its own
    // commits put them.
    assert!(
        apply_one_by_one(&doc, &xs).save() == x.save(),
        "seed {seed}: applied changes differ from the commits"
    );
    // Both writers' changes, in either order, one by one or in one batch.
    let xy = apply_one_by_one(&x, &ys);
    let yx = apply_one_by_one(&y, &xs);
    let mut batch = doc.clone();
    batch
        .apply_changes(ys.iter().chain(&xs).cloned().collect::<Vec<_>>())
        .unwrap();
    // The saved bytes also record the order changes came in, so replicas
    // are compared by every value and conflict they hold, with op ids.
    let held = content(&xy, &m);
    assert_eq!(held, content(&yx, &m), "seed {seed}: orders differ");
    assert_eq!(held, content(&batch, &m), "seed {seed}: batch differs");
    // And every key either writer made is there.
    for k in x.keys(&m).chain(y.keys(&m)) {
        if !keys.contains(&k) {
            assert!(
                xy.get(&m, k.as_str()).unwrap().is_some(),
                "seed {seed}: {k}"
            );
        }
    }
}

/// Every key of `m` with all its values (conflicts too) and their op ids,
/// and the same one level down, in key order.
fn content(d: &am::Automerge, m: &am::ObjId) -> Vec<String> {
    let mut out = Vec::new();
    for k in d.keys(m) {
        for (v, id) in d.get_all(m, k.as_str()).unwrap() {
            out.push(format!("{k} {v:?} {id}"));
            if let am::Value::Object(am::ObjType::Map) = v {
                for f in d.keys(&id) {
                    for (fv, fid) in d.get_all(&id, f.as_str()).unwrap() {
                        out.push(format!("{k}.{f} {fv:?} {fid}"));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn new_keys_land_where_commits_put_them() {
    for seed in 0..20 {
        check(seed, 300, false);
    }
}

#[test]
fn new_keys_beside_edits_land_where_commits_put_them() {
    for seed in 100..120 {
        check(seed, 300, true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_mix_lands_where_commits_put_it(seed in any::<u64>(), n in 0usize..400, edits in any::<bool>()) {
        check(seed, n, edits);
    }
}
