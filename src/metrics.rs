//! The server's counters and gauges (`/metrics` renders them, see
//! `api::metrics`): inserts, queries, refusals by [`Reason`], connections.
//! Every part counts through here; nothing here takes a lock across I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::reject::Reason;

/// Counters of the server.
#[derive(Default)]
pub struct Metrics {
    pub(crate) inserts: AtomicU64,
    pub(crate) insert_bytes: AtomicU64,
    pub(crate) queries: AtomicU64,
    pub(crate) stores_created: AtomicU64,
    pub(crate) rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Connected WebSocket clients (the streaming issue adds them).
    pub ws_clients: AtomicU64,
    /// Open Unix-socket connections.
    pub unix_clients: AtomicU64,
    /// Open HTTP connections (WebSocket streams included).
    pub http_connections: AtomicU64,
    /// HTTP connections refused at accept (over `server.max_connections`
    /// or `server.max_connections_per_address`).
    pub http_refused: AtomicU64,
    /// Of those, the ones over `server.max_connections_per_address`.
    pub http_refused_per_address: AtomicU64,
    /// HTTP connections closed by the server's header or idle timeout.
    pub http_timed_out: AtomicU64,
}

impl Metrics {
    pub fn inserted(&self, n: u64, bytes: u64) {
        self.inserts.fetch_add(n, Ordering::Relaxed);
        self.insert_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: Reason) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason.label())
            .or_default() += 1;
    }

    pub fn query(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn store_created(&self) {
        self.stores_created.fetch_add(1, Ordering::Relaxed);
    }
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
