//! Schema stores: the schema type, its append-only evolution, the
//! conversion between full JSON objects (`{"temperature": 72.5}`) and the
//! compact form kept on disk (`{"1": 72.5}`), and the atomic save and load
//! of `schema.json`.
//!
//! Invariants:
//! - A [`Schema`] built by [`Schema::new`], [`Schema::evolve`] or [`load`]
//!   has at least one field, field indices are `>= 1` and unique, names are
//!   non-empty, unique and not made of digits only (so a name can never be
//!   mistaken for a compact key), and `fields` is sorted by index.
//! - Evolution is append-only: every field of the old schema is kept with
//!   the same index, name and type, so the current schema can decode every
//!   record ever written. Adding fields bumps `version` by one; re-sending
//!   the same fields keeps it.
//! - Objects are flat: values are scalars (numbers, strings, booleans or
//!   `null`); nested objects and arrays are refused with a hint to use
//!   dot-notation names such as `"cpu.pct"`.
//! - Compact output is canonical: keys are decimal index strings without
//!   sign or leading zeros, written in ascending index order, with no
//!   whitespace. Numbers keep the value they were given: integers are
//!   written verbatim (all of `u64` and `i64`, no rounding); numbers with a
//!   fraction or exponent are read as `f64` and written by serde_json as the
//!   shortest text that reads back to the same `f64`, so `72.5` stays `72.5`
//!   and `45` stays `45`, while `1e2` becomes `100.0` and `0.000001` becomes
//!   `1e-6`.
//! - Nothing here panics on any input: every malformed object or file is a
//!   [`SchemaError`].

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// Name of the schema file inside a store directory.
pub const SCHEMA_FILE: &str = "schema.json";

/// Name of the scratch file [`save`] writes before renaming it over
/// [`SCHEMA_FILE`].
#[cfg(test)]
const SCHEMA_TMP_FILE: &str = "schema.json.tmp";

/// Longest rendering of an offending value kept in an error message.
const MAX_VALUE_RENDER: usize = 40;

/// The type of a schema field; values are checked against it on insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Float32,
    Float64,
    Bool,
    String,
}

impl FieldType {
    /// The name used in JSON (`"int8"`, `"float32"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Int8 => "int8",
            FieldType::Int16 => "int16",
            FieldType::Int32 => "int32",
            FieldType::Int64 => "int64",
            FieldType::Uint8 => "uint8",
            FieldType::Uint16 => "uint16",
            FieldType::Uint32 => "uint32",
            FieldType::Uint64 => "uint64",
            FieldType::Float32 => "float32",
            FieldType::Float64 => "float64",
            FieldType::Bool => "bool",
            FieldType::String => "string",
        }
    }

    /// Inclusive bounds of an integer type; `None` for the other types.
    fn int_range(self) -> Option<(i128, i128)> {
        let r = match self {
            FieldType::Int8 => (i8::MIN.into(), i8::MAX.into()),
            FieldType::Int16 => (i16::MIN.into(), i16::MAX.into()),
            FieldType::Int32 => (i32::MIN.into(), i32::MAX.into()),
            FieldType::Int64 => (i64::MIN.into(), i64::MAX.into()),
            FieldType::Uint8 => (0, u8::MAX.into()),
            FieldType::Uint16 => (0, u16::MAX.into()),
            FieldType::Uint32 => (0, u32::MAX.into()),
            FieldType::Uint64 => (0, u64::MAX.into()),
            _ => return None,
        };
        Some(r)
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field: its compact index (from 1), its full name and its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub index: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
}

/// A versioned schema, serialized as
/// `{"version":1,"fields":[{"index":1,"name":"temperature","type":"float32"}]}`.
///
/// `version` defaults to 0 when absent so that a `PUT` body, which carries
/// only `fields`, deserializes too; such a value is only raw input for
/// [`Schema::new`] or [`Schema::evolve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    #[serde(default)]
    pub version: u32,
    pub fields: Vec<Field>,
}

/// How an existing field was changed by a refused evolution.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldChange {
    /// Same index, another name.
    Renamed { to: String },
    /// Same index and name, another type.
    Retyped { from: FieldType, to: FieldType },
    /// Same name, another index.
    Moved { to: u32 },
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldChange::Renamed { to } => write!(f, "renamed to {to:?}"),
            FieldChange::Retyped { from, to } => write!(f, "retyped from {from} to {to}"),
            FieldChange::Moved { to } => write!(f, "moved to index {to}"),
        }
    }
}

/// Everything schema handling can fail with. Every variant except `Io` is a
/// client mistake or a malformed file, never a fault of this code.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum SchemaError {
    /// A schema without fields.
    #[error("no fields defined")]
    NoFields,
    /// A field whose name is empty.
    #[error("field name is required (field {index})")]
    EmptyFieldName { index: u32 },
    /// A name made of digits only would read like a compact key.
    #[error(
        "field {index} has the name {name:?}: names made only of digits are reserved for compact keys"
    )]
    NumericFieldName { index: u32, name: String },
    /// Two fields with the same name.
    #[error("duplicate field name: {name}")]
    DuplicateFieldName { name: String },
    /// Two fields with the same index.
    #[error("duplicate field index: {index}")]
    DuplicateIndex { index: u32 },
    /// Indices start at 1.
    #[error("field index must be positive: {index}")]
    InvalidIndex { index: u32 },
    /// An evolution that changes an existing field.
    #[error(
        "cannot modify existing field {index} ({name:?}: {change}); schema evolution is append-only"
    )]
    FieldChanged {
        index: u32,
        name: String,
        change: FieldChange,
    },
    /// An evolution that leaves out an existing field.
    #[error(
        "cannot remove existing field {index} ({name:?}); schema evolution is append-only: list every existing field and add new ones"
    )]
    FieldRemoved { index: u32, name: String },
    /// The version counter is exhausted.
    #[error("schema version cannot be increased past {}", u32::MAX)]
    VersionOverflow,
    /// A value that is an object or an array.
    #[error(
        "field {field:?}: nested objects and arrays are not supported; use dot-notation field names like \"cpu.pct\""
    )]
    NestedObject { field: String },
    /// A full-form name the schema does not have.
    #[error("field not found in schema: {field}")]
    UnknownField { field: String },
    /// A compact index the schema does not have.
    #[error("field not found in schema: index {index}")]
    UnknownIndex { index: u32 },
    /// A compact key that is not a canonical decimal index.
    #[error("invalid compact JSON key (must be numeric): {key}")]
    InvalidCompactKey { key: String },
    /// A value of the wrong JSON type (or a non-integer for an integer type).
    #[error("field {field:?} expects {expected}, got {value}")]
    TypeMismatch {
        field: String,
        expected: FieldType,
        value: String,
    },
    /// A number outside the range of the field's type.
    #[error("field {field:?}: {value} is out of range for {ty}")]
    OutOfRange {
        field: String,
        ty: FieldType,
        value: String,
    },
    /// The input is valid JSON but not an object.
    #[error("expected a JSON object")]
    NotAnObject,
    /// The input is not valid JSON.
    #[error("invalid JSON: {reason}")]
    InvalidJson { reason: String },
    /// The store has no schema yet.
    #[error("schema is required for schema data type")]
    NoSchema,
    /// The schema file exists but does not hold a valid schema.
    #[error("schema file {} is malformed: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// Reading or writing the schema file failed.
    #[error("schema file {}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
}

