//! Wiring of `tsstore serve`: open the listeners (TCP, and the Unix socket
//! unless disabled), restart the persisted outbound connections, serve HTTP
//! or HTTPS and the socket until SIGTERM/SIGINT, then shut down in a fixed
//! order: stop accepting (the socket file is removed), close the WebSocket
//! streams (1001), finish in-flight requests and socket sessions (bounded),
//! stop the outbound connections (persisting their cursors), sync and close
//! every store (a store still recovering is abandoned, see
//! [`crate::registry::Registry::close_all`]).
//!
//! Stores open in the background from the start: the server is ready
//! before any store is (see [`run`]).
//!
//! Under systemd (`Type=notify`) it reports `READY=1` once the listeners
//! are up, `WATCHDOG=1` while alive and `STOPPING=1` when shutdown starts
//! (see [`crate::notify`]).
//!
//! HTTPS uses rustls with the ring provider; SIGHUP reloads the certificate
//! and key for new connections without dropping open ones. The accept
//! loop and its limits (connection cap, header and idle timeouts) are in
//! `listen`.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, Mode, TlsFiles};
use crate::ingest::{self, SocketListener};
use crate::notify;
use crate::shutdown;
use crate::state::AppState;

mod listen;
mod per_address;
mod router;

/// How long in-flight requests may take to finish at shutdown.
pub const GRACE: Duration = Duration::from_secs(10);

