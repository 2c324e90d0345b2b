//! Reading blocks and objects, and the query engine: exact lookups by
//! timestamp or handle, and range scans in either order with a limit and a
//! filter.
//!
//! A block comes from the head block's buffer, from the memory map (or
//! `pread`), or, if part of it lies in the frontier page, from the file
//! patched with the frontier image: the frontier page's bytes of this lap
//! are not in place until the write position leaves it. Every record is
//! validated before it is returned.

use std::ops::ControlFlow;

use super::error::Result;
use super::format::{
    record_crc, BlockHeader, BlockKind, RecordHeader, BLOCK_HEADER_LEN, MAX_OBJECT_LEN,
    RECORD_HEADER_LEN,
};
use super::object::{find_verified, Filter, Object, ObjectHandle, Order, Query, Records};
use super::shared::{Found, Shared, State};

/// Steps back from live block `seq` over holes (blocks lost to a power cut,
/// see recovery.rs): a hole carries the key of the block before it but holds
/// nothing, so the objects at or after that key are in the block before.
fn before_holes(st: &State, mut seq: u64) -> u64 {
    while seq > st.ring.tail && st.table.kind(st.ring.pos(seq)).is_none() {
        seq -= 1;
    }
    seq
}

impl Shared {
    /// The bytes of live block `seq` if its header validates: the head
    /// buffer, the memory map, or a read into `scratch` (patched with the
    /// frontier image where the block lies in the frontier page).
    pub(crate) fn block<'a>(
        &'a self,
        st: &'a State,
        seq: u64,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Option<(BlockHeader, &'a [u8])>> {
        if let Some(h) = st.head.as_ref().filter(|h| h.seq == seq) {
            let hdr = BlockHeader::decode(&h.buf);
            return Ok(hdr.map(|hd| (hd, &h.buf[..h.len])));
        }
        let b = self.block_size();
        let off = self.block_offset(st.ring.pos(seq));
        let f = &st.frontier;
        let (lo, hi) = (f.page_off, f.page_off + f.fill as u64);
        let patched = off < hi && off + b as u64 > lo;
        let bytes: &[u8] = match self.media.data.mapped() {
            Some(m) if !patched => &m[off as usize..off as usize + b],
            _ => {
                scratch.resize(b, 0);
                self.media.data.read_at(off, scratch)?;
                if patched {
                    let (from, to) = (lo.max(off), hi.min(off + b as u64));
                    scratch[(from - off) as usize..(to - off) as usize]
                        .copy_from_slice(&f.img[(from - lo) as usize..(to - lo) as usize]);
                }
                scratch
            }
        };
        match BlockHeader::decode(bytes) {
            Some(h) if h.seq == seq => Ok(Some((h, bytes))),
            _ => Ok(None),
        }
    }

    /// Reads and validates the whole object of the span starting at `seq`.
    /// `None` if any part fails validation or it is deleted.
    pub(crate) fn read_span(
        &self,
        st: &State,
        seq: u64,
    ) -> Result<Option<(RecordHeader, Vec<u8>)>> {
        let mut scratch = Vec::new();
        let Some((hdr, bytes)) = self.block(st, seq, &mut scratch)? else {
            return Ok(None);
        };
        if hdr.kind != BlockKind::SpanStart {
            return Ok(None);
        }
        let rh = RecordHeader::decode(&bytes[BLOCK_HEADER_LEN..]);
        if rh.deleted {
            return Ok(None);
        }
        let len = rh.len as usize;
        let payload = self.block_size() - BLOCK_HEADER_LEN;
        let k = (RECORD_HEADER_LEN + len).div_ceil(payload);
        if k as u32 != hdr.span
            || !st.ring.is_live(seq + k as u64 - 1)
            || len as u64 > MAX_OBJECT_LEN
        {
            return Ok(None);
        }
        let mut data = Vec::with_capacity(len);
        let first = (self.block_size() - BLOCK_HEADER_LEN - RECORD_HEADER_LEN).min(len);
        let at = BLOCK_HEADER_LEN + RECORD_HEADER_LEN;
        data.extend_from_slice(&bytes[at..at + first]);
        for i in 1..k as u64 {
            let Some((ch, cb)) = self.block(st, seq + i, &mut scratch)? else {
                return Ok(None);
            };
            if ch.kind != BlockKind::SpanCont || ch.span as u64 != i || ch.first_ts != rh.ts {
                return Ok(None);
            }
            let n = payload.min(len - data.len());
            data.extend_from_slice(&cb[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + n]);
        }
        if record_crc(hdr.record_key(), rh.ts, rh.len, &data) != rh.crc {
            return Ok(None);
        }
        Ok(Some((rh, data)))
    }

    /// Finds the live object with timestamp `ts`: its block and offset.
    pub(crate) fn locate(&self, st: &State, ts: i64) -> Result<Option<(u64, u32)>> {
        let mut scratch = Vec::new();
        Ok(self
            .find(st, ts, &mut scratch)?
            .map(|(seq, off, _)| (seq, off)))
    }

