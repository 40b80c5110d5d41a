//! Writing an existing entity without reading each of its fields back.
//!
//! Every op's change is rebuilt on every replica and compared byte for byte
//! with the one it carries (§3.1), so the writer must emit exactly the ops
//! autosurgeon's reconcile emits. Reconcile asks the document about every
//! field (two or three key lookups each), and a lookup in a large document
//! is the most expensive thing a replica does per op. Most ops change two or
//! three fields of an entity of twenty.
//!
//! Here the entity's current fields are read with one range scan (and one
//! per nested object), and a field is handed to autosurgeon only when it may
//! differ. A field is skipped only where autosurgeon is known to write
//! nothing: the document holds, with no conflict anywhere below the key,
//! exactly the representation reconcile would write. (Automerge writes no op
//! for a put of the value a key already holds alone; a conflicted key is
//! always written, to resolve it.) Every other field, and the order of
//! everything written, is autosurgeon's own.

use std::borrow::Cow;
use std::collections::BTreeMap;

use automerge::{self as am, ObjId};
use autosurgeon::reconcile::{
    CounterReconciler, LoadKey, MapReconciler, SeqReconciler, StaleHeads, TextReconciler,
};
use autosurgeon::{Prop, ReadDoc, Reconcile, Reconciler};

/// A value as reconcile leaves it in the document. `Opaque` (text,
/// counters, anything conflicted) never equals anything, so it is never
/// skipped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Repr {
    Scalar(am::ScalarValue),
    Map(BTreeMap<String, Repr>),
    List(Vec<Repr>),
    Opaque,
}

impl Repr {
    fn same(&self, other: &Repr) -> bool {
        match (self, other) {
            (Repr::Opaque, _) | (_, Repr::Opaque) => false,
            (Repr::Scalar(a), Repr::Scalar(b)) => a == b,
            (Repr::Map(a), Repr::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((ka, va), (kb, vb))| ka == kb && va.same(vb))
            }
            (Repr::List(a), Repr::List(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.same(y))
            }
            _ => false,
        }
    }
}

/// The fields of one entity as the document holds them, read once.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    fields: BTreeMap<String, (am::Value<'static>, Repr)>,
}

impl Snapshot {
    /// Reads the map `obj` and everything below it.
    pub(crate) fn read<D: am::ReadDoc>(doc: &D, obj: &ObjId) -> Snapshot {
        let mut fields = BTreeMap::new();
        for item in doc.map_range(obj, ..) {
            let value = item.value.clone().into_value();
            let repr = if item.conflict {
                Repr::Opaque
            } else {
                read_value(doc, &item.value, object_id(&item.value, || item.id()))
            };
            fields.insert(item.key.into_owned(), (value, repr));
        }
        Snapshot { fields }
    }
}

fn read_value<D: am::ReadDoc>(doc: &D, value: &am::ValueRef<'_>, id: Option<ObjId>) -> Repr {
    match value {
        am::ValueRef::Scalar(s) => Repr::Scalar(s.clone().into()),
        am::ValueRef::Object(am::ObjType::Map) => {
            let Some(obj) = id else {
                return Repr::Opaque;
            };
            let mut m = BTreeMap::new();
            for item in doc.map_range(&obj, ..) {
                let r = if item.conflict {
                    Repr::Opaque
                } else {
                    read_value(doc, &item.value, object_id(&item.value, || item.id()))
                };
                m.insert(item.key.into_owned(), r);
            }
            Repr::Map(m)
        }
        am::ValueRef::Object(am::ObjType::List) => {
            let Some(obj) = id else {
                return Repr::Opaque;
            };
            let mut l = Vec::new();
            for item in doc.list_range(&obj, ..) {
                l.push(if item.conflict {
                    Repr::Opaque
                } else {
                    read_value(doc, &item.value, object_id(&item.value, || item.id()))
                });
            }
            Repr::List(l)
        }
        am::ValueRef::Object(_) => Repr::Opaque,
    }
}

/// The id of an object value; scalars have none worth making.
fn object_id(value: &am::ValueRef<'_>, id: impl FnOnce() -> ObjId) -> Option<ObjId> {
    matches!(value, am::ValueRef::Object(_)).then(id)
}

/// `T` reconciled through a map that skips the fields `snapshot` shows
/// unchanged. Keys and key hydration are `T`'s own, so the entity itself is
/// matched exactly as before.
pub(crate) struct Skipping<'a, T> {
    pub(crate) value: &'a T,
    pub(crate) snapshot: &'a Snapshot,
}

