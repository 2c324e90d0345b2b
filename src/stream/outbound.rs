//! Outbound connections: the server dials a remote WebSocket and either
//! pushes a store's objects to it (`push`) or stores what it sends
//! (`pull`). Managed through `/api/stores/:store/ws/connections`
//! (`crate::api::connections`).
//!
//! Each connection is one supervised tokio task ([`supervise`]): dial
//! (handshake timeout), run a session until it ends, wait a capped
//! exponential backoff with jitter, dial again. The backoff resets after a
//! healthy session (connected at least [`Timing::healthy_after`]). A session
//! pings its peer every [`Timing::ping_every`] and drops it when no frame
//! (pong or other) arrives within [`Timing::pong_timeout`] of a ping. A
//! failing connection only affects its own task.
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
//! Pull stores every text or binary message as `/ws/write` does
//! ([`super::ingest`]) and answers `ack` or `error` per message; a bad
//! message counts as an error and never closes the connection.
//!
//! Persistence: `<store>/ws_connections.json`, rewritten atomically on
//! create and delete, at most once per [`Timing::persist_every`] while a
//! cursor moves, and at shutdown. [`Outbound::start`] restarts every
//! persisted connection when the server starts.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::follow::{self, Follower, Start};
use super::{ack_frame, data_frame, error_frame, ingest};
use crate::api::metrics::Metrics;
use crate::clock;
use crate::registry::Registry;
use crate::store::{Filter, Store};

/// The persisted connections of a store, in its directory.
pub const FILE: &str = "ws_connections.json";

/// Timing of the supervisor and sessions; [`Timing::default`] in the
/// server, shorter ones in tests.
#[derive(Debug, Clone)]
pub struct Timing {
    /// First retry delay.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Each delay is drawn from `[d * (1 - jitter), d]`.
    pub jitter: f64,
    /// A session connected this long resets the backoff.
    pub healthy_after: Duration,
    pub ping_every: Duration,
    /// A ping unanswered (no frame at all) this long ends the session.
    pub pong_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Cursors are persisted at most this often while running.
    pub persist_every: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            jitter: 0.2,
            healthy_after: Duration::from_secs(30),
            ping_every: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            persist_every: Duration::from_secs(1),
        }
    }
}

/// Capped exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    base: Duration,
}

impl Backoff {
    pub fn new(t: &Timing) -> Backoff {
        Backoff {
            min: t.backoff_min,
            max: t.backoff_max,
            jitter: t.jitter.clamp(0.0, 1.0),
            base: t.backoff_min,
        }
    }

    /// The next delay, `r` in `[0, 1)` choosing within the jitter range;
    /// doubles the base for the following one.
    pub fn next_with(&mut self, r: f64) -> Duration {
        let d = self.base.mul_f64(1.0 - self.jitter * r.clamp(0.0, 1.0));
        self.base = (self.base * 2).min(self.max);
        d
    }

    /// The next delay with a random jitter.
    pub fn next_delay(&mut self) -> Duration {
        let r = (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64;
        self.next_with(r)
    }

    pub fn reset(&mut self) {
        self.base = self.min;
    }
}

/// How a session (one dial and what follows) ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop: the supervisor returns.
    Stopped,
    /// The dial failed.
    DialFailed,
    /// A session ran (connected at `since`) and ended, cleanly or not.
    Dropped { since: Instant },
}

