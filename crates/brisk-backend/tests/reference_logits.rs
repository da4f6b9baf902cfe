//! brisk's logits track an independent f32 reference forward pass written here.
//!
//! The reference dequantizes every GGUF weight to f32 (candle's dequantizers) and runs the
//! Llama computation densely, with no paging and no quantized dot products: RMSNorm, Q/K/V,
//! interleaved RoPE (GGUF `llama` files permute Q/K rows so that dims `2i, 2i+1` pair up,
//! `inv_freq_i = base^(-2i/head_dim)`), causal grouped-query attention (query head `h` reads
//! KV head `h / (heads / kv_heads)`), scale `1/sqrt(head_dim)`, SwiGLU
//! `down(silu(gate(x)) * up(x))`, final norm and the tied LM head (`token_embd.weight`).
//! Norms, RoPE angles and attention are computed in f64; matrix products accumulate in eight
//! f32 lanes summed in f64.
//!
//! The prompt is SmolLM2's ChatML rendering of its default system message and "What is the
//! capital of France?". The reference must answer greedily "The capital of France is Paris."
//! (`[504, 3575, 282, 4649, 314, 7042, 30]`); brisk then runs prompt + answer teacher-forced in
//! one chunk (`LogitsWanted::All`, 44 positions) and is compared position by position.
//!
//! Two comparisons, because they catch different things:
//!
//! 1. **The Q4_1 file as shipped.** brisk's quantized matrix products round activations to
//!    8 bits per block of 32 (Q8_1/Q8_0, as llama.cpp does). Over 30 layers that noise is
//!    not small: measured on this prompt (x86-64), brisk differs from the f32 reference by at
//!    most **2.97** in any logit (a mean shift of up to 1.4 is part of it) and by at most
//!    **0.37** in log-softmax at the reference's top-1 with its own kernels, and by 1.94 / 0.36
//!    with `BRISK_KERNELS=candle` (candle 0.11.1's quantized products). That is the noise
//!    floor, not a brisk defect: the same reference with its products done by candle's
//!    quantized `QMatMul` (i.e. llama.cpp's numerics, no brisk code) differs from the f32
//!    reference by 1.98 / 0.37, and answers "L'…" instead of "The…" — the first answer
//!    token's top two are 0.08 nats apart in f32 and flip under activation quantization, as
//!    DESIGN.md reports for llama.cpp. Tolerances: [`Q4_MAX_LOGIT_DIFF`] = 4.5 and
//!    [`Q4_MAX_LOGPROB_DIFF`] = 0.75, about 1.5-2x the measured maxima, so that another
//!    correct kernel (other rounding, accumulation order) passes; plus brisk's top-1 must equal
//!    the reference's wherever the reference leads by more than [`DECISIVE_MARGIN`] = 1 nat.
//! 2. **The same weights dequantized to f32**, written into an in-memory GGUF and loaded by
//!    brisk, which then runs dense f32 products: no activation quantization, so any
//!    difference left is the forward pass itself (RoPE, GQA, paging, norms, SwiGLU). Measured:
//!    max abs logit difference **9.0e-5**, log-softmax difference **9.5e-6**. Tolerances
//!    [`F32_MAX_LOGIT_DIFF`] = 0.01 and [`F32_MAX_LOGPROB_DIFF`] = 0.002 (100-200x headroom for
//!    other f32 accumulation orders), and the same top-1 wherever the reference leads by more
//!    than [`F32_DECISIVE_MARGIN`] = 0.02 nats — which includes the 0.08-nat "The" vs "L".
//!    A structural bug (wrong RoPE pairing or base, GQA head mapping, a position off by one,
//!    a stale or misplaced KV slot) moves logits by whole units here.

mod common;

use brisk_gguf::{GgmlDType, GgufFile, GgufWriter};
use brisk_sampling::log_softmax_at;
use brisk_types::{Backend, LogitsWanted};
use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::Device;
use rayon::prelude::*;
use std::sync::OnceLock;

const CHATML_PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, \
trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
<|im_start|>assistant\n";
const EXPECTED_ANSWER: [u32; 7] = [504, 3575, 282, 4649, 314, 7042, 30];