/// Loads a TLS server configuration from PEM files.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .with_context(|| format!("TLS certificate file {}", files.cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS certificate file {}", files.cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "TLS certificate file {} holds no certificate",
            files.cert_file.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .with_context(|| format!("TLS key file {}", files.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What [`serve`] listens on.
pub struct Listeners {
    /// HTTP, or HTTPS with `tls`.
    pub http: TcpListener,
    /// The Unix socket, if enabled.
    pub socket: Option<SocketListener>,
    /// The TLS configuration (SIGHUP swaps it for new connections).
    pub tls: Option<Arc<RwLock<Arc<rustls::ServerConfig>>>>,
}

/// Starts the background work of a server about to serve `state` on HTTP
/// port `http_port`: every store opens in the background, each on a thread
/// of its own, and the persisted outbound connections restart (none may
/// dial the server's own port).
pub async fn start(state: &AppState, http_port: u16) {
    state.outbound.policy().set_own_ports(&[http_port]);
    state.stores.open_all();
    state.outbound.start().await;
    state.mqtt.start().await;
}

/// Serves `state` on `listeners` until `shutdown` resolves. Then, in
/// order: every listener stops accepting (the socket file is removed),
/// in-flight requests and sessions get [`GRACE`] to finish, the outbound
/// connections stop, and every store is synced and closed. Callable in
/// process (the tests bind port 0 and pass their own shutdown); `run` is
/// this with the process around it (configuration, the data path's lock,
/// signals, systemd).
pub async fn serve(
    listeners: Listeners,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let Listeners {
        http: listener,
        socket,
        tls,
    } = listeners;
    let app = router::router(state.clone());
    // One trigger for every part: the state's, so that WebSocket streams
    // see it too.
    let stop_tx = state.shutdown.clone();
    let stop_rx = stop_tx.subscribe();
    let trigger = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = trigger.send(true);
    });
    // Whatever starts the shutdown (the signal, or the HTTP server ending
    // by itself), the supervisor hears of it first.
    let mut stopping = stop_tx.subscribe();
    tokio::spawn(async move {
        if stopping.wait_for(|s| *s).await.is_ok() {
            // A blocking send (see notify::notify), off the runtime's workers.
            let _ = tokio::task::spawn_blocking(|| notify::send("STOPPING=1")).await;
        }
    });
    let ingest = socket.map(|s| tokio::spawn(ingest::serve(s, state.clone(), stop_rx.clone())));
    let limits = listen::Limits {
        max_connections: state.config.max_connections,
        max_connections_per_address: state.config.max_connections_per_address,
        header_timeout: state.config.header_timeout,
        idle_timeout: state.config.idle_timeout,
    };
    let metrics = state.metrics.clone();
    listen::serve(listener, app, tls, limits, metrics, stopped(stop_rx)).await;
    let _ = stop_tx.send(true);
    if let Some(ingest) = ingest {
        if let Err(e) = ingest.await {
            tracing::error!(error = %e, "unix socket listener failed");
        }
    }
    tracing::info!("Shutting down server...");
    // Outbound connections stop (and persist their cursors) before the
    // stores they read and write close.
    state.outbound.stop_all().await;
    state.mqtt.stop_all().await;
    let errors = state.stores.close_all(GRACE).await;
    for (name, e) in &errors {
        tracing::error!(store = %name, error = %e, "closing store failed");
    }
    tracing::info!("Server stopped");
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} store(s) failed to close cleanly", errors.len())
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `tsstore serve`: validates the configuration, binds, serves until a
/// signal, shuts down in order.
pub async fn run(config: Config) -> Result<()> {
    config
        .validate_for_serve()
        .map_err(|e| anyhow::anyhow!(e.reason.clone()))?;
    for k in &config.unknown_keys {
        tracing::warn!(key = %k, "unknown key in config file (ignored)");
    }
    std::fs::create_dir_all(&config.base_path).with_context(|| {
        format!(
            "Failed to create data directory {}",
            config.base_path.display()
        )
    })?;
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(RwLock::new(load_tls(files)?))),
        None => None,
    };
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("local address")?;
    let _server_lock = crate::registry::lock_server(
        &config.base_path,
        &format!("pid {}, {}", std::process::id(), local),
    )
    .context("Failed to lock the data directory")?;
    // A socket another server answers on is a conflict the user must
    // resolve; any other failure (typically no permission for the default
    // path) leaves the HTTP server running, as in the original.
    let socket = match &config.socket_path {
        None => None,
        Some(path) => match SocketListener::bind(path).await {
            Ok(s) => Some(s),
            Err(e @ ingest::BindError::InUse { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!("Warning: Unix socket listener failed to start: {e}");
                None
            }
        },
    };
    tracing::info!(
        "Starting tsstore server on {} ({})",
        local,
        if tls.is_some() { "HTTPS" } else { "HTTP" }
    );
    if let Some(s) = &socket {
        tracing::info!("Unix socket listening on {}", s.path().display());
    }
    if config.mode == Mode::Debug {
        // Never the admin key itself.
        let shown = Config {
            admin_key: config.admin_key.as_ref().map(|_| "<redacted>".into()),
            ..config.clone()
        };
        tracing::debug!(config = ?shown, "configuration");
    }
    if let (Some(tls), Some(files)) = (&tls, config.tls.clone()) {
        spawn_tls_reloader(tls.clone(), files);
    }
    let state = AppState::new(config);
    // A request for a store still opening waits a moment, then is
    // answered 503.
    start(&state, local.port()).await;
    // Every listener is bound (connections queue until `serve` accepts
    // them), so a client the supervisor lets in now is answered. Ready does
    // not wait for the stores: after a power cut a large store's recovery
    // takes minutes on an SD card, and holding READY=1 back for it would
    // keep every other store, `/health` and the dependent units waiting,
    // and let systemd's start timeout kill the server mid-recovery (to
    // begin again at the next start). The watchdog covers liveness from
    // here on, and it too never waits on a store's disk.
    notify::send("READY=1");
    notify::spawn_watchdog(state.stores.clone());
    let listeners = Listeners {
        http: listener,
        socket,
        tls,
    };
    serve(listeners, state, shutdown::signal()).await
}

/// Reloads the certificate on SIGHUP; a bad file keeps the old one.
fn spawn_tls_reloader(tls: Arc<RwLock<Arc<rustls::ServerConfig>>>, files: TlsFiles) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match load_tls(&files) {
                Ok(cfg) => {
                    *tls.write().unwrap_or_else(|e| e.into_inner()) = cfg;
                    tracing::info!("TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "TLS reload failed; keeping the old certificate")
                }
            }
        }
    });
}
