//! The scheduler-owned state of one request, and the read-only view policies get.

use brisk_types::TokenId;

use crate::length::LengthFeatures;
use crate::request::{Priority, RequestId, RequestSlo, SchedRequest};

/// What a [`crate::SchedulingPolicy`] (or the engine) may know about a sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqView {
    /// The request.
    pub id: RequestId,
    /// Its arrival time.
    pub arrival: f64,
    /// Prompt length as submitted.
    pub num_prompt_tokens: usize,
    /// Tokens generated so far.
    pub num_output_tokens: usize,
    /// Tokens whose K/V are in the pool (0 while waiting).
    pub num_computed_tokens: usize,
    /// Its `max_tokens`.
    pub max_tokens: usize,
    /// Rank of its latest admission (higher is more recent); `None` if never admitted.
    pub admitted_rank: Option<u64>,
    /// How many times it was preempted.
    pub num_preemptions: u32,
    /// Tokens to run before its next token can be sampled: 1 while decoding, else the rest
    /// of its prompt (after a preemption: prompt and output so far).
    pub num_pending_tokens: usize,
    /// Its latency objective (`None`: best effort).
    pub slo: Option<RequestSlo>,
    /// Its priority class.
    pub priority: Priority,
    /// Demoted to best effort by admission control (it could not meet its TTFT).
    pub demoted: bool,
    /// When its first token was sampled (the caller's clock).
    pub first_token_at: Option<f64>,
    /// How far its client leads the least-served client, in weighted tokens of service
    /// (fair share, see `fair.rs`; 0 for the least served and when only one client is
    /// present).
    pub share_lead: f64,
    /// Its predicted output length in tokens, made once at arrival (so orders built on it
    /// are stable); `None` when prediction is off or has not learned enough yet.
    pub predicted_output_tokens: Option<f64>,
}

impl SeqView {
    /// Predicted output tokens still to come (at least 1), if predicted.
    pub fn predicted_remaining(&self) -> Option<f64> {
        self.predicted_output_tokens
            .map(|p| (p - self.num_output_tokens as f64).max(1.0))
    }

    /// Whether it is decoding (its next step runs one token).
    pub fn is_decoding(&self) -> bool {
        self.num_pending_tokens == 1 && self.num_output_tokens > 0
    }
}

/// A request's evolving state. `tokens` is the prompt followed by the output; after a
/// preemption the whole of it is recomputed as if it were the prompt.
#[derive(Clone, Debug)]
pub(crate) struct Sequence {
    pub(crate) req: SchedRequest,
    pub(crate) tokens: Vec<TokenId>,
    pub(crate) num_prompt: usize,
    pub(crate) num_computed: usize,
    pub(crate) cached_tokens: Option<usize>,
    pub(crate) admitted_rank: Option<u64>,
    pub(crate) num_preemptions: u32,
    pub(crate) demoted: bool,
    pub(crate) first_token_at: Option<f64>,
    /// Held back from every step (it keeps its blocks): parked after its first token for a
    /// hand-over, or exported.
    pub(crate) paused: bool,
    /// Exported and neither released nor resumed yet: one move at a time.
    pub(crate) exported: bool,
    /// What the length predictor reads, kept to learn from when it ends (`None`: off).
    pub(crate) length_features: Option<LengthFeatures>,
    /// Its predicted output length, made at arrival.
    pub(crate) predicted_output: Option<f64>,
    /// Draft tokens it verified, and of those the ones accepted (speculative decoding).
    pub(crate) drafts: DraftCounts,
}

/// Draft tokens verified and accepted (per sequence, and in total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DraftCounts {
    /// Verification steps.
    pub verifications: u64,
    /// Draft tokens verified.
    pub drafted: u64,
    /// Of those, accepted.
    pub accepted: u64,
}

impl DraftCounts {
    /// Adds one verification of `drafted` tokens of which `accepted` were kept.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        self.verifications += 1;
        self.drafted += drafted as u64;
        self.accepted += accepted as u64;
    }

    /// The acceptance rate, pulled towards `prior` by `weight` pseudo-drafts.
    pub fn acceptance(&self, prior: f64, weight: f64) -> f64 {
        (self.accepted as f64 + prior * weight) / (self.drafted as f64 + weight)
    }
}

impl Sequence {
    pub(crate) fn new(mut req: SchedRequest) -> Self {
        let tokens = std::mem::take(&mut req.prompt);
        Self {
            num_prompt: tokens.len(),
            tokens,
            req,
            num_computed: 0,
            cached_tokens: None,
            admitted_rank: None,
            num_preemptions: 0,
            demoted: false,
            first_token_at: None,
            paused: false,
            exported: false,
            length_features: None,
            predicted_output: None,
            drafts: DraftCounts::default(),
        }
    }

    pub(crate) fn num_output(&self) -> usize {
        self.tokens.len() - self.num_prompt
    }

    /// Tokens still to run before the next token can be sampled (1 for a decode).
    pub(crate) fn remaining(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Its view, without fair share's lead (the core fills it in: `SchedulerCore::view`).
    pub(crate) fn view(&self) -> SeqView {
        SeqView {
            id: self.req.id,
            arrival: self.req.arrival,
            num_prompt_tokens: self.num_prompt,
            num_output_tokens: self.num_output(),
            num_computed_tokens: self.num_computed,
            max_tokens: self.req.max_tokens,
            admitted_rank: self.admitted_rank,
            num_preemptions: self.num_preemptions,
            num_pending_tokens: self.remaining(),
            slo: self.req.slo,
            priority: self.req.priority,
            demoted: self.demoted,
            first_token_at: self.first_token_at,
            share_lead: 0.0,
            predicted_output_tokens: self.predicted_output,
        }
    }
}
