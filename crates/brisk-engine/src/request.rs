//! What the engine receives and what it streams back.

use std::sync::Arc;

use brisk_sampling::{ConstraintSource, SamplingParams};
use brisk_types::TokenId;

/// Engine-wide request id.
pub type RequestId = u64;

/// A tokenized, validated request, ready to schedule: its spec (what the scheduler reads and a
/// move carries) and how its tokens are drawn. It reads as its spec (`request.prompt`).
#[derive(Clone, Debug)]
pub struct EngineRequest {
    /// Prompt, limits, stop tokens, objective, priority, client.
    pub spec: RequestSpec,
    /// Sampling parameters (validated).
    pub sampling: SamplingParams,
    /// Number of most likely alternatives to report per token (0 = only the chosen token's
    /// logprob, `None` = no logprobs).
    pub logprobs: Option<usize>,
    /// When the request reached the server; its TTFT deadline counts from here (`None`: from
    /// when the engine takes it, which can be a whole step later).
    pub received: Option<std::time::Instant>,
    /// What the output must match (a JSON schema, a regex, a grammar), compiled; each
    /// sequence starts its own copy. `None`: unconstrained.
    pub constraint: Option<Arc<dyn ConstraintSource>>,
}

impl EngineRequest {
    /// `spec` sampled greedily, without logprobs or constraint, timed from when the engine
    /// takes it.
    pub fn greedy(spec: RequestSpec) -> Self {
        Self {
            spec,
            sampling: SamplingParams::greedy(),
            logprobs: None,
            received: None,
            constraint: None,
        }
    }
}

impl std::ops::Deref for EngineRequest {
    type Target = RequestSpec;

    fn deref(&self) -> &RequestSpec {
        &self.spec
    }
}

impl std::ops::DerefMut for EngineRequest {
    fn deref_mut(&mut self) -> &mut RequestSpec {
        &mut self.spec
    }
}

pub use brisk_scheduler::{Priority, RequestSlo, RequestSpec};

/// Why the engine did not serve a request to its end, in the terms an API maps to status
/// codes: the request's fault (400) or the engine's (500). Refusals by admission control
/// have their own event ([`EngineEvent::Rejected`], 429).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineFailure {
    /// The request cannot be served as asked: the scheduler refused it (it could never fit
    /// in the KV pool, its limits contradict each other, …).
    #[error("{0}")]
    Invalid(String),
    /// The engine failed while serving it (a forward pass or step error).
    #[error("{0}")]
    Internal(String),
}

/// Why a request ended (the scheduler's verdict, passed through).
pub use brisk_scheduler::FinishReason;

/// One generated token with its log-probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedToken {
    /// The token.
    pub token: TokenId,
    /// Its log-probability under the model (before sampling transforms); NaN when the
    /// request asked for no logprobs (computing it costs a pass over the vocabulary).
    pub logprob: f32,
    /// The most likely alternatives, when requested.
    pub top_logprobs: Vec<(TokenId, f32)>,
}

/// What the engine streams back for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// A new token.
    Token(GeneratedToken),
    /// The request is over; its blocks are free.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Prompt length.
        prompt_tokens: usize,
        /// Tokens generated.
        output_tokens: usize,
        /// Prompt tokens served from the prefix cache.
        cached_tokens: usize,
    },
    /// The request failed or was refused (its blocks are free); the kind says whose fault.
    Failed(EngineFailure),
    /// Admission control refused the request before any work was spent on it: it cannot
    /// meet its objective (the server answers 429 with this message).
    Rejected(String),
}
