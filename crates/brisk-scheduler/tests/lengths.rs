//! Output-length awareness under the SLO policy: what it learns from finished requests
//! changes who goes first and who yields, and nothing when it is off.

mod common;

use std::collections::HashMap;

use brisk_scheduler::{
    LatencyCoefficients, LatencyModel, LengthPrediction, PolicyChoice, RequestId, SchedRequest,
    SchedulerConfig, SchedulerCore, SeqEvent,
};
use brisk_types::TokenId;
use common::{config, step, EOS};

/// Prompts that end in this token ask for a short answer (2 tokens) …
const SHORT: TokenId = 90;
/// … and these for a long one (40 tokens).
const LONG: TokenId = 91;

fn output_len(kind: TokenId) -> usize {
    if kind == SHORT {
        2
    } else {
        40
    }
}

fn core(cfg: SchedulerConfig, predict: bool) -> SchedulerCore {
    let cfg = SchedulerConfig {
        length_prediction: predict.then_some(LengthPrediction { min_examples: 8 }),
        speculative: None,
        ..cfg
    };
    let choice = PolicyChoice::Slo {
        model: LatencyModel::from_coefficients(LatencyCoefficients {
            base_s: 0.010,
            per_prefill_token_s: 0.001,
            per_decode_seq_s: 0.001,
            ..LatencyCoefficients::default()
        }),
        reject_unattainable: false,
    };
    SchedulerCore::with_policy(cfg.clone(), choice.build(&cfg)).unwrap()
}

/// A best-effort request (no objective) arriving at `now` whose prompt asks for `kind`;
/// `max_tokens` 64.
fn request(id: RequestId, kind: TokenId, now: f64) -> SchedRequest {
    let prompt = (0..6)
        .map(|k| 20 + ((id as u32 * 5 + k) % 41))
        .chain([kind]);
    SchedRequest {
        arrival: now,
        ..SchedRequest::new(id, prompt.collect(), 64)
    }
}

/// Plays the model: each request ends with EOS after its kind's length.
#[derive(Default)]
struct Model {
    kinds: HashMap<RequestId, TokenId>,
    produced: HashMap<RequestId, usize>,
}

impl Model {
    fn next(&mut self, id: RequestId) -> TokenId {
        let n = self.produced.entry(id).or_default();
        *n += 1;
        if *n >= output_len(self.kinds[&id]) {
            EOS
        } else {
            7
        }
    }
}

/// Requests served one after another to the end while the predictor learns.
const TRAINING: RequestId = 80;

/// Serves requests 1..=TRAINING one at a time to the end, short and long in turn (odd ids
/// short), and returns the clock after them.
fn train(s: &mut SchedulerCore, model: &mut Model) -> f64 {
    let mut now = 0.0;
    for id in 1..=TRAINING {
        let kind = if id % 2 == 1 { SHORT } else { LONG };
        model.kinds.insert(id, kind);
        s.add_request(request(id, kind, now)).unwrap();
        while s.has_unfinished() {
            step(s, now, |i| model.next(i));
            now += 0.01;
        }
    }
    now
}

/// After training, queues a long and a short request behind a running one and returns the
/// order of their first tokens.
fn order_after_training(predict: bool) -> Vec<RequestId> {
    let cfg = SchedulerConfig {
        max_num_seqs: 1,
        ..config()
    };
    let mut s = core(cfg, predict);
    let mut model = Model::default();
    let mut now = train(&mut s, &mut model);
    let id = TRAINING;
    // One long request runs; a long one and then a short one wait behind it.
    let mut order = Vec::new();
    for (offset, kind) in [(1, LONG), (2, LONG), (3, SHORT)] {
        model.kinds.insert(id + offset, kind);
        s.add_request(request(id + offset, kind, now)).unwrap();
    }
    while s.has_unfinished() {
        for e in step(&mut s, now, |i| model.next(i)).1 {
            if let SeqEvent::Token {
                id, first: true, ..
            } = e
            {
                order.push(id);
            }
        }
        now += 0.01;
    }
    order.into_iter().map(|i| i - id).collect()
}

#[test]
fn a_request_predicted_short_overtakes_a_long_one_of_equal_slack() {
    assert_eq!(order_after_training(true), vec![1, 3, 2]);
    assert_eq!(
        order_after_training(false),
        vec![1, 2, 3],
        "without prediction: queue order"
    );
}

#[test]
fn under_memory_pressure_the_request_predicted_longest_yields() {
    // Two requests running, blocks for little more than them: when one needs a block the
    // one predicted to run longer is preempted, whichever was admitted last.
    let cfg = SchedulerConfig {
        max_num_seqs: 2,
        num_blocks: 24,
        ..config()
    };
    let mut s = core(cfg, true);
    let mut model = Model::default();
    let mut now = train(&mut s, &mut model);
    // The long one is admitted first, the short one last; both are made to run long (the
    // model ignores what was predicted) until the pool runs out.
    s.add_request(request(101, LONG, now)).unwrap();
    s.add_request(request(102, SHORT, now)).unwrap();
    let predicted = |s: &SchedulerCore, id| s.seq_view(id).unwrap().predicted_output_tokens;
    let (long, short) = (predicted(&s, 101).unwrap(), predicted(&s, 102).unwrap());
    assert!(long > 4.0 * short, "{long} {short}");
    let mut preempted = Vec::new();
    for _ in 0..200 {
        if !s.has_unfinished() {
            break;
        }
        let (plan, _) = step(&mut s, now, |_| 7);
        preempted.extend(plan.preempted);
        now += 0.01;
    }
    assert_eq!(preempted.first(), Some(&101), "{preempted:?}");
}
