//! One streamed request, timed the way vLLM's `benchmark_serving` times it.
//!
//! The clock starts just before the request is sent. TTFT ends at the first SSE
//! chunk carrying non-empty text; each later text chunk adds an inter-token latency
//! (ITL); E2E ends at the last chunk. Output tokens come from the final `usage`
//! chunk when the server sends one (`stream_options.include_usage`), else from the
//! number of text chunks. Any HTTP error, malformed stream, or timeout makes the
//! request failed: it stays in the report with its error.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::args::Endpoint;
use crate::prompts::Prompt;

/// What one request measured. Times are milliseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RequestRecord {
    /// Prompt tokens requested.
    pub prompt_len: usize,
    /// Output tokens requested (`min_tokens` = `max_tokens`).
    pub output_len_requested: usize,
    /// Prompt tokens the server counted (its `usage.prompt_tokens`), when it said.
    pub prompt_len_reported: Option<usize>,
    /// Output tokens received (usage, or text chunks).
    pub output_len: usize,
    /// Send → first token.
    pub ttft: Option<f64>,
    /// (E2E − TTFT) / (output tokens − 1); absent for outputs of one token.
    pub tpot: Option<f64>,
    /// Send → last token.
    pub e2el: Option<f64>,
    /// Gaps between consecutive token chunks.
    pub itls: Vec<f64>,
    /// Scheduled send time, seconds after the start.
    pub scheduled_s: f64,
    /// Actual send − scheduled (or − the moment a concurrency slot freed).
    pub lag_ms: f64,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
    /// The SLO class the request was judged against.
    pub slo_class: String,
}

impl RequestRecord {
    /// Whether the request completed.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// What to send.
pub struct RequestBody<'a> {
    /// Model name.
    pub model: &'a str,
    /// Endpoint.
    pub endpoint: Endpoint,
    /// Prompt.
    pub prompt: &'a Prompt,
    /// Output tokens to force (the cap, with `natural`).
    pub output_len: usize,
    /// Let the output end at EOS: `output_len` only caps it.
    pub natural: bool,
    /// Further fields (`--request-field`).
    pub extra: &'a serde_json::Map<String, Value>,
}

impl RequestBody<'_> {
    fn json(&self) -> Value {
        let mut body = json!({
            "model": self.model,
            "max_tokens": self.output_len,
            "temperature": 0.0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !self.natural {
            body["min_tokens"] = json!(self.output_len);
            body["ignore_eos"] = json!(true);
        }
        let prompt = match self.prompt {
            Prompt::Ids(ids) => json!(ids),
            Prompt::Text(t) => json!(t),
        };
        match self.endpoint {
            Endpoint::Completions => body["prompt"] = prompt,
            Endpoint::Chat => body["messages"] = json!([{"role": "user", "content": prompt}]),
        }
        for (key, value) in self.extra {
            body[key] = value.clone();
        }
        body
    }

    fn path(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// Accumulates chunk arrival times from the SSE stream.
#[derive(Default)]
struct StreamState {
    token_times: Vec<Instant>,
    usage_tokens: Option<usize>,
    usage_prompt: Option<usize>,
    done: bool,
}

impl StreamState {
    /// Handles one `data:` payload received at `at`.
    fn on_data(&mut self, data: &str, at: Instant) -> Result<(), String> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let v: Value = serde_json::from_str(data).map_err(|e| format!("bad SSE JSON: {e}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("server error in stream: {err}"));
        }
        if let Some(n) = v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
        {
            self.usage_tokens = usize::try_from(n).ok();
        }
        if let Some(n) = v.pointer("/usage/prompt_tokens").and_then(Value::as_u64) {
            self.usage_prompt = usize::try_from(n).ok();
        }
        let choice = v.pointer("/choices/0");
        let text = choice
            .and_then(|c| c.get("text").or_else(|| c.pointer("/delta/content")))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !text.is_empty() {
            self.token_times.push(at);
        }
        Ok(())
    }
}

/// Sends one request and times it; never panics and never returns early without a record.
pub async fn send(
    client: &reqwest::Client,
    base_url: &str,
    body: &RequestBody<'_>,
    timeout: Duration,
    mut record: RequestRecord,
) -> RequestRecord {
    let start = Instant::now();
    let mut state = StreamState::default();
    let result = tokio::time::timeout(timeout, stream(client, base_url, body, &mut state)).await;
    let outcome = match result {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:.1} s", timeout.as_secs_f64())),
    };
    let ms = |a: Instant, b: Instant| a.duration_since(b).as_secs_f64() * 1e3;
    record.prompt_len_reported = state.usage_prompt;
    record.output_len = state.usage_tokens.unwrap_or(state.token_times.len());
    if let (Some(first), Some(last)) = (state.token_times.first(), state.token_times.last()) {
        record.ttft = Some(ms(*first, start));
        record.e2el = Some(ms(*last, start));
        record.itls = state
            .token_times
            .windows(2)
            .map(|w| ms(w[1], w[0]))
            .collect();
    }
    record.error = match outcome {
        Err(e) => Some(e),
        Ok(()) if state.token_times.is_empty() && body.output_len > 0 => {
            Some("stream ended without tokens".into())
        }
        Ok(()) => None,
    };
    if let (Some(t), Some(e)) = (record.ttft, record.e2el) {
        if record.output_len > 1 {
            record.tpot = Some((e - t) / (record.output_len - 1) as f64);
        }
    }
    record
}

async fn stream(
    client: &reqwest::Client,
    base_url: &str,
    body: &RequestBody<'_>,
    state: &mut StreamState,
) -> Result<(), String> {
    let resp = client
        .post(format!("{base_url}{}", body.path()))
        .json(&body.json())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            text.chars().take(200).collect::<String>()
        ));
    }
    let mut bytes = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| format!("stream broken: {e}"))?;
        let at = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                state.on_data(data, at)?;
            }
        }
        if state.done {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_outputs_are_only_capped_and_forced_ones_are_exact() {
        let prompt = Prompt::Ids(vec![1, 2, 3]);
        let extra = serde_json::Map::new();
        let body = |natural| {
            RequestBody {
                model: "m",
                endpoint: Endpoint::Completions,
                prompt: &prompt,
                output_len: 64,
                natural,
                extra: &extra,
            }
            .json()
        };
        let forced = body(false);
        assert_eq!(
            (&forced["min_tokens"], &forced["ignore_eos"]),
            (&json!(64), &json!(true))
        );
        let natural = body(true);
        assert_eq!(natural["max_tokens"], json!(64));
        assert!(natural.get("min_tokens").is_none() && natural.get("ignore_eos").is_none());
    }

    #[test]
    fn usage_chunks_count_tokens_and_empty_text_does_not() {
        let mut s = StreamState::default();
        let t = Instant::now();
        s.on_data(r#"{"choices":[{"text":""}]}"#, t).unwrap();
        s.on_data(r#"{"choices":[{"text":"a"}]}"#, t).unwrap();
        s.on_data(r#"{"choices":[{"delta":{"content":"b"}}]}"#, t)
            .unwrap();
        s.on_data(r#"{"choices":[],"usage":{"completion_tokens":3}}"#, t)
            .unwrap();
        s.on_data(" [DONE]", t).unwrap();
        assert_eq!(
            (s.token_times.len(), s.usage_tokens, s.done),
            (2, Some(3), true)
        );
        assert!(s.on_data(r#"{"error":{"message":"x"}}"#, t).is_err());
    }
}
