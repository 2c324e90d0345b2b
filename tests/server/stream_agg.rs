//! Aggregation on `/ws/read`, push connections and MQTT sinks (issue 15):
//! the windows of the backlog and of live objects compared with the
//! reference of `agg.rs`, windows closing when a reading at or after their
//! end arrives, the open window sent partial at shutdown, a gap cutting the
//! open window, the compact form of schema stores (a `schema` message
//! first), every refused parameter (a 400 with REST's message, before the
//! upgrade or at create), and the resume cursor on raw readings: push
//! connections and sinks through `kill -9` and graceful restarts, every
//! reading in exactly one window.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use super::agg::{
    assert_windows, insert_all, past_hour, readings, reference, reference_window, Column, MIN, SEC,
};
use super::common::{signal, Server, Store};
use super::mosquitto::{Mosquitto, Subscriber};
use super::outbound::{
    create as create_conn, loopback_allowed, status as status_conn, wait_status as wait_conn,
    Event as RemoteEvent, Remote,
};
use super::ws::{closed, connect, next_json, url, Ws};

/// The next frame, which must be a window (`type` `data`), without its
/// `type`: the REST window object.
async fn next_window(ws: &mut Ws) -> Value {
    let mut f = next_json(ws).await;
    assert_eq!(f["type"], "data", "{f}");
    let keys: Vec<&String> = f.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["type", "timestamp", "count", "partial", "data"],
        "the REST window's keys after type: {f}"
    );
    f.as_object_mut().unwrap().remove("type");
    f
}

/// Windows up to `caught_up`.
async fn windows_until_caught_up(ws: &mut Ws) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let f = next_json(ws).await;
        if f["type"] == "caught_up" {
            return out;
        }
        assert_eq!(f["type"], "data", "{f}");
        let mut f = f;
        f.as_object_mut().unwrap().remove("type");
        out.push(f);
    }
}

/// Nothing arrives for a while (a window still open sends nothing).
async fn quiet(ws: &mut Ws) {
    loop {
        match tokio::time::timeout(Duration::from_millis(400), ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected nothing, got {other:?}"),
        }
    }
}

fn insert(srv: &Server, s: &Store, t: i64, data: Value) {
    let r = srv
        .post(&s.path("/data"))
        .key(&s.key)
        .json(&json!({"timestamp": t, "data": data}))
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
}

/// The functions of the test's `agg_fields` and `agg_default` per field.
fn named(path: &str, col: &Column) -> Vec<&'static str> {
    match path {
        "temp" => vec!["sum", "max"],
        "sensor.v" => vec!["min"],
        "sensor.state" => vec!["count"],
        "status" => vec!["first"],
        _ if col.iter().all(Value::is_number) => {
            vec!["avg", "min", "max", "sum", "count", "first", "last"]
        }
        _ => vec!["last"],
    }
}

