//! The engine actor against a mock backend (no model): requests stream, abort and finish, and
//! every block comes back.

use std::time::Duration;

use brisk_engine::{
    EngineConfig, EngineEvent, EngineFailure, EngineHandle, EngineRequest, FinishReason,
    RequestSlo, RequestSpec,
};
use brisk_kv::{KvEvent, KvEventBatch};
use brisk_scheduler::{
    LatencyCoefficients, LatencyModel, PolicyChoice, SchedulerConfig, StepRecord,
};
use brisk_testkit::CountingBackend;
use brisk_types::TokenId;

const VOCAB: usize = 64;

fn engine(num_blocks: usize) -> EngineHandle {
    engine_with(num_blocks, PolicyChoice::Fcfs)
}

fn engine_with(num_blocks: usize, policy: PolicyChoice) -> EngineHandle {
    engine_recording(num_blocks, policy, None)
}

fn engine_recording(
    num_blocks: usize,
    policy: PolicyChoice,
    step_records: Option<std::sync::mpsc::Sender<StepRecord>>,
) -> EngineHandle {
    engine_publishing(num_blocks, policy, step_records, None)
}

fn engine_publishing(
    num_blocks: usize,
    policy: PolicyChoice,
    step_records: Option<std::sync::mpsc::Sender<StepRecord>>,
    kv_events: Option<tokio::sync::mpsc::Sender<KvEventBatch>>,
) -> EngineHandle {
    brisk_engine::spawn(
        CountingBackend::new(VOCAB, 4096),
        EngineConfig {
            scheduler: SchedulerConfig {
                max_num_seqs: 8,
                max_num_batched_tokens: 64,
                max_model_len: 4096,
                block_size: 4,
                num_blocks,
                enable_prefix_caching: true,
                chunked_prefill: true,
                eos_token_ids: Vec::new(),
                cache_salt: 0,
                fair_share: None,
                length_prediction: None,
                speculative: None,
            },
            seed: 0,
            policy,
            step_records,
            kv_events,
        },
    )
    .unwrap()
}

fn request(prompt: Vec<TokenId>, max_tokens: usize) -> EngineRequest {
    EngineRequest::greedy(RequestSpec::new(prompt, max_tokens))
}

async fn collect(mut stream: brisk_engine::RequestStream) -> (Vec<TokenId>, EngineEvent) {
    let mut tokens = Vec::new();
    loop {
        match stream.next().await.expect("the engine answers") {
            EngineEvent::Token(t) => tokens.push(t.token),
            other => return (tokens, other),
        }
    }
}

async fn wait_idle(handle: &EngineHandle) {
    for _ in 0..1000 {
        let s = handle.stats();
        if s.num_running == 0 && s.num_waiting == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("engine never idle: {:?}", handle.stats());
}

#[tokio::test]
async fn a_request_streams_its_tokens_and_finishes_on_eos() {
    let e = engine(256);
    let (tokens, end) = collect(e.submit(request(vec![60], 20)).unwrap()).await;
    assert_eq!(tokens, vec![61, 62, 63, 0]);
    assert!(matches!(
        end,
        EngineEvent::Finished {
            reason: FinishReason::Stop,
            output_tokens: 4,
            ..
        }
    ));
}

#[tokio::test]
async fn every_step_is_recorded_with_its_shape_and_time() {
    let (tx, rx) = std::sync::mpsc::channel();
    let e = engine_recording(256, PolicyChoice::Fcfs, Some(tx));
    // A 100-token prompt takes two chunks under the 64-token budget; then 4 tokens come out
    // (the first from the prompt's last step, three from decodes; the mock stops at EOS).
    let (tokens, _) = collect(
        e.submit(request((0..100).map(|i| i % 50).collect(), 4))
            .unwrap(),
    )
    .await;
    assert_eq!(tokens.len(), 4);
    wait_idle(&e).await;
    drop(e); // the engine ends, dropping its sender
    let records: Vec<StepRecord> = rx.iter().collect();
    assert_eq!(records.len(), 5, "{records:?}");
    assert_eq!(records[0].shape.prefill_tokens, 64);
    assert_eq!(records[1].shape.prefill_tokens, 36);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.step as usize, i + 1);
        assert!(r.execute_s > 0.0 && r.seconds >= r.execute_s, "{r:?}");
        if i >= 2 {
            assert_eq!((r.shape.prefill_tokens, r.shape.decode_seqs), (0, 1));
            assert_eq!(r.shape.decode_context, 100 + i - 1);
        }
    }
    assert!(records.windows(2).all(|w| w[1].at_s >= w[0].at_s));
}

#[tokio::test]
async fn min_tokens_keeps_eos_away_and_ignore_eos_runs_to_length() {
    let e = engine(256);
    let mut r = request(vec![62], 5);
    r.min_tokens = 3;
    let (tokens, end) = collect(e.submit(r).unwrap()).await;
    // EOS (0) is banned while fewer than three tokens exist, so after 63 the best remaining
    // token (1, the first of the ties) is taken and counting goes on from there.
    assert_eq!(tokens, vec![63, 1, 2, 3, 4]);
    assert!(matches!(
        end,
        EngineEvent::Finished {
            reason: FinishReason::Length,
            ..
        }
    ));
    let mut r = request(vec![62], 5);
    r.ignore_eos = true;
    let (tokens, end) = collect(e.submit(r).unwrap()).await;
    assert_eq!(tokens, vec![63, 0, 1, 2, 3]);
    assert!(matches!(
        end,
        EngineEvent::Finished {
            reason: FinishReason::Length,
            ..
        }
    ));
}

