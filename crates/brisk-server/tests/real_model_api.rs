//! The OpenAI API served by a real engine running SmolLM2.

mod common;

use common::{metric, start, start_tuned, start_with, MODEL};
use serde_json::{json, Value};

const COUNTING: &str = "1, 2, 3, 4, 5, 6,";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_completion_counts_on() {
    let s = start().await;
    let (status, body) = s
        .post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": COUNTING, "max_tokens": 8, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], " 7, 8, 9");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 8);
    assert_eq!(body["usage"]["prompt_tokens"], 17);
    assert_eq!(body["usage"]["total_tokens"], 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_bans_and_forces_tokens() {
    let s = start().await;
    let ask = |bias: Value| {
        json!({"model": MODEL, "prompt": COUNTING, "max_tokens": 1, "temperature": 0,
               "logit_bias": bias})
    };
    let token_of = |body: &Value| body["tokens"][0].as_u64().expect("a token id");
    let (status, plain) = s.post("/v1/completions", &ask(Value::Null)).await;
    assert_eq!(status, 200, "{plain}");
    let greedy = plain["choices"][0]["text"].clone();
    // Ban the greedy token: another one comes out.
    let (_, ids) = s.post("/tokenize", &json!({"content": greedy})).await;
    let bias = json!({ token_of(&ids).to_string(): -100 });
    let (status, banned) = s.post("/v1/completions", &ask(bias)).await;
    assert_eq!(status, 200, "{banned}");
    assert_ne!(banned["choices"][0]["text"], greedy, "{banned}");
    // Force an unlikely one.
    let (_, ids) = s.post("/tokenize", &json!({"content": " banana"})).await;
    let forced_id = token_of(&ids);
    let (_, text) = s.post("/detokenize", &json!({"tokens": [forced_id]})).await;
    let bias = json!({ forced_id.to_string(): 100 });
    let (status, forced) = s.post("/v1/completions", &ask(bias)).await;
    assert_eq!(status, 200, "{forced}");
    assert_eq!(forced["choices"][0]["text"], text["content"], "{forced}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_waiting_queue_answers_429_with_retry_after() {
    let s = start_tuned(
        common::default_scheduler(),
        brisk_scheduler::PolicyChoice::Fcfs,
        |state| state.waiting = std::sync::Arc::new(brisk_server::WaitingQueue::new(Some(1))),
    )
    .await;
    // A long prompt keeps its ticket through its prefill (hundreds of milliseconds).
    let long = json!({"model": MODEL, "prompt": "word ".repeat(400), "max_tokens": 1});
    let first = {
        let (client, url, body) = (s.client.clone(), s.url("/v1/completions"), long.clone());
        tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let refused = s
        .client
        .post(s.url("/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": COUNTING, "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let err: Value = refused.json().await.unwrap();
    assert_eq!(err["error"]["code"], "overloaded", "{err}");
    assert_eq!(err["error"]["type"], "rate_limit_error", "{err}");
    assert_eq!(first.await.unwrap().as_u16(), 200);
    // The ticket is back: the next request is served.
    let (status, body) = s
        .post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": COUNTING, "max_tokens": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_before_the_first_token_free_everything() {
    let s = start().await;
    // Polls /metrics (bounded: 30 s, generous for a loaded CI machine, where a prefill of
    // this prompt alone can take seconds) until `done` holds for it; returns that text.
    let until = |done: fn(&str) -> bool| {
        let s = &s;
        async move {
            for _ in 0..1200 {
                let m = s.metrics().await;
                if done(&m) {
                    return m;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("condition never held:\n{}", s.metrics().await);
        }
    };
    let busy = |m: &str| metric(m, "brisk_num_requests_running") > 0.0;
    assert_eq!(
        metric(&s.metrics().await, "brisk_kv_cache_usage_ratio"),
        0.0
    );
    // A prompt long enough that its prefill takes several steps.
    let long = "the quick brown fox jumps over the lazy dog ".repeat(120);
    // 1. A stream whose client hangs up after the headers, during the prefill.
    let resp = s
        .client
        .post(s.url("/v1/completions"))
        .json(&json!({"prompt": long, "max_tokens": 500, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    until(busy).await;
    drop(resp);
    until(|m| m.contains("brisk_request_success_total{finished_reason=\"abort\"} 1")).await;
    // 2. A non-streaming request whose client gives up while the server works on it.
    let gave_up = s
        .client
        .post(s.url("/v1/completions"))
        .timeout(std::time::Duration::from_millis(300))
        .json(&json!({"prompt": long, "max_tokens": 500, "ignore_eos": true}))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    let after = until(|m| {
        m.contains("brisk_request_success_total{finished_reason=\"abort\"} 2")
            && metric(m, "brisk_kv_cache_usage_ratio") == 0.0
            && metric(m, "brisk_num_requests_running") == 0.0
            && metric(m, "brisk_num_requests_waiting") == 0.0
    })
    .await;
    assert!(!after.contains("finished_reason=\"length\""), "{after}");
    // The server still answers, with the whole pool.
    let (status, body) = s
        .post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": COUNTING, "max_tokens": 2, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_timeout_are_aborted_with_504() {
    let s = start_tuned(
        common::default_scheduler(),
        brisk_scheduler::PolicyChoice::Fcfs,
        |state| state.request_timeout = Some(std::time::Duration::from_millis(400)),
    )
    .await;
    let endless =
        json!({"model": MODEL, "prompt": COUNTING, "max_tokens": 3000, "ignore_eos": true});
    let (status, err) = s.post("/v1/completions", &endless).await;
    assert_eq!(status, 504, "{err}");
    assert_eq!(err["error"]["code"], "timeout", "{err}");
    // A stream ends with an error event instead.
    let mut streaming = endless.clone();
    streaming["stream"] = json!(true);
    let text = s
        .client
        .post(s.url("/v1/completions"))
        .json(&streaming)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"timeout\""), "{text}");
    s.wait_idle().await;
    let m = s.metrics().await;
    assert!(
        m.contains("brisk_request_success_total{finished_reason=\"timeout\"} 2"),
        "{m}"
    );
    assert_eq!(metric(&m, "brisk_kv_cache_usage_ratio"), 0.0, "{m}");
    assert_eq!(metric(&m, "brisk_panics_total"), 0.0, "{m}");
    assert!(metric(&m, "process_resident_memory_bytes") > 1e6, "{m}");
    // Short requests are unaffected.
    let (status, body) = s
        .post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": COUNTING, "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_stream_and_not() {
    let s = start().await;
    let messages = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let (status, body) = s
        .post(
            "/v1/chat/completions",
            &json!({"messages": messages, "max_tokens": 10, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    let full = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!full.is_empty());

    let chunks = s
        .stream(
            "/v1/chat/completions",
            &json!({"messages": messages, "max_tokens": 10, "temperature": 0, "stream": true,
                    "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)?
                .get("delta")?
                .get("content")?
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(streamed, full, "streaming and non-streaming agree");
    let last_choice = chunks
        .iter()
        .rev()
        .find(|c| c["choices"].get(0).is_some())
        .unwrap();
    assert_eq!(last_choice["choices"][0]["finish_reason"], "length");
    let usage = &chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 10);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_completions_end_with_done_and_match_non_streamed() {
    let s = start().await;
    let chunks = s
        .stream(
            "/v1/completions",
            &json!({"prompt": COUNTING, "max_tokens": 8, "temperature": 0, "stream": true}),
        )
        .await;
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, " 7, 8, 9");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_greedy_requests_match_their_solo_runs() {
    let s = start().await;
    let prompts = [
        COUNTING,
        "The capital of France is",
        "1, 2, 3, 4,",
        "10, 11, 12, 13,",
        "a, b, c, d,",
        "Monday, Tuesday, Wednesday,",
        "2, 4, 6, 8,",
        "January, February, March,",
    ];
    let body = |p: &str| json!({"prompt": p, "max_tokens": 12, "temperature": 0, "logprobs": 0});
    let mut solo = Vec::new();
    for p in prompts {
        let (status, b) = s.post("/v1/completions", &body(p)).await;
        assert_eq!(status, 200, "{b}");
        solo.push(b["choices"][0].clone());
    }
    let bodies: Vec<Value> = prompts.iter().map(|p| body(p)).collect();
    let together =
        futures_util::future::join_all(bodies.iter().map(|b| s.post("/v1/completions", b))).await;
    for ((status, b), alone) in together.iter().zip(&solo) {
        assert_eq!(*status, 200);
        let choice = &b["choices"][0];
        assert_eq!(choice["text"], alone["text"]);
        assert_eq!(choice["logprobs"]["tokens"], alone["logprobs"]["tokens"]);
    }
    assert_eq!(
        together[0].1["choices"][0]["text"]
            .as_str()
            .unwrap()
            .get(..8),
        Some(" 7, 8, 9")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_long_prompt_is_served_from_the_prefix_cache() {
    let s = start().await;
    let long: String = (0..60)
        .map(|i| format!("Line {i}: the quick brown fox jumps over the lazy dog. "))
        .collect();
    let req = json!({"prompt": long, "max_tokens": 2, "temperature": 0});
    let (_, first) = s.post("/v1/completions", &req).await;
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let prompt_tokens = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 600, "{prompt_tokens}");
    let (_, second) = s.post("/v1/completions", &req).await;
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    // Every full block but the one holding the last prompt token is reused.
    assert!(
        cached >= prompt_tokens - 16 && cached < prompt_tokens,
        "{cached} of {prompt_tokens}"
    );
    assert_eq!(second["choices"][0]["text"], first["choices"][0]["text"]);
    let m = s.metrics().await;
    assert_eq!(metric(&m, "brisk_prefix_cache_hits_total") as u64, cached);
    assert!(metric(&m, "brisk_prefix_cache_queries_total") as u64 >= 2 * prompt_tokens - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_frees_its_blocks() {
    let s = start().await;
    let baseline = s.engine.stats().kv_cache_usage;
    let resp = s
        .client
        .post(s.url("/v1/completions"))
        .json(&json!({"prompt": COUNTING, "max_tokens": 2000, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut resp = resp;
    // Read a few chunks, then hang up.
    for _ in 0..3 {
        resp.chunk().await.unwrap().expect("a chunk");
    }
    assert!(s.engine.stats().kv_cache_usage > baseline);
    drop(resp);
    s.wait_idle().await;
    assert_eq!(s.engine.stats().kv_cache_usage, baseline);
    let m = s.metrics().await;
    assert!(
        m.contains("brisk_request_success_total{finished_reason=\"abort\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors() {
    let s = start_with(common::default_scheduler()).await;
    let long = "word ".repeat(9000);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v1/completions",
            json!({"prompt": long, "max_tokens": 1}),
            400,
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "max_tokens": 9000}),
            400,
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "model": "gpt-9"}),
            404,
            "model",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "temperature": -1}),
            400,
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "n": 1000}),
            400,
            "n",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "max_tokens": "ten"}),
            400,
            "",
        ),
        (
            "/v1/completions",
            json!({"prompt": [99_999_999]}),
            400,
            "prompt",
        ),
        ("/v1/completions", json!({"prompt": ""}), 400, "prompt"),
        (
            "/v1/chat/completions",
            json!({"messages": []}),
            400,
            "messages",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "logit_bias": {"99999999": 5}}),
            400,
            "logit_bias",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "logit_bias": {"cat": 5}}),
            400,
            "logit_bias",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "logit_bias": {"7": 500}}),
            400,
            "logit_bias",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "logit_bias": [1, 2]}),
            400,
            "logit_bias",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user"}]}),
            400,
            "messages[0].content",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "stop": vec!["x"; 100]}),
            400,
            "stop",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "stop": "y".repeat(100_000)}),
            400,
            "stop",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "max_tokens": -5}),
            400,
            "max_tokens",
        ),
    ];
    for (path, body, status, param) in cases {
        let (got, err) = s.post(path, &body).await;
        assert_eq!(got, status, "{body}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{err}"
        );
        assert!(err["error"]["type"].is_string(), "{err}");
        if !param.is_empty() {
            assert_eq!(err["error"]["param"], param, "{err}");
        }
    }
    let (status, err) = s
        .post_raw("/v1/completions", b"{\"prompt\": ".to_vec())
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = s
        .post_raw("/v1/completions", b"{\"prompt\": \"\xff\xfe\"}".to_vec())
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = s.post_raw("/v1/completions", vec![b' '; 2 << 20]).await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    // The server is still healthy and serving.
    let (status, _) = s
        .post(
            "/v1/completions",
            &json!({"prompt": COUNTING, "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamp_max_tokens_lowers_what_does_not_fit() {
    let mut scheduler = common::default_scheduler();
    scheduler.max_model_len = 48;
    let s = start_tuned(scheduler, brisk_scheduler::PolicyChoice::Fcfs, |state| {
        state.clamp_max_tokens = true;
    })
    .await;
    let (status, body) = s
        .post(
            "/v1/completions",
            &json!({"prompt": COUNTING, "max_tokens": 100_000, "ignore_eos": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        body["usage"]["completion_tokens"].as_u64().unwrap(),
        48 - prompt,
        "{body}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_n_and_logprobs() {
    let s = start().await;
    let (_, body) = s
        .post(
            "/v1/completions",
            &json!({"prompt": COUNTING, "max_tokens": 12, "temperature": 0, "stop": [" 9"]}),
        )
        .await;
    assert_eq!(body["choices"][0]["text"], " 7, 8,");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    let chunks = s
        .stream("/v1/completions", &json!({"prompt": COUNTING, "max_tokens": 12, "temperature": 0, "stop": ", 9", "stream": true}))
        .await;
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, " 7, 8");

    let (_, body) = s
        .post("/v1/completions", &json!({"prompt": "Once upon a time", "max_tokens": 6, "n": 3, "temperature": 1.0, "seed": 5}))
        .await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    assert_eq!(body["usage"]["completion_tokens"], 18);
    let indexes: Vec<u64> = choices
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![0, 1, 2]);
    let (_, again) = s
        .post("/v1/completions", &json!({"prompt": "Once upon a time", "max_tokens": 6, "n": 3, "temperature": 1.0, "seed": 5}))
        .await;
    assert_eq!(
        again["choices"], body["choices"],
        "a seed makes n>1 sampling reproducible"
    );

    let (_, body) = s
        .post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                                              "logprobs": true, "top_logprobs": 2, "temperature": 0}))
        .await;
    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 3);
    for entry in content {
        let lp = entry["logprob"].as_f64().unwrap();
        let tops = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(tops.len(), 2);
        // Greedy: the chosen token is the most likely one.
        assert!((tops[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-5);
        assert!(lp <= 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_metrics_answer() {
    let s = start().await;
    let models: Value = s
        .client
        .get(s.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
    let health = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    s.post(
        "/v1/completions",
        &json!({"prompt": COUNTING, "max_tokens": 3}),
    )
    .await;
    let m = s.metrics().await;
    for name in [
        "brisk_time_to_first_token_seconds_count",
        "brisk_time_per_output_token_seconds_count",
        "brisk_e2e_request_latency_seconds_count",
        "brisk_num_requests_running",
        "brisk_num_requests_waiting",
        "brisk_kv_cache_usage_ratio",
        "brisk_prompt_tokens_total",
        "brisk_generation_tokens_total",
        "brisk_prefix_cache_queries_total",
        "brisk_prefix_cache_hits_total",
        "brisk_num_preemptions_total",
        "brisk_fair_share_clients",
        "brisk_step_time_correction_ratio",
        "brisk_output_length_examples_total",
    ] {
        metric(&m, name);
    }
    assert_eq!(metric(&m, "brisk_generation_tokens_total"), 3.0);
    assert!(m.contains("brisk_request_success_total{finished_reason=\"length\"} 1"));
    // The Gateway API Inference Extension's model-server metrics, under vLLM's names.
    let label = format!("{{model_name=\"{MODEL}\"}}");
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
    ] {
        assert!(m.contains(&format!("{name}{label} ")), "{name} in\n{m}");
    }
    let info = m
        .lines()
        .find(|l| l.starts_with("vllm:cache_config_info{"))
        .unwrap_or_else(|| panic!("vllm:cache_config_info in\n{m}"));
    for label in [
        "block_size=\"16\"",
        "cache_dtype=\"f32\"",
        "enable_prefix_caching=\"True\"",
        "num_gpu_blocks=\"",
    ] {
        assert!(
            info.contains(label) && info.ends_with(" 1"),
            "{label} in {info}"
        );
    }
    let ready = s.client.get(s.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let missing = s.client.get(s.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copies_of_n_share_the_prompt_blocks() {
    let s = start().await;
    let long: String = (0..30)
        .map(|i| format!("Item {i} is a red apple on a green table. "))
        .collect();
    let (status, body) = s
        .post(
            "/v1/completions",
            &json!({"prompt": long, "max_tokens": 4, "n": 3, "temperature": 0.8, "seed": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"].as_array().unwrap().len(), 3);
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    let hits = metric(&s.metrics().await, "brisk_prefix_cache_hits_total") as u64;
    // The two copies reuse every full block of the first choice's prompt.
    let full_blocks_tokens = (prompt - 1) / 16 * 16;
    assert_eq!(hits, 2 * full_blocks_tokens, "prompt {prompt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_routes_give_the_token_ids_generation_would_use() {
    let s = start().await;
    // Completions: the prompt's ids, in a list (one entry per prompt), as /tokenize gives them.
    let (status, rendered) = s
        .post(
            "/v1/completions/render",
            &json!({"model": MODEL, "prompt": COUNTING, "max_tokens": 3}),
        )
        .await;
    assert_eq!(status, 200, "{rendered}");
    let (_, tokenized) = s
        .post("/tokenize", &json!({"model": MODEL, "prompt": COUNTING}))
        .await;
    assert_eq!(rendered[0]["token_ids"], tokenized["tokens"], "{rendered}");
    assert_eq!(rendered[0]["model"], MODEL);
    // Chat: the conversation after the chat template; the completion that follows reports
    // exactly that many prompt tokens.
    let chat = json!({"model": MODEL, "max_tokens": 1,
                      "messages": [{"role": "user", "content": "Name a colour."}]});
    let (status, rendered) = s.post("/v1/chat/completions/render", &chat).await;
    assert_eq!(status, 200, "{rendered}");
    let ids = rendered["token_ids"].as_array().unwrap().len();
    let (_, served) = s.post("/v1/chat/completions", &chat).await;
    assert_eq!(served["usage"]["prompt_tokens"], ids, "{served}");
    // A request generation would refuse, render refuses alike.
    let (status, err) = s
        .post(
            "/v1/completions/render",
            &json!({"model": MODEL, "prompt": COUNTING, "max_tokens": 0}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, _) = s
        .post(
            "/v1/chat/completions/render",
            &json!({"model": MODEL, "messages": []}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_and_detokenize_speak_llama_cpp_and_vllm() {
    let s = start().await;
    // The golden prompt of DESIGN.md: "The capital of France is" is five tokens, no BOS.
    let text = "The capital of France is";
    let (status, vllm) = s
        .post("/tokenize", &json!({"model": MODEL, "prompt": text}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(vllm["count"], 5);
    assert_eq!(vllm["max_model_len"], 8192);
    let (_, llama) = s.post("/tokenize", &json!({"content": text})).await;
    assert_eq!(llama["tokens"], vllm["tokens"]);
    let (status, back) = s
        .post("/detokenize", &json!({"tokens": vllm["tokens"]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(back["content"], text);
    assert_eq!(back["prompt"], text);
    let (status, err) = s.post("/detokenize", &json!({"tokens": [49152]})).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "tokens");
    let (status, err) = s.post("/tokenize", &json!({"text": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "prompt");
}
