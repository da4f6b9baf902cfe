//! [`BlockManager::check_invariants`]: the pool's conservation and consistency rules.

use std::collections::HashSet;

use brisk_types::BlockId;

use crate::{BlockManager, KvError};

impl BlockManager {
    /// Verifies every invariant of the pool; `Err` names the first that fails.
    ///
    /// Free + used = total; the free list holds exactly the blocks with reference count 0;
    /// each reference count equals the number of tables holding the block; no table holds a
    /// block twice; cached hashes are unique and map to a block carrying that hash.
    pub fn check_invariants(&self) -> Result<(), KvError> {
        let fail = |m: String| Err(KvError::InvariantViolated(m));
        let mut holders = vec![0u32; self.num_blocks()];
        for (seq, t) in &self.seqs {
            let mut seen = HashSet::new();
            for &b in &t.blocks {
                if b as usize >= self.num_blocks() || !seen.insert(b) {
                    return fail(format!(
                        "sequence {seq} holds block {b} twice or out of range"
                    ));
                }
                holders[b as usize] += 1;
            }
            if t.hashes.len() > t.blocks.len() {
                return fail(format!("sequence {seq} has more hashes than blocks"));
            }
        }
        let free: Vec<BlockId> = self.free.iter().collect();
        if free.len() != self.free.len() {
            return fail("free list length is off".into());
        }
        let mut used = 0;
        for (b, meta) in self.blocks.iter().enumerate() {
            let id = BlockId::try_from(b).expect("pools hold fewer than u32::MAX blocks");
            if meta.ref_count != holders[b] {
                return fail(format!(
                    "block {b}: ref count {} but {} holders",
                    meta.ref_count, holders[b]
                ));
            }
            if (meta.ref_count == 0) != self.free.contains(id) {
                return fail(format!(
                    "block {b}: ref count {} vs free list",
                    meta.ref_count
                ));
            }
            used += usize::from(meta.ref_count > 0);
            if let Some(h) = meta.hash {
                if self.cached.get(&h) != Some(&id) {
                    return fail(format!("block {b}: hash not mapped back to it"));
                }
            }
        }
        if used + free.len() != self.num_blocks() {
            return fail(format!(
                "{used} used + {} free != {} total",
                free.len(),
                self.num_blocks()
            ));
        }
        for (h, &b) in &self.cached {
            if self.meta(b).hash != Some(*h) {
                return fail(format!(
                    "cached hash {h:?} maps to block {b} which has another"
                ));
            }
        }
        Ok(())
    }
}