impl<T: Reconcile> Reconcile for Skipping<'_, T> {
    type Key<'k> = T::Key<'k>;

    fn reconcile<R: Reconciler>(&self, reconciler: R) -> Result<(), R::Error> {
        self.value.reconcile(SkipReconciler {
            inner: reconciler,
            snapshot: self.snapshot,
        })
    }

    fn hydrate_key<'k, D: ReadDoc>(
        doc: &D,
        obj: &ObjId,
        prop: Prop<'_>,
    ) -> Result<LoadKey<Self::Key<'k>>, autosurgeon::ReconcileError> {
        T::hydrate_key(doc, obj, prop)
    }

    fn key(&self) -> LoadKey<Self::Key<'_>> {
        self.value.key()
    }
}

struct SkipReconciler<'a, R> {
    inner: R,
    snapshot: &'a Snapshot,
}

impl<'s, R: Reconciler> Reconciler for SkipReconciler<'s, R> {
    type Error = R::Error;
    type Map<'a>
        = SkipMap<'s, R::Map<'a>>
    where
        Self: 'a;
    type Seq<'a>
        = R::Seq<'a>
    where
        Self: 'a;
    type Text<'a>
        = R::Text<'a>
    where
        Self: 'a;
    type Counter<'a>
        = R::Counter<'a>
    where
        Self: 'a;

    fn none(&mut self) -> Result<(), Self::Error> {
        self.inner.none()
    }
    fn bytes<B: AsRef<[u8]>>(&mut self, value: B) -> Result<(), Self::Error> {
        self.inner.bytes(value)
    }
    fn timestamp(&mut self, value: i64) -> Result<(), Self::Error> {
        self.inner.timestamp(value)
    }
    fn boolean(&mut self, value: bool) -> Result<(), Self::Error> {
        self.inner.boolean(value)
    }
    fn str<S: AsRef<str>>(&mut self, value: S) -> Result<(), Self::Error> {
        self.inner.str(value)
    }
    fn u64(&mut self, value: u64) -> Result<(), Self::Error> {
        self.inner.u64(value)
    }
    fn i64(&mut self, value: i64) -> Result<(), Self::Error> {
        self.inner.i64(value)
    }
    fn f64(&mut self, value: f64) -> Result<(), Self::Error> {
        self.inner.f64(value)
    }
    fn map(&mut self) -> Result<Self::Map<'_>, Self::Error> {
        Ok(SkipMap {
            inner: self.inner.map()?,
            snapshot: self.snapshot,
        })
    }
    fn seq(&mut self) -> Result<Self::Seq<'_>, Self::Error> {
        self.inner.seq()
    }
    fn text(&mut self) -> Result<Self::Text<'_>, Self::Error> {
        self.inner.text()
    }
    fn counter(&mut self) -> Result<Self::Counter<'_>, Self::Error> {
        self.inner.counter()
    }
    fn heads(&self) -> &[am::ChangeHash] {
        self.inner.heads()
    }
}

struct SkipMap<'s, M> {
    inner: M,
    snapshot: &'s Snapshot,
}

impl<M: MapReconciler> MapReconciler for SkipMap<'_, M> {
    type Error = M::Error;
    type EntriesIter<'a>
        = M::EntriesIter<'a>
    where
        Self: 'a;

    fn entries(&self) -> Self::EntriesIter<'_> {
        self.inner.entries()
    }

    fn entry<P: AsRef<str>>(&self, prop: P) -> Option<am::Value<'_>> {
        self.snapshot
            .fields
            .get(prop.as_ref())
            .map(|(v, _)| v.clone())
    }

    fn put<R: Reconcile, P: AsRef<str>>(&mut self, prop: P, value: R) -> Result<(), Self::Error> {
        let repr = represent(&value);
        if let Some((_, held)) = self.snapshot.fields.get(prop.as_ref())
            && repr.as_ref().is_some_and(|r| r.same(held))
        {
            return Ok(());
        }
        if matches!(repr, Some(Repr::Scalar(_))) {
            // Reconcile first compares the value's key with the one the
            // document holds (a read of the document, for a string), but a
            // scalar is put the same way whatever it finds: a differing key
            // only routes the same put through `batch_create`.
            return self.inner.put(prop, Unkeyed(&value));
        }
        self.inner.put(prop, value)
    }

    fn delete<P: AsRef<str>>(&mut self, prop: P) -> Result<(), Self::Error> {
        self.inner.delete(prop)
    }

    fn hydrate_entry_key<'a, R: Reconcile, P: AsRef<str>>(
        &self,
        prop: P,
    ) -> Result<LoadKey<R::Key<'a>>, Self::Error> {
        self.inner.hydrate_entry_key::<R, P>(prop)
    }

    fn retain<F: FnMut(&str, am::ValueRef<'_>) -> bool>(
        &mut self,
        pred: F,
    ) -> Result<(), Self::Error> {
        self.inner.retain(pred)
    }
}

