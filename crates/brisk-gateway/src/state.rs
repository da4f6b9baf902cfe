//! The gateway's shared state: the router core behind a lock, the replicas' addresses, the
//! HTTP client and the metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use brisk_router::{ReplicaSpec, RouterConfig, RouterCore};
use brisk_scheduler::LatencyModel;
use brisk_server::{AuthSettings, ReplicaInfo};
use brisk_types::Role;

use crate::metrics::GatewayMetrics;

/// Settings of `brisk route`.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The router core's settings.
    pub router: RouterConfig,
    /// The latency model of replicas that advertise none.
    pub default_latency: LatencyModel,
    /// Default TTFT objective, seconds (requests may bring their own `slo.ttft_ms`).
    pub ttft_slo: Option<f64>,
    /// Default TPOT objective, seconds (requests may bring their own `slo.tpot_ms`).
    pub tpot_slo: Option<f64>,
    /// Answer 429 at once when no replica is predicted to meet a request's TTFT.
    pub reject_unattainable: bool,
    /// Replicas tried for one request before giving up.
    pub max_attempts: usize,
    /// First wait between attempts (doubling).
    pub retry_backoff: Duration,
    /// Longest wait for a connection to a replica.
    pub connect_timeout: Duration,
    /// Longest wait for a replica to start answering a generation request (a stream's first
    /// event; a whole answer otherwise) before it counts as failed and another is tried.
    pub answer_timeout: Duration,
    /// How often replicas are checked.
    pub health_interval: Duration,
    /// How often the decoding load is checked for a migration (with
    /// `router.rebalance_slack` or `router.priority_migration`; an interactive request
    /// routed also wakes the check with priority migration on).
    pub rebalance_interval: Duration,
    /// Who may call the API.
    pub auth: AuthSettings,
    /// The key the gateway presents to replicas (its probes, and in place of the caller's).
    pub replica_api_key: Option<String>,
    /// Largest request body accepted, bytes.
    pub max_request_bytes: usize,
}

/// Everything the handlers and background tasks share.
pub struct Gateway {
    pub(crate) cfg: GatewayConfig,
    core: Mutex<RouterCore>,
    /// What each member advertised (its URL included), by id.
    replicas: Mutex<HashMap<String, ReplicaInfo>>,
    pub(crate) client: reqwest::Client,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) events: crate::events::Subscriptions,
    /// Wakes the migration loop before its next tick (an interactive request was routed).
    pub(crate) migration_due: tokio::sync::Notify,
    started: Instant,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("cfg", &self.cfg).finish()
    }
}

impl Gateway {
    /// A gateway with no replica yet.
    pub fn new(cfg: GatewayConfig) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .build()?;
        Ok(Arc::new(Self {
            core: Mutex::new(RouterCore::new(cfg.router.clone())),
            cfg,
            replicas: Mutex::new(HashMap::new()),
            client,
            metrics: GatewayMetrics::new(),
            events: crate::events::Subscriptions::default(),
            migration_due: tokio::sync::Notify::new(),
            started: Instant::now(),
        }))
    }

    /// `Authorization` for requests to replicas, when the gateway has a key for them.
    pub(crate) fn replica_authorization(&self) -> Option<axum::http::HeaderValue> {
        let key = self.cfg.replica_api_key.as_deref()?;
        let mut value = axum::http::HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// A request of the gateway's own to a replica (a probe, a migration), with the key it
    /// presents to replicas.
    pub(crate) fn to_replica(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.replica_authorization() {
            Some(auth) => request.header(reqwest::header::AUTHORIZATION, auth),
            None => request,
        }
    }

    /// Seconds since the gateway started: the router core's clock.
    pub(crate) fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The router core (held only for a routing decision or an update, never across I/O).
    pub(crate) fn core(&self) -> MutexGuard<'_, RouterCore> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The replica's address, if it is still a member.
    pub(crate) fn url(&self, id: &str) -> Option<String> {
        self.lock_replicas().get(id).map(|info| info.url.clone())
    }

    /// Members, by id.
    pub(crate) fn members(&self) -> Vec<(String, ReplicaInfo)> {
        let mut v: Vec<_> = self
            .lock_replicas()
            .iter()
            .map(|(id, info)| (id.clone(), info.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn lock_replicas(&self) -> MutexGuard<'_, HashMap<String, ReplicaInfo>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a replica or takes in what it now advertises (and follows its KV events).
    pub(crate) fn upsert(self: &Arc<Self>, id: &str, info: ReplicaInfo) {
        let spec = ReplicaSpec {
            block_size: info.block_size,
            hash_salt: info.hash_salt,
            kv_blocks: info.kv_blocks,
            chunk_tokens: info.max_batched_tokens.max(1),
            latency: info.latency.map_or_else(
                || self.cfg.default_latency.clone(),
                LatencyModel::from_coefficients,
            ),
            publishes_events: info.kv_events.is_some(),
            role: info.role.parse().unwrap_or_else(|e| {
                tracing::warn!(replica = id, "{e}: taken as `both`");
                Role::Both
            }),
            kv_transfer_bytes_per_token: info.kv_transfer_bytes_per_token.unwrap_or(0),
        };
        let changed = self
            .lock_replicas()
            .insert(id.to_owned(), info.clone())
            .is_none_or(|old| old != info);
        if changed {
            tracing::info!(replica = id, url = info.url, "replica joined or changed");
            self.core().upsert(id, spec);
            self.events.follow(self, id, info.kv_events.as_ref());
        }
    }

    /// Removes a replica (its requests in flight finish or fail over on their own).
    pub(crate) fn remove(&self, id: &str) {
        if self.lock_replicas().remove(id).is_some() {
            tracing::info!(replica = id, "replica left");
            self.core().remove(id);
            self.events.stop(id);
        }
    }

    /// Whether at least one member's circuit is closed.
    pub(crate) fn any_available(&self) -> bool {
        let now = self.now();
        let core = self.core();
        let ids: Vec<String> = core.replica_ids().map(str::to_owned).collect();
        ids.iter()
            .any(|id| core.load(id, now).is_some_and(|l| l.available))
    }
}
