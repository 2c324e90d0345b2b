//! The on-disk format: magic numbers, versions, offsets, encoding and decoding
//! of every structure, and their checksums. No I/O happens here.
//!
//! The byte layout is specified in `FORMAT.md` (rendered as the docs of
//! [`crate::store::format_spec`]); the constants below are built from one
//! another so that the layout is stated once. All integers are little-endian.
//! Every decoder validates magic, checksum and bounds before a value is
//! returned, so nothing read from disk is trusted unchecked.

/// Format version written to `meta.tsdb`. See "Version changes" in FORMAT.md.
pub const FORMAT_VERSION: u32 = 1;

// ---------------------------------------------------------------- meta.tsdb

/// Magic bytes at the start of each meta slot.
pub const META_MAGIC: [u8; 8] = *b"TSSTMETA";
/// Offset of the magic in a meta slot.
pub const META_MAGIC_OFF: usize = 0;
pub const META_VERSION_OFF: usize = META_MAGIC_OFF + 8;
pub const META_DATA_TYPE_OFF: usize = META_VERSION_OFF + 4;
pub const META_DURABILITY_OFF: usize = META_DATA_TYPE_OFF + 1;
/// Flags: bit 0 = the store was closed cleanly (see [`Meta::clean`]).
pub const META_FLAGS_OFF: usize = META_DURABILITY_OFF + 1;
pub const META_RESERVED0_OFF: usize = META_FLAGS_OFF + 1;
pub const META_NUM_BLOCKS_OFF: usize = META_RESERVED0_OFF + 1;
/// The clean-close flag in the flags byte.
pub const META_FLAG_CLEAN: u8 = 1;
pub const META_DATA_BLOCK_OFF: usize = META_NUM_BLOCKS_OFF + 4;
pub const META_INDEX_BLOCK_OFF: usize = META_DATA_BLOCK_OFF + 4;
pub const META_INTERVAL_OFF: usize = META_INDEX_BLOCK_OFF + 4;
pub const META_GENERATION_OFF: usize = META_INTERVAL_OFF + 4;
pub const META_BASE_SEQ_OFF: usize = META_GENERATION_OFF + 8;
pub const META_SESSION_OFF: usize = META_BASE_SEQ_OFF + 8;
pub const META_SESSION_START_OFF: usize = META_SESSION_OFF + 4;
pub const META_CREATED_OFF: usize = META_SESSION_START_OFF + 8;
pub const META_CRC_OFF: usize = META_CREATED_OFF + 8;
/// Bytes of a meta slot that carry data (the checksum covers `0..META_CRC_OFF`).
pub const META_SLOT_LEN: usize = META_CRC_OFF + 4;
/// Distance between the two meta slots: one sector, so a torn write of one
/// slot cannot touch the other.
pub const META_SLOT_STRIDE: usize = 512;
/// Size of `meta.tsdb`.
pub const META_FILE_LEN: u64 = 2 * META_SLOT_STRIDE as u64;

// ---------------------------------------------------------------- data.tsdb

/// Magic at the start of every written data block ("TBLK").
pub const BLOCK_MAGIC: u32 = u32::from_le_bytes(*b"TBLK");
pub const BLOCK_MAGIC_OFF: usize = 0;
pub const BLOCK_KIND_OFF: usize = BLOCK_MAGIC_OFF + 4;
/// A 24-bit field: see [`BlockHeader::span`].
pub const BLOCK_SPAN_OFF: usize = BLOCK_KIND_OFF + 1;
pub const BLOCK_SEQ_OFF: usize = BLOCK_SPAN_OFF + 3;
pub const BLOCK_FIRST_TS_OFF: usize = BLOCK_SEQ_OFF + 8;
pub const BLOCK_SESSION_OFF: usize = BLOCK_FIRST_TS_OFF + 8;
pub const BLOCK_CRC_OFF: usize = BLOCK_SESSION_OFF + 4;
/// Largest number of blocks one object may span (the span field has 24 bits).
pub const MAX_SPAN_BLOCKS: u32 = (1 << 24) - 1;
/// Size of the header at the start of every data block.
pub const BLOCK_HEADER_LEN: usize = BLOCK_CRC_OFF + 4;

