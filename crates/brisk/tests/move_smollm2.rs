//! A request moved mid-stream between two `brisk serve` processes (SmolLM2, one compute
//! thread each, an API key): its client's stream on the source goes on, token for token
//! what an undisturbed run gives, greedy and seeded; a move to a replica that cannot be
//! reached, or that dies mid-copy, is refused and the request finishes where it was; a
//! replica of an etcd fleet that is told to stop migrates its running request to a peer; a
//! replica sending compressed K/V migrates at a fraction of the bytes.

mod common;

use std::io::{BufRead, BufReader};

use common::{call, send, start, Server};
use serde_json::{json, Value};

const KEY: &str = "fleet-key-7c1";

fn replica() -> Server {
    start(&["--api-key", KEY], &[("BRISK_THREADS", "1")])
}

fn body_of(text: &str) -> Value {
    serde_json::from_str(text.split("\r\n\r\n").nth(1).expect("a body")).expect("JSON")
}

fn completion(seed: Option<u64>, stream: bool, max_tokens: usize) -> String {
    let mut b = json!({"prompt": "Once upon a time, in a small village by the sea,",
                       "max_tokens": max_tokens, "ignore_eos": true, "stream": stream});
    match seed {
        Some(seed) => {
            b["temperature"] = json!(0.9);
            b["seed"] = json!(seed);
        }
        None => b["temperature"] = json!(0),
    }
    b.to_string()
}

/// Reads a streamed completion to its end, returning the text of every event.
fn read_stream(stream: &mut BufReader<std::net::TcpStream>) -> String {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).unwrap() == 0 {
            panic!("the stream ended without [DONE]; so far: {text:?}");
        }
        let Some(data) = line.trim().strip_prefix("data: ") else {
            continue; // chunk sizes and blank lines
        };
        if data == "[DONE]" {
            return text;
        }
        let event: Value = serde_json::from_str(data).unwrap();
        assert!(event.get("error").is_none(), "{event}");
        text.push_str(event["choices"][0]["text"].as_str().unwrap_or_default());
    }
}

