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

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// Returns once every completed write is on stable storage.
    fn sync(&self) -> io::Result<()>;
    /// A zero-copy view of the whole medium, when it has one (a memory
    /// map). Callers must not hold the slice across a `write_at` to the
    /// bytes they read; the store guarantees this with its lock.
    fn mapped(&self) -> Option<&[u8]> {
        None
    }
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
pub struct FileMedium {
    file: File,
    len: u64,
    map: Option<memmap2::Mmap>,
    stats: IoStats,
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
            stats: IoStats::default(),
        })
    }

    /// Shares the medium as a trait object.
    pub fn shared(self) -> Arc<dyn Medium> {
        Arc::new(self)
    }
}

/// Reserves the file's blocks. Where the filesystem cannot (some network or
/// FUSE filesystems), the file stays sparse; that is reported nowhere since
/// the store is still correct, only not guaranteed its space.
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsFd;
    if len == 0 {
        return Ok(());
    }
    match nix::fcntl::posix_fallocate(file.as_fd(), 0, len as i64) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(nix::errno::Errno::ENOSPC) => Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("not enough free space to allocate {len} bytes"),
        )),
        Err(e) => Err(io::Error::from(e)),
    }
}

impl Medium for FileMedium {
    fn len(&self) -> u64 {
        self.len
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
        self.file.sync_data()
    }

    fn mapped(&self) -> Option<&[u8]> {
        self.map.as_deref()
    }

    fn stats(&self) -> &IoStats {
        &self.stats
    }
}
