//! Writing a new entity with one splice into the op set.
//!
//! A new entity is most of what a create op writes (twenty-odd fields), and
//! automerge splices each op into its op set's columns one at a time. Here
//! the ops autosurgeon's reconcile would make for the entity are recorded
//! first, in the order it would make them, and then handed to automerge's
//! `put_fresh`, which gives them the same ids and enters them in one block.
//! The change is the same byte for byte (protocol/tests/writer.rs and
//! protocol/tests/compat.rs hold the writer to that).
//!
//! The recording follows autosurgeon 0.14 into a map key or list slot that
//! holds nothing: a value without a key is written depth first (the object,
//! then its fields as reconcile visits them); a value with a key, and every
//! list item, is written as autosurgeon's `batch_create` writes it (the
//! object, then breadth first with map keys sorted). Anything outside what a
//! new entity needs (text, counters, a key written twice, a delete, a list
//! item not appended) stops the recording, and the caller writes the entity
//! through reconcile as before.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use automerge::transaction::{FreshOp, FreshValue};
use automerge::{self as am, ObjType, ScalarValue};
use autosurgeon::reconcile::{
    CounterReconciler, LoadKey, MapReconciler, SeqReconciler, StaleHeads, TextReconciler,
};
use autosurgeon::{Reconcile, Reconciler};

use super::skip::{Repr, represent};

/// The recording met something it does not follow; reconcile writes the
/// value instead.
#[derive(Debug)]
pub(crate) struct Unsupported;

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not recorded")
    }
}

impl std::error::Error for Unsupported {}

impl From<StaleHeads> for Unsupported {
    fn from(_: StaleHeads) -> Self {
        Unsupported
    }
}

/// The object type and the ops reconcile writes when it puts `value` at a
/// map key that holds nothing; `None` when the recording cannot follow it.
pub(crate) fn record<T: Reconcile>(value: &T) -> Option<(ObjType, Vec<FreshOp>)> {
    // A value with a key would go through `batch_create` whole.
    if matches!(value.key(), LoadKey::Found(_)) {
        return None;
    }
    let mut rec = Rec::default();
    let mut root = None;
    value
        .reconcile(Slot {
            rec: &mut rec,
            at: At::Root(&mut root),
        })
        .ok()?;
    Some((root?, rec.ops))
}

/// The ops recorded so far, indexed for what reconcile reads back of them
/// (a value of many entries costs n log n, not n squared).
#[derive(Default)]
struct Rec {
    ops: Vec<FreshOp>,
    /// Per object (numbered as [`FreshOp::parent`]), its ops in order.
    children: HashMap<usize, Vec<usize>>,
    /// Per object and map key, the op written there.
    keys: HashMap<(usize, String), usize>,
}

impl Rec {
    /// Records `op`; returns the number of the object it makes, if any.
    /// A key written twice is not followed.
    fn push(&mut self, op: FreshOp) -> Result<usize, Unsupported> {
        let i = self.ops.len();
        if let Some(k) = &op.key {
            match self.keys.entry((op.parent, k.clone())) {
                std::collections::hash_map::Entry::Occupied(_) => return Err(Unsupported),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
        self.children.entry(op.parent).or_default().push(i);
        self.ops.push(op);
        Ok(i + 1)
    }

    fn children(&self, obj: usize) -> impl Iterator<Item = &FreshOp> {
        self.children
            .get(&obj)
            .into_iter()
            .flatten()
            .map(|&i| &self.ops[i])
    }

    fn count(&self, obj: usize) -> usize {
        self.children.get(&obj).map_or(0, Vec::len)
    }

    fn get(&self, obj: usize, key: &str) -> Option<&FreshOp> {
        self.keys
            .get(&(obj, key.to_string()))
            .map(|&i| &self.ops[i])
    }
}

/// Where the value being reconciled goes.
enum At<'a> {
    /// The new object itself: only a map or a list can be put there.
    Root(&'a mut Option<ObjType>),
    /// `key` of the object `parent` (an index as in [`FreshOp::parent`]);
    /// taken by the one op written there.
    Key(usize, Option<String>),
}

/// Reconciles one value into its place, depth first.
struct Slot<'a> {
    rec: &'a mut Rec,
    at: At<'a>,
}

impl Slot<'_> {
    fn push(&mut self, value: FreshValue) -> Result<usize, Unsupported> {
        match &mut self.at {
            At::Root(root) => match value {
                FreshValue::Map => {
                    **root = Some(ObjType::Map);
                    Ok(0)
                }
                FreshValue::List => {
                    **root = Some(ObjType::List);
                    Ok(0)
                }
                FreshValue::Scalar(_) => Err(Unsupported),
            },
            At::Key(parent, key) => {
                let key = key.take().ok_or(Unsupported)?;
                self.rec.push(FreshOp {
                    parent: *parent,
                    key: Some(key),
                    value,
                })
            }
        }
    }

