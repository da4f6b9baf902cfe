//! One choice of a request: engine events turned into text deltas, with streaming
//! detokenization, stop strings, logprobs, usage and latency metrics.

use std::sync::Arc;
use std::time::Instant;

use brisk_engine::{EngineEvent, EngineFailure, FinishReason, RequestStream};
use brisk_tokenizer::{IncrementalDecoder, Tokenizer};
use brisk_types::TokenId;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::queue::WaitingTicket;
use crate::stop::StopMatcher;
use crate::tool_calls::{ToolCall, ToolCallParser};

/// The log-probability of one generated token and its alternatives.
#[derive(Clone, Debug)]
pub struct TokenLogprob {
    /// The token's text.
    pub text: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Alternatives: (text, logprob), most likely first.
    pub top: Vec<(String, f32)>,
}

/// How a choice ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    /// `stop` or `length` (or `abort` when the server shut the request down).
    pub reason: &'static str,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated for this choice.
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// What one engine event produced for the client.
#[derive(Clone, Debug, Default)]
pub struct Delta {
    /// New text (may be empty while a stop string or a character is pending).
    pub text: String,
    /// Logprobs of the tokens consumed by this delta, if requested.
    pub logprobs: Vec<TokenLogprob>,
    /// Tool calls completed by this delta.
    pub tool_calls: Vec<ToolCall>,
    /// Set on the last delta.
    pub finish: Option<Finish>,
}

/// Runs once, when a choice's first token reaches the client's side (a hand-over to a decode
/// replica starts there).
pub type FirstTokenHook = Box<dyn FnOnce() + Send>;

/// Drives one engine request to completion.
pub struct ChoiceRun {
    stream: RequestStream,
    tokenizer: Arc<Tokenizer>,
    decoder: IncrementalDecoder,
    stop: StopMatcher,
    want_logprobs: bool,
    metrics: Arc<Metrics>,
    arrival: Instant,
    first_token: Option<Instant>,
    tokens: usize,
    done: bool,
    /// An event read ahead by [`ChoiceRun::prime`].
    stash: Option<EngineEvent>,
    /// The request's place among those waiting for a first token (`--max-waiting`).
    ticket: Option<WaitingTicket>,
    /// When the request must be done by (`--request-timeout`).
    deadline: Option<Instant>,
    /// Reads tool calls out of the text, when the request offered tools.
    tool_calls: Option<ToolCallParser>,
    /// Runs at the first token, unless that token ends the choice.
    first_token_hook: Option<FirstTokenHook>,
}

impl ChoiceRun {
    /// Wraps a submitted request.
    pub fn new(
        stream: RequestStream,
        tokenizer: Arc<Tokenizer>,
        stop: Vec<String>,
        want_logprobs: bool,
        metrics: Arc<Metrics>,
        arrival: Instant,
    ) -> Self {
        let decoder = tokenizer.decoder(true);
        Self {
            stream,
            tokenizer,
            decoder,
            stop: StopMatcher::new(stop),
            want_logprobs,
            metrics,
            arrival,
            first_token: None,
            tokens: 0,
            done: false,
            stash: None,
            ticket: None,
            deadline: None,
            tool_calls: None,
            first_token_hook: None,
        }
    }

    /// Runs `hook` when the first token arrives (not when it ends the choice).
    pub fn on_first_token(mut self, hook: Option<FirstTokenHook>) -> Self {
        self.first_token_hook = hook;
        self
    }

    /// Reads calls of the functions `names` out of the text (call ids `id_prefix-N`).
    pub fn with_tool_calls(mut self, names: Option<Vec<String>>, id_prefix: String) -> Self {
        self.tool_calls = names.map(|names| ToolCallParser::new(names, id_prefix));
        self
    }

    /// Text released by the stop matcher, split into content and tool calls.
    fn parse_calls(&mut self, text: String, last: bool) -> (String, Vec<ToolCall>) {
        let Some(parser) = self.tool_calls.as_mut() else {
            return (text, Vec::new());
        };
        let mut parsed = parser.push(&text);
        if last {
            let rest = parser.finish();
            parsed.text.push_str(&rest.text);
            parsed.calls.extend(rest.calls);
        }
        (parsed.text, parsed.calls)
    }

    /// Ends the request with a 504 if it is not done by `deadline`.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The next engine event, or `Err` once the deadline has passed (the request is then
    /// aborted and its blocks freed).
    async fn next_event(&mut self) -> Result<Option<EngineEvent>, ApiError> {
        let Some(deadline) = self.deadline else {
            return Ok(self.stream.next().await);
        };
        match tokio::time::timeout_at(deadline.into(), self.stream.next()).await {
            Ok(event) => Ok(event),
            Err(_) => {
                self.stream.abort();
                self.done = true;
                self.metrics
                    .request_success
                    .with_label_values(&["timeout"])
                    .inc();
                Err(ApiError::timeout(format!(
                    "the request did not finish within --request-timeout ({:.1} s)",
                    deadline.duration_since(self.arrival).as_secs_f64()
                )))
            }
        }
    }

    /// Holds `ticket` until the first token (or the end) arrives.
    pub fn with_ticket(mut self, ticket: WaitingTicket) -> Self {
        self.ticket = Some(ticket);
        self
    }

