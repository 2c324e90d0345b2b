//! Store-level alert rules through the real binary: the REST resource
//! (create, list, get, delete, persistence across a restart, every refusal
//! with its message), firing on each ingest path (HTTP, NDJSON, the Unix
//! socket, `/ws/write`, an MQTT subscription), schema stores, cooldown, the
//! alerts ring's `limit`, `/metrics`, and a deleted store taking its rules
//! with it; webhook delivery to a receiver in the test (body and headers,
//! retry after a 5xx, no retry after a 4xx, the outbound policy of the
//! creator's role, secrets kept out of answers, `/metrics` and the log,
//! deliveries ending with their rule or store).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::common::{eventually, Server, Store};
use super::unix::Client;

fn add(srv: &Server, s: &Store, rule: Value) -> (u16, Value) {
    let r = srv.post(&s.path("/rules")).key(&s.key).json(&rule).send();
    (r.status, r.json())
}

fn add_ok(srv: &Server, s: &Store, name: &str, condition: &str) {
    let (st, v) = add(srv, s, json!({ "name": name, "condition": condition }));
    assert_eq!(st, 201, "{v}");
}

fn insert(srv: &Server, s: &Store, t: i64, data: Value) {
    let r = srv
        .post(&s.path("/data"))
        .key(&s.key)
        .json(&json!({ "timestamp": t, "data": data }))
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
}

fn alerts(srv: &Server, s: &Store, query: &str) -> Value {
    let r = srv
        .get(&s.path(&format!("/alerts{query}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// (rule, timestamp) of each alert, newest first.
fn fired(srv: &Server, s: &Store) -> Vec<(String, i64)> {
    alerts(srv, s, "")["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_string(),
                a["timestamp"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn rules_are_created_listed_fetched_deleted_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Server::builder().data_dir(&data).start();
    let s = srv.json_store("crud");
    let (st, v) = add(
        &srv,
        &s,
        json!({ "name": "hot", "condition": "temp > 30 AND room == \"lab\"", "cooldown": "1m" }),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v,
        json!({ "name": "hot", "condition": "temp > 30 AND room == \"lab\"", "cooldown": "1m",
                "alerts_fired": 0, "last_fired": null })
    );
    add_ok(&srv, &s, "cold", "temp < 0");
    let (st, v) = add(&srv, &s, json!({ "name": "hot", "condition": "temp > 1" }));
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (409, "rule 'hot' already exists")
    );
    let list = srv.get(&s.path("/rules")).key(&s.key).send().json();
    assert_eq!(list["count"], 2);
    assert_eq!(list["rules"][1]["name"], "cold");
    assert_eq!(list["rules"][1]["cooldown"], "0");
    let one = srv.get(&s.path("/rules/cold")).key(&s.key).send();
    assert_eq!(
        (one.status, one.json()["condition"].clone()),
        (200, json!("temp < 0"))
    );
    assert_eq!(
        srv.get(&s.path("/rules/none")).key(&s.key).send().status,
        404
    );
    let file = data.join("crud").join("rules.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let del = srv.delete(&s.path("/rules/cold")).key(&s.key).send();
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(
        srv.delete(&s.path("/rules/cold")).key(&s.key).send().status,
        404
    );
    // The admin key works too.
    assert_eq!(srv.get(&s.path("/rules")).admin().send().status, 200);
    drop(srv);

    let srv = Server::builder().data_dir(&data).start();
    let list = srv.get(&s.path("/rules")).key(&s.key).send();
    assert_eq!(list.status, 200, "{}", list.text());
    let names: Vec<Value> = list.json()["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("hot")]);
    // And the reloaded rule fires.
    insert(&srv, &s, 10, json!({ "temp": 31, "room": "lab" }));
    assert_eq!(fired(&srv, &s), [("hot".to_string(), 10)]);
}

#[test]
fn bad_rules_are_refused_with_their_message() {
    let srv = Server::start();
    let s = srv.json_store("bad");
    let long = format!("a == \"{}\"", "x".repeat(1100));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "name": "r", "condition": "temperature > " }),
            "condition: expected a value at position 15",
        ),
        (
            json!({ "name": "r", "condition": "(a > 1" }),
            "condition: expected ')' at position 7",
        ),
        (
            json!({ "name": "r", "condition": long }),
            "condition: longer than 1024 characters",
        ),
        (
            json!({ "name": "r", "condition": "" }),
            "condition: is empty",
        ),
        (
            json!({ "name": "a b", "condition": "a > 1" }),
            "invalid rule name: 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
        ),
        (
            json!({ "name": "x".repeat(65), "condition": "a > 1" }),
            "invalid rule name: 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
        ),
        (
            json!({ "name": "", "condition": "a > 1" }),
            "invalid rule name: 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
        ),
        (
            json!({ "condition": "a > 1" }),
            "invalid rule: name is required",
        ),
        (
            json!({ "name": "r" }),
            "invalid rule: condition is required",
        ),
        (
            json!({ "name": 5, "condition": "a > 1" }),
            "invalid rule: name must be a string",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "cooldown": "soon" }),
            "invalid cooldown: time: invalid duration \"soon\"",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "ftp://127.0.0.1:1/" }),
            BAD_WEBHOOK,
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "ws://example.com/" }),
            BAD_WEBHOOK,
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://user:pw@example.com/" }),
            BAD_WEBHOOK,
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://example.com:70000/" }),
            BAD_WEBHOOK,
        ),
        (
            json!({ "name": "r", "condition": "a > 1",
                    "webhook": format!("http://example.com/{}", "a".repeat(2048)) }),
            BAD_WEBHOOK,
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": 7 }),
            "invalid rule: webhook must be a string",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook_headers": {"a": "b"} }),
            "invalid webhook_headers: only with a webhook",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://example.com/",
                    "webhook_headers": ["a"] }),
            "invalid webhook_headers: must be an object of strings",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://example.com/",
                    "webhook_headers": {"X-A": 1} }),
            "invalid webhook header \"X-A\": value must be a string",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://example.com/",
                    "webhook_headers": {"Host": "elsewhere"} }),
            "invalid webhook header \"Host\": set by the server",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://example.com/",
                    "webhook_headers": {"content-length": "1"} }),
            "invalid webhook header \"content-length\": set by the server",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://example.com/",
                    "webhook_headers": {"a b": "c"} }),
            "invalid webhook header \"a b\": a header name of at most 64 characters",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://example.com/",
                    "webhook_headers": {"X-Key": "s3cret\nInjected: 1"} }),
            "invalid webhook header \"X-Key\": a value of at most 1024 visible ASCII characters",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://example.com/",
                    "webhook_headers": {"X-Key": "v".repeat(1025)} }),
            "invalid webhook header \"X-Key\": a value of at most 1024 visible ASCII characters",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "webhook": "http://example.com/",
                    "webhook_headers": (0..17).map(|i| (format!("x-{i}"), json!("v")))
                        .collect::<serde_json::Map<String, Value>>() }),
            "invalid webhook_headers: at most 16 headers",
        ),
        (
            json!({ "name": "r", "condition": "a > 1", "colour": "red" }),
            "invalid rule: unknown field 'colour'",
        ),
        (json!([1]), "invalid rule: expected a JSON object"),
    ];
    for (body, want) in cases {
        let (st, v) = add(&srv, &s, body.clone());
        assert_eq!(
            (st, v["error"].as_str().unwrap_or("")),
            (400, want),
            "{body}"
        );
    }
    let r = srv
        .post(&s.path("/rules"))
        .key(&s.key)
        .body("application/json", "{not json")
        .send();
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("invalid JSON"), "{}", r.error());
    for i in 0..32 {
        add_ok(&srv, &s, &format!("r{i}"), "a > 1");
    }
    let (st, v) = add(&srv, &s, json!({ "name": "r32", "condition": "a > 1" }));
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (400, "a store has at most 32 rules")
    );
    // Unknown store, wrong key.
    let r = srv
        .post("/api/stores/nosuch/rules")
        .admin()
        .json(&json!({ "name": "r", "condition": "a > 1" }))
        .send();
    assert_eq!(r.status, 404);
    let r = srv
        .post(&s.path("/rules"))
        .key("wrong")
        .json(&json!({ "name": "r", "condition": "a > 1" }))
        .send();
    assert_eq!(r.status, 401);
    assert_eq!(srv.get(&s.path("/alerts")).key("wrong").send().status, 401);
    assert_eq!(
        srv.get("/api/stores/nosuch/alerts").admin().send().status,
        404
    );
    for bad in ["0", "1001", "x", "-1"] {
        let r = srv
            .get(&s.path(&format!("/alerts?limit={bad}")))
            .key(&s.key)
            .send();
        assert_eq!(r.status, 400, "limit={bad}");
        assert_eq!(r.error(), "invalid limit: an integer from 1 to 1000");
    }
    // A text store has no rules.
    let t = srv.create_store("txt", json!({ "num_blocks": 64, "data_type": "text" }));
    let (st, v) = add(&srv, &t, json!({ "name": "r", "condition": "a > 1" }));
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (400, "rules are only available for json and schema stores")
    );
}

