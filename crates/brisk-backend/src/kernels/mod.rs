//! brisk's own quantized matrix products for the formats its default model uses.
//!
//! candle's CPU path picks SIMD at compile time, has no vectorized Q4_1 dot product, and runs
//! a batch as one vector–matrix product per row, re-reading every weight for every token. Here
//! the weights are multiplied against the whole packed batch at once: each weight row is read
//! once and applied to every token while it sits in L1, which turns a batch from memory-bound
//! into compute-bound. Activations are quantized to 8 bits per 32-element block, as llama.cpp
//! does, so the inner loop is an integer dot product (AVX2 `maddubs`), chosen at run time by
//! CPU feature detection with a portable scalar fallback that computes the same integers.
//!
//! Rows are split across threads in chunks (rayon). Other weight types fall back to candle.

mod avx2;
mod scalar;

use half::f16;
use rayon::prelude::*;

/// Weight formats with a native kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelFormat {
    /// 32 weights: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles (`w = d*q + m`).
    Q4_1,
    /// 32 weights: f16 scale `d`, 32 signed bytes (`w = d*q`).
    Q8_0,
}

impl KernelFormat {
    fn block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }
}

/// A quantized weight matrix `[rows, cols]`, split into scales and quants for the kernels.
pub(crate) struct QuantMatrix {
    format: KernelFormat,
    rows: usize,
    cols: usize,
    /// Per block: `d` (and `m` for Q4_1), as f32.
    scales: Vec<f32>,
    /// Per block: the 16 (Q4_1) or 32 (Q8_0) quant bytes.
    quants: Vec<u8>,
}

/// Activations quantized to 8 bits in blocks of 32: `x ≈ d * q`, with `s = d * Σq` kept for
/// the Q4_1 minimum term.
pub(crate) struct QuantActivations {
    blocks_per_row: usize,
    d: Vec<f32>,
    s: Vec<f32>,
    q: Vec<i8>,
}

/// Tokens a kernel call handles at once against one weight row.
const TOKENS_PER_TILE: usize = 8;

/// Dot products of one weight row with activation rows `t0..t0 + out.len()`
/// (`out.len() <= TOKENS_PER_TILE`).
type TileFn = fn(&QuantMatrix, usize, &QuantActivations, usize, &mut [f32]);

impl QuantMatrix {
    /// Splits ggml blocks (`rows * cols / 32` of them, row-major) into scales and quants.
    /// Returns `None` if the shape does not fit the format.
    pub(crate) fn from_ggml(
        format: KernelFormat,
        rows: usize,
        cols: usize,
        raw: &[u8],
    ) -> Option<Self> {
        if !cols.is_multiple_of(32) || raw.len() != rows * cols / 32 * format.block_bytes() {
            return None;
        }
        let blocks = rows * cols / 32;
        let per_scale = if format == KernelFormat::Q4_1 { 2 } else { 1 };
        let mut scales = Vec::with_capacity(blocks * per_scale);
        let mut quants = Vec::with_capacity(blocks * 32);
        for block in raw.chunks_exact(format.block_bytes()) {
            let half = |i: usize| f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
            match format {
                KernelFormat::Q4_1 => {
                    scales.extend([half(0), half(2)]);
                    quants.extend_from_slice(&block[4..20]);
                }
                KernelFormat::Q8_0 => {
                    scales.push(half(0));
                    quants.extend_from_slice(&block[2..34]);
                }
            }
        }
        Some(Self {
            format,
            rows,
            cols,
            scales,
            quants,
        })
    }

    /// Stacks matrices of one format and width into one (rows of the first, then the second…),
    /// so that projections reading the same input run as one product.
    pub(crate) fn concat_rows(parts: &[&QuantMatrix]) -> Option<QuantMatrix> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.format != first.format || p.cols != first.cols)
        {
            return None;
        }
        Some(QuantMatrix {
            format: first.format,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            scales: parts
                .iter()
                .flat_map(|p| p.scales.iter().copied())
                .collect(),
            quants: parts
                .iter()
                .flat_map(|p| p.quants.iter().copied())
                .collect(),
        })
    }

    /// `out[t * rows + r] = Σ_k x[t * cols + k] * W[r, k]` for the `m` rows of `x`.
    pub(crate) fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        debug_assert_eq!(x.len(), m * self.cols);
        debug_assert_eq!(out.len(), m * self.rows);
        let acts = QuantActivations::quantize(x, m, self.cols);
        let tile = self.tile_fn();
        // Each task owns a band of weight rows and applies it to every token, writing
        // `band[r][t]`; the band layout is transposed into `out` afterwards. A few bands per
        // thread balance the load without paying a hand-off per handful of rows (a decode
        // step runs ~200 of these products, so per-task overhead is most of a small one).
        let tasks = rayon::current_num_threads() * 4;
        let rows_per_task = self.rows.div_ceil(tasks).max(8);
        let mut transposed = vec![0.0f32; self.rows * m];
        transposed
            .par_chunks_mut(rows_per_task * m)
            .enumerate()
            .for_each(|(task, band)| {
                let first = task * rows_per_task;
                for (i, row_out) in band.chunks_exact_mut(m).enumerate() {
                    for (g, group) in row_out.chunks_mut(TOKENS_PER_TILE).enumerate() {
                        tile(self, first + i, &acts, g * TOKENS_PER_TILE, group);
                    }
                }
            });
        for (r, row) in transposed.chunks_exact(m).enumerate() {
            for (t, v) in row.iter().enumerate() {
                out[t * self.rows + r] = *v;
            }
        }
    }

    fn tile_fn(&self) -> TileFn {
        let simd = avx2::available();
        match (self.format, simd) {
            (KernelFormat::Q4_1, true) => avx2::dot_q4_1,
            (KernelFormat::Q8_0, true) => avx2::dot_q8_0,
            (KernelFormat::Q4_1, false) => scalar::tile_q4_1,
            (KernelFormat::Q8_0, false) => scalar::tile_q8_0,
        }
    }

    /// Number of 32-element blocks in a row.
    fn blocks_per_row(&self) -> usize {
        self.cols / 32
    }
}

impl QuantActivations {
    /// Quantizes `m` rows of `cols` values (cols a multiple of 32).
    pub(crate) fn quantize(x: &[f32], m: usize, cols: usize) -> Self {
        let blocks_per_row = cols / 32;
        let n = m * blocks_per_row;
        let mut acts = Self {
            blocks_per_row,
            d: Vec::with_capacity(n),
            s: Vec::with_capacity(n),
            q: Vec::with_capacity(n * 32),
        };
        for block in x.chunks_exact(32) {
            let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for v in block {
                // |v * inv| <= 127, so the cast cannot truncate.
                #[allow(clippy::cast_possible_truncation)]
                let q = (v * inv).round() as i8;
                sum += i32::from(q);
                acts.q.push(q);
            }
            acts.d.push(d);
            #[allow(clippy::cast_precision_loss)]
            acts.s.push(d * sum as f32);
        }
        acts
    }
}

#[cfg(test)]
mod tests;
