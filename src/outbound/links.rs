//! A store's supervised links to a remote, of one kind, kept in one file
//! of the store's directory: create (with the `ca_file` and policy checks),
//! list, delete, restart at server start, stop when the store is deleted,
//! persist at shutdown and, while a cursor moves, at the kind's interval.
//! The MQTT sinks and subscriptions ([`super::mqtt`]) are kinds.
//!
//! Each link is one tokio task running [`supervise`] over the kind's
//! session. The file, `{"<list key>": [spec, ...]}`, is replaced
//! atomically (temp file, fsync, rename, fsync of the directory) and is
//! readable by its owner only: specs hold passwords.
//!
//! What survives: a create or delete answered 201/204 is in the file (it
//! was synced before the answer); a cursor is in the file as of its last
//! flush, so a restart resumes at most one flush interval back, and a
//! delivery is at least once.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::policy::{self, Policy, ResolveError, Role, Target};
use super::supervise::{stopped, supervise, Ended, Timing};
use super::tls;
use super::Status;
use crate::clock;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::fs::{Fs, RealFs};
use crate::store::Store;

/// What a kind of link is: its spec, its file and its session.
pub trait Kind: Send + Sync + Sized + 'static {
    /// The file in the store's directory.
    const FILE: &'static str;
    /// The key of the list in the file.
    const LIST: &'static str;
    /// For the log and errors: "mqtt connection".
    const WHAT: &'static str;
    /// Links of this kind one store may have; a create beyond is refused
    /// (a 400), so that a store key cannot make the server hold and dial
    /// without bound.
    const MAX_PER_STORE: usize = usize::MAX;
    type Spec: Clone + Serialize + DeserializeOwned + Send + Sync + 'static;

    fn id(spec: &Self::Spec) -> &str;
    fn set_id(spec: &mut Self::Spec, id: String);
    /// Fills in what depends on the id and the store (after `set_id`, at
    /// create): a default client id, say.
    fn assigned(spec: &mut Self::Spec, store: &str) {
        let _ = (spec, store);
    }
    fn created_at(spec: &Self::Spec) -> &str;
    /// The URL the link dials, for the policy check and the log.
    fn url(spec: &Self::Spec) -> &str;
    fn target(spec: &Self::Spec) -> Result<Target, String>;
    fn role(spec: &Self::Spec) -> Role;
    fn ca_file(spec: &Self::Spec) -> Option<&Path>;
    /// The cursor persisted in the spec.
    fn cursor(spec: &Self::Spec) -> i64;
    /// The spec as persisted: `cursor` written into it.
    fn with_cursor(spec: &Self::Spec, cursor: i64) -> Self::Spec;
    /// How often a moving cursor is persisted; `None`: never while running
    /// (kept in memory, written at shutdown only if the kind wants it).
    fn persist_every(spec: &Self::Spec, timing: &Timing) -> Option<Duration>;
    /// Restarted when the server starts.
    fn restarts(spec: &Self::Spec) -> bool {
        let _ = spec;
        true
    }
    /// The status object of the API.
    fn status_json(link: &Link<Self>) -> Value;
    /// Its alert rules as persisted (see [`super::alerting`]); none unless
    /// the kind has rules.
    fn rules(_spec: &Self::Spec) -> &[Value] {
        &[]
    }
    /// One session: dial and run until `link.stop` or a failure.
    fn session(ctx: Arc<Ctx<Self>>) -> Pin<Box<dyn Future<Output = Ended> + Send>>;
}

/// The live state of a link, common to the kinds.
#[derive(Debug)]
pub struct Live {
    pub status: Status,
    pub connected_since: Option<i64>,
    /// The cursor: the newest timestamp done with.
    pub cursor: i64,
    pub sent: u64,
    pub received: u64,
    pub stored: u64,
    pub errors: u64,
    pub last_error: String,
    /// The cursor moved since the file was written.
    pub dirty: bool,
    /// When the file last took this link's cursor.
    saved_at: Instant,
}

/// One link: its spec, live state and task.
pub struct Link<K: Kind> {
    pub spec: K::Spec,
    live: Mutex<Live>,
    pub stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Its alert rules, if it has any (set once, before its task starts).
    rules: std::sync::OnceLock<Arc<dyn super::alerting::Alerting>>,
}

