//! The gateway's HTTP routes: generation requests routed and forwarded with retries, the
//! rest forwarded to any available replica, and the gateway's own health and metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use brisk_router::{Choice, Prompt, Refusal, RequestKey, RouteRequest};
use brisk_scheduler::Priority;
use brisk_server::{read_body, ApiError, DECODE_ON_HEADER};
use brisk_types::TokenId;
use futures_util::StreamExt;
use serde_json::Value;

use crate::failover::continuable;
use crate::relay::Relay;
use crate::state::Gateway;

/// What a generation request's answer needs beyond its first attempt: its kind, its body
/// and rendered prompt (to continue it elsewhere), the caller's headers and arrival.
#[derive(Debug)]
pub(crate) struct StreamContext {
    /// A chat completion (else a completion).
    pub(crate) chat: bool,
    /// Answered as server-sent events.
    pub(crate) stream: bool,
    /// Whether another replica could continue its stream (see [`continuable`]; never for
    /// the Responses API, whose events the continuation does not rewrite).
    pub(crate) continuable: bool,
    /// The request body.
    pub(crate) request: Value,
    /// Its rendered prompt, when a replica rendered it.
    pub(crate) prompt: Option<Vec<TokenId>>,
    /// The caller's headers.
    pub(crate) headers: HeaderMap,
    /// When it arrived.
    pub(crate) arrival: Instant,
}

/// The gateway's routes.
pub fn app(gateway: Arc<Gateway>) -> Router {
    let auth = Arc::new(gateway.cfg.auth.clone());
    let limit = gateway.cfg.max_request_bytes;
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/v1/responses/render", post(forward_any))
        .route("/v1/completions/render", post(forward_any))
        .route("/v1/chat/completions/render", post(forward_any))
        .route("/tokenize", post(forward_any))
        .route("/detokenize", post(forward_any))
        .route("/v1/models", get(forward_any))
        .route("/health", get(health))
        .route("/ready", get(health))
        .route("/metrics", get(metrics))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("no route {}", uri.path()),
                param: None,
                code: Some("not_found"),
            }
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(from_fn_with_state(auth, brisk_server::require_api_key))
        .with_state(gateway)
}

/// `POST /v1/completions`.
async fn completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(gateway, "/v1/completions", headers, body).await
}

/// `POST /v1/chat/completions`.
async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(gateway, "/v1/chat/completions", headers, body).await
}

/// `POST /v1/responses`.
async fn responses(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(gateway, "/v1/responses", headers, body).await
}

/// `GET /health` and `/ready`: 200 while some replica takes requests.
async fn health(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.any_available() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable("no replica is available").into_response()
    }
}

/// `GET /metrics`.
async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gateway.metrics.render(&gateway),
    )
        .into_response()
}

