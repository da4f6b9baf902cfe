//! The discrete-event loop: the engine core on a virtual clock, one replica or many.
//!
//! The same [`EngineCore`](brisk_engine::EngineCore) as the server's engine thread —
//! scheduler, block manager, sampling, aborts — over a backend that is the latency model
//! (Vidur; Dynamo's mocker): each step lasts what the model predicts for its shape and the
//! sampled token is a fixed id (requests ask for exact lengths with `ignore_eos`, as `brisk
//! bench` does, so token values never decide anything; see [`crate::backend`]).
//!
//! Every replica of the fleet (an engine core that is busy until its step ends) lives on one
//! shared clock that jumps from event to event: the next arrival, the earliest end of a
//! running step (a heap keyed by end time, ties broken by replica index), or the router's
//! next delivery of KV events. At each event time, in this order: the steps ending now hand
//! out their tokens and finishes, the KV events due reach the router, the arrivals due are
//! routed ([`crate::fleet`]; with one replica they go straight to it), and each idle replica
//! with work takes its queued requests and starts its next step. So requests join at the
//! first step boundary at or after their arrival, as they do in the engine, which drains its
//! queue between steps (their deadlines still count from the arrival, as the server's do),
//! and a replica with nothing to do waits for the next request sent to it. Nothing reads a
//! wall clock or draws a random number, so the same input gives the same output bit for bit.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use brisk_bench::client::RequestRecord;
use brisk_engine::{EngineRequest, Output, RequestSpec};
use brisk_scheduler::{
    LatencyModel, PolicyChoice, Priority, RequestSlo, SchedulerConfig, SchedulerError,
};
use brisk_types::TokenId;

use crate::fleet::FleetSettings;
use crate::front::Front;
use crate::migration::{blocks_s, next_round, Migrations, Move, Stage};
use crate::replica::{Replica, ReplicaOutcome};

/// One request to replay.
#[derive(Clone, Debug, PartialEq)]
pub struct SimRequest {
    /// Arrival, seconds from the start.
    pub arrival: f64,
    /// Prompt token ids (their values matter only to the prefix cache).
    pub prompt: Vec<TokenId>,
    /// Output tokens, exactly.
    pub output_len: usize,
    /// Its objective, when the scheduler should know it.
    pub slo: Option<RequestSlo>,
    /// Its priority class.
    pub priority: Priority,
    /// Who sent it (fair share's client; `None`: anonymous).
    pub client: Option<String>,
}

/// What the simulated server runs.
#[derive(Clone, Debug)]
pub struct SimSettings {
    /// The scheduler's settings.
    pub scheduler: SchedulerConfig,
    /// Its policy.
    pub policy: PolicyChoice,
    /// Step times.
    pub model: LatencyModel,
    /// How many replicas run these settings, and the router in front of them.
    pub fleet: FleetSettings,
    /// With speculative decoding: the probability that a draft token is accepted.
    pub draft_acceptance: f64,
}

/// What a simulation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOutcome {
    /// One record per request, in input order, as `brisk bench` would have measured them.
    pub records: Vec<RequestRecord>,
    /// Virtual seconds from the start to the last completion.
    pub duration_s: f64,
    /// Steps run (all replicas).
    pub steps: u64,
    /// Preemptions (all replicas).
    pub preemptions: u64,
    /// Requests the router refused.
    pub refused: usize,
    /// Requests handed from a prefill replica to a decode replica.
    pub handovers: usize,
    /// Running requests migrated (live, for balance or priority).
    pub migrations: usize,
    /// Each migration's pause (its stop to its continuation elsewhere), seconds.
    pub migration_pauses: Vec<f64>,
    /// Each replica's share.
    pub replicas: Vec<ReplicaOutcome>,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scheduler refused the settings.
    #[error("{0}")]
    Config(SchedulerError),
    /// Work remained but the scheduler planned nothing (a scheduler bug, never hidden).
    #[error("no progress at t = {now:.3} s: {unfinished} requests unfinished and an empty plan")]
    Stalled {
        /// Virtual time.
        now: f64,
        /// Requests left.
        unfinished: usize,
    },
}

