//! Getting acknowledged data to stable storage: group commit and the
//! background flusher.
//!
//! Group commit: a writer that needs its data durable becomes the leader if
//! no sync is running; the leader writes out the head block and issues one
//! `fdatasync` that covers every write acknowledged before it started.
//! Writers arriving meanwhile wait and are released together by the next
//! leader. No store lock is held during the sync.
//!
//! The flusher thread syncs a dirty store once its oldest unsynced write is
//! one interval old (`interval`), syncs the index once an interval
//! (`always`, whose inserts sync only the data file), or only writes the
//! head block out (`never`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::Durability;
use super::engine::Shared;
use super::error::{Error, Result};

/// Longest a sync leader waits for more writers to join (see `gather`).
const GATHER_MAX: Duration = Duration::from_micros(250);
/// A leader stops waiting once no new write arrived for this long.
const GATHER_IDLE: Duration = Duration::from_micros(50);

#[derive(Debug)]
struct SyncState {
    /// Every write with an lsn up to this one is durable.
    durable_lsn: u64,
    /// A leader is syncing now.
    leader: bool,
    /// When the oldest write not yet synced was acknowledged.
    dirty_since: Option<Instant>,
    last_index_sync: Instant,
    /// Every write up to this lsn is covered by an index sync.
    index_lsn: u64,
    shutdown: bool,
    /// A sync failed: nothing after it can be promised.
    failed: Option<String>,
    /// Writes the last sync of the data file covered (see `gather`).
    last_batch: u64,
    /// While the leader waits for more writers, the lsn that completes
    /// its batch; 0 otherwise (see `gather`).
    gather_target: u64,
}

/// Coordination of syncs for one store.
#[derive(Debug)]
pub(crate) struct Syncer {
    m: Mutex<SyncState>,
    cv: Condvar,
    /// Wakes a gathering leader when a writer arrives.
    arrived: Condvar,
    dirty: AtomicBool,
}

impl Syncer {
    pub fn new() -> Syncer {
        Syncer {
            m: Mutex::new(SyncState {
                durable_lsn: 0,
                leader: false,
                dirty_since: None,
                last_index_sync: Instant::now(),
                index_lsn: 0,
                shutdown: false,
                failed: None,
                last_batch: 0,
                gather_target: 0,
            }),
            cv: Condvar::new(),
            arrived: Condvar::new(),
            dirty: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the store clean if nothing after `done` was written. A write
    /// racing with this either sees the flag cleared (and sets it again) or
    /// is seen by the re-check.
    /// `started` is when the sync (or write-back) began: a write it did not
    /// cover was acknowledged after that, so the next one is due an
    /// interval after `started`, not at once (back-to-back syncs under a
    /// steady stream of writes would wear flash for nothing).
    fn clear_dirty(&self, s: &mut SyncState, lsn: &AtomicU64, done: u64, started: Instant) {
        if lsn.load(Ordering::Acquire) > done {
            s.dirty_since = Some(s.dirty_since.map_or(started, |t| t.max(started)));
            return;
        }
        self.dirty.store(false, Ordering::Release);
        s.dirty_since = None;
        if lsn.load(Ordering::Acquire) > done {
            self.dirty.store(true, Ordering::Release);
            s.dirty_since = Some(Instant::now());
        }
    }

    /// Stops the flusher.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.cv.notify_all();
    }
}

impl Shared {
    /// Called after a write with sequence `lsn` was acknowledged in memory.
    pub(crate) fn after_write(&self, lsn: u64) -> Result<()> {
        match self.cfg.durability {
            Durability::Always => self.commit(lsn, false),
            _ => {
                if !self.sync.dirty.swap(true, Ordering::AcqRel) {
                    let mut s = self.sync.lock();
                    s.dirty_since.get_or_insert_with(Instant::now);
                    drop(s);
                    self.sync.cv.notify_all();
                }
                Ok(())
            }
        }
    }

    /// Makes every write up to `lsn` durable (and, with `with_index`, the
    /// index too, advancing the synced point recorded in index entries).
    pub(crate) fn commit(&self, lsn: u64, with_index: bool) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            if let Some(f) = &s.failed {
                return Err(Error::Poisoned { reason: f.clone() });
            }
            if s.durable_lsn >= lsn && !with_index {
                return Ok(());
            }
            if !s.leader {
                break;
            }
            if s.gather_target != 0 && self.lsn.load(Ordering::Acquire) >= s.gather_target {
                self.sync.arrived.notify_one();
            }
            s = self.sync.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.leader = true;
        // The writers the last sync released, other than this one.
        let expected = if with_index {
            0
        } else {
            s.last_batch.saturating_sub(1)
        };
        if expected > 0 {
            s = self.gather(s, expected);
        }
        let index_due = with_index || s.last_index_sync.elapsed() >= self.cfg.durability.period();
        drop(s);

        let started = Instant::now();
        let r = self.lead(index_due);

        let mut s = self.sync.lock();
        s.leader = false;
        match &r {
            Ok(done) => {
                s.last_batch = done.saturating_sub(s.durable_lsn);
                s.durable_lsn = s.durable_lsn.max(*done);
                if index_due {
                    s.last_index_sync = Instant::now();
                    s.index_lsn = s.index_lsn.max(*done);
                }
                self.sync.clear_dirty(&mut s, &self.lsn, *done, started);
            }
            Err(e) => {
                s.failed.get_or_insert_with(|| e.to_string());
            }
        }
        drop(s);
        self.sync.cv.notify_all();
        r.map(|_| ())
    }

