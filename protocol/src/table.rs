//! [`Table`]: one collection of the typed team state, a map from id to
//! entity that is cheap to copy.
//!
//! A replica checks a concurrent op against the state at the op's causal
//! past: a copy of the current state with the few entities concurrent ops
//! wrote read again. With `BTreeMap`s that copy was a deep clone of every
//! entity of the team, the largest cost of a concurrent op. A persistent
//! map (`rpds`' red-black tree, nodes shared through `Arc`) makes the copy
//! O(1) and a write O(log n), sharing everything it does not touch. The
//! daemon's readers, which take a copy of the state per request, gain the
//! same way.
//!
//! The API is the part of `BTreeMap`'s the code uses; iteration is in key
//! order, as before, and the serde and autosurgeon forms are a map's.
//!
//! A table also keeps secondary indexes: each entity names the keys it is
//! found by ([`Indexed`]: a product by its name, a deployment by its
//! version, node and slot, ...). The rules ask "is this name taken?" or
//! "which deployments hold this slot?" once per op, and a scan of the whole
//! collection made every op cost O(entities), which dominated a long-lived
//! team. The indexes are persistent sets too, so a copy stays O(1). Lookups
//! yield ids in id order, the order a scan of the table would find them in,
//! so a rule or an effect gives the same answer (and the same change bytes)
//! as the scan it replaces.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use autosurgeon::{Hydrate, HydrateError, Prop, ReadDoc, Reconcile, Reconciler};
use rpds::{RedBlackTreeMapSync, RedBlackTreeSetSync};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secondary index finds an entity by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum By {
    /// A name unique in the collection (or within its parent: see the
    /// entity's [`Indexed`] impl for the key's form).
    Name,
    /// The product an entity belongs to.
    Product,
    /// The version a deployment places.
    Version,
    /// The node a deployment targets.
    Node,
    /// A deployment's node and prefix: [`slot`].
    Slot,
    /// The invite a member or node joined with.
    Invite,
}

/// The key of [`By::Slot`] (and of any key made of two parts): the parts
/// joined by a byte no id, name or prefix holds.
pub fn slot(a: &str, b: &str) -> String {
    let mut k = String::with_capacity(a.len() + b.len() + 1);
    k.push_str(a);
    k.push('\0');
    k.push_str(b);
    k
}

/// The keys an entity is found by in its table's indexes.
pub trait Indexed {
    /// Calls `key` once for each (index, key) this entity is found by.
    fn index_keys(&self, _key: &mut dyn FnMut(By, String)) {}
}

/// One index entry: (index, key, id). Ordered so that the ids under one
/// key are contiguous and in id order.
type IxEntry = (By, String, String);

/// An ordered, persistent map from id to `V`, with the secondary indexes
/// `V` names.
#[derive(Clone)]
pub struct Table<V> {
    map: RedBlackTreeMapSync<String, V>,
    ix: RedBlackTreeSetSync<IxEntry>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            map: RedBlackTreeMapSync::new_sync(),
            ix: RedBlackTreeSetSync::new_sync(),
        }
    }
}

impl<V> Table<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        String: Borrow<Q>,
    {
        self.map.get(key)
    }

    pub fn get_key_value<Q: Ord + ?Sized>(&self, key: &Q) -> Option<(&String, &V)>
    where
        String: Borrow<Q>,
    {
        self.map.get_key_value(key)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        String: Borrow<Q>,
    {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.size()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &V)> + '_ {
        self.map.iter()
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + '_ {
        self.map.keys()
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.map.values()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The ids found under `key` in the index `by`, in id order.
    pub fn ids_by<'a, 'k>(
        &'a self,
        by: By,
        key: &'k str,
    ) -> impl Iterator<Item = &'a String> + use<'a, 'k, V> {
        let start: IxEntry = (by, key.to_string(), String::new());
        self.ix
            .range(start..)
            .take_while(move |(b, k, _)| *b == by && k == key)
            .map(|(_, _, id)| id)
    }

    /// The entities found under `key` in the index `by`, in id order.
    pub fn find_by<'a, 'k>(
        &'a self,
        by: By,
        key: &'k str,
    ) -> impl Iterator<Item = &'a V> + use<'a, 'k, V> {
        self.ids_by(by, key).filter_map(|id| self.map.get(id))
    }

    /// Whether any entity is found under `key` in the index `by`.
    pub fn any_by(&self, by: By, key: &str) -> bool {
        self.ids_by(by, key).next().is_some()
    }

    /// Whether both are the same map in memory (a copy nothing wrote to
    /// since): then they are equal without comparing entities.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        self.map.ptr_eq(&other.map)
    }
}

