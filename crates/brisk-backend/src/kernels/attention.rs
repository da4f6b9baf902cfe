//! The attention kernels' entry points: scores of query rows against a block's keys, the
//! softmax exponentials and the weighted sums over values, each dispatched on the kernel path
//! like the matrix products (the SIMD bodies live in each instruction set's module). Caches
//! read in place have their own entry points in `bf16_cache` and `int8_cache`.

use super::{avx2, avx512, scalar, KernelPath};

/// Keys scored per vector in [`score_keys`].
pub(crate) const KEY_LANES: usize = 8;

/// Most query rows [`score_keys`] takes at once.
pub(crate) const MAX_SCORE_ROWS: usize = 6;

/// Attention scores `q_r · k_j` of up to [`MAX_SCORE_ROWS`] query rows (each `d` long)
/// against keys `slot..slot + groups * 8` of one block's transposed key tile `kt`
/// (`[dim][slot]`, `bs` slots per dimension): `out[r][j]`.
///
/// Each score is a fused multiply-add chain over dimensions in ascending order, the same in
/// every implementation and for any number of rows or groups, so a query's scores do not
/// depend on what it is batched with.
pub(crate) fn score_keys(
    path: KernelPath,
    rows: &[&[f32]],
    kt: &[f32],
    bs: usize,
    slot: usize,
    groups: usize,
    out: &mut [[f32; 2 * KEY_LANES]; MAX_SCORE_ROWS],
) {
    let d = rows.first().map_or(0, |r| r.len());
    assert!((1..=MAX_SCORE_ROWS).contains(&rows.len()) && (1..=2).contains(&groups));
    assert!(rows.iter().all(|r| r.len() == d));
    assert!(d > 0 && slot + groups * KEY_LANES <= bs && kt.len() >= (d - 1) * bs + bs);
    if groups == 2 && path >= KernelPath::Avx512Vnni {
        avx512::score_keys(rows, kt, bs, slot, out);
    } else if path >= KernelPath::Avx2 {
        avx2::score_keys(rows, kt, bs, slot, groups, out);
    } else {
        scalar::score_keys(rows, kt, bs, slot, groups, out);
    }
}

/// `row[i] = exp(row[i] - max)` with [`crate::math::exp`]'s operations, for softmax: the
/// AVX-512 path runs the same operations sixteen lanes at a time (bit for bit the same).
pub(crate) fn exp_shifted_in_place(path: KernelPath, row: &mut [f32], max: f32) {
    if path >= KernelPath::Avx512Vnni {
        avx512::exp_shifted_in_place(row, max);
    } else {
        for s in row.iter_mut() {
            *s = crate::math::exp(*s - max);
        }
    }
}

/// Attention's weighted sums `out[r] = Σ_j p_r[j] · v_j` for up to [`MAX_SCORE_ROWS`] query
/// rows at once, each with its own probabilities `p_r` (rows of one tile attend to different
/// numbers of keys), over the values of `value_tiles` (block `i`'s `[slot][dim]`, `bs` slots
/// of `d = out.len() / rows` values). Each output is one fused multiply-add chain over `j`
/// ascending, the same on every path; the wide path reads each value row once for all the
/// rows instead of once per row.
pub(crate) fn weighted_values(
    path: KernelPath,
    p: &[&[f32]],
    value_tiles: &[&[f32]],
    bs: usize,
    out: &mut [f32],
) {
    check_weighted_values(p, value_tiles, bs, out);
    let d = out.len() / p.len();
    if path >= KernelPath::Avx512Vnni && d.is_multiple_of(avx512::VALUE_CHUNK) {
        let values = avx512::Tiles {
            tiles: value_tiles,
            bs,
            d,
        };
        avx512::weighted_values(p, &values, d, out);
    } else {
        for (row, out) in p.iter().zip(out.chunks_exact_mut(d)) {
            scalar::weighted_values(row, value_tiles, bs, out);
        }
    }
}

/// The sizes every weighted-sum kernel relies on: 1 to [`MAX_SCORE_ROWS`] rows, no
/// probability past the values, whole value tiles of `bs` slots of `d` values (`d` from
/// `out`).
pub(super) fn check_weighted_values<V>(p: &[&[f32]], value_tiles: &[&[V]], bs: usize, out: &[f32]) {
    assert!((1..=MAX_SCORE_ROWS).contains(&p.len()) && out.len().is_multiple_of(p.len()));
    let d = out.len() / p.len();
    let keys = p.iter().map(|r| r.len()).max().unwrap_or(0);
    assert!(
        keys <= value_tiles.len() * bs,
        "probabilities past the values"
    );
    assert!(
        value_tiles.iter().all(|t| t.len() >= bs * d),
        "value tile size"
    );
}
