//! Deterministic tiny models in both on-disk layouts.

use std::collections::BTreeMap;
use std::path::Path;

use brisk_gguf::{GgmlDType, GgufWriter, MetaValue};
use candle_core::quantized::{GgmlDType as CandleDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which architecture to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama: no biases, tied embeddings.
    Llama,
    /// Qwen2: Q/K/V biases, a separate output matrix.
    Qwen2,
}

/// A tiny random model, its weights in Hugging Face naming and row-major layout.
#[derive(Clone, Debug)]
pub struct TinyModel {
    /// Architecture.
    pub arch: Arch,
    /// Vocabulary size.
    pub vocab: usize,
    /// Residual width (a multiple of 256, so every k-quant type can hold its rows).
    pub hidden: usize,
    /// Feed-forward width (a multiple of 256).
    pub ffn: usize,
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// K/V heads.
    pub kv_heads: usize,
    /// Context length.
    pub context: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Weights by Hugging Face name: (shape, values).
    pub weights: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl TinyModel {
    /// Generates a model from `seed`. `vocab` is the vocabulary size (match the tokenizer
    /// the test writes, if any).
    pub fn generate(arch: Arch, vocab: usize, seed: u64) -> Self {
        let mut m = Self {
            arch,
            vocab,
            hidden: 256,
            ffn: 512,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            context: 512,
            rope_theta: 10_000.0,
            eps: 1e-5,
            weights: BTreeMap::new(),
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let (h, f) = (m.hidden, m.ffn);
        let hd = h / m.heads;
        let (qd, kvd) = (m.heads * hd, m.kv_heads * hd);
        let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
            let n: usize = shape.iter().product();
            let values = (0..n)
                .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
                .collect();
            m.weights.insert(name, (shape, values));
        };
        // Scales keep activations O(1) through the layers so logits stay informative.
        let w = |fan_in: usize| 1.7 / (fan_in as f32).sqrt();
        add("model.embed_tokens.weight".into(), vec![vocab, h], 1.0, 0.0);
        add("model.norm.weight".into(), vec![h], 0.2, 1.0);
        if arch == Arch::Qwen2 {
            add("lm_head.weight".into(), vec![vocab, h], w(h), 0.0);
        }
        for l in 0..m.layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            add(p("input_layernorm.weight"), vec![h], 0.2, 1.0);
            add(p("post_attention_layernorm.weight"), vec![h], 0.2, 1.0);
            add(p("self_attn.q_proj.weight"), vec![qd, h], w(h) * 2.0, 0.0);
            add(p("self_attn.k_proj.weight"), vec![kvd, h], w(h) * 2.0, 0.0);
            add(p("self_attn.v_proj.weight"), vec![kvd, h], w(h), 0.0);
            add(p("self_attn.o_proj.weight"), vec![h, qd], w(qd), 0.0);
            add(p("mlp.gate_proj.weight"), vec![f, h], w(h), 0.0);
            add(p("mlp.up_proj.weight"), vec![f, h], w(h), 0.0);
            add(p("mlp.down_proj.weight"), vec![h, f], w(f), 0.0);
            if arch == Arch::Qwen2 {
                add(p("self_attn.q_proj.bias"), vec![qd], 0.5, 0.0);
                add(p("self_attn.k_proj.bias"), vec![kvd], 0.5, 0.0);
                add(p("self_attn.v_proj.bias"), vec![kvd], 0.5, 0.0);
            }
        }
        m
    }

