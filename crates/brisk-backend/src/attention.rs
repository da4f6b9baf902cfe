//! Causal grouped-query attention over the paged KV pool, reading K/V where they lie.
//!
//! Each token of the packed batch attends to positions `0..=pos` of its own sequence, found
//! through that sequence's block table. Consecutive tokens of one sequence (a prompt chunk)
//! form tiles of up to [`QUERY_TILE`] tokens; a tile and one K/V head make one work item, whose
//! query rows are the tile's tokens × the query heads sharing that K/V head. Every key and
//! value block is read once per item, not once per query row.
//!
//! Scores are a small matrix product, `rows × head_dim` by `head_dim × keys`: the pool stores
//! keys transposed within a block (`[dim][slot]`, see `kv_pool`), so eight keys' scores
//! accumulate in one vector with one fused multiply-add per dimension and no horizontal sums.
//! Values stay `[slot][dim]`, so the weighted sum adds whole value rows, for several query
//! rows per value row read (`kernels::weighted_values`). Both kernels have AVX-512 versions
//! (sixteen keys per vector; four vectors of output per row) chosen with the matrix kernels'
//! path; the rest is written for the compiler to vectorize, without `unsafe`.
//!
//! Every query row is computed by the same sequence of operations whatever else is in its
//! tile or step, so results do not depend on batch composition or prompt chunking.

use half::bf16;
use rayon::prelude::*;

use crate::kernels::int8_cache::QuantizedRows;
use crate::kernels::{self, KEY_LANES, MAX_SCORE_ROWS};
use crate::kv_pool::{CpuKvPool, Int8Tile, KvCacheDtype};

/// Where one token of the batch sits: its sequence's block table and its position.
pub struct TokenPlace<'a> {
    pub block_table: &'a [u32],
    pub pos: usize,
}

/// Tokens of one sequence that share a work item.
const QUERY_TILE: usize = 8;

/// Query rows scored together against a group of keys.
const ROWS: usize = MAX_SCORE_ROWS;

