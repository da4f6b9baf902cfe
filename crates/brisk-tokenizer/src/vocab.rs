//! Building `tokenizers` pipelines from a plain vocabulary, the way llama.cpp reads them.
//!
//! GGUF files carry no `tokenizer.json`, only the vocabulary (`tokenizer.ggml.tokens`),
//! per-token types, and either BPE merges (`gpt2` family) or SentencePiece scores
//! (`llama` family). This module turns those into the same `tokenizers` pipeline that
//! Hugging Face's converters produce for the original model, so that one encoder
//! serves both GGUF and `tokenizer.json` models:
//!
//! - byte-level BPE: the pre-tokenizer is chosen by `tokenizer.ggml.pre`, following
//!   the regexes in llama.cpp's `llama-vocab.cpp` and the models' own `tokenizer.json`;
//! - SentencePiece BPE: merges are derived from the vocabulary as transformers'
//!   `SentencePieceExtractor` does (a merge `(a, b)` exists when `a`, `b` and `a+b` are
//!   all pieces; the higher the score of `a+b`, the earlier the merge), with byte
//!   fallback to `<0xNN>` pieces and the `▁` space convention.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::TokenizerError;

/// llama.cpp's token types (`llama_token_type`), as stored in `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenType {
    /// An ordinary piece.
    Normal,
    /// The unknown-token piece.
    Unknown,
    /// A control token such as `<s>` or `<|im_start|>`: special, matched whole.
    Control,
    /// A user-defined token: matched whole in the text but not special.
    UserDefined,
    /// A reserved slot.
    Unused,
    /// A byte piece `<0xNN>` used by SentencePiece byte fallback.
    Byte,
}

impl TokenType {
    /// Maps llama.cpp's integer codes; unknown codes read as normal pieces.
    pub(crate) fn from_code(code: i64) -> Self {
        match code {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }
}

/// The Llama 3 pre-tokenizer regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 pre-tokenizer regex: as Llama 3 but digits are split one by one.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a `tokenizer.ggml.pre` value asks for.
struct PreTokenizerChoice {
    pre_tokenizer: PreTokenizerWrapper,
    /// llama.cpp's `ignore_merges`: a word that is itself in the vocabulary is one token.
    ignore_merges: bool,
}

fn split_then_bytes(regex: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    let split = Split::new(
        SplitPattern::Regex(regex.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|source| TokenizerError::Build {
        what: "pre-tokenizer regex".to_string(),
        source,
    })?;
    Ok(PreSequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ])
    .into())
}

fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerChoice, TokenizerError> {
    let gpt2 = || ByteLevel::new(false, true, true);
    let (pre_tokenizer, ignore_merges) = match pre {
        "default" | "gpt-2" | "gpt2" => (gpt2().into(), false),
        "smollm" => (
            PreSequence::new(vec![Digits::new(true).into(), gpt2().into()]).into(),
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" => (split_then_bytes(LLAMA3_REGEX)?, true),
        "qwen2" | "deepseek-r1-qwen" => (split_then_bytes(QWEN2_REGEX)?, false),
        other => {
            return Err(TokenizerError::UnsupportedPreTokenizer {
                pre: other.to_string(),
            })
        }
    };
    Ok(PreTokenizerChoice {
        pre_tokenizer,
        ignore_merges,
    })
}

/// Token-to-id map; on duplicate strings the first id wins (llama.cpp does the same).
fn vocab_of(tokens: &[&str]) -> Result<Vocab, TokenizerError> {
    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        let id = u32::try_from(id).map_err(|_| TokenizerError::InvalidMetadata {
            key: "tokenizer.ggml.tokens".to_string(),
            reason: "more than 2^32 tokens".to_string(),
        })?;
        vocab.entry((*token).to_string()).or_insert(id);
    }
    Ok(vocab)
}

/// Control and user-defined tokens, to be matched whole in the input text.
fn added_tokens(tokens: &[&str], types: &[TokenType]) -> Vec<AddedToken> {
    tokens
        .iter()
        .zip(types)
        .filter_map(|(token, ty)| match ty {
            TokenType::Control => Some(AddedToken::from(*token, true)),
            TokenType::UserDefined => Some(AddedToken::from(*token, false).normalized(false)),
            _ => None,
        })
        .collect()
}

