//! The state of an open store that the engine's modules share: [`Shared`]
//! (configuration, media, the lock-guarded [`State`], the coordination of
//! commits, the leases), the in-memory [`State`] and the types it is made
//! of, a store's file names and its [`Media`]. The facade (`engine`) and
//! every module doing the work (`write`, `frontier`, `commit`, `read`,
//! `lifecycle`, `recovery`) take these from here, and this module imports
//! none of them, so the engine's modules form no circle.
//!
//! Concurrency: one `RwLock` guards the in-memory state. Inserts take it for
//! writing just long enough to append (and to `pwrite` a page that filled
//! up); readers take it for reading and read blocks through the memory map
//! (or `pread`). No lock is held across a disk sync, except by `reset` and
//! `open`, so readers never wait for one.
//!
//! Invariants (FORMAT.md, "The write frontier"):
//! - the head block buffer holds the newest packed block while it accepts
//!   objects;
//! - every byte written to the ring before the frontier page is in the data
//!   file (page cache at least); the frontier page's bytes `..fill` are
//!   only in memory and in the working commit slot, and it is written in
//!   place once, when the write position leaves it;
//! - every acknowledged write is in the kernel's page cache before it is
//!   acknowledged, whatever the policy;
//! - `last_ts` is the newest timestamp written to a live block (deleted or
//!   not): every insert must exceed it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use super::config::Config;
use super::error::{Error, Result};
use super::format::{
    Meta, PageRef, BLOCK_HEADER_LEN, MAX_OBJECT_LEN, MAX_SPAN_BLOCKS, PAGE, RECORD_HEADER_LEN,
};
use super::index::BlockTable;
use super::medium::{IoSnapshot, Medium};
use super::object::now_ns;
use super::ring::Ring;
use super::schema::Schema;

/// The insert hook: an object's timestamp and stored bytes.
pub type InsertHook = Box<dyn Fn(i64, &[u8]) + Send + Sync>;

/// File names inside a store's directory.
pub const DATA_FILE: &str = "data.tsdb";
pub const INDEX_FILE: &str = "index.tsdb";
pub const META_FILE: &str = "meta.tsdb";

/// The three media a store lives on.
#[derive(Clone)]
pub struct Media {
    pub data: Arc<dyn Medium>,
    pub index: Arc<dyn Medium>,
    pub meta: Arc<dyn Medium>,
}

impl Media {
    /// I/O done so far, summed over the three media.
    pub fn io(&self) -> IoSnapshot {
        self.data.stats().snapshot() + self.index.stats().snapshot() + self.meta.stats().snapshot()
    }
}

/// The packed block currently accepting objects.
pub(crate) struct HeadBuf {
    pub seq: u64,
    pub buf: Vec<u8>,
    pub len: usize,
}

/// The frontier page: the page of `data.tsdb` holding the write position.
/// Its bytes `..fill` are this lap's and are not in place yet; bytes past
/// `fill` are zero.
pub(crate) struct Frontier {
    /// File offset of the page (a multiple of [`PAGE`], inside the ring).
    pub page_off: u64,
    pub img: Box<[u8]>,
    pub fill: usize,
    /// Bytes of `img` from here on changed since the working slot last
    /// mirrored them.
    pub dirty_from: usize,
}

impl Frontier {
    pub fn new(page_off: u64) -> Frontier {
        Frontier {
            page_off,
            img: vec![0u8; PAGE].into_boxed_slice(),
            fill: 0,
            dirty_from: 0,
        }
    }
}

/// The working commit slot: the slot of commit `commit_next`, mirroring
/// the frontier page (FORMAT.md, "The commit area").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Working {
    /// The page it mirrors (re-pointed when the frontier moves on).
    pub page_off: u64,
    /// The lap of that page it mirrors: the sequence number at the page's
    /// first position. A ring of one page (or a wrap back onto the same
    /// page) keeps `page_off` but starts a new lap, which the slot's header
    /// must name or recovery lays the image over the wrong blocks.
    pub first_seq: u64,
}

