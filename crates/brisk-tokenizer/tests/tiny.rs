//! The generated tiny tokenizer: GGUF metadata and `tokenizer.json` must agree.

use brisk_gguf::{GgufFile, GgufWriter};
use brisk_tokenizer::testing::{
    tiny_gguf_tokenizer_metadata, write_tiny_tokenizer_json, TINY_BOS_ID, TINY_EOS_ID,
    TINY_VOCAB_SIZE,
};
use brisk_tokenizer::{ChatMessage, Tokenizer};

fn from_gguf(dir: &std::path::Path) -> Tokenizer {
    let mut writer = GgufWriter::new();
    for (key, value) in tiny_gguf_tokenizer_metadata() {
        writer.meta(&key, value);
    }
    let path = dir.join("tiny.gguf");
    writer.write(&path).unwrap();
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap()
}

fn from_hf(dir: &std::path::Path) -> Tokenizer {
    write_tiny_tokenizer_json(dir).unwrap();
    Tokenizer::from_hf_dir(dir).unwrap()
}

const SAMPLES: &[&str] = &[
    "hello world",
    "the thing is in the string",
    "Hello, world! 12345 hello",
    "  spaces   and\n\nnewlines\n",
    "<|im_start|>user\nhello<|im_end|>\n",
    "naïve café 世界 🌍",
];

#[test]
fn gguf_and_tokenizer_json_encode_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, hf) = (from_gguf(dir.path()), from_hf(dir.path()));
    for text in SAMPLES {
        let ids = gguf.encode(text, false).unwrap();
        assert_eq!(ids, hf.encode(text, false).unwrap(), "{text:?}");
        assert_eq!(gguf.decode(&ids, false).unwrap(), *text);
        assert_eq!(hf.decode(&ids, false).unwrap(), *text);
    }
}

#[test]
fn merges_and_specials_produce_the_documented_ids() {
    let dir = tempfile::tempdir().unwrap();
    let tok = from_gguf(dir.path());
    // "hello" is merge 3 (id 259), "Ġworld" merge 17 (id 273).
    assert_eq!(tok.encode("hello world", false).unwrap(), [259, 273]);
    // Bytes without merges keep id = byte value.
    assert_eq!(
        tok.encode("xyz", false).unwrap(),
        [b'x' as u32, b'y' as u32, b'z' as u32]
    );
    assert_eq!(
        tok.encode("<|im_start|>hello<|im_end|>", false).unwrap(),
        [TINY_BOS_ID, 259, TINY_EOS_ID]
    );
}

#[test]
fn both_forms_report_the_same_special_ids_and_template() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, hf) = (from_gguf(dir.path()), from_hf(dir.path()));
    for tok in [&gguf, &hf] {
        assert_eq!(tok.vocab_size(), TINY_VOCAB_SIZE);
        assert_eq!(tok.bos_id(), Some(TINY_BOS_ID));
        assert_eq!(tok.eos_ids(), [TINY_EOS_ID]);
        assert!(!tok.add_bos_by_default());
        assert_eq!(tok.encode("hello", true).unwrap(), [TINY_BOS_ID, 259]);
        let rendered = tok
            .chat_template()
            .unwrap()
            .render(&[ChatMessage::new("user", "hello")], true)
            .unwrap();
        assert!(rendered.ends_with("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"));
    }
}

#[test]
fn streaming_decode_holds_back_partial_characters() {
    let dir = tempfile::tempdir().unwrap();
    let tok = from_gguf(dir.path());
    // The tiny vocabulary has no multi-byte tokens: "é" is two byte tokens.
    let ids = tok.encode("é!", false).unwrap();
    assert_eq!(ids, [0xC3, 0xA9, u32::from(b'!')]);
    let mut decoder = tok.decoder(false);
    assert_eq!(decoder.push(ids[0]).unwrap(), "");
    assert_eq!(decoder.push(ids[1]).unwrap(), "é");
    assert_eq!(decoder.push(ids[2]).unwrap(), "!");
    // A dangling lead byte is released by finish, as a replacement character.
    assert_eq!(decoder.push(0xE4).unwrap(), "");
    assert_eq!(decoder.finish().unwrap(), "\u{FFFD}");
}

#[test]
fn hf_dir_accepts_a_template_list_and_generation_config_eos_ids() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_tokenizer_json(dir.path()).unwrap();
    let config = serde_json::json!({
        "bos_token": {"content": "<|im_start|>"},
        "eos_token": "<|im_end|>",
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ bos_token }}{{ messages[0].content.strip() }}{{ eos_token }}"}
        ]
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": [279, 33]}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(tok.eos_ids(), [TINY_EOS_ID, 33]);
    assert!(!tok.add_bos_by_default());
    let rendered = tok
        .chat_template()
        .unwrap()
        .render(&[ChatMessage::new("user", "  hi  ")], false)
        .unwrap();
    assert_eq!(rendered, "<|im_start|>hi<|im_end|>");
}

#[test]
fn other_pre_tokenizers_build_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for pre in ["gpt-2", "default", "llama-bpe", "llama3", "qwen2"] {
        let mut writer = GgufWriter::new();
        for (key, value) in tiny_gguf_tokenizer_metadata() {
            let value = if key == "tokenizer.ggml.pre" {
                brisk_gguf::MetaValue::String(pre.into())
            } else {
                value
            };
            writer.meta(&key, value);
        }
        let path = dir.path().join(format!("{pre}.gguf"));
        writer.write(&path).unwrap();
        let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        for text in SAMPLES {
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(tok.decode(&ids, false).unwrap(), *text, "{pre}: {text:?}");
        }
        assert_eq!(
            tok.encode("hello world", false).unwrap(),
            [259, 273],
            "{pre}"
        );
    }
}
