//! Store API keys: `tsstore_<uuid v4>`, shown once, kept only as argon2id
//! hashes in `<store>/keys.json`, written atomically (temp file, fsync,
//! rename, directory fsync: after a power cut the old or the new file is
//! there, never a torn one).
//!
//! Verifying a key costs an argon2 hash only the first time: verified keys
//! are cached per store with the identity (inode, size, mtime) of the
//! `keys.json` they were checked against. The CLI rewrites the file by
//! rename, so a regenerate or revoke changes that identity and the next
//! request re-reads the file: the change takes effect at once.
//!
//! Verifying an unknown key costs no hash: a key names its entry by its
//! id (characters 8..16), and a key whose id is in no entry is refused
//! before any hashing. The hashes that are computed take one of
//! [`KeyCache::hashers`] permits first, so guessers queue behind each other
//! instead of taking every core (each hash takes ~19 MiB and tens of
//! milliseconds of one core).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::store::fs::{Fs, RealFs};

/// The key file's name inside a store directory.
pub const KEYS_FILE: &str = "keys.json";
/// Prefix of every store API key.
pub const KEY_PREFIX: &str = "tsstore_";
/// Length of a key: the prefix and a hyphenated UUID.
pub const KEY_LEN: usize = KEY_PREFIX.len() + 36;

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub id: String,
    /// argon2id hash in PHC string format.
    pub hash: String,
    /// RFC 3339, UTC, nanoseconds.
    pub created_at: String,
    pub note: String,
}

/// `keys.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub store_name: String,
    pub keys: Vec<KeyEntry>,
}

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("API key not found")]
    NotFound,
    #[error("no key file for store '{store}'")]
    NoKeyFile { store: String },
    #[error("key file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// A freshly made key: the secret (shown once) and its id.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub api_key: String,
    pub key_id: String,
}

/// Makes a new random key `tsstore_<uuid v4>`; its id is the first 8 hex
/// digits of the UUID.
pub fn generate() -> NewKey {
    let u = uuid::Uuid::new_v4().hyphenated().to_string();
    NewKey {
        key_id: u[..8].to_string(),
        api_key: format!("{KEY_PREFIX}{u}"),
    }
}

/// True if `key` has the shape of a store key.
pub fn well_formed(key: &str) -> bool {
    key.len() >= KEY_LEN && key.starts_with(KEY_PREFIX)
}

/// The id a key names: the first 8 characters of its UUID.
pub fn id_of(key: &str) -> Option<&str> {
    key.strip_prefix(KEY_PREFIX)?.get(..8)
}

fn hash(key: &str) -> Result<String, KeyError> {
    // 16 random bytes from the OS (a v4 UUID is 122 of them).
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| KeyError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(key.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| KeyError::Hash(e.to_string()))
}

fn verify(key: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(key.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `dir/keys.json`.
pub fn load(dir: &Path, store: &str) -> Result<KeyFile, KeyError> {
    let path = dir.join(KEYS_FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyError::NoKeyFile {
                store: store.to_string(),
            })
        }
        Err(e) => return Err(io(&path)(e)),
    };
    serde_json::from_slice(&text).map_err(|e| KeyError::Corrupt {
        path,
        reason: e.to_string(),
    })
}

/// Writes `dir/keys.json` atomically with mode 0600.
pub fn save(dir: &Path, file: &KeyFile) -> Result<(), KeyError> {
    save_with(&RealFs, dir, file)
}

/// [`save`] through the file-system seam `fs`.
pub fn save_with(fs: &dyn Fs, dir: &Path, file: &KeyFile) -> Result<(), KeyError> {
    let mut text = serde_json::to_vec_pretty(file).map_err(|e| KeyError::Hash(e.to_string()))?;
    text.push(b'\n');
    crate::store::fs::replace(fs, dir, KEYS_FILE, &text, 0o600).map_err(io(&dir.join(KEYS_FILE)))
}

/// Creates the key file of a new store with one key.
pub fn init(dir: &Path, store: &str, note: &str) -> Result<NewKey, KeyError> {
    init_with(&RealFs, dir, store, note)
}

