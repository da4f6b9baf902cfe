//! Behaviour of the scheduler core, step by step, against a fake model.

mod common;

use brisk_scheduler::{FinishReason, SchedulerConfig, SchedulerCore, SchedulerError, SeqEvent};
use brisk_types::{LogitsWanted, TokenId};
use common::*;

fn toks(n: usize, base: u32) -> Vec<TokenId> {
    (0..n as u32).map(|i| base + i).collect()
}

#[test]
fn decodes_get_a_token_every_step_while_a_long_prompt_prefills() {
    let mut s = SchedulerCore::new(SchedulerConfig {
        max_num_batched_tokens: 512,
        max_model_len: 4096,
        block_size: 16,
        num_blocks: 256,
        ..config()
    })
    .unwrap();
    s.add_request(request(1, toks(10, 1), 100)).unwrap();
    let (plan, _) = step(&mut s, 0.0, |_| 5);
    assert_eq!(plan.seqs[0].logits, LogitsWanted::Last);
    s.add_request(request(2, toks(2000, 1), 4)).unwrap();
    let mut prefilled = 0;
    for i in 1.. {
        let (plan, events) = step(&mut s, i as f64, |_| 5);
        let decode = plan
            .seqs
            .iter()
            .find(|p| p.id == 1)
            .expect("the decode ran");
        assert_eq!(
            (decode.tokens.len(), decode.logits),
            (1, LogitsWanted::Last)
        );
        assert_eq!(plan.seqs[0].id, 1, "decodes come first");
        let chunk = plan.seqs.iter().find(|p| p.id == 2).unwrap();
        assert_eq!(chunk.start_pos, prefilled);
        assert_eq!(chunk.tokens.len(), 511.min(2000 - prefilled));
        assert_eq!(plan.num_tokens, 1 + chunk.tokens.len());
        prefilled += chunk.tokens.len();
        if prefilled < 2000 {
            assert_eq!(chunk.logits, LogitsWanted::None);
            assert!(!events
                .iter()
                .any(|e| matches!(e, SeqEvent::Token { id: 2, .. })));
        } else {
            assert_eq!(chunk.logits, LogitsWanted::Last);
            assert!(events.contains(&SeqEvent::Token {
                id: 2,
                token: 5,
                first: true
            }));
            assert_eq!(i, 4);
            break;
        }
    }
}

#[test]
fn prefix_cache_hits_skip_cached_tokens_and_are_reported() {
    let mut s = SchedulerCore::new(config()).unwrap();
    let shared = toks(33, 10);
    s.add_request(request(1, [shared.clone(), vec![1]].concat(), 2))
        .unwrap();
    let ev = run_to_end(&mut s, 50, |_| 7);
    assert!(matches!(
        finished(&ev, 1),
        SeqEvent::Finished {
            cached_tokens: 0,
            ..
        }
    ));
    s.add_request(request(2, [shared, vec![2, 3]].concat(), 2))
        .unwrap();
    let (plan, _) = step(&mut s, 0.0, |_| 7);
    assert_eq!(plan.seqs[0].start_pos, 32, "eight full blocks reused");
    assert_eq!(plan.seqs[0].tokens, vec![42, 2, 3]);
    let ev = run_to_end(&mut s, 50, |_| 7);
    assert_eq!(
        finished(&ev, 2),
        SeqEvent::Finished {
            id: 2,
            reason: FinishReason::Length,
            prompt_tokens: 35,
            output_tokens: 2,
            cached_tokens: 32
        }
    );
    let st = s.stats();
    assert_eq!(
        (st.prefix_cache_queries, st.prefix_cache_hits),
        (34 + 35, 32)
    );
    assert_eq!(st.kv_usage_ratio, 0.0);
}

