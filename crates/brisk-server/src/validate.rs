//! Turning a parsed request into engine requests, refusing what cannot be served.

use brisk_engine::{EngineRequest, Priority, RequestSlo, RequestSpec};
use brisk_sampling::SamplingParams;
use brisk_types::TokenId;

use crate::error::ApiError;
use crate::protocol::SamplingFields;
use crate::ServerState;

/// Most choices one request may ask for.
pub const MAX_N: usize = 16;
/// Most stop strings per request.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_LEN: usize = 512;
/// Most alternatives per token in logprobs.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A validated generation: the prompt, `n` engine requests' worth of settings, stop strings.
#[derive(Debug)]
pub struct GenerationSpec {
    /// The engine request of choice 0 (the others differ only in seed).
    pub request: EngineRequest,
    /// Number of choices.
    pub n: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Stream as SSE.
    pub stream: bool,
    /// Send usage in the final streamed chunk.
    pub include_usage: bool,
    /// The functions whose calls are read out of the answer (`None`: no tools offered).
    pub tool_names: Option<Vec<String>>,
    /// The decode replica to hand the request over to after its first token (prefill/decode
    /// disaggregation: the router's `x-brisk-decode-on`), if any.
    pub decode_on: Option<String>,
}

impl GenerationSpec {
    /// The engine request of choice `i`: seeded requests get distinct, reproducible seeds.
    pub fn request_for_choice(&self, i: usize) -> EngineRequest {
        let mut r = self.request.clone();
        if let Some(seed) = r.sampling.seed {
            r.sampling.seed = Some(seed.wrapping_add(i as u64));
        }
        r
    }
}

/// `logit_bias` as (token, bias) pairs: keys must be token ids of this model's vocabulary,
/// values numbers (their range is checked with the other sampling parameters).
fn logit_bias(
    state: &ServerState,
    fields: &SamplingFields,
) -> Result<Vec<(TokenId, f32)>, ApiError> {
    let map = match &fields.logit_bias {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Object(map)) => map,
        Some(other) => {
            return Err(ApiError::invalid(
                "logit_bias",
                format!("`logit_bias` must be an object of token id → bias, got {other}"),
            ))
        }
    };
    if map.len() > brisk_sampling::MAX_LOGIT_BIAS {
        return Err(ApiError::invalid(
            "logit_bias",
            format!(
                "`logit_bias` may bias at most {} tokens, got {}",
                brisk_sampling::MAX_LOGIT_BIAS,
                map.len()
            ),
        ));
    }
    map.iter()
        .map(|(key, value)| {
            let token = key
                .parse::<TokenId>()
                .ok()
                .filter(|&t| (t as usize) < state.vocab_size)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "logit_bias",
                        format!(
                            "`logit_bias` key `{key}` is not a token id of this model (0..{})",
                            state.vocab_size
                        ),
                    )
                })?;
            let bias = value.as_f64().filter(|b| b.is_finite()).ok_or_else(|| {
                ApiError::invalid(
                    "logit_bias",
                    format!("`logit_bias[\"{key}\"]` must be a number, got {value}"),
                )
            })? as f32;
            Ok((token, bias))
        })
        .collect()
}

fn non_negative(param: &str, v: i64) -> Result<usize, ApiError> {
    usize::try_from(v)
        .map_err(|_| ApiError::invalid(param, format!("`{param}` must be >= 0, got {v}")))
}

/// The request's objective: body fields override the server's defaults; `None` when neither
/// bounds anything. Bounds must be positive numbers of milliseconds.
fn request_slo(
    state: &ServerState,
    fields: &SamplingFields,
) -> Result<Option<RequestSlo>, ApiError> {
    let (mut ttft, mut tpot) = (None, None);
    match &fields.slo {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (key, value) in map {
                let slot = match key.as_str() {
                    "ttft_ms" => &mut ttft,
                    "tpot_ms" => &mut tpot,
                    other => {
                        return Err(ApiError::invalid(
                            format!("slo.{other}"),
                            format!("unknown field `slo.{other}`; expected `ttft_ms` or `tpot_ms`"),
                        ))
                    }
                };
                let ms = value.as_f64().filter(|ms| ms.is_finite() && *ms > 0.0);
                match (ms, value) {
                    (Some(ms), _) => *slot = Some(ms),
                    (None, serde_json::Value::Null) => {}
                    (None, v) => {
                        return Err(ApiError::invalid(
                            format!("slo.{key}"),
                            format!(
                                "`slo.{key}` must be a positive number of milliseconds, got {v}"
                            ),
                        ))
                    }
                }
            }
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "slo",
                format!(
                "`slo` must be an object like {{\"ttft_ms\": 800, \"tpot_ms\": 80}}, got {other}"
            ),
            ))
        }
    }
    Ok(state.slo.defaults.objective(ttft, tpot))
}

/// Longest `user` accepted, in bytes: it names a fair-share account while the user has
/// requests in the server.
pub const MAX_USER_BYTES: usize = 256;

/// The client for fair share: OpenAI's `user`, a string of at most [`MAX_USER_BYTES`].
fn client(fields: &SamplingFields) -> Result<Option<String>, ApiError> {
    match fields.user.as_ref() {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.len() <= MAX_USER_BYTES => Ok(Some(s.clone())),
        Some(serde_json::Value::String(s)) => Err(ApiError::invalid(
            "user",
            format!(
                "`user` is {} bytes long; at most {MAX_USER_BYTES} are accepted",
                s.len()
            ),
        )),
        Some(other) => Err(ApiError::invalid(
            "user",
            format!("`user` must be a string, got {other}"),
        )),
    }
}

