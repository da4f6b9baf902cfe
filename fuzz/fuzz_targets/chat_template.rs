//! SmolLM2's chat template rendering hostile conversations: any roles, any contents
//! (template syntax, control characters, huge counts); rendering answers or errors, never
//! panics.
#![no_main]

use brisk_fuzz::smollm2_tokenizer;
use brisk_tokenizer::ChatMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let template = smollm2_tokenizer()
        .chat_template()
        .expect("SmolLM2 has a chat template");
    // Fields separated by 0xFF: role, content, role, content, …
    let text = String::from_utf8_lossy(data);
    let fields: Vec<&str> = text.split('\u{FFFD}').collect();
    let messages: Vec<ChatMessage> = fields
        .chunks(2)
        .map(|pair| ChatMessage::new(pair[0], *pair.get(1).unwrap_or(&"")))
        .collect();
    let _ = template.render(&messages, data.first().is_some_and(|b| b & 1 == 1));
});
