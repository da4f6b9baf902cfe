//! Structured outputs: constraining generation to a JSON schema, a regex, a list of
//! choices or a context-free grammar, by masking the logits of every token that could
//! not continue a valid output.
//!
//! Built on [llguidance](https://github.com/guidance-ai/llguidance), the engine behind
//! structured outputs in llama.cpp (`%llguidance`), SGLang and vLLM's `guidance` backend:
//! an Earley parser over a lexer of derivative-based regexes, walking the tokenizer's
//! byte trie to compute a mask in tens of microseconds per token. What this crate adds:
//!
//! - the request side ([`GrammarSpec`]): OpenAI `response_format` (`json_object`,
//!   `json_schema` with `strict`) and vLLM's `guided_regex`, `guided_choice` and
//!   `guided_grammar` (Lark, or llama.cpp GBNF converted to Lark by `gbnf`);
//! - one [`Grammars`] per served model: the token trie built from
//!   `brisk_tokenizer::Tokenizer::token_bytes`, the parser factory, and a bounded cache of
//!   compiled grammars (a popular schema is compiled once, then cloned per sequence);
//! - one [`Constraint`] per sequence: [`Constraint::next_mask`] before sampling,
//!   [`Constraint::commit`] after, [`Constraint::is_finished`] to end the sequence.
//!
//! Every refusal is a [`GrammarError`] whose message names the problem, for a 400.

#![deny(missing_docs)]

mod cache;
mod constraint;
mod engine;
mod gbnf;
mod grammars;
mod json;
mod spec;

pub use constraint::{Constraint, TokenMask};
pub use engine::SharedGrammar;
pub use grammars::Grammars;

/// What the client asked the output to match.
#[derive(Clone, Debug, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (OpenAI `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A value valid against a JSON schema (OpenAI `json_schema`). With `strict`, objects
    /// that do not say otherwise allow no properties beyond those listed, as OpenAI's
    /// strict mode requires (`additionalProperties: false`).
    JsonSchema {
        /// The schema, a JSON object.
        schema: serde_json::Value,
        /// OpenAI's `strict` flag.
        strict: bool,
    },
    /// Text matching a regex as a whole (Rust `regex` syntax; vLLM `guided_regex`).
    Regex(String),
    /// Exactly one of these strings (vLLM `guided_choice`).
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark syntax, starting at `start`.
    Lark(String),
    /// A llama.cpp GBNF grammar, starting at `root`; converted to Lark.
    Gbnf(String),
}

/// Why a grammar was refused, or a constrained sequence cannot go on: a message for a
/// 400 that names the problem.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct GrammarError {
    /// What went wrong, for the client.
    pub message: String,
}

impl GrammarError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
