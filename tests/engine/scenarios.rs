//! Crash scenarios built by hand on the simulated medium: a torn packed
//! block, lost index entries, lost data blocks, a torn spanning object, a
//! crash after and during a reset, a crash between the phases of a soft
//! delete, a zeroed index, injected I/O failures, and regressions for the
//! recovery bugs the random tests of `crash.rs` found. Unlike those, these
//! tests know the on-disk format: they build images from `live_image()` and
//! `durable_image()` and change chosen bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::crash::{check_store, trace_images, zeroed_images, Images};

use tsstore::store::format::{BLOCK_HEADER_LEN, RECORD_HEADER_LEN};
use tsstore::store::sim::{Rng, SimMedium};
use tsstore::store::{Config, DataType, Durability, Error, Media, Medium, ObjectHandle, Store};

/// Timestamps start here (Unix nanoseconds, November 2023).
const T0: i64 = 1_700_000_000_000_000_000;
/// An interval that never elapses during a test: syncs happen only when a
/// test asks for them.
const NO_TIMER: Durability = Durability::Interval(Duration::from_secs(3600));
// ------------------------------------------------------------- scenarios

/// A store on plain simulated media.
struct Sim {
    data: SimMedium,
    index: SimMedium,
    meta: SimMedium,
}

impl Sim {
    fn new(cfg: &Config) -> Sim {
        Sim::from(zeroed_images(cfg))
    }

    fn from(images: Images) -> Sim {
        let [data, index, meta] = images;
        Sim {
            data: SimMedium::from_image(data),
            index: SimMedium::from_image(index),
            meta: SimMedium::from_image(meta),
        }
    }

    fn media(&self) -> Media {
        Media {
            data: Arc::new(self.data.clone()),
            index: Arc::new(self.index.clone()),
            meta: Arc::new(self.meta.clone()),
        }
    }

    fn durable(&self) -> Images {
        [
            self.data.durable_image(),
            self.index.durable_image(),
            self.meta.durable_image(),
        ]
    }

    fn live(&self) -> Images {
        [
            self.data.live_image(),
            self.index.live_image(),
            self.meta.live_image(),
        ]
    }

    fn crash(&self, rng: &mut Rng) -> Images {
        [
            self.data.crash_image(rng),
            self.index.crash_image(rng),
            self.meta.crash_image(rng),
        ]
    }
}

fn config(num_blocks: u32, block: u32, durability: Durability) -> Config {
    Config {
        num_blocks,
        data_block_size: block,
        index_block_size: 64,
        data_type: DataType::Binary,
        durability,
    }
}

/// Opens a store on copies of `images`, keeping the media for later images.
fn reopen(images: &Images, policy: Durability) -> (Sim, Store) {
    let sim = Sim::from(images.clone());
    let store = Store::open_on(sim.media(), Some(policy)).expect("open after a crash");
    (sim, store)
}

/// Bytes that are never zero, derived from `ts`: a torn write of them is
/// always visible, and their tail never matches zeroed disk.
fn nonzero(ts: i64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(ts as u64);
    (0..len).map(|_| 1 + (r.next_u64() % 255) as u8).collect()
}

/// A scenario's bookkeeping: what was written, and helpers that insert and
/// check. Panics on failure (these tests are not seeded).
struct Book {
    written: BTreeMap<i64, Vec<u8>>,
    next_ts: i64,
}

impl Book {
    fn new() -> Book {
        Book {
            written: BTreeMap::new(),
            next_ts: T0,
        }
    }

    fn insert(&mut self, store: &Store, len: usize) -> (i64, ObjectHandle) {
        let ts = self.next_ts;
        self.next_ts += 1_000;
        let data = nonzero(ts, len);
        self.written.insert(ts, data.clone());
        let h = store
            .insert(ts, &data)
            .unwrap_or_else(|e| panic!("insert {ts}: {e}"));
        (ts, h)
    }

    /// Stages an insert that is expected to fail.
    fn insert_err(&mut self, store: &Store, len: usize) -> (i64, Error) {
        let ts = self.next_ts;
        self.next_ts += 1_000;
        let data = nonzero(ts, len);
        self.written.insert(ts, data.clone());
        match store.insert(ts, &data) {
            Ok(_) => panic!("insert {ts} succeeded on a failing medium"),
            Err(e) => (ts, e),
        }
    }

    /// Checks a store: consistent, nothing unwritten, every `present`
    /// object there, no `absent` one. Returns the timestamps it holds.
    fn verify(&self, store: &Store, present: &[i64], absent: &[i64]) -> BTreeSet<i64> {
        let gone: BTreeSet<i64> = absent.iter().copied().collect();
        let all = check_store(store, &self.written, &gone).unwrap_or_else(|e| panic!("{e}"));
        let seen: BTreeSet<i64> = all.iter().map(|o| o.handle.timestamp).collect();
        for t in present {
            assert!(
                seen.contains(t),
                "object {t} is missing; the store holds {seen:?}"
            );
        }
        seen
    }

