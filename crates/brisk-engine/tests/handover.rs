//! A running request moved mid-decode from one engine core to another (a tiny generated
//! model, real CPU backend, real KV blocks) produces exactly the tokens of an undisturbed
//! run, greedy and sampled with or without a seed; a move the destination cannot take is
//! refused and the request, paused meanwhile, runs on where it was once resumed.

mod common;

use brisk_backend::{CpuBackend, KvCacheDtype};
use brisk_engine::{
    BlockExport, EngineCore, EngineRequest, MoveError, Output, RequestExport, RequestSpec,
};
use brisk_sampling::SamplingParams;
use brisk_scheduler::{SchedulerConfig, SchedulerCore, SchedulerError};
use brisk_types::{Backend, TokenId};
use common::{tiny_backend, Frozen};

fn backend(dir: &std::path::Path) -> CpuBackend {
    tiny_backend(dir, 7)
}

/// Four seats, 64-token steps, 4-token blocks.
fn scheduler(num_blocks: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 4,
        max_num_batched_tokens: 64,
        max_model_len: 256,
        block_size: 4,
        num_blocks,
        eos_token_ids: Vec::new(),
        ..SchedulerConfig::default()
    }
}

fn core(dir: &std::path::Path, num_blocks: usize, dtype: KvCacheDtype) -> EngineCore<CpuBackend> {
    let mut backend = backend(dir);
    backend.set_kv_cache_dtype(dtype);
    let kv = backend.allocate_kv(num_blocks, 4).unwrap();
    let cfg = scheduler(num_blocks);
    EngineCore::new(backend, kv, SchedulerCore::new(cfg).unwrap(), 3)
}

fn request(sampling: SamplingParams) -> EngineRequest {
    let mut spec = RequestSpec::new((1..23).collect(), 24);
    spec.ignore_eos = true;
    // An unbounded TPOT: infinity crosses the wire too.
    spec.slo = Some(brisk_scheduler::RequestSlo {
        ttft: 30.0,
        tpot: f64::INFINITY,
    });
    EngineRequest {
        sampling,
        ..EngineRequest::greedy(spec)
    }
}

/// Steps `core` until request `id` has `until` tokens (or finished); returns its tokens.
fn run(core: &mut EngineCore<CpuBackend>, id: u64, until: usize) -> (Vec<TokenId>, bool) {
    let mut tokens = Vec::new();
    loop {
        let report = core.step(0.0, &Frozen).expect("work to do");
        for output in report.outputs {
            match output {
                Output::Token { id: i, token } if i == id => tokens.push(token.token),
                Output::Finished { id: i, .. } if i == id => return (tokens, true),
                Output::Failed { message, .. } => panic!("{message}"),
                _ => {}
            }
        }
        if tokens.len() >= until {
            return (tokens, false);
        }
    }
}

fn samplings() -> Vec<(&'static str, SamplingParams)> {
    // The tiny model's logits are far apart: a high temperature makes every draw count.
    let sampled = |seed| SamplingParams {
        temperature: 50.0,
        seed,
        ..SamplingParams::greedy()
    };
    vec![
        ("greedy", SamplingParams::greedy()),
        ("seeded", sampled(Some(42))),
        ("unseeded", sampled(None)),
    ]
}

#[test]
fn a_request_moved_mid_decode_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in [KvCacheDtype::F32, KvCacheDtype::Int8] {
        let mut outputs = Vec::new();
        for (name, sampling) in samplings() {
            let mut alone = core(dir.path(), 64, dtype);
            alone.add(1, request(sampling.clone()), 0.0, 0.0).unwrap();
            let (want, finished) = run(&mut alone, 1, usize::MAX);
            assert!(finished && want.len() == 24);

            let (mut source, mut dest) = (core(dir.path(), 64, dtype), core(dir.path(), 64, dtype));
            source.add(1, request(sampling), 0.0, 0.0).unwrap();
            let (mut got, _) = run(&mut source, 1, 9);
            // Through bytes, as between two processes.
            let bytes = source.export(1, 0.0).unwrap().to_bytes();
            let export = RequestExport::from_bytes(&bytes).unwrap();
            assert!(export.kv_bytes() > 0);
            dest.import(7, export, 0.0).unwrap();
            assert!(source.release(1));
            assert!(!source.has_unfinished(), "the source holds nothing");
            assert_eq!(source.stats().kv_usage_ratio, 0.0);
            let (rest, finished) = run(&mut dest, 7, usize::MAX);
            assert!(finished);
            got.extend(rest);
            assert_eq!(got, want, "{dtype:?} {name}");
            assert_eq!(dest.stats().kv_usage_ratio, 0.0, "freed at the end");
            outputs.push(got);
        }
        // Sampling matters here, so a generator restarted by the move would have shown.
        assert!(
            outputs[0] != outputs[1] && outputs[1] != outputs[2],
            "{outputs:?}"
        );
    }
}

