//! The inbound WebSocket streams.
//!
//! `GET /api/stores/:store/ws/read?from=&format=&filter=&filter_ignore_case=`
//! sends the stored objects from `from` on, then `caught_up`, then every
//! object as it is written. The writer wakes the reader (no polling); the
//! reader reads from the store in batches of [`follow::BATCH`], so a slow
//! reader costs one batch of memory, and when the ring overwrites objects
//! it has not read it gets a `gap` frame and goes on from the oldest.
//!
//! With `agg_window` (and `agg_fields`, `agg_default`: the REST parameters
//! and messages, checked before the upgrade) the objects go through one
//! [`WindowFrames`], backlog and live alike, and the stream sends each
//! window when it closes (a reading at or after its end arrives) instead
//! of the objects: `{"type":"data","timestamp":END,"count","partial","data"}`.
//! A gap sends the open window at once, partial; at shutdown the open
//! window goes out, partial, before the 1001 close. With `format=compact`
//! on a schema store a `schema` frame describing the windows' outputs
//! comes first ([`crate::codec::agg::Compact`]).
//!
//! `GET /api/stores/:store/ws/write?format=` stores each
//! `{"timestamp"?, "data"}` message and answers `ack` or `error` per
//! message, in order; a bad message never closes the connection, except
//! one over `server.max_body_bytes`: its `error` is followed by a close
//! frame with code 1009, since the rest of it is still on the wire, unread.
//! Messages that arrive together are stored as one batch (one commit).
//!
//! Both authenticate before the upgrade (401 JSON, as the REST API; 429
//! for a client that failed too often; 503 with `Retry-After` while the
//! store is busy, see [`crate::registry`]), ping the client every
//! `server.ws_ping_seconds` (30 s) and drop it after 2.5 times that
//! without a sign of life, and close with 1001 when the server shuts down.
//!
//! A read stream's signs of life: any frame from the client, read all
//! along by a task of its own (backlog or not), and any send of ours that
//! had to wait for the client and then went through. While it sends a
//! backlog it also pings every [`PING_EVERY_BYTES`]: whatever the socket
//! buffers hold, a client working through them meets pings and answers
//! them, so a slow reader is never taken for a silent one.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::Instant;

use crate::auth::{url_pairs, StoreAccess};
use crate::codec::agg::{Spec, SpecError};
use crate::codec::frames::{
    ack_frame, data_frame, error_frame, first_covered, gap_frame, ingest, parse_from,
    store_error_message, WindowFrames, CAUGHT_UP,
};
use crate::error::ApiError;
use crate::follow::{self, Follower, Start};
use crate::liveness::{Due, Rule, Tracker};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::{DataType, Filter, Store};

/// A client's pings and silence deadline, from now: a ping every
/// `server.ws_ping_seconds`, dropped after 2.5 times that without a sign
/// of life.
pub fn liveness(state: &AppState) -> Tracker {
    let every = Duration::from_secs(state.config.ws_ping_seconds.max(1) as u64);
    Tracker::new(Instant::now(), every, Rule::Silence(every * 5 / 2))
}

fn log_silent(live: &Tracker) {
    tracing::info!(
        "dropping a WebSocket client silent for {:?}",
        live.patience()
    );
}

/// Most messages of the write stream stored as one batch.
const WRITE_BATCH: usize = 256;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/stores/{store}/ws/read", get(ws_read))
        .route("/api/stores/{store}/ws/write", get(ws_write))
}

/// Query parameters of both streams.
#[derive(Debug, Default, Clone)]
pub struct StreamParams {
    pub from: Option<String>,
    pub compact: bool,
    pub filter: Option<Filter>,
    /// `agg_window`, `agg_fields`, `agg_default` as given (read stream).
    pub agg: [Option<String>; 3],
}

impl StreamParams {
    pub fn parse(q: Option<&str>) -> StreamParams {
        let (mut from, mut format, mut filter, mut ic) = (None, None, None, false);
        let mut agg: [Option<String>; 3] = Default::default();
        for (k, v) in url_pairs(q.unwrap_or("")) {
            match k.as_str() {
                "agg_window" => agg[0] = Some(v),
                "agg_fields" => agg[1] = Some(v),
                "agg_default" => agg[2] = Some(v),
                "from" => from = Some(v),
                "format" => format = Some(v),
                "filter" => filter = Some(v),
                "filter_ignore_case" => ic = v == "true" || v == "1",
                _ => {}
            }
        }
        StreamParams {
            from,
            compact: format.as_deref() == Some("compact"),
            filter: filter
                .filter(|f| !f.is_empty())
                .map(|f| Filter::new(&f, ic)),
            agg,
        }
    }