    /// The reopened store takes a new insert, which survives a clean close
    /// and reopen, as does everything else.
    fn accepts_more(&mut self, sim: &Sim, store: Store, policy: Durability) {
        let (ts, _) = self.insert(&store, 20);
        let before = self.verify(&store, &[ts], &[]);
        store.close().expect("close");
        let (_, again) = reopen(&sim.durable(), policy);
        let after = self.verify(&again, &[ts], &[]);
        assert_eq!(before, after, "a clean close and reopen changed the store");
    }

    fn timestamps(&self) -> Vec<i64> {
        self.written.keys().copied().collect()
    }
}

/// `base` with `live[range]` copied over it, but only its first `n` bytes:
/// a write of that range torn after `n` bytes.
fn torn(base: &[u8], live: &[u8], range: Range<usize>, n: usize) -> Vec<u8> {
    let mut img = base.to_vec();
    let end = range.start + n.min(range.len());
    img[range.start..end].copy_from_slice(&live[range.start..end]);
    img
}

/// File offset of the byte `off` of ring position `pos`.
fn at(cfg: &Config, pos: u32, off: u32) -> usize {
    (pos * cfg.data_block_size + off) as usize
}

/// The tail of the head block, written by a sync whose fdatasync never
/// returned, is torn at every byte: whole records survive, a torn one
/// vanishes, nothing else is touched.
#[test]
fn torn_last_write_of_a_packed_block() {
    let cfg = config(8, 256, NO_TIMER);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    let (a, _) = b.insert(&store, 30);
    let (c, _) = b.insert(&store, 50);
    store.sync().unwrap();
    let (d, hd) = b.insert(&store, 40);
    let (e, he) = b.insert(&store, 25);
    sim.data.fail_syncs(true);
    assert!(store.sync().is_err(), "the data sync fails");
    assert_eq!(
        sim.data.pending_writes(),
        1,
        "one write of the head block's tail"
    );
    assert_eq!(hd.block_num, he.block_num, "both in the head block");
    let start = at(&cfg, hd.block_num, hd.offset);
    let d_end = at(&cfg, he.block_num, he.offset);
    let end = d_end + RECORD_HEADER_LEN + 25;
    let [live, ..] = sim.live();
    let [durable, index, meta] = sim.durable();
    for n in 0..=end - start {
        let img = torn(&durable, &live, start..end, n);
        let (sim2, s) = reopen(&[img, index.clone(), meta.clone()], NO_TIMER);
        let seen = b.verify(&s, &[a, c], &[]);
        assert_eq!(
            seen.contains(&d),
            start + n >= d_end,
            "torn after {n} bytes"
        );
        assert_eq!(seen.contains(&e), start + n == end, "torn after {n} bytes");
        if n % 37 == 0 || n == end - start {
            b.accepts_more(&sim2, s, NO_TIMER);
        }
    }
}

/// Under `always` the data file is synced per insert but the index only
/// once an interval: a cut loses index entries while their blocks survive.
/// Recovery rebuilds them; the store holds exactly what it held live.
#[test]
fn index_entries_lost_while_data_survived() {
    let cfg = config(16, 128, Durability::Always);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    let mut early_index = Vec::new();
    for i in 0..60 {
        let len = if i % 9 == 4 { 150 } else { 5 + (i * 7) % 60 };
        b.insert(&store, len);
        if i == 20 {
            // The index as a cut would leave it had none of the later
            // entries reached the disk (whatever the flusher did since).
            early_index = sim.index.live_image();
        }
    }
    let live: Vec<i64> = check_store(&store, &b.written, &BTreeSet::new())
        .unwrap()
        .iter()
        .map(|o| o.handle.timestamp)
        .collect();
    assert!(live.len() < b.written.len(), "the ring wrapped");
    let [data, index, meta] = sim.durable();
    let zeroed = vec![0u8; index.len()];
    let mut images = vec![
        [data.clone(), index.clone(), meta.clone()],
        [data.clone(), early_index, meta.clone()],
        [data.clone(), zeroed, meta.clone()],
    ];
    let mut rng = Rng::new(7);
    for _ in 0..40 {
        let idx = sim.index.crash_image(&mut rng);
        images.push([data.clone(), idx, meta.clone()]);
    }
    for img in &images {
        let (_, s) = reopen(img, Durability::Always);
        let seen = b.verify(&s, &live, &[]);
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), live);
    }
    let (sim2, s) = reopen(&images[0], Durability::Always);
    b.accepts_more(&sim2, s, Durability::Always);
}

