//! The ways a request constrains its output, read into one [`GrammarSpec`].
//!
//! OpenAI's `response_format`, vLLM's `structured_outputs` and its older `guided_*` fields
//! all say the same thing in different words; a request may use one of them. Each mistake
//! is a 400 naming the field; compiling the grammar (which can refuse it too) happens later,
//! off the engine thread ([`compile`]).

use std::sync::Arc;

use brisk_sampling::ConstraintSource;
use brisk_structured::{GrammarSpec, Grammars, SharedGrammar};
use serde_json::Value;

use crate::error::ApiError;
use crate::protocol::SamplingFields;
use crate::tools::Tools;
use crate::validate::GenerationSpec;
use crate::ServerState;

/// The request's constraint, if it asks for one, with the field that asked.
pub fn grammar_spec(
    fields: &SamplingFields,
) -> Result<Option<(&'static str, GrammarSpec)>, ApiError> {
    let given: Vec<(&'static str, &Value)> = [
        ("response_format", &fields.response_format),
        ("structured_outputs", &fields.structured_outputs),
        ("guided_json", &fields.guided_json),
        ("guided_regex", &fields.guided_regex),
        ("guided_choice", &fields.guided_choice),
        ("guided_grammar", &fields.guided_grammar),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.as_ref().filter(|v| !v.is_null()).map(|v| (name, v)))
    .collect();
    let (name, value) = match given.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        [(a, _), (b, _), ..] => {
            return Err(ApiError::invalid(
                *b,
                format!("`{a}` and `{b}` both constrain the output; give one of them"),
            ))
        }
    };
    let spec = match name {
        "response_format" => response_format(value)?,
        "structured_outputs" => Some(structured_outputs(value)?),
        "guided_json" => Some(json_schema(name, value, false)?),
        "guided_regex" => Some(GrammarSpec::Regex(text(name, value)?)),
        "guided_choice" => Some(choice(name, value)?),
        _ => Some(grammar(text(name, value)?)),
    };
    Ok(spec.map(|spec| (name, spec)))
}

/// Constrains `spec`'s requests as `fields` ask, or as the offered `tools` require (a
/// forced call): the grammar is compiled off the engine thread. Refused: both at once, and
/// `min_tokens` beside a grammar (its output ends where the grammar does).
pub async fn constrain(
    state: &ServerState,
    fields: &SamplingFields,
    tools: Option<&Tools>,
    spec: &mut GenerationSpec,
) -> Result<(), ApiError> {
    let asked = grammar_spec(fields)?;
    let (param, grammar) = match (asked, tools) {
        (Some((param, _)), Some(_)) => {
            return Err(ApiError::invalid(
                param,
                format!("`{param}` cannot be combined with `tools`; offer the tools or constrain the answer, not both"),
            ))
        }
        (Some(asked), None) => asked,
        (None, Some(tools)) => match tools.grammar() {
            Some(grammar) => ("tool_choice", grammar),
            None => return Ok(()),
        },
        (None, None) => return Ok(()),
    };
    if spec.request.min_tokens > 0 {
        return Err(ApiError::invalid(
            "min_tokens",
            format!("`min_tokens` cannot be combined with `{param}`: the output ends where its grammar does"),
        ));
    }
    let grammars = state.grammars.as_ref().ok_or_else(|| {
        ApiError::invalid(
            param,
            "structured outputs are unavailable: this model's vocabulary could not be read for them",
        )
    })?;
    spec.request.constraint = Some(compile(grammars, grammar, param).await?);
    Ok(())
}

/// OpenAI's `response_format`.
fn response_format(value: &Value) -> Result<Option<GrammarSpec>, ApiError> {
    let bad = |message: String| ApiError::invalid("response_format", message);
    let kind = value.get("type").and_then(Value::as_str).ok_or_else(|| {
        bad(format!(
            "`response_format` needs a string `type`, got {value}"
        ))
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(GrammarSpec::JsonObject)),
        "json_schema" => {
            let spec = value.get("json_schema").filter(|v| v.is_object()).ok_or_else(|| {
                bad("`response_format.json_schema` must be an object with a `schema`".into())
            })?;
            let strict = match spec.get("strict") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(ApiError::invalid(
                        "response_format.json_schema.strict",
                        format!("`strict` must be a boolean, got {other}"),
                    ))
                }
            };
            let schema = spec.get("schema").ok_or_else(|| {
                ApiError::invalid(
                    "response_format.json_schema.schema",
                    "`response_format.json_schema` needs its `schema`",
                )
            })?;
            json_schema("response_format.json_schema.schema", schema, strict).map(Some)
        }
        other => Err(bad(format!(
            "`response_format.type` {other:?} is not supported; expected \"text\", \"json_object\" or \"json_schema\""
        ))),
    }
}

