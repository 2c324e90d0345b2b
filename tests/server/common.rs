//! Helpers of the server tests: start the real `tsstore` binary on an
//! ephemeral loopback port with a temp data dir, speak HTTP/1.1 (or HTTPS
//! through rustls) to it over a plain `TcpStream`, stop it with SIGTERM.
//! Tests of HTTP routes that need no process (no signal, log, exit status
//! or restart) serve the same router in this process instead
//! ([`Server::in_process`]): the library's `app::serve` on a port of its
//! own, stopped through its shutdown future.
//!
//! No HTTP client crate: requests are written by hand with
//! `Connection: close`, and responses are read by `Content-Length` or
//! chunked framing, which is all the server sends.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The admin key every test server gets (at least 20 characters).
pub const ADMIN: &str = "test-admin-key-0123456789";

/// Environment variables the binary reads; removed from every child so the
/// developer's environment cannot leak into a test.
const TSSTORE_VARS: &[&str] = &[
    "TSSTORE_ADMIN_KEY",
    "TSSTORE_ADMIN_KEY_FILE",
    "TSSTORE_AUTH_LIMIT_BURST",
    "TSSTORE_AUTH_LIMIT_WINDOW_SECONDS",
    "TSSTORE_CONFIG",
    "TSSTORE_DATA_PATH",
    "TSSTORE_HEADER_TIMEOUT_SECONDS",
    "TSSTORE_HOST",
    "TSSTORE_IDLE_TIMEOUT_SECONDS",
    "TSSTORE_LOG",
    "TSSTORE_MAX_CONNECTIONS",
    "TSSTORE_MAX_FUTURE",
    "TSSTORE_MODE",
    "TSSTORE_PORT",
    "TSSTORE_SOCKET_PATH",
    "TSSTORE_TLS_CERT",
    "TSSTORE_TLS_KEY",
    // systemd's: a test run under a unit must not notify that unit.
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tsstore")
}

/// A `tsstore` command with a clean environment, run in `cwd` (so no stray
/// `./config.json` is picked up).
pub fn command(cwd: &Path) -> Command {
    let mut c = crate::runner::command(bin());
    for v in TSSTORE_VARS {
        c.env_remove(v);
    }
    c.current_dir(cwd);
    c
}

