//! The I/O boundary of the engine: a [`Medium`] is one fixed-size file
//! (`read_at`, `write_at`, `sync`, `len`), and [`FileMedium`] is the real one.
//!
//! Every byte the engine writes and every sync it asks for goes through this
//! trait, which is where [`IoStats`] counts them (write amplification and
//! fsyncs per object in `make bench` come from here), and where the crash
//! tests swap in the simulated medium of [`crate::store::sim`].
//!
//! Invariant: a medium never changes length. Files are allocated in full
//! when a store is created; a write past the end is an error, not growth.
//!
//! A medium may also offer a writable shared mapping of one small region
//! ([`Medium::map_region`], [`Medium::write_mapped`]): the engine mirrors
//! every acknowledged append into the commit area through it, so that the
//! bytes are in the kernel's page cache (and survive a crash of the
//! program) without a system call per append. Bytes written that way are
//! counted in [`IoStats`] when they reach the device, at the next sync.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A fixed-size, randomly addressable byte store with an explicit durability
/// barrier.
pub trait Medium: Send + Sync + 'static {
    /// Size in bytes; constant for the life of the medium.
    fn len(&self) -> u64;
    /// True for a zero-length medium.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`. Reading past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `buf` at `offset`. Writing past the end is an error.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Returns once every completed write is on stable storage, including
    /// writes made through [`Medium::write_mapped`].
    fn sync(&self) -> io::Result<()>;
    /// Prepares [`Medium::write_mapped`] for `len` bytes at `offset`. The
    /// default has nothing to prepare.
    fn map_region(&self, offset: u64, len: u64) -> io::Result<()> {
        check_bounds(offset, len as usize, self.len())
    }
    /// Writes `buf` at `offset`, like [`Medium::write_at`], through the
    /// mapping made by [`Medium::map_region`] when it covers the range: a
    /// copy into the page cache, no system call. The default is `write_at`
    /// (the simulated medium keeps tracking every write that way).
    fn write_mapped(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_at(offset, buf)
    }
    /// A zero-copy view of the whole medium, when it has one (a memory
    /// map). Callers must not hold the slice across a `write_at` to the
    /// bytes they read; the store guarantees this with its lock.
    fn mapped(&self) -> Option<&[u8]> {
        None
    }
    /// Lets go of this process's mapped pages of the medium, if it is
    /// memory-mapped: the next read faults them in again from the page
    /// cache, which keeps them. A long sequential reader (an export) calls
    /// it so that its RSS does not grow with the bytes it read. The
    /// default has nothing mapped.
    fn release_mapped(&self) {}
    /// Counters of the I/O done through this medium.
    fn stats(&self) -> &IoStats;
}

/// I/O counters of one medium.
#[derive(Debug, Default)]
pub struct IoStats {
    pub bytes_written: AtomicU64,
    pub writes: AtomicU64,
    pub syncs: AtomicU64,
    pub bytes_read: AtomicU64,
}

/// A copy of [`IoStats`] at one moment, summed over a store's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSnapshot {
    pub bytes_written: u64,
    pub writes: u64,
    pub syncs: u64,
    pub bytes_read: u64,
}

