//! The stores a server serves, and the one owner of their lifecycle: every
//! open, create, reset, delete and close goes through [`Registry`], from
//! the REST API, the console, the Unix socket, the streams and the
//! outbound connections alike, together with its side effects (the key
//! cache here, the rest through the [`Hooks`] the server wires in).
//!
//! Invariants:
//! - The slot map's lock is held only to read or change a slot, never
//!   across disk I/O. An operation marks its store busy ([`Phase`]),
//!   releases the lock, does its disk work on a thread of its own (never a
//!   runtime worker), then takes the lock again to publish the result. So
//!   one store's recovery, preallocation or removal never delays another
//!   store, `/health`, `/metrics` or the watchdog.
//! - At most one operation runs on a store at a time. A request for a busy
//!   store waits up to [`BUSY_WAIT`] for it to end (a store that opens in a
//!   moment is served as if it had been open), then gets [`Error::Busy`]:
//!   503 with `Retry-After`, or the socket's `ERROR` line.
//! - The same name, concurrently: requests share one open; a create of a
//!   name that exists, or is being opened, created or reset, is refused
//!   (`AlreadyExists`); a create, delete or reset that finds the store busy
//!   waits like a request, then acts on what the other operation left.
//! - Keys cached under a name are forgotten whenever a store of that name
//!   is created or deleted.
//! - Once [`Registry::close_all`] has begun nothing opens any more, and an
//!   operation still running closes whatever it opened itself.
//!
//! Start-up opens every store in the background ([`Registry::open_all`]):
//! the server answers at once, and a store recovering after a power cut is
//! the only thing that waits for its recovery.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::keys::{self, KeyCache, KeyError, NewKey};
use crate::store::{self, Store};

#[cfg(any(debug_assertions, feature = "test-hooks"))]
mod hold;
/// Release builds have no hook (see `registry/hold.rs`).
#[cfg(not(any(debug_assertions, feature = "test-hooks")))]
mod hold {
    pub(super) fn hold(_: super::Phase, _: &str) {}
}

/// How long a request waits for a busy store before it is answered
/// [`Error::Busy`].
pub const BUSY_WAIT: Duration = Duration::from_secs(1);
/// The `Retry-After` a busy store is answered with, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// What a busy store is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Being opened: after an unclean stop, recovering.
    Opening,
    /// Being created (its files allocated in full).
    Creating,
    Resetting,
    Deleting,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Opening,
        Phase::Creating,
        Phase::Resetting,
        Phase::Deleting,
    ];

    /// The operation's name (the `/metrics` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Opening => "open",
            Phase::Creating => "create",
            Phase::Resetting => "reset",
            Phase::Deleting => "delete",
        }
    }

    /// What a client is told the store is doing. A store whose open takes
    /// longer than [`BUSY_WAIT`] is recovering from an unclean stop in all
    /// but name (a clean open reads a few pages).
    fn doing(self) -> &'static str {
        match self {
            Phase::Opening => "recovering",
            Phase::Creating => "being created",
            Phase::Resetting => "being reset",
            Phase::Deleting => "being deleted",
        }
    }
}

/// Why a lifecycle call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another operation still runs on the store: retry later.
    #[error("store '{name}' is {}, retry later", phase.doing())]
    Busy { name: String, phase: Phase },
    /// The server is closing its stores.
    #[error("server is shutting down, retry later")]
    ShuttingDown,
    /// The engine's error (shared by everyone who waited for one open).
    #[error(transparent)]
    Store(Arc<store::Error>),
    /// The new store's key file could not be written (the store is removed).
    #[error("creating the key file: {0}")]
    Keys(KeyError),
    /// The operation's thread could not start or panicked (logged).
    #[error("store operation abandoned")]
    Abandoned,
    /// Another process (a running server) holds the store's files.
    #[error("store '{name}' is held by another process")]
    Locked { name: String },
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Error {
        Error::Store(Arc::new(e))
    }
}

