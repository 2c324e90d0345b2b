//! The MQTT sink of the real binary (`/api/stores/:store/mqtt/connections`)
//! publishing to a real broker (Debian's mosquitto, [`super::mosquitto`]),
//! watched by `mosquitto_sub`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::{eventually, insert_n, signal, Server, Store};
use super::mosquitto::{Mosquitto, Subscriber};
use super::outbound::loopback_allowed;

const WAIT: Duration = Duration::from_secs(20);
/// How long a subscriber waits for one more message before it calls the
/// stream over.
const QUIET: Duration = Duration::from_secs(3);

/// A server whose store keys may dial the test broker on 127.0.0.1, with
/// the Unix socket (for bulk inserts) and, if given, a CA directory.
fn server(ca_dir: Option<&Path>, data: Option<&Path>, sock: &Path) -> Server {
    let extra = ca_dir
        .map(|d| format!(r#""ca_dir": {:?}"#, d.to_str().unwrap()))
        .unwrap_or_default();
    let mut b = Server::builder()
        .config(&loopback_allowed(&extra))
        .socket(sock);
    if let Some(d) = data {
        b = b.data_dir(d);
    }
    b.start()
}

/// Inserts `{"n": t}` at timestamps `from..from + n` through the Unix
/// socket (one connection, pipelined in chunks).
fn bulk_insert(sock: &Path, s: &Store, from: i64, n: i64) {
    let stream = UnixStream::connect(sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    writeln!(w, "AUTH {} {}", s.name, s.key).unwrap();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "OK");
    let mut t = from;
    while t < from + n {
        let end = (t + 500).min(from + n);
        let mut buf = String::new();
        for ts in t..end {
            buf.push_str(&format!("{{\"timestamp\":{ts},\"data\":{{\"n\":{ts}}}}}\n"));
        }
        w.write_all(buf.as_bytes()).unwrap();
        for _ in t..end {
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("OK "), "{line}");
        }
        t = end;
    }
}

fn create(srv: &Server, s: &Store, body: Value) -> Value {
    let r = srv
        .post(&s.path("/mqtt/connections"))
        .key(&s.key)
        .json(&body)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn status(srv: &Server, s: &Store, id: &str) -> Value {
    let r = srv
        .get(&s.path(&format!("/mqtt/connections/{id}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn wait_status(srv: &Server, s: &Store, id: &str, what: &str, f: impl Fn(&Value) -> bool) {
    let ok = eventually(WAIT, || f(&status(srv, s, id)));
    assert!(ok, "{what}: {}", status(srv, s, id));
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The `n` of each `{"n": t}` payload received, in order.
fn ns(sub: &Subscriber, n: usize) -> Vec<i64> {
    sub.take(n, QUIET)
        .iter()
        .map(|(_, p)| {
            let v: Value = serde_json::from_str(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            v["n"].as_i64().unwrap_or_else(|| panic!("{p}"))
        })
        .collect()
}

fn sock_in(dir: &Path) -> std::path::PathBuf {
    dir.join("t.sock")
}

#[test]
fn publishes_a_json_stores_objects_in_order_then_follows_new_writes() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 20);
    let c = create(&srv, &s, json!({ "broker_url": m.url(), "topic": "ts/s" }));
    assert_eq!(c["topic"], "ts/s");
    assert_eq!(c["qos"], 1);
    assert_eq!(c["window"], 64);
    assert_eq!(c["client_id"], format!("tsstore-s-{}", id_of(&c)));
    let got = sub.take(20, QUIET);
    assert_eq!(got.len(), 20, "{got:?}");
    for (i, (topic, payload)) in got.iter().enumerate() {
        assert_eq!(topic, "ts/s");
        let v: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(v, json!({ "n": i as i64 + 1 }), "data alone, in order");
    }
    // Written after the sink caught up: woken by the write.
    insert_n(&srv, &s, 21, 3);
    assert_eq!(ns(&sub, 3), [21, 22, 23]);
    let id = id_of(&c);
    wait_status(&srv, &s, &id, "every object acknowledged", |v| {
        v["status"] == "connected"
            && v["messages_sent"] == 23
            && v["last_timestamp"] == 23
            && v["errors"] == 0
            && v["connected_since"].is_string()
    });
    let list = srv.get(&s.path("/mqtt/connections")).key(&s.key).send();
    assert_eq!(list.json()["connections"][0]["id"], id.as_str());
    let metrics = srv.get("/metrics").send().text();
    assert!(
        metrics.contains(r#"tsstore_mqtt_connections{kind="sink",status="connected"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("tsstore_mqtt_messages_published_total 23"));
    assert!(metrics.contains(r#"tsstore_mqtt_errors_total{kind="sink"} 0"#));
}

#[test]
fn include_timestamp_publishes_the_timestamp_and_the_data() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1000, 2);
    // Text and binary stores too: their data as the REST API encodes it
    // with the timestamp (a JSON string, base64), the bare bytes without.
    let t = srv.create_store("t", json!({ "num_blocks": 64, "data_type": "text" }));
    let r = srv
        .post(&t.path("/data"))
        .key(&t.key)
        .body("text/plain", "hello")
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let text_ts = r.json()["timestamp"].as_i64().unwrap();
    let b = srv.create_store("b", json!({ "num_blocks": 64, "data_type": "binary" }));
    let r = srv
        .post(&b.path("/data"))
        .key(&b.key)
        .body("application/octet-stream", "abc")
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let bin_ts = r.json()["timestamp"].as_i64().unwrap();
    create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/s", "include_timestamp": true }),
    );
    let got = sub.take(2, QUIET);
    let v: Vec<Value> = got
        .iter()
        .map(|(_, p)| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(
        v,
        [
            json!({ "timestamp": 1000, "data": { "n": 1000 } }),
            json!({ "timestamp": 1001, "data": { "n": 1001 } })
        ]
    );
    create(
        &srv,
        &t,
        json!({ "broker_url": m.url(), "topic": "ts/t1", "include_timestamp": true }),
    );
    assert_eq!(
        sub.next(WAIT),
        Some((
            "ts/t1".into(),
            format!(r#"{{"timestamp":{text_ts},"data":"hello"}}"#)
        ))
    );
    create(&srv, &t, json!({ "broker_url": m.url(), "topic": "ts/t2" }));
    assert_eq!(sub.next(WAIT), Some(("ts/t2".into(), "hello".into())));
    create(
        &srv,
        &b,
        json!({ "broker_url": m.url(), "topic": "ts/b1", "include_timestamp": true }),
    );
    assert_eq!(
        sub.next(WAIT),
        Some((
            "ts/b1".into(),
            format!(r#"{{"timestamp":{bin_ts},"data":"YWJj"}}"#)
        ))
    );
    create(&srv, &b, json!({ "broker_url": m.url(), "topic": "ts/b2" }));
    assert_eq!(sub.next(WAIT), Some(("ts/b2".into(), "abc".into())));
}

#[test]
fn a_qos1_window_delivers_many_messages_in_order() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(dir.path());
    let srv = server(None, None, &sock);
    let s = srv.create_store("s", json!({ "num_blocks": 2048 }));
    const N: i64 = 5000;
    bulk_insert(&sock, &s, 1, N);
    let c = create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/s", "window": 128 }),
    );
    let got = ns(&sub, N as usize);
    assert_eq!(got.len(), N as usize, "every message arrives");
    assert!(
        got.iter().copied().eq(1..=N),
        "in timestamp order, each once"
    );
    wait_status(&srv, &s, &id_of(&c), "all acknowledged", |v| {
        v["messages_sent"] == N && v["last_timestamp"] == N
    });
}

#[test]
fn username_and_password_log_in_and_a_wrong_one_is_an_error() {
    let m = Mosquitto::builder().user("gw", "s3cret").start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 3);
    let good = create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/s", "username": "gw", "password": "s3cret" }),
    );
    assert_eq!(ns(&sub, 3), [1, 2, 3]);
    let bad = create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/bad", "username": "gw", "password": "wrong" }),
    );
    wait_status(&srv, &s, &id_of(&bad), "login refused", |v| {
        v["status"] == "error"
            && v["errors"].as_u64() >= Some(1)
            && v["last_error"].as_str().unwrap().contains("dial failed")
            && v["connected_since"].is_null()
    });
    assert!(sub.next(Duration::from_secs(1)).is_none());
    // The password is never shown, in the list or one by one.
    for body in [
        srv.get(&s.path("/mqtt/connections"))
            .key(&s.key)
            .send()
            .text(),
        status(&srv, &s, &id_of(&good)).to_string(),
        good.to_string(),
    ] {
        assert!(
            !body.contains("s3cret") && !body.contains("password"),
            "{body}"
        );
        assert!(body.contains(r#""username":"gw""#), "{body}");
    }
    // It is in the store's file, which only the owner may read.
    use std::os::unix::fs::PermissionsExt;
    let file = srv.data().join("s").join("mqtt_connections.json");
    assert!(std::fs::read_to_string(&file).unwrap().contains("s3cret"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn tls_with_the_ca_file_from_the_ca_directory() {
    let m = Mosquitto::builder().tls().start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("broker-ca.pem");
    std::fs::copy(m.ca(), &ca).unwrap();
    let srv = server(Some(ca_dir.path()), None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 3);
    // Without the CA the broker's certificate is refused.
    let bad = create(
        &srv,
        &s,
        json!({ "broker_url": m.ssl_url(), "topic": "ts/no" }),
    );
    wait_status(&srv, &s, &id_of(&bad), "certificate refused", |v| {
        v["status"] == "error" && v["last_error"].as_str().unwrap().contains("dial failed")
    });
    let good = create(
        &srv,
        &s,
        json!({ "broker_url": m.ssl_url(), "topic": "ts/s", "ca_file": ca.to_str().unwrap() }),
    );
    assert_eq!(ns(&sub, 3), [1, 2, 3]);
    wait_status(&srv, &s, &id_of(&good), "connected over TLS", |v| {
        v["status"] == "connected" && v["messages_sent"] == 3
    });
    // A ca_file outside the CA directory is refused at create.
    let r = srv
        .post(&s.path("/mqtt/connections"))
        .key(&s.key)
        .json(&json!({ "broker_url": m.ssl_url(), "topic": "ts/s", "ca_file": m.ca().to_str().unwrap() }))
        .send();
    assert_eq!(r.status, 400, "{}", r.text());
}

/// The received `n`s: every one of `1..=n` at least once, first
/// occurrences in order, and the number of repeats.
fn check_at_least_once_in_order(got: &[i64], n: i64) -> usize {
    let mut seen = BTreeSet::new();
    let mut firsts = Vec::new();
    for &x in got {
        if seen.insert(x) {
            firsts.push(x);
        }
    }
    let missing: Vec<i64> = (1..=n).filter(|x| !seen.contains(x)).collect();
    assert!(
        missing.is_empty(),
        "{} lost, the first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "first seen out of order"
    );
    got.len() - firsts.len()
}

/// A TCP relay to the broker that can turn the sink away: closed, it
/// accepts and at once closes every connection.
struct Gate {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    fn to(broker_port: u16) -> Gate {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let o = open.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(b) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                    continue;
                };
                let pump = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pump(c.try_clone().unwrap(), b.try_clone().unwrap());
                pump(b, c);
            }
        });
        Gate { port, open }
    }

    fn set(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A broker killed (`kill -9`) mid-stream loses what it held in memory:
/// that is the broker's to keep. The sink's part is exact: its cursor
/// moved only over what the broker acknowledged, so every object after
/// the cursor it had when the broker died is published again once the
/// broker is back, in order. (The sink reaches the broker through a
/// gate, so that the watcher is subscribed again before the sink
/// returns: a killed broker may have lost the watcher's session.)
#[test]
fn a_broker_killed_mid_stream_gets_everything_after_the_sinks_cursor() {
    let mut m = Mosquitto::start();
    let gate = Gate::to(m.port);
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(dir.path());
    let srv = server(None, None, &sock);
    let s = srv.create_store("s", json!({ "num_blocks": 4096 }));
    const N: i64 = 20_000;
    bulk_insert(&sock, &s, 1, N);
    let url = format!("tcp://127.0.0.1:{}", gate.port);
    let id = id_of(&create(
        &srv,
        &s,
        json!({ "broker_url": url, "topic": "ts/s" }),
    ));
    assert!(eventually(WAIT, || status(&srv, &s, &id)["messages_sent"]
        .as_u64()
        .unwrap()
        > 1000));
    gate.set(false);
    m.kill();
    wait_status(&srv, &s, &id, "broker gone", |v| v["status"] != "connected");
    // No acknowledgement can arrive any more: the cursor is final.
    let cursor = status(&srv, &s, &id)["last_timestamp"].as_i64().unwrap();
    assert!(cursor < N, "the kill came too late to test anything");
    m.restart();
    let sub = m.subscribe("ts/#");
    gate.set(true);
    wait_status(&srv, &s, &id, "reconnected", |v| v["status"] == "connected");
    bulk_insert(&sock, &s, N + 1, 500);
    let got = ns(&sub, 1_000_000);
    let head: Vec<i64> = got
        .iter()
        .copied()
        .filter(|&n| n > cursor)
        .take(20)
        .collect();
    let mut firsts: Vec<i64> = Vec::new();
    for n in got {
        if n > cursor && firsts.last().is_none_or(|&l| n > l) {
            firsts.push(n);
        }
    }
    let want: Vec<i64> = (cursor + 1..=N + 500).collect();
    assert!(
        firsts == want,
        "after the cursor {cursor}: {} of {} objects, the first missing {:?}; seen first {head:?}; status {}",
        firsts.len(),
        want.len(),
        want.iter().find(|n| !firsts.contains(n)),
        status(&srv, &s, &id)
    );
    wait_status(&srv, &s, &id, "all acknowledged", |v| {
        v["last_timestamp"] == N + 500
    });
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing_and_keeps_the_order() {
    let mut m = Mosquitto::start();
    let sub = m.subscribe_persistent("ts/#", "watcher");
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(dir.path());
    let srv = server(None, None, &sock);
    let s = srv.create_store("s", json!({ "num_blocks": 4096 }));
    const N: i64 = 20_000;
    bulk_insert(&sock, &s, 1, N);
    let c = create(&srv, &s, json!({ "broker_url": m.url(), "topic": "ts/s" }));
    let id = id_of(&c);
    // Stopped while the sink is publishing, publishes in flight.
    assert!(eventually(WAIT, || status(&srv, &s, &id)["messages_sent"]
        .as_u64()
        .unwrap()
        > 1000));
    m.stop();
    let v = status(&srv, &s, &id);
    assert!(v["last_timestamp"].as_i64() < Some(N), "mid-stream: {v}");
    wait_status(&srv, &s, &id, "broker gone", |v| v["status"] != "connected");
    bulk_insert(&sock, &s, N + 1, 1000);
    m.restart();
    wait_status(&srv, &s, &id, "reconnected", |v| v["status"] == "connected");
    bulk_insert(&sock, &s, N + 1001, 500);
    let got = ns(&sub, 1_000_000);
    // Repeats are not bounded here: besides the sink's resent window, the
    // broker redelivers to `mosquitto_sub` what it had not acknowledged.
    let repeats = check_at_least_once_in_order(&got, N + 1500);
    // Seen: about one window (~60); a reconnect that started over at
    // `from` would repeat the 1000+ already published.
    assert!(repeats < 1000, "{repeats} messages seen twice");
    wait_status(&srv, &s, &id, "all acknowledged", |v| {
        v["last_timestamp"] == N + 1500 && v["errors"].as_u64() >= Some(1)
    });
}

#[test]
fn a_killed_server_resumes_from_the_persisted_cursor() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sock = sock_in(dir.path());
    let mut srv = server(None, Some(&data), &sock);
    let s = srv.create_store("s", json!({ "num_blocks": 1024 }));
    bulk_insert(&sock, &s, 1, 2000);
    let c = create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/s", "cursor_persist_interval": 1 }),
    );
    let id = id_of(&c);
    assert_eq!(ns(&sub, 2000).len(), 2000);
    // Give the cursor one interval to reach the file, then kill -9.
    let file = data.join("s").join("mqtt_connections.json");
    assert!(eventually(WAIT, || persisted_cursor(&file) == 2000));
    signal(srv.pid(), "KILL");
    srv.wait_exit();
    drop(srv);
    let srv = server(None, Some(&data), &sock);
    bulk_insert(&sock, &s, 2001, 10);
    let got = ns(&sub, 100_000);
    assert_eq!(got, (2001..=2010).collect::<Vec<_>>(), "nothing resent");
    wait_status(&srv, &s, &id, "resumed", |v| {
        v["status"] == "connected" && v["last_timestamp"] == 2010
    });
}

/// The cursor the sink last persisted (0 before the first write).
fn persisted_cursor(file: &Path) -> i64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    serde_json::from_str::<Value>(&text).map_or(0, |v| {
        v["connections"][0]["last_timestamp"].as_i64().unwrap_or(0)
    })
}

/// Writes `{"n": t}` from `from` on through the Unix socket, a few a
/// millisecond, until the server goes away; returns the last timestamp
/// it answered `OK` to.
fn write_until_gone(sock: &Path, s: &Store, from: i64) -> i64 {
    let stream = UnixStream::connect(sock).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    writeln!(w, "AUTH {} {}", s.name, s.key).unwrap();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "OK");
    let mut acked = from - 1;
    loop {
        let ts = acked + 1;
        let sent = writeln!(w, "{{\"timestamp\":{ts},\"data\":{{\"n\":{ts}}}}}");
        line.clear();
        if sent.is_err() || r.read_line(&mut line).unwrap_or(0) == 0 {
            return acked;
        }
        assert!(line.starts_with("OK "), "{line}");
        acked = ts;
        if ts % 4 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `kill -9` of the server while its sink publishes what is being written:
/// after the restart the sink resumes from the cursor it last persisted.
/// Nothing is lost, the order holds, and what is published twice is only
/// what followed that cursor (about one persist interval), not the stream
/// from its start.
#[test]
fn a_server_killed_mid_stream_resumes_from_its_persisted_cursor() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sock = sock_in(dir.path());
    let mut srv = server(None, Some(&data), &sock);
    let s = srv.create_store("s", json!({ "num_blocks": 4096 }));
    let body = json!({ "broker_url": m.url(), "topic": "ts/s", "cursor_persist_interval": 1 });
    let id = id_of(&create(&srv, &s, body));
    let writer = {
        let (sock, s) = (sock.clone(), s.clone());
        std::thread::spawn(move || write_until_gone(&sock, &s, 1))
    };
    let file = data.join("s").join("mqtt_connections.json");
    // Two cursors persisted while the writes go on: the stream is in full
    // flow, and the kill comes between two persists.
    assert!(eventually(WAIT, || persisted_cursor(&file) > 0));
    let first = persisted_cursor(&file);
    assert!(eventually(WAIT, || persisted_cursor(&file) > first));
    signal(srv.pid(), "KILL");
    srv.wait_exit();
    drop(srv);
    let written = writer.join().unwrap();
    let cursor = persisted_cursor(&file);
    let before = ns(&sub, usize::MAX);
    assert!(
        cursor > first && cursor < written,
        "the kill came mid-stream: cursor {cursor}, written {written}"
    );
    let srv = server(None, Some(&data), &sock);
    let n = written + 500;
    bulk_insert(&sock, &s, written + 1, 500);
    let after = ns(&sub, usize::MAX);
    // Resumed exactly at the persisted cursor (not at the start of the
    // stream), then every object to the end, first seen in order.
    assert_eq!(
        after.first(),
        Some(&(cursor + 1)),
        "resumed after the persisted cursor {cursor}"
    );
    let mut firsts: Vec<i64> = Vec::new();
    for &x in &after {
        if firsts.last().is_none_or(|&l| x > l) {
            firsts.push(x);
        }
    }
    assert_eq!(
        firsts,
        (cursor + 1..=n).collect::<Vec<_>>(),
        "after the restart"
    );
    // Across the kill: nothing lost.
    check_at_least_once_in_order(&[before.as_slice(), after.as_slice()].concat(), n);
    // Published twice: only what came after the persisted cursor.
    let resent = before.iter().filter(|&&x| x > cursor).count();
    eprintln!(
        "killed mid-stream: {} published before the kill, cursor {cursor} of {written} written, {resent} published again",
        before.len()
    );
    wait_status(&srv, &s, &id, "resumed", |v| {
        v["status"] == "connected" && v["last_timestamp"] == n
    });
}

#[test]
fn interval_0_keeps_the_cursor_in_memory_and_starts_over_after_a_restart() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sock = sock_in(dir.path());
    let mut srv = server(None, Some(&data), &sock);
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 3);
    create(&srv, &s, json!({ "broker_url": m.url(), "topic": "ts/s" }));
    assert_eq!(ns(&sub, 3), [1, 2, 3]);
    srv.stop();
    drop(srv);
    let file = data.join("s").join("mqtt_connections.json");
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains(r#""last_timestamp": 0"#));
    let _srv = server(None, Some(&data), &sock);
    assert_eq!(ns(&sub, 100), [1, 2, 3], "from `from` again");
}

#[test]
fn one_shot_stays_in_error_and_interval_0_reconnects() {
    let mut m = Mosquitto::start();
    let sub = m.subscribe_persistent("ts/#", "watcher");
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 2);
    let once = id_of(&create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/once", "cursor_persist_interval": -1 }),
    ));
    let again = id_of(&create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/again" }),
    ));
    for id in [&once, &again] {
        wait_status(&srv, &s, id, "delivered", |v| {
            v["status"] == "connected" && v["messages_sent"] == 2
        });
    }
    assert_eq!(sub.take(4, QUIET).len(), 4);
    m.stop();
    for id in [&once, &again] {
        wait_status(&srv, &s, id, "broker gone", |v| v["status"] == "error");
    }
    m.restart();
    wait_status(&srv, &s, &again, "reconnected", |v| {
        v["status"] == "connected"
    });
    insert_n(&srv, &s, 3, 1);
    assert_eq!(
        sub.take(10, QUIET),
        [("ts/again".to_string(), r#"{"n":3}"#.to_string())],
        "{}",
        m.log()
    );
    let v = status(&srv, &s, &once);
    assert_eq!(v["status"], "error", "one shot: no reconnect: {v}");
    assert_eq!(v["messages_sent"], 2);
}

#[test]
fn delete_stops_the_sink_within_a_second() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 1);
    let id = id_of(&create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/s", "client_id": "deleted-sink" }),
    ));
    assert_eq!(ns(&sub, 1), [1]);
    let t = Instant::now();
    let r = srv
        .delete(&s.path(&format!("/mqtt/connections/{id}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let r = srv
        .get(&s.path(&format!("/mqtt/connections/{id}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 404);
    insert_n(&srv, &s, 2, 1);
    assert!(sub.next(Duration::from_secs(2)).is_none(), "stopped");
    assert!(
        eventually(WAIT, || m
            .log()
            .contains("Client deleted-sink disconnected")),
        "{}",
        m.log()
    );
    let r = srv
        .delete(&s.path(&format!("/mqtt/connections/{id}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 404);
}

#[test]
fn deleting_the_store_stops_its_sinks() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 1);
    create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/s", "client_id": "store-sink" }),
    );
    assert_eq!(ns(&sub, 1), [1]);
    let r = srv.delete("/api/stores/s").admin().send();
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    assert!(
        eventually(WAIT, || m.log().contains("Client store-sink disconnected")),
        "{}",
        m.log()
    );
}

#[test]
fn bad_fields_are_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    let base = json!({ "broker_url": "tcp://127.0.0.1:1883", "topic": "t" });
    let long_topic = "a".repeat(1025);
    let cases: Vec<(&str, Value)> = vec![
        ("broker_url", json!("http://h")),
        ("broker_url", json!("tcp://u:p@h")),
        ("topic", json!("")),
        ("topic", json!("a/+/b")),
        ("topic", json!("a/#")),
        ("topic", json!("a\u{0}b")),
        ("topic", json!(long_topic)),
        ("from", json!(-5)),
        ("cursor_persist_interval", json!(-3)),
        ("qos", json!(3)),
        ("retain", json!("yes")),
        ("include_timestamp", json!(1)),
        ("window", json!(0)),
        ("window", json!(5000)),
        ("format", json!("tiny")),
        ("client_id", json!(42)),
        ("username", json!(["x"])),
    ];
    for (field, bad) in cases {
        let mut body = base.clone();
        body[field] = bad.clone();
        let r = srv
            .post(&s.path("/mqtt/connections"))
            .key(&s.key)
            .json(&body)
            .send();
        assert_eq!(r.status, 400, "{field}={bad}: {}", r.text());
        assert!(r.error().contains(field), "{field}={bad}: {}", r.error());
    }
    let r = srv
        .post(&s.path("/mqtt/connections"))
        .key(&s.key)
        .json(&json!({ "topic": "t" }))
        .send();
    assert_eq!(r.status, 400);
    assert!(r.error().contains("broker_url"));
    let r = srv
        .post(&s.path("/mqtt/connections"))
        .key(&s.key)
        .body("application/json", "{")
        .send();
    assert_eq!(r.status, 400);
    // Nothing was created.
    let list = srv.get(&s.path("/mqtt/connections")).key(&s.key).send();
    assert_eq!(list.json(), json!({ "connections": [] }));
    // The store key is required.
    let r = srv.get(&s.path("/mqtt/connections")).send();
    assert_eq!(r.status, 401);
}

#[test]
fn a_store_key_may_not_dial_loopback_by_default() {
    let m = Mosquitto::start();
    let srv = Server::start();
    let s = srv.json_store("s");
    let body = json!({ "broker_url": m.url(), "topic": "ts/s" });
    let r = srv
        .post(&s.path("/mqtt/connections"))
        .key(&s.key)
        .json(&body)
        .send();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.error().contains("refused"), "{}", r.error());
    // The admin key may.
    let r = srv
        .post(&s.path("/mqtt/connections"))
        .admin()
        .json(&body)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn objects_the_ring_overwrote_before_they_were_published_are_counted() {
    let mut m = Mosquitto::start();
    let sub = m.subscribe_persistent("ts/#", "watcher");
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(dir.path());
    let srv = server(None, None, &sock);
    let s = srv.create_store("s", json!({ "num_blocks": 8 }));
    bulk_insert(&sock, &s, 1, 3);
    let id = id_of(&create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/s" }),
    ));
    assert_eq!(ns(&sub, 3), [1, 2, 3]);
    m.stop();
    wait_status(&srv, &s, &id, "broker gone", |v| v["status"] != "connected");
    // Far more than the ring holds, while the sink cannot publish.
    bulk_insert(&sock, &s, 4, 5000);
    m.restart();
    let got = ns(&sub, 100_000);
    assert!(!got.is_empty() && got.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*got.last().unwrap(), 5003);
    // (The broker may deliver 1..=3 again to the watcher.)
    let lost = 5000 - got.iter().filter(|&&n| n > 3).count();
    assert!(lost > 0);
    wait_status(&srv, &s, &id, "the gap counted", |v| {
        v["last_error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("gap: {lost} objects with timestamps 4..="))
    });
}

#[test]
fn a_payload_over_the_brokers_packet_limit_is_skipped_not_retried_forever() {
    let m = Mosquitto::builder().max_packet(1000).start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 5);
    let big = json!({ "timestamp": 6, "data": { "n": 6, "pad": "x".repeat(3000) } });
    let r = srv.post(&s.path("/data")).key(&s.key).json(&big).send();
    assert_eq!(r.status, 201, "{}", r.text());
    insert_n(&srv, &s, 7, 5);
    let id = id_of(&create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/s" }),
    ));
    // Reconnects back off 1 s, 2 s, ...: a few seconds to give up on it.
    let got: Vec<i64> = {
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        while out.last() != Some(&11) && Instant::now() < deadline {
            if let Some((_, p)) = sub.next(Duration::from_secs(1)) {
                let v: Value = serde_json::from_str(&p).unwrap();
                out.push(v["n"].as_i64().unwrap());
            }
        }
        out
    };
    let firsts: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(
        firsts.into_iter().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 7, 8, 9, 10, 11],
        "all but the big one: {got:?}"
    );
    wait_status(&srv, &s, &id, "skipped with an error", |v| {
        v["last_timestamp"] == 11
            && v["errors"].as_u64() >= Some(3)
            && v["last_error"]
                .as_str()
                .unwrap()
                .contains("object 6 skipped")
    });
}

#[test]
fn a_schema_store_publishes_expanded_json_or_compact() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.create_store("s", json!({ "num_blocks": 16, "data_type": "schema" }));
    let schema = json!({ "fields": [
        { "index": 1, "name": "temp", "type": "float64" },
        { "index": 2, "name": "room", "type": "string" }
    ]});
    let r = srv.put(&s.path("/schema")).key(&s.key).json(&schema).send();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = srv
        .post(&s.path("/data"))
        .key(&s.key)
        .json(&json!({ "timestamp": 5, "data": { "temp": 21.5, "room": "a" } }))
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/full" }),
    );
    let (t, p) = sub.next(WAIT).unwrap();
    assert_eq!(t, "ts/full");
    assert_eq!(
        serde_json::from_str::<Value>(&p).unwrap(),
        json!({ "temp": 21.5, "room": "a" })
    );
    create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/compact", "format": "compact" }),
    );
    let (t, p) = sub.next(WAIT).unwrap();
    assert_eq!(t, "ts/compact");
    assert_eq!(
        serde_json::from_str::<Value>(&p).unwrap(),
        json!({ "1": 21.5, "2": "a" })
    );
}

