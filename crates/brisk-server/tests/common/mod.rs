//! A real brisk server on 127.0.0.1:0 with the SmolLM2 model, for API tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use brisk_backend::CpuBackend;
use brisk_engine::{EngineConfig, EngineHandle};
use brisk_gguf::GgufFile;
use brisk_scheduler::{PolicyChoice, SchedulerConfig};
use brisk_server::{router, ServerState, SloSettings};
use brisk_tokenizer::Tokenizer;
use brisk_types::Backend;
use serde_json::Value;

pub const MODEL: &str = "smollm2";

/// A running server; dropped at the end of the test with its runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: EngineHandle,
    pub client: reqwest::Client,
}

/// Scheduler settings the tests may tweak.
pub fn default_scheduler() -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 16,
        max_num_batched_tokens: 256,
        max_model_len: 8192,
        block_size: 16,
        num_blocks: 1024,
        enable_prefix_caching: true,
        chunked_prefill: true,
        eos_token_ids: Vec::new(),
        cache_salt: 7,
        fair_share: None,
        length_prediction: None,
        speculative: None,
    }
}

pub async fn start() -> TestServer {
    start_with(default_scheduler()).await
}

pub async fn start_with(scheduler: SchedulerConfig) -> TestServer {
    start_full(scheduler, PolicyChoice::Fcfs, SloSettings::default()).await
}

/// A server with a scheduling policy and latency objectives.
pub async fn start_full(
    scheduler: SchedulerConfig,
    policy: PolicyChoice,
    slo: SloSettings,
) -> TestServer {
    start_tuned(scheduler, policy, |state| state.slo = slo).await
}

/// A server whose state `tune` adjusts before it starts serving.
pub async fn start_tuned(
    scheduler: SchedulerConfig,
    policy: PolicyChoice,
    tune: impl FnOnce(&mut ServerState),
) -> TestServer {
    let path = brisk_testkit::smollm2_path();
    let file = GgufFile::open(&path).expect("model file reads");
    let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer builds");
    let backend = CpuBackend::from_gguf(&file).expect("model loads");
    let geometry = backend.geometry().clone();
    let context = scheduler
        .max_model_len
        .min(scheduler.num_blocks * scheduler.block_size);
    let cache_config = brisk_server::CacheConfig {
        block_size: scheduler.block_size,
        num_blocks: scheduler.num_blocks,
        dtype: "f32".into(),
        prefix_caching: scheduler.enable_prefix_caching,
    };
    let engine = brisk_engine::spawn(
        backend,
        EngineConfig {
            scheduler,
            seed: 1,
            policy,
            step_records: None,
            kv_events: None,
        },
    )
    .expect("engine starts");
    let mut state = ServerState::new(
        engine.clone(),
        tokenizer,
        MODEL.to_string(),
        vec![],
        context,
        geometry.vocab_size,
    );
    state.cache_config = cache_config;
    tune(&mut state);
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state, 1 << 20);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    TestServer {
        addr,
        engine,
        client: reqwest::Client::new(),
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs JSON; returns (status, body as JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// POSTs raw bytes.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// POSTs a streaming request and collects the `data:` payloads (without `[DONE]`),
    /// checking that the stream ends with `[DONE]`.
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let resp = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = resp.text().await.unwrap();
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(
            data.last(),
            Some(&"[DONE]"),
            "stream ends with [DONE]: {text}"
        );
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits (bounded) until the engine holds no running or waiting sequence.
    pub async fn wait_idle(&self) {
        for _ in 0..500 {
            let s = self.engine.stats();
            if s.num_running == 0 && s.num_waiting == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the engine did not become idle: {:?}", self.engine.stats());
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}
