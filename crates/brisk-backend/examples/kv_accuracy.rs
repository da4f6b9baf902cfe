//! How much a 16-bit or 8-bit KV cache changes the model's predictions, measured against f32.
//!
//! `cargo run --release -p brisk-backend --example kv_accuracy -- MODEL.gguf PROMPTS.json [TEXTS] [TOKENS]`
//!
//! Takes the first human turn of the first TEXTS conversations of a ShareGPT-style JSON file
//! (default 8) that are at least TOKENS tokens long (default 256), and runs each through the
//! model one token at a time — every position a decode step whose attention reads all earlier
//! keys and values back from the paged cache, as in serving — once per cache dtype. For every
//! position it compares the next-token distribution with the f32 cache's: the KL divergence
//! KL(p_f32 ‖ p), whether the top token agrees (and, where not, how far apart the two tokens
//! were in the f32 logits), the largest logit difference, and each dtype's perplexity of the
//! text itself.

use brisk_backend::{CpuBackend, KvCacheDtype};
use brisk_types::{Backend, LogitsWanted, SeqStep, StepBatch};

const BLOCK_SIZE: usize = 16;

/// Log-softmax of a logit row, in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let norm = max + sum.ln();
    logits.iter().map(|&l| l as f64 - norm).collect()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .expect("non-empty row")
}

/// The logits after each token of `text`, decoding one token per step.
fn run(backend: &CpuBackend, text: &[u32]) -> Vec<Vec<f32>> {
    let blocks = text.len().div_ceil(BLOCK_SIZE);
    let mut kv = backend.allocate_kv(blocks, BLOCK_SIZE).expect("KV pool");
    let table: Vec<u32> = (0..blocks as u32).collect();
    (0..text.len())
        .map(|pos| {
            let batch = StepBatch {
                seqs: vec![SeqStep {
                    tokens: &text[pos..pos + 1],
                    start_pos: pos,
                    block_table: &table,
                    logits: LogitsWanted::Last,
                }],
            };
            let out = backend.execute(&batch, &mut kv).expect("step runs");
            out.last_row(0).to_vec()
        })
        .collect()
}

#[derive(Default)]
struct Stats {
    kl_sum: f64,
    kl_max: f64,
    top1_agree: usize,
    max_logit_diff: f32,
    nll_sum: f64,
    positions: usize,
    /// Largest f32 logit gap between f32's top token and the one chosen instead, where they
    /// disagree: how close to a tie the flipped positions were.
    max_flip_margin: f32,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: kv_accuracy MODEL.gguf PROMPTS.json [TEXTS] [TOKENS]";
    let model = args.next().expect(usage);
    let prompts = args.next().expect(usage);
    let num_texts: usize = args.next().map_or(8, |n| n.parse().expect(usage));
    let tokens: usize = args.next().map_or(256, |n| n.parse().expect(usage));

    let file = brisk_gguf::GgufFile::open(&model).expect("open the model");
    let tokenizer = brisk_tokenizer::Tokenizer::from_gguf(&file).expect("tokenizer");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&prompts).expect("read the prompts"))
            .expect("prompts are JSON");
    let texts: Vec<Vec<u32>> = json
        .as_array()
        .expect("a JSON array of conversations")
        .iter()
        .filter_map(|c| c.pointer("/conversations/0/value")?.as_str())
        .filter_map(|t| tokenizer.encode(t, false).ok())
        .filter(|ids| ids.len() >= tokens)
        .take(num_texts)
        .map(|ids| ids[..tokens].to_vec())
        .collect();
    assert!(!texts.is_empty(), "no conversation has {tokens} tokens");

    let mut backend = CpuBackend::load(model.as_ref()).expect("model loads");
    let reference: Vec<Vec<Vec<f32>>> = texts.iter().map(|t| run(&backend, t)).collect();
    println!(
        "{} texts x {tokens} tokens, one decode step per token, block size {BLOCK_SIZE}",
        texts.len()
    );
    println!("dtype  mean KL(f32||dtype)   max KL  top-1 agreement  max |dlogit|  perplexity  max flip margin");
    for dtype in [
        KvCacheDtype::F32,
        KvCacheDtype::F16,
        KvCacheDtype::Bf16,
        KvCacheDtype::Int8,
    ] {
        backend.set_kv_cache_dtype(dtype);
        let mut s = Stats::default();
        for (text, want) in texts.iter().zip(&reference) {
            // f32 runs again: its row shows the run-to-run noise floor (0 when the backend
            // is deterministic, as brisk's kernels are meant to be).
            let got = run(&backend, text);
            for (pos, (g, w)) in got.iter().zip(want).enumerate() {
                let (lg, lw) = (log_softmax(g), log_softmax(w));
                let kl: f64 = lw.iter().zip(&lg).map(|(a, b)| a.exp() * (a - b)).sum();
                s.kl_sum += kl;
                s.kl_max = s.kl_max.max(kl);
                let (top_g, top_w) = (argmax(g), argmax(w));
                if top_g == top_w {
                    s.top1_agree += 1;
                } else {
                    s.max_flip_margin = s.max_flip_margin.max(w[top_w] - w[top_g]);
                }
                let diff = g
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                s.max_logit_diff = s.max_logit_diff.max(diff);
                if let Some(&next) = text.get(pos + 1) {
                    s.nll_sum -= lg[next as usize];
                }
                s.positions += 1;
            }
        }
        let scored = s.positions - texts.len();
        println!(
            "{:<5}  {:>19.3e}  {:>7.3e}  {:>14.2}%  {:>12.4}  {:>10.3}  {:>15.4}",
            dtype.name(),
            s.kl_sum / s.positions as f64,
            s.kl_max,
            100.0 * s.top1_agree as f64 / s.positions as f64,
            s.max_logit_diff,
            (s.nll_sum / scored as f64).exp(),
            s.max_flip_margin
        );
    }
}
