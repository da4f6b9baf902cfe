//! The gateway's Prometheus metrics: a replica's request-level names (so dashboards read a
//! router like a replica) plus routing decisions, attempts and the predicted hit rate.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::state::Gateway;

/// The metrics.
pub struct GatewayMetrics {
    registry: Registry,
    /// Time to first byte of the answer, seen by the gateway.
    pub ttft: Histogram,
    /// Arrival to last byte.
    pub e2e: Histogram,
    /// Requests by how they ended: `ok`, `client_error`, `refused`, `failed`.
    pub requests: IntCounterVec,
    /// Attempts by replica and result: `ok`, `client_error`, `busy`, `error`.
    pub attempts: IntCounterVec,
    /// Prompt tokens routed.
    pub prompt_tokens: IntCounter,
    /// Of which the chosen replica was believed to hold.
    pub cached_tokens: IntCounter,
    /// Prompts routed by their text (no replica could render them).
    pub text_routed: IntCounter,
    /// Requests sent to a prefill replica with a decode replica to hand them to.
    pub disaggregated: IntCounter,
    /// Running requests migrated, by `reason`: `balance` or `priority`.
    pub migrations: IntCounterVec,
    /// Streams whose replica failed mid-stream: `continued` elsewhere or `failed`.
    pub failovers: IntCounterVec,
    /// The predicted TTFT of each decision.
    pub predicted_ttft: Histogram,
    /// Per replica, filled at scrape time: requests outstanding.
    outstanding: IntGaugeVec,
    /// Per replica, filled at scrape time: 1 while its circuit is closed.
    available: IntGaugeVec,
    /// Per replica, filled at scrape time: blocks in its index.
    indexed_blocks: IntGaugeVec,
}

fn buckets() -> Vec<f64> {
    vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
}

impl GatewayMetrics {
    /// Creates and registers them.
    pub fn new() -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets()))
                .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique name");
            h
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["replica"]).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        Self {
            ttft: histogram(
                "brisk_time_to_first_token_seconds",
                "Time to the first byte of the answer",
            ),
            e2e: histogram(
                "brisk_e2e_request_latency_seconds",
                "Arrival to the last byte of the answer",
            ),
            requests: counter_vec(
                "brisk_router_requests_total",
                "Generation requests by outcome",
                &["outcome"],
            ),
            attempts: counter_vec(
                "brisk_router_attempts_total",
                "Requests sent to replicas, by replica and result",
                &["replica", "result"],
            ),
            prompt_tokens: counter("brisk_router_prompt_tokens_total", "Prompt tokens routed"),
            cached_tokens: counter(
                "brisk_router_cached_tokens_total",
                "Prompt tokens the chosen replica was believed to hold",
            ),
            text_routed: counter(
                "brisk_router_text_routed_total",
                "Prompts routed by their text because no replica could render them",
            ),
            migrations: counter_vec(
                "brisk_router_migrations_total",
                "Running requests the router had moved to another replica, by reason: balance (busiest to idlest) or priority (batch work off a replica serving interactive work)",
                &["reason"],
            ),
            disaggregated: counter(
                "brisk_router_disaggregated_total",
                "Requests sent to a prefill replica with a decode replica to hand them to after their first token",
            ),
            failovers: counter_vec(
                "brisk_router_failovers_total",
                "Streams whose replica failed mid-stream, by whether another continued them",
                &["result"],
            ),
            predicted_ttft: histogram(
                "brisk_router_predicted_ttft_seconds",
                "Predicted time to first token of each routing decision",
            ),
            outstanding: gauge_vec(
                "brisk_router_outstanding_requests",
                "Requests routed to a replica and not finished",
            ),
            available: gauge_vec(
                "brisk_router_replica_available",
                "1 while the replica's circuit breaker is closed",
            ),
            indexed_blocks: gauge_vec(
                "brisk_router_indexed_blocks",
                "Blocks the router believes the replica caches",
            ),
            registry,
        }
    }

    /// The text exposition, with the per-replica gauges filled from the router core.
    pub fn render(&self, gateway: &Gateway) -> String {
        let now = gateway.now();
        for g in [&self.outstanding, &self.available, &self.indexed_blocks] {
            g.reset();
        }
        {
            let core = gateway.core();
            for id in core.replica_ids() {
                let Some(load) = core.load(id, now) else {
                    continue;
                };
                let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
                self.outstanding
                    .with_label_values(&[id])
                    .set(n(load.outstanding));
                self.available
                    .with_label_values(&[id])
                    .set(i64::from(load.available));
                self.indexed_blocks
                    .with_label_values(&[id])
                    .set(n(load.index_entries));
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
