//! The real SmolLM2 tokenizer (49,152 tokens, many of them multi-byte): constrained
//! walks over its vocabulary still produce valid output.

mod common;

use brisk_gguf::GgufFile;
use brisk_structured::{GrammarSpec, Grammars};
use brisk_testkit::smollm2_path;
use brisk_tokenizer::Tokenizer;
use common::{check_person, finished_texts, is_compact_json, person_schema};

fn smollm2() -> Tokenizer {
    let file = GgufFile::open(smollm2_path()).expect("open GGUF");
    Tokenizer::from_gguf(&file).expect("tokenizer from GGUF")
}

#[test]
fn schema_walks_over_the_real_vocabulary_validate() {
    let tok = smollm2();
    let grammars = Grammars::new(&tok).unwrap();
    assert_eq!(grammars.vocab_size(), 49_152);
    let spec = GrammarSpec::JsonSchema {
        schema: person_schema(),
        strict: true,
    };
    for text in finished_texts(&grammars, &tok, &spec, 16, 300) {
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        check_person(&value, true);
        assert!(is_compact_json(&text), "{text}");
    }
}

#[test]
fn multi_byte_tokens_can_spell_a_choice() {
    let tok = smollm2();
    let grammars = Grammars::new(&tok).unwrap();
    let choices = vec![
        "positive".to_string(),
        "negative".to_string(),
        "neutral".to_string(),
    ];
    let spec = GrammarSpec::Choice(choices.clone());
    let mut constraint = grammars.compile(&spec).unwrap();
    let mask = constraint.next_mask().unwrap();
    for choice in &choices {
        let ids = tok.encode(choice, false).unwrap();
        assert!(
            mask.allows(ids[0]),
            "{choice}: first token {} refused",
            ids[0]
        );
    }
    for text in finished_texts(&grammars, &tok, &spec, 16, 20) {
        assert!(choices.contains(&text), "{text:?}");
    }
}

#[test]
fn regex_and_gbnf_walks_over_the_real_vocabulary_match() {
    let tok = smollm2();
    let grammars = Grammars::new(&tok).unwrap();
    let rx = r"[A-Z][a-z]{1,8}( [A-Z][a-z]{1,8}){0,2}, [0-9]{4}";
    let check = regex::Regex::new(&format!("^(?:{rx})$")).unwrap();
    for text in finished_texts(&grammars, &tok, &GrammarSpec::Regex(rx.into()), 16, 60) {
        assert!(check.is_match(&text), "{text:?}");
    }
    let gbnf =
        "root ::= \"[\" item (\", \" item)* \"]\"\nitem ::= [0-9]+ | \"\\\"\" [a-z ]* \"\\\"\"\n";
    let items = regex::Regex::new(r#"^\[([0-9]+|"[a-z ]*")(, ([0-9]+|"[a-z ]*"))*\]$"#).unwrap();
    for text in finished_texts(&grammars, &tok, &GrammarSpec::Gbnf(gbnf.into()), 16, 200) {
        assert!(items.is_match(&text), "{text:?}");
    }
}
