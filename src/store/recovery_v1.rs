//! Recovery of a version 1 store, by the version 1 rules, as the first step
//! of its upgrade (FORMAT.md, "Version changes"). It reuses the block
//! checks of `recovery.rs` and returns what the upgrade needs: the shape,
//! meta (with the session this open started) and the ring.
//!
//! The walk (the version 1 "Opening a store"):
//! 1. the meta slot with the highest valid generation (slots 512 bytes
//!    apart) gives the shape, the reset point and the session that last
//!    wrote;
//! 2. index entries are read in full; the highest `synced_seq` among valid
//!    entries, `D`, is a point through which data and index were durable;
//! 3. from `D` (or `base_seq`, or the head the previous open found, if
//!    later) block headers are followed while they hold the expected
//!    sequence numbers: the last one is the head. If the block at the start
//!    was overwritten by a later lap, or the walk ends at a torn header,
//!    every header is read instead and the head is the highest valid
//!    sequence number;
//! 4. a new session starts, before any repair: its number and start go to
//!    meta;
//! 5. blocks before `D` are taken from their index entries (after a power
//!    cut, only if their headers still match them); the others are
//!    rescanned; a continuation block without its span start is a hole;
//!    pending deletes are rolled forward (and their entries rewritten
//!    without one, since version 2 gives the field another meaning); after
//!    a power cut, dead blocks lose their headers and entries past the head
//!    are zeroed.
//!
//! The data file may already have the version 2 length: an upgrade cut
//! after extending it runs again.

use super::config::Config;
use super::error::Result;
use super::format::{
    commit_area_offset, record_crc, BlockHeader, BlockKind, IndexEntry, Meta, RecordHeader,
    BLOCK_HEADER_LEN, COMMIT_AREA_LEN, INDEX_ENTRY_LEN, META_V1_SLOT_LEN, META_V1_SLOT_STRIDE,
    RECORD_HEADER_LEN, REC_DELETED_BIT, REC_DELETED_BYTE_OFF,
};
use super::index::BlockTable;
use super::recovery::{
    config_of, entry_of, newest_ts, read_meta_slots, scan_block, still_holds, Scanned, SessionRule,
    View, SEQ_LIMIT,
};
use super::ring::Ring;
use super::shared::Media;

/// What the version 1 recovery found.
pub(crate) struct RecoveredV1 {
    pub cfg: Config,
    /// Meta as this open wrote it (version 1, the new session).
    pub meta: Meta,
    pub ring: Ring,
    pub last_ts: i64,
}

/// Sets the delete flag of the record at `off` in block `seq` if the record
/// validates (rolls a soft delete forward).
fn roll_forward_delete(v: &View, seq: u64, off: u32, buf: &mut Vec<u8>) -> Result<()> {
    let off = off as usize;
    if off < BLOCK_HEADER_LEN || off + RECORD_HEADER_LEN > v.b {
        return Ok(());
    }
    v.read_block(seq, buf)?;
    let Some(h) = BlockHeader::decode(buf).filter(|h| h.seq == seq) else {
        return Ok(());
    };
    let rh = RecordHeader::decode(&buf[off..]);
    if rh.deleted {
        return Ok(());
    }
    let end = off + RECORD_HEADER_LEN + rh.len as usize;
    let valid = end <= v.b && {
        let data = &buf[off + RECORD_HEADER_LEN..end];
        record_crc(h.record_key(), rh.ts, rh.len, data) == rh.crc
    };
    // A spanning object's record holds only its first part; its flag is
    // valid to set when the header matches the block's.
    let span_start =
        off == BLOCK_HEADER_LEN && h.kind == BlockKind::SpanStart && h.first_ts == rh.ts;
    if valid || span_start {
        let byte = buf[off + REC_DELETED_BYTE_OFF] | REC_DELETED_BIT;
        v.data
            .write_at(v.off(seq) + (off + REC_DELETED_BYTE_OFF) as u64, &[byte])?;
    }
    Ok(())
}

