//! The socket file and the accept loop.
//!
//! [`SocketListener::bind`] creates the parent directory (mode 0755) if it
//! is missing, replaces a stale socket file left by a crashed server (one
//! nobody answers on: connecting is refused), refuses a socket another
//! process answers on ([`BindError::InUse`]) or a path that is not a
//! socket, binds, and sets mode 0660. The file is removed when the
//! listener is dropped, if it is still the one this listener made.
//!
//! [`serve`] accepts until shutdown. Connections that have not sent their
//! `AUTH` line yet are [`Waiting`](super::gate::Waiting): at most [`MAX_UNAUTHENTICATED`] of
//! them, for at most [`AUTH_TIMEOUT`](super::AUTH_TIMEOUT); one more
//! pushes out the one that has waited longest (`ERROR too many connections
//! waiting to authenticate`), so a flood of idle connections can delay a
//! writer by one connection's turn, never lock it out. An authenticated
//! session holds one of [`MAX_CONNECTIONS`] semaphore permits; when all are
//! taken a new connection is answered `ERROR too many connections` and
//! closed.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use super::gate::MAX_UNAUTHENTICATED;
use super::gate::{Gate, Waiting};
use crate::state::AppState;
use crate::throttle::Client;

/// Most authenticated sessions at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Mode of the socket file: the owner and its group may connect.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of a parent directory the server creates.
pub const DIR_MODE: u32 = 0o755;
/// Time open sessions get to end after the shutdown signal.
pub const GRACE: Duration = Duration::from_secs(10);

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// A live server answers on the path: two servers would fight over it.
    #[error(
        "another process is listening on the Unix socket {}: stop it, choose another path (--socket or TSSTORE_SOCKET_PATH) or disable the socket (--no-socket)",
        path.display()
    )]
    InUse { path: PathBuf },
    /// Something other than a socket is in the way; it is never removed.
    #[error("{} exists and is not a socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot create the directory {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A bound Unix socket and its file.
#[derive(Debug)]
pub struct SocketListener {
    inner: UnixListener,
    path: PathBuf,
    /// Device and inode of the file made at bind.
    file: (u64, u64),
}

impl SocketListener {
    /// Sets up the socket file at `path` and listens on it.
    pub async fn bind(path: &Path) -> Result<SocketListener, BindError> {
        let at = |source| BindError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(dir)
                    .map_err(|source| BindError::Dir {
                        dir: dir.to_path_buf(),
                        source,
                    })?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                // Refused: a crashed server's file. Anything else that is
                // not an error (accepted, or no answer in time): in use.
                let probe = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::UnixStream::connect(path),
                )
                .await;
                match probe {
                    Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::info!("removing stale Unix socket {}", path.display());
                        std::fs::remove_file(path).map_err(at)?;
                    }
                    Ok(Err(e)) => return Err(at(e)),
                    Ok(Ok(_)) | Err(_) => {
                        return Err(BindError::InUse {
                            path: path.to_path_buf(),
                        })
                    }
                }
            }
            Ok(_) => {
                return Err(BindError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(e)),
        }
        let inner = UnixListener::bind(path).map_err(at)?;
        let made = (|| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
            std::fs::symlink_metadata(path)
        })();
        let m = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(at(e));
            }
        };
        Ok(SocketListener {
            inner,
            path: path.to_path_buf(),
            file: (m.dev(), m.ino()),
        })
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        // Only our own file: a server started after us may have replaced it.
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.file {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Decrements the connection gauge when a session ends, however it ends.
struct Connected(AppState);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.metrics.unix_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until `shutdown` turns true; then stops accepting,
/// removes the socket file and gives open sessions [`GRACE`] to end.
pub async fn serve(listener: SocketListener, state: AppState, shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let waiting = Arc::new(Waiting::default());
    let mut sessions = JoinSet::new();
    let mut stop = shutdown.clone();
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            a = listener.inner.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!(error = %e, "unix socket: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if permits.available_permits() == 0 {
            // A fresh socket's buffer is empty: this write does not block.
            let _ = stream.try_write(b"ERROR too many connections\n");
            if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!("unix socket: {MAX_CONNECTIONS} connections open, refusing more");
                last_full_warning = Some(Instant::now());
            }
            continue;
        }
        // Failed AUTHs count per user: every process of a user is one
        // client (a peer without credentials shares one bucket).
        let client = stream
            .peer_cred()
            .map_or(Client::Shared, |c| Client::Uid(c.uid()));
        let gate = Gate {
            wait: waiting.enter(),
            permits: permits.clone(),
        };
        state.metrics.unix_clients.fetch_add(1, Ordering::Relaxed);
        let connected = Connected(state.clone());
        let (state, shutdown) = (state.clone(), shutdown.clone());
        sessions.spawn(async move {
            let (rd, wr) = stream.into_split();
            super::session::run(state, client, gate, rd, wr, shutdown).await;
            drop(connected);
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, async {
        while sessions.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("unix socket: sessions still open after the grace period");
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
    }
}
