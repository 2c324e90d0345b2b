//! The inbound WebSocket streams.
//!
//! `GET /api/stores/:store/ws/read?from=&format=&filter=&filter_ignore_case=`
//! sends the stored objects from `from` on, then `caught_up`, then every
//! object as it is written. The writer wakes the reader (no polling); the
//! reader reads from the store in batches of [`follow::BATCH`], so a slow
//! reader costs one batch of memory, and when the ring overwrites objects
//! it has not read it gets a `gap` frame and goes on from the oldest.
//!
//! `GET /api/stores/:store/ws/write?format=` stores each
//! `{"timestamp"?, "data"}` message and answers `ack` or `error` per
//! message, in order; a bad message never closes the connection. Messages
//! that arrive together are stored as one batch (one commit).
//!
//! Both authenticate before the upgrade (401 JSON, as the REST API; 503
//! with `Retry-After` while the store is busy, see [`crate::registry`]), ping
//! the client every `server.ws_ping_seconds` (30 s) and drop it after 2.5
//! times that without a frame from it, and close with 1001 when the server
//! shuts down.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::Instant;

use super::follow::{self, Follower};
use super::{ack_frame, data_frame, error_frame, gap_frame, ingest, parse_from, CAUGHT_UP};
use crate::api::auth::{url_pairs, StoreAccess};
use crate::api::metrics::Metrics;
use crate::api::AppState;
use crate::store::{Filter, Store};

/// When to ping a client and when to give up on a silent one.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub ping_every: Duration,
    pub dead_after: Duration,
}

impl Liveness {
    pub fn of(state: &AppState) -> Liveness {
        let every = Duration::from_secs(state.config.ws_ping_seconds.max(1) as u64);
        Liveness {
            ping_every: every,
            dead_after: every * 5 / 2,
        }
    }

    fn timer(&self) -> tokio::time::Interval {
        tokio::time::interval_at(Instant::now() + self.ping_every, self.ping_every)
    }
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
}

impl StreamParams {
    pub fn parse(q: Option<&str>) -> StreamParams {
        let (mut from, mut format, mut filter, mut ic) = (None, None, None, false);
        for (k, v) in url_pairs(q.unwrap_or("")) {
            match k.as_str() {
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
        }
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
) -> Response {
    let params = StreamParams::parse(q.as_deref());
    limits(ws, &state).on_upgrade(move |socket| async move {
        let _gauge = ClientGauge::new(&state.metrics);
        read_session(socket, state, access.name, access.store, params).await;
    })
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

/// Sends an error frame and closes.
async fn fail(mut socket: WebSocket, message: &str) {
    let _ = send_text(&mut socket, error_frame(message)).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::ERROR,
            reason: "".into(),
        })))
        .await;
}

async fn going_away(socket: &mut WebSocket) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::AWAY,
            reason: "server shutting down".into(),
        })))
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
}

async fn read_session(
    mut socket: WebSocket,
    state: AppState,
    name: String,
    store: Arc<Store>,
    params: StreamParams,
) {
    let start = match parse_from(params.from.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(socket, &e).await,
    };
    // Subscribe before the first read: a write in between wakes us.
    let Some(mut written) = state.stores.watch(&name) else {
        return fail(socket, "store not found").await;
    };
    written.borrow_and_update();
    let mut follower = match Follower::new(store.clone(), start, params.filter.clone()) {
        Ok(f) => f,
        Err(e) => return fail(socket, &super::store_error_message(e)).await,
    };
    let mut shutdown = state.shutdown.subscribe();
    let live = Liveness::of(&state);
    let mut last_heard = Instant::now();
    let mut ping = live.timer();
    let mut caught_up_sent = false;
    loop {
        written.borrow_and_update();
        let batch = match follower.next_batch(follow::BATCH) {
            Ok(b) => b,
            Err(e) => return fail(socket, &super::store_error_message(e)).await,
        };
        let mut frames = Vec::with_capacity(batch.objects.len() + 2);
        if let Some(g) = &batch.gap {
            frames.push(gap_frame(g));
        }
        for o in &batch.objects {
            frames.push(data_frame(&store, o, params.compact));
        }
        if batch.caught_up && !caught_up_sent {
            frames.push(CAUGHT_UP.to_string());
            caught_up_sent = true;
        }
        if !frames.is_empty() {
            for f in frames {
                if socket.feed(Message::Text(f.into())).await.is_err() {
                    return;
                }
            }
            if socket.flush().await.is_err() {
                return;
            }
        }
        if !batch.caught_up {
            continue;
        }
        // Wait for the next write; frames from the client only keep it
        // alive (the read stream takes no commands).
        loop {
            match wait(
                &mut socket,
                &mut written,
                &mut shutdown,
                &mut ping,
                &mut last_heard,
                live.dead_after,
            )
            .await
            {
                Wake::Written => break,
                Wake::Frame(_) => continue,
                Wake::End => return,
            }
        }
    }
}

/// Waits for a write to the store, a client frame, the ping timer (pings,
/// or ends a silent client) or shutdown.
async fn wait(
    socket: &mut WebSocket,
    written: &mut tokio::sync::watch::Receiver<u64>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ping: &mut tokio::time::Interval,
    last_heard: &mut Instant,
    dead_after: Duration,
) -> Wake {
    if *shutdown.borrow() {
        going_away(socket).await;
        return Wake::End;
    }
    tokio::select! {
        r = written.changed() => match r {
            Ok(()) => Wake::Written,
            // The store was closed for good (deleted).
            Err(_) => Wake::Written,
        },
        m = socket.recv() => match m {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Wake::End,
            Some(Ok(m)) => {
                *last_heard = Instant::now();
                Wake::Frame(m)
            }
        },
        _ = ping.tick() => {
            if last_heard.elapsed() > dead_after {
                tracing::info!("dropping a WebSocket client silent for {:?}", dead_after);
                return Wake::End;
            }
            if socket.send(Message::Ping(axum::body::Bytes::new())).await.is_err() {
                return Wake::End;
            }
            Wake::Frame(Message::Pong(axum::body::Bytes::new()))
        }
        _ = shutdown.changed() => {
            going_away(socket).await;
            Wake::End
        }
    }
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
    let live = Liveness::of(&state);
    let mut last_heard = Instant::now();
    let mut ping = live.timer();
    // A write stream never wakes on writes: a receiver that never changes.
    let (_never_tx, mut never) = tokio::sync::watch::channel(0u64);
    loop {
        let first = match wait(
            &mut socket,
            &mut never,
            &mut shutdown,
            &mut ping,
            &mut last_heard,
            live.dead_after,
        )
        .await
        {
            Wake::Frame(m) => m,
            Wake::Written => continue,
            Wake::End => return,
        };
        let Some(first) = payload(first) else {
            continue;
        };
        // Take every message already received, up to a batch.
        let mut messages = vec![first];
        let mut closing = false;
        while messages.len() < WRITE_BATCH {
            match socket.next().now_or_never() {
                Some(Some(Ok(Message::Close(_)))) | Some(None) | Some(Some(Err(_))) => {
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
        let results = ingest(&store, &state.metrics, messages, compact).await;
        for r in results {
            let frame = match r {
                Ok(h) => ack_frame(&h),
                Err(e) => error_frame(&e),
            };
            if socket.feed(Message::Text(frame.into())).await.is_err() {
                return;
            }
        }
        if socket.flush().await.is_err() || closing {
            return;
        }
    }
}
