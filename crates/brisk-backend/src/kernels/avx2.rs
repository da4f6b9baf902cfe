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

pub(super) fn dot_q4_1(w: &QuantMatrix, row: usize, x: &QuantActivations, t: usize) -> f32 {
    let nb = w.blocks_per_row();
    let (wb, xb) = (row * nb, t * x.blocks_per_row);
    let quants = &w.quants[wb * 16..(wb + nb) * 16];
    let scales = &w.scales[2 * wb..2 * (wb + nb)];
    let xq = &x.q[xb * 32..(xb + nb) * 32];
    let (xd, xs) = (&x.d[xb..xb + nb], &x.s[xb..xb + nb]);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        // SAFETY: AVX2 and FMA are present (checked above); the slices above have exactly
        // `nb` blocks each, which is all the kernel reads.
        unsafe { x86::dot_q4_1(nb, quants, scales, xq, xd, xs) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (quants, scales, xq, xd, xs);
        unreachable!("AVX2 kernels are only selected on x86_64")
    }
}

pub(super) fn dot_q8_0(w: &QuantMatrix, row: usize, x: &QuantActivations, t: usize) -> f32 {
    let nb = w.blocks_per_row();
    let (wb, xb) = (row * nb, t * x.blocks_per_row);
    let quants = &w.quants[wb * 32..(wb + nb) * 32];
    let scales = &w.scales[wb..wb + nb];
    let xq = &x.q[xb * 32..(xb + nb) * 32];
    let xd = &x.d[xb..xb + nb];
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        // SAFETY: as in `dot_q4_1`.
        unsafe { x86::dot_q8_0(nb, quants, scales, xq, xd) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (quants, scales, xq, xd);
        unreachable!("AVX2 kernels are only selected on x86_64")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

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

    /// # Safety
    /// Needs AVX2 and FMA; `quants` holds `16 * nb` bytes, `scales` `2 * nb`, `xq` `32 * nb`,
    /// `xd` and `xs` `nb`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_q4_1(
        nb: usize,
        quants: &[u8],
        scales: &[f32],
        xq: &[i8],
        xd: &[f32],
        xs: &[f32],
    ) -> f32 {
        debug_assert!(quants.len() >= 16 * nb && xq.len() >= 32 * nb && scales.len() >= 2 * nb);
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut min_term = 0.0;
        for b in 0..nb {
            // SAFETY: block `b < nb` lies inside the slices (caller contract); unaligned loads.
            let (raw, x) = unsafe {
                (
                    _mm_loadu_si128(quants.as_ptr().add(16 * b).cast()),
                    _mm256_loadu_si256(xq.as_ptr().add(32 * b).cast()),
                )
            };
            // Low nibbles are elements 0..16, high nibbles 16..32.
            let q4 = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw), low);
            let products = _mm256_madd_epi16(_mm256_maddubs_epi16(q4, x), ones);
            let d = _mm256_set1_ps(scales[2 * b] * xd[b]);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(products), acc);
            min_term += scales[2 * b + 1] * xs[b];
        }
        hsum(acc) + min_term
    }

    /// # Safety
    /// Needs AVX2 and FMA; `quants` and `xq` hold `32 * nb` bytes, `scales` and `xd` `nb`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_q8_0(
        nb: usize,
        quants: &[u8],
        scales: &[f32],
        xq: &[i8],
        xd: &[f32],
    ) -> f32 {
        debug_assert!(quants.len() >= 32 * nb && xq.len() >= 32 * nb);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            // SAFETY: block `b < nb` lies inside the slices (caller contract); unaligned loads.
            let (w, x) = unsafe {
                (
                    _mm256_loadu_si256(quants.as_ptr().add(32 * b).cast()),
                    _mm256_loadu_si256(xq.as_ptr().add(32 * b).cast()),
                )
            };
            // maddubs needs an unsigned operand: |w| times x carrying w's sign.
            let products = _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)),
                ones,
            );
            let d = _mm256_set1_ps(scales[b] * xd[b]);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(products), acc);
        }
        hsum(acc)
    }
}
