//! The on-disk format: magic numbers, versions, offsets, encoding and decoding
//! of every structure, and their checksums. No I/O happens here.
//!
//! The byte layout is specified in `FORMAT.md` (rendered as the docs of
//! [`crate::store::format_spec`]); the constants below are built from one
//! another so that the layout is stated once. All integers are little-endian.
//! Every decoder validates magic, checksum and bounds before a value is
//! returned, so nothing read from disk is trusted unchecked.
//!
//! Version 2 is written; version 1 is still decoded (meta, blocks, records)
//! so that a version 1 store can be recovered and upgraded.

/// Format version written to `meta.tsdb`. See "Version changes" in FORMAT.md.
pub const FORMAT_VERSION: u32 = 2;
/// The first format, still read (and upgraded) by this engine.
pub const FORMAT_VERSION_V1: u32 = 1;

/// The unit a flash device programs, and may garble whole when a write to it
/// is in flight at a power cut (FORMAT.md, "Assumptions about the medium").
pub const PAGE: usize = 4096;

// ---------------------------------------------------------------- meta.tsdb

/// Magic bytes at the start of each meta slot.
pub const META_MAGIC: [u8; 8] = *b"TSSTMETA";
/// Offset of the magic in a meta slot.
pub const META_MAGIC_OFF: usize = 0;
pub const META_VERSION_OFF: usize = META_MAGIC_OFF + 8;
pub const META_DATA_TYPE_OFF: usize = META_VERSION_OFF + 4;
pub const META_DURABILITY_OFF: usize = META_DATA_TYPE_OFF + 1;
/// Flags: bit 0 = closed cleanly (version 1 only; see [`Meta::clean`]).
pub const META_FLAGS_OFF: usize = META_DURABILITY_OFF + 1;
pub const META_RESERVED0_OFF: usize = META_FLAGS_OFF + 1;
pub const META_NUM_BLOCKS_OFF: usize = META_RESERVED0_OFF + 1;
/// The clean-close flag in the flags byte (version 1).
pub const META_FLAG_CLEAN: u8 = 1;
pub const META_DATA_BLOCK_OFF: usize = META_NUM_BLOCKS_OFF + 4;
pub const META_INDEX_BLOCK_OFF: usize = META_DATA_BLOCK_OFF + 4;
pub const META_INTERVAL_OFF: usize = META_INDEX_BLOCK_OFF + 4;
pub const META_GENERATION_OFF: usize = META_INTERVAL_OFF + 4;
pub const META_BASE_SEQ_OFF: usize = META_GENERATION_OFF + 8;
pub const META_SESSION_OFF: usize = META_BASE_SEQ_OFF + 8;
pub const META_SESSION_START_OFF: usize = META_SESSION_OFF + 4;
pub const META_CREATED_OFF: usize = META_SESSION_START_OFF + 8;
/// Version 2: sequence numbers below the floor are never live.
pub const META_FLOOR_OFF: usize = META_CREATED_OFF + 8;
pub const META_CRC_OFF: usize = META_FLOOR_OFF + 8;
/// Bytes of a version 2 meta slot that carry data (the checksum covers
/// `0..META_CRC_OFF`).
pub const META_SLOT_LEN: usize = META_CRC_OFF + 4;
/// Distance between the two meta slots: one page each, so that a write of
/// one slot garbled by a power cut cannot touch the other.
pub const META_SLOT_STRIDE: usize = PAGE;
/// Size of `meta.tsdb`.
pub const META_FILE_LEN: u64 = 2 * META_SLOT_STRIDE as u64;

/// Version 1: the checksum follows the creation time (no floor).
pub const META_V1_CRC_OFF: usize = META_CREATED_OFF + 8;
pub const META_V1_SLOT_LEN: usize = META_V1_CRC_OFF + 4;
pub const META_V1_SLOT_STRIDE: usize = 512;
pub const META_V1_FILE_LEN: u64 = 2 * META_V1_SLOT_STRIDE as u64;

// ---------------------------------------------------------------- data.tsdb

