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
//! Three things move requests this way: `POST …/{id}/move` (a live migration: by default
//! the request's full blocks go ahead in rounds while it keeps decoding — `POST
//! /internal/v1/blocks`, into the destination's prefix cache — and only the rest crosses at
//! the stop, Llumnix's multi-stage pre-copy), a prefill replica handing a request to its
//! decode replica after the first token (`x-brisk-decode-on`; stop-and-copy, the K/V having
//! just been computed), and a draining replica ([`crate::drain_migration`]).
//!
//! Between replicas this runs over HTTP/2 (cleartext, prior knowledge: every `brisk serve`
//! speaks both HTTP/1.1 and HTTP/2 on its one port): the export streams up as the body of one
//! HTTP/2 stream — header, then the K/V as the backend exported them, never copied into one
//! buffer — and the continuation streams back on the same stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use brisk_engine::{
    BlockExport, EngineEvent, EngineFailure, FinishReason, GeneratedToken, MoveError,
    RequestExport, RequestStream,
};
use brisk_scheduler::{Priority, SchedulerError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::kv_wire::{convert, Direction};
use crate::shutdown::HTTP2_WINDOW;
use crate::transfer_metrics::MoveKind;
use crate::ServerState;

mod ahead;

pub(crate) use ahead::PromptStream;
use ahead::{send_ahead, Ahead};

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
        MoveError::Scheduler(SchedulerError::PrefixLost { .. }) => {
            (StatusCode::CONFLICT, "prefix_lost")
        }
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

/// What to list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only requests of this priority class (`interactive` or `batch`).
    priority: Option<String>,
}

/// `GET /internal/v1/requests[?priority=interactive|batch]`: the engine ids of the requests
/// this replica holds (of that class).
pub async fn list(
    State(state): State<Arc<ServerState>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("priority", e.body_text()))?;
    let class =
        match params.priority.as_deref() {
            None => None,
            Some(label) => Some(Priority::parse(label).ok_or_else(|| {
                ApiError::invalid("priority", "expected `interactive` or `batch`")
            })?),
        };
    let mut ids = state
        .engine
        .requests(class)
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
    /// Send its full blocks ahead while it keeps decoding, and stop it only for the rest
    /// (default); `false`: stop it and copy everything.
    #[serde(default = "precopy_by_default")]
    precopy: bool,
}

fn precopy_by_default() -> bool {
    true
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
    let copy = if body.precopy {
        CopyMode::PreCopy
    } else {
        CopyMode::StopAndCopy
    };
    let moved = move_to(&state, id, &to, MoveKind::Migration, copy).await?;
    Ok(axum::Json(json!({
        "moved": id, "to": to, "kv_bytes": moved.kv_bytes, "pause_ms": moved.pause_s * 1e3,
        "stages": moved.stages, "kv_bytes_ahead": moved.kv_bytes_ahead,
    }))
    .into_response())
}

/// The header a router puts on a request it sends to a prefill replica: the base URL of the
/// decode replica to hand the request over to after its first token.
pub const DECODE_ON_HEADER: &str = "x-brisk-decode-on";

/// The request's decode replica ([`DECODE_ON_HEADER`]), if it names one. Like the internal
/// routes it is honoured only past the API key check.
pub struct DecodeOn(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for DecodeOn {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(DECODE_ON_HEADER) else {
            return Ok(Self(None));
        };
        let bad = || {
            ApiError::invalid(
                DECODE_ON_HEADER,
                format!("the `{DECODE_ON_HEADER}` header must be an http:// base URL"),
            )
        };
        let url = value.to_str().map_err(|_| bad())?.trim_end_matches('/');
        if !url.starts_with("http://") || url.len() == "http://".len() {
            return Err(bad());
        }
        Ok(Self(Some(url.to_string())))
    }
}

/// Hands request `id`, parked after its first token, to the decode replica at `to`,
/// which holds what `streamed` sent of its prompt already; on failure it decodes here (the
/// move resumes it).
pub(crate) fn hand_over(state: Arc<ServerState>, id: u64, to: String, streamed: PromptStream) {
    tokio::spawn(crate::request_id::in_current_span(async move {
        let ahead = streamed.finish().await;
        let moved = stop_and_copy(&state, id, &to, MoveKind::Handover, ahead).await;
        if let Ok(moved) = &moved {
            tracing::info!(
                "hand-over of request {id}: {} bytes of its prompt's K/V streamed in {} rounds while it was computed",
                moved.kv_bytes_ahead,
                moved.stages
            );
        }
        if let Err(e) = moved {
            let e = ApiError::from(e);
            tracing::warn!(
                "request {id} decodes here: its hand-over to {to} failed: {}",
                e.message
            );
        }
    }));
}

