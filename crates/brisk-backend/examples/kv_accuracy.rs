//! How much a 16-bit or 8-bit KV cache changes the model's predictions, measured against f32.
//!
//! `cargo run --release -p brisk-backend --example kv_accuracy -- MODEL.gguf PROMPTS.json [TEXTS] [TOKENS] [HANDOVER_AT]`
//!
//! Takes the first human turn of the first TEXTS conversations of a ShareGPT-style JSON file
//! (default 8) that are at least TOKENS tokens long (default 256), and runs each through the
//! model one token at a time — every position a decode step whose attention reads all earlier
//! keys and values back from the paged cache, as in serving — once per cache dtype. For every
//! position it compares the next-token distribution with the f32 cache's: the KL divergence
//! KL(p_f32 ‖ p), whether the top token agrees (and, where not, how far apart the two tokens
//! were in the f32 logits), the largest logit difference, and each dtype's perplexity of the
//! text itself.
//!
//! With HANDOVER_AT, the K/V also move mid-text as a hand-over moves them: after that many
//! tokens every block is exported (`--kv-transfer-dtype` auto, int8 or int4), imported into
//! a fresh pool, and the text continues there. Every row is then scored from HANDOVER_AT on
//! (the positions a moved request decodes), the cache dtypes included, so that a lossy
//! transfer compares with a lossy cache over the same positions.

use brisk_backend::{CpuBackend, KvCacheDtype, KvTransferDtype};
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

/// The logits after each token of `text`, decoding one token per step; after `handover`
/// tokens, the K/V move to a fresh pool through the backend's export and import (returned:
/// the bytes they took).
fn run(backend: &CpuBackend, text: &[u32], handover: Option<usize>) -> (Vec<Vec<f32>>, usize) {
    let blocks = text.len().div_ceil(BLOCK_SIZE);
    let mut kv = backend.allocate_kv(blocks, BLOCK_SIZE).expect("KV pool");
    let table: Vec<u32> = (0..blocks as u32).collect();
    let mut moved = 0;
    let logits = (0..text.len())
        .map(|pos| {
            if handover == Some(pos) {
                let full = &table[..pos.div_ceil(BLOCK_SIZE)];
                let data = backend.export_blocks(&kv, full).expect("export");
                kv = backend.allocate_kv(blocks, BLOCK_SIZE).expect("KV pool");
                backend.import_blocks(&mut kv, full, &data).expect("import");
                moved = data.len();
            }
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
        .collect();
    (logits, moved)
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
    let usage = "usage: kv_accuracy MODEL.gguf PROMPTS.json [TEXTS] [TOKENS] [HANDOVER_AT]";
    let model = args.next().expect(usage);
    let prompts = args.next().expect(usage);
    let num_texts: usize = args.next().map_or(8, |n| n.parse().expect(usage));
    let tokens: usize = args.next().map_or(256, |n| n.parse().expect(usage));
    let handover: Option<usize> = args.next().map(|n| n.parse().expect(usage));
    assert!(handover.is_none_or(|at| at > 0 && at < tokens), "{usage}");
    let from = handover.unwrap_or(0);

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
    let reference: Vec<Vec<Vec<f32>>> = texts.iter().map(|t| run(&backend, t, None).0).collect();
    println!(
        "{} texts x {tokens} tokens, one decode step per token, block size {BLOCK_SIZE}, scored from position {from}",
        texts.len()
    );
    println!("dtype            mean KL(f32||dtype)   max KL  top-1 agreement  max |dlogit|  perplexity  max flip margin  wire bytes/token");
    let caches = [
        KvCacheDtype::F32,
        KvCacheDtype::F16,
        KvCacheDtype::Bf16,
        KvCacheDtype::Int8,
    ];
    let rows = caches
        .into_iter()
        .map(|c| (c, None))
        .chain(handover.into_iter().flat_map(|_| {
            [
                (KvCacheDtype::F32, Some(KvTransferDtype::Auto)),
                (KvCacheDtype::F32, Some(KvTransferDtype::Int8)),
                (KvCacheDtype::F32, Some(KvTransferDtype::Int4)),
                (KvCacheDtype::Int8, Some(KvTransferDtype::Auto)),
                (KvCacheDtype::Int8, Some(KvTransferDtype::Int4)),
            ]
        }));
    for (dtype, wire) in rows {
        backend.set_kv_cache_dtype(dtype);
        backend.set_kv_transfer_dtype(wire.unwrap_or_default());
        let mut s = Stats::default();
        let mut wire_bytes = 0;
        for (text, want) in texts.iter().zip(&reference) {
            // f32 runs again: its row shows the run-to-run noise floor (0 when the backend
            // is deterministic, as brisk's kernels are meant to be).
            let (got, moved) = run(&backend, text, wire.and(handover));
            wire_bytes += moved;
            for (pos, (g, w)) in got.iter().zip(want).enumerate().skip(from) {
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
        let name = match wire {
            Some(w) => format!("{} via {}", dtype.name(), w.name()),
            None => dtype.name().to_string(),
        };
        let per_token = wire_bytes as f64 / (texts.len() * from).max(1) as f64;
        println!(
            "{name:<15}  {:>19.3e}  {:>7.3e}  {:>14.2}%  {:>12.4}  {:>10.3}  {:>15.4}  {:>16.0}",
            s.kl_sum / s.positions as f64,
            s.kl_max,
            100.0 * s.top1_agree as f64 / s.positions as f64,
            s.max_logit_diff,
            (s.nll_sum / scored as f64).exp(),
            s.max_flip_margin,
            per_token
        );
    }
}
