//! The engine core: one synchronous state machine that the engine thread and `brisk sim`
//! both drive.
//!
//! It owns the scheduler core (and through it the block manager), the backend and its KV
//! pool, and each request's own state — its sampler and RNG, its output so far, the tokens
//! it may not end on yet. It reads no clock: the caller passes `now` and a [`Clock`] that
//! says when a step's tokens exist (the wall clock in the server; the latency model's
//! virtual clock in the simulator, whose backend advances it by each step's predicted time).
//! Everything a request's client sees comes out of [`EngineCore::step`] and
//! [`EngineCore::abort`] as [`Output`]s, so the server and the simulator observe the same
//! sequence of events for the same inputs.

use std::collections::HashMap;

use brisk_kv::KvEvent;
use brisk_sampling::Sampler;
use brisk_scheduler::{
    Priority, SchedRequest, SchedulerCore, SchedulerError, SchedulerStats, SeqEvent, StepPlan,
};
use brisk_types::{Backend, BackendError, LogitsWanted, TokenId};

use crate::export::{BlockExport, MoveError, RequestExport};
use crate::request::{EngineRequest, FinishReason, GeneratedToken, RequestId};
use crate::request_state::RequestState;

/// When a step's tokens exist, in the same seconds as the `now` given to the core.
pub trait Clock {
    /// Seconds since the clock's origin.
    fn now(&self) -> f64;
}

/// What a request's client learns.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A new token of request `id`.
    Token {
        /// The request.
        id: RequestId,
        /// The token and its log-probabilities.
        token: GeneratedToken,
    },
    /// Request `id` is over; its blocks are free.
    Finished {
        /// The request.
        id: RequestId,
        /// Why.
        reason: FinishReason,
        /// Prompt length.
        prompt_tokens: usize,
        /// Tokens generated.
        output_tokens: usize,
        /// Prompt tokens served from the prefix cache.
        cached_tokens: usize,
    },
    /// Request `id` failed inside the engine (its blocks are free).
    Failed {
        /// The request.
        id: RequestId,
        /// What went wrong.
        message: String,
    },
}

/// Why a request was not taken.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AddError {
    /// Admission control: it cannot meet its objective (HTTP 429).
    #[error("{0}")]
    Rejected(String),
    /// The scheduler refused it (duplicate id, empty prompt, limits; HTTP 400).
    #[error("{0}")]
    Invalid(String),
}

/// What one step did, for the caller's records.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// The plan that ran.
    pub plan: StepPlan,
    /// Seconds the backend took (by the clock).
    pub execute_s: f64,
    /// What the clients learn, in order.
    pub outputs: Vec<Output>,
}

/// The engine core; see the module docs.
pub struct EngineCore<B: Backend> {
    backend: B,
    kv: B::KvPool,
    scheduler: SchedulerCore,
    seed: u64,
    eos: Vec<TokenId>,
    requests: HashMap<RequestId, RequestState>,
    steps: u64,
}

impl<B: Backend> EngineCore<B> {
    /// A core over `backend` with its KV pool, the scheduler and the fallback `seed` (for
    /// requests that bring none).
    pub fn new(backend: B, kv: B::KvPool, scheduler: SchedulerCore, seed: u64) -> Self {
        let eos = backend.stop_tokens().to_vec();
        Self {
            backend,
            kv,
            scheduler,
            seed,
            eos,
            requests: HashMap::new(),
            steps: 0,
        }
    }

    /// Takes request `id` (arrived at `arrival`, taken at `now`), or says why not.
    pub fn add(
        &mut self,
        id: RequestId,
        request: EngineRequest,
        arrival: f64,
        now: f64,
    ) -> Result<(), AddError> {
        let EngineRequest {
            mut spec,
            sampling,
            logprobs,
            constraint,
            received: _,
        } = request;
        let fallback_seed = self.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let sampler = Sampler::new(sampling, fallback_seed);
        // Constrained output samples one token per step (its grammar moves with each).
        spec.speculative &= constraint.is_none();
        let mut state = RequestState::new(&spec, sampler, logprobs, &self.eos);
        let sched = SchedRequest { id, arrival, spec };
        self.scheduler
            .add_request_at(sched, now)
            .map_err(|e| match e {
                SchedulerError::Rejected { message, .. } => AddError::Rejected(message),
                e => AddError::Invalid(e.to_string()),
            })?;
        state.constraint = constraint.as_ref().map(|c| c.start());
        self.requests.insert(id, state);
        Ok(())
    }

