//! The MQTT sink: publishes a store's objects to a broker topic, in
//! timestamp order, at least once (`/api/stores/:store/mqtt/connections`,
//! `mqtt_connections.json`).
//!
//! Delivery. A session reads the store after the cursor with a
//! [`Follower`] (woken by the registry's write counter, no polling) and
//! keeps up to `window` publishes in flight. The cursor (`last_timestamp`)
//! advances only over the *prefix* of publishes the broker acknowledged
//! (PUBACK for QoS 1, PUBCOMP for QoS 2; QoS 0 when written to the
//! socket): an ack out of order never moves it past an unacknowledged
//! message. A reconnect first publishes again what the last session did
//! not get acknowledged, then goes on with the same follower (so objects
//! the ring overwrote while the broker was away are counted as a gap); a
//! server restart starts after the cursor. Either way: at least once, in
//! order.
//!
//! Payload: the object's data alone (JSON and schema stores as JSON text,
//! schema expanded unless `format=compact`; text stores as their text;
//! binary stores as their bytes), or with `include_timestamp`
//! `{"timestamp":T,"data":D}` with `D` as the REST API encodes it (text as
//! a JSON string, binary as base64).
//!
//! With `agg_window` (and `agg_fields`, `agg_default`) the sink publishes
//! windows ([`WindowFrames`]) instead: each closed window is rendered into
//! the buffer as a publish stamped with its newest reading, so the cursor
//! (the acknowledged prefix) stays on raw readings and never enters the
//! open window; a restart re-reads the open window whole. The open window
//! rides in `Carry` across reconnects (the follower is past its
//! readings); a stop with nothing unacknowledged publishes it, partial,
//! outside the window of publishes (the cursor does not move).
//!
//! A payload that cannot fit an MQTT packet of [`MAX_PACKET`] bytes is
//! skipped: counted in `errors`, named in `last_error`, and the cursor
//! moves past it (retrying it would stall the sink forever). A broker with
//! a lower limit closes the connection instead; see [`Suspect`] for how
//! the sink finds and skips that message.
//!
//! `cursor_persist_interval`: `N > 0` writes the cursor to the file at most
//! every `N` s, and a restart resumes from it (resending at most `window`
//! messages plus what was acknowledged in the last `N` s); `0` keeps the
//! cursor in memory only (reconnects resume from it, a server restart
//! starts again at `from`); `-1` is one shot: a failure leaves the sink in
//! `error` with no reconnect for the rest of the run. A server start runs
//! every sink, one-shot ones included, from its persisted cursor or
//! `from`, as the original did (its manager starts every saved sink).

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, Outgoing, Packet, QoS};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::codec::data_json;
use crate::codec::frames::{Framed, WindowFrames};
use crate::follow::{self, Follower, Start};
use crate::outbound::links::{Ctx, Kind, Link};
use crate::outbound::policy::{Role, Target};
use crate::outbound::supervise::{stopped, Ended, Timing};
use crate::outbound::Status;
use crate::store::{DataType, Object, ObjectHandle, Store};

use super::{client, Broker, Login};

/// The largest MQTT packet a sink sends (and accepts): 16 MiB. A larger
/// object is skipped with an error.
pub const MAX_PACKET: usize = 16 << 20;

/// Bytes of a PUBLISH packet besides the topic and payload, at most: fixed
/// header (5), topic length (2), packet id (2).
const PUBLISH_OVERHEAD: usize = 9;

