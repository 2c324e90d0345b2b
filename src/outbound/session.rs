//! One session of an outbound connection: a dial and, if it succeeds, the
//! push or pull exchange until the peer goes, the connection is stopped or
//! the store closes. A session pings its peer every
//! [`Timing::ping_every`] and drops it when no frame (pong or other)
//! arrives within [`Timing::pong_timeout`] of a ping.
//!
//! Push sends what the inbound read stream sends: the same `data` frames,
//! from a [`Follower`], woken by the registry's write counter (no polling);
//! `caught_up` and `gap` frames are not sent (a remote tsstore `/ws/write`
//! would store them as bad messages), but a gap is counted as an error.
//!
//! Resume cursor (`last_timestamp`, persisted): the timestamp of the last
//! object the remote *received*. A remote that answers with
//! `{"type":"ack","timestamp":T}` frames (another tsstore's `/ws/write`)
//! received everything up to the highest acked `T`; once a remote has acked
//! anything, only acks advance the cursor (for the life of the process;
//! after a restart, until its first ack). For a remote that never acks,
//! "received" is "written and flushed to the socket". A session resumes
//! after the cursor: delivery is at least once, in timestamp order.
//!
//! With `agg_window` (and `agg_fields`, `agg_default`), push sends the
//! windows of the read stream instead ([`WindowFrames`]), each as it
//! closes; the cursor stays on raw readings: it moves to the newest
//! reading of the last window sent (or acked: an ack names a window's
//! end), never into the open window, so a new session (a reconnect, a
//! restart, `kill -9` included) reads the open window's readings again and
//! sends it whole. A stop while caught up sends the open window first,
//! partial, without moving the cursor.
//!
//! Pull stores every text or binary message as `/ws/write` does
//! ([`crate::stream::ingest`]) and answers `ack` or `error` per message; a
//! bad message counts as an error and never closes the connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::policy::{Policy, Refusal, ResolveError, Target, REFUSED};
use super::supervise::{stopped, Ended, Timing};
use super::tls::{ca_certificates, client_tls};
use super::{Conn, Mode, Spec, Status};
use crate::codec::frames::{ack_frame, data_frame, error_frame, ingest, Framed, WindowFrames};
use crate::follow::{self, Follower, Start};
use crate::liveness::{Due, Rule, Tracker};
use crate::metrics::Metrics;
use crate::redact;
use crate::registry::Registry;
use crate::store::{Filter, Store};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a connection's sessions share.
pub(super) struct Session {
    pub(super) name: String,
    pub(super) store: Arc<Store>,
    pub(super) stores: Arc<Registry>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) conn: Arc<Conn>,
    pub(super) timing: Timing,
    pub(super) policy: Arc<Policy>,
    /// `store.max_future`: the horizon of pulled timestamps.
    pub(super) max_future: std::time::Duration,
}

/// Why a dial did not connect.
enum DialError {
    /// The policy refused every address of the URL's host.
    Refused(Refusal),
    Failed(String),
}

/// Request headers a connection's `headers` may not set: those the dial
/// sets itself (`Host` from the URL, the WebSocket handshake's) and the
/// hop-by-hop ones.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-extensions",
];

/// True if a connection's `headers` may not set `name`.
pub fn reserved_header(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|r| name.eq_ignore_ascii_case(r))
}

/// The handshake request: the URL's, with the connection's headers (a
/// reserved one, from a file written before they were refused, is left
/// out).
fn request(spec: &Spec) -> Result<Request, String> {
    let mut req = spec
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (k, v) in spec.headers.iter().filter(|(k, _)| !reserved_header(k)) {
        let k = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
        let v = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
        req.headers_mut().insert(k, v);
    }
    Ok(req)
}

/// Connects to the first of `addrs` that answers.
async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