pub const REC_TS_OFF: usize = 0;
pub const REC_LEN_OFF: usize = REC_TS_OFF + 8;
pub const REC_CRC_OFF: usize = REC_LEN_OFF + 4;
/// Size of the header in front of every object.
pub const RECORD_HEADER_LEN: usize = REC_CRC_OFF + 4;
/// Byte (within a record header) that holds the soft-delete flag: the most
/// significant byte of the little-endian length word, so a delete is a
/// single-byte write.
pub const REC_DELETED_BYTE_OFF: usize = REC_LEN_OFF + 3;
/// The soft-delete flag inside that byte.
pub const REC_DELETED_BIT: u8 = 0x80;
/// Largest object the format can describe (the length word has 31 bits).
pub const MAX_OBJECT_LEN: u64 = (1 << 31) - 1;

// --------------------------------------------------------------- index.tsdb

pub const IDX_SEQ_OFF: usize = 0;
pub const IDX_FIRST_TS_OFF: usize = IDX_SEQ_OFF + 8;
pub const IDX_SYNCED_OFF: usize = IDX_FIRST_TS_OFF + 8;
pub const IDX_INFO_OFF: usize = IDX_SYNCED_OFF + 4;
pub const IDX_PENDING_OFF: usize = IDX_INFO_OFF + 4;
pub const IDX_CRC_OFF: usize = IDX_PENDING_OFF + 4;
/// Size of one index entry; index blocks hold `index_block_size / INDEX_ENTRY_LEN`.
pub const INDEX_ENTRY_LEN: usize = IDX_CRC_OFF + 4;
/// Bits of `info` that hold the live-object count.
pub const IDX_LIVE_MASK: u32 = 0x00FF_FFFF;
/// Shift of the block kind inside `info`.
pub const IDX_KIND_SHIFT: u32 = 24;

/// Smallest allowed block size (data and index).
pub const MIN_BLOCK_SIZE: u32 = 64;
/// Largest allowed data block size: keeps per-block object counts within the
/// 24 bits an index entry has for them.
pub const MAX_DATA_BLOCK_SIZE: u32 = 1 << 28;
/// Largest allowed index block size.
pub const MAX_INDEX_BLOCK_SIZE: u32 = 1 << 28;

/// Checksum used everywhere: CRC-32C (Castagnoli), hardware accelerated on
/// x86_64 (SSE 4.2) and aarch64 (CRC extension).
#[inline]
pub fn crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

#[inline]
fn crc_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

#[inline]
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

#[inline]
pub fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[inline]
pub fn get_i64(b: &[u8], off: usize) -> i64 {
    get_u64(b, off) as i64
}

#[inline]
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

// ------------------------------------------------------------------ meta

/// The contents of one meta slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub data_type: u8,
    pub durability: u8,
    pub num_blocks: u32,
    pub data_block_size: u32,
    pub index_block_size: u32,
    pub sync_interval_ms: u32,
    /// Incremented on every meta write; the valid slot with the highest
    /// generation wins.
    pub generation: u64,
    /// Sequence number of the first live block (raised by a reset).
    pub base_seq: u64,
    /// Session number: incremented on every open; blocks carry the session
    /// that wrote them.
    pub session: u32,
    /// First block sequence number written by `session`.
    pub session_start: u64,
    pub created_ns: i64,
    /// Written by a clean close, cleared by the next open: everything up
    /// to the head is synced, its index entry says so, and no block beyond
    /// the head was written. Open then trusts the index without reading
    /// every block header.
    pub clean: bool,
}