/// Q4_1 file: largest allowed absolute difference between any brisk logit and the reference's.
const Q4_MAX_LOGIT_DIFF: f32 = 4.5;
/// Q4_1 file: largest allowed difference of log-softmax at the reference's top-1 token.
const Q4_MAX_LOGPROB_DIFF: f32 = 0.75;
/// Where the reference's top-1 leads by more than this (nats), brisk must pick it too.
const DECISIVE_MARGIN: f32 = 1.0;
/// f32 weights: largest allowed absolute logit difference.
const F32_MAX_LOGIT_DIFF: f32 = 0.01;
/// f32 weights: largest allowed difference of log-softmax at the reference's top-1 token.
const F32_MAX_LOGPROB_DIFF: f32 = 0.002;
/// f32 weights: where the reference leads by more than this, brisk must pick the same token.
const F32_DECISIVE_MARGIN: f32 = 0.02;

/// The tokens (prompt + expected answer) and the reference's logits at every position,
/// computed once per test binary.
struct Expected {
    tokens: Vec<u32>,
    prompt_len: usize,
    rows: Vec<Vec<f32>>,
}

fn expected() -> &'static Expected {
    static EXPECTED: OnceLock<Expected> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let file = GgufFile::open(common::smollm2_path()).expect("open the SmolLM2 GGUF");
        let prompt = common::encode(&file, CHATML_PROMPT);
        assert_eq!(
            prompt[0], 1,
            "<|im_start|> must encode as the special token 1: {prompt:?}"
        );
        assert_eq!(
            prompt.iter().filter(|&&t| t == 2).count(),
            2,
            "two <|im_end|>: {prompt:?}"
        );

        let t0 = std::time::Instant::now();
        let reference = Reference::load(&file);
        eprintln!("reference weights dequantized in {:?}", t0.elapsed());

        // Greedy generation with the reference: prefill, then one token at a time.
        let t0 = std::time::Instant::now();
        let mut cache = reference.new_cache();
        let mut last = reference.forward(&prompt, &mut cache).pop().unwrap();
        let first_margin = common::margin(&last);
        let mut answer = Vec::new();
        while answer.len() < EXPECTED_ANSWER.len() {
            let next = common::argmax(&last);
            answer.push(next);
            last = reference.forward(&[next], &mut cache).pop().unwrap();
        }
        eprintln!("reference answer {answer:?}, first-token margin {first_margin:.3}");
        assert_eq!(answer, EXPECTED_ANSWER, "the f32 reference's greedy answer");

        // Reference logits at every position of prompt + answer, in one pass.
        let tokens: Vec<u32> = prompt.iter().chain(&answer).copied().collect();
        let rows = reference.forward(&tokens, &mut reference.new_cache());
        eprintln!("reference forward passes in {:?}", t0.elapsed());
        Expected {
            tokens,
            prompt_len: prompt.len(),
            rows,
        }
    })
}

/// The largest differences found, and every position that broke a tolerance.
struct Comparison {
    max_logit_diff: (f32, usize),
    max_logprob_diff: (f32, usize),
    failures: Vec<String>,
}

