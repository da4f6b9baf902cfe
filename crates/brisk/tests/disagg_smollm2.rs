//! Prefill/decode disaggregation with real processes (SmolLM2, one compute thread each, an
//! API key): `brisk route` over a `--role prefill` and a `--role decode` replica sends each
//! prompt to the prefill replica, which hands the request to the decode replica after its
//! first token. The answers are a colocated replica's, token for token; the decode replica
//! computes none of their prompts; a hand-over that cannot happen leaves the request
//! decoding where it was; transfers want the key; a compressed hand-over sends a fraction of
//! the bytes; a long prompt's blocks travel while it is computed.

mod common;

use common::{call, call_with, start, start_router, Server};
use serde_json::{json, Value};

const KEY: &str = "disagg-key-41";
const ONE_THREAD: &[(&str, &str)] = &[("BRISK_THREADS", "1")];

fn replica(role: &str) -> Server {
    replica_with(role, &[])
}

/// A replica in `role` with further `brisk serve` flags.
fn replica_with(role: &str, flags: &[&str]) -> Server {
    let args: Vec<&str> = ["--api-key", KEY, "--role", role]
        .into_iter()
        .chain(flags.iter().copied())
        .collect();
    start(&args, ONE_THREAD)
}

fn url(server: &Server) -> String {
    format!("http://{}", server.addr)
}

fn body(text: &str) -> Value {
    serde_json::from_str(text.split("\r\n\r\n").nth(1).expect("a body")).expect("JSON")
}

