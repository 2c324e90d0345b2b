//! `GET /api/stores/:store/export` and `tsstore export` against the real
//! binary: exact CSV and NDJSON for json, schema and text stores, ranges,
//! filters and `fields`, a range larger than one read batch, every bad
//! parameter's 400, auth, and the CLI's output equal to the HTTP one.

use serde_json::{json, Value};

use super::common::{self, Server, Store};

/// 2023-11-14T22:13:20Z.
const T0: i64 = 1_700_000_000_000_000_000;

fn insert(srv: &Server, s: &Store, items: &[(i64, Value)]) {
    let body: String = items
        .iter()
        .map(|(t, d)| json!({"timestamp": t, "data": d}).to_string() + "\n")
        .collect();
    let r = srv
        .post(&s.path("/data"))
        .key(&s.key)
        .body("application/x-ndjson", body)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["failed"], 0, "{}", r.text());
}

fn export(srv: &Server, s: &Store, q: &str) -> common::Resp {
    srv.get(&s.path(&format!("/export?{q}"))).key(&s.key).send()
}

fn ok_text(srv: &Server, s: &Store, q: &str) -> String {
    let r = export(srv, s, q);
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    r.text()
}

fn sensors(srv: &Server) -> Store {
    let s = srv.json_store("sensors");
    insert(
        srv,
        &s,
        &[
            (
                T0,
                json!({"temp": 21.5, "gps": {"lat": 48.1, "lon": 11.5}, "ok": true}),
            ),
            (T0 + 1, json!({"temp": 22, "note": "a,b \"quoted\"\nline"})),
            (
                T0 + 1_500_000_000,
                json!({"gps": {"lat": 48.2}, "tags": [1, 2], "nil": null}),
            ),
        ],
    );
    s
}

#[test]
fn json_store_exports_exact_csv_and_ndjson() {
    let srv = Server::start();
    let s = sensors(&srv);
    let r = export(&srv, &s, "format=csv");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let cd = r.header("content-disposition").unwrap().to_string();
    assert!(
        cd.starts_with("attachment; filename=\"sensors-0-") && cd.ends_with(".csv\""),
        "{cd}"
    );
    assert_eq!(
        r.text(),
        "timestamp,time,temp,gps.lat,gps.lon,ok,note,tags,nil\r\n\
         1700000000000000000,2023-11-14T22:13:20.000000000Z,21.5,48.1,11.5,true,,,\r\n\
         1700000000000000001,2023-11-14T22:13:20.000000001Z,22,,,,\"a,b \"\"quoted\"\"\nline\",,\r\n\
         1700000001500000000,2023-11-14T22:13:21.500000000Z,,48.2,,,,\"[1,2]\",\r\n"
    );
    let r = export(&srv, &s, "format=ndjson");
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(
        r.text(),
        concat!(
            r#"{"timestamp":1700000000000000000,"data":{"temp":21.5,"gps":{"lat":48.1,"lon":11.5},"ok":true}}"#,
            "\n",
            r#"{"timestamp":1700000000000000001,"data":{"temp":22,"note":"a,b \"quoted\"\nline"}}"#,
            "\n",
            r#"{"timestamp":1700000001500000000,"data":{"gps":{"lat":48.2},"tags":[1,2],"nil":null}}"#,
            "\n"
        )
    );
}

