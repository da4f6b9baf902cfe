//! Unit tests of the block manager; every test checks the invariants after each operation.

use super::*;
use brisk_types::TokenId;

fn pool(num_blocks: usize, block_size: usize) -> BlockManager {
    BlockManager::new(BlockManagerConfig {
        block_size,
        num_blocks,
        enable_prefix_caching: true,
        salt: 42,
    })
    .unwrap()
}

fn ok(bm: &BlockManager) {
    bm.check_invariants().unwrap();
}

/// Admits `seq` with its prompt fully allocated and computed; returns the cached token count.
fn admit_and_compute(bm: &mut BlockManager, seq: SeqId, prompt: &[TokenId]) -> usize {
    let m = bm.match_prefix(prompt);
    let hit = m.num_tokens();
    bm.allocate_new(seq, m, prompt.len()).unwrap();
    ok(bm);
    bm.commit_full_blocks(seq, prompt).unwrap();
    ok(bm);
    hit
}

fn toks(range: std::ops::Range<u32>) -> Vec<TokenId> {
    range.collect()
}

#[test]
fn shared_prefix_is_reused_across_requests() {
    let mut bm = pool(16, 4);
    let a: Vec<TokenId> = [toks(0..8), vec![100, 101]].concat();
    let b: Vec<TokenId> = [toks(0..8), vec![200, 201, 202]].concat();
    assert_eq!(admit_and_compute(&mut bm, 1, &a), 0);
    assert_eq!(bm.lookup_prefix(&b), 8);
    assert_eq!(admit_and_compute(&mut bm, 2, &b), 8);
    assert_eq!(bm.block_table(1)[..2], bm.block_table(2)[..2]);
    assert_ne!(bm.block_table(1)[2], bm.block_table(2)[2]);
    assert_eq!(bm.num_free_blocks(), 16 - 4);
    let s = bm.prefix_cache_stats();
    assert_eq!((s.queries, s.hits), (10 + 11, 8));
}

#[test]
fn a_match_leaves_at_least_one_token_to_compute() {
    let mut bm = pool(8, 4);
    let p = toks(0..8);
    admit_and_compute(&mut bm, 1, &p);
    // The same 8 tokens: both blocks are cached, but only the first may be reused.
    assert_eq!(bm.lookup_prefix(&p), 4);
    assert_eq!(bm.lookup_prefix(&toks(0..9)), 8);
    assert_eq!(bm.lookup_prefix(&toks(0..1)), 0);
    assert_eq!(bm.lookup_prefix(&[]), 0);
}

#[test]
fn lookup_has_no_side_effects() {
    let mut bm = pool(8, 4);
    admit_and_compute(&mut bm, 1, &toks(0..9));
    let before = bm.prefix_cache_stats();
    assert_eq!(bm.lookup_prefix(&toks(0..9)), 8);
    assert_eq!(bm.prefix_cache_stats(), before);
    assert_eq!(bm.num_free_blocks(), 5);
    ok(&bm);
}

#[test]
fn freed_cached_blocks_are_evicted_oldest_first_tail_before_head() {
    let mut bm = pool(4, 2);
    admit_and_compute(&mut bm, 1, &[1, 2, 3, 4]); // blocks a0, a1
    admit_and_compute(&mut bm, 2, &[5, 6, 7, 8]); // blocks b0, b1
    let (a, b) = (bm.block_table(1).to_vec(), bm.block_table(2).to_vec());
    bm.free(1);
    ok(&bm);
    bm.free(2);
    ok(&bm);
    assert_eq!(bm.num_cached_free_blocks(), 4);
    assert_eq!(bm.usage_ratio(), 0.0);
    // One fresh block: the oldest freed, and of that sequence its tail block.
    bm.allocate_new(3, bm.match_prefix(&[9]), 1).unwrap();
    ok(&bm);
    assert_eq!(bm.block_table(3), &[a[1]]);
    assert_eq!(
        bm.lookup_prefix(&[1, 2, 3, 4, 0]),
        2,
        "a's head survives its tail"
    );
    bm.allocate_slots(3, 6).unwrap();
    ok(&bm);
    assert_eq!(bm.block_table(3), &[a[1], a[0], b[1]]);
    assert_eq!(bm.lookup_prefix(&[1, 2, 3, 4, 0]), 0);
    assert_eq!(bm.lookup_prefix(&[5, 6, 7, 8, 0]), 2);
    assert_eq!(bm.num_cached_blocks(), 1);
}

