//! `make bench` (`cargo bench --bench engine`): the storage engine against a
//! SQLite baseline, side by side, in one run, on the same data.
//!
//! Every figure is printed with the method behind it, and ratios are
//! engine/SQLite in speed (higher is better for the engine). Nothing here
//! asserts on time: a slow figure is reported, never turned into a failure.
//! The one machine-readable line starts with `bench: `.
//!
//! The baseline is meant to be fair: bundled SQLite, WAL, `synchronous=NORMAL`
//! (`FULL`, its equivalent of `always`, for the durable-insert figures), a
//! table `(ts INTEGER PRIMARY KEY, data BLOB)` kept at exactly the engine's
//! capacity by deleting the row that leaves the window in the same
//! transaction as the insert, one transaction per object, statements prepared
//! once with `prepare_cached` and reused. Both systems hold the same objects
//! when they are read: the SQLite run inserts the last objects of the
//! engine's sequence, and both end with the same window.
//!
//! Files live in a temporary directory under `target/` on the real disk
//! (never a tmpfs); the filesystem measured on is printed first.

use std::collections::HashSet;
use std::error::Error;
use std::fs;
use std::hint::black_box;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tsstore::store::format::{BLOCK_HEADER_LEN, RECORD_HEADER_LEN};
use tsstore::store::medium::IoStats;
use tsstore::store::{
    Config, DataType, Durability, FileMedium, IoSnapshot, Media, Medium, Store, DATA_FILE,
    INDEX_FILE, META_FILE,
};

#[path = "common/env.rs"]
mod env;
#[path = "common/fmt.rs"]
mod fmt;
use fmt::{fmt_int, fmt_rounds};

type Res<T> = Result<T, Box<dyn Error>>;

/// Data block size of every store in the run.
const BLOCK_SIZE: u32 = 4096;
/// Blocks of the ring used for inserts and reads (16 MiB of data).
const NUM_BLOCKS: u32 = 4096;
const PAYLOAD_LEN: usize = 100;
/// Distinct payloads, cycled through.
const POOL: usize = 4096;
const BASE_TS: i64 = 1_700_000_000_000_000_000;
/// One object per millisecond of timestamp.
const STEP_NS: i64 = 1_000_000;
/// Objects the engine inserts under `interval`, at least; it goes on in
/// whole blocks until `ENGINE_RUN` passed, so that its rate includes the
/// background syncs of a 1 s interval.
const ENGINE_INSERTS: usize = 3_000_000;
const ENGINE_RUN: Duration = Duration::from_millis(2_500);
/// Objects SQLite inserts (the last ones of the engine's sequence).
const SQLITE_INSERTS: usize = 400_000;
/// Length of each `always` run; the configurations take turns, round after
/// round, so that a change in the machine's load hits them alike.
const ALWAYS_RUN: Duration = Duration::from_secs(1);
const ALWAYS_ROUNDS: usize = 5;
const WRITERS: usize = 8;
const LOOKUPS: usize = 200_000;
const NEWEST_RUNS: usize = 5_000;
const NEWEST_LEN: usize = 100;
const RANGE_RUNS: usize = 300;
const RANGE_LEN: usize = 10_000;
/// Blocks of the store whose open time and memory are measured.
const BIG_BLOCKS: u32 = 1_000_000;
const BIG_FILL: usize = 5_000;
const OPEN_RUNS: usize = 7;
const COLD_OPEN_RUNS: usize = 3;
/// Simulated seconds of the slow sensor (one insert per second).
const SENSOR_SECS: usize = 600;
const PAGE: u64 = 4096;

