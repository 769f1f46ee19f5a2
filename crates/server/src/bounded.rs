//! A map for caches that are cheap to refill, with a hard bound on its entries.

use std::collections::HashMap;
use std::sync::Mutex;

/// A map for caches that are cheap to refill: once it holds `limit` entries it starts over.
pub struct BoundedMap<K, V> {
    entries: Mutex<HashMap<K, V>>,
    limit: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> BoundedMap<K, V> {
    pub fn new(limit: usize) -> BoundedMap<K, V> {
        BoundedMap { entries: Mutex::new(HashMap::new()), limit }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.entries.lock().expect("cache lock").get(key).cloned()
    }

    pub fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= self.limit {
            entries.clear();
        }
        entries.insert(key, value);
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.entries.lock().expect("cache lock").remove(key);
    }
}
