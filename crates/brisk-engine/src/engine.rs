//! The engine loop: one thread owns the scheduler, the KV pool and the backend.
//!
//! Each iteration drains the command channel (blocking only when there is no work), asks the
//! scheduler for a plan, runs it on the backend, samples one token for every sequence whose
//! logits came back, and feeds the tokens to the scheduler, whose events are routed to each
//! request's own channel. A request whose channel is closed (the client left) is aborted on
//! the spot, which frees its blocks before the next step. Nothing here takes a lock in the
//! hot loop; statistics are published once per step.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use brisk_kv::KvEventBatch;
use brisk_sampling::{log_softmax_at, top_logprobs, Sampler};
use brisk_scheduler::{
    SchedRequest, SchedulerCore, SchedulerError, SeqEvent, StepPlan, StepRecord, StepShape,
};
use brisk_types::{Backend, LogitsWanted, TokenId};
use tokio::sync::mpsc::UnboundedSender;

use crate::handle::Command;
use crate::request::{EngineEvent, GeneratedToken, RequestId};
use crate::stats::EngineStats;

/// A request the engine is serving.
struct Active {
    events: UnboundedSender<EngineEvent>,
    sampler: Sampler,
    prompt: Vec<TokenId>,
    output: Vec<TokenId>,
    logprobs: Option<usize>,
    min_tokens: usize,
    /// Tokens that may not be sampled before `min_tokens` (EOS unless ignored, stop ids).
    banned_early: Vec<TokenId>,
    /// The token sampled in the current step, waiting for the scheduler's verdict.
    pending: Option<GeneratedToken>,
}

