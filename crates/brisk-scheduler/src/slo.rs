//! The SLO-aware policy: every request scheduled against its own TTFT and TPOT objective.
//!
//! It answers the five questions of the policy seam from deadlines and a profiled
//! [`LatencyModel`]:
//!
//! - **Deadlines** (Etalon's deadline view): a request's first token is due at
//!   `arrival + ttft`, and its k-th token at `first_token + (k − 1) · tpot`, so a decode that
//!   ran ahead of schedule has slack to absorb a longer step, and one behind has none.
//! - **One queue of prompt work ordered by slack** (least laxity first; DistServe schedules
//!   for goodput, not arrival order): prompts part-way through their prefill and waiting
//!   requests compete together, so an interactive arrival takes the next step's prompt
//!   budget from a best-effort prompt mid-prefill (which keeps its computed blocks and
//!   continues when there is room). Slack = TTFT deadline − now − the predicted time of the
//!   request's remaining prompt. Interactive sequences preempted mid-output come before
//!   them, by their next token's deadline. Requests whose slack is negative cannot meet
//!   their TTFT even if started now; they, batch-class requests and requests without an
//!   objective form the best-effort class, served after every request that can still make
//!   it, in queue order.
//! - **Token budget sized for TPOT** (Sarathi-Serve's stall-free batching, with the budget
//!   derived from the latency model instead of fixed, as HyGen does for its latency
//!   predictor): running decodes always get their token; prompt tokens are added only while
//!   the predicted step time stays within the tightest allowance of the interactive decodes,
//!   which is that decode's slack to its next token deadline or, if it is behind, its TPOT.
//! - **Admission control** (DistServe's goodput view: a request that will miss anyway only
//!   costs others theirs): on arrival, the predicted time of the prompt work queued ahead of
//!   the request (interactive work with an earlier deadline) plus its own prompt is compared
//!   with its TTFT. If it cannot make it, it is rejected at once (HTTP 429, opt-in) or demoted
//!   to best effort.
//! - **Priority preemption** (QLLM): when an interactive request that can still meet its TTFT
//!   (or an interactive sequence preempted mid-output) finds no seat or no blocks, the most
//!   recently admitted best-effort sequence is preempted
//!   by recompute (its full blocks stay in the prefix cache, so it resumes cheaply); when a
//!   running sequence needs a block, best-effort sequences yield first.
//!
//! **Progress.** Victims are chosen by (best effort first, then latest admission). A running
//! sequence's best-effort status only ever turns on (batch, demoted, or a TTFT deadline
//! passed), so that order is stable across steps and the crate's progress argument carries
//! over: the first-ranked sequence is never preempted while others run. Admission preempts
//! only best-effort sequences, and only for a request that is not best effort.

use crate::latency::{LatencyModel, StepShape};
use crate::policy::{Admission, PromptWork, SchedulingPolicy};
use crate::request::Priority;
use crate::sequence::SeqView;

/// The share of a decode's allowance a step is planned to fill. Real steps run a few percent
/// over the latency model's prediction (its held-out error, sampling, the server's own
/// threads), so planning to the last millisecond left decodes just past their TPOT: on the
/// real server, 20 of 22 misses at 2 req/s on the Azure trace were TPOTs of 101–108 ms
/// against 100 ms (BENCHMARKS.md, issue 5).
pub const STEP_PLAN_SHARE: f64 = 0.85;

/// Settings of the [`SloPolicy`].
#[derive(Clone, Debug, PartialEq)]
pub struct SloPolicyConfig {
    /// Refuse requests that cannot meet their TTFT (HTTP 429) instead of demoting them.
    pub reject_unattainable: bool,
    /// The step token budget's ceiling (`max_num_batched_tokens`), used to predict how many
    /// steps a prompt takes.
    pub max_num_batched_tokens: usize,
    /// Use predicted output lengths (`SeqView::predicted_output_tokens`, else `max_tokens`):
    /// shortest job first, aged, within equal slack; longest predicted first to yield;
    /// decodes' predicted ends in admission forecasts. Off: queue order, latest admitted
    /// yields, decodes run on through every forecast.
    pub length_aware: bool,
}

