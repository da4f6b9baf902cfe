//! llama.cpp's GBNF grammars, converted to llguidance's Lark syntax.
//!
//! The syntax follows llama.cpp's `grammars/README.md` and `llama-grammar.cpp`: rules
//! `name ::= alternatives`, one per line unless inside parentheses or after `|`, `root`
//! the start rule; `"strings"` and `[classes]` (with `^` negation and ranges) with the
//! escapes `\n \r \t \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH` (and any escaped punctuation);
//! `.` for any character; `( )` groups; `|`; `* + ?` and `{m}`, `{m,}`, `{m,n}`, `{,n}`;
//! `#` comments. Not supported: llama.cpp's token references (`<[id]>`, `<|tok|>`).
//!
//! The translation keeps GBNF's meaning exactly by making every lexeme one character:
//! a class is `/[...]/` (every non-alphanumeric character written `\x{..}`), `.` is
//! `/(?s:.)/`, a string is a sequence of one-character literals, and every GBNF rule is
//! a Lark rule. llguidance's lexer is greedy: with longer lexemes (what llguidance's own
//! `gbnf_to_lark.py` makes of non-recursive rules) a lexeme that could go on swallows
//! what the grammar wanted next, so llama.cpp's `arithmetic.gbnf` (`num ::= [0-9]+ ws`,
//! `ws ::= [ \t\n]*`, then `"\n"`) could never finish. The price is speed: the Earley
//! parser takes a step per character, about 1.5 ms per mask inside free text for
//! SmolLM2's 49k tokens (4,000 Earley items, far below the 50,000 limit), against
//! microseconds for Lark terminals or a JSON schema, which are the fast paths.

use std::collections::{HashMap, HashSet};

use crate::spec::lark_string;
use crate::GrammarError;

mod parse;
#[cfg(test)]
mod tests;

/// One element of a sequence.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(String),
    /// `[...]`: inclusive ranges, possibly negated.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `.`
    Any,
    Ref {
        name: String,
        line: usize,
    },
    Group(Vec<Vec<Node>>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

/// `name ::= body`, defined at `line`.
#[derive(Debug)]
struct Rule {
    name: String,
    line: usize,
    body: Vec<Vec<Node>>,
}

fn error(line: usize, message: impl std::fmt::Display) -> GrammarError {
    GrammarError::new(format!("invalid GBNF grammar: line {line}: {message}"))
}

/// The Lark grammar equivalent to the GBNF grammar `text` (see the module docs).
pub(crate) fn to_lark(text: &str) -> Result<String, GrammarError> {
    let rules = parse::rules(text)?;
    let mut defined: HashMap<&str, &Rule> = HashMap::new();
    for rule in &rules {
        if let Some(first) = defined.insert(&rule.name, rule) {
            return Err(error(
                rule.line,
                format!(
                    "rule `{}` is already defined on line {}",
                    rule.name, first.line
                ),
            ));
        }
    }
    if !defined.contains_key("root") {
        return Err(GrammarError::new(
            "invalid GBNF grammar: there is no `root` rule to start from",
        ));
    }
    let mut refs = Vec::new();
    for rule in &rules {
        rule.body
            .iter()
            .flatten()
            .for_each(|n| collect_refs(n, &mut refs));
    }
    if let Some((name, line)) = refs.iter().find(|(name, _)| !defined.contains_key(name)) {
        return Err(error(*line, format!("rule `{name}` is not defined")));
    }
    let names = lark_names(&rules);
    let mut out = format!("start: {}\n", names["root"]);
    for rule in &rules {
        let body: Vec<String> = rule.body.iter().map(|seq| sequence(seq, &names)).collect();
        out.push_str(&format!(
            "{}: {}\n",
            names[rule.name.as_str()],
            body.join(" | ")
        ));
    }
    Ok(out)
}

fn collect_refs<'a>(node: &'a Node, out: &mut Vec<(&'a str, usize)>) {
    match node {
        Node::Ref { name, line } => out.push((name, *line)),
        Node::Group(alts) => alts.iter().flatten().for_each(|n| collect_refs(n, out)),
        Node::Repeat { node, .. } => collect_refs(node, out),
        Node::Literal(_) | Node::Class { .. } | Node::Any => {}
    }
}

/// Unique valid Lark rule names: lowercase, `-` kept, `start` reserved for the start.
fn lark_names(rules: &[Rule]) -> HashMap<&str, String> {
    let mut used: HashSet<String> = HashSet::from(["start".to_string()]);
    let mut names = HashMap::new();
    for rule in rules {
        let mut base = rule.name.to_ascii_lowercase();
        if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
            base.insert(0, 'g');
        }
        let mut name = base.clone();
        for n in 2.. {
            if used.insert(name.clone()) {
                break;
            }
            name = format!("{base}_{n}");
        }
        names.insert(rule.name.as_str(), name);
    }
    names
}

fn sequence(seq: &[Node], names: &HashMap<&str, String>) -> String {
    let parts: Vec<String> = seq.iter().filter_map(|n| node(n, names)).collect();
    if parts.is_empty() {
        "\"\"".to_string()
    } else {
        parts.join(" ")
    }
}

/// The Lark text of `n`; None for a node that matches only the empty string.
fn node(n: &Node, names: &HashMap<&str, String>) -> Option<String> {
    Some(match n {
        Node::Literal(text) if text.is_empty() => return None,
        Node::Literal(text) => {
            let chars: Vec<String> = text
                .chars()
                .map(|c| lark_string(c.encode_utf8(&mut [0; 4])))
                .collect();
            chars.join(" ")
        }
        Node::Class { negated, ranges } => {
            let mut rx = String::from(if *negated { "/[^" } else { "/[" });
            for &(lo, hi) in ranges {
                rx.push_str(&regex_char(lo));
                if hi != lo {
                    rx.push('-');
                    rx.push_str(&regex_char(hi));
                }
            }
            rx.push_str("]/");
            rx
        }
        Node::Any => "/(?s:.)/".to_string(),
        Node::Ref { name, .. } => names[name.as_str()].clone(),
        Node::Group(alts) => {
            let alts: Vec<String> = alts.iter().map(|seq| sequence(seq, names)).collect();
            format!("({})", alts.join(" | "))
        }
        Node::Repeat { max: Some(0), .. } => return None,
        Node::Repeat {
            node: inner,
            min,
            max,
        } => {
            let text = node(inner, names)?;
            // A string is a sequence of characters; groups bring their own parentheses.
            let inner = match &**inner {
                Node::Literal(s) if s.chars().count() > 1 => format!("({text})"),
                _ => text,
            };
            let op = match (min, max) {
                (0, None) => "*".to_string(),
                (1, None) => "+".to_string(),
                (0, Some(1)) => "?".to_string(),
                (m, None) => format!("{{{m},}}"),
                (m, Some(n)) if m == n => format!("{{{m}}}"),
                (m, Some(n)) => format!("{{{m},{n}}}"),
            };
            format!("{inner}{op}")
        }
    })
}

/// A character inside a regex class: alphanumerics as themselves, the rest escaped.
fn regex_char(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\x{{{:X}}}", u32::from(c))
    }
}
