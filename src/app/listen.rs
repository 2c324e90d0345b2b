//! The HTTP and HTTPS accept loop, with the limits that keep a hostile
//! client from holding the server's connections (README "Security",
//! "Timeouts and caps").
//!
//! - At most `server.max_connections` connections are open at once, each
//!   holding a semaphore permit for as long as its socket lives (so a
//!   WebSocket stream keeps its permit after the upgrade). One more is
//!   accepted and closed at once: over HTTP with a fixed 503 JSON answer
//!   written without waiting, over HTTPS without a word (a TLS handshake
//!   would cost what the cap saves).
//! - At most `server.max_connections_per_address` of them come from one
//!   client address ([`PerAddress`]), so that one address cannot take
//!   every place; one more from it is refused the same way, with its own
//!   message. That check comes first: a refused address never takes a
//!   place of the global cap, even for a moment.
//! - A connection must deliver a complete request head within
//!   `server.header_timeout_seconds` once the server waits for one: from
//!   accept, and from the end of the previous request of a keep-alive
//!   connection as soon as a byte of the next one came. A connection with
//!   no request in flight and no traffic for `server.idle_timeout_seconds`
//!   is closed. Both are checked by a watchdog per connection from what
//!   [`Activity`] records, which works the same for HTTP/1.1, HTTP/2 and
//!   TLS (its handshake is part of the first request's time).
//! - hyper answers a request it cannot parse by itself, with an empty body
//!   (400, 414, 431). [`Guarded`] rewrites those answers on their way out
//!   to carry `{"error": ...}` as every other error does. It recognises
//!   them by hyper's fixed head (`connection: close` and `content-length:
//!   0` right after the status line), which the router never produces: its
//!   errors all have a JSON body (see `api::json_errors`).
//!
//! Each request carries the peer's address as `ConnectInfo<SocketAddr>`
//! (for the authentication throttle). At shutdown the loop stops
//! accepting and open connections get [`GRACE`](super::GRACE) to finish.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::per_address::{PerAddress, Slot};
use crate::metrics::Metrics;

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The read buffer of an HTTP/1 connection, which bounds its request head.
/// hyper refuses a head (431) only when the buffer is full and the head
/// still incomplete, and one read may add up to this much more; so a head
/// is at most twice this, and one larger is always refused, however fast
/// it arrives (with hyper's default of ~400 KiB a 500 KB header passed when
/// it came in two reads). The longest URI a request may have (65534 bytes,
/// 414 beyond) fits.
const MAX_HEAD_BUF: usize = 128 * 1024;

