//! The forward pass of a Llama-family decoder over a packed batch.

use brisk_types::{
    Backend, BackendCapabilities, BackendError, LogitsWanted, ModelGeometry, StepBatch, StepOutput,
    TokenId,
};
use rayon::prelude::*;

use crate::attention::{paged_attention, write_kv, TokenPlace};
use crate::config::ModelConfig;
use crate::kv_pool::{CpuKvPool, KvCacheDtype};
use crate::kv_wire::KvTransferDtype;
use crate::math::silu;
use crate::rope::Rope;
use crate::weights::ModelWeights;

/// A model loaded for the CPU: weights, hyper-parameters and the stop tokens of its vocabulary.
pub struct CpuBackend {
    /// The threads every step runs on. A step enters the pool once and its ~200 parallel
    /// sections (matrix products, attention) are split among workers already inside it, rather
    /// than each being handed over from the caller's thread and waited for.
    pool: rayon::ThreadPool,
    config: ModelConfig,
    kv_dtype: KvCacheDtype,
    /// How [`Backend::export_blocks`] sends K/V to another replica.
    kv_transfer: KvTransferDtype,
    weights: ModelWeights,
    rope: Rope,
    geometry: ModelGeometry,
    stop_tokens: Vec<TokenId>,
}

impl CpuBackend {
    pub(crate) fn new(
        config: ModelConfig,
        weights: ModelWeights,
        stop_tokens: Vec<TokenId>,
    ) -> Self {
        let rope = Rope::new(&config, weights.rope_freq_factors.as_deref());
        let geometry = ModelGeometry {
            num_layers: config.num_layers,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            vocab_size: config.vocab_size,
            max_context: config.max_context,
            kv_bytes_per_token: kv_bytes_per_token(&config, KvCacheDtype::default()),
        };
        Self {
            pool: compute_pool(),
            kv_dtype: KvCacheDtype::default(),
            kv_transfer: KvTransferDtype::default(),
            config,
            weights,
            rope,
            geometry,
            stop_tokens,
        }
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Stores K and V of pools allocated from now on as `dtype` (the geometry's bytes per
    /// token follow).
    pub fn set_kv_cache_dtype(&mut self, dtype: KvCacheDtype) {
        self.kv_dtype = dtype;
        self.geometry.kv_bytes_per_token = kv_bytes_per_token(&self.config, dtype);
    }

    /// The element type of the KV pools this backend allocates.
    pub fn kv_cache_dtype(&self) -> KvCacheDtype {
        self.kv_dtype
    }

    /// Exports K/V from now on as `dtype`: the pool's own bytes (`Auto`) or quantized for
    /// the wire, on the calling (engine) thread. Imports take either. `brisk serve` leaves
    /// it at `Auto` and quantizes off the engine thread instead ([`crate::compress_kv`]);
    /// in-process tools (`kv_accuracy`, `move_bench`) set it.
    pub fn set_kv_transfer_dtype(&mut self, dtype: KvTransferDtype) {
        self.kv_transfer = dtype;
    }

    /// Bytes per token of K/V sent as `wire`, for blocks of `block_size`.
    pub fn kv_transfer_bytes_per_token(&self, wire: KvTransferDtype, block_size: usize) -> usize {
        let c = &self.config;
        wire.compressed_bytes_per_token(c.num_layers, c.num_kv_heads, c.head_dim, block_size)
            .unwrap_or(self.geometry.kv_bytes_per_token)
    }

    fn validate(&self, batch: &StepBatch<'_>, kv: &CpuKvPool) -> Result<(), BackendError> {
        let invalid = |m: String| Err(BackendError::InvalidBatch(m));
        if kv.layers.len() != self.config.num_layers
            || kv.num_kv_heads != self.config.num_kv_heads
            || kv.head_dim != self.config.head_dim
        {
            return invalid("the KV pool was allocated for another model".into());
        }
        for (i, s) in batch.seqs.iter().enumerate() {
            if s.tokens.is_empty() {
                return invalid(format!("sequence {i} has no tokens"));
            }
            let Some(end) = s.start_pos.checked_add(s.tokens.len()) else {
                return invalid(format!("sequence {i}: position {} overflows", s.start_pos));
            };
            if end > self.config.max_context {
                return invalid(format!(
                    "sequence {i} reaches position {end}, past the context of {}",
                    self.config.max_context
                ));
            }
            if s.block_table.len() * kv.block_size < end {
                return invalid(format!(
                    "sequence {i}: {} blocks of {} cannot hold {end} positions",
                    s.block_table.len(),
                    kv.block_size
                ));
            }
            if let Some(b) = s.block_table.iter().find(|&&b| b as usize >= kv.num_blocks) {
                return invalid(format!("sequence {i}: block {b} is outside the pool"));
            }
            if let Some(t) = s
                .tokens
                .iter()
                .find(|&&t| t as usize >= self.config.vocab_size)
            {
                return invalid(format!("sequence {i}: token {t} is outside the vocabulary"));
            }
        }
        Ok(())
    }

    fn forward(
        &self,
        batch: &StepBatch<'_>,
        kv: &mut CpuKvPool,
    ) -> candle_core::Result<StepOutput> {
        let c = &self.config;
        let h = c.hidden_size;
        let tokens: Vec<TokenId> = batch
            .seqs
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let places: Vec<TokenPlace<'_>> = batch
            .seqs
            .iter()
            .flat_map(|s| {
                (0..s.tokens.len()).map(move |i| TokenPlace {
                    block_table: s.block_table,
                    pos: s.start_pos + i,
                })
            })
            .collect();
        let n = tokens.len();
        let positions: Vec<usize> = places.iter().map(|p| p.pos).collect();
        let (cos, sin) = self.rope.tables(&positions);

        let mut x = Vec::with_capacity(n * h);
        for &t in &tokens {
            let t = t as usize;
            x.extend_from_slice(&self.weights.embedding[t * h..(t + 1) * h]);
        }

        let mut normed = vec![0.0; n * h];
        for (li, layer) in self.weights.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, c.rms_norm_eps, &mut normed);
            let mut qkv = layer.qkv.forward(&normed, n)?.into_iter();
            let (Some(mut q), Some(mut k), Some(v)) = (qkv.next(), qkv.next(), qkv.next()) else {
                unreachable!("three projections")
            };
            let half = c.head_dim / 2;
            for (x, heads) in [(&mut q, c.num_heads), (&mut k, c.num_kv_heads)] {
                for_row_chunks(x, heads * c.head_dim, |rows, x| {
                    let tables = rows.start * half..rows.end * half;
                    self.rope
                        .apply(x, heads, &cos[tables.clone()], &sin[tables]);
                });
            }
            write_kv(kv, li, &places, &k, &v);
            let attn = paged_attention(kv, li, &places, &q, c.num_heads);
            add_into(&mut x, &layer.o.forward(&attn, n)?, h);

            rms_norm(&x, &layer.ffn_norm, c.rms_norm_eps, &mut normed);
            let mut gate_up = layer.gate_up.forward(&normed, n)?.into_iter();
            let (Some(mut gate), Some(up)) = (gate_up.next(), gate_up.next()) else {
                unreachable!("two projections")
            };
            let inter = gate.len() / n;
            for_row_chunks(&mut gate, inter, |rows, gate| {
                for (g, u) in gate.iter_mut().zip(&up[rows.start * inter..]) {
                    *g = silu(*g) * u;
                }
            });
            add_into(&mut x, &layer.down.forward(&gate, n)?, h);
        }

        // Only the rows that will be sampled or inspected go through the LM head.
        let mut rows = Vec::new();
        let mut first_row = Vec::with_capacity(batch.seqs.len());
        let mut offset = 0;
        for s in &batch.seqs {
            first_row.push(rows.len());
            match s.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last => rows.push(offset + s.tokens.len() - 1),
                LogitsWanted::All => rows.extend(offset..offset + s.tokens.len()),
            }
            offset += s.tokens.len();
        }
        let mut selected = Vec::with_capacity(rows.len() * h);
        for &r in &rows {
            selected.extend_from_slice(&x[r * h..(r + 1) * h]);
        }
        let mut normed = vec![0.0; selected.len()];
        rms_norm(
            &selected,
            &self.weights.output_norm,
            c.rms_norm_eps,
            &mut normed,
        );
        let logits = if rows.is_empty() {
            Vec::new()
        } else {
            self.weights.lm_head.forward(&normed, rows.len())?
        };
        Ok(StepOutput {
            logits,
            vocab_size: c.vocab_size,
            first_row,
        })
    }
}

