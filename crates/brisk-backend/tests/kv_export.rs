//! A sequence's K/V blocks exported from one pool and imported into another (at other block
//! ids) continue exactly: the next step's logits are bit for bit those of the original pool,
//! for every cache type. Data from a pool of another type or geometry is refused and nothing
//! is written.

mod common;

use brisk_backend::{CpuBackend, CpuKvPool, KvCacheDtype};
use brisk_types::{Backend, BackendError, LogitsWanted, SeqStep, StepBatch};
use common::COUNTING_IDS;

const BS: usize = 4;

fn step(
    backend: &CpuBackend,
    kv: &mut CpuKvPool,
    tokens: &[u32],
    start: usize,
    table: &[u32],
) -> Vec<f32> {
    let batch = StepBatch {
        seqs: vec![SeqStep {
            tokens,
            start_pos: start,
            block_table: table,
            logits: LogitsWanted::Last,
        }],
    };
    let out = backend.execute(&batch, kv).expect("the step runs");
    out.last_row(0).to_vec()
}

#[test]
fn exported_blocks_continue_exactly_in_another_pool() {
    let mut backend = common::backend();
    let prompt = &COUNTING_IDS[..14];
    let next = COUNTING_IDS[14];
    for dtype in [
        KvCacheDtype::F32,
        KvCacheDtype::F16,
        KvCacheDtype::Bf16,
        KvCacheDtype::Int8,
    ] {
        backend.set_kv_cache_dtype(dtype);
        let (mut a, mut b) = (
            backend.allocate_kv(16, BS).unwrap(),
            backend.allocate_kv(16, BS).unwrap(),
        );
        let (table_a, table_b) = ([9u32, 3, 12, 5], [0u32, 1, 2, 3]);
        step(&backend, &mut a, prompt, 0, &table_a);
        let data = backend.export_blocks(&a, &table_a).unwrap();
        backend.import_blocks(&mut b, &table_b, &data).unwrap();
        let want = step(&backend, &mut a, &[next], prompt.len(), &table_a);
        let got = step(&backend, &mut b, &[next], prompt.len(), &table_b);
        assert_eq!(got, want, "{dtype:?}");
    }
}

#[test]
fn blocks_from_another_kind_of_pool_are_refused() {
    let mut backend = common::backend();
    let a = backend.allocate_kv(8, BS).unwrap();
    let data = backend.export_blocks(&a, &[1, 2]).unwrap();
    let refused = |r: Result<(), BackendError>| match r {
        Err(BackendError::InvalidBatch(m)) => m,
        other => panic!("{other:?}"),
    };
    // Another block size, another element type, another block count, cut short.
    let mut other_size = backend.allocate_kv(8, 2 * BS).unwrap();
    assert!(refused(backend.import_blocks(&mut other_size, &[1, 2], &data)).contains("geometry"));
    backend.set_kv_cache_dtype(KvCacheDtype::Bf16);
    let mut bf16 = backend.allocate_kv(8, BS).unwrap();
    assert!(refused(backend.import_blocks(&mut bf16, &[1, 2], &data)).contains("bf16"));
    backend.set_kv_cache_dtype(KvCacheDtype::F32);
    let mut f32_pool = backend.allocate_kv(8, BS).unwrap();
    refused(backend.import_blocks(&mut f32_pool, &[1], &data));
    refused(backend.import_blocks(&mut f32_pool, &[1, 2], &data[..data.len() - 1]));
    refused(backend.import_blocks(&mut f32_pool, &[1, 99], &data));
    assert!(
        backend.export_blocks(&a, &[8]).is_err(),
        "a block past the pool"
    );
}
