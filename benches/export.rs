//! `cargo bench --bench export` (part of `make bench`): a whole-range CSV
//! export over HTTP on the real `tsstore` binary (bench profile), with the
//! same objects as one `data/range` answer (`limit=1000000`, a single JSON
//! body the server builds in memory) as the same-run baseline.
//!
//! One json store (256 MiB) holds 1,000,000 objects of about 60 bytes
//! (`{"temp":..,"humidity":..,"sensor":"room-NN"}`, inserted as NDJSON
//! batches). The export asks the whole store as CSV ([`ROUNDS`] rounds,
//! the median reported), then once as NDJSON; every answer is read to its
//! end over one loopback connection, its chunked framing decoded and its
//! lines counted. The server's peak RSS is its `VmHWM` from
//! `/proc/<pid>/status`, reset (`clear_refs` 5) before each measured
//! request, so the figure is the peak during that request, not during the
//! inserts. The store's files are memory-mapped, so RSS counts the pages
//! of the store a request has read and still maps (an export lets go of
//! them after each batch); a sampler splits the peak into anonymous memory
//! (heap, stacks: what the request allocates) and mapped file pages.
//!
//! Nothing asserts on time: a missed target is reported, never turned into
//! a failure. The machine-readable line starts with `bench-export: `.

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "common/env.rs"]
mod env;
#[path = "common/server.rs"]
mod server;
use server::BenchServer;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const OBJECTS: i64 = 1_000_000;
const BATCH: i64 = 5_000;
const ROUNDS: usize = 3;
const TARGET_OBJ_S: f64 = 200_000.0;
const TARGET_RSS_MB: f64 = 30.0;

