//! JSON schemas and `json_object` on the tiny tokenizer: every finished random walk is
//! compact JSON that validates against the schema.

mod common;

use brisk_structured::{GrammarSpec, Grammars};
use common::{check_person, finished_texts, is_compact_json, person_schema, tiny};
use serde_json::{json, Value};

#[test]
fn strict_schema_outputs_are_compact_valid_and_closed() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let spec = GrammarSpec::JsonSchema {
        schema: person_schema(),
        strict: true,
    };
    let texts = finished_texts(&grammars, &tok, &spec, 24, 400);
    for text in &texts {
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        check_person(&value, true);
        assert!(is_compact_json(text), "{text}");
    }
}

#[test]
fn loose_schema_outputs_validate_and_may_add_properties() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let spec = GrammarSpec::JsonSchema {
        schema: person_schema(),
        strict: false,
    };
    for text in finished_texts(&grammars, &tok, &spec, 24, 400) {
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        check_person(&value, false);
    }
}

#[test]
fn json_object_outputs_are_objects() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    for text in finished_texts(&grammars, &tok, &GrammarSpec::JsonObject, 24, 400) {
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(value.is_object(), "{text}");
        assert!(is_compact_json(&text), "{text}");
    }
}

#[test]
fn the_first_mask_of_an_object_is_the_opening_brace() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let mut constraint = grammars.compile(&GrammarSpec::JsonObject).unwrap();
    let mask = constraint.next_mask().unwrap();
    assert_eq!(mask.allowed_tokens(), [u32::from(b'{')]);
    assert!(!constraint.is_finished());
}

#[test]
fn malformed_and_unsupported_schemas_are_refused_with_a_reason() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let refuse = |schema: Value| {
        let spec = GrammarSpec::JsonSchema {
            schema,
            strict: false,
        };
        grammars.compile(&spec).unwrap_err().message
    };
    let message = refuse(json!({"type": 5}));
    assert!(message.starts_with("invalid JSON schema:"), "{message}");
    let message = refuse(json!({"type": "array", "uniqueItems": true}));
    assert!(message.contains("uniqueItems"), "{message}");
    let message = refuse(json!({"$ref": "#/$defs/missing"}));
    assert!(message.contains("missing"), "{message}");
    let message = refuse(json!({"type": "string", "minLength": 5, "maxLength": 2}));
    assert!(message.starts_with("invalid JSON schema:"), "{message}");
    let message = refuse(json!("string"));
    assert!(message.contains("must be a JSON object"), "{message}");
}