/// The windows of a push connection with `agg_window`.
struct PushWindows {
    frames: WindowFrames,
    /// Windows sent and not acknowledged, oldest first: their ends and
    /// newest readings (an acking remote acks a window's end). At most
    /// [`MAX_UNACKED`]; past it the oldest are forgotten (the cursor then
    /// waits for a later ack).
    unacked: VecDeque<(i64, i64)>,
}

/// Windows a push connection remembers as unacknowledged at most.
const MAX_UNACKED: usize = 4096;

/// How long a stopping push connection waits to send its open window.
const STOP_SEND: Duration = Duration::from_secs(1);

impl PushWindows {
    fn sent(&mut self, closed: &[(i64, i64)]) {
        for c in closed {
            if self.unacked.len() >= MAX_UNACKED {
                self.unacked.pop_front();
            }
            self.unacked.push_back(*c);
        }
    }

    /// The remote acked the window ending at `end`: the newest reading of
    /// the windows up to it.
    fn acked(&mut self, end: i64) -> Option<i64> {
        let mut to = None;
        while self.unacked.front().is_some_and(|(e, _)| *e <= end) {
            to = self.unacked.pop_front().map(|(_, last)| last);
        }
        to
    }
}

/// Adds a window's frames to `frames`, and its end and newest reading to
/// `closed`.
fn push_framed(w: Option<Framed>, frames: &mut Vec<String>, closed: &mut Vec<(i64, i64)>) {
    if let Some(w) = w {
        frames.extend(w.frames);
        closed.push((w.end, w.last));
    }
}

/// Why a connected session ended.
enum Exit {
    Stopped,
    /// The peer closed cleanly.
    Closed,
    Failed(String),
}

