//! Whole-range exports as CSV or NDJSON, shared by
//! `GET /api/stores/:store/export` and `tsstore export`.
//!
//! An export reads the range oldest first in batches of at most
//! [`BATCH`] objects (and [`CHUNK_BYTES`] of output): each batch is read
//! and formatted under one hold of the store's read lock, which is then
//! released before the chunk is handed on, so a writer never waits for a
//! whole export and the memory of an export is one chunk per buffered
//! slot, whatever the range.
//!
//! CSV (RFC 4180, CRLF line ends): `timestamp` (Unix ns), `time` (ISO 8601
//! UTC with nanoseconds, `2026-12-04T21:41:44.123456789Z`), then one
//! column per field: json stores take their columns from a first pass over
//! the range (at most [`MAX_COLUMNS`], nested objects flattened to dotted
//! names in first-seen order), schema stores from the schema; `fields=`
//! picks and orders them. Text stores have a `data` column, binary stores
//! a `data` column of standard base64. A cell is quoted when it holds a
//! comma, a quote, CR or LF (quotes doubled); strings are written bare,
//! numbers and booleans as in JSON, null and missing fields as an empty
//! cell, arrays (and objects picked whole by `fields=`) as JSON text.
//!
//! Invariant: the lock is never held while a chunk waits for the reader.

use std::collections::HashMap;
use std::ops::ControlFlow;

use serde_json::Value;

use crate::clock::rfc3339_nanos;
use crate::codec::data_json;
use crate::store::{self, DataType, Filter, ObjectHandle, Order, Query, Store};

