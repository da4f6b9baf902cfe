//! Speculative decoding through the engine core on a tiny generated model (real CPU backend,
//! real KV blocks): outputs identical to plain decoding, greedy and seeded; sampled tokens
//! distributed as plain decoding's (a two-sample chi-square test over disjoint seeds); no
//! block leaked by rejected drafts; and the latency model switching speculation off for a
//! compute-bound batch.

mod common;

use std::collections::HashMap;

use brisk_backend::CpuBackend;
use brisk_engine::drafter::ModelDrafter;
use brisk_engine::{EngineCore, EngineRequest, Output, RequestSpec};
use brisk_sampling::SamplingParams;
use brisk_scheduler::{
    LatencyCoefficients, LatencyModel, SchedulerConfig, SchedulerCore, SpeculativeConfig,
};
use brisk_types::{Backend, TokenId};
use common::{tiny_backend, Frozen};

const NUM_BLOCKS: usize = 256;

/// The served model's seed: a draft model of this seed is its twin.
const SERVED: u64 = 11;

fn speculative(latency: Option<LatencyModel>) -> SpeculativeConfig {
    SpeculativeConfig {
        latency,
        ..SpeculativeConfig::prompt_lookup(4, 1, 3)
    }
}

fn core(dir: &std::path::Path, spec: Option<SpeculativeConfig>) -> EngineCore<CpuBackend> {
    core_drafting(dir, spec, None)
}

/// A core whose drafts, if `draft` names a tiny model's seed, come from that model.
fn core_drafting(
    dir: &std::path::Path,
    spec: Option<SpeculativeConfig>,
    draft: Option<u64>,
) -> EngineCore<CpuBackend> {
    let backend = tiny_backend(dir, SERVED);
    let kv = backend.allocate_kv(NUM_BLOCKS, 4).unwrap();
    let cfg = SchedulerConfig {
        max_num_seqs: 16,
        max_num_batched_tokens: 512,
        max_model_len: 256,
        block_size: 4,
        num_blocks: NUM_BLOCKS,
        eos_token_ids: Vec::new(),
        speculative: spec,
        ..SchedulerConfig::default()
    };
    let mut scheduler = SchedulerCore::new(cfg).unwrap();
    if let Some(seed) = draft {
        let latency = LatencyModel::from_coefficients(LatencyCoefficients::default());
        let drafter = ModelDrafter::new(tiny_backend(dir, seed), 4096, latency).unwrap();
        scheduler.set_drafter(Box::new(drafter));
    }
    EngineCore::new(backend, kv, scheduler, 3)
}

/// A prompt that repeats itself, so prompt lookup has something to propose.
fn request(i: u64, sampling: SamplingParams, max_tokens: usize) -> EngineRequest {
    let base: Vec<TokenId> = (0..6)
        .map(|t| ((t * 7 + i * 5) % 90 + 1) as TokenId)
        .collect();
    let mut spec = RequestSpec::new([base.clone(), base.clone(), base].concat(), max_tokens);
    spec.ignore_eos = true;
    EngineRequest {
        sampling,
        ..EngineRequest::greedy(spec)
    }
}

/// Runs every request to its end; each one's tokens.
fn run_all(core: &mut EngineCore<CpuBackend>) -> HashMap<u64, Vec<TokenId>> {
    let mut tokens: HashMap<u64, Vec<TokenId>> = HashMap::new();
    while core.has_unfinished() {
        let report = core.step(0.0, &Frozen).expect("work to do");
        for output in report.outputs {
            match output {
                Output::Token { id, token } => tokens.entry(id).or_default().push(token.token),
                Output::Failed { message, .. } => panic!("{message}"),
                _ => {}
            }
        }
    }
    tokens
}

fn sampled(seed: u64) -> SamplingParams {
    // The tiny model's logits are far apart: a high temperature makes every draw count.
    SamplingParams {
        temperature: 8.0,
        seed: Some(seed),
        ..SamplingParams::greedy()
    }
}

/// `n` requests of `max_tokens`, even ones greedy, odd ones sampled with seed `seeds + i`.
fn greedy_and_seeded(n: u64, seeds: u64, max_tokens: usize) -> Vec<EngineRequest> {
    (0..n)
        .map(|i| {
            let sampling = if i % 2 == 0 {
                SamplingParams::greedy()
            } else {
                sampled(seeds + i)
            };
            request(i, sampling, max_tokens)
        })
        .collect()
}

fn outputs(
    dir: &std::path::Path,
    spec: Option<SpeculativeConfig>,
    requests: &[EngineRequest],
) -> (HashMap<u64, Vec<TokenId>>, EngineCore<CpuBackend>) {
    let mut core = core(dir, spec);
    for (i, r) in requests.iter().enumerate() {
        core.add(i as u64, r.clone(), 0.0, 0.0).unwrap();
    }
    (run_all(&mut core), core)
}

#[test]
fn speculative_outputs_are_plain_decoding_s_greedy_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let requests = greedy_and_seeded(6, 100, 40);
    let (plain, _) = outputs(dir.path(), None, &requests);
    let (spec, core) = outputs(dir.path(), Some(speculative(None)), &requests);
    assert_eq!(plain, spec);
    assert!(plain.values().all(|t| t.len() == 40));
    let stats = core.stats();
    let d = stats.drafts;
    assert!(d.verifications > 0 && d.accepted > 0, "{d:?}");
    // Every block is free again: rejected drafts' slots were given back.
    let kv = core.stats();
    assert_eq!(kv.num_running, 0);
    assert_eq!(kv.kv_usage_ratio, 0.0);
}

