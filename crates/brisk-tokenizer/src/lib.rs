//! Tokenizers for brisk: one [`Tokenizer`] type built from GGUF metadata or from a
//! Hugging Face `tokenizer.json`, streaming detokenization, and chat templates.
//!
//! Both sources end up as a Hugging Face `tokenizers` pipeline, so encoding follows
//! one code path whatever the model was loaded from; for GGUF the pipeline is built
//! from the vocabulary the way llama.cpp interprets it (see `vocab`). The tokenizer
//! is immutable after loading and cheap to clone (the pipeline sits behind an `Arc`),
//! so request handlers and blocking tokenizer workers can each hold a copy.

#![deny(missing_docs)]

mod chat;
mod detok;
mod error;
mod gguf;
mod hf;
pub mod testing;
mod token_bytes;
mod vocab;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

pub use chat::{ChatMessage, ChatTemplate};
pub use detok::IncrementalDecoder;
pub use error::TokenizerError;
pub use token_bytes::SPECIAL_TOKEN_MARKER;

/// Tokens that end generation by their text alone, as llama.cpp's `special_eog_ids`
/// does for files whose metadata names only one of them.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
];

/// What a loader hands over; [`Tokenizer::from_parts`] finishes the job.
pub(crate) struct Parts {
    pub(crate) inner: tokenizers::Tokenizer,
    pub(crate) vocab_size: usize,
    pub(crate) bos_id: Option<u32>,
    pub(crate) add_bos: bool,
    /// Explicit EOS/EOT ids, in order of importance, possibly repeated.
    pub(crate) eos_ids: Vec<u32>,
    pub(crate) chat_template: Option<String>,
}

/// A loaded tokenizer with its special ids and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    vocab_size: usize,
    bos_id: Option<u32>,
    add_bos: bool,
    eos_ids: Vec<u32>,
    /// Added tokens marked special, and the unknown token.
    special_ids: Arc<HashSet<u32>>,
    chat_template: Option<ChatTemplate>,
}

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &brisk_gguf::GgufFile) -> Result<Self, TokenizerError> {
        Self::from_parts(gguf::load(file)?)
    }

    /// Loads `tokenizer.json` from a Hugging Face model directory, with special ids and
    /// the chat template from `tokenizer_config.json`, `generation_config.json` and
    /// `config.json` when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        Self::from_parts(hf::load(dir)?)
    }

    fn from_parts(parts: Parts) -> Result<Self, TokenizerError> {
        let inner = parts.inner;
        let mut eos_ids: Vec<u32> = Vec::new();
        let by_text = END_OF_GENERATION_TEXTS.iter().filter_map(|text| {
            let id = inner.token_to_id(text)?;
            let special = inner
                .get_added_tokens_decoder()
                .get(&id)
                .is_some_and(|t| t.special);
            special.then_some(id)
        });
        for id in parts.eos_ids.into_iter().chain(by_text) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let token_text =
            |id: Option<u32>| id.and_then(|id| inner.id_to_token(id)).unwrap_or_default();
        let chat_template = parts
            .chat_template
            .map(|source| {
                ChatTemplate::new(
                    source,
                    token_text(parts.bos_id),
                    token_text(eos_ids.first().copied()),
                )
            })
            .transpose()?;
        let special_ids = Arc::new(token_bytes::special_ids(&inner));
        Ok(Self {
            inner: Arc::new(inner),
            vocab_size: parts.vocab_size,
            bos_id: parts.bos_id,
            add_bos: parts.add_bos,
            eos_ids,
            special_ids,
            chat_template,
        })
    }

    /// Token ids for `text`. Special tokens written in the text (`<|im_start|>`) are
    /// recognised as such. With `add_bos`, BOS is prepended if the model has one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|source| TokenizerError::Encode { source })?;
        let bos = self.bos_id.filter(|_| add_bos);
        Ok(bos
            .into_iter()
            .chain(encoding.get_ids().iter().copied())
            .collect())
    }

    /// The text of `ids`; with `skip_special`, control tokens are left out.
    /// Ids outside the vocabulary are skipped.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|source| TokenizerError::Decode { source })
    }

    /// Number of token ids (one more than the largest id), including special tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Whether prompts should start with BOS (`tokenizer.ggml.add_bos_token`,
    /// `add_bos_token` in `tokenizer_config.json`, or what the post-processor does).
    pub fn add_bos_by_default(&self) -> bool {
        self.add_bos
    }

    /// Tokens that end generation: EOS first, then EOT/EOM, ids from
    /// `generation_config.json`, and special tokens llama.cpp recognises by their text
    /// (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, ...); no duplicates.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The vocabulary entry for `id` as stored (e.g. `Ġthe` for byte-level BPE,
    /// `▁the` for SentencePiece), not its decoded text.
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The bytes each token id adds to the output, indexed by id, [`Self::vocab_size`]
    /// entries: GPT-2 byte-level pieces mapped back through the byte-to-unicode table,
    /// SentencePiece `<0xNN>` pieces as that byte and `▁` as a space, special tokens as
    /// their text after [`SPECIAL_TOKEN_MARKER`], ids without a piece empty.
    /// This is the vocabulary a byte-level grammar engine (llguidance) needs.
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        token_bytes::token_bytes(&self.inner, &self.special_ids, self.vocab_size)
    }

    /// Whether `id` is a special token (a control token such as `<|im_end|>`, or the
    /// unknown token): one that stands for no text of the output.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// The model's chat template, if it ships one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// A streaming decoder for one generated sequence.
    pub fn decoder(&self, skip_special: bool) -> IncrementalDecoder {
        IncrementalDecoder::new(Arc::clone(&self.inner), skip_special)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_types_are_shareable_across_threads() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Tokenizer>();
        check::<IncrementalDecoder>();
        check::<ChatTemplate>();
    }
}
