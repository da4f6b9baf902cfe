//! `POST /v1/completions`.

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
use crate::protocol::{CompletionRequest, Prompt};
use crate::respond::{respond, Answer, Format};
use crate::validate::{build_spec, check_model, GenerationSpec};
use crate::ServerState;

struct CompletionFormat;

/// OpenAI's legacy logprobs object.
fn legacy_logprobs(entries: &[TokenLogprob], offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(entries.len());
    let mut pos = offset;
    for e in entries {
        text_offset.push(pos);
        pos += e.text.len();
    }
    json!({
        "tokens": entries.iter().map(|e| e.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(|e| {
            e.top.iter().map(|(t, lp)| (t.clone(), json!(lp))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

impl Format for CompletionFormat {
    fn object(&self) -> &'static str {
        "text_completion"
    }
    fn chunk_object(&self) -> &'static str {
        "text_completion"
    }
    fn id_prefix(&self) -> &'static str {
        "cmpl"
    }
    fn choice(&self, index: usize, answer: Answer, finish: &Finish) -> Value {
        let logprobs = &answer.logprobs;
        json!({
            "index": index,
            "text": answer.text,
            "logprobs": if logprobs.is_empty() { Value::Null } else { legacy_logprobs(logprobs, 0) },
            "finish_reason": finish.reason,
        })
    }
    fn delta(&self, index: usize, delta: &Delta, _first: bool) -> Value {
        json!({
            "index": index,
            "text": delta.text,
            "logprobs": if delta.logprobs.is_empty() { Value::Null } else { legacy_logprobs(&delta.logprobs, 0) },
            "finish_reason": delta.finish.as_ref().map(|f| f.reason),
        })
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<ServerState>>,
    key: Option<Extension<KeyClient>>,
    decode_on: super::handover::DecodeOn,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let mut spec = prepare(&state, body).await?;
    KeyClient::apply(key, &mut spec.request.client);
    spec.decode_on = decode_on.0;
    respond(state, spec, CompletionFormat, arrival).await
}

/// `POST /v1/completions/render`: the prompt's token ids, as the request would be served
/// (vLLM's render route, which routers call to route by tokens): the same checks, nothing
/// generated. One object per prompt, in a list.
pub async fn render(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let spec = prepare(&state, body).await?;
    Ok(axum::Json(json!([super::rendered(&state, &spec)])).into_response())
}

/// Parses and checks a completion request and tokenizes its prompt.
async fn prepare(
    state: &ServerState,
    body: Result<Bytes, BytesRejection>,
) -> Result<GenerationSpec, ApiError> {
    let body = super::read_body(body)?;
    let req: CompletionRequest = super::parse_body(&body)?;
    check_model(state, req.sampling.model.as_deref())?;
    crate::fields::refuse_unknown(&req.unknown)?;
    if req.echo {
        return Err(ApiError::invalid("echo", "`echo` is not supported"));
    }
    let prompt = match req.prompt {
        Prompt::Text(t) => PromptInput::Text(t),
        Prompt::Texts(mut v) if v.len() == 1 => PromptInput::Text(v.remove(0)),
        Prompt::Tokens(t) => PromptInput::Tokens(t),
        Prompt::TokenLists(mut v) if v.len() == 1 => PromptInput::Tokens(v.remove(0)),
        _ => {
            return Err(ApiError::invalid(
                "prompt",
                "exactly one prompt per request is supported (send several requests instead)",
            ))
        }
    };
    let tokens = match prompt {
        PromptInput::Text(text) => state.tokenize(text).await?,
        PromptInput::Tokens(tokens) => {
            if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= state.vocab_size) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!(
                        "token id {bad} is outside the vocabulary of {}",
                        state.vocab_size
                    ),
                ));
            }
            tokens
        }
    };
    let logprobs = req
        .logprobs
        .map(|v| {
            usize::try_from(v).map_err(|_| ApiError::invalid("logprobs", "`logprobs` must be >= 0"))
        })
        .transpose()?;
    let mut spec = build_spec(state, &req.sampling, tokens, logprobs)?;
    crate::structured::constrain(state, &req.sampling, None, &mut spec).await?;
    Ok(spec)
}

enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
}