/// Runs `session` again and again with [`Backoff`] between runs until it
/// returns [`Ended::Stopped`] or `stop` turns true while waiting.
pub async fn supervise<F, Fut>(timing: &Timing, mut stop: watch::Receiver<bool>, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Ended>,
{
    let mut backoff = Backoff::new(timing);
    loop {
        if *stop.borrow() {
            return;
        }
        // The session watches `stop` itself, so that it can close its
        // socket properly.
        let ended = session().await;
        match ended {
            Ended::Stopped => return,
            Ended::DialFailed => {}
            Ended::Dropped { since } => {
                if since.elapsed() >= timing.healthy_after {
                    backoff.reset();
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `push` or `pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Push,
    Pull,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Push => "push",
            Mode::Pull => "pull",
        }
    }
}

/// What a connection is, as created and persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    pub mode: Mode,
    pub url: String,
    #[serde(default)]
    pub from: i64,
    #[serde(default = "full")]
    pub format: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub filter_ignore_case: bool,
    pub created_at: String,
    #[serde(default)]
    pub last_timestamp: i64,
    /// PEM file of extra CA certificates trusted for `wss://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn full() -> String {
    "full".into()
}

#[derive(Serialize, Deserialize, Default)]
struct File {
    connections: Vec<Spec>,
}

/// The state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Disconnected,
    Connecting,
    Connected,
    Error,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Disconnected,
        Status::Connecting,
        Status::Connected,
        Status::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Disconnected => "disconnected",
            Status::Connecting => "connecting",
            Status::Connected => "connected",
            Status::Error => "error",
        }
    }
}

#[derive(Debug)]
struct Live {
    status: Status,
    last_timestamp: i64,
    sent: u64,
    received: u64,
    errors: u64,
    last_error: String,
    connected_since: Option<i64>,
    /// The cursor moved since it was last persisted.
    dirty: bool,
    /// The remote acks what it receives: only acks move the cursor from
    /// then on (for the life of the process).
    acking: bool,
}

/// One connection: its spec, live state and task.
pub struct Conn {
    spec: Spec,
    live: Mutex<Live>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Conn {
    fn new(spec: Spec) -> Conn {
        Conn {
            live: Mutex::new(Live {
                status: Status::Disconnected,
                last_timestamp: spec.last_timestamp,
                sent: 0,
                received: 0,
                errors: 0,
                last_error: String::new(),
                connected_since: None,
                dirty: false,
                acking: false,
            }),
            stop: watch::channel(false).0,
            task: Mutex::new(None),
            spec,
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn status(&self) -> Status {
        self.live().status
    }

    /// The status object of the API.
    pub fn status_json(&self) -> Value {
        let l = self.live();
        let s = &self.spec;
        let mut v = json!({
            "id": s.id,
            "mode": s.mode.as_str(),
            "url": s.url,
            "from": s.from,
            "format": s.format,
            "status": l.status.as_str(),
            "created_at": s.created_at,
            "last_timestamp": l.last_timestamp,
            "messages_sent": l.sent,
            "messages_received": l.received,
            "errors": l.errors,
            "last_error": l.last_error,
            "connected_since": l.connected_since.map(clock::rfc3339_nanos),
        });
        if s.mode == Mode::Push {
            v["filter"] = json!(s.filter);
            v["filter_ignore_case"] = json!(s.filter_ignore_case);
        }
        if let Some(ca) = &s.ca_file {
            v["ca_file"] = json!(ca.display().to_string());
        }
        v
    }

    fn persisted(&self) -> Spec {
        let mut s = self.spec.clone();
        let mut l = self.live();
        s.last_timestamp = l.last_timestamp;
        l.dirty = false;
        s
    }

    fn set_status(&self, st: Status) {
        let mut l = self.live();
        l.status = st;
        l.connected_since = (st == Status::Connected).then(crate::store::now_ns);
    }

    fn error(&self, st: Option<Status>, message: String) {
        tracing::warn!(connection = %self.spec.id, url = %self.spec.url, error = %message, "outbound connection");
        let mut l = self.live();
        l.errors += 1;
        l.last_error = message;
        if let Some(st) = st {
            l.status = st;
            l.connected_since = None;
        }
    }

    fn advance(&self, ts: i64) {
        let mut l = self.live();
        if ts > l.last_timestamp {
            l.last_timestamp = ts;
            l.dirty = true;
        }
    }

    async fn stop_and_wait(&self, within: Duration) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut t) = task {
            if tokio::time::timeout(within, &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
    }
}

/// Why a connection could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Invalid(String),
    #[error("saving {FILE}: {0}")]
    Io(#[from] std::io::Error),
}

/// Every outbound connection of the server, by store.
pub struct Outbound {
    stores: Arc<Registry>,
    metrics: Arc<Metrics>,
    timing: Timing,
    by_store: Mutex<HashMap<String, Vec<Arc<Conn>>>>,
    /// Serialises file writes.
    saving: tokio::sync::Mutex<()>,
    stopping: watch::Sender<bool>,
}

impl Outbound {
    pub fn new(stores: Arc<Registry>, metrics: Arc<Metrics>, timing: Timing) -> Outbound {
        Outbound {
            stores,
            metrics,
            timing,
            by_store: Mutex::new(HashMap::new()),
            saving: tokio::sync::Mutex::new(()),
            stopping: watch::channel(false).0,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<Arc<Conn>>>> {
        self.by_store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Restarts the persisted connections of every store and starts the
    /// cursor flusher. Called once when the server starts.
    pub async fn start(self: &Arc<Self>) {
        let stores = self.stores.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for name in stores.list() {
                let path = stores.dir(&name).join(FILE);
                if !path.exists() {
                    continue;
                }
                let mut specs = match load(&path) {
                    Ok(f) => f.connections,
                    Err(e) => {
                        tracing::error!(store = %name, error = %e, "cannot read {FILE}");
                        continue;
                    }
                };
                if specs.is_empty() {
                    continue;
                }
                specs.sort_by_key(|s| clock::parse_rfc3339(&s.created_at).unwrap_or(0));
                out.push((name, specs));
            }
            out
        })
        .await
        .unwrap_or_default();
        for (name, specs) in loaded {
            let conns: Vec<Arc<Conn>> = specs.into_iter().map(|s| Arc::new(Conn::new(s))).collect();
            self.map()
                .entry(name.clone())
                .or_default()
                .extend(conns.iter().cloned());
            // Listed and persisted at once, dialling once the store is
            // open: a store recovering for minutes holds up its own
            // connections, nothing else.
            let me = self.clone();
            let mut stopping = self.stopping.subscribe();
            tokio::spawn(async move {
                let opened = tokio::select! {
                    r = me.stores.open_when_ready(&name) => r,
                    _ = stopped(&mut stopping) => return,
                };
                let store = match opened {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(store = %name, error = %e, "cannot open store for its outbound connections");
                        return;
                    }
                };
                tracing::info!(store = %name, n = conns.len(), "restarting outbound connections");
                for conn in conns {
                    // Not if it was deleted (or its store) meanwhile.
                    if !*conn.stop.borrow() {
                        me.spawn(&name, &store, &conn);
                    }
                }
            });
        }
        let me = self.clone();
        let mut stopping = self.stopping.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.timing.persist_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => me.flush_dirty().await,
                    _ = stopped(&mut stopping) => return,
                }
            }
        });
    }

    /// Persists every store whose cursors moved.
    async fn flush_dirty(&self) {
        let dirty: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, v)| v.iter().any(|c| c.live().dirty))
            .map(|(k, _)| k.clone())
            .collect();
        for name in dirty {
            if let Err(e) = self.save(&name).await {
                tracing::error!(store = %name, error = %e, "saving {FILE} failed");
            }
        }
    }

    /// Writes the connections of `name` to its file (atomically).
    async fn save(&self, name: &str) -> std::io::Result<()> {
        let _guard = self.saving.lock().await;
        let Some(conns) = self.map().get(name).cloned() else {
            return Ok(());
        };
        let file = File {
            connections: conns.iter().map(|c| c.persisted()).collect(),
        };
        let dir = self.stores.dir(name);
        tokio::task::spawn_blocking(move || write_atomic(&dir, &file))
            .await
            .map_err(std::io::Error::other)?
    }

    /// The connections of store `name`, oldest first.
    pub fn list(&self, name: &str) -> Vec<Arc<Conn>> {
        self.map().get(name).cloned().unwrap_or_default()
    }

    pub fn get(&self, name: &str, id: &str) -> Option<Arc<Conn>> {
        self.list(name).into_iter().find(|c| c.id() == id)
    }

    /// Creates, persists and starts a connection.
    pub async fn create(
        &self,
        name: &str,
        store: &Arc<Store>,
        mut spec: Spec,
    ) -> Result<Arc<Conn>, CreateError> {
        if let Some(ca) = &spec.ca_file {
            let ca = ca.clone();
            tokio::task::spawn_blocking(move || client_tls(Some(&ca)))
                .await
                .map_err(std::io::Error::other)?
                .map_err(CreateError::Invalid)?;
        }
        let conn = {
            let mut map = self.map();
            let list = map.entry(name.to_string()).or_default();
            spec.id = loop {
                let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
                if !list.iter().any(|c| c.id() == id) {
                    break id;
                }
            };
            let conn = Arc::new(Conn::new(spec));
            list.push(conn.clone());
            conn
        };
        if let Err(e) = self.save(name).await {
            if let Some(v) = self.map().get_mut(name) {
                v.retain(|c| !Arc::ptr_eq(c, &conn));
            }
            return Err(e.into());
        }
        self.spawn(name, store, &conn);
        Ok(conn)
    }

    /// Stops (within a second) and forgets a connection; false if unknown.
    pub async fn delete(&self, name: &str, id: &str) -> std::io::Result<bool> {
        let conn = {
            let mut map = self.map();
            let Some(list) = map.get_mut(name) else {
                return Ok(false);
            };
            let Some(i) = list.iter().position(|c| c.id() == id) else {
                return Ok(false);
            };
            list.remove(i)
        };
        conn.stop_and_wait(Duration::from_millis(900)).await;
        self.save(name).await?;
        Ok(true)
    }

    /// Stops every connection of a store being deleted.
    pub async fn remove_store(&self, name: &str) {
        let conns = self.map().remove(name).unwrap_or_default();
        for c in &conns {
            c.stop.send_replace(true);
        }
        for c in conns {
            c.stop_and_wait(Duration::from_secs(1)).await;
        }
    }

    /// Stops every connection and persists the cursors (shutdown, before
    /// the stores close).
    pub async fn stop_all(&self) {
        self.stopping.send_replace(true);
        let all: Vec<(String, Vec<Arc<Conn>>)> = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for c in all.iter().flat_map(|(_, v)| v) {
            c.stop.send_replace(true);
        }
        for c in all.iter().flat_map(|(_, v)| v) {
            c.stop_and_wait(Duration::from_secs(2)).await;
        }
        for (name, _) in &all {
            if let Err(e) = self.save(name).await {
                tracing::error!(store = %name, error = %e, "saving {FILE} failed");
            }
        }
    }

    /// Connections per status, for `/metrics`.
    pub fn count_by_status(&self) -> [(Status, u64); 4] {
        let mut out = Status::ALL.map(|s| (s, 0u64));
        for c in self.map().values().flatten() {
            let st = c.status();
            if let Some(e) = out.iter_mut().find(|(s, _)| *s == st) {
                e.1 += 1;
            }
        }
        out
    }

    fn spawn(&self, name: &str, store: &Arc<Store>, conn: &Arc<Conn>) {
        let ctx = Session {
            name: name.to_string(),
            store: store.clone(),
            stores: self.stores.clone(),
            metrics: self.metrics.clone(),
            conn: conn.clone(),
            timing: self.timing.clone(),
        };
        let stop = conn.stop.subscribe();
        let task = tokio::spawn(async move {
            let timing = ctx.timing.clone();
            supervise(&timing, stop, || ctx.run()).await;
            let mut l = ctx.conn.live();
            l.status = Status::Disconnected;
            l.connected_since = None;
        });
        *conn.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }
}