    /// Waits for the request's first event (its prefill is then done and its full prompt
    /// blocks are in the prefix cache), keeping the event for [`ChoiceRun::next`].
    pub async fn prime(&mut self) {
        if self.stash.is_none() && !self.done {
            self.stash = self.stream.next().await;
        }
    }

    /// The 429 to answer when the (primed) first event is admission control's refusal.
    pub fn rejection(&self) -> Option<ApiError> {
        match &self.stash {
            Some(EngineEvent::Rejected(message)) => Some(ApiError::slo_unattainable(message)),
            _ => None,
        }
    }

    fn token_text(&self, id: TokenId) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }

    /// The next delta; `None` after the last one.
    pub async fn next(&mut self) -> Option<Result<Delta, ApiError>> {
        if self.done {
            return None;
        }
        loop {
            let event = match self.stash.take() {
                Some(e) => Some(e),
                None => match self.next_event().await {
                    Ok(e) => e,
                    Err(timeout) => return Some(Err(timeout)),
                },
            };
            // Any event means the request has left the queue: a token, or its end.
            if let Some(ticket) = self.ticket.as_mut() {
                ticket.release();
            }
            let Some(event) = event else {
                self.done = true;
                return Some(Err(ApiError::unavailable("the engine stopped")));
            };
            match event {
                EngineEvent::Token(t) => {
                    if self.stop.stopped() {
                        continue; // generated before the engine saw our abort
                    }
                    self.tokens += 1;
                    self.first_token.get_or_insert_with(Instant::now);
                    let piece = match self.decoder.push(t.token) {
                        Ok(p) => p,
                        Err(e) => return Some(Err(ApiError::internal(e.to_string()))),
                    };
                    let logprobs = if self.want_logprobs {
                        vec![TokenLogprob {
                            text: self.token_text(t.token),
                            logprob: t.logprob,
                            top: t
                                .top_logprobs
                                .iter()
                                .map(|&(id, lp)| (self.token_text(id), lp))
                                .collect(),
                        }]
                    } else {
                        Vec::new()
                    };
                    let released = self.stop.push(&piece);
                    if released.stopped {
                        // The engine ends it as a stop and answers with `Finished`, which
                        // carries the usage.
                        self.stream.stop();
                    } else if let Some(hook) = self.first_token_hook.take() {
                        hook();
                    }
                    let (text, tool_calls) = self.parse_calls(released.text, false);
                    return Some(Ok(Delta {
                        text,
                        logprobs,
                        tool_calls,
                        finish: None,
                    }));
                }
                EngineEvent::Finished {
                    reason,
                    prompt_tokens,
                    cached_tokens,
                    ..
                } => {
                    self.done = true;
                    let mut text = String::new();
                    if !self.stop.stopped() {
                        let rest = self.decoder.finish().unwrap_or_default();
                        text = self.stop.push(&rest).text;
                        text.push_str(&self.stop.finish());
                    }
                    // A stop string that matched decides even when the engine ended the
                    // request for length before our stop reached it.
                    let reason = if self.stop.stopped() {
                        FinishReason::Stop.as_str()
                    } else {
                        reason.as_str()
                    };
                    let (text, tool_calls) = self.parse_calls(text, true);
                    let made_calls = self.tool_calls.as_ref().is_some_and(|p| p.made_calls());
                    // OpenAI's reason for an answer that ends in calls.
                    let reason = if made_calls && reason == "stop" {
                        "tool_calls"
                    } else {
                        reason
                    };
                    let finish = Finish {
                        reason,
                        prompt_tokens,
                        completion_tokens: self.tokens,
                        cached_tokens,
                    };
                    self.observe(&finish);
                    return Some(Ok(Delta {
                        text,
                        logprobs: Vec::new(),
                        tool_calls,
                        finish: Some(finish),
                    }));
                }
                EngineEvent::Failed(failure) => {
                    self.done = true;
                    return Some(Err(match failure {
                        EngineFailure::Invalid(message) => ApiError::invalid("prompt", message),
                        EngineFailure::Internal(message) => ApiError::internal(message),
                    }));
                }
                EngineEvent::Rejected(message) => {
                    self.done = true;
                    self.metrics
                        .request_success
                        .with_label_values(&["rejected"])
                        .inc();
                    return Some(Err(ApiError::slo_unattainable(message)));
                }
            }
        }
    }

    fn observe(&self, finish: &Finish) {
        let m = &self.metrics;
        let e2e = self.arrival.elapsed().as_secs_f64();
        m.e2e.observe(e2e);
        if let Some(first) = self.first_token {
            let ttft = first.duration_since(self.arrival).as_secs_f64();
            m.ttft.observe(ttft);
            if finish.completion_tokens > 1 {
                m.tpot
                    .observe((e2e - ttft) / (finish.completion_tokens - 1) as f64);
            }
        }
        m.prompt_tokens.inc_by(finish.prompt_tokens as u64);
        m.generation_tokens.inc_by(finish.completion_tokens as u64);
        m.request_success.with_label_values(&[finish.reason]).inc();
    }
}

impl Drop for ChoiceRun {
    fn drop(&mut self) {
        if !self.done {
            // The client went away (or the response failed) before the request finished;
            // dropping `stream` aborts it in the engine.
            self.metrics
                .request_success
                .with_label_values(&["abort"])
                .inc();
        }
    }
}
