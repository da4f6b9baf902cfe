//! [`StepPlan`]: what one step runs, in a form the backend takes directly.

use brisk_types::{BlockId, LogitsWanted, SeqStep, StepBatch, TokenId};

use crate::request::RequestId;

/// One sequence's share of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSeq {
    /// The request.
    pub id: RequestId,
    /// Tokens to run: a prompt chunk or the single token being decoded.
    pub tokens: Vec<TokenId>,
    /// Position of `tokens[0]`.
    pub start_pos: usize,
    /// The sequence's block table, covering `start_pos + tokens.len()` positions.
    pub block_table: Vec<BlockId>,
    /// `Last` when the chunk ends the known tokens (a token is sampled), `All` when it
    /// verifies drafts, else `None`.
    pub logits: LogitsWanted,
    /// Draft tokens at the end of `tokens` (after the one being decoded) to verify: the
    /// engine samples every row in order and keeps tokens while they match.
    pub num_drafts: usize,
}

impl PlannedSeq {
    /// The draft tokens it verifies (empty for a plain decode or a prompt chunk).
    pub fn drafts(&self) -> &[TokenId] {
        &self.tokens[self.tokens.len() - self.num_drafts..]
    }
}

/// The result of [`crate::SchedulerCore::schedule`]: decodes first, then prompt chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// Step number, checked by [`crate::SchedulerCore::update`].
    pub step: u64,
    /// The sequences to run, in the order the sampled tokens must come back.
    pub seqs: Vec<PlannedSeq>,
    /// Total tokens in the step (at most `max_num_batched_tokens`).
    pub num_tokens: usize,
    /// Requests preempted while planning (they are waiting again).
    pub preempted: Vec<RequestId>,
}

impl StepPlan {
    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// The packed batch to hand to [`brisk_types::Backend::execute`].
    pub fn as_batch(&self) -> StepBatch<'_> {
        StepBatch {
            seqs: self
                .seqs
                .iter()
                .map(|s| SeqStep {
                    tokens: &s.tokens,
                    start_pos: s.start_pos,
                    block_table: &s.block_table,
                    logits: s.logits,
                })
                .collect(),
        }
    }
}
