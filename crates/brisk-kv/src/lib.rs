//! The paged KV block manager of brisk.
//!
//! The KV pool is cut into fixed-size blocks of `block_size` token slots (vLLM's
//! PagedAttention). A sequence owns a *block table*: the physical block of each of its logical
//! blocks. Blocks are reference counted, so that several sequences can share the blocks of a
//! common prefix.
//!
//! **Automatic prefix caching** follows vLLM v1's `KVCacheManager` / `BlockPool`:
//! - once a block is full and its K/V computed ([`BlockManager::commit_full_blocks`]), it gets
//!   a hash chained over its parent's hash, its token ids and a model salt ([`hash`]);
//! - a new sequence reuses the longest chain of cached full blocks that matches its prompt
//!   ([`BlockManager::match_prefix`]), but always leaves at least one prompt token to compute so
//!   that the model produces the logits of the next token;
//! - a freed block keeps its hash and goes to the back of an LRU free list, in reverse order
//!   of the sequence (its tail blocks are evicted before its head); it loses its hash only when
//!   its memory is handed to someone else, oldest first. A freed block without a hash goes to
//!   the front of the free list, to be reused at once;
//! - a cached block found by another sequence while it sits in the free list is taken out of
//!   the list (its reference count goes back to 1).
//!
//! Hash collisions are guarded against: a cached block remembers its parent hash and its
//! tokens, and a match compares both, so two different prefixes never share K/V.
//!
//! Every operation keeps the invariants that [`BlockManager::check_invariants`] verifies;
//! tests call it after every operation, the scheduler after every step in debug builds.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
#![deny(missing_docs)]

pub mod events;
mod free_list;
pub mod hash;
mod invariants;
mod manager;

pub use events::{KvEvent, KvEventBatch};
pub use hash::BlockHash;
pub use manager::{
    BlockManager, BlockManagerConfig, PrefixCacheStats, PrefixMatch, DEFAULT_BLOCK_SIZE,
};

/// Identifies one sequence (one table of blocks) in the block manager. The scheduler uses its
/// request ids.
pub type SeqId = u64;

/// What can go wrong in the block manager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The configuration is unusable.
    #[error("invalid KV cache configuration: {0}")]
    InvalidConfig(String),
    /// Not enough free blocks for the allocation; nothing was changed.
    #[error("out of KV blocks: {needed} needed, {free} free")]
    OutOfBlocks {
        /// Blocks the allocation needed.
        needed: usize,
        /// Blocks that could be handed out.
        free: usize,
    },
    /// The sequence has no block table.
    #[error("unknown sequence {0}")]
    UnknownSeq(SeqId),
    /// The sequence already has a block table.
    #[error("sequence {0} already has blocks")]
    SeqExists(SeqId),
    /// A [`PrefixMatch`] was used after the pool changed.
    #[error("stale prefix match: the block pool changed since it was computed")]
    StalePrefixMatch,
    /// An internal invariant does not hold (a bug).
    #[error("KV invariant violated: {0}")]
    InvariantViolated(String),
}

#[cfg(test)]
mod tests;