impl<K: Kind> Link<K> {
    fn new(spec: K::Spec) -> Link<K> {
        Link {
            live: Mutex::new(Live {
                status: Status::Disconnected,
                connected_since: None,
                cursor: K::cursor(&spec),
                sent: 0,
                received: 0,
                stored: 0,
                errors: 0,
                last_error: String::new(),
                dirty: false,
                saved_at: Instant::now(),
            }),
            stop: watch::channel(false).0,
            task: Mutex::new(None),
            rules: std::sync::OnceLock::new(),
            spec,
        }
    }

    /// Its alert rules, if any.
    pub fn rules(&self) -> Option<&Arc<dyn super::alerting::Alerting>> {
        self.rules.get()
    }

    pub fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn id(&self) -> &str {
        K::id(&self.spec)
    }

    pub fn status(&self) -> Status {
        self.live().status
    }

    /// `connected_since` as the API shows it.
    pub fn connected_since(&self) -> Option<String> {
        self.live().connected_since.map(clock::rfc3339_nanos)
    }

    pub fn set_status(&self, st: Status) {
        let mut l = self.live();
        l.status = st;
        l.connected_since = (st == Status::Connected).then(crate::store::now_ns);
    }

    /// Counts an error, sets `last_error` and, if given, the status; logs it.
    pub fn error(&self, st: Option<Status>, message: String) {
        let url = crate::redact::url(K::url(&self.spec));
        tracing::warn!(link = %self.id(), %url, error = %message, "{}", K::WHAT);
        let mut l = self.live();
        l.errors += 1;
        l.last_error = message;
        if let Some(st) = st {
            l.status = st;
            l.connected_since = None;
        }
    }

    /// Moves the cursor forward to `ts`.
    pub fn advance(&self, ts: i64) {
        let mut l = self.live();
        if ts > l.cursor {
            l.cursor = ts;
            l.dirty = true;
        }
    }

    fn persisted(&self) -> K::Spec {
        let mut l = self.live();
        l.dirty = false;
        l.saved_at = Instant::now();
        K::with_cursor(&self.spec, l.cursor)
    }

