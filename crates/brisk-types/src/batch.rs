//! The packed batch a backend executes in one step, and what it returns.

use crate::{BlockId, TokenId};

/// Which positions of a sequence's chunk need logits.
///
/// Only the positions that will be sampled (or inspected) pay for the LM head, which for a
/// small model is a large share of a step: a prefill chunk that does not end the prompt needs
/// none, the last chunk and a decode token need one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsWanted {
    /// No logits (an intermediate prefill chunk).
    None,
    /// Logits for the last token of the chunk.
    Last,
    /// Logits for every token of the chunk (teacher forcing, prompt logprobs).
    All,
}

/// One sequence's share of a step: `tokens` at positions `start_pos..start_pos + tokens.len()`.
#[derive(Clone, Debug)]
pub struct SeqStep<'a> {
    /// The tokens to run: a prompt chunk, or the single token being decoded.
    pub tokens: &'a [TokenId],
    /// Position of `tokens[0]`; positions `0..start_pos` are already in the KV pool.
    pub start_pos: usize,
    /// Physical block of each logical block of the sequence; it must cover
    /// `start_pos + tokens.len()` positions.
    pub block_table: &'a [BlockId],
    /// Which of these positions need logits.
    pub logits: LogitsWanted,
}

impl SeqStep<'_> {
    /// Number of logit rows this sequence asks for.
    pub fn logit_rows(&self) -> usize {
        match self.logits {
            LogitsWanted::None => 0,
            LogitsWanted::Last => usize::from(!self.tokens.is_empty()),
            LogitsWanted::All => self.tokens.len(),
        }
    }
}

/// A packed batch: any mix of prefill chunks and decode tokens of different sequences.
#[derive(Clone, Debug, Default)]
pub struct StepBatch<'a> {
    /// The sequences of this step, in the order their logits come back.
    pub seqs: Vec<SeqStep<'a>>,
}

impl StepBatch<'_> {
    /// Total number of tokens in the step.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }
}

/// Logits of one step: for each sequence of the batch, in order, `logit_rows()` rows of
/// `vocab_size` values each, laid end to end.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    /// Row-major logits, `vocab_size` per row.
    pub logits: Vec<f32>,
    /// Number of columns in a row.
    pub vocab_size: usize,
    /// For each sequence of the batch, the index of its first row in `logits`.
    pub first_row: Vec<usize>,
}

impl StepOutput {
    /// The `row`-th logit row of sequence `seq` (0 is its first requested position).
    pub fn row(&self, seq: usize, row: usize) -> &[f32] {
        let r = self.first_row[seq] + row;
        &self.logits[r * self.vocab_size..(r + 1) * self.vocab_size]
    }

    /// The last logit row of sequence `seq` (the one to sample from after a prefill or decode).
    pub fn last_row(&self, seq: usize) -> &[f32] {
        let end = self
            .first_row
            .get(seq + 1)
            .copied()
            .unwrap_or(self.logits.len() / self.vocab_size.max(1));
        assert!(
            end > self.first_row[seq],
            "sequence {seq} asked for no logits"
        );
        self.row(seq, end - 1 - self.first_row[seq])
    }
}
