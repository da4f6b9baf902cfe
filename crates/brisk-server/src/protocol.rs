//! The OpenAI wire format: request bodies (with vLLM's benchmarking extensions) and responses.
//!
//! Unknown fields are accepted and ignored, as OpenAI's and vLLM's servers do, so that any
//! client library works; fields of the wrong type are a 400 naming the field.

use brisk_tokenizer::ChatMessage;
use serde::{Deserialize, Serialize};

/// A prompt: text or token ids, alone or in a one-element list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Several texts (only one is accepted).
    Texts(Vec<String>),
    /// Token ids.
    Tokens(Vec<u32>),
    /// Several token lists (only one is accepted).
    TokenLists(Vec<Vec<u32>>),
}

/// `stop`: one string or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields shared by both endpoints.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SamplingFields {
    /// Model name; must match the served model when given.
    pub model: Option<String>,
    /// Maximum tokens to generate.
    pub max_tokens: Option<i64>,
    /// Chat's newer name for `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus threshold.
    pub top_p: Option<f32>,
    /// Top-k (vLLM extension; -1 or 0 disables).
    pub top_k: Option<i64>,
    /// Min-p (vLLM extension).
    pub min_p: Option<f32>,
    /// Seed.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Extra stop token ids (vLLM extension).
    pub stop_token_ids: Option<Vec<i64>>,
    /// Number of choices.
    pub n: Option<i64>,
    /// Stream as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Ignore EOS (vLLM extension for benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Minimum tokens before EOS/stop may end generation (vLLM extension).
    pub min_tokens: Option<i64>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f32>,
    /// CTRL repetition penalty (vLLM extension).
    pub repetition_penalty: Option<f32>,
    /// OpenAI `logit_bias`: token id (as a string key) → bias in [-100, 100]. Raw JSON,
    /// checked in `validate.rs` (ids against the vocabulary).
    pub logit_bias: Option<serde_json::Value>,
    /// This request's latency objective (brisk extension): `{"ttft_ms": .., "tpot_ms": ..}`,
    /// overriding the server's `--ttft-slo`/`--tpot-slo` bound by bound. Raw JSON, checked in
    /// `validate.rs` so that every mistake gets a message naming the field.
    pub slo: Option<serde_json::Value>,
    /// `"interactive"` (default) or `"batch"` (brisk extension). Kept as raw JSON so a wrong
    /// type gets the same clear message as a wrong value.
    pub priority: Option<serde_json::Value>,
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Legacy logprobs: the number of alternatives (0–20).
    pub logprobs: Option<i64>,
    /// Echo the prompt (not supported; refused when true).
    #[serde(default)]
    pub echo: bool,
    /// Shared sampling fields.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// Message content: text, or a list of parts of which the text ones are used.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    /// Part type; only `"text"` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    pub text: Option<String>,
}

/// One chat message as sent by clients.
#[derive(Clone, Debug, Deserialize)]
pub struct RequestMessage {
    /// `system`, `user`, `assistant`, `tool`…
    pub role: String,
    /// Its content (may be null for assistant tool calls).
    pub content: Option<Content>,
}

impl RequestMessage {
    /// The message for the template, or an error naming what is unsupported.
    pub fn to_chat_message(&self) -> Result<ChatMessage, String> {
        let content = match &self.content {
            // OpenAI's rule: only an assistant turn (one that made tool calls) may leave its
            // content out; a user or system turn without it is a client bug, not an empty turn.
            None if self.role == "assistant" => String::new(),
            None => return Err(format!("a {:?} message needs a `content`", self.role)),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(format!(
                            "content parts of type {:?} are not supported",
                            p.kind
                        ));
                    }
                    let part = p.text.as_deref().ok_or("a text part needs its `text`")?;
                    text.push_str(part);
                }
                text
            }
        };
        Ok(ChatMessage {
            role: self.role.clone(),
            content,
        })
    }
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// The conversation.
    pub messages: Vec<RequestMessage>,
    /// Return logprobs of the chosen tokens.
    #[serde(default)]
    pub logprobs: bool,
    /// Number of alternatives per token (0–20; needs `logprobs`).
    pub top_logprobs: Option<i64>,
    /// Whether to append the assistant turn opener (default true).
    pub add_generation_prompt: Option<bool>,
    /// Shared sampling fields.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// `usage`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Usage {
    /// Prompt tokens (per choice set: counted once).
    pub prompt_tokens: usize,
    /// Generated tokens over all choices.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
    /// Details on the prompt.
    pub prompt_tokens_details: PromptTokensDetails,
}

/// `usage.prompt_tokens_details`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> Result<ChatMessage, String> {
        serde_json::from_str::<RequestMessage>(json)
            .unwrap()
            .to_chat_message()
    }

    #[test]
    fn only_assistant_turns_may_leave_content_out() {
        assert_eq!(message(r#"{"role": "assistant"}"#).unwrap().content, "");
        assert!(message(r#"{"role": "user"}"#)
            .unwrap_err()
            .contains("content"));
        assert!(message(r#"{"role": "system", "content": null}"#).is_err());
        let parts = r#"{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}"#;
        assert_eq!(message(parts).unwrap().content, "ab");
        assert!(message(r#"{"role": "user", "content": [{"type": "text"}]}"#).is_err());
        assert!(message(r#"{"role": "user", "content": [{"type": "image_url"}]}"#).is_err());
    }
}
