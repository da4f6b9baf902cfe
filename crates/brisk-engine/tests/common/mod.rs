//! What the engine core's tests on tiny generated models share: a clock that stands still and
//! the tiny models themselves, written once per test directory and seed.

#![allow(dead_code)]

use std::path::Path;

use brisk_backend::CpuBackend;
use brisk_engine::Clock;
use brisk_gguf::GgmlDType;
use brisk_testkit::{Arch, TinyModel};

/// Vocabulary of the tiny models.
pub const VOCAB: usize = 96;

/// Time stands still: only the steps matter.
pub struct Frozen;

impl Clock for Frozen {
    fn now(&self) -> f64 {
        0.0
    }
}

/// The tiny Llama generated from `seed`, as a CPU backend (its GGUF written into `dir` the
/// first time; the same seed is the same model).
pub fn tiny_backend(dir: &Path, seed: u64) -> CpuBackend {
    let path = dir.join(format!("tiny-{seed}.gguf"));
    if !path.exists() {
        TinyModel::generate(Arch::Llama, VOCAB, seed)
            .write_gguf(&path, GgmlDType::F32, &[])
            .unwrap();
    }
    CpuBackend::load(&path).unwrap()
}
