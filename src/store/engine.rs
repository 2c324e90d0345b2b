//! The store: create, open, insert, read, query, delete, reset, stats and
//! close, over three media (data, index, meta).
//!
//! Concurrency: one `RwLock` guards the in-memory state. Inserts take it for
//! writing just long enough to append to the head block buffer (and to
//! `pwrite` a block that filled up); readers take it for reading and read
//! blocks through the memory map (or `pread`). No lock is held across a
//! disk sync, except by `reset` and `open`, so readers never wait for one.
//!
//! Invariants:
//! - the head block buffer holds the newest packed block; its bytes
//!   `..flushed` are also in the data file, the rest only in memory;
//! - every live block that is not the head was written whole to the data
//!   file and its index entry was written when it was sealed;
//! - `last_ts` is the newest timestamp written to a live block (deleted or
//!   not): every insert must exceed it.

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use super::config::{Config, DataType, Durability};
use super::durability::Syncer;
use super::error::{Error, Result};
use super::format::{
    encode_record_header, record_crc, BlockHeader, BlockKind, IndexEntry, Meta, RecordHeader,
    BLOCK_HEADER_LEN, MAX_OBJECT_LEN, MAX_SPAN_BLOCKS, RECORD_HEADER_LEN, REC_DELETED_BIT,
    REC_DELETED_BYTE_OFF,
};
use super::index::BlockTable;
use super::medium::{FileMedium, IoSnapshot, Medium};
use super::object::{now_ns, Filter, Object, ObjectHandle, Order, Query, Records};
use super::ring::Ring;
use super::schema::{self, Schema};

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
    pub flushed: usize,
}

/// A located object: its block, its record offset and, for a packed
/// object, its data.
type Found<'a> = (u64, u32, Option<&'a [u8]>);

pub(crate) struct State {
    pub ring: Ring,
    pub table: BlockTable,
    pub head: Option<HeadBuf>,
    pub last_ts: i64,
    pub live_objects: u64,
    /// Counts since open, for followers (see [`Progress`]).
    pub appended: u64,
    pub deleted: u64,
    pub resets: u64,
    /// Blocks before this one are sealed with durable index entries, and
    /// data and index are durable through it.
    pub synced_seq: u64,
    pub meta: Meta,
    pub closed: bool,
    pub poisoned: Option<String>,
}

pub(crate) struct Shared {
    pub cfg: Config,
    pub media: Media,
    pub dir: Option<PathBuf>,
    pub state: RwLock<State>,
    pub sync: Syncer,
    /// Number of writes (inserts, deletes) acknowledged so far.
    pub lsn: AtomicU64,
    pub schema: RwLock<Option<Schema>>,
    /// Serializes soft deletes, which write in two phases.
    delete_lock: Mutex<()>,
    /// Called after every acknowledged write (see [`Store::on_write`]).
    on_write: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Where "now" comes from for inserts without a timestamp (see
    /// [`Store::set_clock`]); the system clock when unset.
    clock: std::sync::OnceLock<Clock>,
    /// Held for the store's life: keeps a second process out.
    _lock: Option<nix::fcntl::Flock<fs::File>>,
}

/// A source of "now" in Unix nanoseconds (see [`Store::set_clock`]).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Statistics of a store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub num_blocks: u32,
    pub data_block_size: u32,
    pub index_block_size: u32,
    pub data_type: DataType,
    /// `always`, `interval:<ms>` or `never`.
    pub durability: String,
    /// Ring position of the newest block.
    pub head_block: u32,
    /// Ring position of the oldest block.
    pub tail_block: u32,
    /// Blocks holding data.
    pub active_blocks: u32,
    /// Live objects (soft-deleted ones excluded).
    pub object_count: u64,
    /// Bytes of the ring in use: active blocks times the block size.
    pub bytes_used: u64,
    /// Total bytes the store's files occupy (fixed at create).
    pub footprint_bytes: u64,
    /// Timestamp of the oldest live object, 0 when empty.
    pub oldest_timestamp: i64,
    /// Timestamp of the newest live object, 0 when empty.
    pub newest_timestamp: i64,
}

/// Counters of a store since it was opened, with its oldest and newest
/// live timestamps, taken together under one lock by [`Store::progress`].
///
/// A follower (a live reader that has read every object up to some
/// timestamp `t`) uses it to tell objects it missed because the ring
/// overwrote them: if it knew of `r` unread objects when `appended` was
/// `a`, has read `n` since, and now the oldest live object is newer than
/// `t`, then `r + (appended - a) - n - (deleted since) - live_objects`
/// objects were overwritten before it read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Objects inserted since open.
    pub appended: u64,
    /// Objects soft-deleted since open.
    pub deleted: u64,
    /// Resets since open.
    pub resets: u64,
    /// Live objects now.
    pub live_objects: u64,
    /// Timestamp of the oldest live object.
    pub oldest_timestamp: Option<i64>,
    /// Timestamp of the newest object written (`None` when empty).
    pub newest_timestamp: Option<i64>,
}

/// An open store. All methods take `&self` and are safe to call from many
/// threads: many readers run alongside one writer at a time.
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

fn rd(l: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn wr(l: &RwLock<State>) -> RwLockWriteGuard<'_, State> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Checks a store name: 1 to 64 of `[A-Za-z0-9_-]`. Anything else (path
/// traversal included) is rejected before the disk is touched.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("name is empty");
    }
    if name.len() > 64 {
        return bad("name is longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return bad("name may only contain letters, digits, '-' and '_'");
    }
    Ok(())
}

pub(super) fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<fs::File>> {
    let f = fs::File::open(dir.join(META_FILE))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            Error::InvalidConfig {
                reason: format!("store {} is already open in another process", dir.display()),
            }
        } else {
            Error::Io(e.into())
        }
    })
}

/// Deletes a store by path without opening it. Fails if it is open. A
/// power cut leaves the store whole or gone (see [`super::staged`]).
pub fn delete_store(base: &Path, name: &str) -> Result<()> {
    super::staged::delete_store_with(&super::fs::RealFs, base, name)
}

/// True if a store exists at `base/name`.
pub fn exists(base: &Path, name: &str) -> bool {
    validate_name(name).is_ok() && base.join(name).join(META_FILE).is_file()
}

impl Store {
    /// Creates a store in `base/name`, allocating its files in full. A power
    /// cut leaves no store (the name can be created again) or a whole one
    /// (see [`Store::create_with`]).
    pub fn create(base: &Path, name: &str, config: Config) -> Result<Store> {
        let (s, ()) = Store::create_with(&super::fs::RealFs, base, name, config, |_, _| {
            Ok::<(), Error>(())
        })?;
        Ok(s)
    }