/// Magic of a block written by format version 1 ("TBLK").
pub const BLOCK_MAGIC_V1: u32 = u32::from_le_bytes(*b"TBLK");
/// Magic of a block written by format version 2 ("TBL2"): its records'
/// checksums cover the block's session too.
pub const BLOCK_MAGIC: u32 = u32::from_le_bytes(*b"TBL2");
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
/// significant byte of the little-endian length word.
pub const REC_DELETED_BYTE_OFF: usize = REC_LEN_OFF + 3;
/// The soft-delete flag inside that byte.
pub const REC_DELETED_BIT: u8 = 0x80;
/// Largest object the format can describe (the length word has 31 bits).
pub const MAX_OBJECT_LEN: u64 = (1 << 31) - 1;

// ------------------------------------------------------- the commit area

/// The commit area starts at the first multiple of this at or after the end
/// of the ring: 16 KiB, the largest system page size the engine maps (a
/// mapping dirties whole system pages, and each commit slot must sit in
/// pages of its own).
pub const COMMIT_ALIGN: u64 = 16 * 1024;
/// Commit slots, used round-robin: commit `c` goes to slot `c % 3`.
pub const COMMIT_SLOTS: usize = 3;
/// Distance between two commit slots.
pub const SLOT_STRIDE: usize = 16 * 1024;
/// Size of the commit area at the end of `data.tsdb`.
pub const COMMIT_AREA_LEN: u64 = (COMMIT_SLOTS * SLOT_STRIDE) as u64;

/// Offset of the working header within a slot.
pub const SLOT_WORKING_OFF: usize = 0;
/// Offset of the committed header within a slot.
pub const SLOT_COMMITTED_OFF: usize = SLOT_WORKING_OFF + WORKING_LEN;
/// Offset of the frontier image within a slot: right after the headers, so
/// that a commit of up to `PAGE - SLOT_FRONTIER_OFF` bytes of image
/// dirties one page.
pub const SLOT_FRONTIER_OFF: usize = SLOT_COMMITTED_OFF + COMMITTED_LEN;
/// Offset of the aux image (a soft delete's page) within a slot: a page of
/// its own.
pub const SLOT_AUX_OFF: usize = 2 * PAGE;

pub const WORKING_MAGIC: [u8; 4] = *b"TSWK";
pub const WK_MAGIC_OFF: usize = 0;
pub const WK_RESERVED_OFF: usize = WK_MAGIC_OFF + 4;
pub const WK_BASE_OFF: usize = WK_RESERVED_OFF + 4;
pub const WK_SESSION_OFF: usize = WK_BASE_OFF + 8;
pub const WK_RESERVED2_OFF: usize = WK_SESSION_OFF + 4;
pub const WK_BASE_SEQ_OFF: usize = WK_RESERVED2_OFF + 4;
pub const WK_PAGE_OFF: usize = WK_BASE_SEQ_OFF + 8;
pub const WK_FIRST_SEQ_OFF: usize = WK_PAGE_OFF + 8;
pub const WK_RESERVED3_OFF: usize = WK_FIRST_SEQ_OFF + 8;
pub const WK_CRC_OFF: usize = WK_RESERVED3_OFF + 12;
/// Size of the working header.
pub const WORKING_LEN: usize = WK_CRC_OFF + 4;

