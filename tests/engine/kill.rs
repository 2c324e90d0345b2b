//! A real process killed at random moments: a child process inserts under
//! `always` into a store in a temp dir, and is killed with SIGKILL after a
//! random short delay (sometimes while it is still opening the store, that
//! is, during recovery). After each kill the parent opens a copy of the
//! store and checks it; the next child then recovers the killed store
//! itself and appends more.
//!
//! The child is this test binary run again for the ignored test
//! [`child_writer`]. It reports each insert on stdout only after `insert`
//! returned, so a reported timestamp is an acknowledged object. Payloads
//! are derived from the timestamp (some larger than a block, so they span),
//! which lets the parent check every byte.
//!
//! After each kill: the store opens; every acknowledged object that the
//! ring cannot have reclaimed is there, byte-exact by timestamp; every
//! object there was written by a child with those bytes; timestamps
//! strictly increase; `stats()` agrees with a scan.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tsstore::store::format::{BLOCK_HEADER_LEN, RECORD_HEADER_LEN};
use tsstore::store::sim::Rng;
use tsstore::store::{Config, DataType, Durability, Query, Store};

/// The store's name inside the temp dir.
const STORE: &str = "killed";
/// Where the child finds the store, and its first timestamp.
const ENV_DIR: &str = "TSSTORE_KILL_DIR";
const ENV_FIRST_TS: &str = "TSSTORE_KILL_FIRST_TS";
/// Marks the child's reports among libtest's own output.
const ACK: &str = "tsstore-kill-ack ";
/// Distance between two timestamps a child writes.
const STEP: i64 = 1_000;
const KILLS: u32 = 24;
const NUM_BLOCKS: u32 = 128;
const BLOCK: u32 = 256;
/// Blocks of margin when telling which objects the ring must still hold.
const SLACK: u64 = 2;

fn config() -> Config {
    Config {
        num_blocks: NUM_BLOCKS,
        data_block_size: BLOCK,
        index_block_size: 256,
        data_type: DataType::Binary,
        durability: Durability::Always,
    }
}

/// The payload of the object at `ts`: mostly small, one in eight spanning
/// 2 to 4 blocks.
fn payload(ts: i64) -> Vec<u8> {
    let mut r = Rng::new(ts as u64);
    let len = if r.chance(1, 8) {
        BLOCK as u64 + r.below(2 * BLOCK as u64 + 200)
    } else {
        r.below(BLOCK as u64 * 2 / 3)
    };
    (0..len).map(|_| r.next_u64() as u8).collect()
}

/// The child: inserts from `TSSTORE_KILL_FIRST_TS` on, one `STEP` apart,
/// reporting each insert once it returned, until it is killed. Without the
/// environment it does nothing, so `--include-ignored` runs stay green.
#[test]
#[ignore = "run in a child process by kill_child_writer_repeatedly"]
fn child_writer() {
    let (Some(dir), Some(first)) = (std::env::var_os(ENV_DIR), std::env::var_os(ENV_FIRST_TS))
    else {
        return;
    };
    let first: i64 = first
        .to_str()
        .and_then(|s| s.parse().ok())
        .expect("child: first timestamp");
    let store =
        Store::open_with(Path::new(&dir), STORE, Some(Durability::Always)).expect("child: open");
    let mut out = std::io::stdout();
    // The parent kills it long before; the limit only keeps an orphan from
    // writing for ever.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ts = first;
    while Instant::now() < deadline {
        store.insert(ts, &payload(ts)).expect("child: insert");
        // One write of one short line per acknowledged insert (a new line
        // first, in case libtest left one open): a pipe takes it whole or
        // not at all.
        writeln!(out, "\n{ACK}{ts}")
            .and_then(|_| out.flush())
            .expect("child: stdout");
        ts += STEP;
    }
}

/// Blocks the engine's packing gives each object (FORMAT.md, "Records"):
/// tells which acknowledged objects the ring may have reclaimed.
struct Packing {
    room: usize,
    /// Sequence number of the next block (counting from 0).
    next: u64,
    /// Bytes of records in the open block, if objects can still join it.
    fill: Option<usize>,
    first_block: BTreeMap<i64, u64>,
}

impl Packing {
    fn new() -> Packing {
        Packing {
            room: BLOCK as usize - BLOCK_HEADER_LEN,
            next: 0,
            fill: None,
            first_block: BTreeMap::new(),
        }
    }

    /// A new session never appends to an earlier session's block.
    fn new_session(&mut self) {
        self.fill = None;
    }

