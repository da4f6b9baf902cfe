//! HTTP handlers.

pub mod chat;
pub mod completions;
pub mod handover;
pub mod misc;
pub mod responses;
pub mod tokenize;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::validate::GenerationSpec;
use crate::ServerState;

/// What a render route answers for one prompt: its token ids (vLLM's `GenerateRequest`
/// fields that routers read; `features` is for images and audio, which brisk has none of).
pub fn rendered(state: &ServerState, spec: &GenerationSpec) -> serde_json::Value {
    serde_json::json!({
        "model": state.model_name,
        "token_ids": spec.request.prompt,
        "features": null,
    })
}

/// The body, or an OpenAI error for one that could not be read (413 past
/// `--max-request-bytes`, 400 for a broken upload).
pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.into_response().status();
        ApiError {
            status,
            message: if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                "the request body is larger than this server accepts (--max-request-bytes)".into()
            } else {
                "the request body could not be read".into()
            },
            param: None,
            code: Some("invalid_request_body"),
        }
    })
}

/// Parses a JSON body, turning every failure (invalid UTF-8, syntax, wrong types) into a 400.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_body(
            "the request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_body(format!("invalid request body: {e}")))
}
