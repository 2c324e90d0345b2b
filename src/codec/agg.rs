//! Time-windowed aggregation of JSON readings (issue 15): the parameters
//! (`agg_window`, `agg_fields`, `agg_default`) parsed once into a [`Spec`],
//! and an [`Aggregator`] fed readings in time order that yields each window
//! when it closes and the open one at [`Aggregator::finish`].
//!
//! Shared below the areas so that every reader (REST, `/ws/read`, push
//! connections and MQTT sinks, the last three through
//! [`crate::codec::frames::WindowFrames`]) computes the same windows, and
//! refuses the same parameters with the same messages ([`Spec::parse_for`],
//! [`Params`]). [`Compact`] is the compact form of windows of schema
//! stores.
//!
//! Invariants:
//! - Windows are aligned on the Unix epoch: a reading at `t` belongs to the
//!   window `[k*w, (k+1)*w)` with `k = floor(t / w)`; the window's
//!   `timestamp` is its end, `(k+1)*w`.
//! - One window is open at a time; its state is one accumulator per field
//!   path seen in it, never the readings themselves, so memory is bounded
//!   by the shape of the data, not by the number of readings; a window
//!   takes at most [`MAX_OUTPUTS`] fields ([`AggError::TooManyFields`]
//!   beyond), and a node past a few fields finds names by hash, so a
//!   reading with many names folds in linear time.
//! - Nulls are ignored; integers stay exact (min, max, sum in i128).
//! - A window is partial when it is not wholly inside the bounds it was
//!   computed under (cut by the start, by the end, or not over yet); a
//!   partial window's `sum` outputs are `null`, since a sum of part of a
//!   window reads as a smaller value rather than as missing data.
//! - Nothing here panics on any input: unknown shapes degrade to `last`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeSeed as _;
use serde_json::{Map, Number, Value};

use crate::duration;
use crate::store::{DataType, Schema, Store};

/// Most windows one request may answer (its `limit`).
pub const MAX_WINDOWS: u64 = 100_000;
/// Most outputs (leaf values) one window may hold.
pub const MAX_OUTPUTS: usize = 1024;
/// Shortest window: smaller ones make no sense for aggregation.
pub const MIN_WINDOW_NS: i64 = 1_000_000;

/// Why an aggregation stopped; the message is the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AggError {
    #[error("aggregated windows are limited to {MAX_OUTPUTS} fields")]
    TooManyFields,
}
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
    /// Binary and text stores hold no fields to aggregate.
    #[error("aggregation needs a json or schema store; this store holds {}", .0.as_str())]
    WrongStore(DataType),
}

/// The parsed aggregation parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Window length in nanoseconds, at least [`MIN_WINDOW_NS`].
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
            .filter(|&n| n >= MIN_WINDOW_NS)
            .ok_or_else(|| SpecError::BadWindow(format!("{window} (must be at least 1ms)")))?;
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

    /// [`Spec::parse`] for a store of type `dt`: the parameters, then the
    /// store (only json and schema stores aggregate). Every reader of
    /// windows (REST, `/ws/read`, push connections, MQTT sinks) checks
    /// with this, so they refuse alike.
    pub fn parse_for(
        dt: DataType,
        window: Option<&str>,
        fields: Option<&str>,
        default: Option<&str>,
    ) -> Result<Option<Spec>, SpecError> {
        let spec = Spec::parse(window, fields, default)?;
        if spec.is_some() && matches!(dt, DataType::Binary | DataType::Text) {
            return Err(SpecError::WrongStore(dt));
        }
        Ok(spec)
    }

    /// Start of the window holding `ts`.
    /// Saturates at `i64::MIN` instead of overflowing there.
    pub fn window_start(&self, ts: i64) -> i64 {
        ts.saturating_sub(ts.rem_euclid(self.window_ns))
    }

    /// The functions named for `path`, if `agg_fields` names it.
    fn listed(&self, path: &[String]) -> Option<&[Func]> {
        self.fields
            .iter()
            .find(|(p, _)| p.as_slice() == path)
            .map(|(_, f)| f.as_slice())
    }
}

/// The three parameters as a connection or sink keeps them (create body,
/// persisted file, status object): flattened into their specs, absent
/// when not given.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agg_window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agg_fields: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agg_default: Option<String>,
}

/// Longest value of one parameter a create body may give.
pub const MAX_PARAM_LEN: usize = 16 * 1024;

