//! WebSocket figures of `make bench` (part of `benches/stream.rs`), against
//! the real binary on loopback:
//! write-stream throughput (acks/s, pipelined with a window of messages in
//! flight) and insert-to-reader latency (a message written on `/ws/write`
//! until a `/ws/read` client receives it, one at a time).
//!
//! The clients run on a single-threaded runtime in this process, so the
//! server keeps the rest of the machine. Nothing asserts on time; a frame
//! that is not the expected ack or data aborts the run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const ADMIN: &str = "bench-admin-key-0123456789";
const WRITE_RUN: Duration = Duration::from_secs(3);
const WINDOW: usize = 1024;
const LIVE_SAMPLES: usize = 2000;

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `tsstore serve` on an ephemeral loopback port; `extra` are
    /// more arguments (`--socket PATH`).
    pub fn start(extra: &[&str]) -> Res<Server> {
        use std::io::BufRead;
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tsstore"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .arg("--data-path")
            .arg(dir.path().join("data"))
            .args(extra)
            .env("TSSTORE_ADMIN_KEY", ADMIN)
            .env_remove("TSSTORE_CONFIG")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().ok_or("server exited before it started")??;
            let line = strip_ansi(&line);
            if let Some(i) = line.find("Starting tsstore server on ") {
                let rest = &line[i + "Starting tsstore server on ".len()..];
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Keep draining the log so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            addr,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Creates a json store; returns its API key.
    pub fn create_store(&self, name: &str, blocks: u32) -> Res<String> {
        let body = format!(r#"{{"name":"{name}","num_blocks":{blocks}}}"#);
        let (status, text) = http(
            &self.addr,
            &format!(
                "POST /api/stores HTTP/1.1\r\nHost: b\r\nX-Admin-Key: {ADMIN}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )?;
        if status != 201 {
            return Err(format!("create store: {status} {text}").into());
        }
        let v: Value = serde_json::from_str(&text)?;
        Ok(v["api_key"].as_str().ok_or("no api_key")?.to_string())
    }

    /// Peak resident memory of the server (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// One HTTP/1.1 exchange with `Connection: close`: status and body.
fn http(addr: &str, request: &str) -> Res<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(request.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("bad response")?;
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((status, body.to_string()))
}

async fn connect(addr: &str, store: &str, stream: &str, key: &str, q: &str) -> Res<Ws> {
    let url = format!("ws://{addr}/api/stores/{store}/ws/{stream}?api_key={key}{q}");
    Ok(tokio_tungstenite::connect_async(url).await?.0)
}

async fn next_json(ws: &mut Ws) -> Res<Value> {
    loop {
        match ws.next().await.ok_or("stream ended")?? {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return Err(format!("unexpected frame {m:?}").into()),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The WebSocket figures.
pub struct WsFigures {
    pub write_acks_per_s: f64,
    pub live_p50_ms: f64,
    pub live_p99_ms: f64,
}

/// Runs both WebSocket measurements against `srv`.
pub fn run(srv: &Server) -> Res<WsFigures> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let key = srv.create_store("wsbench", 65_536)?;
        // Write stream: pipelined, WINDOW messages in flight.
        let mut w = connect(&srv.addr, "wsbench", "write", &key, "").await?;
        let msg = r#"{"data":{"temp":21.5,"sensor":"s-01","seq":1}}"#;
        let (mut sent, mut acked) = (0usize, 0usize);
        let t0 = Instant::now();
        let mut end_sending = false;
        loop {
            while !end_sending && sent - acked < WINDOW {
                w.feed(Message::Text(msg.into())).await?;
                sent += 1;
            }
            w.flush().await?;
            let f = next_json(&mut w).await?;
            if f["type"] != "ack" {
                return Err(format!("write stream answered {f}").into());
            }
            acked += 1;
            if t0.elapsed() >= WRITE_RUN {
                end_sending = true;
            }
            if end_sending && acked == sent {
                break;
            }
        }
        let write_rate = acked as f64 / t0.elapsed().as_secs_f64();
        println!(
            "ws write: {acked} messages acked in {:.2} s = {write_rate:.0} acks/s ({WINDOW} in flight)",
            t0.elapsed().as_secs_f64()
        );

        // Live latency: one message at a time, write to read.
        let mut r = connect(&srv.addr, "wsbench", "read", &key, "").await?;
        let f = next_json(&mut r).await?;
        if f["type"] != "caught_up" {
            return Err(format!("read stream began with {f}").into());
        }
        let mut lat = Vec::with_capacity(LIVE_SAMPLES);
        for i in 0..LIVE_SAMPLES {
            let t = Instant::now();
            w.send(Message::Text(format!(r#"{{"data":{{"i":{i}}}}}"#).into()))
                .await?;
            let f = next_json(&mut r).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            if f["data"]["i"] != i {
                return Err(format!("reader got {f}, wanted i={i}").into());
            }
            let a = next_json(&mut w).await?;
            if a["type"] != "ack" {
                return Err(format!("write stream answered {a}").into());
            }
        }
        lat.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        println!(
            "ws live: insert-to-reader latency over {LIVE_SAMPLES} objects: p50 {p50:.3} ms, p99 {p99:.3} ms"
        );
        Ok(WsFigures {
            write_acks_per_s: write_rate,
            live_p50_ms: p50,
            live_p99_ms: p99,
        })
    })
}
