use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_blocks(format: KernelFormat, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut raw = Vec::new();
    for _ in 0..rows * cols / 32 {
        let d = f16::from_f32(rng.random::<f32>() * 0.1);
        raw.extend_from_slice(&d.to_le_bytes());
        if format == KernelFormat::Q4_1 {
            let m = f16::from_f32(rng.random::<f32>() * 0.2 - 0.1);
            raw.extend_from_slice(&m.to_le_bytes());
            raw.extend((0..16).map(|_| rng.random::<u8>()));
        } else {
            // Include -128, which the sign trick must handle.
            raw.extend((0..32).map(|i| if i == 5 { 0x80 } else { rng.random::<u8>() }));
        }
    }
    raw
}

/// Dequantized weight (f32) for the plain-f32 check.
fn dequantize(matrix: &QuantMatrix) -> Vec<f32> {
    let w = matrix.row_major();
    let (rows, cols, format) = (matrix.rows, matrix.cols, matrix.format);
    let nb = rows * cols / 32;
    let mut out = Vec::with_capacity(rows * cols);
    for b in 0..nb {
        match format {
            KernelFormat::Q4_1 => {
                let (d, m) = (w.d[b], w.m[b]);
                let qs = &w.quants[b * 16..b * 16 + 16];
                let lo = qs.iter().map(|q| f32::from(q & 0x0F) * d + m);
                let hi = qs.iter().map(|q| f32::from(q >> 4) * d + m);
                out.extend(lo.chain(hi));
            }
            KernelFormat::Q8_0 => {
                #[expect(clippy::cast_possible_wrap)]
                out.extend(
                    w.quants[b * 32..b * 32 + 32]
                        .iter()
                        .map(|&q| f32::from(q as i8) * w.d[b]),
                );
            }
        }
    }
    out
}

#[test]
fn simd_and_scalar_kernels_agree_and_track_f32_on_odd_shapes() {
    let mut rng = StdRng::seed_from_u64(3);
    for format in [KernelFormat::Q4_1, KernelFormat::Q8_0] {
        for (rows, cols, m) in [
            (1, 32, 1),
            (17, 64, 3),
            (33, 576, 5),
            (40, 1536, 16),
            (21, 288, 13),
            (9, 96, 70),
            (50, 128, 37),
        ] {
            let base = QuantMatrix::from_ggml(
                format,
                rows,
                cols,
                &random_blocks(format, rows, cols, &mut rng),
            )
            .unwrap();
            let x: Vec<f32> = (0..m * cols)
                .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                .collect();
            let acts = QuantActivations::quantize(&x, m, cols);
            let reference = dequantize(&base);
            for path in runnable_paths() {
                let w = base.for_path(path);
                let mut out = vec![0.0; m * rows];
                w.matmul(&x, m, &mut out);
                for t in 0..m {
                    for r in 0..rows {
                        // The scalar reference reads every layout; one layout's reference
                        // is every layout's.
                        let scalar = scalar::dot(&base, r, &acts, t);
                        assert_eq!(scalar.to_bits(), scalar::dot(&w, r, &acts, t).to_bits());
                        let got = out[t * rows + r];
                        // Same integers, same float operations in the same order.
                        assert_eq!(
                            got.to_bits(),
                            scalar.to_bits(),
                            "{path} {format:?} {rows}x{cols} t{t} r{r}: {got} vs {scalar}"
                        );
                    }
                }
            }
            let mut out = vec![0.0; m * rows];
            base.matmul(&x, m, &mut out);
            for t in 0..m {
                for r in 0..rows {
                    let got = out[t * rows + r];
                    let exact: f32 = (0..cols)
                        .map(|k| x[t * cols + k] * reference[r * cols + k])
                        .sum();
                    // 8-bit activations: error bounded by a few percent of the row's scale.
                    let bound = 0.02
                        * (0..cols)
                            .map(|k| (x[t * cols + k] * reference[r * cols + k]).abs())
                            .sum::<f32>()
                        + 1e-3;
                    assert!(
                        (got - exact).abs() <= bound,
                        "{format:?}: {got} vs exact {exact}"
                    );
                }
            }
        }
    }
}

