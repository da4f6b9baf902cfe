//! Any bytes as the body of `/v1/completions` and `/v1/chat/completions`: parsing answers a
//! request or an OpenAI error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    brisk_server::fuzzing::parse_request_bodies(data);
});
