//! What stands in front of the simulated replicas: nothing for one replica, the router core
//! for several (see [`crate::fleet`]).

use std::collections::{HashMap, VecDeque};

use brisk_kv::KvEvent;
use brisk_router::{
    IndexEvent, Migration, Prompt, Refusal, ReplicaSpec, RequestKey, RouteRequest, RouterConfig,
    RouterCore,
};
use brisk_scheduler::{LatencyModel, SchedulerConfig};

use crate::fleet::FleetSettings;
use crate::sim::SimRequest;

/// Where requests go.
pub(crate) enum Front {
    /// The only replica.
    Direct,
    /// Several replicas, behind the router.
    Routed(Box<Router>),
}

impl Front {
    pub(crate) fn new(
        fleet: &FleetSettings,
        scheduler: &SchedulerConfig,
        model: &LatencyModel,
        requests: usize,
    ) -> Self {
        if fleet.replicas <= 1 {
            return Self::Direct;
        }
        Self::Routed(Box::new(Router::new(fleet, scheduler, model, requests)))
    }

    /// Whether replicas should record KV events.
    pub(crate) fn reads_events(&self) -> bool {
        matches!(self, Self::Routed(_))
    }

    /// Where request `i` goes, or the error its client gets.
    pub(crate) fn route(&mut self, i: usize, r: &SimRequest, now: f64) -> Result<Route, String> {
        match self {
            Self::Direct => Ok(Route {
                replica: 0,
                decode_on: None,
            }),
            Self::Routed(router) => router.route(i, r, now),
        }
    }

    /// Request `i` produced its first token.
    pub(crate) fn first_token(&mut self, i: usize) {
        if let Self::Routed(router) = self {
            if let Some(key) = router.keys[i] {
                router.core.first_token(key);
            }
        }
    }

    /// Request `i` ended; `ok` unless its replica failed it.
    pub(crate) fn finished(&mut self, i: usize, ok: bool, now: f64) {
        if let Self::Routed(router) = self {
            if let Some(key) = router.keys[i].take() {
                router.core.finished(key, ok, now);
            }
        }
    }

    /// Replica `replica` made `events` in a step that ended at `now`.
    pub(crate) fn events(&mut self, replica: usize, events: Vec<KvEvent>, now: f64) {
        if let Self::Routed(router) = self {
            if !events.is_empty() {
                let events = events.into_iter().map(index_event).collect();
                router
                    .pending
                    .push_back((now + router.event_delay, replica, events));
            }
        }
    }

    /// When the next KV events reach the router.
    pub(crate) fn next_delivery(&self) -> Option<f64> {
        match self {
            Self::Direct => None,
            Self::Routed(router) => router.pending.front().map(|(at, _, _)| *at),
        }
    }

    /// Hands the router the KV events due by `now`.
    pub(crate) fn deliver(&mut self, now: f64) {
        if let Self::Routed(router) = self {
            // Steps end in time order and the delay is fixed, so deliveries are too.
            while router.pending.front().is_some_and(|(at, _, _)| *at <= now) {
                let (_, replica, events) = router.pending.pop_front().expect("just seen");
                router.core.apply_events(&router.ids[replica], &events);
            }
        }
    }

    /// The migration due at `now`, with its source and destination replicas.
    pub(crate) fn migration(&self, now: f64) -> Option<(Migration, usize, usize)> {
        let Self::Routed(router) = self else {
            return None;
        };
        let plan = router.core.migration(now)?;
        let (from, to) = (router.index[&plan.from], router.index[&plan.to]);
        Some((plan, from, to))
    }

    /// `plan`'s move was made.
    pub(crate) fn migrated(&mut self, plan: &Migration) {
        if let Self::Routed(router) = self {
            router.core.migrated(plan);
        }
    }

