//! The publisher: a thread with its own small runtime, a PUB socket and an optional replay
//! ROUTER socket.
//!
//! The engine sends each step's [`KvEventBatch`] into a bounded channel ([`start`] returns
//! its sending end). The publisher numbers the batches from 0, encodes them ([`wire`]), sends
//! `[topic, sequence (8 bytes, big-endian), payload]` and keeps the last `buffer_steps` for
//! replay. A subscriber that sees a gap in the sequence asks the replay socket for
//! everything from a sequence number on (one frame of 8 bytes, big-endian, after the
//! envelope) and gets `[topic, sequence, payload]` for each batch still held, then
//! `["", −1, ""]` (vLLM's end marker, in the framing vllm-router reads). A request that is
//! not 8 bytes is logged and answered with the end marker alone; nothing a peer sends can
//! stop the publisher.

use std::collections::VecDeque;

use brisk_kv::KvEventBatch;
use bytes::Bytes;
use tokio::sync::mpsc;
use zeromq::{PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::config::PublisherSettings;
use crate::wire;

/// vLLM's sequence number that ends a replay.
const END_SEQ: i64 = -1;

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The PUB socket could not bind or connect.
    #[error("KV events: cannot {action} {endpoint}: {source}")]
    Socket {
        /// `bind` or `connect`.
        action: &'static str,
        /// The address.
        endpoint: String,
        /// What ZMQ said.
        source: zeromq::ZmqError,
    },
    /// The thread or its runtime could not start.
    #[error("KV events: cannot start the publisher: {0}")]
    Start(std::io::Error),
}

/// A running publisher; dropping it does not stop it (the engine's sender going away does).
#[derive(Debug)]
pub struct Publisher {
    /// The address the PUB socket is bound to or connected to (a bound port 0 resolved).
    pub endpoint: String,
    /// The address the replay socket is bound to, if any (port 0 resolved).
    pub replay_endpoint: Option<String>,
    thread: std::thread::JoinHandle<()>,
}

impl Publisher {
    /// Waits until the engine's sender is gone and every batch is sent.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Binds (or connects) the sockets and starts publishing what arrives on the returned
/// sender, for a pool of `block_size`-token blocks. Callable from inside or outside an async
/// runtime: the sockets are opened on the publisher's own thread, which reports back.
pub fn start(
    settings: &PublisherSettings,
    block_size: usize,
) -> Result<(mpsc::Sender<KvEventBatch>, Publisher), PublishError> {
    let (tx, rx) = mpsc::channel(settings.max_queue_size);
    let state = State {
        topic: Bytes::from(settings.topic.clone().into_bytes()),
        block_size,
        buffer: VecDeque::new(),
        buffer_steps: settings.buffer_steps,
        next_seq: 0,
    };
    let (opened_tx, opened) = std::sync::mpsc::channel();
    let settings = settings.clone();
    let thread = std::thread::Builder::new()
        .name("brisk-kv-events".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = opened_tx.send(Err(PublishError::Start(e)));
                    return;
                }
            };
            match runtime.block_on(open_sockets(&settings)) {
                Ok((publisher, router, endpoint, replay_endpoint)) => {
                    let _ = opened_tx.send(Ok((endpoint, replay_endpoint)));
                    runtime.block_on(run(state, publisher, router, rx));
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            }
        })
        .map_err(PublishError::Start)?;
    let (endpoint, replay_endpoint) = opened.recv().map_err(|_| {
        PublishError::Start(std::io::Error::other("the publisher thread ended at start"))
    })??;
    Ok((
        tx,
        Publisher {
            endpoint,
            replay_endpoint,
            thread,
        },
    ))
}

/// The PUB socket (bound or connected) and the replay socket, with their resolved addresses.
async fn open_sockets(
    settings: &PublisherSettings,
) -> Result<(PubSocket, Option<RouterSocket>, String, Option<String>), PublishError> {
    // A `*` host left in place means every interface.
    let settings = settings.clone().on_host("0.0.0.0");
    let error = |action, endpoint: &str| {
        let endpoint = endpoint.to_string();
        move |source| PublishError::Socket {
            action,
            endpoint,
            source,
        }
    };
    let mut publisher = PubSocket::new();
    let endpoint = if settings.bind {
        publisher
            .bind(&settings.endpoint)
            .await
            .map_err(error("bind", &settings.endpoint))?
            .to_string()
    } else {
        publisher
            .connect(&settings.endpoint)
            .await
            .map_err(error("connect to", &settings.endpoint))?;
        settings.endpoint.clone()
    };
    let (router, replay_endpoint) = match &settings.replay_endpoint {
        Some(at) => {
            let mut router = RouterSocket::new();
            let bound = router.bind(at).await.map_err(error("bind", at))?;
            (Some(router), Some(bound.to_string()))
        }
        None => (None, None),
    };
    Ok((publisher, router, endpoint, replay_endpoint))
}

