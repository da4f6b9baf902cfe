//! Micro-benchmarks of the CPU kernels at SmolLM2-135M's shapes: the quantized matrix
//! products (per token count, to show what batching buys) and paged attention (a 512-token
//! prefill and batched decode).
//!
//! `cargo bench -p brisk-backend --bench kernels` (criterion; add `-- --quick` for a short run).
//! Each product runs on every kernel path this CPU has (`BRISK_BENCH_PATHS=avx2,amx` picks).
//! Throughput is reported in elements = multiply-accumulates, so criterion's "elem/s" reads
//! as MAC/s.

use brisk_backend::internals::{paged_attention, write_kv, KernelFormat, QuantMatrix, TokenPlace};
use brisk_backend::{CpuKvPool, KernelPath, KvCacheDtype};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random ggml blocks of `format` for a `[rows, cols]` matrix.
fn random_matrix(format: KernelFormat, rows: usize, cols: usize, rng: &mut StdRng) -> QuantMatrix {
    let mut raw = Vec::new();
    for _ in 0..rows * cols / 32 {
        raw.extend_from_slice(&f16::from_f32(rng.random::<f32>() * 0.01).to_le_bytes());
        match format {
            KernelFormat::Q4_1 => {
                raw.extend_from_slice(&f16::from_f32(-0.05).to_le_bytes());
                raw.extend((0..16).map(|_| rng.random::<u8>()));
            }
            KernelFormat::Q8_0 => raw.extend((0..32).map(|_| rng.random::<u8>())),
        }
    }
    QuantMatrix::from_ggml(format, rows, cols, &raw).expect("valid shape")
}

fn matmul(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    // (name, format, rows, cols): SmolLM2-135M's fused QKV, gate+up, down and LM head.
    let shapes = [
        ("q4_1 qkv 960x576", KernelFormat::Q4_1, 960, 576),
        ("q4_1 gate_up 3072x576", KernelFormat::Q4_1, 3072, 576),
        ("q4_1 down 576x1536", KernelFormat::Q4_1, 576, 1536),
        ("q8_0 lm_head 49152x576", KernelFormat::Q8_0, 49152, 576),
    ];
    let paths = bench_paths();
    for (name, format, rows, cols) in shapes {
        let base = random_matrix(format, rows, cols, &mut rng);
        let mut group = c.benchmark_group(format!("matmul {name}"));
        group.sample_size(10);
        let counts: &[usize] = if rows > 10_000 {
            &[1, 16]
        } else {
            &[1, 4, 16, 64, 512]
        };
        for &path in &paths {
            let w = base.for_path(path);
            for &m in counts {
                let x: Vec<f32> = (0..m * cols).map(|_| rng.random::<f32>() - 0.5).collect();
                let mut out = vec![0.0; m * rows];
                group.throughput(Throughput::Elements((m * rows * cols) as u64));
                group.bench_with_input(BenchmarkId::new(path.name(), m), &m, |b, &m| {
                    b.iter(|| w.matmul(&x, m, &mut out));
                });
            }
        }
        group.finish();
    }
}

/// The kernel paths to compare: `BRISK_BENCH_PATHS` (comma-separated names), else every
/// path this CPU runs but the scalar one. Paths the CPU lacks are named and skipped.
fn bench_paths() -> Vec<KernelPath> {
    let wanted: Vec<KernelPath> = match std::env::var("BRISK_BENCH_PATHS") {
        Ok(list) => list
            .split(',')
            .map(|name| {
                KernelPath::ALL
                    .into_iter()
                    .find(|p| p.name() == name.trim())
                    .unwrap_or_else(|| panic!("BRISK_BENCH_PATHS: no kernel path {name:?}"))
            })
            .collect(),
        Err(_) => KernelPath::ALL[1..].to_vec(),
    };
    wanted
        .into_iter()
        .filter(|p| {
            let ok = p.available();
            if !ok {
                eprintln!("skipped: this CPU cannot run the {p} kernels (not measured)");
            }
            ok
        })
        .collect()
}

fn attention(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let (q_heads, kv_heads, d, bs) = (9, 3, 64, 16);
    let mut group = c.benchmark_group("attention smollm2 heads");
    group.sample_size(10);
    // (sequences, tokens each step, context each): a 512-token prefill, batched decodes.
    for (seqs, step, context) in [
        (1usize, 512usize, 0usize),
        (16, 1, 256),
        (64, 1, 256),
        (1, 1, 2048),
    ] {
        let blocks_per_seq = (context + step).div_ceil(bs);
        let mut pool =
            CpuKvPool::new(1, kv_heads, d, seqs * blocks_per_seq, bs, KvCacheDtype::F32).unwrap();
        let tables: Vec<Vec<u32>> = (0..seqs)
            .map(|s| ((s * blocks_per_seq) as u32..((s + 1) * blocks_per_seq) as u32).collect())
            .collect();
        let places: Vec<TokenPlace<'_>> = tables
            .iter()
            .flat_map(|t| {
                (0..context + step).map(move |pos| TokenPlace {
                    block_table: t,
                    pos,
                })
            })
            .collect();
        let kv: Vec<f32> = (0..places.len() * kv_heads * d)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        write_kv(&mut pool, 0, &places, &kv, &kv);
        let step_places: Vec<TokenPlace<'_>> = tables
            .iter()
            .flat_map(|t| {
                (context..context + step).map(move |pos| TokenPlace {
                    block_table: t,
                    pos,
                })
            })
            .collect();
        let q: Vec<f32> = (0..step_places.len() * q_heads * d)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        // Multiply-accumulates: scores and weighted values over each token's keys, per head.
        let macs: usize = step_places
            .iter()
            .map(|p| 2 * (p.pos + 1) * d * q_heads)
            .sum();
        group.throughput(Throughput::Elements(macs as u64));
        let name = format!("{seqs} seqs x {step} tokens at context {context}");
        group.bench_function(name, |b| {
            b.iter(|| paged_attention(&pool, 0, &step_places, &q, q_heads))
        });
    }
    group.finish();
}

criterion_group!(benches, matmul, attention);
criterion_main!(benches);
