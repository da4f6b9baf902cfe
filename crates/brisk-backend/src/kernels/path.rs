//! Which instruction set the matrix kernels run on, chosen once at run time.
//!
//! The machines brisk runs on differ (AVX2-only EPYCs, Zen 4 with AVX-512 VNNI, Sapphire
//! Rapids with AMX), so nothing is fixed at compile time: the best path this CPU has is
//! detected at start, and `BRISK_KERNELS` forces one for tests and benchmarks (`candle`
//! leaves every matrix to candle instead, see `weights`). Each path computes the same exact
//! integer block sums and the same float operations, so results agree bit for bit across
//! paths; the faster paths differ only in how many rows and tokens one instruction covers.

use std::fmt;
use std::sync::OnceLock;

/// An instruction set the quantized matrix kernels can run on, slowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelPath {
    /// Portable Rust; the reference every other path is tested against.
    Scalar,
    /// AVX2 `maddubs` on eight rows per vector (x86-64-v3).
    Avx2,
    /// AVX-VNNI (VEX-encoded, 256-bit) `vpdpbusd` on eight rows per vector.
    AvxVnni,
    /// AVX-512 VNNI `vpdpbusd` on sixteen rows per vector.
    Avx512Vnni,
    /// AMX-INT8 tiles (16 tokens × 16 rows per block) for batches of at least
    /// [`super::amx::MIN_TOKENS`] tokens, AVX-512 VNNI for the rest.
    Amx,
}

impl KernelPath {
    /// Every path, slowest first.
    pub const ALL: [KernelPath; 5] = [
        Self::Scalar,
        Self::Avx2,
        Self::AvxVnni,
        Self::Avx512Vnni,
        Self::Amx,
    ];

    /// The name `BRISK_KERNELS` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::AvxVnni => "avx-vnni",
            Self::Avx512Vnni => "avx512-vnni",
            Self::Amx => "amx",
        }
    }

    /// Whether this CPU (and, for AMX, the OS) can run the path.
    pub fn available(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => super::avx2::available(),
            Self::AvxVnni => super::avx2::vnni_available(),
            Self::Avx512Vnni => super::avx512::available(),
            Self::Amx => super::amx::available(),
        }
    }

    /// The fastest path this machine runs.
    pub fn detected() -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|p| p.available())
            .unwrap_or(Self::Scalar)
    }

    /// Weight rows interleaved per group (one row per vector lane, see `quant_at`).
    pub(crate) fn row_group(self) -> usize {
        match self {
            Self::Scalar | Self::Avx2 | Self::AvxVnni => 8,
            Self::Avx512Vnni | Self::Amx => 16,
        }
    }

    /// The path new matrices use: `BRISK_KERNELS` if it names one this machine runs, else
    /// the detected one (a bad `BRISK_KERNELS` is reported by [`KernelChoice::from_env`] when
    /// the model loads, before any matrix is built).
    pub fn selected() -> Self {
        static SELECTED: OnceLock<KernelPath> = OnceLock::new();
        *SELECTED.get_or_init(|| match KernelChoice::from_env() {
            Ok(KernelChoice::Native(path)) => path,
            _ => Self::detected(),
        })
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `BRISK_KERNELS` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// brisk's kernels on this path.
    Native(KernelPath),
    /// candle's own matrix products (for comparisons).
    Candle,
}

impl KernelChoice {
    /// Parses `BRISK_KERNELS` (unset or empty: the detected path).
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("BRISK_KERNELS") {
            Ok(v) if !v.is_empty() => Self::parse(&v),
            _ => Ok(Self::Native(KernelPath::detected())),
        }
    }

    /// `candle`, `auto` or a path's name that this machine can run.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "candle" => return Ok(Self::Candle),
            "auto" => return Ok(Self::Native(KernelPath::detected())),
            _ => {}
        }
        let names = || {
            KernelPath::ALL
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let path = KernelPath::ALL
            .into_iter()
            .find(|p| p.name() == value)
            .ok_or_else(|| {
                format!(
                    "BRISK_KERNELS={value:?} is not a kernel path (auto, candle, {})",
                    names()
                )
            })?;
        if !path.available() {
            return Err(format!(
                "BRISK_KERNELS={value}: this CPU cannot run it (it runs up to {})",
                KernelPath::detected()
            ));
        }
        Ok(Self::Native(path))
    }
}
