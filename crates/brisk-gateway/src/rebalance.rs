//! Live migration (Llumnix) for load balance and for priority: every `rebalance_interval`,
//! and at once when an interactive request is routed with priority migration on, the router
//! core is asked whether a running request should move ([`brisk_router::RouterCore::
//! migration`]): from a replica decoding too many beyond another, or a batch-class decode off
//! a replica serving interactive work. If so, that replica is asked to move one of its
//! running requests (of the class asked for) there (`POST /internal/v1/requests/{id}/move`,
//! a live migration with pre-copy: the client's stream goes on token for token, through the
//! source). The replica picks which: the router tries the requests it lists, newest first
//! (the longest still to run, as far as anyone knows), until one moves. Moves follow one
//! another until none is due, a move fails, or [`MOVES_PER_LOOK`] were made.

use std::sync::Arc;

use brisk_router::Migration;
use serde_json::{json, Value};

use crate::state::Gateway;

/// Most migrations made in a row before waiting for the next tick (or wake-up).
const MOVES_PER_LOOK: usize = 16;

/// Checks for due migrations every `gateway.cfg.rebalance_interval`, or when woken, until
/// the gateway is dropped.
pub(crate) async fn rebalance_loop(gateway: Arc<Gateway>) {
    let mut interval = tokio::time::interval(gateway.cfg.rebalance_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = gateway.migration_due.notified() => {}
        }
        for _ in 0..MOVES_PER_LOOK {
            let plan = gateway.core().migration(gateway.now());
            let Some(plan) = plan else {
                break;
            };
            if !migrate_one(&gateway, &plan).await {
                break;
            }
            gateway.core().migrated(&plan);
            let reason = if plan.class.is_some() {
                "priority"
            } else {
                "balance"
            };
            gateway
                .metrics
                .migrations
                .with_label_values(&[reason])
                .inc();
        }
    }
}

/// Asks replica `plan.from` to move one of its running requests (of `plan.class`) to
/// `plan.to`; whether one moved.
async fn migrate_one(gateway: &Gateway, plan: &Migration) -> bool {
    let (Some(from_url), Some(to_url)) = (gateway.url(&plan.from), gateway.url(&plan.to)) else {
        return false;
    };
    let mut list = gateway
        .client
        .get(format!("{from_url}/internal/v1/requests"));
    if let Some(class) = plan.class {
        list = list.query(&[("priority", class.as_str())]);
    }
    let ids: Vec<u64> = match gateway.to_replica(list).send().await {
        Ok(r) if r.status().is_success() => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| serde_json::from_value(v["requests"].clone()).ok())
            .unwrap_or_default(),
        _ => return false,
    };
    for id in ids.into_iter().rev() {
        let move_url = format!("{from_url}/internal/v1/requests/{id}/move");
        let moved = gateway
            .to_replica(gateway.client.post(move_url))
            .json(&json!({ "to": to_url }))
            .send()
            .await;
        match moved {
            Ok(r) if r.status().is_success() => {
                tracing::info!(
                    from = plan.from,
                    to = plan.to,
                    request = id,
                    class = plan.class.map(|c| c.as_str()),
                    "migrated a running request"
                );
                return true;
            }
            // Not decoding yet, or ended: try the next one.
            Ok(r)
                if r.status() == reqwest::StatusCode::CONFLICT
                    || r.status() == reqwest::StatusCode::GONE => {}
            _ => return false,
        }
    }
    false
}