fn finish(
    model: BPE,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    decoder: DecoderWrapper,
    added: &[AddedToken],
) -> tokenizers::Tokenizer {
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_normalizer(normalizer);
    tokenizer.with_pre_tokenizer(pre_tokenizer);
    tokenizer.with_decoder(Some(decoder));
    // Added in one call each: every call rebuilds the matcher over all added tokens.
    let (special, plain): (Vec<_>, Vec<_>) = added.iter().cloned().partition(|t| t.special);
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&plain);
    tokenizer
}

/// A GPT-2-style byte-level BPE tokenizer.
///
/// `tokens` are in byte-to-unicode form (`Ġ` for a space) and `merges` are `"a b"` lines.
pub(crate) fn byte_level_bpe(
    tokens: &[&str],
    types: &[TokenType],
    merges: &[&str],
    pre: &str,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let choice = pre_tokenizer_for(pre)?;
    let vocab = vocab_of(tokens)?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, line)| {
            line.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| TokenizerError::InvalidMetadata {
                    key: "tokenizer.ggml.merges".to_string(),
                    reason: format!("merge {i} `{line}` is not two tokens separated by a space"),
                })
        })
        .collect::<Result<Merges, _>>()?;
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(choice.ignore_merges)
        .build()
        .map_err(|source| TokenizerError::Build {
            what: "byte-level BPE from tokenizer.ggml.tokens/merges".to_string(),
            source,
        })?;
    Ok(finish(
        model,
        None,
        Some(choice.pre_tokenizer),
        ByteLevel::new(false, true, true).into(),
        &added_tokens(tokens, types),
    ))
}

/// Merges implied by a SentencePiece vocabulary, best first.
///
/// For every normal piece, every split into two normal pieces is a merge; merges are
/// ordered by the score of the merged piece (higher first), ties by its id, then by the
/// left piece's id. Cost: one lookup pair per character boundary of every piece.
fn sentencepiece_merges(
    tokens: &[&str],
    types: &[TokenType],
    scores: &[f32],
    vocab: &Vocab,
) -> Merges {
    let is_normal = |id: u32| types.get(id as usize) == Some(&TokenType::Normal);
    let mut found: Vec<(f32, u32, u32, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let Some(&merged_id) = vocab.get(*piece) else {
            continue;
        };
        if merged_id as usize != id || !is_normal(merged_id) {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                if is_normal(l) && is_normal(r) {
                    found.push((scores.get(id).copied().unwrap_or(0.0), merged_id, l, split));
                }
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    found
        .into_iter()
        .map(|(_, merged, _, split)| {
            let (left, right) = tokens[merged as usize].split_at(split);
            (left.to_string(), right.to_string())
        })
        .collect()
}

/// A SentencePiece (Llama/Llama 2 style) tokenizer as BPE with byte fallback.
pub(crate) fn sentencepiece_bpe(
    tokens: &[&str],
    types: &[TokenType],
    scores: &[f32],
    unk: Option<&str>,
    add_space_prefix: bool,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let vocab = vocab_of(tokens)?;
    let merges = sentencepiece_merges(tokens, types, scores, &vocab);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk.to_string());
    }
    let model = builder.build().map_err(|source| TokenizerError::Build {
        what: "SentencePiece BPE from tokenizer.ggml.tokens/scores".to_string(),
        source,
    })?;
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|source| TokenizerError::Build {
            what: "SentencePiece space replacement".to_string(),
            source,
        })
    };
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    let mut decoders: Vec<DecoderWrapper> = vec![
        replace("▁", " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        normalizers.push(Prepend::new("▁".to_string()).into());
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    normalizers.push(replace(" ", "▁")?.into());
    Ok(finish(
        model,
        Some(NormalizerSequence::new(normalizers).into()),
        None,
        DecoderSequence::new(decoders).into(),
        &added_tokens(tokens, types),
    ))
}
