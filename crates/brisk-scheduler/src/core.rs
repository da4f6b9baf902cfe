//! [`SchedulerCore`]: the queues, requests entering and leaving, stats and invariants.
//! Planning a step is in `schedule.rs`, applying its results in `update.rs`.

use std::collections::{HashMap, HashSet, VecDeque};

use brisk_kv::BlockManager;

use crate::config::{SchedulerConfig, SchedulerError};
use crate::fair::{FairShare, Ledger};
use crate::length::{LengthFeatures, LengthPredictor, RankAgreement};
use crate::policy::{Admission, Fcfs, SchedulingPolicy};
use crate::request::{FinishReason, RequestId, SchedRequest, SeqEvent};
use crate::sequence::{DraftCounts, SeqView, Sequence};
use crate::speculate::{Drafter, NgramDrafter};

/// Numbers for the metrics endpoint (vLLM's names in DESIGN.md).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SchedulerStats {
    /// Sequences holding KV blocks.
    pub num_running: usize,
    /// Sequences queued (new or preempted).
    pub num_waiting: usize,
    /// Share of KV blocks in use, cached-but-free blocks counted as free.
    pub kv_usage_ratio: f64,
    /// Prompt tokens looked up in the prefix cache at admission.
    pub prefix_cache_queries: u64,
    /// Of those, tokens found.
    pub prefix_cache_hits: u64,
    /// Preemptions since start.
    pub num_preemptions: u64,
    /// Tokens computed outside decoding (prompt chunks, and the recomputation of preempted
    /// sequences): what a decode replica of a disaggregated fleet should barely do.
    pub prompt_tokens_computed: u64,
    /// Blocks in the prefix cache, held or free (what KV events describe).
    pub cached_blocks: usize,
    /// Clients with requests queued or running (fair share's accounts).
    pub num_clients: usize,
    /// The policy's measured over predicted step time (1 when it predicts none).
    pub step_time_correction: f64,
    /// Finished requests the output-length predictor learned from.
    pub length_examples: u64,
    /// How its predictions ranked the outputs that followed (consecutive pairs).
    pub length_ranking: RankAgreement,
    /// Speculative decoding: verifications, draft tokens and accepted ones.
    pub drafts: DraftCounts,
    /// Verifications by acceptance rate, in tenths (`[i]`: accepted/drafted in
    /// `[i/10, (i+1)/10)`, `[10]`: all accepted).
    pub acceptance_tenths: [u64; 11],
}

/// The scheduler state machine; see the crate docs.
pub struct SchedulerCore {
    pub(crate) cfg: SchedulerConfig,
    pub(crate) kv: BlockManager,
    pub(crate) policy: Box<dyn SchedulingPolicy>,
    pub(crate) seqs: HashMap<RequestId, Sequence>,
    /// Preempted sequences at the front (oldest admitted first), then arrivals.
    pub(crate) waiting: VecDeque<RequestId>,
    /// In admission order.
    pub(crate) running: Vec<RequestId>,
    pub(crate) next_rank: u64,
    /// Number of the last plan; `pending` while it awaits `update`.
    pub(crate) step: u64,
    pub(crate) pending: bool,
    pub(crate) num_preemptions: u64,
    /// See [`SchedulerStats::prompt_tokens_computed`].
    pub(crate) prompt_tokens_computed: u64,
    /// Fair share's counters, per client with requests here.
    pub(crate) ledger: Ledger,
    /// Output lengths learned from finished requests (used when the config asks).
    pub(crate) lengths: LengthPredictor,
    /// How well the predictions ranked the outputs that followed them.
    pub(crate) length_ranking: RankAgreement,
    /// Draft tokens verified and accepted, over every sequence.
    pub(crate) draft_totals: DraftCounts,
    /// See [`SchedulerStats::acceptance_tenths`].
    pub(crate) acceptance_tenths: [u64; 11],
    /// Proposes drafts when speculative decoding is on: prompt lookup, or the draft model
    /// the engine installs ([`Self::set_drafter`]).
    pub(crate) drafter: Option<Box<dyn Drafter>>,
}