/// The image of a page a soft delete is changing in place, carried by every
/// commit while the change is not durable (FORMAT.md, "Soft delete").
pub(crate) struct Aux {
    pub page: PageRef,
    pub img: Vec<u8>,
}

/// A located object: its block, its record offset and, for a packed
/// object, its data.
pub(crate) type Found<'a> = (u64, u32, Option<&'a [u8]>);

pub(crate) struct State {
    pub ring: Ring,
    pub table: BlockTable,
    pub head: Option<HeadBuf>,
    pub last_ts: i64,
    pub live_objects: u64,
    /// Counts since open, for followers (see [`Progress`](super::Progress)).
    pub appended: u64,
    pub deleted: u64,
    pub resets: u64,
    pub meta: Meta,
    pub closed: bool,
    pub poisoned: Option<String>,
    pub frontier: Frontier,
    pub working: Option<Working>,
    pub aux: Option<Aux>,
    /// Counter of the next commit.
    pub commit_next: u64,
    /// The last commit's frontier page and the sequence number at its first
    /// position (see `Shared::lease_cap`).
    pub last_commit_page: (u64, u64),
    /// Index entries of every block below it are durable and current.
    pub index_claim: u64,
    /// Index entries of every sealed block below it are written.
    pub entries_below: u64,
    /// Index entries written since open, and how many of them an index
    /// sync covered.
    pub index_writes: u64,
    pub index_synced_writes: u64,
}