impl<V: Clone + Indexed> Table<V> {
    /// Writes `value` under `key` (or removes `key`), keeping the indexes
    /// in step: the old value's keys leave, the new value's arrive.
    fn put(&mut self, key: String, value: Option<V>) {
        let mut old = Vec::new();
        if let Some(v) = self.map.get(&key) {
            v.index_keys(&mut |b, k| old.push((b, k)));
        }
        let mut new = Vec::new();
        if let Some(v) = &value {
            v.index_keys(&mut |b, k| new.push((b, k)));
        }
        // Most writes keep an entity's keys: those entries stay untouched.
        let keeps = |list: &[(By, String)], b: &By, k: &String| {
            list.iter().any(|(lb, lk)| lb == b && lk == k)
        };
        for (b, k) in &old {
            if !keeps(&new, b, k) {
                self.ix.remove_mut(&(*b, k.clone(), key.clone()));
            }
        }
        for (b, k) in new {
            if !keeps(&old, &b, &k) {
                self.ix.insert_mut((b, k, key.clone()));
            }
        }
        match value {
            Some(v) => self.map.insert_mut(key, v),
            None => {
                self.map.remove_mut(&key);
            }
        }
    }

    /// Inserts `value` under `key`; returns the value it replaces.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        let old = self.map.get(&key).cloned();
        self.put(key, Some(value));
        old
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Ord + ?Sized + ToString>(&mut self, key: &Q) -> Option<V>
    where
        String: Borrow<Q>,
    {
        let old = self.map.get(key).cloned()?;
        self.put(key.to_string(), None);
        Some(old)
    }

    /// Sets (`Some`) or removes (`None`) `key`, without returning the old
    /// value (no clone of it).
    pub fn set(&mut self, key: &str, value: Option<V>) {
        if value.is_none() && !self.map.contains_key(key) {
            return;
        }
        self.put(key.to_string(), value);
    }

    /// The value under `key`, writable. The guard writes it back when
    /// dropped, so the indexes follow any change of its keys.
    pub fn get_mut<Q: Ord + ?Sized + ToString>(&mut self, key: &Q) -> Option<EntryMut<'_, V>>
    where
        String: Borrow<Q>,
    {
        let value = self.map.get(key).cloned()?;
        Some(EntryMut {
            key: key.to_string(),
            value: Some(value),
            table: self,
        })
    }

    /// The values in key order (copies: the map may share them).
    pub fn into_values(self) -> impl Iterator<Item = V> {
        let v: Vec<V> = self.map.values().cloned().collect();
        v.into_iter()
    }

    /// Keeps the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &V) -> bool) {
        let gone: Vec<String> = self
            .map
            .iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.put(k, None);
        }
    }
}

/// A value of a [`Table`] being changed; written back (and re-indexed)
/// when dropped.
pub struct EntryMut<'a, V: Clone + Indexed> {
    table: &'a mut Table<V>,
    key: String,
    value: Option<V>,
}

impl<V: Clone + Indexed + fmt::Debug> fmt::Debug for EntryMut<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EntryMut").field(&self.value).finish()
    }
}

impl<V: Clone + Indexed> Deref for EntryMut<'_, V> {
    type Target = V;

    fn deref(&self) -> &V {
        #[allow(clippy::expect_used)]
        self.value.as_ref().expect("taken only on drop")
    }
}

impl<V: Clone + Indexed> DerefMut for EntryMut<'_, V> {
    fn deref_mut(&mut self) -> &mut V {
        #[allow(clippy::expect_used)]
        self.value.as_mut().expect("taken only on drop")
    }
}

impl<V: Clone + Indexed> Drop for EntryMut<'_, V> {
    fn drop(&mut self) {
        if let Some(v) = self.value.take() {
            self.table.put(std::mem::take(&mut self.key), Some(v));
        }
    }
}

