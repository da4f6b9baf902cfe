//! Bearer-token authentication (`brisk serve --api-key`), as vLLM's `--api-key` and OpenAI's
//! API do it: clients send `Authorization: Bearer KEY`; a missing or wrong key is answered 401
//! with OpenAI's error JSON and a `WWW-Authenticate` header (RFC 6750).
//!
//! Every route needs the key except `/health` and `/metrics`, which stay open unless
//! [`AuthSettings::protect_health_and_metrics`] is set (load balancers and Prometheus usually
//! scrape without credentials). The key is compared in time that does not depend on where the
//! presented token first differs from it, nor on the key's length, and is never logged.
//!
//! Several keys may be configured (one per tenant): any of them opens the API, every key is
//! compared whichever matches, and a request is then attributed to its key's client
//! ([`KeyClient`], `key-1`, `key-2`, … in the order the keys were given) for fair share,
//! unless it names its own `user`.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Who may call the API.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// The bearer tokens clients may present (none: the API is open). The first is also the
    /// one this server presents to other replicas.
    pub api_keys: Vec<String>,
    /// Whether `/health` and `/metrics` need the key too.
    pub protect_health_and_metrics: bool,
}

// Hand-written so that the key never reaches a log line through `{:?}`.
impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("api_keys", &format!("<{} redacted>", self.api_keys.len()))
            .field(
                "protect_health_and_metrics",
                &self.protect_health_and_metrics,
            )
            .finish()
    }
}

impl AuthSettings {
    /// The key this server presents to other replicas (the first configured).
    pub fn primary_key(&self) -> Option<&str> {
        self.api_keys.first().map(String::as_str)
    }

    /// Which configured key `presented` is (its index), comparing it with every key in
    /// constant time whichever matches.
    fn key_index(&self, presented: &[u8]) -> Option<usize> {
        self.api_keys
            .iter()
            .enumerate()
            .fold(None, |found, (i, key)| {
                let matches = constant_time_eq(presented, key.as_bytes());
                found.or(matches.then_some(i))
            })
    }

    /// Whether a request for `path` must bring the key.
    fn guards(&self, path: &str) -> bool {
        !self.api_keys.is_empty()
            && (self.protect_health_and_metrics
                || !matches!(path, "/health" | "/ready" | "/metrics"))
    }
}

/// Compares `presented` with `key` in time that depends only on `presented`'s length: every
/// byte is visited and the differences are OR-ed together, so neither the position of the first
/// mismatch nor the key's length shows in the timing. An empty key matches nothing.
pub fn constant_time_eq(presented: &[u8], key: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    let mut diff = presented.len() ^ key.len();
    for (i, &b) in presented.iter().enumerate() {
        diff |= usize::from(b ^ key[i % key.len()]);
    }
    // Keeps the optimizer from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme is case-insensitive).
fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let scheme = bytes.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| bytes[7..].trim_ascii())
}

/// 401 with OpenAI's error JSON and the challenge RFC 6750 asks for.
fn unauthorized(message: &str, challenge: &'static str) -> Response {
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
        param: None,
        code: Some("invalid_api_key"),
    }
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The client a request belongs to by the API key it presented, when several keys are
/// configured (`key-1` for the first): fair share's account for requests without `user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyClient(pub String);

impl KeyClient {
    /// The client of a generation: its own `user` if it named one, else its key's.
    pub fn apply(key: Option<axum::Extension<KeyClient>>, client: &mut Option<String>) {
        if let (None, Some(axum::Extension(KeyClient(name)))) = (client.as_ref(), key) {
            *client = Some(name);
        }
    }
}

