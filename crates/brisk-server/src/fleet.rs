//! What a replica tells the fleet about itself.
//!
//! A router needs more than a URL to route by cache and by predicted latency: the block size
//! and hash salt that name the replica's KV blocks, where its KV events are published, its
//! pool size, its prompt chunk and its latency model. One record carries it all: served at
//! `GET /internal/v1/replica` (for routers given a static list) and registered in etcd by
//! `brisk serve --etcd` (for routers that discover replicas).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use brisk_scheduler::LatencyCoefficients;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::ServerState;

/// A replica's self-description (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Where clients reach its API, e.g. `http://127.0.0.1:8001`.
    pub url: String,
    /// The model name it serves.
    pub model: String,
    /// `both`, `prefill` or `decode` ([`brisk_types::Role`]).
    pub role: String,
    /// Tokens per KV block.
    pub block_size: usize,
    /// The salt of its block hashes (a hash of the model's content).
    pub hash_salt: u64,
    /// KV blocks in its pool.
    pub kv_blocks: usize,
    /// Its step token budget (the longest prompt chunk).
    pub max_batched_tokens: usize,
    /// Where its KV events are published, if they are.
    pub kv_events: Option<KvEventsEndpoints>,
    /// Its step-latency model, when it has one (`--latency-model` or `slo` profiling).
    pub latency: Option<LatencyCoefficients>,
    /// Bytes of K/V per token it sends when a request moves (`--kv-transfer-dtype`);
    /// absent from replicas that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer_bytes_per_token: Option<usize>,
}

/// Connectable addresses of a replica's KV event sockets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEventsEndpoints {
    /// The PUB socket, `tcp://host:port`.
    pub endpoint: String,
    /// The replay socket, if any.
    pub replay_endpoint: Option<String>,
    /// The topic its messages carry.
    pub topic: String,
}

/// `GET /internal/v1/replica`: the replica's [`ReplicaInfo`].
pub async fn info(State(state): State<Arc<ServerState>>) -> Result<Response, ApiError> {
    match &state.replica_info {
        Some(info) => Ok(axum::Json(info).into_response()),
        None => Err(ApiError::internal(
            "this server was started without a replica description",
        )),
    }
}
