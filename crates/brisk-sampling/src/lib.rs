//! Turning a logit row into the next token.
//!
//! The pipeline follows vLLM's order: repetition, frequency and presence penalties on the raw
//! logits; then greedy argmax when the temperature is 0; otherwise temperature, then the
//! min-p, top-k and top-p filters, then one draw. The draw is an argument
//! ([`Sampler::sample_with_draw`]) so that tests can replay any decision, and each request's
//! generator is seeded (by its `seed`, or by the engine), so a seeded request is reproducible
//! whatever else shares its batch.
#![deny(missing_docs)]

mod constraint;

use std::collections::HashMap;

use brisk_types::TokenId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

pub use constraint::{ConstraintSource, TokenConstraint};

/// Why sampling parameters were refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid sampling parameter {param}: {message}")]
pub struct SamplingError {
    /// The offending parameter, named as in the OpenAI API.
    pub param: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// How to choose tokens; the defaults are OpenAI's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability sums to at least this (1 = off).
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` times the most likely one (0 = off).
    pub min_p: f32,
    /// CTRL-style penalty on tokens already in the prompt or output (1 = off).
    pub repetition_penalty: f32,
    /// Subtracted once per earlier occurrence in the output (OpenAI).
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurred in the output (OpenAI).
    pub presence_penalty: f32,
    /// Seed of the request's generator.
    pub seed: Option<u64>,
    /// Added to a token's logit before anything else (OpenAI's `logit_bias`; -100 bans a
    /// token, 100 all but forces it).
    pub logit_bias: Vec<(TokenId, f32)>,
}

/// Most entries a `logit_bias` may have (OpenAI's limit).
pub const MAX_LOGIT_BIAS: usize = 300;

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every field against the ranges OpenAI and vLLM accept.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let err = |param, message: &str| {
            Err(SamplingError {
                param,
                message: message.to_string(),
            })
        };
        if !(self.temperature.is_finite() && (0.0..=100.0).contains(&self.temperature)) {
            return err("temperature", "must be between 0 and 100");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return err("top_p", "must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return err("min_p", "must be in [0, 1]");
        }
        if !(self.repetition_penalty.is_finite()
            && self.repetition_penalty > 0.0
            && self.repetition_penalty <= 10.0)
        {
            return err("repetition_penalty", "must be in (0, 10]");
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return err("frequency_penalty", "must be between -2 and 2");
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return err("presence_penalty", "must be between -2 and 2");
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS {
            return err("logit_bias", "may bias at most 300 tokens");
        }
        if self
            .logit_bias
            .iter()
            .any(|(_, b)| !(-100.0..=100.0).contains(b))
        {
            return err("logit_bias", "biases must be between -100 and 100");
        }
        Ok(())
    }

    /// Whether the choice is deterministic argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// A chosen token and its log-probability under the unmodified model distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    /// The token.
    pub token: TokenId,
    /// `log softmax(logits)[token]`, before penalties and temperature (as OpenAI reports).
    pub logprob: f32,
}

/// A request's sampler: its parameters and its own seeded generator (ChaCha12, the generator
/// behind rand's `StdRng`, so seeded outputs are what they were). Cloning it, or rebuilding
/// it from its [`SamplerState`], continues the same random sequence: a request moved to
/// another engine draws what it would have drawn.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha12Rng,
}

/// A sampler as data: its parameters and its generator's position, for moving a running
/// request to another process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerState {
    /// The sampling parameters.
    pub params: SamplingParams,
    /// The generator's key.
    pub seed: [u8; 32],
    /// Its stream.
    pub stream: u64,
    /// Its position in the stream, in 32-bit words.
    pub word_pos: u128,
}

impl Sampler {
    /// A sampler seeded by `params.seed`, or by `fallback_seed` when the request gave none.
    pub fn new(params: SamplingParams, fallback_seed: u64) -> Self {
        let rng = ChaCha12Rng::seed_from_u64(params.seed.unwrap_or(fallback_seed));
        Self { params, rng }
    }

    /// Its parameters and generator position.
    pub fn state(&self) -> SamplerState {
        SamplerState {
            params: self.params.clone(),
            seed: self.rng.get_seed(),
            stream: self.rng.get_stream(),
            word_pos: self.rng.get_word_pos(),
        }
    }

    /// The sampler `state` describes: it draws exactly what the one it came from would.
    pub fn from_state(state: SamplerState) -> Self {
        let mut rng = ChaCha12Rng::from_seed(state.seed);
        rng.set_stream(state.stream);
        rng.set_word_pos(state.word_pos);
        Self {
            params: state.params,
            rng,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token given the prompt and the output so far, with its log-probability.
    pub fn sample(&mut self, logits: &[f32], prompt: &[TokenId], output: &[TokenId]) -> Sampled {
        let token = self.sample_token(logits, prompt, output);
        Sampled {
            token,
            logprob: log_softmax_at(logits, token as usize),
        }
    }

    /// Chooses the next token, without its log-probability (a pass of `exp` over the whole
    /// row that only requests asking for logprobs need).
    pub fn sample_token(
        &mut self,
        logits: &[f32],
        prompt: &[TokenId],
        output: &[TokenId],
    ) -> TokenId {
        let draw = if self.params.is_greedy() {
            0.0
        } else {
            self.rng.random::<f32>()
        };
        self.choose(logits, prompt, output, draw) as TokenId
    }

    /// Chooses the next token with the uniform draw `draw` in `[0, 1)` supplied by the caller.
    pub fn sample_with_draw(
        &self,
        logits: &[f32],
        prompt: &[TokenId],
        output: &[TokenId],
        draw: f32,
    ) -> Sampled {
        let token = self.choose(logits, prompt, output, draw);
        Sampled {
            token: token as TokenId,
            logprob: log_softmax_at(logits, token),
        }
    }

    fn choose(&self, logits: &[f32], prompt: &[TokenId], output: &[TokenId], draw: f32) -> usize {
        assert!(!logits.is_empty(), "empty logit row");
        let p = &self.params;
        let penalized = !p.logit_bias.is_empty()
            || p.repetition_penalty != 1.0
            || p.frequency_penalty != 0.0
            || p.presence_penalty != 0.0;
        let work;
        let logits = if penalized {
            let mut copy = logits.to_vec();
            self.apply_penalties(&mut copy, prompt, output);
            work = copy;
            &work[..]
        } else {
            logits
        };
        if p.is_greedy() {
            argmax(logits)
        } else {
            self.draw_filtered(logits, draw)
        }
    }

    fn apply_penalties(&self, logits: &mut [f32], prompt: &[TokenId], output: &[TokenId]) {
        let p = &self.params;
        for &(t, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += bias;
            }
        }
        if p.repetition_penalty != 1.0 {
            let mut seen: Vec<TokenId> = prompt.iter().chain(output).copied().collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            let mut counts: HashMap<TokenId, u32> = HashMap::new();
            for &t in output {
                *counts.entry(t).or_default() += 1;
            }
            for (t, n) in counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    let n = n as f32;
                    *l -= p.frequency_penalty * n + p.presence_penalty;
                }
            }
        }
    }

    /// Draws from the distribution after temperature and the truncations (min-p, top-k,
    /// top-p), walking tokens from most to least likely. Only as much of the order as the
    /// walk reaches is sorted (a growing prefix, see [`sort_prefix`]): a draw usually stops
    /// within the first few dozen tokens, and sorting all 49,152 of SmolLM2's took ~2 ms per
    /// token. The result is the one a full sort would give.
    fn draw_filtered(&self, logits: &[f32], draw: f32) -> usize {
        let p = &self.params;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(usize, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, ((l - max) / p.temperature).exp()))
            .filter(|&(_, w)| w > 0.0)
            .collect();
        if probs.is_empty() {
            return argmax(logits);
        }
        if p.min_p > 0.0 {
            let top = probs.iter().map(|&(_, w)| w).fold(0.0, f32::max);
            probs.retain(|&(_, w)| w >= p.min_p * top);
        }
        let mut sorted = 0;
        if p.top_k > 0 && p.top_k < probs.len() {
            sorted = sort_prefix(&mut probs, p.top_k);
            probs.truncate(p.top_k);
        }
        // Makes sure the first `i + 1` entries are in order.
        let reach = |probs: &mut Vec<(usize, f32)>, sorted: &mut usize, i: usize| {
            if i >= *sorted {
                *sorted = sort_prefix(probs, (4 * *sorted).max(64).max(i + 1));
            }
        };
        if p.top_p < 1.0 {
            let total: f32 = probs.iter().map(|&(_, w)| w).sum();
            let mut cum = 0.0;
            let mut keep = probs.len();
            for i in 0..probs.len() {
                reach(&mut probs, &mut sorted, i);
                cum += probs[i].1 / total;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().map(|&(_, w)| w).sum();
        let target = draw.clamp(0.0, 1.0) * total;
        let mut cum = 0.0;
        for i in 0..probs.len() {
            reach(&mut probs, &mut sorted, i);
            cum += probs[i].1;
            if target < cum {
                return probs[i].0;
            }
        }
        // Rounding left the target past the last weight; the loop sorted every entry.
        probs.last().map_or(0, |&(i, _)| i)
    }
}

/// Most likely first; equal weights by token id.
fn by_weight(a: &(usize, f32), b: &(usize, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Puts the `n` most likely entries first, in order (the prefix a full sort would give; the
/// rest stay unordered) and returns how many are now in order.
fn sort_prefix(probs: &mut [(usize, f32)], n: usize) -> usize {
    let n = n.min(probs.len());
    if n == 0 {
        return 0;
    }
    if n < probs.len() {
        probs.select_nth_unstable_by(n - 1, by_weight);
    }
    probs[..n].sort_unstable_by(by_weight);
    n
}

/// Index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// `log softmax(logits)[index]`.
pub fn log_softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
    logits[index] - lse
}

/// The `k` most likely tokens with their log-probabilities, most likely first.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(TokenId, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(k);
    idx.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.into_iter()
        .map(|i| (i as TokenId, logits[i] - lse))
        .collect()
}

#[cfg(test)]
mod tests;