fn main() -> Res<()> {
    if let Ok(what) = std::env::var(CHILD_ENV) {
        return run_child(&what);
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    fs::create_dir_all(&target)?;
    let tmp = tempfile::Builder::new()
        .prefix("engine-bench-")
        .tempdir_in(&target)?;
    let dir = tmp.path();

    println!("== environment");
    print_environment(dir);
    let run_load = Load::now();
    let mut w = Workload::new();
    println!(
        "workload: {PAYLOAD_LEN}-byte JSON payloads (e.g. {}), {BLOCK_SIZE}-byte blocks, \
         {NUM_BLOCKS} blocks = {} objects of capacity ({} per block)",
        String::from_utf8_lossy(w.payload(42)),
        w.cap,
        w.per_block
    );
    println!("sqlite: {}", rusqlite::version());

    let (eng, sql, insert) = insert_under_interval(dir, &mut w)?;
    let durable = durable_always(dir, &w)?;
    let reads = reads(&eng, &sql, &w)?;
    let wa = write_amplification(&eng, &sql);
    drop(eng);
    drop(sql);
    let big = memory_and_open(dir, &w)?;
    let crash = crash_open(&big);
    every_block_in_use(dir)?;
    slow_sensor_record(dir, &w)?;

    let figures = Figures {
        insert,
        durable,
        reads,
        wa,
        crash,
        open_median_ms: big.open_median_ms(),
    };
    print_targets(&figures);
    println!("{} (whole run)", run_load.since());
    println!();
    print_bench_line(&figures);
    Ok(())
}

// ================================================================ workloads
// One function per section of the output, in the order `main` runs them;
// each prints its section and returns the figures the targets and the
// `bench:` line use.

/// The figures of the run that the targets and the `bench:` line use.
#[derive(Clone, Copy)]
struct Figures {
    insert: InsertFigures,
    durable: DurableFigures,
    reads: ReadFigures,
    wa: WaFigures,
    crash: CrashFigures,
    /// Warm open of the {BIG_BLOCKS}-block store, median.
    open_median_ms: f64,
}

#[derive(Clone, Copy)]
struct InsertFigures {
    /// Engine objects/s under `interval`.
    rate: f64,
    /// Engine/SQLite.
    ratio: f64,
}

/// Inserts one object per call, engine under `interval:1000`, then SQLite
/// (WAL, NORMAL) the last objects of the engine's sequence (`w.n` is set to
/// what the engine inserted). Both stores stay open for the reads.
fn insert_under_interval(
    dir: &Path,
    w: &mut Workload,
) -> Res<(EngineInsert, SqliteInsert, InsertFigures)> {
    println!();
    println!("== insert, one object per call (engine interval:1000 vs SQLite WAL NORMAL)");
    let load = Load::now();
    let eng = engine_insert_interval(dir, w)?;
    // SQLite inserts the last objects of the engine's sequence.
    w.n = eng.inserted;
    let sql = sqlite_insert_normal(dir, w)?;
    println!(
        "inserted: engine {} objects ({:.1} laps of the ring), SQLite the last {} of them \
         ({:.1} times its window of {} rows, pre-filled with the {} before them)",
        w.n,
        w.n as f64 / w.cap as f64,
        SQLITE_INSERTS,
        SQLITE_INSERTS as f64 / w.cap as f64,
        w.cap,
        w.cap
    );
    let insert_rate = eng.rate;
    let insert_ratio = eng.rate / sql.rate;
    println!(
        "engine : {:>12} objects/s  ({} objects in {:.2} s; the final explicit sync took {:.1} ms \
         and is not in the rate; the data file was synced {} times during the run, where \
         interval:1000 asks for about once a second)",
        fmt_int(eng.rate),
        w.n,
        eng.elapsed.as_secs_f64(),
        ms(eng.final_sync),
        eng.syncs_during
    );
    println!(
        "sqlite : {:>12} objects/s  ({} transactions in {:.2} s, each BEGIN IMMEDIATE; INSERT; \
         DELETE oldest; COMMIT)",
        fmt_int(sql.rate),
        SQLITE_INSERTS,
        sql.elapsed.as_secs_f64()
    );
    println!("ratio  : {insert_ratio:.1}x");
    println!("{}", load.since());
    Ok((
        eng,
        sql,
        InsertFigures {
            rate: insert_rate,
            ratio: insert_ratio,
        },
    ))
}

#[derive(Clone, Copy)]
struct DurableFigures {
    /// Engine `always`, 8 writers over 1 writer.
    always_8w: f64,
    fsync_per_obj_8w: f64,
}

/// Durable inserts: engine `always` against SQLite WAL FULL, 1 and 8
/// writers, rounds taking turns.
fn durable_always(dir: &Path, w: &Workload) -> Res<DurableFigures> {
    println!();
    println!(
        "== durable insert (engine always vs SQLite WAL FULL), {ALWAYS_ROUNDS} rounds of {} s \
         per configuration, taking turns; median round; all pre-filled to capacity",
        ALWAYS_RUN.as_secs()
    );
    let load = Load::now();
    let (mut ea1, mut ea8) = (Always::default(), Always::default());
    let (mut sa1, mut sa8) = (Always::default(), Always::default());
    {
        let e1 = engine_always_store(dir, w, 1)?;
        let e8 = engine_always_store(dir, w, WRITERS)?;
        let s1 = sqlite_always_db(dir, w, 1)?;
        let s8 = sqlite_always_db(dir, w, WRITERS)?;
        let (n1, n8) = (AtomicUsize::new(w.cap), AtomicUsize::new(w.cap));
        for _ in 0..ALWAYS_ROUNDS {
            engine_always_round(&e1, w, 1, &mut ea1)?;
            engine_always_round(&e8, w, WRITERS, &mut ea8)?;
            sqlite_always_round(&s1, w, 1, &n1, &mut sa1)?;
            sqlite_always_round(&s8, w, WRITERS, &n8, &mut sa8)?;
        }
        e1.close()?;
        e8.close()?;
    }
    for (who, r) in [("engine 1 writer ", &ea1), ("engine 8 writers", &ea8)] {
        println!(
            "{who}: {:>10} objects/s  fsyncs/object {:.3} (data file {:.3}, index+meta {:.3}; \
             {} objects, {} fsyncs; rounds {})",
            fmt_int(r.rate()),
            r.syncs as f64 / r.objects as f64,
            r.data_syncs as f64 / r.objects as f64,
            (r.syncs - r.data_syncs) as f64 / r.objects as f64,
            r.objects,
            r.syncs,
            fmt_rounds(&r.rates, " / ")
        );
    }
    for (who, r) in [("sqlite 1 writer ", &sa1), ("sqlite 8 writers", &sa8)] {
        println!(
            "{who}: {:>10} objects/s  fsyncs/object n/a (not counted; WAL+FULL syncs the WAL \
             at every commit, no group commit across connections; {} objects; rounds {})",
            fmt_int(r.rate()),
            r.objects,
            fmt_rounds(&r.rates, " / ")
        );
    }
    let always_8w = ea8.rate() / ea1.rate();
    let fsync_per_obj_8w = ea8.syncs as f64 / ea8.objects as f64;
    println!(
        "engine 8 writers / 1 writer: {always_8w:.1}x;  engine/SQLite: 1 writer {:.1}x, \
         8 writers {:.1}x",
        ea1.rate() / sa1.rate(),
        ea8.rate() / sa8.rate()
    );
    println!("{}", load.since());
    Ok(DurableFigures {
        always_8w,
        fsync_per_obj_8w,
    })
}

#[derive(Clone, Copy)]
struct ReadFigures {
    /// Engine/SQLite in ops/s.
    lookup_ratio: f64,
    /// SQLite/engine in median latency.
    newest_ratio: f64,
    range_ratio: f64,
}

/// Lookups, newest and ranges on the two stores of the insert workload,
/// after checking they hold the same objects.
fn reads(eng: &EngineInsert, sql: &SqliteInsert, w: &Workload) -> Res<ReadFigures> {
    println!();
    println!(
        "== reads ({} objects held by each, identical contents)",
        w.cap
    );
    let load = Load::now();
    let store = &eng.store;
    let conn = &sql.conn;
    check_same_contents(store, conn, w)?;
    let mut rng = SplitMix(0x5eed);
    let keys: Vec<i64> = (0..LOOKUPS)
        .map(|_| w.ts(w.n - w.cap + rng.below(w.cap)))
        .collect();
    let el = engine_lookups(store, &keys)?;
    let sl = sqlite_lookups(conn, &keys)?;
    let lookup_ratio = el.ops_per_s / sl.ops_per_s;
    println!("exact-timestamp lookup, {LOOKUPS} random existing timestamps, data copied out:");
    print_lat("engine get_by_time", &el);
    print_lat("sqlite WHERE ts = ?", &sl);
    println!("  ratio (ops/s): {lookup_ratio:.1}x");

    let en = engine_newest(store)?;
    let sn = sqlite_newest(conn)?;
    let newest_ratio = sn.p50_ns / en.p50_ns;
    println!("newest {NEWEST_LEN} with data, median of {NEWEST_RUNS} runs:");
    print_lat("engine newest_with_data", &en);
    print_lat("sqlite ORDER BY ts DESC LIMIT", &sn);
    println!("  ratio (median latency): {newest_ratio:.1}x");

    let starts: Vec<usize> = (0..RANGE_RUNS)
        .map(|_| w.n - w.cap + rng.below(w.cap - RANGE_LEN))
        .collect();
    let er = engine_range(store, w, &starts)?;
    let sr = sqlite_range(conn, w, &starts)?;
    let range_ratio = sr.p50_ns / er.p50_ns;
    println!("range of {RANGE_LEN} with data, median of {RANGE_RUNS} runs at random starts:");
    print_lat("engine range_with_data", &er);
    print_lat("sqlite BETWEEN .. LIMIT", &sr);
    println!("  ratio (median latency): {range_ratio:.1}x");
    println!("{}", load.since());
    Ok(ReadFigures {
        lookup_ratio,
        newest_ratio,
        range_ratio,
    })
}

#[derive(Clone, Copy)]
struct WaFigures {
    /// The engine's own counter over payload bytes.
    wa: f64,
    /// `/proc/self/io` write_bytes over payload bytes (NaN when unreadable).
    wa_dev: f64,
}

/// Write amplification over the insert workload, both systems.
fn write_amplification(eng: &EngineInsert, sql: &SqliteInsert) -> WaFigures {
    println!();
    println!("== write amplification over the insert phase (bytes written per payload byte)");
    let wa = eng.io.bytes_written as f64 / eng.payload as f64;
    // What reaches the block layer, the final sync included (the mapped
    // commit slot's pages are counted when they are dirtied).
    let wa_dev = eng
        .proc_io
        .map_or(f64::NAN, |p| p.write_bytes as f64 / eng.payload as f64);
    println!("engine wa_dev: {wa_dev:.3} (/proc/self/io write_bytes over the insert phase, final sync included)");
    println!(
        "engine : {wa:.3}  (counter: the engine's own IoStats, bytes passed to pwrite on its three \
         files: data {}, index {}, meta {})",
        fmt_bytes(eng.io_data.bytes_written),
        fmt_bytes(eng.io.bytes_written - eng.io_data.bytes_written - eng.io_meta.bytes_written),
        fmt_bytes(eng.io_meta.bytes_written)
    );
    if let (Some(p), Some(q)) = (eng.proc_io, sql.proc_io) {
        println!(
            "         cross-check /proc/self/io over the same phase: wchar {:.3}, \
             write_bytes {:.3}",
            p.wchar as f64 / eng.payload as f64,
            p.write_bytes as f64 / eng.payload as f64
        );
        println!(
            "sqlite : {:.3}  (counter: /proc/self/io wchar over its insert phase only, i.e. bytes \
             passed to write/pwrite by this process, nothing else writing meanwhile; \
             write_bytes {:.3})",
            q.wchar as f64 / sql.payload as f64,
            q.write_bytes as f64 / sql.payload as f64
        );
        println!(
            "         wchar counts the same thing as the engine's counter (syscall bytes); \
             write_bytes counts 4 KiB pages dirtied in the page cache (block-layer view)"
        );
        println!(
            "ratio  : {:.0}x fewer bytes written per payload byte by the engine (wchar)",
            (q.wchar as f64 / sql.payload as f64) / (p.wchar as f64 / eng.payload as f64)
        );
    } else {
        println!("sqlite : n/a (/proc/self/io is not readable here)");
    }
    println!("sqlite files after the run: {}", fmt_bytes(sql.file_bytes));
    WaFigures { wa, wa_dev }
}

/// Creates, fills and opens the {BIG_BLOCKS}-block store: index memory,
/// open times (warm and cold) and the RSS of a fresh process across the
/// open.
fn memory_and_open(dir: &Path, w: &Workload) -> Res<Big> {
    println!();
    println!("== memory and open of a {BIG_BLOCKS}-block store");
    // 1,000,000 blocks of 4 KiB is a 4 GiB (fallocated) file; fall back to
    // 64-byte blocks when the disk cannot hold it.
    // Both are 32 bits wide on some targets.
    #[allow(clippy::unnecessary_cast)]
    let free = nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available() as u64 * s.fragment_size() as u64)
        .unwrap_or(0);
    let big_block = if free > BIG_BLOCKS as u64 * BLOCK_SIZE as u64 + (2 << 30) {
        BLOCK_SIZE
    } else {
        println!(
            "NOTE: only {} free: {BIG_BLOCKS} blocks of 64 bytes instead of 4 KiB",
            fmt_bytes(free)
        );
        64
    };
    let big = big_store(
        dir,
        "big",
        big_block,
        BIG_FILL,
        &|i| w.payload(i).to_vec(),
        BigExtras::All,
    )?;
    let index_bytes = (Store::INDEX_BYTES_PER_BLOCK * big.blocks as usize) as u64;
    println!(
        "index memory: Store::INDEX_BYTES_PER_BLOCK = {} bytes/block -> {} for {} blocks \
         (SQLite: n/a, it keeps no per-row index in memory; its page cache is bounded by \
         cache_size)",
        Store::INDEX_BYTES_PER_BLOCK,
        fmt_bytes(index_bytes),
        big.blocks
    );
    println!(
        "store: {} blocks of {} bytes ({} data file, fallocated), created in {:.0} ms, \
         filled with {} objects, closed",
        big.blocks,
        big.block_size,
        fmt_bytes(big.blocks as u64 * big.block_size as u64),
        ms(big.create),
        big.objects
    );
    println!(
        "open (page cache warm): median {:.1} ms of {OPEN_RUNS} (min {:.1}, max {:.1})",
        big.open_median_ms(),
        big.opens_ms[0],
        big.opens_ms[big.opens_ms.len() - 1]
    );
    match big.cold_median_ms {
        Some(c) => println!(
            "open (store files evicted with posix_fadvise DONTNEED first): median {c:.1} ms \
             of {COLD_OPEN_RUNS}"
        ),
        None => println!("open (cold): n/a (posix_fadvise failed)"),
    }
    println!(
        "RSS of a fresh process across the open: +{} (heap +{}, mapped file pages +{}), \
         peak +{} during the open (VmHWM); the index's pages of unused blocks are never \
         touched, so a store this empty holds far less than {}",
        fmt_bytes(big.mem.rss),
        fmt_bytes(big.mem.anon),
        fmt_bytes(big.mem.rss.saturating_sub(big.mem.anon)),
        fmt_bytes(big.mem.peak),
        fmt_bytes(index_bytes)
    );
    Ok(big)
}