#[test]
fn preempted_sequence_keeps_its_prefix_blocks() {
    // 7 blocks of 4; each sequence grows to 8 + 12 - 1 = 19 slots, 5 blocks. When request 1
    // needs its fourth block, request 2 (admitted last) is preempted with 12 tokens computed:
    // three full blocks go to the cache, tail first. Request 1 later evicts that tail block
    // for its fifth, so request 2 restarts with its first two blocks (8 tokens) cached.
    let mut s = SchedulerCore::new(SchedulerConfig {
        num_blocks: 7,
        ..config()
    })
    .unwrap();
    s.add_request(request(1, toks(8, 100), 12)).unwrap();
    s.add_request(request(2, toks(8, 200), 12)).unwrap();
    let mut events = Vec::new();
    let mut resumed_at = None;
    for i in 0..100 {
        let (plan, ev) = step(&mut s, i as f64, |_| 9);
        events.extend(ev);
        if !plan.preempted.is_empty() {
            assert_eq!(plan.preempted, vec![2], "FCFS preempts the most recent");
            assert!(plan.seqs.iter().all(|p| p.id == 1));
        }
        if s.stats().num_preemptions > 0 && resumed_at.is_none() {
            if let Some(p) = plan.seqs.iter().find(|p| p.id == 2) {
                resumed_at = Some(p.start_pos);
            }
        }
        if !s.has_unfinished() {
            break;
        }
    }
    assert_eq!(s.stats().num_preemptions, 1);
    assert_eq!(resumed_at, Some(8), "the restart skipped its cached prefix");
    for id in [1, 2] {
        assert!(matches!(
            finished(&events, id),
            SeqEvent::Finished {
                reason: FinishReason::Length,
                output_tokens: 12,
                ..
            }
        ));
        let firsts = events
            .iter()
            .filter(|e| matches!(e, SeqEvent::Token { id: i, first: true, .. } if *i == id));
        assert_eq!(firsts.count(), 1, "a resumed sequence has one first token");
    }
    assert_eq!(s.block_manager().num_free_blocks(), 7);
}

#[test]
fn abort_frees_blocks_at_once() {
    let mut s = SchedulerCore::new(config()).unwrap();
    s.add_request(request(1, toks(20, 1), 50)).unwrap();
    s.add_request(request(2, toks(20, 1), 50)).unwrap();
    step(&mut s, 0.0, |_| 3);
    assert!(s.stats().kv_usage_ratio > 0.0);
    let plan = s.schedule(1.0);
    let ev = s.abort(1).unwrap();
    assert!(matches!(
        ev,
        SeqEvent::Finished {
            id: 1,
            reason: FinishReason::Abort,
            output_tokens: 1,
            ..
        }
    ));
    s.check_invariants().unwrap();
    // The plan still names request 1: update skips it.
    let sampled: Vec<_> = plan.seqs.iter().map(|_| Some(3)).collect();
    let ev = s.update(&plan, &sampled, 1.0).unwrap();
    assert!(ev
        .iter()
        .all(|e| matches!(e, SeqEvent::Token { id: 2, .. })));
    assert!(s.abort(2).is_some());
    assert_eq!(s.abort(2), None);
    assert_eq!(s.stats().kv_usage_ratio, 0.0);
    // A waiting request aborts too.
    s.add_request(request(3, toks(5, 1), 5)).unwrap();
    assert!(matches!(
        s.abort(3),
        Some(SeqEvent::Finished {
            cached_tokens: 0,
            ..
        })
    ));
    assert!(!s.has_unfinished());
    s.check_invariants().unwrap();
}

