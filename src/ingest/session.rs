//! One connection of the Unix socket, from `AUTH` to close. Generic over
//! the stream halves, so it does not care what the transport is.
//!
//! Throughput comes from batching: every complete line in the read buffer
//! (up to [`MAX_BATCH`]) is parsed, and the inserts among them go to the
//! store in one `insert_batch` call (one lock, one commit; under `always`
//! one `fdatasync`, off the async workers). Each line still gets its own
//! answer, in order, and a line that fails does not affect the others. The
//! answers of a batch are written with one call.
//!
//! Reading goes on while answers wait to be written, up to
//! [`MAX_PENDING_REPLIES`] bytes of them: a client may write many lines
//! before it reads any answer without the two sides blocking each other;
//! past that limit the session stops reading until the client reads.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::gate::{Gate, WaitSlot};
use super::line::{self, Frame, Framer, Line, ParseError, MAX_LINE};
use crate::auth::{check_store_key, KeyRefusal};
use crate::codec;
use crate::error::ApiError;
use crate::reject::Reason;
use crate::state::AppState;
use crate::store::{self, DataType, Durability, ObjectHandle, SchemaError, Store};
use crate::throttle::{self, Client};

/// Time a client has to send its `AUTH` line.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(3);
/// How often an open session checks that its key is still valid: a
/// revoked or regenerated key stops a session within this time.
pub const REAUTH_INTERVAL: Duration = Duration::from_secs(1);
/// Most lines handled in one batch.
pub const MAX_BATCH: usize = 4096;
/// Bytes of answers that may wait for the client before reading stops.
pub const MAX_PENDING_REPLIES: usize = 1 << 20;
/// Time the last answers get to reach a client when a session ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

const AUTH_FAILED: &[u8] = b"ERROR authentication failed\n";

/// The two halves of a connection, the read buffer and the answers not
/// yet written.
struct Io<R, W> {
    rd: R,
    wr: W,
    framer: Framer,
    out: Vec<u8>,
    shutdown: watch::Receiver<bool>,
}

/// What [`Io::wait`] saw.
enum Event {
    Progress,
    Shutdown,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Io<R, W> {
    /// Waits until bytes were read (if `read`), answers were written, or
    /// the server shuts down. End of stream is recorded in the framer.
    async fn wait(&mut self, read: bool) -> io::Result<Event> {
        let read = read && !self.framer.is_ended();
        tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|s| *s) => Ok(Event::Shutdown),
            w = self.wr.write(&self.out), if !self.out.is_empty() => {
                let n = w?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                self.out.drain(..n);
                Ok(Event::Progress)
            }
            r = self.rd.read_buf(self.framer.read_buf()), if read => {
                if r? == 0 {
                    self.framer.end();
                }
                Ok(Event::Progress)
            }
        }
    }

    /// Writes every pending answer (bounded in time) and closes.
    async fn close(&mut self, last: &[u8]) {
        self.out.extend_from_slice(last);
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, async {
            self.wr.write_all(&self.out).await?;
            self.wr.shutdown().await
        })
        .await;
    }
}

/// Runs one connection of `client` until `QUIT`, the end of the stream,
/// an error, or the server's shutdown.
pub async fn run<R, W>(
    state: AppState,
    client: Client,
    gate: Gate,
    rd: R,
    wr: W,
    shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut io = Io {
        rd,
        wr,
        framer: Framer::new(MAX_LINE),
        out: Vec::new(),
        shutdown,
    };
    let Gate { wait, permits } = gate;
    let Some(first) = first_line(&mut io, wait).await else {
        return;
    };
    let Some(mut session) = authenticate(&state, client, &mut io, first).await else {
        return;
    };
    let Ok(_permit) = permits.try_acquire_owned() else {
        io.close(b"ERROR too many connections\n").await;
        return;
    };
    session.serve(&state, &mut io).await;
}

/// An authenticated session.
struct Session {
    name: String,
    key: String,
    store: Arc<Store>,
    /// When the key was last found valid.
    checked: Instant,
}

/// Reads the first line within [`AUTH_TIMEOUT`], unless a newer
/// connection pushes this one out of the waiting ones first (answered, and
/// closed: `None`). The connection stops waiting once the line is read.
async fn first_line<R, W>(io: &mut Io<R, W>, mut wait: WaitSlot) -> Option<Option<Vec<u8>>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
    loop {
        if let Some(f) = io.framer.next_frame() {
            return Some(match f {
                Frame::Line(l) => Some(l.to_vec()),
                Frame::TooLong => None,
            });
        }
        if io.framer.is_done() {
            return None;
        }
        // Bytes already sent win over the eviction and the deadline.
        let event = tokio::select! {
            biased;
            r = io.wait(true) => r,
            _ = wait.evicted() => {
                io.close(b"ERROR too many connections waiting to authenticate\n").await;
                return None;
            }
            _ = tokio::time::sleep_until(deadline) => {
                io.close(b"ERROR authentication timeout\n").await;
                return None;
            }
        };
        match event {
            Ok(Event::Progress) => {}
            Ok(Event::Shutdown) | Err(_) => return None,
        }
    }
}