#[test]
fn ranges_filters_and_fields_pick_rows_and_columns() {
    let srv = Server::start();
    let s = sensors(&srv);
    let q = format!(
        "format=csv&start_time={}&end_time={}&fields=gps.lat,temp",
        T0 + 1,
        T0 + 1_500_000_000
    );
    let r = export(&srv, &s, &q);
    assert_eq!(
        r.header("content-disposition"),
        Some(
            format!(
                "attachment; filename=\"sensors-{}-{}.csv\"",
                T0 + 1,
                T0 + 1_500_000_000
            )
            .as_str()
        )
    );
    assert_eq!(
        r.text(),
        "timestamp,time,gps.lat,temp\r\n\
         1700000000000000001,2023-11-14T22:13:20.000000001Z,,22\r\n\
         1700000001500000000,2023-11-14T22:13:21.500000000Z,48.2,\r\n"
    );
    // A whole object picked by name is its JSON text.
    assert_eq!(
        ok_text(&srv, &s, &format!("format=csv&end_time={T0}&fields=gps")),
        "timestamp,time,gps\r\n1700000000000000000,2023-11-14T22:13:20.000000000Z,\"{\"\"lat\"\":48.1,\"\"lon\"\":11.5}\"\r\n"
    );
    // The filter matches the stored bytes; the columns come from the
    // objects that pass it.
    assert_eq!(
        ok_text(&srv, &s, "format=csv&filter=QUOTED&filter_ignore_case=true"),
        "timestamp,time,temp,note\r\n1700000000000000001,2023-11-14T22:13:20.000000001Z,22,\"a,b \"\"quoted\"\"\nline\"\r\n"
    );
    assert_eq!(
        ok_text(&srv, &s, "format=csv&filter=QUOTED"),
        "timestamp,time\r\n"
    );
    let nd = ok_text(&srv, &s, &format!("format=ndjson&start_time={}", T0 + 2));
    assert_eq!(nd.lines().count(), 1, "{nd}");
    assert!(
        nd.starts_with(r#"{"timestamp":1700000001500000000,"#),
        "{nd}"
    );
    // since: these objects are years old; a fresh one is in the last hour.
    let now = common::now_ns();
    insert(&srv, &s, &[(now, json!({"temp": 1}))]);
    assert_eq!(
        ok_text(&srv, &s, "format=csv&since=1h"),
        format!("timestamp,time,temp\r\n{now},{},1\r\n", iso(now))
    );
}

fn iso(ns: i64) -> String {
    // The server's own format, checked against a fixed value above.
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", ns / 1_000_000_000),
            "+%Y-%m-%dT%H:%M:%S",
        ])
        .output()
        .unwrap();
    format!(
        "{}.{:09}Z",
        String::from_utf8_lossy(&out.stdout).trim(),
        ns % 1_000_000_000
    )
}

#[test]
fn schema_and_text_stores_export_their_columns() {
    let srv = Server::start();
    let s = srv.create_store("typed", json!({"num_blocks": 16, "data_type": "schema"}));
    let schema = json!({"fields": [
        {"index": 1, "name": "temp", "type": "float64"},
        {"index": 2, "name": "label", "type": "string"},
        {"index": 3, "name": "on", "type": "bool"}
    ]});
    let r = srv.put(&s.path("/schema")).key(&s.key).json(&schema).send();
    assert_eq!(r.status, 200, "{}", r.text());
    insert(
        &srv,
        &s,
        &[
            (T0, json!({"temp": 1.5, "label": "x,y", "on": true})),
            (T0 + 1, json!({"temp": -2.0, "label": "", "on": false})),
        ],
    );
    let csv = ok_text(&srv, &s, "format=csv");
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines[0], "timestamp,time,temp,label,on", "{csv}");
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[1].starts_with("1700000000000000000,2023-11-14T22:13:20.000000000Z,1.5,\"x,y\",true"),
        "{csv}"
    );
    assert_eq!(
        ok_text(&srv, &s, "format=csv&fields=on,temp")
            .split("\r\n")
            .next(),
        Some("timestamp,time,on,temp")
    );
    let r = export(&srv, &s, "format=csv&fields=nope");
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            400,
            "invalid fields: \"nope\" is not a field of the store's schema"
        )
    );
    let nd = ok_text(&srv, &s, "format=ndjson");
    let first: Value = serde_json::from_str(nd.lines().next().unwrap()).unwrap();
    assert_eq!(first["data"]["label"], "x,y", "{nd}");
    assert_eq!(first["data"]["on"], true, "{nd}");

    let t = srv.create_store("notes", json!({"num_blocks": 16, "data_type": "text"}));
    for (i, body) in ["plain", "with \"quote\", comma\nand line"]
        .iter()
        .enumerate()
    {
        let r = srv
            .post(&t.path(&format!("/data?timestamp={}", T0 + i as i64)))
            .key(&t.key)
            .body("text/plain", *body)
            .send();
        assert_eq!(r.status, 201, "{}", r.text());
    }
    assert_eq!(
        ok_text(&srv, &t, "format=csv"),
        "timestamp,time,data\r\n\
         1700000000000000000,2023-11-14T22:13:20.000000000Z,plain\r\n\
         1700000000000000001,2023-11-14T22:13:20.000000001Z,\"with \"\"quote\"\", comma\nand line\"\r\n"
    );
    assert_eq!(
        ok_text(&srv, &t, "format=ndjson"),
        "{\"timestamp\":1700000000000000000,\"data\":\"plain\"}\n{\"timestamp\":1700000000000000001,\"data\":\"with \\\"quote\\\", comma\\nand line\"}\n"
    );
}