#[derive(Clone, Copy)]
struct CrashFigures {
    /// NaN when the crashing child failed.
    open_ms: f64,
    read_mb: f64,
    /// The index file and 2 MiB.
    read_budget_mb: f64,
}

/// The open of the big store after a child process ended without closing
/// it (measured by `memory_and_open`).
fn crash_open(big: &Big) -> CrashFigures {
    let (crash_open_ms, crash_open_read_mb) = match big.after_crash {
        Some((t, read)) => {
            println!(
                "open after a crash (a child process inserted for one interval, 1 s under \
                 interval:1000, and ended without closing; files evicted first): {t:.1} ms, \
                 {} read (rchar; the index alone is {})",
                fmt_bytes(read),
                fmt_bytes(big.index_file_len)
            );
            (t, read as f64 / (1u64 << 20) as f64)
        }
        None => {
            println!("open after a crash: n/a (the crashing child failed)");
            (f64::NAN, f64::NAN)
        }
    };
    let crash_read_budget_mb = (big.index_file_len + (2 << 20)) as f64 / (1u64 << 20) as f64;
    CrashFigures {
        open_ms: crash_open_ms,
        read_mb: crash_open_read_mb,
        read_budget_mb: crash_read_budget_mb,
    }
}

/// For the record: open and memory of a {BIG_BLOCKS}-block store with
/// every block in use.
fn every_block_in_use(dir: &Path) -> Res<()> {
    // Every block in use: 64-byte blocks, one 16-byte object each.
    let full = big_store(
        dir,
        "big-full",
        64,
        BIG_BLOCKS as usize,
        &|_| br#"{"t":21.5,"h":4}"#.to_vec(),
        BigExtras::None,
    )?;
    println!(
        "for the record, every block in use ({} blocks of 64 bytes, one object each): open \
         median {:.1} ms of {OPEN_RUNS}; RSS of a fresh process across the open +{} (heap \
         +{}), peak +{}",
        full.blocks,
        full.open_median_ms(),
        fmt_bytes(full.mem.rss),
        fmt_bytes(full.mem.anon),
        fmt_bytes(full.mem.peak)
    );
    Ok(())
}

