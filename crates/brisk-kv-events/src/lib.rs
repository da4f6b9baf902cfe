//! KV cache events in vLLM's wire format, both ways: a brisk replica publishes which blocks
//! it holds, so that routers no one here wrote can see them, and brisk's router subscribes to
//! replicas (brisk's or vLLM's) to keep its per-replica index of cached blocks.
//!
//! vLLM's `ZmqEventPublisher` is the de facto protocol: vllm-router's `kv_aware` policy,
//! Dynamo's KV indexer and llm-d's precise prefix scorer subscribe to it. brisk speaks it
//! byte for byte:
//!
//! - `--kv-events-config` takes vLLM's JSON ([`KvEventsConfig`]);
//! - a PUB socket sends one multipart message per engine step that changed the cache:
//!   topic, an 8-byte big-endian sequence number, and a msgpack `EventBatch`
//!   `[ts, [events], data_parallel_rank]` whose events are maps tagged by `"type"`
//!   (`BlockStored`, `BlockRemoved`, `AllBlocksCleared`, with vLLM's keys), as msgspec
//!   encodes vLLM's tagged structs ([`wire`]);
//! - an optional ROUTER socket replays the last `buffer_steps` batches from a sequence
//!   number a subscriber asks for (8 bytes, big-endian), ending with sequence −1 and an
//!   empty payload ([`publisher`]).
//!
//! Publishing: the engine records the events (`brisk_kv::KvEvent`) and hands each step's
//! batch over a bounded channel; the publisher runs on its own thread with its own small
//! runtime, so a slow subscriber never reaches the engine (PUB drops for it, as ZMQ does).
//!
//! Subscribing: [`wire::decode`] reads a batch in any of the shapes vLLM's releases have
//! sent (tagged maps or arrays, integer or bytes hashes, fields added or absent), failing
//! cleanly on garbage; [`subscribe`] runs a task that delivers one publisher's batches in
//! sequence order, fetching its history and any gap from the replay socket, and says when
//! batches were lost or the publisher restarted, so that the router knows when its mirror
//! of a replica's cache must be rebuilt ([`subscriber`]).

#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
mod config;
pub mod publisher;
pub mod subscriber;
pub mod wire;

pub use config::{ConfigError, KvEventsConfig, PublisherSettings};
pub use publisher::{start, PublishError, Publisher};
pub use subscriber::{
    subscribe, subscribe_with, SubscriberConfig, SubscriberEvent, SubscriberHandle,
};