#[derive(Default)]
struct Timing {
    first: Option<f64>,
    last: Option<f64>,
    itls: Vec<f64>,
    tokens: usize,
    done: bool,
}

/// What the clients saw, request by request.
struct Log {
    timing: Vec<Timing>,
    errors: Vec<Option<String>>,
    /// The last completion.
    end: f64,
}

impl Log {
    fn new(n: usize) -> Self {
        Self {
            timing: (0..n).map(|_| Timing::default()).collect(),
            errors: vec![None; n],
            end: 0.0,
        }
    }

    /// Request `i` got a token at `now`; returns whether it was its first.
    fn token(&mut self, i: usize, now: f64) -> bool {
        let t = &mut self.timing[i];
        if let Some(last) = t.last {
            t.itls.push((now - last) * 1e3);
        }
        let first = t.first.is_none();
        t.first.get_or_insert(now);
        t.last = Some(now);
        t.tokens += 1;
        first
    }

    fn finished(&mut self, i: usize, now: f64) {
        self.timing[i].done = true;
        self.end = self.end.max(now);
    }
}

/// Something due at `at` about one replica (a step's end) or one request (its hand-over's
/// arrival): ordered by time, then index, so that events due together are handled in a
/// fixed order.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Due {
    at: f64,
    index: usize,
}

impl Eq for Due {}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at
            .total_cmp(&other.at)
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Replays `requests` (sorted by arrival) through the engine core of each replica of
/// `settings.fleet`, behind the router when there are several (see the module docs).
pub fn simulate(settings: &SimSettings, requests: &[SimRequest]) -> Result<SimOutcome, SimError> {
    let mut run = Run::new(settings, requests)?;
    while let Some(now) = run.next_event() {
        run.end_steps(now);
        run.front.deliver(now);
        run.hand_over(now);
        run.migrate(now);
        run.route_arrivals(now);
        run.start_steps(now)?;
    }
    Ok(run.outcome())
}

/// The state of one simulation.
struct Run<'a> {
    requests: &'a [SimRequest],
    /// The next request to arrive.
    next: usize,
    front: Front,
    replicas: Vec<Replica>,
    /// Steps in flight, earliest end first.
    running: BinaryHeap<Reverse<Due>>,
    /// Idle replicas that may have work, to start at this event time.
    ready: Vec<usize>,
    /// Each request's hand-over, if it has one: (prefill replica, decode replica).
    handover: Vec<Option<(usize, usize)>>,
    /// The replica each routed request runs on now.
    placed: Vec<Option<usize>>,
    /// Requests whose hand-over is under way.
    handing_over: Vec<bool>,
    /// Requests past their first token and not ended (migration's candidates).
    decoding: BTreeSet<usize>,
    migrations: Migrations,
    /// Hand-overs under way, earliest arrival first, by request.
    transfers: BinaryHeap<Reverse<Due>>,
    /// How long a hand-over takes.
    transfer: crate::fleet::TransferSettings,
    /// Tokens per KV block.
    block_size: usize,
    /// Most prompt tokens a step computes (a chunk).
    chunk_tokens: usize,
    handovers: usize,
    log: Log,
}

impl<'a> Run<'a> {
    fn new(settings: &SimSettings, requests: &'a [SimRequest]) -> Result<Self, SimError> {
        let front = Front::new(
            &settings.fleet,
            &settings.scheduler,
            &settings.model,
            requests.len(),
        );
        let replicas = (0..settings.fleet.replicas.max(1))
            .map(|_| Replica::new(settings, front.reads_events()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            requests,
            next: 0,
            front,
            replicas,
            running: BinaryHeap::new(),
            ready: Vec::new(),
            handover: vec![None; requests.len()],
            placed: vec![None; requests.len()],
            handing_over: vec![false; requests.len()],
            decoding: BTreeSet::new(),
            migrations: Migrations::new(settings.fleet.migration),
            transfers: BinaryHeap::new(),
            transfer: settings.fleet.transfer,
            block_size: settings.scheduler.block_size,
            chunk_tokens: settings.scheduler.max_num_batched_tokens.max(1),
            handovers: 0,
            log: Log::new(requests.len()),
        })
    }