/// Checks the `AUTH` line (`None`: too long); answers `OK` (left in
/// `io.out`) or an error (written, and the connection closed).
async fn authenticate<R, W>(
    state: &AppState,
    client: Client,
    io: &mut Io<R, W>,
    first: Option<Vec<u8>>,
) -> Option<Session>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let auth = match first.as_deref().map(line::parse_auth) {
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            io.close(format!("ERROR {e}\n").as_bytes()).await;
            return None;
        }
        None => {
            io.close(format!("ERROR {}\n", line::AuthFormatError).as_bytes())
                .await;
            return None;
        }
    };
    // Names are checked before the disk is touched, and an unknown store
    // is a failure like a wrong key; a key that cannot match costs no
    // argon2 hash (see `check_store_key`).
    let checked =
        if store::validate_name(auth.store).is_ok() && state.stores.known(auth.store).await {
            check_store_key(state, client, auth.store, auth.key).await
        } else {
            match state.throttle.check(client) {
                Ok(()) => {
                    state.throttle.fail(client);
                    Err(KeyRefusal::Invalid)
                }
                Err(t) => Err(KeyRefusal::Throttled(t)),
            }
        };
    match checked {
        Ok(_) => {}
        Err(KeyRefusal::Throttled(_)) => {
            tracing::info!("unix socket: authentication refused, too many failures");
            io.close(format!("ERROR {}\n", throttle::MESSAGE).as_bytes())
                .await;
            return None;
        }
        Err(_) => {
            tracing::debug!(store = %auth.store, "unix socket: authentication failed");
            io.close(AUTH_FAILED).await;
            return None;
        }
    }
    let store = match state.stores.open(auth.store).await {
        Ok(s) => s,
        // `store 'x' is recovering, retry later` and the like.
        Err(e) if e.is_unavailable() => {
            io.close(format!("ERROR {e}\n").as_bytes()).await;
            return None;
        }
        Err(e) => {
            io.close(format!("ERROR failed to open store: {e}\n").as_bytes())
                .await;
            return None;
        }
    };
    io.out.extend_from_slice(b"OK\n");
    Some(Session {
        name: auth.store.to_string(),
        key: auth.key.to_string(),
        store,
        checked: Instant::now(),
    })
}

/// The answer due to one line of a batch.
enum Reply {
    /// The result of the next item of the batch's insert.
    Stored,
    Error(String, Reason),
}

/// The lines of one batch: their answers in order, and the objects to
/// insert, each a range of one shared payload buffer.
#[derive(Default)]
struct Batch {
    replies: Vec<Reply>,
    items: Vec<(Option<i64>, Range<usize>)>,
    payload: Vec<u8>,
}

impl Batch {
    fn error(&mut self, e: impl std::fmt::Display, reason: Reason) {
        self.replies.push(Reply::Error(e.to_string(), reason));
    }

    /// Encodes `data` for the store and queues it, or queues its error.
    fn add(&mut self, store: &Store, timestamp: Option<i64>, data: &str) {
        let start = self.payload.len();
        let encoded = match store.config().data_type {
            // Already validated by the parser: stored as sent.
            DataType::Json => {
                self.payload.extend_from_slice(data.as_bytes());
                Ok(())
            }
            DataType::Schema => encode_schema(store, data).map(|b| self.payload.extend(b)),
            _ => codec::encode_data(store, data, false).map(|b| self.payload.extend(b)),
        };
        match encoded {
            Ok(()) => {
                self.items.push((timestamp, start..self.payload.len()));
                self.replies.push(Reply::Stored);
            }
            Err(e) => self.error(e.message, e.reason),
        }
    }
}

/// Validates and compacts schema data. As in the original, an object
/// whose keys are field indices (`{"1": 72.5}`) is taken as compact
/// already: field names are never all digits, so the two cannot be mixed up.
fn encode_schema(store: &Store, data: &str) -> Result<Vec<u8>, ApiError> {
    match store.encode_value(data.as_bytes()) {
        Err(store::Error::Schema(SchemaError::UnknownField { field }))
            if !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(store.encode_compact_value(data.as_bytes())?)
        }
        r => Ok(r?),
    }
}

