//! MQTT subscriptions: store what a broker's topics carry
//! (`/api/stores/:store/mqtt/subscriptions`, `mqtt_subscriptions.json`).
//!
//! A session connects (MQTT 3.1.1, `clean_session` false by default, so
//! the broker queues QoS 1 messages while tsstore is away), subscribes to
//! the topic filters and stores each message that arrives as one object,
//! in arrival order: its payload as the store's type demands (a json store
//! takes a JSON payload as it is, a schema store validates and compacts a
//! JSON object, text and binary stores take the bytes; a text store wants
//! UTF-8), optionally wrapped as `{"topic":..,"data":..}`
//! (`include_topic`), at the store's now or at the time a JSON field of
//! the payload gives (`timestamp_field`, `timestamp_unit`).
//!
//! Acknowledgement (manual acks): a QoS 1 message is acknowledged to the
//! broker (PUBACK) only once the store's insert returned, that is once the
//! object is as durable as the store's policy promises (under every
//! policy, in the page cache: a crash of tsstore loses nothing the broker
//! was told is stored; a power cut can lose what the policy allows:
//! nothing under `always`, up to the interval under `interval`, whatever
//! the OS had not written back under `never`). A message the store refuses
//! for what it is (not valid for the store's type, a timestamp field that
//! is missing, not a number, or not after the store's newest timestamp,
//! too large) is counted in `errors`, acknowledged (the broker would
//! redeliver it forever otherwise) and never stops the subscription. A
//! store that fails (closed, I/O error) ends the session without
//! acknowledging: the broker redelivers.
//!
//! Delivery is at least once: a message stored whose PUBACK did not reach
//! the broker (crash, dropped connection) is redelivered. With
//! `timestamp` `now` it is then stored twice; with a `timestamp_field` the
//! second copy is refused as out of order (counted in `errors`).
//!
//! The cursor (`last_timestamp`) is the timestamp of the last stored
//! message, informational: the broker keeps the subscription's place. It
//! is written to the file at shutdown (and with every create and delete),
//! not while running: after a crash it shows the value of the last save
//! until the next message.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, Publish, QoS, SubscribeFilter};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{client, Broker, Login};
use crate::codec::check_horizon;
use crate::metrics::Metrics;
use crate::outbound::links::{Ctx, Kind, Link};
use crate::outbound::policy::{Role, Target};
use crate::outbound::supervise::{stopped, Ended, Timing};
use crate::outbound::Status;
use crate::store::{self, DataType, Durability, ObjectHandle, Store};

/// At most this many topic filters per subscription.
pub const MAX_TOPICS: usize = 64;
/// The longest topic filter, in bytes.
pub const MAX_TOPIC_LEN: usize = 1024;
/// The largest MQTT packet accepted. A larger one ends the session (the
/// client cannot skip it): set the broker's `message_size_limit` below it.
pub const MAX_PACKET: usize = 4 << 20;
/// Messages stored under one lock and one commit.
const MAX_BATCH: usize = 256;
/// The client's request queue (acks on their way to the socket).
const REQUESTS: usize = 4 * MAX_BATCH;

/// Where a message's timestamp comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampFrom {
    /// The store's now (never refused: a clock step back gets the newest
    /// timestamp plus one nanosecond).
    #[default]
    Now,
    /// A number in the JSON payload, [`Spec::timestamp_field`].
    Field,
}

/// The unit of a timestamp field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    #[default]
    Ns,
    Us,
    Ms,
    S,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s {
            "ns" => Unit::Ns,
            "us" => Unit::Us,
            "ms" => Unit::Ms,
            "s" => Unit::S,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::Us => "us",
            Unit::Ms => "ms",
            Unit::S => "s",
        }
    }

    fn nanos(self) -> i64 {
        match self {
            Unit::Ns => 1,
            Unit::Us => 1_000,
            Unit::Ms => 1_000_000,
            Unit::S => 1_000_000_000,
        }
    }
}