/// vLLM's `structured_outputs`: exactly one of its constraint fields.
fn structured_outputs(value: &Value) -> Result<GrammarSpec, ApiError> {
    let map = value.as_object().ok_or_else(|| {
        ApiError::invalid(
            "structured_outputs",
            format!("`structured_outputs` must be an object, got {value}"),
        )
    })?;
    let mut spec = None;
    for (key, v) in map.iter().filter(|(_, v)| !v.is_null()) {
        let param = format!("structured_outputs.{key}");
        let this = match key.as_str() {
            "json" => json_schema(&param, v, false)?,
            "regex" => GrammarSpec::Regex(text(&param, v)?),
            "choice" => choice(&param, v)?,
            "grammar" => grammar(text(&param, v)?),
            "json_object" if v == &Value::Bool(true) => GrammarSpec::JsonObject,
            "json_object" if v == &Value::Bool(false) => continue,
            _ => {
                return Err(ApiError::invalid(
                    param,
                    format!(
                        "`structured_outputs.{key}` is not supported; give one of `json`, \
                         `regex`, `choice`, `grammar` or `json_object: true`"
                    ),
                ))
            }
        };
        if spec.replace(this).is_some() {
            return Err(ApiError::invalid(
                "structured_outputs",
                "`structured_outputs` may hold only one of `json`, `regex`, `choice`, `grammar`, `json_object`",
            ));
        }
    }
    spec.ok_or_else(|| {
        ApiError::invalid(
            "structured_outputs",
            "`structured_outputs` holds no constraint",
        )
    })
}

/// A JSON schema, given as an object (or a boolean) or as a string holding one.
fn json_schema(param: &str, value: &Value, strict: bool) -> Result<GrammarSpec, ApiError> {
    let schema = match value {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| ApiError::invalid(param, format!("`{param}` is not valid JSON: {e}")))?,
        v => v.clone(),
    };
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be a JSON schema (an object), got {schema}"),
        ));
    }
    Ok(GrammarSpec::JsonSchema { schema, strict })
}

fn text(param: &str, value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        other => Err(ApiError::invalid(
            param,
            format!("`{param}` must be a non-empty string, got {other}"),
        )),
    }
}

fn choice(param: &str, value: &Value) -> Result<GrammarSpec, ApiError> {
    let bad = || {
        ApiError::invalid(
            param,
            format!("`{param}` must be a non-empty list of strings, got {value}"),
        )
    };
    let list = value.as_array().filter(|l| !l.is_empty()).ok_or_else(bad)?;
    list.iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
        .collect::<Result<_, _>>()
        .map(GrammarSpec::Choice)
}

/// A grammar is GBNF (llama.cpp's, as vLLM's xgrammar takes it) when its rules are written
/// with `::=`, Lark (llguidance's) otherwise.
fn grammar(text: String) -> GrammarSpec {
    if text.contains("::=") {
        GrammarSpec::Gbnf(text)
    } else {
        GrammarSpec::Lark(text)
    }
}

/// Compiles `spec` on tokio's blocking pool (grammars can take a while; never on the engine
/// thread): a 400 naming `param` when the grammar is refused.
async fn compile(
    grammars: &Arc<Grammars>,
    spec: GrammarSpec,
    param: &'static str,
) -> Result<Arc<dyn ConstraintSource>, ApiError> {
    let grammars = Arc::clone(grammars);
    let compiled = tokio::task::spawn_blocking(move || grammars.compile(&spec))
        .await
        .map_err(|e| ApiError::internal(format!("grammar compilation panicked: {e}")))?;
    compiled
        .map(|c| Arc::new(SharedGrammar::new(c)) as Arc<dyn ConstraintSource>)
        .map_err(|e| ApiError::invalid(param, e.message))
}
