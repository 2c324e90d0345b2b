//! Getting acknowledged data to stable storage: commits, group commit,
//! leases and the background flusher (FORMAT.md, "Commits" and "Leases").
//!
//! A commit writes the committed slot (the frontier image, and the aux
//! image of a soft delete in flight) and syncs the data file; when index
//! entries are due it then syncs the index, after the data they describe.
//! Only one commit runs at a time, so at most one is in flight at a power
//! cut and the commit before it is durable.
//!
//! Group commit: a writer that needs its data durable becomes the leader if
//! no commit is running; the leader's commit covers every write
//! acknowledged before it started. Writers arriving meanwhile wait and are
//! released together by the next leader. No store lock is held during a
//! sync.
//!
//! Leases: each commit names the highest block the session may write before
//! the next commit; writers obey the lease of the last commit whose sync
//! completed, and recovery reads only the blocks within it. Every store has
//! one, under every policy, so no writer laps the blocks recovery checks to
//! confirm the last durable commit. A writer that needs more leads (or
//! joins) a commit that extends it, never waits for the flusher; under a
//! steady stream of writes the flusher extends a large lease when half is
//! used, and a writer that fills half a lease during one commit gets a
//! larger one (up to [`lease_max`]), so that it does not pay a data sync
//! per megabyte.
//!
//! The flusher thread commits a dirty store once its oldest unsynced write
//! is one interval old (`interval`), syncs the index once an interval
//! (`always`, whose inserts commit the data file), and extends leases.
//! Under `never` nothing is synced until asked (every write is in the page
//! cache before it is acknowledged, so a crash of the program loses
//! nothing).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::{Config, Durability};
use super::error::{Error, Result};
use super::shared::{Shared, State, SyncState, Syncer};

/// Longest a sync leader waits for more writers to join (see `gather`).
const GATHER_MAX: Duration = Duration::from_micros(250);
/// A leader stops waiting once no new write arrived for this long.
const GATHER_IDLE: Duration = Duration::from_micros(50);

/// Bytes of blocks a commit leases ahead of the head: what recovery may
/// have to read past the last durable commit after a cut.
pub(crate) const LEASE_BYTES: u64 = 1 << 20;
/// With a lease of at least this many blocks the flusher extends it when
/// half is used; smaller leases (small rings, huge blocks) are extended by
/// the writer that runs out, at once, which also keeps the I/O of the
/// crash tests deterministic.
pub(crate) const PROACTIVE_LEASE_BLOCKS: u64 = 64;

/// Blocks a commit leases ahead of the head in a store of this shape under
/// this policy (FORMAT.md, "Leases"): about [`LEASE_BYTES`] of blocks, a
/// quarter of the ring if that is less (rings shorter than four such
/// leases), half the ring under `never`; at least one block. Every store has
/// a lease: a writer that laps the ring between two commits would write over
/// the blocks recovery checks to confirm the last durable commit, and a
/// torn write there keeps neither their old nor their new contents, so
/// recovery would fall back a commit and lose what the policy promised.
/// The price is a commit (with its data sync) per lease of blocks written:
/// under `never` the only syncs made unasked, one per half lap.
pub(crate) fn lease_blocks(cfg: &Config) -> u64 {
    let n = cfg.num_blocks as u64;
    let l = if cfg.durability == Durability::Never {
        n / 2
    } else {
        LEASE_BYTES.div_ceil(cfg.data_block_size as u64).min(n / 4)
    };
    l.max(1)
}

/// Most bytes of blocks a commit leases ahead of the head, for a fast
/// writer (see `Shared::size_lease`): the window recovery reads past the
/// durable commit stays within 2 MiB with the commit slots.
pub(crate) const LEASE_MAX_BYTES: u64 = (2 << 20) - (128 << 10);

/// The largest lease [`Shared::size_lease`] gives in a store of this shape
/// under this policy: about [`LEASE_MAX_BYTES`] of blocks, never more
/// than a quarter of the ring, never less than [`lease_blocks`]. Under
/// `never` leases do not grow (half the ring already).
pub(crate) fn lease_max(cfg: &Config) -> u64 {
    let min = lease_blocks(cfg);
    if cfg.durability == Durability::Never {
        return min;
    }
    (LEASE_MAX_BYTES / cfg.data_block_size as u64)
        .min(cfg.num_blocks as u64 / 4)
        .max(min)
}