#[test]
fn a_request_that_opts_out_never_verifies_drafts() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = request(1, SamplingParams::greedy(), 40);
    r.spec.speculative = false;
    let (_, core) = outputs(dir.path(), Some(speculative(None)), &[r]);
    assert_eq!(core.stats().drafts.verifications, 0);
}

/// Chi-square statistic of two samples over the same categories.
fn chi_square(a: &HashMap<TokenId, f64>, b: &HashMap<TokenId, f64>) -> (f64, usize) {
    let (na, nb): (f64, f64) = (a.values().sum(), b.values().sum());
    let mut keys: Vec<&TokenId> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut stat = 0.0;
    for k in &keys {
        let (x, y) = (
            a.get(k).copied().unwrap_or(0.0),
            b.get(k).copied().unwrap_or(0.0),
        );
        let total = x + y;
        let (ea, eb) = (total * na / (na + nb), total * nb / (na + nb));
        stat += (x - ea).powi(2) / ea + (y - eb).powi(2) / eb;
    }
    (stat, keys.len() - 1)
}

/// Sampled outputs with speculation follow plain decoding's distribution: the tokens at the
/// positions where drafts are verified, over disjoint seeds, pass a two-sample chi-square
/// test (p > 0.001); and at least some of those positions were reached by verified drafts.
#[test]
fn sampled_tokens_are_distributed_as_plain_decoding() {
    let dir = tempfile::tempdir().unwrap();
    const RUNS: u64 = 240;
    let histogram = |spec: Option<SpeculativeConfig>, seeds: std::ops::Range<u64>| {
        let requests: Vec<EngineRequest> = seeds.map(|s| request(0, sampled(s), 6)).collect();
        let mut counts: Vec<HashMap<TokenId, f64>> = vec![HashMap::new(); 6];
        let mut verified = 0;
        for chunk in requests.chunks(16) {
            let (out, core) = outputs(dir.path(), spec.clone(), chunk);
            verified += core.stats().drafts.verifications;
            for tokens in out.values() {
                for (pos, t) in tokens.iter().enumerate() {
                    *counts[pos].entry(*t).or_default() += 1.0;
                }
            }
        }
        (counts, verified)
    };
    let (plain, _) = histogram(None, 0..RUNS);
    let (spec, verified) = histogram(Some(speculative(None)), RUNS..2 * RUNS);
    assert!(verified > 0);
    for pos in 1..6 {
        let (stat, dof) = chi_square(&plain[pos], &spec[pos]);
        // Chi-square critical value at p = 0.001, Wilson–Hilferty approximation.
        let k = dof.max(1) as f64;
        let critical = k * (1.0 - 2.0 / (9.0 * k) + 3.09 * (2.0 / (9.0 * k)).sqrt()).powi(3);
        assert!(
            stat < critical,
            "position {pos}: chi2 {stat:.1} with {dof} dof"
        );
    }
}

/// The latency model decides: with a step that is mostly fixed cost one stream verifies
/// drafts; when each token costs as much as a decode and sixteen streams share the step,
/// nothing is verified.
#[test]
fn speculation_switches_itself_off_for_a_compute_bound_batch() {
    let dir = tempfile::tempdir().unwrap();
    let model = |base_s, per_token_s| {
        LatencyModel::from_coefficients(LatencyCoefficients {
            base_s,
            per_prefill_token_s: per_token_s,
            per_decode_seq_s: per_token_s,
            ..LatencyCoefficients::default()
        })
    };
    let memory_bound = speculative(Some(model(0.010, 0.0005)));
    let (_, core) = outputs(
        dir.path(),
        Some(memory_bound),
        &[request(0, SamplingParams::greedy(), 40)],
    );
    assert!(core.stats().drafts.verifications > 0);
    let compute_bound = speculative(Some(model(0.001, 0.001)));
    let sixteen: Vec<EngineRequest> = (0..16)
        .map(|i| request(i, SamplingParams::greedy(), 40))
        .collect();
    let (_, core) = outputs(dir.path(), Some(compute_bound), &sixteen);
    assert_eq!(core.stats().drafts.verifications, 0);
}

/// A draft model proposes instead of prompt lookup: the target itself as its own draft model
/// proposes what the target then samples (greedy: nearly every draft accepted), another tiny
/// model proposes poorly; either way the outputs are plain decoding's.
#[test]
fn a_draft_model_s_drafts_leave_outputs_unchanged_and_a_twin_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let requests = greedy_and_seeded(4, 200, 30);
    let (plain, _) = outputs(dir.path(), None, &requests);
    let drafting = SpeculativeConfig {
        draft_model: Some(dir.path().join("draft")),
        ..speculative(None)
    };
    // The served model is generated with seed 11: a draft model of seed 11 is its twin.
    // Greedy requests accept nearly all of a twin's drafts, sampled ones (temperature 8) few.
    for (seed, least_acceptance) in [(SERVED, 0.35), (SERVED + 1, 0.0)] {
        let mut core = core_drafting(dir.path(), Some(drafting.clone()), Some(seed));
        for (i, r) in requests.iter().enumerate() {
            core.add(i as u64, r.clone(), 0.0, 0.0).unwrap();
        }
        let spec = run_all(&mut core);
        assert_eq!(plain, spec, "draft model {seed}");
        let d = core.stats().drafts;
        assert!(d.verifications > 0, "{d:?}");
        let rate = d.accepted as f64 / d.drafted as f64;
        assert!(rate >= least_acceptance, "draft model {seed}: {d:?}");
        assert_eq!(core.stats().kv_usage_ratio, 0.0);
    }
}
