//! brisk's own quantized matrix products for the formats its default model uses.
//!
//! candle's CPU path picks SIMD at compile time, has no vectorized Q4_1 dot product, and runs
//! a batch as one vector–matrix product per row, re-reading every weight for every token. Here
//! the weights are multiplied against the whole packed batch at once, which turns a batch from
//! memory-bound into compute-bound:
//!
//! - Activations are quantized to 8 bits per 32-element block, as llama.cpp does, so the inner
//!   loop is an integer dot product on the instruction set chosen at run time ([`KernelPath`]:
//!   AMX `tdpbsud`, AVX-512 `vpdpbusd`, AVX2 `maddubs`), with a portable scalar reference that
//!   computes the same integers.
//! - Weights are interleaved per row group at load (see [`quant_at`]; 8 rows for AVX2, 16 for
//!   AVX-512 and AMX): one vector load holds four consecutive weights of each of the group's
//!   rows. The dot-product instruction multiplies them with the token's matching four
//!   activations, broadcast to every row, so each lane accumulates one row's dot product and
//!   no horizontal sums are needed. Per block the exact integer sums are scaled in float —
//!   `(d_w · d_x) · Σ`, plus the Q4_1 minimum term `m · d_x · Σq_x` — one vector operation
//!   for a whole row group. For AMX the sixteen-row group is the tile's `B` operand as it is.
//! - Tokens are processed in tiles of [`TILE`] (AMX: 16): a row group's weights are unpacked
//!   once per block and applied to every token of the tile (each token keeps its own
//!   accumulators).
//! - Cache blocking: a thread owns a band of weight rows (which stays in its L2 across tiles)
//!   and walks token tiles in the outer loop, so a tile's activations (a few KiB) stay in L1
//!   while every row of the band passes over them.
//! - A (row, token) result is the same sequence of float operations whatever the tile holds,
//!   on every path (all agree with the scalar reference bit for bit), so a sequence's logits
//!   depend neither on what it is batched with nor on the CPU.
//!
//! Rows are split across threads in bands (rayon); each thread writes its own rows of the
//! output. Other quantized types are converted to these two layouts at load (`convert`).
//! The attention kernels (scores, softmax exponentials, weighted sums; [`attention`] and the
//! in-place cache readers `bf16_cache`, `int8_cache`) live here too, for the same reason: they
//! are the SIMD code, chosen with the same path.

#![allow(unsafe_code)] // `OutRows` below and the SIMD kernels of each path; nowhere else.

/// Calls `f::<n>()` for a runtime tile width `n` in `1..=TILE` (the SIMD kernels are
/// specialised per width so their per-token accumulators live in registers).
macro_rules! by_width {
    ($n:expr, $f:ident, $($arg:expr),*) => {
        match $n {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            _ => $f::<8>($($arg),*),
        }
    };
}