impl Session {
    /// One dial and, if it succeeds, one session.
    pub(super) async fn run(&self) -> Ended {
        let mut stop = self.conn.stop.subscribe();
        self.conn.set_status(Status::Connecting);
        let ws = tokio::select! {
            r = self.dial() => r,
            _ = stopped(&mut stop) => return Ended::Stopped,
        };
        let mut ws = match ws {
            Ok(ws) => ws,
            Err(DialError::Failed(e)) => {
                self.conn
                    .error(Some(Status::Error), format!("dial failed: {e}"));
                return Ended::DialFailed;
            }
            Err(DialError::Refused(why)) => {
                // The same text whatever is (or is not) there: no port
                // scanner. The reason is for the administrator's log.
                self.conn.fail(
                    Some(Status::Error),
                    format!("dial failed: {REFUSED}"),
                    Some(why),
                );
                return Ended::DialFailed;
            }
        };
        tracing::info!(connection = %self.conn.id(), url = %redact::url(&self.conn.spec.url), "outbound connection established");
        self.conn.set_status(Status::Connected);
        let since = Instant::now();
        let exit = match self.conn.spec.mode {
            Mode::Push => self.push(&mut ws, &mut stop).await,
            Mode::Pull => self.pull(&mut ws, &mut stop).await,
        };
        match exit {
            Exit::Stopped => {
                let close = ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }));
                let _ = tokio::time::timeout(Duration::from_millis(300), close).await;
                Ended::Stopped
            }
            Exit::Closed => {
                self.conn.set_status(Status::Disconnected);
                Ended::Dropped { since }
            }
            Exit::Failed(e) => {
                self.conn.error(Some(Status::Error), e);
                let _ = tokio::time::timeout(Duration::from_millis(300), ws.close(None)).await;
                Ended::Dropped { since }
            }
        }
    }

    /// Resolves the URL's host, keeps the addresses the policy lets this
    /// connection dial, connects to one of them and runs the handshake,
    /// all within the handshake timeout.
    async fn dial(&self) -> Result<Ws, DialError> {
        let t = self.timing.handshake_timeout;
        match tokio::time::timeout(t, self.dial_checked()).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Failed(format!(
                "handshake timed out after {t:?}"
            ))),
        }
    }

    async fn dial_checked(&self) -> Result<Ws, DialError> {
        let spec = &self.conn.spec;
        let target = Target::parse(&spec.url).map_err(DialError::Failed)?;
        let req = request(spec).map_err(DialError::Failed)?;
        let addrs = self
            .policy
            .resolve(spec.created_by, &target)
            .await
            .map_err(|e| match e {
                ResolveError::Refused(r) => DialError::Refused(r),
                ResolveError::Unresolved(m) => {
                    DialError::Failed(format!("cannot resolve host: {m}"))
                }
            })?;
        let connector = if target.tls {
            let extra = match &spec.ca_file {
                None => Vec::new(),
                Some(name) => {
                    let (dir, name) = (self.policy.ca_dir().to_path_buf(), name.clone());
                    tokio::task::spawn_blocking(move || ca_certificates(&dir, &name))
                        .await
                        .map_err(|e| DialError::Failed(e.to_string()))?
                        .map_err(|e| DialError::Failed(e.to_string()))?
                }
            };
            let cfg = client_tls(extra).map_err(DialError::Failed)?;
            Some(tokio_tungstenite::Connector::Rustls(cfg))
        } else {
            None
        };
        let tcp = connect_any(&addrs)
            .await
            .map_err(|e| DialError::Failed(format!("IO error: {e}")))?;
        let (ws, _) = tokio_tungstenite::client_async_tls_with_config(req, tcp, None, connector)
            .await
            .map_err(|e| DialError::Failed(e.to_string()))?;
        Ok(ws)
    }

    /// Where a push session starts: after the cursor, else after `from`,
    /// else the oldest.
    fn start(&self) -> Start {
        let last = self.conn.live().last_timestamp;
        if last > 0 {
            Start::After(last)
        } else if self.conn.spec.from > 0 {
            Start::After(self.conn.spec.from)
        } else {
            Start::Oldest
        }
    }

    async fn push(&self, ws: &mut Ws, stop: &mut watch::Receiver<bool>) -> Exit {
        let spec = &self.conn.spec;
        let compact = spec.format == "compact";
        let filter =
            (!spec.filter.is_empty()).then(|| Filter::new(&spec.filter, spec.filter_ignore_case));
        let agg = match spec.agg.spec(self.store.config().data_type) {
            Ok(a) => a,
            Err(e) => return Exit::Failed(e.to_string()),
        };
        // Subscribe before the first read: a write in between wakes us.
        let Some(mut written) = self.stores.watch(&self.name) else {
            return Exit::Failed("store is not open".into());
        };
        written.borrow_and_update();
        let mut follower = match Follower::new(self.store.clone(), self.start(), filter) {
            Ok(f) => f,
            Err(e) => return Exit::Failed(format!("reading the store: {e}")),
        };
        // Windows cover the readings from `from` on, whatever the cursor:
        // a session resuming after it re-reads the open window whole.
        let mut windows = agg.map(|a| {
            let lo = if spec.from > 0 {
                spec.from.saturating_add(1)
            } else {
                i64::MIN
            };
            PushWindows {
                frames: WindowFrames::new(Arc::new(a), &self.store, compact, lo),
                unacked: VecDeque::new(),
            }
        });
        let mut peer = Peer::new(&self.timing);
        if let Some(f) = windows.as_ref().and_then(|w| w.frames.schema_frame()) {
            let sent = tokio::select! {
                r = ws.send(Message::Text(f.into())) => r,
                _ = stopped(stop) => return Exit::Stopped,
            };
            if let Err(e) = sent {
                return Exit::Failed(format!("send failed: {e}"));
            }
        }
        loop {
            written.borrow_and_update();
            let batch = match follower.next_batch(follow::BATCH) {
                Ok(b) => b,
                Err(e) => return Exit::Failed(format!("reading the store: {e}")),
            };
            // What to send: data frames, or the windows the batch closed
            // (and their ends and newest readings, for the cursor).
            let mut frames: Vec<String> = Vec::new();
            let mut closed: Vec<(i64, i64)> = Vec::new();
            if let Some(g) = batch.gap {
                self.conn.error(
                    None,
                    format!(
                        "gap: {} objects with timestamps {}..={} were overwritten before they were sent",
                        g.lost, g.from, g.to
                    ),
                );
                if let Some(w) = &mut windows {
                    match w.frames.gap(&g) {
                        Ok(cut) => push_framed(cut, &mut frames, &mut closed),
                        Err(e) => return Exit::Failed(e.to_string()),
                    }
                }
            }
            let rules = self.conn.rules();
            for o in &batch.objects {
                match &mut windows {
                    None => frames.push(data_frame(&self.store, o, compact)),
                    Some(w) => match w.frames.push(&self.store, o) {
                        Ok(f) => push_framed(f, &mut frames, &mut closed),
                        Err(e) => return Exit::Failed(e.to_string()),
                    },
                }
                // Rules look at readings, not windows: the alerts a reading
                // fires follow it (or the windows it closed) at once.
                if let Some(r) = rules {
                    frames.extend(r.evaluate(&self.store, o.handle.timestamp, &o.data));
                }
            }
            let newest = match (&windows, batch.objects.last()) {
                (Some(_), _) => closed.last().map(|(_, last)| *last),
                (None, o) => o.map(|o| o.handle.timestamp),
            };
            if !frames.is_empty() {
                let n = match windows {
                    Some(_) => closed.len() as u64,
                    None => batch.objects.len() as u64,
                };
                let send = async {
                    for f in frames {
                        ws.feed(Message::Text(f.into())).await?;
                    }
                    ws.flush().await
                };
                let sent = tokio::select! {
                    r = send => r,
                    _ = stopped(stop) => return Exit::Stopped,
                };
                if let Err(e) = sent {
                    return Exit::Failed(format!("send failed: {e}"));
                }
                let acking = {
                    let mut l = self.conn.live();
                    l.sent += n;
                    l.acking
                };
                if let Some(w) = &mut windows {
                    w.sent(&closed);
                }
                match newest {
                    Some(t) if !acking => self.conn.advance(t),
                    _ => {}
                }
                // Take the replies already there, so that a peer blocked on
                // writing acks never stalls our sends.
                while let Some(m) = ws.next().now_or_never() {
                    if let Some(exit) = self.on_push_frame(&mut peer, windows.as_mut(), m) {
                        return exit;
                    }
                }
            }
            if !batch.caught_up {
                continue;
            }
            loop {
                let wake = peer.live.next_wake();
                tokio::select! {
                    r = written.changed() => {
                        if r.is_err() {
                            return Exit::Failed("store closed".into());
                        }
                        break;
                    }
                    m = ws.next() => {
                        if let Some(exit) = self.on_push_frame(&mut peer, windows.as_mut(), m) {
                            return exit;
                        }
                    }
                    _ = tokio::time::sleep_until(wake) => {
                        if let Err(e) = peer.at_wake(ws, &self.timing).await {
                            return Exit::Failed(e);
                        }
                    }
                    _ = stopped(stop) => {
                        // Stopping (shutdown, delete) while caught up: the
                        // open window goes out, partial; the cursor stays
                        // before its readings, so a restart sends it again
                        // whole.
                        if let Some(Ok(Some(cut))) = windows.as_mut().map(|w| w.frames.cut()) {
                            let send = async {
                                for f in cut.frames {
                                    ws.feed(Message::Text(f.into())).await?;
                                }
                                ws.flush().await
                            };
                            if let Ok(Ok(())) = tokio::time::timeout(STOP_SEND, send).await {
                                self.conn.live().sent += 1;
                            }
                        }
                        return Exit::Stopped;
                    }
                }
            }
        }
    }

    /// Handles a frame from a push peer: acks move the cursor (with
    /// windows, an ack of a window's end moves it to the window's newest
    /// reading).
    fn on_push_frame(
        &self,
        peer: &mut Peer,
        windows: Option<&mut PushWindows>,
        m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Option<Exit> {
        let m = match peer.heard(m) {
            Ok(m) => m?,
            Err(exit) => return Some(exit),
        };
        if let Message::Text(t) = m {
            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                match v["type"].as_str() {
                    Some("ack") => {
                        if let Some(ts) = v["timestamp"].as_i64() {
                            self.conn.live().acking = true;
                            let to = match windows {
                                None => Some(ts),
                                Some(w) => w.acked(ts),
                            };
                            if let Some(to) = to {
                                self.conn.advance(to);
                            }
                        }
                    }
                    Some("error") => {
                        let msg = v["message"].as_str().unwrap_or("").to_string();
                        self.conn.error(None, format!("remote error: {msg}"));
                    }
                    _ => {}
                }
            }
        }
        None
    }

    async fn pull(&self, ws: &mut Ws, stop: &mut watch::Receiver<bool>) -> Exit {
        let compact = self.conn.spec.format == "compact";
        let mut peer = Peer::new(&self.timing);
        loop {
            let wake = peer.live.next_wake();
            let first = tokio::select! {
                m = ws.next() => m,
                _ = tokio::time::sleep_until(wake) => {
                    if let Err(e) = peer.at_wake(ws, &self.timing).await {
                        return Exit::Failed(e);
                    }
                    continue;
                }
                _ = stopped(stop) => return Exit::Stopped,
            };
            let mut messages = Vec::new();
            let mut end = None;
            if take(&mut peer, first, &mut messages, &mut end) {
                while messages.len() < 256 {
                    match ws.next().now_or_never() {
                        Some(m) => {
                            if !take(&mut peer, m, &mut messages, &mut end) {
                                break;
                            }
                        }
                        None => break,
                    }
                }
            }
            if !messages.is_empty() {
                let n = messages.len() as u64;
                let results = ingest(
                    &self.store,
                    &self.metrics,
                    messages,
                    compact,
                    self.max_future,
                )
                .await;
                self.conn.live().received += n;
                for r in results {
                    let frame = match r {
                        Ok(h) => {
                            self.conn.advance(h.timestamp);
                            ack_frame(&h)
                        }
                        Err(e) => {
                            self.conn.error(None, e.clone());
                            error_frame(&e)
                        }
                    };
                    if let Err(e) = ws.feed(Message::Text(frame.into())).await {
                        return Exit::Failed(format!("send failed: {e}"));
                    }
                }
                if let Err(e) = ws.flush().await {
                    return Exit::Failed(format!("send failed: {e}"));
                }
            }
            if let Some(exit) = end {
                return exit;
            }
        }
    }
}