impl IoStats {
    pub fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        }
    }

    pub fn count_write(&self, n: usize) {
        self.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_sync(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl std::ops::Add for IoSnapshot {
    type Output = IoSnapshot;
    fn add(self, o: IoSnapshot) -> IoSnapshot {
        IoSnapshot {
            bytes_written: self.bytes_written + o.bytes_written,
            writes: self.writes + o.writes,
            syncs: self.syncs + o.syncs,
            bytes_read: self.bytes_read + o.bytes_read,
        }
    }
}

impl std::ops::Sub for IoSnapshot {
    type Output = IoSnapshot;
    fn sub(self, o: IoSnapshot) -> IoSnapshot {
        IoSnapshot {
            bytes_written: self.bytes_written - o.bytes_written,
            writes: self.writes - o.writes,
            syncs: self.syncs - o.syncs,
            bytes_read: self.bytes_read - o.bytes_read,
        }
    }
}

fn out_of_bounds(offset: u64, n: usize, len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("access of {n} bytes at offset {offset} is past the end ({len} bytes)"),
    )
}

/// Checks that `n` bytes at `offset` lie within a medium of `len` bytes.
pub fn check_bounds(offset: u64, n: usize, len: u64) -> io::Result<()> {
    match offset.checked_add(n as u64) {
        Some(end) if end <= len => Ok(()),
        _ => Err(out_of_bounds(offset, n, len)),
    }
}

/// A file on disk, optionally memory-mapped for reads.
///
/// Writes use `pwrite`, syncs use `fdatasync` (the file size never changes,
/// so no metadata needs to reach the disk). Reads come from a read-only
/// shared mapping when one could be made (on 32-bit targets a large data
/// file may not fit the address space; reads then fall back to `pread`).
/// [`Medium::map_region`] adds a writable shared mapping of one small
/// region (the commit area), never of the whole file.
pub struct FileMedium {
    file: File,
    len: u64,
    map: Option<memmap2::Mmap>,
    rw: OnceLock<MappedRegion>,
    stats: IoStats,
}

/// Bytes counted per page dirtied through a mapping: the kernel writes
/// back whole pages.
const MAPPED_PAGE: u64 = 4096;

/// A writable shared mapping of `len` bytes at file offset `offset`.
struct MappedRegion {
    map: memmap2::MmapRaw,
    offset: u64,
    len: u64,
    /// Pages (of [`MAPPED_PAGE`] bytes, from `offset`) written through the
    /// mapping since the last sync: bit `i` is page `i`; pages past the
    /// 64th share the last bit.
    dirty: AtomicU64,
}

impl FileMedium {
    /// Creates a new file of exactly `len` bytes, allocating its blocks now
    /// so that later writes cannot fail for lack of space (fixed footprint).
    pub fn create(path: &Path, len: u64) -> io::Result<FileMedium> {
        use super::fs::Fs;
        super::fs::RealFs.create_file(path, len)?;
        Self::open(path, false)
    }

    /// Opens an existing file; its current length is its fixed size.
    pub fn open(path: &Path, map: bool) -> io::Result<FileMedium> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        Self::from_file(file, len, map)
    }

    fn from_file(file: File, len: u64, map: bool) -> io::Result<FileMedium> {
        let map = if map && len > 0 && usize::try_from(len).is_ok() {
            // SAFETY: the mapping is read-only and shared. The store is the
            // only writer of its files (it holds them for its lifetime) and
            // never writes bytes that a reader holds a slice of: writes
            // happen under the store's write lock, reads under its read lock.
            unsafe { memmap2::MmapOptions::new().len(len as usize).map(&file) }.ok()
        } else {
            None
        };
        Ok(FileMedium {
            file,
            len,
            map,
            rw: OnceLock::new(),
            stats: IoStats::default(),
        })
    }

    /// Shares the medium as a trait object.
    pub fn shared(self) -> Arc<dyn Medium> {
        Arc::new(self)
    }
}

impl Medium for FileMedium {
    fn len(&self) -> u64 {
        self.len
    }