    /// Ends request `id` now, freeing its blocks: its [`Output::Finished`] (reason `abort`),
    /// or `None` for a request the core does not hold.
    pub fn abort(&mut self, id: RequestId) -> Option<Output> {
        self.end(id, FinishReason::Abort)
    }

    /// Ends request `id` as a stop (its client matched a stop string), freeing its blocks:
    /// its [`Output::Finished`] with reason `stop`, or `None` for a request the core does
    /// not hold.
    pub fn stop(&mut self, id: RequestId) -> Option<Output> {
        self.end(id, FinishReason::Stop)
    }

    /// Ends request `id` now for `reason`, freeing its blocks: its `Finished` output.
    fn end(&mut self, id: RequestId, reason: FinishReason) -> Option<Output> {
        let event = self.scheduler.end(id, reason)?;
        self.outputs_of(event)
    }

    /// Everything request `id` needs to continue in another engine of the same model, as of
    /// `now`, between steps. It is paused here from then on (no step runs it, it keeps its
    /// blocks) until [`Self::release`] (moved) or [`Self::resume`] (the move failed).
    /// Refused unless it is decoding.
    pub fn export(&mut self, id: RequestId, now: f64) -> Result<RequestExport, MoveError> {
        self.export_from(id, now, 0)
    }

    /// [`Self::export`] without the K/V of the first `first_block` blocks, which were sent
    /// ahead ([`Self::export_blocks`]).
    pub fn export_from(
        &mut self,
        id: RequestId,
        now: f64,
        first_block: usize,
    ) -> Result<RequestExport, MoveError> {
        let Some(state) = self.requests.get(&id) else {
            return Err(SchedulerError::InvalidRequest {
                id,
                message: "cannot move: unknown request".into(),
            }
            .into());
        };
        if state.constraint.is_some() {
            return Err(MoveError::Constrained);
        }
        let (sampler, logprobs) = (state.sampler.clone(), state.logprobs);
        let seq = self.scheduler.export_from(id, now, first_block)?;
        let kv = match self.backend.export_blocks(&self.kv, &seq.blocks) {
            Ok(kv) => kv,
            Err(e) => {
                self.scheduler.resume(id);
                return Err(e.into());
            }
        };
        Ok(RequestExport {
            seq,
            sampler,
            logprobs,
            kv,
        })
    }

    /// Lets a request paused by [`Self::export`] run on here: its move did not happen.
    pub fn resume(&mut self, id: RequestId) -> bool {
        self.scheduler.resume(id)
    }

    /// Takes in a request another engine exported, as `id`: from its next step on it runs
    /// here exactly as it would have there. Refused, with nothing changed here, when the
    /// scheduler has no room or the K/V do not fit this pool.
    pub fn import(
        &mut self,
        id: RequestId,
        export: RequestExport,
        now: f64,
    ) -> Result<(), MoveError> {
        let request = export.seq.request.clone();
        let output = export.seq.output.clone();
        let blocks = self.scheduler.import(id, export.seq, now)?;
        if let Err(e) = self
            .backend
            .import_blocks(&mut self.kv, &blocks, &export.kv)
        {
            self.scheduler.release(id);
            return Err(e.into());
        }
        self.scheduler.commit_imported(id)?;
        let state = RequestState::new(&request.spec, export.sampler, export.logprobs, &self.eos);
        self.requests.insert(id, RequestState { output, ..state });
        Ok(())
    }

