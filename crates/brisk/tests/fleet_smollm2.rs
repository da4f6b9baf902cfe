//! `brisk route` in front of real `brisk serve` replicas with the real SmolLM2 model, found
//! through a real etcd or listed: membership follows leases (a killed replica leaves within
//! its lease, a new one joins, an etcd restart loses nothing for long), requests follow the
//! blocks the replicas report in their KV events, and replicas that fail or answer garbage
//! are retried around and isolated.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brisk_testkit::etcd::Etcd;
use common::{call, start, start_router, Server};

const ONE_THREAD: &[(&str, &str)] = &[("BRISK_THREADS", "1")];
const EVENTS: &str =
    r#"{"enable_kv_cache_events": true, "endpoint": "tcp://*:0", "replay_endpoint": "tcp://*:0"}"#;

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics(router: &Server) -> String {
    call(router.addr, "GET", "/metrics", None, "").1
}

/// A per-replica gauge of the router, if the replica is a member.
fn gauge(metrics: &str, name: &str, replica: &str) -> Option<f64> {
    let prefix = format!("{name}{{replica=\"{replica}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

fn is_available(router: &Server, replica: &str) -> bool {
    gauge(&metrics(router), "brisk_router_replica_available", replica) == Some(1.0)
}

fn is_member(router: &Server, replica: &str) -> bool {
    gauge(&metrics(router), "brisk_router_replica_available", replica).is_some()
}

/// A chat request through `addr`: its status and the replica that served it.
fn chat(addr: SocketAddr, system: &str, question: &str) -> (u16, String) {
    let body = serde_json::json!({
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": 4, "temperature": 0,
    });
    let (status, text) = call(
        addr,
        "POST",
        "/v1/chat/completions",
        None,
        &body.to_string(),
    );
    let served_by = text
        .lines()
        .find_map(|l| l.strip_prefix("x-brisk-replica: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    (status, served_by)
}

fn etcd_key(replica: &Server) -> String {
    format!("brisk/replicas/{}", replica.addr)
}

fn url(replica: &Server) -> String {
    format!("http://{}", replica.addr)
}

fn prefix_hits(replica: &Server) -> f64 {
    let (_, text) = call(replica.addr, "GET", "/metrics", None, "");
    text.lines()
        .find_map(|l| l.strip_prefix("brisk_prefix_cache_hits_total "))
        .expect("the counter")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn smollm2_replicas_join_and_leave_through_etcd_and_the_router_outlives_etcd_restarts() {
    let mut etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let replica = || start(&["--etcd", &endpoint, "--etcd-ttl", "2"], ONE_THREAD);
    let a = replica();
    let router = start_router(&["--etcd", &endpoint, "--health-interval", "0.2"]);
    wait_until(Duration::from_secs(10), "a joins", || {
        is_available(&router, &etcd_key(&a))
    });
    assert_eq!(chat(router.addr, "Be brief.", "Hi"), (200, etcd_key(&a)));

    let b = replica();
    wait_until(Duration::from_secs(10), "b joins", || {
        is_available(&router, &etcd_key(&b))
    });

    // SIGKILL: no goodbye; the lease (2 s) runs out.
    let a_key = etcd_key(&a);
    let killed = Instant::now();
    drop(a);
    wait_until(Duration::from_secs(6), "a leaves", || {
        !is_member(&router, &a_key)
    });
    eprintln!("a left the rotation {:?} after SIGKILL", killed.elapsed());
    for q in ["One", "Two", "Three"] {
        assert_eq!(chat(router.addr, "Be brief.", q), (200, etcd_key(&b)));
    }

    // etcd loses everything: b registers again, the router's watch resumes, and a replica
    // registering in the new etcd joins.
    etcd.restart_with_fresh_data();
    let c = replica();
    wait_until(Duration::from_secs(15), "b and c are members", || {
        is_available(&router, &etcd_key(&b)) && is_available(&router, &etcd_key(&c))
    });
    assert_eq!(chat(router.addr, "Be brief.", "Four").0, 200);

    // A replica shutting down leaves at once (it revokes its lease), before it exits.
    let c_key = etcd_key(&c);
    c.signal("TERM");
    wait_until(Duration::from_secs(3), "c leaves on SIGTERM", || {
        !is_member(&router, &c_key)
    });
}

#[test]
fn smollm2_requests_follow_the_blocks_replicas_report() {
    let a = start(&["--kv-events-config", EVENTS], ONE_THREAD);
    let b = start(&["--kv-events-config", EVENTS], ONE_THREAD);
    // Idle replicas tie and the router then picks the first by name: cache the prompt on
    // the other one, before the router exists, so only its KV events (replayed from the
    // start when the router subscribes) can send requests there.
    let (first, holder) = if url(&a) < url(&b) { (a, b) } else { (b, a) };
    let system = "You are a careful assistant for a hardware shop. ".repeat(12);
    assert_eq!(chat(holder.addr, &system, "Hello").0, 200);
    let hits_before = prefix_hits(&holder);

    let router = start_router(&["--replica", &url(&first), "--replica", &url(&holder)]);
    wait_until(
        Duration::from_secs(10),
        "the router learns the cached blocks",
        || {
            gauge(
                &metrics(&router),
                "brisk_router_indexed_blocks",
                &url(&holder),
            )
            .is_some_and(|n| n >= 6.0)
                && is_available(&router, &url(&first))
        },
    );
    for q in [
        "Do you sell drills?",
        "Where is the shop?",
        "Are you open today?",
    ] {
        assert_eq!(chat(router.addr, &system, q), (200, url(&holder)), "{q}");
    }
    assert!(prefix_hits(&holder) >= hits_before + 3.0);
    assert_eq!(prefix_hits(&first), 0.0);
    let m = metrics(&router);
    let counter = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let hit_rate =
        counter("brisk_router_cached_tokens_total") / counter("brisk_router_prompt_tokens_total");
    assert!(hit_rate > 0.8, "predicted hit rate {hit_rate}\n{m}");
}

/// A replica that describes itself like `model` (but faster) and answers generation
/// requests badly.
struct FakeReplica {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakeReplica {
    fn start(model: &Server, answer: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (_, text) = call(model.addr, "GET", "/internal/v1/replica", None, "");
        let body = text.split("\r\n\r\n").nth(1).unwrap().to_owned();
        let mut info: serde_json::Value = serde_json::from_str(&body).unwrap();
        info["url"] = format!("http://{addr}").into();
        info["kv_events"] = serde_json::Value::Null;
        // It claims to be very fast, so the router prefers it while it is not isolated.
        info["latency"] = serde_json::json!({
            "base_s": 1e-6, "per_prefill_token_s": 1e-9, "per_decode_seq_s": 0.0,
            "per_decode_context_token_s": 0.0, "per_prefill_attention_pair_s": 0.0,
        });
        let info = info.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => answer_one(conn, &info, answer),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeReplica {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer_one(conn: TcpStream, info: &str, answer: &str) {
    conn.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(conn);
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (status, body) = if request_line.starts_with("GET /internal/v1/replica") {
        ("200 OK", info)
    } else if request_line.contains("/render") {
        ("500 Internal Server Error", "{}")
    } else {
        let (status, body) = answer.split_once('|').unwrap();
        if let Some(body) = body.strip_prefix("sleep:") {
            std::thread::sleep(Duration::from_secs(3));
            (status, body)
        } else {
            (status, body)
        }
    };
    let mut conn = reader.into_inner();
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn smollm2_failing_slow_and_garbage_replicas_are_retried_around_and_isolated() {
    // FCFS: no latency model advertised, so the router's nominal one ranks the four replicas
    // (which copy the good one's description) alike and every one of them gets tried.
    let good = start(&["--scheduling-policy", "fcfs"], ONE_THREAD);
    let failing = FakeReplica::start(&good, "500 Internal Server Error|{\"error\": {}}");
    let garbage = FakeReplica::start(&good, "200 OK|<html>not an answer</html>");
    let slow = FakeReplica::start(&good, "500 Internal Server Error|sleep:{}");
    let router = start_router(&[
        "--replica",
        &failing.url(),
        "--replica",
        &garbage.url(),
        "--replica",
        &slow.url(),
        "--replica",
        &url(&good),
        "--health-interval",
        "0.2",
        "--replica-timeout",
        "0.5",
        "--max-attempts",
        "4",
    ]);
    wait_until(Duration::from_secs(10), "all four join", || {
        let m = metrics(&router);
        [failing.url(), garbage.url(), slow.url(), url(&good)]
            .iter()
            .all(|r| gauge(&m, "brisk_router_replica_available", r) == Some(1.0))
    });
    // Prompts that share no block, so no replica holds a cached prefix the router would
    // prefer: ties go to the replica chosen least recently, and every bad one is tried.
    // Each bad replica's circuit is seen open after some request (it reads open for a
    // second after tripping, then half-open until its next trial).
    let bad = [failing.url(), garbage.url(), slow.url()];
    let mut seen_open = [false; 3];
    for i in 0..12 {
        let system = format!("{i}: be brief.");
        let (status, by) = chat(router.addr, &system, &format!("Question {i}"));
        assert_eq!(
            (status, by.as_str()),
            (200, url(&good).as_str()),
            "request {i}"
        );
        let m = metrics(&router);
        for (seen, bad) in seen_open.iter_mut().zip(&bad) {
            *seen |= gauge(&m, "brisk_router_replica_available", bad) == Some(0.0);
        }
    }
    assert_eq!(
        seen_open,
        [true; 3],
        "{bad:?} isolated:\n{}",
        metrics(&router)
    );
}

/// The `data:` payloads of a stream read to its end over HTTP/1.0 (no chunked encoding),
/// calling `after_first` once three events have arrived; also returns the response head.
fn stream_events(
    addr: SocketAddr,
    path: &str,
    body: &str,
    mut after_first: impl FnMut(&str),
) -> (String, Vec<String>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        conn,
        "POST {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let mut events = Vec::new();
    let mut called = false;
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(data) = line.strip_prefix("data: ") {
            events.push(data.to_owned());
            if events.len() == 3 && !called {
                called = true;
                after_first(&head);
            }
        }
    }
    (head, events)
}

#[test]
fn smollm2_a_replica_killed_mid_stream_leaves_the_clients_stream_whole() {
    let mut a = start(&[], ONE_THREAD);
    let mut b = start(&[], ONE_THREAD);
    let router = start_router(&[
        "--replica",
        &url(&a),
        "--replica",
        &url(&b),
        "--health-interval",
        "0.2",
    ]);
    wait_until(Duration::from_secs(10), "both join", || {
        is_available(&router, &url(&a)) && is_available(&router, &url(&b))
    });
    let mut request = serde_json::json!({
        "messages": [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}],
        "max_tokens": 64, "temperature": 0, "ignore_eos": true,
    });
    // The undisturbed answer.
    let (status, text) = call(
        a.addr,
        "POST",
        "/v1/chat/completions",
        None,
        &request.to_string(),
    );
    assert_eq!(status, 200);
    let whole: serde_json::Value =
        serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let expected = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();

    request["stream"] = true.into();
    request["stream_options"] = serde_json::json!({"include_usage": true});
    let (a_url, b_url) = (url(&a), url(&b));
    let mut victim = String::new();
    let (_, events) = stream_events(
        router.addr,
        "/v1/chat/completions",
        &request.to_string(),
        |head| {
            victim = head
                .lines()
                .find_map(|l| l.strip_prefix("x-brisk-replica: "))
                .unwrap()
                .trim()
                .to_owned();
            let server = if victim == a_url { &mut a } else { &mut b };
            assert!(victim == a_url || victim == b_url);
            server.child.kill().unwrap();
        },
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    let mut usage = serde_json::Value::Null;
    for e in &events[..events.len() - 1] {
        let v: serde_json::Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "error event: {e}");
        assert_eq!(v["object"], "chat.completion.chunk", "{e}");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
    }
    assert_eq!(
        text, expected,
        "greedy output identical to an undisturbed run"
    );
    assert_eq!(usage["completion_tokens"], 64, "{usage}");
    let m = metrics(&router);
    assert!(
        m.contains("brisk_router_failovers_total{result=\"continued\"} 1"),
        "{m}"
    );
}

#[test]
fn smollm2_the_router_answers_like_a_replica_errors_and_keys_included() {
    // FCFS: the replica advertises no latency model, so the router's `--latency-model`
    // below is the one that judges it.
    let replica = start(
        &["--api-key", "sesame", "--scheduling-policy", "fcfs"],
        ONE_THREAD,
    );
    let router = start_router(&[
        "--replica",
        &url(&replica),
        "--api-key",
        "sesame",
        "--health-interval",
        "0.2",
    ]);
    wait_until(Duration::from_secs(10), "the replica joins", || {
        is_available(&router, &url(&replica))
    });
    let body = r#"{"prompt": "Hello", "max_tokens": 3, "temperature": 0}"#;
    let (status, text) = call(router.addr, "POST", "/v1/completions", None, body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("invalid_api_key"), "{text}");
    let key = Some("sesame");
    let (status, via_router) = call(router.addr, "POST", "/v1/completions", key, body);
    assert_eq!(status, 200, "{via_router}");
    // Routed by the tokens the replica rendered (completions render to a list), not by text.
    let m = metrics(&router);
    assert!(m.contains("brisk_router_text_routed_total 0"), "{m}");
    let (_, direct) = call(replica.addr, "POST", "/v1/completions", key, body);
    let text_of = |answer: &str| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        v["choices"][0]["text"].clone()
    };
    assert_eq!(text_of(&via_router), text_of(&direct));

    // The replica's own validation, through the router.
    let (status, text) = call(
        router.addr,
        "POST",
        "/v1/completions",
        key,
        r#"{"prompt": "Hello", "temperature": "hot"}"#,
    );
    assert_eq!(status, 400, "{text}");
    let (status, text) = call(router.addr, "POST", "/v1/completions", key, "{not json");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_request_body"), "{text}");
    let (status, text) = call(router.addr, "GET", "/v1/models", key, "");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("SmolLM2"), "{text}");
    assert_eq!(call(router.addr, "GET", "/nowhere", key, "").0, 404);

    // The Responses API, whole and streamed: its stream ends with its own final event (no
    // `[DONE]`), which the router must not take for a replica dying mid-stream.
    let whole = r#"{"input": "Hello", "max_output_tokens": 3, "temperature": 0}"#;
    let (status, text) = call(router.addr, "POST", "/v1/responses", key, whole);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""object":"response""#), "{text}");
    let streamed = r#"{"input": "Hello", "max_output_tokens": 3, "stream": true}"#;
    let (status, text) = call(router.addr, "POST", "/v1/responses", key, streamed);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("response.incomplete") || text.contains("response.completed"),
        "{text}"
    );
    assert!(!text.contains("failed mid-stream"), "{text}");

    // A router that predicts no replica can make a request's TTFT refuses it at once when
    // asked to (here its latency model says a prompt token takes a second).
    let dir = tempfile::tempdir().unwrap();
    let slow_model = dir.path().join("slow.json");
    std::fs::write(
        &slow_model,
        r#"{"source": "test", "coefficients": {"base_s": 0.01, "per_prefill_token_s": 1.0,
            "per_decode_seq_s": 0.0, "per_decode_context_token_s": 0.0,
            "per_prefill_attention_pair_s": 0.0}, "fit": null, "samples": []}"#,
    )
    .unwrap();
    let strict = start_router(&[
        "--replica",
        &url(&replica),
        "--replica-api-key",
        "sesame",
        "--latency-model",
        slow_model.to_str().unwrap(),
        "--ttft-slo",
        "500",
        "--reject-unattainable",
        "--health-interval",
        "0.2",
    ]);
    wait_until(
        Duration::from_secs(10),
        "the replica joins the strict router",
        || is_available(&strict, &url(&replica)),
    );
    let (status, text) = call(strict.addr, "POST", "/v1/completions", None, body);
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("slo_unattainable"), "{text}");

    // Without a replica that answers: 503, and not ready.
    let lonely = start_router(&["--replica", "http://127.0.0.1:9"]);
    let (status, text) = call(lonely.addr, "POST", "/v1/completions", None, body);
    assert_eq!(status, 503, "{text}");
    assert_eq!(call(lonely.addr, "GET", "/ready", None, "").0, 503);
}
