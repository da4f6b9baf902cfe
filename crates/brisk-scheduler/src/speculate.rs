//! Speculative decoding: which decodes verify draft tokens in a step, and how many.
//!
//! A decoding sequence may run its last token followed by `n` draft tokens; the step computes
//! all `n + 1` positions and returns a logit row for each. The engine samples the rows in
//! order and stops at the first token that differs from its draft: every token kept was
//! sampled from the target model's own distribution at its position, the drafts only decide
//! how far one step gets. So the output is plain decoding's — token for token under greedy
//! decoding, and for seeded sampling too (one draw per kept token, as plain decoding
//! draws) — and rejected drafts only cost their K/V slots, which `update` gives back.
//!
//! Drafts come from prompt lookup ([`propose_ngram`], vLLM's `ngram` method): the longest
//! recent n-gram that recurs earlier in the sequence proposes the tokens that followed it.
//!
//! Whether to verify is decided per step from the latency model ([`Speculation::choose`]):
//! drafts lengthen everyone's step, and they pay only when the tokens they are expected to
//! add (from the sequence's measured acceptance) raise the step's tokens per second. On a
//! batch where each token costs about what a draft costs (compute-bound) they do not, and
//! speculation switches itself off; with one stream on a CPU whose step is mostly fixed cost
//! it pays even at modest acceptance.

use brisk_types::TokenId;

use crate::latency::{LatencyModel, StepShape};
use crate::request::RequestId;

/// Validated speculative decoding settings (`--speculative-config`).
#[derive(Clone, Debug, PartialEq)]
pub struct SpeculativeConfig {
    /// Most draft tokens verified per sequence and step.
    pub num_speculative_tokens: usize,
    /// Shortest n-gram prompt lookup matches.
    pub prompt_lookup_min: usize,
    /// Longest n-gram prompt lookup tries first.
    pub prompt_lookup_max: usize,
    /// Decides per step whether drafts pay; `None`: verify whenever there are drafts.
    pub latency: Option<LatencyModel>,
    /// A draft model (GGUF file or Hugging Face directory) proposes the drafts instead of
    /// prompt lookup; the engine loads it and installs it as the scheduler's [`Drafter`].
    pub draft_model: Option<std::path::PathBuf>,
}

/// What a [`Drafter`] is asked for one sequence.
#[derive(Clone, Copy, Debug)]
pub struct DraftAsk<'a> {
    /// The request.
    pub id: RequestId,
    /// Its tokens so far (prompt and output).
    pub tokens: &'a [TokenId],
    /// Most drafts wanted.
    pub max: usize,
}

