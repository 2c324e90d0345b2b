//! Evaluates the conditions of a store's rules on a stored JSON object
//! without building it: one pass over the bytes reads only the values the
//! conditions compare, and each condition is compiled once to look its
//! values up by slot, not by name.
//!
//! - [`Plan`] is the trie of every field path the rules name; each path a
//!   condition compares has a slot. [`Plan::read`] walks the object once:
//!   a key the trie does not hold is skipped unparsed; a value in a slot is
//!   kept as a [`Leaf`] borrowing the input (no allocation unless a string
//!   has escapes).
//! - [`Check`] is a condition with slots for paths; [`Check::eval`] gives
//!   what [`Condition::eval`] gives on the parsed object (a test holds them
//!   equal on generated objects and conditions), including for duplicate
//!   keys (the last one counts, as in a parsed object).
//! - An array is kept as its raw text and read only by `contains`, one
//!   element at a time: a huge array costs no memory.
//! - Anything but one JSON object is an error (no condition can hold on
//!   it: every path names a field).

use std::borrow::Cow;

use super::condition::{Condition, Literal, Op};

/// The field paths a set of conditions reads.
#[derive(Debug, Default)]
pub struct Plan {
    root: Node,
    slots: usize,
}

#[derive(Debug, Default)]
struct Node {
    /// The slot of the path ending here, if a condition compares it.
    slot: Option<usize>,
    children: Vec<(String, Node)>,
}

impl Node {
    fn child(&self, key: &str) -> Option<usize> {
        self.children.iter().position(|(k, _)| k == key)
    }

    /// Forgets every value read under this node (a later duplicate key
    /// replaces the whole value, as in a parsed object).
    fn clear(&self, out: &mut [Leaf<'_>]) {
        if let Some(s) = self.slot {
            out[s] = Leaf::Missing;
        }
        for (_, c) in &self.children {
            c.clear(out);
        }
    }
}

/// A value read from the object for a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf<'j> {
    Missing,
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'j, str>),
    /// An array, as its JSON text.
    Array(&'j str),
    /// An object.
    Object,
}

impl<'j> Leaf<'j> {
    /// The value of the JSON text `raw` (one complete value, as serde_json
    /// delimited it); `None` if it does not read.
    fn of(raw: &'j str) -> Option<Leaf<'j>> {
        Some(match raw.as_bytes().first()? {
            b'"' => {
                let inner = raw.get(1..raw.len().checked_sub(1)?)?;
                if inner.contains('\\') {
                    Leaf::Str(Cow::Owned(serde_json::from_str::<String>(raw).ok()?))
                } else {
                    Leaf::Str(Cow::Borrowed(inner))
                }
            }
            b'[' => Leaf::Array(raw),
            b'{' => Leaf::Object,
            b't' if raw == "true" => Leaf::Bool(true),
            b'f' if raw == "false" => Leaf::Bool(false),
            b'n' if raw == "null" => Leaf::Null,
            b't' | b'f' | b'n' => return None,
            // A JSON number is a valid Rust float, and both round the
            // exact value to the nearest f64, as `Number::as_f64` does.
            _ => Leaf::Num(raw.parse().ok()?),
        })
    }
}

impl Plan {
    /// The plan of `conditions`, each compiled against it.
    pub fn new<'c>(conditions: impl IntoIterator<Item = &'c Condition>) -> (Plan, Vec<Check>) {
        let mut plan = Plan::default();
        let checks = conditions.into_iter().map(|c| plan.compile(c)).collect();
        (plan, checks)
    }

    /// Slots the values, one per compared path.
    pub fn slots(&self) -> usize {
        self.slots
    }

    fn compile(&mut self, c: &Condition) -> Check {
        match c {
            Condition::And(v) => Check::And(v.iter().map(|c| self.compile(c)).collect()),
            Condition::Or(v) => Check::Or(v.iter().map(|c| self.compile(c)).collect()),
            Condition::Compare { path, op, value } => Check::Compare {
                slot: self.slot(path),
                op: *op,
                value: value.clone(),
            },
        }
    }

