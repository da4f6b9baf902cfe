//! Regexes, choices, Lark and GBNF grammars on the tiny tokenizer, and the contract of
//! `Constraint` and `TokenMask`.

mod common;

use brisk_structured::{GrammarSpec, Grammars};
use brisk_tokenizer::testing::{TINY_EOS_ID, TINY_VOCAB_SIZE};
use common::{finished_texts, tiny};

#[test]
fn regex_outputs_match_the_regex() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    for rx in [
        r"[a-z]{2,5}-[0-9]{3}",
        r"(yes|no)( [0-9]+)?",
        r"\+?[0-9]{1,3}(,[0-9]{3})*",
    ] {
        let check = regex::Regex::new(&format!("^(?:{rx})$")).unwrap();
        let texts = finished_texts(&grammars, &tok, &GrammarSpec::Regex(rx.into()), 16, 200);
        for text in texts {
            assert!(check.is_match(&text), "{text:?} does not match {rx}");
        }
    }
}

#[test]
fn choice_outputs_are_one_of_the_choices() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let choices: Vec<String> = ["red", "green", "gr\"ay", "hello world", "he"]
        .map(String::from)
        .to_vec();
    let spec = GrammarSpec::Choice(choices.clone());
    let texts = finished_texts(&grammars, &tok, &spec, 32, 50);
    assert_eq!(texts.len(), 32);
    for text in &texts {
        assert!(choices.contains(text), "{text:?}");
    }
    let distinct: std::collections::HashSet<_> = texts.iter().collect();
    assert!(distinct.len() >= 3, "{distinct:?}");
}

#[test]
fn a_disallowed_token_is_refused_and_the_state_kept() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let mut constraint = grammars.compile(&GrammarSpec::Regex("ab".into())).unwrap();
    let err = constraint.commit(u32::from(b'x')).unwrap_err();
    assert!(err.message.contains("not allowed"), "{err}");
    assert!(constraint.commit(u32::MAX).is_err());
    assert!(
        constraint.commit(TINY_EOS_ID).is_err(),
        "EOS before the end"
    );
    constraint.commit(u32::from(b'a')).unwrap();
    assert!(!constraint.is_finished());
    constraint.commit(u32::from(b'b')).unwrap();
    assert!(constraint.is_finished(), "{constraint:?}");
    assert_eq!(
        constraint.next_mask().unwrap().allowed_tokens(),
        [TINY_EOS_ID]
    );
    constraint.commit(TINY_EOS_ID).unwrap();
    assert!(constraint.commit(u32::from(b'a')).is_err());
}

#[test]
fn a_mask_on_a_padded_row_disallows_the_padding() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    assert_eq!(grammars.vocab_size(), TINY_VOCAB_SIZE);
    let mut constraint = grammars
        .compile(&GrammarSpec::Regex("[ab]+".into()))
        .unwrap();
    let mask = constraint.next_mask().unwrap();
    let mut logits = vec![0.0f32; TINY_VOCAB_SIZE + 40];
    mask.apply(&mut logits);
    let kept: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect();
    assert_eq!(kept, [usize::from(b'a'), usize::from(b'b')]);
    assert!(!mask.allows(TINY_VOCAB_SIZE as u32 + 1));
}

#[test]
fn compiled_grammars_are_cached_and_cloned_fresh() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let spec = GrammarSpec::Choice(vec!["yes".into(), "no".into()]);
    let mut first = grammars.compile(&spec).unwrap();
    first.commit(u32::from(b'y')).unwrap();
    let mut second = grammars.compile(&spec).unwrap();
    let mask = second.next_mask().unwrap();
    assert!(mask.allows(u32::from(b'y')) && mask.allows(u32::from(b'n')));
    // A clone goes on from where the original was, independently.
    let mut fork = first.clone();
    fork.commit(u32::from(b'e')).unwrap();
    let mask = first.next_mask().unwrap();
    assert!(mask.allows(u32::from(b'e')) && !mask.allows(u32::from(b's')));
    fork.commit(u32::from(b's')).unwrap();
    assert!(fork.is_finished() && !first.is_finished());
}

