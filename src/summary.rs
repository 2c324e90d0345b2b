//! The figures of every store a viewer may see, in one piece: what the
//! console's overview table and store page show, served by
//! `GET /api/summary` and rendered into the pages at load.
//!
//! The insert rate comes from a short history of each store's insert
//! counter ([`Rates`]): a sample is taken whenever the figures are read,
//! and the rate is the counter's growth since the oldest sample within
//! [`RATE_WINDOW`]. So it follows the inserts as they happen (not the
//! objects' own timestamps), costs one counter read per store, and needs
//! no background task. Before a store has two samples a second apart the
//! rate is read from its time index instead (objects stamped in the last
//! [`RATE_WINDOW`]), once.
//!
//! Invariant: the history never mixes two lives of a store: a counter that
//! went down (the store was reset, deleted, reopened) starts it again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::store::{self, Query, Store};

/// How far back the rate looks.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);
/// Samples closer together than this are not kept (many viewers, one history).
const MIN_STEP: Duration = Duration::from_secs(1);
/// Most handles counted by the index fallback (bounds its work).
const INDEX_MAX: usize = 100_000;

/// Per store: (when, objects inserted since the store was opened).
#[derive(Default)]
pub struct Rates {
    history: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
}

impl Rates {
    pub fn new() -> Rates {
        Rates::default()
    }

    /// Records that `name` had `appended` inserts at `now`; returns the
    /// rate (objects/s) over the history, `None` until it spans a second.
    pub fn sample(&self, name: &str, now: Instant, appended: u64) -> Option<f64> {
        let mut all = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let h = all.entry(name.to_string()).or_default();
        if h.back().is_some_and(|&(_, a)| appended < a) {
            h.clear();
        }
        if h.back()
            .is_none_or(|&(t, _)| now.saturating_duration_since(t) >= MIN_STEP)
        {
            h.push_back((now, appended));
        }
        // Keep one sample at or before the window's start.
        while h.len() >= 2 && now.saturating_duration_since(h[1].0) >= RATE_WINDOW {
            h.pop_front();
        }
        let &(t0, a0) = h.front()?;
        let dt = now.saturating_duration_since(t0);
        (dt >= MIN_STEP).then(|| (appended - a0) as f64 / dt.as_secs_f64())
    }

    /// Forgets stores not in `keep` (deleted ones).
    pub fn retain(&self, keep: &[String]) {
        let mut all = self.history.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|k, _| keep.contains(k));
    }
}

/// Objects per second stamped within the last [`RATE_WINDOW`], from the
/// time index (handles only, no data).
pub fn index_rate(s: &Store) -> f64 {
    let now = store::now_ns();
    let start = now - RATE_WINDOW.as_nanos() as i64;
    let n = s
        .handles(&Query::range(start, now, INDEX_MAX))
        .map(|h| h.len())
        .unwrap_or(0);
    n as f64 / RATE_WINDOW.as_secs_f64()
}

/// The insert rate of `s` (named `name`) now, sampling its history.
pub fn insert_rate(rates: &Rates, name: &str, s: &Store) -> f64 {
    match s.progress() {
        Ok(p) => rates
            .sample(name, Instant::now(), p.appended)
            .unwrap_or_else(|| index_rate(s)),
        Err(_) => 0.0,
    }
}

/// Outbound links of a store counted by status (WebSocket connections,
/// MQTT sinks and subscriptions together).
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct LinkCounts(pub std::collections::BTreeMap<String, u32>);

/// One store's figures.
#[derive(Serialize, Debug, Clone)]
pub struct StoreSummary {
    pub name: String,
    /// Set when the store could not be opened (recovering, busy, broken);
    /// the figures are then absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
    pub links: LinkCounts,
}

#[derive(Serialize, Debug, Clone)]
pub struct Figures {
    pub data_type: String,
    pub footprint_bytes: u64,
    pub num_blocks: u32,
    pub active_blocks: u32,
    pub object_count: u64,
    pub oldest_timestamp: i64,
    pub oldest_time: String,
    pub newest_timestamp: i64,
    pub newest_time: String,
    /// Objects inserted per second, over the last [`RATE_WINDOW`].
    pub insert_rate: f64,
}

/// The figures of an open store (blocking: reads its index).
pub fn figures(rates: &Rates, name: &str, s: &Store) -> Result<Figures, store::Error> {
    let st = s.stats()?;
    Ok(Figures {
        data_type: st.data_type.as_str().to_string(),
        footprint_bytes: st.footprint_bytes,
        num_blocks: st.num_blocks,
        active_blocks: st.active_blocks,
        object_count: st.object_count,
        oldest_timestamp: st.oldest_timestamp,
        oldest_time: crate::clock::rfc3339_secs(st.oldest_timestamp),
        newest_timestamp: st.newest_timestamp,
        newest_time: crate::clock::rfc3339_secs(st.newest_timestamp),
        insert_rate: insert_rate(rates, name, s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_the_counter_over_the_window() {
        let r = Rates::new();
        let t = Instant::now();
        assert_eq!(r.sample("a", t, 10), None);
        // Too close to the first: no rate yet, no second sample.
        assert_eq!(r.sample("a", t + Duration::from_millis(200), 11), None);
        assert_eq!(r.sample("a", t + Duration::from_secs(5), 35), Some(5.0));
        assert_eq!(r.sample("a", t + Duration::from_secs(10), 60), Some(5.0));
        // Inserts stop: the rate falls to 0 once the window has passed.
        let later = t + Duration::from_secs(10) + RATE_WINDOW;
        assert_eq!(r.sample("a", later, 60), Some(0.0));
        // A reset (counter down) starts again.
        assert_eq!(r.sample("a", later + Duration::from_secs(5), 3), None);
        // Stores are apart.
        assert_eq!(r.sample("b", t, 0), None);
        r.retain(&["b".to_string()]);
        assert_eq!(r.sample("a", later + Duration::from_secs(6), 3), None);
    }
}