/// Objects read per hold of the store's read lock at most.
pub const BATCH: usize = 4096;
/// A chunk ends once its output passes this many bytes.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Most CSV columns (fields) an export writes.
pub const MAX_COLUMNS: usize = 1000;
/// Longest column name `fields=` may name, in bytes.
pub const MAX_FIELD_NAME: usize = 256;

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    /// Parses `csv` or `ndjson`; the error is the client's message.
    pub fn parse(v: Option<&str>) -> Result<Format, String> {
        match v {
            Some("csv") => Ok(Format::Csv),
            Some("ndjson") => Ok(Format::Ndjson),
            None | Some("") => Err("format parameter required: csv or ndjson".into()),
            Some(o) => Err(format!("invalid format {o:?}: must be csv or ndjson")),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// Why an export cannot start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The request is wrong: the message is the client's (a 400).
    #[error("{0}")]
    Invalid(String),
    /// The store failed, was closed (deleted) or went away.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The store was reset (or deleted) while it was being exported.
    #[error("the store was reset or deleted during the export")]
    Gone,
}

/// What to export: the range `[start, end]`, oldest first.
pub struct Plan {
    pub format: Format,
    pub start: i64,
    pub end: i64,
    pub filter: Option<Filter>,
    /// The CSV field columns (json and schema stores); empty otherwise.
    pub columns: Vec<String>,
    data_type: DataType,
    index: HashMap<String, usize>,
}

/// Parses `fields=a,b.c`: names trimmed, none empty, no repeats, at most
/// [`MAX_COLUMNS`] of at most [`MAX_FIELD_NAME`] bytes.
pub fn parse_fields(v: Option<&str>) -> Result<Option<Vec<String>>, ExportError> {
    let Some(v) = v.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let mut out: Vec<String> = Vec::new();
    for f in v.split(',') {
        let f = f.trim();
        if f.is_empty() {
            return Err(ExportError::Invalid(
                "invalid fields: an empty field name".into(),
            ));
        }
        if f.len() > MAX_FIELD_NAME {
            return Err(ExportError::Invalid(format!(
                "invalid fields: a field name is longer than {MAX_FIELD_NAME} bytes"
            )));
        }
        if out.iter().any(|o| o == f) {
            return Err(ExportError::Invalid(format!(
                "invalid fields: {f:?} is named twice"
            )));
        }
        if out.len() == MAX_COLUMNS {
            return Err(ExportError::Invalid(format!(
                "invalid fields: at most {MAX_COLUMNS} fields"
            )));
        }
        out.push(f.to_string());
    }
    Ok(Some(out))
}

impl Plan {
    /// The plan of an export of `store`: for CSV of a json store without
    /// `fields`, the columns come from a first pass over the range
    /// (blocking: run it off the async workers).
    pub fn new(
        store: &Store,
        format: Format,
        start: i64,
        end: i64,
        filter: Option<Filter>,
        fields: Option<Vec<String>>,
    ) -> Result<Plan, ExportError> {
        let data_type = store.config().data_type;
        let columns = match (format, data_type) {
            (Format::Ndjson, _) | (_, DataType::Binary | DataType::Text) => {
                if fields.is_some() {
                    return Err(ExportError::Invalid(format!(
                        "fields applies to CSV exports of json and schema stores; this is {} of a {} store",
                        format.extension(),
                        data_type.as_str()
                    )));
                }
                Vec::new()
            }
            (Format::Csv, DataType::Schema) => {
                let names: Vec<String> = store
                    .schema()
                    .map(|s| s.fields.iter().map(|f| f.name.clone()).collect())
                    .unwrap_or_default();
                match fields {
                    Some(picked) => {
                        if let Some(f) = picked.iter().find(|f| !names.contains(f)) {
                            return Err(ExportError::Invalid(format!(
                                "invalid fields: {f:?} is not a field of the store's schema"
                            )));
                        }
                        picked
                    }
                    None => names,
                }
            }
            (Format::Csv, DataType::Json) => match fields {
                Some(picked) => picked,
                None => first_pass(store, start, end, filter.as_ref())?,
            },
        };
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        Ok(Plan {
            format,
            start,
            end,
            filter,
            columns,
            data_type,
            index,
        })
    }

    /// The CSV header line; empty for NDJSON.
    pub fn header(&self) -> String {
        let mut out = String::new();
        if self.format == Format::Csv {
            out.push_str("timestamp,time");
            if matches!(self.data_type, DataType::Binary | DataType::Text) {
                out.push_str(",data");
            }
            for c in &self.columns {
                out.push(',');
                push_cell(&mut out, c);
            }
            out.push_str("\r\n");
        }
        out
    }

    /// Appends the line of one object.
    pub fn write(&self, out: &mut String, store: &Store, h: &ObjectHandle, d: &[u8]) {
        use std::fmt::Write as _;
        match self.format {
            Format::Ndjson => {
                let _ = write!(out, r#"{{"timestamp":{},"data":"#, h.timestamp);
                out.push_str(&data_json(store, d, false));
                out.push_str("}\n");
            }
            Format::Csv => {
                let _ = write!(out, "{},{}", h.timestamp, rfc3339_nanos(h.timestamp));
                match self.data_type {
                    DataType::Binary => {
                        use base64::Engine as _;
                        out.push(',');
                        base64::engine::general_purpose::STANDARD.encode_string(d, out);
                    }
                    DataType::Text => {
                        out.push(',');
                        push_cell(out, &String::from_utf8_lossy(d));
                    }
                    DataType::Json | DataType::Schema => {
                        let mut cells: Vec<Option<String>> = vec![None; self.columns.len()];
                        let full = if self.data_type == DataType::Schema {
                            store.decode_value(d, false).ok()
                        } else {
                            None
                        };
                        if let Ok(v) = serde_json::from_slice::<Value>(full.as_deref().unwrap_or(d))
                        {
                            self.fill(&v, &mut String::new(), &mut cells);
                        }
                        for c in cells {
                            out.push(',');
                            if let Some(c) = c {
                                push_cell(out, &c);
                            }
                        }
                    }
                }
                out.push_str("\r\n");
            }
        }
    }

    /// Puts each value of `v` whose dotted path is a column in its cell.
    fn fill(&self, v: &Value, path: &mut String, cells: &mut [Option<String>]) {
        match v {
            Value::Object(m) if !path.is_empty() || !m.is_empty() => {
                if !path.is_empty() {
                    if let Some(&i) = self.index.get(path.as_str()) {
                        cells[i] = Some(v.to_string());
                    }
                }
                for (k, x) in m {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    self.fill(x, path, cells);
                    path.truncate(len);
                }
            }
            _ => {
                let key = if path.is_empty() {
                    "data"
                } else {
                    path.as_str()
                };
                if let Some(&i) = self.index.get(key) {
                    cells[i] = cell_text(v);
                }
            }
        }
    }

    /// The store's reset count, to hand to each [`Plan::batch`]: a batch
    /// after a reset is [`ExportError::Gone`].
    pub fn resets(store: &Store) -> Result<u64, ExportError> {
        Ok(store.progress()?.resets)
    }

    /// Reads and formats one batch of the range from `lo` under one hold
    /// of the store's read lock: its chunk, the objects in it, and where
    /// the next batch starts (`None`: the range is done). Blocking.
    pub fn batch(
        &self,
        store: &Store,
        lo: i64,
        resets: u64,
    ) -> Result<(String, u64, Option<i64>), ExportError> {
        if store.progress()?.resets != resets {
            return Err(ExportError::Gone);
        }
        let mut chunk = String::with_capacity(16 * 1024);
        let (mut n, mut written, mut last, mut full) = (0usize, 0u64, None, false);
        store.visit(
            &Query::range(lo, self.end, 0).order(Order::OldestFirst),
            |h, d| {
                n += 1;
                last = Some(h.timestamp);
                if self.filter.as_ref().is_none_or(|f| f.matches(d)) {
                    self.write(&mut chunk, store, h, d);
                    written += 1;
                }
                if n >= BATCH || chunk.len() >= CHUNK_BYTES {
                    full = true;
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        // The store's files are memory-mapped: without this, the process's
        // RSS would grow by every page the export has read.
        store.release_mapped();
        let next = match last {
            Some(t) if full && t < self.end => Some(t + 1),
            _ => None,
        };
        Ok((chunk, written, next))
    }

    /// Writes the whole range: `sink` gets the header, then each batch's
    /// chunk after the store's lock is released, and returns false to
    /// stop. Returns the objects written. Blocking (the CLI's loop; the
    /// server runs [`Plan::batch`] itself, one blocking call per batch).
    pub fn run(
        &self,
        store: &Store,
        mut sink: impl FnMut(String) -> bool,
    ) -> Result<u64, ExportError> {
        let resets = Plan::resets(store)?;
        let header = self.header();
        if !header.is_empty() && !sink(header) {
            return Ok(0);
        }
        let mut written = 0u64;
        let mut lo = Some(self.start);
        while let Some(l) = lo.filter(|l| *l <= self.end) {
            let (chunk, n, next) = self.batch(store, l, resets)?;
            written += n;
            if !chunk.is_empty() && !sink(chunk) {
                break;
            }
            lo = next;
        }
        Ok(written)
    }
}

/// The field columns of a json store's range: every dotted path of a
/// non-object value (a bare top-level value is `data`), first seen first.
fn first_pass(
    store: &Store,
    start: i64,
    end: i64,
    filter: Option<&Filter>,
) -> Result<Vec<String>, ExportError> {
    let mut cols: Vec<String> = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut too_many = false;
    let mut too_long = false;
    let mut lo = start;
    while lo <= end {
        let (mut n, mut last, mut full) = (0usize, None, false);
        store.visit(
            &Query::range(lo, end, 0).order(Order::OldestFirst),
            |h, d| {
                n += 1;
                last = Some(h.timestamp);
                if filter.is_none_or(|f| f.matches(d)) {
                    let mut path = String::new();
                    let mut de = serde_json::Deserializer::from_slice(d);
                    let _ = serde::de::DeserializeSeed::deserialize(
                        Keys {
                            path: &mut path,
                            f: &mut |p: &str| {
                                if p.len() > MAX_FIELD_NAME {
                                    too_long = true;
                                } else if !seen.contains_key(p) {
                                    seen.insert(p.to_string(), ());
                                    cols.push(p.to_string());
                                }
                            },
                        },
                        &mut de,
                    );
                    if cols.len() > MAX_COLUMNS || too_long {
                        too_many = true;
                        return ControlFlow::Break(());
                    }
                }
                if n >= BATCH {
                    full = true;
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        store.release_mapped();
        if too_long {
            return Err(ExportError::Invalid(format!(
                "the range has a field name longer than {MAX_FIELD_NAME} bytes: name the columns with fields=, or export ndjson"
            )));
        }
        if too_many {
            return Err(ExportError::Invalid(format!(
                "the range has more than {MAX_COLUMNS} distinct fields: name the columns with fields=, or export ndjson"
            )));
        }
        match last {
            Some(t) if full && t < end => lo = t + 1,
            _ => break,
        }
    }
    Ok(cols)
}

/// Reports the dotted path of every leaf of one JSON document to `f`, as
/// the CSV columns name them (a bare top-level value is `data`, an empty
/// object is a leaf), in document order, without building a tree: the
/// first pass only needs the keys.
struct Keys<'a> {
    path: &'a mut String,
    f: &'a mut dyn FnMut(&str),
}

impl Keys<'_> {
    fn leaf<E>(self) -> Result<(), E> {
        (self.f)(if self.path.is_empty() {
            "data"
        } else {
            self.path
        });
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Keys<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Appends a map key to the path.
struct AppendKey<'a>(&'a mut String);

impl<'de> serde::de::DeserializeSeed<'de> for AppendKey<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for AppendKey<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

impl<'de> serde::de::Visitor<'de> for Keys<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let len = self.path.len();
        let mut any = false;
        loop {
            if len > 0 {
                self.path.push('.');
            }
            if m.next_key_seed(AppendKey(self.path))?.is_none() {
                self.path.truncate(len);
                break;
            }
            any = true;
            m.next_value_seed(Keys {
                path: self.path,
                f: self.f,
            })?;
            self.path.truncate(len);
        }
        if any {
            Ok(())
        } else {
            self.leaf()
        }
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        self.leaf()
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.leaf()
    }
}

/// The cell of a leaf value: strings bare, null empty, others as JSON.
fn cell_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        o => Some(o.to_string()),
    }
}

/// Appends one CSV cell, quoted when it must be (RFC 4180).
pub fn push_cell(out: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        out.push('"');
        for c in s.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// The file name of an export: `<store>-<start>-<end>.<ext>`, the bounds
/// in Unix nanoseconds (an open start is 0).
pub fn file_name(store: &str, start: i64, end: i64, format: Format) -> String {
    format!("{store}-{}-{end}.{}", start.max(0), format.extension())
}

/// The range of an export, `[start, end]`, from its parameters as
/// data/range reads them: `since` (a duration back from now) or
/// `start_time`/`end_time` (Unix ns; omitted or 0: from the oldest / until
/// now); neither: the whole store. `since` with either time is refused.
pub fn resolve_range(
    start_time: Option<&str>,
    end_time: Option<&str>,
    since: Option<&str>,
) -> Result<(i64, i64), ExportError> {
    fn nonempty(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|v| !v.is_empty())
    }
    let (start_time, end_time, since) = (nonempty(start_time), nonempty(end_time), nonempty(since));
    let now = store::now_ns();
    if let Some(s) = since {
        if start_time.is_some() || end_time.is_some() {
            return Err(ExportError::Invalid(
                "since cannot be combined with start_time or end_time".into(),
            ));
        }
        let d = crate::duration::parse(s)
            .map_err(|e| ExportError::Invalid(format!("invalid since duration: {e}")))?;
        return Ok((store::since_start(d).min(now), now));
    }
    let ts = |name: &str, v: Option<&str>| match v {
        None => Ok(0),
        Some(v) => match v.parse::<i64>() {
            Ok(t) if t >= 0 => Ok(t),
            _ => Err(ExportError::Invalid(format!(
                "invalid {name}: must be Unix nanoseconds, 0 or more"
            ))),
        },
    };
    let s = ts("start_time", start_time)?;
    let e = ts("end_time", end_time)?;
    let (s, e) = (
        if s == 0 { i64::MIN } else { s },
        if e == 0 { now } else { e },
    );
    if s > e {
        return Err(ExportError::Invalid(
            "invalid time range: start_time is after end_time".into(),
        ));
    }
    Ok((s, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_only_when_they_must_be() {
        let mut s = String::new();
        for c in ["plain", "a,b", "say \"hi\"", "two\nlines", "cr\r"] {
            push_cell(&mut s, c);
            s.push('|');
        }
        assert_eq!(
            s,
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|\"cr\r\"|"
        );
    }

    #[test]
    fn fields_are_checked() {
        assert_eq!(
            parse_fields(Some(" a , b.c ")).unwrap(),
            Some(vec!["a".into(), "b.c".into()])
        );
        assert!(parse_fields(Some("a,,b")).is_err());
        assert!(parse_fields(Some("a,a")).is_err());
        assert_eq!(parse_fields(Some("")).unwrap(), None);
    }
}
