//! `brisk serve` as a process with the real SmolLM2 model: bearer auth (`--api-key`),
//! graceful shutdown on SIGTERM and SIGINT (`--shutdown-timeout`), 503 while the model
//! loads, and a short soak (`brisk bench --soak`). HTTP is spoken by hand over TCP so the
//! tests control exactly when a streaming request is in flight.

mod common;

use std::io::{BufReader, Read};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{call, read_to_first_event, send, start, start_until};

const COMPLETION: &str = r#"{"prompt": "1, 2, 3,", "max_tokens": 2, "temperature": 0}"#;

#[test]
fn smollm2_serve_checks_the_api_key_and_drains_on_sigterm() {
    let key = "brisk-test-key-5f2c";
    let mut server = start(&["--shutdown-timeout", "60"], &[("BRISK_API_KEY", key)]);
    let addr = server.addr;

    // /health and /metrics stay open by default.
    assert_eq!(call(addr, "GET", "/health", None, "").0, 200);
    assert_eq!(call(addr, "GET", "/metrics", None, "").0, 200);

    for (path, presented) in [
        ("/v1/completions", None),
        ("/v1/completions", Some("brisk-test-key-5f2d")),
        ("/v1/models", Some("brisk")),
        ("/tokenize", None),
    ] {
        let (status, text) = call(addr, "POST", path, presented, COMPLETION);
        assert_eq!(status, 401, "{path} with {presented:?}: {text}");
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("www-authenticate: bearer"), "{text}");
        assert!(
            text.contains(r#""type":"authentication_error""#)
                && text.contains(r#""code":"invalid_api_key""#),
            "{text}"
        );
    }
    let (status, text) = call(addr, "POST", "/v1/completions", Some(key), COMPLETION);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"choices\""), "{text}");
    assert!(text.contains("x-request-id: req-"), "{text}");

    // A streaming request in flight when SIGTERM arrives still completes.
    let body = r#"{"prompt": "Once upon a time", "max_tokens": 48, "ignore_eos": true,
                   "temperature": 0, "stream": true}"#;
    let mut stream = BufReader::new(send(addr, "POST", "/v1/completions", Some(key), body));
    let mut seen = read_to_first_event(&mut stream);
    let signalled = Instant::now();
    server.signal("TERM");
    // New connections are refused (or answered 503) while the stream drains.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr) {
            Err(_) => break,
            Ok(_) if Instant::now() > deadline => {
                let (status, text) = call(addr, "GET", "/v1/models", Some(key), "");
                assert_eq!(status, 503, "a request during the drain: {text}");
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    stream.read_to_string(&mut seen).unwrap();
    assert!(
        seen.contains("data: [DONE]"),
        "the stream completes: {seen}"
    );
    assert!(seen.contains(r#""finish_reason":"length""#), "{seen}");
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.stderr()
    );
    assert!(signalled.elapsed() < Duration::from_secs(60));
    let log = server.stderr();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(!log.contains(key), "the key must not be logged:\n{log}");
}

#[test]
fn smollm2_serve_aborts_requests_still_running_after_the_shutdown_timeout() {
    let key = "another-key";
    let mut server = start(
        &[
            "--api-key",
            key,
            "--auth-health-and-metrics",
            "--shutdown-timeout",
            "1",
        ],
        &[],
    );
    let addr = server.addr;
    assert_eq!(call(addr, "GET", "/health", None, "").0, 401);
    assert_eq!(call(addr, "GET", "/metrics", None, "").0, 401);
    assert_eq!(call(addr, "GET", "/health", Some(key), "").0, 200);

    // Far more tokens than can be generated in the one second of grace.
    let body = r#"{"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true,
                   "temperature": 0, "stream": true}"#;
    let mut stream = BufReader::new(send(addr, "POST", "/v1/completions", Some(key), body));
    let mut seen = read_to_first_event(&mut stream);
    let signalled = Instant::now();
    server.signal("INT");
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.stderr()
    );
    // The connection is closed rather than left hanging; the stream never claimed to finish.
    let _ = stream.read_to_string(&mut seen);
    assert!(!seen.contains("data: [DONE]"), "{seen}");
    assert!(signalled.elapsed() < Duration::from_secs(20));
    let log = server.stderr();
    assert!(log.contains("SIGINT received"), "{log}");
    assert!(log.contains("still in flight after 1s"), "{log}");
}