    fn slot(&mut self, path: &[String]) -> usize {
        let mut node = &mut self.root;
        for p in path {
            let i = match node.child(p) {
                Some(i) => i,
                None => {
                    node.children.push((p.clone(), Node::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[i].1;
        }
        *node.slot.get_or_insert_with(|| {
            self.slots += 1;
            self.slots - 1
        })
    }

    /// Reads the compared values of the object in `json` into `out` (one
    /// per slot, [`Leaf::Missing`] for a path the object lacks). An error
    /// if `json` is not one object; malformed JSON inside it is not always
    /// caught (stored objects were checked at insert), but never panics and
    /// never reads out of bounds.
    pub fn read<'j>(&self, json: &'j [u8], out: &mut Vec<Leaf<'j>>) -> Result<(), Malformed> {
        out.clear();
        out.resize(self.slots, Leaf::Missing);
        let text = std::str::from_utf8(json).map_err(|_| Malformed)?;
        let mut s = Scan { b: json, at: 0 };
        s.ws();
        object(&mut s, text, &self.root, out)?;
        s.ws();
        if s.at != json.len() {
            return Err(Malformed);
        }
        Ok(())
    }
}

/// The input is not one JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// A cursor over JSON bytes that skips values without building them.
struct Scan<'j> {
    b: &'j [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), Malformed> {
        self.ws();
        if self.peek() != Some(c) {
            return Err(Malformed);
        }
        self.at += 1;
        Ok(())
    }

    /// Past the string that starts at the cursor (on its quote); true if
    /// it has escapes.
    fn string(&mut self) -> Result<bool, Malformed> {
        self.at += 1;
        let mut escaped = false;
        loop {
            let rest = self.b.get(self.at..).ok_or(Malformed)?;
            let i = memchr::memchr2(b'"', b'\\', rest).ok_or(Malformed)?;
            self.at += i + 1;
            if rest[i] == b'"' {
                return Ok(escaped);
            }
            escaped = true;
            self.at += 1;
        }
    }

    /// Past the value at the cursor (after white space). Nesting is counted,
    /// not recursed into: any depth is safe.
    fn value(&mut self) -> Result<(), Malformed> {
        self.ws();
        match self.peek().ok_or(Malformed)? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek().ok_or(Malformed)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                let start = self.at;
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.at += 1;
                }
                if self.at == start {
                    return Err(Malformed);
                }
                Ok(())
            }
        }
    }
}

/// Reads the members of the object at the cursor under `node`; `text` is
/// the whole input as a string (the cursor indexes it).
fn object<'j>(
    s: &mut Scan<'j>,
    text: &'j str,
    node: &Node,
    out: &mut [Leaf<'j>],
) -> Result<(), Malformed> {
    s.eat(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.at += 1;
        return Ok(());
    }
    loop {
        s.ws();
        if s.peek() != Some(b'"') {
            return Err(Malformed);
        }
        let k0 = s.at;
        let escaped = s.string()?;
        let raw_key = text.get(k0..s.at).ok_or(Malformed)?;
        let child = if node.children.is_empty() {
            None
        } else if escaped {
            let key: String = serde_json::from_str(raw_key).map_err(|_| Malformed)?;
            node.child(&key)
        } else {
            node.child(&raw_key[1..raw_key.len() - 1])
        };
        s.eat(b':')?;
        s.ws();
        let v0 = s.at;
        match child {
            None => s.value()?,
            Some(i) => {
                let child = &node.children[i].1;
                child.clear(out);
                if !child.children.is_empty() && s.peek() == Some(b'{') {
                    object(s, text, child, out)?;
                    if let Some(slot) = child.slot {
                        out[slot] = Leaf::Object;
                    }
                } else {
                    s.value()?;
                    if let Some(slot) = child.slot {
                        let raw = text.get(v0..s.at).ok_or(Malformed)?;
                        out[slot] = Leaf::of(raw).ok_or(Malformed)?;
                    }
                }
            }
        }
        s.ws();
        match s.peek() {
            Some(b',') => s.at += 1,
            Some(b'}') => {
                s.at += 1;
                return Ok(());
            }
            _ => return Err(Malformed),
        }
    }
}

/// A condition compiled against a [`Plan`].
#[derive(Debug)]
pub enum Check {
    Compare { slot: usize, op: Op, value: Literal },
    And(Vec<Check>),
    Or(Vec<Check>),
}

