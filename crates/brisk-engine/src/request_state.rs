//! The state the engine core keeps for each request it serves: its sampler mid-sequence,
//! its tokens so far, what it may not end on yet, and its output constraint.

use std::collections::VecDeque;

use brisk_sampling::{log_softmax_at, top_logprobs, Sampler, TokenConstraint};
use brisk_scheduler::RequestSpec;
use brisk_types::{StepOutput, TokenId};

use crate::request::GeneratedToken;

/// A request being served.
pub(crate) struct RequestState {
    pub(crate) sampler: Sampler,
    pub(crate) prompt: Vec<TokenId>,
    pub(crate) output: Vec<TokenId>,
    pub(crate) logprobs: Option<usize>,
    pub(crate) min_tokens: usize,
    /// Tokens that may not be sampled before `min_tokens` (EOS unless ignored, stop ids).
    pub(crate) banned_early: Vec<TokenId>,
    /// The tokens sampled in the current step, waiting for the scheduler's verdict.
    pub(crate) pending: VecDeque<GeneratedToken>,
    /// What the output must match, if anything.
    pub(crate) constraint: Option<Box<dyn TokenConstraint>>,
    /// Why the constraint could not say what may come next (the request then fails).
    pub(crate) constraint_error: Option<String>,
}

impl RequestState {
    /// The state of a request that has generated nothing yet and has no constraint.
    pub(crate) fn new(
        spec: &RequestSpec,
        sampler: Sampler,
        logprobs: Option<usize>,
        eos: &[TokenId],
    ) -> Self {
        let mut banned_early = spec.stop_token_ids.clone();
        if !spec.ignore_eos {
            banned_early.extend(eos);
        }
        Self {
            sampler,
            prompt: spec.prompt.clone(),
            output: Vec::new(),
            logprobs,
            min_tokens: spec.min_tokens,
            banned_early,
            pending: VecDeque::new(),
            constraint: None,
            constraint_error: None,
        }
    }

    /// Samples this request's next token from its logit row, keeping EOS and stop ids away
    /// until `min_tokens`; log-probabilities (a pass over the vocabulary) only if asked for.
    pub(crate) fn sample(&mut self, raw: &[f32]) -> GeneratedToken {
        let banned;
        let row = if let Some(constraint) = &self.constraint {
            let mut logits = raw.to_vec();
            constraint.mask(&mut logits);
            banned = logits;
            &banned[..]
        } else if self.output.len() < self.min_tokens && !self.banned_early.is_empty() {
            let mut logits = raw.to_vec();
            for &t in &self.banned_early {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            banned = logits;
            &banned[..]
        } else {
            raw
        };
        let token = self.sampler.sample_token(row, &self.prompt, &self.output);
        let (logprob, top_logprobs) = match self.logprobs {
            Some(k) => (
                log_softmax_at(row, token as usize),
                if k > 0 {
                    top_logprobs(raw, k)
                } else {
                    Vec::new()
                },
            ),
            None => (f32::NAN, Vec::new()),
        };
        GeneratedToken {
            token,
            logprob,
            top_logprobs,
        }
    }

    /// Samples the rows of a step that verified `drafts` after the decoded token, in order,
    /// as plain decoding would have sampled them one step at a time: each token is drawn
    /// with the ones before it in the output (penalties, `min_tokens`), and sampling stops
    /// at the first token that is not its draft (or after the last row). The tokens are
    /// left in `pending`; the output itself grows when the scheduler keeps them.
    pub(crate) fn sample_verifying(
        &mut self,
        output: &StepOutput,
        seq: usize,
        drafts: &[TokenId],
    ) -> Vec<TokenId> {
        debug_assert!(
            self.constraint.is_none(),
            "constrained requests do not speculate"
        );
        let before = self.output.len();
        let mut kept = Vec::with_capacity(drafts.len() + 1);
        for row in 0..=drafts.len() {
            let generated = self.sample(output.row(seq, row));
            let token = generated.token;
            self.pending.push_back(generated);
            self.output.push(token);
            kept.push(token);
            if drafts.get(row) != Some(&token) {
                break;
            }
        }
        self.output.truncate(before);
        kept
    }

    /// Works out what the constraint allows next (on the helper thread of a step).
    pub(crate) fn prepare_constraint(&mut self) {
        if let Some(constraint) = &mut self.constraint {
            if let Err(e) = constraint.prepare() {
                self.constraint_error = Some(e);
            }
        }
    }

    /// Advances the constraint past a kept token: `Ok(true)` when the grammar is complete.
    /// End-of-sequence tokens end the request anyway and are not the grammar's to judge.
    pub(crate) fn commit(&mut self, token: TokenId, eos: &[TokenId]) -> Result<bool, String> {
        match &mut self.constraint {
            Some(c) if !eos.contains(&token) => {
                c.commit(token)?;
                Ok(c.is_finished())
            }
            _ => Ok(false),
        }
    }
}
