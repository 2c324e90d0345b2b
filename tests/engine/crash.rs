//! Crash consistency of the engine on the simulated medium.
//!
//! The random tests run a seeded workload (packed, block-filling and spanning
//! inserts, soft deletes by handle and by time, explicit syncs, an occasional
//! reset) against a store whose three media are [`SimMedium`]s behind
//! [`Tap`]s sharing one [`Clock`]. The clock counts every write and sync and
//! cuts the power at a chosen one, so a cut lands anywhere: inside an insert,
//! between the two phases of a soft delete, inside a reset, inside the
//! recovery of the previous cut, or between two calls. A cut takes each
//! medium's `crash_image` (its durable image plus any subset of the writes
//! since its last sync, the last one torn) and fails every later write and
//! sync. The store is reopened from those images and compared with a
//! [`Model`]; each case cuts the power several times on top of one another,
//! then reopens, inserts, closes and reopens cleanly.
//!
//! After every reopen (FORMAT.md, "What survives a power cut"):
//! - every object acknowledged as durable is there, byte-exact by timestamp:
//!   its insert returned under `always`, or it was acknowledged before a
//!   `sync()` that returned, or it was visible at the previous reopen; unless
//!   the ring could have reclaimed it (it is older than the oldest object the
//!   live store held at the cut), or a delete or reset in flight at the cut
//!   may have removed it;
//! - nothing is there that was not inserted with that timestamp and those
//!   bytes, or that a delete or reset that returned removed;
//! - timestamps strictly increase, lookups by time and newest-first scans
//!   agree with the oldest-first scan, and `stats()` agrees with it.
//!
//! An object a reopen did not show may show again after a later cut if it
//! was not deleted: a block torn at one open can be made whole again by a
//! later torn write that puts back its header byte for byte (writes may tear
//! anywhere, FORMAT.md "Assumptions about the medium").
//!
//! A failure prints the case's seed: `TSSTORE_CRASH_SEED=<seed>` replays that
//! one case (`TSSTORE_CRASH_TRACE=1` prints its operations, cuts and images),
//! `TSSTORE_CRASH_CASES=<n>` sets the number of cases per policy.
//!
//! The scenario tests build specific images by hand from `live_image()` and
//! `durable_image()`: a torn packed block, lost index entries, lost data
//! blocks, a torn spanning object, a crash after and during a reset, a crash
//! between the phases of a soft delete, a zeroed index, injected I/O
//! failures, and regressions for the recovery bugs the random tests found.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tsstore::store::format::{
    BlockHeader, IndexEntry, Meta, BLOCK_HEADER_LEN, INDEX_ENTRY_LEN, META_FILE_LEN,
    META_SLOT_STRIDE, RECORD_HEADER_LEN,
};
use tsstore::store::medium::IoStats;
use tsstore::store::sim::{Rng, SimMedium};
use tsstore::store::{
    Config, DataType, Durability, Error, Media, Medium, Object, ObjectHandle, Query, Store,
};

/// Cases per durability policy; each cuts the power 2 to 4 times, so each
/// random test makes about 1,200 cuts.
const DEFAULT_CASES: u64 = 400;
/// Cuts each random test must make with the default number of cases.
const MIN_CUTS_PER_POLICY: u64 = 1000;
/// Timestamps start here (Unix nanoseconds, November 2023).
const T0: i64 = 1_700_000_000_000_000_000;
/// An interval that never elapses during a test: syncs happen only when the
/// workload asks for them, so a case replays exactly.
const NO_TIMER: Durability = Durability::Interval(Duration::from_secs(3600));

/// With `TSSTORE_CRASH_TRACE` set, a replayed case prints what it does.
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TSSTORE_CRASH_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// The images of data, index and meta, in that order.
pub(crate) type Images = [Vec<u8>; 3];

pub(crate) fn zeroed_images(cfg: &Config) -> Images {
    [
        vec![0; cfg.data_file_len().unwrap() as usize],
        vec![0; cfg.index_file_len() as usize],
        vec![0; META_FILE_LEN as usize],
    ]
}

