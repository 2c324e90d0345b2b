//! Store configuration: sizes, data type and durability policy, with their
//! validation. A configuration is fixed at create time (it decides the file
//! sizes); only the durability policy may be changed when a store is opened.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::format::{
    commit_area_offset, COMMIT_AREA_LEN, INDEX_ENTRY_LEN, MAX_DATA_BLOCK_SIZE,
    MAX_INDEX_BLOCK_SIZE, META_FILE_LEN, MIN_BLOCK_SIZE,
};

/// What a store holds; decides how the server validates and renders data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Raw bytes (`application/octet-stream`).
    Binary,
    /// UTF-8 text (`text/plain`).
    Text,
    /// Any JSON value (`application/json`).
    #[default]
    Json,
    /// Flat JSON objects stored compactly against the store's schema.
    Schema,
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Binary => "binary",
            DataType::Text => "text",
            DataType::Json => "json",
            DataType::Schema => "schema",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            DataType::Binary => 0,
            DataType::Text => 1,
            DataType::Json => 2,
            DataType::Schema => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<DataType> {
        [
            DataType::Binary,
            DataType::Text,
            DataType::Json,
            DataType::Schema,
        ]
        .get(c as usize)
        .copied()
    }
}

impl std::str::FromStr for DataType {
    type Err = Error;
    fn from_str(s: &str) -> Result<DataType> {
        match s {
            "binary" => Ok(DataType::Binary),
            "text" => Ok(DataType::Text),
            "json" => Ok(DataType::Json),
            "schema" => Ok(DataType::Schema),
            _ => Err(Error::InvalidConfig {
                reason: format!("unknown data type {s:?} (expected binary, text, json or schema)"),
            }),
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When inserted data reaches stable storage. FORMAT.md ("What survives a
/// power cut") states the guarantees of each policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// An insert returns once its object is on stable storage. Concurrent
    /// writers share one `fdatasync` (group commit).
    Always,
    /// Acknowledged data is on stable storage at most this long after it
    /// was acknowledged (plus the time of one sync).
    Interval(Duration),
    /// The engine never syncs while running; the OS writes data back when
    /// it chooses. `close` still syncs.
    Never,
}

impl Default for Durability {
    fn default() -> Durability {
        Durability::Interval(Duration::from_millis(DEFAULT_SYNC_INTERVAL_MS as u64))
    }
}

/// Default sync interval of [`Durability::Interval`].
pub const DEFAULT_SYNC_INTERVAL_MS: u32 = 1000;

impl Durability {
    pub(crate) fn encode(self) -> (u8, u32) {
        match self {
            Durability::Always => (0, DEFAULT_SYNC_INTERVAL_MS),
            Durability::Interval(d) => (1, d.as_millis().clamp(1, u32::MAX as u128) as u32),
            Durability::Never => (2, DEFAULT_SYNC_INTERVAL_MS),
        }
    }

    pub(crate) fn decode(code: u8, interval_ms: u32) -> Option<Durability> {
        match code {
            0 => Some(Durability::Always),
            1 => Some(Durability::Interval(Duration::from_millis(
                interval_ms.max(1) as u64,
            ))),
            2 => Some(Durability::Never),
            _ => None,
        }
    }

    /// Period of the background flusher.
    pub(crate) fn period(self) -> Duration {
        match self {
            Durability::Interval(d) => d.max(Duration::from_millis(1)),
            _ => Duration::from_millis(DEFAULT_SYNC_INTERVAL_MS as u64),
        }
    }

    /// `always`, `interval:<ms>` or `never`.
    pub fn name(self) -> String {
        match self {
            Durability::Always => "always".into(),
            Durability::Interval(d) => format!("interval:{}", d.as_millis()),
            Durability::Never => "never".into(),
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = Error;
    /// Parses `always`, `never`, `interval` (1000 ms) or `interval:<ms>`.
    fn from_str(s: &str) -> Result<Durability> {
        let bad = || Error::InvalidConfig {
            reason: format!(
                "unknown durability {s:?} (expected always, interval, interval:<ms> or never)"
            ),
        };
        match s {
            "always" => Ok(Durability::Always),
            "never" => Ok(Durability::Never),
            "interval" => Ok(Durability::default()),
            _ => {
                let ms = s.strip_prefix("interval:").ok_or_else(bad)?;
                let ms: u32 = ms.parse().map_err(|_| bad())?;
                if ms == 0 {
                    return Err(bad());
                }
                Ok(Durability::Interval(Duration::from_millis(ms as u64)))
            }
        }
    }
}

/// The shape of a store, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Number of data blocks in the ring.
    pub num_blocks: u32,
    /// Size of a data block in bytes: a power of two, at least 64.
    pub data_block_size: u32,
    /// Size of an index block in bytes: a power of two, at least 64.
    pub index_block_size: u32,
    /// What the store holds.
    pub data_type: DataType,
    /// When data reaches stable storage.
    pub durability: Durability,
}

/// Defaults of the original: 1024 blocks of 4 KiB, 4 KiB index blocks, json.
impl Default for Config {
    fn default() -> Config {
        Config {
            num_blocks: 1024,
            data_block_size: 4096,
            index_block_size: 4096,
            data_type: DataType::Json,
            durability: Durability::default(),
        }
    }
}

impl Config {
    /// Checks every field; the error says which one is wrong and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidConfig { reason });
        if self.num_blocks < 2 {
            return bad(format!(
                "num_blocks must be at least 2, got {}",
                self.num_blocks
            ));
        }
        for (what, v, max) in [
            ("data_block_size", self.data_block_size, MAX_DATA_BLOCK_SIZE),
            (
                "index_block_size",
                self.index_block_size,
                MAX_INDEX_BLOCK_SIZE,
            ),
        ] {
            if !v.is_power_of_two() || v < MIN_BLOCK_SIZE {
                return bad(format!(
                    "{what} must be a power of 2 and at least {MIN_BLOCK_SIZE}, got {v}"
                ));
            }
            if v > max {
                return bad(format!("{what} must be at most {max}, got {v}"));
            }
        }
        if let Durability::Interval(d) = self.durability {
            if d.is_zero() || d.as_millis() > u32::MAX as u128 {
                return bad("sync interval must be between 1 ms and 49 days".into());
            }
        }
        if self.data_file_len().is_none() {
            return bad("num_blocks * data_block_size overflows".into());
        }
        Ok(())
    }

    /// Size of `data.tsdb`: the ring, then (aligned) the commit area.
    pub fn data_file_len(&self) -> Option<u64> {
        commit_area_offset(self.ring_len()?).checked_add(COMMIT_AREA_LEN)
    }

    /// Bytes of the ring of data blocks at the start of `data.tsdb`.
    pub fn ring_len(&self) -> Option<u64> {
        (self.num_blocks as u64).checked_mul(self.data_block_size as u64)
    }

    /// Index entries per index block.
    pub fn entries_per_index_block(&self) -> u64 {
        self.index_block_size as u64 / INDEX_ENTRY_LEN as u64
    }

    /// Size of `index.tsdb`: whole index blocks, enough for one entry per
    /// data block.
    pub fn index_file_len(&self) -> u64 {
        let per = self.entries_per_index_block().max(1);
        (self.num_blocks as u64).div_ceil(per) * self.index_block_size as u64
    }

    /// Offset in `index.tsdb` of the entry of data block `pos`.
    pub(crate) fn index_entry_offset(&self, pos: u32) -> u64 {
        let per = self.entries_per_index_block().max(1);
        let p = pos as u64;
        (p / per) * self.index_block_size as u64 + (p % per) * INDEX_ENTRY_LEN as u64
    }

    /// Total bytes the store occupies on disk (its fixed footprint,
    /// without the small schema and key files).
    pub fn footprint(&self) -> u64 {
        self.data_file_len().unwrap_or(u64::MAX) + self.index_file_len() + META_FILE_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_original() {
        let c = Config::default();
        assert_eq!(
            (
                c.num_blocks,
                c.data_block_size,
                c.index_block_size,
                c.data_type
            ),
            (1024, 4096, 4096, DataType::Json)
        );
        assert_eq!(c.durability, Durability::Interval(Duration::from_secs(1)));
        c.validate().unwrap();
    }

    #[test]
    fn invalid_sizes_are_rejected_with_the_field_named() {
        for (n, d, i, field) in [
            (1024, 1000, 4096, "data_block_size"),
            (1024, 32, 4096, "data_block_size"),
            (1024, 4096, 100, "index_block_size"),
            (1024, 4096, 0, "index_block_size"),
            (1, 4096, 4096, "num_blocks"),
            (1024, 1 << 29, 4096, "data_block_size"),
        ] {
            let c = Config {
                num_blocks: n,
                data_block_size: d,
                index_block_size: i,
                ..Config::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn index_layout_fills_whole_index_blocks() {
        let c = Config {
            num_blocks: 5,
            index_block_size: 64,
            ..Config::default()
        };
        // Two entries per 64-byte index block: three blocks.
        assert_eq!(c.index_file_len(), 192);
        assert_eq!(c.index_entry_offset(0), 0);
        assert_eq!(c.index_entry_offset(1), 32);
        assert_eq!(c.index_entry_offset(2), 64);
        assert_eq!(c.index_entry_offset(4), 128);
    }

    #[test]
    fn durability_parses_and_round_trips() {
        for s in ["always", "never", "interval:250"] {
            let d: Durability = s.parse().unwrap();
            assert_eq!(d.name(), s);
            let (code, ms) = d.encode();
            assert_eq!(Durability::decode(code, ms), Some(d));
        }
        assert!("interval:0".parse::<Durability>().is_err());
        assert!("sometimes".parse::<Durability>().is_err());
        assert!("json".parse::<DataType>().is_ok());
        assert!("xml"
            .parse::<DataType>()
            .unwrap_err()
            .to_string()
            .contains("xml"));
    }
}
