//! The official `openai` Python package talks to brisk unmodified (installed by `.ci/run`).

mod common;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_streams_a_chat_completion() {
    let s = common::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_stream.py");
    let base = s.url("/v1");
    let output = tokio::process::Command::new("python3")
        .args([script, base.as_str(), common::MODEL])
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the openai client failed (is it installed? `pip install openai`):\n{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    assert!(report["chunks"].as_u64().unwrap() >= 2, "{report}");
    assert!(!report["chat"].as_str().unwrap().is_empty(), "{report}");
    assert_eq!(report["finish"], "length", "{report}");
    assert_eq!(report["usage"], 8, "{report}");
    assert_eq!(report["completion"], " 7, 8, 9", "{report}");
    assert_eq!(report["models"][0], common::MODEL, "{report}");
}