/// The SLO-aware policy (see the module docs).
#[derive(Clone, Debug)]
pub struct SloPolicy {
    model: LatencyModel,
    cfg: SloPolicyConfig,
    /// Measured over predicted step time, a moving average (see [`Self::observe_step`]).
    correction: f64,
}

/// Weight of the newest step in the correction's moving average: about the last 50 steps
/// count, so a change of load or of the machine shows within a few seconds.
const CORRECTION_WEIGHT: f64 = 0.02;

/// Bounds of the correction: a model off by more than this is the wrong model, and one
/// outlier step (a page fault, a preempted VM) must not swing the plan.
const CORRECTION_RANGE: (f64, f64) = (0.25, 4.0);

/// Steps predicted shorter than this are too noisy to learn from.
const MIN_OBSERVED_STEP_S: f64 = 0.002;

impl SloPolicy {
    /// A policy predicting step times with `model`.
    pub fn new(model: LatencyModel, cfg: SloPolicyConfig) -> Self {
        Self {
            model,
            cfg,
            correction: 1.0,
        }
    }

    /// Predicted duration of a step of this shape on this machine now: the latency model
    /// scaled by the measured correction.
    fn predict(&self, shape: &StepShape) -> f64 {
        self.correction * self.model.predict(shape)
    }

    /// Whether a sequence is best effort for preemption purposes. Only ever turns on.
    fn best_effort(v: &SeqView, now: f64) -> bool {
        let Some(slo) = v.slo else { return true };
        if v.priority == Priority::Batch || v.demoted {
            return true;
        }
        let due = v.arrival + slo.ttft;
        match v.first_token_at {
            Some(t) => t > due,
            None => now > due,
        }
    }

    /// Predicted time of the request's remaining prompt, started now on an otherwise empty
    /// step.
    fn own_prefill(&self, v: &SeqView) -> f64 {
        if v.is_decoding() {
            return 0.0;
        }
        self.correction
            * self.model.prefill_time(
                v.num_computed_tokens,
                v.num_pending_tokens,
                self.cfg.max_num_batched_tokens,
                0,
                0,
            )
    }

    /// TTFT slack: deadline − now − predicted remaining prompt time; `None` for best effort.
    fn slack(&self, v: &SeqView, now: f64) -> Option<f64> {
        if Self::best_effort(v, now) || v.first_token_at.is_some() {
            return None;
        }
        let slo = v.slo.expect("not best effort");
        let slack = v.arrival + slo.ttft - now - self.own_prefill(v);
        (slack >= 0.0).then_some(slack)
    }

    /// Where `v` stands in the prompt queue, lower first: (0, next token's deadline) for an
    /// interactive sequence that already streams, (1, slack) for one that can still meet
    /// its TTFT, (2, 0) for best effort; equal keys (no TTFT objective: infinite slack; best
    /// effort) by [`Self::job_key`].
    fn rank(&self, v: &SeqView, now: f64) -> Rank {
        let (group, key) = if let (false, Some(first), Some(slo)) =
            (Self::best_effort(v, now), v.first_token_at, v.slo)
        {
            (0, first + v.num_output_tokens as f64 * slo.tpot)
        } else if let Some(slack) = self.slack(v, now) {
            (1, slack)
        } else {
            (2, 0.0)
        };
        (group, key, self.job_key(v, now))
    }

    /// Shortest predicted job first, aged so that none starves: highest response ratio
    /// next, (waiting + service) / service, negated so lower goes first. Service is the
    /// request's remaining prompt plus its predicted remaining output (its `max_tokens` when
    /// not predicted) at one decode's step time. 0 for every request when length-blind, so
    /// queue order stands.
    fn job_key(&self, v: &SeqView, now: f64) -> f64 {
        if !self.cfg.length_aware {
            return 0.0;
        }
        let output = v
            .predicted_remaining()
            .unwrap_or_else(|| v.max_tokens.saturating_sub(v.num_output_tokens).max(1) as f64);
        let decode = self.predict(&StepShape {
            decode_seqs: 1,
            decode_context: v.num_prompt_tokens + v.num_output_tokens,
            ..StepShape::default()
        });
        let service = (self.own_prefill(v) + output * decode).max(1e-6);
        let waited = (now - v.arrival).max(0.0);
        -(waited + service) / service
    }

