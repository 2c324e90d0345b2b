//! A simulated medium for crash tests: it keeps a *live* image (what reads
//! see, the page cache), a *durable* image (what is on stable storage) and
//! the writes made since the last sync.
//!
//! [`SimMedium::crash_image_with`] builds the image a crash leaves, under a
//! [`CrashModel`]:
//!
//! - [`CrashModel::Program`]: a crash of the program (`kill -9`, an abort,
//!   the OOM killer). The page cache survives it, so the image is the live
//!   one: every completed write is there, synced or not.
//! - [`CrashModel::Sectors`]: a power cut on a disk that writes 512-byte
//!   sectors atomically but in any order. Each write since the last sync,
//!   independently, is not applied, applied whole, or applied in any subset
//!   of the sectors it covers.
//! - [`CrashModel::Pages`]: a power cut on flash (SD card, eMMC) that can
//!   garble the page it is programming. As `Sectors`, and each write may
//!   instead leave some of the aligned 4 KiB pages it touches garbled: every
//!   byte of the page random (neither old nor new), bytes of the page that
//!   an earlier sync made durable included.
//! - [`CrashModel::PrefixTear`]: the model of the first crash tests, kept for
//!   the scenarios written against it: any subset of the writes since the
//!   last sync, the last applied one cut short after an arbitrary byte.
//!
//! The sector models write back what the page cache holds: a sector applied
//! from a write holds the live bytes of that sector just after the write,
//! so the bytes of the sector the write did not cover come from the writes
//! before it (a write not aligned to sectors covers partial sectors at its
//! ends, and those are written whole, as a kernel writes them). A sector
//! never holds part of one version and part of another, except through a
//! garbled page. When writes since the sync overlap, each sector ends with
//! the latest version applied to it, or its durable bytes if none was.
//!
//! Failures can be injected (`fail_after_writes`, `fail_syncs`) to test I/O
//! error paths.
//!
//! Invariant: `durable` only changes in `sync`, and then becomes equal to
//! `live`; `live` is `durable` with the pending writes applied in order.

use std::collections::BTreeSet;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use super::medium::{check_bounds, IoStats, Medium};

/// The unit a disk writes atomically (when the page is not garbled).
pub const SECTOR_LEN: usize = 512;
/// The unit flash programs, and garbles when the power goes meanwhile.
pub const PAGE_LEN: usize = 4096;

/// What a crash leaves on a [`SimMedium`] (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashModel {
    /// The live image: a crash of the program, not of the machine.
    Program,
    /// Any subset of the 512-byte sectors of each write since the sync.
    Sectors,
    /// As `Sectors`, or the 4 KiB pages around a write garbled.
    Pages,
    /// A subset of the writes since the sync, the last one torn at a byte.
    PrefixTear,
}

impl CrashModel {
    /// Every model, for tests that run them all.
    pub const ALL: [CrashModel; 4] = [
        CrashModel::Program,
        CrashModel::Sectors,
        CrashModel::Pages,
        CrashModel::PrefixTear,
    ];

    /// A short name, for test output.
    pub fn name(self) -> &'static str {
        match self {
            CrashModel::Program => "program crash",
            CrashModel::Sectors => "sector subsets",
            CrashModel::Pages => "garbled pages",
            CrashModel::PrefixTear => "prefix tear",
        }
    }

    /// True for the models of a power cut (the page cache is lost).
    pub fn is_power_cut(self) -> bool {
        self != CrashModel::Program
    }
}

/// What becomes of one write since the last sync in a sector model.
enum Fate {
    Lost,
    Whole,
    SomeSectors,
    /// Some of its pages garbled, the rest of its sectors as `SomeSectors`.
    Garbled,
}

/// The aligned `unit`-sized pieces that bytes `off..off + len` touch, as
/// byte ranges clipped to a medium of `size` bytes.
fn units(off: usize, len: usize, unit: usize, size: usize) -> impl Iterator<Item = Range<usize>> {
    let first = off / unit;
    let end = if len == 0 {
        first
    } else {
        (off + len).div_ceil(unit)
    };
    (first..end).map(move |u| u * unit..((u + 1) * unit).min(size))
}

/// A small deterministic random generator (SplitMix64), so that a crash
/// test prints a seed that replays it exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

#[derive(Debug, Default)]
struct SimState {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
    writes_left: Option<u64>,
    fail_syncs: bool,
}

