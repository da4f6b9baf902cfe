//! Bringing every quantized ggml type to the two layouts the kernels run.
//!
//! Some types are the same numbers in another packing and convert exactly:
//! - Q4_0 (`w = d·(q − 8)`) is Q4_1 with minimum `m = −8d`;
//! - Q4_K's 32-element sub-blocks (`w = d·sc·q − dmin·m`, 4-bit `q`) are Q4_1 blocks with
//!   scale `d·sc` and minimum `−dmin·m` (products exact in f32);
//! - Q5_0 (`w = d·(q − 16)`, 5-bit `q`) is Q8_0 with `q − 16` in a byte.
//!
//! The others (Q5_1, Q2_K, Q3_K, Q5_K, Q6_K, Q8_1, Q8_K) are dequantized and quantized again
//! to Q8_0: eight bits per 32-element block adds an error of at most `max|w|/254` per weight,
//! well under the source format's own rounding, for twice the bytes of a 4-bit type.
//! Dense F32/F16/BF16 matrices are left to candle, which multiplies them exactly.

use brisk_gguf::GgmlDType;
use half::f16;

use super::{KernelFormat, QuantMatrix, RowMajor};

/// How a ggml type reaches a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conversion {
    /// Blocks are taken as they are or repacked without changing a weight.
    Exact,
    /// Dequantized and quantized again to Q8_0.
    Requantize,
    /// Left to candle.
    None,
}

/// What happens to a matrix of type `dtype`.
pub(crate) fn conversion(dtype: GgmlDType) -> Conversion {
    match dtype {
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q8_0 | GgmlDType::Q4K => {
            Conversion::Exact
        }
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => Conversion::None,
        GgmlDType::Q5_1
        | GgmlDType::Q8_1
        | GgmlDType::Q2K
        | GgmlDType::Q3K
        | GgmlDType::Q5K
        | GgmlDType::Q6K
        | GgmlDType::Q8K => Conversion::Requantize,
    }
}

