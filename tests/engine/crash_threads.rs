//! Crash consistency with threads, on the machinery of `crash.rs` (its
//! module docs define the models, what is owed, what the ring may lose and
//! the checks after every reopen):
//!
//! - [`group_commit_always`]: 2 to 4 writers insert without timestamps
//!   under `always` while a cut comes, mostly during a group commit with
//!   several writers waiting on one sync: every insert that returned is
//!   owed, those in flight may land or not (matched by their bytes, each
//!   payload being unique). The test counts the cuts that came with two or
//!   more writers inside an insert and asserts there were some.
//! - [`interval_timer`]: `interval` of 5 to 20 ms with the flusher running
//!   for real, one writer inserting with short pauses while a cut comes,
//!   often inside a sync of the flusher. What is owed follows from the data
//!   syncs the gate saw complete, never from elapsed time; the test asserts
//!   that the flusher synced and that its syncs made objects owed, so the
//!   rule was exercised.
//!
//! Cuts are power cuts (sector subsets, garbled pages) and kills. A seed
//! replays a case's configuration, payloads and cut point, not the threads'
//! timing. A case that does not finish within two minutes fails (a
//! deadlock after a cut).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use super::crash::{
    final_reopen, no_dead_blocks, random_config, random_payload, read_back, run_seeds,
    stepped_clock, trace, Disk, End, Gate, Ledger, Tally, T0,
};
use tsstore::store::sim::{CrashModel, Rng};
use tsstore::store::{Config, DataType, Durability, Store};

/// Cases and the cuts each test must make with them.
const GROUP_CASES: u64 = 120;
const GROUP_MIN_CUTS: u64 = 250;
const TIMER_CASES: u64 = 40;
const TIMER_MIN_CUTS: u64 = 60;
/// The cuts of this file's tests, for the total asserted in `crash.rs`.
pub(crate) const MIN_CUTS: u64 = GROUP_MIN_CUTS + TIMER_MIN_CUTS;

const CUTS: &[CrashModel] = &[CrashModel::Sectors, CrashModel::Pages, CrashModel::Program];

/// Runs `case` on a thread of its own and gives up after two minutes.
fn within_two_minutes(
    seed: u64,
    tally: &mut Tally,
    case: fn(u64, &mut Tally) -> Result<(), String>,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut t = Tally::default();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| case(seed, &mut t)));
        let _ = tx.send((t, r));
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok((t, r)) => {
            tally.add(t);
            r.unwrap_or_else(|p| std::panic::resume_unwind(p))
        }
        Err(_) => Err("the case did not finish within two minutes (a deadlock?)".into()),
    }
}

/// Runs a threaded test: `cases` and the cuts they must make, and the
/// counts that must not be zero (what the test is for happened), unless
/// one case is replayed.
fn threaded(
    test: &str,
    what: &str,
    (cases, min_cuts): (u64, u64),
    case: fn(u64, &mut Tally) -> Result<(), String>,
    exercised: &[&str],
) {
    let t = run_seeds(
        &format!("crash_threads::{test}"),
        what,
        cases,
        min_cuts,
        |seed, tally| within_two_minutes(seed, tally, case),
    );
    if std::env::var_os("TSSTORE_CRASH_SEED").is_none() {
        for what in exercised {
            let n = t.counts.get(what).copied().unwrap_or(0);
            assert!(n > 0, "{test}: no {what} in {cases} cases");
        }
    }
}

fn pick<T: Copy>(rng: &mut Rng, v: &[T]) -> T {
    v[rng.below(v.len() as u64) as usize]
}

/// The sessions of one threaded case, one after another, and its ledger.
struct Session<'a> {
    cfg: &'a Config,
    lg: &'a Mutex<Ledger>,
    tally: &'a mut Tally,
    /// How the last session ended.
    last: End,
}

