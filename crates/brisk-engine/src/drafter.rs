//! A draft model as the scheduler's [`Drafter`]: a second, smaller model of the same
//! tokenizer proposes each chosen sequence's next tokens greedily, one batched step per draft
//! token, over a KV pool of its own.
//!
//! The draft pool keeps, per sequence, the tokens whose K/V it holds. Before drafting, each
//! sequence's record is cut back to the longest prefix it shares with the sequence's tokens
//! now (drafts the target rejected go; accepted ones, equal to what was fed, stay), and the
//! rest is fed: in the first drafting step, whose last row gives the first draft. Catching
//! up is bounded per call ([`CATCH_UP_TOKENS`]), so a long prompt enters the draft pool over
//! several steps instead of stalling one; a sequence still catching up gets no drafts yet.
//! Drafting fails soft: a full pool or a failed step means no drafts, never a failed
//! request.

use std::collections::HashMap;

use brisk_kv::{BlockManager, BlockManagerConfig};
use brisk_scheduler::speculate::{DraftAsk, Drafter};
use brisk_scheduler::{LatencyModel, RequestId, StepShape};
use brisk_types::{Backend, LogitsWanted, SeqStep, StepBatch, TokenId};

/// Most tokens one drafting call feeds to bring sequences' draft K/V up to date.
pub const CATCH_UP_TOKENS: usize = 512;

/// Tokens per block of the draft pool.
const BLOCK_SIZE: usize = 16;

/// The draft model, its pool and what each sequence has in it.
pub struct ModelDrafter<B: Backend> {
    backend: B,
    kv: B::KvPool,
    blocks: BlockManager,
    /// Per sequence, the tokens whose K/V are in the draft pool.
    fed: HashMap<RequestId, Vec<TokenId>>,
    /// The draft model's step times, for the decision.
    latency: LatencyModel,
}

impl<B: Backend> ModelDrafter<B> {
    /// A drafter over `backend` with a pool of `pool_tokens` token slots; `latency` predicts
    /// its steps.
    pub fn new(backend: B, pool_tokens: usize, latency: LatencyModel) -> Result<Self, String> {
        let num_blocks = (pool_tokens / BLOCK_SIZE).max(1);
        let kv = backend
            .allocate_kv(num_blocks, BLOCK_SIZE)
            .map_err(|e| format!("draft model KV pool: {e}"))?;
        let blocks = BlockManager::new(BlockManagerConfig {
            block_size: BLOCK_SIZE,
            num_blocks,
            enable_prefix_caching: false,
            salt: 0,
        })
        .map_err(|e| e.to_string())?;
        Ok(Self {
            backend,
            kv,
            blocks,
            fed: HashMap::new(),
            latency,
        })
    }

    /// Cuts `id`'s record back to what it shares with `tokens` and makes room for `target`
    /// positions; `None` when the pool is full.
    fn prepare(&mut self, id: RequestId, tokens: &[TokenId], target: usize) -> Option<usize> {
        let fed = self.fed.entry(id).or_default();
        let shared = fed.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        // At least the last token is fed again: its row gives the first draft.
        let keep = shared.min(tokens.len() - 1);
        fed.truncate(keep);
        if !self.blocks.contains(id) {
            let empty = self.blocks.match_prefix(&[]);
            self.blocks.allocate_new(id, empty, 0).ok()?;
        }
        self.blocks.truncate_slots(id, keep).ok()?;
        if self.blocks.allocate_slots(id, target).is_err() {
            self.forget(id);
            return None;
        }
        Some(keep)
    }

    /// Runs one drafting step: each `(id, tokens, start)` feeds `tokens` from `start`; returns
    /// each one's greedy next token (when `sample`), `None` when the step failed.
    fn run(&mut self, feeds: &[(RequestId, Vec<TokenId>, usize, bool)]) -> Option<Vec<TokenId>> {
        let tables: Vec<Vec<u32>> = feeds
            .iter()
            .map(|(id, ..)| self.blocks.block_table(*id).to_vec())
            .collect();
        let batch = StepBatch {
            seqs: feeds
                .iter()
                .zip(&tables)
                .map(|((_, tokens, start, sample), table)| SeqStep {
                    tokens,
                    start_pos: *start,
                    block_table: table,
                    logits: if *sample {
                        LogitsWanted::Last
                    } else {
                        LogitsWanted::None
                    },
                })
                .collect(),
        };
        let out = match self.backend.execute(&batch, &mut self.kv) {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!("draft model step failed: {e}");
                return None;
            }
        };
        for (id, tokens, ..) in feeds {
            self.fed.get_mut(id).expect("prepared").extend(tokens);
        }
        Some(
            feeds
                .iter()
                .enumerate()
                .filter(|(_, f)| f.3)
                .map(|(i, _)| argmax(out.last_row(i)))
                .collect(),
        )
    }
}

fn argmax(row: &[f32]) -> TokenId {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as TokenId
}

impl<B: Backend> Drafter for ModelDrafter<B> {
    fn propose(&mut self, asks: &[DraftAsk<'_>]) -> Vec<Vec<TokenId>> {
        let mut drafts: Vec<Vec<TokenId>> = vec![Vec::new(); asks.len()];
        // First step: catch up (within the bound) and draw the first draft of those that did.
        let mut budget = CATCH_UP_TOKENS;
        let mut feeds = Vec::new();
        let mut drafting = Vec::new();
        for (i, ask) in asks.iter().enumerate() {
            if ask.max == 0 || ask.tokens.is_empty() {
                continue;
            }
            let Some(keep) = self.prepare(ask.id, ask.tokens, ask.tokens.len() + ask.max) else {
                continue;
            };
            let pending = ask.tokens.len() - keep;
            if pending > budget {
                // Part of the way now, the rest at later calls; no drafts yet.
                let part = budget.min(pending - 1);
                if part > 0 {
                    feeds.push((ask.id, ask.tokens[keep..keep + part].to_vec(), keep, false));
                    budget -= part;
                }
                continue;
            }
            budget -= pending;
            feeds.push((ask.id, ask.tokens[keep..].to_vec(), keep, true));
            drafting.push(i);
        }
        if feeds.is_empty() {
            return drafts;
        }
        let Some(first) = self.run(&feeds) else {
            return drafts;
        };
        for (&i, token) in drafting.iter().zip(first) {
            drafts[i].push(token);
        }
        // Then one step per further draft, each feeding the draft before.
        loop {
            let more: Vec<usize> = drafting
                .iter()
                .copied()
                .filter(|&i| drafts[i].len() < asks[i].max)
                .collect();
            if more.is_empty() {
                break;
            }
            let feeds: Vec<_> = more
                .iter()
                .map(|&i| {
                    let last = *drafts[i].last().expect("a first draft");
                    let at = asks[i].tokens.len() + drafts[i].len() - 1;
                    (asks[i].id, vec![last], at, true)
                })
                .collect();
            let Some(next) = self.run(&feeds) else {
                break;
            };
            for (&i, token) in more.iter().zip(next) {
                drafts[i].push(token);
            }
        }
        drafts
    }

    fn step_cost(&self, seqs: usize) -> f64 {
        let mut shape = StepShape::default();
        for _ in 0..seqs {
            shape.add_decode(0);
        }
        self.latency.predict(&shape)
    }

    fn is_free(&self) -> bool {
        false
    }

    fn forget(&mut self, id: RequestId) {
        self.fed.remove(&id);
        self.blocks.free(id);
    }
}
