//! One sequence's grammar state, and the mask it puts on the logits.
//!
//! A [`Constraint`] wraps an llguidance `Matcher`, the interface llguidance meant for
//! servers: no forced tokens, no backtracking, one token at a time. The engine asks for
//! [`Constraint::next_mask`] before sampling, applies it with [`TokenMask::apply`], and
//! reports the sampled token with [`Constraint::commit`]. A token the mask did not allow
//! is refused without changing the state, so a caller's bug cannot poison the sequence.

use std::sync::Arc;

use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;

use crate::GrammarError;

/// The allowed next tokens of one constrained sequence.
#[derive(Clone)]
pub struct TokenMask {
    allowed: SimpleVob,
}

impl TokenMask {
    /// Whether `token` may come next; ids outside the vocabulary never may.
    pub fn allows(&self, token: u32) -> bool {
        (token as usize) < self.allowed.len() && self.allowed.is_allowed(token)
    }

    /// Sets every logit of a token the mask does not allow to -inf. `logits` may be
    /// longer than the tokenizer vocabulary (padded model rows): the extra entries are
    /// disallowed too.
    pub fn apply(&self, logits: &mut [f32]) {
        let covered = self.allowed.len().min(logits.len());
        let (inside, padding) = logits.split_at_mut(covered);
        // One 32-bit word of the mask per 32 logits: whole allowed words are skipped.
        for (chunk, &bits) in inside.chunks_mut(32).zip(self.allowed.as_slice()) {
            if bits == u32::MAX {
                continue;
            }
            for (bit, logit) in chunk.iter_mut().enumerate() {
                if bits & (1 << bit) == 0 {
                    *logit = f32::NEG_INFINITY;
                }
            }
        }
        padding.fill(f32::NEG_INFINITY);
    }

    /// How many tokens are allowed.
    pub fn count(&self) -> usize {
        self.allowed.num_set()
    }

    /// The allowed token ids, in increasing order.
    pub fn allowed_tokens(&self) -> Vec<u32> {
        self.allowed.to_list()
    }
}

impl std::fmt::Debug for TokenMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMask")
            .field("allowed", &self.count())
            .field("of", &self.allowed.len())
            .finish()
    }
}

/// One sequence's grammar state (an llguidance `Matcher`). Cloning copies the state
/// (e.g. for `n` choices of one request).
pub struct Constraint {
    matcher: Matcher,
    /// The tokenizer's end-of-sequence ids.
    eos_ids: Arc<[u32]>,
    vocab_size: usize,
}

impl Constraint {
    pub(crate) fn new(matcher: Matcher, eos_ids: Arc<[u32]>, vocab_size: usize) -> Self {
        Self {
            matcher,
            eos_ids,
            vocab_size,
        }
    }

    /// The tokens allowed next (EOS included when the grammar may end here; only EOS
    /// once it is finished). Err if the matcher is in an error state, or no token can
    /// continue the output.
    pub fn next_mask(&mut self) -> Result<TokenMask, GrammarError> {
        self.matcher
            .compute_mask_or_eos()
            .map(|allowed| TokenMask { allowed })
            .map_err(|e| GrammarError::new(format!("the grammar cannot continue: {e}")))
    }

    /// Advances past a sampled token; Err if the token was not allowed (the state is
    /// then unchanged). EOS after a finished grammar is accepted.
    pub fn commit(&mut self, token: u32) -> Result<(), GrammarError> {
        if token as usize >= self.vocab_size {
            // llguidance would stop the matcher for good on an out-of-range id.
            return Err(GrammarError::new(format!(
                "token {token} is outside the vocabulary of {}",
                self.vocab_size
            )));
        }
        if self.is_finished() {
            return if self.eos_ids.contains(&token) {
                Ok(())
            } else {
                Err(GrammarError::new(format!(
                    "token {token} after the grammar was complete"
                )))
            };
        }
        match self.matcher.try_consume_tokens(&[token]) {
            Ok(1) => Ok(()),
            Ok(_) => Err(GrammarError::new(format!(
                "token {token} is not allowed by the grammar here"
            ))),
            Err(e) => Err(GrammarError::new(format!(
                "the grammar cannot take token {token}: {e}"
            ))),
        }
    }

    /// The grammar is complete and allows nothing more (the sequence should end as a
    /// stop).
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped() && !self.matcher.is_error()
    }

    /// Why the matcher failed, if it did.
    pub fn error(&self) -> Option<String> {
        self.matcher.get_error()
    }
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Self {
            matcher: self.matcher.deep_clone(),
            eos_ids: Arc::clone(&self.eos_ids),
            vocab_size: self.vocab_size,
        }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("finished", &self.is_finished())
            .field("error", &self.matcher.get_error())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(size: usize, allowed: &[u32]) -> TokenMask {
        let mut vob = SimpleVob::alloc(size);
        allowed.iter().for_each(|&t| vob.allow_token(t));
        TokenMask { allowed: vob }
    }

    #[test]
    fn apply_disallows_padding_and_unset_tokens() {
        let mask = mask(70, &[0, 33, 64, 69]);
        let mut logits = vec![1.0f32; 80];
        mask.apply(&mut logits);
        for (id, &logit) in logits.iter().enumerate() {
            let allowed = [0, 33, 64, 69].contains(&id);
            assert_eq!(logit == 1.0, allowed, "id {id}");
            assert_eq!(mask.allows(id as u32), allowed, "id {id}");
        }
        assert!(!mask.allows(u32::MAX));
        assert_eq!(mask.count(), 4);
        assert_eq!(mask.allowed_tokens(), [0, 33, 64, 69]);
        assert_eq!(format!("{mask:?}"), "TokenMask { allowed: 4, of: 70 }");
    }

    #[test]
    fn apply_skips_fully_allowed_words_and_handles_short_rows() {
        let all: Vec<u32> = (0..64).collect();
        let mask = mask(64, &all);
        let mut logits = vec![0.5f32; 40];
        mask.apply(&mut logits);
        assert!(logits.iter().all(|&l| l == 0.5));
    }
}