/// A sample of `server`'s metrics (0 when absent).
fn metric(server: &Server, sample: &str) -> f64 {
    let (status, text) = call(server.addr, "GET", "/metrics", Some(KEY), "");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn completion(prompt: &str, stream: bool) -> String {
    json!({"prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": true,
           "stream": stream})
    .to_string()
}

/// The text of a completion answered at `addr` (streamed or whole), sent with `headers`.
fn text_with(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
    prompt: &str,
    stream: bool,
) -> String {
    let request = completion(prompt, stream);
    let (status, text) = call_with(
        addr,
        "POST",
        "/v1/completions",
        Some(KEY),
        headers,
        &request,
    );
    assert_eq!(status, 200, "{text}");
    if !stream {
        return body(&text)["choices"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
    }
    common::streamed_text(text.lines())
}

fn text_of(addr: std::net::SocketAddr, prompt: &str, stream: bool) -> String {
    text_with(addr, &[], prompt, stream)
}

#[test]
fn smollm2_prefill_and_decode_replicas_answer_as_one_colocated_replica() {
    let (prefill, decode) = (replica("prefill"), replica("decode"));
    let router = start_router(&[
        "--replica",
        &url(&prefill),
        "--replica",
        &url(&decode),
        "--api-key",
        KEY,
    ]);
    let prompts = [
        "The three primary colours are",
        "A recipe for bread begins with",
    ];
    // What one replica serving it all gives (the prefill replica with no one to hand to).
    let want: Vec<String> = prompts
        .iter()
        .map(|p| text_of(prefill.addr, p, false))
        .collect();
    assert_eq!(
        metric(&prefill, "brisk_disagg_handovers_total{direction=\"out\"}"),
        0.0
    );
    let decode_computed = metric(&decode, "brisk_prompt_tokens_computed_total");

    for stream in [false, true] {
        for (prompt, want) in prompts.iter().zip(&want) {
            assert_eq!(
                &text_of(router.addr, prompt, stream),
                want,
                "stream {stream}"
            );
        }
    }
    let handed = |server: &Server, direction: &str| {
        metric(
            server,
            &format!("brisk_disagg_handovers_total{{direction=\"{direction}\"}}"),
        )
    };
    assert_eq!(handed(&prefill, "out"), 4.0);
    assert_eq!(handed(&decode, "in"), 4.0);
    assert!(
        metric(
            &prefill,
            "brisk_kv_transfer_bytes_total{direction=\"sent\"}"
        ) > 0.0
    );
    assert_eq!(
        metric(
            &prefill,
            "brisk_kv_transfer_bytes_total{direction=\"sent\"}"
        ),
        metric(
            &decode,
            "brisk_kv_transfer_bytes_total{direction=\"received\"}"
        ),
    );
    // The decode replica computed no prompt token of them, and holds nothing now.
    assert_eq!(
        metric(&decode, "brisk_prompt_tokens_computed_total"),
        decode_computed
    );
    let (_, text) = call(decode.addr, "GET", "/internal/v1/requests", Some(KEY), "");
    assert_eq!(body(&text)["requests"], json!([]));
    let (_, text) = call(router.addr, "GET", "/metrics", Some(KEY), "");
    assert!(
        text.lines()
            .any(|l| l == "brisk_router_disaggregated_total 4"),
        "{text}"
    );
}

#[test]
fn smollm2_a_hand_over_that_cannot_happen_leaves_the_request_decoding_where_it_was() {
    let prefill = replica("prefill");
    let prompt = "The three primary colours are";
    let want = text_of(prefill.addr, prompt, false);
    // A decode replica that does not answer: the prefill replica decodes it itself.
    let nowhere = [("x-brisk-decode-on", "http://127.0.0.1:1")];
    for stream in [false, true] {
        assert_eq!(
            text_with(prefill.addr, &nowhere, prompt, stream),
            want,
            "stream {stream}"
        );
    }
    assert_eq!(
        metric(&prefill, "brisk_move_failures_total{kind=\"handover\"}"),
        2.0
    );
    // A header that is not a URL is refused; transfers want the key.
    let (status, text) = call_with(
        prefill.addr,
        "POST",
        "/v1/completions",
        Some(KEY),
        &[("x-brisk-decode-on", "ftp://x")],
        &completion(prompt, false),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("x-brisk-decode-on"), "{text}");
    let (status, _) = call(
        prefill.addr,
        "POST",
        "/internal/v1/requests/import?kind=handover",
        None,
        "garbage",
    );
    assert_eq!(status, 401);
    let (status, text) = call(
        prefill.addr,
        "POST",
        "/internal/v1/requests/import?kind=sideways",
        Some(KEY),
        "garbage",
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("handover"), "{text}");
}

/// A prefill replica that sends its K/V as int8 (`--kv-transfer-dtype int8`) hands over a
/// fraction of what its f32 cache holds, and the decode replica (an f32 pool, lossless
/// itself) continues from them without computing the prompt.
#[test]
fn smollm2_a_compressed_hand_over_sends_a_fraction_of_the_cache() {
    let prefill = replica_with("prefill", &["--kv-transfer-dtype", "int8"]);
    let decode = replica("decode");
    let decode_computed = metric(&decode, "brisk_prompt_tokens_computed_total");
    let decode_url = url(&decode);
    let to = [("x-brisk-decode-on", decode_url.as_str())];
    // Six prompt tokens and the first output token: one 16-token block moves.
    let text = text_with(prefill.addr, &to, "The three primary colours are", true);
    assert!(!text.is_empty());
    assert_eq!(
        metric(&prefill, "brisk_disagg_handovers_total{direction=\"out\"}"),
        1.0
    );
    let sent = metric(
        &prefill,
        "brisk_kv_transfer_bytes_total{direction=\"sent\"}",
    );
    // SmolLM2-135M's f32 K and V of one block: 16 tokens × 30 layers × 3 K/V heads × 64
    // dimensions × 2 × 4 bytes; int8 with a minimum and a step per group takes 0.29 of it.
    let lossless = 16.0 * 30.0 * 3.0 * 64.0 * 2.0 * 4.0;
    assert!(
        sent > 0.25 * lossless && sent < 0.3 * lossless,
        "{sent} bytes"
    );
    assert_eq!(
        metric(
            &decode,
            "brisk_kv_transfer_bytes_total{direction=\"received\"}"
        ),
        sent
    );
    assert_eq!(
        metric(&decode, "brisk_prompt_tokens_computed_total"),
        decode_computed
    );
}

#[test]
fn smollm2_a_long_prompt_streams_its_blocks_to_the_decode_replica_while_it_is_computed() {
    // Chunks of 64 prompt tokens: a prompt of about 400 takes seven steps, and the blocks
    // each fills set off before the next.
    let prefill = replica_with("prefill", &["--max-num-batched-tokens", "64"]);
    let decode = replica("decode");
    let decode_computed = metric(&decode, "brisk_prompt_tokens_computed_total");
    let decode_url = url(&decode);
    let prompt = "Bread is made from flour, water, salt and yeast. ".repeat(35);
    let got = text_with(
        prefill.addr,
        &[("x-brisk-decode-on", decode_url.as_str())],
        &prompt,
        true,
    );
    assert_eq!(
        metric(&decode, "brisk_disagg_handovers_total{direction=\"in\"}"),
        1.0
    );
    // One transfer per round sent ahead, and the stop's.
    let transfers = metric(
        &prefill,
        "brisk_kv_transfer_seconds_count{direction=\"sent\"}",
    );
    assert!(transfers >= 3.0, "{transfers} transfers");
    assert_eq!(
        metric(
            &decode,
            "brisk_kv_transfer_bytes_total{direction=\"received\"}"
        ),
        metric(
            &prefill,
            "brisk_kv_transfer_bytes_total{direction=\"sent\"}"
        ),
    );
    assert_eq!(
        metric(&decode, "brisk_prompt_tokens_computed_total"),
        decode_computed,
        "the decode replica computed none of the prompt"
    );
    // What the prefill replica answers on its own (from its prefix cache now: the same
    // tokens).
    assert_eq!(got, text_of(prefill.addr, &prompt, false));
}
