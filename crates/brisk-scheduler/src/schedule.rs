//! Planning one step: [`SchedulerCore::schedule`] (Sarathi-Serve's stall-free batching).

use brisk_kv::KvError;
use brisk_types::LogitsWanted;

use crate::core::SchedulerCore;
use crate::plan::{PlannedSeq, StepPlan};
use crate::request::RequestId;
use crate::sequence::SeqView;

/// A plan under construction: who runs how many tokens, and what budget is left.
struct Draft {
    budget: usize,
    scheduled: Vec<(RequestId, usize)>,
    preempted: Vec<RequestId>,
}

impl SchedulerCore {
    /// Plans the next step (see the crate docs for the order), allocating the KV slots it
    /// needs and preempting if blocks run out. Calling it again before `update` replaces the
    /// previous plan, which `update` then refuses.
    pub fn schedule(&mut self, now: f64) -> StepPlan {
        self.step += 1;
        self.pending = true;
        let max = self.cfg.max_num_batched_tokens;
        let running: Vec<SeqView> = self.running.iter().map(|r| self.seqs[r].view()).collect();
        let mut d = Draft {
            budget: self
                .policy
                .step_token_budget(&running, max, now)
                .clamp(1, max),
            scheduled: Vec::new(),
            preempted: Vec::new(),
        };
        // 1. Every decode gets its token; 2. part-way prompts continue, in policy order.
        let (decodes, prefills): (Vec<_>, Vec<_>) = self
            .running
            .iter()
            .filter(|id| !self.seqs[*id].paused)
            .partition(|id| self.seqs[*id].remaining() == 1);
        let prefill_views: Vec<SeqView> = prefills.iter().map(|id| self.seqs[id].view()).collect();
        let prefills: Vec<RequestId> = self
            .policy
            .admission_order(&prefill_views, now)
            .into_iter()
            .map(|i| prefills[i])
            .collect();
        for id in decodes.into_iter().chain(prefills) {
            if d.budget == 0 {
                break;
            }
            if !self.running.contains(&id) {
                continue; // preempted earlier in this step
            }
            let s = &self.seqs[&id];
            let chunk = s.remaining().min(d.budget);
            let target = s.num_computed + chunk;
            if self.reserve(id, target, now, &mut d) {
                d.budget -= chunk;
                d.scheduled.push((id, chunk));
            }
        }
        // 3. Admit waiting requests; not in a step that had to preempt.
        if d.preempted.is_empty() {
            self.admit(now, &mut d);
        }
        let plan = self.build_plan(d);
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
            let views: Vec<SeqView> = self.running.iter().map(|r| self.seqs[r].view()).collect();
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
        d.preempted.push(id);
        self.num_preemptions += 1;
    }

    /// Admits waiting requests in policy order while seats, budget and blocks last. When the
    /// next one does not fit, the policy may name a running sequence to preempt in its favour
    /// (FCFS never does: admission stops there).
    fn admit(&mut self, now: f64, d: &mut Draft) {
        if self.waiting.is_empty() || d.budget == 0 {
            return;
        }
        let queue: Vec<RequestId> = self
            .waiting
            .iter()
            .copied()
            .filter(|id| !self.seqs[id].paused)
            .collect();
        let views: Vec<SeqView> = queue.iter().map(|id| self.seqs[id].view()).collect();
        let mut admitted = Vec::new();
        'candidates: for i in self.policy.admission_order(&views, now) {
            if d.budget == 0 {
                break;
            }
            let id = queue[i];
            loop {
                match self.try_admit(id, d) {
                    Ok(true) => {
                        admitted.push(id);
                        continue 'candidates;
                    }
                    Ok(false) => break 'candidates, // needs a whole prompt in one step
                    Err(()) => {}
                }
                let running: Vec<SeqView> =
                    self.running.iter().map(|r| self.seqs[r].view()).collect();
                let Some(v) = self.policy.admission_victim(&views[i], &running, now) else {
                    break 'candidates;
                };
                let victim = self.running[v];
                self.preempt(victim, d);
                admitted.retain(|&a| a != victim);
            }
        }
        self.waiting.retain(|w| !admitted.contains(w));
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

    fn build_plan(&self, d: Draft) -> StepPlan {
        let seqs: Vec<PlannedSeq> = d
            .scheduled
            .iter()
            .map(|&(id, chunk)| {
                let s = &self.seqs[&id];
                let end = s.num_computed + chunk;
                PlannedSeq {
                    id,
                    tokens: s.tokens[s.num_computed..end].to_vec(),
                    start_pos: s.num_computed,
                    block_table: self.kv.block_table(id).to_vec(),
                    logits: if end == s.tokens.len() {
                        LogitsWanted::Last
                    } else {
                        LogitsWanted::None
                    },
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
