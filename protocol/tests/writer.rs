//! The entity writer that skips unchanged fields makes byte for byte the
//! change autosurgeon's full reconcile makes: on the live document, inside a
//! transaction isolated at older heads (a concurrent op's causal past), and
//! on a document where concurrent writes left conflicts. Replicas compare
//! rebuilt changes by hash, so any difference would refuse honest ops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use automerge::{self as am, ActorId, ChangeHash};
use proptest::prelude::*;
use serde_json::Value;
use shoal_protocol::doc::{ChangeHeader, new_entities_change, write_entity_with};
use shoal_protocol::model::{Collection, Entity};
use shoal_protocol::testkit::{self, Rng};

struct Fixture {
    doc: am::Automerge,
    /// Every entity of the history's final state.
    entities: Vec<(Collection, String, Entity)>,
    /// Heads from the middle of the history.
    old_heads: Vec<ChangeHash>,
    /// The same document after two concurrent writers touched the same
    /// fields of several entities.
    conflicted: am::Automerge,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (genesis, ops) = testkit::history(160);
        let mut r = shoal_protocol::Replica::from_genesis(genesis).unwrap();
        let mut old_heads = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            let rep = r.apply(op, 1_800_000_000_000);
            assert_eq!(rep.applied.len(), 1);
            if i == 80 {
                old_heads = r.heads();
            }
        }
        let mut entities = Vec::new();
        for c in Collection::ALL {
            for id in ids(r.state(), c) {
                if let Some(e) = r.state().get(c, &id) {
                    entities.push((c, id, e));
                }
            }
        }
        // Two writers change the same entities without seeing each other.
        let doc = r.doc().clone();
        let mut a = doc.fork();
        let mut b = doc.fork();
        a.set_actor(ActorId::from(vec![0xa1; 16]));
        b.set_actor(ActorId::from(vec![0xb2; 16]));
        for (n, (c, id, e)) in entities.iter().enumerate() {
            for (d, salt) in [(&mut a, 1u64), (&mut b, 2u64)] {
                let mut rng = Rng(n as u64 * 31 + salt);
                let changed = mutate(e, &mut rng, 4);
                let mut tx = d.transaction();
                write_entity_with(&mut tx, *c, id, Some(&changed), false).unwrap();
                tx.commit();
            }
        }
        let mut conflicted = a;
        conflicted.merge(&mut b).unwrap();
        Fixture {
            doc,
            entities,
            old_heads,
            conflicted,
        }
    })
}

fn ids(s: &shoal_protocol::model::TeamState, c: Collection) -> Vec<String> {
    // The typed state's fields are named as the document's collections.
    serde_json::to_value(s)
        .unwrap()
        .get(c.key())
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Changes up to `edits` leaves of `e` (strings, numbers, booleans, map
/// entries), keeping only edits the type still accepts.
fn mutate(e: &Entity, rng: &mut Rng, edits: usize) -> Entity {
    let mut cur = e.clone();
    for _ in 0..edits {
        let mut v = serde_json::to_value(&cur).unwrap();
        let mut leaves = Vec::new();
        collect(&v, String::new(), &mut leaves);
        if leaves.is_empty() {
            break;
        }
        let path = leaves[rng.below(leaves.len())].clone();
        let Some(slot) = v.pointer_mut(&path) else {
            continue;
        };
        match slot {
            Value::String(s) => s.push_str(&format!("-{}", rng.below(9))),
            Value::Number(n) => *slot = Value::from(n.as_u64().unwrap_or(0) + 1),
            Value::Bool(b) => *b = !*b,
            Value::Null => *slot = Value::String(format!("x{}", rng.below(9))),
            Value::Object(m) => {
                if m.is_empty() || rng.below(2) == 0 {
                    m.insert(format!("K{}", rng.below(5)), Value::String("v".into()));
                } else {
                    let k = m.keys().nth(rng.below(m.len())).cloned().unwrap();
                    m.remove(&k);
                }
            }
            Value::Array(a) => {
                if !a.is_empty() && rng.below(2) == 0 {
                    let i = rng.below(a.len());
                    a.remove(i);
                } else if let Some(first) = a.first().cloned() {
                    a.push(first);
                }
            }
        }
        if let Ok(next) = serde_json::from_value::<Entity>(v) {
            cur = next;
        }
    }
    cur
}

fn collect(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if !path.is_empty() {
                out.push(path.clone());
            }
            for (k, x) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                collect(x, format!("{path}/{k}"), out);
            }
        }
        Value::Array(a) => {
            out.push(path.clone());
            for (i, x) in a.iter().enumerate() {
                collect(x, format!("{path}/{i}"), out);
            }
        }
        _ => out.push(path),
    }
}

