//! `brisk serve` as a process with the real SmolLM2 model: bearer auth (`--api-key`),
//! graceful shutdown on SIGTERM and SIGINT (`--shutdown-timeout`), 503 while the model
//! loads, and a short soak (`brisk bench --soak`). HTTP is spoken by hand over TCP so the
//! tests control exactly when a streaming request is in flight.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `brisk serve` and everything it printed on stderr.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
    start_until(args, envs, "on http://")
}

/// Starts `brisk serve` and returns once it prints `marker` followed by its address:
/// `on http://` when it serves, `listening at http://` as soon as the port is bound.
fn start_until(args: &[&str], envs: &[(&str, &str)], marker: &'static str) -> Server {
    let model = brisk_testkit::smollm2_path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_brisk"))
        .args(["serve", "--port", "0", "--model", model.to_str().unwrap()])
        .args(["--kv-cache-tokens", "8192"])
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("BRISK_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("brisk starts");
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let log = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split(marker).nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("brisk serve did not start:\n{}", stderr.lock().unwrap())
        });
    Server {
        child,
        addr,
        stderr,
    }
}

impl Server {
    /// Sends `signal` (`TERM`, `INT`) to the server.
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits at most `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "brisk serve still running {limit:?} after the signal:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes one HTTP/1.1 request (connection closed after it) and returns the stream.
fn send(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// One request; returns the status and the whole response (head and body) as text.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut text = String::new();
    send(addr, method, path, key, body)
        .read_to_string(&mut text)
        .unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// Reads a streaming response up to its first `data: {…}` event; returns what was read.
fn read_to_first_event(stream: &mut BufReader<TcpStream>) -> String {
    let mut seen = String::new();
    while !seen.contains("data: {") {
        let mut line = String::new();
        assert!(
            stream.read_line(&mut line).unwrap() > 0,
            "stream ended early: {seen}"
        );
        seen.push_str(&line);
    }
    seen
}

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