impl Params {
    /// The parameters of a JSON create body, checked for a store of type
    /// `dt` with REST's messages; blank values count as absent.
    pub fn from_body(m: &Map<String, Value>, dt: DataType) -> Result<Params, String> {
        let field = |name: &str| -> Result<Option<String>, String> {
            match m.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.len() > MAX_PARAM_LEN => {
                    Err(format!("invalid {name}: at most {MAX_PARAM_LEN} bytes"))
                }
                Some(Value::String(s)) => Ok(given(Some(s)).map(|s| s.trim().to_string())),
                Some(_) => Err(format!("invalid {name}: must be a string")),
            }
        };
        let p = Params {
            agg_window: field("agg_window")?,
            agg_fields: field("agg_fields")?,
            agg_default: field("agg_default")?,
        };
        p.spec(dt).map_err(|e| e.to_string())?;
        Ok(p)
    }

    /// The aggregation they ask for, if any.
    pub fn spec(&self, dt: DataType) -> Result<Option<Spec>, SpecError> {
        Spec::parse_for(
            dt,
            self.agg_window.as_deref(),
            self.agg_fields.as_deref(),
            self.agg_default.as_deref(),
        )
    }

    /// True when aggregation is asked for.
    pub fn given(&self) -> bool {
        self.agg_window.is_some()
    }

    /// Adds the three keys (`null` when not given) to a status object.
    pub fn add_to(&self, v: &mut Value) {
        v["agg_window"] = self.agg_window.clone().into();
        v["agg_fields"] = self.agg_fields.clone().into();
        v["agg_default"] = self.agg_default.clone().into();
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
    /// Timestamp of the newest reading folded in: a reader resuming on
    /// raw readings after this window starts past it.
    pub last: i64,
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

/// The compact form of windows for a schema store (`format=compact` on
/// the streams and sinks): the window's outputs described once, as a
/// schema of their own (`{"type":"schema","_schema":{"version","fields"}}`,
/// the shape of the store's `schema.json`), then each window's `data` keyed
/// by those indices. The description is derived from the store's schema
/// and the [`Spec`] (which outputs each field gives, named as in the
/// expanded windows); an output it did not foresee (the store's schema
/// evolved, or a field had only nulls in a window and fell back to `last`)
/// is appended with the next index and the version bumped, so indices
/// never change meaning within a stream.
#[derive(Debug, Clone)]
pub struct Compact {
    schema: Schema,
    index: HashMap<String, u32>,
}

impl Compact {
    /// The outputs of `store_schema`'s fields under `spec`.
    pub fn new(spec: &Spec, store_schema: Option<&Schema>) -> Compact {
        use crate::store::schema::{Field, FieldType};
        let numeric = |t: FieldType| !matches!(t, FieldType::Bool | FieldType::String);
        let unsigned = |t: FieldType| {
            matches!(
                t,
                FieldType::Uint8 | FieldType::Uint16 | FieldType::Uint32 | FieldType::Uint64
            )
        };
        let int =
            |t: FieldType| numeric(t) && !matches!(t, FieldType::Float32 | FieldType::Float64);
        let fields = store_schema.map(|s| s.fields.as_slice()).unwrap_or(&[]);
        let funcs_of = |f: &Field| -> Vec<Func> {
            match spec.listed(std::slice::from_ref(&f.name)) {
                Some(fs) => fs.to_vec(),
                None if numeric(f.ty) => spec.default.clone(),
                None => vec![Func::Last],
            }
        };
        let suffixed: HashSet<String> = fields
            .iter()
            .map(|f| (f, funcs_of(f)))
            .filter(|(_, fs)| fs.len() > 1)
            .flat_map(|(f, fs)| {
                fs.into_iter()
                    .map(move |x| format!("{}_{}", f.name, x.name()))
            })
            .collect();
        let mut c = Compact {
            schema: Schema {
                version: 1,
                fields: Vec::new(),
            },
            index: HashMap::new(),
        };
        for f in fields {
            let fs = funcs_of(f);
            if fs.len() == 1 && suffixed.contains(&f.name) {
                continue;
            }
            for x in &fs {
                let ty = match x {
                    Func::Count => FieldType::Uint64,
                    Func::Avg => FieldType::Float64,
                    Func::Sum if int(f.ty) && unsigned(f.ty) => FieldType::Uint64,
                    Func::Sum if int(f.ty) => FieldType::Int64,
                    Func::Sum => FieldType::Float64,
                    Func::Min | Func::Max if !numeric(f.ty) => FieldType::Float64,
                    _ => f.ty,
                };
                let name = if fs.len() == 1 {
                    f.name.clone()
                } else {
                    format!("{}_{}", f.name, x.name())
                };
                c.add(name, ty);
            }
        }
        c
    }

    fn add(&mut self, name: String, ty: crate::store::schema::FieldType) -> u32 {
        let index = self.schema.fields.len() as u32 + 1;
        self.index.insert(name.clone(), index);
        self.schema
            .fields
            .push(crate::store::schema::Field { index, name, ty });
        index
    }

    /// The output schema: `{"version":V,"fields":[{"index","name","type"}]}`.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// `data` keyed by output index; true when an output was new and
    /// appended (the schema must be sent again before this window).
    pub fn encode(&mut self, data: &Map<String, Value>) -> (Map<String, Value>, bool) {
        use crate::store::schema::FieldType;
        let mut grown = false;
        let mut out = Map::new();
        for (k, v) in data {
            let i = match self.index.get(k) {
                Some(&i) => i,
                None if self.schema.fields.len() >= MAX_OUTPUTS => continue,
                None => {
                    if !grown {
                        self.schema.version += 1;
                        grown = true;
                    }
                    let ty = match v {
                        Value::Bool(_) => FieldType::Bool,
                        Value::String(_) => FieldType::String,
                        Value::Number(n) if n.is_u64() => FieldType::Uint64,
                        Value::Number(n) if n.is_i64() => FieldType::Int64,
                        _ => FieldType::Float64,
                    };
                    self.add(k.clone(), ty)
                }
            };
            out.insert(i.to_string(), v.clone());
        }
        // Ascending index order, as the store's compact objects.
        let mut pairs: Vec<(u32, Value)> = out
            .into_iter()
            .map(|(k, v)| (k.parse().unwrap_or(0), v))
            .collect();
        pairs.sort_by_key(|(i, _)| *i);
        (
            pairs.into_iter().map(|(i, v)| (i.to_string(), v)).collect(),
            grown,
        )
    }
}

/// The running state of one field path in the open window.
#[derive(Debug, Default)]
struct Acc {
    /// Readings that held the field with a non-null value (nulls are
    /// ignored: one null does not make a numeric field non-numeric).
    seen: u64,
    /// Of those, the numeric ones, and their sum, min and max.
    nums: u64,
    sum: f64,
    /// Running mean: the average when the sum overflows to infinity
    /// (`x/n - mean/n` never overflows).
    mean: f64,
    /// Exact sum while every number is an integer (i64 or u64).
    int_sum: Option<i128>,
    /// Exact: integers compare as integers, not as f64.
    min: Option<Number>,
    max: Option<Number>,
    first: Option<Value>,
    last: Option<Value>,
}

/// A number as an exact integer, when it is one.
fn int_of(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Orders numbers exactly when both are integers, as f64 otherwise.
fn num_cmp(a: &Number, b: &Number) -> std::cmp::Ordering {
    match (int_of(a), int_of(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
        }
    }
}

impl Acc {
    fn fold_num(&mut self, n: Number) {
        let Some(x) = n.as_f64() else {
            return;
        };
        self.seen += 1;
        if self.nums == 0 {
            self.int_sum = Some(0);
        }
        self.nums += 1;
        self.sum += x;
        let k = self.nums as f64;
        self.mean += x / k - self.mean / k;
        self.int_sum = match (self.int_sum, int_of(&n)) {
            (Some(s), Some(i)) => s.checked_add(i),
            _ => None,
        };
        if self
            .min
            .as_ref()
            .is_none_or(|m| num_cmp(&n, m) == std::cmp::Ordering::Less)
        {
            self.min = Some(n.clone());
        }
        if self
            .max
            .as_ref()
            .is_none_or(|m| num_cmp(&n, m) == std::cmp::Ordering::Greater)
        {
            self.max = Some(n.clone());
        }
        if self.first.is_none() {
            self.first = Some(Value::Number(n.clone()));
        }
        self.last = Some(Value::Number(n));
    }

    /// A string: copied for `first` once, and into `last`'s buffer
    /// (reused, so a run of strings allocates once).
    fn fold_str(&mut self, s: &str) {
        self.seen += 1;
        if self.first.is_none() {
            self.first = Some(Value::String(s.to_string()));
        }
        match &mut self.last {
            Some(Value::String(b)) => {
                b.clear();
                b.push_str(s);
            }
            last => *last = Some(Value::String(s.to_string())),
        }
    }

    /// Any value; nulls are ignored.
    fn fold(&mut self, v: Value) {
        match v {
            Value::Null => {}
            Value::Number(n) => self.fold_num(n),
            Value::String(s) => self.fold_str(&s),
            v => {
                self.seen += 1;
                if self.first.is_none() {
                    self.first = Some(v.clone());
                }
                self.last = Some(v);
            }
        }
    }

    /// Some value was a number and every non-null value seen was one.
    fn numeric(&self) -> bool {
        self.nums > 0 && self.nums == self.seen
    }

    fn out(&self, f: Func, partial: bool) -> Value {
        let num = |x: f64| Number::from_f64(x).map_or(Value::Null, Value::Number);
        match f {
            Func::Count => self.seen.into(),
            Func::First => self.first.clone().unwrap_or(Value::Null),
            Func::Last => self.last.clone().unwrap_or(Value::Null),
            _ if self.nums == 0 => Value::Null,
            Func::Avg => match self.int_sum {
                Some(s) => num(s as f64 / self.nums as f64),
                None if self.sum.is_finite() => num(self.sum / self.nums as f64),
                None => num(self.mean),
            },
            Func::Sum if partial => Value::Null,
            Func::Sum => match self.int_sum {
                Some(s) => match (i64::try_from(s), u64::try_from(s)) {
                    (Ok(i), _) => i.into(),
                    (_, Ok(u)) => u.into(),
                    _ => num(s as f64),
                },
                // An overflow to infinity gives null (JSON has no inf).
                None => num(self.sum),
            },
            Func::Min => self.min.clone().map_or(Value::Null, Value::Number),
            Func::Max => self.max.clone().map_or(Value::Null, Value::Number),
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

/// Fields past which a node looks names up in a hash index rather than
/// by a linear search (small objects stay on the cheaper search).
const INDEX_AT: usize = 16;

/// The fields of an object, in the order they were first seen.
#[derive(Debug, Default)]
struct Node {
    fields: Vec<(String, Slot)>,
    /// Name -> position in `fields`, once there are [`INDEX_AT`] fields:
    /// keeps a reading with many distinct names linear, not quadratic.
    index: Option<HashMap<String, usize>>,
}

impl Node {
    /// The slot of field `k`, added (as a fresh leaf) when first seen and
    /// `budget` (leaves left in the window) allows; `None` when it does not.
    fn slot(&mut self, k: &str, budget: &mut usize) -> Option<&mut Slot> {
        let found = match &self.index {
            Some(ix) => ix.get(k).copied(),
            None => self.fields.iter().position(|(name, _)| name == k),
        };
        let i = match found {
            Some(i) => i,
            None => {
                if *budget == 0 {
                    return None;
                }
                *budget -= 1;
                let i = self.fields.len();
                self.fields
                    .push((k.to_string(), Slot::Leaf(Acc::default())));
                match &mut self.index {
                    Some(ix) => {
                        ix.insert(k.to_string(), i);
                    }
                    None if self.fields.len() >= INDEX_AT => {
                        self.index = Some(
                            self.fields
                                .iter()
                                .enumerate()
                                .map(|(i, (n, _))| (n.clone(), i))
                                .collect(),
                        );
                    }
                    None => {}
                }
                i
            }
        };
        Some(&mut self.fields[i].1)
    }

    /// The window's output of this object. An output `<field>_<fn>` of
    /// functions asked for wins over a field of the same name, which is
    /// left out. `n`: outputs so far, at most [`MAX_OUTPUTS`].
    fn output(
        &self,
        spec: &Spec,
        path: &mut Vec<String>,
        partial: bool,
        n: &mut usize,
    ) -> Result<Map<String, Value>, AggError> {
        let funcs_of = |a: &Acc, path: &[String]| -> Vec<Func> {
            match spec.listed(path) {
                Some(fs) => fs.to_vec(),
                None if a.numeric() => spec.default.clone(),
                None => vec![Func::Last],
            }
        };
        let mut suffixed: HashSet<String> = HashSet::new();
        for (name, slot) in &self.fields {
            if let Slot::Leaf(a) = slot {
                path.push(name.clone());
                let fs = funcs_of(a, path);
                path.pop();
                if fs.len() > 1 {
                    suffixed.extend(fs.iter().map(|f| format!("{name}_{}", f.name())));
                }
            }
        }
        let mut out = Map::new();
        for (name, slot) in &self.fields {
            path.push(name.clone());
            match slot {
                _ if suffixed.contains(name) && !is_multi(slot, spec, path) => {}
                Slot::Obj(node) => {
                    let v = node.output(spec, path, partial, n)?;
                    out.insert(name.clone(), Value::Object(v));
                }
                Slot::Leaf(a) => {
                    let funcs = funcs_of(a, path);
                    *n += funcs.len();
                    if *n > MAX_OUTPUTS {
                        return Err(AggError::TooManyFields);
                    }
                    if let [f] = funcs.as_slice() {
                        out.insert(name.clone(), a.out(*f, partial));
                    } else {
                        for f in &funcs {
                            out.insert(format!("{name}_{}", f.name()), a.out(*f, partial));
                        }
                    }
                }
            }
            path.pop();
        }
        Ok(out)
    }
}

/// A leaf whose outputs are suffixed `<field>_<fn>` (its own name is not
/// an output, so it never collides).
fn is_multi(slot: &Slot, spec: &Spec, path: &[String]) -> bool {
    match slot {
        Slot::Obj(_) => false,
        Slot::Leaf(a) => match spec.listed(path) {
            Some(fs) => fs.len() > 1,
            None => a.numeric() && spec.default.len() > 1,
        },
    }
}

/// The open window.
struct Open {
    start: i64,
    count: u64,
    /// Newest timestamp folded in.
    last: i64,
    /// New leaves the window may still take (of [`MAX_OUTPUTS`]).
    budget: usize,
    /// A reading had more fields than the budget.
    over: bool,
    root: Node,
}

/// Folds readings, in time order, into aligned windows.
pub struct Aggregator {
    spec: Arc<Spec>,
    /// Lower bound of the readings fed: a window that begins before it is
    /// partial.
    lo: i64,
    /// Upper bound (the query's end, or now when earlier): a window that
    /// ends after it is partial, whatever readings come later (a reading
    /// stamped in the future does not complete the current window).
    hi: i64,
    open: Option<Open>,
}

impl fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregator")
            .field("spec", &self.spec)
            .field("lo", &self.lo)
            .field("hi", &self.hi)
            .field("open", &self.open.as_ref().map(|o| (o.start, o.count)))
            .finish()
    }
}

impl Aggregator {
    /// `lo`, `hi`: the first and last timestamps whose windows count as
    /// covered (`i64::MIN` / `i64::MAX` when unbounded; `hi` is at most
    /// now for a window to be over). A window reaching outside is partial.
    pub fn new(spec: Arc<Spec>, lo: i64, hi: i64) -> Aggregator {
        Aggregator {
            spec,
            lo,
            hi,
            open: None,
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Folds one reading. Returns the previous window when `ts` falls in a
    /// later one. A reading older than the open window (out of order)
    /// is folded into the open window rather than reopening a closed one.
    pub fn push(&mut self, ts: i64, data: &Value) -> Result<Option<Window>, AggError> {
        let (closed, o) = self.enter(ts)?;
        // Folding a `Value` fails only on the field budget.
        let _ = fold::Reading(&mut o.root, &mut o.budget, &mut o.over).deserialize(data);
        Self::checked(closed, o)
    }

    /// [`Aggregator::push`] of stored JSON text, parsed and folded in one
    /// walk without building the value. Text that does not parse counts
    /// as a reading, with the fields read before the error.
    pub fn push_json(&mut self, ts: i64, bytes: &[u8]) -> Result<Option<Window>, AggError> {
        let (closed, o) = self.enter(ts)?;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let _ = fold::Reading(&mut o.root, &mut o.budget, &mut o.over).deserialize(&mut de);
        Self::checked(closed, o)
    }

    fn checked(closed: Option<Window>, o: &Open) -> Result<Option<Window>, AggError> {
        if o.over {
            return Err(AggError::TooManyFields);
        }
        Ok(closed)
    }

    /// Counts a reading at `ts`: closes the open window if `ts` lies past
    /// it, and returns the window `ts` is folded into.
    fn enter(&mut self, ts: i64) -> Result<(Option<Window>, &mut Open), AggError> {
        let ws = self.spec.window_start(ts);
        let closed = match &self.open {
            Some(o) if ws > o.start => self.close(false)?,
            _ => None,
        };
        let o = self.open.get_or_insert_with(|| Open {
            start: ws,
            count: 0,
            last: ts,
            budget: MAX_OUTPUTS,
            over: false,
            root: Node::default(),
        });
        o.count += 1;
        o.last = o.last.max(ts);
        Ok((closed, o))
    }

    /// [`Aggregator::push`] of a stored object: a schema store's compact
    /// bytes are expanded first (windows are of the full objects).
    pub fn push_stored(
        &mut self,
        store: &Store,
        ts: i64,
        stored: &[u8],
    ) -> Result<Option<Window>, AggError> {
        if store.config().data_type == DataType::Schema {
            match store.decode_value(stored, false) {
                Ok(full) => self.push_json(ts, &full),
                Err(_) => self.push(ts, &Value::Null),
            }
        } else {
            self.push_json(ts, stored)
        }
    }

    /// The open window, if any.
    pub fn finish(mut self) -> Result<Option<Window>, AggError> {
        self.close(false)
    }

    /// Closes the open window before its end, flagged partial (its `sum`
    /// outputs `null`): a stream that stops (server shutdown) or loses
    /// readings (a gap) mid-window. The aggregator goes on with the next
    /// reading.
    pub fn cut(&mut self) -> Result<Option<Window>, AggError> {
        self.close(true)
    }

    /// Moves the lower bound: a window beginning before `lo` is partial
    /// (after a gap, the readings before `lo` in the first window are gone).
    pub fn set_lo(&mut self, lo: i64) {
        self.lo = lo;
    }

    /// True while a window holds readings not yet returned.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    fn close(&mut self, cut: bool) -> Result<Option<Window>, AggError> {
        let Some(o) = self.open.take() else {
            return Ok(None);
        };
        let end = o.start.saturating_add(self.spec.window_ns);
        let partial = cut || o.start < self.lo || end - 1 > self.hi;
        let data = o
            .root
            .output(&self.spec, &mut Vec::new(), partial, &mut 0)?;
        Ok(Some(Window {
            end,
            count: o.count,
            last: o.last,
            partial,
            data,
        }))
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
    pub struct Reading<'a>(pub &'a mut Node, pub &'a mut usize, pub &'a mut bool);

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
            fold_fields(self.0, self.1, self.2, m)
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

    /// Folds an object's fields; stops (an error, `over` set) at the
    /// first new field past the window's budget.
    fn fold_fields<'de, A: MapAccess<'de>>(
        node: &mut Node,
        budget: &mut usize,
        over: &mut bool,
        mut m: A,
    ) -> Result<(), A::Error> {
        while let Some(slot) = m.next_key_seed(Key(node, budget))? {
            let Some(slot) = slot else {
                *over = true;
                return Err(de::Error::custom("too many fields"));
            };
            m.next_value_seed(Field(slot, budget, over))?;
        }
        Ok(())
    }

    /// A field name: resolves to its slot without allocating the name
    /// (unless the field is new).
    struct Key<'a, 'b>(&'a mut Node, &'b mut usize);

    impl<'de, 'a> DeserializeSeed<'de> for Key<'a, '_> {
        type Value = Option<&'a mut Slot>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<&'a mut Slot>, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de, 'a> Visitor<'de> for Key<'a, '_> {
        type Value = Option<&'a mut Slot>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a field name")
        }
        fn visit_str<E>(self, k: &str) -> Result<Option<&'a mut Slot>, E> {
            Ok(self.0.slot(k, self.1))
        }
    }

    /// A field's value, folded into its slot.
    struct Field<'a>(&'a mut Slot, &'a mut usize, &'a mut bool);

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

        fn leaf_str(self, s: &str) {
            if let Slot::Leaf(a) = self.0 {
                a.fold_str(s);
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
            self.leaf_str(s);
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
                Slot::Obj(n) => fold_fields(n, self.1, self.2, m),
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
        let mut a = Aggregator::new(spec, lo, hi);
        let mut out: Vec<Window> = readings
            .iter()
            .filter_map(|(t, v)| a.push(*t, v).unwrap())
            .collect();
        out.extend(a.finish().unwrap());
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
        let mut a = Aggregator::new(spec("90s", None, Some("sum")), i64::MIN, i64::MAX);
        assert_eq!(a.push(r[0].0, &r[0].1).unwrap(), None);
        assert_eq!(a.push(r[1].0, &r[1].1).unwrap(), None);
        let w1 = a.push(r[2].0, &r[2].1).unwrap().unwrap();
        assert_eq!((w1.end, w1.count, w1.partial), (180 * S, 2, false));
        assert_eq!(w1.data["v"], json!(3));
        let w2 = a.push(r[3].0, &r[3].1).unwrap().unwrap();
        assert_eq!((w2.end, w2.count), (270 * S, 1));
        let w3 = a.finish().unwrap().unwrap();
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
        let mut a = Aggregator::new(spec("1m", None, None), 0, i64::MAX);
        assert_eq!(a.push_json(0, b"not json").unwrap(), None);
        let w = a.finish().unwrap().unwrap();
        assert_eq!((w.count, w.data.len()), (1, 0));
    }

    #[test]
    fn integer_sums_stay_exact_and_overflow_to_float() {
        let r = [(0, json!({"v": i64::MAX})), (S, json!({"v": 1}))];
        let w = run(spec("1m", None, Some("sum")), 0, i64::MAX, &r);
        assert_eq!(w[0].data["v"], json!(i64::MAX as u64 + 1));
        let r = [(0, json!({"v": u64::MAX})), (S, json!({"v": u64::MAX}))];
        let w = run(spec("1m", None, Some("sum")), 0, i64::MAX, &r);
        assert_eq!(w[0].data["v"], json!(u64::MAX as f64 * 2.0));
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
        let mut by_value = Aggregator::new(sp.clone(), 0, i64::MAX);
        let mut by_text = Aggregator::new(sp, 0, i64::MAX);
        for (t, v) in &r {
            assert_eq!(by_value.push(*t, v).unwrap(), None);
            assert_eq!(
                by_text.push_json(*t, v.to_string().as_bytes()).unwrap(),
                None
            );
        }
        let (a, b) = (by_value.finish().unwrap(), by_text.finish().unwrap());
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
                "u_sum": 18446744073709551615_u64, "u_first": 18446744073709551615_u64,
            })
        );
    }

    #[test]
    fn a_cut_window_is_partial_and_the_next_goes_on() {
        let mut a = Aggregator::new(spec("1m", None, Some("sum")), i64::MIN, i64::MAX);
        assert_eq!(a.push(60 * S, &json!({"v": 1})).unwrap(), None);
        assert_eq!(a.push(70 * S, &json!({"v": 2})).unwrap(), None);
        let w = a.cut().unwrap().unwrap();
        assert_eq!(
            (w.end, w.count, w.last, w.partial),
            (120 * S, 2, 70 * S, true)
        );
        assert_eq!(w.data["v"], Value::Null);
        assert!(!a.is_open());
        a.set_lo(100 * S);
        assert_eq!(a.push(110 * S, &json!({"v": 5})).unwrap(), None);
        let w = a.push(130 * S, &json!({"v": 7})).unwrap().unwrap();
        // Begins before the new lower bound: partial.
        assert_eq!((w.end, w.count, w.partial), (120 * S, 1, true));
        let w = a.finish().unwrap().unwrap();
        assert_eq!(
            (w.end, w.count, w.last, w.partial),
            (180 * S, 1, 130 * S, false)
        );
        assert_eq!(w.data["v"], json!(7));
    }

    #[test]
    fn compact_windows_follow_the_store_schema() {
        use crate::store::{Field, FieldType};
        let f = |index, name: &str, ty| Field {
            index,
            name: name.into(),
            ty,
        };
        let schema = Schema {
            version: 3,
            fields: vec![
                f(1, "temp", FieldType::Float32),
                f(2, "n", FieldType::Uint16),
                f(3, "state", FieldType::String),
                f(4, "temp_max", FieldType::String),
            ],
        };
        let sp = spec("1m", Some("n:sum"), Some("min,max"));
        let mut c = Compact::new(&sp, Some(&schema));
        let desc: Vec<(u32, &str, &str)> = c
            .schema()
            .fields
            .iter()
            .map(|f| (f.index, f.name.as_str(), f.ty.as_str()))
            .collect();
        // temp_max (a real field, one output) gives way to temp's output
        // of that name, as in the expanded windows.
        assert_eq!(
            desc,
            [
                (1, "temp_min", "float32"),
                (2, "temp_max", "float32"),
                (3, "n", "uint64"),
                (4, "state", "string")
            ]
        );
        assert_eq!(c.schema().version, 1);
        let w = run(
            sp.clone(),
            i64::MIN,
            i64::MAX,
            &[
                (0, json!({"temp": 2.5, "n": 1, "state": "a"})),
                (S, json!({"temp": 1.5, "n": 2, "state": "b"})),
            ],
        );
        let (data, grown) = c.encode(&w[0].data);
        assert!(!grown);
        assert_eq!(
            Value::Object(data),
            json!({"1": 1.5, "2": 2.5, "3": 3, "4": "b"})
        );
        // An output not foreseen is appended, the version bumped.
        let (data, grown) = c.encode(json!({"temp_min": 1, "x": true}).as_object().unwrap());
        assert!(grown);
        assert_eq!(Value::Object(data), json!({"1": 1, "5": true}));
        assert_eq!(c.schema().version, 2);
        assert_eq!(c.schema().fields[4].ty, FieldType::Bool);
    }

    #[test]
    fn store_types_are_checked_with_the_parameters() {
        assert_eq!(
            Spec::parse_for(DataType::Text, Some("1m"), None, None)
                .unwrap_err()
                .to_string(),
            "aggregation needs a json or schema store; this store holds text"
        );
        assert_eq!(
            Spec::parse_for(DataType::Binary, None, None, None),
            Ok(None)
        );
        assert!(Spec::parse_for(DataType::Schema, Some("1m"), None, None)
            .unwrap()
            .is_some());
    }

    #[test]
    fn window_json_has_every_key() {
        let w = Window {
            end: 60,
            count: 0,
            last: 0,
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
        assert!(err(Some("0.1ns"), None, None).contains("at least 1ms"));
        // Under 1 ms is refused, with the window as the client wrote it.
        assert_eq!(
            err(Some("999us"), None, None),
            "invalid agg_window: 999us (must be at least 1ms)"
        );
        assert!(Spec::parse(Some("1ms"), None, None).is_ok());
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
        // The extremes neither overflow nor panic.
        let mut a = Aggregator::new(s.clone(), i64::MIN, i64::MAX);
        assert_eq!(a.push(i64::MIN, &json!({"v": 1})).unwrap(), None);
        let first = a.push(i64::MAX, &json!({"v": 2})).unwrap().unwrap();
        assert_eq!((first.end, first.count), (i64::MIN + 60 * S, 1));
        let last = a.finish().unwrap().unwrap();
        assert_eq!((last.end, last.partial), (i64::MAX, false));
    }

    /// Review finding 1: a reading with tens of thousands of distinct
    /// names made the fold quadratic and the window unbounded. Names are
    /// hashed past a few fields, and a window holds at most MAX_OUTPUTS.
    #[test]
    fn many_fields_are_indexed_and_capped() {
        let obj =
            |n: usize, v: i64| Value::Object((0..n).map(|i| (format!("k{i}"), json!(v))).collect());
        // Under the cap: every field found again through the index.
        let w = run(
            spec("1m", None, Some("sum")),
            0,
            i64::MAX,
            &[(0, obj(MAX_OUTPUTS, 1)), (S, obj(MAX_OUTPUTS, 2))],
        );
        assert_eq!(w[0].data.len(), MAX_OUTPUTS);
        assert!(w[0].data.values().all(|v| *v == json!(3)));
        // Over it, on one reading (text or value), and in the outputs.
        let msg = "aggregated windows are limited to 1024 fields";
        let mut a = Aggregator::new(spec("1m", None, None), 0, i64::MAX);
        let big = obj(30_000, 1).to_string();
        let t = std::time::Instant::now();
        assert_eq!(a.push_json(0, big.as_bytes()).unwrap_err().to_string(), msg);
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let mut a = Aggregator::new(spec("1m", None, None), 0, i64::MAX);
        assert_eq!(
            a.push(0, &obj(MAX_OUTPUTS + 1, 1)),
            Err(AggError::TooManyFields)
        );
        let mut a = Aggregator::new(spec("1m", None, Some("min,max")), 0, i64::MAX);
        assert_eq!(a.push(0, &obj(600, 1)), Ok(None));
        assert_eq!(a.finish(), Err(AggError::TooManyFields));
    }

    /// Review finding 3: `<field>_<fn>` outputs overwrote a data field of
    /// the same name, depending on order. The outputs asked for win, and
    /// the data field is left out, in either order.
    #[test]
    fn asked_outputs_win_over_a_field_of_the_same_name() {
        let sp = spec("1m", Some("t:avg,t:max"), None);
        for r in [
            [
                (0, json!({"t": 1, "t_avg": 100})),
                (S, json!({"t": 3, "t_avg": 100})),
            ],
            [
                (0, json!({"t_avg": 100, "t": 1})),
                (S, json!({"t_avg": 100, "t": 3})),
            ],
        ] {
            let w = run(sp.clone(), 0, i64::MAX, &r);
            assert_eq!(w[0].data.len(), 2, "{:?}", w[0].data);
            assert_eq!(w[0].data["t_avg"], json!(2.0));
            assert_eq!(w[0].data["t_max"], json!(3));
        }
        // From agg_default too; a field with one output keeps its name.
        let w = run(
            spec("1m", None, Some("avg,min")),
            0,
            i64::MAX,
            &[(0, json!({"v_min": "x", "v": 5}))],
        );
        assert_eq!(
            Value::Object(w[0].data.clone()),
            json!({"v_avg": 5.0, "v_min": 5})
        );
    }

    /// Review finding 5: a reading stamped in the future (allowed up to
    /// max_future) closed the current window as complete.
    #[test]
    fn a_window_ending_after_the_bound_stays_partial() {
        let now = 100 * S;
        let r = [(90 * S, json!({"v": 1})), (130 * S, json!({"v": 2}))];
        let w = run(spec("1m", None, Some("sum")), 0, now, &r);
        assert_eq!(
            w.iter().map(|w| (w.end, w.partial)).collect::<Vec<_>>(),
            vec![(120 * S, true), (180 * S, true)]
        );
        assert_eq!(w[0].data["v"], Value::Null);
    }

    /// Review finding 6: min and max compared as f64, so integers past
    /// 2^53 came out wrong.
    #[test]
    fn big_integers_compare_exactly() {
        let (a, b) = (9007199254740993_i64, 9007199254740992_i64);
        let r = [
            (0, json!({"v": b})),
            (S, json!({"v": a})),
            (2 * S, json!({"v": b})),
        ];
        let w = run(spec("1m", None, Some("min,max")), 0, i64::MAX, &r);
        assert_eq!(w[0].data["v_max"], json!(a));
        assert_eq!(w[0].data["v_min"], json!(b));
        let r = [(0, json!({"v": u64::MAX})), (S, json!({"v": u64::MAX - 1}))];
        let w = run(spec("1m", None, Some("min,max")), 0, i64::MAX, &r);
        assert_eq!(w[0].data["v_min"], json!(u64::MAX - 1));
        assert_eq!(w[0].data["v_max"], json!(u64::MAX));
    }

    /// Review finding 7: two 1e308 gave a null average; the average is
    /// kept finite, and only an overflowing sum is null.
    #[test]
    fn float_overflow_keeps_the_average() {
        let r = [(0, json!({"v": 1e308})), (S, json!({"v": 1e308}))];
        let w = run(spec("1m", None, Some("avg,sum,max")), 0, i64::MAX, &r);
        assert_eq!(w[0].data["v_avg"], json!(1e308));
        assert_eq!(w[0].data["v_sum"], Value::Null);
        assert_eq!(w[0].data["v_max"], json!(1e308));
    }

    /// Review finding 8: one null turned a numeric field's avg into last.
    #[test]
    fn nulls_are_ignored() {
        let r = [
            (0, json!({"v": 1})),
            (S, json!({"v": null})),
            (2 * S, json!({"v": 3})),
        ];
        let w = run(spec("1m", None, None), 0, i64::MAX, &r);
        assert_eq!(w[0].data["v"], json!(2.0));
        let w = run(spec("1m", Some("v:count,v:last"), None), 0, i64::MAX, &r);
        assert_eq!(w[0].data["v_count"], json!(2));
        assert_eq!(w[0].data["v_last"], json!(3));
        assert_eq!(w[0].count, 3);
    }
}
