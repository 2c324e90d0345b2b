//! The `tsstore` server a bench runs against: the binary cargo built for
//! the bench profile, started as `serve` on an ephemeral loopback port
//! with its data in the bench's directory, killed and reaped on drop (also
//! on an error or a panic). Each bench uses what it needs.
#![allow(dead_code)]

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The server's admin key (it wants at least 20 characters).
pub const ADMIN: &str = "bench-admin-key-0123456789";

/// How long the server may take to print its address, and to exit after
/// SIGTERM.
const STARTUP: Duration = Duration::from_secs(20);
const SHUTDOWN: Duration = Duration::from_secs(20);

/// A running `tsstore serve`.
pub struct BenchServer {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl BenchServer {
    /// Starts `bin serve` in `dir` (data under `dir/data`) on an ephemeral
    /// loopback port, with the Unix socket at `socket` or none, the admin
    /// key [`ADMIN`] and `env` added to an environment without any
    /// `TSSTORE_*` variable of the caller's; returns once it printed
    /// `Starting tsstore server on <addr>`. Its log is drained (and kept)
    /// for its whole life, so that it never blocks on a full pipe.
    pub fn start(
        bin: &Path,
        dir: &Path,
        socket: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Res<BenchServer> {
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TSSTORE_") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(dir)
            .args(["serve", "--host", "127.0.0.1", "--port", "0"]);
        match socket {
            Some(path) => cmd.arg("--socket").arg(path),
            None => cmd.arg("--no-socket"),
        };
        let mut child = cmd
            .arg("--data-path")
            .arg(dir.join("data"))
            .env("TSSTORE_ADMIN_KEY", ADMIN)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
                let _ = tx.send(line);
            }
        });
        // From here on, an early return kills and reaps the child.
        let mut server = BenchServer {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let log = server.log();
                return Err(format!("the server did not start; log:\n{log}").into());
            };
            let line = strip_ansi(&line);
            if let Some((_, rest)) = line.split_once("Starting tsstore server on ") {
                let addr = rest.split_whitespace().next().ok_or("no address")?;
                server.addr = addr.parse()?;
                return Ok(server);
            }
        }
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGTERM, then waits for the exit (stores synced and closed); the
    /// server is killed if it has not exited within 20 s.
    pub fn stop(&mut self) -> Res<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err("the server was already stopped".into());
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + SHUTDOWN;
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("the server did not stop within 20 s of SIGTERM".into())
    }

    /// One request on a fresh connection (`Connection: close`, a
    /// `Content-Length`, `headers` added), read to the end: the status and
    /// the body.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Res<(u16, String)> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let mut tcp = TcpStream::connect(self.addr)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        tcp.write_all(req.as_bytes())?;
        let mut resp = Vec::new();
        tcp.read_to_end(&mut resp)?;
        let resp = String::from_utf8(resp)?;
        let (head, body) = resp.split_once("\r\n\r\n").ok_or("no response head")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no status")?;
        Ok((status, body.to_string()))
    }

    /// Creates a store from its JSON description with the admin key
    /// (status 201 or an error); returns its API key.
    pub fn create_store(&self, spec: &str) -> Res<String> {
        let (status, resp) = self.exchange(
            "POST",
            "/api/stores",
            &[("X-Admin-Key", ADMIN), ("Content-Type", "application/json")],
            spec,
        )?;
        if status != 201 {
            return Err(format!("create store: {status} {resp}").into());
        }
        let v: serde_json::Value =
            serde_json::from_str(&resp).map_err(|e| format!("create store: {e}: {resp}"))?;
        Ok(v["api_key"]
            .as_str()
            .ok_or_else(|| format!("create store: no api_key in {resp}"))?
            .to_string())
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The description of a json store of 16,384 blocks of 4 KiB (64 MiB).
pub fn json_store(name: &str) -> String {
    format!(r#"{{"name":"{name}","data_type":"json","num_blocks":16384}}"#)
}

/// `s` without its ANSI escape sequences (CSI: ESC [ parameters, ended by
/// a letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
