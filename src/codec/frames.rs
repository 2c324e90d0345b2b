//! The frames of the WebSocket streams (inbound `/ws/read` and `/ws/write`,
//! and the outbound connections), and message ingestion: a batch of
//! `{"timestamp"?, "data"}` messages decoded and stored in order.
//!
//! Frames (one JSON text message each, keys in this order):
//! - `{"type":"data","timestamp":T,"block_num":B,"size":S,"data":D}`, `data`
//!   encoded as the REST API encodes it (binary as base64, text as a
//!   string, schema expanded unless `format=compact`);
//! - with `agg_window`, a window instead:
//!   `{"type":"data","timestamp":END,"count":N,"partial":P,"data":D}`, the
//!   REST window object (`timestamp` the window's end) after its `type`;
//!   with `format=compact` on a schema store, `D` keyed by the indices of
//!   a `{"type":"schema","_schema":{"version","fields"}}` frame sent first
//!   (see [`super::agg::Compact`]);
//! - `{"type":"caught_up"}` once the stored objects have been sent;
//! - `{"type":"gap","from":T1,"to":T2,"lost":N}` when the ring overwrote
//!   `N` objects with timestamps in `T1..=T2` before the reader got them
//!   (an addition to the original, which skipped silently: old clients
//!   ignore an unknown type);
//! - `{"type":"ack","timestamp":T,"block_num":B,"size":S}` per stored
//!   message of the write stream;
//! - `{"type":"error","message":M}`.

use std::sync::Arc;
use std::time::Duration;

use super::agg::{AggError, Aggregator, Compact, Spec, Window};
use super::{data_json, decode_message};
use crate::error::ApiError;
use crate::follow::{Gap, Start};
use crate::metrics::Metrics;
use crate::store::{self, DataType, Durability, Object, ObjectHandle, Store};

/// The `caught_up` frame.
pub const CAUGHT_UP: &str = r#"{"type":"caught_up"}"#;

/// A `data` frame.
pub fn data_frame(store: &Store, o: &Object, compact: bool) -> String {
    let h = &o.handle;
    format!(
        r#"{{"type":"data","timestamp":{},"block_num":{},"size":{},"data":{}}}"#,
        h.timestamp,
        h.block_num,
        h.size,
        data_json(store, &o.data, compact)
    )
}