/// The sequence numbering and the replay buffer.
struct State {
    topic: Bytes,
    block_size: usize,
    /// `(sequence, payload)` of the last `buffer_steps` batches.
    buffer: VecDeque<(i64, Bytes)>,
    buffer_steps: usize,
    next_seq: i64,
}

impl State {
    /// Numbers and encodes `batch` (split into batches of at most [`wire::MAX_EVENTS`]),
    /// keeping each for replay: the messages to publish.
    fn messages(&mut self, batch: KvEventBatch) -> Vec<ZmqMessage> {
        let mut out = Vec::new();
        for events in batch.events.chunks(wire::MAX_EVENTS) {
            let part = KvEventBatch {
                ts: batch.ts,
                events: events.to_vec(),
            };
            let payload = Bytes::from(wire::encode(&part, self.block_size));
            let seq = self.next_seq;
            self.next_seq += 1;
            out.push(frames(&[
                self.topic.clone(),
                seq_frame(seq),
                payload.clone(),
            ]));
            if self.buffer_steps > 0 {
                if self.buffer.len() == self.buffer_steps {
                    self.buffer.pop_front();
                }
                self.buffer.push_back((seq, payload));
            }
        }
        out
    }

    /// The replies to a replay request (`[identity, …, start]`): every held batch from
    /// `start` on, then the end marker.
    fn replay(&self, request: &ZmqMessage) -> Vec<ZmqMessage> {
        let identity = request.get(0).cloned().unwrap_or_default();
        let start = request
            .get(request.len() - 1)
            .filter(|_| request.len() >= 2)
            .and_then(|f| <[u8; 8]>::try_from(f.as_ref()).ok())
            .map(i64::from_be_bytes);
        let envelope = |rest: [Bytes; 3]| {
            frames(&[
                identity.clone(),
                Bytes::new(),
                rest[0].clone(),
                rest[1].clone(),
                rest[2].clone(),
            ])
        };
        let mut out = Vec::new();
        match start {
            Some(start) => {
                for (seq, payload) in self.buffer.iter().filter(|(seq, _)| *seq >= start) {
                    out.push(envelope([
                        self.topic.clone(),
                        seq_frame(*seq),
                        payload.clone(),
                    ]));
                }
            }
            None => tracing::warn!(
                "KV events: ignoring a replay request that is not an 8-byte sequence number"
            ),
        }
        out.push(envelope([Bytes::new(), seq_frame(END_SEQ), Bytes::new()]));
        out
    }
}

fn seq_frame(seq: i64) -> Bytes {
    Bytes::copy_from_slice(&seq.to_be_bytes())
}

fn frames(parts: &[Bytes]) -> ZmqMessage {
    ZmqMessage::try_from(parts.to_vec()).expect("at least one frame")
}

/// Publishes until the engine's sender is gone and the queue is empty, serving replays.
async fn run(
    mut state: State,
    mut publisher: PubSocket,
    mut router: Option<RouterSocket>,
    mut batches: mpsc::Receiver<KvEventBatch>,
) {
    loop {
        tokio::select! {
            batch = batches.recv() => {
                let Some(batch) = batch else { break };
                for message in state.messages(batch) {
                    // PUB never blocks: a subscriber whose queue is full misses messages.
                    if let Err(e) = publisher.send(message).await {
                        tracing::warn!("KV events: send failed: {e}");
                    }
                }
            }
            request = recv_replay(&mut router) => {
                let Ok(request) = request else {
                    tracing::warn!("KV events: replay socket failed; replays stop");
                    router = None;
                    continue;
                };
                for reply in state.replay(&request) {
                    if let Some(router) = &mut router {
                        if let Err(e) = router.send(reply).await {
                            tracing::warn!("KV events: replay send failed: {e}");
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = publisher.close().await;
    if let Some(router) = router {
        let _ = router.close().await;
    }
}

/// The next replay request, or never when there is no replay socket.
async fn recv_replay(router: &mut Option<RouterSocket>) -> zeromq::ZmqResult<ZmqMessage> {
    match router {
        Some(router) => router.recv().await,
        None => std::future::pending().await,
    }
}