    /// At most `max_blocks` full blocks of running request `id` from block `first_block` on,
    /// to send ahead of its move while it keeps running here (Llumnix's pre-copy; a bounded
    /// copy keeps the steps between them short); `None` when it has no full block past
    /// `first_block` yet.
    pub fn export_blocks(
        &mut self,
        id: RequestId,
        first_block: usize,
        max_blocks: usize,
    ) -> Result<Option<BlockExport>, MoveError> {
        let (mut tokens, mut blocks) = self.scheduler.full_blocks(id)?;
        if blocks.len() <= first_block {
            return Ok(None);
        }
        blocks.truncate(first_block.saturating_add(max_blocks.max(1)));
        tokens.truncate(blocks.len() * self.scheduler.config().block_size);
        let kv = self
            .backend
            .export_blocks(&self.kv, &blocks[first_block..])?;
        Ok(Some(BlockExport {
            tokens,
            first_block,
            kv,
        }))
    }

    /// Takes in blocks sent ahead of a move into the prefix cache; returns how many full
    /// blocks of `blocks.tokens` this engine now holds there. Refused with nothing kept
    /// when the blocks sent before are no longer cached, the pool is full or the K/V are of
    /// another kind.
    pub fn import_blocks(&mut self, blocks: &BlockExport) -> Result<usize, MoveError> {
        let held = blocks.tokens.len() / self.scheduler.config().block_size;
        let fresh = self
            .scheduler
            .stage_blocks(&blocks.tokens, blocks.first_block)?;
        if let Err(e) = self.backend.import_blocks(&mut self.kv, &fresh, &blocks.kv) {
            self.scheduler.abandon_staged();
            return Err(e.into());
        }
        self.scheduler.commit_staged(&blocks.tokens)?;
        Ok(held)
    }

    /// Forgets request `id`, which now runs elsewhere: its blocks are freed and its client
    /// learns nothing from here (the destination continues its stream). Whether it was here.
    pub fn release(&mut self, id: RequestId) -> bool {
        self.requests.remove(&id);
        self.scheduler.release(id)
    }

    /// Request `id`'s priority class, if it is here.
    pub fn priority(&self, id: RequestId) -> Option<Priority> {
        self.scheduler.seq_view(id).map(|v| v.priority)
    }

    /// Whether any request is waiting or running.
    pub fn has_unfinished(&self) -> bool {
        self.scheduler.has_unfinished()
    }

