//! KV cache events in vLLM's wire format, so that routers no one here wrote can see which
//! blocks a brisk replica holds.
//!
//! vLLM's `ZmqEventPublisher` is the de facto protocol: vllm-router's `kv_aware` policy,
//! Dynamo's KV indexer and llm-d's precise prefix scorer subscribe to it. brisk speaks it
//! byte for byte:
//!
//! - `--kv-events-config` takes vLLM's JSON ([`KvEventsConfig`]);
//! - a PUB socket sends one multipart message per engine step that changed the cache:
//!   topic, an 8-byte big-endian sequence number, and a msgpack `EventBatch`
//!   `[ts, [events], data_parallel_rank]` whose events are tagged arrays
//!   (`["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id,
//!   medium, lora_name]`, `["BlockRemoved", block_hashes, medium]`, `["AllBlocksCleared"]`),
//!   as msgspec encodes vLLM's `array_like` tagged structs ([`wire`]);
//! - an optional ROUTER socket replays the last `buffer_steps` batches from a sequence
//!   number a subscriber asks for (8 bytes, big-endian), ending with sequence −1 and an
//!   empty payload ([`publisher`]).
//!
//! The engine records the events (`brisk_kv::KvEvent`) and hands each step's batch over a
//! bounded channel; the publisher runs on its own thread with its own small runtime, so a
//! slow subscriber never reaches the engine (PUB drops for it, as ZMQ does).

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