/// Sends `source`'s request 1 blocks ahead to `dest` (through bytes), from `first_block`;
/// returns how many blocks `dest` holds now.
fn send_ahead(
    source: &mut EngineCore<CpuBackend>,
    dest: &mut EngineCore<CpuBackend>,
    first_block: usize,
) -> usize {
    let Some(blocks) = source.export_blocks(1, first_block, usize::MAX).unwrap() else {
        return first_block;
    };
    let (head, kv) = blocks.into_wire_parts();
    let blocks = BlockExport::from_vec([head, kv].concat()).unwrap();
    dest.import_blocks(&blocks).unwrap()
}

#[test]
fn a_migration_that_sends_blocks_ahead_continues_exactly_and_carries_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    for (name, sampling) in samplings().into_iter().take(2) {
        let mut alone = core(dir.path(), 64, KvCacheDtype::F32);
        alone.add(1, request(sampling.clone()), 0.0, 0.0).unwrap();
        let (want, _) = run(&mut alone, 1, usize::MAX);

        let (mut source, mut dest) = (
            core(dir.path(), 64, KvCacheDtype::F32),
            core(dir.path(), 64, KvCacheDtype::F32),
        );
        source.add(1, request(sampling), 0.0, 0.0).unwrap();
        // Stage 1 while it decodes, stage 2 a few tokens later, then the final stop.
        let (mut got, _) = run(&mut source, 1, 3);
        let held = send_ahead(&mut source, &mut dest, 0);
        assert_eq!(
            held,
            24 / 4,
            "22 prompt tokens and 2 computed outputs: 6 full blocks"
        );
        let (more, _) = run(&mut source, 1, 6);
        got.extend(more);
        let held = send_ahead(&mut source, &mut dest, held);
        assert_eq!(held, 7);
        let full = source.export(1, 0.0).unwrap().kv_bytes();
        assert!(source.resume(1));
        let export = source.export_from(1, 0.0, held).unwrap();
        let bytes = RequestExport::from_bytes(&export.to_bytes()).unwrap();
        assert!(
            bytes.kv_bytes() * 7 < full,
            "only the last block travels at the stop"
        );
        dest.import(7, bytes, 0.0).unwrap();
        assert!(source.release(1));
        let (rest, finished) = run(&mut dest, 7, usize::MAX);
        assert!(finished);
        got.extend(rest);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn blocks_sent_ahead_and_lost_to_eviction_are_named_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut source, mut dest) = (
        core(dir.path(), 64, KvCacheDtype::F32),
        core(dir.path(), 64, KvCacheDtype::F32),
    );
    source
        .add(1, request(SamplingParams::greedy()), 0.0, 0.0)
        .unwrap();
    run(&mut source, 1, 3);
    // The destination never got the first blocks: the continuation from block 2 is refused.
    let blocks = source.export_blocks(1, 2, usize::MAX).unwrap().unwrap();
    let e = dest.import_blocks(&blocks).unwrap_err();
    assert!(e.to_string().contains("no longer cached"), "{e}");
    let e = dest
        .import(7, source.export_from(1, 0.0, 2).unwrap(), 0.0)
        .unwrap_err();
    assert!(
        matches!(
            e,
            MoveError::Scheduler(SchedulerError::PrefixLost { needed: 2, held: 0 })
        ),
        "{e}"
    );
    assert!(!dest.has_unfinished());
    assert_eq!(dest.stats().kv_usage_ratio, 0.0);
    // More blocks than it has full ones cannot be skipped.
    assert!(source.resume(1));
    assert!(source.export_from(1, 0.0, 7).is_err());
}