/// The paths this CPU runs; prints the ones it cannot, so a run says what it did not test.
fn runnable_paths() -> Vec<KernelPath> {
    let (yes, no): (Vec<_>, Vec<_>) = KernelPath::ALL.into_iter().partition(|p| p.available());
    for path in no {
        eprintln!("skipped: this CPU cannot run the {path} kernels");
    }
    yes
}

#[test]
fn every_layout_holds_the_same_weights() {
    let mut rng = StdRng::seed_from_u64(8);
    for format in [KernelFormat::Q4_1, KernelFormat::Q8_0] {
        let (rows, cols) = (37, 96);
        let raw = random_blocks(format, rows, cols, &mut rng);
        let base = QuantMatrix::from_ggml(format, rows, cols, &raw).unwrap();
        for path in runnable_paths() {
            let w = base.for_path(path);
            assert_eq!(w.path(), path);
            for r in 0..rows {
                for b in 0..cols / 32 {
                    assert_eq!(w.block_quants(r, b), base.block_quants(r, b), "{path}");
                    assert_eq!(w.scale(r, b), base.scale(r, b));
                }
            }
            assert_eq!(dequantize(&w), dequantize(&base), "{path} {format:?}");
        }
    }
}

#[test]
fn kernel_choices_parse_and_refuse_what_this_cpu_lacks() {
    assert_eq!(KernelChoice::parse("candle"), Ok(KernelChoice::Candle));
    assert_eq!(
        KernelChoice::parse("auto"),
        Ok(KernelChoice::Native(KernelPath::detected()))
    );
    assert_eq!(
        KernelChoice::parse("scalar"),
        Ok(KernelChoice::Native(KernelPath::Scalar))
    );
    let err = KernelChoice::parse("avx9").unwrap_err();
    assert!(err.contains("avx512-vnni") && err.contains("amx"), "{err}");
    for path in KernelPath::ALL {
        let parsed = KernelChoice::parse(path.name());
        if path.available() {
            assert_eq!(parsed, Ok(KernelChoice::Native(path)));
        } else {
            assert!(parsed.unwrap_err().contains("cannot run"));
        }
    }
}

#[test]
fn shapes_that_do_not_fit_the_format_are_refused() {
    assert!(QuantMatrix::from_ggml(KernelFormat::Q8_0, 2, 48, &[0; 2 * 48 / 32 * 34]).is_none());
    assert!(QuantMatrix::from_ggml(KernelFormat::Q4_1, 2, 64, &[0; 10]).is_none());
}

#[test]
fn simd_and_scalar_quantization_agree_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(5);
    for case in 0..200 {
        let x: Vec<f32> = match case {
            0 => vec![0.0; 32],
            // Exact halves after scaling exercise the ties-to-even rounding.
            1 => (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect(),
            _ => (0..32)
                .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * 10f32.powi(case % 7 - 3))
                .collect(),
        };
        let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
        let sa = scalar::quantize_block(&x, &mut a);
        if avx2::available() {
            let sb = avx2::quantize_block(&x, &mut b);
            assert_eq!((sa, a), (sb, b), "case {case}");
        }
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(a.iter().map(|q| i32::from(*q)).sum::<i32>(), sa.1);
        for (v, q) in x.iter().zip(a) {
            assert!((v - sa.0 * f32::from(q)).abs() <= amax / 254.0 + 1e-6);
        }
    }
}