impl<'a> Session<'a> {
    fn new(cfg: &'a Config, lg: &'a Mutex<Ledger>, tally: &'a mut Tally) -> Session<'a> {
        Session {
            cfg,
            lg,
            tally,
            last: End::Close,
        }
    }

    /// After the last cycle: the final reopen of `crash.rs`.
    fn finish(self, disk: Disk, rng: &mut Rng) -> Result<(), String> {
        let mut lg = self.lg.lock().unwrap_or_else(|e| e.into_inner());
        final_reopen(self.cfg, disk, &mut lg, rng, self.last)
            .map_err(|e| format!("after the last cut ({}): {e}", self.last.name()))
    }

    /// One session: opens the store on `disk` (creating it in the first
    /// cycle, else possibly cut during recovery), checks it, runs `work`,
    /// cuts, and updates the ledger. Returns what the cut left.
    fn run(
        &mut self,
        cycle: u64,
        disk: Disk,
        rng: &mut Rng,
        work: impl FnOnce(&Store, &Gate, &mut Rng) -> Result<(), String>,
    ) -> Result<Disk, String> {
        let model = pick(rng, CUTS);
        let last = self.last;
        let ctx = |e: String| {
            format!(
                "cycle {cycle} (opened after {}, cut by {}): {e}",
                last.name(),
                model.name()
            )
        };
        let gate = Gate::new(disk, model, rng.next_u64());
        let policy = self.cfg.durability;
        let opened = if cycle == 0 {
            Store::create_on(gate.media(), *self.cfg)
        } else {
            if rng.chance(1, 4) {
                gate.arm(rng.below(12));
            }
            Store::open_on(gate.media(), Some(policy))
        };
        let lg = || self.lg.lock().unwrap_or_else(|e| e.into_inner());
        let store = match opened {
            Ok(s) => s,
            Err(e) if gate.is_cut() => {
                trace!("cycle {cycle}: {} during the open ({e})", model.name());
                let after = gate.cut();
                let n = lg().cut(model, gate.synced_through());
                self.tally.count("owed by a data sync", n);
                self.tally.cut(model);
                self.last = End::Cut(model);
                return Ok(after);
            }
            Err(e) => return Err(ctx(format!("open failed without a cut: {e}"))),
        };
        trace!("cycle {cycle}: open");
        if cycle > 0 {
            let clean = gate.disk().clean();
            lg().after_reopen(&store, last, clean, gate.stamp())
                .map_err(|e| ctx(format!("after reopen: {e}")))?;
            no_dead_blocks(self.cfg, gate.disk()).map_err(|e| ctx(format!("after reopen: {e}")))?;
        }
        work(&store, &gate, rng).map_err(ctx)?;
        if !gate.is_cut() {
            lg().live_check(&store)
                .map_err(|e| ctx(format!("live store: {e}")))?;
        }
        let oldest = store
            .oldest_timestamp()
            .map_err(|e| ctx(format!("reading the live store at the cut: {e}")))?;
        let after = gate.cut();
        trace!(
            "cycle {cycle}: {} with {} writers in an insert; the live store's oldest object is {oldest:?}",
            model.name(),
            gate.busy_at_cut()
        );
        let mut l = lg();
        l.ring_floor(oldest);
        let n = l.cut(model, gate.synced_through());
        drop(l);
        self.tally.count("owed by a data sync", n);
        self.tally.cut(model);
        if gate.busy_at_cut() >= 2 {
            self.tally.count("cuts with 2+ writers in an insert", 1);
        }
        self.last = End::Cut(model);
        Ok(after)
    }
}

// ---------------------------------------------------------- group commit

fn group_commit_case(seed: u64, tally: &mut Tally) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let cfg = Config {
        num_blocks: pick(&mut rng, &[8, 16, 32, 64]),
        data_block_size: pick(&mut rng, &[128, 256, 512, 4096]),
        index_block_size: pick(&mut rng, &[64, 256, 4096]),
        data_type: DataType::Binary,
        durability: Durability::Always,
    };
    let writers = 2 + rng.below(3);
    let cycles = 2 + rng.below(3);
    let lg = Mutex::new(Ledger::new(cfg.durability, T0));
    let mut disk = Disk::new(&cfg);
    let mut s = Session::new(&cfg, &lg, tally);
    trace!("case {seed}: {cfg:?}, {writers} writers, {cycles} cycles");
    for cycle in 0..cycles {
        disk = s.run(cycle, disk, &mut rng, |store, gate, rng| {
            let newest = lg.lock().unwrap().newest();
            stepped_clock(store, newest.max(T0) + 1);
            if !rng.chance(1, 8) {
                gate.arm(rng.below(30 * writers));
            }
            let max = store.max_object_size();
            let plans: Vec<(Rng, u64)> = (0..writers)
                .map(|_| (Rng::new(rng.next_u64()), 3 + rng.below(12)))
                .collect();
            std::thread::scope(|sc| {
                let runs: Vec<_> = plans
                    .into_iter()
                    .enumerate()
                    .map(|(w, (mut r, n))| {
                        let lg = &lg;
                        let cfg = &cfg;
                        sc.spawn(move || -> Result<(), String> {
                            for i in 0..n {
                                // Unique bytes: an insert in flight at the cut
                                // is known by them.
                                let mut data = (cycle << 48 | (w as u64) << 32 | i)
                                    .to_le_bytes()
                                    .to_vec();
                                data.extend(random_payload(&mut r, cfg, max));
                                data.truncate(max as usize);
                                lg.lock().unwrap().unplaced(&data);
                                gate.busy().fetch_add(1, Ordering::SeqCst);
                                let res = store.insert_now(&data);
                                gate.busy().fetch_sub(1, Ordering::SeqCst);
                                trace!("  writer {w}: insert now ({} bytes): {res:?}", data.len());
                                match res {
                                    Ok(h) => {
                                        let stamp = gate.stamp();
                                        if h.timestamp <= newest {
                                            return Err(format!(
                                                "an insert without a timestamp got {}, not after the newest object {newest}",
                                                h.timestamp
                                            ));
                                        }
                                        lg.lock().unwrap().placed(h.timestamp, &data, stamp);
                                        if !gate.is_cut() {
                                            read_back_shared(store, h.timestamp, &data)?;
                                        }
                                    }
                                    Err(_) if gate.is_cut() => return Ok(()),
                                    Err(e) => return Err(format!("writer {w}: insert: {e}")),
                                }
                            }
                            Ok(())
                        })
                    })
                    .collect();
                runs.into_iter().try_for_each(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a writer panicked".into()))
                })
            })
        })?;
    }
    s.finish(disk, &mut rng)
}

