//! The publisher over real ZMQ sockets on 127.0.0.1: a SUB receives every batch in order
//! with vLLM's framing, a DEALER gets missed batches replayed, and garbage on the replay
//! socket gets the end marker and changes nothing.

use std::time::Duration;

use brisk_kv::{BlockHash, KvEvent, KvEventBatch};
use brisk_kv_events::{start, PublisherSettings};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

fn batch(i: u64) -> KvEventBatch {
    KvEventBatch {
        ts: 1_700_000_000.0 + i as f64,
        events: vec![KvEvent::Removed {
            hashes: vec![BlockHash(i)],
        }],
    }
}

fn frames(m: &ZmqMessage) -> Vec<Vec<u8>> {
    m.iter().map(|f| f.to_vec()).collect()
}

async fn recv(socket: &mut impl SocketRecv) -> ZmqMessage {
    tokio::time::timeout(Duration::from_secs(10), socket.recv())
        .await
        .expect("a message within 10 s")
        .expect("a message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arrive_in_order_and_missed_ones_are_replayed() {
    let settings = PublisherSettings {
        endpoint: "tcp://127.0.0.1:0".into(),
        bind: true,
        replay_endpoint: Some("tcp://127.0.0.1:0".into()),
        buffer_steps: 3,
        max_queue_size: 8,
        topic: "kv".into(),
    };
    let (tx, publisher) = start(&settings, 16).unwrap();
    let mut sub = SubSocket::new();
    sub.connect(&publisher.endpoint).await.unwrap();
    sub.subscribe("kv").await.unwrap();
    // PUB drops what it sends before the subscription arrives: send a first batch until it
    // is seen, then count from the sequence number it carried.
    let mut first = None;
    for i in 0..200 {
        tx.send(batch(i)).await.unwrap();
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(50), sub.recv()).await {
            first = Some(m);
            break;
        }
    }
    let first = frames(&first.expect("the subscription took"));
    assert_eq!(first.len(), 3);
    assert_eq!(first[0], b"kv");
    let seq0 = i64::from_be_bytes(first[1].clone().try_into().unwrap());
    for k in 1..=5 {
        tx.send(batch(1000 + k)).await.unwrap();
        let m = frames(&recv(&mut sub).await);
        assert_eq!(
            i64::from_be_bytes(m[1].clone().try_into().unwrap()),
            seq0 + k as i64,
            "contiguous sequence numbers"
        );
    }

    // Replay from seq0 + 3: the buffer holds the last three batches (seq0 + 3..=5).
    let mut dealer = DealerSocket::new();
    dealer
        .connect(publisher.replay_endpoint.as_deref().unwrap())
        .await
        .unwrap();
    let ask = |start: &[u8]| {
        ZmqMessage::try_from(vec![
            bytes::Bytes::new(),
            bytes::Bytes::copy_from_slice(start),
        ])
        .unwrap()
    };
    dealer.send(ask(&(seq0 + 3).to_be_bytes())).await.unwrap();
    let mut replayed = Vec::new();
    loop {
        let m = frames(&recv(&mut dealer).await);
        assert_eq!(m.len(), 4, "[empty, topic, seq, payload]");
        assert!(m[0].is_empty());
        let seq = i64::from_be_bytes(m[2].clone().try_into().unwrap());
        if seq == -1 {
            assert!(m[1].is_empty() && m[3].is_empty(), "the end marker");
            break;
        }
        assert_eq!(m[1], b"kv");
        replayed.push(seq);
    }
    assert_eq!(replayed, vec![seq0 + 3, seq0 + 4, seq0 + 5]);

    // Garbage: answered with the end marker alone; publishing goes on.
    dealer.send(ask(b"nonsense")).await.unwrap();
    let m = frames(&recv(&mut dealer).await);
    assert_eq!(i64::from_be_bytes(m[2].clone().try_into().unwrap()), -1);
    tx.send(batch(2000)).await.unwrap();
    let m = frames(&recv(&mut sub).await);
    assert_eq!(
        i64::from_be_bytes(m[1].clone().try_into().unwrap()),
        seq0 + 6
    );

    drop(tx);
    tokio::task::spawn_blocking(move || publisher.join())
        .await
        .unwrap();
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let settings = PublisherSettings {
        endpoint: format!("tcp://127.0.0.1:{port}"),
        bind: true,
        replay_endpoint: None,
        buffer_steps: 1,
        max_queue_size: 1,
        topic: String::new(),
    };
    let e = start(&settings, 16).unwrap_err().to_string();
    assert!(
        e.contains("cannot bind") && e.contains(&port.to_string()),
        "{e}"
    );
}