#[test]
fn cached_free_block_is_revived_by_a_hit() {
    let mut bm = pool(4, 2);
    admit_and_compute(&mut bm, 1, &[1, 2, 3]);
    let head = bm.block_table(1)[0];
    bm.free(1);
    ok(&bm);
    assert_eq!(bm.num_free_blocks(), 4);
    assert_eq!(admit_and_compute(&mut bm, 2, &[1, 2, 9]), 2);
    assert_eq!(bm.block_table(2)[0], head);
    assert_eq!(
        bm.num_free_blocks(),
        2,
        "the revived block left the free list"
    );
    // Three more blocks are not available: the revived one is held again.
    assert_eq!(
        bm.allocate_slots(2, 2 * 5),
        Err(KvError::OutOfBlocks { needed: 3, free: 2 })
    );
    ok(&bm);
}

#[test]
fn uncached_blocks_are_reused_before_cached_ones() {
    let mut bm = pool(4, 2);
    admit_and_compute(&mut bm, 1, &[1, 2, 3]); // block 0 cached, block 1 partial
    let partial = bm.block_table(1)[1];
    bm.free(1);
    bm.allocate_new(2, bm.match_prefix(&[7]), 1).unwrap();
    ok(&bm);
    assert_eq!(bm.block_table(2), &[partial]);
    assert_eq!(bm.num_cached_blocks(), 1);
}

#[test]
fn shared_blocks_are_reference_counted() {
    let mut bm = pool(8, 2);
    let p = [1, 2, 3, 4, 5];
    admit_and_compute(&mut bm, 1, &p);
    admit_and_compute(&mut bm, 2, &p);
    admit_and_compute(&mut bm, 3, &p);
    assert_eq!(bm.num_free_blocks(), 8 - 3 - 2);
    bm.free(1);
    ok(&bm);
    bm.free(2);
    ok(&bm);
    assert_eq!(
        bm.num_free_blocks(),
        8 - 3,
        "seq 3 still holds its three blocks"
    );
    bm.free(3);
    ok(&bm);
    assert_eq!(bm.num_free_blocks(), 8);
}

#[test]
fn a_failed_allocation_changes_nothing() {
    let mut bm = pool(3, 2);
    admit_and_compute(&mut bm, 1, &[1, 2, 3]);
    let before = format!("{:?}", bm.block_table(1));
    assert!(matches!(
        bm.allocate_new(2, bm.match_prefix(&[5, 6, 7]), 3),
        Err(KvError::OutOfBlocks { .. })
    ));
    assert!(matches!(
        bm.allocate_slots(1, 7),
        Err(KvError::OutOfBlocks { .. })
    ));
    ok(&bm);
    assert_eq!(format!("{:?}", bm.block_table(1)), before);
    assert!(!bm.contains(2));
    assert_eq!(bm.prefix_cache_stats().queries, 3);
}

#[test]
fn a_stale_prefix_match_is_refused() {
    let mut bm = pool(2, 2);
    admit_and_compute(&mut bm, 1, &[1, 2, 3]);
    bm.free(1);
    let m = bm.match_prefix(&[1, 2, 3]);
    assert_eq!(m.num_tokens(), 2);
    bm.allocate_new(2, bm.match_prefix(&[9]), 4).unwrap(); // evicts the cached block
    bm.free(2);
    assert_eq!(bm.allocate_new(3, m, 3), Err(KvError::StalePrefixMatch));
    ok(&bm);
}

#[test]
fn disabled_prefix_caching_never_hits() {
    let mut bm = BlockManager::new(BlockManagerConfig {
        enable_prefix_caching: false,
        ..BlockManagerConfig::new(8)
    })
    .unwrap();
    let p = toks(0..40);
    admit_and_compute(&mut bm, 1, &p);
    assert_eq!(bm.lookup_prefix(&p), 0);
    bm.free(1);
    assert_eq!(bm.num_cached_blocks(), 0);
    assert_eq!(bm.prefix_cache_stats(), PrefixCacheStats::default());
    ok(&bm);
}

#[test]
fn equal_blocks_computed_side_by_side_are_cached_once() {
    let mut bm = pool(8, 2);
    for seq in [1, 2] {
        bm.allocate_new(seq, bm.match_prefix(&[1, 2, 3]), 3)
            .unwrap();
    }
    for seq in [1, 2] {
        bm.commit_full_blocks(seq, &[1, 2, 3]).unwrap();
        ok(&bm);
    }
    assert_eq!(bm.num_cached_blocks(), 1);
    // Seq 2's chain still continues correctly past its uncached duplicate.
    bm.allocate_slots(2, 5).unwrap();
    bm.commit_full_blocks(2, &[1, 2, 3, 4, 5]).unwrap();
    assert_eq!(bm.lookup_prefix(&[1, 2, 3, 4, 5]), 4);
    ok(&bm);
}