#[tokio::test]
async fn many_requests_with_aborts_all_end_and_free_every_block() {
    let e = engine(48); // tight: forces preemption
    let mut finished = Vec::new();
    let mut dropped = 0;
    for round in 0..5u32 {
        let mut streams = Vec::new();
        for i in 0..12u32 {
            let prompt: Vec<TokenId> = (0..(5 + i % 7)).map(|t| 1 + (t + round) % 50).collect();
            streams.push(
                e.submit(request(prompt, 20 + (i as usize % 5) * 7))
                    .unwrap(),
            );
        }
        // Drop every third stream after one token: the client went away.
        let mut keep = Vec::new();
        for (i, mut s) in streams.into_iter().enumerate() {
            if i % 3 == 0 {
                let _ = s.next().await;
                drop(s);
                dropped += 1;
            } else {
                keep.push(s);
            }
        }
        for s in keep {
            finished.push(collect(s).await.1);
        }
    }
    assert_eq!(finished.len() + dropped, 60);
    assert!(finished.iter().all(|f| matches!(
        f,
        EngineEvent::Finished {
            reason: FinishReason::Stop | FinishReason::Length,
            ..
        }
    )));
    wait_idle(&e).await;
    let stats = e.stats();
    assert_eq!(stats.kv_cache_usage, 0.0, "{stats:?}");
    assert!(stats.alive);
}

#[tokio::test]
async fn a_request_larger_than_the_pool_is_refused_with_an_error() {
    let e = engine(4); // 16 tokens
    let (tokens, end) = collect(e.submit(request((1..30).collect(), 8)).unwrap()).await;
    assert!(tokens.is_empty());
    assert!(
        matches!(end, EngineEvent::Failed(EngineFailure::Invalid(ref m)) if m.contains("block")),
        "{end:?}"
    );
    // The engine keeps serving.
    let (tokens, _) = collect(e.submit(request(vec![1], 3)).unwrap()).await;
    assert_eq!(tokens, vec![2, 3, 4]);
}

#[tokio::test]
async fn a_request_that_cannot_meet_its_ttft_is_rejected_before_any_step() {
    // 10 ms per prompt token: a 50-token prompt needs 500 ms, its objective allows 100 ms.
    let model = LatencyModel::from_coefficients(LatencyCoefficients {
        base_s: 0.001,
        per_prefill_token_s: 0.010,
        ..LatencyCoefficients::default()
    });
    let handle = engine_with(
        64,
        PolicyChoice::Slo {
            model,
            reject_unattainable: true,
        },
    );
    let slo = Some(RequestSlo {
        ttft: 0.1,
        tpot: 1.0,
    });
    let stream = handle
        .submit({
            let mut r = request((1..51).collect(), 4);
            r.slo = slo;
            r
        })
        .unwrap();
    let (tokens, last) = collect(stream).await;
    assert!(tokens.is_empty());
    let EngineEvent::Rejected(message) = last else {
        panic!("{last:?}")
    };
    assert!(message.contains("time-to-first-token"), "{message}");
    assert_eq!(handle.stats().steps, 0, "no work was spent on it");
    // A short prompt under the same objective is served.
    let stream = handle
        .submit({
            let mut r = request(vec![1, 2], 3);
            r.slo = slo;
            r
        })
        .unwrap();
    let (tokens, last) = collect(stream).await;
    assert_eq!(tokens.len(), 3);
    assert!(matches!(last, EngineEvent::Finished { .. }), "{last:?}");
}

#[tokio::test]
async fn the_engine_publishes_what_enters_and_leaves_its_prefix_cache() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    // Six blocks of four tokens: the second prompt needs them all, evicting the first's.
    let e = engine_publishing(6, PolicyChoice::Fcfs, None, Some(tx));
    let first: Vec<TokenId> = (0..9).collect();
    collect(e.submit(request(first.clone(), 1)).unwrap()).await;
    wait_idle(&e).await;
    collect(e.submit(request((20..41).collect(), 1)).unwrap()).await;
    wait_idle(&e).await;
    drop(e);
    let mut batches: Vec<KvEventBatch> = Vec::new();
    while let Some(batch) = rx.recv().await {
        batches.push(batch);
    }
    let events: Vec<KvEvent> = batches.iter().flat_map(|b| b.events.clone()).collect();
    assert_eq!(events[0], KvEvent::AllCleared, "{events:?}");
    let hashes = brisk_kv::hash::hash_blocks(&first, 4, 0);
    assert_eq!(
        events[1],
        KvEvent::Stored {
            hashes: hashes.clone(),
            parent: None,
            tokens: first[..8].to_vec(),
        }
    );
    let removed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            KvEvent::Removed { hashes } => Some(hashes.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(removed.len(), 2, "{events:?}");
    assert!(hashes.iter().all(|h| removed.contains(h)));
    assert!(batches.iter().all(|b| b.ts > 1.7e9), "wall-clock seconds");
}