/// A value reconciled as itself, but with no key to compare, so reconcile
/// does not read the document for one. Only for values that reconcile to a
/// scalar (see [`SkipMap::put`]).
struct Unkeyed<'a, R>(&'a R);

impl<R: Reconcile> Reconcile for Unkeyed<'_, R> {
    type Key<'k> = autosurgeon::reconcile::NoKey;

    fn reconcile<Rc: Reconciler>(&self, reconciler: Rc) -> Result<(), Rc::Error> {
        self.0.reconcile(reconciler)
    }
}

/// What reconcile would leave in an empty document for `value`, or `None`
/// when it writes nothing.
pub(crate) fn represent<R: Reconcile>(value: &R) -> Option<Repr> {
    let mut out = None;
    value.reconcile(Build { out: &mut out }).ok()?;
    out
}

/// Builds a [`Repr`] instead of writing to a document.
struct Build<'a> {
    out: &'a mut Option<Repr>,
}

impl Build<'_> {
    fn set(&mut self, s: impl Into<am::ScalarValue>) -> Result<(), StaleHeads> {
        *self.out = Some(Repr::Scalar(s.into()));
        Ok(())
    }
}

impl Reconciler for Build<'_> {
    type Error = StaleHeads;
    type Map<'a>
        = BuildMap<'a>
    where
        Self: 'a;
    type Seq<'a>
        = BuildSeq<'a>
    where
        Self: 'a;
    type Text<'a>
        = BuildOpaque<'a>
    where
        Self: 'a;
    type Counter<'a>
        = BuildOpaque<'a>
    where
        Self: 'a;

    fn none(&mut self) -> Result<(), StaleHeads> {
        self.set(am::ScalarValue::Null)
    }
    fn bytes<B: AsRef<[u8]>>(&mut self, value: B) -> Result<(), StaleHeads> {
        self.set(am::ScalarValue::Bytes(value.as_ref().to_vec()))
    }
    fn timestamp(&mut self, value: i64) -> Result<(), StaleHeads> {
        self.set(am::ScalarValue::Timestamp(value))
    }
    fn boolean(&mut self, value: bool) -> Result<(), StaleHeads> {
        self.set(value)
    }
    fn str<S: AsRef<str>>(&mut self, value: S) -> Result<(), StaleHeads> {
        self.set(value.as_ref())
    }
    fn u64(&mut self, value: u64) -> Result<(), StaleHeads> {
        self.set(value)
    }
    fn i64(&mut self, value: i64) -> Result<(), StaleHeads> {
        self.set(value)
    }
    fn f64(&mut self, value: f64) -> Result<(), StaleHeads> {
        self.set(value)
    }
    fn map(&mut self) -> Result<BuildMap<'_>, StaleHeads> {
        Ok(BuildMap {
            map: BTreeMap::new(),
            out: self.out,
        })
    }
    fn seq(&mut self) -> Result<BuildSeq<'_>, StaleHeads> {
        Ok(BuildSeq {
            items: Vec::new(),
            out: self.out,
        })
    }
    fn text(&mut self) -> Result<BuildOpaque<'_>, StaleHeads> {
        Ok(BuildOpaque { out: self.out })
    }
    fn counter(&mut self) -> Result<BuildOpaque<'_>, StaleHeads> {
        Ok(BuildOpaque { out: self.out })
    }
    fn heads(&self) -> &[am::ChangeHash] {
        &[]
    }
}

struct BuildMap<'a> {
    map: BTreeMap<String, Repr>,
    out: &'a mut Option<Repr>,
}

impl Drop for BuildMap<'_> {
    fn drop(&mut self) {
        *self.out = Some(Repr::Map(std::mem::take(&mut self.map)));
    }
}