/// Recovers the version 1 store on `media` (meta 1024 bytes).
pub(crate) fn recover(media: &Media) -> Result<RecoveredV1> {
    let meta = read_meta_slots(media.meta.as_ref(), META_V1_SLOT_STRIDE, META_V1_SLOT_LEN)?;
    let ring_len = meta.num_blocks as u64 * meta.data_block_size as u64;
    let cfg = config_of(
        &meta,
        media,
        &[ring_len, commit_area_offset(ring_len) + COMMIT_AREA_LEN],
    )?;
    let n = cfg.num_blocks;
    let base = meta.base_seq;
    let clean = meta.clean;
    let rule = SessionRule {
        session: meta.session,
        start: meta.session_start,
    };
    let mut v = View {
        data: media.data.as_ref(),
        b: cfg.data_block_size as usize,
        ring: Ring::new(n, base),
        overlays: Vec::new(),
        rule,
    };

    // Step 2: the index.
    let mut raw = vec![0u8; media.index.len() as usize];
    media.index.read_at(0, &mut raw)?;
    let entries: Vec<Option<IndexEntry>> = (0..n)
        .map(|pos| {
            let o = cfg.index_entry_offset(pos) as usize;
            IndexEntry::decode(&raw[o..o + INDEX_ENTRY_LEN])
        })
        .collect();
    drop(raw);
    let d = entries
        .iter()
        .flatten()
        .map(|e| e.synced_seq)
        .max()
        .unwrap_or(0)
        .min(SEQ_LIMIT);
    let blank = |s: u64| -> Result<bool> {
        let mut b = [0u8; BLOCK_HEADER_LEN];
        media.data.read_at(v.off(s), &mut b)?;
        Ok(b.iter().all(|&x| x == 0))
    };

    // Step 3: the head.
    let from = d.max(base).max(meta.session_start.saturating_sub(1));
    let mut head: Option<u64> = None;
    let mut full_scan = false;
    let mut s = from;
    while s - from < n as u64 {
        let mut hb = [0u8; BLOCK_HEADER_LEN];
        media.data.read_at(v.off(s), &mut hb)?;
        match BlockHeader::decode(&hb) {
            Some(h) if h.seq == s && rule.ok(&h) => {
                head = Some(s);
                s += 1;
            }
            Some(h)
                if h.seq > s
                    && h.seq < SEQ_LIMIT
                    && rule.ok(&h)
                    && v.ring.pos(h.seq) == v.ring.pos(s) =>
            {
                full_scan = true;
                break;
            }
            h => {
                // The synced point itself is gone, or a header is torn:
                // only reading every header tells the end from a hole.
                if (s == from && d >= base) || (h.is_none() && !blank(s)?) {
                    full_scan = true;
                }
                break;
            }
        }
    }
    if full_scan {
        head = None;
        for pos in 0..n {
            if let Some(h) = v.header_at(pos)? {
                if rule.ok(&h) && head.is_none_or(|x| h.seq > x) {
                    head = Some(h.seq);
                }
            }
        }
    }

    // Step 5 (in memory): the table.
    let mut table = BlockTable::new(n);
    let mut last_ts = 0i64;
    let mut repaired: Vec<(u64, u32)> = Vec::new();
    let mut holes: Vec<u64> = Vec::new();
    let (tail, next) = match head {
        None => (base, base),
        Some(h) => ((h + 1).saturating_sub(n as u64).max(base), h + 1),
    };
    v.ring.tail = tail;
    v.ring.next = next;
    let mut buf = Vec::new();
    let mut carry = 0i64;
    let mut seq = tail;
    while seq < next {
        let pos = v.ring.pos(seq);
        let entry = entries[pos as usize].filter(|e| e.seq == seq);
        if let Some(e) = entry.filter(|e| e.extra != 0) {
            roll_forward_delete(&v, seq, e.extra, &mut buf)?;
            // The field means something else in version 2.
            repaired.push((seq, 0));
        }
        let trusted = match entry.filter(|e| {
            !full_scan && seq < d && e.first_ts >= carry && e.kind != BlockKind::SpanCont
        }) {
            // After a clean close no block beyond the head was written, so
            // none can have replaced a block below it.
            Some(e) if clean || still_holds(&v, &rule, seq, &e)? => Some(e),
            _ => None,
        };
        if let Some(e) = trusted {
            let span = match e.kind {
                BlockKind::SpanStart => v.header(seq)?.map_or(1, |h| h.span.max(1) as u64),
                _ => 1,
            };
            if span <= next - seq {
                table.set(pos, e.first_ts, e.live, Some(e.kind));
                for i in 1..span {
                    table.set(
                        v.ring.pos(seq + i),
                        e.first_ts,
                        0,
                        Some(BlockKind::SpanCont),
                    );
                }
                carry = e.first_ts;
                seq += span;
                continue;
            }
        }
        let after = last_ts.max(carry - 1).max(0);
        match scan_block(&v, &rule, seq, after, next - 1, &mut buf)? {
            Scanned::Packed {
                key, live, last, ..
            } => {
                table.set(pos, key, live, Some(BlockKind::Packed));
                carry = key;
                last_ts = last;
                repaired.push((seq, 0));
                seq += 1;
            }
            Scanned::Span { ts, live, blocks } => {
                table.set(pos, ts, live, Some(BlockKind::SpanStart));
                repaired.push((seq, blocks as u32));
                for i in 1..blocks {
                    table.set(v.ring.pos(seq + i), ts, 0, Some(BlockKind::SpanCont));
                    repaired.push((seq + i, 0));
                }
                carry = ts;
                last_ts = ts;
                seq += blocks;
            }
            Scanned::Hole | Scanned::Cont | Scanned::Part => {
                table.set(pos, carry, 0, None);
                holes.push(seq);
                seq += 1;
            }
        }
    }
    while v.ring.tail < v.ring.next
        && !matches!(
            table.kind(v.ring.pos(v.ring.tail)),
            Some(BlockKind::Packed | BlockKind::SpanStart)
        )
    {
        v.ring.tail += 1;
    }
    // The newest timestamp written, deleted or not.
    last_ts = newest_ts(&v, &v.ring, &table, last_ts)?;

    // Step 4, before any repair: a new session (version 1 meta).
    let mut meta = meta;
    meta.generation += 1;
    meta.session = meta.session.wrapping_add(1);
    meta.session_start = v.ring.next;
    meta.clean = false;
    media
        .meta
        .write_at(Meta::slot_offset_v1(meta.generation), &meta.encode())?;
    media.meta.sync()?;

    // Step 5: the repairs.
    for &(s, span) in &repaired {
        if let Some(e) = entry_of(&table, &v.ring, s, span, d) {
            media
                .index
                .write_at(cfg.index_entry_offset(v.ring.pos(s)), &e.encode())?;
        }
    }
    for &s in &holes {
        let pos = v.ring.pos(s);
        if entries[pos as usize].is_some() {
            media
                .index
                .write_at(cfg.index_entry_offset(pos), &[0u8; INDEX_ENTRY_LEN])?;
        }
    }
    // Dead blocks (beyond the head, or of a session that is not valid)
    // lose their headers: the version 1 rules let a later session's start
    // pass them.
    for pos in (0..n).filter(|_| !clean) {
        let off = pos as u64 * cfg.data_block_size as u64;
        let mut b = [0u8; BLOCK_HEADER_LEN];
        media.data.read_at(off, &mut b)?;
        if let Some(h) = BlockHeader::decode(&b) {
            if h.seq >= base
                && h.seq < SEQ_LIMIT
                && v.ring.pos(h.seq) == pos
                && (h.seq >= v.ring.next || !rule.ok(&h))
            {
                media.data.write_at(off, &[0u8; BLOCK_HEADER_LEN])?;
            }
        }
    }
    for (pos, e) in entries.iter().enumerate() {
        if e.is_some_and(|e| e.seq >= v.ring.next) {
            media
                .index
                .write_at(cfg.index_entry_offset(pos as u32), &[0u8; INDEX_ENTRY_LEN])?;
        }
    }
    media.data.sync()?;
    media.index.sync()?;
    Ok(RecoveredV1 {
        cfg,
        meta,
        ring: v.ring,
        last_ts,
    })
}
