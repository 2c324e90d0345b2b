//! The condition language of alert rules: parsed once into an AST,
//! evaluated on each stored JSON object.
//!
//! Grammar (keywords `AND`, `OR`, `contains`, `true`, `false`, `null` are
//! case-sensitive; `AND` binds tighter than `OR`):
//!
//! ```text
//! expr  := and ( "OR" and )*
//! and   := term ( "AND" term )*
//! term  := "(" expr ")" | path op value
//! path  := ident ( "." ident )*        ident: [A-Za-z0-9_-]+
//! op    := ">" | ">=" | "<" | "<=" | "==" | "!=" | "contains"
//! value := number | string | "true" | "false" | "null"
//! ```
//!
//! Strings are in double quotes with `\"` and `\\` escapes; numbers are
//! JSON-like (`-3`, `2.5`, `1e3`). `true`, `false` and `null` only go with
//! `==` and `!=`.
//!
//! Evaluation: a missing field, or values of different types, make a
//! comparison false (`!=` as well: it is true only when both sides have
//! the same type and differ). Numbers compare numerically (as `f64`),
//! strings lexically (byte order); `==`/`!=` on booleans and `null` compare
//! by value. `contains` is a substring test on a string field with a string
//! value, and element equality on an array field (an element equal to the
//! value, by the same rules as `==`); on anything else it is false.
//!
//! Bounds (every one client-controlled): [`MAX_LEN`] characters,
//! [`MAX_DEPTH`] nested parentheses, [`MAX_TERMS`] comparisons. A syntax
//! error names the 1-based character position where it was found.

use serde_json::Value;

/// The longest condition, in characters.
pub const MAX_LEN: usize = 1024;
/// The deepest nesting of parentheses.
pub const MAX_DEPTH: usize = 32;
/// The most comparisons in one condition.
pub const MAX_TERMS: usize = 64;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
    Contains,
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    String(String),
    Bool(bool),
    Null,
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Compare {
        path: Vec<String>,
        op: Op,
        value: Literal,
    },
    And(Vec<Condition>),
    Or(Vec<Condition>),
}

/// Why a condition did not parse (its `Display` is the client's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("condition: {what} at position {pos}")]
    Syntax { what: &'static str, pos: usize },
    #[error("condition: longer than {MAX_LEN} characters")]
    TooLong,
    #[error("condition: nested deeper than {MAX_DEPTH} parentheses at position {pos}")]
    TooDeep { pos: usize },
    #[error("condition: more than {MAX_TERMS} comparisons at position {pos}")]
    TooManyTerms { pos: usize },
    #[error("condition: is empty")]
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Op(Op),
    Ident(String),
    Str(String),
    Num(f64),
    True,
    False,
    Null,
}

/// Tokens with their 1-based character positions.
fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let syntax = |what, pos| ParseError::Syntax { what, pos };
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((Tok::LParen, pos));
                i += 1
            }
            ')' => {
                out.push((Tok::RParen, pos));
                i += 1
            }
            '>' | '<' | '=' | '!' => {
                let eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, eq) {
                    ('>', true) => Op::Ge,
                    ('>', false) => Op::Gt,
                    ('<', true) => Op::Le,
                    ('<', false) => Op::Lt,
                    ('=', true) => Op::Eq,
                    ('!', true) => Op::Ne,
                    _ => return Err(syntax("expected an operator", pos)),
                };
                out.push((Tok::Op(op), pos));
                i += if eq { 2 } else { 1 };
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(syntax("unterminated string", pos)),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => match chars.get(i + 1) {
                            Some(&e @ ('"' | '\\')) => {
                                s.push(e);
                                i += 2;
                            }
                            _ => return Err(syntax("invalid escape", i + 1)),
                        },
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((Tok::Str(s), pos));
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '+' | '-'))
                {
                    // A sign only right after an exponent marker.
                    if matches!(chars[i], '+' | '-') && !matches!(chars[i - 1], 'e' | 'E') {
                        break;
                    }
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = parse_number(&text).ok_or(syntax("invalid number", pos))?;
                out.push((Tok::Num(n), pos));
            }
            c if is_ident(c) => {
                let start = i;
                while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let tok = match text.as_str() {
                    "AND" => Tok::And,
                    "OR" => Tok::Or,
                    "contains" => Tok::Op(Op::Contains),
                    "true" => Tok::True,
                    "false" => Tok::False,
                    "null" => Tok::Null,
                    _ => Tok::Ident(text),
                };
                out.push((tok, pos));
            }
            _ => return Err(syntax("unexpected character", pos)),
        }
    }
    Ok(out)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A JSON-like number: optional minus, digits, optional fraction and
