//! A model-free [`Backend`] for scheduler, engine and profiler tests: it predicts
//! `last token + 1 (mod vocab)`, so a sequence counts up and reaches token 0 (its stop token)
//! after `vocab - 1` steps; it checks that every block table fits the pool it allocated; and
//! each step costs a fixed time plus a time per token, busy-waited so that a profiler sees
//! the cost grow with the batch.

use std::time::{Duration, Instant};

use brisk_types::{
    Backend, BackendCapabilities, BackendError, ModelGeometry, StepBatch, StepOutput, TokenId,
};

/// The mock backend.
pub struct CountingBackend {
    geometry: ModelGeometry,
    stop: Vec<TokenId>,
    per_step: Duration,
    per_token: Duration,
}

impl CountingBackend {
    /// A backend over `vocab` tokens with a `max_context`-token context; token 0 stops a
    /// sequence; steps cost 200 µs.
    pub fn new(vocab: usize, max_context: usize) -> Self {
        Self {
            geometry: ModelGeometry {
                num_layers: 1,
                num_kv_heads: 1,
                head_dim: 2,
                vocab_size: vocab,
                max_context,
                kv_bytes_per_token: 16,
            },
            stop: vec![0],
            per_step: Duration::from_micros(200),
            per_token: Duration::ZERO,
        }
    }

    /// Makes each step cost `per_step` plus `per_token` for every token it computes.
    pub fn with_step_cost(mut self, per_step: Duration, per_token: Duration) -> Self {
        self.per_step = per_step;
        self.per_token = per_token;
        self
    }
}

impl Backend for CountingBackend {
    /// The number of blocks allocated.
    type KvPool = usize;

    fn geometry(&self) -> &ModelGeometry {
        &self.geometry
    }
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            name: "counting-mock".into(),
            mixed_batches: true,
        }
    }
    fn stop_tokens(&self) -> &[TokenId] {
        &self.stop
    }
    fn allocate_kv(&self, num_blocks: usize, _: usize) -> Result<usize, BackendError> {
        Ok(num_blocks)
    }
    fn execute(&self, batch: &StepBatch<'_>, pool: &mut usize) -> Result<StepOutput, BackendError> {
        let vocab = self.geometry.vocab_size;
        let mut logits = Vec::new();
        let mut first_row = Vec::new();
        for s in &batch.seqs {
            assert!(
                s.block_table.iter().all(|&b| (b as usize) < *pool),
                "a block table points past the pool"
            );
            assert!(s.tokens.iter().all(|&t| (t as usize) < vocab));
            first_row.push(logits.len() / vocab);
            for _ in 0..s.logit_rows() {
                let next = (*s.tokens.last().expect("a step has tokens") as usize + 1) % vocab;
                let mut row = vec![0.0f32; vocab];
                row[next] = 10.0;
                logits.extend(row);
            }
        }
        let tokens = u32::try_from(batch.num_tokens()).unwrap_or(u32::MAX);
        let work = self.per_step + self.per_token * tokens;
        let start = Instant::now();
        while start.elapsed() < work {
            std::hint::spin_loop();
        }
        Ok(StepOutput {
            logits,
            vocab_size: vocab,
            first_row,
        })
    }
}
