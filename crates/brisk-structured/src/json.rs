//! Preparing a client's JSON schema for llguidance's JSON compiler.
//!
//! Choices, and why:
//!
//! - **Compact output**, as OpenAI's structured outputs produce: `,` and `:` with no
//!   whitespace anywhere (llguidance's `x-guidance` options `item_separator`,
//!   `key_separator`, `whitespace_flexible: false`). Free whitespace lets a sampling
//!   model pad output with newlines until it runs out of tokens; none keeps it short.
//!   The options are written into the schema's `x-guidance` key, replacing any the
//!   client sent (clients do not get to loosen the grammar).
//! - **Unknown keywords are refused** (llguidance's `lenient: false`): a schema keyword
//!   the compiler cannot enforce (`uniqueItems`, `not`, ...) is a 400 naming it, never a
//!   silently unenforced constraint. So every output the matcher accepts is valid JSON
//!   that validates against the schema.
//! - **`strict: true`** follows OpenAI's strict mode, where every object has
//!   `additionalProperties: false`. OpenAI rejects a strict schema without it; we add it
//!   to every object schema that does not set `additionalProperties` itself (the
//!   output then validates against the client's schema and carries no invented keys).
//!   Members of an `allOf` are left alone: closing each of them would forbid the
//!   properties of the others. Without `strict`, the schema means what JSON Schema says:
//!   unlisted properties are allowed.

use serde_json::{json, Map, Value};

use crate::GrammarError;

/// Schemas nest no deeper than this (serde_json parses no deeper than 128 either).
const MAX_DEPTH: usize = 128;

/// The schema to hand to llguidance for `schema` (see the module docs).
pub(crate) fn prepare(schema: &Value, strict: bool) -> Result<Value, GrammarError> {
    let Value::Object(_) = schema else {
        return Err(GrammarError::new(format!(
            "a JSON schema must be a JSON object, not {}",
            kind(schema)
        )));
    };
    let mut schema = schema.clone();
    walk(&mut schema, strict, false, 0)?;
    if let Value::Object(map) = &mut schema {
        map.insert("x-guidance".to_string(), compact_options());
    }
    Ok(schema)
}

/// llguidance's `JsonCompileOptions` for compact, strictly validated output.
fn compact_options() -> Value {
    json!({
        "item_separator": ",",
        "key_separator": ":",
        "whitespace_flexible": false,
        "lenient": false,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_object_schema(map: &Map<String, Value>) -> bool {
    let typed_object = match map.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(types)) => types.iter().any(|t| t == "object"),
        _ => false,
    };
    typed_object || map.contains_key("properties")
}

/// Checks the depth and, with `strict`, closes object schemas (see the module docs).
fn walk(
    schema: &mut Value,
    strict: bool,
    in_all_of: bool,
    depth: usize,
) -> Result<(), GrammarError> {
    if depth > MAX_DEPTH {
        return Err(GrammarError::new(format!(
            "the JSON schema nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let Value::Object(map) = schema else {
        return Ok(());
    };
    if strict && !in_all_of && is_object_schema(map) && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".to_string(), Value::Bool(false));
    }
    for (key, value) in map.iter_mut() {
        let deeper = |v: &mut Value, in_all_of| walk(v, strict, in_all_of, depth + 1);
        match (key.as_str(), value) {
            ("properties" | "patternProperties" | "$defs" | "definitions", Value::Object(m)) => {
                m.values_mut().try_for_each(|v| deeper(v, false))?;
            }
            ("items" | "prefixItems" | "anyOf" | "oneOf", Value::Array(list)) => {
                list.iter_mut().try_for_each(|v| deeper(v, false))?;
            }
            ("allOf", Value::Array(list)) => {
                list.iter_mut().try_for_each(|v| deeper(v, true))?;
            }
            ("items" | "additionalProperties" | "additionalItems", v) => deeper(v, false)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_closes_nested_objects_but_not_all_of_members() {
        let schema = json!({
            "type": "object",
            "properties": {
                "inner": {"type": "object", "properties": {"a": {"type": "integer"}}},
                "list": {"type": "array", "items": {"properties": {"b": {}}}},
                "open": {"type": "object", "additionalProperties": true},
                "both": {"allOf": [{"properties": {"c": {}}}]}
            },
            "$defs": {"d": {"type": "object"}}
        });
        let out = prepare(&schema, true).unwrap();
        assert_eq!(out["additionalProperties"], false);
        assert_eq!(out["properties"]["inner"]["additionalProperties"], false);
        assert_eq!(
            out["properties"]["list"]["items"]["additionalProperties"],
            false
        );
        assert_eq!(out["properties"]["open"]["additionalProperties"], true);
        assert!(out["properties"]["both"]["allOf"][0]
            .get("additionalProperties")
            .is_none());
        assert_eq!(out["$defs"]["d"]["additionalProperties"], false);
        assert_eq!(out["x-guidance"]["whitespace_flexible"], false);
    }

    #[test]
    fn without_strict_the_schema_keeps_its_meaning() {
        let schema =
            json!({"type": "object", "properties": {"a": {}}, "x-guidance": {"lenient": true}});
        let out = prepare(&schema, false).unwrap();
        assert!(out.get("additionalProperties").is_none());
        assert_eq!(out["x-guidance"]["lenient"], false);
    }

    #[test]
    fn a_schema_must_be_an_object_and_not_too_deep() {
        let err = prepare(&json!([1]), false).unwrap_err();
        assert!(err.message.contains("an array"), "{err}");
        let mut deep = json!({"type": "integer"});
        for _ in 0..200 {
            deep = json!({"type": "array", "items": deep});
        }
        let err = prepare(&deep, false).unwrap_err();
        assert!(err.message.contains("deeper"), "{err}");
    }
}
