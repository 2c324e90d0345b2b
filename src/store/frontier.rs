//! The write frontier (FORMAT.md, "The write frontier"): the page of
//! `data.tsdb` that holds the write position is kept in memory
//! ([`Frontier`]) and written in place once, when the write position leaves
//! it. Until then its bytes live in memory and, through a shared writable
//! mapping, in the working commit slot, which every append brings up to
//! date before it is acknowledged: a crash of the program loses nothing
//! that was acknowledged, and no page holding acknowledged data is ever
//! rewritten in place. A commit turns the working slot into a committed
//! one ([`Shared::write_committed`]).
//!
//! Invariants: the write position is inside the frontier page, at offset
//! `fill`; image bytes past `fill` are zero; if a working slot exists, it is
//! the slot of commit `commit_next`, it mirrors the frontier page, and its
//! image equals the frontier image below `dirty_from`.

use super::error::Result;
use super::format::{
    slot_of, slot_offset, CommittedHeader, PageRef, WorkingHeader, PAGE, SLOT_AUX_OFF,
    SLOT_COMMITTED_OFF, SLOT_FRONTIER_OFF, SLOT_WORKING_OFF,
};
use super::shared::{Frontier, Shared, State, Working};

impl Frontier {
    /// The image's bytes that belong to the current lap.
    pub fn bytes(&self) -> &[u8] {
        &self.img[..self.fill]
    }
}

impl Shared {
    /// The sequence number, in the current lap, of the block at the
    /// frontier page's first position (of the block containing the page,
    /// for blocks of a page or more).
    pub(crate) fn frontier_first_seq(&self, st: &State) -> u64 {
        let b = self.block_size();
        let p0 = st.frontier.page_off / b as u64;
        // The block the write position is in, or starts.
        let at = match &st.head {
            Some(h) if h.len < b => h.seq,
            _ => st.ring.next,
        };
        let pos = st.ring.pos(at) as u64;
        at.saturating_sub(pos.saturating_sub(p0))
    }

    /// Moves the write position to `off`: forward within the frontier page
    /// (over the unused end of a sealed block), or to the start of a later
    /// page (or of page 0, after a wrap or a reset), writing the frontier
    /// page in place as it is left.
    pub(crate) fn move_to(&self, st: &mut State, off: u64) -> Result<()> {
        let f = &mut st.frontier;
        let cur = f.page_off + f.fill as u64;
        if off == cur {
            return Ok(());
        }
        if off > cur && off < f.page_off + PAGE as u64 && off < self.ring_len {
            f.dirty_from = f.dirty_from.min(f.fill);
            f.fill = (off - f.page_off) as usize;
            return Ok(());
        }
        self.leave_page(st)?;
        let page = off / PAGE as u64 * PAGE as u64;
        st.frontier.page_off = page;
        st.frontier.fill = (off - page) as usize;
        st.frontier.dirty_from = 0;
        Ok(())
    }

    /// Writes the frontier page in place (the write position leaves it):
    /// its bytes are never written again in this lap.
    fn leave_page(&self, st: &mut State) -> Result<()> {
        let fill = st.frontier.fill;
        if fill > 0 {
            let off = st.frontier.page_off;
            if let Err(e) = self.media.data.write_at(off, &st.frontier.img[..fill]) {
                return Err(self.poison(st, "data write", e));
            }
            st.frontier.img[..fill].fill(0);
        }
        st.frontier.fill = 0;
        st.frontier.dirty_from = 0;
        Ok(())
    }

    /// Writes `bytes` at the write position `off`: into the frontier page
    /// and, past its end, into the pages after it, each written in place as
    /// it fills (whole pages straight from `bytes`).
    pub(crate) fn put(&self, st: &mut State, off: u64, bytes: &[u8]) -> Result<()> {
        self.move_to(st, off)?;
        let mut src = bytes;
        while !src.is_empty() {
            let f = &st.frontier;
            let at = f.fill;
            let room = (PAGE - at).min((self.ring_len - f.page_off) as usize - at);
            if at == 0 && room == PAGE && src.len() >= PAGE {
                // A whole page: it goes in place at once.
                let page = f.page_off;
                if let Err(e) = self.media.data.write_at(page, &src[..PAGE]) {
                    return Err(self.poison(st, "data write", e));
                }
                src = &src[PAGE..];
                self.enter_next_page(st);
                continue;
            }
            let n = room.min(src.len());
            let f = &mut st.frontier;
            f.img[at..at + n].copy_from_slice(&src[..n]);
            f.dirty_from = f.dirty_from.min(at);
            f.fill = at + n;
            src = &src[n..];
            if n == room {
                self.leave_page(st)?;
                self.enter_next_page(st);
            }
        }
        Ok(())
    }

