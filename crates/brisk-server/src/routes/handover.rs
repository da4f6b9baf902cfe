//! Moving a running request to another replica (`/internal/v1/…`, behind the API key like
//! every route).
//!
//! The source exports the request (its K/V in the pool's own type, its sampler's position,
//! its scheduler state; paused meanwhile), posts it to the destination's import route, and on
//! success hands the request's event channel to a relay that feeds it what the destination
//! streams back — so the client's connection stays where it is and its stream goes on token
//! for token: the source proxies the destination. A destination that refuses (no room,
//! another model or cache type) or cannot be reached leaves the request where it was, resumed.
//! A destination that dies mid-stream ends the client's request with an error.
//!
//! The destination answers an import with the request's continuation as JSON lines, one per
//! engine event (`{"event": "token", …}`, then `{"event": "finished", …}`).
//!
//! Between replicas this runs over HTTP/2 (cleartext, prior knowledge: every `brisk serve`
//! speaks both HTTP/1.1 and HTTP/2 on its one port): the export streams up as the body of one
//! HTTP/2 stream — header, then the K/V as the backend exported them, never copied into one
//! buffer — and the continuation streams back on the same stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use brisk_engine::{
    EngineEvent, EngineFailure, FinishReason, GeneratedToken, MoveError, RequestExport,
    RequestStream,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::shutdown::HTTP2_WINDOW;
use crate::ServerState;

/// One engine event on the wire between replicas.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum WireEvent {
    Token {
        token: u32,
        /// `None` when the request asked for no logprobs.
        logprob: Option<f32>,
        top_logprobs: Vec<(u32, f32)>,
    },
    Finished {
        reason: String,
        prompt_tokens: usize,
        output_tokens: usize,
        cached_tokens: usize,
    },
    Error {
        message: String,
    },
}

impl WireEvent {
    fn of(event: EngineEvent) -> Self {
        match event {
            EngineEvent::Token(t) => Self::Token {
                token: t.token,
                logprob: (!t.logprob.is_nan()).then_some(t.logprob),
                top_logprobs: t.top_logprobs,
            },
            EngineEvent::Finished {
                reason,
                prompt_tokens,
                output_tokens,
                cached_tokens,
            } => Self::Finished {
                reason: reason.as_str().into(),
                prompt_tokens,
                output_tokens,
                cached_tokens,
            },
            EngineEvent::Failed(f) => Self::Error {
                message: f.to_string(),
            },
            EngineEvent::Rejected(message) => Self::Error { message },
        }
    }

    fn into_event(self) -> EngineEvent {
        match self {
            Self::Token {
                token,
                logprob,
                top_logprobs,
            } => EngineEvent::Token(GeneratedToken {
                token,
                logprob: logprob.unwrap_or(f32::NAN),
                top_logprobs,
            }),
            Self::Finished {
                reason,
                prompt_tokens,
                output_tokens,
                cached_tokens,
            } => EngineEvent::Finished {
                reason: [FinishReason::Stop, FinishReason::Length]
                    .into_iter()
                    .find(|r| r.as_str() == reason)
                    .unwrap_or(FinishReason::Abort),
                prompt_tokens,
                output_tokens,
                cached_tokens,
            },
            Self::Error { message } => EngineEvent::Failed(EngineFailure::Internal(message)),
        }
    }
}

/// The API error for a move the engine refused.
fn refused(e: MoveError) -> ApiError {
    let (status, code) = match e {
        MoveError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "engine_stopped"),
        MoveError::Wire(_) => (StatusCode::BAD_REQUEST, "invalid_request_export"),
        MoveError::Scheduler(_) | MoveError::Backend(_) | MoveError::Constrained => {
            (StatusCode::CONFLICT, "move_refused")
        }
    };
    ApiError {
        status,
        message: e.to_string(),
        param: None,
        code: Some(code),
    }
}

/// `GET /internal/v1/requests`: the engine ids of the requests this replica holds.
pub async fn list(State(state): State<Arc<ServerState>>) -> Result<Response, ApiError> {
    let mut ids = state
        .engine
        .requests()
        .await
        .map_err(|_| ApiError::unavailable("the engine has stopped"))?;
    ids.sort_unstable();
    Ok(axum::Json(json!({ "requests": ids })).into_response())
}

/// Where to move a request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    /// The destination replica's base URL (`http://host:port`).
    to: String,
}