    /// The aggregation asked for, checked against a store of type `dt`
    /// as REST checks it (the same messages).
    pub fn agg_spec(&self, dt: DataType) -> Result<Option<Spec>, SpecError> {
        let [w, f, d] = &self.agg;
        Spec::parse_for(dt, w.as_deref(), f.as_deref(), d.as_deref())
    }
}

/// Counts a connected client for `/metrics` while alive.
struct ClientGauge(Arc<Metrics>);

impl ClientGauge {
    fn new(m: &Arc<Metrics>) -> ClientGauge {
        m.ws_clients.fetch_add(1, Ordering::Relaxed);
        ClientGauge(m.clone())
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        self.0.ws_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn limits(ws: WebSocketUpgrade, state: &AppState) -> WebSocketUpgrade {
    let max = state.config.max_body_bytes;
    ws.max_message_size(max).max_frame_size(max)
}

async fn ws_read(
    access: StoreAccess,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let params = StreamParams::parse(q.as_deref());
    // A bad `from` is the client's mistake: 400, before the upgrade.
    let start = parse_from(params.from.as_deref()).map_err(ApiError::bad_request)?;
    // So are bad aggregation parameters (REST's messages).
    let spec = params
        .agg_spec(access.store.config().data_type)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .map(Arc::new);
    Ok(limits(ws, &state).on_upgrade(move |socket| async move {
        let _gauge = ClientGauge::new(&state.metrics);
        read_session(
            socket,
            state,
            access.name,
            access.store,
            params,
            start,
            spec,
        )
        .await;
    }))
}

async fn ws_write(
    access: StoreAccess,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let params = StreamParams::parse(q.as_deref());
    limits(ws, &state).on_upgrade(move |socket| async move {
        let _gauge = ClientGauge::new(&state.metrics);
        write_session(socket, state, access.store, params.compact).await;
    })
}

async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    socket.send(Message::Text(text.into())).await.is_ok()
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Sends an error frame and closes.
async fn fail(mut socket: WebSocket, message: &str) {
    let _ = send_text(&mut socket, error_frame(message)).await;
    let _ = socket
        .send(close_frame(axum::extract::ws::close_code::ERROR, ""))
        .await;
}

async fn going_away(socket: &mut (impl SinkExt<Message> + Unpin)) {
    let _ = socket
        .send(close_frame(
            axum::extract::ws::close_code::AWAY,
            "server shutting down",
        ))
        .await;
}

/// What woke an idle stream.
enum Wake {
    /// The store was written to (or closed).
    Written,
    /// The client sent a frame (to be handled by the caller).
    Frame(Message),
    /// The client left, went silent or the server stops.
    End,
    /// The server stops: the read stream sends what it holds, then 1001.
    Shutdown,
}

/// A read stream's liveness, shared by its sending half and the task that
/// reads the client's frames. Signs of life: a frame from the client (a
/// pong, anything), or a send of ours that had to wait for it and then
/// went through (it took bytes off a full connection). The lock is never
/// held across an await.
struct Shared(Mutex<Tracker>);

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn touch(&self) {
        self.with(|t| t.heard(Instant::now()));
    }

    /// When the client counts as gone if nothing happens before.
    fn deadline(&self) -> Instant {
        // A read stream's rule is silence, which always has a deadline;
        // the fallback only wakes us for nothing.
        self.with(|t| t.dead_at().unwrap_or_else(|| t.next_wake()))
    }
}

/// Reads the read stream's client frames for as long as it lasts: each
/// is a sign of life (tungstenite answers pings by itself on the way);
/// sets `gone` when the client closes or the connection fails.
async fn listen(
    mut rx: futures_util::stream::SplitStream<WebSocket>,
    heard: Arc<Shared>,
    gone: tokio::sync::watch::Sender<bool>,
) {
    loop {
        match rx.next().await {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => heard.touch(),
        }
    }
    let _ = gone.send(true);
}

/// Bytes of data frames between two pings of a read stream sending a
/// backlog: whatever the socket buffers hold, a client reading them meets
/// a ping at least this often, and its pongs show it alive.
pub const PING_EVERY_BYTES: usize = 64 * 1024;

/// The sending half of a read stream, with what it needs to tell a slow
/// client from a dead one while a send waits.
struct Out {
    tx: futures_util::stream::SplitSink<WebSocket, Message>,
    live: Arc<Shared>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    gone: tokio::sync::watch::Receiver<bool>,
}

impl Out {
    /// Feeds `m`, after a ping if one is due (by time or by bytes),
    /// waiting as long as the client shows life. False: the stream is over.
    async fn feed(&mut self, m: Message) -> bool {
        let due = self.live.with(|t| t.ping_before_data(Instant::now()));
        if due && !self.ping().await {
            return false;
        }
        if let Message::Text(t) = &m {
            self.live.with(|l| l.data_sent(t.len()));
        }
        self.guarded(Step::Feed(m)).await
    }