    /// Group commit under concurrency: the writers released by the last
    /// sync come back with their next write a moment later. A leader that
    /// syncs at once leaves them to the sync after, and the writers split
    /// into two halves taking turns, each sync covering only half of them.
    /// So the leader first sleeps until `expected` more writes arrived (the
    /// writer completing the batch wakes it), none arrived for
    /// `GATHER_IDLE`, or `GATHER_MAX` passed. A lone writer (the last sync
    /// covered only its own write) never waits.
    fn gather<'a>(
        &'a self,
        mut s: MutexGuard<'a, SyncState>,
        expected: u64,
    ) -> MutexGuard<'a, SyncState> {
        let mut seen = self.lsn.load(Ordering::Acquire);
        let target = seen + expected;
        let deadline = Instant::now() + GATHER_MAX;
        s.gather_target = target;
        while seen < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let (g, t) = self
                .sync
                .arrived
                .wait_timeout(s, left.min(GATHER_IDLE))
                .unwrap_or_else(|e| e.into_inner());
            s = g;
            let lsn = self.lsn.load(Ordering::Acquire);
            if t.timed_out() && lsn == seen {
                break;
            }
            seen = lsn;
        }
        s.gather_target = 0;
        s
    }

    /// The leader's work: write the head block out, then sync. Returns the
    /// lsn now durable.
    fn lead(&self, with_index: bool) -> Result<u64> {
        let (lsn, head) = {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            self.flush_head(&mut st)?;
            (self.lsn.load(Ordering::Acquire), st.ring.head())
        };
        let fail = |what: &str, e: std::io::Error| {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            st.poisoned
                .get_or_insert_with(|| format!("{what} failed: {e}"));
            Error::Io(e)
        };
        self.media.data.sync().map_err(|e| fail("data sync", e))?;
        if with_index {
            self.media.index.sync().map_err(|e| fail("index sync", e))?;
            if let Some(h) = head {
                let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
                if st.ring.is_live(h) {
                    st.synced_seq = st.synced_seq.max(h);
                }
            }
        }
        Ok(lsn)
    }

    /// `never`: write the head block out (no sync) so the OS can persist it.
    ///
    /// Until a sync has made the head block's header durable (`flushed` is
    /// still 0), the whole block so far goes out and `flushed` stays: an
    /// append written without a sync can reach the disk while the earlier
    /// write of the header does not, and land in the middle of the older
    /// block at that position, whose index entry recovery trusts.
    fn write_back(&self) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if st.closed || st.poisoned.is_some() {
            return;
        }
        match st.head.as_ref() {
            Some(h) if h.flushed == 0 => {
                let off = st.ring.pos(h.seq) as u64 * self.cfg.data_block_size as u64;
                if let Err(e) = self.media.data.write_at(off, &h.buf[..h.len]) {
                    st.poisoned
                        .get_or_insert_with(|| format!("data write failed: {e}"));
                }
            }
            _ => {
                let _ = self.flush_head(&mut st);
            }
        }
    }
}

/// Starts the store's flusher thread. It holds only a weak reference, so a
/// dropped store is never kept alive by it.
pub(crate) fn spawn_flusher(shared: &Arc<Shared>) -> Result<JoinHandle<()>> {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let period = shared.cfg.durability.period();
    let policy = shared.cfg.durability;
    std::thread::Builder::new()
        .name("tsstore-flush".into())
        .spawn(move || flusher(weak, policy, period))
        .map_err(Error::Io)
}

fn flusher(weak: Weak<Shared>, policy: Durability, period: Duration) {
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let wait = {
            let s = shared.sync.lock();
            if s.shutdown {
                return;
            }
            let lsn = shared.lsn.load(Ordering::Acquire);
            match (policy, s.dirty_since) {
                (Durability::Always, _) if lsn > s.index_lsn => {
                    Some(period.saturating_sub(s.last_index_sync.elapsed()))
                }
                (Durability::Always, _) => None,
                (_, Some(t)) => Some(period.saturating_sub(t.elapsed())),
                (_, None) => None,
            }
        };
        let wait = match wait {
            Some(w) => w,
            None => {
                // Nothing to do until a write arrives (it notifies).
                let s = shared.sync.lock();
                if s.shutdown {
                    return;
                }
                let (s, _) = shared
                    .sync
                    .cv
                    .wait_timeout(s, period)
                    .unwrap_or_else(|e| e.into_inner());
                drop(s);
                continue;
            }
        };
        if wait.is_zero() {
            match policy {
                Durability::Never => {
                    let lsn = shared.lsn.load(Ordering::Acquire);
                    let started = Instant::now();
                    shared.write_back();
                    let mut s = shared.sync.lock();
                    shared.sync.clear_dirty(&mut s, &shared.lsn, lsn, started);
                }
                _ => {
                    let lsn = shared.lsn.load(Ordering::Acquire);
                    // An error poisons the store and is reported to writers.
                    let _ = shared.commit(lsn, true);
                    if shared.sync.lock().failed.is_some() {
                        return;
                    }
                }
            }
            continue;
        }
        let s = shared.sync.lock();
        if s.shutdown {
            return;
        }
        let (s, _) = shared
            .sync
            .cv
            .wait_timeout(s, wait)
            .unwrap_or_else(|e| e.into_inner());
        drop(s);
        drop(shared);
    }
}
