//! Constraints on what a sequence may sample next (a JSON schema, a regex, a grammar).
//!
//! The sampler knows nothing of grammars: a constraint only masks a logit row and is told
//! which token was kept. The split between [`TokenConstraint::prepare`] (work out the
//! allowed set: the expensive part) and [`TokenConstraint::mask`] (apply it) lets the engine
//! compute step N's masks on another thread while step N's forward pass runs.

use std::fmt::Debug;

use brisk_types::TokenId;

/// One sequence's constraint, advanced token by token.
pub trait TokenConstraint: Send + Debug {
    /// Works out which tokens may come next (after the last committed one).
    fn prepare(&mut self) -> Result<(), String>;
    /// Sets the logit of every token not allowed to `-inf`, as of the last `prepare`. The
    /// row may be longer than the tokenizer's vocabulary (padded): the padding is never
    /// allowed. At least one token (an end-of-sequence token, if nothing else) stays.
    fn mask(&self, logits: &mut [f32]);
    /// Advances past a token the sequence kept; an error when the token was not allowed.
    fn commit(&mut self, token: TokenId) -> Result<(), String>;
    /// Nothing more may follow: the sequence ends here as a stop.
    fn is_finished(&self) -> bool;
}

/// A compiled constraint, shared by every sequence that asks for it: each starts its own
/// [`TokenConstraint`] at the beginning of the output.
pub trait ConstraintSource: Send + Sync + Debug {
    /// A fresh constraint for one sequence.
    fn start(&self) -> Box<dyn TokenConstraint>;
}
