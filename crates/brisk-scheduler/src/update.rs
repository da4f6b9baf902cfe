//! Applying a step's results: [`SchedulerCore::update`].

use brisk_types::{LogitsWanted, TokenId};

use crate::config::SchedulerError;
use crate::core::SchedulerCore;
use crate::plan::StepPlan;
use crate::request::{FinishReason, SeqEvent};

impl SchedulerCore {
    /// Records that `plan` ran: `sampled[i]` is the token sampled for `plan.seqs[i]`, `Some`
    /// exactly for the sequences that asked for logits. Advances computed tokens, puts newly
    /// full blocks in the prefix cache, appends tokens and finishes sequences (stop token,
    /// `max_tokens`, `max_model_len`), freeing their blocks. Sequences aborted since the plan
    /// was made are skipped. `now` is recorded as the time of each first token (time-aware
    /// policies measure TPOT from it).
    ///
    /// Refused, with nothing changed, for a plan that is not the pending one or sampled
    /// tokens that do not match it.
    pub fn update(
        &mut self,
        plan: &StepPlan,
        sampled: &[Option<TokenId>],
        now: f64,
    ) -> Result<Vec<SeqEvent>, SchedulerError> {
        if !self.pending || plan.step != self.step {
            return Err(SchedulerError::StalePlan { plan: plan.step });
        }
        if sampled.len() != plan.seqs.len() {
            return Err(SchedulerError::PlanMismatch(format!(
                "{} tokens for {} sequences",
                sampled.len(),
                plan.seqs.len()
            )));
        }
        for (p, t) in plan.seqs.iter().zip(sampled) {
            if (p.logits != LogitsWanted::None) != t.is_some() {
                return Err(SchedulerError::PlanMismatch(format!(
                    "request {}: logits {:?} but sampled {t:?}",
                    p.id, p.logits
                )));
            }
        }
        self.pending = false;
        let mut events = Vec::new();
        for (p, &t) in plan.seqs.iter().zip(sampled) {
            // Skip sequences aborted since the plan was made (even if their id came back).
            let Some(s) = self.seqs.get_mut(&p.id) else {
                continue;
            };
            if !self.kv.contains(p.id) || s.num_computed != p.start_pos {
                continue;
            }
            let decode = p.tokens.len() == 1 && s.num_output() > 0;
            s.num_computed = p.start_pos + p.tokens.len();
            self.kv
                .commit_full_blocks(p.id, &s.tokens[..s.num_computed])?;
            if let Some(fair) = &self.cfg.fair_share {
                let prompt = if decode { 0.0 } else { p.tokens.len() as f64 };
                let output = if t.is_some() { 1.0 } else { 0.0 };
                let service = prompt * fair.prompt_weight + output * fair.output_weight;
                self.ledger.charge(s.req.client.as_deref(), service);
            }
            let Some(token) = t else { continue };
            let first = s.num_output() == 0;
            if first {
                s.first_token_at = Some(now);
            }
            s.tokens.push(token);
            events.push(SeqEvent::Token {
                id: p.id,
                token,
                first,
            });
            if let Some(reason) = self.finish_reason(p.id, token) {
                events.push(self.finish(p.id, reason));
            }
        }
        self.debug_check();
        Ok(events)
    }

    /// Whether the sequence ends with the token it just sampled. A stop wins over a length
    /// limit reached by the same token.
    fn finish_reason(&self, id: u64, token: TokenId) -> Option<FinishReason> {
        let s = &self.seqs[&id];
        let r = &s.req;
        let may_stop = s.num_output() > r.min_tokens;
        let eos = !r.ignore_eos && self.cfg.eos_token_ids.contains(&token);
        if may_stop && (eos || r.stop_token_ids.contains(&token)) {
            Some(FinishReason::Stop)
        } else if s.num_output() >= r.max_tokens || s.tokens.len() >= self.cfg.max_model_len {
            Some(FinishReason::Length)
        } else {
            None
        }
    }
}