/// With tracing on, prints what recovery will start from: the meta slot in
/// force, `D`, and each position's index entry and block header.
pub(crate) fn trace_images(cfg: &Config, images: &Images) {
    if !tracing() {
        return;
    }
    let [data, index, meta] = images;
    let slots: Vec<_> = (0..2)
        .filter_map(|i| Meta::decode(&meta[i * META_SLOT_STRIDE..]).ok())
        .collect();
    if let Some(m) = slots.iter().max_by_key(|m| m.generation) {
        trace!(
            "  images: meta generation {} base {} session {} session_start {}",
            m.generation,
            m.base_seq,
            m.session,
            m.session_start
        );
    }
    let per = (cfg.index_block_size as usize / INDEX_ENTRY_LEN).max(1);
    let mut d = 0;
    for pos in 0..cfg.num_blocks as usize {
        let o = (pos / per) * cfg.index_block_size as usize + (pos % per) * INDEX_ENTRY_LEN;
        let e = IndexEntry::decode(&index[o..o + INDEX_ENTRY_LEN]);
        let b = pos * cfg.data_block_size as usize;
        let h = BlockHeader::decode(&data[b..b + BLOCK_HEADER_LEN]);
        let blank = data[b..b + BLOCK_HEADER_LEN].iter().all(|&x| x == 0);
        d = d.max(e.map_or(0, |e| e.synced_seq));
        trace!(
            "    pos {pos}: entry {:?} | block {}",
            e.map(|e| (e.seq, e.synced_seq, e.kind, e.live, e.extra)),
            match h {
                Some(h) => format!("seq {} {:?} session {}", h.seq, h.kind, h.session),
                None if blank => "blank".into(),
                None => "torn".into(),
            }
        );
    }
    trace!("  images: D = {d}");
}

// ------------------------------------------------------------ power cuts

/// Counts the writes and syncs made to one store's three media and cuts the
/// power at a chosen one. All I/O goes through its lock, so the three crash
/// images are taken at one instant even if the flusher thread does I/O.
struct Clock {
    sims: [SimMedium; 3],
    st: Mutex<ClockState>,
}

struct ClockState {
    /// Writes and syncs completed so far.
    ios: u64,
    /// The write or sync during which the power goes.
    cut_at: Option<u64>,
    /// What the cut left, once it happened.
    images: Option<Images>,
    rng: Rng,
}

impl Clock {
    fn new(images: Images, seed: u64) -> Arc<Clock> {
        let [data, index, meta] = images;
        Arc::new(Clock {
            sims: [
                SimMedium::from_image(data),
                SimMedium::from_image(index),
                SimMedium::from_image(meta),
            ],
            st: Mutex::new(ClockState {
                ios: 0,
                cut_at: None,
                images: None,
                rng: Rng::new(seed),
            }),
        })
    }