impl Error {
    /// True for a store that will be available again: answer "retry later".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Busy { .. } | Error::ShuttingDown)
    }
}

/// The `opened` hook of [`Hooks`]: a store's name, directory and the store.
pub type OpenedHook = Box<dyn Fn(&str, &Path, &Arc<Store>) + Send + Sync>;

/// Side effects of the lifecycle that belong to other parts of the server,
/// wired in once at start-up (so no caller can forget one).
pub struct Hooks {
    /// Runs before a store's files are deleted (its outbound connections
    /// stop and persist nothing more into its directory).
    pub before_delete: Box<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>,
    /// Runs once a store was deleted (console sessions limited to it end).
    pub deleted: Box<dyn Fn(&str) + Send + Sync>,
    /// Runs once a store was created (`/metrics` counts it).
    pub created: Box<dyn Fn(&str) + Send + Sync>,
    /// Runs on the operation's thread when a store was opened or created,
    /// before it is published (no lock held): its name, directory and the
    /// store. Loads its alert rules and hooks them to its inserts.
    pub opened: OpenedHook,
}

/// The state of one store name.
enum Slot {
    Open(Arc<Store>),
    Busy {
        phase: Phase,
        ended: watch::Receiver<Option<Ended>>,
    },
}

/// How an operation ended, as its waiters learn it.
#[derive(Clone)]
enum Ended {
    /// Look at the slot again.
    Done,
    /// Failed. Waiters of an open return this error (else a store that
    /// cannot open would be retried in a loop); others look again.
    Failed(Arc<store::Error>),
}

#[derive(Default)]
struct Slots {
    map: HashMap<String, Slot>,
    closing: bool,
}

/// Open stores and store operations by name.
pub struct Registry {
    base: PathBuf,
    keys: Arc<KeyCache>,
    hooks: OnceLock<Hooks>,
    slots: Mutex<Slots>,
    /// Per open store, a counter bumped after every acknowledged write:
    /// what live readers wait on (see [`Registry::watch`]).
    live: Mutex<HashMap<String, Arc<watch::Sender<u64>>>>,
}

/// Wakes everyone watching a store.
fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

/// Waits for an operation to end, until `deadline` (`None`: for as long
/// as it takes). `None` if it still runs at the deadline.
async fn wait_end(
    mut ended: watch::Receiver<Option<Ended>>,
    deadline: Option<Instant>,
) -> Option<Ended> {
    let end = async move {
        match ended.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            // The operation is gone without a word: look again.
            Err(_) => Some(Ended::Done),
        }
    };
    match deadline {
        None => end.await,
        Some(d) => tokio::time::timeout_at(d, end).await.ok().flatten(),
    }
}

/// A store operation in flight: its slot stays busy until it ends. Dropped
/// without ending (its thread could not start, or panicked) it frees the
/// slot, or puts back the store it worked on, so that the name does not
/// stay busy for ever.
struct Op {
    reg: Arc<Registry>,
    name: String,
    phase: Phase,
    tx: watch::Sender<Option<Ended>>,
    /// Open again when abandoned (a reset's store).
    restore: Option<Arc<Store>>,
    ended: bool,
}

impl Op {
    /// Publishes a store this operation opened or created.
    fn opened(mut self, s: Arc<Store>) {
        self.finish(Some(s), true, Ended::Done);
    }

    /// Puts back the store this operation worked on (a reset).
    fn restored(mut self) {
        let s = self.restore.take();
        self.finish(s, false, Ended::Done);
    }

    /// Frees the slot: nothing is open under this name.
    fn gone(mut self) {
        self.finish(None, false, Ended::Done);
    }

    fn failed(mut self, e: Arc<store::Error>) {
        self.finish(None, false, Ended::Failed(e));
    }