/// Reads up to (and including) the first token event; returns its text.
fn first_token(stream: &mut BufReader<std::net::TcpStream>) -> String {
    loop {
        let mut line = String::new();
        assert!(
            stream.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
        if let Some(data) = line.trim().strip_prefix("data: ") {
            let event: Value = serde_json::from_str(data).unwrap();
            return event["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
    }
}

/// The engine id of the one request `server` holds.
fn only_request(server: &Server) -> u64 {
    let (status, text) = call(server.addr, "GET", "/internal/v1/requests", Some(KEY), "");
    assert_eq!(status, 200, "{text}");
    let ids = body_of(&text)["requests"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].as_u64().unwrap()
}

/// On `server`: the text of an undisturbed completion of 40 tokens (`seed` as in
/// [`completion`]), then the same completion streamed, read up to its first token: (the
/// undisturbed text, the stream, the first token's text, the request's engine id).
fn undisturbed_then_streaming(
    server: &Server,
    seed: Option<u64>,
) -> (String, BufReader<std::net::TcpStream>, String, u64) {
    undisturbed_then_streaming_n(server, seed, 40)
}

/// [`undisturbed_then_streaming`] with `max_tokens` tokens.
fn undisturbed_then_streaming_n(
    server: &Server,
    seed: Option<u64>,
    max_tokens: usize,
) -> (String, BufReader<std::net::TcpStream>, String, u64) {
    undisturbed_then_streaming_of(server, |stream| completion(seed, stream, max_tokens))
}

/// [`undisturbed_then_streaming`] for the completion `body(stream)` describes.
fn undisturbed_then_streaming_of(
    server: &Server,
    body: impl Fn(bool) -> String,
) -> (String, BufReader<std::net::TcpStream>, String, u64) {
    let (status, text) = call(
        server.addr,
        "POST",
        "/v1/completions",
        Some(KEY),
        &body(false),
    );
    assert_eq!(status, 200, "{text}");
    let want = body_of(&text)["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let mut stream = BufReader::new(send(
        server.addr,
        "POST",
        "/v1/completions",
        Some(KEY),
        &body(true),
    ));
    let first = first_token(&mut stream);
    (want, stream, first, only_request(server))
}

#[test]
fn smollm2_a_request_moves_between_replicas_and_its_stream_goes_on() {
    let (a, b) = (replica(), replica());
    for seed in [None, Some(5)] {
        let (want, mut stream, mut got, id) = undisturbed_then_streaming(&a, seed);
        let to = json!({"to": format!("http://{}", b.addr)}).to_string();
        // The internal routes want the key like every other.
        let path = format!("/internal/v1/requests/{id}/move");
        assert_eq!(call(a.addr, "POST", &path, None, &to).0, 401);
        let (status, text) = call(a.addr, "POST", &path, Some(KEY), &to);
        assert_eq!(status, 200, "{text}");
        let moved = body_of(&text);
        assert!(moved["kv_bytes"].as_u64().unwrap() > 0, "{moved}");
        got.push_str(&read_stream(&mut stream));
        assert_eq!(got, want, "seed {seed:?}");
        // The source holds nothing more; the destination finished it.
        let (_, text) = call(a.addr, "GET", "/internal/v1/requests", Some(KEY), "");
        assert_eq!(body_of(&text)["requests"], json!([]));
    }

    // Nowhere to go: refused, and the request finishes where it was.
    let (want, mut stream, mut got, id) = undisturbed_then_streaming(&a, None);
    let path = format!("/internal/v1/requests/{id}/move");
    let (status, text) = call(
        a.addr,
        "POST",
        &path,
        Some(KEY),
        r#"{"to": "http://127.0.0.1:1"}"#,
    );
    assert_eq!(status, 502, "{text}");
    got.push_str(&read_stream(&mut stream));
    assert_eq!(got, want);
    // Bytes that are not an export are refused by the import route.
    let (status, _) = call(
        b.addr,
        "POST",
        "/internal/v1/requests/import",
        Some(KEY),
        "garbage",
    );
    assert_eq!(status, 400);
}

/// A sample of `server`'s metrics (0 when absent).
fn metric(server: &Server, sample: &str) -> f64 {
    let (_, text) = call(server.addr, "GET", "/metrics", Some(KEY), "");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[test]
fn smollm2_a_destination_that_dies_mid_copy_leaves_the_request_running_at_its_source() {
    let a = replica();
    // Takes the connection, reads the start of the export, and drops it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dying = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = std::io::Read::read(&mut conn, &mut buf);
    });
    let (want, mut stream, mut got, id) = undisturbed_then_streaming(&a, None);
    let path = format!("/internal/v1/requests/{id}/move");
    let to = json!({"to": format!("http://{dying}")}).to_string();
    let (status, text) = call(a.addr, "POST", &path, Some(KEY), &to);
    assert_eq!(status, 502, "{text}");
    reader.join().unwrap();
    got.push_str(&read_stream(&mut stream));
    assert_eq!(got, want);
    assert_eq!(
        metric(&a, "brisk_move_failures_total{kind=\"migration\"}"),
        1.0
    );
}

#[test]
fn smollm2_a_draining_replica_migrates_its_running_request_and_the_stream_goes_on() {
    let etcd = brisk_testkit::etcd::Etcd::start();
    let endpoint = etcd.endpoint();
    let member = || {
        start(
            &[
                "--api-key",
                KEY,
                "--etcd",
                &endpoint,
                "--shutdown-timeout",
                "60",
            ],
            &[("BRISK_THREADS", "1")],
        )
    };
    let (mut a, b) = (member(), member());
    // Long enough to be still decoding when the drain starts.
    let (want, mut stream, mut got, _) = undisturbed_then_streaming_n(&a, Some(9), 300);
    a.signal("TERM");
    got.push_str(&read_stream(&mut stream));
    assert_eq!(got, want, "the stream goes on token for token");
    assert_eq!(metric(&b, "brisk_migrations_total{direction=\"in\"}"), 1.0);
    // Its engine freed at once, the source exits once the relayed stream is done.
    assert!(a.wait_exit(std::time::Duration::from_secs(30)).success());
    assert!(
        a.stderr().contains("draining moved 1 running requests"),
        "{}",
        a.stderr()
    );
}

/// A greedy completion of a 300-token prompt (18 full blocks to send ahead while it
/// decodes), 60 tokens long.
fn long_completion(stream: bool) -> String {
    let prompt: Vec<u32> = (0..300).map(|i| 200 + (i * 37) % 5000).collect();
    json!({"prompt": prompt, "max_tokens": 60, "ignore_eos": true, "temperature": 0,
           "stream": stream})
    .to_string()
}

#[test]
fn smollm2_a_migration_sends_full_blocks_ahead_and_stops_only_for_the_rest() {
    let (a, b) = (replica(), replica());
    let (want, mut stream, mut got, id) = undisturbed_then_streaming_of(&a, long_completion);
    let to = json!({"to": format!("http://{}", b.addr)}).to_string();
    let (status, text) = call(
        a.addr,
        "POST",
        &format!("/internal/v1/requests/{id}/move"),
        Some(KEY),
        &to,
    );
    assert_eq!(status, 200, "{text}");
    let moved = body_of(&text);
    assert!(moved["stages"].as_u64().unwrap() >= 1, "{moved}");
    let (ahead, at_stop) = (
        moved["kv_bytes_ahead"].as_u64().unwrap(),
        moved["kv_bytes"].as_u64().unwrap(),
    );
    assert!(at_stop * 4 < ahead, "most blocks travel ahead: {moved}");
    got.push_str(&read_stream(&mut stream));
    assert_eq!(got, want);
    assert_eq!(metric(&b, "brisk_migrations_total{direction=\"in\"}"), 1.0);
    // Blocks that are not a block export are refused.
    let (status, _) = call(b.addr, "POST", "/internal/v1/blocks", Some(KEY), "garbage");
    assert_eq!(status, 400);
    let (status, _) = call(b.addr, "POST", "/internal/v1/blocks", None, "garbage");
    assert_eq!(status, 401);
}

/// A replica sending its K/V as int4 (`--kv-transfer-dtype int4`) migrates a request with
/// pre-copy at a sixth of the lossless bytes, quantized and dequantized off the engine
/// threads, and the client's stream runs to its end (the tokens after the move may differ
/// from an undisturbed run's: the K/V were rounded).
#[test]
fn smollm2_a_compressed_migration_sends_a_fraction_of_the_bytes_and_the_stream_goes_on() {
    let a = start(
        &["--api-key", KEY, "--kv-transfer-dtype", "int4"],
        &[("BRISK_THREADS", "1")],
    );
    let b = replica();
    let (_, mut stream, mut got, id) = undisturbed_then_streaming_of(&a, long_completion);
    let to = json!({"to": format!("http://{}", b.addr)}).to_string();
    let path = format!("/internal/v1/requests/{id}/move");
    let (status, text) = call(a.addr, "POST", &path, Some(KEY), &to);
    assert_eq!(status, 200, "{text}");
    let moved = body_of(&text);
    assert!(moved["stages"].as_u64().unwrap() >= 1, "{moved}");
    got.push_str(&read_stream(&mut stream));
    assert!(!got.is_empty());
    assert_eq!(metric(&b, "brisk_migrations_total{direction=\"in\"}"), 1.0);
    // At most 21 blocks of SmolLM2-135M's f32 K/V (30 layers × 3 K/V heads × 64 × 2 × 4
    // bytes × 16 tokens each) lossless; int4 takes 16 % of it.
    let lossless = 21.0 * 16.0 * 46_080.0;
    let received = metric(&b, "brisk_kv_transfer_bytes_total{direction=\"received\"}");
    assert!(
        received > 0.0 && received < 0.2 * lossless,
        "{received} bytes"
    );
}