    async fn ping(&mut self) -> bool {
        self.live.with(|t| t.pinged(Instant::now()));
        self.guarded(Step::Feed(Message::Ping(axum::body::Bytes::new())))
            .await
    }

    async fn flush(&mut self) -> bool {
        self.guarded(Step::Flush).await
    }

    /// Runs one send step to its end, unless the client leaves, stays
    /// silent past its deadline meanwhile, or the server shuts down.
    async fn guarded(&mut self, step: Step) -> bool {
        let Out {
            tx,
            live,
            shutdown,
            gone,
            ..
        } = self;
        let sending = async {
            match step {
                Step::Feed(m) => tx.feed(m).await,
                Step::Flush => tx.flush().await,
            }
        };
        tokio::pin!(sending);
        // A send that completes at once proves nothing (the socket's
        // buffers took it); one that had to wait proves the client read.
        let waited = std::sync::atomic::AtomicBool::new(false);
        loop {
            let step = std::future::poll_fn(|cx| {
                let p = sending.as_mut().poll(cx);
                if p.is_pending() {
                    waited.store(true, Ordering::Relaxed);
                }
                p
            });
            tokio::select! {
                r = step => {
                    if r.is_err() {
                        return false;
                    }
                    if waited.load(Ordering::Relaxed) {
                        live.touch();
                    }
                    return true;
                }
                _ = tokio::time::sleep_until(live.deadline()) => {
                    if live.with(|t| t.due(Instant::now())) == Due::Dead {
                        live.with(|t| log_silent(t));
                        return false;
                    }
                }
                _ = gone.wait_for(|g| *g) => return false,
                _ = shutdown.wait_for(|s| *s) => return false,
            }
        }
    }

    /// The server stops: sends `last` (the rest of a batch, the open
    /// window cut short), each within a bound, then the 1001 close.
    async fn stop(&mut self, last: Vec<String>) {
        for f in last {
            let feed = self.tx.feed(Message::Text(f.into()));
            if !matches!(tokio::time::timeout(STOP_SEND, feed).await, Ok(Ok(()))) {
                return;
            }
        }
        let _ = tokio::time::timeout(STOP_SEND, going_away(&mut self.tx)).await;
    }

