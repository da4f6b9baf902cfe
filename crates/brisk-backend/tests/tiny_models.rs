//! Tiny random models, written by the test in both layouts from the same weights, load into
//! the same function: GGUF (with llama.cpp's Q/K row permutation) and Hugging Face safetensors
//! agree, and every supported tensor type tracks the f32 model.

use brisk_backend::CpuBackend;
use brisk_gguf::GgmlDType;
use brisk_testkit::{Arch, TinyModel};
use brisk_types::{Backend, LogitsWanted, SeqStep, StepBatch};

const VOCAB: usize = 96;
const PROMPT: [u32; 12] = [5, 17, 3, 88, 42, 42, 7, 0, 95, 60, 1, 33];

fn all_logits(backend: &CpuBackend, tokens: &[u32]) -> Vec<f32> {
    let mut kv = backend.allocate_kv(4, 8).unwrap();
    let table = [3, 0, 2, 1];
    let batch = StepBatch {
        seqs: vec![SeqStep {
            tokens,
            start_pos: 0,
            block_table: &table,
            logits: LogitsWanted::All,
        }],
    };
    backend.execute(&batch, &mut kv).unwrap().logits
}

fn relative_error(a: &[f32], reference: &[f32]) -> f32 {
    let diff: f32 = a.iter().zip(reference).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f32 = reference.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

fn load_both(arch: Arch, dtype: GgmlDType) -> (CpuBackend, CpuBackend) {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::generate(arch, VOCAB, 7);
    model.write_hf_dir(&dir.path().join("hf")).unwrap();
    let gguf = dir.path().join("tiny.gguf");
    model.write_gguf(&gguf, dtype, &[]).unwrap();
    (
        CpuBackend::load(&gguf).unwrap(),
        CpuBackend::load(&dir.path().join("hf")).unwrap(),
    )
}

fn gguf_matches_safetensors(arch: Arch) {
    let (gguf, hf) = load_both(arch, GgmlDType::F32);
    assert_eq!(gguf.config().vocab_size, VOCAB);
    let (a, b) = (all_logits(&gguf, &PROMPT), all_logits(&hf, &PROMPT));
    assert_eq!(a.len(), PROMPT.len() * VOCAB);
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let spread = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        spread > 1.0,
        "logits are informative (max |logit| {spread})"
    );
    assert!(
        max_diff < 1e-3,
        "{arch:?}: GGUF and safetensors differ by {max_diff}"
    );
}

#[test]
fn llama_gguf_and_safetensors_give_the_same_logits() {
    gguf_matches_safetensors(Arch::Llama);
}

#[test]
fn qwen2_gguf_and_safetensors_give_the_same_logits() {
    gguf_matches_safetensors(Arch::Qwen2);
}

/// Undoes llama.cpp's Q/K permutation ahead of the writer, so the GGUF holds rows in Hugging
/// Face order: the layout bug the permutation-aware loader exists to avoid.
fn unpermute(values: &[f32], shape: &[usize], heads: usize) -> Vec<f32> {
    let (rows, cols) = (shape[0], shape[1]);
    let hd = rows / heads;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let (dst, src) = (h * hd + j * hd / 2 + i, h * hd + 2 * i + j);
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn a_gguf_without_the_qk_permutation_would_be_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = TinyModel::generate(Arch::Llama, VOCAB, 7);
    model.write_hf_dir(&dir.path().join("hf")).unwrap();
    let heads = (model.heads, model.kv_heads);
    for (name, (shape, values)) in &mut model.weights {
        let h = if name.ends_with("q_proj.weight") {
            heads.0
        } else if name.ends_with("k_proj.weight") {
            heads.1
        } else {
            continue;
        };
        *values = unpermute(values, shape, h);
    }
    let path = dir.path().join("unpermuted.gguf");
    model.write_gguf(&path, GgmlDType::F32, &[]).unwrap();
    let wrong = all_logits(&CpuBackend::load(&path).unwrap(), &PROMPT);
    let right = all_logits(&CpuBackend::load(&dir.path().join("hf")).unwrap(), &PROMPT);
    let err = relative_error(&wrong, &right);
    assert!(
        err > 0.05,
        "a layout error must show in the logits (relative error {err})"
    );
}

#[test]
fn every_supported_tensor_type_tracks_the_f32_model() {
    // (type, bound on the relative L2 error of all logits against f32).
    let cases = [
        (GgmlDType::F16, 0.01),
        (GgmlDType::BF16, 0.05),
        (GgmlDType::Q8_0, 0.05),
        (GgmlDType::Q6K, 0.1),
        (GgmlDType::Q5_0, 0.15),
        (GgmlDType::Q5_1, 0.15),
        (GgmlDType::Q5K, 0.15),
        (GgmlDType::Q4_0, 0.3),
        (GgmlDType::Q4_1, 0.3),
        (GgmlDType::Q4K, 0.3),
    ];
    for arch in [Arch::Llama, Arch::Qwen2] {
        let (_, hf) = load_both(arch, GgmlDType::F32);
        let reference = all_logits(&hf, &PROMPT);
        for (dtype, bound) in cases {
            let (quantized, _) = load_both(arch, dtype);
            let err = relative_error(&all_logits(&quantized, &PROMPT), &reference);
            eprintln!("{arch:?} {dtype:?}: relative error {err:.4}");
            assert!(
                err < bound,
                "{arch:?} {dtype:?}: relative error {err} >= {bound}"
            );
        }
    }
}