    /// Opens the store in `base/name` with the durability it was created with.
    pub fn open(base: &Path, name: &str) -> Result<Store> {
        Store::open_with(base, name, None)
    }

    /// Opens the store in `base/name`, overriding its durability policy for
    /// this session if `durability` is given.
    pub fn open_with(base: &Path, name: &str, durability: Option<Durability>) -> Result<Store> {
        validate_name(name)?;
        let dir = base.join(name);
        if !dir.join(META_FILE).is_file() {
            return Err(Error::NotFound { path: dir });
        }
        let media = open_media(&dir)?;
        Store::open_dir(dir, media, durability)
    }

    pub(super) fn open_dir(
        dir: PathBuf,
        media: Media,
        durability: Option<Durability>,
    ) -> Result<Store> {
        let lock = lock_dir(&dir)?;
        let schema = schema::load(&dir)?;
        Store::start(media, Some(dir), Some(lock), schema, durability)
    }

    /// Writes a fresh meta record for `config` to `media` (a new store).
    pub fn init_media(media: &Media, config: &Config) -> Result<()> {
        let meta = Store::first_meta(config)?;
        media
            .meta
            .write_at(Meta::slot_offset(meta.generation), &meta.encode())?;
        media.meta.sync()?;
        Ok(())
    }

    /// The meta record of a new store with `config`.
    pub(super) fn first_meta(config: &Config) -> Result<Meta> {
        config.validate()?;
        let (durability, interval) = config.durability.encode();
        Ok(Meta {
            data_type: config.data_type.code(),
            durability,
            num_blocks: config.num_blocks,
            data_block_size: config.data_block_size,
            index_block_size: config.index_block_size,
            sync_interval_ms: interval,
            generation: 1,
            base_seq: 1,
            session: 0,
            session_start: 1,
            created_ns: now_ns(),
            // Nothing written yet: the first open has nothing to repair.
            clean: true,
        })
    }

    /// Creates a store on the given media (used with simulated media).
    pub fn create_on(media: Media, config: Config) -> Result<Store> {
        if media.data.len() != config.data_file_len().unwrap_or(0)
            || media.index.len() != config.index_file_len()
        {
            return Err(Error::InvalidConfig {
                reason: "media sizes do not match the configuration".into(),
            });
        }
        Store::init_media(&media, &config)?;
        Store::start(media, None, None, None, None)
    }

    /// Opens a store on the given media (used with simulated media).
    pub fn open_on(media: Media, durability: Option<Durability>) -> Result<Store> {
        Store::start(media, None, None, None, durability)
    }

    fn start(
        media: Media,
        dir: Option<PathBuf>,
        lock: Option<nix::fcntl::Flock<fs::File>>,
        schema: Option<Schema>,
        durability: Option<Durability>,
    ) -> Result<Store> {
        let (mut cfg, state) = super::recovery::recover(&media)?;
        if let Some(d) = durability {
            cfg.durability = d;
        }
        let shared = Arc::new(Shared {
            cfg,
            media,
            dir,
            state: RwLock::new(state),
            sync: Syncer::new(),
            lsn: AtomicU64::new(0),
            schema: RwLock::new(schema),
            delete_lock: Mutex::new(()),
            on_write: std::sync::OnceLock::new(),
            clock: std::sync::OnceLock::new(),
            _lock: lock,
        });
        let flusher = super::durability::spawn_flusher(&shared)?;
        Ok(Store {
            shared,
            flusher: Mutex::new(Some(flusher)),
        })
    }

    /// The store's configuration (with the durability of this session).
    pub fn config(&self) -> Config {
        self.shared.cfg
    }

    /// The store's directory, if it lives in one.
    pub fn dir(&self) -> Option<&Path> {
        self.shared.dir.as_deref()
    }

    /// The media the store lives on.
    pub fn media(&self) -> &Media {
        &self.shared.media
    }

    /// Largest object this store accepts, in bytes.
    pub fn max_object_size(&self) -> u64 {
        self.shared.max_object_size()
    }

    /// Bytes of memory held per block by the in-memory time index.
    pub const INDEX_BYTES_PER_BLOCK: usize = BlockTable::BYTES_PER_BLOCK;

    // ------------------------------------------------------------ writes

    /// Inserts `data` at `timestamp` (Unix nanoseconds). Returns once the
    /// object is as durable as the store's policy promises.
    pub fn insert(&self, timestamp: i64, data: &[u8]) -> Result<ObjectHandle> {
        let (h, lsn) = {
            let mut st = wr(&self.shared.state);
            self.shared.check_writable(&st)?;
            self.shared.check_ts(&st, timestamp)?;
            let h = self.shared.append(&mut st, timestamp, data)?;
            (h, self.shared.lsn.fetch_add(1, Ordering::AcqRel) + 1)
        };
        let r = self.shared.after_write(lsn);
        self.shared.notify();
        r.map(|()| h)
    }

    /// Inserts `data` at the current time. If the clock is behind the
    /// newest object (a clock step back), the object gets the newest
    /// timestamp plus one nanosecond, so it is never rejected (unless the
    /// newest timestamp is `i64::MAX`: `TimestampOutOfOrder`).
    pub fn insert_now(&self, data: &[u8]) -> Result<ObjectHandle> {
        let (h, lsn) = {
            let mut st = wr(&self.shared.state);
            self.shared.check_writable(&st)?;
            let ts = self.shared.now().max(st.last_ts.saturating_add(1));
            // Past i64::MAX there is no later timestamp: saturating gave
            // the newest one again, which the record walk would hide.
            self.shared.check_ts(&st, ts)?;
            let h = self.shared.append(&mut st, ts, data)?;
            (h, self.shared.lsn.fetch_add(1, Ordering::AcqRel) + 1)
        };
        let r = self.shared.after_write(lsn);
        self.shared.notify();
        r.map(|()| h)
    }

