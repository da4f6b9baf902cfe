//! Streaming detokenization.
//!
//! Decoding one token at a time is wrong for two reasons: a byte-level or byte-fallback
//! token can end in the middle of a UTF-8 character, and decoders such as
//! SentencePiece's strip or merge text across token boundaries. So, like vLLM's
//! `detokenize_incrementally` and TGI's `decode_token`, the decoder keeps two offsets
//! into the ids it has seen: text up to `read_offset` has been returned, and decoding
//! restarts from `prefix_offset`, a few tokens earlier, so that the window's decoding
//! matches the one-shot decoding. New text is released only when the window decodes
//! to more than the already-returned prefix and does not end in U+FFFD (an incomplete
//! character, held back until the next token completes it, or until `finish`).

use std::sync::Arc;

use crate::TokenizerError;

/// Turns a stream of token ids into a stream of text pieces; see the module docs.
#[derive(Clone)]
pub struct IncrementalDecoder {
    tokenizer: Arc<tokenizers::Tokenizer>,
    skip_special: bool,
    /// Ids from `prefix_offset` on; earlier ids are dropped, they never matter again.
    ids: Vec<u32>,
    /// Ids `..read_offset` (relative to `ids`) have been returned as text.
    read_offset: usize,
}

impl IncrementalDecoder {
    pub(crate) fn new(tokenizer: Arc<tokenizers::Tokenizer>, skip_special: bool) -> Self {
        Self {
            tokenizer,
            skip_special,
            ids: Vec::new(),
            read_offset: 0,
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, self.skip_special)
            .map_err(|source| TokenizerError::Decode { source })
    }

    /// Adds one token; returns the text it completes (often empty, never half a character).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let prefix = self.decode(&self.ids[..self.read_offset])?;
        let full = self.decode(&self.ids)?;
        if full.len() <= prefix.len() || full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        // The window's text normally extends the prefix; if a decoder rewrote earlier
        // text, nothing is cut mid-character: the window is restarted below either way.
        let Some(new) = full.get(prefix.len()..) else {
            return Ok(String::new());
        };
        let new = new.to_string();
        // The next window starts at the tokens just returned.
        self.ids.drain(..self.read_offset);
        self.read_offset = self.ids.len();
        Ok(new)
    }

    /// Returns whatever is still held back (an incomplete character decodes as U+FFFD)
    /// and resets the decoder.
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        let prefix = self.decode(&self.ids[..self.read_offset])?;
        let full = self.decode(&self.ids)?;
        self.ids.clear();
        self.read_offset = 0;
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }
}
