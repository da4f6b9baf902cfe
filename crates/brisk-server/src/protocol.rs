//! The OpenAI wire format: request bodies (with vLLM's benchmarking extensions) and responses.
//!
//! Fields of the wrong type are a 400 naming the field. Fields brisk does not know are
//! collected (`unknown`) and refused by name, except the few ignored on purpose
//! (`fields.rs`).

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
    /// `false` opts this request out of speculative decoding when the server speculates
    /// (brisk extension; default `true`). Kept as raw JSON so a wrong type gets a message
    /// naming the field.
    pub speculative: Option<serde_json::Value>,
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
    /// OpenAI's `user`: who the end user is. brisk shares the server fairly between users
    /// (the scheduler's fair share); raw JSON, checked in `validate.rs`.
    pub user: Option<serde_json::Value>,
    /// OpenAI's structured outputs: `{"type": "text" | "json_object" | "json_schema", ..}`.
    /// Raw JSON, checked in `structured.rs` like the other ways of constraining the output.
    pub response_format: Option<serde_json::Value>,
    /// vLLM's structured outputs: `{"json" | "regex" | "choice" | "grammar" | "json_object": ..}`.
    pub structured_outputs: Option<serde_json::Value>,
    /// vLLM's older spelling: a JSON schema.
    pub guided_json: Option<serde_json::Value>,
    /// vLLM's older spelling: a regular expression.
    pub guided_regex: Option<serde_json::Value>,
    /// vLLM's older spelling: one of these strings.
    pub guided_choice: Option<serde_json::Value>,
    /// vLLM's older spelling: a grammar (Lark, or GBNF when it uses `::=`).
    pub guided_grammar: Option<serde_json::Value>,
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
    /// Every other field, refused unless ignored on purpose.
    #[serde(flatten)]
    pub unknown: serde_json::Map<String, serde_json::Value>,
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
    /// An assistant turn's calls: `[{"id", "type": "function", "function": {"name", "arguments"}}]`.
    pub tool_calls: Option<serde_json::Value>,
    /// A tool turn: the call it answers.
    pub tool_call_id: Option<String>,
    /// A tool turn: the function that answered (other roles: refused, templates ignore it).
    pub name: Option<String>,
    /// Every other field, refused unless ignored on purpose.
    #[serde(flatten)]
    pub unknown: serde_json::Map<String, serde_json::Value>,
}

/// What is wrong with a message: the field at fault (`content`, `role`, …) and why.
#[derive(Debug, PartialEq)]
pub struct MessageError {
    /// The message's field at fault.
    pub field: String,
    /// Why.
    pub message: String,
}

fn message_error(field: &str, message: impl Into<String>) -> MessageError {
    MessageError {
        field: field.to_owned(),
        message: message.into(),
    }
}

impl RequestMessage {
    /// The message for the template, or an error naming what is unsupported. OpenAI's
    /// `developer` role is its newer name for `system`, and reaches templates as such.
    pub fn to_chat_message(&self) -> Result<ChatMessage, MessageError> {
        let role = match self.role.as_str() {
            "developer" => "system",
            "system" | "user" | "assistant" | "tool" => self.role.as_str(),
            other => {
                return Err(message_error(
                    "role",
                    format!(
                    "unknown role {other:?}; expected system, developer, user, assistant or tool"
                ),
                ))
            }
        };
        let content = self.text().map_err(|e| message_error("content", e))?;
        if self.name.is_some() && role != "tool" {
            return Err(message_error(
                "name",
                "`name` is supported on tool messages only",
            ));
        }
        if self.tool_call_id.is_some() && role != "tool" {
            return Err(message_error(
                "tool_call_id",
                "`tool_call_id` belongs on tool messages only",
            ));
        }
        let tool_calls = match &self.tool_calls {
            None | Some(serde_json::Value::Null) => None,
            Some(calls) if role == "assistant" => {
                Some(template_tool_calls(calls).map_err(|e| message_error("tool_calls", e))?)
            }
            Some(_) => {
                return Err(message_error(
                    "tool_calls",
                    "only assistant messages carry `tool_calls`",
                ))
            }
        };
        if let Some(field) = self.unknown.keys().find(|k| !self.unknown[*k].is_null()) {
            return Err(message_error(
                field,
                format!("unsupported message field `{field}`"),
            ));
        }
        Ok(ChatMessage {
            role: role.to_owned(),
            content,
            tool_calls,
            tool_call_id: self.tool_call_id.clone(),
        })
    }

    /// The content as one text.
    fn text(&self) -> Result<String, String> {
        match &self.content {
            // OpenAI's rule: only an assistant turn (one that made tool calls) may leave its
            // content out; a user or system turn without it is a client bug, not an empty turn.
            None if self.role == "assistant" => Ok(String::new()),
            None => Err(format!("a {:?} message needs a `content`", self.role)),
            Some(Content::Text(t)) => Ok(t.clone()),
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
                Ok(text)
            }
        }
    }
}

/// An assistant turn's calls as templates read them: OpenAI sends each call's arguments as
/// a JSON text; templates (Qwen2.5's) write them with `tojson`, so they get the object.
fn template_tool_calls(calls: &serde_json::Value) -> Result<serde_json::Value, String> {
    let list = calls
        .as_array()
        .ok_or("`tool_calls` must be a list of calls")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, call) in list.iter().enumerate() {
        let function = call
            .get("function")
            .filter(|f| f.get("name").is_some_and(|n| n.is_string()))
            .ok_or_else(|| format!("tool_calls[{i}] needs a `function` with a `name`"))?;
        let arguments = match function.get("arguments") {
            None | Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(serde_json::Value::String(text)) => serde_json::from_str(text).map_err(|e| {
                format!("tool_calls[{i}].function.arguments is not valid JSON: {e}")
            })?,
            Some(other) => other.clone(),
        };
        let mut call = call.clone();
        call["type"] = serde_json::json!("function");
        call["function"]["arguments"] = arguments;
        out.push(call);
    }
    Ok(serde_json::Value::Array(out))
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
    /// Functions the model may call. Raw JSON, checked in `tools.rs`.
    pub tools: Option<serde_json::Value>,
    /// `"none"`, `"auto"`, `"required"` or a named function.
    pub tool_choice: Option<serde_json::Value>,
    /// Whether several calls may come back in one answer (default true).
    pub parallel_tool_calls: Option<serde_json::Value>,
    /// Shared sampling fields.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// Every other field, refused unless ignored on purpose.
    #[serde(flatten)]
    pub unknown: serde_json::Map<String, serde_json::Value>,
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
            .map_err(|e| format!("{}: {}", e.field, e.message))
    }

    #[test]
    fn fields_brisk_does_not_know_are_collected_and_known_ones_are_not() {
        let req: ChatCompletionRequest = serde_json::from_str(
            r#"{"messages": [], "temperature": 0.5, "logprobs": true, "best_of": 2, "suffix": "u"}"#,
        )
        .unwrap();
        let mut unknown: Vec<&String> = req.unknown.keys().collect();
        unknown.sort();
        assert_eq!(unknown, ["best_of", "suffix"]);
        assert_eq!(req.sampling.temperature, Some(0.5));
        assert!(req.logprobs);
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
        assert_eq!(
            message(r#"{"role": "developer", "content": "be brief"}"#)
                .unwrap()
                .role,
            "system"
        );
        assert!(message(r#"{"role": "function", "content": "x"}"#)
            .unwrap_err()
            .contains("unknown role"));
    }
}
