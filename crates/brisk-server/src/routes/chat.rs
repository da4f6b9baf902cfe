//! `POST /v1/chat/completions`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};

use crate::auth::KeyClient;
use crate::error::ApiError;
use crate::generation::{Delta, Finish, TokenLogprob};
use crate::protocol::ChatCompletionRequest;
use crate::respond::{respond, Answer, Format};
use crate::tool_calls::ToolCall;
use crate::tools::Tools;
use crate::validate::{build_spec, check_model, GenerationSpec};
use crate::ServerState;

struct ChatFormat;

fn chat_logprobs(entries: &[TokenLogprob]) -> Value {
    let item =
        |text: &str, lp: f32| json!({"token": text, "logprob": lp, "bytes": text.as_bytes()});
    json!({
        "content": entries.iter().map(|e| {
            let mut v = item(&e.text, e.logprob);
            v["top_logprobs"] = Value::Array(e.top.iter().map(|(t, lp)| item(t, *lp)).collect());
            v
        }).collect::<Vec<_>>()
    })
}

/// Calls as OpenAI writes them; a stream's deltas carry each call's index too.
fn tool_calls_json(calls: &[ToolCall], streamed: bool) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                let mut v = json!({"id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}});
                if streamed {
                    v["index"] = json!(c.index);
                }
                v
            })
            .collect(),
    )
}

impl Format for ChatFormat {
    fn object(&self) -> &'static str {
        "chat.completion"
    }
    fn chunk_object(&self) -> &'static str {
        "chat.completion.chunk"
    }
    fn id_prefix(&self) -> &'static str {
        "chatcmpl"
    }
    fn choice(&self, index: usize, answer: Answer, finish: &Finish) -> Value {
        let mut message = json!({"role": "assistant", "content": answer.text});
        if !answer.tool_calls.is_empty() {
            if answer.text.is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = tool_calls_json(&answer.tool_calls, false);
        }
        json!({
            "index": index,
            "message": message,
            "logprobs": if answer.logprobs.is_empty() { Value::Null } else { chat_logprobs(&answer.logprobs) },
            "finish_reason": finish.reason,
        })
    }
    fn delta(&self, index: usize, delta: &Delta, first: bool) -> Value {
        let mut d = json!({});
        if first {
            d["role"] = json!("assistant");
        }
        if !delta.text.is_empty() || (first && delta.finish.is_none()) {
            d["content"] = json!(delta.text);
        }
        if !delta.tool_calls.is_empty() {
            d["tool_calls"] = tool_calls_json(&delta.tool_calls, true);
        }
        json!({
            "index": index,
            "delta": d,
            "logprobs": if delta.logprobs.is_empty() { Value::Null } else { chat_logprobs(&delta.logprobs) },
            "finish_reason": delta.finish.as_ref().map(|f| f.reason),
        })
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<ServerState>>,
    key: Option<Extension<KeyClient>>,
    decode_on: super::handover::DecodeOn,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let mut spec = prepare(&state, body).await?;
    KeyClient::apply(key, &mut spec.request.client);
    spec.decode_on = decode_on.0;
    respond(state, spec, ChatFormat, arrival).await
}

/// `POST /v1/chat/completions/render`: the conversation's token ids after the chat template,
/// as the request would be served (vLLM's render route, which routers call to route by
/// tokens): the same checks, nothing generated.
pub async fn render(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let spec = prepare(&state, body).await?;
    Ok(axum::Json(super::rendered(&state, &spec)).into_response())
}

/// Parses and checks a chat request and renders and tokenizes its conversation.
async fn prepare(
    state: &ServerState,
    body: Result<Bytes, BytesRejection>,
) -> Result<GenerationSpec, ApiError> {
    let body = super::read_body(body)?;
    let req: ChatCompletionRequest = super::parse_body(&body)?;
    check_model(state, req.sampling.model.as_deref())?;
    crate::fields::refuse_unknown(&req.unknown)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let messages = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.to_chat_message().map_err(|e| ApiError {
                param: Some(format!("messages[{i}].{}", e.field)),
                ..ApiError::invalid("messages", e.message)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tools = Tools::from_request(
        req.tools.as_ref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls.as_ref(),
    )?;
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
    let tokens = state
        .render_and_tokenize(messages, tools.clone(), add_generation_prompt)
        .await?;
    let logprobs = if req.logprobs {
        Some(
            req.top_logprobs
                .map(|v| {
                    usize::try_from(v).map_err(|_| {
                        ApiError::invalid("top_logprobs", "`top_logprobs` must be >= 0")
                    })
                })
                .transpose()?
                .unwrap_or(0),
        )
    } else if req.top_logprobs.is_some_and(|v| v > 0) {
        return Err(ApiError::invalid(
            "top_logprobs",
            "`top_logprobs` needs `logprobs: true`",
        ));
    } else {
        None
    };
    let mut spec = build_spec(state, &req.sampling, tokens, logprobs)?;
    crate::structured::constrain(state, &req.sampling, tools.as_ref(), &mut spec).await?;
    spec.tool_names = tools.map(|t| t.names());
    Ok(spec)
}
