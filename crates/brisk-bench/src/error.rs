//! The crate's one error type; variants are named after the phase that failed.

use std::path::PathBuf;

/// Everything that can stop a benchmark before it produces a report.
///
/// Failures of single requests are not errors: they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line value could not be understood.
    #[error("invalid --{flag}: {reason}")]
    Config {
        /// The flag, without dashes.
        flag: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A workload file could not be read.
    #[error("cannot read workload {path}: {source}")]
    WorkloadIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A workload file was read but a line of it did not parse.
    #[error("{path}:{line}: {reason}")]
    WorkloadParse {
        /// The file.
        path: PathBuf,
        /// 1-based line number (0 when the whole file is one JSON document).
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// The local tokenizer could not be loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The HTTP client could not be built or the runtime could not start.
    #[error("client setup: {0}")]
    Setup(String),
    /// The run finished but a check it makes (`--soak`) failed.
    #[error("{0}")]
    Check(String),
    /// The report could not be written.
    #[error("cannot write report {path}: {source}")]
    Output {
        /// The report file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl BenchError {
    pub(crate) fn config(flag: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            flag,
            reason: reason.into(),
        }
    }
}