/// exponent (no `inf`, `nan`, hex or leading `+`).
fn parse_number(t: &str) -> Option<f64> {
    let body = t.strip_prefix('-').unwrap_or(t);
    if !body.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|n| n.is_finite())
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    /// Position just past the end (for "expected ... at the end").
    end: usize,
    depth: usize,
    terms: usize,
}

impl Parser {
    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |t| t.1)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.0)
    }

    fn err(&self, what: &'static str) -> ParseError {
        ParseError::Syntax {
            what,
            pos: self.pos(),
        }
    }

    fn expr(&mut self) -> Result<Condition, ParseError> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Condition::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Condition, ParseError> {
        let mut parts = vec![self.term()?];
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            parts.push(self.term()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Condition::And(parts)
        })
    }

    fn term(&mut self) -> Result<Condition, ParseError> {
        match self.peek() {
            Some(Tok::LParen) => {
                if self.depth == MAX_DEPTH {
                    return Err(ParseError::TooDeep { pos: self.pos() });
                }
                self.depth += 1;
                self.at += 1;
                let inner = self.expr()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(self.err("expected ')'"));
                }
                self.at += 1;
                self.depth -= 1;
                Ok(inner)
            }
            Some(Tok::Ident(_)) => {
                let start = self.pos();
                let Some(Tok::Ident(name)) = self.peek().cloned() else {
                    unreachable!("peeked an identifier")
                };
                let path: Vec<String> = name.split('.').map(str::to_string).collect();
                if path.iter().any(String::is_empty) {
                    return Err(ParseError::Syntax {
                        what: "invalid field path",
                        pos: start,
                    });
                }
                self.at += 1;
                let op = match self.peek() {
                    Some(Tok::Op(op)) => *op,
                    _ => return Err(self.err("expected an operator")),
                };
                self.at += 1;
                let vpos = self.pos();
                let value = match self.peek() {
                    Some(Tok::Num(n)) => Literal::Number(*n),
                    Some(Tok::Str(s)) => Literal::String(s.clone()),
                    Some(Tok::True) => Literal::Bool(true),
                    Some(Tok::False) => Literal::Bool(false),
                    Some(Tok::Null) => Literal::Null,
                    _ => return Err(self.err("expected a value")),
                };
                if matches!(value, Literal::Bool(_) | Literal::Null)
                    && !matches!(op, Op::Eq | Op::Ne)
                {
                    return Err(ParseError::Syntax {
                        what: "true, false and null only go with == and !=",
                        pos: vpos,
                    });
                }
                self.at += 1;
                self.terms += 1;
                if self.terms > MAX_TERMS {
                    return Err(ParseError::TooManyTerms { pos: start });
                }
                Ok(Condition::Compare { path, op, value })
            }
            _ => Err(self.err("expected a field name or '('")),
        }
    }
}

impl Condition {
    /// Parses a condition (see the module's grammar).
    pub fn parse(src: &str) -> Result<Condition, ParseError> {
        let len = src.chars().count();
        if len > MAX_LEN {
            return Err(ParseError::TooLong);
        }
        let toks = lex(src)?;
        if toks.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut p = Parser {
            toks,
            at: 0,
            end: len + 1,
            depth: 0,
            terms: 0,
        };
        let c = p.expr()?;
        if p.at != p.toks.len() {
            return Err(p.err("expected AND, OR or the end"));
        }
        Ok(c)
    }

    /// True if the condition holds on `object` (see the module's rules).
    pub fn eval(&self, object: &Value) -> bool {
        match self {
            Condition::And(v) => v.iter().all(|c| c.eval(object)),
            Condition::Or(v) => v.iter().any(|c| c.eval(object)),
            Condition::Compare { path, op, value } => {
                let mut field = object;
                for p in path {
                    match field.get(p.as_str()) {
                        Some(f) => field = f,
                        None => return false,
                    }
                }
                compare(field, *op, value)
            }
        }
    }
}

/// `field == value` by the module's rules: `None` for mismatched types.
fn equal(field: &Value, value: &Literal) -> Option<bool> {
    match (field, value) {
        (Value::Number(n), Literal::Number(v)) => n.as_f64().map(|n| n == *v),
        (Value::String(s), Literal::String(v)) => Some(s == v),
        (Value::Bool(b), Literal::Bool(v)) => Some(b == v),
        (Value::Null, Literal::Null) => Some(true),
        _ => None,
    }
}