impl<V: PartialEq> PartialEq for Table<V> {
    fn eq(&self, other: &Self) -> bool {
        self.map.ptr_eq(&other.map) || self.map == other.map
    }
}

impl<V: Eq> Eq for Table<V> {}

impl<V: fmt::Debug> fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.map.iter()).finish()
    }
}

impl<V, Q: Ord + ?Sized> std::ops::Index<&Q> for Table<V>
where
    String: Borrow<Q>,
{
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        #[allow(clippy::expect_used)]
        self.map.get(key).expect("no entry found for key")
    }
}

impl<V: Clone + Indexed> FromIterator<(String, V)> for Table<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut t = Table::new();
        t.extend(iter);
        t
    }
}

impl<V: Clone + Indexed> Extend<(String, V)> for Table<V> {
    fn extend<I: IntoIterator<Item = (String, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.put(k, Some(v));
        }
    }
}

impl<V: Clone + Indexed, const N: usize> From<[(String, V); N]> for Table<V> {
    fn from(a: [(String, V); N]) -> Self {
        a.into_iter().collect()
    }
}

impl<V: Clone + Indexed> From<BTreeMap<String, V>> for Table<V> {
    fn from(m: BTreeMap<String, V>) -> Self {
        m.into_iter().collect()
    }
}

impl<'a, V> IntoIterator for &'a Table<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = rpds::map::red_black_tree_map::Iter<'a, String, V, archery::ArcTK>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<V: Serialize> Serialize for Table<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.map.iter())
    }
}

impl<'de, V: Deserialize<'de> + Clone + Indexed> Deserialize<'de> for Table<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, V>::deserialize(d).map(Table::from)
    }
}

impl<V: Hydrate + Clone + Indexed> Hydrate for Table<V> {
    fn hydrate<D: ReadDoc>(
        doc: &D,
        obj: &automerge::ObjId,
        prop: Prop<'_>,
    ) -> Result<Self, HydrateError> {
        BTreeMap::<String, V>::hydrate(doc, obj, prop).map(Table::from)
    }

    fn hydrate_map<D: ReadDoc>(doc: &D, obj: &automerge::ObjId) -> Result<Self, HydrateError> {
        BTreeMap::<String, V>::hydrate_map(doc, obj).map(Table::from)
    }
}

impl<V: Reconcile> Reconcile for Table<V> {
    type Key<'a> = autosurgeon::reconcile::NoKey;

