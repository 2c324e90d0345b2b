//! A store's life once it exists: open (recovery, and the upgrade of a
//! version 1 store), close, and the names, media and lock of its directory.
//! Creating and deleting a directory is `staged`'s (which uses the names and
//! the lock from here).
//!
//! Invariants: a store directory is locked (`flock` on `meta.tsdb`) by the
//! one process that has it open; a close makes everything durable and
//! leaves a commit that leases nothing, so the next open reads only the
//! index and the commit slots.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::commit::spawn_flusher;
use super::config::{Config, Durability};
use super::engine::Store;
use super::error::{Error, Result};
use super::format::{commit_area_offset, Meta, COMMIT_AREA_LEN, META_FILE_LEN, META_V1_FILE_LEN};
use super::medium::FileMedium;
use super::schema::{self, Schema};
use super::shared::{rd, wr, Media, Shared, Syncer, DATA_FILE, INDEX_FILE, META_FILE};

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

type DirLock = nix::fcntl::Flock<fs::File>;

pub(super) fn lock_dir(dir: &Path) -> Result<DirLock> {
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

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// True if a store exists at `base/name`.
pub fn exists(base: &Path, name: &str) -> bool {
    validate_name(name).is_ok() && base.join(name).join(META_FILE).is_file()
}

pub(crate) fn open_media(dir: &Path) -> Result<Media> {
    Ok(Media {
        data: FileMedium::open(&dir.join(DATA_FILE), true)?.shared(),
        index: FileMedium::open(&dir.join(INDEX_FILE), false)?.shared(),
        meta: FileMedium::open(&dir.join(META_FILE), false)?.shared(),
    })
}

impl Store {
    /// Opens the store in `base/name` with the durability it was created with.
    pub fn open(base: &Path, name: &str) -> Result<Store> {
        Store::open_with(base, name, None)
    }

    /// Opens the store in `base/name`, overriding its durability policy for
    /// this session if `durability` is given. A version 1 store is upgraded
    /// first (FORMAT.md, "Version changes").
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
        let mut lock = lock_dir(&dir)?;
        let media = if media.meta.len() == META_V1_FILE_LEN {
            drop(media);
            lock = upgrade_v1(&dir, lock)?;
            open_media(&dir)?
        } else {
            media
        };
        let schema = schema::load(&dir)?;
        Store::start(media, Some(dir), Some(lock), schema, durability)
    }

    /// Writes a fresh meta record and the first commit for `config` to
    /// `media` (a new store).
    pub fn init_media(media: &Media, config: &Config) -> Result<()> {
        let meta = Store::first_meta(config)?;
        super::recovery::write_first_commit(media, config, &meta)?;
        media
            .meta
            .write_at(Meta::slot_offset(meta.generation), &meta.encode())?;
        media.meta.sync()?;
        Ok(())
    }

    /// The meta record of a new store with `config` (its first commit is
    /// `recovery::first_commit_writes`).
    pub(super) fn first_meta(config: &Config) -> Result<Meta> {
        config.validate()?;
        let (durability, interval) = config.durability.encode();
        Ok(Meta {
            version: super::format::FORMAT_VERSION,
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
            created_ns: super::object::now_ns(),
            clean: false,
            floor_seq: 0,
        })
    }

    /// Creates a store on the given media (used with simulated media).
    pub fn create_on(media: Media, config: Config) -> Result<Store> {
        if media.data.len() != config.data_file_len().unwrap_or(0)
            || media.index.len() != config.index_file_len()
            || media.meta.len() != META_FILE_LEN
        {
            return Err(Error::InvalidConfig {
                reason: "media sizes do not match the configuration".into(),
            });
        }
        Store::init_media(&media, &config)?;
        Store::start(media, None, None, None, None)
    }

    /// Opens a store on the given media (used with simulated media). A
    /// version 1 store cannot be upgraded on fixed-size media: open it from
    /// its directory.
    pub fn open_on(media: Media, durability: Option<Durability>) -> Result<Store> {
        Store::start(media, None, None, None, durability)
    }

    fn start(
        media: Media,
        dir: Option<PathBuf>,
        lock: Option<DirLock>,
        schema: Option<Schema>,
        durability: Option<Durability>,
    ) -> Result<Store> {
        let r = super::recovery::recover(&media, durability)?;
        let ring_len = r.cfg.ring_len().unwrap_or(0);
        media
            .data
            .map_region(commit_area_offset(ring_len), COMMIT_AREA_LEN)?;
        let shared = Arc::new(Shared {
            cfg: r.cfg,
            media,
            dir,
            state: RwLock::new(r.state),
            sync: Syncer::new(),
            lsn: AtomicU64::new(0),
            lease_end: AtomicU64::new(r.lease_end),
            lease_blocks: r.lease_blocks,
            lease_now: AtomicU64::new(r.lease_blocks),
            lease_pending: AtomicU64::new(r.lease_end),
            ring_len,
            schema: RwLock::new(schema),
            delete_lock: Mutex::new(()),
            on_write: std::sync::OnceLock::new(),
            on_insert: std::sync::OnceLock::new(),
            clock: std::sync::OnceLock::new(),
            _lock: lock,
        });
        {
            // Writers of the new session stay within a lap of what the next
            // commit's recovery checks (see `Shared::lease_cap`), like
            // every later lease.
            let cap = shared.lease_cap(&rd(&shared.state));
            shared.lease_end.fetch_min(cap, Ordering::AcqRel);
        }
        let flusher = spawn_flusher(&shared)?;
        Ok(Store {
            shared,
            flusher: Mutex::new(Some(flusher)),
        })
    }
}