    /// Requests the router refused.
    pub(crate) fn refused(&self) -> usize {
        match self {
            Self::Direct => 0,
            Self::Routed(router) => router.refused,
        }
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// The replica that computes its prompt.
    pub(crate) replica: usize,
    /// The replica it is handed to after its first token (a prefill replica's request).
    pub(crate) decode_on: Option<usize>,
}

/// The router core over replicas named by their index.
pub(crate) struct Router {
    core: RouterCore,
    ids: Vec<String>,
    index: HashMap<String, usize>,
    /// Each request's key while the router tracks it.
    keys: Vec<Option<RequestKey>>,
    reject_unattainable: bool,
    event_delay: f64,
    /// KV events on their way: (delivery time, replica, events), in time order.
    pending: VecDeque<(f64, usize, Vec<IndexEvent>)>,
    refused: usize,
}

impl Router {
    fn new(
        fleet: &FleetSettings,
        scheduler: &SchedulerConfig,
        model: &LatencyModel,
        requests: usize,
    ) -> Self {
        let mut core = RouterCore::new(RouterConfig {
            policy: fleet.policy,
            affinity_slack: fleet.affinity_slack,
            affinity_ratio: fleet.affinity_ratio,
            rebalance_slack: fleet.migration.rebalance_slack,
            priority_migration: fleet.migration.priority,
            priority_placement: fleet.priority_placement,
            price_interference: fleet.price_interference,
            kv_transfer: fleet.transfer.link,
            ..RouterConfig::default()
        });
        let spec = |role| ReplicaSpec {
            block_size: scheduler.block_size,
            hash_salt: scheduler.cache_salt,
            kv_blocks: scheduler.num_blocks,
            chunk_tokens: scheduler.max_num_batched_tokens,
            latency: model.clone(),
            publishes_events: true,
            role,
            kv_transfer_bytes_per_token: fleet.transfer.bytes_per_token.round() as usize,
        };
        // Zero-padded, so that the router's order (by id) is the replicas' order.
        let width = (fleet.replicas - 1).to_string().len();
        let ids: Vec<String> = (0..fleet.replicas)
            .map(|i| format!("replica-{i:0width$}"))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            core.upsert(id, spec(fleet.role(i)));
        }
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Self {
            core,
            ids,
            index,
            keys: vec![None; requests],
            reject_unattainable: fleet.reject_unattainable,
            event_delay: fleet.event_delay,
            pending: VecDeque::new(),
            refused: 0,
        }
    }

    fn route(&mut self, i: usize, r: &SimRequest, now: f64) -> Result<Route, String> {
        let request = RouteRequest {
            prompt: Prompt::Tokens(&r.prompt),
            ttft_slo: r.slo.map(|s| s.ttft).filter(|t| t.is_finite()),
            tpot_slo: r.slo.map(|s| s.tpot).filter(|t| t.is_finite()),
            reject_unattainable: self.reject_unattainable,
            priority: r.priority,
            exclude: &[],
        };
        match self.core.route(&request, now) {
            Ok(choice) => {
                self.keys[i] = Some(choice.key);
                Ok(Route {
                    replica: self.index[&choice.replica],
                    decode_on: choice.decode_on.map(|d| self.index[&d]),
                })
            }
            Err(refusal) => {
                self.refused += 1;
                Err(refusal_message(&refusal))
            }
        }
    }
}

/// What `brisk route` answers for a refusal.
fn refusal_message(refusal: &Refusal) -> String {
    match refusal {
        Refusal::NoReplica => "HTTP 503: no replica is available".into(),
        Refusal::Unattainable { best_ttft, slo } => format!(
            "HTTP 429: no replica can meet the time-to-first-token objective of {:.0} ms (the best predicts {:.0} ms)",
            slo * 1000.0,
            best_ttft * 1000.0
        ),
    }
}

/// A KV event in the router index's terms (as the gateway reads them off the wire).
fn index_event(event: KvEvent) -> IndexEvent {
    let raw = |hashes: Vec<brisk_kv::BlockHash>| hashes.into_iter().map(|h| h.0).collect();
    match event {
        KvEvent::Stored { hashes, .. } => IndexEvent::Stored(raw(hashes)),
        KvEvent::Removed { hashes } => IndexEvent::Removed(raw(hashes)),
        KvEvent::AllCleared => IndexEvent::Cleared,
    }
}