pub const COMMITTED_MAGIC: [u8; 4] = *b"TSCM";
pub const CM_MAGIC_OFF: usize = 0;
/// Bit 0: self-contained; bit 1: an aux image follows.
pub const CM_FLAGS_OFF: usize = CM_MAGIC_OFF + 4;
pub const CM_RESERVED_OFF: usize = CM_FLAGS_OFF + 1;
pub const CM_COUNTER_OFF: usize = CM_RESERVED_OFF + 3;
pub const CM_SESSION_OFF: usize = CM_COUNTER_OFF + 8;
pub const CM_FILL_OFF: usize = CM_SESSION_OFF + 4;
pub const CM_BASE_SEQ_OFF: usize = CM_FILL_OFF + 4;
pub const CM_NEXT_SEQ_OFF: usize = CM_BASE_SEQ_OFF + 8;
pub const CM_HEAD_LEN_OFF: usize = CM_NEXT_SEQ_OFF + 8;
pub const CM_RESERVED2_OFF: usize = CM_HEAD_LEN_OFF + 4;
pub const CM_PAGE_OFF: usize = CM_RESERVED2_OFF + 4;
pub const CM_FIRST_SEQ_OFF: usize = CM_PAGE_OFF + 8;
pub const CM_LAST_TS_OFF: usize = CM_FIRST_SEQ_OFF + 8;
pub const CM_LEASE_END_OFF: usize = CM_LAST_TS_OFF + 8;
pub const CM_INDEX_SYNCED_OFF: usize = CM_LEASE_END_OFF + 8;
pub const CM_AUX_PAGE_OFF: usize = CM_INDEX_SYNCED_OFF + 8;
pub const CM_AUX_FIRST_SEQ_OFF: usize = CM_AUX_PAGE_OFF + 8;
pub const CM_AUX_LEN_OFF: usize = CM_AUX_FIRST_SEQ_OFF + 8;
pub const CM_RESERVED3_OFF: usize = CM_AUX_LEN_OFF + 4;
pub const CM_CRC_OFF: usize = CM_RESERVED3_OFF + 16;
/// Size of the committed header.
pub const COMMITTED_LEN: usize = CM_CRC_OFF + 4;
/// Committed flag: the commit depends on no write made since the sync
/// before it (written by create, by recovery and by the upgrade).
pub const CM_FLAG_SELF_CONTAINED: u8 = 1;
/// Committed flag: the slot carries an aux image.
pub const CM_FLAG_AUX: u8 = 2;
/// `lease_end` of a commit that bounds nothing (policy `never`, small
/// rings): recovery reads every block header.
pub const LEASE_UNBOUNDED: u64 = u64::MAX;

/// Offset in `data.tsdb` of the commit area of a ring of `ring_len` bytes.
pub fn commit_area_offset(ring_len: u64) -> u64 {
    ring_len.div_ceil(COMMIT_ALIGN) * COMMIT_ALIGN
}

/// Offset in `data.tsdb` of commit slot `slot` (0, 1 or 2).
pub fn slot_offset(ring_len: u64, slot: usize) -> u64 {
    commit_area_offset(ring_len) + (slot * SLOT_STRIDE) as u64
}

/// The slot commit `counter` goes to.
pub fn slot_of(counter: u64) -> usize {
    (counter % COMMIT_SLOTS as u64) as usize
}

// --------------------------------------------------------------- index.tsdb

pub const IDX_SEQ_OFF: usize = 0;
pub const IDX_FIRST_TS_OFF: usize = IDX_SEQ_OFF + 8;
pub const IDX_SYNCED_OFF: usize = IDX_FIRST_TS_OFF + 8;
pub const IDX_INFO_OFF: usize = IDX_SYNCED_OFF + 4;
/// Version 1: offset of a record whose soft delete is in flight; version 2:
/// a span start's number of blocks (see [`IndexEntry::extra`]).
pub const IDX_EXTRA_OFF: usize = IDX_INFO_OFF + 4;
pub const IDX_CRC_OFF: usize = IDX_EXTRA_OFF + 4;
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
    /// Format version of the slot (1 or 2); [`Meta::encode`] writes this
    /// version's layout.
    pub version: u32,
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
    /// Version 1: written by a clean close, cleared by the next open.
    /// Version 2 writes it as false and ignores it (its commit slots say
    /// everything a clean close did).
    pub clean: bool,
    /// Version 2: blocks with a sequence number below it are never live
    /// (version 1: 0).
    pub floor_seq: u64,
}

impl Meta {
    /// Encodes the slot in the layout of `self.version`. Returns the whole
    /// slot (`META_SLOT_LEN` bytes; a version 1 slot uses its first
    /// `META_V1_SLOT_LEN`).
    pub fn encode(&self) -> Vec<u8> {
        let v1 = self.version == FORMAT_VERSION_V1;
        let len = if v1 { META_V1_SLOT_LEN } else { META_SLOT_LEN };
        let mut b = vec![0u8; len];
        b[META_MAGIC_OFF..META_MAGIC_OFF + 8].copy_from_slice(&META_MAGIC);
        put_u32(&mut b, META_VERSION_OFF, self.version);
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
        let crc_off = if v1 {
            META_V1_CRC_OFF
        } else {
            put_u64(&mut b, META_FLOOR_OFF, self.floor_seq);
            META_CRC_OFF
        };
        let c = crc(&b[..crc_off]);
        put_u32(&mut b, crc_off, c);
        b
    }

