//! Time-windowed aggregation of JSON readings (issue 15): the parameters
//! (`agg_window`, `agg_fields`, `agg_default`) parsed once into a [`Spec`],
//! and an [`Aggregator`] fed readings in time order that yields each window
//! when it closes and the open one at [`Aggregator::finish`].
//!
//! Shared below the areas so that every reader (REST today; the streams,
//! push connections and MQTT sinks later) computes the same windows.
//!
//! Invariants:
//! - Windows are aligned on the Unix epoch: a reading at `t` belongs to the
//!   window `[k*w, (k+1)*w)` with `k = floor(t / w)`; the window's
//!   `timestamp` is its end, `(k+1)*w`.
//! - One window is open at a time; its state is one accumulator per field
//!   path seen in it, never the readings themselves, so memory is bounded
//!   by the shape of the data, not by the number of readings.
//! - A window is partial when it is not wholly inside the bounds it was
//!   computed under (cut by the start, by the end, or not over yet); a
//!   partial window's `sum` outputs are `null`, since a sum of part of a
//!   window reads as a smaller value rather than as missing data.
//! - Nothing here panics on any input: unknown shapes degrade to `last`.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeSeed as _;
use serde_json::{Map, Number, Value};

use crate::duration;

/// Most windows one request may span.
pub const MAX_WINDOWS: u64 = 100_000;
/// Most entries `agg_fields` may list.
pub const MAX_FIELDS: usize = 256;

/// An aggregation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Avg,
    Sum,
    Min,
    Max,
    Count,
    First,
    Last,
}

impl Func {
    pub const ALL: [Func; 7] = [
        Func::Avg,
        Func::Sum,
        Func::Min,
        Func::Max,
        Func::Count,
        Func::First,
        Func::Last,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Func::Avg => "avg",
            Func::Sum => "sum",
            Func::Min => "min",
            Func::Max => "max",
            Func::Count => "count",
            Func::First => "first",
            Func::Last => "last",
        }
    }

    fn parse(s: &str) -> Result<Func, SpecError> {
        Func::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| SpecError::UnknownFunction(s.to_string()))
    }
}

/// Why the aggregation parameters were refused; the message is the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("agg_fields and agg_default need agg_window")]
    NoWindow,
    #[error("invalid agg_window: {0}")]
    BadWindow(String),
    #[error(
        "unknown aggregation function {0:?}: expected one of avg, sum, min, max, count, first, last"
    )]
    UnknownFunction(String),
    #[error("invalid agg_fields entry {0:?}: expected field:function, fields as dotted paths")]
    BadField(String),
    #[error("agg_fields names {0} twice")]
    DuplicateField(String),
    #[error("agg_fields lists more than {MAX_FIELDS} entries")]
    TooManyFields,
    #[error("invalid agg_default {0:?}: expected a function or a comma list of functions")]
    BadDefault(String),
}

/// The parsed aggregation parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Window length in nanoseconds, at least 1.
    pub window_ns: i64,
    /// Fields named in `agg_fields`: a dotted path split at the dots, and
    /// its functions in the order given.
    pub fields: Vec<(Vec<String>, Vec<Func>)>,
    /// Functions of numeric fields not named in `agg_fields`.
    pub default: Vec<Func>,
}

