//! K/V compressed for the wire (`--kv-transfer-dtype int8|int4`): what a hand-over or a
//! migration sends when bandwidth, not the pause, is what a fleet runs short of.
//!
//! In the spirit of CacheGen (Liu et al., SIGCOMM 2024) and KIVI's observation about where
//! K/V outliers lie: keys vary by channel, values by token. So each (layer, block, K/V head)
//! tile is quantized in groups along the axis that keeps a group's values alike — a key
//! channel across the block's tokens, a value vector across its dimensions — each group with
//! its own minimum and step (`x ≈ min + q · step`, both f16), to 8 or 4 unsigned bits.
//!
//! The format is independent of the sending pool's element type and of how its CPU lays keys
//! out: the receiver dequantizes into whatever pool it has (f32, f16, bf16, int8), so it is
//! also the way between replicas whose pools differ. Lossless transfer (`auto`, the pool's
//! own bytes) stays the default; accuracy against it is measured in BENCHMARKS.md ("K/V
//! compression on the wire").

use std::str::FromStr;

use brisk_types::BackendError;
use half::f16;

use crate::kv_pool::{read_geometry, read_name, write_header, CpuKvPool, KvCacheDtype};

/// How K/V travel when a request moves to another replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvTransferDtype {
    /// The pool's own bytes, exactly (the default).
    #[default]
    Auto,
    /// 8 bits per value with a minimum and a step per group: about 3.5× fewer bytes than
    /// an f32 pool sends.
    Int8,
    /// 4 bits per value, two to a byte: about 6× fewer.
    Int4,
}

impl KvTransferDtype {
    /// The name `--kv-transfer-dtype` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
        }
    }

    /// Bits per quantized value; `None` for lossless transfer.
    fn bits(self) -> Option<u32> {
        match self {
            Self::Auto => None,
            Self::Int8 => Some(8),
            Self::Int4 => Some(4),
        }
    }

    /// Bytes per token a transfer of `layers` layers of `kv_heads` K/V heads of `head_dim`
    /// dimensions in blocks of `block_size` takes when compressed (whole blocks); `None`
    /// for lossless transfer, which sends the cache's own bytes.
    pub fn compressed_bytes_per_token(
        self,
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
    ) -> Option<usize> {
        let block = compressed_bytes([layers, kv_heads, head_dim, block_size, 1], self.bits()?)
            .expect("a model's block of K/V fits in memory");
        Some(block.div_ceil(block_size.max(1)))
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Int8, Self::Int4]
            .into_iter()
            .find(|d| d.name().as_bytes() == name.as_bytes())
    }
}

impl FromStr for KvTransferDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "lossless" => Ok(Self::Auto),
            "int8" | "i8" => Ok(Self::Int8),
            "int4" | "i4" => Ok(Self::Int4),
            other => Err(format!(
                "unknown KV transfer dtype `{other}` (expected auto, int8 or int4)"
            )),
        }
    }
}

const MAGIC: &[u8; 4] = b"BKQ1";