impl Schema {
    /// A first schema (version 1) from `fields`, validated and sorted by index.
    pub fn new(mut fields: Vec<Field>) -> Result<Schema, SchemaError> {
        validate_fields(&fields)?;
        fields.sort_by_key(|f| f.index);
        Ok(Schema { version: 1, fields })
    }

    /// The schema that follows this one when a client sends `fields`.
    ///
    /// `fields` must repeat every existing field unchanged (same index, name
    /// and type) and may add new ones. The version goes up by one when
    /// fields are added and stays when `fields` is the same set as now.
    pub fn evolve(&self, mut fields: Vec<Field>) -> Result<Schema, SchemaError> {
        validate_fields(&fields)?;
        for old in &self.fields {
            match fields.iter().find(|f| f.index == old.index) {
                Some(new) if new.name != old.name => {
                    return Err(changed(
                        old,
                        FieldChange::Renamed {
                            to: new.name.clone(),
                        },
                    ));
                }
                Some(new) if new.ty != old.ty => {
                    let change = FieldChange::Retyped {
                        from: old.ty,
                        to: new.ty,
                    };
                    return Err(changed(old, change));
                }
                Some(_) => {}
                None => {
                    if let Some(moved) = fields.iter().find(|f| f.name == old.name) {
                        return Err(changed(old, FieldChange::Moved { to: moved.index }));
                    }
                    return Err(SchemaError::FieldRemoved {
                        index: old.index,
                        name: old.name.clone(),
                    });
                }
            }
        }
        let added = fields
            .iter()
            .any(|f| self.field_by_index(f.index).is_none());
        let version = if added {
            self.version
                .checked_add(1)
                .ok_or(SchemaError::VersionOverflow)?
        } else {
            self.version
        };
        fields.sort_by_key(|f| f.index);
        Ok(Schema { version, fields })
    }

    /// The field called `name`.
    pub fn field_by_name(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The field with compact index `index`.
    pub fn field_by_index(&self, index: u32) -> Option<&Field> {
        self.fields.iter().find(|f| f.index == index)
    }

    /// Validates a full-form object (`{"temperature": 72.5}`) and returns
    /// its compact form (`{"1":72.5}`), keys in ascending index order.
    ///
    /// Every key must be a field of the schema; fields may be left out.
    /// Integer types take integral numbers within range; an integral float
    /// such as `45.0` is stored as `45` when it is at most 2^53 in magnitude
    /// (beyond that parsing may have rounded it, so it is refused). Float
    /// types take any number that is finite in that width, kept as given
    /// (not rounded to `f32`); `bool` takes `true`/`false`; `string` takes
    /// strings. `null` is accepted for every type and kept.
    pub fn compact(&self, full: &[u8]) -> Result<Vec<u8>, SchemaError> {
        let object = parse_object(full)?;
        let mut out = Vec::with_capacity(object.len());
        for (name, value) in object {
            if value.is_object() || value.is_array() {
                return Err(SchemaError::NestedObject { field: name });
            }
            let field = self
                .field_by_name(&name)
                .ok_or(SchemaError::UnknownField { field: name })?;
            out.push((field.index, check_value(field, value)?));
        }
        out.sort_by_key(|(index, _)| *index);
        write_object(out.iter().map(|(i, v)| (i.to_string(), v)))
    }

    /// Validates an object that is already compact (`{"1": 72.5}`) as
    /// [`Schema::compact`] does and returns its canonical bytes.
    pub fn validate_compact(&self, compact: &[u8]) -> Result<Vec<u8>, SchemaError> {
        let object = parse_object(compact)?;
        let mut out = Vec::with_capacity(object.len());
        for (key, value) in object {
            let index = parse_index(&key).ok_or(SchemaError::InvalidCompactKey { key })?;
            let field = self
                .field_by_index(index)
                .ok_or(SchemaError::UnknownIndex { index })?;
            out.push((index, check_value(field, value)?));
        }
        out.sort_by_key(|(index, _)| *index);
        write_object(out.iter().map(|(i, v)| (i.to_string(), v)))
    }

    /// Turns a compact object back into full form, e.g. `{"1":72.5,"3":"a"}`
    /// into `{"temperature":72.5,"sensor_id":"a"}`.
    ///
    /// Values are passed through unchecked (they were checked on the way
    /// in). An index the schema does not know is kept under its numeric key,
    /// so data written under a newer schema is never dropped; field names
    /// are never all digits, so such a key cannot collide with a name.
    /// Entries are inserted in index order; the order the map renders in is
    /// serde_json's (use [`Schema::expand_bytes`] for index order).
    pub fn expand(&self, compact: &[u8]) -> Result<Value, SchemaError> {
        let entries = self.expand_entries(compact)?;
        let mut map = Map::new();
        for (_, key, value) in entries {
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    /// [`Schema::expand`] rendered as JSON bytes, keys in index order.
    pub fn expand_bytes(&self, compact: &[u8]) -> Result<Vec<u8>, SchemaError> {
        let entries = self.expand_entries(compact)?;
        write_object(entries.iter().map(|(_, k, v)| (k.as_str(), v)))
    }

    /// The entries of a compact object as (index, full key, value), sorted
    /// by index.
    fn expand_entries(&self, compact: &[u8]) -> Result<Vec<(u32, String, Value)>, SchemaError> {
        let object = parse_object(compact)?;
        let mut entries = Vec::with_capacity(object.len());
        for (key, value) in object {
            let Some(index) = parse_index(&key) else {
                return Err(SchemaError::InvalidCompactKey { key });
            };
            let name = match self.field_by_index(index) {
                Some(field) => field.name.clone(),
                None => key,
            };
            entries.push((index, name, value));
        }
        entries.sort_by_key(|(index, _, _)| *index);
        Ok(entries)
    }
}

/// Checks a field list on its own: non-empty, indices from 1 and unique,
/// names non-empty, unique and not all digits.
fn validate_fields(fields: &[Field]) -> Result<(), SchemaError> {
    if fields.is_empty() {
        return Err(SchemaError::NoFields);
    }
    let mut indices = HashSet::with_capacity(fields.len());
    let mut names = HashSet::with_capacity(fields.len());
    for f in fields {
        if f.index == 0 {
            return Err(SchemaError::InvalidIndex { index: f.index });
        }
        if f.name.is_empty() {
            return Err(SchemaError::EmptyFieldName { index: f.index });
        }
        if f.name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SchemaError::NumericFieldName {
                index: f.index,
                name: f.name.clone(),
            });
        }
        if !indices.insert(f.index) {
            return Err(SchemaError::DuplicateIndex { index: f.index });
        }
        if !names.insert(f.name.as_str()) {
            return Err(SchemaError::DuplicateFieldName {
                name: f.name.clone(),
            });
        }
    }
    Ok(())
}

fn changed(old: &Field, change: FieldChange) -> SchemaError {
    SchemaError::FieldChanged {
        index: old.index,
        name: old.name.clone(),
        change,
    }
}

/// Parses `bytes` as one JSON object.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, SchemaError> {
    // serde_json caps nesting depth, so hostile input cannot overflow the stack.
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(SchemaError::NotAnObject),
        Err(e) => Err(SchemaError::InvalidJson {
            reason: e.to_string(),
        }),
    }
}