fn load(path: &Path) -> std::io::Result<File> {
    let text = std::fs::read(path)?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

/// Temp file, fsync, rename, fsync of the directory.
fn write_atomic(dir: &Path, file: &File) -> std::io::Result<()> {
    use std::io::Write;
    let mut text = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Checks a `ws://` or `wss://` URL with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let bad = || format!("invalid url {url:?}: must be a ws:// or wss:// URL");
    let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("ws") | Some("wss"), Some(h)) if !h.is_empty() => Ok(()),
        _ => Err(bad()),
    }
}

/// The rustls client configuration of `wss://` dials: the ring provider,
/// the webpki roots, plus the certificates of `ca_file` if given.
pub fn client_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(p) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
            .and_then(|i| i.collect())
            .map_err(|e| format!("invalid ca_file {}: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "invalid ca_file {}: no certificate in it",
                p.display()
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("invalid ca_file {}: {e}", p.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a connection's sessions share.
struct Session {
    name: String,
    store: Arc<Store>,
    stores: Arc<Registry>,
    metrics: Arc<Metrics>,
    conn: Arc<Conn>,
    timing: Timing,
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
    async fn run(&self) -> Ended {
        let mut stop = self.conn.stop.subscribe();
        self.conn.set_status(Status::Connecting);
        let ws = tokio::select! {
            r = self.dial() => r,
            _ = stopped(&mut stop) => return Ended::Stopped,
        };
        let mut ws = match ws {
            Ok(ws) => ws,
            Err(e) => {
                self.conn
                    .error(Some(Status::Error), format!("dial failed: {e}"));
                return Ended::DialFailed;
            }
        };
        tracing::info!(connection = %self.conn.id(), url = %self.conn.spec.url, "outbound connection established");
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

    async fn dial(&self) -> Result<Ws, String> {
        let spec = &self.conn.spec;
        let mut req = spec
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        for (k, v) in &spec.headers {
            let k = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let v = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
            req.headers_mut().insert(k, v);
        }
        let connector = if spec.url.starts_with("wss:") {
            let ca = spec.ca_file.clone();
            let cfg = tokio::task::spawn_blocking(move || client_tls(ca.as_deref()))
                .await
                .map_err(|e| e.to_string())??;
            Some(tokio_tungstenite::Connector::Rustls(cfg))
        } else {
            None
        };
        let dial = tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector);
        match tokio::time::timeout(self.timing.handshake_timeout, dial).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "handshake timed out after {:?}",
                self.timing.handshake_timeout
            )),
        }
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
        // Subscribe before the first read: a write in between wakes us.
        let Some(mut written) = self.stores.watch(&self.name) else {
            return Exit::Failed("store is not open".into());
        };
        written.borrow_and_update();
        let mut follower = match Follower::new(self.store.clone(), self.start(), filter) {
            Ok(f) => f,
            Err(e) => return Exit::Failed(format!("reading the store: {e}")),
        };
        let mut peer = Peer::new(&self.timing);
        loop {
            written.borrow_and_update();
            let batch = match follower.next_batch(follow::BATCH) {
                Ok(b) => b,
                Err(e) => return Exit::Failed(format!("reading the store: {e}")),
            };
            if let Some(g) = batch.gap {
                self.conn.error(
                    None,
                    format!(
                        "gap: {} objects with timestamps {}..={} were overwritten before they were sent",
                        g.lost, g.from, g.to
                    ),
                );
            }
            if !batch.objects.is_empty() {
                let n = batch.objects.len() as u64;
                let newest = batch.objects[n as usize - 1].handle.timestamp;
                let send = async {
                    for o in &batch.objects {
                        let f = data_frame(&self.store, o, compact);
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
                if !acking {
                    self.conn.advance(newest);
                }
                // Take the replies already there, so that a peer blocked on
                // writing acks never stalls our sends.
                while let Some(m) = ws.next().now_or_never() {
                    if let Some(exit) = self.on_push_frame(&mut peer, m) {
                        return exit;
                    }
                }
            }
            if !batch.caught_up {
                continue;
            }
            loop {
                let next_ping = peer.deadline(&self.timing);
                tokio::select! {
                    r = written.changed() => {
                        if r.is_err() {
                            return Exit::Failed("store closed".into());
                        }
                        break;
                    }
                    m = ws.next() => {
                        if let Some(exit) = self.on_push_frame(&mut peer, m) {
                            return exit;
                        }
                    }
                    _ = tokio::time::sleep_until(next_ping) => {
                        if let Err(e) = peer.ping(ws, &self.timing).await {
                            return Exit::Failed(e);
                        }
                    }
                    _ = stopped(stop) => return Exit::Stopped,
                }
            }
        }
    }

    /// Handles a frame from a push peer: acks move the cursor.
    fn on_push_frame(
        &self,
        peer: &mut Peer,
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
                            self.conn.advance(ts);
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
            let next_ping = peer.deadline(&self.timing);
            let first = tokio::select! {
                m = ws.next() => m,
                _ = tokio::time::sleep_until(next_ping) => {
                    if let Err(e) = peer.ping(ws, &self.timing).await {
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
                let results = ingest(&self.store, &self.metrics, messages, compact).await;
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

/// Liveness of the peer: pings and the pong deadline.
struct Peer {
    last_ping: Instant,
    /// When the unanswered ping was sent.
    waiting_since: Option<Instant>,
}

impl Peer {
    fn new(_t: &Timing) -> Peer {
        Peer {
            last_ping: Instant::now(),
            waiting_since: None,
        }
    }

    fn deadline(&self, t: &Timing) -> Instant {
        match self.waiting_since {
            Some(at) => at + t.pong_timeout,
            None => self.last_ping + t.ping_every,
        }
    }

    /// At the deadline: fails if a ping went unanswered, else pings.
    async fn ping(&mut self, ws: &mut Ws, t: &Timing) -> Result<(), String> {
        if self.waiting_since.is_some() {
            return Err(format!("no pong within {:?}", t.pong_timeout));
        }
        ws.send(Message::Ping(Default::default()))
            .await
            .map_err(|e| format!("ping failed: {e}"))?;
        self.last_ping = Instant::now();
        self.waiting_since = Some(self.last_ping);
        Ok(())
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
                self.waiting_since = None;
                Ok(Some(m))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing::default()
    }

    #[test]
    fn backoff_doubles_to_the_cap_within_the_jitter_range() {
        let t = timing();
        let mut b = Backoff::new(&t);
        let got: Vec<u64> = (0..9).map(|_| b.next_with(0.0).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let mut b = Backoff::new(&t);
        for base in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0] {
            let d = b.next_delay().as_secs_f64();
            assert!(d <= base && d >= base * (1.0 - t.jitter), "{d} vs {base}");
        }
        let mut b = Backoff::new(&t);
        b.next_with(0.5);
        b.next_with(0.5);
        assert_eq!(b.next_with(0.5), Duration::from_millis(3600));
        b.reset();
        assert_eq!(b.next_with(0.0), Duration::from_secs(1));
    }

    /// Runs the supervisor with sessions scripted by `script` (what each
    /// attempt does) and returns the start times of the attempts, relative
    /// to the first.
    async fn attempts(script: Vec<(Duration, bool)>) -> Vec<Duration> {
        let t = Timing {
            jitter: 0.0,
            ..timing()
        };
        let (stop_tx, stop) = watch::channel(false);
        let starts = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let (s2, sc) = (starts.clone(), script.clone());
        let stop_tx = Arc::new(stop_tx);
        let stopper = stop_tx.clone();
        supervise(&t, stop, move || {
            let (s2, sc, stopper) = (s2.clone(), sc.clone(), stopper.clone());
            async move {
                let now = Instant::now();
                s2.lock().unwrap().push(now);
                let step = sc.lock().unwrap().next();
                match step {
                    None => {
                        stopper.send_replace(true);
                        Ended::Stopped
                    }
                    Some((up, connected)) => {
                        tokio::time::sleep(up).await;
                        if connected {
                            Ended::Dropped { since: now }
                        } else {
                            Ended::DialFailed
                        }
                    }
                }
            }
        })
        .await;
        let v = starts.lock().unwrap().clone();
        v.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn failed_dials_back_off_exponentially_to_the_cap() {
        let gaps = attempts(vec![(Duration::ZERO, false); 9]).await;
        let secs: Vec<u64> = gaps.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_session_resets_the_backoff_a_short_one_does_not() {
        let s = Duration::from_secs;
        let gaps = attempts(vec![
            (s(0), false),
            (s(0), false),
            (s(0), false),
            // Up 5 s: not healthy, the next delay keeps doubling.
            (s(5), true),
            (s(0), false),
            // Up 31 s: healthy, back to 1 s.
            (s(31), true),
            (s(0), false),
        ])
        .await;
        let secs: Vec<u64> = gaps.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 5 + 8, 16, 31 + 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_supervisor_while_it_waits() {
        let t = timing();
        let (tx, rx) = watch::channel(false);
        let runs = Arc::new(Mutex::new(0));
        let r2 = runs.clone();
        let task = tokio::spawn(async move {
            supervise(&t, rx, move || {
                *r2.lock().unwrap() += 1;
                async { Ended::DialFailed }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(3500)).await;
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_millis(10), task)
            .await
            .expect("stopped at once")
            .unwrap();
        // Attempts at 0, 1 and 3 s.
        assert_eq!(*runs.lock().unwrap(), 3);
    }

    #[test]
    fn urls_must_be_websocket_urls() {
        assert!(check_url("ws://127.0.0.1:9000").is_ok());
        assert!(check_url("wss://example.com/x?y=1").is_ok());
        for bad in ["http://example.com", "ws://", "not a url", "", "/relative"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_file_round_trips_with_two_space_indent() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            id: "0123abcd".into(),
            mode: Mode::Push,
            url: "ws://h".into(),
            from: 5,
            format: "full".into(),
            headers: BTreeMap::from([("A".into(), "b".into())]),
            filter: "x".into(),
            filter_ignore_case: true,
            created_at: clock::rfc3339_nanos(1),
            last_timestamp: 42,
            ca_file: None,
        };
        write_atomic(
            dir.path(),
            &File {
                connections: vec![spec],
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.starts_with("{\n  \"connections\": [\n    {\n      \"id\""));
        let back = load(&dir.path().join(FILE)).unwrap();
        assert_eq!(back.connections[0].last_timestamp, 42);
        assert_eq!(back.connections[0].mode, Mode::Push);
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
    }
}
