//! `brisk serve` as a child process for the tests: start it, talk HTTP to it by hand, stop it.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `brisk serve` and everything it printed on stderr.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
    start_until(args, envs, "on http://")
}

/// Starts `brisk serve` and returns once it prints `marker` followed by its address:
/// `on http://` when it serves, `listening at http://` as soon as the port is bound.
pub fn start_until(args: &[&str], envs: &[(&str, &str)], marker: &'static str) -> Server {
    start_model(&brisk_testkit::smollm2_path(), args, envs, marker)
}

/// [`start_until`] with the model at `model`.
pub fn start_model(
    model: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    marker: &'static str,
) -> Server {
    let mut command = vec!["serve", "--port", "0", "--model", model.to_str().unwrap()];
    if !args.contains(&"--kv-cache-tokens") {
        command.extend(["--kv-cache-tokens", "8192"]);
    }
    command.extend(args);
    start_brisk(&command, envs, marker)
}

/// `brisk route` over `args`, returned once it routes.
pub fn start_router(args: &[&str]) -> Server {
    let mut command = vec!["route", "--port", "0"];
    command.extend(args);
    start_brisk(&command, &[], "routing on http://")
}

/// Where the tests' servers keep the latency models they profile: not the user's cache,
/// which must not keep a profile made while the test suite loads the machine.
pub fn test_latency_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("brisk-test-latency")
}

/// Runs `brisk` with `args` and returns once it prints `marker` followed by its address.
pub fn start_brisk(args: &[&str], envs: &[(&str, &str)], marker: &'static str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_brisk"))
        .args(args)
        .env("BRISK_LATENCY_DIR", test_latency_dir())
        .envs(envs.iter().copied())
        .env_remove("BRISK_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("brisk starts");
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let log = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            // Logged before the address is announced, so a test that reads the log once
            // the server is up sees the line that said so.
            {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            if let Some(rest) = line.split(marker).nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "brisk {} did not start:\n{}",
                args[0],
                stderr.lock().unwrap()
            )
        });
    Server {
        child,
        addr,
        stderr,
    }
}

impl Server {
    /// Sends `signal` (`TERM`, `INT`) to the server.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "brisk serve still running {limit:?} after the signal:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes one HTTP/1.1 request (connection closed after it) and returns the stream.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> TcpStream {
    send_with(addr, method, path, key, &[], body)
}

/// [`send`] with more headers.
pub fn send_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{head}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// One request; returns the status and the whole response (head and body) as text.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    call_with(addr, method, path, key, &[], body)
}

/// [`call`] with more headers.
pub fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut text = String::new();
    send_with(addr, method, path, key, headers, body)
        .read_to_string(&mut text)
        .unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// Reads a streaming response up to its first `data: {…}` event; returns what was read.
pub fn read_to_first_event(stream: &mut BufReader<TcpStream>) -> String {
    let mut seen = String::new();
    while !seen.contains("data: {") {
        let mut line = String::new();
        assert!(
            stream.read_line(&mut line).unwrap() > 0,
            "stream ended early: {seen}"
        );
        seen.push_str(&line);
    }
    seen
}

/// The text a streamed completion's `data:` events carry, from `lines` (of the HTTP answer,
/// head included) up to `[DONE]`; panics at an error event or when `[DONE]` never comes.
pub fn streamed_text<S: AsRef<str>>(lines: impl IntoIterator<Item = S>) -> String {
    let mut text = String::new();
    for line in lines {
        let Some(data) = line.as_ref().trim().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            return text;
        }
        let event: serde_json::Value = serde_json::from_str(data).unwrap();
        assert!(event.get("error").is_none(), "{event}");
        text.push_str(event["choices"][0]["text"].as_str().unwrap_or_default());
    }
    panic!("no [DONE]; so far {text:?}");
}

/// [`streamed_text`] of a streaming answer read from `stream` to its end, after `seen`
/// (what [`read_to_first_event`] returned, if it was called).
pub fn read_streamed_text(seen: &str, stream: BufReader<TcpStream>) -> String {
    let rest = stream.lines().map(|l| l.unwrap());
    streamed_text(seen.lines().map(str::to_string).chain(rest))
}
