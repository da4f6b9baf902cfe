//! Keeping a client's stream going when the replica serving it dies.
//!
//! While a stream is relayed, [`StreamLog`] reads its events: the text generated so far, the
//! response's id, creation time and model, and whether it finished. If the replica's stream
//! breaks off before the end, the request continues on another replica as a completion of
//! the rendered prompt plus the tokens already sent (re-tokenized from their text), with
//! `max_tokens` lowered by as much, and the continuation's events are rewritten into the
//! original response (same id, same object kind, chat deltas for a chat request). The client
//! sees one stream; with greedy decoding its text is what an undisturbed run gives.
//!
//! Only single-choice streams whose prompt was rendered to tokens can be continued; others
//! end with an error event, as before.

use axum::body::Bytes;
use serde_json::{json, Map, Value};

/// What the client has been sent so far.
#[derive(Debug, Default)]
pub struct StreamLog {
    events: DataLines,
    /// Text generated so far.
    pub text: String,
    /// The response's `id`, `created` and `model`.
    pub id: Value,
    created: Value,
    model: Value,
    /// A choice finished (`finish_reason` set), `[DONE]` came, or a Responses stream's
    /// final event.
    pub finished: bool,
}

impl StreamLog {
    /// Reads the events in `chunk` (which may split events anywhere).
    pub fn observe(&mut self, chunk: &[u8]) {
        for data in self.events.push(chunk) {
            self.observe_data(&data);
        }
    }

    fn observe_data(&mut self, data: &[u8]) {
        if data == b"[DONE]" {
            self.finished = true;
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        // The Responses API's typed events: no `[DONE]`, a final event instead.
        match event["type"].as_str() {
            Some("response.output_text.delta") => {
                self.text
                    .push_str(event["delta"].as_str().unwrap_or_default());
                return;
            }
            Some("response.completed" | "response.incomplete" | "response.failed" | "error") => {
                self.finished = true;
                return;
            }
            Some(_) => return,
            None => {}
        }
        if self.id.is_null() {
            self.id = event["id"].clone();
            self.created = event["created"].clone();
            self.model = event["model"].clone();
        }
        let choice = &event["choices"][0];
        let text = choice["text"]
            .as_str()
            .or_else(|| choice["delta"]["content"].as_str());
        if let Some(t) = text {
            self.text.push_str(t);
        }
        if !choice["finish_reason"].is_null() && !choice.is_null() {
            self.finished = true;
        }
    }
}

/// Splits a server-sent event stream, arriving in chunks cut anywhere, into the payloads of
/// its `data:` lines.
#[derive(Debug, Default)]
struct DataLines {
    pending: Vec<u8>,
}

impl DataLines {
    /// The payloads of the events `chunk` completes.
    fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            for line in event.split(|b| *b == b'\n') {
                if let Some(data) = line.strip_prefix(b"data: ") {
                    out.push(data.to_vec());
                }
            }
        }
        out
    }
}

/// Fields of the original request that a continuation keeps (sampling and objectives).
const KEPT_FIELDS: &[&str] = &[
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "slo",
    "priority",
];

/// Fields whose state a continuation could not carry: a grammar part-way through its
/// output (structured outputs, forced tool calls) would start over on the other replica.
const GRAMMAR_FIELDS: &[&str] = &[
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "tools",
];

/// Whether a stream for `request` could be continued elsewhere.
pub fn continuable(request: &Value) -> bool {
    request["n"].as_i64().unwrap_or(1) == 1
        && request["logprobs"].is_null()
        && request["echo"].as_bool() != Some(true)
        && GRAMMAR_FIELDS.iter().all(|f| request[*f].is_null())
}

/// The body of the continuation: a streamed completion of `prompt` (the rendered prompt
/// followed by the generated tokens), or `None` when nothing is left to generate.
pub fn continuation_body(request: &Value, prompt: &[u32], generated: usize) -> Option<Value> {
    let mut body = Map::new();
    for field in KEPT_FIELDS {
        if let Some(v) = request.get(*field).filter(|v| !v.is_null()) {
            body.insert((*field).to_owned(), v.clone());
        }
    }
    let limit = request["max_tokens"]
        .as_i64()
        .or_else(|| request["max_completion_tokens"].as_i64());
    if let Some(limit) = limit {
        let left = limit - i64::try_from(generated).unwrap_or(i64::MAX);
        if left <= 0 {
            return None;
        }
        body.insert("max_tokens".into(), json!(left));
    }
    if let Some(min) = request["min_tokens"].as_i64() {
        let left = (min - i64::try_from(generated).unwrap_or(i64::MAX)).max(0);
        body.insert("min_tokens".into(), json!(left));
    }
    body.insert("prompt".into(), json!(prompt));
    body.insert("stream".into(), json!(true));
    body.insert(
        "stream_options".into(),
        json!({"include_usage": request["stream_options"]["include_usage"].as_bool() == Some(true)}),
    );
    Some(Value::Object(body))
}

