//! Open-time recovery: rebuilds head, tail, the time index and the counts
//! from what is on disk, drops a torn tail, and repairs the index.
//!
//! The walk (FORMAT.md, "Opening a store"):
//! 1. the meta slot with the highest valid generation gives the shape, the
//!    reset point `base_seq` and the session that last wrote;
//! 2. index entries are read in full; the highest `synced_seq` among valid
//!    entries, `D`, is a point through which data and index were durable;
//! 3. from `D` (or `base_seq`, or the head the previous open found, if
//!    later) block headers are followed while they hold the expected
//!    sequence numbers: the last one is the head. If the block at the start
//!    was overwritten by a later lap, or the walk ends at a torn header,
//!    every header is read instead and the head is the highest valid
//!    sequence number;
//! 4. a new session starts, before any repair: its number and start (the
//!    head just found) go to meta, so blocks left behind by the crashed
//!    session beyond the head can never be mistaken for blocks of a later
//!    one, and a cut during the repairs cannot move the next walk back;
//! 5. blocks before `D` are taken from their index entries (after a power
//!    cut, only if their headers still match them); the others are
//!    rescanned record by record, and their entries rewritten; after a
//!    power cut, dead blocks (beyond the head, or of an invalid session)
//!    lose their headers and entries past the head are zeroed.
//!
//! After a clean close (the meta flag) open reads only the index and the
//! head block's header; after a power cut it reads every block header.
//!
//! Recovery never fails because of a torn write; it fails with `Corrupted`
//! only if no valid meta slot exists or the files do not match it.

use super::config::{Config, DataType, Durability};
use super::engine::{Media, State};
use super::error::{Error, Result};
use super::format::{
    record_crc, BlockHeader, BlockKind, IndexEntry, Meta, RecordHeader, BLOCK_HEADER_LEN,
    INDEX_ENTRY_LEN, MAX_OBJECT_LEN, META_FILE_LEN, META_SLOT_LEN, META_SLOT_STRIDE,
    RECORD_HEADER_LEN, REC_DELETED_BIT, REC_DELETED_BYTE_OFF,
};
use super::index::BlockTable;
use super::medium::Medium;
use super::object::Records;
use super::ring::Ring;

/// Reads the newest valid meta slot.
pub(crate) fn read_meta(meta: &dyn Medium) -> Result<Meta> {
    if meta.len() != META_FILE_LEN {
        return Err(Error::corrupted(
            None,
            format!(
                "meta file is {} bytes, expected {META_FILE_LEN}",
                meta.len()
            ),
        ));
    }
    let mut best: Option<Meta> = None;
    let mut why = "";
    for slot in 0..2u64 {
        let mut b = [0u8; META_SLOT_LEN];
        meta.read_at(slot * META_SLOT_STRIDE as u64, &mut b)?;
        match Meta::decode(&b) {
            // Generations count opens and resets from 1: one this large was
            // not written by the engine, and the next one would overflow.
            Ok(m) if m.generation > u64::MAX / 4 => why = "generation out of range",
            Ok(m) if best.is_none_or(|x| m.generation > x.generation) => best = Some(m),
            Ok(_) => {}
            Err(e) => why = e,
        }
    }
    best.ok_or_else(|| Error::corrupted(None, format!("no valid meta record ({why})")))
}

/// The configuration a meta record describes, checked against the media.
fn config_of(m: &Meta, media: &Media) -> Result<Config> {
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
    if Some(media.data.len()) != cfg.data_file_len() {
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
    if m.base_seq == 0 || m.base_seq > u64::MAX / 4 {
        return Err(bad(format!("invalid base sequence {}", m.base_seq)));
    }
    Ok(cfg)
}

struct Ctx<'a> {
    media: &'a Media,
    cfg: Config,
    meta: Meta,
    ring: Ring,
}

