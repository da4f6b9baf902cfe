//! Running a validated generation and answering in either mode: one JSON response, or
//! server-sent events ending in `data: [DONE]`. The endpoints differ only in how a choice's
//! text is wrapped, which [`Format`] captures.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::generation::{ChoiceRun, Delta, Finish, FirstTokenHook, TokenLogprob};
use crate::protocol::{PromptTokensDetails, Usage};
use crate::request_id::in_current_span;
use crate::routes::handover::{hand_over, PromptStream};
use crate::tool_calls::ToolCall;
use crate::validate::GenerationSpec;
use crate::ServerState;

/// How an endpoint wraps choices.
pub trait Format: Send + Sync + 'static {
    /// `object` of a full response.
    fn object(&self) -> &'static str;
    /// `object` of a streamed chunk.
    fn chunk_object(&self) -> &'static str;
    /// Prefix of response ids.
    fn id_prefix(&self) -> &'static str;
    /// A full response's choice.
    fn choice(&self, index: usize, answer: Answer, finish: &Finish) -> Value;
    /// A streamed choice delta; `first` is the choice's first chunk.
    fn delta(&self, index: usize, delta: &Delta, first: bool) -> Value;
}

/// One choice's whole answer.
#[derive(Debug, Default)]
pub struct Answer {
    /// Its text (content, without tool calls).
    pub text: String,
    /// Its tokens' logprobs, if asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// The calls it made.
    pub tool_calls: Vec<ToolCall>,
}

fn usage(finishes: &[Finish]) -> Usage {
    let prompt = finishes.first().map_or(0, |f| f.prompt_tokens);
    let completion: usize = finishes.iter().map(|f| f.completion_tokens).sum();
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: finishes.first().map_or(0, |f| f.cached_tokens),
        },
    }
}

fn submit_one(
    state: &Arc<ServerState>,
    spec: &GenerationSpec,
    i: usize,
    arrival: Instant,
) -> Result<ChoiceRun, ApiError> {
    let mut request = spec.request_for_choice(i);
    // Deadlines count from when the request reached the server, not the engine.
    request.received = Some(arrival);
    // One choice of unconstrained output moves to its decode replica (a constrained
    // sampler's state does not travel; copies of `n` share its prompt blocks here).
    let decode_on = spec
        .decode_on
        .clone()
        .filter(|_| spec.n == 1 && request.constraint.is_none());
    request.spec.park_after_first_token = decode_on.is_some();
    let call_ids = format!("call_{}_{i}", state.next_response_id());
    let ticket = state.waiting.enter()?;
    let stream = state
        .engine
        .submit(request)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let hand_over = decode_on.map(|to| {
        let (state, id) = (Arc::clone(state), stream.id());
        // The prompt's blocks set off as its chunks are computed; the hook stops the
        // stream and copies the rest.
        let streamed = PromptStream::start(Arc::clone(&state), id, to.clone());
        Box::new(move || hand_over(state, id, to, streamed)) as FirstTokenHook
    });
    Ok(ChoiceRun::new(
        stream,
        Arc::clone(&state.tokenizer),
        spec.stop.clone(),
        spec.request.logprobs.is_some(),
        Arc::clone(&state.metrics),
        arrival,
    )
    .with_ticket(ticket)
    .with_deadline(state.request_timeout.map(|t| arrival + t))
    .with_tool_calls(spec.tool_names.clone(), call_ids)
    .on_first_token(hand_over))
}

/// Submits every choice. With `n > 1`, the copies are submitted once the first choice's
/// prompt has been computed, so they find its full blocks in the prefix cache and share them
/// instead of computing the prompt `n` times. When admission control may reject requests
/// (`--reject-unattainable`), a stream also waits for its first event, so that a refusal is
/// answered as a 429 before the 200 of an event stream is sent.
pub(crate) async fn submit_all(
    state: &Arc<ServerState>,
    spec: &GenerationSpec,
    arrival: Instant,
) -> Result<Vec<ChoiceRun>, ApiError> {
    let mut first = submit_one(state, spec, 0, arrival)?;
    if spec.n > 1 || (spec.stream && state.slo.may_reject) {
        first.prime().await;
        if let Some(e) = first.rejection() {
            return Err(e);
        }
    }
    let mut runs = vec![first];
    for i in 1..spec.n {
        runs.push(submit_one(state, spec, i, arrival)?);
    }
    Ok(runs)
}