/// Runs the CLI to completion.
pub fn cli(cwd: &Path, args: &[&str]) -> Output {
    command(cwd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tsstore")
}

/// Unix nanoseconds now (the test's clock, the same as the server's).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// The Unix socket of a test server.
#[derive(Clone, Debug)]
enum Socket {
    /// `--no-socket` (the default: tests must not touch `/var/run`).
    Off,
    /// `--socket <path>`.
    At(PathBuf),
    /// Neither flag: the environment or the config file decides.
    Unset,
}

/// How to start a server.
pub struct ServerBuilder {
    data: Option<PathBuf>,
    admin: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    config: Option<String>,
    socket: Socket,
}

impl ServerBuilder {
    /// Serve this data dir instead of a fresh temp one.
    pub fn data_dir(mut self, p: &Path) -> Self {
        self.data = Some(p.to_path_buf());
        self
    }

    /// The admin key (`None`: `TSSTORE_ADMIN_KEY` unset).
    pub fn admin(mut self, k: Option<&str>) -> Self {
        self.admin = k.map(str::to_string);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    /// Serves the Unix socket at `p` (`--socket p`) instead of passing
    /// `--no-socket`.
    pub fn socket(mut self, p: &Path) -> Self {
        self.socket = Socket::At(p.to_path_buf());
        self
    }

    /// Passes neither `--socket` nor `--no-socket`: the socket path comes
    /// from the environment or the config file (give one: the default is
    /// `/var/run/tsstore/tsstore.sock`).
    pub fn socket_unset(mut self) -> Self {
        self.socket = Socket::Unset;
        self
    }

    /// Writes this text as `config.json` and points `TSSTORE_CONFIG` at it.
    pub fn config(mut self, json: &str) -> Self {
        self.config = Some(json.into());
        self
    }

    fn spawn(
        self,
    ) -> (
        Child,
        tempfile::TempDir,
        PathBuf,
        Arc<Mutex<String>>,
        mpsc::Receiver<String>,
    ) {
        let work = tempfile::tempdir().unwrap();
        let data = self.data.unwrap_or_else(|| work.path().join("data"));
        let mut c = command(work.path());
        c.args(["serve", "--host", "127.0.0.1", "--port", "0"]);
        match &self.socket {
            Socket::Off => {
                c.arg("--no-socket");
            }
            Socket::At(p) => {
                c.arg("--socket").arg(p);
            }
            Socket::Unset => {}
        }
        c.arg("--data-path").arg(&data).args(&self.args);
        if let Some(k) = &self.admin {
            c.env("TSSTORE_ADMIN_KEY", k);
        }
        if let Some(cfg) = &self.config {
            let p = work.path().join("config.json");
            std::fs::write(&p, cfg).unwrap();
            c.env("TSSTORE_CONFIG", &p);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tsstore serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        (child, work, data, log, rx)
    }

    /// Starts the server and waits for its `Starting tsstore server on`
    /// line (the socket, if any, is bound before it). Panics (with the
    /// log) if it exits first.
    pub fn start(self) -> Server {
        let socket = match &self.socket {
            Socket::At(p) => Some(p.clone()),
            _ => None,
        };
        let (child, work, data, log, rx) = self.spawn();
        let mut srv = Server {
            child: Some(child),
            in_process: None,
            work,
            data,
            log,
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let line = strip_ansi(&line);
                    if let Some(i) = line.find("Starting tsstore server on ") {
                        let rest = &line[i + "Starting tsstore server on ".len()..];
                        let addr = rest.split_whitespace().next().unwrap();
                        srv.addr = addr.parse().expect("server address");
                        if rest.contains("(HTTPS)") {
                            srv.tls = Some(TlsClient::default());
                        }
                        return srv;
                    }
                }
                Err(_) => {
                    let status = srv.child.as_mut().unwrap().try_wait().unwrap();
                    panic!(
                        "server did not start (exit: {status:?}); log:\n{}",
                        srv.log()
                    );
                }
            }
        }
    }

    /// Runs a server that is expected to refuse to start: its exit status
    /// and its whole stderr.
    pub fn fail(self) -> (ExitStatus, String) {
        let (mut child, _work, _data, log, rx) = self.spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // The reader thread hangs up at the pipe's end: then the
                // log is whole. (A fixed 50 ms sleep here lost the whole
                // log of startup_tls_errors_are_clear under load.)
                while Instant::now() < deadline {
                    match rx.recv_timeout(Duration::from_millis(100)) {
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    }
                }
                let text = log.lock().unwrap().clone();
                return (status, strip_ansi(&text));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server kept running; log:\n{}", log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes ANSI escape sequences (the log has them only on a tty).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                for c in it.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The library's server running in this process, on a runtime of its own.
struct InProcess {
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Triggers the shutdown and waits (up to 15 s) for `serve` to close
    /// every store.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let r = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(15), served).await });
            match r {
                Ok(Ok(Ok(()))) => {}
                r if std::thread::panicking() => eprintln!("in-process server: {r:?}"),
                r => panic!("in-process server did not stop cleanly: {r:?}"),
            }
        }
    }
}

/// A running `tsstore serve`; SIGTERM and wait on drop. Or the same
/// server in this process ([`Server::in_process`]); stopped on drop.
pub struct Server {
    child: Option<Child>,
    in_process: Option<InProcess>,
    work: tempfile::TempDir,
    data: PathBuf,
    log: Arc<Mutex<String>>,
    pub addr: SocketAddr,
    tls: Option<TlsClient>,
    socket: Option<PathBuf>,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            data: None,
            admin: Some(ADMIN.into()),
            env: Vec::new(),
            args: Vec::new(),
            config: None,
            socket: Socket::Off,
        }
    }

    /// The Unix socket path given with [`ServerBuilder::socket`].
    pub fn socket(&self) -> &Path {
        self.socket
            .as_deref()
            .expect("server started without --socket")
    }

    /// A server with the test admin key on a fresh data dir.
    pub fn start() -> Server {
        Server::builder().start()
    }

    /// What [`Server::start`] serves, in this process: the configuration
    /// the binary would load from the same flags and admin key, its state,
    /// started and served by `app::start` and `app::serve` on 127.0.0.1
    /// port 0. No log, pid or signals: a test that needs them starts the
    /// binary.
    pub fn in_process() -> Server {
        use tsstore::config::{Config, Flags};
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let flags = Flags {
            host: Some("127.0.0.1".into()),
            port: Some(0),
            data_path: Some(data.clone()),
            no_socket: true,
            ..Flags::default()
        };
        let env = |k: &str| (k == "TSSTORE_ADMIN_KEY").then(|| ADMIN.to_string());
        let config = Config::load(&flags, &env).expect("test configuration");
        config.validate_for_serve().expect("test configuration");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, served) = rt.block_on(async move {
            let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = http.local_addr().unwrap();
            let state = tsstore::state::AppState::new(config);
            tsstore::app::start(&state, addr.port()).await;
            let listeners = tsstore::app::Listeners {
                http,
                socket: None,
                tls: None,
            };
            let shutdown = async move {
                let _ = stopped.await;
            };
            let served = tokio::spawn(tsstore::app::serve(listeners, state, shutdown));
            (addr, served)
        });
        Server {
            child: None,
            in_process: Some(InProcess {
                rt,
                stop: Some(stop),
                served: Some(served),
            }),
            work,
            data,
            log: Arc::new(Mutex::new(String::new())),
            addr,
            tls: None,
            socket: None,
        }
    }

    /// The data dir it serves.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// A scratch dir that lives as long as the server.
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// Everything the server logged so far (ANSI codes removed).
    pub fn log(&self) -> String {
        strip_ansi(&self.log.lock().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits (up to 15 s) for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        signal(self.pid(), "TERM");
        self.wait_exit()
    }

    /// Waits (up to 15 s) for the server to exit by itself (after a signal
    /// the test sent).
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(Duration::from_secs(15))
    }

    /// Waits up to `limit` for the server to exit by itself; past it, kills
    /// it and fails the test.
    pub fn wait_exit_within(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server ignored SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a request to `path` (which may carry a query string).
    pub fn req(&self, method: &str, path: &str) -> Req {
        Req {
            addr: self.addr,
            tls: self.tls.clone(),
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: None,
            source: None,
        }
    }

    pub fn get(&self, path: &str) -> Req {
        self.req("GET", path)
    }

    pub fn post(&self, path: &str) -> Req {
        self.req("POST", path)
    }

    pub fn put(&self, path: &str) -> Req {
        self.req("PUT", path)
    }

    pub fn delete(&self, path: &str) -> Req {
        self.req("DELETE", path)
    }

    /// Creates a store through the API with the admin key; panics unless
    /// 201. `extra` is merged into the request body.
    pub fn create_store(&self, name: &str, extra: Value) -> Store {
        let mut body = serde_json::json!({ "name": name });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let r = self.post("/api/stores").admin().json(&body).send();
        assert_eq!(r.status, 201, "create {name}: {}", r.text());
        let v = r.json();
        Store {
            name: name.into(),
            key: v["api_key"].as_str().unwrap().into(),
        }
    }

    /// Creates a small json store (64 blocks of 4 KiB).
    pub fn json_store(&self, name: &str) -> Store {
        self.create_store(name, serde_json::json!({ "num_blocks": 64 }))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut p) = self.in_process.take() {
            p.stop();
            p.rt.shutdown_background();
            return;
        }
        if std::thread::panicking() {
            eprintln!("--- log of the server on {} ---\n{}", self.addr, self.log());
        }
        if let Some(mut child) = self.child.take() {
            try_signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal (`TERM`, `HUP`, ...) to one process by id.
pub fn signal(pid: u32, sig: &str) {
    assert!(try_signal(pid, sig), "kill -{sig} {pid} failed");
}

fn try_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A store created in a test, with its API key.
#[derive(Clone, Debug)]
pub struct Store {
    pub name: String,
    pub key: String,
}

impl Store {
    /// `/api/stores/<name><rest>`.
    pub fn path(&self, rest: &str) -> String {
        format!("/api/stores/{}{rest}", self.name)
    }
}

/// An HTTP request being built.
pub struct Req {
    addr: SocketAddr,
    tls: Option<TlsClient>,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// The local address to connect from (`None`: the system's choice).
    source: Option<std::net::IpAddr>,
}

/// A TCP connection to `addr` from local address `source` (any address of
/// 127.0.0.0/8 is this host's, so a test can be many clients).
pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(source, 0))?;
        sock.connect(addr).await
    })?;
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

