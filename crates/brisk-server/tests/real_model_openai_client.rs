//! The official `openai` Python package talks to brisk unmodified (installed by `.ci/run`).

mod common;

use serde_json::Value;

/// Runs `tests/python/SCRIPT BASE_URL MODEL ARGS…` against the server and returns the JSON
/// report it prints; fails the test with its stderr (and what it needs, `needs`) otherwise.
async fn run_script(s: &common::TestServer, script: &str, args: &[&str], needs: &str) -> Value {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let base = s.url("/v1");
    let output = tokio::process::Command::new("python3")
        .arg(&path)
        .args([base.as_str(), common::MODEL])
        .args(args)
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed (needs {needs}):\n{stderr}"
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_streams_a_chat_completion() {
    let s = common::start().await;
    let report = run_script(&s, "openai_stream.py", &[], "`pip install openai`").await;
    assert!(report["chunks"].as_u64().unwrap() >= 2, "{report}");
    assert!(!report["chat"].as_str().unwrap().is_empty(), "{report}");
    assert_eq!(report["finish"], "length", "{report}");
    assert_eq!(report["usage"], 8, "{report}");
    assert_eq!(report["completion"], " 7, 8, 9", "{report}");
    assert_eq!(report["models"][0], common::MODEL, "{report}");
}

/// Structured outputs (random JSON schemas validated with `jsonschema`, regex, choice, Lark
/// and GBNF), tool calls (forced, named, streamed, and round-tripped through a second turn)
/// and the Responses API, through the official client; every mistake a 400 naming its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_gets_structured_outputs_tool_calls_and_responses() {
    let s = common::start().await;
    let report = run_script(
        &s,
        "openai_structured.py",
        &["40"],
        "`pip install openai jsonschema`",
    )
    .await;
    assert_eq!(report["schemas_validated"], 40, "{report}");
    assert!(
        report["responses_events"].as_u64().unwrap() >= 8,
        "{report}"
    );
    let refusals = &report["refusals"];
    for (case, param) in [
        ("bad_schema", "response_format"),
        ("bad_regex", "guided_regex"),
        ("bad_grammar", "guided_grammar"),
        ("bad_gbnf", "guided_grammar"),
        ("unknown_tool", "tool_choice"),
        ("unknown_field", "best_of"),
        ("bad_role", "messages[0].role"),
        ("stored", "previous_response_id"),
        ("builtin_tool", "tools"),
    ] {
        assert_eq!(refusals[case], param, "{case}: {report}");
    }
}