/// Whether `data` is compressed K/V (rather than a pool's own bytes).
pub(crate) fn is_compressed(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// Lossless K/V as a pool of this CPU exported them ([`CpuKvPool::export_blocks`]),
/// compressed to `dtype`: the bytes [`CpuKvPool::export_blocks_as`] would have written, made
/// off the engine thread (in a scratch pool of the blocks' size) so that quantizing stalls
/// no step. `Auto`, and data that carries no block, pass unchanged.
pub fn compress(lossless: Vec<u8>, dtype: KvTransferDtype) -> Result<Vec<u8>, BackendError> {
    if dtype == KvTransferDtype::Auto {
        return Ok(lossless);
    }
    let Some(scratch) = CpuKvPool::scratch_for(&lossless) else {
        return Ok(lossless);
    };
    let (mut pool, ids) = scratch?;
    pool.import_blocks(&ids, &lossless)?;
    pool.export_blocks_as(&ids, dtype)
}

/// Compressed K/V ([`compress`]) as a pool of `cache` type on this CPU exports them
/// losslessly, so that the engine's import is a copy: dequantizing happens here, off the
/// engine thread. Anything else passes unchanged (the engine's import judges it). The
/// length is checked against the header before the scratch pool is allocated, so a peer's
/// header cannot make this allocate more than its bytes justify.
pub fn decompress(data: Vec<u8>, cache: KvCacheDtype) -> Result<Vec<u8>, BackendError> {
    if !is_compressed(&data) {
        return Ok(data);
    }
    let bad = |why: &str| BackendError::InvalidBatch(format!("KV import: {why}"));
    let (name, geometry_at) =
        read_name(&data, MAGIC).ok_or_else(|| bad("a compressed header without its end"))?;
    let dtype = KvTransferDtype::from_name(name)
        .ok_or_else(|| bad(&format!("unknown compressed K/V `{name}`")))?;
    let bits = dtype.bits().expect("compressed types have bits");
    let geometry = read_geometry(&data[geometry_at..]).ok_or_else(|| bad("a cut header"))?;
    let [layers, heads, head_dim, block_size, blocks] = geometry;
    let header_len = geometry_at + 5 * 8;
    let payload = compressed_bytes(geometry, bits);
    if payload.and_then(|p| p.checked_add(header_len)) != Some(data.len()) || blocks == 0 {
        return Err(bad("the length does not match the compressed header"));
    }
    let ids: Vec<u32> = (0..u32::try_from(blocks).map_err(|_| bad("too many blocks"))?).collect();
    let mut pool = CpuKvPool::new(layers, heads, head_dim, blocks, block_size, cache)?;
    pool.import_compressed(&ids, &data)?;
    pool.export_blocks(&ids)
}

/// Bytes of the compressed K/V of a pool's `geometry` ([`CpuKvPool::geometry`], its block
/// count included) at `bits`, header apart; `None` when that overflows.
fn compressed_bytes(geometry: [usize; 5], bits: u32) -> Option<usize> {
    let [layers, heads, head_dim, block_size, blocks] = geometry;
    let tile = head_dim
        .checked_mul(group_bytes(block_size, bits))?
        .checked_add(block_size.checked_mul(group_bytes(head_dim, bits))?)?;
    layers
        .checked_mul(heads)?
        .checked_mul(tile)?
        .checked_mul(blocks)
}

/// Bytes of one group of `len` values: minimum and step (f16 each), then the quants.
fn group_bytes(len: usize, bits: u32) -> usize {
    4 + if bits == 8 { len } else { len.div_ceil(2) }
}

/// Appends `group` quantized to `bits` unsigned levels above its minimum.
fn encode_group(group: &[f32], bits: u32, out: &mut Vec<u8>) -> Result<(), String> {
    let (lo, hi) = group
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let levels = ((1u32 << bits) - 1) as f32;
    let min = f16::from_f32(lo);
    let step = f16::from_f32((hi - min.to_f32()).max(0.0) / levels);
    if !(min.is_finite() && step.is_finite()) {
        return Err(format!(
            "values of {lo}..{hi} are beyond what a {bits}-bit transfer carries (f16's \
             range); send them with --kv-transfer-dtype auto"
        ));
    }
    let (base, inv) = (min.to_f32(), step.to_f32());
    let inv = if inv > 0.0 { 1.0 / inv } else { 0.0 };
    // Rounded half up by adding one half and truncating: within [0.5, levels + 0.5] after
    // the clamp, so the cast only drops the fraction (and no `roundf` call is needed).
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let quant = |x: f32| (((x - base) * inv).clamp(0.0, levels) + 0.5) as u8;
    out.extend(min.to_bits().to_le_bytes());
    out.extend(step.to_bits().to_le_bytes());
    if bits == 8 {
        out.extend(group.iter().map(|&x| quant(x)));
    } else {
        out.extend(
            group
                .chunks(2)
                .map(|pair| quant(pair[0]) | pair.get(1).map_or(0, |&x| quant(x) << 4)),
        );
    }
    Ok(())
}

/// Reads one group of `out.len()` values that [`encode_group`] wrote at the front of
/// `data`, advancing it.
fn decode_group(data: &mut &[u8], bits: u32, out: &mut [f32]) {
    let (bytes, rest) = data.split_at(group_bytes(out.len(), bits));
    *data = rest;
    let min = f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32();
    let step = f16::from_bits(u16::from_le_bytes([bytes[2], bytes[3]])).to_f32();
    let quants = &bytes[4..];
    for (i, y) in out.iter_mut().enumerate() {
        let q = if bits == 8 {
            quants[i]
        } else {
            (quants[i / 2] >> (4 * (i % 2))) & 0x0f
        };
        *y = min + f32::from(q) * step;
    }
}

/// Whether every group's minimum and step in `payload` are finite: checked before anything
/// is written, so that a peer's garbage is refused rather than cached.
fn groups_finite(mut payload: &[u8], group_lens: impl Iterator<Item = usize>, bits: u32) -> bool {
    for len in group_lens {
        let (group, rest) = payload.split_at(group_bytes(len, bits));
        payload = rest;
        let finite = |at: usize| f16::from_bits(u16::from_le_bytes([group[at], group[at + 1]]));
        if !(finite(0).is_finite() && finite(2).is_finite()) {
            return false;
        }
    }
    true
}

impl CpuKvPool {
    /// The K/V of `blocks` (every layer) quantized to `dtype` (see the module docs);
    /// [`Self::import_blocks`] of a pool with the same geometry, of any element type, reads
    /// them back. `Auto` is [`Self::export_blocks`].
    pub fn export_blocks_as(
        &self,
        blocks: &[u32],
        dtype: KvTransferDtype,
    ) -> Result<Vec<u8>, BackendError> {
        let Some(bits) = dtype.bits() else {
            return self.export_blocks(blocks);
        };
        self.check_blocks(blocks)?;
        let (bs, d) = (self.block_size, self.head_dim);
        let mut out = self.wire_header(dtype, blocks.len());
        out.reserve_exact(self.compressed_len(blocks.len(), bits));
        let layout = self.layout();
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        let failed = |e: String| BackendError::InvalidBatch(format!("KV export: {e}"));
        for (k, v) in &self.layers {
            for &b in blocks {
                for head in 0..self.num_kv_heads {
                    let key = k.tiles(&[layout.key_offset(b as usize, head)], d * bs, &mut keys);
                    // `[dim][slot]`: each row is one channel across the block's tokens.
                    for channel in key[0].chunks_exact(bs) {
                        encode_group(channel, bits, &mut out).map_err(failed)?;
                    }
                    let value = v.tiles(
                        &[layout.value_offset(b as usize, head, 0)],
                        d * bs,
                        &mut values,
                    );
                    for vector in value[0].chunks_exact(d) {
                        encode_group(vector, bits, &mut out).map_err(failed)?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes compressed K/V ([`Self::export_blocks_as`]) into `blocks`, dequantized into
    /// this pool's element type; refused, with nothing written, when the data is of another
    /// geometry, has the wrong length or holds a non-finite minimum or step.
    pub(crate) fn import_compressed(
        &mut self,
        blocks: &[u32],
        data: &[u8],
    ) -> Result<(), BackendError> {
        let bad = |why: String| Err(BackendError::InvalidBatch(format!("KV import: {why}")));
        let name = read_name(data, MAGIC).map_or("", |(name, _)| name);
        let Some(dtype) = KvTransferDtype::from_name(name) else {
            return bad(format!("unknown compressed K/V `{name}`"));
        };
        let bits = dtype.bits().expect("compressed types have bits");
        let header = self.wire_header(dtype, blocks.len());
        if !data.starts_with(&header) {
            return bad(format!(
                "the data is not {} compressed blocks of this pool's geometry ({} layers, {} \
                 K/V heads of {}, {}-token blocks)",
                blocks.len(),
                self.layers.len(),
                self.num_kv_heads,
                self.head_dim,
                self.block_size
            ));
        }
        let payload = &data[header.len()..];
        let want = self.compressed_len(blocks.len(), bits);
        if payload.len() != want {
            return bad(format!(
                "{} bytes where {} compressed blocks take {}",
                data.len(),
                blocks.len(),
                header.len() + want
            ));
        }
        let (bs, d) = (self.block_size, self.head_dim);
        let per_tile = std::iter::repeat_n(bs, d).chain(std::iter::repeat_n(d, bs));
        let tiles = self.layers.len() * blocks.len() * self.num_kv_heads;
        if !groups_finite(payload, per_tile.cycle().take(tiles * (d + bs)), bits) {
            return bad("a group's minimum or step is not a finite number".into());
        }
        let layout = self.layout();
        let (mut tile, mut column) = (vec![0.0; d * bs], vec![0.0; d]);
        let mut rest = payload;
        for (k, v) in &mut self.layers {
            for &b in blocks {
                for head in 0..self.num_kv_heads {
                    for row in tile.chunks_exact_mut(bs) {
                        decode_group(&mut rest, bits, row);
                    }
                    let key_tile = layout.key_offset(b as usize, head);
                    for slot in 0..bs {
                        for (dim, x) in column.iter_mut().enumerate() {
                            *x = tile[dim * bs + slot];
                        }
                        k.write_key(key_tile, bs, slot, &column);
                    }
                    for slot in 0..bs {
                        decode_group(&mut rest, bits, &mut column);
                        v.write(layout.value_offset(b as usize, head, slot), &column);
                    }
                }
            }
        }
        Ok(())
    }

    /// Bytes `blocks` of this pool take compressed to `bits`, header apart.
    fn compressed_len(&self, blocks: usize, bits: u32) -> usize {
        compressed_bytes(self.geometry(blocks), bits).expect("a pool's blocks fit in memory")
    }

    /// `BKQ1`, the transfer type, the geometry and the block count, little-endian.
    fn wire_header(&self, dtype: KvTransferDtype, blocks: usize) -> Vec<u8> {
        write_header(MAGIC, dtype.name(), self.geometry(blocks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group reads back within half a step (plus f16's rounding of its minimum), for both
    /// widths, odd lengths and constant groups included.
    #[test]
    fn groups_read_back_within_half_a_step() {
        let groups: [Vec<f32>; 4] = [
            (0..16)
                .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
                .collect(),
            (0..7).map(|i| i as f32 - 40.0).collect(),
            vec![0.25; 5],
            vec![-2.0, 7.5],
        ];
        for bits in [8, 4] {
            for group in &groups {
                let mut out = Vec::new();
                encode_group(group, bits, &mut out).unwrap();
                assert_eq!(out.len(), group_bytes(group.len(), bits));
                let mut back = vec![0.0; group.len()];
                let mut data = &out[..];
                decode_group(&mut data, bits, &mut back);
                assert!(data.is_empty());
                let (lo, hi) = group
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                let step = (hi - lo) / ((1 << bits) - 1) as f32;
                let tolerance = step * 0.51 + lo.abs().max(hi.abs()) * 2e-3 + 1e-6;
                for (x, y) in group.iter().zip(&back) {
                    assert!((x - y).abs() <= tolerance, "{bits} bits: {x} came back {y}");
                }
            }
        }
    }

    #[test]
    fn values_past_f16_are_refused_not_corrupted() {
        let mut out = Vec::new();
        // A large span is only a large step; a minimum past f16's range cannot be sent.
        encode_group(&[0.0, 1e6], 8, &mut out).unwrap();
        let err = encode_group(&[-1e6, 0.0], 8, &mut out).unwrap_err();
        assert!(err.contains("--kv-transfer-dtype auto"), "{err}");
    }

    #[test]
    fn names_parse_and_unknown_ones_say_what_is_expected() {
        for d in [
            KvTransferDtype::Auto,
            KvTransferDtype::Int8,
            KvTransferDtype::Int4,
        ] {
            assert_eq!(d.name().parse::<KvTransferDtype>(), Ok(d));
        }
        assert_eq!("lossless".parse(), Ok(KvTransferDtype::Auto));
        let err = "fp8".parse::<KvTransferDtype>().unwrap_err();
        assert!(err.contains("auto, int8 or int4"), "{err}");
    }
}
