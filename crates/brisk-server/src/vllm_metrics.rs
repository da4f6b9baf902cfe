//! The model-server metrics that fleet routers scrape, under vLLM's `vllm:` names.
//!
//! The Gateway API Inference Extension (its endpoint picker, llm-d's scheduler), smg's load
//! monitor and autoscalers read a replica's load from these vLLM metrics: requests running
//! and waiting, KV cache utilisation and `cache_config_info` (block size and block count as
//! labels). brisk publishes them beside its own `brisk_` metrics, with vLLM's `model_name`
//! label, so a brisk replica can stand where a vLLM one does. `gpu_cache_usage_perc` is the
//! older name of `kv_cache_usage_perc` that earlier scrapers still read; brisk's "GPU" is its
//! KV pool.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use brisk_engine::EngineStats;

/// The KV cache's shape, for `vllm:cache_config_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheConfig {
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// The element type (`f32`, `bf16`, …).
    pub dtype: String,
    /// Whether prefix caching is on.
    pub prefix_caching: bool,
}

/// The `vllm:` metrics, registered in the server's registry.
pub(crate) struct VllmMetrics {
    running: IntGaugeVec,
    waiting: IntGaugeVec,
    kv_usage: GaugeVec,
    gpu_usage: GaugeVec,
    cache_info: IntGaugeVec,
    prefix_queries: IntCounterVec,
    prefix_hits: IntCounterVec,
}

impl VllmMetrics {
    pub(crate) fn register(registry: &Registry) -> Self {
        let model = &["model_name"];
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), model).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), model).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        Self {
            running: int_gauge(
                "vllm:num_requests_running",
                "Requests being computed",
                model,
            ),
            waiting: int_gauge(
                "vllm:num_requests_waiting",
                "Requests waiting to be scheduled",
                model,
            ),
            kv_usage: gauge("vllm:kv_cache_usage_perc", "KV cache usage, 0 to 1"),
            gpu_usage: gauge(
                "vllm:gpu_cache_usage_perc",
                "KV cache usage, 0 to 1 (the older name of vllm:kv_cache_usage_perc)",
            ),
            cache_info: int_gauge(
                "vllm:cache_config_info",
                "The KV cache's configuration, as labels",
                &[
                    "model_name",
                    "block_size",
                    "num_gpu_blocks",
                    "cache_dtype",
                    "enable_prefix_caching",
                ],
            ),
            prefix_queries: counter(
                "vllm:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache",
            ),
            prefix_hits: counter(
                "vllm:prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache",
            ),
        }
    }

    /// Sets the gauges from `stats`, adds the counters' growth since `seen`.
    pub(crate) fn update(
        &self,
        model: &str,
        cache: &CacheConfig,
        stats: &EngineStats,
        seen: &EngineStats,
    ) {
        let m = &[model];
        let int = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.running
            .with_label_values(m)
            .set(int(stats.num_running));
        self.waiting
            .with_label_values(m)
            .set(int(stats.num_waiting));
        self.kv_usage.with_label_values(m).set(stats.kv_cache_usage);
        self.gpu_usage
            .with_label_values(m)
            .set(stats.kv_cache_usage);
        let (block_size, blocks) = (cache.block_size.to_string(), cache.num_blocks.to_string());
        let caching = if cache.prefix_caching {
            "True"
        } else {
            "False"
        };
        self.cache_info
            .with_label_values(&[model, &block_size, &blocks, &cache.dtype, caching])
            .set(1);
        self.prefix_queries.with_label_values(m).inc_by(
            stats
                .prefix_cache_queries
                .saturating_sub(seen.prefix_cache_queries),
        );
        self.prefix_hits.with_label_values(m).inc_by(
            stats
                .prefix_cache_hits
                .saturating_sub(seen.prefix_cache_hits),
        );
    }
}
