//! Portable dot products; the reference the SIMD versions are tested against.

use super::{QuantActivations, QuantMatrix};

/// Tokens `t0..t0 + out.len()` against one weight row.
pub(super) fn tile_q4_1(
    w: &QuantMatrix,
    row: usize,
    x: &QuantActivations,
    t0: usize,
    out: &mut [f32],
) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot_q4_1(w, row, x, t0 + i);
    }
}

/// Tokens `t0..t0 + out.len()` against one weight row.
pub(super) fn tile_q8_0(
    w: &QuantMatrix,
    row: usize,
    x: &QuantActivations,
    t0: usize,
    out: &mut [f32],
) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot_q8_0(w, row, x, t0 + i);
    }
}

pub(super) fn dot_q4_1(w: &QuantMatrix, row: usize, x: &QuantActivations, t: usize) -> f32 {
    let nb = w.blocks_per_row();
    let mut sum = 0.0;
    for b in 0..nb {
        let wb = row * nb + b;
        let xb = t * x.blocks_per_row + b;
        let qs = &w.quants[wb * 16..wb * 16 + 16];
        let xq = &x.q[xb * 32..xb * 32 + 32];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += i32::from(qs[j] & 0x0F) * i32::from(xq[j]);
            isum += i32::from(qs[j] >> 4) * i32::from(xq[j + 16]);
        }
        #[allow(clippy::cast_precision_loss)]
        let isum = isum as f32;
        sum += w.scales[2 * wb] * x.d[xb] * isum + w.scales[2 * wb + 1] * x.s[xb];
    }
    sum
}

pub(super) fn dot_q8_0(w: &QuantMatrix, row: usize, x: &QuantActivations, t: usize) -> f32 {
    let nb = w.blocks_per_row();
    let mut sum = 0.0;
    for b in 0..nb {
        let wb = row * nb + b;
        let xb = t * x.blocks_per_row + b;
        let qs = &w.quants[wb * 32..wb * 32 + 32];
        let xq = &x.q[xb * 32..xb * 32 + 32];
        #[allow(clippy::cast_possible_wrap)]
        let isum: i32 = qs
            .iter()
            .zip(xq)
            .map(|(&a, &b)| i32::from(a as i8) * i32::from(b))
            .sum();
        #[allow(clippy::cast_precision_loss)]
        let isum = isum as f32;
        sum += w.scales[wb] * x.d[xb] * isum;
    }
    sum
}
