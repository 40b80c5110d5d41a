//! Node-local values that are never replicated (`local_v1`), grouped by
//! namespace: executor progress, container logs, the node key seed, ...

use super::Store;
use super::error::{At, StoreError, corrupt};
use super::keys::{local_key, local_prefix};
use super::schema::LOCAL;

impl Store {
    /// Sets `key` in namespace `ns`.
    pub fn put_local(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let p = &self.path;
        let k = local_key(ns, key)?;
        let txn = self.write()?;
        {
            let mut t = txn.open_table(LOCAL).at(p)?;
            t.insert(k.as_slice(), value).at(p)?;
        }
        txn.commit().at(p)
    }

    /// The value of `key` in namespace `ns`.
    pub fn get_local(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let p = &self.path;
        let k = local_key(ns, key)?;
        let txn = self.read()?;
        let t = txn.open_table(LOCAL).at(p)?;
        Ok(t.get(k.as_slice()).at(p)?.map(|v| v.value().to_vec()))
    }

    /// Removes `key` from namespace `ns`; returns whether it was there.
    pub fn delete_local(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        let p = &self.path;
        let k = local_key(ns, key)?;
        let txn = self.write()?;
        let existed = {
            let mut t = txn.open_table(LOCAL).at(p)?;
            t.remove(k.as_slice()).at(p)?.is_some()
        };
        txn.commit().at(p)?;
        Ok(existed)
    }

    /// Removes `keys` from namespace `ns` in one transaction; returns how
    /// many were there.
    pub fn delete_local_keys(&self, ns: &str, keys: &[String]) -> Result<usize, StoreError> {
        let p = &self.path;
        let txn = self.write()?;
        let mut removed = 0;
        {
            let mut t = txn.open_table(LOCAL).at(p)?;
            for key in keys {
                let k = local_key(ns, key)?;
                if t.remove(k.as_slice()).at(p)?.is_some() {
                    removed += 1;
                }
            }
        }
        txn.commit().at(p)?;
        Ok(removed)
    }

    /// Every key and value of namespace `ns`, ordered by key bytes.
    pub fn list_local(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let p = &self.path;
        let prefix = local_prefix(ns)?;
        let txn = self.read()?;
        let t = txn.open_table(LOCAL).at(p)?;
        let mut out = Vec::new();
        for entry in t.range(prefix.as_slice()..).at(p)? {
            let (k, v) = entry.at(p)?;
            let Some(key) = k.value().strip_prefix(prefix.as_slice()) else {
                break;
            };
            let key = std::str::from_utf8(key)
                .map_err(|_| corrupt(p, format!("a key of local namespace {ns:?} is not UTF-8")))?;
            out.push((key.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    use crate::store::test_support::temp;

    #[test]
    fn local_values_round_trip() {
        let (_dir, path) = temp();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get_local("node", "seed").unwrap(), None);
        store.put_local("node", "seed", &[7; 32]).unwrap();
        store.put_local("exec", "dep-2", b"pulling").unwrap();
        store.put_local("exec", "dep-1", b"started").unwrap();
        store.put_local("exec", "", b"empty key").unwrap();
        // Namespaces that are prefixes of each other stay apart.
        store.put_local("a", "bc", b"1").unwrap();
        store.put_local("ab", "c", b"2").unwrap();
        store.put_local("", "k", b"3").unwrap();
        assert_eq!(store.get_local("node", "seed").unwrap(), Some(vec![7; 32]));
        assert_eq!(
            store.list_local("exec").unwrap(),
            vec![
                (String::new(), b"empty key".to_vec()),
                ("dep-1".to_string(), b"started".to_vec()),
                ("dep-2".to_string(), b"pulling".to_vec()),
            ]
        );
        assert_eq!(
            store.list_local("a").unwrap(),
            vec![("bc".to_string(), b"1".to_vec())]
        );
        assert_eq!(
            store.list_local("ab").unwrap(),
            vec![("c".to_string(), b"2".to_vec())]
        );
        assert_eq!(
            store.list_local("").unwrap(),
            vec![("k".to_string(), b"3".to_vec())]
        );
        assert!(store.list_local("none").unwrap().is_empty());
        store.put_local("exec", "dep-1", b"done").unwrap();
        assert_eq!(
            store.get_local("exec", "dep-1").unwrap(),
            Some(b"done".to_vec())
        );
        assert!(store.delete_local("exec", "dep-1").unwrap());
        assert!(!store.delete_local("exec", "dep-1").unwrap());
        assert_eq!(store.get_local("exec", "dep-1").unwrap(), None);
        assert_eq!(store.list_local("exec").unwrap().len(), 2);
        let gone = ["dep-2".to_string(), "nothing".to_string()];
        assert_eq!(store.delete_local_keys("exec", &gone).unwrap(), 1);
        assert_eq!(
            store.list_local("exec").unwrap(),
            vec![(String::new(), b"empty key".to_vec())]
        );
        assert_eq!(
            store.list_local("ab").unwrap().len(),
            1,
            "other namespaces stay"
        );
        let long = "n".repeat(70_000);
        assert!(matches!(
            store.put_local(&long, "k", b""),
            Err(StoreError::Invalid(_))
        ));
    }
}