    /// Inserts many objects under one lock and one commit. Each item gets
    /// its own result; a rejected item does not stop the others. With
    /// `None` as timestamp an item gets `max(now, newest + 1)`.
    pub fn insert_batch<'a, I>(&self, items: I) -> Vec<Result<ObjectHandle>>
    where
        I: IntoIterator<Item = (Option<i64>, &'a [u8])>,
    {
        let mut out = Vec::new();
        let lsn = {
            let mut st = wr(&self.shared.state);
            for (ts, data) in items {
                let r = self.shared.check_writable(&st).and_then(|_| {
                    let ts = match ts {
                        Some(t) => {
                            self.shared.check_ts(&st, t)?;
                            t
                        }
                        None => {
                            let t = self.shared.now().max(st.last_ts.saturating_add(1));
                            self.shared.check_ts(&st, t)?;
                            t
                        }
                    };
                    self.shared.append(&mut st, ts, data)
                });
                if r.is_ok() {
                    self.shared.lsn.fetch_add(1, Ordering::AcqRel);
                }
                out.push(r);
            }
            self.shared.lsn.load(Ordering::Acquire)
        };
        if out.iter().any(|r| r.is_ok()) {
            let synced = self.shared.after_write(lsn);
            self.shared.notify();
            if let Err(e) = synced {
                let msg = e.to_string();
                for r in out.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(Error::Poisoned {
                        reason: msg.clone(),
                    });
                }
            }
        }
        out
    }

    /// Makes everything inserted so far durable, whatever the policy.
    pub fn sync(&self) -> Result<()> {
        let lsn = self.shared.lsn.load(Ordering::Acquire);
        self.shared.commit(lsn, true)
    }

    /// Soft-deletes the object `handle` names: it vanishes from every read
    /// and stays on disk until the ring overwrites it. Durable on return.
    pub fn delete(&self, handle: &ObjectHandle) -> Result<()> {
        let _one = self
            .shared
            .delete_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (seq, off) = {
            let st = rd(&self.shared.state);
            self.shared.check_writable(&st)?;
            self.shared
                .resolve(&st, handle)?
                .ok_or(Error::ObjectNotFound)?
        };
        self.shared.delete_at(seq, off)
    }

    /// Soft-deletes the object with this timestamp.
    pub fn delete_by_time(&self, timestamp: i64) -> Result<()> {
        let _one = self
            .shared
            .delete_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (seq, off) = {
            let st = rd(&self.shared.state);
            self.shared.check_writable(&st)?;
            let found = self.shared.locate(&st, timestamp)?;
            found.ok_or(Error::TimestampNotFound { timestamp })?
        };
        self.shared.delete_at(seq, off)
    }

    /// Soft reset: every object vanishes at once (O(1), one small write),
    /// configuration, schema and keys stay. Old data stays on disk until
    /// overwritten. Durable on return.
    pub fn reset(&self) -> Result<()> {
        let _one = self
            .shared
            .delete_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut st = wr(&self.shared.state);
        self.shared.check_writable(&st)?;
        let mut meta = st.meta;
        meta.generation += 1;
        meta.base_seq = st.ring.next;
        let r = self
            .shared
            .media
            .meta
            .write_at(Meta::slot_offset(meta.generation), &meta.encode())
            .and_then(|_| self.shared.media.meta.sync());
        if let Err(e) = r {
            st.poisoned = Some(format!("reset failed: {e}"));
            return Err(e.into());
        }
        st.meta = meta;
        st.ring = Ring::new(self.shared.cfg.num_blocks, meta.base_seq);
        st.head = None;
        st.last_ts = 0;
        st.live_objects = 0;
        st.resets += 1;
        drop(st);
        self.shared.lsn.fetch_add(1, Ordering::AcqRel);
        self.shared.notify();
        Ok(())
    }

    // ------------------------------------------------------------- reads

    /// The data of the object `handle` names.
    pub fn get(&self, handle: &ObjectHandle) -> Result<Vec<u8>> {
        let st = rd(&self.shared.state);
        self.shared.check_open(&st)?;
        let (seq, off) = self
            .shared
            .resolve(&st, handle)?
            .ok_or(Error::ObjectNotFound)?;
        self.shared
            .read_object(&st, seq, off)?
            .ok_or(Error::ObjectNotFound)
    }

    /// The object with exactly this timestamp.
    pub fn get_by_time(&self, timestamp: i64) -> Result<Object> {
        let st = rd(&self.shared.state);
        self.shared.check_open(&st)?;
        // A packed object's data comes from the walk that found it: a second
        // walk (with its checksums) would double the cost of a lookup.
        let mut scratch = Vec::new();
        let obj = match self.shared.find(&st, timestamp, &mut scratch)? {
            Some((seq, off, Some(data))) => Some(Object {
                handle: ObjectHandle {
                    timestamp,
                    block_num: st.ring.pos(seq),
                    offset: off,
                    size: data.len() as u32,
                    span_count: 1,
                },
                data: data.to_vec(),
            }),
            Some((seq, off, None)) => self.shared.read_object_full(&st, seq, off)?,
            None => None,
        };
        obj.ok_or(Error::TimestampNotFound { timestamp })
    }

    /// Ring position of the block holding the object with exactly this
    /// timestamp.
    pub fn find_block_by_time_exact(&self, timestamp: i64) -> Result<u32> {
        let st = rd(&self.shared.state);
        self.shared.check_open(&st)?;
        match self.shared.locate(&st, timestamp)? {
            Some((seq, _)) => Ok(st.ring.pos(seq)),
            None => Err(Error::TimestampNotFound { timestamp }),
        }
    }

    /// Ring position of the block holding the live object whose timestamp
    /// is closest to `timestamp` (the earlier one on a tie).
    pub fn find_block_by_time(&self, timestamp: i64) -> Result<u32> {
        let before =
            self.handles(&Query::range(i64::MIN, timestamp, 1).order(Order::NewestFirst))?;
        let after = self.handles(&Query::range(timestamp, i64::MAX, 1))?;
        let best = match (before.first(), after.first()) {
            (Some(b), Some(a)) => {
                if (timestamp as i128 - b.timestamp as i128)
                    <= (a.timestamp as i128 - timestamp as i128)
                {
                    b
                } else {
                    a
                }
            }
            (Some(b), None) => b,
            (None, Some(a)) => a,
            (None, None) => return Err(Error::TimestampNotFound { timestamp }),
        };
        Ok(best.block_num)
    }

