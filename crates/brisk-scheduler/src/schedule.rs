//! Planning one step: [`SchedulerCore::schedule`] (Sarathi-Serve's stall-free batching).

use std::collections::HashMap;

use brisk_kv::KvError;
use brisk_types::{LogitsWanted, TokenId};

use crate::config::SchedulerConfig;
use crate::core::SchedulerCore;
use crate::latency::StepShape;
use crate::plan::{PlannedSeq, StepPlan};
use crate::policy::PromptWork;
use crate::request::RequestId;
use crate::sequence::{SeqView, Sequence};
use crate::speculate::{Candidate, DraftAsk, Drafter, Speculation};

/// Pseudo-drafts of the fleet-wide acceptance rate that a sequence's own estimate starts
/// from (so one lucky or unlucky verification does not decide the next).
const ACCEPTANCE_PRIOR_WEIGHT: f64 = 4.0;

/// A plan under construction: who runs how many tokens, and what budget is left.
struct Draft {
    budget: usize,
    scheduled: Vec<(RequestId, usize)>,
    preempted: Vec<RequestId>,
    /// Draft tokens the decodes among `scheduled` verify (their chunks count them).
    drafts: HashMap<RequestId, Vec<TokenId>>,
}

impl SchedulerCore {
    /// Plans the next step (see the crate docs for the order), allocating the KV slots it
    /// needs and preempting if blocks run out. Calling it again before `update` replaces the
    /// previous plan, which `update` then refuses.
    pub fn schedule(&mut self, now: f64) -> StepPlan {
        self.step += 1;
        self.pending = true;
        let max = self.cfg.max_num_batched_tokens;
        let running = self.views(&self.running);
        let mut d = Draft {
            budget: self
                .policy
                .step_token_budget(&running, max, now)
                .clamp(1, max),
            scheduled: Vec::new(),
            preempted: Vec::new(),
            drafts: HashMap::new(),
        };
        // 1. Every decode gets its token.
        let (decodes, partway): (Vec<_>, Vec<_>) = self
            .running
            .iter()
            .filter(|id| !self.seqs[*id].paused)
            .partition(|id| self.seqs[*id].remaining() == 1);
        for id in decodes {
            if d.budget == 0 {
                break;
            }
            self.continue_prompt(id, now, &mut d);
        }
        // 2. Prompt work, part-way and waiting together, in the policy's order.
        self.schedule_prompts(partway, now, &mut d);
        // 3. Decodes verify drafts where that pays, in what budget prompt work left.
        if self.cfg.speculative.is_some() {
            self.add_drafts(&mut d);
        }
        let plan = self.build_plan(d);
        // Nothing to run is nothing in flight: requests may move meanwhile.
        self.pending = !plan.is_empty();
        debug_assert!(plan.num_tokens <= self.cfg.max_num_batched_tokens);
        self.debug_check();
        plan
    }

    /// Makes room for `id` to hold `target` slots, preempting policy victims until it fits or
    /// `id` itself is the victim (then `false`).
    fn reserve(&mut self, id: RequestId, target: usize, now: f64, d: &mut Draft) -> bool {
        loop {
            match self.kv.allocate_slots(id, target) {
                Ok(()) => return true,
                Err(KvError::OutOfBlocks { .. }) => {}
                Err(e) => panic!("allocating for running request {id}: {e}"),
            }
            let views = self.views(&self.running);
            let victim = self.running[self.policy.preemption_victim(&views, now)];
            self.preempt(victim, d);
            if victim == id {
                return false;
            }
        }
    }

    /// Recompute-style preemption: free the blocks (full ones stay cached), reset progress,
    /// requeue at the front, and take back the tokens it had in this step's draft.
    fn preempt(&mut self, id: RequestId, d: &mut Draft) {
        self.kv.free(id);
        self.running.retain(|&r| r != id);
        self.waiting.push_front(id);
        let s = self.seqs.get_mut(&id).expect("running sequence");
        s.num_computed = 0;
        s.num_preemptions += 1;
        if let Some(i) = d.scheduled.iter().position(|&(r, _)| r == id) {
            d.budget += d.scheduled.remove(i).1;
        }
        d.drafts.remove(&id);
        d.preempted.push(id);
        self.num_preemptions += 1;
    }

    /// Gives running sequence `id` its next chunk (its decode token, or as much of its prompt
    /// as the budget allows), if it is still running and blocks can be found.
    fn continue_prompt(&mut self, id: RequestId, now: f64, d: &mut Draft) {
        if !self.running.contains(&id) {
            return; // preempted earlier in this step
        }
        let s = &self.seqs[&id];
        let chunk = s.remaining().min(d.budget);
        let target = s.num_computed + chunk;
        if self.reserve(id, target, now, d) {
            d.budget -= chunk;
            d.scheduled.push((id, chunk));
        }
    }