/// A window's `data` frame, `compact` on a schema store with
/// `format=compact`: then a `schema` frame comes first when the window
/// holds an output the last one sent did not describe.
pub fn window_frames(w: &Window, compact: Option<&mut Compact>) -> Vec<String> {
    let mut out = Vec::with_capacity(1);
    let mut s = String::with_capacity(128);
    s.push_str(r#"{"type":"data","#);
    match compact {
        None => w.write_json(&mut s),
        Some(c) => {
            let (data, grown) = c.encode(&w.data);
            if grown {
                out.push(schema_frame(c));
            }
            Window { data, ..w.clone() }.write_json(&mut s);
        }
    }
    // `write_json` opened its own object: splice it into the frame's.
    s.replace_range(
        r#"{"type":"data","#.len()..r#"{"type":"data","#.len() + 1,
        "",
    );
    out.push(s);
    out
}

/// The windows of a stream with `agg_window` (`/ws/read`, push
/// connections, MQTT sinks): one [`Aggregator`] fed the objects in order,
/// each closed window turned into its frames.
pub struct WindowFrames {
    agg: Aggregator,
    /// `format=compact` on a schema store.
    compact: Option<Compact>,
}

/// The frames of one window (a `schema` frame first when the compact
/// outputs grew), its end (its `timestamp`, what a remote acks) and the
/// timestamp of its newest reading: a reader resuming on raw readings
/// after the window starts past it.
#[derive(Debug, Clone)]
pub struct Framed {
    pub frames: Vec<String>,
    pub end: i64,
    pub last: i64,
    pub partial: bool,
}

impl WindowFrames {
    /// `lo`: the first timestamp the stream covers; a window beginning
    /// before it is partial, as on REST. `compact` applies to schema
    /// stores only (a json store's windows stay expanded).
    pub fn new(spec: Arc<Spec>, store: &Store, compact: bool, lo: i64) -> WindowFrames {
        let compact = (compact && store.config().data_type == DataType::Schema)
            .then(|| Compact::new(&spec, store.schema().as_ref()));
        WindowFrames {
            agg: Aggregator::new(spec, lo, i64::MAX),
            compact,
        }
    }

    /// The `schema` frame a compact stream starts with.
    pub fn schema_frame(&self) -> Option<String> {
        self.compact.as_ref().map(schema_frame)
    }

    /// Folds one stored object; the window it closed, if any.
    pub fn push(&mut self, store: &Store, o: &Object) -> Result<Option<Framed>, AggError> {
        let w = self.agg.push_stored(store, o.handle.timestamp, &o.data)?;
        Ok(w.map(|w| self.framed(&w)))
    }

    /// The open window cut short (the stream stops), flagged partial.
    pub fn cut(&mut self) -> Result<Option<Framed>, AggError> {
        let w = self.agg.cut()?;
        Ok(w.map(|w| self.framed(&w)))
    }

    /// A gap resets the open window: it lost readings, so it goes out
    /// now, partial, and the window of the first reading after the gap is
    /// partial if it began before the gap's end.
    pub fn gap(&mut self, g: &Gap) -> Result<Option<Framed>, AggError> {
        let cut = self.cut();
        self.agg.set_lo(g.to.saturating_add(1));
        cut
    }

    fn framed(&mut self, w: &Window) -> Framed {
        Framed {
            frames: window_frames(w, self.compact.as_mut()),
            end: w.end,
            last: w.last,
            partial: w.partial,
        }
    }
}

/// Where a stream starting at `start` begins covering readings: a window
/// beginning before is cut by the start. `cursor`: the follower's, for
/// [`Start::Now`].
pub fn first_covered(start: Start, cursor: i64) -> i64 {
    match start {
        Start::Oldest => i64::MIN,
        Start::At(t) => t,
        Start::After(t) => t.saturating_add(1),
        Start::Now => cursor.saturating_add(1),
    }
}

/// The `schema` frame describing compact windows' indices.
pub fn schema_frame(c: &Compact) -> String {
    serde_json::json!({ "type": "schema", "_schema": c.schema() }).to_string()
}

/// A `gap` frame.
pub fn gap_frame(g: &Gap) -> String {
    format!(
        r#"{{"type":"gap","from":{},"to":{},"lost":{}}}"#,
        g.from, g.to, g.lost
    )
}

/// An `ack` frame.
pub fn ack_frame(h: &ObjectHandle) -> String {
    format!(
        r#"{{"type":"ack","timestamp":{},"block_num":{},"size":{}}}"#,
        h.timestamp, h.block_num, h.size
    )
}

/// An `error` frame.
pub fn error_frame(message: &str) -> String {
    serde_json::json!({ "type": "error", "message": message }).to_string()
}

/// Parses `from` as the read stream takes it: `now` or empty (the next
/// object written), `0` (the oldest), or a Unix-nanosecond timestamp `N`
/// (objects with timestamps from `N` on).
pub fn parse_from(v: Option<&str>) -> Result<Start, String> {
    match v.map(str::trim) {
        None | Some("") | Some("now") => Ok(Start::Now),
        Some(s) => match s.parse::<i64>() {
            Ok(0) => Ok(Start::Oldest),
            Ok(n) if n > 0 => Ok(Start::At(n)),
            _ => Err(format!(
                "invalid from {s:?}: must be now, 0 or a Unix timestamp in nanoseconds"
            )),
        },
    }
}

/// Stores `{"timestamp"?, "data"}` messages in order, as one batch (one
/// lock, one commit); one result per message, its error the text a client
/// gets. A message that fails does not stop the others; explicit
/// timestamps beyond `max_future` fail (see [`check_horizon`]). Blocking
/// when the store syncs every write (run it off the async workers then).
///
/// [`check_horizon`]: super::check_horizon
pub fn ingest_blocking(
    store: &Store,
    metrics: &Metrics,
    messages: &[impl AsRef<[u8]>],
    compact: bool,
    max_future: Duration,
) -> Vec<Result<ObjectHandle, String>> {
    let mut out: Vec<Result<ObjectHandle, String>> = Vec::with_capacity(messages.len());
    let mut items = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        match decode_message(store, m.as_ref(), compact, max_future) {
            Ok((ts, bytes)) => {
                items.push((i, ts, bytes));
                out.push(Err(String::new()));
            }
            Err(e) => {
                metrics.rejected(e.reason);
                out.push(Err(e.message));
            }
        }
    }
    if items.is_empty() {
        return out;
    }
    let results = store.insert_batch(items.iter().map(|(_, t, b)| (*t, b.as_slice())));
    let (mut n, mut bytes) = (0u64, 0u64);
    for ((i, _, b), r) in items.iter().zip(results) {
        out[*i] = match r {
            Ok(h) => {
                n += 1;
                bytes += b.len() as u64;
                Ok(h)
            }
            Err(e) => {
                let e = ApiError::from(e);
                metrics.rejected(e.reason);
                Err(e.message)
            }
        };
    }
    metrics.inserted(n, bytes);
    out
}

/// [`ingest_blocking`] from async code: inline when the store does not
/// wait for a sync, on the blocking pool when it does.
pub async fn ingest(
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
    messages: Vec<Vec<u8>>,
    compact: bool,
    max_future: Duration,
) -> Vec<Result<ObjectHandle, String>> {
    if store.config().durability != Durability::Always {
        return ingest_blocking(store, metrics, &messages, compact, max_future);
    }
    let n = messages.len();
    let (s, m) = (store.clone(), metrics.clone());
    tokio::task::spawn_blocking(move || ingest_blocking(&s, &m, &messages, compact, max_future))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "ingest task failed");
            vec![Err("internal server error".to_string()); n]
        })
}

/// The message a stream client gets for a store error.
pub fn store_error_message(e: store::Error) -> String {
    ApiError::from(e).message
}
