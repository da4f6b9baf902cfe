//! Each replica's KV events, read into the router core's index of its blocks.
//!
//! One subscriber task per replica that publishes (vLLM's ZMQ format, read by
//! `brisk_kv_events::subscriber`, which also fills gaps from the replay socket). When events
//! were lost beyond what the replay could fill, or the replica's publisher restarted, the
//! replica's index is dropped and rebuilt from the events that follow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use brisk_kv_events::subscriber::{subscribe, SubscriberEvent, SubscriberHandle};
use brisk_kv_events::wire::WireEvent;
use brisk_router::IndexEvent;
use brisk_server::KvEventsEndpoints;
use tokio::task::JoinHandle;

use crate::state::Gateway;

struct Followed {
    endpoints: KvEventsEndpoints,
    task: JoinHandle<()>,
}

/// The running subscriptions, by replica.
#[derive(Default)]
pub struct Subscriptions {
    followed: Mutex<HashMap<String, Followed>>,
}

impl Subscriptions {
    /// Follows `endpoints` for replica `id` (or stops following it, for `None`).
    pub fn follow(&self, gateway: &Arc<Gateway>, id: &str, endpoints: Option<&KvEventsEndpoints>) {
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        if followed
            .get(id)
            .is_some_and(|f| Some(&f.endpoints) == endpoints)
        {
            return;
        }
        if let Some(old) = followed.remove(id) {
            old.task.abort();
        }
        if let Some(endpoints) = endpoints {
            let task = tokio::spawn(read_events(
                Arc::downgrade(gateway),
                id.to_owned(),
                endpoints.clone(),
            ));
            followed.insert(
                id.to_owned(),
                Followed {
                    endpoints: endpoints.clone(),
                    task,
                },
            );
        }
    }

    /// Stops following replica `id`.
    pub fn stop(&self, id: &str) {
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = followed.remove(id) {
            old.task.abort();
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        let followed = self.followed.get_mut().unwrap_or_else(|p| p.into_inner());
        for f in followed.values() {
            f.task.abort();
        }
    }
}

async fn read_events(gateway: Weak<Gateway>, id: String, endpoints: KvEventsEndpoints) {
    let (mut events, _handle): (_, SubscriberHandle) = subscribe(
        endpoints.endpoint.clone(),
        endpoints.replay_endpoint.clone(),
        endpoints.topic.clone(),
    );
    while let Some(event) = events.recv().await {
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        match event {
            SubscriberEvent::Batch { batch, .. } => {
                let changes: Vec<IndexEvent> =
                    batch.events.into_iter().filter_map(index_event).collect();
                gateway.core().apply_events(&id, &changes);
            }
            SubscriberEvent::Lost { from, to } => {
                tracing::warn!(
                    replica = id,
                    from,
                    to,
                    "KV events lost: rebuilding its index"
                );
                gateway.core().events_lost(&id);
            }
            SubscriberEvent::Restarted => {
                tracing::info!(replica = id, "KV event publisher restarted");
                gateway.core().events_lost(&id);
            }
            SubscriberEvent::Malformed { reason } => {
                tracing::debug!(replica = id, "malformed KV event message: {reason}");
            }
        }
    }
}

/// The change to the index, for events about the tier attention reads (vLLM's `"GPU"`;
/// events without a medium come from publishers that have one tier). Blocks offloaded to
/// another tier (vLLM's `"CPU"`) are not counted as cached.
fn index_event(event: WireEvent) -> Option<IndexEvent> {
    let attention_tier = |medium: &Option<String>| {
        medium
            .as_deref()
            .is_none_or(|m| m == brisk_kv_events::wire::MEDIUM)
    };
    match event {
        WireEvent::Stored { hashes, medium, .. } => {
            attention_tier(&medium).then_some(IndexEvent::Stored(hashes))
        }
        WireEvent::Removed { hashes, medium } => {
            attention_tier(&medium).then_some(IndexEvent::Removed(hashes))
        }
        WireEvent::AllCleared => Some(IndexEvent::Cleared),
    }
}
