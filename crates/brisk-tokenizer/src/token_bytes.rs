//! The raw bytes behind each token id, for byte-level grammar engines.
//!
//! Constrained decoding (llguidance's token trie) works on the bytes a token adds to
//! the output, not on the vocabulary strings. How a piece maps to bytes depends on the
//! pipeline's decoder, which is what [`decoding_family`] reads:
//!
//! - byte-level BPE (GPT-2, `ByteLevel` decoder): every char of the piece stands for one
//!   byte through GPT-2's byte-to-unicode table ([`byte_to_char`]); a piece with a char
//!   outside the table is its own UTF-8, exactly as the `ByteLevel` decoder does;
//! - SentencePiece (`ByteFallback`/`Replace`/`Metaspace` decoders): `<0xNN>` pieces are
//!   the byte `0xNN`, otherwise `▁` is a space;
//! - anything else: the piece's UTF-8.
//!
//! Special tokens (added tokens marked special, and the model's unknown token) are
//! their text after the byte [`SPECIAL_TOKEN_MARKER`] (`0xFF`, never valid UTF-8),
//! toktrie's convention, so that a grammar over text never produces them by accident.

use std::collections::HashSet;

use tokenizers::{DecoderWrapper, ModelWrapper};

/// The byte put in front of a special token's text by [`crate::Tokenizer::token_bytes`].
pub const SPECIAL_TOKEN_MARKER: u8 = 0xFF;

/// GPT-2's reversible byte-to-character map: printable bytes stand for themselves,
/// the others are shifted to U+0100 and up so that no token contains whitespace.
pub fn byte_to_char(byte: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(byte) {
        char::from(byte)
    } else {
        let rank = (0..byte).filter(|&b| !printable(b)).count() as u32;
        char::from_u32(256 + rank).unwrap_or('?')
    }
}

/// The inverse of [`byte_to_char`], indexed by code point (all of them are below U+0144).
fn char_to_byte_table() -> Vec<Option<u8>> {
    let mut table = vec![None; 0x144];
    for byte in 0..=255u8 {
        table[byte_to_char(byte) as usize] = Some(byte);
    }
    table
}

/// How a pipeline's decoder turns pieces into text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    ByteLevel,
    SentencePiece { space: char },
    Plain,
}

fn decoding_family(decoder: Option<&DecoderWrapper>) -> Family {
    fn find(decoder: &DecoderWrapper) -> Option<Family> {
        match decoder {
            DecoderWrapper::ByteLevel(_) => Some(Family::ByteLevel),
            DecoderWrapper::Metaspace(m) => Some(Family::SentencePiece {
                space: m.get_replacement(),
            }),
            DecoderWrapper::ByteFallback(_) | DecoderWrapper::Replace(_) => {
                Some(Family::SentencePiece { space: '▁' })
            }
            DecoderWrapper::Sequence(seq) => {
                let found: Vec<Family> = seq.get_decoders().iter().filter_map(find).collect();
                // ByteLevel wins: a byte-level pipeline may also carry a Replace step.
                found
                    .iter()
                    .copied()
                    .find(|f| *f == Family::ByteLevel)
                    .or(found.first().copied())
            }
            _ => None,
        }
    }
    decoder.and_then(find).unwrap_or(Family::Plain)
}

/// `<0xNN>` → `NN`.
fn byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2)
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Ids whose pieces are special: added tokens marked special and the unknown token.
pub(crate) fn special_ids(inner: &tokenizers::Tokenizer) -> HashSet<u32> {
    let mut ids: HashSet<u32> = inner
        .get_added_tokens_decoder()
        .into_iter()
        .filter_map(|(id, token)| token.special.then_some(id))
        .collect();
    let unk = match inner.get_model() {
        ModelWrapper::BPE(bpe) => bpe.get_unk_token().clone(),
        _ => None,
    };
    ids.extend(unk.and_then(|unk| inner.token_to_id(&unk)));
    ids
}

/// The bytes of every id below `vocab_size` (see the module docs).
pub(crate) fn token_bytes(
    inner: &tokenizers::Tokenizer,
    special: &HashSet<u32>,
    vocab_size: usize,
) -> Vec<Vec<u8>> {
    let family = decoding_family(inner.get_decoder());
    let table = char_to_byte_table();
    let byte_level = |piece: &str| -> Vec<u8> {
        piece
            .chars()
            .map(|c| table.get(c as usize).copied().flatten())
            .collect::<Option<Vec<u8>>>()
            .unwrap_or_else(|| piece.as_bytes().to_vec())
    };
    (0..vocab_size)
        .map(|id| {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            let Some(piece) = inner.id_to_token(id) else {
                return Vec::new();
            };
            if special.contains(&id) {
                let mut bytes = vec![SPECIAL_TOKEN_MARKER];
                bytes.extend_from_slice(piece.as_bytes());
                return bytes;
            }
            match family {
                Family::ByteLevel => byte_level(&piece),
                Family::SentencePiece { space } => match byte_piece(&piece) {
                    Some(byte) => vec![byte],
                    None => piece.replace(space, " ").into_bytes(),
                },
                Family::Plain => piece.into_bytes(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_is_a_bijection() {
        let table = char_to_byte_table();
        for byte in 0..=255u8 {
            assert_eq!(table[byte_to_char(byte) as usize], Some(byte));
        }
        assert_eq!(table.iter().flatten().count(), 256);
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
    }

    #[test]
    fn byte_pieces_parse_only_in_their_exact_form() {
        assert_eq!(byte_piece("<0x0A>"), Some(0x0A));
        assert_eq!(byte_piece("<0xff>"), Some(0xFF));
        assert_eq!(byte_piece("<0x0A"), None);
        assert_eq!(byte_piece("<0x100>"), None);
        assert_eq!(byte_piece("<unk>"), None);
    }
}