    /// Sets the slot to `store` (or frees it) and wakes the waiters. A
    /// store that ends up open after shutdown began is closed here instead.
    fn finish(&mut self, store: Option<Arc<Store>>, new: bool, ended: Ended) {
        if self.ended {
            return;
        }
        self.ended = true;
        let late = {
            let mut slots = self.reg.lock();
            match store {
                Some(s) if !slots.closing => {
                    if new {
                        self.reg.attach(&self.name, &s);
                    }
                    slots.map.insert(self.name.clone(), Slot::Open(s));
                    None
                }
                s => {
                    slots.map.remove(&self.name);
                    s
                }
            }
        };
        if let Some(s) = late {
            if let Err(e) = s.close() {
                tracing::error!(store = %self.name, error = %e, "closing store failed");
            }
            self.reg.detach(&self.name);
        }
        self.tx.send_replace(Some(ended));
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if !self.ended {
            tracing::error!(store = %self.name, operation = self.phase.as_str(), "store operation abandoned");
            let s = self.restore.take();
            let e = store::Error::Io(std::io::Error::other("store operation abandoned"));
            self.finish(s, false, Ended::Failed(Arc::new(e)));
        }
    }
}

/// Runs an operation's disk work on a thread of its own: never on a
/// runtime worker, and never queued behind another store's. A thread
/// rather than `spawn_blocking`, because the runtime waits for its blocking
/// tasks when it shuts down, and a recovery still running then must not
/// hold up the exit (it starts again at the next start).
fn run(op: Op, work: impl FnOnce(Op) + Send + 'static) {
    let thread = format!("tsstore-{}", op.phase.as_str());
    // On failure the closure, with the Op in it, is dropped: abandoned.
    if let Err(e) = std::thread::Builder::new()
        .name(thread)
        .spawn(move || work(op))
    {
        tracing::error!(error = %e, "cannot start a thread for a store operation");
    }
}

/// Runs a lifecycle call as a task of its own: a caller that goes away (a
/// client hanging up) does not stop it half way.
async fn detached<T: Send + 'static>(
    call: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(call).await.map_err(|_| Error::Abandoned)?
}

/// What a lifecycle call found in a slot.
enum Found<T> {
    /// Go ahead.
    Go(T),
    /// Another operation runs: wait for it, then look again.
    Wait(Phase, watch::Receiver<Option<Ended>>),
}

impl Registry {
    pub fn new(base: PathBuf, keys: Arc<KeyCache>) -> Registry {
        Registry {
            base,
            keys,
            hooks: OnceLock::new(),
            slots: Mutex::new(Slots::default()),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Wires in the side effects owned elsewhere (once; later calls are
    /// ignored).
    pub fn set_hooks(&self, hooks: Hooks) {
        let _ = self.hooks.set(hooks);
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the `opened` hook on a store an operation opened or created.
    fn run_opened(&self, name: &str, store: &Arc<Store>) {
        if let Some(h) = self.hooks.get() {
            (h.opened)(name, &self.dir(name), store);
        }
    }

    /// Hooks a newly opened store's writes to its watch counter.
    fn attach(&self, name: &str, store: &Store) {
        let tx = Arc::new(watch::channel(0u64).0);
        let hook = tx.clone();
        store.on_write(move || bump(&hook));
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), tx);
    }

    /// Wakes the watchers of `name` (its store closed or went away) and
    /// forgets them.
    fn detach(&self, name: &str) {
        if let Some(tx) = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
        {
            bump(&tx);
        }
    }

    /// A receiver that sees a change after every acknowledged write to the
    /// open store `name` (and once when it closes); `None` if it is not
    /// open.
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<u64>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|tx| tx.subscribe())
    }

    /// The data path.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Directory of store `name` (the name must be valid).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// True if store `name` exists on disk. Blocking (a `stat`).
    pub fn exists(&self, name: &str) -> bool {
        store::exists(&self.base, name)
    }

    /// True if store `name` exists: known here (open or busy), else looked
    /// up on disk off the async workers.
    pub async fn known(&self, name: &str) -> bool {
        if store::validate_name(name).is_err() {
            return false;
        }
        if self.lock().map.contains_key(name) {
            return true;
        }
        let (base, name) = (self.base.clone(), name.to_string());
        tokio::task::spawn_blocking(move || store::exists(&base, &name))
            .await
            .unwrap_or(false)
    }