    /// Decodes one slot of either version. `Err` carries the reason the
    /// slot is not valid.
    pub fn decode(b: &[u8]) -> Result<Meta, &'static str> {
        if b.len() < META_V1_SLOT_LEN {
            return Err("meta slot truncated");
        }
        if b[META_MAGIC_OFF..META_MAGIC_OFF + 8] != META_MAGIC {
            return Err("bad magic");
        }
        let version = get_u32(b, META_VERSION_OFF);
        let crc_off = match version {
            FORMAT_VERSION_V1 => META_V1_CRC_OFF,
            FORMAT_VERSION if b.len() >= META_SLOT_LEN => META_CRC_OFF,
            FORMAT_VERSION => return Err("meta slot truncated"),
            _ => return Err("unsupported format version"),
        };
        if crc(&b[..crc_off]) != get_u32(b, crc_off) {
            return Err("checksum mismatch");
        }
        Ok(Meta {
            version,
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
            floor_seq: if version == FORMAT_VERSION {
                get_u64(b, META_FLOOR_OFF)
            } else {
                0
            },
        })
    }

    /// Offset in a version 2 `meta.tsdb` of the slot this generation is
    /// written to.
    pub fn slot_offset(generation: u64) -> u64 {
        (generation % 2) * META_SLOT_STRIDE as u64
    }

    /// Offset in a version 1 `meta.tsdb` of the slot of this generation.
    pub fn slot_offset_v1(generation: u64) -> u64 {
        (generation % 2) * META_V1_SLOT_STRIDE as u64
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
    /// Format version the block was written in (its magic): 1 or 2. It
    /// decides the record checksum (see [`record_crc`]).
    pub version: u32,
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
        let magic = if self.version == FORMAT_VERSION_V1 {
            BLOCK_MAGIC_V1
        } else {
            BLOCK_MAGIC
        };
        put_u32(b, BLOCK_MAGIC_OFF, magic);
        b[BLOCK_KIND_OFF] = self.kind as u8;
        b[BLOCK_SPAN_OFF..BLOCK_SPAN_OFF + 3].copy_from_slice(&self.span.to_le_bytes()[..3]);
        put_u64(b, BLOCK_SEQ_OFF, self.seq);
        put_u64(b, BLOCK_FIRST_TS_OFF, self.first_ts as u64);
        put_u32(b, BLOCK_SESSION_OFF, self.session);
        let c = crc(&b[..BLOCK_CRC_OFF]);
        put_u32(b, BLOCK_CRC_OFF, c);
    }

    /// Decodes and validates a block header of either version; `None` if
    /// it is not a valid one.
    pub fn decode(b: &[u8]) -> Option<BlockHeader> {
        if b.len() < BLOCK_HEADER_LEN {
            return None;
        }
        let version = match get_u32(b, BLOCK_MAGIC_OFF) {
            BLOCK_MAGIC => FORMAT_VERSION,
            BLOCK_MAGIC_V1 => FORMAT_VERSION_V1,
            _ => return None,
        };
        if crc(&b[..BLOCK_CRC_OFF]) != get_u32(b, BLOCK_CRC_OFF) {
            return None;
        }
        Some(BlockHeader {
            version,
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

    /// What the checksums of this block's records are bound to.
    pub fn record_key(&self) -> RecordKey {
        RecordKey {
            version: self.version,
            seq: self.seq,
            session: self.session,
        }
    }
}

/// What a record's checksum is bound to besides its own bytes: the
/// sequence number of its block (so that a record left over from an earlier
/// lap never validates) and, in version 2 blocks, the block's session (so
/// that a record left by a crashed session never validates in a later
/// session's block with the same sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey {
    pub version: u32,
    pub seq: u64,
    pub session: u32,
}

/// The checksum of a record (FORMAT.md, "Records"). The delete flag is not
/// covered, so a soft delete is a one-byte change.
pub fn record_crc(key: RecordKey, ts: i64, len: u32, data: &[u8]) -> u32 {
    let mut pre = [0u8; 24];
    pre[..8].copy_from_slice(&key.seq.to_le_bytes());
    let n = if key.version == FORMAT_VERSION_V1 {
        pre[8..16].copy_from_slice(&ts.to_le_bytes());
        pre[16..20].copy_from_slice(&len.to_le_bytes());
        20
    } else {
        pre[8..12].copy_from_slice(&key.session.to_le_bytes());
        pre[12..20].copy_from_slice(&ts.to_le_bytes());
        pre[20..24].copy_from_slice(&len.to_le_bytes());
        24
    };
    crc_append(crc(&pre[..n]), data)
}

/// Writes a record header for `data` into `b[..RECORD_HEADER_LEN]`.
pub fn encode_record_header(b: &mut [u8], key: RecordKey, ts: i64, data: &[u8]) {
    let len = data.len() as u32;
    put_u64(b, REC_TS_OFF, ts as u64);
    put_u32(b, REC_LEN_OFF, len);
    put_u32(b, REC_CRC_OFF, record_crc(key, ts, len, data));
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
    /// Version 1: offset of a record whose soft delete is in flight (0 =
    /// none), rolled forward at open. Version 2: the number of blocks of a
    /// span start's object, so that recovery can trust a span from the
    /// index alone (0 in other blocks, and where unknown).
    pub extra: u32,
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
        put_u32(&mut b, IDX_EXTRA_OFF, self.extra);
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
            extra: get_u32(b, IDX_EXTRA_OFF),
        })
    }
}