/// What a caller of [`Shared::commit_req`] waits for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CommitReq {
    /// Every write up to this lsn durable.
    pub lsn: u64,
    /// A commit of its own, with the index synced after it.
    pub index: bool,
    /// A lease covering this block.
    pub lease_to: u64,
    /// The last commit of the session (close): it leases nothing further.
    pub last: bool,
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
                lease_want: 0,
                lease_low: false,
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
    /// `started` is when the sync began: a write it did not cover was
    /// acknowledged after that, so the next one is due an interval after
    /// `started`, not at once (back-to-back syncs under a steady stream of
    /// writes would wear flash for nothing).
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

    /// Asks the flusher to extend the lease now.
    pub fn lease_low(&self) {
        let mut s = self.lock();
        if !s.lease_low {
            s.lease_low = true;
            drop(s);
            self.cv.notify_all();
        }
    }

    /// Stops the flusher.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.cv.notify_all();
    }
}

impl Shared {
    /// Called after a write with sequence `lsn` was acknowledged in memory
    /// (and mirrored into the page cache).
    pub(crate) fn after_write(&self, lsn: u64) -> Result<()> {
        match self.cfg.durability {
            Durability::Always => self.commit(lsn, false),
            Durability::Interval(_) => {
                if !self.sync.dirty.swap(true, Ordering::AcqRel) {
                    let mut s = self.sync.lock();
                    s.dirty_since.get_or_insert_with(Instant::now);
                    drop(s);
                    self.sync.cv.notify_all();
                }
                Ok(())
            }
            Durability::Never => Ok(()),
        }
    }

    /// Makes every write up to `lsn` durable (and, with `with_index`, the
    /// index too, advancing what the next commit claims of it).
    pub(crate) fn commit(&self, lsn: u64, with_index: bool) -> Result<()> {
        self.commit_req(CommitReq {
            lsn,
            index: with_index,
            ..CommitReq::default()
        })
    }

    /// Waits until the lease covers block `seq`, committing if needed.
    pub(crate) fn extend_lease(&self, seq: u64) -> Result<()> {
        self.commit_req(CommitReq {
            lsn: self.lsn.load(Ordering::Acquire),
            lease_to: seq,
            ..CommitReq::default()
        })
    }

