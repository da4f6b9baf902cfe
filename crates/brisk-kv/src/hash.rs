//! The chained hash that names a full block of tokens.
//!
//! vLLM hashes `(parent_hash, token_ids, extra_keys)`; brisk does the same with a fixed
//! algorithm so that hashes are identical across runs, builds and machines (the router will
//! compare them between replicas): 64-bit FNV-1a over a little-endian byte encoding, finished
//! with MurmurHash3's `fmix64` to spread FNV's weak high bits. std's `DefaultHasher` is not
//! used because its algorithm may change between Rust releases.

use brisk_types::TokenId;

/// The hash of a full block, chained over every block before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// 64-bit FNV-1a of `bytes`: a stable hash for keys that need no better spread (stable across
/// runs and builds, unlike std's `DefaultHasher`).
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, bytes)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Hashes one block: its parent's hash (`None` for the first block), the model salt and its
/// tokens. Deterministic across runs and platforms.
pub fn hash_block(parent: Option<BlockHash>, tokens: &[TokenId], salt: u64) -> BlockHash {
    let mut h = FNV_OFFSET;
    match parent {
        None => h = fnv1a(h, &[0]),
        Some(BlockHash(p)) => {
            h = fnv1a(h, &[1]);
            h = fnv1a(h, &p.to_le_bytes());
        }
    }
    h = fnv1a(h, &salt.to_le_bytes());
    h = fnv1a(h, &(tokens.len() as u64).to_le_bytes());
    for t in tokens {
        h = fnv1a(h, &t.to_le_bytes());
    }
    BlockHash(fmix64(h))
}

/// The chained hashes of the full blocks of `tokens` (a trailing partial block has none).
pub fn hash_blocks(tokens: &[TokenId], block_size: usize, salt: u64) -> Vec<BlockHash> {
    let mut parent = None;
    tokens
        .chunks_exact(block_size)
        .map(|chunk| {
            let h = hash_block(parent, chunk, salt);
            parent = Some(h);
            h
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_across_runs() {
        // Pinned values: changing the algorithm changes every hash a router may hold.
        let root = hash_block(None, &[1, 2, 3], 0);
        assert_eq!(root, BlockHash(0x94a7_7e59_5cf0_b22a));
        assert_eq!(
            hash_block(Some(root), &[4, 5, 6], 9),
            BlockHash(0xa21b_46b4_315c_502f)
        );
    }

    #[test]
    fn hash_depends_on_parent_tokens_and_salt() {
        let a = hash_block(None, &[1, 2], 7);
        assert_ne!(a, hash_block(None, &[2, 1], 7));
        assert_ne!(a, hash_block(None, &[1, 2], 8));
        assert_ne!(a, hash_block(Some(BlockHash(0)), &[1, 2], 7));
        assert_ne!(
            hash_block(Some(a), &[3, 4], 7),
            hash_block(None, &[3, 4], 7)
        );
    }

    #[test]
    fn only_full_blocks_are_hashed() {
        let h = hash_blocks(&[1, 2, 3, 4, 5], 2, 0);
        assert_eq!(h.len(), 2);
        assert_eq!(h[1], hash_block(Some(h[0]), &[3, 4], 0));
    }
}