#[test]
fn group_commit_always() {
    threaded(
        "group_commit_always",
        "2-4 writers, sector subsets / garbled pages / program crash, always",
        (GROUP_CASES, GROUP_MIN_CUTS),
        group_commit_case,
        &["cuts with 2+ writers in an insert"],
    );
}

// ---------------------------------------------------------------- timer

fn interval_timer_case(seed: u64, tally: &mut Tally) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let ms = 5 + rng.below(16);
    let cfg = random_config(&mut rng, Durability::Interval(Duration::from_millis(ms)));
    let cycles = 2 + rng.below(3);
    let lg = Mutex::new(Ledger::new(
        cfg.durability,
        T0 + rng.below(1_000_000) as i64,
    ));
    let mut flusher_syncs = 0u64;
    let mut disk = Disk::new(&cfg);
    let mut s = Session::new(&cfg, &lg, tally);
    trace!("case {seed}: {cfg:?}, {cycles} cycles");
    for cycle in 0..cycles {
        disk = s.run(cycle, disk, &mut rng, |store, gate, rng| {
            let at_open = gate.data_syncs();
            if !rng.chance(1, 8) {
                gate.arm(rng.below(40));
            }
            let max = store.max_object_size();
            for _ in 0..10 + rng.below(100) {
                let data = random_payload(rng, &cfg, max);
                let ts = lg.lock().unwrap().stage(&data, rng);
                let r = store.insert(ts, &data);
                if r.is_ok() {
                    lg.lock().unwrap().acked(ts, gate.stamp());
                }
                if gate.is_cut() {
                    break;
                }
                r.map_err(|e| format!("insert {ts}: {e}"))?;
                read_back(store, ts, &data)?;
                if rng.chance(1, 4) {
                    std::thread::sleep(Duration::from_millis(rng.below(3)));
                }
            }
            if !gate.is_cut() {
                // Give the flusher a chance before a cut between calls.
                std::thread::sleep(Duration::from_millis(rng.below(2 * ms + 1)));
            }
            // Inserts under `interval` do not sync, nor does the open
            // once it returned: these are the flusher's.
            flusher_syncs += gate.data_syncs() - at_open;
            Ok(())
        })?;
    }
    s.tally.count("data syncs by the flusher", flusher_syncs);
    s.finish(disk, &mut rng)
}

#[test]
fn interval_timer() {
    threaded(
        "interval_timer",
        "flusher every 5-20 ms, sector subsets / garbled pages / program crash, interval",
        (TIMER_CASES, TIMER_MIN_CUTS),
        interval_timer_case,
        &["data syncs by the flusher", "owed by a data sync"],
    );
}

/// [`read_back`] with other writers running: on a small ring they may
/// have reclaimed the object between its insert and the read (its block is
/// then older than the store's oldest object), which is no failure.
fn read_back_shared(store: &Store, ts: i64, data: &[u8]) -> Result<(), String> {
    let r = read_back(store, ts, data);
    match (&r, store.oldest_timestamp()) {
        (Err(_), Ok(Some(oldest))) if oldest > ts => Ok(()),
        _ => r,
    }
}
