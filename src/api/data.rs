//! The unified `/api/stores/:store/data` endpoint: insert (single object or
//! an NDJSON batch), get and soft-delete by timestamp, and the list queries
//! oldest, newest and range.
//!
//! Data in responses: binary as standard base64 (with padding), text as a
//! JSON string, json inline, schema expanded to field names (or compact
//! with `format=compact`).
//!
//! With `agg_window`, range and newest answer time windows instead of
//! objects ([`crate::codec::agg`]): one pass over the range, each stored
//! object parsed, folded into its window's accumulators and dropped. The
//! pass runs on a blocking thread, in short batches that release the
//! store's lock between them, and reads at most [`MAX_AGG_SCAN`] readings.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::{url_pairs, StoreAccess};
use crate::codec::agg::{self, Aggregator, Spec};
use crate::codec::{check_horizon, content_type_of, data_json, encode_item, Wrapper};
use crate::duration;
use crate::error::{ApiError, ApiResult};
use crate::reject::Reason;
use crate::state::AppState;
use crate::store::{self, now_ns, DataType, Durability, Filter, ObjectHandle, Order, Query, Store};

/// Largest `limit` a list query accepts.
pub const MAX_LIMIT: usize = 1_000_000;
/// Default `limit` of list queries.
pub const DEFAULT_LIMIT: usize = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/stores/{store}/data", post(data_insert))
        .route(
            "/api/stores/{store}/data/time/{timestamp}",
            get(data_get).delete(data_delete),
        )
        .route("/api/stores/{store}/data/oldest", get(data_oldest))
        .route("/api/stores/{store}/data/newest", get(data_newest))
        .route("/api/stores/{store}/data/range", get(data_range))
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Runs a store call that may wait for a disk sync off the async workers.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> store::Result<T> + Send + 'static,
) -> ApiResult<T> {
    if store.config().durability == Durability::Always {
        let s = store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(ApiError::internal)??)
    } else {
        Ok(f(store)?)
    }
}

/// Query parameters, parsed leniently where the original is lenient.
#[derive(Debug, Default)]
struct Params {
    limit: Option<String>,
    include_data: Option<String>,
    format: Option<String>,
    filter: Option<String>,
    filter_ignore_case: Option<String>,
    since: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    after: Option<String>,
    timestamp: Option<String>,
    agg_window: Option<String>,
    agg_fields: Option<String>,
    agg_default: Option<String>,
}

impl Params {
    fn parse(q: Option<&str>) -> Params {
        let mut p = Params::default();
        for (k, v) in url_pairs(q.unwrap_or("")) {
            let slot = match k.as_str() {
                "limit" => &mut p.limit,
                "include_data" => &mut p.include_data,
                "format" => &mut p.format,
                "filter" => &mut p.filter,
                "filter_ignore_case" => &mut p.filter_ignore_case,
                "since" => &mut p.since,
                "start_time" => &mut p.start_time,
                "end_time" => &mut p.end_time,
                "after" => &mut p.after,
                "timestamp" => &mut p.timestamp,
                "agg_window" => &mut p.agg_window,
                "agg_fields" => &mut p.agg_fields,
                "agg_default" => &mut p.agg_default,
                _ => continue,
            };
            *slot = Some(v);
        }
        p
    }