#[test]
fn simd_and_scalar_attention_scores_agree_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(9);
    for (d, bs) in [(64, 16), (32, 8), (48, 24), (128, 32)] {
        let kt: Vec<f32> = (0..d * bs)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        let q: Vec<Vec<f32>> = (0..MAX_SCORE_ROWS)
            .map(|_| (0..d).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect())
            .collect();
        for n in 1..=MAX_SCORE_ROWS {
            let rows: Vec<&[f32]> = q[..n].iter().map(Vec::as_slice).collect();
            for (slot, groups) in [(0, 1), (0, 2), (bs - 8, 1)] {
                if slot + groups * KEY_LANES > bs {
                    continue;
                }
                let mut a = [[0.0; 2 * KEY_LANES]; MAX_SCORE_ROWS];
                scalar::score_keys(&rows, &kt, bs, slot, groups, &mut a);
                for path in runnable_paths() {
                    let mut b = [[0.0; 2 * KEY_LANES]; MAX_SCORE_ROWS];
                    score_keys(path, &rows, &kt, bs, slot, groups, &mut b);
                    assert_eq!(
                        a, b,
                        "{path} d {d} bs {bs} rows {n} slot {slot} groups {groups}"
                    );
                    // Row 0's first score does not depend on how many rows came along.
                    let expect: f32 =
                        (0..d).fold(0.0f32, |acc, i| q[0][i].mul_add(kt[i * bs + slot], acc));
                    assert_eq!(b[0][0], expect);
                }
            }
        }
    }
}

#[test]
fn a_tokens_result_does_not_depend_on_its_batch() {
    let mut rng = StdRng::seed_from_u64(4);
    // Rows that fill whole row groups and rows that leave a partial one.
    let cases = [KernelFormat::Q4_1, KernelFormat::Q8_0]
        .into_iter()
        .flat_map(|f| [(f, 24, 320), (f, 21, 96), (f, 67, 64)]);
    for (format, rows, cols) in cases {
        // A whole AMX tile and some tokens past it.
        let m = 21;
        let w = QuantMatrix::from_ggml(
            format,
            rows,
            cols,
            &random_blocks(format, rows, cols, &mut rng),
        )
        .unwrap();
        let x: Vec<f32> = (0..m * cols).map(|_| rng.random::<f32>() - 0.5).collect();
        for path in runnable_paths() {
            let w = w.for_path(path);
            let mut batched = vec![0.0; m * rows];
            w.matmul(&x, m, &mut batched);
            for t in 0..m {
                let mut alone = vec![0.0; rows];
                w.matmul(&x[t * cols..(t + 1) * cols], 1, &mut alone);
                assert_eq!(
                    alone,
                    batched[t * rows..(t + 1) * rows],
                    "{path} {format:?} token {t}"
                );
            }
        }
    }
}

#[test]
fn weighted_values_agree_bit_for_bit_on_every_path() {
    let mut rng = StdRng::seed_from_u64(12);
    for (d, bs, blocks) in [(64, 16, 5), (128, 16, 3), (48, 8, 4), (64, 32, 2)] {
        let tiles: Vec<Vec<f32>> = (0..blocks)
            .map(|_| (0..bs * d).map(|_| rng.random::<f32>() - 0.5).collect())
            .collect();
        let tiles: Vec<&[f32]> = tiles.iter().map(Vec::as_slice).collect();
        for rows in 1..=MAX_SCORE_ROWS {
            // Rows of one query tile attend to different numbers of keys.
            let p: Vec<Vec<f32>> = (0..rows)
                .map(|r| {
                    let n = (blocks * bs - 3 * r).max(1);
                    (0..n).map(|_| rng.random::<f32>()).collect()
                })
                .collect();
            let p: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
            let mut want = vec![0.0; rows * d];
            for (row, out) in p.iter().zip(want.chunks_exact_mut(d)) {
                scalar::weighted_values(row, &tiles, bs, out);
            }
            for path in runnable_paths() {
                let mut got = vec![f32::NAN; rows * d];
                weighted_values(path, &p, &tiles, bs, &mut got);
                assert_eq!(got, want, "{path} d {d} bs {bs} rows {rows}");
            }
        }
    }
}

#[test]
fn softmax_exponentials_agree_bit_for_bit_on_every_path() {
    let mut rng = StdRng::seed_from_u64(13);
    // Across the clamp (-87, 88), exact halves of ln 2 and ordinary scores; odd length for
    // the tail.
    let mut row: Vec<f32> = (0..4001).map(|i| -100.0 + 0.05 * i as f32).collect();
    row.extend((0..997).map(|_| rng.random::<f32>() * 40.0 - 20.0));
    row.extend([
        0.0,
        -0.0,
        std::f32::consts::LN_2 * 0.5,
        -87.0,
        88.0,
        f32::MIN,
        f32::MAX,
    ]);
    let max = 3.25;
    let want: Vec<f32> = row.iter().map(|&x| crate::math::exp(x - max)).collect();
    for path in runnable_paths() {
        let mut got = row.clone();
        exp_shifted_in_place(path, &mut got, max);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{path} x {}: {g} vs {w}", row[i]);
        }
    }
}

