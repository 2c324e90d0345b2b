//! Changes to the ring: appends (packed and spanning objects), sealing and
//! reclaiming blocks, index entries, soft deletes and resets.
//!
//! Every change goes through the frontier (`frontier.rs`), so its bytes are
//! in the page cache when the change returns, and every block started
//! stays inside the lease of the last completed commit: an append that
//! needs a block past it returns [`Appended::NeedLease`] having changed
//! nothing, and its caller waits for a commit (without the state lock) and
//! tries again.

use std::sync::atomic::Ordering;

use super::error::{Error, Result};
use super::format::{
    encode_record_header, BlockHeader, BlockKind, IndexEntry, Meta, PageRef, RecordKey,
    BLOCK_HEADER_LEN, FORMAT_VERSION, PAGE, RECORD_HEADER_LEN, REC_DELETED_BIT,
    REC_DELETED_BYTE_OFF,
};
use super::object::ObjectHandle;
use super::ring::Ring;
use super::shared::{wr, Aux, Frontier, HeadBuf, Shared, State};

/// What an append did.
pub(crate) enum Appended {
    Done(ObjectHandle),
    /// The append needs block `seq`, past the lease; nothing was changed
    /// but the open head block sealed (a span's).
    NeedLease(u64),
}

impl Shared {
    /// Appends one object (timestamp already checked).
    pub(crate) fn append(&self, st: &mut State, ts: i64, data: &[u8]) -> Result<Appended> {
        let b = self.block_size();
        let rec = RECORD_HEADER_LEN + data.len();
        if rec > b - BLOCK_HEADER_LEN {
            return self.append_span(st, ts, data);
        }
        let fits = matches!(&st.head, Some(h) if h.len + rec <= b);
        if !fits {
            let seq = st.ring.next;
            if seq > self.lease() {
                return Ok(Appended::NeedLease(seq));
            }
            self.seal_head(st)?;
            self.start_block(st);
            let mut buf = vec![0u8; b];
            BlockHeader {
                version: FORMAT_VERSION,
                kind: BlockKind::Packed,
                session: st.meta.session,
                seq,
                first_ts: ts,
                span: 0,
            }
            .encode_into(&mut buf);
            let pos = st.ring.pos(seq);
            self.put(st, self.block_offset(pos), &buf[..BLOCK_HEADER_LEN])?;
            st.table.set(pos, ts, 0, Some(BlockKind::Packed));
            st.head = Some(HeadBuf {
                seq,
                buf,
                len: BLOCK_HEADER_LEN,
            });
            self.lease_check(st);
        }
        let Some(mut h) = st.head.take() else {
            return Err(Error::corrupted(None, "head block missing after start"));
        };
        let off = h.len;
        let key = RecordKey {
            version: FORMAT_VERSION,
            seq: h.seq,
            session: st.meta.session,
        };
        encode_record_header(&mut h.buf[off..], key, ts, data);
        h.buf[off + RECORD_HEADER_LEN..off + rec].copy_from_slice(data);
        h.len += rec;
        let pos = st.ring.pos(h.seq);
        let r = self.put(
            st,
            self.block_offset(pos) + off as u64,
            &h.buf[off..off + rec],
        );
        st.head = Some(h);
        r?;
        self.mirror(st)?;
        let live = st.table.live(pos) + 1;
        st.table.set_live(pos, live);
        st.live_objects += 1;
        st.appended += 1;
        st.last_ts = ts;
        Ok(Appended::Done(ObjectHandle {
            timestamp: ts,
            block_num: pos,
            offset: off as u32,
            size: data.len() as u32,
            span_count: 1,
        }))
    }

