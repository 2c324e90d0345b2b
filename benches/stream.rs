//! `make bench` (`cargo bench --bench stream`): ingestion through the
//! streaming interfaces of the real `tsstore` binary (built with the bench
//! profile), started as the integration tests start it.
//!
//! Unix socket, one connection, a json store under the default durability
//! (`interval`), 64-byte objects:
//! - pipelined: a writer thread sends lines through a 64 KiB buffer while
//!   a reader thread reads the answers; the rate counts from the first byte
//!   written to the last answer read;
//! - lock-step: one line, then wait for its answer, then the next.
//!
//! WebSocket (`stream/ws.rs`), against a second server: write-stream
//! throughput (acks/s, 1,024 messages in flight) and insert-to-reader
//! latency (one message at a time from `/ws/write` to a `/ws/read` client).
//!
//! Each figure is the median of [`ROUNDS`] rounds (all rounds are printed);
//! every answer is checked to be `OK <timestamp>`. Server CPU time per
//! object comes from `/proc/<pid>/stat`. Nothing asserts on time: a slow
//! figure is reported as MISSED, never turned into a failure. The
//! machine-readable line starts with `bench-stream: `.

use std::error::Error;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "stream/ws.rs"]
mod ws;

#[path = "common/fmt.rs"]
mod fmt;
use fmt::{fmt_int, fmt_rounds};
#[path = "common/server.rs"]
mod server;
use server::{json_store, BenchServer};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Lines of one pipelined round.
const PIPELINED: usize = 1_000_000;
/// Lines of one lock-step round.
const LOCKSTEP: usize = 100_000;
const ROUNDS: usize = 3;
/// Distinct payloads, cycled through.
const POOL: usize = 1024;
const TARGET_PIPELINED: f64 = 300_000.0;
const TARGET_LOCKSTEP: f64 = 30_000.0;
const TARGET_WS_WRITE: f64 = 50_000.0;
const TARGET_WS_LIVE_P50_MS: f64 = 2.0;

fn main() -> Res<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target)?;
    let tmp = tempfile::Builder::new()
        .prefix("stream-bench-")
        .tempdir_in(&target)?;
    let socket = tmp.path().join("tsstore.sock");
    let mut srv = BenchServer::start(
        Path::new(env!("CARGO_BIN_EXE_tsstore")),
        tmp.path(),
        Some(&socket),
        &[],
    )?;
    let key = srv.create_store(&json_store("bench"))?;
    let pool = payloads();

    println!("== environment");
    println!(
        "cpus: {}; load average: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "server: {} (pid {}), socket {}",
        srv.addr(),
        srv.pid(),
        socket.display()
    );
    println!(
        "workload: json store, 16,384 blocks of 4 KiB, durability interval; {}-byte lines, e.g. {}",
        pool[0].len(),
        String::from_utf8_lossy(&pool[7]).trim_end()
    );

    // Warm-up: opens the store, caches the key, faults the ring in.
    pipelined(&socket, &key, &pool, 50_000)?;

    println!();
    println!("== Unix socket, one connection");
    let mut pipe = Vec::new();
    let mut cpu_pipe = Vec::new();
    for _ in 0..ROUNDS {
        let cpu = cpu_ticks(&srv);
        pipe.push(pipelined(&socket, &key, &pool, PIPELINED)?);
        cpu_pipe.push(cpu_ticks(&srv) - cpu);
    }
    let mut lock = Vec::new();
    let mut cpu_lock = Vec::new();
    for _ in 0..ROUNDS {
        let cpu = cpu_ticks(&srv);
        lock.push(lockstep(&socket, &key, &pool, LOCKSTEP)?);
        cpu_lock.push(cpu_ticks(&srv) - cpu);
    }
    let unix_pipelined = median(&pipe);
    let unix_lockstep = median(&lock);
    println!(
        "pipelined: {:>10} objects/s  (median of {ROUNDS} rounds of {} lines: {}; server CPU {:.2} us/object)",
        fmt_int(unix_pipelined),
        fmt_int(PIPELINED as f64),
        fmt_rounds(&pipe, ", "),
        per_object_us(&cpu_pipe, PIPELINED)
    );
    println!(
        "lock-step: {:>10} objects/s  (median of {ROUNDS} rounds of {} lines: {}; {:.1} us per round trip; server CPU {:.2} us/object)",
        fmt_int(unix_lockstep),
        fmt_int(LOCKSTEP as f64),
        fmt_rounds(&lock, ", "),
        1e6 / unix_lockstep,
        per_object_us(&cpu_lock, LOCKSTEP)
    );

    srv.stop()?;

    println!();
    println!("== WebSocket, one connection each");
    let ws_srv = ws::Server::start(&["--no-socket"])?;
    let w = ws::run(&ws_srv)?;
    println!("ws server peak RSS: {:.1} MiB", ws_srv.peak_rss_mib());
    drop(ws_srv);

    println!();
    println!("== targets");
    for (what, ok, got) in [
        (
            "unix pipelined >= 300,000 objects/s",
            unix_pipelined >= TARGET_PIPELINED,
            unix_pipelined,
        ),
        (
            "unix lock-step >= 30,000 objects/s",
            unix_lockstep >= TARGET_LOCKSTEP,
            unix_lockstep,
        ),
        (
            "ws write >= 50,000 acks/s",
            w.write_acks_per_s >= TARGET_WS_WRITE,
            w.write_acks_per_s,
        ),
    ] {
        println!(
            "[{}] {what}: {} /s",
            if ok { "met   " } else { "MISSED" },
            fmt_int(got)
        );
    }
    println!(
        "[{}] ws live p50 <= 2 ms: {:.3} ms (p99 {:.3} ms)",
        if w.live_p50_ms <= TARGET_WS_LIVE_P50_MS {
            "met   "
        } else {
            "MISSED"
        },
        w.live_p50_ms,
        w.live_p99_ms
    );
    println!(
        "load average after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!();
    println!(
        "bench-stream: unix_pipelined={:.0} unix_lockstep={:.0} ws_write={:.0} ws_live_p50_ms={:.2} ws_live_p99_ms={:.2}",
        unix_pipelined, unix_lockstep, w.write_acks_per_s, w.live_p50_ms, w.live_p99_ms
    );
    Ok(())
}

