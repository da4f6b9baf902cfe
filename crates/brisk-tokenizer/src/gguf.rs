//! Reading a tokenizer out of GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
//!
//! Key names and defaults follow llama.cpp's `llama-vocab.cpp`: `add_bos_token`
//! defaults to true for SentencePiece (`llama`) vocabularies and false otherwise, and
//! the end-of-generation set is EOS, EOT and EOM.

use brisk_gguf::{GgufFile, MetaValue};

use crate::vocab::{self, TokenType};
use crate::{Parts, TokenizerError};

fn missing(key: &str) -> TokenizerError {
    TokenizerError::MissingMetadata {
        key: key.to_string(),
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::InvalidMetadata {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn required_str<'a>(file: &'a GgufFile, key: &str) -> Result<&'a str, TokenizerError> {
    match file.get(key) {
        None => Err(missing(key)),
        Some(v) => v.as_str().ok_or_else(|| invalid(key, "expected a string")),
    }
}

fn required_str_array<'a>(file: &'a GgufFile, key: &str) -> Result<Vec<&'a str>, TokenizerError> {
    match file.get(key) {
        None => Err(missing(key)),
        Some(_) => file
            .get_str_array(key)
            .ok_or_else(|| invalid(key, "expected an array of strings")),
    }
}

/// An array of numbers of length `len`, each converted by `convert`.
fn numeric_array<T>(
    file: &GgufFile,
    key: &str,
    len: usize,
    convert: impl Fn(&MetaValue) -> Option<T>,
) -> Result<Option<Vec<T>>, TokenizerError> {
    let Some(value) = file.get(key) else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .ok_or_else(|| invalid(key, "expected an array"))?;
    if items.len() != len {
        return Err(invalid(
            key,
            format!("has {} entries but there are {len} tokens", items.len()),
        ));
    }
    items
        .iter()
        .map(|v| convert(v).ok_or_else(|| invalid(key, "expected numbers")))
        .collect::<Result<Vec<T>, _>>()
        .map(Some)
}

/// An optional token id, checked against the vocabulary size.
fn token_id(file: &GgufFile, key: &str, n_tokens: usize) -> Result<Option<u32>, TokenizerError> {
    let Some(value) = file.get(key) else {
        return Ok(None);
    };
    // Some converters write -1 (or u32::MAX) for "none".
    if value.as_i64() == Some(-1) || value.as_u64() == Some(u64::from(u32::MAX)) {
        return Ok(None);
    }
    let id = value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| invalid(key, "expected a token id"))?;
    if id as usize >= n_tokens {
        return Err(invalid(
            key,
            format!("token id {id} is outside the vocabulary of {n_tokens}"),
        ));
    }
    Ok(Some(id))
}

fn optional_bool(file: &GgufFile, key: &str) -> Result<Option<bool>, TokenizerError> {
    file.get(key)
        .map(|v| v.as_bool().ok_or_else(|| invalid(key, "expected a bool")))
        .transpose()
}

/// Everything the tokenizer needs from the file.
pub(crate) fn load(file: &GgufFile) -> Result<Parts, TokenizerError> {
    let model = required_str(file, "tokenizer.ggml.model")?;
    let tokens = required_str_array(file, "tokenizer.ggml.tokens")?;
    let n = tokens.len();
    let types = numeric_array(file, "tokenizer.ggml.token_type", n, |v| {
        v.as_i64().map(TokenType::from_code)
    })?
    .unwrap_or_else(|| vec![TokenType::Normal; n]);

    let (inner, add_bos_default) = match model {
        "gpt2" => {
            let merges = required_str_array(file, "tokenizer.ggml.merges")?;
            let pre = match file.get("tokenizer.ggml.pre") {
                None => "default",
                Some(v) => v
                    .as_str()
                    .ok_or_else(|| invalid("tokenizer.ggml.pre", "expected a string"))?,
            };
            (vocab::byte_level_bpe(&tokens, &types, &merges, pre)?, false)
        }
        "llama" => {
            // scores are stored as f32
            let scores = numeric_array(file, "tokenizer.ggml.scores", n, |v| {
                v.as_f64().map(|s| s as f32)
            })?
            .ok_or_else(|| missing("tokenizer.ggml.scores"))?;
            let unk = token_id(file, "tokenizer.ggml.unknown_token_id", n)?
                .map(|id| tokens[id as usize])
                .or_else(|| tokens.iter().copied().find(|t| *t == "<unk>"));
            let add_space_prefix =
                optional_bool(file, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
            let inner = vocab::sentencepiece_bpe(&tokens, &types, &scores, unk, add_space_prefix)?;
            (inner, true)
        }
        other => {
            return Err(TokenizerError::UnsupportedTokenizerModel {
                model: other.to_string(),
            })
        }
    };

    let bos_id = token_id(file, "tokenizer.ggml.bos_token_id", n)?;
    let add_bos = optional_bool(file, "tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default);
    let mut eos_ids = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        eos_ids.extend(token_id(file, key, n)?);
    }
    let chat_template = match file.get("tokenizer.chat_template") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| invalid("tokenizer.chat_template", "expected a string"))?
                .to_string(),
        ),
    };
    Ok(Parts {
        inner,
        vocab_size: n,
        bos_id,
        add_bos,
        eos_ids,
        chat_template,
    })
}
