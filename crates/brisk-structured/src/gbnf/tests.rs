use super::to_lark;

fn err(gbnf: &str) -> String {
    to_lark(gbnf).unwrap_err().message
}

#[test]
fn rules_stay_rules_with_one_character_lexemes() {
    let lark = to_lark(
        "root ::= list\n\
         list ::= \"[\" ws (item (\", \" ws item)*)? \"]\"\n\
         item ::= [a-z]+ | list | \"ab\"{2}\n\
         ws ::= [ \\t\\n]*\n",
    )
    .unwrap();
    assert_eq!(
        lark,
        "start: root\n\
         root: list\n\
         list: \"[\" ws (item (\",\" \" \" ws item)*)? \"]\"\n\
         item: /[a-z]/+ | list | (\"a\" \"b\"){2}\n\
         ws: /[\\x{20}\\x{9}\\x{A}]/*\n"
    );
}

#[test]
fn escapes_classes_and_repetitions_translate() {
    let lark = to_lark(
        "root ::= \"\\\"\\\\\" [^\"\\\\\\x7F\\u00e9-\\U0001F600] . x{3} x{2,} x{,4} x{1,5} x{0} (x*)?\n\
         x ::= \"\\x41\"\n",
    )
    .unwrap();
    let root = lark.lines().nth(1).unwrap();
    assert_eq!(
        root,
        "root: \"\\\"\" \"\\\\\" /[^\\x{22}\\x{5C}\\x{7F}\\x{E9}-\\x{1F600}]/ /(?s:.)/ x{3} x{2,} x{0,4} x{1,5} (x*)?"
    );
    assert!(lark.ends_with("x: \"A\"\n"), "{lark}");
}

#[test]
fn comments_blank_lines_and_continued_alternatives_are_accepted() {
    let lark = to_lark(
        "# a grammar\n\n\
         root ::= ( \"a\" # first\n\
           | \"b\" )   # second\n\
         \n\
         other ::= \"x\"\n\
           | \"y\" |\n\
           \"z\"\n",
    )
    .unwrap();
    assert!(lark.contains("root: (\"a\" | \"b\")\n"), "{lark}");
    assert!(lark.contains("other: \"x\" | \"y\" | \"z\"\n"), "{lark}");
}

#[test]
fn names_are_made_valid_and_unique() {
    let lark = to_lark(
        "root ::= start Foo foo 9lives my-rule\n\
         start ::= \"s\"\n\
         Foo ::= \"F\"\n\
         foo ::= \"f\"\n\
         9lives ::= \"9\"\n\
         my-rule ::= \"m\"\n",
    )
    .unwrap();
    assert!(
        lark.starts_with("start: root\nroot: start_2 foo foo_2 g9lives my-rule\n"),
        "{lark}"
    );
}

#[test]
fn empty_alternatives_become_empty_strings() {
    let lark = to_lark("root ::= \"a\" ws\nws ::= | \" \" | \"\"\n").unwrap();
    assert!(lark.contains("ws: \"\" | \" \" | \"\"\n"), "{lark}");
}

#[test]
fn malformed_grammars_name_the_line() {
    assert!(err("root ::= \"a\"\nx ::= y\n").contains("line 2: rule `y` is not defined"));
    assert!(err("value ::= \"a\"\n").contains("no `root` rule"));
    assert!(err("root ::= \"a\"\n\nroot ::= \"b\"")
        .contains("line 3: rule `root` is already defined on line 1"));
    assert!(err("root = \"a\"").contains("line 1: expected `::=`"));
    assert!(err("root ::= \"abc\n").contains("line 2: a string is not closed"));
    assert!(err("root ::=\n  [a-z\n").contains("line 2: a character class `[` is not closed"));
    assert!(err("root ::= [z-a]").contains("reversed"));
    assert!(err("root ::= []").contains("empty"));
    assert!(err("root ::= (\"a\"\n  \"b\"").contains("line 1: `(` is not closed"));
    assert!(err("root ::= \"a\")").contains("`)` without a matching `(`"));
    assert!(err("root ::= * \"a\"").contains("does not follow anything"));
    assert!(err("root ::= \"a\"{3,1}").contains("repetition {3,1} is empty"));
    assert!(err("root ::= \"a\"{2").contains("expected `}`"));
    assert!(err("root ::= \"\\q\"").contains("unknown escape `\\q`"));
    assert!(err("root ::= \"\\x4\"").contains("2 hex digits"));
    assert!(err("root ::= \"\\uD800\"").contains("4 hex digits"));
    assert!(err("root ::= <|end|>").contains("token references"));
    assert!(err("root ::= \"a\" ; \"b\"").contains("line 1: unexpected `;` in rule `root`"));
    assert!(err("root ::= \"a\"*?").contains("repeats a repetition"));
    let deep = format!("root ::= {}\"a\"{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(err(&deep).contains("parentheses nest deeper than 25"));
}