#[test]
fn rules_fire_on_http_and_ndjson_inserts_with_metrics_and_status() {
    let srv = Server::start();
    let s = srv.json_store("fire");
    add_ok(&srv, &s, "hot", "temp > 30");
    add_ok(
        &srv,
        &s,
        "north",
        "site.zone == \"north\" OR tags contains \"x\"",
    );
    insert(
        &srv,
        &s,
        1,
        json!({ "temp": 20, "site": { "zone": "south" } }),
    );
    assert!(fired(&srv, &s).is_empty());
    insert(
        &srv,
        &s,
        2,
        json!({ "temp": 31, "site": { "zone": "north" } }),
    );
    let body = "{\"timestamp\":3,\"data\":{\"temp\":35}}\n{\"timestamp\":4,\"data\":{\"temp\":1,\"tags\":[\"x\"]}}\n{\"timestamp\":5,\"data\":{\"temp\":2}}\n";
    let r = srv
        .post(&s.path("/data"))
        .key(&s.key)
        .body("application/x-ndjson", body)
        .send();
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    assert_eq!(
        fired(&srv, &s),
        [
            ("north".to_string(), 4),
            ("hot".to_string(), 3),
            ("north".to_string(), 2),
            ("hot".to_string(), 2),
        ]
    );
    let a = alerts(&srv, &s, "");
    assert_eq!(a["count"], 4);
    assert_eq!(a["alerts"][0]["type"], "alert");
    assert_eq!(a["alerts"][0]["data"], json!({ "temp": 1, "tags": ["x"] }));
    assert!(a["alerts"][0]["fired_at"].as_i64().unwrap() > 0);
    let hot = srv.get(&s.path("/rules/hot")).key(&s.key).send().json();
    assert_eq!(hot["alerts_fired"], 2);
    assert!(hot["last_fired"].as_i64().unwrap() > 0);
    let m = srv.get("/metrics").send().text();
    assert!(
        m.contains("tsstore_alerts_fired_total{store=\"fire\",rule=\"hot\"} 2"),
        "{m}"
    );
    assert!(m.contains("tsstore_alerts_fired_total{store=\"fire\",rule=\"north\"} 2"));
}