    fn arch_name(&self) -> &'static str {
        match self.arch {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// Writes `config.json` and `model.safetensors` (f32) into `dir`.
    pub fn write_hf_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let config = serde_json::json!({
            "model_type": self.arch_name(),
            "architectures": [match self.arch { Arch::Llama => "LlamaForCausalLM", Arch::Qwen2 => "Qwen2ForCausalLM" }],
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.context,
            "rms_norm_eps": self.eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.arch == Arch::Llama,
            "eos_token_id": 2,
            "bos_token_id": 1,
        });
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
        let bytes: BTreeMap<&str, (Vec<usize>, Vec<u8>)> = self
            .weights
            .iter()
            .map(|(name, (shape, v))| {
                let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (name.as_str(), (shape.clone(), b))
            })
            .collect();
        let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(name, (shape, b))| {
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                        .expect("consistent shape");
                (*name, view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
            .map_err(std::io::Error::other)
    }

    /// The GGUF image of this model with matrices (and the embedding) stored as `dtype` and
    /// norms and biases as f32. `extra` metadata (e.g. a tokenizer) is appended.
    pub fn gguf_writer(&self, dtype: GgmlDType, extra: &[(String, MetaValue)]) -> GgufWriter {
        let arch = self.arch_name();
        let mut w = GgufWriter::new();
        let u = |v: usize| MetaValue::U32(u32::try_from(v).expect("tiny"));
        w.meta("general.architecture", MetaValue::String(arch.into()))
            .meta("general.name", MetaValue::String(format!("tiny-{arch}")))
            .meta(&format!("{arch}.embedding_length"), u(self.hidden))
            .meta(&format!("{arch}.feed_forward_length"), u(self.ffn))
            .meta(&format!("{arch}.block_count"), u(self.layers))
            .meta(&format!("{arch}.attention.head_count"), u(self.heads))
            .meta(&format!("{arch}.attention.head_count_kv"), u(self.kv_heads))
            .meta(&format!("{arch}.context_length"), u(self.context))
            .meta(
                &format!("{arch}.attention.layer_norm_rms_epsilon"),
                MetaValue::F32(self.eps),
            )
            .meta(
                &format!("{arch}.rope.freq_base"),
                MetaValue::F32(self.rope_theta),
            )
            .meta(&format!("{arch}.vocab_size"), u(self.vocab));
        for (k, v) in extra {
            w.meta(k, v.clone());
        }
        for (hf_name, (shape, values)) in &self.weights {
            let name = gguf_name(hf_name);
            let values = match (self.arch, hf_name.as_str()) {
                (Arch::Llama, n) if n.ends_with("q_proj.weight") => {
                    permute_rows(values, shape, self.heads)
                }
                (Arch::Llama, n) if n.ends_with("k_proj.weight") => {
                    permute_rows(values, shape, self.kv_heads)
                }
                _ => values.clone(),
            };
            let is_matrix = shape.len() == 2;
            let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
            if is_matrix && dtype != GgmlDType::F32 {
                w.tensor(&name, &dims, dtype, encode(&values, shape, dtype));
            } else {
                w.tensor_f32(&name, shape, &values);
            }
        }
        w
    }

    /// Writes the GGUF file (see [`TinyModel::gguf_writer`]).
    pub fn write_gguf(
        &self,
        path: &Path,
        dtype: GgmlDType,
        extra: &[(String, MetaValue)],
    ) -> std::io::Result<()> {
        std::fs::write(path, self.gguf_writer(dtype, extra).to_bytes())
    }
}

/// llama.cpp's converter reorders each head's Q/K rows so that RoPE rotates adjacent pairs:
/// GGUF row `2i + j` of a head is Hugging Face row `j * head_dim/2 + i`.
fn permute_rows(values: &[f32], shape: &[usize], heads: usize) -> Vec<f32> {
    let (rows, cols) = (shape[0], shape[1]);
    let hd = rows / heads;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let dst = h * hd + 2 * i + j;
                let src = h * hd + j * hd / 2 + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").expect("layer tensor");
    let (layer, name) = rest.split_once('.').expect("layer index");
    let short = match name {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("no GGUF name for {other}"),
    };
    format!("blk.{layer}.{short}")
}

/// Encodes row-major f32 values as ggml blocks of `dtype` (candle's quantizers).
fn encode(values: &[f32], shape: &[usize], dtype: GgmlDType) -> Vec<u8> {
    let t = Tensor::from_slice(values, shape, &Device::Cpu).expect("shape matches");
    let candle = CandleDType::from(dtype);
    let q = QTensor::quantize(&t, candle).expect("quantizable shape");
    q.data().expect("cpu tensor").into_owned()
}