/// The opposite order: entries of sealed blocks reached the disk, the blocks
/// themselves did not (no fsync orders two files). Synced objects stay,
/// stale blocks of an earlier lap are not taken for the lost ones.
#[test]
fn data_lost_while_index_survived() {
    let cfg = config(16, 128, NO_TIMER);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    for i in 0..70 {
        b.insert(&store, 10 + (i * 13) % 60);
    }
    store.sync().unwrap();
    let synced = b.verify(&store, &[], &[]);
    for i in 0..8 {
        b.insert(&store, 10 + (i * 11) % 70);
    }
    let floor = store.oldest_timestamp().unwrap().unwrap();
    let required: Vec<i64> = synced.into_iter().filter(|&t| t >= floor).collect();
    assert!(!required.is_empty());
    assert!(sim.index.pending_writes() > 0 && sim.data.pending_writes() > 0);
    sim.index.sync().unwrap();
    let index = sim.index.durable_image();
    let meta = sim.meta.durable_image();
    let mut rng = Rng::new(11);
    let mut datas = vec![sim.data.durable_image()];
    for _ in 0..40 {
        datas.push(sim.data.crash_image(&mut rng));
    }
    for data in datas {
        let (sim2, s) = reopen(&[data, index.clone(), meta.clone()], NO_TIMER);
        b.verify(&s, &required, &[]);
        let mut b2 = Book {
            written: b.written.clone(),
            next_ts: b.next_ts,
        };
        b2.accepts_more(&sim2, s, NO_TIMER);
    }
}

/// A spanning object whose blocks were written in part, in any subset and
/// torn anywhere: it is there whole or not at all, and there when all of it
/// is on disk.
#[test]
fn crash_in_the_middle_of_a_spanning_object() {
    let cfg = config(8, 128, NO_TIMER);
    let room = 128 - BLOCK_HEADER_LEN;
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    let (a, _) = b.insert(&store, 40);
    store.sync().unwrap();
    let (s, hs) = b.insert(&store, 3 * room - RECORD_HEADER_LEN - 7);
    assert_eq!(hs.span_count, 3);
    // The third block's write stops 7 bytes short of the block's end.
    let last_len = 128 - 7;
    let [live, index, meta] = sim.live();
    let [durable, ..] = sim.durable();
    let block = |i: u32| {
        let p = (hs.block_num + i) % cfg.num_blocks;
        at(&cfg, p, 0)..at(&cfg, p, cfg.data_block_size)
    };
    for mask in 0u32..8 {
        for cut in [0, 1, 31, 32, 33, 60, 127, 128] {
            // The blocks in `mask` were written; the last of them is torn
            // after `cut` bytes.
            let chosen: Vec<u32> = (0..3).filter(|i| mask & (1 << i) != 0).collect();
            let mut img = durable.clone();
            for (j, &i) in chosen.iter().enumerate() {
                let n = if j + 1 == chosen.len() { cut } else { 128 };
                img = torn(&img, &live, block(i), n);
            }
            let whole = mask == 7 && cut >= last_len;
            for idx in [&index, &sim.index.durable_image()] {
                let (sim2, st) = reopen(&[img.clone(), idx.clone(), meta.clone()], NO_TIMER);
                let seen = b.verify(&st, &[a], &[]);
                assert_eq!(
                    seen.contains(&s),
                    whole,
                    "blocks {mask:03b} torn after {cut}"
                );
                if cut == 60 {
                    let mut b2 = Book {
                        written: b.written.clone(),
                        next_ts: b.next_ts,
                    };
                    b2.accepts_more(&sim2, st, NO_TIMER);
                }
            }
        }
    }

    // Under `always`, the span's writes fail part way: the insert fails,
    // the object never appears, everything acknowledged stays.
    for ok_writes in 0..3 {
        let cfg = config(8, 128, Durability::Always);
        let sim = Sim::new(&cfg);
        let store = Store::create_on(sim.media(), cfg).unwrap();
        let mut b = Book::new();
        let acked: Vec<i64> = (0..4).map(|_| b.insert(&store, 30).0).collect();
        sim.data.fail_after_writes(Some(ok_writes));
        let (s, _) = b.insert_err(&store, 3 * room - RECORD_HEADER_LEN);
        let mut rng = Rng::new(ok_writes);
        for _ in 0..20 {
            let (_, st) = reopen(&sim.crash(&mut rng), Durability::Always);
            b.verify(&st, &acked, &[s]);
        }
    }
}