/// More objects than one read batch (4096): every one, once, in order.
#[test]
fn a_range_larger_than_a_batch_is_exported_whole() {
    let srv = Server::start();
    let s = srv.create_store("big", json!({"num_blocks": 512}));
    let n = 10_000i64;
    for part in 0..4 {
        let items: Vec<(i64, Value)> = (part * n / 4..(part + 1) * n / 4)
            .map(|i| (T0 + i, json!({"i": i, "k": {"v": i % 7}})))
            .collect();
        insert(&srv, &s, &items);
    }
    let csv = ok_text(&srv, &s, "format=csv");
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert_eq!(lines[0], "timestamp,time,i,k.v");
    assert_eq!(lines.len() as i64, n + 1);
    for (i, l) in lines[1..].iter().enumerate() {
        let i = i as i64;
        assert!(
            l.starts_with(&format!("{},", T0 + i)) && l.ends_with(&format!(",{i},{}", i % 7)),
            "line {i}: {l}"
        );
    }
    let nd = ok_text(&srv, &s, &format!("format=ndjson&start_time={}", T0 + 5000));
    assert_eq!(nd.lines().count() as i64, n - 5000);
    assert_eq!(
        ok_text(&srv, &s, "format=csv&filter=%22v%22:6")
            .trim_end()
            .split("\r\n")
            .count() as i64,
        1 + (0..n).filter(|i| i % 7 == 6).count() as i64
    );
}

#[test]
fn bad_parameters_are_400_with_their_message() {
    let srv = Server::start();
    let s = sensors(&srv);
    let cases = [
        ("", "format parameter required: csv or ndjson"),
        ("format=xml", "invalid format \"xml\": must be csv or ndjson"),
        ("format=csv&start_time=abc", "invalid start_time: must be Unix nanoseconds, 0 or more"),
        ("format=csv&end_time=-5", "invalid end_time: must be Unix nanoseconds, 0 or more"),
        ("format=csv&start_time=20&end_time=10", "invalid time range: start_time is after end_time"),
        ("format=csv&since=1h&start_time=5", "since cannot be combined with start_time or end_time"),
        ("format=csv&since=soon", "invalid since duration: "),
        ("format=csv&fields=a,,b", "invalid fields: an empty field name"),
        ("format=csv&fields=a,a", "invalid fields: \"a\" is named twice"),
        (
            "format=ndjson&fields=a",
            "fields applies to CSV exports of json and schema stores; this is ndjson of a json store",
        ),
    ];
    for (q, msg) in cases {
        let r = export(&srv, &s, q);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.error().starts_with(msg), "{q}: {}", r.error());
    }
    let long = "x".repeat(300);
    let r = export(&srv, &s, &format!("format=csv&fields={long}"));
    assert_eq!(
        (r.status, r.error().as_str()),
        (400, "invalid fields: a field name is longer than 256 bytes")
    );
    let many: Vec<String> = (0..1001).map(|i| format!("f{i}")).collect();
    let r = export(&srv, &s, &format!("format=csv&fields={}", many.join(",")));
    assert_eq!(
        (r.status, r.error().as_str()),
        (400, "invalid fields: at most 1000 fields")
    );
    // More than 1,000 distinct fields in the range: the first pass refuses.
    let w = srv.create_store("wide", json!({"num_blocks": 64}));
    let items: Vec<(i64, Value)> = (0..11)
        .map(|i| {
            let m: serde_json::Map<String, Value> =
                (0..100).map(|j| (format!("f{i}_{j}"), json!(j))).collect();
            (T0 + i, Value::Object(m))
        })
        .collect();
    insert(&srv, &w, &items);
    let r = export(&srv, &w, "format=csv");
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            400,
            "the range has more than 1000 distinct fields: name the columns with fields=, or export ndjson"
        )
    );
    assert_eq!(
        export(&srv, &w, "format=csv&fields=f0_1,f10_99").status,
        200
    );
}