#[test]
fn smollm2_serve_answers_503_while_loading_then_serves() {
    // Without --latency-model the slo policy profiles the machine at start-up, which keeps the
    // server loading for seconds after its port is bound.
    let mut server = start_until(&["--scheduling-policy", "slo"], &[], "listening at http://");
    let addr = server.addr;
    let (status, text) = call(addr, "GET", "/health", None, "");
    assert_eq!(status, 503, "{text}\n{}", server.stderr());
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    let (status, text) = call(addr, "POST", "/v1/completions", None, COMPLETION);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains(r#""code":"loading""#), "{text}");

    let deadline = Instant::now() + Duration::from_secs(180);
    while call(addr, "GET", "/health", None, "").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.stderr().contains("brisk: serving "),
        "{}",
        server.stderr()
    );
    let (status, text) = call(addr, "POST", "/v1/completions", None, COMPLETION);
    assert_eq!(status, 200, "{text}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn smollm2_serve_stops_promptly_when_signalled_while_loading() {
    let mut server = start_until(&["--scheduling-policy", "slo"], &[], "listening at http://");
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.stderr()
    );
    assert!(
        !server.stderr().contains("brisk: serving "),
        "{}",
        server.stderr()
    );
}

#[test]
fn smollm2_serve_survives_a_short_soak_of_cancelled_and_malformed_requests() {
    let server = start(&["--max-waiting", "16", "--request-timeout", "60"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("soak.json");
    let bench = Command::new(env!("CARGO_BIN_EXE_brisk"))
        .args(["bench", "--url", &format!("http://{}", server.addr)])
        .args(["--synthetic", "prompt=uniform:20:200,output=uniform:4:48"])
        .args(["--num-requests", "48", "--rate", "8", "--seed", "3"])
        .args([
            "--soak",
            "--cancel-fraction",
            "0.3",
            "--malformed-fraction",
            "0.3",
        ])
        // The run is too short for a resident-memory baseline; the soak script measures it.
        .args(["--soak-warmup", "1000", "--no-progress", "--output"])
        .arg(&report_path)
        .output()
        .expect("brisk bench runs");
    let printed = String::from_utf8_lossy(&bench.stdout).into_owned()
        + &String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success(), "{printed}\n{}", server.stderr());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let count = |key: &str| report[key].as_u64().unwrap();
    let sent: Vec<u64> = report["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(sent.iter().sum::<u64>(), 48, "{printed}");
    assert!(
        sent.iter().all(|&n| n > 0),
        "every kind was sent: {printed}"
    );
    assert_eq!(count("unanswered"), 0, "{printed}");
    assert_eq!(count("malformed_rejected"), sent[2], "{printed}");
    assert_eq!(
        count("completed") + count("refused") + count("cancelled") + count("malformed_rejected"),
        48,
        "{printed}"
    );
    let verdicts: Vec<(String, serde_json::Value)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["ok"].clone()))
        .collect();
    for (name, ok) in &verdicts {
        if name.starts_with("resident memory") {
            assert!(ok.is_null(), "{name}: {printed}");
        } else {
            assert_eq!(ok, &serde_json::Value::Bool(true), "{name}: {printed}");
        }
    }
}

/// Without flags `brisk serve` runs the `slo` policy on a latency model it profiles at its
/// first start and keeps (here in a directory of the test's own); the next start with the same
/// model and threads loads it instead of profiling again, and a third with other threads
/// profiles its own.
#[test]
fn smollm2_serve_keeps_its_quick_latency_profile_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let latency_dir = dir.path().to_str().unwrap();
    let run = |threads: &str| {
        let mut server = start(
            &[],
            &[
                ("BRISK_LATENCY_DIR", latency_dir),
                ("BRISK_THREADS", threads),
            ],
        );
        let (status, out) = call(server.addr, "POST", "/v1/completions", None, COMPLETION);
        assert_eq!(status, 200, "{out}");
        // Output lengths are learned by default: the finished request is one example.
        let (_, metrics) = call(server.addr, "GET", "/metrics", None, "");
        assert!(
            metrics.contains("brisk_output_length_examples_total 1"),
            "{metrics}"
        );
        server.signal("TERM");
        server.wait_exit(Duration::from_secs(20));
        server.stderr()
    };
    let first = run("1");
    assert!(first.contains("profiling this machine quickly"), "{first}");
    assert!(
        first.contains("scheduling slo with output-length prediction"),
        "{first}"
    );
    let kept: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(kept.len(), 1, "one model kept: {kept:?}");
    let second = run("1");
    assert!(second.contains("latency model from"), "{second}");
    assert!(!second.contains("profiling"), "{second}");
    let third = run("2");
    assert!(third.contains("profiling this machine quickly"), "{third}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}
