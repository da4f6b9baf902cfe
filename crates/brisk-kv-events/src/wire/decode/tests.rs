use brisk_kv::{BlockHash, KvEvent, KvEventBatch};
use proptest::prelude::*;
use serde::Serialize;

use super::*;
use crate::wire::{encode, MEDIUM};

/// What `decode` must give for a batch brisk encoded.
fn expected(batch: &KvEventBatch, block_size: usize) -> DecodedBatch {
    let hashes = |h: &[BlockHash]| h.iter().map(|h| h.0).collect();
    let events = batch
        .events
        .iter()
        .map(|event| match event {
            KvEvent::Stored {
                hashes: stored,
                parent,
                tokens,
            } => WireEvent::Stored {
                hashes: hashes(stored),
                parent: parent.map(|p| p.0),
                token_ids: tokens.clone(),
                block_size,
                lora_id: None,
                lora_name: None,
                medium: Some(MEDIUM.into()),
            },
            KvEvent::Removed { hashes: removed } => WireEvent::Removed {
                hashes: hashes(removed),
                medium: Some(MEDIUM.into()),
            },
            KvEvent::AllCleared => WireEvent::AllCleared,
        })
        .collect();
    DecodedBatch {
        ts: batch.ts,
        events,
        rank: Some(0),
        skipped: 0,
    }
}

fn brisk_batch() -> KvEventBatch {
    KvEventBatch {
        ts: 1_700_000_000.25,
        events: vec![
            KvEvent::AllCleared,
            KvEvent::Stored {
                hashes: vec![BlockHash(u64::MAX), BlockHash(3)],
                parent: Some(BlockHash(1 << 40)),
                tokens: vec![0, 1, 70_000, u32::MAX],
            },
            KvEvent::Removed {
                hashes: vec![BlockHash(7)],
            },
        ],
    }
}

/// msgpack of one value, through serde.
fn val(v: impl Serialize) -> Vec<u8> {
    rmp_serde::to_vec(&v).unwrap()
}

/// A msgpack array of already encoded items (fewer than 16).
fn arr(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0x90 | u8::try_from(items.len()).unwrap()];
    items.iter().for_each(|i| out.extend(i));
    out
}

/// A msgpack map of already encoded values (fewer than 16 pairs).
fn map(pairs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0x80 | u8::try_from(pairs.len()).unwrap()];
    for (k, v) in pairs {
        out.extend(val(k));
        out.extend(v);
    }
    out
}

/// msgpack binary (serde would write a byte slice as an array).
fn bin(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc4, u8::try_from(bytes.len()).unwrap()];
    out.extend(bytes);
    out
}

#[test]
fn brisk_batches_decode_to_what_was_encoded() {
    let batch = brisk_batch();
    assert_eq!(decode(&encode(&batch, 2)).unwrap(), expected(&batch, 2));
}

#[test]
fn array_like_events_decode_like_tagged_maps() {
    let payload = arr(&[
        val(1.5),
        arr(&[
            arr(&[
                val("BlockStored"),
                val([1u64, 2]),
                val(None::<u64>),
                val([5u32, 6, 7, 8]),
                val(2),
                val(None::<u64>),
                val("GPU"),
                val(None::<String>),
            ]),
            // vLLM before `medium`: the fields stop after lora_id.
            arr(&[
                val("BlockStored"),
                val([3u64]),
                val(2u64),
                val([9u32, 10]),
                val(2),
                val(None::<u64>),
            ]),
            arr(&[val("BlockRemoved"), val([1u64]), val("CPU")]),
            arr(&[val("AllBlocksCleared")]),
        ]),
    ]);
    let stored =
        |hashes: Vec<u64>, parent, token_ids: Vec<u32>, medium: Option<&str>| WireEvent::Stored {
            hashes,
            parent,
            token_ids,
            block_size: 2,
            lora_id: None,
            lora_name: None,
            medium: medium.map(String::from),
        };
    assert_eq!(
        decode(&payload).unwrap(),
        DecodedBatch {
            ts: 1.5,
            events: vec![
                stored(vec![1, 2], None, vec![5, 6, 7, 8], Some("GPU")),
                stored(vec![3], Some(2), vec![9, 10], None),
                WireEvent::Removed {
                    hashes: vec![1],
                    medium: Some("CPU".into()),
                },
                WireEvent::AllCleared,
            ],
            rank: None,
            skipped: 0,
        }
    );
}

#[test]
fn newer_vllm_map_batches_with_bytes_hashes_and_extra_fields_decode() {
    let digest = [0xab; 32];
    let payload = map(&[
        (
            "events",
            arr(&[map(&[
                ("block_hashes", arr(&[bin(&digest)])),
                ("type", val("BlockStored")),
                ("parent_block_hash", bin(&[1, 2, 3])),
                ("token_ids", val([1u32, 2])),
                ("block_size", val(2)),
                ("lora_id", val(3u64)),
                ("medium", val("GPU")),
                ("lora_name", val("adapter")),
                ("extra_keys", arr(&[arr(&[val("salt"), val(1)])])),
                ("group_idx", val(0)),
            ])]),
        ),
        ("ts", val(2.0)),
        ("data_parallel_rank", val(3)),
    ]);
    let batch = decode(&payload).unwrap();
    assert_eq!(batch.ts, 2.0);
    assert_eq!(batch.rank, Some(3));
    assert_eq!(
        batch.events,
        vec![WireEvent::Stored {
            hashes: vec![fnv1a(&digest)],
            parent: Some(fnv1a(&[1, 2, 3])),
            token_ids: vec![1, 2],
            block_size: 2,
            lora_id: Some(3),
            lora_name: Some("adapter".into()),
            medium: Some("GPU".into()),
        }]
    );
}

