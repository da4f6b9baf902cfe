//! Attention over an int8 KV cache with integer dot products (AVX-512 VNNI: Ice Lake,
//! Sapphire Rapids, Zen 4).
//!
//! Without these kernels an int8 cache is converted to f32 block by block before every
//! attention item. Here keys are stored in fours of dimensions (`[dim / 4][slot][4]`, see
//! `kv_pool`): 64 bytes hold four dimensions of sixteen keys, the operand `vpdpbusd` takes.
//! Each query row is quantized to int8 the way cached vectors are (one scale per row,
//! `max|q| / 127`), as llama.cpp quantizes activations against its quantized caches, so a
//! score is an exact integer sum scaled once: `Σ q·k as f32 · (s_q · s_k)`. `vpdpbusd`
//! multiplies unsigned by signed bytes: the keys enter biased by 128 (their sign bit flipped
//! as they are loaded) and each row's sum drops `128 · Σq` again. [`dot`] is the same
//! arithmetic in scalar code, the reference the kernel is tested against bit for bit and the
//! path for keys past the last whole group of sixteen.
//!
//! Values stay `[slot][dim]` and are widened in registers (`q · scale`, the conversion's own
//! operations), so the weighted sums are those over a converted f32 copy, without the copy.

use super::{avx512, KernelPath, MAX_SCORE_ROWS};
use crate::kv_pool::{int8_quad_index, quantize_int8, Int8Tile};

/// Keys scored per call of [`score_keys`].
pub(crate) const KEYS: usize = 16;

/// Whether attention over an int8 cache reads it in place on `path`: the AVX-512 paths,
/// heads a multiple of 64 dimensions (the value kernel's chunk).
pub(crate) fn in_place(path: KernelPath, head_dim: usize) -> bool {
    path >= KernelPath::Avx512Vnni && head_dim.is_multiple_of(avx512::VALUE_CHUNK)
}

/// Query rows quantized to int8, one scale and one sum of quants per row (reused across
/// work items).
#[derive(Default)]
pub(crate) struct QuantizedRows {
    quants: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    d: usize,
}

impl QuantizedRows {
    /// Quantizes `rows` (each `d` long), replacing what was held.
    pub(crate) fn quantize(&mut self, rows: &[&[f32]]) {
        self.d = rows.first().map_or(0, |r| r.len());
        self.quants.clear();
        self.quants.resize(rows.len() * self.d, 0);
        self.scales.clear();
        self.sums.clear();
        for (row, q) in rows.iter().zip(self.quants.chunks_exact_mut(self.d.max(1))) {
            self.scales.push(quantize_int8(row, |i, x| q[i] = x));
            self.sums.push(q.iter().map(|&x| i32::from(x)).sum());
        }
    }

    /// Number of rows.
    pub(crate) fn len(&self) -> usize {
        self.scales.len()
    }

    fn row(&self, r: usize) -> &[i8] {
        &self.quants[r * self.d..(r + 1) * self.d]
    }
}

/// The score of query row `r` against the key in `slot` of a key tile in fours (`bs`
/// slots): the exact integer dot product, then `Σ as f32 · (s_q · s_k)`.
pub(crate) fn dot(
    rows: &QuantizedRows,
    r: usize,
    keys: Int8Tile<'_>,
    bs: usize,
    slot: usize,
) -> f32 {
    let kt = keys.quants;
    let sum: i32 = rows
        .row(r)
        .iter()
        .enumerate()
        .map(|(dim, &q)| i32::from(q) * i32::from(kt[int8_quad_index(bs, slot, dim)]))
        .sum();
    // |sum| ≤ d · 127² stays below 2²⁴ for heads up to 1,040 dimensions: exact.
    let sum = sum as f32;
    sum * (rows.scales[r] * keys.scales[slot])
}

