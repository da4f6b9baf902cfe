//! `brisk sim` end to end on a hand-written latency model: flags parsed as the binary parses
//! them, the report built by `brisk bench`'s code, and runs that repeat bit for bit.

use brisk_scheduler::{LatencyCoefficients, LatencyModel};
use brisk_sim::{run_once, SimArgs};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

/// Roughly SmolLM2 on this machine: 8 ms a step, 0.5 ms per prompt token, 1 ms per decode.
fn model_file(dir: &std::path::Path) -> std::path::PathBuf {
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

fn args(dir: &std::path::Path, extra: &[&str]) -> SimArgs {
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

fn report(a: &SimArgs) -> brisk_bench::Report {
    let (cfg, _) = a.bench.validate().unwrap();
    let settings = a
        .settings(LatencyModel::load(&a.latency_model).unwrap())
        .unwrap();
    let base = brisk_bench::load_workload(&a.bench).unwrap();
    run_once(a, &cfg, &settings, &base, a.bench.rate).unwrap()
}

const WORKLOAD: &[&str] = &[
    "--synthetic",
    "prompt=uniform:20:600,output=uniform:4:80",
    "--num-requests",
    "300",
    "--burstiness",
    "0.25",
    "--slo",
    "ttft=1000,tpot=60",
];

#[test]
fn a_simulation_repeats_exactly_with_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    for policy in ["fcfs", "slo"] {
        let mut flags = WORKLOAD.to_vec();
        flags.extend(["--scheduling-policy", policy, "--rate", "6"]);
        let a = args(dir.path(), &flags);
        let (r1, r2) = (report(&a), report(&a));
        assert_eq!(r1.requests, r2.requests, "{policy}");
        assert_eq!(r1.latency, r2.latency, "{policy}");
        assert_eq!(r1.duration, r2.duration, "{policy}");
        assert_eq!(r1.completed, 300, "{policy}: every request completes");
        assert!(r1
            .requests
            .iter()
            .all(|r| r.output_len == r.output_len_requested));
        flags.extend(["--seed", "1"]);
        let other = report(&args(dir.path(), &flags));
        assert_ne!(
            other.requests, r1.requests,
            "{policy}: another seed, another run"
        );
    }
}

#[test]
fn the_slo_policy_serves_more_requests_within_their_objective_than_fcfs() {
    let dir = tempfile::tempdir().unwrap();
    let run = |policy: &str| {
        let mut flags = WORKLOAD.to_vec();
        flags.extend(["--scheduling-policy", policy, "--rate", "6"]);
        report(&args(dir.path(), &flags))
    };
    let (fcfs, slo) = (run("fcfs"), run("slo"));
    assert!(
        slo.slo_attainment > fcfs.slo_attainment,
        "slo {:.3} vs fcfs {:.3}",
        slo.slo_attainment,
        fcfs.slo_attainment
    );
}

#[test]
fn rejected_requests_are_failures_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = WORKLOAD.to_vec();
    flags.extend([
        "--scheduling-policy",
        "slo",
        "--reject-unattainable",
        "--rate",
        "40",
    ]);
    let r = report(&args(dir.path(), &flags));
    assert!(r.failed > 0, "an overload rejects some requests");
    assert_eq!(r.completed + r.failed, 300);
    let e = r.requests.iter().find_map(|q| q.error.clone()).unwrap();
    assert!(e.starts_with("HTTP 429"), "{e}");
}

#[test]
fn bad_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = WORKLOAD.to_vec();
    flags.extend(["--max-num-seqs", "600", "--rate", "6"]);
    let a = args(dir.path(), &flags);
    let e = a
        .settings(LatencyModel::load(&a.latency_model).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("max_num_batched_tokens"), "{e}");
    let missing = LatencyModel::load(&dir.path().join("none.json")).unwrap_err();
    assert!(missing.to_string().contains("none.json"), "{missing}");
}