/// For the record: a sensor inserting once a second, engine and SQLite.
fn slow_sensor_record(dir: &Path, w: &Workload) -> Res<()> {
    println!();
    println!(
        "== slow sensor, for the record: one insert per simulated second for {} min, \
         store.sync() once per interval's worth of inserts",
        SENSOR_SECS / 60
    );
    for per_sync in [1usize, 10] {
        let s = slow_sensor(dir, w, per_sync)?;
        println!(
            "engine interval:{:>5}: {:.2} bytes written per payload byte (pwrite), {:.2} pages \
             of 4 KiB touched per sync ({} syncs, {} fsyncs) = {:.1} bytes of flash pages per \
             payload byte{}",
            per_sync * 1000,
            s.bytes_written as f64 / s.payload as f64,
            s.pages as f64 / s.syncs as f64,
            s.syncs,
            s.fsyncs,
            (s.pages * PAGE) as f64 / s.payload as f64,
            match s.proc_write_bytes {
                Some(b) => format!(
                    "; /proc write_bytes {:.1}/payload byte",
                    b as f64 / s.payload as f64
                ),
                None => String::new(),
            }
        );
    }
    let ss = sqlite_slow(dir, w)?;
    println!(
        "sqlite WAL NORMAL    : {:.1} bytes written per payload byte (wchar; {SENSOR_SECS} \
         autocommit inserts into a full window; independent of any interval){}",
        ss.0,
        match ss.1 {
            Some(b) => format!("; /proc write_bytes {b:.1}/payload byte"),
            None => String::new(),
        }
    );
    Ok(())
}

fn print_targets(f: &Figures) {
    let Figures {
        insert:
            InsertFigures {
                rate: insert_rate,
                ratio: insert_ratio,
            },
        durable: DurableFigures {
            always_8w,
            fsync_per_obj_8w,
        },
        reads:
            ReadFigures {
                lookup_ratio,
                newest_ratio,
                range_ratio,
            },
        wa: WaFigures { wa, wa_dev },
        crash:
            CrashFigures {
                open_ms: crash_open_ms,
                read_mb: crash_open_read_mb,
                read_budget_mb: crash_read_budget_mb,
            },
        open_median_ms,
    } = *f;
    println!();
    println!("== targets");
    let targets: [(&str, bool, String); 10] = [
        (
            "insert interval >= 1,000,000/s and >= 10x SQLite",
            insert_rate >= 1_000_000.0 && insert_ratio >= 10.0,
            format!("{} /s, {insert_ratio:.1}x", fmt_int(insert_rate)),
        ),
        (
            "always, 8 writers >= 5x 1 writer (<= 0.2 fsyncs/object)",
            always_8w >= 5.0 && fsync_per_obj_8w <= 0.2,
            format!("{always_8w:.1}x, {fsync_per_obj_8w:.3} fsyncs/object"),
        ),
        (
            "exact lookup >= 3x SQLite",
            lookup_ratio >= 3.0,
            format!("{lookup_ratio:.1}x"),
        ),
        (
            "newest(100) with data >= 2x SQLite",
            newest_ratio >= 2.0,
            format!("{newest_ratio:.1}x"),
        ),
        (
            "range(10,000) with data >= 2x SQLite",
            range_ratio >= 2.0,
            format!("{range_ratio:.1}x"),
        ),
        (
            "write amplification <= 1.2 under interval",
            wa <= 1.2,
            format!("{wa:.3}"),
        ),
        (
            "wa_dev (/proc write_bytes incl. the final sync) <= 1.2 under interval",
            wa_dev <= 1.2,
            format!("{wa_dev:.3}"),
        ),
        (
            "open after a crash <= 0.5 s",
            crash_open_ms <= 500.0,
            format!("{crash_open_ms:.1} ms"),
        ),
        (
            "open after a crash reads <= index size + 2 MiB",
            crash_open_read_mb <= crash_read_budget_mb,
            format!("{crash_open_read_mb:.2} MiB of {crash_read_budget_mb:.2} MiB"),
        ),
        (
            "open of a 1,000,000-block store < 200 ms",
            open_median_ms < 200.0,
            format!("{:.1} ms (warm median)", open_median_ms),
        ),
    ];
    for (what, ok, got) in &targets {
        println!("[{}] {what}: {got}", if *ok { "met   " } else { "MISSED" });
    }
}

/// The one machine-readable line.
fn print_bench_line(f: &Figures) {
    println!(
        "bench: insert={insert_ratio:.1}x lookup={lookup_ratio:.1}x newest={newest_ratio:.1}x \
         range={range_ratio:.1}x always_8w={always_8w:.1}x wa={wa:.2} wa_dev={wa_dev:.2} \
         crash_open_ms={crash_open_ms:.0} crash_open_read_mb={crash_open_read_mb:.2} \
         fsync_per_obj_8w={fsync_per_obj_8w:.2}",
        insert_ratio = f.insert.ratio,
        lookup_ratio = f.reads.lookup_ratio,
        newest_ratio = f.reads.newest_ratio,
        range_ratio = f.reads.range_ratio,
        always_8w = f.durable.always_8w,
        wa = f.wa.wa,
        wa_dev = f.wa.wa_dev,
        crash_open_ms = f.crash.open_ms,
        crash_open_read_mb = f.crash.read_mb,
        fsync_per_obj_8w = f.durable.fsync_per_obj_8w,
    );
}

// ================================================================ workload

/// The objects of the run: object `i` has timestamp `ts(i)` and payload
/// `payload(i)`, whichever system stores it.
struct Workload {
    pool: Vec<Vec<u8>>,
    per_block: usize,
    /// Objects the ring holds: whole blocks of packed objects.
    cap: usize,
    /// Objects the engine inserted: a multiple of `per_block`, so that its
    /// ring ends with full blocks holding exactly `cap` objects.
    n: usize,
}

impl Workload {
    fn new() -> Workload {
        let per_block =
            (BLOCK_SIZE as usize - BLOCK_HEADER_LEN) / (RECORD_HEADER_LEN + PAYLOAD_LEN);
        let cap = per_block * NUM_BLOCKS as usize;
        Workload {
            pool: (0..POOL).map(make_payload).collect(),
            per_block,
            cap,
            n: 0,
        }
    }

    fn ts(&self, i: usize) -> i64 {
        BASE_TS + i as i64 * STEP_NS
    }

    fn payload(&self, i: usize) -> &[u8] {
        &self.pool[i % POOL]
    }

    /// Index of the object with timestamp `ts`.
    fn index_of(&self, ts: i64) -> usize {
        ((ts - BASE_TS) / STEP_NS) as usize
    }
}

/// A sensor reading as JSON, padded to exactly `PAYLOAD_LEN` bytes.
fn make_payload(i: usize) -> Vec<u8> {
    let mut r = SplitMix(i as u64);
    let head = format!(
        r#"{{"sensor":"s-{:04}","temp":{:.2},"hum":{:.1},"seq":{i}"#,
        i % 10_000,
        15.0 + r.below(2_000) as f64 / 100.0,
        30.0 + r.below(500) as f64 / 10.0
    );
    let tail_len = r#","pad":""}"#.len();
    let pad = PAYLOAD_LEN - head.len() - tail_len;
    let s = format!(r#"{head},"pad":"{}"}}"#, "x".repeat(pad));
    assert_eq!(s.len(), PAYLOAD_LEN);
    s.into_bytes()
}

/// splitmix64: a small deterministic generator, enough for picking keys.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn engine_config(num_blocks: u32, block_size: u32, durability: Durability) -> Config {
    Config {
        num_blocks,
        data_block_size: block_size,
        index_block_size: 4096,
        data_type: DataType::Json,
        durability,
    }
}

