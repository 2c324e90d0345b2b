//! One store's slow disk work stalls nothing else. The real binary runs
//! with the registry's test hook (`TSSTORE_TEST_HOLD_DIR`, debug builds
//! only), which holds one store's open (its recovery), create (its
//! preallocation), reset or delete for as long as a file exists: a slow
//! medium whose slowness the test ends. While the work is provably in
//! progress (the hook's `.held` file is there and the test has not let it
//! go), `/health`, `/metrics`, another store's inserts and reads over HTTP
//! and the Unix socket, and the systemd watchdog all answer, and the busy
//! store answers 503 with `Retry-After` naming it; once let go, the store
//! serves normally. Nothing here asserts a time: only what completes while
//! the held work has not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::common::{eventually, insert_n, now_ns, Req, Resp, Server, Store};
use super::notify::Manager;
use super::unix::Client;

/// The hook's environment variable (`src/registry/hold.rs`).
const HOLD_DIR: &str = "TSSTORE_TEST_HOLD_DIR";

/// The hold files of one test: `<op>-<store>` holds, `.held` says held.
struct Holds {
    dir: PathBuf,
}

impl Holds {
    fn new(parent: &Path) -> Holds {
        let dir = parent.join("holds");
        std::fs::create_dir_all(&dir).unwrap();
        Holds { dir }
    }

    /// From now on, `op` of `store` waits at its start until released.
    fn arm(&self, op: &str, store: &str) {
        std::fs::write(self.dir.join(format!("{op}-{store}")), b"").unwrap();
    }

    /// Waits until `op` of `store` has started and is being held.
    fn wait_held(&self, op: &str, store: &str) {
        let held = self.held(op, store);
        assert!(
            eventually(Duration::from_secs(20), || held.exists()),
            "{op} of {store} never reached the hook"
        );
    }

    fn held(&self, op: &str, store: &str) -> PathBuf {
        self.dir.join(format!("{op}-{store}.held"))
    }

    /// True while `op` of `store` is held: it has started and not ended.
    fn still_held(&self, op: &str, store: &str) -> bool {
        self.dir.join(format!("{op}-{store}")).exists() && self.held(op, store).exists()
    }

    fn release(&self, op: &str, store: &str) {
        std::fs::remove_file(self.dir.join(format!("{op}-{store}"))).unwrap();
    }
}

/// Asserts the answer of a busy store: 503, `Retry-After` in seconds, and
/// the error naming the store and what it is doing.
fn assert_busy(r: &Resp, store: &str, doing: &str) {
    assert_eq!(r.status, 503, "{}", r.text());
    let retry: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers))
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(
        r.error(),
        format!("store '{store}' is {doing}, retry later"),
        "{}",
        r.text()
    );
}

/// A WebSocket upgrade request (read stream) with the store's key.
fn ws_upgrade(srv: &Server, s: &Store) -> Resp {
    srv.get(&format!("{}?api_key={}", s.path("/ws/read"), s.key))
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "13")
        .send_head()
}

/// Sends a request on a thread of its own: it may be held.
fn send_later(req: Req) -> std::thread::JoinHandle<Resp> {
    std::thread::spawn(move || req.send())
}

fn insert(srv: &Server, s: &Store, data: Value) -> Resp {
    srv.post(&s.path("/data"))
        .key(&s.key)
        .json(&json!({ "data": data }))
        .send()
}

fn stats(srv: &Server, s: &Store) -> Resp {
    srv.get(&s.path("/stats")).key(&s.key).send()
}

/// The newest object's data.
fn newest(srv: &Server, s: &Store) -> Value {
    let r = srv.get(&s.path("/data/newest?limit=1")).key(&s.key).send();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["objects"][0]["data"].clone()
}

/// `/health`, `/metrics` and store `other` over HTTP and the Unix socket
/// answer; `n` tells this round's objects apart.
fn others_answer(srv: &Server, other: &Store, n: i64) {
    let r = srv.get("/health").send();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(srv.get("/metrics").send().status, 200);
    let r = insert(srv, other, json!({ "round": n }));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(newest(srv, other), json!({ "round": n }));
    let mut c = Client::auth(srv.socket(), other);
    c.store(&json!({ "socket": n }).to_string());
    assert_eq!(newest(srv, other), json!({ "socket": n }));
    assert_eq!(c.ask("QUIT"), "OK bye");
}

