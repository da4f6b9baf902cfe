//! Which replicas the gateway routes to, and whether they answer.
//!
//! Two sources: a static `--replica URL` list (each URL joins once it answers
//! `GET /internal/v1/replica`), or etcd (`--etcd`), where replicas register their
//! [`ReplicaInfo`] under a lease and vanish when they die. Either way every member is probed
//! each `health_interval`: a probe that fails counts against its circuit breaker (so a dead
//! replica stops getting requests within a few probes even before its lease ends), one that
//! answers refreshes what it advertises.

use std::sync::Arc;

use brisk_server::ReplicaInfo;
use futures_util::future::join_all;
use tokio::task::JoinHandle;

use crate::state::Gateway;

/// Where replicas come from.
#[derive(Clone, Debug)]
pub enum Discovery {
    /// These URLs.
    Static(Vec<String>),
    /// Keys under `prefix` in the etcd cluster at `endpoints`.
    Etcd {
        /// `http://host:port` of etcd members.
        endpoints: Vec<String>,
        /// The key prefix replicas register under.
        prefix: String,
    },
}

/// The background tasks that keep membership current; stopped when dropped.
#[derive(Debug)]
pub struct Membership {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Membership {
    /// Starts following `discovery` (inside a tokio runtime).
    pub fn start(gateway: &Arc<Gateway>, discovery: Discovery) -> Self {
        let statics = match &discovery {
            Discovery::Static(urls) => urls.clone(),
            Discovery::Etcd { .. } => Vec::new(),
        };
        let mut tasks = vec![tokio::spawn(health_loop(Arc::clone(gateway), statics))];
        let router = &gateway.cfg.router;
        if router.rebalance_slack.is_some() || router.priority_migration {
            tasks.push(tokio::spawn(crate::rebalance::rebalance_loop(Arc::clone(
                gateway,
            ))));
        }
        if let Discovery::Etcd { endpoints, prefix } = discovery {
            tasks.push(tokio::spawn(crate::membership::etcd::follow(
                Arc::clone(gateway),
                endpoints,
                prefix,
            )));
        }
        Self { tasks }
    }
}

/// Asks a replica to describe itself.
async fn probe(gateway: &Gateway, url: &str) -> Result<ReplicaInfo, String> {
    let request = gateway.to_replica(
        gateway
            .client
            .get(format!("{url}/internal/v1/replica"))
            .timeout(gateway.cfg.connect_timeout * 2),
    );
    let response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    response
        .json::<ReplicaInfo>()
        .await
        .map_err(|e| format!("sent an invalid description: {e}"))
}

async fn health_loop(gateway: Arc<Gateway>, statics: Vec<String>) {
    let mut interval = tokio::time::interval(gateway.cfg.health_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let members = gateway.members();
        let mut targets: Vec<(String, String, bool)> = members
            .iter()
            .map(|(id, info)| (id.clone(), info.url.clone(), true))
            .collect();
        for url in &statics {
            if !members.iter().any(|(id, _)| id == url) {
                targets.push((url.clone(), url.clone(), false));
            }
        }
        let probes = targets.iter().map(|(_, url, _)| probe(&gateway, url));
        let results = join_all(probes).await;
        for ((id, url, member), result) in targets.into_iter().zip(results) {
            match result {
                Ok(mut info) => {
                    if statics.contains(&id) {
                        // The listed URL is how this gateway reaches it.
                        info.url = url;
                    }
                    gateway.upsert(&id, info);
                }
                Err(e) if member => {
                    let now = gateway.now();
                    if gateway.core().failure(&id, now) {
                        tracing::warn!(replica = id, "health check failed ({e}): circuit open");
                    }
                }
                Err(e) => tracing::debug!(replica = id, "not joining yet: {e}"),
            }
        }
    }
}

mod etcd;