/// Proposes draft tokens for decoding sequences: prompt lookup ([`NgramDrafter`]) or a
/// draft model (the engine's).
pub trait Drafter: Send {
    /// Drafts for each ask (`out[i]` for `asks[i]`; shorter than asked, or empty, when it has
    /// fewer).
    fn propose(&mut self, asks: &[DraftAsk<'_>]) -> Vec<Vec<TokenId>>;
    /// Predicted seconds of one drafting step over `seqs` sequences (0 for lookup). The
    /// decision adds it per draft token.
    fn step_cost(&self, seqs: usize) -> f64;
    /// Whether drafts cost nothing to propose, so they are proposed before the decision
    /// (and the decision knows how many there are).
    fn is_free(&self) -> bool {
        self.step_cost(1) == 0.0
    }
    /// Forgets request `id`, which ended or left.
    fn forget(&mut self, _id: RequestId) {}
}

/// Prompt lookup as a [`Drafter`].
#[derive(Clone, Copy, Debug)]
pub struct NgramDrafter {
    /// Shortest n-gram matched.
    pub min: usize,
    /// Longest n-gram tried first.
    pub max: usize,
}

impl Drafter for NgramDrafter {
    fn propose(&mut self, asks: &[DraftAsk<'_>]) -> Vec<Vec<TokenId>> {
        asks.iter()
            .map(|a| propose_ngram(a.tokens, self.min, self.max, a.max))
            .collect()
    }

    fn step_cost(&self, _seqs: usize) -> f64 {
        0.0
    }
}

/// `--speculative-config` as vLLM spells it (JSON).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VllmSpeculativeConfig {
    method: Option<String>,
    num_speculative_tokens: Option<usize>,
    prompt_lookup_max: Option<usize>,
    prompt_lookup_min: Option<usize>,
    model: Option<String>,
}

/// Most drafts per step brisk verifies (vLLM's examples use 2–5).
pub const MAX_SPECULATIVE_TOKENS: usize = 16;

impl SpeculativeConfig {
    /// Prompt lookup of `min..=max`-token n-grams, at most `k` drafts per step, verified
    /// whenever there are drafts (no latency model yet).
    pub fn prompt_lookup(k: usize, min: usize, max: usize) -> Self {
        Self {
            num_speculative_tokens: k,
            prompt_lookup_min: min,
            prompt_lookup_max: max,
            latency: None,
            draft_model: None,
        }
    }

    /// Reads vLLM's JSON (`{"method": "ngram", "num_speculative_tokens": 4,
    /// "prompt_lookup_max": 4, "prompt_lookup_min": 2}`); fields brisk does not honour and
    /// methods it does not run are refused with a reason. The latency model is set apart.
    pub fn from_vllm_json(json: &str) -> Result<Self, String> {
        let v: VllmSpeculativeConfig = serde_json::from_str(json).map_err(|e| {
            format!(
                "{e}; expected vLLM's JSON, e.g. {{\"method\": \"ngram\", \
                 \"num_speculative_tokens\": 4, \"prompt_lookup_max\": 4}}"
            )
        })?;
        let draft_model = match (v.method.as_deref(), &v.model) {
            (Some("ngram"), None) => None,
            (Some("ngram"), Some(_)) => {
                return Err("`model` does not apply to the ngram method".into())
            }
            // vLLM takes a `model` without a method as a draft model.
            (Some("draft_model") | None, Some(model)) => {
                if v.prompt_lookup_max.is_some() || v.prompt_lookup_min.is_some() {
                    return Err("`prompt_lookup_*` apply to the ngram method only".into());
                }
                Some(std::path::PathBuf::from(model))
            }
            (Some("draft_model"), None) => {
                return Err(
                    "method \"draft_model\" needs `model`: the draft model's GGUF \
                            file or Hugging Face directory"
                        .into(),
                )
            }
            (None, None) => {
                return Err("`method` is required (\"ngram\" or \"draft_model\")".into())
            }
            (Some(other), _) => {
                return Err(format!(
                    "unknown method {other:?}; brisk runs \"ngram\" (prompt lookup) and \
                     \"draft_model\""
                ))
            }
        };
        let k = v
            .num_speculative_tokens
            .ok_or("`num_speculative_tokens` is required")?;
        if !(1..=MAX_SPECULATIVE_TOKENS).contains(&k) {
            return Err(format!(
                "`num_speculative_tokens` must be 1..={MAX_SPECULATIVE_TOKENS}, got {k}"
            ));
        }
        // vLLM's defaults: one bound gives the other; neither gives 5-grams.
        let (min, max) = match (v.prompt_lookup_min, v.prompt_lookup_max) {
            (Some(min), Some(max)) => (min, max),
            (Some(n), None) | (None, Some(n)) => (n, n),
            (None, None) => (5, 5),
        };
        if min == 0 || min > max {
            return Err(format!(
                "need 1 <= prompt_lookup_min ({min}) <= prompt_lookup_max ({max})"
            ));
        }
        Ok(Self {
            draft_model,
            ..Self::prompt_lookup(k, min, max)
        })
    }
}

/// Prompt lookup: the tokens that followed the latest earlier occurrence of the longest
/// suffix n-gram of `tokens` (`min..=max` tokens long, longest tried first), at most `k`.
/// Empty when no suffix recurs.
pub fn propose_ngram(tokens: &[TokenId], min: usize, max: usize, k: usize) -> Vec<TokenId> {
    let len = tokens.len();
    for n in (min.max(1)..=max.min(len.saturating_sub(1))).rev() {
        let suffix = &tokens[len - n..];
        // Latest occurrence first: recent text predicts the next tokens best.
        for start in (0..len - n).rev() {
            if &tokens[start..start + n] == suffix {
                let from = start + n;
                return tokens[from..(from + k).min(len)].to_vec();
            }
        }
    }
    Vec::new()
}

/// Expected tokens a verification of `n` drafts yields when each is accepted with
/// probability `a` (independently): the accepted prefix plus the token sampled after it.
pub fn expected_tokens(a: f64, n: usize) -> f64 {
    (0..=n).map(|i| a.powi(i as i32)).sum()
}

/// A decoding sequence's candidate drafts, as [`Speculation::choose`] weighs them.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Positions its decode attends over (its tokens so far).
    pub context: usize,
    /// Drafts available (already capped by its token limits).
    pub drafts: usize,
    /// Estimated probability that a draft token is accepted.
    pub acceptance: f64,
}

/// The per-step decision: [`SpeculativeConfig`] with the latency model.
pub(crate) struct Speculation<'a> {
    pub(crate) config: &'a SpeculativeConfig,
}