    /// Serves prompt work in the policy's order ([`SchedulingPolicy::prompt_order`]):
    /// part-way prompts continue, waiting requests are admitted while seats, budget and
    /// blocks last. Admission stops at the first request that does not fit (so a large one
    /// is not starved by smaller ones behind it) unless the policy names a running sequence
    /// to preempt in its favour (FCFS never does), and happens not at all in a step that had
    /// to preempt for blocks.
    ///
    /// [`SchedulingPolicy::prompt_order`]: crate::SchedulingPolicy::prompt_order
    fn schedule_prompts(&mut self, partway: Vec<RequestId>, now: f64, d: &mut Draft) {
        let queue: Vec<RequestId> = self
            .waiting
            .iter()
            .copied()
            .filter(|id| !self.seqs[id].paused)
            .collect();
        let partway_views = self.views(&partway);
        let waiting_views = self.views(&queue);
        let order = self
            .policy
            .prompt_order(&partway_views, &waiting_views, now);
        // A step that had to preempt for blocks admits nobody.
        let mut short_of_blocks = !d.preempted.is_empty();
        let mut admitting = true;
        for work in order {
            if d.budget == 0 {
                break;
            }
            match work {
                PromptWork::Partway(i) => {
                    let preempted = d.preempted.len();
                    self.continue_prompt(partway[i], now, d);
                    short_of_blocks |= d.preempted.len() > preempted;
                }
                PromptWork::Waiting(i) if admitting && !short_of_blocks => {
                    let id = queue[i];
                    if self.admit_one(id, &waiting_views[i], now, d) {
                        // Out of the queue now: if it is preempted later in this step, it
                        // goes back to the front like any running sequence.
                        self.waiting.retain(|&w| w != id);
                    } else {
                        admitting = false;
                    }
                }
                PromptWork::Waiting(_) => {}
            }
        }
    }

    /// Admits waiting request `id` (whose view is `view`), preempting the victims the policy
    /// names while it does not fit; whether it was admitted.
    fn admit_one(&mut self, id: RequestId, view: &SeqView, now: f64, d: &mut Draft) -> bool {
        loop {
            match self.try_admit(id, d) {
                Ok(true) => return true,
                Ok(false) => return false, // needs a whole prompt in one step
                Err(()) => {}
            }
            let running = self.views(&self.running);
            let Some(v) = self.policy.admission_victim(view, &running, now) else {
                return false;
            };
            let victim = self.running[v];
            self.preempt(victim, d);
        }
    }

    /// Admits `id` with its first chunk if a seat and blocks are free: `Ok(true)` when
    /// admitted, `Ok(false)` when its prompt may not be split and does not fit the budget,
    /// `Err(())` when seats or blocks are short.
    fn try_admit(&mut self, id: RequestId, d: &mut Draft) -> Result<bool, ()> {
        if self.running.len() >= self.cfg.max_num_seqs {
            return Err(());
        }
        let s = &self.seqs[&id];
        let prefix = self.kv.match_prefix(&s.tokens);
        let hit = prefix.num_tokens();
        let remaining = s.tokens.len() - hit;
        let chunk = remaining.min(d.budget);
        if chunk < remaining && !self.cfg.chunked_prefill {
            return Ok(false);
        }
        if self.kv.allocate_new(id, prefix, hit + chunk).is_err() {
            return Err(()); // out of blocks
        }
        let s = self.seqs.get_mut(&id).expect("waiting sequence");
        s.num_computed = hit;
        s.cached_tokens.get_or_insert(hit);
        s.admitted_rank = Some(self.next_rank);
        self.next_rank += 1;
        self.running.push(id);
        d.budget -= chunk;
        d.scheduled.push((id, chunk));
        Ok(true)
    }

    /// Lets decodes already in the draft verify draft tokens ([`Self::pick_drafts`]),
    /// within the budget prompt work left and the blocks free: drafts never delay a prompt
    /// nor preempt anyone.
    fn add_drafts(&mut self, d: &mut Draft) {
        for (id, mut drafts) in self.pick_drafts(d) {
            drafts.truncate(d.budget);
            let target = self.seqs[&id].num_computed + 1 + drafts.len();
            if drafts.is_empty() || self.kv.allocate_slots(id, target).is_err() {
                continue;
            }
            let entry = d.scheduled.iter_mut().find(|(r, _)| *r == id);
            entry.expect("a decode of this step").1 += drafts.len();
            d.budget -= drafts.len();
            d.drafts.insert(id, drafts);
        }
    }

