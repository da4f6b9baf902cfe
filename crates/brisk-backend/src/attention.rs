//! Causal grouped-query attention over the paged KV pool, reading K/V where they lie.
//!
//! Each token of the packed batch attends to positions `0..=pos` of its own sequence, found
//! through that sequence's block table. Work is split across threads by token; within a token
//! the query heads that share a K/V head are processed together.

use rayon::prelude::*;

use crate::kv_pool::CpuKvPool;

/// Where one token of the batch sits: its sequence's block table and its position.
pub(crate) struct TokenPlace<'a> {
    pub(crate) block_table: &'a [u32],
    pub(crate) pos: usize,
}

/// Writes `k` and `v` (`tokens × kv_heads × head_dim`) into the pool at each token's slot.
pub(crate) fn write_kv(
    pool: &mut CpuKvPool,
    layer: usize,
    places: &[TokenPlace<'_>],
    k: &[f32],
    v: &[f32],
) {
    let (heads, d, bs) = (pool.num_kv_heads, pool.head_dim, pool.block_size);
    let offsets: Vec<Vec<usize>> = places
        .iter()
        .map(|p| {
            let block = p.block_table[p.pos / bs] as usize;
            (0..heads)
                .map(|h| pool.offset(block, h, p.pos % bs))
                .collect()
        })
        .collect();
    let (kc, vc) = &mut pool.layers[layer];
    for (t, offs) in offsets.iter().enumerate() {
        for (h, &off) in offs.iter().enumerate() {
            let src = (t * heads + h) * d;
            kc[off..off + d].copy_from_slice(&k[src..src + d]);
            vc[off..off + d].copy_from_slice(&v[src..src + d]);
        }
    }
}

/// Computes attention for every token; `q` is `tokens × q_heads × head_dim`, the result has
/// the same shape. The query heads that share a K/V head are scored together, so each key and
/// value vector is read once per token rather than once per query head, and keys are walked
/// block by block (no division per position).
pub(crate) fn paged_attention(
    pool: &CpuKvPool,
    layer: usize,
    places: &[TokenPlace<'_>],
    q: &[f32],
    q_heads: usize,
) -> Vec<f32> {
    let (kv_heads, d, bs) = (pool.num_kv_heads, pool.head_dim, pool.block_size);
    let group = q_heads / kv_heads;
    #[allow(clippy::cast_precision_loss)]
    let scale = 1.0 / (d as f32).sqrt();
    let (kc, vc) = &pool.layers[layer];
    let mut out = vec![0.0f32; q.len()];
    out.par_chunks_mut(q_heads * d)
        .zip(q.par_chunks(q_heads * d))
        .zip(places.par_iter())
        .for_each_init(Vec::new, |scores, ((out, q), place)| {
            let n = place.pos + 1;
            let blocks = &place.block_table[..n.div_ceil(bs)];
            scores.clear();
            scores.resize(group * n, 0.0);
            for kv_head in 0..kv_heads {
                let heads = kv_head * group..(kv_head + 1) * group;
                // Scores: scores[g * n + j] = q_g · k_j / sqrt(d).
                let mut j = 0;
                for &block in blocks {
                    let base = pool.offset(block as usize, kv_head, 0);
                    for slot in 0..bs.min(n - j) {
                        let k = &kc[base + slot * d..base + (slot + 1) * d];
                        for (g, h) in heads.clone().enumerate() {
                            scores[g * n + j] = dot(&q[h * d..(h + 1) * d], k) * scale;
                        }
                        j += 1;
                    }
                }
                // Softmax per query head, normalised in place.
                for row in scores.chunks_exact_mut(n) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for s in row.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let inv = 1.0 / sum;
                    for s in row.iter_mut() {
                        *s *= inv;
                    }
                }
                // Weighted sum of values.
                let mut j = 0;
                for &block in blocks {
                    let base = pool.offset(block as usize, kv_head, 0);
                    for slot in 0..bs.min(n - j) {
                        let v = &vc[base + slot * d..base + (slot + 1) * d];
                        for (g, h) in heads.clone().enumerate() {
                            let w = scores[g * n + j];
                            for (o, x) in out[h * d..(h + 1) * d].iter_mut().zip(v) {
                                *o += w * x;
                            }
                        }
                        j += 1;
                    }
                }
            }
        });
    out
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorize without reassociating.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}
