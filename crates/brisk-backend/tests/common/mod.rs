//! Shared helpers of the tests that run the real SmolLM2-135M-Instruct model.
//!
//! Every test that needs the model goes through [`smollm2_path`], which fails loudly when the
//! file is absent: these tests must never pass by skipping.
#![allow(dead_code)] // each test binary uses its own subset

use brisk_backend::{CpuBackend, CpuKvPool};
use brisk_gguf::GgufFile;
use brisk_types::{Backend, LogitsWanted, SeqStep, StepBatch};

/// "1, 2, 3, 4, 5, 6," — its greedy continuation is " 7, 8, 9" with wide margins.
pub const COUNTING_TEXT: &str = "1, 2, 3, 4, 5, 6,";
/// The counting prompt's ids: digits are single tokens and a space ('Ġ') is one too.
/// (`'0'..='9'` are ids 32..=41, `','` is 28, `'Ġ'` is 216.)
pub const COUNTING_IDS: [u32; 17] = [
    33, 28, 216, 34, 28, 216, 35, 28, 216, 36, 28, 216, 37, 28, 216, 38, 28,
];
/// The first eight greedy ids after [`COUNTING_IDS`]: " 7, 8, 9".
pub const COUNTING_CONTINUATION: [u32; 8] = [216, 39, 28, 216, 40, 28, 216, 41];
/// "The capital of France is".
pub const FRANCE_IDS: [u32; 5] = [504, 3575, 282, 4649, 314];
/// " Paris."
pub const FRANCE_CONTINUATION: [u32; 2] = [7042, 30];

/// The reference model (fails loudly when absent; see `brisk_testkit::smollm2_path`).
pub use brisk_testkit::smollm2_path;

/// The parsed GGUF file and the backend loaded from it.
pub fn load() -> (GgufFile, CpuBackend) {
    let file = GgufFile::open(smollm2_path()).expect("open the SmolLM2 GGUF");
    let backend = CpuBackend::from_gguf(&file).expect("load SmolLM2");
    (file, backend)
}

/// The backend alone.
pub fn backend() -> CpuBackend {
    CpuBackend::load(&smollm2_path()).expect("load SmolLM2")
}

/// Ids of `text` under the model's own tokenizer (no BOS).
pub fn encode(file: &GgufFile, text: &str) -> Vec<u32> {
    let tok = brisk_tokenizer::Tokenizer::from_gguf(file).expect("tokenizer from the GGUF");
    tok.encode(text, false).expect("encode")
}

/// Top-1 logit minus top-2 logit.
pub fn margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &l in logits {
        if l > a {
            b = a;
            a = l;
        } else if l > b {
            b = l;
        }
    }
    a - b
}

/// Largest absolute element-wise difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Index of the largest value (first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    u32::try_from(brisk_sampling::argmax(logits)).expect("token id fits u32")
}

/// Runs a single sequence's chunk and returns its logit rows, `vocab_size` values each.
pub fn run_one(
    backend: &CpuBackend,
    kv: &mut CpuKvPool,
    tokens: &[u32],
    start_pos: usize,
    block_table: &[u32],
    logits: LogitsWanted,
) -> Vec<f32> {
    let batch = StepBatch {
        seqs: vec![SeqStep {
            tokens,
            start_pos,
            block_table,
            logits,
        }],
    };
    backend.execute(&batch, kv).expect("execute").logits
}

/// Greedy generation of `steps` tokens after `prompt`, one sequence alone: the ids and the
/// top-1 margin of every step.
pub fn greedy_alone(
    backend: &CpuBackend,
    prompt: &[u32],
    steps: usize,
    block_size: usize,
    block_table: &[u32],
) -> (Vec<u32>, Vec<f32>) {
    let num_blocks = block_table
        .iter()
        .copied()
        .max()
        .map_or(1, |b| b as usize + 1);
    let mut kv = backend
        .allocate_kv(num_blocks, block_size)
        .expect("allocate");
    let mut logits = run_one(backend, &mut kv, prompt, 0, block_table, LogitsWanted::Last);
    let (mut ids, mut margins) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let next = argmax(&logits);
        ids.push(next);
        margins.push(margin(&logits));
        if step + 1 < steps {
            logits = run_one(
                backend,
                &mut kv,
                &[next],
                prompt.len() + step,
                block_table,
                LogitsWanted::Last,
            );
        }
    }
    (ids, margins)
}