/// Whether this CPU runs a cache type's in-place kernels (`run`); prints why a test is
/// skipped when not.
fn cache_kernels_run(run: bool, instructions: &str) -> bool {
    if !run {
        eprintln!("skipped: this CPU cannot run the {instructions} attention kernels");
    }
    run
}

fn bf16_kernels_run() -> bool {
    cache_kernels_run(
        bf16_cache::in_place(KernelPath::detected(), 64),
        "AVX-512 BF16",
    )
}

/// Weighted sums over values read in place (`in_place(p, out)`) are bit for bit those over
/// the same values converted to f32 (`converted`: tiles of `bs` slots), for 1 to
/// [`MAX_SCORE_ROWS`] rows that attend to different numbers of keys.
fn in_place_values_match_converted(
    rng: &mut StdRng,
    converted: &[&[f32]],
    bs: usize,
    in_place: impl Fn(&[&[f32]], &mut [f32]),
) {
    let d = converted[0].len() / bs;
    let keys = converted.len() * bs;
    for rows in 1..=MAX_SCORE_ROWS {
        let p: Vec<Vec<f32>> = (0..rows)
            .map(|r| (0..(keys - 5 * r).max(1)).map(|_| rng.random()).collect())
            .collect();
        let p: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
        let mut want = vec![0.0; rows * d];
        weighted_values(KernelPath::Avx512Vnni, &p, converted, bs, &mut want);
        let mut got = vec![f32::NAN; rows * d];
        in_place(&p, &mut got);
        assert_eq!(got, want, "d {d} bs {bs} rows {rows}");
    }
}

/// A bf16 of either sign over many binades, subnormals and zeros included, so that the
/// kernel's flushing of tiny inputs and results is compared too.
fn random_bf16(rng: &mut StdRng) -> half::bf16 {
    let x = match rng.random_range(0..10) {
        0 => f32::from_bits(rng.random_range(0..0x0080_0000)), // subnormal
        1 => 0.0,
        2 => rng.random::<f32>() * 1e-37, // products and sums near the subnormal range
        _ => (rng.random::<f32>() * 4.0 - 2.0) * 2f32.powi(rng.random_range(-8..8)),
    };
    half::bf16::from_f32(if rng.random::<bool>() { x } else { -x })
}

