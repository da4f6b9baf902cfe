//! `/v1/models`, `/health`, `/ready`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::respond::unix_time;
use crate::ServerState;

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<ServerState>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_name,
            "object": "model",
            "created": unix_time(),
            "owned_by": "brisk",
            "max_model_len": state.max_context,
        }],
    }))
    .into_response()
}

/// `GET /health`: 200 while the engine runs, 503 once it has stopped.
pub async fn health(State(state): State<Arc<ServerState>>) -> Response {
    if state.engine.stats().alive {
        (StatusCode::OK, "ok").into_response()
    } else {
        crate::error::ApiError::unavailable("the engine has stopped").into_response()
    }
}

/// `GET /ready`: 200 `{"status": "ready"}` while the replica takes new requests; 503 while
/// the model loads (the loading router answers), once draining for shutdown (the drain
/// middleware answers) or once the engine has stopped. `/health` says the process is alive;
/// routers and readiness probes should look here.
pub async fn ready(State(state): State<Arc<ServerState>>) -> Response {
    if state.engine.stats().alive {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        crate::error::ApiError::unavailable("the engine has stopped").into_response()
    }
}

/// `GET /metrics` in Prometheus text format.
pub async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let text = state.metrics.render(
        &state.engine.stats(),
        &state.model_name,
        &state.cache_config,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