    fn append_span(&self, st: &mut State, ts: i64, data: &[u8]) -> Result<Appended> {
        let b = self.block_size();
        let payload = b - BLOCK_HEADER_LEN;
        let k = (RECORD_HEADER_LEN + data.len()).div_ceil(payload);
        if data.len() as u64 > self.max_object_size() || k as u64 > st.ring.n {
            return Err(Error::ObjectTooLarge {
                size: data.len() as u64,
                max: self.max_object_size(),
            });
        }
        let first = st.ring.next;
        let last = first + k as u64 - 1;
        if last > self.lease() {
            // Seal the open head first: its page bounds the lease (see
            // `Shared::lease_cap`), and a lease past it could never cover a
            // span as long as the ring.
            if st.head.is_some() {
                self.seal_head(st)?;
            }
            return Ok(Appended::NeedLease(last));
        }
        self.seal_head(st)?;
        while st.ring.active() + k as u64 > st.ring.n {
            self.reclaim(st);
        }
        let mut blk = vec![0u8; b];
        let mut src = 0usize;
        for i in 0..k {
            let seq = first + i as u64;
            let (kind, span) = if i == 0 {
                (BlockKind::SpanStart, k as u32)
            } else {
                (BlockKind::SpanCont, i as u32)
            };
            let hdr = BlockHeader {
                version: FORMAT_VERSION,
                kind,
                session: st.meta.session,
                seq,
                first_ts: ts,
                span,
            };
            hdr.encode_into(&mut blk);
            let mut at = BLOCK_HEADER_LEN;
            if i == 0 {
                encode_record_header(&mut blk[at..], hdr.record_key(), ts, data);
                at += RECORD_HEADER_LEN;
            }
            let n = (b - at).min(data.len() - src);
            blk[at..at + n].copy_from_slice(&data[src..src + n]);
            src += n;
            let pos = st.ring.pos(seq);
            self.put(st, self.block_offset(pos), &blk[..at + n])?;
        }
        for i in 0..k as u64 {
            let seq = first + i;
            let (kind, live) = if i == 0 {
                (BlockKind::SpanStart, 1)
            } else {
                (BlockKind::SpanCont, 0)
            };
            st.table.set(st.ring.pos(seq), ts, live, Some(kind));
        }
        st.ring.next = first + k as u64;
        for i in 0..k as u64 {
            self.write_entry(st, first + i, if i == 0 { k as u32 } else { 0 })?;
        }
        st.entries_below = st.entries_below.max(st.ring.next);
        // The next object starts a new block.
        let next = self.block_offset(st.ring.pos(st.ring.next));
        self.move_to(st, next)?;
        self.mirror(st)?;
        self.lease_check(st);
        st.live_objects += 1;
        st.appended += 1;
        st.last_ts = ts;
        Ok(Appended::Done(ObjectHandle {
            timestamp: ts,
            block_num: st.ring.pos(first),
            offset: BLOCK_HEADER_LEN as u32,
            size: data.len() as u32,
            span_count: k as u32,
        }))
    }

    /// Takes the next block, reclaiming the oldest one if the ring is full.
    fn start_block(&self, st: &mut State) -> u64 {
        if st.ring.is_full() {
            self.reclaim(st);
        }
        let seq = st.ring.next;
        st.ring.next += 1;
        seq
    }

    /// Drops the oldest block, and with it the rest of an object spanning
    /// from it.
    fn reclaim(&self, st: &mut State) {
        if st.ring.is_empty() {
            return;
        }
        let pos = st.ring.pos(st.ring.tail);
        st.live_objects -= st.table.live(pos) as u64;
        st.ring.tail += 1;
        while !st.ring.is_empty()
            && st.table.kind(st.ring.pos(st.ring.tail)) == Some(BlockKind::SpanCont)
        {
            st.ring.tail += 1;
        }
    }

    /// Seals the head block (writes its index entry; the next object starts
    /// a new block) and moves the write position to the next block's start.
    pub(crate) fn seal_head(&self, st: &mut State) -> Result<()> {
        if let Some(seq) = st.head.as_ref().map(|h| h.seq) {
            self.write_entry(st, seq, 0)?;
            st.head = None;
            st.entries_below = st.entries_below.max(seq + 1);
        }
        let next = self.block_offset(st.ring.pos(st.ring.next));
        self.move_to(st, next)
    }

