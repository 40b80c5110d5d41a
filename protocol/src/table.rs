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

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use autosurgeon::{Hydrate, HydrateError, Prop, ReadDoc, Reconcile, Reconciler};
use rpds::RedBlackTreeMapSync;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ordered, persistent map from id to `V`.
#[derive(Clone)]
pub struct Table<V>(RedBlackTreeMapSync<String, V>);

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table(RedBlackTreeMapSync::new_sync())
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
        self.0.get(key)
    }

    pub fn get_key_value<Q: Ord + ?Sized>(&self, key: &Q) -> Option<(&String, &V)>
    where
        String: Borrow<Q>,
    {
        self.0.get_key_value(key)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        String: Borrow<Q>,
    {
        self.0.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.0.size()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &V)> + '_ {
        self.0.iter()
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + '_ {
        self.0.keys()
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.0.values()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Whether both are the same map in memory (a copy nothing wrote to
    /// since): then they are equal without comparing entities.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        self.0.ptr_eq(&other.0)
    }
}

impl<V: Clone> Table<V> {
    /// Inserts `value` under `key`; returns the value it replaces.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        let old = self.0.get(&key).cloned();
        self.0.insert_mut(key, value);
        old
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        String: Borrow<Q>,
    {
        let old = self.0.get(key).cloned()?;
        self.0.remove_mut(key);
        Some(old)
    }

    /// Sets (`Some`) or removes (`None`) `key`, without returning the old
    /// value (no clone of it).
    pub fn set(&mut self, key: &str, value: Option<V>) {
        match value {
            Some(v) => self.0.insert_mut(key.to_string(), v),
            None => {
                self.0.remove_mut(key);
            }
        }
    }

    /// The value under `key`, writable; copies it (and the path to it) when
    /// it is shared with another copy of the table.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        String: Borrow<Q>,
    {
        if !self.0.contains_key(key) {
            // rpds copies the search path even when the key is absent.
            return None;
        }
        self.0.get_mut(key)
    }

    /// The values in key order (copies: the map may share them).
    pub fn into_values(self) -> impl Iterator<Item = V> {
        let v: Vec<V> = self.0.values().cloned().collect();
        v.into_iter()
    }

    /// Keeps the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &V) -> bool) {
        let gone: Vec<String> = self
            .0
            .iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.0.remove_mut(&k);
        }
    }
}

impl<V: PartialEq> PartialEq for Table<V> {
    fn eq(&self, other: &Self) -> bool {
        self.0.ptr_eq(&other.0) || self.0 == other.0
    }
}

impl<V: Eq> Eq for Table<V> {}

impl<V: fmt::Debug> fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl<V, Q: Ord + ?Sized> std::ops::Index<&Q> for Table<V>
where
    String: Borrow<Q>,
{
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        #[allow(clippy::expect_used)]
        self.0.get(key).expect("no entry found for key")
    }
}

impl<V: Clone> FromIterator<(String, V)> for Table<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut t = Table::new();
        t.extend(iter);
        t
    }
}

impl<V: Clone> Extend<(String, V)> for Table<V> {
    fn extend<I: IntoIterator<Item = (String, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.0.insert_mut(k, v);
        }
    }
}

impl<V: Clone, const N: usize> From<[(String, V); N]> for Table<V> {
    fn from(a: [(String, V); N]) -> Self {
        a.into_iter().collect()
    }
}

impl<V: Clone> From<BTreeMap<String, V>> for Table<V> {
    fn from(m: BTreeMap<String, V>) -> Self {
        m.into_iter().collect()
    }
}

impl<'a, V> IntoIterator for &'a Table<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = rpds::map::red_black_tree_map::Iter<'a, String, V, archery::ArcTK>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<V: Serialize> Serialize for Table<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

impl<'de, V: Deserialize<'de> + Clone> Deserialize<'de> for Table<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, V>::deserialize(d).map(Table::from)
    }
}

impl<V: Hydrate + Clone> Hydrate for Table<V> {
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
        let m: BTreeMap<&String, &V> = self.0.iter().collect();
        m.reconcile(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r.get_mut("b"), None);
    }
}
