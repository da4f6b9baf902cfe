//! The crate's one error type.
//!
//! Variants are named after the phase that failed (loading metadata, building the
//! tokenizer, encoding, rendering a template) and carry the file or key involved, so
//! a message read in a log says what to fix.

use std::path::PathBuf;

/// Everything that can go wrong while loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required GGUF metadata key is absent.
    #[error("GGUF metadata key `{key}` is missing")]
    MissingMetadata {
        /// The missing key.
        key: String,
    },
    /// A metadata key or configuration field has the wrong type or an impossible value.
    #[error("metadata `{key}` is invalid: {reason}")]
    InvalidMetadata {
        /// The offending key (GGUF key or JSON field).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer family this crate cannot build.
    #[error("unsupported tokenizer model `{model}` (supported: gpt2, llama)")]
    UnsupportedTokenizerModel {
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not know.
    #[error(
        "unsupported pre-tokenizer `{pre}` (supported: default, gpt-2, smollm, llama-bpe, llama3, qwen2)"
    )]
    UnsupportedPreTokenizer {
        /// The value of `tokenizer.ggml.pre`.
        pre: String,
    },
    /// The `tokenizers` library refused the vocabulary, merges or a component.
    #[error("building the tokenizer failed ({what}): {source}")]
    Build {
        /// Which part was being built.
        what: String,
        /// The library's error.
        #[source]
        source: tokenizers::Error,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("cannot parse {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// `tokenizer.json` was read but the `tokenizers` library could not load it.
    #[error("cannot load tokenizer {}: {source}", path.display())]
    LoadTokenizerJson {
        /// The file.
        path: PathBuf,
        /// The library's error.
        #[source]
        source: tokenizers::Error,
    },
    /// Encoding text failed.
    #[error("encoding failed: {source}")]
    Encode {
        /// The library's error.
        #[source]
        source: tokenizers::Error,
    },
    /// Decoding ids failed.
    #[error("decoding failed: {source}")]
    Decode {
        /// The library's error.
        #[source]
        source: tokenizers::Error,
    },
    /// The chat template does not compile.
    #[error("chat template has a syntax error: {message}")]
    TemplateSyntax {
        /// The template engine's message, with line information.
        message: String,
    },
    /// Rendering the chat template failed (including `raise_exception` in the template).
    #[error("chat template rendering failed: {message}")]
    TemplateRender {
        /// The template engine's message.
        message: String,
    },
}

impl TokenizerError {
    /// A short stable label for metrics and HTTP error mapping.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::MissingMetadata { .. }
            | Self::InvalidMetadata { .. }
            | Self::UnsupportedTokenizerModel { .. }
            | Self::UnsupportedPreTokenizer { .. }
            | Self::Build { .. }
            | Self::Io { .. }
            | Self::Json { .. }
            | Self::LoadTokenizerJson { .. } => "tokenizer_load",
            Self::Encode { .. } => "tokenizer_encode",
            Self::Decode { .. } => "tokenizer_decode",
            Self::TemplateSyntax { .. } => "chat_template_syntax",
            Self::TemplateRender { .. } => "chat_template_render",
        }
    }
}
