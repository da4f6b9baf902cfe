//! Draining by migration: a replica of a fleet that is told to stop moves its running
//! requests to its peers instead of finishing them itself or aborting them (Llumnix's
//! draining). Each request moves as `POST /internal/v1/requests/{id}/move` would move it
//! ([`crate::routes::handover::move_to`]), so its client's stream goes on token for token,
//! relayed through this replica until it ends; the engine here is free at once. Requests
//! still computing their prompt move as soon as they decode; a request no peer takes
//! finishes here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brisk_engine::MoveError;

use crate::routes::handover::{move_to, CopyMode, MoveFailure};
use crate::transfer_metrics::MoveKind;
use crate::ServerState;

/// How often the requests still here are looked at again.
const POLL: Duration = Duration::from_millis(20);

/// Moves the requests running here to `peers` (base URLs, taken in turn), until none is
/// left or `limit` has passed; returns how many moved. A peer that refuses or cannot be
/// reached is not tried again.
pub async fn migrate_running(
    state: Arc<ServerState>,
    peers: Vec<String>,
    limit: Duration,
) -> usize {
    let started = Instant::now();
    let mut peers = peers;
    let mut moved = 0;
    let mut turn = 0;
    // Requests that cannot move (structured output): left to finish here.
    let mut staying: HashSet<u64> = HashSet::new();
    while !peers.is_empty() && started.elapsed() < limit {
        let Ok(ids) = state.engine.requests(None).await else {
            break;
        };
        let movable: Vec<u64> = ids.into_iter().filter(|id| !staying.contains(id)).collect();
        if movable.is_empty() {
            break;
        }
        for id in movable {
            let Some(to) = peers.get(turn % peers.len().max(1)).cloned() else {
                break;
            };
            match move_to(&state, id, &to, MoveKind::Migration, CopyMode::PreCopy).await {
                Ok(_) => {
                    moved += 1;
                    turn += 1;
                }
                Err(MoveFailure::NotMovable(MoveError::Constrained)) => {
                    staying.insert(id);
                }
                // Still computing its prompt (it moves once it decodes), or just ended.
                Err(MoveFailure::NotMovable(_) | MoveFailure::Gone(_)) => {}
                Err(MoveFailure::Destination(e)) => {
                    tracing::warn!("draining: {to} is not tried again: {}", e.message);
                    peers.retain(|p| *p != to);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    moved
}