#[test]
fn ignore_eos_and_min_tokens_decide_when_eos_stops() {
    let mut s = SchedulerCore::new(config()).unwrap();
    s.add_request(request(1, toks(3, 1), 5)).unwrap();
    s.add_request(edited(request(2, toks(3, 1), 5), |r| r.ignore_eos = true))
        .unwrap();
    s.add_request(edited(request(3, toks(3, 1), 5), |r| r.min_tokens = 3))
        .unwrap();
    s.add_request(edited(request(4, toks(3, 1), 5), |r| {
        r.ignore_eos = true;
        r.stop_token_ids = vec![EOS];
    }))
    .unwrap();
    let ev = run_to_end(&mut s, 20, |_| EOS);
    let out = |id| match finished(&ev, id) {
        SeqEvent::Finished {
            reason,
            output_tokens,
            ..
        } => (reason, output_tokens),
        _ => unreachable!(),
    };
    assert_eq!(out(1), (FinishReason::Stop, 1));
    assert_eq!(out(2), (FinishReason::Length, 5));
    assert_eq!(out(3), (FinishReason::Stop, 4));
    assert_eq!(
        out(4),
        (FinishReason::Stop, 1),
        "stop_token_ids hold despite ignore_eos"
    );
    assert_eq!(tokens_of(&ev, 1), vec![EOS], "the stop token is reported");
}

#[test]
fn max_model_len_finishes_with_length() {
    let cfg = SchedulerConfig {
        max_model_len: 20,
        ..config()
    };
    let mut s = SchedulerCore::new(cfg).unwrap();
    s.add_request(request(1, toks(15, 1), 5)).unwrap();
    let ev = run_to_end(&mut s, 20, |_| 4);
    assert!(matches!(
        finished(&ev, 1),
        SeqEvent::Finished {
            reason: FinishReason::Length,
            output_tokens: 5,
            ..
        }
    ));
    assert_eq!(
        s.add_request(request(2, toks(15, 1), 6)),
        Err(SchedulerError::ContextTooLong {
            id: 2,
            prompt_tokens: 15,
            max_tokens: 6,
            max_model_len: 20
        })
    );
}

#[test]
fn requests_are_validated_when_added() {
    let mut s = SchedulerCore::new(SchedulerConfig {
        num_blocks: 4,
        ..config()
    })
    .unwrap();
    assert_eq!(
        s.add_request(request(1, vec![], 4)),
        Err(SchedulerError::EmptyPrompt(1))
    );
    assert!(matches!(
        s.add_request(request(1, vec![1], 0)),
        Err(SchedulerError::InvalidRequest { .. })
    ));
    let r = edited(request(1, vec![1], 4), |r| r.min_tokens = 5);
    assert!(matches!(
        s.add_request(r),
        Err(SchedulerError::InvalidRequest { .. })
    ));
    // 16 slots: 10 + 7 tokens need 16 (the last sampled token has no slot), 10 + 8 need 17.
    s.add_request(request(1, toks(10, 1), 7)).unwrap();
    let e = s.add_request(request(2, toks(10, 1), 8)).unwrap_err();
    assert_eq!(
        e,
        SchedulerError::ExceedsKvCapacity {
            id: 2,
            needed_blocks: 5,
            num_blocks: 4
        }
    );
    assert_eq!(e.error_type(), "kv_capacity_exceeded");
    assert_eq!(
        s.add_request(request(1, vec![1], 1)),
        Err(SchedulerError::DuplicateRequest(1))
    );
    s.check_invariants().unwrap();
}

#[test]
fn configs_that_cannot_progress_are_refused() {
    let bad = [
        SchedulerConfig {
            max_num_seqs: 0,
            ..config()
        },
        SchedulerConfig {
            max_num_batched_tokens: 4,
            ..config()
        },
        SchedulerConfig {
            chunked_prefill: false,
            ..config()
        },
        SchedulerConfig {
            block_size: 0,
            ..config()
        },
        SchedulerConfig {
            num_blocks: 0,
            ..config()
        },
    ];
    for cfg in bad {
        assert!(SchedulerCore::new(cfg).is_err());
    }
    SchedulerConfig::default().validate().unwrap();
}

#[test]
fn running_sequences_are_capped_at_max_num_seqs() {
    let mut s = SchedulerCore::new(SchedulerConfig {
        max_num_seqs: 2,
        ..config()
    })
    .unwrap();
    for id in 0..5 {
        s.add_request(request(id, toks(3, 1), 3)).unwrap();
    }
    let (plan, _) = step(&mut s, 0.0, |_| 1);
    assert_eq!(
        plan.seqs.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!((s.stats().num_running, s.stats().num_waiting), (2, 3));
    let ev = run_to_end(&mut s, 50, |_| 1);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, SeqEvent::Finished { .. }))
            .count(),
        5
    );
}