#[test]
fn export_needs_the_stores_key() {
    let srv = Server::start();
    let s = sensors(&srv);
    let other = srv.json_store("other");
    let r = srv.get(&s.path("/export?format=csv")).send();
    assert_eq!(r.status, 401, "{}", r.text());
    let r = srv
        .get(&s.path("/export?format=csv"))
        .key(&other.key)
        .send();
    assert_eq!(r.status, 401, "another store's key: {}", r.text());
    let r = srv.get(&s.path("/export?format=csv")).admin().send();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn cli_export_equals_the_http_export() {
    let srv = Server::start();
    let s = sensors(&srv);
    let mut want = Vec::new();
    for q in [
        "format=csv",
        "format=ndjson",
        "format=csv&fields=temp,gps.lon&start_time=1700000000000000001",
    ] {
        want.push(export(&srv, &s, q).body);
    }
    let data = srv.data().to_path_buf();
    let d = data.to_str().unwrap();
    // While the server holds the store, the CLI names the request to make.
    let out = common::cli(srv.work(), &["export", "sensors", "--data-path", d]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("store 'sensors' is open in a running server; export it over HTTP: GET /api/stores/sensors/export?format=csv"),
        "{err}"
    );
    let mut srv = srv;
    srv.stop();
    let work = tempfile::tempdir().unwrap();
    let args: [&[&str]; 3] = [
        &["--format", "csv"],
        &["--format", "ndjson"],
        &[
            "--fields",
            "temp,gps.lon",
            "--start-time",
            "1700000000000000001",
        ],
    ];
    for (a, want) in args.iter().zip(&want) {
        let mut argv = vec!["export", "sensors", "--data-path", d];
        argv.extend_from_slice(a);
        let out = common::cli(work.path(), &argv);
        assert!(
            out.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(want),
            "{a:?}"
        );
    }
    let file = work.path().join("out.csv");
    let out = common::cli(
        work.path(),
        &[
            "export",
            "sensors",
            "--data-path",
            d,
            "--output",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), want[0]);
    let out = common::cli(
        work.path(),
        &["export", "sensors", "--data-path", d, "--format", "xml"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("invalid format \"xml\": must be csv or ndjson"));
}

/// Starts an export of `s` (about 20 MB of CSV) on a raw connection and
/// reads only its head and first bytes, so that the server's reader waits
/// on the client; then runs `cut` and reads the rest: the body must end
/// without chunked encoding's last chunk (a cut transfer), short of the
/// whole range.
fn cut_mid_export(srv: &Server, s: &Store, cut: impl FnOnce()) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(srv.addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        tcp,
        "GET {} HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nConnection: close\r\n\r\n",
        s.path("/export?format=csv"),
        s.key
    )
    .unwrap();
    let mut first = vec![0u8; 64 * 1024];
    let n = tcp.read(&mut first).unwrap();
    let head = String::from_utf8_lossy(&first[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // Let the reader thread fill the channel and block on it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    cut();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    let total = n + rest.len();
    assert!(
        total < 15_000_000,
        "the whole range was sent after the cut: {total} bytes"
    );
    assert!(
        !rest.ends_with(b"\r\n0\r\n\r\n"),
        "the body ended as if complete after {total} bytes"
    );
}

fn filled(srv: &Server, name: &str) -> Store {
    let s = srv.create_store(name, json!({"num_blocks": 8192}));
    let pad = "p".repeat(1000);
    for part in 0..4 {
        let items: Vec<(i64, Value)> = (part * 5_000..(part + 1) * 5_000)
            .map(|i| (T0 + i, json!({"i": i, "pad": pad})))
            .collect();
        insert(srv, &s, &items);
    }
    s
}

/// A store deleted, or reset, while an export reads it: the download ends
/// as a cut transfer, never as a complete-looking short file.
#[test]
fn a_store_deleted_or_reset_mid_export_cuts_the_download() {
    let srv = Server::start();
    let s = filled(&srv, "gone");
    // Without a cut, the same export is whole and ends properly.
    let whole = export(&srv, &s, "format=csv");
    assert_eq!(whole.text().matches('\n').count(), 20_001);
    cut_mid_export(&srv, &s, || {
        let r = srv.delete(&s.path("")).admin().send();
        assert_eq!(r.status, 200, "{}", r.text());
    });
    let s = filled(&srv, "reset");
    cut_mid_export(&srv, &s, || {
        let r = srv.post(&s.path("/reset")).key(&s.key).send();
        assert_eq!(r.status, 200, "{}", r.text());
    });
}
