//! The msgpack payload of one published batch, as vLLM's consumers decode it.
//!
//! An `EventBatch` is an array `[ts, [events…], data_parallel_rank]` (vLLM's `array_like`
//! struct); each event is a map tagged by its class name under `"type"` (msgspec's tagged
//! structs), with exactly vLLM's keys — vllm-router 0.1.17 refuses unknown keys and missing
//! ones:
//!
//! - `{"type": "BlockStored", "block_hashes", "parent_block_hash", "token_ids",
//!   "block_size", "lora_id", "medium", "lora_name"}`
//! - `{"type": "BlockRemoved", "block_hashes", "medium"}`
//! - `{"type": "AllBlocksCleared"}`
//!
//! Hashes are unsigned 64-bit integers (brisk's chained block hashes); consumers treat them
//! as opaque names and match requests on `token_ids`. `medium` is `"GPU"`: vLLM's name for
//! the cache that attention reads directly (its `"CPU"` means copies offloaded off the
//! device, to be loaded back first), which brisk's pool is.
//!
//! [`decode`] is the other direction, for brisk's router: it reads brisk's batches and the
//! shapes vLLM's releases have sent (see its module for what it accepts).

mod decode;
mod msgpack;

pub use decode::{decode, DecodeError, DecodedBatch, WireEvent};

use brisk_kv::{KvEvent, KvEventBatch};
use serde::ser::{SerializeMap, SerializeTuple};
use serde::{Serialize, Serializer};

/// vLLM's name for the tier attention reads from.
pub const MEDIUM: &str = "GPU";

/// Most events per published batch (vllm-router refuses larger ones); longer step batches
/// are split.
pub const MAX_EVENTS: usize = 4096;

/// Encodes `batch` (events of one step, at most [`MAX_EVENTS`]) for a pool of `block_size`
/// token blocks, data-parallel rank 0.
pub fn encode(batch: &KvEventBatch, block_size: usize) -> Vec<u8> {
    debug_assert!(batch.events.len() <= MAX_EVENTS);
    let wire = Batch { batch, block_size };
    rmp_serde::to_vec(&wire).expect("msgpack encoding into memory does not fail")
}

struct Batch<'a> {
    batch: &'a KvEventBatch,
    block_size: usize,
}

impl Serialize for Batch<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.batch.ts)?;
        let events: Vec<Event<'_>> = self
            .batch
            .events
            .iter()
            .map(|event| Event {
                event,
                block_size: self.block_size,
            })
            .collect();
        t.serialize_element(&events)?;
        t.serialize_element(&0u32)?;
        t.end()
    }
}

struct Event<'a> {
    event: &'a KvEvent,
    block_size: usize,
}

impl Serialize for Event<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hashes = |h: &[brisk_kv::BlockHash]| h.iter().map(|h| h.0).collect::<Vec<u64>>();
        match self.event {
            KvEvent::Stored {
                hashes: stored,
                parent,
                tokens,
            } => {
                let mut m = s.serialize_map(Some(8))?;
                m.serialize_entry("type", "BlockStored")?;
                m.serialize_entry("block_hashes", &hashes(stored))?;
                m.serialize_entry("parent_block_hash", &parent.map(|p| p.0))?;
                m.serialize_entry("token_ids", tokens)?;
                m.serialize_entry("block_size", &self.block_size)?;
                m.serialize_entry("lora_id", &None::<u32>)?;
                m.serialize_entry("medium", MEDIUM)?;
                m.serialize_entry("lora_name", &None::<String>)?;
                m.end()
            }
            KvEvent::Removed { hashes: removed } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("type", "BlockRemoved")?;
                m.serialize_entry("block_hashes", &hashes(removed))?;
                m.serialize_entry("medium", MEDIUM)?;
                m.end()
            }
            KvEvent::AllCleared => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("type", "AllBlocksCleared")?;
                m.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brisk_kv::BlockHash;

    /// The exact bytes of a small batch, written out by hand from the msgpack spec: the
    /// format is the contract with other people's routers.
    #[test]
    fn a_batch_encodes_to_the_bytes_vllm_consumers_read() {
        let batch = KvEventBatch {
            ts: 1.5,
            events: vec![
                KvEvent::AllCleared,
                KvEvent::Stored {
                    hashes: vec![BlockHash(u64::MAX)],
                    parent: None,
                    tokens: vec![1, 300],
                },
                KvEvent::Removed {
                    hashes: vec![BlockHash(7)],
                },
            ],
        };
        let bytes = encode(&batch, 2);
        let mut want = vec![0x93, 0xcb];
        want.extend(1.5f64.to_be_bytes());
        want.push(0x93); // three events
        want.extend([0x81, 0xa4]);
        want.extend(b"type");
        want.push(0xb0);
        want.extend(b"AllBlocksCleared");
        want.push(0x88);
        for (key, value) in [
            ("type", &[&[0xab][..], b"BlockStored"].concat()),
            (
                "block_hashes",
                &[0x91, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff].to_vec(),
            ),
            ("parent_block_hash", &vec![0xc0]),
            ("token_ids", &vec![0x92, 0x01, 0xcd, 0x01, 0x2c]),
            ("block_size", &vec![0x02]),
            ("lora_id", &vec![0xc0]),
            ("medium", &[&[0xa3][..], b"GPU"].concat()),
            ("lora_name", &vec![0xc0]),
        ] {
            want.push(0xa0 | u8::try_from(key.len()).unwrap());
            want.extend(key.as_bytes());
            want.extend(value);
        }
        want.push(0x83);
        for (key, value) in [
            ("type", &[&[0xac][..], b"BlockRemoved"].concat()),
            ("block_hashes", &vec![0x91, 0x07]),
            ("medium", &[&[0xa3][..], b"GPU"].concat()),
        ] {
            want.push(0xa0 | u8::try_from(key.len()).unwrap());
            want.extend(key.as_bytes());
            want.extend(value);
        }
        want.push(0x00); // data-parallel rank 0
        assert_eq!(bytes, want);
    }
}
