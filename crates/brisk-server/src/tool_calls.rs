//! Tool calls read out of a model's text as it streams.
//!
//! Two formats are recognised, those the supported models emit: Hermes/Qwen
//! (`<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>`, any number of them, text
//! around them being the message's content) and Llama-3 JSON (the whole answer is
//! `{"name": .., "parameters": {..}}`, several separated by `;`). Text that only might be
//! the start of a call is held back until it is clear, so a client never sees a call's
//! markup as content; a block that does not parse as a call of a declared tool is passed
//! on as text, as vLLM's parsers do.

use serde_json::Value;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// One call the model made.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// Its place among the choice's calls (OpenAI's `tool_calls[].index` in streams).
    pub index: usize,
    /// `call_…`, unique within the server's lifetime.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// Its arguments, as a JSON text (OpenAI's `function.arguments`).
    pub arguments: String,
}

/// What a piece of the model's text turned into.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Content to pass on.
    pub text: String,
    /// Calls completed by this piece.
    pub calls: Vec<ToolCall>,
}

/// Splits one choice's text into content and tool calls, incrementally.
#[derive(Debug)]
pub struct ToolCallParser {
    names: Vec<String>,
    /// Text not yet passed on (a possible start of a call, or a call in progress).
    held: String,
    in_call: bool,
    /// Whitespace between calls, passed on only if more content follows.
    pending_space: String,
    /// Whether any content has been passed on (a Llama-3 call is the whole answer).
    said_anything: bool,
    calls: usize,
    id_prefix: String,
}

impl ToolCallParser {
    /// A parser accepting calls of the functions `names`; call ids start with `id_prefix`.
    pub fn new(names: Vec<String>, id_prefix: String) -> Self {
        Self {
            names,
            held: String::new(),
            in_call: false,
            pending_space: String::new(),
            said_anything: false,
            calls: 0,
            id_prefix,
        }
    }

    /// Whether any call has been made.
    pub fn made_calls(&self) -> bool {
        self.calls > 0
    }

    /// Takes the next piece of text.
    pub fn push(&mut self, piece: &str) -> Parsed {
        self.held.push_str(piece);
        let mut out = Parsed::default();
        loop {
            if self.in_call {
                let Some(end) = self.held.find(CLOSE) else {
                    break;
                };
                let body: String = self.held[..end].to_owned();
                self.held.drain(..end + CLOSE.len());
                self.in_call = false;
                match self.call_from(&body) {
                    Some(call) => {
                        self.pending_space.clear();
                        out.calls.push(call);
                    }
                    None => self.say(&mut out, &format!("{OPEN}{body}{CLOSE}")),
                }
                continue;
            }
            if !self.said_anything && self.calls == 0 && self.held.trim_start().starts_with('{') {
                break; // perhaps a Llama-3 call: the whole answer decides
            }
            if let Some(start) = self.held.find(OPEN) {
                let before: String = self.held[..start].to_owned();
                self.held.drain(..start + OPEN.len());
                self.say(&mut out, &before);
                self.pending_space.clear();
                self.in_call = true;
                continue;
            }
            let keep = partial_suffix(&self.held, OPEN);
            let ready: String = self.held.drain(..self.held.len() - keep).collect();
            self.say(&mut out, &ready);
            break;
        }
        out
    }

    /// The end of the text: what was held back is a call or content.
    pub fn finish(&mut self) -> Parsed {
        let mut out = Parsed::default();
        let held = std::mem::take(&mut self.held);
        if self.in_call {
            // The model may end right after the call's JSON, without the closing tag.
            self.in_call = false;
            match self.call_from(&held) {
                Some(call) => out.calls.push(call),
                None => self.say(&mut out, &format!("{OPEN}{held}")),
            }
        } else if !self.said_anything && self.calls == 0 && held.trim_start().starts_with('{') {
            let calls: Option<Vec<ToolCall>> =
                held.split(';').map(|part| self.call_from(part)).collect();
            match calls {
                Some(calls) if !calls.is_empty() => out.calls = calls,
                _ => self.say(&mut out, &held),
            }
        } else {
            self.say(&mut out, &held);
        }
        out
    }

    /// Passes `text` on as content, keeping trailing whitespace back until more content
    /// follows it (whitespace before a call, or at the very end, is dropped; leading
    /// whitespace too).
    fn say(&mut self, out: &mut Parsed, text: &str) {
        let body = text.trim_end();
        if !body.is_empty() {
            if self.said_anything {
                out.text.push_str(&self.pending_space);
            }
            let body = if self.said_anything {
                body
            } else {
                body.trim_start()
            };
            out.text.push_str(body);
            self.pending_space.clear();
            self.said_anything = true;
        }
        self.pending_space.push_str(&text[body.len()..]);
    }

    /// A call of a declared tool, if `body` is one.
    fn call_from(&mut self, body: &str) -> Option<ToolCall> {
        let value: Value = serde_json::from_str(body.trim()).ok()?;
        let name = value.get("name")?.as_str()?;
        if !self.names.iter().any(|n| n == name) {
            return None;
        }
        let arguments = match value.get("arguments").or_else(|| value.get("parameters")) {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        self.calls += 1;
        Some(ToolCall {
            index: self.calls - 1,
            id: format!("{}-{}", self.id_prefix, self.calls - 1),
            name: name.to_owned(),
            arguments,
        })
    }
}

/// Length of the longest suffix of `text` that begins `tag` (and may grow into it).
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> ToolCallParser {
        ToolCallParser::new(vec!["get_weather".into(), "add".into()], "call_x".into())
    }

    /// Feeds `text` in pieces of `n` bytes (on char boundaries), collecting everything.
    fn run(text: &str, n: usize) -> (String, Vec<ToolCall>) {
        let mut p = parser();
        let (mut content, mut calls) = (String::new(), Vec::new());
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(n) {
            let out = p.push(&piece.iter().collect::<String>());
            content.push_str(&out.text);
            calls.extend(out.calls);
        }
        let out = p.finish();
        content.push_str(&out.text);
        calls.extend(out.calls);
        (content, calls)
    }

    #[test]
    fn hermes_calls_are_taken_out_of_the_text_whatever_the_pieces() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n</tool_call>";
        for n in [1, 2, 3, 7, 1000] {
            let (content, calls) = run(text, n);
            assert_eq!(content, "Let me check.", "pieces of {n}");
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0].name, "get_weather");
            assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
            assert_eq!(calls[1].id, "call_x-1");
        }
    }

    #[test]
    fn llama_json_calls_and_unclosed_hermes_calls_are_read_at_the_end() {
        let (content, calls) = run(r#"{"name": "add", "parameters": {"a": 1, "b": 2}}"#, 3);
        assert_eq!((content.as_str(), calls.len()), ("", 1));
        assert_eq!(calls[0].arguments, r#"{"a":1,"b":2}"#);
        let (content, calls) = run("<tool_call>\n{\"name\": \"add\", \"arguments\": {}}", 4);
        assert_eq!((content.as_str(), calls.len()), ("", 1));
    }

    #[test]
    fn what_is_not_a_call_of_a_declared_tool_stays_text() {
        for text in [
            "plain answer with a < sign and <tool_ but no call",
            "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>",
            "<tool_call>not json</tool_call> after",
            r#"{"answer": 42}"#,
        ] {
            let (content, calls) = run(text, 2);
            assert!(calls.is_empty(), "{text}");
            assert_eq!(content, text);
        }
    }
}