/// The change each writer makes for `writes` on `doc` (at `heads` when
/// given), as bytes; `None` when it writes nothing.
fn change(
    doc: &am::Automerge,
    heads: Option<&[ChangeHash]>,
    writes: &[(Collection, String, Option<Entity>)],
    skip: bool,
) -> Option<Vec<u8>> {
    written(doc, heads, writes, skip).0
}

/// A transaction on `d` (at `heads` when given) holding `writes`.
fn write_in<'a>(
    d: &'a mut am::Automerge,
    heads: Option<&[ChangeHash]>,
    writes: &[(Collection, String, Option<Entity>)],
    skip: bool,
) -> am::transaction::Transaction<'a> {
    d.set_actor(ActorId::from(vec![0xc3; 16]));
    let mut tx = match heads {
        Some(h) => d.transaction_at(am::PatchLog::inactive(), h).unwrap(),
        None => d.transaction(),
    };
    for (c, id, v) in writes {
        write_entity_with(&mut tx, *c, id, v.as_ref(), skip).unwrap();
    }
    tx
}

/// [`change`], and the whole document saved after it: how the ops sit in
/// the op set, not only what the change says.
fn written(
    doc: &am::Automerge,
    heads: Option<&[ChangeHash]>,
    writes: &[(Collection, String, Option<Entity>)],
    skip: bool,
) -> (Option<Vec<u8>>, Vec<u8>) {
    let mut d = doc.clone();
    let tx = write_in(&mut d, heads, writes, skip);
    let opts = am::transaction::CommitOptions::default().with_time(1_700_000_000_000);
    let made = tx
        .commit_with(opts)
        .0
        .map(|_| d.get_last_local_change().unwrap().raw_bytes().to_vec());
    (made, d.save())
}

/// A change's ops, readable when two differ (the bytes are compared too).
fn ops(bytes: Vec<u8>) -> (Vec<String>, Vec<u8>) {
    let c = am::Change::from_bytes(bytes.clone()).unwrap().decode();
    let ops = c.operations.iter().map(|o| format!("{o:?}")).collect();
    (ops, bytes)
}

fn check(seed: u64, picks: usize, edits: usize) {
    let f = fixture();
    let mut rng = Rng(seed);
    let mut writes = Vec::new();
    for _ in 0..picks {
        let (c, id, e) = &f.entities[rng.below(f.entities.len())];
        let v = match rng.below(10) {
            0 => None,
            1 => Some(e.clone()),
            _ => {
                let n = 1 + rng.below(edits);
                Some(mutate(e, &mut rng, n))
            }
        };
        writes.push((*c, id.clone(), v));
    }
    if rng.below(4) == 0 {
        // A new entity: one splice for the fast writer, reconcile for the
        // reference.
        let (c, _, e) = &f.entities[rng.below(f.entities.len())];
        let v = match rng.below(2) {
            0 => e.clone(),
            _ => {
                let n = 1 + rng.below(edits);
                mutate(e, &mut rng, n)
            }
        };
        writes.push((*c, format!("new-{seed}"), Some(v)));
    }
    same_as_reconcile(&writes, &format!("seed {seed}"));
}

/// Both writers make the same change for `writes` and leave the same
/// document: on the live document, at older heads and on the conflicted one.
fn same_as_reconcile(writes: &[(Collection, String, Option<Entity>)], what: &str) {
    let f = fixture();
    for (doc, heads) in [
        (&f.doc, None),
        (&f.doc, Some(f.old_heads.as_slice())),
        (&f.conflicted, None),
    ] {
        let (fast, fast_doc) = written(doc, heads, writes, true);
        let (reference, reference_doc) = written(doc, heads, writes, false);
        let what = format!(
            "{what}, at old heads: {}, conflicted: {}",
            heads.is_some(),
            std::ptr::eq(doc, &f.conflicted)
        );
        assert_eq!(
            fast.clone().map(ops),
            reference.map(ops),
            "writer differs from reconcile ({what})"
        );
        assert!(
            fast_doc == reference_doc,
            "documents differ after the same change ({what})"
        );
        rolled_back_as_it_was(doc, heads, writes, (fast, fast_doc), &what);
    }
}