    /// Runs one step planned at `now`: executes it, samples every sequence that wanted
    /// logits and hands the tokens to the scheduler as of `clock`'s time after the step.
    /// `None` when there was nothing to run. A backend failure ends the plan's requests
    /// with [`Output::Failed`] (their blocks freed); serving goes on.
    pub fn step(&mut self, now: f64, clock: &dyn Clock) -> Option<StepReport> {
        let plan = self.scheduler.schedule(now);
        if plan.is_empty() {
            return None;
        }
        self.steps += 1;
        let executing = clock.now();
        let result = self.execute_preparing_masks(&plan);
        let execute_s = clock.now() - executing;
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                tracing::error!("step {} failed: {e}", plan.step);
                let outputs = self.fail_plan(&plan, &e.to_string());
                return Some(StepReport {
                    plan,
                    execute_s,
                    outputs,
                });
            }
        };
        let mut sampled = Vec::with_capacity(plan.seqs.len());
        for (i, seq) in plan.seqs.iter().enumerate() {
            let mut state = match seq.logits {
                LogitsWanted::None => None,
                _ => self.requests.get_mut(&seq.id),
            };
            // What a skipped step left behind is not this step's.
            if let Some(state) = state.as_deref_mut() {
                state.pending.clear();
            }
            sampled.push(match state {
                None => Vec::new(),
                Some(state) if seq.num_drafts > 0 => {
                    state.sample_verifying(&output, i, seq.drafts())
                }
                Some(state) => {
                    let generated = state.sample(output.last_row(i));
                    let token = generated.token;
                    state.pending.push_back(generated);
                    vec![token]
                }
            });
        }
        // The tokens exist from the end of the step (first-token times feed TPOT deadlines).
        let done = clock.now();
        let outputs = match self.scheduler.update_verified(&plan, &sampled, done) {
            Ok(events) => {
                self.scheduler.observe_step(&plan, done - now);
                let outputs = events
                    .into_iter()
                    .filter_map(|e| self.outputs_of(e))
                    .collect();
                self.advance_constraints(outputs)
            }
            Err(e) => {
                tracing::error!("scheduler rejected step {}: {e}", plan.step);
                self.fail_plan(&plan, &e.to_string())
            }
        };
        Some(StepReport {
            plan,
            execute_s,
            outputs,
        })
    }

    /// Runs the plan's forward pass; meanwhile, on a second thread, the constrained
    /// sequences that will sample work out what their grammars allow.
    fn execute_preparing_masks(
        &mut self,
        plan: &StepPlan,
    ) -> Result<brisk_types::StepOutput, BackendError> {
        let sampling: Vec<RequestId> = plan
            .seqs
            .iter()
            .filter(|seq| !matches!(seq.logits, LogitsWanted::None))
            .map(|seq| seq.id)
            .collect();
        let constrained: Vec<&mut RequestState> = self
            .requests
            .iter_mut()
            .filter(|(id, state)| state.constraint.is_some() && sampling.contains(id))
            .map(|(_, state)| state)
            .collect();
        let batch = plan.as_batch();
        if constrained.is_empty() {
            return self.backend.execute(&batch, &mut self.kv);
        }
        let (backend, kv) = (&mut self.backend, &mut self.kv);
        std::thread::scope(|scope| {
            let preparing = scope.spawn(move || {
                for state in constrained {
                    state.prepare_constraint();
                }
            });
            let result = backend.execute(&batch, kv);
            if let Err(panic) = preparing.join() {
                std::panic::resume_unwind(panic);
            }
            result
        })
    }

    /// Advances each constrained request past the token it kept: a request whose grammar
    /// is complete ends as a stop; one whose constraint failed ends as failed (the token
    /// it drew unconstrained is not sent).
    fn advance_constraints(&mut self, outputs: Vec<Output>) -> Vec<Output> {
        let mut kept = Vec::with_capacity(outputs.len());
        let mut ended = Vec::new();
        for output in outputs {
            let Output::Token { id, token } = &output else {
                kept.push(output);
                continue;
            };
            let Some(state) = self.requests.get_mut(id) else {
                kept.push(output);
                continue;
            };
            if let Some(message) = state.constraint_error.take() {
                ended.push((*id, Err(message)));
                continue;
            }
            match state.commit(token.token, &self.eos) {
                Ok(false) => {}
                Ok(true) => ended.push((*id, Ok(()))),
                Err(message) => ended.push((*id, Err(message))),
            }
            kept.push(output);
        }
        for (id, verdict) in ended {
            match verdict {
                Ok(()) => kept.extend(self.end(id, FinishReason::Stop)),
                Err(message) => kept.extend(self.fail_constrained(id, &message)),
            }
        }
        kept
    }

    /// Ends request `id` as failed, freeing its blocks.
    fn fail_constrained(&mut self, id: RequestId, message: &str) -> Option<Output> {
        self.scheduler.abort(id);
        self.requests.remove(&id).map(|_| Output::Failed {
            id,
            message: format!("structured output: {message}"),
        })
    }

    /// Ends every request of a plan that could not be completed, freeing its blocks.
    fn fail_plan(&mut self, plan: &StepPlan, message: &str) -> Vec<Output> {
        let mut outputs = Vec::new();
        for seq in &plan.seqs {
            self.scheduler.abort(seq.id);
            if self.requests.remove(&seq.id).is_some() {
                outputs.push(Output::Failed {
                    id: seq.id,
                    message: message.to_string(),
                });
            }
        }
        outputs
    }

    /// What the scheduler's `event` means to the request's client.
    fn outputs_of(&mut self, event: SeqEvent) -> Option<Output> {
        match event {
            SeqEvent::Token { id, token, .. } => {
                let state = self.requests.get_mut(&id)?;
                state.output.push(token);
                let generated = state.pending.pop_front().unwrap_or(GeneratedToken {
                    token,
                    logprob: f32::NAN,
                    top_logprobs: Vec::new(),
                });
                Some(Output::Token {
                    id,
                    token: generated,
                })
            }
            SeqEvent::Finished {
                id,
                reason,
                prompt_tokens,
                output_tokens,
                cached_tokens,
            } => {
                self.requests.remove(&id)?;
                Some(Output::Finished {
                    id,
                    reason,
                    prompt_tokens,
                    output_tokens,
                    cached_tokens,
                })
            }
        }
    }

    /// The scheduler's counters and gauges.
    pub fn stats(&self) -> SchedulerStats {
        self.scheduler.stats()
    }

    /// Steps run so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Starts (or stops) recording the prefix cache's changes; see
    /// [`SchedulerCore::record_kv_events`].
    pub fn record_kv_events(&mut self, on: bool) {
        self.scheduler.record_kv_events(on);
    }

    /// The prefix cache's changes since the last call.
    pub fn take_kv_events(&mut self) -> Vec<KvEvent> {
        self.scheduler.take_kv_events()
    }
}