/// The body of a SIMD band kernel (weight rows `rows` of `w` against the tokens of tiles
/// `tiles` of `x`, into `out`): token tiles outer, so a tile's activations stay in L1 while
/// the band's row groups of `group` rows pass over them; each group's sums come from
/// `q4_1`/`q8_0` (specialised per tile width, [`by_width`]) and are stored as runs. Expanded
/// inside each instruction set's `#[target_feature]` function so that its kernels inline.
macro_rules! band_loop {
    ($group:expr, $q4_1:ident, $q8_0:ident, $w:expr, $rows:expr, $x:expr, $tiles:expr, $out:expr) => {{
        let (w, rows, x, out): (&QuantMatrix, Range<usize>, &QuantActivations, &OutRows<'_>) =
            ($w, $rows, $x, $out);
        let nb = x.blocks;
        let row_quants = nb * w.format.quant_bytes();
        for tile in $tiles {
            let t0 = tile * TILE;
            let n = TILE.min(x.tokens - t0);
            let xt = Tile::new(x, tile);
            for g in rows.clone().step_by($group) {
                // SAFETY: group `g` (padded rows included) exists in every array (the minima
                // only for Q4_1, the only format that reads them); the tile holds `n` tokens.
                let sums = unsafe {
                    let at = grouped_index($group, nb, g, 0);
                    let (wq, wd) = (w.quants.as_ptr().add(g * row_quants), w.d.as_ptr().add(at));
                    match w.format {
                        KernelFormat::Q4_1 => {
                            by_width!(n, $q4_1, nb, wq, wd, w.m.as_ptr().add(at), xt)
                        }
                        KernelFormat::Q8_0 => by_width!(n, $q8_0, nb, wq, wd, xt),
                    }
                };
                let width = ($group).min(rows.end - g);
                for (t, lanes) in sums.iter().take(n).enumerate() {
                    // SAFETY: the caller owns the band's rows, `g..g + width` among them.
                    unsafe { out.write_run(t0 + t, g, &lanes[..width]) };
                }
            }
        }
    }};
}

/// Calls `f::<r>()` for a runtime row count `r` in `1..=MAX_SCORE_ROWS`.
macro_rules! by_rows {
    ($n:expr, $f:path, $($arg:expr),*) => {{
        use $f as kernel;
        match $n {
            1 => kernel::<1>($($arg),*),
            2 => kernel::<2>($($arg),*),
            3 => kernel::<3>($($arg),*),
            4 => kernel::<4>($($arg),*),
            5 => kernel::<5>($($arg),*),
            _ => kernel::<6>($($arg),*),
        }
    }};
}

mod amx;
mod attention;
mod avx2;
mod avx512;
pub(crate) mod bf16_cache;
mod convert;
pub(crate) mod int8_cache;
mod path;
mod peak;
mod scalar;

use attention::check_weighted_values;
pub(crate) use attention::{
    exp_shifted_in_place, score_keys, weighted_values, KEY_LANES, MAX_SCORE_ROWS,
};
pub(crate) use convert::{conversion, Conversion};
pub use path::{KernelChoice, KernelPath};
pub use peak::peak_macs_per_second;

use half::f16;
use rayon::prelude::*;

/// Weight formats with a native kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
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

    /// Quant bytes per block in brisk's layout.
    fn quant_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 16,
            Self::Q8_0 => 32,
        }
    }
}

/// Tokens a kernel applies one weight block to before moving on.
pub(crate) const TILE: usize = 8;

/// A quantized weight matrix `[rows, cols]`, split into scales and quants for the kernels.
/// Rows are interleaved per row group — eight rows for AVX2, sixteen for AVX-512 and AMX
/// ([`KernelPath::row_group`]), one row per vector lane — and padded with zeros to whole
/// groups.
pub struct QuantMatrix {
    format: KernelFormat,
    /// The kernels this matrix is laid out for.
    path: KernelPath,
    rows: usize,
    cols: usize,
    /// Per row group, per block, the group's scales `d` (f32).
    d: Vec<f32>,
    /// Q4_1 only: the minima `m`, laid out as `d`; empty for Q8_0.
    m: Vec<f32>,
    /// `padded rows × blocks × quant_bytes`, interleaved per row group (see [`quant_at`]) so
    /// that one vector load holds four consecutive weights of each of the group's rows
    /// (Q4_1: twice, in the low and the high nibbles).
    quants: Vec<u8>,
    /// AMX with Q4_1 only: the quants unpacked to one byte per weight, per row group and
    /// block the 512-byte `B` tile of `amx` (row `2k`: chunk `k`'s low nibbles, `2k + 1` its
    /// high ones), made at load because unpacking while multiplying stalls the tile loads.
    /// The AVX-512 kernels, which take the tokens short of a whole tile, read `quants`.
    tile_bytes: Vec<u8>,
}

