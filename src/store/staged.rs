//! Atomic create and delete of a store's directory (FORMAT.md, "File-system
//! operations and power cuts"): [`Store::create`], [`Store::create_with`],
//! [`Store::delete_store`] and [`delete_store`] all go through here.
//!
//! A store is built whole under `base/.staging-<name>-<hex>` (its three
//! files allocated, its first commit and first meta record written, and
//! everything the caller adds, such as the first key: all through the same
//! [`Fs`]), every file and the staging directory synced, and only then
//! renamed to `base/name` and `base` synced. A store is deleted by
//! renaming it to `base/.deleting-<name>-<hex>` and syncing `base` before
//! anything in it is removed.
//!
//! Invariant: after a power cut at any point, `base/name` is either absent
//! (and the name can be created again) or a complete store; a half-built or
//! half-removed directory only ever exists under a dot name, which is never a
//! store name, and [`sweep`] removes it at the next start or create.

use std::io;
use std::path::{Path, PathBuf};

use super::config::Config;
use super::engine::Store;
use super::error::{Error, Result};
use super::format::{Meta, META_FILE_LEN};
use super::fs::{self, Fs, DELETING_PREFIX, STAGING_PREFIX};
use super::lifecycle::{lock_dir, open_media, validate_name};
use super::recovery::first_commit_writes;
use super::shared::{DATA_FILE, INDEX_FILE, META_FILE};

/// Removes every leftover of an interrupted create or delete in `base`
/// (server start). Returns how many it removed.
pub fn sweep(base: &Path) -> io::Result<usize> {
    fs::sweep(&fs::RealFs, base, None)
}

/// A fresh staging directory for store `name`, locked by this create. A
/// sweep (a server starting on the same data path, or another create of
/// the name) may take the directory between its `mkdir` and its lock, and
/// remove it: then another name is tried. Without this, a `tsstore create`
/// run while a server starts failed with "No such file or directory".
fn stage_locked(fs: &dyn Fs, base: &Path, name: &str) -> Result<(PathBuf, fs::DirLock)> {
    for _ in 0..16 {
        let stage = fs::staging_dir(base, STAGING_PREFIX, name);
        fs.create_dir(&stage).map_err(Error::from)?;
        match fs::lock_dir(&stage) {
            // Still there once locked: no sweep can take it from now on.
            Ok(Some(held)) if stage.is_dir() => return Ok((stage, held)),
            // A sweep holds it, or took it: it removes it.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::from(io::Error::other(
        "staging directories keep being removed by a concurrent sweep",
    )))
}

impl Store {
    /// Creates a store in `base/name`, allocating its files in full. A power
    /// cut leaves no store (the name can be created again) or a whole one
    /// (see [`Store::create_with`]).
    pub fn create(base: &Path, name: &str, config: Config) -> Result<Store> {
        let (s, ()) =
            Store::create_with(&fs::RealFs, base, name, config, |_, _| Ok::<(), Error>(()))?;
        Ok(s)
    }

    /// Creates a store in `base/name` through `fs`, and lets `fill` add
    /// files to it (the first API key, a schema) before it appears under its
    /// name: a power cut leaves no store or one with everything `fill`
    /// wrote. `fill` gets the file system and the directory to write in.
    pub fn create_with<T, E: From<Error>>(
        fs: &dyn Fs,
        base: &Path,
        name: &str,
        config: Config,
        fill: impl FnOnce(&dyn Fs, &Path) -> std::result::Result<T, E>,
    ) -> std::result::Result<(Store, T), E> {
        validate_name(name)?;
        config.validate()?;
        let dir = base.join(name);
        if dir.join(META_FILE).exists() {
            return Err(Error::AlreadyExists { path: dir }.into());
        }
        std::fs::create_dir_all(base).map_err(Error::from)?;
        fs::sweep(fs, base, Some(name)).map_err(Error::from)?;
        let (stage, held) = stage_locked(fs, base, name)?;
        let made = (|| {
            let _held = held;
            build(fs, &stage, &config)?;
            let t = fill(fs, &stage)?;
            publish(fs, &stage, &dir)?;
            Ok(t)
        })();
        let t = match made {
            Ok(t) => t,
            Err(e) => {
                // Best effort: what is left is swept at the next create.
                let _ = fs::remove_dir_all(fs, &stage);
                return Err(e);
            }
        };
        let opened = open_media(&dir).and_then(|m| Store::open_dir(dir.clone(), m, None));
        match opened {
            Ok(s) => Ok((s, t)),
            Err(e) => {
                let _ = discard(fs, &dir);
                Err(e.into())
            }
        }
    }