fn half(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

impl QuantMatrix {
    /// A `[rows, cols]` matrix of ggml blocks of an exactly convertible type (see
    /// [`conversion`]); `None` if the type is not one or the shape does not fit.
    pub(crate) fn from_ggml_exact(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        raw: &[u8],
    ) -> Option<Self> {
        let (block_elems, block_bytes) = dtype.block_geometry();
        let size = |n: u64| usize::try_from(n).expect("a block is a few hundred bytes");
        let (block_elems, block_bytes) = (size(block_elems), size(block_bytes));
        if !cols.is_multiple_of(block_elems) || raw.len() != rows * cols / block_elems * block_bytes
        {
            return None;
        }
        match dtype {
            GgmlDType::Q4_1 => Self::from_ggml(KernelFormat::Q4_1, rows, cols, raw),
            GgmlDType::Q8_0 => Self::from_ggml(KernelFormat::Q8_0, rows, cols, raw),
            GgmlDType::Q4_0 => {
                let mut m = RowMajor::with_capacity(KernelFormat::Q4_1, rows, cols);
                for block in raw.chunks_exact(18) {
                    let d = half(block, 0);
                    m.d.push(d);
                    m.m.push(-8.0 * d);
                    m.quants.extend_from_slice(&block[2..18]);
                }
                Some(m.finish(KernelFormat::Q4_1, rows, cols))
            }
            GgmlDType::Q5_0 => {
                let mut m = RowMajor::with_capacity(KernelFormat::Q8_0, rows, cols);
                for block in raw.chunks_exact(22) {
                    m.d.push(half(block, 0));
                    let high = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                    let nibbles = &block[6..22];
                    for j in 0..32 {
                        let low = if j < 16 {
                            nibbles[j] & 0x0F
                        } else {
                            nibbles[j - 16] >> 4
                        };
                        let bit = ((high >> j) & 1) as u8;
                        // 0..=31 minus 16 fits a signed byte; stored as its bit pattern.
                        #[expect(clippy::cast_sign_loss, clippy::cast_possible_wrap)]
                        m.quants.push(((low | (bit << 4)) as i8 - 16) as u8);
                    }
                }
                Some(m.finish(KernelFormat::Q8_0, rows, cols))
            }
            GgmlDType::Q4K => {
                let mut m = RowMajor::with_capacity(KernelFormat::Q4_1, rows, cols);
                for block in raw.chunks_exact(144) {
                    let (d, dmin) = (half(block, 0), half(block, 2));
                    let scales = &block[4..16];
                    let qs = &block[16..144];
                    for sub in 0..8 {
                        let (sc, mn) = q4k_scale_min(scales, sub);
                        m.d.push(d * f32::from(sc));
                        m.m.push(-(dmin * f32::from(mn)));
                        // Sub-blocks 2j and 2j+1 are the low and high nibbles of the same 32
                        // bytes; repack as Q4_1 (element i low, element i + 16 high).
                        let bytes = &qs[32 * (sub / 2)..32 * (sub / 2) + 32];
                        let nibble = |i: usize| {
                            if sub % 2 == 0 {
                                bytes[i] & 0x0F
                            } else {
                                bytes[i] >> 4
                            }
                        };
                        m.quants
                            .extend((0..16).map(|i| nibble(i) | (nibble(i + 16) << 4)));
                    }
                }
                Some(m.finish(KernelFormat::Q4_1, rows, cols))
            }
            _ => None,
        }
    }

    /// Quantizes dense weights (`rows × cols`, row-major; cols a multiple of 32) to Q8_0.
    pub(crate) fn requantize_q8_0(rows: usize, cols: usize, values: &[f32]) -> Option<Self> {
        if !cols.is_multiple_of(32) || values.len() != rows * cols {
            return None;
        }
        let mut m = RowMajor::with_capacity(KernelFormat::Q8_0, rows, cols);
        let mut q = [0i8; 32];
        for block in values.chunks_exact(32) {
            let (d, _) = super::quantize_block(block, &mut q);
            m.d.push(d);
            #[expect(clippy::cast_sign_loss)]
            m.quants.extend(q.iter().map(|&v| v as u8));
        }
        Some(m.finish(KernelFormat::Q8_0, rows, cols))
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K/Q5_K super-block, packed in
/// 12 bytes: the first four of each in the low six bits of bytes 0..4 and 4..8, the last four
/// in the nibbles of bytes 8..12 with their top two bits in the spare bits of bytes 0..8.
fn q4k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType as CandleDType};
    use candle_core::Device;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Random but well-formed blocks: finite f16 scales, any quant bits.
    fn random_blocks(dtype: GgmlDType, blocks: usize, rng: &mut StdRng) -> Vec<u8> {
        let (_, bytes) = dtype.block_geometry();
        let mut raw: Vec<u8> = (0..blocks * usize::try_from(bytes).unwrap())
            .map(|_| rng.random())
            .collect();
        // Overwrite the f16 fields with small finite values.
        let halves: &[usize] = match dtype {
            GgmlDType::Q4_0 | GgmlDType::Q5_0 | GgmlDType::Q8_0 => &[0],
            GgmlDType::Q4_1 | GgmlDType::Q5_1 => &[0, 2],
            GgmlDType::Q4K | GgmlDType::Q5K => &[0, 2],
            GgmlDType::Q6K => &[208],
            _ => &[],
        };
        for block in raw.chunks_exact_mut(usize::try_from(bytes).unwrap()) {
            for &at in halves {
                let v = f16::from_f32(rng.random::<f32>() * 0.02 - 0.01);
                block[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        raw
    }

    fn candle_values(dtype: GgmlDType, rows: usize, cols: usize, raw: &[u8]) -> Vec<f32> {
        let kind = CandleDType::from(dtype);
        let t = qtensor_from_ggml(kind, raw, vec![rows, cols], &Device::Cpu).unwrap();
        t.dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Our matrix's weights, dequantized from its own layout.
    fn our_values(matrix: &QuantMatrix) -> Vec<f32> {
        let m = matrix.row_major();
        let mut out = Vec::with_capacity(matrix.rows * matrix.cols);
        for (b, &d) in m.d.iter().enumerate() {
            match matrix.format {
                KernelFormat::Q4_1 => {
                    let qs = &m.quants[b * 16..b * 16 + 16];
                    let lo = qs.iter().map(|q| f32::from(q & 0x0F).mul_add(d, m.m[b]));
                    let hi = qs.iter().map(|q| f32::from(q >> 4).mul_add(d, m.m[b]));
                    out.extend(lo.chain(hi));
                }
                #[expect(clippy::cast_possible_wrap)]
                KernelFormat::Q8_0 => out.extend(
                    m.quants[b * 32..b * 32 + 32]
                        .iter()
                        .map(|&q| f32::from(q as i8) * d),
                ),
            }
        }
        out
    }

    #[test]
    fn exact_conversions_keep_every_weight() {
        let mut rng = StdRng::seed_from_u64(7);
        let (rows, cols) = (3, 512);
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
        ] {
            assert_eq!(conversion(dtype), Conversion::Exact);
            let (elems, _) = dtype.block_geometry();
            let raw = random_blocks(
                dtype,
                rows * cols / usize::try_from(elems).unwrap(),
                &mut rng,
            );
            let ours = QuantMatrix::from_ggml_exact(dtype, rows, cols, &raw).unwrap();
            let want = candle_values(dtype, rows, cols, &raw);
            let have = our_values(&ours);
            for (i, (a, b)) in want.iter().zip(&have).enumerate() {
                // Same weights; candle may round `d·q + m` differently from our fused form.
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + a.abs()),
                    "{dtype:?} weight {i}: candle {a}, brisk {b}"
                );
            }
        }
    }

    #[test]
    fn requantized_types_stay_within_an_eight_bit_step() {
        let mut rng = StdRng::seed_from_u64(8);
        let (rows, cols) = (2, 512);
        for dtype in [GgmlDType::Q5_1, GgmlDType::Q5K, GgmlDType::Q6K] {
            assert_eq!(conversion(dtype), Conversion::Requantize);
            let (elems, _) = dtype.block_geometry();
            let raw = random_blocks(
                dtype,
                rows * cols / usize::try_from(elems).unwrap(),
                &mut rng,
            );
            let want = candle_values(dtype, rows, cols, &raw);
            let ours = QuantMatrix::requantize_q8_0(rows, cols, &want).unwrap();
            let have = our_values(&ours);
            for (block, (a, b)) in want.chunks_exact(32).zip(have.chunks_exact(32)).enumerate() {
                let amax = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= amax / 254.0 * 1.001 + 1e-9,
                        "{dtype:?} block {block}"
                    );
                }
            }
        }
    }

    #[test]
    fn odd_shapes_are_refused() {
        assert!(QuantMatrix::from_ggml_exact(GgmlDType::Q4K, 2, 128, &[0; 144]).is_none());
        assert!(QuantMatrix::from_ggml_exact(GgmlDType::Q5_0, 1, 32, &[0; 21]).is_none());
        assert!(QuantMatrix::from_ggml_exact(GgmlDType::F32, 1, 32, &[0; 128]).is_none());
        assert!(QuantMatrix::requantize_q8_0(1, 48, &[0.0; 48]).is_none());
    }
}