    /// The drafts each decode of the step verifies, as many as [`Speculation::choose`]
    /// finds worth their cost. Prompt lookup proposes before the decision (it is free, and
    /// the decision then knows how many drafts each has); a draft model proposes after it,
    /// only for the sequences chosen.
    fn pick_drafts(&mut self, d: &Draft) -> Vec<(RequestId, Vec<TokenId>)> {
        let (Some(cfg), Some(drafter)) = (&self.cfg.speculative, self.drafter.as_mut()) else {
            return Vec::new();
        };
        let free = drafter.is_free();
        let prior = self.draft_totals.acceptance(0.5, 2.0);
        let mut step = StepShape::default();
        let (mut asks, mut candidates, mut proposals) = (Vec::new(), Vec::new(), Vec::new());
        for &(id, chunk) in &d.scheduled {
            let s = &self.seqs[&id];
            if chunk != 1 || s.remaining() != 1 || s.num_output() == 0 {
                step.add_prefill(s.num_computed, chunk);
                continue;
            }
            step.add_decode(s.num_computed + 1);
            let room = draft_room(&self.cfg, s, cfg.num_speculative_tokens);
            if room == 0 {
                continue;
            }
            let ask = DraftAsk {
                id,
                tokens: &s.tokens,
                max: room,
            };
            let drafts = if free {
                drafter.propose(&[ask]).pop().unwrap_or_default()
            } else {
                Vec::new()
            };
            let available = if free { drafts.len().min(room) } else { room };
            if available == 0 {
                continue;
            }
            candidates.push(Candidate {
                context: s.num_computed + 1,
                drafts: available,
                acceptance: s.drafts.acceptance(prior, ACCEPTANCE_PRIOR_WEIGHT),
            });
            asks.push(ask);
            proposals.push(drafts);
        }
        if candidates.is_empty() {
            return Vec::new();
        }
        let step_cost = |seqs: usize| drafter.step_cost(seqs);
        let chosen = Speculation { config: cfg }.choose(step, &candidates, d.budget, &step_cost);
        if !free {
            proposals = propose_chosen(drafter.as_mut(), &asks, &chosen);
        }
        asks.iter()
            .zip(proposals)
            .zip(chosen)
            .filter_map(|((a, mut drafts), n)| {
                drafts.truncate(n);
                (!drafts.is_empty()).then_some((a.id, drafts))
            })
            .collect()
    }

    fn build_plan(&self, d: Draft) -> StepPlan {
        let seqs: Vec<PlannedSeq> = d
            .scheduled
            .iter()
            .map(|&(id, chunk)| {
                let s = &self.seqs[&id];
                let block_table = self.kv.block_table(id).to_vec();
                if let Some(drafts) = d.drafts.get(&id) {
                    let mut tokens = vec![s.tokens[s.num_computed]];
                    tokens.extend(drafts);
                    return PlannedSeq {
                        id,
                        tokens,
                        start_pos: s.num_computed,
                        block_table,
                        logits: LogitsWanted::All,
                        num_drafts: drafts.len(),
                    };
                }
                let end = s.num_computed + chunk;
                PlannedSeq {
                    id,
                    tokens: s.tokens[s.num_computed..end].to_vec(),
                    start_pos: s.num_computed,
                    block_table,
                    logits: if end == s.tokens.len() {
                        LogitsWanted::Last
                    } else {
                        LogitsWanted::None
                    },
                    num_drafts: 0,
                }
            })
            .collect();
        StepPlan {
            step: self.step,
            num_tokens: seqs.iter().map(|s| s.tokens.len()).sum(),
            seqs,
            preempted: d.preempted,
        }
    }
}

/// How many drafts `s` may verify: at most `k`, and no more than its `max_tokens` and the
/// context leave room for (the accepted drafts and the token after them all count); none
/// for a request that opted out.
fn draft_room(cfg: &SchedulerConfig, s: &Sequence, k: usize) -> usize {
    if !s.req.speculative {
        return 0;
    }
    (s.req.max_tokens.saturating_sub(s.num_output() + 1))
        .min(cfg.max_model_len.saturating_sub(s.tokens.len() + 1))
        .min(k)
}

/// A costly drafter's proposals for the asks `chosen` gave drafts to (empty for the rest).
fn propose_chosen(
    drafter: &mut dyn Drafter,
    asks: &[DraftAsk<'_>],
    chosen: &[usize],
) -> Vec<Vec<TokenId>> {
    let wanted: Vec<DraftAsk> = asks
        .iter()
        .zip(chosen)
        .filter(|(_, &n)| n > 0)
        .map(|(a, &n)| DraftAsk { max: n, ..*a })
        .collect();
    let mut drafted = drafter.propose(&wanted).into_iter();
    chosen
        .iter()
        .map(|&n| match n {
            0 => Vec::new(),
            _ => drafted.next().unwrap_or_default(),
        })
        .collect()
}
