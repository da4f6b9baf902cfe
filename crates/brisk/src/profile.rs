//! `brisk profile`: measure this machine's step latency with the real model and save the
//! fitted latency model (for `brisk serve --latency-model` and `brisk sim`).
//!
//! The grid and the fit live in `brisk-sim` (generic over the backend trait); this file loads
//! the model, reports progress and the held-out error, and writes the JSON. With
//! `--from-steps` it fits on steps a live server recorded instead (see `step_log.rs`).

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
    /// Fit on the steps recorded by `brisk serve --record-steps` in these files instead of
    /// measuring a grid (no model is loaded).
    #[arg(long, num_args = 1.., conflicts_with_all = ["quick", "repeats"])]
    from_steps: Vec<PathBuf>,
}

/// Most recorded steps a fit keeps (evenly spaced): plenty for five coefficients, and the
/// saved model stays small.
const MAX_RECORDED_SAMPLES: usize = 4000;

/// Runs `brisk profile`.
pub fn run(args: &ProfileArgs) -> Result<()> {
    if args.block_size == 0 {
        anyhow::bail!("--block-size must be at least 1");
    }
    let latency = if args.from_steps.is_empty() {
        measure_grid(args)?
    } else {
        fit_recorded(&args.from_steps)?
    };
    latency
        .save(&args.output)
        .with_context(|| "cannot save the latency model")?;
    print!("{}", describe(&latency));
    println!("saved to {}", args.output.display());
    Ok(())
}

/// Loads the model and measures the grid the flags choose.
fn measure_grid(args: &ProfileArgs) -> Result<LatencyModel> {
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
    measure(&model.backend, &path, &grid, args.block_size)
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

/// Fits a model on recorded steps, holding out every fourth, and says how much the engine
/// added to the backend's time.
fn fit_recorded(paths: &[PathBuf]) -> Result<LatencyModel> {
    let mut records = Vec::new();
    for p in paths {
        records.extend(crate::step_log::read(p)?);
    }
    let names = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    anyhow::ensure!(!records.is_empty(), "no steps recorded in {names}");
    let total: f64 = records.iter().map(|r| r.seconds).sum();
    let backend: f64 = records.iter().map(|r| r.execute_s).sum();
    eprintln!(
        "brisk: {} recorded steps, {:.1} s in all, {:.1}% of it in the backend",
        records.len(),
        total,
        100.0 * backend / total.max(f64::MIN_POSITIVE)
    );
    let stride = records.len().div_ceil(MAX_RECORDED_SAMPLES);
    let (mut train, mut holdout) = (Vec::new(), Vec::new());
    for (i, r) in records.iter().step_by(stride).enumerate() {
        if i % 4 == 3 {
            holdout.push(r.sample());
        } else {
            train.push(r.sample());
        }
    }
    let source = format!("steps recorded by brisk serve in {names}");
    Ok(LatencyModel::fit(source, &train, &holdout)?)
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