    fn release_mapped(&self) {
        if let Some(map) = &self.map {
            // SAFETY: a read-only shared mapping of a file: MADV_DONTNEED
            // only drops this process's page table entries, and the next
            // access reads the same bytes from the page cache (there is no
            // private copy to lose), also under a slice a reader holds.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_bounds(offset, buf.len(), self.len)?;
        self.stats.count_read(buf.len());
        if let Some(map) = &self.map {
            let o = offset as usize;
            buf.copy_from_slice(&map[o..o + buf.len()]);
            return Ok(());
        }
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        check_bounds(offset, buf.len(), self.len)?;
        self.stats.count_write(buf.len());
        self.file.write_all_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.stats.count_sync();
        if let Some(rw) = self.rw.get() {
            // fdatasync writes back the pages dirtied through the mapping
            // too: this is where those bytes reach the device.
            let pages = rw.dirty.swap(0, Ordering::AcqRel).count_ones() as u64;
            if pages > 0 {
                let n = (pages * MAPPED_PAGE).min(rw.len);
                self.stats.bytes_written.fetch_add(n, Ordering::Relaxed);
                self.stats.writes.fetch_add(pages, Ordering::Relaxed);
            }
        }
        self.file.sync_data()
    }

    fn map_region(&self, offset: u64, len: u64) -> io::Result<()> {
        check_bounds(offset, len as usize, self.len)?;
        if self.rw.get().is_some() || len == 0 {
            return Ok(());
        }
        let size = usize::try_from(len).map_err(|_| out_of_bounds(offset, usize::MAX, self.len))?;
        // A shared mapping of a file of fixed size that the store holds (and
        // locks) for its lifetime, so it is never truncated under the
        // mapping. memmap2 aligns the offset down to the system page size
        // itself. Writes through it happen only in `write_mapped`, which the
        // engine calls under its state lock.
        let map = memmap2::MmapOptions::new()
            .offset(offset)
            .len(size)
            .map_raw(&self.file)?;
        let _ = self.rw.set(MappedRegion {
            map,
            offset,
            len,
            dirty: AtomicU64::new(0),
        });
        Ok(())
    }

    fn write_mapped(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let Some(rw) = self.rw.get() else {
            return self.write_at(offset, buf);
        };
        let end = offset.checked_add(buf.len() as u64);
        if offset < rw.offset || end.is_none_or(|e| e > rw.offset + rw.len) {
            return self.write_at(offset, buf);
        }
        if buf.is_empty() {
            return Ok(());
        }
        let at = (offset - rw.offset) as usize;
        // SAFETY: `at + buf.len() <= rw.len` (checked above), the mapping
        // is writable and lives as long as `self`, and `buf` cannot overlap
        // it (it is the engine's own memory).
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), rw.map.as_mut_ptr().add(at), buf.len());
        }
        let first = (at as u64 / MAPPED_PAGE).min(63);
        let last = ((at + buf.len() - 1) as u64 / MAPPED_PAGE).min(63);
        let bits = if last == 63 {
            !0u64 << first
        } else {
            ((1u64 << (last + 1)) - 1) & (!0u64 << first)
        };
        rw.dirty.fetch_or(bits, Ordering::AcqRel);
        Ok(())
    }

    fn mapped(&self) -> Option<&[u8]> {
        self.map.as_deref()
    }

    fn stats(&self) -> &IoStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident bytes of the mapping that starts at `addr`, from
    /// `/proc/self/smaps` (this mapping only, whatever other tests map).
    /// Under a user-mode emulator (`TSSTORE_TEST_RUNNER`, `make
    /// cross-test`) smaps is the emulator's, at host addresses: `None`.
    fn rss_of(addr: usize) -> Option<u64> {
        if std::env::var_os("TSSTORE_TEST_RUNNER").is_some() {
            return None;
        }
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        while let Some(l) = lines.next() {
            let start = l.split('-').next().unwrap_or("");
            if usize::from_str_radix(start, 16).ok() == Some(addr) {
                for l in lines.by_ref() {
                    if let Some(v) = l.strip_prefix("Rss:") {
                        return Some(
                            v.trim()
                                .trim_end_matches("kB")
                                .trim()
                                .parse::<u64>()
                                .unwrap()
                                * 1024,
                        );
                    }
                }
            }
        }
        panic!("no mapping at {addr:#x}");
    }

    /// The export's memory fix: after `release_mapped`, the pages read
    /// through the mapping no longer count in the process's RSS, and reads
    /// still see the same bytes.
    #[test]
    fn release_mapped_drops_the_resident_pages_and_keeps_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let len = 8u64 << 20;
        drop(FileMedium::create(&path, len).unwrap());
        let m = FileMedium::open(&path, true).unwrap();
        m.write_at(4096, b"kept").unwrap();
        let addr = m.map.as_ref().unwrap().as_ptr() as usize;
        let mut buf = vec![0u8; 1 << 20];
        for off in (0..len).step_by(buf.len()) {
            m.read_at(off, &mut buf).unwrap();
        }
        let before = rss_of(addr);
        m.release_mapped();
        match (before, rss_of(addr)) {
            (Some(before), Some(after)) => {
                assert!(before >= len / 2, "resident before: {before}");
                assert!(after < len / 8, "resident after: {after}");
            }
            _ => eprintln!("under an emulator: resident pages not checked, only the bytes"),
        }
        let mut four = [0u8; 4];
        m.read_at(4096, &mut four).unwrap();
        assert_eq!(&four, b"kept");
    }
}
