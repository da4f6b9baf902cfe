//! Relaying a replica's event stream to the client, and continuing it on another replica
//! when the first one dies mid-stream (see `failover.rs`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use brisk_router::{Prompt, RouteRequest};
use brisk_types::TokenId;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::failover::{continuation_body, Rewriter, StreamLog};
use crate::proxy::{
    available_replicas, forwarded_headers, open_stream, token_ids, Routed, StreamContext, Upstream,
};
use crate::state::Gateway;

/// One client stream in flight.
pub(crate) struct Relay {
    gateway: Arc<Gateway>,
    ctx: Arc<StreamContext>,
    /// Replicas that served this request so far.
    tried: Vec<String>,
    guard: Option<Routed>,
    upstream: Upstream,
    log: StreamLog,
    /// Set once the stream continues on another replica.
    rewriter: Option<Rewriter>,
    ended: bool,
}

impl Relay {
    pub(crate) fn new(
        ctx: Arc<StreamContext>,
        tried: Vec<String>,
        guard: Routed,
        first: Bytes,
        rest: Upstream,
    ) -> Self {
        let upstream = futures_util::stream::once(async move { Ok(first) })
            .chain(rest)
            .boxed();
        Self {
            gateway: Arc::clone(&guard.gateway),
            ctx,
            tried,
            guard: Some(guard),
            upstream,
            log: StreamLog::default(),
            rewriter: None,
            ended: false,
        }
    }

    /// The client's response body.
    pub(crate) fn into_body(self) -> Body {
        let chunks = futures_util::stream::unfold(self, |mut relay| async move {
            let chunk = relay.next_chunk().await?;
            Some((Ok::<Bytes, std::io::Error>(chunk), relay))
        });
        Body::from_stream(chunks)
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        loop {
            let received = self.upstream.next().await;
            if let Some(Ok(chunk)) = received {
                let out = match &mut self.rewriter {
                    Some(r) => r.rewrite(&chunk),
                    None => chunk,
                };
                self.log.observe(&out);
                return Some(out);
            }
            let guard = self.guard.as_mut()?;
            if received.is_none() && self.log.finished {
                let m = &guard.gateway.metrics;
                m.e2e.observe(self.ctx.arrival.elapsed().as_secs_f64());
                m.requests.with_label_values(&["ok"]).inc();
                self.guard = None;
                self.ended = true;
                return None;
            }
            // The replica's stream broke off (or ended without finishing).
            guard.failed = true;
            let gateway = Arc::clone(&self.gateway);
            tracing::warn!(
                replica = guard.replica,
                "stream broke off after {} bytes of text: continuing elsewhere",
                self.log.text.len()
            );
            self.guard = None;
            match self.continue_elsewhere().await {
                Ok(()) => {
                    gateway
                        .metrics
                        .failovers
                        .with_label_values(&["continued"])
                        .inc();
                }
                Err(ending) => {
                    gateway
                        .metrics
                        .failovers
                        .with_label_values(&["failed"])
                        .inc();
                    gateway
                        .metrics
                        .requests
                        .with_label_values(&["failed"])
                        .inc();
                    self.ended = true;
                    return Some(ending);
                }
            }
        }
    }

    /// Opens the continuation on another replica, or says how the client's stream ends.
    async fn continue_elsewhere(&mut self) -> Result<(), Bytes> {
        let gateway = Arc::clone(&self.gateway);
        let prompt = match (&self.ctx.prompt, self.ctx.continuable) {
            (Some(p), true) => p.clone(),
            _ => {
                return Err(error_event(
                    "the replica serving this request failed mid-stream",
                ))
            }
        };
        let generated = tokenize(&gateway, &self.tried, &self.ctx.headers, &self.log.text).await?;
        let mut full = prompt.clone();
        full.extend(&generated);
        let Some(body) = continuation_body(&self.ctx.request, &full, generated.len()) else {
            return Err(self.final_event("length"));
        };
        let body = Bytes::from(body.to_string());
        for _ in 0..gateway.cfg.max_attempts.max(1) {
            let choice = {
                let request = RouteRequest {
                    prompt: Prompt::Tokens(&full),
                    ttft_slo: None,
                    tpot_slo: None,
                    reject_unattainable: false,
                    priority: crate::proxy::priority_of(&self.ctx.request),
                    exclude: &self.tried,
                };
                let now = gateway.now();
                gateway.core().route(&request, now)
            };
            let Ok(choice) = choice else {
                break;
            };
            self.tried.push(choice.replica.clone());
            let mut guard = Routed::new(&gateway, choice);
            let Some(url) = gateway.url(&guard.replica) else {
                continue;
            };
            let sent = gateway
                .client
                .post(format!("{url}/v1/completions"))
                .headers(guard.headers(&self.ctx.headers))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let opened = match sent {
                Ok(r) if r.status().is_success() => open_stream(r).await,
                Ok(r) => Err(format!("answered {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            match opened {
                Ok((first, rest, _)) => {
                    guard.first_token();
                    self.rewriter = Some(Rewriter::new(
                        self.ctx.chat,
                        &self.log,
                        prompt.len(),
                        generated.len(),
                    ));
                    self.upstream = futures_util::stream::once(async move { Ok(first) })
                        .chain(rest)
                        .boxed();
                    self.guard = Some(guard);
                    return Ok(());
                }
                Err(e) => {
                    guard.failed = true;
                    tracing::warn!(replica = guard.replica, "continuation failed: {e}");
                }
            }
        }
        Err(error_event(
            "the replica serving this request failed mid-stream and no other could continue it",
        ))
    }

    /// The last event of a stream that ran out of tokens as the replica died.
    fn final_event(&self, reason: &str) -> Bytes {
        let mut rewriter = Rewriter::new(self.ctx.chat, &self.log, 0, 0);
        let event = json!({"choices": [{"index": 0, "text": "", "finish_reason": reason}]});
        let mut out = rewriter
            .rewrite(format!("data: {event}\n\n").as_bytes())
            .to_vec();
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }
}

fn error_event(message: &str) -> Bytes {
    let event = json!({"error": {"message": message, "type": "server_error", "param": null,
        "code": "replica_failed"}});
    Bytes::from(format!("data: {event}\n\ndata: [DONE]\n\n"))
}

/// The generated text's token ids, from an available replica's tokenizer.
async fn tokenize(
    gateway: &Gateway,
    tried: &[String],
    headers: &axum::http::HeaderMap,
    text: &str,
) -> Result<Vec<TokenId>, Bytes> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let body = json!({"prompt": text, "add_special_tokens": false}).to_string();
    for id in available_replicas(gateway) {
        if tried.contains(&id) {
            continue;
        }
        let Some(url) = gateway.url(&id) else {
            continue;
        };
        let answer = gateway
            .client
            .post(format!("{url}/tokenize"))
            .headers(forwarded_headers(gateway, headers))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let Ok(answer) = answer else { continue };
        let Ok(json) = answer.json::<Value>().await else {
            continue;
        };
        if let Some(tokens) = token_ids(&json["tokens"]) {
            return Ok(tokens);
        }
    }
    Err(error_event(
        "the replica serving this request failed mid-stream and no other could continue it",
    ))
}