    /// Names of every store on disk, sorted. Blocking (reads the data path).
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.base)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| store::exists(&self.base, n))
            .collect();
        v.sort();
        v
    }

    /// The stores open now (not those an operation is working on).
    pub fn open_stores(&self) -> Vec<(String, Arc<Store>)> {
        let mut v: Vec<_> = self
            .lock()
            .map
            .iter()
            .filter_map(|(k, v)| match v {
                Slot::Open(s) => Some((k.clone(), s.clone())),
                Slot::Busy { .. } => None,
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// True if `store` is the store open under `name` now: not deleted,
    /// replaced by a new store of that name, or being reset or deleted.
    pub fn is_open(&self, name: &str, store: &Arc<Store>) -> bool {
        matches!(self.lock().map.get(name), Some(Slot::Open(s)) if Arc::ptr_eq(s, store))
    }

    /// How many stores each kind of operation is working on now.
    pub fn busy(&self) -> [(Phase, usize); 4] {
        let slots = self.lock();
        Phase::ALL.map(|p| {
            let n = slots
                .map
                .values()
                .filter(|s| matches!(s, Slot::Busy { phase, .. } if *phase == p))
                .count();
            (p, n)
        })
    }

    /// Takes and releases the registry's lock: the watchdog's proof that
    /// it is not stuck. It never waits on a disk, since the lock is never
    /// held across disk I/O.
    pub fn probe(&self) {
        drop(self.lock());
    }

    /// Starts opening every store on disk, in the background (start-up).
    pub fn open_all(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            // Listing the data path is disk work too.
            let lister = me.clone();
            let names = tokio::task::spawn_blocking(move || {
                // Nothing is being created or deleted yet: every leftover
                // of one is from before a crash or power cut.
                match store::sweep(&lister.base) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "removed leftovers of interrupted creates and deletes"),
                    Err(e) => tracing::warn!(error = %e, "removing leftovers of interrupted creates and deletes failed"),
                }
                lister.list()
            })
                .await
                .unwrap_or_default();
            let ops: Vec<Op> = {
                let mut slots = me.lock();
                names
                    .iter()
                    .filter(|n| !slots.closing && !slots.map.contains_key(*n))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|n| me.begin(&mut slots, n, Phase::Opening, None))
                    .collect()
            };
            // Each on its own thread: one store's recovery does not delay
            // the others'.
            for op in ops {
                me.spawn_open(op);
            }
        });
    }

    /// Marks `name` busy with `phase`; the returned [`Op`] ends it.
    fn begin(
        self: &Arc<Self>,
        slots: &mut Slots,
        name: &str,
        phase: Phase,
        restore: Option<Arc<Store>>,
    ) -> Op {
        let (tx, ended) = watch::channel(None);
        slots
            .map
            .insert(name.to_string(), Slot::Busy { phase, ended });
        Op {
            reg: self.clone(),
            name: name.to_string(),
            phase,
            tx,
            restore,
            ended: false,
        }
    }

    fn spawn_open(&self, op: Op) {
        let base = self.base.clone();
        run(op, move |op| {
            hold::hold(Phase::Opening, &op.name);
            let started = std::time::Instant::now();
            match Store::open(&base, &op.name) {
                Ok(s) => {
                    let ms = started.elapsed().as_millis() as u64;
                    tracing::info!(store = %op.name, ms, "store opened");
                    let s = Arc::new(s);
                    op.reg.run_opened(&op.name, &s);
                    op.opened(s);
                }
                Err(e) => {
                    if !matches!(e, store::Error::NotFound { .. }) {
                        tracing::error!(store = %op.name, error = %e, "opening store failed");
                    }
                    op.failed(Arc::new(e));
                }
            }
        });
    }

    /// The open store `name`, opening it if needed. A store busy with
    /// another operation for longer than [`BUSY_WAIT`] is [`Error::Busy`].
    pub async fn open(self: &Arc<Self>, name: &str) -> Result<Arc<Store>, Error> {
        self.acquire(name, Some(Instant::now() + BUSY_WAIT)).await
    }

    /// [`Registry::open`] that waits for as long as the store's operations
    /// take (background work: the outbound connections of a store).
    pub async fn open_when_ready(self: &Arc<Self>, name: &str) -> Result<Arc<Store>, Error> {
        self.acquire(name, None).await
    }

    async fn acquire(
        self: &Arc<Self>,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<Arc<Store>, Error> {
        store::validate_name(name)?;
        loop {
            let (phase, ended) = {
                let mut slots = self.lock();
                match slots.map.get(name) {
                    Some(Slot::Open(s)) => return Ok(s.clone()),
                    Some(Slot::Busy { phase, ended }) => (*phase, ended.clone()),
                    None if slots.closing => return Err(Error::ShuttingDown),
                    None => {
                        let op = self.begin(&mut slots, name, Phase::Opening, None);
                        let ended = op.tx.subscribe();
                        drop(slots);
                        self.spawn_open(op);
                        (Phase::Opening, ended)
                    }
                }
            };
            match wait_end(ended, deadline).await {
                None => {
                    return Err(Error::Busy {
                        name: name.to_string(),
                        phase,
                    })
                }
                Some(Ended::Failed(e)) if phase == Phase::Opening => return Err(Error::Store(e)),
                Some(_) => {}
            }
        }
    }

    /// Looks at the slots with `pick` (under the lock) until it says go,
    /// waiting for the other operations it names until `deadline`.
    async fn claim<T>(
        self: &Arc<Self>,
        name: &str,
        deadline: Instant,
        mut pick: impl FnMut(&mut Slots) -> Result<Found<T>, Error>,
    ) -> Result<T, Error> {
        loop {
            let found = pick(&mut self.lock())?;
            match found {
                Found::Go(t) => return Ok(t),
                Found::Wait(phase, ended) => {
                    if wait_end(ended, Some(deadline)).await.is_none() {
                        return Err(Error::Busy {
                            name: name.to_string(),
                            phase,
                        });
                    }
                }
            }
        }
    }

    /// Creates store `name` with its first API key, allocating its files in
    /// full.
    pub async fn create(
        self: &Arc<Self>,
        name: &str,
        config: store::Config,
    ) -> Result<(Arc<Store>, NewKey), Error> {
        store::validate_name(name)?;
        detached(self.clone().create_task(name.to_string(), config)).await
    }

    async fn create_task(
        self: Arc<Self>,
        name: String,
        config: store::Config,
    ) -> Result<(Arc<Store>, NewKey), Error> {
        let deadline = Instant::now() + BUSY_WAIT;
        let op = self
            .claim(&name, deadline, |slots| match slots.map.get(&name) {
                Some(Slot::Busy {
                    phase: Phase::Deleting,
                    ended,
                }) => Ok(Found::Wait(Phase::Deleting, ended.clone())),
                Some(_) => Err(store::Error::AlreadyExists {
                    path: self.dir(&name),
                }
                .into()),
                None if slots.closing => Err(Error::ShuttingDown),
                None => Ok(Found::Go(self.begin(slots, &name, Phase::Creating, None))),
            })
            .await?;
        let (tx, rx) = oneshot::channel();
        let base = self.base.clone();
        run(op, move |op| {
            hold::hold(Phase::Creating, &op.name);
            let r = create_store(&store::fs::RealFs, &base, &op.name, config);
            let r = match r {
                Ok((s, key)) => {
                    let s = Arc::new(s);
                    // A new key file: nothing cached under this name
                    // applies to it.
                    op.reg.keys.forget(&op.name);
                    op.reg.run_opened(&op.name, &s);
                    op.opened(s.clone());
                    Ok((s, key))
                }
                Err(e) => {
                    op.gone();
                    Err(e)
                }
            };
            let _ = tx.send(r);
        });
        let made = rx.await.map_err(|_| Error::Abandoned)??;
        if let Some(h) = self.hooks.get() {
            (h.created)(&name);
        }
        Ok(made)
    }

    /// Soft-resets store `name` (see [`Store::reset`]).
    pub async fn reset(self: &Arc<Self>, name: &str) -> Result<(), Error> {
        store::validate_name(name)?;
        detached(self.clone().reset_task(name.to_string())).await
    }

    async fn reset_task(self: Arc<Self>, name: String) -> Result<(), Error> {
        let deadline = Instant::now() + BUSY_WAIT;
        let (op, s) = loop {
            let claimed = self
                .claim(&name, deadline, |slots| match slots.map.get(&name) {
                    Some(Slot::Open(s)) => {
                        let s = s.clone();
                        let op = self.begin(slots, &name, Phase::Resetting, Some(s.clone()));
                        Ok(Found::Go(Some((op, s))))
                    }
                    Some(Slot::Busy { phase, ended }) => Ok(Found::Wait(*phase, ended.clone())),
                    None => Ok(Found::Go(None)),
                })
                .await?;
            match claimed {
                Some(go) => break go,
                // Not open: open it first (within the same deadline).
                None => {
                    self.acquire(&name, Some(deadline)).await?;
                }
            }
        };
        let (tx, rx) = oneshot::channel();
        run(op, move |op| {
            hold::hold(Phase::Resetting, &op.name);
            let r = s.reset();
            op.restored();
            let _ = tx.send(r);
        });
        Ok(rx.await.map_err(|_| Error::Abandoned)??)
    }

    /// Closes and removes store `name`, after the `before_delete` hook.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), Error> {
        store::validate_name(name)?;
        detached(self.clone().delete_task(name.to_string())).await
    }

    async fn delete_task(self: Arc<Self>, name: String) -> Result<(), Error> {
        let deadline = Instant::now() + BUSY_WAIT;
        let (op, open) = self
            .claim(&name, deadline, |slots| {
                let open = match slots.map.get(&name) {
                    Some(Slot::Open(s)) => Some(s.clone()),
                    Some(Slot::Busy { phase, ended }) => {
                        return Ok(Found::Wait(*phase, ended.clone()))
                    }
                    None if slots.closing => return Err(Error::ShuttingDown),
                    None => None,
                };
                let op = self.begin(slots, &name, Phase::Deleting, None);
                Ok(Found::Go((op, open)))
            })
            .await?;
        if let Some(h) = self.hooks.get() {
            (h.before_delete)(name.clone()).await;
        }
        let (tx, rx) = oneshot::channel();
        let base = self.base.clone();
        run(op, move |op| {
            hold::hold(Phase::Deleting, &op.name);
            let r = match open {
                Some(s) => s.delete_store(),
                None => store::delete_store(&base, &op.name),
            };
            // Keys verified for the old store must not open a new one of
            // that name.
            op.reg.keys.forget(&op.name);
            op.reg.detach(&op.name);
            op.gone();
            let _ = tx.send(r);
        });
        rx.await.map_err(|_| Error::Abandoned)??;
        if let Some(h) = self.hooks.get() {
            (h.deleted)(&name);
        }
        Ok(())
    }

    /// Shutdown: nothing opens any more; every open store is synced and
    /// closed; then creates, resets and deletes still running get `grace`
    /// to finish. Opens still running are abandoned: nothing acknowledged
    /// depends on them, and the store recovers again at the next start.
    pub async fn close_all(self: &Arc<Self>, grace: Duration) -> Vec<(String, store::Error)> {
        let (open, busy) = {
            let mut slots = self.lock();
            slots.closing = true;
            let mut open = Vec::new();
            let mut busy = Vec::new();
            for (name, slot) in slots.map.drain() {
                match slot {
                    Slot::Open(s) => open.push((name, s)),
                    Slot::Busy { phase, ended } => busy.push((name, phase, ended)),
                }
            }
            (open, busy)
        };
        let names: Vec<String> = open.iter().map(|(n, _)| n.clone()).collect();
        let errors = tokio::task::spawn_blocking(move || {
            open.iter()
                .filter_map(|(n, s)| s.close().err().map(|e| (n.clone(), e)))
                .collect()
        })
        .await
        .unwrap_or_default();
        for n in &names {
            self.detach(n);
        }
        let deadline = Instant::now() + grace;
        for (name, phase, ended) in busy {
            let abandoned =
                phase == Phase::Opening || wait_end(ended, Some(deadline)).await.is_none();
            if abandoned {
                tracing::warn!(
                    store = %name,
                    operation = phase.as_str(),
                    "store operation still running at shutdown: abandoned"
                );
            }
        }
        errors
    }
}