/// Adds a pulled frame's payload to `messages`; false (and `end` set)
/// when the session ends.
fn take(
    peer: &mut Peer,
    m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    messages: &mut Vec<Vec<u8>>,
    end: &mut Option<Exit>,
) -> bool {
    match peer.heard(m) {
        Ok(Some(Message::Text(t))) => messages.push(t.as_bytes().to_vec()),
        Ok(Some(Message::Binary(b))) => messages.push(b.to_vec()),
        Ok(_) => {}
        Err(exit) => {
            *end = Some(exit);
            return false;
        }
    }
    true
}

/// Liveness of the peer: pings, and the pong deadline of each.
struct Peer {
    live: Tracker,
}

impl Peer {
    fn new(t: &Timing) -> Peer {
        Peer {
            live: Tracker::new(
                Instant::now(),
                t.ping_every,
                Rule::Unanswered(t.pong_timeout),
            ),
        }
    }

    /// At [`Tracker::next_wake`]: fails if a ping went unanswered, pings
    /// if one is due.
    async fn at_wake(&mut self, ws: &mut Ws, t: &Timing) -> Result<(), String> {
        match self.live.due(Instant::now()) {
            Due::Dead => Err(format!("no pong within {:?}", t.pong_timeout)),
            Due::Ping => {
                ws.send(Message::Ping(Default::default()))
                    .await
                    .map_err(|e| format!("ping failed: {e}"))?;
                self.live.pinged(Instant::now());
                Ok(())
            }
            Due::Nothing => Ok(()),
        }
    }

