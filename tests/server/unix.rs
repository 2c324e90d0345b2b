//! The Unix socket of the real binary, through real `UnixStream` clients:
//! authentication, every kind of line and its answer, pipelining, bad
//! bytes, the optional timestamp, schema stores, key revocation, the
//! socket file's life (stale, live, mode, removal), the connection cap and
//! restarts. What the socket stored is checked through the HTTP API.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::{self, now_ns, Server, Store};

const MAX_LINE: usize = 1 << 20;
const AUTH_FAILED: &str = "ERROR authentication failed";
const AUTH_FORMAT: &str = "ERROR invalid auth format, expected: AUTH <store> <api-key>";

/// A line-protocol client.
pub(super) struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    pub(super) fn connect(path: &Path) -> Client {
        let s =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    /// Connects and authenticates; panics unless `OK`.
    pub(super) fn auth(path: &Path, s: &Store) -> Client {
        let mut c = Client::connect(path);
        assert_eq!(c.ask(&format!("AUTH {} {}", s.name, s.key)), "OK");
        c
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// The next answer without its `\n`; `None` at end of stream.
    pub(super) fn try_recv(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(0) => None,
            Ok(_) => {
                assert!(l.ends_with('\n'), "answer without newline: {l:?}");
                Some(l.trim_end_matches('\n').to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    pub(super) fn recv(&mut self) -> String {
        self.try_recv().expect("connection closed")
    }

    pub(super) fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.recv()
    }

    /// Stores `line` and returns its timestamp; panics on anything but `OK <ts>`.
    pub(super) fn store(&mut self, line: &str) -> i64 {
        ok_ts(&self.ask(line))
    }

    /// True if the server closed the connection (after any answers left).
    fn closed(&mut self) -> bool {
        self.try_recv().is_none()
    }
}

fn ok_ts(answer: &str) -> i64 {
    answer
        .strip_prefix("OK ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("expected OK <timestamp>, got {answer:?}"))
}

/// A temp dir for a socket, and the socket's path in it.
fn sock_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tsstore.sock");
    (d, p)
}

fn start_with_socket(path: &Path) -> Server {
    Server::builder().socket(path).start()
}

/// The object stored at `ts`, read over HTTP: (status, data).
fn http_get(srv: &Server, s: &Store, ts: i64, query: &str) -> (u16, Value) {
    let r = srv
        .get(&s.path(&format!("/data/time/{ts}{query}")))
        .key(&s.key)
        .send();
    let status = r.status;
    (status, r.json()["data"].clone())
}

pub(super) fn metric(srv: &Server, name: &str) -> f64 {
    let text = srv.get("/metrics").send().text();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
        .unwrap_or(0.0)
}

// ------------------------------------------------------------ auth

#[test]
fn auth_accepts_the_store_key_and_refuses_everything_else() {
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let s = srv.json_store("sensors");
    let other = srv.json_store("other");

    // Any case of AUTH; data may follow in the same write.
    let mut c = Client::connect(&sock);
    c.send_raw(format!("auth {} {}\n{{\"a\":1}}\n", s.name, s.key).as_bytes());
    assert_eq!(c.recv(), "OK");
    ok_ts(&c.recv());

    let refused = |line: &[u8], want: &str| {
        let mut c = Client::connect(&sock);
        c.send_raw(line);
        assert_eq!(c.recv(), want, "{:?}", String::from_utf8_lossy(line));
        assert!(c.closed(), "not closed after {want}");
    };
    for bad in [
        format!("AUTH {}\n", s.name),
        format!("AUTH {} {} extra\n", s.name, s.key),
        format!("AUTH  {} {}\n", s.name, s.key),
        format!("LOGIN {} {}\n", s.name, s.key),
        "\n".to_string(),
        format!("{{\"data\":1}}\nAUTH {} {}\n", s.name, s.key),
    ] {
        refused(bad.as_bytes(), AUTH_FORMAT);
    }
    // A wrong key, another store's key, a malformed key, an unknown store
    // and invalid names all get the same answer.
    let wrong = format!("tsstore_{}", "0".repeat(36));
    for line in [
        format!("AUTH {} {wrong}", s.name),
        format!("AUTH {} {}", s.name, other.key),
        format!("AUTH {} short", s.name),
        format!("AUTH nope {}", s.key),
        format!("AUTH ../sensors {}", s.key),
        format!("AUTH .. {}", s.key),
        format!("AUTH {} {}", "x".repeat(65), s.key),
        format!("AUTH {} {}", "é", s.key),
    ] {
        refused(format!("{line}\n").as_bytes(), AUTH_FAILED);
    }
    // Invalid names never reached the disk.
    let mut names: Vec<_> = std::fs::read_dir(srv.data())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, ["other", "sensors"]);
    // The refused sessions stored nothing.
    let r = srv.get(&s.path("/stats")).key(&s.key).send();
    assert_eq!(r.json()["object_count"], 1, "{}", r.text());
}

/// A connection that never authenticates does not hold its slot forever.
#[test]
fn auth_times_out() {
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let mut c = Client::connect(&sock);
    let t = Instant::now();
    assert_eq!(c.recv(), "ERROR authentication timeout");
    assert!(c.closed());
    let waited = t.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(15)).contains(&waited),
        "{waited:?}"
    );
    drop(srv);
}

