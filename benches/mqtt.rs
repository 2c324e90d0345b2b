//! `make bench` (`cargo bench --bench mqtt`): MQTT both ways through the
//! real `tsstore` binary (built with the bench profile) and one local
//! mosquitto (Debian's, started here on a free loopback port with a
//! generated configuration), each against a plain client on the same
//! broker in the same run. Every message is 100 bytes of JSON, QoS 1.
//!
//! Sink (`sink_qos1`, baseline `pub_baseline`): a json store holding [`N`]
//! objects, written through the Unix socket before the first round. One
//! round creates a sink (the default window of 64) from the oldest object
//! and times from that POST until its status says every object was
//! acknowledged by the broker (`messages_sent == N`, polled every 5 ms),
//! then deletes it. The baseline round publishes the same [`N`] lines
//! from a plain MQTT 3.1.1 client written here on a `TcpStream` (no
//! library, no store, the same window of [`WINDOW`] unacknowledged),
//! timed from its connect to the last PUBACK: what the broker and the
//! loopback allow at that window. Nobody subscribes: the broker
//! acknowledges and drops, for both.
//!
//! Not `mosquitto_pub -l` (the first baseline): mosquitto 2.0.11
//! disconnects one fed about 35,000 lines "due to out of memory" and the
//! client still exits 0 (so 100,000 lines "published" in one process
//! counted 65,000 messages the broker never took), and each process spends
//! a fixed ~0.2 s at its exit whatever it sent (1,000 lines or 30,000), so
//! in chunks it measures mostly that. `mosquitto_pub --repeat` is
//! lock-step (one message in flight). So that no figure counts messages
//! the broker never took, the broker's
//! `$SYS/broker/publish/messages/received` (refreshed every second) must
//! have grown by at least [`N`] per sink and pub baseline round so far
//! within 10 s of each round's end, or the run fails.
//!
//! Subscription (`sub_qos1`, baseline `sub_baseline`): each round queues
//! [`N`] messages for a persistent session (`clean_session` false) while
//! its client is away, then brings the client back and times the drain:
//! - tsstore: a subscription is created, deleted once the broker
//!   acknowledged it (the session stays at the broker), the messages are
//!   published (not timed), and a subscription with the same `client_id`
//!   is created again; the time runs from that POST to
//!   `messages_stored == N` (polled every 5 ms), into a fresh json store
//!   under the default durability (`interval`), each message acknowledged
//!   after its insert;
//! - baseline: `mosquitto_sub -c -q 1` registers the same kind of session
//!   and leaves (`-E`), the messages are published, and
//!   `mosquitto_sub -c -q 1 -C N` (output to /dev/null) is timed from its
//!   start to its exit (its start and exit cost ~0.04 s of that).
//!
//! The messages a subscription drains are published (untimed) with
//! `mosquitto_pub -q 1 -l` in chunks of [`CHUNK`] lines, one process each,
//! below the size it drops; each chunk's exit 0 then means the broker
//! acknowledged every line, and a lost one would stop the round (the
//! drain never reaches [`N`]).
//!
//! Each figure is the median of [`ROUNDS`] rounds (all printed). Nothing
//! fails on a slow figure: each target is reported as met or MISSED. The
//! last line is machine-readable:
//! `bench-mqtt: sink_qos1=<msg/s> sub_qos1=<msg/s> pub_baseline=<msg/s>
//! sub_baseline=<msg/s> sink_ratio=<x> sub_ratio=<x>`.
//!
//! The broker and the server are killed and reaped when the bench ends,
//! also on an error or a panic (guards dropped while unwinding); Ctrl-C
//! reaches them with the bench as one process group.

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/fmt.rs"]
mod fmt;
use fmt::{fmt_int, fmt_rounds};
#[path = "common/server.rs"]
mod server;
use server::{json_store, BenchServer, ADMIN};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Messages per round.
const N: usize = 100_000;
const ROUNDS: usize = 3;
/// Bytes of each payload.
const SIZE: usize = 100;
/// Lines per `mosquitto_pub -l` process (see the module docs).
const CHUNK: usize = 10_000;
/// Unacknowledged messages the pub baseline allows: the sink's default.
const WINDOW: usize = 64;
/// The issue's targets: at least this many messages/s each way, and this
/// fraction of the baseline client's rate for the sink.
const TARGET_RATE: f64 = 20_000.0;
const TARGET_RATIO: f64 = 0.5;