// ================================================================ inserts

struct EngineInsert {
    store: Store,
    inserted: usize,
    rate: f64,
    elapsed: Duration,
    final_sync: Duration,
    syncs_during: u64,
    payload: u64,
    io: IoSnapshot,
    io_data: IoSnapshot,
    io_meta: IoSnapshot,
    proc_io: Option<ProcIo>,
}

fn engine_insert_interval(dir: &Path, w: &Workload) -> Res<EngineInsert> {
    let cfg = engine_config(NUM_BLOCKS, BLOCK_SIZE, Durability::default());
    let store = Store::create(dir, "interval", cfg)?;
    let io0 = store.io_stats();
    let data0 = store.media().data.stats().snapshot();
    let meta0 = store.media().meta.stats().snapshot();
    let p0 = proc_io();
    let chunk = w.per_block * 100;
    let mut n = 0;
    let t0 = Instant::now();
    while n < ENGINE_INSERTS || t0.elapsed() < ENGINE_RUN {
        for i in n..n + chunk {
            store.insert(w.ts(i), w.payload(i))?;
        }
        n += chunk;
    }
    let elapsed = t0.elapsed();
    let syncs_during = store.media().data.stats().snapshot().syncs - data0.syncs;
    let t1 = Instant::now();
    store.sync()?;
    let final_sync = t1.elapsed();
    let p1 = proc_io();
    let io = store.io_stats() - io0;
    let io_data = store.media().data.stats().snapshot() - data0;
    let io_meta = store.media().meta.stats().snapshot() - meta0;
    Ok(EngineInsert {
        store,
        inserted: n,
        rate: n as f64 / elapsed.as_secs_f64(),
        elapsed,
        final_sync,
        syncs_during,
        payload: (n * PAYLOAD_LEN) as u64,
        io,
        io_data,
        io_meta,
        proc_io: p0.zip(p1).map(|(a, b)| b - a),
    })
}

struct SqliteInsert {
    conn: Connection,
    rate: f64,
    elapsed: Duration,
    payload: u64,
    proc_io: Option<ProcIo>,
    file_bytes: u64,
}

/// Opens (or creates) a baseline database: WAL, the given `synchronous`
/// level, a busy timeout for concurrent writers.
fn sqlite_open(path: &Path, synchronous: &str) -> Res<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(60))?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        return Err(format!("SQLite refused WAL mode (got {mode})").into());
    }
    c.execute_batch(&format!("PRAGMA synchronous={synchronous}"))?;
    c.execute_batch("CREATE TABLE IF NOT EXISTS t (ts INTEGER PRIMARY KEY, data BLOB)")?;
    Ok(c)
}

/// Inserts objects `idx` in one transaction (setup, not measured).
fn sqlite_prefill(c: &Connection, w: &Workload, idx: Range<usize>) -> Res<()> {
    c.execute_batch("BEGIN")?;
    {
        let mut ins = c.prepare_cached("INSERT INTO t (ts, data) VALUES (?1, ?2)")?;
        for i in idx {
            ins.execute(rusqlite::params![w.ts(i), w.payload(i)])?;
        }
    }
    c.execute_batch("COMMIT")?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Inserts objects `idx` one transaction each, deleting the object that
/// leaves the window (index `i - cap`) in the same transaction.
fn sqlite_insert_each(c: &Connection, w: &Workload, idx: impl Iterator<Item = usize>) -> Res<u64> {
    let mut begin = c.prepare_cached("BEGIN IMMEDIATE")?;
    let mut ins = c.prepare_cached("INSERT INTO t (ts, data) VALUES (?1, ?2)")?;
    let mut del = c.prepare_cached("DELETE FROM t WHERE ts = ?1")?;
    let mut commit = c.prepare_cached("COMMIT")?;
    let mut n = 0;
    for i in idx {
        begin.execute([])?;
        ins.execute(rusqlite::params![w.ts(i), w.payload(i)])?;
        del.execute([w.ts(i - w.cap)])?;
        commit.execute([])?;
        n += 1;
    }
    Ok(n)
}

fn sqlite_insert_normal(dir: &Path, w: &Workload) -> Res<SqliteInsert> {
    let path = dir.join("sqlite-normal.db");
    let conn = sqlite_open(&path, "NORMAL")?;
    let first = w.n - SQLITE_INSERTS;
    sqlite_prefill(&conn, w, first - w.cap..first)?;
    let p0 = proc_io();
    let t0 = Instant::now();
    sqlite_insert_each(&conn, w, first..w.n)?;
    let elapsed = t0.elapsed();
    let p1 = proc_io();
    let file_bytes = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum();
    Ok(SqliteInsert {
        conn,
        rate: SQLITE_INSERTS as f64 / elapsed.as_secs_f64(),
        elapsed,
        payload: (SQLITE_INSERTS * PAYLOAD_LEN) as u64,
        proc_io: p0.zip(p1).map(|(a, b)| b - a),
        file_bytes,
    })
}

// ================================================================ always

/// Totals of the rounds of one `always` configuration.
#[derive(Default)]
struct Always {
    /// Rate of each round.
    rates: Vec<f64>,
    objects: u64,
    syncs: u64,
    data_syncs: u64,
}

impl Always {
    /// Median of the rounds' rates.
    fn rate(&self) -> f64 {
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    }

    fn add(&mut self, objects: u64, elapsed: Duration) {
        self.rates.push(objects as f64 / elapsed.as_secs_f64());
        self.objects += objects;
    }
}

/// Runs `threads` writers for `ALWAYS_RUN`: each sets up with `setup`
/// (not timed), then calls `run` until told to stop. Returns the objects
/// written and the time from the start until every writer stopped.
fn timed_writers<S, P, F>(threads: usize, setup: P, run: F) -> Res<(u64, Duration)>
where
    P: Fn(usize) -> Result<S, String> + Sync,
    F: Fn(&mut S, usize, &AtomicBool) -> Result<u64, String> + Sync,
{
    let stop = AtomicBool::new(false);
    let start = Barrier::new(threads + 1);
    let (results, elapsed) = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (setup, run, stop, start) = (&setup, &run, &stop, &start);
                s.spawn(move || {
                    let st = setup(t);
                    start.wait();
                    run(&mut st?, t, stop)
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        std::thread::sleep(ALWAYS_RUN);
        stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = hs.into_iter().map(|h| h.join()).collect();
        (results, t0.elapsed())
    });
    let mut total = 0;
    for r in results {
        total += r.map_err(|_| "writer thread panicked")??;
    }
    Ok((total, elapsed))
}

/// An engine store under `always`, pre-filled to capacity.
fn engine_always_store(dir: &Path, w: &Workload, threads: usize) -> Res<Store> {
    let cfg = engine_config(NUM_BLOCKS, BLOCK_SIZE, Durability::Always);
    let store = Store::create(dir, &format!("always-{threads}w"), cfg)?;
    let fill: Vec<(Option<i64>, &[u8])> =
        (0..w.cap).map(|i| (Some(w.ts(i)), w.payload(i))).collect();
    for r in store.insert_batch(fill) {
        r?;
    }
    Ok(store)
}

/// One round of `threads` writers on an `always` engine store.
fn engine_always_round(store: &Store, w: &Workload, threads: usize, out: &mut Always) -> Res<()> {
    let io0 = store.io_stats();
    let data0 = store.media().data.stats().snapshot();
    let (objects, elapsed) = timed_writers(
        threads,
        |_| Ok(()),
        |_, t, stop| {
            let mut n = 0u64;
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                // Timestamps must increase across writers: insert_now
                // takes the clock under the store's lock.
                store.insert_now(w.payload(i)).map_err(|e| e.to_string())?;
                n += 1;
                i += threads;
            }
            Ok(n)
        },
    )?;
    out.add(objects, elapsed);
    out.syncs += (store.io_stats() - io0).syncs;
    out.data_syncs += (store.media().data.stats().snapshot() - data0).syncs;
    Ok(())
}

