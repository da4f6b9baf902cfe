//! Two `brisk serve` replicas (SmolLM2, one compute thread each) behind real routers from
//! PyPI — vllm-router 0.1.17 and smg 1.13.0, installed by `.ci/run` — on 127.0.0.1.
//!
//! - vllm-router's `kv_aware` policy learns where blocks are only from brisk's KV events:
//!   each replica is warmed directly with its own long prefix, behind the router's back, and
//!   every later request through the router that shares a prefix lands on the replica that
//!   holds it (each replica's prefix-cache hit counter grows by exactly those requests).
//! - The `cache_aware` policies of both routers (which remember what they routed) keep
//!   requests sharing a prefix on one replica.
//! - Completions and chat, streamed and not, pass through both routers.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{call, start_model, Server};
use serde_json::{json, Value};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A replica with one compute thread, publishing KV events (with replay) on fresh ports.
struct Replica {
    server: Server,
    events: String,
    replay: String,
}

impl Replica {
    fn start() -> Self {
        let (events, replay) = (free_port(), free_port());
        let config = format!(
            r#"{{"enable_kv_cache_events": true, "endpoint": "tcp://*:{events}",
                "replay_endpoint": "tcp://*:{replay}"}}"#
        );
        let server = start_model(
            &brisk_testkit::smollm2_path(),
            &["--kv-events-config", &config, "--kv-cache-tokens", "4096"],
            &[("BRISK_THREADS", "1")],
            "on http://",
        );
        Self {
            server,
            events: format!("tcp://127.0.0.1:{events}"),
            replay: format!("tcp://127.0.0.1:{replay}"),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Prompt tokens this replica found in its prefix cache so far.
    fn prefix_hits(&self) -> u64 {
        let (_, text) = call(self.server.addr, "GET", "/metrics", None, "");
        text.lines()
            .find_map(|l| l.strip_prefix("brisk_prefix_cache_hits_total "))
            .expect("the counter")
            .trim()
            .parse()
            .unwrap()
    }
}

/// A router process, stopped when dropped.
struct Router {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// The routers, run through the Python that has them (`BRISK_ROUTERS_PYTHON`, default
/// `python3`): their console scripts need not be on the `PATH`.
#[derive(Clone, Copy, Debug)]
enum Kind {
    VllmRouter,
    Smg,
}

impl Kind {
    fn entry_point(self) -> &'static str {
        match self {
            Self::VllmRouter => {
                "import sys; from vllm_router.launch_router import main; sys.exit(main())"
            }
            Self::Smg => "import sys; from smg.cli import main; sys.exit(main())",
        }
    }
}