fn kv_bytes_per_token(c: &ModelConfig, dtype: KvCacheDtype) -> usize {
    2 * c.num_layers * c.num_kv_heads * dtype.vector_bytes(c.head_dim)
}

/// How many compute threads a backend runs: `BRISK_THREADS` if set, else one per available
/// core.
pub fn compute_threads() -> usize {
    std::env::var("BRISK_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The compute threads' pool ([`compute_threads`] of them).
fn compute_pool() -> rayon::ThreadPool {
    let threads = compute_threads();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("brisk-compute-{i}"))
        .build()
        .unwrap_or_else(|e| panic!("cannot start {threads} compute threads: {e}"))
}

/// Token rows one compute task takes in the element-wise passes (norms, RoPE, SiLU, residual
/// adds); a batch shorter than two such chunks runs them on the calling thread. Small on
/// purpose: a busy decode step (16 sequences) splits them too, so the other compute thread
/// does not fall asleep between two matrix products — on a VM, waking it costs more than the
/// pass (decode batch 16 on the Xeon: 20.8 → 19.2 ms per step).
const ROWS_PER_TASK: usize = 8;

/// Calls `f(rows, chunk)` over `data` (rows of `width` values) split into chunks of
/// [`ROWS_PER_TASK`] rows, on the compute threads when there are at least two chunks.
fn for_row_chunks(
    data: &mut [f32],
    width: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    let n = data.len() / width;
    if n < 2 * ROWS_PER_TASK {
        f(0..n, data);
        return;
    }
    data.par_chunks_mut(ROWS_PER_TASK * width)
        .enumerate()
        .for_each(|(i, chunk)| {
            let first = i * ROWS_PER_TASK;
            f(first..first + chunk.len() / width, chunk);
        });
}

fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let h = weight.len();
    for_row_chunks(out, h, |rows, out| {
        let x = &x[rows.start * h..rows.end * h];
        for (row, o) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
            let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let scale = 1.0 / (mean_sq + eps).sqrt();
            for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
                *o = v * scale * w;
            }
        }
    });
}