    fn media(self: &Arc<Clock>) -> Media {
        let tap = |i: usize| -> Arc<dyn Medium> {
            Arc::new(Tap {
                sim: self.sims[i].clone(),
                clock: Arc::clone(self),
            })
        };
        Media {
            data: tap(0),
            index: tap(1),
            meta: tap(2),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClockState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power during the `after`-th write or sync from now (0: the
    /// next one).
    fn arm(&self, after: u64) {
        let mut st = self.lock();
        st.cut_at = Some(st.ios + after);
    }

    fn is_cut(&self) -> bool {
        self.lock().images.is_some()
    }

    /// Cuts the power now unless it already went; returns what it left.
    fn cut(&self) -> Images {
        let mut st = self.lock();
        if st.images.is_none() {
            let images = self.crash_images(&mut st.rng);
            st.images = Some(images);
        }
        st.images.clone().unwrap()
    }

    fn crash_images(&self, rng: &mut Rng) -> Images {
        [
            self.sims[0].crash_image(rng),
            self.sims[1].crash_image(rng),
            self.sims[2].crash_image(rng),
        ]
    }

    /// The durable images (after a clean close they equal the live ones).
    fn durable_images(&self) -> Images {
        [
            self.sims[0].durable_image(),
            self.sims[1].durable_image(),
            self.sims[2].durable_image(),
        ]
    }
}

fn power_off() -> io::Error {
    io::Error::other("power cut")
}

/// One medium of a store under a [`Clock`].
struct Tap {
    sim: SimMedium,
    clock: Arc<Clock>,
}

impl Medium for Tap {
    fn len(&self) -> u64 {
        self.sim.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.sim.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut st = self.clock.lock();
        if st.images.is_some() {
            return Err(power_off());
        }
        if st.cut_at == Some(st.ios) {
            // In flight when the power goes: the crash image may hold any
            // prefix of it.
            self.sim.write_at(offset, buf)?;
            let images = self.clock.crash_images(&mut st.rng);
            st.images = Some(images);
            return Err(power_off());
        }
        st.ios += 1;
        self.sim.write_at(offset, buf)
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.clock.lock();
        if st.images.is_some() {
            return Err(power_off());
        }
        if st.cut_at == Some(st.ios) {
            let images = self.clock.crash_images(&mut st.rng);
            st.images = Some(images);
            return Err(power_off());
        }
        st.ios += 1;
        self.sim.sync()
    }

    fn stats(&self) -> &IoStats {
        self.sim.stats()
    }
}

// ----------------------------------------------------------------- model

/// What the store must and must not hold after the next reopen.
#[derive(Default)]
struct Model {
    /// Every payload ever passed to an insert, by timestamp. Timestamps are
    /// never reused, so an object read back must equal its entry here.
    written: BTreeMap<i64, Vec<u8>>,
    /// Must be there after the next reopen, unless the ring reclaims them.
    durable: BTreeSet<i64>,
    /// Acknowledged, not yet durable (`interval` and `never`).
    pending: BTreeSet<i64>,
    /// Removed by a delete or reset that returned: must never be visible
    /// again.
    gone: BTreeSet<i64>,
    /// Greater than every timestamp ever used.
    next_ts: i64,
}

impl Model {
    fn new(start: i64) -> Model {
        Model {
            next_ts: start,
            ..Model::default()
        }
    }

    /// A new timestamp, recorded with the payload about to be inserted.
    fn stage(&mut self, data: &[u8], rng: &mut Rng) -> i64 {
        let ts = self.next_ts;
        self.next_ts += 1 + rng.below(1000) as i64;
        self.written.insert(ts, data.to_vec());
        ts
    }

    /// A delete or reset in flight at the cut may or may not take effect.
    fn maybe_removed(&mut self, ts: i64) {
        self.durable.remove(&ts);
        self.pending.remove(&ts);
    }

    fn removed(&mut self, ts: i64) {
        self.maybe_removed(ts);
        self.gone.insert(ts);
    }

    /// The power went. Pending objects are no longer owed, nor are objects
    /// older than `floor`, the oldest object the live store held at the
    /// cut: older ones the ring may have reclaimed.
    fn power_cut(&mut self, floor: Option<i64>) {
        self.pending.clear();
        match floor {
            Some(f) => self.durable.retain(|&t| t >= f),
            None => self.durable.clear(),
        }
    }

    /// Checks a freshly reopened store against the model. What it holds now
    /// is durable (recovery synced it). What it does not hold may come back
    /// later if it was not deleted: a block that was torn at this open can
    /// be made whole again by a later torn write that puts back its header
    /// byte for byte.
    fn after_reopen(&mut self, store: &Store) -> Result<(), String> {
        if tracing() {
            let all = store
                .handles(&Query::oldest(0))
                .map_err(|e| e.to_string())?;
            trace!("  reopened: {:?}", store.stats());
            for h in all {
                trace!("    {h:?}");
            }
        }
        let all = check_store(store, &self.written, &self.gone)?;
        let seen: BTreeSet<i64> = all.iter().map(|o| o.handle.timestamp).collect();
        let lost: Vec<i64> = self.durable.difference(&seen).copied().collect();
        if let Some(t) = lost.first() {
            return Err(format!(
                "acknowledged object {t} is lost ({} of {} durable objects missing: {:?}; the store holds {:?})",
                lost.len(),
                self.durable.len(),
                short(&lost),
                short(&seen.iter().copied().collect::<Vec<_>>()),
            ));
        }
        self.durable = seen;
        self.pending.clear();
        Ok(())
    }
}

fn short(v: &[i64]) -> String {
    if v.len() <= 12 {
        format!("{v:?}")
    } else {
        format!(
            "{:?} .. {:?} ({} in all)",
            &v[..6],
            &v[v.len() - 6..],
            v.len()
        )
    }
}

/// What every store must satisfy whatever happened to it: every object it
/// holds was written with those bytes and is not in `gone`; timestamps
/// strictly increase; lookups by time, handle-only and newest-first scans
/// agree with the oldest-first scan; `stats()` agrees with it. Returns the
/// scan.
pub(crate) fn check_store(
    store: &Store,
    written: &BTreeMap<i64, Vec<u8>>,
    gone: &BTreeSet<i64>,
) -> Result<Vec<Object>, String> {
    let all = store
        .objects(&Query::oldest(0))
        .map_err(|e| format!("full scan failed: {e}"))?;
    for w in all.windows(2) {
        let (a, b) = (w[0].handle.timestamp, w[1].handle.timestamp);
        if a >= b {
            return Err(format!("timestamps do not increase: {a} then {b}"));
        }
    }
    for o in &all {
        let ts = o.handle.timestamp;
        match written.get(&ts) {
            None => return Err(format!("object {ts} was never written")),
            Some(d) if *d != o.data => {
                return Err(format!(
                    "object {ts} reads back {} bytes that differ from the {} bytes written",
                    o.data.len(),
                    d.len()
                ))
            }
            Some(_) => {}
        }
        if gone.contains(&ts) {
            return Err(format!(
                "object {ts} is visible although a delete or reset that returned removed it"
            ));
        }
        if o.handle.size as usize != o.data.len() {
            return Err(format!(
                "object {ts}: handle size {} for {} bytes",
                o.handle.size,
                o.data.len()
            ));
        }
        let got = store
            .get_by_time(ts)
            .map_err(|e| format!("get_by_time({ts}) of a scanned object: {e}"))?;
        if got != *o {
            return Err(format!(
                "get_by_time({ts}) disagrees with the scan: {:?} vs {:?}",
                got.handle, o.handle
            ));
        }
    }
    let handles = store
        .handles(&Query::oldest(0))
        .map_err(|e| format!("handle scan failed: {e}"))?;
    if !handles.iter().eq(all.iter().map(|o| &o.handle)) {
        return Err("the handle-only scan disagrees with the full scan".into());
    }
    let newest = store
        .objects(&Query::newest(0))
        .map_err(|e| format!("newest-first scan failed: {e}"))?;
    if !newest.iter().rev().eq(all.iter()) {
        return Err(format!(
            "the newest-first scan ({} objects) is not the oldest-first one ({}) reversed",
            newest.len(),
            all.len()
        ));
    }
    let s = store.stats().map_err(|e| format!("stats failed: {e}"))?;
    let first = all.first().map_or(0, |o| o.handle.timestamp);
    let last = all.last().map_or(0, |o| o.handle.timestamp);
    if s.object_count != all.len() as u64
        || s.oldest_timestamp != first
        || s.newest_timestamp != last
    {
        return Err(format!(
            "stats say {} objects from {} to {}, a scan finds {} from {first} to {last}",
            s.object_count,
            s.oldest_timestamp,
            s.newest_timestamp,
            all.len()
        ));
    }
    Ok(all)
}

// ---------------------------------------------------------- random cases

fn random_config(rng: &mut Rng, durability: Durability) -> Config {
    let pick = |rng: &mut Rng, v: &[u32]| v[rng.below(v.len() as u64) as usize];
    Config {
        num_blocks: pick(rng, &[4, 5, 8, 8, 11, 16, 16, 24, 32]),
        data_block_size: pick(rng, &[64, 128, 128, 256, 256, 512]),
        index_block_size: pick(rng, &[64, 64, 128, 256]),
        data_type: DataType::Binary,
        durability,
    }
}

/// A payload: mostly small packed objects, some filling a block, some
/// spanning 2 to 4 blocks; some all zeros (a torn write of zeros over a
/// zeroed block looks whole byte for byte: only the checksums can tell).
fn random_payload(rng: &mut Rng, cfg: &Config) -> Vec<u8> {
    let room = (cfg.data_block_size as usize - BLOCK_HEADER_LEN) as u64;
    let packed_max = room - RECORD_HEADER_LEN as u64;
    let span_blocks = (cfg.num_blocks as u64 / 2).clamp(2, 4);
    let len = match rng.below(100) {
        0..=2 => 0,
        3..=59 => 1 + rng.below(packed_max.div_ceil(4)),
        60..=79 => 1 + rng.below(packed_max),
        80..=87 => packed_max - rng.below(2),
        _ => packed_max + 1 + rng.below(span_blocks * room - RECORD_HEADER_LEN as u64 - packed_max),
    };
    let zeros = rng.chance(1, 10);
    (0..len)
        .map(|_| if zeros { 0 } else { rng.next_u64() as u8 })
        .collect()
}

/// Runs one case; returns the number of power cuts it made.
fn run_case(seed: u64, policy: Durability) -> Result<u64, String> {
    let mut rng = Rng::new(seed);
    let cfg = random_config(&mut rng, policy);
    let mut m = Model::new(T0 + rng.below(1_000_000) as i64);
    let cycles = 2 + rng.below(3);
    let mut images = zeroed_images(&cfg);
    let mut cuts = 0;
    trace!("case {seed}: {cfg:?}, {cycles} cycles");
    let ctx = |cycle: u64, e: String| {
        format!(
            "cycle {cycle} of {} blocks of {} bytes ({}-byte index blocks): {e}",
            cfg.num_blocks, cfg.data_block_size, cfg.index_block_size
        )
    };
    for cycle in 0..cycles {
        trace_images(&cfg, &images);
        let clock = Clock::new(images, rng.next_u64());
        let opened = if cycle == 0 {
            Store::create_on(clock.media(), cfg)
        } else {
            if rng.chance(1, 4) {
                // Recovery makes up to a few dozen writes and syncs on these
                // stores; a cut armed past them falls in the workload.
                let after = rng.below(12);
                trace!("cycle {cycle}: cut armed at I/O {after} of the open");
                clock.arm(after);
            }
            Store::open_on(clock.media(), Some(policy))
        };
        let store = match opened {
            Ok(s) => s,
            Err(e) if clock.is_cut() => {
                trace!("cycle {cycle}: cut during the open ({e})");
                // The power went during recovery: the next open owes
                // everything this one did.
                images = clock.cut();
                cuts += 1;
                continue;
            }
            Err(e) => return Err(ctx(cycle, format!("open failed without a power cut: {e}"))),
        };
        trace!("cycle {cycle}: open");
        if cycle > 0 {
            m.after_reopen(&store)
                .map_err(|e| ctx(cycle, format!("after reopen: {e}")))?;
        }
        let ops = 5 + rng.below(60);
        let cut_op = (!rng.chance(1, 8)).then(|| rng.below(ops));
        workload(&store, &clock, &mut m, &mut rng, &cfg, ops, cut_op).map_err(|e| ctx(cycle, e))?;
        if !clock.is_cut() {
            live_check(&store, &m).map_err(|e| ctx(cycle, format!("live store: {e}")))?;
        }
        // Reads work on a store whose writes failed.
        let floor = store
            .oldest_timestamp()
            .map_err(|e| ctx(cycle, format!("reading the live store at the cut: {e}")))?;
        images = clock.cut();
        cuts += 1;
        trace!("cycle {cycle}: cut; the live store's oldest object is {floor:?}");
        m.power_cut(floor);
        drop(store);
    }

    // A last reopen without a cut: check, insert, close, reopen cleanly.
    trace_images(&cfg, &images);
    let clock = Clock::new(images, rng.next_u64());
    let store = Store::open_on(clock.media(), Some(policy))
        .map_err(|e| ctx(cycles, format!("final open failed: {e}")))?;
    m.after_reopen(&store)
        .map_err(|e| ctx(cycles, format!("final reopen: {e}")))?;
    for _ in 0..3 {
        let data = random_payload(&mut rng, &cfg);
        let ts = m.stage(&data, &mut rng);
        store
            .insert(ts, &data)
            .map_err(|e| ctx(cycles, format!("insert {ts} after the final reopen: {e}")))?;
        read_back(&store, ts, &data).map_err(|e| ctx(cycles, e))?;
    }
    store
        .sync()
        .map_err(|e| ctx(cycles, format!("sync: {e}")))?;
    let before = check_store(&store, &m.written, &m.gone).map_err(|e| ctx(cycles, e))?;
    store
        .close()
        .map_err(|e| ctx(cycles, format!("close: {e}")))?;
    let clean = Clock::new(clock.durable_images(), 0);
    let again = Store::open_on(clean.media(), Some(policy))
        .map_err(|e| ctx(cycles, format!("open after a clean close: {e}")))?;
    let after = check_store(&again, &m.written, &m.gone)
        .map_err(|e| ctx(cycles, format!("after a clean close: {e}")))?;
    if before != after {
        return Err(ctx(
            cycles,
            format!(
                "a clean close and reopen changed the store: {} objects before, {} after",
                before.len(),
                after.len()
            ),
        ));
    }
    Ok(cuts)
}

fn read_back(store: &Store, ts: i64, data: &[u8]) -> Result<(), String> {
    let got = store
        .get_by_time(ts)
        .map_err(|e| format!("reading back {ts} right after its insert: {e}"))?;
    if got.data != data {
        return Err(format!(
            "object {ts} reads back different bytes right after its insert"
        ));
    }
    Ok(())
}

/// Runs `ops` random operations; with `cut_op`, arms the clock to cut the
/// power within the next few writes or syncs when that operation starts.
/// Returns early once the power is gone. An operation counts as returned
/// only if the power was still on when it returned.
fn workload(
    store: &Store,
    clock: &Clock,
    m: &mut Model,
    rng: &mut Rng,
    cfg: &Config,
    ops: u64,
    cut_op: Option<u64>,
) -> Result<(), String> {
    let always = cfg.durability == Durability::Always;
    let mut handles: BTreeMap<i64, ObjectHandle> = BTreeMap::new();
    for i in 0..ops {
        if cut_op == Some(i) {
            let after = rng.below(4);
            trace!("  cut armed at I/O {after} from now");
            clock.arm(after);
        }
        let roll = rng.below(1000);
        let live = m.durable.len() + m.pending.len();
        if roll < 7 {
            let r = store.reset();
            trace!("  reset: {r:?}");
            if clock.is_cut() {
                m.durable.clear();
                m.pending.clear();
                return Ok(());
            }
            r.map_err(|e| format!("reset: {e}"))?;
            m.gone.extend(m.written.keys().copied());
            m.durable.clear();
            m.pending.clear();
            handles.clear();
        } else if roll < 130 {
            let r = store.sync();
            trace!("  sync: {r:?}");
            if clock.is_cut() {
                return Ok(());
            }
            r.map_err(|e| format!("sync: {e}"))?;
            m.durable.append(&mut m.pending);
        } else if roll < 250 && live > 0 {
            let alive: Vec<i64> = m.durable.union(&m.pending).copied().collect();
            let ts = alive[rng.below(alive.len() as u64) as usize];
            let r = match handles.get(&ts) {
                Some(h) if rng.chance(1, 2) => store.delete(h),
                _ => store.delete_by_time(ts),
            };
            trace!("  delete {ts}: {r:?}");
            if clock.is_cut() {
                m.maybe_removed(ts);
                return Ok(());
            }
            match r {
                Ok(()) => m.removed(ts),
                Err(Error::TimestampNotFound { .. } | Error::ObjectNotFound) => {
                    // Only the ring may have taken it.
                    let oldest = store.oldest_timestamp().map_err(|e| e.to_string())?;
                    if oldest.is_some_and(|o| ts >= o) {
                        return Err(format!(
                            "delete of {ts} says not found, yet the oldest object is {oldest:?}"
                        ));
                    }
                    m.maybe_removed(ts);
                }
                Err(e) => return Err(format!("delete {ts}: {e}")),
            }
        } else {
            let data = random_payload(rng, cfg);
            let ts = m.stage(&data, rng);
            let r = store.insert(ts, &data);
            trace!("  insert {ts} ({} bytes): {r:?}", data.len());
            if clock.is_cut() {
                return Ok(());
            }
            let h = r.map_err(|e| format!("insert {ts} ({} bytes): {e}", data.len()))?;
            if always {
                m.durable.insert(ts);
            } else {
                m.pending.insert(ts);
            }
            handles.insert(ts, h);
            read_back(store, ts, &data)?;
        }
    }
    Ok(())
}

/// The live store before a cut between two calls holds every object the
/// model knows of that the ring did not reclaim.
fn live_check(store: &Store, m: &Model) -> Result<(), String> {
    let all = check_store(store, &m.written, &m.gone)?;
    let seen: BTreeSet<i64> = all.iter().map(|o| o.handle.timestamp).collect();
    let floor = all.first().map_or(i64::MAX, |o| o.handle.timestamp);
    match m
        .durable
        .union(&m.pending)
        .find(|&&t| t >= floor && !seen.contains(&t))
    {
        Some(t) => Err(format!("object {t} is missing")),
        None => Ok(()),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

fn random_crashes(policy: Durability, test: &str) {
    let replay = env_u64("TSSTORE_CRASH_SEED");
    let cases = env_u64("TSSTORE_CRASH_CASES").unwrap_or(DEFAULT_CASES);
    let seeds: Vec<u64> = match replay {
        Some(seed) => vec![seed],
        None => {
            let mut base = Rng::new(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
            );
            (0..cases).map(|_| base.next_u64()).collect()
        }
    };
    let started = Instant::now();
    let mut cuts = 0;
    for &seed in &seeds {
        let replay_hint = format!(
            "seed={seed}\n  replay: TSSTORE_CRASH_SEED={seed} cargo test --test tests engine::crash::{test} -- --exact"
        );
        match std::panic::catch_unwind(AssertUnwindSafe(|| run_case(seed, policy))) {
            Ok(Ok(n)) => cuts += n,
            Ok(Err(e)) => panic!("{test} ({}): {e}\n  {replay_hint}", policy.name()),
            Err(p) => panic!(
                "{test} ({}) panicked: {}\n  {replay_hint}",
                policy.name(),
                panic_text(&*p)
            ),
        }
    }
    eprintln!(
        "{test}: {} cases, {cuts} power cuts in {:.1?}",
        seeds.len(),
        started.elapsed()
    );
    if replay.is_none() && cases >= DEFAULT_CASES {
        assert!(cuts >= MIN_CUTS_PER_POLICY, "only {cuts} power cuts");
    }
}

#[test]
fn random_crashes_always() {
    random_crashes(Durability::Always, "random_crashes_always");
}

#[test]
fn random_crashes_interval() {
    random_crashes(NO_TIMER, "random_crashes_interval");
}

#[test]
fn random_crashes_never() {
    random_crashes(Durability::Never, "random_crashes_never");
}
