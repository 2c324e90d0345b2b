//! Open-time recovery of a version 2 store (FORMAT.md, "Opening a store"):
//! rebuilds head, tail, the time index and the counts from the commit
//! slots, the index and the blocks a crashed session could have written,
//! writes the repairs, and starts a new session with a commit of its own.
//!
//! The walk:
//! 1. meta: the newest valid of the two page-separated slots;
//! 2. the commit slots: the newest valid committed slot `D` whose blocks
//!    since its index claim (and the blocks of the previous commit's
//!    frontier page, which `D`'s in-flight sync may have garbled) are all
//!    present, and whose images hold no block header of another block (a
//!    tear its checksum cannot see); otherwise the one before it. `D`'s
//!    page images, and the working slot that follows `D`, are laid over
//!    the data file (a [`View`]), each only over the blocks of the lap it
//!    belongs to;
//! 3. the head: blocks are followed from `D`'s frontier while each holds
//!    the next sequence number, a valid session and valid contents: never
//!    past a missing block, so no later open can find a block of a crashed
//!    session where a block of a later one went missing. With a bounded
//!    lease only the blocks within it are read; otherwise (policy `never`,
//!    small rings, no valid slot) every block header is read;
//! 4. the table: blocks below `D`'s index claim are taken from their
//!    index entries (after checking the headers of those the crashed
//!    session may have overwritten), the others are rescanned; a spanning
//!    object is there whole or not at all, and a continuation block
//!    without its start is a hole keyed like the block before it;
//! 5. the repairs (overlaid pages in place, index entries), synced; a new
//!    self-contained commit in a slot that is neither `D`'s nor the working
//!    one, synced; then meta for the new session, synced. A cut anywhere
//!    leaves the next open where this one started.
//!
//! Recovery never fails because of a torn write; it fails with `Corrupted`
//! only if no valid meta slot exists or the files do not match it.

use std::io;

use super::commit::lease_blocks;
use super::config::{Config, DataType, Durability};
use super::error::{Error, Result};
use super::format::{
    record_crc, slot_of, slot_offset, BlockHeader, BlockKind, CommittedHeader, IndexEntry, Meta,
    PageRef, RecordHeader, WorkingHeader, BLOCK_HEADER_LEN, FORMAT_VERSION, INDEX_ENTRY_LEN,
    LEASE_UNBOUNDED, MAX_OBJECT_LEN, META_FILE_LEN, META_SLOT_LEN, META_SLOT_STRIDE,
    META_V1_FILE_LEN, PAGE, RECORD_HEADER_LEN, SLOT_AUX_OFF, SLOT_COMMITTED_OFF, SLOT_FRONTIER_OFF,
    SLOT_WORKING_OFF,
};
use super::index::BlockTable;
use super::medium::Medium;
use super::object::Records;
use super::ring::Ring;
use super::shared::{Frontier, Media, State};

/// Sequence numbers recovery accepts: far below the point where the
/// arithmetic on them could overflow (the engine starts at 1 and adds one
/// per block).
pub(crate) const SEQ_LIMIT: u64 = u64::MAX / 4;

/// What an open found.
pub(crate) struct Recovered {
    pub cfg: Config,
    pub state: State,
    /// The lease of the commit recovery wrote.
    pub lease_end: u64,
    pub lease_blocks: u64,
}

// ------------------------------------------------------------ meta, config

/// Reads the newest valid meta slot of a `meta.tsdb` of `stride`-spaced
/// slots.
pub(crate) fn read_meta_slots(meta: &dyn Medium, stride: usize, len: usize) -> Result<Meta> {
    let mut best: Option<Meta> = None;
    let mut why = "";
    for slot in 0..2u64 {
        let mut b = vec![0u8; len];
        meta.read_at(slot * stride as u64, &mut b)?;
        match Meta::decode(&b) {
            // Generations count opens and resets from 1: one this large was
            // not written by the engine, and the next one would overflow.
            Ok(m) if m.generation > SEQ_LIMIT => why = "generation out of range",
            Ok(m) if best.is_none_or(|x| m.generation > x.generation) => best = Some(m),
            Ok(_) => {}
            Err(e) => why = e,
        }
    }
    best.ok_or_else(|| Error::corrupted(None, format!("no valid meta record ({why})")))
}

/// The configuration a meta record describes, checked against the media:
/// the index file's length, and a data file of one of `data_lens`.
pub(crate) fn config_of(m: &Meta, media: &Media, data_lens: &[u64]) -> Result<Config> {
    let bad = |r: String| Error::corrupted(None, r);
    let cfg = Config {
        num_blocks: m.num_blocks,
        data_block_size: m.data_block_size,
        index_block_size: m.index_block_size,
        data_type: DataType::from_code(m.data_type)
            .ok_or_else(|| bad(format!("unknown data type code {}", m.data_type)))?,
        durability: Durability::decode(m.durability, m.sync_interval_ms)
            .ok_or_else(|| bad(format!("unknown durability code {}", m.durability)))?,
    };
    cfg.validate()
        .map_err(|e| bad(format!("meta describes an invalid store: {e}")))?;
    if !data_lens.contains(&media.data.len()) {
        return Err(bad(format!(
            "data file is {} bytes, meta says {}",
            media.data.len(),
            cfg.data_file_len().unwrap_or(0)
        )));
    }
    if media.index.len() != cfg.index_file_len() {
        return Err(bad(format!(
            "index file is {} bytes, meta says {}",
            media.index.len(),
            cfg.index_file_len()
        )));
    }
    if m.base_seq == 0 || m.base_seq > SEQ_LIMIT || m.floor_seq > SEQ_LIMIT {
        return Err(bad(format!("invalid base sequence {}", m.base_seq)));
    }
    Ok(cfg)
}

// ------------------------------------------------------------ the view

/// Which session may have written which block: a block at or after
/// `start` only `session`, a block before it only an earlier session. A
/// block a crashed session left beyond the head recovery found is thereby
/// invalid as long as the next session has not passed it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionRule {
    pub session: u32,
    pub start: u64,
}

impl SessionRule {
    pub fn ok(&self, h: &BlockHeader) -> bool {
        if h.seq >= self.start {
            h.session == self.session
        } else {
            h.session < self.session
        }
    }
}

/// A page image from a commit slot: the bytes of one lap of one page.
#[derive(Debug, Clone)]
pub(crate) struct Overlay {
    /// A soft delete's image: newer than any other copy of its page.
    pub aux: bool,
    pub page_off: u64,
    /// Sequence number of the block at the page's first position in that
    /// lap.
    pub first_seq: u64,
    pub bytes: Vec<u8>,
}

/// The data file as recovery sees it: the bytes in place, with page images
/// from the commit slots laid over the blocks of the lap each belongs to.
pub(crate) struct View<'a> {
    pub data: &'a dyn Medium,
    pub b: usize,
    pub ring: Ring,
    pub overlays: Vec<Overlay>,
    /// Which sessions' blocks an image may supply: a working slot's image
    /// past its real end holds stale bytes, possibly blocks a crashed
    /// session left under the numbers the new one reuses.
    pub rule: SessionRule,
}

