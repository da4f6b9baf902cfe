//! Shared by the integration tests: the tiny tokenizer, and a random walk through a
//! constraint that ends as soon as it can.
#![allow(dead_code)]

use brisk_structured::{Constraint, GrammarSpec, Grammars};
use brisk_tokenizer::Tokenizer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// brisk-tokenizer's tiny byte-level tokenizer (280 tokens, EOS `<|im_end|>`).
pub fn tiny() -> Tokenizer {
    let dir = tempfile::tempdir().unwrap();
    brisk_tokenizer::testing::write_tiny_tokenizer_json(dir.path()).unwrap();
    Tokenizer::from_hf_dir(dir.path()).unwrap()
}

/// What one random walk produced.
#[derive(Debug)]
pub struct Walk {
    pub text: String,
    /// The grammar completed (EOS was committed, or it allowed nothing more).
    pub finished: bool,
}

/// Random walks through constraints over one tokenizer's vocabulary.
pub struct Walker<'a> {
    tok: &'a Tokenizer,
    bytes: Vec<Vec<u8>>,
    /// Tokens that close something: `"`, `}`, `]`, `)`, a line.
    closers: Vec<u32>,
}

impl<'a> Walker<'a> {
    pub fn new(tok: &'a Tokenizer) -> Self {
        let bytes = tok.token_bytes();
        let closers = (0u32..)
            .zip(&bytes)
            .filter(|(_, b)| matches!(b.as_slice(), b"\"" | b"}" | b"]" | b")" | b"\n"))
            .map(|(id, _)| id)
            .collect();
        Self {
            tok,
            bytes,
            closers,
        }
    }

    /// Samples allowed tokens at random until the grammar completes or `cap` tokens.
    /// To end in reasonable time the walk takes EOS half the time it may, and a closing
    /// token a third of the time one is allowed.
    pub fn walk(&self, constraint: &mut Constraint, seed: u64, cap: usize) -> Walk {
        let tok = self.tok;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ids = Vec::new();
        let mut finished = false;
        for _ in 0..cap {
            if constraint.is_finished() {
                finished = true;
                break;
            }
            let mask = constraint.next_mask().unwrap();
            let allowed = mask.allowed_tokens();
            assert!(!allowed.is_empty());
            let eos: Vec<u32> = tok
                .eos_ids()
                .iter()
                .copied()
                .filter(|&e| mask.allows(e))
                .collect();
            let close: Vec<u32> = self
                .closers
                .iter()
                .copied()
                .filter(|&c| mask.allows(c))
                .collect();
            let token = if !eos.is_empty() && rng.random_bool(0.5) {
                eos[0]
            } else if !close.is_empty() && rng.random_bool(0.33) {
                close[rng.random_range(0..close.len())]
            } else {
                allowed[rng.random_range(0..allowed.len())]
            };
            constraint.commit(token).unwrap();
            if tok.eos_ids().contains(&token) {
                assert!(constraint.is_finished(), "EOS committed but not finished");
                finished = true;
                break;
            }
            ids.push(token);
        }
        let text_bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.bytes[id as usize].clone())
            .collect();
        // A walk cut off by the cap may end inside a character.
        let text = if finished {
            let text = String::from_utf8(text_bytes).expect("constrained output is UTF-8");
            assert_eq!(text, tok.decode(&ids, false).unwrap());
            text
        } else {
            String::from_utf8_lossy(&text_bytes).into_owned()
        };
        Walk { text, finished }
    }
}

/// Runs `seeds` walks of `spec` and returns the texts of those that finished,
/// asserting that most did.
pub fn finished_texts(
    grammars: &Grammars,
    tok: &Tokenizer,
    spec: &GrammarSpec,
    seeds: u64,
    cap: usize,
) -> Vec<String> {
    let walker = Walker::new(tok);
    let texts: Vec<String> = (0..seeds)
        .map(|seed| walker.walk(&mut grammars.compile(spec).unwrap(), seed, cap))
        .filter(|w| w.finished)
        .map(|w| w.text)
        .collect();
    assert!(
        texts.len() as u64 * 2 >= seeds,
        "only {} of {seeds} walks finished",
        texts.len()
    );
    texts
}

/// No whitespace outside JSON strings (the compact form).
pub fn is_compact_json(text: &str) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_whitespace() {
            return false;
        }
    }
    true
}

/// A schema with bounded strings, numbers and arrays, so random walks end.
pub fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
            "ok": {"type": "boolean"},
            "kind": {"enum": ["x", "y", null]},
            "score": {"type": "number", "minimum": 0, "maximum": 1}
        },
        "required": ["name", "age", "tags"]
    })
}

/// The checks `person_schema` asks for, written out; `closed`: no other properties.
pub fn check_person(value: &Value, closed: bool) {
    let object = value.as_object().expect("an object");
    for key in ["name", "age", "tags"] {
        assert!(object.contains_key(key), "missing {key}: {value}");
    }
    let name = object["name"].as_str().expect("name is a string");
    assert!(name.chars().count() <= 6, "{value}");
    let age = object["age"].as_i64().expect("age is an integer");
    assert!((0..=120).contains(&age), "{value}");
    let tags = object["tags"].as_array().expect("tags is an array");
    assert!(tags.len() <= 3, "{value}");
    assert!(tags
        .iter()
        .all(|t| ["a", "b", "c"].contains(&t.as_str().unwrap_or(""))));
    if let Some(ok) = object.get("ok") {
        assert!(ok.is_boolean(), "{value}");
    }
    if let Some(kind) = object.get("kind") {
        assert!(
            [json!("x"), json!("y"), Value::Null].contains(kind),
            "{value}"
        );
    }
    if let Some(score) = object.get("score") {
        let score = score.as_f64().expect("score is a number");
        assert!((0.0..=1.0).contains(&score), "{value}");
    }
    if closed {
        let known = ["name", "age", "tags", "ok", "kind", "score"];
        assert!(
            object.keys().all(|k| known.contains(&k.as_str())),
            "{value}"
        );
    }
}
