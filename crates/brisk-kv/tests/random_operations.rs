//! Property test: random admissions, growth, commits, forks and frees keep every invariant,
//! and freeing everything returns the whole pool.

use brisk_kv::{BlockManager, BlockManagerConfig, KvError, SeqId};
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
    fn random_operations_keep_invariants(ops in prop::collection::vec(op(), 1..60), caching in any::<bool>()) {
        let bs = 3;
        let mut bm = BlockManager::new(BlockManagerConfig {
            block_size: bs, num_blocks: 24, enable_prefix_caching: caching, salt: 1,
        }).unwrap();
        let prefixes: [Vec<TokenId>; 3] = [(0..7).collect(), (0..4).collect(), (10..20).collect()];
        // Live sequences: id and their tokens (all computed).
        let mut live: Vec<(SeqId, Vec<TokenId>)> = Vec::new();
        let mut next_id = 0;
        for op in ops {
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
