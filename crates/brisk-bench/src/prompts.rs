//! Prompts of exact token lengths.
//!
//! The default sends token-id arrays (`"prompt": [ids]`, accepted by brisk, vLLM and
//! llama.cpp), drawn from a safe id range, so lengths are exact with no tokenizer.
//! Mooncake prefix blocks become id blocks generated from (seed, hash id), so two
//! requests naming the same hash id really share that block — prefix caching is
//! exercised as in production. Text prompts come from ShareGPT turns or a seeded
//! word list; with a tokenizer — a local GGUF's, or the target server's own over its
//! `/tokenize` and `/detokenize` endpoints ([`crate::remote_tokenizer`]) — they are cut to
//! the exact token count; without one 1 word ≈ 1 token and the report says
//! `prompt_lengths_exact: false`.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::args::PromptFormat;
use crate::error::BenchError;
use crate::remote_tokenizer::RemoteTokenizer;
use crate::workload::Workload;

/// Ids are drawn from here: past the special and byte tokens of common vocabularies,
/// below the vocabulary size of small models (SmolLM2's is 49,152).
const ID_RANGE: std::ops::Range<u32> = 1000..20_000;

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "time", "people", "water",
    "world", "house", "river", "city", "light", "music", "garden", "number", "story", "window",
    "mountain", "paper", "system", "question", "market", "animal", "history", "summer", "letter",
    "bridge", "friend",
];

/// A prompt as sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// Token ids.
    Ids(Vec<u32>),
    /// Text.
    Text(String),
}

/// Where text prompts are measured in tokens.
enum Tokens {
    Local(Box<brisk_tokenizer::Tokenizer>, String),
    Remote(RemoteTokenizer),
}

impl Tokens {
    async fn encode(&self, text: &str) -> Result<Vec<u32>, BenchError> {
        match self {
            Tokens::Local(t, _) => t
                .encode(text, false)
                .map_err(|e| BenchError::Tokenizer(e.to_string())),
            Tokens::Remote(t) => t.encode(text).await,
        }
    }

    async fn decode(&self, ids: &[u32]) -> Result<String, BenchError> {
        match self {
            Tokens::Local(t, _) => t
                .decode(ids, false)
                .map_err(|e| BenchError::Tokenizer(e.to_string())),
            Tokens::Remote(t) => t.decode(ids).await,
        }
    }
}

/// Builds every request's prompt.
pub struct PromptBuilder {
    format: PromptFormat,
    seed: u64,
    tokenizer: Option<Tokens>,
    texts: Vec<String>,
}