/// A compact key as an index: canonical decimal, no sign, no leading zero,
/// at least 1. Anything else is `None`, so no two keys name the same index.
fn parse_index(key: &str) -> Option<u32> {
    if key.is_empty() || key.starts_with('0') || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

/// Checks `value` against `field` and returns the value to store.
fn check_value(field: &Field, value: Value) -> Result<Value, SchemaError> {
    let mismatch = |value: &Value| SchemaError::TypeMismatch {
        field: field.name.clone(),
        expected: field.ty,
        value: render_short(value),
    };
    let out_of_range = |value: &Value| SchemaError::OutOfRange {
        field: field.name.clone(),
        ty: field.ty,
        value: render_short(value),
    };
    match (&value, field.ty) {
        (Value::Object(_) | Value::Array(_), _) => Err(SchemaError::NestedObject {
            field: field.name.clone(),
        }),
        // The original accepts null for any field; a reader sees it as null.
        (Value::Null, _) => Ok(value),
        (Value::Bool(_), FieldType::Bool) => Ok(value),
        (Value::String(_), FieldType::String) => Ok(value),
        (Value::Number(n), FieldType::Float32 | FieldType::Float64) => {
            let finite = match n.as_f64() {
                Some(f) if field.ty == FieldType::Float32 => (f as f32).is_finite(),
                Some(f) => f.is_finite(),
                None => false,
            };
            if finite {
                // Kept as given: 45 stays 45, 72.5 stays 72.5.
                Ok(value)
            } else {
                Err(out_of_range(&value))
            }
        }
        (Value::Number(n), ty) => {
            let Some((min, max)) = ty.int_range() else {
                return Err(mismatch(&value));
            };
            let int = match integral(n) {
                Integral::Exact(int) => int,
                Integral::Inexact(int) if int < min || int > max => {
                    return Err(out_of_range(&value));
                }
                Integral::Inexact(_) | Integral::Fraction => return Err(mismatch(&value)),
            };
            if int < min || int > max {
                return Err(out_of_range(&value));
            }
            // Rebuilt so that an integral float (45.0) is stored as 45.
            u64::try_from(int)
                .map(Number::from)
                .or_else(|_| i64::try_from(int).map(Number::from))
                .map(Value::Number)
                .map_err(|_| out_of_range(&value))
        }
        _ => Err(mismatch(&value)),
    }
}

/// Largest magnitude up to which every integer is an `f64`: an integral
/// float within it stands for exactly the integer the client wrote.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0; // 2^53

/// What a JSON number means for an integer field.
enum Integral {
    /// An exact integer.
    Exact(i128),
    /// A float that may have been rounded by parsing; refused as an integer.
    /// Carries its saturated value so that a hopeless one is reported as out
    /// of range rather than as of the wrong type.
    Inexact(i128),
    /// Has a fraction.
    Fraction,
}

/// The integer a JSON number stands for. Integer literals within `i64` or
/// `u64` are exact; anything else was parsed as `f64`, which is exact only
/// when integral and at most 2^53 in magnitude (`45.0`, `1e3`).
fn integral(n: &Number) -> Integral {
    if let Some(u) = n.as_u64() {
        return Integral::Exact(u.into());
    }
    if let Some(i) = n.as_i64() {
        return Integral::Exact(i.into());
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 => {
            // `as` saturates, so a huge float becomes i128::MAX or MIN.
            if f.abs() <= MAX_EXACT_FLOAT_INT {
                Integral::Exact(f as i128)
            } else {
                Integral::Inexact(f as i128)
            }
        }
        Some(f) if f.is_infinite() => {
            Integral::Inexact(if f > 0.0 { i128::MAX } else { i128::MIN })
        }
        _ => Integral::Fraction,
    }
}

/// A value rendered for an error message, cut to a readable length.
fn render_short(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() <= MAX_VALUE_RENDER {
        return s;
    }
    let mut cut: String = s.chars().take(MAX_VALUE_RENDER).collect();
    cut.push('…');
    cut
}

/// Writes `{"k":v,...}` in the order given, with no whitespace. Written by
/// hand because serde_json's map orders keys by its own rules.
fn write_object<'a, K: AsRef<str>>(
    entries: impl Iterator<Item = (K, &'a Value)>,
) -> Result<Vec<u8>, SchemaError> {
    let json_err = |e: serde_json::Error| SchemaError::InvalidJson {
        reason: e.to_string(),
    };
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key.as_ref()).map_err(json_err)?;
        out.push(b':');
        serde_json::to_writer(&mut out, value).map_err(json_err)?;
    }
    out.push(b'}');
    Ok(out)
}