/// The writes exported and rolled back (as a replica rebuilds a concurrent
/// op's change) give the change a commit gives, leave the document as it
/// was, and leave it able to take the same writes again: the op set's
/// indexes were restored too, not only what a save shows.
fn rolled_back_as_it_was(
    doc: &am::Automerge,
    heads: Option<&[ChangeHash]>,
    writes: &[(Collection, String, Option<Entity>)],
    committed: (Option<Vec<u8>>, Vec<u8>),
    what: &str,
) {
    let mut d = doc.clone();
    let tx = write_in(&mut d, heads, writes, true);
    let opts = am::transaction::CommitOptions::default().with_time(1_700_000_000_000);
    let exported = tx.export_and_rollback(opts).map(|c| c.raw_bytes().to_vec());
    assert_eq!(
        exported.map(ops),
        committed.0.clone().map(ops),
        "export differs from commit ({what})"
    );
    assert!(
        d.save() == doc.save(),
        "rollback changed the document ({what})"
    );
    let again = written(&d, heads, writes, true);
    assert_eq!(
        again.0.map(ops),
        committed.0.map(ops),
        "after a rollback the same writes make another change ({what})"
    );
    assert!(
        again.1 == committed.1,
        "after a rollback the same writes leave another document ({what})"
    );
}

/// Every entity of the fixture, and an edited copy, written under new ids
/// in one transaction, then edited again in it: the new entities' ops go
/// into the op set in one splice each, and everything after reads them.
#[test]
fn new_entities_make_the_same_change_and_document_as_reconcile() {
    let f = fixture();
    let mut writes = Vec::new();
    for (n, (c, _, e)) in f.entities.iter().enumerate() {
        let mut rng = Rng(n as u64 * 13 + 5);
        writes.push((*c, format!("new-{n}"), Some(e.clone())));
        writes.push((*c, format!("edited-{n}"), Some(mutate(e, &mut rng, 3))));
    }
    for (n, (c, _, e)) in f.entities.iter().enumerate().step_by(3) {
        let mut rng = Rng(n as u64 * 17 + 1);
        writes.push((*c, format!("new-{n}"), Some(mutate(e, &mut rng, 2))));
    }
    same_as_reconcile(&writes, "new entities");
    // They were written, and read back as written.
    let (made, saved) = written(&f.doc, None, &writes, true);
    assert!(made.is_some());
    let state = shoal_protocol::doc::read_state(&am::Automerge::load(&saved).unwrap()).unwrap();
    for (c, id, v) in &writes {
        if id.starts_with("edited-") {
            assert_eq!(state.get(*c, id).as_ref(), v.as_ref(), "{c:?} {id}");
        }
    }
}

/// A transaction that wrote new entities and is rolled back (as a replica
/// does to learn a concurrent op's change) leaves the document as it was.
#[test]
fn new_entities_rolled_back_leave_the_document_as_it_was() {
    let f = fixture();
    let before = f.doc.clone().save();
    for heads in [None, Some(f.old_heads.as_slice())] {
        let mut d = f.doc.clone();
        d.set_actor(ActorId::from(vec![0xc3; 16]));
        let mut tx = match heads {
            Some(h) => d.transaction_at(am::PatchLog::inactive(), h).unwrap(),
            None => d.transaction(),
        };
        for (n, (c, _, e)) in f.entities.iter().enumerate() {
            write_entity_with(&mut tx, *c, &format!("new-{n}"), Some(e), true).unwrap();
        }
        let made = tx.export_and_rollback(am::transaction::CommitOptions::default());
        assert!(made.is_some());
        assert!(d.save() == before, "at old heads: {}", heads.is_some());
        // And the same writes still make the same change on it afterwards.
        let writes: Vec<_> = f
            .entities
            .iter()
            .enumerate()
            .map(|(n, (c, _, e))| (*c, format!("new-{n}"), Some(e.clone())))
            .collect();
        assert_eq!(
            change(&d, heads, &writes, true).map(ops),
            change(&f.doc, heads, &writes, false).map(ops)
        );
    }
}

