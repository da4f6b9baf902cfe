//! AVX-512 VNNI kernels (x86-64 with AVX-512 F, BW and VNNI, detected at run time).
//!
//! Same algorithm as the AVX2 kernels, twice as wide and with one instruction where AVX2
//! needs three: rows are interleaved per sixteen, so a 64-byte chunk holds four consecutive
//! weights of each of sixteen rows, and `vpdpbusd` multiplies those (unsigned) bytes with a
//! token's four matching (signed) activations broadcast to every row and adds each row's four
//! products into its 32-bit lane — no 16-bit intermediate, no widening. Q4_1 nibbles are
//! unsigned as they are; Q8_0 weights are stored biased by 128 (see `q8_bias`) and each
//! block's sum drops `128·Σq_x` again, so the integer sums are exactly AVX2's and the float
//! operations after them the same: results agree bit for bit with every other path.

use std::ops::Range;

use super::{KernelPath, OutRows, QuantActivations, QuantMatrix, KEY_LANES, MAX_SCORE_ROWS, TILE};

/// Whether this CPU can run the AVX-512 VNNI kernels (checked once).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Weight rows `rows` (either format) against every token of `x`.
pub(super) fn band(w: &QuantMatrix, rows: Range<usize>, x: &QuantActivations, out: &OutRows<'_>) {
    w.check_band(KernelPath::Avx512Vnni, &rows, x);
    band_tiles(w, rows, x, 0..x.tokens.div_ceil(TILE), out);
}

/// Weight rows `rows` against the tokens of tiles `tiles` (of [`TILE`]) only; the AMX path
/// leaves the tokens that do not fill its tiles to this. `check_band` must have passed for
/// a matrix laid out for sixteen rows.
pub(super) fn band_tiles(
    w: &QuantMatrix,
    rows: Range<usize>,
    x: &QuantActivations,
    tiles: Range<usize>,
    out: &OutRows<'_>,
) {
    assert_eq!(w.group(), x86::ROW_GROUP, "sixteen-row layout");
    assert!(tiles.end <= x.tokens.div_ceil(TILE), "token tiles");
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        // SAFETY: AVX-512 F/BW/VNNI and FMA are present (checked above), every array has the
        // size the kernel indexes with (`check_band`, by the caller) and the tiles exist
        // (checked above); this call owns output rows `rows`.
        unsafe { x86::band(w, rows, x, tiles, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = out;
        unreachable!("AVX-512 kernels are only selected on x86_64")
    }
}

/// Output dimensions the weighted-sum kernel keeps in registers per pass (four vectors).
pub(super) const VALUE_CHUNK: usize = 64;

/// See [`super::score_keys`] (which checks the sizes): sixteen keys per vector, one fused
/// multiply-add per row and dimension.
pub(super) fn score_keys(
    rows: &[&[f32]],
    kt: &[f32],
    bs: usize,
    slot: usize,
    out: &mut [[f32; 2 * KEY_LANES]; MAX_SCORE_ROWS],
) {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        let d = rows[0].len();
        assert!(rows.iter().all(|r| r.len() == d) && rows.len() <= MAX_SCORE_ROWS);
        assert!(slot + 2 * KEY_LANES <= bs && kt.len() >= d * bs);
        let q: [*const f32; MAX_SCORE_ROWS] =
            std::array::from_fn(|r| rows.get(r).map_or(std::ptr::null(), |x| x.as_ptr()));
        let k = kt.as_ptr().wrapping_add(slot);
        // SAFETY: AVX-512 present; each of the `rows.len()` row pointers has `d` floats; the
        // key tile holds `d` rows of `bs` floats and `slot + 16 <= bs` (checked above).
        unsafe {
            by_rows!(rows.len(), x86::score_keys, &q, d, k, bs, out);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, kt, bs, slot, out);
        unreachable!("AVX-512 kernels are only selected on x86_64")
    }
}

