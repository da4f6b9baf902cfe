//! The narrow trait every model backend implements.

use crate::{BlockId, StepBatch, StepOutput, TokenId};

/// Shape facts about a loaded model that the engine needs to size and schedule work.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelGeometry {
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Number of K/V heads (grouped-query attention).
    pub num_kv_heads: usize,
    /// Dimension of one attention head.
    pub head_dim: usize,
    /// Vocabulary size (columns of a logit row).
    pub vocab_size: usize,
    /// Longest sequence (prompt + output) the model was trained for.
    pub max_context: usize,
    /// Bytes of KV pool memory one token occupies across all layers.
    pub kv_bytes_per_token: usize,
}

/// What a backend can do; returned once, not grown by setters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendCapabilities {
    /// Human-readable name, e.g. `"cpu"`.
    pub name: String,
    /// Whether one step may mix prefill chunks and decode tokens.
    pub mixed_batches: bool,
}

/// A backend failure, with the phase that failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The batch asked for something impossible (a block table too short, a position past
    /// the model's context, a token id outside the vocabulary).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The KV pool could not be allocated.
    #[error("cannot allocate the KV pool: {0}")]
    KvAllocation(String),
    /// The computation itself failed.
    #[error("forward pass failed: {0}")]
    Forward(String),
    /// This backend cannot do what was asked (moving KV blocks, say).
    #[error("this backend cannot {0}")]
    Unsupported(String),
}

/// Executes packed steps of one model over a paged KV pool that the caller owns.
pub trait Backend: Send {
    /// The physical KV storage of this backend (host memory, device memory, nothing for a
    /// latency-model mock). Created by the backend, owned by the engine.
    type KvPool: Send;

    /// Shape facts about the model.
    fn geometry(&self) -> &ModelGeometry;

    /// What this backend supports.
    fn capabilities(&self) -> BackendCapabilities;

    /// Token ids that end generation (EOS, EOT).
    fn stop_tokens(&self) -> &[TokenId];

    /// Allocates a pool of `num_blocks` blocks of `block_size` tokens each.
    fn allocate_kv(
        &self,
        num_blocks: usize,
        block_size: usize,
    ) -> Result<Self::KvPool, BackendError>;

    /// Runs one step: writes the K/V of every token in `batch` into `kv` at the slots its
    /// block table names, attends over each sequence's cached prefix, and returns the
    /// requested logits.
    fn execute(
        &self,
        batch: &StepBatch<'_>,
        kv: &mut Self::KvPool,
    ) -> Result<StepOutput, BackendError>;

    /// The K/V of `blocks` as bytes that another pool of the same geometry and element type
    /// reads back with [`Backend::import_blocks`]: what moves with a running request handed
    /// to another replica. Backends that cannot move blocks say so.
    fn export_blocks(
        &self,
        kv: &Self::KvPool,
        blocks: &[BlockId],
    ) -> Result<Vec<u8>, BackendError> {
        let _ = (kv, blocks);
        Err(BackendError::Unsupported("export KV blocks".into()))
    }

    /// Writes K/V exported by [`Backend::export_blocks`] into `blocks` (one per exported
    /// block, in order); refused, with nothing written, when the data does not fit this pool.
    fn import_blocks(
        &self,
        kv: &mut Self::KvPool,
        blocks: &[BlockId],
        data: &[u8],
    ) -> Result<(), BackendError> {
        let _ = (kv, blocks, data);
        Err(BackendError::Unsupported("import KV blocks".into()))
    }
}
