//! The in-memory time index: one key and one info word per block, loaded
//! from `index.tsdb` at open and kept current by every insert, and binary
//! searched for every timestamp lookup.
//!
//! Invariant: over the live blocks in ring order, keys never decrease. A
//! block's key is the timestamp of the first object that starts in it; a
//! span continuation carries its object's timestamp and an empty block (a
//! hole left by a power cut) carries the key of the block before it, so
//! `partition_point` finds the first block that can hold a timestamp.

use super::format::{BlockKind, IDX_KIND_SHIFT, IDX_LIVE_MASK};
use super::ring::Ring;

/// Per-block key and info, indexed by ring position: 12 bytes a block.
#[derive(Debug, Clone)]
pub(crate) struct BlockTable {
    key: Vec<i64>,
    info: Vec<u32>,
}

impl BlockTable {
    pub fn new(n: u32) -> BlockTable {
        BlockTable {
            key: vec![0; n as usize],
            info: vec![0; n as usize],
        }
    }

    /// Bytes of memory held per block.
    pub const BYTES_PER_BLOCK: usize = std::mem::size_of::<i64>() + std::mem::size_of::<u32>();

    #[inline]
    pub fn key(&self, pos: u32) -> i64 {
        self.key[pos as usize]
    }

    #[inline]
    pub fn live(&self, pos: u32) -> u32 {
        self.info[pos as usize] & IDX_LIVE_MASK
    }

    /// The block's kind; `None` for a hole (no valid block there).
    #[inline]
    pub fn kind(&self, pos: u32) -> Option<BlockKind> {
        BlockKind::from_u8((self.info[pos as usize] >> IDX_KIND_SHIFT) as u8)
    }

    pub fn set(&mut self, pos: u32, key: i64, live: u32, kind: Option<BlockKind>) {
        self.key[pos as usize] = key;
        self.info[pos as usize] =
            (live & IDX_LIVE_MASK) | ((kind.map_or(0, |k| k as u32)) << IDX_KIND_SHIFT);
    }

    pub fn set_live(&mut self, pos: u32, live: u32) {
        let i = &mut self.info[pos as usize];
        *i = (*i & !IDX_LIVE_MASK) | (live & IDX_LIVE_MASK);
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

    fn partition(&self, ring: &Ring, before: impl Fn(i64) -> bool) -> u64 {
        let (mut lo, mut hi) = (ring.tail, ring.next);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(self.key(ring.pos(mid))) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
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
}
