//! Circular block arithmetic. Blocks are numbered by a sequence number that
//! only grows; block `seq` lives at position `(seq - base) % n` of the ring.
//! The live blocks are the sequence numbers `tail..next` (at most `n`).
//!
//! Invariants: `base <= tail <= next` and `next - tail <= n`.

/// Positions and sequence numbers of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ring {
    /// Number of blocks.
    pub n: u64,
    /// Sequence number of the block at position 0 (raised by a reset).
    pub base: u64,
    /// Oldest live block.
    pub tail: u64,
    /// The sequence number the next block will get.
    pub next: u64,
}

impl Ring {
    pub fn new(n: u32, base: u64) -> Ring {
        Ring {
            n: n as u64,
            base,
            tail: base,
            next: base,
        }
    }

    /// Position of block `seq` (`seq >= base`).
    #[inline]
    pub fn pos(&self, seq: u64) -> u32 {
        ((seq - self.base) % self.n) as u32
    }

    pub fn is_empty(&self) -> bool {
        self.tail == self.next
    }

    /// Number of live blocks.
    pub fn active(&self) -> u64 {
        self.next - self.tail
    }

    pub fn is_full(&self) -> bool {
        self.active() == self.n
    }

    pub fn is_live(&self, seq: u64) -> bool {
        seq >= self.tail && seq < self.next
    }

    /// The live block at position `pos`, if one is there.
    pub fn seq_at(&self, pos: u32) -> Option<u64> {
        if self.is_empty() || pos as u64 >= self.n {
            return None;
        }
        let tp = self.pos(self.tail) as u64;
        let s = self.tail + (pos as u64 + self.n - tp) % self.n;
        self.is_live(s).then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_wrap() {
        let mut r = Ring::new(4, 10);
        assert!(r.is_empty());
        r.next = 16; // blocks 10..16 written
        r.tail = 12; // 10 and 11 reclaimed
        assert!(r.is_full());
        assert_eq!(r.pos(12), 2);
        assert_eq!(r.pos(15), 1);
        assert_eq!(r.seq_at(2), Some(12));
        assert_eq!(r.seq_at(1), Some(15));
        assert_eq!(r.seq_at(0), Some(14));
        assert_eq!(r.seq_at(4), None);
        r.tail = 15;
        assert_eq!(r.seq_at(2), None);
    }
}
