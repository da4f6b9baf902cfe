//! Membership from etcd: replicas' [`ReplicaInfo`] under a key prefix, each key under its
//! replica's lease.

use std::collections::HashSet;
use std::sync::Arc;

use brisk_discovery::MembershipEvent;
use brisk_server::ReplicaInfo;

use crate::state::Gateway;

/// Follows the keys under `prefix` until the task is aborted; reconnection after etcd
/// restarts is the watcher's, which then sends a fresh snapshot.
pub async fn follow(gateway: Arc<Gateway>, endpoints: Vec<String>, prefix: String) {
    let (mut events, _watch) = match brisk_discovery::watch(&endpoints, prefix) {
        Ok(watch) => watch,
        Err(e) => {
            tracing::error!("cannot watch etcd: {e}");
            return;
        }
    };
    while let Some(event) = events.recv().await {
        match event {
            MembershipEvent::Snapshot(entries) => {
                let present: HashSet<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
                for (id, _) in gateway.members() {
                    if !present.contains(id.as_str()) && is_etcd_member(&id) {
                        gateway.remove(&id);
                    }
                }
                for (key, value) in &entries {
                    put(&gateway, key, value);
                }
            }
            MembershipEvent::Put { key, value } => put(&gateway, &key, &value),
            MembershipEvent::Delete { key } => gateway.remove(&key),
        }
    }
}

/// Static members are named by their URL, etcd ones by their key.
fn is_etcd_member(id: &str) -> bool {
    !id.starts_with("http://") && !id.starts_with("https://")
}

fn put(gateway: &Arc<Gateway>, key: &str, value: &str) {
    match serde_json::from_str::<ReplicaInfo>(value) {
        Ok(info) => gateway.upsert(key, info),
        Err(e) => {
            tracing::warn!(
                key,
                "ignoring a registration that is not a replica description: {e}"
            );
        }
    }
}
