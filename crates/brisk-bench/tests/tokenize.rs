//! Text prompts of exact lengths from the target server's own tokenizer (`/tokenize`,
//! `/detokenize` in llama.cpp's and vLLM's dialects), and the report's record of prompt
//! lengths the server counted differently. The fake tokenizes one token per byte.

mod common;

use common::{Reply, Tokenize};
use serde_json::Value;

fn quick(_: usize) -> Reply {
    Reply::Stream {
        ttft_ms: 2,
        itl_ms: 1,
        tokens: 3,
    }
}

const ARGS: [&str; 4] = [
    "--synthetic",
    "prompt=uniform:20:60,output=3",
    "--num-requests",
    "6",
];

fn assert_exact(r: &Value) {
    assert_eq!(r["prompt_lengths_exact"], true);
    assert_eq!(r["prompt_len_mismatch_requests"], 0);
    for q in r["requests"].as_array().unwrap() {
        assert_eq!(q["prompt_len_reported"], q["prompt_len"], "{q}");
    }
}

#[test]
fn text_prompts_fit_exactly_with_the_servers_tokenizer_in_both_dialects() {
    for style in [Tokenize::LlamaCpp, Tokenize::Vllm] {
        let url = common::start_with(quick, style);
        let mut args = ARGS.to_vec();
        args.push("--server-tokenizer");
        assert_exact(&common::bench(&url, &args));
        args.extend_from_slice(&["--endpoint", "chat"]);
        assert_exact(&common::bench(&url, &args));
    }
}

#[test]
fn text_prompts_use_the_servers_tokenizer_whenever_it_offers_one() {
    let url = common::start_with(quick, Tokenize::LlamaCpp);
    let mut args = ARGS.to_vec();
    args.extend_from_slice(&["--prompt-format", "text"]);
    let r = common::bench(&url, &args);
    assert_exact(&r);
    assert_eq!(r["prompt_tokenizer"], "server:/tokenize");
    let r = common::bench(&url, &ARGS);
    assert_eq!(r["prompt_tokenizer"], "token-ids");
}

#[test]
fn text_without_a_tokenizer_is_flagged_and_mismatches_are_counted() {
    let url = common::start(quick);
    let mut args = ARGS.to_vec();
    args.extend_from_slice(&["--prompt-format", "text"]);
    let r = common::bench(&url, &args);
    assert_eq!(r["prompt_lengths_exact"], false);
    assert_eq!(r["prompt_tokenizer"], "none");
    assert_eq!(r["prompt_len_mismatch_requests"], 6, "words are not bytes");
    // Token ids are exact with no tokenizer at all.
    let r = common::bench(&url, &ARGS);
    assert_exact(&r);
}

#[test]
fn a_server_without_tokenize_or_a_contradictory_format_is_an_error() {
    let url = common::start(quick);
    let mut args = ARGS.to_vec();
    args.push("--server-tokenizer");
    let err = common::bench_err(&url, &args);
    assert!(err.contains("/tokenize answered HTTP 404"), "{err}");
    args.extend_from_slice(&["--prompt-format", "ids"]);
    let err = common::bench_err(&url, &args);
    assert!(err.starts_with("invalid --server-tokenizer"), "{err}");
}
