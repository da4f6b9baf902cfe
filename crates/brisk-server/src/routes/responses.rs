//! `POST /v1/responses`: OpenAI's Responses API for text in and text out, streamed or not.
//!
//! brisk keeps no state between requests, so this is the API with `store: false`
//! semantics: the whole conversation comes in `input` each time, and what needs stored
//! state (`previous_response_id`, `conversation`, `background`) or a capability brisk does
//! not have (built-in tools, reasoning) is refused with a 400 that says so. A request is
//! translated into the chat endpoint's terms — messages through the model's template, the
//! same sampling checks, `text.format` as structured outputs — and served by the same
//! engine path; only the response's shape differs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use brisk_tokenizer::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::auth::KeyClient;
use crate::error::ApiError;
use crate::generation::{ChoiceRun, Finish};
use crate::protocol::SamplingFields;
use crate::request_id::in_current_span;
use crate::respond::{submit_all, unix_time};
use crate::validate::{build_spec, check_model, GenerationSpec};
use crate::ServerState;

/// The request body; fields brisk cannot honour are read so they can be refused by name.
#[derive(Debug, Deserialize)]
struct ResponsesRequest {
    model: Option<String>,
    input: Value,
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    #[serde(default)]
    stream: bool,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ..}}`.
    text: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<Value>,
    /// Brisk extensions shared with the other endpoints.
    seed: Option<i64>,
    slo: Option<Value>,
    priority: Option<Value>,
    /// The end user, for fair share between clients.
    user: Option<Value>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// Fields that need what brisk does not have, with why.
const REFUSED: &[(&str, &str)] = &[
    (
        "previous_response_id",
        "brisk stores no responses: send the whole conversation in `input`",
    ),
    (
        "conversation",
        "brisk stores no conversations: send the whole conversation in `input`",
    ),
    ("background", "brisk runs no background responses"),
    ("reasoning", "this model has no reasoning settings"),
    (
        "include",
        "brisk includes nothing beyond the response itself",
    ),
    ("prompt", "brisk stores no prompt templates"),
];

/// `POST /v1/responses`.
pub async fn responses(
    State(state): State<Arc<ServerState>>,
    key: Option<Extension<KeyClient>>,
    decode_on: super::handover::DecodeOn,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let body = super::read_body(body)?;
    let req: ResponsesRequest = super::parse_body(&body)?;
    check_model(&state, req.model.as_deref())?;
    let echo = Echo::of(&req);
    let mut spec = prepare(&state, req).await?;
    KeyClient::apply(key, &mut spec.request.client);
    spec.decode_on = decode_on.0;
    let run = submit_all(&state, &spec, arrival)
        .await?
        .pop()
        .expect("one choice");
    let id = format!("resp_{:016x}", state.next_response_id());
    let item_id = format!("msg_{:016x}", state.next_response_id());
    let meta = Meta {
        id,
        item_id,
        created: unix_time(),
        model: state.model_name.clone(),
        echo,
    };
    if spec.stream {
        Ok(stream(run, meta))
    } else {
        whole(run, meta).await
    }
}

/// `POST /v1/responses/render`: the prompt's token ids, as the chat endpoint's render route
/// answers (routers call it to route by tokens); nothing generated.
pub async fn render(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::read_body(body)?;
    let req: ResponsesRequest = super::parse_body(&body)?;
    check_model(&state, req.model.as_deref())?;
    let spec = prepare(&state, req).await?;
    Ok(axum::Json(super::rendered(&state, &spec)).into_response())
}

/// Checks the request and turns it into a generation, as the chat endpoint would.
async fn prepare(state: &ServerState, req: ResponsesRequest) -> Result<GenerationSpec, ApiError> {
    for (field, why) in REFUSED {
        let given = req.unknown.get(*field).filter(|v| !v.is_null());
        if given.is_some_and(|v| v != &Value::Bool(false) && v != &json!([])) {
            return Err(ApiError::invalid(
                *field,
                format!("`{field}` is not supported: {why}"),
            ));
        }
    }
    let mut unknown = req.unknown.clone();
    unknown.retain(|k, _| !REFUSED.iter().any(|(f, _)| f == k));
    crate::fields::refuse_unknown(&unknown)?;
    if let Some(tools) = req
        .tools
        .as_ref()
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let kind = tools[0].get("type").and_then(Value::as_str).unwrap_or("?");
        return Err(ApiError::invalid(
            "tools",
            format!("tools on /v1/responses are not supported (built-in tools such as web search never; a `{kind}` tool here neither): use /v1/chat/completions for function calling"),
        ));
    }
    if req
        .tool_choice
        .as_ref()
        .is_some_and(|c| c != "none" && c != "auto" && !c.is_null())
    {
        return Err(ApiError::invalid(
            "tool_choice",
            "`tool_choice` needs `tools`, which this endpoint does not take",
        ));
    }
    let _ = &req.parallel_tool_calls;
    let mut messages = Vec::new();
    if let Some(instructions) = &req.instructions {
        messages.push(ChatMessage::new("system", instructions.clone()));
    }
    messages.extend(input_messages(&req.input)?);
    let tokens = state.render_and_tokenize(messages, None, true).await?;
    let fields = SamplingFields {
        model: req.model.clone(),
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        stream: req.stream,
        slo: req.slo.clone(),
        priority: req.priority.clone(),
        user: req.user.clone(),
        response_format: text_format(req.text.as_ref())?,
        ..SamplingFields::default()
    };
    let mut spec = build_spec(state, &fields, tokens, None)?;
    crate::structured::constrain(state, &fields, None, &mut spec).await?;
    Ok(spec)
}

/// `input`: a text (one user turn) or a list of messages (`{"role", "content"}`, optionally
/// `"type": "message"`), whose content is a text or a list of `input_text`/`output_text`
/// parts.
fn input_messages(input: &Value) -> Result<Vec<ChatMessage>, ApiError> {
    let items = match input {
        Value::String(text) => return Ok(vec![ChatMessage::new("user", text.clone())]),
        Value::Array(items) if !items.is_empty() => items,
        other => {
            return Err(ApiError::invalid(
                "input",
                format!("`input` must be a text or a non-empty list of messages, got {other}"),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| input_message(i, item))
        .collect()
}

fn input_message(i: usize, item: &Value) -> Result<ChatMessage, ApiError> {
    let param = format!("input[{i}]");
    let bad = |message: String| ApiError::invalid(param.clone(), message);
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    if kind != "message" {
        return Err(bad(format!(
            "input items of type {kind:?} are not supported; send messages"
        )));
    }
    let role = match item.get("role").and_then(Value::as_str) {
        Some("developer") => "system",
        Some(role @ ("system" | "user" | "assistant")) => role,
        other => {
            return Err(bad(format!(
                "unknown role {other:?}; expected system, developer, user or assistant"
            )))
        }
    };
    let content = match item.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("input_text" | "output_text" | "text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(bad(format!(
                            "content parts of type {kind:?} are not supported; send input_text"
                        )))
                    }
                }
            }
            text
        }
        _ => return Err(bad("a message needs its `content`".into())),
    };
    Ok(ChatMessage::new(role, content))
}

/// `text.format` as the chat endpoint's `response_format`: the Responses API writes the
/// schema's fields beside `type` instead of inside `json_schema`.
fn text_format(text: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(format) = text.and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => Ok(Some(json!({"type": "json_schema", "json_schema": {
            "name": format.get("name"), "schema": format.get("schema"), "strict": format.get("strict"),
        }}))),
        Some("text" | "json_object") => Ok(Some(format.clone())),
        _ => Err(ApiError::invalid(
            "text.format",
            format!("`text.format` must be {{\"type\": \"text\" | \"json_object\" | \"json_schema\", ..}}, got {format}"),
        )),
    }
}

/// What the response repeats of its request.
#[derive(Debug)]
struct Echo {
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    temperature: f32,
    top_p: f32,
    text: Value,
}

impl Echo {
    fn of(req: &ResponsesRequest) -> Self {
        Self {
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            temperature: req.temperature.unwrap_or(1.0),
            top_p: req.top_p.unwrap_or(1.0),
            text: req
                .text
                .clone()
                .unwrap_or_else(|| json!({"format": {"type": "text"}})),
        }
    }
}

/// The response's identity and echoed settings.
#[derive(Debug)]
struct Meta {
    id: String,
    item_id: String,
    created: u64,
    model: String,
    echo: Echo,
}

impl Meta {
    /// The message item holding `text`.
    fn item(&self, text: &str, done: bool) -> Value {
        let content = if done || !text.is_empty() {
            json!([{"type": "output_text", "text": text, "annotations": []}])
        } else {
            json!([])
        };
        json!({"type": "message", "id": self.item_id, "role": "assistant",
            "status": if done { "completed" } else { "in_progress" }, "content": content})
    }

    /// The response object; `finish` once it is over.
    fn response(&self, text: &str, finish: Option<&Finish>) -> Value {
        let (status, incomplete, output, usage) = match finish {
            None => ("in_progress", Value::Null, json!([]), Value::Null),
            Some(f) => {
                let incomplete = if f.reason == "length" {
                    json!({"reason": "max_output_tokens"})
                } else {
                    Value::Null
                };
                let status = if incomplete.is_null() {
                    "completed"
                } else {
                    "incomplete"
                };
                let usage = json!({
                    "input_tokens": f.prompt_tokens,
                    "input_tokens_details": {"cached_tokens": f.cached_tokens},
                    "output_tokens": f.completion_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": f.prompt_tokens + f.completion_tokens,
                });
                (status, incomplete, json!([self.item(text, true)]), usage)
            }
        };
        let e = &self.echo;
        json!({
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "error": null, "incomplete_details": incomplete, "model": self.model,
            "instructions": e.instructions, "max_output_tokens": e.max_output_tokens,
            "output": output, "parallel_tool_calls": true, "previous_response_id": null,
            "store": false, "temperature": e.temperature, "top_p": e.top_p, "text": e.text,
            "tool_choice": "auto", "tools": [], "truncation": "disabled", "metadata": {},
            "usage": usage,
        })
    }
}

/// Answers with the whole response.
async fn whole(mut run: ChoiceRun, meta: Meta) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(delta) = run.next().await {
        let delta = delta?;
        text.push_str(&delta.text);
        if let Some(finish) = delta.finish {
            return Ok(axum::Json(meta.response(&text, Some(&finish))).into_response());
        }
    }
    Err(ApiError::internal("the response ended without finishing"))
}

/// Streams the response as the Responses API's typed events.
fn stream(mut run: ChoiceRun, meta: Meta) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<(String, Value)>();
    tokio::spawn(in_current_span(async move {
        let mut seq = 0u64;
        let mut send = |kind: &str, mut data: Value| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(seq);
            seq += 1;
            tx.send((kind.to_owned(), data)).is_ok()
        };
        let at = |extra: Value| {
            let mut v = json!({"item_id": meta.item_id, "output_index": 0, "content_index": 0});
            for (k, x) in extra.as_object().into_iter().flatten() {
                v[k] = x.clone();
            }
            v
        };
        let opened = send(
            "response.created",
            json!({"response": meta.response("", None)}),
        ) && send(
            "response.in_progress",
            json!({"response": meta.response("", None)}),
        ) && send(
            "response.output_item.added",
            json!({"output_index": 0, "item": meta.item("", false)}),
        ) && send(
            "response.content_part.added",
            at(json!({"part": {"type": "output_text", "text": "", "annotations": []}})),
        );
        if !opened {
            return;
        }
        let mut text = String::new();
        while let Some(delta) = run.next().await {
            let delta = match delta {
                Ok(d) => d,
                Err(e) => {
                    let error = e.body()["error"].clone();
                    send(
                        "error",
                        json!({"code": error["code"], "message": error["message"], "param": error["param"]}),
                    );
                    return;
                }
            };
            if !delta.text.is_empty() {
                text.push_str(&delta.text);
                if !send(
                    "response.output_text.delta",
                    at(json!({"delta": delta.text, "logprobs": []})),
                ) {
                    return; // the client left: dropping the run aborts the request
                }
            }
            if let Some(finish) = delta.finish {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                send(
                    "response.output_text.done",
                    at(json!({"text": text, "logprobs": []})),
                );
                send("response.content_part.done", at(json!({"part": part})));
                send(
                    "response.output_item.done",
                    json!({"output_index": 0, "item": meta.item(&text, true)}),
                );
                let kind = if finish.reason == "length" {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                send(
                    kind,
                    json!({"response": meta.response(&text, Some(&finish))}),
                );
                return;
            }
        }
    }));
    let events = UnboundedReceiverStream::new(rx).map(|(kind, data)| {
        Ok::<_, Infallible>(Event::default().event(kind).data(data.to_string()))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
