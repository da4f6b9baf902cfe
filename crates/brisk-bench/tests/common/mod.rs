//! A fake OpenAI streaming server for the tests: raw SSE over a tokio `TcpListener`,
//! with tokens emitted at injected times, and the CLI driven as a user would.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the fake answers a request, chosen from its `max_tokens`.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// First token after `ttft_ms`, then one every `itl_ms`, `tokens` in all, then usage.
    Stream {
        ttft_ms: u64,
        itl_ms: u64,
        tokens: usize,
    },
    /// HTTP 500.
    Error500,
    /// Accepts the request and never answers.
    Hang,
}

/// Which `/tokenize` dialect the fake speaks (its tokenizer: one token per byte).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tokenize {
    /// No `/tokenize`: 404.
    None,
    /// llama.cpp: `{"content"}` → `{"tokens"}`, detokenize → `{"content"}`.
    LlamaCpp,
    /// vLLM: `{"prompt"}` → `{"tokens", "count"}`, detokenize → `{"prompt"}`.
    Vllm,
}

/// Starts the fake on 127.0.0.1:0 in its own runtime thread; returns its base URL.
pub fn start(choose: fn(usize) -> Reply) -> String {
    start_with(choose, Tokenize::None)
}

/// [`start`], with a `/tokenize` endpoint of the given dialect.
pub fn start_with(choose: fn(usize) -> Reply, tokenize: Tokenize) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(sock, choose, tokenize));
            }
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// The request's path and JSON body.
async fn read_request(sock: &mut TcpStream) -> Option<(String, serde_json::Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = serde_json::from_slice(&buf[end + 4..end + 4 + len]).ok()?;
            return Some((path, body));
        }
    }
}

async fn respond_json(sock: &mut TcpStream, status: &str, v: serde_json::Value) {
    let msg = v.to_string();
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{msg}",
        msg.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Prompt tokens as the fake counts them: ids as sent, text one token per byte.
fn prompt_tokens(body: &serde_json::Value) -> usize {
    let prompt = if body["messages"].is_array() {
        &body["messages"][0]["content"]
    } else {
        &body["prompt"]
    };
    match prompt {
        serde_json::Value::Array(ids) => ids.len(),
        serde_json::Value::String(t) => t.len(),
        _ => 0,
    }
}

async fn serve(mut sock: TcpStream, choose: fn(usize) -> Reply, tokenize: Tokenize) {
    use serde_json::json;
    sock.set_nodelay(true).unwrap();
    let Some((path, body)) = read_request(&mut sock).await else {
        return;
    };
    match (path.as_str(), tokenize) {
        ("/tokenize" | "/detokenize", Tokenize::None) => {
            return respond_json(&mut sock, "404 Not Found", json!({"error": "no route"})).await;
        }
        ("/tokenize", style) => {
            let key = if style == Tokenize::LlamaCpp {
                "content"
            } else {
                "prompt"
            };
            let text = body[key].as_str().unwrap_or_default();
            let ids: Vec<u32> = text.bytes().map(u32::from).collect();
            let v = json!({"tokens": ids, "count": ids.len()});
            return respond_json(&mut sock, "200 OK", v).await;
        }
        ("/detokenize", style) => {
            let bytes: Vec<u8> = body["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u8)
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let key = if style == Tokenize::LlamaCpp {
                "content"
            } else {
                "prompt"
            };
            return respond_json(&mut sock, "200 OK", json!({ key: text })).await;
        }
        _ => {}
    }
    let prompt_tokens = prompt_tokens(&body);
    let start = tokio::time::Instant::now();
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(0) as usize;
    match choose(max_tokens) {
        Reply::Error500 => {
            let msg = "{\"error\":\"boom\"}";
            let resp = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{msg}",
                msg.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
        Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
        Reply::Stream {
            ttft_ms,
            itl_ms,
            tokens,
        } => {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for k in 0..tokens {
                let at = start + Duration::from_millis(ttft_ms + itl_ms * k as u64);
                tokio::time::sleep_until(at).await;
                let chunk =
                    format!("data: {{\"choices\":[{{\"index\":0,\"text\":\"t{k}\"}}]}}\n\n");
                if sock.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
            let tail = format!(
                "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{tokens}}}}}\n\ndata: [DONE]\n\n"
            );
            let _ = sock.write_all(tail.as_bytes()).await;
        }
    }
    let _ = sock.shutdown().await;
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: brisk_bench::BenchArgs,
}

/// Runs `brisk bench ARGS --output tmp --no-progress --model fake` and returns the report.
pub fn bench(url: &str, args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let mut argv = vec!["bench", "--url", url, "--model", "fake", "--no-progress"];
    argv.extend_from_slice(args);
    let out_s = out.to_str().unwrap().to_string();
    argv.extend_from_slice(&["--output", &out_s]);
    let cli = Cli::parse_from(argv);
    brisk_bench::run(&cli.bench).unwrap();
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// [`bench`] with its flags written as one space-separated string.
pub fn bench_flags(url: &str, flags: &str) -> serde_json::Value {
    bench(url, &flags.split_whitespace().collect::<Vec<_>>())
}

/// Runs `brisk bench ARGS --output tmp --no-progress --model fake`, which must fail;
/// returns the error's message.
pub fn bench_err(url: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let out_s = out.to_str().unwrap().to_string();
    let mut argv = vec!["bench", "--url", url, "--model", "fake", "--no-progress"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--output", &out_s]);
    let cli = Cli::parse_from(argv);
    match brisk_bench::run(&cli.bench) {
        Ok(()) => panic!("brisk bench {args:?} should have failed"),
        Err(e) => e.to_string(),
    }
}

/// Runs `brisk bench ARGV…` (after the `bench` word) as parsed by clap.
pub fn bench_raw(argv: &[&str]) {
    if let Err(e) = try_bench_raw(argv) {
        panic!("brisk bench {argv:?}: {e}");
    }
}

/// Runs `brisk bench ARGV…`, returning its error message if it fails.
pub fn try_bench_raw(argv: &[&str]) -> Result<(), String> {
    let mut full = vec!["bench"];
    full.extend_from_slice(argv);
    brisk_bench::run(&Cli::parse_from(full).bench).map_err(|e| e.to_string())
}

/// The shared workloads folder: `$BRISK_WORKLOADS`, else `<repo>/../shared/workloads`.
pub fn workloads() -> PathBuf {
    let dir = std::env::var_os("BRISK_WORKLOADS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/workloads")
        });
    assert!(
        dir.join("README.md").exists(),
        "workload files missing at {} (set BRISK_WORKLOADS)",
        dir.display()
    );
    dir
}
