//! AMX-INT8 kernels (Intel Sapphire Rapids and later), for batches of many tokens.
//!
//! One `tdpbsud` multiplies a tile of sixteen tokens' 32 activations of one block (signed)
//! with the block's weights of sixteen rows (unsigned: Q4_1 nibbles unpacked to bytes, Q8_0
//! biased by 128) into sixteen by sixteen exact 32-bit sums — 8,192 multiply-adds, where
//! AVX-512's `vpdpbusd` does 64. The sixteen-row layout of the AVX-512 kernels *is* AMX's
//! VNNI-packed `B` tile (chunk `k` of a block is `B` row `k`), so both paths share one
//! matrix; AMX takes whole tiles of [`MIN_TOKENS`] tokens and AVX-512 the tokens left over.
//! Each block's sums then get the same float operations as on every other path (scaled per
//! block, so they cannot stay in the tile across blocks), and results agree bit for bit.
//!
//! Rust has no stable AMX intrinsics: the tile instructions are inline assembly, the tile
//! configuration is loaded per thread at the start of a band and released at its end, and
//! the tile data state is requested from Linux once (`arch_prctl(ARCH_REQ_XCOMP_PERM)`).

use std::ops::Range;

use super::{avx512, KernelPath, OutRows, QuantActivations, QuantMatrix, TILE};

/// Tokens per AMX tile; batches with fewer take the AVX-512 kernels.
pub(crate) const MIN_TOKENS: usize = 16;

