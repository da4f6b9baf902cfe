//! Prometheus metrics, named after vLLM's (prefix `brisk_`, seconds).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use brisk_engine::EngineStats;

use crate::vllm_metrics::CacheConfig;

/// All of brisk's metrics.
pub struct Metrics {
    registry: Registry,
    /// Request received → first token (seconds).
    pub ttft: Histogram,
    /// (E2E − TTFT) / (output tokens − 1).
    pub tpot: Histogram,
    /// Request received → last token.
    pub e2e: Histogram,
    /// Prompt tokens of finished requests.
    pub prompt_tokens: IntCounter,
    /// Tokens generated.
    pub generation_tokens: IntCounter,
    /// Finished requests by reason.
    pub request_success: IntCounterVec,
    running: IntGauge,
    waiting: IntGauge,
    kv_usage: Gauge,
    cached_blocks: IntGauge,
    fair_share_clients: IntGauge,
    step_time_correction: Gauge,
    prefix_queries: IntCounter,
    prefix_hits: IntCounter,
    preemptions: IntCounter,
    prompt_tokens_computed: IntCounter,
    /// K/V moved between replicas (hand-overs and migrations).
    pub transfers: crate::transfer_metrics::Transfers,
    length_examples: IntCounter,
    length_pairs: IntCounterVec,
    spec_drafts: IntCounter,
    spec_draft_tokens: IntCounter,
    spec_accepted_tokens: IntCounter,
    spec_acceptance: Histogram,
    panics: IntCounter,
    resident_memory: IntGauge,
    vllm: crate::vllm_metrics::VllmMetrics,
    /// Engine counters already folded into the Prometheus counters.
    seen: Mutex<EngineStats>,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        20.0, 40.0, 80.0,
    ]
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets()))
                .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique name");
            h
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let ratio = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let kv_usage = ratio(
            "brisk_kv_cache_usage_ratio",
            "Share of KV cache blocks in use",
        );
        let step_time_correction = ratio(
            "brisk_step_time_correction_ratio",
            "Measured over predicted step time, as the slo policy corrects its latency model (1 under fcfs)",
        );
        let request_success = IntCounterVec::new(
            Opts::new("brisk_request_success_total", "Finished requests"),
            &["finished_reason"],
        )
        .expect("valid counter");
        registry
            .register(Box::new(request_success.clone()))
            .expect("unique name");
        let length_pairs = IntCounterVec::new(
            Opts::new(
                "brisk_output_length_rank_pairs_total",
                "Consecutive finished requests whose predicted output lengths ordered them as they came out (concordant) or not (Kendall's tau = (c - d) / (c + d))",
            ),
            &["agreement"],
        )
        .expect("valid counter");
        registry
            .register(Box::new(length_pairs.clone()))
            .expect("unique name");
        let spec_acceptance = Histogram::with_opts(
            HistogramOpts::new(
                "brisk_spec_decode_acceptance_rate",
                "Share of a verification's draft tokens accepted, rounded down to tenths (speculative decoding)",
            )
            .buckets(acceptance_buckets()),
        )
        .expect("valid histogram");
        registry
            .register(Box::new(spec_acceptance.clone()))
            .expect("unique name");
        Self {
            ttft: histogram("brisk_time_to_first_token_seconds", "Time to first token"),
            tpot: histogram(
                "brisk_time_per_output_token_seconds",
                "Time per output token",
            ),
            e2e: histogram(
                "brisk_e2e_request_latency_seconds",
                "End-to-end request latency",
            ),
            prompt_tokens: counter("brisk_prompt_tokens_total", "Prompt tokens processed"),
            generation_tokens: counter("brisk_generation_tokens_total", "Tokens generated"),
            request_success,
            running: gauge("brisk_num_requests_running", "Sequences being computed"),
            waiting: gauge(
                "brisk_num_requests_waiting",
                "Sequences waiting for admission",
            ),
            kv_usage,
            cached_blocks: gauge(
                "brisk_kv_cached_blocks",
                "KV blocks in the prefix cache, held or free (what KV events describe)",
            ),
            fair_share_clients: gauge(
                "brisk_fair_share_clients",
                "Clients (OpenAI `user`) with requests queued or running",
            ),
            step_time_correction,
            prefix_queries: counter(
                "brisk_prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache",
            ),
            prefix_hits: counter(
                "brisk_prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache",
            ),
            preemptions: counter("brisk_num_preemptions_total", "Sequences preempted"),
            prompt_tokens_computed: counter(
                "brisk_prompt_tokens_computed_total",
                "Tokens this replica computed outside decoding (prompt chunks not found in its prefix cache nor received from another replica, and recomputation after preemption)",
            ),
            transfers: crate::transfer_metrics::Transfers::register(&registry),
            length_examples: counter(
                "brisk_output_length_examples_total",
                "Finished requests the output-length predictor learned from",
            ),
            length_pairs,
            spec_drafts: counter(
                "brisk_spec_decode_num_drafts_total",
                "Verifications of draft tokens (speculative decoding)",
            ),
            spec_draft_tokens: counter(
                "brisk_spec_decode_num_draft_tokens_total",
                "Draft tokens verified",
            ),
            spec_accepted_tokens: counter(
                "brisk_spec_decode_num_accepted_tokens_total",
                "Draft tokens accepted",
            ),
            spec_acceptance,
            panics: counter(
                "brisk_panics_total",
                "Panics caught anywhere in the process (see count_panics)",
            ),
            resident_memory: gauge(
                "process_resident_memory_bytes",
                "Resident memory of the process (Linux)",
            ),
            vllm: crate::vllm_metrics::VllmMetrics::register(&registry),
            registry,
            seen: Mutex::new(EngineStats::default()),
        }
    }

    /// Folds the engine's latest statistics in and renders the text exposition format
    /// (`model` and `cache` label the `vllm:` metrics).
    pub fn render(&self, stats: &EngineStats, model: &str, cache: &CacheConfig) -> String {
        self.running
            .set(i64::try_from(stats.num_running).unwrap_or(i64::MAX));
        self.waiting
            .set(i64::try_from(stats.num_waiting).unwrap_or(i64::MAX));
        self.kv_usage.set(stats.kv_cache_usage);
        self.cached_blocks
            .set(i64::try_from(stats.cached_blocks).unwrap_or(i64::MAX));
        self.fair_share_clients
            .set(i64::try_from(stats.fair_share_clients).unwrap_or(i64::MAX));
        self.step_time_correction.set(stats.step_time_correction);
        self.panics.inc_by(
            PANICS
                .load(Ordering::Relaxed)
                .saturating_sub(self.panics.get()),
        );
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.prefix_queries.inc_by(
                stats
                    .prefix_cache_queries
                    .saturating_sub(seen.prefix_cache_queries),
            );
            self.prefix_hits.inc_by(
                stats
                    .prefix_cache_hits
                    .saturating_sub(seen.prefix_cache_hits),
            );
            self.preemptions
                .inc_by(stats.preemptions.saturating_sub(seen.preemptions));
            self.prompt_tokens_computed.inc_by(
                stats
                    .prompt_tokens_computed
                    .saturating_sub(seen.prompt_tokens_computed),
            );
            self.length_examples
                .inc_by(stats.length_examples.saturating_sub(seen.length_examples));
            let (now, before) = (stats.length_ranking, seen.length_ranking);
            for (label, now, before) in [
                ("concordant", now.concordant, before.concordant),
                ("discordant", now.discordant, before.discordant),
            ] {
                self.length_pairs
                    .with_label_values(&[label])
                    .inc_by(now.saturating_sub(before));
            }
            self.fold_speculation(stats, &seen);
            self.vllm.update(model, cache, stats, &seen);
            *seen = stats.clone();
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Metrics {
    /// Adds the speculative-decoding counters' growth since `seen`; each verification since
    /// is observed at its acceptance rate (in tenths, as the engine counts them).
    fn fold_speculation(&self, stats: &EngineStats, seen: &EngineStats) {
        let (now, before) = (stats.drafts, seen.drafts);
        self.spec_drafts
            .inc_by(now.verifications.saturating_sub(before.verifications));
        self.spec_draft_tokens
            .inc_by(now.drafted.saturating_sub(before.drafted));
        self.spec_accepted_tokens
            .inc_by(now.accepted.saturating_sub(before.accepted));
        let rates = acceptance_buckets();
        for (i, rate) in rates.iter().enumerate() {
            let new = stats.acceptance_tenths[i].saturating_sub(seen.acceptance_tenths[i]);
            for _ in 0..new {
                self.spec_acceptance.observe(*rate);
            }
        }
    }
}

/// Tenths from 0 to 1: the engine counts verifications by acceptance rate in tenths.
fn acceptance_buckets() -> Vec<f64> {
    (0..=10).map(|i| f64::from(i) / 10.0).collect()
}

/// Panics seen by the hook [`count_panics`] installs.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Counts every panic of the process in `brisk_panics_total` (the default hook still prints
/// it). A panic in one request's handling ends only that request's task, so the server stays
/// up; the counter lets soak tests and alerts see that it happened.
pub fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
}

/// The process's resident set size from `/proc/self/status` (`None` off Linux).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