fn main() -> Res<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target)?;
    let tmp = tempfile::Builder::new()
        .prefix("mqtt-bench-")
        .tempdir_in(&target)?;
    // Dropped in reverse order: the server, the broker, then the directory.
    let broker = Broker::start(tmp.path())?;
    let socket = tmp.path().join("tsstore.sock");
    let srv = BenchServer::start(
        Path::new(env!("CARGO_BIN_EXE_tsstore")),
        tmp.path(),
        Some(&socket),
        &[],
    )?;
    let lines: Vec<String> = (0..N).map(payload).collect();

    println!("== environment");
    println!(
        "cpus: {}; load average: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "server: {} (pid {}); mosquitto on 127.0.0.1:{} (pid {})",
        srv.addr(),
        srv.pid(),
        broker.port,
        broker.child.0.id()
    );
    println!(
        "workload: {N} json messages of {SIZE} bytes per round, e.g. {}",
        lines[7]
    );

    let key = srv.create_store(&json_store("bench"))?;
    insert(&socket, &key, &lines)?;
    // What the broker must have received after each publishing round
    // (more when the sink resent some: at least once).
    let mut expected = broker.received(0)?;
    let mut counted = |what: &str| -> Res<()> {
        expected += N as u64;
        broker
            .received(expected)
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(())
    };

    println!("== sink, QoS 1, window 64");
    let mut sink = Vec::new();
    for round in 0..ROUNDS {
        let rate = sink_round(&srv, &broker, round)?;
        counted("sink")?;
        println!("round {}: {} msg/s", round + 1, fmt_int(rate));
        sink.push(rate);
    }
    println!("== pub baseline: a plain MQTT client in this bench, QoS 1, window {WINDOW}");
    let mut pub_base = Vec::new();
    for round in 0..ROUNDS {
        let rate = pub_baseline_round(&broker, &lines, round)?;
        counted("pub baseline")?;
        println!("round {}: {} msg/s", round + 1, fmt_int(rate));
        pub_base.push(rate);
    }

    println!("== subscription, QoS 1, stored under interval; baseline mosquitto_sub -c -q 1");
    let (mut sub, mut sub_base) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let t = sub_round(&srv, &broker, &lines, round)?;
        let b = sub_baseline_round(&broker, &lines, round)?;
        println!(
            "round {}: tsstore {} msg/s, mosquitto_sub {} msg/s",
            round + 1,
            fmt_int(t),
            fmt_int(b)
        );
        sub.push(t);
        sub_base.push(b);
    }

    let (s, p) = (median(&sink), median(&pub_base));
    let (u, b) = (median(&sub), median(&sub_base));
    let (sink_ratio, sub_ratio) = (s / p, u / b);
    let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
    println!("== summary (medians of {ROUNDS} rounds)");
    println!(
        "sink QoS 1: {} msg/s (rounds {}), target {}: {}",
        fmt_int(s),
        fmt_rounds(&sink, ", "),
        fmt_int(TARGET_RATE),
        verdict(s >= TARGET_RATE)
    );
    println!(
        "plain client QoS 1: {} msg/s (rounds {}); sink/baseline {sink_ratio:.2}, target {TARGET_RATIO}: {}",
        fmt_int(p),
        fmt_rounds(&pub_base, ", "),
        verdict(sink_ratio >= TARGET_RATIO)
    );
    println!(
        "subscription QoS 1 stored: {} msg/s (rounds {}), target {}: {}",
        fmt_int(u),
        fmt_rounds(&sub, ", "),
        fmt_int(TARGET_RATE),
        verdict(u >= TARGET_RATE)
    );
    println!(
        "mosquitto_sub QoS 1: {} msg/s (rounds {}); subscription/baseline {sub_ratio:.2} (no target)",
        fmt_int(b),
        fmt_rounds(&sub_base, ", ")
    );
    println!(
        "bench-mqtt: sink_qos1={s:.0} sub_qos1={u:.0} pub_baseline={p:.0} sub_baseline={b:.0} \
         sink_ratio={sink_ratio:.2} sub_ratio={sub_ratio:.2}"
    );
    Ok(())
}