/// A simulated fixed-size medium. Cloning shares the same disk.
#[derive(Clone)]
pub struct SimMedium {
    state: Arc<Mutex<SimState>>,
    stats: Arc<IoStats>,
}

impl SimMedium {
    /// A zero-filled medium of `len` bytes.
    pub fn new(len: usize) -> SimMedium {
        Self::from_image(vec![0; len])
    }

    /// A medium whose live and durable contents are `image`.
    pub fn from_image(image: Vec<u8>) -> SimMedium {
        SimMedium {
            state: Arc::new(Mutex::new(SimState {
                durable: image.clone(),
                live: image,
                ..SimState::default()
            })),
            stats: Arc::new(IoStats::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the images half
        // updated in a way that matters to a test; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What reads see now.
    pub fn live_image(&self) -> Vec<u8> {
        self.lock().live.clone()
    }

    /// What survived the last sync.
    pub fn durable_image(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }

    /// Number of writes made since the last sync.
    pub fn pending_writes(&self) -> usize {
        self.lock().pending.len()
    }

    /// After `n` more successful writes, every write fails with an I/O
    /// error (`None` to stop failing).
    pub fn fail_after_writes(&self, n: Option<u64>) {
        self.lock().writes_left = n;
    }

    /// Makes every sync fail (or succeed again).
    pub fn fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    /// The image a power cut leaves now under [`CrashModel::PrefixTear`]:
    /// the durable image plus a random subset of the writes since the last
    /// sync, the last applied one torn at a random byte (possibly not at
    /// all, possibly entirely).
    pub fn crash_image(&self, rng: &mut Rng) -> Vec<u8> {
        self.crash_image_with(CrashModel::PrefixTear, rng)
    }

    /// The image a crash leaves now under `model` (see the module docs).
    /// The medium itself is unchanged.
    pub fn crash_image_with(&self, model: CrashModel, rng: &mut Rng) -> Vec<u8> {
        let st = self.lock();
        match model {
            CrashModel::Program => st.live.clone(),
            CrashModel::PrefixTear => prefix_tear(&st, rng),
            CrashModel::Sectors => torn_sectors(&st, false, rng),
            CrashModel::Pages => torn_sectors(&st, true, rng),
        }
    }
}

fn prefix_tear(st: &SimState, rng: &mut Rng) -> Vec<u8> {
    let mut img = st.durable.clone();
    let chosen: Vec<&(u64, Vec<u8>)> = st.pending.iter().filter(|_| rng.chance(1, 2)).collect();
    for (i, (off, data)) in chosen.iter().enumerate() {
        let o = *off as usize;
        let n = if i + 1 == chosen.len() {
            rng.below(data.len() as u64 + 1) as usize
        } else {
            data.len()
        };
        img[o..o + n].copy_from_slice(&data[..n]);
    }
    img
}

/// [`CrashModel::Sectors`], and with `pages` [`CrashModel::Pages`].
fn torn_sectors(st: &SimState, pages: bool, rng: &mut Rng) -> Vec<u8> {
    let size = st.durable.len();
    let mut img = st.durable.clone();
    // The page cache as it stood after each write in turn: a sector
    // written back from it holds those bytes.
    let mut cache = st.durable.clone();
    let mut garbled: BTreeSet<usize> = BTreeSet::new();
    for (off, data) in &st.pending {
        let o = *off as usize;
        cache[o..o + data.len()].copy_from_slice(data);
        let fate = match rng.below(8) {
            0 | 1 => Fate::Lost,
            2 | 3 => Fate::Whole,
            7 if pages => Fate::Garbled,
            _ => Fate::SomeSectors,
        };
        if let Fate::Garbled = fate {
            let touched: Vec<Range<usize>> = units(o, data.len(), PAGE_LEN, size).collect();
            if !touched.is_empty() {
                let forced = rng.below(touched.len() as u64) as usize;
                for (i, p) in touched.iter().enumerate() {
                    if i == forced || rng.chance(1, 2) {
                        garbled.insert(p.start);
                    }
                }
            }
        }
        for s in units(o, data.len(), SECTOR_LEN, size) {
            let applied = match fate {
                Fate::Lost => false,
                Fate::Whole => true,
                Fate::SomeSectors | Fate::Garbled => rng.chance(1, 2),
            };
            if applied {
                img[s.clone()].copy_from_slice(&cache[s]);
            }
        }
    }
    // A garbled page is the last thing that happened to it: whatever
    // reached it before, it now holds neither old nor new bytes.
    for start in garbled {
        let end = (start + PAGE_LEN).min(size);
        rng.fill(&mut img[start..end]);
    }
    img
}

impl Medium for SimMedium {
    fn len(&self) -> u64 {
        self.lock().live.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.lock();
        check_bounds(offset, buf.len(), st.live.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&st.live[o..o + buf.len()]);
        self.stats.count_read(buf.len());
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        check_bounds(offset, buf.len(), st.live.len() as u64)?;
        match st.writes_left {
            Some(0) => return Err(io::Error::other("simulated write failure")),
            Some(n) => st.writes_left = Some(n - 1),
            None => {}
        }
        let o = offset as usize;
        st.live[o..o + buf.len()].copy_from_slice(buf);
        st.pending.push((offset, buf.to_vec()));
        self.stats.count_write(buf.len());
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.lock();
        if st.fail_syncs {
            return Err(io::Error::other("simulated sync failure"));
        }
        st.durable = st.live.clone();
        st.pending.clear();
        self.stats.count_sync();
        Ok(())
    }

    fn stats(&self) -> &IoStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_changes_only_on_sync() {
        let m = SimMedium::new(16);
        m.write_at(0, b"abcd").unwrap();
        assert_eq!(&m.live_image()[..4], b"abcd");
        assert_eq!(&m.durable_image()[..4], &[0; 4]);
        m.sync().unwrap();
        assert_eq!(&m.durable_image()[..4], b"abcd");
        assert_eq!(m.pending_writes(), 0);
    }

    #[test]
    fn crash_applies_a_subset_and_tears_the_last() {
        let m = SimMedium::new(64);
        for i in 0..8u8 {
            m.write_at(i as u64 * 8, &[i + 1; 8]).unwrap();
        }
        let mut seen_partial = false;
        let mut rng = Rng::new(1);
        for _ in 0..200 {
            let img = m.crash_image(&mut rng);
            for chunk in img.chunks(8) {
                let set = chunk.iter().filter(|&&b| b != 0).count();
                if set != 0 && set != 8 {
                    seen_partial = true;
                    // A torn write is a prefix of the write.
                    assert!(chunk[..set].iter().all(|&b| b != 0));
                }
            }
        }
        assert!(seen_partial);
    }

    #[test]
    fn a_program_crash_keeps_every_write_synced_or_not() {
        let m = SimMedium::new(2 * PAGE_LEN);
        m.write_at(10, b"synced").unwrap();
        m.sync().unwrap();
        m.write_at(5000, b"unsynced").unwrap();
        m.write_at(12, b"over").unwrap();
        let img = m.crash_image_with(CrashModel::Program, &mut Rng::new(3));
        assert_eq!(img, m.live_image());
        assert_ne!(img, m.durable_image());
        assert_eq!(m.pending_writes(), 2, "taking an image changes nothing");
    }

    /// A medium of four pages whose durable bytes are all 0xAA, with
    /// unsynced writes that overlap, straddle sectors and pages, and leave
    /// sectors and the last page untouched; and, for each sector, every
    /// version a crash may leave there: its durable bytes and the live
    /// bytes after each write that touched it.
    fn overlapping_writes() -> (SimMedium, Vec<Vec<Vec<u8>>>) {
        let size = 4 * PAGE_LEN;
        let m = SimMedium::from_image(vec![0xAA; size]);
        let writes: [(usize, usize, u8); 6] = [
            (100, 1000, 1),            // partial sectors at both ends
            (512, 512, 2),             // one whole sector, over the first
            (700, 30, 3),              // inside one sector, over both
            (PAGE_LEN - 300, 600, 4),  // across a page boundary
            (2 * PAGE_LEN + 8, 16, 5), // alone in the last page
            (1030, 0, 6),              // empty
        ];
        let sectors = size / SECTOR_LEN;
        let mut versions: Vec<Vec<Vec<u8>>> = (0..sectors)
            .map(|s| vec![m.live_image()[s * SECTOR_LEN..(s + 1) * SECTOR_LEN].to_vec()])
            .collect();
        for (off, len, byte) in writes {
            m.write_at(off as u64, &vec![byte; len]).unwrap();
            let live = m.live_image();
            for r in units(off, len, SECTOR_LEN, size) {
                versions[r.start / SECTOR_LEN].push(live[r].to_vec());
            }
        }
        (m, versions)
    }

    #[test]
    fn sector_subsets_leave_each_sector_whole_in_one_of_its_versions() {
        let (m, versions) = overlapping_writes();
        let (durable, live) = (m.durable_image(), m.live_image());
        let (mut none, mut all, mut mixed, mut older) = (false, false, false, false);
        let mut rng = Rng::new(7);
        for _ in 0..2000 {
            let img = m.crash_image_with(CrashModel::Sectors, &mut rng);
            for (s, v) in versions.iter().enumerate() {
                let got = &img[s * SECTOR_LEN..(s + 1) * SECTOR_LEN];
                let k = v.iter().rposition(|x| x == got);
                assert!(k.is_some(), "sector {s} holds no version of itself");
                // An older write's version, though a later one touched it.
                older |= v.len() > 2 && k.is_some_and(|k| k > 0 && k + 1 < v.len());
            }
            none |= img == durable;
            all |= img == live;
            // The first write applied in part: sector 0 new, sector 1 old.
            mixed |= img[200] == 1 && img[1023] == 0xAA;
        }
        assert!(
            none && all && mixed && older,
            "{none} {all} {mixed} {older}"
        );
    }

    #[test]
    fn garbled_pages_hold_neither_old_nor_new_bytes() {
        let (m, versions) = overlapping_writes();
        let (durable, live) = (m.durable_image(), m.live_image());
        let untouched = |o: usize| durable[o] == 0xAA && live[o] == 0xAA;
        let mut garbled = [false; 4];
        let mut rng = Rng::new(11);
        for _ in 0..2000 {
            let img = m.crash_image_with(CrashModel::Pages, &mut rng);
            for (p, seen) in garbled.iter_mut().enumerate() {
                let r = p * PAGE_LEN..(p + 1) * PAGE_LEN;
                let whole_sectors = r.clone().step_by(SECTOR_LEN).all(|o| {
                    let v = &versions[o / SECTOR_LEN];
                    v.iter().any(|v| v[..] == img[o..o + SECTOR_LEN])
                });
                if whole_sectors {
                    continue;
                }
                *seen = true;
                assert_ne!(img[r.clone()], durable[r.clone()]);
                assert_ne!(img[r.clone()], live[r.clone()]);
                // Bytes of the page that no write since the sync touched
                // are garbled too.
                let synced: Vec<usize> = r.filter(|&o| untouched(o)).collect();
                let kept = synced.iter().filter(|&&o| img[o] == 0xAA).count();
                assert!(kept * 10 < synced.len(), "page {p}: {kept} bytes kept");
            }
        }
        assert_eq!(garbled, [true, true, true, false], "page 3 was not written");
        // Without pages, nothing is ever garbled.
        for _ in 0..500 {
            let img = m.crash_image_with(CrashModel::Sectors, &mut rng);
            for (s, v) in versions.iter().enumerate() {
                let got = &img[s * SECTOR_LEN..(s + 1) * SECTOR_LEN];
                assert!(v.iter().any(|x| x == got));
            }
        }
    }

    #[test]
    fn a_page_is_clipped_to_a_small_medium() {
        let m = SimMedium::from_image(vec![0xAA; 1024]);
        m.write_at(600, b"x").unwrap();
        let mut rng = Rng::new(5);
        let mut garbled = false;
        for _ in 0..200 {
            let img = m.crash_image_with(CrashModel::Pages, &mut rng);
            assert_eq!(img.len(), 1024);
            // The first sector shares the page with the write.
            garbled |= img[..512].iter().filter(|&&b| b != 0xAA).count() > 256;
        }
        assert!(garbled);
    }

    #[test]
    fn a_seed_replays_the_same_image() {
        let (m, _) = overlapping_writes();
        for model in CrashModel::ALL {
            let a = m.crash_image_with(model, &mut Rng::new(42));
            let b = m.crash_image_with(model, &mut Rng::new(42));
            assert!(a == b, "{}", model.name());
        }
    }

    #[test]
    fn injected_failures() {
        let m = SimMedium::new(16);
        m.fail_after_writes(Some(1));
        m.write_at(0, b"a").unwrap();
        assert!(m.write_at(1, b"b").is_err());
        m.fail_syncs(true);
        assert!(m.sync().is_err());
        assert!(m.write_at(15, b"xy").is_err(), "past the end");
    }
}
