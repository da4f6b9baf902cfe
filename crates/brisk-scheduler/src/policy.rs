//! The seam where scheduling policies plug in: admission order and preemption victims.
//!
//! FCFS now; the SLO-aware policy will order admission by deadline slack and pick victims by
//! priority through the same two methods.

use crate::sequence::SeqView;

/// Decides who is admitted first and who yields memory.
///
/// **Progress contract**: victims must be chosen by an order that is stable across steps
/// (e.g. admission rank, or a fixed priority with rank as tie-break), so that the sequence
/// ranked first is never preempted while others run. Two sequences that take turns evicting
/// each other would livelock.
pub trait SchedulingPolicy: Send {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Indices into `waiting` (queue order: preempted sequences first, then arrivals) in the
    /// order to try admitting them. Admission stops at the first that does not fit, so a
    /// large request is not starved by smaller ones behind it.
    fn admission_order(&self, waiting: &[SeqView], now: f64) -> Vec<usize>;

    /// Index into `running` (non-empty, in admission order) of the sequence to preempt
    /// when one of them needs a block and none is free. It may be the one asking.
    fn preemption_victim(&self, running: &[SeqView], now: f64) -> usize;
}

/// First come, first served: admit in queue order; preempt the most recently admitted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fcfs;

impl SchedulingPolicy for Fcfs {
    fn name(&self) -> &'static str {
        "fcfs"
    }

    fn admission_order(&self, waiting: &[SeqView], _now: f64) -> Vec<usize> {
        (0..waiting.len()).collect()
    }

    fn preemption_victim(&self, running: &[SeqView], _now: f64) -> usize {
        (0..running.len())
            .max_by_key(|&i| running[i].admitted_rank)
            .expect("running is not empty")
    }
}