/// `POST /internal/v1/requests/{id}/move` with `{"to": URL}`: moves request `id` to the
/// replica at `URL`; its client's stream continues from there.
pub async fn move_request(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<u64>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: MoveBody = super::parse_body(&super::read_body(body)?)?;
    let to = body.to.trim_end_matches('/').to_string();
    if !to.starts_with("http://") {
        return Err(ApiError::invalid("to", "expected an http:// base URL"));
    }
    let started = Instant::now();
    let export = state.engine.export(id).await.map_err(refused)?;
    let exported_ms = started.elapsed().as_secs_f64() * 1e3;
    let kv_bytes = export.kv_bytes();
    let resume = |e: ApiError| {
        let _ = state.engine.resume(id);
        e
    };
    // The header, then the K/V as exported: no copy of the blocks on the way out.
    let (prefix, kv) = export.into_wire_parts();
    let parts = futures_util::stream::iter([prefix, kv].map(Ok::<_, Infallible>));
    let mut request = transfer_client()
        .post(format!("{to}/internal/v1/requests/import"))
        .header(header::CONTENT_TYPE.as_str(), "application/octet-stream")
        .body(reqwest::Body::wrap_stream(parts));
    if let Some(key) = state.auth.primary_key() {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| {
        resume(ApiError {
            status: StatusCode::BAD_GATEWAY,
            message: format!("cannot reach {to}: {e}"),
            param: Some("to".into()),
            code: Some("destination_unreachable"),
        })
    })?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(resume(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("{to} refused the request ({status}): {text}"),
            param: Some("to".into()),
            code: Some("move_refused"),
        }));
    }
    let Some(events) = state
        .engine
        .handoff(id)
        .await
        .map_err(|_| ApiError::unavailable("the engine has stopped"))?
    else {
        // The request ended here meanwhile (its client left): nothing to relay.
        return Err(ApiError {
            status: StatusCode::GONE,
            message: format!("request {id} ended before the move completed"),
            param: None,
            code: Some("request_gone"),
        });
    };
    let pause_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::info!("moved request {id} to {to}: {kv_bytes} bytes of K/V, exported after {exported_ms:.1} ms, paused {pause_ms:.1} ms");
    tokio::spawn(relay(response, events, to.clone()));
    Ok(axum::Json(json!({
        "moved": id, "to": to, "kv_bytes": kv_bytes, "pause_ms": pause_ms,
    }))
    .into_response())
}

/// The client every move uses: HTTP/2 without negotiation (the replicas speak it in the
/// clear), with the flow-control windows the server side uses for K/V transfers
/// ([`crate::shutdown::HTTP2_WINDOW`]).
fn transfer_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .http2_initial_stream_window_size(HTTP2_WINDOW)
            .http2_initial_connection_window_size(HTTP2_WINDOW)
            .build()
            .expect("an HTTP/2 client needs no system configuration")
    })
}

/// Feeds the destination's stream into the request's channel here, ending it with an error
/// if the destination stops before the request finished.
async fn relay(response: reqwest::Response, events: UnboundedSender<EngineEvent>, to: String) {
    let mut body = response.bytes_stream();
    let mut line = Vec::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        for &b in chunk.iter() {
            if b != b'\n' {
                line.push(b);
                continue;
            }
            let event = serde_json::from_slice::<WireEvent>(&line).map(WireEvent::into_event);
            line.clear();
            match event {
                Ok(event) => {
                    let last = !matches!(event, EngineEvent::Token(_));
                    if events.send(event).is_err() || last {
                        return; // the client left, or the request is over
                    }
                }
                Err(e) => {
                    let message = format!("{to} sent an unreadable event: {e}");
                    let _ = events.send(EngineEvent::Failed(EngineFailure::Internal(message)));
                    return;
                }
            }
        }
    }
    let message = format!("the replica the request moved to ({to}) stopped streaming");
    let _ = events.send(EngineEvent::Failed(EngineFailure::Internal(message)));
}

/// `POST /internal/v1/requests/import`: takes in a request another replica exported (body:
/// its bytes) and streams its continuation back as JSON lines; 409 when there is no room or
/// the cache is of another kind, 400 for bytes that are not an export.
pub async fn import(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body = super::read_body(body)?;
    let size = body.len();
    // Unique after collection: the K/V stay in the buffer they arrived in.
    let export = RequestExport::from_vec(Vec::from(body)).map_err(refused)?;
    let decoded_ms = started.elapsed().as_secs_f64() * 1e3;
    let stream = state.engine.import(export).await.map_err(refused)?;
    tracing::info!(
        "imported a request of {size} bytes: decoded in {decoded_ms:.1} ms, imported in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let lines = futures_util::stream::unfold(stream, |mut stream: RequestStream| async move {
        let event = stream.next().await?;
        let mut line = serde_json::to_vec(&WireEvent::of(event)).expect("JSON encoding");
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), stream))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