    /// Waits for the store to be written to, pinging the client and
    /// watching for its silence meanwhile.
    async fn idle(&mut self, written: &mut tokio::sync::watch::Receiver<u64>) -> Wake {
        loop {
            if *self.shutdown.borrow() {
                return Wake::Shutdown;
            }
            let wake = self.live.with(|t| t.next_wake());
            let due = tokio::select! {
                // Err: the store was closed for good (deleted).
                _ = written.changed() => return Wake::Written,
                _ = tokio::time::sleep_until(wake) => self.live.with(|t| t.due(Instant::now())),
                _ = self.gone.wait_for(|g| *g) => return Wake::End,
                _ = self.shutdown.changed() => Due::Nothing,
            };
            match due {
                Due::Dead => {
                    self.live.with(|t| log_silent(t));
                    return Wake::End;
                }
                Due::Ping if !self.ping().await || !self.flush().await => return Wake::End,
                Due::Ping | Due::Nothing => {}
            }
        }
    }
}

/// How long a stopping read stream waits for each of its last frames.
const STOP_SEND: Duration = Duration::from_secs(2);

/// One sending step of [`Out::guarded`].
enum Step {
    Feed(Message),
    Flush,
}

/// Stops the listening task when the stream ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_session(
    socket: WebSocket,
    state: AppState,
    name: String,
    store: Arc<Store>,
    params: StreamParams,
    start: Start,
    spec: Option<Arc<Spec>>,
) {
    // Subscribe before the first read: a write in between wakes us.
    let Some(mut written) = state.stores.watch(&name) else {
        return fail(socket, "store not found").await;
    };
    written.borrow_and_update();
    let mut follower = match Follower::new(store.clone(), start, params.filter.clone()) {
        Ok(f) => f,
        Err(e) => return fail(socket, &store_error_message(e)).await,
    };
    let mut windows = spec.map(|spec| {
        let lo = first_covered(start, follower.cursor());
        WindowFrames::new(spec, &store, params.compact, lo)
    });
    // Client frames are read all along, backlog or not, so that a client
    // that answers pings is never taken for a silent one.
    let (tx, rx) = socket.split();
    let live = Arc::new(Shared(Mutex::new(
        liveness(&state).ping_every_bytes(PING_EVERY_BYTES),
    )));
    let (gone_tx, gone) = tokio::sync::watch::channel(false);
    let _listener = AbortOnDrop(tokio::spawn(listen(rx, live.clone(), gone_tx)));
    let mut out = Out {
        tx,
        live,
        shutdown: state.shutdown.subscribe(),
        gone,
    };
    let mut caught_up_sent = false;
    let mut pending: Vec<String> = Vec::new();
    pending.extend(windows.as_ref().and_then(WindowFrames::schema_frame));
    loop {
        written.borrow_and_update();
        let mut failed = None;
        let batch = match follower.next_batch(follow::BATCH) {
            Ok(b) => Some(b),
            Err(e) => {
                failed = Some(store_error_message(e));
                None
            }
        };
        let mut frames = std::mem::take(&mut pending);
        if let Some(batch) = &batch {
            if let Some(g) = &batch.gap {
                // A gap resets the open window: it lost readings, so it
                // goes out now, partial, and the window of the first
                // reading after the gap is partial if it began before.
                if let Some(w) = &mut windows {
                    match w.gap(g) {
                        Ok(cut) => frames.extend(cut.into_iter().flat_map(|w| w.frames)),
                        Err(e) => failed = Some(e.to_string()),
                    }
                }
                frames.push(gap_frame(g));
            }
            for o in &batch.objects {
                match &mut windows {
                    None => frames.push(data_frame(&store, o, params.compact)),
                    Some(w) if failed.is_none() => match w.push(&store, o) {
                        Ok(closed) => frames.extend(closed.into_iter().flat_map(|w| w.frames)),
                        Err(e) => failed = Some(e.to_string()),
                    },
                    Some(_) => {}
                }
            }
            if batch.caught_up && !caught_up_sent && failed.is_none() {
                frames.push(CAUGHT_UP.to_string());
                caught_up_sent = true;
            }
        }
        if let Some(message) = failed {
            frames.push(error_frame(&message));
            for f in frames {
                if !out.feed(Message::Text(f.into())).await {
                    return;
                }
            }
            let _ = out
                .feed(close_frame(axum::extract::ws::close_code::ERROR, ""))
                .await;
            let _ = out.flush().await;
            return;
        }
        let mut frames = frames.into_iter();
        while let Some(f) = frames.next() {
            if !out.feed(Message::Text(f.clone().into())).await {
                if *out.shutdown.borrow() {
                    let mut rest: Vec<String> = std::iter::once(f).chain(frames).collect();
                    return stop(&mut out, windows.as_mut(), &mut rest).await;
                }
                return;
            }
        }
        if !out.flush().await {
            if *out.shutdown.borrow() {
                return stop(&mut out, windows.as_mut(), &mut Vec::new()).await;
            }
            return;
        }
        if *out.shutdown.borrow() {
            return stop(&mut out, windows.as_mut(), &mut Vec::new()).await;
        }
        let caught_up = batch.is_some_and(|b| b.caught_up);
        if !caught_up {
            continue;
        }
        match out.idle(&mut written).await {
            Wake::End => return,
            Wake::Shutdown => return stop(&mut out, windows.as_mut(), &mut Vec::new()).await,
            Wake::Written | Wake::Frame(_) => {}
        }
    }
}

