//! The in-memory time index: one key and one info word per block, loaded
//! from `index.tsdb` at open and kept current by every insert, and binary
//! searched for every timestamp lookup.
//!
//! Invariant: over the live blocks in ring order, keys never decrease. A
//! block's key is the timestamp of the first object that starts in it; a
//! span continuation carries its object's timestamp and an empty block (a
//! hole left by a power cut) carries the key of the block before it, so
//! a binary search finds the first block that can hold a timestamp.
//!
//! Each block also has a *verified* bit, set by a reader (under the read
//! lock, hence atomic) once a whole walk of the block's records
//! validated every record that the records' structure reaches (see
//! `object::find_verified`), and cleared whenever the position gets another
//! block (`set`). The bytes those checksums cover never change while the
//! block lives (a soft delete changes only the flag bit, which no checksum
//! covers), so a lookup in a verified block checksums only the record it
//! returns.

use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{BlockKind, IDX_KIND_SHIFT, IDX_LIVE_MASK};
use super::ring::Ring;

/// Per-block key and info, indexed by ring position: 12 bytes a block, and
/// the verified bit.
#[derive(Debug)]
pub(crate) struct BlockTable {
    key: Vec<i64>,
    info: Vec<u32>,
    /// Bit `pos % 64` of word `pos / 64`: the block at `pos` is verified.
    verified: Vec<AtomicU64>,
}

