//! The wire codec shared by every write and read path (REST, NDJSON,
//! WebSocket streams, outbound connections, the Unix socket): what the
//! bytes of a store look like as JSON, how a `{"timestamp"?, "data"}`
//! message becomes the bytes to store, the horizon of explicit timestamps,
//! and the stream frames ([`frames`]).
//!
//! Invariant: a value means the same on every path; an error carries the
//! message the client gets and its [`Reason`](crate::reject::Reason).

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::duration;
use crate::error::{ApiError, ApiResult};
use crate::reject::Reason;
use crate::store::{now_ns, DataType, Store};

pub mod agg;
pub mod export;
pub mod frames;

/// The media type a store's data must be sent as.
pub fn content_type_of(t: DataType) -> &'static str {
    match t {
        DataType::Binary => "application/octet-stream",
        DataType::Text => "text/plain",
        DataType::Json | DataType::Schema => "application/json",
    }
}

/// The horizon of explicit timestamps: at most `max_future`
/// (`store.max_future`) ahead of the server's clock. Every write path
/// (HTTP, NDJSON, `/ws/write`, pull connections, the Unix socket) goes
/// through here, so that no write can park a store's newest timestamp far
/// ahead, where every "now" insert after it would be refused as out of
/// order. `None` (now) always passes.
pub fn check_horizon(ts: Option<i64>, max_future: Duration) -> ApiResult<Option<i64>> {
    let Some(t) = ts else {
        return Ok(None);
    };
    let ahead = i64::try_from(max_future.as_nanos()).unwrap_or(i64::MAX);
    if t > now_ns().saturating_add(ahead) {
        return Err(ApiError::bad_request(format!(
            "invalid timestamp: more than {} ahead of the server's clock",
            duration::format(max_future)
        ))
        .reason(Reason::InvalidTimestamp));
    }
    Ok(Some(t))
}

/// The JSON text of stored bytes as a client sees them: binary as a
/// base64 string, text as a JSON string, json as stored, schema expanded
/// to field names (or as stored when `compact`), byte for byte. Stored
/// JSON that is not valid by the insert path's own check (written by
/// another tool) is sent as a string.
pub fn data_json(store: &Store, stored: &[u8], compact: bool) -> String {
    let dt = store.config().data_type;
    match dt {
        DataType::Binary => {
            let mut out = String::with_capacity(stored.len() * 4 / 3 + 4);
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(stored, &mut out);
            out.push('"');
            out
        }
        DataType::Text => json_string(&String::from_utf8_lossy(stored)),
        DataType::Json | DataType::Schema => {
            let bytes = if compact || dt == DataType::Json {
                None
            } else {
                store.decode_value(stored, false).ok()
            };
            let bytes = bytes.as_deref().unwrap_or(stored);
            match std::str::from_utf8(bytes) {
                Ok(t) if serde_json::from_str::<&RawValue>(t).is_ok() => t.to_string(),
                _ => json_string(&String::from_utf8_lossy(stored)),
            }
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[derive(Deserialize)]
pub struct Wrapper<'a> {
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// `None` only when the key is absent: `"data": null` is data (as in
    /// the original), which a plain `Option` would turn into `None`.
    #[serde(borrow, default, deserialize_with = "present")]
    pub data: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses one `{"timestamp"?, "data"}` message (WebSocket write stream,
/// pull connections) into what to store: its timestamp (`None`: now) and
/// bytes. The error's message is what the client gets.
pub fn decode_message(
    store: &Store,
    msg: &[u8],
    compact: bool,
    max_future: Duration,
) -> ApiResult<(Option<i64>, Vec<u8>)> {
    let w: Wrapper<'_> = serde_json::from_slice(msg).map_err(|e| {
        ApiError::bad_request(format!("invalid JSON: {e}")).reason(Reason::InvalidJson)
    })?;
    encode_item(store, &w, compact, max_future)
}

/// Turns one `{"timestamp"?, "data"}` item into what to store.
pub fn encode_item(
    store: &Store,
    w: &Wrapper<'_>,
    compact: bool,
    max_future: Duration,
) -> ApiResult<(Option<i64>, Vec<u8>)> {
    let Some(data) = w.data else {
        return Err(ApiError::bad_request("data is required"));
    };
    let ts = match w.timestamp {
        None | Some(0) => None,
        Some(t) if t < 0 => {
            return Err(ApiError::bad_request("invalid timestamp").reason(Reason::InvalidTimestamp))
        }
        Some(t) => check_horizon(Some(t), max_future)?,
    };
    Ok((ts, encode_data(store, data.get(), compact)?))
}

/// Turns the JSON text of a `data` value into the bytes to store: json as
/// sent, schema validated and compacted (`compact`: the input is compact
/// already), text from a JSON string, binary from a base64 string. Shared
/// with the Unix socket, so that a value means the same on both.
pub fn encode_data(store: &Store, data: &str, compact: bool) -> ApiResult<Vec<u8>> {
    let raw = data.as_bytes();
    Ok(match store.config().data_type {
        DataType::Json => raw.to_vec(),
        DataType::Schema if compact => store.encode_compact_value(raw)?,
        DataType::Schema => store.encode_value(raw)?,
        DataType::Text => match serde_json::from_str::<String>(data) {
            Ok(s) => s.into_bytes(),
            Err(_) => {
                return Err(ApiError::bad_request(
                    "data must be a JSON string for a text store",
                ))
            }
        },
        DataType::Binary => {
            let s: String = serde_json::from_str(data).map_err(|_| {
                ApiError::bad_request("data must be a base64 string for a binary store")
            })?;
            base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(|e| ApiError::bad_request(format!("data is not valid base64: {e}")))?
        }
    })
}
