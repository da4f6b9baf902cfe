//! A batch the backend cannot run is refused with `BackendError::InvalidBatch` — never a panic,
//! never a partial step: the whole batch is checked before anything is written to the pool.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use brisk_backend::{CpuBackend, CpuKvPool};
use brisk_types::{Backend, BackendError, LogitsWanted, SeqStep, StepBatch};
use common::FRANCE_IDS;

const BLOCK_SIZE: usize = 16;

fn seq<'a>(tokens: &'a [u32], start_pos: usize, block_table: &'a [u32]) -> SeqStep<'a> {
    SeqStep {
        tokens,
        start_pos,
        block_table,
        logits: LogitsWanted::Last,
    }
}

/// Executes `seqs`, turning a panic into a test failure that says so, and expects
/// `InvalidBatch`; returns its message.
fn expect_invalid(backend: &CpuBackend, kv: &mut CpuKvPool, seqs: Vec<SeqStep<'_>>) -> String {
    let batch = StepBatch { seqs };
    let result = catch_unwind(AssertUnwindSafe(|| backend.execute(&batch, kv)));
    match result {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            panic!("execute panicked instead of returning InvalidBatch: {msg}")
        }
        Ok(Ok(_)) => panic!("execute accepted an invalid batch"),
        Ok(Err(BackendError::InvalidBatch(m))) => {
            eprintln!("rejected: {m}");
            m
        }
        Ok(Err(other)) => panic!("expected InvalidBatch, got {other}"),
    }
}

fn setup() -> (CpuBackend, CpuKvPool) {
    let backend = common::backend();
    let kv = backend.allocate_kv(4, BLOCK_SIZE).unwrap();
    (backend, kv)
}

#[test]
fn a_block_table_too_short_for_its_positions_is_an_invalid_batch() {
    let (backend, mut kv) = setup();
    // Positions 14..19 need two blocks of 16.
    expect_invalid(&backend, &mut kv, vec![seq(&FRANCE_IDS, 14, &[0])]);
    // No blocks at all.
    expect_invalid(&backend, &mut kv, vec![seq(&FRANCE_IDS, 0, &[])]);
}

#[test]
fn a_block_id_outside_the_pool_is_an_invalid_batch() {
    let (backend, mut kv) = setup();
    expect_invalid(&backend, &mut kv, vec![seq(&FRANCE_IDS, 0, &[4])]);
    expect_invalid(&backend, &mut kv, vec![seq(&FRANCE_IDS, 0, &[1, u32::MAX])]);
}

#[test]
fn a_token_id_at_or_past_the_vocabulary_size_is_an_invalid_batch() {
    let (backend, mut kv) = setup();
    let vocab = u32::try_from(backend.config().vocab_size).unwrap();
    expect_invalid(&backend, &mut kv, vec![seq(&[504, vocab], 0, &[0])]);
    expect_invalid(&backend, &mut kv, vec![seq(&[u32::MAX], 0, &[0])]);
    // The last id of the vocabulary is fine.
    let last = [vocab - 1];
    let batch = StepBatch {
        seqs: vec![seq(&last, 0, &[0])],
    };
    backend
        .execute(&batch, &mut kv)
        .expect("the last vocabulary id");
}

#[test]
fn an_empty_token_slice_is_an_invalid_batch() {
    let (backend, mut kv) = setup();
    expect_invalid(&backend, &mut kv, vec![seq(&[], 0, &[0])]);
    expect_invalid(
        &backend,
        &mut kv,
        vec![seq(&FRANCE_IDS, 0, &[0]), seq(&[], 3, &[1])],
    );
}

#[test]
fn a_position_past_the_context_is_an_invalid_batch() {
    let (backend, mut kv) = setup();
    let max = backend.geometry().max_context;
    // A table long enough for the positions (repeating block 0 is allowed), so that only the
    // context limit is broken.
    let table = vec![0u32; (max + 1).div_ceil(BLOCK_SIZE)];
    expect_invalid(&backend, &mut kv, vec![seq(&[504, 3575], max - 1, &table)]);
    expect_invalid(&backend, &mut kv, vec![seq(&[504], max, &table)]);
}

#[test]
fn a_start_position_near_usize_max_is_an_invalid_batch_not_an_overflow() {
    let (backend, mut kv) = setup();
    expect_invalid(&backend, &mut kv, vec![seq(&[504], usize::MAX, &[0])]);
}

#[test]
fn the_last_position_of_the_context_is_accepted() {
    let (backend, mut kv) = setup();
    let max = backend.geometry().max_context;
    let table = vec![0u32; max.div_ceil(BLOCK_SIZE)];
    let batch = StepBatch {
        seqs: vec![seq(&[504], max - 1, &table)],
    };
    let out = backend
        .execute(&batch, &mut kv)
        .expect("position max_context - 1");
    assert!(out.last_row(0).iter().all(|l| l.is_finite()));
}

#[test]
fn a_pool_allocated_for_another_model_is_an_invalid_batch() {
    let (backend, _) = setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    brisk_testkit::TinyModel::generate(brisk_testkit::Arch::Llama, 64, 3)
        .write_gguf(&path, brisk_gguf::GgmlDType::F32, &[])
        .unwrap();
    let tiny = CpuBackend::load(&path).unwrap();
    let mut foreign = tiny.allocate_kv(4, BLOCK_SIZE).unwrap();
    expect_invalid(&backend, &mut foreign, vec![seq(&[5], 0, &[0])]);
}

#[test]
fn one_invalid_sequence_rejects_the_whole_batch_and_leaves_the_pool_untouched() {
    let backend = common::backend();
    let table = [2u32, 0];
    let decode = |kv: &mut CpuKvPool| {
        common::run_one(
            &backend,
            kv,
            &[7042],
            FRANCE_IDS.len(),
            &table,
            LogitsWanted::Last,
        )
    };
    let mut clean = backend.allocate_kv(4, 4).unwrap();
    common::run_one(
        &backend,
        &mut clean,
        &FRANCE_IDS,
        0,
        &table,
        LogitsWanted::Last,
    );
    let expected = decode(&mut clean);

    let mut kv = backend.allocate_kv(4, 4).unwrap();
    common::run_one(
        &backend,
        &mut kv,
        &FRANCE_IDS,
        0,
        &table,
        LogitsWanted::Last,
    );
    // A valid first sequence that would overwrite positions 0..3 (blocks 2 and 0) with other
    // tokens, then an invalid one: nothing of the batch may run.
    let vocab = u32::try_from(backend.config().vocab_size).unwrap();
    expect_invalid(
        &backend,
        &mut kv,
        vec![seq(&[9, 9, 9], 0, &table), seq(&[vocab], 0, &[1])],
    );
    let got = decode(&mut kv);
    let d = common::max_abs_diff(&expected, &got);
    assert!(
        d == 0.0,
        "the rejected batch changed the pool: logits moved by {d}"
    );
}

#[test]
fn an_empty_batch_returns_empty_output() {
    let (backend, mut kv) = setup();
    let out = backend
        .execute(&StepBatch::default(), &mut kv)
        .expect("an empty batch");
    assert!(out.logits.is_empty());
    assert!(out.first_row.is_empty());
    assert_eq!(out.vocab_size, backend.config().vocab_size);
}
