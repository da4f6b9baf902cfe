//! The crate's one error type. Every variant that talks to etcd names the endpoints and the
//! operation, so `serve --etcd http://wrong:2379` says what it could not reach and why.

use std::time::Duration;

/// Why talking to etcd, or understanding how to reach it, failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// An `--etcd` entry is not something we can connect to.
    #[error("invalid etcd endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The entry as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// etcd answered with an error, or the connection to it failed.
    #[error("etcd at {endpoints}: {op} failed: {source}")]
    Etcd {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The operation that failed (`lease grant`, `put`, `watch`, ...).
        op: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer in time: it is down, unreachable, or has no leader.
    #[error("etcd at {endpoints}: {op} got no answer within {timeout:?} (is etcd running there?)")]
    Timeout {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The operation that timed out.
        op: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// The lease behind a registration no longer exists (expired, or etcd lost its data).
    #[error("etcd at {endpoints}: lease {lease:x} is gone")]
    LeaseGone {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The lease id.
        lease: i64,
    },
    /// etcd closed or cancelled a stream, or answered in a way we cannot use.
    #[error("etcd at {endpoints}: {op}: {what}")]
    Unexpected {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The operation (`lease keep-alive`, `watch`, ...).
        op: &'static str,
        /// What happened.
        what: String,
    },
}
