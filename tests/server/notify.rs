//! systemd integration: the real binary's `sd_notify` messages (READY=1
//! with every listener up, WATCHDOG=1 at half of `WATCHDOG_USEC`,
//! STOPPING=1 on SIGTERM) received on a datagram socket of the test, and
//! the packaged unit and config (`packaging/systemd/`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::Server;

/// A datagram socket standing in for systemd's notification socket.
pub(super) struct Manager {
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
    pub(super) path: PathBuf,
}

impl Manager {
    pub(super) fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        Manager {
            sock,
            _dir: dir,
            path,
        }
    }

    /// Fills the receive queue with [`FILLER`] datagrams until a sender
    /// blocks on it. Each comes from a fresh socket, so that the limit hit
    /// is the queue's (`net.unix.max_dgram_qlen`), not a sender's buffer.
    fn fill(&self) {
        for _ in 0..100_000 {
            let s = UnixDatagram::unbound().unwrap();
            s.set_nonblocking(true).unwrap();
            match s.send_to(FILLER.as_bytes(), &self.path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("filling the notify socket: {e}"),
            }
        }
        panic!("the notify socket's queue never filled");
    }

    /// The next message, or `None` after `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Every message within `window`.
    pub(super) fn collect(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.recv(left) {
                Some(m) => out.push(m),
                None => return out,
            }
        }
    }

    /// Waits (up to 10 s) for a message holding `state`, skipping others.
    pub(super) fn wait_for(&self, state: &str) -> Vec<String> {
        let end = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while let Some(m) = self.recv(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ) {
            let hit = has(&m, state);
            seen.push(m);
            if hit {
                return seen;
            }
        }
        panic!("no {state} within 10 s; received {seen:?}");
    }
}

/// Whether the message carries `state` as one of its lines.
fn has(msg: &str, state: &str) -> bool {
    msg.lines().any(|l| l == state)
}

fn count(msgs: &[String], state: &str) -> usize {
    msgs.iter().filter(|m| has(m, state)).count()
}

/// Filler datagrams of [`Manager::fill`].
const FILLER: &str = "FILLER";

#[test]
fn ready_once_every_listener_is_up() {
    let m = Manager::new();
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("tsstore.sock");
    // With the queue full the server's (blocking) READY=1 send waits until
    // the test reads: sent before a listener is bound, it would stall the
    // start-up before the "Starting tsstore server on" line and `start`
    // would fail.
    m.fill();
    let srv = Server::builder()
        .socket(&socket)
        .env("NOTIFY_SOCKET", m.path.to_str().unwrap())
        .start();
    let seen: Vec<String> = m
        .wait_for("READY=1")
        .into_iter()
        .filter(|s| s != FILLER)
        .collect();
    assert_eq!(seen, ["READY=1"], "READY=1 must be the first message");
    assert_eq!(srv.get("/health").send().status, 200);
    std::os::unix::net::UnixStream::connect(&socket).expect("unix socket up at READY=1");
    // Without WATCHDOG_USEC there is nothing more to say.
    let more = m.collect(Duration::from_millis(500));
    assert!(more.is_empty(), "unexpected messages: {more:?}");
}

#[test]
fn abstract_notify_socket() {
    let name = format!("tsstore-test-notify-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    let _srv = Server::builder()
        .env("NOTIFY_SOCKET", &format!("@{name}"))
        .start();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 on the abstract socket");
    assert_eq!(&buf[..n], b"READY=1");
}

#[test]
fn watchdog_pings_at_half_the_interval() {
    let m = Manager::new();
    let _srv = Server::builder()
        .env("NOTIFY_SOCKET", m.path.to_str().unwrap())
        .env("WATCHDOG_USEC", "200000")
        .start();
    m.wait_for("READY=1");
    let msgs = m.collect(Duration::from_secs(1));
    let pings = count(&msgs, "WATCHDOG=1");
    // Every 100 ms: about 10; at least 3 even on a loaded machine.
    assert!(pings >= 3, "{pings} WATCHDOG=1 in 1 s: {msgs:?}");
}

#[test]
fn watchdog_for_another_pid_is_ignored() {
    let m = Manager::new();
    let _srv = Server::builder()
        .env("NOTIFY_SOCKET", m.path.to_str().unwrap())
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .start();
    m.wait_for("READY=1");
    let msgs = m.collect(Duration::from_millis(600));
    assert_eq!(count(&msgs, "WATCHDOG=1"), 0, "{msgs:?}");
}

#[test]
fn stopping_on_sigterm() {
    let m = Manager::new();
    let mut srv = Server::builder()
        .env("NOTIFY_SOCKET", m.path.to_str().unwrap())
        .start();
    m.wait_for("READY=1");
    assert!(m.collect(Duration::from_millis(200)).is_empty());
    let status = srv.stop();
    assert!(status.success(), "exit: {status:?}");
    let msgs = m.collect(Duration::from_millis(500));
    assert_eq!(msgs, ["STOPPING=1"]);
}

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd")
}

/// The "Overall exposure level for X: 1.2 OK" figure.
fn exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    line.rsplit(':')
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn exposure_parses_systemd_analyze_output() {
    let out = "✗ UMask= ...  0.1\n\n→ Overall exposure level for tsstore.service: 1.1 OK 🙂\n";
    assert_eq!(exposure(out), Some(1.1));
    assert_eq!(exposure("nothing here"), None);
}

#[test]
fn unit_hardening_score_at_most_2() {
    let unit = packaging().join("tsstore.service");
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("skipped: systemd-analyze cannot run here ({e})");
            return;
        }
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let score = exposure(&text).unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

#[test]
fn packaged_config_is_accepted() {
    let text = std::fs::read_to_string(packaging().join("config.json")).unwrap();
    let mut cfg: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(cfg["store"]["base_path"], "/var/lib/tsstore");
    assert_eq!(cfg["server"]["socket_path"], "/run/tsstore/tsstore.sock");
    assert_eq!(cfg["server"]["port"], 21080);
    // The same file with its paths moved into a temp dir (the port and host
    // are the test's: --port 0 --host 127.0.0.1).
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("lib");
    let socket = work.path().join("run/tsstore.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    cfg["store"]["base_path"] = data.to_str().unwrap().into();
    cfg["server"]["socket_path"] = socket.to_str().unwrap().into();
    let srv = Server::builder()
        .data_dir(&data)
        .socket_unset()
        .config(&cfg.to_string())
        .start();
    assert_eq!(srv.get("/health").send().status, 200);
    std::os::unix::net::UnixStream::connect(&socket).expect("socket from config.json");
    let log = srv.log();
    assert!(!log.contains("unknown key"), "{log}");
}