/// `x += y`, both `rows × h`.
fn add_into(x: &mut [f32], y: &[f32], h: usize) {
    for_row_chunks(x, h, |rows, x| {
        for (a, b) in x.iter_mut().zip(&y[rows.start * h..]) {
            *a += b;
        }
    });
}

impl Backend for CpuBackend {
    type KvPool = CpuKvPool;

    fn geometry(&self) -> &ModelGeometry {
        &self.geometry
    }

    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            name: "cpu".into(),
            mixed_batches: true,
        }
    }

    fn stop_tokens(&self) -> &[TokenId] {
        &self.stop_tokens
    }

    fn allocate_kv(&self, num_blocks: usize, block_size: usize) -> Result<CpuKvPool, BackendError> {
        CpuKvPool::new(
            self.config.num_layers,
            self.config.num_kv_heads,
            self.config.head_dim,
            num_blocks,
            block_size,
            self.kv_dtype,
        )
    }

    fn execute(
        &self,
        batch: &StepBatch<'_>,
        kv: &mut CpuKvPool,
    ) -> Result<StepOutput, BackendError> {
        self.validate(batch, kv)?;
        if batch.seqs.is_empty() {
            return Ok(StepOutput {
                logits: Vec::new(),
                vocab_size: self.config.vocab_size,
                first_row: Vec::new(),
            });
        }
        self.pool
            .install(|| self.forward(batch, kv))
            .map_err(|e| BackendError::Forward(e.to_string()))
    }

    fn export_blocks(&self, kv: &CpuKvPool, blocks: &[u32]) -> Result<Vec<u8>, BackendError> {
        kv.export_blocks_as(blocks, self.kv_transfer)
    }

    fn import_blocks(
        &self,
        kv: &mut CpuKvPool,
        blocks: &[u32],
        data: &[u8],
    ) -> Result<(), BackendError> {
        kv.import_blocks(blocks, data)
    }
}