fn compare(field: &Value, op: Op, value: &Literal) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => equal(field, value) == Some(true),
        Op::Ne => equal(field, value) == Some(false),
        Op::Contains => match (field, value) {
            (Value::String(s), Literal::String(v)) => s.contains(v.as_str()),
            (Value::Array(a), v) => a.iter().any(|e| equal(e, v) == Some(true)),
            _ => false,
        },
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let ord = match (field, value) {
                (Value::Number(n), Literal::Number(v)) => n.as_f64().and_then(|n| n.partial_cmp(v)),
                (Value::String(s), Literal::String(v)) => Some(s.as_str().cmp(v.as_str())),
                _ => None,
            };
            match (op, ord) {
                (_, None) => false,
                (Op::Gt, Some(o)) => o == Greater,
                (Op::Ge, Some(o)) => o != Less,
                (Op::Lt, Some(o)) => o == Less,
                (Op::Le, Some(o)) => o != Greater,
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holds(c: &str, v: Value) -> bool {
        Condition::parse(c)
            .unwrap_or_else(|e| panic!("{c}: {e}"))
            .eval(&v)
    }

    fn err(c: &str) -> String {
        Condition::parse(c).unwrap_err().to_string()
    }

    #[test]
    fn every_operator_on_numbers() {
        let v = json!({"t": 20});
        for (c, want) in [
            ("t > 19", true),
            ("t > 20", false),
            ("t >= 20", true),
            ("t >= 20.5", false),
            ("t < 21", true),
            ("t < 20", false),
            ("t <= 20", true),
            ("t <= 19.99", false),
            ("t == 20", true),
            ("t == 20.0", true),
            ("t == 21", false),
            ("t != 21", true),
            ("t != 20", false),
            ("t > -5", true),
            ("t < -5", false),
            ("t > 1e1", true),
            ("t contains 20", false),
        ] {
            assert_eq!(holds(c, v.clone()), want, "{c}");
        }
        assert!(holds("t < -2.5", json!({"t": -3})));
        assert!(holds("t == -3", json!({"t": -3})));
        assert!(holds("t > 0.1", json!({"t": 0.25})));
    }

    #[test]
    fn every_operator_on_strings() {
        let v = json!({"s": "beta"});
        for (c, want) in [
            (r#"s > "alpha""#, true),
            (r#"s > "beta""#, false),
            (r#"s >= "beta""#, true),
            (r#"s < "gamma""#, true),
            (r#"s < "beta""#, false),
            (r#"s <= "beta""#, true),
            (r#"s <= "alpha""#, false),
            (r#"s == "beta""#, true),
            (r#"s == "Beta""#, false),
            (r#"s != "Beta""#, true),
            (r#"s != "beta""#, false),
            (r#"s contains "et""#, true),
            (r#"s contains "x""#, false),
            (r#"s contains """#, true),
        ] {
            assert_eq!(holds(c, v.clone()), want, "{c}");
        }
    }

    #[test]
    fn mismatched_types_and_missing_fields_are_false() {
        let v = json!({"n": 5, "s": "5", "b": true, "z": null, "o": {"a": 1}});
        for c in [
            "n == \"5\"",
            "n != \"5\"",
            "s > 4",
            "s == 5",
            "s != 5",
            "b == 1",
            "b > 0",
            "missing == 1",
            "missing != 1",
            "missing == null",
            "o > 0",
            "o.b == 1",
            "n.x == 1",
            "z > 0",
            "n contains 5",
        ] {
            assert!(!holds(c, v.clone()), "{c}");
        }
        assert!(holds("b == true", v.clone()));
        assert!(holds("b != false", v.clone()));
        assert!(holds("z == null", v.clone()));
        assert!(!holds("z != null", v.clone()));
        assert!(!holds("n == null", v.clone()));
    }

    #[test]
    fn contains_on_arrays_is_element_equality() {
        let v = json!({"tags": ["hot", "north"], "ns": [1, 2.5], "mix": [null, true]});
        assert!(holds(r#"tags contains "hot""#, v.clone()));
        assert!(!holds(r#"tags contains "ho""#, v.clone()));
        assert!(holds("ns contains 2.5", v.clone()));
        assert!(!holds("ns contains 3", v.clone()));
        assert!(!holds(r#"ns contains "1""#, v.clone()));
    }

    #[test]
    fn dotted_paths_reach_nested_fields() {
        let v = json!({"a": {"b": {"c": 7}}, "a.b": 1});
        assert!(holds("a.b.c == 7", v.clone()));
        assert!(!holds("a.b == 1", v.clone()));
        assert!(holds("a.b.c > 6 AND a.b.c < 8", v));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // true OR (false AND false) = true; (true OR false) AND false = false.
        let v = json!({"a": 1, "b": 0, "c": 0});
        assert!(holds("a == 1 OR b == 1 AND c == 1", v.clone()));
        assert!(!holds("(a == 1 OR b == 1) AND c == 1", v.clone()));
        // (false AND x) OR true
        assert!(holds("b == 1 AND a == 1 OR a == 1", v.clone()));
        assert!(!holds("b == 1 AND (a == 1 OR a == 1)", v.clone()));
        let parsed = Condition::parse("a == 1 OR b == 1 AND c == 1").unwrap();
        assert!(
            matches!(&parsed, Condition::Or(p) if p.len() == 2 && matches!(p[1], Condition::And(_)))
        );
        assert!(holds("((((a == 1))))", v));
    }

    #[test]
    fn strings_with_escapes_and_keywords() {
        let v = json!({"s": "say \"hi\" \\ AND OR ( )"});
        assert!(holds(r#"s == "say \"hi\" \\ AND OR ( )""#, v.clone()));
        assert!(holds(r#"s contains "\"hi\"""#, v.clone()));
        assert!(holds(r#"s contains "\\""#, v));
        assert_eq!(
            Condition::parse(r#"s == "é""#).unwrap(),
            Condition::Compare {
                path: vec!["s".into()],
                op: Op::Eq,
                value: Literal::String("é".into())
            }
        );
    }

    #[test]
    fn syntax_errors_name_the_position() {
        assert_eq!(
            err("temperature > "),
            "condition: expected a value at position 15"
        );
        assert_eq!(err("a >= AND"), "condition: expected a value at position 6");
        assert_eq!(err("a 5"), "condition: expected an operator at position 3");
        assert_eq!(
            err("a = 5"),
            "condition: expected an operator at position 3"
        );
        assert_eq!(err("(a > 1"), "condition: expected ')' at position 7");
        assert_eq!(
            err("a > 1 b > 2"),
            "condition: expected AND, OR or the end at position 7"
        );
        assert_eq!(
            err("a > 1 AND"),
            "condition: expected a field name or '(' at position 10"
        );
        assert_eq!(
            err("> 1"),
            "condition: expected a field name or '(' at position 1"
        );
        assert_eq!(
            err(r#"a == "open"#),
            "condition: unterminated string at position 6"
        );
        assert_eq!(
            err(r#"a == "x\n""#),
            "condition: invalid escape at position 8"
        );
        assert_eq!(
            err("a > 1 # 2"),
            "condition: unexpected character at position 7"
        );
        assert_eq!(err("a > 1.2.3"), "condition: invalid number at position 5");
        assert_eq!(err("a > -"), "condition: invalid number at position 5");
        assert_eq!(
            err("a > true"),
            "condition: true, false and null only go with == and != at position 5"
        );
        assert_eq!(
            err("a.. > 1"),
            "condition: invalid field path at position 1"
        );
        assert_eq!(
            err("a and b"),
            "condition: expected an operator at position 3"
        );
        assert_eq!(err("  "), "condition: is empty");
        // Positions count characters, not bytes.
        assert_eq!(
            err(r#"a == "éé" b"#),
            "condition: expected AND, OR or the end at position 11"
        );
    }

    #[test]
    fn bounds_are_enforced() {
        let long = format!("a == \"{}\"", "x".repeat(MAX_LEN));
        assert_eq!(err(&long), "condition: longer than 1024 characters");
        let deep = format!(
            "{}a > 1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            err(&deep),
            "condition: nested deeper than 32 parentheses at position 33"
        );
        let ok = format!("{}a > 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Condition::parse(&ok).is_ok());
        let many = vec!["a > 1"; MAX_TERMS].join(" OR ");
        assert!(Condition::parse(&many).is_ok());
        let too_many = vec!["a > 1"; MAX_TERMS + 1].join(" OR ");
        assert!(err(&too_many).starts_with("condition: more than 64 comparisons at position "));
    }
}
