//! The hyper-parameters of a Llama-family model, read from GGUF metadata or `config.json`.

use std::path::Path;

use brisk_gguf::GgufFile;
use serde::Deserialize;

use crate::ModelError;

/// The architectures brisk implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 1/2/3, TinyLlama, SmolLM: no attention biases.
    Llama,
    /// Qwen2 / Qwen2.5: biases on the Q, K and V projections.
    Qwen2,
}

/// How rotary embeddings pair up the dimensions of a head.
///
/// Hugging Face checkpoints rotate dimension `i` with `i + head_dim/2` ("NeoX" style).
/// llama.cpp's converter permutes the Q and K rows of `llama` models so that adjacent
/// dimensions `2i, 2i+1` pair up instead, and leaves `qwen2` unpermuted. Rather than undo the
/// permutation, brisk applies the rotation that matches the layout of the file it loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: GGUF `llama` files.
    Interleaved,
    /// Pairs `(i, i + d/2)`: Hugging Face layout, GGUF `qwen2`.
    Neox,
}

/// RoPE frequency scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (linear interpolation).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3.1 scaling: per-frequency divisors, computed from the HF config or given as
    /// GGUF's `rope_freqs.weight` tensor.
    FreqFactors(Vec<f32>),
}

/// Hyper-parameters of a loaded model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub architecture: Architecture,
    /// Residual width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// K/V heads.
    pub num_kv_heads: usize,
    /// Dimension of a head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub max_context: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
}

impl ModelConfig {
    pub(crate) fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |message: String| ModelError::InvalidConfig {
            path: path.to_path_buf(),
            message,
        };
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_layers == 0 {
            return Err(bad("zero heads or layers".into()));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(bad(format!(
                "{} query heads are not a multiple of {} KV heads",
                self.num_heads, self.num_kv_heads
            )));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(bad(format!("head dimension {} is not even", self.head_dim)));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.intermediate_size == 0 {
            return Err(bad("zero vocabulary, hidden or FFN size".into()));
        }
        Ok(())
    }

    /// Reads the configuration from GGUF metadata (`{arch}.*` keys).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let path = file.path();
        let arch_name = file
            .get_str("general.architecture")
            .ok_or_else(|| missing(path, "general.architecture"))?;
        let architecture = match arch_name {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(ModelError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    architecture: other.to_string(),
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let int = |k: &str| -> Result<usize, ModelError> {
            let k = key(k);
            file.get_u64(&k)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| missing(path, &k))
        };
        let hidden_size = int("embedding_length")?;
        let num_heads = int("attention.head_count")?;
        let num_kv_heads = match file.get_u64(&key("attention.head_count_kv")) {
            Some(v) => usize::try_from(v).map_err(|_| missing(path, "head_count_kv"))?,
            None => num_heads,
        };
        let head_dim = match file.get_u64(&key("attention.key_length")) {
            Some(v) => usize::try_from(v).map_err(|_| missing(path, "key_length"))?,
            None if num_heads > 0 => hidden_size / num_heads,
            None => 0,
        };
        let vocab_size = match file.get_u64(&key("vocab_size")) {
            Some(v) => usize::try_from(v).map_err(|_| missing(path, "vocab_size"))?,
            None => file
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array().map(<[_]>::len))
                .or_else(|| file.tensor("token_embd.weight").map(|t| t.shape()[0]))
                .ok_or_else(|| missing(path, "tokenizer.ggml.tokens"))?,
        };
        #[expect(clippy::cast_possible_truncation)]
        let float = |k: &str, default: f32| file.get_f64(&key(k)).map_or(default, |v| v as f32);
        let rope_scaling = match file.get_str(&key("rope.scaling.type")) {
            Some("linear") => RopeScaling::Linear {
                factor: float("rope.scaling.factor", 1.0),
            },
            None | Some("none") => RopeScaling::None,
            // Llama 3.1 files carry their factors as the `rope_freqs.weight` tensor, which the
            // weight loader reads; any other scheme would silently change the model.
            Some(other) => {
                return Err(ModelError::InvalidConfig {
                    path: path.to_path_buf(),
                    message: format!("unsupported RoPE scaling {other:?}"),
                })
            }
        };
        let config = Self {
            architecture,
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            num_layers: int("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            max_context: int("context_length")?,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: float("rope.freq_base", 10_000.0),
            rope_scaling,
            rope_style: match architecture {
                Architecture::Llama => RopeStyle::Interleaved,
                Architecture::Qwen2 => RopeStyle::Neox,
            },
        };
        config.validate(path)?;
        Ok(config)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_config(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        let raw: HfConfig = serde_json::from_str(&text).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            message: format!("invalid config.json: {e}"),
        })?;
        let architecture = match raw.model_type.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(ModelError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    architecture: other.to_string(),
                })
            }
        };
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        let head_dim = raw
            .head_dim
            .unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1));
        let rope_scaling = match raw.rope_scaling {
            None => RopeScaling::None,
            Some(s) => match s.kind() {
                "linear" => RopeScaling::Linear {
                    factor: s.factor.unwrap_or(1.0),
                },
                "llama3" => {
                    RopeScaling::FreqFactors(llama3_freq_factors(&s, head_dim, raw.rope_theta))
                }
                "default" => RopeScaling::None,
                other => {
                    return Err(ModelError::InvalidConfig {
                        path: path.to_path_buf(),
                        message: format!("unsupported RoPE scaling {other:?}"),
                    })
                }
            },
        };
        let config = Self {
            architecture,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            max_context: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta,
            rope_scaling,
            rope_style: RopeStyle::Neox,
        };
        config.validate(path)?;
        Ok(config)
    }
}

fn missing(path: &Path, key: &str) -> ModelError {
    ModelError::MissingMetadata {
        path: path.to_path_buf(),
        key: key.to_string(),
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f32,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    rope_scaling: Option<HfRopeScaling>,
}

fn default_max_positions() -> usize {
    2048
}
fn default_eps() -> f32 {
    1e-6
}
fn default_theta() -> f32 {
    10_000.0
}

#[derive(Deserialize)]
struct HfRopeScaling {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    factor: Option<f32>,
    low_freq_factor: Option<f32>,
    high_freq_factor: Option<f32>,
    original_max_position_embeddings: Option<f32>,
}

impl HfRopeScaling {
    fn kind(&self) -> &str {
        self.rope_type
            .as_deref()
            .or(self.legacy_type.as_deref())
            .unwrap_or("default")
    }
}

/// Llama 3.1's frequency-dependent divisors, as `transformers` computes them.
fn llama3_freq_factors(s: &HfRopeScaling, head_dim: usize, theta: f32) -> Vec<f32> {
    let factor = s.factor.unwrap_or(8.0);
    let low = s.low_freq_factor.unwrap_or(1.0);
    let high = s.high_freq_factor.unwrap_or(4.0);
    let original = s.original_max_position_embeddings.unwrap_or(8192.0);
    let low_wavelen = original / low;
    let high_wavelen = original / high;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf(2.0 * i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}