impl Meta {
    pub fn encode(&self) -> [u8; META_SLOT_LEN] {
        let mut b = [0u8; META_SLOT_LEN];
        b[META_MAGIC_OFF..META_MAGIC_OFF + 8].copy_from_slice(&META_MAGIC);
        put_u32(&mut b, META_VERSION_OFF, FORMAT_VERSION);
        b[META_DATA_TYPE_OFF] = self.data_type;
        b[META_DURABILITY_OFF] = self.durability;
        b[META_FLAGS_OFF] = if self.clean { META_FLAG_CLEAN } else { 0 };
        put_u32(&mut b, META_NUM_BLOCKS_OFF, self.num_blocks);
        put_u32(&mut b, META_DATA_BLOCK_OFF, self.data_block_size);
        put_u32(&mut b, META_INDEX_BLOCK_OFF, self.index_block_size);
        put_u32(&mut b, META_INTERVAL_OFF, self.sync_interval_ms);
        put_u64(&mut b, META_GENERATION_OFF, self.generation);
        put_u64(&mut b, META_BASE_SEQ_OFF, self.base_seq);
        put_u32(&mut b, META_SESSION_OFF, self.session);
        put_u64(&mut b, META_SESSION_START_OFF, self.session_start);
        put_u64(&mut b, META_CREATED_OFF, self.created_ns as u64);
        let c = crc(&b[..META_CRC_OFF]);
        put_u32(&mut b, META_CRC_OFF, c);
        b
    }

    /// Decodes one slot. `Err` carries the reason the slot is not valid.
    pub fn decode(b: &[u8]) -> Result<Meta, &'static str> {
        if b.len() < META_SLOT_LEN {
            return Err("meta slot truncated");
        }
        if b[META_MAGIC_OFF..META_MAGIC_OFF + 8] != META_MAGIC {
            return Err("bad magic");
        }
        if crc(&b[..META_CRC_OFF]) != get_u32(b, META_CRC_OFF) {
            return Err("checksum mismatch");
        }
        if get_u32(b, META_VERSION_OFF) != FORMAT_VERSION {
            return Err("unsupported format version");
        }
        Ok(Meta {
            data_type: b[META_DATA_TYPE_OFF],
            durability: b[META_DURABILITY_OFF],
            num_blocks: get_u32(b, META_NUM_BLOCKS_OFF),
            data_block_size: get_u32(b, META_DATA_BLOCK_OFF),
            index_block_size: get_u32(b, META_INDEX_BLOCK_OFF),
            sync_interval_ms: get_u32(b, META_INTERVAL_OFF),
            generation: get_u64(b, META_GENERATION_OFF),
            base_seq: get_u64(b, META_BASE_SEQ_OFF),
            session: get_u32(b, META_SESSION_OFF),
            session_start: get_u64(b, META_SESSION_START_OFF),
            created_ns: get_i64(b, META_CREATED_OFF),
            clean: b[META_FLAGS_OFF] & META_FLAG_CLEAN != 0,
        })
    }

    /// Offset in `meta.tsdb` of the slot this generation is written to.
    pub fn slot_offset(generation: u64) -> u64 {
        (generation % 2) * META_SLOT_STRIDE as u64
    }
}

// ----------------------------------------------------------- data blocks

/// What a data block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockKind {
    /// One or more whole objects packed back to back.
    Packed = 1,
    /// The first block of an object larger than a block.
    SpanStart = 2,
    /// A following block of such an object.
    SpanCont = 3,
}

impl BlockKind {
    pub fn from_u8(v: u8) -> Option<BlockKind> {
        match v {
            1 => Some(BlockKind::Packed),
            2 => Some(BlockKind::SpanStart),
            3 => Some(BlockKind::SpanCont),
            _ => None,
        }
    }
}

/// The header at the start of a data block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub kind: BlockKind,
    pub session: u32,
    pub seq: u64,
    /// Packed: timestamp of the first object; span blocks: the object's.
    pub first_ts: i64,
    /// SpanStart: number of blocks of the object; SpanCont: position of this
    /// block within it (1-based); Packed: 0.
    pub span: u32,
}

impl BlockHeader {
    pub fn encode_into(&self, b: &mut [u8]) {
        put_u32(b, BLOCK_MAGIC_OFF, BLOCK_MAGIC);
        b[BLOCK_KIND_OFF] = self.kind as u8;
        b[BLOCK_SPAN_OFF..BLOCK_SPAN_OFF + 3].copy_from_slice(&self.span.to_le_bytes()[..3]);
        put_u64(b, BLOCK_SEQ_OFF, self.seq);
        put_u64(b, BLOCK_FIRST_TS_OFF, self.first_ts as u64);
        put_u32(b, BLOCK_SESSION_OFF, self.session);
        let c = crc(&b[..BLOCK_CRC_OFF]);
        put_u32(b, BLOCK_CRC_OFF, c);
    }

