//! The paged KV pool in host memory.
//!
//! Layout per layer and block, per K/V head: keys transposed, `[head_dim][slot]`, so that
//! attention scores eight keys with one vector per dimension; values `[slot][head_dim]`, so
//! that the weighted sum adds whole value rows. A (block, head) tile is contiguous in both. The pool knows nothing of
//! sequences; the engine's block manager decides which blocks a sequence owns and passes its
//! block table with every step (vLLM's PagedAttention).

use brisk_types::BackendError;

/// K and V storage for every layer, in fixed-size blocks.
pub struct CpuKvPool {
    pub(crate) block_size: usize,
    pub(crate) num_blocks: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    /// Per layer: (keys, values).
    pub(crate) layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl CpuKvPool {
    pub fn new(
        num_layers: usize,
        num_kv_heads: usize,
        head_dim: usize,
        num_blocks: usize,
        block_size: usize,
    ) -> Result<Self, BackendError> {
        if block_size == 0 || num_blocks == 0 {
            return Err(BackendError::KvAllocation(format!(
                "{num_blocks} blocks of {block_size} tokens"
            )));
        }
        let per_layer = num_blocks
            .checked_mul(block_size)
            .and_then(|n| n.checked_mul(num_kv_heads * head_dim))
            .ok_or_else(|| BackendError::KvAllocation("pool size overflows".into()))?;
        let alloc = || {
            let mut v = Vec::new();
            v.try_reserve_exact(per_layer)
                .map_err(|e| BackendError::KvAllocation(format!("{per_layer} floats: {e}")))?;
            v.resize(per_layer, 0.0);
            Ok::<_, BackendError>(v)
        };
        let layers = (0..num_layers)
            .map(|_| Ok((alloc()?, alloc()?)))
            .collect::<Result<_, BackendError>>()?;
        Ok(Self {
            block_size,
            num_blocks,
            num_kv_heads,
            head_dim,
            layers,
        })
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// The pool's geometry, for computing offsets while a layer is borrowed.
    pub(crate) fn layout(&self) -> KvLayout {
        KvLayout {
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            block_size: self.block_size,
        }
    }

    /// Offset of the `[head_dim][slot]` key tile of `(block, head)` in a layer's K buffer.
    #[inline]
    pub(crate) fn key_offset(&self, block: usize, head: usize) -> usize {
        self.layout().key_offset(block, head)
    }

    /// Offset of the value of `(block, head, slot)` in a layer's V buffer.
    #[inline]
    pub(crate) fn value_offset(&self, block: usize, head: usize, slot: usize) -> usize {
        self.layout().value_offset(block, head, slot)
    }

    /// Copies a sequence's cached K/V for one layer, from `src` block to `dst` block: the copy
    /// the engine needs when two sequences that shared a partial block diverge.
    pub fn copy_block(&mut self, src: usize, dst: usize) {
        let block_len = self.num_kv_heads * self.block_size * self.head_dim;
        for (k, v) in &mut self.layers {
            k.copy_within(src * block_len..(src + 1) * block_len, dst * block_len);
            v.copy_within(src * block_len..(src + 1) * block_len, dst * block_len);
        }
    }
}

/// Where a (block, head) lies in a layer's buffers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KvLayout {
    num_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
}

impl KvLayout {
    #[inline]
    pub(crate) fn key_offset(self, block: usize, head: usize) -> usize {
        (block * self.num_kv_heads + head) * self.block_size * self.head_dim
    }

    #[inline]
    pub(crate) fn value_offset(self, block: usize, head: usize, slot: usize) -> usize {
        ((block * self.num_kv_heads + head) * self.block_size + slot) * self.head_dim
    }
}