/// Teacher-forces `backend` along the expected tokens and compares every position.
fn compare(
    backend: &brisk_backend::CpuBackend,
    max_logit: f32,
    max_logprob: f32,
    decisive: f32,
) -> Comparison {
    let exp = expected();
    let tokens = &exp.tokens;
    let block_size = 16;
    // Blocks in reverse order: paging must not matter.
    let num_blocks = u32::try_from(tokens.len().div_ceil(block_size)).unwrap();
    let table: Vec<u32> = (0..num_blocks).rev().collect();
    let mut kv = backend.allocate_kv(table.len(), block_size).unwrap();
    let logits = common::run_one(backend, &mut kv, tokens, 0, &table, LogitsWanted::All);
    let vocab = backend.config().vocab_size;
    assert_eq!(logits.len(), tokens.len() * vocab);
    assert_eq!(exp.rows.len(), tokens.len());

    let mut c = Comparison {
        max_logit_diff: (0.0, 0),
        max_logprob_diff: (0.0, 0),
        failures: Vec::new(),
    };
    for (pos, (ours, theirs)) in logits.chunks_exact(vocab).zip(&exp.rows).enumerate() {
        let diff = common::max_abs_diff(ours, theirs);
        if diff > c.max_logit_diff.0 {
            c.max_logit_diff = (diff, pos);
        }
        let top = brisk_sampling::argmax(theirs);
        let lp = (log_softmax_at(ours, top) - log_softmax_at(theirs, top)).abs();
        if lp > c.max_logprob_diff.0 {
            c.max_logprob_diff = (lp, pos);
        }
        let margin = common::margin(theirs);
        let ours_top = brisk_sampling::argmax(ours);
        if diff > max_logit {
            c.failures
                .push(format!("position {pos}: max abs logit difference {diff}"));
        }
        if lp > max_logprob {
            c.failures.push(format!(
                "position {pos}: log-softmax difference {lp} at token {top}"
            ));
        }
        if margin > decisive && ours_top != top {
            c.failures.push(format!(
                "position {pos}: brisk picks {ours_top}, the reference {top} by {margin} nats"
            ));
        }
    }
    eprintln!(
        "over {} positions (prompt {}): max abs logit difference {:.3e} (position {}), max \
         log-softmax difference at the reference top-1 {:.3e} (position {})",
        tokens.len(),
        exp.prompt_len,
        c.max_logit_diff.0,
        c.max_logit_diff.1,
        c.max_logprob_diff.0,
        c.max_logprob_diff.1
    );
    c
}

#[test]
fn brisk_on_the_q4_1_file_stays_within_activation_quantization_noise_of_the_f32_reference() {
    let backend = common::backend();
    let c = compare(
        &backend,
        Q4_MAX_LOGIT_DIFF,
        Q4_MAX_LOGPROB_DIFF,
        DECISIVE_MARGIN,
    );
    assert!(c.failures.is_empty(), "{}", c.failures.join("\n"));
}

#[test]
fn brisk_on_the_weights_dequantized_to_f32_matches_the_f32_reference_closely() {
    let _ = expected(); // one reference at a time: it holds ~0.5 GB
    let file = GgufFile::open(common::smollm2_path()).expect("open the SmolLM2 GGUF");
    let bytes = {
        let mut w = GgufWriter::new();
        for (k, v) in &file.metadata {
            w.meta(k, v.clone());
        }
        for info in &file.tensors {
            let (shape, data) = dequantize(&file, &info.name);
            w.tensor_f32(&info.name, &shape, &data);
        }
        w.to_bytes()
    };
    drop(file);
    let f32_file = GgufFile::parse("SmolLM2-135M-Instruct.f32.gguf".into(), bytes).unwrap();
    assert!(f32_file.tensors.iter().all(|t| t.dtype == GgmlDType::F32));
    let backend = brisk_backend::CpuBackend::from_gguf(&f32_file).expect("load the f32 model");
    drop(f32_file);
    let c = compare(
        &backend,
        F32_MAX_LOGIT_DIFF,
        F32_MAX_LOGPROB_DIFF,
        F32_DECISIVE_MARGIN,
    );
    assert!(c.failures.is_empty(), "{}", c.failures.join("\n"));
}

/// A dense `[rows, cols]` row-major f32 matrix.
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

