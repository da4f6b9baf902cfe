//! The latency model as a [`Backend`]: what `brisk sim` runs the engine core over.
//!
//! A step "runs" for the time the latency model predicts for its shape, which moves the
//! simulation's virtual clock forward; every sequence that wants logits gets rows in which
//! one token, [`SAMPLED`], is the most likely, so greedy sampling draws it. Requests are
//! replayed with exact lengths (`ignore_eos`, as `brisk bench` asks), so token values decide
//! nothing but the prefix cache, which sees the prompts' own ids.
//!
//! Speculative decoding has no model to agree or disagree with its drafts, so the backend
//! plays a measured acceptance rate: in a step that verifies drafts each row's most likely
//! token is the next draft with that probability (drawn from a generator seeded by the step
//! and row, so runs repeat), else another token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use brisk_engine::Clock;
use brisk_scheduler::{LatencyModel, StepShape};
use brisk_types::{
    Backend, BackendCapabilities, BackendError, BlockId, ModelGeometry, StepBatch, StepOutput,
    TokenId,
};

/// The token every simulated step samples (inside the simulated vocabulary, never a stop
/// token).
pub const SAMPLED: TokenId = 1000;

/// Columns of a simulated logit row.
const VOCAB: usize = SAMPLED as usize + 1;

/// A replica's clock in the simulation: seconds since the start, set by the event loop to
/// the shared time when a step starts and moved by the backend through the step. Shared by
/// the backend and the loop.
#[derive(Clone, Debug, Default)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    /// Sets the time.
    pub fn set(&self, seconds: f64) {
        self.0.store(seconds.to_bits(), Ordering::Relaxed);
    }

    fn advance(&self, seconds: f64) {
        self.set(self.now() + seconds);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Steps that take the latency model's time and sample [`SAMPLED`].
pub struct LatencyBackend {
    model: LatencyModel,
    clock: VirtualClock,
    geometry: ModelGeometry,
    /// Probability that a verified draft token is accepted.
    draft_acceptance: f64,
    /// Steps run, to seed each step's acceptance draws.
    steps: AtomicU64,
}

impl LatencyBackend {
    /// A backend whose steps take `model`'s predicted time on `clock`.
    pub fn new(model: LatencyModel, clock: VirtualClock) -> Self {
        Self {
            model,
            clock,
            geometry: ModelGeometry {
                num_layers: 0,
                num_kv_heads: 0,
                head_dim: 0,
                vocab_size: VOCAB,
                max_context: usize::MAX,
                kv_bytes_per_token: 0,
            },
            draft_acceptance: 0.0,
            steps: AtomicU64::new(0),
        }
    }

    /// Accepts verified drafts with probability `p`.
    pub fn with_draft_acceptance(mut self, p: f64) -> Self {
        self.draft_acceptance = p;
        self
    }

    /// Whether draft `row` of sequence `seq` in step `step` is accepted: a hash of the three
    /// as a uniform number, against the acceptance rate.
    fn accepts(&self, step: u64, seq: usize, row: usize) -> bool {
        let mut x = step.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (seq as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
            ^ (row as u64).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        x ^= x >> 32;
        ((x >> 11) as f64 / (1u64 << 53) as f64) < self.draft_acceptance
    }
}

impl Backend for LatencyBackend {
    type KvPool = ();

    fn geometry(&self) -> &ModelGeometry {
        &self.geometry
    }

    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            name: "latency-model".into(),
            mixed_batches: true,
        }
    }

    fn stop_tokens(&self) -> &[TokenId] {
        &[]
    }

    fn allocate_kv(&self, _: usize, _: usize) -> Result<(), BackendError> {
        Ok(())
    }

    /// No K/V exist here: a hand-over carries none (its time is the fleet's transfer model).
    fn export_blocks(&self, _: &(), _: &[BlockId]) -> Result<Vec<u8>, BackendError> {
        Ok(Vec::new())
    }

    fn import_blocks(&self, _: &mut (), _: &[BlockId], _: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }

    fn execute(&self, batch: &StepBatch<'_>, _: &mut ()) -> Result<StepOutput, BackendError> {
        self.clock
            .advance(self.model.predict(&StepShape::of_batch(batch)));
        let mut first_row = Vec::with_capacity(batch.seqs.len());
        let mut rows = 0;
        for seq in &batch.seqs {
            first_row.push(rows);
            rows += seq.logit_rows();
        }
        let step = self.steps.fetch_add(1, Ordering::Relaxed);
        let mut logits = vec![0.0f32; rows * VOCAB];
        for (i, seq) in batch.seqs.iter().enumerate() {
            for row in 0..seq.logit_rows() {
                let r = first_row[i] + row;
                // A verification's row predicts the next draft, if accepted.
                let next = match seq.tokens.get(row + 1) {
                    Some(&draft) if seq.logit_rows() > 1 && self.accepts(step, i, row) => draft,
                    Some(&draft) if seq.logit_rows() > 1 && draft == SAMPLED => SAMPLED - 1,
                    _ => SAMPLED,
                };
                logits[r * VOCAB + (next as usize).min(VOCAB - 1)] = 1.0;
            }
        }
        Ok(StepOutput {
            logits,
            vocab_size: VOCAB,
            first_row,
        })
    }
}