/// [`init`] through the file-system seam `fs`.
pub fn init_with(fs: &dyn Fs, dir: &Path, store: &str, note: &str) -> Result<NewKey, KeyError> {
    let k = generate();
    let file = KeyFile {
        store_name: store.to_string(),
        keys: vec![entry(&k, note)?],
    };
    save_with(fs, dir, &file)?;
    Ok(k)
}

fn entry(k: &NewKey, note: &str) -> Result<KeyEntry, KeyError> {
    Ok(KeyEntry {
        id: k.key_id.clone(),
        hash: hash(&k.api_key)?,
        created_at: crate::clock::rfc3339_nanos(crate::store::now_ns()),
        note: note.to_string(),
    })
}

/// Replaces every key of the store with one new key.
pub fn regenerate(dir: &Path, store: &str, note: &str) -> Result<NewKey, KeyError> {
    init(dir, store, note)
}

/// Adds a key beside the existing ones.
pub fn add(dir: &Path, store: &str, note: &str) -> Result<NewKey, KeyError> {
    let mut file = load(dir, store)?;
    let k = generate();
    file.keys.push(entry(&k, note)?);
    save(dir, &file)?;
    Ok(k)
}

/// Removes the key with this id.
pub fn revoke(dir: &Path, store: &str, id: &str) -> Result<(), KeyError> {
    let mut file = load(dir, store)?;
    let before = file.keys.len();
    file.keys.retain(|k| k.id != id);
    if file.keys.len() == before {
        return Err(KeyError::NotFound);
    }
    save(dir, &file)
}

/// Identity of a key file version.
type FileId = (u64, u64, i64, i64);

fn file_id(path: &Path) -> Option<FileId> {
    let m = fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

#[derive(Default)]
struct Cached {
    file: Option<FileId>,
    /// When `keys.json` was last seen to be `file`: within
    /// [`RECHECK_AFTER`] the file is not looked at again.
    seen: Option<Instant>,
    /// Keys verified against that file version, with their ids.
    verified: Vec<(String, String)>,
}

/// How long a look at `keys.json` stays good: a key revoked or regenerated
/// by the CLI stops working at the server within this time. Saves a
/// `stat` per request (most of the auth cost of a small insert).
pub const RECHECK_AFTER: Duration = Duration::from_millis(100);

/// Checks store keys, caching the ones that verified.
pub struct KeyCache {
    stores: Mutex<HashMap<String, Cached>>,
    /// One verification at a time per store: concurrent first requests
    /// with the same new key then cost one argon2 hash, not one each
    /// (each hash takes ~19 MiB and tens of milliseconds).
    verifying: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Hashing verifications in progress, across all stores.
    hashing: tokio::sync::Semaphore,
    /// argon2 hashes computed so far (for `/metrics`).
    hashes: AtomicU64,
}

impl Default for KeyCache {
    fn default() -> KeyCache {
        KeyCache {
            stores: Mutex::default(),
            verifying: Mutex::default(),
            hashing: tokio::sync::Semaphore::new(KeyCache::hashers()),
            hashes: AtomicU64::new(0),
        }
    }
}

/// Why a key was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No key in the file matches.
    Invalid,
    /// The store or its key file is missing or unreadable.
    Unavailable,
    /// Not verified: the caller's `may_hash` said no (see
    /// [`KeyCache::verify`]).
    Refused,
}

/// The entries a key names, and the key file version they come from.
struct Named {
    file: FileId,
    entries: Vec<KeyEntry>,
}