    fn reconcile<R: Reconciler>(&self, r: R) -> Result<(), R::Error> {
        // The same ops as a `BTreeMap`'s reconcile: autosurgeon's map.
        let m: BTreeMap<&String, &V> = self.map.iter().collect();
        m.reconcile(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    impl Indexed for u32 {}
    impl Indexed for u8 {}

    /// An entity found by its name, and by its group unless it is hidden.
    #[derive(Clone, Debug, PartialEq)]
    struct Thing {
        name: String,
        group: String,
        hidden: bool,
    }

    impl Indexed for Thing {
        fn index_keys(&self, key: &mut dyn FnMut(By, String)) {
            key(By::Name, self.name.clone());
            if !self.hidden {
                key(By::Product, slot(&self.group, &self.name));
            }
        }
    }

    /// What the indexes must answer: a scan of the table, in id order.
    fn scanned(t: &Table<Thing>, by: By, key: &str) -> Vec<String> {
        t.iter()
            .filter(|(_, v)| match by {
                By::Name => v.name == key,
                _ => !v.hidden && slot(&v.group, &v.name) == key,
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn check(t: &Table<Thing>) -> Result<(), TestCaseError> {
        for name in ["a", "b", "c"] {
            let got: Vec<String> = t.ids_by(By::Name, name).cloned().collect();
            prop_assert_eq!(&got, &scanned(t, By::Name, name));
            prop_assert_eq!(t.any_by(By::Name, name), !got.is_empty());
            for group in ["g", "h"] {
                let k = slot(group, name);
                let got: Vec<String> = t.ids_by(By::Product, &k).cloned().collect();
                prop_assert_eq!(got, scanned(t, By::Product, &k));
            }
        }
        // No stale entry: every index entry names a live entity with that key.
        let live: usize = t.values().map(|v| if v.hidden { 1 } else { 2 }).sum();
        prop_assert_eq!(t.ix.size(), live);
        Ok(())
    }

    type Contents = Vec<(String, Thing)>;

    #[derive(Clone, Debug)]
    enum Step {
        Insert(u8, Thing),
        Set(u8, Option<Thing>),
        Remove(u8),
        Rename(u8, String),
        Hide(u8, bool),
        Retain(u8),
        Snapshot,
    }

    fn thing() -> impl Strategy<Value = Thing> {
        (
            prop::sample::select(vec!["a", "b", "c"]),
            prop::sample::select(vec!["g", "h"]),
            any::<bool>(),
        )
            .prop_map(|(n, g, hidden)| Thing {
                name: n.into(),
                group: g.into(),
                hidden,
            })
    }

    fn step() -> impl Strategy<Value = Step> {
        let id = 0u8..8;
        prop_oneof![
            (id.clone(), thing()).prop_map(|(i, t)| Step::Insert(i, t)),
            (id.clone(), prop::option::of(thing())).prop_map(|(i, t)| Step::Set(i, t)),
            id.clone().prop_map(Step::Remove),
            (id.clone(), prop::sample::select(vec!["a", "b", "c"]))
                .prop_map(|(i, n)| Step::Rename(i, n.into())),
            (id.clone(), any::<bool>()).prop_map(|(i, h)| Step::Hide(i, h)),
            id.prop_map(Step::Retain),
            Just(Step::Snapshot),
        ]
    }

    proptest! {
        /// After any sequence of writes, every index lookup answers what a
        /// scan answers, in the same order, and copies taken on the way
        /// still answer for their own contents.
        #[test]
        fn indexes_answer_what_a_scan_answers(steps in prop::collection::vec(step(), 1..60)) {
            let mut t: Table<Thing> = Table::new();
            let mut copies: Vec<(Table<Thing>, Contents)> = Vec::new();
            for s in steps {
                match s {
                    Step::Insert(i, v) => {
                        t.insert(i.to_string(), v);
                    }
                    Step::Set(i, v) => t.set(&i.to_string(), v),
                    Step::Remove(i) => {
                        t.remove(&i.to_string());
                    }
                    Step::Rename(i, n) => {
                        if let Some(mut e) = t.get_mut(&i.to_string()) {
                            e.name = n;
                        }
                    }
                    Step::Hide(i, h) => {
                        if let Some(mut e) = t.get_mut(&i.to_string()) {
                            e.hidden = h;
                        }
                    }
                    Step::Retain(i) => t.retain(|k, _| k.as_str() != i.to_string()),
                    Step::Snapshot => {
                        let contents = t.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        copies.push((t.clone(), contents));
                    }
                }
                check(&t)?;
            }
            for (c, contents) in &copies {
                let now: Contents = c.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(&now, contents);
                check(c)?;
            }
        }
    }

    #[test]
    fn a_copy_is_unchanged_by_writes_to_the_original() {
        let mut a: Table<u32> = [("x".to_string(), 1), ("y".to_string(), 2)].into();
        let b = a.clone();
        assert!(a.ptr_eq(&b));
        *a.get_mut("x").unwrap() = 10;
        assert_eq!(a.insert("z".into(), 3), None);
        assert_eq!(a.remove("y"), Some(2));
        assert_eq!(b.get("x"), Some(&1));
        assert_eq!(b.get("y"), Some(&2));
        assert!(!b.contains_key("z"));
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            vec![(&"x".to_string(), &10), (&"z".to_string(), &3)]
        );
        assert_ne!(a, b);
    }

    #[test]
    fn iterates_in_key_order_and_serializes_as_a_map() {
        let t: Table<u8> = [
            ("b".to_string(), 2),
            ("a".to_string(), 1),
            ("c".to_string(), 3),
        ]
        .into();
        assert_eq!(
            t.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"a":1,"b":2,"c":3}"#);
        let back: Table<u8> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        let mut r = t.clone();
        r.retain(|k, _| k != "b");
        assert_eq!(r.len(), 2);
        assert!(r.get_mut("b").is_none());
    }
}
