//! Reading a tokenizer from a Hugging Face model directory.
//!
//! `tokenizer.json` is required; the ids of BOS/EOS and the chat template come from
//! the files transformers reads them from: `tokenizer_config.json` (`bos_token`,
//! `eos_token`, `add_bos_token`, `chat_template`), `chat_template.jinja` or
//! `chat_template.json` (newer repositories keep the template there),
//! `generation_config.json` (`eos_token_id`, which may be a list) and, when that file is
//! absent, `config.json`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Parts, TokenizerError};

fn read(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses `dir/name` if it exists.
fn optional_json(dir: &Path, name: &str) -> Result<Option<(PathBuf, Value)>, TokenizerError> {
    let path = dir.join(name);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read(&path)?;
    let value = serde_json::from_slice(&bytes).map_err(|source| TokenizerError::Json {
        path: path.clone(),
        source,
    })?;
    Ok(Some((path, value)))
}

fn invalid(path: &Path, field: &str, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::InvalidMetadata {
        key: format!("{}: {field}", path.display()),
        reason: reason.into(),
    }
}

/// A special token named in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_content(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// `eos_token_id`-style fields: one id or a list.
fn ids_field(path: &Path, json: &Value, field: &str) -> Result<Vec<u32>, TokenizerError> {
    let as_id = |v: &Value| v.as_u64().and_then(|v| u32::try_from(v).ok());
    match json.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| as_id(v).ok_or_else(|| invalid(path, field, "expected token ids")))
            .collect(),
        Some(v) => {
            Ok(vec![as_id(v).ok_or_else(|| {
                invalid(path, field, "expected a token id")
            })?])
        }
    }
}

/// `chat_template`: a string, or a list of `{name, template}` of which "default" is used.
fn template_field(path: &Path, value: &Value) -> Result<Option<String>, TokenizerError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(items) => {
            let named = |name: &str| {
                items
                    .iter()
                    .find(|item| item.get("name").and_then(Value::as_str) == Some(name))
            };
            let chosen = named("default").or_else(|| items.first());
            match chosen.map(|item| item.get("template").and_then(Value::as_str)) {
                None => Ok(None),
                Some(Some(s)) => Ok(Some(s.to_string())),
                Some(None) => Err(invalid(path, "chat_template", "entry without a template")),
            }
        }
        _ => Err(invalid(
            path,
            "chat_template",
            "expected a string or a list",
        )),
    }
}

pub(crate) fn load(dir: &Path) -> Result<Parts, TokenizerError> {
    let path = dir.join("tokenizer.json");
    let bytes = read(&path)?;
    let inner = tokenizers::Tokenizer::from_bytes(&bytes)
        .map_err(|source| TokenizerError::LoadTokenizerJson { path, source })?;
    let lookup = |name: &str| inner.token_to_id(name);

    let config = optional_json(dir, "tokenizer_config.json")?;
    let generation = optional_json(dir, "generation_config.json")?;
    let model_config = optional_json(dir, "config.json")?;

    let mut bos_id = None;
    let mut add_bos = None;
    let mut eos_ids = Vec::new();
    let mut chat_template = None;
    if let Some((path, json)) = &config {
        bos_id = json
            .get("bos_token")
            .and_then(token_content)
            .and_then(lookup);
        eos_ids.extend(
            json.get("eos_token")
                .and_then(token_content)
                .and_then(lookup),
        );
        add_bos = match json.get("add_bos_token") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_bool()
                    .ok_or_else(|| invalid(path, "add_bos_token", "expected a bool"))?,
            ),
        };
        if let Some(v) = json.get("chat_template") {
            chat_template = template_field(path, v)?;
        }
    }
    // The model's generation settings take precedence over its architecture config.
    if let Some((path, json)) = generation.as_ref().or(model_config.as_ref()) {
        eos_ids.extend(ids_field(path, json, "eos_token_id")?);
        if bos_id.is_none() {
            bos_id = ids_field(path, json, "bos_token_id")?.first().copied();
        }
    }
    if chat_template.is_none() {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let bytes = read(&jinja)?;
            chat_template = Some(
                String::from_utf8(bytes)
                    .map_err(|_| invalid(&jinja, "chat_template", "the file is not UTF-8"))?,
            );
        } else if let Some((path, json)) = optional_json(dir, "chat_template.json")? {
            if let Some(v) = json.get("chat_template") {
                chat_template = template_field(&path, v)?;
            }
        }
    }
    // Without an explicit flag, ask the post-processor: does it put BOS in front?
    let add_bos = match (add_bos, bos_id) {
        (Some(flag), _) => flag,
        (None, Some(bos)) => inner
            .encode("", true)
            .is_ok_and(|e| e.get_ids().first() == Some(&bos)),
        (None, None) => false,
    };
    let vocab_size = inner
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&max| max as usize + 1);
    Ok(Parts {
        inner,
        vocab_size,
        bos_id,
        add_bos,
        eos_ids,
        chat_template,
    })
}
