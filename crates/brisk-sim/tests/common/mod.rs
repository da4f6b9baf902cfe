//! What the simulator's tests share: a hand-written latency model and flags parsed as the
//! binary parses them.

use std::path::{Path, PathBuf};

use brisk_scheduler::{LatencyCoefficients, LatencyModel};
use brisk_sim::{run_once, SimArgs};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

/// Roughly SmolLM2 on this machine: 8 ms a step, 0.5 ms per prompt token, 1 ms per decode.
pub fn model_file(dir: &Path) -> PathBuf {
    let m = LatencyModel::from_coefficients(LatencyCoefficients {
        base_s: 0.008,
        per_prefill_token_s: 0.0005,
        per_decode_seq_s: 0.001,
        per_decode_context_token_s: 1e-7,
        per_prefill_attention_pair_s: 1e-9,
    });
    let path = dir.join("latency.json");
    m.save(&path).unwrap();
    path
}

/// `brisk sim` flags: the latency model and output in `dir`, then `extra`.
pub fn args(dir: &Path, extra: &[&str]) -> SimArgs {
    let model = model_file(dir);
    let out = dir.join("report.json");
    let mut argv = vec![
        "sim",
        "--url",
        "sim://",
        "--latency-model",
        model.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().sim
}

/// One simulated run, as `brisk sim` makes it.
pub fn report(a: &SimArgs) -> brisk_bench::Report {
    let (cfg, _) = a.bench.validate().unwrap();
    let settings = a
        .settings(LatencyModel::load(&a.latency_model).unwrap())
        .unwrap();
    let base = brisk_bench::load_workload(&a.bench).unwrap();
    run_once(a, &cfg, &settings, &base, a.bench.rate).unwrap()
}