/// A reset that returned is durable at once; one torn in flight leaves
/// either the old store or an empty one, nothing in between.
#[test]
fn crash_right_after_and_during_a_reset() {
    let cfg = config(8, 128, Durability::Always);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    for i in 0..30 {
        b.insert(&store, 10 + (i * 17) % 80);
    }
    let old = b.timestamps();
    store.reset().unwrap();
    let mut rng = Rng::new(3);
    for _ in 0..20 {
        let (_, s) = reopen(&sim.crash(&mut rng), Durability::Always);
        b.verify(&s, &[], &old);
    }
    // New objects after the reset survive; the old ones stay gone.
    let new: Vec<i64> = (0..12).map(|i| b.insert(&store, 10 + i * 3).0).collect();
    assert_eq!(
        b.verify(&store, &new, &old).len(),
        new.len(),
        "the ring holds them all"
    );
    for _ in 0..20 {
        let (sim2, s) = reopen(&sim.crash(&mut rng), Durability::Always);
        let seen = b.verify(&s, &new, &old);
        assert_eq!(seen.len(), new.len());
        let mut b2 = Book {
            written: b.written.clone(),
            next_ts: b.next_ts,
        };
        b2.accepts_more(&sim2, s, Durability::Always);
    }
    drop(store);

    // The reset's meta write torn at every byte.
    let cfg = config(8, 128, Durability::Always);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    for i in 0..20 {
        b.insert(&store, 10 + (i * 17) % 80);
    }
    let live_before = b.verify(&store, &[], &[]);
    sim.meta.fail_syncs(true);
    assert!(store.reset().is_err());
    assert!(matches!(b.insert_err(&store, 5).1, Error::Poisoned { .. }));
    let [data, index, meta_live] = sim.live();
    let meta_durable = sim.meta.durable_image();
    let first = (0..meta_live.len())
        .find(|&i| meta_live[i] != meta_durable[i])
        .unwrap();
    let last = (0..meta_live.len())
        .rev()
        .find(|&i| meta_live[i] != meta_durable[i])
        .unwrap();
    for n in 0..=last + 1 - first {
        let meta = torn(&meta_durable, &meta_live, first..last + 1, n);
        let (_, s) = reopen(&[data.clone(), index.clone(), meta], Durability::Always);
        let seen = b.verify(&s, &[], &[]);
        assert!(
            seen.is_empty() || seen == live_before,
            "meta torn after {n} bytes: {} of {} objects",
            seen.len(),
            live_before.len()
        );
    }
}

/// A soft delete outside the head block writes its index entry with the
/// record named, syncs the index, then sets the flag byte. A cut between the
/// phases is completed at open; a cut before the index sync leaves the
/// object either deleted or not, with counts that agree either way.
#[test]
fn crash_between_the_phases_of_a_soft_delete() {
    #[derive(Debug, Clone, Copy)]
    enum Fail {
        /// Phase 2 (the flag byte) never happens.
        FlagWrite,
        /// The flag byte is written, the data sync after it fails.
        DataSync,
        /// The index entry is written, its sync fails.
        IndexSync,
    }
    for fail in [Fail::FlagWrite, Fail::DataSync, Fail::IndexSync] {
        for policy in [Durability::Always, NO_TIMER] {
            let cfg = config(8, 128, policy);
            let sim = Sim::new(&cfg);
            let store = Store::create_on(sim.media(), cfg).unwrap();
            let mut b = Book::new();
            let all: Vec<(i64, ObjectHandle)> = (0..14).map(|_| b.insert(&store, 20)).collect();
            store.sync().unwrap();
            let head = all.last().unwrap().1.block_num;
            // The middle object of the first block.
            let (x, hx) = all[1];
            assert_ne!(hx.block_num, head, "the victim is in a sealed block");
            let others: Vec<i64> = all.iter().map(|p| p.0).filter(|&t| t != x).collect();
            match fail {
                Fail::FlagWrite => sim.data.fail_after_writes(Some(0)),
                Fail::DataSync => sim.data.fail_syncs(true),
                Fail::IndexSync => sim.index.fail_syncs(true),
            }
            assert!(
                store.delete_by_time(x).is_err(),
                "{fail:?}: the delete fails"
            );
            assert!(matches!(
                store.delete_by_time(others[0]),
                Err(Error::Poisoned { .. })
            ));
            // Reads still work; the failed delete has not taken effect in
            // memory.
            assert_eq!(
                store.get_by_time(others[0]).unwrap().data,
                b.written[&others[0]]
            );
            let mut rng = Rng::new(fail as u64);
            let mut images = vec![sim.durable(), sim.live()];
            for _ in 0..30 {
                images.push(sim.crash(&mut rng));
            }
            if let Fail::IndexSync = fail {
                // The entry write torn at every byte.
                let [data, idx_live, meta] = sim.live();
                let idx_durable = sim.index.durable_image();
                let first = (0..idx_live.len())
                    .find(|&i| idx_live[i] != idx_durable[i])
                    .unwrap();
                let last = (0..idx_live.len())
                    .rev()
                    .find(|&i| idx_live[i] != idx_durable[i])
                    .unwrap();
                for n in 0..=last + 1 - first {
                    let idx = torn(&idx_durable, &idx_live, first..last + 1, n);
                    images.push([data.clone(), idx, meta.clone()]);
                }
            }
            for (i, img) in images.iter().enumerate() {
                let (sim2, s) = reopen(img, policy);
                let seen = b.verify(&s, &others, &[]);
                match fail {
                    Fail::FlagWrite | Fail::DataSync => {
                        assert!(
                            !seen.contains(&x),
                            "{fail:?} image {i}: the delete was rolled forward"
                        )
                    }
                    Fail::IndexSync => {}
                }
                // The state recovery wrote survives a second cut.
                let again = Sim::from(sim2.durable());
                drop(s);
                let s2 = Store::open_on(again.media(), Some(policy)).unwrap();
                assert_eq!(b.verify(&s2, &others, &[]), seen, "{fail:?} image {i}");
            }
        }
    }

    // A cut during the recovery that rolls the delete forward.
    let cfg = config(8, 128, Durability::Always);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    let all: Vec<i64> = (0..14).map(|_| b.insert(&store, 20).0).collect();
    let x = all[2];
    sim.data.fail_after_writes(Some(0));
    assert!(store.delete_by_time(x).is_err());
    let crashed = sim.durable();
    let rec = Sim::from(crashed.clone());
    rec.data.fail_syncs(true);
    assert!(
        Store::open_on(rec.media(), None).is_err(),
        "recovery's data sync fails"
    );
    // The delete never returned: the cut may undo the roll forward (its
    // flag write is lost while the repaired index entry lands), but counts
    // agree with what is there, and nothing else is touched.
    let others: Vec<i64> = all.iter().copied().filter(|&t| t != x).collect();
    let mut rng = Rng::new(5);
    for _ in 0..40 {
        let (sim2, s) = reopen(&rec.crash(&mut rng), Durability::Always);
        let seen = b.verify(&s, &others, &[]);
        drop(s);
        let (_, s2) = reopen(&sim2.durable(), Durability::Always);
        assert_eq!(b.verify(&s2, &others, &[]), seen);
    }
}

