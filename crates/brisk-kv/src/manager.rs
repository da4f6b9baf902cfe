//! [`BlockManager`]: block tables, reference counts, the prefix cache and its LRU free list.

use std::collections::HashMap;

use brisk_types::{BlockId, TokenId};

use crate::events::{EventLog, KvEvent};
use crate::free_list::FreeList;
use crate::hash::{hash_block, BlockHash};
use crate::{KvError, SeqId};

/// Block size used when none is configured (vLLM's default).
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Settings of a [`BlockManager`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockManagerConfig {
    /// Token slots per block.
    pub block_size: usize,
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Whether full blocks are hashed and reused across sequences.
    pub enable_prefix_caching: bool,
    /// Mixed into every block hash, so that two models never share cached blocks.
    pub salt: u64,
}

impl BlockManagerConfig {
    /// A pool of `num_blocks` blocks of [`DEFAULT_BLOCK_SIZE`] tokens, prefix caching on.
    pub fn new(num_blocks: usize) -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE,
            num_blocks,
            enable_prefix_caching: true,
            salt: 0,
        }
    }

    /// Checks that the settings describe a usable pool.
    pub fn validate(&self) -> Result<(), KvError> {
        if self.block_size == 0 {
            return Err(KvError::InvalidConfig(
                "block_size must be at least 1".into(),
            ));
        }
        if self.num_blocks == 0 || self.num_blocks >= u32::MAX as usize {
            return Err(KvError::InvalidConfig(format!(
                "num_blocks must be in 1..{}, got {}",
                u32::MAX,
                self.num_blocks
            )));
        }
        Ok(())
    }
}

/// Prefix-cache counters, in tokens (Prometheus `prefix_cache_queries` / `prefix_cache_hits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Tokens looked up when sequences were admitted.
    pub queries: u64,
    /// Of those, tokens found in the cache.
    pub hits: u64,
}

/// The cached blocks that match a prompt's prefix, from [`BlockManager::match_prefix`].
///
/// Valid until a cached block is evicted; [`BlockManager::allocate_new`] refuses a stale one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixMatch {
    blocks: Vec<BlockId>,
    hashes: Vec<BlockHash>,
    num_tokens: usize,
    num_queried: usize,
    generation: u64,
}

impl PrefixMatch {
    /// Tokens whose K/V are cached (a multiple of the block size, less than the prompt).
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// The matched blocks, in order.
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct BlockMeta {
    pub(crate) ref_count: u32,
    /// Set while the block is in the prefix cache.
    pub(crate) hash: Option<BlockHash>,
    /// The key the hash stands for, compared on every hit to rule out collisions.
    parent: Option<BlockHash>,
    tokens: Vec<TokenId>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct SeqBlocks {
    pub(crate) blocks: Vec<BlockId>,
    /// Chained hashes of the sequence's full, computed blocks (`hashes.len() <= blocks.len()`).
    pub(crate) hashes: Vec<BlockHash>,
}

/// Owns the block tables of all sequences and the prefix cache; see the crate docs.
#[derive(Clone, Debug)]
pub struct BlockManager {
    pub(crate) cfg: BlockManagerConfig,
    pub(crate) blocks: Vec<BlockMeta>,
    pub(crate) free: FreeList,
    pub(crate) cached: HashMap<BlockHash, BlockId>,
    pub(crate) seqs: HashMap<SeqId, SeqBlocks>,
    stats: PrefixCacheStats,
    /// Bumped whenever a cached block is evicted, invalidating earlier [`PrefixMatch`]es.
    generation: u64,
    /// The prefix cache's changes since they were last taken, while recording is on.
    events: Option<EventLog>,
}

impl BlockManager {
    /// A pool with every block free.
    pub fn new(cfg: BlockManagerConfig) -> Result<Self, KvError> {
        cfg.validate()?;
        Ok(Self {
            blocks: vec![BlockMeta::default(); cfg.num_blocks],
            free: FreeList::full(cfg.num_blocks),
            cached: HashMap::new(),
            seqs: HashMap::new(),
            stats: PrefixCacheStats::default(),
            generation: 0,
            events: None,
            cfg,
        })
    }

    /// Starts (or stops) recording the prefix cache's changes for [`Self::take_events`].
    /// Starting records [`KvEvent::AllCleared`] first, so that a consumer that knew an earlier
    /// life of this cache starts from nothing, then every block already cached as stored.
    pub fn record_events(&mut self, on: bool) {
        if !on {
            self.events = None;
            return;
        }
        let mut log = EventLog::default();
        log.cleared();
        // Parents before children: a block's parent was cached no later than itself, but the
        // map has no order, so emit chains from their roots.
        let mut pending: Vec<BlockId> = self.cached.values().copied().collect();
        pending.sort_unstable();
        let mut emitted = std::collections::HashSet::new();
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|&b| {
                let meta = &self.blocks[b as usize];
                let ready = meta
                    .parent
                    .is_none_or(|p| emitted.contains(&p) || !self.cached.contains_key(&p));
                if ready {
                    let hash = meta.hash.expect("cached blocks have hashes");
                    log.stored(hash, meta.parent, &meta.tokens);
                    emitted.insert(hash);
                }
                !ready
            });
            assert!(pending.len() < before, "cached blocks form chains");
        }
        self.events = Some(log);
    }

