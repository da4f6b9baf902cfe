//! Output-length prediction: a ranker learned online from the requests this server finishes.
//!
//! Shortest-job-first needs job lengths, and an output's length is not known until it ends.
//! Learning-to-rank scheduling (Fu et al., 2024) showed that a predictor need not be exact:
//! ranking requests roughly by their output length is enough to approximate SJF. brisk
//! ships no trained model — no dataset pairs this model's outputs with prompts, and output
//! lengths belong to the model and the traffic served — so it learns from what it serves:
//! each request that ends by itself (a stop or its length limit, never an abort) is one
//! example, and the next arrivals are predicted from all before them.
//!
//! The model is linear in the log of the output length, over features any request has:
//! its prompt's length and `max_tokens` (in logs), its client (the API's `user`: clients
//! have habits), and its prompt tokens hashed into buckets (what is asked: "list", "explain",
//! "translate" — weighted towards the prompt's end, where chat templates put the request).
//! Trained by stochastic gradient descent with AdaGrad steps on the squared error of the
//! log length. A request that hit `max_tokens` only says its output would have been at
//! least that long; it trains towards that bound, never below it.
//!
//! Until [`LengthPrediction::min_examples`] requests have finished, it predicts nothing and
//! policies order as they would without any prediction.

use brisk_types::TokenId;

/// Hash buckets for prompt tokens and clients.
const BUCKETS: usize = 4096;
/// Dense features before the buckets: bias, log prompt length, log `max_tokens`.
const DENSE: usize = 3;
/// Prompt tokens read from the end of the prompt (where the request sits).
const TAIL_TOKENS: usize = 256;
/// AdaGrad's base step.
const STEP: f64 = 0.5;

/// Settings of output-length prediction (`SchedulerConfig::length_prediction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthPrediction {
    /// Requests that must have finished before predictions are made.
    pub min_examples: u64,
}

impl Default for LengthPrediction {
    /// Predictions from the 32nd finished request on.
    fn default() -> Self {
        Self { min_examples: 32 }
    }
}

/// A request's features: a few dense values and hashed sparse ones, all weight 1 unless
/// stated. Computed once at arrival and kept to train on when the request ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LengthFeatures {
    /// (index, value) pairs; indices below `DENSE` are the dense features.
    entries: Vec<(u32, f32)>,
}

impl LengthFeatures {
    /// The features of a request with `prompt`, `max_tokens` and `client`.
    pub fn of(prompt: &[TokenId], max_tokens: usize, client: Option<&str>) -> Self {
        let mut entries = vec![
            (0, 1.0),
            (1, ((1 + prompt.len()) as f32).ln() / 8.0),
            (2, ((1 + max_tokens) as f32).ln() / 8.0),
        ];
        let tail = &prompt[prompt.len().saturating_sub(TAIL_TOKENS)..];
        let mut buckets: Vec<u32> = tail.iter().map(|&t| bucket(u64::from(t))).collect();
        buckets.sort_unstable();
        buckets.dedup();
        // Unit length over the token part, so long prompts do not drown the dense features.
        let weight = 1.0 / (buckets.len().max(1) as f32).sqrt();
        entries.extend(buckets.into_iter().map(|b| (b, weight)));
        let client = client.unwrap_or("");
        let client_bucket = bucket(brisk_kv::hash::fnv1a_64(client.as_bytes()) ^ 0x5bd1_e995);
        entries.push((client_bucket, 1.0));
        Self { entries }
    }
}

/// The sparse index of a hashed key.
fn bucket(key: u64) -> u32 {
    // A multiplicative hash spreads consecutive token ids over the buckets.
    let h = key.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    DENSE as u32 + (h >> 40) as u32 % BUCKETS as u32
}

/// The online predictor; see the module docs.
#[derive(Clone, Debug)]
pub struct LengthPredictor {
    settings: LengthPrediction,
    weights: Vec<f64>,
    /// AdaGrad's sums of squared gradients.
    squares: Vec<f64>,
    examples: u64,
}

impl LengthPredictor {
    /// A predictor that has learned nothing yet.
    pub fn new(settings: LengthPrediction) -> Self {
        Self {
            settings,
            weights: vec![0.0; DENSE + BUCKETS],
            squares: vec![1e-6; DENSE + BUCKETS],
            examples: 0,
        }
    }

    /// Predicted output tokens of a request with these features (at most `max_tokens`, at
    /// least 1), or `None` while too few requests have finished to say.
    pub fn predict(&self, features: &LengthFeatures, max_tokens: usize) -> Option<f64> {
        (self.examples >= self.settings.min_examples).then(|| {
            let log_len = self.score(features);
            (log_len.exp() - 1.0).clamp(1.0, max_tokens.max(1) as f64)
        })
    }

    /// Learns from a request that ended by itself after `output_tokens`; `capped` when it
    /// ended at its `max_tokens` (its natural length is at least that).
    pub fn learn(&mut self, features: &LengthFeatures, output_tokens: usize, capped: bool) {
        self.examples += 1;
        let target = ((1 + output_tokens) as f64).ln();
        let predicted = self.score(features);
        if capped && predicted >= target {
            return; // a lower bound already met: nothing to correct
        }
        let error = predicted - target;
        for &(i, x) in &features.entries {
            let g = error * f64::from(x);
            let i = i as usize;
            self.squares[i] += g * g;
            self.weights[i] -= STEP * g / self.squares[i].sqrt();
        }
    }