/// The index is a cache: with the index file zeroed, open rebuilds it from
/// the data blocks and finds exactly what the store held, deletes included.
#[test]
fn zeroed_index_is_rebuilt_from_data() {
    for policy in [Durability::Always, NO_TIMER, Durability::Never] {
        let cfg = config(16, 256, policy);
        let sim = Sim::new(&cfg);
        let store = Store::create_on(sim.media(), cfg).unwrap();
        let mut b = Book::new();
        let mut deleted = Vec::new();
        for i in 0..120usize {
            let len = if i % 11 == 3 { 500 } else { 5 + (i * 29) % 100 };
            let (ts, _) = b.insert(&store, len);
            if i % 7 == 2 {
                store.delete_by_time(ts).unwrap();
                deleted.push(ts);
            }
        }
        let live = check_store(&store, &b.written, &BTreeSet::new()).unwrap();
        store.close().unwrap();
        let [data, index, meta] = sim.durable();
        for idx in [vec![0u8; index.len()], index] {
            let (sim2, s) = reopen(&[data.clone(), idx, meta.clone()], policy);
            let got = check_store(&s, &b.written, &deleted.iter().copied().collect()).unwrap();
            assert_eq!(got, live, "{}", policy.name());
            b.accepts_more(&sim2, s, policy);
        }
    }
}