    fn scalar(&mut self, s: impl Into<ScalarValue>) -> Result<(), Unsupported> {
        self.push(FreshValue::Scalar(s.into())).map(|_| ())
    }
}

impl<'s> Reconciler for Slot<'s> {
    type Error = Unsupported;
    type Map<'a>
        = InMap<'a>
    where
        Self: 'a;
    type Seq<'a>
        = InSeq<'a>
    where
        Self: 'a;
    type Text<'a>
        = Refuse
    where
        Self: 'a;
    type Counter<'a>
        = Refuse
    where
        Self: 'a;

    fn none(&mut self) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::Null)
    }
    fn bytes<B: AsRef<[u8]>>(&mut self, value: B) -> Result<(), Unsupported> {
        self.scalar(value.as_ref().to_vec())
    }
    fn timestamp(&mut self, value: i64) -> Result<(), Unsupported> {
        self.scalar(ScalarValue::Timestamp(value))
    }
    fn boolean(&mut self, value: bool) -> Result<(), Unsupported> {
        self.scalar(value)
    }
    fn str<S: AsRef<str>>(&mut self, value: S) -> Result<(), Unsupported> {
        self.scalar(value.as_ref())
    }
    fn u64(&mut self, value: u64) -> Result<(), Unsupported> {
        self.scalar(value)
    }
    fn i64(&mut self, value: i64) -> Result<(), Unsupported> {
        self.scalar(value)
    }
    fn f64(&mut self, value: f64) -> Result<(), Unsupported> {
        self.scalar(value)
    }
    fn map(&mut self) -> Result<InMap<'_>, Unsupported> {
        let obj = self.push(FreshValue::Map)?;
        Ok(InMap { rec: self.rec, obj })
    }
    fn seq(&mut self) -> Result<InSeq<'_>, Unsupported> {
        let obj = self.push(FreshValue::List)?;
        Ok(InSeq { rec: self.rec, obj })
    }
    fn text(&mut self) -> Result<Refuse, Unsupported> {
        Err(Unsupported)
    }
    fn counter(&mut self) -> Result<Refuse, Unsupported> {
        Err(Unsupported)
    }
    fn heads(&self) -> &[am::ChangeHash] {
        &[]
    }
}

/// What an op wrote, as reconcile reads it back.
fn value_ref(v: &FreshValue) -> am::ValueRef<'static> {
    match v {
        FreshValue::Scalar(s) => am::ValueRef::Scalar(s.clone().into()),
        FreshValue::Map => am::ValueRef::Object(ObjType::Map),
        FreshValue::List => am::ValueRef::Object(ObjType::List),
    }
}

/// A map this recording made: every key it holds was written here.
struct InMap<'a> {
    rec: &'a mut Rec,
    obj: usize,
}

impl InMap<'_> {
    fn written(&self, prop: &str) -> Option<&FreshOp> {
        self.rec.get(self.obj, prop)
    }
}

