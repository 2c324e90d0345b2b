//! Following a store: reading every object newer than a cursor, in order,
//! in bounded batches, and telling which ones the ring overwrote before
//! they were read.
//!
//! A follower reads from the store itself, not from a per-client queue:
//! memory per reader is one batch, however far behind it is. Live readers
//! wait on the registry's write counter between batches, so delivery is
//! driven by the writer, not by polling.
//!
//! Gap accounting. Timestamps in a store strictly increase, so "every
//! object with a timestamp above the cursor" is exactly what is left to
//! read. The follower remembers how many such objects existed at an anchor
//! (a [`Progress`] snapshot) and counts the objects it passes since. When
//! the oldest live object is newer than the cursor, every live object is
//! unread, and the difference between what should be left and what is
//! live is what the ring overwrote (soft deletes are subtracted; a delete
//! of an already-read object can make the count low, never high).

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::store::{self, Filter, Order, Progress, Query, Store};

/// Objects read per batch: bounds a reader's memory.
pub const BATCH: usize = 256;

/// Where a follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next object written.
    Now,
    /// With the oldest object.
    Oldest,
    /// With the first object whose timestamp is at least this.
    At(i64),
    /// With the first object whose timestamp is above this.
    After(i64),
}

/// Objects the ring overwrote before the follower read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The lost objects' timestamps lie in `from..=to`.
    pub from: i64,
    pub to: i64,
    pub lost: u64,
}

/// One step of a follower.
#[derive(Debug, Default)]
pub struct Batch {
    /// Objects overwritten before this batch, if any.
    pub gap: Option<Gap>,
    /// The next objects (filter applied), oldest first.
    pub objects: Vec<store::Object>,
    /// True when the batch reached the newest object.
    pub caught_up: bool,
}

/// A cursor over a store plus the counts that detect gaps.
pub struct Follower {
    store: Arc<Store>,
    filter: Option<Filter>,
    /// Every object with a timestamp up to this one has been passed.
    cursor: i64,
    anchor: Progress,
    /// Objects above the cursor at the anchor.
    unread_at_anchor: u64,
    /// Objects passed (delivered or filtered out) since the anchor.
    passed: u64,
}

impl Follower {
    /// A follower of `store` from `start`. Blocking (reads the index).
    pub fn new(store: Arc<Store>, start: Start, filter: Option<Filter>) -> store::Result<Follower> {
        let p = store.progress()?;
        let (cursor, unread) = match start {
            Start::Now => (p.newest_timestamp.unwrap_or(0), 0),
            Start::Oldest => (i64::MIN, p.live_objects),
            Start::At(t) if t <= i64::MIN + 1 => (i64::MIN, p.live_objects),
            Start::At(t) => (t - 1, count_above(&store, t - 1, p.newest_timestamp)?),
            Start::After(t) => (t, count_above(&store, t, p.newest_timestamp)?),
        };
        Ok(Follower {
            store,
            filter,
            cursor,
            anchor: p,
            unread_at_anchor: unread,
            passed: 0,
        })
    }

    /// The timestamp of the last object passed (delivered or filtered
    /// out); `i64::MIN` before the first when started from the oldest.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// The next batch: up to `max` objects above the cursor, after a gap
    /// report if objects were overwritten unread. Blocking.
    pub fn next_batch(&mut self, max: usize) -> store::Result<Batch> {
        let mut out = Batch::default();
        let p = self.store.progress()?;
        if p.resets != self.anchor.resets {
            // A reset emptied the store: follow whatever comes next.
            self.cursor = i64::MIN;
            self.reanchor(p);
        } else if p.oldest_timestamp.is_none_or(|o| o > self.cursor) {
            let should_remain = (self.unread_at_anchor + (p.appended - self.anchor.appended))
                .saturating_sub(self.passed)
                .saturating_sub(p.deleted - self.anchor.deleted);
            let lost = should_remain.saturating_sub(p.live_objects);
            if lost > 0 {
                let to = match p.oldest_timestamp {
                    Some(o) => o - 1,
                    None => p.newest_timestamp.unwrap_or(self.cursor),
                };
                out.gap = Some(Gap {
                    from: self.cursor.saturating_add(1).max(0),
                    to,
                    lost,
                });
                // Continue from the current oldest.
                self.cursor = self.cursor.max(to);
                self.reanchor(p);
            }
        }
        let q =
            Query::range(self.cursor.saturating_add(1), i64::MAX, max).order(Order::OldestFirst);
        let mut seen = 0usize;
        let (filter, cursor, passed) = (&self.filter, &mut self.cursor, &mut self.passed);
        self.store.visit(&q, |h, d| {
            seen += 1;
            *cursor = h.timestamp;
            *passed += 1;
            if filter.as_ref().is_none_or(|f| f.matches(d)) {
                out.objects.push(store::Object {
                    handle: *h,
                    data: d.to_vec(),
                });
            }
            ControlFlow::Continue(())
        })?;
        out.caught_up = seen < max;
        Ok(out)
    }

