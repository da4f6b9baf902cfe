//! A driver shared by the scheduler tests: runs steps with a fake model, checking the
//! invariants before and after every update.
#![allow(dead_code)]

use brisk_scheduler::{
    RequestId, RequestSpec, SchedRequest, SchedulerConfig, SchedulerCore, SeqEvent, StepPlan,
};
use brisk_types::{LogitsWanted, TokenId};

/// The model's EOS token in these tests.
pub const EOS: TokenId = 0;

/// A small pool: 4-token blocks, 64 blocks, 64 tokens per step.
pub fn config() -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 8,
        max_num_batched_tokens: 64,
        max_model_len: 256,
        block_size: 4,
        num_blocks: 64,
        enable_prefix_caching: true,
        chunked_prefill: true,
        eos_token_ids: vec![EOS],
        cache_salt: 0,
        fair_share: None,
        length_prediction: None,
        speculative: None,
    }
}

pub fn request(id: RequestId, prompt: Vec<TokenId>, max_tokens: usize) -> SchedRequest {
    SchedRequest::new(id, prompt, max_tokens)
}

/// `request` with its spec edited.
#[allow(dead_code)] // not every test file edits specs
pub fn edited(mut request: SchedRequest, edit: impl FnOnce(&mut RequestSpec)) -> SchedRequest {
    edit(&mut request.spec);
    request
}

/// Runs one step; `next` plays the model and sampler for each sequence that wants a token.
pub fn step(
    s: &mut SchedulerCore,
    now: f64,
    mut next: impl FnMut(RequestId) -> TokenId,
) -> (StepPlan, Vec<SeqEvent>) {
    let plan = s.schedule(now);
    s.check_invariants().unwrap();
    assert!(plan.num_tokens <= s.config().max_num_batched_tokens);
    assert_eq!(plan.as_batch().num_tokens(), plan.num_tokens);
    let sampled: Vec<Option<TokenId>> = plan
        .seqs
        .iter()
        .map(|p| (p.logits != LogitsWanted::None).then(|| next(p.id)))
        .collect();
    let events = s.update(&plan, &sampled, now).unwrap();
    s.check_invariants().unwrap();
    (plan, events)
}

/// Runs until nothing is left (at most `max_steps`), returning every event.
pub fn run_to_end(
    s: &mut SchedulerCore,
    max_steps: usize,
    mut next: impl FnMut(RequestId) -> TokenId,
) -> Vec<SeqEvent> {
    let mut all = Vec::new();
    for i in 0..max_steps {
        if !s.has_unfinished() {
            return all;
        }
        all.extend(step(s, i as f64, &mut next).1);
    }
    panic!("not finished after {max_steps} steps");
}

/// The `Finished` event of `id`.
pub fn finished(events: &[SeqEvent], id: RequestId) -> SeqEvent {
    events
        .iter()
        .find(|e| matches!(e, SeqEvent::Finished { id: i, .. } if *i == id))
        .cloned()
        .unwrap_or_else(|| panic!("request {id} did not finish"))
}

/// The output tokens of `id`.
pub fn tokens_of(events: &[SeqEvent], id: RequestId) -> Vec<TokenId> {
    events
        .iter()
        .filter_map(|e| match e {
            SeqEvent::Token { id: i, token, .. } if *i == id => Some(*token),
            _ => None,
        })
        .collect()
}