/// Loads the schema saved in store directory `dir`; `None` when the store
/// has none yet. A file that does not parse or does not hold a valid schema
/// is a [`SchemaError::Corrupt`] naming the file.
pub fn load(dir: &Path) -> Result<Option<Schema>, SchemaError> {
    let path = dir.join(SCHEMA_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, e)),
    };
    let corrupt = |reason: String| SchemaError::Corrupt {
        path: path.clone(),
        reason,
    };
    let mut schema: Schema = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if schema.version == 0 {
        return Err(corrupt("version must be at least 1".to_string()));
    }
    validate_fields(&schema.fields).map_err(|e| corrupt(e.to_string()))?;
    schema.fields.sort_by_key(|f| f.index);
    Ok(Some(schema))
}

/// Saves `schema` as `dir/schema.json`, atomically and durably.
///
/// The schema is written to `schema.json.tmp`, synced, renamed over
/// `schema.json`, and then the directory is synced so the rename itself is
/// on disk before this returns. A power cut at any point leaves either the
/// old file or the new one in place, never a torn mix: the rename replaces
/// the name in one step and the new content was durable before it. A
/// leftover `schema.json.tmp` is ignored by [`load`] and overwritten by the
/// next save.
pub fn save(dir: &Path, schema: &Schema) -> Result<(), SchemaError> {
    save_with(&super::fs::RealFs, dir, schema)
}

