//! Live migration for load balance with real processes (SmolLM2, one compute thread each):
//! `brisk route --rebalance-slack` over two replicas, with the hot-spot guard off and cache
//! affinity over any queue so that requests sharing a prefix all land on one replica, has that replica move running requests
//! to the idle one; every stream still reads as an undisturbed run.

mod common;

use std::io::BufReader;

use common::{call, send, start, start_router};
use serde_json::{json, Value};

const ONE_THREAD: &[(&str, &str)] = &[("BRISK_THREADS", "1")];

fn completion(question: &str, stream: bool) -> String {
    json!({"prompt": format!("{}\n{question}", "You are a careful assistant. ".repeat(12)),
           "max_tokens": 120, "ignore_eos": true, "temperature": 0, "stream": stream})
    .to_string()
}

/// The text of a streamed completion read to its end.
fn read_all(stream: std::net::TcpStream) -> String {
    let mut text = String::new();
    for line in std::io::BufRead::lines(BufReader::new(stream)) {
        let line = line.unwrap();
        let Some(data) = line.trim().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            return text;
        }
        let event: Value = serde_json::from_str(data).unwrap();
        assert!(event.get("error").is_none(), "{event}");
        text.push_str(event["choices"][0]["text"].as_str().unwrap_or_default());
    }
    panic!("no [DONE]; so far {text:?}");
}

#[test]
fn smollm2_the_router_moves_running_requests_off_a_hot_replica_and_streams_go_on() {
    let (a, b) = (start(&[], ONE_THREAD), start(&[], ONE_THREAD));
    let router = start_router(&[
        "--replica",
        &format!("http://{}", a.addr),
        "--replica",
        &format!("http://{}", b.addr),
        "--hot-spot-slack",
        "1000",
        "--affinity-slack",
        "60000",
        "--rebalance-slack",
        "0",
        "--rebalance-interval",
        "0.1",
    ]);
    let questions = [
        "What is rust?",
        "Name a colour.",
        "Count to five.",
        "Say hello.",
    ];
    let want: Vec<String> = questions
        .iter()
        .map(|q| {
            let (status, text) = call(
                a.addr,
                "POST",
                "/v1/completions",
                None,
                &completion(q, false),
            );
            assert_eq!(status, 200, "{text}");
            let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            body["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
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
    let (_, metrics) = call(router.addr, "GET", "/metrics", None, "");
    let migrations: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("brisk_router_migrations_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(migrations >= 1.0, "{metrics}");
    // Whichever replica the prefix drew them to, the other took requests in.
    let moved_in: f64 = [&a, &b]
        .iter()
        .map(|r| {
            call(r.addr, "GET", "/metrics", None, "")
                .1
                .lines()
                .find_map(|l| l.strip_prefix("brisk_migrations_total{direction=\"in\"} "))
                .map_or(0.0, |v| v.trim().parse().unwrap())
        })
        .sum();
    assert_eq!(moved_in, migrations);
}