impl Shared {
    /// Marks the store closed (no write gets in after this) and makes
    /// everything durable: the head block's index entry, a commit that
    /// syncs the index after the data, then a last commit that claims the
    /// whole index and leases nothing, so the next open reads neither
    /// block headers nor blocks.
    pub(crate) fn close(&self) -> Result<()> {
        let poisoned = {
            let mut st = wr(&self.state);
            if st.closed {
                return Ok(());
            }
            st.closed = true;
            if st.poisoned.is_none() {
                if let Some(seq) = st.head.as_ref().map(|h| h.seq) {
                    self.write_entry(&mut st, seq, 0)?;
                }
                st.entries_below = st.entries_below.max(st.ring.next);
            }
            st.poisoned.is_some()
        };
        if poisoned {
            return Ok(());
        }
        let lsn = self.lsn.load(Ordering::Acquire);
        self.commit(lsn, true)?;
        self.commit_req(super::commit::CommitReq {
            lsn,
            last: true,
            ..Default::default()
        })
    }
}

/// Upgrades the version 1 store in `dir` (locked by `lock`) to version 2,
/// and returns the lock of its new meta file (FORMAT.md, "Version
/// changes"): recovery by the version 1 rules, then the data file is
/// extended by the commit area and a first commit written in it, then a
/// version 2 `meta.tsdb` replaces the old one by a rename. A cut at any
/// point leaves a store that opens: version 1 meta with a data file already
/// extended is accepted, and the upgrade runs again.
fn upgrade_v1(dir: &Path, lock: DirLock) -> Result<DirLock> {
    let media = open_media(dir)?;
    let v1 = super::recovery_v1::recover(&media)?;
    drop(media);
    let cfg = v1.cfg;
    let ring_len = cfg.ring_len().unwrap_or(0);
    let new_len = commit_area_offset(ring_len) + COMMIT_AREA_LEN;
    let path = dir.join(DATA_FILE);
    {
        let f = fs::OpenOptions::new().read(true).write(true).open(&path)?;
        let len = f.metadata()?.len();
        if len != new_len {
            f.set_len(new_len)?;
            super::fs::allocate_range(&f, len.min(ring_len), new_len)?;
            f.sync_all()?;
        }
    }
    let media = open_media(dir)?;
    let meta = Meta {
        version: super::format::FORMAT_VERSION,
        generation: v1.meta.generation + 1,
        floor_seq: v1.ring.tail,
        clean: false,
        ..v1.meta
    };
    super::recovery::write_upgrade_commit(&media, &cfg, &meta, &v1.ring, v1.last_ts)?;
    drop(media);
    let tmp = dir.join("meta.tsdb.tmp");
    {
        let mut img = vec![0u8; META_FILE_LEN as usize];
        let at = Meta::slot_offset(meta.generation) as usize;
        let bytes = meta.encode();
        img[at..at + bytes.len()].copy_from_slice(&bytes);
        fs::write(&tmp, &img)?;
        fs::File::open(&tmp)?.sync_all()?;
    }
    fs::rename(&tmp, dir.join(META_FILE))?;
    sync_dir(dir)?;
    // The lock was on the old file: take the new one's before letting go.
    let new_lock = lock_dir(dir)?;
    drop(lock);
    Ok(new_lock)
}
