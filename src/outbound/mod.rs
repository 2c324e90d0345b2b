//! Outbound connections: the server dials a remote WebSocket and either
//! pushes a store's objects to it (`push`) or stores what it sends
//! (`pull`). Managed through `/api/stores/:store/ws/connections`
//! (`crate::api::connections`). This module owns the connections (create,
//! list, delete, restart at start, stop at shutdown); the parts live in:
//!
//! - [`supervise`], the retry loop: a capped exponential backoff with
//!   jitter that resets after a healthy session;
//! - [`session`], one dial and what follows (push, pull, pings);
//! - [`persist`], the file `<store>/ws_connections.json`;
//! - [`policy`], what a connection may dial (checked at create and at
//!   every dial) and where its `ca_file` may be;
//! - [`links`], the same bookkeeping for links of other kinds, used by
//!   [`mqtt`] (sinks and subscriptions);
//! - [`tls`], the client TLS configuration of `wss://` dials and the rules
//!   for reading a `ca_file`;
//! - [`webhook`], one HTTP POST of an alert rule's webhook, under the same
//!   policy and TLS configuration;
//! - [`alerting`], the alert rules of a push connection, as a trait the
//!   rules module implements.
//!
//! Each connection is one supervised tokio task: dial (handshake timeout),
//! run a session until it ends, wait, dial again. A failing connection
//! only affects its own task.
//!
//! Persistence: `<store>/ws_connections.json`, rewritten atomically on
//! create and delete, at most once per [`Timing::persist_every`] while a
//! cursor moves, and at shutdown. [`Outbound::start`] restarts every
//! persisted connection when the server starts.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;

pub mod alerting;
pub mod links;
pub mod mqtt;
pub mod persist;
pub mod policy;
pub mod session;
pub mod supervise;
pub mod tls;
pub mod webhook;

pub use persist::FILE;
use persist::{load, write_atomic, File};
use policy::{Policy, ResolveError, Role, Target};
use session::Session;
use supervise::stopped;
pub use supervise::{supervise, Backoff, Ended, Timing};

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
    /// PEM file of extra CA certificates trusted for `wss://`, in the CA
    /// directory (see [`tls`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Who created it: the policy it is held to at every dial.
    #[serde(default)]
    pub created_by: Role,
    /// Push: windows instead of objects (`agg_window`, ...; issue 15).
    #[serde(flatten)]
    pub agg: crate::codec::agg::Params,
    /// Alert rules evaluated on each object a push connection sends
    /// (`crate::rules::Spec` objects; see [`alerting`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Value>,
}

