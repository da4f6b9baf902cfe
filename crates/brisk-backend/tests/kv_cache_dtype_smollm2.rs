//! How much a 16-bit or 8-bit KV cache changes SmolLM2's output, measured against the f32
//! cache.
//!
//! A prompt is prefilled and then continued greedily for 24 tokens, once per cache type; the
//! logits of every continued step are compared with the f32 run's, which is fed the same
//! tokens. Measured on SmolLM2-135M-Instruct Q4_1 (2026-11-24):
//!
//! | cache | max abs logit diff | mean abs logit diff | greedy agreement |
//! |---|---|---|---|
//! | f16  | 0.95 | 0.153 | 22/24 |
//! | bf16 | 1.06 | 0.182 | 23/24 |
//! | int8 | 1.41 | 0.213 | 22/24 |
//!
//!
//! With attention reading bf16 and int8 caches in place (AVX-512 BF16 / VNNI: query rows
//! rounded to bf16 or quantized to int8 as well), on the Sapphire Rapids VM, 2026-12-05:
//! bf16 0.86 / 0.165 / 24/24, int8 1.16 / 0.179 / 22/24 (f16, converted as before: 0.95 /
//! 0.153 / 22/24).
//!
//! f16 rounds each value 8× finer than bf16, yet both move the logits alike: the differences
//! are dominated by the 8-bit activation quantization of the matrix products, which turns any
//! small change into whole quantization steps (the f32 cache itself is ~3 logits from an f32
//! reference; see `reference_logits`). int8 (one scale per cached vector) adds a little more.
//! The bounds leave room above the measurements.

mod common;

use brisk_backend::KvCacheDtype;
use brisk_types::{Backend, LogitsWanted};
use common::{argmax, encode, load, max_abs_diff, run_one};

const PROMPT: &str = "The history of the city of Paris begins with a small settlement on an \
island in the river Seine. Over the centuries it grew into";

/// Per step: the logits after the prompt, then after each of `steps` greedy tokens of the f32
/// run (`forced`, when given, replaces the cache's own choices so every run sees the same
/// tokens).
fn run(
    dtype: KvCacheDtype,
    prompt: &[u32],
    forced: Option<&[u32]>,
    steps: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let (_, mut backend) = load();
    backend.set_kv_cache_dtype(dtype);
    let table: Vec<u32> = (0..8).collect();
    let mut kv = backend.allocate_kv(8, 16).expect("allocate");
    assert_eq!(kv.dtype(), dtype);
    let mut logits = run_one(&backend, &mut kv, prompt, 0, &table, LogitsWanted::Last);
    let (mut ids, mut all) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let next = forced.map_or_else(|| argmax(&logits), |f| f[step]);
        ids.push(argmax(&logits));
        all.push(logits);
        logits = run_one(
            &backend,
            &mut kv,
            &[next],
            prompt.len() + step,
            &table,
            LogitsWanted::Last,
        );
    }
    (ids, all)
}

#[test]
fn sixteen_and_eight_bit_kv_caches_stay_close_to_f32_on_smollm2() {
    let (file, _) = load();
    let prompt = encode(&file, PROMPT);
    let steps = 24;
    let (reference_ids, reference) = run(KvCacheDtype::F32, &prompt, None, steps);
    for (dtype, bound) in [
        (KvCacheDtype::F16, 2.0),
        (KvCacheDtype::Bf16, 2.0),
        (KvCacheDtype::Int8, 3.0),
    ] {
        let (ids, logits) = run(dtype, &prompt, Some(&reference_ids), steps);
        let worst = reference
            .iter()
            .zip(&logits)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0.0, f32::max);
        let mean = reference
            .iter()
            .zip(&logits)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())))
            .sum::<f64>()
            / (steps * reference[0].len()) as f64;
        let same = ids
            .iter()
            .zip(&reference_ids)
            .filter(|(a, b)| a == b)
            .count();
        eprintln!(
            "{dtype:?}: max |Δlogit| {worst:.4}, mean {mean:.5}, greedy agreement {same}/{steps}"
        );
        assert!(worst < bound, "{dtype:?}: max |Δlogit| {worst} ≥ {bound}");
        let same = ids
            .iter()
            .zip(&reference_ids)
            .filter(|(a, b)| a == b)
            .count();
        assert!(
            same >= steps - 4,
            "{dtype:?}: greedy choices differ at {} of {steps} steps",
            steps - same
        );
    }
}