/// Writes `k` and `v` (`tokens × kv_heads × head_dim`) into the pool at each token's slot.
pub fn write_kv(
    pool: &mut CpuKvPool,
    layer: usize,
    places: &[TokenPlace<'_>],
    k: &[f32],
    v: &[f32],
) {
    let (heads, d, bs) = (pool.num_kv_heads, pool.head_dim, pool.block_size);
    let layout = pool.layout();
    let (kc, vc) = &mut pool.layers[layer];
    for (t, p) in places.iter().enumerate() {
        let (block, slot) = (p.block_table[p.pos / bs] as usize, p.pos % bs);
        for h in 0..heads {
            let src = (t * heads + h) * d;
            kc.write_key(layout.key_offset(block, h), bs, slot, &k[src..src + d]);
            vc.write(layout.value_offset(block, h, slot), &v[src..src + d]);
        }
    }
}

/// A tile of consecutive tokens of one sequence: batch indices `first..first + len`.
#[derive(Clone, Copy)]
struct QueryTile {
    first: usize,
    len: usize,
}

/// Splits the batch into tiles of consecutive positions under one block table.
fn query_tiles(places: &[TokenPlace<'_>]) -> Vec<QueryTile> {
    let mut tiles: Vec<QueryTile> = Vec::new();
    for (i, p) in places.iter().enumerate() {
        if let Some(last) = tiles.last_mut() {
            let prev = &places[i - 1];
            if last.len < QUERY_TILE
                && std::ptr::eq(prev.block_table, p.block_table)
                && prev.pos + 1 == p.pos
            {
                last.len += 1;
                continue;
            }
        }
        tiles.push(QueryTile { first: i, len: 1 });
    }
    tiles
}

/// Computes attention for every token; `q` is `tokens × q_heads × head_dim`, the result has
/// the same shape.
pub fn paged_attention(
    pool: &CpuKvPool,
    layer: usize,
    places: &[TokenPlace<'_>],
    q: &[f32],
    q_heads: usize,
) -> Vec<f32> {
    let (kv_heads, d) = (pool.num_kv_heads, pool.head_dim);
    let group = q_heads / kv_heads;
    let tiles = query_tiles(places);
    let items: Vec<(QueryTile, usize)> = tiles
        .iter()
        .flat_map(|&t| (0..kv_heads).map(move |h| (t, h)))
        .collect();
    let results: Vec<Vec<f32>> = items
        .par_iter()
        .map_init(Scratch::default, |scratch, &(tile, kv_head)| {
            attend_tile(pool, layer, places, q, q_heads, tile, kv_head, scratch)
        })
        .collect();
    // Scatter each item's rows (token-major, then the group's heads) into place.
    let mut out = vec![0.0f32; q.len()];
    for (&(tile, kv_head), rows) in items.iter().zip(&results) {
        for (i, row) in rows.chunks_exact(group * d).enumerate() {
            let start = ((tile.first + i) * q_heads + kv_head * group) * d;
            out[start..start + group * d].copy_from_slice(row);
        }
    }
    out
}

/// Per-thread buffers reused across work items.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    /// K and V blocks converted to f32 (caches read in place need none).
    keys: Vec<f32>,
    values: Vec<f32>,
    /// The query rows rounded to bf16 (bf16 caches read in place).
    query16: Vec<bf16>,
    /// The query rows quantized to int8 (int8 caches read in place).
    query8: QuantizedRows,
}

/// One tile against one K/V head: returns `tile.len × group × head_dim` outputs.
#[allow(clippy::too_many_arguments)]
fn attend_tile(
    pool: &CpuKvPool,
    layer: usize,
    places: &[TokenPlace<'_>],
    q: &[f32],
    q_heads: usize,
    tile: QueryTile,
    kv_head: usize,
    scratch: &mut Scratch,
) -> Vec<f32> {
    let (kv_heads, d, bs) = (pool.num_kv_heads, pool.head_dim, pool.block_size);
    let group = q_heads / kv_heads;
    let (kc, vc) = &pool.layers[layer];
    let last = &places[tile.first + tile.len - 1];
    let keys = last.pos + 1;
    let blocks = &last.block_table[..keys.div_ceil(bs)];
    // Scores are computed for whole blocks; the padding past `keys` is never read.
    let stride = blocks.len() * bs;
    let scale = 1.0 / (d as f32).sqrt();

    // Query rows: token-major, then the group's heads.
    let rows: Vec<&[f32]> = (0..tile.len)
        .flat_map(|i| {
            let token = tile.first + i;
            (0..group).map(move |g| {
                let h = kv_head * group + g;
                &q[(token * q_heads + h) * d..(token * q_heads + h + 1) * d]
            })
        })
        .collect();
    let valid = |r: usize| places[tile.first + r / group].pos + 1;

    let key_offsets: Vec<usize> = blocks
        .iter()
        .map(|&b| pool.key_offset(b as usize, kv_head))
        .collect();
    let value_offsets: Vec<usize> = blocks
        .iter()
        .map(|&b| pool.value_offset(b as usize, kv_head, 0))
        .collect();
    let path = kernels::KernelPath::selected();
    // 16-bit and 8-bit caches are read where they lie when the CPU has the kernels for
    // them (the pool laid their keys out for it); otherwise converted to f32 tiles first.
    let read = CacheRead::of(pool);
    let scores = &mut scratch.scores;
    // Every score a row's softmax reads is written below first, so the buffer only grows
    // (clearing it cost a 48 KiB fill per item of a 512-token chunk, ~4 % of the step).
    if scores.len() < rows.len() * stride {
        scores.resize(rows.len() * stride, 0.0);
    }
    let key_tiles = match read {
        CacheRead::Bf16 => {
            let q16 = &mut scratch.query16;
            q16.clear();
            q16.extend(
                rows.iter()
                    .flat_map(|r| r.iter().map(|&x| bf16::from_f32(x))),
            );
            let rows16: Vec<&[bf16]> = q16.chunks_exact(d).collect();
            let tiles = kc.bf16_tiles(&key_offsets, d * bs).expect("a bf16 cache");
            Keys::Bf16(rows16, tiles)
        }
        CacheRead::Int8 => {
            scratch.query8.quantize(&rows);
            let tiles = kc.int8_tiles(&key_offsets, d * bs).expect("an int8 cache");
            Keys::Int8(&scratch.query8, tiles)
        }
        CacheRead::Converted => Keys::F32(kc.tiles(&key_offsets, d * bs, &mut scratch.keys)),
    };
    for bi in 0..blocks.len() {
        for r0 in (0..rows.len()).step_by(ROWS) {
            let r_end = (r0 + ROWS).min(rows.len());
            // Keys past every row's position are skipped (the causal triangle of a chunk).
            let needed = valid(r_end - 1).saturating_sub(bi * bs).min(bs);
            if needed == 0 {
                continue;
            }
            let emit = |r: usize, slot: usize, s: f32| {
                scores[(r0 + r) * stride + bi * bs + slot] = s;
            };
            match &key_tiles {
                Keys::F32(kt) => {
                    score_block(path, &rows[r0..r_end], kt[bi], bs, needed, scale, emit);
                }
                Keys::Bf16(rows16, kt) => {
                    score_block_bf16(&rows16[r0..r_end], kt[bi], bs, needed, scale, emit);
                }
                Keys::Int8(q8, kt) => {
                    score_block_int8(q8, r0..r_end, kt[bi], bs, needed, scale, emit);
                }
            }
        }
    }

    for r in 0..rows.len() {
        softmax_in_place(path, &mut scores[r * stride..r * stride + valid(r)]);
    }
    let value_tiles = match read {
        CacheRead::Bf16 => {
            Values::Bf16(vc.bf16_tiles(&value_offsets, bs * d).expect("a bf16 cache"))
        }
        CacheRead::Int8 => Values::Int8(
            vc.int8_tiles(&value_offsets, bs * d)
                .expect("an int8 cache"),
        ),
        CacheRead::Converted => Values::F32(vc.tiles(&value_offsets, bs * d, &mut scratch.values)),
    };
    let mut out = vec![0.0f32; rows.len() * d];
    for (i, out) in out.chunks_mut(ROWS * d).enumerate() {
        let probabilities: Vec<&[f32]> = (i * ROWS..i * ROWS + out.len() / d)
            .map(|r| &scores[r * stride..r * stride + valid(r)])
            .collect();
        match &value_tiles {
            Values::F32(v) => kernels::weighted_values(path, &probabilities, v, bs, out),
            Values::Bf16(v) => kernels::bf16_cache::weighted_values(&probabilities, v, bs, out),
            Values::Int8(v) => kernels::int8_cache::weighted_values(&probabilities, v, bs, out),
        }
    }
    out
}

/// How an item reads the cache: in place with the bf16 or int8 kernels where the CPU has
/// them for the cache's type, else converted to f32 tiles.
#[derive(Clone, Copy)]
enum CacheRead {
    Converted,
    Bf16,
    Int8,
}

impl CacheRead {
    fn of(pool: &CpuKvPool) -> Self {
        match pool.dtype {
            KvCacheDtype::Bf16 if pool.reads_in_place() => Self::Bf16,
            KvCacheDtype::Int8 if pool.reads_in_place() => Self::Int8,
            _ => Self::Converted,
        }
    }
}

/// One item's key tiles: f32 (converted when the cache is not), a bf16 cache's paired tiles
/// as they lie with the query rows rounded to bf16, or an int8 cache's tiles in fours with
/// their scales and the query rows quantized.
enum Keys<'a> {
    F32(Vec<&'a [f32]>),
    Bf16(Vec<&'a [bf16]>, Vec<&'a [bf16]>),
    Int8(&'a QuantizedRows, Vec<Int8Tile<'a>>),
}

/// One item's value tiles: f32 (converted when the cache is not), a bf16 cache's, or an int8
/// cache's with their scales.
enum Values<'a> {
    F32(Vec<&'a [f32]>),
    Bf16(Vec<&'a [bf16]>),
    Int8(Vec<Int8Tile<'a>>),
}

/// Scores of `rows` against the first `needed` keys of one block (`kt`: `[dim][slot]`,
/// `bs` slots), reported as `emit(row, slot, score)`.
fn score_block(
    path: kernels::KernelPath,
    rows: &[&[f32]],
    kt: &[f32],
    bs: usize,
    needed: usize,
    scale: f32,
    mut emit: impl FnMut(usize, usize, f32),
) {
    let mut scores = [[0.0f32; 2 * KEY_LANES]; MAX_SCORE_ROWS];
    let mut slot = 0;
    while slot + KEY_LANES <= bs && slot < needed {
        let groups = if slot + 2 * KEY_LANES <= bs && slot + KEY_LANES < needed {
            2
        } else {
            1
        };
        kernels::score_keys(path, rows, kt, bs, slot, groups, &mut scores);
        for (r, row) in scores.iter().take(rows.len()).enumerate() {
            for (j, &s) in row.iter().take(groups * KEY_LANES).enumerate() {
                emit(r, slot + j, s * scale);
            }
        }
        slot += groups * KEY_LANES;
    }
    // Block sizes that are not a multiple of eight: the last slots one by one, with the same
    // ascending fused sum over dimensions as the kernel's vector lanes.
    for s in slot..needed {
        for (r, row) in rows.iter().enumerate() {
            let mut acc = 0.0f32;
            for (dim, &x) in row.iter().enumerate() {
                acc = x.mul_add(kt[dim * bs + s], acc);
            }
            emit(r, s, acc * scale);
        }
    }
}

/// Scores of bf16 `rows` against the first `needed` keys of one block of a bf16 cache (`kt`:
/// paired, `[dim / 2][slot][2]`), reported as `emit(row, slot, score)`: sixteen keys per
/// kernel call, the last few (block sizes not a multiple of sixteen) with the kernel's
/// arithmetic in scalar code.
fn score_block_bf16(
    rows: &[&[bf16]],
    kt: &[bf16],
    bs: usize,
    needed: usize,
    scale: f32,
    mut emit: impl FnMut(usize, usize, f32),
) {
    let mut scores = [[0.0f32; kernels::bf16_cache::KEYS]; MAX_SCORE_ROWS];
    let mut slot = 0;
    while slot + kernels::bf16_cache::KEYS <= bs && slot < needed {
        kernels::bf16_cache::score_keys(rows, kt, bs, slot, &mut scores);
        for (r, row) in scores.iter().take(rows.len()).enumerate() {
            for (j, &s) in row.iter().enumerate() {
                emit(r, slot + j, s * scale);
            }
        }
        slot += kernels::bf16_cache::KEYS;
    }
    for s in slot..needed {
        for (r, row) in rows.iter().enumerate() {
            emit(r, s, kernels::bf16_cache::dot_pairs(row, kt, bs, s) * scale);
        }
    }
}

/// Scores of quantized query rows `rows` against the first `needed` keys of one block of an
/// int8 cache (`keys`: its tile in fours), reported as
/// `emit(row, slot, score)` with rows counted from `rows.start`: sixteen keys per kernel
/// call, the last few with the kernel's arithmetic in scalar code.
fn score_block_int8(
    q8: &QuantizedRows,
    rows: std::ops::Range<usize>,
    keys: Int8Tile<'_>,
    bs: usize,
    needed: usize,
    scale: f32,
    mut emit: impl FnMut(usize, usize, f32),
) {
    const KEYS: usize = kernels::int8_cache::KEYS;
    let mut scores = [[0.0f32; KEYS]; MAX_SCORE_ROWS];
    let mut slot = 0;
    while slot + KEYS <= bs && slot < needed {
        let n = rows.len();
        kernels::int8_cache::score_keys(q8, rows.clone(), keys, bs, slot, &mut scores);
        for (r, row) in scores.iter().take(n).enumerate() {
            for (j, &s) in row.iter().enumerate() {
                emit(r, slot + j, s * scale);
            }
        }
        slot += KEYS;
    }
    for s in slot..needed {
        for r in rows.clone() {
            let dot = kernels::int8_cache::dot(q8, r, keys, bs, s);
            emit(r - rows.start, s, dot * scale);
        }
    }
}

/// Softmax of `row` in place.
fn softmax_in_place(path: kernels::KernelPath, row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    kernels::exp_shifted_in_place(path, row, max);
    // Eight partial sums: a vector's worth, so the loop vectorizes (a single running sum is
    // a serial chain the compiler may not reorder).
    let mut partial = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (p, x) in partial.iter_mut().zip(c) {
            *p += x;
        }
    }
    let inv = 1.0 / (partial.iter().sum::<f32>() + tail);
    for s in row.iter_mut() {
        *s *= inv;
    }
}

#[cfg(test)]
mod tests;