#[test]
fn schema_stores_evaluate_the_expanded_object() {
    let srv = Server::start();
    let s = srv.create_store("sch", json!({ "num_blocks": 64, "data_type": "schema" }));
    let schema = json!({ "fields": [
        { "index": 1, "name": "temp", "type": "float64" },
        { "index": 2, "name": "room", "type": "string" } ] });
    let r = srv.put(&s.path("/schema")).key(&s.key).json(&schema).send();
    assert_eq!(r.status, 200, "{}", r.text());
    add_ok(&srv, &s, "lab", "room == \"lab\" AND temp >= 20.5");
    insert(&srv, &s, 1, json!({ "temp": 20.5, "room": "lab" }));
    insert(&srv, &s, 2, json!({ "temp": 25.0, "room": "hall" }));
    assert_eq!(fired(&srv, &s), [("lab".to_string(), 1)]);
    assert_eq!(
        alerts(&srv, &s, "")["alerts"][0]["data"],
        json!({ "temp": 20.5, "room": "lab" })
    );
}

#[test]
fn rules_fire_on_unix_socket_ingest() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("tsstore.sock");
    let srv = Server::builder().socket(&sock).start();
    let s = srv.json_store("sock");
    add_ok(&srv, &s, "hot", "temp > 30");
    let mut c = Client::auth(&sock, &s);
    let cold = c.store(r#"{"temp": 3}"#);
    let hot = c.store(r#"{"temp": 33}"#);
    assert!(hot > cold);
    assert_eq!(fired(&srv, &s), [("hot".to_string(), hot)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_fire_on_ws_write_ingest() {
    let srv = Server::start();
    let s = srv.json_store("wsw");
    add_ok(&srv, &s, "hot", "temp > 30");
    let url = format!("ws://{}{}?api_key={}", srv.addr, s.path("/ws/write"), s.key);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    for (t, v) in [(1, 40), (2, 10), (3, 50)] {
        let m = json!({ "timestamp": t, "data": { "temp": v } }).to_string();
        ws.send(Message::Text(m.into())).await.unwrap();
    }
    let mut acks = 0;
    while acks < 3 {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("ack within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "ack", "{v}");
            acks += 1;
        }
    }
    let got = tokio::task::spawn_blocking(move || {
        let f = fired(&srv, &s);
        drop(srv);
        f
    })
    .await
    .unwrap();
    assert_eq!(got, [("hot".to_string(), 3), ("hot".to_string(), 1)]);
}

#[test]
fn cooldown_holds_back_a_rule_and_limit_caps_the_answer() {
    let srv = Server::start();
    let s = srv.json_store("cool");
    let (st, v) = add(
        &srv,
        &s,
        json!({ "name": "slow", "condition": "v > 0", "cooldown": "1h" }),
    );
    assert_eq!(st, 201, "{v}");
    add_ok(&srv, &s, "every", "v > 0");
    for t in 1..=5 {
        insert(&srv, &s, t, json!({ "v": t }));
    }
    let f = fired(&srv, &s);
    assert_eq!(f.iter().filter(|(r, _)| r == "slow").count(), 1);
    assert_eq!(f.iter().filter(|(r, _)| r == "every").count(), 5);
    assert!(f.contains(&("slow".to_string(), 1)));
    let a = alerts(&srv, &s, "?limit=2");
    assert_eq!(a["count"], 2);
    assert_eq!(a["alerts"][0]["timestamp"], 5);
    assert_eq!(a["alerts"][1]["timestamp"], 4);
    assert_eq!(alerts(&srv, &s, "?limit=1000")["count"], 6);
}

#[test]
fn deleting_a_store_removes_its_rules_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Server::builder().data_dir(&data).start();
    let s = srv.json_store("gone");
    add_ok(&srv, &s, "hot", "temp > 30");
    insert(&srv, &s, 1, json!({ "temp": 40 }));
    assert_eq!(fired(&srv, &s).len(), 1);
    let r = srv.delete(&s.path("")).admin().send();
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    assert_eq!(srv.get(&s.path("/rules")).admin().send().status, 404);
    let again = srv.json_store("gone");
    let list = srv.get(&again.path("/rules")).key(&again.key).send().json();
    assert_eq!(list["count"], 0, "{list}");
    assert_eq!(alerts(&srv, &again, "")["count"], 0);
    insert(&srv, &again, 1, json!({ "temp": 40 }));
    assert!(fired(&srv, &again).is_empty());
    assert!(!srv
        .get("/metrics")
        .send()
        .text()
        .contains("store=\"gone\",rule"));
}

#[test]
fn rules_fire_on_mqtt_subscription_ingest() {
    let m = super::mosquitto::Mosquitto::start();
    let srv = Server::builder()
        .config(&super::outbound::loopback_allowed(""))
        .start();
    let s = srv.json_store("mq");
    add_ok(&srv, &s, "hot", "temp > 30");
    let r = srv
        .post(&s.path("/mqtt/subscriptions"))
        .key(&s.key)
        .json(&json!({ "broker_url": m.url(), "topics": ["sensors/#"] }))
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let status = || {
        srv.get(&s.path(&format!("/mqtt/subscriptions/{id}")))
            .key(&s.key)
            .send()
            .json()
    };
    assert!(super::common::eventually(
        Duration::from_secs(20),
        || status()["status"] == "connected"
    ));
    for v in [10, 40, 20, 50] {
        m.publish("sensors/a", json!({ "temp": v }).to_string().as_bytes(), 1);
    }
    assert!(super::common::eventually(
        Duration::from_secs(20),
        || status()["messages_stored"] == 4
    ));
    let a = alerts(&srv, &s, "");
    let temps: Vec<Value> = a["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["data"]["temp"].clone())
        .collect();
    assert_eq!(temps, [json!(50), json!(40)], "{a}");
}

/// The message of every refused webhook URL.
const BAD_WEBHOOK: &str = "invalid webhook: must be an http:// or https:// URL with a host and no credentials, at most 2048 characters";

/// A request the test receiver got.
#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    method: String,
    target: String,
    /// Names lowercase, in the order sent.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP/1.1 receiver on 127.0.0.1: answers the n-th request with the
/// n-th of `answers` (then 200), one request per connection, and records
/// each request.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start(answers: &[u16]) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (record, answers) = (got.clone(), answers.to_vec());
        std::thread::spawn(move || {
            for (n, conn) in l.incoming().enumerate() {
                let Ok(mut conn) = conn else { return };
                let Some(req) = read_request(&mut conn) else {
                    continue;
                };
                record.lock().unwrap().push(req);
                let status = answers.get(n).copied().unwrap_or(200);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Receiver { port, got }
    }

    fn url(&self, rest: &str) -> String {
        format!("http://127.0.0.1:{}{rest}", self.port)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for at least `n` requests and returns them all.
    fn wait(&self, n: usize) -> Vec<Got> {
        assert!(
            eventually(Duration::from_secs(15), || self.got().len() >= n),
            "expected {n} requests, got {:?}",
            self.got()
        );
        self.got()
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Got> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let at = Instant::now();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Got {
        at,
        method,
        target,
        headers,
        body,
    })
}

fn rule_status(srv: &Server, s: &Store, name: &str) -> Value {
    let r = srv
        .get(&s.path(&format!("/rules/{name}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

const HEADER_SECRET: &str = "hdr-s3cret-value";
const QUERY_SECRET: &str = "qs-s3cret-token";

#[test]
fn webhooks_receive_the_alert_with_its_headers_and_keep_their_values_secret() {
    let rx = Receiver::start(&[]);
    let srv = Server::builder()
        .config(&super::outbound::loopback_allowed(""))
        .start();
    let s = srv.json_store("hook");
    let url = rx.url(&format!("/in/alerts?token={QUERY_SECRET}"));
    let (st, v) = add(
        &srv,
        &s,
        json!({ "name": "hot", "condition": "temp > 30", "webhook": url,
                "webhook_headers": { "Authorization": format!("Bearer {HEADER_SECRET}"), "X-Site": "north" } }),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v,
        json!({ "name": "hot", "condition": "temp > 30", "cooldown": "0",
                "alerts_fired": 0, "last_fired": null,
                "webhook": url, "webhook_headers": { "Authorization": "***", "X-Site": "***" },
                "webhook_pending": 0, "webhook_delivered": 0, "webhook_failed": 0,
                "webhook_dropped": 0, "webhook_failures": 0, "last_webhook_error": null })
    );
    insert(&srv, &s, 5, json!({ "temp": 10 }));
    insert(&srv, &s, 7, json!({ "temp": 41.5, "room": "lab" }));
    let got = rx.wait(1);
    assert_eq!(got.len(), 1, "{got:?}");
    let g = &got[0];
    assert_eq!(
        (g.method.as_str(), g.target.as_str()),
        ("POST", format!("/in/alerts?token={QUERY_SECRET}").as_str())
    );
    assert_eq!(g.header("content-type"), Some("application/json"));
    assert_eq!(
        g.header("authorization"),
        Some(format!("Bearer {HEADER_SECRET}").as_str())
    );
    assert_eq!(g.header("x-site"), Some("north"));
    assert_eq!(
        g.header("host"),
        Some(format!("127.0.0.1:{}", rx.port).as_str())
    );
    assert_eq!(
        g.header("content-length"),
        Some(g.body.len().to_string().as_str())
    );
    // The body is the alert as the ring keeps it, exactly.
    let ring = alerts(&srv, &s, "");
    assert_eq!(ring["count"], 1, "{ring}");
    assert_eq!(g.json(), ring["alerts"][0]);
    let body = g.json();
    assert_eq!(
        (
            &body["type"],
            &body["rule"],
            &body["timestamp"],
            &body["data"]
        ),
        (
            &json!("alert"),
            &json!("hot"),
            &json!(7),
            &json!({ "temp": 41.5, "room": "lab" })
        )
    );
    assert!(eventually(Duration::from_secs(5), || {
        rule_status(&srv, &s, "hot")["webhook_delivered"] == 1
    }));
    let st = rule_status(&srv, &s, "hot");
    assert_eq!(
        (
            &st["webhook_pending"],
            &st["webhook_failures"],
            &st["last_webhook_error"]
        ),
        (&json!(0), &json!(0), &Value::Null),
        "{st}"
    );
    let metrics = srv.get("/metrics").send().text();
    for (result, n) in [("ok", 1), ("failed", 0), ("dropped", 0)] {
        let line = format!(
            "tsstore_webhook_deliveries_total{{store=\"hook\",owner=\"store\",rule=\"hot\",result=\"{result}\"}} {n}\n"
        );
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    // The header's value is nowhere but in the request.
    let list = srv.get(&s.path("/rules")).key(&s.key).send().text();
    let one = srv.get(&s.path("/rules/hot")).admin().send().text();
    for text in [&list, &one, &metrics, &srv.log()] {
        assert!(!text.contains(HEADER_SECRET), "{text}");
    }
}

#[test]
fn a_failed_delivery_is_retried_a_second_later_and_a_4xx_is_not() {
    let flaky = Receiver::start(&[500, 200]);
    let refusing = Receiver::start(&[404, 200]);
    let srv = Server::builder()
        .config(&super::outbound::loopback_allowed(""))
        .start();
    let s = srv.json_store("retry");
    let headers = json!({ "X-Token": HEADER_SECRET });
    let (st, v) = add(
        &srv,
        &s,
        json!({ "name": "flaky", "condition": "temp > 30",
                "webhook": flaky.url(&format!("/h?token={QUERY_SECRET}")), "webhook_headers": headers }),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = add(
        &srv,
        &s,
        json!({ "name": "refused", "condition": "temp > 30",
                "webhook": refusing.url("/h"), "webhook_headers": headers }),
    );
    assert_eq!(st, 201, "{v}");
    insert(&srv, &s, 9, json!({ "temp": 50 }));

    let got = flaky.wait(2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(got[1].json()["timestamp"], 9);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_secs(3),
        "retried after {gap:?}"
    );
    assert!(eventually(Duration::from_secs(5), || {
        rule_status(&srv, &s, "flaky")["webhook_delivered"] == 1
    }));
    let st = rule_status(&srv, &s, "flaky");
    assert_eq!(
        (
            &st["webhook_failures"],
            &st["webhook_failed"],
            &st["last_webhook_error"]
        ),
        (&json!(1), &json!(0), &json!("HTTP status 500")),
        "{st}"
    );

    // The 404 is final: one request, however long we wait past the first
    // retry's time.
    refusing.wait(1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(refusing.got().len(), 1);
    let st = rule_status(&srv, &s, "refused");
    assert_eq!(
        (
            &st["webhook_delivered"],
            &st["webhook_failed"],
            &st["last_webhook_error"]
        ),
        (&json!(0), &json!(1), &json!("HTTP status 404")),
        "{st}"
    );
    let metrics = srv.get("/metrics").send().text();
    for line in [
        "tsstore_webhook_deliveries_total{store=\"retry\",owner=\"store\",rule=\"flaky\",result=\"ok\"} 1\n",
        "tsstore_webhook_deliveries_total{store=\"retry\",owner=\"store\",rule=\"refused\",result=\"failed\"} 1\n",
        "tsstore_webhook_deliveries_total{store=\"retry\",owner=\"store\",rule=\"refused\",result=\"ok\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    // The failures were logged with the URL redacted, without the header.
    let log = srv.log();
    assert!(log.contains("webhook delivery failed"), "{log}");
    assert!(log.contains("/h?token=***"), "{log}");
    assert!(!log.contains(QUERY_SECRET), "{log}");
    assert!(!log.contains(HEADER_SECRET), "{log}");
}

#[test]
fn a_store_key_webhook_to_loopback_is_refused_and_the_admin_role_persists() {
    let rx = Receiver::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Server::builder().data_dir(&data).start();
    let s = srv.json_store("policy");
    let rule = json!({ "name": "hot", "condition": "temp > 30", "webhook": rx.url("/x") });
    let (st, v) = add(&srv, &s, rule.clone());
    assert_eq!(
        (st, v),
        (
            403,
            json!({ "error": "url refused by the outbound policy" })
        )
    );
    let list = srv.get(&s.path("/rules")).key(&s.key).send().json();
    assert_eq!(list["count"], 0, "{list}");
    // A name is judged by what it resolves to.
    let by_name = json!({ "name": "hot", "condition": "temp > 30",
                          "webhook": format!("http://localhost:{}/x", rx.port) });
    assert_eq!(add(&srv, &s, by_name).0, 403);
    // The admin key may dial the loopback.
    let r = srv.post(&s.path("/rules")).admin().json(&rule).send();
    assert_eq!(r.status, 201, "{}", r.text());
    insert(&srv, &s, 1, json!({ "temp": 40 }));
    assert_eq!(rx.wait(1)[0].json()["timestamp"], 1);
    drop(srv);
    // The role is kept with the rule: after a restart it still delivers.
    let srv = Server::builder().data_dir(&data).start();
    insert(&srv, &s, 2, json!({ "temp": 40 }));
    let got = rx.wait(2);
    assert_eq!(got[1].json()["timestamp"], 2);
    assert!(rule_status(&srv, &s, "hot")["last_webhook_error"].is_null());
}

#[test]
fn deleting_a_rule_or_its_store_ends_its_deliveries() {
    let down = Receiver::start(&[503; 100]);
    let srv = Server::builder()
        .config(&super::outbound::loopback_allowed(""))
        .start();
    let a = srv.json_store("end-a");
    let b = srv.json_store("end-b");
    for s in [&a, &b] {
        let (st, v) = add(
            &srv,
            s,
            json!({ "name": "hot", "condition": "temp > 30", "webhook": down.url("/x") }),
        );
        assert_eq!(st, 201, "{v}");
    }
    insert(&srv, &a, 1, json!({ "temp": 40 }));
    down.wait(1);
    assert_eq!(
        srv.delete(&a.path("/rules/hot")).key(&a.key).send().status,
        200
    );
    // The retries (1 s, then 2 s) would have come by now.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(down.got().len(), 1, "{:?}", down.got());

    insert(&srv, &b, 1, json!({ "temp": 40 }));
    down.wait(2);
    let r = srv.delete(&b.path("")).admin().send();
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(down.got().len(), 2, "{:?}", down.got());
}

/// The next text frame the remote got, on any connection.
async fn next_frame(remote: &mut super::outbound::Remote) -> Value {
    loop {
        match remote.next().await {
            super::outbound::Event::Frame(v) => return v,
            // Connections come and go (the one made without rules, here).
            super::outbound::Event::Connected(..) | super::outbound::Event::Closed(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_connections_send_their_rules_alerts_and_post_them_to_webhooks() {
    let mut remote = super::outbound::Remote::start(0, false).await;
    let rx = Receiver::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Store keys may dial the remote, not the receiver.
    let cfg = format!(
        r#"{{"server": {{"outbound": {{"allow": ["127.0.0.1:{}"]}}}}}}"#,
        remote.port
    );
    let srv = Server::builder().data_dir(&data).config(&cfg).start();
    let s = srv.json_store("pushrules");
    let path = s.path("/ws/connections");
    let post = |body: Value| {
        let r = srv.post(&path).key(&s.key).json(&body).send();
        (r.status, r.json())
    };
    let hot = json!({ "name": "hot", "condition": "temp > 30" });
    let cold = json!({ "name": "cold", "condition": "temp < 0", "webhook": rx.url("/cold"),
                       "webhook_headers": { "X-Key": HEADER_SECRET } });
    // Refusals: the rules' own messages, and the policy for the webhook.
    for (body, want) in [
        (
            json!({ "mode": "pull", "url": remote.url(), "rules": [hot] }),
            (400, "invalid rules: only on push connections"),
        ),
        (
            json!({ "mode": "push", "url": remote.url(), "rules": {"a": 1} }),
            (400, "invalid rules: must be an array of rule objects"),
        ),
        (
            json!({ "mode": "push", "url": remote.url(),
                    "rules": [{ "name": "r", "condition": "temp >" }] }),
            (400, "condition: expected a value at position 7"),
        ),
        (
            json!({ "mode": "push", "url": remote.url(),
                    "rules": [{ "name": "r", "condition": "a > 1", "webhook": "ftp://x/" }] }),
            (400, BAD_WEBHOOK),
        ),
        (
            json!({ "mode": "push", "url": remote.url(), "rules": [hot, hot] }),
            (409, "rule 'hot' already exists"),
        ),
        (
            json!({ "mode": "push", "url": remote.url(), "rules": [cold] }),
            (403, "url refused by the outbound policy"),
        ),
    ] {
        let (st, v) = post(body.clone());
        assert_eq!((st, v["error"].as_str().unwrap_or("")), want, "{body}");
    }
    // Without rules, the counters are there and 0.
    let (st, plain) =
        post(json!({ "mode": "push", "url": remote.url(), "filter": "nothing-matches" }));
    assert_eq!(st, 201, "{plain}");
    assert_eq!(
        (&plain["rules_count"], &plain["alerts_fired"]),
        (&json!(0), &json!(0))
    );
    let r = srv
        .delete(&format!("{path}/{}", plain["id"].as_str().unwrap()))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200);

    // The admin key may have the webhook POST to the loopback.
    let r = srv
        .post(&path)
        .admin()
        .json(&json!({ "mode": "push", "url": remote.url(), "rules": [hot, cold] }))
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let c = r.json();
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(
        (&c["rules_count"], &c["alerts_fired"]),
        (&json!(2), &json!(0))
    );
    assert_eq!(c["rules"][1]["webhook_headers"], json!({ "X-Key": "***" }));
    assert!(!c.to_string().contains(HEADER_SECRET));
    for (t, temp) in [(1, 10), (2, 40), (3, -5)] {
        insert(&srv, &s, t, json!({ "temp": temp }));
    }
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push(next_frame(&mut remote).await);
    }
    let kinds: Vec<(String, String, i64)> = frames
        .iter()
        .map(|f| {
            (
                f["type"].as_str().unwrap().to_string(),
                f["rule"].as_str().unwrap_or("").to_string(),
                f["timestamp"].as_i64().unwrap(),
            )
        })
        .collect();
    let k = |t: &str, r: &str, ts: i64| (t.to_string(), r.to_string(), ts);
    assert_eq!(
        kinds,
        [
            k("data", "", 1),
            k("data", "", 2),
            k("alert", "hot", 2),
            k("data", "", 3),
            k("alert", "cold", 3)
        ]
    );
    assert_eq!(frames[2]["data"], json!({ "temp": 40 }));
    // The webhook gets the same alert, with its header.
    let got = rx.wait(1);
    assert_eq!(got[0].json(), frames[4]);
    assert_eq!(got[0].header("x-key"), Some(HEADER_SECRET));
    let st = super::outbound::status(&srv, &s, &id);
    assert_eq!(
        (&st["rules_count"], &st["alerts_fired"]),
        (&json!(2), &json!(2)),
        "{st}"
    );
    assert_eq!(st["rules"][0]["alerts_fired"], 1);
    drop(srv);

    // The rules are kept with the connection.
    let srv = Server::builder().data_dir(&data).config(&cfg).start();
    let st = super::outbound::status(&srv, &s, &id);
    assert_eq!(
        (&st["rules_count"], &st["alerts_fired"]),
        (&json!(2), &json!(0)),
        "{st}"
    );
    assert_eq!(st["rules"][1]["webhook"], json!(rx.url("/cold")));
    assert!(!st.to_string().contains(HEADER_SECRET));
}

#[test]
fn mqtt_sinks_publish_their_rules_alerts_on_the_topic_and_post_them_to_webhooks() {
    let m = super::mosquitto::Mosquitto::start();
    let rx = Receiver::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = super::outbound::loopback_allowed("");
    let srv = Server::builder().data_dir(&data).config(&cfg).start();
    let s = srv.json_store("mqttrules");
    let path = s.path("/mqtt/connections");
    let hot = json!({ "name": "hot", "condition": "temp > 30" });
    let cold = json!({ "name": "cold", "condition": "temp < 0", "webhook": rx.url("/cold"),
                       "webhook_headers": { "X-Key": HEADER_SECRET } });
    for (body, want) in [
        (
            json!({ "broker_url": m.url(), "topic": "al/t", "rules": "hot" }),
            (400, "invalid rules: must be an array of rule objects"),
        ),
        (
            json!({ "broker_url": m.url(), "topic": "al/t",
                    "rules": [{ "name": "r", "condition": "temp >" }] }),
            (400, "condition: expected a value at position 7"),
        ),
        (
            json!({ "broker_url": m.url(), "topic": "al/t",
                    "rules": [{ "name": "r", "condition": "a > 1", "webhook_headers": {"a": "b"} }] }),
            (400, "invalid webhook_headers: only with a webhook"),
        ),
        (
            json!({ "broker_url": m.url(), "topic": "al/t", "rules": [hot, hot] }),
            (409, "rule 'hot' already exists"),
        ),
    ] {
        let r = srv.post(&path).key(&s.key).json(&body).send();
        assert_eq!((r.status, r.error().as_str()), want, "{body}");
    }
    let sub = m.subscribe("al/#");
    let r = srv
        .post(&path)
        .key(&s.key)
        .json(&json!({ "broker_url": m.url(), "topic": "al/t", "cursor_persist_interval": 1, "rules": [hot, cold] }))
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let c = r.json();
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(
        (&c["rules_count"], &c["alerts_fired"]),
        (&json!(2), &json!(0))
    );
    assert_eq!(c["rules"][1]["webhook_headers"], json!({ "X-Key": "***" }));
    for (t, temp) in [(1, 10), (2, 40), (3, -5)] {
        insert(&srv, &s, t, json!({ "temp": temp }));
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let (topic, payload) = sub.next(Duration::from_secs(20)).expect("a message");
        assert_eq!(topic, "al/t");
        got.push(serde_json::from_str::<Value>(&payload).unwrap());
    }
    let alert = |rule: &str, ts: i64, temp: i64| {
        (
            json!("alert"),
            json!(rule),
            json!(ts),
            json!({ "temp": temp }),
        )
    };
    assert_eq!(got[0], json!({ "temp": 10 }));
    assert_eq!(got[1], json!({ "temp": 40 }));
    assert_eq!(
        (
            got[2]["type"].clone(),
            got[2]["rule"].clone(),
            got[2]["timestamp"].clone(),
            got[2]["data"].clone()
        ),
        alert("hot", 2, 40)
    );
    assert_eq!(got[3], json!({ "temp": -5 }));
    assert_eq!(
        (
            got[4]["type"].clone(),
            got[4]["rule"].clone(),
            got[4]["timestamp"].clone(),
            got[4]["data"].clone()
        ),
        alert("cold", 3, -5)
    );
    let posted = rx.wait(1);
    assert_eq!(posted[0].json(), got[4]);
    assert_eq!(posted[0].header("x-key"), Some(HEADER_SECRET));
    let st = srv.get(&format!("{path}/{id}")).key(&s.key).send().json();
    assert_eq!(
        (&st["rules_count"], &st["alerts_fired"]),
        (&json!(2), &json!(2)),
        "{st}"
    );
    // The cursor moved over the alerts' publishes too (acknowledged).
    assert!(eventually(Duration::from_secs(10), || {
        srv.get(&format!("{path}/{id}")).key(&s.key).send().json()["last_timestamp"] == 3
    }));
    // The rules are kept with the sink; a restart resumes after the
    // persisted cursor, so nothing fires again.
    drop(srv);
    let srv = Server::builder().data_dir(&data).config(&cfg).start();
    let st = srv.get(&format!("{path}/{id}")).key(&s.key).send().json();
    assert_eq!(
        (&st["rules_count"], &st["alerts_fired"]),
        (&json!(2), &json!(0)),
        "{st}"
    );
    assert!(!st.to_string().contains(HEADER_SECRET));
}

#[test]
fn a_webhook_nobody_answers_keeps_64_pending_and_counts_the_dropped() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let srv = Server::builder()
        .config(&super::outbound::loopback_allowed(""))
        .start();
    let s = srv.json_store("full");
    let (st, v) = add(
        &srv,
        &s,
        json!({ "name": "hot", "condition": "temp > 30",
                "webhook": format!("http://127.0.0.1:{port}/x") }),
    );
    assert_eq!(st, 201, "{v}");
    for t in 1..=70 {
        insert(&srv, &s, t, json!({ "temp": 40 }));
    }
    // Every attempt fails to connect: the queue holds the newest 64 (the
    // one being retried was the oldest, so it went too).
    let st = rule_status(&srv, &s, "hot");
    assert_eq!(
        (
            &st["webhook_pending"],
            &st["webhook_dropped"],
            &st["webhook_delivered"]
        ),
        (&json!(64), &json!(6), &json!(0)),
        "{st}"
    );
    assert!(eventually(Duration::from_secs(5), || {
        let st = rule_status(&srv, &s, "hot");
        st["webhook_failures"].as_u64() >= Some(2)
            && st["last_webhook_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("connect failed"))
    }));
    let metrics = srv.get("/metrics").send().text();
    let line =
        "tsstore_webhook_deliveries_total{store=\"full\",owner=\"store\",rule=\"hot\",result=\"dropped\"} 6\n";
    assert!(metrics.contains(line), "{metrics}");
    // Every insert was answered at once: none waited for a delivery.
    assert_eq!(alerts(&srv, &s, "?limit=1000")["count"], 70);
}

/// The `tsstore_webhook_deliveries_total` line of a rule of a connection
/// or sink.
fn owned_line(store: &str, owner: &str, id: &str, rule: &str, result: &str, n: u64) -> String {
    format!(
        "tsstore_webhook_deliveries_total{{store=\"{store}\",owner=\"{owner}\",id=\"{id}\",rule=\"{rule}\",result=\"{result}\"}} {n}\n"
    )
}

/// A connection or sink (created by POSTing `base` with two rules to
/// `coll`) whose rules' webhook counters show in `/metrics` under `owner`
/// and its id; deleting it stops the retries of the rule whose receiver
/// keeps failing, and takes its lines out of `/metrics`.
fn webhook_counters_show_and_delete_ends_retries(
    srv: &Server,
    s: &Store,
    coll: &str,
    owner: &str,
    base: Value,
) {
    let once404 = Receiver::start(&[404]);
    let down = Receiver::start(&[503; 100]);
    let mut body = base;
    body["rules"] = json!([
        { "name": "once404", "condition": "temp > 30", "webhook": once404.url("/a") },
        { "name": "down", "condition": "temp > 30", "webhook": down.url("/b") },
    ]);
    let r = srv.post(&s.path(coll)).key(&s.key).json(&body).send();
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    insert(srv, s, 1, json!({ "temp": 40 }));
    insert(srv, s, 2, json!({ "temp": 41 }));
    // The first alert gets a final 404 (failed), the second a 200 (ok).
    once404.wait(2);
    let want = [
        owned_line(&s.name, owner, &id, "once404", "ok", 1),
        owned_line(&s.name, owner, &id, "once404", "failed", 1),
        owned_line(&s.name, owner, &id, "once404", "dropped", 0),
        owned_line(&s.name, owner, &id, "down", "ok", 0),
        owned_line(&s.name, owner, &id, "down", "failed", 0),
    ];
    let metrics = || srv.get("/metrics").send().text();
    assert!(
        eventually(Duration::from_secs(10), || {
            let m = metrics();
            want.iter().all(|l| m.contains(l.as_str()))
        }),
        "{want:?} in:\n{}",
        metrics()
    );
    // The failing receiver got the first attempt and the retry 1 s later.
    down.wait(2);
    let r = srv
        .delete(&s.path(&format!("{coll}/{id}")))
        .key(&s.key)
        .send();
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    let seen = down.got().len();
    // The next retry (2 s after the last) would have come by now.
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(down.got().len(), seen, "{:?}", down.got());
    let m = metrics();
    assert!(!m.contains(&format!("id=\"{id}\"")), "{m}");
}

/// Issue 15: a push connection's rules' webhook counters are in
/// `/metrics` (`owner="connection"`), and deleting the connection stops
/// its webhooks' retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_connection_webhooks_count_in_metrics_and_stop_with_the_connection() {
    let remote = super::outbound::Remote::start(0, false).await;
    let srv = Server::builder()
        .config(&super::outbound::loopback_allowed(""))
        .start();
    let s = srv.json_store("pushhooks");
    let base = json!({ "mode": "push", "url": remote.url() });
    tokio::task::block_in_place(|| {
        webhook_counters_show_and_delete_ends_retries(
            &srv,
            &s,
            "/ws/connections",
            "connection",
            base,
        )
    });
    drop(remote);
}

/// Issue 15: an MQTT sink's rules' webhook counters are in `/metrics`
/// (`owner="sink"`), and deleting the sink stops its webhooks' retries.
#[test]
fn mqtt_sink_webhooks_count_in_metrics_and_stop_with_the_sink() {
    let m = super::mosquitto::Mosquitto::start();
    let srv = Server::builder()
        .config(&super::outbound::loopback_allowed(""))
        .start();
    let s = srv.json_store("sinkhooks");
    let base = json!({ "broker_url": m.url(), "topic": "hooks/t" });
    webhook_counters_show_and_delete_ends_retries(&srv, &s, "/mqtt/connections", "sink", base);
}
