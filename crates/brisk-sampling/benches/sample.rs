//! Sampling one token from SmolLM2's 49,152-logit row: plain temperature, top-p, top-k and
//! greedy, each with and without the token's log-probability. `cargo bench -p brisk-sampling --bench sample` (add `-- --quick` for a short run).
//! Every decoding sequence pays this once per token on the engine thread, between steps.

use brisk_sampling::{Sampler, SamplingParams};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VOCAB: usize = 49_152;

fn sample(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    // A peaked row, like a language model's: a few likely tokens over a long tail.
    let logits: Vec<f32> = (0..VOCAB)
        .map(|i| {
            let tail = rng.random::<f32>() * 8.0 - 4.0;
            if i % 997 == 0 {
                tail + 12.0
            } else {
                tail
            }
        })
        .collect();
    let cases = [
        ("temperature 1", SamplingParams::default()),
        (
            "top_p 0.9",
            SamplingParams {
                top_p: 0.9,
                ..SamplingParams::default()
            },
        ),
        (
            "top_k 40",
            SamplingParams {
                top_k: 40,
                ..SamplingParams::default()
            },
        ),
        ("greedy", SamplingParams::greedy()),
    ];
    let mut group = c.benchmark_group("sample 49152 logits");
    for (name, params) in cases {
        let mut sampler = Sampler::new(params, 7);
        group.bench_function(name, |b| b.iter(|| sampler.sample(&logits, &[], &[])));
        group.bench_function(format!("{name}, no logprob"), |b| {
            b.iter(|| sampler.sample_token(&logits, &[], &[]))
        });
    }
    group.finish();
}

criterion_group!(benches, sample);
criterion_main!(benches);