    /// Closes the store and removes its directory.
    pub fn delete_store(&self) -> Result<()> {
        let _ = self.close();
        match &self.shared.dir {
            Some(dir) => discard(&fs::RealFs, dir),
            None => Ok(()),
        }
    }
}

/// The files of a new store in `dir`, synced: the bytes
/// [`Store::init_media`] writes, written through `fs`.
fn build(fs: &dyn Fs, dir: &Path, config: &Config) -> Result<()> {
    let meta = Store::first_meta(config)?;
    let data_len = config.data_file_len().unwrap_or(0);
    fs.create_file(&dir.join(DATA_FILE), data_len)?;
    fs.create_file(&dir.join(INDEX_FILE), config.index_file_len())?;
    fs.create_file(&dir.join(META_FILE), META_FILE_LEN)?;
    for (off, bytes) in first_commit_writes(config, &meta) {
        fs.write_at(&dir.join(DATA_FILE), off, &bytes)?;
    }
    fs.write_at(
        &dir.join(META_FILE),
        Meta::slot_offset(meta.generation),
        &meta.encode(),
    )?;
    for f in [DATA_FILE, INDEX_FILE, META_FILE] {
        fs.sync_file(&dir.join(f))?;
    }
    Ok(())
}

/// Moves the finished store in `stage` to `dir`, durably.
fn publish(fs: &dyn Fs, stage: &Path, dir: &Path) -> Result<()> {
    fs.sync_dir(stage)?;
    if let Err(e) = fs.rename(stage, dir) {
        // Someone else's store (or another directory) has the name: rename
        // replaces only an empty directory.
        return Err(match e.kind() {
            io::ErrorKind::DirectoryNotEmpty
            | io::ErrorKind::AlreadyExists
            | io::ErrorKind::NotADirectory => Error::AlreadyExists {
                path: dir.to_path_buf(),
            },
            _ => e.into(),
        });
    }
    let base = dir.parent().unwrap_or(Path::new("."));
    fs.sync_dir(base)?;
    Ok(())
}

/// Deletes a store by path without opening it. Fails if it is open. A
/// power cut leaves the store whole or gone.
pub fn delete_store(base: &Path, name: &str) -> Result<()> {
    delete_store_with(&fs::RealFs, base, name)
}

/// Deletes the store `base/name`, which must not be open, through `fs`.
pub fn delete_store_with(fs: &dyn Fs, base: &Path, name: &str) -> Result<()> {
    validate_name(name)?;
    let dir = base.join(name);
    if !dir.join(META_FILE).exists() {
        return Err(Error::NotFound { path: dir });
    }
    let _open = lock_dir(&dir)?;
    discard(fs, &dir)
}

/// Removes the store directory `dir`: out of sight first, durably, then
/// file by file. Once the rename is durable the store is gone; a failure
/// after that leaves a leftover for [`sweep`], not an error.
pub(super) fn discard(fs: &dyn Fs, dir: &Path) -> Result<()> {
    let base = dir.parent().unwrap_or(Path::new("."));
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let gone = fs::staging_dir(base, DELETING_PREFIX, name);
    // Locked before the rename (the lock follows the directory), so that a
    // concurrent sweep never races this removal.
    let _held = fs::lock_dir(dir)?;
    fs.rename(dir, &gone)?;
    fs.sync_dir(base)?;
    if fs::remove_dir_all(fs, &gone).is_ok() {
        let _ = fs.sync_dir(base);
    }
    Ok(())
}
