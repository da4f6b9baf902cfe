//! Watching the membership under a key prefix.
//!
//! The classic list-then-watch (as Kubernetes informers do over etcd): a prefix Get gives
//! the complete membership at revision R, and a Watch from R+1 gives every change after it,
//! with no gap and no duplicate. After any failure (etcd down, the watch cancelled, R+1
//! already compacted) the task starts over with a fresh Get, so the consumer gets a new
//! `Snapshot` and reconciles: whatever is not in it is gone, even if its `Delete` was missed
//! while disconnected.

use std::collections::BTreeMap;

use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::endpoint::{Connection, Endpoints};
use crate::DiscoveryError;

/// Events buffered for a slow consumer before the watch task waits for it.
const CHANNEL_CAPACITY: usize = 64;

/// What a watcher sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// The complete current membership as `(key, value)` pairs: sent first, and again after
    /// every reconnect. Anything not in it is gone.
    Snapshot(Vec<(String, String)>),
    /// `key` was added or its value changed.
    Put {
        /// The full key, prefix included.
        key: String,
        /// The value as written by the registrant.
        value: String,
    },
    /// `key` was removed (revoked, expired or deleted).
    Delete {
        /// The full key, prefix included.
        key: String,
    },
}

impl MembershipEvent {
    /// Applies the event to a `key -> value` view of the membership.
    pub fn apply(self, members: &mut BTreeMap<String, String>) {
        match self {
            Self::Snapshot(pairs) => *members = pairs.into_iter().collect(),
            Self::Put { key, value } => {
                members.insert(key, value);
            }
            Self::Delete { key } => {
                members.remove(&key);
            }
        }
    }
}

/// Owns the watch task: dropping it stops the watch.
#[derive(Debug)]
pub struct WatchHandle {
    task: JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches all keys under `prefix` from a background tokio task, which reconnects with
/// backoff on any error and then sends a fresh [`MembershipEvent::Snapshot`]. The task ends
/// when the receiver or the handle is dropped.
///
/// Fails only on malformed endpoints; an unreachable etcd is retried, not an error.
/// Must be called from within a tokio runtime.
pub fn watch(
    endpoints: &[String],
    prefix: String,
) -> Result<(mpsc::Receiver<MembershipEvent>, WatchHandle), DiscoveryError> {
    let endpoints = Endpoints::new(endpoints)?;
    let (events, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    let task = tokio::spawn(run(endpoints, prefix, events));
    Ok((receiver, WatchHandle { task }))
}

/// Subscribes, forwards changes, and starts over after a failure, until the receiver is gone.
async fn run(endpoints: Endpoints, prefix: String, events: mpsc::Sender<MembershipEvent>) {
    let mut backoff = Backoff::new();
    let mut resumed = false;
    loop {
        let attempt = tokio::select! {
            () = events.closed() => return,
            attempt = subscribe(&endpoints, &prefix) => attempt,
        };
        match attempt {
            Ok((snapshot, stream)) => {
                if resumed {
                    info!(prefix, members = snapshot.len(), "etcd watch resumed");
                }
                resumed = true;
                if events
                    .send(MembershipEvent::Snapshot(snapshot))
                    .await
                    .is_err()
                {
                    return;
                }
                backoff.reset();
                match follow(&endpoints, stream, &events).await {
                    Ok(()) => return,
                    Err(e) => warn!(prefix, error = %e, "etcd watch lost; reconnecting"),
                }
            }
            Err(e) => debug!(prefix, error = %e, "etcd watch attempt failed"),
        }
        tokio::select! {
            () = events.closed() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Reads the membership at some revision R and opens a watch from R+1.
async fn subscribe(
    endpoints: &Endpoints,
    prefix: &str,
) -> Result<(Vec<(String, String)>, WatchStream), DiscoveryError> {
    let conn = endpoints.connect().await?;
    let mut kv = conn.client.kv_client();
    let get = kv.get(prefix, Some(GetOptions::new().with_prefix()));
    let listing = conn.call("get", get).await?;
    let Some(revision) = listing.header().map(|h| h.revision()) else {
        return Err(endpoints.unexpected("get", "answer without a header"));
    };
    let snapshot = listing.kvs().iter().map(pair).collect();
    let stream = open_watch(&conn, prefix, revision + 1).await?;
    Ok((snapshot, stream))
}

/// Opens a watch and waits for etcd to confirm it, so a compacted start revision shows up
/// here rather than after the snapshot was sent.
async fn open_watch(
    conn: &Connection,
    prefix: &str,
    start_revision: i64,
) -> Result<WatchStream, DiscoveryError> {
    let mut watcher = conn.client.watch_client();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start_revision);
    let mut stream = conn
        .call("watch", watcher.watch(prefix, Some(options)))
        .await?;
    let first = conn.call("watch", stream.message()).await?;
    match first {
        Some(answer) if answer.canceled() => {
            Err(conn.endpoints.unexpected("watch", refusal(&answer)))
        }
        Some(answer) if answer.created() => Ok(stream),
        Some(_) => Err(conn
            .endpoints
            .unexpected("watch", "first answer did not confirm the watch")),
        None => Err(conn.endpoints.unexpected("watch", "stream closed by etcd")),
    }
}

/// Forwards watch events until the stream fails (an error) or the receiver is gone (`Ok`).
async fn follow(
    endpoints: &Endpoints,
    mut stream: WatchStream,
    events: &mpsc::Sender<MembershipEvent>,
) -> Result<(), DiscoveryError> {
    loop {
        let answer = tokio::select! {
            () = events.closed() => return Ok(()),
            answer = stream.message() => answer,
        };
        let answer = match answer {
            Ok(Some(answer)) => answer,
            Ok(None) => return Err(endpoints.unexpected("watch", "stream closed by etcd")),
            Err(e) => return Err(endpoints.error("watch", e)),
        };
        if answer.canceled() {
            return Err(endpoints.unexpected("watch", refusal(&answer)));
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let (key, value) = pair(kv);
            let change = match event.event_type() {
                EventType::Put => MembershipEvent::Put { key, value },
                EventType::Delete => MembershipEvent::Delete { key },
            };
            if events.send(change).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Why etcd cancelled a watch.
fn refusal(answer: &WatchResponse) -> String {
    if answer.compact_revision() > 0 {
        return format!(
            "cancelled: history compacted up to revision {}",
            answer.compact_revision()
        );
    }
    match answer.cancel_reason() {
        "" => "cancelled by etcd".to_string(),
        reason => format!("cancelled: {reason}"),
    }
}

/// Keys and values are opaque text to us; invalid UTF-8 is replaced, never dropped, so a
/// `Delete` still matches the `Put` before it.
fn pair(kv: &KeyValue) -> (String, String) {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> MembershipEvent {
        MembershipEvent::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_snapshot_replaces_the_membership_and_changes_apply_on_top() {
        let mut members = BTreeMap::new();
        put("r/a", "1").apply(&mut members);
        put("r/b", "2").apply(&mut members);
        MembershipEvent::Snapshot(vec![("r/b".into(), "3".into()), ("r/c".into(), "4".into())])
            .apply(&mut members);
        assert_eq!(members.keys().collect::<Vec<_>>(), ["r/b", "r/c"]);
        assert_eq!(members["r/b"], "3");
        MembershipEvent::Delete { key: "r/c".into() }.apply(&mut members);
        put("r/b", "5").apply(&mut members);
        assert_eq!(
            members.into_iter().collect::<Vec<_>>(),
            [("r/b".into(), "5".into())]
        );
    }
}