/// The replicas to try for a request that any of them can answer, best first.
pub(crate) fn available_replicas(gateway: &Gateway) -> Vec<String> {
    let now = gateway.now();
    let core = gateway.core();
    let mut ids: Vec<(usize, String)> = core
        .replica_ids()
        .filter_map(|id| {
            let load = core.load(id, now)?;
            load.available.then(|| (load.outstanding, id.to_owned()))
        })
        .collect();
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// Routes that any replica answers alike (rendering, tokenizing, the model list): the least
/// loaded available replica answers, the next one if it cannot.
async fn forward_any(
    State(gateway): State<Arc<Gateway>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match read_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    for id in available_replicas(&gateway)
        .into_iter()
        .take(gateway.cfg.max_attempts)
    {
        let Some(url) = gateway.url(&id) else {
            continue;
        };
        let request = gateway
            .client
            .request(method.clone(), format!("{url}{path}"))
            .headers(forwarded_headers(&gateway, &headers))
            .body(body.clone());
        match request.send().await {
            Ok(r) if !r.status().is_server_error() => return relay_whole(r, &id).await,
            Ok(r) => tracing::debug!(replica = id, status = %r.status(), "forward failed"),
            Err(e) => tracing::debug!(replica = id, "forward failed: {e}"),
        }
    }
    ApiError::unavailable("no replica is available").into_response()
}

/// The headers passed on to a replica: the body's type, the request id, and credentials —
/// the gateway's own for replicas (`--replica-api-key`) when it has one, else the caller's.
pub(crate) fn forwarded_headers(gateway: &Gateway, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    if let Some(v) = headers.get("x-request-id") {
        out.insert("x-request-id", v.clone());
    }
    if let Some(auth) = gateway.replica_authorization() {
        out.insert(header::AUTHORIZATION, auth);
    }
    out
}

/// A replica's complete answer, relayed with its status and type.
async fn relay_whole(response: reqwest::Response, replica: &str) -> Response {
    let status = response.status();
    let headers = relayed_headers(response.headers(), replica);
    match response.bytes().await {
        Ok(bytes) => (status, headers, bytes).into_response(),
        Err(e) => ApiError {
            status: StatusCode::BAD_GATEWAY,
            message: format!("the replica's answer broke off: {e}"),
            param: None,
            code: Some("replica_failed"),
        }
        .into_response(),
    }
}

/// The answer's headers the client sees: its type, `Retry-After`, and which replica served.
pub(crate) fn relayed_headers(from: &HeaderMap, replica: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        header::CACHE_CONTROL,
    ] {
        if let Some(v) = from.get(&name) {
            out.insert(name, v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(replica) {
        out.insert("x-brisk-replica", v);
    }
    out
}

/// What rendering the prompt gave.
enum Rendered {
    /// Its token ids.
    Tokens(Vec<TokenId>),
    /// A replica refused the request (4xx): the client gets that answer.
    Refused(Response),
    /// No replica could render it: route by text.
    Unavailable,
}

/// Asks an available replica for the prompt's token ids (its render route runs every check
/// the generation route would).
async fn render(gateway: &Gateway, path: &str, headers: &HeaderMap, body: &Bytes) -> Rendered {
    for id in available_replicas(gateway).into_iter().take(2) {
        let Some(url) = gateway.url(&id) else {
            continue;
        };
        let sent = gateway
            .client
            .post(format!("{url}{path}/render"))
            .headers(forwarded_headers(gateway, headers))
            .body(body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(_) => continue,
        };
        let status = response.status();
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            return Rendered::Refused(relay_whole(response, &id).await);
        }
        if !status.is_success() {
            continue;
        }
        let Ok(json) = response.json::<Value>().await else {
            continue;
        };
        // Chat renders to an object, completions to a list of them (one per prompt).
        let rendered = json.as_array().and_then(|l| l.first()).unwrap_or(&json);
        if let Some(tokens) = token_ids(&rendered["token_ids"]) {
            return Rendered::Tokens(tokens);
        }
    }
    Rendered::Unavailable
}

/// Token ids from a render answer: a list, or the first of a list of lists.
pub(crate) fn token_ids(value: &Value) -> Option<Vec<TokenId>> {
    let list = value.as_array()?;
    let list = match list.first() {
        Some(Value::Array(first)) => first,
        _ => list,
    };
    list.iter()
        .map(|v| v.as_u64().and_then(|n| TokenId::try_from(n).ok()))
        .collect()
}

/// The prompt's text, for routing when no replica could render it.
fn prompt_text(body: &Value) -> String {
    let mut text = String::new();
    match (&body["prompt"], &body["messages"]) {
        (Value::String(p), _) => text.push_str(p),
        (_, Value::Array(messages)) => {
            for m in messages {
                if let Some(c) = m["content"].as_str() {
                    text.push_str(c);
                    text.push('\n');
                }
            }
        }
        _ => {}
    }
    if let Value::String(input) = &body["input"] {
        text.push_str(input); // the Responses API's
    }
    text
}

/// The request's objective `field` (`ttft_ms`, `tpot_ms`) in seconds: its own or the
/// gateway's `default`.
/// The request's priority class (`interactive` unless it says `batch`; the replica refuses
/// other values).
pub(crate) fn priority_of(body: &Value) -> Priority {
    body["priority"]
        .as_str()
        .and_then(Priority::parse)
        .unwrap_or_default()
}

fn slo_s(body: &Value, field: &str, default: Option<f64>) -> Option<f64> {
    body.get("slo")
        .and_then(|slo| slo.get(field))
        .and_then(Value::as_f64)
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .map(|ms| ms / 1000.0)
        .or(default)
}

/// Keeps the router core's account of a routed request: finished when dropped (a client
/// that went away is not the replica's fault), failed when told.
pub(crate) struct Routed {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) key: RequestKey,
    pub(crate) replica: String,
    /// The replica it is handed to after its first token, when `replica` prefills only.
    decode_on: Option<String>,
    pub(crate) failed: bool,
}

impl Routed {
    /// The account of `choice`, recorded in the metrics.
    pub(crate) fn new(gateway: &Arc<Gateway>, choice: Choice) -> Self {
        record_choice(gateway, &choice);
        Self {
            gateway: Arc::clone(gateway),
            key: choice.key,
            replica: choice.replica,
            decode_on: choice.decode_on,
            failed: false,
        }
    }

    pub(crate) fn first_token(&self) {
        self.gateway.core().first_token(self.key);
    }

    /// The headers to send the replica: the client's that pass on, and where to hand the
    /// request over ([`DECODE_ON_HEADER`]) when it was sent to a prefill replica.
    pub(crate) fn headers(&self, client: &HeaderMap) -> HeaderMap {
        let mut out = forwarded_headers(&self.gateway, client);
        let decode_url = self.decode_on.as_deref().and_then(|d| self.gateway.url(d));
        if let Some(value) = decode_url.and_then(|u| HeaderValue::from_str(&u).ok()) {
            out.insert(DECODE_ON_HEADER, value);
        }
        out
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        let now = self.gateway.now();
        self.gateway.core().finished(self.key, !self.failed, now);
    }
}

/// What one attempt on a replica came to.
enum Attempt {
    /// The answer for the client.
    Answer(Response),
    /// Try another replica; `last` is what the client gets if none is left.
    Retry { last: Response },
}

async fn generate(
    gateway: Arc<Gateway>,
    path: &'static str,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrival = Instant::now();
    let body = match read_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let json: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return ApiError::bad_body("the request body must be a JSON object").into_response()
        }
        Err(e) => return ApiError::bad_body(format!("invalid request body: {e}")).into_response(),
    };
    let (tokens, text) = match render(&gateway, path, &headers, &body).await {
        Rendered::Tokens(t) => (Some(t), String::new()),
        Rendered::Refused(response) => {
            gateway
                .metrics
                .requests
                .with_label_values(&["client_error"])
                .inc();
            return response;
        }
        Rendered::Unavailable => {
            gateway.metrics.text_routed.inc();
            (None, prompt_text(&json))
        }
    };
    let slo = slo_s(&json, "ttft_ms", gateway.cfg.ttft_slo);
    let tpot_slo = slo_s(&json, "tpot_ms", gateway.cfg.tpot_slo);
    let priority = priority_of(&json);
    let ctx = Arc::new(StreamContext {
        chat: path == "/v1/chat/completions",
        stream: json["stream"].as_bool().unwrap_or(false),
        continuable: path != "/v1/responses" && continuable(&json),
        request: json,
        prompt: tokens,
        headers,
        arrival,
    });
    let prompt = match &ctx.prompt {
        Some(t) => Prompt::Tokens(t),
        None => Prompt::Text(&text),
    };
    let mut exclude: Vec<String> = Vec::new();
    let mut last: Option<Response> = None;
    for attempt in 0..gateway.cfg.max_attempts.max(1) {
        if attempt > 0 {
            let factor = 1u32 << (attempt - 1).min(6);
            tokio::time::sleep(gateway.cfg.retry_backoff * factor).await;
        }
        let routed = {
            let now = gateway.now();
            let request = RouteRequest {
                prompt,
                ttft_slo: slo,
                tpot_slo,
                reject_unattainable: gateway.cfg.reject_unattainable,
                priority,
                exclude: &exclude,
            };
            gateway.core().route(&request, now)
        };
        if routed.is_ok()
            && priority == Priority::Interactive
            && gateway.cfg.router.priority_migration
        {
            gateway.migration_due.notify_one();
        }
        let choice = match routed {
            Ok(c) => c,
            Err(refusal) => {
                return last.unwrap_or_else(|| refused(&gateway, &refusal).into_response());
            }
        };
        exclude.push(choice.replica.clone());
        let guard = Routed::new(&gateway, choice);
        match attempt_on(guard, &ctx, &exclude, path, &body).await {
            Attempt::Answer(response) => return response,
            Attempt::Retry { last: response } => last = Some(response),
        }
    }
    gateway
        .metrics
        .requests
        .with_label_values(&["failed"])
        .inc();
    last.unwrap_or_else(|| ApiError::unavailable("no replica is available").into_response())
}

