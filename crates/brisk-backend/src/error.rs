//! Why a model could not be loaded.

use std::path::PathBuf;

/// A model-loading failure, naming the file and, where it applies, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The path does not exist.
    #[error("{path}: no such model file or directory")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The GGUF container is broken (bad magic, version, truncation, unknown tensor type).
    #[error(transparent)]
    Gguf(#[from] brisk_gguf::GgufError),
    /// A safetensors or JSON file could not be read or parsed.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The architecture is not one brisk implements.
    #[error("{path}: unsupported architecture {architecture:?} (supported: llama, qwen2)")]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture named in the file.
        architecture: String,
    },
    /// A required metadata key or config field is missing or has the wrong type.
    #[error("{path}: missing or invalid {key}")]
    MissingMetadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A required tensor is absent.
    #[error("{path}: missing tensor {tensor:?}")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
    },
    /// A tensor's shape disagrees with the model's configuration.
    #[error("{path}: tensor {tensor:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype brisk cannot use where it appears.
    #[error("{path}: tensor {tensor:?} has unsupported type {dtype}")]
    UnsupportedTensorType {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The type found.
        dtype: String,
    },
    /// The configuration is inconsistent (e.g. heads do not divide the hidden size).
    #[error("{path}: invalid model configuration: {message}")]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `BRISK_KERNELS` names no kernel path, or one this CPU cannot run.
    #[error("{0}")]
    Kernels(String),
    /// candle failed while building a tensor.
    #[error("{path}: tensor {tensor:?}: {message}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// candle's message.
        message: String,
    },
}