// ----------------------------------------------------------- commit slots

/// The working header of a commit slot: the slot mirrors, append by
/// append, the frontier page's image since the commit `base` (FORMAT.md,
/// "The commit area").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingHeader {
    /// Counter of the commit this slot's appends follow.
    pub base: u64,
    pub session: u32,
    /// `base_seq` of meta when the slot was started.
    pub base_seq: u64,
    /// File offset of the page the image is of.
    pub page_off: u64,
    /// Sequence number of the block at the page's first position, in the
    /// lap the image belongs to.
    pub first_seq: u64,
}

impl WorkingHeader {
    pub fn encode(&self) -> [u8; WORKING_LEN] {
        let mut b = [0u8; WORKING_LEN];
        b[WK_MAGIC_OFF..WK_MAGIC_OFF + 4].copy_from_slice(&WORKING_MAGIC);
        put_u64(&mut b, WK_BASE_OFF, self.base);
        put_u32(&mut b, WK_SESSION_OFF, self.session);
        put_u64(&mut b, WK_BASE_SEQ_OFF, self.base_seq);
        put_u64(&mut b, WK_PAGE_OFF, self.page_off);
        put_u64(&mut b, WK_FIRST_SEQ_OFF, self.first_seq);
        let c = crc(&b[..WK_CRC_OFF]);
        put_u32(&mut b, WK_CRC_OFF, c);
        b
    }

    pub fn decode(b: &[u8]) -> Option<WorkingHeader> {
        if b.len() < WORKING_LEN
            || b[WK_MAGIC_OFF..WK_MAGIC_OFF + 4] != WORKING_MAGIC
            || crc(&b[..WK_CRC_OFF]) != get_u32(b, WK_CRC_OFF)
        {
            return None;
        }
        Some(WorkingHeader {
            base: get_u64(b, WK_BASE_OFF),
            session: get_u32(b, WK_SESSION_OFF),
            base_seq: get_u64(b, WK_BASE_SEQ_OFF),
            page_off: get_u64(b, WK_PAGE_OFF),
            first_seq: get_u64(b, WK_FIRST_SEQ_OFF),
        })
    }
}

/// An image of one page carried by a committed slot: which page, which
/// lap of it (the sequence number of the block at its first position), and
/// how many of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRef {
    pub page_off: u64,
    pub first_seq: u64,
    pub len: u32,
}

/// The committed header of a commit slot (FORMAT.md, "The commit area").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedHeader {
    pub counter: u64,
    pub session: u32,
    /// See [`CM_FLAG_SELF_CONTAINED`].
    pub self_contained: bool,
    pub base_seq: u64,
    /// The ring's next sequence number.
    pub next_seq: u64,
    /// Bytes of the open head block (`next_seq - 1`); 0 if no block is open.
    pub head_len: u32,
    /// The frontier page and the bytes of its image.
    pub frontier: PageRef,
    /// Timestamp of the newest record written.
    pub last_ts: i64,
    /// Highest sequence number the session may write before the next
    /// commit, or [`LEASE_UNBOUNDED`].
    pub lease_end: u64,
    /// Index entries of every block below it are durable and current.
    pub index_synced_seq: u64,
    /// A soft delete's page image, if the slot carries one.
    pub aux: Option<PageRef>,
}

