//! `make bench` (`cargo bench --bench mqtt`): the MQTT sink of the real
//! `tsstore` binary (built with the bench profile) publishing to a local
//! mosquitto (Debian's, started here on a free loopback port with a
//! generated configuration), against `mosquitto_pub` as the baseline
//! client on the same broker.
//!
//! Workload: a json store holding [`N`] objects of 100 bytes, written
//! through the Unix socket before the sink starts. One round: create a
//! sink (QoS 1, the default window of 64) from the oldest object, and time
//! until its status says every object was acknowledged by the broker
//! (`messages_sent == N`); then delete it. The baseline round pipes the
//! same [`N`] lines into `mosquitto_pub -q 1 -l` and times it to its exit.
//! Nobody subscribes: the broker acknowledges and drops, for both.
//!
//! Each figure is the median of [`ROUNDS`] rounds (all printed). Nothing
//! asserts on time: a figure under its target is reported as MISSED. The
//! machine-readable line starts with `bench-mqtt: `.

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/fmt.rs"]
mod fmt;
use fmt::{fmt_int, fmt_rounds};

type Res<T> = Result<T, Box<dyn Error>>;

const ADMIN: &str = "bench-admin-key-0123456789";
/// Messages per round.
const N: usize = 100_000;
const ROUNDS: usize = 3;
/// Bytes of each payload.
const SIZE: usize = 100;
/// The issue's targets: at least this many messages/s, and this fraction
/// of the baseline client's rate.
const TARGET_SINK: f64 = 20_000.0;
const TARGET_RATIO: f64 = 0.5;

fn main() -> Res<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target)?;
    let tmp = tempfile::Builder::new()
        .prefix("mqtt-bench-")
        .tempdir_in(&target)?;
    let broker = Broker::start(tmp.path())?;
    let srv = BenchServer::start(tmp.path())?;
    let key = srv.create_store("bench")?;
    let lines = payloads();

    println!("== environment");
    println!(
        "cpus: {}; load average: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "server: {} (pid {}); mosquitto on 127.0.0.1:{}",
        srv.addr,
        srv.child.id(),
        broker.port
    );
    println!(
        "workload: {N} json objects of {SIZE} bytes, e.g. {}",
        lines[7]
    );
    insert(&srv.socket, &key, &lines)?;

    println!("== sink, QoS 1, window 64");
    let mut sink = Vec::new();
    for round in 0..ROUNDS {
        let rate = sink_round(&srv, &broker, round)?;
        println!("round {}: {} msg/s", round + 1, fmt_int(rate));
        sink.push(rate);
    }
    println!("== baseline: mosquitto_pub -q 1 -l");
    let mut base = Vec::new();
    for round in 0..ROUNDS {
        let rate = baseline_round(&broker, &lines)?;
        println!("round {}: {} msg/s", round + 1, fmt_int(rate));
        base.push(rate);
    }
    let (s, b) = (median(&sink), median(&base));
    let ratio = s / b;
    println!("== summary");
    println!(
        "sink QoS 1: {} msg/s (rounds {}), target {}: {}",
        fmt_int(s),
        fmt_rounds(&sink, ", "),
        fmt_int(TARGET_SINK),
        if s >= TARGET_SINK { "met" } else { "MISSED" }
    );
    println!(
        "mosquitto_pub QoS 1: {} msg/s (rounds {}); sink/baseline {ratio:.2}, target {TARGET_RATIO}: {}",
        fmt_int(b),
        fmt_rounds(&base, ", "),
        if ratio >= TARGET_RATIO { "met" } else { "MISSED" }
    );
    println!(
        "bench-mqtt: sink_qos1={:.0} mosquitto_pub_qos1={:.0} sink_ratio={ratio:.2}",
        s, b
    );
    Ok(())
}

