//! brisk's OpenAI-compatible HTTP API.
//!
//! The server validates requests, tokenizes and renders chat templates on tokio's blocking
//! pool (never on the engine thread), submits one engine request per choice, and turns the
//! token streams that come back into text — detokenizing incrementally, matching stop strings
//! across token boundaries — as JSON or server-sent events. When a client disconnects, the
//! per-request task ends and dropping its engine stream aborts the request, so its KV blocks
//! are freed at the engine's next step.
//!
//! Middlewares sit in front of every route: `request_id.rs` runs each request in a tracing
//! span with its id, [`Drain`] answers 503 once the server is shutting down (`shutdown.rs`),
//! and [`AuthSettings`] checks the bearer API key (`auth.rs`). In front of them all,
//! [`Readiness`] answers 503 `loading` until the model is ready (`loading.rs`).

mod auth;
mod drain_migration;
mod error;
mod fields;
mod fleet;
mod generation;
mod kv_wire;
mod loading;
mod metrics;
mod protocol;
mod queue;
mod request_id;
mod respond;
mod routes;
mod shutdown;
mod stop;
mod structured;
mod tool_calls;
mod tools;
mod transfer_metrics;
mod validate;
mod vllm_metrics;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use brisk_engine::EngineHandle;
use brisk_tokenizer::{ChatMessage, Tokenizer};
use brisk_types::TokenId;
use tower_http::catch_panic::CatchPanicLayer;

pub use auth::{constant_time_eq, require_api_key, AuthSettings, KeyClient};
pub use drain_migration::migrate_running;
pub use error::ApiError;
pub use fleet::{KvEventsEndpoints, ReplicaInfo};
pub use kv_wire::KvWire;
pub use loading::Readiness;
pub use metrics::{count_panics, Metrics};
pub use queue::{WaitingQueue, WaitingTicket};
pub use routes::handover::DECODE_ON_HEADER;
pub use routes::read_body;
pub use shutdown::{serve, serve_until_drained, Drain};
pub use stop::StopMatcher;
pub use vllm_metrics::CacheConfig;

/// Largest request body accepted, in bytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 8 << 20;

/// Largest request export a replica takes in (its K/V travel in the body: 190 MB for 4,096
/// tokens of SmolLM2 in f32).
pub const MAX_IMPORT_BYTES: usize = 2 << 30;

/// What the handlers share.
pub struct ServerState {
    /// The engine.
    pub engine: EngineHandle,
    /// The model's tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The name the model is served under.
    pub model_name: String,
    /// Other names accepted in `model` (e.g. the path it was loaded from).
    pub model_aliases: Vec<String>,
    /// The model's context length.
    pub max_context: usize,
    /// Columns of the model's logits (ids at or above are invalid).
    pub vocab_size: usize,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Latency objectives: the defaults and whether the engine may refuse requests.
    pub slo: SloSettings,
    /// Who may call the API (`--api-key`).
    pub auth: AuthSettings,
    /// Set once the server is shutting down; requests are then refused with 503.
    pub drain: Drain,
    /// Requests waiting for their first token, bounded by `--max-waiting` (429 beyond).
    pub waiting: Arc<WaitingQueue>,
    /// Longest a request may take from arrival to its last token (`--request-timeout`).
    pub request_timeout: Option<std::time::Duration>,
    /// Lower a `max_tokens` beyond the context to what fits instead of refusing the request
    /// (`--clamp-max-tokens`, llama.cpp's behaviour; vLLM refuses, brisk's default).
    pub clamp_max_tokens: bool,
    /// The KV cache's shape, published as `vllm:cache_config_info`.
    pub cache_config: CacheConfig,
    /// What the replica tells routers about itself (`GET /internal/v1/replica`).
    pub replica_info: Option<ReplicaInfo>,
    /// Compiles and caches the grammars of structured outputs (`None`: the vocabulary could
    /// not be read for them, and such requests are refused).
    pub grammars: Option<Arc<brisk_structured::Grammars>>,
    /// How K/V are converted for the wire when requests move (`None`: sent as the engine
    /// exports them).
    pub kv_wire: Option<Arc<dyn KvWire>>,
    next_id: AtomicU64,
}

/// The server's latency objectives (`brisk serve --ttft-slo/--tpot-slo`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SloSettings {
    /// Objectives of requests that bring none (or part of one).
    pub defaults: brisk_scheduler::SloDefaults,
    /// Admission control may refuse requests (429), so streams wait for the verdict.
    pub may_reject: bool,
}

impl ServerState {
    /// Creates the state.
    pub fn new(
        engine: EngineHandle,
        tokenizer: Tokenizer,
        model_name: String,
        model_aliases: Vec<String>,
        max_context: usize,
        vocab_size: usize,
    ) -> Self {
        let grammars = match brisk_structured::Grammars::new(&tokenizer) {
            Ok(g) => Some(Arc::new(g)),
            Err(e) => {
                tracing::warn!("structured outputs are off: {e}");
                None
            }
        };
        Self {
            engine,
            tokenizer: Arc::new(tokenizer),
            model_name,
            model_aliases,
            max_context,
            vocab_size,
            metrics: Arc::new(Metrics::new()),
            slo: SloSettings::default(),
            auth: AuthSettings::default(),
            drain: Drain::default(),
            waiting: Arc::new(WaitingQueue::default()),
            request_timeout: None,
            clamp_max_tokens: false,
            cache_config: CacheConfig::default(),
            replica_info: None,
            grammars,
            kv_wire: None,
            next_id: AtomicU64::new(1),
        }
    }

