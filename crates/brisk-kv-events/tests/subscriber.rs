//! The subscriber over real ZMQ sockets on 127.0.0.1: against brisk's own publisher (in
//! order, history by replay, history lost, a restarted publisher) and against raw sockets
//! playing a publisher (garbage frames, a gap the replay buffer no longer holds, a replay
//! socket that never answers).
//!
//! PUB drops what it sends before a subscription reaches it, so every test publishes until
//! the subscriber reports something and asserts on what follows, or relies on replay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use brisk_kv::{BlockHash, KvEvent, KvEventBatch};
use brisk_kv_events::wire::{self, DecodedBatch, WireEvent};
use brisk_kv_events::{
    start, subscribe, subscribe_with, Publisher, PublisherSettings, SubscriberConfig,
    SubscriberEvent, SubscriberHandle,
};
use bytes::Bytes;
use tokio::sync::mpsc::{Receiver, Sender};
use zeromq::{PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

const BLOCK_SIZE: usize = 16;

fn batch(i: u64) -> KvEventBatch {
    KvEventBatch {
        ts: 1_700_000_000.0 + i as f64,
        events: vec![KvEvent::Removed {
            hashes: vec![BlockHash(i)],
        }],
    }
}

/// What the subscriber delivers for `batch(i)`.
fn decoded(i: u64) -> DecodedBatch {
    DecodedBatch {
        ts: 1_700_000_000.0 + i as f64,
        events: vec![WireEvent::Removed {
            hashes: vec![i],
            medium: Some(wire::MEDIUM.into()),
        }],
        rank: Some(0),
        skipped: 0,
    }
}

fn delivered(seq: u64, i: u64) -> SubscriberEvent {
    SubscriberEvent::Batch {
        seq,
        batch: decoded(i),
    }
}

fn settings(replay: bool, buffer_steps: usize) -> PublisherSettings {
    PublisherSettings {
        endpoint: "tcp://127.0.0.1:0".into(),
        bind: true,
        replay_endpoint: replay.then(|| "tcp://127.0.0.1:0".into()),
        buffer_steps,
        max_queue_size: 64,
        topic: "kv".into(),
    }
}

/// A subscriber to `publisher`'s sockets, topic `kv`.
fn follow(publisher: &Publisher) -> (Receiver<SubscriberEvent>, SubscriberHandle) {
    subscribe(
        publisher.endpoint.clone(),
        publisher.replay_endpoint.clone(),
        "kv".into(),
    )
}

async fn next(rx: &mut Receiver<SubscriberEvent>) -> SubscriberEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("the subscriber is running")
}