fn priority(fields: &SamplingFields) -> Result<Priority, ApiError> {
    match fields.priority.as_ref() {
        None | Some(serde_json::Value::Null) => Ok(Priority::Interactive),
        Some(value) => value.as_str().and_then(Priority::parse).ok_or_else(|| {
            ApiError::invalid(
                "priority",
                format!("`priority` must be \"interactive\" or \"batch\", got {value}"),
            )
        }),
    }
}

/// `speculative`: whether the request may verify drafts (default `true`).
fn speculative(fields: &SamplingFields) -> Result<bool, ApiError> {
    match fields.speculative.as_ref() {
        None | Some(serde_json::Value::Null) => Ok(true),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::invalid(
            "speculative",
            format!("`speculative` must be true or false, got {other}"),
        )),
    }
}

/// Checks the model name.
pub fn check_model(state: &ServerState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m) if !state.serves(m) => Err(ApiError::model_not_found(m, &state.model_name)),
        _ => Ok(()),
    }
}

/// Builds the spec from the shared fields, once the prompt is tokenized.
pub fn build_spec(
    state: &ServerState,
    fields: &SamplingFields,
    prompt: Vec<TokenId>,
    logprobs: Option<usize>,
) -> Result<GenerationSpec, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    let context = state.max_context;
    if prompt.len() >= context {
        return Err(ApiError::context_length("prompt", format!(
            "This model's maximum context length is {context} tokens. However, your prompt has {} tokens, \
             which leaves no room for the completion.",
            prompt.len()
        )));
    }
    let room = context - prompt.len();
    let max_tokens = match fields.max_completion_tokens.or(fields.max_tokens) {
        None => room,
        Some(v) => {
            let v = non_negative("max_tokens", v)?;
            if v == 0 {
                return Err(ApiError::invalid(
                    "max_tokens",
                    "`max_tokens` must be at least 1",
                ));
            }
            if v > room && state.clamp_max_tokens {
                room
            } else if v > room {
                return Err(ApiError::context_length("max_tokens", format!(
                    "This model's maximum context length is {context} tokens. However, you requested {} tokens \
                     ({} in the prompt, {v} in the completion). Please reduce the prompt or max_tokens.",
                    prompt.len() + v,
                    prompt.len()
                )));
            } else {
                v
            }
        }
    };
    let n = match fields.n {
        None => 1,
        Some(v) => non_negative("n", v)?,
    };
    if n == 0 || n > MAX_N {
        return Err(ApiError::invalid(
            "n",
            format!("`n` must be between 1 and {MAX_N}, got {n}"),
        ));
    }
    let min_tokens = match fields.min_tokens {
        None => 0,
        Some(v) => non_negative("min_tokens", v)?,
    };
    if min_tokens > max_tokens {
        return Err(ApiError::invalid(
            "min_tokens",
            format!("`min_tokens` ({min_tokens}) must not exceed `max_tokens` ({max_tokens})"),
        ));
    }
    let stop = fields
        .stop
        .clone()
        .map(|s| s.into_vec())
        .unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "at most {MAX_STOP_STRINGS} stop strings are allowed, got {}",
                stop.len()
            ),
        ));
    }
    if let Some(s) = stop.iter().find(|s| s.len() > MAX_STOP_LEN) {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "stop strings are limited to {MAX_STOP_LEN} bytes, one has {}",
                s.len()
            ),
        ));
    }
    let vocab = state.vocab_size;
    let stop_token_ids = fields
        .stop_token_ids
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|id| {
            u32::try_from(id)
                .ok()
                .filter(|&id| (id as usize) < vocab)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "stop_token_ids",
                        format!("token id {id} is outside the vocabulary of {vocab}"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(k) = logprobs {
        if k > MAX_TOP_LOGPROBS {
            return Err(ApiError::invalid(
                "logprobs",
                format!("at most {MAX_TOP_LOGPROBS} alternatives per token, got {k}"),
            ));
        }
    }
    let top_k = match fields.top_k {
        None | Some(-1) => 0,
        Some(v) => non_negative("top_k", v)?,
    };
    let defaults = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: fields.temperature.unwrap_or(defaults.temperature),
        top_p: fields.top_p.unwrap_or(defaults.top_p),
        top_k,
        min_p: fields.min_p.unwrap_or(defaults.min_p),
        repetition_penalty: fields
            .repetition_penalty
            .unwrap_or(defaults.repetition_penalty),
        frequency_penalty: fields
            .frequency_penalty
            .unwrap_or(defaults.frequency_penalty),
        presence_penalty: fields.presence_penalty.unwrap_or(defaults.presence_penalty),
        seed: fields.seed.map(|s| s as u64),
        logit_bias: logit_bias(state, fields)?,
    };
    sampling
        .validate()
        .map_err(|e| ApiError::invalid(e.param, e.to_string()))?;
    let slo = request_slo(state, fields)?;
    let priority = priority(fields)?;
    let client = client(fields)?;
    Ok(GenerationSpec {
        request: EngineRequest {
            spec: RequestSpec {
                prompt,
                max_tokens,
                min_tokens,
                ignore_eos: fields.ignore_eos,
                stop_token_ids,
                slo,
                priority,
                client,
                speculative: speculative(fields)?,
                park_after_first_token: false,
            },
            sampling,
            logprobs,
            received: None,
            constraint: None,
        },
        n,
        stop,
        stream: fields.stream,
        include_usage: fields
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
        tool_names: None,
        decode_on: None,
    })
}
