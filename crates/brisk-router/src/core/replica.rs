//! One replica as the router core sees it: what it advertised, what it caches, the
//! requests routed there and the predictions made from them.

use std::collections::HashMap;

use brisk_scheduler::{Priority, StepShape};

use super::{Prompt, ReplicaLoad, ReplicaSpec, RequestKey, RouteRequest, RouterConfig};
use crate::health::Breaker;
use crate::index::BlockIndex;

/// A request routed to a replica and not finished.
#[derive(Clone, Debug)]
pub(super) struct Outstanding {
    pub(super) prefill_s: f64,
    /// Prompt tokens it was routed to compute (not believed cached).
    pub(super) uncached: usize,
    pub(super) context: usize,
    pub(super) prefilled: bool,
    /// The replica it moves to after its first token (disaggregated serving).
    pub(super) decode_on: Option<String>,
    pub(super) priority: Priority,
    /// Its TPOT objective, seconds.
    pub(super) tpot_slo: Option<f64>,
}

/// A member: its advertisement, its cached-block index, its circuit breaker and the load
/// routed to it.
#[derive(Debug)]
pub(super) struct Replica {
    pub(super) spec: ReplicaSpec,
    pub(super) index: BlockIndex,
    pub(super) breaker: Breaker,
    pub(super) outstanding: HashMap<RequestKey, Outstanding>,
    pub(super) queued_prefill_s: f64,
    pub(super) decoding: usize,
    pub(super) decode_context: usize,
    /// The key of the last request routed here (0: none): among equal predictions the
    /// least recently chosen replica wins, so idle replicas share new prefixes.
    pub(super) last_chosen: RequestKey,
}

impl Replica {
    pub(super) fn new(spec: ReplicaSpec) -> Self {
        Self {
            spec,
            index: BlockIndex::default(),
            breaker: Breaker::default(),
            outstanding: HashMap::new(),
            queued_prefill_s: 0.0,
            decoding: 0,
            decode_context: 0,
            last_chosen: 0,
        }
    }

    /// The prompt's block hashes in this replica's terms, and tokens per block.
    pub(super) fn prompt_blocks(
        &self,
        prompt: Prompt<'_>,
        cfg: &RouterConfig,
    ) -> (Vec<u64>, usize) {
        match prompt {
            Prompt::Tokens(tokens) => (
                brisk_kv::hash::hash_blocks(tokens, self.spec.block_size, self.spec.hash_salt)
                    .into_iter()
                    .map(|h| h.0)
                    .collect(),
                self.spec.block_size,
            ),
            Prompt::Text(text) => (
                text_hashes(text, cfg.text_block_bytes),
                (cfg.text_block_bytes / cfg.text_bytes_per_token).max(1),
            ),
        }
    }

    /// Predicted seconds to compute `tokens` prompt tokens from position `cached`, beside
    /// the decodes running now.
    pub(super) fn prefill_s(&self, cached: usize, tokens: usize) -> f64 {
        self.spec.latency.prefill_time(
            cached,
            tokens,
            self.spec.chunk_tokens,
            self.decoding,
            self.decode_context,
        )
    }

    /// Seconds of stall that computing `tokens` prompt tokens from position `cached` here
    /// (predicted to take `own`) puts on the decodes running here, summed over them: the
    /// steps' time beyond what the decodes alone would take, once per decode — or 0 when the
    /// step with the first chunk stays within the request's TPOT objective (the decodes
    /// beside it, taken to share it, lose nothing they were promised).
    pub(super) fn interference_s(
        &self,
        cached: usize,
        tokens: usize,
        own: f64,
        req: &RouteRequest<'_>,
    ) -> f64 {
        if self.decoding == 0 || tokens == 0 {
            return 0.0;
        }
        let chunk = self.spec.chunk_tokens.max(1);
        let decodes = StepShape {
            decode_seqs: self.decoding,
            decode_context: self.decode_context,
            ..StepShape::default()
        };
        if let Some(tpot) = req.tpot_slo {
            let mut first = decodes;
            first.add_prefill(cached, chunk.min(tokens));
            if self.spec.latency.predict(&first) <= tpot {
                return 0.0;
            }
        }
        let alone = tokens.div_ceil(chunk) as f64 * self.spec.latency.predict(&decodes);
        self.decoding as f64 * (own - alone).max(0.0)
    }

    /// Whether a prompt may go here: it prefills, its circuit is closed and the request has
    /// not failed here.
    pub(super) fn eligible(&self, req: &RouteRequest<'_>, id: &String, now: f64) -> bool {
        self.spec.role.prefills() && self.breaker.is_closed(now) && !req.exclude.contains(id)
    }

    /// Uncached prompt tokens of the requests routed here and not yet answered.
    pub(super) fn queued_tokens(&self) -> usize {
        self.outstanding
            .values()
            .filter(|o| !o.prefilled)
            .map(|o| o.uncached)
            .sum()
    }

    /// Whether a request of class `priority` is routed here and not finished.
    pub(super) fn serves(&self, priority: Priority) -> bool {
        self.outstanding.values().any(|o| o.priority == priority)
    }

    /// Whether its decode step, as it stands, is predicted past the tightest TPOT objective
    /// of the interactive requests routed here (any step, when one has no objective; none
    /// without interactive requests).
    pub(super) fn interactive_tpot_missed(&self) -> bool {
        let tightest = self
            .outstanding
            .values()
            .filter(|o| o.priority == Priority::Interactive)
            .map(|o| o.tpot_slo.unwrap_or(0.0))
            .min_by(f64::total_cmp);
        let Some(tightest) = tightest else {
            return false;
        };
        let decodes = StepShape {
            decode_seqs: self.decoding,
            decode_context: self.decode_context,
            ..StepShape::default()
        };
        self.spec.latency.predict(&decodes) > tightest
    }

    /// How many requests of class `priority` decode here.
    pub(super) fn decoding_of(&self, priority: Priority) -> usize {
        self.outstanding
            .values()
            .filter(|o| o.prefilled && o.priority == priority)
            .count()
    }

    /// Whether it decodes and its circuit is closed at `now`: a migration may touch it.
    pub(super) fn migratable(&self, now: f64) -> bool {
        self.spec.role.decodes() && self.breaker.is_closed(now)
    }

    pub(super) fn load(&self, now: f64) -> ReplicaLoad {
        ReplicaLoad {
            outstanding: self.outstanding.len(),
            prefilling: self.outstanding.len() - self.decoding,
            queued_prefill_s: self.queued_prefill_s,
            index_entries: self.index.len(),
            confirmed_entries: self.index.confirmed(),
            available: self.breaker.is_closed(now),
        }
    }
}

/// Chained hashes of `text` in blocks of `block_bytes` (whole blocks only), in a space of
/// their own (they never name token blocks).
pub(super) fn text_hashes(text: &str, block_bytes: usize) -> Vec<u64> {
    const TEXT_SPACE: u64 = 0x7465_7874_2d62_6c6b; // "text-blk"
    let mut parent = TEXT_SPACE;
    text.as_bytes()
        .chunks_exact(block_bytes.max(1))
        .map(|chunk| {
            let mut h = parent ^ 0xcbf2_9ce4_8422_2325;
            for b in chunk {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
            parent = h;
            h
        })
        .collect()
}