impl BlockTable {
    pub fn new(n: u32) -> BlockTable {
        BlockTable {
            key: vec![0; n as usize],
            info: vec![0; n as usize],
            verified: (0..(n as usize).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    #[inline]
    fn info(&self, pos: u32) -> u32 {
        self.info[pos as usize]
    }

    /// Bytes of memory held per block (besides the verified bit).
    pub const BYTES_PER_BLOCK: usize = std::mem::size_of::<i64>() + std::mem::size_of::<u32>();

    #[inline]
    pub fn key(&self, pos: u32) -> i64 {
        self.key[pos as usize]
    }

    #[inline]
    pub fn live(&self, pos: u32) -> u32 {
        self.info(pos) & IDX_LIVE_MASK
    }

    /// The block's kind; `None` for a hole (no valid block there).
    #[inline]
    pub fn kind(&self, pos: u32) -> Option<BlockKind> {
        BlockKind::from_u8((self.info(pos) >> IDX_KIND_SHIFT) as u8)
    }

    /// A new block (or none) at `pos`: not verified.
    pub fn set(&mut self, pos: u32, key: i64, live: u32, kind: Option<BlockKind>) {
        self.key[pos as usize] = key;
        self.info[pos as usize] =
            (live & IDX_LIVE_MASK) | ((kind.map_or(0, |k| k as u32)) << IDX_KIND_SHIFT);
        *self.verified[pos as usize / 64].get_mut() &= !(1u64 << (pos % 64));
    }

    /// A soft delete's new live count; the block stays as verified as it was.
    pub fn set_live(&mut self, pos: u32, live: u32) {
        let i = &mut self.info[pos as usize];
        *i = (*i & !IDX_LIVE_MASK) | (live & IDX_LIVE_MASK);
    }

    /// Whether a whole walk of the block at `pos` verified its records
    /// (see the module docs).
    #[inline]
    pub fn verified(&self, pos: u32) -> bool {
        self.verified[pos as usize / 64].load(Ordering::Relaxed) & (1u64 << (pos % 64)) != 0
    }

    /// Records that a whole walk of the live block at `pos` verified its
    /// records. Called with the state's read lock held, so no writer can
    /// have given the position another block since the walk.
    pub fn set_verified(&self, pos: u32) {
        self.verified[pos as usize / 64].fetch_or(1u64 << (pos % 64), Ordering::Relaxed);
    }

    /// The first live block (in ring order) whose key is `>= ts`, or
    /// `ring.next` if there is none. O(log n).
    pub fn first_key_at_or_after(&self, ring: &Ring, ts: i64) -> u64 {
        self.partition(ring, |k| k < ts)
    }

    /// The first live block whose key is `> ts`, or `ring.next`.
    pub fn first_key_after(&self, ring: &Ring, ts: i64) -> u64 {
        self.partition(ring, |k| k <= ts)
    }

    /// The first live block whose key is not `before`. Searches offsets
    /// from the tail, whose positions need no division (a 64-bit division
    /// per step was most of a lookup's search), and without branches on
    /// the keys, which a random lookup mispredicts half the time.
    fn partition(&self, ring: &Ring, before: impl Fn(i64) -> bool) -> u64 {
        let len = ring.active();
        if len == 0 {
            return ring.tail;
        }
        let tail_pos = ring.pos(ring.tail) as u64;
        let key_at = |k: u64| {
            let p = tail_pos + k;
            let p = if p >= ring.n { p - ring.n } else { p };
            self.key[p as usize]
        };
        // Invariant: every offset below `base` is `before`, every offset
        // at or past `base + size` is not.
        let (mut base, mut size) = (0u64, len);
        while size > 1 {
            let half = size / 2;
            let mid = base + half;
            base = if before(key_at(mid)) { mid } else { base };
            size -= half;
        }
        ring.tail + base + u64::from(before(key_at(base)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_search_over_a_wrapped_ring() {
        let mut r = Ring::new(4, 0);
        let mut t = BlockTable::new(4);
        r.next = 6;
        r.tail = 2;
        for (seq, key) in [(2u64, 10i64), (3, 20), (4, 20), (5, 30)] {
            t.set(r.pos(seq), key, 1, Some(BlockKind::Packed));
        }
        assert_eq!(t.first_key_at_or_after(&r, 5), 2);
        assert_eq!(t.first_key_at_or_after(&r, 20), 3);
        assert_eq!(t.first_key_after(&r, 20), 5);
        assert_eq!(t.first_key_at_or_after(&r, 31), 6);
        t.set_live(r.pos(3), 7);
        assert_eq!(t.live(r.pos(3)), 7);
        assert_eq!(t.kind(r.pos(3)), Some(BlockKind::Packed));
        t.set(0, 0, 0, None);
        assert_eq!(t.kind(0), None);
    }

    #[test]
    fn the_search_matches_a_linear_scan_at_every_wrap() {
        for n in [1u32, 2, 3, 5, 8] {
            for tail_pos in 0..n as u64 {
                for active in 0..=n as u64 {
                    // Live blocks tail..tail + active, keys 10, 20, 20, 30, ...
                    let mut r = Ring::new(n, 100);
                    r.tail = 100 + n as u64 + tail_pos;
                    r.next = r.tail + active;
                    let mut t = BlockTable::new(n);
                    for (i, seq) in (r.tail..r.next).enumerate() {
                        t.set(
                            r.pos(seq),
                            10 * (i as i64 / 2 * 2 + 1),
                            1,
                            Some(BlockKind::Packed),
                        );
                    }
                    for ts in 0..=10 * active as i64 + 20 {
                        let first = |p: &dyn Fn(i64) -> bool| {
                            (r.tail..r.next)
                                .find(|&s| !p(t.key(r.pos(s))))
                                .unwrap_or(r.next)
                        };
                        assert_eq!(t.first_key_at_or_after(&r, ts), first(&|k| k < ts));
                        assert_eq!(t.first_key_after(&r, ts), first(&|k| k <= ts));
                    }
                }
            }
        }
    }

    #[test]
    fn a_new_block_is_not_verified_and_a_delete_keeps_the_bit() {
        let mut t = BlockTable::new(130);
        for pos in [0, 63, 64, 129] {
            t.set(pos, 5, 3, Some(BlockKind::Packed));
            assert!(!t.verified(pos));
            t.set_verified(pos);
            assert!(t.verified(pos));
            t.set_live(pos, 2);
            assert!(t.verified(pos));
            assert_eq!(t.live(pos), 2);
            assert_eq!(t.kind(pos), Some(BlockKind::Packed));
            t.set(pos, 6, 0, Some(BlockKind::Packed));
            assert!(!t.verified(pos));
        }
        t.set_verified(1);
        assert!(!t.verified(0) && !t.verified(2));
    }
}