impl KeyCache {
    /// Most verifications that hash at once: half the cores, at least
    /// one, so that the other half keeps serving whatever guessers send.
    pub fn hashers() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get() / 2)
            .unwrap_or(1)
            .max(1)
    }

    pub fn new() -> KeyCache {
        KeyCache::default()
    }

    /// argon2 hashes computed by verifications so far.
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// [`KeyCache::check`] from async code: the cache first, then the key
    /// file off the async workers; a key of an unknown id is refused there.
    /// A hash waits for one of the [`KeyCache::hashers`] permits, and then
    /// is computed only if `may_hash` still allows it (else `Refused`):
    /// a caller that had many guesses queued may have run out of attempts
    /// meanwhile.
    pub async fn verify(
        self: &Arc<Self>,
        store: &str,
        dir: PathBuf,
        key: &str,
        may_hash: impl FnOnce() -> bool,
    ) -> Result<String, Rejection> {
        if let Some(id) = self.check_cached(store, &dir, key) {
            return Ok(id);
        }
        let (me, st, d, k) = (
            self.clone(),
            store.to_string(),
            dir.clone(),
            key.to_string(),
        );
        let named = tokio::task::spawn_blocking(move || me.named(&st, &d, &k))
            .await
            .unwrap_or(Err(Rejection::Unavailable))?;
        let Ok(_permit) = self.hashing.acquire().await else {
            return Err(Rejection::Unavailable);
        };
        if let Some(id) = self.check_cached(store, &dir, key) {
            return Ok(id);
        }
        if !may_hash() {
            return Err(Rejection::Refused);
        }
        let (me, store, key) = (self.clone(), store.to_string(), key.to_string());
        tokio::task::spawn_blocking(move || me.hash_check(&store, &dir, &key, named))
            .await
            .unwrap_or(Err(Rejection::Unavailable))
    }

    /// The key's id if `key` was verified against the current `keys.json`
    /// (no hashing; a `stat` when the file was last looked at more than
    /// [`RECHECK_AFTER`] ago). `None`: not known, call [`KeyCache::check`].
    pub fn check_cached(&self, store: &str, dir: &Path, key: &str) -> Option<String> {
        let fresh = |c: &Cached| c.seen.is_some_and(|t| t.elapsed() < RECHECK_AFTER);
        let mut map = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if !map.get(store).is_some_and(fresh) {
            drop(map);
            let id = file_id(&dir.join(KEYS_FILE));
            map = self.stores.lock().unwrap_or_else(|e| e.into_inner());
            let c = map.get_mut(store)?;
            if id.is_none() || c.file != id {
                c.seen = None;
                return None;
            }
            c.seen = Some(Instant::now());
        }
        let c = map.get(store)?;
        c.verified
            .iter()
            .find(|(k, _)| k.len() == key.len() && bool::from(k.as_bytes().ct_eq(key.as_bytes())))
            .map(|(_, kid)| kid.clone())
    }

    /// Returns the key's id if `key` is a key of `store` (in `dir`). May
    /// compute argon2 hashes: call it off the async workers.
    pub fn check(&self, store: &str, dir: &Path, key: &str) -> Result<String, Rejection> {
        if let Some(kid) = self.check_cached(store, dir, key) {
            return Ok(kid);
        }
        let named = self.named(store, dir, key)?;
        self.hash_check(store, dir, key, named)
    }

    /// The entries `key` names by its id, with the identity of the key
    /// file they come from (blocking: reads the file). No entry: `Invalid`,
    /// at the cost of the read, no hash.
    fn named(&self, store: &str, dir: &Path, key: &str) -> Result<Named, Rejection> {
        let file = file_id(&dir.join(KEYS_FILE)).ok_or(Rejection::Unavailable)?;
        let id = id_of(key).ok_or(Rejection::Invalid)?;
        let entries: Vec<KeyEntry> = load(dir, store)
            .map_err(|_| Rejection::Unavailable)?
            .keys
            .into_iter()
            .filter(|e| e.id == id)
            .collect();
        if entries.is_empty() {
            return Err(Rejection::Invalid);
        }
        Ok(Named { file, entries })
    }

    /// Hashes `key` against the entries it names, one store at a time
    /// (blocking: tens of milliseconds per entry); caches it if it matches.
    fn hash_check(
        &self,
        store: &str,
        dir: &Path,
        key: &str,
        named: Named,
    ) -> Result<String, Rejection> {
        let one = self
            .verifying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(store.to_string())
            .or_default()
            .clone();
        let _one = one.lock().unwrap_or_else(|e| e.into_inner());
        // Another request may have verified this key while we waited.
        if let Some(kid) = self.check_cached(store, dir, key) {
            return Ok(kid);
        }
        let found = named.entries.iter().find(|e| {
            self.hashes.fetch_add(1, Ordering::Relaxed);
            verify(key, &e.hash)
        });
        let Some(e) = found else {
            return Err(Rejection::Invalid);
        };
        let mut map = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        let c = map.entry(store.to_string()).or_default();
        if c.file != Some(named.file) {
            c.file = Some(named.file);
            c.verified.clear();
        }
        c.seen = Some(Instant::now());
        c.verified.push((key.to_string(), e.id.clone()));
        Ok(e.id.clone())
    }

    /// Forgets a store's cached keys (after it is deleted).
    pub fn forget(&self, store: &str) {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(store);
        self.verifying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_original_shape() {
        let k = generate();
        assert_eq!(k.api_key.len(), KEY_LEN);
        assert!(well_formed(&k.api_key));
        assert_eq!(&k.api_key[8..16], k.key_id);
        assert!(!well_formed("tsstore_short"));
        assert!(!well_formed(&k.api_key.replace("tsstore_", "tsstorf_")));
    }

    /// Issue 12: every wrong store key cost an argon2 hash, so guessers
    /// with random keys could take every core.
    #[test]
    fn a_key_of_an_unknown_id_costs_no_hash() {
        let dir = tempfile::tempdir().unwrap();
        let k = init(dir.path(), "s", "Initial key").unwrap();
        let cache = KeyCache::new();
        let guess = generate();
        assert_ne!(guess.key_id, k.key_id);
        for _ in 0..5 {
            assert_eq!(
                cache.check("s", dir.path(), &guess.api_key),
                Err(Rejection::Invalid)
            );
        }
        // A multi-byte character where the id is: refused, no panic.
        let odd = format!("{KEY_PREFIX}€€€€€€{}", &k.api_key[26..]);
        assert!(well_formed(&odd) && id_of(&odd).is_none());
        assert_eq!(cache.check("s", dir.path(), &odd), Err(Rejection::Invalid));
        assert_eq!(cache.hashes(), 0);
        // A guess of a known id is hashed, once per attempt.
        let same_id = format!("{}{}", &k.api_key[..16], &guess.api_key[16..]);
        assert_eq!(
            cache.check("s", dir.path(), &same_id),
            Err(Rejection::Invalid)
        );
        assert_eq!(cache.hashes(), 1);
        assert!(cache.check("s", dir.path(), &k.api_key).is_ok());
        assert_eq!(cache.hashes(), 2);
        // Verified once, cached after.
        assert!(cache.check("s", dir.path(), &k.api_key).is_ok());
        assert_eq!(cache.hashes(), 2);
    }

    #[test]
    fn verify_cache_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let k = init(dir.path(), "s", "Initial key").unwrap();
        let mode = fs::metadata(dir.path().join(KEYS_FILE)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains(&k.api_key));
        let cache = KeyCache::new();
        assert_eq!(
            cache.check("s", dir.path(), &k.api_key),
            Ok(k.key_id.clone())
        );
        assert_eq!(
            cache.check("s", dir.path(), &k.api_key),
            Ok(k.key_id.clone())
        );
        let other = generate();
        assert_eq!(
            cache.check("s", dir.path(), &other.api_key),
            Err(Rejection::Invalid)
        );
        let k2 = add(dir.path(), "s", "second").unwrap();
        assert!(cache.check("s", dir.path(), &k2.api_key).is_ok());
        revoke(dir.path(), "s", &k.key_id).unwrap();
        // The contract: a change to keys.json applies within RECHECK_AFTER
        // (until then the cache does not look at the file).
        let settle = || std::thread::sleep(RECHECK_AFTER + Duration::from_millis(20));
        settle();
        assert_eq!(
            cache.check("s", dir.path(), &k.api_key),
            Err(Rejection::Invalid)
        );
        assert!(matches!(
            revoke(dir.path(), "s", "nope"),
            Err(KeyError::NotFound)
        ));
        let k3 = regenerate(dir.path(), "s", "Regenerated via CLI").unwrap();
        settle();
        assert_eq!(
            cache.check("s", dir.path(), &k2.api_key),
            Err(Rejection::Invalid)
        );
        assert!(cache.check("s", dir.path(), &k3.api_key).is_ok());
        let none = tempfile::tempdir().unwrap();
        assert_eq!(
            cache.check("x", none.path(), &k3.api_key),
            Err(Rejection::Unavailable)
        );
    }
}