    fn add(&mut self, ts: i64, len: usize) {
        let rec = RECORD_HEADER_LEN + len;
        if rec > self.room {
            self.first_block.insert(ts, self.next);
            self.next += rec.div_ceil(self.room) as u64;
            self.fill = None;
        } else if let Some(f) = self.fill.filter(|f| f + rec <= self.room) {
            self.fill = Some(f + rec);
            self.first_block.insert(ts, self.next - 1);
        } else {
            self.first_block.insert(ts, self.next);
            self.next += 1;
            self.fill = Some(rec);
        }
    }

    /// True if the object's blocks are certainly still in the ring.
    fn kept(&self, ts: i64) -> bool {
        self.first_block[&ts] + NUM_BLOCKS as u64 >= self.next + SLACK
    }
}

/// Turns a hang into a failure that says where. If one step of the test (a
/// child's start, its kill, reading its reports, the checks) takes longer
/// than `STEP_LIMIT`, the step is written to stderr (to the descriptor
/// itself: libtest captures only its macros) and the process aborts. Every
/// step takes seconds at most, under qemu-user too; a CI run once hung in
/// this test with nothing to tell why.
struct Watchdog {
    step: Arc<Mutex<(String, Instant)>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const STEP_LIMIT: Duration = Duration::from_secs(300);

impl Watchdog {
    fn start() -> Watchdog {
        let step = Arc::new(Mutex::new(("starting".to_string(), Instant::now())));
        let done = Arc::new(AtomicBool::new(false));
        let (s, d) = (step.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_secs(1));
                let (what, since) = s.lock().unwrap().clone();
                if since.elapsed() > STEP_LIMIT {
                    let _ = writeln!(
                        std::io::stderr(),
                        "kill_child_writer_repeatedly: no progress for {STEP_LIMIT:?} in: {what}"
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog {
            step,
            done,
            thread: Some(thread),
        }
    }

    fn step(&self, what: impl Into<String>) {
        *self.step.lock().unwrap() = (what.into(), Instant::now());
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one child did, as the parent saw it.
struct Run {
    acked: Vec<i64>,
    status: std::process::ExitStatus,
    stderr: String,
}

/// Starts a child writing from `first`, kills it after a random delay
/// (counted from its start, or from its first acknowledged insert), and
/// collects what it reported.
fn run_child(dir: &Path, first: i64, rng: &mut Rng, dog: &Watchdog, ctx: &str) -> Run {
    dog.step(format!("{ctx}: spawning it"));
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = crate::runner::command(exe)
        .args([
            "--exact",
            "engine::kill::child_writer",
            "--nocapture",
            "--include-ignored",
        ])
        .args(["--test-threads", "1"])
        .env(ENV_DIR, dir)
        .env(ENV_FIRST_TS, first.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut short by the kill is not a report.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {}
            }
            if let Some(i) = line.find(ACK) {
                let ts: i64 = line[i + ACK.len()..].trim().parse().expect("ack line");
                acked.push(ts);
                let _ = tx.send(());
            }
        }
        acked
    });
    let mut stderr = child.stderr.take().expect("child stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    dog.step(format!("{ctx}: waiting to kill it"));
    let delay = match rng.below(4) {
        // Soon after the start: often while the child opens the store,
        // that is, during recovery.
        0 => rng.below(15_000),
        1 => rng.below(120_000),
        // From its first acknowledged insert (if one comes).
        _ => {
            let _ = rx.recv_timeout(Duration::from_secs(20));
            rng.below(120_000)
        }
    };
    std::thread::sleep(Duration::from_micros(delay));
    dog.step(format!("{ctx}: killing it (pid {})", child.id()));
    let _ = child.kill();
    let status = child.wait().expect("wait for the child");
    dog.step(format!("{ctx}: reading its reports to the end"));
    Run {
        acked: reader.join().expect("stdout reader"),
        status,
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Copies the store's directory to `to` (the killed store stays as it is,
/// for the next child to recover).
fn copy_store(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Opens the store in `base` and checks it. `acked` are the acknowledged
/// objects, `written` every timestamp a child may have written.
fn verify(
    base: &Path,
    acked: &[i64],
    written: &BTreeSet<i64>,
    packing: &Packing,
) -> Result<usize, String> {
    let store = Store::open(base, STORE).map_err(|e| format!("open failed: {e}"))?;
    let all = store
        .objects(&Query::oldest(0))
        .map_err(|e| format!("scan failed: {e}"))?;
    for w in all.windows(2) {
        if w[0].handle.timestamp >= w[1].handle.timestamp {
            return Err(format!(
                "timestamps do not increase: {} then {}",
                w[0].handle.timestamp, w[1].handle.timestamp
            ));
        }
    }
    for o in &all {
        let ts = o.handle.timestamp;
        if !written.contains(&ts) {
            return Err(format!("object {ts} was never written"));
        }
        if o.data != payload(ts) {
            return Err(format!("object {ts} reads back different bytes"));
        }
    }
    let mut required = 0;
    for &ts in acked.iter().filter(|&&t| packing.kept(t)) {
        let got = store
            .get_by_time(ts)
            .map_err(|e| format!("acknowledged object {ts} is lost: {e}"))?;
        if got.data != payload(ts) {
            return Err(format!(
                "acknowledged object {ts} reads back different bytes"
            ));
        }
        required += 1;
    }
    let s = store.stats().map_err(|e| format!("stats failed: {e}"))?;
    let first = all.first().map_or(0, |o| o.handle.timestamp);
    let last = all.last().map_or(0, |o| o.handle.timestamp);
    if s.object_count != all.len() as u64
        || s.oldest_timestamp != first
        || s.newest_timestamp != last
    {
        return Err(format!(
            "stats say {} objects from {} to {}, a scan finds {} from {first} to {last}",
            s.object_count,
            s.oldest_timestamp,
            s.newest_timestamp,
            all.len()
        ));
    }
    store.close().map_err(|e| format!("close failed: {e}"))?;
    Ok(required)
}

#[test]
fn kill_child_writer_repeatedly() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(seed);
    let dog = Watchdog::start();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    Store::create(tmp.path(), STORE, config())
        .unwrap()
        .close()
        .unwrap();
    let started = Instant::now();
    let mut acked: Vec<i64> = Vec::new();
    let mut written: BTreeSet<i64> = BTreeSet::new();
    let mut packing = Packing::new();
    let mut next_ts: i64 = 1_700_000_000_000_000_000;
    let (mut kills, mut runs, mut required, mut early) = (0, 0, 0, 0);
    while kills < KILLS {
        runs += 1;
        assert!(
            runs <= 3 * KILLS,
            "too few children were killed while running ({kills} of {runs})"
        );
        let first = next_ts;
        let ctx = format!("child {runs} (seed {seed}, first timestamp {first})");
        let run = run_child(tmp.path(), first, &mut rng, &dog, &ctx);
        match run.status.signal() {
            Some(9) => {
                kills += 1;
                early += u32::from(run.acked.is_empty());
            }
            // It finished on its own: not a kill, but what it wrote counts.
            None if run.status.success() => {}
            _ => panic!("{ctx} failed ({}):\n{}", run.status, run.stderr),
        }
        // A child reports consecutive timestamps; the one after its last
        // report may have been written too (the kill came between the
        // insert and its report).
        for (i, &ts) in run.acked.iter().enumerate() {
            assert_eq!(ts, first + i as i64 * STEP, "{ctx}: reports out of order");
        }
        let in_flight = first + run.acked.len() as i64 * STEP;
        packing.new_session();
        for &ts in run.acked.iter().chain([&in_flight]) {
            // Counting the one in flight as written leaves fewer objects
            // certainly kept: the safe side.
            packing.add(ts, payload(ts).len());
            written.insert(ts);
        }
        acked.extend(&run.acked);
        next_ts = in_flight + STEP;
        dog.step(format!("{ctx}: copying and checking the store"));
        let copy = scratch.path().join(STORE);
        copy_store(&tmp.path().join(STORE), &copy);
        required = verify(scratch.path(), &acked, &written, &packing)
            .unwrap_or_else(|e| panic!("{ctx}, after the kill: {e}"));
        if runs % 4 == 0 {
            // Now and then the killed store itself is recovered and closed
            // cleanly before the next child, instead of by the child.
            dog.step(format!("{ctx}: checking the store in place"));
            verify(tmp.path(), &acked, &written, &packing)
                .unwrap_or_else(|e| panic!("{ctx}, after the kill, in place: {e}"));
        }
    }
    assert!(!acked.is_empty(), "no child ever acknowledged an insert");
    eprintln!(
        "kill_child_writer_repeatedly: {kills} kills of {runs} children ({early} before their \
         first insert returned), {} acknowledged inserts, {required} still required at the end, \
         in {:.1?} (seed {seed})",
        acked.len(),
        started.elapsed()
    );
}
