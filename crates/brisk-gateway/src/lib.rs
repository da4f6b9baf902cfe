//! `brisk route`: the OpenAI API in front of a fleet of brisk replicas.
//!
//! Clients talk to the gateway exactly as to a replica (same routes, bodies, streams, errors,
//! API key). For each generation request the gateway
//!
//! 1. asks a replica's render route for the prompt's token ids (the replicas own the chat
//!    template and every validation: a bad request gets the replica's own 400);
//! 2. asks the router core ([`brisk_router::RouterCore`]) which replica would give the
//!    earliest first token — its cached prefix and queued prompt work priced by its latency
//!    model — refusing with 429 when the request asked for rejection and none can make its
//!    objective;
//! 3. forwards the body there and streams the answer back, retrying elsewhere with backoff
//!    when the replica is unreachable, failing, or busy (429/503) before it answered.
//!
//! Membership (`membership.rs`) comes from a static `--replica` list or from etcd; each
//! replica's self-description (`GET /internal/v1/replica`) gives its block size, hash salt,
//! latency model and KV-event endpoints, whose events (`events.rs`) keep the router core's
//! per-replica block index exact. Health checks feed each replica's circuit breaker.

mod events;
mod failover;
mod membership;
mod metrics;
mod proxy;
mod rebalance;
mod relay;
pub use proxy::app;
mod state;

pub use membership::{Discovery, Membership};
pub use state::{Gateway, GatewayConfig};

/// Where replicas register in etcd unless told otherwise.
pub const DEFAULT_ETCD_PREFIX: &str = "brisk/replicas/";