#[test]
fn fork_shares_full_blocks_only() {
    let mut bm = pool(8, 2);
    admit_and_compute(&mut bm, 1, &[1, 2, 3, 4, 5]);
    assert_eq!(bm.fork(1, 2, 5).unwrap(), 4);
    ok(&bm);
    assert_eq!(bm.block_table(2), &bm.block_table(1)[..2]);
    bm.allocate_slots(2, 5).unwrap();
    ok(&bm);
    assert_ne!(bm.block_table(2)[2], bm.block_table(1)[2]);
    assert_eq!(bm.fork(1, 2, 5), Err(KvError::SeqExists(2)));
    bm.free(1);
    bm.free(2);
    assert_eq!(bm.num_free_blocks(), 8);
    ok(&bm);
}

#[test]
fn salt_separates_models() {
    let mut bm = pool(8, 2);
    admit_and_compute(&mut bm, 1, &[1, 2, 3]);
    let other = BlockManager::new(BlockManagerConfig {
        salt: 7,
        ..bm.config().clone()
    })
    .unwrap();
    assert_eq!(
        hash::hash_blocks(&[1, 2], 2, 42),
        vec![hash::hash_block(None, &[1, 2], bm.config().salt)]
    );
    assert_eq!(other.lookup_prefix(&[1, 2, 3]), 0);
}

#[test]
fn config_is_validated() {
    assert!(BlockManager::new(BlockManagerConfig {
        block_size: 0,
        ..BlockManagerConfig::new(4)
    })
    .is_err());
    assert!(BlockManager::new(BlockManagerConfig::new(0)).is_err());
    assert_eq!(BlockManagerConfig::new(4).block_size, DEFAULT_BLOCK_SIZE);
}

#[test]
fn unknown_sequences_are_reported() {
    let mut bm = pool(4, 2);
    assert_eq!(bm.allocate_slots(9, 1), Err(KvError::UnknownSeq(9)));
    assert_eq!(
        bm.commit_full_blocks(9, &[1, 2]),
        Err(KvError::UnknownSeq(9))
    );
    assert!(!bm.free(9));
    assert!(bm.block_table(9).is_empty());
    bm.allocate_new(1, bm.match_prefix(&[1]), 1).unwrap();
    assert_eq!(
        bm.allocate_new(1, bm.match_prefix(&[1]), 1),
        Err(KvError::SeqExists(1))
    );
}

#[test]
fn events_tell_what_entered_and_left_the_cache() {
    let mut bm = pool(4, 4);
    admit_and_compute(&mut bm, 1, &toks(0..6));
    // Recording starts from nothing, then what is cached already.
    bm.record_events(true);
    let h0 = hash::hash_block(None, &toks(0..4), 42);
    assert_eq!(
        bm.take_events(),
        vec![
            KvEvent::AllCleared,
            KvEvent::Stored {
                hashes: vec![h0],
                parent: None,
                tokens: toks(0..4),
            }
        ]
    );
    // The sequence grows by two blocks in one commit: one stored run continuing block 0.
    bm.allocate_slots(1, 12).unwrap();
    bm.commit_full_blocks(1, &toks(0..12)).unwrap();
    let h1 = hash::hash_block(Some(h0), &toks(4..8), 42);
    let h2 = hash::hash_block(Some(h1), &toks(8..12), 42);
    assert_eq!(
        bm.take_events(),
        vec![KvEvent::Stored {
            hashes: vec![h1, h2],
            parent: Some(h0),
            tokens: toks(4..12),
        }]
    );
    assert!(bm.take_events().is_empty(), "taken once");
    // Freed, the blocks stay cached; a new sequence needing the whole pool evicts the three
    // (tail first) in one removal.
    bm.free(1);
    admit_and_compute(&mut bm, 2, &toks(50..63));
    let events = bm.take_events();
    assert_eq!(
        events[0],
        KvEvent::Removed {
            hashes: vec![h2, h1, h0]
        }
    );
    ok(&bm);
}

#[test]
fn truncating_gives_back_the_slots_of_rejected_drafts_and_keeps_cached_blocks() {
    let mut bm = pool(16, 4);
    let prompt = toks(0..6);
    admit_and_compute(&mut bm, 1, &prompt);
    let free = bm.num_free_blocks();
    // A verification step: the last token and four drafts at positions 6..11.
    bm.allocate_slots(1, 11).unwrap();
    ok(&bm);
    assert_eq!(bm.num_free_blocks(), free - 1);
    // One draft accepted: 8 positions computed, all in the first two blocks.
    assert_eq!(bm.truncate_slots(1, 8).unwrap(), 1);
    ok(&bm);
    assert_eq!(bm.num_free_blocks(), free);
    assert_eq!(bm.block_table(1).len(), 2);
    assert_eq!(
        bm.truncate_slots(1, 8).unwrap(),
        0,
        "nothing more to give back"
    );
    // The cached first block stays: truncating past it is refused.
    assert!(bm.truncate_slots(1, 0).is_err());
    ok(&bm);
    assert!(bm.truncate_slots(9, 2).is_err(), "unknown sequence");
}
