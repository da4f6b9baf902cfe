//! The real SmolLM2-135M-Instruct tokenizer, read from its GGUF file.

use brisk_gguf::GgufFile;
use brisk_testkit::smollm2_path;
use brisk_tokenizer::testing::stream_chunks;
use brisk_tokenizer::{ChatMessage, Tokenizer};

const MULTILINGUAL: &str = "Grüße, 世界! Привет 🌍👩‍👩‍👧 naïve café";

fn smollm2() -> Tokenizer {
    let file = GgufFile::open(smollm2_path()).expect("open GGUF");
    Tokenizer::from_gguf(&file).expect("tokenizer from GGUF")
}

#[test]
fn digits_are_split_one_by_one() {
    let tok = smollm2();
    assert_eq!(
        tok.encode("time river stone light cloud w12 paper", false)
            .unwrap(),
        [2256, 4626, 5692, 1420, 6249, 267, 33, 34, 1941]
    );
}

#[test]
fn golden_prompts_encode_like_the_reference() {
    let tok = smollm2();
    assert_eq!(
        tok.encode("The capital of France is", false).unwrap(),
        [504, 3575, 282, 4649, 314]
    );
    let counting = "1, 2, 3, 4, 5, 6,";
    let ids = tok.encode(counting, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), counting);
}

#[test]
fn special_tokens_in_text_are_parsed() {
    let tok = smollm2();
    let ids = tok.encode("<|im_start|>user", false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode(&ids, false).unwrap(), "<|im_start|>user");
    assert_eq!(tok.decode(&ids, true).unwrap(), "user");
}

#[test]
fn add_bos_prepends_bos() {
    let tok = smollm2();
    assert_eq!(tok.encode("The", true).unwrap(), [1, 504]);
}

#[test]
fn multilingual_text_and_whitespace_round_trip() {
    let tok = smollm2();
    for text in [
        MULTILINGUAL,
        "  leading spaces",
        "trailing spaces   ",
        "multiple    spaces\tand\ttabs",
        "\n\nnewlines\n\n\nbetween\r\nlines\n",
        " ",
        "",
        "<|im_start|>user\nhi<|im_end|>\n",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "ids {ids:?}");
    }
}

#[test]
fn streaming_decode_matches_one_shot_decode_without_broken_chars() {
    let tok = smollm2();
    let text = format!("{MULTILINGUAL}\n  {MULTILINGUAL} 🌍🌍 end");
    let ids = tok.encode(&text, false).unwrap();
    // Multi-byte characters must span several tokens here, or the test proves little.
    assert!(ids.len() > text.chars().count() / 2);
    let chunks = stream_chunks(&tok, &ids, false);
    for (chunk, id) in chunks.iter().zip(&ids) {
        assert!(!chunk.contains('\u{FFFD}'), "chunk {chunk:?} after id {id}");
    }
    let streamed = chunks.concat();
    assert_eq!(streamed, tok.decode(&ids, false).unwrap());
    assert_eq!(streamed, text);
}

#[test]
fn streaming_decode_can_skip_special_tokens() {
    let tok = smollm2();
    let ids = tok
        .encode("<|im_start|>assistant\nParis.<|im_end|>", false)
        .unwrap();
    assert_eq!(
        stream_chunks(&tok, &ids, true).concat(),
        "assistant\nParis."
    );
}

#[test]
fn special_ids_come_from_the_metadata() {
    let tok = smollm2();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert!(tok.eos_ids().contains(&2));
    // llama.cpp also ends generation on `<|endoftext|>` (id 0), a control token.
    assert_eq!(tok.eos_ids(), [2, 0]);
    assert!(!tok.add_bos_by_default());
    assert_eq!(tok.token_str(1).as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.token_str(2).as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.token_str(504).as_deref(), Some("The"));
    assert_eq!(tok.token_str(49152), None);
}

#[test]
fn chat_template_renders_chatml() {
    let tok = smollm2();
    let template = tok.chat_template().expect("SmolLM2 ships a chat template");
    let messages = [
        ChatMessage::new(
            "system",
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        ),
        ChatMessage::new("user", "What is the capital of France?"),
    ];
    assert_eq!(
        template.render(&messages, true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn chat_template_inserts_the_default_system_message() {
    let tok = smollm2();
    let template = tok.chat_template().unwrap();
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    assert_eq!(
        template.render(&messages, false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    );
}

#[test]
fn token_bytes_concatenate_to_the_encoded_text() {
    let tok = smollm2();
    let bytes = tok.token_bytes();
    assert_eq!(bytes.len(), tok.vocab_size());
    assert_eq!(bytes[2], b"\xFF<|im_end|>");
    for text in [MULTILINGUAL, "{\"a\": [1, 2.5e-3, null]}\n\t  x"] {
        let ids = tok.encode(text, false).unwrap();
        let joined: Vec<u8> = ids
            .iter()
            .flat_map(|&id| bytes[id as usize].clone())
            .collect();
        assert_eq!(joined, text.as_bytes(), "{text:?}");
    }
    for id in (0..tok.vocab_size() as u32).filter(|&id| !tok.is_special(id)) {
        let text = tok.decode(&[id], false).unwrap();
        if !text.contains('\u{FFFD}') {
            assert_eq!(bytes[id as usize], text.as_bytes(), "id {id}");
        }
    }
}