impl CommittedHeader {
    /// Encodes the header; its checksum also covers the images that follow
    /// it in the slot (`frontier[..fill]` and `aux[..len]`).
    pub fn encode(&self, frontier: &[u8], aux: &[u8]) -> [u8; COMMITTED_LEN] {
        let mut b = [0u8; COMMITTED_LEN];
        b[CM_MAGIC_OFF..CM_MAGIC_OFF + 4].copy_from_slice(&COMMITTED_MAGIC);
        let mut flags = 0;
        if self.self_contained {
            flags |= CM_FLAG_SELF_CONTAINED;
        }
        let aux_ref = self.aux.unwrap_or(PageRef {
            page_off: 0,
            first_seq: 0,
            len: 0,
        });
        if self.aux.is_some() {
            flags |= CM_FLAG_AUX;
        }
        b[CM_FLAGS_OFF] = flags;
        put_u64(&mut b, CM_COUNTER_OFF, self.counter);
        put_u32(&mut b, CM_SESSION_OFF, self.session);
        put_u32(&mut b, CM_FILL_OFF, self.frontier.len);
        put_u64(&mut b, CM_BASE_SEQ_OFF, self.base_seq);
        put_u64(&mut b, CM_NEXT_SEQ_OFF, self.next_seq);
        put_u32(&mut b, CM_HEAD_LEN_OFF, self.head_len);
        put_u64(&mut b, CM_PAGE_OFF, self.frontier.page_off);
        put_u64(&mut b, CM_FIRST_SEQ_OFF, self.frontier.first_seq);
        put_u64(&mut b, CM_LAST_TS_OFF, self.last_ts as u64);
        put_u64(&mut b, CM_LEASE_END_OFF, self.lease_end);
        put_u64(&mut b, CM_INDEX_SYNCED_OFF, self.index_synced_seq);
        put_u64(&mut b, CM_AUX_PAGE_OFF, aux_ref.page_off);
        put_u64(&mut b, CM_AUX_FIRST_SEQ_OFF, aux_ref.first_seq);
        put_u32(&mut b, CM_AUX_LEN_OFF, aux_ref.len);
        let c = Self::checksum(&b, frontier, aux);
        put_u32(&mut b, CM_CRC_OFF, c);
        b
    }

    fn checksum(header: &[u8], frontier: &[u8], aux: &[u8]) -> u32 {
        let fill = get_u32(header, CM_FILL_OFF) as usize;
        let aux_len = get_u32(header, CM_AUX_LEN_OFF) as usize;
        let c = crc(&header[..CM_CRC_OFF]);
        let c = crc_append(c, &frontier[..fill.min(frontier.len())]);
        crc_append(c, &aux[..aux_len.min(aux.len())])
    }

    /// Decodes a committed header; `slot` is the whole slot (header and
    /// images), which its checksum covers.
    pub fn decode(slot: &[u8]) -> Option<CommittedHeader> {
        if slot.len() < SLOT_AUX_OFF + PAGE {
            return None;
        }
        let (fill, aux_len) = Self::image_lens(&slot[..SLOT_FRONTIER_OFF])?;
        Self::decode_parts(
            &slot[..SLOT_FRONTIER_OFF],
            &slot[SLOT_FRONTIER_OFF..SLOT_FRONTIER_OFF + fill],
            &slot[SLOT_AUX_OFF..SLOT_AUX_OFF + aux_len],
        )
    }

    /// The lengths of the frontier and aux images a committed header (in
    /// the first `SLOT_FRONTIER_OFF` bytes of a slot) claims, before its
    /// checksum is checked: how much of the slot to read.
    pub fn image_lens(head: &[u8]) -> Option<(usize, usize)> {
        if head.len() < SLOT_FRONTIER_OFF {
            return None;
        }
        let b = &head[SLOT_COMMITTED_OFF..SLOT_COMMITTED_OFF + COMMITTED_LEN];
        if b[CM_MAGIC_OFF..CM_MAGIC_OFF + 4] != COMMITTED_MAGIC {
            return None;
        }
        let fill = get_u32(b, CM_FILL_OFF) as usize;
        let aux_len = get_u32(b, CM_AUX_LEN_OFF) as usize;
        (fill <= PAGE && aux_len <= PAGE).then_some((fill, aux_len))
    }

