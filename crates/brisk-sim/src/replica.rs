//! One simulated replica: an engine core over the latency model, busy until its step ends.
//!
//! A step is planned and executed when it starts (the engine core does both in one call), but
//! the outside learns what it did only when it ends: its tokens, finishes and KV events wait
//! in the replica until the event loop reaches the step's end. That keeps the router from
//! seeing a step's results before they exist, when replicas' steps overlap in time.
//! Requests routed to a busy replica wait in its inbox and join at its next step boundary,
//! as they do in the engine, which drains its queue between steps.

use brisk_engine::{AddError, Clock, EngineCore, MoveError, Output, RequestExport};
use brisk_kv::KvEvent;
use brisk_scheduler::SchedulerCore;

use crate::backend::{LatencyBackend, VirtualClock};
use crate::sim::{engine_request, SimError, SimRequest, SimSettings};

/// What one replica did over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaOutcome {
    /// Requests sent to it.
    pub requests: usize,
    /// Prompt tokens of the requests it completed.
    pub prompt_tokens: u64,
    /// Of those, the tokens its prefix cache held.
    pub cached_tokens: u64,
    /// Steps it ran.
    pub steps: u64,
    /// Its preemptions.
    pub preemptions: u64,
}

/// A step that has run but not yet ended on the shared clock.
pub(crate) struct Step {
    /// Clients' news, in order.
    pub(crate) outputs: Vec<Output>,
    /// The prefix cache's changes during the step.
    pub(crate) events: Vec<KvEvent>,
}

/// A replica of the fleet; see the module docs.
pub(crate) struct Replica {
    core: EngineCore<LatencyBackend>,
    /// Measures this replica's steps; set to the shared time before each.
    clock: VirtualClock,
    /// Requests (indices into the run's requests) that join at the next step boundary, and
    /// whether each pauses after its first token for a hand-over.
    inbox: Vec<(usize, bool)>,
    /// Requests paused after their first token, waiting for their hand-over.
    parked: usize,
    in_flight: Option<Step>,
    outcome: ReplicaOutcome,
}

impl Replica {
    /// A replica running `settings`; `record_events` when a router reads its KV events.
    pub(crate) fn new(settings: &SimSettings, record_events: bool) -> Result<Self, SimError> {
        let cfg = &settings.scheduler;
        let scheduler = SchedulerCore::with_policy(cfg.clone(), settings.policy.build(cfg))
            .map_err(SimError::Config)?;
        let clock = VirtualClock::default();
        let backend = LatencyBackend::new(settings.model.clone(), clock.clone())
            .with_draft_acceptance(settings.draft_acceptance);
        let mut core = EngineCore::new(backend, (), scheduler, 0);
        core.record_kv_events(record_events);
        Ok(Self {
            core,
            clock,
            inbox: Vec::new(),
            parked: 0,
            in_flight: None,
            outcome: ReplicaOutcome::default(),
        })
    }

    /// Request `i` was sent here; with `hand_over` it pauses after its first token.
    pub(crate) fn send(&mut self, i: usize, hand_over: bool) {
        self.inbox.push((i, hand_over));
        self.outcome.requests += 1;
    }

    /// A request is paused for a move: after its first token for its hand-over, or
    /// stopped by [`Self::export`] for a migration.
    pub(crate) fn parked(&mut self) {
        self.parked += 1;
    }

    /// Takes request `i` out for a move, pausing it (`None` if it is no longer here).
    pub(crate) fn export(&mut self, i: usize, now: f64) -> Option<RequestExport> {
        self.core.export(i as u64, now).ok()
    }

    /// The move of parked request `i` happened (`moved`), or not: it goes on here.
    pub(crate) fn handed_over(&mut self, i: usize, moved: bool) {
        self.parked -= 1;
        if moved {
            self.core.release(i as u64);
        } else {
            self.core.resume(i as u64);
        }
    }

    /// Takes in request `i`, handed over from another replica.
    pub(crate) fn import(
        &mut self,
        i: usize,
        export: RequestExport,
        now: f64,
    ) -> Result<(), MoveError> {
        self.core.import(i as u64, export, now)
    }

    /// Whether a step is running.
    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Hands the inbox to the engine core at `now`; returns the requests it refused, with
    /// the error the server would have answered.
    pub(crate) fn admit(&mut self, requests: &[SimRequest], now: f64) -> Vec<(usize, String)> {
        let mut refused = Vec::new();
        for (i, hand_over) in self.inbox.drain(..) {
            let r = &requests[i];
            let mut request = engine_request(r);
            request.park_after_first_token = hand_over;
            if let Err(e) = self.core.add(i as u64, request, r.arrival, now) {
                let status = if matches!(e, AddError::Rejected(_)) {
                    429
                } else {
                    400
                };
                refused.push((i, format!("HTTP {status}: {e}")));
            }
        }
        refused
    }

    /// Starts a step at `now` if there is work; returns when it ends.
    pub(crate) fn start_step(&mut self, now: f64) -> Result<Option<f64>, SimError> {
        if !self.core.has_unfinished() {
            return Ok(None);
        }
        self.clock.set(now);
        let Some(report) = self.core.step(now, &self.clock) else {
            if self.parked > 0 {
                return Ok(None); // what is left waits for its hand-over
            }
            let stats = self.core.stats();
            return Err(SimError::Stalled {
                now,
                unfinished: stats.num_running + stats.num_waiting,
            });
        };
        self.in_flight = Some(Step {
            outputs: report.outputs,
            events: self.core.take_kv_events(),
        });
        Ok(Some(self.clock.now()))
    }

    /// The running step ends: what it produced.
    pub(crate) fn end_step(&mut self) -> Step {
        self.in_flight
            .take()
            .expect("only a running step ends (the event loop keeps one entry per step)")
    }

    /// A request it served finished, with `cached` of its `prompt` tokens from the cache.
    pub(crate) fn served(&mut self, prompt: usize, cached: usize) {
        self.outcome.prompt_tokens += prompt as u64;
        self.outcome.cached_tokens += cached as u64;
    }

    /// Its outcome, with the engine's step and preemption counts.
    pub(crate) fn finish(&self) -> ReplicaOutcome {
        ReplicaOutcome {
            steps: self.core.steps(),
            preemptions: self.core.stats().num_preemptions,
            ..self.outcome
        }
    }
}