#[test]
fn without_chunked_prefill_a_prompt_runs_whole() {
    let cfg = SchedulerConfig {
        chunked_prefill: false,
        max_model_len: 64,
        ..config()
    };
    let mut s = SchedulerCore::new(cfg).unwrap();
    s.add_request(request(1, toks(40, 1), 2)).unwrap();
    s.add_request(request(2, toks(40, 100), 2)).unwrap();
    let (plan, _) = step(&mut s, 0.0, |_| 1);
    assert_eq!(
        plan.seqs.len(),
        1,
        "the second prompt waits instead of being split"
    );
    assert_eq!(plan.seqs[0].tokens.len(), 40);
    let (plan, _) = step(&mut s, 1.0, |_| 1);
    assert_eq!(plan.num_tokens, 1 + 40);
}

#[test]
fn update_refuses_stale_or_mismatched_results() {
    let mut s = SchedulerCore::new(config()).unwrap();
    s.add_request(request(1, toks(3, 1), 3)).unwrap();
    let old = s.schedule(0.0);
    let plan = s.schedule(0.0);
    assert_eq!(
        s.update(&old, &[Some(1)], 0.0),
        Err(SchedulerError::StalePlan { plan: old.step })
    );
    assert!(matches!(
        s.update(&plan, &[], 0.0),
        Err(SchedulerError::PlanMismatch(_))
    ));
    assert!(matches!(
        s.update(&plan, &[None], 0.0),
        Err(SchedulerError::PlanMismatch(_))
    ));
    s.update(&plan, &[Some(1)], 0.0).unwrap();
    assert!(matches!(
        s.update(&plan, &[Some(1)], 0.0),
        Err(SchedulerError::StalePlan { .. })
    ));
    s.check_invariants().unwrap();
}

#[test]
fn an_empty_scheduler_plans_nothing() {
    let mut s = SchedulerCore::new(config()).unwrap();
    let (plan, ev) = step(&mut s, 0.0, |_| 1);
    assert!(plan.is_empty() && ev.is_empty());
}

#[test]
fn a_request_parked_after_its_first_token_waits_for_its_move_and_moves_once() {
    let mut s = SchedulerCore::new(config()).unwrap();
    let parked = |r: &mut brisk_scheduler::RequestSpec| r.park_after_first_token = true;
    s.add_request(edited(request(1, toks(10, 1), 5), parked))
        .unwrap();
    // Done at its first token: nothing to park.
    s.add_request(edited(request(2, toks(6, 50), 1), parked))
        .unwrap();
    s.add_request(request(3, toks(6, 80), 5)).unwrap();
    let (_, events) = step(&mut s, 0.0, |_| 7);
    assert!(events.contains(&SeqEvent::Token {
        id: 1,
        token: 7,
        first: true
    }));
    assert!(events
        .iter()
        .any(|e| matches!(e, SeqEvent::Finished { id: 2, .. })));
    // Request 1 makes no token while parked; the others go on.
    for t in 1..4 {
        let (plan, _) = step(&mut s, f64::from(t), |_| 7);
        assert!(plan.seqs.iter().all(|p| p.id != 1), "{plan:?}");
        assert!(plan.seqs.iter().any(|p| p.id == 3));
    }
    let export = s.export(1, 4.0).unwrap();
    assert_eq!((export.num_computed, export.output), (10, vec![7]));
    let again = s.export(1, 4.0).unwrap_err().to_string();
    assert!(again.contains("already moving"), "{again}");
    // The move failed: it decodes here again.
    assert!(s.resume(1));
    let (plan, _) = step(&mut s, 5.0, |_| 7);
    assert!(plan.seqs.iter().any(|p| p.id == 1 && p.tokens.len() == 1));
    assert_eq!(s.stats().prompt_tokens_computed, 16 + 6);
}