/// A read stream's end at shutdown: `rest` (frames not yet sent), then
/// the open window, flagged partial, then the 1001 close.
async fn stop(out: &mut Out, windows: Option<&mut WindowFrames>, rest: &mut Vec<String>) {
    if let Some(w) = windows {
        // Nothing to send instead of a window the field cap refused.
        if let Ok(Some(w)) = w.cut() {
            rest.extend(w.frames);
        }
    }
    out.stop(std::mem::take(rest)).await;
}

/// Waits for a client frame, the next ping or the silence deadline (pings,
/// or ends a silent client) or shutdown.
async fn wait(
    socket: &mut WebSocket,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    live: &mut Tracker,
    max_message: usize,
) -> Wake {
    if *shutdown.borrow() {
        going_away(socket).await;
        return Wake::End;
    }
    tokio::select! {
        m = socket.recv() => match m {
            Some(Ok(Message::Close(_))) | None => Wake::End,
            Some(Err(e)) => {
                if too_large(&e) {
                    refuse_too_large(socket, max_message).await;
                }
                Wake::End
            }
            Some(Ok(m)) => {
                live.heard(Instant::now());
                Wake::Frame(m)
            }
        },
        _ = tokio::time::sleep_until(live.next_wake()) => match live.due(Instant::now()) {
            Due::Dead => {
                log_silent(live);
                Wake::End
            }
            Due::Ping => {
                if socket.send(Message::Ping(axum::body::Bytes::new())).await.is_err() {
                    return Wake::End;
                }
                live.pinged(Instant::now());
                Wake::Written
            }
            Due::Nothing => Wake::Written,
        },
        _ = shutdown.changed() => {
            going_away(socket).await;
            Wake::End
        }
    }
}

/// True if the client's message was over the size limit.
fn too_large(e: &axum::Error) -> bool {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = e.source();
    matches!(
        inner.and_then(|s| s.downcast_ref::<WsError>()),
        Some(WsError::Capacity(_))
    )
}

/// Answers a message over the limit: an `error` message, then a close
/// frame with code 1009 (the rest of the message is still on the wire,
/// unread, so the stream cannot go on).
async fn refuse_too_large(socket: &mut WebSocket, max: usize) {
    let message = format!("message too large: the limit is {max} bytes");
    let _ = socket
        .feed(Message::Text(error_frame(&message).into()))
        .await;
    let _ = socket
        .send(close_frame(
            axum::extract::ws::close_code::SIZE,
            "message too large",
        ))
        .await;
}

/// The payload of a data message, or `None` for control frames.
fn payload(m: Message) -> Option<Vec<u8>> {
    match m {
        Message::Text(t) => Some(t.as_bytes().to_vec()),
        Message::Binary(b) => Some(b.to_vec()),
        _ => None,
    }
}

async fn write_session(mut socket: WebSocket, state: AppState, store: Arc<Store>, compact: bool) {
    let mut shutdown = state.shutdown.subscribe();
    let mut live = liveness(&state);
    let max_message = state.config.max_body_bytes;
    loop {
        let first = match wait(&mut socket, &mut shutdown, &mut live, max_message).await {
            Wake::Frame(m) => m,
            Wake::Written => continue,
            Wake::End | Wake::Shutdown => return,
        };
        let Some(first) = payload(first) else {
            continue;
        };
        // Take every message already received, up to a batch.
        let mut messages = vec![first];
        let mut closing = false;
        let mut oversized = false;
        while messages.len() < WRITE_BATCH {
            match socket.next().now_or_never() {
                Some(Some(Ok(Message::Close(_)))) | Some(None) => {
                    closing = true;
                    break;
                }
                Some(Some(Err(e))) => {
                    oversized = too_large(&e);
                    closing = true;
                    break;
                }
                Some(Some(Ok(m))) => {
                    if let Some(p) = payload(m) {
                        messages.push(p);
                    }
                }
                None => break,
            }
        }
        let results = ingest(
            &store,
            &state.metrics,
            messages,
            compact,
            state.config.max_future,
        )
        .await;
        for r in results {
            let frame = match r {
                Ok(h) => ack_frame(&h),
                Err(e) => error_frame(&e),
            };
            if socket.feed(Message::Text(frame.into())).await.is_err() {
                return;
            }
        }
        if oversized {
            refuse_too_large(&mut socket, max_message).await;
            return;
        }
        if socket.flush().await.is_err() || closing {
            return;
        }
    }
}
