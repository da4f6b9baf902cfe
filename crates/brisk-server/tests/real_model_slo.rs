//! Latency objectives over HTTP with SmolLM2: the `slo` and `priority` body fields are
//! validated, and admission control answers 429 before any work is spent.

mod common;

use brisk_scheduler::SloDefaults;
use brisk_scheduler::{LatencyCoefficients, LatencyModel, PolicyChoice};
use brisk_server::SloSettings;
use common::{default_scheduler, start_full, TestServer};
use serde_json::json;

const COUNTING: &str = "1, 2, 3, 4, 5, 6,";

/// An SLO server whose model says every prompt token costs 10 ms.
async fn slo_server() -> TestServer {
    let model = LatencyModel::from_coefficients(LatencyCoefficients {
        base_s: 0.005,
        per_prefill_token_s: 0.010,
        per_decode_seq_s: 0.001,
        ..LatencyCoefficients::default()
    });
    start_full(
        default_scheduler(),
        PolicyChoice::Slo {
            model,
            reject_unattainable: true,
        },
        SloSettings {
            defaults: SloDefaults {
                ttft_ms: None,
                tpot_ms: Some(1000.0),
            },
            may_reject: true,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_unattainable_requests_get_429_and_attainable_ones_are_served() {
    let s = slo_server().await;
    // 17 prompt tokens need about 175 ms by the model: a 20 ms TTFT cannot be met.
    let tight = json!({"prompt": COUNTING, "max_tokens": 4, "temperature": 0,
                       "slo": {"ttft_ms": 20}});
    let (status, body) = s.post("/v1/completions", &tight).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "slo_unattainable");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("time-to-first-token objective of 20 ms"));
    // Streamed, the refusal still comes as a 429, not as an event stream.
    let mut streamed = tight.clone();
    streamed["stream"] = json!(true);
    let resp = s
        .client
        .post(s.url("/v1/completions"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        s.engine.stats().steps,
        0,
        "no step was spent on refused requests"
    );

    // Generous objectives, batch work, and no TTFT objective at all are served.
    for body in [
        json!({"prompt": COUNTING, "max_tokens": 4, "temperature": 0,
               "slo": {"ttft_ms": 5000, "tpot_ms": 2000}}),
        json!({"prompt": COUNTING, "max_tokens": 4, "temperature": 0,
               "slo": {"ttft_ms": 20}, "priority": "batch"}),
        json!({"prompt": COUNTING, "max_tokens": 4, "temperature": 0, "priority": "interactive"}),
        json!({"prompt": COUNTING, "max_tokens": 4, "temperature": 0, "user": "alice"}),
    ] {
        let (status, out) = s.post("/v1/completions", &body).await;
        assert_eq!(status, 200, "{body} -> {out}");
        assert_eq!(out["choices"][0]["text"], " 7, ");
    }
    let chunks = s
        .stream(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                    "stream": true, "slo": {"ttft_ms": 5000}}),
        )
        .await;
    assert!(!chunks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_bad_slo_priority_and_user_fields_are_400s_naming_the_field() {
    let s = slo_server().await;
    for (extra, param) in [
        (json!({"slo": {"ttft_ms": -5}}), "slo.ttft_ms"),
        (json!({"slo": {"tpot_ms": 0}}), "slo.tpot_ms"),
        (json!({"slo": {"ttft": 100}}), "slo.ttft"),
        (json!({"slo": {"ttft_ms": "fast"}}), "slo.ttft_ms"),
        (json!({"slo": 800}), "slo"),
        (json!({"priority": "urgent"}), "priority"),
        (json!({"priority": 1}), "priority"),
        (json!({"user": 5}), "user"),
        (json!({"user": "u".repeat(257)}), "user"),
    ] {
        for path in ["/v1/completions", "/v1/chat/completions"] {
            let mut body = if path == "/v1/completions" {
                json!({"prompt": "Hello", "max_tokens": 2})
            } else {
                json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2})
            };
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let (status, out) = s.post(path, &body).await;
            assert_eq!(status, 400, "{path} {extra} -> {out}");
            assert_eq!(out["error"]["type"], "invalid_request_error");
            assert_eq!(out["error"]["param"], param, "{out}");
        }
    }
}