/// An I/O error poisons the store: the failing call returns an error, later
/// writes return `Poisoned`, reads go on working, and a reopen from the live
/// or the durable image holds everything acknowledged as durable.
#[test]
fn io_failures_poison_the_store_and_lose_nothing_durable() {
    #[derive(Debug, Clone, Copy)]
    enum Fail {
        DataWrite,
        DataSync,
        IndexWrite,
        IndexSync,
        MetaSync,
    }
    for fail in [
        Fail::DataWrite,
        Fail::DataSync,
        Fail::IndexWrite,
        Fail::IndexSync,
        Fail::MetaSync,
    ] {
        for policy in [Durability::Always, NO_TIMER, Durability::Never] {
            let cfg = config(8, 128, policy);
            let sim = Sim::new(&cfg);
            let store = Store::create_on(sim.media(), cfg).unwrap();
            let mut b = Book::new();
            let mut durable = Vec::new();
            for i in 0..20 {
                durable.push(b.insert(&store, 10 + (i * 7) % 50).0);
            }
            store.sync().unwrap();
            let mut acked = Vec::new();
            for i in 0..3 {
                acked.push(b.insert(&store, 10 + i).0);
            }
            if policy == Durability::Always {
                durable.append(&mut acked);
            }
            match fail {
                Fail::DataWrite => sim.data.fail_after_writes(Some(0)),
                Fail::DataSync => sim.data.fail_syncs(true),
                Fail::IndexWrite => sim.index.fail_after_writes(Some(0)),
                Fail::IndexSync => sim.index.fail_syncs(true),
                Fail::MetaSync => sim.meta.fail_syncs(true),
            }
            // Drive writes until one fails: inserts seal blocks (index
            // entries), `sync()` flushes and syncs, `reset()` writes meta.
            let failed = match fail {
                Fail::MetaSync => store.reset().is_err(),
                _ => {
                    let mut failed = false;
                    for i in 0..12 {
                        let ts = b.next_ts;
                        b.next_ts += 1_000;
                        let data = nonzero(ts, 30 + i);
                        b.written.insert(ts, data.clone());
                        if store.insert(ts, &data).is_err() {
                            failed = true;
                            break;
                        }
                        acked.push(ts);
                        if policy == Durability::Always {
                            durable.append(&mut acked);
                        }
                        if store.sync().is_err() {
                            failed = true;
                            break;
                        }
                        durable.append(&mut acked);
                    }
                    failed
                }
            };
            let what = format!("{fail:?} under {}", policy.name());
            assert!(failed, "{what}: nothing failed");
            let (ts, e) = b.insert_err(&store, 10);
            assert!(
                matches!(e, Error::Poisoned { .. }),
                "{what}: insert {ts} gave {e}"
            );
            assert!(
                matches!(
                    store.delete_by_time(durable[0]),
                    Err(Error::Poisoned { .. })
                ),
                "{what}"
            );
            assert!(
                matches!(store.reset(), Err(Error::Poisoned { .. })),
                "{what}"
            );
            // A sync may still succeed (the failed call acknowledged
            // nothing); if it does, what was acknowledged is durable.
            if store.sync().is_ok() {
                durable.append(&mut acked);
            }
            // The ring may have reclaimed the oldest objects meanwhile.
            let floor = store.oldest_timestamp().unwrap().unwrap();
            durable.retain(|&t| t >= floor);
            // Reads still work.
            let live = b.verify(&store, &durable, &[]);
            assert_eq!(
                store.get_by_time(durable[0]).unwrap().data,
                b.written[&durable[0]]
            );
            assert_eq!(store.stats().unwrap().object_count, live.len() as u64);
            for (name, img) in [("live", sim.live()), ("durable", sim.durable())] {
                let (sim2, s) = reopen(&img, policy);
                if let (Fail::MetaSync, "live") = (fail, name) {
                    // The failed reset reached the live meta image: it may
                    // take effect, all at once.
                    let seen = b.verify(&s, &[], &[]);
                    assert!(seen.is_empty() || seen == live, "{what}: {seen:?}");
                } else {
                    b.verify(&s, &durable, &[]);
                }
                let mut b2 = Book {
                    written: b.written.clone(),
                    next_ts: b.next_ts,
                };
                b2.accepts_more(&sim2, s, policy);
            }
        }
    }
}

/// Regression: recovery trusted the index entry of a block below the
/// synced point without looking at the block. When the crashed session had
/// written a block of the next lap beyond the recovered head (the blocks in
/// between lost), that block replaced one whose entry was trusted: `stats()`
/// counted the dead block's objects though no read could find them (found
/// by `random_crashes_never`, seed 71109109249699253).
#[test]
fn a_block_replaced_beyond_the_head_is_not_counted() {
    let cfg = config(4, 128, NO_TIMER);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    // Blocks 1..=4, two objects each, synced; then blocks 5 and 6, whose
    // entries (written when 4 and 5 were sealed) say D = 4 and reach the
    // disk.
    let lap1: Vec<i64> = (0..8).map(|_| b.insert(&store, 30).0).collect();
    store.sync().unwrap();
    for _ in 0..4 {
        b.insert(&store, 30);
    }
    sim.index.sync().unwrap();
    // Blocks 6 and 7 are written out (sealed) but not synced.
    for _ in 0..4 {
        b.insert(&store, 30);
    }
    // After the cut only block 7 is there, over block 3; blocks 5 and 6
    // were lost. The head is 4; block 3's entry is below D.
    let [live, ..] = sim.live();
    let [mut data, index, meta] = sim.durable();
    let r = at(&cfg, 2, 0)..at(&cfg, 3, 0);
    data[r.clone()].copy_from_slice(&live[r]);
    let (sim2, s) = reopen(&[data, index, meta], NO_TIMER);
    let block3 = &lap1[4..6];
    let seen = b.verify(&s, &[&lap1[..4], &lap1[6..]].concat(), block3);
    assert_eq!(seen.len(), 6);
    b.accepts_more(&sim2, s, NO_TIMER);
}