/// Whether this CPU has AMX-INT8 and AVX-512 VNNI and the OS lets this process use the
/// tile registers (checked, and permission requested, once).
pub(super) fn available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| avx512::available() && x86::enable_amx())
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// Weight rows `rows` (either format) against every token of `x`: whole tiles of
/// [`MIN_TOKENS`] tokens on AMX, the rest on AVX-512.
pub(super) fn band(w: &QuantMatrix, rows: Range<usize>, x: &QuantActivations, out: &OutRows<'_>) {
    w.check_band(KernelPath::Amx, &rows, x);
    let amx_tiles = x.tokens / MIN_TOKENS;
    if amx_tiles > 0 {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            assert!(available());
            // SAFETY: AMX-INT8 is usable and AVX-512 present (checked above); every array has
            // the size the kernel indexes with (`check_band`) and `amx_tiles` whole tiles of
            // tokens exist; this call owns output rows `rows`.
            unsafe { x86::band(w, rows.clone(), x, amx_tiles, out) }
        }
    }
    let first = amx_tiles * MIN_TOKENS / TILE;
    avx512::band_tiles(w, rows, x, first..x.tokens.div_ceil(TILE), out);
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::avx512::x86::{scale_block, ROW_GROUP};
    use super::super::{grouped_index, KernelFormat, OutRows, QuantActivations, QuantMatrix, TILE};
    use super::MIN_TOKENS;

    /// Checks CPUID and XCR0 for AMX-TILE and AMX-INT8 and asks Linux for the tile data
    /// state; `false` if any of it is missing or refused.
    pub(super) fn enable_amx() -> bool {
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
        if !(tile && int8 && osxsave) {
            return false;
        }
        let xcr0: u64;
        // SAFETY: XGETBV with ECX = 0 reads XCR0; OSXSAVE (checked above) makes it legal.
        unsafe {
            let (lo, hi): (u32, u32);
            asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack));
            xcr0 = u64::from(lo) | (u64::from(hi) << 32);
        }
        // XTILECFG (17) and XTILEDATA (18) enabled by the OS.
        if xcr0 & (0b11 << 17) != 0b11 << 17 {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) only changes which XSAVE features this
        // process may use; it reads and writes no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }

    /// The tile configuration (palette 1), twice (`tmm0..3` and `tmm3..6`, used by
    /// alternate blocks): the 16×16 sums, sixteen tokens' 32 activations of one block, one
    /// block of sixteen rows in 8 VNNI rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    impl TileConfig {
        fn new() -> Self {
            let mut c = [0u8; 64];
            c[0] = 1; // palette
            let mut tile = |i: usize, rows: u8, bytes: u16| {
                c[16 + 2 * i..18 + 2 * i].copy_from_slice(&bytes.to_le_bytes());
                c[48 + i] = rows;
            };
            for slot in [0, 3] {
                tile(slot, 16, 64);
                tile(slot + 1, 16, 32);
                tile(slot + 2, 8, 64);
            }
            Self(c)
        }
    }

    /// Weight rows `rows` against the first `tiles × MIN_TOKENS` tokens of `x`.
    ///
    /// # Safety
    /// AMX-INT8 usable and AVX-512 F/BW/VNNI present; the layout checks of `check_band` hold
    /// for a sixteen-row layout; `x` holds at least `tiles × MIN_TOKENS` tokens; the caller
    /// owns output rows `rows`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub(super) unsafe fn band(
        w: &QuantMatrix,
        rows: Range<usize>,
        x: &QuantActivations,
        tiles: usize,
        out: &OutRows<'_>,
    ) {
        let config = TileConfig::new();
        // SAFETY: a valid palette-1 configuration, 64 bytes, aligned.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack)) };
        let nb = x.blocks;
        let row_quants = nb * w.format.quant_bytes();
        // One tile of tokens reads a Q4_1 group's weights once: unpacking its nibbles here
        // (into L1) is cheaper than reading twice the bytes unpacked at load, which pays
        // from two tiles on.
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut scratch = SCRATCH.take();
        scratch.clear();
        if w.format == KernelFormat::Q4_1 && tiles == 1 {
            scratch.resize(nb * 512, 0);
        }
        for g in rows.clone().step_by(ROW_GROUP) {
            let at = grouped_index(ROW_GROUP, nb, g, 0);
            // SAFETY: group `g` (padded rows included) exists in every array (caller
            // contract): `nb` blocks of 512 bytes from `g × 32 × nb` in the unpacked Q4_1
            // bytes, of 256 from `g × row_quants` in the Q4_1 quants, of 512 from there in
            // the Q8_0 quants; `scratch`, where used, holds `nb` blocks of 512 bytes.
            let weights = unsafe {
                let quants = w.quants.as_ptr().add(g * row_quants);
                match w.format {
                    KernelFormat::Q8_0 => quants,
                    KernelFormat::Q4_1 if scratch.is_empty() => {
                        w.tile_bytes.as_ptr().add(g * nb * 32)
                    }
                    KernelFormat::Q4_1 => {
                        for b in 0..nb {
                            unpack_q4_1(quants.add(b * 256), scratch.as_mut_ptr().add(b * 512));
                        }
                        scratch.as_ptr()
                    }
                }
            };
            for tile in 0..tiles {
                let t0 = tile * MIN_TOKENS;
                // SAFETY: `weights` holds the group's `nb` blocks of 8 × 64 bytes, `w.d` (and,
                // Q4_1, `w.m`) its grouped scales (minima); tokens `t0..t0 + 16` exist.
                let q4_1 = w.format == KernelFormat::Q4_1;
                let sums = unsafe {
                    (if q4_1 { group::<true> } else { group::<false> })(
                        nb,
                        weights,
                        w.d.as_ptr().add(at),
                        w.m.as_ptr().wrapping_add(at),
                        x,
                        t0,
                    )
                };
                let width = ROW_GROUP.min(rows.end - g);
                for (t, lanes) in sums.iter().enumerate() {
                    // SAFETY: the caller owns the band's rows, `g..g + width` among them.
                    unsafe { out.write_run(t0 + t, g, &lanes[..width]) };
                }
            }
        }
        SCRATCH.set(scratch);
        // SAFETY: ends this thread's tile use (no operands).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// One row group (sixteen rows) against tokens `t0..t0 + 16`: per block one tile product,
    /// its sums stored and scaled as every path scales them. Two sets of tiles alternate
    /// between blocks and block `b + 1`'s product is issued before block `b`'s sums are
    /// scaled, so the tile unit and the vector units overlap.
    ///
    /// # Safety
    /// The tile configuration of [`band`] is loaded; AVX-512; `wq` points at the group's `nb`
    /// `B` tiles (8 rows of 64 bytes each), `wd` (and, Q4_1, `wm`) at its grouped scales
    /// (minima); `x` holds tokens `t0..t0 + 16`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    unsafe fn group<const Q4_1: bool>(
        nb: usize,
        wq: *const u8,
        wd: *const f32,
        wm: *const f32,
        x: &QuantActivations,
        t0: usize,
    ) -> [[f32; ROW_GROUP]; MIN_TOKENS] {
        let mut acc = [_mm512_setzero_ps(); MIN_TOKENS];
        let mut sums = Aligned([[0i32; 256]; 2]);
        let x_stride = nb * 32;
        // The two 8-token tiles' per-block scales, sums and biases (`[b * TILE + t % TILE]`).
        let tiled = |v: &[f32], half: usize| v[(t0 / TILE + half) * nb * TILE..].as_ptr();
        let (d, s) = (
            [0, 1].map(|h| tiled(&x.d_tiled, h)),
            [0, 1].map(|h| tiled(&x.s_tiled, h)),
        );
        let bias = [0, 1].map(|h| x.bias_tiled[(t0 / TILE + h) * nb * TILE..].as_ptr());
        let xq = x.q[t0 * x_stride..].as_ptr();
        // SAFETY (for `multiply`): block `b < nb` of the group and of tokens `t0..t0 + 16` is
        // in bounds (caller contract); the tile loads read 16 rows of 32 activation bytes
        // `x_stride` apart and 8 rows of 64 weight bytes.
        let multiply = |b: usize, slot: usize| unsafe {
            let (a, weights) = (xq.add(b * 32), wq.add(b * 512));
            if slot == 0 {
                asm!(
                    "tilezero tmm0",
                    "tileloadd tmm1, [{a} + {xs}*1]",
                    "tileloadd tmm2, [{w} + {ws}*1]",
                    "tdpbsud tmm0, tmm1, tmm2",
                    a = in(reg) a, xs = in(reg) x_stride, w = in(reg) weights,
                    ws = in(reg) 64usize, options(nostack, readonly),
                );
            } else {
                asm!(
                    "tilezero tmm3",
                    "tileloadd tmm4, [{a} + {xs}*1]",
                    "tileloadd tmm5, [{w} + {ws}*1]",
                    "tdpbsud tmm3, tmm4, tmm5",
                    a = in(reg) a, xs = in(reg) x_stride, w = in(reg) weights,
                    ws = in(reg) 64usize, options(nostack, readonly),
                );
            }
        };
        // SAFETY (for `store`): writes 16 rows of 64 bytes into `sums`.
        let store = |sums: &mut [i32; 256], slot: usize| unsafe {
            if slot == 0 {
                asm!("tilestored [{out} + {s}*1], tmm0", out = in(reg) sums.as_mut_ptr(),
                    s = in(reg) 64usize, options(nostack));
            } else {
                asm!("tilestored [{out} + {s}*1], tmm3", out = in(reg) sums.as_mut_ptr(),
                    s = in(reg) 64usize, options(nostack));
            }
        };
        // Block `b + 1`'s product runs on the tile unit while block `b`'s sums are scaled;
        // its sums are stored only at the next iteration, when the product is done.
        multiply(0, 0);
        for b in 0..nb {
            let slot = b % 2;
            store(&mut sums.0[slot], slot);
            if b + 1 < nb {
                multiply(b + 1, 1 - slot);
            }
            // SAFETY: the group's scales (minima) for block `b` and the tiles' per-block
            // values are in bounds (caller contract); `sums[slot]` holds 16 rows of 16 sums.
            unsafe {
                let dw = _mm512_loadu_ps(wd.add(b * ROW_GROUP));
                let mw = if Q4_1 {
                    _mm512_loadu_ps(wm.add(b * ROW_GROUP))
                } else {
                    _mm512_setzero_ps()
                };
                let sums = sums.0[slot].as_ptr();
                // Unrolled, so that the sixteen accumulators stay in registers.
                macro_rules! token {
                    ($t:literal) => {{
                        let (h, i) = ($t / TILE, b * TILE + $t % TILE);
                        let mut isum = _mm512_load_si512(sums.add($t * 16).cast());
                        if !Q4_1 {
                            isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(*bias[h].add(i)));
                        }
                        let a = scale_block(acc[$t], _mm512_cvtepi32_ps(isum), dw, *d[h].add(i));
                        acc[$t] = if Q4_1 {
                            _mm512_fmadd_ps(mw, _mm512_set1_ps(*s[h].add(i)), a)
                        } else {
                            a
                        };
                    }};
                }
                token!(0);
                token!(1);
                token!(2);
                token!(3);
                token!(4);
                token!(5);
                token!(6);
                token!(7);
                token!(8);
                token!(9);
                token!(10);
                token!(11);
                token!(12);
                token!(13);
                token!(14);
                token!(15);
            }
        }
        let mut out = [[0.0f32; ROW_GROUP]; MIN_TOKENS];
        for (o, a) in out.iter_mut().zip(acc) {
            // SAFETY: `o` holds 16 floats; unaligned store.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
        }
        out
    }

    /// A 64-byte aligned buffer (tile loads and stores, aligned vector loads).
    #[repr(C, align(64))]
    struct Aligned<T>(T);

    /// One Q4_1 block of sixteen interleaved rows (4 chunks of 64 bytes) as AMX's `B` tile:
    /// row `2k` the low nibbles of chunk `k` (elements `8k..8k + 4` of each row), row `2k + 1`
    /// its high nibbles (elements `8k + 4..8k + 8`).
    ///
    /// # Safety
    /// AVX-512 F/BW; `wq` points at 256 readable bytes, `out` at 512 writable ones.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn unpack_q4_1(wq: *const u8, out: *mut u8) {
        let low = _mm512_set1_epi8(0x0F);
        for k in 0..4 {
            // SAFETY: chunk `k` is readable (caller contract); rows `2k`, `2k + 1` of `out`
            // are in bounds; unaligned accesses.
            unsafe {
                let v = _mm512_loadu_si512(wq.add(k * 64).cast());
                let o = out.add(k * 128);
                _mm512_storeu_si512(o.cast(), _mm512_and_si512(v, low));
                _mm512_storeu_si512(
                    o.add(64).cast(),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(v), low),
                );
            }
        }
    }
}
