//! `brisk sim` end to end on a hand-written latency model: flags parsed as the binary parses
//! them, the report built by `brisk bench`'s code, and runs that repeat bit for bit.

mod common;

use brisk_scheduler::LatencyModel;
use common::{args, report};

const WORKLOAD: &[&str] = &[
    "--synthetic",
    "prompt=uniform:20:600,output=uniform:4:80",
    "--num-requests",
    "300",
    "--burstiness",
    "0.25",
    "--slo",
    "ttft=1000,tpot=60",
    "--send-slo",
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
    flags.extend([
        "--max-num-seqs",
        "600",
        "--max-num-batched-tokens",
        "512",
        "--rate",
        "6",
    ]);
    let a = args(dir.path(), &flags);
    let e = a
        .settings(LatencyModel::load(&a.latency_model).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("max_num_batched_tokens"), "{e}");
    let missing = LatencyModel::load(&dir.path().join("none.json")).unwrap_err();
    assert!(missing.to_string().contains("none.json"), "{missing}");
}

/// A client flooding the server with long prompts beside a light client with short ones, each
/// class its own client (`--send-user`): fair share keeps the light client within its
/// objective, and FCFS alone queues it behind the flood.
#[test]
fn fair_share_holds_a_flooding_client_to_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let light = |extra: &[&str]| {
        let mut flags = vec![
            "--synthetic",
            "prompt=mix:1500:40:0.8,output=16",
            "--num-requests",
            "200",
            "--rate",
            "4",
            "--slo-class",
            "flood:ttft=60000,tpot=1000,min-prompt=1000",
            "--slo-class",
            "light:ttft=1000,tpot=1000",
            "--send-user",
            "--send-slo",
            "--scheduling-policy",
            "fcfs",
        ];
        flags.extend_from_slice(extra);
        let r = report(&args(dir.path(), &flags));
        let class = r.slo_classes.iter().find(|c| c.name == "light").unwrap();
        assert!(class.num_requests > 20);
        class.slo_attainment
    };
    let (fair, unfair) = (light(&[]), light(&["--no-fair-share"]));
    assert!(fair >= 0.9, "fair share: light attainment {fair:.3}");
    assert!(unfair < 0.5, "without it: light attainment {unfair:.3}");
}

/// The simulated server knows a request's objective only as `brisk bench` would tell the real
/// one: with `--send-slo` its class's (over the server's defaults), else the server's defaults,
/// which are `brisk serve`'s (150 ms TPOT under `slo`, none under `fcfs`).
#[test]
fn objectives_reach_the_simulated_server_as_brisk_bench_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let objectives = |extra: &[&str]| {
        let mut flags = vec![
            "--synthetic",
            "prompt=20,output=4",
            "--num-requests",
            "3",
            "--slo",
            "ttft=1000,tpot=60",
        ];
        flags.extend_from_slice(extra);
        let a = args(dir.path(), &flags);
        let (cfg, _) = a.bench.validate().unwrap();
        let workload = brisk_bench::load_workload(&a.bench).unwrap();
        let sent = brisk_sim::SentFields {
            send_slo: a.bench.send_slo,
            send_user: a.bench.send_user,
            server_slo: a.slo_defaults(),
        };
        let requests = brisk_sim::sim_requests(&workload, &cfg.slo, 0, 0, sent).unwrap();
        assert_eq!(requests.len(), 3);
        requests[0].slo.map(|s| (s.ttft, s.tpot))
    };
    assert_eq!(objectives(&[]), Some((f64::INFINITY, 0.15)));
    assert_eq!(objectives(&["--send-slo"]), Some((1.0, 0.06)));
    assert_eq!(objectives(&["--ttft-slo", "3000"]), Some((3.0, 0.15)));
    assert_eq!(objectives(&["--scheduling-policy", "fcfs"]), None);
    assert_eq!(objectives(&["--tpot-slo", "none"]), None);
}

/// Speculative decoding in the simulator: with drafts accepted 90 % of the time one stream's
/// TPOT falls (a step is mostly fixed cost in this latency model); every request still gets
/// exactly its tokens; a draft-less acceptance turns it off after the first tries.
#[test]
fn speculation_shortens_tpot_where_drafts_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut flags = vec![
            "--synthetic",
            "prompt=64,output=64",
            "--num-requests",
            "20",
            "--rate",
            "0.5",
        ];
        flags.extend_from_slice(extra);
        report(&args(dir.path(), &flags))
    };
    let tpot = |r: &brisk_bench::Report| r.latency["median_tpot_ms"];
    let spec = r#"{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 2, "prompt_lookup_min": 1}"#;
    let plain = run(&[]);
    let likely = run(&["--speculative-config", spec, "--draft-acceptance", "0.9"]);
    let never = run(&["--speculative-config", spec, "--draft-acceptance", "0"]);
    for r in [&plain, &likely, &never] {
        assert!(r.requests.iter().all(|q| q.output_len == 64));
    }
    assert!(
        tpot(&likely) < 0.7 * tpot(&plain),
        "{} vs {}",
        tpot(&likely),
        tpot(&plain)
    );
    assert!(
        tpot(&never) < 1.2 * tpot(&plain),
        "{} vs {}",
        tpot(&never),
        tpot(&plain)
    );
}
