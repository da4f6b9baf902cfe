//! Which prompt blocks a replica is believed to hold.
//!
//! Entries are chained block hashes (a hash names its whole prefix, so a prompt's cached part
//! is the longest run of its hashes found, from the start). Two kinds of entries:
//!
//! - **confirmed** ones come from the replica's KV events (`BlockStored`/`BlockRemoved`/
//!   `AllBlocksCleared`) and stay until an event removes them;
//! - **speculative** ones are added when the router sends a prompt there: the replica will
//!   have computed those blocks in a moment, and a burst of requests sharing a prefix should
//!   follow the first without waiting for its events. They expire after a time-to-live
//!   (short where events will confirm them, long where the replica publishes none) and are
//!   capped at the replica's KV capacity, oldest first.

use std::collections::{BTreeMap, HashMap};

/// A change to a replica's cache, as its KV events report it.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexEvent {
    /// Blocks entered the cache.
    Stored(Vec<u64>),
    /// Blocks left the cache.
    Removed(Vec<u64>),
    /// The cache is empty.
    Cleared,
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    Confirmed,
    /// Believed present until `expires` (seconds); `serial` orders insertions for the cap.
    Speculative {
        expires: f64,
        serial: u64,
    },
}

/// One replica's cached-block index.
#[derive(Debug, Default)]
pub struct BlockIndex {
    entries: HashMap<u64, Entry>,
    /// Speculative entries by insertion serial, for evicting the oldest past the cap.
    speculative_order: BTreeMap<u64, u64>,
    next_serial: u64,
}

impl BlockIndex {
    /// How many leading `hashes` are present at `now`.
    pub fn matched(&self, hashes: &[u64], now: f64) -> usize {
        hashes
            .iter()
            .take_while(|h| match self.entries.get(h) {
                Some(Entry::Confirmed) => true,
                Some(Entry::Speculative { expires, .. }) => *expires > now,
                None => false,
            })
            .count()
    }

    /// Applies a KV event.
    pub fn apply(&mut self, event: &IndexEvent) {
        match event {
            IndexEvent::Stored(hashes) => {
                for h in hashes {
                    if let Some(Entry::Speculative { serial, .. }) =
                        self.entries.insert(*h, Entry::Confirmed)
                    {
                        self.speculative_order.remove(&serial);
                    }
                }
            }
            IndexEvent::Removed(hashes) => {
                for h in hashes {
                    if let Some(Entry::Speculative { serial, .. }) = self.entries.remove(h) {
                        self.speculative_order.remove(&serial);
                    }
                }
            }
            IndexEvent::Cleared => self.clear(),
        }
    }

    /// Forgets everything (events were lost, or the replica restarted).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.speculative_order.clear();
    }

    /// Marks `hashes` present until `now + ttl`, keeping at most `cap` speculative entries.
    pub fn speculate(&mut self, hashes: &[u64], now: f64, ttl: f64, cap: usize) {
        for h in hashes {
            let serial = self.next_serial;
            match self.entries.get_mut(h) {
                Some(Entry::Confirmed) => continue,
                Some(Entry::Speculative {
                    expires,
                    serial: old,
                }) => {
                    self.speculative_order.remove(old);
                    *expires = now + ttl;
                    *old = serial;
                }
                None => {
                    self.entries.insert(
                        *h,
                        Entry::Speculative {
                            expires: now + ttl,
                            serial,
                        },
                    );
                }
            }
            self.speculative_order.insert(serial, *h);
            self.next_serial += 1;
        }
        while self.speculative_order.len() > cap {
            let Some((_, h)) = self.speculative_order.pop_first() else {
                break;
            };
            self.entries.remove(&h);
        }
    }

    /// Drops speculative entries that expired by `now`.
    pub fn expire(&mut self, now: f64) {
        let entries = &mut self.entries;
        self.speculative_order.retain(|_, h| match entries.get(h) {
            Some(Entry::Speculative { expires, .. }) if *expires <= now => {
                entries.remove(h);
                false
            }
            _ => true,
        });
    }

    /// Entries held (both kinds).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Confirmed entries held.
    pub fn confirmed(&self) -> usize {
        self.entries.len() - self.speculative_order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_matches_up_to_its_first_missing_block() {
        let mut idx = BlockIndex::default();
        idx.apply(&IndexEvent::Stored(vec![1, 2, 4]));
        assert_eq!(idx.matched(&[1, 2, 3, 4], 0.0), 2);
        assert_eq!(idx.matched(&[5, 1], 0.0), 0);
        idx.apply(&IndexEvent::Removed(vec![2]));
        assert_eq!(idx.matched(&[1, 2], 0.0), 1);
        idx.apply(&IndexEvent::Cleared);
        assert!(idx.is_empty());
    }

    #[test]
    fn speculative_entries_expire_unless_an_event_confirms_them() {
        let mut idx = BlockIndex::default();
        idx.speculate(&[1, 2, 3], 10.0, 5.0, 100);
        assert_eq!(idx.matched(&[1, 2, 3], 14.9), 3);
        idx.apply(&IndexEvent::Stored(vec![1]));
        assert_eq!(idx.matched(&[1, 2, 3], 15.0), 1);
        idx.expire(15.0);
        assert_eq!((idx.len(), idx.confirmed()), (1, 1));
        // Speculating on a confirmed block leaves it confirmed.
        idx.speculate(&[1], 20.0, 1.0, 100);
        assert_eq!(idx.matched(&[1], 1000.0), 1);
    }

    #[test]
    fn the_cap_evicts_the_oldest_speculative_entries() {
        let mut idx = BlockIndex::default();
        idx.apply(&IndexEvent::Stored(vec![100]));
        idx.speculate(&[1, 2, 3], 0.0, 60.0, 2);
        assert_eq!(idx.matched(&[1], 1.0), 0);
        assert_eq!(idx.matched(&[2, 3], 1.0), 2);
        // Refreshing 2 makes 3 the oldest.
        idx.speculate(&[2, 4], 1.0, 60.0, 2);
        assert_eq!(idx.matched(&[3], 2.0), 0);
        assert_eq!(idx.matched(&[2, 4], 2.0), 2);
        assert_eq!((idx.len(), idx.confirmed()), (3, 1));
    }
}
