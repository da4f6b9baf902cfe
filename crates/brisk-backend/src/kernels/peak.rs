//! What each kernel path's instructions can do at most on this machine, measured: a loop of
//! independent int8 multiply-adds on registers only (no loads, no scaling), so that the
//! criterion benchmarks can report a kernel as a fraction of its instruction set's peak
//! rather than of a datasheet's number (clocks differ from VM to VM and with the load).
//!
//! - AVX2: `vpmaddubsw` plus the 16-bit add that keeps its result, as the AVX2 kernels use it
//!   (32 multiply-adds per pair).
//! - AVX-VNNI: `vpdpbusd` on 256 bits (32 multiply-adds each).
//! - AVX-512 VNNI: `vpdpbusd` on 512 bits (64 multiply-adds each).
//! - AMX: `tdpbsud` on full 16×64 tiles (16,384 multiply-adds each).

use super::KernelPath;

/// Multiply-adds per second one thread reaches with `path`'s int8 instructions over
/// `iterations` rounds of the loop (a few million take a few milliseconds); `None` where this
/// CPU cannot run the path (or for the scalar path, which has no such instruction).
pub fn peak_macs_per_second(path: KernelPath, iterations: u64) -> Option<f64> {
    if !path.available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let start = std::time::Instant::now();
        // SAFETY: the path's instructions are present (checked above); the loops touch
        // registers only (AMX: its own tile configuration, released afterwards).
        let macs = unsafe {
            match path {
                KernelPath::Scalar => return None,
                KernelPath::Avx2 => x86::avx2(iterations),
                KernelPath::AvxVnni => x86::avx_vnni(iterations),
                KernelPath::Avx512Vnni => x86::avx512_vnni(iterations),
                KernelPath::Amx => x86::amx(iterations),
            }
        };
        Some(macs as f64 / start.elapsed().as_secs_f64())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = iterations;
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// Independent accumulators: enough to cover the instructions' latency on every core
    /// seen (5 cycles × 2 ports).
    const CHAINS: usize = 12;

    /// # Safety
    /// AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2(iterations: u64) -> u64 {
        let a = black_box(_mm256_set1_epi8(3));
        let mut acc = [black_box(_mm256_set1_epi8(-2)); CHAINS];
        for _ in 0..iterations {
            for v in &mut acc {
                // The product depends on the accumulator, so it cannot be hoisted.
                *v = _mm256_add_epi16(*v, _mm256_maddubs_epi16(a, *v));
            }
        }
        black_box(acc);
        iterations * CHAINS as u64 * 32
    }

    /// # Safety
    /// AVX2 and AVX-VNNI.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn avx_vnni(iterations: u64) -> u64 {
        let (a, b) = (
            black_box(_mm256_set1_epi8(3)),
            black_box(_mm256_set1_epi8(-2)),
        );
        let mut acc = [_mm256_setzero_si256(); CHAINS];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = _mm256_dpbusd_avx_epi32(*v, a, b);
            }
        }
        black_box(acc);
        iterations * CHAINS as u64 * 32
    }

    /// # Safety
    /// AVX-512 F and VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn avx512_vnni(iterations: u64) -> u64 {
        let (a, b) = (
            black_box(_mm512_set1_epi8(3)),
            black_box(_mm512_set1_epi8(-2)),
        );
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = _mm512_dpbusd_epi32(*v, a, b);
            }
        }
        black_box(acc);
        iterations * CHAINS as u64 * 64
    }

    /// # Safety
    /// AMX-INT8 usable by this process (see `amx::available`).
    pub(super) unsafe fn amx(iterations: u64) -> u64 {
        use std::arch::asm;
        #[repr(C, align(64))]
        struct Config([u8; 64]);
        let mut config = Config([0; 64]);
        config.0[0] = 1;
        for tile in 0..8 {
            config.0[16 + 2 * tile] = 64;
            config.0[48 + tile] = 16;
        }
        // SAFETY: a valid palette-1 configuration; the loop works on tile registers only.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack));
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "tilezero tmm4",
                "tilezero tmm5",
                "tilezero tmm6",
                "tilezero tmm7",
                options(nostack, nomem)
            );
            for _ in 0..iterations {
                asm!(
                    "tdpbsud tmm0, tmm4, tmm6",
                    "tdpbsud tmm1, tmm4, tmm7",
                    "tdpbsud tmm2, tmm5, tmm6",
                    "tdpbsud tmm3, tmm5, tmm7",
                    options(nostack, nomem)
                );
            }
            asm!("tilerelease", options(nostack, nomem));
        }
        iterations * 4 * 16 * 16 * 64
    }
}
