//! The target server's own tokenizer over HTTP, for text prompts of exact token counts.
//!
//! Two dialects exist and one request body speaks both: llama.cpp's `llama-server`
//! (`POST /tokenize {"content"}` → `{"tokens"}`, `POST /detokenize {"tokens"}` →
//! `{"content"}`) and vLLM's (`{"model", "prompt"}` → `{"tokens", "count"}`, detokenize →
//! `{"prompt"}`); brisk answers in both shapes. Special tokens are never added, so the
//! counts are of the prompt text alone, as the bench asks for.

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::BenchError;

/// `/tokenize` and `/detokenize` of one server.
#[derive(Clone, Debug)]
pub struct RemoteTokenizer {
    client: reqwest::Client,
    url: String,
    model: String,
}

fn err(msg: impl Into<String>) -> BenchError {
    BenchError::Tokenizer(format!("server tokenizer: {}", msg.into()))
}

impl RemoteTokenizer {
    /// A tokenizer served at `url` (the base URL, without `/tokenize`).
    pub fn new(url: &str, model: &str) -> Result<Self, BenchError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        Ok(Self {
            client,
            url: url.trim_end_matches('/').to_string(),
            model: model.to_string(),
        })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, BenchError> {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| err(format!("POST {path}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(err(format!(
                "POST {path} answered HTTP {} ({}); does the server offer it? \
                 Use --tokenizer-model GGUF or token-id prompts instead",
                status.as_u16(),
                text.chars().take(120).collect::<String>()
            )));
        }
        resp.json()
            .await
            .map_err(|e| err(format!("POST {path}: not JSON: {e}")))
    }

    /// Whether the server answers `/tokenize` (one short request).
    pub async fn probe(&self) -> bool {
        self.encode("hello").await.is_ok_and(|ids| !ids.is_empty())
    }

    /// Token ids of `text`, without special tokens.
    pub async fn encode(&self, text: &str) -> Result<Vec<u32>, BenchError> {
        let body = json!({
            "model": self.model,
            "content": text,
            "prompt": text,
            "add_special": false,
            "add_special_tokens": false,
        });
        let v = self.post("/tokenize", body).await?;
        let tokens = v["tokens"]
            .as_array()
            .ok_or_else(|| err(format!("/tokenize answered without `tokens`: {v}")))?;
        tokens
            .iter()
            .map(|t| {
                // llama.cpp answers `{"id", "piece"}` objects when asked for pieces.
                let id = t.as_u64().or_else(|| t["id"].as_u64());
                id.and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| err(format!("/tokenize: `{t}` is not a token id")))
            })
            .collect()
    }

    /// The text of `ids`.
    pub async fn decode(&self, ids: &[u32]) -> Result<String, BenchError> {
        let body = json!({"model": self.model, "tokens": ids});
        let v = self.post("/detokenize", body).await?;
        v["content"]
            .as_str()
            .or_else(|| v["prompt"].as_str())
            .map(str::to_string)
            .ok_or_else(|| err(format!("/detokenize answered without `content`: {v}")))
    }
}