    /// Writes the index entry of live block `seq` from the in-memory table;
    /// `span` is a span start's number of blocks (0 otherwise).
    pub(crate) fn write_entry(&self, st: &mut State, seq: u64, span: u32) -> Result<()> {
        let pos = st.ring.pos(seq);
        let Some(kind) = st.table.kind(pos) else {
            return Ok(());
        };
        let e = IndexEntry {
            seq,
            first_ts: st.table.key(pos),
            synced_seq: st.index_claim.min(seq),
            live: st.table.live(pos),
            kind,
            extra: span,
        };
        if let Err(err) = self
            .media
            .index
            .write_at(self.cfg.index_entry_offset(pos), &e.encode())
        {
            return Err(self.poison(st, "index write", err));
        }
        st.index_writes += 1;
        Ok(())
    }

    /// Tells the flusher to extend the lease early when less than half a
    /// lease is left ahead of the writer (counting the lease of a commit
    /// being synced), so that a steady writer never waits for one. Not under `never`, whose
    /// price for a lease is one sync per half lap, not one per quarter.
    fn lease_check(&self, st: &State) {
        let l = self.lease_now.load(Ordering::Relaxed);
        if l >= super::commit::PROACTIVE_LEASE_BLOCKS
            && self.cfg.durability != super::config::Durability::Never
            && self
                .lease()
                .max(self.lease_pending.load(Ordering::Relaxed))
                .saturating_sub(st.ring.next)
                < l / 2
        {
            self.sync.lease_low();
        }
    }

    /// Soft-deletes the record at `seq`/`off` (FORMAT.md, "Soft delete").
    /// A record in the frontier page changes its image, which the next
    /// commit carries. Elsewhere the page holds durable data and is changed
    /// in place only while a durable commit carries its new image (the aux
    /// image), so that a page garbled by the write is restored at open.
    pub(crate) fn delete_at(&self, seq: u64, off: u32) -> Result<()> {
        let flag = |st: &State| {
            self.block_offset(st.ring.pos(seq)) + off as u64 + REC_DELETED_BYTE_OFF as u64
        };
        let mut st = wr(&self.state);
        self.check_writable(&st)?;
        if !st.ring.is_live(seq) {
            return Err(Error::ObjectNotFound);
        }
        let at = flag(&st);
        let f = &st.frontier;
        if at >= f.page_off && at < f.page_off + f.fill as u64 {
            let i = (at - f.page_off) as usize;
            st.frontier.img[i] |= REC_DELETED_BIT;
            st.frontier.dirty_from = st.frontier.dirty_from.min(i);
            let entry = self.deleted_in_memory(&mut st, seq, off)?;
            self.mirror(&mut st)?;
            let lsn = self.lsn.fetch_add(1, Ordering::AcqRel) + 1;
            drop(st);
            if entry {
                self.sync_index()?;
            }
            let r = self.commit(lsn, false);
            self.notify();
            return r;
        }

        // Step 1: a durable commit carrying the page's new image.
        let page_off = at / PAGE as u64 * PAGE as u64;
        let len = (PAGE as u64).min(self.ring_len - page_off) as usize;
        let mut img = vec![0u8; len];
        if let Err(e) = self.media.data.read_at(page_off, &mut img) {
            return Err(Error::Io(e));
        }
        img[(at - page_off) as usize] |= REC_DELETED_BIT;
        let b = self.cfg.data_block_size as u64;
        let pos = st.ring.pos(seq) as u64;
        let first_seq = seq - (pos - (page_off / b).min(pos));
        st.aux = Some(Aux {
            page: PageRef {
                page_off,
                first_seq,
                len: len as u32,
            },
            img,
        });
        let lsn = self.lsn.fetch_add(1, Ordering::AcqRel) + 1;
        drop(st);
        let r = self.commit(lsn, false).and_then(|()| {
            // Step 2: the flag in place, the new count in the index entry.
            let mut st = wr(&self.state);
            if !st.ring.is_live(seq) {
                // Reclaimed in between: the object is gone anyway.
                return Ok(false);
            }
            let at = flag(&st);
            let byte = [img_byte(&st, self, at)? | REC_DELETED_BIT];
            if let Err(e) = self.media.data.write_at(at, &byte) {
                return Err(self.poison(&mut st, "data write", e));
            }
            self.deleted_in_memory(&mut st, seq, off)
        });
        let r = r.and_then(|entry| {
            if entry {
                self.sync_index()?;
            }
            // Step 3: a commit that carries the image again, and whose sync
            // makes the flag durable.
            let lsn = self.lsn.fetch_add(1, Ordering::AcqRel) + 1;
            self.commit(lsn, false)
        });
        wr(&self.state).aux = None;
        self.notify();
        r
    }

