//! GGUF files: the metadata, the tensor directory and the raw tensor bytes.
//!
//! brisk parses GGUF itself (rather than through candle's reader) for one reason: errors.
//! A user who points `--model` at a truncated download or a file of the wrong kind must be
//! told which file, which tensor and what was expected versus found, and a corrupt length
//! field must never turn into a huge allocation or a panic. Every read is bounds-checked
//! against the file size. The tensor bytes are handed to candle (`brisk-backend`) unchanged.
//!
//! Format reference: the GGUF specification in the ggml repository (versions 2 and 3; version
//! 1 used 32-bit lengths and is refused). The writer exists so that tests can generate tiny
//! models deterministically.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
#![deny(missing_docs)]

mod dtype;
mod reader;
mod value;
mod writer;

pub use dtype::GgmlDType;
pub use reader::{GgufFile, TensorInfo};
pub use value::MetaValue;
pub use writer::GgufWriter;

use std::path::PathBuf;

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file does not exist or cannot be opened.
    #[error("{path}: cannot open model file: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{path}: not a GGUF file (magic {found:?}, expected \"GGUF\")")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The GGUF version is not 2 or 3.
    #[error("{path}: unsupported GGUF version {found} (supported: 2, 3)")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the header.
        found: u32,
    },
    /// The file ends before a structure or a tensor's data does.
    #[error("{path}: truncated while reading {what}: needs {needed} bytes at offset {offset}, the file has {file_len}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read (a metadata key, a tensor name).
        what: String,
        /// Where the read started.
        offset: u64,
        /// How many bytes it needed.
        needed: u64,
        /// The size of the file.
        file_len: u64,
    },
    /// A tensor has a ggml type brisk does not know.
    #[error("{path}: tensor {tensor:?} has unsupported ggml type {type_id}")]
    UnsupportedTensorType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The ggml type id.
        type_id: u32,
    },
    /// A structural field is impossible (bad value type, non-UTF-8 string, bad dims).
    #[error("{path}: malformed GGUF: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing a file failed.
    #[error("cannot write GGUF: {0}")]
    Write(#[from] std::io::Error),
}