/// Regression: under `always` the index (and with it the synced point `D`
/// that recovery starts from) is synced once an interval, so the ring can
/// wrap past `D` with every block durable. When the blocks of a spanning
/// object of the next lap were written over `D` and the block after it,
/// the first write lost and the second torn, recovery's header walk from
/// `D` ended at the torn block, and every acknowledged block after `D` was
/// lost (found by `random_crashes_always`, seed 11299698891119619252).
#[test]
fn torn_write_of_the_next_lap_after_the_synced_point() {
    let room = 128 - BLOCK_HEADER_LEN;
    for torn_at in [1, 16, 31] {
        let cfg = config(6, 128, Durability::Always);
        let sim = Sim::new(&cfg);
        let store = Store::create_on(sim.media(), cfg).unwrap();
        let mut b = Book::new();
        // Blocks 1 and 2 (two objects each), then a sync: entries written
        // from now on say D = 2.
        for _ in 0..4 {
            b.insert(&store, 30);
        }
        store.sync().unwrap();
        // Blocks 3..=6, and 7 over block 1: all acknowledged (data synced).
        // The OS writes the index back, so D = 2 is durable.
        for _ in 0..10 {
            b.insert(&store, 30);
        }
        sim.index.sync().unwrap();
        // A spanning object: block 8 over block 2 (= D), block 9 over
        // block 3. Neither is synced; after the cut only block 9 is there,
        // torn.
        sim.data.fail_syncs(true);
        let (_, e) = b.insert_err(&store, 2 * room - RECORD_HEADER_LEN);
        assert!(matches!(e, Error::Io(_)), "{e}");
        let floor = store.oldest_timestamp().unwrap().unwrap();
        let required: Vec<i64> = b.timestamps().into_iter().filter(|&t| t >= floor).collect();
        let required = &required[..required.len() - 1];
        assert_eq!(required.len(), 8, "blocks 4 to 7");
        let [live, ..] = sim.live();
        let [durable, index, meta] = sim.durable();
        let third = at(&cfg, 2, 0);
        let img = torn(&durable, &live, third..third + 128, torn_at);
        let (_, s) = reopen(&[img, index, meta], Durability::Always);
        b.verify(&s, required, &[]);
    }
}

/// Regression: an open that found its head by reading every header (past a
/// hole: a block whose write was lost, still holding an older lap) left
/// nothing on disk that let the next open find it again. Once the next
/// session wrote an entry naming a later synced point before the hole (a
/// delete does), the next open's header walk stopped at the hole: the head
/// moved back, blocks the first open showed were lost, and blocks of an
/// older lap it had left out came back (found by `random_crashes_interval`,
/// seed 15520149018305289269).
#[test]
fn an_open_never_moves_the_head_back() {
    let cfg = config(4, 128, NO_TIMER);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    // Lap 1: blocks 1..=4, two objects each, synced.
    let lap1: Vec<i64> = (0..8).map(|_| b.insert(&store, 30).0).collect();
    store.sync().unwrap();
    // Lap 2: blocks 5..=9 written (10 is the head, in memory), not synced;
    // their entries say D = 4 and reach the disk.
    let lap2: Vec<i64> = (0..11).map(|_| b.insert(&store, 30).0).collect();
    sim.index.sync().unwrap();
    // After the cut, blocks 9 (over 5), 6 and 8 are there; 7 was lost, so
    // position 2 still holds block 3.
    let [live, ..] = sim.live();
    let [mut data, index, meta] = sim.durable();
    for pos in [0, 1, 3] {
        let r = at(&cfg, pos, 0)..at(&cfg, pos + 1, 0);
        data[r.clone()].copy_from_slice(&live[r]);
    }
    drop(store);
    // The first open: block 4 (at D) was overwritten, so it reads every
    // header; the head is 9, block 7 a hole, blocks 6, 8 and 9 are there.
    let images = [data, index, meta];
    trace_images(&cfg, &images);
    let (sim1, s1) = reopen(&images, NO_TIMER);
    let shown: Vec<i64> = [&lap2[2..4], &lap2[6..10]].concat();
    let mut hidden: Vec<i64> = lap1.clone();
    hidden.extend(&lap2[..2]);
    hidden.extend(&lap2[4..6]);
    let seen = b.verify(&s1, &shown, &hidden);
    assert_eq!(seen.len(), shown.len());
    // The new session deletes from block 6: its entry names D = 6. Then
    // the power goes (before a close, which would record D = 9).
    s1.delete_by_time(shown[0]).unwrap();
    let cut = sim1.durable();
    drop(s1);
    trace_images(&cfg, &cut);
    let (_, s2) = reopen(&cut, NO_TIMER);
    hidden.push(shown[0]);
    let seen = b.verify(&s2, &shown[1..], &hidden);
    assert_eq!(seen.len(), shown.len() - 1);
}

/// Regression: index entries of blocks a crashed session wrote beyond the
/// recovered head outlived the open, and the next session reuses their
/// sequence numbers. One with a pending delete (phase 1 of a delete that
/// never finished, its block lost) was rolled forward at a later open onto
/// the record at the same offset of the new block with that sequence
/// number: an acknowledged object was deleted (found by
/// `random_crashes_interval`, seed 16348403579607322031).
#[test]
fn a_stale_pending_delete_does_not_hit_a_new_block() {
    let cfg = config(8, 256, NO_TIMER);
    let room = 256 - BLOCK_HEADER_LEN;
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    // A spanning object (blocks 1..=3) and a small one (block 4), none of
    // them synced; the delete of the first gets through phase 1 (its entry,
    // naming offset 32 of block 1, is synced) and fails at the flag.
    let (s, _) = b.insert(&store, 3 * room - RECORD_HEADER_LEN - 5);
    let (t, _) = b.insert(&store, 20);
    sim.data.fail_after_writes(Some(0));
    assert!(store.delete_by_time(s).is_err());
    let (sim1, s1) = reopen(&sim.durable(), NO_TIMER);
    b.verify(&s1, &[], &[s, t]);
    drop(store);
    // The next session's first block is block 1 again; its first record
    // is at offset 32.
    let (a, ha) = b.insert(&s1, 28);
    assert_eq!((ha.block_num, ha.offset), (0, 32));
    let (c, _) = b.insert(&s1, 9);
    s1.sync().unwrap();
    let cut = sim1.durable();
    drop(s1);
    let (_, s2) = reopen(&cut, NO_TIMER);
    b.verify(&s2, &[a, c], &[s, t]);
}