const NAMED: &str = "agg_window=1m&agg_fields=temp:sum,temp:max,sensor.v:min,\
                     sensor.state:count,status:first&agg_default=avg,min,max,sum,count,first,last";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_stream_windows_match_the_reference_close_live_and_end_partial() {
    let srv = Server::start();
    let s = srv.create_store("sagg", json!({"num_blocks": 256}));
    let t0 = past_hour() + 17 * SEC;
    let mut rs = readings(t0, 600, 7 * SEC);
    insert_all(&srv, &s, &rs);

    // From the oldest: every window of the backlog but the open one (the
    // newest reading's), none partial, then caught_up.
    let mut ws = connect(&url(&srv, &s, "read", &format!("&from=0&{NAMED}"))).await;
    let want = reference(&rs, MIN, i64::MIN, i64::MAX, &named);
    assert!(want.len() > 60, "{}", want.len());
    let got = windows_until_caught_up(&mut ws).await;
    assert_windows(&Value::Array(got), &want[..want.len() - 1]);
    assert!(want[..want.len() - 1]
        .iter()
        .all(|w| w["partial"] == false && w["data"]["temp_sum"].is_number()));

    // Live: a reading inside the open window closes nothing; one at the
    // window's end closes it, with the live reading folded in.
    let last = rs.last().unwrap().0;
    let end = last - last.rem_euclid(MIN) + MIN;
    let live =
        json!({"temp": 30.5, "hum": 99, "sensor": {"v": -50, "state": "z"}, "status": "live"});
    insert(&srv, &s, last + 1, live.clone());
    rs.push((last + 1, live.clone()));
    quiet(&mut ws).await;
    let closing =
        json!({"temp": 1.25, "hum": 3, "sensor": {"v": 4, "state": "y"}, "status": "next"});
    insert(&srv, &s, end, closing.clone());
    rs.push((end, closing.clone()));
    let want = reference(&rs, MIN, i64::MIN, i64::MAX, &named);
    let w = next_window(&mut ws).await;
    assert_windows(
        &Value::Array(vec![w]),
        &want[want.len() - 2..want.len() - 1],
    );
    quiet(&mut ws).await;

    // A second reader from an unaligned timestamp: its first window is cut
    // by the start (partial, sums null), as on REST.
    let lo = t0 + 95 * SEC;
    let mut cut = connect(&url(
        &srv,
        &s,
        "read",
        &format!("&from={lo}&agg_window=5m&agg_default=sum"),
    ))
    .await;
    let sums = |_: &str, col: &Column| {
        if col.iter().all(Value::is_number) {
            vec!["sum"]
        } else {
            vec!["last"]
        }
    };
    let want5 = reference(&rs, 5 * MIN, lo, i64::MAX, &sums);
    let got = windows_until_caught_up(&mut cut).await;
    assert_windows(&Value::Array(got), &want5[..want5.len() - 1]);
    assert_eq!(want5[0]["partial"], true);
    assert_eq!(want5[0]["data"]["hum"], Value::Null);
    assert!(want5[1]["data"]["hum"].is_i64());

    // Shutdown: the open window goes out first, partial (sum null), then
    // the 1001 close.
    signal(srv.pid(), "TERM");
    let w = next_window(&mut ws).await;
    let want_open = reference_window(end + MIN, &[&closing], true, &named);
    assert_windows(&Value::Array(vec![w]), &[want_open]);
    assert_eq!(closed(&mut ws).await, Some(1001));
    let w = next_window(&mut cut).await;
    let open = &want5[want5.len() - 1];
    assert_eq!(
        (&w["timestamp"], &w["count"], &w["partial"]),
        (&open["timestamp"], &open["count"], &json!(true)),
        "{w}"
    );
    assert_eq!(closed(&mut cut).await, Some(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_sends_the_open_window_partial_and_counts_add_up() {
    let srv = Server::start();
    // 32 blocks of 4 KiB: each 3 KiB object takes a block of its own.
    let s = srv.create_store("sgap", json!({ "num_blocks": 32 }));
    // A reader that does not read: tiny receive buffer, then it waits.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(srv.addr).await.unwrap();
    // 1 ms windows of readings 1 ms apart: one reading per window, each
    // window ~3 KiB (its `pad` is `last`), so the reader falls behind.
    let (mut ws, _) = tokio_tungstenite::client_async(
        url(&srv, &s, "read", "&agg_window=1ms&agg_default=sum"),
        MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "caught_up");
    const MS: i64 = 1_000_000;
    const N: i64 = 3000;
    let pad = "x".repeat(3000);
    let srv = std::sync::Arc::new(srv);
    let (writer, s2) = (srv.clone(), s.clone());
    tokio::task::spawn_blocking(move || {
        for chunk in (1..=N).collect::<Vec<_>>().chunks(100) {
            let body: String = chunk
                .iter()
                .map(|t| {
                    json!({ "timestamp": t * MS, "data": { "t": t, "pad": pad } }).to_string()
                        + "\n"
                })
                .collect();
            let r = writer
                .post(&s2.path("/data"))
                .key(&s2.key)
                .body("application/x-ndjson", body)
                .send();
            assert_eq!(r.status, 200, "{}", r.text());
        }
    })
    .await
    .unwrap();
    // Windows and gaps account for every reading but the newest (its
    // window is open); the window before each gap is cut, partial.
    let (mut counted, mut lost, mut gaps, mut cut_before_gap) = (0i64, 0i64, 0, 0);
    let mut prev: Option<Value> = None;
    let mut last_t = 0i64;
    while counted + lost < N - 1 {
        let f = next_json(&mut ws).await;
        match f["type"].as_str().unwrap() {
            "data" => {
                let t = f["timestamp"].as_i64().unwrap() / MS - 1;
                assert!(t > last_t, "in order: {f}");
                // `sum` of the one reading, or null when cut.
                if f["partial"] == false {
                    assert_eq!(f["data"]["t"], t, "{f}");
                }
                assert_eq!(f["count"], 1, "{f}");
                counted += 1;
                last_t = t;
            }
            "gap" => {
                gaps += 1;
                lost += f["lost"].as_i64().unwrap();
                if let Some(p) = &prev {
                    if p["type"] == "data" {
                        assert_eq!(p["partial"], true, "the window before a gap: {p}");
                        assert_eq!(p["data"]["t"], Value::Null, "no sum when cut: {p}");
                        cut_before_gap += 1;
                    }
                }
                last_t = f["to"].as_i64().unwrap() / MS;
            }
            other => panic!("unexpected frame {other}: {f}"),
        }
        prev = Some(f);
    }
    assert!(gaps >= 1, "the ring wrapped under the reader");
    assert!(cut_before_gap >= 1, "a gap cut an open window");
    assert_eq!(counted + lost, N - 1);
    // The newest reading's window, at shutdown.
    signal(srv.pid(), "TERM");
    let f = next_json(&mut ws).await;
    assert_eq!(f["timestamp"], (N + 1) * MS, "{f}");
    assert_eq!(f["partial"], true, "{f}");
    assert_eq!(closed(&mut ws).await, Some(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_windows_of_a_schema_store_come_after_their_schema() {
    let srv = Server::start();
    let s = srv.create_store("ssch", json!({"num_blocks": 64, "data_type": "schema"}));
    let schema = json!({"fields": [
        {"index": 1, "name": "temp", "type": "float64"},
        {"index": 2, "name": "n", "type": "int32"},
        {"index": 3, "name": "state", "type": "string"},
    ]});
    let r = srv.put(&s.path("/schema")).key(&s.key).json(&schema).send();
    assert_eq!(r.status, 200, "{}", r.text());
    let t0 = past_hour();
    let rs: Vec<(i64, Value)> = (0..200)
        .map(|i| {
            let d = json!({"temp": 20.0 + (i % 13) as f64 * 0.5, "n": (i * 7) % 11 - 5,
                           "state": format!("s{}", i % 4)});
            (t0 + i * 3 * SEC, d)
        })
        .collect();
    insert_all(&srv, &s, &rs);
    let funcs = |_: &str, col: &Column| {
        if col.iter().all(Value::is_number) {
            vec!["min", "max"]
        } else {
            vec!["last"]
        }
    };
    let want = reference(&rs, MIN, i64::MIN, i64::MAX, &funcs);

    // Expanded (the default): the REST windows of the full objects.
    let q = "&from=0&agg_window=1m&agg_default=min,max";
    let mut ws = connect(&url(&srv, &s, "read", q)).await;
    let got = windows_until_caught_up(&mut ws).await;
    assert_windows(&Value::Array(got), &want[..want.len() - 1]);

    // Compact: the outputs' schema first, then windows keyed by index.
    let mut ws = connect(&url(&srv, &s, "read", &format!("{q}&format=compact"))).await;
    let first = next_json(&mut ws).await;
    assert_eq!(
        first,
        json!({"type": "schema", "_schema": {"version": 1, "fields": [
            {"index": 1, "name": "temp_min", "type": "float64"},
            {"index": 2, "name": "temp_max", "type": "float64"},
            {"index": 3, "name": "n_min", "type": "int32"},
            {"index": 4, "name": "n_max", "type": "int32"},
            {"index": 5, "name": "state", "type": "string"},
        ]}})
    );
    let names: Vec<(String, String)> = first["_schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["index"].to_string(),
                f["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let got = windows_until_caught_up(&mut ws).await;
    assert_eq!(got.len(), want.len() - 1);
    let expanded: Vec<Value> = got
        .iter()
        .map(|w| {
            let data = w["data"].as_object().unwrap();
            let keys: Vec<&String> = data.keys().collect();
            assert_eq!(keys, ["1", "2", "3", "4", "5"], "{w}");
            let mut full = serde_json::Map::new();
            for (i, name) in &names {
                full.insert(name.clone(), data[i.as_str()].clone());
            }
            let mut w = w.clone();
            w["data"] = Value::Object(full);
            w
        })
        .collect();
    assert_windows(&Value::Array(expanded), &want[..want.len() - 1]);

    // REST still refuses the compact form of windows.
    let r = srv
        .get(&s.path("/data/range?since=1h&agg_window=1m&format=compact"))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        "format=compact does not apply to aggregated windows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_aggregation_parameters_are_refused_before_the_upgrade() {
    let srv = Server::start();
    let s = srv.json_store("sbad");
    let bin = srv.create_store("sbin", json!({"num_blocks": 8, "data_type": "binary"}));
    let text = srv.create_store("stext", json!({"num_blocks": 8, "data_type": "text"}));
    let fn_list = "expected one of avg, sum, min, max, count, first, last";
    let cases: Vec<(&Store, &str, String)> =
        vec![
        (&s, "agg_fields=temp:avg", "agg_fields and agg_default need agg_window".into()),
        (&s, "agg_default=sum", "agg_fields and agg_default need agg_window".into()),
        (&s, "agg_window=soon", "invalid agg_window: ".into()),
        (&s, "agg_window=0s", "invalid agg_window: ".into()),
        (
            &s,
            "agg_window=1m&agg_default=median",
            format!("unknown aggregation function \"median\": {fn_list}"),
        ),
        (
            &s,
            "agg_window=1m&agg_fields=temp",
            "invalid agg_fields entry \"temp\": expected field:function, fields as dotted paths"
                .into(),
        ),
        (
            &s,
            "agg_window=1m&agg_fields=temp:avg,temp:avg",
            "agg_fields names temp:avg twice".into(),
        ),
        (
            &s,
            "agg_window=1m&agg_default=avg,avg",
            "invalid agg_default \"avg,avg\": expected a function or a comma list of functions"
                .into(),
        ),
        (
            &bin,
            "agg_window=1m",
            "aggregation needs a json or schema store; this store holds binary".into(),
        ),
        (
            &text,
            "agg_window=1m",
            "aggregation needs a json or schema store; this store holds text".into(),
        ),
    ];
    for (store, q, message) in cases {
        match tokio_tungstenite::connect_async(url(&srv, store, "read", &format!("&{q}"))).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 400, "{q}");
                let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
                let got = body["error"].as_str().unwrap();
                assert!(got.starts_with(&message), "{q}: {got}");
                // The same message as REST.
                let rest = srv
                    .get(&store.path(&format!("/data/range?since=1h&{q}")))
                    .key(&store.key)
                    .send();
                assert_eq!((rest.status, rest.error()), (400, got.to_string()), "{q}");
            }
            other => panic!("{q}: expected 400, got {other:?}"),
        }
    }
    // Blank parameters are absent, as on REST: a plain stream.
    let mut ws = connect(&url(&srv, &s, "read", "&agg_window=&agg_fields=")).await;
    assert_eq!(next_json(&mut ws).await["type"], "caught_up");
}

// ---------------------------------------------------------------------------
// Push connections with aggregation.

/// `n` readings `{"v": i}` for `i` in `from..from + n`, 100 ms apart from
/// `t0`: ten per 1-second window when `t0` is on a second.
fn tenths(t0: i64, from: i64, n: i64) -> Vec<(i64, Value)> {
    (from..from + n)
        .map(|i| (t0 + i * SEC / 10, json!({ "v": i })))
        .collect()
}

/// The window of readings `first..first + count` of [`tenths`] as the
/// test's `v:sum,v:count` asks for it.
fn tenths_window(t0: i64, first: i64, count: i64, partial: bool) -> Value {
    let end = t0 + (first / 10 + 1) * SEC;
    let sum: i64 = (first..first + count).sum();
    json!({"timestamp": end, "count": count, "partial": partial,
           "data": {"v_sum": if partial { Value::Null } else { json!(sum) }, "v_count": count}})
}

fn ws_cursor(srv: &Server, s: &Store) -> i64 {
    let file = srv.data().join(&s.name).join("ws_connections.json");
    let text = std::fs::read_to_string(file).unwrap_or_default();
    serde_json::from_str::<Value>(&text).map_or(0, |v| {
        v["connections"][0]["last_timestamp"].as_i64().unwrap_or(0)
    })
}

/// The next window frame the remote receives, without its `type`.
async fn remote_window(remote: &mut Remote) -> Value {
    match remote.next().await {
        RemoteEvent::Frame(mut f) => {
            assert_eq!(f["type"], "data", "{f}");
            f.as_object_mut().unwrap().remove("type");
            f
        }
        e => panic!("expected a window, got {e:?}"),
    }
}

/// A push connection with `agg_window` through a `kill -9` in the middle
/// of a window, a restart, a graceful stop in the middle of the next one
/// and another restart: the cursor stays on raw readings (the newest
/// reading of the last window sent), so each window arrives whole, once,
/// after the partial one sent at the graceful stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_windows_survive_kill_and_restart_without_lost_or_doubled_readings() {
    let cfg = loopback_allowed("");
    let mut srv = Server::builder().config(&cfg).start();
    let s = srv.json_store("pagg");
    let t0 = past_hour();
    insert_all(&srv, &s, &tenths(t0, 0, 55));
    let mut remote = Remote::start(0, false).await;
    let c = create_conn(
        &srv,
        &s,
        json!({"mode": "push", "url": remote.url(), "agg_window": "1s",
               "agg_fields": "v:sum,v:count"}),
    );
    assert_eq!(
        (&c["agg_window"], &c["agg_fields"], &c["agg_default"]),
        (&json!("1s"), &json!("v:sum,v:count"), &Value::Null),
        "{c}"
    );
    let id = c["id"].as_str().unwrap().to_string();
    remote.connected().await;
    // Windows 0..=4 are closed; window 5 (readings 50..=54) is open.
    for k in 0..5 {
        assert_windows(
            &Value::Array(vec![remote_window(&mut remote).await]),
            &[tenths_window(t0, k * 10, 10, false)],
        );
    }
    // The cursor is the newest reading of window 4, not reading 54.
    let last4 = t0 + 49 * SEC / 10;
    wait_conn(&srv, &s, &id, "cursor", |v| v["last_timestamp"] == last4);
    assert!(
        super::common::eventually(Duration::from_secs(5), || ws_cursor(&srv, &s) == last4),
        "persisted cursor {}",
        ws_cursor(&srv, &s)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ws_cursor(&srv, &s), last4, "never past the sent windows");

    // kill -9 in the middle of window 5.
    signal(srv.pid(), "KILL");
    srv.wait_exit();
    let srv2 = Server::builder().data_dir(srv.data()).config(&cfg).start();
    remote.connected_after_close().await;
    insert_all(&srv2, &s, &tenths(t0, 55, 6));
    // Window 5 whole: its readings before the kill were read again.
    assert_windows(
        &Value::Array(vec![remote_window(&mut remote).await]),
        &[tenths_window(t0, 50, 10, false)],
    );
    let status = status_conn(&srv2, &s, &id);
    assert_eq!(status["agg_fields"], "v:sum,v:count", "persisted: {status}");

    // A graceful stop in the middle of window 6: it goes out, partial.
    let mut srv2 = srv2;
    let last5 = t0 + 59 * SEC / 10;
    wait_conn(&srv2, &s, &id, "cursor", |v| v["last_timestamp"] == last5);
    srv2.stop();
    assert_windows(
        &Value::Array(vec![remote_window(&mut remote).await]),
        &[tenths_window(t0, 60, 1, true)],
    );
    let srv3 = Server::builder().data_dir(srv.data()).config(&cfg).start();
    remote.connected_after_close().await;
    insert_all(&srv3, &s, &tenths(t0, 61, 10));
    // Window 6 again, whole and complete: reading 60 counted in it once.
    assert_windows(
        &Value::Array(vec![remote_window(&mut remote).await]),
        &[tenths_window(t0, 60, 10, false)],
    );
    assert!(remote.quiet_for(Duration::from_millis(500)).await.is_none());
}

/// The next frame the remote receives, which must be an alert or a window
/// (`type` kept).
async fn remote_frame(remote: &mut Remote) -> Value {
    match remote.next().await {
        RemoteEvent::Frame(f) => f,
        e => panic!("expected a frame, got {e:?}"),
    }
}

/// The alert of rule `hi` for reading `i` of [`tenths`].
fn tenths_alert(t0: i64, i: i64) -> Value {
    json!({"type": "alert", "rule": "hi", "timestamp": t0 + i * SEC / 10, "data": {"v": i}})
}

/// Checks `got` (frames of the remote) against `want` (alerts of
/// [`tenths_alert`], windows of [`tenths_window`] with `type` `data`),
/// in order; an alert's `fired_at` is the server's clock, not compared.
fn assert_frames(got: &[Value], want: &[Value]) {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("fired_at");
        }
        v
    };
    let got: Vec<Value> = got.iter().map(strip).collect();
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        if w["type"] == "data" {
            let mut g = g.clone();
            g.as_object_mut().unwrap().remove("type");
            let mut w = w.clone();
            w.as_object_mut().unwrap().remove("type");
            assert_windows(&Value::Array(vec![g]), &[w]);
        } else {
            assert_eq!(g, w);
        }
    }
}

fn typed(mut w: Value) -> Value {
    w["type"] = json!("data");
    w
}

/// Rules and `agg_window` together on a push connection: each reading
/// that matches gives one alert (cooldown 0) with its timestamp and data,
/// sent right after the windows its reading closed, so before the window
/// holding it; through a `kill -9` in the middle of a window and a
/// restart the windows still cover every reading once, and the readings
/// of the open window, read again, fire again (the README: "An object
/// sent again after a reconnect is evaluated again").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rules_with_windows_alert_before_their_window_through_kill_and_restart() {
    let cfg = loopback_allowed("");
    let mut srv = Server::builder().config(&cfg).start();
    let s = srv.json_store("prules");
    let t0 = past_hour();
    insert_all(&srv, &s, &tenths(t0, 0, 55));
    let mut remote = Remote::start(0, false).await;
    let c = create_conn(
        &srv,
        &s,
        json!({"mode": "push", "url": remote.url(), "agg_window": "1s",
               "agg_fields": "v:sum,v:count",
               "rules": [{"name": "hi", "condition": "v >= 42", "cooldown": "0"}]}),
    );
    assert_eq!(c["rules_count"], 1, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    remote.connected().await;
    // Windows 0..=3, the alerts of 42..=49, window 4 (closed by reading
    // 50), then the alerts of 50..=54 (window 5 stays open).
    let mut want: Vec<Value> = (0..4)
        .map(|k| typed(tenths_window(t0, k * 10, 10, false)))
        .collect();
    want.extend((42..50).map(|i| tenths_alert(t0, i)));
    want.push(typed(tenths_window(t0, 40, 10, false)));
    want.extend((50..55).map(|i| tenths_alert(t0, i)));
    let mut got = Vec::new();
    for _ in 0..want.len() {
        got.push(remote_frame(&mut remote).await);
    }
    assert_frames(&got, &want);
    assert!(remote.quiet_for(Duration::from_millis(300)).await.is_none());
    let last4 = t0 + 49 * SEC / 10;
    wait_conn(&srv, &s, &id, "cursor", |v| {
        v["last_timestamp"] == last4 && v["alerts_fired"] == 13
    });
    assert!(
        super::common::eventually(Duration::from_secs(5), || ws_cursor(&srv, &s) == last4),
        "persisted cursor {}",
        ws_cursor(&srv, &s)
    );

    // kill -9 in the middle of window 5.
    signal(srv.pid(), "KILL");
    srv.wait_exit();
    let srv2 = Server::builder().data_dir(srv.data()).config(&cfg).start();
    remote.connected_after_close().await;
    insert_all(&srv2, &s, &tenths(t0, 55, 16));
    // Readings 50..=54 are read again: they fire again; window 5 whole,
    // after the alerts of its readings; window 6 after 60..=69's alerts.
    let mut want: Vec<Value> = (50..60).map(|i| tenths_alert(t0, i)).collect();
    want.push(typed(tenths_window(t0, 50, 10, false)));
    want.extend((60..70).map(|i| tenths_alert(t0, i)));
    want.push(typed(tenths_window(t0, 60, 10, false)));
    want.push(tenths_alert(t0, 70));
    let mut got = Vec::new();
    for _ in 0..want.len() {
        got.push(remote_frame(&mut remote).await);
    }
    assert_frames(&got, &want);
    assert!(remote.quiet_for(Duration::from_millis(500)).await.is_none());
    // So windows 0..=6 came once each, whole: readings 0..=69 each in
    // exactly one window.
    let status = status_conn(&srv2, &s, &id);
    assert_eq!(
        status["alerts_fired"], 21,
        "counted since the restart: {status}"
    );
}

#[test]
fn push_and_pull_creates_check_the_aggregation_parameters() {
    let srv = Server::builder().config(&loopback_allowed("")).start();
    let s = srv.json_store("pbad");
    let bin = srv.create_store("pbin", json!({"num_blocks": 8, "data_type": "binary"}));
    for (store, body, message) in [
        (&s, json!({"agg_window": "soon"}), "invalid agg_window: "),
        (
            &s,
            json!({"agg_fields": "v:sum"}),
            "agg_fields and agg_default need agg_window",
        ),
        (
            &s,
            json!({"agg_window": "1m", "agg_default": "median"}),
            "unknown aggregation function \"median\"",
        ),
        (
            &s,
            json!({"agg_window": 60}),
            "invalid agg_window: must be a string",
        ),
        (
            &bin,
            json!({"agg_window": "1m"}),
            "aggregation needs a json or schema store; this store holds binary",
        ),
        (
            &s,
            json!({"mode": "pull", "agg_window": "1m"}),
            "aggregation applies to push connections",
        ),
    ] {
        let mut b = json!({"mode": "push", "url": "ws://127.0.0.1:9"});
        for (k, v) in body.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = srv
            .post(&store.path("/ws/connections"))
            .key(&store.key)
            .json(&b)
            .send();
        assert_eq!(r.status, 400, "{b}: {}", r.text());
        assert!(r.error().starts_with(message), "{b}: {}", r.error());
    }
}

/// A remote that acks (as tsstore's `/ws/write` does) acks a window's
/// `timestamp`, its end: the cursor moves to the window's newest reading,
/// not to the end (which lies past readings of the open window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_window_moves_the_cursor_to_its_newest_reading() {
    let srv = Server::builder().config(&loopback_allowed("")).start();
    let s = srv.json_store("pack");
    let t0 = past_hour();
    // Readings 0..25: windows 0 and 1 closed, window 2 open. Window 1's
    // end is reading 20's timestamp: an ack taken as a reading's would put
    // the cursor on reading 20, and a restart would skip it.
    insert_all(&srv, &s, &tenths(t0, 0, 25));
    let mut remote = Remote::start(0, true).await;
    let c = create_conn(
        &srv,
        &s,
        json!({"mode": "push", "url": remote.url(), "agg_window": "1s",
               "agg_fields": "v:sum,v:count"}),
    );
    let id = c["id"].as_str().unwrap().to_string();
    remote.connected().await;
    for k in 0..2 {
        assert_windows(
            &Value::Array(vec![remote_window(&mut remote).await]),
            &[tenths_window(t0, k * 10, 10, false)],
        );
    }
    let last1 = t0 + 19 * SEC / 10;
    wait_conn(&srv, &s, &id, "acked", |v| v["last_timestamp"] == last1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status_conn(&srv, &s, &id)["last_timestamp"], last1);
}