fn record_choice(gateway: &Gateway, choice: &Choice) {
    let m = &gateway.metrics;
    if choice.decode_on.is_some() {
        m.disaggregated.inc();
    }
    m.prompt_tokens.inc_by(choice.prompt_tokens as u64);
    m.cached_tokens.inc_by(choice.cached_tokens as u64);
    m.predicted_ttft.observe(choice.predicted_ttft);
}

fn refused(gateway: &Gateway, refusal: &Refusal) -> ApiError {
    gateway
        .metrics
        .requests
        .with_label_values(&["refused"])
        .inc();
    match refusal {
        Refusal::NoReplica => ApiError::unavailable("no replica is available"),
        Refusal::Unattainable { best_ttft, slo } => ApiError::slo_unattainable(format!(
            "no replica can meet the time-to-first-token objective of {:.0} ms (the best predicts {:.0} ms)",
            slo * 1000.0,
            best_ttft * 1000.0
        )),
    }
}

/// Sends the request to the guard's replica and turns its answer into the client's, or into
/// a retry.
async fn attempt_on(
    mut guard: Routed,
    ctx: &Arc<StreamContext>,
    tried: &[String],
    path: &str,
    body: &Bytes,
) -> Attempt {
    let (headers, arrival) = (&ctx.headers, ctx.arrival);
    let gateway = Arc::clone(&guard.gateway);
    let replica = guard.replica.clone();
    let count = |result: &str| {
        gateway
            .metrics
            .attempts
            .with_label_values(&[replica.as_str(), result])
            .inc();
    };
    let Some(url) = gateway.url(&replica) else {
        return Attempt::Retry {
            last: ApiError::unavailable("the replica left the fleet").into_response(),
        };
    };
    let sent = gateway
        .client
        .post(format!("{url}{path}"))
        .headers(guard.headers(headers))
        .body(body.clone())
        .send();
    let sent = match tokio::time::timeout(gateway.cfg.answer_timeout, sent).await {
        Ok(sent) => sent.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer within {:?} (--replica-timeout)",
            gateway.cfg.answer_timeout
        )),
    };
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            count("error");
            guard.failed = true;
            tracing::warn!(replica, "request failed: {e}");
            return Attempt::Retry {
                last: ApiError {
                    status: StatusCode::BAD_GATEWAY,
                    message: "no replica could be reached".into(),
                    param: None,
                    code: Some("replica_failed"),
                }
                .into_response(),
            };
        }
    };
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        count("busy");
        return Attempt::Retry {
            last: relay_whole(response, &replica).await,
        };
    }
    if status.is_server_error() {
        count("error");
        guard.failed = true;
        return Attempt::Retry {
            last: relay_whole(response, &replica).await,
        };
    }
    if !status.is_success() {
        count("client_error");
        gateway
            .metrics
            .requests
            .with_label_values(&["client_error"])
            .inc();
        return Attempt::Answer(relay_whole(response, &replica).await);
    }
    if ctx.stream {
        let opened = tokio::time::timeout(gateway.cfg.answer_timeout, open_stream(response))
            .await
            .unwrap_or_else(|_| Err("no first event in time (--replica-timeout)".into()));
        return match opened {
            Ok((first, rest, headers)) => {
                count("ok");
                guard.first_token();
                gateway
                    .metrics
                    .ttft
                    .observe(arrival.elapsed().as_secs_f64());
                let headers = relayed_headers(&headers, &replica);
                let relay = Relay::new(Arc::clone(ctx), tried.to_vec(), guard, first, rest);
                Attempt::Answer((status, headers, relay.into_body()).into_response())
            }
            Err(e) => {
                count("error");
                guard.failed = true;
                tracing::warn!(replica, "stream refused: {e}");
                Attempt::Retry {
                    last: bad_gateway("the replica's stream was not valid"),
                }
            }
        };
    }
    let headers = relayed_headers(response.headers(), &replica);
    match response.bytes().await {
        Ok(bytes) if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() => {
            count("error");
            guard.failed = true;
            tracing::warn!(replica, "answer is not JSON");
            Attempt::Retry {
                last: bad_gateway("the replica's answer was not valid JSON"),
            }
        }
        Ok(bytes) => {
            count("ok");
            guard.first_token();
            let m = &gateway.metrics;
            m.ttft.observe(arrival.elapsed().as_secs_f64());
            m.e2e.observe(arrival.elapsed().as_secs_f64());
            m.requests.with_label_values(&["ok"]).inc();
            Attempt::Answer((status, headers, bytes).into_response())
        }
        Err(e) => {
            count("error");
            guard.failed = true;
            tracing::warn!(replica, "answer broke off: {e}");
            Attempt::Retry {
                last: bad_gateway("the replica's answer broke off"),
            }
        }
    }
}

fn bad_gateway(message: &str) -> Response {
    ApiError {
        status: StatusCode::BAD_GATEWAY,
        message: message.into(),
        param: None,
        code: Some("replica_failed"),
    }
    .into_response()
}

pub(crate) type Upstream = futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>;

/// Reads a stream's first chunk, which must be a server-sent event: a replica that answers
/// garbage is retried elsewhere before the client has seen anything.
pub(crate) async fn open_stream(
    response: reqwest::Response,
) -> Result<(Bytes, Upstream, HeaderMap), String> {
    let headers = response.headers().clone();
    let mut upstream: Upstream = response.bytes_stream().boxed();
    let first = match upstream.next().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("the stream ended before any event".into()),
    };
    if !(first.starts_with(b"data:") || first.starts_with(b":") || first.starts_with(b"event:")) {
        return Err("the stream does not start with a server-sent event".into());
    }
    Ok((first, upstream, headers))
}
