//! Fair share between clients: a light client's prompt is not queued behind a flood, and
//! while two clients are both backlogged their service stays within a bound of each other;
//! without fair share (the same scenario) neither holds.

mod common;

use std::collections::HashMap;

use brisk_scheduler::{
    FairShareConfig, RequestId, SchedRequest, SchedulerConfig, SchedulerCore, SeqEvent,
};
use brisk_types::{LogitsWanted, TokenId};
use common::{config, step};

/// A request of `client` with a `prompt`-token prompt of its own (no shared prefix).
fn request(id: RequestId, client: &str, prompt: usize, max_tokens: usize) -> SchedRequest {
    let base = 100 + id as u32 * 1000;
    let mut r = SchedRequest::new(id, (base..base + prompt as u32).collect(), max_tokens);
    r.client = Some(client.to_owned());
    r.ignore_eos = true;
    r
}

fn scheduler(fair: bool) -> SchedulerCore {
    SchedulerCore::new(SchedulerConfig {
        max_num_seqs: 16,
        num_blocks: 512,
        fair_share: fair.then(|| FairShareConfig::with_quantum(16)),
        ..config()
    })
    .unwrap()
}

/// The step at which request `id` got its first token, running until it does.
fn first_token_step(s: &mut SchedulerCore, id: RequestId, from: usize) -> usize {
    for t in from..from + 500 {
        let (_, events) = step(s, t as f64, |_| 7);
        if events
            .iter()
            .any(|e| matches!(e, SeqEvent::Token { id: i, first: true, .. } if *i == id))
        {
            return t;
        }
    }
    panic!("request {id} never got its first token");
}

#[test]
fn a_light_client_is_not_queued_behind_a_flood() {
    let mut steps = Vec::new();
    for fair in [false, true] {
        let mut s = scheduler(fair);
        // Eight 60-token prompts, 64-token steps: the flood alone is eight steps of prompt
        // work.
        for id in 0..8 {
            s.add_request(request(id, "flood", 60, 4)).unwrap();
        }
        step(&mut s, 0.0, |_| 7);
        s.add_request(request(100, "light", 8, 4)).unwrap();
        steps.push(first_token_step(&mut s, 100, 1));
    }
    let (unfair, fair) = (steps[0], steps[1]);
    assert!(
        unfair >= 7,
        "FCFS serves the flood's prompts first: {unfair}"
    );
    assert!(
        fair <= 2,
        "with fair share the light prompt goes within two steps: {fair}"
    );
}

/// Weighted service (prompt tokens 1, output tokens 2) per client, each step, while both
/// clients have work.
fn service_gaps(fair: bool) -> Vec<f64> {
    let mut s = scheduler(fair);
    let mut client_of = HashMap::new();
    for id in 0..30 {
        let client = if id < 15 { "flood" } else { "light" };
        client_of.insert(id, client);
        s.add_request(request(id, client, 40, 6)).unwrap();
    }
    let mut served: HashMap<&str, f64> = HashMap::new();
    let mut left: HashMap<&str, usize> = HashMap::from([("flood", 15), ("light", 15)]);
    let mut gaps = Vec::new();
    for t in 0..1000 {
        if !s.has_unfinished() {
            return gaps;
        }
        let (plan, events) = step(&mut s, t as f64, |_| 7 as TokenId);
        for p in &plan.seqs {
            let decode = p.start_pos >= 40;
            let prompt = if decode { 0.0 } else { p.tokens.len() as f64 };
            let output = if p.logits == LogitsWanted::None {
                0.0
            } else {
                2.0
            };
            let cost = prompt + output;
            *served.entry(client_of[&p.id]).or_default() += cost;
        }
        for e in &events {
            if let SeqEvent::Finished { id, .. } = e {
                *left.get_mut(client_of[id]).unwrap() -= 1;
            }
        }
        if left.values().all(|&n| n > 0) {
            gaps.push((served["flood"] - served.get("light").copied().unwrap_or(0.0)).abs());
        }
    }
    panic!("the run did not finish");
}

#[test]
fn two_backlogged_clients_are_served_within_a_bound_of_each_other() {
    let fair = service_gaps(true);
    let worst = fair.iter().copied().fold(0.0, f64::max);
    // VTC's bound: a few steps' worth of service (steps are 64 tokens, the quantum 16).
    assert!(
        worst <= 3.0 * 64.0,
        "fair share let a client lead by {worst}"
    );
    let unfair = service_gaps(false);
    let worst_unfair = unfair.iter().copied().fold(0.0, f64::max);
    assert!(
        worst_unfair > 400.0,
        "without fair share FCFS serves the first client's backlog first: {worst_unfair}"
    );
}
