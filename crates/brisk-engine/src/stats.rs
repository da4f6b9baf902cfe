//! Statistics the engine publishes after every step, read by `/metrics` and `/health`.

/// A snapshot of the engine's state and cumulative counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences being computed.
    pub num_running: usize,
    /// Sequences waiting for admission.
    pub num_waiting: usize,
    /// Share of KV blocks in use (cached-but-free blocks count as free).
    pub kv_cache_usage: f64,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_cache_queries: u64,
    /// Prompt tokens found in the prefix cache.
    pub prefix_cache_hits: u64,
    /// Sequences preempted (by recompute) so far.
    pub preemptions: u64,
    /// Tokens computed outside decoding (prompt chunks, recomputation after preemption).
    pub prompt_tokens_computed: u64,
    /// Blocks in the prefix cache, held or free.
    pub cached_blocks: usize,
    /// Clients with requests in the engine (fair share's accounts).
    pub fair_share_clients: usize,
    /// The scheduling policy's measured over predicted step time (1 under FCFS).
    pub step_time_correction: f64,
    /// Finished requests the output-length predictor learned from.
    pub length_examples: u64,
    /// How its predictions ranked the outputs that followed (consecutive finished requests).
    pub length_ranking: brisk_scheduler::RankAgreement,
    /// Speculative decoding: verifications, draft tokens, accepted tokens.
    pub drafts: brisk_scheduler::DraftCounts,
    /// Verifications by acceptance rate in tenths (`[10]`: every draft accepted).
    pub acceptance_tenths: [u64; 11],
    /// Steps executed.
    pub steps: u64,
    /// Whether the engine thread is alive.
    pub alive: bool,
}
