//! The consumer side: a task that follows one publisher's stream and hands its batches over
//! in sequence order, telling its consumer whenever its mirror of the cache may be
//! incomplete.
//!
//! brisk's router keeps, per replica, an index of the blocks that replica has cached; it
//! needs the whole current state, not just what happens after it connects. So:
//!
//! - As soon as it has subscribed, if a replay endpoint is given, the subscriber asks it for
//!   everything it holds from 0 and delivers it (an idle publisher sends nothing live, and
//!   the consumer should not have to wait for a change to learn the cache); live batches
//!   the replay already covered are skipped.
//! - On the first live message (sequence `s`) not covered that way, it asks the replay
//!   socket for `0..s` and delivers it before `s`. A publisher's stream starts
//!   with the cache empty (brisk records `AllBlocksCleared` first), so batches from 0 rebuild
//!   the whole cache (vLLM's starts empty too). What the replay no longer holds (its buffer
//!   moved on), or all of `0..s` when there is no replay endpoint, is reported as
//!   [`SubscriberEvent::Lost`].
//! - Whenever a sequence number jumps past the last one plus one, it asks for the gap the
//!   same way; whatever the replay cannot supply is [`SubscriberEvent::Lost`].
//! - A sequence number at or below the last one is a new publisher (vLLM's protocol has no
//!   stream id; its sequence starts at 0): [`SubscriberEvent::Restarted`], then the new
//!   stream, its history from 0 fetched as on a first message. A restarted publisher may
//!   already be past the old sequence when the SUB socket reconnects, so any jump right
//!   after the connection dropped is taken as a restart too. That is safe either way: if it
//!   was the same publisher, its history from 0 rebuilds the same state (or is reported
//!   lost), where taking a new stream for a gap in the old one would mix the two silently.
//! - A frame or payload that does not parse is skipped and reported as
//!   [`SubscriberEvent::Malformed`]; one with a valid sequence number but an undecodable
//!   payload also takes that number: it is [`SubscriberEvent::Lost`] (replaying it would
//!   give the same bytes).
//!
//! Replays have a deadline ([`SubscriberConfig::replay_timeout`]), so a replay socket that
//! never answers delays live batches and cannot stop them. While a replay is running the SUB
//! socket is not read; the publisher drops for it what does not fit its queue, and those
//! batches come back as one more gap. ZMQ reconnects the SUB socket when the publisher goes
//! away and comes back; the task only ends when its consumer drops the receiver, its handle
//! is dropped, or the endpoint is not an address at all (the receiver then yields `None`).

mod frames;
mod replay;
mod sequence;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use zeromq::{Socket, SocketEvent, SocketRecv, SubSocket, ZmqError};

use crate::wire::{self, DecodedBatch};
use sequence::{Fill, Sequencer};

/// Events waiting for the consumer before the subscriber stops reading.
const CHANNEL_CAPACITY: usize = 1024;

/// The longest wait between two attempts to connect the SUB socket.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// The pause after a failed receive (a peer that went away), so that a socket in trouble
/// is not polled in a tight loop.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What the subscriber tells its consumer, in stream order.
#[derive(Clone, Debug, PartialEq)]
pub enum SubscriberEvent {
    /// The batch numbered `seq`, after every earlier one (delivered or reported lost).
    Batch {
        /// Its sequence number.
        seq: u64,
        /// Its events.
        batch: DecodedBatch,
    },
    /// Batches `from..=to` were published and will not be delivered: a mirror built from
    /// this stream is incomplete until the publisher next clears its cache.
    Lost {
        /// The first missing sequence number.
        from: u64,
        /// The last missing sequence number.
        to: u64,
    },
    /// The publisher started a new stream (its sequence went back): what follows replaces
    /// everything before.
    Restarted,
    /// A message (or replay reply) that could not be read, skipped.
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

/// Where to subscribe, and how long a replay may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberConfig {
    /// The publisher's PUB endpoint, e.g. `tcp://10.0.0.5:5557`.
    pub publish: String,
    /// Its replay (ROUTER) endpoint, if it has one.
    pub replay: Option<String>,
    /// The topic: the first frame of every message, matched exactly.
    pub topic: String,
    /// The most one replay request may take, connecting included.
    pub replay_timeout: Duration,
}

impl SubscriberConfig {
    /// A configuration with the default replay timeout (5 s).
    pub fn new(publish: String, replay: Option<String>, topic: String) -> Self {
        Self {
            publish,
            replay,
            topic,
            replay_timeout: Duration::from_secs(5),
        }
    }
}

/// The running subscriber task; dropping the handle stops it.
#[derive(Debug)]
pub struct SubscriberHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SubscriberHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to `topic` on the PUB socket at `publish`, with missed batches asked of
/// `replay` when given. Must be called inside a tokio runtime.
pub fn subscribe(
    publish: String,
    replay: Option<String>,
    topic: String,
) -> (mpsc::Receiver<SubscriberEvent>, SubscriberHandle) {
    subscribe_with(SubscriberConfig::new(publish, replay, topic))
}

