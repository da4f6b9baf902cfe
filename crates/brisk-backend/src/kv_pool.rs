//! The paged KV pool in host memory.
//!
//! Layout per layer and block, per K/V head: keys transposed, `[head_dim][slot]`, so that
//! attention scores eight keys with one vector per dimension (where the CPU reads bf16 or int8
//! caches in place, their keys are in dimension pairs, `[head_dim / 2][slot][2]`, or fours,
//! `[head_dim / 4][slot][4]`: the operands `vdpbf16ps` and `vpdpbusd` take); values `[slot][head_dim]`, so
//! that the weighted sum adds whole value rows. A (block, head) tile is contiguous in both. The pool knows nothing of
//! sequences; the engine's block manager decides which blocks a sequence owns and passes its
//! block table with every step (vLLM's PagedAttention).

use std::str::FromStr;

use brisk_types::BackendError;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// The element type K and V are stored in. Where the CPU has the kernels (AVX-512 BF16,
/// AVX-512 VNNI), attention reads bf16 and int8 caches in place: scores are bf16 or int8 dot
/// products (the query rounded to the cache's type) accumulated in f32. Otherwise, and for
/// f16, each block is converted to f32 as it is read. Either way a 16-bit or 8-bit cache
/// halves (quarters) the memory and the bytes read per token for a rounding of each value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvCacheDtype {
    /// 32-bit floats (the default: exactly what the model computed).
    #[default]
    F32,
    /// IEEE half precision: 11-bit mantissa, range ±65504.
    F16,
    /// bfloat16: f32's range with an 8-bit mantissa.
    Bf16,
    /// Signed bytes with one f32 scale per cached vector (a token's key or value for one
    /// K/V head): `x ≈ scale · q`, `scale = max|x| / 127`.
    Int8,
}

impl KvCacheDtype {
    /// Bytes one cached vector of `head_dim` values takes (a token's key or value for one
    /// K/V head), scales included.
    pub fn vector_bytes(self, head_dim: usize) -> usize {
        match self {
            Self::F32 => 4 * head_dim,
            Self::F16 | Self::Bf16 => 2 * head_dim,
            Self::Int8 => head_dim + 4,
        }
    }

    /// The name `--kv-cache-dtype` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
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
            "int8" | "i8" => Ok(Self::Int8),
            other => Err(format!(
                "unknown KV cache dtype `{other}` (expected auto, f32, f16, bf16 or int8)"
            )),
        }
    }
}

/// One layer's keys or values in the pool's element type.
pub(crate) enum KvBuffer {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// bf16 values, `[slot][dim]` per tile.
    Bf16(Vec<bf16>),
    /// bf16 keys, `[dim / 2][slot][2]` per tile of `block_size` slots (see
    /// [`bf16_pair_index`]).
    Bf16Pairs(Vec<bf16>, usize),
    Int8(Int8Buffer),
}

/// Where dimension `dim` of the key in `slot` lies within a bf16 key tile of `block_size`
/// slots: dimensions `2i` and `2i + 1` of each key are adjacent, and sixteen keys' pairs fill
/// one 64-byte vector.
#[inline]
pub(crate) fn bf16_pair_index(block_size: usize, slot: usize, dim: usize) -> usize {
    (dim / 2) * 2 * block_size + 2 * slot + dim % 2
}

/// Where dimension `dim` of the key in `slot` lies within an int8 key tile of `block_size`
/// slots: four consecutive dimensions of each key are adjacent, and sixteen keys' fours fill
/// one 64-byte vector.
#[inline]
pub(crate) fn int8_quad_index(block_size: usize, slot: usize, dim: usize) -> usize {
    (dim / 4) * 4 * block_size + 4 * slot + dim % 4
}