    /// Finds the live object with timestamp `ts`: its block and offset and,
    /// for a packed object, its data (read in the same walk).
    pub(crate) fn find<'a>(
        &'a self,
        st: &'a State,
        ts: i64,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Option<Found<'a>>> {
        if ts <= 0 || st.ring.is_empty() {
            return Ok(None);
        }
        let r = &st.ring;
        let i = st.table.first_key_at_or_after(r, ts);
        let cand = if i < r.next && st.table.key(r.pos(i)) == ts {
            i
        } else if i > r.tail {
            before_holes(st, i - 1)
        } else {
            return Ok(None);
        };
        match st.table.kind(r.pos(cand)) {
            Some(BlockKind::Packed) => {
                let Some((hdr, bytes)) = self.block(st, cand, scratch)? else {
                    return Ok(None);
                };
                let pos = r.pos(cand);
                let found = if st.table.verified(pos) {
                    find_verified(bytes, hdr.record_key(), ts)
                } else {
                    // The whole block, not up to `ts`: once its walk ends
                    // on structure, later lookups in it checksum only the
                    // record they return.
                    let mut walk = Records::new(bytes, hdr.record_key());
                    let found = walk.by_ref().find(|rec| rec.ts >= ts);
                    walk.by_ref().for_each(drop);
                    if walk.ended_on_structure() {
                        st.table.set_verified(pos);
                    }
                    found.filter(|rec| rec.ts == ts)
                };
                Ok(found
                    .filter(|rec| !rec.deleted)
                    .map(|rec| (cand, rec.off, Some(rec.data))))
            }
            Some(BlockKind::SpanStart) => {
                let Some((h, bytes)) = self.block(st, cand, scratch)? else {
                    return Ok(None);
                };
                let rh = RecordHeader::decode(&bytes[BLOCK_HEADER_LEN..]);
                Ok((h.first_ts == ts && rh.ts == ts && !rh.deleted).then_some((
                    cand,
                    BLOCK_HEADER_LEN as u32,
                    None,
                )))
            }
            _ => Ok(None),
        }
    }

    /// Checks that a handle names a live object; returns its block and offset.
    pub(crate) fn resolve(&self, st: &State, h: &ObjectHandle) -> Result<Option<(u64, u32)>> {
        let Some(seq) = st.ring.seq_at(h.block_num) else {
            return Ok(None);
        };
        let found = self.locate(st, h.timestamp)?;
        Ok(found.filter(|&(s, off)| s == seq && off == h.offset))
    }

    /// Data of the live object at `seq`/`off`.
    pub(crate) fn read_object(&self, st: &State, seq: u64, off: u32) -> Result<Option<Vec<u8>>> {
        Ok(self.read_object_full(st, seq, off)?.map(|o| o.data))
    }

    pub(crate) fn read_object_full(
        &self,
        st: &State,
        seq: u64,
        off: u32,
    ) -> Result<Option<Object>> {
        let pos = st.ring.pos(seq);
        match st.table.kind(pos) {
            Some(BlockKind::SpanStart) => Ok(self.read_span(st, seq)?.map(|(rh, data)| Object {
                handle: ObjectHandle {
                    timestamp: rh.ts,
                    block_num: pos,
                    offset: off,
                    size: rh.len,
                    span_count: (RECORD_HEADER_LEN + data.len())
                        .div_ceil(self.block_size() - BLOCK_HEADER_LEN)
                        as u32,
                },
                data,
            })),
            Some(BlockKind::Packed) => {
                let mut scratch = Vec::new();
                let Some((hdr, bytes)) = self.block(st, seq, &mut scratch)? else {
                    return Ok(None);
                };
                Ok(Records::new(bytes, hdr.record_key())
                    .find(|r| r.off == off)
                    .filter(|r| !r.deleted)
                    .map(|r| Object {
                        handle: ObjectHandle {
                            timestamp: r.ts,
                            block_num: pos,
                            offset: off,
                            size: r.data.len() as u32,
                            span_count: 1,
                        },
                        data: r.data.to_vec(),
                    }))
            }
            _ => Ok(None),
        }
    }

    /// The query engine: walks blocks from the right end of the range and
    /// calls `f` for each live, matching object until `limit` or the end.
    pub(crate) fn scan(
        &self,
        st: &State,
        q: &Query,
        need_data: bool,
        f: &mut dyn FnMut(&ObjectHandle, &[u8]) -> ControlFlow<()>,
    ) -> Result<()> {
        if q.start > q.end || st.ring.is_empty() || q.end <= 0 {
            return Ok(());
        }
        let mut left = if q.limit == 0 { usize::MAX } else { q.limit };
        let r = st.ring;
        let payload = self.block_size() - BLOCK_HEADER_LEN;
        let mut scratch = Vec::new();
        let mut recs: Vec<(u32, i64, u32, u32)> = Vec::new();
        // Emits one object; returns false to stop the scan.
        let mut emit = |h: ObjectHandle, data: &[u8], filter: &Option<Filter>| -> bool {
            if let Some(fl) = filter {
                if !fl.matches(data) {
                    return true;
                }
            }
            left -= 1;
            f(&h, data).is_continue() && left > 0
        };
        let span_obj = |seq: u64, pos: u32| -> Result<Option<(ObjectHandle, Vec<u8>)>> {
            if need_data {
                return Ok(self.read_span(st, seq)?.map(|(rh, data)| {
                    let k = (RECORD_HEADER_LEN + data.len()).div_ceil(payload) as u32;
                    let h = ObjectHandle {
                        timestamp: rh.ts,
                        block_num: pos,
                        offset: BLOCK_HEADER_LEN as u32,
                        size: rh.len,
                        span_count: k,
                    };
                    (h, data)
                }));
            }
            let mut sc = Vec::new();
            let Some((bh, bytes)) = self.block(st, seq, &mut sc)? else {
                return Ok(None);
            };
            let rh = RecordHeader::decode(&bytes[BLOCK_HEADER_LEN..]);
            if rh.deleted || rh.ts != bh.first_ts {
                return Ok(None);
            }
            let h = ObjectHandle {
                timestamp: rh.ts,
                block_num: pos,
                offset: BLOCK_HEADER_LEN as u32,
                size: rh.len,
                span_count: bh.span,
            };
            Ok(Some((h, Vec::new())))
        };
        match q.order {
            Order::OldestFirst => {
                let mut seq = if q.start == i64::MIN {
                    r.tail
                } else {
                    let i = st.table.first_key_at_or_after(&r, q.start);
                    if i > r.tail {
                        before_holes(st, i - 1)
                    } else {
                        i
                    }
                };
                while seq < r.next {
                    let pos = r.pos(seq);
                    if st.table.key(pos) > q.end {
                        break;
                    }
                    match st.table.kind(pos) {
                        Some(BlockKind::Packed) if st.table.live(pos) > 0 => {
                            if let Some((hdr, bytes)) = self.block(st, seq, &mut scratch)? {
                                for rec in Records::new(bytes, hdr.record_key()) {
                                    if rec.ts > q.end {
                                        return Ok(());
                                    }
                                    if rec.ts < q.start || rec.deleted {
                                        continue;
                                    }
                                    let h = ObjectHandle {
                                        timestamp: rec.ts,
                                        block_num: pos,
                                        offset: rec.off,
                                        size: rec.data.len() as u32,
                                        span_count: 1,
                                    };
                                    if !emit(h, rec.data, &q.filter) {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                        Some(BlockKind::SpanStart) if st.table.live(pos) > 0 => {
                            let ts = st.table.key(pos);
                            if ts >= q.start && ts <= q.end {
                                if let Some((h, data)) = span_obj(seq, pos)? {
                                    if !emit(h, &data, &q.filter) {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                    seq += 1;
                }
            }
            Order::NewestFirst => {
                let mut seq = if q.end == i64::MAX {
                    r.next
                } else {
                    st.table.first_key_after(&r, q.end)
                };
                while seq > r.tail {
                    seq -= 1;
                    let pos = r.pos(seq);
                    match st.table.kind(pos) {
                        Some(BlockKind::Packed) if st.table.live(pos) > 0 => {
                            if let Some((hdr, bytes)) = self.block(st, seq, &mut scratch)? {
                                recs.clear();
                                let key = hdr.record_key();
                                recs.extend(Records::new(bytes, key).filter(|r| !r.deleted).map(
                                    |r| {
                                        let start = r.off + RECORD_HEADER_LEN as u32;
                                        (r.off, r.ts, start, r.data.len() as u32)
                                    },
                                ));
                                for &(off, ts, start, len) in recs.iter().rev() {
                                    if ts > q.end {
                                        continue;
                                    }
                                    if ts < q.start {
                                        return Ok(());
                                    }
                                    let h = ObjectHandle {
                                        timestamp: ts,
                                        block_num: pos,
                                        offset: off,
                                        size: len,
                                        span_count: 1,
                                    };
                                    let data = &bytes[start as usize..(start + len) as usize];
                                    if !emit(h, data, &q.filter) {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                        Some(BlockKind::SpanStart) if st.table.live(pos) > 0 => {
                            let ts = st.table.key(pos);
                            if ts < q.start {
                                return Ok(());
                            }
                            if ts <= q.end {
                                if let Some((h, data)) = span_obj(seq, pos)? {
                                    if !emit(h, &data, &q.filter) {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                    // A hole's key is its predecessor's: that block may
                    // still hold objects in the range.
                    if st.table.kind(pos).is_some() && st.table.key(pos) < q.start {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