    /// Records a delete in memory: the head block's buffer, the live counts
    /// and, for a sealed block, its index entry. Returns whether an entry
    /// was written (and needs an index sync).
    fn deleted_in_memory(&self, st: &mut State, seq: u64, off: u32) -> Result<bool> {
        let pos = st.ring.pos(seq);
        let in_head = match st.head.as_mut() {
            Some(h) if h.seq == seq => {
                h.buf[off as usize + REC_DELETED_BYTE_OFF] |= REC_DELETED_BIT;
                true
            }
            _ => false,
        };
        let live = st.table.live(pos).saturating_sub(1);
        st.table.set_live(pos, live);
        st.live_objects -= 1;
        st.deleted += 1;
        if in_head {
            // Open at a crash, so recovery rescans it.
            return Ok(false);
        }
        let span = match st.table.kind(pos) {
            Some(BlockKind::SpanStart) => {
                let mut scratch = Vec::new();
                self.block(st, seq, &mut scratch)?
                    .map_or(0, |(h, _)| h.span)
            }
            _ => 0,
        };
        self.write_entry(st, seq, span)?;
        Ok(true)
    }

    /// Syncs the index file (an entry a delete rewrote), poisoning the
    /// store if that fails.
    fn sync_index(&self) -> Result<()> {
        if let Err(e) = self.media.index.sync() {
            let mut st = wr(&self.state);
            return Err(self.poison(&mut st, "index sync", e));
        }
        Ok(())
    }

    /// Soft reset: a new `base_seq` in meta, synced; the ring starts empty
    /// at position 0.
    pub(crate) fn reset(&self) -> Result<()> {
        let mut st = wr(&self.state);
        self.check_writable(&st)?;
        let mut meta = st.meta;
        meta.generation += 1;
        meta.base_seq = st.ring.next;
        let r = self
            .media
            .meta
            .write_at(Meta::slot_offset(meta.generation), &meta.encode())
            .and_then(|_| self.media.meta.sync());
        if let Err(e) = r {
            st.poisoned = Some(format!("reset failed: {e}"));
            return Err(e.into());
        }
        st.meta = meta;
        st.ring = Ring::new(self.cfg.num_blocks, meta.base_seq);
        st.head = None;
        st.last_ts = 0;
        st.live_objects = 0;
        st.resets += 1;
        // What the frontier held is gone with the rest; block `base_seq`
        // starts at position 0. The working slot is started afresh.
        st.frontier = Frontier::new(0);
        st.working = None;
        st.entries_below = st.entries_below.max(meta.base_seq);
        st.index_claim = st.index_claim.max(meta.base_seq);
        drop(st);
        self.lsn.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// The byte at ring offset `at` as readers see it now.
fn img_byte(st: &State, sh: &Shared, at: u64) -> Result<u8> {
    let f = &st.frontier;
    if at >= f.page_off && at < f.page_off + f.fill as u64 {
        return Ok(f.img[(at - f.page_off) as usize]);
    }
    let mut b = [0u8; 1];
    sh.media.data.read_at(at, &mut b)?;
    Ok(b[0])
}