    /// The time of the next arrival, step end, delivery of KV events or migration event;
    /// `None` when done (a look for migrations alone keeps nothing going).
    fn next_event(&self) -> Option<f64> {
        let work = [
            self.requests.get(self.next).map(|r| r.arrival),
            self.running.peek().map(|Reverse(s)| s.at),
            self.transfers.peek().map(|Reverse(t)| t.at),
            self.front.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min_by(f64::total_cmp);
        match (work, self.migrations.next_due()) {
            (Some(w), Some(m)) => Some(w.min(m)),
            (None, _) if self.migrations.under_way.is_none() => None,
            (w, m) => w.or(m),
        }
    }

    /// The steps ending by `now` hand out what they did.
    fn end_steps(&mut self, now: f64) {
        while let Some(&Reverse(step)) = self.running.peek().filter(|Reverse(s)| s.at <= now) {
            self.running.pop();
            let ended = self.replicas[step.index].end_step();
            for output in ended.outputs {
                self.output(step.index, output, now);
            }
            self.front.events(step.index, ended.events, now);
            self.ready.push(step.index);
        }
    }

    /// A client hears `output` from `replica` at `now`, and the router with it.
    fn output(&mut self, replica: usize, output: Output, now: f64) {
        match output {
            Output::Token { id, .. } => {
                let i = id as usize;
                if self.log.token(i, now) {
                    self.decoding.insert(i);
                    self.front.first_token(i);
                    self.start_hand_over(i, now);
                }
            }
            Output::Finished {
                id,
                prompt_tokens,
                cached_tokens,
                ..
            } => {
                self.log.finished(id as usize, now);
                self.decoding.remove(&(id as usize));
                self.replicas[replica].served(prompt_tokens, cached_tokens);
                self.front.finished(id as usize, true, now);
            }
            Output::Failed { id, message } => {
                self.log.errors[id as usize] = Some(format!("HTTP 500: {message}"));
                self.decoding.remove(&(id as usize));
                self.front.finished(id as usize, false, now);
            }
        }
    }

    /// Request `i` produced its first token: if it has a decode replica (and more tokens to
    /// make), it is paused where it is and its K/V set off.
    fn start_hand_over(&mut self, i: usize, now: f64) {
        let Some((from, _)) = self.handover[i] else {
            return;
        };
        if self.requests[i].output_len <= 1 {
            return; // done at its first token: nothing to decode
        }
        self.replicas[from].parked();
        self.handing_over[i] = true;
        // Whole blocks travel, the last one part-filled. The full ones stream to the decode
        // replica as the prompt's chunks are computed (the server's prompt stream), so what
        // is left at the first token is what the last chunk filled — unless the link has not
        // caught up with the earlier ones, which set off no sooner than the request arrived.
        let prompt = self.requests[i].prompt.len();
        let blocks = prompt.div_ceil(self.block_size);
        let before_last_chunk = prompt.saturating_sub(1) / self.chunk_tokens * self.chunk_tokens;
        let left = blocks - before_last_chunk / self.block_size;
        let at = (now + self.transfer.seconds(left * self.block_size))
            .max(self.requests[i].arrival + self.transfer.seconds(blocks * self.block_size));
        self.transfers.push(Reverse(Due { at, index: i }));
    }

    /// The hand-overs arriving by `now` move their requests to the decode replicas (one
    /// that has no room leaves its request decoding where it was).
    fn hand_over(&mut self, now: f64) {
        while let Some(&Reverse(t)) = self.transfers.peek().filter(|Reverse(t)| t.at <= now) {
            self.transfers.pop();
            let i = t.index;
            let (from, to) = self.handover[i].expect("only hand-overs travel");
            self.handing_over[i] = false;
            let moved = match self.replicas[from].export(i, now) {
                Some(export) => self.replicas[to].import(i, export, now).is_ok(),
                None => false,
            };
            self.replicas[from].handed_over(i, moved);
            self.handovers += usize::from(moved);
            if moved {
                self.placed[i] = Some(to);
            }
            // Both may have work now: the request, or the blocks it gave back.
            for r in [from, to] {
                if !self.replicas[r].is_busy() {
                    self.ready.push(r);
                }
            }
        }
    }

    /// Live migration at `now` (see [`crate::migration`]): the move under way advances, or
    /// a look due now plans the next.
    fn migrate(&mut self, now: f64) {
        let Some(m) = self.migrations.under_way.as_ref() else {
            if self.migrations.next_look.is_some_and(|at| at <= now) {
                self.look(now);
            }
            return;
        };
        match m.stage {
            Stage::Ahead {
                until,
                sent,
                rounds,
            } if until <= now => self.ahead(now, sent, rounds),
            Stage::Stopping { sent } if !self.replicas[m.from].is_busy() => self.stop(now, sent),
            Stage::Final { until } if until <= now => self.arrive(now),
            _ => {}
        }
    }

    /// Plans a move at `now`: the source's newest decoding request of the class asked for.
    fn look(&mut self, now: f64) {
        let Some((plan, from, to)) = self.front.migration(now) else {
            return self.migrations.idle(now);
        };
        let movable = |i: &&usize| {
            self.placed[**i] == Some(from)
                && !self.handing_over[**i]
                && plan.class.is_none_or(|c| self.requests[**i].priority == c)
        };
        let Some(&request) = self.decoding.iter().rev().find(movable) else {
            return self.migrations.idle(now);
        };
        self.migrations.under_way = Some(Move {
            plan,
            request,
            from,
            to,
            stage: Stage::Stopping { sent: 0 },
            stopped: now,
            export: None,
        });
        self.ahead(now, 0, 0);
    }

    /// Tokens whose K/V request `i` holds now (its prompt and the tokens it has made).
    fn context(&self, i: usize) -> usize {
        self.requests[i].prompt.len() + self.log.timing[i].tokens
    }

    /// A pre-copy round ended at `now` with `sent` full blocks at the destination: the
    /// next round sets off, or the request stops.
    fn ahead(&mut self, now: f64, sent: usize, rounds: usize) {
        let m = self
            .migrations
            .under_way
            .as_ref()
            .expect("a move is under way");
        if !self.decoding.contains(&m.request) {
            return self.migrations.ended(now, false);
        }
        let full = self.context(m.request) / self.block_size;
        let stage = match next_round(full, sent, rounds) {
            Some(blocks) => Stage::Ahead {
                until: now + blocks_s(&self.transfer, blocks, self.block_size),
                sent: sent + blocks,
                rounds: rounds + 1,
            },
            None => Stage::Stopping { sent },
        };
        self.migrations.under_way.as_mut().expect("as above").stage = stage;
        if matches!(stage, Stage::Stopping { .. }) {
            self.migrate(now);
        }
    }

    /// The request stops at its source at `now` (between two of its steps) and the rest of
    /// its K/V sets off.
    fn stop(&mut self, now: f64, sent: usize) {
        let m = self
            .migrations
            .under_way
            .as_ref()
            .expect("a move is under way");
        let (i, from) = (m.request, m.from);
        let Some(export) = self.replicas[from].export(i, now) else {
            return self.migrations.ended(now, false);
        };
        self.replicas[from].parked();
        let rest = self
            .context(i)
            .div_ceil(self.block_size)
            .saturating_sub(sent);
        let m = self.migrations.under_way.as_mut().expect("as above");
        m.export = Some(export);
        m.stopped = now;
        m.stage = Stage::Final {
            until: now + blocks_s(&self.transfer, rest, self.block_size),
        };
    }

    /// The rest of the K/V arrived at `now`: the request continues at the destination, or
    /// at its source when the destination has no room.
    fn arrive(&mut self, now: f64) {
        let mut m = self
            .migrations
            .under_way
            .take()
            .expect("a move is under way");
        let export = m.export.take().expect("the stop exported it");
        let moved = self.replicas[m.to].import(m.request, export, now).is_ok();
        self.replicas[m.from].handed_over(m.request, moved);
        if moved {
            self.placed[m.request] = Some(m.to);
            self.front.migrated(&m.plan);
            self.migrations.made += 1;
            self.migrations.pauses.push(now - m.stopped);
        }
        for r in [m.from, m.to] {
            if !self.replicas[r].is_busy() {
                self.ready.push(r);
            }
        }
        self.migrations.ended(now, moved);
    }

    /// The requests arrived by `now` go to their replicas (or are refused).
    fn route_arrivals(&mut self, now: f64) {
        while let Some(r) = self.requests.get(self.next).filter(|r| r.arrival <= now) {
            match self.front.route(self.next, r, now) {
                Ok(route) => {
                    let i = route.replica;
                    self.handover[self.next] = route.decode_on.map(|d| (i, d));
                    self.placed[self.next] = Some(i);
                    if r.priority == Priority::Interactive {
                        self.migrations.wake(now);
                    }
                    self.replicas[i].send(self.next, route.decode_on.is_some());
                    if !self.replicas[i].is_busy() {
                        self.ready.push(i);
                    }
                }
                Err(error) => self.log.errors[self.next] = Some(error),
            }
            self.next += 1;
        }
    }

    /// Each idle replica with work takes its queued requests and starts a step at `now`.
    fn start_steps(&mut self, now: f64) -> Result<(), SimError> {
        self.ready.sort_unstable();
        self.ready.dedup();
        for i in std::mem::take(&mut self.ready) {
            for (request, error) in self.replicas[i].admit(self.requests, now) {
                self.log.errors[request] = Some(error);
                self.front.finished(request, true, now);
            }
            if let Some(at) = self.replicas[i].start_step(now)? {
                self.running.push(Reverse(Due { at, index: i }));
            }
        }
        Ok(())
    }

    fn outcome(self) -> SimOutcome {
        let replicas: Vec<ReplicaOutcome> = self.replicas.iter().map(Replica::finish).collect();
        let records = self
            .requests
            .iter()
            .zip(self.log.timing)
            .zip(self.log.errors)
            .map(|((r, t), error)| record(r, t, error))
            .collect();
        SimOutcome {
            records,
            duration_s: self.log.end,
            steps: replicas.iter().map(|r| r.steps).sum(),
            preemptions: replicas.iter().map(|r| r.preemptions).sum(),
            refused: self.front.refused(),
            handovers: self.handovers,
            migrations: self.migrations.made,
            migration_pauses: self.migrations.pauses,
            replicas,
        }
    }
}

/// A replayed request as the server would hand it to the engine: greedy, exactly
/// `output_len` tokens.
pub(crate) fn engine_request(r: &SimRequest) -> EngineRequest {
    EngineRequest::greedy(RequestSpec {
        prompt: r.prompt.clone(),
        max_tokens: r.output_len,
        min_tokens: r.output_len,
        ignore_eos: true,
        stop_token_ids: Vec::new(),
        slo: r.slo,
        priority: r.priority,
        client: r.client.clone(),
        speculative: true,
        park_after_first_token: false,
    })
}

/// What `brisk bench`'s client would have recorded.
fn record(r: &SimRequest, t: Timing, error: Option<String>) -> RequestRecord {
    let ms = |x: f64| (x - r.arrival) * 1e3;
    let ttft = t.first.map(ms);
    let e2el = t.last.map(ms);
    let tpot = match (ttft, e2el) {
        (Some(a), Some(b)) if t.tokens > 1 => Some((b - a) / (t.tokens - 1) as f64),
        _ => None,
    };
    let error = error.or_else(|| (!t.done).then(|| "did not finish".to_string()));
    RequestRecord {
        prompt_len: r.prompt.len(),
        output_len_requested: r.output_len,
        prompt_len_reported: error.is_none().then_some(r.prompt.len()),
        output_len: t.tokens,
        ttft,
        tpot,
        e2el,
        itls: t.itls,
        scheduled_s: r.arrival,
        lag_ms: 0.0,
        error,
        ..RequestRecord::default()
    }
}