#[test]
fn bytes_hashes_fold_with_the_published_fnv1a_constants() {
    // Test vectors of 64-bit FNV-1a.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn negative_integer_hashes_keep_their_bits() {
    let payload = arr(&[
        val(0.0),
        arr(&[arr(&[val("BlockRemoved"), val([-1i64, -2])])]),
    ]);
    assert_eq!(
        decode(&payload).unwrap().events,
        vec![WireEvent::Removed {
            hashes: vec![u64::MAX, u64::MAX - 1],
            medium: None,
        }]
    );
}

#[test]
fn unknown_event_types_are_skipped_and_counted() {
    let payload = arr(&[
        val(0.0),
        arr(&[
            arr(&[val("BlockMoved"), map(&[("x", arr(&[val(1)]))]), val("y")]),
            map(&[
                ("block_hashes", val("not hashes")),
                ("type", val("BlockPinned")),
            ]),
            arr(&[val(7), val(1)]),
            arr(&[val("AllBlocksCleared")]),
        ]),
        val(0),
    ]);
    let batch = decode(&payload).unwrap();
    assert_eq!(batch.events, vec![WireEvent::AllCleared]);
    assert_eq!(batch.skipped, 3);
}

#[test]
fn wrong_shapes_are_errors_that_say_where() {
    let event = |e: Vec<u8>| arr(&[val(0.0), arr(&[e])]);
    let cases = [
        (val("a string"), "found a string"),
        (arr(&[val(0.0)]), "events missing"),
        (event(map(&[("block_hashes", val([1u64]))])), "type missing"),
        (
            event(arr(&[val("BlockRemoved"), val(["x"])])),
            "expected an integer or bytes for block_hashes",
        ),
        (
            event(arr(&[
                val("BlockStored"),
                val([1u64]),
                val(None::<u64>),
                val([1u64 << 33]),
                val(1),
            ])),
            "token_ids out of range",
        ),
        (
            event(arr(&[val("BlockStored"), val([1u64]), val(None::<u64>)])),
            "block_size missing",
        ),
        (
            [encode(&brisk_batch(), 2), vec![0]].concat(),
            "1 bytes after",
        ),
    ];
    for (payload, want) in cases {
        let e = decode(&payload).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should say {want:?}");
    }
}

#[test]
fn a_huge_claimed_length_fails_without_allocating_it() {
    // An events array claiming 2³² − 1 entries, and one claiming 65535 with nothing behind.
    for events in [
        [0xdd, 0xff, 0xff, 0xff, 0xff].as_slice(),
        &[0xdc, 0xff, 0xff],
    ] {
        let payload = [&[0x92, 0x00][..], events].concat();
        assert!(matches!(decode(&payload), Err(DecodeError::Length { .. })));
    }
}

#[test]
fn every_truncation_of_a_batch_is_an_error() {
    let payload = encode(&brisk_batch(), 2);
    for len in 0..payload.len() {
        assert!(decode(&payload[..len]).is_err(), "prefix of {len} bytes");
    }
}

fn any_event() -> impl Strategy<Value = KvEvent> {
    let hashes = || prop::collection::vec(any::<u64>().prop_map(BlockHash), 0..4);
    prop_oneof![
        Just(KvEvent::AllCleared),
        hashes().prop_map(|hashes| KvEvent::Removed { hashes }),
        (
            hashes(),
            prop::option::of(any::<u64>().prop_map(BlockHash)),
            prop::collection::vec(any::<u32>(), 0..40),
        )
            .prop_map(|(hashes, parent, tokens)| KvEvent::Stored {
                hashes,
                parent,
                tokens,
            }),
    ]
}

proptest! {
    #[test]
    fn any_brisk_batch_round_trips(
        ts in any::<f64>().prop_filter("NaN is not equal to itself", |t| !t.is_nan()),
        events in prop::collection::vec(any_event(), 0..8),
        block_size in 1usize..64,
    ) {
        let batch = KvEventBatch { ts, events };
        prop_assert_eq!(decode(&encode(&batch, block_size)).unwrap(), expected(&batch, block_size));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn corrupted_batches_never_panic(
        events in prop::collection::vec(any_event(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut payload = encode(&KvEventBatch { ts: 1.0, events }, 4);
        for (at, byte) in flips {
            let i = at.index(payload.len());
            payload[i] = byte;
        }
        let len = cut.index(payload.len() + 1);
        let _ = decode(&payload[..len]);
    }
}
