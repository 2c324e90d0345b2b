//! The store's public API: [`Store`] (insert, read, query, delete, reset,
//! stats, schema, close) and what it reports ([`Stats`], [`Progress`]). Each
//! method takes the lock of the state it shares with the modules doing the
//! work (`shared`) and hands the work to them: `write` (appends, deletes,
//! reset), `frontier` (the page being written and its mirror in the commit
//! area), `commit` (group commit, leases, the flusher) and `read` (block
//! access and the query engine).
//!
//! Creating and deleting a store (`staged`), and opening, closing and
//! upgrading one (`lifecycle`, `recovery`), add their methods to [`Store`]
//! from their own files; this one imports none of them, so no module of the
//! engine imports one that imports it back.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::config::{Config, DataType};
use super::error::{Error, Result};
use super::index::BlockTable;
use super::medium::IoSnapshot;
use super::object::{Object, ObjectHandle, Order, Query};
use super::schema::{self, Schema};
use super::shared::{rd, wr, Clock, Media, Shared, State};
use super::write::Appended;

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
    pub(crate) flusher: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
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

    /// Lets go of the pages of the store's files this process has mapped
    /// ([`crate::store::Medium::release_mapped`]): a long sequential
    /// reader calls it between batches so that the process's RSS does not
    /// grow with the bytes read (the page cache keeps them; other readers
    /// take minor faults).
    pub fn release_mapped(&self) {
        self.shared.media.data.release_mapped();
        self.shared.media.index.release_mapped();
    }

    /// Largest object this store accepts, in bytes.
    pub fn max_object_size(&self) -> u64 {
        self.shared.max_object_size()
    }

    /// Bytes of memory held per block by the in-memory time index.
    pub const INDEX_BYTES_PER_BLOCK: usize = BlockTable::BYTES_PER_BLOCK;

    // ------------------------------------------------------------ writes

    /// Appends one object under the write lock, waiting for a lease (with
    /// the lock released) as often as the append needs one. `ts` picks the
    /// timestamp under the lock. Returns the handle and the write's lsn.
    fn append_one(
        &self,
        ts: &dyn Fn(&Shared, &State) -> Result<i64>,
        data: &[u8],
    ) -> Result<(ObjectHandle, u64)> {
        loop {
            let mut st = wr(&self.shared.state);
            self.shared.check_writable(&st)?;
            let t = ts(&self.shared, &st)?;
            match self.shared.append(&mut st, t, data)? {
                Appended::Done(h) => {
                    return Ok((h, self.shared.lsn.fetch_add(1, Ordering::AcqRel) + 1));
                }
                Appended::NeedLease(seq) => {
                    drop(st);
                    self.shared.extend_lease(seq)?;
                }
            }
        }
    }

    /// Inserts `data` at `timestamp` (Unix nanoseconds). Returns once the
    /// object is as durable as the store's policy promises (and, under
    /// every policy, in the page cache: it survives a crash of the program).
    pub fn insert(&self, timestamp: i64, data: &[u8]) -> Result<ObjectHandle> {
        let (h, lsn) = self.append_one(
            &|sh, st| {
                sh.check_ts(st, timestamp)?;
                Ok(timestamp)
            },
            data,
        )?;
        let r = self.shared.after_write(lsn);
        self.shared.notify();
        if r.is_ok() {
            self.shared.inserted(h.timestamp, data);
        }
        r.map(|()| h)
    }

    /// Inserts `data` at the current time. If the clock is behind the
    /// newest object (a clock step back), the object gets the newest
    /// timestamp plus one nanosecond, so it is never rejected (unless the
    /// newest timestamp is `i64::MAX`: `TimestampOutOfOrder`).
    pub fn insert_now(&self, data: &[u8]) -> Result<ObjectHandle> {
        let (h, lsn) = self.append_one(&|sh, st| sh.now_after(st), data)?;
        let r = self.shared.after_write(lsn);
        self.shared.notify();
        if r.is_ok() {
            self.shared.inserted(h.timestamp, data);
        }
        r.map(|()| h)
    }

    /// Inserts many objects under one lock and one commit. Each item gets
    /// its own result; a rejected item does not stop the others. With
    /// `None` as timestamp an item gets `max(now, newest + 1)`.
    pub fn insert_batch<'a, I>(&self, items: I) -> Vec<Result<ObjectHandle>>
    where
        I: IntoIterator<Item = (Option<i64>, &'a [u8])>,
    {
        let sh = &self.shared;
        let hooked = sh.on_insert.get().is_some();
        let mut stored: Vec<(i64, &'a [u8])> = Vec::new();
        let mut out = Vec::new();
        let mut st = wr(&sh.state);
        for (ts, data) in items {
            let r = loop {
                let t = sh.check_writable(&st).and_then(|_| match ts {
                    Some(t) => sh.check_ts(&st, t).map(|_| t),
                    None => sh.now_after(&st),
                });
                let appended = t.and_then(|t| sh.append(&mut st, t, data));
                match appended {
                    Ok(Appended::Done(h)) => {
                        sh.lsn.fetch_add(1, Ordering::AcqRel);
                        if hooked {
                            stored.push((h.timestamp, data));
                        }
                        break Ok(h);
                    }
                    Ok(Appended::NeedLease(seq)) => {
                        // Waiting for a commit needs the lock released.
                        drop(st);
                        let r = sh.extend_lease(seq);
                        st = wr(&sh.state);
                        if let Err(e) = r {
                            break Err(e);
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            out.push(r);
        }
        drop(st);
        if out.iter().any(|r| r.is_ok()) {
            let lsn = sh.lsn.load(Ordering::Acquire);
            let synced = sh.after_write(lsn);
            sh.notify();
            if let Err(e) = synced {
                let msg = e.to_string();
                for r in out.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(Error::Poisoned {
                        reason: msg.clone(),
                    });
                }
            } else {
                for (t, d) in stored {
                    sh.inserted(t, d);
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
        self.shared.reset()?;
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

    /// Sets the hook called with each inserted object (its timestamp and
    /// stored bytes) once its insert is acknowledged, with no lock held:
    /// the one place every ingest path goes through after a successful
    /// insert. Same rules as [`Store::on_write`]; only the first hook set
    /// is kept.
    pub fn on_insert(&self, f: impl Fn(i64, &[u8]) + Send + Sync + 'static) -> bool {
        self.shared.on_insert.set(Box::new(f)).is_ok()
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
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