/// What an MQTT sink is, as created and persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    pub broker_url: String,
    pub topic: String,
    /// `0` the oldest, `-1` the next object written, else a timestamp:
    /// the objects after it.
    #[serde(default)]
    pub from: i64,
    #[serde(default)]
    pub include_timestamp: bool,
    /// `-1` one shot, `0` cursor in memory, `N` persisted every `N` s.
    #[serde(default)]
    pub cursor_persist_interval: i64,
    #[serde(default)]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    #[serde(default = "default_window")]
    pub window: u16,
    #[serde(default = "full")]
    pub format: String,
    pub created_at: String,
    #[serde(default)]
    pub created_by: Role,
    /// The cursor as of the last write of the file (`> 0` intervals only).
    #[serde(default)]
    pub last_timestamp: i64,
    /// Windows instead of objects (`agg_window`, ...; issue 15).
    #[serde(flatten)]
    pub agg: crate::codec::agg::Params,
    /// Alert rules evaluated on each object published (see
    /// [`crate::outbound::alerting`]); alerts go to the same topic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Value>,
}

fn default_qos() -> u8 {
    1
}

/// MQTT sinks one store may have.
pub const MAX_SINKS: usize = 32;

/// Publishes in flight by default.
pub const DEFAULT_WINDOW: u16 = 64;
/// The largest `window`.
pub const MAX_WINDOW: u16 = 1024;

fn default_window() -> u16 {
    DEFAULT_WINDOW
}

fn full() -> String {
    "full".into()
}

pub struct Sink;

impl Kind for Sink {
    const FILE: &'static str = "mqtt_connections.json";
    const LIST: &'static str = "connections";
    const WHAT: &'static str = "mqtt connection";
    const MAX_PER_STORE: usize = MAX_SINKS;
    type Spec = Spec;

    fn id(spec: &Spec) -> &str {
        &spec.id
    }
    fn set_id(spec: &mut Spec, id: String) {
        spec.id = id;
    }
    fn assigned(spec: &mut Spec, store: &str) {
        if spec.client_id.is_empty() {
            spec.client_id = format!("tsstore-{store}-{}", spec.id);
        }
    }
    fn created_at(spec: &Spec) -> &str {
        &spec.created_at
    }
    fn url(spec: &Spec) -> &str {
        &spec.broker_url
    }
    fn target(spec: &Spec) -> Result<Target, String> {
        Broker::parse(&spec.broker_url).map(|b| b.target())
    }
    fn role(spec: &Spec) -> Role {
        spec.created_by
    }
    fn ca_file(spec: &Spec) -> Option<&Path> {
        spec.ca_file.as_deref()
    }
    fn cursor(spec: &Spec) -> i64 {
        if spec.cursor_persist_interval > 0 {
            spec.last_timestamp
        } else {
            0
        }
    }
    fn with_cursor(spec: &Spec, cursor: i64) -> Spec {
        // Only a positive interval persists the cursor; the others start
        // again at `from` after a restart.
        let last_timestamp = if spec.cursor_persist_interval > 0 {
            cursor
        } else {
            0
        };
        Spec {
            last_timestamp,
            ..spec.clone()
        }
    }
    fn persist_every(spec: &Spec, _: &Timing) -> Option<Duration> {
        u64::try_from(spec.cursor_persist_interval)
            .ok()
            .filter(|&n| n > 0)
            .map(Duration::from_secs)
    }
    fn status_json(link: &Link<Self>) -> Value {
        let s = &link.spec;
        let l = link.live();
        let mut v = json!({
            "id": s.id,
            "broker_url": s.broker_url,
            "topic": s.topic,
            "status": l.status.as_str(),
            "last_timestamp": l.cursor,
            "messages_sent": l.sent,
            "errors": l.errors,
            "last_error": l.last_error,
            "created_at": s.created_at,
            "connected_since": l.connected_since.map(crate::clock::rfc3339_nanos),
            "from": s.from,
            "include_timestamp": s.include_timestamp,
            "cursor_persist_interval": s.cursor_persist_interval,
            "client_id": s.client_id,
            "username": s.username,
            "qos": s.qos,
            "retain": s.retain,
            "window": s.window,
            "format": s.format,
        });
        s.agg.add_to(&mut v);
        if let Some(ca) = &s.ca_file {
            v["ca_file"] = json!(ca.display().to_string());
        }
        let rules = link.rules();
        v["rules_count"] = json!(rules.map_or(0, |r| r.count()));
        v["alerts_fired"] = json!(rules.map_or(0, |r| r.fired()));
        if let Some(r) = rules {
            v["rules"] = r.status();
        }
        v
    }
    fn rules(spec: &Spec) -> &[Value] {
        &spec.rules
    }
    fn session(ctx: Arc<Ctx<Self>>) -> Pin<Box<dyn Future<Output = Ended> + Send>> {
        Box::pin(async move { run(&ctx).await })
    }
}

