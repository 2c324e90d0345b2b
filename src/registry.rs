//! The stores a server serves: every store directory under the data path,
//! opened on first use and kept open until shutdown or deletion.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::keys::{self, NewKey};
use crate::store::{self, Store};

/// Open stores by name.
pub struct Registry {
    base: PathBuf,
    open: Mutex<HashMap<String, Arc<Store>>>,
    /// Per open store, a counter bumped after every acknowledged write:
    /// what live readers wait on (see [`Registry::watch`]).
    live: Mutex<HashMap<String, Arc<watch::Sender<u64>>>>,
}

/// Wakes everyone watching a store.
fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

impl Registry {
    pub fn new(base: PathBuf) -> Registry {
        Registry {
            base,
            open: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
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

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Store>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The data path.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Directory of store `name` (the name must be valid).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// True if store `name` exists on disk.
    pub fn exists(&self, name: &str) -> bool {
        store::exists(&self.base, name)
    }

    /// The store `name` if it is open (never blocks on disk).
    pub fn get_open(&self, name: &str) -> Option<Arc<Store>> {
        self.lock().get(name).cloned()
    }

    /// The open store `name`, opening it if needed. Blocking.
    pub fn get(&self, name: &str) -> store::Result<Arc<Store>> {
        store::validate_name(name)?;
        let mut open = self.lock();
        if let Some(s) = open.get(name) {
            return Ok(s.clone());
        }
        let s = Arc::new(Store::open(&self.base, name)?);
        self.attach(name, &s);
        open.insert(name.to_string(), s.clone());
        Ok(s)
    }

    /// Creates store `name` with its first API key. Blocking.
    pub fn create(
        &self,
        name: &str,
        config: store::Config,
    ) -> Result<(Arc<Store>, NewKey), CreateError> {
        store::validate_name(name)?;
        std::fs::create_dir_all(&self.base).map_err(store::Error::Io)?;
        let mut open = self.lock();
        let s = Store::create(&self.base, name, config)?;
        let key = match keys::init(&self.dir(name), name, "Initial key") {
            Ok(k) => k,
            Err(e) => {
                let _ = s.delete_store();
                return Err(CreateError::Keys(e));
            }
        };
        let s = Arc::new(s);
        self.attach(name, &s);
        open.insert(name.to_string(), s.clone());
        Ok((s, key))
    }

    /// Closes and removes store `name`. Blocking.
    pub fn delete(&self, name: &str) -> store::Result<()> {
        store::validate_name(name)?;
        let mut open = self.lock();
        let r = match open.remove(name) {
            Some(s) => s.delete_store(),
            None => store::delete_store(&self.base, name),
        };
        self.detach(name);
        r
    }

    /// Names of every store on disk, sorted.
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

    /// The stores open now.
    pub fn open_stores(&self) -> Vec<(String, Arc<Store>)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Syncs and closes every open store (shutdown).
    pub fn close_all(&self) -> Vec<(String, store::Error)> {
        let stores: Vec<_> = self.lock().drain().collect();
        let errors = stores
            .iter()
            .filter_map(|(n, s)| s.close().err().map(|e| (n.clone(), e)))
            .collect();
        for (n, _) in &stores {
            self.detach(n);
        }
        errors
    }
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

/// Why a store could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Keys(keys::KeyError),
}
