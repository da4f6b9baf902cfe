//! A compiled grammar as the engine core takes it (`brisk_sampling`'s constraint traits):
//! every sequence that asks for it starts from its own copy, and works out its mask in
//! [`TokenConstraint::prepare`], which the engine runs beside the forward pass.

use std::sync::Mutex;

use brisk_sampling::{ConstraintSource, TokenConstraint};

use crate::{Constraint, TokenMask};

/// A compiled grammar, shared by the sequences of one request.
#[derive(Debug)]
pub struct SharedGrammar(Mutex<Constraint>);

impl SharedGrammar {
    /// Shares `constraint` (fresh from [`crate::Grammars::compile`]).
    pub fn new(constraint: Constraint) -> Self {
        Self(Mutex::new(constraint))
    }
}

impl ConstraintSource for SharedGrammar {
    fn start(&self) -> Box<dyn TokenConstraint> {
        let constraint = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Box::new(SequenceGrammar {
            constraint,
            mask: None,
        })
    }
}

/// One sequence's grammar with the mask of its next token.
#[derive(Debug)]
struct SequenceGrammar {
    constraint: Constraint,
    mask: Option<TokenMask>,
}

impl TokenConstraint for SequenceGrammar {
    fn prepare(&mut self) -> Result<(), String> {
        self.mask = Some(self.constraint.next_mask().map_err(|e| e.message)?);
        Ok(())
    }

    fn mask(&self, logits: &mut [f32]) {
        match &self.mask {
            Some(mask) => mask.apply(logits),
            // Not prepared: nothing is known to be allowed, and nothing is let through.
            None => logits.fill(f32::NEG_INFINITY),
        }
    }

    fn commit(&mut self, token: u32) -> Result<(), String> {
        self.mask = None;
        self.constraint.commit(token).map_err(|e| e.message)
    }

    fn is_finished(&self) -> bool {
        self.constraint.is_finished()
    }
}