    /// Requests learned from.
    pub fn examples(&self) -> u64 {
        self.examples
    }

    /// The predicted log of (1 + output tokens).
    fn score(&self, features: &LengthFeatures) -> f64 {
        features
            .entries
            .iter()
            .map(|&(i, x)| self.weights[i as usize] * f64::from(x))
            .sum()
    }
}

/// How well predictions rank outputs, measured as the server runs: each finished request
/// with a prediction is paired with the one before it, and the pair is concordant when the
/// predictions order the two outputs as they came out (Kendall's tau over such pairs is
/// (concordant − discordant) / (concordant + discordant); 0 is a random ranker).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RankAgreement {
    last: Option<(f64, usize)>,
    /// Pairs ordered as the outputs came out.
    pub concordant: u64,
    /// Pairs ordered the other way.
    pub discordant: u64,
}

impl RankAgreement {
    /// A request predicted to produce `predicted` tokens produced `actual`.
    pub fn observe(&mut self, predicted: f64, actual: usize) {
        if let Some((p, a)) = self.last {
            if p != predicted && a != actual {
                if (p < predicted) == (a < actual) {
                    self.concordant += 1;
                } else {
                    self.discordant += 1;
                }
            }
        }
        self.last = Some((predicted, actual));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prompts that end in token `kind` get outputs of `10 * kind` tokens.
    fn example(i: u32) -> (Vec<TokenId>, usize) {
        let kind = 1 + i % 5;
        let prompt: Vec<TokenId> = (0..20)
            .map(|k| 1000 + (i * 7 + k) % 300)
            .chain([kind])
            .collect();
        (prompt, 10 * kind as usize)
    }

    #[test]
    fn rank_agreement_counts_pairs_in_and_out_of_order_and_skips_ties() {
        let mut r = RankAgreement::default();
        for (p, a) in [(10.0, 5), (20.0, 9), (30.0, 2), (30.0, 7), (5.0, 7)] {
            r.observe(p, a);
        }
        // (10,5)→(20,9) agree; (20,9)→(30,2) disagree; (30,2)→(30,7) tie; (30,7)→(5,7) tie.
        assert_eq!((r.concordant, r.discordant), (1, 1));
    }

    #[test]
    fn it_predicts_nothing_until_enough_requests_have_finished() {
        let mut p = LengthPredictor::new(LengthPrediction::default());
        let (prompt, len) = example(0);
        let f = LengthFeatures::of(&prompt, 100, None);
        for _ in 0..LengthPrediction::default().min_examples - 1 {
            p.learn(&f, len, false);
        }
        assert_eq!(p.predict(&f, 100), None);
        p.learn(&f, len, false);
        assert!(p.predict(&f, 100).is_some());
    }

    #[test]
    fn it_learns_to_rank_outputs_by_what_the_prompt_asks() {
        let mut p = LengthPredictor::new(LengthPrediction::default());
        for i in 0..2000 {
            let (prompt, len) = example(i);
            p.learn(&LengthFeatures::of(&prompt, 100, None), len, false);
        }
        let predicted: Vec<f64> = (5000..5005)
            .map(|i| {
                let (prompt, _) = example(i);
                p.predict(&LengthFeatures::of(&prompt, 100, None), 100)
                    .unwrap()
            })
            .collect();
        // Kinds 1..=5 in order: predictions rise with the true lengths 10..50.
        let kinds: Vec<u32> = (5000..5005).map(|i| 1 + i % 5).collect();
        let mut by_kind: Vec<(u32, f64)> = kinds.into_iter().zip(predicted).collect();
        by_kind.sort_by_key(|&(k, _)| k);
        for pair in by_kind.windows(2) {
            assert!(pair[0].1 < pair[1].1, "{by_kind:?}");
        }
        let (_, first) = by_kind[0];
        assert!((5.0..20.0).contains(&first), "{by_kind:?}");
    }

    #[test]
    fn a_capped_output_only_raises_the_prediction() {
        let mut p = LengthPredictor::new(LengthPrediction::default());
        let f = LengthFeatures::of(&[5, 6, 7], 16, Some("c"));
        for _ in 0..200 {
            p.learn(&f, 100, false);
        }
        let before = p.predict(&f, 1000).unwrap();
        for _ in 0..50 {
            p.learn(&f, 16, true); // ended at a limit of 16: says nothing against 100
        }
        assert_eq!(p.predict(&f, 1000).unwrap(), before);
        assert_eq!(p.predict(&f, 16).unwrap(), 16.0, "never past max_tokens");
    }

    #[test]
    fn clients_habits_are_learned() {
        let mut p = LengthPredictor::new(LengthPrediction::default());
        for i in 0..1000u32 {
            let prompt: Vec<TokenId> = (0..10).map(|k| (i * 13 + k) % 500).collect();
            let (client, len) = if i % 2 == 0 {
                ("terse", 5)
            } else {
                ("chatty", 200)
            };
            p.learn(&LengthFeatures::of(&prompt, 500, Some(client)), len, false);
        }
        let prompt: Vec<TokenId> = (0..10).map(|k| 9000 + k).collect();
        let terse = p.predict(&LengthFeatures::of(&prompt, 500, Some("terse")), 500);
        let chatty = p.predict(&LengthFeatures::of(&prompt, 500, Some("chatty")), 500);
        assert!(
            terse.unwrap() * 5.0 < chatty.unwrap(),
            "{terse:?} {chatty:?}"
        );
    }
}
