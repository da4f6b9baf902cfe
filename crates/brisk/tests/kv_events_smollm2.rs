//! `brisk serve --kv-events-config` with the real SmolLM2 model, read by an independent
//! decoder (Python, `pyzmq` + `msgspec`, written from vLLM's schema; installed by `.ci/run`).
//!
//! Two replicas of one model file under different paths: the decoder follows each one's
//! stream (filling the gap before it connected from the replay socket), its mirror of the
//! cached blocks matches the replica's own count after traffic that stores and evicts, the
//! hashes of a prompt's blocks are brisk's chained hashes salted by the file's content, and
//! both replicas name them alike.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{call, start_model, Server};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A replica publishing KV events on two fresh ports (`*` binds where `--host` does:
/// 127.0.0.1), with a pool of `pool_tokens`.
fn replica(model: &std::path::Path, pool_tokens: usize) -> (Server, String, String) {
    let (publish, replay) = (free_port(), free_port());
    let config = format!(
        r#"{{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:{publish}",
            "replay_endpoint": "tcp://*:{replay}", "topic": "kv"}}"#
    );
    let pool = pool_tokens.to_string();
    let server = start_model(
        model,
        &["--kv-events-config", &config, "--kv-cache-tokens", &pool],
        &[("BRISK_THREADS", "1")],
        "on http://",
    );
    assert!(
        server.stderr().contains(&format!(
            "KV events on tcp://127.0.0.1:{publish}, replay tcp://127.0.0.1:{replay}"
        )),
        "{}",
        server.stderr()
    );
    (
        server,
        format!("tcp://127.0.0.1:{publish}"),
        format!("tcp://127.0.0.1:{replay}"),
    )
}

/// The Python decoder, connected.
struct Subscriber {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(publish: &str, replay: &str) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/kv_events_subscriber.py"
        );
        let mut child = Command::new("python3")
            .args([script, publish, replay, "kv"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut s = Self {
            child,
            stdin,
            lines,
        };
        assert_eq!(
            s.next_line(),
            "ready",
            "the decoder did not start (pip install pyzmq msgspec)"
        );
        s
    }

    fn next_line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = self.child.kill();
                panic!("the decoder said nothing for 60 s")
            })
    }

    /// The decoder's state once its mirror holds as many blocks as the replica caches
    /// (`cached_blocks`), failing on any error it found on the way.
    fn report(&mut self, cached_blocks: usize) -> Value {
        for _ in 0..100 {
            writeln!(self.stdin).unwrap();
            let report: Value = serde_json::from_str(&self.next_line()).unwrap();
            assert_eq!(report["errors"], serde_json::json!([]), "{report}");
            if report["cached"].as_object().unwrap().len() == cached_blocks {
                return report;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the decoder's mirror never reached the replica's {cached_blocks} cached blocks");
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The replica's own count of cached blocks, from `/metrics`, once it is idle.
fn cached_blocks(server: &Server) -> usize {
    let (status, text) = call(server.addr, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix("brisk_kv_cached_blocks "))
        .expect("brisk_kv_cached_blocks in /metrics")
        .trim()
        .parse()
        .unwrap()
}

fn complete(server: &Server, prompt: &[u32]) {
    let body = serde_json::json!({"prompt": prompt, "max_tokens": 2, "temperature": 0});
    let (status, text) = call(
        server.addr,
        "POST",
        "/v1/completions",
        None,
        &body.to_string(),
    );
    assert_eq!(status, 200, "{text}");
}

/// The chained hashes brisk gives `tokens`' full blocks: `brisk_kv::hash` with the model
/// file's content salt (the first 8 bytes of its SHA-256, little-endian).
fn expected_hashes(model: &std::path::Path, tokens: &[u32]) -> Vec<String> {
    let digest = Sha256::digest(std::fs::read(model).unwrap());
    let salt = u64::from_le_bytes(digest[..8].try_into().unwrap());
    brisk_kv::hash::hash_blocks(tokens, 16, salt)
        .iter()
        .map(|h| h.0.to_string())
        .collect()
}

#[test]
fn smollm2_kv_events_reach_an_independent_decoder_and_replicas_agree() {
    let model = brisk_testkit::smollm2_path();
    let dir = tempfile::tempdir().unwrap();
    let other_path = dir.path().join("another-name.gguf");
    std::os::unix::fs::symlink(&model, &other_path).unwrap();

    // 20 blocks of 16 tokens: the third prompt below evicts the first two's blocks.
    let (a, a_pub, a_replay) = replica(&other_path, 320);
    let (b, b_pub, b_replay) = replica(&model, 320);
    let mut a_events = Subscriber::start(&a_pub, &a_replay);
    let mut b_events = Subscriber::start(&b_pub, &b_replay);

    let shared: Vec<u32> = (0..100).map(|i| 1000 + i * 7).collect();
    let first = [shared.clone(), (0..20).map(|i| 3000 + i).collect()].concat();
    let second = [shared.clone(), (0..30).map(|i| 5000 + i).collect()].concat();
    complete(&a, &first);
    complete(&a, &second);
    complete(&b, &first);

    let report = a_events.report(cached_blocks(&a));
    assert!(
        report["replayed"].as_u64().unwrap() >= 1,
        "the missed first batch: {report}"
    );
    assert_eq!(report["cleared"], 1, "{report}");
    let cached = report["cached"].as_object().unwrap();
    let want = expected_hashes(&model, &first);
    assert_eq!(want.len(), 7);
    for (i, h) in want.iter().enumerate() {
        let tokens: Vec<u32> = serde_json::from_value(cached[h].clone()).unwrap();
        assert_eq!(tokens, first[i * 16..(i + 1) * 16], "block {i}");
    }
    // The second prompt shared six blocks and stored its own after them.
    for h in &expected_hashes(&model, &second)[6..] {
        assert!(cached.contains_key(h), "{report}");
    }
    // The other replica, same file under another path: the same names.
    let other = b_events.report(cached_blocks(&b));
    for h in &want {
        assert!(
            other["cached"].as_object().unwrap().contains_key(h),
            "{other}"
        );
    }

    // Pressure: a prompt needing most of the pool evicts the earlier blocks.
    let big: Vec<u32> = (0..300).map(|i| 9000 + i).collect();
    complete(&a, &big);
    let report = a_events.report(cached_blocks(&a));
    assert!(report["removed"].as_u64().unwrap() > 0, "{report}");
    let cached = report["cached"].as_object().unwrap();
    for (i, h) in expected_hashes(&model, &big).iter().enumerate() {
        assert!(
            cached.contains_key(h),
            "block {i} of the last prompt: {report}"
        );
    }
    // Least recently used first, a sequence's tail before its head.
    assert!(!cached.contains_key(&want[6]), "evicted: {report}");
}
