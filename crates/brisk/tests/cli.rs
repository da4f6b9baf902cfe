//! The `brisk` command line: flags are validated with messages that name them, and
//! `brisk generate` runs the real model end to end.

use std::process::Command;

fn brisk(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brisk"))
        .args(args)
        .output()
        .expect("brisk runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_flags_are_validated_with_clear_messages() {
    let (ok, _, err) = brisk(&["serve", "--block-size", "0", "--model", "/nonexistent.gguf"]);
    assert!(!ok);
    assert!(err.contains("--block-size"), "{err}");
    let (ok, _, err) = brisk(&["serve", "--kv-cache-memory", "lots"]);
    assert!(!ok);
    assert!(
        err.contains("lots") && err.contains("kv-cache-memory"),
        "{err}"
    );
    let (ok, _, err) = brisk(&["serve", "--model", "/nonexistent.gguf"]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent.gguf") && err.contains("no such model"),
        "{err}"
    );
}

#[test]
fn generate_reports_a_missing_model_file() {
    let (ok, _, err) = brisk(&["generate", "--model", "/nonexistent.gguf", "--prompt", "hi"]);
    assert!(!ok);
    assert!(err.contains("no such model"), "{err}");
}

#[test]
fn smollm2_generate_prints_the_completion_and_timing() {
    let model = brisk_testkit::smollm2_path();
    let model = model.to_str().unwrap();
    let (ok, out, err) = brisk(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "2",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), " Paris.");
    assert!(
        err.contains("prompt tokens: 5, generated tokens: 2"),
        "{err}"
    );
    assert!(
        err.contains("time to first token") && err.contains("tokens/s"),
        "{err}"
    );
}