/// The middleware: lets the request through (with its [`KeyClient`] when several keys are
/// configured), or answers 401.
pub async fn require_api_key(
    State(auth): State<Arc<AuthSettings>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !auth.guards(request.uri().path()) {
        return next.run(request).await;
    }
    match request.headers().get(header::AUTHORIZATION) {
        None => unauthorized(
            "missing API key: send it as `Authorization: Bearer KEY` (the server's --api-key)",
            "Bearer",
        ),
        Some(value) => match bearer_token(value).map(|t| auth.key_index(t)) {
            Some(Some(i)) => {
                if auth.api_keys.len() > 1 {
                    request
                        .extensions_mut()
                        .insert(KeyClient(format!("key-{}", i + 1)));
                }
                next.run(request).await
            }
            Some(None) => unauthorized("invalid API key", "Bearer error=\"invalid_token\""),
            None => unauthorized(
                "the Authorization header must be `Bearer KEY`",
                "Bearer error=\"invalid_request\"",
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use axum::Router;

    use super::*;

    #[tokio::test]
    async fn the_middleware_answers_401_with_openai_json_and_a_challenge() {
        let auth = Arc::new(AuthSettings {
            api_keys: vec!["sk-test".into()],
            protect_health_and_metrics: false,
        });
        let app = Router::new()
            .route("/v1/models", get(|| async { "models" }))
            .route("/health", get(|| async { "ok" }))
            .layer(from_fn_with_state(auth, require_api_key));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let get = |path: &str, auth: Option<&str>| {
            let mut request = client.get(format!("{url}{path}"));
            if let Some(value) = auth {
                request = request.header("authorization", value);
            }
            request.send()
        };
        for (auth, challenge) in [
            (None, "Bearer"),
            (Some("Bearer sk-tesT"), "Bearer error=\"invalid_token\""),
            (
                Some("Basic c2stdGVzdA=="),
                "Bearer error=\"invalid_request\"",
            ),
        ] {
            let response = get("/v1/models", auth).await.unwrap();
            assert_eq!(response.status(), 401, "{auth:?}");
            assert_eq!(response.headers()["www-authenticate"], challenge);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["type"], "authentication_error");
            assert_eq!(body["error"]["code"], "invalid_api_key");
            assert!(body["error"]["message"].is_string());
        }
        let ok = get("/v1/models", Some("Bearer sk-test")).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(get("/health", None).await.unwrap().status(), 200);
    }

    #[test]
    fn equal_keys_match_and_any_difference_does_not() {
        assert!(constant_time_eq(b"s3cret-key", b"s3cret-key"));
        assert!(!constant_time_eq(b"s3cret-kez", b"s3cret-key"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-key"));
        assert!(!constant_time_eq(b"s3cret-key-and-more", b"s3cret-key"));
        // A token that repeats the key is still wrong: the lengths differ.
        assert!(!constant_time_eq(b"abab", b"ab"));
        assert!(!constant_time_eq(b"", b"key"));
        assert!(!constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let token =
            |v: &'static str| bearer_token(&HeaderValue::from_static(v)).map(<[u8]>::to_vec);
        assert_eq!(token("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(token("bearer  abc "), Some(b"abc".to_vec()));
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearer"), None);
    }

    #[tokio::test]
    async fn with_several_keys_each_opens_the_api_and_names_its_client() {
        let auth = Arc::new(AuthSettings {
            api_keys: vec!["sk-one".into(), "sk-two".into()],
            protect_health_and_metrics: false,
        });
        let app = Router::new()
            .route(
                "/v1/who",
                get(|key: Option<axum::Extension<KeyClient>>| async move {
                    let mut client = None;
                    KeyClient::apply(key, &mut client);
                    client.unwrap_or_default()
                }),
            )
            .layer(from_fn_with_state(auth, require_api_key));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/who", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        for (key, want) in [("sk-one", "key-1"), ("sk-two", "key-2")] {
            let r = client.get(&url).bearer_auth(key).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), want);
        }
        let r = client
            .get(&url)
            .bearer_auth("sk-three")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // A request's own `user` stays its client.
        let mut named = Some("alice".to_string());
        KeyClient::apply(Some(axum::Extension(KeyClient("key-2".into()))), &mut named);
        assert_eq!(named.as_deref(), Some("alice"));
    }

    #[test]
    fn health_and_metrics_stay_open_unless_asked() {
        let mut auth = AuthSettings {
            api_keys: vec!["k".into()],
            protect_health_and_metrics: false,
        };
        assert!(auth.guards("/v1/completions"));
        assert!(auth.guards("/tokenize"));
        assert!(auth.guards("/nonexistent"));
        assert!(!auth.guards("/health"));
        assert!(!auth.guards("/metrics"));
        auth.protect_health_and_metrics = true;
        assert!(auth.guards("/health") && auth.guards("/metrics"));
        assert!(!AuthSettings::default().guards("/v1/completions"));
        assert!(!format!("{auth:?}").contains("\"k\""));
        assert_eq!(auth.primary_key(), Some("k"));
    }
}
