//! `make bench`, second part (`cargo bench --bench http`): the REST server
//! under loopback load, in one run, against one server.
//!
//! The bench starts the `tsstore` binary cargo built for this profile
//! (`CARGO_BIN_EXE_tsstore`), creates one json store with the default
//! durability, and drives it with a load generator written here: keep-alive
//! HTTP/1.1 connections on a tokio current-thread runtime (one thread, so
//! the server's runtime gets the rest of the machine), each sending a
//! pre-built request and reading the whole response by `Content-Length`
//! before sending the next (lock-step, no pipelining). Every response's
//! status and the start of its body are checked; anything else aborts the
//! run, and at the end the server's own insert counter must equal the
//! objects the bench saw acknowledged, with no rejected insert.
//!
//! Each scenario runs a warm-up and then a fixed measured window; its rate
//! is the responses completed inside the window divided by the window, its
//! latencies those of the same responses (request written to last byte
//! read). The scenarios take turns for a few rounds and each is reported by
//! its median round, so that another process's burst of work does not
//! decide a figure on a shared machine. `GET /health` at 32 connections is
//! the baseline the other scenarios are compared with: what the HTTP stack
//! alone costs here.
//!
//! Client and server share the machine's CPUs, so the figures are a floor
//! for the server; the CPU each side used is printed with every scenario.
//! Nothing asserts on time: a missed target is reported, never turned into
//! a failure. The one machine-readable line starts with `bench-http: `.

use std::error::Error;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

#[path = "common/env.rs"]
mod env;
#[path = "common/fmt.rs"]
mod fmt;
use fmt::fmt_int;
#[path = "common/server.rs"]
mod server;
use server::BenchServer;

/// Send: results cross the load generator's tasks.
type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const STORE: &str = "bench";
const BLOCK_SIZE: u32 = 4096;
/// 2 GiB of data file (fallocated, under `target/`): about 36 million
/// objects of this workload, more than the rounds insert on a 2-CPU machine
/// (about 21 million), so the ring does not wrap.
const NUM_BLOCKS: u32 = 524_288;
const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);
/// Times each scenario runs, taking turns with the others.
const ROUNDS: usize = 3;
/// A request that takes longer than this aborts the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrency of the baseline and of the loaded insert scenario.
const HIGH: usize = 32;
const BATCH_LINES: usize = 1_000;
/// Connections sending NDJSON batches: a handful of gateways flushing their
/// buffers, not 32 (each batch holds the store's write lock for its whole
/// length, so more connections only queue).
const BATCH_CONNS: usize = 4;
/// How often the server's VmRSS is sampled.
const RSS_EVERY: Duration = Duration::from_millis(10);
const SINGLE_BODY: &str = r#"{"data":{"temp":21.5,"sensor":"s-01"}}"#;

