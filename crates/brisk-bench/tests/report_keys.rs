//! The report's top-level keys are a stable interface (vLLM-compatible names): snapshot.

mod common;

use common::Reply;

#[test]
fn report_top_level_keys_are_stable() {
    let url = common::start(|_| Reply::Stream {
        ttft_ms: 5,
        itl_ms: 1,
        tokens: 3,
    });
    let r = common::bench(
        &url,
        &[
            "--synthetic",
            "prompt=4,output=3",
            "--num-requests",
            "2",
            "--slo",
            "ttft=1000,tpot=100",
        ],
    );
    let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let want = [
        "burstiness",
        "client_lag_ms",
        "command_line",
        "completed",
        "date",
        "duration",
        "endpoint",
        "failed",
        "ignored_length_requests",
        "max_concurrency",
        "mean_e2el_ms",
        "mean_itl_ms",
        "mean_tpot_ms",
        "mean_ttft_ms",
        "median_e2el_ms",
        "median_itl_ms",
        "median_tpot_ms",
        "median_ttft_ms",
        "model",
        "num_requests",
        "output_throughput",
        "p90_e2el_ms",
        "p90_itl_ms",
        "p90_tpot_ms",
        "p90_ttft_ms",
        "p99_e2el_ms",
        "p99_itl_ms",
        "p99_tpot_ms",
        "p99_ttft_ms",
        "prompt_len_mismatch_requests",
        "prompt_lengths_exact",
        "prompt_tokenizer",
        "rate",
        "request_goodput",
        "request_throughput",
        "requests",
        "seed",
        "slo",
        "slo_attainment",
        "slo_classes",
        "std_e2el_ms",
        "std_itl_ms",
        "std_tpot_ms",
        "std_ttft_ms",
        "total_input_tokens",
        "total_output_tokens",
        "total_token_throughput",
        "url",
        "workload",
    ];
    assert_eq!(keys, want);
    let mut req_keys: Vec<&str> = r["requests"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    req_keys.sort_unstable();
    assert_eq!(
        req_keys,
        [
            "e2el",
            "error",
            "itls",
            "lag_ms",
            "output_len",
            "output_len_requested",
            "prompt_len",
            "prompt_len_reported",
            "scheduled_s",
            "slo_class",
            "tpot",
            "ttft"
        ]
    );
    assert_eq!(r["slo"]["ttft_ms"], 1000.0);
    let mut class_keys: Vec<&str> = r["slo_classes"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    class_keys.sort_unstable();
    assert_eq!(
        class_keys,
        [
            "completed",
            "good",
            "mean_tpot_ms",
            "mean_ttft_ms",
            "median_tpot_ms",
            "median_ttft_ms",
            "name",
            "num_requests",
            "p90_tpot_ms",
            "p90_ttft_ms",
            "p99_tpot_ms",
            "p99_ttft_ms",
            "request_goodput",
            "rule",
            "slo_attainment",
            "tpot_ms",
            "ttft_ms"
        ]
    );
}

#[test]
fn bad_slo_classes_stop_the_run_with_the_flag_and_reason() {
    let err = common::bench_err(
        "http://127.0.0.1:9",
        &[
            "--synthetic",
            "prompt=4,output=3",
            "--slo-class",
            "short:ttft=100,max-prompt=8",
        ],
    );
    assert!(err.starts_with("invalid --slo-class:"), "{err}");
    assert!(err.contains("match no class"), "{err}");
}

#[test]
fn plot_draws_several_reports_into_one_small_png() {
    let url = common::start(|_| Reply::Stream {
        ttft_ms: 5,
        itl_ms: 1,
        tokens: 3,
    });
    let dir = tempfile::tempdir().unwrap();
    let (a, b, png) = (
        dir.path().join("a.json"),
        dir.path().join("b.json"),
        dir.path().join("p.png"),
    );
    for (path, seed) in [(&a, "1"), (&b, "2")] {
        let r = common::bench(
            &url,
            &[
                "--synthetic",
                "prompt=4,output=3",
                "--num-requests",
                "5",
                "--seed",
                seed,
            ],
        );
        std::fs::write(path, r.to_string()).unwrap();
    }
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    common::bench_raw(&["plot", &s(&a), &s(&b), "--output", &s(&png)]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() < 100_000, "{} bytes", bytes.len());
}

#[test]
fn plot_draws_sweeps_of_two_servers_against_rate_and_refuses_mixed_inputs() {
    let fast = common::start(|_| Reply::Stream {
        ttft_ms: 5,
        itl_ms: 1,
        tokens: 3,
    });
    let slow = common::start(|_| Reply::Stream {
        ttft_ms: 40,
        itl_ms: 10,
        tokens: 3,
    });
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let mut sweeps = Vec::new();
    for (name, url) in [("fast", &fast), ("slow", &slow)] {
        let out = dir.path().join(format!("{name}.json"));
        common::bench_raw(&[
            "--url",
            url,
            "--model",
            "fake",
            "--no-progress",
            "--synthetic",
            "prompt=4,output=3",
            "--num-requests",
            "4",
            "--sweep-rates",
            "50,100",
            "--slo",
            "ttft=20,tpot=50",
            "--output",
            &s(&out),
        ]);
        sweeps.push(s(&out));
    }
    let png = dir.path().join("curves.png");
    common::bench_raw(&[
        "plot",
        &sweeps[0],
        &sweeps[1],
        "--labels",
        "brisk,llama",
        "--output",
        &s(&png),
    ]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() < 100_000, "{} bytes", bytes.len());

    let report = dir.path().join("fast.rate-50.json");
    let err = |argv: &[&str]| common::try_bench_raw(argv).unwrap_err();
    let mixed = err(&["plot", &sweeps[0], &s(&report), "--output", &s(&png)]);
    assert!(mixed.contains("not both"), "{mixed}");
    let labels = err(&["plot", &sweeps[0], "--labels", "a,b", "--output", &s(&png)]);
    assert!(labels.contains("2 labels for 1 files"), "{labels}");
}