/// Where element `e` (0..32) of row `r`, block `b` of a matrix with `nb` blocks per row and
/// `group` rows per row group lies in the interleaved layout: `(byte, high nibble?)`.
///
/// Per row group and block there are `4·group`-byte chunks (one vector: 32 bytes for AVX2's
/// eight rows, 64 for AVX-512's sixteen), four for Q4_1 and eight for Q8_0. Q8_0: chunk `k`,
/// byte `4·(r mod group) + j` is element `4k + j` of row `r`. Q4_1: chunk `k`, byte
/// `4·(r mod group) + j` holds elements `8k + j` (low nibble) and `8k + 4 + j` (high nibble).
/// Either way a chunk (or its low or high nibbles) gives each row four weights that multiply
/// one broadcast 4-byte group of a token's activations — and, for sixteen rows, a Q8_0 block's
/// chunks (a Q4_1 block's nibbles, unpacked) are exactly AMX's VNNI-packed `B` tile.
#[inline]
fn quant_at(
    format: KernelFormat,
    group: usize,
    nb: usize,
    r: usize,
    b: usize,
    e: usize,
) -> (usize, bool) {
    let group_block = (r / group) * nb + b;
    let (chunk, lane) = (4 * group, (r % group) * 4);
    match format {
        KernelFormat::Q4_1 => ((group_block * 4 + e / 8) * chunk + lane + e % 4, e % 8 >= 4),
        KernelFormat::Q8_0 => ((group_block * 8 + e / 4) * chunk + lane + e % 4, false),
    }
}

/// A matrix's per-block values in plain row-major order, as built from a file.
pub(crate) struct RowMajor {
    pub(crate) d: Vec<f32>,
    pub(crate) m: Vec<f32>,
    pub(crate) quants: Vec<u8>,
}

impl RowMajor {
    pub(crate) fn with_capacity(format: KernelFormat, rows: usize, cols: usize) -> Self {
        let blocks = rows * cols / 32;
        Self {
            d: Vec::with_capacity(blocks),
            m: Vec::with_capacity(if format == KernelFormat::Q4_1 {
                blocks
            } else {
                0
            }),
            quants: Vec::with_capacity(blocks * format.quant_bytes()),
        }
    }

    /// The selected path's layout ([`KernelPath::selected`]).
    pub(crate) fn finish(self, format: KernelFormat, rows: usize, cols: usize) -> QuantMatrix {
        self.finish_for(KernelPath::selected(), format, rows, cols)
    }

    /// The layout of `path`'s kernels: rows padded to whole groups, scales grouped.
    fn finish_for(
        self,
        path: KernelPath,
        format: KernelFormat,
        rows: usize,
        cols: usize,
    ) -> QuantMatrix {
        let (nb, g) = (cols / 32, path.row_group());
        let padded = rows.next_multiple_of(g);
        let group = |v: &[f32]| {
            let mut out = vec![0.0f32; padded * nb];
            for r in 0..rows {
                for b in 0..nb {
                    out[grouped_index(g, nb, r, b)] = v[r * nb + b];
                }
            }
            out
        };
        let mut quants = self.quants;
        quants.resize(padded * nb * format.quant_bytes(), 0);
        quants = interleave(format, g, &quants, padded, nb);
        QuantMatrix {
            format,
            path,
            rows,
            cols,
            d: group(&self.d),
            m: if format == KernelFormat::Q4_1 {
                group(&self.m)
            } else {
                Vec::new()
            },
            tile_bytes: if path == KernelPath::Amx && format == KernelFormat::Q4_1 {
                unpack_nibbles(&quants)
            } else {
                Vec::new()
            },
            quants,
        }
    }
}

/// Row-major quants (ggml's: a Q4_1 block's byte `j` holds element `j` in its low nibble and
/// `j + 16` in its high one) of `rows` rows in the interleaved layout of [`quant_at`].
fn interleave(
    format: KernelFormat,
    group: usize,
    row_major: &[u8],
    rows: usize,
    nb: usize,
) -> Vec<u8> {
    let bytes = format.quant_bytes();
    let mut out = vec![0u8; row_major.len()];
    for r in 0..rows {
        for b in 0..nb {
            let block = &row_major[(r * nb + b) * bytes..][..bytes];
            for e in 0..32 {
                let (at, high) = quant_at(format, group, nb, r, b, e);
                out[at] |= match format {
                    KernelFormat::Q8_0 => block[e] ^ q8_bias(group),
                    KernelFormat::Q4_1 if e < 16 => block[e] & 0x0F,
                    KernelFormat::Q4_1 => block[e - 16] >> 4,
                } << if high { 4 } else { 0 };
            }
        }
    }
    out
}

/// Sixteen-row Q4_1 quants (per group and block four 64-byte chunks) as bytes, each chunk's
/// low nibbles followed by its high nibbles.
fn unpack_nibbles(quants: &[u8]) -> Vec<u8> {
    quants
        .chunks_exact(64)
        .flat_map(|chunk| {
            let low = chunk.iter().map(|q| q & 0x0F);
            low.chain(chunk.iter().map(|q| q >> 4))
        })
        .collect()
}