fn main() -> Res<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target)?;
    let tmp = tempfile::Builder::new()
        .prefix("export-bench-")
        .tempdir_in(&target)?;
    let srv = BenchServer::start(
        Path::new(env!("CARGO_BIN_EXE_tsstore")),
        tmp.path(),
        None,
        &[],
    )?;
    let key = srv.create_store(r#"{"name":"bench","data_type":"json","num_blocks":65536}"#)?;

    println!("== environment");
    println!(
        "cpus: {} ({}); load average: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env::cpu_model(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("kernel: {}; server: {}", env::kernel(), srv.addr());

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    // 1 ms apart, ending an hour ago.
    let t0 = now - 3_600_000_000_000 - OBJECTS * 1_000_000;
    let started = Instant::now();
    for b in (0..OBJECTS).step_by(BATCH as usize) {
        let mut body = String::with_capacity(BATCH as usize * 100);
        for i in b..(b + BATCH).min(OBJECTS) {
            body.push_str(&format!(
                "{{\"timestamp\":{},\"data\":{{\"temp\":{:.2},\"humidity\":{:.1},\"sensor\":\"room-{:02}\"}}}}\n",
                t0 + i * 1_000_000,
                18.0 + (i % 700) as f64 / 100.0,
                30.0 + (i % 300) as f64 / 10.0,
                i % 100
            ));
        }
        let (status, resp) = srv.exchange(
            "POST",
            "/api/stores/bench/data",
            &[
                ("X-API-Key", &key),
                ("Content-Type", "application/x-ndjson"),
            ],
            &body,
        )?;
        if status != 200 || !resp.contains("\"failed\":0") {
            return Err(format!(
                "insert batch at {b}: {status} {}",
                &resp[..resp.len().min(300)]
            )
            .into());
        }
    }
    println!(
        "workload: json store, {OBJECTS} objects inserted in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let pid = srv.pid();
    let csv_path = "/api/stores/bench/export?format=csv";
    let mut csv = Vec::new();
    let mut csv_rss = 0.0f64;
    let mut csv_bytes = 0;
    let (mut csv_anon, mut csv_file) = (0.0f64, 0.0f64);
    let idle = status_mb(pid, "VmRSS:")?;
    let idle_anon = status_mb(pid, "RssAnon:")?;
    for _ in 0..ROUNDS {
        reset_peak(pid);
        let sampler = Sampler::start(pid);
        let (secs, lines, bytes) = stream(&srv, &key, csv_path)?;
        let (anon, file) = sampler.stop();
        if lines != OBJECTS as u64 + 1 {
            return Err(format!("csv export: {lines} lines").into());
        }
        csv.push(OBJECTS as f64 / secs);
        csv_rss = csv_rss.max(peak_mb(pid)?);
        csv_anon = csv_anon.max(anon);
        csv_file = csv_file.max(file);
        csv_bytes = bytes;
    }
    reset_peak(pid);
    let (nd_secs, lines, nd_bytes) = stream(&srv, &key, "/api/stores/bench/export?format=ndjson")?;
    if lines != OBJECTS as u64 {
        return Err(format!("ndjson export: {lines} lines").into());
    }
    let nd_rss = peak_mb(pid)?;
    reset_peak(pid);
    let start = Instant::now();
    let (status, body) = srv.exchange(
        "GET",
        &format!("/api/stores/bench/data/range?start_time={t0}&limit={OBJECTS}"),
        &[("X-API-Key", &key)],
        "",
    )?;
    let range_secs = start.elapsed().as_secs_f64();
    if status != 200 || !body.ends_with(&format!("],\"count\":{OBJECTS}}}")) {
        return Err(format!("data/range: {status}").into());
    }
    let range_rss = peak_mb(pid)?;
    let range_obj_s = OBJECTS as f64 / range_secs;

    let csv_obj_s = median(&csv);
    let nd_obj_s = OBJECTS as f64 / nd_secs;
    println!();
    println!("== 1,000,000 json objects over HTTP");
    println!(
        "export csv:     {:>10.0} objects/s (median of {ROUNDS}: {}), {csv_bytes} bytes, peak RSS {csv_rss:.1} MB",
        csv_obj_s,
        csv.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "  of the csv peak: anonymous memory at most {csv_anon:.1} MB, mapped store file pages at most {csv_file:.1} MB (sampled every 5 ms); before the exports: RSS {idle:.1} MB, anonymous {idle_anon:.1} MB"
    );
    println!(
        "export ndjson:  {nd_obj_s:>10.0} objects/s, {nd_bytes} bytes, peak RSS {nd_rss:.1} MB"
    );
    println!(
        "data/range:     {range_obj_s:>10.0} objects/s (one JSON body, limit=1000000), {} bytes, peak RSS {range_rss:.1} MB",
        body.len()
    );
    let mark = |met: bool| if met { "met   " } else { "MISSED" };
    println!();
    println!("== targets");
    println!(
        "[{}] csv export >= {TARGET_OBJ_S} objects/s: {csv_obj_s:.0}",
        mark(csv_obj_s >= TARGET_OBJ_S)
    );
    println!(
        "[{}] server peak RSS (VmHWM) during the csv export < {TARGET_RSS_MB} MB: {csv_rss:.1} MB",
        mark(csv_rss < TARGET_RSS_MB)
    );
    println!(
        "[{}] server anonymous memory (heap, stacks) during the csv export < {TARGET_RSS_MB} MB: {csv_anon:.1} MB",
        mark(csv_anon < TARGET_RSS_MB)
    );
    println!();
    println!(
        "bench-export: csv_obj_s={csv_obj_s:.0} rss_mb={csv_rss:.1} anon_mb={csv_anon:.1} file_mb={csv_file:.1} ndjson_obj_s={nd_obj_s:.0} ndjson_rss_mb={nd_rss:.1} range_obj_s={range_obj_s:.0} range_rss_mb={range_rss:.1}"
    );
    Ok(())
}

/// Samples `RssAnon` and `RssFile` of a process every 5 ms on a thread;
/// `stop` gives their peaks in MB.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(f64, f64)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut anon, mut file) = (0.0f64, 0.0f64);
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                anon = anon.max(status_mb(pid, "RssAnon:").unwrap_or(0.0));
                file = file.max(status_mb(pid, "RssFile:").unwrap_or(0.0));
                std::thread::sleep(Duration::from_millis(5));
            }
            (anon, file)
        });
        Sampler { stop, handle }
    }

    fn stop(self) -> (f64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or((0.0, 0.0))
    }
}

/// A `kB` line of `/proc/<pid>/status` in MB (10^6 bytes).
fn status_mb(pid: u32, field: &str) -> Res<f64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = st
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field}"))?;
    Ok(kb * 1024.0 / 1e6)
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// `VmHWM` of `pid` in MB (10^6 bytes).
fn peak_mb(pid: u32) -> Res<f64> {
    status_mb(pid, "VmHWM:")
}

/// GETs `path` on a fresh connection and reads the chunked body to its
/// end: seconds from the request to the last byte, LF count, body bytes.
fn stream(srv: &BenchServer, key: &str, path: &str) -> Res<(f64, u64, usize)> {
    let start = Instant::now();
    let mut tcp = TcpStream::connect(srv.addr())?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n",
        srv.addr()
    )?;
    let mut r = BufReader::with_capacity(256 * 1024, tcp);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {line}").into());
    }
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line == "\r\n" {
            break;
        }
        if line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
        {
            chunked = true;
        }
    }
    if !chunked {
        return Err("not chunked".into());
    }
    let (mut lines, mut bytes) = (0u64, 0usize);
    let mut buf = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let n = usize::from_str_radix(line.trim(), 16)?;
        if n == 0 {
            break;
        }
        buf.resize(n + 2, 0);
        r.read_exact(&mut buf)?;
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        bytes += n;
    }
    Ok((start.elapsed().as_secs_f64(), lines, bytes))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}
