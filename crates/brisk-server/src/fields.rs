//! Request fields brisk does not honour.
//!
//! A field accepted and ignored is worse than a refusal: the caller believes it got what it
//! asked for. So a field brisk does not know is refused with a 400 that names it, except
//! the few in [`IGNORED_FIELDS`], accepted and ignored on purpose because they change
//! nothing a client could observe in the answer, and those in [`FIXED_FIELDS`] when they ask
//! for what brisk does anyway (routers such as vllm-router and smg re-serialize requests
//! with every field of their own request type, at its default). The README lists both.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Fields accepted and ignored on purpose, with why.
pub const IGNORED_FIELDS: &[(&str, &str)] = &[
    ("metadata", "tags for the caller's own records"),
    ("service_tier", "brisk serves every request in its one tier"),
    ("store", "brisk stores no conversation; `true` is refused"),
];

/// Fields accepted only with the value that describes what brisk always does.
pub const FIXED_FIELDS: &[(&str, bool, &str)] = &[
    (
        "no_stop_trim",
        false,
        "stop strings are always trimmed from the output",
    ),
    (
        "skip_special_tokens",
        true,
        "special tokens are always left out of the text",
    ),
    (
        "spaces_between_special_tokens",
        true,
        "special tokens are always decoded as the tokenizer spaces them",
    ),
    (
        "continue_final_message",
        false,
        "the answer always starts a new assistant turn",
    ),
    (
        "return_hidden_states",
        false,
        "hidden states are never returned",
    ),
    (
        "separate_reasoning",
        true,
        "brisk's models do not reason, so there is nothing to separate",
    ),
    (
        "stream_reasoning",
        true,
        "brisk's models do not reason, so there is nothing to stream",
    ),
    (
        "include_reasoning",
        true,
        "brisk's models do not reason, so there is nothing to include",
    ),
];

/// Refuses the first field (by name) of `unknown` that is neither honoured nor ignored on
/// purpose; `store` is ignored only when it asks for nothing to be stored.
pub fn refuse_unknown(unknown: &Map<String, Value>) -> Result<(), ApiError> {
    let mut names: Vec<&String> = unknown.keys().collect();
    names.sort();
    for name in names {
        let value = &unknown[name];
        if name == "store" && matches!(value, Value::Bool(true)) {
            return Err(ApiError::invalid(
                "store",
                "brisk stores no conversations or completions: `store` must be false",
            ));
        }
        if value.is_null() || IGNORED_FIELDS.iter().any(|(known, _)| known == name) {
            continue;
        }
        if let Some((_, fixed, why)) = FIXED_FIELDS.iter().find(|(known, ..)| known == name) {
            if value == &Value::Bool(*fixed) {
                continue;
            }
            return Err(ApiError::invalid(
                name.clone(),
                format!("only `{name}: {fixed}` is supported: {why}"),
            ));
        }
        return Err(ApiError::invalid(
            name.clone(),
            format!(
                "unsupported field `{name}`: brisk does not honour it, so it refuses it rather than \
                 ignore it (fields accepted and ignored on purpose: {})",
                ignored_list()
            ),
        ));
    }
    Ok(())
}

fn ignored_list() -> String {
    IGNORED_FIELDS
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(v: Value) -> Result<(), ApiError> {
        refuse_unknown(v.as_object().unwrap())
    }

    #[test]
    fn unknown_fields_are_refused_by_name_and_the_ignored_ones_pass() {
        assert!(
            check(json!({"service_tier": "auto", "metadata": {"a": "b"}, "store": false})).is_ok()
        );
        assert!(
            check(json!({"best_of": null})).is_ok(),
            "null asks for nothing"
        );
        let e = check(json!({"metadata": {}, "suffix": "x", "best_of": 2})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("best_of"));
        assert!(e.message.contains("`best_of`") && e.message.contains("`metadata`"));
        let e = check(json!({"store": true})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("store"));
        let routers = json!({"no_stop_trim": false, "skip_special_tokens": true,
            "continue_final_message": false, "separate_reasoning": true});
        assert!(
            check(routers).is_ok(),
            "what vllm-router and smg always send"
        );
        let e = check(json!({"skip_special_tokens": false})).unwrap_err();
        assert!(
            e.message.contains("only `skip_special_tokens: true`"),
            "{}",
            e.message
        );
    }
}
