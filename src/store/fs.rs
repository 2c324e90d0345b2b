//! The file-system seam: every directory and small-file operation that
//! creates, deletes or rewrites a store's files (outside the engine's block
//! I/O, which goes through [`Medium`](super::Medium)) is a call on an [`Fs`],
//! so that the cut tests can swap in [`SimFs`](super::simfs::SimFs) and stop
//! the machine between any two calls. The real one reserves a new file's
//! blocks when it creates it (`allocate_range`, also used to extend a data
//! file), so that a store's footprint is fixed from its creation on.
//!
//! It also owns the sequences built from those calls whose atomicity across a
//! power cut the rest of the crate relies on (FORMAT.md, "File-system
//! operations and power cuts"):
//! - [`replace`]: a small file replaced whole (temp file, fsync, rename,
//!   directory fsync): after a cut the old or the new file is there;
//! - [`remove_dir_all`]: a directory removed call by call, so a cut can land
//!   inside it (callers rename the directory out of sight first);
//! - staging names: a store is built or torn down under a name that starts
//!   with `.` (`.staging-<name>-<hex>`, `.deleting-<name>-<hex>`), which is
//!   never a valid store name, so a leftover is never listed as a store;
//!   [`sweep`] removes leftovers nobody holds a lock on.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    /// A directory (symbolic links are not followed: a link is a file here).
    pub dir: bool,
}

/// The file-system calls of create, delete and small-file writes.
///
/// A call's effect is visible at once; what survives a power cut is only
/// what a later `sync_file` (contents) or `sync_dir` of the parent
/// (directory entries) made durable.
pub trait Fs: Send + Sync {
    /// Makes one directory; its parent must exist.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes a new file of exactly `len` zero bytes, its blocks allocated
    /// now; fails if the path exists.
    fn create_file(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Creates or truncates `path` (new files get `mode`) and writes `bytes`.
    fn write_file(&self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()>;
    /// Writes `bytes` at `offset` of an existing file.
    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Makes a file's contents and size durable.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Renames within one directory, replacing a file or an empty directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of a directory (creates, renames, removes) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn read_dir(&self, path: &Path) -> io::Result<Vec<Entry>>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl Fs for RealFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn create_file(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(len)?;
        allocate(&file, len)
    }

    fn write_file(&self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?
            .write_all(bytes)
    }

    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all_at(bytes, offset)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        // fsync writes back the inode's dirty pages whichever descriptor
        // wrote them.
        OpenOptions::new().write(true).open(path)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<Entry>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            v.push(Entry {
                name: e.file_name(),
                dir: e.file_type()?.is_dir(),
            });
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
}

/// Reserves the file's blocks. Where the filesystem cannot (some network or
/// FUSE filesystems), the file stays sparse; that is reported nowhere since
/// the store is still correct, only not guaranteed its space.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    allocate_range(file, 0, len)
}

/// Reserves the file's blocks from `from` to `to` (see `allocate`).
pub(crate) fn allocate_range(file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::fd::AsFd;
    if to <= from {
        return Ok(());
    }
    match nix::fcntl::posix_fallocate(file.as_fd(), from as i64, (to - from) as i64) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(nix::errno::Errno::ENOSPC) => Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("not enough free space to allocate {} bytes", to - from),
        )),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Replaces `dir/name` with `bytes` so that a power cut leaves the old file