/// Creates store `name` in `base` with its first key, through `fs`: a power
/// cut leaves no store, or the store with its key (see
/// [`Store::create_with`]). The one path for the server and the CLI.
pub fn create_store(
    fs: &dyn store::fs::Fs,
    base: &Path,
    name: &str,
    config: store::Config,
) -> Result<(Store, NewKey), Error> {
    Store::create_with(fs, base, name, config, |fs, dir| {
        keys::init_with(fs, dir, name, "Initial key").map_err(Error::Keys)
    })
}

/// Opens store `name` of `base` outside a server (the CLI). A store whose
/// files another process holds is [`Error::Locked`]: the engine reports
/// that as an invalid configuration, so the lock itself is asked, never
/// the message.
pub fn open_offline(base: &Path, name: &str) -> Result<Store, Error> {
    Store::open(base, name).map_err(|e| match e {
        store::Error::InvalidConfig { .. } if held_elsewhere(&base.join(name)) => Error::Locked {
            name: name.to_string(),
        },
        e => e.into(),
    })
}

/// True if another open file holds the lock of the store in `dir`.
fn held_elsewhere(dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(dir.join(store::META_FILE)) else {
        return false;
    };
    matches!(
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// The lock file a running server holds in its data path, so that the CLI
/// (`tsstore status`) can tell a server runs even before it opens a store,
/// and a second server on the same data path refuses to start.
pub const SERVER_LOCK_FILE: &str = ".tsstore-server.lock";

/// A held server lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct ServerLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the server lock of `base` and writes `info` (pid, address) into
/// it. Fails with the current holder's info if another process has it.
pub fn lock_server(base: &Path, info: &str) -> std::io::Result<ServerLock> {
    use std::io::Write;
    let path = base.join(SERVER_LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    let mut lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| {
            if e == nix::errno::Errno::EWOULDBLOCK {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "another tsstore server is running on data path {} ({})",
                        base.display(),
                        holder.trim()
                    ),
                )
            } else {
                std::io::Error::from(e)
            }
        })?;
    lock.set_len(0)?;
    lock.write_all(info.as_bytes())?;
    Ok(ServerLock { _lock: lock })
}

