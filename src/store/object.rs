//! Objects inside blocks: handles, the record walk that validates every
//! record it yields, substring filters and query descriptions.
//!
//! Small objects are packed back to back into a block; an object larger
//! than a block's payload spans consecutive blocks (see FORMAT.md). A record
//! walk stops at the first record that does not validate: that is where the
//! block's valid data ends (a torn tail, or bytes from an earlier lap of the
//! ring, whose checksums are bound to another sequence number).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::format::{record_crc, RecordHeader, RecordKey, BLOCK_HEADER_LEN, RECORD_HEADER_LEN};

/// Where an object is and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectHandle {
    /// The object's timestamp (Unix nanoseconds).
    pub timestamp: i64,
    /// Ring position of the block the object starts in.
    pub block_num: u32,
    /// Byte offset of the object's record within that block.
    pub offset: u32,
    /// Size of the object's data in bytes.
    pub size: u32,
    /// Number of blocks the object occupies (1 unless it spans).
    pub span_count: u32,
}

/// An object with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub handle: ObjectHandle,
    pub data: Vec<u8>,
}

/// One validated record of a packed block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec<'a> {
    pub off: u32,
    pub ts: i64,
    pub deleted: bool,
    pub data: &'a [u8],
}

/// Walks the records of a packed block (whose header was validated),
/// yielding each record that validates, and stopping at the first one that
/// does not. Timestamps must be positive and strictly increase.
pub(crate) struct Records<'a> {
    blk: &'a [u8],
    key: RecordKey,
    off: usize,
    last_ts: i64,
    /// The walk stopped at a record whose checksum did not match (its
    /// structure, bounds and timestamp order, was fine).
    bad_checksum: bool,
}

impl<'a> Records<'a> {
    pub fn new(blk: &'a [u8], key: RecordKey) -> Records<'a> {
        Records {
            blk,
            key,
            off: BLOCK_HEADER_LEN,
            last_ts: 0,
            bad_checksum: false,
        }
    }

    /// Whether the walk ended where a walk of the structure alone
    /// ([`find_verified`]'s) ends too: at a record whose bounds or
    /// timestamp order do not hold, or the block's end, not at a checksum
    /// mismatch. Meaningful once the walk returned `None`.
    pub fn ended_on_structure(&self) -> bool {
        !self.bad_checksum
    }
}

/// One step of a record walk without the checksum: the record at `off`
/// after a record with timestamp `last_ts`, if it lies within the block and
/// its timestamp is greater.
#[inline]
fn structure_at(blk: &[u8], off: usize, last_ts: i64) -> Option<(RecordHeader, usize)> {
    let rest = blk.len().checked_sub(off)?;
    if rest < RECORD_HEADER_LEN {
        return None;
    }
    let h = RecordHeader::decode(&blk[off..]);
    if h.len as usize > rest - RECORD_HEADER_LEN || h.ts <= last_ts {
        return None;
    }
    Some((h, off + RECORD_HEADER_LEN))
}

impl<'a> Iterator for Records<'a> {
    type Item = Rec<'a>;

    #[inline]
    fn next(&mut self) -> Option<Rec<'a>> {
        let (h, start) = structure_at(self.blk, self.off, self.last_ts)?;
        let data = &self.blk[start..start + h.len as usize];
        if record_crc(self.key, h.ts, h.len, data) != h.crc {
            self.bad_checksum = true;
            return None;
        }
        let rec = Rec {
            off: self.off as u32,
            ts: h.ts,
            deleted: h.deleted,
            data,
        };
        self.off = start + data.len();
        self.last_ts = h.ts;
        Some(rec)
    }
}

/// The record with timestamp `ts` in a packed block whose bytes a whole
/// [`Records`] walk already verified, ending on structure (see
/// `BlockTable::verified`): the walk follows the records' structure only
/// and checksums the record it returns, every time. On such a block it
/// finds what a [`Records`] walk finds: every record the structure
/// reaches before it was verified, and the bytes it covers do not change
/// while the block lives.
pub(crate) fn find_verified<'a>(blk: &'a [u8], key: RecordKey, ts: i64) -> Option<Rec<'a>> {
    let (mut off, mut last_ts) = (BLOCK_HEADER_LEN, 0);
    while let Some((h, start)) = structure_at(blk, off, last_ts) {
        if h.ts > ts {
            return None;
        }
        let data = &blk[start..start + h.len as usize];
        if h.ts == ts {
            return (record_crc(key, h.ts, h.len, data) == h.crc).then_some(Rec {
                off: off as u32,
                ts: h.ts,
                deleted: h.deleted,
                data,
            });
        }
        off = start + data.len();
        last_ts = h.ts;
    }
    None
}