impl Spec {
    /// Reads the three parameters; `Ok(None)` when none is given (no
    /// aggregation). Empty values count as absent, as elsewhere in the API.
    pub fn parse(
        window: Option<&str>,
        fields: Option<&str>,
        default: Option<&str>,
    ) -> Result<Option<Spec>, SpecError> {
        let (window, fields, default) = (given(window), given(fields), given(default));
        let Some(window) = window else {
            if fields.is_some() || default.is_some() {
                return Err(SpecError::NoWindow);
            }
            return Ok(None);
        };
        let d = duration::parse(window).map_err(SpecError::BadWindow)?;
        let window_ns = i64::try_from(d.as_nanos())
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| SpecError::BadWindow(format!("{window} (must be at least 1ns)")))?;
        let default = match default {
            None => vec![Func::Avg],
            Some(s) => parse_funcs(s)?,
        };
        let mut spec = Spec {
            window_ns,
            fields: Vec::new(),
            default,
        };
        for entry in fields.unwrap_or("").split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            if spec.fields.iter().map(|(_, f)| f.len()).sum::<usize>() >= MAX_FIELDS {
                return Err(SpecError::TooManyFields);
            }
            let (path, func) = entry
                .rsplit_once(':')
                .ok_or_else(|| SpecError::BadField(entry.to_string()))?;
            let func = Func::parse(func.trim())?;
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(SpecError::BadField(entry.to_string()));
            }
            match spec.fields.iter_mut().find(|(p, _)| *p == path) {
                Some((_, fs)) if fs.contains(&func) => {
                    return Err(SpecError::DuplicateField(format!(
                        "{}:{}",
                        path.join("."),
                        func.name()
                    )))
                }
                Some((_, fs)) => fs.push(func),
                None => spec.fields.push((path, vec![func])),
            }
        }
        Ok(Some(spec))
    }

    /// Start of the window holding `ts`.
    /// Saturates at `i64::MIN` instead of overflowing there.
    pub fn window_start(&self, ts: i64) -> i64 {
        ts.saturating_sub(ts.rem_euclid(self.window_ns))
    }

    /// How many windows `[lo, hi]` touches (0 when empty).
    pub fn windows_in(&self, lo: i64, hi: i64) -> u64 {
        if lo > hi {
            return 0;
        }
        let w = self.window_ns as i128;
        u64::try_from((hi as i128).div_euclid(w) - (lo as i128).div_euclid(w) + 1)
            .unwrap_or(u64::MAX)
    }

    /// The functions named for `path`, if `agg_fields` names it.
    fn listed(&self, path: &[String]) -> Option<&[Func]> {
        self.fields
            .iter()
            .find(|(p, _)| p.as_slice() == path)
            .map(|(_, f)| f.as_slice())
    }
}

/// A parameter's value, `None` when absent or blank.
fn given(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.trim().is_empty())
}

fn parse_funcs(s: &str) -> Result<Vec<Func>, SpecError> {
    let mut out: Vec<Func> = Vec::new();
    for part in s.split(',') {
        let f = Func::parse(part.trim())?;
        if out.contains(&f) {
            return Err(SpecError::BadDefault(s.to_string()));
        }
        out.push(f);
    }
    Ok(out)
}

/// One closed (or finished) window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The window's end, `start + window`: its `timestamp`.
    pub end: i64,
    /// Readings folded into it.
    pub count: u64,
    /// Not wholly inside the bounds it was computed under.
    pub partial: bool,
    /// The aggregated fields.
    pub data: Map<String, Value>,
}

impl Window {
    /// `{"timestamp","count","partial","data"}`, every key always present.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("timestamp".into(), self.end.into());
        m.insert("count".into(), self.count.into());
        m.insert("partial".into(), self.partial.into());
        m.insert("data".into(), Value::Object(self.data.clone()));
        Value::Object(m)
    }

    /// Appends the JSON of [`Window::to_value`] to `out`.
    pub fn write_json(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            r#"{{"timestamp":{},"count":{},"partial":{},"data":"#,
            self.end, self.count, self.partial
        );
        out.push_str(&serde_json::to_string(&self.data).unwrap_or_else(|_| "{}".into()));
        out.push('}');
    }
}

/// The running state of one field path in the open window.
#[derive(Debug, Default)]
struct Acc {
    /// Readings that held the field, whatever its value.
    seen: u64,
    /// Of those, the numeric ones, and their sum, min and max.
    nums: u64,
    sum: f64,
    /// Exact sum while every number is an integer that fits.
    int_sum: Option<i64>,
    min: Option<(f64, Number)>,
    max: Option<(f64, Number)>,
    first: Option<Value>,
    last: Option<Value>,
}