impl MapReconciler for BuildMap<'_> {
    type Error = StaleHeads;
    type EntriesIter<'b>
        = std::vec::IntoIter<(Cow<'b, str>, am::ValueRef<'b>)>
    where
        Self: 'b;

    fn entries(&self) -> Self::EntriesIter<'_> {
        self.map
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), value_ref(v)))
            .collect::<Vec<_>>()
            .into_iter()
    }
    fn entry<P: AsRef<str>>(&self, prop: P) -> Option<am::Value<'_>> {
        self.map
            .get(prop.as_ref())
            .map(|v| value_ref(v).into_value())
    }
    fn put<R: Reconcile, P: AsRef<str>>(&mut self, prop: P, value: R) -> Result<(), StaleHeads> {
        if let Some(r) = represent(&value) {
            self.map.insert(prop.as_ref().to_string(), r);
        }
        Ok(())
    }
    fn delete<P: AsRef<str>>(&mut self, prop: P) -> Result<(), StaleHeads> {
        self.map.remove(prop.as_ref());
        Ok(())
    }
    fn hydrate_entry_key<'b, R: Reconcile, P: AsRef<str>>(
        &self,
        _prop: P,
    ) -> Result<LoadKey<R::Key<'b>>, StaleHeads> {
        Ok(LoadKey::KeyNotFound)
    }
}

struct BuildSeq<'a> {
    items: Vec<Repr>,
    out: &'a mut Option<Repr>,
}

impl Drop for BuildSeq<'_> {
    fn drop(&mut self) {
        *self.out = Some(Repr::List(std::mem::take(&mut self.items)));
    }
}

impl SeqReconciler for BuildSeq<'_> {
    type Error = StaleHeads;
    type ItemIter<'b>
        = std::vec::IntoIter<am::ValueRef<'b>>
    where
        Self: 'b;

    fn items(&self) -> Self::ItemIter<'_> {
        self.items
            .iter()
            .map(value_ref)
            .collect::<Vec<_>>()
            .into_iter()
    }
    fn get(&self, index: usize) -> Result<Option<am::Value<'_>>, StaleHeads> {
        Ok(self.items.get(index).map(|v| value_ref(v).into_value()))
    }
    fn hydrate_item_key<'b, R: Reconcile>(
        &self,
        _index: usize,
    ) -> Result<LoadKey<R::Key<'b>>, StaleHeads> {
        Ok(LoadKey::KeyNotFound)
    }
    fn insert<R: Reconcile>(&mut self, index: usize, value: R) -> Result<(), StaleHeads> {
        let r = represent(&value).unwrap_or(Repr::Opaque);
        if index <= self.items.len() {
            self.items.insert(index, r);
        } else {
            self.items.push(Repr::Opaque);
        }
        Ok(())
    }
    fn set<R: Reconcile>(&mut self, index: usize, value: R) -> Result<(), StaleHeads> {
        let r = represent(&value).unwrap_or(Repr::Opaque);
        match self.items.get_mut(index) {
            Some(slot) => *slot = r,
            None => self.items.push(Repr::Opaque),
        }
        Ok(())
    }
    fn delete(&mut self, index: usize) -> Result<(), StaleHeads> {
        if index < self.items.len() {
            self.items.remove(index);
        }
        Ok(())
    }
    fn len(&self) -> Result<usize, StaleHeads> {
        Ok(self.items.len())
    }
}

/// Text and counters: never compared, so never skipped.
struct BuildOpaque<'a> {
    out: &'a mut Option<Repr>,
}

impl Drop for BuildOpaque<'_> {
    fn drop(&mut self) {
        *self.out = Some(Repr::Opaque);
    }
}

impl TextReconciler for BuildOpaque<'_> {
    type Error = StaleHeads;
    fn splice<S: AsRef<str>>(&mut self, _: usize, _: isize, _: S) -> Result<(), StaleHeads> {
        Ok(())
    }
    fn heads(&self) -> &[am::ChangeHash] {
        &[]
    }
    fn update<S: AsRef<str>>(&mut self, _: S) -> Result<(), StaleHeads> {
        Ok(())
    }
}

impl CounterReconciler for BuildOpaque<'_> {
    type Error = StaleHeads;
    fn increment(&mut self, _: i64) -> Result<(), StaleHeads> {
        Ok(())
    }
    fn set(&mut self, _: i64) -> Result<(), StaleHeads> {
        Ok(())
    }
}

/// What a reconcile of a nested value sees while building: scalars as they
/// are, objects by type only.
fn value_ref(r: &Repr) -> am::ValueRef<'static> {
    match r {
        Repr::Scalar(s) => am::ValueRef::Scalar(s.clone().into()),
        Repr::Map(_) => am::ValueRef::Object(am::ObjType::Map),
        Repr::List(_) => am::ValueRef::Object(am::ObjType::List),
        Repr::Opaque => am::ValueRef::Scalar(am::ScalarValueRef::Null),
    }
}