impl Check {
    /// True if the condition holds on the values `leaves` read by
    /// [`Plan::read`]: what [`Condition::eval`] gives on the whole object.
    pub fn eval(&self, leaves: &[Leaf<'_>]) -> bool {
        match self {
            Check::And(v) => v.iter().all(|c| c.eval(leaves)),
            Check::Or(v) => v.iter().any(|c| c.eval(leaves)),
            Check::Compare { slot, op, value } => compare(&leaves[*slot], *op, value),
        }
    }
}

/// `field == value` by the condition rules: `None` for mismatched types.
fn equal(field: &Leaf<'_>, value: &Literal) -> Option<bool> {
    match (field, value) {
        (Leaf::Num(n), Literal::Number(v)) => Some(n == v),
        (Leaf::Str(s), Literal::String(v)) => Some(s == v),
        (Leaf::Bool(b), Literal::Bool(v)) => Some(b == v),
        (Leaf::Null, Literal::Null) => Some(true),
        _ => None,
    }
}

fn compare(field: &Leaf<'_>, op: Op, value: &Literal) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => equal(field, value) == Some(true),
        Op::Ne => equal(field, value) == Some(false),
        Op::Contains => match (field, value) {
            (Leaf::Str(s), Literal::String(v)) => s.contains(v.as_str()),
            (Leaf::Array(raw), v) => array_contains(raw, v),
            _ => false,
        },
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let ord = match (field, value) {
                (Leaf::Num(n), Literal::Number(v)) => n.partial_cmp(v),
                (Leaf::Str(s), Literal::String(v)) => Some(s.as_ref().cmp(v.as_str())),
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

/// True if an element of the JSON array `raw` equals `value`; reads one
/// element at a time and stops at the first equal one.
fn array_contains(raw: &str, value: &Literal) -> bool {
    let mut s = Scan {
        b: raw.as_bytes(),
        at: 0,
    };
    if s.eat(b'[').is_err() {
        return false;
    }
    s.ws();
    if s.peek() == Some(b']') {
        return false;
    }
    loop {
        s.ws();
        let v0 = s.at;
        if s.value().is_err() {
            return false;
        }
        let element = raw.get(v0..s.at).and_then(Leaf::of);
        if element.is_some_and(|l| equal(&l, value) == Some(true)) {
            return true;
        }
        s.ws();
        if s.peek() != Some(b',') {
            return false;
        }
        s.at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn eval(cond: &str, json: &str) -> (bool, bool) {
        let c = Condition::parse(cond).unwrap_or_else(|e| panic!("{cond}: {e}"));
        let (plan, checks) = Plan::new([&c]);
        let mut leaves = Vec::new();
        let fast = match plan.read(json.as_bytes(), &mut leaves) {
            Ok(()) => checks[0].eval(&leaves),
            Err(_) => false,
        };
        let whole = serde_json::from_str::<Value>(json)
            .map(|v| c.eval(&v))
            .unwrap_or(false);
        (fast, whole)
    }

    #[test]
    fn reads_only_what_the_conditions_name() {
        let c = [
            Condition::parse("a > 1 AND b.c == \"x\"").unwrap(),
            Condition::parse("b contains 2 OR a < 0").unwrap(),
        ];
        let (plan, checks) = Plan::new(&c);
        assert_eq!(plan.slots(), 3, "a, b.c and b: one slot each");
        let mut leaves = Vec::new();
        let j = br#"{"z":{"deep":[1,2,{"x":1}]},"a":2,"b":{"c":"x","d":[1]},"e":"\u00e9"}"#;
        plan.read(j, &mut leaves).unwrap();
        assert_eq!(leaves[0], Leaf::Num(2.0));
        assert_eq!(leaves[1], Leaf::Str(Cow::Borrowed("x")));
        assert_eq!(leaves[2], Leaf::Object);
        assert!(checks[0].eval(&leaves));
        assert!(!checks[1].eval(&leaves));
    }

    #[test]
    fn strings_with_escapes_and_keys_with_escapes() {
        for (c, j, want) in [
            (r#"s == "a\"b""#, r#"{"s":"a\"b"}"#, true),
            (r#"s == "é""#, r#"{"s":"\u00e9"}"#, true),
            (r#"s contains "b""#, r#"{"\u0073":"abc"}"#, true),
            (r#"s > "a""#, r#"{"s":"b"}"#, true),
        ] {
            assert_eq!(eval(c, j), (want, want), "{c} on {j}");
        }
    }

    #[test]
    fn a_later_duplicate_key_replaces_the_whole_value() {
        for (c, j) in [
            ("a.b == 1", r#"{"a":{"b":1},"a":{"c":2}}"#),
            ("a.b == 1", r#"{"a":{"c":2},"a":{"b":1}}"#),
            ("a == 1", r#"{"a":1,"a":"x"}"#),
            ("a.b == 1", r#"{"a":{"b":1},"a":5}"#),
        ] {
            let (fast, whole) = eval(c, j);
            assert_eq!(fast, whole, "{c} on {j}");
        }
    }

    #[test]
    fn contains_reads_arrays_element_by_element() {
        for (c, j, want) in [
            ("t contains \"a\"", r#"{"t":["b",1,null,"a"]}"#, true),
            ("t contains 1", r#"{"t":["b",1.0]}"#, true),
            ("t contains 2", r#"{"t":[[2],{"a":2},"2"]}"#, false),
            ("t contains \"a\"", r#"{"t":"cat"}"#, true),
            ("t contains \"x\"", r#"{"t":[]}"#, false),
        ] {
            assert_eq!(eval(c, j), (want, want), "{c} on {j}");
        }
        // A large array: nothing is kept per element.
        let big = format!("{{\"t\":[{}1]}}", "0,".repeat(100_000));
        assert_eq!(eval("t contains 1", &big), (true, true));
    }

    #[test]
    fn anything_but_one_object_reads_as_an_error() {
        let c = Condition::parse("a == 1").unwrap();
        let (plan, _) = Plan::new([&c]);
        for j in [
            &b"[1]"[..],
            b"5",
            b"\"s\"",
            b"{\"a\":1} x",
            b"{\"a\":",
            b"null",
        ] {
            let mut leaves = Vec::new();
            assert!(
                plan.read(j, &mut leaves).is_err(),
                "{}",
                String::from_utf8_lossy(j)
            );
        }
    }

    /// A JSON value of a few shapes, with the field names conditions use.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(|n| json!(n)),
            (-5.0f64..5.0).prop_map(|n| json!((n * 4.0).round() / 4.0)),
            prop::sample::select(vec!["", "a", "ab", "b", "a\"b", "é"]).prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(vec!["a", "b", "c"]), inner), 0..4)
                    .prop_map(|kv| {
                        Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                    }),
            ]
        })
    }

    fn condition() -> impl Strategy<Value = String> {
        let path = prop::sample::select(vec!["a", "b", "c", "a.b", "b.c.a", "a.a"]);
        let op = prop::sample::select(vec![">", ">=", "<", "<=", "==", "!=", "contains"]);
        let lit = prop::sample::select(vec![
            "0", "1", "-1.5", "2.25", "\"a\"", "\"b\"", "\"\"", "true", "false", "null",
        ]);
        let cmp = (path, op, lit).prop_filter_map("literal fits the operator", |(p, o, l)| {
            let word = matches!(l, "true" | "false" | "null");
            let eq = matches!(o, "==" | "!=");
            (!word || eq).then(|| format!("{p} {o} {l}"))
        });
        prop::collection::vec((cmp, any::<bool>()), 1..4).prop_map(|v| {
            let mut s = String::new();
            for (i, (c, and)) in v.into_iter().enumerate() {
                if i > 0 {
                    s.push_str(if and { " AND " } else { " OR " });
                }
                s.push_str(&c);
            }
            s
        })
    }

    proptest! {
        #[test]
        fn the_compiled_check_agrees_with_the_condition_on_the_parsed_object(
            c in condition(),
            v in value(),
        ) {
            // Objects only at the top: anything else is an error both ways.
            let v = match v {
                Value::Object(_) => v,
                other => json!({ "a": other }),
            };
            let j = serde_json::to_string(&v).unwrap();
            let (fast, whole) = eval(&c, &j);
            prop_assert_eq!(fast, whole, "{} on {}", c, j);
            // Pretty-printed (white space everywhere) reads the same.
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            prop_assert_eq!(eval(&c, &pretty), (whole, whole), "{} on {}", c, pretty);
        }

        #[test]
        fn any_bytes_read_without_panic(
            c in condition(),
            v in value(),
            cut in any::<prop::sample::Index>(),
            junk in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            // A valid object with bytes spliced in at any place.
            let j = serde_json::to_string(&json!({ "a": v, "b": {"c": [1, "x"]} })).unwrap();
            let at = cut.index(j.len() + 1);
            let mut bytes = j.as_bytes()[..at].to_vec();
            bytes.extend_from_slice(&junk);
            bytes.extend_from_slice(&j.as_bytes()[at..]);
            let cond = Condition::parse(&c).unwrap();
            let (plan, checks) = Plan::new([&cond]);
            let mut leaves = Vec::new();
            if plan.read(&bytes, &mut leaves).is_ok() {
                checks[0].eval(&leaves);
            }
            // Cut short anywhere: never read as a whole object.
            prop_assert!(plan.read(&j.as_bytes()[..at.min(j.len() - 1)], &mut leaves).is_err());
        }
    }
}
