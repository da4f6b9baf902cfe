//! Tool calling, the request side: OpenAI's `tools`, `tool_choice` and
//! `parallel_tool_calls`, checked once; how the model learns of the tools (its own chat
//! template when it describes tools, otherwise a Hermes-style system prompt, the format
//! Qwen2.5 and many fine-tunes were trained on); and the grammar that makes `required` and
//! a named choice always produce a call whose arguments match the function's parameters.

use brisk_structured::GrammarSpec;
use brisk_tokenizer::ChatMessage;
use serde_json::{json, Value};

use crate::error::ApiError;

/// Most tools one request may declare (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// One function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Its name (`[A-Za-z0-9_-]{1,64}`).
    pub name: String,
    /// Its parameters' JSON schema (`{"type": "object"}` when none was given).
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    /// The model decides; its text is searched for calls.
    Auto,
    /// At least one call, enforced by a grammar.
    Required,
    /// A call of this function, enforced by a grammar.
    Named(String),
}

/// The tools a request offers the model, when it offers any (`tool_choice: "none"` offers
/// none: the tools are left out of the prompt and the answer is plain text).
#[derive(Clone, Debug)]
pub struct Tools {
    /// The functions.
    pub tools: Vec<Tool>,
    /// How the model must use them.
    pub choice: ToolChoice,
    /// Whether several calls may come back in one answer.
    pub parallel: bool,
    /// The `tools` list as given, for templates that describe tools themselves.
    pub declared: Value,
}

impl Tools {
    /// Reads the three fields; `None` when the request offers no tools.
    pub fn from_request(
        tools: Option<&Value>,
        choice: Option<&Value>,
        parallel: Option<&Value>,
    ) -> Result<Option<Self>, ApiError> {
        let parallel = match parallel {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ApiError::invalid(
                    "parallel_tool_calls",
                    format!("`parallel_tool_calls` must be a boolean, got {other}"),
                ))
            }
        };
        let declared = match tools {
            None | Some(Value::Null) => {
                return match choice {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if s == "none" => Ok(None),
                    Some(_) => Err(ApiError::invalid(
                        "tool_choice",
                        "`tool_choice` needs `tools` to choose from",
                    )),
                }
            }
            Some(Value::Array(list)) if list.len() <= MAX_TOOLS => list,
            Some(Value::Array(list)) => {
                return Err(ApiError::invalid(
                    "tools",
                    format!("at most {MAX_TOOLS} tools per request, got {}", list.len()),
                ))
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    "tools",
                    format!("`tools` must be a list of functions, got {other}"),
                ))
            }
        };
        let tools = declared
            .iter()
            .enumerate()
            .map(|(i, t)| tool(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, t) in tools.iter().enumerate() {
            if tools[..i].iter().any(|earlier| earlier.name == t.name) {
                return Err(ApiError::invalid(
                    format!("tools[{i}].function.name"),
                    format!("two tools are named {:?}", t.name),
                ));
            }
        }
        let choice = match tool_choice(choice, &tools)? {
            Some(choice) if !tools.is_empty() => choice,
            _ => return Ok(None),
        };
        Ok(Some(Self {
            tools,
            choice,
            parallel,
            declared: Value::Array(declared.clone()),
        }))
    }

    /// The functions' names.
    pub fn names(&self) -> Vec<String> {
        self.tools.iter().map(|t| t.name.clone()).collect()
    }

    /// For `required` and named choices: the answer is one call (or several, when parallel
    /// calls are allowed), each `<tool_call>\n{"name": .., "arguments": ..}\n</tool_call>`
    /// with arguments valid for that function.
    pub fn grammar(&self) -> Option<GrammarSpec> {
        let allowed: Vec<&Tool> = match &self.choice {
            ToolChoice::Auto => return None,
            ToolChoice::Required => self.tools.iter().collect(),
            ToolChoice::Named(name) => self.tools.iter().filter(|t| &t.name == name).collect(),
        };
        let calls: Vec<Value> = allowed
            .iter()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        let body = json!({"anyOf": calls});
        let repeat = if self.parallel && self.choice == ToolChoice::Required {
            "(\"\\n\" call)*"
        } else {
            ""
        };
        Some(GrammarSpec::Lark(format!(
            "start: call {repeat}\ncall: \"<tool_call>\\n\" body \"\\n</tool_call>\"\nbody: %json {body}\n"
        )))
    }

    /// The system prompt that describes the tools to a model whose template does not.
    pub fn system_prompt(&self) -> String {
        let mut prompt = String::from(
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
             You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        );
        for t in self.declared.as_array().into_iter().flatten() {
            prompt.push('\n');
            prompt.push_str(&t.to_string());
        }
        prompt.push_str(
            "\n</tools>\n\nFor each function call, return a json object with function name and \
             arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
             {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
        );
        prompt
    }
}