impl Acc {
    fn fold(&mut self, v: Value) {
        self.seen += 1;
        if let Value::Number(n) = &v {
            if let Some(x) = n.as_f64() {
                if self.nums == 0 {
                    self.int_sum = Some(0);
                }
                self.nums += 1;
                self.sum += x;
                self.int_sum = match (self.int_sum, n.as_i64()) {
                    (Some(s), Some(i)) => s.checked_add(i),
                    _ => None,
                };
                if self.min.as_ref().is_none_or(|(m, _)| x < *m) {
                    self.min = Some((x, n.clone()));
                }
                if self.max.as_ref().is_none_or(|(m, _)| x > *m) {
                    self.max = Some((x, n.clone()));
                }
            }
        }
        if self.first.is_none() {
            self.first = Some(v.clone());
        }
        self.last = Some(v);
    }

    /// Every value seen was a number.
    fn numeric(&self) -> bool {
        self.nums == self.seen
    }

    fn out(&self, f: Func, partial: bool) -> Value {
        let num = |x: f64| Number::from_f64(x).map_or(Value::Null, Value::Number);
        match f {
            Func::Count => self.seen.into(),
            Func::First => self.first.clone().unwrap_or(Value::Null),
            Func::Last => self.last.clone().unwrap_or(Value::Null),
            _ if self.nums == 0 => Value::Null,
            Func::Avg => num(self.sum / self.nums as f64),
            Func::Sum if partial => Value::Null,
            Func::Sum => match self.int_sum {
                Some(s) => s.into(),
                None => num(self.sum),
            },
            Func::Min => self
                .min
                .as_ref()
                .map_or(Value::Null, |(_, n)| n.clone().into()),
            Func::Max => self
                .max
                .as_ref()
                .map_or(Value::Null, |(_, n)| n.clone().into()),
        }
    }
}

/// A field of the open window: a leaf or a nested object. Leaves are the
/// common case and live inline (boxing them would cost an allocation per
/// field per window for the rarer nested objects' sake).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Slot {
    Leaf(Acc),
    Obj(Node),
}

/// The fields of an object, in the order they were first seen (the
/// objects are small: a linear search beats hashing here).
#[derive(Debug, Default)]
struct Node {
    fields: Vec<(String, Slot)>,
}

impl Node {
    /// The slot of field `k`, added (as a fresh leaf) when first seen.
    fn slot(&mut self, k: &str) -> &mut Slot {
        let i = match self.fields.iter().position(|(name, _)| name == k) {
            Some(i) => i,
            None => {
                self.fields
                    .push((k.to_string(), Slot::Leaf(Acc::default())));
                self.fields.len() - 1
            }
        };
        &mut self.fields[i].1
    }

    fn output(&self, spec: &Spec, path: &mut Vec<String>, partial: bool) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, slot) in &self.fields {
            path.push(name.clone());
            match slot {
                Slot::Obj(n) => {
                    out.insert(name.clone(), Value::Object(n.output(spec, path, partial)));
                }
                Slot::Leaf(a) => {
                    let funcs: &[Func] = match spec.listed(path) {
                        Some(fs) => fs,
                        None if a.numeric() => &spec.default,
                        None => &[Func::Last],
                    };
                    if let [f] = funcs {
                        out.insert(name.clone(), a.out(*f, partial));
                    } else {
                        for f in funcs {
                            out.insert(format!("{name}_{}", f.name()), a.out(*f, partial));
                        }
                    }
                }
            }
            path.pop();
        }
        out
    }
}

/// The open window.
struct Open {
    start: i64,
    count: u64,
    root: Node,
}

/// Folds readings, in time order, into aligned windows.
pub struct Aggregator {
    spec: Arc<Spec>,
    /// Lower bound of the readings fed: a window that begins before it is
    /// partial.
    lo: i64,
    open: Option<Open>,
}