/// The answer to a connection over the cap (plain HTTP).
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: 32\r\n\r\n{\"error\":\"too many connections\"}";
/// The answer to a connection over its address's cap (plain HTTP).
const REFUSED_ADDRESS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: 50\r\n\r\n{\"error\":\"too many connections from this address\"}";

/// Refuses an accepted connection at once: over HTTP with the fixed
/// `answer`, over HTTPS without a word (a TLS handshake would cost what
/// the cap saves).
fn refuse(tcp: &tokio::net::TcpStream, tls: bool, answer: &[u8]) {
    if !tls {
        // A fresh socket's send buffer is empty: this does not block.
        let _ = tcp.try_write(answer);
    }
}

/// Logs `what` at most once a minute (a refused flood must not flood the
/// log).
fn warn_now_and_then(last: &mut Option<Instant>, what: impl FnOnce()) {
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
        what();
        *last = Some(Instant::now());
    }
}

/// Serves `app` on `listener` (HTTPS if `tls`) until `shutdown` resolves,
/// then lets open connections finish for [`super::GRACE`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<RwLock<Arc<rustls::ServerConfig>>>>,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = PerAddress::new(limits.max_connections_per_address);
    let mut last_full_warning: Option<Instant> = None;
    let mut last_address_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = per_address.take(peer.ip()) else {
            metrics.http_refused.fetch_add(1, Ordering::Relaxed);
            metrics
                .http_refused_per_address
                .fetch_add(1, Ordering::Relaxed);
            refuse(&tcp, tls.is_some(), REFUSED_ADDRESS);
            warn_now_and_then(&mut last_address_warning, || {
                tracing::warn!(
                    peer = %peer.ip(),
                    "{} HTTP connections open from one address, refusing more from it",
                    limits.max_connections_per_address
                )
            });
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http_refused.fetch_add(1, Ordering::Relaxed);
            refuse(&tcp, tls.is_some(), REFUSED);
            warn_now_and_then(&mut last_full_warning, || {
                tracing::warn!(
                    "{} HTTP connections open, refusing more",
                    limits.max_connections
                )
            });
            continue;
        };
        let activity = Arc::new(Activity::new());
        let open = Open::new(&metrics, permit, slot);
        let conn = Conn {
            app: app.clone(),
            peer,
            activity: activity.clone(),
            limits,
            metrics: metrics.clone(),
        };
        let watcher = graceful.watcher();
        match &tls {
            None => {
                let io = Guarded::new(Counted::new(tcp, activity.clone()), activity, open);
                tokio::spawn(conn.run(io, watcher));
            }
            Some(tls) => {
                let cfg = tls.read().unwrap_or_else(|e| e.into_inner()).clone();
                let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                tokio::spawn(async move {
                    // The handshake is part of the first request's time.
                    let handshake = tokio::time::timeout(
                        limits.header_timeout,
                        acceptor.accept(Counted::new(tcp, activity.clone())),
                    );
                    let Ok(Ok(stream)) = handshake.await else {
                        return;
                    };
                    conn.run(Guarded::new(stream, activity, open), watcher)
                        .await;
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(super::GRACE) => tracing::warn!("connections still open after the grace period"),
    }
}

/// One accepted connection, before its transport is ready.
struct Conn {
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl Conn {
    /// Serves HTTP/1.1 (with upgrades) or HTTP/2 on `io` until the client
    /// is done, a timeout closes it, or the server shuts down.
    async fn run<S>(self, io: S, watcher: hyper_util::server::graceful::Watcher)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            app,
            peer,
            activity,
            limits,
            metrics,
        } = self;
        let requests = activity.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                let busy = Busy::new(&requests);
                async move {
                    use tower::ServiceExt;
                    let res = app.oneshot(req.map(axum::body::Body::new)).await;
                    drop(busy);
                    res
                }
            });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().max_buf_size(MAX_HEAD_BUF);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        let conn = watcher.watch(conn.into_owned());
        tokio::pin!(conn);
        let tick =
            (limits.header_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = &mut conn => return,
                _ = tokio::time::sleep(tick) => {
                    if let Some(why) = activity.expired(&limits) {
                        tracing::debug!(peer = %peer, "closing a connection: {why}");
                        metrics.http_timed_out.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    }
}

/// What a connection did when, for its watchdog. Times are milliseconds
/// since `base`; 0 in `head_started` means "no partial request".
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    /// When the connection last read or wrote a byte, or a request ended.
    last: AtomicU64,
    /// When the server began waiting for a request head that has started
    /// to arrive (or, on a new connection, the accept).
    head_started: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(1),
            head_started: AtomicU64::new(1),
        }
    }

    fn now(&self) -> u64 {
        // Never 0: that means "none".
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn read(&self) {
        self.read_at(self.now());
    }

    fn read_at(&self, now: u64) {
        self.last.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ =
                self.head_started
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        self.expired_at(limits, self.now())
    }

    fn expired_at(&self, limits: &Limits, now: u64) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let started = self.head_started.load(Ordering::Relaxed);
        if started != 0 && now.saturating_sub(started) > limits.header_timeout.as_millis() as u64 {
            return Some("request head not received in time");
        }
        let last = self.last.load(Ordering::Relaxed);
        if now.saturating_sub(last) > limits.idle_timeout.as_millis() as u64 {
            return Some("idle");
        }
        None
    }
}

