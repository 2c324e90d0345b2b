//! Outbound connections of the real binary, dialling a WebSocket server
//! run by the test (tokio-tungstenite on 127.0.0.1).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::common::{eventually, insert_n, Server, Store, ADMIN};
use super::console;

pub const WAIT: Duration = Duration::from_secs(15);

/// What the test's WebSocket server sees.
#[derive(Debug)]
pub enum Event {
    /// A client connected: its request headers, and a way to send to it.
    Connected(Vec<(String, String)>, mpsc::UnboundedSender<Message>),
    /// A text frame, parsed.
    Frame(Value),
    /// The client closed (with this close code) or the connection ended.
    Closed(Option<u16>),
}

/// A WebSocket server on 127.0.0.1 (or [::1]) that reports every
/// connection and frame; with `ack`, answers each `data` frame as
/// tsstore's `/ws/write` does. Killing it drops every socket.
pub struct Remote {
    pub port: u16,
    ip: std::net::IpAddr,
    events: mpsc::UnboundedReceiver<Event>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Remote {
    pub async fn start(port: u16, ack: bool) -> Remote {
        Remote::start_at("127.0.0.1", port, ack).await
    }

    /// A remote on address `ip` (`127.0.0.1` or `::1`).
    pub async fn start_at(ip: &str, port: u16, ack: bool) -> Remote {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, events) = mpsc::unbounded_channel();
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let t2 = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                let h = tokio::spawn(serve_one(tcp, tx, ack));
                t2.lock().unwrap().push(h.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Remote {
            port,
            ip,
            events,
            tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/in", std::net::SocketAddr::new(self.ip, self.port))
    }

    /// Drops the listener and every connection.
    fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no event from the remote within 15 s")
            .expect("remote gone")
    }

    /// The next connection, after the close of the previous one.
    pub async fn connected_after_close(&mut self) {
        loop {
            match self.next().await {
                Event::Connected(..) => return,
                Event::Closed(_) => continue,
                e => panic!("expected a close then a connection, got {e:?}"),
            }
        }
    }

    pub async fn connected(&mut self) -> (Vec<(String, String)>, mpsc::UnboundedSender<Message>) {
        match self.next().await {
            Event::Connected(h, s) => (h, s),
            e => panic!("expected a connection, got {e:?}"),
        }
    }

    async fn frame(&mut self) -> Value {
        match self.next().await {
            Event::Frame(v) => v,
            e => panic!("expected a frame, got {e:?}"),
        }
    }

    /// Any event within `d`.
    pub async fn quiet_for(&mut self, d: Duration) -> Option<Event> {
        tokio::time::timeout(d, self.events.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn serve_one(tcp: tokio::net::TcpStream, tx: mpsc::UnboundedSender<Event>, ack: bool) {
    let headers = Arc::new(Mutex::new(Vec::new()));
    let h2 = headers.clone();
    let cb = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                   resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
        *h2.lock().unwrap() = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
        return;
    };
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let h = headers.lock().unwrap().clone();
    let _ = tx.send(Event::Connected(h, out_tx));
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("frames are JSON");
                    if ack && v["type"] == "data" {
                        let a = json!({ "type": "ack", "timestamp": v["timestamp"], "block_num": 0, "size": 0 });
                        if ws.send(Message::Text(a.to_string().into())).await.is_err() {
                            let _ = tx.send(Event::Closed(None));
                            return;
                        }
                    }
                    let _ = tx.send(Event::Frame(v));
                }
                Some(Ok(Message::Close(f))) => {
                    let _ = tx.send(Event::Closed(f.map(|f| u16::from(f.code))));
                    return;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    let _ = tx.send(Event::Closed(None));
                    return;
                }
            },
            Some(m) = out_rx.recv() => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
        }
    }
}