    fn serves(&self, model: &str) -> bool {
        model == self.model_name || self.model_aliases.iter().any(|a| a == model)
    }

    fn next_response_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Tokenizes on the blocking pool.
    async fn tokenize(&self, text: String) -> Result<Vec<TokenId>, ApiError> {
        let tok = Arc::clone(&self.tokenizer);
        tokio::task::spawn_blocking(move || {
            let bos = tok.add_bos_by_default();
            tok.encode(&text, bos)
        })
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
        .map_err(|e| ApiError::invalid("prompt", e.to_string()))
    }

    /// Renders the chat template and tokenizes, on the blocking pool.
    async fn render_and_tokenize(
        &self,
        messages: Vec<ChatMessage>,
        tools: Option<tools::Tools>,
        add_generation_prompt: bool,
    ) -> Result<Vec<TokenId>, ApiError> {
        let tok = Arc::clone(&self.tokenizer);
        tokio::task::spawn_blocking(move || {
            let template = tok.chat_template().ok_or_else(|| {
                ApiError::invalid(
                    "messages",
                    "this model has no chat template; use /v1/completions",
                )
            })?;
            // Templates that describe tools get them; others get them as text.
            let rendered = if template.knows_tools() {
                let declared = tools.as_ref().map(|t| &t.declared);
                template.render_with_tools(&messages, declared, add_generation_prompt)
            } else {
                let messages = tools::without_tool_support(messages, tools.as_ref());
                template.render(&messages, add_generation_prompt)
            };
            let text = rendered.map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            // Templates usually write BOS themselves; never add a second one.
            let bos_text = tok.bos_id().and_then(|id| tok.token_str(id));
            let add_bos =
                tok.add_bos_by_default() && !bos_text.is_some_and(|b| text.starts_with(b.as_str()));
            tok.encode(&text, add_bos)
                .map_err(|e| ApiError::invalid("messages", e.to_string()))
        })
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
    }
}

/// The HTTP routes, behind the request id, the drain check and the API key check.
pub fn router(state: Arc<ServerState>, max_request_bytes: usize) -> Router {
    let auth = Arc::new(state.auth.clone());
    let drain = state.drain.clone();
    Router::new()
        .route("/v1/completions", post(routes::completions::completions))
        .route("/v1/chat/completions", post(routes::chat::chat_completions))
        .route("/v1/responses", post(routes::responses::responses))
        .route("/v1/responses/render", post(routes::responses::render))
        .route("/v1/completions/render", post(routes::completions::render))
        .route("/v1/chat/completions/render", post(routes::chat::render))
        .route("/v1/models", get(routes::misc::models))
        .route("/health", get(routes::misc::health))
        .route("/ready", get(routes::misc::ready))
        .route("/metrics", get(routes::misc::metrics))
        .route("/tokenize", post(routes::tokenize::tokenize))
        .route("/detokenize", post(routes::tokenize::detokenize))
        .route("/internal/v1/replica", get(fleet::info))
        .route("/internal/v1/requests", get(routes::handover::list))
        .route(
            "/internal/v1/requests/import",
            post(routes::handover::import).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
        .route(
            "/internal/v1/requests/{id}/move",
            post(routes::handover::move_request),
        )
        .route(
            "/internal/v1/blocks",
            post(routes::handover::import_blocks).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
        .fallback(|uri: axum::http::Uri| async move {
            ApiError {
                status: axum::http::StatusCode::NOT_FOUND,
                message: format!("no route for {uri}"),
                param: None,
                code: Some("not_found"),
            }
        })
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(auth, auth::require_api_key))
        .layer(from_fn_with_state(drain, shutdown::refuse_while_draining))
        .layer(from_fn_with_state(
            Arc::new(request_id::RequestIds::default()),
            request_id::tag_request,
        ))
        .with_state(state)
}

/// A handler that panicked: 500 in OpenAI's error shape. The panic is counted
/// (`brisk_panics_total`) and printed by the hook; the connection, the server and every other
/// request carry on, and the request's engine stream was dropped while unwinding, which
/// aborts it and frees its KV blocks.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::internal("the server failed while handling this request (a bug: please report it)")
        .into_response()
}

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `body` as both request types, the way the handlers do; the results are
    /// discarded (only a panic would be a finding).
    pub fn parse_request_bodies(body: &[u8]) {
        let _ = crate::routes::parse_body::<crate::protocol::CompletionRequest>(body);
        let _ = crate::routes::parse_body::<crate::protocol::ChatCompletionRequest>(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_gets_a_500_in_openai_shape() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("deliberate test panic");
                    }
                    "unreachable"
                }),
            )
            .layer(CatchPanicLayer::custom(panic_response));
        let request = axum::extract::Request::get("/boom")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "internal_error", "{json}");
    }
}
