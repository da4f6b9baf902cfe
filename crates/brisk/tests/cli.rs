//! The `brisk` command line: flags are validated with messages that name them, and
//! `brisk generate` runs the real model end to end.

use std::process::Command;

fn brisk(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brisk"))
        .args(args)
        .env(
            "BRISK_LATENCY_DIR",
            std::env::temp_dir().join("brisk-test-latency"),
        )
        .output()
        .expect("brisk runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_flags_are_validated_with_clear_messages() {
    let (ok, _, err) = brisk(&["serve", "--block-size", "0", "--model", "/nonexistent.gguf"]);
    assert!(!ok);
    assert!(err.contains("--block-size"), "{err}");
    let (ok, _, err) = brisk(&["serve", "--kv-cache-memory", "lots"]);
    assert!(!ok);
    assert!(
        err.contains("lots") && err.contains("kv-cache-memory"),
        "{err}"
    );
    let (ok, _, err) = brisk(&["serve", "--request-timeout", "-3"]);
    assert!(!ok);
    assert!(err.contains("--request-timeout"), "{err}");
    let (ok, _, err) = brisk(&["serve", "--max-waiting", "0"]);
    assert!(!ok);
    assert!(err.contains("--max-waiting"), "{err}");
    let (ok, _, err) = brisk(&["serve", "--kv-cache-dtype", "fp8"]);
    assert!(!ok);
    assert!(
        err.contains("fp8") && err.contains("f16") && err.contains("int8"),
        "{err}"
    );
    let (ok, _, err) = brisk(&["serve", "--model", "/nonexistent.gguf"]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent.gguf") && err.contains("no such model"),
        "{err}"
    );
}

#[test]
fn generate_reports_a_missing_model_file() {
    let (ok, _, err) = brisk(&["generate", "--model", "/nonexistent.gguf", "--prompt", "hi"]);
    assert!(!ok);
    assert!(err.contains("no such model"), "{err}");
}

#[test]
fn smollm2_generate_prints_the_completion_and_timing() {
    let model = brisk_testkit::smollm2_path();
    let model = model.to_str().unwrap();
    let (ok, out, err) = brisk(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "2",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), " Paris.");
    assert!(
        err.contains("prompt tokens: 5, generated tokens: 2"),
        "{err}"
    );
    assert!(
        err.contains("time to first token") && err.contains("tokens/s"),
        "{err}"
    );
}

#[test]
fn slo_flags_are_validated() {
    let (ok, _, err) = brisk(&[
        "serve",
        "--reject-unattainable",
        "--scheduling-policy",
        "fcfs",
        "--model",
        "/nonexistent.gguf",
    ]);
    assert!(!ok);
    assert!(err.contains("--scheduling-policy slo"), "{err}");
    let (ok, _, err) = brisk(&["serve", "--ttft-slo=-3"]);
    assert!(!ok);
    assert!(err.contains("milliseconds"), "{err}");
}

/// A hand-written latency model for `brisk sim`, written into `dir`.
fn latency_model(dir: &std::path::Path) -> std::path::PathBuf {
    let model = dir.join("latency.json");
    std::fs::write(
        &model,
        r#"{"source": "test", "coefficients": {"base_s": 0.008, "per_prefill_token_s": 0.0005,
            "per_decode_seq_s": 0.001, "per_decode_context_token_s": 0.0,
            "per_prefill_attention_pair_s": 0.0}, "fit": null}"#,
    )
    .unwrap();
    model
}