/// Runs `spec` and answers with one response or an SSE stream.
pub async fn respond<F: Format>(
    state: Arc<ServerState>,
    spec: GenerationSpec,
    format: F,
    arrival: Instant,
) -> Result<Response, ApiError> {
    let runs = submit_all(&state, &spec, arrival).await?;
    let id = format!("{}-{}", format.id_prefix(), state.next_response_id());
    let created = unix_time();
    if spec.stream {
        Ok(stream(state, spec, format, runs, id, created))
    } else {
        let mut choices = Vec::new();
        let mut finishes = Vec::new();
        for (index, mut run) in runs.into_iter().enumerate() {
            let mut answer = Answer::default();
            while let Some(delta) = run.next().await {
                let delta = delta?;
                answer.text.push_str(&delta.text);
                answer.logprobs.extend(delta.logprobs);
                answer.tool_calls.extend(delta.tool_calls);
                if let Some(finish) = delta.finish {
                    choices.push(format.choice(index, std::mem::take(&mut answer), &finish));
                    finishes.push(finish);
                }
            }
        }
        let body = json!({
            "id": id,
            "object": format.object(),
            "created": created,
            "model": state.model_name,
            "choices": choices,
            "usage": usage(&finishes),
        });
        Ok(axum::Json(body).into_response())
    }
}

fn stream<F: Format>(
    state: Arc<ServerState>,
    spec: GenerationSpec,
    format: F,
    runs: Vec<ChoiceRun>,
    id: String,
    created: u64,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let format = Arc::new(format);
    let model = state.model_name.clone();
    let chunk = {
        let (id, model, object) = (id.clone(), model.clone(), format.chunk_object());
        move |choices: Value, usage: Option<Usage>| {
            let mut v = json!({
                "id": id, "object": object, "created": created, "model": model, "choices": choices,
            });
            if let Some(u) = usage {
                v["usage"] = serde_json::to_value(u).expect("usage serializes");
            }
            v.to_string()
        }
    };
    let chunk = Arc::new(chunk);
    let mut tasks = Vec::new();
    for (index, mut run) in runs.into_iter().enumerate() {
        let (tx, format, chunk) = (tx.clone(), Arc::clone(&format), Arc::clone(&chunk));
        // Each choice streams on its own; when the client goes away the send fails, the task
        // ends, and dropping its engine stream aborts the request and frees its blocks.
        // The tasks log under the request's span, so with its id.
        tasks.push(tokio::spawn(in_current_span(async move {
            let mut first = true;
            while let Some(delta) = run.next().await {
                let delta = match delta {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = tx.send(e.body().to_string());
                        return None;
                    }
                };
                if delta.text.is_empty()
                    && delta.logprobs.is_empty()
                    && delta.tool_calls.is_empty()
                    && delta.finish.is_none()
                    && !first
                {
                    continue;
                }
                let body = chunk(json!([format.delta(index, &delta, first)]), None);
                first = false;
                if tx.send(body).is_err() {
                    return None;
                }
                if let Some(finish) = delta.finish {
                    return Some(finish);
                }
            }
            None
        })));
    }
    let include_usage = spec.include_usage;
    tokio::spawn(in_current_span(async move {
        let mut finishes = Vec::new();
        for task in tasks {
            if let Ok(Some(f)) = task.await {
                finishes.push(f);
            }
        }
        if include_usage && finishes.len() == spec.n {
            let _ = tx.send(chunk(json!([]), Some(usage(&finishes))));
        }
        let _ = tx.send("[DONE]".to_string());
    }));
    let events = UnboundedReceiverStream::new(rx)
        .map(|data| Ok::<_, Infallible>(Event::default().data(data)));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Seconds since the Unix epoch.
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