/// [`subscribe`] with every setting given.
pub fn subscribe_with(
    config: SubscriberConfig,
) -> (mpsc::Receiver<SubscriberEvent>, SubscriberHandle) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let task = tokio::spawn(async move {
        let Some(mut socket) = connect(&config).await else {
            return;
        };
        let subscriber = Subscriber {
            config,
            tx,
            sequencer: Sequencer::default(),
        };
        let monitor = socket.monitor();
        // Err: the consumer is gone.
        let _ = subscriber.run(socket, monitor).await;
    });
    (rx, SubscriberHandle { task })
}

/// Connects and subscribes, retrying until the publisher is there; `None` when the
/// endpoint can never work.
async fn connect(config: &SubscriberConfig) -> Option<SubSocket> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut socket = SubSocket::new();
        let result = match socket.connect(&config.publish).await {
            Ok(()) => socket.subscribe(&config.topic).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return Some(socket),
            Err(ZmqError::Endpoint(e)) => {
                tracing::error!(
                    "KV events: cannot subscribe to {}: {e}; subscriber stops",
                    config.publish
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(
                    "KV events: cannot subscribe to {} yet: {e}; retrying in {backoff:?}",
                    config.publish
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
            }
        }
    }
}

/// The consumer dropped its receiver.
struct Closed;

struct Subscriber {
    config: SubscriberConfig,
    tx: mpsc::Sender<SubscriberEvent>,
    sequencer: Sequencer,
}

impl Subscriber {
    async fn run(
        mut self,
        mut socket: SubSocket,
        mut monitor: futures_channel::mpsc::Receiver<SocketEvent>,
    ) -> Result<(), Closed> {
        self.catch_up().await?;
        loop {
            let message = match socket.recv().await {
                Ok(message) => message,
                Err(e) => {
                    tracing::debug!(
                        "KV events: receive from {} failed: {e}",
                        self.config.publish
                    );
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                    continue;
                }
            };
            // A drop is reported before anything arrives on the new connection.
            while let Ok(event) = monitor.try_recv() {
                if let SocketEvent::Disconnected(_) = event {
                    self.sequencer.reconnected();
                }
            }
            match frames::parse_live(&message, self.config.topic.as_bytes()) {
                Ok((seq, payload)) => self.on_batch(seq, payload).await?,
                Err(reason) => self.send(SubscriberEvent::Malformed { reason }).await?,
            }
        }
    }

    /// Right after subscribing, fetches the whole history the replay socket holds, so that
    /// the consumer knows the publisher's cache without waiting for it to change (an idle
    /// replica publishes nothing). What the replay no longer holds from 0 is reported lost.
    async fn catch_up(&mut self) -> Result<(), Closed> {
        let Some(endpoint) = &self.config.replay else {
            return Ok(());
        };
        let replayed = replay::request(
            endpoint,
            self.config.topic.as_bytes(),
            0..u64::MAX,
            self.config.replay_timeout,
        )
        .await;
        for reason in replayed.malformed {
            self.send(SubscriberEvent::Malformed { reason }).await?;
        }
        let mut last = None;
        for (seq, payload) in replayed.batches {
            if last.is_some_and(|l| seq <= l) {
                continue;
            }
            let from = last.map_or(0, |l| l + 1);
            if seq > from {
                self.send(SubscriberEvent::Lost { from, to: seq - 1 })
                    .await?;
            }
            self.deliver(seq, &payload).await?;
            last = Some(seq);
        }
        if let Some(last) = last {
            self.sequencer.caught_up(last);
        }
        Ok(())
    }

    /// A live batch: first whatever came before it, then the batch.
    async fn on_batch(&mut self, seq: u64, payload: Bytes) -> Result<(), Closed> {
        let plan = self.sequencer.next(seq);
        if plan.duplicate {
            return Ok(());
        }
        if plan.restarted {
            self.send(SubscriberEvent::Restarted).await?;
        }
        if let Some(missing) = plan.missing {
            for step in self.replay(missing).await? {
                match step {
                    Fill::Deliver(seq, payload) => self.deliver(seq, &payload).await?,
                    Fill::Lost { from, to } => {
                        self.send(SubscriberEvent::Lost { from, to }).await?
                    }
                }
            }
        }
        self.deliver(seq, &payload).await
    }

    /// How `missing` is filled: from the replay socket if there is one.
    async fn replay(&self, missing: std::ops::Range<u64>) -> Result<Vec<Fill>, Closed> {
        let Some(endpoint) = &self.config.replay else {
            return Ok(sequence::fill(missing, Vec::new()));
        };
        let replayed = replay::request(
            endpoint,
            self.config.topic.as_bytes(),
            missing.clone(),
            self.config.replay_timeout,
        )
        .await;
        for reason in replayed.malformed {
            self.send(SubscriberEvent::Malformed { reason }).await?;
        }
        Ok(sequence::fill(missing, replayed.batches))
    }

    /// Decodes and hands over batch `seq`; an undecodable one is reported and lost.
    async fn deliver(&self, seq: u64, payload: &[u8]) -> Result<(), Closed> {
        match wire::decode(payload) {
            Ok(batch) => self.send(SubscriberEvent::Batch { seq, batch }).await,
            Err(e) => {
                let reason = format!("batch {seq}: {e}");
                self.send(SubscriberEvent::Malformed { reason }).await?;
                self.send(SubscriberEvent::Lost { from: seq, to: seq })
                    .await
            }
        }
    }

    async fn send(&self, event: SubscriberEvent) -> Result<(), Closed> {
        self.tx.send(event).await.map_err(|_| Closed)
    }
}
