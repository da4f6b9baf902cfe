//! Speculative decoding over HTTP with SmolLM2: a server that verifies every draft answers
//! exactly what a plain server answers (greedy and seeded, streamed and not, stop strings
//! included), its metrics count the drafts, and the `speculative` field opts a request out or
//! is refused when it is not a boolean.

mod common;

use brisk_scheduler::SpeculativeConfig;
use common::{default_scheduler, start_with, TestServer};
use serde_json::{json, Value};

/// A server that verifies every draft it finds (no latency model to say no).
async fn speculating() -> TestServer {
    let mut cfg = default_scheduler();
    cfg.speculative = Some(SpeculativeConfig::prompt_lookup(4, 1, 3));
    start_with(cfg).await
}

const LIST: &str = "Repeat this list exactly, one item per line: apples, bread, cheese, \
                    eggs, flour, honey, jam, milk, rice, salt.";

fn text(body: &Value) -> String {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_speculative_answers_are_plain_answers() {
    let (plain, spec) = (common::start().await, speculating().await);
    let asks = [
        json!({"messages": [{"role": "user", "content": LIST}], "max_tokens": 60, "temperature": 0}),
        json!({"messages": [{"role": "user", "content": LIST}], "max_tokens": 60,
               "temperature": 0.9, "seed": 5}),
        json!({"messages": [{"role": "user", "content": LIST}], "max_tokens": 60,
               "temperature": 0, "stop": ["honey"], "frequency_penalty": 0.5}),
    ];
    for ask in &asks {
        let (s1, a) = plain.post("/v1/chat/completions", ask).await;
        let (s2, b) = spec.post("/v1/chat/completions", ask).await;
        assert_eq!((s1, s2), (200, 200), "{a} {b}");
        assert_eq!(text(&a), text(&b), "{ask}");
        assert_eq!(a["usage"], b["usage"]);
        assert_eq!(
            a["choices"][0]["finish_reason"],
            b["choices"][0]["finish_reason"]
        );
    }
    // Streamed: the same text, however many tokens a step brought.
    let mut streamed = asks[0].clone();
    streamed["stream"] = json!(true);
    let chunks = spec.stream("/v1/chat/completions", &streamed).await;
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let (_, whole) = plain.post("/v1/chat/completions", &asks[0]).await;
    assert_eq!(joined, text(&whole));
    let metrics = spec.metrics().await;
    let drafted = metric(&metrics, "brisk_spec_decode_num_draft_tokens_total");
    let accepted = metric(&metrics, "brisk_spec_decode_num_accepted_tokens_total");
    assert!(drafted > 0.0 && accepted > 0.0, "{drafted} {accepted}");
    assert!(metrics.contains("brisk_spec_decode_acceptance_rate_bucket{le=\"1\"}"));
    spec.wait_idle().await;
    assert!(metrics.contains("brisk_spec_decode_num_drafts_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_requests_opt_out_of_speculation_and_bad_values_are_refused() {
    let spec = speculating().await;
    let ask = json!({"prompt": LIST, "max_tokens": 30, "temperature": 0, "speculative": false});
    let (status, body) = spec.post("/v1/completions", &ask).await;
    assert_eq!(status, 200, "{body}");
    let metrics = spec.metrics().await;
    assert_eq!(metric(&metrics, "brisk_spec_decode_num_drafts_total"), 0.0);
    for bad in [json!("no"), json!(0), json!({})] {
        let ask = json!({"prompt": LIST, "max_tokens": 4, "speculative": bad});
        let (status, body) = spec.post("/v1/completions", &ask).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], "speculative");
    }
}