impl Speculation<'_> {
    /// How many drafts each candidate verifies this step (0: plain decode), within `budget`
    /// extra tokens. `step` is the step as planned without drafts (its decodes, candidates
    /// included, and any prompt chunks, whose time the drafts ride on). Greedy: each
    /// candidate takes the draft count that most raises the step's expected output tokens
    /// per second, if any does.
    pub(crate) fn choose(
        &self,
        step: StepShape,
        candidates: &[Candidate],
        mut budget: usize,
        draft_step_s: &dyn Fn(usize) -> f64,
    ) -> Vec<usize> {
        let Some(model) = &self.config.latency else {
            return candidates
                .iter()
                .map(|c| {
                    let n = c.drafts.min(budget);
                    budget -= n;
                    n
                })
                .collect();
        };
        let shape = step;
        let mut time = model.predict(&shape);
        let mut tokens = shape.decode_seqs as f64;
        // Drafting: as many steps as the most drafts anyone takes, over those who take any.
        let (mut drafting, mut longest) = (0usize, 0usize);
        let mut chosen = vec![0; candidates.len()];
        // Best prospects first: the budget goes where acceptance is highest.
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| {
            candidates[b]
                .acceptance
                .total_cmp(&candidates[a].acceptance)
        });
        for i in order {
            let c = &candidates[i];
            let mut best = (tokens / time, 0, time, tokens);
            for n in 1..=c.drafts.min(budget) {
                // Each draft row costs a decode: its logits are computed and sampled (as
                // `StepShape` prices a verification).
                let mut with = shape;
                for row in 1..=n {
                    with.add_decode(c.context + row);
                }
                let drafts_s = n.max(longest) as f64 * draft_step_s(drafting + 1)
                    - longest as f64 * draft_step_s(drafting);
                let t = time + model.predict(&with) - model.predict(&shape) + drafts_s;
                let gained = tokens + expected_tokens(c.acceptance, n) - 1.0;
                if gained / t > best.0 {
                    best = (gained / t, n, t, gained);
                }
            }
            let (_, n, t, gained) = best;
            if n > 0 {
                chosen[i] = n;
                drafting += 1;
                longest = longest.max(n);
                budget -= n;
                time = t;
                tokens = gained;
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyCoefficients;

    #[test]
    fn prompt_lookup_proposes_what_followed_the_latest_longest_match() {
        // "a b c d" recurs: after the suffix "b c" came "d e" (latest occurrence first).
        let t = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 2, 3];
        assert_eq!(propose_ngram(&t, 1, 3, 2), vec![7, 8]);
        assert_eq!(propose_ngram(&t, 1, 3, 10), vec![7, 8, 2, 3]);
        // The longest suffix wins over a later short match.
        let t = [5, 6, 7, 1, 7, 0, 6, 7];
        assert_eq!(propose_ngram(&t, 1, 2, 3), vec![1, 7, 0]);
        assert_eq!(propose_ngram(&t, 1, 1, 3), vec![0, 6, 7]);
        assert!(
            propose_ngram(&[1, 2, 3], 1, 3, 4).is_empty(),
            "no recurrence"
        );
        assert!(propose_ngram(&[], 1, 3, 4).is_empty());
        assert!(propose_ngram(&[4], 1, 3, 4).is_empty());
    }

    #[test]
    fn vllm_json_is_read_and_what_brisk_does_not_run_is_refused() {
        let c = SpeculativeConfig::from_vllm_json(
            r#"{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 5, "prompt_lookup_min": 2}"#,
        )
        .unwrap();
        assert_eq!(
            (
                c.num_speculative_tokens,
                c.prompt_lookup_min,
                c.prompt_lookup_max
            ),
            (4, 2, 5)
        );
        assert_eq!(c.draft_model, None);
        // vLLM's draft model: by method, or by `model` alone.
        for json in [
            r#"{"method": "draft_model", "model": "small.gguf", "num_speculative_tokens": 3}"#,
            r#"{"model": "small.gguf", "num_speculative_tokens": 3}"#,
        ] {
            let c = SpeculativeConfig::from_vllm_json(json).unwrap();
            assert_eq!(
                c.draft_model.as_deref(),
                Some(std::path::Path::new("small.gguf"))
            );
        }
        for (bad, why) in [
            (r#"{"method": "ngram"}"#, "num_speculative_tokens"),
            (
                r#"{"method": "eagle", "num_speculative_tokens": 2}"#,
                "unknown method",
            ),
            (
                r#"{"method": "draft_model", "num_speculative_tokens": 2}"#,
                "needs `model`",
            ),
            (
                r#"{"model": "x.gguf", "num_speculative_tokens": 2, "prompt_lookup_max": 3}"#,
                "ngram method only",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 0}"#,
                "1..=",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 4, "prompt_lookup_max": 2}"#,
                "prompt_lookup_min",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 2, "typical_acceptance": 1}"#,
                "unknown field",
            ),
            ("not json", "expected vLLM's JSON"),
        ] {
            let e = SpeculativeConfig::from_vllm_json(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn expected_tokens_count_the_accepted_prefix_and_one_more() {
        assert_eq!(expected_tokens(0.0, 4), 1.0);
        assert_eq!(expected_tokens(1.0, 4), 5.0);
        assert!((expected_tokens(0.5, 2) - 1.75).abs() < 1e-12);
    }

    fn config(latency: Option<LatencyModel>) -> SpeculativeConfig {
        SpeculativeConfig {
            latency,
            ..SpeculativeConfig::prompt_lookup(4, 1, 3)
        }
    }

    /// SmolLM2 on one CPU thread, roughly: a fixed 6 ms per step, 0.8 ms per prompt token,
    /// 1.3 ms per decode.
    fn cpu() -> LatencyModel {
        LatencyModel::from_coefficients(LatencyCoefficients {
            base_s: 0.006,
            per_prefill_token_s: 0.0008,
            per_decode_seq_s: 0.0013,
            per_decode_context_token_s: 1e-6,
            per_prefill_attention_pair_s: 1e-9,
        })
    }

    fn free(_: usize) -> f64 {
        0.0
    }

    fn decodes(contexts: &[usize]) -> StepShape {
        let mut shape = StepShape::default();
        for &c in contexts {
            shape.add_decode(c);
        }
        shape
    }

    #[test]
    fn one_stream_speculates_and_a_compute_bound_batch_does_not() {
        let cfg = config(Some(cpu()));
        let spec = Speculation { config: &cfg };
        let cand = |acceptance| Candidate {
            context: 200,
            drafts: 4,
            acceptance,
        };
        // One stream: the step is mostly fixed cost, drafts pay even at 40 % acceptance.
        assert!(spec.choose(decodes(&[200]), &[cand(0.4)], 100, &free)[0] > 0);
        assert_eq!(
            spec.choose(decodes(&[200]), &[cand(0.0)], 100, &free),
            vec![0]
        );
        // 32 streams: a draft costs about what a decode yields.
        let contexts = vec![200; 32];
        assert_eq!(
            spec.choose(decodes(&contexts), &[cand(0.4)], 100, &free),
            vec![0]
        );
        // Beside a long prompt chunk, whose time the step takes anyway, drafts pay even at
        // 32 streams.
        let mut busy = decodes(&contexts);
        busy.add_prefill(0, 2048);
        assert!(spec.choose(busy, &[cand(0.4)], 100, &free)[0] > 0);
        // No budget, no drafts.
        assert_eq!(
            spec.choose(decodes(&[200]), &[cand(0.9)], 0, &free),
            vec![0]
        );
        // Without a latency model every draft is verified, within the budget.
        let always = config(None);
        let spec = Speculation { config: &always };
        assert_eq!(
            spec.choose(decodes(&[200, 200]), &[cand(0.0), cand(0.0)], 6, &free),
            vec![4, 2]
        );
    }

    #[test]
    fn a_draft_model_as_slow_as_the_target_never_pays() {
        let cfg = config(Some(cpu()));
        let spec = Speculation { config: &cfg };
        let cand = Candidate {
            context: 200,
            drafts: 4,
            acceptance: 0.6,
        };
        // A draft model a tenth of the target's step pays; one as slow as the target does not.
        assert!(
            spec.choose(decodes(&[200]), std::slice::from_ref(&cand), 100, &|_| {
                0.0008
            })[0]
                > 0
        );
        assert_eq!(
            spec.choose(decodes(&[200]), &[cand], 100, &|_| 0.0075),
            vec![0]
        );
    }
}
