//! Property test: random admissions, growth, commits, forks and frees keep every invariant,
//! and freeing everything returns the whole pool. With event recording switched on part-way,
//! a consumer that applies the events holds exactly the cached set after every operation.

use std::collections::HashSet;

use brisk_kv::hash::hash_block;
use brisk_kv::{BlockHash, BlockManager, BlockManagerConfig, KvError, KvEvent, SeqId};
use brisk_types::TokenId;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Admit a sequence whose prompt is shared prefix `p` then `suffix` tokens.
    Admit {
        prefix: usize,
        suffix: Vec<TokenId>,
        extra: usize,
    },
    /// Grow a live sequence by some tokens and commit what is computed.
    Grow {
        pick: usize,
        by: usize,
    },
    Fork {
        pick: usize,
    },
    Free {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, prop::collection::vec(0..4u32, 0..12), 0..6usize).prop_map(
            |(prefix, suffix, extra)| Op::Admit {
                prefix,
                suffix,
                extra
            }
        ),
        (any::<usize>(), 1..9usize).prop_map(|(pick, by)| Op::Grow { pick, by }),
        any::<usize>().prop_map(|pick| Op::Fork { pick }),
        any::<usize>().prop_map(|pick| Op::Free { pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_operations_keep_invariants(
        ops in prop::collection::vec(op(), 1..60),
        caching in any::<bool>(),
        record_from in 0..20usize,
    ) {
        let bs = 3;
        let mut bm = BlockManager::new(BlockManagerConfig {
            block_size: bs, num_blocks: 24, enable_prefix_caching: caching, salt: 1,
        }).unwrap();
        let prefixes: [Vec<TokenId>; 3] = [(0..7).collect(), (0..4).collect(), (10..20).collect()];
        // Live sequences: id and their tokens (all computed).
        let mut live: Vec<(SeqId, Vec<TokenId>)> = Vec::new();
        let mut next_id = 0;
        // What a consumer of the events knows is cached, once recording is on.
        let mut mirror: Option<HashSet<BlockHash>> = None;
        // Every hash ever cached (observed after each operation, and told by events).
        let mut seen: HashSet<BlockHash> = HashSet::new();
        for (step, op) in ops.into_iter().enumerate() {
            if step == record_from {
                bm.record_events(true);
                // The snapshot of what is cached already.
                let mut known = HashSet::new();
                apply(&mut known, &mut seen, bm.take_events(), bs)?;
                mirror = Some(known);
            }
            match op {
                Op::Admit { prefix, suffix, extra } => {
                    let mut toks = prefixes[prefix].clone();
                    toks.extend(suffix);
                    toks.push(99);
                    let m = bm.match_prefix(&toks);
                    prop_assert!(m.num_tokens() < toks.len());
                    prop_assert_eq!(m.num_tokens() % bs, 0);
                    prop_assert_eq!(bm.lookup_prefix(&toks), m.num_tokens());
                    let n = toks.len() + extra;
                    match bm.allocate_new(next_id, m, n) {
                        Ok(()) => {
                            bm.commit_full_blocks(next_id, &toks).unwrap();
                            live.push((next_id, toks));
                        }
                        Err(KvError::OutOfBlocks { .. }) => prop_assert!(!bm.contains(next_id)),
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                    next_id += 1;
                }
                Op::Grow { pick, by } if !live.is_empty() => {
                    let i = pick % live.len();
                    let (id, toks) = &mut live[i];
                    let n = toks.len() + by;
                    if bm.allocate_slots(*id, n).is_ok() {
                        toks.extend((0..by as u32).map(|t| t % 2));
                        bm.commit_full_blocks(*id, toks).unwrap();
                    }
                }
                Op::Fork { pick } if !live.is_empty() => {
                    let (id, toks) = live[pick % live.len()].clone();
                    let shared = bm.fork(id, next_id, toks.len()).unwrap();
                    prop_assert_eq!(shared, toks.len() / bs * bs);
                    // The child shares the full blocks and owns the rest.
                    if bm.allocate_slots(next_id, toks.len()).is_ok() {
                        bm.commit_full_blocks(next_id, &toks).unwrap();
                        live.push((next_id, toks));
                    } else {
                        bm.free(next_id);
                    }
                    next_id += 1;
                }
                Op::Free { pick } if !live.is_empty() => {
                    let (id, _) = live.swap_remove(pick % live.len());
                    prop_assert!(bm.free(id));
                }
                _ => {}
            }
            bm.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
            seen.extend(bm.cached_hashes());
            if let Some(mirror) = &mut mirror {
                apply(mirror, &mut seen, bm.take_events(), bs)?;
                let cached: HashSet<BlockHash> = bm.cached_hashes().collect();
                prop_assert_eq!(&*mirror, &cached);
            } else {
                prop_assert!(bm.take_events().is_empty());
            }
            for (id, toks) in &live {
                prop_assert!(bm.block_table(*id).len() * bs >= toks.len());
            }
        }
        for (id, _) in live.drain(..) {
            bm.free(id);
            bm.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(bm.num_free_blocks(), 24);
        prop_assert_eq!(bm.usage_ratio(), 0.0);
        prop_assert_eq!(bm.num_cached_free_blocks(), bm.num_cached_blocks());
    }
}

/// Applies `events` to a consumer's set of cached hashes, checking what each promises: a
/// stored run continues a block that was cached (it may have been evicted since, when an
/// identical block computed beside it was the one cached), its hashes are those of its
/// tokens, no block is stored twice or removed unknown.
fn apply(
    mirror: &mut HashSet<BlockHash>,
    seen: &mut HashSet<BlockHash>,
    events: Vec<KvEvent>,
    bs: usize,
) -> Result<(), TestCaseError> {
    for event in events {
        match event {
            KvEvent::Stored {
                hashes,
                parent,
                tokens,
            } => {
                prop_assert!(parent.is_none_or(|p| seen.contains(&p)), "unknown parent");
                prop_assert_eq!(tokens.len(), hashes.len() * bs);
                let mut chain = parent;
                for (h, chunk) in hashes.iter().zip(tokens.chunks_exact(bs)) {
                    prop_assert_eq!(*h, hash_block(chain, chunk, 1));
                    prop_assert!(mirror.insert(*h), "stored twice");
                    seen.insert(*h);
                    chain = Some(*h);
                }
            }
            KvEvent::Removed { hashes } => {
                for h in hashes {
                    prop_assert!(mirror.remove(&h), "removed an unknown block");
                }
            }
            KvEvent::AllCleared => mirror.clear(),
        }
    }
    Ok(())
}