/// Scores of query rows `which` (at most [`MAX_SCORE_ROWS`]) against keys `slot..slot + 16`
/// of one block's key tile in fours (`bs` slots): `out[r - which.start][j]`, each exactly
/// [`dot`]. Needs [`in_place`].
pub(crate) fn score_keys(
    rows: &QuantizedRows,
    which: std::ops::Range<usize>,
    keys: Int8Tile<'_>,
    bs: usize,
    slot: usize,
    out: &mut [[f32; KEYS]; MAX_SCORE_ROWS],
) {
    let (d, first, n) = (rows.d, which.start, which.len());
    let (kt, key_scales) = (keys.quants, keys.scales);
    assert!((1..=MAX_SCORE_ROWS).contains(&n) && which.end <= rows.len());
    assert!(d > 0 && d.is_multiple_of(4) && slot + KEYS <= bs);
    assert!(kt.len() >= d * bs && key_scales.len() >= bs);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(avx512::available());
        let q: [*const i8; MAX_SCORE_ROWS] = std::array::from_fn(|r| {
            if r < n {
                rows.row(first + r).as_ptr()
            } else {
                std::ptr::null()
            }
        });
        let row = |r: usize| first + r.min(n - 1);
        let scales: [f32; MAX_SCORE_ROWS] = std::array::from_fn(|r| rows.scales[row(r)]);
        let sums: [i32; MAX_SCORE_ROWS] = std::array::from_fn(|r| rows.sums[row(r)]);
        let k = kt.as_ptr().wrapping_add(4 * slot);
        let s = key_scales[slot..slot + KEYS].as_ptr();
        // SAFETY: AVX-512 F/BW/VNNI present; each of the `n` row pointers has `d` quants;
        // group `g < d / 4` of keys `slot..slot + 16` is 64 bytes from `k + 4·g·bs`, inside
        // the tile, and 16 scales exist from `s` (all checked above).
        unsafe {
            by_rows!(n, x86::score_keys, &q, &scales, &sums, d / 4, k, bs, s, out);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, first, n, kt, key_scales, bs, slot, out);
        unreachable!("int8 cache kernels are only selected on x86_64")
    }
}

/// Attention's weighted sums over int8 values read in place (tiles `[slot][dim]` with one
/// scale per slot): the operations of [`super::weighted_values`] on the AVX-512 path over
/// the converted values, bit for bit. Needs [`in_place`].
pub(crate) fn weighted_values(p: &[&[f32]], tiles: &[Int8Tile<'_>], bs: usize, out: &mut [f32]) {
    let quants: Vec<&[i8]> = tiles.iter().map(|t| t.quants).collect();
    super::check_weighted_values(p, &quants, bs, out);
    assert!(tiles.iter().all(|t| t.scales.len() >= bs));
    let d = out.len() / p.len();
    let values = avx512::Int8Tiles { tiles, bs, d };
    avx512::weighted_values(p, &values, d, out);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::MAX_SCORE_ROWS;
    use super::KEYS;

    /// `R` rows' scores against sixteen keys: per four dimensions one 64-byte load of the
    /// keys (sign bit flipped: biased by 128) and, per row, one `vpdpbusd` with the row's
    /// four quants broadcast; then each row's bias `128·Σq` off and the two scales on.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI; `q[r]` (`r < R`) points at `4·groups` quants; the 64 bytes at
    /// `k + 4·g·bs` exist for every `g < groups`; 16 scales exist from `key_scales`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn score_keys<const R: usize>(
        q: &[*const i8; MAX_SCORE_ROWS],
        scales: &[f32; MAX_SCORE_ROWS],
        sums: &[i32; MAX_SCORE_ROWS],
        groups: usize,
        k: *const i8,
        bs: usize,
        key_scales: *const f32,
        out: &mut [[f32; KEYS]; MAX_SCORE_ROWS],
    ) {
        let sign = _mm512_set1_epi8(i8::MIN);
        let mut acc = [_mm512_setzero_si512(); R];
        for g in 0..groups {
            // SAFETY: inside the rows and the key tile (contract); unaligned loads.
            unsafe {
                let keys = _mm512_xor_si512(_mm512_loadu_si512(k.add(4 * g * bs).cast()), sign);
                for r in 0..R {
                    let four = q[r].add(4 * g).cast::<i32>().read_unaligned();
                    acc[r] = _mm512_dpbusd_epi32(acc[r], keys, _mm512_set1_epi32(four));
                }
            }
        }
        // SAFETY: 16 scales from `key_scales` (contract); unaligned.
        let key_scales = unsafe { _mm512_loadu_ps(key_scales) };
        for r in 0..R {
            let exact = _mm512_sub_epi32(acc[r], _mm512_set1_epi32(128 * sums[r]));
            let scale = _mm512_mul_ps(_mm512_set1_ps(scales[r]), key_scales);
            let score = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), scale);
            // SAFETY: `out[r]` holds 16 floats; unaligned store.
            unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), score) };
        }
    }
}
