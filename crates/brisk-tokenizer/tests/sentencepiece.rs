//! A SentencePiece-style (`llama` model) vocabulary built in the test.

use brisk_gguf::{GgufFile, GgufWriter, MetaValue};
use brisk_tokenizer::testing::stream_chunks;
use brisk_tokenizer::Tokenizer;

/// `(piece, score, type)`: 3 = control, 2 = unknown, 6 = byte, 1 = normal.
fn vocab() -> Vec<(String, f32, i32)> {
    let mut v = vec![
        ("<unk>".to_string(), 0.0, 2),
        ("<s>".to_string(), 0.0, 3),
        ("</s>".to_string(), 0.0, 3),
    ];
    v.extend((0..=255u32).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    for (piece, score) in [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("c", -2.0),
        ("a", -2.0),
        ("f", -2.0),
        ("ll", -3.0),
        ("he", -4.0),
        ("hell", -5.0),
        ("hello", -6.0),
        ("▁hello", -7.0),
        ("or", -8.0),
        ("▁w", -9.0),
        ("▁wor", -10.0),
        ("ld", -11.0),
        ("▁world", -12.0),
    ] {
        v.push((piece.to_string(), score, 1));
    }
    v
}

fn tokenizer() -> (Tokenizer, Vec<String>) {
    let vocab = vocab();
    let mut writer = GgufWriter::new();
    writer
        .meta("tokenizer.ggml.model", MetaValue::String("llama".into()))
        .meta(
            "tokenizer.ggml.tokens",
            MetaValue::Array(
                vocab
                    .iter()
                    .map(|v| MetaValue::String(v.0.clone()))
                    .collect(),
            ),
        )
        .meta(
            "tokenizer.ggml.scores",
            MetaValue::Array(vocab.iter().map(|v| MetaValue::F32(v.1)).collect()),
        )
        .meta(
            "tokenizer.ggml.token_type",
            MetaValue::Array(vocab.iter().map(|v| MetaValue::I32(v.2)).collect()),
        )
        .meta("tokenizer.ggml.unknown_token_id", MetaValue::U32(0))
        .meta("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .meta("tokenizer.ggml.eos_token_id", MetaValue::U32(2));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spm.gguf");
    writer.write(&path).unwrap();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    (tok, vocab.into_iter().map(|v| v.0).collect())
}

fn pieces(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| tok.token_str(id).unwrap()).collect()
}

#[test]
fn words_get_a_space_marker_and_merge_by_score() {
    let (tok, _) = tokenizer();
    let ids = tok.encode("hello world", false).unwrap();
    assert_eq!(pieces(&tok, &ids), ["▁hello", "▁world"]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "hello world");
    let ids = tok.encode("world hello", false).unwrap();
    assert_eq!(pieces(&tok, &ids), ["▁world", "▁hello"]);
}

#[test]
fn unknown_characters_fall_back_to_bytes() {
    let (tok, _) = tokenizer();
    let ids = tok.encode("café", false).unwrap();
    assert_eq!(pieces(&tok, &ids), ["▁", "c", "a", "f", "<0xC3>", "<0xA9>"]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "café");
}

#[test]
fn bos_is_added_by_default_and_specials_are_parsed() {
    let (tok, _) = tokenizer();
    assert!(tok.add_bos_by_default());
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), [2]);
    let ids = tok.encode("hello</s>", true).unwrap();
    assert_eq!(pieces(&tok, &ids), ["<s>", "▁hello", "</s>"]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello");
}

#[test]
fn streaming_decode_keeps_spaces_between_words() {
    let (tok, _) = tokenizer();
    let text = "hello world café hello";
    let ids = tok.encode(text, false).unwrap();
    let chunks = stream_chunks(&tok, &ids, false);
    assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')), "{chunks:?}");
    assert_eq!(chunks.concat(), text);
}

#[test]
fn token_bytes_turn_byte_pieces_into_bytes_and_markers_into_spaces() {
    let (tok, vocab) = tokenizer();
    let bytes = tok.token_bytes();
    assert_eq!(bytes.len(), vocab.len());
    let id = |piece: &str| vocab.iter().position(|p| p == piece).unwrap();
    assert_eq!(bytes[id("<0xC3>")], [0xC3]);
    assert_eq!(bytes[id("▁hello")], b" hello");
    assert_eq!(bytes[id("</s>")], b"\xFF</s>");
    assert_eq!(bytes[id("<unk>")], b"\xFF<unk>");
    assert!(tok.is_special(0) && tok.is_special(2) && !tok.is_special(3));
    // The pipeline puts a space in front of the text; the decoder strips it again.
    let text = "hello world café";
    let ids = tok.encode(text, false).unwrap();
    let joined: Vec<u8> = ids
        .iter()
        .flat_map(|&id| bytes[id as usize].clone())
        .collect();
    assert_eq!(joined, format!(" {text}").as_bytes());
}