/// The value of an unlabelled or labelled sample in `/metrics`.
fn metric(srv: &Server, sample: &str) -> String {
    let text = srv.get("/metrics").send().text();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
        .to_string()
}

/// How many times the server logged that it opened `store`.
fn opens_logged(srv: &Server, store: &str) -> usize {
    let tag = format!("store={store} ");
    srv.log()
        .lines()
        .filter(|l| l.contains("store opened") && l.contains(&tag))
        .count()
}

/// A stopped server's data dir with stores `slow` (3 objects) and `fast`
/// (2 objects), and hold files that hold the next open of `slow`.
struct Stopped {
    dir: tempfile::TempDir,
    data: PathBuf,
    slow: Store,
    fast: Store,
    holds: Holds,
}

fn slow_to_open() -> Stopped {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Server::builder().data_dir(&data).start();
    let slow = srv.json_store("slow");
    let fast = srv.json_store("fast");
    insert_n(&srv, &slow, 1, 3);
    insert_n(&srv, &fast, 1, 2);
    drop(srv);
    let holds = Holds::new(dir.path());
    holds.arm("open", "slow");
    Stopped {
        dir,
        data,
        slow,
        fast,
        holds,
    }
}

#[test]
fn a_recovering_store_blocks_nothing_else() {
    let Stopped {
        dir,
        data,
        slow,
        fast,
        holds,
    } = slow_to_open();
    let systemd = Manager::new();
    let srv = Server::builder()
        .data_dir(&data)
        .socket(&dir.path().join("tsstore.sock"))
        .env(HOLD_DIR, holds.dir.to_str().unwrap())
        .env("NOTIFY_SOCKET", systemd.path.to_str().unwrap())
        .env("WATCHDOG_USEC", "200000")
        .start();
    // Start-up began opening `slow` by itself; it cannot end until let go.
    holds.wait_held("open", "slow");
    // Ready, and the watchdog pings, while `slow` recovers.
    systemd.wait_for("READY=1");
    systemd.wait_for("WATCHDOG=1");
    others_answer(&srv, &fast, 1);
    assert_eq!(metric(&srv, "tsstore_busy_stores{operation=\"open\"}"), "1");
    // The recovering store: 503 + Retry-After on every path, store key
    // and admin key alike, and for many clients at once.
    assert_busy(&stats(&srv, &slow), "slow", "recovering");
    let r = srv.get(&slow.path("/data/newest")).admin().send();
    assert_busy(&r, "slow", "recovering");
    assert_busy(&ws_upgrade(&srv, &slow), "slow", "recovering");
    let mut c = Client::connect(srv.socket());
    let auth = format!("AUTH slow {}", slow.key);
    assert_eq!(
        c.ask(&auth),
        "ERROR store 'slow' is recovering, retry later"
    );
    assert_eq!(c.try_recv(), None, "closed after the error");
    let many: Vec<_> = (0..4)
        .map(|_| send_later(srv.get(&slow.path("/stats")).key(&slow.key)))
        .collect();
    for t in many {
        assert_busy(&t.join().unwrap(), "slow", "recovering");
    }
    // Every answer above came while the open had not ended.
    others_answer(&srv, &fast, 2);
    systemd.wait_for("WATCHDOG=1");
    assert!(holds.still_held("open", "slow"));

    holds.release("open", "slow");
    assert!(
        eventually(Duration::from_secs(30), || stats(&srv, &slow).status == 200),
        "slow never opened"
    );
    assert_eq!(stats(&srv, &slow).json()["object_count"], 3);
    let r = insert(&srv, &slow, json!("after"));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(newest(&srv, &slow), json!("after"));
    let mut c = Client::auth(srv.socket(), &slow);
    c.store(r#"{"data":"socket"}"#);
    assert_eq!(ws_upgrade(&srv, &slow).status, 101);
    assert_eq!(metric(&srv, "tsstore_busy_stores{operation=\"open\"}"), "0");
    // All those requests waited on one open, not one each.
    assert_eq!(opens_logged(&srv, "slow"), 1, "{}", srv.log());
}

#[test]
fn creating_resetting_and_deleting_a_store_blocks_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let holds = Holds::new(dir.path());
    let srv = Server::builder()
        .socket(&dir.path().join("tsstore.sock"))
        .env(HOLD_DIR, holds.dir.to_str().unwrap())
        .start();
    let other = srv.json_store("other");
    let admin_big = |srv: &Server| srv.get("/api/stores/big/stats").admin().send();
    let create_big = |srv: &Server| {
        srv.post("/api/stores")
            .admin()
            .json(&json!({ "name": "big", "num_blocks": 16384 }))
    };

    // Create (the preallocation of a 64 MiB store), held.
    holds.arm("create", "big");
    let creating = send_later(create_big(&srv));
    holds.wait_held("create", "big");
    others_answer(&srv, &other, 1);
    assert_busy(&admin_big(&srv), "big", "being created");
    // The same name again: it exists already.
    let r = create_big(&srv).send();
    assert_eq!(
        (r.status, r.error().as_str()),
        (409, "store already exists")
    );
    let r = srv.delete("/api/stores/big").admin().send();
    assert_busy(&r, "big", "being created");
    assert!(holds.still_held("create", "big"));
    holds.release("create", "big");
    let r = creating.join().unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let big = Store {
        name: "big".into(),
        key: r.json()["api_key"].as_str().unwrap().into(),
    };
    let st = stats(&srv, &big);
    assert_eq!(st.status, 200, "{}", st.text());
    assert_eq!(st.json()["num_blocks"], 16384);

    // Reset, held.
    insert_n(&srv, &big, now_ns() - 10_000, 2);
    holds.arm("reset", "big");
    let resetting = send_later(srv.post(&big.path("/reset")).key(&big.key));
    holds.wait_held("reset", "big");
    others_answer(&srv, &other, 2);
    assert_busy(&stats(&srv, &big), "big", "being reset");
    assert!(holds.still_held("reset", "big"));
    holds.release("reset", "big");
    let r = resetting.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(stats(&srv, &big).json()["object_count"], 0);

    // Delete, held.
    holds.arm("delete", "big");
    let deleting = send_later(srv.delete(&big.path("")).key(&big.key));
    holds.wait_held("delete", "big");
    others_answer(&srv, &other, 3);
    assert_busy(&stats(&srv, &big), "big", "being deleted");
    assert_busy(&create_big(&srv).send(), "big", "being deleted");
    let r = srv.delete(&big.path("")).key(&big.key).send();
    assert_busy(&r, "big", "being deleted");
    assert!(holds.still_held("delete", "big"));
    holds.release("delete", "big");
    let r = deleting.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(admin_big(&srv).status, 404);
    // The name is free again, with a new key; the old one opens nothing.
    let r = create_big(&srv).send();
    assert_eq!(r.status, 201, "{}", r.text());
    let again = r.json()["api_key"].as_str().unwrap().to_string();
    let r = stats(&srv, &big);
    assert_eq!((r.status, r.error().as_str()), (401, "invalid API key"));
    assert_eq!(
        srv.get("/api/stores/big/stats").key(&again).send().status,
        200
    );
    others_answer(&srv, &other, 4);
}

#[test]
fn shutdown_abandons_a_recovery_and_the_next_start_recovers() {
    let Stopped {
        dir: _dir,
        data,
        slow,
        fast,
        holds,
    } = slow_to_open();
    let mut srv = Server::builder()
        .data_dir(&data)
        .env(HOLD_DIR, holds.dir.to_str().unwrap())
        .start();
    holds.wait_held("open", "slow");
    assert_eq!(insert(&srv, &fast, json!("last")).status, 201);
    // SIGTERM while `slow` recovers: the server does not wait for it.
    let status = srv.stop();
    assert!(status.success(), "exit {status:?}:\n{}", srv.log());
    assert!(holds.still_held("open", "slow"));
    let log = srv.log();
    assert!(
        log.contains("still running at shutdown: abandoned") && log.contains("store=slow"),
        "{log}"
    );
    holds.release("open", "slow");
    let srv = Server::builder().data_dir(&data).start();
    assert!(
        eventually(Duration::from_secs(30), || stats(&srv, &slow).status == 200),
        "slow never opened"
    );
    assert_eq!(stats(&srv, &slow).json()["object_count"], 3);
    assert_eq!(newest(&srv, &fast), json!("last"));
}