pub(crate) struct Shared {
    pub cfg: Config,
    pub media: Media,
    pub dir: Option<PathBuf>,
    pub state: RwLock<State>,
    pub sync: Syncer,
    /// Number of writes (inserts, deletes, resets) acknowledged so far.
    pub lsn: AtomicU64,
    /// Highest sequence number writers may use: the lease of the last
    /// commit whose sync completed (FORMAT.md, "Leases").
    pub lease_end: AtomicU64,
    /// Blocks a commit leases ahead of the head at least
    /// ([`super::commit::lease_blocks`]).
    pub lease_blocks: u64,
    /// Blocks the next commit leases ahead of the head: `lease_blocks`, or
    /// up to [`super::commit::lease_max`] for a writer fast enough to use
    /// up a lease during one commit (see `Shared::size_lease`).
    pub lease_now: AtomicU64,
    /// The lease of the commit being synced (until it completes, writers
    /// obey `lease_end`): a writer asks for a new one only if even this
    /// one leaves less than half a lease ahead of it, or a fast writer
    /// would have the flusher commit back to back, each commit letting
    /// through only what was written during the one before.
    pub lease_pending: AtomicU64,
    /// Bytes of the ring, and where the commit area starts.
    pub ring_len: u64,
    pub schema: RwLock<Option<Schema>>,
    /// Serializes soft deletes and resets, which write in several steps.
    pub delete_lock: Mutex<()>,
    /// Called after every acknowledged write (see [`Store::on_write`](super::Store::on_write)).
    pub on_write: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Called with each acknowledged inserted object (see
    /// [`Store::on_insert`](super::Store::on_insert)).
    pub on_insert: std::sync::OnceLock<InsertHook>,
    /// Where "now" comes from for inserts without a timestamp (see
    /// [`Store::set_clock`](super::Store::set_clock)); the system clock when unset.
    pub clock: std::sync::OnceLock<Clock>,
    /// Held for the store's life: keeps a second process out.
    pub _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// The state of the group commit, under [`Syncer`]'s mutex.
#[derive(Debug)]
pub(crate) struct SyncState {
    /// Every write with an lsn up to this one is durable.
    pub durable_lsn: u64,
    /// A leader is committing now.
    pub leader: bool,
    /// When the oldest write not yet synced was acknowledged.
    pub dirty_since: Option<Instant>,
    pub last_index_sync: Instant,
    /// Every write up to this lsn is covered by an index sync.
    pub index_lsn: u64,
    pub shutdown: bool,
    /// A sync failed: nothing after it can be promised.
    pub failed: Option<String>,
    /// Writes the last sync of the data file covered (see `gather`).
    pub last_batch: u64,
    /// While the leader waits for more writers, the lsn that completes
    /// its batch; 0 otherwise (see `gather`).
    pub gather_target: u64,
    /// The highest block a waiting writer needs the lease to cover.
    pub lease_want: u64,
    /// The flusher should extend the lease now.
    pub lease_low: bool,
}

/// Coordination of commits for one store (the group commit, the flusher
/// and the leases of `commit`, which owns its behaviour).
#[derive(Debug)]
pub(crate) struct Syncer {
    pub m: Mutex<SyncState>,
    pub cv: Condvar,
    /// Wakes a gathering leader when a writer arrives.
    pub arrived: Condvar,
    pub dirty: AtomicBool,
}

/// A source of "now" in Unix nanoseconds (see [`Store::set_clock`](super::Store::set_clock)).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub(crate) fn rd(l: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn wr(l: &RwLock<State>) -> RwLockWriteGuard<'_, State> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// "Now" for inserts without a timestamp.
    pub(crate) fn now(&self) -> i64 {
        match self.clock.get() {
            Some(c) => c(),
            None => now_ns(),
        }
    }

    /// The timestamp of an insert without one: now, or the newest plus one
    /// if the clock is behind (checked: past `i64::MAX` there is none).
    pub(crate) fn now_after(&self, st: &State) -> Result<i64> {
        let ts = self.now().max(st.last_ts.saturating_add(1));
        self.check_ts(st, ts)?;
        Ok(ts)
    }

    pub(crate) fn block_size(&self) -> usize {
        self.cfg.data_block_size as usize
    }

    /// File offset of ring position `pos`.
    pub(crate) fn block_offset(&self, pos: u32) -> u64 {
        pos as u64 * self.cfg.data_block_size as u64
    }

    pub(crate) fn max_object_size(&self) -> u64 {
        let payload = (self.cfg.data_block_size as u64) - BLOCK_HEADER_LEN as u64;
        let blocks = (self.cfg.num_blocks as u64).min(MAX_SPAN_BLOCKS as u64);
        (blocks * payload - RECORD_HEADER_LEN as u64).min(MAX_OBJECT_LEN)
    }

    pub(crate) fn check_open(&self, st: &State) -> Result<()> {
        if st.closed {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self, st: &State) -> Result<()> {
        self.check_open(st)?;
        if let Some(reason) = &st.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn check_ts(&self, st: &State, ts: i64) -> Result<()> {
        if ts <= 0 {
            return Err(Error::InvalidTimestamp { timestamp: ts });
        }
        if ts <= st.last_ts {
            return Err(Error::TimestampOutOfOrder {
                timestamp: ts,
                newest: st.last_ts,
            });
        }
        Ok(())
    }

    /// Marks the store read-only after a failed write or sync, and returns
    /// the error to report.
    pub(crate) fn poison(&self, st: &mut State, what: &str, e: std::io::Error) -> Error {
        st.poisoned
            .get_or_insert_with(|| format!("{what} failed: {e}"));
        Error::Io(e)
    }

    /// Runs the insert hook on each acknowledged object, if one is set.
    pub(crate) fn inserted(&self, timestamp: i64, data: &[u8]) {
        if let Some(f) = self.on_insert.get() {
            f(timestamp, data);
        }
    }

    /// Runs the write hook, if one is set.
    pub(crate) fn notify(&self) {
        if let Some(f) = self.on_write.get() {
            f();
        }
    }

    /// The lease writers obey now (see [`Shared::lease_end`]).
    pub(crate) fn lease(&self) -> u64 {
        self.lease_end.load(Ordering::Acquire)
    }
}