    /// Due for a write of its cursor.
    fn due(&self, timing: &Timing) -> bool {
        let l = self.live();
        l.dirty
            && K::persist_every(&self.spec, timing)
                .is_some_and(|every| l.saved_at.elapsed() >= every)
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

/// What a link's sessions get.
pub struct Ctx<K: Kind> {
    pub name: String,
    pub store: Arc<Store>,
    pub stores: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub link: Arc<Link<K>>,
    pub timing: Timing,
    pub policy: Arc<Policy>,
    /// `store.max_future`: the horizon of stored timestamps.
    pub max_future: Duration,
    /// What a kind carries from one session to the next of the same run
    /// (the sink: its follower, so that gaps are counted across
    /// reconnects, and the publishes still unacknowledged).
    pub carry: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl<K: Kind> Ctx<K> {
    /// A receiver of the link's stop flag.
    pub fn stop(&self) -> watch::Receiver<bool> {
        self.link.stop.subscribe()
    }

    /// The addresses the policy lets this link dial, or the error for
    /// `last_error` (the reason of a refusal is logged, not shown).
    pub async fn resolve(&self, target: &Target) -> Result<Vec<std::net::SocketAddr>, String> {
        match self.policy.resolve(K::role(&self.link.spec), target).await {
            Ok(a) => Ok(a),
            Err(ResolveError::Unresolved(m)) => Err(format!("cannot resolve host: {m}")),
            Err(ResolveError::Refused(why)) => {
                let url = crate::redact::url(K::url(&self.link.spec));
                tracing::warn!(link = %self.link.id(), %url, reason = %why, "{} refused by the outbound policy", K::WHAT);
                Err(policy::REFUSED.to_string())
            }
        }
    }

    /// The certificates of the link's `ca_file`, read under the file rules.
    pub async fn ca_certificates(
        &self,
    ) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
        let Some(ca) = K::ca_file(&self.link.spec) else {
            return Ok(Vec::new());
        };
        let (dir, ca) = (self.policy.ca_dir().to_path_buf(), ca.to_path_buf());
        tokio::task::spawn_blocking(move || tls::ca_certificates(&dir, &ca))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

/// Why a link could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Invalid(String),
    /// The outbound policy refuses the URL (the reason is logged).
    #[error("{}", policy::REFUSED)]
    Refused,
    #[error("saving the store's link file: {0}")]
    Io(#[from] std::io::Error),
    /// The store was deleted (or is being deleted) meanwhile.
    #[error("store not found")]
    Gone,
}

/// How long a create waits for the URL's host to resolve.
const CREATE_RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every link of one kind, by store.
pub struct Links<K: Kind> {
    stores: Arc<Registry>,
    metrics: Arc<Metrics>,
    timing: Timing,
    policy: Arc<Policy>,
    max_future: Duration,
    by_store: Mutex<HashMap<String, Vec<Arc<Link<K>>>>>,
    /// Serialises file writes.
    saving: tokio::sync::Mutex<()>,
    stopping: watch::Sender<bool>,
    /// The counters of links deleted since the start, so that the totals
    /// of `/metrics` never go down.
    retired: Mutex<(u64, u64, u64, u64)>,
    /// Makes a link's alert rules (installed by the server's state).
    alerting: std::sync::OnceLock<Arc<super::alerting::Build>>,
}

impl<K: Kind> Links<K> {
    pub fn new(
        stores: Arc<Registry>,
        metrics: Arc<Metrics>,
        timing: Timing,
        policy: Arc<Policy>,
        max_future: Duration,
    ) -> Links<K> {
        Links {
            stores,
            metrics,
            timing,
            policy,
            max_future,
            by_store: Mutex::new(HashMap::new()),
            saving: tokio::sync::Mutex::new(()),
            stopping: watch::channel(false).0,
            retired: Mutex::new((0, 0, 0, 0)),
            alerting: std::sync::OnceLock::new(),
        }
    }

    /// Installs the function that makes links' alert rules.
    pub fn set_alerting(&self, build: Arc<super::alerting::Build>) {
        let _ = self.alerting.set(build);
    }

    /// Makes the rules of a link of store `name`, if its spec has any.
    fn build_rules(
        &self,
        name: &str,
        spec: &K::Spec,
    ) -> Result<Option<Arc<dyn super::alerting::Alerting>>, String> {
        let rules = K::rules(spec);
        if rules.is_empty() {
            return Ok(None);
        }
        let Some(build) = self.alerting.get() else {
            return Err("alert rules are not available".into());
        };
        build(name, rules, K::role(spec)).map(Some)
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<Arc<Link<K>>>>> {
        self.by_store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Restarts the persisted links of every store (each once its store is
    /// open) and starts the cursor flusher. Called once at server start.
    pub async fn start(self: &Arc<Self>) {
        let stores = self.stores.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for name in stores.list() {
                let path = stores.dir(&name).join(K::FILE);
                if !path.exists() {
                    continue;
                }
                let mut specs = match load::<K>(&path) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(store = %name, error = %e, "cannot read {}", K::FILE);
                        continue;
                    }
                };
                specs.sort_by_key(|s| clock::parse_rfc3339(K::created_at(s)).unwrap_or(0));
                if !specs.is_empty() {
                    out.push((name, specs));
                }
            }
            out
        })
        .await
        .unwrap_or_default();
        for (name, specs) in loaded {
            let links: Vec<Arc<Link<K>>> =
                specs.into_iter().map(|s| Arc::new(Link::new(s))).collect();
            for l in &links {
                match self.build_rules(&name, &l.spec) {
                    Ok(Some(r)) => {
                        let _ = l.rules.set(r);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(store = %name, id = %l.id(), error = %e, "{} rules not loaded", K::WHAT)
                    }
                }
            }
            self.map()
                .entry(name.clone())
                .or_default()
                .extend(links.iter().cloned());
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
                        tracing::error!(store = %name, error = %e, "cannot open store for its {}s", K::WHAT);
                        return;
                    }
                };
                for link in links {
                    if !*link.stop.borrow() && K::restarts(&link.spec) {
                        me.spawn(&name, &store, &link);
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
                    _ = tick.tick() => me.flush_due().await,
                    _ = stopped(&mut stopping) => return,
                }
            }
        });
    }