/// What the layout with `group` rows per group adds to Q8_0 weights: 128 for the sixteen-row
/// layouts, whose kernels (AVX-512 `vpdpbusd`, AMX `tdpbsud`) multiply unsigned weight bytes
/// with signed activations, and subtract `128·Σq_x` per block afterwards; 0 for AVX2's.
fn q8_bias(group: usize) -> u8 {
    if group == 16 {
        0x80
    } else {
        0
    }
}

/// Where the value of row `r`, block `b` lies in a grouped array (`nb` blocks per row,
/// `group` rows per row group).
#[inline]
fn grouped_index(group: usize, nb: usize, r: usize, b: usize) -> usize {
    ((r / group) * nb + b) * group + r % group
}

/// A batch of activation rows quantized to 8 bits in blocks of 32 (`x ≈ d · q`), laid out
/// for the kernels.
pub(crate) struct QuantActivations {
    tokens: usize,
    blocks: usize,
    /// `tokens × blocks × 32` quants.
    q: Vec<i8>,
    /// Per tile of [`TILE`] tokens, `blocks × TILE` scales `d`, token-minor (zero for the
    /// missing tokens of a last, partial tile), so a block's scales load as one vector.
    d_tiled: Vec<f32>,
    /// `d · Σq` per block (for the Q4_1 minimum term), laid out as `d_tiled`.
    s_tiled: Vec<f32>,
    /// `128 · Σq` per block, laid out as `d_tiled`: what the biased Q8_0 weights of the
    /// sixteen-row layouts (see [`q8_bias`]) add to a block's integer sum.
    bias_tiled: Vec<i32>,
}