impl MapReconciler for InMap<'_> {
    type Error = Unsupported;
    type EntriesIter<'b>
        = std::vec::IntoIter<(Cow<'b, str>, am::ValueRef<'b>)>
    where
        Self: 'b;

    fn entries(&self) -> Self::EntriesIter<'_> {
        let mut entries: Vec<_> = self
            .rec
            .children(self.obj)
            .filter_map(|op| Some((Cow::Borrowed(op.key.as_deref()?), value_ref(&op.value))))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.into_iter()
    }

    fn entry<P: AsRef<str>>(&self, prop: P) -> Option<am::Value<'_>> {
        self.written(prop.as_ref())
            .map(|op| value_ref(&op.value).into_value())
    }

    fn put<R: Reconcile, P: AsRef<str>>(&mut self, prop: P, value: R) -> Result<(), Unsupported> {
        // A key written twice is refused where its op is recorded.
        let key = prop.as_ref();
        if matches!(value.key(), LoadKey::Found(_)) {
            // autosurgeon's `batch_create`: a scalar is a plain put, an
            // object is made whole, breadth first.
            return match represent(&value) {
                Some(r) => emit_batch(self.rec, self.obj, Some(key.to_string()), r),
                None => Ok(()),
            };
        }
        value.reconcile(Slot {
            rec: self.rec,
            at: At::Key(self.obj, Some(key.to_string())),
        })
    }

    fn delete<P: AsRef<str>>(&mut self, _prop: P) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn hydrate_entry_key<'b, R: Reconcile, P: AsRef<str>>(
        &self,
        prop: P,
    ) -> Result<LoadKey<R::Key<'b>>, Unsupported> {
        match self.written(prop.as_ref()) {
            Some(_) => Err(Unsupported),
            None => Ok(LoadKey::KeyNotFound),
        }
    }

    fn replace<R: Reconcile, P: AsRef<str>>(
        &mut self,
        _prop: P,
        _value: R,
    ) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn retain<F: FnMut(&str, am::ValueRef<'_>) -> bool>(
        &mut self,
        mut pred: F,
    ) -> Result<(), Unsupported> {
        let keeps_all = self.rec.children(self.obj).all(|op| {
            op.key
                .as_deref()
                .is_some_and(|k| pred(k, value_ref(&op.value)))
        });
        if keeps_all { Ok(()) } else { Err(Unsupported) }
    }
}

/// A list this recording made: items are only appended.
struct InSeq<'a> {
    rec: &'a mut Rec,
    obj: usize,
}

impl InSeq<'_> {
    fn items_here(&self) -> impl Iterator<Item = &FreshOp> {
        self.rec.children(self.obj)
    }
}

impl SeqReconciler for InSeq<'_> {
    type Error = Unsupported;
    type ItemIter<'b>
        = std::vec::IntoIter<am::ValueRef<'b>>
    where
        Self: 'b;

    fn items(&self) -> Self::ItemIter<'_> {
        self.items_here()
            .map(|op| value_ref(&op.value))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn get(&self, index: usize) -> Result<Option<am::Value<'_>>, Unsupported> {
        Ok(self
            .items_here()
            .nth(index)
            .map(|op| value_ref(&op.value).into_value()))
    }

    fn hydrate_item_key<'b, R: Reconcile>(
        &self,
        _index: usize,
    ) -> Result<LoadKey<R::Key<'b>>, Unsupported> {
        Err(Unsupported)
    }

    fn insert<R: Reconcile>(&mut self, index: usize, value: R) -> Result<(), Unsupported> {
        if index != self.rec.count(self.obj) {
            return Err(Unsupported);
        }
        // autosurgeon inserts every item through `batch_create`.
        match represent(&value) {
            Some(r) => emit_batch(self.rec, self.obj, None, r),
            None => Ok(()),
        }
    }

    fn set<R: Reconcile>(&mut self, _index: usize, _value: R) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn delete(&mut self, _index: usize) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn len(&self) -> Result<usize, Unsupported> {
        Ok(self.rec.count(self.obj))
    }
}

/// Text and counters are not recorded.
struct Refuse;

impl TextReconciler for Refuse {
    type Error = Unsupported;
    fn splice<S: AsRef<str>>(&mut self, _: usize, _: isize, _: S) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn heads(&self) -> &[am::ChangeHash] {
        &[]
    }
    fn update<S: AsRef<str>>(&mut self, _: S) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
}