    /// Ring positions of the blocks holding live objects in `start..=end`,
    /// oldest first, each once.
    pub fn find_blocks_in_range(&self, start: i64, end: i64) -> Result<Vec<u32>> {
        let mut out: Vec<u32> = Vec::new();
        self.visit_handles(&Query::range(start, end, 0), |h| {
            if out.last() != Some(&h.block_num) {
                out.push(h.block_num);
            }
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Calls `f` with each object the query selects, in query order, with
    /// a borrowed view of its data (no copy for packed objects). Stop early
    /// by returning `ControlFlow::Break`.
    pub fn visit(
        &self,
        q: &Query,
        mut f: impl FnMut(&ObjectHandle, &[u8]) -> ControlFlow<()>,
    ) -> Result<()> {
        let st = rd(&self.shared.state);
        self.shared.check_open(&st)?;
        self.shared.scan(&st, q, true, &mut f)
    }

    /// Like [`Store::visit`] without reading the data of spanning objects
    /// (unless the query filters).
    pub fn visit_handles(
        &self,
        q: &Query,
        mut f: impl FnMut(&ObjectHandle) -> ControlFlow<()>,
    ) -> Result<()> {
        let st = rd(&self.shared.state);
        self.shared.check_open(&st)?;
        self.shared
            .scan(&st, q, q.filter.is_some(), &mut |h, _| f(h))
    }

    /// Handles of the objects the query selects.
    pub fn handles(&self, q: &Query) -> Result<Vec<ObjectHandle>> {
        let mut out = Vec::new();
        self.visit_handles(q, |h| {
            out.push(*h);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// The objects the query selects, with their data.
    pub fn objects(&self, q: &Query) -> Result<Vec<Object>> {
        // Sized for the limit (up to a bound: a limit is not a promise of
        // results), so that collecting does not reallocate and copy.
        let mut out = Vec::with_capacity(q.limit.min(1024));
        self.visit(q, |h, d| {
            out.push(Object {
                handle: *h,
                data: d.to_vec(),
            });
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// The `limit` oldest objects' handles, oldest first.
    pub fn oldest(&self, limit: usize) -> Result<Vec<ObjectHandle>> {
        self.handles(&Query::oldest(limit))
    }

    /// The `limit` newest objects' handles, newest first.
    pub fn newest(&self, limit: usize) -> Result<Vec<ObjectHandle>> {
        self.handles(&Query::newest(limit))
    }

    /// Handles of objects with `start <= timestamp <= end`, oldest first.
    pub fn range(&self, start: i64, end: i64, limit: usize) -> Result<Vec<ObjectHandle>> {
        if start > end {
            return Err(Error::InvalidRange { start, end });
        }
        self.handles(&Query::range(start, end, limit))
    }

    /// Handles of objects from the last `d`, oldest first.
    pub fn since(&self, d: std::time::Duration, limit: usize) -> Result<Vec<ObjectHandle>> {
        self.handles(&Query::since(d, limit))
    }

    /// The `limit` oldest objects with data.
    pub fn oldest_with_data(&self, limit: usize) -> Result<Vec<Object>> {
        self.objects(&Query::oldest(limit))
    }

    /// The `limit` newest objects with data, newest first.
    pub fn newest_with_data(&self, limit: usize) -> Result<Vec<Object>> {
        self.objects(&Query::newest(limit))
    }

    /// Objects with `start <= timestamp <= end` with data, oldest first.
    pub fn range_with_data(&self, start: i64, end: i64, limit: usize) -> Result<Vec<Object>> {
        if start > end {
            return Err(Error::InvalidRange { start, end });
        }
        self.objects(&Query::range(start, end, limit))
    }

    /// Objects from the last `d` with data, oldest first.
    pub fn since_with_data(&self, d: std::time::Duration, limit: usize) -> Result<Vec<Object>> {
        self.objects(&Query::since(d, limit))
    }

    /// Timestamp of the oldest live object.
    pub fn oldest_timestamp(&self) -> Result<Option<i64>> {
        Ok(self.oldest(1)?.first().map(|h| h.timestamp))
    }

    /// Timestamp of the newest live object.
    pub fn newest_timestamp(&self) -> Result<Option<i64>> {
        Ok(self.newest(1)?.first().map(|h| h.timestamp))
    }

    /// Statistics.
    pub fn stats(&self) -> Result<Stats> {
        let oldest = self.oldest_timestamp()?.unwrap_or(0);
        let newest = self.newest_timestamp()?.unwrap_or(0);
        let st = rd(&self.shared.state);
        self.shared.check_open(&st)?;
        let cfg = &self.shared.cfg;
        let r = &st.ring;
        Ok(Stats {
            num_blocks: cfg.num_blocks,
            data_block_size: cfg.data_block_size,
            index_block_size: cfg.index_block_size,
            data_type: cfg.data_type,
            durability: cfg.durability.name(),
            head_block: r.pos(r.next.saturating_sub(1).max(r.base)),
            tail_block: r.pos(r.tail),
            active_blocks: r.active() as u32,
            object_count: st.live_objects,
            bytes_used: r.active() * cfg.data_block_size as u64,
            footprint_bytes: cfg.footprint(),
            oldest_timestamp: oldest,
            newest_timestamp: newest,
        })
    }

    /// Sets the hook called after every acknowledged write: insert, batch,
    /// soft delete and reset, once the write is as durable as the policy
    /// promises and no lock is held. It must be quick and must not call
    /// back into the store's write path (a wake-up of waiting readers is
    /// what it is for). Only the first hook set is kept; returns false if
    /// one was already set.
    pub fn on_write(&self, f: impl Fn() + Send + Sync + 'static) -> bool {
        self.shared.on_write.set(Box::new(f)).is_ok()
    }

    /// Sets the clock that inserts without a timestamp read "now" from
    /// (the system clock until one is set). Tests step it to model a
    /// gateway whose clock jumps back; only the first clock set is kept;
    /// returns false if one was already set.
    pub fn set_clock(&self, clock: Clock) -> bool {
        self.shared.clock.set(clock).is_ok()
    }

    /// Where the store stands now, read under one lock (see [`Progress`]).
    pub fn progress(&self) -> Result<Progress> {
        let st = rd(&self.shared.state);
        self.shared.check_open(&st)?;
        let mut oldest = None;
        self.shared
            .scan(&st, &Query::oldest(1), false, &mut |h, _| {
                oldest = Some(h.timestamp);
                ControlFlow::Break(())
            })?;
        Ok(Progress {
            appended: st.appended,
            deleted: st.deleted,
            resets: st.resets,
            live_objects: st.live_objects,
            oldest_timestamp: oldest,
            newest_timestamp: (st.live_objects > 0).then_some(st.last_ts),
        })
    }

    /// I/O done through the store's files since it was opened.
    pub fn io_stats(&self) -> IoSnapshot {
        self.shared.media.io()
    }

    // ------------------------------------------------------------ schema

    /// The schema of a schema store, if one was set.
    pub fn schema(&self) -> Option<Schema> {
        self.shared
            .schema
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets or evolves the schema (append-only) and saves it atomically.
    /// Returns the schema now in force.
    pub fn set_schema(&self, fields: Vec<schema::Field>) -> Result<Schema> {
        if self.shared.cfg.data_type != DataType::Schema {
            return Err(Error::WrongDataType {
                expected: "schema",
                actual: self.shared.cfg.data_type.as_str(),
            });
        }
        let mut cur = self
            .shared
            .schema
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let next = match cur.as_ref() {
            Some(s) => s.evolve(fields)?,
            None => Schema::new(fields)?,
        };
        if let Some(dir) = &self.shared.dir {
            schema::save(dir, &next)?;
        }
        *cur = Some(next.clone());
        Ok(next)
    }

    // ------------------------------------------------------------- close

    /// Syncs everything and closes the store. Later calls return
    /// [`Error::Closed`]; closing twice is harmless.
    pub fn close(&self) -> Result<()> {
        let r = self.shared.close();
        self.shared.sync.shutdown();
        if let Some(h) = self
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = h.join();
        }
        r
    }

    /// Closes the store and removes its directory.
    pub fn delete_store(&self) -> Result<()> {
        let _ = self.close();
        match &self.shared.dir {
            Some(dir) => super::staged::discard(&super::fs::RealFs, dir),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

pub(crate) fn open_media(dir: &Path) -> Result<Media> {
    Ok(Media {
        data: FileMedium::open(&dir.join(DATA_FILE), true)?.shared(),
        index: FileMedium::open(&dir.join(INDEX_FILE), false)?.shared(),
        meta: FileMedium::open(&dir.join(META_FILE), false)?.shared(),
    })
}

/// Steps back from live block `seq` over holes (blocks lost to a power cut,
/// see recovery.rs): a hole carries the key of the block before it but holds
/// nothing, so the objects at or after that key are in the block before.
fn before_holes(st: &State, mut seq: u64) -> u64 {
    while seq > st.ring.tail && st.table.kind(st.ring.pos(seq)).is_none() {
        seq -= 1;
    }
    seq
}

impl Shared {
    /// "Now" for inserts without a timestamp.
    fn now(&self) -> i64 {
        match self.clock.get() {
            Some(c) => c(),
            None => now_ns(),
        }
    }

    fn block_size(&self) -> usize {
        self.cfg.data_block_size as usize
    }

    fn block_offset(&self, pos: u32) -> u64 {
        pos as u64 * self.cfg.data_block_size as u64
    }

    pub(crate) fn max_object_size(&self) -> u64 {
        let payload = (self.cfg.data_block_size as u64) - BLOCK_HEADER_LEN as u64;
        let blocks = (self.cfg.num_blocks as u64).min(MAX_SPAN_BLOCKS as u64);
        (blocks * payload - RECORD_HEADER_LEN as u64).min(MAX_OBJECT_LEN)
    }

    fn check_open(&self, st: &State) -> Result<()> {
        if st.closed {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn check_writable(&self, st: &State) -> Result<()> {
        self.check_open(st)?;
        if let Some(reason) = &st.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    fn check_ts(&self, st: &State, ts: i64) -> Result<()> {
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

    fn poison(&self, st: &mut State, what: &str, e: &std::io::Error) {
        st.poisoned
            .get_or_insert_with(|| format!("{what} failed: {e}"));
    }

    /// Appends one object (timestamp already checked). Nothing is changed
    /// when it fails.
    fn append(&self, st: &mut State, ts: i64, data: &[u8]) -> Result<ObjectHandle> {
        let b = self.block_size();
        let rec = RECORD_HEADER_LEN + data.len();
        if rec > b - BLOCK_HEADER_LEN {
            return self.append_span(st, ts, data);
        }
        let fits = matches!(&st.head, Some(h) if h.len + rec <= b);
        if !fits {
            self.seal_head(st)?;
            let seq = self.start_block(st);
            let mut buf = vec![0u8; b];
            BlockHeader {
                kind: BlockKind::Packed,
                session: st.meta.session,
                seq,
                first_ts: ts,
                span: 0,
            }
            .encode_into(&mut buf);
            st.table
                .set(st.ring.pos(seq), ts, 0, Some(BlockKind::Packed));
            st.head = Some(HeadBuf {
                seq,
                buf,
                len: BLOCK_HEADER_LEN,
                flushed: 0,
            });
        }
        let Some(h) = st.head.as_mut() else {
            return Err(Error::corrupted(None, "head block missing after start"));
        };
        let off = h.len;
        encode_record_header(&mut h.buf[off..], h.seq, ts, data);
        h.buf[off + RECORD_HEADER_LEN..off + rec].copy_from_slice(data);
        h.len += rec;
        let pos = st.ring.pos(h.seq);
        let live = st.table.live(pos) + 1;
        st.table.set_live(pos, live);
        st.live_objects += 1;
        st.appended += 1;
        st.last_ts = ts;
        Ok(ObjectHandle {
            timestamp: ts,
            block_num: pos,
            offset: off as u32,
            size: data.len() as u32,
            span_count: 1,
        })
    }

    fn append_span(&self, st: &mut State, ts: i64, data: &[u8]) -> Result<ObjectHandle> {
        let b = self.block_size();
        let payload = b - BLOCK_HEADER_LEN;
        let k = (RECORD_HEADER_LEN + data.len()).div_ceil(payload);
        if data.len() as u64 > self.max_object_size() || k as u64 > st.ring.n {
            return Err(Error::ObjectTooLarge {
                size: data.len() as u64,
                max: self.max_object_size(),
            });
        }
        self.seal_head(st)?;
        while st.ring.active() + k as u64 > st.ring.n {
            self.reclaim(st);
        }
        let first = st.ring.next;
        let mut blk = vec![0u8; b];
        let mut src = 0usize;
        for i in 0..k {
            let seq = first + i as u64;
            let (kind, span) = if i == 0 {
                (BlockKind::SpanStart, k as u32)
            } else {
                (BlockKind::SpanCont, i as u32)
            };
            BlockHeader {
                kind,
                session: st.meta.session,
                seq,
                first_ts: ts,
                span,
            }
            .encode_into(&mut blk);
            let mut at = BLOCK_HEADER_LEN;
            if i == 0 {
                encode_record_header(&mut blk[at..], first, ts, data);
                at += RECORD_HEADER_LEN;
            }
            let n = (b - at).min(data.len() - src);
            blk[at..at + n].copy_from_slice(&data[src..src + n]);
            src += n;
            let pos = st.ring.pos(seq);
            if let Err(e) = self
                .media
                .data
                .write_at(self.block_offset(pos), &blk[..at + n])
            {
                self.poison(st, "data write", &e);
                return Err(e.into());
            }
        }
        for i in 0..k as u64 {
            let seq = first + i;
            let (kind, live) = if i == 0 {
                (BlockKind::SpanStart, 1)
            } else {
                (BlockKind::SpanCont, 0)
            };
            st.table.set(st.ring.pos(seq), ts, live, Some(kind));
        }
        st.ring.next = first + k as u64;
        for i in 0..k as u64 {
            self.write_entry(st, first + i, 0)?;
        }
        st.live_objects += 1;
        st.appended += 1;
        st.last_ts = ts;
        Ok(ObjectHandle {
            timestamp: ts,
            block_num: st.ring.pos(first),
            offset: BLOCK_HEADER_LEN as u32,
            size: data.len() as u32,
            span_count: k as u32,
        })
    }

    /// Takes the next block, reclaiming the oldest one if the ring is full.
    fn start_block(&self, st: &mut State) -> u64 {
        if st.ring.is_full() {
            self.reclaim(st);
        }
        let seq = st.ring.next;
        st.ring.next += 1;
        seq
    }

    /// Drops the oldest block, and with it the rest of an object spanning
    /// from it.
    fn reclaim(&self, st: &mut State) {
        if st.ring.is_empty() {
            return;
        }
        let pos = st.ring.pos(st.ring.tail);
        st.live_objects -= st.table.live(pos) as u64;
        st.ring.tail += 1;
        while !st.ring.is_empty()
            && st.table.kind(st.ring.pos(st.ring.tail)) == Some(BlockKind::SpanCont)
        {
            st.ring.tail += 1;
        }
    }

    /// Writes the unwritten bytes of the head block to the data file.
    pub(crate) fn flush_head(&self, st: &mut State) -> Result<()> {
        let Some(h) = st.head.as_ref() else {
            return Ok(());
        };
        if h.flushed == h.len {
            return Ok(());
        }
        let off = self.block_offset(st.ring.pos(h.seq)) + h.flushed as u64;
        if let Err(e) = self.media.data.write_at(off, &h.buf[h.flushed..h.len]) {
            self.poison(st, "data write", &e);
            return Err(e.into());
        }
        if let Some(h) = st.head.as_mut() {
            h.flushed = h.len;
        }
        Ok(())
    }

    /// Writes the head block out and its index entry; the next object
    /// starts a new block.
    fn seal_head(&self, st: &mut State) -> Result<()> {
        let Some(seq) = st.head.as_ref().map(|h| h.seq) else {
            return Ok(());
        };
        self.flush_head(st)?;
        self.write_entry(st, seq, 0)?;
        st.head = None;
        Ok(())
    }

    /// Writes the index entry of live block `seq` from the in-memory table.
    pub(crate) fn write_entry(&self, st: &mut State, seq: u64, pending_delete: u32) -> Result<()> {
        let pos = st.ring.pos(seq);
        let Some(kind) = st.table.kind(pos) else {
            return Ok(());
        };
        let e = IndexEntry {
            seq,
            first_ts: st.table.key(pos),
            synced_seq: st.synced_seq,
            live: st.table.live(pos),
            kind,
            pending_delete,
        };
        if let Err(err) = self
            .media
            .index
            .write_at(self.cfg.index_entry_offset(pos), &e.encode())
        {
            self.poison(st, "index write", &err);
            return Err(err.into());
        }
        Ok(())
    }

    /// The bytes of live block `seq` if its header validates: the head
    /// buffer, the memory map, or a read into `scratch`.
    fn block<'a>(
        &'a self,
        st: &'a State,
        seq: u64,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Option<(BlockHeader, &'a [u8])>> {
        if let Some(h) = st.head.as_ref().filter(|h| h.seq == seq) {
            let hdr = BlockHeader::decode(&h.buf);
            return Ok(hdr.map(|hd| (hd, &h.buf[..h.len])));
        }
        let b = self.block_size();
        let off = self.block_offset(st.ring.pos(seq));
        let bytes: &[u8] = match self.media.data.mapped() {
            Some(m) => &m[off as usize..off as usize + b],
            None => {
                scratch.resize(b, 0);
                self.media.data.read_at(off, scratch)?;
                scratch
            }
        };
        match BlockHeader::decode(bytes) {
            Some(h) if h.seq == seq => Ok(Some((h, bytes))),
            _ => Ok(None),
        }
    }

    /// Reads and validates the whole object of the span starting at `seq`.
    /// `None` if any part fails validation or it is deleted.
    fn read_span(&self, st: &State, seq: u64) -> Result<Option<(RecordHeader, Vec<u8>)>> {
        let mut scratch = Vec::new();
        let Some((hdr, bytes)) = self.block(st, seq, &mut scratch)? else {
            return Ok(None);
        };
        if hdr.kind != BlockKind::SpanStart {
            return Ok(None);
        }
        let rh = RecordHeader::decode(&bytes[BLOCK_HEADER_LEN..]);
        if rh.deleted {
            return Ok(None);
        }
        let len = rh.len as usize;
        let payload = self.block_size() - BLOCK_HEADER_LEN;
        let k = (RECORD_HEADER_LEN + len).div_ceil(payload);
        if k as u32 != hdr.span
            || !st.ring.is_live(seq + k as u64 - 1)
            || len as u64 > MAX_OBJECT_LEN
        {
            return Ok(None);
        }
        let mut data = Vec::with_capacity(len);
        let first = (self.block_size() - BLOCK_HEADER_LEN - RECORD_HEADER_LEN).min(len);
        let at = BLOCK_HEADER_LEN + RECORD_HEADER_LEN;
        data.extend_from_slice(&bytes[at..at + first]);
        for i in 1..k as u64 {
            let Some((ch, cb)) = self.block(st, seq + i, &mut scratch)? else {
                return Ok(None);
            };
            if ch.kind != BlockKind::SpanCont || ch.span as u64 != i || ch.first_ts != rh.ts {
                return Ok(None);
            }
            let n = payload.min(len - data.len());
            data.extend_from_slice(&cb[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + n]);
        }
        if record_crc(seq, rh.ts, rh.len, &data) != rh.crc {
            return Ok(None);
        }
        Ok(Some((rh, data)))
    }

    /// Finds the live object with timestamp `ts`: its block and offset.
    pub(crate) fn locate(&self, st: &State, ts: i64) -> Result<Option<(u64, u32)>> {
        let mut scratch = Vec::new();
        Ok(self
            .find(st, ts, &mut scratch)?
            .map(|(seq, off, _)| (seq, off)))
    }

    /// Finds the live object with timestamp `ts`: its block and offset and,
    /// for a packed object, its data (read in the same walk).
    fn find<'a>(
        &'a self,
        st: &'a State,
        ts: i64,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Option<Found<'a>>> {
        if ts <= 0 || st.ring.is_empty() {
            return Ok(None);
        }
        let r = &st.ring;
        let i = st.table.first_key_at_or_after(r, ts);
        let cand = if i < r.next && st.table.key(r.pos(i)) == ts {
            i
        } else if i > r.tail {
            before_holes(st, i - 1)
        } else {
            return Ok(None);
        };
        match st.table.kind(r.pos(cand)) {
            Some(BlockKind::Packed) => {
                let Some((_, bytes)) = self.block(st, cand, scratch)? else {
                    return Ok(None);
                };
                for rec in Records::new(bytes, cand) {
                    if rec.ts == ts {
                        return Ok((!rec.deleted).then_some((cand, rec.off, Some(rec.data))));
                    }
                    if rec.ts > ts {
                        break;
                    }
                }
                Ok(None)
            }
            Some(BlockKind::SpanStart) => {
                let Some((h, bytes)) = self.block(st, cand, scratch)? else {
                    return Ok(None);
                };
                let rh = RecordHeader::decode(&bytes[BLOCK_HEADER_LEN..]);
                Ok((h.first_ts == ts && rh.ts == ts && !rh.deleted).then_some((
                    cand,
                    BLOCK_HEADER_LEN as u32,
                    None,
                )))
            }
            _ => Ok(None),
        }
    }

    /// Checks that a handle names a live object; returns its block and offset.
    fn resolve(&self, st: &State, h: &ObjectHandle) -> Result<Option<(u64, u32)>> {
        let Some(seq) = st.ring.seq_at(h.block_num) else {
            return Ok(None);
        };
        let found = self.locate(st, h.timestamp)?;
        Ok(found.filter(|&(s, off)| s == seq && off == h.offset))
    }

    /// Data of the live object at `seq`/`off`.
    fn read_object(&self, st: &State, seq: u64, off: u32) -> Result<Option<Vec<u8>>> {
        Ok(self.read_object_full(st, seq, off)?.map(|o| o.data))
    }

    fn read_object_full(&self, st: &State, seq: u64, off: u32) -> Result<Option<Object>> {
        let pos = st.ring.pos(seq);
        match st.table.kind(pos) {
            Some(BlockKind::SpanStart) => Ok(self.read_span(st, seq)?.map(|(rh, data)| Object {
                handle: ObjectHandle {
                    timestamp: rh.ts,
                    block_num: pos,
                    offset: off,
                    size: rh.len,
                    span_count: (RECORD_HEADER_LEN + data.len())
                        .div_ceil(self.block_size() - BLOCK_HEADER_LEN)
                        as u32,
                },
                data,
            })),
            Some(BlockKind::Packed) => {
                let mut scratch = Vec::new();
                let Some((_, bytes)) = self.block(st, seq, &mut scratch)? else {
                    return Ok(None);
                };
                Ok(Records::new(bytes, seq)
                    .find(|r| r.off == off)
                    .filter(|r| !r.deleted)
                    .map(|r| Object {
                        handle: ObjectHandle {
                            timestamp: r.ts,
                            block_num: pos,
                            offset: off,
                            size: r.data.len() as u32,
                            span_count: 1,
                        },
                        data: r.data.to_vec(),
                    }))
            }
            _ => Ok(None),
        }
    }

    /// The query engine: walks blocks from the right end of the range and
    /// calls `f` for each live, matching object until `limit` or the end.
    fn scan(
        &self,
        st: &State,
        q: &Query,
        need_data: bool,
        f: &mut dyn FnMut(&ObjectHandle, &[u8]) -> ControlFlow<()>,
    ) -> Result<()> {
        if q.start > q.end || st.ring.is_empty() || q.end <= 0 {
            return Ok(());
        }
        let mut left = if q.limit == 0 { usize::MAX } else { q.limit };
        let r = st.ring;
        let payload = self.block_size() - BLOCK_HEADER_LEN;
        let mut scratch = Vec::new();
        let mut recs: Vec<(u32, i64, u32, u32)> = Vec::new();
        // Emits one object; returns false to stop the scan.
        let mut emit = |h: ObjectHandle, data: &[u8], filter: &Option<Filter>| -> bool {
            if let Some(fl) = filter {
                if !fl.matches(data) {
                    return true;
                }
            }
            left -= 1;
            f(&h, data).is_continue() && left > 0
        };
        let span_obj = |seq: u64, pos: u32| -> Result<Option<(ObjectHandle, Vec<u8>)>> {
            if need_data {
                return Ok(self.read_span(st, seq)?.map(|(rh, data)| {
                    let k = (RECORD_HEADER_LEN + data.len()).div_ceil(payload) as u32;
                    let h = ObjectHandle {
                        timestamp: rh.ts,
                        block_num: pos,
                        offset: BLOCK_HEADER_LEN as u32,
                        size: rh.len,
                        span_count: k,
                    };
                    (h, data)
                }));
            }
            let mut sc = Vec::new();
            let Some((bh, bytes)) = self.block(st, seq, &mut sc)? else {
                return Ok(None);
            };
            let rh = RecordHeader::decode(&bytes[BLOCK_HEADER_LEN..]);
            if rh.deleted || rh.ts != bh.first_ts {
                return Ok(None);
            }
            let h = ObjectHandle {
                timestamp: rh.ts,
                block_num: pos,
                offset: BLOCK_HEADER_LEN as u32,
                size: rh.len,
                span_count: bh.span,
            };
            Ok(Some((h, Vec::new())))
        };
        match q.order {
            Order::OldestFirst => {
                let mut seq = if q.start == i64::MIN {
                    r.tail
                } else {
                    let i = st.table.first_key_at_or_after(&r, q.start);
                    if i > r.tail {
                        before_holes(st, i - 1)
                    } else {
                        i
                    }
                };
                while seq < r.next {
                    let pos = r.pos(seq);
                    if st.table.key(pos) > q.end {
                        break;
                    }
                    match st.table.kind(pos) {
                        Some(BlockKind::Packed) if st.table.live(pos) > 0 => {
                            if let Some((_, bytes)) = self.block(st, seq, &mut scratch)? {
                                for rec in Records::new(bytes, seq) {
                                    if rec.ts > q.end {
                                        return Ok(());
                                    }
                                    if rec.ts < q.start || rec.deleted {
                                        continue;
                                    }
                                    let h = ObjectHandle {
                                        timestamp: rec.ts,
                                        block_num: pos,
                                        offset: rec.off,
                                        size: rec.data.len() as u32,
                                        span_count: 1,
                                    };
                                    if !emit(h, rec.data, &q.filter) {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                        Some(BlockKind::SpanStart) if st.table.live(pos) > 0 => {
                            let ts = st.table.key(pos);
                            if ts >= q.start && ts <= q.end {
                                if let Some((h, data)) = span_obj(seq, pos)? {
                                    if !emit(h, &data, &q.filter) {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                    seq += 1;
                }
            }
            Order::NewestFirst => {
                let mut seq = if q.end == i64::MAX {
                    r.next
                } else {
                    st.table.first_key_after(&r, q.end)
                };
                while seq > r.tail {
                    seq -= 1;
                    let pos = r.pos(seq);
                    match st.table.kind(pos) {
                        Some(BlockKind::Packed) if st.table.live(pos) > 0 => {
                            if let Some((_, bytes)) = self.block(st, seq, &mut scratch)? {
                                recs.clear();
                                recs.extend(Records::new(bytes, seq).filter(|r| !r.deleted).map(
                                    |r| {
                                        let start = r.off + RECORD_HEADER_LEN as u32;
                                        (r.off, r.ts, start, r.data.len() as u32)
                                    },
                                ));
                                for &(off, ts, start, len) in recs.iter().rev() {
                                    if ts > q.end {
                                        continue;
                                    }
                                    if ts < q.start {
                                        return Ok(());
                                    }
                                    let h = ObjectHandle {
                                        timestamp: ts,
                                        block_num: pos,
                                        offset: off,
                                        size: len,
                                        span_count: 1,
                                    };
                                    let data = &bytes[start as usize..(start + len) as usize];
                                    if !emit(h, data, &q.filter) {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                        Some(BlockKind::SpanStart) if st.table.live(pos) > 0 => {
                            let ts = st.table.key(pos);
                            if ts < q.start {
                                return Ok(());
                            }
                            if ts <= q.end {
                                if let Some((h, data)) = span_obj(seq, pos)? {
                                    if !emit(h, &data, &q.filter) {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                    // A hole's key is its predecessor's: that block may
                    // still hold objects in the range.
                    if st.table.kind(pos).is_some() && st.table.key(pos) < q.start {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Soft-deletes the record at `seq`/`off`: see FORMAT.md "Soft delete"
    /// for the write order that makes it safe against a power cut.
    fn delete_at(&self, seq: u64, off: u32) -> Result<()> {
        let flag_off = |st: &State| {
            self.block_offset(st.ring.pos(seq)) + off as u64 + REC_DELETED_BYTE_OFF as u64
        };
        let in_head = {
            let mut st = wr(&self.state);
            self.check_writable(&st)?;
            if !st.ring.is_live(seq) {
                return Err(Error::ObjectNotFound);
            }
            let pos = st.ring.pos(seq);
            let head_match = st.head.as_ref().map(|h| h.seq) == Some(seq);
            if head_match {
                // The head block is rescanned at open: the flag is enough.
                let flushed = {
                    let Some(h) = st.head.as_mut() else {
                        return Err(Error::ObjectNotFound);
                    };
                    h.buf[off as usize + REC_DELETED_BYTE_OFF] |= REC_DELETED_BIT;
                    h.flushed
                };
                if (off as usize) < flushed {
                    let byte = st
                        .head
                        .as_ref()
                        .map(|h| h.buf[off as usize + REC_DELETED_BYTE_OFF]);
                    if let Some(byte) = byte {
                        if let Err(e) = self.media.data.write_at(flag_off(&st), &[byte]) {
                            self.poison(&mut st, "data write", &e);
                            return Err(e.into());
                        }
                    }
                }
                let live = st.table.live(pos).saturating_sub(1);
                st.table.set_live(pos, live);
                st.live_objects -= 1;
                st.deleted += 1;
            } else {
                // Phase 1: record the delete in the block's index entry.
                let live = st.table.live(pos).saturating_sub(1);
                st.table.set_live(pos, live);
                let r = self.write_entry(&mut st, seq, off);
                st.table.set_live(pos, live + 1);
                r?;
            }
            head_match
        };
        if !in_head {
            if let Err(e) = self.media.index.sync() {
                let mut st = wr(&self.state);
                self.poison(&mut st, "index sync", &e);
                return Err(e.into());
            }
            // Phase 2: set the flag in the record itself.
            let mut st = wr(&self.state);
            if !st.ring.is_live(seq) {
                // Reclaimed in between: the object is gone anyway.
                return Ok(());
            }
            let pos = st.ring.pos(seq);
            let mut scratch = Vec::new();
            let byte = match self.block(&st, seq, &mut scratch)? {
                Some((_, bytes)) => bytes[off as usize + REC_DELETED_BYTE_OFF] | REC_DELETED_BIT,
                None => return Err(Error::ObjectNotFound),
            };
            if let Err(e) = self.media.data.write_at(flag_off(&st), &[byte]) {
                self.poison(&mut st, "data write", &e);
                return Err(e.into());
            }
            let live = st.table.live(pos).saturating_sub(1);
            st.table.set_live(pos, live);
            st.live_objects -= 1;
            st.deleted += 1;
        }
        let lsn = self.lsn.fetch_add(1, Ordering::AcqRel) + 1;
        let r = self.commit(lsn, false);
        self.notify();
        r
    }

    /// Runs the write hook, if one is set.
    pub(crate) fn notify(&self) {
        if let Some(f) = self.on_write.get() {
            f();
        }
    }

    /// Marks the store closed (no write gets in after this), syncs it and
    /// writes the clean-close mark.
    fn close(&self) -> Result<()> {
        let poisoned = {
            let mut st = wr(&self.state);
            if st.closed {
                return Ok(());
            }
            st.closed = true;
            st.poisoned.is_some()
        };
        let r = if !poisoned {
            let lsn = self.lsn.load(Ordering::Acquire);
            self.commit(lsn, true).and_then(|_| {
                // Record that everything through the head is durable, so the
                // next open reads the index instead of rescanning.
                let mut st = wr(&self.state);
                if let Some(head) = st.ring.head() {
                    st.synced_seq = head;
                    self.write_entry(&mut st, head, 0)?;
                    self.media.index.sync()?;
                }
                // Then the clean-close mark (FORMAT.md, "meta.tsdb").
                let mut meta = st.meta;
                meta.generation += 1;
                meta.clean = true;
                self.media
                    .meta
                    .write_at(Meta::slot_offset(meta.generation), &meta.encode())?;
                self.media.meta.sync()?;
                st.meta = meta;
                Ok(())
            })
        } else {
            Ok(())
        };
        r
    }
}