/// What the server running on `base` wrote into its lock (pid, address),
/// or `None` if no server runs there.
pub fn running_server(base: &Path) -> Option<String> {
    let path = base.join(SERVER_LOCK_FILE);
    let f = std::fs::File::open(&path).ok()?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_free) => None,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Some(
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (tempfile::TempDir, Arc<Registry>) {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path().to_path_buf(), Arc::new(KeyCache::new()));
        (dir, Arc::new(reg))
    }

    fn small() -> store::Config {
        store::Config {
            num_blocks: 8,
            ..store::Config::default()
        }
    }

    fn is_already_exists(r: &Result<(Arc<Store>, NewKey), Error>) -> bool {
        matches!(r, Err(Error::Store(e)) if matches!(**e, store::Error::AlreadyExists { .. }))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opens_share_one_store() {
        let (dir, reg) = registry();
        Store::create(dir.path(), "s", small())
            .unwrap()
            .close()
            .unwrap();
        let opens = (0..8).map(|_| reg.open("s"));
        let stores: Vec<_> = futures_util::future::join_all(opens).await;
        let first = stores[0].as_ref().unwrap();
        for s in &stores {
            assert!(Arc::ptr_eq(first, s.as_ref().unwrap()));
        }
        assert!(matches!(
            reg.open("missing").await,
            Err(Error::Store(e)) if matches!(*e, store::Error::NotFound { .. })
        ));
        assert!(matches!(reg.open("../x").await, Err(Error::Store(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_concurrent_creates_exactly_one_wins() {
        let (_dir, reg) = registry();
        let creates = (0..8).map(|_| reg.create("s", small()));
        let made = futures_util::future::join_all(creates).await;
        assert_eq!(made.iter().filter(|r| r.is_ok()).count(), 1);
        assert_eq!(made.iter().filter(|r| is_already_exists(r)).count(), 7);
        let (s, _) = made.into_iter().find_map(Result::ok).unwrap();
        assert!(Arc::ptr_eq(&s, &reg.open("s").await.unwrap()));
    }

    /// A create racing a delete of the same name either lost (the store is
    /// gone) or came after it (a new, empty store): nothing in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_create_racing_a_delete_ends_in_one_of_two_states() {
        let (dir, reg) = registry();
        for round in 0..10 {
            let (old, _) = reg.create("s", small()).await.unwrap();
            old.insert(1, b"old").unwrap();
            let (deleted, created) = tokio::join!(reg.delete("s"), reg.create("s", small()));
            deleted.unwrap();
            match created {
                Ok((new, _)) => {
                    assert!(!Arc::ptr_eq(&old, &new), "round {round}");
                    let now = reg.open("s").await.unwrap();
                    assert!(Arc::ptr_eq(&new, &now), "round {round}");
                    assert_eq!(now.stats().unwrap().object_count, 0);
                    reg.delete("s").await.unwrap();
                }
                r => {
                    assert!(is_already_exists(&r), "round {round}");
                    assert!(!store::exists(dir.path(), "s"), "round {round}");
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_close_all_nothing_opens() {
        let (dir, reg) = registry();
        let (s, _) = reg.create("s", small()).await.unwrap();
        Store::create(dir.path(), "t", small())
            .unwrap()
            .close()
            .unwrap();
        assert!(reg.close_all(Duration::from_secs(1)).await.is_empty());
        assert!(matches!(s.stats(), Err(store::Error::Closed)));
        assert!(matches!(reg.open("t").await, Err(Error::ShuttingDown)));
        assert!(matches!(reg.open("s").await, Err(Error::ShuttingDown)));
        assert!(matches!(
            reg.create("u", small()).await,
            Err(Error::ShuttingDown)
        ));
        assert!(reg.open_stores().is_empty());
    }

    #[test]
    fn a_store_held_by_another_open_is_locked_and_a_free_one_opens() {
        let dir = tempfile::tempdir().unwrap();
        let held = Store::create(dir.path(), "s", small()).unwrap();
        assert!(matches!(
            open_offline(dir.path(), "s"),
            Err(Error::Locked { name }) if name == "s"
        ));
        held.close().unwrap();
        drop(held);
        open_offline(dir.path(), "s").unwrap().close().unwrap();
        assert!(matches!(
            open_offline(dir.path(), "missing"),
            Err(Error::Store(e)) if matches!(*e, store::Error::NotFound { .. })
        ));
    }

    #[test]
    fn busy_messages_name_the_store() {
        let e = Error::Busy {
            name: "x".into(),
            phase: Phase::Opening,
        };
        assert_eq!(e.to_string(), "store 'x' is recovering, retry later");
        assert!(e.is_unavailable());
        let e = Error::Busy {
            name: "x".into(),
            phase: Phase::Deleting,
        };
        assert_eq!(e.to_string(), "store 'x' is being deleted, retry later");
    }
}