    fn limit(&self) -> ApiResult<usize> {
        match self.limit.as_deref() {
            None | Some("") => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "invalid limit {v:?}: must be an integer from 1 to {MAX_LIMIT}"
                ))),
            },
        }
    }

    fn include_data(&self) -> bool {
        !matches!(self.include_data.as_deref(), Some("false") | Some("0"))
    }

    fn compact(&self) -> bool {
        self.format.as_deref() == Some("compact")
    }

    fn filter(&self) -> Option<Filter> {
        let f = self.filter.as_deref().filter(|f| !f.is_empty())?;
        let ic = matches!(self.filter_ignore_case.as_deref(), Some("true") | Some("1"));
        Some(Filter::new(f, ic))
    }

    /// The aggregation asked for, if any, checked against the store: only
    /// json and schema stores aggregate, the output is always expanded
    /// JSON with data, and `limit` counts windows, at most
    /// [`agg::MAX_WINDOWS`].
    fn agg(&self, store: &Store) -> ApiResult<Option<Spec>> {
        let spec = Spec::parse_for(
            store.config().data_type,
            self.agg_window.as_deref(),
            self.agg_fields.as_deref(),
            self.agg_default.as_deref(),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let Some(spec) = spec else {
            return Ok(None);
        };
        if self.compact() {
            return Err(ApiError::bad_request(
                "format=compact does not apply to aggregated windows",
            ));
        }
        if !self.include_data() {
            return Err(ApiError::bad_request(
                "include_data=false does not apply to aggregated windows",
            ));
        }
        if self.limit()? as u64 > agg::MAX_WINDOWS {
            return Err(ApiError::bad_request(format!(
                "invalid limit {:?}: at most {} windows when aggregating",
                self.limit.as_deref().unwrap_or(""),
                agg::MAX_WINDOWS
            )));
        }
        Ok(Some(spec))
    }

    /// Refuses the agg_* parameters where aggregation does not apply.
    fn no_agg(&self) -> ApiResult<()> {
        let given = [&self.agg_window, &self.agg_fields, &self.agg_default]
            .iter()
            .any(|v| v.as_deref().is_some_and(|s| !s.trim().is_empty()));
        if given {
            return Err(ApiError::bad_request(
                "aggregation applies to data/range and data/newest",
            ));
        }
        Ok(())
    }

    /// A bound of `data/oldest` (`start_time`) or `data/newest`
    /// (`end_time`), the console's paging cursor: omitted, empty or 0 is
    /// no bound.
    fn cursor_bound(&self, name: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
        match v.filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(v) => Ok(Some(parse_ts(name, v)?).filter(|&t| t != 0)),
        }
    }

    fn since(&self) -> ApiResult<Option<Duration>> {
        match self.since.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => duration::parse(s)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("invalid since duration: {e}"))),
        }
    }
}

/// A time parameter: Unix nanoseconds, 0 or more (the original's message
/// for anything else, negative values included).
fn parse_ts(name: &str, v: &str) -> ApiResult<i64> {
    match v.trim().parse::<i64>() {
        Ok(t) if t >= 0 => Ok(t),
        _ => Err(ApiError::bad_request(format!("invalid {name}"))),
    }
}

/// Appends `{"timestamp","block_num","size","data"}` to `out`; `data` is
/// `null` when not wanted.
fn write_object(
    out: &mut String,
    store: &Store,
    h: &ObjectHandle,
    data: Option<&[u8]>,
    compact: bool,
) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        r#"{{"timestamp":{},"block_num":{},"size":{},"data":"#,
        h.timestamp, h.block_num, h.size
    );
    match data {
        Some(d) => out.push_str(&data_json(store, d, compact)),
        None => out.push_str("null"),
    }
    out.push('}');
}