/// Rewrites the continuation's events as events of the original response.
#[derive(Debug)]
pub struct Rewriter {
    chat: bool,
    id: Value,
    created: Value,
    model: Value,
    prompt_tokens: usize,
    generated_before: usize,
    events: DataLines,
}

impl Rewriter {
    /// For a response of `log`'s kind (`chat` or completion).
    pub fn new(chat: bool, log: &StreamLog, prompt_tokens: usize, generated_before: usize) -> Self {
        Self {
            chat,
            id: log.id.clone(),
            created: log.created.clone(),
            model: log.model.clone(),
            prompt_tokens,
            generated_before,
            events: DataLines::default(),
        }
    }

    /// The client's bytes for a chunk of the continuation's stream.
    pub fn rewrite(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = String::new();
        for data in self.events.push(chunk) {
            out.push_str(&self.rewrite_data(&data));
        }
        Bytes::from(out)
    }

    fn rewrite_data(&self, data: &[u8]) -> String {
        if data == b"[DONE]" {
            return "data: [DONE]\n\n".into();
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return String::new();
        };
        let mut out = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
        });
        if let Some(error) = event.get("error") {
            return format!("data: {}\n\n", json!({"error": error}));
        }
        match event["choices"].as_array().and_then(|c| c.first()) {
            Some(choice) => {
                let text = choice["text"].as_str().unwrap_or_default();
                let finish = &choice["finish_reason"];
                out["choices"] = if self.chat {
                    let delta = if text.is_empty() {
                        json!({})
                    } else {
                        json!({"content": text})
                    };
                    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
                } else {
                    json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}])
                };
            }
            None => out["choices"] = json!([]),
        }
        if let Some(usage) = event.get("usage").filter(|u| !u.is_null()) {
            let completion =
                usage["completion_tokens"].as_u64().unwrap_or(0) + self.generated_before as u64;
            out["usage"] = json!({
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": self.prompt_tokens as u64 + completion,
            });
        }
        format!("data: {out}\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_follows_text_across_split_chunks_and_sees_the_end() {
        let mut log = StreamLog::default();
        let a = br#"data: {"id":"chatcmpl-7","created":5,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#;
        let b = br#"data: {"id":"chatcmpl-7","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#;
        let mut bytes = [&a[..], b"\n\n", &b[..], b"\n\n"].concat();
        let tail = bytes.split_off(30);
        log.observe(&bytes);
        log.observe(&tail);
        assert_eq!((log.text.as_str(), log.finished), ("Hello", false));
        assert_eq!(log.id, json!("chatcmpl-7"));
        log.observe(b"data: [DONE]\n\n");
        assert!(log.finished);
        let mut log = StreamLog::default();
        log.observe(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n");
        assert_eq!((log.text.as_str(), log.finished), ("Hi", false));
        log.observe(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n");
        assert!(log.finished, "a Responses stream ends with its final event");
    }

    #[test]
    fn a_continuation_keeps_sampling_and_lowers_the_budget() {
        let request = json!({"messages": [], "max_tokens": 10, "temperature": 0, "n": 1,
            "stream": true, "stream_options": {"include_usage": true}, "min_tokens": 3});
        assert!(continuable(&request));
        let body = continuation_body(&request, &[1, 2, 3], 4).unwrap();
        assert_eq!(body["max_tokens"], 6);
        assert_eq!(body["min_tokens"], 0);
        assert_eq!(body["prompt"], json!([1, 2, 3]));
        assert_eq!(body["temperature"], 0);
        assert!(body.get("messages").is_none());
        assert!(continuation_body(&request, &[1], 10).is_none());
        assert!(!continuable(&json!({"n": 2})));
        assert!(
            !continuable(&json!({"response_format": {"type": "json_object"}})),
            "a grammar part-way through cannot start over elsewhere"
        );
        assert!(!continuable(&json!({"tools": []})));
    }

    #[test]
    fn continuation_events_become_the_original_responses() {
        let log = StreamLog {
            id: json!("chatcmpl-7"),
            created: json!(5),
            model: json!("m"),
            ..StreamLog::default()
        };
        let mut rewriter = Rewriter::new(true, &log, 20, 4);
        let out = rewriter.rewrite(
            br#"data: {"id":"cmpl-9","object":"text_completion","created":6,"model":"m","choices":[{"index":0,"text":" world","finish_reason":"length"}]}

data: {"id":"cmpl-9","choices":[],"usage":{"prompt_tokens":24,"completion_tokens":2,"total_tokens":26}}

data: [DONE]

"#,
        );
        let text = String::from_utf8(out.to_vec()).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        let first: Value = serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(first["id"], "chatcmpl-7");
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["content"], " world");
        assert_eq!(first["choices"][0]["finish_reason"], "length");
        let usage: Value = serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26})
        );
        assert_eq!(events[2], "data: [DONE]");
    }
}
