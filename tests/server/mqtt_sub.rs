//! MQTT subscriptions against a real broker (Debian's mosquitto, started
//! by the tests): what the broker's topics carry lands in the store, as
//! the store's type demands, and nothing the broker accepted is lost when
//! the broker or tsstore goes away.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::common::{eventually, signal, Server, Store};
use super::mosquitto::Mosquitto;
use super::outbound::loopback_allowed;

const WAIT: Duration = Duration::from_secs(20);

fn server() -> Server {
    Server::builder().config(&loopback_allowed("")).start()
}

fn create(srv: &Server, s: &Store, body: Value) -> Value {
    let r = srv
        .post(&s.path("/mqtt/subscriptions"))
        .key(&s.key)
        .json(&body)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn status(srv: &Server, s: &Store, id: &str) -> Value {
    let r = srv
        .get(&s.path(&format!("/mqtt/subscriptions/{id}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits until the subscription's status object satisfies `f`.
fn wait_status(srv: &Server, s: &Store, id: &str, what: &str, f: impl Fn(&Value) -> bool) {
    let ok = eventually(WAIT, || f(&status(srv, s, id)));
    assert!(ok, "{what}: {}", status(srv, s, id));
}

/// Creates a subscription and waits until the broker acknowledged it.
fn subscribe(srv: &Server, s: &Store, body: Value) -> String {
    let v = create(srv, s, body);
    let id = v["id"].as_str().unwrap().to_string();
    wait_status(srv, s, &id, "connected", |v| v["status"] == "connected");
    id
}

/// Every object of the store, oldest first: (timestamp, data).
fn objects(srv: &Server, s: &Store, format: &str) -> Vec<(i64, Value)> {
    let r = srv
        .get(&s.path(&format!("/data/oldest?limit=1000000{format}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["timestamp"].as_i64().unwrap(), o["data"].clone()))
        .collect()
}

fn datas(srv: &Server, s: &Store) -> Vec<Value> {
    objects(srv, s, "").into_iter().map(|(_, d)| d).collect()
}

/// Publishes each line as one QoS 1 message, with `mosquitto_pub -l` per
/// 5,000 lines: it exits 0 once the broker acknowledged them all, but a
/// single one fed ~35,000 lines of 100 bytes was dropped by mosquitto 2.0.11
/// ("disconnected due to out of memory") and still exited 0.
fn publish_lines(m: &Mosquitto, topic: &str, lines: impl IntoIterator<Item = String>) {
    let lines: Vec<String> = lines.into_iter().collect();
    for chunk in lines.chunks(5000) {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &m.port.to_string()])
            .args(["-q", "1", "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub");
        let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
        for l in chunk {
            writeln!(stdin, "{l}").unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "mosquitto_pub -l: {out:?}");
    }
}

fn ns(v: &[Value]) -> Vec<i64> {
    v.iter().map(|d| d["n"].as_i64().unwrap()).collect()
}

/// `n` in storage order, each at its first occurrence (a redelivery may
/// store a message twice: at least once).
fn first_seen(v: &[Value]) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    ns(v).into_iter().filter(|n| seen.insert(*n)).collect()
}

fn metric(srv: &Server, line_start: &str) -> f64 {
    let text = srv.get("/metrics").send().text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_start} not in {text}"))
}

#[test]
fn subscription_routes_validate_and_never_show_the_password() {
    let m = Mosquitto::start();
    let srv = server();
    let s = srv.json_store("m1");
    let path = s.path("/mqtt/subscriptions");
    assert_eq!(srv.get(&path).send().status, 401);
    assert_eq!(srv.post(&path).json(&json!({})).send().status, 401);
    let r = srv.get(&path).key(&s.key).send();
    assert_eq!((r.status, r.json()), (200, json!({ "subscriptions": [] })));

    // Every bad field is named in one answer.
    let r = srv
        .post(&path)
        .key(&s.key)
        .json(&json!({
            "broker_url": "http://127.0.0.1:1",
            "topics": ["a/#/b"],
            "qos": 2,
            "timestamp_unit": "h",
            "topic": "x",
        }))
        .send();
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.error();
    for field in ["broker_url", "topics", "qos", "timestamp_unit", "\"topic\""] {
        assert!(e.contains(field), "{field}: {e}");
    }
    for (body, want) in [
        (json!({ "broker_url": m.url() }), "topics is required"),
        (json!({ "broker_url": m.url(), "topics": [] }), "topics"),
        (
            json!({ "broker_url": m.url(), "topics": ["a".repeat(1025)] }),
            "1024",
        ),
        (
            json!({ "broker_url": m.url(), "topics": ["a"], "timestamp": "field" }),
            "timestamp_field",
        ),
        (
            json!({ "broker_url": m.url(), "topics": ["a"], "ca_file": "/etc/passwd" }),
            "invalid ca_file",
        ),
        (json!({ "topics": ["a"] }), "broker_url is required"),
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
    // A text store takes neither include_topic nor a timestamp field.
    let t = srv.create_store("m1t", json!({ "num_blocks": 8, "data_type": "text" }));
    let r = srv
        .post(&t.path("/mqtt/subscriptions"))
        .key(&t.key)
        .json(&json!({ "broker_url": m.url(), "topics": ["a"], "include_topic": true }))
        .send();
    assert_eq!(r.status, 400, "{}", r.text());

    let v = create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topics": ["a/+", "b/#"], "username": "u", "password": "sesame-42" }),
    );
    let id = v["id"].as_str().unwrap().to_string();
    for k in [
        "id",
        "broker_url",
        "topics",
        "status",
        "messages_received",
        "messages_stored",
        "errors",
        "last_error",
        "created_at",
        "connected_since",
        "last_timestamp",
    ] {
        assert!(v.get(k).is_some(), "{k} in {v}");
    }
    assert_eq!(
        (
            &v["qos"],
            &v["clean_session"],
            &v["timestamp"],
            &v["username"]
        ),
        (&json!(1), &json!(false), &json!("now"), &json!("u"))
    );
    assert_eq!(v["topics"], json!(["a/+", "b/#"]));
    let list = srv.get(&path).key(&s.key).send().text();
    let one = status(&srv, &s, &id).to_string();
    for text in [&v.to_string(), &list, &one] {
        assert!(!text.contains("sesame-42"), "{text}");
        assert!(!text.contains("password"), "{text}");
    }
    // On disk (for the restart), readable by the owner only.
    let file = srv.data().join("m1").join("mqtt_subscriptions.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("sesame-42"));

    // One client id per broker: two would take the session from each other.
    let r = srv
        .post(&path)
        .key(&s.key)
        .json(&json!({ "broker_url": m.url(), "topics": ["c"], "client_id": format!("tsstore-m1-{id}") }))
        .send();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("client_id"), "{}", r.error());

    let r = srv.delete(&format!("{path}/nope")).key(&s.key).send();
    assert_eq!(r.status, 404);
    let r = srv.delete(&format!("{path}/{id}")).key(&s.key).send();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = srv.get(&format!("{path}/{id}")).key(&s.key).send();
    assert_eq!(r.status, 404);
}

#[test]
fn a_store_key_may_not_make_the_server_dial_loopback() {
    let m = Mosquitto::start();
    // The default policy: loopback is the admin's only.
    let srv = Server::start();
    let s = srv.json_store("pol");
    let path = s.path("/mqtt/subscriptions");
    let body = json!({ "broker_url": m.url(), "topics": ["t"] });
    let r = srv.post(&path).key(&s.key).json(&body).send();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.error(), "url refused by the outbound policy");
    let r = srv.post(&path).admin().json(&body).send();
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_status(&srv, &s, &id, "admin may", |v| v["status"] == "connected");
}

#[test]
fn published_messages_land_in_a_json_store_in_order() {
    let m = Mosquitto::start();
    let srv = server();
    let s = srv.json_store("j");
    let id = subscribe(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topics": ["sensors/#"] }),
    );
    for n in 1..=10 {
        m.publish("sensors/a", json!({ "n": n }).to_string().as_bytes(), 1);
    }
    publish_lines(
        &m,
        "sensors/b/c",
        (11..=200).map(|n| format!("{{\"n\":{n}}}")),
    );
    m.publish("other", br#"{"n":0}"#, 1);
    wait_status(&srv, &s, &id, "all stored", |v| v["messages_stored"] == 200);
    assert_eq!(ns(&datas(&srv, &s)), (1..=200).collect::<Vec<_>>());
    let v = status(&srv, &s, &id);
    // The default client id, as the session logs in with it.
    assert_eq!(v["client_id"], format!("tsstore-j-{id}"), "{v}");
    assert_eq!(
        (&v["messages_received"], &v["errors"]),
        (&json!(200), &json!(0)),
        "{v}"
    );
    let newest = objects(&srv, &s, "").last().unwrap().0;
    assert_eq!(v["last_timestamp"], newest, "{v}");
    assert_eq!(
        metric(
            &srv,
            "tsstore_mqtt_connections{kind=\"subscription\",status=\"connected\"}"
        ),
        1.0
    );
    assert_eq!(metric(&srv, "tsstore_mqtt_messages_received_total"), 200.0);
    assert_eq!(metric(&srv, "tsstore_mqtt_messages_stored_total"), 200.0);
    assert_eq!(
        metric(&srv, "tsstore_mqtt_errors_total{kind=\"subscription\"}"),
        0.0
    );
}

#[test]
fn include_topic_keeps_the_topic_of_each_zigbee2mqtt_device() {
    let m = Mosquitto::start();
    let srv = server();
    let s = srv.json_store("z");
    let id = subscribe(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topics": ["zigbee2mqtt/+"], "include_topic": true }),
    );
    m.publish("zigbee2mqtt/kitchen", br#"{"temperature":21.5}"#, 1);
    m.publish("zigbee2mqtt/kitchen/set", br#"{"state":"ON"}"#, 1);
    m.publish("zigbee2mqtt/hall", br#" {"occupancy":true} "#, 1);
    wait_status(&srv, &s, &id, "stored", |v| v["messages_stored"] == 2);
    assert_eq!(
        datas(&srv, &s),
        [
            json!({ "topic": "zigbee2mqtt/kitchen", "data": { "temperature": 21.5 } }),
            json!({ "topic": "zigbee2mqtt/hall", "data": { "occupancy": true } }),
        ]
    );
}

#[test]
fn timestamp_fields_in_units_and_out_of_order_refused() {
    let m = Mosquitto::start();
    let srv = server();
    let ms = srv.json_store("ms");
    let sec = srv.json_store("sec");
    let id_ms = subscribe(
        &srv,
        &ms,
        json!({ "broker_url": m.url(), "topics": ["ms"], "timestamp_field": "ts", "timestamp_unit": "ms" }),
    );
    let id_s = subscribe(
        &srv,
        &sec,
        json!({ "broker_url": m.url(), "topics": ["s"], "timestamp": "field", "timestamp_field": "at.t", "timestamp_unit": "s" }),
    );
    let base_ms = 1_700_000_000_000i64;
    for (ts, n) in [
        (base_ms, 1),
        (base_ms + 5, 2),
        (base_ms + 5, 3),
        (base_ms + 1, 4),
    ] {
        m.publish("ms", json!({ "ts": ts, "n": n }).to_string().as_bytes(), 1);
    }
    m.publish("ms", br#"{"n":5}"#, 1);
    m.publish("ms", br#"{"ts":"soon","n":6}"#, 1);
    m.publish(
        "ms",
        json!({ "ts": base_ms + 9, "n": 7 }).to_string().as_bytes(),
        1,
    );
    m.publish("s", br#"{"at":{"t":1700000000.25},"n":1}"#, 1);
    wait_status(&srv, &ms, &id_ms, "ms", |v| {
        v["messages_received"] == 7 && v["messages_stored"] == 3
    });
    let v = status(&srv, &ms, &id_ms);
    assert_eq!(v["errors"], 4, "{v}");
    assert_eq!(v["status"], "connected", "{v}");
    assert_eq!(v["last_timestamp"], (base_ms + 9) * 1_000_000, "{v}");
    let got: Vec<(i64, i64)> = objects(&srv, &ms, "")
        .into_iter()
        .map(|(t, d)| (t, d["n"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (base_ms * 1_000_000, 1),
            ((base_ms + 5) * 1_000_000, 2),
            ((base_ms + 9) * 1_000_000, 7)
        ]
    );
    wait_status(&srv, &sec, &id_s, "s", |v| v["messages_stored"] == 1);
    assert_eq!(objects(&srv, &sec, "")[0].0, 1_700_000_000_250_000_000);
    // The last refusal is the message without a number.
    let e = status(&srv, &ms, &id_ms)["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("not a number"), "{e}");
}

#[test]
fn out_of_order_is_named_in_last_error() {
    let m = Mosquitto::start();
    let srv = server();
    let s = srv.json_store("ooo");
    let id = subscribe(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topics": ["t"], "timestamp_field": "ts", "timestamp_unit": "s" }),
    );
    m.publish("t", br#"{"ts":1700000010}"#, 1);
    m.publish("t", br#"{"ts":1700000000}"#, 1);
    wait_status(&srv, &s, &id, "refused", |v| v["errors"] == 1);
    let v = status(&srv, &s, &id);
    assert!(
        v["last_error"].as_str().unwrap().contains("out of order"),
        "{v}"
    );
    assert_eq!(v["messages_stored"], 1, "{v}");
}

#[test]
fn bad_payloads_are_counted_and_the_subscription_goes_on() {
    let m = Mosquitto::start();
    let srv = server();
    let s = srv.json_store("bad");
    let id = subscribe(&srv, &s, json!({ "broker_url": m.url(), "topics": ["t"] }));
    m.publish("t", b"not json", 1);
    m.publish("t", b"", 1);
    m.publish("t", br#"{"n":1}"#, 1);
    wait_status(&srv, &s, &id, "one stored", |v| {
        v["messages_stored"] == 1 && v["errors"] == 2
    });
    let v = status(&srv, &s, &id);
    assert_eq!(
        (&v["status"], &v["messages_received"]),
        (&json!("connected"), &json!(3))
    );
    assert!(
        v["last_error"].as_str().unwrap().contains("invalid JSON"),
        "{v}"
    );
    assert_eq!(datas(&srv, &s), [json!({ "n": 1 })]);
    // Acknowledged: a new session gets none of them again.
    let r = srv
        .delete(&s.path(&format!("/mqtt/subscriptions/{id}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200);
    let id2 = subscribe(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topics": ["t"], "client_id": format!("tsstore-bad-{id}") }),
    );
    m.publish("t", br#"{"n":2}"#, 1);
    wait_status(&srv, &s, &id2, "next", |v| v["messages_received"] == 1);
    std::thread::sleep(Duration::from_millis(300));
    let v = status(&srv, &s, &id2);
    assert_eq!(
        (&v["messages_received"], &v["errors"]),
        (&json!(1), &json!(0)),
        "{v}"
    );
}

#[test]
fn schema_text_and_binary_stores_take_payloads_as_their_type_demands() {
    let m = Mosquitto::start();
    let srv = server();
    let sc = srv.create_store("sc", json!({ "num_blocks": 8, "data_type": "schema" }));
    let schema = json!({"fields": [
        {"index": 1, "name": "temp", "type": "float64"},
        {"index": 2, "name": "hum", "type": "int32"}
    ]});
    let r = srv
        .put(&sc.path("/schema"))
        .key(&sc.key)
        .json(&schema)
        .send();
    assert!(r.status < 300, "{}", r.text());
    let tx = srv.create_store("tx", json!({ "num_blocks": 8, "data_type": "text" }));
    let bn = srv.create_store("bn", json!({ "num_blocks": 8, "data_type": "binary" }));
    let id_sc = subscribe(
        &srv,
        &sc,
        json!({ "broker_url": m.url(), "topics": ["sc"] }),
    );
    let id_tx = subscribe(
        &srv,
        &tx,
        json!({ "broker_url": m.url(), "topics": ["tx"] }),
    );
    let id_bn = subscribe(
        &srv,
        &bn,
        json!({ "broker_url": m.url(), "topics": ["bn"] }),
    );
    m.publish("sc", br#"{"temp":21.5,"hum":40}"#, 1);
    m.publish("sc", br#"{"temp":"warm"}"#, 1);
    m.publish("sc", br#"{"nope":1}"#, 1);
    m.publish("tx", b"hello mqtt", 1);
    m.publish("tx", b"\xff\xfe", 1);
    m.publish("bn", b"\x00\x01\x02\xff", 1);
    wait_status(&srv, &sc, &id_sc, "schema", |v| {
        v["messages_stored"] == 1 && v["errors"] == 2
    });
    wait_status(&srv, &tx, &id_tx, "text", |v| {
        v["messages_stored"] == 1 && v["errors"] == 1
    });
    wait_status(&srv, &bn, &id_bn, "binary", |v| v["messages_stored"] == 1);
    assert_eq!(datas(&srv, &sc), [json!({ "temp": 21.5, "hum": 40 })]);
    // Stored compact, as the HTTP and WebSocket paths store it.
    assert_eq!(
        objects(&srv, &sc, "&format=compact")[0].1,
        json!({ "1": 21.5, "2": 40 })
    );
    assert_eq!(datas(&srv, &tx), [json!("hello mqtt")]);
    assert_eq!(datas(&srv, &bn), [json!("AAEC/w==")]);
}

#[test]
fn a_broker_with_users_takes_the_right_password_only() {
    let m = Mosquitto::builder().user("gw", "right-pw").start();
    let srv = server();
    let s = srv.json_store("auth");
    let bad = create(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topics": ["t"], "username": "gw", "password": "wrong" }),
    );
    let bad = bad["id"].as_str().unwrap().to_string();
    wait_status(&srv, &s, &bad, "refused", |v| {
        v["status"] == "error" && v["last_error"].as_str().unwrap().contains("dial failed")
    });
    let id = subscribe(
        &srv,
        &s,
        json!({ "broker_url": m.url(), "topics": ["t"], "username": "gw", "password": "right-pw" }),
    );
    m.publish("t", br#"{"n":1}"#, 1);
    wait_status(&srv, &s, &id, "stored", |v| v["messages_stored"] == 1);
    assert_eq!(status(&srv, &s, &bad)["messages_received"], 0);
}

#[test]
fn tls_with_a_ca_file_from_the_ca_directory() {
    let m = Mosquitto::builder().tls().start();
    let ca_dir = tempfile::tempdir().unwrap();
    std::fs::copy(m.ca(), ca_dir.path().join("broker-ca.pem")).unwrap();
    let srv = Server::builder()
        .config(&loopback_allowed(&format!(
            r#""ca_dir": {:?}"#,
            ca_dir.path().to_str().unwrap()
        )))
        .start();
    let s = srv.json_store("tls");
    // Without the CA the certificate is refused.
    let bad = create(
        &srv,
        &s,
        json!({ "broker_url": m.ssl_url(), "topics": ["t"] }),
    );
    let bad = bad["id"].as_str().unwrap().to_string();
    wait_status(&srv, &s, &bad, "certificate refused", |v| {
        v["status"] == "error" && v["last_error"].as_str().unwrap().contains("dial failed")
    });
    let id = subscribe(
        &srv,
        &s,
        json!({ "broker_url": m.ssl_url(), "topics": ["t"], "ca_file": "broker-ca.pem" }),
    );
    m.publish("t", br#"{"n":1}"#, 1);
    wait_status(&srv, &s, &id, "stored over TLS", |v| {
        v["messages_stored"] == 1
    });
    assert_eq!(datas(&srv, &s), [json!({ "n": 1 })]);
}

/// How the broker goes away while tsstore drains a backlog.
enum Outage {
    /// Stopped: it saves its queues and sessions.
    Stop,
    /// Killed (`kill -9`): it comes back with its queue as of its last
    /// save (every second), which holds every message tsstore had not
    /// acknowledged by then.
    Kill,
}

/// A backlog of `N` messages queued for a persistent session, the broker
/// gone while tsstore drains it, back, and 100 more published: since
/// tsstore acknowledges only what it stored, every message is in the
/// store, first seen in order (one stored after the broker's last save
/// comes again: at least once).
fn drain_across_a_broker_outage(name: &str, outage: Outage) {
    const N: i64 = 30_000;
    let mut m = Mosquitto::start();
    let srv = server();
    // Syncing every write, so that draining the backlog takes a while.
    let s = srv.create_store(name, json!({ "num_blocks": 4096, "durability": "always" }));
    let body = json!({ "broker_url": m.url(), "topics": ["t"], "client_id": format!("{name}-1") });
    // The session is registered at the broker, then its client goes away
    // (a delete disconnects cleanly) and the broker queues a backlog.
    let id = subscribe(&srv, &s, body.clone());
    let path = s.path(&format!("/mqtt/subscriptions/{id}"));
    assert_eq!(srv.delete(&path).key(&s.key).send().status, 200);
    publish_lines(&m, "t", (1..=N).map(|n| format!("{{\"n\":{n}}}")));
    if let Outage::Kill = outage {
        // The backlog reaches the broker's disk (it saves every second).
        std::thread::sleep(Duration::from_millis(2500));
    }
    let id = create(&srv, &s, body)["id"].as_str().unwrap().to_string();
    wait_status(&srv, &s, &id, "flowing", |v| {
        v["messages_stored"].as_i64() > Some(200)
    });
    match outage {
        Outage::Stop => m.stop(),
        Outage::Kill => m.kill(),
    }
    let at_outage = status(&srv, &s, &id)["messages_stored"].as_i64().unwrap();
    assert!(at_outage < N, "the outage came too late to test anything");
    wait_status(&srv, &s, &id, "noticed", |v| v["status"] != "connected");
    m.restart();
    wait_status(&srv, &s, &id, "back", |v| v["status"] == "connected");
    publish_lines(&m, "t", (N + 1..=N + 100).map(|n| format!("{{\"n\":{n}}}")));
    let all = || first_seen(&datas(&srv, &s));
    assert!(
        eventually(Duration::from_secs(90), || all().len() as i64 == N + 100),
        "{} of {}: {}",
        all().len(),
        N + 100,
        status(&srv, &s, &id)
    );
    assert_eq!(all(), (1..=N + 100).collect::<Vec<_>>());
    eprintln!("stored {at_outage} of {N} when the broker went");
}

#[test]
fn a_broker_restarted_mid_stream_loses_nothing_it_accepted() {
    drain_across_a_broker_outage("br", Outage::Stop);
}

/// The same with the broker killed: nothing it had saved is lost.
#[test]
fn a_broker_killed_mid_stream_loses_nothing_it_had_saved() {
    drain_across_a_broker_outage("bk", Outage::Kill);
}

#[test]
fn kill_9_while_messages_flow_loses_nothing_the_broker_accepted() {
    let m = Mosquitto::start();
    let mut srv = server();
    let s = srv.create_store("k9", json!({ "num_blocks": 4096 }));
    let id = subscribe(&srv, &s, json!({ "broker_url": m.url(), "topics": ["t"] }));
    publish_lines(&m, "t", (1..=10).map(|n| format!("{{\"n\":{n}}}")));
    wait_status(&srv, &s, &id, "first", |v| v["messages_stored"] == 10);
    // Down: the broker queues for the persistent session.
    signal(srv.pid(), "KILL");
    srv.wait_exit();
    const N: i64 = 40_000;
    publish_lines(&m, "t", (11..=N).map(|n| format!("{{\"n\":{n}}}")));
    let start = || {
        Server::builder()
            .data_dir(srv.data())
            .config(&loopback_allowed(""))
            .start()
    };
    // Restarted with the server; killed again while it catches up.
    let srv2 = start();
    assert!(eventually(WAIT, || status(&srv2, &s, &id)
        ["messages_stored"]
        .as_u64()
        .unwrap()
        > 2000));
    let at_kill = status(&srv2, &s, &id)["messages_stored"].as_i64().unwrap();
    signal(srv2.pid(), "KILL");
    let mut srv2 = srv2;
    srv2.wait_exit();
    assert!(
        at_kill < N - 10,
        "the kill came too late to test anything: {at_kill}"
    );
    let srv3 = Server::builder()
        .data_dir(srv2.data())
        .config(&loopback_allowed(""))
        .start();
    publish_lines(&m, "t", (N + 1..=N + 10).map(|n| format!("{{\"n\":{n}}}")));
    let all = || first_seen(&datas(&srv3, &s));
    assert!(
        eventually(Duration::from_secs(60), || all().len() as i64 == N + 10),
        "{} of {}: {}",
        all().len(),
        N + 10,
        status(&srv3, &s, &id)
    );
    assert_eq!(all(), (1..=N + 10).collect::<Vec<_>>());
}

#[test]
fn delete_or_store_delete_stops_the_subscription_within_a_second() {
    let m = Mosquitto::start();
    let srv = server();
    let s = srv.json_store("del");
    let id = subscribe(&srv, &s, json!({ "broker_url": m.url(), "topics": ["t"] }));
    let t0 = std::time::Instant::now();
    let r = srv
        .delete(&s.path(&format!("/mqtt/subscriptions/{id}")))
        .key(&s.key)
        .send();
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    m.publish("t", br#"{"n":1}"#, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(datas(&srv, &s), Vec::<Value>::new());

    // The broker sees the client go: a second subscription's client
    // disconnects when its store is deleted.
    let s2 = srv.json_store("del2");
    subscribe(
        &srv,
        &s2,
        json!({ "broker_url": m.url(), "topics": ["u"], "client_id": "watch-me" }),
    );
    let t0 = std::time::Instant::now();
    let r = srv.delete(&s2.path("")).admin().send();
    assert!(r.status < 300, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(3), || m
            .log()
            .contains("Client watch-me disconnected.")),
        "{}",
        m.log()
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// A broker of one session, written here to see when the PUBACK comes:
/// accepts one client, acknowledges its CONNECT and SUBSCRIBE, sends
/// `payload` on `topic` at QoS 1, and on the PUBACK calls `on_ack` at once.
fn one_message_broker(
    topic: &str,
    payload: Vec<u8>,
    on_ack: impl FnOnce() + Send + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::Read;
    fn packet(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        let kind = b[0];
        let (mut len, mut shift) = (0usize, 0);
        loop {
            s.read_exact(&mut b).unwrap();
            len |= ((b[0] & 0x7f) as usize) << shift;
            shift += 7;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).unwrap();
        (kind, body)
    }
    fn remaining(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return;
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let topic = topic.to_string();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        drop(listener);
        assert_eq!(packet(&mut s).0, 0x10, "CONNECT");
        s.write_all(&[0x20, 2, 0, 0]).unwrap();
        let (kind, body) = packet(&mut s);
        assert_eq!(kind, 0x82, "SUBSCRIBE");
        s.write_all(&[0x90, 3, body[0], body[1], 1]).unwrap();
        let mut p = vec![0x32];
        remaining(2 + topic.len() + 2 + payload.len(), &mut p);
        p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        p.extend_from_slice(topic.as_bytes());
        p.extend_from_slice(&7u16.to_be_bytes());
        p.extend_from_slice(&payload);
        s.write_all(&p).unwrap();
        loop {
            let (kind, body) = packet(&mut s);
            if kind == 0x40 {
                on_ack();
                assert_eq!(body, [0, 7], "PUBACK of the message");
                return;
            }
        }
    });
    (port, t)
}

#[test]
fn a_message_is_acknowledged_only_once_it_is_stored() {
    let data = tempfile::tempdir().unwrap();
    let start = || {
        Server::builder()
            .data_dir(data.path())
            .config(&loopback_allowed(""))
            .start()
    };
    let mut srv = start();
    let s = srv.create_store("ack", json!({ "num_blocks": 1024 }));
    // A large payload, slow to read for its timestamp: a PUBACK sent
    // before the insert would leave time for the kill below.
    let big: Vec<u32> = (0..150_000).collect();
    let payload = json!({ "ts": 1_700_000_000_000i64, "v": big }).to_string();
    let pid = srv.pid();
    let (port, broker) =
        one_message_broker("big", payload.into_bytes(), move || signal(pid, "KILL"));
    create(
        &srv,
        &s,
        json!({ "broker_url": format!("tcp://127.0.0.1:{port}"), "topics": ["big"],
                "timestamp_field": "ts", "timestamp_unit": "ms" }),
    );
    broker.join().unwrap();
    srv.wait_exit();
    // Killed the moment the broker had the PUBACK: the object is stored.
    let srv = start();
    let got = objects(&srv, &s, "");
    assert_eq!(got.len(), 1, "not stored before its PUBACK");
    assert_eq!(got[0].0, 1_700_000_000_000_000_000);
}

#[test]
fn a_store_has_at_most_32_subscriptions() {
    let srv = server();
    let s = srv.json_store("s");
    // A closed port: the subscriptions just retry.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let body = |i: usize| {
        json!({
            "broker_url": format!("tcp://127.0.0.1:{port}"),
            "topics": ["t"],
            "client_id": format!("c{i}"),
        })
    };
    for i in 0..32 {
        create(&srv, &s, body(i));
    }
    let r = srv
        .post(&s.path("/mqtt/subscriptions"))
        .key(&s.key)
        .json(&body(32))
        .send();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.error(),
        "too many mqtt subscriptions: at most 32 per store"
    );
    let list = srv.get(&s.path("/mqtt/subscriptions")).key(&s.key).send();
    assert_eq!(list.json()["subscriptions"].as_array().unwrap().len(), 32);
}