    /// Order of victims, the largest yields first: best effort before interactive, then
    /// (length-aware) the longest predicted output — fixed at arrival, so the order is
    /// stable — then the latest admitted.
    fn victim_key(&self, v: &SeqView, now: f64) -> (bool, u64, Option<u64>) {
        let length = if self.cfg.length_aware {
            v.predicted_output_tokens.unwrap_or(v.max_tokens as f64) as u64
        } else {
            0
        };
        (Self::best_effort(v, now), length, v.admitted_rank)
    }

    /// Predicted time to compute `prompts` (token counts) together, in full steps beside the
    /// `running` decodes — each for as many steps as it is predicted to have tokens left
    /// when length-aware, else for all of them.
    fn queue_time(&self, prompts: &[usize], running: &[SeqView]) -> f64 {
        let decodes: Vec<(f64, usize)> = running
            .iter()
            .filter(|v| v.is_decoding())
            .map(|v| {
                let left = match (self.cfg.length_aware, v.predicted_remaining()) {
                    (true, Some(left)) => left,
                    _ => f64::INFINITY,
                };
                (left, v.num_computed_tokens + 1)
            })
            .collect();
        let load_at = |step: usize| {
            decodes
                .iter()
                .filter(|(left, _)| *left > step as f64)
                .fold((0, 0), |(n, ctx), (_, c)| (n + 1, ctx + c))
        };
        let (decodes, _) = load_at(0);
        let chunk = self
            .cfg
            .max_num_batched_tokens
            .saturating_sub(decodes)
            .max(1);
        let total: usize = prompts.iter().sum();
        let steps = total.div_ceil(chunk).max(1);
        // Attention work of every prompt, spread evenly over the steps.
        let pairs: f64 = prompts
            .iter()
            .map(|&n| (n * (n + 1)) as f64 / 2.0)
            .sum::<f64>()
            / steps as f64;
        let mut left = total;
        let mut time = 0.0;
        let mut step = 0;
        while left > 0 {
            let len = chunk.min(left);
            let (decodes, context) = load_at(step);
            let shape = StepShape {
                prefill_tokens: len,
                decode_seqs: decodes,
                decode_context: context,
                prefill_attention: pairs,
            };
            time += self.predict(&shape);
            left -= len;
            step += 1;
        }
        time
    }
}

/// A place in the prompt queue: group, key within the group, job key on ties.
type Rank = (u8, f64, f64);

/// Lower ranks go first: by group, then by key, then by job key (a stable sort keeps queue
/// order on ties).
fn by_rank(a: Rank, b: Rank) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
        .then(a.1.total_cmp(&b.1))
        .then(a.2.total_cmp(&b.2))
}

/// Running decodes: how many, and the positions they attend over.
fn decode_load(running: &[SeqView]) -> (usize, usize) {
    running
        .iter()
        .filter(|v| v.is_decoding())
        .fold((0, 0), |(n, ctx), v| {
            (n + 1, ctx + v.num_computed_tokens + 1)
        })
}