impl std::fmt::Debug for SchedulerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerCore")
            .field("policy", &self.policy.name())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SchedulerCore {
    /// An FCFS scheduler over a fresh KV pool.
    pub fn new(cfg: SchedulerConfig) -> Result<Self, SchedulerError> {
        Self::with_policy(cfg, Box::new(Fcfs))
    }

    /// A scheduler with the given policy.
    pub fn with_policy(
        cfg: SchedulerConfig,
        policy: Box<dyn SchedulingPolicy>,
    ) -> Result<Self, SchedulerError> {
        cfg.validate()?;
        let policy = match &cfg.fair_share {
            Some(fair) => Box::new(FairShare::new(policy, fair.quantum)),
            None => policy,
        };
        let lengths = LengthPredictor::new(cfg.length_prediction.unwrap_or_default());
        let cfg_speculative = cfg.speculative.clone();
        Ok(Self {
            kv: BlockManager::new(cfg.kv_config())?,
            cfg,
            policy,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_rank: 0,
            step: 0,
            pending: false,
            num_preemptions: 0,
            prompt_tokens_computed: 0,
            ledger: Ledger::default(),
            lengths,
            length_ranking: RankAgreement::default(),
            draft_totals: DraftCounts::default(),
            acceptance_tenths: [0; 11],
            drafter: match &cfg_speculative {
                Some(s) if s.draft_model.is_none() => Some(Box::new(NgramDrafter {
                    min: s.prompt_lookup_min,
                    max: s.prompt_lookup_max,
                })),
                _ => None,
            },
        })
    }

    /// Installs the draft model that proposes drafts (speculative decoding with
    /// `draft_model`; prompt lookup needs none).
    pub fn set_drafter(&mut self, drafter: Box<dyn Drafter>) {
        self.drafter = Some(drafter);
    }

    /// The settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// The block manager (read-only: prefix lookups for routing, usage).
    pub fn block_manager(&self) -> &BlockManager {
        &self.kv
    }

    /// Starts (or stops) recording the prefix cache's changes (KV events), beginning with
    /// a clear and a snapshot of what is cached; see [`BlockManager::record_events`].
    pub fn record_kv_events(&mut self, on: bool) {
        self.kv.record_events(on);
    }

    /// The prefix cache's changes since the last call (none unless recording).
    pub fn take_kv_events(&mut self) -> Vec<brisk_kv::KvEvent> {
        self.kv.take_events()
    }

    /// Checks a request and queues it. Refused when the id is taken, the prompt is empty,
    /// `max_tokens` is 0 or below `min_tokens`, the objective is not positive, prompt +
    /// `max_tokens` exceeds `max_model_len`, the sequence could not fit in the pool even
    /// alone, or the policy's admission control rejects it ([`SchedulerError::Rejected`]);
    /// in every case before any work is spent on it. Admission control judges it as of its
    /// arrival; see [`SchedulerCore::add_request_at`].
    pub fn add_request(&mut self, req: SchedRequest) -> Result<(), SchedulerError> {
        let now = req.arrival;
        self.add_request_at(req, now)
    }

    /// [`SchedulerCore::add_request`] for a request that arrived earlier than `now` (it
    /// waited in a channel while a step ran): admission control counts the time already
    /// spent against its TTFT.
    pub fn add_request_at(&mut self, req: SchedRequest, now: f64) -> Result<(), SchedulerError> {
        let id = req.id;
        if self.seqs.contains_key(&id) {
            return Err(SchedulerError::DuplicateRequest(id));
        }
        if req.prompt.is_empty() {
            return Err(SchedulerError::EmptyPrompt(id));
        }
        if req.max_tokens == 0 || req.min_tokens > req.max_tokens {
            return Err(SchedulerError::InvalidRequest {
                id,
                message: format!(
                    "max_tokens ({}) must be at least 1 and at least min_tokens ({})",
                    req.max_tokens, req.min_tokens
                ),
            });
        }
        if req.slo.is_some_and(|slo| !slo.is_valid()) {
            return Err(SchedulerError::InvalidRequest {
                id,
                message: format!("the latency objective must be positive: {:?}", req.slo),
            });
        }
        let longest = req.prompt.len() + req.max_tokens;
        if longest > self.cfg.max_model_len {
            return Err(SchedulerError::ContextTooLong {
                id,
                prompt_tokens: req.prompt.len(),
                max_tokens: req.max_tokens,
                max_model_len: self.cfg.max_model_len,
            });
        }
        // The last sampled token is never run, so it needs no slot.
        let needed_blocks = self.kv.blocks_for(longest - 1);
        if needed_blocks > self.cfg.num_blocks {
            return Err(SchedulerError::ExceedsKvCapacity {
                id,
                needed_blocks,
                num_blocks: self.cfg.num_blocks,
            });
        }
        let mut seq = self.new_sequence(req);
        self.ledger.arrive(seq.req.client.as_deref());
        let waiting = self.views(self.waiting.iter());
        let running = self.views(&self.running);
        let mut view = seq.view();
        view.share_lead = self.ledger.lead(seq.req.client.as_deref());
        match self.policy.on_arrival(&view, &waiting, &running, now) {
            Admission::Accept => {}
            Admission::Demote => seq.demoted = true,
            Admission::Reject(message) => {
                self.ledger.leave(seq.req.client.as_deref());
                return Err(SchedulerError::Rejected { id, message });
            }
        }
        self.seqs.insert(id, seq);
        self.waiting.push_back(id);
        Ok(())
    }

    /// A sequence for `req`, with its predicted output length when prediction is on.
    pub(crate) fn new_sequence(&self, req: SchedRequest) -> Sequence {
        let features = self
            .cfg
            .length_prediction
            .is_some()
            .then(|| LengthFeatures::of(&req.prompt, req.max_tokens, req.client.as_deref()));
        let predicted = features
            .as_ref()
            .and_then(|f| self.lengths.predict(f, req.max_tokens));
        let mut seq = Sequence::new(req);
        seq.length_features = features;
        seq.predicted_output = predicted;
        seq
    }

    /// Ends a request now, freeing its blocks; `None` if it is unknown or already finished.
    /// A plan that still names it is fine: `update` skips it.
    pub fn abort(&mut self, id: RequestId) -> Option<SeqEvent> {
        self.end(id, FinishReason::Abort)
    }

    /// Ends a request now for `reason` (a stop string the caller matched ends it as a
    /// `Stop`), freeing its blocks; `None` if it is unknown or already finished.
    pub fn end(&mut self, id: RequestId, reason: FinishReason) -> Option<SeqEvent> {
        self.seqs.contains_key(&id).then(|| self.finish(id, reason))
    }

    /// Removes a sequence from its queue, frees its blocks and returns its `Finished` event.
    pub(crate) fn finish(&mut self, id: RequestId, reason: FinishReason) -> SeqEvent {
        self.waiting.retain(|&w| w != id);
        self.running.retain(|&r| r != id);
        self.kv.free(id);
        if let Some(drafter) = &mut self.drafter {
            drafter.forget(id);
        }
        let seq = self.seqs.remove(&id).expect("finish of a known sequence");
        self.ledger.leave(seq.req.client.as_deref());
        // An output that ended by itself (or at its limit) is an example; an abort says
        // nothing about how long it would have run.
        if let (Some(features), false) = (&seq.length_features, reason == FinishReason::Abort) {
            let capped = seq.num_output() >= seq.req.max_tokens;
            self.lengths.learn(features, seq.num_output(), capped);
            if let Some(predicted) = seq.predicted_output {
                self.length_ranking.observe(predicted, seq.num_output());
            }
        }
        SeqEvent::Finished {
            id,
            reason,
            prompt_tokens: seq.num_prompt,
            output_tokens: seq.num_output(),
            cached_tokens: seq.cached_tokens.unwrap_or(0),
        }
    }

    /// Tells the policy that `plan` (the last one scheduled) took `seconds` from planning to
    /// its sampled tokens, so that a policy predicting step times can learn from it.
    pub fn observe_step(&mut self, plan: &crate::StepPlan, seconds: f64) {
        let shape = crate::StepShape::of_plan(plan);
        self.policy.observe_step(&shape, seconds);
    }

    /// What the scheduler knows about a request.
    pub fn seq_view(&self, id: RequestId) -> Option<SeqView> {
        self.seqs.contains_key(&id).then(|| self.view(id))
    }

    /// The view of known request `id`, with its client's fair-share lead.
    pub(crate) fn view(&self, id: RequestId) -> SeqView {
        self.view_over(id, self.ledger.floor())
    }

    /// The views of known requests `ids`, in order (the least counter found once).
    pub(crate) fn views<'a>(&self, ids: impl IntoIterator<Item = &'a RequestId>) -> Vec<SeqView> {
        let floor = self.ledger.floor();
        ids.into_iter()
            .map(|&id| self.view_over(id, floor))
            .collect()
    }

    /// [`Self::view`] given the ledger's least counter.
    fn view_over(&self, id: RequestId, floor: f64) -> SeqView {
        let s = &self.seqs[&id];
        let mut view = s.view();
        view.share_lead = self.ledger.lead_over(s.req.client.as_deref(), floor);
        view
    }

    /// Whether any request is waiting or running.
    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    /// Counters and gauges for metrics.
    pub fn stats(&self) -> SchedulerStats {
        let pc = self.kv.prefix_cache_stats();
        SchedulerStats {
            num_running: self.running.len(),
            num_waiting: self.waiting.len(),
            kv_usage_ratio: self.kv.usage_ratio(),
            prefix_cache_queries: pc.queries,
            prefix_cache_hits: pc.hits,
            num_preemptions: self.num_preemptions,
            prompt_tokens_computed: self.prompt_tokens_computed,
            cached_blocks: self.kv.num_cached_blocks(),
            num_clients: self.ledger.num_clients(),
            step_time_correction: self.policy.step_time_correction(),
            length_examples: self.lengths.examples(),
            length_ranking: self.length_ranking,
            drafts: self.draft_totals,
            acceptance_tenths: self.acceptance_tenths,
        }
    }

    /// Verifies the scheduler's invariants and the block manager's; `Err` names the first
    /// that fails. Called after every step in debug builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.kv.check_invariants().map_err(|e| e.to_string())?;
        let mut seen = HashSet::new();
        for id in self.waiting.iter().chain(&self.running) {
            if !seen.insert(*id) {
                return Err(format!("request {id} is queued twice"));
            }
            if !self.seqs.contains_key(id) {
                return Err(format!("request {id} is queued but unknown"));
            }
        }
        if seen.len() != self.seqs.len() {
            return Err("a request is in no queue".into());
        }
        if self.ledger.num_requests() != self.seqs.len() {
            return Err(format!(
                "fair share counts {} requests, the scheduler holds {}",
                self.ledger.num_requests(),
                self.seqs.len()
            ));
        }
        if self.running.len() > self.cfg.max_num_seqs {
            return Err(format!("{} running > max_num_seqs", self.running.len()));
        }
        if self.kv.num_seqs() != self.running.len() {
            return Err("block tables do not match the running sequences".into());
        }
        let bs = self.cfg.block_size;
        for id in &self.running {
            let s = &self.seqs[id];
            let slots = self.kv.block_table(*id).len() * bs;
            if slots < s.num_computed || s.num_computed >= s.tokens.len() {
                return Err(format!(
                    "request {id}: {slots} slots, {} computed of {} tokens",
                    s.num_computed,
                    s.tokens.len()
                ));
            }
        }
        for id in &self.waiting {
            let s = &self.seqs[id];
            if s.num_computed != 0 || self.kv.contains(*id) {
                return Err(format!("waiting request {id} holds KV state"));
            }
        }
        for s in self.seqs.values() {
            if s.tokens.len() > self.cfg.max_model_len || s.num_output() > s.req.max_tokens {
                return Err(format!("request {} ran past its limits", s.req.id));
            }
        }
        Ok(())
    }

    pub(crate) fn debug_check(&self) {
        if cfg!(debug_assertions) {
            if let Err(e) = self.check_invariants() {
                panic!("scheduler invariant violated: {e}");
            }
        }
    }
}