impl CounterReconciler for Refuse {
    type Error = Unsupported;
    fn increment(&mut self, _: i64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn set(&mut self, _: i64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
}

/// Appends the ops `batch_create` makes for `value` at `key` of `parent`
/// (or appended to it): the value, then the objects inside breadth first,
/// map keys sorted. `value` is what autosurgeon's conversion to a
/// `hydrate::Value` makes of it, as [`skip::represent`] builds it; text and
/// counters are not followed.
fn emit_batch(
    rec: &mut Rec,
    parent: usize,
    key: Option<String>,
    value: Repr,
) -> Result<(), Unsupported> {
    let mut queue = VecDeque::new();
    let put = |rec: &mut Rec, parent, key, r: Repr, queue: &mut VecDeque<_>| {
        let value = match &r {
            Repr::Scalar(s) => FreshValue::Scalar(s.clone()),
            Repr::Map(_) => FreshValue::Map,
            Repr::List(_) => FreshValue::List,
            Repr::Opaque => return Err(Unsupported),
        };
        let made = rec.push(FreshOp { parent, key, value })?;
        if !matches!(r, Repr::Scalar(_)) {
            queue.push_back((made, r));
        }
        Ok::<(), Unsupported>(())
    };
    put(rec, parent, key, value, &mut queue)?;
    while let Some((obj, r)) = queue.pop_front() {
        match r {
            Repr::Map(m) => {
                for (k, v) in m {
                    put(rec, obj, Some(k), v, &mut queue)?;
                }
            }
            Repr::List(items) => {
                for v in items {
                    put(rec, obj, None, v, &mut queue)?;
                }
            }
            Repr::Scalar(_) | Repr::Opaque => return Err(Unsupported),
        }
    }
    Ok(())
}

/// The ops, in change order, that `put_fresh` makes when it puts a new
/// object of type `typ` holding `ops` at `key` of the map `coll`, a key that
/// holds nothing at the transaction's heads; the first op is numbered
/// `first`, every op is `actor`'s. `None` where `put_fresh` would refuse
/// the ops (it checks them the same way).
///
/// This is the change without a document: a replica checking an op that
/// only creates entities builds the change the op must carry from these,
/// with no transaction to make and roll back (see `Replica::expected_at`).
pub(crate) fn change_ops(
    coll: &am::ObjId,
    key: &str,
    typ: ObjType,
    ops: &[FreshOp],
    first: u64,
    actor: &am::ActorId,
) -> Option<Vec<am::legacy::Op>> {
    use am::legacy::{ElementId, Key, ObjectId, Op, OpId, OpType};
    let coll = match coll {
        am::ObjId::Root => ObjectId::Root,
        am::ObjId::Id(counter, actor, _) => ObjectId::Id(OpId(*counter, actor.clone())),
    };
    if !matches!(typ, ObjType::Map | ObjType::List) {
        return None;
    }
    let id = |i: usize| OpId(first + i as u64, actor.clone());
    let mut out = Vec::with_capacity(ops.len() + 1);
    out.push(Op {
        action: OpType::Make(typ),
        obj: coll,
        key: Key::Map(key.into()),
        pred: Vec::new().into(),
        insert: false,
    });
    // Per object (0 the new one, `i + 1` the one op `i` made): its type,
    // the keys written in it, and a list's last element.
    let mut types: Vec<Option<ObjType>> = Vec::with_capacity(ops.len() + 1);
    types.push(Some(typ));
    let mut keys: std::collections::HashSet<(usize, &str)> = Default::default();
    let mut last: Vec<ElementId> = vec![ElementId::Head; ops.len() + 1];
    for (i, op) in ops.iter().enumerate() {
        let this = id(i + 1);
        let (key, insert) = match (types.get(op.parent).copied().flatten(), op.key.as_deref()) {
            (Some(ObjType::Map), Some(k)) if keys.insert((op.parent, k)) => {
                (Key::Map(k.into()), false)
            }
            (Some(ObjType::List), None) => {
                let after = std::mem::replace(&mut last[op.parent], ElementId::Id(this.clone()));
                (Key::Seq(after), true)
            }
            _ => return None,
        };
        let action = match &op.value {
            FreshValue::Scalar(v) => {
                types.push(None);
                OpType::Put(v.clone())
            }
            FreshValue::Map => {
                types.push(Some(ObjType::Map));
                OpType::Make(ObjType::Map)
            }
            FreshValue::List => {
                types.push(Some(ObjType::List));
                OpType::Make(ObjType::List)
            }
        };
        out.push(Op {
            action,
            obj: ObjectId::Id(id(op.parent)),
            key,
            pred: Vec::new().into(),
            insert,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;

    use autosurgeon::Reconcile;

    use super::*;
    use crate::model::{Collection, Entity};

    #[derive(Reconcile, Clone)]
    struct Leaf {
        x: String,
        n: u64,
    }

    #[derive(Reconcile, Clone)]
    struct Pair {
        a: Leaf,
        b: Leaf,
        tag: Option<String>,
    }

    #[derive(Reconcile, Clone)]
    struct Keyed {
        #[key]
        id: String,
        inner: Pair,
    }

    /// Shapes the model does not use yet: objects two deep inside list
    /// items, keyed values, maps of objects, scalars of every kind.
    #[derive(Reconcile, Clone)]
    struct Top {
        name: String,
        items: Vec<Pair>,
        nested: Pair,
        keyed: Keyed,
        keyed_items: Vec<Keyed>,
        map: BTreeMap<String, Pair>,
        flags: Vec<bool>,
        none: Option<u64>,
        f: f64,
        i: i64,
        yes: bool,
    }

    fn leaf(s: &str, n: u64) -> Leaf {
        Leaf { x: s.into(), n }
    }

    fn pair(s: &str) -> Pair {
        Pair {
            a: leaf(&format!("{s}-a"), 1),
            b: leaf(&format!("{s}-b"), 2),
            tag: s.len().is_multiple_of(2).then(|| s.to_string()),
        }
    }

    fn top(items: usize) -> Top {
        Top {
            name: "top".into(),
            items: (0..items).map(|i| pair(&format!("item{i}"))).collect(),
            nested: pair("nested"),
            keyed: Keyed {
                id: "k1".into(),
                inner: pair("keyed"),
            },
            keyed_items: (0..items)
                .map(|i| Keyed {
                    id: format!("k{i}"),
                    inner: pair("in"),
                })
                .collect(),
            map: (0..items)
                .map(|i| (format!("m{}", items - i), pair("m")))
                .collect(),
            flags: (0..items).map(|i| i % 2 == 0).collect(),
            none: None,
            f: 1.5,
            i: -3,
            yes: true,
        }
    }

    /// The change and the saved document, written by reconcile or by
    /// recording and `put_fresh`.
    fn write(v: &Top, fresh: bool) -> (Vec<u8>, Vec<u8>) {
        let mut doc = am::Automerge::new();
        doc.set_actor(am::ActorId::from(vec![7; 16]));
        let mut tx = doc.transaction();
        let coll =
            am::transaction::Transactable::put_object(&mut tx, am::ROOT, "coll", ObjType::Map)
                .unwrap();
        am::transaction::Transactable::put(&mut tx, &coll, "other", 1u64).unwrap();
        tx.commit();
        let mut tx = doc.transaction();
        if fresh {
            let (typ, ops) = record(v).unwrap();
            tx.put_fresh(&coll, "k", typ, &ops).unwrap();
        } else {
            autosurgeon::reconcile_prop(&mut tx, &coll, "k", v).unwrap();
        }
        let opts = am::transaction::CommitOptions::default().with_time(1);
        tx.commit_with(opts).0.unwrap();
        let change = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
        (change, doc.save())
    }

    #[test]
    fn a_recording_makes_the_change_and_document_reconcile_makes() {
        for items in [0, 1, 3] {
            let v = top(items);
            let (change, saved) = write(&v, true);
            let (expected, expected_saved) = write(&v, false);
            let decode = |b: &[u8]| {
                am::Change::from_bytes(b.to_vec())
                    .unwrap()
                    .decode()
                    .operations
                    .iter()
                    .map(|o| format!("{o:?}"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(decode(&change), decode(&expected), "{items} items");
            assert_eq!(change, expected, "{items} items");
            assert!(saved == expected_saved, "{items} items");
        }
    }

    /// Thousands of entries (a value as large as an op may carry is
    /// recorded and placed in n log n): same change, same document, and a
    /// rollback leaves the document as it was.
    #[test]
    fn a_large_value_is_written_and_rolled_back_as_reconcile_would() {
        let mut v = top(40);
        v.map = (0..3_000)
            .map(|i| (format!("k{}", (i * 7919) % 3_000), pair("m")))
            .collect();
        v.flags = (0..3_000).map(|i| i % 3 == 0).collect();
        let (change, saved) = write(&v, true);
        let (expected, expected_saved) = write(&v, false);
        assert!(change == expected);
        assert!(saved == expected_saved);

        let mut doc = am::Automerge::new();
        let mut tx = doc.transaction();
        let coll =
            am::transaction::Transactable::put_object(&mut tx, am::ROOT, "coll", ObjType::Map)
                .unwrap();
        tx.commit();
        let before = doc.save();
        let mut tx = doc.transaction();
        let (typ, ops) = record(&v).unwrap();
        tx.put_fresh(&coll, "k", typ, &ops).unwrap();
        assert!(tx.rollback() > 6_000);
        assert!(doc.save() == before);
    }

    #[test]
    fn what_a_recording_cannot_follow_is_left_to_reconcile() {
        /// Writes one key twice.
        struct Twice;
        impl Reconcile for Twice {
            type Key<'a> = autosurgeon::reconcile::NoKey;
            fn reconcile<R: Reconciler>(&self, mut r: R) -> Result<(), R::Error> {
                let mut m = r.map()?;
                m.put("a", 1u64)?;
                m.put("a", 2u64)?;
                Ok(())
            }
        }
        assert!(record(&Twice).is_none());
        // A scalar, or a value with a key, is not put through `put_fresh`.
        assert!(record(&"text".to_string()).is_none());
        assert!(record(&top(1).keyed).is_none());
        assert!(record(&top(1)).is_some());
    }

    /// The recording follows every kind of entity a team holds, so new
    /// entities do take the one-splice path (protocol/tests/writer.rs
    /// shows the result equals reconcile's).
    #[test]
    fn every_kind_of_entity_in_a_history_is_recorded() {
        let (genesis, ops) = crate::testkit::history(60);
        let mut r = crate::Replica::from_genesis(genesis).unwrap();
        for op in ops {
            assert_eq!(r.apply(op, 1_800_000_000_000).applied.len(), 1);
        }
        let s = r.state();
        let mut seen = std::collections::BTreeSet::new();
        for c in Collection::ALL {
            // The typed state's fields are named as the document's
            // collections.
            let ids: Vec<String> = serde_json::to_value(s)
                .unwrap()
                .get(c.key())
                .and_then(serde_json::Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for id in ids {
                let Some(e) = s.get(c, &id) else { continue };
                let recorded = match &e {
                    Entity::Team(v) => record(v),
                    Entity::Member(v) => record(v),
                    Entity::Node(v) => record(v),
                    Entity::Invite(v) => record(v),
                    Entity::Registry(v) => record(v),
                    Entity::Product(v) => record(v),
                    Entity::Version(v) => record(v),
                    Entity::Deployment(v) => record(v.as_ref()),
                    Entity::Command(v) => record(v),
                    Entity::Key(v) => record(v),
                };
                let (typ, ops) = recorded.unwrap_or_else(|| panic!("{c:?} {id} not recorded"));
                assert_eq!(typ, ObjType::Map);
                assert!(!ops.is_empty(), "{c:?} {id}");
                seen.insert(c);
            }
        }
        for c in [
            Collection::Members,
            Collection::Nodes,
            Collection::Registries,
            Collection::Products,
            Collection::Versions,
            Collection::Deployments,
        ] {
            assert!(seen.contains(&c), "no {c:?} in the history");
        }
    }
}
