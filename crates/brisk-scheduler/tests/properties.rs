//! Property tests: random arrivals (shared prefixes plus random suffixes), random outputs with
//! stop tokens, random aborts and tight pools that force preemptions. After every step the
//! invariants hold; every request finishes within a step bound; at the end the pool is free.
//! Both policies: FCFS, and the SLO policy with random objectives and priority classes (time
//! is the step index, and the latency model's costs are in the same unit), each with or
//! without fair share between random clients.

mod common;

use std::collections::HashMap;

use brisk_scheduler::{
    FairShareConfig, FinishReason, LatencyCoefficients, LatencyModel, LengthPrediction,
    PolicyChoice, Priority, RequestId, RequestSlo, RequestSpec, SchedRequest, SchedulerConfig,
    SchedulerCore, SchedulerStats, SeqEvent, SpeculativeConfig,
};
use brisk_types::{LogitsWanted, TokenId};
use common::EOS;
use proptest::prelude::*;

const STOP: TokenId = 1;
const MAX_MODEL_LEN: usize = 64;

#[derive(Clone, Debug)]
struct Arrival {
    at_step: usize,
    prefix: usize,
    suffix: Vec<TokenId>,
    max_tokens: usize,
    min_tokens: usize,
    ignore_eos: bool,
    abort_at: Option<usize>,
    slo: RequestSlo,
    batch: bool,
    client: Option<u8>,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0..30usize,
        0..3usize,
        prop::collection::vec(2..6u32, 1..20),
        1..20usize,
        0..3usize,
        any::<bool>(),
        prop::option::weighted(0.2, 0..80usize),
        (
            0.5..60.0f64,
            0.2..4.0f64,
            prop::bool::weighted(0.3),
            prop::option::of(0..3u8),
        ),
    )
        .prop_map(
            |(
                at_step,
                prefix,
                suffix,
                max_tokens,
                min,
                ignore_eos,
                abort_at,
                (ttft, tpot, batch, client),
            )| {
                Arrival {
                    at_step,
                    prefix,
                    suffix,
                    max_tokens,
                    min_tokens: min.min(max_tokens),
                    ignore_eos,
                    abort_at,
                    slo: RequestSlo { ttft, tpot },
                    batch,
                    client,
                }
            },
        )
}

#[derive(Clone, Debug)]
struct Setup {
    block_size: usize,
    spare_blocks: usize,
    max_num_seqs: usize,
    extra_budget: usize,
    chunked: bool,
    caching: bool,
    seed: u64,
    slo_policy: bool,
    fair_quantum: Option<usize>,
    predict_lengths: bool,
    /// Decodes verify up to this many prompt-lookup drafts, always (no latency model).
    speculate: Option<usize>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1..6usize,
        0..8usize,
        1..6usize,
        0..40usize,
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
        any::<bool>(),
        prop::option::of(1..40usize),
        any::<bool>(),
        prop::option::of(1..5usize),
    )
        .prop_map(
            |(
                block_size,
                spare_blocks,
                max_num_seqs,
                extra_budget,
                chunked,
                caching,
                seed,
                slo,
                fair_quantum,
                predict_lengths,
                speculate,
            )| {
                Setup {
                    block_size,
                    spare_blocks,
                    max_num_seqs,
                    extra_budget,
                    chunked,
                    caching,
                    seed,
                    slo_policy: slo,
                    fair_quantum,
                    predict_lengths,
                    speculate,
                }
            },
        )
}

