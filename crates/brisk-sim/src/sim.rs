//! The discrete-event loop: the engine core on a virtual clock.
//!
//! The same [`EngineCore`] as the server's engine thread — scheduler, block manager,
//! sampling, aborts — over a backend that is the latency model (Vidur; Dynamo's mocker):
//! each step lasts what the model predicts for its shape, the clock jumps to the end of the
//! step, and the sampled token is a fixed id (requests ask for exact lengths with
//! `ignore_eos`, as `brisk bench` does, so token values never decide anything; see
//! [`crate::backend`]). Requests join at the first step boundary at or after their
//! arrival, as they do in the engine, which drains its queue between steps (their deadlines
//! still count from the arrival, as the server's do); when nothing is
//! running the clock jumps to the next arrival. Nothing reads a wall clock or draws a random
//! number, so the same input gives the same output bit for bit.

use brisk_bench::client::RequestRecord;
use brisk_engine::{AddError, Clock, EngineCore, EngineRequest, Output};
use brisk_sampling::SamplingParams;
use brisk_scheduler::{
    LatencyModel, PolicyChoice, Priority, RequestSlo, SchedulerConfig, SchedulerCore,
    SchedulerError,
};
use brisk_types::TokenId;

use crate::backend::{LatencyBackend, VirtualClock};

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
}

/// What a simulation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOutcome {
    /// One record per request, in input order, as `brisk bench` would have measured them.
    pub records: Vec<RequestRecord>,
    /// Virtual seconds from the start to the last completion.
    pub duration_s: f64,
    /// Steps run.
    pub steps: u64,
    /// Preemptions.
    pub preemptions: u64,
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

/// Replays `requests` (sorted by arrival) through the engine core.
pub fn simulate(settings: &SimSettings, requests: &[SimRequest]) -> Result<SimOutcome, SimError> {
    let cfg = &settings.scheduler;
    let scheduler = SchedulerCore::with_policy(cfg.clone(), settings.policy.build(cfg))
        .map_err(SimError::Config)?;
    let clock = VirtualClock::default();
    let backend = LatencyBackend::new(settings.model.clone(), clock.clone());
    let mut core = EngineCore::new(backend, (), scheduler, 0);
    let mut timing: Vec<Timing> = requests.iter().map(|_| Timing::default()).collect();
    let mut errors: Vec<Option<String>> = vec![None; requests.len()];
    let mut now = 0.0f64;
    let mut next = 0;
    let mut end = 0.0f64;
    loop {
        while next < requests.len() && requests[next].arrival <= now {
            let r = &requests[next];
            if let Err(e) = core.add(next as u64, engine_request(r), r.arrival, now) {
                let status = if matches!(e, AddError::Rejected(_)) {
                    429
                } else {
                    400
                };
                errors[next] = Some(format!("HTTP {status}: {e}"));
            }
            next += 1;
        }
        if !core.has_unfinished() {
            match requests.get(next) {
                Some(r) => {
                    now = now.max(r.arrival);
                    continue;
                }
                None => break,
            }
        }
        clock.set(now);
        let Some(report) = core.step(now, &clock) else {
            let stats = core.stats();
            return Err(SimError::Stalled {
                now,
                unfinished: stats.num_running + stats.num_waiting,
            });
        };
        now = clock.now();
        for output in report.outputs {
            match output {
                Output::Token { id, .. } => {
                    let t = &mut timing[id as usize];
                    if let Some(last) = t.last {
                        t.itls.push((now - last) * 1e3);
                    }
                    t.first.get_or_insert(now);
                    t.last = Some(now);
                    t.tokens += 1;
                }
                Output::Finished { id, .. } => {
                    timing[id as usize].done = true;
                    end = end.max(now);
                }
                Output::Failed { id, message } => {
                    errors[id as usize] = Some(format!("HTTP 500: {message}"));
                }
            }
        }
    }
    let records = requests
        .iter()
        .zip(timing)
        .zip(errors)
        .map(|((r, t), error)| record(r, t, error))
        .collect();
    Ok(SimOutcome {
        records,
        duration_s: end,
        steps: core.steps(),
        preemptions: core.stats().num_preemptions,
    })
}

/// A replayed request as the server would hand it to the engine: greedy, exactly
/// `output_len` tokens.
fn engine_request(r: &SimRequest) -> EngineRequest {
    EngineRequest {
        prompt: r.prompt.clone(),
        sampling: SamplingParams::greedy(),
        max_tokens: r.output_len,
        min_tokens: r.output_len,
        ignore_eos: true,
        stop_token_ids: Vec::new(),
        logprobs: None,
        slo: r.slo,
        priority: r.priority,
        received: None,
    }
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