/// A JSON body written as text.
fn json_text(body: String) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A list response, `{"objects":[...],"count":N}`, written as text: the
/// stored JSON goes into the body as is, never parsed into a tree.
fn list(state: &AppState, store: &Store, q: &Query, p: &Params) -> ApiResult<Response> {
    use std::fmt::Write as _;
    let with_data = p.include_data();
    let compact = p.compact();
    let mut body = String::with_capacity(256);
    body.push_str(r#"{"objects":["#);
    let mut count = 0usize;
    store.visit(q, |h, d| {
        if count > 0 {
            body.push(',');
        }
        count += 1;
        write_object(&mut body, store, h, with_data.then_some(d), compact);
        std::ops::ControlFlow::Continue(())
    })?;
    let _ = write!(body, r#"],"count":{count}}}"#);
    state.metrics.query();
    Ok(json_text(body))
}

/// Most readings one aggregated request may read; past it, a 400.
pub const MAX_AGG_SCAN: u64 = 10_000_000;
/// Readings read per hold of the store's read lock at most: an
/// aggregated scan releases it between batches, so writers never wait for
/// a whole scan.
const AGG_BATCH: usize = 4096;
/// A batch also ends past this much time holding the lock (large readings
/// make a batch slow long before [`AGG_BATCH`] of them).
const AGG_BATCH_TIME: Duration = Duration::from_millis(5);

/// One aggregated request: what to scan and how to answer.
struct AggScan {
    spec: Arc<Spec>,
    /// The readings scanned, `[start, end]`, oldest first.
    start: i64,
    end: i64,
    /// Windows reaching outside `[lo, hi]` are partial (`hi` is at most now).
    lo: i64,
    hi: i64,
    filter: Option<Filter>,
    /// Windows answered at most.
    limit: usize,
    newest_first: bool,
    /// Readings read at most ([`MAX_AGG_SCAN`]; smaller in tests).
    max_scan: u64,
}

/// Walks the readings of `[start, end]` in `order`, in batches of
/// [`AGG_BATCH`] with the store's lock released between them (timestamps
/// strictly increase, so each batch resumes past the last one seen).
/// `f` sees each reading that passes `filter`; `Break` stops the walk.
fn walk_batches(
    store: &Store,
    start: i64,
    end: i64,
    order: Order,
    filter: Option<&Filter>,
    with_data: bool,
    mut f: impl FnMut(&ObjectHandle, &[u8]) -> std::ops::ControlFlow<()>,
) -> ApiResult<()> {
    use std::ops::ControlFlow;
    let (mut lo, mut hi) = (start, end);
    while lo <= hi {
        let q = Query::range(lo, hi, 0).order(order);
        let (mut n, mut last, mut stop, mut full) = (0usize, None, false, false);
        let began = std::time::Instant::now();
        let mut step = |h: &ObjectHandle, d: &[u8]| {
            n += 1;
            last = Some(h.timestamp);
            if filter.is_none_or(|fl| fl.matches(d)) && f(h, d).is_break() {
                stop = true;
                return ControlFlow::Break(());
            }
            if n >= AGG_BATCH || (n % 16 == 0 && began.elapsed() >= AGG_BATCH_TIME) {
                full = true;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        if with_data || filter.is_some() {
            store.visit(&q, &mut step)?;
        } else {
            store.visit_handles(&q, |h| step(h, &[]))?;
        }
        if stop || !full {
            break;
        }
        match (order, last) {
            (Order::OldestFirst, Some(t)) if t < hi => lo = t + 1,
            (Order::NewestFirst, Some(t)) if t > lo => hi = t - 1,
            _ => break,
        }
    }
    Ok(())
}

/// The body of an aggregated list, `{"objects":[window...],"count":N}`:
/// the windows of the readings in `[a.start, a.end]`, at most `a.limit`,
/// oldest first or, with `newest_first`, reversed. Windows without
/// readings are left out. Blocking: run it off the async workers.
fn agg_body(store: &Store, a: AggScan) -> ApiResult<String> {
    use std::fmt::Write as _;
    use std::ops::ControlFlow;
    let mut agg = Aggregator::new(a.spec.clone(), a.lo, a.hi);
    let mut out = AggOut {
        body: String::with_capacity(256),
        held: Vec::new(),
        count: 0,
        newest_first: a.newest_first,
    };
    out.body.push_str(r#"{"objects":["#);
    let mut scanned = 0u64;
    let mut failed: Option<ApiError> = None;
    walk_batches(
        store,
        a.start,
        a.end,
        Order::OldestFirst,
        a.filter.as_ref(),
        true,
        |h, d| {
            scanned += 1;
            if scanned > a.max_scan {
                failed = Some(ApiError::bad_request(format!(
                    "aggregation reads at most {} readings per request: narrow the time range",
                    a.max_scan
                )));
                return ControlFlow::Break(());
            }
            let closed = agg.push_stored(store, h.timestamp, d);
            match closed {
                Err(e) => {
                    failed = Some(ApiError::bad_request(e.to_string()));
                    ControlFlow::Break(())
                }
                Ok(Some(w)) => {
                    out.emit(w);
                    if out.count >= a.limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                }
                Ok(None) => ControlFlow::Continue(()),
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e);
    }
    if out.count < a.limit {
        if let Some(w) = agg
            .finish()
            .map_err(|e| ApiError::bad_request(e.to_string()))?
        {
            out.emit(w);
        }
    }
    let AggOut {
        mut body,
        held,
        count,
        ..
    } = out;
    for (i, w) in held.iter().rev().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(w);
    }
    let _ = write!(body, r#"],"count":{count}}}"#);
    Ok(body)
}

/// Windows on their way out: range writes each into the body as it
/// closes; newest holds them (as text) to write them newest first.
struct AggOut {
    body: String,
    held: Vec<String>,
    count: usize,
    newest_first: bool,
}

impl AggOut {
    fn emit(&mut self, w: agg::Window) {
        if self.newest_first {
            let mut s = String::with_capacity(128);
            w.write_json(&mut s);
            self.held.push(s);
        } else {
            if self.count > 0 {
                self.body.push(',');
            }
            w.write_json(&mut self.body);
        }
        self.count += 1;
    }
}

/// Answers an aggregated request: the scan runs on a blocking thread, not
/// on an async worker.
async fn agg_list(state: &AppState, store: &Arc<Store>, a: AggScan) -> ApiResult<Response> {
    let s = store.clone();
    let body = tokio::task::spawn_blocking(move || agg_body(&s, a))
        .await
        .map_err(ApiError::internal)??;
    state.metrics.query();
    Ok(json_text(body))
}

/// The time bounds of the `limit` newest windows of the readings in
/// `[start, end]`: from the start of the oldest of them to the newest
/// reading seen (the scan that follows ends there, so readings written
/// in between do not change the answer). One walk over the index, newest
/// first, in batches, reading no data (unless filtered).
fn newest_windows_bounds(
    store: &Store,
    spec: &Spec,
    start: i64,
    end: i64,
    filter: Option<&Filter>,
    limit: usize,
) -> ApiResult<(i64, i64)> {
    let mut seen = 0usize;
    let mut current: Option<i64> = None;
    let mut newest: Option<i64> = None;
    walk_batches(
        store,
        start,
        end,
        Order::NewestFirst,
        filter,
        false,
        |h, _| {
            newest.get_or_insert(h.timestamp);
            let ws = spec.window_start(h.timestamp);
            if current != Some(ws) {
                if seen == limit {
                    return std::ops::ControlFlow::Break(());
                }
                seen += 1;
                current = Some(ws);
            }
            std::ops::ControlFlow::Continue(())
        },
    )?;
    Ok((
        current.map_or(start, |ws| ws.max(start)),
        newest.unwrap_or(end),
    ))
}

/// `[now - d, now]`: the window of `since`, as the original reads it.
fn since_window(d: Duration) -> (i64, i64) {
    let now = now_ns();
    (store::since_start(d).min(now), now)
}

async fn data_oldest(
    access: StoreAccess,
    axum::extract::State(state): axum::extract::State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.no_agg()?;
    let mut query = Query::oldest(p.limit()?);
    // A cursor for paging forward: the next page starts past the last
    // timestamp seen (`start_time = last + 1`).
    if let Some(s) = p.cursor_bound("start_time", p.start_time.as_deref())? {
        query.start = s;
    }
    query.filter = p.filter();
    list(&state, &access.store, &query, &p)
}

async fn data_newest(
    access: StoreAccess,
    axum::extract::State(state): axum::extract::State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let mut query = Query::newest(p.limit()?);
    if let Some(d) = p.since()? {
        (query.start, query.end) = since_window(d);
    }
    // A cursor for paging back in time: the next page ends before the
    // oldest timestamp seen (`end_time = oldest - 1`).
    if let Some(e) = p.cursor_bound("end_time", p.end_time.as_deref())? {
        query.end = query.end.min(e);
    }
    query.filter = p.filter();
    if let Some(spec) = p.agg(&access.store)? {
        let (store, spec) = (access.store.clone(), Arc::new(spec));
        let (lo, end, limit, filter) = (query.start, query.end, query.limit, query.filter);
        let (sp, f) = (spec.clone(), filter.clone());
        let s = store.clone();
        let (start, newest) = tokio::task::spawn_blocking(move || {
            newest_windows_bounds(&s, &sp, lo, end, f.as_ref(), limit)
        })
        .await
        .map_err(ApiError::internal)??;
        let scan = AggScan {
            spec,
            start,
            end: newest,
            lo,
            hi: end.min(now_ns()),
            filter,
            limit,
            newest_first: true,
            max_scan: MAX_AGG_SCAN,
        };
        return agg_list(&state, &store, scan).await;
    }
    list(&state, &access.store, &query, &p)
}

async fn data_range(
    access: StoreAccess,
    axum::extract::State(state): axum::extract::State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let limit = p.limit()?;
    let now = now_ns();
    let (start, end) = if let Some(d) = p.since()? {
        since_window(d)
    } else if let Some(a) = p.after.as_deref().filter(|s| !s.is_empty()) {
        // The original's `after=N`: timestamps in (N, now].
        let a = parse_ts("after timestamp", a)?;
        (a.saturating_add(1), now)
    } else {
        let start = p.start_time.as_deref().filter(|s| !s.is_empty());
        let end = p.end_time.as_deref().filter(|s| !s.is_empty());
        if start.is_none() && end.is_none() {
            return Err(ApiError::bad_request(
                "start_time, end_time, after, or since parameter required",
            ));
        }
        // As in the original, an omitted bound or 0 means "from the
        // oldest" / "until now".
        let s = match start {
            Some(v) => parse_ts("start_time", v)?,
            None => 0,
        };
        let e = match end {
            Some(v) => parse_ts("end_time", v)?,
            None => 0,
        };
        (
            if s == 0 { i64::MIN } else { s },
            if e == 0 { now } else { e },
        )
    };
    if start > end {
        return Err(ApiError::bad_request(
            "invalid time range: start_time is after end_time",
        ));
    }
    let mut query = Query::range(start, end, limit).order(Order::OldestFirst);
    query.filter = p.filter();
    if let Some(spec) = p.agg(&access.store)? {
        let scan = AggScan {
            spec: Arc::new(spec),
            start,
            end,
            lo: start,
            hi: end.min(now_ns()),
            filter: query.filter,
            limit,
            newest_first: false,
            max_scan: MAX_AGG_SCAN,
        };
        return agg_list(&state, &access.store, scan).await;
    }
    list(&state, &access.store, &query, &p)
}

async fn data_get(
    access: StoreAccess,
    axum::extract::State(state): axum::extract::State<AppState>,
    Path((_, ts)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.no_agg()?;
    let ts = parse_ts("timestamp", &ts)?;
    let o = access.store.get_by_time(ts)?;
    state.metrics.query();
    let mut body = String::with_capacity(o.data.len() + 96);
    write_object(
        &mut body,
        &access.store,
        &o.handle,
        Some(&o.data),
        p.compact(),
    );
    Ok(json_text(body))
}

async fn data_delete(
    access: StoreAccess,
    Path((_, ts)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let ts = parse_ts("timestamp", &ts)?;
    let s = access.store.clone();
    tokio::task::spawn_blocking(move || s.delete_by_time(ts))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(json!({ "message": "object deleted" })))
}

/// The answer to one inserted object. A struct rather than a `json!`
/// value: building and dropping a map per object was most of the cost of
/// an NDJSON batch. The field order is the original's.
#[derive(Serialize)]
struct Ack {
    timestamp: i64,
    block_num: u32,
    size: u32,
}

fn ack(h: &ObjectHandle) -> Ack {
    Ack {
        timestamp: h.timestamp,
        block_num: h.block_num,
        size: h.size,
    }
}

/// The result of one line of an NDJSON batch: an [`Ack`] and its line, or
/// its line and why it failed.
#[derive(Serialize)]
#[serde(untagged)]
enum LineResult {
    Inserted {
        timestamp: i64,
        block_num: u32,
        size: u32,
        line: usize,
    },
    Failed {
        line: usize,
        error: String,
    },
}

impl LineResult {
    fn line(&self) -> usize {
        match self {
            LineResult::Inserted { line, .. } | LineResult::Failed { line, .. } => *line,
        }
    }
}

/// The answer to an NDJSON batch.
#[derive(Serialize)]
struct BatchReply {
    inserted: u64,
    failed: u64,
    results: Vec<LineResult>,
}

async fn data_insert(
    access: StoreAccess,
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let store = access.store.clone();
    let dt = store.config().data_type;
    let mt = media_type(&headers);
    let max_future = state.config.max_future;
    if mt == "application/x-ndjson" {
        return insert_ndjson(&state, &store, &body, p.compact()).await;
    }
    if mt != content_type_of(dt) {
        state.metrics.rejected(Reason::ContentType);
        return Err(ApiError::bad_request(
            "data does not match store's data type",
        ));
    }
    let (ts, bytes) = match dt {
        DataType::Binary | DataType::Text => {
            if dt == DataType::Text && std::str::from_utf8(&body).is_err() {
                state.metrics.rejected(Reason::InvalidData);
                return Err(ApiError::bad_request("text is not valid UTF-8"));
            }
            let ts = match p.timestamp.as_deref().filter(|t| !t.is_empty()) {
                Some(t) => {
                    match parse_ts("timestamp", t).map_err(|e| e.reason(Reason::InvalidTimestamp)) {
                        Ok(0) => None,
                        Ok(t) => Some(t),
                        Err(e) => return Err(e),
                    }
                }
                None => None,
            };
            let ts =
                check_horizon(ts, max_future).inspect_err(|e| state.metrics.rejected(e.reason))?;
            (ts, body.to_vec())
        }
        DataType::Json | DataType::Schema => {
            let w: Wrapper<'_> = serde_json::from_slice(&body).map_err(|e| {
                state.metrics.rejected(Reason::InvalidJson);
                ApiError::bad_request(format!("invalid JSON: {e}"))
            })?;
            encode_item(&store, &w, p.compact(), max_future)
                .inspect_err(|e| state.metrics.rejected(e.reason))?
        }
    };
    let n = bytes.len();
    let r = blocking(&store, move |s| match ts {
        Some(t) => s.insert(t, &bytes),
        None => s.insert_now(&bytes),
    })
    .await;
    match r {
        Ok(h) => {
            state.metrics.inserted(1, n as u64);
            Ok((StatusCode::CREATED, Json(ack(&h))).into_response())
        }
        Err(e) => {
            state.metrics.rejected(e.reason);
            Err(e)
        }
    }
}

async fn insert_ndjson(
    state: &AppState,
    store: &Arc<Store>,
    body: &[u8],
    compact: bool,
) -> ApiResult<Response> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("NDJSON body is not UTF-8"))?;
    let mut results: Vec<LineResult> = Vec::new();
    let mut items: Vec<(usize, Option<i64>, Vec<u8>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str::<Wrapper<'_>>(line)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
            .and_then(|w| encode_item(store, &w, compact, state.config.max_future));
        match item {
            Ok((ts, b)) => items.push((line_no, ts, b)),
            Err(e) => {
                state.metrics.rejected(e.reason);
                results.push(LineResult::Failed {
                    line: line_no,
                    error: e.message,
                });
            }
        }
    }
    let lines: Vec<usize> = items.iter().map(|(l, _, _)| *l).collect();
    let bytes: u64 = items.iter().map(|(_, _, b)| b.len() as u64).sum();
    let s = store.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        s.insert_batch(items.iter().map(|(_, t, b)| (*t, b.as_slice())))
    })
    .await
    .map_err(ApiError::internal)?;
    let mut ok = 0u64;
    for (line_no, r) in lines.into_iter().zip(outcome) {
        match r {
            Ok(h) => {
                ok += 1;
                results.push(LineResult::Inserted {
                    timestamp: h.timestamp,
                    block_num: h.block_num,
                    size: h.size,
                    line: line_no,
                });
            }
            Err(e) => {
                let e = ApiError::from(e);
                state.metrics.rejected(e.reason);
                results.push(LineResult::Failed {
                    line: line_no,
                    error: e.message,
                });
            }
        }
    }
    state.metrics.inserted(ok, bytes);
    results.sort_by_key(LineResult::line);
    let failed = results.len() as u64 - ok;
    Ok(Json(BatchReply {
        inserted: ok,
        failed,
        results,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed answers serialize to exactly the bytes of the `json!`
    /// values they replaced (field order, number forms).
    #[test]
    fn typed_answers_keep_their_bytes() {
        let h = ObjectHandle {
            timestamp: i64::MAX,
            block_num: u32::MAX,
            offset: 32,
            size: 29,
            span_count: 1,
        };
        let old_ack = json!({ "timestamp": h.timestamp, "block_num": h.block_num, "size": h.size });
        assert_eq!(
            serde_json::to_string(&ack(&h)).unwrap(),
            old_ack.to_string()
        );
        let mut old_ok = old_ack.clone();
        old_ok["line"] = json!(3usize);
        let old_failed = json!({ "line": 2usize, "error": "invalid JSON: \"x\"\n" });
        let old = json!({ "inserted": 1u64, "failed": 1u64, "results": [old_failed, old_ok] });
        let new = BatchReply {
            inserted: 1,
            failed: 1,
            results: vec![
                LineResult::Failed {
                    line: 2,
                    error: "invalid JSON: \"x\"\n".into(),
                },
                LineResult::Inserted {
                    timestamp: h.timestamp,
                    block_num: h.block_num,
                    size: h.size,
                    line: 3,
                },
            ],
        };
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
    }

    fn agg_store(n: i64) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = store::Config {
            num_blocks: 256,
            data_block_size: 4096,
            index_block_size: 4096,
            data_type: DataType::Json,
            ..store::Config::default()
        };
        let s = Store::create(dir.path(), "a", cfg).unwrap();
        for t in 1..=n {
            s.insert(t * 1_000_000, format!("{{\"v\":{t}}}").as_bytes())
                .unwrap();
        }
        (dir, Arc::new(s))
    }

    fn scan(spec: &str, limit: usize, max_scan: u64, newest_first: bool) -> AggScan {
        AggScan {
            spec: Arc::new(
                Spec::parse(Some(spec), None, Some("sum,count"))
                    .unwrap()
                    .unwrap(),
            ),
            start: i64::MIN,
            end: i64::MAX,
            lo: i64::MIN,
            hi: i64::MAX,
            filter: None,
            limit,
            newest_first,
            max_scan,
        }
    }

    /// Review finding 2: the scan is cut into batches (of AGG_BATCH
    /// readings at most) that resume past the last one read, and counts
    /// every reading towards the cap of one request.
    #[test]
    fn aggregated_scans_resume_across_batches_and_stop_at_the_cap() {
        let n = 3 * AGG_BATCH as i64 + 7;
        let (_d, s) = agg_store(n);
        // One window over everything: every reading, once, across batches.
        let body = agg_body(&s, scan("1h", 10, MAX_AGG_SCAN, false)).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["objects"][0]["count"], json!(n));
        assert_eq!(v["objects"][0]["data"]["v_sum"], json!(n * (n + 1) / 2));
        // 1 s windows (1000 readings each), oldest first and newest first.
        let v: Value =
            serde_json::from_str(&agg_body(&s, scan("1s", 100, MAX_AGG_SCAN, false)).unwrap())
                .unwrap();
        assert_eq!(v["count"], json!(n / 1000 + 1));
        let (st, end) = newest_windows_bounds(
            &s,
            &Spec::parse(Some("1s"), None, None).unwrap().unwrap(),
            i64::MIN,
            i64::MAX,
            None,
            2,
        )
        .unwrap();
        assert_eq!((st, end), (11_000_000_000, n * 1_000_000));
        // The cap: a 400 naming it, not a truncated answer.
        let e = agg_body(&s, scan("1h", 10, n as u64 - 1, false)).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            format!(
                "aggregation reads at most {} readings per request: narrow the time range",
                n - 1
            )
        );
        assert!(agg_body(&s, scan("1h", 10, n as u64, true)).is_ok());
    }
}
