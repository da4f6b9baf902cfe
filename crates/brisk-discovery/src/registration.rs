//! A replica's presence in etcd: `key = value` attached to a lease that a background task
//! keeps alive, so the key vanishes on its own when the replica dies (the pattern of etcd's
//! own `concurrency.Session`).
//!
//! When keep-alive fails or the lease is gone (etcd restarted with a fresh data dir, or was
//! unreachable for longer than the TTL), the task grants a new lease and puts the key again,
//! retrying with capped backoff. Putting the key on the new lease detaches it from the old
//! one, so revoking the old lease afterwards cannot delete it: watchers see a `Put`, never a
//! `Delete`, when a registration moves to a new lease.

use std::time::Duration;

use etcd_client::PutOptions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::endpoint::{Connection, Endpoints};
use crate::DiscoveryError;

/// Keeps `key = value` in etcd under a lease of `ttl` for as long as it lives.
///
/// [`stop`](Self::stop) removes the key at once. Dropping it without `stop` (or the process
/// dying) only ends the keep-alive: the key disappears when the lease expires.
#[derive(Debug)]
pub struct Registration {
    key: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// Grants a lease, puts the key with it and keeps the lease alive in a background tokio
    /// task. The TTL is rounded up to whole seconds (etcd may raise very short ones to its
    /// minimum, about 2 s with default settings).
    ///
    /// Fails if an endpoint is malformed or etcd does not answer within a few seconds, so a
    /// server started with a wrong `--etcd` fails fast instead of running unregistered.
    pub async fn start(
        endpoints: &[String],
        key: String,
        value: String,
        ttl: Duration,
    ) -> Result<Self, DiscoveryError> {
        let registrar = Registrar {
            endpoints: Endpoints::new(endpoints)?,
            key: key.clone(),
            value,
            ttl: whole_seconds(ttl),
        };
        let lease = registrar.register().await?;
        info!(
            key,
            lease = lease.id,
            endpoints = registrar.endpoints.label(),
            "registered in etcd"
        );
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(registrar.run(lease, stopped));
        Ok(Self {
            key,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The key this registration keeps.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Revokes the lease (the key disappears at once) and stops the task. If etcd cannot be
    /// reached just now, gives up after a few seconds and the key expires with its lease.
    pub async fn stop(mut self) {
        let (Some(stop), Some(task)) = (self.stop.take(), self.task.take()) else {
            return;
        };
        // The task is gone only if it panicked; awaiting it below reports that.
        let _ = stop.send(());
        if let Err(e) = task.await {
            warn!(key = self.key, error = %e, "etcd registration task failed");
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Rounds up to whole seconds, at least one: etcd leases count in seconds.
fn whole_seconds(ttl: Duration) -> Duration {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// What the background task needs to register (again).
struct Registrar {
    endpoints: Endpoints,
    key: String,
    value: String,
    ttl: Duration,
}

/// A granted lease with the key on it, and the connection that got it.
struct Lease {
    conn: Connection,
    id: i64,
}

impl Registrar {
    /// Connects, grants a lease and puts the key on it.
    async fn register(&self) -> Result<Lease, DiscoveryError> {
        let conn = self.endpoints.connect().await?;
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let mut leases = conn.client.lease_client();
        let id = conn
            .call("lease grant", leases.grant(ttl, None))
            .await?
            .id();
        let mut kv = conn.client.kv_client();
        let put = kv.put(
            self.key.clone(),
            self.value.clone(),
            Some(PutOptions::new().with_lease(id)),
        );
        conn.call("put", put).await?;
        Ok(Lease { conn, id })
    }

    /// Keeps `lease` alive, registering again whenever it is lost, until told to stop.
    /// A closed `stop` (the `Registration` dropped) ends the task without revoking.
    async fn run(self, mut lease: Lease, mut stop: oneshot::Receiver<()>) {
        let mut backoff = Backoff::new();
        loop {
            let lost = tokio::select! {
                signal = &mut stop => {
                    if signal.is_ok() {
                        if let Err(e) = revoke(&lease.conn, lease.id).await {
                            warn!(key = self.key, error = %e, "etcd lease not revoked; the key stays until it expires");
                        }
                    }
                    return;
                }
                lost = self.keep_alive(&lease) => lost,
            };
            warn!(key = self.key, error = %lost, "etcd registration lost; registering again");
            let Some(fresh) = self.register_again(&mut stop, &mut backoff).await else {
                return;
            };
            // The key is on the new lease now: revoking the old one only stops it from
            // lingering until its TTL. After a data loss it no longer exists: that is fine.
            if let Err(e) = revoke(&fresh.conn, lease.id).await {
                debug!(key = self.key, error = %e, "old etcd lease not revoked");
            }
            info!(key = self.key, lease = fresh.id, "re-registered in etcd");
            lease = fresh;
            backoff.reset();
        }
    }

    /// Attempts to register with backoff until it works; `None` if told to stop meanwhile.
    async fn register_again(
        &self,
        stop: &mut oneshot::Receiver<()>,
        backoff: &mut Backoff,
    ) -> Option<Lease> {
        loop {
            let attempt = tokio::select! {
                _ = &mut *stop => return None,
                attempt = self.register() => attempt,
            };
            match attempt {
                Ok(lease) => return Some(lease),
                Err(e) => debug!(key = self.key, error = %e, "etcd registration attempt failed"),
            }
            tokio::select! {
                _ = &mut *stop => return None,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Sends a keep-alive every third of the TTL; returns why it stopped working: the stream
    /// failed or closed, etcd says the lease is gone, or no answer came for a whole TTL.
    async fn keep_alive(&self, lease: &Lease) -> DiscoveryError {
        let conn = &lease.conn;
        let mut leases = conn.client.lease_client();
        let (mut keeper, mut answers) = match conn
            .call("lease keep-alive", leases.keep_alive(lease.id))
            .await
        {
            Ok(stream) => stream,
            Err(e) => return e,
        };
        let period = self.ttl / 3;
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut expires = Instant::now() + self.ttl;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Err(e) = keeper.keep_alive().await {
                        return conn.endpoints.error("lease keep-alive", e);
                    }
                }
                answer = answers.message() => match answer {
                    Ok(Some(answer)) if answer.ttl() > 0 => expires = Instant::now() + self.ttl,
                    Ok(Some(_)) => {
                        return DiscoveryError::LeaseGone {
                            endpoints: conn.endpoints.label().to_string(),
                            lease: lease.id,
                        };
                    }
                    Ok(None) => {
                        return conn.endpoints.unexpected("lease keep-alive", "stream closed by etcd");
                    }
                    Err(e) => return conn.endpoints.error("lease keep-alive", e),
                },
                () = tokio::time::sleep_until(expires) => {
                    return DiscoveryError::Timeout {
                        endpoints: conn.endpoints.label().to_string(),
                        op: "lease keep-alive",
                        timeout: self.ttl,
                    };
                }
            }
        }
    }
}

/// Revokes a lease, deleting the keys still on it.
async fn revoke(conn: &Connection, id: i64) -> Result<(), DiscoveryError> {
    let mut leases = conn.client.lease_client();
    conn.call("lease revoke", leases.revoke(id)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds_of_at_least_one() {
        assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            whole_seconds(Duration::from_millis(1500)),
            Duration::from_secs(2)
        );
        assert_eq!(
            whole_seconds(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }
}