    /// The prefix cache's changes since the last call, oldest first (none unless
    /// [`Self::record_events`] is on).
    pub fn take_events(&mut self) -> Vec<KvEvent> {
        self.events.as_mut().map_or_else(Vec::new, EventLog::take)
    }

    /// The settings this pool was built with.
    pub fn config(&self) -> &BlockManagerConfig {
        &self.cfg
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.cfg.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.cfg.num_blocks
    }

    /// Blocks no sequence holds (cached-but-free blocks included).
    pub fn num_free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks currently in the prefix cache, held or free.
    pub fn num_cached_blocks(&self) -> usize {
        self.cached.len()
    }

    /// The hashes of every block in the prefix cache, held or free, in no order.
    pub fn cached_hashes(&self) -> impl Iterator<Item = BlockHash> + '_ {
        self.cached.keys().copied()
    }

    /// Free blocks that still hold a cached prefix.
    pub fn num_cached_free_blocks(&self) -> usize {
        self.free
            .iter()
            .filter(|&b| self.meta(b).hash.is_some())
            .count()
    }

    /// Share of blocks held by sequences, in `[0, 1]`; cached-but-free blocks count as free.
    pub fn usage_ratio(&self) -> f64 {
        (self.num_blocks() - self.num_free_blocks()) as f64 / self.num_blocks() as f64
    }

    /// Prefix-cache counters since creation.
    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.stats
    }

    /// Blocks needed to hold `num_tokens` token slots.
    pub fn blocks_for(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.cfg.block_size)
    }

    /// Sequences holding a block table.
    pub fn num_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// Whether `seq` has a block table.
    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    /// The physical blocks of `seq`, in logical order; empty for an unknown sequence.
    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.seqs.get(&seq).map_or(&[], |s| &s.blocks)
    }

    /// The longest chain of cached full blocks that prefixes `tokens`, leaving at least one
    /// token uncached. No side effects.
    pub fn match_prefix(&self, tokens: &[TokenId]) -> PrefixMatch {
        let bs = self.cfg.block_size;
        let mut m = PrefixMatch {
            blocks: Vec::new(),
            hashes: Vec::new(),
            num_tokens: 0,
            num_queried: tokens.len(),
            generation: self.generation,
        };
        if !self.cfg.enable_prefix_caching || tokens.is_empty() {
            return m;
        }
        // The last token must be computed to get its logits.
        let max_blocks = (tokens.len() - 1) / bs;
        for chunk in tokens.chunks_exact(bs).take(max_blocks) {
            let parent = m.hashes.last().copied();
            let h = hash_block(parent, chunk, self.cfg.salt);
            let Some(&b) = self.cached.get(&h) else { break };
            let meta = self.meta(b);
            if meta.parent != parent || meta.tokens != chunk {
                break; // a 64-bit collision: treat as a miss
            }
            m.blocks.push(b);
            m.hashes.push(h);
        }
        m.num_tokens = m.blocks.len() * bs;
        m
    }

    /// Cached tokens `tokens` would start with if admitted now (for admission decisions).
    pub fn lookup_prefix(&self, tokens: &[TokenId]) -> usize {
        self.match_prefix(tokens).num_tokens
    }

    /// Gives a new sequence the blocks of `prefix` plus fresh blocks so that positions
    /// `0..num_tokens` have slots, and counts the prefix-cache query. All or nothing.
    pub fn allocate_new(
        &mut self,
        seq: SeqId,
        prefix: PrefixMatch,
        num_tokens: usize,
    ) -> Result<(), KvError> {
        if self.seqs.contains_key(&seq) {
            return Err(KvError::SeqExists(seq));
        }
        if prefix.generation != self.generation {
            return Err(KvError::StalePrefixMatch);
        }
        // Reviving a cached free block takes it out of the free list too.
        let revived = prefix
            .blocks
            .iter()
            .filter(|&&b| self.meta(b).ref_count == 0)
            .count();
        let needed = self
            .blocks_for(num_tokens)
            .saturating_sub(prefix.blocks.len());
        let available = self.free.len() - revived;
        if needed > available {
            return Err(KvError::OutOfBlocks {
                needed,
                free: available,
            });
        }
        for &b in &prefix.blocks {
            if self.meta(b).ref_count == 0 {
                self.free.remove(b);
            }
            self.meta_mut(b).ref_count += 1;
        }
        let mut table = SeqBlocks {
            blocks: prefix.blocks,
            hashes: prefix.hashes,
        };
        for _ in 0..needed {
            table.blocks.push(self.take_free_block());
        }
        if self.cfg.enable_prefix_caching {
            self.stats.queries += prefix.num_queried as u64;
            self.stats.hits += prefix.num_tokens as u64;
        }
        self.seqs.insert(seq, table);
        Ok(())
    }

    /// Grows `seq`'s table so that positions `0..num_tokens` have slots. All or nothing.
    pub fn allocate_slots(&mut self, seq: SeqId, num_tokens: usize) -> Result<(), KvError> {
        let have = self
            .seqs
            .get(&seq)
            .ok_or(KvError::UnknownSeq(seq))?
            .blocks
            .len();
        let needed = self.blocks_for(num_tokens).saturating_sub(have);
        if needed > self.free.len() {
            return Err(KvError::OutOfBlocks {
                needed,
                free: self.free.len(),
            });
        }
        let fresh: Vec<BlockId> = (0..needed).map(|_| self.take_free_block()).collect();
        self.seqs
            .get_mut(&seq)
            .expect("checked above")
            .blocks
            .extend(fresh);
        Ok(())
    }

    /// Shrinks `seq`'s table to the blocks positions `0..num_tokens` need, freeing the rest:
    /// the slots of draft tokens a verification step rejected. The freed blocks hold no
    /// cached content (only blocks full of computed tokens are cached, and the rejected
    /// positions were never computed). Returns how many blocks were freed.
    pub fn truncate_slots(&mut self, seq: SeqId, num_tokens: usize) -> Result<usize, KvError> {
        let keep = self.blocks_for(num_tokens);
        let table = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSeq(seq))?;
        if table.hashes.len() > keep {
            return Err(KvError::InvariantViolated(format!(
                "sequence {seq}: truncating to {num_tokens} tokens would drop cached blocks"
            )));
        }
        let dropped: Vec<BlockId> = table.blocks.drain(keep.min(table.blocks.len())..).collect();
        for &b in dropped.iter().rev() {
            let meta = self.meta_mut(b);
            meta.ref_count -= 1;
            if meta.ref_count == 0 {
                self.free.push_front(b);
            }
        }
        Ok(dropped.len())
    }

    /// Blocks `seq` would need to hold `num_tokens` slots, beyond those it has.
    pub fn blocks_to_grow(&self, seq: SeqId, num_tokens: usize) -> usize {
        self.blocks_for(num_tokens)
            .saturating_sub(self.block_table(seq).len())
    }

    /// Records that `computed` (the sequence's tokens whose K/V are now in the pool) fills
    /// some more blocks, and puts those blocks in the prefix cache. A block whose content is
    /// already cached elsewhere (two equal prompts computed side by side) is left uncached.
    pub fn commit_full_blocks(&mut self, seq: SeqId, computed: &[TokenId]) -> Result<(), KvError> {
        if !self.cfg.enable_prefix_caching {
            return Ok(());
        }
        let (bs, salt) = (self.cfg.block_size, self.cfg.salt);
        let table = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSeq(seq))?;
        let full = (computed.len() / bs).min(table.blocks.len());
        for i in table.hashes.len()..full {
            let parent = table.hashes.last().copied();
            let chunk = &computed[i * bs..(i + 1) * bs];
            let h = hash_block(parent, chunk, salt);
            table.hashes.push(h);
            let b = table.blocks[i];
            let meta = &mut self.blocks[b as usize];
            match meta.hash {
                Some(old) if old == h => {}
                Some(_) => {
                    return Err(KvError::InvariantViolated(format!(
                        "block {b} of sequence {seq} is cached under another content"
                    )))
                }
                None if self.cached.contains_key(&h) => {}
                None => {
                    meta.hash = Some(h);
                    meta.parent = parent;
                    meta.tokens.clear();
                    meta.tokens.extend_from_slice(chunk);
                    self.cached.insert(h, b);
                    if let Some(log) = &mut self.events {
                        log.stored(h, parent, chunk);
                    }
                }
            }
        }
        Ok(())
    }

    /// Lets `child` share the first `num_tokens / block_size` full blocks of `parent` (the
    /// copies of an `n > 1` request). Returns the shared token count; the child computes the
    /// rest itself.
    pub fn fork(
        &mut self,
        parent: SeqId,
        child: SeqId,
        num_tokens: usize,
    ) -> Result<usize, KvError> {
        if self.seqs.contains_key(&child) {
            return Err(KvError::SeqExists(child));
        }
        let p = self.seqs.get(&parent).ok_or(KvError::UnknownSeq(parent))?;
        let n = (num_tokens / self.cfg.block_size).min(p.blocks.len());
        let table = SeqBlocks {
            blocks: p.blocks[..n].to_vec(),
            hashes: p.hashes[..n.min(p.hashes.len())].to_vec(),
        };
        for &b in &table.blocks {
            self.meta_mut(b).ref_count += 1;
        }
        self.seqs.insert(child, table);
        Ok(n * self.cfg.block_size)
    }

    /// Releases `seq`'s blocks. Cached ones go to the back of the LRU list, tail block first
    /// (so a prefix outlives its continuations); others to the front. Returns whether `seq`
    /// had a table.
    pub fn free(&mut self, seq: SeqId) -> bool {
        let Some(table) = self.seqs.remove(&seq) else {
            return false;
        };
        for &b in table.blocks.iter().rev() {
            let meta = self.meta_mut(b);
            meta.ref_count -= 1;
            if meta.ref_count == 0 {
                if meta.hash.is_some() {
                    self.free.push_back(b);
                } else {
                    self.free.push_front(b);
                }
            }
        }
        true
    }

    /// Pops the least recently used free block, evicting its cached hash.
    fn take_free_block(&mut self) -> BlockId {
        let b = self.free.pop_front().expect("callers check the free count");
        let meta = &mut self.blocks[b as usize];
        if let Some(h) = meta.hash.take() {
            self.cached.remove(&h);
            meta.parent = None;
            meta.tokens.clear();
            self.generation += 1;
            if let Some(log) = &mut self.events {
                log.removed(h);
            }
        }
        meta.ref_count = 1;
        b
    }

    pub(crate) fn meta(&self, b: BlockId) -> &BlockMeta {
        &self.blocks[b as usize]
    }

    fn meta_mut(&mut self, b: BlockId) -> &mut BlockMeta {
        &mut self.blocks[b as usize]
    }
}