fn main() {
    // The error is printed by `run`, with the server's log.
    if run().is_err() {
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    fs::create_dir_all(&target)?;
    let tmp = tempfile::Builder::new()
        .prefix("http-bench-")
        .tempdir_in(&target)?;
    let mut server = BenchServer::start(
        Path::new(env!("CARGO_BIN_EXE_tsstore")),
        tmp.path(),
        None,
        &[],
    )?;
    let result = bench(&server, tmp.path());
    if let Err(e) = &result {
        eprintln!("bench-http failed: {e}");
        eprintln!("--- server log ---\n{}", server.log());
    }
    let stopped = stop(&mut server);
    match (result, stopped) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => {
            eprintln!("bench-http failed: {e}");
            Err(e)
        }
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn bench(server: &BenchServer, dir: &Path) -> Res<()> {
    println!("== environment");
    print_environment(dir);
    let key = create_store(server)?;
    // Verifying a key the first time costs an argon2 hash (about 19 MiB of
    // memory); that happens here, before the peak RSS is reset.
    let stats = http_once(server, "GET", &format!("/api/stores/{STORE}/stats"), &key)?;
    if stats.0 != 200 {
        return Err(format!("GET stats: status {} {}", stats.0, stats.1).into());
    }
    let st: serde_json::Value = serde_json::from_str(&stats.1)?;
    println!(
        "server: {} serve on {} (pid {}), bench profile; store {STORE:?}: {} blocks of {} \
         bytes, data type {}, durability {} (the default)",
        env!("CARGO_BIN_EXE_tsstore"),
        server.addr(),
        server.pid(),
        st["num_blocks"],
        st["data_block_size"],
        st["data_type"],
        st["durability"]
    );
    println!(
        "load generator: this process, one tokio current-thread runtime (1 thread, sharing the \
         {} CPUs with the server), keep-alive HTTP/1.1 connections in lock-step",
        cpus()
    );
    println!(
        "method: {ROUNDS} rounds, the scenarios taking turns; each run {} ms warm-up, then {} s \
         measured; rate = responses completed in the window / window; latency = request \
         written to response read, for those responses; each scenario reported by its median \
         round; every response's status and body checked",
        WARMUP.as_millis(),
        MEASURE.as_secs()
    );

    let startup_hwm = proc_kb(server.pid(), "VmHWM:");
    let hwm_reset = fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").is_ok();
    println!(
        "server RSS before the load: {} (peak since start, incl. the store's creation and the \
         first key check: {}){}",
        fmt_mib(proc_kb(server.pid(), "VmRSS:")),
        fmt_mib(startup_hwm),
        if hwm_reset {
            "; peak reset now (clear_refs 5)"
        } else {
            "; NOTE: could not reset the peak (clear_refs), VmHWM below includes startup"
        }
    );

    let sampler = RssSampler::start(server.pid());
    let addr = server.addr();
    let health = Scenario {
        title: format!("GET /health, {HIGH} connections (baseline)"),
        label: "health c32",
        conns: HIGH,
        request: request(addr, "GET", "/health", &[], b""),
        status: 200,
        body_starts: br#"{"status":"ok""#.to_vec(),
        objects: 0,
    };
    let insert_headers = [
        ("X-API-Key", key.as_str()),
        ("Content-Type", "application/json"),
    ];
    let data_path = format!("/api/stores/{STORE}/data");
    let single = |conns: usize, label: &'static str| Scenario {
        title: format!(
            "POST {data_path}, one JSON object per request ({} bytes), {conns} connection{}",
            SINGLE_BODY.len(),
            if conns == 1 { "" } else { "s" }
        ),
        label,
        conns,
        request: request(
            addr,
            "POST",
            &data_path,
            &insert_headers,
            SINGLE_BODY.as_bytes(),
        ),
        status: 201,
        body_starts: br#"{"timestamp":"#.to_vec(),
        objects: 1,
    };
    let batch = ndjson_batch();
    let ndjson = Scenario {
        title: format!(
            "POST {data_path}, NDJSON batches of {BATCH_LINES} objects ({} bytes), \
             {BATCH_CONNS} connections",
            batch.len()
        ),
        label: "ndjson c4",
        conns: BATCH_CONNS,
        request: request(
            addr,
            "POST",
            &data_path,
            &[
                ("X-API-Key", &key),
                ("Content-Type", "application/x-ndjson"),
            ],
            &batch,
        ),
        status: 200,
        body_starts: format!(r#"{{"inserted":{BATCH_LINES},"failed":0,"#).into_bytes(),
        objects: BATCH_LINES as u64,
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (single_c1, single_c32) = (single(1, "insert c1"), single(HIGH, "insert c32"));
    let scenarios = [&health, &single_c1, &single_c32, &ndjson];
    // The scenarios take turns, round after round, so that a change in the
    // machine's load hits them alike; each is reported by its median round.
    let mut rounds: Vec<Vec<Outcome>> = scenarios.iter().map(|_| Vec::new()).collect();
    let mut acked = 0u64;
    for round in 1..=ROUNDS {
        let mut line = format!("round {round} of {ROUNDS}:");
        for (sc, runs) in scenarios.iter().zip(&mut rounds) {
            let o = rt.block_on(drive(sc, server, &sampler))?;
            acked += o.responses_total * sc.objects;
            line.push_str(&format!(
                " {} {}/s (others {:.1} CPUs),",
                sc.label,
                fmt_int(o.rate() * sc.objects.max(1) as f64),
                o.other_cpus
            ));
            runs.push(o);
        }
        println!("{}", line.trim_end_matches(','));
    }
    let Ok([h, c1, c32, nd]) =
        <[Outcome; 4]>::try_from(rounds.into_iter().map(median_round).collect::<Vec<_>>())
    else {
        return Err("one outcome per scenario expected".into());
    };
    for (i, (sc, o)) in scenarios.iter().zip([&h, &c1, &c32, &nd]).enumerate() {
        println!();
        println!("== {}", sc.title);
        print_outcome(sc, o, if i == 0 { None } else { Some(&h) });
    }
    drop(rt);
    let rss_sampled = sampler.stop();

    println!();
    println!("== checks and memory");
    // Every acknowledged object must be one the server counted, and none
    // may have been rejected.
    let metrics = http_once(server, "GET", "/metrics", "")?;
    let counted = metrics
        .1
        .lines()
        .find_map(|l| l.strip_prefix("tsstore_inserts_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or("no tsstore_inserts_total in /metrics")?;
    let rejected: Vec<&str> = metrics
        .1
        .lines()
        .filter(|l| l.starts_with("tsstore_rejected_inserts_total{"))
        .collect();
    if counted != acked || !rejected.is_empty() {
        return Err(format!(
            "the server counted {counted} inserts and rejected {rejected:?}; the bench saw \
             {acked} objects acknowledged"
        )
        .into());
    }
    let stats = http_once(server, "GET", &format!("/api/stores/{STORE}/stats"), &key)?;
    let active = serde_json::from_str::<serde_json::Value>(&stats.1)?["active_blocks"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "inserts: {acked} objects acknowledged = tsstore_inserts_total {counted}, no rejected \
         insert; ring {active} of {NUM_BLOCKS} blocks in use{}",
        if active >= NUM_BLOCKS as u64 {
            " (it wrapped)"
        } else {
            " (no wrap)"
        }
    );
    let hwm = proc_kb(server.pid(), "VmHWM:");
    let rss_kb = if hwm_reset { hwm } else { rss_sampled };
    println!(
        "server RSS under load: peak {} (VmHWM{}), highest VmRSS sampled every {} ms {}, \
         now {} (heap and stacks {}, mapped files {})",
        fmt_mib(hwm),
        if hwm_reset {
            " since the reset before the load"
        } else {
            " since start"
        },
        RSS_EVERY.as_millis(),
        fmt_mib(rss_sampled),
        fmt_mib(proc_kb(server.pid(), "VmRSS:")),
        fmt_mib(proc_kb(server.pid(), "RssAnon:")),
        fmt_mib(proc_kb(server.pid(), "RssFile:"))
    );

    println!();
    println!("== targets");
    let p99_c32_ms = c32.pct_ms(99.0);
    let rss_mb = (rss_kb as f64 / 1024.0).round();
    let targets = [
        (
            "single inserts at c32 >= 40,000/s",
            c32.rate() >= 40_000.0,
            format!("{} /s", fmt_int(c32.rate())),
        ),
        (
            "NDJSON >= 1,000,000 objects/s",
            nd.rate() * BATCH_LINES as f64 >= 1_000_000.0,
            format!("{} /s", fmt_int(nd.rate() * BATCH_LINES as f64)),
        ),
        (
            "server RSS under load <= 30 MB (counted as MiB)",
            rss_kb <= 30 * 1024,
            format!("{rss_mb:.0} MiB"),
        ),
    ];
    for (what, ok, got) in &targets {
        println!("[{}] {what}: {got}", if *ok { "met   " } else { "MISSED" });
    }
    println!();
    println!(
        "bench-http: c1={:.0} c32={:.0} p99_c32_ms={p99_c32_ms:.1} ndjson={:.0} \
         health_c32={:.0} rss_mb={rss_mb:.0}",
        c1.rate(),
        c32.rate(),
        nd.rate() * BATCH_LINES as f64,
        h.rate()
    );
    Ok(())
}

// ================================================================ scenarios

/// One kind of load: the same request on every connection.
struct Scenario {
    title: String,
    label: &'static str,
    conns: usize,
    /// The whole request, head and body.
    request: Vec<u8>,
    status: u16,
    /// What every response body must start with.
    body_starts: Vec<u8>,
    /// Objects one response acknowledges (0: not an insert).
    objects: u64,
}

/// What a scenario measured.
struct Outcome {
    /// Rates of every round, in order (filled in for the median round).
    round_rates: Vec<f64>,
    /// Latencies of the responses completed in the window, sorted (ns).
    lat_ns: Vec<u64>,
    /// Responses over the whole scenario, warm-up and tail included.
    responses_total: u64,
    window: Duration,
    server_cpus: f64,
    own_cpus: f64,
    other_cpus: f64,
    rss_peak_kb: u64,
}

impl Outcome {
    /// Responses per second in the window.
    fn rate(&self) -> f64 {
        self.lat_ns.len() as f64 / self.window.as_secs_f64()
    }

    fn pct_ms(&self, p: f64) -> f64 {
        if self.lat_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * self.lat_ns.len() as f64).ceil() as usize;
        self.lat_ns[i.clamp(1, self.lat_ns.len()) - 1] as f64 / 1e6
    }
}

/// The round with the median rate, knowing the rates of all.
fn median_round(mut runs: Vec<Outcome>) -> Outcome {
    let rates: Vec<f64> = runs.iter().map(Outcome::rate).collect();
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mut m = runs.swap_remove(runs.len() / 2);
    m.round_rates = rates;
    m
}

fn print_outcome(sc: &Scenario, o: &Outcome, base: Option<&Outcome>) {
    let (rate, unit) = if sc.objects == 0 {
        (o.rate(), "requests/s")
    } else {
        (o.rate() * sc.objects as f64, "objects/s ")
    };
    let extra = if sc.objects > 1 {
        format!(" ({} requests/s)", fmt_int(o.rate()))
    } else {
        String::new()
    };
    println!(
        "{:<11}: {:>10} {unit}{extra}  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  \
         ({} responses in {:.1} s; median of rounds {})",
        sc.label,
        fmt_int(rate),
        o.pct_ms(50.0),
        o.pct_ms(99.0),
        o.pct_ms(100.0),
        o.lat_ns.len(),
        o.window.as_secs_f64(),
        o.round_rates
            .iter()
            .map(|r| fmt_int(r * sc.objects.max(1) as f64))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    if let Some(b) = base {
        let mut s = format!(
            "vs health c32: {:.2}x its requests/s, p50 {:.1}x its p50",
            o.rate() / b.rate(),
            o.pct_ms(50.0) / b.pct_ms(50.0)
        );
        if sc.objects > 1 {
            s.push_str(&format!(
                "; {:.1}x its requests/s in objects/s",
                rate / b.rate()
            ));
        }
        println!("{s}");
    }
    println!(
        "cpu: server {:.2} ({:.1} us per response), load generator {:.2}, other processes \
         {:.2} of {} CPUs; server RSS peak sampled {}",
        o.server_cpus,
        o.server_cpus * o.window.as_secs_f64() * 1e6 / o.lat_ns.len().max(1) as f64,
        o.own_cpus,
        o.other_cpus,
        cpus(),
        fmt_mib(o.rss_peak_kb)
    );
}

/// Runs one scenario: connects, warms up, measures, stops.
async fn drive(sc: &Scenario, server: &BenchServer, rss: &RssSampler) -> Res<Outcome> {
    let (addr, server_pid) = (server.addr(), server.pid());
    let mut streams = Vec::with_capacity(sc.conns);
    for _ in 0..sc.conns {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let start = tokio::time::Instant::now();
    let from = start + WARMUP;
    let to = from + MEASURE;
    let request: Arc<[u8]> = sc.request.clone().into();
    let check: Arc<(u16, Vec<u8>)> = Arc::new((sc.status, sc.body_starts.clone()));
    let mut set = JoinSet::new();
    for s in streams {
        set.spawn(connection(
            s,
            request.clone(),
            check.clone(),
            from.into_std(),
            to.into_std(),
        ));
    }
    let mut lat_ns = Vec::new();
    let mut responses_total = 0;
    let mut marks = [from, to].into_iter();
    let mut next_mark = marks.next();
    let (mut before, mut after) = (None, None);
    loop {
        tokio::select! {
            // Marks first: a CPU snapshot must not wait behind a result.
            biased;
            _ = tokio::time::sleep_until(next_mark.unwrap_or(to)), if next_mark.is_some() => {
                if before.is_none() {
                    rss.take_peak();
                    before = Some(Cpu::now(server_pid));
                } else {
                    after = Some((Cpu::now(server_pid), rss.take_peak()));
                }
                next_mark = marks.next();
            }
            joined = set.join_next() => match joined {
                None => break,
                Some(r) => {
                    // The first failure ends the scenario and the run; the
                    // other connections are dropped with the set.
                    let c = r??;
                    lat_ns.extend(c.lat_ns);
                    responses_total += c.responses;
                }
            },
        }
    }
    // The last connection may stop a little before the timer fires (the
    // timer's resolution is a millisecond): the window ends now.
    if after.is_none() {
        after = Some((Cpu::now(server_pid), rss.take_peak()));
    }
    let (Some(before), Some((after, rss_peak_kb))) = (before, after) else {
        return Err("the scenario ended before its window began".into());
    };
    lat_ns.sort_unstable();
    let window = after.at - before.at;
    let secs = window.as_secs_f64();
    let ticks = |a: u64, b: u64| b.saturating_sub(a) as f64 / 100.0 / secs;
    let server_cpus = ticks(before.server, after.server);
    let own_cpus = ticks(before.own, after.own);
    let all = ticks(before.busy, after.busy);
    Ok(Outcome {
        round_rates: Vec::new(),
        lat_ns,
        responses_total,
        window: MEASURE,
        server_cpus,
        own_cpus,
        other_cpus: (all - server_cpus - own_cpus).max(0.0),
        rss_peak_kb,
    })
}

/// What one connection measured.
struct ConnResult {
    lat_ns: Vec<u64>,
    responses: u64,
}

/// One keep-alive connection in lock-step until `to`.
async fn connection(
    mut s: tokio::net::TcpStream,
    request: Arc<[u8]>,
    check: Arc<(u16, Vec<u8>)>,
    from: Instant,
    to: Instant,
) -> Res<ConnResult> {
    let mut buf = Vec::with_capacity(128 * 1024);
    let mut out = ConnResult {
        lat_ns: Vec::new(),
        responses: 0,
    };
    loop {
        let t0 = Instant::now();
        if t0 >= to {
            return Ok(out);
        }
        let exchange = async {
            s.write_all(&request).await?;
            read_response(&mut s, &mut buf).await
        };
        let (status, body_at) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no response within {} s", REQUEST_TIMEOUT.as_secs()))??;
        let t1 = Instant::now();
        let body = &buf[body_at..];
        if status != check.0 || !body.starts_with(&check.1) {
            return Err(format!(
                "expected status {} and a body starting {:?}, got {status}: {}",
                check.0,
                String::from_utf8_lossy(&check.1),
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )
            .into());
        }
        out.responses += 1;
        if t1 >= from && t1 < to {
            out.lat_ns.push((t1 - t0).as_nanos() as u64);
        }
    }
}

/// Reads one response into `buf` (cleared first): its status and where
/// its body starts. The body is framed by `Content-Length`, which is all
/// the server sends for these routes; anything else is an error, as is a
/// server that closes the connection or sends more than one response.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Res<(u16, usize)> {
    buf.clear();
    let head_end = loop {
        fill(s, buf).await?;
        if let Some(i) = memchr::memmem::find(buf, b"\r\n\r\n") {
            break i;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "response head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut len = None;
    for l in lines {
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            len = Some(v.parse::<usize>().map_err(|_| "bad content-length")?);
        } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
            return Err(format!("status {status}: the server closes the connection").into());
        }
    }
    let len = len.ok_or_else(|| format!("status {status}: no content-length"))?;
    let end = head_end + 4 + len;
    while buf.len() < end {
        fill(s, buf).await?;
    }
    if buf.len() > end {
        return Err("bytes after the response".into());
    }
    Ok((status, head_end + 4))
}

async fn fill(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Res<()> {
    buf.reserve(64 * 1024);
    if s.read_buf(buf).await? == 0 {
        return Err("the server closed the connection".into());
    }
    Ok(())
}

/// A request with `Host` and, with a body, `Content-Length`.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut r = head.into_bytes();
    r.extend_from_slice(body);
    r
}

/// `BATCH_LINES` objects, one per line, no timestamps (the server's clock).
fn ndjson_batch() -> Vec<u8> {
    let mut b = String::new();
    for i in 0..BATCH_LINES {
        b.push_str(&format!(
            "{{\"data\":{{\"temp\":{}.{},\"sensor\":\"s-{:02}\",\"seq\":{i}}}}}\n",
            15 + i % 20,
            i % 10,
            i % 50
        ));
    }
    b.into_bytes()
}

// ================================================================ the server

/// SIGTERM, then waits for a clean exit (stores synced and closed).
fn stop(server: &mut BenchServer) -> Res<()> {
    let st = server.stop()?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("the server exited with {st}; log:\n{}", server.log()).into())
    }
}

/// Creates the bench's store with the admin key; returns its API key.
fn create_store(server: &BenchServer) -> Res<String> {
    let spec = serde_json::json!({
        "name": STORE,
        "num_blocks": NUM_BLOCKS,
        "data_block_size": BLOCK_SIZE,
        "data_type": "json",
    });
    server.create_store(&spec.to_string())
}

/// One request without a body, on a connection of its own (`key`: the
/// store key, if not empty).
fn http_once(server: &BenchServer, method: &str, path: &str, key: &str) -> Res<(u16, String)> {
    let headers: &[(&str, &str)] = if key.is_empty() {
        &[]
    } else {
        &[("X-API-Key", key)]
    };
    server.exchange(method, path, headers, "")
}

// ================================================================ /proc

/// A kB figure (`VmRSS:`, `VmHWM:`) of a process's status; 0 if unreadable.
fn proc_kb(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in ticks (USER_HZ, 100 a second).
fn proc_ticks(pid: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<u64> = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(f.iter().sum())
        })
        .unwrap_or(0)
}

/// CPU time used so far: the server, this process, the whole machine.
struct Cpu {
    at: Instant,
    server: u64,
    own: u64,
    busy: u64,
}

impl Cpu {
    fn now(server_pid: u32) -> Cpu {
        let busy = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let v: Vec<u64> = s
                    .lines()
                    .next()?
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // user nice system irq softirq steal (not idle, iowait)
                Some([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum())
            })
            .unwrap_or(0);
        Cpu {
            at: Instant::now(),
            server: proc_ticks(&server_pid.to_string()),
            own: proc_ticks("self"),
            busy,
        }
    }
}

/// Samples the server's VmRSS on a thread of its own.
struct RssSampler {
    peak_kb: Arc<AtomicU64>,
    overall_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let overall_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, o, s) = (peak_kb.clone(), overall_kb.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let kb = proc_kb(pid, "VmRSS:");
                p.fetch_max(kb, Ordering::Relaxed);
                o.fetch_max(kb, Ordering::Relaxed);
                std::thread::sleep(RSS_EVERY);
            }
        });
        RssSampler {
            peak_kb,
            overall_kb,
            stop,
            thread,
        }
    }

    /// The highest sample since the last call.
    fn take_peak(&self) -> u64 {
        self.peak_kb.swap(0, Ordering::Relaxed)
    }

    /// Stops sampling; the highest sample of all.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.overall_kb.load(Ordering::Relaxed)
    }
}

// ================================================================ printing

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn print_environment(dir: &Path) {
    let model = env::cpu_model();
    println!("kernel: {}", env::kernel());
    println!("cpus: {} ({model})", cpus());
    println!("files: {}", dir.display());
}

fn fmt_mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}
