//! The engine thread: drives the [`EngineCore`] on the wall clock.
//!
//! Each iteration drains the command channel (blocking only when there is no work), runs
//! one step of the core, and routes what the core says to each request's own channel. A
//! request whose channel is closed (the client left) is aborted on the spot, which frees its
//! blocks before the next step. Nothing here takes a lock in the hot loop; statistics are
//! published once per step, KV events after every step that has some.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use brisk_kv::KvEventBatch;
use brisk_scheduler::{StepPlan, StepRecord, StepShape};
use brisk_types::Backend;
use tokio::sync::mpsc::UnboundedSender;

use crate::core::{AddError, Clock, EngineCore, Output};
use crate::handle::Command;
use crate::request::{EngineEvent, EngineFailure, RequestId};
use crate::stats::EngineStats;

/// Seconds since the engine started.
struct WallClock(Instant);

impl Clock for WallClock {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Where the engine reports what it did, besides each request's own stream.
pub(crate) struct Reports {
    /// Every step's shape and time.
    pub(crate) step_records: Option<std::sync::mpsc::Sender<StepRecord>>,
    /// The prefix cache's changes.
    pub(crate) kv_events: Option<tokio::sync::mpsc::Sender<KvEventBatch>>,
}

pub(crate) struct Engine<B: Backend> {
    core: EngineCore<B>,
    commands: Receiver<Command>,
    stats: Arc<Mutex<EngineStats>>,
    clock: WallClock,
    reports: Reports,
    /// Each request's event channel.
    streams: HashMap<RequestId, UnboundedSender<EngineEvent>>,
}

impl<B: Backend> Engine<B> {
    pub(crate) fn new(
        core: EngineCore<B>,
        commands: Receiver<Command>,
        stats: Arc<Mutex<EngineStats>>,
        reports: Reports,
    ) -> Self {
        Self {
            core,
            commands,
            stats,
            clock: WallClock(Instant::now()),
            reports,
            streams: HashMap::new(),
        }
    }

    /// Runs until every handle is dropped and the work is done.
    pub(crate) fn run(mut self) {
        self.publish_stats();
        self.publish_kv_events();
        loop {
            if !self.core.has_unfinished() {
                match self.commands.recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => break, // every handle is gone and nothing is left to do
                }
            }
            // Disconnection is noticed by the blocking `recv` above once the work is done.
            while let Ok(command) = self.commands.try_recv() {
                self.handle(command);
            }
            if self.core.has_unfinished() {
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
                let now = self.clock.now();
                let arrival = request.received.map_or(now, |t| {
                    t.saturating_duration_since(self.clock.0)
                        .as_secs_f64()
                        .min(now)
                });
                match self.core.add(id, *request, arrival, now) {
                    Ok(()) => {
                        self.streams.insert(id, events);
                    }
                    Err(AddError::Rejected(message)) => {
                        let _ = events.send(EngineEvent::Rejected(message));
                    }
                    Err(AddError::Invalid(message)) => {
                        let _ = events.send(EngineEvent::Failed(EngineFailure::Invalid(message)));
                    }
                }
            }
            Command::Abort(id) => {
                if let Some(output) = self.core.abort(id) {
                    self.dispatch(output);
                }
            }
            Command::Stop(id) => {
                if let Some(output) = self.core.stop(id) {
                    self.dispatch(output);
                }
            }
            Command::Export {
                id,
                first_block,
                reply,
            } => {
                let now = self.clock.now();
                let _ = reply.send(self.core.export_from(id, now, first_block));
            }
            Command::ExportBlocks {
                id,
                first_block,
                max_blocks,
                reply,
            } => {
                let _ = reply.send(self.core.export_blocks(id, first_block, max_blocks));
            }
            Command::ImportBlocks { blocks, reply } => {
                let _ = reply.send(self.core.import_blocks(&blocks));
                self.publish_kv_events();
            }
            Command::Import {
                id,
                export,
                events,
                reply,
            } => {
                let now = self.clock.now();
                let result = self.core.import(id, *export, now);
                if result.is_ok() {
                    self.streams.insert(id, events);
                }
                let _ = reply.send(result);
            }
            Command::Resume(id) => {
                self.core.resume(id);
            }
            Command::Handoff { id, reply } => {
                let stream = self.streams.remove(&id);
                self.core.release(id);
                let _ = reply.send(stream);
            }
            Command::Requests { class, reply } => {
                let ids = self.streams.keys().copied();
                let ids = ids
                    .filter(|&id| class.is_none_or(|c| self.core.priority(id) == Some(c)))
                    .collect();
                let _ = reply.send(ids);
            }
            Command::Release(id) => {
                // Dropping the sender ends the request's stream without an event.
                self.streams.remove(&id);
                self.core.release(id);
            }
        }
    }

    fn step(&mut self) {
        let began = Instant::now();
        let now = self.clock.now();
        let Some(report) = self.core.step(now, &self.clock) else {
            // Work remains but nothing can run (the scheduler's progress rule says this does
            // not happen); yield instead of spinning.
            std::thread::sleep(std::time::Duration::from_millis(1));
            return;
        };
        for output in report.outputs {
            self.dispatch(output);
        }
        self.record_step(&report.plan, now, began, report.execute_s);
        self.publish_kv_events();
    }

    /// Sends the step's shape and timing to the recorder, if there is one.
    fn record_step(&mut self, plan: &StepPlan, at_s: f64, began: Instant, execute_s: f64) {
        let Some(records) = &self.reports.step_records else {
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
            self.reports.step_records = None; // the recorder is gone; serving goes on
        }
    }

    /// Sends the prefix cache's changes since the last call, if any, to the publisher.
    fn publish_kv_events(&mut self) {
        let Some(sink) = &self.reports.kv_events else {
            return;
        };
        let events = self.core.take_kv_events();
        if events.is_empty() {
            return;
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if sink.blocking_send(KvEventBatch { ts, events }).is_err() {
            tracing::error!("the KV event publisher is gone; no more KV events");
            self.reports.kv_events = None;
            self.core.record_kv_events(false);
        }
    }

    /// Passes `output` to its request's channel.
    fn dispatch(&mut self, output: Output) {
        match output {
            Output::Token { id, token } => {
                let Some(stream) = self.streams.get(&id) else {
                    return;
                };
                if stream.send(EngineEvent::Token(token)).is_err() {
                    // The client is gone: free its blocks now, tell no one.
                    self.streams.remove(&id);
                    self.core.abort(id);
                }
            }
            Output::Finished {
                id,
                reason,
                prompt_tokens,
                output_tokens,
                cached_tokens,
            } => {
                if let Some(stream) = self.streams.remove(&id) {
                    let _ = stream.send(EngineEvent::Finished {
                        reason,
                        prompt_tokens,
                        output_tokens,
                        cached_tokens,
                    });
                }
            }
            Output::Failed { id, message } => {
                if let Some(stream) = self.streams.remove(&id) {
                    let _ = stream.send(EngineEvent::Failed(EngineFailure::Internal(message)));
                }
            }
        }
    }

    fn publish_stats(&self) {
        let s = self.core.stats();
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
            prompt_tokens_computed: s.prompt_tokens_computed,
            cached_blocks: s.cached_blocks,
            fair_share_clients: s.num_clients,
            step_time_correction: s.step_time_correction,
            length_examples: s.length_examples,
            length_ranking: s.length_ranking,
            drafts: s.drafts,
            acceptance_tenths: s.acceptance_tenths,
            steps: self.core.steps(),
            alive: true,
        };
    }
}
