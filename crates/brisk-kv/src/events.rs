//! Changes to the prefix cache, as the outside sees them (vLLM's KV cache events).
//!
//! A router that sends each request where its prefix is cached needs to know which blocks
//! each replica holds. vLLM publishes that as a stream of events — blocks stored in the prefix
//! cache, blocks evicted from it, everything cleared — and routers no one here wrote
//! (vllm-router's `kv_aware`, Dynamo's indexer, llm-d's precise prefix scorer) consume it.
//! The block manager records the same three events when asked to
//! ([`crate::BlockManager::record_events`]); the server encodes and publishes them.

use brisk_types::TokenId;

use crate::BlockHash;

/// One change to the set of cached blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvEvent {
    /// Consecutive full blocks of one sequence entered the prefix cache: `hashes[i]` names
    /// the block of `tokens[i·bs..(i+1)·bs]`, chained on `parent` (the hash of the block
    /// before the first, `None` at the start of a sequence). The parent was stored earlier;
    /// it may have been evicted since, when an identical block computed beside it was the
    /// one cached.
    Stored {
        /// The blocks' chained hashes, in order.
        hashes: Vec<BlockHash>,
        /// The hash of the block the first one continues.
        parent: Option<BlockHash>,
        /// The blocks' tokens, concatenated.
        tokens: Vec<TokenId>,
    },
    /// Blocks left the prefix cache (their memory went to another sequence).
    Removed {
        /// The evicted blocks' hashes.
        hashes: Vec<BlockHash>,
    },
    /// Every cached block is gone (the cache started empty, or was reset).
    AllCleared,
}

/// The events of one engine step, with the wall-clock time they were taken (seconds since
/// the Unix epoch): what a publisher sends as one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct KvEventBatch {
    /// Seconds since the Unix epoch.
    pub ts: f64,
    /// The step's events, oldest first.
    pub events: Vec<KvEvent>,
}

/// Collects events while recording is on, merging consecutive removals.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventLog {
    events: Vec<KvEvent>,
}

impl EventLog {
    /// Records that the block `hash` (continuing `parent`, holding `tokens`) was stored; it
    /// extends the previous stored run when it continues it.
    pub(crate) fn stored(
        &mut self,
        hash: BlockHash,
        parent: Option<BlockHash>,
        tokens: &[TokenId],
    ) {
        if let Some(KvEvent::Stored {
            hashes,
            tokens: run,
            ..
        }) = self.events.last_mut()
        {
            if parent.is_some() && hashes.last() == parent.as_ref() {
                hashes.push(hash);
                run.extend_from_slice(tokens);
                return;
            }
        }
        self.events.push(KvEvent::Stored {
            hashes: vec![hash],
            parent,
            tokens: tokens.to_vec(),
        });
    }

    /// Records that the block `hash` was evicted.
    pub(crate) fn removed(&mut self, hash: BlockHash) {
        if let Some(KvEvent::Removed { hashes }) = self.events.last_mut() {
            hashes.push(hash);
        } else {
            self.events.push(KvEvent::Removed { hashes: vec![hash] });
        }
    }

    /// Records that every cached block is gone.
    pub(crate) fn cleared(&mut self) {
        self.events.push(KvEvent::AllCleared);
    }

    /// The events since the last call, oldest first.
    pub(crate) fn take(&mut self) -> Vec<KvEvent> {
        std::mem::take(&mut self.events)
    }
}
