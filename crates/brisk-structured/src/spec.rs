//! From a client's [`GrammarSpec`] to the grammar llguidance compiles.
//!
//! Every spec becomes an llguidance `TopLevelGrammar`: JSON schemas go to its JSON
//! compiler (prepared by `json`), regexes become one lexeme (`start: /rx/`, matched as
//! a whole), choices a Lark alternation of string literals, GBNF is converted to Lark.
//! Texts are capped at [`MAX_SPEC_BYTES`] before any parsing, so an oversized request
//! costs nothing but the check.

use llguidance::api::TopLevelGrammar;

use crate::{gbnf, json, GrammarError, GrammarSpec};

/// The largest schema, regex, grammar or list of choices accepted, in bytes.
pub(crate) const MAX_SPEC_BYTES: usize = 64 * 1024;

/// The key `spec` is cached under; Err if its text is too large to compile.
pub(crate) fn cache_key(spec: &GrammarSpec) -> Result<String, GrammarError> {
    let (key, text_len) = key_of(spec);
    if text_len > MAX_SPEC_BYTES {
        return Err(GrammarError::new(format!(
            "the {} is {text_len} bytes; at most {MAX_SPEC_BYTES} are accepted",
            what(spec)
        )));
    }
    Ok(key)
}

/// The grammar for `spec` (whose size [`cache_key`] has checked).
pub(crate) fn to_grammar(spec: &GrammarSpec) -> Result<TopLevelGrammar, GrammarError> {
    Ok(match spec {
        GrammarSpec::JsonObject => {
            let schema = serde_json::json!({"type": "object"});
            TopLevelGrammar::from_json_schema(json::prepare(&schema, false)?)
        }
        GrammarSpec::JsonSchema { schema, strict } => {
            TopLevelGrammar::from_json_schema(json::prepare(schema, *strict)?)
        }
        GrammarSpec::Regex(rx) => {
            if rx.is_empty() {
                return Err(GrammarError::new("the regex is empty"));
            }
            TopLevelGrammar::from_regex(rx)
        }
        GrammarSpec::Choice(choices) => TopLevelGrammar::from_lark(choice_lark(choices)?),
        GrammarSpec::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        GrammarSpec::Gbnf(text) => TopLevelGrammar::from_lark(gbnf::to_lark(text)?),
    })
}

/// What the client sent, in words, for error messages.
pub(crate) fn what(spec: &GrammarSpec) -> &'static str {
    match spec {
        GrammarSpec::JsonObject | GrammarSpec::JsonSchema { .. } => "JSON schema",
        GrammarSpec::Regex(_) => "regex",
        GrammarSpec::Choice(_) => "list of choices",
        GrammarSpec::Lark(_) => "Lark grammar",
        GrammarSpec::Gbnf(_) => "GBNF grammar",
    }
}

/// A canonical text for the cache, and the size of the client's text in it.
fn key_of(spec: &GrammarSpec) -> (String, usize) {
    let tagged = |tag: &str, text: &str| (format!("{tag}\n{text}"), text.len());
    match spec {
        GrammarSpec::JsonObject => tagged("json_object", ""),
        GrammarSpec::JsonSchema { schema, strict } => {
            tagged(&format!("json_schema strict={strict}"), &schema.to_string())
        }
        GrammarSpec::Regex(rx) => tagged("regex", rx),
        GrammarSpec::Choice(choices) => tagged(
            "choice",
            &serde_json::Value::from(choices.clone()).to_string(),
        ),
        GrammarSpec::Lark(lark) => tagged("lark", lark),
        GrammarSpec::Gbnf(text) => tagged("gbnf", text),
    }
}

/// `start: "a" | "b"`: each choice one literal, so the output is exactly one of them.
fn choice_lark(choices: &[String]) -> Result<String, GrammarError> {
    if choices.is_empty() {
        return Err(GrammarError::new("the list of choices is empty"));
    }
    if choices.iter().any(String::is_empty) {
        return Err(GrammarError::new("a choice is the empty string"));
    }
    let alternatives: Vec<String> = choices.iter().map(|c| lark_string(c)).collect();
    Ok(format!("start: {}\n", alternatives.join(" | ")))
}

/// `text` as a Lark string literal: a JSON string in which DEL is escaped too (Lark's
/// string lexeme refuses a raw one).
pub(crate) fn lark_string(text: &str) -> String {
    serde_json::Value::from(text)
        .to_string()
        .replace('\u{7f}', "\\u007f")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_become_escaped_literals() {
        let lark = choice_lark(&["a\"b".into(), "x\\y\n\u{7f}".into()]).unwrap();
        assert_eq!(lark, "start: \"a\\\"b\" | \"x\\\\y\\n\\u007f\"\n");
    }

    #[test]
    fn oversized_and_empty_specs_are_refused() {
        let big = GrammarSpec::Regex("a".repeat(MAX_SPEC_BYTES + 1));
        let err = cache_key(&big).unwrap_err();
        assert!(err.message.contains("regex is 65537 bytes"), "{err}");
        let err = to_grammar(&GrammarSpec::Choice(vec![])).unwrap_err();
        assert!(err.message.contains("choices is empty"), "{err}");
        let err = to_grammar(&GrammarSpec::Regex(String::new())).unwrap_err();
        assert!(err.message.contains("regex is empty"), "{err}");
    }

    #[test]
    fn keys_tell_kinds_and_strictness_apart() {
        let schema = serde_json::json!({"type": "object"});
        let strict = GrammarSpec::JsonSchema {
            schema: schema.clone(),
            strict: true,
        };
        let loose = GrammarSpec::JsonSchema {
            schema,
            strict: false,
        };
        assert_ne!(key_of(&strict).0, key_of(&loose).0);
        assert_ne!(key_of(&loose).0, key_of(&GrammarSpec::JsonObject).0);
        assert_ne!(
            key_of(&GrammarSpec::Regex("a".into())).0,
            key_of(&GrammarSpec::Lark("a".into())).0
        );
    }
}
