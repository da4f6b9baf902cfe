//! What enters the scheduler ([`RequestSpec`] in a [`SchedRequest`]) and what comes out
//! ([`SeqEvent`]).

use brisk_types::TokenId;

/// Identifies a request (one sequence) across the engine.
pub type RequestId = u64;

/// What a request asks for, as far as scheduling goes — the one spec of a request, validated
/// once by the API and then carried unchanged: the engine's request holds it beside its
/// sampling settings, the scheduler's request beside its id and arrival, a moved request's
/// export carries it to the next replica.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestSpec {
    /// The prompt's token ids.
    pub prompt: Vec<TokenId>,
    /// Most tokens to generate (at least 1).
    pub max_tokens: usize,
    /// Fewest tokens to generate before a stop or EOS token may end the sequence. The sampler
    /// should ban those tokens until then; if one is sampled anyway it does not stop.
    pub min_tokens: usize,
    /// Extra tokens that end the sequence (honoured even with `ignore_eos`).
    pub stop_token_ids: Vec<TokenId>,
    /// Keep going past the model's EOS tokens (benchmarks).
    pub ignore_eos: bool,
    /// Its latency objective; `None` means best effort (no deadline).
    pub slo: Option<RequestSlo>,
    /// Its priority class.
    pub priority: Priority,
    /// Who sent it, for fair share between clients (the OpenAI `user` field); `None`: the
    /// anonymous client, one account for every request that names none.
    #[serde(default)]
    pub client: Option<String>,
    /// Whether its decodes may verify draft tokens when the server speculates (a client's
    /// opt-out; the engine turns it off for constrained output).
    #[serde(default = "speculate_by_default")]
    pub speculative: bool,
    /// Pause it once its first token is sampled (its prompt's K/V all computed), for the
    /// server to move it to a decode replica (prefill/decode disaggregation): it stays paused
    /// until moved ([`crate::SchedulerCore::release`]) or resumed.
    #[serde(default)]
    pub park_after_first_token: bool,
}

fn speculate_by_default() -> bool {
    true
}

impl RequestSpec {
    /// A prompt and a token limit: no stop tokens, no minimum, no objective, interactive,
    /// anonymous.
    pub fn new(prompt: Vec<TokenId>, max_tokens: usize) -> Self {
        Self {
            prompt,
            max_tokens,
            min_tokens: 0,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            slo: None,
            priority: Priority::Interactive,
            client: None,
            speculative: true,
            park_after_first_token: false,
        }
    }
}

/// A request as the scheduler holds it: its spec, under an id, from an arrival time. It reads
/// as its spec (`request.prompt`), which it owns.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SchedRequest {
    /// Unique among unfinished requests.
    pub id: RequestId,
    /// When the request arrived, in the caller's clock (seconds).
    pub arrival: f64,
    /// What it asks for.
    pub spec: RequestSpec,
}

impl std::ops::Deref for SchedRequest {
    type Target = RequestSpec;

    fn deref(&self) -> &RequestSpec {
        &self.spec
    }
}

impl std::ops::DerefMut for SchedRequest {
    fn deref_mut(&mut self) -> &mut RequestSpec {
        &mut self.spec
    }
}

/// A request's latency objective, in seconds (infinite: unbounded).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestSlo {
    /// Time to first token, from arrival.
    pub ttft: f64,
    /// Time per output token after the first.
    pub tpot: f64,
}

impl RequestSlo {
    /// Whether both bounds are positive (infinity allowed) and not NaN.
    pub fn is_valid(&self) -> bool {
        self.ttft > 0.0 && self.tpot > 0.0
    }
}

/// A request's priority class (QLLM's classes): interactive work may preempt batch work.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Priority {
    /// Someone is waiting: schedule against the objective.
    #[default]
    Interactive,
    /// Throughput work: best effort, first to yield.
    Batch,
}

impl Priority {
    /// The label used in request bodies and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Batch => "batch",
        }
    }

    /// The class a label names (see [`Self::as_str`]).
    pub fn parse(label: &str) -> Option<Self> {
        [Self::Interactive, Self::Batch]
            .into_iter()
            .find(|p| p.as_str() == label)
    }
}

impl SchedRequest {
    /// A request with no stop tokens, no minimum, no objective, arriving at time 0.
    pub fn new(id: RequestId, prompt: Vec<TokenId>, max_tokens: usize) -> Self {
        Self {
            id,
            arrival: 0.0,
            spec: RequestSpec::new(prompt, max_tokens),
        }
    }
}

/// Why a sequence ended (OpenAI's `finish_reason`, plus `Abort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// An EOS or stop token was sampled.
    Stop,
    /// `max_tokens` or the model's context length was reached.
    Length,
    /// The request was aborted (the client went away).
    Abort,
}

impl FinishReason {
    /// The label used by the OpenAI API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

/// What happened to a request during a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeqEvent {
    /// A new output token (a stop token included: it precedes its `Finished`).
    Token {
        /// The request.
        id: RequestId,
        /// The sampled token.
        token: TokenId,
        /// Whether it is the request's first output token (time to first token).
        first: bool,
    },
    /// The request ended and released its blocks.
    Finished {
        /// The request.
        id: RequestId,
        /// Why.
        reason: FinishReason,
        /// Prompt length (as submitted).
        prompt_tokens: usize,
        /// Output tokens generated.
        output_tokens: usize,
        /// Prompt tokens served from the prefix cache at first admission.
        cached_tokens: usize,
    },
}