    /// Decodes and validates a block header; `None` if it is not a valid one.
    pub fn decode(b: &[u8]) -> Option<BlockHeader> {
        if b.len() < BLOCK_HEADER_LEN || get_u32(b, BLOCK_MAGIC_OFF) != BLOCK_MAGIC {
            return None;
        }
        if crc(&b[..BLOCK_CRC_OFF]) != get_u32(b, BLOCK_CRC_OFF) {
            return None;
        }
        Some(BlockHeader {
            kind: BlockKind::from_u8(b[BLOCK_KIND_OFF])?,
            session: get_u32(b, BLOCK_SESSION_OFF),
            seq: get_u64(b, BLOCK_SEQ_OFF),
            first_ts: get_i64(b, BLOCK_FIRST_TS_OFF),
            span: u32::from_le_bytes([
                b[BLOCK_SPAN_OFF],
                b[BLOCK_SPAN_OFF + 1],
                b[BLOCK_SPAN_OFF + 2],
                0,
            ]),
        })
    }
}

/// The checksum of a record: covers the block's sequence number (so a record
/// left over from an earlier lap of the ring never validates), the
/// timestamp, the length without the delete flag, and the payload.
pub fn record_crc(seq: u64, ts: i64, len: u32, data: &[u8]) -> u32 {
    let mut pre = [0u8; 20];
    pre[..8].copy_from_slice(&seq.to_le_bytes());
    pre[8..16].copy_from_slice(&ts.to_le_bytes());
    pre[16..20].copy_from_slice(&len.to_le_bytes());
    crc_append(crc(&pre), data)
}

/// Writes a record header for `data` into `b[..RECORD_HEADER_LEN]`.
pub fn encode_record_header(b: &mut [u8], seq: u64, ts: i64, data: &[u8]) {
    let len = data.len() as u32;
    put_u64(b, REC_TS_OFF, ts as u64);
    put_u32(b, REC_LEN_OFF, len);
    put_u32(b, REC_CRC_OFF, record_crc(seq, ts, len, data));
}

/// A record header as read from disk, not yet validated against its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub ts: i64,
    pub len: u32,
    pub deleted: bool,
    pub crc: u32,
}

impl RecordHeader {
    #[inline]
    pub fn decode(b: &[u8]) -> RecordHeader {
        let lw = get_u32(b, REC_LEN_OFF);
        RecordHeader {
            ts: get_i64(b, REC_TS_OFF),
            len: lw & !(1 << 31),
            deleted: lw & (1 << 31) != 0,
            crc: get_u32(b, REC_CRC_OFF),
        }
    }
}

// ----------------------------------------------------------- index entries

