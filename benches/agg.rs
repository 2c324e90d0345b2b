//! `make bench` (`cargo bench --bench agg`): an aggregated range query over
//! HTTP on the real `tsstore` binary (built with the bench profile), with
//! the raw range query of the same data as the same-run baseline.
//!
//! One json store holds a day of 1 Hz readings (86,400 objects of about
//! 60 bytes, inserted as NDJSON batches). The aggregated query asks the
//! whole day in 1-minute windows (1,440 windows, the default `avg` of the
//! numbers and `last` of the string); the raw query asks the same range
//! with `limit=86400`. Each query runs [`ROUNDS`] times, the two taking
//! turns; the figure is the median round, from the request written to the
//! last byte of the response read (one fresh loopback connection each).
//! Every answer is checked (status, window and object counts).
//!
//! Then the cost of alert rules per insert, in process ([`rules`]).
//!
//! Nothing asserts on time: a missed target is reported, never turned into
//! a failure. The machine-readable line starts with `bench-agg: `.

use std::error::Error;
use std::path::Path;
use std::time::Instant;

#[path = "common/env.rs"]
mod env;
#[path = "agg/rules.rs"]
mod rules;
#[path = "common/server.rs"]
mod server;
use server::{json_store, BenchServer};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const SEC: i64 = 1_000_000_000;
const READINGS: i64 = 86_400;
const BATCH: i64 = 2_000;
const ROUNDS: usize = 9;
const TARGET_DAY_1M_MS: f64 = 50.0;
const TARGET_RULES_NS: f64 = 500.0;

fn main() -> Res<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target)?;
    let tmp = tempfile::Builder::new()
        .prefix("agg-bench-")
        .tempdir_in(&target)?;
    let srv = BenchServer::start(
        Path::new(env!("CARGO_BIN_EXE_tsstore")),
        tmp.path(),
        None,
        &[],
    )?;
    let key = srv.create_store(&json_store("bench"))?;

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

    // A whole UTC day, two days ago, so that no window is partial.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let day = 86_400 * SEC;
    let t0 = (now - 2 * day).div_euclid(day) * day;
    let t1 = t0 + day - 1;
    let started = Instant::now();
    let mut example = String::new();
    for b in (0..READINGS).step_by(BATCH as usize) {
        let mut body = String::with_capacity(BATCH as usize * 100);
        for i in b..(b + BATCH).min(READINGS) {
            let line = format!(
                "{{\"timestamp\":{},\"data\":{{\"temp\":{:.2},\"humidity\":{:.1},\"sensor\":\"room-{:02}\"}}}}\n",
                t0 + i * SEC,
                18.0 + (i % 700) as f64 / 100.0,
                30.0 + (i % 300) as f64 / 10.0,
                i % 100
            );
            if i == 7 {
                example = line.trim_end().to_string();
            }
            body.push_str(&line);
        }
        let (status, resp) = request(&srv, "POST", "/api/stores/bench/data", &key, Some(&body))?;
        if status != 200 || !resp.contains("\"failed\":0") {
            return Err(format!("insert batch at {b}: {status} {}", head(&resp)).into());
        }
    }
    println!(
        "workload: json store, {READINGS} readings at 1 Hz over one day, inserted in {:.1} s, e.g. {example}",
        started.elapsed().as_secs_f64()
    );

    let range = format!("/api/stores/bench/data/range?start_time={t0}&end_time={t1}");
    let agg_path = format!("{range}&agg_window=1m&limit=1440");
    let raw_path = format!("{range}&limit={READINGS}");
    // Warm-up: the key cache, the mapped ring.
    query(&srv, &key, &raw_path, READINGS as usize)?;
    query(&srv, &key, &agg_path, 1440)?;

    let mut agg = Vec::new();
    let mut raw = Vec::new();
    let (mut agg_bytes, mut raw_bytes) = (0, 0);
    for _ in 0..ROUNDS {
        let (ms, n) = query(&srv, &key, &agg_path, 1440)?;
        agg.push(ms);
        agg_bytes = n;
        let (ms, n) = query(&srv, &key, &raw_path, READINGS as usize)?;
        raw.push(ms);
        raw_bytes = n;
    }
    let (day_1m, raw_day) = (median(&agg), median(&raw));
    println!();
    println!("== one day of 1 Hz readings over HTTP (median of {ROUNDS} rounds)");
    println!(
        "aggregated to 1 m: {day_1m:>8.1} ms  (1,440 windows, {} bytes; rounds {})",
        agg_bytes,
        rounds(&agg)
    );
    println!(
        "raw range:         {raw_day:>8.1} ms  (86,400 objects, {} bytes; rounds {})",
        raw_bytes,
        rounds(&raw)
    );
    // The server is done: the rules measurement runs in this process.
    drop(srv);
    let rules_ns = rules::measure();
    let mark = |met: bool| if met { "met   " } else { "MISSED" };
    println!();
    println!("== targets");
    println!(
        "[{}] aggregated day at 1 m <= {TARGET_DAY_1M_MS} ms: {day_1m:.1} ms",
        mark(day_1m <= TARGET_DAY_1M_MS)
    );
    println!(
        "[{}] extra per insert with 10 rules <= {TARGET_RULES_NS} ns: {rules_ns:.0} ns",
        mark(rules_ns <= TARGET_RULES_NS)
    );
    println!();
    println!(
        "bench-agg: day_1m_ms={day_1m:.1} rules_ns_per_insert={rules_ns:.0} raw_day_ms={raw_day:.1} ratio={:.2}",
        day_1m / raw_day
    );
    Ok(())
}

/// Milliseconds and body bytes of one GET whose body must hold `count`
/// objects.
fn query(srv: &BenchServer, key: &str, path: &str, count: usize) -> Res<(f64, usize)> {
    let start = Instant::now();
    let (status, body) = request(srv, "GET", path, key, None)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let want = format!("],\"count\":{count}}}");
    if status != 200 || !body.ends_with(&want) {
        return Err(format!("GET {path}: {status} {}", head(&body)).into());
    }
    Ok((ms, body.len()))
}

fn head(s: &str) -> &str {
    &s[..s.len().min(300)]
}

fn rounds(ms: &[f64]) -> String {
    ms.iter()
        .map(|m| format!("{m:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// One request with a store's key on a fresh connection (an NDJSON body
/// if any): the status and the body.
fn request(
    srv: &BenchServer,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> Res<(u16, String)> {
    let (ct, body) = match body {
        Some(b) => ("application/x-ndjson", b),
        None => ("application/json", ""),
    };
    srv.exchange(
        method,
        path,
        &[("X-API-Key", key), ("Content-Type", ct)],
        body,
    )
}