#[cfg(test)]
mod tests {

    use brisk_sampling::TokenConstraint;
    use brisk_scheduler::{RequestSpec, SchedulerConfig};
    use brisk_testkit::CountingBackend;

    use super::*;

    /// A clock that does not move: the core's behaviour depends only on the steps it runs.
    struct Frozen;

    impl Clock for Frozen {
        fn now(&self) -> f64 {
            0.0
        }
    }

    fn core() -> EngineCore<CountingBackend> {
        let backend = CountingBackend::new(64, 4096);
        let kv = backend.allocate_kv(64, 4).unwrap();
        let cfg = SchedulerConfig {
            max_num_seqs: 4,
            max_num_batched_tokens: 64,
            max_model_len: 4096,
            block_size: 4,
            num_blocks: 64,
            ..SchedulerConfig::default()
        };
        EngineCore::new(backend, kv, SchedulerCore::new(cfg).unwrap(), 0)
    }

    fn request(prompt: Vec<TokenId>, max_tokens: usize) -> EngineRequest {
        let mut spec = RequestSpec::new(prompt, max_tokens);
        spec.ignore_eos = true;
        EngineRequest::greedy(spec)
    }

    #[test]
    fn a_stop_ends_a_request_as_a_stop_an_abort_as_an_abort() {
        let mut core = core();
        core.add(1, request(vec![5, 6, 7], 100), 0.0, 0.0).unwrap();
        core.add(2, request(vec![9], 100), 0.0, 0.0).unwrap();
        let report = core.step(0.0, &Frozen).expect("a step");
        assert!(report
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Token { id: 1, token } if token.token == 8)));
        let finished = |o: Option<Output>| match o {
            Some(Output::Finished {
                reason,
                output_tokens,
                ..
            }) => (reason, output_tokens),
            other => panic!("{other:?}"),
        };
        assert_eq!(finished(core.stop(1)), (FinishReason::Stop, 1));
        assert_eq!(finished(core.abort(2)), (FinishReason::Abort, 1));
        assert!(
            core.stop(1).is_none() && core.abort(2).is_none(),
            "already over"
        );
        assert!(!core.has_unfinished());
        assert_eq!(core.stats().kv_usage_ratio, 0.0, "every block is free");
    }

    #[test]
    fn a_request_the_scheduler_refuses_is_invalid_and_costs_nothing() {
        let mut core = core();
        let e = core.add(1, request(Vec::new(), 4), 0.0, 0.0).unwrap_err();
        assert!(
            matches!(e, AddError::Invalid(ref m) if m.contains("empty")),
            "{e:?}"
        );
        assert!(!core.has_unfinished());
        assert!(core.step(0.0, &Frozen).is_none());
    }

    /// A constraint that allows exactly one sequence of tokens (or fails to prepare).
    #[derive(Debug)]
    struct Exactly {
        tokens: Vec<TokenId>,
        next: usize,
        broken: bool,
    }

    impl TokenConstraint for Exactly {
        fn prepare(&mut self) -> Result<(), String> {
            if self.broken {
                Err("the grammar broke".into())
            } else {
                Ok(())
            }
        }
        fn mask(&self, logits: &mut [f32]) {
            for (t, l) in logits.iter_mut().enumerate() {
                if self.tokens.get(self.next) != Some(&(t as TokenId)) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        fn commit(&mut self, token: TokenId) -> Result<(), String> {
            if self.tokens.get(self.next) != Some(&token) {
                return Err(format!("token {token} is not allowed"));
            }
            self.next += 1;
            Ok(())
        }
        fn is_finished(&self) -> bool {
            self.next == self.tokens.len()
        }
    }

    #[derive(Debug)]
    struct ExactlySource(Vec<TokenId>, bool);

    impl brisk_sampling::ConstraintSource for ExactlySource {
        fn start(&self) -> Box<dyn TokenConstraint> {
            Box::new(Exactly {
                tokens: self.0.clone(),
                next: 0,
                broken: self.1,
            })
        }
    }

    fn constrained(tokens: Vec<TokenId>, broken: bool) -> EngineRequest {
        EngineRequest {
            constraint: Some(std::sync::Arc::new(ExactlySource(tokens, broken))),
            ..request(vec![5, 6, 7], 100)
        }
    }

    /// Runs the core until nothing is left, collecting request 1's outputs.
    fn run_to_end(core: &mut EngineCore<CountingBackend>) -> Vec<Output> {
        let mut outputs = Vec::new();
        while let Some(report) = core.step(0.0, &Frozen) {
            outputs.extend(report.outputs);
        }
        outputs
    }

    #[test]
    fn a_constrained_request_samples_what_its_grammar_allows_and_stops_when_complete() {
        let mut core = core();
        core.add(1, constrained(vec![30, 2, 41], false), 0.0, 0.0)
            .unwrap();
        core.add(2, request(vec![9], 3), 0.0, 0.0).unwrap();
        let outputs = run_to_end(&mut core);
        let tokens = |want: RequestId| -> Vec<TokenId> {
            outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Token { id, token } if *id == want => Some(token.token),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(tokens(1), [30, 2, 41], "the model alone would say 8, 9, 10");
        assert_eq!(tokens(2), [10, 11, 12], "its neighbour is unconstrained");
        assert!(outputs.iter().any(|o| matches!(
            o,
            Output::Finished {
                id: 1,
                reason: FinishReason::Stop,
                output_tokens: 3,
                ..
            }
        )));
        assert_eq!(core.stats().kv_usage_ratio, 0.0, "every block is free");
    }

    #[test]
    fn a_constraint_that_fails_fails_its_request_alone_and_frees_its_blocks() {
        let mut core = core();
        core.add(1, constrained(vec![30], true), 0.0, 0.0).unwrap();
        core.add(2, request(vec![9], 2), 0.0, 0.0).unwrap();
        let outputs = run_to_end(&mut core);
        assert!(
            !outputs
                .iter()
                .any(|o| matches!(o, Output::Token { id: 1, .. })),
            "no unconstrained token escapes: {outputs:?}"
        );
        assert!(outputs
            .iter()
            .any(|o| matches!(o, Output::Failed { id: 1, message } if message.contains("broke"))));
        assert!(outputs.iter().any(|o| matches!(
            o,
            Output::Finished {
                id: 2,
                output_tokens: 2,
                ..
            }
        )));
        assert!(!core.has_unfinished());
        assert_eq!(core.stats().kv_usage_ratio, 0.0, "every block is free");
        let mut core = self::core();
        core.add(1, constrained(vec![30, 31], false), 0.0, 0.0)
            .unwrap();
        core.step(0.0, &Frozen);
        assert!(matches!(core.export(1, 0.0), Err(MoveError::Constrained)));
    }
}