#[test]
fn bf16_scores_are_the_scalar_arithmetic_bit_for_bit() {
    if !bf16_kernels_run() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(21);
    for (d, bs) in [(64, 16), (64, 32), (128, 16), (2, 16)] {
        for _ in 0..20 {
            let kt: Vec<half::bf16> = (0..d * bs).map(|_| random_bf16(&mut rng)).collect();
            let q: Vec<Vec<half::bf16>> = (0..MAX_SCORE_ROWS)
                .map(|_| (0..d).map(|_| random_bf16(&mut rng)).collect())
                .collect();
            for n in 1..=MAX_SCORE_ROWS {
                let rows: Vec<&[half::bf16]> = q[..n].iter().map(Vec::as_slice).collect();
                for slot in (0..=bs - bf16_cache::KEYS).step_by(bf16_cache::KEYS) {
                    let mut got = [[f32::NAN; bf16_cache::KEYS]; MAX_SCORE_ROWS];
                    bf16_cache::score_keys(&rows, &kt, bs, slot, &mut got);
                    for (r, row) in rows.iter().enumerate() {
                        for (j, got) in got[r].iter().enumerate() {
                            let want = bf16_cache::dot_pairs(row, &kt, bs, slot + j);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "d {d} bs {bs} rows {n} row {r} key {}: {got} vs {want}",
                                slot + j,
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_values_read_in_place_sum_as_converted_ones_do() {
    if !bf16_kernels_run() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(22);
    for (d, bs, blocks) in [(64, 16, 5), (128, 16, 3), (64, 32, 2)] {
        let tiles: Vec<Vec<half::bf16>> = (0..blocks)
            .map(|_| (0..bs * d).map(|_| random_bf16(&mut rng)).collect())
            .collect();
        let converted: Vec<Vec<f32>> = tiles
            .iter()
            .map(|t| t.iter().map(|x| x.to_f32()).collect())
            .collect();
        let tiles: Vec<&[half::bf16]> = tiles.iter().map(Vec::as_slice).collect();
        let converted: Vec<&[f32]> = converted.iter().map(Vec::as_slice).collect();
        in_place_values_match_converted(&mut rng, &converted, bs, |p, out| {
            bf16_cache::weighted_values(p, &tiles, bs, out);
        });
    }
}

fn int8_kernels_run() -> bool {
    cache_kernels_run(
        int8_cache::in_place(KernelPath::detected(), 64),
        "AVX-512 VNNI",
    )
}

#[test]
fn int8_scores_are_the_scalar_arithmetic_bit_for_bit() {
    if !int8_kernels_run() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(23);
    for (d, bs) in [(64, 16), (64, 32), (128, 16), (4, 16)] {
        // Every byte value, -128 included (the bias must undo it), and scales over binades.
        let kt: Vec<i8> = (0..d * bs).map(|_| rng.random::<i8>()).collect();
        let key_scales: Vec<f32> = (0..bs)
            .map(|_| rng.random::<f32>() * 2f32.powi(rng.random_range(-12..4)))
            .collect();
        let q: Vec<Vec<f32>> = (0..MAX_SCORE_ROWS + 2)
            .map(|_| (0..d).map(|_| rng.random::<f32>() * 6.0 - 3.0).collect())
            .collect();
        let rows: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
        let mut q8 = int8_cache::QuantizedRows::default();
        q8.quantize(&rows);
        for first in [0, 2] {
            for n in 1..=MAX_SCORE_ROWS {
                for slot in (0..=bs - int8_cache::KEYS).step_by(int8_cache::KEYS) {
                    let mut got = [[f32::NAN; int8_cache::KEYS]; MAX_SCORE_ROWS];
                    let keys = crate::kv_pool::Int8Tile {
                        quants: &kt,
                        scales: &key_scales,
                    };
                    int8_cache::score_keys(&q8, first..first + n, keys, bs, slot, &mut got);
                    for (r, got) in got.iter().take(n).enumerate() {
                        for (j, got) in got.iter().enumerate() {
                            let want = int8_cache::dot(&q8, first + r, keys, bs, slot + j);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "d {d} bs {bs} rows {first}+{n} key {}: {got} vs {want}",
                                slot + j
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn int8_values_read_in_place_sum_as_converted_ones_do() {
    if !int8_kernels_run() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(24);
    for (d, bs, blocks) in [(64, 16, 5), (128, 16, 3), (64, 32, 2)] {
        let quants: Vec<Vec<i8>> = (0..blocks)
            .map(|_| (0..bs * d).map(|_| rng.random::<i8>()).collect())
            .collect();
        let scales: Vec<Vec<f32>> = (0..blocks)
            .map(|_| (0..bs).map(|_| rng.random::<f32>() * 0.05).collect())
            .collect();
        // What `KvBuffer::tiles` converts them to.
        let converted: Vec<Vec<f32>> = quants
            .iter()
            .zip(&scales)
            .map(|(q, s)| {
                q.iter()
                    .enumerate()
                    .map(|(i, &q)| f32::from(q) * s[i / d])
                    .collect()
            })
            .collect();
        let tiles: Vec<crate::kv_pool::Int8Tile<'_>> = quants
            .iter()
            .zip(&scales)
            .map(|(q, s)| crate::kv_pool::Int8Tile {
                quants: q,
                scales: s,
            })
            .collect();
        let converted: Vec<&[f32]> = converted.iter().map(Vec::as_slice).collect();
        in_place_values_match_converted(&mut rng, &converted, bs, |p, out| {
            int8_cache::weighted_values(p, &tiles, bs, out);
        });
    }
}
