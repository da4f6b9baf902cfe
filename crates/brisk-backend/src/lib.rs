//! The CPU backend: loads Llama-family models from GGUF files or Hugging Face directories and
//! runs packed batches over a paged KV pool that the caller owns.
//!
//! candle-core decodes every GGUF block type and multiplies dense (f32/f16/bf16) matrices;
//! quantized matrices of every type are brought to brisk's own batched int8 kernels
//! (`kernels`: cache-blocked, runtime-detected AVX2 with a scalar twin that agrees bit for
//! bit). The parts that must know about paging (attention over the block tables, K/V writes,
//! RoPE at per-token positions) are written here over plain slices. Each step runs on the
//! backend's own thread pool (`BRISK_THREADS`, default one per core).

#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
mod attention;
mod config;
mod error;
mod kernels;
mod kv_pool;
mod kv_wire;
mod math;
mod model;
mod rope;
mod weights;

use std::path::Path;

pub use config::{Architecture, ModelConfig, RopeScaling, RopeStyle};

/// The kernels and attention, exposed for the criterion benchmarks in `benches/`; not a
/// stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::attention::{paged_attention, write_kv, TokenPlace};
    pub use crate::kernels::{peak_macs_per_second, KernelFormat, QuantMatrix};
}
pub use error::ModelError;
pub use kernels::{KernelChoice, KernelPath};
pub use kv_pool::{CpuKvPool, KvCacheDtype};
pub use kv_wire::{compress as compress_kv, decompress as decompress_kv, KvTransferDtype};
pub use model::{compute_threads, CpuBackend};

use brisk_gguf::GgufFile;
use brisk_types::TokenId;

/// How a model path is laid out on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// A single `.gguf` file.
    Gguf,
    /// A Hugging Face directory: `config.json`, `*.safetensors`, `tokenizer.json`.
    HfDirectory,
}

/// Decides the format of `path`: a directory is a Hugging Face checkout, a file is GGUF.
pub fn detect_format(path: &Path) -> Result<ModelFormat, ModelError> {
    if path.is_dir() {
        Ok(ModelFormat::HfDirectory)
    } else if path.is_file() {
        Ok(ModelFormat::Gguf)
    } else {
        Err(ModelError::NotFound {
            path: path.to_path_buf(),
        })
    }
}

impl CpuBackend {
    /// Loads a model from a GGUF file already opened (so that its tokenizer can be read from
    /// the same parse).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let config = ModelConfig::from_gguf(file)?;
        let weights = weights::load_gguf(file, &config)?;
        let mut stop = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
            if let Some(id) = file.get_u64(key).and_then(|v| TokenId::try_from(v).ok()) {
                if !stop.contains(&id) {
                    stop.push(id);
                }
            }
        }
        Ok(Self::new(config, weights, stop))
    }

    /// Loads a model from a Hugging Face directory.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, ModelError> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ModelError::NotFound { path: config_path });
        }
        let config = ModelConfig::from_hf_config(&config_path)?;
        let weights = weights::load_safetensors(dir, &config)?;
        let stop = hf_eos_ids(dir);
        Ok(Self::new(config, weights, stop))
    }

    /// Loads whatever `path` holds.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        match detect_format(path)? {
            ModelFormat::Gguf => Self::from_gguf(&GgufFile::open(path)?),
            ModelFormat::HfDirectory => Self::from_hf_dir(path),
        }
    }
}

/// EOS ids of a Hugging Face checkout: `generation_config.json` first, then `config.json`;
/// either may hold one id or a list.
fn hf_eos_ids(dir: &Path) -> Vec<TokenId> {
    for name in ["generation_config.json", "config.json"] {
        let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let ids: Vec<TokenId> = match &json["eos_token_id"] {
            serde_json::Value::Number(n) => n
                .as_u64()
                .into_iter()
                .filter_map(|v| v.try_into().ok())
                .collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_u64().and_then(|v| v.try_into().ok()))
                .collect(),
            _ => continue,
        };
        if !ids.is_empty() {
            return ids;
        }
    }
    Vec::new()
}