    /// Decodes a committed header from the slot's first `SLOT_FRONTIER_OFF`
    /// bytes and the images its checksum covers (of the lengths
    /// [`CommittedHeader::image_lens`] gave).
    pub fn decode_parts(head: &[u8], frontier: &[u8], aux: &[u8]) -> Option<CommittedHeader> {
        let (fill, aux_len) = Self::image_lens(head)?;
        if frontier.len() != fill || aux.len() != aux_len {
            return None;
        }
        let b = &head[SLOT_COMMITTED_OFF..SLOT_COMMITTED_OFF + COMMITTED_LEN];
        let flags = b[CM_FLAGS_OFF];
        if flags & CM_FLAG_AUX == 0 && aux_len != 0 {
            return None;
        }
        if Self::checksum(b, frontier, aux) != get_u32(b, CM_CRC_OFF) {
            return None;
        }
        Some(CommittedHeader {
            counter: get_u64(b, CM_COUNTER_OFF),
            session: get_u32(b, CM_SESSION_OFF),
            self_contained: flags & CM_FLAG_SELF_CONTAINED != 0,
            base_seq: get_u64(b, CM_BASE_SEQ_OFF),
            next_seq: get_u64(b, CM_NEXT_SEQ_OFF),
            head_len: get_u32(b, CM_HEAD_LEN_OFF),
            frontier: PageRef {
                page_off: get_u64(b, CM_PAGE_OFF),
                first_seq: get_u64(b, CM_FIRST_SEQ_OFF),
                len: fill as u32,
            },
            last_ts: get_i64(b, CM_LAST_TS_OFF),
            lease_end: get_u64(b, CM_LEASE_END_OFF),
            index_synced_seq: get_u64(b, CM_INDEX_SYNCED_OFF),
            aux: (flags & CM_FLAG_AUX != 0).then(|| PageRef {
                page_off: get_u64(b, CM_AUX_PAGE_OFF),
                first_seq: get_u64(b, CM_AUX_FIRST_SEQ_OFF),
                len: aux_len as u32,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The totals FORMAT.md states.
    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(META_SLOT_LEN, 80);
        assert_eq!(META_V1_SLOT_LEN, 72);
        assert_eq!(META_FILE_LEN, 8192);
        assert_eq!(META_V1_FILE_LEN, 1024);
        assert_eq!(BLOCK_HEADER_LEN, 32);
        assert_eq!(RECORD_HEADER_LEN, 16);
        assert_eq!(REC_DELETED_BYTE_OFF, 11);
        assert_eq!((META_FLAGS_OFF, META_NUM_BLOCKS_OFF), (14, 16));
        assert_eq!(INDEX_ENTRY_LEN, 32);
        assert_eq!(BLOCK_SEQ_OFF, 8);
        assert_eq!(IDX_EXTRA_OFF, 24);
        assert_eq!(WORKING_LEN, 64);
        assert_eq!(COMMITTED_LEN, 128);
        assert_eq!(SLOT_FRONTIER_OFF, 192);
        assert_eq!(SLOT_AUX_OFF, 8192);
        const { assert!(SLOT_FRONTIER_OFF + PAGE <= SLOT_AUX_OFF) };
        const { assert!(SLOT_AUX_OFF + PAGE <= SLOT_STRIDE) };
        assert_eq!(COMMIT_AREA_LEN, 49152);
        assert_eq!(commit_area_offset(1), 16384);
        assert_eq!(commit_area_offset(16384), 16384);
        assert_eq!(slot_offset(100, 2), 16384 + 2 * 16384);
    }

    fn meta(version: u32) -> Meta {
        Meta {
            version,
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
            clean: false,
            floor_seq: if version == FORMAT_VERSION { 5 } else { 0 },
        }
    }

    #[test]
    fn meta_round_trip_and_corruption() {
        for version in [FORMAT_VERSION_V1, FORMAT_VERSION] {
            let m = meta(version);
            let mut b = m.encode();
            assert_eq!(Meta::decode(&b), Ok(m));
            b[20] ^= 1;
            assert_eq!(Meta::decode(&b), Err("checksum mismatch"));
            assert_eq!(Meta::decode(&b[..10]), Err("meta slot truncated"));
        }
        let mut b = meta(FORMAT_VERSION).encode();
        b[META_VERSION_OFF] = 3;
        assert_eq!(Meta::decode(&b), Err("unsupported format version"));
    }

    #[test]
    fn block_header_round_trip_and_corruption() {
        for version in [FORMAT_VERSION_V1, FORMAT_VERSION] {
            let h = BlockHeader {
                version,
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
        }
        assert_eq!(BlockHeader::decode(&[0u8; BLOCK_HEADER_LEN]), None);
    }

    #[test]
    fn record_crc_binds_seq_and_v2_session_and_ignores_delete_flag() {
        let key = RecordKey {
            version: FORMAT_VERSION,
            seq: 5,
            session: 9,
        };
        let mut b = [0u8; RECORD_HEADER_LEN];
        encode_record_header(&mut b, key, 100, b"hello");
        let h = RecordHeader::decode(&b);
        assert_eq!(h.crc, record_crc(key, 100, 5, b"hello"));
        assert_ne!(
            h.crc,
            record_crc(RecordKey { seq: 6, ..key }, 100, 5, b"hello")
        );
        assert_ne!(
            h.crc,
            record_crc(RecordKey { session: 10, ..key }, 100, 5, b"hello")
        );
        // Version 1 records do not depend on the session.
        let v1 = RecordKey {
            version: FORMAT_VERSION_V1,
            ..key
        };
        assert_eq!(
            record_crc(v1, 100, 5, b"hello"),
            record_crc(RecordKey { session: 10, ..v1 }, 100, 5, b"hello")
        );
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
            extra: 148,
        };
        let mut b = e.encode();
        assert_eq!(IndexEntry::decode(&b), Some(e));
        b[3] ^= 0xff;
        assert_eq!(IndexEntry::decode(&b), None);
        assert_eq!(IndexEntry::decode(&[0u8; INDEX_ENTRY_LEN]), None);
    }

    #[test]
    fn commit_slot_headers_round_trip_and_cover_their_images() {
        let w = WorkingHeader {
            base: 7,
            session: 3,
            base_seq: 1,
            page_off: 8192,
            first_seq: 40,
        };
        let mut slot = vec![0u8; SLOT_STRIDE];
        slot[..WORKING_LEN].copy_from_slice(&w.encode());
        assert_eq!(WorkingHeader::decode(&slot), Some(w));
        let c = CommittedHeader {
            counter: 8,
            session: 3,
            self_contained: false,
            base_seq: 1,
            next_seq: 45,
            head_len: 200,
            frontier: PageRef {
                page_off: 8192,
                first_seq: 40,
                len: 1000,
            },
            last_ts: 77,
            lease_end: LEASE_UNBOUNDED,
            index_synced_seq: 44,
            aux: Some(PageRef {
                page_off: 0,
                first_seq: 1,
                len: PAGE as u32,
            }),
        };
        for (i, byte) in slot[SLOT_FRONTIER_OFF..SLOT_FRONTIER_OFF + PAGE]
            .iter_mut()
            .enumerate()
        {
            *byte = i as u8;
        }
        let (front, aux) = (
            slot[SLOT_FRONTIER_OFF..SLOT_FRONTIER_OFF + PAGE].to_vec(),
            slot[SLOT_AUX_OFF..SLOT_AUX_OFF + PAGE].to_vec(),
        );
        slot[SLOT_COMMITTED_OFF..SLOT_COMMITTED_OFF + COMMITTED_LEN]
            .copy_from_slice(&c.encode(&front, &aux));
        assert_eq!(CommittedHeader::decode(&slot), Some(c));
        // Bytes of the image past `fill` are not covered; bytes inside are.
        let mut beyond = slot.clone();
        beyond[SLOT_FRONTIER_OFF + 1000] ^= 1;
        assert_eq!(CommittedHeader::decode(&beyond), Some(c));
        let mut inside = slot.clone();
        inside[SLOT_FRONTIER_OFF + 999] ^= 1;
        assert_eq!(CommittedHeader::decode(&inside), None);
        let mut aux_flip = slot.clone();
        aux_flip[SLOT_AUX_OFF + 4095] ^= 1;
        assert_eq!(CommittedHeader::decode(&aux_flip), None);
        // The working header survives next to a committed one.
        assert_eq!(WorkingHeader::decode(&slot), Some(w));
    }
}
