//! The WebSocket read and write streams of the real binary, spoken to by
//! real tokio-tungstenite clients over loopback.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::common::{insert_n, Server, Store};

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(super) const WAIT: Duration = Duration::from_secs(10);

pub(super) fn url(srv: &Server, s: &Store, stream: &str, query: &str) -> String {
    format!(
        "ws://{}{}?api_key={}{}",
        srv.addr,
        s.path(&format!("/ws/{stream}")),
        s.key,
        query
    )
}

pub(super) async fn connect(url: &str) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(resp.status(), 101);
    ws
}

/// The next text frame as JSON (pings and pongs skipped); panics on close
/// or after 10 s.
pub(super) async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame within 10 s")
            .expect("stream ended")
            .expect("read error");
        match m {
            Message::Text(t) => return serde_json::from_str(&t).expect("frame is JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Waits for the server to close the stream; returns the close code.
pub(super) async fn closed(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("not closed within 10 s")
        {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return None,
        }
    }
}

fn insert(srv: &Server, s: &Store, body: Value) -> Value {
    let r = srv.post(&s.path("/data")).key(&s.key).json(&body).send();
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_oldest_sends_history_then_caught_up_then_live() {
    let srv = Server::start();
    let s = srv.json_store("r1");
    insert_n(&srv, &s, 100, 5);
    let mut ws = connect(&url(&srv, &s, "read", "&from=0")).await;
    for t in 100..105 {
        let f = next_json(&mut ws).await;
        super::common::assert_data_frame(&f, t, &json!({ "n": t }));
        assert_eq!(f["size"], json!({ "n": t }).to_string().len());
    }
    assert_eq!(next_json(&mut ws).await, json!({ "type": "caught_up" }));
    // Live: each insert arrives without polling delay.
    let srv2 = std::sync::Arc::new(srv);
    for t in 200..203 {
        let (srv3, s3) = (srv2.clone(), s.clone());
        tokio::task::spawn_blocking(move || {
            insert(&srv3, &s3, json!({ "timestamp": t, "data": { "live": t } }))
        })
        .await
        .unwrap();
        let f = next_json(&mut ws).await;
        assert_eq!(
            (f["type"].as_str(), f["timestamp"].as_i64()),
            (Some("data"), Some(t))
        );
        assert_eq!(f["data"], json!({ "live": t }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_now_from_a_timestamp_and_with_filters() {
    let srv = Server::start();
    let s = srv.json_store("r2");
    for (t, city) in [(10, "Oslo"), (20, "oslo"), (30, "Bergen"), (40, "OSLO")] {
        insert(
            &srv,
            &s,
            json!({ "timestamp": t, "data": { "city": city } }),
        );
    }
    // Default from=now: caught_up first, no history.
    let mut now = connect(&url(&srv, &s, "read", "")).await;
    assert_eq!(next_json(&mut now).await["type"], "caught_up");
    // from=N: timestamps >= N.
    let mut at = connect(&url(&srv, &s, "read", "&from=20")).await;
    for t in [20, 30, 40] {
        assert_eq!(next_json(&mut at).await["timestamp"], t);
    }
    assert_eq!(next_json(&mut at).await["type"], "caught_up");
    // Filters apply to history and live data alike.
    let mut f = connect(&url(&srv, &s, "read", "&from=0&filter=oslo")).await;
    assert_eq!(next_json(&mut f).await["timestamp"], 20);
    assert_eq!(next_json(&mut f).await["type"], "caught_up");
    let mut fi = connect(&url(
        &srv,
        &s,
        "read",
        "&from=0&filter=oslo&filter_ignore_case=true",
    ))
    .await;
    for t in [10, 20, 40] {
        assert_eq!(next_json(&mut fi).await["timestamp"], t);
    }
    assert_eq!(next_json(&mut fi).await["type"], "caught_up");
    insert(
        &srv,
        &s,
        json!({ "timestamp": 50, "data": { "city": "Trondheim" } }),
    );
    insert(
        &srv,
        &s,
        json!({ "timestamp": 60, "data": { "city": "Oslo" } }),
    );
    assert_eq!(next_json(&mut now).await["timestamp"], 50);
    assert_eq!(next_json(&mut now).await["timestamp"], 60);
    assert_eq!(next_json(&mut fi).await["timestamp"], 60);
    // The case-sensitive reader skipped both; the next match comes next.
    insert(
        &srv,
        &s,
        json!({ "timestamp": 70, "data": { "city": "oslo" } }),
    );
    assert_eq!(next_json(&mut f).await["timestamp"], 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_errors_bad_from_and_auth() {
    let srv = Server::start();
    let s = srv.json_store("r3");
    let other = srv.json_store("r3b");
    // A bad `from` (negative included) is a 400 JSON before the upgrade.
    for from in ["abc", "-1"] {
        match tokio_tungstenite::connect_async(url(&srv, &s, "read", &format!("&from={from}")))
            .await
        {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 400);
                let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
                assert!(body["error"].as_str().unwrap().contains(from), "{body}");
            }
            other => panic!("expected 400, got {other:?}"),
        }
    }
    // Auth fails before the upgrade, with the REST API's 401 JSON.
    for (q, key) in [
        ("", "".to_string()),
        (
            "",
            "tsstore_00000000-0000-4000-8000-000000000000".to_string(),
        ),
        ("", other.key.clone()),
    ] {
        let u = format!("ws://{}{}?api_key={key}{q}", srv.addr, s.path("/ws/read"));
        match tokio_tungstenite::connect_async(&u).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 401);
                let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
                assert!(body["error"].is_string(), "{body}");
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }
    // An unknown store: 404 JSON.
    let u = format!(
        "ws://{}/api/stores/nope/ws/write?api_key={}",
        srv.addr, s.key
    );
    match tokio_tungstenite::connect_async(&u).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    // A plain GET (no upgrade) is a client error with a JSON body.
    let r = srv.get(&s.path("/ws/read")).key(&s.key).send();
    assert!((400..500).contains(&r.status), "{}", r.status);
    assert!(r.json()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_acks_each_message_in_order_and_survives_bad_ones() {
    let srv = Server::start();
    let s = srv.json_store("w1");
    let mut ws = connect(&url(&srv, &s, "write", "")).await;
    let good = |t: i64| json!({ "timestamp": t, "data": { "v": t } }).to_string();
    let cases: Vec<(String, Option<i64>)> = vec![
        (good(1000), Some(1000)),
        ("{not json".into(), None),
        (json!({ "timestamp": 5 }).to_string(), None), // no data
        (good(900), None),                             // out of order
        (json!({ "timestamp": -3, "data": 1 }).to_string(), None),
        (good(2000), Some(2000)),
        (json!({ "data": { "now": true } }).to_string(), Some(0)),
    ];
    for (m, _) in &cases {
        ws.send(Message::Text(m.clone().into())).await.unwrap();
    }
    let mut last = 0;
    for (m, want) in &cases {
        let f = next_json(&mut ws).await;
        match want {
            Some(t) => {
                assert_eq!(f["type"], "ack", "{m} -> {f}");
                let keys: Vec<&str> = f.as_object().unwrap().keys().map(|k| k.as_str()).collect();
                assert_eq!(keys, ["type", "timestamp", "block_num", "size"]);
                let ts = f["timestamp"].as_i64().unwrap();
                if *t != 0 {
                    assert_eq!(ts, *t);
                }
                assert!(ts > last, "acks in order");
                last = ts;
            }
            None => {
                assert_eq!(f["type"], "error", "{m} -> {f}");
                assert!(!f["message"].as_str().unwrap().is_empty());
            }
        }
    }
    // The connection still works, and exactly the good messages are stored.
    ws.send(Message::Text(json!({ "data": "again" }).to_string().into()))
        .await
        .unwrap();
    let f = next_json(&mut ws).await;
    assert_eq!(f["type"], "ack", "{f}");
    assert!(f["timestamp"].as_i64().unwrap() > last);
    let r = srv.get(&s.path("/stats")).key(&s.key).send();
    assert_eq!(r.json()["object_count"], 4);
    let r = srv.get(&s.path("/data/time/2000")).key(&s.key).send();
    assert_eq!(r.json()["data"], json!({ "v": 2000 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_error_messages_match_the_rest_api() {
    let srv = Server::start();
    let s = srv.json_store("w2");
    let mut ws = connect(&url(&srv, &s, "write", "")).await;
    insert(&srv, &s, json!({ "timestamp": 500, "data": 1 }));
    for (m, want) in [
        (
            json!({ "timestamp": 400, "data": 1 }).to_string(),
            "timestamp must be greater than newest entry",
        ),
        (json!({ "timestamp": 600 }).to_string(), "data is required"),
        (
            json!({ "timestamp": -1, "data": 1 }).to_string(),
            "invalid timestamp",
        ),
    ] {
        ws.send(Message::Text(m.into())).await.unwrap();
        assert_eq!(
            next_json(&mut ws).await,
            json!({ "type": "error", "message": want })
        );
    }
    // Binary frames carry JSON too.
    ws.send(Message::Binary(
        json!({ "timestamp": 700, "data": 2 })
            .to_string()
            .into_bytes()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["timestamp"], 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_pipelined_thousands_then_read_them_back_live() {
    let srv = Server::start();
    let s = srv.create_store("w3", json!({ "num_blocks": 512 }));
    let mut reader = connect(&url(&srv, &s, "read", "")).await;
    assert_eq!(next_json(&mut reader).await["type"], "caught_up");
    let mut ws = connect(&url(&srv, &s, "write", "")).await;
    const N: usize = 3000;
    for i in 0..N {
        ws.feed(Message::Text(
            json!({ "data": { "i": i } }).to_string().into(),
        ))
        .await
        .unwrap();
    }
    ws.flush().await.unwrap();
    let mut acked = Vec::with_capacity(N);
    for i in 0..N {
        let f = next_json(&mut ws).await;
        assert_eq!(f["type"], "ack", "message {i}: {f}");
        acked.push(f["timestamp"].as_i64().unwrap());
    }
    assert!(
        acked.windows(2).all(|w| w[0] < w[1]),
        "timestamps strictly increase"
    );
    for (i, t) in acked.iter().enumerate() {
        let f = next_json(&mut reader).await;
        assert_eq!(
            (f["timestamp"].as_i64(), &f["data"]),
            (Some(*t), &json!({ "i": i }))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_overtaken_by_the_ring_gets_a_gap_with_the_exact_loss() {
    let srv = Server::start();
    // 32 blocks of 4 KiB: each 3 KiB object takes a block of its own.
    let s = srv.create_store("gap", json!({ "num_blocks": 32 }));
    // A reader that does not read: tiny receive buffer, then it waits.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(srv.addr).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(url(&srv, &s, "read", ""), MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "caught_up");
    let pad = "x".repeat(3000);
    const N: i64 = 3000;
    let (srv, s2) = (std::sync::Arc::new(srv), s.clone());
    let writer = srv.clone();
    tokio::task::spawn_blocking(move || {
        for chunk in (1..=N).collect::<Vec<_>>().chunks(100) {
            let body: String = chunk
                .iter()
                .map(|t| {
                    json!({ "timestamp": t, "data": { "t": t, "pad": pad } }).to_string() + "\n"
                })
                .collect();
            let r = writer
                .post(&s2.path("/data"))
                .key(&s2.key)
                .body("application/x-ndjson", body)
                .send();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["failed"], 0);
        }
    })
    .await
    .unwrap();
    // Now read everything: data in order, one or more gaps, and together
    // they account for every object written.
    let (mut got, mut lost, mut last, mut gaps) = (0i64, 0i64, 0i64, 0);
    while last < N {
        let f = next_json(&mut ws).await;
        match f["type"].as_str().unwrap() {
            "data" => {
                let t = f["timestamp"].as_i64().unwrap();
                assert!(t > last, "in order: {t} after {last}");
                assert_eq!(f["data"]["t"], t);
                got += 1;
                last = t;
            }
            "gap" => {
                gaps += 1;
                let (from, to, n) = (
                    f["from"].as_i64().unwrap(),
                    f["to"].as_i64().unwrap(),
                    f["lost"].as_i64().unwrap(),
                );
                assert_eq!(from, last + 1, "{f}");
                assert_eq!(n, to - from + 1, "timestamps are consecutive here: {f}");
                lost += n;
                last = to;
            }
            other => panic!("unexpected frame type {other}: {f}"),
        }
    }
    assert!(
        gaps >= 1,
        "the ring wrapped under the reader: a gap is reported"
    );
    assert_eq!(got + lost, N, "received {got} + lost {lost} = written");
    let _ = s;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_close_on_shutdown_and_end_when_the_store_is_deleted() {
    let mut srv = Server::start();
    let s = srv.json_store("sd");
    let doomed = srv.json_store("doomed");
    let mut r = connect(&url(&srv, &doomed, "read", "")).await;
    assert_eq!(next_json(&mut r).await["type"], "caught_up");
    let m = srv.get("/metrics").send().text();
    assert!(m.contains("\ntsstore_ws_clients 1\n"), "{m}");
    let d = srv.delete(&doomed.path("")).key(&doomed.key).send();
    assert_eq!(d.status, 200, "{}", d.text());
    assert_eq!(next_json(&mut r).await["type"], "error");
    closed(&mut r).await;

    let mut reader = connect(&url(&srv, &s, "read", "")).await;
    assert_eq!(next_json(&mut reader).await["type"], "caught_up");
    let mut writer = connect(&url(&srv, &s, "write", "")).await;
    let t0 = std::time::Instant::now();
    let pid = srv.pid();
    super::common::signal(pid, "TERM");
    assert_eq!(closed(&mut reader).await, Some(1001));
    assert_eq!(closed(&mut writer).await, Some(1001));
    assert!(srv.wait_exit().success());
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "streams did not hold up shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_vanishing_mid_message_loses_nothing_acknowledged() {
    use tokio::io::AsyncWriteExt;
    let srv = Server::start();
    let s = srv.json_store("vanish");
    let mut ws = connect(&url(&srv, &s, "write", "")).await;
    let mut acked = Vec::new();
    for i in 0..50 {
        ws.send(Message::Text(
            json!({ "data": { "i": i } }).to_string().into(),
        ))
        .await
        .unwrap();
        let f = next_json(&mut ws).await;
        assert_eq!(f["type"], "ack", "{f}");
        acked.push(f["timestamp"].as_i64().unwrap());
    }
    // Half a frame: a masked text frame header announcing 1000 bytes, then
    // 10 of them, then the connection is gone.
    let MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
        panic!("plain TCP expected")
    };
    let mut partial = vec![0x81u8, 0xFE, 0x03, 0xE8, 1, 2, 3, 4];
    partial.extend_from_slice(&[b'x'; 10]);
    tcp.write_all(&partial).await.unwrap();
    tcp.flush().await.unwrap();
    drop(ws);
    // Every acknowledged object is there, and nothing else.
    let r = srv.get(&s.path("/stats")).key(&s.key).send();
    assert_eq!(r.json()["object_count"], 50);
    for (i, t) in acked.iter().enumerate() {
        let r = srv
            .get(&s.path(&format!("/data/time/{t}")))
            .key(&s.key)
            .send();
        assert_eq!(r.json()["data"], json!({ "i": i }));
    }
    // And the server still serves streams.
    let mut again = connect(&url(&srv, &s, "write", "")).await;
    again
        .send(Message::Text(json!({ "data": 1 }).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut again).await["type"], "ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_encode_every_data_type_as_the_rest_api_does() {
    let srv = Server::start();
    let text = srv.create_store("t", json!({ "num_blocks": 16, "data_type": "text" }));
    let bin = srv.create_store("b", json!({ "num_blocks": 16, "data_type": "binary" }));
    let sch = srv.create_store("s", json!({ "num_blocks": 16, "data_type": "schema" }));
    let schema = json!({ "fields": [
        { "index": 1, "name": "temp", "type": "float64" },
        { "index": 2, "name": "room", "type": "string" }
    ]});
    let r = srv
        .put(&sch.path("/schema"))
        .key(&sch.key)
        .json(&schema)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    for (s, msg, stored) in [
        (
            &text,
            json!({ "timestamp": 5, "data": "héllo" }),
            json!("héllo"),
        ),
        (
            &bin,
            json!({ "timestamp": 5, "data": "AAEC/w==" }),
            json!("AAEC/w=="),
        ),
        (
            &sch,
            json!({ "timestamp": 5, "data": { "temp": 21.5, "room": "a" } }),
            json!({ "temp": 21.5, "room": "a" }),
        ),
    ] {
        let mut w = connect(&url(&srv, s, "write", "")).await;
        w.send(Message::Text(msg.to_string().into())).await.unwrap();
        let a = next_json(&mut w).await;
        assert_eq!(a["type"], "ack", "{}: {a}", s.name);
        let mut r = connect(&url(&srv, s, "read", "&from=0")).await;
        let f = next_json(&mut r).await;
        assert_eq!(f["data"], stored, "{}", s.name);
        assert_eq!(f["size"], a["size"]);
        let rest = srv.get(&s.path("/data/time/5")).key(&s.key).send().json();
        assert_eq!(
            rest["data"], f["data"],
            "same encoding as REST for {}",
            s.name
        );
    }
    // Schema stores: format=compact reads the stored form, and writes it.
    let mut r = connect(&url(&srv, &sch, "read", "&from=0&format=compact")).await;
    assert_eq!(
        next_json(&mut r).await["data"],
        json!({ "1": 21.5, "2": "a" })
    );
    let mut w = connect(&url(&srv, &sch, "write", "&format=compact")).await;
    w.send(Message::Text(
        json!({ "timestamp": 6, "data": { "1": 22.0, "2": "b" } })
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut w).await["type"], "ack");
    let rest = srv
        .get(&sch.path("/data/time/6"))
        .key(&sch.key)
        .send()
        .json();
    assert_eq!(rest["data"], json!({ "temp": 22.0, "room": "b" }));
    // A schema violation is an error frame, and the stream goes on.
    let mut w = connect(&url(&srv, &sch, "write", "")).await;
    w.send(Message::Text(
        json!({ "timestamp": 7, "data": { "temp": "hot" } })
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let e = next_json(&mut w).await;
    assert_eq!(e["type"], "error", "{e}");
    w.send(Message::Text(
        json!({ "timestamp": 8, "data": { "temp": 1.5 } })
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut w).await["type"], "ack");
}

/// A server that pings WebSocket clients every second (so drops silent
/// ones after 2.5 s).
fn pinging_every_second() -> Server {
    Server::builder()
        .config(r#"{"server": {"ws_ping_seconds": 1}}"#)
        .start()
}

/// `/metrics` counts one connected WebSocket client.
fn assert_one_client_left(srv: &Server) {
    let m = srv.get("/metrics").send().text();
    assert!(
        m.contains("\ntsstore_ws_clients 1\n"),
        "only one client is left: {m}"
    );
}

/// True if the server has ended the stream, or does within `within`:
/// reading drains the pings the client got before, then meets the end.
async fn ends_within(ws: &mut Ws, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(m) = tokio::time::timeout_at(deadline, ws.next()).await {
        match m {
            Some(Ok(Message::Ping(_))) => continue,
            _ => return true,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_live_clients_and_drop_silent_ones() {
    let srv = pinging_every_second();
    let s = srv.json_store("ping");
    let mut live = connect(&url(&srv, &s, "write", "")).await;
    let mut silent = connect(&url(&srv, &s, "read", "")).await;
    // The live client reads (and so answers pings) for 4 s.
    let (mut pings, t0) = (0, std::time::Instant::now());
    while t0.elapsed() < Duration::from_secs(4) {
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), live.next()).await {
            match m.expect("live client still connected").unwrap() {
                Message::Ping(_) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(pings >= 2, "pinged every second: {pings}");
    live.send(Message::Text(json!({ "data": 1 }).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut live).await["type"], "ack");
    // The silent one never answered: the server has dropped it. Reading now
    // drains the pings it got before, then the end (within 3 s at most).
    assert!(
        ends_within(&mut silent, Duration::from_secs(3)).await,
        "silent client dropped"
    );
    assert_one_client_left(&srv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_when_the_server_runs_https() {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let Some((srv, cert)) = super::common::https_server(dir.path(), "WSS test") else {
        return;
    };
    let s = srv.json_store("wss");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert.root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(cfg));
    let u = format!(
        "wss://localhost:{}{}?api_key={}",
        srv.addr.port(),
        s.path("/ws/write"),
        s.key
    );
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(&u, None, false, Some(connector.clone()))
            .await
            .unwrap();
    ws.send(Message::Text(
        json!({ "timestamp": 9, "data": "tls" }).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["timestamp"], 9);
    let u = u.replace("/ws/write", "/ws/read") + "&from=0";
    let (mut r, _) =
        tokio_tungstenite::connect_async_tls_with_config(&u, None, false, Some(connector))
            .await
            .unwrap();
    let f = next_json(&mut r).await;
    assert_eq!(
        (f["timestamp"].as_i64(), f["data"].as_str()),
        (Some(9), Some("tls"))
    );
}

/// The write stream's liveness: a writer that sends nothing and never reads
/// (so never answers a ping) is dropped after 2.5 pings of silence, while
/// one that writes and reads its acks stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_writer_is_dropped_and_a_talking_one_kept() {
    let srv = pinging_every_second();
    let s = srv.json_store("quiet");
    let mut silent = connect(&url(&srv, &s, "write", "")).await;
    let mut talking = connect(&url(&srv, &s, "write", "")).await;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        talking
            .send(Message::Text(json!({ "data": 1 }).to_string().into()))
            .await
            .unwrap();
        assert_eq!(next_json(&mut talking).await["type"], "ack");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        ends_within(&mut silent, Duration::from_secs(3)).await,
        "silent writer dropped"
    );
    assert_one_client_left(&srv);
    talking
        .send(Message::Text(json!({ "data": 2 }).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut talking).await["type"], "ack");
}