fn qos_of(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// Why a connected session ended.
enum Exit {
    Stopped,
    Failed(String),
}

/// One dial and, once the broker accepted us, publishing until stopped or
/// failed. A one-shot sink turns every failure into a stop, in `error`.
async fn run(ctx: &Ctx<Sink>) -> Ended {
    let one_shot = ctx.link.spec.cursor_persist_interval < 0;
    let ended = session(ctx).await;
    match ended {
        Ended::Stopped => Ended::Stopped,
        _ if one_shot => {
            let mut l = ctx.link.live();
            l.status = Status::Error;
            l.connected_since = None;
            Ended::Stopped
        }
        e => e,
    }
}

async fn session(ctx: &Ctx<Sink>) -> Ended {
    let link = &ctx.link;
    let spec = &link.spec;
    let mut stop = ctx.stop();
    link.set_status(Status::Connecting);
    let broker = match Broker::parse(&spec.broker_url) {
        Ok(b) => b,
        Err(e) => {
            link.error(Some(Status::Error), e);
            return Ended::DialFailed;
        }
    };
    let window = spec.window.clamp(1, MAX_WINDOW);
    let login = Login {
        client_id: &spec.client_id,
        username: spec.username.as_deref(),
        password: spec.password.as_deref(),
        // Nothing to resume at the broker: a new session publishes again
        // what was not acknowledged (at least once).
        clean_session: true,
        inflight: window,
        max_packet: MAX_PACKET,
        manual_acks: false,
    };
    let dialled = tokio::select! {
        r = client(ctx, &broker, &login, window as usize + 1) => r,
        _ = stopped(&mut stop) => return Ended::Stopped,
    };
    let (mqtt, mut eventloop) = match dialled {
        Ok(c) => c,
        Err(e) => {
            link.error(Some(Status::Error), format!("dial failed: {e}"));
            return Ended::DialFailed;
        }
    };
    // The event loop runs in its own task, so that no poll is ever
    // cancelled halfway; it ends with the session (the sender closes).
    let (tx, mut events) = mpsc::channel::<Result<Event, ConnectionError>>(256);
    let pump = tokio::spawn(async move {
        loop {
            let e = eventloop.poll().await;
            let failed = e.is_err();
            if tx.send(e).await.is_err() || failed {
                return;
            }
        }
    });
    let _abort = AbortOnDrop(pump);
    let handshake = ctx.timing.handshake_timeout + Duration::from_secs(1);
    let connack = tokio::select! {
        e = tokio::time::timeout(handshake, events.recv()) => e,
        _ = stopped(&mut stop) => return Ended::Stopped,
    };
    match connack {
        Ok(Some(Ok(Event::Incoming(Packet::ConnAck(_))))) => {}
        Ok(Some(Err(e))) => {
            link.error(Some(Status::Error), format!("dial failed: {e}"));
            return Ended::DialFailed;
        }
        Ok(Some(Ok(other))) => {
            link.error(
                Some(Status::Error),
                format!("dial failed: unexpected {other:?} before CONNACK"),
            );
            return Ended::DialFailed;
        }
        Ok(None) | Err(_) => {
            link.error(
                Some(Status::Error),
                format!("dial failed: no CONNACK within {handshake:?}"),
            );
            return Ended::DialFailed;
        }
    }
    tracing::info!(link = %link.id(), url = %crate::redact::url(&spec.broker_url), "mqtt connection established");
    link.set_status(Status::Connected);
    let since = Instant::now();
    let exit = publish(ctx, &mqtt, &mut events, &mut stop, window).await;
    match exit {
        Exit::Stopped => {
            // A polite DISCONNECT, given a moment to leave.
            let _ = mqtt.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while let Some(Ok(e)) = events.recv().await {
                    if matches!(e, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
            Ended::Stopped
        }
        Exit::Failed(e) => {
            link.error(Some(Status::Error), e);
            Ended::Dropped { since }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a session starts: after the cursor, else at `from`.
fn start(ctx: &Ctx<Sink>) -> Start {
    let cursor = ctx.link.live().cursor;
    if cursor > 0 {
        return Start::After(cursor);
    }
    match ctx.link.spec.from {
        0 => Start::Oldest,
        -1 => Start::Now,
        t => Start::After(t),
    }
}

/// The payload of one object.
fn payload(store: &Store, o: &Object, include_timestamp: bool, compact: bool) -> Vec<u8> {
    if include_timestamp {
        return format!(
            r#"{{"timestamp":{},"data":{}}}"#,
            o.handle.timestamp,
            data_json(store, &o.data, compact)
        )
        .into_bytes();
    }
    match store.config().data_type {
        DataType::Binary | DataType::Text => o.data.clone(),
        DataType::Json | DataType::Schema => data_json(store, &o.data, compact).into_bytes(),
    }
}

/// Where a publish is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Handed to the client, no packet id yet.
    Queued,
    /// Written with this packet id, not acknowledged.
    InFlight(u16),
    /// Acknowledged (or skipped).
    Done,
}

/// One publish of the window.
#[derive(Debug)]
struct Entry {
    ts: i64,
    sent: Sent,
    /// The object, kept until acknowledged to be published again by the
    /// next session (`None` once done, and in unit tests).
    obj: Option<Object>,
}

/// The publishes not yet behind the cursor, oldest first. The cursor moves
/// over the acknowledged prefix only.
#[derive(Debug, Default)]
struct Window {
    pending: VecDeque<Entry>,
    /// Entries not `Done`.
    open: usize,
}

impl Window {
    fn push(&mut self, ts: i64, sent: Sent, obj: Option<Object>) {
        if sent != Sent::Done {
            self.open += 1;
        }
        self.pending.push_back(Entry { ts, sent, obj });
    }

    /// The client wrote the oldest queued publish with `pkid` (0: QoS 0,
    /// done once written).
    fn written(&mut self, pkid: u16) {
        if let Some(e) = self.pending.iter_mut().find(|e| e.sent == Sent::Queued) {
            if pkid == 0 {
                e.sent = Sent::Done;
                e.obj = None;
                self.open -= 1;
            } else {
                e.sent = Sent::InFlight(pkid);
            }
        }
    }

    /// The broker acknowledged `pkid`; true if it was in flight.
    fn acked(&mut self, pkid: u16) -> bool {
        match self
            .pending
            .iter_mut()
            .find(|e| e.sent == Sent::InFlight(pkid))
        {
            Some(e) => {
                e.sent = Sent::Done;
                e.obj = None;
                self.open -= 1;
                true
            }
            None => false,
        }
    }

    /// Drops the acknowledged prefix: its newest timestamp.
    fn take_done(&mut self) -> Option<i64> {
        let mut out = None;
        while self.pending.front().is_some_and(|e| e.sent == Sent::Done) {
            out = self.pending.pop_front().map(|e| e.ts);
        }
        out
    }

    /// The oldest and newest publishes written and not acknowledged, if
    /// the oldest not acknowledged was written.
    fn in_flight(&self) -> Option<(i64, i64)> {
        let head = self
            .pending
            .iter()
            .find(|e| e.sent != Sent::Done)
            .filter(|e| matches!(e.sent, Sent::InFlight(_)))?;
        let newest = self
            .pending
            .iter()
            .rev()
            .find(|e| matches!(e.sent, Sent::InFlight(_)))?;
        Some((head.ts, newest.ts))
    }

    /// The objects not acknowledged, oldest first: to publish again.
    fn unacknowledged(self) -> impl Iterator<Item = Object> {
        self.pending.into_iter().filter_map(|e| e.obj)
    }
}

/// What a sink carries from a session to the next: the follower (whose
/// gap accounting spans reconnects) and the objects read but not
/// acknowledged, oldest first.
struct Carry {
    follower: Follower,
    again: VecDeque<Object>,
    suspect: Option<Suspect>,
    /// With `agg_window`: the open window (its readings are behind the
    /// follower, not behind the cursor).
    windows: Option<WindowFrames>,
}

/// What was in flight when a session dropped: the next session publishes
/// one message at a time (a window of one) until the cursor passes
/// `until`, so that the message the broker drops the connection on is
/// found. If the broker drops it [`SKIP_AFTER`] times while it is alone in
/// flight, it is skipped: a broker closes the connection on a packet over
/// its limit (mosquitto's `max_packet_size`), and retrying it would stall
/// the sink forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suspect {
    /// The oldest publish unacknowledged at the last drop.
    ts: i64,
    /// The newest publish in flight at the first drop.
    until: i64,
    /// Drops with `ts` alone in flight.
    alone_drops: u32,
}

/// Drops with a suspect alone in flight before it is skipped.
const SKIP_AFTER: u32 = 2;

/// The suspect after a session that dropped with `in_flight` (the oldest
/// and newest publishes written and not acknowledged, if any); `probing`:
/// the suspect the session started with, still unpassed (it published one
/// at a time).
fn next_suspect(probing: Option<Suspect>, in_flight: Option<(i64, i64)>) -> Option<Suspect> {
    let Some((ts, newest)) = in_flight else {
        return probing;
    };
    Some(match probing {
        Some(p) => Suspect {
            ts,
            until: p.until.max(newest),
            alone_drops: if p.ts == ts { p.alone_drops + 1 } else { 1 },
        },
        None => Suspect {
            ts,
            until: newest,
            alone_drops: 0,
        },
    })
}

async fn publish(
    ctx: &Ctx<Sink>,
    mqtt: &AsyncClient,
    events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    window: u16,
) -> Exit {
    let link = &ctx.link;
    // Subscribe before the first read: a write in between wakes us.
    let Some(mut written) = ctx.stores.watch(&ctx.name) else {
        return Exit::Failed("store is not open".into());
    };
    written.borrow_and_update();
    let carried = ctx
        .carry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .and_then(|c| c.downcast::<Carry>().ok());
    let (mut follower, mut buf, mut suspect, mut windows) = match carried {
        Some(c) => (c.follower, c.again, c.suspect, c.windows),
        None => {
            let agg = match link.spec.agg.spec(ctx.store.config().data_type) {
                Ok(a) => a,
                Err(e) => return Exit::Failed(e.to_string()),
            };
            let resumed = link.live().cursor > 0;
            let start = start(ctx);
            let f = match Follower::new(ctx.store.clone(), start, None) {
                Ok(f) => f,
                Err(e) => return Exit::Failed(format!("reading the store: {e}")),
            };
            if start == Start::Now {
                // "now" is when the sink first ran: a reconnect resumes
                // there.
                link.advance(f.cursor());
            }
            // Windows cover the readings from `from` on: a sink resuming
            // after its cursor reads the open window again, whole.
            let windows = agg.map(|a| {
                let lo = match link.spec.from {
                    0 => i64::MIN,
                    -1 if resumed => i64::MIN,
                    -1 => f.cursor().saturating_add(1),
                    t => t.saturating_add(1),
                };
                WindowFrames::new(Arc::new(a), &ctx.store, link.spec.format == "compact", lo)
            });
            (f, VecDeque::new(), None, windows)
        }
    };
    // A compact sink's session begins with the outputs' schema, before
    // what the last session left unacknowledged.
    if let Some(f) = windows.as_ref().and_then(WindowFrames::schema_frame) {
        buf.push_front(rendered(link.live().cursor, f));
    }
    let mut idle = false;
    let mut win = Window::default();
    let mut exit = publish_from(
        ctx,
        mqtt,
        events,
        stop,
        window,
        &mut follower,
        &mut buf,
        &mut win,
        &mut written,
        &mut idle,
        &mut suspect,
        windows.as_mut(),
    )
    .await;
    // Acknowledgements the session took but had not yet moved the cursor
    // over (it can end between the two): the cursor says every publish the
    // broker acknowledged.
    if let Some(ts) = win.take_done() {
        link.advance(ts);
    }
    // The next session starts with what this one did not get acknowledged.
    let in_flight = win.in_flight();
    let mut again: VecDeque<Object> = win.unacknowledged().collect();
    again.extend(buf);
    if let Exit::Failed(e) = &exit {
        suspect = next_suspect(suspect, in_flight);
        if let Some(s) = suspect.filter(|s| s.alone_drops >= SKIP_AFTER) {
            if again.front().is_some_and(|o| o.handle.timestamp == s.ts) {
                again.pop_front();
                link.live().errors += 1;
                link.advance(s.ts);
                exit = Exit::Failed(format!(
                    "{e}; object {} skipped: the broker closed the connection each time it was the only message in flight (over the broker's packet size limit?)",
                    s.ts
                ));
            }
            suspect = suspect.filter(|s| s.until > s.ts).map(|s| Suspect {
                alone_drops: 0,
                ..s
            });
        }
    }
    if let (Exit::Stopped, Some(w)) = (&exit, windows.as_mut()) {
        // Stopping (shutdown, delete) with every closed window handed to
        // the client: the open window goes out, partial, after them. Not
        // in the window of publishes: the cursor stays before its
        // readings, and a restart publishes it again, whole.
        if again.is_empty() {
            if let Ok(Some(cut)) = w.cut() {
                for f in cut.frames {
                    let qos = qos_of(link.spec.qos);
                    let _ = mqtt.try_publish(link.spec.topic.as_str(), qos, link.spec.retain, f);
                }
            }
        }
    }
    *ctx.carry.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(Carry {
        follower,
        again,
        suspect,
        windows,
    }));
    exit
}

/// A publish already rendered (a window frame, a schema frame): with
/// `agg_window` the buffer holds these, stamped with the timestamp the
/// cursor may move to once it is acknowledged (a window's newest reading).
/// How an alert's JSON begins (`crate::rules::Alert::to_json`).
const ALERT_PREFIX: &[u8] = br#"{"type":"alert""#;

fn rendered(ts: i64, frame: String) -> Object {
    let data = frame.into_bytes();
    Object {
        handle: ObjectHandle {
            timestamp: ts,
            block_num: 0,
            offset: 0,
            size: u32::try_from(data.len()).unwrap_or(u32::MAX),
            span_count: 0,
        },
        data,
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish_from(
    ctx: &Ctx<Sink>,
    mqtt: &AsyncClient,
    events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    window: u16,
    follower: &mut Follower,
    buf: &mut VecDeque<Object>,
    win: &mut Window,
    written: &mut tokio::sync::watch::Receiver<u64>,
    idle: &mut bool,
    suspect: &mut Option<Suspect>,
    mut windows: Option<&mut WindowFrames>,
) -> Exit {
    let link = &ctx.link;
    let spec = &link.spec;
    let qos = qos_of(spec.qos);
    let compact = spec.format == "compact";
    loop {
        // Fill the window.
        // After a drop, one at a time up to what was in flight.
        let room = if suspect.is_some() {
            1
        } else {
            window as usize
        };
        while win.open < room {
            if buf.is_empty() {
                if *idle {
                    break;
                }
                written.borrow_and_update();
                let batch = match follower.next_batch(follow::BATCH) {
                    Ok(b) => b,
                    Err(e) => return Exit::Failed(format!("reading the store: {e}")),
                };
                let mut cut = None;
                if let Some(g) = batch.gap {
                    link.error(
                        None,
                        format!(
                            "gap: {} objects with timestamps {}..={} were overwritten before they were published",
                            g.lost, g.from, g.to
                        ),
                    );
                    if let Some(w) = windows.as_deref_mut() {
                        cut = match w.gap(&g) {
                            Ok(c) => c,
                            Err(e) => return Exit::Failed(e.to_string()),
                        };
                    }
                }
                *idle = batch.caught_up;
                match windows.as_deref_mut() {
                    None => buf.extend(batch.objects),
                    Some(w) => {
                        // The windows closed, rendered; a schema frame
                        // (the compact outputs grew) is stamped with the
                        // previous window's reading, so that its ack
                        // never moves the cursor past a window.
                        let mut before = link.live().cursor;
                        let add = |f: Framed, before: &mut i64, buf: &mut VecDeque<Object>| {
                            let n = f.frames.len();
                            for (i, frame) in f.frames.into_iter().enumerate() {
                                let ts = if i + 1 == n { f.last } else { *before };
                                buf.push_back(rendered(ts, frame));
                            }
                            *before = f.last;
                        };
                        if let Some(c) = cut {
                            add(c, &mut before, buf);
                        }
                        let rules = link.rules();
                        for o in &batch.objects {
                            match w.push(&ctx.store, o) {
                                Ok(Some(f)) => add(f, &mut before, buf),
                                Ok(None) => {}
                                Err(e) => return Exit::Failed(e.to_string()),
                            }
                            // Rules look at readings, not windows: a
                            // reading's alerts go out at once, stamped with
                            // the last window's reading, so that their ack
                            // never moves the cursor into the open window.
                            if let Some(r) = rules {
                                for a in r.evaluate(&ctx.store, o.handle.timestamp, &o.data) {
                                    buf.push_back(rendered(before, a));
                                }
                            }
                        }
                    }
                }
                if buf.is_empty() {
                    break;
                }
            }
            let Some(o) = buf.pop_front() else { break };
            let body = if windows.is_some() {
                o.data.clone()
            } else {
                payload(&ctx.store, &o, spec.include_timestamp, compact)
            };
            let size = body.len() + spec.topic.len() + PUBLISH_OVERHEAD;
            if size > MAX_PACKET {
                link.error(
                    None,
                    format!(
                        "object {} skipped: its payload of {} bytes does not fit an MQTT packet of {MAX_PACKET} bytes",
                        o.handle.timestamp,
                        body.len()
                    ),
                );
                win.push(o.handle.timestamp, Sent::Done, None);
                continue;
            }
            // Alerts are never retained (a retained alert would replace the
            // retained object or window); with windows they are frames of
            // their own in `buf`, rendered by us.
            let alert = windows.is_some() && body.starts_with(ALERT_PREFIX);
            if let Err(e) = mqtt.try_publish(spec.topic.as_str(), qos, spec.retain && !alert, body)
            {
                buf.push_front(o);
                return Exit::Failed(format!("publish failed: {e}"));
            }
            let ts = o.handle.timestamp;
            let alerts = match windows {
                Some(_) => Vec::new(),
                None => link
                    .rules()
                    .map(|r| r.evaluate(&ctx.store, ts, &o.data))
                    .unwrap_or_default(),
            };
            win.push(ts, Sent::Queued, Some(o));
            // The alerts an object fires follow it on the topic, never
            // retained (a retained alert would replace the retained
            // object). Each is a publish of the window with the object's
            // timestamp and no object: acknowledged like the others, not
            // published again by the next session (the object is, and
            // fires again).
            for a in alerts {
                if let Err(e) = mqtt.try_publish(spec.topic.as_str(), qos, false, a.into_bytes()) {
                    return Exit::Failed(format!("publish failed: {e}"));
                }
                win.push(ts, Sent::Queued, None);
            }
        }
        if let Some(ts) = win.take_done() {
            link.advance(ts);
            if suspect.is_some_and(|s| ts >= s.until) {
                *suspect = None;
            }
        }
        tokio::select! {
            e = events.recv() => {
                let e = match e {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => return Exit::Failed(format!("connection lost: {e}")),
                    None => return Exit::Failed("connection lost".into()),
                };
                let acked = match e {
                    Event::Outgoing(Outgoing::Publish(pkid)) => {
                        win.written(pkid);
                        pkid == 0
                    }
                    Event::Incoming(Packet::PubAck(a)) if qos == QoS::AtLeastOnce => win.acked(a.pkid),
                    Event::Incoming(Packet::PubComp(a)) if qos == QoS::ExactlyOnce => win.acked(a.pkid),
                    Event::Incoming(Packet::Disconnect) => {
                        return Exit::Failed("the broker disconnected".into())
                    }
                    _ => false,
                };
                if acked {
                    link.live().sent += 1;
                }
            }
            r = written.changed(), if *idle && buf.is_empty() => {
                if r.is_err() {
                    return Exit::Failed("store closed".into());
                }
                *idle = false;
            }
            _ = stopped(stop) => return Exit::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_moves_over_the_acknowledged_prefix_only() {
        let mut w = Window::default();
        for ts in [10, 20, 30] {
            w.push(ts, Sent::Queued, None);
        }
        w.written(1);
        w.written(2);
        w.written(3);
        assert!(w.acked(2));
        assert_eq!(w.take_done(), None, "10 is not acknowledged");
        assert!(w.acked(1));
        assert_eq!(w.take_done(), Some(20));
        assert!(!w.acked(1), "already acknowledged");
        assert_eq!(w.open, 1);
        // A skipped object behind an unacknowledged one waits for it.
        w.push(40, Sent::Done, None);
        assert_eq!(w.take_done(), None);
        assert!(w.acked(3));
        assert_eq!(w.take_done(), Some(40));
        assert_eq!(w.open, 0);
    }

    #[test]
    fn a_drop_makes_the_next_session_go_one_at_a_time() {
        // A drop with 10..=50 in flight: one at a time up to 50.
        let s = next_suspect(None, Some((10, 50))).unwrap();
        assert_eq!(
            s,
            Suspect {
                ts: 10,
                until: 50,
                alone_drops: 0
            }
        );
        // 10..=20 went through alone, the broker dropped on 30 alone.
        let s = next_suspect(Some(s), Some((30, 30))).unwrap();
        assert_eq!((s.ts, s.until, s.alone_drops), (30, 50, 1));
        let s = next_suspect(Some(s), Some((30, 30))).unwrap();
        assert_eq!(s.alone_drops, SKIP_AFTER);
        // Nothing in flight: no news.
        assert_eq!(next_suspect(Some(s), None), Some(s));
        assert_eq!(next_suspect(None, None), None);
    }

    #[test]
    fn packet_ids_are_reused_after_their_ack() {
        let mut w = Window::default();
        w.push(1, Sent::Queued, None);
        w.written(1);
        assert!(w.acked(1));
        w.push(2, Sent::Queued, None);
        w.written(1);
        assert_eq!(w.take_done(), Some(1));
        assert!(w.acked(1));
        assert_eq!(w.take_done(), Some(2));
    }

    #[test]
    fn qos0_is_done_when_written() {
        let mut w = Window::default();
        w.push(5, Sent::Queued, None);
        w.push(6, Sent::Queued, None);
        w.written(0);
        assert_eq!(w.take_done(), Some(5));
        assert_eq!(w.open, 1);
    }
}