struct Layer {
    attn_norm: Vec<f32>,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    o: Matrix,
    ffn_norm: Vec<f32>,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

struct Reference {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    inv_freq: Vec<f64>,
    embedding: Matrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
}

/// Per layer, the keys and values of every position seen so far (`kv_heads * head_dim` each).
struct Cache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

fn dequantize(file: &GgufFile, name: &str) -> (Vec<usize>, Vec<f32>) {
    let info = file
        .tensor(name)
        .unwrap_or_else(|| panic!("missing tensor {name}"));
    let bytes = file.tensor_bytes(info);
    let t = qtensor_from_ggml(info.dtype.into(), bytes, info.shape(), &Device::Cpu)
        .and_then(|q| q.dequantize(&Device::Cpu))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap_or_else(|e| panic!("dequantize {name}: {e}"));
    (info.shape(), t)
}

fn matrix(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Matrix {
    let (shape, data) = dequantize(file, name);
    assert_eq!(shape, [rows, cols], "{name}");
    Matrix { rows, cols, data }
}

fn vector(file: &GgufFile, name: &str, len: usize) -> Vec<f32> {
    let (shape, data) = dequantize(file, name);
    assert_eq!(shape, [len], "{name}");
    data
}

fn meta_usize(file: &GgufFile, key: &str) -> usize {
    let v = file.get_u64(key).unwrap_or_else(|| panic!("missing {key}"));
    usize::try_from(v).unwrap()
}

impl Reference {
    fn load(file: &GgufFile) -> Self {
        let hidden = meta_usize(file, "llama.embedding_length");
        let ffn = meta_usize(file, "llama.feed_forward_length");
        let layers = meta_usize(file, "llama.block_count");
        let heads = meta_usize(file, "llama.attention.head_count");
        let kv_heads = meta_usize(file, "llama.attention.head_count_kv");
        let head_dim = hidden / heads;
        let eps = file
            .get_f64("llama.attention.layer_norm_rms_epsilon")
            .expect("rms epsilon") as f32;
        let base = file.get_f64("llama.rope.freq_base").expect("rope base");
        let inv_freq = (0..head_dim / 2)
            .map(|i| base.powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        let vocab = file
            .tensor("token_embd.weight")
            .expect("token_embd.weight")
            .shape()[0];
        assert!(
            file.tensor("output.weight").is_none(),
            "SmolLM2 ties its LM head"
        );
        let kv_dim = kv_heads * head_dim;
        let layers = (0..layers)
            .map(|l| {
                let n = |t: &str| format!("blk.{l}.{t}.weight");
                Layer {
                    attn_norm: vector(file, &n("attn_norm"), hidden),
                    q: matrix(file, &n("attn_q"), hidden, hidden),
                    k: matrix(file, &n("attn_k"), kv_dim, hidden),
                    v: matrix(file, &n("attn_v"), kv_dim, hidden),
                    o: matrix(file, &n("attn_output"), hidden, hidden),
                    ffn_norm: vector(file, &n("ffn_norm"), hidden),
                    gate: matrix(file, &n("ffn_gate"), ffn, hidden),
                    up: matrix(file, &n("ffn_up"), ffn, hidden),
                    down: matrix(file, &n("ffn_down"), hidden, ffn),
                }
            })
            .collect();
        Self {
            heads,
            kv_heads,
            head_dim,
            eps,
            inv_freq,
            embedding: matrix(file, "token_embd.weight", vocab, hidden),
            layers,
            output_norm: vector(file, "output_norm.weight", hidden),
        }
    }

    fn new_cache(&self) -> Cache {
        Cache {
            k: vec![Vec::new(); self.layers.len()],
            v: vec![Vec::new(); self.layers.len()],
            len: 0,
        }
    }

    /// Runs `tokens` after the cached prefix; returns the logits of every token.
    fn forward(&self, tokens: &[u32], cache: &mut Cache) -> Vec<Vec<f32>> {
        let h = self.embedding.cols;
        let n = tokens.len();
        let start = cache.len;
        let mut x: Vec<f32> = tokens
            .iter()
            .flat_map(|&t| {
                let t = t as usize;
                self.embedding.data[t * h..(t + 1) * h].iter().copied()
            })
            .collect();
        for (li, layer) in self.layers.iter().enumerate() {
            let normed = rms_norm(&x, &layer.attn_norm, self.eps);
            let mut q = linear(&normed, &layer.q);
            let mut k = linear(&normed, &layer.k);
            let v = linear(&normed, &layer.v);
            self.rope(&mut q, self.heads, start);
            self.rope(&mut k, self.kv_heads, start);
            cache.k[li].extend_from_slice(&k);
            cache.v[li].extend_from_slice(&v);
            let attn = self.attention(&q, &cache.k[li], &cache.v[li], start);
            add_into(&mut x, &linear(&attn, &layer.o));

            let normed = rms_norm(&x, &layer.ffn_norm, self.eps);
            let gate = linear(&normed, &layer.gate);
            let up = linear(&normed, &layer.up);
            let act: Vec<f32> = gate
                .iter()
                .zip(&up)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            add_into(&mut x, &linear(&act, &layer.down));
        }
        cache.len += n;
        let normed = rms_norm(&x, &self.output_norm, self.eps);
        let logits = linear(&normed, &self.embedding);
        logits
            .chunks_exact(self.embedding.rows)
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// Rotates pairs `(2i, 2i+1)` of every head of every row (`heads` heads per row); row
    /// `t` is at position `start + t`. Angles are computed in f64.
    fn rope(&self, x: &mut [f32], heads: usize, start: usize) {
        let d = self.head_dim;
        for (t, row) in x.chunks_exact_mut(heads * d).enumerate() {
            let pos = (start + t) as f64;
            for head in row.chunks_exact_mut(d) {
                for (i, &f) in self.inv_freq.iter().enumerate() {
                    let (s, c) = (pos * f).sin_cos();
                    let (a, b) = (f64::from(head[2 * i]), f64::from(head[2 * i + 1]));
                    head[2 * i] = (a * c - b * s) as f32;
                    head[2 * i + 1] = (a * s + b * c) as f32;
                }
            }
        }
    }

    fn attention(&self, q: &[f32], keys: &[f32], values: &[f32], start: usize) -> Vec<f32> {
        let d = self.head_dim;
        let group = self.heads / self.kv_heads;
        let kv_w = self.kv_heads * d;
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = vec![0.0f32; q.len()];
        out.par_chunks_mut(self.heads * d)
            .zip(q.par_chunks(self.heads * d))
            .enumerate()
            .for_each(|(t, (out, q))| {
                let visible = start + t + 1;
                for head in 0..self.heads {
                    let kvh = head / group;
                    let qh = &q[head * d..(head + 1) * d];
                    let scores: Vec<f64> = (0..visible)
                        .map(|j| {
                            let kj = &keys[j * kv_w + kvh * d..j * kv_w + (kvh + 1) * d];
                            qh.iter()
                                .zip(kj)
                                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = weights.iter().sum();
                    let oh = &mut out[head * d..(head + 1) * d];
                    for (i, o) in oh.iter_mut().enumerate() {
                        let acc: f64 = weights
                            .iter()
                            .enumerate()
                            .map(|(j, w)| w * f64::from(values[j * kv_w + kvh * d + i]))
                            .sum();
                        *o = (acc / sum) as f32;
                    }
                }
            });
        out
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    x.chunks_exact(h)
        .flat_map(|row| {
            let mean_sq = row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                / h as f64;
            let scale = (1.0 / (mean_sq + f64::from(eps)).sqrt()) as f32;
            row.iter().zip(w).map(move |(&v, &g)| v * scale * g)
        })
        .collect()
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `x @ w^T` for `x` of `rows × w.cols`: each weight row is read once and dotted with every
/// input row while it sits in cache.
fn linear(x: &[f32], w: &Matrix) -> Vec<f32> {
    let rows = x.len() / w.cols;
    let mut by_output = vec![0.0f32; w.rows * rows];
    by_output
        .par_chunks_mut(rows)
        .zip(w.data.par_chunks_exact(w.cols))
        .for_each(|(out, wrow)| {
            for (o, xrow) in out.iter_mut().zip(x.chunks_exact(w.cols)) {
                *o = dot(wrow, xrow);
            }
        });
    let mut y = vec![0.0f32; rows * w.rows];
    for (o, col) in by_output.chunks_exact(rows).enumerate() {
        for (r, &v) in col.iter().enumerate() {
            y[r * w.rows + o] = v;
        }
    }
    y
}

/// Dot product with eight independent f32 lanes (fast even at opt-level 1), summed in f64.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for ((a, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    let s = (acc.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(tail)) as f32;
    s
}