// ------------------------------------------------------------ lines

#[test]
fn every_kind_of_line_gets_its_answer() {
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let s = srv.json_store("lines");
    let mut c = Client::auth(&sock, &s);
    assert_eq!(metric(&srv, "tsstore_unix_clients"), 1.0);

    // An empty (or blank) line has no answer: the next answer is the value's.
    c.send("");
    c.send("   \r");
    let t1 = c.store(r#"{"temp": 22.5, "room": "lab"}"#);
    // Lines are trimmed, CRLF included; what is stored is the trimmed text.
    let t2 = c.store("  \t[1, 2, 3]  \r");
    let t3 = c.store("42");
    let t4 = c.store(r#""just a string""#);
    assert!(t1 < t2 && t2 < t3 && t3 < t4);
    let before = now_ns();
    assert!(
        t4 <= before && t1 > before - 60_000_000_000,
        "{t1} {before}"
    );

    // Bad JSON is answered and the session goes on.
    let e = c.ask("{\"temp\": ");
    assert!(e.starts_with("ERROR invalid JSON: "), "{e}");
    let e = c.ask("hello world");
    assert!(e.starts_with("ERROR invalid JSON: "), "{e}");
    let t5 = c.store(r#"{"after":"errors"}"#);
    assert!(t5 > t4);

    assert_eq!(
        http_get(&srv, &s, t1, "").1,
        json!({"temp": 22.5, "room": "lab"})
    );
    assert_eq!(http_get(&srv, &s, t2, "").1, json!([1, 2, 3]));
    assert_eq!(http_get(&srv, &s, t3, "").1, json!(42));
    assert_eq!(http_get(&srv, &s, t4, "").1, json!("just a string"));
    // Stored as sent (trimmed), not re-serialised.
    let r = srv
        .get(&s.path(&format!("/data/time/{t2}")))
        .key(&s.key)
        .send();
    assert_eq!(r.json()["size"], "[1, 2, 3]".len(), "{}", r.text());

    // Metrics count the socket's inserts and rejections like HTTP's.
    assert_eq!(metric(&srv, "tsstore_inserts_total"), 5.0);
    assert_eq!(
        metric(
            &srv,
            "tsstore_rejected_inserts_total{reason=\"invalid_json\"}"
        ),
        2.0
    );

    // QUIT in any case: `OK bye`, then the server closes.
    assert_eq!(c.ask("quit"), "OK bye");
    assert!(c.closed());
    assert!(common::eventually(Duration::from_secs(2), || metric(
        &srv,
        "tsstore_unix_clients"
    ) == 0.0));

    // Closing without QUIT: every line gets its answer, an unterminated
    // last one too, then the server closes without more.
    let mut c = Client::auth(&sock, &s);
    c.send_raw(b"{\"n\":1}\n{\"n\":2}");
    c.w.shutdown(std::net::Shutdown::Write).unwrap();
    let a = ok_ts(&c.recv());
    let b = ok_ts(&c.recv());
    assert!(a < b);
    assert!(c.closed());
    assert_eq!(http_get(&srv, &s, b, "").1, json!({"n": 2}));
}

#[test]
fn text_and_binary_stores_take_what_http_takes_as_data() {
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let t = srv.create_store("txt", json!({"num_blocks": 8, "data_type": "text"}));
    let mut c = Client::auth(&sock, &t);
    let ts = c.store(r#""hello, world""#);
    let r = srv
        .get(&t.path(&format!("/data/time/{ts}")))
        .key(&t.key)
        .send();
    assert_eq!(r.json()["data"], "hello, world");
    assert_eq!(
        c.ask(r#"{"not":"a string"}"#),
        "ERROR data must be a JSON string for a text store"
    );
    let b = srv.create_store("bin", json!({"num_blocks": 8, "data_type": "binary"}));
    let mut c = Client::auth(&sock, &b);
    let ts = c.store(r#""AAEC/w==""#);
    let r = srv
        .get(&b.path(&format!("/data/time/{ts}")))
        .key(&b.key)
        .send();
    assert_eq!(r.json()["data"], "AAEC/w==");
    let e = c.ask(r#""not base64!""#);
    assert!(e.starts_with("ERROR data is not valid base64"), "{e}");
}

/// 10,000 lines written before any answer is read: every answer arrives,
/// in order, and each object is stored at the timestamp it was given.
#[test]
fn pipelined_lines_are_answered_in_order() {
    const N: usize = 10_000;
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let s = srv.create_store("pipe", json!({"num_blocks": 512}));
    let mut c = Client::auth(&sock, &s);
    let mut all = Vec::new();
    for i in 0..N {
        if i % 1000 == 999 {
            all.extend_from_slice(b"{broken\n");
        } else if i % 1000 == 500 {
            all.extend_from_slice(b"\n");
        } else {
            all.extend_from_slice(format!("{{\"seq\":{i}}}\n").as_bytes());
        }
    }
    c.send_raw(&all);
    c.send("QUIT");
    let mut stored = Vec::new();
    for i in 0..N {
        if i % 1000 == 500 {
            continue;
        }
        let a = c.recv();
        if i % 1000 == 999 {
            assert!(a.starts_with("ERROR invalid JSON: "), "line {i}: {a}");
        } else {
            stored.push((ok_ts(&a), i));
        }
    }
    assert_eq!(c.recv(), "OK bye");
    assert!(c.closed());
    assert!(stored.windows(2).all(|w| w[0].0 < w[1].0), "not increasing");

    // Everything, by range; a sample, by timestamp.
    let (first, last) = (stored[0].0, stored.last().unwrap().0);
    let r = srv
        .get(&s.path(&format!(
            "/data/range?start_time={first}&end_time={last}&limit=100000"
        )))
        .key(&s.key)
        .send();
    let v = r.json();
    let objs = v["objects"].as_array().unwrap();
    assert_eq!(objs.len(), stored.len());
    for (o, (ts, i)) in objs.iter().zip(&stored) {
        assert_eq!(o["timestamp"].as_i64().unwrap(), *ts);
        assert_eq!(o["data"], json!({ "seq": i }));
    }
    for (ts, i) in stored.iter().step_by(97) {
        assert_eq!(http_get(&srv, &s, *ts, ""), (200, json!({ "seq": i })));
    }
}

#[test]
fn bad_bytes_and_overlong_lines_leave_the_session_working() {
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let s = srv.create_store("bytes", json!({"num_blocks": 64}));
    let mut c = Client::auth(&sock, &s);

    // UTF-8 text is fine; invalid UTF-8 is not.
    let ts = c.store("{\"a\":\"\u{e9}\u{4e2d}\"}");
    assert_eq!(http_get(&srv, &s, ts, "").1, json!({"a": "\u{e9}\u{4e2d}"}));
    c.send_raw(b"{\"a\":\"\xff\xfe\"}\n");
    assert_eq!(
        c.recv(),
        "ERROR invalid JSON: line is not valid UTF-8 (byte 6)"
    );
    // Binary garbage, NULs and control bytes included.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let garbage: Vec<u8> = (0..5000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .filter(|b| *b != b'\n')
        .collect();
    c.send_raw(&garbage);
    c.send_raw(b"\n");
    let e = c.recv();
    assert!(e.starts_with("ERROR invalid JSON: "), "{e}");
    c.send_raw(b"\0\0\0\n");
    let e = c.recv();
    assert!(e.starts_with("ERROR invalid JSON: "), "{e}");
    c.store(r#"{"still":"working"}"#);

    // A line of exactly the limit passes the framing (and is too large for
    // this 256 KiB store); one byte more is too long.
    let exact = format!("\"{}\"", "x".repeat(MAX_LINE - 2));
    let e = c.ask(&exact);
    assert!(
        e.starts_with("ERROR store failed: object of 1048576 bytes is too large"),
        "{e}"
    );
    let over = format!("\"{}\"", "x".repeat(MAX_LINE - 1));
    assert_eq!(
        c.ask(&over),
        "ERROR line too long: the limit is 1048576 bytes"
    );
    assert_eq!(
        metric(&srv, "tsstore_rejected_inserts_total{reason=\"too_large\"}"),
        2.0
    );

    // 64 MiB in one line is dropped as it arrives, not buffered: measured
    // before the newline, when all but the socket buffer's worth was read.
    let rss = || metric(&srv, "tsstore_process_resident_memory_bytes");
    let before = rss();
    let chunk = vec![b'y'; 1 << 20];
    for _ in 0..64 {
        c.send_raw(&chunk);
    }
    let grew = rss() - before;
    assert!(grew < 16.0 * 1048576.0, "RSS grew by {grew} bytes");
    c.send_raw(b"\n{\"after\":\"overlong\"}\n");
    assert_eq!(c.recv(), "ERROR line too long: the limit is 1048576 bytes");
    let ts = ok_ts(&c.recv());
    assert_eq!(http_get(&srv, &s, ts, "").1, json!({"after": "overlong"}));
}

// ------------------------------------------------------------ timestamps

#[test]
fn optional_timestamp_wrapper() {
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let s = srv.json_store("ts");
    let mut c = Client::auth(&sock, &s);

    let t0 = now_ns() - 3_600_000_000_000;
    let line = format!(r#"{{"timestamp": {t0}, "data": {{"temp": 20.5}}}}"#);
    assert_eq!(c.store(&line), t0);
    // Only `data` is stored.
    assert_eq!(http_get(&srv, &s, t0, "").1, json!({"temp": 20.5}));

    // Not after the newest: refused, and the session goes on.
    for t in [t0, t0 - 1] {
        let line = format!(r#"{{"timestamp": {t}, "data": 1}}"#);
        assert_eq!(
            c.ask(&line),
            "ERROR store failed: timestamp must be greater than newest entry"
        );
    }
    assert_eq!(
        metric(
            &srv,
            "tsstore_rejected_inserts_total{reason=\"out_of_order\"}"
        ),
        2.0
    );
    // Bad timestamps.
    for bad in [
        r#"{"timestamp": -5, "data": 1}"#,
        r#"{"timestamp": 1.5e18, "data": 1}"#,
        r#"{"timestamp": "2024-01-01", "data": 1}"#,
    ] {
        let e = c.ask(bad);
        assert!(e.starts_with("ERROR invalid timestamp"), "{bad}: {e}");
    }
    // `data` alone, or timestamp 0 / null: now.
    let now = now_ns();
    let a = c.store(r#"{"data": {"v": 1}}"#);
    let b = c.store(r#"{"timestamp": 0, "data": {"v": 2}}"#);
    let n = c.store(r#"{"timestamp": null, "data": null}"#);
    assert!(a >= now - 60_000_000_000 && a < b && b < n, "{a} {b} {n}");
    assert_eq!(http_get(&srv, &s, a, "").1, json!({"v": 1}));
    assert_eq!(http_get(&srv, &s, n, "").1, Value::Null);
    // Any other key: the whole object is the data.
    for whole in [
        json!({"data": 1, "unit": "C"}),
        json!({"timestamp": 5}),
        json!({"value": {"data": 1}}),
    ] {
        let ts = c.store(&whole.to_string());
        assert_eq!(http_get(&srv, &s, ts, "").1, whole);
    }

    // A timestamp ahead of the clock: "now" then follows it by 1 ns
    // instead of failing as out of order.
    let future = now_ns() + 3_600_000_000_000;
    assert_eq!(
        c.store(&format!(r#"{{"timestamp":{future},"data":1}}"#)),
        future
    );
    assert_eq!(c.store(r#"{"after":"future"}"#), future + 1);
    assert_eq!(c.store("[2]"), future + 2);
}

// ------------------------------------------------------------ schema

#[test]
fn schema_store_validates_and_compacts() {
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let s = srv.create_store("sch", json!({"num_blocks": 8, "data_type": "schema"}));
    let mut c = Client::auth(&sock, &s);
    assert_eq!(
        c.ask(r#"{"temperature": 21.5}"#),
        "ERROR schema validation failed: schema is required for schema data type"
    );
    let schema = json!({"fields": [
        {"index": 1, "name": "temperature", "type": "float32"},
        {"index": 2, "name": "humidity", "type": "int32"},
        {"index": 3, "name": "room", "type": "string"},
    ]});
    let r = srv.put(&s.path("/schema")).key(&s.key).json(&schema).send();
    assert_eq!(r.status, 200, "{}", r.text());

    let ts = c.store(r#"{"room": "lab", "temperature": 21.5, "humidity": 40}"#);
    assert_eq!(
        http_get(&srv, &s, ts, "").1,
        json!({"temperature": 21.5, "humidity": 40, "room": "lab"})
    );
    assert_eq!(
        http_get(&srv, &s, ts, "?format=compact").1,
        json!({"1": 21.5, "2": 40, "3": "lab"})
    );
    let r = srv
        .get(&s.path(&format!("/data/time/{ts}?format=compact")))
        .key(&s.key)
        .send();
    assert!(
        r.text().contains(r#""data":{"1":21.5,"2":40,"3":"lab"}"#),
        "{}",
        r.text()
    );
    // Compact input, and the wrapper, work too.
    let ts = c.store(r#"{"2": 41}"#);
    assert_eq!(http_get(&srv, &s, ts, "").1, json!({"humidity": 41}));
    let t = ts + 1_000;
    let line = format!(r#"{{"timestamp":{t},"data":{{"room":"hall"}}}}"#);
    assert_eq!(c.store(&line), t);
    assert_eq!(
        http_get(&srv, &s, t, "?format=compact").1,
        json!({"3": "hall"})
    );

    assert_eq!(
        c.ask(r#"{"pressure": 1013}"#),
        "ERROR schema validation failed: field not found in schema: pressure"
    );
    let e = c.ask(r#"{"humidity": "wet"}"#);
    assert!(e.starts_with("ERROR schema validation failed: "), "{e}");
    let e = c.ask("[1,2]");
    assert!(e.starts_with("ERROR schema validation failed: "), "{e}");
    c.store(r#"{"temperature": 19}"#);
}

// ------------------------------------------------------------ keys

/// A key revoked with the CLI while the server runs: a new AUTH is
/// refused within 100 ms, an open session stops within about a second.
#[test]
fn revoked_key_is_refused() {
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let s = srv.json_store("rev");
    let mut open = Client::auth(&sock, &s);
    open.store(r#"{"before":"revoke"}"#);

    let id = &s.key[8..16];
    let data = srv.data().to_str().unwrap();
    let out = common::cli(srv.work(), &["key", "revoke", "rev", id, "--path", data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server looks at keys.json at most every 100 ms: a new AUTH is
    // refused within that (1 s allowed, as for HTTP).
    assert!(
        common::eventually(Duration::from_secs(1), || {
            let mut c = Client::connect(&sock);
            c.ask(&format!("AUTH rev {}", s.key)) == AUTH_FAILED && c.closed()
        }),
        "a new AUTH with the revoked key is refused"
    );

    let t = Instant::now();
    let mut answers = Vec::new();
    loop {
        let a = open.ask(r#"{"after":"revoke"}"#);
        if a == AUTH_FAILED {
            break;
        }
        ok_ts(&a);
        answers.push(a);
        assert!(t.elapsed() < Duration::from_secs(3), "session still open");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(open.closed());
    assert!(
        t.elapsed() <= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

// ------------------------------------------------------------ the socket file

#[test]
fn socket_file_mode_directory_log_and_removal() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("run/tsstore/tsstore.sock");
    let mut srv = start_with_socket(&sock);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sock), 0o660);
    assert_eq!(mode(sock.parent().unwrap()), 0o755);
    let listening = format!("Unix socket listening on {}", sock.display());
    assert!(
        common::eventually(Duration::from_secs(2), || srv.log().contains(&listening)),
        "{}",
        srv.log()
    );
    // An open session is told, and the server stops without waiting for it.
    let s = srv.json_store("bye");
    let mut c = Client::auth(&sock, &s);
    let t = Instant::now();
    assert!(srv.stop().success(), "{}", srv.log());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(c.recv(), "ERROR server shutting down");
    assert!(c.closed());
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn stale_socket_file_is_replaced() {
    let (_d, sock) = sock_dir();
    // What a crashed server leaves: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    assert!(UnixStream::connect(&sock).is_err());
    let srv = start_with_socket(&sock);
    let s = srv.json_store("stale");
    Client::auth(&sock, &s).store("1");
    assert!(
        srv.log().contains("removing stale Unix socket"),
        "{}",
        srv.log()
    );
}

#[test]
fn live_socket_of_another_server_is_an_error() {
    let (_d, sock) = sock_dir();
    let first = start_with_socket(&sock);
    let (status, log) = Server::builder().socket(&sock).fail();
    assert!(!status.success());
    assert!(
        log.contains(&format!(
            "another process is listening on the Unix socket {}",
            sock.display()
        )),
        "{log}"
    );
    // The first server's socket is untouched.
    let s = first.json_store("live");
    Client::auth(&sock, &s).store("1");
}

/// Any other failure to set up the socket leaves HTTP running.
#[test]
fn socket_setup_failure_is_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let srv = start_with_socket(&file);
    assert_eq!(srv.get("/health").send().status, 200);
    assert!(
        srv.log()
            .contains("Warning: Unix socket listener failed to start: "),
        "{}",
        srv.log()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn socket_path_from_the_environment_and_no_socket() {
    let (_d, sock) = sock_dir();
    let srv = Server::builder()
        .socket_unset()
        .env("TSSTORE_SOCKET_PATH", sock.to_str().unwrap())
        .start();
    let s = srv.json_store("env");
    Client::auth(&sock, &s).store("1");
    drop(srv);
    assert!(!sock.exists());
    let srv = Server::builder()
        .env("TSSTORE_SOCKET_PATH", sock.to_str().unwrap())
        .start();
    assert!(!sock.exists(), "--no-socket ignored");
    assert!(!srv.log().contains("Unix socket"), "{}", srv.log());
}

// ------------------------------------------------------------ limits

#[test]
fn connections_are_capped() {
    const CAP: usize = 256;
    let (_d, sock) = sock_dir();
    let srv = start_with_socket(&sock);
    let s = srv.json_store("cap");
    let mut open: Vec<Client> = (0..CAP).map(|_| Client::auth(&sock, &s)).collect();
    assert_eq!(metric(&srv, "tsstore_unix_clients"), CAP as f64);
    let mut c = Client::connect(&sock);
    assert_eq!(c.recv(), "ERROR too many connections");
    assert!(c.closed());
    // The open ones still work; a closed one frees its slot.
    open[17].store("1");
    drop(open.pop());
    assert!(common::eventually(Duration::from_secs(5), || metric(
        &srv,
        "tsstore_unix_clients"
    ) == (CAP - 1)
        as f64));
    Client::auth(&sock, &s).store("2");
}

// ------------------------------------------------------------ durability

#[test]
fn durable_stores_and_restarts_keep_the_data() {
    let (_d, sock) = sock_dir();
    let mut srv = start_with_socket(&sock);
    let s = srv.create_store("dur", json!({"num_blocks": 64, "durability": "always"}));
    let mut c = Client::auth(&sock, &s);
    let mut lines = Vec::new();
    for i in 0..500 {
        lines.extend_from_slice(format!("{{\"i\":{i}}}\n").as_bytes());
    }
    c.send_raw(&lines);
    let stored: Vec<i64> = (0..500).map(|_| ok_ts(&c.recv())).collect();
    assert!(stored.windows(2).all(|w| w[0] < w[1]));
    let j = srv.json_store("interval");
    let tj = Client::auth(&sock, &j).store(r#"{"kept":true}"#);
    drop(c);
    assert!(srv.stop().success(), "{}", srv.log());

    let data = srv.data().to_path_buf();
    let srv = Server::builder().data_dir(&data).socket(&sock).start();
    for (i, ts) in stored.iter().enumerate().step_by(50) {
        assert_eq!(http_get(&srv, &s, *ts, ""), (200, json!({ "i": i })));
    }
    assert_eq!(http_get(&srv, &j, tj, ""), (200, json!({"kept": true})));
    let mut c = Client::auth(&sock, &s);
    assert!(c.store("1") > *stored.last().unwrap());
}
