//! JSON on top of the byte API: put and get any `Serialize` /
//! `DeserializeOwned` type, raw JSON, and validation of values against the
//! store's data type (including schema compaction and expansion).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use super::config::DataType;
use super::engine::Store;
use super::error::{Error, Result};
use super::object::{Object, ObjectHandle, Query};
use super::schema::SchemaError;

fn json_err(e: serde_json::Error) -> Error {
    Error::InvalidData {
        reason: format!("invalid JSON: {e}"),
    }
}

fn raw(data: Vec<u8>) -> Result<Box<RawValue>> {
    let s = String::from_utf8(data).map_err(|_| Error::InvalidData {
        reason: "stored object is not UTF-8 JSON".into(),
    })?;
    RawValue::from_string(s).map_err(json_err)
}

impl Store {
    /// Serializes `value` as JSON and inserts it at `timestamp` (through
    /// the schema for schema stores).
    pub fn put_json<T: Serialize + ?Sized>(
        &self,
        timestamp: i64,
        value: &T,
    ) -> Result<ObjectHandle> {
        let bytes = serde_json::to_vec(value).map_err(json_err)?;
        let stored = self.encode_value(&bytes)?;
        self.insert(timestamp, &stored)
    }

    /// Like [`Store::put_json`] at the current time.
    pub fn put_json_now<T: Serialize + ?Sized>(&self, value: &T) -> Result<ObjectHandle> {
        let bytes = serde_json::to_vec(value).map_err(json_err)?;
        let stored = self.encode_value(&bytes)?;
        self.insert_now(&stored)
    }

    /// Reads the object `handle` names as a `T` (schema stores: expanded).
    pub fn get_json<T: DeserializeOwned>(&self, handle: &ObjectHandle) -> Result<T> {
        let data = self.decode_value(&self.get(handle)?, false)?;
        serde_json::from_slice(&data).map_err(json_err)
    }

    /// Reads the object with this timestamp as a `T`.
    pub fn get_json_by_time<T: DeserializeOwned>(
        &self,
        timestamp: i64,
    ) -> Result<(T, ObjectHandle)> {
        let o = self.get_by_time(timestamp)?;
        let data = self.decode_value(&o.data, false)?;
        Ok((serde_json::from_slice(&data).map_err(json_err)?, o.handle))
    }

    /// The raw JSON of the object `handle` names.
    pub fn get_json_raw(&self, handle: &ObjectHandle) -> Result<Box<RawValue>> {
        raw(self.decode_value(&self.get(handle)?, false)?)
    }

    /// The raw JSON of the object with this timestamp.
    pub fn get_json_raw_by_time(&self, timestamp: i64) -> Result<(Box<RawValue>, ObjectHandle)> {
        let o = self.get_by_time(timestamp)?;
        Ok((raw(self.decode_value(&o.data, false)?)?, o.handle))
    }

    /// Raw JSON of the objects a query selects, with their handles.
    pub fn query_json(&self, q: &Query) -> Result<Vec<(ObjectHandle, Box<RawValue>)>> {
        self.objects(q)?
            .into_iter()
            .map(|Object { handle, data }| Ok((handle, raw(self.decode_value(&data, false)?)?)))
            .collect()
    }

    /// The `limit` oldest objects as raw JSON.
    pub fn oldest_json(&self, limit: usize) -> Result<Vec<(ObjectHandle, Box<RawValue>)>> {
        self.query_json(&Query::oldest(limit))
    }

    /// The `limit` newest objects as raw JSON, newest first.
    pub fn newest_json(&self, limit: usize) -> Result<Vec<(ObjectHandle, Box<RawValue>)>> {
        self.query_json(&Query::newest(limit))
    }

    /// Objects from the last `d` as raw JSON.
    pub fn since_json(
        &self,
        d: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<(ObjectHandle, Box<RawValue>)>> {
        self.query_json(&Query::since(d, limit))
    }

    /// Objects in `start..=end` as raw JSON.
    pub fn range_json(
        &self,
        start: i64,
        end: i64,
        limit: usize,
    ) -> Result<Vec<(ObjectHandle, Box<RawValue>)>> {
        if start > end {
            return Err(Error::InvalidRange { start, end });
        }
        self.query_json(&Query::range(start, end, limit))
    }

    /// Checks `input` against the store's data type and returns the bytes
    /// to store: text must be UTF-8, json must parse, schema objects are
    /// validated and compacted (`{"name": v}` to `{"1": v}`).
    pub fn encode_value(&self, input: &[u8]) -> Result<Vec<u8>> {
        match self.config().data_type {
            DataType::Binary => Ok(input.to_vec()),
            DataType::Text => match std::str::from_utf8(input) {
                Ok(_) => Ok(input.to_vec()),
                Err(e) => Err(Error::InvalidData {
                    reason: format!("text is not valid UTF-8: {e}"),
                }),
            },
            DataType::Json => {
                serde_json::from_slice::<serde::de::IgnoredAny>(input).map_err(json_err)?;
                Ok(input.to_vec())
            }
            DataType::Schema => {
                let schema = self.schema().ok_or(Error::Schema(SchemaError::NoSchema))?;
                Ok(schema.compact(input)?)
            }
        }
    }

    /// Like [`Store::encode_value`] for schema-store input that is already
    /// compact (`{"1": v}`); other types are handled as by `encode_value`.
    pub fn encode_compact_value(&self, input: &[u8]) -> Result<Vec<u8>> {
        if self.config().data_type != DataType::Schema {
            return self.encode_value(input);
        }
        let schema = self.schema().ok_or(Error::Schema(SchemaError::NoSchema))?;
        Ok(schema.validate_compact(input)?)
    }

    /// Turns stored bytes back into what a client sees: schema objects are
    /// expanded to field names unless `compact` is asked for.
    pub fn decode_value(&self, stored: &[u8], compact: bool) -> Result<Vec<u8>> {
        if self.config().data_type != DataType::Schema || compact {
            return Ok(stored.to_vec());
        }
        match self.schema() {
            Some(s) => Ok(s.expand_bytes(stored)?),
            None => Ok(stored.to_vec()),
        }
    }
}
