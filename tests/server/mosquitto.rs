//! A real MQTT broker for the tests: Debian's `mosquitto`, started on a
//! free loopback port with a configuration generated here (never the
//! system service), optionally with users (a password file made by
//! `mosquitto_passwd`) and a TLS listener (a test CA from `test_cert`).
//! Its clients, `mosquitto_pub` and `mosquitto_sub`, are the independent
//! peer of the tests. `.ci/run` and `make setup-mqtt` install both.
//!
//! The broker persists its sessions and queued QoS 1 messages in its
//! directory, so that [`Mosquitto::restart`] after [`Mosquitto::stop`]
//! keeps them (mosquitto writes them at a clean stop; a kill loses what it
//! had not written, as a real broker would).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::common::{test_cert, TestCert};

/// The broker binary (Debian puts it in /usr/sbin, not always on PATH).
fn mosquitto_bin() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How to start a broker.
#[derive(Default)]
pub struct Builder {
    users: Vec<(String, String)>,
    tls: bool,
    max_packet: Option<usize>,
}

impl Builder {
    /// Requires a login: only these users (no anonymous clients).
    pub fn user(mut self, name: &str, password: &str) -> Builder {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Adds a TLS listener with a certificate for `localhost` and
    /// 127.0.0.1 signed by a test CA ([`Mosquitto::ca`]).
    pub fn tls(mut self) -> Builder {
        self.tls = true;
        self
    }

    /// Closes the connection of a client that sends a packet larger than
    /// `bytes` (2000000 by default).
    pub fn max_packet(mut self, bytes: usize) -> Builder {
        self.max_packet = Some(bytes);
        self
    }

    pub fn start(self) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tls_port = self.tls.then(free_port);
        let cert = self
            .tls
            .then(|| test_cert(dir.path()).expect("openssl is needed for the TLS broker"));
        // Started as root, mosquitto switches to the user `mosquitto`,
        // which cannot read or write this (root's, 0700) directory: its
        // log, persistence and TLS key would silently fail. `user` is
        // ignored when not run as root.
        let mut conf = format!(
            "user root\n\
             per_listener_settings false\n\
             persistence true\n\
             persistence_location {}/\n\
             autosave_interval 1\n\
             max_queued_messages 1000000\n\
             max_inflight_messages 0\n\
             max_packet_size {}\n\
             log_dest file {}\n\
             log_type error\nlog_type warning\nlog_type notice\n\
             listener {port} 127.0.0.1\n",
            dir.path().display(),
            self.max_packet.unwrap_or(2_000_000),
            dir.path().join("mosquitto.log").display(),
        );
        if self.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let file = dir.path().join("passwd");
            std::fs::write(&file, "").unwrap();
            for (u, p) in &self.users {
                let out = Command::new("mosquitto_passwd")
                    .arg("-b")
                    .arg(&file)
                    .args([u, p])
                    .output()
                    .expect("mosquitto_passwd (package mosquitto) is needed");
                assert!(out.status.success(), "mosquitto_passwd: {out:?}");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                file.display()
            ));
        }
        if let (Some(p), Some(c)) = (tls_port, &cert) {
            conf.push_str(&format!(
                "listener {p} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                c.root.display(),
                c.cert.display(),
                c.key.display()
            ));
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut m = Mosquitto {
            child: None,
            dir,
            conf: conf_path,
            port,
            tls_port,
            cert,
            users: self.users,
        };
        m.launch();
        m
    }
}

/// A running broker; killed when dropped.
pub struct Mosquitto {
    child: Option<Child>,
    dir: TempDir,
    conf: PathBuf,
    pub port: u16,
    pub tls_port: Option<u16>,
    cert: Option<TestCert>,
    users: Vec<(String, String)>,
}

impl Mosquitto {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A plain broker that lets anyone in.
    pub fn start() -> Mosquitto {
        Builder::default().start()
    }

    /// `tcp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// `ssl://localhost:<tls port>` (the certificate's name).
    pub fn ssl_url(&self) -> String {
        format!("ssl://localhost:{}", self.tls_port.expect("a TLS broker"))
    }

