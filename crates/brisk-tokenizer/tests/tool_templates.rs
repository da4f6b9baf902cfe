//! Templates that describe tools themselves (Qwen2.5's family) get the request's `tools`
//! and the history's calls in the shapes they read: `tools` as OpenAI's list,
//! `message.tool_calls[].function` with `arguments` as an object (written with `tojson`),
//! tool turns with their `tool_call_id`.

use brisk_tokenizer::{ChatMessage, ChatTemplate};
use serde_json::json;

/// A template in the style of Qwen2.5-Instruct's (written for this test): tools in the
/// system turn, calls as `<tool_call>` JSON, tool answers as `<tool_response>` user turns.
const QWEN_STYLE: &str = r#"{%- if tools %}<|im_start|>system
Tools:
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{%- for call in message.tool_calls %}
<tool_call>{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response id="{{ message.tool_call_id }}">{{ message.content }}</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

#[test]
fn a_template_that_knows_tools_renders_them_and_the_calls_in_the_history() {
    let template = ChatTemplate::new(QWEN_STYLE.into(), String::new(), String::new()).unwrap();
    assert!(template.knows_tools());
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls = Some(json!([{"id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]));
    let mut answer = ChatMessage::new("tool", "18 C");
    answer.tool_call_id = Some("c1".into());
    let messages = [ChatMessage::new("user", "Weather?"), call, answer];
    let text = template
        .render_with_tools(&messages, Some(&tools), true)
        .unwrap();
    assert!(text.starts_with("<|im_start|>system\nTools:"), "{text}");
    assert!(text.contains(r#""name":"get_weather""#), "{text}");
    assert!(
        text.contains(
            r#"<tool_call>{"name": "get_weather", "arguments": {"city":"Paris"}}</tool_call>"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"<tool_response id="c1">18 C</tool_response>"#),
        "{text}"
    );
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
    let plain = template.render(&messages[..1], true).unwrap();
    assert!(
        !plain.contains("Tools:"),
        "no tools, no tool prompt: {plain}"
    );
}