fn tool(i: usize, value: &Value) -> Result<Tool, ApiError> {
    let field = |name: &str| format!("tools[{i}].{name}");
    if value.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid(
            field("type"),
            format!("tools[{i}] must be {{\"type\": \"function\", \"function\": {{..}}}}; other tool types are not supported"),
        ));
    }
    let function = value
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| ApiError::invalid(field("function"), "a tool needs its `function`"))?;
    let name = function.get("name").and_then(Value::as_str).unwrap_or("");
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(ApiError::invalid(
            field("function.name"),
            format!("a function name must be 1–64 letters, digits, `_` or `-`, got {name:?}"),
        ));
    }
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object"}),
        Some(p) if p.is_object() => p.clone(),
        Some(other) => {
            return Err(ApiError::invalid(
                field("function.parameters"),
                format!("`parameters` must be a JSON schema object, got {other}"),
            ))
        }
    };
    Ok(Tool {
        name: name.to_owned(),
        parameters,
    })
}

/// `tool_choice`; `None` for `"none"`.
fn tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<Option<ToolChoice>, ApiError> {
    let bad = |v: &Value| {
        ApiError::invalid(
            "tool_choice",
            format!("`tool_choice` must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ..}}}}, got {v}"),
        )
    };
    match choice {
        None | Some(Value::Null) => Ok(Some(ToolChoice::Auto)),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok(None),
            "auto" => Ok(Some(ToolChoice::Auto)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(bad(choice.unwrap())),
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| bad(v))?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("`tool_choice` names {name:?}, which is not among `tools`"),
                ));
            }
            Ok(Some(ToolChoice::Named(name.to_owned())))
        }
    }
}

/// Rewrites a conversation for a template that knows nothing of tools: the tools' system
/// prompt (when tools are offered) joins the system message, an assistant turn's calls
/// become the `<tool_call>` text the model would have written, and a tool's answer becomes
/// a user turn in `<tool_response>` tags, as Qwen2.5's template renders them.
pub fn without_tool_support(messages: Vec<ChatMessage>, tools: Option<&Tools>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    for mut m in messages {
        if let Some(calls) = m.tool_calls.take() {
            for call in calls.as_array().into_iter().flatten() {
                let f = call.get("function").unwrap_or(call);
                let text = json!({"name": f.get("name"), "arguments": f.get("arguments")});
                if !m.content.is_empty() {
                    m.content.push('\n');
                }
                m.content
                    .push_str(&format!("<tool_call>\n{text}\n</tool_call>"));
            }
        }
        if m.role == "tool" {
            m.role = "user".into();
            m.content = format!("<tool_response>\n{}\n</tool_response>", m.content);
            m.tool_call_id = None;
        }
        out.push(m);
    }
    if let Some(tools) = tools {
        let prompt = tools.system_prompt();
        match out.first_mut().filter(|m| m.role == "system") {
            Some(system) => system.content = format!("{}\n\n{prompt}", system.content),
            None => out.insert(0, ChatMessage::new("system", prompt)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    }

    #[test]
    fn choices_are_read_and_mistakes_named() {
        let t = Tools::from_request(Some(&weather()), None, None)
            .unwrap()
            .unwrap();
        assert_eq!((t.choice.clone(), t.parallel), (ToolChoice::Auto, true));
        assert!(t.grammar().is_none());
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let t = Tools::from_request(Some(&weather()), Some(&named), None)
            .unwrap()
            .unwrap();
        let Some(GrammarSpec::Lark(g)) = t.grammar() else {
            panic!()
        };
        assert!(
            g.contains("%json") && g.contains("get_weather") && !g.contains(")*"),
            "{g}"
        );
        assert!(
            Tools::from_request(Some(&weather()), Some(&json!("none")), None)
                .unwrap()
                .is_none()
        );
        let param = |tools: Value, choice: Value| {
            Tools::from_request(Some(&tools), Some(&choice), None)
                .unwrap_err()
                .param
                .unwrap()
        };
        assert_eq!(
            param(
                weather(),
                json!({"type": "function", "function": {"name": "nope"}})
            ),
            "tool_choice"
        );
        assert_eq!(param(weather(), json!("sometimes")), "tool_choice");
        assert_eq!(
            param(json!([{"type": "code_interpreter"}]), json!("auto")),
            "tools[0].type"
        );
        assert_eq!(
            param(
                json!([{"type": "function", "function": {"name": "a b"}}]),
                json!("auto")
            ),
            "tools[0].function.name"
        );
        assert!(Tools::from_request(None, Some(&json!("required")), None).is_err());
    }

    #[test]
    fn a_template_without_tools_gets_them_as_hermes_text() {
        let t = Tools::from_request(Some(&weather()), None, None)
            .unwrap()
            .unwrap();
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(json!([{"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]));
        let mut answer = ChatMessage::new("tool", "18 C");
        answer.tool_call_id = Some("c1".into());
        let out = without_tool_support(
            vec![ChatMessage::new("user", "weather?"), call, answer],
            Some(&t),
        );
        assert_eq!(out[0].role, "system");
        assert!(out[0].content.contains("<tools>") && out[0].content.contains("get_weather"));
        assert!(out[2].content.contains(r#"<tool_call>"#) && out[2].content.contains("Paris"));
        assert_eq!(out[3].role, "user");
        assert_eq!(out[3].content, "<tool_response>\n18 C\n</tool_response>");
    }
}
