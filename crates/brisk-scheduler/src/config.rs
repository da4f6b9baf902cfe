//! [`SchedulerConfig`] and the crate's error type.

use brisk_kv::KvError;
use brisk_types::TokenId;

use crate::request::RequestId;

/// Validated settings of a [`crate::SchedulerCore`].
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Most sequences running (holding KV blocks) at once.
    pub max_num_seqs: usize,
    /// Token budget of one step (prefill chunks and decode tokens together).
    pub max_num_batched_tokens: usize,
    /// Longest sequence, prompt plus output.
    pub max_model_len: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the pool.
    pub num_blocks: usize,
    /// Reuse cached full blocks across requests.
    pub enable_prefix_caching: bool,
    /// Split long prompts across steps; without it a prompt runs whole in one step, so
    /// `max_num_batched_tokens` must be at least `max_model_len`.
    pub chunked_prefill: bool,
    /// The model's end-of-sequence tokens (`Backend::stop_tokens`); ignored by requests with
    /// `ignore_eos`.
    pub eos_token_ids: Vec<TokenId>,
    /// Salt of the prefix-cache hashes (distinct per model).
    pub cache_salt: u64,
    /// Fair share between clients (`SchedRequest::client`) layered over the policy;
    /// `None`: off, prompt work in the policy's order whoever sent it.
    pub fair_share: Option<crate::FairShareConfig>,
    /// When set: predict each request's output length from those finished before it (`length.rs`)
    /// and let the policy use it (shortest predicted job first among best-effort work,
    /// longest predicted first to yield under memory pressure, decodes' expected end in
    /// admission forecasts).
    pub length_prediction: Option<crate::LengthPrediction>,
    /// When set: decodes verify draft tokens from prompt lookup where the latency model says
    /// it pays (`speculate.rs`).
    pub speculative: Option<crate::SpeculativeConfig>,
}

impl Default for SchedulerConfig {
    /// vLLM's defaults where they fit a CPU server: 256 sequences, 2048 tokens per step,
    /// 8192-token context, 16-token blocks, 4096 blocks, prefix caching and chunked prefill on.
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            max_model_len: 8192,
            block_size: brisk_kv::DEFAULT_BLOCK_SIZE,
            num_blocks: 4096,
            enable_prefix_caching: true,
            chunked_prefill: true,
            eos_token_ids: Vec::new(),
            cache_salt: 0,
            fair_share: None,
            length_prediction: None,
            speculative: None,
        }
    }
}

impl SchedulerConfig {
    /// Checks that the settings can make progress.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        let bad = |m: String| Err(SchedulerError::InvalidConfig(m));
        if self.max_num_seqs == 0 || self.max_model_len == 0 {
            return bad("max_num_seqs and max_model_len must be at least 1".into());
        }
        if self.max_num_batched_tokens < self.max_num_seqs {
            return bad(format!(
                "max_num_batched_tokens ({}) must be at least max_num_seqs ({}), so that every \
                 running decode fits in a step",
                self.max_num_batched_tokens, self.max_num_seqs
            ));
        }
        if !self.chunked_prefill && self.max_num_batched_tokens < self.max_model_len {
            return bad(format!(
                "without chunked prefill max_num_batched_tokens ({}) must be at least \
                 max_model_len ({})",
                self.max_num_batched_tokens, self.max_model_len
            ));
        }
        if let Some(fair) = &self.fair_share {
            let weights = [fair.quantum, fair.prompt_weight, fair.output_weight];
            if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || fair.quantum <= 0.0 {
                return bad(format!(
                    "fair share needs a positive quantum and non-negative weights: {fair:?}"
                ));
            }
        }
        self.kv_config().validate()?;
        Ok(())
    }

    /// The block manager settings these imply.
    pub fn kv_config(&self) -> brisk_kv::BlockManagerConfig {
        brisk_kv::BlockManagerConfig {
            block_size: self.block_size,
            num_blocks: self.num_blocks,
            enable_prefix_caching: self.enable_prefix_caching,
            salt: self.cache_salt,
        }
    }
}

/// What the scheduler refuses, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    /// The configuration cannot work.
    #[error("invalid scheduler configuration: {0}")]
    InvalidConfig(String),
    /// A request with this id is already queued or running.
    #[error("request {0} already exists")]
    DuplicateRequest(RequestId),
    /// The prompt has no tokens.
    #[error("request {0}: the prompt is empty")]
    EmptyPrompt(RequestId),
    /// Sampling limits that make no sense (`max_tokens` 0, `min_tokens > max_tokens`).
    #[error("request {id}: {message}")]
    InvalidRequest {
        /// The request.
        id: RequestId,
        /// What is wrong.
        message: String,
    },
    /// Prompt plus `max_tokens` exceed the model's context.
    #[error(
        "request {id}: prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds \
         the maximum context length ({max_model_len})"
    )]
    ContextTooLong {
        /// The request.
        id: RequestId,
        /// Its prompt length.
        prompt_tokens: usize,
        /// Its output limit.
        max_tokens: usize,
        /// The limit.
        max_model_len: usize,
    },
    /// Even alone the request would not fit in the KV pool.
    #[error("request {id} needs {needed_blocks} KV blocks but the pool has {num_blocks}")]
    ExceedsKvCapacity {
        /// The request.
        id: RequestId,
        /// Blocks its longest possible sequence needs.
        needed_blocks: usize,
        /// Blocks in the pool.
        num_blocks: usize,
    },
    /// Admission control refused the request: it cannot meet its objective (HTTP 429).
    #[error("{message}")]
    Rejected {
        /// The request.
        id: RequestId,
        /// Why, for the client.
        message: String,
    },
    /// `update` got a plan that is not the last one scheduled, or got it twice.
    #[error("stale plan: step {plan} is not the pending step")]
    StalePlan {
        /// The plan's step number.
        plan: u64,
    },
    /// `update` got sampled tokens that do not match the plan.
    #[error("sampled tokens do not match the plan: {0}")]
    PlanMismatch(String),
    /// A move's first blocks were to be found in this replica's prefix cache (sent ahead
    /// while the request kept running) and are no longer all there.
    #[error("the first {needed} blocks sent ahead are no longer cached here (only {held} are)")]
    PrefixLost {
        /// Blocks the move relies on.
        needed: usize,
        /// Of which still cached.
        held: usize,
    },
    /// The block manager failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

impl SchedulerError {
    /// A stable label for metrics and HTTP error mapping.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidConfig(_) => "invalid_config",
            Self::DuplicateRequest(_) => "duplicate_request",
            Self::EmptyPrompt(_) => "empty_prompt",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::ContextTooLong { .. } => "context_length_exceeded",
            Self::ExceedsKvCapacity { .. } => "kv_capacity_exceeded",
            Self::Rejected { .. } => "slo_unattainable",
            Self::StalePlan { .. } => "stale_plan",
            Self::PlanMismatch(_) => "plan_mismatch",
            Self::PrefixLost { .. } => "prefix_lost",
            Self::Kv(_) => "kv_cache",
        }
    }
}