fn one() -> u8 {
    1
}

/// What a subscription is, as created and persisted (the file is the
/// owner's only: it holds the password).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    pub broker_url: String,
    pub topics: Vec<String>,
    #[serde(default = "one")]
    pub qos: u8,
    /// `None`: `tsstore-<store>-<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub clean_session: bool,
    #[serde(default)]
    pub timestamp: TimestampFrom,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_field: Option<String>,
    #[serde(default)]
    pub timestamp_unit: Unit,
    #[serde(default)]
    pub include_topic: bool,
    pub created_at: String,
    #[serde(default)]
    pub created_by: Role,
    #[serde(default)]
    pub last_timestamp: i64,
}

impl Spec {
    /// The client id the session logs in with.
    pub fn client_id(&self, store: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("tsstore-{store}-{}", self.id))
    }
}

/// Checks an MQTT topic filter: not empty, at most [`MAX_TOPIC_LEN`]
/// bytes, no NUL, `+` only as a whole level, `#` only as the whole last
/// level.
pub fn check_filter(f: &str) -> Result<(), &'static str> {
    if f.is_empty() {
        return Err("a topic filter is empty");
    }
    if f.len() > MAX_TOPIC_LEN {
        return Err("a topic filter is longer than 1024 bytes");
    }
    if f.contains('\0') {
        return Err("a topic filter contains NUL");
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("'#' must be the whole last level of a topic filter");
        }
        if level.contains('+') && *level != "+" {
            return Err("'+' must be a whole level of a topic filter");
        }
    }
    Ok(())
}