/// A substring filter over object data, case-sensitive or not.
#[derive(Debug, Clone)]
pub struct Filter {
    needle: String,
    ignore_case: bool,
    finder: memchr::memmem::Finder<'static>,
}

impl Filter {
    /// Matches objects whose data contains `needle`. With `ignore_case`,
    /// letters match regardless of case (Unicode-aware).
    pub fn new(needle: &str, ignore_case: bool) -> Filter {
        let needle = if ignore_case {
            needle.to_lowercase()
        } else {
            needle.to_string()
        };
        let finder = memchr::memmem::Finder::new(needle.as_bytes()).into_owned();
        Filter {
            needle,
            ignore_case,
            finder,
        }
    }

    /// The text searched for (lower-cased when the filter ignores case).
    pub fn needle(&self) -> &str {
        &self.needle
    }

    pub fn ignore_case(&self) -> bool {
        self.ignore_case
    }

    /// True if `data` contains the filter's text.
    pub fn matches(&self, data: &[u8]) -> bool {
        if !self.ignore_case {
            return self.finder.find(data).is_some();
        }
        if self.needle.is_ascii() {
            // ASCII needle: lower-casing ASCII bytes is enough (other bytes
            // cannot fold to ASCII), and keeps non-UTF-8 data searchable.
            let lower = data.to_ascii_lowercase();
            return self.finder.find(&lower).is_some();
        }
        let lower = String::from_utf8_lossy(data).to_lowercase();
        self.finder.find(lower.as_bytes()).is_some()
    }
}

/// Which end of the time range a query starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    OldestFirst,
    /// Newest first.
    NewestFirst,
}

/// A list query: a closed time range, an order, a limit and an optional
/// filter. The store scans until `limit` objects matched.
#[derive(Debug, Clone)]
pub struct Query {
    /// Inclusive lower bound.
    pub start: i64,
    /// Inclusive upper bound.
    pub end: i64,
    pub order: Order,
    /// Maximum number of objects returned; 0 means no limit.
    pub limit: usize,
    pub filter: Option<Filter>,
}

impl Query {
    /// The `limit` oldest objects, oldest first.
    pub fn oldest(limit: usize) -> Query {
        Query {
            start: i64::MIN,
            end: i64::MAX,
            order: Order::OldestFirst,
            limit,
            filter: None,
        }
    }

    /// The `limit` newest objects, newest first.
    pub fn newest(limit: usize) -> Query {
        Query {
            order: Order::NewestFirst,
            ..Query::oldest(limit)
        }
    }

    /// Objects with `start <= timestamp <= end`, oldest first.
    pub fn range(start: i64, end: i64, limit: usize) -> Query {
        Query {
            start,
            end,
            ..Query::oldest(limit)
        }
    }

    /// Objects from the last `d` (timestamp >= now - d), oldest first.
    pub fn since(d: Duration, limit: usize) -> Query {
        Query::range(since_start(d), i64::MAX, limit)
    }

    /// Adds a filter.
    pub fn filter(mut self, filter: Filter) -> Query {
        self.filter = Some(filter);
        self
    }

    /// Sets the order.
    pub fn order(mut self, order: Order) -> Query {
        self.order = order;
        self
    }
}

/// Current time in Unix nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(1)
}

