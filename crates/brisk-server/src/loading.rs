//! 503 while the model loads: `brisk serve` binds its port first, so a client (or a load
//! balancer's health check) that connects during the seconds a model takes to load gets a
//! clear "loading" answer with `Retry-After` instead of a refused connection — the way
//! llama.cpp's server answers `/health` while loading. Once the model is ready the same
//! listener hands every request to the real routes.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use crate::error::ApiError;

/// The routes to serve once the model is ready; until then every request gets 503.
#[derive(Clone, Default)]
pub struct Readiness {
    app: Arc<OnceLock<Router>>,
}

impl Readiness {
    /// Switches to the real routes (only the first call has an effect).
    pub fn ready(&self, app: Router) {
        let _ = self.app.set(app);
    }

    /// Whether the real routes are in place.
    pub fn is_ready(&self) -> bool {
        self.app.get().is_some()
    }

    /// A router that answers 503 `loading` until [`Readiness::ready`], then forwards every
    /// request (with its extensions, such as the peer address) to the real routes.
    pub fn router(&self) -> Router {
        let readiness = self.clone();
        Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let app = readiness.app.get().cloned();
            async move {
                Ok::<Response, Infallible>(match app {
                    Some(app) => app.oneshot(request).await?,
                    None => loading(),
                })
            }
        }))
    }
}

fn loading() -> Response {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the model is loading; try again shortly".into(),
        param: None,
        code: Some("loading"),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;

    async fn status_of(router: &Router, path: &str) -> (StatusCode, Option<String>) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (response.status(), retry)
    }

    #[tokio::test]
    async fn answers_503_until_ready_then_forwards() {
        let readiness = Readiness::default();
        let router = readiness.router();
        assert!(!readiness.is_ready());
        for path in ["/health", "/v1/models", "/anything"] {
            let (status, retry) = status_of(&router, path).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(retry.as_deref(), Some("1"), "{path}");
        }
        readiness.ready(Router::new().route("/health", get(|| async { "ok" })));
        assert!(readiness.is_ready());
        assert_eq!(status_of(&router, "/health").await.0, StatusCode::OK);
        assert_eq!(
            status_of(&router, "/missing").await.0,
            StatusCode::NOT_FOUND
        );
    }
}