fn full() -> String {
    "full".into()
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
    /// Its alert rules, if it has any (set once, before its task starts).
    rules: OnceLock<Arc<dyn alerting::Alerting>>,
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
            rules: OnceLock::new(),
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
            s.agg.add_to(&mut v);
        }
        if let Some(ca) = &s.ca_file {
            v["ca_file"] = json!(ca.display().to_string());
        }
        let rules = self.rules.get();
        v["rules_count"] = json!(rules.map_or(0, |r| r.count()));
        v["alerts_fired"] = json!(rules.map_or(0, |r| r.fired()));
        if let Some(r) = rules {
            v["rules"] = r.status();
        }
        v
    }

    /// Its alert rules, if any.
    pub(crate) fn rules(&self) -> Option<&Arc<dyn alerting::Alerting>> {
        self.rules.get()
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
        self.fail(st, message, None);
    }

    /// Counts an error; `why` is logged (for the administrator) but not
    /// shown in `last_error`.
    fn fail(&self, st: Option<Status>, message: String, why: Option<policy::Refusal>) {
        let url = crate::redact::url(&self.spec.url);
        match why {
            None => {
                tracing::warn!(connection = %self.spec.id, %url, error = %message, "outbound connection")
            }
            Some(why) => {
                tracing::warn!(connection = %self.spec.id, %url, error = %message, reason = %why, "outbound connection")
            }
        }
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
    /// The outbound policy refuses the URL (the reason is logged).
    #[error("{}", policy::REFUSED)]
    Refused,
    #[error("saving {FILE}: {0}")]
    Io(#[from] std::io::Error),
    /// The store was deleted (or is being deleted) meanwhile.
    #[error("store not found")]
    Gone,
}

/// Every outbound connection of the server, by store.
pub struct Outbound {
    stores: Arc<Registry>,
    metrics: Arc<Metrics>,
    timing: Timing,
    policy: Arc<Policy>,
    max_future: std::time::Duration,
    by_store: Mutex<HashMap<String, Vec<Arc<Conn>>>>,
    /// Serialises file writes.
    saving: tokio::sync::Mutex<()>,
    stopping: watch::Sender<bool>,
    /// Makes a connection's alert rules (installed by the server's state).
    alerting: OnceLock<Arc<alerting::Build>>,
}

impl Outbound {
    pub fn new(
        stores: Arc<Registry>,
        metrics: Arc<Metrics>,
        timing: Timing,
        policy: Policy,
        max_future: std::time::Duration,
    ) -> Outbound {
        Outbound {
            stores,
            metrics,
            timing,
            policy: Arc::new(policy),
            max_future,
            by_store: Mutex::new(HashMap::new()),
            saving: tokio::sync::Mutex::new(()),
            stopping: watch::channel(false).0,
            alerting: OnceLock::new(),
        }
    }

    /// Installs the function that makes connections' alert rules.
    pub fn set_alerting(&self, build: Arc<alerting::Build>) {
        let _ = self.alerting.set(build);
    }

    /// Makes the rules of a connection of store `name`, if its spec has
    /// any.
    fn build_rules(
        &self,
        name: &str,
        spec: &Spec,
    ) -> Result<Option<Arc<dyn alerting::Alerting>>, String> {
        if spec.rules.is_empty() {
            return Ok(None);
        }
        let Some(build) = self.alerting.get() else {
            return Err("alert rules are not available".into());
        };
        build(name, &spec.rules, spec.created_by).map(Some)
    }

    /// The outbound policy (the server records its own ports in it).
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
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
            for c in &conns {
                match self.build_rules(&name, &c.spec) {
                    Ok(Some(r)) => {
                        let _ = c.rules.set(r);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(store = %name, connection = %c.id(), error = %e, "connection rules not loaded")
                    }
                }
            }
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
            let (dir, ca) = (self.policy.ca_dir().to_path_buf(), ca.clone());
            let read = tokio::task::spawn_blocking(move || tls::ca_certificates(&dir, &ca))
                .await
                .map_err(std::io::Error::other)?;
            if let Err(e) = read {
                tracing::info!(store = %name, ca_file = ?spec.ca_file, reason = ?e.0, "ca_file refused");
                return Err(CreateError::Invalid(e.to_string()));
            }
        }
        self.check_policy(name, &spec).await?;
        let rules = self
            .build_rules(name, &spec)
            .map_err(CreateError::Invalid)?;
        let conn = {
            let mut map = self.map();
            // Under the map's lock, so that a delete's `remove_store`
            // (which runs once the store is no longer open) either comes
            // after this and stops the connection, or came before and is
            // seen here: a connection never outlives its store, nor lands
            // in a new store of the same name.
            if !self.stores.is_open(name, store) {
                return Err(CreateError::Gone);
            }
            let list = map.entry(name.to_string()).or_default();
            spec.id = loop {
                let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
                if !list.iter().any(|c| c.id() == id) {
                    break id;
                }
            };
            let conn = Arc::new(Conn::new(spec));
            if let Some(r) = rules {
                let _ = conn.rules.set(r);
            }
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

    /// Refuses a URL the policy refuses for the creator's role. A name that
    /// does not resolve (in [`CREATE_RESOLVE_TIMEOUT`]) is let through:
    /// every dial checks again.
    async fn check_policy(&self, name: &str, spec: &Spec) -> Result<(), CreateError> {
        let target = Target::parse(&spec.url).map_err(CreateError::Invalid)?;
        let resolved = tokio::time::timeout(
            CREATE_RESOLVE_TIMEOUT,
            self.policy.resolve(spec.created_by, &target),
        )
        .await;
        if let Ok(Err(ResolveError::Refused(why))) = resolved {
            tracing::info!(store = %name, url = %crate::redact::url(&spec.url), role = ?spec.created_by, reason = %why, "outbound connection refused by the policy");
            return Err(CreateError::Refused);
        }
        Ok(())
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

    /// The alert rules of every connection that has any, as (store,
    /// connection id, rules), for `/metrics`.
    pub fn rules(&self) -> Vec<(String, String, Arc<dyn alerting::Alerting>)> {
        let map = self.map();
        let mut out = Vec::new();
        for (name, conns) in map.iter() {
            for c in conns {
                if let Some(r) = c.rules() {
                    out.push((name.clone(), c.id().to_string(), r.clone()));
                }
            }
        }
        out
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
            policy: self.policy.clone(),
            max_future: self.max_future,
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

/// How long a create waits for the URL's host to resolve.
const CREATE_RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks a `ws://` or `wss://` URL with a host and a valid port.
pub fn check_url(url: &str) -> Result<(), String> {
    Target::parse(url).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_websocket_urls() {
        assert!(check_url("ws://127.0.0.1:9000").is_ok());
        assert!(check_url("wss://example.com/x?y=1").is_ok());
        for bad in ["http://example.com", "ws://", "not a url", "", "/relative"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
