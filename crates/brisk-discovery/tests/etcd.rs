//! Registration and watch against a real etcd (Debian's `etcd-server`), including killing it
//! and bringing it back with and without its data.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use brisk_discovery::{parse_endpoints, watch, DiscoveryError, MembershipEvent, Registration};
use brisk_testkit::etcd::Etcd;
use tokio::sync::mpsc::Receiver;

const PREFIX: &str = "/brisk/replicas/";

/// A real etcd (brisk-testkit's) with a direct read that bypasses the crate under test.
trait DirectRead {
    async fn get(&self, key: &str) -> Result<Option<String>, String>;
}

impl DirectRead for Etcd {
    async fn get(&self, key: &str) -> Result<Option<String>, String> {
        let read = async {
            let mut client = etcd_client::Client::connect([self.endpoint()], None).await?;
            let answer = client.get(key, None).await?;
            let value = answer
                .kvs()
                .first()
                .map(|kv| kv.value_str().map(str::to_string));
            value.transpose()
        };
        match tokio::time::timeout(Duration::from_secs(1), read).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("brisk_discovery=debug"))
        .with_test_writer()
        .try_init();
}

/// Runs a test body under a deadline, so a hang fails instead of blocking the suite.
async fn within<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}

async fn next_event(events: &mut Receiver<MembershipEvent>, limit: Duration) -> MembershipEvent {
    tokio::time::timeout(limit, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no membership event within {limit:?}"))
        .expect("watch ended")
}

/// Applies events until a `Snapshot` has arrived and the membership then holds `key = value`.
async fn wait_for_snapshot_with(
    events: &mut Receiver<MembershipEvent>,
    members: &mut BTreeMap<String, String>,
    key: &str,
    value: &str,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut saw_snapshot = false;
    while !(saw_snapshot && members.get(key).map(String::as_str) == Some(value)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = next_event(events, left).await;
        saw_snapshot |= matches!(event, MembershipEvent::Snapshot(_));
        event.apply(members);
    }
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn put(name: &str, value: &str) -> MembershipEvent {
    MembershipEvent::Put {
        key: key(name),
        value: value.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_snapshot_then_put_and_stop_deletes_at_once() {
    init_logs();
    within(Duration::from_secs(30), async {
        let etcd = Etcd::start();
        let endpoints = vec![etcd.endpoint()];
        // A long TTL: a Delete within a second can only come from the revoke in `stop`.
        let ttl = Duration::from_secs(10);
        let a = Registration::start(&endpoints, key("a"), r#"{"addr":"a"}"#.into(), ttl)
            .await
            .expect("register a");
        let (mut events, _watch) = watch(&endpoints, PREFIX.into()).expect("watch");
        assert_eq!(
            next_event(&mut events, Duration::from_secs(5)).await,
            MembershipEvent::Snapshot(vec![(key("a"), r#"{"addr":"a"}"#.into())])
        );

        // Outside the prefix: never seen.
        let router = Registration::start(&endpoints, "/brisk/routers/r".into(), "r".into(), ttl)
            .await
            .expect("register router");
        let b = Registration::start(&endpoints, key("b"), r#"{"addr":"b"}"#.into(), ttl)
            .await
            .expect("register b");
        assert_eq!(
            next_event(&mut events, Duration::from_secs(5)).await,
            put("b", r#"{"addr":"b"}"#)
        );

        let stopping = Instant::now();
        a.stop().await;
        assert_eq!(
            next_event(&mut events, Duration::from_secs(1)).await,
            MembershipEvent::Delete { key: key("a") }
        );
        eprintln!("stop -> Delete in {:?}", stopping.elapsed());
        assert_eq!(etcd.get(&key("a")).await, Ok(None));

        b.stop().await;
        router.stop().await;
        assert_eq!(
            next_event(&mut events, Duration::from_secs(1)).await,
            MembershipEvent::Delete { key: key("b") }
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_registration_disappears_when_its_lease_expires() {
    init_logs();
    within(Duration::from_secs(30), async {
        let etcd = Etcd::start();
        let endpoints = vec![etcd.endpoint()];
        let ttl = Duration::from_secs(2);
        let replica = Registration::start(&endpoints, key("killed"), "v".into(), ttl)
            .await
            .expect("register");
        let (mut events, _watch) = watch(&endpoints, PREFIX.into()).expect("watch");
        assert_eq!(
            next_event(&mut events, Duration::from_secs(5)).await,
            MembershipEvent::Snapshot(vec![(key("killed"), "v".into())])
        );
        // Keep-alives run a while first, so expiry is measured from a refreshed lease.
        tokio::time::sleep(Duration::from_secs(1)).await;

        let dropped = Instant::now();
        drop(replica);
        assert_eq!(
            next_event(&mut events, ttl + Duration::from_secs(3)).await,
            MembershipEvent::Delete { key: key("killed") }
        );
        let took = dropped.elapsed();
        eprintln!("drop -> Delete in {took:?} (TTL {ttl:?})");
        assert!(
            took >= Duration::from_millis(500),
            "deleted after {took:?}: dropping must not revoke, only stop the keep-alive"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_watch_survive_etcd_restarts_with_and_without_data() {
    init_logs();
    within(Duration::from_secs(60), async {
        let mut etcd = Etcd::start();
        let endpoints = vec![etcd.endpoint()];
        let ttl = Duration::from_secs(2);
        let replica = Registration::start(&endpoints, key("r"), "v".into(), ttl)
            .await
            .expect("register");
        let (mut events, _watch) = watch(&endpoints, PREFIX.into()).expect("watch");
        let mut members = BTreeMap::new();
        let limit = Duration::from_secs(5);
        wait_for_snapshot_with(&mut events, &mut members, &key("r"), "v", limit).await;

        // Down for longer than the TTL, then back with nothing: lease and key are gone.
        etcd.kill();
        tokio::time::sleep(ttl + Duration::from_secs(1)).await;
        let restarted = Instant::now();
        etcd.restart_with_fresh_data();
        let limit = Duration::from_secs(15);
        wait_for_snapshot_with(&mut events, &mut members, &key("r"), "v", limit).await;
        eprintln!(
            "fresh data: seen again {:?} after restart",
            restarted.elapsed()
        );
        assert_eq!(etcd.get(&key("r")).await, Ok(Some("v".into())));

        // Back quickly with its data: the old lease survives, the registration moves on.
        etcd.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let restarted = Instant::now();
        etcd.restart_with_same_data();
        wait_for_snapshot_with(&mut events, &mut members, &key("r"), "v", limit).await;
        eprintln!(
            "same data: seen again {:?} after restart",
            restarted.elapsed()
        );

        // Two TTLs later the key is still there: keep-alive runs again.
        tokio::time::sleep(2 * ttl + Duration::from_secs(1)).await;
        assert_eq!(etcd.get(&key("r")).await, Ok(Some("v".into())));
        while let Ok(event) = events.try_recv() {
            event.apply(&mut members);
        }
        assert_eq!(members.get(&key("r")).map(String::as_str), Some("v"));

        replica.stop().await;
        assert_eq!(etcd.get(&key("r")).await, Ok(None));
    })
    .await;
}

/// Registers a key at `endpoint` alone; also returns how long the attempt took.
async fn register_at(endpoint: &str) -> (Result<Registration, DiscoveryError>, Duration) {
    let started = Instant::now();
    let result = Registration::start(
        &[endpoint.to_owned()],
        key("x"),
        "v".into(),
        Duration::from_secs(2),
    )
    .await;
    (result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_fails_registration_fast_and_names_the_endpoint() {
    init_logs();
    within(Duration::from_secs(20), async {
        // Nothing listens there once the probe socket is closed.
        let endpoint = format!("127.0.0.1:{}", free_port());
        let (result, took) = register_at(&endpoint).await;
        let err = result.expect_err("registration with no etcd must fail");
        eprintln!("failed after {took:?}: {err}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(err.to_string().contains(&endpoint), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_that_never_answers_fails_registration_within_seconds() {
    init_logs();
    within(Duration::from_secs(20), async {
        // The kernel completes the TCP handshake into the backlog; nothing ever answers.
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
        let (result, took) = register_at(&endpoint).await;
        let err = result.expect_err("registration with a silent etcd must fail");
        eprintln!("failed after {took:?}: {err}");
        assert!(matches!(err, DiscoveryError::Timeout { .. }), "{err:?}");
        assert!(took < Duration::from_secs(6), "took {took:?}");
        assert!(err.to_string().contains(&endpoint), "{err}");
    })
    .await;
}

#[test]
fn bad_etcd_flags_are_refused_with_the_entry_named() {
    let cases = [
        ("", "empty"),
        ("127.0.0.1:2379,,127.0.0.1:2380", "empty"),
        ("https://etcd:2379", "http://"),
        ("etcd", "port"),
    ];
    for (flag, expected) in cases {
        let err = parse_endpoints(flag).expect_err(flag);
        assert!(
            matches!(err, DiscoveryError::InvalidEndpoint { .. }),
            "{flag:?}: {err:?}"
        );
        assert!(err.to_string().contains(expected), "{flag:?}: {err}");
    }
    assert_eq!(
        parse_endpoints("127.0.0.1:2379").unwrap(),
        ["http://127.0.0.1:2379"]
    );
}

#[tokio::test]
async fn watch_refuses_malformed_endpoints() {
    assert!(watch(&[], PREFIX.into()).is_err());
    let err = watch(&["grpc://etcd:2379".into()], PREFIX.into()).unwrap_err();
    assert!(err.to_string().contains("grpc://etcd:2379"), "{err}");
}