/// A deterministic fake sampler: tokens in 0..8, so EOS and STOP come up now and then.
fn sample(seed: u64, id: RequestId, n: usize) -> TokenId {
    let mut x = seed
        ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (n as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    ((x >> 29) % 8) as TokenId
}

/// Runs a whole scenario; returns every event in order and the scheduler's final counters.
fn simulate(
    setup: &Setup,
    arrivals: &[Arrival],
) -> Result<(Vec<SeqEvent>, SchedulerStats), TestCaseError> {
    let prefixes: [Vec<TokenId>; 3] = [vec![], (10..19).collect(), (20..37).collect()];
    let reqs: Vec<SchedRequest> = arrivals
        .iter()
        .enumerate()
        .map(|(i, a)| SchedRequest {
            id: i as RequestId,
            arrival: a.at_step as f64,
            spec: RequestSpec {
                prompt: [prefixes[a.prefix].clone(), a.suffix.clone()].concat(),
                max_tokens: a.max_tokens,
                min_tokens: a.min_tokens,
                stop_token_ids: if i % 3 == 0 { vec![STOP] } else { vec![] },
                ignore_eos: a.ignore_eos,
                slo: Some(a.slo),
                priority: if a.batch {
                    Priority::Batch
                } else {
                    Priority::Interactive
                },
                client: a.client.map(|c| format!("client-{c}")),
                speculative: i % 4 != 0,
                park_after_first_token: false,
            },
        })
        .collect();
    // The tightest pool every request still fits alone, plus a few blocks.
    let bs = setup.block_size;
    let largest = reqs
        .iter()
        .map(|r| (r.prompt.len() + r.max_tokens - 1).div_ceil(bs))
        .max()
        .unwrap();
    let budget =
        setup.max_num_seqs + setup.extra_budget + if setup.chunked { 0 } else { MAX_MODEL_LEN };
    let cfg = SchedulerConfig {
        max_num_seqs: setup.max_num_seqs,
        max_num_batched_tokens: budget,
        max_model_len: MAX_MODEL_LEN,
        block_size: bs,
        num_blocks: largest + setup.spare_blocks,
        enable_prefix_caching: setup.caching,
        chunked_prefill: setup.chunked,
        eos_token_ids: vec![EOS],
        cache_salt: 3,
        fair_share: setup.fair_quantum.map(FairShareConfig::with_quantum),
        // From the first finished request on, so that short runs exercise predictions.
        length_prediction: setup
            .predict_lengths
            .then_some(LengthPrediction { min_examples: 1 }),
        speculative: setup
            .speculate
            .map(|k| SpeculativeConfig::prompt_lookup(k, 1, 2)),
    };
    // In step units: a step costs 0.3 plus 0.05 per prompt token and 0.1 per decode.
    let policy = if setup.slo_policy {
        PolicyChoice::Slo {
            model: LatencyModel::from_coefficients(LatencyCoefficients {
                base_s: 0.3,
                per_prefill_token_s: 0.05,
                per_decode_seq_s: 0.1,
                ..LatencyCoefficients::default()
            }),
            reject_unattainable: false,
        }
    } else {
        PolicyChoice::Fcfs
    };
    let mut s = SchedulerCore::with_policy(cfg.clone(), policy.build(&cfg)).unwrap();
    let mut events = Vec::new();
    let mut outputs: HashMap<RequestId, usize> = HashMap::new();
    let total: usize = arrivals.len();
    let mut added = 0;
    for t in 0..3000usize {
        for (i, a) in arrivals.iter().enumerate() {
            if a.at_step == t {
                s.add_request(reqs[i].clone()).unwrap();
                added += 1;
            }
            if a.abort_at == Some(t) {
                events.extend(s.abort(i as RequestId));
            }
        }
        let plan = s.schedule(t as f64);
        s.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert!(plan.num_tokens <= budget);
        prop_assert!(s.stats().num_running <= cfg.max_num_seqs);
        // Progress: something runs whenever something is queued.
        prop_assert_eq!(
            plan.is_empty(),
            !s.has_unfinished() && plan.preempted.is_empty()
        );
        // As the engine samples: one token, or rows in order while they match the drafts.
        let kept: Vec<Vec<TokenId>> = plan
            .seqs
            .iter()
            .map(|p| {
                let rows = match p.logits {
                    LogitsWanted::None => 0,
                    LogitsWanted::Last => 1,
                    LogitsWanted::All => p.num_drafts + 1,
                };
                let mut kept = Vec::new();
                for row in 0..rows {
                    let n = outputs.entry(p.id).or_default();
                    *n += 1;
                    let token = sample(setup.seed, p.id, *n);
                    kept.push(token);
                    if p.drafts().get(row) != Some(&token) {
                        break;
                    }
                }
                kept
            })
            .collect();
        for p in &plan.seqs {
            prop_assert!(p.num_drafts == 0 || setup.speculate.is_some());
            prop_assert!(p.num_drafts <= setup.speculate.unwrap_or(0));
        }
        events.extend(s.update_verified(&plan, &kept, t as f64).unwrap());
        s.check_invariants().map_err(TestCaseError::fail)?;
        if added == total && !s.has_unfinished() {
            let kv = s.block_manager();
            prop_assert_eq!(kv.num_free_blocks(), cfg.num_blocks);
            prop_assert_eq!(s.stats().kv_usage_ratio, 0.0);
            prop_assert_eq!(kv.num_cached_free_blocks(), kv.num_cached_blocks());
            prop_assert_eq!(kv.num_seqs(), 0);
            check_outcomes(&reqs, &events)?;
            return Ok((events, s.stats()));
        }
    }
    Err(TestCaseError::fail(
        "the run did not terminate within 3000 steps",
    ))
}

/// Every request finished exactly once, for a reason its tokens justify.
fn check_outcomes(reqs: &[SchedRequest], events: &[SeqEvent]) -> Result<(), TestCaseError> {
    for r in reqs {
        let toks: Vec<TokenId> = events
            .iter()
            .filter_map(|e| match e {
                SeqEvent::Token { id, token, .. } if *id == r.id => Some(*token),
                _ => None,
            })
            .collect();
        let firsts = events
            .iter()
            .filter(|e| matches!(e, SeqEvent::Token { id, first: true, .. } if *id == r.id))
            .count();
        prop_assert_eq!(firsts, usize::from(!toks.is_empty()));
        let fins: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                SeqEvent::Finished {
                    id,
                    reason,
                    prompt_tokens,
                    output_tokens,
                    ..
                } if *id == r.id => Some((*reason, *prompt_tokens, *output_tokens)),
                _ => None,
            })
            .collect();
        prop_assert_eq!(
            fins.len(),
            1,
            "request {} finished {} times",
            r.id,
            fins.len()
        );
        let (reason, prompt_tokens, output_tokens) = fins[0];
        prop_assert_eq!(prompt_tokens, r.prompt.len());
        prop_assert_eq!(output_tokens, toks.len());
        let is_stop = |t: &TokenId| (*t == EOS && !r.ignore_eos) || r.stop_token_ids.contains(t);
        match reason {
            FinishReason::Stop => {
                prop_assert!(is_stop(toks.last().unwrap()) && toks.len() > r.min_tokens)
            }
            FinishReason::Length => prop_assert_eq!(toks.len(), r.max_tokens),
            FinishReason::Abort => prop_assert!(toks.len() <= r.max_tokens),
        }
        // No earlier token should have stopped it.
        for (k, t) in toks[..toks.len().saturating_sub(1)].iter().enumerate() {
            prop_assert!(
                !(is_stop(t) && k + 1 > r.min_tokens),
                "request {} ran past a stop",
                r.id
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_workloads_keep_invariants_and_finish(
        setup in setup(),
        arrivals in prop::collection::vec(arrival(), 1..14),
    ) {
        simulate(&setup, &arrivals)?;
    }

    #[test]
    fn the_same_inputs_give_the_same_events(
        setup in setup(),
        arrivals in prop::collection::vec(arrival(), 1..8),
    ) {
        let a = simulate(&setup, &arrivals)?;
        let b = simulate(&setup, &arrivals)?;
        prop_assert_eq!(a, b);
    }

    /// Speculation changes when tokens come, never which: each request's tokens are plain
    /// decoding's (the fake sampler draws by output position, as a seeded sampler would),
    /// all of them when nothing aborts it.
    #[test]
    fn speculation_keeps_every_request_s_tokens(
        setup in setup(),
        arrivals in prop::collection::vec(arrival(), 1..10),
        k in 1..5usize,
    ) {
        let plain = simulate(&Setup { speculate: None, ..setup.clone() }, &arrivals)?.0;
        let spec = simulate(&Setup { speculate: Some(k), ..setup }, &arrivals)?.0;
        for (i, a) in arrivals.iter().enumerate() {
            let tokens = |events: &[SeqEvent]| -> Vec<TokenId> {
                events.iter().filter_map(|e| match e {
                    SeqEvent::Token { id, token, .. } if *id == i as RequestId => Some(*token),
                    _ => None,
                }).collect()
            };
            let (p, s) = (tokens(&plain), tokens(&spec));
            let common = p.len().min(s.len());
            prop_assert_eq!(&p[..common], &s[..common]);
            if a.abort_at.is_none() {
                prop_assert_eq!(p, s);
            }
        }
    }
}

/// `n` alike requests arriving one per step: shared prefix `prefix`, then `suffix`, 19 tokens
/// past EOS, a loose objective.
fn one_per_step(n: usize, prefix: usize, suffix: &[TokenId]) -> Vec<Arrival> {
    (0..n)
        .map(|i| Arrival {
            at_step: i,
            prefix,
            suffix: suffix.to_vec(),
            max_tokens: 19,
            min_tokens: 0,
            ignore_eos: true,
            abort_at: None,
            slo: RequestSlo {
                ttft: 10.0,
                tpot: 1.0,
            },
            batch: false,
            client: None,
        })
        .collect()
}

#[test]
fn tight_pools_do_preempt() {
    // A sanity check that the generator's tight pools exercise preemption at all.
    let setup = Setup {
        block_size: 2,
        spare_blocks: 0,
        max_num_seqs: 5,
        extra_budget: 10,
        chunked: true,
        caching: true,
        seed: 1,
        slo_policy: false,
        fair_quantum: None,
        predict_lengths: false,
        speculate: None,
    };
    let arrivals = one_per_step(5, 1, &[2, 3]);
    let (events, stats) = simulate(&setup, &arrivals).unwrap();
    assert!(stats.num_preemptions > 0);
    let finished = events
        .iter()
        .filter(|e| matches!(e, SeqEvent::Finished { .. }));
    assert_eq!(finished.count(), 5);
}

#[test]
fn repetitive_outputs_verify_drafts_and_give_back_rejected_slots() {
    // A sanity check that the generator's scenarios exercise verification at all: the fake
    // sampler's tokens (0..8) repeat, so prompt lookup finds drafts, some right, some wrong.
    let setup = Setup {
        block_size: 2,
        spare_blocks: 2,
        max_num_seqs: 3,
        extra_budget: 20,
        chunked: true,
        caching: true,
        seed: 7,
        slo_policy: false,
        fair_quantum: None,
        predict_lengths: false,
        speculate: Some(3),
    };
    let arrivals = one_per_step(3, 0, &[2, 3, 4, 5]);
    let (_, stats) = simulate(&setup, &arrivals).unwrap();
    let d = stats.drafts;
    assert!(
        d.verifications > 0 && d.accepted > 0 && d.accepted < d.drafted,
        "{d:?}"
    );
    assert_eq!(stats.acceptance_tenths.iter().sum::<u64>(), d.verifications);
}