impl Ctx<'_> {
    fn b(&self) -> usize {
        self.cfg.data_block_size as usize
    }

    fn off(&self, seq: u64) -> u64 {
        self.ring.pos(seq) as u64 * self.cfg.data_block_size as u64
    }

    /// Was a header with this sequence number and session written by the
    /// session meta says it was (see step 5 above)?
    fn session_ok(&self, h: &BlockHeader) -> bool {
        if h.seq >= self.meta.session_start {
            h.session == self.meta.session
        } else {
            h.session < self.meta.session
        }
    }

    fn header(&self, pos_seq: u64) -> Result<Option<BlockHeader>> {
        let mut b = [0u8; BLOCK_HEADER_LEN];
        self.media.data.read_at(self.off(pos_seq), &mut b)?;
        Ok(BlockHeader::decode(&b))
    }

    /// True if the header bytes at the position of `seq` are all zero
    /// (never written), as opposed to torn.
    fn blank(&self, pos_seq: u64) -> Result<bool> {
        let mut b = [0u8; BLOCK_HEADER_LEN];
        self.media.data.read_at(self.off(pos_seq), &mut b)?;
        Ok(b.iter().all(|&x| x == 0))
    }

    fn read_block(&self, seq: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(self.b(), 0);
        self.media.data.read_at(self.off(seq), buf)?;
        Ok(())
    }
}

/// What a rescan learned about one block.
enum Scanned {
    Hole,
    Packed { key: i64, live: u32, last: i64 },
    Span { ts: i64, live: u32, blocks: u64 },
    Cont { ts: i64 },
}

