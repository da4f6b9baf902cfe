//! HTTP handlers.

pub mod chat;
pub mod completions;
pub mod misc;

use serde::de::DeserializeOwned;

use crate::error::ApiError;

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
