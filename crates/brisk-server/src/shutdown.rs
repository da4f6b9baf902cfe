//! Graceful shutdown: on SIGTERM or SIGINT the server stops accepting connections, answers 503
//! to requests that still arrive on open connections, lets the requests in flight finish
//! within a timeout (`brisk serve --shutdown-timeout`), then returns; what is still running
//! then is dropped with the runtime, and dropping a request's engine stream aborts it, so its
//! KV blocks are freed (the same path as a client that disconnects).
//!
//! The drain is a [`Drain`] shared by the signal task, the accept loop (axum's
//! `with_graceful_shutdown`, which also closes idle keep-alive connections) and a middleware.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::error::ApiError;

/// Whether the server is draining; cloned into everything that must know.
#[derive(Clone, Debug)]
pub struct Drain {
    started: Arc<watch::Sender<bool>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            started: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Drain {
    /// Starts draining (idempotent).
    pub fn start(&self) {
        self.started.send_replace(true);
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.started.borrow()
    }

    /// Resolves once draining has started.
    pub async fn started(&self) {
        let mut rx = self.started.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail.
        let _ = rx.wait_for(|draining| *draining).await;
    }
}

/// The middleware: 503 for new requests once draining (but `/metrics` still answers, so the
/// drain can be watched), with `Connection: close` so the client's next request opens a
/// connection elsewhere.
pub async fn refuse_while_draining(
    State(drain): State<Drain>,
    request: Request,
    next: Next,
) -> Response {
    if !drain.is_draining() || request.uri().path() == "/metrics" {
        return next.run(request).await;
    }
    let mut response = ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the server is shutting down".into(),
        param: None,
        code: Some("shutting_down"),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves `router` on `listener` until SIGINT or SIGTERM, then drains for at most `timeout`.
///
/// The signal handlers are installed when this is called (inside the runtime), not when the
/// returned future is first polled, so a signal that arrives right after the port is
/// announced is never lost to the default action.
pub fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    drain: Drain,
    timeout: Duration,
) -> impl std::future::Future<Output = std::io::Result<()>> {
    let signals = shutdown_signal();
    let on_signal = drain.clone();
    tokio::spawn(async move {
        let name = signals.await;
        tracing::warn!(
            "{name} received: refusing new connections, finishing requests in flight (at most {timeout:?})"
        );
        on_signal.start();
    });
    serve_until_drained(listener, router, drain, timeout)
}

/// Serves until `drain` starts, then waits at most `timeout` for open connections to finish.
/// Returns `Ok` in both cases; the connections still open at the deadline are left to be
/// dropped with the runtime.
pub async fn serve_until_drained(
    listener: tokio::net::TcpListener,
    router: Router,
    drain: Drain,
    timeout: Duration,
) -> std::io::Result<()> {
    let server = accept_until_drained(listener, router, drain.clone());
    let deadline = async {
        drain.started().await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("requests still in flight after {timeout:?}: aborting them");
            Ok(())
        }
    }
}

/// HTTP/2 flow-control window per stream and per connection, in bytes: a request moved
/// between replicas uploads tens of megabytes of K/V in one body, and with HTTP/2's default
/// windows the sender stalls for a window update every 64 KiB.
pub(crate) const HTTP2_WINDOW: u32 = 8 << 20;

/// Accepts connections — HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on the one port —
/// until `drain` starts, then waits for the open ones to finish their requests. What
/// `axum::serve` does, plus HTTP/2 windows sized for K/V transfers (it has no setting).
async fn accept_until_drained(
    listener: tokio::net::TcpListener,
    router: Router,
    drain: Drain,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .initial_stream_window_size(HTTP2_WINDOW)
        .initial_connection_window_size(HTTP2_WINDOW);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let stop = drain.started();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to close.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // HTTP/2's small control frames (window updates, settings acknowledgements) must not
        // wait out Nagle's algorithm against the peer's delayed acknowledgements (40 ms).
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(connections.watch(connection));
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT (ctrl-c) or SIGTERM, naming it.
/// Installs the SIGINT and SIGTERM handlers now and resolves with the name of the first
/// signal that arrives.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::warn!("cannot watch for {name}: {e}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(interrupt, "SIGINT") => "SIGINT",
                () = wait(terminate, "SIGTERM") => "SIGTERM",
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::middleware::from_fn_with_state;
    use axum::routing::get;

    use super::*;

    /// A router whose one route takes `delay`, behind the drain middleware.
    fn slow_router(drain: &Drain, delay: Duration) -> Router {
        Router::new()
            .route(
                "/slow",
                get(move || async move {
                    tokio::time::sleep(delay).await;
                    "done"
                }),
            )
            .route("/metrics", get(|| async { "metrics" }))
            .layer(from_fn_with_state(drain.clone(), refuse_while_draining))
    }

    async fn bind() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (listener, url)
    }

    #[tokio::test]
    async fn requests_in_flight_finish_and_then_the_server_returns() {
        let drain = Drain::default();
        let (listener, url) = bind().await;
        let server = tokio::spawn(serve_until_drained(
            listener,
            slow_router(&drain, Duration::from_millis(300)),
            drain.clone(),
            Duration::from_secs(30),
        ));
        let request = tokio::spawn(reqwest::get(format!("{url}/slow")));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        drain.start();
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "done");
        server.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(reqwest::get(format!("{url}/slow")).await.is_err());
    }

    #[tokio::test]
    async fn one_port_serves_http1_and_http2_and_a_large_http2_upload_arrives_whole() {
        let drain = Drain::default();
        let (listener, url) = bind().await;
        let app = slow_router(&drain, Duration::ZERO).route(
            "/upload",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        );
        let app = app.layer(axum::extract::DefaultBodyLimit::disable());
        tokio::spawn(serve_until_drained(
            listener,
            app,
            drain.clone(),
            Duration::from_secs(5),
        ));
        let h1 = reqwest::get(format!("{url}/slow")).await.unwrap();
        assert_eq!(h1.version(), reqwest::Version::HTTP_11);
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let response = h2.get(format!("{url}/slow")).send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.text().await.unwrap(), "done");
        // Past any flow-control window: the upload must not stall.
        let body = vec![7u8; 20 << 20];
        let response = h2
            .post(format!("{url}/upload"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), (20 << 20).to_string());
        drain.start();
    }

    #[tokio::test]
    async fn requests_past_the_timeout_are_left_behind() {
        let drain = Drain::default();
        let (listener, url) = bind().await;
        let server = tokio::spawn(serve_until_drained(
            listener,
            slow_router(&drain, Duration::from_secs(60)),
            drain.clone(),
            Duration::from_millis(100),
        ));
        let _request = tokio::spawn(reqwest::get(format!("{url}/slow")));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        drain.start();
        server.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn requests_that_arrive_while_draining_get_503_but_metrics_answer() {
        let drain = Drain::default();
        let (listener, url) = bind().await;
        // Plain serving, so the listener stays open and only the middleware sees the drain.
        let app = slow_router(&drain, Duration::ZERO);
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert_eq!(
            reqwest::get(format!("{url}/slow")).await.unwrap().status(),
            200
        );
        drain.start();
        assert!(drain.is_draining());
        let refused = reqwest::get(format!("{url}/slow")).await.unwrap();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["connection"], "close");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "shutting_down");
        assert_eq!(body["error"]["type"], "service_unavailable_error");
        let metrics = reqwest::get(format!("{url}/metrics")).await.unwrap();
        assert_eq!(metrics.status(), 200);
    }
}