impl Router {
    /// Runs the router with `args` (and `--host`, `--port`, `--prometheus-port`) and waits
    /// until its `/health` answers 200 and its `/v1/models` lists the replicas' model.
    fn start(kind: Kind, args: &[String]) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("router.log");
        let python = std::env::var("BRISK_ROUTERS_PYTHON").unwrap_or_else(|_| "python3".into());
        let program = format!("{kind:?}");
        let child = Command::new(&python)
            .args(["-c", kind.entry_point()])
            .args(args)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--prometheus-port", &free_port().to_string()])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("err.log")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("{python} does not run: {e}"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut router = Self {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = router.child.try_wait().unwrap() {
                panic!(
                    "{program} exited ({status}); are the routers installed \
                     (pip install vllm-router==0.1.17 smg==1.13.0)?\n{}",
                    router.logs()
                );
            }
            // Healthy and with its workers registered (smg answers /health before it has
            // any): its model list names the replicas' model.
            if std::net::TcpStream::connect(addr).is_ok()
                && call(addr, "GET", "/health", None, "").0 == 200
            {
                let (status, models) = call(addr, "GET", "/v1/models", None, "");
                if status == 200 && models.contains(MODEL) {
                    return router;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{program} never healthy:\n{}",
                router.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        let dir = self.log.parent().unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        format!("{}{}", read("router.log"), read("err.log"))
    }

    fn post(&self, path: &str, body: &Value) -> String {
        let (status, text) = call(self.addr, "POST", path, None, &body.to_string());
        assert_eq!(status, 200, "{text}\n{}", self.logs());
        text
    }

    fn complete(&self, prompt: &str) {
        self.post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": prompt, "max_tokens": 2, "temperature": 0}),
        );
    }

    /// A streamed chat completion and a streamed completion pass through whole.
    fn streams_pass_through(&self) {
        let chat = json!({"model": MODEL, "stream": true, "max_tokens": 4, "temperature": 0,
                          "messages": [{"role": "user", "content": "Say hello."}]});
        let text = self.post("/v1/chat/completions", &chat);
        assert!(
            text.contains("data: {") && text.contains("chat.completion.chunk"),
            "{text}"
        );
        assert!(text.contains("data: [DONE]"), "{text}");
        let completion = json!({"model": MODEL, "stream": true, "max_tokens": 4,
                                "temperature": 0, "prompt": "1, 2, 3,"});
        let text = self.post("/v1/completions", &completion);
        assert!(text.contains("data: [DONE]"), "{text}");
        let plain = json!({"model": MODEL, "max_tokens": 3, "temperature": 0,
                           "messages": [{"role": "user", "content": "Say hello."}]});
        let text = self.post("/v1/chat/completions", &plain);
        assert!(text.contains("\"usage\""), "{text}");
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A long prompt of its own (about `words` words), different for each `seed`.
fn prefix(seed: &str, words: usize) -> String {
    (0..words)
        .map(|i| format!("{seed}{}", i * 7 % 31))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Full blocks of 16 tokens that two prompts beginning with `shared` have in common on
/// `replica` (its own tokenizer), in tokens.
fn shared_tokens(replica: &Replica, shared: &str) -> u64 {
    let (_, text) = call(
        replica.server.addr,
        "POST",
        "/tokenize",
        None,
        &json!({"prompt": shared}).to_string(),
    );
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    // The last token may merge with what follows it; the blocks before it cannot.
    let n = body["count"].as_u64().unwrap() - 1;
    n / 16 * 16
}

#[test]
fn vllm_router_kv_aware_routes_by_brisk_kv_events() {
    let (a, b) = (Replica::start(), Replica::start());
    let mut args: Vec<String> = ["--policy", "kv_aware", "--kv-event-model", MODEL]
        .iter()
        .map(ToString::to_string)
        .collect();
    args.extend(["--kv-event-block-size".into(), "16".into()]);
    args.extend(["--worker-startup-check-interval".into(), "1".into()]);
    args.push("--worker-urls".into());
    args.extend([a.url(), b.url()]);
    for r in [&a, &b] {
        args.push("--kv-event-source".into());
        args.push(format!("{}={}", r.url(), r.events));
        args.push("--kv-event-replay-source".into());
        args.push(format!("{}={}", r.url(), r.replay));
    }
    let router = Router::start(Kind::VllmRouter, &args);
    // Let the router's subscriptions take hold (what it misses it replays on the next gap).
    std::thread::sleep(Duration::from_secs(1));

    // Behind the router's back: A caches one long prefix, B another.
    let (pa, pb) = (prefix("alpha", 120), prefix("beta", 120));
    let direct = |r: &Replica, prompt: &str| {
        let body = json!({"prompt": prompt, "max_tokens": 1, "temperature": 0});
        assert_eq!(
            call(
                r.server.addr,
                "POST",
                "/v1/completions",
                None,
                &body.to_string()
            )
            .0,
            200
        );
    };
    direct(&a, &pa);
    direct(&b, &pb);
    // More stored blocks on each, a few times: a router whose subscription took hold late
    // sees the gap in the sequence numbers at the next batch and replays what it missed.
    for round in 0..3 {
        direct(&a, &prefix(&format!("nudge-a{round}-"), 40));
        direct(&b, &prefix(&format!("nudge-b{round}-"), 40));
        std::thread::sleep(Duration::from_millis(500));
    }

    let (hits_a, hits_b) = (a.prefix_hits(), b.prefix_hits());
    // An order that neither alternating nor sending everything to one replica gets right.
    for (i, p) in [&pa, &pa, &pb, &pb, &pb, &pa].into_iter().enumerate() {
        router.complete(&format!("{p} question {i}"));
    }
    let (shared_a, shared_b) = (shared_tokens(&a, &pa), shared_tokens(&b, &pb));
    assert!(shared_a >= 160 && shared_b >= 160, "{shared_a} {shared_b}");
    assert_eq!(
        (a.prefix_hits() - hits_a, b.prefix_hits() - hits_b),
        (3 * shared_a, 3 * shared_b),
        "each request went where its prefix was cached:\n{}",
        router.logs()
    );
    router.streams_pass_through();
}

/// The replica whose prefix hits grew, and by how much; the other's did not.
fn one_replica_served(a: &Replica, b: &Replica, before: (u64, u64)) -> u64 {
    let grown = (a.prefix_hits() - before.0, b.prefix_hits() - before.1);
    assert!(
        (grown.0 == 0) != (grown.1 == 0),
        "the shared prefix was served from one replica only: {grown:?}"
    );
    grown.0 + grown.1
}

#[test]
fn cache_aware_routers_keep_a_prefix_on_one_replica() {
    let (a, b) = (Replica::start(), Replica::start());
    let workers = [a.url(), b.url()];
    let routers = [
        (
            Kind::VllmRouter,
            vec![
                "--policy",
                "cache_aware",
                "--worker-startup-check-interval",
                "1",
            ],
        ),
        (
            Kind::Smg,
            vec![
                "launch",
                "--policy",
                "cache_aware",
                "--worker-startup-check-interval",
                "1",
            ],
        ),
    ];
    for (i, (kind, flags)) in routers.iter().enumerate() {
        let mut args: Vec<String> = flags.iter().map(ToString::to_string).collect();
        args.push("--worker-urls".into());
        args.extend(workers.iter().cloned());
        let router = Router::start(*kind, &args);
        let shared = prefix(&format!("router{i}-"), 120);
        router.complete(&shared);
        let before = (a.prefix_hits(), b.prefix_hits());
        for q in 0..3 {
            router.complete(&format!("{shared} question {q}"));
        }
        let grown = one_replica_served(&a, &b, before);
        assert_eq!(
            grown,
            3 * shared_tokens(&a, &shared),
            "{kind:?}:\n{}",
            router.logs()
        );
        router.streams_pass_through();
    }
}