/// Quantizes `src` to signed bytes with one scale, its largest magnitude mapped to ±127
/// (`x ≈ scale · q`): byte `i` is handed to `put(i, q)`; returns the scale.
pub(crate) fn quantize_int8(src: &[f32], mut put: impl FnMut(usize, i8)) -> f32 {
    let amax = src.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = amax / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (i, &x) in src.iter().enumerate() {
        // |x · inv| ≤ 127 (up to rounding), so the cast only drops the fraction.
        #[expect(clippy::cast_possible_truncation)]
        put(i, (x * inv).round().clamp(-127.0, 127.0) as i8);
    }
    scale
}

/// One (block, head) tile of an int8 cache as stored: its quants (keys in fours, values
/// `[slot][dim]`) and one scale per slot.
#[derive(Clone, Copy)]
pub(crate) struct Int8Tile<'a> {
    pub(crate) quants: &'a [i8],
    pub(crate) scales: &'a [f32],
}

/// How a buffer lays out each (block, head) tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileLayout {
    /// Values, `[slot][dim]`.
    Values,
    /// Keys transposed, `[dim][slot]`: what the f32 kernels read (caches converted first).
    Keys,
    /// Keys as the in-place kernels read them: bf16 in pairs of dimensions
    /// ([`bf16_pair_index`]), int8 in fours ([`int8_quad_index`]).
    KeysForKernels,
}

/// 8-bit storage: quants in the pool's layout, and one scale per cached vector. A
/// (block, head) tile holds `block_size` vectors of `head_dim` values, in either layout, so
/// vector `slot` of the tile starting at element `o` has scale `o / head_dim + slot`.
pub(crate) struct Int8Buffer {
    q: Vec<i8>,
    scales: Vec<f32>,
    head_dim: usize,
    block_size: usize,
    layout: TileLayout,
}

impl Int8Buffer {
    /// Stores one vector `src` with its own scale at scale index `scale_index`, element `d`
    /// at `at(d)`.
    fn store(&mut self, scale_index: usize, src: &[f32], at: impl Fn(usize) -> usize) {
        let q = &mut self.q;
        self.scales[scale_index] = quantize_int8(src, |d, x| q[at(d)] = x);
    }
}

/// Allocates `len` copies of `zero`, reporting a failed reservation instead of aborting.
fn alloc<T: Clone>(len: usize, zero: T) -> Result<Vec<T>, BackendError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|e| BackendError::KvAllocation(format!("{len} values: {e}")))?;
    v.resize(len, zero);
    Ok(v)
}

impl KvBuffer {
    /// A zeroed buffer of `len` values laid out as `layout`, of a pool with `head_dim`-long
    /// vectors in blocks of `block_size`.
    fn zeros(
        dtype: KvCacheDtype,
        len: usize,
        head_dim: usize,
        block_size: usize,
        layout: TileLayout,
    ) -> Result<Self, BackendError> {
        Ok(match dtype {
            KvCacheDtype::F32 => Self::F32(alloc(len, 0.0)?),
            KvCacheDtype::F16 => Self::F16(alloc(len, f16::ZERO)?),
            KvCacheDtype::Bf16 if layout == TileLayout::KeysForKernels => {
                Self::Bf16Pairs(alloc(len, bf16::ZERO)?, block_size)
            }
            KvCacheDtype::Bf16 => Self::Bf16(alloc(len, bf16::ZERO)?),
            KvCacheDtype::Int8 => Self::Int8(Int8Buffer {
                q: alloc(len, 0)?,
                scales: alloc(len / head_dim, 0.0)?,
                head_dim,
                block_size,
                layout,
            }),
        })
    }

