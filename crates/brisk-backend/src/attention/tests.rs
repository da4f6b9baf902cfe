use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::kv_pool::KvCacheDtype;

/// Plain attention over contiguous K/V (`positions × kv_heads × d`), one query row at a time.
fn reference(
    keys: &[Vec<f32>],
    values: &[Vec<f32>],
    q: &[f32],
    pos: usize,
    q_heads: usize,
    kv_heads: usize,
    d: usize,
) -> Vec<f32> {
    let group = q_heads / kv_heads;
    let mut out = vec![0.0f32; q_heads * d];
    for h in 0..q_heads {
        let kvh = h / group;
        let qh = &q[h * d..(h + 1) * d];
        let scores: Vec<f64> = (0..=pos)
            .map(|j| {
                let k = &keys[j][kvh * d..(kvh + 1) * d];
                qh.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum::<f64>() / (d as f64).sqrt()
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        for (j, e) in exps.iter().enumerate() {
            let v = &values[j][kvh * d..(kvh + 1) * d];
            for (o, x) in out[h * d..(h + 1) * d].iter_mut().zip(v) {
                #[expect(clippy::cast_possible_truncation)] // the reference sums in f64
                let term = (e / sum * f64::from(*x)) as f32;
                *o += term;
            }
        }
    }
    out
}

/// Two sequences with scattered block tables, one prefilling a chunk that starts mid-block
/// and one decoding, for several head shapes and block sizes (including ones that are not a
/// multiple of the vector width).
#[test]
fn paged_attention_matches_plain_attention() {
    let mut rng = StdRng::seed_from_u64(11);
    let shapes = [
        (9, 3, 64, 16),
        (4, 4, 32, 5),
        (6, 2, 48, 8),
        (2, 1, 128, 24),
    ];
    let dtypes = [
        KvCacheDtype::F32,
        KvCacheDtype::F16,
        KvCacheDtype::Bf16,
        KvCacheDtype::Int8,
    ];
    for ((q_heads, kv_heads, d, bs), dtype) in shapes
        .into_iter()
        .flat_map(|shape| dtypes.map(|t| (shape, t)))
    {
        let num_blocks = 40;
        let mut pool = CpuKvPool::new(1, kv_heads, d, num_blocks, bs, dtype).unwrap();
        // Sequence A: positions 0..37 already cached, chunk 37..57 now (ends mid-block).
        // Sequence B: positions 0..20 cached, decoding position 20.
        let table_a: Vec<u32> = (0..(57u32).div_ceil(u32::try_from(bs).unwrap()))
            .map(|i| 39 - 2 * i)
            .collect();
        let table_b: Vec<u32> = (0..(21u32).div_ceil(u32::try_from(bs).unwrap()))
            .map(|i| 2 * i)
            .collect();
        // Values the cache's type holds exactly, so the f32 reference sees what it stores
        // (int8's per-vector scales round every value: it gets a tolerance instead).
        let exact = |x: f32| match dtype {
            KvCacheDtype::F32 | KvCacheDtype::Int8 => x,
            KvCacheDtype::F16 => half::f16::from_f32(x).to_f32(),
            KvCacheDtype::Bf16 => half::bf16::from_f32(x).to_f32(),
        };
        // Int8: each value within half a step (max|x| / 254 ≤ 0.004) of what was written.
        let tolerance = if dtype == KvCacheDtype::Int8 {
            2e-2
        } else {
            1e-5
        };
        let kv = |rng: &mut StdRng, n: usize| -> Vec<Vec<f32>> {
            (0..n)
                .map(|_| {
                    (0..kv_heads * d)
                        .map(|_| exact(rng.random::<f32>() * 2.0 - 1.0))
                        .collect()
                })
                .collect()
        };
        let (ka, va) = (kv(&mut rng, 57), kv(&mut rng, 57));
        let (kb, vb) = (kv(&mut rng, 21), kv(&mut rng, 21));
        // Cache the earlier positions, then run the step.
        let write = |pool: &mut CpuKvPool,
                     table: &[u32],
                     range: std::ops::Range<usize>,
                     k: &[Vec<f32>],
                     v: &[Vec<f32>]| {
            let places: Vec<TokenPlace<'_>> = range
                .clone()
                .map(|pos| TokenPlace {
                    block_table: table,
                    pos,
                })
                .collect();
            let flat =
                |x: &[Vec<f32>]| range.clone().flat_map(|p| x[p].clone()).collect::<Vec<_>>();
            write_kv(pool, 0, &places, &flat(k), &flat(v));
        };
        write(&mut pool, &table_a, 0..37, &ka, &va);
        write(&mut pool, &table_b, 0..20, &kb, &vb);
        write(&mut pool, &table_a, 37..57, &ka, &va);
        write(&mut pool, &table_b, 20..21, &kb, &vb);
        let mut places: Vec<TokenPlace<'_>> = (37..57)
            .map(|pos| TokenPlace {
                block_table: &table_a,
                pos,
            })
            .collect();
        places.push(TokenPlace {
            block_table: &table_b,
            pos: 20,
        });
        // Queries the cache's type holds exactly too: a bf16 cache read in place rounds them
        // to bf16 (what that rounding costs is measured by the `kv_accuracy` example).
        let q: Vec<f32> = (0..places.len() * q_heads * d)
            .map(|_| exact(rng.random::<f32>() * 4.0 - 2.0))
            .collect();
        let got = paged_attention(&pool, 0, &places, &q, q_heads);
        for (t, place) in places.iter().enumerate() {
            let (keys, values) = if t < 20 { (&ka, &va) } else { (&kb, &vb) };
            let row = &q[t * q_heads * d..(t + 1) * q_heads * d];
            let want = reference(keys, values, row, place.pos, q_heads, kv_heads, d);
            let have = &got[t * q_heads * d..(t + 1) * q_heads * d];
            let err = want
                .iter()
                .zip(have)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                err < tolerance,
                "{dtype:?} {q_heads}/{kv_heads} heads, d {d}, bs {bs}, token {t}: {err}"
            );
        }

        // The decoding token alone gives bit-identical results (batch invariance).
        let alone = paged_attention(&pool, 0, &places[20..], &q[20 * q_heads * d..], q_heads);
        assert_eq!(alone, got[20 * q_heads * d..]);
    }
}