impl Active {
    /// Samples this request's next token from its logit row, keeping EOS and stop ids away
    /// until `min_tokens`; log-probabilities (a pass over the vocabulary) only if asked for.
    fn sample(&mut self, raw: &[f32]) -> GeneratedToken {
        let banned;
        let row = if self.output.len() < self.min_tokens && !self.banned_early.is_empty() {
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
}

pub(crate) struct Engine<B: Backend> {
    pub(crate) backend: B,
    pub(crate) kv: B::KvPool,
    pub(crate) scheduler: SchedulerCore,
    pub(crate) commands: Receiver<Command>,
    pub(crate) stats: Arc<Mutex<EngineStats>>,
    pub(crate) seed: u64,
    pub(crate) eos: Vec<TokenId>,
    pub(crate) started: Instant,
    step_records: Option<std::sync::mpsc::Sender<StepRecord>>,
    kv_events: Option<tokio::sync::mpsc::Sender<KvEventBatch>>,
    requests: HashMap<RequestId, Active>,
    steps: u64,
}

/// Where the engine reports what it did, besides each request's own stream.
pub(crate) struct Reports {
    /// Every step's shape and time.
    pub(crate) step_records: Option<std::sync::mpsc::Sender<StepRecord>>,
    /// The prefix cache's changes.
    pub(crate) kv_events: Option<tokio::sync::mpsc::Sender<KvEventBatch>>,
}

impl<B: Backend> Engine<B> {
    pub(crate) fn new(
        backend: B,
        kv: B::KvPool,
        scheduler: SchedulerCore,
        commands: Receiver<Command>,
        stats: Arc<Mutex<EngineStats>>,
        seed: u64,
        reports: Reports,
    ) -> Self {
        let eos = backend.stop_tokens().to_vec();
        Self {
            backend,
            kv,
            scheduler,
            commands,
            stats,
            seed,
            eos,
            started: Instant::now(),
            step_records: reports.step_records,
            kv_events: reports.kv_events,
            requests: HashMap::new(),
            steps: 0,
        }
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Runs until every handle is dropped and the work is done.
    pub(crate) fn run(mut self) {
        self.publish_stats();
        self.publish_kv_events();
        loop {
            if !self.scheduler.has_unfinished() {
                match self.commands.recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => break, // every handle is gone and nothing is left to do
                }
            }
            // Disconnection is noticed by the blocking `recv` above once the work is done.
            while let Ok(command) = self.commands.try_recv() {
                self.handle(command);
            }
            if self.scheduler.has_unfinished() {
                self.step();
            }
            self.publish_stats();
        }
        let mut stats = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stats.alive = false;
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Add {
                id,
                request,
                events,
            } => {
                let now = self.now();
                let arrival = request.received.map_or(now, |t| {
                    t.saturating_duration_since(self.started)
                        .as_secs_f64()
                        .min(now)
                });
                let sched = SchedRequest {
                    id,
                    prompt: request.prompt.clone(),
                    max_tokens: request.max_tokens,
                    min_tokens: request.min_tokens,
                    stop_token_ids: request.stop_token_ids.clone(),
                    ignore_eos: request.ignore_eos,
                    arrival,
                    slo: request.slo,
                    priority: request.priority,
                };
                if let Err(e) = self.scheduler.add_request_at(sched, now) {
                    let event = match e {
                        SchedulerError::Rejected { message, .. } => EngineEvent::Rejected(message),
                        e => EngineEvent::Error(e.to_string()),
                    };
                    let _ = events.send(event);
                    return;
                }
                let mut banned_early = request.stop_token_ids.clone();
                if !request.ignore_eos {
                    banned_early.extend(&self.eos);
                }
                let fallback_seed = self.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                self.requests.insert(
                    id,
                    Active {
                        events,
                        sampler: Sampler::new(request.sampling, fallback_seed),
                        prompt: request.prompt,
                        output: Vec::new(),
                        logprobs: request.logprobs,
                        min_tokens: request.min_tokens,
                        banned_early,
                        pending: None,
                    },
                );
            }
            Command::Abort(id) => {
                if let Some(event) = self.scheduler.abort(id) {
                    self.dispatch(event);
                }
            }
        }
    }

    fn step(&mut self) {
        let began = Instant::now();
        let now = self.now();
        let plan = self.scheduler.schedule(now);
        if plan.is_empty() {
            // Work remains but nothing can run (the scheduler's progress rule says this does
            // not happen); yield instead of spinning.
            std::thread::sleep(std::time::Duration::from_millis(1));
            return;
        }
        self.steps += 1;
        let executing = Instant::now();
        let output = match self.backend.execute(&plan.as_batch(), &mut self.kv) {
            Ok(output) => output,
            Err(e) => {
                tracing::error!("step {} failed: {e}", plan.step);
                self.fail_plan(&plan, &e.to_string());
                return;
            }
        };
        let execute_s = executing.elapsed().as_secs_f64();
        let mut sampled = Vec::with_capacity(plan.seqs.len());
        for (i, seq) in plan.seqs.iter().enumerate() {
            if seq.logits == LogitsWanted::None {
                sampled.push(None);
                continue;
            }
            let Some(active) = self.requests.get_mut(&seq.id) else {
                sampled.push(None);
                continue;
            };
            let generated = active.sample(output.last_row(i));
            let token = generated.token;
            active.pending = Some(generated);
            sampled.push(Some(token));
        }
        // The tokens exist from the end of the step (first-token times feed TPOT deadlines).
        let done = self.now();
        match self.scheduler.update(&plan, &sampled, done) {
            Ok(events) => {
                for event in events {
                    self.dispatch(event);
                }
            }
            Err(e) => {
                tracing::error!("scheduler rejected step {}: {e}", plan.step);
                self.fail_plan(&plan, &e.to_string());
            }
        }
        self.record_step(&plan, now, began, execute_s);
        self.publish_kv_events();
    }

    /// Sends the prefix cache's changes since the last call, if any, to the publisher.
    fn publish_kv_events(&mut self) {
        let Some(sink) = &self.kv_events else {
            return;
        };
        let events = self.scheduler.take_kv_events();
        if events.is_empty() {
            return;
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if sink.blocking_send(KvEventBatch { ts, events }).is_err() {
            tracing::error!("the KV event publisher is gone; no more KV events");
            self.kv_events = None;
            self.scheduler.record_kv_events(false);
        }
    }

    /// Sends the step's shape and timing to the recorder, if there is one.
    fn record_step(&mut self, plan: &StepPlan, at_s: f64, began: Instant, execute_s: f64) {
        let Some(records) = &self.step_records else {
            return;
        };
        let record = StepRecord {
            step: plan.step,
            at_s,
            shape: StepShape::of_plan(plan),
            execute_s,
            seconds: began.elapsed().as_secs_f64(),
        };
        if records.send(record).is_err() {
            self.step_records = None; // the recorder is gone; serving goes on
        }
    }

    /// Ends every request of a plan that could not be completed, freeing its blocks.
    fn fail_plan(&mut self, plan: &StepPlan, message: &str) {
        for seq in &plan.seqs {
            self.scheduler.abort(seq.id);
            if let Some(active) = self.requests.remove(&seq.id) {
                let _ = active.events.send(EngineEvent::Error(message.to_string()));
            }
        }
    }

    fn dispatch(&mut self, event: SeqEvent) {
        match event {
            SeqEvent::Token { id, token, .. } => {
                let Some(active) = self.requests.get_mut(&id) else {
                    return;
                };
                active.output.push(token);
                let generated = active.pending.take().unwrap_or(GeneratedToken {
                    token,
                    logprob: f32::NAN,
                    top_logprobs: Vec::new(),
                });
                if active.events.send(EngineEvent::Token(generated)).is_err() {
                    // The client is gone: free its blocks now, tell no one.
                    self.requests.remove(&id);
                    self.scheduler.abort(id);
                }
            }
            SeqEvent::Finished {
                id,
                reason,
                prompt_tokens,
                output_tokens,
                cached_tokens,
            } => {
                if let Some(active) = self.requests.remove(&id) {
                    let _ = active.events.send(EngineEvent::Finished {
                        reason,
                        prompt_tokens,
                        output_tokens,
                        cached_tokens,
                    });
                }
            }
        }
    }

    fn publish_stats(&self) {
        let s = self.scheduler.stats();
        let mut stats = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stats = EngineStats {
            num_running: s.num_running,
            num_waiting: s.num_waiting,
            kv_cache_usage: s.kv_usage_ratio,
            prefix_cache_queries: s.prefix_cache_queries,
            prefix_cache_hits: s.prefix_cache_hits,
            preemptions: s.num_preemptions,
            cached_blocks: s.cached_blocks,
            steps: self.steps,
            alive: true,
        };
    }
}
