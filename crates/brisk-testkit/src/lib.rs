//! Test support shared by brisk's crates.
//!
//! - [`smollm2_path`]: where the real reference model lives; tests that need it fail loudly
//!   when it is missing rather than skipping.
//! - [`TinyModel`]: a deterministic random Llama or Qwen2 model (fixed seed), written both as a
//!   GGUF file — with llama.cpp's Q/K row permutation and any tensor type — and as a Hugging
//!   Face directory (`config.json` + `model.safetensors`), from the same weights, so that the
//!   two loaders can be checked against each other in milliseconds.
//! - [`CountingBackend`]: a model-free backend for scheduler, engine and profiler tests.
#![deny(missing_docs)]

pub mod etcd;
mod mock;
mod tiny;

pub use mock::CountingBackend;
pub use tiny::{Arch, TinyModel};

use std::path::PathBuf;

/// File name of the default model in the models directory.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The SmolLM2-135M-Instruct Q4_1 GGUF: `$BRISK_MODEL_PATH`, else
/// `$BRISK_MODELS_DIR/<file>`, else `~/.cache/brisk/models/<file>`.
///
/// # Panics
/// When the file is absent, with instructions: the tests that call this depend on the real
/// model and must not pass without it.
pub fn smollm2_path() -> PathBuf {
    let path = if let Some(p) = std::env::var_os("BRISK_MODEL_PATH") {
        PathBuf::from(p)
    } else if let Some(dir) = std::env::var_os("BRISK_MODELS_DIR") {
        PathBuf::from(dir).join(SMOLLM2_FILE)
    } else {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        cache.join("brisk/models").join(SMOLLM2_FILE)
    };
    assert!(
        path.is_file(),
        "the SmolLM2 model is not at {}: run `cargo run --release -p brisk -- download` \
         (or `bash .ci/run`), or set BRISK_MODEL_PATH",
        path.display()
    );
    path
}