/// The band kernel of one instruction set: weight rows `rows` against every token
/// of `x`, writing `out[t * w.rows + r]`.
type BandFn = fn(&QuantMatrix, std::ops::Range<usize>, &QuantActivations, &OutRows<'_>);

impl QuantMatrix {
    /// Splits ggml blocks (`rows * cols / 32` of them, row-major) into scales and quants.
    /// Returns `None` if the shape does not fit the format.
    pub fn from_ggml(format: KernelFormat, rows: usize, cols: usize, raw: &[u8]) -> Option<Self> {
        if !cols.is_multiple_of(32) || raw.len() != rows * cols / 32 * format.block_bytes() {
            return None;
        }
        let mut out = RowMajor::with_capacity(format, rows, cols);
        for block in raw.chunks_exact(format.block_bytes()) {
            let half = |i: usize| f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
            out.d.push(half(0));
            match format {
                KernelFormat::Q4_1 => {
                    out.m.push(half(2));
                    out.quants.extend_from_slice(&block[4..20]);
                }
                KernelFormat::Q8_0 => out.quants.extend_from_slice(&block[2..34]),
            }
        }
        Some(out.finish(format, rows, cols))
    }

    /// The per-block values back in row-major order (padding rows dropped).
    fn row_major(&self) -> RowMajor {
        let (nb, g) = (self.blocks(), self.group());
        let ungroup = |v: &[f32]| -> Vec<f32> {
            (0..self.rows)
                .flat_map(|r| (0..nb).map(move |b| v[grouped_index(g, nb, r, b)]))
                .collect()
        };
        RowMajor {
            d: ungroup(&self.d),
            m: if self.format == KernelFormat::Q4_1 {
                ungroup(&self.m)
            } else {
                Vec::new()
            },
            quants: (0..self.rows * nb)
                .flat_map(|rb| {
                    let q = self.block_quants(rb / nb, rb % nb);
                    match self.format {
                        KernelFormat::Q8_0 => q.to_vec(),
                        KernelFormat::Q4_1 => (0..16).map(|j| q[j] | (q[j + 16] << 4)).collect(),
                    }
                })
                .collect(),
        }
    }

    /// The 32 quants of row `r`, block `b`, in element order: nibbles (0..16) for Q4_1,
    /// two's-complement bytes for Q8_0.
    pub(crate) fn block_quants(&self, r: usize, b: usize) -> [u8; 32] {
        std::array::from_fn(|e| {
            let (at, high) = quant_at(self.format, self.group(), self.blocks(), r, b, e);
            let byte = self.quants[at];
            match (self.format, high) {
                (KernelFormat::Q8_0, _) => byte ^ q8_bias(self.group()),
                (KernelFormat::Q4_1, true) => byte >> 4,
                (KernelFormat::Q4_1, false) => byte & 0x0F,
            }
        })
    }

    /// The scale `d` of row `r`, block `b`.
    pub(crate) fn scale(&self, r: usize, b: usize) -> f32 {
        self.d[grouped_index(self.group(), self.blocks(), r, b)]
    }

    /// The minimum `m` of row `r`, block `b` (Q4_1).
    pub(crate) fn minimum(&self, r: usize, b: usize) -> f32 {
        self.m[grouped_index(self.group(), self.blocks(), r, b)]
    }

    /// The same matrix laid out for another path's kernels (tests and benchmarks compare
    /// paths in one process; a server uses [`KernelPath::selected`] throughout).
    ///
    /// # Panics
    /// If this CPU cannot run `path`.
    pub fn for_path(&self, path: KernelPath) -> QuantMatrix {
        assert!(path.available(), "this CPU cannot run the {path} kernels");
        self.row_major()
            .finish_for(path, self.format, self.rows, self.cols)
    }

    /// The kernels this matrix is laid out for.
    pub fn path(&self) -> KernelPath {
        self.path
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
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut all = RowMajor::with_capacity(first.format, rows, first.cols);
        for part in parts {
            let p = part.row_major();
            all.d.extend(p.d);
            all.m.extend(p.m);
            all.quants.extend(p.quants);
        }
        Some(all.finish_for(first.path, first.format, rows, first.cols))
    }

    /// `out[t * rows + r] = Σ_k x[t * cols + k] * W[r, k]` for the `m` rows of `x`.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.cols, "activation shape");
        assert_eq!(out.len(), m * self.rows, "output shape");
        let acts = QuantActivations::quantize(x, m, self.cols);
        self.matmul_quantized(&acts, out);
    }

    /// The product with activations already quantized (`acts` built for this width).
    pub(crate) fn matmul_quantized(&self, acts: &QuantActivations, out: &mut [f32]) {
        assert_eq!(acts.blocks, self.blocks(), "activation width");
        assert_eq!(out.len(), acts.tokens * self.rows, "output shape");
        let band = self.band_fn();
        let out = OutRows::new(out, self.rows);
        // A few bands per thread balance the load without paying a hand-off per handful of
        // rows (a decode step runs ~150 of these products, so per-task overhead is most of a
        // small one). Bands are whole row groups.
        let tasks = rayon::current_num_threads() * 4;
        let group = self.group();
        let rows_per_task = self
            .rows
            .div_ceil(tasks)
            .next_multiple_of(group)
            .max(16.max(group));
        let bands = self.rows.div_ceil(rows_per_task);
        if bands == 1 {
            band(self, 0..self.rows, acts, &out);
            return;
        }
        (0..bands).into_par_iter().for_each(|i| {
            let start = i * rows_per_task;
            band(
                self,
                start..(start + rows_per_task).min(self.rows),
                acts,
                &out,
            );
        });
    }

    fn band_fn(&self) -> BandFn {
        match self.path {
            KernelPath::Scalar => scalar::band,
            KernelPath::Avx2 | KernelPath::AvxVnni => avx2::band,
            KernelPath::Avx512Vnni => avx512::band,
            KernelPath::Amx => amx::band,
        }
    }

    /// Number of 32-element blocks in a row.
    fn blocks(&self) -> usize {
        self.cols / 32
    }

    /// Rows per interleaved row group.
    fn group(&self) -> usize {
        self.path.row_group()
    }

    /// Panics unless this matrix is laid out for `path` and it and `x` have the sizes that
    /// `path`'s kernels index with for output rows `rows`.
    fn check_band(&self, path: KernelPath, rows: &std::ops::Range<usize>, x: &QuantActivations) {
        assert_eq!(self.path, path, "matrix laid out for another path");
        let (nb, group) = (self.blocks(), self.group());
        assert!(rows.start <= rows.end && rows.end <= self.rows, "row band");
        assert_eq!(x.blocks, nb, "activation width");
        let padded = self.rows.next_multiple_of(group);
        assert!(
            rows.start.is_multiple_of(group),
            "bands start at a row group"
        );
        assert_eq!(self.d.len(), padded * nb);
        assert_eq!(self.quants.len(), padded * nb * self.format.quant_bytes());
        if path == KernelPath::Amx && self.format == KernelFormat::Q4_1 {
            assert_eq!(self.tile_bytes.len(), padded * nb * 32);
        }
        if self.format == KernelFormat::Q4_1 {
            assert_eq!(self.m.len(), padded * nb);
        }
        assert_eq!(x.q.len(), x.tokens * nb * 32);
        assert_eq!(x.d_tiled.len(), x.tokens.div_ceil(TILE) * nb * TILE);
        assert_eq!(x.s_tiled.len(), x.d_tiled.len());
        assert_eq!(x.bias_tiled.len(), x.d_tiled.len());
    }
}