fn block_rng(seed: u64, hash: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ hash.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl PromptBuilder {
    /// `texts` (ShareGPT turns) replace the word list for text prompts when non-empty.
    pub fn new(
        format: PromptFormat,
        seed: u64,
        tokenizer_gguf: Option<&Path>,
        texts: Vec<String>,
    ) -> Result<Self, BenchError> {
        let tokenizer = match tokenizer_gguf {
            Some(p) if format == PromptFormat::Text => {
                let file = brisk_gguf::GgufFile::open(p)
                    .map_err(|e| BenchError::Tokenizer(format!("{}: {e}", p.display())))?;
                Some(Tokens::Local(
                    Box::new(
                        brisk_tokenizer::Tokenizer::from_gguf(&file)
                            .map_err(|e| BenchError::Tokenizer(e.to_string()))?,
                    ),
                    p.display().to_string(),
                ))
            }
            _ => None,
        };
        Ok(Self {
            format,
            seed,
            tokenizer,
            texts,
        })
    }

    /// Measures text prompts with the target server's tokenizer (replacing a local one).
    pub fn with_server_tokenizer(mut self, tokenizer: RemoteTokenizer) -> Self {
        if self.format == PromptFormat::Text {
            self.tokenizer = Some(Tokens::Remote(tokenizer));
        }
        self
    }

    /// Whether text prompts are measured with a tokenizer (always true for token ids).
    pub fn has_tokenizer(&self) -> bool {
        self.format == PromptFormat::Ids || self.tokenizer.is_some()
    }

    /// How prompt lengths are measured, for the report: `token-ids`, `server:/tokenize`,
    /// `local:PATH`, or `none` (text at 1 word ≈ 1 token).
    pub fn describe(&self) -> String {
        match (&self.format, &self.tokenizer) {
            (PromptFormat::Ids, _) => "token-ids".into(),
            (_, Some(Tokens::Remote(_))) => "server:/tokenize".into(),
            (_, Some(Tokens::Local(_, path))) => format!("local:{path}"),
            (_, None) => "none".into(),
        }
    }

    /// All prompts, and whether every one has exactly its requested token count.
    ///
    /// `salt` varies the contents and keeps the lengths: runs of one sweep get different
    /// salts, so no rate finds the previous rate's prompts in the server's prefix cache
    /// (shared Mooncake blocks stay shared within a run).
    pub async fn build(&self, w: &Workload, salt: u64) -> Result<(Vec<Prompt>, bool), BenchError> {
        let seed = self.seed ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut exact = self.format == PromptFormat::Ids || self.tokenizer.is_some();
        let mut out = Vec::with_capacity(w.requests.len());
        for (i, r) in w.requests.iter().enumerate() {
            let mut own = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(i as u64 + 1));
            match self.format {
                PromptFormat::Ids => {
                    let mut ids = Vec::with_capacity(r.prompt_len);
                    for &h in &r.block_hashes {
                        if ids.len() >= r.prompt_len {
                            break;
                        }
                        let mut rng = block_rng(seed, h);
                        ids.extend((0..w.block_size).map(|_| rng.random_range(ID_RANGE)));
                    }
                    ids.truncate(r.prompt_len);
                    while ids.len() < r.prompt_len {
                        ids.push(own.random_range(ID_RANGE));
                    }
                    out.push(Prompt::Ids(ids));
                }
                PromptFormat::Text => {
                    let words = self.words(w, i, seed, &mut own);
                    let (text, ok) = self.fit(&words, r.prompt_len).await?;
                    exact &= ok;
                    out.push(Prompt::Text(text));
                }
            }
        }
        Ok((out, exact))
    }

    /// At least `prompt_len + 16` words for request `i`: its shared blocks first, then
    /// ShareGPT text (or the word list), repeated as needed.
    fn words(&self, w: &Workload, i: usize, seed: u64, own: &mut StdRng) -> Vec<String> {
        let r = &w.requests[i];
        let need = r.prompt_len + 16;
        let mut words = Vec::with_capacity(need);
        for &h in &r.block_hashes {
            let mut rng = block_rng(seed, h);
            words.extend(
                (0..w.block_size).map(|_| WORDS[rng.random_range(0..WORDS.len())].to_string()),
            );
        }
        if self.texts.is_empty() {
            while words.len() < need {
                words.push(WORDS[own.random_range(0..WORDS.len())].to_string());
            }
        } else {
            let text = &self.texts[own.random_range(0..self.texts.len())];
            let src: Vec<&str> = text.split_whitespace().collect();
            words.extend(
                src.iter()
                    .cycle()
                    .take(need.saturating_sub(words.len()))
                    .map(|s| s.to_string()),
            );
        }
        words
    }

    async fn fit(&self, words: &[String], n: usize) -> Result<(String, bool), BenchError> {
        let Some(tok) = &self.tokenizer else {
            return Ok((words[..n.min(words.len())].join(" "), false));
        };
        let mut ids = tok.encode(&words.join(" ")).await?;
        if ids.len() < n {
            // Words are ≥ 1 token each, so `words` (≥ n + 16 of them) never runs short.
            return Ok((tok.decode(&ids).await?, false));
        }
        ids.truncate(n);
        // Decoding and re-encoding can merge or split tokens at the cut: trim and retry.
        for _ in 0..4 {
            let text = tok.decode(&ids).await?;
            let m = tok.encode(&text).await?.len();
            if m == n {
                return Ok((text, true));
            }
            if m < n || ids.len() <= m - n {
                return Ok((text, false));
            }
            ids.truncate(ids.len() - (m - n));
        }
        Ok((tok.decode(&ids).await?, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::RequestSpec;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn req(prompt_len: usize, block_hashes: Vec<u64>) -> RequestSpec {
        RequestSpec {
            arrival_s: 0.0,
            prompt_len,
            output_len: 1,
            block_hashes,
            client: None,
        }
    }

    #[test]
    fn requests_naming_the_same_block_share_its_ids() {
        let w = Workload {
            requests: vec![req(10, vec![7, 1]), req(9, vec![7, 2]), req(4, vec![])],
            block_size: 4,
            from_trace: true,
            source: String::new(),
        };
        let b = PromptBuilder::new(PromptFormat::Ids, 3, None, vec![]).unwrap();
        let (p, exact) = block(b.build(&w, 0)).unwrap();
        assert!(exact);
        let ids: Vec<Vec<u32>> = p
            .into_iter()
            .map(|p| match p {
                Prompt::Ids(v) => v,
                Prompt::Text(_) => unreachable!(),
            })
            .collect();
        assert_eq!(ids.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 9, 4]);
        assert_eq!(ids[0][..4], ids[1][..4]);
        assert_ne!(ids[0][4..8], ids[1][4..8]);
    }

    #[test]
    fn a_new_salt_changes_every_prompt_but_no_length_or_sharing() {
        let w = Workload {
            requests: vec![req(10, vec![7, 1]), req(9, vec![7, 2])],
            block_size: 4,
            from_trace: true,
            source: String::new(),
        };
        let b = PromptBuilder::new(PromptFormat::Ids, 0, None, vec![]).unwrap();
        let ids = |salt| -> Vec<Vec<u32>> {
            block(b.build(&w, salt))
                .unwrap()
                .0
                .into_iter()
                .map(|p| match p {
                    Prompt::Ids(ids) => ids,
                    Prompt::Text(_) => unreachable!(),
                })
                .collect()
        };
        let (a, c) = (ids(0), ids(2.0f64.to_bits()));
        assert_eq!(a, ids(0));
        for (x, y) in a.iter().zip(&c) {
            assert_eq!(x.len(), y.len());
            assert_ne!(x[..4], y[..4]);
        }
        assert_eq!(c[0][..4], c[1][..4], "block 7 still shared within a run");
    }

    #[test]
    fn text_without_a_tokenizer_is_approximate() {
        let w = Workload {
            requests: vec![req(5, vec![])],
            block_size: 0,
            from_trace: false,
            source: String::new(),
        };
        let b = PromptBuilder::new(PromptFormat::Text, 0, None, vec![]).unwrap();
        let (p, exact) = block(b.build(&w, 0)).unwrap();
        assert!(!exact);
        let Prompt::Text(t) = &p[0] else {
            unreachable!()
        };
        assert_eq!(t.split(' ').count(), 5);
    }
}