/// The answer text and reason of a failed insert: the engine's message,
/// but the two timestamp errors keep the original's, as over HTTP.
fn store_failure(e: &store::Error) -> (String, Reason) {
    let reason = Reason::of(e);
    if reason == Reason::Internal {
        tracing::error!(error = %e, "unix socket: insert failed");
    }
    (reason.message(e), reason)
}

impl Session {
    async fn serve<R, W>(&mut self, state: &AppState, io: &mut Io<R, W>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            // Every complete line buffered, up to a batch.
            let mut batch = Batch::default();
            let mut quit = false;
            let mut more = false;
            let mut lines = 0;
            loop {
                if lines == MAX_BATCH {
                    more = true;
                    break;
                }
                let Some(frame) = io.framer.next_frame() else {
                    break;
                };
                lines += 1;
                let l = match frame {
                    Frame::TooLong => Err(ParseError::TooLong { limit: MAX_LINE }),
                    Frame::Line(l) => line::parse_line(l),
                };
                match l {
                    Ok(Line::Empty) => {}
                    Ok(Line::Quit) => {
                        quit = true;
                        break;
                    }
                    Ok(Line::Insert { timestamp, data }) => {
                        match codec::check_horizon(timestamp, state.config.max_future) {
                            Ok(t) => batch.add(&self.store, t, data),
                            Err(e) => batch.error(e.message, e.reason),
                        }
                    }
                    Err(e @ ParseError::TooLong { .. }) => batch.error(e, Reason::TooLarge),
                    Err(e) => batch.error(e, Reason::InvalidJson),
                }
            }
            if !batch.items.is_empty() && self.checked.elapsed() >= REAUTH_INTERVAL {
                let dir = state.stores.dir(&self.name);
                let checked = state.keys.verify(&self.name, dir, &self.key, || true);
                if checked.await.is_err() {
                    tracing::info!(store = %self.name, "unix socket: key no longer valid, closing");
                    io.close(AUTH_FAILED).await;
                    return;
                }
                self.checked = Instant::now();
            }
            self.finish(state, batch, &mut io.out).await;
            if quit {
                io.close(b"OK bye\n").await;
                return;
            }
            if io.framer.is_done() {
                io.close(b"").await;
                return;
            }
            if more && io.out.len() < MAX_PENDING_REPLIES {
                continue;
            }
            match io.wait(!more && io.out.len() < MAX_PENDING_REPLIES).await {
                Ok(Event::Progress) => {}
                Ok(Event::Shutdown) => {
                    io.close(b"ERROR server shutting down\n").await;
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Inserts the batch's objects and appends every answer to `out`.
    async fn finish(&self, state: &AppState, batch: Batch, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let Batch {
            replies,
            items,
            payload,
        } = batch;
        let n = items.len();
        let mut results = if n == 0 {
            Vec::new()
        } else {
            insert(&self.store, items, payload).await
        }
        .into_iter();
        let (mut ok, mut bytes) = (0, 0);
        for r in replies {
            match r {
                Reply::Stored => match results.next() {
                    Some(Ok(h)) => {
                        ok += 1;
                        bytes += u64::from(h.size);
                        let _ = writeln!(out, "OK {}", h.timestamp);
                    }
                    Some(Err(e)) => {
                        let (msg, reason) = store_failure(&e);
                        state.metrics.rejected(reason);
                        let _ = writeln!(out, "ERROR store failed: {msg}");
                    }
                    None => {
                        state.metrics.rejected(Reason::Internal);
                        out.extend_from_slice(b"ERROR store failed: no result\n");
                    }
                },
                Reply::Error(msg, reason) => {
                    state.metrics.rejected(reason);
                    let _ = writeln!(out, "ERROR {msg}");
                }
            }
        }
        if ok > 0 {
            state.metrics.inserted(ok, bytes);
        }
    }
}

/// One `insert_batch`; under `always` it waits for a disk sync, so it runs
/// off the async workers.
async fn insert(
    store: &Arc<Store>,
    items: Vec<(Option<i64>, Range<usize>)>,
    payload: Vec<u8>,
) -> Vec<store::Result<ObjectHandle>> {
    let batch =
        move |s: &Store| s.insert_batch(items.iter().map(|(t, r)| (*t, &payload[r.start..r.end])));
    if store.config().durability == Durability::Always {
        let s = store.clone();
        tokio::task::spawn_blocking(move || batch(&s))
            .await
            .unwrap_or_else(|e| vec![Err(store::Error::Io(io::Error::other(e)))])
    } else {
        batch(store)
    }
}