impl QuantActivations {
    /// Quantizes `m` rows of `cols` values (cols a multiple of 32).
    pub(crate) fn quantize(x: &[f32], m: usize, cols: usize) -> Self {
        assert!(
            cols.is_multiple_of(32) && x.len() == m * cols,
            "activation shape"
        );
        let blocks = cols / 32;
        let mut q = vec![0i8; m * cols];
        let mut d = vec![0.0f32; m * blocks];
        let mut s = vec![0.0f32; m * blocks];
        let mut bias = vec![0i32; m * blocks];
        let quantize_row = |((xr, qr), (dr, (sr, br))): RowToQuantize<'_>| {
            for (b, (xb, qb)) in xr.chunks_exact(32).zip(qr.chunks_exact_mut(32)).enumerate() {
                let (scale, sum) = quantize_block(xb, qb);
                dr[b] = scale;
                br[b] = 128 * sum;
                let sum = sum as f32;
                sr[b] = scale * sum;
            }
        };

        // Quantizing is ~1 % of a product's work, but running it on one thread lets the
        // other fall asleep before the product (see `model::ROWS_PER_TASK`): threads from 16
        // tokens on.
        if m >= 16 {
            x.par_chunks_exact(cols)
                .zip(q.par_chunks_exact_mut(cols))
                .zip(
                    d.par_chunks_exact_mut(blocks).zip(
                        s.par_chunks_exact_mut(blocks)
                            .zip(bias.par_chunks_exact_mut(blocks)),
                    ),
                )
                .for_each(quantize_row);
        } else {
            x.chunks_exact(cols)
                .zip(q.chunks_exact_mut(cols))
                .zip(
                    d.chunks_exact_mut(blocks).zip(
                        s.chunks_exact_mut(blocks)
                            .zip(bias.chunks_exact_mut(blocks)),
                    ),
                )
                .for_each(quantize_row);
        }
        Self {
            tokens: m,
            blocks,
            q,
            d_tiled: tile_major(&d, m, blocks),
            s_tiled: tile_major(&s, m, blocks),
            bias_tiled: tile_major(&bias, m, blocks),
        }
    }
}

/// Pointers into one token tile of the activations, for the SIMD kernels.
#[derive(Clone, Copy)]
struct Tile {
    /// Quants of the tile's first token; token `t` starts `t * nb * 32` further.
    q: *const i8,
    /// `d_x` of the tile, `nb × TILE`, token-minor.
    d: *const f32,
    /// `d_x · Σq_x` of the tile, laid out as `d`.
    s: *const f32,
    /// `128 · Σq_x` of the tile, laid out as `d`.
    bias: *const i32,
}

impl Tile {
    /// Pointers into tile `tile` of `x`.
    ///
    /// # Panics
    /// If `x` has no such tile.
    fn new(x: &QuantActivations, tile: usize) -> Self {
        let (t0, nb) = (tile * TILE, x.blocks);
        assert!(t0 < x.tokens, "token tile");
        Self {
            q: x.q[t0 * nb * 32..].as_ptr(),
            d: x.d_tiled[tile * nb * TILE..].as_ptr(),
            s: x.s_tiled[tile * nb * TILE..].as_ptr(),
            bias: x.bias_tiled[tile * nb * TILE..].as_ptr(),
        }
    }
}