#[test]
fn a_move_without_room_is_refused_and_the_request_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut alone = core(dir.path(), 64, KvCacheDtype::F32);
    alone
        .add(1, request(SamplingParams::greedy()), 0.0, 0.0)
        .unwrap();
    let (want, _) = run(&mut alone, 1, usize::MAX);

    let mut source = core(dir.path(), 64, KvCacheDtype::F32);
    source
        .add(1, request(SamplingParams::greedy()), 0.0, 0.0)
        .unwrap();
    let (mut got, _) = run(&mut source, 1, 5);

    // A destination whose pool is full (another request holds every block).
    let mut full = core(dir.path(), 12, KvCacheDtype::F32);
    full.add(2, request(SamplingParams::greedy()), 0.0, 0.0)
        .unwrap();
    run(&mut full, 2, 2);
    let e = full
        .import(7, source.export(1, 0.0).unwrap(), 0.0)
        .unwrap_err();
    assert!(matches!(e, MoveError::Scheduler(_)), "{e}");
    // The move failed: the source takes the request back (one export at a time).
    assert!(source.resume(1));
    // A destination whose pool stores another type: refused before anything is kept.
    let mut bf16 = core(dir.path(), 64, KvCacheDtype::Bf16);
    let e = bf16
        .import(7, source.export(1, 0.0).unwrap(), 0.0)
        .unwrap_err();
    assert!(matches!(e, MoveError::Backend(_)), "{e}");
    assert!(!bf16.has_unfinished() && bf16.stats().kv_usage_ratio == 0.0);
    assert!(source.resume(1));
    // Bytes that are not an export are refused with a reason.
    for garbage in [&b"BRQ2"[..], b"hello", &[0u8; 64]] {
        assert!(matches!(
            RequestExport::from_bytes(garbage),
            Err(MoveError::Wire(_))
        ));
    }
    let mut cut = source.export(1, 0.0).unwrap().to_bytes();
    cut.truncate(cut.len() - 3);
    let cut = RequestExport::from_bytes(&cut).unwrap();
    let mut fresh_dest = core(dir.path(), 64, KvCacheDtype::F32);
    assert!(matches!(
        fresh_dest.import(9, cut, 0.0),
        Err(MoveError::Backend(_))
    ));
    assert!(!fresh_dest.has_unfinished());
    // A request still in its prompt cannot move.
    let mut fresh = core(dir.path(), 64, KvCacheDtype::F32);
    fresh
        .add(3, request(SamplingParams::greedy()), 0.0, 0.0)
        .unwrap();
    assert!(fresh.export(3, 0.0).is_err());

    // While a move is pending the request is paused: no step runs it (no token twice).
    assert!(source.step(0.0, &Frozen).is_none());
    assert!(source.resume(1));
    let (rest, finished) = run(&mut source, 1, usize::MAX);
    assert!(finished);
    got.extend(rest);
    assert_eq!(got, want, "the refused move changed nothing");
}

/// An engine thread over the tiny model, its KV cache in `dtype`.
fn spawn(dir: &std::path::Path, dtype: KvCacheDtype) -> brisk_engine::EngineHandle {
    let num_blocks = 64;
    let mut backend = backend(dir);
    backend.set_kv_cache_dtype(dtype);
    let cfg = scheduler(num_blocks);
    brisk_engine::spawn(
        backend,
        brisk_engine::EngineConfig {
            scheduler: cfg,
            seed: 3,
            policy: brisk_scheduler::PolicyChoice::Fcfs,
            step_records: None,
            kv_events: None,
        },
    )
    .unwrap()
}

/// Every token `stream` delivers until it ends (with or without `Finished`).
async fn drain(stream: &mut brisk_engine::RequestStream) -> Vec<TokenId> {
    let mut tokens = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            brisk_engine::EngineEvent::Token(t) => tokens.push(t.token),
            brisk_engine::EngineEvent::Finished { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    tokens
}

#[tokio::test]
async fn engines_hand_a_request_over_through_their_handles() {
    let dir = tempfile::tempdir().unwrap();
    let sampled = SamplingParams {
        temperature: 50.0,
        seed: Some(9),
        ..SamplingParams::greedy()
    };
    let alone = spawn(dir.path(), KvCacheDtype::F32);
    let want = drain(&mut alone.submit(request(sampled.clone())).unwrap()).await;
    assert_eq!(want.len(), 24);

    let (a, b) = (
        spawn(dir.path(), KvCacheDtype::F32),
        spawn(dir.path(), KvCacheDtype::F32),
    );
    let mut source = a.submit(request(sampled.clone())).unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        if let Some(brisk_engine::EngineEvent::Token(t)) = source.next().await {
            got.push(t.token);
        }
    }
    let export = a.export(source.id()).await.unwrap();
    let mut dest = b.import(export).await.unwrap();
    a.release(source.id()).unwrap();
    // What the source made before the export, then the destination's continuation.
    got.extend(drain(&mut source).await);
    got.extend(drain(&mut dest).await);
    assert_eq!(got, want);

    // A destination that cannot take it (another pool type) refuses; the source resumes
    // and finishes the request.
    let other = spawn(dir.path(), KvCacheDtype::Bf16);
    let mut source = a.submit(request(sampled)).unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        if let Some(brisk_engine::EngineEvent::Token(t)) = source.next().await {
            got.push(t.token);
        }
    }
    let export = a.export(source.id()).await.unwrap();
    assert!(matches!(
        other.import(export).await,
        Err(MoveError::Backend(_))
    ));
    a.resume(source.id()).unwrap();
    got.extend(drain(&mut source).await);
    assert_eq!(got, want);
}