/// What a completed move cost.
pub(crate) struct Moved {
    /// K/V bytes sent while the request was stopped.
    pub kv_bytes: usize,
    /// How long the request produced no token, seconds (from its stop to the hand-off).
    pub pause_s: f64,
    /// Rounds of blocks sent ahead while it kept decoding.
    pub stages: usize,
    /// K/V bytes sent ahead.
    pub kv_bytes_ahead: usize,
}

/// How a move copies the request's K/V.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CopyMode {
    /// Stop the request, copy everything (a hand-over: it has just been computed).
    StopAndCopy,
    /// Llumnix's multi-stage pre-copy: send full blocks ahead while it keeps decoding,
    /// round after round while enough new ones fill, then stop it for the rest.
    PreCopy,
}

/// Why a move did not happen.
pub(crate) enum MoveFailure {
    /// The engine would not export the request (unknown here, not decoding yet, structured
    /// output): nothing changed.
    NotMovable(MoveError),
    /// The destination refused it or could not be reached: it runs on here.
    Destination(ApiError),
    /// It ended here meanwhile (its client left), or the engine stopped.
    Gone(ApiError),
}

impl MoveFailure {
    /// Whether the destination no longer holds the blocks sent ahead.
    fn is_prefix_lost(&self) -> bool {
        matches!(self, Self::Destination(e) if e.message.contains("\"prefix_lost\""))
    }
}

impl From<MoveFailure> for ApiError {
    fn from(f: MoveFailure) -> Self {
        match f {
            MoveFailure::NotMovable(e) => refused(e),
            MoveFailure::Destination(e) | MoveFailure::Gone(e) => e,
        }
    }
}

/// Moves request `id` to the replica at `to` (a base URL): exports it (pausing it), posts
/// the export, and once the destination accepts, relays the destination's stream into the
/// request's channel here. When the destination fails it, the request runs on here,
/// resumed (also when it was parked for a hand-over, whose failures all count).
pub(crate) async fn move_to(
    state: &Arc<ServerState>,
    id: u64,
    to: &str,
    kind: MoveKind,
    copy: CopyMode,
) -> Result<Moved, MoveFailure> {
    let ahead = match copy {
        CopyMode::PreCopy => send_ahead(state, id, to).await,
        CopyMode::StopAndCopy => Ahead::default(),
    };
    stop_and_copy(state, id, to, kind, ahead).await
}

/// The end of a move, `ahead` of its blocks at the destination already: stops the request,
/// sends the rest (everything, should the destination have lost those) and hands it off.
async fn stop_and_copy(
    state: &Arc<ServerState>,
    id: u64,
    to: &str,
    kind: MoveKind,
    ahead: Ahead,
) -> Result<Moved, MoveFailure> {
    let mut first_block = ahead.blocks;
    loop {
        let stopped = Instant::now();
        let export = match state.engine.export_from(id, first_block).await {
            Ok(export) => export,
            Err(e) => {
                if kind == MoveKind::Handover {
                    let _ = state.engine.resume(id);
                    state.metrics.transfers.failed(kind);
                }
                return Err(MoveFailure::NotMovable(e));
            }
        };
        let result = send_export(state, id, to, kind, export, stopped).await;
        if let Err(failure) = &result {
            let _ = state.engine.resume(id);
            // Blocks sent ahead were evicted there meanwhile: copy everything instead.
            if first_block > 0 && failure.is_prefix_lost() {
                first_block = 0;
                continue;
            }
            state.metrics.transfers.failed(kind);
        }
        return result.map(|moved| Moved {
            stages: ahead.stages,
            kv_bytes_ahead: ahead.bytes,
            ..moved
        });
    }
}

