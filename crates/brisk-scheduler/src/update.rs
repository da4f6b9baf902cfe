//! Applying a step's results: [`SchedulerCore::update`].

use brisk_types::{LogitsWanted, TokenId};

use crate::config::{SchedulerConfig, SchedulerError};
use crate::core::SchedulerCore;
use crate::plan::{PlannedSeq, StepPlan};
use crate::request::{FinishReason, SeqEvent};
use crate::sequence::Sequence;

impl SchedulerCore {
    /// Records that `plan` ran: `sampled[i]` is the token sampled for `plan.seqs[i]`, `Some`
    /// exactly for the sequences that asked for logits (see [`Self::update_verified`] for
    /// steps that verify drafts).
    pub fn update(
        &mut self,
        plan: &StepPlan,
        sampled: &[Option<TokenId>],
        now: f64,
    ) -> Result<Vec<SeqEvent>, SchedulerError> {
        let tokens: Vec<Vec<TokenId>> = sampled
            .iter()
            .map(|t| t.iter().copied().collect())
            .collect();
        self.update_verified(plan, &tokens, now)
    }

    /// Records that `plan` ran: `kept[i]` are the tokens kept for `plan.seqs[i]` — none for
    /// a sequence that asked for no logits, one for a prompt's last chunk or a decode, and
    /// for a sequence that verified drafts the drafts it accepted (a prefix of them) and the
    /// token sampled after them. Advances computed tokens (rejected drafts' slots are given
    /// back), puts newly full blocks in the prefix cache, appends tokens and finishes
    /// sequences (stop token, `max_tokens`, `max_model_len`; tokens after the one that
    /// finishes are dropped), freeing their blocks. Sequences aborted since the plan was made
    /// are skipped. `now` is recorded as the time of each first token (time-aware policies
    /// measure TPOT from it).
    ///
    /// Refused, with nothing changed, for a plan that is not the pending one or tokens that
    /// do not match it.
    pub fn update_verified(
        &mut self,
        plan: &StepPlan,
        kept: &[Vec<TokenId>],
        now: f64,
    ) -> Result<Vec<SeqEvent>, SchedulerError> {
        if plan.step == self.step && plan.is_empty() && kept.is_empty() {
            return Ok(Vec::new()); // the last plan ran nothing
        }
        if !self.pending || plan.step != self.step {
            return Err(SchedulerError::StalePlan { plan: plan.step });
        }
        if kept.len() != plan.seqs.len() {
            return Err(SchedulerError::PlanMismatch(format!(
                "{} results for {} sequences",
                kept.len(),
                plan.seqs.len()
            )));
        }
        for (p, t) in plan.seqs.iter().zip(kept) {
            check_kept(p, t)?;
        }
        self.pending = false;
        let mut events = Vec::new();
        for (p, t) in plan.seqs.iter().zip(kept) {
            // Skip sequences aborted since the plan was made (even if their id came back).
            let Some(s) = self.seqs.get_mut(&p.id) else {
                continue;
            };
            if !self.kv.contains(p.id) || s.num_computed != p.start_pos {
                continue;
            }
            let decode = s.num_output() > 0 && p.tokens.len() == 1 + p.num_drafts;
            // Keep tokens up to the one that ends the sequence.
            let first = s.num_output() == 0;
            let mut reason = None;
            let mut appended = 0;
            for &token in t {
                s.tokens.push(token);
                appended += 1;
                reason = finish_reason(&self.cfg, s, token);
                if reason.is_some() {
                    break;
                }
            }
            if first && appended > 0 {
                s.first_token_at = Some(now);
                // Held for a move to a decode replica; one that just finished has no decode.
                s.paused = s.req.park_after_first_token && reason.is_none();
            }
            // Positions whose K/V are now valid: the chunk, less the rejected drafts.
            s.num_computed = if p.num_drafts > 0 {
                p.start_pos + appended
            } else {
                p.start_pos + p.tokens.len()
            };
            self.kv
                .commit_full_blocks(p.id, &s.tokens[..s.num_computed])?;
            if !decode {
                self.prompt_tokens_computed += p.tokens.len() as u64;
            }
            if p.num_drafts > 0 {
                let accepted = t.len() - 1;
                s.drafts.record(p.num_drafts, accepted);
                self.draft_totals.record(p.num_drafts, accepted);
                self.acceptance_tenths[accepted * 10 / p.num_drafts] += 1;
                self.kv.truncate_slots(p.id, s.num_computed)?;
            }
            if let Some(fair) = &self.cfg.fair_share {
                let prompt = if decode { 0.0 } else { p.tokens.len() as f64 };
                let service = prompt * fair.prompt_weight + appended as f64 * fair.output_weight;
                self.ledger.charge(s.req.client.as_deref(), service);
            }
            let start = s.tokens.len() - appended;
            for (i, &token) in s.tokens[start..].iter().enumerate() {
                events.push(SeqEvent::Token {
                    id: p.id,
                    token,
                    first: first && i == 0,
                });
            }
            if let Some(reason) = reason {
                events.push(self.finish(p.id, reason));
            }
        }
        self.debug_check();
        Ok(events)
    }
}

/// Whether `kept` fits what `p` asked for: tokens exactly where logits were wanted, and for
/// a verification at most one token more than its drafts, matching them but for the last.
fn check_kept(p: &PlannedSeq, kept: &[TokenId]) -> Result<(), SchedulerError> {
    let mismatch = |why: String| {
        Err(SchedulerError::PlanMismatch(format!(
            "request {}: {why}",
            p.id
        )))
    };
    match (p.logits, kept.len()) {
        (LogitsWanted::None, 0) => Ok(()),
        (LogitsWanted::Last, 1) => Ok(()),
        (LogitsWanted::All, n) if p.num_drafts > 0 && (1..=p.num_drafts + 1).contains(&n) => {
            if kept[..n - 1] == p.drafts()[..n - 1] {
                Ok(())
            } else {
                mismatch(format!(
                    "kept {kept:?}, which do not follow the drafts {:?}",
                    p.drafts()
                ))
            }
        }
        (logits, n) => mismatch(format!(
            "logits {logits:?} with {} drafts but {n} tokens kept",
            p.num_drafts
        )),
    }
}

/// Whether the sequence ends with the token it just appended. A stop wins over a length
/// limit reached by the same token.
fn finish_reason(cfg: &SchedulerConfig, s: &Sequence, token: TokenId) -> Option<FinishReason> {
    let r = &s.req;
    let may_stop = s.num_output() > r.min_tokens;
    let eos = !r.ignore_eos && cfg.eos_token_ids.contains(&token);
    if may_stop && (eos || r.stop_token_ids.contains(&token)) {
        Some(FinishReason::Stop)
    } else if s.num_output() >= r.max_tokens || s.tokens.len() >= cfg.max_model_len {
        Some(FinishReason::Length)
    } else {
        None
    }
}