    /// The frontier moves to the page after it (page 0 after the ring's
    /// end); the page it leaves is already in place.
    fn enter_next_page(&self, st: &mut State) {
        let next = st.frontier.page_off + PAGE as u64;
        st.frontier.page_off = if next >= self.ring_len { 0 } else { next };
        st.frontier.fill = 0;
        st.frontier.dirty_from = 0;
    }

    /// Brings the working slot up to date with the frontier page: creates
    /// it (the first change after a commit) or re-points it (the frontier
    /// moved on), then copies the changed bytes. Called before every write
    /// is acknowledged.
    pub(crate) fn mirror(&self, st: &mut State) -> Result<()> {
        let counter = st.commit_next;
        let slot = slot_offset(self.ring_len, slot_of(counter));
        let first_seq = self.frontier_first_seq(st);
        let current = st
            .working
            .is_some_and(|w| w.page_off == st.frontier.page_off && w.first_seq == first_seq);
        if !current {
            if st.working.is_none() {
                // The slot holds an older commit: unmake it before its
                // image changes.
                self.mapped_write(st, slot + SLOT_COMMITTED_OFF as u64, &[0u8; 4])?;
            }
            // The header first: until the image follows, the header names a
            // page whose blocks the stale image cannot validate.
            let header = WorkingHeader {
                base: counter.saturating_sub(1),
                session: st.meta.session,
                base_seq: st.meta.base_seq,
                page_off: st.frontier.page_off,
                first_seq,
            };
            self.mapped_write(st, slot + SLOT_WORKING_OFF as u64, &header.encode())?;
            st.working = Some(Working {
                page_off: st.frontier.page_off,
                first_seq,
            });
            st.frontier.dirty_from = 0;
        }
        let (from, fill) = (st.frontier.dirty_from, st.frontier.fill);
        if from < fill {
            let img = std::mem::take(&mut st.frontier.img);
            let r = self.mapped_write(
                st,
                slot + (SLOT_FRONTIER_OFF + from) as u64,
                &img[from..fill],
            );
            st.frontier.img = img;
            r?;
        }
        st.frontier.dirty_from = fill;
        Ok(())
    }

    fn mapped_write(&self, st: &mut State, off: u64, bytes: &[u8]) -> Result<()> {
        match self.media.data.write_mapped(off, bytes) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.poison(st, "commit slot write", e)),
        }
    }

    /// Makes the slot of commit `counter` (`commit_next`) a committed one:
    /// the frontier image mirrored, the aux image if a soft delete is in
    /// flight, then the committed header, whose checksum covers both. The
    /// next change starts the working slot of the commit after it.
    pub(crate) fn write_committed(
        &self,
        st: &mut State,
        lease_end: u64,
        index_synced_seq: u64,
        self_contained: bool,
    ) -> Result<u64> {
        let counter = st.commit_next;
        self.mirror(st)?;
        let slot = slot_offset(self.ring_len, slot_of(counter));
        let mut aux_img = [0u8; PAGE];
        let aux = match st.aux.take() {
            Some(a) => {
                let r = self.mapped_write(st, slot + SLOT_AUX_OFF as u64, &a.img);
                aux_img[..a.img.len()].copy_from_slice(&a.img);
                let page = a.page;
                st.aux = Some(a);
                r?;
                Some(page)
            }
            None => None,
        };
        let b = self.block_size();
        let first_seq = self.frontier_first_seq(st);
        let header = CommittedHeader {
            counter,
            session: st.meta.session,
            self_contained,
            base_seq: st.meta.base_seq,
            next_seq: st.ring.next,
            head_len: st.head.as_ref().map_or(0, |h| h.len.min(b) as u32),
            frontier: PageRef {
                page_off: st.frontier.page_off,
                first_seq,
                len: st.frontier.fill as u32,
            },
            last_ts: st.last_ts,
            lease_end,
            index_synced_seq,
            aux,
        };
        let bytes = header.encode(&st.frontier.img, &aux_img);
        self.mapped_write(st, slot + SLOT_COMMITTED_OFF as u64, &bytes)?;
        st.working = None;
        st.commit_next = counter + 1;
        st.last_commit_page = (st.frontier.page_off, first_seq);
        Ok(counter)
    }
}