impl View<'_> {
    /// File offset of block `seq`.
    pub fn off(&self, seq: u64) -> u64 {
        self.ring.pos(seq) as u64 * self.b as u64
    }

    /// The overlay bytes for the `buf.len()` bytes at `off` of block `seq`
    /// (position `pos`); only the aux images with `aux_only`.
    fn lay(&self, seq: u64, pos: u64, off: u64, buf: &mut [u8], aux_only: bool) {
        let end = off + buf.len() as u64;
        for ov in self.overlays.iter().filter(|o| o.aux || !aux_only) {
            let (lo, hi) = (ov.page_off, ov.page_off + ov.bytes.len() as u64);
            if hi <= off || lo >= end {
                continue;
            }
            let p0 = lo / self.b as u64;
            if pos < p0 || ov.first_seq.checked_add(pos - p0) != Some(seq) {
                continue;
            }
            let (from, to) = (lo.max(off), hi.min(end));
            buf[(from - off) as usize..(to - off) as usize]
                .copy_from_slice(&ov.bytes[(from - lo) as usize..(to - lo) as usize]);
        }
    }

    /// Does an overlay lie over (part of) block `seq`?
    pub fn overlaid(&self, seq: u64) -> bool {
        let pos = self.ring.pos(seq) as u64;
        let off = pos * self.b as u64;
        self.overlays.iter().any(|ov| {
            let p0 = ov.page_off / self.b as u64;
            ov.page_off < off + self.b as u64
                && ov.page_off + ov.bytes.len() as u64 > off
                && pos >= p0
                && ov.first_seq.checked_add(pos - p0) == Some(seq)
        })
    }

    /// Reads block `seq` whole into `buf`. Where page images lie over it,
    /// the copy in place may be the more complete one (the write position
    /// left the page after the image was taken, and a cut then tore the
    /// image's later copies): if both copies carry the same header (the
    /// same block, not one a crashed session left under the same number),
    /// the one holding more valid records is taken, the images on a tie.
    /// Both hold only records the session wrote, so either is the block as
    /// it was at some moment.
    pub fn read_block(&self, seq: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.resize(self.b, 0);
        let off = self.off(seq);
        self.data.read_at(off, buf)?;
        if !self.overlaid(seq) {
            return Ok(());
        }
        let pos = self.ring.pos(seq) as u64;
        let mut in_place = buf.clone();
        self.lay(seq, pos, off, &mut in_place, true);
        self.lay(seq, pos, off, buf, false);
        let (a, b) = (
            worth(&in_place, seq, &self.rule),
            worth(buf, seq, &self.rule),
        );
        let same = BlockHeader::decode(&in_place) == BlockHeader::decode(buf);
        if (b == 0 && a > 0) || (same && a > b) {
            *buf = in_place;
        }
        Ok(())
    }

    /// The header at block `seq`'s position, if it is a valid header of
    /// block `seq`.
    pub fn header(&self, seq: u64) -> io::Result<Option<BlockHeader>> {
        if self.overlaid(seq) {
            let mut buf = Vec::new();
            self.read_block(seq, &mut buf)?;
            return Ok(BlockHeader::decode(&buf).filter(|h| h.seq == seq));
        }
        let mut b = [0u8; BLOCK_HEADER_LEN];
        self.data.read_at(self.off(seq), &mut b)?;
        Ok(BlockHeader::decode(&b).filter(|h| h.seq == seq))
    }

    /// The valid header at ring position `pos`, whatever block it is of:
    /// of the blocks the images and the bytes in place hold there, the
    /// newest one the session rule allows (an image of an older lap does
    /// not hide the block written over it since).
    pub fn header_at(&self, pos: u32) -> io::Result<Option<BlockHeader>> {
        let off = pos as u64 * self.b as u64;
        let mut b = [0u8; BLOCK_HEADER_LEN];
        self.data.read_at(off, &mut b)?;
        let mut best = BlockHeader::decode(&b).filter(|h| {
            h.seq < SEQ_LIMIT && h.seq >= self.ring.base && self.ring.pos(h.seq) == pos
        });
        for ov in &self.overlays {
            let p0 = ov.page_off / self.b as u64;
            if (pos as u64) < p0
                || ov.page_off > off
                || ov.page_off + (ov.bytes.len() as u64) < off + BLOCK_HEADER_LEN as u64
            {
                continue;
            }
            let seq = ov.first_seq.saturating_add(pos as u64 - p0);
            if let Some(h) = self.header(seq)?.filter(|h| self.rule.ok(h)) {
                if best.is_none_or(|x| !self.rule.ok(&x) || h.seq > x.seq) {
                    best = Some(h);
                }
            }
        }
        Ok(best)
    }
}

/// How much of block `seq` the bytes hold: 0 without a valid header of it
/// that `rule` allows; for a packed block, one more than the offset its
/// valid records end at.
fn worth(bytes: &[u8], seq: u64, rule: &SessionRule) -> usize {
    match BlockHeader::decode(bytes).filter(|h| h.seq == seq && rule.ok(h)) {
        None => 0,
        Some(h) if h.kind == BlockKind::Packed => {
            1 + Records::new(bytes, h.record_key())
                .last()
                .map_or(BLOCK_HEADER_LEN, |r| {
                    r.off as usize + RECORD_HEADER_LEN + r.data.len()
                })
        }
        Some(_) => 1,
    }
}

/// What a rescan found in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// No valid block: never written, torn, of another lap or session, or
    /// with no valid record after `after_ts`.
    Hole,
    /// A packed block: its key, live objects, newest timestamp, and the
    /// offset where its valid records end.
    Packed {
        key: i64,
        live: u32,
        last: i64,
        end: usize,
    },
    /// A spanning object starting here, whole and valid, of `blocks` blocks.
    Span { ts: i64, live: u32, blocks: u64 },
    /// A continuation block: valid only as part of a span found whole.
    Cont,
    /// A continuation block of a span found whole before it.
    Part,
}

