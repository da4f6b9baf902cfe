//! The paged KV pool in host memory.
//!
//! Layout per layer and block, per K/V head: keys transposed, `[head_dim][slot]`, so that
//! attention scores eight keys with one vector per dimension; values `[slot][head_dim]`, so
//! that the weighted sum adds whole value rows. A (block, head) tile is contiguous in both. The pool knows nothing of
//! sequences; the engine's block manager decides which blocks a sequence owns and passes its
//! block table with every step (vLLM's PagedAttention).

use std::str::FromStr;

use brisk_types::BackendError;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// The element type K and V are stored in. Attention always computes in f32: 16-bit caches
/// are converted block by block as they are read, halving the memory (and the bytes read per
/// token) for a rounding of each cached value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvCacheDtype {
    /// 32-bit floats (the default: exactly what the model computed).
    #[default]
    F32,
    /// IEEE half precision: 11-bit mantissa, range ±65504.
    F16,
    /// bfloat16: f32's range with an 8-bit mantissa.
    Bf16,
}

impl KvCacheDtype {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// The name `--kv-cache-dtype` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}

impl FromStr for KvCacheDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "f32" | "float32" | "fp32" => Ok(Self::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown KV cache dtype `{other}` (expected auto, f32, f16 or bf16)"
            )),
        }
    }
}

/// One layer's keys or values in the pool's element type.
pub(crate) enum KvBuffer {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl KvBuffer {
    fn zeros(dtype: KvCacheDtype, len: usize) -> Result<Self, BackendError> {
        fn alloc<T: Clone>(len: usize, zero: T) -> Result<Vec<T>, BackendError> {
            let mut v = Vec::new();
            v.try_reserve_exact(len)
                .map_err(|e| BackendError::KvAllocation(format!("{len} values: {e}")))?;
            v.resize(len, zero);
            Ok(v)
        }
        Ok(match dtype {
            KvCacheDtype::F32 => Self::F32(alloc(len, 0.0)?),
            KvCacheDtype::F16 => Self::F16(alloc(len, f16::ZERO)?),
            KvCacheDtype::Bf16 => Self::Bf16(alloc(len, bf16::ZERO)?),
        })
    }

    /// Stores `x` at `i`, rounded to the element type.
    #[inline]
    pub(crate) fn set(&mut self, i: usize, x: f32) {
        match self {
            Self::F32(v) => v[i] = x,
            Self::F16(v) => v[i] = f16::from_f32(x),
            Self::Bf16(v) => v[i] = bf16::from_f32(x),
        }
    }

    /// Stores `src` from `at` on.
    pub(crate) fn write(&mut self, at: usize, src: &[f32]) {
        let end = at + src.len();
        match self {
            Self::F32(v) => v[at..end].copy_from_slice(src),
            Self::F16(v) => v[at..end].convert_from_f32_slice(src),
            Self::Bf16(v) => v[at..end].convert_from_f32_slice(src),
        }
    }

    /// The `len` values at each of `offsets`, as f32: slices of the pool itself when it
    /// stores f32, else converted into `scratch` (which they then borrow).
    pub(crate) fn tiles<'a>(
        &'a self,
        offsets: &[usize],
        len: usize,
        scratch: &'a mut Vec<f32>,
    ) -> Vec<&'a [f32]> {
        if let Self::F32(v) = self {
            return offsets.iter().map(|&o| &v[o..o + len]).collect();
        }
        scratch.clear();
        scratch.resize(offsets.len() * len, 0.0);
        for (&o, dst) in offsets.iter().zip(scratch.chunks_exact_mut(len)) {
            match self {
                Self::F16(v) => v[o..o + len].convert_to_f32_slice(dst),
                Self::Bf16(v) => v[o..o + len].convert_to_f32_slice(dst),
                Self::F32(_) => unreachable!("handled above"),
            }
        }
        scratch.chunks_exact(len).collect()
    }

    fn copy_within(&mut self, src: std::ops::Range<usize>, dst: usize) {
        match self {
            Self::F32(v) => v.copy_within(src, dst),
            Self::F16(v) => v.copy_within(src, dst),
            Self::Bf16(v) => v.copy_within(src, dst),
        }
    }
}

/// K and V storage for every layer, in fixed-size blocks.
pub struct CpuKvPool {
    pub(crate) block_size: usize,
    pub(crate) num_blocks: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) dtype: KvCacheDtype,
    /// Per layer: (keys, values).
    pub(crate) layers: Vec<(KvBuffer, KvBuffer)>,
}

impl CpuKvPool {
    /// A pool of `num_blocks` blocks of `block_size` tokens for every layer, zeroed.
    pub fn new(
        num_layers: usize,
        num_kv_heads: usize,
        head_dim: usize,
        num_blocks: usize,
        block_size: usize,
        dtype: KvCacheDtype,
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
        let layers = (0..num_layers)
            .map(|_| {
                Ok((
                    KvBuffer::zeros(dtype, per_layer)?,
                    KvBuffer::zeros(dtype, per_layer)?,
                ))
            })
            .collect::<Result<_, BackendError>>()?;
        Ok(Self {
            block_size,
            num_blocks,
            num_kv_heads,
            head_dim,
            dtype,
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

    /// The element type K and V are stored in.
    pub fn dtype(&self) -> KvCacheDtype {
        self.dtype
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
