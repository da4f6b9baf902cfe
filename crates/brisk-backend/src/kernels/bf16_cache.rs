//! Attention over a bf16 KV cache, read where it lies (AVX-512 BF16: Zen 4, Sapphire Rapids).
//!
//! Without these kernels a bf16 cache is converted to f32 block by block before every
//! attention item (a pass over memory the size of an f32 cache, measured at ~9 % of a
//! 2,000-token prefill). Here keys are stored in dimension pairs (`[dim / 2][slot][2]`, see
//! `kv_pool`): 64 bytes hold one pair of dimensions of sixteen keys, which is the operand
//! `vdpbf16ps` takes, so a score costs one instruction per two dimensions. The query rows are
//! rounded to bf16 once per work item (keys carry bf16's precision already).
//!
//! `vdpbf16ps` computes each lane as two fused multiply-adds, the odd element first, reading
//! subnormal inputs as zero and flushing subnormal results (measured on Sapphire Rapids:
//! 320,000 lanes of 320,000 against this order, 98.7 % against the other). [`dot_pairs`] is
//! that arithmetic in scalar code: the reference the kernel is tested against bit for bit,
//! and the path for keys past the last whole group of sixteen.
//!
//! Values stay `[slot][dim]` and are widened in registers (bf16 → f32 is exact), so the
//! weighted sums are the same operations as over a converted f32 copy, without the copy.
//!
//! AMX-BF16 (`tdpbf16ps`) was measured and left out: its accumulation matches no sequence of
//! f32 operations tried (the best, one rounding per tile, agreed on 92 % of lanes), so it could
//! have no reference to be tested against and a query's scores would depend on the path.

use half::bf16;

use super::{avx512, KernelPath, MAX_SCORE_ROWS};

/// Keys scored per call of [`score_keys`].
pub(crate) const KEYS: usize = 16;

/// Whether attention over a bf16 cache reads it in place on `path`: AVX-512 paths on a CPU
/// with AVX-512 BF16, heads a multiple of 64 dimensions (the value kernel's chunk).
pub(crate) fn in_place(path: KernelPath, head_dim: usize) -> bool {
    path >= KernelPath::Avx512Vnni && head_dim.is_multiple_of(avx512::VALUE_CHUNK) && available()
}

/// Whether this CPU has AVX-512 BF16 besides the AVX-512 path's features (checked once).
fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            avx512::available() && std::arch::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// bf16 as `vdpbf16ps` reads it: subnormals as zero of the same sign.
fn daz(x: bf16) -> f32 {
    let bits = x.to_bits();
    if bits & 0x7f80 == 0 {
        f32::from_bits(u32::from(bits & 0x8000) << 16)
    } else {
        x.to_f32()
    }
}

/// A subnormal result flushed to zero of the same sign, as `vdpbf16ps` writes it.
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// The score `q · k` of the key in `slot` of a paired key tile (`bs` slots), with
/// `vdpbf16ps`'s arithmetic: per pair of dimensions, ascending, the odd product then the even
/// one, each a fused multiply-add.
pub(crate) fn dot_pairs(q: &[bf16], kt: &[bf16], bs: usize, slot: usize) -> f32 {
    let mut acc = 0.0f32;
    for (pair, q) in q.chunks_exact(2).enumerate() {
        let k = &kt[pair * 2 * bs + 2 * slot..][..2];
        acc = ftz(daz(q[1]).mul_add(daz(k[1]), acc));
        acc = ftz(daz(q[0]).mul_add(daz(k[0]), acc));
    }
    acc
}

/// Scores of up to [`MAX_SCORE_ROWS`] bf16 query rows (each `d` long, `d` even) against keys
/// `slot..slot + 16` of one block's paired key tile `kt` (`bs` slots): `out[r][j]`, each
/// exactly [`dot_pairs`]. Needs [`in_place`].
pub(crate) fn score_keys(
    rows: &[&[bf16]],
    kt: &[bf16],
    bs: usize,
    slot: usize,
    out: &mut [[f32; KEYS]; MAX_SCORE_ROWS],
) {
    let d = rows.first().map_or(0, |r| r.len());
    assert!((1..=MAX_SCORE_ROWS).contains(&rows.len()) && rows.iter().all(|r| r.len() == d));
    assert!(d > 0 && d.is_multiple_of(2) && slot + KEYS <= bs && kt.len() >= d * bs);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        let q: [*const bf16; MAX_SCORE_ROWS] =
            std::array::from_fn(|r| rows.get(r).map_or(std::ptr::null(), |x| x.as_ptr()));
        let k = kt.as_ptr().wrapping_add(2 * slot);
        // SAFETY: AVX-512 F and BF16 present; each of the `rows.len()` row pointers has `d`
        // values; pair `p < d / 2` of keys `slot..slot + 16` is 32 values from
        // `k + 2·p·bs`, inside the tile (`slot + 16 <= bs`, `kt` holds `d·bs`: checked above).
        unsafe {
            by_rows!(rows.len(), x86::score_keys, &q, d / 2, k, bs, out);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, kt, bs, slot, out);
        unreachable!("bf16 kernels are only selected on x86_64")
    }
}

/// Attention's weighted sums over bf16 values read in place: the operations of
/// [`super::weighted_values`] on the AVX-512 path, bit for bit. Needs [`in_place`].
pub(crate) fn weighted_values(p: &[&[f32]], value_tiles: &[&[bf16]], bs: usize, out: &mut [f32]) {
    assert!(available());
    super::check_weighted_values(p, value_tiles, bs, out);
    let d = out.len() / p.len();
    let values = avx512::Tiles {
        tiles: value_tiles,
        bs,
        d,
    };
    avx512::weighted_values(p, &values, d, out);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::bf16;

    use super::super::MAX_SCORE_ROWS;
    use super::KEYS;

    /// `R` rows' scores against sixteen keys: per pair of dimensions one 64-byte load of the
    /// keys and, per row, one `vdpbf16ps` with the row's pair broadcast.
    ///
    /// # Safety
    /// AVX-512 F and BF16; `q[r]` (`r < R`) points at `2·pairs` values; the 32 values at
    /// `k + 2·p·bs` exist for every `p < pairs`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn score_keys<const R: usize>(
        q: &[*const bf16; MAX_SCORE_ROWS],
        pairs: usize,
        k: *const bf16,
        bs: usize,
        out: &mut [[f32; KEYS]; MAX_SCORE_ROWS],
    ) {
        let mut acc = [_mm512_setzero_ps(); R];
        for p in 0..pairs {
            // SAFETY: inside the rows and the key tile (contract); unaligned loads.
            unsafe {
                let keys: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(k.add(2 * p * bs).cast()));
                for r in 0..R {
                    let pair = q[r].add(2 * p).cast::<i32>().read_unaligned();
                    let query: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    acc[r] = _mm512_dpbf16_ps(acc[r], query, keys);
                }
            }
        }
        for r in 0..R {
            // SAFETY: `out[r]` holds 16 floats; unaligned store.
            unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]) };
        }
    }
}