/// `N` JSON lines of exactly `SIZE` bytes each.
fn payloads() -> Vec<String> {
    (0..N)
        .map(|i| {
            let head = format!(r#"{{"n":{i},"sensor":"bench","v":""#);
            let pad = SIZE - head.len() - 2;
            format!("{head}{}\"}}", "x".repeat(pad))
        })
        .collect()
}

/// Writes `lines` to the store through the Unix socket (pipelined).
fn insert(socket: &Path, key: &str, lines: &[String]) -> Res<()> {
    let s = UnixStream::connect(socket)?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    writeln!(w, "AUTH bench {key}")?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.trim() != "OK" {
        return Err(format!("AUTH: {line}").into());
    }
    let all: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let writer = std::thread::spawn(move || w.write_all(all.as_bytes()));
    for _ in 0..lines.len() {
        line.clear();
        r.read_line(&mut line)?;
        if !line.starts_with("OK ") {
            return Err(format!("insert: {line}").into());
        }
    }
    writer.join().map_err(|_| "writer panicked")??;
    Ok(())
}

fn sink_round(srv: &BenchServer, broker: &Broker, round: usize) -> Res<f64> {
    let body = format!(
        r#"{{"broker_url":"tcp://127.0.0.1:{}","topic":"bench/sink{round}"}}"#,
        broker.port
    );
    let t = Instant::now();
    let created = srv.request("POST", "/api/stores/bench/mqtt/connections", &body)?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| format!("create: {created}"))?
        .to_string();
    let path = format!("/api/stores/bench/mqtt/connections/{id}");
    let elapsed = loop {
        let v = srv.request("GET", &path, "")?;
        if v["messages_sent"].as_u64() >= Some(N as u64) {
            break t.elapsed();
        }
        if t.elapsed() > Duration::from_secs(300) {
            return Err(format!("sink did not finish: {v}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    srv.request("DELETE", &path, "")?;
    Ok(N as f64 / elapsed.as_secs_f64())
}

fn baseline_round(broker: &Broker, lines: &[String]) -> Res<f64> {
    let all: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let t = Instant::now();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-q", "1", "-t", "bench/base", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("mosquitto_pub (package mosquitto-clients): {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(all.as_bytes()));
    writer.join().map_err(|_| "writer panicked")??;
    let st = child.wait()?;
    if !st.success() {
        return Err(format!("mosquitto_pub: {st}").into());
    }
    Ok(lines.len() as f64 / t.elapsed().as_secs_f64())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// Debian's mosquitto on a free loopback port; killed when dropped.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(dir: &Path) -> Res<Broker> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.join("mosquitto.conf");
        // `user root`: started as root it would switch to `mosquitto`,
        // which cannot use this directory (ignored when not root).
        std::fs::write(
            &conf,
            format!(
                "user root\nallow_anonymous true\nmax_inflight_messages 0\n\
                 max_queued_messages 1000000\nlistener {port} 127.0.0.1\n"
            ),
        )?;
        let bin = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("mosquitto (make setup-mqtt): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("mosquitto did not listen".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Broker { child, port })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct BenchServer {
    child: Child,
    addr: SocketAddr,
    socket: PathBuf,
}

impl BenchServer {
    fn start(dir: &Path) -> Res<BenchServer> {
        let socket = dir.join("tsstore.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsstore"));
        for (k, _) in std::env::vars() {
            if k.starts_with("TSSTORE_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .current_dir(dir)
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--socket"])
            .arg(&socket)
            .arg("--data-path")
            .arg(dir.join("data"))
            .env("TSSTORE_ADMIN_KEY", ADMIN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                return Err("server exited before it started".into());
            };
            let line = line?;
            if let Some(i) = line.find("Starting tsstore server on ") {
                let rest = &line[i + "Starting tsstore server on ".len()..];
                break rest
                    .split_whitespace()
                    .next()
                    .ok_or("no address")?
                    .parse()?;
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(BenchServer {
            child,
            addr,
            socket,
        })
    }

    /// One request with the admin key (which may dial loopback); the JSON
    /// answer.
    fn request(&self, method: &str, path: &str, body: &str) -> Res<serde_json::Value> {
        let mut tcp = TcpStream::connect(self.addr)?;
        write!(
            tcp,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nX-Admin-Key: {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut resp = String::new();
        tcp.read_to_string(&mut resp)?;
        let json = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(json).map_err(|e| format!("{method} {path}: {e}: {resp}").into())
    }

    /// Creates a json store; returns its API key.
    fn create_store(&self, name: &str) -> Res<String> {
        let v = self.request(
            "POST",
            "/api/stores",
            &format!(r#"{{"name":"{name}","data_type":"json","num_blocks":16384}}"#),
        )?;
        Ok(v["api_key"]
            .as_str()
            .ok_or_else(|| format!("create store: {v}"))?
            .to_string())
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