/// Validates a whole spanning object starting at `seq` (which is live up
/// to `head`). Returns its timestamp, whether it is deleted and its length
/// in blocks.
fn check_span(c: &Ctx, seq: u64, head: u64, first: &[u8]) -> Result<Option<(i64, bool, u64)>> {
    let Some(h) = BlockHeader::decode(first) else {
        return Ok(None);
    };
    let rh = RecordHeader::decode(&first[BLOCK_HEADER_LEN..]);
    let len = rh.len as usize;
    let payload = c.b() - BLOCK_HEADER_LEN;
    let k = (RECORD_HEADER_LEN + len).div_ceil(payload) as u64;
    if rh.ts <= 0 || rh.ts != h.first_ts || k != h.span as u64 || len as u64 > MAX_OBJECT_LEN {
        return Ok(None);
    }
    if seq + k - 1 > head {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(len);
    let n0 = (payload - RECORD_HEADER_LEN).min(len);
    let at = BLOCK_HEADER_LEN + RECORD_HEADER_LEN;
    data.extend_from_slice(&first[at..at + n0]);
    let mut buf = Vec::new();
    for i in 1..k {
        c.read_block(seq + i, &mut buf)?;
        match BlockHeader::decode(&buf) {
            Some(ch)
                if ch.seq == seq + i
                    && c.session_ok(&ch)
                    && ch.kind == BlockKind::SpanCont
                    && ch.span as u64 == i
                    && ch.first_ts == rh.ts => {}
            _ => return Ok(None),
        }
        let n = payload.min(len - data.len());
        data.extend_from_slice(&buf[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + n]);
    }
    if record_crc(seq, rh.ts, rh.len, &data) != rh.crc {
        return Ok(None);
    }
    Ok(Some((rh.ts, rh.deleted, k)))
}

fn rescan(c: &Ctx, seq: u64, head: u64, prev_last: i64, buf: &mut Vec<u8>) -> Result<Scanned> {
    c.read_block(seq, buf)?;
    let Some(h) = BlockHeader::decode(buf).filter(|h| h.seq == seq && c.session_ok(h)) else {
        return Ok(Scanned::Hole);
    };
    Ok(match h.kind {
        BlockKind::Packed => {
            let mut key = None;
            let mut live = 0;
            let mut last = prev_last;
            for r in Records::new(buf, seq) {
                if r.ts <= prev_last {
                    break;
                }
                key.get_or_insert(r.ts);
                live += u32::from(!r.deleted);
                last = r.ts;
            }
            match key {
                Some(key) => Scanned::Packed { key, live, last },
                None => Scanned::Hole,
            }
        }
        BlockKind::SpanStart => match check_span(c, seq, head, buf)? {
            Some((ts, deleted, blocks)) if ts > prev_last => Scanned::Span {
                ts,
                live: u32::from(!deleted),
                blocks,
            },
            _ => Scanned::Hole,
        },
        BlockKind::SpanCont => Scanned::Cont { ts: h.first_ts },
    })
}

/// Does block `seq` (and, for a span start, each of its continuations)
/// still carry the header its index entry describes? Below `D` the entries
/// are durable, but the crashed session may have written blocks of the next
/// lap beyond the recovered head, in any subset and torn: those land on
/// older blocks of the ring, whose entries then describe blocks that are
/// gone. Such a block is rescanned (and found to be a hole).
fn still_holds(c: &Ctx, seq: u64, e: &IndexEntry) -> Result<bool> {
    let is = |h: &Option<BlockHeader>, s: u64, kind: BlockKind, ts: i64| {
        h.is_some_and(|h| h.seq == s && h.kind == kind && h.first_ts == ts && c.session_ok(&h))
    };
    let h = c.header(seq)?;
    if !is(&h, seq, e.kind, e.first_ts) {
        return Ok(false);
    }
    if e.kind == BlockKind::SpanStart {
        let span = h.map_or(0, |h| h.span as u64);
        if span == 0 || span > c.ring.n {
            return Ok(false);
        }
        for i in 1..span {
            if !is(
                &c.header(seq + i)?,
                seq + i,
                BlockKind::SpanCont,
                e.first_ts,
            ) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Sets the delete flag of the record at `off` in block `seq` if the record
/// validates (rolls a soft delete forward).
fn roll_forward_delete(c: &Ctx, seq: u64, off: u32, buf: &mut Vec<u8>) -> Result<()> {
    let off = off as usize;
    if off < BLOCK_HEADER_LEN || off + RECORD_HEADER_LEN > c.b() {
        return Ok(());
    }
    c.read_block(seq, buf)?;
    if BlockHeader::decode(buf).is_none_or(|h| h.seq != seq) {
        return Ok(());
    }
    let rh = RecordHeader::decode(&buf[off..]);
    if rh.deleted {
        return Ok(());
    }
    let end = off + RECORD_HEADER_LEN + rh.len as usize;
    let valid = end <= c.b() && {
        let data = &buf[off + RECORD_HEADER_LEN..end];
        record_crc(seq, rh.ts, rh.len, data) == rh.crc
    };
    // A spanning object's record holds only its first part; its flag is
    // valid to set when the header matches the block's.
    let span_start = off == BLOCK_HEADER_LEN
        && BlockHeader::decode(buf)
            .is_some_and(|h| h.kind == BlockKind::SpanStart && h.first_ts == rh.ts);
    if valid || span_start {
        let byte = buf[off + REC_DELETED_BYTE_OFF] | REC_DELETED_BIT;
        c.media
            .data
            .write_at(c.off(seq) + (off + REC_DELETED_BYTE_OFF) as u64, &[byte])?;
    }
    Ok(())
}

/// Opens the store on `media`: returns its configuration and state.
pub(crate) fn recover(media: &Media) -> Result<(Config, State)> {
    let meta = read_meta(media.meta.as_ref())?;
    let cfg = config_of(&meta, media)?;
    let n = cfg.num_blocks;
    let base = meta.base_seq;
    let clean = meta.clean;
    let mut c = Ctx {
        media,
        cfg,
        meta,
        ring: Ring::new(n, base),
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
        .min(u64::MAX / 4);

    // Step 3: the head. The previous open ended its ring at
    // `session_start - 1` and synced it before writing meta: start no
    // earlier, or a head found by a full scan then (past a hole) is lost
    // now, and blocks it had reclaimed come back.
    let from = d.max(base).max(c.meta.session_start.saturating_sub(1));
    let mut head: Option<u64> = None;
    let mut full_scan = false;
    let mut s = from;
    while s - from < n as u64 {
        match c.header(s)? {
            Some(h) if h.seq == s && c.session_ok(&h) => {
                head = Some(s);
                s += 1;
            }
            Some(h)
                if h.seq > s
                    && h.seq < u64::MAX / 4
                    && c.session_ok(&h)
                    && c.ring.pos(h.seq) == c.ring.pos(s) =>
            {
                full_scan = true;
                break;
            }
            h => {
                // The synced point itself is gone: read everything. So too
                // if a header is torn: block `s` was in flight (the end), or
                // the ring wrapped past `D` and a write of the next lap tore
                // it, with durable blocks after it; only reading every
                // header tells these apart.
                if (s == from && d >= base) || (h.is_none() && !c.blank(s)?) {
                    full_scan = true;
                }
                break;
            }
        }
    }
    if full_scan {
        head = None;
        for pos in 0..n {
            let mut b = [0u8; BLOCK_HEADER_LEN];
            media
                .data
                .read_at(pos as u64 * cfg.data_block_size as u64, &mut b)?;
            if let Some(h) = BlockHeader::decode(&b) {
                if h.seq >= base
                    && h.seq < u64::MAX / 4
                    && c.ring.pos(h.seq) == pos
                    && c.session_ok(&h)
                    && head.is_none_or(|x| h.seq > x)
                {
                    head = Some(h.seq);
                }
            }
        }
    }

    // Step 4: the table.
    let mut table = BlockTable::new(n);
    let mut live_objects = 0u64;
    let mut last_ts = 0i64;
    let mut repaired: Vec<u64> = Vec::new();
    let mut holes: Vec<u64> = Vec::new();
    let (tail, next) = match head {
        None => (base, base),
        Some(h) => ((h + 1).saturating_sub(n as u64).max(base), h + 1),
    };
    c.ring.tail = tail;
    c.ring.next = next;
    let mut buf = Vec::new();
    let mut carry = 0i64;
    let mut seq = tail;
    while seq < next {
        let pos = c.ring.pos(seq);
        let entry = entries[pos as usize].filter(|e| e.seq == seq);
        if let Some(e) = entry.filter(|e| e.pending_delete != 0) {
            roll_forward_delete(&c, seq, e.pending_delete, &mut buf)?;
        }
        let trusted = match entry.filter(|e| !full_scan && seq < d && e.first_ts >= carry) {
            // After a clean close no block beyond the head was written, so
            // none can have replaced a block below it.
            Some(e) if clean || still_holds(&c, seq, &e)? => Some(e),
            _ => None,
        };
        if let Some(e) = trusted {
            table.set(pos, e.first_ts, e.live, Some(e.kind));
            carry = e.first_ts;
            live_objects += e.live as u64;
            seq += 1;
            continue;
        }
        repaired.push(seq);
        match rescan(&c, seq, next - 1, last_ts.max(carry - 1).max(0), &mut buf)? {
            Scanned::Hole => {
                table.set(pos, carry, 0, None);
                holes.push(seq);
                repaired.pop();
            }
            Scanned::Packed { key, live, last } => {
                table.set(pos, key, live, Some(BlockKind::Packed));
                carry = key;
                last_ts = last;
                live_objects += live as u64;
            }
            Scanned::Span { ts, live, blocks } => {
                table.set(pos, ts, live, Some(BlockKind::SpanStart));
                for i in 1..blocks {
                    table.set(c.ring.pos(seq + i), ts, 0, Some(BlockKind::SpanCont));
                    repaired.push(seq + i);
                }
                carry = ts;
                last_ts = ts;
                live_objects += live as u64;
                seq += blocks;
                continue;
            }
            Scanned::Cont { ts } if ts >= carry => {
                table.set(pos, ts, 0, Some(BlockKind::SpanCont));
                carry = ts;
            }
            Scanned::Cont { .. } => {
                table.set(pos, carry, 0, None);
                holes.push(seq);
                repaired.pop();
            }
        }
        seq += 1;
    }
    // A span whose start was reclaimed is gone: the tail moves past it.
    while c.ring.tail < c.ring.next
        && table.kind(c.ring.pos(c.ring.tail)) != Some(BlockKind::Packed)
        && table.kind(c.ring.pos(c.ring.tail)) != Some(BlockKind::SpanStart)
    {
        c.ring.tail += 1;
    }

    // The newest timestamp written, deleted or not.
    let mut s = c.ring.next;
    while s > c.ring.tail {
        s -= 1;
        let pos = c.ring.pos(s);
        match table.kind(pos) {
            Some(BlockKind::Packed) => {
                c.read_block(s, &mut buf)?;
                if let Some(t) = Records::new(&buf, s).last().map(|r| r.ts) {
                    last_ts = last_ts.max(t);
                    break;
                }
            }
            Some(BlockKind::SpanStart) => {
                last_ts = last_ts.max(table.key(pos));
                break;
            }
            _ => {}
        }
    }

    // Step 5, done before any repair: a new session. Its meta records the
    // head just found (`session_start - 1`), where the next open's walk
    // starts whatever this one's repairs got done before a cut: the
    // repairs erase and rewrite index entries, and an entry carrying `D`
    // may be among them.
    let mut meta = c.meta;
    meta.generation += 1;
    meta.session = meta.session.wrapping_add(1);
    meta.session_start = c.ring.next;
    meta.clean = false;
    media
        .meta
        .write_at(Meta::slot_offset(meta.generation), &meta.encode())?;
    media.meta.sync()?;

    // Step 4b: repair the index; nothing claims more than was durable.
    let entry_of = |s: u64| {
        let pos = c.ring.pos(s);
        table.kind(pos).map(|kind| IndexEntry {
            seq: s,
            first_ts: table.key(pos),
            synced_seq: d.min(s),
            live: table.live(pos),
            kind,
            pending_delete: 0,
        })
    };
    for &s in &repaired {
        if let Some(e) = entry_of(s) {
            media
                .index
                .write_at(cfg.index_entry_offset(c.ring.pos(s)), &e.encode())?;
        }
    }
    for &s in &holes {
        let pos = c.ring.pos(s);
        if entries[pos as usize].is_some() {
            media
                .index
                .write_at(cfg.index_entry_offset(pos), &[0u8; INDEX_ENTRY_LEN])?;
        }
    }
    // Blocks beyond the head, and blocks whose session is not valid, are
    // dead: the session rule keeps them out only until a later session
    // starts past them, so their headers go. This open sees them no
    // differently once erased, so a cut part way is harmless. After a clean
    // close there are none: the open before erased them, and the session
    // wrote nothing past its head.
    for pos in (0..n).filter(|_| !clean) {
        let off = pos as u64 * cfg.data_block_size as u64;
        let mut b = [0u8; BLOCK_HEADER_LEN];
        media.data.read_at(off, &mut b)?;
        if let Some(h) = BlockHeader::decode(&b) {
            if h.seq >= base
                && h.seq < u64::MAX / 4
                && c.ring.pos(h.seq) == pos
                && (h.seq >= c.ring.next || !c.session_ok(&h))
            {
                media.data.write_at(off, &[0u8; BLOCK_HEADER_LEN])?;
            }
        }
    }
    // Entries of blocks beyond the head were written by the crashed
    // session. The new session reuses their sequence numbers, so they go
    // before it starts: a pending delete in one would be rolled forward
    // onto the new block with that number.
    for (pos, e) in entries.iter().enumerate() {
        if e.is_some_and(|e| e.seq >= c.ring.next) {
            media
                .index
                .write_at(cfg.index_entry_offset(pos as u32), &[0u8; INDEX_ENTRY_LEN])?;
        }
    }
    media.data.sync()?;
    media.index.sync()?;

    let synced_seq = c.ring.head().unwrap_or(0);
    let state = State {
        ring: c.ring,
        table,
        head: None,
        last_ts,
        live_objects,
        appended: 0,
        deleted: 0,
        resets: 0,
        synced_seq,
        meta,
        closed: false,
        poisoned: None,
    };
    Ok((cfg, state))
}