impl Req {
    /// Sends from this local address (see [`connect_from`]).
    pub fn from(mut self, source: &str) -> Req {
        self.source = Some(source.parse().expect("an IP address"));
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }

    /// `X-API-Key: key`.
    pub fn key(self, key: &str) -> Req {
        self.header("X-API-Key", key)
    }

    /// `X-Admin-Key` with the test admin key.
    pub fn admin(self) -> Req {
        self.header("X-Admin-Key", ADMIN)
    }

    /// A JSON body with `Content-Type: application/json`.
    pub fn json(self, v: &Value) -> Req {
        self.body("application/json", serde_json::to_vec(v).unwrap())
    }

    /// A body with this content type (empty: no `Content-Type` header).
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
        if !content_type.is_empty() {
            self.headers
                .push(("Content-Type".into(), content_type.into()));
        }
        self.body = Some(body.into());
        self
    }

    /// Sends the request on a new connection and reads the response.
    pub fn send(self) -> Resp {
        let what = format!("{} {} on {}", self.method, self.path, self.addr);
        self.try_send()
            .unwrap_or_else(|e| panic!("{what} failed: {e} ({:?})", e.kind()))
    }

    /// Sends the request and reads the status line and headers only, and
    /// a `Content-Length` body if there is one: for a WebSocket upgrade,
    /// whose 101 answer leaves the connection open.
    pub fn send_head(self) -> Resp {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            self.method, self.path, self.addr
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut tcp = match self.source {
            Some(ip) => connect_from(ip, self.addr).expect("connect"),
            None => TcpStream::connect(self.addr).expect("connect"),
        };
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp.write_all(head.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while find(&buf, b"\r\n\r\n").is_none() {
            match tcp.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => buf.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading the response head: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad response head {text:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .filter(|_| status != 101)
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        tcp.read_exact(&mut body).unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn try_send(self) -> std::io::Result<Resp> {
        let tcp = match self.source {
            Some(ip) => connect_from(ip, self.addr)?,
            None => TcpStream::connect(self.addr)?,
        };
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        tcp.set_nodelay(true)?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.method, self.path, self.addr
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = self.body.unwrap_or_default();
        if !body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(&body);
        match &self.tls {
            None => exchange(tcp, &msg),
            Some(t) => exchange(t.wrap(tcp), &msg),
        }
    }
}

fn exchange<S: Read + Write>(mut s: S, msg: &[u8]) -> std::io::Result<Resp> {
    s.write_all(msg)?;
    s.flush()?;
    read_response(&mut s)
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The `error` of a `{"error": "..."}` body; panics if the body is not
    /// that shape.
    pub fn error(&self) -> String {
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {v}"))
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

/// Reads one response: headers, then a body framed by `Content-Length`,
/// chunked encoding, or the end of the stream.
fn read_response<S: Read>(s: &mut S) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut eof = false;
    let mut fill = |buf: &mut Vec<u8>, eof: &mut bool| -> std::io::Result<()> {
        match s.read(&mut chunk) {
            Ok(0) => *eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A TLS peer that closes without close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => *eof = true,
            // A signal handler somewhere in the test process: socket reads
            // with a timeout are never restarted on Linux (signal(7)).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    };
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if eof {
            return Err(bad("connection closed before the response headers"));
        }
        fill(&mut buf, &mut eof)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let start = head_end + 4;
    let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut pos = start;
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                if eof {
                    return Err(bad("truncated chunk size"));
                }
                fill(&mut buf, &mut eof)?;
            };
            let size_text = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            pos = line_end + 2;
            if size == 0 {
                break;
            }
            while buf.len() < pos + size + 2 {
                if eof {
                    return Err(bad("truncated chunk"));
                }
                fill(&mut buf, &mut eof)?;
            }
            out.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
        out
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        while buf.len() < start + len {
            if eof {
                return Err(bad("truncated body"));
            }
            fill(&mut buf, &mut eof)?;
        }
        buf[start..start + len].to_vec()
    } else {
        while !eof {
            fill(&mut buf, &mut eof)?;
        }
        buf[start..].to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

// ------------------------------------------------------------------ TLS

/// The client side of HTTPS: rustls (already a dependency of the server
/// feature) trusting exactly the test's certificate.
#[derive(Clone, Default)]
pub struct TlsClient {
    config: Option<Arc<rustls::ClientConfig>>,
}

impl TlsClient {
    /// A client that trusts `cert_pem` as its only root.
    pub fn trusting(cert_pem: &Path) -> TlsClient {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(cert_pem).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsClient {
            config: Some(Arc::new(cfg)),
        }
    }

    fn wrap(&self, tcp: TcpStream) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let cfg = self
            .config
            .clone()
            .expect("HTTPS server: call Server::set_tls_client first");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    }
}

impl Server {
    /// Sets the TLS client used for this (HTTPS) server's requests.
    pub fn set_tls_client(&mut self, c: TlsClient) {
        self.tls = Some(c);
    }

    /// True if the server logged that it serves HTTPS.
    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }
}

/// Certificate files made for a test.
pub struct TestCert {
    /// The server's certificate (a leaf for `localhost` and 127.0.0.1).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signed it: the client's only trust anchor.
    pub root: PathBuf,
}

/// Generates a CA and a leaf certificate for `localhost` and 127.0.0.1
/// with the `openssl` CLI, in `dir`. `None` if openssl is not installed.
/// (A CA signs a leaf because webpki refuses a CA certificate used as the
/// server's own.)
pub fn test_cert(dir: &Path) -> Option<TestCert> {
    let c = TestCert {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        root: dir.join("root.pem"),
    };
    let ca_key = dir.join("root.key");
    let ext = dir.join("leaf.ext");
    let csr = dir.join("leaf.csr");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<String>> = vec![
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=tsstore test CA"],
        ]
        .concat()
        .into_iter()
        .map(String::from)
        .chain(["-keyout".into(), p(&ca_key), "-out".into(), p(&c.root)])
        .collect(),
        [&["req"][..], &ec, &["-subj", "/CN=localhost"]]
            .concat()
            .into_iter()
            .map(String::from)
            .chain(["-keyout".into(), p(&c.key), "-out".into(), p(&csr)])
            .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial"]
            .into_iter()
            .map(String::from)
            .chain([
                "-in".into(),
                p(&csr),
                "-CA".into(),
                p(&c.root),
                "-CAkey".into(),
                p(&ca_key),
                "-extfile".into(),
                p(&ext),
                "-out".into(),
                p(&c.cert),
            ])
            .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl").args(&args).output().ok()?;
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(c)
}

/// A server serving HTTPS with a fresh test certificate made in `dir`, its
/// client trusting it; `None` (and a note on stderr) without openssl.
pub fn https_server(dir: &Path, what: &str) -> Option<(Server, TestCert)> {
    let Some(cert) = test_cert(dir) else {
        eprintln!("openssl is not installed: {what} skipped");
        return None;
    };
    let mut srv = Server::builder()
        .env("TSSTORE_TLS_CERT", cert.cert.to_str().unwrap())
        .env("TSSTORE_TLS_KEY", cert.key.to_str().unwrap())
        .start();
    srv.set_tls_client(TlsClient::trusting(&cert.root));
    Some((srv, cert))
}

/// Inserts `{"n": t}` at timestamps `from..from + n` (each must answer 201).
pub fn insert_n(srv: &Server, s: &Store, from: i64, n: i64) {
    for t in from..from + n {
        let body = serde_json::json!({ "timestamp": t, "data": { "n": t } });
        let r = srv.post(&s.path("/data")).key(&s.key).json(&body).send();
        assert_eq!(r.status, 201, "{}", r.text());
    }
}

/// Asserts a stream `data` frame: its keys in the read stream's order, its
/// timestamp and its data.
pub fn assert_data_frame(f: &Value, timestamp: i64, data: &Value) {
    let keys: Vec<&str> = f
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {f}"))
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        ["type", "timestamp", "block_num", "size", "data"],
        "{f}"
    );
    assert_eq!(f["type"], "data", "{f}");
    assert_eq!(f["timestamp"], timestamp, "{f}");
    assert_eq!(&f["data"], data, "{f}");
}

/// Polls `f` every 20 ms until it returns true or `within` has passed.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
