//! Live migration for load balance (Llumnix): every `rebalance_interval` the router core is
//! asked whether one replica decodes too many requests beyond another
//! ([`brisk_router::RouterCore::rebalance`]); if so, the busy replica is asked to move one of
//! its running requests there (`POST /internal/v1/requests/{id}/move`, a live migration with
//! pre-copy: the client's stream goes on token for token, through the source). The replica
//! picks which: the router tries the requests it lists, newest first (the longest still to
//! run, as far as anyone knows), until one moves.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::state::Gateway;

/// Checks the balance every `gateway.cfg.rebalance_interval` until the gateway is dropped.
pub(crate) async fn rebalance_loop(gateway: Arc<Gateway>) {
    let mut interval = tokio::time::interval(gateway.cfg.rebalance_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let plan = gateway.core().rebalance(gateway.now());
        if let Some((from, to)) = plan {
            if migrate_one(&gateway, &from, &to).await {
                gateway.core().migrated(&from, &to);
                gateway.metrics.migrations.inc();
            }
        }
    }
}

/// Asks replica `from` to move one of its running requests to `to`; whether one moved.
async fn migrate_one(gateway: &Gateway, from: &str, to: &str) -> bool {
    let (Some(from_url), Some(to_url)) = (gateway.url(from), gateway.url(to)) else {
        return false;
    };
    let listed = gateway
        .to_replica(
            gateway
                .client
                .get(format!("{from_url}/internal/v1/requests")),
        )
        .send()
        .await;
    let ids: Vec<u64> = match listed {
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
                    from,
                    to,
                    request = id,
                    "migrated a running request for balance"
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
