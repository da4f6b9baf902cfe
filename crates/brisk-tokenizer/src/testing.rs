//! A tiny deterministic tokenizer for tests, in both GGUF and Hugging Face form.
//!
//! Other crates' tests generate tiny models; they need a tokenizer that is small
//! (so embedding tables stay small) yet real: GPT-2 byte-level BPE with the `smollm`
//! pre-tokenizer, like the reference model. The vocabulary is:
//!
//! - ids `0..256`: one token per byte, **id = byte value** (in GPT-2's byte-to-unicode
//!   form, so `Ġ` = id 32 is the space), so any text encodes;
//! - ids `256..256 + TINY_MERGES.len()`: the merged tokens, in merge order
//!   (`ll`, `ell`, `ello`, `hello` = 259, `he`, `Ġt`, `Ġthe`, ...,
//!   `Ġworld` = 273, ...);
//! - [`TINY_BOS_ID`] `<|im_start|>` and [`TINY_EOS_ID`] `<|im_end|>`, control tokens;
//!
//! [`TINY_VOCAB_SIZE`] tokens in all. BOS is not added by default and the chat
//! template is SmolLM2's ChatML template.

use std::path::Path;

use brisk_gguf::MetaValue;
use serde_json::{json, Map, Value};

pub use crate::token_bytes::byte_to_char;
use crate::{Tokenizer, TokenizerError};

/// The merges, in priority order; each merged token gets the next id after 255.
pub const TINY_MERGES: &[&str] = &[
    "l l", "e ll", "ell o", "h ello", "h e", "Ġ t", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s",
    "e s", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "in g", "Ġ Ġ", "Ċ Ċ", "a t",
];
/// Id of `<|im_start|>`, also the BOS token.
pub const TINY_BOS_ID: u32 = 256 + TINY_MERGES.len() as u32;
/// Id of `<|im_end|>`, the EOS token.
pub const TINY_EOS_ID: u32 = TINY_BOS_ID + 1;
/// Number of tokens: 256 bytes + 22 merges + 2 control tokens = 280.
pub const TINY_VOCAB_SIZE: usize = TINY_EOS_ID as usize + 1;

/// The ChatML template of SmolLM2 (with its default system message).
pub const TINY_CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The tiny vocabulary: `(tokens, merges)`, tokens indexed by id, merges as `"a b"`.
pub fn tiny_byte_level_vocab() -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
    tokens.extend(TINY_MERGES.iter().map(|m| m.replace(' ', "")));
    tokens.push("<|im_start|>".to_string());
    tokens.push("<|im_end|>".to_string());
    let merges = TINY_MERGES.iter().map(|m| (*m).to_string()).collect();
    (tokens, merges)
}

/// `tokenizer.ggml.*` and `tokenizer.chat_template` entries for the tiny tokenizer,
/// ready for `GgufWriter::meta`.
pub fn tiny_gguf_tokenizer_metadata() -> Vec<(String, MetaValue)> {
    let (tokens, merges) = tiny_byte_level_vocab();
    let strings = |v: Vec<String>| MetaValue::Array(v.into_iter().map(MetaValue::String).collect());
    let types = (0..TINY_VOCAB_SIZE)
        .map(|id| MetaValue::I32(if id as u32 >= TINY_BOS_ID { 3 } else { 1 }))
        .collect();
    vec![
        (
            "tokenizer.ggml.model".into(),
            MetaValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            MetaValue::String("smollm".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.token_type".into(), MetaValue::Array(types)),
        ("tokenizer.ggml.merges".into(), strings(merges)),
        (
            "tokenizer.ggml.bos_token_id".into(),
            MetaValue::U32(TINY_BOS_ID),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            MetaValue::U32(TINY_EOS_ID),
        ),
        (
            "tokenizer.ggml.add_bos_token".into(),
            MetaValue::Bool(false),
        ),
        (
            "tokenizer.chat_template".into(),
            MetaValue::String(TINY_CHAT_TEMPLATE.into()),
        ),
    ]
}

/// The tiny tokenizer as a Hugging Face `tokenizer.json` document, written by hand in
/// the layout of SmolLM2's own file (not produced by this crate's GGUF builder, so
/// the two loaders check each other).
pub fn tiny_tokenizer_json() -> Value {
    let (tokens, merges) = tiny_byte_level_vocab();
    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), json!(id)))
        .collect();
    let added: Vec<Value> = [(TINY_BOS_ID, "<|im_start|>"), (TINY_EOS_ID, "<|im_end|>")]
        .iter()
        .map(|(id, content)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    })
}

/// Writes `tokenizer.json` and `tokenizer_config.json` (BOS/EOS, `add_bos_token`
/// false, the chat template) for the tiny tokenizer into `dir`.
pub fn write_tiny_tokenizer_json(dir: &Path) -> Result<(), TokenizerError> {
    let config = json!({
        "add_bos_token": false,
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "chat_template": TINY_CHAT_TEMPLATE,
        "tokenizer_class": "GPT2Tokenizer",
    });
    for (name, value) in [
        ("tokenizer.json", tiny_tokenizer_json()),
        ("tokenizer_config.json", config),
    ] {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&value).map_err(|source| TokenizerError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(|source| TokenizerError::Io { path, source })?;
    }
    Ok(())
}

/// What a streaming client receives for `ids`: one text chunk per token as the incremental
/// decoder releases it, then what its `finish` releases (last). Tests compare the chunks'
/// concatenation with one-shot decoding and look inside chunks for broken characters.
pub fn stream_chunks(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut decoder = tok.decoder(skip_special);
    let mut chunks: Vec<String> = ids.iter().map(|&id| decoder.push(id).unwrap()).collect();
    chunks.push(decoder.finish().unwrap());
    chunks
}