impl SchedulingPolicy for SloPolicy {
    fn name(&self) -> &'static str {
        "slo"
    }

    /// Interactive sequences that already stream (preempted mid-output: their next token
    /// has a deadline) first, earliest deadline first; then requests that can still meet
    /// their TTFT, least slack first; then best effort in queue order (preempted sequences
    /// first, then arrivals).
    fn admission_order(&self, waiting: &[SeqView], now: f64) -> Vec<usize> {
        let rank: Vec<Rank> = waiting.iter().map(|v| self.rank(v, now)).collect();
        let mut order: Vec<usize> = (0..waiting.len()).collect();
        order.sort_by(|&a, &b| by_rank(rank[a], rank[b]));
        order
    }

    /// One queue of prompt work: part-way prompts and waiting requests ranked together as
    /// [`Self::admission_order`] ranks them, so an interactive arrival with little slack
    /// takes the budget from a best-effort prompt part-way through its prefill (which keeps
    /// its blocks and continues when there is room). Ties go to part-way prompts, which
    /// already hold blocks.
    fn prompt_order(&self, partway: &[SeqView], waiting: &[SeqView], now: f64) -> Vec<PromptWork> {
        let mut work: Vec<(PromptWork, Rank)> = partway
            .iter()
            .enumerate()
            .map(|(i, v)| (PromptWork::Partway(i), self.rank(v, now)))
            .chain(
                waiting
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (PromptWork::Waiting(i), self.rank(v, now))),
            )
            .collect();
        work.sort_by(|a, b| by_rank(a.1, b.1));
        work.into_iter().map(|(w, _)| w).collect()
    }

    /// Learns how far real steps run from the model's prediction: a moving average of
    /// measured over predicted time, which scales every later prediction. The profile is
    /// made on an idle machine with the backend alone; serving adds sampling, the server's
    /// threads and other tenants, so real steps run some percent over it, and a budget
    /// planned to the prediction lets TPOTs creep past their objective (BENCHMARKS.md, issue
    /// 17). On the simulator's clock steps last exactly the prediction, so it stays 1.
    fn observe_step(&mut self, shape: &StepShape, seconds: f64) {
        let predicted = self.model.predict(shape);
        if predicted < MIN_OBSERVED_STEP_S || !seconds.is_finite() || seconds <= 0.0 {
            return;
        }
        let ratio = (seconds / predicted).clamp(CORRECTION_RANGE.0, CORRECTION_RANGE.1);
        self.correction += CORRECTION_WEIGHT * (ratio - self.correction);
    }

    fn step_time_correction(&self) -> f64 {
        self.correction
    }

    /// Best effort first, then (length-aware) the longest predicted, then the most recently
    /// admitted ([`Self::victim_key`]).
    fn preemption_victim(&self, running: &[SeqView], now: f64) -> usize {
        (0..running.len())
            .max_by_key(|&i| self.victim_key(&running[i], now))
            .expect("running is not empty")
    }

    fn on_arrival(
        &self,
        new: &SeqView,
        waiting: &[SeqView],
        running: &[SeqView],
        now: f64,
    ) -> Admission {
        let Some(slo) = new.slo.filter(|s| s.ttft.is_finite()) else {
            return Admission::Accept;
        };
        if new.priority == Priority::Batch {
            return Admission::Accept;
        }
        let due = new.arrival + slo.ttft;
        // Interactive prompt work that will be served before this request.
        let mut prompts: Vec<usize> = waiting
            .iter()
            .chain(running.iter().filter(|v| !v.is_decoding()))
            .filter(|v| {
                !Self::best_effort(v, now)
                    && v.first_token_at.is_none()
                    && v.slo.is_some_and(|s| v.arrival + s.ttft <= due)
            })
            .map(|v| v.num_pending_tokens)
            .collect();
        prompts.push(new.num_pending_tokens);
        let predicted = now - new.arrival + self.queue_time(&prompts, running);
        if predicted <= slo.ttft {
            return Admission::Accept;
        }
        if self.cfg.reject_unattainable {
            Admission::Reject(format!(
                "the server cannot meet this request's time-to-first-token objective of {:.0} ms: \
                 its latency model predicts {:.0} ms for the {} prompt tokens queued ahead of it \
                 and its own {}; retry later, or relax `slo.ttft_ms`",
                slo.ttft * 1e3,
                predicted * 1e3,
                prompts.iter().sum::<usize>() - new.num_pending_tokens,
                new.num_pending_tokens
            ))
        } else {
            Admission::Demote
        }
    }

    /// The decodes' tokens plus as many prompt tokens as keep the predicted step within the
    /// tightest allowance of the interactive decodes (see the module docs), less a margin.
    fn step_token_budget(&self, running: &[SeqView], max: usize, now: f64) -> usize {
        let allowance = running
            .iter()
            .filter(|v| v.is_decoding() && !Self::best_effort(v, now))
            .filter_map(|v| {
                let tpot = v.slo?.tpot;
                let first = v.first_token_at?;
                tpot.is_finite()
                    .then(|| (first + v.num_output_tokens as f64 * tpot - now).max(tpot))
            })
            .fold(f64::INFINITY, f64::min)
            * STEP_PLAN_SHARE;
        if allowance.is_infinite() {
            return max;
        }
        let (decodes, context) = decode_load(running);
        // Prompt tokens go first to the running part-way prompts, in this policy's order and
        // at their positions (attention over a long context costs more), then to new
        // admissions, which start at position 0.
        let partial: Vec<&SeqView> = running.iter().filter(|v| !v.is_decoding()).collect();
        let partial_views: Vec<SeqView> = partial.iter().map(|v| (*v).clone()).collect();
        let chunks: Vec<(usize, usize)> = self
            .admission_order(&partial_views, now)
            .into_iter()
            .map(|i| {
                (
                    partial[i].num_computed_tokens,
                    partial[i].num_pending_tokens,
                )
            })
            .collect();
        let step = |prefill: usize| {
            let mut shape = StepShape {
                decode_seqs: decodes,
                decode_context: context,
                ..StepShape::default()
            };
            let mut left = prefill;
            for &(start, pending) in &chunks {
                let n = pending.min(left);
                if n > 0 {
                    shape.add_prefill(start, n);
                }
                left -= n;
            }
            if left > 0 {
                shape.add_prefill(0, left);
            }
            self.predict(&shape)
        };
        let room = max.saturating_sub(decodes);
        if step(room) <= allowance {
            return max;
        }
        // Largest prefill with step(prefill) ≤ allowance; step grows with prefill.
        let (mut lo, mut hi) = (0, room);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if step(mid) <= allowance {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        (decodes + lo).max(1)
    }

    /// A best-effort sequence ([`Self::victim_key`]: length-aware, the longest predicted;
    /// else the most recently admitted), for a request that can still make its TTFT or an
    /// interactive sequence preempted mid-output.
    fn admission_victim(
        &self,
        candidate: &SeqView,
        running: &[SeqView],
        now: f64,
    ) -> Option<usize> {
        let streaming = candidate.first_token_at.is_some() && !Self::best_effort(candidate, now);
        if !streaming && self.slack(candidate, now).is_none() {
            return None;
        }
        (0..running.len())
            .filter(|&i| Self::best_effort(&running[i], now))
            .max_by_key(|&i| self.victim_key(&running[i], now))
    }
}

/// Which policy a scheduler runs, as a value (so configs stay `Clone` and `Debug`).
#[derive(Clone, Debug, Default)]
pub enum PolicyChoice {
    /// First come, first served.
    #[default]
    Fcfs,
    /// The SLO-aware policy with this latency model.
    Slo {
        /// Predicts step times.
        model: LatencyModel,
        /// Reject (429) instead of demoting requests that cannot meet their TTFT.
        reject_unattainable: bool,
    },
}

impl PolicyChoice {
    /// The policy for a scheduler with these settings.
    pub fn build(&self, cfg: &crate::SchedulerConfig) -> Box<dyn SchedulingPolicy> {
        match self {
            Self::Fcfs => Box::new(crate::Fcfs),
            Self::Slo {
                model,
                reject_unattainable,
            } => Box::new(SloPolicy::new(
                model.clone(),
                SloPolicyConfig {
                    reject_unattainable: *reject_unattainable,
                    max_num_batched_tokens: cfg.max_num_batched_tokens,
                    length_aware: cfg.length_prediction.is_some(),
                },
            )),
        }
    }

    /// `fcfs` or `slo`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Fcfs => "fcfs",
            Self::Slo { .. } => "slo",
        }
    }
}
