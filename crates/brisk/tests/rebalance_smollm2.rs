//! Live migration by the router with real processes (SmolLM2, one compute thread each), over
//! two replicas with the hot-spot guard off and cache affinity over any queue so that
//! requests sharing a prefix all land on one replica: `brisk route --rebalance-slack` has
//! that replica move running requests to the idle one, and `--priority-migration` has it
//! move its batch-class decodes away once an interactive request joins them. Every stream
//! still reads as an undisturbed run.

mod common;

use std::io::BufReader;

use common::{call, read_streamed_text, read_to_first_event, send, start, start_router, Server};
use serde_json::{json, Value};

const ONE_THREAD: &[(&str, &str)] = &[("BRISK_THREADS", "1")];

fn completion(question: &str, stream: bool) -> String {
    with_priority(question, stream, "interactive")
}

fn with_priority(question: &str, stream: bool, priority: &str) -> String {
    json!({"prompt": format!("{}\n{question}", "You are a careful assistant. ".repeat(12)),
           "max_tokens": 120, "ignore_eos": true, "temperature": 0, "stream": stream,
           "priority": priority})
    .to_string()
}

/// The undisturbed text of `question` asked of `replica` directly (which caches the shared
/// prefix from then on).
fn undisturbed(replica: &Server, question: &str) -> String {
    let (status, text) = call(
        replica.addr,
        "POST",
        "/v1/completions",
        None,
        &completion(question, false),
    );
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    body["choices"][0]["text"].as_str().unwrap().to_string()
}

/// A counter's value in `server`'s metrics (0 when absent), `series` naming it with its
/// labels.
fn counter(server: &Server, series: &str) -> f64 {
    call(server.addr, "GET", "/metrics", None, "")
        .1
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The ids `replica` lists of class `priority`.
fn listed(replica: &Server, priority: &str) -> Vec<u64> {
    let path = format!("/internal/v1/requests?priority={priority}");
    let (status, text) = call(replica.addr, "GET", &path, None, "");
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    serde_json::from_value(body["requests"].clone()).unwrap()
}

/// `brisk route` over `a` and `b` with the hot-spot guard off, cache affinity over any
/// queue, a look for migrations every 0.1 s, and `flags`.
fn router_over(a: &Server, b: &Server, flags: &[&str]) -> Server {
    let (a, b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let mut args = vec![
        "--replica",
        &a,
        "--replica",
        &b,
        "--hot-spot-slack",
        "1000",
        "--affinity-slack",
        "60000",
        "--rebalance-interval",
        "0.1",
    ];
    args.extend_from_slice(flags);
    start_router(&args)
}

/// The text of a streamed completion read to its end.
fn read_all(stream: std::net::TcpStream) -> String {
    read_streamed_text("", BufReader::new(stream))
}

#[test]
fn smollm2_the_router_moves_running_requests_off_a_hot_replica_and_streams_go_on() {
    let (a, b) = (start(&[], ONE_THREAD), start(&[], ONE_THREAD));
    let router = router_over(&a, &b, &["--rebalance-slack", "0"]);
    let questions = [
        "What is rust?",
        "Name a colour.",
        "Count to five.",
        "Say hello.",
    ];
    let want: Vec<String> = questions.iter().map(|q| undisturbed(&a, q)).collect();
    // All at once through the router: the shared prefix (cached on `a` now) draws them there.
    let streams: Vec<_> = questions
        .iter()
        .map(|q| {
            send(
                router.addr,
                "POST",
                "/v1/completions",
                None,
                &completion(q, true),
            )
        })
        .collect();
    let got: Vec<String> = streams.into_iter().map(read_all).collect();
    assert_eq!(got, want, "every stream reads as an undisturbed run");
    let migrations = counter(&router, "brisk_router_migrations_total{reason=\"balance\"}");
    assert!(migrations >= 1.0);
    // Whichever replica the prefix drew them to, the other took requests in.
    let moved_in: f64 = [&a, &b]
        .iter()
        .map(|r| counter(r, "brisk_migrations_total{direction=\"in\"}"))
        .sum();
    assert_eq!(moved_in, migrations);
}

#[test]
fn smollm2_an_interactive_request_has_the_batch_decodes_beside_it_moved_away() {
    let (a, b) = (start(&[], ONE_THREAD), start(&[], ONE_THREAD));
    let (status, text) = call(
        a.addr,
        "GET",
        "/internal/v1/requests?priority=urgent",
        None,
        "",
    );
    assert_eq!(status, 400, "an unknown class is refused: {text}");
    let router = router_over(&a, &b, &["--priority-migration"]);
    let questions = ["What is rust?", "Name a colour.", "Count to five."];
    let want: Vec<String> = questions.iter().map(|q| undisturbed(&a, q)).collect();
    // Batch work through the router: the shared prefix draws it all to one replica, and
    // with no interactive request anywhere it stays.
    let mut batch: Vec<(String, BufReader<std::net::TcpStream>)> = questions
        .iter()
        .map(|q| {
            let body = with_priority(q, true, "batch");
            let mut stream =
                BufReader::new(send(router.addr, "POST", "/v1/completions", None, &body));
            (read_to_first_event(&mut stream), stream)
        })
        .collect();
    let (hot, cold) = if listed(&a, "batch").is_empty() {
        (&b, &a)
    } else {
        (&a, &b)
    };
    assert_eq!(listed(hot, "batch").len(), 3);
    assert!(listed(hot, "interactive").is_empty());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        counter(
            &router,
            "brisk_router_migrations_total{reason=\"priority\"}"
        ),
        0.0
    );
    // An interactive request of the same prefix joins them: they leave for the other.
    let question = "Say hello.";
    let interactive = send(
        router.addr,
        "POST",
        "/v1/completions",
        None,
        &completion(question, true),
    );
    let got: Vec<String> = batch
        .drain(..)
        .map(|(seen, stream)| read_streamed_text(&seen, stream))
        .collect();
    assert_eq!(got, want, "every batch stream reads as an undisturbed run");
    assert_eq!(read_all(interactive), undisturbed(&a, question));
    let moved = counter(
        &router,
        "brisk_router_migrations_total{reason=\"priority\"}",
    );
    assert!(moved >= 1.0);
    assert_eq!(
        counter(cold, "brisk_migrations_total{direction=\"in\"}"),
        moved
    );
    assert_eq!(
        counter(hot, "brisk_migrations_total{direction=\"out\"}"),
        moved
    );
}