    /// The test CA's certificate (PEM) of a TLS broker.
    pub fn ca(&self) -> &Path {
        &self.cert.as_ref().expect("a TLS broker").root
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn launch(&mut self) {
        // This broker logs each connection it accepts, with its port.
        let accepted = |m: &Mosquitto, p: u16| m.log().matches(&format!(" on port {p}.")).count();
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        let before: Vec<usize> = ports.iter().map(|&p| accepted(self, p)).collect();
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto) is needed: make setup-mqtt");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for (&p, &before) in ports.iter().zip(&before) {
            // A port another test's broker took meanwhile answers too
            // (while this one fails to bind and exits): wait until this
            // broker's log shows the connection on its plain port. It logs
            // that only once every listener is bound, so the TLS port
            // (whose probes it logs as failed handshakes, not connections)
            // is then its own.
            let plain = p == self.port;
            while TcpStream::connect(("127.0.0.1", p)).is_err()
                || plain && {
                    std::thread::sleep(Duration::from_millis(20));
                    accepted(self, p) == before
                }
            {
                if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("mosquitto exited ({st}): {}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not listen on {p}: {}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn signal_and_wait(&mut self, sig: &str) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Stops the broker cleanly (it saves its sessions and queues).
    pub fn stop(&mut self) {
        self.signal_and_wait("-TERM");
    }

    /// Kills the broker (`kill -9`): what it had not saved is gone.
    pub fn kill(&mut self) {
        self.signal_and_wait("-KILL");
    }

    /// Starts the broker again on the same ports and files.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill it first");
        self.launch();
    }

    /// The common arguments of the command-line clients.
    fn client_args(&self, user: Option<(&str, &str)>) -> Vec<String> {
        let mut a = vec![
            "-h".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ];
        let user = user.or_else(|| self.users.first().map(|(u, p)| (u.as_str(), p.as_str())));
        if let Some((u, p)) = user {
            a.extend(["-u".into(), u.into(), "-P".into(), p.into()]);
        }
        a
    }

    /// Publishes `payload` to `topic` with `mosquitto_pub` (QoS `qos`).
    pub fn publish(&self, topic: &str, payload: &[u8], qos: u8) {
        let file = self.dir.path().join(format!("payload-{}", free_port()));
        std::fs::write(&file, payload).unwrap();
        let out = Command::new("mosquitto_pub")
            .args(self.client_args(None))
            .args(["-q", &qos.to_string(), "-t", topic, "-f"])
            .arg(&file)
            .output()
            .expect("mosquitto_pub (package mosquitto-clients) is needed");
        let _ = std::fs::remove_file(&file);
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }

    /// Subscribes to `filter` with `mosquitto_sub` (QoS 1, `-v`: each line
    /// is `<topic> <payload>`), returning once the subscription is in
    /// place.
    pub fn subscribe(&self, filter: &str) -> Subscriber {
        self.subscribe_with(filter, &[])
    }

    /// As [`Mosquitto::subscribe`], with a persistent session under
    /// `client_id` (`-c`): the broker keeps the subscription and queues
    /// QoS 1 messages while the client is away (a broker restart included),
    /// and `mosquitto_sub` reconnects by itself.
    pub fn subscribe_persistent(&self, filter: &str, client_id: &str) -> Subscriber {
        self.subscribe_with(filter, &["-c", "-i", client_id])
    }

    fn subscribe_with(&self, filter: &str, extra: &[&str]) -> Subscriber {
        // Line-buffered: a pipe would hold its lines until it exits.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args(self.client_args(None))
            .args(extra)
            .args(["-q", "1", "-v", "-t", filter, "-d"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (package mosquitto-clients) is needed");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // `-d` prints the SUBACK line once subscribed.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("mosquitto_sub did not subscribe");
            if line.contains("SUBACK") {
                break;
            }
        }
        Subscriber { child, rx }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `mosquitto_sub` running; killed when dropped.
pub struct Subscriber {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Subscriber {
    /// The next `(topic, payload)` received, waiting up to `within`.
    /// Lines of the client's own debug output are skipped.
    pub fn next(&self, within: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.rx.recv_timeout(left).ok()?;
            if line.starts_with("Client ") || line.starts_with("Subscribed (mid") {
                continue;
            }
            let (t, p) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            return Some((t.to_string(), p.to_string()));
        }
    }

    /// Up to `n` messages, stopping at `n` or when none arrives for `quiet`.
    #[allow(dead_code)] // The sink's tests use it; not every branch has them.
    pub fn take(&self, n: usize, quiet: Duration) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next(quiet) {
                Some(m) => out.push(m),
                None => break,
            }
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_broker_carries_a_message_between_its_clients() {
    let m = Mosquitto::start();
    let sub = m.subscribe("t/#");
    m.publish("t/a", b"hello", 1);
    assert_eq!(
        sub.next(Duration::from_secs(10)),
        Some(("t/a".to_string(), "hello".to_string()))
    );
}

#[test]
fn a_broker_with_users_refuses_a_wrong_password() {
    let m = Mosquitto::builder().user("u", "right").start();
    let out = Command::new("mosquitto_pub")
        .args(m.client_args(Some(("u", "wrong"))))
        .args(["-t", "t", "-m", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    m.publish("t", b"x", 1);
}