/// Cached values as the weighted-sum kernel reads them: block tiles of `bs` slots × `d`
/// values (`[slot][dim]`), value `j` in slot `j % bs` of tile `j / bs`, widened to f32
/// exactly as `KvBuffer::tiles` converts them — so the sums are the same operations whatever
/// the cache's element type. The caller checks the sizes (`check_weighted_values`).
pub(super) trait ValueRows {
    /// Dimensions `c..c + 64` of value `j`, as four vectors of f32.
    ///
    /// # Safety
    /// AVX-512 F; value `j` exists and has at least `c + 64` dimensions.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load64(&self, j: usize, c: usize) -> [std::arch::x86_64::__m512; 4];
}

/// Value tiles of f32 or bf16 (bf16 is the upper half of the f32 it stands for).
pub(super) struct Tiles<'a, V> {
    pub(super) tiles: &'a [&'a [V]],
    pub(super) bs: usize,
    pub(super) d: usize,
}

impl<V> Tiles<'_, V> {
    /// Where value `j`'s dimension `c` lies.
    #[cfg(target_arch = "x86_64")]
    fn at(&self, j: usize, c: usize) -> *const V {
        self.tiles[j / self.bs][(j % self.bs) * self.d + c..].as_ptr()
    }
}

impl ValueRows for Tiles<'_, f32> {
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load64(&self, j: usize, c: usize) -> [std::arch::x86_64::__m512; 4] {
        let v = self.at(j, c);
        // SAFETY: 64 floats from `v` (contract); unaligned.
        [0, 1, 2, 3].map(|q| unsafe { std::arch::x86_64::_mm512_loadu_ps(v.add(16 * q)) })
    }
}

impl ValueRows for Tiles<'_, half::bf16> {
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load64(&self, j: usize, c: usize) -> [std::arch::x86_64::__m512; 4] {
        use std::arch::x86_64::*;
        let v = self.at(j, c);
        // SAFETY: 64 bf16 from `v` (contract); unaligned 32-byte loads.
        [0, 1, 2, 3].map(|q| unsafe {
            let halves = _mm512_cvtepu16_epi32(_mm256_loadu_si256(v.add(16 * q).cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(halves))
        })
    }
}

/// Value tiles of an int8 cache: signed bytes, one scale per slot (`q · scale`).
pub(super) struct Int8Tiles<'a> {
    pub(super) tiles: &'a [crate::kv_pool::Int8Tile<'a>],
    pub(super) bs: usize,
    pub(super) d: usize,
}

impl ValueRows for Int8Tiles<'_> {
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load64(&self, j: usize, c: usize) -> [std::arch::x86_64::__m512; 4] {
        use std::arch::x86_64::*;
        let (tile, slot) = (j / self.bs, j % self.bs);
        let tile = &self.tiles[tile];
        let v = tile.quants[slot * self.d + c..].as_ptr();
        let scale = _mm512_set1_ps(tile.scales[slot]);
        // SAFETY: 64 bytes from `v` (contract); unaligned 16-byte loads.
        [0, 1, 2, 3].map(|q| unsafe {
            let bytes = _mm512_cvtepi8_epi32(_mm_loadu_si128(v.add(16 * q).cast()));
            _mm512_mul_ps(_mm512_cvtepi32_ps(bytes), scale)
        })
    }
}

/// See [`super::weighted_values`] (the caller checks the sizes with
/// `check_weighted_values`); `d` a multiple of [`VALUE_CHUNK`].
pub(super) fn weighted_values(p: &[&[f32]], values: &impl ValueRows, d: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        assert!(d.is_multiple_of(VALUE_CHUNK) && p.len() <= MAX_SCORE_ROWS);
        assert_eq!(out.len(), p.len() * d);
        let rows: [&[f32]; MAX_SCORE_ROWS] =
            std::array::from_fn(|r| p.get(r).map_or(&[][..], |x| x));
        // SAFETY: AVX-512 present; every row's probabilities index only values that exist
        // (checked by the caller) and `out` holds `rows × d` floats.
        unsafe {
            by_rows!(
                p.len(),
                x86::weighted_values,
                &rows,
                values,
                d,
                out.as_mut_ptr()
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, values, d, out);
        unreachable!("AVX-512 kernels are only selected on x86_64")
    }
}

