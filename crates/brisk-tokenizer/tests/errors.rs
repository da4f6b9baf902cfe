//! Bad inputs give structured errors, never panics.

use brisk_gguf::{GgufFile, GgufWriter, MetaValue};
use brisk_tokenizer::testing::tiny_gguf_tokenizer_metadata;
use brisk_tokenizer::{ChatMessage, ChatTemplate, Tokenizer, TokenizerError};

/// The tiny tokenizer's metadata with `key` replaced (or removed when `value` is None).
fn load_with(key: &str, value: Option<MetaValue>) -> Result<Tokenizer, TokenizerError> {
    let mut writer = GgufWriter::new();
    for (k, v) in tiny_gguf_tokenizer_metadata() {
        if k != key {
            writer.meta(&k, v);
        }
    }
    if let Some(v) = value {
        writer.meta(key, v);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    writer.write(&path).unwrap();
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap())
}

#[test]
fn unknown_pre_tokenizer_is_named() {
    let err = load_with(
        "tokenizer.ggml.pre",
        Some(MetaValue::String("mystery".into())),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&err, TokenizerError::UnsupportedPreTokenizer { pre } if pre == "mystery"),
        "{err}"
    );
}

#[test]
fn unknown_tokenizer_model_is_named() {
    let err = load_with(
        "tokenizer.ggml.model",
        Some(MetaValue::String("bert".into())),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&err, TokenizerError::UnsupportedTokenizerModel { model } if model == "bert"),
        "{err}"
    );
}

#[test]
fn missing_tokens_key_is_named() {
    let err = load_with("tokenizer.ggml.tokens", None).err().unwrap();
    assert!(
        matches!(&err, TokenizerError::MissingMetadata { key } if key == "tokenizer.ggml.tokens"),
        "{err}"
    );
    assert!(err.to_string().contains("tokenizer.ggml.tokens"));
}

#[test]
fn out_of_range_special_id_is_rejected() {
    let err = load_with("tokenizer.ggml.eos_token_id", Some(MetaValue::U32(100_000)))
        .err()
        .unwrap();
    assert!(
        matches!(err, TokenizerError::InvalidMetadata { .. }),
        "{err}"
    );
}

#[test]
fn malformed_merge_is_rejected() {
    let merges = MetaValue::Array(vec![MetaValue::String("nospace".into())]);
    let err = load_with("tokenizer.ggml.merges", Some(merges))
        .err()
        .unwrap();
    assert!(
        matches!(err, TokenizerError::InvalidMetadata { .. }),
        "{err}"
    );
}

#[test]
fn template_syntax_error_is_reported_at_load() {
    let err = ChatTemplate::new(
        "{% for m in messages %}{{ m.content }".into(),
        String::new(),
        String::new(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, TokenizerError::TemplateSyntax { .. }),
        "{err}"
    );
}

#[test]
fn raise_exception_becomes_a_render_error_with_its_message() {
    let template = ChatTemplate::new(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}ok".into(),
        String::new(),
        String::new(),
    )
    .unwrap();
    assert_eq!(
        template
            .render(&[ChatMessage::new("user", "x")], false)
            .unwrap(),
        "ok"
    );
    let err = template
        .render(&[ChatMessage::new("assistant", "x")], false)
        .unwrap_err();
    assert!(
        matches!(err, TokenizerError::TemplateRender { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("Conversation must start with a user message"),
        "{err}"
    );
}

#[test]
fn missing_hf_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_hf_dir(dir.path()).err().unwrap();
    assert!(matches!(err, TokenizerError::Io { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    let err = Tokenizer::from_hf_dir(dir.path()).err().unwrap();
    assert!(
        matches!(err, TokenizerError::LoadTokenizerJson { .. }),
        "{err}"
    );
}

#[test]
fn unknown_ids_decode_to_nothing() {
    let tok = load_with("unused", None).unwrap();
    assert_eq!(tok.decode(&[u32::MAX, 104], false).unwrap(), "h");
}