    /// Group commit: returns once `req` is satisfied, leading a commit if
    /// none is running.
    pub(crate) fn commit_req(&self, req: CommitReq) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            if let Some(f) = &s.failed {
                return Err(Error::Poisoned { reason: f.clone() });
            }
            if s.durable_lsn >= req.lsn && !req.index && !req.last && self.lease() >= req.lease_to {
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
        let expected = if req.index || req.last || req.lease_to > 0 {
            0
        } else {
            s.last_batch.saturating_sub(1)
        };
        if expected > 0 {
            s = self.gather(s, expected);
        }
        let lease_to = std::mem::take(&mut s.lease_want).max(req.lease_to);
        s.lease_low = false;
        let period_over = s.last_index_sync.elapsed() >= self.cfg.durability.period();
        drop(s);

        let started = Instant::now();
        let r = self.lead(req.index || period_over, lease_to, req.last);

        let mut s = self.sync.lock();
        s.leader = false;
        match &r {
            Ok((done, index_synced)) => {
                s.last_batch = done.saturating_sub(s.durable_lsn);
                s.durable_lsn = s.durable_lsn.max(*done);
                if *index_synced {
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

    /// The leader's commit: the index if entries are due, then the
    /// committed slot and a data sync. Returns the lsn now durable and
    /// whether the index was synced.
    ///
    /// The index goes first: the commit claims the entries it synced, and
    /// if its own sync is cut, recovery finds blocks of it missing (they
    /// are all after the previous commit's frontier) and falls back to the
    /// commit before, which claims less.
    fn lead(&self, index_wanted: bool, lease_to: u64, last: bool) -> Result<(u64, bool)> {
        let l = self.lease_now.load(Ordering::Relaxed);
        let fail = |what: &str, e: std::io::Error| {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            self.poison(&mut st, what, e)
        };
        let lease0 = self.lease();
        let (below, writes, index_due, next0) = {
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = &st.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            let dirty = st.index_writes > st.index_synced_writes;
            let lag = st.ring.next.saturating_sub(st.index_claim);
            let due = dirty && (index_wanted || last || lease_to > 0 || lag >= l / 2);
            (st.entries_below, st.index_writes, due, st.ring.next)
        };
        if index_due {
            self.media.index.sync().map_err(|e| fail("index sync", e))?;
        }
        let (lsn, lease) = {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            if index_due {
                st.index_claim = st.index_claim.max(below);
                st.index_synced_writes = st.index_synced_writes.max(writes);
            }
            let head = st.ring.next.saturating_sub(1);
            let lease = if last {
                // Nothing is written after the last commit.
                head
            } else {
                // (`stuck_cap` lets a writer through that no commit can
                // help, see there.)
                self.lease()
                    .max(head + l)
                    .max(lease_to)
                    .min(self.stuck_cap(&st, lease_to))
            };
            let claim = st.index_claim;
            self.write_committed(&mut st, lease, claim, false)?;
            if !last {
                self.lease_pending.fetch_max(lease, Ordering::AcqRel);
            }
            (self.lsn.load(Ordering::Acquire), lease)
        };
        self.media.data.sync().map_err(|e| fail("data sync", e))?;
        if !last {
            let next1 = self
                .state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .ring
                .next;
            self.size_lease(next1.saturating_sub(next0), next1 > lease0);
            self.lease_end.fetch_max(lease, Ordering::AcqRel);
        }
        Ok((lsn, index_due))
    }

    /// Sizes the lease of the next commit from what the last one took:
    /// `written` blocks were started while it ran, and `ran_out` if a writer
    /// used up the old lease meanwhile (and waited for it). A writer that
    /// fills more than half a lease during one commit gets twice what it
    /// wrote (twice the lease after it ran out), up to [`lease_max`]: each
    /// commit, and its data sync, then lets more blocks through, and the
    /// writer waits for none. Lowered by halves, raised at once.
    fn size_lease(&self, written: u64, ran_out: bool) {
        let (min, max) = (self.lease_blocks, lease_max(&self.cfg));
        let old = self.lease_now.load(Ordering::Relaxed);
        let want = if ran_out {
            old.saturating_mul(2)
        } else {
            written.saturating_mul(2)
        }
        .clamp(min, max);
        let new = if want >= old { want } else { (old + want) / 2 };
        self.lease_now.store(new.clamp(min, max), Ordering::Relaxed);
    }

    /// [`Shared::lease_cap`], or `want` if no commit can raise the cap to
    /// it: the cap a commit written now would leave behind (its own
    /// frontier page then being the last commit's) is below `want` too.
    /// That happens to a span that would take, one lap later, the place of
    /// the start of a span crossing the ring's end; waiting would never
    /// end, so it is let through (FORMAT.md, "Leases").
    fn stuck_cap(&self, st: &State, want: u64) -> u64 {
        let cap = self.lease_cap(st);
        if want > cap && want > self.cap_from(st, true) {
            want
        } else {
            cap
        }
    }

    /// The highest block a commit written now may lease (FORMAT.md,
    /// "Leases"). Writes made under it must not land in place on a block
    /// that recovery checks for this commit, nor for the next one if the
    /// frontier leaves this commit's frontier page before it: recovery
    /// tells a commit whose sync was cut by a block missing among those. A
    /// block is written in place again only when the write position leaves
    /// its page one lap later.
    pub(crate) fn lease_cap(&self, st: &State) -> u64 {
        self.cap_from(st, false)
    }

    /// [`Shared::lease_cap`]; with `settled`, as if the last commit's
    /// frontier page were the current one.
    fn cap_from(&self, st: &State, settled: bool) -> u64 {
        let n = st.ring.n;
        let tail = st
            .ring
            .next
            .saturating_sub(n)
            .max(st.meta.base_seq)
            .max(st.meta.floor_seq);
        let here = (st.frontier.page_off, self.frontier_first_seq(st));
        let (page, first) = st.last_commit_page;
        // This commit's check: from its index claim, or the previous
        // commit's frontier page if the frontier left it.
        let prev = if !settled && (page, first) != here {
            first
        } else {
            u64::MAX
        };
        let this = self.check_start(st, st.index_claim.min(prev), tail);
        // The next commit's check, if the frontier leaves this page first:
        // by then the tail is past this page's blocks of the lap before.
        let page_last = self.page_last_seq(st, here.1);
        let next_tail = (page_last + 1).saturating_sub(n).max(tail);
        let next = self.check_start(st, st.index_claim.min(here.1), next_tail);
        [this, next]
            .into_iter()
            .map(|s| self.page_last_seq(st, s) + n - 1)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Where recovery starts checking the blocks a commit vouches for
    /// (`recovery::region_of`): `from`, not before `tail`, and at the
    /// start of a span `from` is in the middle of.
    fn check_start(&self, st: &State, from: u64, tail: u64) -> u64 {
        let mut start = from.min(st.ring.next).max(tail);
        let mut s = start;
        while s > tail
            && st.ring.is_live(s)
            && st.table.kind(st.ring.pos(s)) == Some(super::format::BlockKind::SpanCont)
        {
            s -= 1;
        }
        if st.ring.is_live(s)
            && st.table.kind(st.ring.pos(s)) == Some(super::format::BlockKind::SpanStart)
        {
            start = start.min(s);
        }
        start
    }

    /// The block at the last position of block `seq`'s page, in `seq`'s
    /// lap (`seq` itself for blocks of a page or more).
    fn page_last_seq(&self, st: &State, seq: u64) -> u64 {
        let b = self.block_size() as u64;
        let pos = st.ring.pos(seq.max(st.ring.base)) as u64;
        let page = super::format::PAGE as u64;
        let page_end = (pos * b / page + 1) * page;
        let last_pos = page_end
            .div_ceil(b)
            .min(st.ring.n)
            .saturating_sub(1)
            .max(pos);
        seq + (last_pos - pos)
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
                _ if s.lease_low => Some(Duration::ZERO),
                (Durability::Always, _) if lsn > s.index_lsn => {
                    Some(period.saturating_sub(s.last_index_sync.elapsed()))
                }
                (Durability::Interval(_), Some(t)) => Some(period.saturating_sub(t.elapsed())),
                _ => None,
            }
        };
        match wait {
            Some(w) if w.is_zero() => {
                let lsn = shared.lsn.load(Ordering::Acquire);
                let extend = shared.sync.lock().lease_low;
                // An error poisons the store and is reported to writers.
                let _ = shared.commit_req(CommitReq {
                    lsn,
                    index: policy == Durability::Always,
                    // More than the lease now: a commit even if no write
                    // is waiting for one.
                    lease_to: if extend {
                        shared.lease().saturating_add(1)
                    } else {
                        0
                    },
                    last: false,
                });
                if shared.sync.lock().failed.is_some() {
                    return;
                }
            }
            // Nothing to do until a write arrives (it notifies), or until
            // the oldest unsynced write is due.
            w => {
                let s = shared.sync.lock();
                if s.shutdown {
                    return;
                }
                let (s, _) = shared
                    .sync
                    .cv
                    .wait_timeout(s, w.unwrap_or(period))
                    .unwrap_or_else(|e| e.into_inner());
                drop(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::config::DataType;

    fn cfg(num_blocks: u32, data_block_size: u32, durability: Durability) -> Config {
        Config {
            num_blocks,
            data_block_size,
            index_block_size: 4096,
            data_type: DataType::Binary,
            durability,
        }
    }

    #[test]
    fn a_fast_writer_lease_stays_within_the_recovery_window() {
        let interval = Durability::Interval(Duration::from_secs(1));
        // 4 KiB blocks: 1 MiB at least, 1920 KiB at most.
        let c = cfg(4096, 4096, interval);
        assert_eq!((lease_blocks(&c), lease_max(&c)), (256, 480));
        assert!(lease_max(&c) * 4096 + crate::store::format::COMMIT_AREA_LEN <= 2 << 20);
        // Never past a quarter of the ring.
        let c = cfg(1200, 4096, interval);
        assert_eq!((lease_blocks(&c), lease_max(&c)), (256, 300));
        let c = cfg(64, 4096, interval);
        assert_eq!((lease_blocks(&c), lease_max(&c)), (16, 16));
        // Blocks larger than the window: the one block a lease needs.
        let c = cfg(64, 4 << 20, interval);
        assert_eq!((lease_blocks(&c), lease_max(&c)), (1, 1));
        // `never` keeps its half ring.
        let c = cfg(4096, 4096, Durability::Never);
        assert_eq!((lease_blocks(&c), lease_max(&c)), (2048, 2048));
    }
}
