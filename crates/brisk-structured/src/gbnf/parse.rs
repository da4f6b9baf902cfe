//! The GBNF parser: a recursive descent over characters, as llama.cpp's
//! `llama_grammar_parser` does, with errors that name the line.

use super::{error, Node, Rule};
use crate::GrammarError;

/// The rules of `text`, in order of definition.
pub(super) fn rules(text: &str) -> Result<Vec<Rule>, GrammarError> {
    let mut p = Parser {
        text,
        pos: 0,
        depth: 0,
    };
    let mut rules = Vec::new();
    p.space(true);
    while p.peek().is_some() {
        rules.push(p.rule()?);
        p.space(true);
    }
    Ok(rules)
}

struct Parser<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    /// Open parentheses: bounded, so that recursion cannot overflow the stack.
    depth: usize,
}

/// Parentheses nest no deeper than llguidance's Lark parser accepts.
const MAX_DEPTH: usize = 25;

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn line(&self) -> usize {
        self.text[..self.pos].matches('\n').count() + 1
    }

    fn fail<T>(&self, message: impl std::fmt::Display) -> Result<T, GrammarError> {
        Err(error(self.line(), message))
    }

    /// What is next, for error messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the grammar".to_string(),
            Some('\n') => "the end of the line".to_string(),
            Some(c) => format!("`{c}`"),
        }
    }

    /// Skips blanks and `#` comments, and line breaks when `newlines`.
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => self.pos += 1,
                '#' => {
                    let rest = &self.text[self.pos..];
                    self.pos += rest.find(['\r', '\n']).unwrap_or(rest.len());
                }
                _ => break,
            }
        }
    }

    fn name(&mut self) -> Result<String, GrammarError> {
        let rest = &self.text[self.pos..];
        let len = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
        if len == 0 {
            return self.fail(format!("expected a rule name, found {}", self.found()));
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }

    fn rule(&mut self) -> Result<Rule, GrammarError> {
        let line = self.line();
        let name = self.name()?;
        self.space(false);
        if !self.text[self.pos..].starts_with("::=") {
            return self.fail(format!(
                "expected `::=` after the rule name `{name}`, found {}",
                self.found()
            ));
        }
        self.pos += 3;
        self.space(true);
        let body = self.alternatives(false)?;
        match self.peek() {
            None | Some('\r' | '\n') => Ok(Rule { name, line, body }),
            Some(')') => self.fail("`)` without a matching `(`"),
            _ => self.fail(format!("unexpected {} in rule `{name}`", self.found())),
        }
    }

    fn alternatives(&mut self, nested: bool) -> Result<Vec<Vec<Node>>, GrammarError> {
        let mut alternatives = vec![self.sequence(nested)?];
        loop {
            // A top-level rule may go on with `|` at the start of a following line.
            let line_end = self.pos;
            self.space(true);
            if self.peek() != Some('|') {
                self.pos = line_end;
                break;
            }
            self.pos += 1;
            self.space(true);
            alternatives.push(self.sequence(nested)?);
        }
        Ok(alternatives)
    }

    fn sequence(&mut self, nested: bool) -> Result<Vec<Node>, GrammarError> {
        let mut seq: Vec<Node> = Vec::new();
        while let Some(c) = self.peek() {
            let atom = match c {
                '"' => {
                    self.pos += 1;
                    let mut text = String::new();
                    while self.peek() != Some('"') {
                        if self.peek().is_none() {
                            return self.fail("a string is not closed");
                        }
                        text.push(self.char()?);
                    }
                    self.pos += 1;
                    Node::Literal(text)
                }
                '[' => self.class()?,
                '.' => {
                    self.pos += 1;
                    Node::Any
                }
                '(' => {
                    let line = self.line();
                    if self.depth >= MAX_DEPTH {
                        return self.fail(format!("parentheses nest deeper than {MAX_DEPTH}"));
                    }
                    self.pos += 1;
                    self.space(true);
                    self.depth += 1;
                    let alternatives = self.alternatives(true)?;
                    self.depth -= 1;
                    if self.bump() != Some(')') {
                        return Err(error(line, "`(` is not closed"));
                    }
                    Node::Group(alternatives)
                }
                '*' | '+' | '?' | '{' => {
                    let Some(last) = seq.pop() else {
                        return self.fail(format!("`{c}` does not follow anything to repeat"));
                    };
                    if let Node::Repeat { .. } = last {
                        // Chains (`x*+?...`) would nest without bound; a group says it.
                        return self.fail(format!("`{c}` repeats a repetition: use parentheses"));
                    }
                    let (min, max) = self.repetition()?;
                    Node::Repeat {
                        node: Box::new(last),
                        min,
                        max,
                    }
                }
                c if is_word_char(c) => Node::Ref {
                    line: self.line(),
                    name: self.name()?,
                },
                '<' => return self.fail("token references (`<...>`) are not supported"),
                _ => break,
            };
            seq.push(atom);
            self.space(nested);
        }
        Ok(seq)
    }

    /// After `*`, `+`, `?` or `{`: the bounds.
    fn repetition(&mut self) -> Result<(u32, Option<u32>), GrammarError> {
        match self.bump() {
            Some('*') => return Ok((0, None)),
            Some('+') => return Ok((1, None)),
            Some('?') => return Ok((0, Some(1))),
            _ => {}
        }
        self.space(true);
        let min = self.number()?.unwrap_or(0);
        self.space(true);
        let max = if self.peek() == Some(',') {
            self.pos += 1;
            self.space(true);
            self.number()?
        } else {
            Some(min)
        };
        self.space(true);
        if self.bump() != Some('}') {
            return self.fail("expected `}` to close a repetition");
        }
        match max {
            Some(max) if max < min => self.fail(format!("repetition {{{min},{max}}} is empty")),
            _ => Ok((min, max)),
        }
    }

    fn number(&mut self) -> Result<Option<u32>, GrammarError> {
        let rest = &self.text[self.pos..];
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if len == 0 {
            return Ok(None);
        }
        self.pos += len;
        match rest[..len].parse() {
            Ok(n) => Ok(Some(n)),
            Err(_) => self.fail(format!("repetition count {} is too large", &rest[..len])),
        }
    }

    fn class(&mut self) -> Result<Node, GrammarError> {
        let line = self.line();
        self.pos += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            match self.peek() {
                None => return Err(error(line, "a character class `[` is not closed")),
                Some(']') => break,
                _ => {}
            }
            let lo = self.char()?;
            let rest = &self.text[self.pos..];
            let hi = if rest.starts_with('-') && !rest.starts_with("-]") {
                self.pos += 1;
                let hi = self.char()?;
                if hi < lo {
                    return self.fail(format!("the range {lo:?}-{hi:?} is reversed"));
                }
                hi
            } else {
                lo
            };
            ranges.push((lo, hi));
        }
        self.pos += 1;
        if ranges.is_empty() {
            return Err(error(line, "a character class `[]` is empty"));
        }
        Ok(Node::Class { negated, ranges })
    }

    /// One character of a string or class, escapes decoded.
    fn char(&mut self) -> Result<char, GrammarError> {
        let Some(c) = self.bump() else {
            return self.fail("unexpected end of the grammar");
        };
        if c != '\\' {
            return Ok(c);
        }
        let hex = |p: &mut Self, digits: usize| -> Result<char, GrammarError> {
            let text = p.text[p.pos..].get(..digits).unwrap_or("");
            let code = (text.len() == digits && text.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(text, 16).ok())
                .flatten();
            match code.and_then(char::from_u32) {
                Some(c) => {
                    p.pos += digits;
                    Ok(c)
                }
                None => p.fail(format!(
                    "invalid escape: expected {digits} hex digits of a character"
                )),
            }
        };
        match self.bump() {
            Some('n') => Ok('\n'),
            Some('r') => Ok('\r'),
            Some('t') => Ok('\t'),
            Some('x') => hex(self, 2),
            Some('u') => hex(self, 4),
            Some('U') => hex(self, 8),
            Some(c) if c.is_ascii_punctuation() => Ok(c),
            Some(c) => self.fail(format!("unknown escape `\\{c}`")),
            None => self.fail("unexpected end of the grammar after `\\`"),
        }
    }
}