/// A request in flight on a connection; when the last one ends the
/// connection waits for a new head.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Busy {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.head_started.store(0, Ordering::Relaxed);
        Busy(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's permit, its address's slot and its place in the
/// open-connections gauge, held as long as the socket lives.
struct Open {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
    _slot: Slot,
}

impl Open {
    fn new(metrics: &Arc<Metrics>, permit: OwnedSemaphorePermit, slot: Slot) -> Open {
        metrics.http_connections.fetch_add(1, Ordering::Relaxed);
        Open {
            metrics: metrics.clone(),
            _permit: permit,
            _slot: slot,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics
            .http_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, recording its reads in an [`Activity`] (under TLS, the
/// handshake's too).
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Counted<S> {
        Counted { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The transport hyper sees: records writes, holds the connection's
/// permit, and gives hyper's own parse-error answers a JSON body.
pub struct Guarded<S> {
    inner: S,
    activity: Arc<Activity>,
    _open: Open,
    /// A rewritten answer still being written, and how much of it is.
    rewrite: Option<(Vec<u8>, usize)>,
}

impl<S> Guarded<S> {
    fn new(inner: S, activity: Arc<Activity>, open: Open) -> Guarded<S> {
        Guarded {
            inner,
            activity,
            _open: open,
            rewrite: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// Writes what is left of a rewritten answer.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.rewrite {
            if *done == bytes.len() {
                self.rewrite = None;
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Reads are counted below, on the socket (see `Counted`).
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        std::task::ready!(me.poll_rewrite(cx))?;
        if let Some(json) = json_rejection(buf) {
            // hyper's answer is replaced whole: report it written.
            me.rewrite = Some((json, 0));
            std::task::ready!(me.poll_rewrite(cx))?;
            me.activity.wrote();
            return Poll::Ready(Ok(buf.len()));
        }
        let n = std::task::ready!(Pin::new(&mut me.inner).poll_write(cx, buf))?;
        if n > 0 {
            me.activity.wrote();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        std::task::ready!(me.poll_rewrite(cx))?;
        if let Some(json) = bufs.first().and_then(|b| json_rejection(b)) {
            me.rewrite = Some((json, 0));
            std::task::ready!(me.poll_rewrite(cx))?;
            me.activity.wrote();
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let n = std::task::ready!(Pin::new(&mut me.inner).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            me.activity.wrote();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_rewrite(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_rewrite(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// If `head` is hyper's own answer to a request it could not parse, the
/// same answer with a JSON body.
fn json_rejection(head: &[u8]) -> Option<Vec<u8>> {
    const SIGNATURE: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
    if !rest[line_end..].starts_with(SIGNATURE) {
        return None;
    }
    let (status, message) = match rest.get(..3)? {
        b"400" => ("400 Bad Request", "malformed HTTP request"),
        b"414" => ("414 URI Too Long", "request URI too long"),
        b"431" => (
            "431 Request Header Fields Too Large",
            "request header fields too large",
        ),
        _ => return None,
    };
    let body = serde_json::json!({ "error": message }).to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_rejections_get_a_json_body() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 15:44:50 GMT\r\n\r\n";
        let out = String::from_utf8(json_rejection(hyper).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "request header fields too large");
        for s in ["400", "414"] {
            let h = format!("HTTP/1.1 {s} X\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
            assert!(json_rejection(h.as_bytes()).is_some(), "{s}");
        }
        // Anything else goes out as it is: the router's own answers, a
        // body, other statuses.
        for h in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\":\"x\"}",
            b"",
        ] {
            assert!(json_rejection(h).is_none(), "{}", String::from_utf8_lossy(h));
        }
        // The fixed answers' lengths are their bodies'.
        for (answer, message) in [
            (REFUSED, "too many connections"),
            (REFUSED_ADDRESS, "too many connections from this address"),
        ] {
            let (head, body) = std::str::from_utf8(answer)
                .unwrap()
                .split_once("\r\n\r\n")
                .unwrap();
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(body).unwrap()["error"],
                message
            );
        }
    }

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            max_connections_per_address: 1,
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
        }
    }

    #[test]
    fn the_watchdog_tells_slow_heads_from_idle_connections() {
        const HEAD: &str = "request head not received in time";
        let l = limits();
        // Times in ms on the connection's clock (1: its accept).
        let a = Arc::new(Activity::new());
        // A new connection that sends nothing is waiting for a head.
        assert_eq!(a.expired_at(&l, 100), None);
        assert_eq!(a.expired_at(&l, 102), Some(HEAD));
        // A request in flight is never timed out here.
        let busy = Busy::new(&a);
        assert_eq!(a.expired_at(&l, 10_000), None);
        drop(busy);
        let end = a.last.load(Ordering::Relaxed);
        // Between requests: idle, until a byte of the next head comes.
        assert_eq!(a.expired_at(&l, end + 250), None);
        a.read_at(end + 250);
        assert_eq!(a.expired_at(&l, end + 350), None);
        assert_eq!(a.expired_at(&l, end + 351), Some(HEAD));
        // A quiet keep-alive connection lasts the idle time; any byte
        // written (a response body still going out) restarts it.
        let b = Arc::new(Activity::new());
        drop(Busy::new(&b));
        b.last.store(500, Ordering::Relaxed);
        assert_eq!(b.expired_at(&l, 800), None);
        assert_eq!(b.expired_at(&l, 801), Some("idle"));
    }
}
