//! The engine actor.
//!
//! One thread owns the scheduler core, the KV pool and the backend; the rest of the system
//! talks to it through an [`EngineHandle`] (commands over a channel) and receives each
//! request's tokens on that request's own channel (TGI's router/queue split; STYLE.md's
//! "actor, not shared locks"). Tokenization and detokenization happen outside, in the server.

mod core;
pub mod drafter;
mod engine;
mod export;
mod handle;
mod request;
mod request_state;
mod stats;

use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, Mutex};

use brisk_kv::KvEventBatch;
use brisk_scheduler::speculate::Drafter;
use brisk_scheduler::{PolicyChoice, SchedulerConfig, SchedulerCore, StepRecord};
use brisk_types::Backend;

pub use crate::core::{AddError, Clock, EngineCore, Output, StepReport};
pub use export::{BlockExport, MoveError, RequestExport};
pub use handle::{EngineHandle, EngineStopped, RequestStream};
pub use request::{
    EngineEvent, EngineFailure, EngineRequest, FinishReason, GeneratedToken, Priority, RequestId,
    RequestSlo, RequestSpec,
};
pub use stats::EngineStats;

/// Settings of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The scheduler's settings (its `num_blocks` and `block_size` also size the KV pool).
    pub scheduler: SchedulerConfig,
    /// Seed for requests that bring none.
    pub seed: u64,
    /// The scheduling policy (`fcfs` or `slo` with its latency model).
    pub policy: PolicyChoice,
    /// Where to send a [`StepRecord`] for every step (its shape and wall time), for
    /// calibrating the latency model on the live server; `None` records nothing. A receiver
    /// that goes away stops the recording, not the engine.
    pub step_records: Option<mpsc::Sender<StepRecord>>,
    /// Where to send the prefix cache's changes after every step that has some (KV events;
    /// the first batch clears and lists what is cached); `None` records none. The channel's
    /// bound is the publisher's queue: a full queue makes the engine wait, as vLLM's does, so
    /// no event is lost. A receiver that goes away stops the events, not the engine.
    pub kv_events: Option<tokio::sync::mpsc::Sender<KvEventBatch>>,
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The scheduler refused its configuration.
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// The backend could not allocate the KV pool.
    #[error("{0}")]
    KvAllocation(String),
    /// The engine thread could not be started.
    #[error("cannot start the engine thread: {0}")]
    Thread(std::io::Error),
}

/// Starts an engine on its own thread and returns its handle. The thread ends once every
/// handle is dropped and the remaining requests are done.
pub fn spawn<B: Backend + 'static>(
    backend: B,
    config: EngineConfig,
) -> Result<EngineHandle, EngineError> {
    spawn_with_drafter(backend, config, None)
}

/// [`spawn`], with a draft model proposing the drafts of speculative decoding (the
/// scheduler's settings must ask for one: `speculative.draft_model`).
pub fn spawn_with_drafter<B: Backend + 'static>(
    backend: B,
    mut config: EngineConfig,
    drafter: Option<Box<dyn Drafter>>,
) -> Result<EngineHandle, EngineError> {
    if config.scheduler.eos_token_ids.is_empty() {
        config.scheduler.eos_token_ids = backend.stop_tokens().to_vec();
    }
    let policy = config.policy.build(&config.scheduler);
    let mut scheduler = SchedulerCore::with_policy(config.scheduler.clone(), policy)
        .map_err(|e| EngineError::Config(e.to_string()))?;
    if let Some(drafter) = drafter {
        scheduler.set_drafter(drafter);
    }
    let kv = backend
        .allocate_kv(config.scheduler.num_blocks, config.scheduler.block_size)
        .map_err(|e| EngineError::KvAllocation(e.to_string()))?;
    let (tx, rx) = mpsc::channel();
    let stats = Arc::new(Mutex::new(EngineStats {
        alive: true,
        step_time_correction: 1.0,
        ..EngineStats::default()
    }));
    let mut core = EngineCore::new(backend, kv, scheduler, config.seed);
    core.record_kv_events(config.kv_events.is_some());
    let engine = engine::Engine::new(
        core,
        rx,
        Arc::clone(&stats),
        engine::Reports {
            step_records: config.step_records,
            kv_events: config.kv_events,
        },
    );
    std::thread::Builder::new()
        .name("brisk-engine".into())
        .spawn(move || engine.run())
        .map_err(EngineError::Thread)?;
    Ok(EngineHandle {
        commands: tx,
        next_id: Arc::new(AtomicU64::new(1)),
        stats,
    })
}