#[test]
fn the_fixture_has_conflicts_and_every_collection_it_needs() {
    let f = fixture();
    let have: std::collections::BTreeSet<_> = f.entities.iter().map(|(c, _, _)| *c).collect();
    for c in [
        Collection::Members,
        Collection::Nodes,
        Collection::Products,
        Collection::Versions,
        Collection::Deployments,
    ] {
        assert!(have.contains(&c), "{c:?} missing from the fixture");
    }
    // The conflicted document really holds conflicts.
    let conflicts = f
        .entities
        .iter()
        .filter(|(c, id, _)| {
            let (_, coll) = am::ReadDoc::get(&f.conflicted, am::ROOT, c.key())
                .unwrap()
                .unwrap();
            let Some((_, obj)) = am::ReadDoc::get(&f.conflicted, &coll, id.as_str()).unwrap()
            else {
                return false;
            };
            am::ReadDoc::map_range(&f.conflicted, &obj, ..).any(|i| i.conflict)
        })
        .count();
    assert!(conflicts > 10, "only {conflicts} conflicted entities");
}

#[test]
fn unchanged_entities_write_nothing() {
    let f = fixture();
    let writes: Vec<_> = f
        .entities
        .iter()
        .map(|(c, id, e)| (*c, id.clone(), Some(e.clone())))
        .collect();
    assert_eq!(change(&f.doc, None, &writes, true), None);
    assert_eq!(change(&f.doc, None, &writes, false), None);
}

