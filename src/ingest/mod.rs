//! Unix-socket ingestion: a line protocol for local writers (sensor
//! daemons on the same device) without HTTP's overhead.
//!
//! - [`line`]: framing and parsing, pure functions (built without the
//!   `server` feature too, for the fuzz target);
//! - `session`: one connection, from `AUTH` to close, with batched inserts;
//! - [`unix`]: the socket file and the accept loop.
//!
//! # Protocol
//!
//! The original ts-store's protocol (`docs/compatibility.md` §7), plus an
//! optional per-line timestamp. Lines end with `\n` and are trimmed of
//! ASCII whitespace; every answer is one line.
//!
//! 1. The first line is `AUTH <store> <api-key>` (`AUTH` in any case,
//!    single spaces, exactly three parts). Answers:
//!    - `OK`;
//!    - `ERROR invalid auth format, expected: AUTH <store> <api-key>`, then
//!      close;
//!    - `ERROR authentication failed`, then close: a wrong or revoked key,
//!      an unknown store or an invalid store name alike;
//!    - `ERROR store '<store>' is recovering, retry later`, then close,
//!      while the store is still opening (after an unclean stop) for
//!      longer than a second; likewise `is being created`, `is being
//!      reset`, `is being deleted`, and `ERROR server is shutting down,
//!      retry later`;
//!    - `ERROR failed to open store: <err>`, then close;
//!    - `ERROR authentication timeout`, then close, if no line came within
//!      3 s;
//!    - `ERROR too many connections waiting to authenticate`, then close,
//!      if [`unix::MAX_UNAUTHENTICATED`] newer connections came before
//!      this one's first line;
//!    - `ERROR too many failed authentication attempts, retry later`, then
//!      close, unverified, once the peer's user failed too often (the
//!      throttle of README "Security", per user id).
//!
//!    Only store API keys are accepted (not the admin key).
//! 2. Then each line is one of:
//!    - empty: ignored, no answer;
//!    - `QUIT` (any case): `OK bye`, then close;
//!    - a JSON value: stored, answer `OK <timestamp>` (Unix nanoseconds).
//!      A JSON object whose keys are exactly `data`, or exactly `data` and
//!      `timestamp`, is a wrapper: `data` is stored at `timestamp` if that
//!      is a positive integer, at now if it is `0`, `null` or absent. Any
//!      other value, an object with any other key included, is stored
//!      whole at now. (So to store an object that itself has only a `data`
//!      key, wrap it: `{"data": {"data": 1}}`.) "Now" is assigned by the
//!      store as it writes: the current time, or the newest timestamp plus
//!      1 ns if the clock is behind it, so it never fails as out of order.
//!
//!      The value is the same as `data` in an HTTP insert: json stores keep
//!      it as sent; schema stores validate and compact it (an object of
//!      field indices is taken as compact already); text stores take a
//!      JSON string, binary stores a base64 string.
//!
//!    Errors, after which the session goes on: `ERROR invalid JSON: <err>`
//!    (invalid UTF-8 included), `ERROR invalid timestamp: ...` (also for a
//!    timestamp more than `store.max_future` ahead of the clock), `ERROR line
//!    too long: the limit is 1048576 bytes`, `ERROR schema validation
//!    failed: <err>`, `ERROR store failed: <err>` (for example
//!    `timestamp must be greater than newest entry`).
//! 3. A client that closes without `QUIT` gets the answers to every
//!    complete line it sent (and to an unterminated last line), then the
//!    server closes.
//!
//! A client may send many lines before reading answers: they come back in
//! order. At shutdown an open session gets `ERROR server shutting down`
//! and is closed; lines it sent that have no answer were not stored.
//!
//! # Limits
//!
//! Lines up to [`line::MAX_LINE`] (1 MiB) bytes; a longer one is dropped as
//! it arrives, answered with an error, and the session goes on.
//! [`unix::MAX_CONNECTIONS`] (256) authenticated sessions; when they are
//! all taken a new connection is answered `ERROR too many connections` and
//! closed. Connections that have not authenticated yet do not take those
//! places: they have their own [`unix::MAX_UNAUTHENTICATED`] (32), the
//! newest pushing out the oldest, and 3 s to send `AUTH`. Before a batch of inserts, a
//! session re-checks its key if the last check is a second old, so a
//! revoked or regenerated key stops being accepted within about 1 s
//! (`ERROR authentication failed`, then close).

#[cfg(feature = "server")]
mod gate;
pub mod line;
#[cfg(feature = "server")]
mod session;
#[cfg(feature = "server")]
pub mod unix;

#[cfg(feature = "server")]
pub use session::{AUTH_TIMEOUT, MAX_BATCH, MAX_PENDING_REPLIES, REAUTH_INTERVAL};
#[cfg(feature = "server")]
pub use unix::{serve, BindError, SocketListener};