    /// Stores a key (`src`, one head's `head_dim` values) as column `slot` of the transposed
    /// tile at `tile` (`block_size` slots per dimension).
    pub(crate) fn write_key(&mut self, tile: usize, block_size: usize, slot: usize, src: &[f32]) {
        let at = |dim: usize| tile + dim * block_size + slot;
        match self {
            Self::F32(v) => src.iter().enumerate().for_each(|(d, &x)| v[at(d)] = x),
            Self::F16(v) => src
                .iter()
                .enumerate()
                .for_each(|(d, &x)| v[at(d)] = f16::from_f32(x)),
            Self::Bf16(v) => src
                .iter()
                .enumerate()
                .for_each(|(d, &x)| v[at(d)] = bf16::from_f32(x)),
            Self::Bf16Pairs(v, bs) => src.iter().enumerate().for_each(|(d, &x)| {
                v[tile + bf16_pair_index(*bs, slot, d)] = bf16::from_f32(x);
            }),
            Self::Int8(b) if b.layout == TileLayout::KeysForKernels => {
                b.store(tile / b.head_dim + slot, src, |d| {
                    tile + int8_quad_index(block_size, slot, d)
                });
            }
            Self::Int8(b) => b.store(tile / b.head_dim + slot, src, at),
        }
    }

    /// Stores a value vector `src` from `at` on (`at` is the start of a vector).
    pub(crate) fn write(&mut self, at: usize, src: &[f32]) {
        let end = at + src.len();
        match self {
            Self::F32(v) => v[at..end].copy_from_slice(src),
            Self::F16(v) => v[at..end].convert_from_f32_slice(src),
            Self::Bf16(v) => v[at..end].convert_from_f32_slice(src),
            Self::Bf16Pairs(..) => unreachable!("values are never stored in pairs"),
            Self::Int8(b) => b.store(at / b.head_dim, src, |d| at + d),
        }
    }

