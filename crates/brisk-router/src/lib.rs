//! The synchronous router core of brisk: which replica serves a request.
//!
//! Routers in front of LLM replicas trade two things: send a request where its prompt's
//! prefix is already cached (SGLang's `cache_aware`, Dynamo's KV router, llm-d's prefix
//! scorer), and do not pile everything onto one hot replica. brisk's router weighs both in
//! the one unit the client cares about: the **predicted time to first token** on each replica
//! — the prompt work queued ahead of the request plus its own uncached prompt, priced by that
//! replica's latency model (the same [`LatencyModel`] its scheduler and `brisk sim` use).
//!
//! [`RouterCore`] is a pure state machine like the scheduler core: no locks, no async, no
//! clock reads (`now` is an argument, in seconds). The HTTP gateway and the simulator drive
//! the same core:
//!
//! - membership: [`RouterCore::upsert`] / [`RouterCore::remove`] as replicas come and go;
//! - what each replica caches: [`RouterCore::apply_events`] from its KV events (exact), plus
//!   entries added speculatively at routing time so that a burst of same-prefix requests
//!   follows the first before its events arrive ([`index`]). Replicas that publish no events
//!   are tracked from the router's own decisions alone (approximate), and prompts the router
//!   could not tokenize are matched by their text ([`Prompt::Text`]);
//! - load: [`RouterCore::route`] records each request's uncached prompt as queued work until
//!   [`RouterCore::first_token`], and its decode until [`RouterCore::finished`];
//! - health: failures open a per-replica circuit breaker ([`health`]).
//!
//! [`LatencyModel`]: brisk_scheduler::LatencyModel
#![deny(missing_docs)]

mod core;
pub mod health;
pub mod index;

pub use crate::core::{
    Choice, Migration, Policy, Prompt, Refusal, ReplicaLoad, ReplicaSpec, RequestKey, RouteRequest,
    RouterConfig, RouterCore, TransferCost,
};
pub use crate::index::IndexEvent;
