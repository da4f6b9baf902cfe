//! `Tokenizer::token_bytes` on the tiny byte-level tokenizer, loaded both ways: each
//! token's bytes are what decoding it alone gives, and an encoding's bytes are its text.

use brisk_gguf::{GgufFile, GgufWriter};
use brisk_tokenizer::testing::{
    tiny_gguf_tokenizer_metadata, write_tiny_tokenizer_json, TINY_BOS_ID, TINY_EOS_ID,
    TINY_VOCAB_SIZE,
};
use brisk_tokenizer::{Tokenizer, SPECIAL_TOKEN_MARKER};

fn both() -> [Tokenizer; 2] {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = GgufWriter::new();
    for (key, value) in tiny_gguf_tokenizer_metadata() {
        writer.meta(&key, value);
    }
    let path = dir.path().join("tiny.gguf");
    writer.write(&path).unwrap();
    let gguf = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    write_tiny_tokenizer_json(dir.path()).unwrap();
    [gguf, Tokenizer::from_hf_dir(dir.path()).unwrap()]
}

#[test]
fn every_token_is_the_bytes_it_decodes_to() {
    for tok in both() {
        let bytes = tok.token_bytes();
        assert_eq!(bytes.len(), TINY_VOCAB_SIZE);
        for (id, token) in (0u32..).zip(&bytes) {
            let text = tok.decode(&[id], false).unwrap();
            if tok.is_special(id) {
                assert_eq!(token[0], SPECIAL_TOKEN_MARKER, "id {id}");
                assert_eq!(&token[1..], text.as_bytes(), "id {id}");
            } else if text.contains('\u{FFFD}') {
                // A lone byte that is not UTF-8 by itself: the tiny vocabulary's id is the byte.
                assert_eq!(token, &[u8::try_from(id).unwrap()], "id {id}");
            } else {
                assert_eq!(token, text.as_bytes(), "id {id}");
            }
        }
    }
}

#[test]
fn control_tokens_are_special_and_marked() {
    for tok in both() {
        let bytes = tok.token_bytes();
        assert!(tok.is_special(TINY_BOS_ID) && tok.is_special(TINY_EOS_ID));
        assert!(!tok.is_special(32));
        assert_eq!(bytes[TINY_EOS_ID as usize], b"\xFF<|im_end|>");
        assert_eq!(bytes[32], b" ");
        assert_eq!(bytes[273], b" world");
    }
}

#[test]
fn an_encoding_concatenates_to_its_text() {
    for tok in both() {
        let bytes = tok.token_bytes();
        for text in [
            "hello world",
            "the thing is in the string",
            "  spaces   and\n\nnewlines\n",
            "naïve café 世界 🌍 12345",
        ] {
            let ids = tok.encode(text, false).unwrap();
            let joined: Vec<u8> = ids
                .iter()
                .flat_map(|&id| bytes[id as usize].clone())
                .collect();
            assert_eq!(joined, text.as_bytes(), "{text:?}");
        }
        let ids = tok.encode("<|im_start|>hi<|im_end|>", false).unwrap();
        let joined: Vec<u8> = ids
            .iter()
            .flat_map(|&id| bytes[id as usize].clone())
            .collect();
        assert_eq!(joined, b"\xFF<|im_start|>hi\xFF<|im_end|>");
    }
}