/// or the new one, never a torn or missing one: the new contents go to
/// `dir/name.tmp` and are synced before the rename, and the directory is
/// synced after it. A new file gets `mode`; a stale temp file (which would
/// keep its old mode) is removed first.
pub fn replace(fs: &dyn Fs, dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    match fs.remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = fs
        .write_file(&tmp, bytes, mode)
        .and_then(|()| fs.sync_file(&tmp));
    if let Err(e) = written {
        // A stray temp file is harmless (never read), only untidy.
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    fs.rename(&tmp, &dir.join(name))?;
    fs.sync_dir(dir)
}

/// Removes `path` and everything under it, one call per entry.
pub fn remove_dir_all(fs: &dyn Fs, path: &Path) -> io::Result<()> {
    for e in fs.read_dir(path)? {
        let p = path.join(&e.name);
        if e.dir {
            remove_dir_all(fs, &p)?;
        } else {
            fs.remove_file(&p)?;
        }
    }
    fs.remove_dir(path)
}

/// Prefix of a store being built (see [`staging_dir`]).
pub const STAGING_PREFIX: &str = ".staging-";
/// Prefix of a store being removed.
pub const DELETING_PREFIX: &str = ".deleting-";

/// A fresh name in `base` for store `name` while `prefix` (one of the two
/// prefixes above) applies: `<prefix><name>-<16 hex digits>`.
pub fn staging_dir(base: &Path, prefix: &str, name: &str) -> PathBuf {
    base.join(format!("{prefix}{name}-{:016x}", random()))
}

/// 64 bits that differ between calls and processes; only uniqueness
/// matters, the name guards nothing.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// True if `entry` is a leftover of a create or delete: of store `name`
/// only, or of any store when `name` is `None`.
fn is_leftover(entry: &str, name: Option<&str>) -> bool {
    [STAGING_PREFIX, DELETING_PREFIX].iter().any(|p| {
        let Some(rest) = entry.strip_prefix(p) else {
            return false;
        };
        match name {
            None => true,
            // The suffix after the name is the hex number, without '-':
            // `.staging-a-` must not claim `.staging-a-b-<hex>` (store `a-b`).
            Some(n) => rest
                .strip_prefix(n)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|hex| !hex.contains('-')),
        }
    })
}

/// Holds a staging or deleting directory against [`sweep`] while its owner
/// works in it (an advisory lock on the directory itself).
pub struct DirLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Locks `dir` for [`DirLock`]; `None` if someone else holds it.
pub fn lock_dir(dir: &Path) -> io::Result<Option<DirLock>> {
    match nix::fcntl::Flock::lock(
        File::open(dir)?,
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    ) {
        Ok(l) => Ok(Some(DirLock { _lock: l })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Removes the leftovers of creates and deletes that a crash or power cut
/// interrupted (of store `name` only, or all of them), skipping those whose
/// owner still works in them. Returns how many it removed.
pub fn sweep(fs: &dyn Fs, base: &Path, name: Option<&str>) -> io::Result<usize> {
    let mut removed = 0;
    for e in fs.read_dir(base)? {
        let Some(entry) = e.name.to_str() else {
            continue;
        };
        if !e.dir || !is_leftover(entry, name) {
            continue;
        }
        let path = base.join(entry);
        // Held by its owner, or gone meanwhile (its owner gave up and
        // removed it, or another sweep did): not ours to remove.
        let _held = match lock_dir(&path) {
            Ok(Some(held)) => held,
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !path.is_dir() {
            continue;
        }
        remove_dir_all(fs, &path)?;
        removed += 1;
    }
    if removed > 0 {
        fs.sync_dir(base)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_matched_by_store_name_exactly() {
        assert!(is_leftover(".staging-a-00ff", Some("a")));
        assert!(is_leftover(".deleting-a-00ff", Some("a")));
        assert!(!is_leftover(".staging-a-b-00ff", Some("a")));
        assert!(is_leftover(".staging-a-b-00ff", Some("a-b")));
        assert!(!is_leftover(".staging-ab-00ff", Some("a")));
        assert!(!is_leftover("a", None));
        assert!(!is_leftover(".tsstore-server.lock", None));
        assert!(is_leftover(".staging-a-b-00ff", None));
    }

    #[test]
    fn sweep_skips_a_directory_its_owner_holds() {
        let base = tempfile::tempdir().unwrap();
        let held = staging_dir(base.path(), STAGING_PREFIX, "s");
        let left = staging_dir(base.path(), DELETING_PREFIX, "s");
        std::fs::create_dir(&held).unwrap();
        std::fs::create_dir_all(left.join("sub")).unwrap();
        std::fs::write(left.join("sub/f"), b"x").unwrap();
        std::fs::create_dir(base.path().join("s")).unwrap();
        let _lock = lock_dir(&held).unwrap().unwrap();
        assert_eq!(sweep(&RealFs, base.path(), None).unwrap(), 1);
        assert!(held.is_dir());
        assert!(!left.exists());
        assert!(base.path().join("s").is_dir());
    }

    #[test]
    fn replace_leaves_no_temp_file_and_sets_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.tmp"), b"stale").unwrap();
        replace(&RealFs, dir.path(), "f", b"one", 0o600).unwrap();
        replace(&RealFs, dir.path(), "f", b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"two");
        assert!(!dir.path().join("f.tmp").exists());
        let mode = std::fs::metadata(dir.path().join("f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