/// `now - d` in Unix nanoseconds, saturating.
pub fn since_start(d: Duration) -> i64 {
    now_ns().saturating_sub(d.as_nanos().min(i64::MAX as u128) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::{encode_record_header, FORMAT_VERSION};

    fn key(seq: u64) -> RecordKey {
        RecordKey {
            version: FORMAT_VERSION,
            seq,
            session: 1,
        }
    }

    fn block(seq: u64, objs: &[(i64, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; 256];
        let mut off = BLOCK_HEADER_LEN;
        for (ts, d) in objs {
            encode_record_header(&mut b[off..], key(seq), *ts, d);
            b[off + RECORD_HEADER_LEN..off + RECORD_HEADER_LEN + d.len()].copy_from_slice(d);
            off += RECORD_HEADER_LEN + d.len();
        }
        b
    }

    #[test]
    fn walk_yields_valid_records_and_stops_at_the_first_bad_one() {
        let b = block(7, &[(10, b"a"), (20, b"bb"), (30, b"ccc")]);
        let got: Vec<_> = Records::new(&b, key(7))
            .map(|r| (r.ts, r.data.to_vec()))
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (30, b"ccc".to_vec()));
        // The same bytes under another sequence number: an earlier lap.
        assert_eq!(Records::new(&b, key(8)).count(), 0);
        // Corrupt the second record's payload: the walk ends after the first.
        let mut c = b.clone();
        c[BLOCK_HEADER_LEN + RECORD_HEADER_LEN + 1 + RECORD_HEADER_LEN] ^= 1;
        assert_eq!(Records::new(&c, key(7)).count(), 1);
        // A length running past the block ends the walk without a panic.
        let mut d = b.clone();
        d[BLOCK_HEADER_LEN + 8..BLOCK_HEADER_LEN + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Records::new(&d, key(7)).count(), 0);
    }

    /// What a lookup in a block finds by a whole walk: the record at `ts`.
    fn by_walk(b: &[u8], k: RecordKey, ts: i64) -> Option<(u32, Vec<u8>)> {
        Records::new(b, k)
            .find(|r| r.ts >= ts)
            .filter(|r| r.ts == ts)
            .map(|r| (r.off, r.data.to_vec()))
    }

    #[test]
    fn a_verified_lookup_finds_what_a_whole_walk_finds() {
        let b = block(7, &[(10, b"a"), (20, b"bb"), (30, b"ccc")]);
        let mut walk = Records::new(&b, key(7));
        walk.by_ref().for_each(drop);
        // The walk ended on the zeroed rest of the block: on structure.
        assert!(walk.ended_on_structure());
        for ts in [5, 10, 15, 20, 30, 31] {
            let got = find_verified(&b, key(7), ts).map(|r| (r.off, r.data.to_vec()));
            assert_eq!(got, by_walk(&b, key(7), ts), "ts {ts}");
        }
        // The record returned is checksummed every time: a damaged payload
        // (or another sequence number) is never returned.
        let mut c = b.clone();
        let third = BLOCK_HEADER_LEN + 2 * RECORD_HEADER_LEN + 3;
        c[third + RECORD_HEADER_LEN] ^= 1;
        assert!(find_verified(&c, key(7), 30).is_none());
        assert!(find_verified(&b, key(8), 20).is_none());
    }

    #[test]
    fn a_walk_that_ends_on_a_checksum_does_not_end_on_structure() {
        // Records after a bad one (a torn sector, say) are structurally
        // fine: a lookup following the structure would find them, so such
        // a block must never be marked verified.
        let b = block(7, &[(10, b"a"), (20, b"bb"), (30, b"ccc")]);
        let mut c = b.clone();
        c[BLOCK_HEADER_LEN + RECORD_HEADER_LEN + 1 + RECORD_HEADER_LEN] ^= 1;
        let mut walk = Records::new(&c, key(7));
        assert_eq!(walk.by_ref().count(), 1);
        assert!(!walk.ended_on_structure());
        assert_eq!(by_walk(&c, key(7), 30), None);
        assert!(find_verified(&c, key(7), 30).is_some());
    }

    #[test]
    fn walk_rejects_non_increasing_timestamps() {
        let b = block(1, &[(10, b"a"), (10, b"b")]);
        assert_eq!(Records::new(&b, key(1)).count(), 1);
    }

    #[test]
    fn filters() {
        let f = Filter::new("Sensor:01", false);
        assert!(f.matches(br#"{"id":"Sensor:01"}"#));
        assert!(!f.matches(br#"{"id":"sensor:01"}"#));
        let f = Filter::new("BUILDING A", true);
        assert!(f.matches(b"building a north"));
        assert!(f.matches(&[0xff, b'b', b'U', b'i', b'l', b'd', b'i', b'n', b'g', b' ', b'a']));
        let f = Filter::new("ÄPFEL", true);
        assert!(f.matches("grüne äpfel".as_bytes()));
        assert!(Filter::new("", false).matches(b"anything"));
    }
}