/// The lines sent: sensor readings of 64 bytes with the newline.
fn payloads() -> Vec<Vec<u8>> {
    (0..POOL)
        .map(|i| {
            let mut l = format!(
                "{{\"temp\":{:.2},\"humidity\":{:.1},\"sensor\":\"room-{:02}\"",
                18.0 + (i % 700) as f64 / 100.0,
                30.0 + (i % 300) as f64 / 10.0,
                i % 100
            );
            while l.len() < 62 {
                l.push(' ');
            }
            l.push_str("}\n");
            l.into_bytes()
        })
        .collect()
}

/// Connects and authenticates.
fn connect(socket: &Path, key: &str) -> Res<(UnixStream, BufReader<UnixStream>)> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::with_capacity(64 * 1024, s.try_clone()?);
    let mut w = s;
    w.write_all(format!("AUTH bench {key}\n").as_bytes())?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line != "OK\n" {
        return Err(format!("AUTH answered {line:?}").into());
    }
    Ok((w, r))
}

/// Reads `n` answers; each must be `OK <timestamp>`.
fn read_answers(r: &mut BufReader<UnixStream>, n: usize) -> Res<()> {
    let mut line = Vec::with_capacity(64);
    for i in 0..n {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(format!("connection closed after {i} answers").into());
        }
        if !line.starts_with(b"OK ") {
            return Err(format!("answer {i}: {}", String::from_utf8_lossy(&line)).into());
        }
    }
    Ok(())
}

/// Objects per second of `n` lines written by one thread while another
/// reads the answers.
fn pipelined(socket: &Path, key: &str, pool: &[Vec<u8>], n: usize) -> Res<f64> {
    let (w, mut r) = connect(socket, key)?;
    let start = Instant::now();
    let writer = {
        let pool = pool.to_vec();
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut w = BufWriter::with_capacity(64 * 1024, w);
            for i in 0..n {
                w.write_all(&pool[i % pool.len()])?;
            }
            w.flush()
        })
    };
    read_answers(&mut r, n)?;
    let elapsed = start.elapsed();
    writer.join().map_err(|_| "writer panicked")??;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Objects per second of `n` lines, each sent once the previous one was
/// answered.
fn lockstep(socket: &Path, key: &str, pool: &[Vec<u8>], n: usize) -> Res<f64> {
    let (mut w, mut r) = connect(socket, key)?;
    let start = Instant::now();
    for i in 0..n {
        w.write_all(&pool[i % pool.len()])?;
        read_answers(&mut r, 1)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

// ================================================================ server

/// CPU ticks (USER_HZ) the server used so far.
fn cpu_ticks(srv: &BenchServer) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/stat", srv.pid()))
        .ok()
        .and_then(|s| {
            let f: Vec<u64> = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            // utime and stime: fields 14 and 15, 12 and 13 after the name
            // and the state (which does not parse as a number).
            Some(f.get(10)? + f.get(11)?)
        })
        .unwrap_or(0)
}

// ================================================================ output

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn per_object_us(ticks: &[u64], n: usize) -> f64 {
    // USER_HZ is 100: a tick is 10 ms.
    ticks.iter().sum::<u64>() as f64 * 10_000.0 / (n * ticks.len()) as f64
}