/// The rest of [`move_to`], once the request is exported.
async fn send_export(
    state: &Arc<ServerState>,
    id: u64,
    to: &str,
    kind: MoveKind,
    mut export: RequestExport,
    started: Instant,
) -> Result<Moved, MoveFailure> {
    export.kv = convert(state.kv_wire.as_ref(), Direction::Encode, export.kv)
        .await
        .map_err(MoveFailure::NotMovable)?;
    let exported_ms = started.elapsed().as_secs_f64() * 1e3;
    let kv_bytes = export.kv_bytes();
    let url = format!("{to}/internal/v1/requests/import?kind={}", kind.as_str());
    let request = post_parts(state, &url, export.into_wire_parts());
    let response = request.send().await.map_err(|e| {
        MoveFailure::Destination(ApiError {
            status: StatusCode::BAD_GATEWAY,
            message: format!("cannot reach {to}: {e}"),
            param: Some("to".into()),
            code: Some("destination_unreachable"),
        })
    })?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(MoveFailure::Destination(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("{to} refused the request ({status}): {text}"),
            param: Some("to".into()),
            code: Some("move_refused"),
        }));
    }
    let transfer_s = started.elapsed().as_secs_f64();
    let Some(events) = state
        .engine
        .handoff(id)
        .await
        .map_err(|_| MoveFailure::Gone(ApiError::unavailable("the engine has stopped")))?
    else {
        // The request ended here meanwhile (its client left): nothing to relay.
        return Err(MoveFailure::Gone(ApiError {
            status: StatusCode::GONE,
            message: format!("request {id} ended before the move completed"),
            param: None,
            code: Some("request_gone"),
        }));
    };
    let pause_s = started.elapsed().as_secs_f64();
    let pause_ms = pause_s * 1e3;
    tracing::info!(
        "{} of request {id} to {to}: {kv_bytes} bytes of K/V, exported after {exported_ms:.1} ms, paused {pause_ms:.1} ms",
        kind.as_str()
    );
    state
        .metrics
        .transfers
        .sent(kind, kv_bytes, transfer_s, pause_s);
    tokio::spawn(relay(response, events, to.to_string()));
    Ok(Moved {
        kv_bytes,
        pause_s,
        stages: 0,
        kv_bytes_ahead: 0,
    })
}

/// A POST of an export to another replica over [`transfer_client`], with this replica's key:
/// its two parts (magic and header, then the K/V) streamed one after the other, so the K/V
/// are never copied into one buffer on the way out.
fn post_parts(
    state: &ServerState,
    url: &str,
    (head, kv): (Vec<u8>, Vec<u8>),
) -> reqwest::RequestBuilder {
    let parts = futures_util::stream::iter([head, kv].map(Ok::<_, Infallible>));
    let request = transfer_client()
        .post(url)
        .header(header::CONTENT_TYPE.as_str(), "application/octet-stream")
        .body(reqwest::Body::wrap_stream(parts));
    match state.auth.primary_key() {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
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

/// `POST /internal/v1/blocks`: takes in blocks another replica sends ahead of moving a
/// request here (body: a block export) into the prefix cache, and answers
/// `{"cached_blocks": N}`, the full blocks of their tokens held here now; 409 (code
/// `prefix_lost`) when the blocks sent before are no longer cached, 409 without room, 400
/// for bytes that are not a block export.
pub async fn import_blocks(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body = super::read_body(body)?;
    let mut blocks = BlockExport::from_vec(Vec::from(body)).map_err(refused)?;
    let bytes = blocks.kv.len();
    blocks.kv = convert(state.kv_wire.as_ref(), Direction::Decode, blocks.kv)
        .await
        .map_err(refused)?;
    let held = state.engine.import_blocks(blocks).await.map_err(refused)?;
    state
        .metrics
        .transfers
        .kv_received(bytes, started.elapsed().as_secs_f64());
    Ok(axum::Json(json!({ "cached_blocks": held })).into_response())
}

/// The import route's query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// Why the request moves (`handover` or `migration`, the default), for metrics.
    kind: Option<String>,
}

/// `POST /internal/v1/requests/import[?kind=handover|migration]`: takes in a request another replica exported (body:
/// its bytes) and streams its continuation back as JSON lines; 409 when there is no room or
/// the cache is of another kind, 400 for bytes that are not an export.
pub async fn import(
    State(state): State<Arc<ServerState>>,
    params: Result<Query<ImportParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Query(params) = params.map_err(|e| ApiError::invalid("kind", e.body_text()))?;
    let kind = MoveKind::parse(params.kind.as_deref())
        .ok_or_else(|| ApiError::invalid("kind", "expected `handover` or `migration`"))?;
    let body = super::read_body(body)?;
    let size = body.len();
    // Unique after collection: the K/V stay in the buffer they arrived in.
    let mut export = RequestExport::from_vec(Vec::from(body)).map_err(refused)?;
    let kv_bytes = export.kv_bytes();
    export.kv = convert(state.kv_wire.as_ref(), Direction::Decode, export.kv)
        .await
        .map_err(refused)?;
    let decoded_ms = started.elapsed().as_secs_f64() * 1e3;
    let stream = state.engine.import(export).await.map_err(refused)?;
    state
        .metrics
        .transfers
        .received(kind, kv_bytes, started.elapsed().as_secs_f64());
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