#[test]
fn every_entity_edited_alone_matches_reconcile() {
    let f = fixture();
    for (n, (c, id, e)) in f.entities.iter().enumerate() {
        for k in 0..3u64 {
            let mut rng = Rng(n as u64 * 7 + k);
            let v = mutate(e, &mut rng, 1 + k as usize);
            let writes = vec![(*c, id.clone(), Some(v))];
            for doc in [&f.doc, &f.conflicted] {
                assert_eq!(
                    change(doc, None, &writes, true).map(ops),
                    change(doc, None, &writes, false).map(ops),
                    "{c:?} {id}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn the_writer_matches_reconcile(seed in any::<u64>(), picks in 1usize..6, edits in 1usize..6) {
        check(seed, picks, edits);
    }
}

/// New entities' change built without a transaction
/// (`new_entities_change`, what a replica checks a create op with) is byte
/// for byte the one a transaction commits: on the live document and at
/// older heads, for every entity of the fixture and edited copies, one or
/// several per change.
fn same_without_a_transaction(writes: &[(Collection, String, Entity)], what: &str) {
    let f = fixture();
    let with_values: Vec<_> = writes
        .iter()
        .map(|(c, id, e)| (*c, id.clone(), Some(e.clone())))
        .collect();
    for heads in [None, Some(f.old_heads.as_slice())] {
        let made = change(&f.doc, heads, &with_values, true).unwrap();
        let committed = am::Change::from_bytes(made.clone()).unwrap();
        let header = ChangeHeader {
            actor: committed.actor_id().clone(),
            seq: committed.seq(),
            start_op: committed.start_op().get(),
            time: committed.timestamp(),
            deps: committed.deps().to_vec(),
        };
        let puts = writes.iter().map(|(c, id, e)| (*c, id.as_str(), e));
        let (built, ends) = new_entities_change(&f.doc, puts, header)
            .unwrap_or_else(|| panic!("no change built ({what})"));
        assert_eq!(
            ops(built.raw_bytes().to_vec()),
            ops(made),
            "built change differs ({what}, at old heads: {})",
            heads.is_some()
        );
        assert_eq!(ends.len(), writes.len());
        assert_eq!(ends.last().copied(), Some(built.len()));
    }
}

#[test]
fn new_entities_change_is_the_transactions_for_every_entity() {
    let f = fixture();
    for (n, (c, _, e)) in f.entities.iter().enumerate() {
        let mut rng = Rng(n as u64 * 7 + 3);
        let edited = mutate(e, &mut rng, 6);
        same_without_a_transaction(&[(*c, format!("new-{n}"), e.clone())], &format!("{c:?}"));
        same_without_a_transaction(
            &[(*c, format!("new-{n}"), edited)],
            &format!("{c:?} edited"),
        );
    }
    // All of them in one change, then edited copies.
    let all: Vec<_> = f
        .entities
        .iter()
        .enumerate()
        .map(|(n, (c, _, e))| (*c, format!("new-{n}"), e.clone()))
        .collect();
    same_without_a_transaction(&all, "every entity in one change");
}

/// A second write to one key is not a new entity's: no change is built.
#[test]
fn new_entities_change_refuses_a_key_written_twice() {
    let f = fixture();
    let (c, _, e) = &f.entities[0];
    let header = ChangeHeader {
        actor: ActorId::from(vec![0xc3; 16]),
        seq: 1,
        start_op: 1_000,
        time: 0,
        deps: f.doc.get_heads(),
    };
    let twice = [(*c, "new", e), (*c, "new", e)];
    assert!(new_entities_change(&f.doc, twice, header.clone()).is_none());
    assert!(new_entities_change(&f.doc, [(*c, "new", e)], header).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn new_entities_change_matches_a_transaction(seed in any::<u64>(), picks in 1usize..4, edits in 0usize..6) {
        let f = fixture();
        let mut rng = Rng(seed);
        let writes: Vec<_> = (0..picks)
            .map(|k| {
                let (c, _, e) = &f.entities[rng.below(f.entities.len())];
                (*c, format!("new-{k}"), mutate(e, &mut rng, edits))
            })
            .collect();
        same_without_a_transaction(&writes, &format!("seed {seed}"));
    }
}

/// Keys leaving a map are deleted in key order, so every replica rebuilds
/// the same change (a hash set's order differs between processes).
#[test]
fn keys_leaving_a_map_are_deleted_in_key_order() {
    let f = fixture();
    let (c, id, e) = f
        .entities
        .iter()
        .find(|(c, _, _)| *c == Collection::Deployments)
        .unwrap();
    let Entity::Deployment(d) = e else {
        unreachable!()
    };
    let mut full = d.clone();
    full.env = ["F", "B", "D", "A", "E", "C"]
        .iter()
        .map(|k| (k.to_string(), "v".to_string()))
        .collect();
    let mut doc = f.doc.clone();
    let mut tx = doc.transaction();
    write_entity_with(
        &mut tx,
        *c,
        id,
        Some(&Entity::Deployment(full.clone())),
        false,
    )
    .unwrap();
    tx.commit();
    let mut empty = full;
    empty.env.clear();
    for skip in [true, false] {
        let (ops, _) = change(
            &doc,
            None,
            &[(*c, id.clone(), Some(Entity::Deployment(empty.clone())))],
            skip,
        )
        .map(ops)
        .unwrap();
        let deleted: Vec<&str> = ops
            .iter()
            .filter(|o| o.contains("action: Delete"))
            .filter_map(|o| o.split("key: Map(\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(deleted, ["A", "B", "C", "D", "E", "F"], "skip: {skip}");
    }
}

/// The view at heads (the heads' clock worked out once) reads what a fork
/// of the document at those heads holds: at older heads, at the heads of
/// the history, and at the heads of two concurrent writers merged.
#[test]
fn a_view_at_heads_reads_what_a_fork_at_them_holds() {
    use shoal_protocol::doc::{AtHeads, read_state};
    let f = fixture();
    let doc = &f.conflicted;
    for heads in [f.old_heads.clone(), f.doc.get_heads(), doc.get_heads()] {
        let viewed = read_state(&AtHeads::new(doc, &heads)).unwrap();
        let forked = read_state(&doc.fork_at(&heads).unwrap()).unwrap();
        assert!(viewed == forked, "at {} heads", heads.len());
    }
    assert!(
        read_state(&AtHeads::new(doc, &f.old_heads)).unwrap()
            != read_state(&AtHeads::new(doc, &doc.get_heads())).unwrap()
    );
}