/// A SQLite database for the `always` comparison (WAL, FULL), pre-filled
/// to capacity; returns its path.
fn sqlite_always_db(dir: &Path, w: &Workload, threads: usize) -> Res<PathBuf> {
    let path = dir.join(format!("sqlite-full-{threads}w.db"));
    let c = sqlite_open(&path, "FULL")?;
    sqlite_prefill(&c, w, 0..w.cap)?;
    Ok(path)
}

/// One round of `threads` writers, each with its own connection, on a
/// SQLite database; `next` is the index of the next object to insert.
fn sqlite_always_round(
    path: &Path,
    w: &Workload,
    threads: usize,
    next: &AtomicUsize,
    out: &mut Always,
) -> Res<()> {
    let (objects, elapsed) = timed_writers(
        threads,
        |_| sqlite_open(path, "FULL").map_err(|e| e.to_string()),
        |c, _, stop| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                n += sqlite_insert_each(c, w, i..i + 1).map_err(|e| e.to_string())?;
            }
            Ok(n)
        },
    )?;
    out.add(objects, elapsed);
    Ok(())
}

// ================================================================ reads

struct Lat {
    ops_per_s: f64,
    p50_ns: f64,
    p99_ns: f64,
}

impl Lat {
    fn from(mut ns: Vec<u64>, total: Duration) -> Lat {
        ns.sort_unstable();
        let at = |p: f64| ns[((ns.len() - 1) as f64 * p).round() as usize] as f64;
        Lat {
            ops_per_s: ns.len() as f64 / total.as_secs_f64(),
            p50_ns: at(0.5),
            p99_ns: at(0.99),
        }
    }
}

fn print_lat(who: &str, l: &Lat) {
    println!(
        "  {who:<31}: {:>10} ops/s  p50 {}  p99 {}",
        fmt_int(l.ops_per_s),
        fmt_ns(l.p50_ns),
        fmt_ns(l.p99_ns)
    );
}

/// Times `op` once per item, after a warm-up over the first few.
fn per_op<T>(items: &[T], mut op: impl FnMut(&T) -> Res<()>) -> Res<Lat> {
    for it in items.iter().take(items.len().min(1_000)) {
        op(it)?;
    }
    let mut ns = Vec::with_capacity(items.len());
    let t0 = Instant::now();
    for it in items {
        let t = Instant::now();
        op(it)?;
        ns.push(t.elapsed().as_nanos() as u64);
    }
    Ok(Lat::from(ns, t0.elapsed()))
}

/// Both systems must hold the same window of objects before reads are
/// compared.
fn check_same_contents(store: &Store, conn: &Connection, w: &Workload) -> Res<()> {
    let st = store.stats()?;
    let (rows, min, max): (u64, i64, i64) =
        conn.query_row("SELECT count(*), min(ts), max(ts) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    println!(
        "engine holds {} objects, indexes {}..={}; SQLite holds {rows} rows, {}..={}",
        st.object_count,
        w.index_of(st.oldest_timestamp),
        w.index_of(st.newest_timestamp),
        w.index_of(min),
        w.index_of(max)
    );
    if st.object_count != rows
        || st.oldest_timestamp != min
        || st.newest_timestamp != max
        || rows != w.cap as u64
    {
        return Err("the two systems do not hold the same objects".into());
    }
    let k = w.n - w.cap / 2;
    let a = store.get_by_time(w.ts(k))?.data;
    let b: Vec<u8> = conn.query_row("SELECT data FROM t WHERE ts = ?1", [w.ts(k)], |r| r.get(0))?;
    if a != b || a != w.payload(k) {
        return Err("the two systems return different data".into());
    }
    Ok(())
}

fn engine_lookups(store: &Store, keys: &[i64]) -> Res<Lat> {
    per_op(keys, |&ts| {
        black_box(store.get_by_time(black_box(ts))?);
        Ok(())
    })
}

fn sqlite_lookups(conn: &Connection, keys: &[i64]) -> Res<Lat> {
    let mut st = conn.prepare_cached("SELECT ts, data FROM t WHERE ts = ?1")?;
    per_op(keys, |&ts| {
        let row: (i64, Vec<u8>) = st.query_row([black_box(ts)], |r| Ok((r.get(0)?, r.get(1)?)))?;
        black_box(row);
        Ok(())
    })
}

fn engine_newest(store: &Store) -> Res<Lat> {
    let runs = vec![(); NEWEST_RUNS];
    per_op(&runs, |_| {
        let v = store.newest_with_data(black_box(NEWEST_LEN))?;
        if v.len() != NEWEST_LEN {
            return Err("short newest".into());
        }
        black_box(v);
        Ok(())
    })
}