impl fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregator")
            .field("spec", &self.spec)
            .field("lo", &self.lo)
            .field("open", &self.open.as_ref().map(|o| (o.start, o.count)))
            .finish()
    }
}

impl Aggregator {
    /// `lo`: the first timestamp the caller may feed (`i64::MIN` when
    /// unbounded); the first window is partial when it begins before it.
    pub fn new(spec: Arc<Spec>, lo: i64) -> Aggregator {
        Aggregator {
            spec,
            lo,
            open: None,
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Folds one reading. Returns the previous window when `ts` falls in a
    /// later one. A reading older than the open window (out of order)
    /// is folded into the open window rather than reopening a closed one.
    pub fn push(&mut self, ts: i64, data: &Value) -> Option<Window> {
        let (closed, root) = self.enter(ts);
        // Folding a `Value` cannot fail: it is well-formed JSON already.
        let _ = fold::Reading(root).deserialize(data);
        closed
    }

    /// [`Aggregator::push`] of stored JSON text, parsed and folded in one
    /// walk without building the value. Text that does not parse counts
    /// as a reading, with the fields read before the error.
    pub fn push_json(&mut self, ts: i64, bytes: &[u8]) -> Option<Window> {
        let (closed, root) = self.enter(ts);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let _ = fold::Reading(root).deserialize(&mut de);
        closed
    }

    /// Counts a reading at `ts`: closes the open window if `ts` lies past
    /// it, and returns the fields of the window `ts` is folded into.
    fn enter(&mut self, ts: i64) -> (Option<Window>, &mut Node) {
        let ws = self.spec.window_start(ts);
        let closed = match &self.open {
            Some(o) if ws > o.start => self.close(i64::MAX),
            _ => None,
        };
        let o = self.open.get_or_insert_with(|| Open {
            start: ws,
            count: 0,
            root: Node::default(),
        });
        o.count += 1;
        (closed, &mut o.root)
    }

    /// The open window, if any: partial when it began before `lo` or ends
    /// after `hi` (the last timestamp its readings could have had: the
    /// query's end, or now when that is earlier).
    pub fn finish(mut self, hi: i64) -> Option<Window> {
        self.close(hi)
    }

    fn close(&mut self, hi: i64) -> Option<Window> {
        let o = self.open.take()?;
        let end = o.start.saturating_add(self.spec.window_ns);
        let partial = o.start < self.lo || end - 1 > hi;
        let data = o.root.output(&self.spec, &mut Vec::new(), partial);
        Some(Window {
            end,
            count: o.count,
            partial,
            data,
        })
    }
}

/// Folding a reading straight from its parser into the open window's
/// accumulators: field names are looked up as borrowed text, numbers never
/// become a `Value` tree, and only a leaf's non-numeric values (kept for
/// `first` and `last`) are allocated. The same walk serves a parsed
/// [`Value`] (`&Value` is a deserializer), so both entry points agree.
mod fold {
    use std::fmt;

    use serde::de::{
        self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };
    use serde_json::{Number, Value};

    use super::{Node, Slot};

    /// A whole reading: an object's fields are folded; anything else (a
    /// json store may hold bare values) has no fields.
    pub struct Reading<'a>(pub &'a mut Node);

    impl<'de> DeserializeSeed<'de> for Reading<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Reading<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<(), A::Error> {
            fold_fields(self.0, m)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while s.next_element::<IgnoredAny>()?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }

    fn fold_fields<'de, A: MapAccess<'de>>(node: &mut Node, mut m: A) -> Result<(), A::Error> {
        while let Some(slot) = m.next_key_seed(Key(node))? {
            m.next_value_seed(Field(slot))?;
        }
        Ok(())
    }

    /// A field name: resolves to its slot without allocating the name
    /// (unless the field is new).
    struct Key<'a>(&'a mut Node);

