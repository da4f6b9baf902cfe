//! `POST /tokenize` and `POST /detokenize`: the model's tokenizer over HTTP, so clients such
//! as `brisk bench --server-tokenizer` build prompts of exact token counts.
//!
//! One shape answers both dialects in use: llama.cpp's `llama-server` (`{"content"}` →
//! `{"tokens"}`, `{"tokens"}` → `{"content"}`) and vLLM's (`{"prompt"}` → `{"tokens",
//! "count", "max_model_len"}`, `{"tokens"}` → `{"prompt"}`). Special tokens (BOS) are added
//! only when asked (`add_special` or `add_special_tokens`), so counts are of the text alone.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::routes::{parse_body, read_body};
use crate::ServerState;

#[derive(serde::Deserialize)]
struct TokenizeRequest {
    /// vLLM's name for the text.
    prompt: Option<String>,
    /// llama.cpp's name for the text.
    content: Option<String>,
    /// llama.cpp: add BOS and the like.
    #[serde(default)]
    add_special: bool,
    /// vLLM: add BOS and the like.
    #[serde(default)]
    add_special_tokens: bool,
}

#[derive(serde::Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
}

/// `POST /tokenize`.
pub async fn tokenize(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = async {
        let req: TokenizeRequest = parse_body(&read_body(body)?)?;
        let text = req
            .prompt
            .or(req.content)
            .ok_or_else(|| ApiError::invalid("prompt", "give the text as `prompt` or `content`"))?;
        let add_special = req.add_special || req.add_special_tokens;
        let tok = Arc::clone(&state.tokenizer);
        let ids = blocking(move || {
            tok.encode(&text, add_special)
                .map_err(|e| ApiError::invalid("prompt", e.to_string()))
        })
        .await?;
        Ok::<_, ApiError>(axum::Json(json!({
            "tokens": ids,
            "count": ids.len(),
            "max_model_len": state.max_context,
        })))
    };
    match run.await {
        Ok(v) => v.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /detokenize`.
pub async fn detokenize(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = async {
        let req: DetokenizeRequest = parse_body(&read_body(body)?)?;
        if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= state.vocab_size) {
            return Err(ApiError::invalid(
                "tokens",
                format!(
                    "token id {bad} is outside the vocabulary of {}",
                    state.vocab_size
                ),
            ));
        }
        let tok = Arc::clone(&state.tokenizer);
        let text = blocking(move || {
            tok.decode(&req.tokens, false)
                .map_err(|e| ApiError::invalid("tokens", e.to_string()))
        })
        .await?;
        Ok(axum::Json(json!({"content": text, "prompt": text})))
    };
    match run.await {
        Ok(v) => v.into_response(),
        Err(e) => e.into_response(),
    }
}