    fn reanchor(&mut self, p: Progress) {
        self.unread_at_anchor = p.live_objects;
        self.anchor = p;
        self.passed = 0;
    }
}

/// Live objects with a timestamp in `(after, newest]`.
fn count_above(store: &Store, after: i64, newest: Option<i64>) -> store::Result<u64> {
    let Some(newest) = newest else { return Ok(0) };
    if after >= newest {
        return Ok(0);
    }
    let mut n = 0u64;
    store.visit_handles(&Query::range(after + 1, newest, usize::MAX), |_| {
        n += 1;
        ControlFlow::Continue(())
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Config, DataType};

    fn store(blocks: u32) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            num_blocks: blocks,
            data_block_size: 256,
            index_block_size: 256,
            data_type: DataType::Json,
            ..Config::default()
        };
        let s = Store::create(dir.path(), "f", cfg).unwrap();
        (dir, Arc::new(s))
    }

    fn put(s: &Store, from: i64, n: i64) {
        for t in from..from + n {
            s.insert(t, format!("{{\"v\":{t}}}").as_bytes()).unwrap();
        }
    }

    fn drain(f: &mut Follower) -> (Vec<i64>, Vec<Gap>) {
        let (mut ts, mut gaps) = (Vec::new(), Vec::new());
        loop {
            let b = f.next_batch(7).unwrap();
            gaps.extend(b.gap);
            ts.extend(b.objects.iter().map(|o| o.handle.timestamp));
            if b.caught_up {
                return (ts, gaps);
            }
        }
    }

    #[test]
    fn follows_from_each_start_in_order_without_gaps() {
        let (_d, s) = store(64);
        put(&s, 1, 20);
        let all: Vec<i64> = (1..=20).collect();
        let mut f = Follower::new(s.clone(), Start::Oldest, None).unwrap();
        assert_eq!(drain(&mut f), (all.clone(), vec![]));
        let mut f = Follower::new(s.clone(), Start::At(5), None).unwrap();
        assert_eq!(drain(&mut f).0, all[4..].to_vec());
        let mut f = Follower::new(s.clone(), Start::After(5), None).unwrap();
        assert_eq!(drain(&mut f).0, all[5..].to_vec());
        let mut now = Follower::new(s.clone(), Start::Now, None).unwrap();
        assert_eq!(drain(&mut now), (vec![], vec![]));
        put(&s, 21, 3);
        assert_eq!(drain(&mut now), (vec![21, 22, 23], vec![]));
    }

    #[test]
    fn a_reader_overtaken_by_the_ring_gets_one_exact_gap() {
        let (_d, s) = store(8);
        put(&s, 1, 10);
        let mut f = Follower::new(s.clone(), Start::Oldest, None).unwrap();
        let b = f.next_batch(3).unwrap();
        assert_eq!(b.objects.len(), 3);
        assert!(b.gap.is_none());
        // Write until the ring has overwritten what the reader has not read.
        put(&s, 11, 400);
        let oldest = s.oldest_timestamp().unwrap().unwrap();
        assert!(oldest > 4, "the ring must have wrapped");
        let b = f.next_batch(3).unwrap();
        let gap = b.gap.expect("gap reported");
        assert_eq!((gap.from, gap.to), (4, oldest - 1));
        assert_eq!(
            gap.lost,
            (oldest - 4) as u64,
            "every overwritten object counted"
        );
        assert_eq!(b.objects[0].handle.timestamp, oldest);
        let (rest, gaps) = drain(&mut f);
        assert!(gaps.is_empty());
        assert_eq!(*rest.last().unwrap(), 410);
    }

    #[test]
    fn deletes_and_filters_are_not_gaps() {
        let (_d, s) = store(64);
        put(&s, 1, 10);
        let mut f = Follower::new(
            s.clone(),
            Start::Oldest,
            Some(Filter::new("\"v\":7", false)),
        )
        .unwrap();
        s.delete_by_time(1).unwrap();
        s.delete_by_time(2).unwrap();
        let (ts, gaps) = drain(&mut f);
        assert_eq!((ts, gaps), (vec![7], vec![]));
    }

    #[test]
    fn after_a_reset_the_follower_takes_what_comes_next() {
        let (_d, s) = store(64);
        put(&s, 100, 5);
        let mut f = Follower::new(s.clone(), Start::Now, None).unwrap();
        s.reset().unwrap();
        put(&s, 1, 2);
        assert_eq!(drain(&mut f), (vec![1, 2], vec![]));
    }
}