/// One activation row and where its quants, scales `d`, sums `d·Σq` and biases `128·Σq` go.
type RowToQuantize<'a> = (
    (&'a [f32], &'a mut [i8]),
    (&'a mut [f32], (&'a mut [f32], &'a mut [i32])),
);

/// `tokens × blocks` values regrouped per tile of [`TILE`] tokens as `blocks × TILE`, with
/// zeros for the missing tokens of a partial last tile.
fn tile_major<T: Copy + Default>(v: &[T], tokens: usize, blocks: usize) -> Vec<T> {
    let mut out = vec![T::default(); tokens.div_ceil(TILE) * blocks * TILE];
    for (t, row) in v.chunks_exact(blocks).enumerate() {
        let (tile, lane) = (t / TILE, t % TILE);
        for (b, &x) in row.iter().enumerate() {
            out[(tile * blocks + b) * TILE + lane] = x;
        }
    }
    out
}

/// Quantizes 32 values to `q = round(x / d)` with `d = max|x| / 127`; returns `(d, Σq)`.
/// Rounds half to even in both implementations, so SIMD and scalar agree bit for bit.
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    if avx2::available() {
        avx2::quantize_block(x, q)
    } else {
        scalar::quantize_block(x, q)
    }
}

/// Whether attention reads a cache of `dtype` in place on `path` (bf16 or int8 dot products)
/// rather than converting it to f32: the pool lays its keys out accordingly.
pub(crate) fn reads_cache_in_place(
    dtype: crate::KvCacheDtype,
    path: KernelPath,
    head_dim: usize,
) -> bool {
    match dtype {
        crate::KvCacheDtype::Bf16 => bf16_cache::in_place(path, head_dim),
        crate::KvCacheDtype::Int8 => int8_cache::in_place(path, head_dim),
        crate::KvCacheDtype::F32 | crate::KvCacheDtype::F16 => false,
    }
}

/// The output matrix `[tokens, rows]`, shared by the threads that each write their own band of
/// rows (columns of this row-major matrix, so the bands are not contiguous slices).
pub(crate) struct OutRows<'a> {
    ptr: *mut f32,
    len: usize,
    rows: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: `OutRows` is only written through `write`, whose callers write disjoint elements
// (each thread its own band of rows); the borrow it was made from outlives every use.
unsafe impl Sync for OutRows<'_> {}

impl<'a> OutRows<'a> {
    fn new(out: &'a mut [f32], rows: usize) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            rows,
            _out: std::marker::PhantomData,
        }
    }

    /// Stores `v` at `[token, row]`.
    ///
    /// # Safety
    /// No other thread may read or write the same element concurrently: callers write only
    /// rows of their own band.
    #[inline]
    unsafe fn write(&self, token: usize, row: usize, v: f32) {
        let i = token * self.rows + row;
        assert!(i < self.len && row < self.rows);
        // SAFETY: in bounds (checked above); exclusive per the caller contract.
        unsafe { *self.ptr.add(i) = v };
    }

    /// Stores `values` at `[token, row..row + values.len()]` (adjacent in memory).
    ///
    /// # Safety
    /// As for [`Self::write`], for each of those rows.
    #[inline]
    unsafe fn write_run(&self, token: usize, row: usize, values: &[f32]) {
        let i = token * self.rows + row;
        assert!(i + values.len() <= self.len && row + values.len() <= self.rows);
        // SAFETY: in bounds (checked above); exclusive per the caller contract; `values` is
        // a different allocation than the output. Whole row groups are copied as fixed-size
        // arrays (vector moves; a length known only at run time is a `memmove` call).
        unsafe {
            let to = self.ptr.add(i);
            match values.len() {
                16 => to
                    .cast::<[f32; 16]>()
                    .write_unaligned(values.as_ptr().cast::<[f32; 16]>().read_unaligned()),
                8 => to
                    .cast::<[f32; 8]>()
                    .write_unaligned(values.as_ptr().cast::<[f32; 8]>().read_unaligned()),
                n => std::ptr::copy_nonoverlapping(values.as_ptr(), to, n),
            }
        }
    }
}

#[cfg(test)]
mod tests;
