//! The latency model `brisk serve` uses when none is given: profiled once per model and
//! machine setting, then kept.
//!
//! The `slo` policy (the default) needs a latency model. Profiling takes seconds, so the
//! quick profile made at a first start is saved under `~/.cache/brisk/latency`
//! (`$BRISK_LATENCY_DIR` overrides), keyed by what changes step times: the model's content,
//! the compute threads, the kernel set asked for, the KV cache's element type and the block
//! size. A later start with the same key loads it. A cache that cannot be written costs only
//! the next start's profiling.

use std::path::{Path, PathBuf};

use anyhow::Result;
use brisk_scheduler::LatencyModel;
use brisk_types::Backend;

/// Where kept latency models live.
fn dir() -> PathBuf {
    match std::env::var_os("BRISK_LATENCY_DIR") {
        Some(d) => PathBuf::from(d),
        None => crate::model_fetch::cache_root().join("latency"),
    }
}

/// The file name for a model (by content salt) under these settings and this process's
/// `BRISK_THREADS` and `BRISK_KERNELS`.
pub fn key(content_salt: u64, kv_dtype: &str, block_size: usize) -> String {
    let threads = brisk_backend::compute_threads();
    let kernels = std::env::var("BRISK_KERNELS").unwrap_or_else(|_| "auto".into());
    let kernels: String = kernels
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{content_salt:016x}-{threads}t-{kernels}-{kv_dtype}-bs{block_size}.json")
}

/// The kept model for `key`, else a quick profile of `backend`, kept for the next start.
pub fn load_or_profile<B: Backend>(
    backend: &B,
    model_path: &Path,
    key: &str,
    block_size: usize,
) -> Result<LatencyModel> {
    let path = dir().join(key);
    if let Ok(model) = LatencyModel::load(&path) {
        eprintln!(
            "brisk: latency model from {} (profiled on an earlier start; delete it to profile again, or pass --latency-model)",
            path.display()
        );
        return Ok(model);
    }
    eprintln!(
        "brisk: no --latency-model given: profiling this machine quickly (once: kept in {})",
        path.display()
    );
    let grid = brisk_sim::profile::ProfileGrid::quick();
    let model = crate::profile::measure(backend, model_path, &grid, block_size)?;
    eprint!("brisk: {}", crate::profile::describe(&model));
    if let Err(e) = keep(&model, &path) {
        eprintln!(
            "brisk: could not keep the latency model in {}: {e:#}",
            path.display()
        );
    }
    Ok(model)
}

/// Writes `model` to `path` through a temporary file, so that a concurrent start reads a
/// whole model or none.
fn keep(model: &LatencyModel, path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("latency"),
        std::process::id()
    ));
    model.save(&tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
