//! Chat templates: the model's own Jinja template, rendered with minijinja.
//!
//! Templates are written for Python's jinja2 as transformers runs it, so the
//! environment mirrors that one: `trim_blocks` and `lstrip_blocks` on, Python string
//! methods (`.strip()`, `.startswith()`, ...) through minijinja-contrib's pycompat
//! callback, the contrib filters, and a `raise_exception(message)` function that
//! templates use to reject conversations they cannot format. The template is compiled
//! once, when the model loads, so syntax errors surface there and not per request.

use std::sync::Arc;

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::TokenizerError;

const TEMPLATE_NAME: &str = "chat_template";

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ... (templates decide what they accept).
    pub role: String,
    /// The message text.
    pub content: String,
    /// An assistant turn's tool calls, as templates that know tools read them:
    /// `[{"type": "function", "function": {"name", "arguments": {..}}}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// A tool turn's answer to this call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
        }
    }
}

/// A compiled chat template.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: String,
    bos_token: String,
    eos_token: String,
}

/// minijinja's error with its chain of causes, in one line.
fn describe(err: &minijinja::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the texts the template may insert.
    pub fn new(
        source: String,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<(), minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| TokenizerError::TemplateSyntax {
                message: describe(&e),
            })?;
        Ok(Self {
            env: Arc::new(env),
            source,
            bos_token,
            eos_token,
        })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Formats a conversation; with `add_generation_prompt` the result ends where the
    /// assistant's reply begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// Whether the template itself describes tools to the model (reads `tools`).
    pub fn knows_tools(&self) -> bool {
        self.source.contains("tools")
    }

    /// [`Self::render`] with the tools the model may call (OpenAI's `tools` list), for
    /// templates that describe them ([`Self::knows_tools`]).
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let render_error = |e: minijinja::Error| TokenizerError::TemplateRender {
            message: describe(&e),
        };
        let template = self.env.get_template(TEMPLATE_NAME).map_err(render_error)?;
        template
            .render(context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(render_error)
    }
}
