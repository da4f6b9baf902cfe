//! ggml tensor element types and their block geometry.

/// A ggml tensor type: how elements are packed into blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum GgmlDType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

impl GgmlDType {
    /// The type for a ggml type id, if brisk knows it.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// The ggml type id.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::BF16 => 30,
        }
    }

    /// (elements per block, bytes per block).
    pub fn block_geometry(self) -> (u64, u64) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q8_1 => (32, 36),
            Self::Q2K => (256, 84),
            Self::Q3K => (256, 110),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
            Self::Q8K => (256, 292),
        }
    }

    /// Bytes taken by a row of `n` elements, or `None` if `n` is not a whole number of blocks
    /// or the size does not fit in a `u64` (a corrupt header can claim any length).
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let (elems, bytes) = self.block_geometry();
        if !n.is_multiple_of(elems) {
            return None;
        }
        (n / elems).checked_mul(bytes)
    }
}

#[cfg(feature = "candle")]
impl From<GgmlDType> for candle_core::quantized::GgmlDType {
    fn from(d: GgmlDType) -> Self {
        use candle_core::quantized::GgmlDType as Candle;
        match d {
            GgmlDType::F32 => Candle::F32,
            GgmlDType::F16 => Candle::F16,
            GgmlDType::BF16 => Candle::BF16,
            GgmlDType::Q4_0 => Candle::Q4_0,
            GgmlDType::Q4_1 => Candle::Q4_1,
            GgmlDType::Q5_0 => Candle::Q5_0,
            GgmlDType::Q5_1 => Candle::Q5_1,
            GgmlDType::Q8_0 => Candle::Q8_0,
            GgmlDType::Q8_1 => Candle::Q8_1,
            GgmlDType::Q2K => Candle::Q2K,
            GgmlDType::Q3K => Candle::Q3K,
            GgmlDType::Q4K => Candle::Q4K,
            GgmlDType::Q5K => Candle::Q5K,
            GgmlDType::Q6K => Candle::Q6K,
            GgmlDType::Q8K => Candle::Q8K,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sizes_that_overflow_are_refused() {
        assert_eq!(GgmlDType::F32.row_bytes(8), Some(32));
        assert_eq!(GgmlDType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlDType::Q4_0.row_bytes(33), None);
        // Found by fuzz/fuzz_targets/gguf_parse.rs: this used to panic on overflow.
        assert_eq!(GgmlDType::F32.row_bytes(u64::MAX / 2), None);
    }
}