/// One entry of `index.tsdb`: a summary of one data block. Entries are a
/// cache: a missing, torn or stale entry is rebuilt from the data block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub seq: u64,
    pub first_ts: i64,
    /// All blocks before `synced_seq` were sealed, and data and index were
    /// on stable storage through `synced_seq`, when this entry was written.
    pub synced_seq: u64,
    pub live: u32,
    pub kind: BlockKind,
    /// Offset of a record whose soft delete is in flight (0 = none).
    pub pending_delete: u32,
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        put_u64(&mut b, IDX_SEQ_OFF, self.seq);
        put_u64(&mut b, IDX_FIRST_TS_OFF, self.first_ts as u64);
        let delta = self
            .seq
            .saturating_sub(self.synced_seq)
            .min(u32::MAX as u64) as u32;
        put_u32(&mut b, IDX_SYNCED_OFF, delta);
        let info = (self.live & IDX_LIVE_MASK) | ((self.kind as u32) << IDX_KIND_SHIFT);
        put_u32(&mut b, IDX_INFO_OFF, info);
        put_u32(&mut b, IDX_PENDING_OFF, self.pending_delete);
        let c = crc(&b[..IDX_CRC_OFF]);
        put_u32(&mut b, IDX_CRC_OFF, c);
        b
    }

    /// Decodes and validates an entry; `None` if it is not a valid one.
    pub fn decode(b: &[u8]) -> Option<IndexEntry> {
        if b.len() < INDEX_ENTRY_LEN || crc(&b[..IDX_CRC_OFF]) != get_u32(b, IDX_CRC_OFF) {
            return None;
        }
        let seq = get_u64(b, IDX_SEQ_OFF);
        if seq == 0 {
            return None;
        }
        let info = get_u32(b, IDX_INFO_OFF);
        let delta = get_u32(b, IDX_SYNCED_OFF);
        Some(IndexEntry {
            seq,
            first_ts: get_i64(b, IDX_FIRST_TS_OFF),
            synced_seq: if delta == u32::MAX {
                0
            } else {
                seq.saturating_sub(delta as u64)
            },
            live: info & IDX_LIVE_MASK,
            kind: BlockKind::from_u8((info >> IDX_KIND_SHIFT) as u8)?,
            pending_delete: get_u32(b, IDX_PENDING_OFF),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The totals FORMAT.md states.
    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(META_SLOT_LEN, 72);
        assert_eq!(META_FILE_LEN, 1024);
        assert_eq!(BLOCK_HEADER_LEN, 32);
        assert_eq!(RECORD_HEADER_LEN, 16);
        assert_eq!(REC_DELETED_BYTE_OFF, 11);
        assert_eq!((META_FLAGS_OFF, META_NUM_BLOCKS_OFF), (14, 16));
        assert_eq!(INDEX_ENTRY_LEN, 32);
        assert_eq!(BLOCK_SEQ_OFF, 8);
        assert_eq!(IDX_PENDING_OFF, 24);
    }

    #[test]
    fn meta_round_trip_and_corruption() {
        let m = Meta {
            data_type: 2,
            durability: 1,
            num_blocks: 1024,
            data_block_size: 4096,
            index_block_size: 4096,
            sync_interval_ms: 1000,
            generation: 7,
            base_seq: 1,
            session: 3,
            session_start: 99,
            created_ns: 1_700_000_000_000_000_000,
            clean: true,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b), Ok(m));
        b[20] ^= 1;
        assert_eq!(Meta::decode(&b), Err("checksum mismatch"));
        assert_eq!(Meta::decode(&b[..10]), Err("meta slot truncated"));
    }

    #[test]
    fn block_header_round_trip_and_corruption() {
        let h = BlockHeader {
            kind: BlockKind::SpanStart,
            session: 2,
            seq: 12345,
            first_ts: 42,
            span: 3,
        };
        let mut b = [0u8; BLOCK_HEADER_LEN];
        h.encode_into(&mut b);
        assert_eq!(BlockHeader::decode(&b), Some(h));
        for i in 0..BLOCK_HEADER_LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert_eq!(BlockHeader::decode(&c), None, "flip at byte {i}");
        }
        assert_eq!(BlockHeader::decode(&[0u8; BLOCK_HEADER_LEN]), None);
    }

    #[test]
    fn record_crc_depends_on_seq_and_ignores_delete_flag() {
        let mut b = [0u8; RECORD_HEADER_LEN];
        encode_record_header(&mut b, 5, 100, b"hello");
        let h = RecordHeader::decode(&b);
        assert_eq!(h.crc, record_crc(5, 100, 5, b"hello"));
        assert_ne!(h.crc, record_crc(6, 100, 5, b"hello"));
        b[REC_DELETED_BYTE_OFF] |= REC_DELETED_BIT;
        let d = RecordHeader::decode(&b);
        assert!(d.deleted);
        assert_eq!(d.len, 5);
        assert_eq!(d.crc, h.crc);
    }

    #[test]
    fn index_entry_round_trip() {
        let e = IndexEntry {
            seq: 1000,
            first_ts: -5,
            synced_seq: 990,
            live: 35,
            kind: BlockKind::Packed,
            pending_delete: 148,
        };
        let mut b = e.encode();
        assert_eq!(IndexEntry::decode(&b), Some(e));
        b[3] ^= 0xff;
        assert_eq!(IndexEntry::decode(&b), None);
        assert_eq!(IndexEntry::decode(&[0u8; INDEX_ENTRY_LEN]), None);
    }
}