    impl<'de, 'a> DeserializeSeed<'de> for Key<'a> {
        type Value = &'a mut Slot;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'a mut Slot, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de, 'a> Visitor<'de> for Key<'a> {
        type Value = &'a mut Slot;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a field name")
        }
        fn visit_str<E>(self, k: &str) -> Result<&'a mut Slot, E> {
            Ok(self.0.slot(k))
        }
    }

    /// A field's value, folded into its slot.
    struct Field<'a>(&'a mut Slot);

    impl<'de> DeserializeSeed<'de> for Field<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl Field<'_> {
        fn leaf(self, v: Value) {
            match self.0 {
                Slot::Leaf(a) => a.fold(v),
                // A field that was an object takes no leaf value.
                Slot::Obj(_) => {}
            }
        }
    }

    impl<'de> Visitor<'de> for Field<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, b: bool) -> Result<(), E> {
            self.leaf(Value::Bool(b));
            Ok(())
        }
        fn visit_i64<E>(self, n: i64) -> Result<(), E> {
            self.leaf(Value::Number(n.into()));
            Ok(())
        }
        fn visit_u64<E>(self, n: u64) -> Result<(), E> {
            self.leaf(Value::Number(n.into()));
            Ok(())
        }
        fn visit_f64<E>(self, n: f64) -> Result<(), E> {
            self.leaf(Number::from_f64(n).map_or(Value::Null, Value::Number));
            Ok(())
        }
        fn visit_str<E>(self, s: &str) -> Result<(), E> {
            self.leaf(Value::String(s.to_string()));
            Ok(())
        }
        fn visit_string<E>(self, s: String) -> Result<(), E> {
            self.leaf(Value::String(s));
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            self.leaf(Value::Null);
            Ok(())
        }
        fn visit_none<E>(self) -> Result<(), E> {
            self.leaf(Value::Null);
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<(), A::Error> {
            let v = Value::deserialize(de::value::SeqAccessDeserializer::new(s))?;
            self.leaf(v);
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<(), A::Error> {
            // An object where the field was first seen as an object (or is
            // new) is folded field by field; where it was a leaf, it is
            // one more (non-numeric) value of that leaf.
            if let Slot::Leaf(a) = &*self.0 {
                if a.seen == 0 {
                    *self.0 = Slot::Obj(Node::default());
                }
            }
            match self.0 {
                Slot::Obj(n) => fold_fields(n, m),
                Slot::Leaf(a) => {
                    a.fold(Value::deserialize(de::value::MapAccessDeserializer::new(
                        m,
                    ))?);
                    Ok(())
                }
            }
        }
    }

    use serde::Deserialize as _;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: i64 = 1_000_000_000;

    fn spec(w: &str, fields: Option<&str>, default: Option<&str>) -> Arc<Spec> {
        Arc::new(Spec::parse(Some(w), fields, default).unwrap().unwrap())
    }

    /// Feeds every reading, then finishes at `hi`.
    fn run(spec: Arc<Spec>, lo: i64, hi: i64, readings: &[(i64, Value)]) -> Vec<Window> {
        let mut a = Aggregator::new(spec, lo);
        let mut out: Vec<Window> = readings.iter().filter_map(|(t, v)| a.push(*t, v)).collect();
        out.extend(a.finish(hi));
        out
    }

    #[test]
    fn every_function_on_one_window() {
        let r = [
            (60 * S, json!({"t": 3, "f": 1.5})),
            (61 * S, json!({"t": 1, "f": -2.5})),
            (62 * S, json!({"t": 8, "f": 4.0})),
        ];
        for (f, t, fv) in [
            ("avg", json!(4.0), json!(1.0)),
            ("sum", json!(12), json!(3.0)),
            ("min", json!(1), json!(-2.5)),
            ("max", json!(8), json!(4.0)),
            ("count", json!(3), json!(3)),
            ("first", json!(3), json!(1.5)),
            ("last", json!(8), json!(4.0)),
        ] {
            let w = run(spec("1m", None, Some(f)), i64::MIN, i64::MAX, &r);
            assert_eq!(w.len(), 1, "{f}");
            assert_eq!(
                w[0].data,
                *json!({"t": t, "f": fv}).as_object().unwrap(),
                "{f}"
            );
            assert_eq!((w[0].end, w[0].count, w[0].partial), (120 * S, 3, false));
        }
    }

    #[test]
    fn a_list_of_defaults_names_each_output() {
        let r = [(0, json!({"t": 2})), (S, json!({"t": 4}))];
        let w = run(spec("10s", None, Some("avg,min,max")), 0, i64::MAX, &r);
        assert_eq!(
            Value::Object(w[0].data.clone()),
            json!({"t_avg": 3.0, "t_min": 2, "t_max": 4})
        );
    }

    #[test]
    fn windows_align_on_the_epoch_and_close_in_order() {
        // 90 s window: boundaries at multiples of 90 s since the epoch,
        // whatever the first reading's time.
        let r = [
            (100 * S, json!({"v": 1})),
            (179 * S, json!({"v": 2})),
            (180 * S, json!({"v": 10})),
            (400 * S, json!({"v": 7})),
        ];
        let mut a = Aggregator::new(spec("90s", None, Some("sum")), i64::MIN);
        assert_eq!(a.push(r[0].0, &r[0].1), None);
        assert_eq!(a.push(r[1].0, &r[1].1), None);
        let w1 = a.push(r[2].0, &r[2].1).unwrap();
        assert_eq!((w1.end, w1.count, w1.partial), (180 * S, 2, false));
        assert_eq!(w1.data["v"], json!(3));
        let w2 = a.push(r[3].0, &r[3].1).unwrap();
        assert_eq!((w2.end, w2.count), (270 * S, 1));
        let w3 = a.finish(i64::MAX).unwrap();
        assert_eq!((w3.end, w3.count, w3.partial), (450 * S, 1, false));
    }

    #[test]
    fn partial_windows_are_flagged_and_have_no_sum() {
        let r = [
            (65 * S, json!({"v": 1})),
            (70 * S, json!({"v": 2})),
            (125 * S, json!({"v": 3})),
            (185 * S, json!({"v": 4})),
        ];
        let sp = spec("1m", Some("v:sum,v:avg"), None);
        // Cut by the start (65 s is inside [60, 120)) and by the end.
        let w = run(sp.clone(), 65 * S, 190 * S, &r);
        let got: Vec<_> = w
            .iter()
            .map(|w| (w.end, w.partial, w.data["v_sum"].clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (120 * S, true, Value::Null),
                (180 * S, false, json!(3)),
                (240 * S, true, Value::Null),
            ]
        );
        assert_eq!(w[0].data["v_avg"], json!(1.5));
        // Bounds on the window edges cut nothing.
        let w = run(sp, 60 * S, 240 * S - 1, &r);
        assert!(w.iter().all(|w| !w.partial), "{w:?}");
        assert_eq!(w[2].data["v_sum"], json!(4));
    }

    #[test]
    fn nested_fields_by_dotted_path() {
        let r = [
            (
                0,
                json!({"s": {"t": 1, "h": 10, "deep": {"x": 5}}, "id": "a"}),
            ),
            (
                S,
                json!({"s": {"t": 3, "h": 30, "deep": {"x": 7}}, "id": "b"}),
            ),
        ];
        let w = run(
            spec(
                "1m",
                Some("s.t:max, s.deep.x:min,s.deep.x:count"),
                Some("sum"),
            ),
            0,
            i64::MAX,
            &r,
        );
        assert_eq!(
            Value::Object(w[0].data.clone()),
            json!({"s": {"t": 3, "h": 40, "deep": {"x_min": 5, "x_count": 2}}, "id": "b"})
        );
    }

    #[test]
    fn non_numeric_fields_take_last() {
        let r = [
            (
                0,
                json!({"s": "a", "b": true, "n": null, "arr": [1], "mixed": 1}),
            ),
            (
                S,
                json!({"s": "b", "b": false, "n": null, "arr": [2], "mixed": "x"}),
            ),
        ];
        let w = run(spec("1m", None, Some("avg,max")), 0, i64::MAX, &r);
        assert_eq!(
            Value::Object(w[0].data.clone()),
            json!({"s": "b", "b": false, "n": null, "arr": [2], "mixed": "x"})
        );
        // Named with a numeric function, a non-numeric field has no value.
        let w = run(spec("1m", Some("s:avg,s:count"), None), 0, i64::MAX, &r);
        assert_eq!(w[0].data["s_avg"], Value::Null);
        assert_eq!(w[0].data["s_count"], json!(2));
    }

    #[test]
    fn fields_missing_from_some_readings_and_bare_values() {
        let r = [
            (0, json!({"a": 1})),
            (S, json!(42)),
            (2 * S, json!({"b": 2.5})),
        ];
        let w = run(spec("1m", Some("a:count"), None), 0, i64::MAX, &r);
        assert_eq!(w[0].count, 3);
        assert_eq!(Value::Object(w[0].data.clone()), json!({"a": 1, "b": 2.5}));
        let mut a = Aggregator::new(spec("1m", None, None), 0);
        assert_eq!(a.push_json(0, b"not json"), None);
        let w = a.finish(i64::MAX).unwrap();
        assert_eq!((w.count, w.data.len()), (1, 0));
    }

    #[test]
    fn integer_sums_stay_exact_and_overflow_to_float() {
        let r = [(0, json!({"v": i64::MAX})), (S, json!({"v": 1}))];
        let w = run(spec("1m", None, Some("sum")), 0, i64::MAX, &r);
        assert_eq!(w[0].data["v"], json!(i64::MAX as f64 + 1.0));
        let r = [
            (0, json!({"v": 9007199254740993_i64})),
            (S, json!({"v": 0})),
        ];
        let w = run(spec("1m", None, Some("sum")), 0, i64::MAX, &r);
        assert_eq!(w[0].data["v"], json!(9007199254740993_i64));
    }

    /// The parser walk (`push_json`) and the `Value` walk (`push`) agree,
    /// on escaped names, arrays, and fields that change shape.
    #[test]
    fn text_and_values_fold_alike() {
        let r = [
            (
                0,
                json!({"a\"b": 1, "arr": [1, {"x": 2}], "shape": 1, "obj": {"v": 1}}),
            ),
            (
                S,
                json!({"a\"b": 2.5, "arr": [], "shape": {"v": 2}, "obj": 7}),
            ),
            (
                2 * S,
                json!({"shape": 3, "obj": {"v": 5, "w": "x"}, "u": 18446744073709551615_u64}),
            ),
            (3 * S, json!([1, 2])),
            (4 * S, json!("bare")),
        ];
        let sp = spec("1m", Some("shape:count,shape:last"), Some("sum,first"));
        let mut by_value = Aggregator::new(sp.clone(), 0);
        let mut by_text = Aggregator::new(sp, 0);
        for (t, v) in &r {
            assert_eq!(by_value.push(*t, v), None);
            assert_eq!(by_text.push_json(*t, v.to_string().as_bytes()), None);
        }
        let (a, b) = (by_value.finish(i64::MAX), by_text.finish(i64::MAX));
        assert_eq!(a, b);
        let w = a.unwrap();
        assert_eq!(w.count, 5);
        assert_eq!(
            Value::Object(w.data),
            json!({
                "a\"b_sum": 3.5, "a\"b_first": 1,
                "arr": [],
                "shape_count": 3, "shape_last": 3,
                "obj": {"v_sum": 6, "v_first": 1, "w": "x"},
                "u_sum": 18446744073709551615_u64 as f64, "u_first": 18446744073709551615_u64,
            })
        );
    }

    #[test]
    fn window_json_has_every_key() {
        let w = Window {
            end: 60,
            count: 0,
            partial: false,
            data: Map::new(),
        };
        let mut s = String::new();
        w.write_json(&mut s);
        assert_eq!(s, r#"{"timestamp":60,"count":0,"partial":false,"data":{}}"#);
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), w.to_value());
    }

    #[test]
    fn parameters_parse_and_refuse_with_clear_messages() {
        assert_eq!(Spec::parse(None, None, Some("")), Ok(None));
        let s = Spec::parse(Some("1h"), Some("a.b:avg,c:last"), Some("min,max"))
            .unwrap()
            .unwrap();
        assert_eq!(s.window_ns, 3600 * S);
        assert_eq!(
            s.fields,
            vec![
                (vec!["a".into(), "b".into()], vec![Func::Avg]),
                (vec!["c".into()], vec![Func::Last]),
            ]
        );
        assert_eq!(s.default, vec![Func::Min, Func::Max]);
        let err = |w: Option<&str>, f: Option<&str>, d: Option<&str>| {
            Spec::parse(w, f, d).unwrap_err().to_string()
        };
        assert_eq!(
            err(None, Some("a:avg"), None),
            "agg_fields and agg_default need agg_window"
        );
        assert_eq!(err(None, None, Some("avg")), err(None, Some("a:avg"), None));
        assert!(err(Some("abc"), None, None).starts_with("invalid agg_window: "));
        assert!(err(Some("0s"), None, None).starts_with("invalid agg_window: "));
        assert!(err(Some("-1m"), None, None).starts_with("invalid agg_window: "));
        assert!(err(Some("0.1ns"), None, None).contains("at least 1ns"));
        assert_eq!(
            err(Some("1m"), Some("a:median"), None),
            "unknown aggregation function \"median\": expected one of avg, sum, min, max, \
             count, first, last"
        );
        assert!(err(Some("1m"), None, Some("avg,mode")).contains("\"mode\""));
        assert!(err(Some("1m"), None, Some("avg,avg")).starts_with("invalid agg_default"));
        assert!(err(Some("1m"), Some("a"), None).starts_with("invalid agg_fields entry \"a\""));
        assert!(err(Some("1m"), Some("a..b:avg"), None).starts_with("invalid agg_fields entry"));
        assert!(err(Some("1m"), Some(":avg"), None).starts_with("invalid agg_fields entry"));
        assert_eq!(
            err(Some("1m"), Some("a:avg,a:avg"), None),
            "agg_fields names a:avg twice"
        );
        let many: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("f{i}:avg")).collect();
        assert_eq!(
            err(Some("1m"), Some(&many.join(",")), None),
            format!("agg_fields lists more than {MAX_FIELDS} entries")
        );
    }

    #[test]
    fn window_counts_and_alignment_arithmetic() {
        let s = spec("1m", None, None);
        assert_eq!(s.window_start(119 * S), 60 * S);
        assert_eq!(s.window_start(-1), -60 * S);
        assert_eq!(s.window_start(i64::MIN + 1), i64::MIN);
        assert_eq!(s.window_start(i64::MAX), i64::MAX - i64::MAX % (60 * S));
        assert_eq!(s.windows_in(0, 0), 1);
        assert_eq!(s.windows_in(59 * S, 60 * S), 2);
        assert_eq!(s.windows_in(0, 86_400 * S - 1), 1440);
        assert_eq!(s.windows_in(1, 0), 0);
        // The extremes neither overflow nor panic.
        let mut a = Aggregator::new(s.clone(), i64::MIN);
        assert_eq!(a.push(i64::MIN, &json!({"v": 1})), None);
        let first = a.push(i64::MAX, &json!({"v": 2})).unwrap();
        assert_eq!((first.end, first.count), (i64::MIN + 60 * S, 1));
        let last = a.finish(i64::MAX).unwrap();
        assert_eq!((last.end, last.partial), (i64::MAX, false));
        assert_eq!(
            spec("1ns", None, None).windows_in(i64::MIN, i64::MAX),
            u64::MAX
        );
    }
}
