//! A model ready to serve: its backend and its tokenizer, loaded from one path.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use brisk_backend::{detect_format, CpuBackend, ModelFormat};
use brisk_gguf::GgufFile;
use brisk_tokenizer::Tokenizer;

use crate::model_fetch;

/// A loaded model.
pub struct LoadedModel {
    /// The backend that runs it.
    pub backend: CpuBackend,
    /// Its tokenizer and chat template.
    pub tokenizer: Tokenizer,
}

/// Resolves `--model`: the given path, or the default model (fetched on first use).
pub fn resolve_path(model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(p) => Ok(p.to_path_buf()),
        None => model_fetch::ensure(&model_fetch::DEFAULT_MODEL, false),
    }
}

/// Loads the backend and tokenizer of `path`.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let (backend, tokenizer) = match detect_format(path)? {
        ModelFormat::Gguf => {
            let file = GgufFile::open(path)?;
            let tokenizer = Tokenizer::from_gguf(&file)
                .with_context(|| format!("{}: cannot build the tokenizer", path.display()))?;
            (CpuBackend::from_gguf(&file)?, tokenizer)
        }
        ModelFormat::HfDirectory => {
            let tokenizer = Tokenizer::from_hf_dir(path)
                .with_context(|| format!("{}: cannot build the tokenizer", path.display()))?;
            (CpuBackend::from_hf_dir(path)?, tokenizer)
        }
    };
    Ok(LoadedModel { backend, tokenizer })
}