/// Reads and validates the object spanning from block `seq` (whose first
/// block is in `first`): `(timestamp, deleted, blocks)` if every block is
/// there, no block is past `max_seq`, and the checksum matches.
pub(crate) fn check_span(
    v: &View,
    rule: &SessionRule,
    seq: u64,
    max_seq: u64,
    first: &[u8],
) -> Result<Option<(i64, bool, u64)>> {
    let Some(h) = BlockHeader::decode(first) else {
        return Ok(None);
    };
    let rh = RecordHeader::decode(&first[BLOCK_HEADER_LEN..]);
    let len = rh.len as usize;
    let payload = v.b - BLOCK_HEADER_LEN;
    let k = (RECORD_HEADER_LEN + len).div_ceil(payload) as u64;
    if rh.ts <= 0 || rh.ts != h.first_ts || k != h.span as u64 || len as u64 > MAX_OBJECT_LEN {
        return Ok(None);
    }
    if k > v.ring.n || seq + k - 1 > max_seq {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(len);
    let n0 = (payload - RECORD_HEADER_LEN).min(len);
    let at = BLOCK_HEADER_LEN + RECORD_HEADER_LEN;
    data.extend_from_slice(&first[at..at + n0]);
    let mut buf = Vec::new();
    for i in 1..k {
        v.read_block(seq + i, &mut buf)?;
        match BlockHeader::decode(&buf) {
            Some(ch)
                if ch.seq == seq + i
                    && rule.ok(&ch)
                    && ch.kind == BlockKind::SpanCont
                    && ch.span as u64 == i
                    && ch.first_ts == rh.ts => {}
            _ => return Ok(None),
        }
        let n = payload.min(len - data.len());
        data.extend_from_slice(&buf[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + n]);
    }
    if record_crc(h.record_key(), rh.ts, rh.len, &data) != rh.crc {
        return Ok(None);
    }
    Ok(Some((rh.ts, rh.deleted, k)))
}

/// Rescans block `seq`: what it holds, counting only records newer than
/// `after_ts`; a span may not reach past `max_seq`.
pub(crate) fn scan_block(
    v: &View,
    rule: &SessionRule,
    seq: u64,
    after_ts: i64,
    max_seq: u64,
    buf: &mut Vec<u8>,
) -> Result<Scanned> {
    v.read_block(seq, buf)?;
    let Some(h) = BlockHeader::decode(buf).filter(|h| h.seq == seq && rule.ok(h)) else {
        return Ok(Scanned::Hole);
    };
    Ok(match h.kind {
        BlockKind::Packed => {
            let mut key = None;
            let mut live = 0;
            let mut last = after_ts;
            let mut end = BLOCK_HEADER_LEN;
            for r in Records::new(buf, h.record_key()) {
                if r.ts <= after_ts {
                    break;
                }
                key.get_or_insert(r.ts);
                live += u32::from(!r.deleted);
                last = r.ts;
                end = r.off as usize + RECORD_HEADER_LEN + r.data.len();
            }
            match key {
                Some(key) => Scanned::Packed {
                    key,
                    live,
                    last,
                    end,
                },
                None => Scanned::Hole,
            }
        }
        BlockKind::SpanStart => match check_span(v, rule, seq, max_seq, buf)? {
            Some((ts, deleted, blocks)) if ts > after_ts => Scanned::Span {
                ts,
                live: u32::from(!deleted),
                blocks,
            },
            _ => Scanned::Hole,
        },
        BlockKind::SpanCont => Scanned::Cont,
    })
}

/// Does block `seq` (and, for a span start, each of its continuations)
/// still carry the header its index entry describes? The crashed session
/// may have written blocks of the next lap over it.
pub(crate) fn still_holds(v: &View, rule: &SessionRule, seq: u64, e: &IndexEntry) -> Result<bool> {
    let is = |h: &Option<BlockHeader>, kind: BlockKind, ts: i64| {
        h.is_some_and(|h| h.kind == kind && h.first_ts == ts && rule.ok(&h))
    };
    let h = v.header(seq)?;
    if !is(&h, e.kind, e.first_ts) {
        return Ok(false);
    }
    if e.kind == BlockKind::SpanStart {
        let span = h.map_or(0, |h| h.span as u64);
        if span == 0 || span > v.ring.n {
            return Ok(false);
        }
        for i in 1..span {
            if !is(&v.header(seq + i)?, BlockKind::SpanCont, e.first_ts) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

// ------------------------------------------------------------ commit slots

/// One commit slot as read at open: its headers, and the images of its
/// committed header (the working image is read only if it is needed).
struct Slot {
    committed: Option<CommittedHeader>,
    working: Option<WorkingHeader>,
    frontier: Vec<u8>,
    aux: Vec<u8>,
}

fn read_slots(media: &Media, ring_len: u64, meta: &Meta, b: usize) -> Result<Vec<Slot>> {
    let page_ok = |off: u64, len: u64| {
        off % PAGE as u64 == 0 && off < ring_len && len <= (ring_len - off).min(PAGE as u64)
    };
    let mut out = Vec::new();
    for i in 0..super::format::COMMIT_SLOTS {
        let at = slot_offset(ring_len, i);
        let mut head = vec![0u8; SLOT_FRONTIER_OFF];
        media.data.read_at(at, &mut head)?;
        let (mut frontier, mut aux) = (Vec::new(), Vec::new());
        let committed = match CommittedHeader::image_lens(&head) {
            Some((fill, aux_len)) => {
                frontier.resize(fill, 0);
                media
                    .data
                    .read_at(at + SLOT_FRONTIER_OFF as u64, &mut frontier)?;
                aux.resize(aux_len, 0);
                media.data.read_at(at + SLOT_AUX_OFF as u64, &mut aux)?;
                CommittedHeader::decode_parts(&head, &frontier, &aux)
            }
            None => None,
        };
        let committed = committed.filter(|c| {
            slot_of(c.counter) == i
                && c.next_seq >= c.base_seq
                && c.next_seq < SEQ_LIMIT
                && c.counter < SEQ_LIMIT
                && c.base_seq >= 1
                && c.base_seq <= meta.base_seq
                && (c.head_len as usize) <= b
                && page_ok(c.frontier.page_off, c.frontier.len as u64)
                && c.aux.is_none_or(|a| page_ok(a.page_off, a.len as u64))
        });
        let working = WorkingHeader::decode(&head[SLOT_WORKING_OFF..])
            .filter(|w| w.base < SEQ_LIMIT && page_ok(w.page_off, 0));
        out.push(Slot {
            committed,
            working,
            frontier,
            aux,
        });
    }
    Ok(out)
}

/// The working image of slot `i`, for the page at `page_off`.
fn working_image(media: &Media, ring_len: u64, i: usize, page_off: u64) -> Result<Vec<u8>> {
    let len = (PAGE as u64).min(ring_len - page_off) as usize;
    let mut img = vec![0u8; len];
    media.data.read_at(
        slot_offset(ring_len, i) + SLOT_FRONTIER_OFF as u64,
        &mut img,
    )?;
    Ok(img)
}

/// The overlays a commit slot lays over the data file: its frontier image
/// and its aux image.
fn slot_overlays(slot: &Slot, c: &CommittedHeader) -> Vec<Overlay> {
    let mut v = vec![Overlay {
        aux: false,
        page_off: c.frontier.page_off,
        first_seq: c.frontier.first_seq,
        bytes: slot.frontier.clone(),
    }];
    if let Some(a) = c.aux {
        v.push(Overlay {
            aux: true,
            page_off: a.page_off,
            first_seq: a.first_seq,
            bytes: slot.aux.clone(),
        });
    }
    v
}

/// Does a committed image of the page at `page_off` (`first_seq` at its
/// first position) hold, at the start of a block from `floor` on, the valid
/// header of another block, or of a session `rule` refuses there? Then the
/// slot was torn: its checksum cannot see it, because a CRC-32C over bytes
/// that hold a 32-byte block header ending in its own CRC-32C does not
/// change when that header is swapped for another valid one, and a sector
/// of the slot left from an older image by a cut sync differs from the new
/// one in just that when the payloads around are alike (zeroed, say).
fn image_torn(img: &[u8], page: PageRef, b: usize, floor: u64, rule: &SessionRule) -> bool {
    let b = b as u64;
    let p0 = page.page_off / b;
    (page.page_off.div_ceil(b)..)
        .map(|p| {
            (
                (p * b - page.page_off) as usize,
                page.first_seq.saturating_add(p - p0),
            )
        })
        .take_while(|&(at, _)| at + BLOCK_HEADER_LEN <= img.len())
        .filter(|&(_, seq)| seq >= floor)
        .any(|(at, seq)| {
            BlockHeader::decode(&img[at..]).is_some_and(|h| h.seq != seq || !rule.ok(&h))
        })
}

/// Writes a self-contained commit into its slot with `write_at` (not the
/// mapping, which is made after recovery) and syncs the data file.
pub(crate) fn write_commit_slot(
    media: &Media,
    ring_len: u64,
    c: &CommittedHeader,
    frontier: &[u8],
) -> Result<()> {
    for (off, bytes) in commit_slot_writes(ring_len, c, frontier) {
        media.data.write_at(off, &bytes)?;
    }
    media.data.sync()?;
    Ok(())
}

/// The writes to the data file, in order, that put commit `c` and its
/// frontier image into its slot: the slot's old commit unmade first, so
/// that a torn sequence never pairs the old header with the new image.
pub(crate) fn commit_slot_writes(
    ring_len: u64,
    c: &CommittedHeader,
    frontier: &[u8],
) -> [(u64, Vec<u8>); 3] {
    let off = slot_offset(ring_len, slot_of(c.counter));
    let mut img = vec![0u8; PAGE];
    img[..frontier.len()].copy_from_slice(frontier);
    let header = c.encode(&img, &[0u8; PAGE]);
    [
        (off + SLOT_COMMITTED_OFF as u64, vec![0u8; 4]),
        (off + SLOT_FRONTIER_OFF as u64, frontier.to_vec()),
        (off + SLOT_COMMITTED_OFF as u64, header.to_vec()),
    ]
}

/// The lease a new session's first commit gives it (within one lap of its
/// first block, like every lease: see `Shared::lease_cap`).
fn first_lease(cfg: &Config, head: u64) -> u64 {
    head + lease_blocks(cfg).min(cfg.num_blocks as u64)
}

/// The frontier a session starts with when the ring's next block is
/// `next`: the page that block starts in, and the sequence number at that
/// page's first position.
fn start_frontier(ring: &Ring, b: usize, next: u64) -> (u64, usize, u64) {
    let w = ring.pos(next) as u64 * b as u64;
    let page = w / PAGE as u64 * PAGE as u64;
    let p0 = page / b as u64;
    let pos = ring.pos(next) as u64;
    (page, (w - page) as usize, next - (pos - p0.min(pos)))
}

/// The first commit of a new store (written by `init_media`).
pub(crate) fn write_first_commit(media: &Media, cfg: &Config, meta: &Meta) -> Result<()> {
    let ring_len = cfg.ring_len().unwrap_or(0);
    write_commit_slot(media, ring_len, &first_commit(cfg, meta), &[])
}

/// The writes to the data file of a new store (zero, allocated) that put
/// its first commit in place, as `write_first_commit` makes them; the
/// caller syncs the file after them.
pub(crate) fn first_commit_writes(cfg: &Config, meta: &Meta) -> [(u64, Vec<u8>); 3] {
    let ring_len = cfg.ring_len().unwrap_or(0);
    commit_slot_writes(ring_len, &first_commit(cfg, meta), &[])
}

fn first_commit(cfg: &Config, meta: &Meta) -> CommittedHeader {
    session_commit(
        1,
        meta.session,
        meta.base_seq,
        meta.base_seq,
        PageRef {
            page_off: 0,
            first_seq: meta.base_seq,
            len: 0,
        },
        0,
        first_lease(cfg, meta.base_seq - 1),
    )
}

/// The first commit of a store upgraded from version 1: its ring as the
/// version 1 recovery left it (everything in place and synced).
pub(crate) fn write_upgrade_commit(
    media: &Media,
    cfg: &Config,
    meta: &Meta,
    ring: &Ring,
    last_ts: i64,
) -> Result<()> {
    let ring_len = cfg.ring_len().unwrap_or(0);
    let b = cfg.data_block_size as usize;
    let (page_off, fill, first_seq) = start_frontier(ring, b, ring.next);
    let mut img = vec![0u8; fill];
    media.data.read_at(page_off, &mut img)?;
    let c = session_commit(
        1,
        meta.session,
        meta.base_seq,
        ring.next,
        PageRef {
            page_off,
            first_seq,
            len: fill as u32,
        },
        last_ts,
        first_lease(cfg, ring.next.saturating_sub(1)),
    );
    write_commit_slot(media, ring_len, &c, &img)
}

/// The newest timestamp of the live blocks of `ring` (deleted objects
/// included), at least `at_least`: from the newest block holding a valid
/// record.
pub(crate) fn newest_ts(v: &View, ring: &Ring, table: &BlockTable, at_least: i64) -> Result<i64> {
    let mut buf = Vec::new();
    let mut s = ring.next;
    while s > ring.tail {
        s -= 1;
        let pos = ring.pos(s);
        match table.kind(pos) {
            Some(BlockKind::Packed) => {
                v.read_block(s, &mut buf)?;
                if let Some(h) = BlockHeader::decode(&buf) {
                    if let Some(t) = Records::new(&buf, h.record_key()).last().map(|r| r.ts) {
                        return Ok(at_least.max(t));
                    }
                }
            }
            Some(BlockKind::SpanStart) => return Ok(at_least.max(table.key(pos))),
            _ => {}
        }
    }
    Ok(at_least)
}

/// The index entry of live block `seq` as the table describes it (`span`:
/// a span start's number of blocks), claiming `synced` at most.
pub(crate) fn entry_of(
    table: &BlockTable,
    ring: &Ring,
    seq: u64,
    span: u32,
    synced: u64,
) -> Option<IndexEntry> {
    let pos = ring.pos(seq);
    table.kind(pos).map(|kind| IndexEntry {
        seq,
        first_ts: table.key(pos),
        synced_seq: synced.min(seq),
        live: table.live(pos),
        kind,
        extra: span,
    })
}

/// The self-contained commit that starts a session: the ring's next block
/// is `next`, nothing of it is open, and the index is synced through it.
#[allow(clippy::too_many_arguments)]
fn session_commit(
    counter: u64,
    session: u32,
    base_seq: u64,
    next: u64,
    frontier: PageRef,
    last_ts: i64,
    lease_end: u64,
) -> CommittedHeader {
    CommittedHeader {
        counter,
        session,
        self_contained: true,
        base_seq,
        next_seq: next,
        head_len: 0,
        frontier,
        last_ts,
        lease_end,
        index_synced_seq: next,
        aux: None,
    }
}

// ------------------------------------------------------------ recovery

/// Per-block results of the scans recovery made, by sequence number.
struct Scans {
    from: u64,
    got: Vec<Scanned>,
}

impl Scans {
    fn empty(from: u64) -> Scans {
        Scans {
            from,
            got: Vec::new(),
        }
    }

    fn get(&self, seq: u64) -> Option<Scanned> {
        seq.checked_sub(self.from)
            .and_then(|i| self.got.get(usize::try_from(i).ok()?).copied())
    }

    fn end(&self) -> u64 {
        self.from + self.got.len() as u64
    }

    /// `other` scanned the blocks right after these.
    fn extend(&mut self, other: Scans) {
        if self.got.is_empty() {
            *self = other;
        } else if other.from == self.end() {
            self.got.extend(other.got);
        }
    }
}

/// Scans blocks from `from` (to `max_seq` at most) while each holds data:
/// packed records, or a span found whole (its continuations come with
/// it). Returns the scans and the last block scanned with data.
fn scan_run(v: &View, rule: &SessionRule, from: u64, max_seq: u64) -> Result<(Scans, Option<u64>)> {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut s = from;
    let mut last = None;
    while s <= max_seq {
        let sc = scan_block(v, rule, s, 0, max_seq, &mut buf)?;
        match sc {
            Scanned::Packed { .. } => {
                got.push(sc);
                last = Some(s);
                s += 1;
            }
            Scanned::Span { blocks, .. } => {
                got.push(sc);
                got.extend((1..blocks).map(|_| Scanned::Part));
                s += blocks;
                last = Some(s - 1);
            }
            Scanned::Hole | Scanned::Cont | Scanned::Part => break,
        }
    }
    Ok((Scans { from, got }, last))
}

/// The blocks a commit `c` vouches for were checked: from its index claim
/// (or the first block of the previous commit's frontier page, whose
/// in-place write `c`'s sync may have garbled) to its last block.
struct Region {
    scans: Scans,
    /// The last block of `c`; `scans.from - 1` if none.
    last: u64,
    /// Where the check started.
    start: u64,
    /// With no lease: the first block after a missing prefix of the check,
    /// taken as reclaimed (the tail is at least here).
    reclaimed_to: u64,
}

/// Checks commit `c` (with `prev`, the commit before it, if its slot is
/// still valid): `None` if a block it vouches for is missing, which means
/// its sync never completed (and `prev` is durable).
///
/// `reclaimed` is the first block the crashed session cannot have
/// overwritten: with no lease, it may have written a later lap over the
/// blocks before it (a valid block of a later lap was found).
/// The newest block of `c`'s session the data holds past `prev_lease` and
/// within `c`'s lease: a writer starts a block only inside the lease of a
/// commit whose sync completed, so such a block proves `c`'s did.
fn lapped_past(v: &View, c: &CommittedHeader, prev_lease: u64) -> io::Result<Option<u64>> {
    let from = prev_lease.saturating_add(1).max(c.next_seq);
    let mut newest = None;
    for seq in from..=c.lease_end.min(from.saturating_add(v.ring.n - 1)) {
        if v.header(seq)?.is_some_and(|h| h.session == c.session) {
            newest = Some(seq);
        }
    }
    Ok(newest)
}

fn region_of(
    v: &View,
    rule: &SessionRule,
    c: &CommittedHeader,
    prev: Option<&CommittedHeader>,
    floor: u64,
    reclaimed: u64,
    unbounded: bool,
) -> Result<Option<Region>> {
    let base = v.ring.base;
    let n = v.ring.n;
    if c.base_seq < base || c.next_seq <= base {
        // A reset since (or nothing written): nothing of it is live.
        return Ok(Some(Region {
            scans: Scans::empty(base),
            last: base - 1,
            start: base,
            reclaimed_to: 0,
        }));
    }
    let last = c.next_seq - 1;
    let tail = c
        .next_seq
        .saturating_sub(n)
        .max(base)
        .max(floor)
        .max(reclaimed);
    let mut start = c.index_synced_seq.min(c.next_seq).max(tail);
    // With no lease, where a missing prefix of the check stops being taken
    // as reclaimed: blocks written since the previous commit (and those
    // of its frontier page, durable before this commit) were not
    // overwritten by a later lap; missing, they mean this commit's sync was
    // cut (a power cut keeps any subset of the writes since the last sync,
    // so later blocks may be there).
    let keep_from = prev.filter(|p| p.base_seq == base).map_or(u64::MAX, |p| {
        if p.frontier.len > 0 {
            p.frontier.first_seq.min(p.next_seq)
        } else {
            p.next_seq
        }
    });
    // Blocks started since the previous commit (since the base, if a reset
    // came between): `c`'s index claim may cover them (the index is synced
    // before `c`'s slot is written), but only `c`'s own sync makes their
    // bytes durable.
    if let Some(p) = prev {
        let since = if p.base_seq == base { p.next_seq } else { base };
        start = start.min(since.max(tail));
    }
    // The previous commit's frontier page, if the frontier left it since:
    // its in-place write may have been garbled by `c`'s sync.
    let prev = prev.filter(|p| {
        p.base_seq == base
            && (p.frontier.page_off, p.frontier.first_seq)
                != (c.frontier.page_off, c.frontier.first_seq)
    });
    if let Some(p) = prev.filter(|p| p.frontier.len > 0) {
        start = start.min(p.frontier.first_seq.max(tail));
    }
    // A continuation: the check starts at its span's start, or, if that
    // was reclaimed, after its last continuation (the tail moves past it).
    if start <= last {
        if let Some(h) = v.header(start)? {
            if h.kind == BlockKind::SpanCont && start - tail >= h.span as u64 {
                start -= h.span as u64;
            } else if h.kind == BlockKind::SpanCont {
                while start <= last
                    && v.header(start)?
                        .is_some_and(|c| c.kind == BlockKind::SpanCont && c.first_ts == h.first_ts)
                {
                    start += 1;
                }
            }
        }
    }
    let checked_from = start;
    if unbounded {
        // With no lease the crashed session may have written a later lap
        // over the oldest blocks, torn: a missing prefix is taken as
        // reclaimed, up to `keep_from`.
        let mut buf = Vec::new();
        while start <= last && start < keep_from {
            match scan_block(v, rule, start, 0, last, &mut buf)? {
                Scanned::Hole | Scanned::Cont | Scanned::Part => start += 1,
                _ => break,
            }
        }
    }
    let reclaimed_to = if start > checked_from { start } else { 0 };
    if start > last {
        return Ok(Some(Region {
            scans: Scans::empty(start),
            last,
            start,
            reclaimed_to,
        }));
    }
    let (scans, reached) = scan_run(v, rule, start, last)?;
    if reached != Some(last) {
        return Ok(None);
    }
    if let Some(p) = prev.filter(|p| p.head_len > 0) {
        let head = p.next_seq - 1;
        if head >= start && head <= last {
            match scans.get(head) {
                Some(Scanned::Packed { end, .. }) if end >= p.head_len as usize => {}
                _ => return Ok(None),
            }
        }
    }
    Ok(Some(Region {
        scans,
        last,
        start,
        reclaimed_to,
    }))
}

/// The newest block, by header, that the crashed session wrote.
fn newest_block(v: &View, rule: &SessionRule, n: u64, floor: u64) -> Result<Option<u64>> {
    let mut best = None;
    for pos in 0..n as u32 {
        if let Some(h) = v.header_at(pos)?.filter(|h| rule.ok(h) && h.seq >= floor) {
            best = best.max(Some(h.seq));
        }
    }
    Ok(best)
}

/// How the head was found.
struct Head {
    scans: Scans,
    head: u64,
    /// A lower bound for the tail (a run of blocks found after the ring
    /// wrapped past every durable point), 0 if none.
    min_tail: u64,
    /// Blocks from here to the head were followed one by one: the ring
    /// ends before the first of them that turns out empty.
    whole_from: u64,
}

/// The head when no lease bounds what the crashed session wrote: every
/// block header is read. If the block `anchor` (durable, `base - 1` if
/// none) is still there, blocks are followed from it while each is there;
/// if the ring wrapped past it, nothing durable is left to keep and the
/// longest run of consecutive blocks is taken, with the tail at its start.
fn full_path(v: &View, rule: &SessionRule, floor: u64, anchor: u64) -> Result<Head> {
    // Where an empty ring restarts: past every block a session was known
    // to start at, not at an anchor taken from the index (which may be
    // damaged).
    let restart = floor
        .max(rule.start)
        .max(v.ring.base)
        .min(SEQ_LIMIT - v.ring.n)
        - 1;
    let base = v.ring.base;
    let n = v.ring.n;
    let mut present = vec![None; n as usize];
    for pos in 0..n as u32 {
        present[pos as usize] = v
            .header_at(pos)?
            .filter(|h| rule.ok(h) && h.seq >= floor)
            .map(|h| h.seq);
    }
    let from = anchor.wrapping_add(1).max(base);
    // Follow from the anchor if it is there; with no anchor (nothing was
    // durable), from the ring's first block if that is still there: the
    // crashed session may have written a later lap over it.
    let follow = if anchor < base {
        present[v.ring.pos(from) as usize] == Some(from)
    } else {
        present[v.ring.pos(anchor) as usize] == Some(anchor)
    };
    if follow {
        // The crashed session may have written more than a lap since the
        // anchor: the run is followed into the next lap (a position then
        // holds its block of each lap, in place and in a page image).
        let (scans, last) = scan_run(v, rule, from, from.saturating_add(2 * n - 1))?;
        return Ok(Head {
            scans,
            head: last.unwrap_or(from - 1),
            min_tail: 0,
            whole_from: from,
        });
    }
    let mut seqs: Vec<u64> = present.into_iter().flatten().collect();
    seqs.sort_unstable();
    let (mut best, mut run) = ((0u64, 0u64, 0u64), (0u64, 0u64));
    for (i, &s) in seqs.iter().enumerate() {
        if i == 0 || s != seqs[i - 1] + 1 {
            run = (s, s);
        } else {
            run.1 = s;
        }
        let len = run.1 - run.0 + 1;
        if len >= best.0 {
            best = (len, run.0, run.1);
        }
    }
    Ok(if best.0 == 0 {
        // Nothing is left: the ring starts afresh after `restart`.
        Head {
            scans: Scans::empty(base),
            head: restart,
            min_tail: restart + 1,
            whole_from: restart + 1,
        }
    } else {
        Head {
            scans: Scans::empty(best.1),
            head: best.2,
            min_tail: best.1,
            whole_from: best.1,
        }
    })
}

/// The recovery of a version 2 store on `media`, with the policy of the
/// session about to start.
pub(crate) fn recover(media: &Media, durability: Option<Durability>) -> Result<Recovered> {
    if media.meta.len() == META_V1_FILE_LEN {
        return Err(Error::corrupted(
            None,
            "format version 1 store: open it from its directory, which upgrades it",
        ));
    }
    if media.meta.len() != META_FILE_LEN {
        return Err(Error::corrupted(
            None,
            format!(
                "meta file is {} bytes, expected {META_FILE_LEN}",
                media.meta.len()
            ),
        ));
    }
    let meta = read_meta_slots(media.meta.as_ref(), META_SLOT_STRIDE, META_SLOT_LEN)?;
    if meta.version != FORMAT_VERSION {
        return Err(Error::corrupted(
            None,
            "a version 1 meta record in a version 2 meta file",
        ));
    }
    let probe = Config {
        num_blocks: meta.num_blocks,
        data_block_size: meta.data_block_size,
        index_block_size: meta.index_block_size,
        ..Config::default()
    };
    let mut cfg = config_of(&meta, media, &[probe.data_file_len().unwrap_or(0)])?;
    if let Some(d) = durability {
        cfg.durability = d;
    }
    let n = cfg.num_blocks as u64;
    let b = cfg.data_block_size as usize;
    let base = meta.base_seq;
    let floor = meta.floor_seq.max(base);
    let ring_len = cfg.ring_len().unwrap_or(0);
    let mut ring = Ring::new(cfg.num_blocks, base);

    // The index, read in full.
    let mut raw = vec![0u8; media.index.len() as usize];
    media.index.read_at(0, &mut raw)?;
    let entry_at = |pos: u32| {
        let o = cfg.index_entry_offset(pos) as usize;
        IndexEntry::decode(&raw[o..o + INDEX_ENTRY_LEN])
    };

    // The commit slots, newest first.
    let slots = read_slots(media, ring_len, &meta, b)?;
    let mut committed: Vec<(usize, CommittedHeader)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.committed.map(|c| (i, c)))
        .collect();
    committed.sort_by_key(|(_, c)| std::cmp::Reverse(c.counter));
    let rule_for = |c: Option<&CommittedHeader>| match c {
        // Recovery wrote `c` for a session whose meta never landed: that
        // session wrote nothing.
        Some(c) if c.session > meta.session => SessionRule {
            session: c.session,
            start: c.next_seq,
        },
        _ => SessionRule {
            session: meta.session,
            start: meta.session_start,
        },
    };
    let view_for = |c: Option<&(usize, CommittedHeader)>| -> Result<View> {
        let mut overlays = Vec::new();
        if let Some((i, c)) = c {
            // Under everything, the frontier image of the commit before
            // `c` if the frontier left its page since: `c`'s sync may have
            // torn the in-place write of that page, whose bytes up to the image's length did not change
            // since (a delete there commits a new image), and the blocks
            // the image holds are owed if `c` is taken.
            if let Some((j, p)) = committed.iter().find(|(_, p)| {
                !c.self_contained
                    && p.counter + 1 == c.counter
                    && p.base_seq == meta.base_seq
                    && (p.frontier.page_off, p.frontier.first_seq)
                        != (c.frontier.page_off, c.frontier.first_seq)
            }) {
                if c.base_seq == meta.base_seq {
                    overlays.extend(slot_overlays(&slots[*j], p).into_iter().filter(|o| !o.aux));
                }
            }
            // The working slot that follows `c`, then `c`'s own images
            // (`c`'s frontier image wins where both cover a page's lap).
            let next_slot = slot_of(c.counter + 1);
            if let Some(w) = slots[next_slot].working.filter(|w| {
                w.base == c.counter && w.session == c.session && w.base_seq == meta.base_seq
            }) {
                overlays.push(Overlay {
                    aux: false,
                    page_off: w.page_off,
                    first_seq: w.first_seq,
                    bytes: working_image(media, ring_len, next_slot, w.page_off)?,
                });
            }
            if c.base_seq == meta.base_seq {
                overlays.extend(slot_overlays(&slots[*i], c));
            }
        }
        Ok(View {
            data: media.data.as_ref(),
            b,
            ring,
            overlays,
            rule: rule_for(c.map(|d| &d.1)),
        })
    };

    // D: the newest commit whose blocks are all there.
    let mut chosen = None;
    for (k, d) in committed.iter().enumerate() {
        let c = &d.1;
        let rule = rule_for(Some(c));
        // A torn image its checksum missed: the commit's sync was cut (the
        // check below reads the blocks since the previous commit, but the
        // view takes every block of the images from this commit's copy).
        let slot = &slots[d.0];
        if c.base_seq == base
            && (image_torn(&slot.frontier, c.frontier, b, floor, &rule)
                || c.aux
                    .is_some_and(|a| image_torn(&slot.aux, a, b, floor, &rule)))
        {
            continue;
        }
        let view = view_for(Some(d))?;
        let prev = committed[k + 1..]
            .iter()
            .map(|p| &p.1)
            .find(|p| p.counter + 1 == c.counter)
            .filter(|_| !c.self_contained);
        // With no lease, blocks a lap older than the newest block of the
        // crashed session were reclaimed by it: they need not be there.
        let reclaimed = if c.lease_end == LEASE_UNBOUNDED {
            newest_block(&view, &rule, n, floor)?.map_or(0, |h| (h + 1).saturating_sub(n))
        } else {
            0
        };
        let unbounded = c.lease_end == LEASE_UNBOUNDED;
        let mut region = region_of(&view, &rule, c, prev, floor, reclaimed, unbounded)?;
        if region.is_none() && !unbounded {
            // Blocks the commit vouches for may be gone because the writer
            // lapped them under this commit's own lease (a span let through
            // past the lease cap, FORMAT.md "Leases"): a block of its
            // session past the lease of the commit before proves this
            // commit's sync completed, and what lies a lap behind that
            // block was reclaimed.
            let before = committed
                .iter()
                .map(|p| &p.1)
                .find(|p| p.counter + 1 == c.counter && p.lease_end != LEASE_UNBOUNDED);
            if let Some(x) = before.map_or(Ok(None), |p| lapped_past(&view, c, p.lease_end))? {
                let reclaimed = (x + 1).saturating_sub(n);
                region = region_of(&view, &rule, c, prev, floor, reclaimed, unbounded)?;
            }
        }
        if let Some(region) = region {
            chosen = Some((c.counter, *c, view, rule, region));
            break;
        }
    }

    // The head.
    let (d, view, rule, mut head, window_end) = match chosen {
        Some((_, c, view, rule, region)) => {
            let bounded =
                c.lease_end != LEASE_UNBOUNDED && c.lease_end < region.start.saturating_add(n);
            if bounded {
                // Follow blocks from D's frontier, within its lease.
                let from = c.next_seq.max(base);
                let (after, last) = scan_run(&view, &rule, from, c.lease_end)?;
                let mut scans = region.scans;
                scans.extend(after);
                let head = Head {
                    scans,
                    head: last.unwrap_or(region.last),
                    min_tail: 0,
                    whole_from: region.start,
                };
                // The crashed session may have written past D's lease: a
                // later commit's sync completed (its lease let the writer
                // on), and that commit was still rejected, a span let
                // through past the lease cap having overwritten a block it
                // vouches for (FORMAT.md, "Leases"). Leases only grow, and
                // at most the newest commit's slot is in flight at a cut.
                let written_to = committed
                    .iter()
                    .filter(|(_, p)| p.counter > c.counter)
                    .fold(c.lease_end, |end, (_, p)| end.max(p.lease_end));
                (Some(c), view, rule, head, Some(written_to))
            } else {
                let mut h = full_path(&view, &rule, floor, region.last)?;
                if h.min_tail == 0 {
                    h.min_tail = region.reclaimed_to;
                    h.whole_from = region.start;
                    let mut scans = region.scans;
                    scans.extend(h.scans);
                    h.scans = scans;
                }
                (Some(c), view, rule, h, None)
            }
        }
        None => {
            let rule = rule_for(None);
            let view = view_for(None)?;
            // The last block durable when the index was last synced.
            let anchor = (0..cfg.num_blocks)
                .filter_map(entry_at)
                .map(|e| e.synced_seq)
                .max()
                .unwrap_or(0)
                .max(meta.session_start.saturating_sub(1))
                .min(SEQ_LIMIT)
                .max(base - 1);
            let h = full_path(&view, &rule, floor, anchor)?;
            (None, view, rule, h, None)
        }
    };

    // The table: trusted index entries, rescans of the rest.
    let claim = match &d {
        Some(c) => c.index_synced_seq.min(c.next_seq),
        None => (0..cfg.num_blocks)
            .filter_map(entry_at)
            .map(|e| e.synced_seq)
            .max()
            .unwrap_or(0),
    };
    let next = head.head.wrapping_add(1).max(base);
    ring.next = next;
    ring.tail = next
        .saturating_sub(n)
        .max(floor)
        .max(head.min_tail)
        .min(next);
    let scans = std::mem::replace(&mut head.scans, Scans::empty(0));
    // Positions the crashed session may have written past the head: a
    // trusted block there must still carry its header.
    let frozen = ring;
    let in_window = |seq: u64| -> bool {
        match window_end {
            Some(end) => {
                let len = end.saturating_add(1).saturating_sub(next).min(n);
                let p = frozen.pos(seq) as u64;
                (p + n - frozen.pos(next) as u64) % n < len
            }
            None => true,
        }
    };
    let mut table = BlockTable::new(cfg.num_blocks);
    let mut live_objects = 0u64;
    let mut last_ts = 0i64;
    let mut carry = 0i64;
    let mut rewrite: Vec<(u64, u32)> = Vec::new();
    let mut holes = std::collections::HashSet::new();
    let mut buf = Vec::new();
    let mut seq = ring.tail;
    while seq < next {
        let pos = ring.pos(seq);
        let trusted = entry_at(pos).filter(|e| {
            e.seq == seq
                && seq < claim
                && e.first_ts >= carry
                && e.kind != BlockKind::SpanCont
                && scans.get(seq).is_none()
                && !view.overlaid(seq)
        });
        let trusted = match trusted {
            Some(e) => {
                let span = match e.kind {
                    BlockKind::SpanStart if e.extra > 0 => e.extra as u64,
                    BlockKind::SpanStart => v_span(&view, seq)?,
                    _ => 1,
                };
                // A block the crashed session may have overwritten is
                // rescanned, not trusted: a write over it torn into a
                // subset of its sectors may leave the old header over new
                // bytes (the harness's sector-subset model), which a check
                // of the header alone would take for the old block.
                let ok = span >= 1
                    && span <= next - seq
                    && (0..span).all(|i| !in_window(seq + i))
                    && (1..span).all(|i| !view.overlaid(seq + i) && scans.get(seq + i).is_none());
                ok.then_some((e, span))
            }
            None => None,
        };
        if let Some((e, span)) = trusted {
            table.set(pos, e.first_ts, e.live, Some(e.kind));
            for i in 1..span {
                table.set(ring.pos(seq + i), e.first_ts, 0, Some(BlockKind::SpanCont));
            }
            carry = e.first_ts;
            live_objects += e.live as u64;
            seq += span;
            continue;
        }
        // Records must also follow the blocks before them.
        let after = last_ts.max(carry - 1).max(0);
        let sc = match scans.get(seq) {
            Some(sc @ Scanned::Packed { key, .. }) if key > after => sc,
            Some(sc @ Scanned::Span { ts, .. }) if ts > after => sc,
            _ => scan_block(&view, &rule, seq, after, next - 1, &mut buf)?,
        };
        let empty = matches!(sc, Scanned::Hole | Scanned::Cont | Scanned::Part);
        if empty && seq == ring.tail {
            // A span whose start was reclaimed, or a hole, at the tail: the
            // tail moves past it. Its entry is zeroed like a hole's: the
            // new commit claims every entry below its first block, and a
            // stale one left here (its block overwritten by a torn write of
            // the crashed session) would be trusted by the next open.
            table.set(pos, carry, 0, None);
            holes.insert(seq);
            ring.tail += 1;
            seq += 1;
            continue;
        }
        if empty && seq >= head.whole_from {
            // Past the head: what follows a missing block is never kept.
            ring.next = seq;
            break;
        }
        match sc {
            Scanned::Packed {
                key, live, last, ..
            } => {
                table.set(pos, key, live, Some(BlockKind::Packed));
                carry = key;
                last_ts = last;
                live_objects += live as u64;
                rewrite.push((seq, 0));
                seq += 1;
            }
            Scanned::Span { ts, live, blocks } => {
                table.set(pos, ts, live, Some(BlockKind::SpanStart));
                rewrite.push((seq, blocks as u32));
                for i in 1..blocks {
                    table.set(ring.pos(seq + i), ts, 0, Some(BlockKind::SpanCont));
                    rewrite.push((seq + i, 0));
                }
                carry = ts;
                last_ts = ts;
                live_objects += live as u64;
                seq += blocks;
            }
            // A continuation block without its start must never carry the
            // timestamp of an object that is not there (a lookup would
            // look for later objects before it): it is a hole, keyed like
            // the block before, as is an empty or invalid block.
            Scanned::Cont | Scanned::Part | Scanned::Hole => {
                table.set(pos, carry, 0, None);
                holes.insert(seq);
                seq += 1;
            }
        }
    }
    // A span whose start was reclaimed is gone, and so is a hole at the
    // tail: the tail moves past them.
    while ring.tail < ring.next
        && !matches!(
            table.kind(ring.pos(ring.tail)),
            Some(BlockKind::Packed | BlockKind::SpanStart)
        )
    {
        ring.tail += 1;
    }

    // The newest timestamp written, deleted or not: only from valid records.
    last_ts = newest_ts(&view, &ring, &table, last_ts)?;

    // The new session's frontier: the page its first block starts in, with
    // the bytes of this lap before it (from the view).
    let (page_off, fill, first_seq) = start_frontier(&ring, b, ring.next);
    let mut frontier = Frontier::new(page_off);
    frontier.fill = fill;
    if fill > 0 {
        let p0 = page_off / b as u64;
        for p in p0..ring.pos(ring.next) as u64 {
            let s = first_seq + (p - p0);
            let at = (p * b as u64 - page_off) as usize;
            if ring.is_live(s) {
                view.read_block(s, &mut buf)?;
                frontier.img[at..at + b].copy_from_slice(&buf);
            } else {
                media
                    .data
                    .read_at(page_off + at as u64, &mut frontier.img[at..at + b])?;
            }
        }
    }

    // What this recovery starts from may be in the page cache only (after
    // a kill: a commit whose sync the kill cut, with the aux image of a
    // delete in flight), and what it writes in place below is taken from
    // it: the data file is synced before the first such write, so that a
    // cut during the repairs leaves the next open where this one started,
    // not with a page changed in place for a commit that was then lost.
    let mut settled = false;
    let mut settle = || -> Result<()> {
        if !settled {
            media.data.sync()?;
            settled = true;
        }
        Ok(())
    };

    // Repairs, 1: what the overlays hold of live blocks goes in place,
    // except in the new frontier page, whose image the new commit carries.
    for ov in &view.overlays {
        let p0 = ov.page_off / b as u64;
        let p_end = (ov.page_off + ov.bytes.len() as u64).div_ceil(b as u64);
        for p in p0..p_end {
            let s = ov.first_seq.saturating_add(p - p0);
            if !ring.is_live(s) || ring.pos(s) as u64 != p || table.kind(ring.pos(s)).is_none() {
                continue;
            }
            let blk = p * b as u64;
            let lo = ov.page_off.max(blk);
            let hi = (ov.page_off + ov.bytes.len() as u64).min(blk + b as u64);
            if lo >= page_off && hi <= page_off + fill as u64 {
                continue;
            }
            view.read_block(s, &mut buf)?;
            let want = &buf[(lo - blk) as usize..(hi - blk) as usize];
            let mut cur = vec![0u8; want.len()];
            media.data.read_at(lo, &mut cur)?;
            if cur != want {
                settle()?;
                media.data.write_at(lo, want)?;
            }
        }
    }
    // Repairs, 2: the headers of blocks the crashed session left past the
    // head are zeroed: inside its lease window, or the whole ring when
    // recovery read every header anyway (no commit slot, a lease a lap
    // long, a store without leases). Session-bound record checksums and
    // the session rule already keep them from validating in a later
    // session; this is defence in depth (a record whose 32-bit checksum
    // happens to match, a tool reading the raw files). Only headers of the
    // crashed session at or past the new head are touched: a page holding
    // one was written by it in this lap, so the positions after it in that
    // page hold nothing durable either. A position may hold a number more
    // than a lap past the head (a span let through past the lease cap,
    // FORMAT.md "Leases"), so the test is on the header's number, not on
    // the number the position would have next.
    // (`ring.next`, not `next`: a missing block after the head's last
    // whole one ended the walk there.)
    let first_dead = ring.next;
    let zero_len = match window_end {
        Some(end) => end.saturating_add(1).saturating_sub(first_dead).min(n),
        None => n,
    };
    let mut hb = [0u8; BLOCK_HEADER_LEN];
    for s in first_dead..first_dead.saturating_add(zero_len) {
        let off = ring.pos(s) as u64 * b as u64;
        media.data.read_at(off, &mut hb)?;
        let dead = BlockHeader::decode(&hb).is_some_and(|h| {
            h.seq >= first_dead && h.seq >= rule.start && h.session == rule.session
        });
        if dead {
            settle()?;
            media.data.write_at(off, &[0u8; BLOCK_HEADER_LEN])?;
        }
    }
    // Synced even if nothing was written: after a kill, blocks recovery
    // keeps (and whose index entries it claims below) may be in the page
    // cache only, and a cut must not leave the index or the new commit
    // durable without them.
    media.data.sync()?;

    // Repairs, 3: index entries rewritten where rescanned, zeroed for holes
    // and past the head (the new session reuses those numbers).
    for &(s, span) in &rewrite {
        let pos = ring.pos(s);
        if let Some(e) = entry_of(&table, &ring, s, span, claim) {
            if entry_at(pos) != Some(e) {
                media
                    .index
                    .write_at(cfg.index_entry_offset(pos), &e.encode())?;
            }
        }
    }
    for pos in 0..cfg.num_blocks {
        if let Some(e) = entry_at(pos) {
            if e.seq >= ring.next || (holes.contains(&e.seq) && ring.pos(e.seq) == pos) {
                media
                    .index
                    .write_at(cfg.index_entry_offset(pos), &[0u8; INDEX_ENTRY_LEN])?;
            }
        }
    }
    // Synced even if nothing was rewritten: after a kill, the entries the
    // crashed session wrote may be in the page cache only, and the new
    // session's commit claims every entry below its first block.
    media.index.sync()?;

    // The new session's first commit, in a slot that is neither D's nor
    // the working slot after it (a cut while it is written leaves both).
    let session = rule.session.wrapping_add(1);
    let counter = match &d {
        Some(c) => c.counter + 2,
        None => {
            slots
                .iter()
                .filter_map(|s| {
                    s.committed
                        .map(|c| c.counter)
                        .or(s.working.map(|w| w.base + 1))
                })
                .max()
                .unwrap_or(0)
                + 2
        }
    };
    let lease_end = first_lease(&cfg, ring.next - 1);
    let c = session_commit(
        counter,
        session,
        base,
        ring.next,
        PageRef {
            page_off,
            first_seq,
            len: fill as u32,
        },
        last_ts,
        lease_end,
    );
    write_commit_slot(media, ring_len, &c, frontier.bytes())?;

    // Then meta: the new session, and the floor below which nothing is
    // live.
    let mut meta = meta;
    meta.generation += 1;
    meta.session = session;
    meta.session_start = ring.next;
    meta.floor_seq = ring.tail;
    meta.clean = false;
    // The slot read above is synced first: after a kill its write may be
    // in the page cache only, and a power cut garbling the page of the one
    // written now may garble that one's too (both written since the last
    // sync), leaving no valid meta.
    media.meta.sync()?;
    media
        .meta
        .write_at(Meta::slot_offset(meta.generation), &meta.encode())?;
    media.meta.sync()?;

    let state = State {
        ring,
        table,
        head: None,
        last_ts,
        live_objects,
        appended: 0,
        deleted: 0,
        resets: 0,
        meta,
        closed: false,
        poisoned: None,
        frontier,
        working: None,
        aux: None,
        commit_next: counter + 1,
        last_commit_page: (page_off, first_seq),
        index_claim: ring.next,
        entries_below: ring.next,
        index_writes: 0,
        index_synced_writes: 0,
    };
    Ok(Recovered {
        lease_end,
        lease_blocks: lease_blocks(&cfg),
        cfg,
        state,
    })
}

/// The number of blocks of the span starting at `seq`, from its header (1
/// if it has none: the entry is then not trusted).
fn v_span(v: &View, seq: u64) -> Result<u64> {
    Ok(v.header(seq)?.map_or(0, |h| h.span as u64))
}