pub fn create(srv: &Server, s: &Store, body: Value) -> Value {
    let r = srv
        .post(&s.path("/ws/connections"))
        .key(&s.key)
        .json(&body)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

pub fn status(srv: &Server, s: &Store, id: &str) -> Value {
    let r = srv
        .get(&s.path(&format!("/ws/connections/{id}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits until the connection's status object satisfies `f`.
pub fn wait_status(srv: &Server, s: &Store, id: &str, what: &str, f: impl Fn(&Value) -> bool) {
    let ok = eventually(WAIT, || f(&status(srv, s, id)));
    assert!(ok, "{what}: {}", status(srv, s, id));
}

/// The `config.json` of a server whose store keys may dial the test's
/// peers on 127.0.0.1 (the default policy refuses loopback to store keys),
/// with `extra` keys of `server.outbound`.
pub fn loopback_allowed(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(r#"{{"server": {{"outbound": {{"allow": ["127.0.0.1"]{sep}{extra}}}}}}}"#)
}

fn server() -> Server {
    Server::builder().config(&loopback_allowed("")).start()
}

/// A port nothing listens on.
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_routes_create_list_get_delete_and_reject_bad_requests() {
    let srv = server();
    let s = srv.json_store("c1");
    let path = s.path("/ws/connections");

    let r = srv.get(&path).key(&s.key).send();
    assert_eq!((r.status, r.json()), (200, json!({ "connections": [] })));
    let r = srv.get(&path).send();
    assert_eq!(r.status, 401);
    let r = srv.post(&path).json(&json!({})).send();
    assert_eq!(r.status, 401);

    for (body, want) in [
        (
            json!({ "mode": "sideways", "url": "ws://127.0.0.1:1" }),
            "invalid mode: must be 'push' or 'pull'",
        ),
        (json!({ "url": "ws://127.0.0.1:1" }), "mode is required"),
        (json!({ "mode": "push" }), "url is required"),
        (
            json!({ "mode": "push", "url": "http://127.0.0.1:1" }),
            "ws:// or wss://",
        ),
        (
            json!({ "mode": "push", "url": "ws://h", "format": "pretty" }),
            "invalid format",
        ),
        (
            json!({ "mode": "push", "url": "ws://h", "ca_file": "/no/such/ca.pem" }),
            "invalid ca_file",
        ),
    ] {
        let r = srv.post(&path).key(&s.key).json(&body).send();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.error().contains(want), "{body}: {}", r.error());
    }
    let r = srv
        .post(&path)
        .key(&s.key)
        .body("application/json", "{not json")
        .send();
    assert_eq!(r.status, 400, "{}", r.text());

    // Unreachable: the status goes to error, with the reason.
    let port = closed_port().await;
    let url = format!("ws://127.0.0.1:{port}/x");
    let a = create(
        &srv,
        &s,
        json!({ "mode": "push", "url": url, "filter": "n", "filter_ignore_case": true }),
    );
    let keys: Vec<&str> = a.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "id",
            "mode",
            "url",
            "from",
            "format",
            "status",
            "created_at",
            "last_timestamp",
            "messages_sent",
            "messages_received",
            "errors",
            "last_error",
            "connected_since",
            "filter",
            "filter_ignore_case",
            "agg_window",
            "agg_fields",
            "agg_default",
            "rules_count",
            "alerts_fired"
        ]
    );
    let id = a["id"].as_str().unwrap().to_string();
    assert!(
        id.len() == 8
            && id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{id}"
    );
    assert_eq!(a["format"], "full");
    assert_eq!(a["from"], 0);
    assert_eq!(a["errors"], 0);
    assert_eq!(a["last_error"], "");
    assert_eq!(a["connected_since"], Value::Null);
    let created = a["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 30, "{created}");
    wait_status(&srv, &s, &id, "error after a refused dial", |v| {
        v["status"] == "error"
            && v["errors"].as_u64() >= Some(1)
            && v["last_error"].as_str().unwrap().contains("dial failed")
    });

    // A peer that accepts TCP but never answers the handshake: connecting.
    let hold = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hold_url = format!("ws://{}/", hold.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Ok((t, _)) = hold.accept().await {
            v.push(t);
        }
    });
    let b = create(&srv, &s, json!({ "mode": "pull", "url": hold_url }));
    assert!(b.get("filter").is_none(), "pull has no filter: {b}");
    let bid = b["id"].as_str().unwrap().to_string();
    wait_status(
        &srv,
        &s,
        &bid,
        "connecting while the handshake hangs",
        |v| v["status"] == "connecting",
    );

    // Listed in creation order.
    let r = srv.get(&path).key(&s.key).send();
    let ids: Vec<String> = r.json()["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [id.clone(), bid.clone()]);

    // The file holds both.
    let file: Value = serde_json::from_slice(
        &std::fs::read(srv.data().join("c1").join("ws_connections.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["connections"].as_array().unwrap().len(), 2);
    assert_eq!(file["connections"][0]["url"], url);

    // /metrics counts them by status.
    let m = srv.get("/metrics").send().text();
    assert!(
        m.contains("tsstore_outbound_connections{status=\"connecting\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tsstore_outbound_connections{status=\"error\"} 1"),
        "{m}"
    );

    let one = |id: &str| s.path(&format!("/ws/connections/{id}"));
    let r = srv.get(&one("ffffffff")).key(&s.key).send();
    assert_eq!(
        (r.status, r.json()),
        (404, json!({ "error": "connection not found" }))
    );
    let r = srv.delete(&one("ffffffff")).key(&s.key).send();
    assert_eq!(
        (r.status, r.json()),
        (404, json!({ "error": "connection not found" }))
    );
    let r = srv.delete(&one(&id)).key(&s.key).send();
    assert_eq!(
        (r.status, r.json()),
        (200, json!({ "message": "connection deleted" }))
    );
    let r = srv.get(&one(&id)).key(&s.key).send();
    assert_eq!(r.status, 404);
    let r = srv.get(&path).key(&s.key).send();
    assert_eq!(r.json()["connections"].as_array().unwrap().len(), 1);
    let file: Value = serde_json::from_slice(
        &std::fs::read(srv.data().join("c1").join("ws_connections.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["connections"][0]["id"], bid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_sends_stored_then_live_objects_as_the_read_stream_does() {
    let srv = server();
    let s = srv.json_store("p1");
    insert_n(&srv, &s, 100, 5);
    let mut remote = Remote::start(0, false).await;
    let c = create(
        &srv,
        &s,
        json!({ "mode": "push", "url": remote.url(), "from": 0,
                "headers": { "X-Token": "secret-1" } }),
    );
    let id = c["id"].as_str().unwrap().to_string();
    let (headers, _) = remote.connected().await;
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-token" && v == "secret-1"),
        "{headers:?}"
    );
    for t in 100..105 {
        let f = remote.frame().await;
        super::common::assert_data_frame(&f, t, &json!({ "n": t }));
    }
    // Live objects, in order, and no caught_up frame in between.
    insert_n(&srv, &s, 200, 3);
    for t in 200..203 {
        let f = remote.frame().await;
        assert_eq!(
            (f["type"].as_str(), f["timestamp"].as_i64()),
            (Some("data"), Some(t)),
            "{f}"
        );
    }
    wait_status(&srv, &s, &id, "counted", |v| {
        v["status"] == "connected"
            && v["messages_sent"] == 8
            && v["last_timestamp"] == 202
            && v["connected_since"].is_string()
            && v["errors"] == 0
    });

    // from N sends objects above N; the filter is honoured.
    let mut r2 = Remote::start(0, false).await;
    create(
        &srv,
        &s,
        json!({ "mode": "push", "url": r2.url(), "from": 102, "filter": "\"N\":20", "filter_ignore_case": true }),
    );
    r2.connected().await;
    for t in 200..203 {
        assert_eq!(r2.frame().await["timestamp"], t);
    }
    let mut r3 = Remote::start(0, false).await;
    create(
        &srv,
        &s,
        json!({ "mode": "push", "url": r3.url(), "from": 102 }),
    );
    r3.connected().await;
    for t in [103, 104, 200, 201, 202] {
        assert_eq!(r3.frame().await["timestamp"], t);
    }
    let m = srv.get("/metrics").send().text();
    assert!(
        m.contains("tsstore_outbound_connections{status=\"connected\"} 3"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_resumes_without_loss_when_the_remote_restarts_on_the_same_port() {
    let srv = server();
    let s = srv.json_store("p2");
    insert_n(&srv, &s, 1, 20);
    let mut remote = Remote::start(0, true).await;
    let port = remote.port;
    let c = create(&srv, &s, json!({ "mode": "push", "url": remote.url() }));
    let id = c["id"].as_str().unwrap().to_string();
    remote.connected().await;
    let mut first = Vec::new();
    while first.len() < 20 {
        first.push(remote.frame().await["timestamp"].as_i64().unwrap());
    }
    assert_eq!(first, (1..=20).collect::<Vec<_>>());
    // Every ack processed: the cursor is the last acked timestamp.
    wait_status(&srv, &s, &id, "acked", |v| v["last_timestamp"] == 20);

    remote.kill();
    drop(remote);
    wait_status(&srv, &s, &id, "drop noticed", |v| {
        v["status"] != "connected" && v["errors"].as_u64() >= Some(1)
    });
    // Written while the remote is down.
    insert_n(&srv, &s, 21, 20);
    let mut remote = Remote::start(port, true).await;
    remote.connected().await;
    let mut second = Vec::new();
    while second.len() < 20 {
        second.push(remote.frame().await["timestamp"].as_i64().unwrap());
    }
    // Resumed after the acked cursor: nothing lost, nothing resent.
    assert_eq!(second, (21..=40).collect::<Vec<_>>());
    wait_status(&srv, &s, &id, "reconnected", |v| {
        v["status"] == "connected" && v["last_timestamp"] == 40
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_resumes_from_the_persisted_cursor_after_a_server_restart() {
    let mut srv = server();
    let s = srv.json_store("p3");
    insert_n(&srv, &s, 1, 10);
    let mut remote = Remote::start(0, true).await;
    let c = create(&srv, &s, json!({ "mode": "push", "url": remote.url() }));
    let id = c["id"].as_str().unwrap().to_string();
    remote.connected().await;
    for t in 1..=10 {
        assert_eq!(remote.frame().await["timestamp"], t);
    }
    wait_status(&srv, &s, &id, "acked", |v| v["last_timestamp"] == 10);
    // Persisted within about a second while running.
    let file = srv.data().join("p3").join("ws_connections.json");
    let persisted = || -> Value { serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap() };
    assert!(
        eventually(Duration::from_secs(3), || persisted()["connections"][0]
            ["last_timestamp"]
            == 10),
        "{}",
        persisted()
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("{\n  \"connections\": [\n    {\n      \"id\": "),
        "{text}"
    );

    srv.stop();
    match remote.next().await {
        Event::Closed(_) => {}
        e => panic!("expected the close at shutdown, got {e:?}"),
    }
    let srv2 = Server::builder()
        .data_dir(srv.data())
        .config(&loopback_allowed(""))
        .start();
    // Restarted with the server, before any request touches the store.
    remote.connected().await;
    insert_n(&srv2, &s, 11, 3);
    for t in 11..=13 {
        // Not the whole store again: the first frame is the first new object.
        assert_eq!(remote.frame().await["timestamp"], t);
    }
    wait_status(&srv2, &s, &id, "resumed", |v| {
        v["status"] == "connected" && v["last_timestamp"] == 13
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_stores_messages_and_answers_ack_or_error_per_message() {
    let srv = server();
    let s = srv.json_store("u1");
    let mut remote = Remote::start(0, false).await;
    let c = create(&srv, &s, json!({ "mode": "pull", "url": remote.url() }));
    let id = c["id"].as_str().unwrap().to_string();
    let (_, to_tsstore) = remote.connected().await;
    let send = |v: &str| {
        to_tsstore
            .send(Message::Text(v.to_string().into()))
            .unwrap()
    };
    send(&json!({ "timestamp": 1000, "data": { "v": 1 } }).to_string());
    let f = remote.frame().await;
    assert_eq!(
        (f["type"].as_str(), f["timestamp"].as_i64()),
        (Some("ack"), Some(1000)),
        "{f}"
    );
    send("not json");
    let f = remote.frame().await;
    assert_eq!(f["type"], "error", "{f}");
    assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
    // Out of order: refused, the connection stays.
    send(&json!({ "timestamp": 500, "data": { "v": 0 } }).to_string());
    assert_eq!(remote.frame().await["type"], "error");
    to_tsstore
        .send(Message::Binary(
            json!({ "timestamp": 2000, "data": { "v": 2 } })
                .to_string()
                .into_bytes()
                .into(),
        ))
        .unwrap();
    let f = remote.frame().await;
    assert_eq!(
        (f["type"].as_str(), f["timestamp"].as_i64()),
        (Some("ack"), Some(2000)),
        "{f}"
    );

    let r = srv.get(&s.path("/data/time/1000")).key(&s.key).send();
    assert_eq!(r.json()["data"], json!({ "v": 1 }));
    let r = srv.get(&s.path("/data/time/2000")).key(&s.key).send();
    assert_eq!(r.json()["data"], json!({ "v": 2 }));
    let r = srv.get(&s.path("/stats")).key(&s.key).send();
    assert_eq!(r.json()["object_count"], 2);
    let v = status(&srv, &s, &id);
    assert_eq!(v["status"], "connected", "{v}");
    assert_eq!(v["messages_received"], 4, "{v}");
    assert_eq!(v["errors"], 2, "{v}");
    assert_eq!(v["last_timestamp"], 2000, "{v}");
    assert!(!v["last_error"].as_str().unwrap().is_empty(), "{v}");
}

/// A server with store `name` of two objects, pushed to a remote that
/// has received both; the connection's JSON.
async fn pushing(name: &str) -> (Server, Store, Remote, Value) {
    let srv = server();
    let s = srv.json_store(name);
    insert_n(&srv, &s, 1, 2);
    let mut remote = Remote::start(0, false).await;
    let c = create(&srv, &s, json!({ "mode": "push", "url": remote.url() }));
    remote.connected().await;
    remote.frame().await;
    remote.frame().await;
    (srv, s, remote, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_connection_or_its_store_closes_it_within_a_second() {
    let (srv, s, mut remote, c) = pushing("d1").await;
    let id = c["id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    let r = srv
        .delete(&s.path(&format!("/ws/connections/{id}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200);
    match remote.next().await {
        Event::Closed(code) => assert_eq!(code, Some(1000)),
        e => panic!("expected a close, got {e:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // Gone for good: no reconnect, no frames.
    insert_n(&srv, &s, 3, 2);
    if let Some(e) = remote.quiet_for(Duration::from_millis(2500)).await {
        panic!("the deleted connection came back: {e:?}");
    }

    // Deleting the store stops its connections too.
    let mut r2 = Remote::start(0, false).await;
    create(&srv, &s, json!({ "mode": "push", "url": r2.url() }));
    r2.connected().await;
    for _ in 0..4 {
        r2.frame().await;
    }
    let t0 = Instant::now();
    let r = srv.delete(&s.path("")).key(&s.key).send();
    assert_eq!(r.status, 200, "{}", r.text());
    match r2.next().await {
        Event::Closed(_) => {}
        e => panic!("expected a close, got {e:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    if let Some(e) = r2.quiet_for(Duration::from_millis(2500)).await {
        panic!("a connection of the deleted store came back: {e:?}");
    }
}

/// Deletes store `name` through the console's form, signed in as admin.
fn delete_from_console(srv: &Server, name: &str) {
    let session = console::login(srv, ADMIN);
    let r = srv
        .post(&format!("/stores/{name}/delete"))
        .header("Cookie", &session.header())
        .body(
            "application/x-www-form-urlencoded",
            console::form(&[("csrf", &session.csrf), ("confirm", name)]),
        )
        .send();
    assert_eq!((r.status, r.header("location")), (303, Some("/")));
}

/// Pins a bug: the console's delete left the store's outbound connections
/// running (only the REST delete stopped them), so they kept dialling for a
/// store that was gone. Every delete goes through the registry now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_store_from_the_console_stops_its_connections() {
    let (srv, _, mut remote, _) = pushing("d2").await;
    delete_from_console(&srv, "d2");
    assert!(!srv.data().join("d2").exists());
    match remote.next().await {
        Event::Closed(_) => {}
        e => panic!("expected a close, got {e:?}"),
    }
    if let Some(e) = remote.quiet_for(Duration::from_millis(2500)).await {
        panic!("a connection of the deleted store came back: {e:?}");
    }
}

/// A store deleted from the console and created again under its name is a
/// new store: the old one's key, connections and console sessions do not
/// carry over, now or after a restart (the shutdown persists connections
/// into the directory of the store of that name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_created_again_under_a_deleted_name_inherits_nothing() {
    let (mut srv, old, mut remote, _) = pushing("r1").await;
    let scoped = console::login(&srv, &old.key);
    let read = |cookie: &str| {
        srv.get("/api/stores/r1/stats")
            .header("Cookie", cookie)
            .send()
            .status
    };
    assert_eq!(read(&scoped.header()), 200);
    delete_from_console(&srv, "r1");
    match remote.next().await {
        Event::Closed(_) => {}
        e => panic!("expected a close, got {e:?}"),
    }
    let new = srv.json_store("r1");
    assert_ne!(new.key, old.key);
    // The old key and the old store's session open nothing of the new one.
    let r = srv.get(&new.path("/stats")).key(&old.key).send();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(read(&scoped.header()), 401);
    let r = srv.get(&new.path("/stats")).key(&new.key).send();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = srv.get(&new.path("/ws/connections")).key(&new.key).send();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["connections"], json!([]), "{}", r.text());
    insert_n(&srv, &new, 1, 2);
    if let Some(e) = remote.quiet_for(Duration::from_millis(1500)).await {
        panic!("a connection of the deleted store reached the new one: {e:?}");
    }
    // The shutdown persists connections: none into the new store.
    assert!(srv.stop().success());
    let file = srv.data().join("r1").join("ws_connections.json");
    if file.exists() {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(v["connections"], json!([]), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_another_tsstore_over_wss_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let Some((dst, cert)) = super::common::https_server(dir.path(), "wss test") else {
        return;
    };
    let d = dst.json_store("dst");
    // The private CA is in the source server's CA directory.
    let src = Server::builder()
        .config(&loopback_allowed(&format!(
            r#""ca_dir": {:?}"#,
            dir.path().to_str().unwrap()
        )))
        .start();
    let s = src.json_store("src");
    insert_n(&src, &s, 1, 5);
    let url = format!(
        "wss://localhost:{}{}?api_key={}",
        dst.addr.port(),
        d.path("/ws/write"),
        d.key
    );
    // Without the CA the certificate is refused.
    let bad = create(&src, &s, json!({ "mode": "push", "url": url }));
    let bad_id = bad["id"].as_str().unwrap().to_string();
    wait_status(&src, &s, &bad_id, "certificate refused", |v| {
        v["status"] == "error" && v["last_error"].as_str().unwrap().contains("dial failed")
    });
    let good = create(
        &src,
        &s,
        json!({ "mode": "push", "url": url, "ca_file": cert.root.to_str().unwrap() }),
    );
    let id = good["id"].as_str().unwrap().to_string();
    // The remote tsstore acks each object: the cursor follows its acks.
    wait_status(&src, &s, &id, "acked by the remote", |v| {
        v["status"] == "connected" && v["last_timestamp"] == 5 && v["errors"] == 0
    });
    let r = dst.get(&d.path("/stats")).key(&d.key).send();
    assert_eq!(r.json()["object_count"], 5);
    let r = dst.get(&d.path("/data/time/3")).key(&d.key).send();
    assert_eq!(r.json()["data"], json!({ "n": 3 }));
}
