//! The seam where scheduling policies plug in.
//!
//! A policy answers five questions, each with a default that is FCFS's answer, so FCFS
//! ([`Fcfs`]) behaves exactly as the core did before the seam was widened:
//! - may this new request be queued at all ([`SchedulingPolicy::on_arrival`]; FCFS: yes);
//! - how many tokens may the next step carry ([`SchedulingPolicy::step_token_budget`];
//!   FCFS: `max_num_batched_tokens`);
//! - in which order are prompts admitted and continued ([`SchedulingPolicy::admission_order`],
//!   and [`SchedulingPolicy::prompt_order`] for part-way and waiting prompts together; FCFS:
//!   every part-way prompt before any waiting one);
//! - who yields blocks when a running sequence needs one ([`SchedulingPolicy::preemption_victim`]);
//! - who yields its seat and blocks to a waiting request that does not fit
//!   ([`SchedulingPolicy::admission_victim`]; FCFS: nobody, admission never preempts).
//!
//! The SLO-aware policy ([`crate::SloPolicy`]) answers all five from deadlines and a latency
//! model.

use crate::sequence::SeqView;

/// The verdict on a new request, given before any work is spent on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Queue it with its objective.
    Accept,
    /// Queue it as best effort: it cannot meet its objective, so it must not displace work
    /// that still can.
    Demote,
    /// Refuse it now (the server answers 429 with this message).
    Reject(String),
}

/// One piece of prompt work competing for a step's token budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptWork {
    /// The running sequence at this index of `partway`: its prompt is part-way computed.
    Partway(usize),
    /// The waiting request at this index of `waiting`: to be admitted.
    Waiting(usize),
}

/// Decides who is admitted first and who yields memory.
///
/// **Progress contract**: victims must be chosen by an order that is stable across steps
/// (e.g. admission rank, or a fixed priority with rank as tie-break), so that the sequence
/// ranked first is never preempted while others run. Two sequences that take turns evicting
/// each other would livelock.
pub trait SchedulingPolicy: Send {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Indices into `waiting` (queue order: preempted sequences first, then arrivals) in the
    /// order to try admitting them. Admission stops at the first that does not fit, so a
    /// large request is not starved by smaller ones behind it.
    fn admission_order(&self, waiting: &[SeqView], now: f64) -> Vec<usize>;

    /// The order in which part-way prompts (running, not yet at their first token) and
    /// waiting requests take this step's prompt budget. A part-way prompt left out of a step
    /// keeps its computed blocks and continues at a later one. The default serves every
    /// part-way prompt first, each list in [`Self::admission_order`], as FCFS does.
    fn prompt_order(&self, partway: &[SeqView], waiting: &[SeqView], now: f64) -> Vec<PromptWork> {
        let partway = self
            .admission_order(partway, now)
            .into_iter()
            .map(PromptWork::Partway);
        let waiting = self
            .admission_order(waiting, now)
            .into_iter()
            .map(PromptWork::Waiting);
        partway.chain(waiting).collect()
    }

    /// Index into `running` (non-empty, in admission order) of the sequence to preempt
    /// when one of them needs a block and none is free. It may be the one asking.
    fn preemption_victim(&self, running: &[SeqView], now: f64) -> usize;

    /// The verdict on `new` as it arrives, with the queues as they are.
    fn on_arrival(
        &self,
        _new: &SeqView,
        _waiting: &[SeqView],
        _running: &[SeqView],
        _now: f64,
    ) -> Admission {
        Admission::Accept
    }

    /// Tokens the next step may carry, at most `max` (`max_num_batched_tokens`). Running
    /// decodes are served first, so a budget below their number delays some of them.
    fn step_token_budget(&self, _running: &[SeqView], max: usize, _now: f64) -> usize {
        max
    }

    /// A step of `shape` took `seconds` (planning, execution and sampling). Policies that
    /// predict step times learn from it; the default ignores it.
    fn observe_step(&mut self, _shape: &crate::StepShape, _seconds: f64) {}

    /// How far measured steps run from the policy's predictions (measured over predicted;
    /// 1 for a policy that predicts nothing), for the metrics.
    fn step_time_correction(&self) -> f64 {
        1.0
    }

    /// Index into `running` of a sequence to preempt so that `candidate` (waiting, first in
    /// admission order among those left) can be admitted, or `None` to stop admitting. The
    /// victim must rank strictly below the candidate in an order stable across steps, or two
    /// requests could evict each other forever.
    fn admission_victim(
        &self,
        _candidate: &SeqView,
        _running: &[SeqView],
        _now: f64,
    ) -> Option<usize> {
        None
    }
}

/// First come, first served: admit in queue order; preempt the most recently admitted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fcfs;

impl SchedulingPolicy for Fcfs {
    fn name(&self) -> &'static str {
        "fcfs"
    }

    fn admission_order(&self, waiting: &[SeqView], _now: f64) -> Vec<usize> {
        (0..waiting.len()).collect()
    }

    fn preemption_victim(&self, running: &[SeqView], _now: f64) -> usize {
        (0..running.len())
            .max_by_key(|&i| running[i].admitted_rank)
            .expect("running is not empty")
    }
}
