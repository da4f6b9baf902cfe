//! Portable kernels; the reference the SIMD versions are tested against. They compute the
//! same integer block sums and the same float operations in the same order as the SIMD
//! kernels, so the two agree bit for bit.

use std::ops::Range;

use super::{
    KernelFormat, OutRows, QuantActivations, QuantMatrix, KEY_LANES, MAX_SCORE_ROWS, TILE,
};

/// Weight rows `rows` (either format) against every token of `x`.
pub(super) fn band(w: &QuantMatrix, rows: Range<usize>, x: &QuantActivations, out: &OutRows<'_>) {
    for t in 0..x.tokens {
        for r in rows.clone() {
            // SAFETY: this call owns rows `rows` of the output.
            unsafe { out.write(t, r, dot(w, r, x, t)) };
        }
    }
}

/// `(d, d·Σq)` of activation block `b` of token `t`.
fn act_scales(x: &QuantActivations, t: usize, b: usize) -> (f32, f32) {
    let i = ((t / TILE) * x.blocks + b) * TILE + t % TILE;
    (x.d_tiled[i], x.s_tiled[i])
}

/// Row `row` against token `t`: per block the exact integer dot product of the quants, then
/// `acc += (d_w·d_x)·Σ` (and, Q4_1, `acc += m·(d_x·Σq_x)`), one running fused sum block after
/// block, as the SIMD kernels compute each (row, token) lane.
pub(super) fn dot(w: &QuantMatrix, row: usize, x: &QuantActivations, t: usize) -> f32 {
    let nb = w.blocks();
    (0..nb).fold(0.0, |acc, b| {
        let qs = w.block_quants(row, b);
        let xq = &x.q[(t * nb + b) * 32..][..32];
        #[expect(clippy::cast_possible_wrap)]
        let isum: i32 = qs
            .iter()
            .zip(xq)
            .map(|(&q, &v)| match w.format {
                KernelFormat::Q4_1 => i32::from(q),
                KernelFormat::Q8_0 => i32::from(q as i8),
            } * i32::from(v))
            .sum();
        let (dx, sx) = act_scales(x, t, b);
        let acc = (w.scale(row, b) * dx).mul_add(isum as f32, acc);
        match w.format {
            KernelFormat::Q4_1 => w.minimum(row, b).mul_add(sx, acc),
            KernelFormat::Q8_0 => acc,
        }
    })
}

/// See [`super::quantize_block`].
pub(super) fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (v, q) in x.iter().zip(q.iter_mut()) {
        // |v * inv| <= 127, so the cast cannot truncate.
        #[expect(clippy::cast_possible_truncation)]
        let v = (v * inv).round_ties_even() as i8;
        *q = v;
        sum += i32::from(v);
    }
    (d, sum)
}

/// See [`super::score_keys`].
pub(super) fn score_keys(
    rows: &[&[f32]],
    kt: &[f32],
    bs: usize,
    slot: usize,
    groups: usize,
    out: &mut [[f32; 2 * KEY_LANES]; MAX_SCORE_ROWS],
) {
    for (row, o) in rows.iter().zip(out.iter_mut()) {
        for (j, o) in o.iter_mut().take(groups * KEY_LANES).enumerate() {
            let mut acc = 0.0f32;
            for (dim, &x) in row.iter().enumerate() {
                acc = x.mul_add(kt[dim * bs + slot + j], acc);
            }
            *o = acc;
        }
    }
}

/// `out = Σ_j p_j · v_j` over the first `p.len()` positions, `value_tiles[i]` holding
/// block `i`'s values as `[slot][dim]`: per output one fused chain over `j` ascending.
/// Written for the compiler to vectorize (fixed-size chunks that stay in registers).
pub(super) fn weighted_values(p: &[f32], value_tiles: &[&[f32]], bs: usize, out: &mut [f32]) {
    const CHUNK: usize = 64;
    let d = out.len();
    out.fill(0.0);
    for (bi, values) in value_tiles.iter().enumerate() {
        let start = bi * bs;
        if start >= p.len() {
            break;
        }
        let weights = &p[start..p.len().min(start + bs)];
        if d.is_multiple_of(CHUNK) {
            // Whole 64-wide chunks of the output stay in registers across the block's keys.
            for (c, chunk) in out.chunks_exact_mut(CHUNK).enumerate() {
                let mut acc: [f32; CHUNK] = chunk.try_into().expect("64 values");
                for (j, &w) in weights.iter().enumerate() {
                    let v = &values[j * d + c * CHUNK..][..CHUNK];
                    for (a, &x) in acc.iter_mut().zip(v) {
                        *a = w.mul_add(x, *a);
                    }
                }
                chunk.copy_from_slice(&acc);
            }
        } else {
            for (j, &w) in weights.iter().enumerate() {
                for (a, &x) in out.iter_mut().zip(&values[j * d..(j + 1) * d]) {
                    *a = w.mul_add(x, *a);
                }
            }
        }
    }
}