    /// The `len` values at each of `offsets` (whole tiles), as f32: slices of the pool itself
    /// when it stores f32, else converted into `scratch` (which they then borrow).
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
                Self::Bf16Pairs(v, bs) => {
                    // Back to `[dim][slot]`: each row of pairs fills two dimension rows.
                    let bs = *bs;
                    for (pairs, rows) in v[o..o + len]
                        .chunks_exact(2 * bs)
                        .zip(dst.chunks_exact_mut(2 * bs))
                    {
                        let (even, odd) = rows.split_at_mut(bs);
                        for ((e, od), pair) in even.iter_mut().zip(odd).zip(pairs.chunks_exact(2)) {
                            *e = pair[0].to_f32();
                            *od = pair[1].to_f32();
                        }
                    }
                }
                Self::Int8(b) => {
                    let scales = &b.scales[o / b.head_dim..][..len / b.head_dim];
                    let q = &b.q[o..o + len];
                    if b.layout == TileLayout::Keys {
                        // `[dim][slot]`: each row of the tile is one dimension of every slot.
                        for (dst, q) in dst
                            .chunks_exact_mut(b.block_size)
                            .zip(q.chunks_exact(b.block_size))
                        {
                            for ((y, &q), &s) in dst.iter_mut().zip(q).zip(scales) {
                                *y = f32::from(q) * s;
                            }
                        }
                    } else if b.layout == TileLayout::KeysForKernels {
                        // Back to `[dim][slot]`: each row of fours fills four dimension rows.
                        let bs = b.block_size;
                        for (fours, rows) in
                            q.chunks_exact(4 * bs).zip(dst.chunks_exact_mut(4 * bs))
                        {
                            for (slot, (four, &s)) in fours.chunks_exact(4).zip(scales).enumerate()
                            {
                                for (k, &x) in four.iter().enumerate() {
                                    rows[k * bs + slot] = f32::from(x) * s;
                                }
                            }
                        }
                    } else {
                        for ((dst, q), &s) in dst
                            .chunks_exact_mut(b.head_dim)
                            .zip(q.chunks_exact(b.head_dim))
                            .zip(scales)
                        {
                            for (y, &q) in dst.iter_mut().zip(q) {
                                *y = f32::from(q) * s;
                            }
                        }
                    }
                }
                Self::F32(_) => unreachable!("handled above"),
            }
        }
        scratch.chunks_exact(len).collect()
    }

    /// The `len` bf16 values at each of `offsets` (whole tiles) as they are stored, for the
    /// kernels that read bf16 directly; `None` for other element types.
    pub(crate) fn bf16_tiles(&self, offsets: &[usize], len: usize) -> Option<Vec<&[bf16]>> {
        match self {
            Self::Bf16(v) | Self::Bf16Pairs(v, _) => {
                Some(offsets.iter().map(|&o| &v[o..o + len]).collect())
            }
            _ => None,
        }
    }

    /// The tiles of `len` quants at each of `offsets` as they are stored, with their
    /// scales, for the kernels that read int8 directly; `None` for other element types.
    pub(crate) fn int8_tiles(&self, offsets: &[usize], len: usize) -> Option<Vec<Int8Tile<'_>>> {
        let Self::Int8(b) = self else {
            return None;
        };
        let tile = |o: usize| Int8Tile {
            quants: &b.q[o..o + len],
            scales: &b.scales[o / b.head_dim..][..len / b.head_dim],
        };
        Some(offsets.iter().map(|&o| tile(o)).collect())
    }

    /// Appends the elements `range` (whole tiles) as little-endian bytes, int8 scales after
    /// the quants: the exported form of a block.
    fn export(&self, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
        match self {
            Self::F32(v) => v[range].iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::F16(v) => v[range]
                .iter()
                .for_each(|x| out.extend(x.to_bits().to_le_bytes())),
            Self::Bf16(v) | Self::Bf16Pairs(v, _) => v[range]
                .iter()
                .for_each(|x| out.extend(x.to_bits().to_le_bytes())),
            Self::Int8(b) => {
                let d = b.head_dim;
                out.extend(b.q[range.clone()].iter().map(|&q| q.to_le_bytes()[0]));
                b.scales[range.start / d..range.end / d]
                    .iter()
                    .for_each(|s| out.extend(s.to_le_bytes()));
            }
        }
    }

    /// Bytes [`Self::export`] writes for `len` elements.
    fn export_len(&self, len: usize) -> usize {
        match self {
            Self::F32(_) => 4 * len,
            Self::F16(_) | Self::Bf16(_) | Self::Bf16Pairs(..) => 2 * len,
            Self::Int8(b) => len + 4 * (len / b.head_dim),
        }
    }

    /// Reads what [`Self::export`] wrote for the elements at `start..start + len` from the
    /// front of `data`, advancing it.
    fn import(&mut self, start: usize, len: usize, data: &mut &[u8]) {
        let (bytes, rest) = data.split_at(self.export_len(len));
        *data = rest;
        let range = start..start + len;
        match self {
            Self::F32(v) => {
                for (x, b) in v[range].iter_mut().zip(bytes.chunks_exact(4)) {
                    *x = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
            }
            Self::F16(v) => {
                for (x, b) in v[range].iter_mut().zip(bytes.chunks_exact(2)) {
                    *x = f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
                }
            }
            Self::Bf16(v) | Self::Bf16Pairs(v, _) => {
                for (x, b) in v[range].iter_mut().zip(bytes.chunks_exact(2)) {
                    *x = bf16::from_bits(u16::from_le_bytes([b[0], b[1]]));
                }
            }
            Self::Int8(b) => {
                let d = b.head_dim;
                let (quants, scales) = bytes.split_at(len);
                for (q, &byte) in b.q[range.clone()].iter_mut().zip(quants) {
                    *q = i8::from_le_bytes([byte]);
                }
                let scale_range = range.start / d..range.end / d;
                for (s, b) in b.scales[scale_range].iter_mut().zip(scales.chunks_exact(4)) {
                    *s = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
            }
        }
    }

    /// Copies whole tiles `src` to `dst` (element offsets).
    fn copy_within(&mut self, src: std::ops::Range<usize>, dst: usize) {
        match self {
            Self::F32(v) => v.copy_within(src, dst),
            Self::F16(v) => v.copy_within(src, dst),
            Self::Bf16(v) | Self::Bf16Pairs(v, _) => v.copy_within(src, dst),
            Self::Int8(b) => {
                let d = b.head_dim;
                b.scales.copy_within(src.start / d..src.end / d, dst / d);
                b.q.copy_within(src, dst);
            }
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
    /// Keys laid out for the in-place kernels (see [`Self::reads_in_place`]).
    in_place: bool,
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
        // bf16 keys are stored in pairs of dimensions, int8 keys in fours.
        let head_multiple = match dtype {
            KvCacheDtype::F32 | KvCacheDtype::F16 => 1,
            KvCacheDtype::Bf16 => 2,
            KvCacheDtype::Int8 => 4,
        };
        if block_size == 0
            || num_blocks == 0
            || head_dim == 0
            || !head_dim.is_multiple_of(head_multiple)
        {
            return Err(BackendError::KvAllocation(format!(
                "{num_blocks} blocks of {block_size} tokens with heads of {head_dim} dimensions \
                 (all nonzero; a {} cache needs heads of a multiple of {head_multiple})",
                dtype.name()
            )));
        }
        let per_layer = num_blocks
            .checked_mul(block_size)
            .and_then(|n| n.checked_mul(num_kv_heads * head_dim))
            .ok_or_else(|| BackendError::KvAllocation("pool size overflows".into()))?;
        // Keys are laid out for whoever reads them: the in-place kernels where this CPU has
        // them for the cache's type, else the f32 kernels after conversion.
        let in_place = crate::kernels::reads_cache_in_place(
            dtype,
            crate::kernels::KernelPath::selected(),
            head_dim,
        );
        let key_layout = if in_place {
            TileLayout::KeysForKernels
        } else {
            TileLayout::Keys
        };
        let layers = (0..num_layers)
            .map(|_| {
                Ok((
                    KvBuffer::zeros(dtype, per_layer, head_dim, block_size, key_layout)?,
                    KvBuffer::zeros(dtype, per_layer, head_dim, block_size, TileLayout::Values)?,
                ))
            })
            .collect::<Result<_, BackendError>>()?;
        Ok(Self {
            block_size,
            num_blocks,
            num_kv_heads,
            head_dim,
            dtype,
            in_place,
            layers,
        })
    }

    /// Whether attention reads this pool in place (its keys are laid out for the bf16 or
    /// int8 kernels) rather than converting each block to f32.
    pub(crate) fn reads_in_place(&self) -> bool {
        self.in_place
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

    /// The K/V of `blocks` (every layer), as bytes another pool of the same geometry and
    /// element type reads back with [`Self::import_blocks`]: what moves when a running
    /// request is handed to another replica. A header names the geometry and type; then,
    /// per layer, each block's keys and values in the pool's own layout (little-endian,
    /// int8 scales after their quants). Lossless by construction.
    pub fn export_blocks(&self, blocks: &[u32]) -> Result<Vec<u8>, BackendError> {
        self.check_blocks(blocks)?;
        let block_len = self.block_len();
        let mut out = self.header(blocks.len());
        let per_block = self.exported_block_bytes();
        out.reserve_exact(per_block * blocks.len());
        for (k, v) in &self.layers {
            for &b in blocks {
                let start = b as usize * block_len;
                k.export(start..start + block_len, &mut out);
                v.export(start..start + block_len, &mut out);
            }
        }
        Ok(out)
    }

    /// Writes the K/V that [`Self::export_blocks`] (or, compressed, `export_blocks_as`)
    /// produced into `blocks` of this pool (one for each exported block, in order). Refused,
    /// with nothing written, when the data comes from a pool of another geometry or (when
    /// not compressed) element type, or has the wrong length.
    pub fn import_blocks(&mut self, blocks: &[u32], data: &[u8]) -> Result<(), BackendError> {
        self.check_blocks(blocks)?;
        if crate::kv_wire::is_compressed(data) {
            return self.import_compressed(blocks, data);
        }
        let header = self.header(blocks.len());
        let bad = |why: String| Err(BackendError::InvalidBatch(format!("KV import: {why}")));
        if data.len() < header.len() || data[..header.len()] != header[..] {
            return bad(format!(
                "the data is not {} blocks of this pool's geometry and type ({}, {} layers, {} \
                 K/V heads of {}, {}-token blocks)",
                blocks.len(),
                self.dtype.name(),
                self.layers.len(),
                self.num_kv_heads,
                self.head_dim,
                self.block_size
            ));
        }
        let block_len = self.block_len();
        let per_block = self.exported_block_bytes();
        if data.len() != header.len() + per_block * blocks.len() {
            return bad(format!(
                "{} bytes where {} blocks take {}",
                data.len(),
                blocks.len(),
                header.len() + per_block * blocks.len()
            ));
        }
        let mut rest = &data[header.len()..];
        for (k, v) in &mut self.layers {
            for &b in blocks {
                let start = b as usize * block_len;
                k.import(start, block_len, &mut rest);
                v.import(start, block_len, &mut rest);
            }
        }
        Ok(())
    }

    /// Bytes one block takes in an export (every layer's keys and values), header apart.
    fn exported_block_bytes(&self) -> usize {
        let block_len = self.block_len();
        self.layers
            .iter()
            .map(|(k, v)| k.export_len(block_len) + v.export_len(block_len))
            .sum()
    }

    /// Elements of one block in one layer's K (or V) buffer.
    fn block_len(&self) -> usize {
        self.num_kv_heads * self.block_size * self.head_dim
    }

    pub(crate) fn check_blocks(&self, blocks: &[u32]) -> Result<(), BackendError> {
        match blocks.iter().find(|&&b| b as usize >= self.num_blocks) {
            Some(b) => Err(BackendError::InvalidBatch(format!(
                "block {b} is outside the pool of {} blocks",
                self.num_blocks
            ))),
            None => Ok(()),
        }
    }

    /// A pool of this CPU shaped like the one that exported `data` ([`Self::export_blocks`]),
    /// with as many blocks as it carries, and their ids: where K/V can be converted off the
    /// engine thread. `None` when `data` has no such header or carries no block.
    pub(crate) fn scratch_for(data: &[u8]) -> Option<Result<(Self, Vec<u32>), BackendError>> {
        let (name, geometry_at) = read_name(data, LOSSLESS_MAGIC)?;
        let dtype: KvCacheDtype = name.trim_end_matches(IN_PLACE_SUFFIX).parse().ok()?;
        let [layers, heads, head_dim, block_size, blocks] = read_geometry(&data[geometry_at..])?;
        if blocks == 0 {
            return None;
        }
        let ids = (0..u32::try_from(blocks).ok()?).collect();
        Some(Self::new(layers, heads, head_dim, blocks, block_size, dtype).map(|p| (p, ids)))
    }

    /// `BKV1`, the element type, the geometry and the block count, little-endian.
    fn header(&self, blocks: usize) -> Vec<u8> {
        // Pools of one type lay their keys out for the kernels that read them, which
        // differ between CPUs: another layout is another pool.
        let suffix = if self.in_place { IN_PLACE_SUFFIX } else { "" };
        let name = format!("{}{suffix}", self.dtype.name());
        write_header(LOSSLESS_MAGIC, &name, self.geometry(blocks))
    }

    /// Layers, K/V heads, head dimensions, block size and `blocks`: what a K/V header names.
    pub(crate) fn geometry(&self, blocks: usize) -> [usize; 5] {
        [
            self.layers.len(),
            self.num_kv_heads,
            self.head_dim,
            self.block_size,
            blocks,
        ]
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

const LOSSLESS_MAGIC: &[u8; 4] = b"BKV1";

/// What the name of a lossless export of keys laid out for the in-place kernels ends with.
const IN_PLACE_SUFFIX: &str = " for in-place kernels";

/// A K/V header (lossless `BKV1` or compressed `BKQ1`): `magic`, `name`, a zero byte, and
/// the `geometry` ([`CpuKvPool::geometry`]) as little-endian u64.
pub(crate) fn write_header(magic: &[u8; 4], name: &str, geometry: [usize; 5]) -> Vec<u8> {
    let mut h = magic.to_vec();
    h.extend(name.as_bytes());
    h.push(0);
    for n in geometry {
        h.extend((n as u64).to_le_bytes());
    }
    h
}

/// The name in a header [`write_header`] wrote with `magic`, and where its geometry
/// starts; `None` for other data.
pub(crate) fn read_name<'a>(data: &'a [u8], magic: &[u8; 4]) -> Option<(&'a str, usize)> {
    let rest = data.strip_prefix(magic)?;
    let name_end = rest.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&rest[..name_end]).ok()?;
    Some((name, magic.len() + name_end + 1))
}

/// The five little-endian u64 of a K/V header after its name (layers, K/V heads, head
/// dimensions, block size, blocks), as `usize`.
pub(crate) fn read_geometry(bytes: &[u8]) -> Option<[usize; 5]> {
    let mut out = [0; 5];
    for (i, n) in out.iter_mut().enumerate() {
        let chunk = bytes.get(8 * i..8 * i + 8)?;
        *n = usize::try_from(u64::from_le_bytes(chunk.try_into().ok()?)).ok()?;
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cache type reads back what was written (int8 within half a step of its vector's
    /// scale), in both layouts, and a copied block carries its scales along.
    #[test]
    fn written_vectors_read_back_and_copy_with_their_block() {
        let (heads, d, bs, blocks) = (2, 8, 4, 3);
        for dtype in [
            KvCacheDtype::F32,
            KvCacheDtype::F16,
            KvCacheDtype::Bf16,
            KvCacheDtype::Int8,
        ] {
            let mut pool = CpuKvPool::new(1, heads, d, blocks, bs, dtype).unwrap();
            let layout = pool.layout();
            let vector = |block: usize, head: usize, slot: usize| -> Vec<f32> {
                (0..d)
                    .map(|i| ((block * 7 + head * 5 + slot * 3 + i) % 11) as f32 * 0.3 - 1.5)
                    .collect()
            };
            let (kc, vc) = &mut pool.layers[0];
            for (head, slot) in [(0, 0), (1, 3), (0, 2)] {
                let x = vector(1, head, slot);
                kc.write_key(layout.key_offset(1, head), bs, slot, &x);
                vc.write(layout.value_offset(1, head, slot), &x);
            }
            pool.copy_block(1, 2);
            let tolerance = if dtype == KvCacheDtype::Int8 {
                1.5 / 254.0 + 1e-6
            } else {
                1e-2
            };
            for block in [1, 2] {
                let (kc, vc) = &pool.layers[0];
                for (head, slot) in [(0, 0), (1, 3), (0, 2)] {
                    let want = vector(1, head, slot);
                    let mut scratch = Vec::new();
                    let keys = kc.tiles(&[layout.key_offset(block, head)], d * bs, &mut scratch)[0]
                        .to_vec();
                    let values =
                        vc.tiles(&[layout.value_offset(block, head, 0)], d * bs, &mut scratch)[0]
                            .to_vec();
                    for (i, &w) in want.iter().enumerate() {
                        let (k, v) = (keys[i * bs + slot], values[slot * d + i]);
                        assert!((k - w).abs() <= tolerance, "{dtype:?} key {k} vs {w}");
                        assert!((v - w).abs() <= tolerance, "{dtype:?} value {v} vs {w}");
                    }
                }
            }
        }
    }
}