/// Regression: a block a crashed session wrote beyond its recovered head is
/// dead, kept out by the session rule (a block at or after `session_start`
/// must carry the current session). Once a later session's head passed it
/// without overwriting it (its write lost, a higher block found by reading
/// every header), the next open moved `session_start` past it, the rule let
/// it in again, and a clean close and reopen brought its objects back
/// (found by `random_crashes_interval`, seed 10991611686767355194).
#[test]
fn a_dead_block_of_a_crashed_session_stays_dead() {
    let cfg = config(4, 128, NO_TIMER);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    // Session 1: blocks 1 and 2 synced; 3 and 4 written, not synced. After
    // the cut, 3 is lost and 4 is there: dead, beyond the head (2).
    for _ in 0..4 {
        b.insert(&store, 30);
    }
    store.sync().unwrap();
    let dead: Vec<i64> = (0..5).map(|_| b.insert(&store, 30).0).collect();
    let [live, ..] = sim.live();
    let [mut data, index, meta] = sim.durable();
    let r = at(&cfg, 3, 0)..at(&cfg, 4, 0);
    data[r.clone()].copy_from_slice(&live[r]);
    drop(store);
    let (sim1, s1) = reopen(&[data, index, meta], NO_TIMER);
    b.verify(&s1, &[], &dead);
    // Session 2: block 3 synced, then blocks 4..=7 written (8 in memory),
    // their entries on disk (D = 3). After the cut, 5, 6 and 7 are there,
    // 4 is lost: position 3 still holds session 1's dead block 4.
    for _ in 0..2 {
        b.insert(&s1, 30);
    }
    s1.sync().unwrap();
    for _ in 0..9 {
        b.insert(&s1, 30);
    }
    sim1.index.sync().unwrap();
    let [live, ..] = sim1.live();
    let [mut data, index, meta] = sim1.durable();
    for pos in 0..3 {
        let r = at(&cfg, pos, 0)..at(&cfg, pos + 1, 0);
        data[r.clone()].copy_from_slice(&live[r]);
    }
    drop(s1);
    // Block 7 lies where D = 3 was: the open reads every header, the head
    // is 7, block 4 is a hole.
    let (sim2, s2) = reopen(&[data, index, meta], NO_TIMER);
    let shown = b.verify(&s2, &[], &dead);
    assert_eq!(shown.len(), 6, "blocks 5, 6 and 7");
    // A clean close and reopen changes nothing.
    s2.close().unwrap();
    let (_, s3) = reopen(&sim2.durable(), NO_TIMER);
    assert_eq!(b.verify(&s3, &[], &dead), shown);
}

/// Waits until the `never` flusher has written the head block out
/// (`pending` writes in all), which it does once the store has been dirty
/// for one second.
fn wait_for_write_back(sim: &Sim, pending: usize) {
    let start = Instant::now();
    while sim.data.pending_writes() < pending {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the flusher never wrote"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Regression: under `never` the flusher writes the head block out without
/// a sync: first its header and records, a second later only what was
/// appended. When only the second write survived the cut, it landed in the
/// middle of the older block at that position, whose header and trusted
/// index entry were intact: `stats()` counted records no read could find.
#[test]
fn never_write_back_never_lands_without_its_header() {
    let cfg = config(4, 256, Durability::Never);
    let sim = Sim::new(&cfg);
    let store = Store::create_on(sim.media(), cfg).unwrap();
    let mut b = Book::new();
    // Blocks 1..=4, four 40-byte objects each, synced. Block 5 starts over
    // block 1; the entry of block 4 (D = 4) reaches the disk.
    for _ in 0..16 {
        b.insert(&store, 40);
    }
    store.sync().unwrap();
    b.insert(&store, 40);
    sim.index.sync().unwrap();
    let before = sim.data.pending_writes();
    wait_for_write_back(&sim, before + 1);
    b.insert(&store, 40);
    wait_for_write_back(&sim, before + 2);
    // Every subset of the two write-backs, the last torn anywhere.
    let mut rng = Rng::new(17);
    for _ in 0..300 {
        let (_, s) = reopen(&sim.crash(&mut rng), Durability::Never);
        b.verify(&s, &[], &[]);
    }
}
