//! A simulated medium for crash tests: it keeps a *live* image (what reads
//! see) and a *durable* image (what survives a power cut), plus the writes
//! made since the last sync.
//!
//! [`SimMedium::crash_image`] models a power cut the way disks fail: the
//! durable image, plus any subset of the writes since the last sync, with
//! the last applied one torn at an arbitrary byte. Failures can be injected
//! (`fail_after_writes`, `fail_syncs`) to test I/O error paths.
//!
//! Invariant: `durable` only changes in `sync`, and then becomes equal to
//! `live`.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::medium::{check_bounds, IoStats, Medium};

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

    /// The image a power cut leaves now: the durable image plus a random
    /// subset of the writes since the last sync, the last applied one torn
    /// at a random byte (possibly not at all, possibly entirely).
    pub fn crash_image(&self, rng: &mut Rng) -> Vec<u8> {
        let st = self.lock();
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