/// [`save`] through the file-system seam `fs`.
pub fn save_with(fs: &dyn super::fs::Fs, dir: &Path, schema: &Schema) -> Result<(), SchemaError> {
    let path = dir.join(SCHEMA_FILE);
    let mut bytes = serde_json::to_vec_pretty(schema).map_err(|e| SchemaError::Io {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    super::fs::replace(fs, dir, SCHEMA_FILE, &bytes, 0o666).map_err(|e| io_err(&path, e))
}

fn io_err(path: &Path, e: io::Error) -> SchemaError {
    SchemaError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(index: u32, name: &str, ty: FieldType) -> Field {
        Field {
            index,
            name: name.to_string(),
            ty,
        }
    }

    /// The schema of the spec's example.
    fn sensors() -> Schema {
        Schema::new(vec![
            field(1, "temperature", FieldType::Float32),
            field(2, "humidity", FieldType::Float32),
            field(3, "sensor_id", FieldType::String),
        ])
        .expect("valid schema")
    }

    fn one(ty: FieldType) -> Schema {
        Schema::new(vec![field(1, "v", ty)]).expect("valid schema")
    }

    fn compact_str(schema: &Schema, input: &str) -> Result<String, SchemaError> {
        schema
            .compact(input.as_bytes())
            .map(|b| String::from_utf8(b).expect("utf-8"))
    }

    fn expand_str(schema: &Schema, input: &str) -> Result<String, SchemaError> {
        schema
            .expand_bytes(input.as_bytes())
            .map(|b| String::from_utf8(b).expect("utf-8"))
    }

    // ------------------------------------------------------------ types

    #[test]
    fn field_type_names_match_serde() {
        let all = [
            FieldType::Int8,
            FieldType::Int16,
            FieldType::Int32,
            FieldType::Int64,
            FieldType::Uint8,
            FieldType::Uint16,
            FieldType::Uint32,
            FieldType::Uint64,
            FieldType::Float32,
            FieldType::Float64,
            FieldType::Bool,
            FieldType::String,
        ];
        for ty in all {
            let json = serde_json::to_string(&ty).expect("serialize");
            assert_eq!(json, format!("\"{}\"", ty.as_str()));
            assert_eq!(ty.to_string(), ty.as_str());
            let back: FieldType = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, ty);
        }
        assert!(serde_json::from_str::<FieldType>("\"float\"").is_err());
    }

    #[test]
    fn schema_json_shape() {
        let s = Schema::new(vec![field(1, "temperature", FieldType::Float32)]).expect("valid");
        assert_eq!(
            serde_json::to_string(&s).expect("serialize"),
            r#"{"version":1,"fields":[{"index":1,"name":"temperature","type":"float32"}]}"#
        );
    }

    #[test]
    fn put_body_without_version_deserializes() {
        let body = r#"{"fields":[{"index":1,"name":"temperature","type":"float32"}]}"#;
        let raw: Schema = serde_json::from_str(body).expect("deserialize");
        assert_eq!(raw.version, 0);
        let s = Schema::new(raw.fields).expect("valid");
        assert_eq!(s.version, 1);
    }

    // -------------------------------------------------------- validation

    #[test]
    fn new_sorts_by_index_and_allows_dots() {
        let s = Schema::new(vec![
            field(3, "memory.total", FieldType::Uint64),
            field(1, "cpu.pct", FieldType::Float32),
        ])
        .expect("valid");
        assert_eq!(s.version, 1);
        assert_eq!(s.fields[0].index, 1);
        assert_eq!(s.fields[1].index, 3);
        assert_eq!(s.field_by_name("cpu.pct").map(|f| f.index), Some(1));
        assert_eq!(
            s.field_by_index(3).map(|f| f.name.as_str()),
            Some("memory.total")
        );
        assert!(s.field_by_index(2).is_none());
        assert!(s.field_by_name("cpu").is_none());
    }

    #[test]
    fn new_rejects_invalid_fields() {
        let cases = [
            (vec![], SchemaError::NoFields),
            (
                vec![field(1, "", FieldType::Bool)],
                SchemaError::EmptyFieldName { index: 1 },
            ),
            (
                vec![field(0, "a", FieldType::Bool)],
                SchemaError::InvalidIndex { index: 0 },
            ),
            (
                vec![
                    field(1, "a", FieldType::Bool),
                    field(1, "b", FieldType::Bool),
                ],
                SchemaError::DuplicateIndex { index: 1 },
            ),
            (
                vec![
                    field(1, "a", FieldType::Bool),
                    field(2, "a", FieldType::Int8),
                ],
                SchemaError::DuplicateFieldName {
                    name: "a".to_string(),
                },
            ),
            (
                vec![field(1, "42", FieldType::Bool)],
                SchemaError::NumericFieldName {
                    index: 1,
                    name: "42".to_string(),
                },
            ),
        ];
        for (fields, want) in cases {
            assert_eq!(Schema::new(fields), Err(want));
        }
        // Digits inside a name are fine.
        assert!(Schema::new(vec![field(1, "sensor1", FieldType::Bool)]).is_ok());
    }

    #[test]
    fn error_messages_are_helpful() {
        let e = SchemaError::InvalidIndex { index: 0 }.to_string();
        assert_eq!(e, "field index must be positive: 0");
        let e = SchemaError::NoSchema.to_string();
        assert_eq!(e, "schema is required for schema data type");
        let e = SchemaError::FieldRemoved {
            index: 2,
            name: "humidity".to_string(),
        }
        .to_string();
        assert!(
            e.contains("append-only") && e.contains("\"humidity\""),
            "{e}"
        );
    }

    // --------------------------------------------------------- evolution

    #[test]
    fn evolve_adds_fields_and_bumps_version() {
        let v1 = sensors();
        let mut fields = v1.fields.clone();
        fields.push(field(4, "pressure", FieldType::Float64));
        let v2 = v1.evolve(fields).expect("append");
        assert_eq!(v2.version, 2);
        assert_eq!(v2.fields.len(), 4);
        assert_eq!(v2.field_by_index(4).map(|f| f.ty), Some(FieldType::Float64));
        // Gaps are allowed: the new index only has to be unused.
        let mut fields = v2.fields.clone();
        fields.insert(0, field(10, "battery", FieldType::Uint8));
        let v3 = v2.evolve(fields).expect("append with gap");
        assert_eq!(v3.version, 3);
        assert_eq!(v3.fields.last().map(|f| f.index), Some(10));
    }

    #[test]
    fn evolve_identical_keeps_version() {
        let v1 = sensors();
        let mut same = v1.fields.clone();
        same.reverse();
        let again = v1.evolve(same).expect("identical");
        assert_eq!(again, v1);
    }

    #[test]
    fn evolve_rejects_type_change() {
        let v1 = sensors();
        let mut fields = v1.fields.clone();
        fields[1].ty = FieldType::Int32;
        let err = v1.evolve(fields).expect_err("retype");
        assert_eq!(
            err,
            SchemaError::FieldChanged {
                index: 2,
                name: "humidity".to_string(),
                change: FieldChange::Retyped {
                    from: FieldType::Float32,
                    to: FieldType::Int32
                },
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("append-only") && msg.contains("field 2"),
            "{msg}"
        );
        assert!(msg.contains("float32 to int32"), "{msg}");
    }

    #[test]
    fn evolve_rejects_rename() {
        let v1 = sensors();
        let mut fields = v1.fields.clone();
        fields[0].name = "temp".to_string();
        let err = v1.evolve(fields).expect_err("rename");
        assert_eq!(
            err,
            SchemaError::FieldChanged {
                index: 1,
                name: "temperature".to_string(),
                change: FieldChange::Renamed {
                    to: "temp".to_string()
                },
            }
        );
        assert!(err
            .to_string()
            .starts_with("cannot modify existing field 1"));
    }

    #[test]
    fn evolve_rejects_move() {
        let v1 = sensors();
        let mut fields = v1.fields.clone();
        fields[2].index = 7;
        assert_eq!(
            v1.evolve(fields),
            Err(SchemaError::FieldChanged {
                index: 3,
                name: "sensor_id".to_string(),
                change: FieldChange::Moved { to: 7 },
            })
        );
    }

    #[test]
    fn evolve_rejects_removal() {
        let v1 = sensors();
        // A PUT must repeat the existing fields; sending only the new one
        // is a removal of the others.
        let err = v1
            .evolve(vec![field(4, "pressure", FieldType::Float32)])
            .expect_err("removal");
        assert_eq!(
            err,
            SchemaError::FieldRemoved {
                index: 1,
                name: "temperature".to_string()
            }
        );
        let mut fields = v1.fields.clone();
        fields.remove(1);
        assert_eq!(
            v1.evolve(fields),
            Err(SchemaError::FieldRemoved {
                index: 2,
                name: "humidity".to_string()
            })
        );
    }

    #[test]
    fn evolve_validates_the_new_list() {
        let v1 = sensors();
        let mut fields = v1.fields.clone();
        fields.push(field(4, "humidity", FieldType::Float32));
        assert_eq!(
            v1.evolve(fields),
            Err(SchemaError::DuplicateFieldName {
                name: "humidity".to_string()
            })
        );
        assert_eq!(v1.evolve(vec![]), Err(SchemaError::NoFields));
    }

    #[test]
    fn evolve_version_overflow() {
        let mut s = one(FieldType::Bool);
        s.version = u32::MAX;
        let mut fields = s.fields.clone();
        fields.push(field(2, "w", FieldType::Bool));
        assert_eq!(s.evolve(fields), Err(SchemaError::VersionOverflow));
        // Re-sending the same fields does not need a new version.
        assert!(s.evolve(s.fields.clone()).is_ok());
    }

    // ----------------------------------------------------------- compact

    #[test]
    fn compact_spec_example() {
        let s = sensors();
        let got = compact_str(
            &s,
            r#"{"temperature": 72.5, "humidity": 45, "sensor_id": "room-1"}"#,
        );
        assert_eq!(got.as_deref(), Ok(r#"{"1":72.5,"2":45,"3":"room-1"}"#));
    }

    #[test]
    fn compact_keys_in_index_order() {
        let s = Schema::new(vec![
            field(10, "a", FieldType::Int8),
            field(2, "b", FieldType::Int8),
            field(1, "c", FieldType::Int8),
        ])
        .expect("valid");
        let got = compact_str(&s, r#"{"a":10,"b":2,"c":1}"#);
        assert_eq!(got.as_deref(), Ok(r#"{"1":1,"2":2,"10":10}"#));
    }

    #[test]
    fn compact_partial_and_empty_objects() {
        let s = sensors();
        assert_eq!(
            compact_str(&s, r#"{"sensor_id":"x"}"#).as_deref(),
            Ok(r#"{"3":"x"}"#)
        );
        assert_eq!(compact_str(&s, " {} ").as_deref(), Ok("{}"));
    }

    #[test]
    fn compact_preserves_number_rendering() {
        let s = one(FieldType::Float64);
        for n in ["72.5", "45", "-3", "0.1", "123456789.123", "-0.0", "100.0"] {
            let got = compact_str(&s, &format!(r#"{{"v":{n}}}"#)).expect("valid");
            assert_eq!(got, format!(r#"{{"1":{n}}}"#));
        }
        // Exponent forms keep their value, in serde_json's notation.
        for (n, want) in [
            ("1.25e-5", "0.0000125"),
            ("1E2", "100.0"),
            ("1e21", "1e+21"),
        ] {
            let got = compact_str(&s, &format!(r#"{{"v":{n}}}"#)).expect("valid");
            assert_eq!(got, format!(r#"{{"1":{want}}}"#));
        }
        let s = one(FieldType::Uint64);
        let got = compact_str(&s, r#"{"v":18446744073709551615}"#);
        assert_eq!(got.as_deref(), Ok(r#"{"1":18446744073709551615}"#));
    }

    #[test]
    fn compact_string_escapes_round_trip() {
        let s = sensors();
        let input = r#"{"sensor_id":"a\"b\\c\u00e9\n😀"}"#;
        let compact = s.compact(input.as_bytes()).expect("valid");
        let full = s.expand(&compact).expect("expand");
        assert_eq!(full["sensor_id"], "a\"b\\cé\n😀");
    }

    #[test]
    fn int_ranges() {
        let ok = [
            (FieldType::Int8, "-128"),
            (FieldType::Int8, "127"),
            (FieldType::Int16, "-32768"),
            (FieldType::Int16, "32767"),
            (FieldType::Int32, "-2147483648"),
            (FieldType::Int32, "2147483647"),
            (FieldType::Int64, "-9223372036854775808"),
            (FieldType::Int64, "9223372036854775807"),
            (FieldType::Uint8, "0"),
            (FieldType::Uint8, "255"),
            (FieldType::Uint16, "65535"),
            (FieldType::Uint32, "4294967295"),
            (FieldType::Uint64, "18446744073709551615"),
        ];
        for (ty, n) in ok {
            let got = compact_str(&one(ty), &format!(r#"{{"v":{n}}}"#));
            assert_eq!(got, Ok(format!(r#"{{"1":{n}}}"#)), "{ty} {n}");
        }
        let out = [
            (FieldType::Int8, "-129"),
            (FieldType::Int8, "128"),
            (FieldType::Int16, "32768"),
            (FieldType::Int32, "-2147483649"),
            (FieldType::Int64, "9223372036854775808"),
            (FieldType::Int64, "1e300"),
            (FieldType::Int8, "-1e300"),
            (FieldType::Uint8, "-1"),
            (FieldType::Uint8, "256"),
            (FieldType::Uint16, "65536"),
            (FieldType::Uint32, "4294967296"),
            (FieldType::Uint64, "-1"),
            (FieldType::Uint64, "18446744073709551616"),
        ];
        for (ty, n) in out {
            let got = compact_str(&one(ty), &format!(r#"{{"v":{n}}}"#));
            assert!(
                matches!(&got, Err(SchemaError::OutOfRange { field, ty: t, .. }) if field == "v" && *t == ty),
                "{ty} {n}: {got:?}"
            );
        }
    }

    #[test]
    fn int_refuses_floats_that_may_have_been_rounded() {
        // Below i64::MIN the literal is parsed as f64 and rounds to exactly
        // i64::MIN; it must not be stored as that.
        for n in ["-9223372036854775809", "1e18", "9007199254740993.0"] {
            let got = compact_str(&one(FieldType::Int64), &format!(r#"{{"v":{n}}}"#));
            assert!(
                matches!(got, Err(SchemaError::TypeMismatch { .. })),
                "{n}: {got:?}"
            );
        }
        assert_eq!(
            compact_str(&one(FieldType::Int64), r#"{"v":9007199254740992.0}"#).as_deref(),
            Ok(r#"{"1":9007199254740992}"#)
        );
        assert_eq!(
            compact_str(&one(FieldType::Int64), r#"{"v":-9007199254740992.0}"#).as_deref(),
            Ok(r#"{"1":-9007199254740992}"#)
        );
    }

    #[test]
    fn int_rejects_fractions_and_normalizes_integral_floats() {
        let got = compact_str(&one(FieldType::Int32), r#"{"v":1.5}"#);
        assert_eq!(
            got,
            Err(SchemaError::TypeMismatch {
                field: "v".to_string(),
                expected: FieldType::Int32,
                value: "1.5".to_string(),
            })
        );
        assert_eq!(
            compact_str(&one(FieldType::Int32), r#"{"v":45.0}"#).as_deref(),
            Ok(r#"{"1":45}"#)
        );
        assert_eq!(
            compact_str(&one(FieldType::Int16), r#"{"v":-1e2}"#).as_deref(),
            Ok(r#"{"1":-100}"#)
        );
        assert!(matches!(
            compact_str(&one(FieldType::Uint8), r#"{"v":"5"}"#),
            Err(SchemaError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn float_ranges() {
        let got = compact_str(&one(FieldType::Float32), r#"{"v":1e39}"#);
        assert_eq!(
            got,
            Err(SchemaError::OutOfRange {
                field: "v".to_string(),
                ty: FieldType::Float32,
                value: "1e+39".to_string(),
            })
        );
        assert!(compact_str(&one(FieldType::Float32), r#"{"v":-1e39}"#).is_err());
        assert_eq!(
            compact_str(&one(FieldType::Float32), r#"{"v":3.4e38}"#).as_deref(),
            Ok(r#"{"1":3.4e+38}"#)
        );
        assert_eq!(
            compact_str(&one(FieldType::Float64), r#"{"v":1e300}"#).as_deref(),
            Ok(r#"{"1":1e+300}"#)
        );
        // Beyond f64 the JSON itself is refused by the parser.
        assert!(matches!(
            compact_str(&one(FieldType::Float64), r#"{"v":1e400}"#),
            Err(SchemaError::InvalidJson { .. })
        ));
    }

    #[test]
    fn bool_and_string_types() {
        let b = one(FieldType::Bool);
        assert_eq!(
            compact_str(&b, r#"{"v":true}"#).as_deref(),
            Ok(r#"{"1":true}"#)
        );
        assert_eq!(
            compact_str(&b, r#"{"v":false}"#).as_deref(),
            Ok(r#"{"1":false}"#)
        );
        for bad in ["1", "\"true\"", "0"] {
            assert!(
                matches!(
                    compact_str(&b, &format!(r#"{{"v":{bad}}}"#)),
                    Err(SchemaError::TypeMismatch {
                        expected: FieldType::Bool,
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let s = one(FieldType::String);
        for bad in ["5", "true"] {
            assert!(
                matches!(
                    compact_str(&s, &format!(r#"{{"v":{bad}}}"#)),
                    Err(SchemaError::TypeMismatch {
                        expected: FieldType::String,
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let f = one(FieldType::Float32);
        assert!(matches!(
            compact_str(&f, r#"{"v":"72.5"}"#),
            Err(SchemaError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn type_mismatch_value_is_short() {
        let long = "x".repeat(500);
        let err = compact_str(&one(FieldType::Int8), &format!(r#"{{"v":"{long}"}}"#))
            .expect_err("mismatch");
        let SchemaError::TypeMismatch { value, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert!(value.chars().count() <= MAX_VALUE_RENDER + 1, "{value}");
        assert!(value.starts_with("\"xxx") && value.ends_with('…'));
        assert!(err.to_string().contains("expects int8"));
    }

    #[test]
    fn null_is_accepted_and_kept() {
        for ty in [FieldType::Int8, FieldType::String, FieldType::Bool] {
            let s = one(ty);
            let compact = compact_str(&s, r#"{"v":null}"#);
            assert_eq!(compact.as_deref(), Ok(r#"{"1":null}"#));
            assert_eq!(
                expand_str(&s, r#"{"1":null}"#).as_deref(),
                Ok(r#"{"v":null}"#)
            );
        }
    }

    #[test]
    fn nested_values_rejected_with_hint() {
        let s = Schema::new(vec![field(1, "cpu.pct", FieldType::Float32)]).expect("valid");
        let err = compact_str(&s, r#"{"cpu": {"pct": 5}}"#).expect_err("nested");
        assert_eq!(
            err,
            SchemaError::NestedObject {
                field: "cpu".to_string()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("nested objects") && msg.contains("\"cpu.pct\""),
            "{msg}"
        );
        // Known name, array value.
        assert!(matches!(
            compact_str(&s, r#"{"cpu.pct": [1, 2]}"#),
            Err(SchemaError::NestedObject { .. })
        ));
        // The dotted name itself works.
        assert_eq!(
            compact_str(&s, r#"{"cpu.pct": 5}"#).as_deref(),
            Ok(r#"{"1":5}"#)
        );
    }

    #[test]
    fn unknown_field_rejected() {
        let s = sensors();
        let err = compact_str(&s, r#"{"temperature": 1, "pressure": 1013}"#).expect_err("unknown");
        assert_eq!(
            err,
            SchemaError::UnknownField {
                field: "pressure".to_string()
            }
        );
        assert_eq!(err.to_string(), "field not found in schema: pressure");
        // Compact input sent to the full-form path is refused as unknown names.
        assert!(matches!(
            compact_str(&s, r#"{"1": 72.5}"#),
            Err(SchemaError::UnknownField { .. })
        ));
    }

    #[test]
    fn not_an_object_or_not_json() {
        let s = sensors();
        for input in ["[1,2]", "5", "\"x\"", "null", "true"] {
            assert_eq!(
                s.compact(input.as_bytes()),
                Err(SchemaError::NotAnObject),
                "{input}"
            );
            assert_eq!(
                s.validate_compact(input.as_bytes()),
                Err(SchemaError::NotAnObject)
            );
            assert_eq!(s.expand(input.as_bytes()), Err(SchemaError::NotAnObject));
        }
        for input in ["", "{", "{\"a\":}", "{} x", "\u{feff}{}", "{'a':1}"] {
            assert!(
                matches!(
                    s.compact(input.as_bytes()),
                    Err(SchemaError::InvalidJson { .. })
                ),
                "{input:?}"
            );
            assert!(matches!(
                s.validate_compact(input.as_bytes()),
                Err(SchemaError::InvalidJson { .. })
            ));
            assert!(matches!(
                s.expand_bytes(input.as_bytes()),
                Err(SchemaError::InvalidJson { .. })
            ));
        }
        assert!(matches!(
            s.compact(b"{\"sensor_id\":\"\xff\"}"),
            Err(SchemaError::InvalidJson { .. })
        ));
    }

    // -------------------------------------------------- validate_compact

    #[test]
    fn validate_compact_canonicalizes() {
        let s = sensors();
        let got = s
            .validate_compact(br#" { "3" : "room-1", "1" : 72.5 } "#)
            .expect("valid");
        assert_eq!(got, br#"{"1":72.5,"3":"room-1"}"#);
    }

    #[test]
    fn validate_compact_errors() {
        let s = sensors();
        assert_eq!(
            s.validate_compact(br#"{"1":1,"9":2}"#),
            Err(SchemaError::UnknownIndex { index: 9 })
        );
        for key in ["a", "01", "0", "-1", "+1", "1.0", " 1", "4294967296", ""] {
            let input = format!(r#"{{"{key}":1}}"#);
            assert_eq!(
                s.validate_compact(input.as_bytes()),
                Err(SchemaError::InvalidCompactKey {
                    key: key.to_string()
                }),
                "{key:?}"
            );
        }
        assert_eq!(
            s.validate_compact(br#"{"3":5}"#),
            Err(SchemaError::TypeMismatch {
                field: "sensor_id".to_string(),
                expected: FieldType::String,
                value: "5".to_string(),
            })
        );
        assert!(matches!(
            s.validate_compact(br#"{"1":1e39}"#),
            Err(SchemaError::OutOfRange { .. })
        ));
        assert_eq!(
            s.validate_compact(br#"{"1":{"x":1}}"#),
            Err(SchemaError::NestedObject {
                field: "temperature".to_string()
            })
        );
    }

    // ------------------------------------------------------------ expand

    #[test]
    fn round_trip_compact_expand() {
        let s = sensors();
        let input = r#"{"temperature": 72.5, "humidity": 45, "sensor_id": "room-1"}"#;
        let compact = s.compact(input.as_bytes()).expect("compact");
        let full = s.expand(&compact).expect("expand");
        let want: Value = serde_json::from_str(input).expect("json");
        assert_eq!(full, want);
        assert_eq!(
            s.expand_bytes(&compact).expect("expand"),
            br#"{"temperature":72.5,"humidity":45,"sensor_id":"room-1"}"#
        );
    }

    #[test]
    fn expand_keeps_unknown_indices() {
        let s = sensors();
        // Written under a later schema that added field 4.
        let got = expand_str(&s, r#"{"4":1013,"1":72.5,"3":"room-1"}"#);
        assert_eq!(
            got.as_deref(),
            Ok(r#"{"temperature":72.5,"sensor_id":"room-1","4":1013}"#)
        );
        let v = s.expand(br#"{"4":1013}"#).expect("expand");
        assert_eq!(v["4"], 1013);
    }

    #[test]
    fn expand_after_evolve_reads_old_records() {
        let v1 = sensors();
        let old = v1.compact(br#"{"temperature":70}"#).expect("compact");
        let mut fields = v1.fields.clone();
        fields.push(field(4, "pressure", FieldType::Float32));
        let v2 = v1.evolve(fields).expect("evolve");
        assert_eq!(
            v2.expand_bytes(&old).expect("expand"),
            br#"{"temperature":70}"#
        );
    }

    #[test]
    fn expand_rejects_bad_keys() {
        let s = sensors();
        assert_eq!(
            s.expand(br#"{"temperature":1}"#),
            Err(SchemaError::InvalidCompactKey {
                key: "temperature".to_string()
            })
        );
        assert_eq!(
            s.expand_bytes(br#"{"0":1}"#),
            Err(SchemaError::InvalidCompactKey {
                key: "0".to_string()
            })
        );
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let s = Schema::new(vec![
            field(1, "a", FieldType::Int8),
            field(2, "b", FieldType::Uint64),
            field(3, "c", FieldType::Float32),
            field(4, "d", FieldType::Bool),
            field(5, "e", FieldType::String),
        ])
        .expect("valid");
        let seeds: [&[u8]; 4] = [
            br#"{"a":-5,"b":18446744073709551615,"c":1.5e3,"d":true,"e":"x\u0041"}"#,
            br#"{"1":-5,"2":7,"3":-0.0,"4":false,"5":"\ud83d\ude00"}"#,
            br#"{"a":[[[[{"b":{}}]]]],"e":null}"#,
            br#"{"3":1e-400,"2":-0,"1":1E2}"#,
        ];
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let check = |input: &[u8]| {
            let _ = s.compact(input);
            let _ = s.validate_compact(input);
            let _ = s.expand(input);
            let _ = s.expand_bytes(input);
        };
        check(deep.as_bytes());
        for seed in seeds {
            check(seed);
            for _ in 0..2_000 {
                let mut input = seed.to_vec();
                for _ in 0..(next() % 4 + 1) {
                    let pos = (next() % input.len() as u64) as usize;
                    match next() % 3 {
                        0 => input[pos] = next() as u8,
                        1 => {
                            input.remove(pos);
                        }
                        _ => input.insert(pos, b"{}[]\":,0-.e9"[(next() % 12) as usize]),
                    }
                    if input.is_empty() {
                        break;
                    }
                }
                check(&input);
            }
        }
    }

    // ------------------------------------------------------- persistence

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = sensors();
        save(dir.path(), &v1).expect("save");
        assert_eq!(load(dir.path()), Ok(Some(v1.clone())));

        let mut fields = v1.fields.clone();
        fields.push(field(4, "pressure", FieldType::Float64));
        let v2 = v1.evolve(fields).expect("evolve");
        save(dir.path(), &v2).expect("save over");
        assert_eq!(load(dir.path()), Ok(Some(v2)));
        assert!(!dir.path().join(SCHEMA_TMP_FILE).exists());
    }

    #[test]
    fn load_missing_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()), Ok(None));
        // A temp file left by a crash before the rename is not the schema.
        fs::write(dir.path().join(SCHEMA_TMP_FILE), b"{\"vers").expect("write");
        assert_eq!(load(dir.path()), Ok(None));
        save(dir.path(), &sensors()).expect("save over stale temp");
        assert_eq!(load(dir.path()), Ok(Some(sensors())));
    }

    #[test]
    fn load_garbage_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SCHEMA_FILE);
        let bad: [&[u8]; 5] = [
            b"not json",
            b"{\"version\":1,\"fie",
            br#"{"version":0,"fields":[{"index":1,"name":"a","type":"bool"}]}"#,
            br#"{"version":1,"fields":[{"index":1,"name":"a","type":"bool"},{"index":1,"name":"b","type":"bool"}]}"#,
            br#"{"version":1,"fields":[{"index":1,"name":"a","type":"complex"}]}"#,
        ];
        for contents in bad {
            fs::write(&path, contents).expect("write");
            let err = load(dir.path()).expect_err("malformed");
            assert!(
                matches!(&err, SchemaError::Corrupt { path: p, .. } if *p == path),
                "{err:?}"
            );
            assert!(err.to_string().contains(SCHEMA_FILE), "{err}");
        }
    }

    #[test]
    fn load_sorts_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(SCHEMA_FILE),
            br#"{"version":3,"fields":[{"index":2,"name":"b","type":"bool"},{"index":1,"name":"a","type":"int8"}]}"#,
        )
        .expect("write");
        let s = load(dir.path()).expect("load").expect("some");
        assert_eq!(s.version, 3);
        assert_eq!(s.fields[0].name, "a");
    }

    #[test]
    fn save_into_missing_dir_is_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = save(&missing, &sensors()).expect_err("no dir");
        assert!(matches!(err, SchemaError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
