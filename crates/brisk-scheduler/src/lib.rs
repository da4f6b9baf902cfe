//! The synchronous scheduler core of brisk.
//!
//! [`SchedulerCore`] is a pure state machine: the engine (or the simulator, on a virtual
//! clock) calls [`SchedulerCore::schedule`] to get a [`StepPlan`], runs it through a backend
//! ([`StepPlan::as_batch`]), samples, and hands the sampled tokens back to
//! [`SchedulerCore::update`], which returns per-request [`SeqEvent`]s. There are no locks, no
//! async and no clock reads: time is an argument, `now: f64`, in seconds from any fixed
//! origin the caller chooses (it is only compared and handed to the [`SchedulingPolicy`]).
//!
//! What a step contains follows the literature:
//! - **iteration-level continuous batching** (Orca; vLLM): sequences join and leave the batch
//!   at every step, under a token budget (`max_num_batched_tokens`) and a cap on running
//!   sequences (`max_num_seqs`);
//! - **stall-free chunked prefill** (Sarathi-Serve; DeepSpeed-FastGen's Dynamic SplitFuse):
//!   every running decode gets its token first, then running sequences that are part-way
//!   through their prompt continue, then waiting requests are admitted in policy order with
//!   prompt chunks filling what is left of the budget. A chunk that does not end the prompt
//!   asks for no logits;
//! - **automatic prefix caching** (vLLM v1, through [`brisk_kv::BlockManager`]): an admitted
//!   request skips the cached full blocks of its prompt and reports them as `cached_tokens`;
//! - **preemption by recompute** (vLLM): when a running sequence needs a block and none is
//!   free, the policy's victim (FCFS: the most recently admitted) releases its blocks and goes
//!   back to the front of the waiting queue; its full blocks stay in the prefix cache, so the
//!   restart recomputes little.
//!
//! **Progress.** At add time every request must fit the pool on its own: the K/V slots of its
//! longest possible sequence (`prompt + max_tokens - 1` positions; the last sampled token is
//! never run) fit in `num_blocks` blocks. FCFS never preempts an older sequence for a younger
//! one, so the oldest running sequence is preempted only when it is alone; alone, it finds
//! every block free (cached blocks are evictable) and so never needs to be. It therefore runs
//! to completion, then the next oldest, and so on: every request finishes. A step that
//! preempts admits nobody, so a victim is not readmitted into the same shortage at once.
//!
//! **Policies.** [`Fcfs`] is the baseline; [`SloPolicy`] schedules every request against its
//! own TTFT/TPOT objective ([`RequestSlo`]) with a profiled [`LatencyModel`]: admission and
//! prompt chunks by deadline slack, a step budget that keeps decodes within TPOT, admission
//! control, and priority preemption (see `slo.rs`). Both run through the [`SchedulingPolicy`]
//! seam, so the engine and `brisk sim` use the same core with either. Either can run under
//! [`FairShare`] (`SchedulerConfig::fair_share`): prompt work goes first to the clients that
//! have received the least service (virtual token counters, see `fair.rs`).
#![deny(missing_docs)]

mod config;
mod core;
pub mod defaults;
mod fair;
mod handover;
mod latency;
mod length;
mod plan;
mod policy;
mod request;
mod schedule;
mod sequence;
mod slo;
pub mod speculate;
mod update;

pub use crate::config::{SchedulerConfig, SchedulerError};
pub use crate::core::{SchedulerCore, SchedulerStats};
pub use crate::defaults::SloDefaults;
pub use crate::fair::{FairShare, FairShareConfig};
pub use crate::handover::SeqExport;
pub use crate::latency::{
    FitQuality, LatencyCoefficients, LatencyError, LatencyModel, StepRecord, StepSample, StepShape,
};
pub use crate::length::{LengthFeatures, LengthPrediction, LengthPredictor, RankAgreement};
pub use crate::plan::{PlannedSeq, StepPlan};
pub use crate::policy::{Admission, Fcfs, PromptWork, SchedulingPolicy};
pub use crate::request::{
    FinishReason, Priority, RequestId, RequestSlo, RequestSpec, SchedRequest, SeqEvent,
};
pub use crate::sequence::{DraftCounts, SeqView};
pub use crate::slo::{PolicyChoice, SloPolicy, SloPolicyConfig};
pub use crate::speculate::SpeculativeConfig;