/// `1+2*(3-4)`-style expressions: numbers of up to three digits.
fn is_arithmetic(text: &str) -> bool {
    fn expr(s: &[u8], i: &mut usize) -> bool {
        if !term(s, i) {
            return false;
        }
        while *i < s.len() && b"+-*/".contains(&s[*i]) {
            *i += 1;
            if !term(s, i) {
                return false;
            }
        }
        true
    }
    fn term(s: &[u8], i: &mut usize) -> bool {
        if s.get(*i) == Some(&b'(') {
            *i += 1;
            return expr(s, i) && s.get(*i) == Some(&b')') && {
                *i += 1;
                true
            };
        }
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        (1..=3).contains(&(*i - start))
    }
    let mut i = 0;
    expr(text.as_bytes(), &mut i) && i == text.len()
}

#[test]
fn lark_and_gbnf_arithmetic_constrain_alike() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let lark = "start: expr\nexpr: term ((\"+\" | \"-\" | \"*\" | \"/\") term)*\n\
                term: NUMBER | \"(\" expr \")\"\nNUMBER: /[0-9]{1,3}/\n";
    let gbnf = "root ::= expr\nexpr ::= term ([-+*/] term)*\n\
                term ::= num | \"(\" expr \")\"\nnum ::= [0-9]{1,3}\n";
    for spec in [
        GrammarSpec::Lark(lark.into()),
        GrammarSpec::Gbnf(gbnf.into()),
    ] {
        for text in finished_texts(&grammars, &tok, &spec, 24, 200) {
            assert!(is_arithmetic(&text), "{text:?} from {spec:?}");
        }
    }
}

/// llama.cpp's `grammars/json.gbnf`.
const JSON_GBNF: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
"#;

#[test]
fn gbnf_json_outputs_parse_as_json_objects() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let spec = GrammarSpec::Gbnf(JSON_GBNF.into());
    for text in finished_texts(&grammars, &tok, &spec, 24, 400) {
        // Syntax only: the grammar allows exponents beyond f64 (`1E999`), as JSON does.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(text.starts_with('{'), "{text:?}");
    }
}

#[test]
fn gbnf_list_grammar_constrains_to_bullets() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    // llama.cpp's grammars/list.gbnf
    let gbnf = "root ::= item+\n\n# Excludes various line break characters\nitem ::= \"- \" [^\\r\\n\\x0b\\x0c\\x85\\u2028\\u2029]+ \"\\n\"\n";
    let spec = GrammarSpec::Gbnf(gbnf.into());
    for text in finished_texts(&grammars, &tok, &spec, 24, 300) {
        assert!(text.ends_with('\n'), "{text:?}");
        for line in text.lines() {
            assert!(line.starts_with("- ") && line.len() > 2, "{text:?}");
            assert!(
                !line.contains(['\r', '\u{b}', '\u{c}', '\u{85}']),
                "{text:?}"
            );
        }
    }
}

#[test]
fn malformed_regex_lark_and_gbnf_are_refused_with_a_reason() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    let refuse = |spec: GrammarSpec| grammars.compile(&spec).unwrap_err().message;
    let message = refuse(GrammarSpec::Regex("[a-z".into()));
    assert!(message.starts_with("invalid regex:"), "{message}");
    let message = refuse(GrammarSpec::Regex("(?<=a)b".into()));
    assert!(message.starts_with("invalid regex:"), "{message}");
    let message = refuse(GrammarSpec::Lark("start: foo\n".into()));
    assert!(
        message.starts_with("invalid Lark grammar:") && message.contains("foo"),
        "{message}"
    );
    let message = refuse(GrammarSpec::Lark("start: \"a\" |\n  )".into()));
    assert!(message.starts_with("invalid Lark grammar:"), "{message}");
    let message = refuse(GrammarSpec::Gbnf("root ::= \"a\"\nbad ::= (".into()));
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn gbnf_arithmetic_with_trailing_whitespace_rules_still_completes() {
    let tok = tiny();
    let grammars = Grammars::new(&tok).unwrap();
    // llama.cpp's grammars/arithmetic.gbnf: `ws` may eat the "\n" that ends a line.
    let gbnf = r#"root  ::= (expr "=" ws term "\n")+
expr  ::= term ([-+*/] term)*
term  ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num   ::= [0-9]+ ws
ws    ::= [ \t\n]*
"#;
    let spec = GrammarSpec::Gbnf(gbnf.into());
    let texts = finished_texts(&grammars, &tok, &spec, 24, 300);
    for text in texts {
        assert!(text.ends_with('\n') && text.contains('='), "{text:?}");
    }
}
