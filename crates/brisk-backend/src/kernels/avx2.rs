//! AVX2 dot products (x86-64 with AVX2 and FMA, detected at run time).
#![allow(unsafe_code)]

use super::{QuantActivations, QuantMatrix};

/// Whether this CPU can run the AVX2 kernels (checked once).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Token rows of `x` for tokens `t0..t0 + out.len()` (at most [`TILE`]), block `b0` onward.
const TILE: usize = super::TOKENS_PER_TILE;

pub(super) fn dot_q4_1(
    w: &QuantMatrix,
    row: usize,
    x: &QuantActivations,
    t0: usize,
    out: &mut [f32],
) {
    let nb = w.blocks_per_row();
    let wb = row * nb;
    let quants = &w.quants[wb * 16..(wb + nb) * 16];
    let scales = &w.scales[2 * wb..2 * (wb + nb)];
    let n = out.len();
    assert!((1..=TILE).contains(&n) && (t0 + n) * x.blocks_per_row <= x.d.len());
    assert!(x.blocks_per_row == nb);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        // SAFETY: AVX2 and FMA are present (checked above). The weight slices hold exactly
        // `nb` blocks; the activation rows `t0..t0+n` exist (asserted above) and each holds
        // `nb` blocks, which is all the kernel reads.
        unsafe {
            match n {
                1 => x86::dot_q4_1::<1>(nb, quants, scales, x, t0, out),
                2 => x86::dot_q4_1::<2>(nb, quants, scales, x, t0, out),
                3 => x86::dot_q4_1::<3>(nb, quants, scales, x, t0, out),
                4 => x86::dot_q4_1::<4>(nb, quants, scales, x, t0, out),
                5 => x86::dot_q4_1::<5>(nb, quants, scales, x, t0, out),
                6 => x86::dot_q4_1::<6>(nb, quants, scales, x, t0, out),
                7 => x86::dot_q4_1::<7>(nb, quants, scales, x, t0, out),
                _ => x86::dot_q4_1::<8>(nb, quants, scales, x, t0, out),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (quants, scales);
        unreachable!("AVX2 kernels are only selected on x86_64")
    }
}

pub(super) fn dot_q8_0(
    w: &QuantMatrix,
    row: usize,
    x: &QuantActivations,
    t0: usize,
    out: &mut [f32],
) {
    let nb = w.blocks_per_row();
    let wb = row * nb;
    let quants = &w.quants[wb * 32..(wb + nb) * 32];
    let scales = &w.scales[wb..wb + nb];
    let n = out.len();
    assert!((1..=TILE).contains(&n) && (t0 + n) * x.blocks_per_row <= x.d.len());
    assert!(x.blocks_per_row == nb);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        // SAFETY: as in `dot_q4_1`.
        unsafe {
            match n {
                1 => x86::dot_q8_0::<1>(nb, quants, scales, x, t0, out),
                2 => x86::dot_q8_0::<2>(nb, quants, scales, x, t0, out),
                3 => x86::dot_q8_0::<3>(nb, quants, scales, x, t0, out),
                4 => x86::dot_q8_0::<4>(nb, quants, scales, x, t0, out),
                5 => x86::dot_q8_0::<5>(nb, quants, scales, x, t0, out),
                6 => x86::dot_q8_0::<6>(nb, quants, scales, x, t0, out),
                7 => x86::dot_q8_0::<7>(nb, quants, scales, x, t0, out),
                _ => x86::dot_q8_0::<8>(nb, quants, scales, x, t0, out),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (quants, scales);
        unreachable!("AVX2 kernels are only selected on x86_64")
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // index loops mirror the block arithmetic
mod x86 {
    use std::arch::x86_64::*;

    use super::QuantActivations;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// One weight row against `T` token rows: each weight block is unpacked once and applied
    /// to every token, with one independent accumulator per token.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; `quants` holds `16 * nb` bytes and `scales` `2 * nb` floats;
    /// activation rows `t0..t0 + T` exist with `nb` blocks each; `out` has `T` elements.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_q4_1<const T: usize>(
        nb: usize,
        quants: &[u8],
        scales: &[f32],
        x: &QuantActivations,
        t0: usize,
        out: &mut [f32],
    ) {
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        let mut min_term = [0.0f32; T];
        let xq = x.q.as_ptr();
        for b in 0..nb {
            // SAFETY: block `b < nb` of the weight row lies inside `quants` (caller contract).
            let raw = unsafe { _mm_loadu_si128(quants.as_ptr().add(16 * b).cast()) };
            // Low nibbles are elements 0..16, high nibbles 16..32.
            let q4 = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw), low);
            let (d, m) = (scales[2 * b], scales[2 * b + 1]);
            for t in 0..T {
                let xb = (t0 + t) * nb + b;
                // SAFETY: activation block `xb` exists (caller contract); unaligned load.
                let q8 = unsafe { _mm256_loadu_si256(xq.add(32 * xb).cast()) };
                let products = _mm256_madd_epi16(_mm256_maddubs_epi16(q4, q8), ones);
                let scale = _mm256_set1_ps(d * x.d[xb]);
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(products), acc[t]);
                min_term[t] += m * x.s[xb];
            }
        }
        for t in 0..T {
            out[t] = hsum(acc[t]) + min_term[t];
        }
    }

    /// One Q8_0 weight row against `T` token rows.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; `quants` holds `32 * nb` bytes and `scales` `nb` floats;
    /// activation rows `t0..t0 + T` exist with `nb` blocks each; `out` has `T` elements.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_q8_0<const T: usize>(
        nb: usize,
        quants: &[u8],
        scales: &[f32],
        x: &QuantActivations,
        t0: usize,
        out: &mut [f32],
    ) {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        let xq = x.q.as_ptr();
        for b in 0..nb {
            // SAFETY: block `b < nb` of the weight row lies inside `quants` (caller contract).
            let w = unsafe { _mm256_loadu_si256(quants.as_ptr().add(32 * b).cast()) };
            // maddubs needs an unsigned operand: |w| times x carrying w's sign.
            let w_abs = _mm256_sign_epi8(w, w);
            for t in 0..T {
                let xb = (t0 + t) * nb + b;
                // SAFETY: activation block `xb` exists (caller contract); unaligned load.
                let q8 = unsafe { _mm256_loadu_si256(xq.add(32 * xb).cast()) };
                let products =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(q8, w)), ones);
                let scale = _mm256_set1_ps(scales[b] * x.d[xb]);
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(products), acc[t]);
            }
        }
        for t in 0..T {
            out[t] = hsum(acc[t]);
        }
    }
}
