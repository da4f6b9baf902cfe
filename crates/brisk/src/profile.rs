//! `brisk profile`: measure this machine's step latency with the real model and save the
//! fitted latency model (for `brisk serve --latency-model` and `brisk sim`).
//!
//! The grid and the fit live in `brisk-sim` (generic over the backend trait); this file loads
//! the model, reports progress and the held-out error, and writes the JSON.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use brisk_scheduler::LatencyModel;
use brisk_sim::profile::{profile, ProfileGrid};
use brisk_types::Backend;

use crate::{loaded_model, ModelArgs};

/// Arguments of `brisk profile`.
#[derive(clap::Args, Debug)]
pub struct ProfileArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Where to write the latency model JSON.
    #[arg(
        long,
        short,
        env = "BRISK_PROFILE_OUTPUT",
        default_value = "latency-model.json"
    )]
    output: PathBuf,
    /// The quick grid (16 shapes, one run each; what `brisk serve` runs at start-up).
    #[arg(long, env = "BRISK_PROFILE_QUICK")]
    quick: bool,
    /// Timed runs per shape (the median is kept).
    #[arg(long, env = "BRISK_PROFILE_REPEATS")]
    repeats: Option<usize>,
    /// Tokens per KV block (as `brisk serve --block-size`).
    #[arg(long, default_value_t = 16, env = "BRISK_BLOCK_SIZE")]
    block_size: usize,
}

/// Runs `brisk profile`.
pub fn run(args: &ProfileArgs) -> Result<()> {
    if args.block_size == 0 {
        anyhow::bail!("--block-size must be at least 1");
    }
    let path = loaded_model::resolve_path(args.model.model.as_deref())?;
    let model = loaded_model::load(&path)?;
    let mut grid = if args.quick {
        ProfileGrid::quick()
    } else {
        ProfileGrid::full()
    };
    if let Some(r) = args.repeats {
        anyhow::ensure!(r >= 1, "--repeats must be at least 1");
        grid.repeats = r;
    }
    let latency = measure(&model.backend, &path, &grid, args.block_size)?;
    latency
        .save(&args.output)
        .with_context(|| "cannot save the latency model")?;
    print!("{}", describe(&latency));
    println!("saved to {}", args.output.display());
    Ok(())
}

/// Profiles `backend` over `grid`, showing progress on stderr.
pub fn measure<B: Backend>(
    backend: &B,
    model_path: &Path,
    grid: &ProfileGrid,
    block_size: usize,
) -> Result<LatencyModel> {
    let source = format!(
        "{} ({}, block size {block_size})",
        model_path.display(),
        backend.capabilities().name
    );
    let model = profile(backend, grid, block_size, &source, |done, total| {
        eprint!("\rbrisk: profiling step shapes {done}/{total}");
        let _ = std::io::stderr().flush();
    })?;
    eprintln!();
    Ok(model)
}

/// The coefficients and the held-out error, for people.
pub fn describe(m: &LatencyModel) -> String {
    let c = &m.coefficients;
    let mut s = format!(
        "step time = {:.3} ms + {:.4} ms/prompt token + {:.4} ms/decode + {:.6} ms/decode context token + {:.3e} ms/prompt attention pair\n",
        c.base_s * 1e3,
        c.per_prefill_token_s * 1e3,
        c.per_decode_seq_s * 1e3,
        c.per_decode_context_token_s * 1e3,
        c.per_prefill_attention_pair_s * 1e3,
    );
    if let Some(f) = m.fit {
        s += &format!(
            "fitted on {} shapes; on {} held-out shapes the prediction is off by {:.1}% on average, {:.1}% at worst\n",
            f.train_points,
            f.holdout_points,
            f.holdout_mean_abs_rel_error * 100.0,
            f.holdout_max_abs_rel_error * 100.0
        );
    }
    s
}