/// The timestamp (ns) in the JSON payload `v` at `field` (a top-level
/// name, or a dotted path when no top-level field has the whole name),
/// in `unit`.
pub fn timestamp_of(v: &Value, field: &str, unit: Unit) -> Result<i64, String> {
    let found = v.get(field).or_else(|| {
        field
            .split('.')
            .try_fold(v, |cur, part| cur.as_object().and_then(|o| o.get(part)))
    });
    let Some(n) = found else {
        return Err(format!("timestamp field {field:?} missing"));
    };
    let Value::Number(n) = n else {
        return Err(format!("timestamp field {field:?} is not a number"));
    };
    let bad = || format!("timestamp field {field:?} out of range");
    let ns = if let Some(i) = n.as_i64() {
        i.checked_mul(unit.nanos()).ok_or_else(bad)?
    } else if let Some(f) = n.as_f64().filter(|_| !n.is_u64()) {
        // Whole units and the fraction apart: 1700000000.25 s is exact.
        let (whole, frac) = (f.trunc(), f.fract());
        if !f.is_finite() || whole.abs() >= (i64::MAX / unit.nanos()) as f64 {
            return Err(bad());
        }
        (whole as i64)
            .checked_mul(unit.nanos())
            .and_then(|w| w.checked_add((frac * unit.nanos() as f64).round() as i64))
            .ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    if ns <= 0 {
        return Err(bad());
    }
    Ok(ns)
}

/// What a message becomes: its timestamp (`None`: now) and the bytes to
/// store; the error is the message's `last_error`.
pub fn to_object(
    spec: &Spec,
    store: &Store,
    topic: &str,
    payload: &[u8],
    max_future: Duration,
) -> Result<(Option<i64>, Vec<u8>), String> {
    let dt = store.config().data_type;
    let json_payload = || -> Result<Value, String> {
        serde_json::from_slice(payload).map_err(|e| format!("invalid JSON payload: {e}"))
    };
    let ts = match (spec.timestamp, &spec.timestamp_field) {
        (TimestampFrom::Field, Some(f)) => {
            let v = json_payload()?;
            let t = timestamp_of(&v, f, spec.timestamp_unit)?;
            check_horizon(Some(t), max_future).map_err(|e| e.message)?
        }
        _ => None,
    };
    let bytes = match dt {
        DataType::Json => {
            let trimmed = payload.trim_ascii();
            if ts.is_none() {
                serde_json::from_slice::<serde::de::IgnoredAny>(trimmed)
                    .map_err(|e| format!("invalid JSON payload: {e}"))?;
            }
            if spec.include_topic {
                let mut out = Vec::with_capacity(trimmed.len() + topic.len() + 24);
                out.extend_from_slice(b"{\"topic\":");
                serde_json::to_writer(&mut out, topic).map_err(|e| e.to_string())?;
                out.extend_from_slice(b",\"data\":");
                out.extend_from_slice(trimmed);
                out.push(b'}');
                out
            } else {
                trimmed.to_vec()
            }
        }
        DataType::Schema => store
            .encode_value(payload)
            .map_err(|e| crate::error::ApiError::from(e).message)?,
        DataType::Text => match std::str::from_utf8(payload) {
            Ok(_) => payload.to_vec(),
            Err(_) => return Err("payload is not UTF-8 text (a text store)".into()),
        },
        DataType::Binary => payload.to_vec(),
    };
    Ok((ts, bytes))
}

/// Inserts `items` under one lock and one commit (off the async workers
/// when the store syncs every write).
async fn insert(
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
    items: Vec<(Option<i64>, Vec<u8>)>,
) -> Vec<Result<ObjectHandle, store::Error>> {
    fn run(
        store: &Store,
        metrics: &Metrics,
        items: &[(Option<i64>, Vec<u8>)],
    ) -> Vec<Result<ObjectHandle, store::Error>> {
        let out = store.insert_batch(items.iter().map(|(t, b)| (*t, b.as_slice())));
        let (mut n, mut bytes) = (0u64, 0u64);
        for (r, (_, b)) in out.iter().zip(items) {
            if r.is_ok() {
                n += 1;
                bytes += b.len() as u64;
            }
        }
        metrics.inserted(n, bytes);
        out
    }
    if store.config().durability != Durability::Always {
        return run(store, metrics, &items);
    }
    let n = items.len();
    let (s, m) = (store.clone(), metrics.clone());
    tokio::task::spawn_blocking(move || run(&s, &m, &items))
        .await
        .unwrap_or_else(|e| {
            (0..n)
                .map(|_| Err(store::Error::Io(std::io::Error::other(e.to_string()))))
                .collect()
        })
}

/// Subscriptions per store at most: each holds a broker connection and a
/// task, and a store key must not make the server hold them without bound.
pub const MAX_SUBSCRIPTIONS: usize = 32;

pub struct Subscription;

impl Kind for Subscription {
    const FILE: &'static str = "mqtt_subscriptions.json";
    const LIST: &'static str = "subscriptions";
    const WHAT: &'static str = "mqtt subscription";
    const MAX_PER_STORE: usize = MAX_SUBSCRIPTIONS;
    type Spec = Spec;

    fn id(spec: &Spec) -> &str {
        &spec.id
    }
    fn set_id(spec: &mut Spec, id: String) {
        spec.id = id;
    }
    /// The default client id is written into the spec at create, so that
    /// the status object always shows the one in use.
    fn assigned(spec: &mut Spec, store: &str) {
        if spec.client_id.is_none() {
            spec.client_id = Some(format!("tsstore-{store}-{}", spec.id));
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
        spec.last_timestamp
    }
    fn with_cursor(spec: &Spec, cursor: i64) -> Spec {
        Spec {
            last_timestamp: cursor,
            ..spec.clone()
        }
    }
    /// Never while running: the cursor is informational (the broker keeps
    /// the subscription's place), so it costs no file write a second on a
    /// gateway's flash; it is saved at shutdown, create and delete.
    fn persist_every(_: &Spec, _: &Timing) -> Option<Duration> {
        None
    }
    fn status_json(link: &Link<Self>) -> Value {
        let s = &link.spec;
        let l = link.live();
        let mut v = json!({
            "id": s.id,
            "broker_url": s.broker_url,
            "topics": s.topics,
            "status": l.status.as_str(),
            "messages_received": l.received,
            "messages_stored": l.stored,
            "errors": l.errors,
            "last_error": l.last_error,
            "created_at": s.created_at,
            "connected_since": l.connected_since.map(crate::clock::rfc3339_nanos),
            "last_timestamp": l.cursor,
            "qos": s.qos,
            "clean_session": s.clean_session,
            "timestamp": match s.timestamp {
                TimestampFrom::Now => "now",
                TimestampFrom::Field => "field",
            },
            "timestamp_unit": s.timestamp_unit.as_str(),
            "include_topic": s.include_topic,
        });
        if let Some(c) = &s.client_id {
            v["client_id"] = json!(c);
        }
        if let Some(u) = &s.username {
            v["username"] = json!(u);
        }
        if let Some(f) = &s.timestamp_field {
            v["timestamp_field"] = json!(f);
        }
        if let Some(ca) = &s.ca_file {
            v["ca_file"] = json!(ca.display().to_string());
        }
        v
    }
    fn session(ctx: Arc<Ctx<Self>>) -> Pin<Box<dyn Future<Output = Ended> + Send>> {
        Box::pin(async move { run(&ctx).await })
    }
}

/// One dial and, if it succeeds, one session.
async fn run(ctx: &Ctx<Subscription>) -> Ended {
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
    let client_id = spec.client_id(&ctx.name);
    let login = Login {
        client_id: &client_id,
        username: spec.username.as_deref(),
        password: spec.password.as_deref(),
        clean_session: spec.clean_session,
        inflight: 1,
        max_packet: MAX_PACKET,
        manual_acks: true,
    };
    let made = tokio::select! {
        r = client(ctx, &broker, &login, REQUESTS) => r,
        _ = stopped(&mut stop) => return Ended::Stopped,
    };
    let (client, mut events) = match made {
        Ok(c) => c,
        Err(e) => {
            link.error(Some(Status::Error), format!("dial failed: {e}"));
            return Ended::DialFailed;
        }
    };
    let t = ctx.timing.handshake_timeout;
    let connack = tokio::select! {
        r = tokio::time::timeout(t, events.poll()) => r,
        _ = stopped(&mut stop) => return Ended::Stopped,
    };
    match connack {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {}
        Ok(Ok(other)) => {
            link.error(
                Some(Status::Error),
                format!("dial failed: expected CONNACK, got {other:?}"),
            );
            return Ended::DialFailed;
        }
        Ok(Err(e)) => {
            link.error(Some(Status::Error), format!("dial failed: {e}"));
            return Ended::DialFailed;
        }
        Err(_) => {
            link.error(
                Some(Status::Error),
                format!("dial failed: handshake timed out after {t:?}"),
            );
            return Ended::DialFailed;
        }
    }
    let qos = if spec.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let filters: Vec<SubscribeFilter> = spec
        .topics
        .iter()
        .map(|t| SubscribeFilter::new(t.clone(), qos))
        .collect();
    if let Err(e) = client.try_subscribe_many(filters) {
        link.error(Some(Status::Error), format!("subscribe failed: {e}"));
        return Ended::DialFailed;
    }
    // `connected` once the broker acknowledged the subscription.
    let since = Instant::now();
    let mut s = Session {
        ctx,
        client,
        backlog: VecDeque::new(),
    };
    let end = s.receive(&mut events, &mut stop).await;
    match end {
        Exit::Stopped => {
            s.close(&mut events).await;
            Ended::Stopped
        }
        Exit::Failed(e) => {
            link.error(Some(Status::Error), e);
            s.close(&mut events).await;
            Ended::Dropped { since }
        }
        Exit::Lost(e) => {
            link.error(Some(Status::Error), format!("connection lost: {e}"));
            Ended::Dropped { since }
        }
    }
}

enum Exit {
    Stopped,
    /// The store failed: what was not acknowledged is redelivered.
    Failed(String),
    /// The connection failed.
    Lost(String),
}

struct Session<'a> {
    ctx: &'a Ctx<Subscription>,
    client: AsyncClient,
    /// Acks not yet in the client's queue (it was full), oldest first.
    backlog: VecDeque<Publish>,
}

impl Session<'_> {
    async fn receive(
        &mut self,
        events: &mut EventLoop,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Exit {
        let mut batch: Vec<Publish> = Vec::with_capacity(MAX_BATCH);
        loop {
            self.queue_acks();
            let ev = tokio::select! {
                r = events.poll() => r,
                _ = stopped(stop) => return Exit::Stopped,
            };
            if let Err(e) = self.take(ev, &mut batch) {
                return Exit::Lost(e);
            }
            // The rest of what the last read brought, without waiting.
            while batch.len() < MAX_BATCH && !events.state.events.is_empty() {
                let ev = events.poll().await;
                if let Err(e) = self.take(ev, &mut batch) {
                    return Exit::Lost(e);
                }
            }
            if !batch.is_empty() {
                if let Err(e) = self.store(&mut batch).await {
                    return Exit::Failed(e);
                }
            }
        }
    }

    /// Adds a publish to `batch`; notes a refused subscription.
    fn take(
        &self,
        ev: Result<Event, rumqttc::ConnectionError>,
        batch: &mut Vec<Publish>,
    ) -> Result<(), String> {
        match ev.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::Publish(p)) => batch.push(p),
            Event::Incoming(Packet::SubAck(a)) => {
                let link = &self.ctx.link;
                if link.status() != Status::Connected {
                    tracing::info!(link = %link.id(), url = %crate::redact::url(&link.spec.broker_url), "mqtt subscription connected");
                    link.set_status(Status::Connected);
                }
                let refused = a
                    .return_codes
                    .iter()
                    .zip(&self.ctx.link.spec.topics)
                    .filter(|(c, _)| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    .map(|(_, t)| t.as_str())
                    .collect::<Vec<_>>();
                if !refused.is_empty() {
                    self.ctx.link.error(
                        None,
                        format!("the broker refused the subscription to {refused:?}"),
                    );
                }
            }
            Event::Incoming(Packet::Disconnect) => return Err("the broker disconnected".into()),
            _ => {}
        }
        Ok(())
    }

    /// Stores `batch` in order and acknowledges every message the store
    /// took or refused for what it is. On a store failure, acknowledges
    /// what came before it and returns the error.
    async fn store(&mut self, batch: &mut Vec<Publish>) -> Result<(), String> {
        let ctx = self.ctx;
        let spec = &ctx.link.spec;
        let n = batch.len();
        let mut refused: Vec<Option<String>> = Vec::with_capacity(n);
        let mut items = Vec::with_capacity(n);
        for p in batch.iter() {
            let topic = &p.topic;
            match to_object(spec, &ctx.store, topic, &p.payload, ctx.max_future) {
                Ok(item) => {
                    items.push(item);
                    refused.push(None);
                }
                Err(e) => refused.push(Some(format!("message on {topic:?}: {e}"))),
            }
        }
        let mut results = insert(&ctx.store, &ctx.metrics, items).await.into_iter();
        let (mut stored, mut errors, mut last_error, mut newest) = (0u64, 0u64, None, None);
        let mut failed = None;
        let mut acked = 0;
        for (p, r) in batch.iter().zip(refused) {
            let outcome = match r {
                Some(e) => Err(e),
                None => match results.next() {
                    Some(Ok(h)) => Ok(h),
                    Some(Err(e)) if e.is_client_error() => {
                        Err(format!("message on {:?}: {e}", p.topic))
                    }
                    Some(Err(e)) => {
                        failed = Some(format!("storing failed: {e}"));
                        break;
                    }
                    None => {
                        failed = Some("storing failed".into());
                        break;
                    }
                },
            };
            match outcome {
                Ok(h) => {
                    stored += 1;
                    newest = Some(h.timestamp);
                }
                Err(e) => {
                    tracing::debug!(link = %ctx.link.id(), error = %e, "mqtt message refused");
                    errors += 1;
                    last_error = Some(e);
                }
            }
            acked += 1;
        }
        {
            let mut l = ctx.link.live();
            l.received += n as u64;
            l.stored += stored;
            l.errors += errors;
            if let Some(e) = last_error {
                l.last_error = e;
            }
        }
        if let Some(t) = newest {
            ctx.link.advance(t);
        }
        for p in batch.drain(..).take(acked) {
            self.ack(p);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn ack(&mut self, mut p: Publish) {
        if p.qos == QoS::AtMostOnce {
            return;
        }
        p.payload = Default::default();
        if self.backlog.is_empty() {
            if let Err(rumqttc::ClientError::TryRequest(_)) = self.client.try_ack(&p) {
                self.backlog.push_back(p);
            }
        } else {
            self.backlog.push_back(p);
        }
    }

    /// Moves backlogged acks into the client's queue while it has room.
    fn queue_acks(&mut self) {
        while let Some(p) = self.backlog.front() {
            if self.client.try_ack(p).is_err() {
                return;
            }
            self.backlog.pop_front();
        }
    }

    /// Sends the queued acks and a DISCONNECT (briefly): what was stored
    /// is not redelivered.
    async fn close(&mut self, events: &mut EventLoop) {
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            self.queue_acks();
            if self.backlog.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, events.poll()).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
        }
        if self.client.try_disconnect().is_err() {
            return;
        }
        while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, events.poll()).await {
            if ev == Event::Outgoing(Outgoing::Disconnect) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters() {
        for ok in [
            "a", "a/b", "+", "#", "a/+/c", "a/#", "+/+/#", "/a", "a//b", "$SYS/#",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "#/a", "a+", "a/b+/c", "a\0b"] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
        assert!(check_filter(&"a".repeat(1024)).is_ok());
        assert!(check_filter(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn timestamp_fields_in_each_unit() {
        let v = json!({"ts": 1700000000, "f": 1700000000.5, "m": {"t": 5}, "m.t": 7, "s": "1", "z": 0, "neg": -3, "big": u64::MAX});
        assert_eq!(
            timestamp_of(&v, "ts", Unit::S),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(timestamp_of(&v, "ts", Unit::Ms), Ok(1_700_000_000_000_000));
        assert_eq!(timestamp_of(&v, "ts", Unit::Us), Ok(1_700_000_000_000));
        assert_eq!(timestamp_of(&v, "ts", Unit::Ns), Ok(1_700_000_000));
        assert_eq!(
            timestamp_of(&v, "f", Unit::S),
            Ok(1_700_000_000_500_000_000)
        );
        assert_eq!(
            timestamp_of(&json!({"t": 1700000000.25}), "t", Unit::S),
            Ok(1_700_000_000_250_000_000)
        );
        assert_eq!(timestamp_of(&json!({"t": 1.5}), "t", Unit::Us), Ok(1_500));
        // A top-level name first, then a dotted path.
        assert_eq!(timestamp_of(&v, "m.t", Unit::Ns), Ok(7));
        assert_eq!(
            timestamp_of(&json!({"m": {"t": 5}}), "m.t", Unit::Ns),
            Ok(5)
        );
        assert!(timestamp_of(&v, "nope", Unit::Ns)
            .unwrap_err()
            .contains("missing"));
        assert!(timestamp_of(&v, "s", Unit::Ns)
            .unwrap_err()
            .contains("not a number"));
        for bad in ["z", "neg", "big"] {
            assert!(
                timestamp_of(&v, bad, Unit::Ns)
                    .unwrap_err()
                    .contains("range"),
                "{bad}"
            );
        }
        assert!(timestamp_of(&json!({"t": i64::MAX}), "t", Unit::S).is_err());
        assert!(timestamp_of(&json!([1]), "t", Unit::S).is_err());
    }
}
