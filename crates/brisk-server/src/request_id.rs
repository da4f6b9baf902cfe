//! A request id on every log line of a request: the client's `x-request-id` when it sends a
//! sane one (as behind a proxy that assigns them), else one made here. The request is handled
//! inside a tracing span carrying the id (the streaming tasks it spawns enter the same span),
//! and the id is echoed in the response's `x-request-id` header.
//!
//! Only the method, path, status and timing are logged — never a body, so no prompt text.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header read and written.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; longer ones are replaced.
const MAX_CLIENT_ID: usize = 128;

/// Makes ids unique within the process and, by a random prefix, across restarts.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        // std's hasher keys are random per process: a random prefix without a dependency.
        let prefix = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            prefix: prefix & 0xffff_ffff,
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// The client's id if it is short printable ASCII without spaces, else a new one.
    fn for_request(&self, client: Option<&HeaderValue>) -> String {
        match client.and_then(|v| v.to_str().ok()) {
            Some(id)
                if !id.is_empty()
                    && id.len() <= MAX_CLIENT_ID
                    && id.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                id.to_string()
            }
            _ => format!(
                "req-{:08x}-{}",
                self.prefix,
                self.next.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

/// `future` in the current span: for tasks a request spawns, so their lines carry its id.
pub fn in_current_span<F: std::future::Future>(future: F) -> tracing::instrument::Instrumented<F> {
    future.instrument(tracing::Span::current())
}

/// The middleware: runs the request in a span with its id and logs its outcome.
pub async fn tag_request(
    State(ids): State<Arc<RequestIds>>,
    request: Request,
    next: Next,
) -> Response {
    let id = ids.for_request(request.headers().get(&X_REQUEST_ID));
    // At ERROR level so the span is enabled under any filter: the id must be on the warnings
    // and errors that the default level shows.
    let span = tracing::error_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, ms, "answered");
        } else {
            tracing::info!(status, ms, "answered");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_client_ids_are_kept_and_others_replaced() {
        let ids = RequestIds::default();
        let keep = HeaderValue::from_static("trace-42:abc");
        assert_eq!(ids.for_request(Some(&keep)), "trace-42:abc");
        let spaced = HeaderValue::from_static("two words");
        let long = HeaderValue::from_str(&"x".repeat(MAX_CLIENT_ID + 1)).unwrap();
        let first = ids.for_request(Some(&spaced));
        let second = ids.for_request(Some(&long));
        let third = ids.for_request(None);
        assert!(first.starts_with("req-"), "{first}");
        assert_ne!(first, second);
        assert_ne!(second, third);
    }
}