    /// Any frame proves the peer alive; a close or error ends the session.
    fn heard(
        &mut self,
        m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<Option<Message>, Exit> {
        match m {
            None => Err(Exit::Failed("connection lost".into())),
            Some(Err(e)) => Err(Exit::Failed(format!("receive failed: {e}"))),
            Some(Ok(Message::Close(_))) => Err(Exit::Closed),
            Some(Ok(m)) => {
                self.live.heard(Instant::now());
                Ok(Some(m))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyCache;
    use crate::outbound::policy::OutboundConfig;
    use crate::store::{Config, DataType};
    use tokio::net::TcpListener;

    const PING_EVERY: Duration = Duration::from_millis(100);
    const PONG_TIMEOUT: Duration = Duration::from_millis(300);

    /// A pull session (created by an admin: loopback allowed) to `addr`,
    /// storing into a fresh store in `dir`.
    fn pull_session(dir: &std::path::Path, addr: SocketAddr) -> Session {
        let cfg = Config {
            num_blocks: 16,
            data_block_size: 256,
            index_block_size: 256,
            data_type: DataType::Json,
            ..Config::default()
        };
        let store = Arc::new(Store::create(dir, "s", cfg).unwrap());
        // As a persisted connection reads: every field not named defaults.
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "id": "c",
            "mode": "pull",
            "url": format!("ws://{addr}/"),
            "created_at": "",
            "created_by": "admin",
        }))
        .unwrap();
        Session {
            name: "s".into(),
            store,
            stores: Arc::new(Registry::new(dir.to_path_buf(), Arc::new(KeyCache::new()))),
            metrics: Arc::new(Metrics::default()),
            conn: Arc::new(Conn::new(spec)),
            timing: Timing {
                ping_every: PING_EVERY,
                pong_timeout: PONG_TIMEOUT,
                ..Timing::default()
            },
            policy: Arc::new(Policy::new(&OutboundConfig::default())),
            max_future: Duration::from_secs(3600),
        }
    }

    /// A WebSocket peer on 127.0.0.1 that takes one connection; `answers`:
    /// it reads (and so answers pings), else it holds the connection
    /// without reading a frame. Returns the pings it read.
    async fn peer(answers: bool) -> (SocketAddr, tokio::task::JoinHandle<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut pings = 0;
            if answers {
                while let Some(Ok(m)) = ws.next().await {
                    pings += usize::from(matches!(m, Message::Ping(_)));
                }
            } else {
                std::future::pending::<()>().await;
            }
            pings
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_a_ping_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, task) = peer(false).await;
        let s = pull_session(dir.path(), addr);
        let ended = tokio::time::timeout(Duration::from_secs(10), s.run())
            .await
            .expect("the session ends");
        assert!(matches!(ended, Ended::Dropped { .. }));
        assert_eq!(s.conn.status(), Status::Error);
        let status = s.conn.status_json();
        assert_eq!(
            status["last_error"],
            format!("no pong within {PONG_TIMEOUT:?}"),
            "{status}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_peer_that_answers_pings_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, task) = peer(true).await;
        let s = pull_session(dir.path(), addr);
        let conn = s.conn.clone();
        let stopper = tokio::spawn(async move {
            // Many pong timeouts' worth.
            tokio::time::sleep(PING_EVERY * 15).await;
            conn.stop.send_replace(true);
        });
        let ended = tokio::time::timeout(Duration::from_secs(10), s.run())
            .await
            .expect("the session ends when stopped");
        assert!(matches!(ended, Ended::Stopped), "{}", s.conn.status_json());
        stopper.await.unwrap();
        let pings = task.await.unwrap();
        assert!(pings >= 2, "pinged along: {pings}");
    }
}
