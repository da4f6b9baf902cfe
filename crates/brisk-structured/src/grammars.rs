//! The per-model half of structured outputs: token trie, parser factory, grammar cache.
//!
//! llguidance's `ParserFactory` holds what every grammar of one tokenizer shares: the
//! token trie and its precomputed slices (token classes that make mask computation
//! fast). It is built once per served model from `Tokenizer::token_bytes`. The
//! tokenizer environment is llguidance's `ApproximateTokEnv` (greedy, non-canonical
//! tokenization): llguidance tokenizes text only to force tokens, which brisk does not
//! ask for, so the real tokenizer is not needed here.
//!
//! Compiling is the slow part (milliseconds, seconds for a large schema), so compiled
//! grammars are cached by their spec and deep-cloned per sequence (a deep clone copies
//! the lexer's caches too, so sequences never contend for them).

use std::sync::{Arc, Mutex, PoisonError};

use brisk_tokenizer::Tokenizer;
use llguidance::api::ParserLimits;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};

use crate::cache::LruCache;
use crate::{spec, Constraint, GrammarError, GrammarSpec};

/// Compiled grammars kept per model.
const CACHE_ENTRIES: usize = 64;

/// llguidance's limits, set explicitly: its defaults, which bound every mask at roughly
/// 15 ms of lexer work and 3 ms of parser work (so a pathological grammar fails its
/// sequence instead of stalling the others), with fewer lexer states (each costs 1–2 kB
/// per sequence).
fn limits() -> ParserLimits {
    ParserLimits {
        max_items_in_row: 2_000,
        initial_lexer_fuel: 1_000_000,
        step_lexer_fuel: 200_000,
        step_max_items: 50_000,
        max_lexer_states: 100_000,
        max_grammar_size: 500_000,
        precompute_large_lexemes: true,
        // Errors go back to clients: the problem, not a dump of parser state.
        verbose_errors: false,
    }
}

/// One per served model: the tokenizer environment, the llguidance parser factory,
/// and a small LRU cache of compiled grammars. Send + Sync; share it in an `Arc`.
pub struct Grammars {
    factory: ParserFactory,
    eos_ids: Arc<[u32]>,
    vocab_size: usize,
    cache: Mutex<LruCache<Matcher>>,
}

impl Grammars {
    /// Builds the token trie of `tokenizer` (its EOS ids end grammars) and the factory.
    pub fn new(tokenizer: &Tokenizer) -> Result<Self, GrammarError> {
        let words = tokenizer.token_bytes();
        let vocab_size = words.len();
        let eos_ids: Vec<u32> = tokenizer
            .eos_ids()
            .iter()
            .copied()
            .filter(|&id| (id as usize) < vocab_size)
            .collect();
        let Some(&tok_eos) = eos_ids.first() else {
            return Err(GrammarError::new(
                "the tokenizer has no end-of-sequence token, which constrained decoding needs",
            ));
        };
        let info = TokRxInfo {
            vocab_size: u32::try_from(vocab_size)
                .map_err(|_| GrammarError::new("the vocabulary has more than 2^32 tokens"))?,
            tok_eos,
            tok_bos: tokenizer.bos_id(),
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: None,
        };
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&eos_ids);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| GrammarError::new(format!("cannot set up constrained decoding: {e}")))?;
        factory.quiet();
        *factory.limits_mut() = limits();
        Ok(Self {
            factory,
            eos_ids: eos_ids.into(),
            vocab_size,
            cache: Mutex::new(LruCache::new(CACHE_ENTRIES)),
        })
    }

    /// Compiles (or takes from the cache) a fresh constraint for one sequence. May take
    /// milliseconds to seconds: run it off the engine thread. Refuses malformed or
    /// oversized schemas, grammars and regexes, and grammars that cannot start, with a
    /// message naming the problem.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint, GrammarError> {
        let key = spec::cache_key(spec)?;
        let cached = self.lock_cache().get(&key).map(Matcher::deep_clone);
        let matcher = match cached {
            Some(matcher) => matcher,
            None => {
                let fresh = self.build(spec)?;
                let copy = fresh.deep_clone();
                self.lock_cache().insert(key, fresh);
                copy
            }
        };
        Ok(Constraint::new(
            matcher,
            Arc::clone(&self.eos_ids),
            self.vocab_size,
        ))
    }

    /// Number of token ids the masks cover (the tokenizer's vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn build(&self, spec: &GrammarSpec) -> Result<Matcher, GrammarError> {
        let what = spec::what(spec);
        let grammar = spec::to_grammar(spec)?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GrammarError::new(format!("invalid {what}: {e}")))?;
        let mut matcher = Matcher::new(Ok(parser));
        // The first mask finds grammars that cannot produce anything (an unsatisfiable
        // schema) now, as a refusal, rather than as a failed sequence later.
        matcher
            .compute_mask_or_eos()
            .map_err(|e| GrammarError::new(format!("invalid {what}: {e}")))?;
        Ok(matcher)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, LruCache<Matcher>> {
        // The cache holds no invariant a panic could break.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field("vocab_size", &self.vocab_size)
            .field("eos_ids", &self.eos_ids)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammars_and_constraints_cross_threads() {
        fn shared<T: Send + Sync>() {}
        fn sent<T: Send>() {}
        shared::<Grammars>();
        sent::<Constraint>();
    }
}