    async fn flush_due(&self) {
        let due: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, v)| v.iter().any(|l| l.due(&self.timing)))
            .map(|(k, _)| k.clone())
            .collect();
        for name in due {
            if let Err(e) = self.save(&name).await {
                tracing::error!(store = %name, error = %e, "saving {} failed", K::FILE);
            }
        }
    }

    /// Writes the links of `name` to its file (atomically).
    async fn save(&self, name: &str) -> std::io::Result<()> {
        let _guard = self.saving.lock().await;
        let Some(links) = self.map().get(name).cloned() else {
            return Ok(());
        };
        let specs: Vec<K::Spec> = links.iter().map(|l| l.persisted()).collect();
        let dir = self.stores.dir(name);
        tokio::task::spawn_blocking(move || write_atomic::<K>(&RealFs, &dir, &specs))
            .await
            .map_err(std::io::Error::other)?
    }

    /// The links of store `name`, oldest first.
    pub fn list(&self, name: &str) -> Vec<Arc<Link<K>>> {
        self.map().get(name).cloned().unwrap_or_default()
    }

    pub fn get(&self, name: &str, id: &str) -> Option<Arc<Link<K>>> {
        self.list(name).into_iter().find(|l| l.id() == id)
    }

    /// The alert rules of every link that has any, as (store, link id,
    /// rules), for `/metrics`.
    pub fn rules(&self) -> Vec<(String, String, Arc<dyn super::alerting::Alerting>)> {
        let map = self.map();
        let mut out = Vec::new();
        for (name, links) in map.iter() {
            for l in links {
                if let Some(r) = l.rules() {
                    out.push((name.clone(), l.id().to_string(), r.clone()));
                }
            }
        }
        out
    }

    /// Checks the `ca_file` and the policy, then persists and starts a
    /// link (`spec`'s id is replaced by a fresh one).
    pub async fn create(
        &self,
        name: &str,
        store: &Arc<Store>,
        mut spec: K::Spec,
    ) -> Result<Arc<Link<K>>, CreateError> {
        if let Some(ca) = K::ca_file(&spec) {
            let (dir, ca) = (self.policy.ca_dir().to_path_buf(), ca.to_path_buf());
            let read = tokio::task::spawn_blocking(move || tls::ca_certificates(&dir, &ca))
                .await
                .map_err(std::io::Error::other)?;
            if let Err(e) = read {
                tracing::info!(store = %name, reason = ?e.0, "ca_file refused");
                return Err(CreateError::Invalid(e.to_string()));
            }
        }
        self.check_policy(name, &spec).await?;
        let rules = self
            .build_rules(name, &spec)
            .map_err(CreateError::Invalid)?;
        let link = {
            let mut map = self.map();
            // Under the map's lock: a delete's `remove_store` either comes
            // after this and stops the link, or came before and is seen
            // here.
            if !self.stores.is_open(name, store) {
                return Err(CreateError::Gone);
            }
            let list = map.entry(name.to_string()).or_default();
            if list.len() >= K::MAX_PER_STORE {
                return Err(CreateError::Invalid(format!(
                    "too many {}s: at most {} per store",
                    K::WHAT,
                    K::MAX_PER_STORE
                )));
            }
            let id = loop {
                let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
                if !list.iter().any(|l| l.id() == id) {
                    break id;
                }
            };
            K::set_id(&mut spec, id);
            K::assigned(&mut spec, name);
            let link = Arc::new(Link::new(spec));
            if let Some(r) = rules {
                let _ = link.rules.set(r);
            }
            list.push(link.clone());
            link
        };
        if let Err(e) = self.save(name).await {
            if let Some(v) = self.map().get_mut(name) {
                v.retain(|l| !Arc::ptr_eq(l, &link));
            }
            return Err(e.into());
        }
        self.spawn(name, store, &link);
        Ok(link)
    }

    /// Refuses a URL the policy refuses for the creator's role. A name that
    /// does not resolve in time is let through: every dial checks again.
    async fn check_policy(&self, name: &str, spec: &K::Spec) -> Result<(), CreateError> {
        let target = K::target(spec).map_err(CreateError::Invalid)?;
        let resolved = tokio::time::timeout(
            CREATE_RESOLVE_TIMEOUT,
            self.policy.resolve(K::role(spec), &target),
        )
        .await;
        if let Ok(Err(ResolveError::Refused(why))) = resolved {
            let url = crate::redact::url(K::url(spec));
            tracing::info!(store = %name, %url, reason = %why, "{} refused by the outbound policy", K::WHAT);
            return Err(CreateError::Refused);
        }
        Ok(())
    }

    /// Stops (within a second) and forgets a link; false if unknown.
    pub async fn delete(&self, name: &str, id: &str) -> std::io::Result<bool> {
        let link = {
            let mut map = self.map();
            let Some(list) = map.get_mut(name) else {
                return Ok(false);
            };
            let Some(i) = list.iter().position(|l| l.id() == id) else {
                return Ok(false);
            };
            list.remove(i)
        };
        link.stop_and_wait(Duration::from_millis(900)).await;
        self.retire(&link);
        self.save(name).await?;
        Ok(true)
    }

    /// Stops every link of a store being deleted.
    pub async fn remove_store(&self, name: &str) {
        let links = self.map().remove(name).unwrap_or_default();
        for l in &links {
            l.stop.send_replace(true);
        }
        for l in links {
            l.stop_and_wait(Duration::from_secs(1)).await;
            self.retire(&l);
        }
    }

    /// Keeps the counters of a link being forgotten in the totals.
    fn retire(&self, link: &Link<K>) {
        let l = link.live();
        let mut r = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        r.0 += l.sent;
        r.1 += l.received;
        r.2 += l.stored;
        r.3 += l.errors;
    }

    /// Stops every link and persists the cursors (shutdown, before the
    /// stores close).
    pub async fn stop_all(&self) {
        self.stopping.send_replace(true);
        let all: Vec<(String, Vec<Arc<Link<K>>>)> = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for l in all.iter().flat_map(|(_, v)| v) {
            l.stop.send_replace(true);
        }
        for l in all.iter().flat_map(|(_, v)| v) {
            l.stop_and_wait(Duration::from_secs(2)).await;
        }
        for (name, _) in &all {
            if let Err(e) = self.save(name).await {
                tracing::error!(store = %name, error = %e, "saving {} failed", K::FILE);
            }
        }
    }

    /// Links per status, for `/metrics`.
    pub fn count_by_status(&self) -> [(Status, u64); 4] {
        let mut out = Status::ALL.map(|s| (s, 0u64));
        for l in self.map().values().flatten() {
            let st = l.status();
            if let Some(e) = out.iter_mut().find(|(s, _)| *s == st) {
                e.1 += 1;
            }
        }
        out
    }

    /// Sums of the counters of every link, deleted ones included (since
    /// the start): (sent, received, stored, errors).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let mut t = *self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for l in self.map().values().flatten() {
            let l = l.live();
            t.0 += l.sent;
            t.1 += l.received;
            t.2 += l.stored;
            t.3 += l.errors;
        }
        t
    }

    fn spawn(&self, name: &str, store: &Arc<Store>, link: &Arc<Link<K>>) {
        let ctx = Arc::new(Ctx {
            name: name.to_string(),
            store: store.clone(),
            stores: self.stores.clone(),
            metrics: self.metrics.clone(),
            link: link.clone(),
            timing: self.timing.clone(),
            policy: self.policy.clone(),
            max_future: self.max_future,
            carry: Mutex::new(None),
        });
        let stop = link.stop.subscribe();
        let task = tokio::spawn(async move {
            let timing = ctx.timing.clone();
            supervise(&timing, stop, || K::session(ctx.clone())).await;
            let mut l = ctx.link.live();
            if l.status != Status::Error {
                l.status = Status::Disconnected;
            }
            l.connected_since = None;
        });
        *link.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }
}

fn load<K: Kind>(path: &Path) -> std::io::Result<Vec<K::Spec>> {
    let text = std::fs::read(path)?;
    let mut v: Value = serde_json::from_slice(&text).map_err(std::io::Error::other)?;
    let list = v
        .get_mut(K::LIST)
        .map(Value::take)
        .unwrap_or(Value::Array(vec![]));
    serde_json::from_value(list).map_err(std::io::Error::other)
}

/// The file, replaced atomically through the file-system seam `fs`.
fn write_atomic<K: Kind>(fs: &dyn Fs, dir: &Path, specs: &[K::Spec]) -> std::io::Result<()> {
    let mut file = serde_json::Map::new();
    file.insert(
        K::LIST.to_string(),
        serde_json::to_value(specs).map_err(std::io::Error::other)?,
    );
    let mut text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    // Owner only: specs hold passwords.
    crate::store::fs::replace(fs, dir, K::FILE, &text, 0o600)
}