/// Sends `batch(first)`, `batch(first + 1)`, … until the subscriber reports something:
/// that event and the next `i` to send.
async fn publish_until_heard(
    tx: &Sender<KvEventBatch>,
    rx: &mut Receiver<SubscriberEvent>,
    first: u64,
) -> (SubscriberEvent, u64) {
    for i in first..first + 400 {
        tx.send(batch(i)).await.unwrap();
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            return (event, i + 1);
        }
    }
    panic!("the subscriber heard nothing in 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publishers_batches_arrive_decoded_and_in_order() {
    let (tx, publisher) = start(&settings(false, 0), BLOCK_SIZE).unwrap();
    let (mut rx, _handle) = follow(&publisher);
    let (first, mut i) = publish_until_heard(&tx, &mut rx, 0).await;
    // Joined late and no replay: what came before is reported lost, then the batch.
    let mut seq = match first {
        SubscriberEvent::Lost { from: 0, to } => to + 1,
        other => {
            assert_eq!(other, delivered(0, 0));
            0
        }
    };
    if seq > 0 {
        assert_eq!(next(&mut rx).await, delivered(seq, seq));
    }
    for _ in 0..10 {
        tx.send(batch(i)).await.unwrap();
        i += 1;
        seq += 1;
        assert_eq!(next(&mut rx).await, delivered(seq, seq));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_gets_the_earlier_batches_by_replay() {
    let (tx, publisher) = start(&settings(true, 100), BLOCK_SIZE).unwrap();
    for i in 0..5 {
        tx.send(batch(i)).await.unwrap();
    }
    let (mut rx, _handle) = follow(&publisher);
    let (first, sent) = publish_until_heard(&tx, &mut rx, 5).await;
    assert_eq!(first, delivered(0, 0), "history from the first batch");
    for seq in 1..sent {
        assert_eq!(next(&mut rx).await, delivered(seq, seq));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_the_replay_buffer_no_longer_holds_is_lost() {
    let (tx, publisher) = start(&settings(true, 2), BLOCK_SIZE).unwrap();
    for i in 0..10 {
        tx.send(batch(i)).await.unwrap();
    }
    let (mut rx, _handle) = follow(&publisher);
    let (first, sent) = publish_until_heard(&tx, &mut rx, 10).await;
    let SubscriberEvent::Lost { from: 0, to } = first else {
        panic!("{first:?}");
    };
    assert!(to >= 7, "two batches held at most, lost up to {to}");
    for seq in to + 1..sent {
        assert_eq!(next(&mut rx).await, delivered(seq, seq));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_publisher_is_a_new_stream_from_its_first_batch() {
    let (tx, publisher) = start(&settings(true, 100), BLOCK_SIZE).unwrap();
    let endpoints = (
        publisher.endpoint.clone(),
        publisher.replay_endpoint.clone().unwrap(),
    );
    let (mut rx, _handle) = subscribe(endpoints.0.clone(), Some(endpoints.1.clone()), "kv".into());
    let (_, sent) = publish_until_heard(&tx, &mut rx, 0).await;
    for _ in 1..sent {
        next(&mut rx).await;
    }
    // Far enough that the new stream cannot catch up before the subscriber reconnects.
    for i in sent..40 {
        tx.send(batch(i)).await.unwrap();
        next(&mut rx).await;
    }
    drop(tx);
    tokio::task::spawn_blocking(move || publisher.join())
        .await
        .unwrap();

    let again = PublisherSettings {
        endpoint: endpoints.0,
        replay_endpoint: Some(endpoints.1),
        ..settings(true, 100)
    };
    let (tx, _publisher) = start(&again, BLOCK_SIZE).unwrap();
    let (first, sent) = publish_until_heard(&tx, &mut rx, 0).await;
    assert_eq!(first, SubscriberEvent::Restarted);
    for seq in 0..sent {
        assert_eq!(next(&mut rx).await, delivered(seq, seq));
    }
}

/// A raw PUB socket on a free port.
async fn raw_publisher() -> (PubSocket, String) {
    let mut socket = PubSocket::new();
    let endpoint = socket.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    (socket, endpoint)
}

fn message(frames: &[&[u8]]) -> ZmqMessage {
    let frames: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
    ZmqMessage::try_from(frames).unwrap()
}

fn payload(i: u64) -> Vec<u8> {
    wire::encode(&batch(i), BLOCK_SIZE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_skipped_and_reported_and_the_valid_batch_delivered() {
    let (mut publisher, endpoint) = raw_publisher().await;
    let (mut rx, _handle) = subscribe(endpoint, None, "kv".into());
    // One round: four kinds of garbage, then batch 2k + 1 (2k is the undecodable one).
    let round = |k: u64| {
        vec![
            message(&[b"kv"]),
            message(&[b"kv", b"abc", &payload(2 * k)]),
            message(&[b"kv", &(2 * k).to_be_bytes(), b"not msgpack"]),
            message(&[b"kv-other", &(2 * k + 1).to_be_bytes(), &payload(2 * k + 1)]),
            message(&[b"kv", &(2 * k + 1).to_be_bytes(), &payload(2 * k + 1)]),
        ]
    };
    let mut k = 0;
    'heard: loop {
        assert!(k < 400, "the subscriber heard nothing");
        for m in round(k) {
            publisher.send(m).await.unwrap();
        }
        k += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(event) = rx.try_recv() {
            if event == delivered(2 * k - 1, 2 * k - 1) {
                break 'heard;
            }
        }
    }
    // The subscription has taken: a whole round is reported in order.
    for m in round(k) {
        publisher.send(m).await.unwrap();
    }
    let mut events = Vec::new();
    while events.len() < 6 {
        events.push(next(&mut rx).await);
    }
    let reasons: Vec<String> = events[..3]
        .iter()
        .chain(&events[4..5])
        .map(|e| match e {
            SubscriberEvent::Malformed { reason } => reason.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    for (reason, want) in reasons
        .iter()
        .zip(["1 frames", "3 bytes", "batch", "kv-other"])
    {
        assert!(reason.contains(want), "{reason:?} should say {want:?}");
    }
    let bad = 2 * k;
    assert_eq!(events[3], SubscriberEvent::Lost { from: bad, to: bad });
    assert_eq!(events[5], delivered(bad + 1, bad + 1));
}

/// The batches a raw replay socket holds: `(seq, payload)`.
type Held = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// A raw ROUTER answering replays as vLLM does (`[seq, payload]` after the delimiter) from
/// `held`, or never when `answer` is false.
async fn raw_replay(held: Held, answer: bool) -> String {
    let mut router = RouterSocket::new();
    let endpoint = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    tokio::spawn(async move {
        while let Ok(request) = router.recv().await {
            if !answer {
                continue;
            }
            let identity = request.get(0).unwrap().clone();
            let start = u64::from_be_bytes(request.get(2).unwrap()[..].try_into().unwrap());
            let replies: Vec<_> = held
                .lock()
                .unwrap()
                .iter()
                .filter(|(seq, _)| *seq >= start)
                .cloned()
                .collect();
            let end = (-1i64).to_be_bytes();
            for (seq, payload) in replies {
                let m = message(&[&identity, b"", &seq.to_be_bytes(), &payload]);
                router.send(m).await.unwrap();
            }
            router
                .send(message(&[&identity, b"", &end, b""]))
                .await
                .unwrap();
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_replayed_and_what_the_buffer_no_longer_holds_is_lost() {
    let (mut publisher, endpoint) = raw_publisher().await;
    let held = Arc::new(Mutex::new(Vec::new()));
    let replay = raw_replay(held.clone(), true).await;
    let (mut rx, _handle) = subscribe(endpoint, Some(replay), "kv".into());
    let mut seq = 0;
    let first = loop {
        assert!(seq < 400, "the subscriber heard nothing");
        held.lock().unwrap().push((seq, payload(seq)));
        publisher
            .send(message(&[b"kv", &seq.to_be_bytes(), &payload(seq)]))
            .await
            .unwrap();
        seq += 1;
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            break e;
        }
    };
    assert_eq!(first, delivered(0, 0), "history replayed from 0");
    for s in 1..seq {
        assert_eq!(next(&mut rx).await, delivered(s, s));
    }
    // Five batches never reach the SUB socket, and the buffer has dropped the first three.
    {
        let mut held = held.lock().unwrap();
        held.clear();
        held.extend((seq + 3..seq + 5).map(|s| (s, payload(s))));
    }
    let live = seq + 5;
    publisher
        .send(message(&[b"kv", &live.to_be_bytes(), &payload(live)]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        SubscriberEvent::Lost {
            from: seq,
            to: seq + 2
        }
    );
    for s in seq + 3..=live {
        assert_eq!(next(&mut rx).await, delivered(s, s));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_socket_that_never_answers_delays_live_batches_only_briefly() {
    let (mut publisher, endpoint) = raw_publisher().await;
    let replay = raw_replay(Arc::new(Mutex::new(Vec::new())), false).await;
    let config = SubscriberConfig {
        replay_timeout: Duration::from_millis(300),
        ..SubscriberConfig::new(endpoint, Some(replay), "kv".into())
    };
    let (mut rx, _handle) = subscribe_with(config);
    // Start at 5 so that even the first message has history to ask for.
    let mut seq = 5u64;
    let first = loop {
        assert!(seq < 400, "the subscriber heard nothing");
        publisher
            .send(message(&[b"kv", &seq.to_be_bytes(), &payload(seq)]))
            .await
            .unwrap();
        seq += 1;
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            break e;
        }
    };
    let SubscriberEvent::Lost { from: 0, to } = first else {
        panic!("{first:?}");
    };
    assert!(to >= 4);
    // Messages sent while the replay waited are queued, not lost.
    for s in to + 1..seq {
        assert_eq!(next(&mut rx).await, delivered(s, s));
    }
}