#[test]
fn sim_writes_the_bench_report_from_a_latency_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = latency_model(dir.path());
    let out = dir.path().join("report.json");
    let (ok, stdout, err) = brisk(&[
        "sim",
        "--latency-model",
        model.to_str().unwrap(),
        "--synthetic",
        "prompt=100,output=20",
        "--num-requests",
        "50",
        "--rate",
        "5",
        "--slo",
        "ttft=500,tpot=50",
        "--scheduling-policy",
        "slo",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("SLO attainment"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for key in [
        "completed",
        "request_goodput",
        "slo_attainment",
        "median_ttft_ms",
        "p99_tpot_ms",
    ] {
        assert!(report.get(key).is_some(), "{key} missing");
    }
    assert_eq!(report["completed"], 50);
    assert_eq!(report["url"], "sim://slo");
    let (ok, _, err) = brisk(&[
        "sim",
        "--latency-model",
        "/nonexistent.json",
        "--synthetic",
        "prompt=1,output=1",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("/nonexistent.json"), "{err}");
    // What the simulator cannot play is refused, not ignored.
    let (ok, _, err) = brisk(&[
        "sim",
        "--latency-model",
        model.to_str().unwrap(),
        "--synthetic",
        "prompt=1,output=1",
        "--natural-output",
    ]);
    assert!(!ok);
    assert!(err.contains("--natural-output"), "{err}");
}

#[test]
fn sim_fleets_need_a_replica_and_report_their_router() {
    let dir = tempfile::tempdir().unwrap();
    let model = latency_model(dir.path());
    let out = dir.path().join("report.json");
    let sim = |replicas: &str| {
        brisk(&[
            "sim",
            "--latency-model",
            model.to_str().unwrap(),
            "--synthetic",
            "prompt=100,output=20",
            "--num-requests",
            "20",
            "--rate",
            "5",
            "--replicas",
            replicas,
            "--router",
            "round-robin",
            "--output",
            out.to_str().unwrap(),
        ])
    };
    let (ok, _, err) = sim("0");
    assert!(!ok);
    assert!(err.contains("--replicas: must be at least 1"), "{err}");
    let (ok, _, err) = brisk(&[
        "sim",
        "--latency-model",
        model.to_str().unwrap(),
        "--synthetic",
        "prompt=100,output=20",
        "--replicas",
        "2",
        "--router-affinity-ratio",
        "0.5",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("--router-affinity-ratio: must be a number ≥ 1"),
        "{err}"
    );
    // `brisk route` refuses the same before it starts.
    let (ok, _, err) = brisk(&[
        "route",
        "--replica",
        "http://127.0.0.1:9",
        "--affinity-ratio",
        "0.5",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--affinity-ratio") && err.contains("is not a number ≥ 1"),
        "{err}"
    );
    let (ok, stdout, err) = sim("4");
    assert!(ok, "{err}");
    assert!(
        stdout.contains("fleet: 4 replicas, router round-robin"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["completed"], 20);
    assert_eq!(
        report["fleet"]["requests_by_replica"],
        serde_json::json!([5, 5, 5, 5])
    );
}

#[test]
fn profile_fits_a_latency_model_on_recorded_steps() {
    // Steps as `brisk serve --record-steps` writes them, timed by a known model: decodes of
    // 1–16 sequences and prompt chunks of 16–256 tokens at various positions.
    let (base, per_prompt, per_decode, per_ctx) = (0.004, 0.0015, 0.0018, 3e-6);
    let mut lines = String::new();
    for i in 0..200u64 {
        let decodes = (i % 16 + 1) as f64;
        let context = decodes * (50.0 + (i % 7) as f64 * 40.0);
        let prompt = if i % 3 == 0 {
            16.0 * (i % 16 + 1) as f64
        } else {
            0.0
        };
        let seconds = base + per_prompt * prompt + per_decode * decodes + per_ctx * context;
        lines += &format!(
            r#"{{"step":{},"at_s":{},"shape":{{"prefill_tokens":{prompt},"decode_seqs":{decodes},"decode_context":{context},"prefill_attention":0.0}},"execute_s":{},"seconds":{seconds}}}"#,
            i + 1,
            i as f64 * 0.05,
            seconds * 0.97
        );
        lines.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.jsonl");
    std::fs::write(&steps, &lines).unwrap();
    let out = dir.path().join("calibrated.json");
    let (ok, stdout, err) = brisk(&[
        "profile",
        "--from-steps",
        steps.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("held-out"), "{stdout}");
    assert!(
        err.contains("200 recorded steps") && err.contains("97.0%"),
        "{err}"
    );
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let c = &model["coefficients"];
    for (key, want) in [
        ("base_s", base),
        ("per_prefill_token_s", per_prompt),
        ("per_decode_seq_s", per_decode),
        ("per_decode_context_token_s", per_ctx),
    ] {
        let got = c[key].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-6 * want, "{key}: {got} vs {want}");
    }
    assert_eq!(model["fit"]["holdout_points"], 50);

    // A line that is not a step record is named; so is a missing file.
    std::fs::write(&steps, format!("{lines}{{\"step\": \"x\"}}\n")).unwrap();
    let (ok, _, err) = brisk(&["profile", "--from-steps", steps.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("steps.jsonl:201"), "{err}");
    let (ok, _, err) = brisk(&["profile", "--from-steps", "/nonexistent.jsonl"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent.jsonl"), "{err}");
}

#[test]
fn auth_and_shutdown_flags_are_validated() {
    let (ok, _, err) = brisk(&["serve", "--api-key", " ", "--model", "/nonexistent.gguf"]);
    assert!(!ok);
    assert!(err.contains("--api-key") && err.contains("empty"), "{err}");
    let (ok, _, err) = brisk(&["serve", "--auth-health-and-metrics"]);
    assert!(!ok);
    assert!(err.contains("--api-key"), "{err}");
    let (ok, _, err) = brisk(&["serve", "--shutdown-timeout=-1"]);
    assert!(!ok);
    assert!(err.contains("seconds"), "{err}");
    // The key given in the environment never shows in --help.
    let out = Command::new(env!("CARGO_BIN_EXE_brisk"))
        .args(["serve", "--help"])
        .env("BRISK_API_KEY", "hunter2-secret")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--api-key"), "{help}");
    assert!(!help.contains("hunter2-secret"), "{help}");
}

#[test]
fn smollm2_serve_refuses_speculative_configs_it_cannot_run() {
    let (ok, _, err) = brisk(&[
        "serve",
        "--speculative-config",
        r#"{"method": "eagle", "num_speculative_tokens": 2}"#,
    ]);
    assert!(!ok);
    assert!(
        err.contains("--speculative-config") && err.contains("eagle"),
        "{err}"
    );
    // A draft model that is not there, and one that does not share the served tokenizer:
    // the server says so and exits instead of serving without it.
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.gguf");
    let vocab = brisk_tokenizer::testing::TINY_VOCAB_SIZE;
    brisk_testkit::TinyModel::generate(brisk_testkit::Arch::Llama, vocab, 1)
        .write_gguf(
            &tiny,
            brisk_gguf::GgmlDType::F32,
            &brisk_tokenizer::testing::tiny_gguf_tokenizer_metadata(),
        )
        .unwrap();
    let model = brisk_testkit::smollm2_path();
    for (draft, why) in [
        (
            "/nonexistent-draft.gguf".to_string(),
            "/nonexistent-draft.gguf",
        ),
        (
            tiny.display().to_string(),
            "share the served model's tokenizer",
        ),
    ] {
        let config = format!(r#"{{"model": "{draft}", "num_speculative_tokens": 3}}"#);
        let (ok, _, err) = brisk(&[
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--port",
            "0",
            "--speculative-config",
            &config,
        ]);
        assert!(!ok, "served with {draft}");
        assert!(err.contains(why), "{err}");
    }
}
