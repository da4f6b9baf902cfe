//! Vocabulary shared by every brisk crate.
//!
//! The seam between the engine and a model is the [`Backend`] trait: the engine hands it a
//! packed batch ([`StepBatch`]) in which every sequence contributes either a chunk of its
//! prompt (prefill) or one token (decode) at its own positions, together with the block table
//! that says where that sequence's K/V live in a paged pool. The pool itself is created by the
//! backend ([`Backend::allocate_kv`]) but owned by the engine and lent to every step, so that
//! the block manager — not the model — decides what memory a sequence holds (vLLM's
//! PagedAttention; mistral.rs's `ModelForwardContext`). This crate has no heavy dependencies so
//! that the scheduler, the simulator and mock backends can use it without candle.
#![deny(missing_docs)]

mod backend;
mod batch;
mod role;

pub use backend::{Backend, BackendCapabilities, BackendError, ModelGeometry};
pub use batch::{LogitsWanted, SeqStep, StepBatch, StepOutput};
pub use role::Role;

/// A token id in the model's vocabulary.
pub type TokenId = u32;

/// Index of a physical block in the paged KV pool.
pub type BlockId = u32;