/// The original's manager starts every saved sink; a one shot gets one
/// more try per server start, from `from` (its cursor is never saved).
#[test]
fn a_one_shot_sink_runs_again_from_from_when_the_server_starts() {
    let mut m = Mosquitto::start();
    let sub = m.subscribe_persistent("ts/#", "watcher");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sock = sock_in(dir.path());
    let mut srv = server(None, Some(&data), &sock);
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 1);
    let once = id_of(&create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/once", "cursor_persist_interval": -1 }),
    ));
    assert_eq!(ns(&sub, 1), [1]);
    m.stop();
    wait_status(&srv, &s, &once, "failed for good", |v| {
        v["status"] == "error"
    });
    m.restart();
    insert_n(&srv, &s, 2, 1);
    assert_eq!(ns(&sub, 10), Vec::<i64>::new(), "no reconnect in this run");
    srv.stop();
    drop(srv);
    let srv = server(None, Some(&data), &sock);
    assert_eq!(ns(&sub, 10), [1, 2], "from `from` again");
    wait_status(&srv, &s, &once, "running again", |v| {
        v["status"] == "connected" && v["messages_sent"] == 2
    });
}

#[test]
fn from_a_timestamp_and_from_now() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    insert_n(&srv, &s, 1, 5);
    create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/after3", "from": 3 }),
    );
    let now = id_of(&create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topic": "ts/now", "from": -1 }),
    ));
    wait_status(&srv, &s, &now, "connected", |v| v["status"] == "connected");
    let mut got = sub.take(10, QUIET);
    got.sort();
    assert_eq!(
        got,
        [
            ("ts/after3".to_string(), r#"{"n":4}"#.to_string()),
            ("ts/after3".to_string(), r#"{"n":5}"#.to_string())
        ],
        "the objects after 3; none for `now`"
    );
    insert_n(&srv, &s, 6, 1);
    let mut got = sub.take(10, QUIET);
    got.sort();
    assert_eq!(
        got,
        [
            ("ts/after3".to_string(), r#"{"n":6}"#.to_string()),
            ("ts/now".to_string(), r#"{"n":6}"#.to_string())
        ]
    );
}

#[test]
fn qos_0_and_2_publish_and_move_the_cursor() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ts/#");
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(dir.path());
    let srv = server(None, None, &sock);
    let s = srv.create_store("s", json!({ "num_blocks": 256 }));
    bulk_insert(&sock, &s, 1, 300);
    for qos in [0, 2] {
        let topic = format!("ts/q{qos}");
        let id = id_of(&create(
            &srv,
            &s,
            json!({ "broker_url": m.url(), "topic": topic, "qos": qos, "retain": true }),
        ));
        wait_status(&srv, &s, &id, "all done", |v| {
            v["qos"] == qos && v["messages_sent"] == 300 && v["last_timestamp"] == 300
        });
    }
    let got = sub.take(600, QUIET);
    for qos in [0, 2] {
        let ns: Vec<i64> = got
            .iter()
            .filter(|(t, _)| *t == format!("ts/q{qos}"))
            .map(|(_, p)| {
                serde_json::from_str::<Value>(p).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert!(ns.iter().copied().eq(1..=300), "QoS {qos}: {ns:?}");
    }
    // Retained: a late subscriber gets the last one.
    let late = m.subscribe("ts/q2");
    assert_eq!(
        late.next(WAIT),
        Some(("ts/q2".to_string(), r#"{"n":300}"#.to_string()))
    );
}

#[test]
fn a_store_has_at_most_32_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(None, None, &sock_in(dir.path()));
    let s = srv.json_store("s");
    // A closed port: the sinks just retry.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let body = json!({ "broker_url": format!("tcp://127.0.0.1:{port}"), "topic": "t" });
    for _ in 0..32 {
        create(&srv, &s, body.clone());
    }
    let r = srv
        .post(&s.path("/mqtt/connections"))
        .key(&s.key)
        .json(&body)
        .send();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error(), "too many mqtt connections: at most 32 per store");
    let list = srv.get(&s.path("/mqtt/connections")).key(&s.key).send();
    assert_eq!(list.json()["connections"].as_array().unwrap().len(), 32);
}