fn sqlite_newest(conn: &Connection) -> Res<Lat> {
    let mut st = conn.prepare_cached("SELECT ts, data FROM t ORDER BY ts DESC LIMIT ?1")?;
    let runs = vec![(); NEWEST_RUNS];
    per_op(&runs, |_| {
        let v = st
            .query_map([black_box(NEWEST_LEN as i64)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if v.len() != NEWEST_LEN {
            return Err("short newest".into());
        }
        black_box(v);
        Ok(())
    })
}

fn engine_range(store: &Store, w: &Workload, starts: &[usize]) -> Res<Lat> {
    per_op(starts, |&k| {
        let v = store.range_with_data(w.ts(k), w.ts(k + RANGE_LEN - 1), RANGE_LEN)?;
        if v.len() != RANGE_LEN || v[0].handle.timestamp != w.ts(k) {
            return Err("wrong range".into());
        }
        black_box(v);
        Ok(())
    })
}

fn sqlite_range(conn: &Connection, w: &Workload, starts: &[usize]) -> Res<Lat> {
    let mut st = conn
        .prepare_cached("SELECT ts, data FROM t WHERE ts BETWEEN ?1 AND ?2 ORDER BY ts LIMIT ?3")?;
    per_op(starts, |&k| {
        let v = st
            .query_map(
                rusqlite::params![w.ts(k), w.ts(k + RANGE_LEN - 1), RANGE_LEN as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if v.len() != RANGE_LEN || v[0].0 != w.ts(k) {
            return Err("wrong range".into());
        }
        black_box(v);
        Ok(())
    })
}

// ================================================================ memory and open

struct Big {
    blocks: u32,
    block_size: u32,
    objects: usize,
    create: Duration,
    /// Open times, sorted (page cache warm).
    opens_ms: Vec<f64>,
    cold_median_ms: Option<f64>,
    /// Open after a process exited without closing: (ms, bytes read from
    /// the data file).
    after_crash: Option<(f64, u64)>,
    index_file_len: u64,
    mem: OpenMem,
}

impl Big {
    fn open_median_ms(&self) -> f64 {
        self.opens_ms[self.opens_ms.len() / 2]
    }
}

/// What `big_store` does besides the warm opens.
#[derive(Clone, Copy, PartialEq)]
enum BigExtras {
    /// Cold opens and an open after a crash.
    All,
    /// Only the warm opens and the memory.
    None,
}

/// Creates `name` with `BIG_BLOCKS` blocks of `block_size` bytes, inserts
/// `objects` objects, closes it, then measures opens.
fn big_store(
    dir: &Path,
    name: &str,
    block_size: u32,
    objects: usize,
    payload: &dyn Fn(usize) -> Vec<u8>,
    extras: BigExtras,
) -> Res<Big> {
    let cfg = engine_config(BIG_BLOCKS, block_size, Durability::default());
    let t0 = Instant::now();
    let store = Store::create(dir, name, cfg)?;
    let create = t0.elapsed();
    for i in 0..objects {
        store.insert(BASE_TS + i as i64 * STEP_NS, &payload(i))?;
    }
    store.close()?;
    drop(store);

    let sdir = dir.join(name);
    let open_once = || -> Res<f64> {
        let t = Instant::now();
        let s = Store::open(dir, name)?;
        let el = ms(t.elapsed());
        if s.stats()?.object_count != objects as u64 {
            return Err(format!("store {name} lost objects").into());
        }
        s.close()?;
        Ok(el)
    };
    // Memory is measured in a fresh process: in this one, the allocator
    // holds on to memory from everything that ran before.
    let mem = open_in_child(dir, name)?;
    let mut opens_ms = Vec::new();
    for _ in 0..OPEN_RUNS {
        opens_ms.push(open_once()?);
    }
    opens_ms.sort_by(f64::total_cmp);
    let mut cold = Vec::new();
    let mut after_crash = None;
    if extras == BigExtras::All {
        for _ in 0..COLD_OPEN_RUNS {
            let evicted = [DATA_FILE, INDEX_FILE, META_FILE]
                .iter()
                .all(|f| evict(&sdir.join(f)).is_ok());
            if !evicted {
                break;
            }
            cold.push(open_once()?);
        }
        cold.sort_by(f64::total_cmp);
        // A crash: a child process inserts, syncs and exits without closing.
        if child(CHILD_CRASH, dir, name)?.status.success() {
            // The files evicted first (as after a reboot), so the open's
            // reads are real; bytes read are this process's rchar across
            // the open (every read call, whatever the cache held).
            for f in [DATA_FILE, INDEX_FILE, META_FILE] {
                let _ = evict(&sdir.join(f));
            }
            let p0 = proc_io();
            let t = Instant::now();
            let s = Store::open(dir, name)?;
            let el = ms(t.elapsed());
            let read = match (p0, proc_io()) {
                (Some(a), Some(b)) => (b - a).rchar,
                _ => s.io_stats().bytes_read,
            };
            after_crash = Some((el, read));
            s.close()?;
        }
    }
    fs::remove_dir_all(&sdir)?;
    Ok(Big {
        blocks: BIG_BLOCKS,
        block_size,
        objects,
        create,
        opens_ms,
        cold_median_ms: (!cold.is_empty()).then(|| cold[cold.len() / 2]),
        after_crash,
        index_file_len: cfg.index_file_len(),
        mem,
    })
}

/// Set (to `CHILD_OPEN` or `CHILD_CRASH`) when this program runs as a child
/// of itself, on the store `CHILD_NAME` in `CHILD_DIR`.
const CHILD_ENV: &str = "TSSTORE_BENCH_CHILD";
const CHILD_DIR: &str = "TSSTORE_BENCH_DIR";
const CHILD_NAME: &str = "TSSTORE_BENCH_NAME";
/// Open the store and print the memory figures.
const CHILD_OPEN: &str = "open";
/// Insert, sync and exit without closing.
const CHILD_CRASH: &str = "crash";

fn child(what: &str, dir: &Path, name: &str) -> Res<std::process::Output> {
    Ok(std::process::Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, what)
        .env(CHILD_DIR, dir)
        .env(CHILD_NAME, name)
        .output()?)
}

/// The child's side.
fn run_child(what: &str) -> Res<()> {
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).ok_or("no dir")?);
    let name = std::env::var(CHILD_NAME)?;
    let kib = |k| proc_status_kib(k).unwrap_or(0);
    let (rss0, anon0) = (kib("VmRSS"), kib("RssAnon"));
    let s = Store::open(&dir, &name)?;
    if what == CHILD_CRASH {
        // One interval of writes (interval:1000, the flusher's commits
        // included), then the process ends without closing: what recovery
        // finds after a crash in the middle of a steady stream.
        let t0 = Instant::now();
        let mut i = 0u64;
        while t0.elapsed() < Duration::from_millis(1_000) && i < 5_000_000 {
            s.insert_now(br#"{"t":21.5,"h":40,"room":"lab"}"#)?;
            i += 1;
        }
        std::process::exit(0);
    }
    let (rss1, anon1, hwm) = (kib("VmRSS"), kib("RssAnon"), kib("VmHWM"));
    s.close()?;
    println!("{rss0} {anon0} {rss1} {anon1} {hwm}");
    Ok(())
}

/// Memory of a fresh process across one open, in bytes.
struct OpenMem {
    rss: u64,
    /// The part of `rss` that is heap; the rest is mapped file pages.
    anon: u64,
    /// Peak RSS (VmHWM) above the RSS before the open.
    peak: u64,
}

/// Opens `dir/name` in a fresh process and returns its memory figures.
fn open_in_child(dir: &Path, name: &str) -> Res<OpenMem> {
    let out = child(CHILD_OPEN, dir, name)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if !out.status.success() || v.len() != 5 {
        return Err(format!(
            "open in a child process failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(OpenMem {
        rss: v[2].saturating_sub(v[0]) * 1024,
        anon: v[3].saturating_sub(v[1]) * 1024,
        peak: v[4].saturating_sub(v[0]) * 1024,
    })
}

/// Drops a file's pages from the page cache.
fn evict(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path)?;
    nix::fcntl::posix_fadvise(
        &f,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(io::Error::from)
}

// ================================================================ slow sensor

/// A file medium that counts the distinct 4 KiB pages written between
/// syncs: the pages a flash device has to program per sync.
struct PageCounter {
    inner: FileMedium,
    dirty: Mutex<HashSet<u64>>,
    synced_pages: AtomicU64,
}

impl Medium for PageCounter {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if !buf.is_empty() {
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            d.extend(offset / PAGE..=(offset + buf.len() as u64 - 1) / PAGE);
        }
        self.inner.write_at(offset, buf)
    }

    fn sync(&self) -> io::Result<()> {
        let n = {
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            let n = d.len();
            d.clear();
            n
        };
        self.synced_pages.fetch_add(n as u64, Ordering::Relaxed);
        self.inner.sync()
    }

    fn stats(&self) -> &IoStats {
        self.inner.stats()
    }
}

struct Sensor {
    payload: u64,
    bytes_written: u64,
    syncs: u64,
    fsyncs: u64,
    pages: u64,
    proc_write_bytes: Option<u64>,
}

fn slow_sensor(dir: &Path, w: &Workload, per_sync: usize) -> Res<Sensor> {
    let interval = Duration::from_secs(per_sync as u64);
    let cfg = engine_config(1024, BLOCK_SIZE, Durability::Interval(interval));
    let sdir: PathBuf = dir.join(format!("sensor-{per_sync}"));
    fs::create_dir_all(&sdir)?;
    // Files made and opened as a store directory's are (only the data file
    // is memory-mapped); the kernel's own write counter depends on it.
    let counter = |name: &str, len: u64| -> Res<Arc<PageCounter>> {
        let path = sdir.join(name);
        FileMedium::create(&path, len)?.sync()?;
        Ok(Arc::new(PageCounter {
            inner: FileMedium::open(&path, name == DATA_FILE)?,
            dirty: Mutex::new(HashSet::new()),
            synced_pages: AtomicU64::new(0),
        }))
    };
    let files = [
        counter(DATA_FILE, cfg.data_file_len().unwrap_or(0))?,
        counter(INDEX_FILE, cfg.index_file_len())?,
        counter(META_FILE, tsstore::store::format::META_FILE_LEN)?,
    ];
    let media = Media {
        data: files[0].clone(),
        index: files[1].clone(),
        meta: files[2].clone(),
    };
    let store = Store::create_on(media, cfg)?;
    let pages = || {
        files
            .iter()
            .map(|f| f.synced_pages.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let pages0 = pages();
    let io0 = store.io_stats();
    let p0 = proc_io();
    let mut syncs = 0;
    for s in 0..SENSOR_SECS {
        store.insert(BASE_TS + s as i64 * 1_000_000_000, w.payload(s))?;
        if (s + 1) % per_sync == 0 {
            store.sync()?;
            syncs += 1;
        }
    }
    let p1 = proc_io();
    let io = store.io_stats() - io0;
    let out = Sensor {
        payload: (SENSOR_SECS * PAYLOAD_LEN) as u64,
        bytes_written: io.bytes_written,
        syncs,
        fsyncs: io.syncs,
        pages: pages() - pages0,
        proc_write_bytes: p0.zip(p1).map(|(a, b)| (b - a).write_bytes),
    };
    store.close()?;
    Ok(out)
}

/// SQLite's bytes written per payload byte for the slow sensor's inserts,
/// (wchar, write_bytes).
fn sqlite_slow(dir: &Path, w: &Workload) -> Res<(f64, Option<f64>)> {
    let path = dir.join("sqlite-sensor.db");
    let c = sqlite_open(&path, "NORMAL")?;
    sqlite_prefill(&c, w, 0..w.cap)?;
    let p0 = proc_io();
    sqlite_insert_each(&c, w, w.cap..w.cap + SENSOR_SECS)?;
    let p1 = proc_io();
    let payload = (SENSOR_SECS * PAYLOAD_LEN) as f64;
    Ok(match p0.zip(p1).map(|(a, b)| b - a) {
        Some(d) => (
            d.wchar as f64 / payload,
            Some(d.write_bytes as f64 / payload),
        ),
        None => (f64::NAN, None),
    })
}

// ================================================================ environment

fn print_environment(dir: &Path) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = env::cpu_model();
    println!("kernel: {}", env::kernel());
    println!("cpus: {cpus} ({model})");
    println!("files: {} on {}", dir.display(), filesystem_of(dir));
}

/// The filesystem holding `path`, from /proc/self/mountinfo (longest
/// mount point that contains it).
fn filesystem_of(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        let (Some(mp), Some(ty), Some(src)) = (f.get(4), f.get(dash + 1), f.get(dash + 2)) else {
            continue;
        };
        if path.starts_with(mp) && best.as_ref().is_none_or(|(l, _)| mp.len() >= *l) {
            best = Some((mp.len(), format!("{ty} ({src} mounted at {mp})")));
        }
    }
    best.map_or_else(|| "unknown filesystem".into(), |(_, s)| s)
}

// ================================================================ /proc

/// What else the machine was doing: figures are wall-clock, so a loaded
/// machine slows both systems; this is printed with each section.
#[derive(Clone, Copy)]
struct Load {
    at: Instant,
    /// Busy ticks of all CPUs (USER_HZ, 100 a second).
    busy: u64,
    /// Ticks of this process.
    own: u64,
    /// Microseconds some task waited for a CPU (PSI).
    cpu_wait_us: Option<u64>,
}

impl Load {
    fn now() -> Load {
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        let busy = stat
            .lines()
            .next()
            .map(|l| {
                let v: Vec<u64> = l
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal
                [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum()
            })
            .unwrap_or(0);
        let own = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_string();
                let f: Vec<&str> = rest.split_whitespace().collect();
                // Fields 14 and 15 (utime, stime) are 12 and 13 after the name.
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0);
        let cpu_wait_us = fs::read_to_string("/proc/pressure/cpu").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("some"))?
                .split_whitespace()
                .find_map(|f| f.strip_prefix("total="))?
                .parse()
                .ok()
        });
        Load {
            at: Instant::now(),
            busy,
            own,
            cpu_wait_us,
        }
    }

    /// One line: CPUs used by other processes, and CPU pressure, since `self`.
    fn since(self) -> String {
        let b = Load::now();
        let secs = (b.at - self.at).as_secs_f64().max(1e-9);
        let others = (b.busy.saturating_sub(self.busy) as f64
            - b.own.saturating_sub(self.own) as f64)
            .max(0.0)
            / 100.0
            / secs;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let psi = match (self.cpu_wait_us, b.cpu_wait_us) {
            (Some(x), Some(y)) => format!(
                ", tasks waiting for a CPU {:.0}% of the time (PSI cpu some)",
                (y - x) as f64 / 1e6 / secs * 100.0
            ),
            _ => String::new(),
        };
        format!(
            "machine load: other processes used {others:.1} of {cpus} CPUs over {secs:.0} s{psi}"
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct ProcIo {
    wchar: u64,
    write_bytes: u64,
    /// Bytes passed to read/pread by this process (page-cache hits too).
    rchar: u64,
}

impl std::ops::Sub for ProcIo {
    type Output = ProcIo;
    fn sub(self, o: ProcIo) -> ProcIo {
        ProcIo {
            wchar: self.wchar - o.wchar,
            write_bytes: self.write_bytes - o.write_bytes,
            rchar: self.rchar - o.rchar,
        }
    }
}

/// This process's I/O counters (all threads).
fn proc_io() -> Option<ProcIo> {
    let s = fs::read_to_string("/proc/self/io").ok()?;
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(ProcIo {
        wchar: get("wchar")?,
        write_bytes: get("write_bytes")?,
        rchar: get("rchar")?,
    })
}

/// A `kB` field of /proc/self/status.
fn proc_status_kib(key: &str) -> Option<u64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ================================================================ formatting

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.3} ms", ns / 1e6)
    }
}

fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b < 1024.0 {
        format!("{b:.0} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}