/// JSON object number `n`, exactly [`SIZE`] bytes.
fn payload(n: usize) -> String {
    let head = format!(r#"{{"n":{n},"sensor":"bench","v":""#);
    let pad = SIZE - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
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

/// One sink from the oldest object of store `bench`: msg/s until the
/// broker acknowledged all [`N`].
fn sink_round(srv: &BenchServer, broker: &Broker, round: usize) -> Res<f64> {
    let body = format!(
        r#"{{"broker_url":"tcp://127.0.0.1:{}","topic":"bench/sink/{round}"}}"#,
        broker.port
    );
    let path = "/api/stores/bench/mqtt/connections";
    let t = Instant::now();
    let id = create(srv, path, &body)?;
    let path = format!("{path}/{id}");
    wait(srv, &path, |v| {
        v["messages_sent"].as_u64() >= Some(N as u64)
    })?;
    let rate = N as f64 / t.elapsed().as_secs_f64();
    http(srv, "DELETE", &path, "")?;
    Ok(rate)
}

/// The pub baseline: a plain MQTT 3.1.1 client on a `TcpStream`, no
/// library: CONNECT (clean session), then `lines` as QoS 1 PUBLISH packets
/// with at most [`WINDOW`] unacknowledged (the sink's default window), the
/// PUBACKs read by a second thread; timed from the connect to the last
/// PUBACK.
fn pub_baseline_round(broker: &Broker, lines: &[String], round: usize) -> Res<f64> {
    let t = Instant::now();
    let tcp = TcpStream::connect(("127.0.0.1", broker.port))?;
    tcp.set_nodelay(true)?;
    let mut r = tcp.try_clone()?;
    let mut w = std::io::BufWriter::new(tcp);
    let id = format!("bench-pub-{round}");
    let mut body = b"\x00\x04MQTT\x04\x02\x00\x3c".to_vec();
    body.extend((id.len() as u16).to_be_bytes());
    body.extend(id.as_bytes());
    packet(&mut w, 0x10, &body)?;
    w.flush()?;
    let mut connack = [0u8; 4];
    r.read_exact(&mut connack)?;
    if connack != [0x20, 2, 0, 0] {
        return Err(format!("CONNACK {connack:?}").into());
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let n = lines.len();
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let mut ack = [0u8; 4];
        for _ in 0..n {
            r.read_exact(&mut ack)?;
            if ack[..2] != [0x40, 2] {
                return Err(std::io::Error::other(format!("not a PUBACK: {ack:?}")));
            }
            let _ = tx.send(());
        }
        Ok(())
    });
    let topic = format!("bench/pub/{round}");
    let mut in_flight = 0;
    for (i, line) in lines.iter().enumerate() {
        while in_flight >= WINDOW {
            w.flush()?;
            rx.recv().map_err(|_| "the PUBACK reader stopped")?;
            in_flight -= 1;
            while rx.try_recv().is_ok() {
                in_flight -= 1;
            }
        }
        let mut body = Vec::with_capacity(4 + topic.len() + line.len());
        body.extend((topic.len() as u16).to_be_bytes());
        body.extend(topic.as_bytes());
        body.extend(((i % 65_535 + 1) as u16).to_be_bytes());
        body.extend(line.as_bytes());
        packet(&mut w, 0x32, &body)?;
        in_flight += 1;
    }
    w.flush()?;
    reader.join().map_err(|_| "the PUBACK reader panicked")??;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    packet(&mut w, 0xe0, &[])?;
    w.flush()?;
    Ok(rate)
}

/// Writes one MQTT packet: the fixed header's first byte, the remaining
/// length (variable-length integer), the rest.
fn packet(w: &mut impl Write, first: u8, body: &[u8]) -> std::io::Result<()> {
    let mut head = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        head.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    w.write_all(&head)?;
    w.write_all(body)
}

/// One subscription draining [`N`] messages queued for its session: msg/s
/// until all are stored.
fn sub_round(srv: &BenchServer, broker: &Broker, lines: &[String], round: usize) -> Res<f64> {
    let store = format!("sub{round}");
    srv.create_store(&json_store(&store))?;
    let topic = format!("bench/sub/tsstore/{round}");
    let body = format!(
        r#"{{"broker_url":"tcp://127.0.0.1:{}","topics":["{topic}"],"client_id":"bench-tsstore-{round}"}}"#,
        broker.port
    );
    let path = format!("/api/stores/{store}/mqtt/subscriptions");
    let id = create(srv, &path, &body)?;
    wait(srv, &format!("{path}/{id}"), |v| v["status"] == "connected")?;
    http(srv, "DELETE", &format!("{path}/{id}"), "")?;
    broker.publish(&topic, lines)?;
    let t = Instant::now();
    let id = create(srv, &path, &body)?;
    wait(srv, &format!("{path}/{id}"), |v| {
        v["messages_stored"].as_u64() == Some(N as u64)
    })?;
    let rate = N as f64 / t.elapsed().as_secs_f64();
    http(srv, "DELETE", &format!("/api/stores/{store}"), "")?;
    Ok(rate)
}

/// `mosquitto_sub` draining [`N`] messages queued for its session.
fn sub_baseline_round(broker: &Broker, lines: &[String], round: usize) -> Res<f64> {
    let topic = format!("bench/sub/base/{round}");
    let id = format!("bench-base-{round}");
    let sub = |extra: &[&str]| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-c", "-i", &id, "-q", "1", "-t", &topic])
            // Gives up after 120 s instead of hanging on a lost message.
            .args(["-W", "120"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("mosquitto_sub (package mosquitto-clients): {e}"))
    };
    if !sub(&["-E"])?.success() {
        return Err("mosquitto_sub -E failed".into());
    }
    broker.publish(&topic, lines)?;
    let t = Instant::now();
    let st = sub(&["-C", &N.to_string()])?;
    let rate = N as f64 / t.elapsed().as_secs_f64();
    if !st.success() {
        return Err(format!("mosquitto_sub -C {N}: {st}").into());
    }
    Ok(rate)
}

/// A child process killed and reaped when dropped (also on an error or a
/// panic), so no broker, server or client outlives the bench.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's mosquitto on a free loopback port.
struct Broker {
    child: Reaped,
    port: u16,
}

impl Broker {
    fn start(dir: &Path) -> Res<Broker> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.join("mosquitto.conf");
        // `user root`: started as root it would switch to `mosquitto`,
        // which cannot use this directory (ignored when not root).
        // `sys_interval 1`: the publish counter checked after each round.
        std::fs::write(
            &conf,
            format!(
                "user root\nper_listener_settings false\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 1000000\nsys_interval 1\nlog_dest none\n\
                 listener {port} 127.0.0.1\n"
            ),
        )?;
        let bin = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Reaped(
            Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("mosquitto (make setup-mqtt): {e}"))?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("mosquitto did not listen".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Broker { child, port })
    }

    /// Publishes `lines` at QoS 1 with `mosquitto_pub -l`, [`CHUNK`] per
    /// process; each exits once the broker acknowledged its lines.
    fn publish(&self, topic: &str, lines: &[String]) -> Res<()> {
        for chunk in lines.chunks(CHUNK) {
            let mut child = Reaped(
                Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .args(["-q", "1", "-t", topic, "-l"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("mosquitto_pub (package mosquitto-clients): {e}"))?,
            );
            let mut stdin = std::io::BufWriter::new(child.0.stdin.take().ok_or("no stdin")?);
            for line in chunk {
                writeln!(stdin, "{line}")?;
            }
            drop(stdin.into_inner().map_err(|e| e.into_error())?);
            let st = child.0.wait()?;
            if !st.success() {
                return Err(format!("mosquitto_pub: {st}").into());
            }
        }
        Ok(())
    }

    /// Waits (10 s at most) until the broker's count of PUBLISH packets
    /// received reaches `at_least`; returns the count. The count is a
    /// retained `$SYS` topic refreshed about once a second while the broker
    /// is busy, so what a new subscriber gets first may be stale: this
    /// stays subscribed and reads the updates.
    fn received(&self, at_least: u64) -> Res<u64> {
        let mut sub = Reaped(
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-t", "$SYS/broker/publish/messages/received", "-W", "10"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("mosquitto_sub (package mosquitto-clients): {e}"))?,
        );
        let out = BufReader::new(sub.0.stdout.take().ok_or("no stdout")?);
        let mut last = None;
        for line in out.lines() {
            let n: u64 = line?.trim().parse()?;
            if n >= at_least {
                return Ok(n);
            }
            last = Some(n);
        }
        Err(format!("the broker counts {last:?} publishes received, expected {at_least}").into())
    }
}

/// One request with the admin key (which may dial loopback); the body as
/// JSON (`null` when empty), an error for a status of 300 or more.
fn http(srv: &BenchServer, method: &str, path: &str, body: &str) -> Res<serde_json::Value> {
    let (status, json) = srv.exchange(
        method,
        path,
        &[("X-Admin-Key", ADMIN), ("Content-Type", "application/json")],
        body,
    )?;
    if status >= 300 {
        return Err(format!("{method} {path}: {status} {json}").into());
    }
    if json.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&json).map_err(|e| format!("{method} {path}: {e}: {json}").into())
}

/// POSTs a sink or subscription; returns its id.
fn create(srv: &BenchServer, path: &str, body: &str) -> Res<String> {
    let v = http(srv, "POST", path, body)?;
    Ok(v["id"]
        .as_str()
        .ok_or_else(|| format!("POST {path}: {v}"))?
        .to_string())
}

/// Polls the status object every 5 ms until `f` holds (300 s at most).
fn wait(srv: &BenchServer, path: &str, f: impl Fn(&serde_json::Value) -> bool) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let v = http(srv, "GET", path, "")?;
        if f(&v) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("GET {path}: timed out at {v}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