/// See [`super::exp_shifted_in_place`].
pub(super) fn exp_shifted_in_place(row: &mut [f32], max: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        let (body, tail) = row.split_at_mut(row.len() / 16 * 16);
        for chunk in body.chunks_exact_mut(16) {
            // SAFETY: AVX-512 present (checked above); `chunk` holds 16 floats.
            unsafe { x86::exp_shifted(chunk.as_mut_ptr(), max) };
        }
        for s in tail {
            *s = crate::math::exp(*s - max);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (row, max);
        unreachable!("AVX-512 kernels are only selected on x86_64")
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // index loops mirror the lane arithmetic
pub(super) mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::{
        grouped_index, KernelFormat, OutRows, QuantActivations, QuantMatrix, Tile, KEY_LANES,
        MAX_SCORE_ROWS, TILE,
    };
    use super::ValueRows;

    /// Rows per row group: sixteen, one per 32-bit lane of a 512-bit vector.
    pub(in super::super) const ROW_GROUP: usize = 16;

    /// Weight rows `rows` against the tokens of tiles `tiles`: each row group against each
    /// tile.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI and FMA; the layout checks of `check_band` hold for a sixteen-row
    /// layout; the tiles exist; the caller owns output rows `rows`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub(super) unsafe fn band(
        w: &QuantMatrix,
        rows: Range<usize>,
        x: &QuantActivations,
        tiles: Range<usize>,
        out: &OutRows<'_>,
    ) {
        band_loop!(ROW_GROUP, group_q4_1, group_q8_0, w, rows, x, tiles, out);
    }

    /// One Q4_1 row group (sixteen rows, one per lane) against the first `T` tokens of a
    /// tile; returns each token's sixteen row sums (zeros past `T`).
    ///
    /// Per block, each 64-byte chunk is loaded and split into nibbles once for the `T`
    /// tokens; low and high nibbles each feed one `vpdpbusd` per token, into separate
    /// accumulators (two short dependency chains instead of one long one). The float work
    /// per block and token is the scalar reference's: `acc += (d_w·d_x)·Σ`, `acc += m·(d_x·Σq_x)`.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI and FMA; `wq` points at the group's `nb × 256` interleaved bytes, `wd`
    /// and `wm` at its `nb × 16` grouped scales and minima; the tile holds at least `T` tokens
    /// of `nb` blocks.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub(in super::super) unsafe fn group_q4_1<const T: usize>(
        nb: usize,
        wq: *const u8,
        wd: *const f32,
        wm: *const f32,
        x: Tile,
    ) -> [[f32; ROW_GROUP]; TILE] {
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..nb {
            let mut lo_sum = [_mm512_setzero_si512(); T];
            let mut hi_sum = [_mm512_setzero_si512(); T];
            for k in 0..4 {
                // SAFETY: chunk `k` of block `b` of the group and the tokens' activation
                // blocks are in bounds (caller contract); loads are unaligned.
                unsafe {
                    let v = _mm512_loadu_si512(wq.add((b * 4 + k) * 64).cast());
                    let lo = _mm512_and_si512(v, low);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                    for t in 0..T {
                        let xq = x.q.add((t * nb + b) * 32 + 8 * k);
                        let xa = _mm512_set1_epi32(xq.cast::<i32>().read_unaligned());
                        let xb = _mm512_set1_epi32(xq.add(4).cast::<i32>().read_unaligned());
                        lo_sum[t] = _mm512_dpbusd_epi32(lo_sum[t], lo, xa);
                        hi_sum[t] = _mm512_dpbusd_epi32(hi_sum[t], hi, xb);
                    }
                }
            }
            // SAFETY: the group's scales and minima for block `b`, and the tile's per-block
            // scales, are in bounds (caller contract); loads are unaligned.
            unsafe {
                let dw = _mm512_loadu_ps(wd.add(b * ROW_GROUP));
                let mw = _mm512_loadu_ps(wm.add(b * ROW_GROUP));
                for t in 0..T {
                    let i = b * TILE + t;
                    let sums = _mm512_cvtepi32_ps(_mm512_add_epi32(lo_sum[t], hi_sum[t]));
                    acc[t] = scale_block(acc[t], sums, dw, *x.d.add(i));
                    acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*x.s.add(i)), acc[t]);
                }
            }
        }
        store(&acc)
    }

    /// [`group_q4_1`] for Q8_0 rows: chunk `k` of a block holds elements `4k..4k + 4` of each
    /// of the sixteen rows, biased by 128; each block's sum drops `128·Σq_x` (exact).
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI and FMA; `wq` points at the group's `nb × 512` interleaved bytes,
    /// `wd` at its `nb × 16` grouped scales; the tile holds at least `T` tokens of `nb` blocks.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub(in super::super) unsafe fn group_q8_0<const T: usize>(
        nb: usize,
        wq: *const u8,
        wd: *const f32,
        x: Tile,
    ) -> [[f32; ROW_GROUP]; TILE] {
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..nb {
            let mut even = [_mm512_setzero_si512(); T];
            let mut odd = [_mm512_setzero_si512(); T];
            for k in (0..8).step_by(2) {
                // SAFETY: chunks `k`, `k + 1` of block `b` of the group and the tokens'
                // activation blocks are in bounds (caller contract); loads are unaligned.
                unsafe {
                    let w0 = _mm512_loadu_si512(wq.add((b * 8 + k) * 64).cast());
                    let w1 = _mm512_loadu_si512(wq.add((b * 8 + k + 1) * 64).cast());
                    for t in 0..T {
                        let xq = x.q.add((t * nb + b) * 32 + 4 * k);
                        let x0 = _mm512_set1_epi32(xq.cast::<i32>().read_unaligned());
                        let x1 = _mm512_set1_epi32(xq.add(4).cast::<i32>().read_unaligned());
                        even[t] = _mm512_dpbusd_epi32(even[t], w0, x0);
                        odd[t] = _mm512_dpbusd_epi32(odd[t], w1, x1);
                    }
                }
            }
            // SAFETY: the group's scales for block `b` and the tile's per-block scales and
            // biases are in bounds (caller contract); loads are unaligned.
            unsafe {
                let dw = _mm512_loadu_ps(wd.add(b * ROW_GROUP));
                for t in 0..T {
                    let i = b * TILE + t;
                    let isum = _mm512_sub_epi32(
                        _mm512_add_epi32(even[t], odd[t]),
                        _mm512_set1_epi32(*x.bias.add(i)),
                    );
                    acc[t] = scale_block(acc[t], _mm512_cvtepi32_ps(isum), dw, *x.d.add(i));
                }
            }
        }
        store(&acc)
    }

    /// `R` query rows against 16 keys: one accumulator per row, one fused multiply-add per
    /// dimension, dimensions in ascending order (each lane as the AVX2 and scalar kernels).
    ///
    /// # Safety
    /// AVX-512 F; `q[..R]` point at `d` floats each; `k` points at the first key of a tile
    /// whose `d` dimension rows are `bs` floats apart, with 16 keys readable in each.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) unsafe fn score_keys<const R: usize>(
        q: &[*const f32; MAX_SCORE_ROWS],
        d: usize,
        k: *const f32,
        bs: usize,
        out: &mut [[f32; 2 * KEY_LANES]; MAX_SCORE_ROWS],
    ) {
        let mut acc = [_mm512_setzero_ps(); R];
        for dim in 0..d {
            // SAFETY: `dim < d` stays inside the rows and the key tile (contract).
            unsafe {
                let keys = _mm512_loadu_ps(k.add(dim * bs));
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*q[r].add(dim)), keys, acc[r]);
                }
            }
        }
        for r in 0..R {
            // SAFETY: `out[r]` holds 16 floats; unaligned store.
            unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]) };
        }
    }

    /// `R` rows' weighted sums over the values, [`super::VALUE_CHUNK`] dimensions at a time:
    /// every value row is loaded once for all `R` rows; keys every row uses run jointly, then
    /// each row continues alone over the keys only it has (same order per output).
    ///
    /// # Safety
    /// AVX-512 F; `d` is a multiple of 64; each `p[r]` (`r < R`) indexes values that exist
    /// in `values`, each `d` long; `out` holds `R × d` floats.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) unsafe fn weighted_values<const R: usize>(
        p: &[&[f32]; MAX_SCORE_ROWS],
        values: &impl ValueRows,
        d: usize,
        out: *mut f32,
    ) {
        let shared = p[..R].iter().map(|r| r.len()).min().unwrap_or(0);
        let weights: [*const f32; R] = std::array::from_fn(|r| p[r].as_ptr());
        for c in (0..d).step_by(super::VALUE_CHUNK) {
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for j in 0..shared {
                // SAFETY: value `j` exists with `d > c + 63` dimensions (contract).
                unsafe {
                    let v = values.load64(j, c);
                    for r in 0..R {
                        // `j < shared <= p[r].len()`.
                        let w = _mm512_set1_ps(*weights[r].add(j));
                        for q in 0..4 {
                            acc[r][q] = _mm512_fmadd_ps(w, v[q], acc[r][q]);
                        }
                    }
                }
            }
            for r in 0..R {
                for (j, &w) in p[r].iter().enumerate().skip(shared) {
                    // SAFETY: as above.
                    unsafe {
                        let v = values.load64(j, c);
                        let w = _mm512_set1_ps(w);
                        for q in 0..4 {
                            acc[r][q] = _mm512_fmadd_ps(w, v[q], acc[r][q]);
                        }
                    }
                }
                for q in 0..4 {
                    // SAFETY: row `r`, dimensions `c + 16q..c + 16q + 16` lie inside `out`.
                    unsafe { _mm512_storeu_ps(out.add(r * d + c + 16 * q), acc[r][q]) };
                }
            }
        }
    }

    /// Sixteen `exp(x - max)` in place, each lane exactly [`crate::math::exp`]'s operations.
    ///
    /// # Safety
    /// AVX-512 F; `x` points at 16 floats.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) unsafe fn exp_shifted(x: *mut f32, max: f32) {
        // SAFETY: 16 floats at `x` (contract); unaligned.
        let v = unsafe { _mm512_sub_ps(_mm512_loadu_ps(x), _mm512_set1_ps(max)) };
        let c = _mm512_set1_ps;
        let clamped = _mm512_min_ps(_mm512_max_ps(v, c(-87.0)), c(88.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(clamped, c(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fmadd_ps(
            n,
            c(-1.428_606_8e-6),
            _mm512_fmadd_ps(n, c(-0.693_145_75), clamped),
        );
        let mut p = c(1.0 / 720.0);
        for k in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, c(k));
        }
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_castps_si512(
            _mm512_add_ps(n, c(8_388_735.0)),
        )));
        let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(v, c(-87.0));
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(x, _mm512_maskz_mul_ps(keep, p, scale)) };
    }

    /// `acc + (d_w·d_x)·sums`, rounded as the scalar reference rounds it.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    pub(in super::super) fn scale_block(acc: __m512, sums: __m512, dw: __m512, dx: f32) -> __m512 {
        _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(dx)), sums, acc)
    }

    /// The accumulators of `T` tokens as row sums (zeros past `T`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store<const T: usize>(acc: &[__m512; T]) -> [[f32; ROW_GROUP]; TILE] {
        let mut out = [[0.0f32; ROW_GROUP]; TILE];
        for t in 0..T {
            // SAFETY: `out[t]` holds 16 floats; unaligned store.
            unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
        }
        out
    }
}
