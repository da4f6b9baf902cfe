//! A small least-recently-used cache of compiled grammars.
//!
//! Few distinct grammars are live at once (a service's handful of schemas), so a vector
//! scanned linearly is enough and keeps the code obvious: 64 key comparisons cost less
//! than one mask. Keys are the spec's canonical text; values are fresh matchers that
//! callers deep-clone.

/// At most `capacity` entries; the least recently used one goes first.
#[derive(Debug)]
pub(crate) struct LruCache<V> {
    capacity: usize,
    /// Most recently used last.
    entries: Vec<(String, V)>,
}

impl<V> LruCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Vec::new(),
        }
    }

    /// The value for `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &str) -> Option<&V> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(at);
        self.entries.push(entry);
        self.entries.last().map(|(_, v)| v)
    }

    /// Stores `value` under `key` (replacing an older value), evicting the least
    /// recently used entry when full.
    pub(crate) fn insert(&mut self, key: String, value: V) {
        if let Some(at) = self.entries.iter().position(|(k, _)| *k == key) {
            self.entries.remove(at);
        } else if self.entries.len() >= self.capacity && !self.entries.is_empty() {
            self.entries.remove(0);
        }
        if self.capacity > 0 {
            self.entries.push((key, value));
        }
    }

    #[cfg(test)]
    fn keys(&self) -> Vec<&str> {
        self.entries.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_is_evicted() {
        let mut cache = LruCache::new(2);
        cache.insert("a".into(), 1);
        cache.insert("b".into(), 2);
        assert_eq!(cache.get("a"), Some(&1));
        cache.insert("c".into(), 3);
        assert_eq!(cache.keys(), ["a", "c"]);
        assert_eq!(cache.get("b"), None);
        cache.insert("a".into(), 4);
        assert_eq!(cache.keys(), ["c", "a"]);
        assert_eq!(cache.get("a"), Some(&4));
    }

    #[test]
    fn a_zero_capacity_cache_keeps_nothing() {
        let mut cache = LruCache::new(0);
        cache.insert("a".into(), 1);
        assert_eq!(cache.get("a"), None);
    }
}