// ---------------------------------------------------------------------------
// MQTT sinks with aggregation.

const MS: i64 = 1_000_000;

fn sink_server(data: &Path, sock: &Path) -> Server {
    Server::builder()
        .config(&loopback_allowed(""))
        .socket(sock)
        .data_dir(data)
        .start()
}

/// Writes `{"i": i}` at `t0 + i` ms from `i = from` on through the Unix
/// socket, a few a millisecond, until the server goes away.
fn write_ms_until_gone(sock: &Path, s: &Store, t0: i64, from: i64) {
    let stream = UnixStream::connect(sock).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    writeln!(w, "AUTH {} {}", s.name, s.key).unwrap();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "OK");
    for i in from.. {
        let sent = writeln!(
            w,
            "{{\"timestamp\":{},\"data\":{{\"i\":{i}}}}}",
            t0 + i * MS
        );
        line.clear();
        if sent.is_err() || r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("OK "), "{line}");
        if i % 4 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The index of the newest reading stored.
fn newest_i(srv: &Server, s: &Store) -> i64 {
    let r = srv.get(&s.path("/data/newest?limit=1")).key(&s.key).send();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["objects"][0]["data"]["i"].as_i64().unwrap()
}

/// Every window published, by end; a window published twice (sent again
/// from a cursor persisted a moment before a kill) must be the same
/// window. Partial ones are kept apart.
fn collect_windows(
    sub: &Subscriber,
    complete: &mut BTreeMap<i64, Value>,
    partial: &mut Vec<Value>,
) {
    for (_, p) in sub.take(usize::MAX, Duration::from_secs(3)) {
        let mut w: Value = serde_json::from_str(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_eq!(w["type"], "data", "{w}");
        w.as_object_mut().unwrap().remove("type");
        let end = w["timestamp"].as_i64().unwrap();
        if w["partial"] == true {
            partial.push(w);
            continue;
        }
        if let Some(seen) = complete.get(&end) {
            assert_eq!(seen, &w, "a window published twice differs");
        }
        complete.insert(end, w);
    }
}

/// An MQTT sink with `agg_window` through a `kill -9` of the server while
/// readings are being written, then a graceful stop in the middle of a
/// window: the windows published cover every reading exactly once (each
/// window whole: its count, first and last reading), and the window open
/// at the graceful stop is published partial, then again whole.
#[test]
fn mqtt_sink_windows_survive_kill_and_restart_without_lost_or_doubled_readings() {
    let m = Mosquitto::start();
    let sub = m.subscribe("agg/#");
    let dir = tempfile::tempdir().unwrap();
    let (data, sock) = (dir.path().join("data"), dir.path().join("t.sock"));
    let mut srv = sink_server(&data, &sock);
    let s = srv.create_store("s", json!({ "num_blocks": 4096 }));
    let t0 = past_hour();
    let c = {
        let r = srv
            .post(&s.path("/mqtt/connections"))
            .key(&s.key)
            .json(
                &json!({ "broker_url": m.url(), "topic": "agg/s", "cursor_persist_interval": 1,
                           "agg_window": "10ms", "agg_fields": "i:count,i:min,i:max" }),
            )
            .send();
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    };
    assert_eq!(
        (&c["agg_window"], &c["agg_fields"], &c["agg_default"]),
        (&json!("10ms"), &json!("i:count,i:min,i:max"), &Value::Null),
        "{c}"
    );
    let id = c["id"].as_str().unwrap().to_string();

    // kill -9 while readings are written, a while after the cursor was
    // first persisted (so the restart resumes from a cursor that lags).
    let writer = {
        let (sock, s) = (sock.clone(), s.clone());
        std::thread::spawn(move || write_ms_until_gone(&sock, &s, t0, 0))
    };
    let file = data.join("s").join("mqtt_connections.json");
    assert!(super::common::eventually(Duration::from_secs(20), || {
        persisted(&file) > t0
    }));
    std::thread::sleep(Duration::from_millis(1500));
    signal(srv.pid(), "KILL");
    srv.wait_exit();
    writer.join().unwrap();
    drop(srv);
    let mut complete = BTreeMap::new();
    let mut partial = Vec::new();
    collect_windows(&sub, &mut complete, &mut partial);

    let srv = sink_server(&data, &sock);
    let killed_at = newest_i(&srv, &s);
    // Readings up to the middle of a window, then a graceful stop.
    let half = (killed_at / 10 + 2) * 10 + 5;
    let body: String = (killed_at + 1..=half)
        .map(|i| json!({"timestamp": t0 + i * MS, "data": {"i": i}}).to_string() + "\n")
        .collect();
    let r = srv
        .post(&s.path("/data"))
        .key(&s.key)
        .body("application/x-ndjson", body)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    wait_mqtt(&srv, &s, &id, |v| {
        v["last_timestamp"] == t0 + (half - 6) * MS
    });
    let mut srv = srv;
    srv.stop();
    collect_windows(&sub, &mut complete, &mut partial);
    // The open window, partial: readings half-5..=half.
    let last_partial = partial.last().expect("the open window at the stop").clone();
    assert_eq!(last_partial["count"], 6, "{last_partial}");
    assert_eq!(last_partial["data"]["i_min"], half - 5, "{last_partial}");

    // Again: the rest of that window and one reading past it.
    let srv = sink_server(&data, &sock);
    let body: String = (half + 1..=half + 5)
        .map(|i| json!({"timestamp": t0 + i * MS, "data": {"i": i}}).to_string() + "\n")
        .collect();
    let r = srv
        .post(&s.path("/data"))
        .key(&s.key)
        .body("application/x-ndjson", body)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    collect_windows(&sub, &mut complete, &mut partial);

    // Every window 0..=(half+5)/10 - 1 is there, once, whole.
    let closed = (half + 5) / 10;
    let ends: Vec<i64> = complete.keys().copied().collect();
    let want: Vec<i64> = (0..closed).map(|k| t0 + (k + 1) * 10 * MS).collect();
    assert_eq!(ends, want, "every closed window, once");
    for (k, w) in complete.values().enumerate() {
        let k = k as i64;
        assert_eq!(
            w["data"],
            json!({"i_count": 10, "i_min": k * 10, "i_max": k * 10 + 9}),
            "{w}"
        );
        assert_eq!(w["count"], 10, "{w}");
    }
    let total: i64 = complete
        .values()
        .map(|w| w["count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, closed * 10, "no reading lost or counted twice");
    let _ = killed_at;
}

fn persisted(file: &Path) -> i64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    serde_json::from_str::<Value>(&text).map_or(0, |v| {
        v["connections"][0]["last_timestamp"].as_i64().unwrap_or(0)
    })
}

fn wait_mqtt(srv: &Server, s: &Store, id: &str, f: impl Fn(&Value) -> bool) {
    let get = || {
        srv.get(&s.path(&format!("/mqtt/connections/{id}")))
            .key(&s.key)
            .send()
            .json()
    };
    assert!(
        super::common::eventually(Duration::from_secs(20), || f(&get())),
        "{}",
        get()
    );
}

/// The next `n` messages of `sub` on `topic`, parsed, `fired_at` left out.
fn next_messages(sub: &Subscriber, topic: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|k| {
            let (t, p) = sub
                .next(Duration::from_secs(20))
                .unwrap_or_else(|| panic!("message {k} of {n}"));
            assert_eq!(t, topic);
            let mut v: Value = serde_json::from_str(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            v.as_object_mut().unwrap().remove("fired_at");
            v
        })
        .collect()
}

/// Rules and `agg_window` together on an MQTT sink with `retain: true`:
/// alerts go out on the topic right after the windows their reading
/// closed, never retained (a fresh subscriber gets a window), and their
/// acks never move the cursor into the open window (the persisted cursor
/// stays on the last closed window's newest reading while alerts of the
/// open window's readings are acknowledged); after `kill -9` and a
/// restart no window is lost or split.
#[test]
fn mqtt_sink_rules_with_windows_never_retain_alerts_nor_split_windows() {
    let m = Mosquitto::start();
    let sub = m.subscribe("ragg/#");
    let dir = tempfile::tempdir().unwrap();
    let (data, sock) = (dir.path().join("data"), dir.path().join("t.sock"));
    let mut srv = sink_server(&data, &sock);
    let s = srv.json_store("magg");
    let t0 = past_hour();
    let c = {
        let r = srv
            .post(&s.path("/mqtt/connections"))
            .key(&s.key)
            .json(
                &json!({ "broker_url": m.url(), "topic": "ragg/s", "retain": true,
                           "cursor_persist_interval": 1, "agg_window": "1s",
                           "agg_fields": "v:sum,v:count",
                           "rules": [{"name": "hi", "condition": "v >= 42", "cooldown": "0"}] }),
            )
            .send();
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    };
    let id = c["id"].as_str().unwrap().to_string();
    // Small batches, so that alerts are rendered while earlier windows
    // still wait for their acks.
    for from in (0..55).step_by(5) {
        insert_all(&srv, &s, &tenths(t0, from, 5));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut want: Vec<Value> = (0..4)
        .map(|k| typed(tenths_window(t0, k * 10, 10, false)))
        .collect();
    want.extend((42..50).map(|i| tenths_alert(t0, i)));
    want.push(typed(tenths_window(t0, 40, 10, false)));
    want.extend((50..55).map(|i| tenths_alert(t0, i)));
    assert_frames(&next_messages(&sub, "ragg/s", want.len()), &want);
    assert!(sub.next(Duration::from_millis(500)).is_none());

    // The alerts of 50..=54 are acknowledged: the cursor, in memory and
    // persisted, stays on reading 49, the newest of window 4.
    let last4 = t0 + 49 * SEC / 10;
    wait_mqtt(&srv, &s, &id, |v| {
        v["last_timestamp"] == last4 && v["messages_sent"] == want.len()
    });
    let file = data.join("magg").join("mqtt_connections.json");
    assert!(
        super::common::eventually(Duration::from_secs(10), || persisted(&file) == last4),
        "persisted cursor {}",
        persisted(&file)
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(persisted(&file), last4, "never into the open window");

    // The retained message is window 4, not the last alert.
    let fresh = m.subscribe("ragg/#");
    let retained = next_messages(&fresh, "ragg/s", 1);
    assert_frames(&retained, &[typed(tenths_window(t0, 40, 10, false))]);
    drop(fresh);

    // kill -9 in the middle of window 5, a restart, more readings.
    signal(srv.pid(), "KILL");
    srv.wait_exit();
    drop(srv);
    let srv = sink_server(&data, &sock);
    for from in (55..71).step_by(4) {
        insert_all(&srv, &s, &tenths(t0, from, (71 - from).min(4)));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Readings 50..=54 are read again and fire again; window 5 whole.
    let mut want: Vec<Value> = (50..60).map(|i| tenths_alert(t0, i)).collect();
    want.push(typed(tenths_window(t0, 50, 10, false)));
    want.extend((60..70).map(|i| tenths_alert(t0, i)));
    want.push(typed(tenths_window(t0, 60, 10, false)));
    want.push(tenths_alert(t0, 70));
    assert_frames(&next_messages(&sub, "ragg/s", want.len()), &want);
    assert!(sub.next(Duration::from_millis(500)).is_none());
    let last6 = t0 + 69 * SEC / 10;
    wait_mqtt(&srv, &s, &id, |v| v["last_timestamp"] == last6);
    assert!(
        super::common::eventually(Duration::from_secs(10), || persisted(&file) == last6),
        "persisted cursor {}",
        persisted(&file)
    );
    let fresh = m.subscribe("ragg/#");
    assert_frames(
        &next_messages(&fresh, "ragg/s", 1),
        &[typed(tenths_window(t0, 60, 10, false))],
    );
}

#[test]
fn mqtt_sink_creates_check_the_aggregation_parameters() {
    let srv = Server::start();
    let s = srv.json_store("mbad");
    let text = srv.create_store("mtext", json!({"num_blocks": 8, "data_type": "text"}));
    for (store, body, message) in [
        (&s, json!({"agg_window": "0s"}), "invalid agg_window: "),
        (
            &s,
            json!({"agg_default": "avg"}),
            "agg_fields and agg_default need agg_window",
        ),
        (
            &s,
            json!({"agg_window": "1m", "agg_fields": "a:avg,a:avg"}),
            "agg_fields names a:avg twice",
        ),
        (
            &s,
            json!({"agg_fields": ["a:avg"], "agg_window": "1m"}),
            "invalid agg_fields: must be a string",
        ),
        (
            &text,
            json!({"agg_window": "1m"}),
            "aggregation needs a json or schema store; this store holds text",
        ),
    ] {
        let mut b = json!({"broker_url": "tcp://127.0.0.1:1", "topic": "t"});
        for (k, v) in body.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = srv
            .post(&store.path("/mqtt/connections"))
            .key(&store.key)
            .json(&b)
            .send();
        assert_eq!(r.status, 400, "{b}: {}", r.text());
        assert!(r.error().starts_with(message), "{b}: {}", r.error());
    }
}

// ---------------------------------------------------------------------------
// Compact windows on push connections and MQTT sinks.

/// A schema store (`temp` float64, `n` int32) holding readings 0..25 of
/// [`tenths`]-like spacing: windows 0 and 1 closed, window 2 open.
fn compact_store(srv: &Server, name: &str) -> (Store, i64) {
    let s = srv.create_store(name, json!({"num_blocks": 64, "data_type": "schema"}));
    let schema = json!({"fields": [
        {"index": 1, "name": "temp", "type": "float64"},
        {"index": 2, "name": "n", "type": "int32"},
    ]});
    let r = srv.put(&s.path("/schema")).key(&s.key).json(&schema).send();
    assert_eq!(r.status, 200, "{}", r.text());
    let t0 = past_hour();
    let rs: Vec<(i64, Value)> = (0..25)
        .map(|i| {
            (
                t0 + i * SEC / 10,
                json!({"temp": 20.0 + i as f64 / 4.0, "n": i}),
            )
        })
        .collect();
    insert_all(srv, &s, &rs);
    (s, t0)
}

/// The schema message of [`compact_store`] with `agg_default=min,max`.
fn compact_schema() -> Value {
    json!({"type": "schema", "_schema": {"version": 1, "fields": [
        {"index": 1, "name": "temp_min", "type": "float64"},
        {"index": 2, "name": "temp_max", "type": "float64"},
        {"index": 3, "name": "n_min", "type": "int32"},
        {"index": 4, "name": "n_max", "type": "int32"},
    ]}})
}

/// Window `k` of [`compact_store`], compact.
fn compact_window(t0: i64, k: i64) -> Value {
    let (a, b) = (k * 10, k * 10 + 9);
    json!({"type": "data", "timestamp": t0 + (k + 1) * SEC, "count": 10, "partial": false,
           "data": {"1": 20.0 + a as f64 / 4.0, "2": 20.0 + b as f64 / 4.0, "3": a, "4": b}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compact_push_connection_starts_with_the_schema_frame() {
    let srv = Server::builder().config(&loopback_allowed("")).start();
    let (s, t0) = compact_store(&srv, "pcomp");
    let mut remote = Remote::start(0, false).await;
    create_conn(
        &srv,
        &s,
        json!({"mode": "push", "url": remote.url(), "format": "compact",
               "agg_window": "1s", "agg_default": "min,max"}),
    );
    remote.connected().await;
    let mut got = Vec::new();
    for _ in 0..3 {
        match remote.next().await {
            RemoteEvent::Frame(f) => got.push(f),
            e => panic!("expected a frame, got {e:?}"),
        }
    }
    assert_eq!(got[0], compact_schema());
    assert_eq!(got[1], compact_window(t0, 0));
    assert_eq!(got[2], compact_window(t0, 1));
}

#[test]
fn a_compact_mqtt_sink_starts_with_the_schema_message() {
    let m = Mosquitto::start();
    let sub = m.subscribe("comp/#");
    let srv = Server::builder().config(&loopback_allowed("")).start();
    let (s, t0) = compact_store(&srv, "mcomp");
    let r = srv
        .post(&s.path("/mqtt/connections"))
        .key(&s.key)
        .json(
            &json!({"broker_url": m.url(), "topic": "comp/s", "format": "compact",
                      "agg_window": "1s", "agg_default": "min,max"}),
        )
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let got: Vec<Value> = sub
        .take(3, Duration::from_secs(10))
        .iter()
        .map(|(_, p)| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            compact_schema(),
            compact_window(t0, 0),
            compact_window(t0, 1)
        ]
    );
}
