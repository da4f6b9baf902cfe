//! Measuring step latency on a real backend, for [`LatencyModel::fit`].
//!
//! `brisk profile` runs packed steps of known shape — a prompt chunk of P tokens continuing a
//! sequence at position C, beside D decoding sequences each attending over C positions — on
//! the backend, times them (median of a few runs after a warm-up), and fits the latency model
//! on most of the grid, holding every fourth point out to report the prediction error on
//! shapes the fit has not seen. The KV pool's contents do not matter for timing, so no cache
//! is filled first: attention reads C positions whatever they hold.
//!
//! Generic over [`Backend`], so it is tested with a mock and run on the CPU backend by the
//! binary.

use std::time::Instant;

use brisk_scheduler::{LatencyError, LatencyModel, StepSample, StepShape};
use brisk_types::{Backend, BackendError, BlockId, LogitsWanted, SeqStep, StepBatch};

/// The points to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileGrid {
    /// Prompt-chunk sizes (0: decodes only).
    pub prefill_tokens: Vec<usize>,
    /// Numbers of decoding sequences.
    pub decode_seqs: Vec<usize>,
    /// Context positions (of the chunk's start and of every decode).
    pub contexts: Vec<usize>,
    /// Timed runs per point (after one warm-up); the median is kept.
    pub repeats: usize,
}

impl ProfileGrid {
    /// The full grid: 57 shapes up to 512-token chunks, 32 decodes and 1024 positions.
    pub fn full() -> Self {
        Self {
            prefill_tokens: vec![0, 32, 128, 512],
            decode_seqs: vec![0, 1, 4, 16, 32],
            contexts: vec![16, 256, 1024],
            repeats: 3,
        }
    }

    /// A quick grid (16 shapes, one run each, chunks up to 128 tokens) for profiling at
    /// server start-up.
    pub fn quick() -> Self {
        Self {
            prefill_tokens: vec![0, 32, 128],
            decode_seqs: vec![0, 1, 8],
            contexts: vec![32, 512],
            repeats: 1,
        }
    }

    /// Every (prefill, decodes, context) point except the empty step, in a fixed order.
    pub fn points(&self) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for &c in &self.contexts {
            for &p in &self.prefill_tokens {
                for &d in &self.decode_seqs {
                    if p + d > 0 {
                        out.push((p, d, c));
                    }
                }
            }
        }
        out
    }
}

/// Why profiling failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The backend failed a step.
    #[error("profiling step failed: {0}")]
    Backend(#[from] BackendError),
    /// The grid does not fit the model's context.
    #[error("profile grid: {0}")]
    Grid(String),
    /// The fit failed.
    #[error(transparent)]
    Fit(#[from] LatencyError),
}

/// Measures one step shape: `prefill` prompt tokens from position `context`, plus `decodes`
/// one-token steps at position `context`. Returns the median time, seconds.
pub fn measure_point<B: Backend>(
    backend: &B,
    prefill: usize,
    decodes: usize,
    context: usize,
    repeats: usize,
    block_size: usize,
) -> Result<StepSample, ProfileError> {
    let max = backend.geometry().max_context;
    if context + prefill.max(1) > max {
        return Err(ProfileError::Grid(format!(
            "context {context} + chunk {prefill} exceeds the model's {max} positions"
        )));
    }
    let per_decode = (context + 1).div_ceil(block_size);
    let per_prefill = (context + prefill).div_ceil(block_size);
    let num_blocks = decodes * per_decode + usize::from(prefill > 0) * per_prefill;
    let mut kv = backend.allocate_kv(num_blocks, block_size)?;
    let mut next: BlockId = 0;
    let mut table = |n: usize| {
        let t: Vec<BlockId> = (next..next + n as BlockId).collect();
        next += n as BlockId;
        t
    };
    // Any ids in the vocabulary: timing does not depend on which.
    let vocab = u32::try_from(backend.geometry().vocab_size.max(2)).unwrap_or(u32::MAX);
    let id = |i: usize| 1 + (i as u32).wrapping_mul(7) % (vocab - 1);
    let prompt: Vec<u32> = (0..prefill).map(id).collect();
    let prompt_table = if prefill > 0 {
        table(per_prefill)
    } else {
        Vec::new()
    };
    let decode_tokens: Vec<[u32; 1]> = (0..decodes).map(|i| [id(i + prefill)]).collect();
    let decode_tables: Vec<Vec<BlockId>> = (0..decodes).map(|_| table(per_decode)).collect();
    let mut seqs = Vec::new();
    for (tok, t) in decode_tokens.iter().zip(&decode_tables) {
        seqs.push(SeqStep {
            tokens: tok,
            start_pos: context,
            block_table: t,
            logits: LogitsWanted::Last,
        });
    }
    if prefill > 0 {
        seqs.push(SeqStep {
            tokens: &prompt,
            start_pos: context,
            block_table: &prompt_table,
            logits: LogitsWanted::Last,
        });
    }
    let batch = StepBatch { seqs };
    backend.execute(&batch, &mut kv)?; // warm-up
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        backend.execute(&batch, &mut kv)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let mut shape = StepShape::default();
    if prefill > 0 {
        shape.add_prefill(context, prefill);
    }
    for _ in 0..decodes {
        shape.add_decode(context + 1);
    }
    Ok(StepSample {
        shape,
        seconds: times[times.len() / 2],
    })
}

/// Measures the grid (calling `progress(done, total)` after each point) and fits the model,
/// holding out every fourth point.
pub fn profile<B: Backend>(
    backend: &B,
    grid: &ProfileGrid,
    block_size: usize,
    source: &str,
    mut progress: impl FnMut(usize, usize),
) -> Result<LatencyModel, ProfileError> {
    let points = grid.points();
    let mut train = Vec::new();
    let mut holdout = Vec::new();
    for (i, &(p, d, c)) in points.iter().enumerate() {
        let s = measure_point(backend, p, d, c, grid.repeats, block_size)?;
        if i % 4 == 3 {
            holdout.push(s);
        } else {
            train.push(s);
        }
        progress(i + 1, points.len());
    }
    Ok(LatencyModel::fit(source, &train, &holdout)?)
}
