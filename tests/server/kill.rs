//! The real `tsstore serve` killed with SIGKILL while writers run on every
//! write path, restarted on the same data, and checked from outside: every
//! acknowledged write is kept, byte-exact, under every durability policy.
//!
//! Each test runs one server (HTTP on 127.0.0.1, the Unix socket) and one
//! store of one policy. A session starts writers on every path at once:
//! HTTP single inserts, NDJSON batches, pipelined Unix-socket lines,
//! `/ws/write`, and an outbound `pull` connection to a WebSocket server the
//! test runs; a deleter soft-deletes acknowledged objects, and some sessions
//! reset the store. At a seeded random moment the server gets SIGKILL; it is
//! restarted (sometimes killed again at once, while it opens the store) and
//! the whole store is read back through the REST API.
//!
//! What counts as acknowledged is what the client fully received before the
//! kill, per path:
//! * HTTP single insert: a `201` response read to the end of its body;
//! * NDJSON batch: a `200` response read to the end, each line with a
//!   `timestamp` in its `results` entry;
//! * Unix socket: an `OK <ts>` line read up to its newline;
//! * `/ws/write` and pull: a whole `ack` text frame (answers come in order);
//! * soft delete: a `200`; reset: a `200`.
//!
//! A write is recorded before its request leaves and its acknowledgement
//! after it is read, each with a tick of one counter shared by every thread:
//! a total order of what the test saw. After a restart the checks are:
//! * every acknowledged object is there with the bytes sent and the
//!   timestamp acknowledged, unless an acknowledged delete or reset covers
//!   it (a reset covers what was acknowledged before the reset was sent, and
//!   not what was sent after its answer came; between, either);
//! * acknowledged deletes and resets hold, and an in-flight reset is all or
//!   nothing;
//! * every object there was sent by the test, once, with those bytes
//!   (writes in flight at the kill may be there or not);
//! * what one restart showed stays so at the next one (an object seen is not
//!   lost later, one found missing does not come back);
//! * timestamps strictly increase, `/stats` counts what a full read returns,
//!   and a sample read by timestamp agrees;
//! * the restarted server takes writes on every path (the next session, and
//!   a last session that stops its writers instead of killing the server).
//!
//! Every problem is collected and the test fails at its end with a summary
//! per path. The seed is printed; `TSSTORE_KILL_SEED=<seed>` replays the
//! same kill delays, bursts, payloads and resets (the interleaving with the
//! server's threads is the machine's). `TSSTORE_KILL_ROUNDS` sets the number
//! of kills.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};
use tsstore::store::sim::Rng;

use super::common::{self, eventually, Server, Store};

const SEED_ENV: &str = "TSSTORE_KILL_SEED";
const ROUNDS_ENV: &str = "TSSTORE_KILL_ROUNDS";
/// Kills per test (start-up kills come on top).
const ROUNDS: u32 = 8;
/// Fewer kills than `ROUNDS` once a test has run this long...
const BUDGET: Duration = Duration::from_secs(20);
/// ...but never fewer than this.
const MIN_ROUNDS: u32 = 3;
/// Large enough that the ring never wraps in a test (checked by `/stats`):
/// then every acknowledged object must still be there.
const NUM_BLOCKS: u64 = 8192;
/// Socket reads give up after this (a hung server fails the test).
const IO_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn kill_9_under_always() {
    run("always");
}

#[test]
fn kill_9_under_interval_default() {
    run("interval");
}

#[test]
fn kill_9_under_interval_50ms() {
    run("interval:50");
}

#[test]
fn kill_9_under_never() {
    run("never");
}

// ------------------------------------------------------------ the ledger

/// A write path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    Http,
    Ndjson,
    Unix,
    Ws,
    Pull,
}

const PATHS: [Via; 5] = [Via::Http, Via::Ndjson, Via::Unix, Via::Ws, Via::Pull];

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Ndjson => "ndjson",
            Via::Unix => "unix",
            Via::Ws => "ws",
            Via::Pull => "pull",
        }
    }
}

/// An acknowledgement as the client read it.
#[derive(Clone, Copy)]
struct Ack {
    tick: u64,
    ts: i64,
    at: Instant,
}

/// What the last restart showed of an object.
#[derive(Clone, Copy, PartialEq)]
enum Seen {
    /// Sent since the last restart.
    New,
    /// There, at `ts`; `tick` is a tick by which it was stored.
    Present {
        ts: i64,
        tick: u64,
    },
    Absent,
}

/// One object the test sent.
struct Obj {
    id: String,
    via: Via,
    payload: String,
    /// Tick taken before its request left.
    sent: u64,
    ack: Option<Ack>,
    seen: Seen,
}

impl Obj {
    /// A tick by which it was stored, if it certainly was.
    fn stored_by(&self) -> Option<u64> {
        match self.seen {
            Seen::Present { tick, .. } => Some(tick),
            Seen::New => self.ack.map(|a| a.tick),
            Seen::Absent => None,
        }
    }

    fn known_ts(&self) -> Option<i64> {
        match self.seen {
            Seen::Present { ts, .. } => Some(ts),
            _ => self.ack.map(|a| a.ts),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Answer {
    InFlight,
    Deleted(u64),
    NotFound(u64),
}

/// A soft delete of this session.
struct Delete {
    target: usize,
    answer: Answer,
}

/// The reset of this session (at most one).
struct Reset {
    sent: u64,
    done: Option<u64>,
}

/// Objects lost on one path.
#[derive(Default)]
struct Lost {
    count: u64,
    /// The longest time from an acknowledgement to the kill that lost it.
    oldest: Duration,
    /// Of those, acknowledged in an earlier session.
    earlier: u64,
}

#[derive(Default)]
struct Ledger {
    objs: Vec<Obj>,
    ids: HashMap<String, usize>,
    /// Objects a delete may target: acknowledged or seen, not yet targeted.
    deletable: Vec<usize>,
    deletes: Vec<Delete>,
    reset: Option<Reset>,
    /// When the current session's server got its SIGKILL.
    killed: Option<Instant>,
    session_acks: BTreeMap<Via, u64>,
    acks: BTreeMap<Via, u64>,
    sent: u64,
    /// The most blocks the ring held at a restart.
    blocks: u64,
    deletes_done: u64,
    resets_done: u64,
    lost: BTreeMap<Via, Lost>,
    /// Checks that found acknowledged objects lost.
    losing: u32,
    problems: Vec<String>,
}

impl Ledger {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }
}

/// State shared by the test's threads.
struct Shared {
    seed: u64,
    clock: AtomicU64,
    /// Writers may send.
    running: AtomicBool,
    /// Writers finish what they sent and stop (the last session).
    stop: AtomicBool,
    /// The server instance; a pull connection of an older one is dead.
    gen: AtomicU64,
    /// The tick taken just before the current instance's SIGKILL.
    killed_at: AtomicU64,
    /// Set once the SIGKILL is delivered: nothing new is sent.
    dead: AtomicBool,
    session: AtomicU64,
    /// Pull bursts in progress.
    feeding: AtomicUsize,
    /// Set when the test ends: the remote's threads exit.
    done: AtomicBool,
    ledger: Mutex<Ledger>,
}

impl Shared {
    fn new(seed: u64) -> Shared {
        Shared {
            seed,
            clock: AtomicU64::new(0),
            running: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            gen: AtomicU64::new(0),
            killed_at: AtomicU64::new(u64::MAX),
            dead: AtomicBool::new(false),
            session: AtomicU64::new(0),
            feeding: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, SeqCst) + 1
    }

    fn led(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while writers should send.
    fn go(&self) -> bool {
        self.running.load(SeqCst) && !self.stop.load(SeqCst) && !self.dead.load(SeqCst)
    }

    /// Records a new object about to be sent: its index and payload.
    fn begin(&self, via: Via, worker: u64, n: &mut u64, rng: &mut Rng) -> (usize, String) {
        let session = self.session.load(SeqCst);
        let id = format!("{}-{session}-{worker}-{n}", via.name());
        *n += 1;
        let payload = payload(&id, rng);
        let mut l = self.led();
        let i = l.objs.len();
        l.ids.insert(id.clone(), i);
        l.objs.push(Obj {
            id,
            via,
            payload: payload.clone(),
            sent: self.tick(),
            ack: None,
            seen: Seen::New,
        });
        l.sent += 1;
        (i, payload)
    }

    /// [`Shared::begin`] for a burst of 1 to `max` objects.
    fn begin_burst(
        &self,
        via: Via,
        worker: u64,
        n: &mut u64,
        rng: &mut Rng,
        max: u64,
    ) -> Vec<(usize, String)> {
        let k = 1 + rng.below(max);
        (0..k).map(|_| self.begin(via, worker, n, rng)).collect()
    }

    fn ack(&self, i: usize, ts: i64) {
        let a = Ack {
            tick: self.tick(),
            ts,
            at: Instant::now(),
        };
        let mut l = self.led();
        let via = l.objs[i].via;
        l.objs[i].ack = Some(a);
        l.deletable.push(i);
        *l.session_acks.entry(via).or_default() += 1;
        *l.acks.entry(via).or_default() += 1;
    }

    /// An answer that is neither an acknowledgement nor expected.
    fn refused(&self, i: usize, answer: &str) {
        let mut l = self.led();
        let p = format!(
            "{} {}: refused: {answer}",
            l.objs[i].via.name(),
            l.objs[i].id
        );
        l.problem(p);
    }

    /// A connection failed: expected once the server is killed, a problem
    /// before.
    fn broken(&self, what: &str, e: impl std::fmt::Display) {
        if self.tick() < self.killed_at.load(SeqCst) {
            self.led().problem(format!(
                "{what}: connection failed while the server ran: {e}"
            ));
        }
    }

    /// Picks an object to delete and records the delete: its index and the
    /// object's timestamp.
    fn begin_delete(&self, rng: &mut Rng) -> Option<(usize, i64)> {
        let mut l = self.led();
        if l.deletable.is_empty() {
            return None;
        }
        let k = rng.below(l.deletable.len() as u64) as usize;
        let target = l.deletable.swap_remove(k);
        let ts = l.objs[target].known_ts()?;
        l.deletes.push(Delete {
            target,
            answer: Answer::InFlight,
        });
        Some((l.deletes.len() - 1, ts))
    }

    fn end_delete(&self, d: usize, found: bool) {
        let t = self.tick();
        let mut l = self.led();
        l.deletes[d].answer = if found {
            l.deletes_done += 1;
            Answer::Deleted(t)
        } else {
            Answer::NotFound(t)
        };
    }
}

/// `{"id":"<id>","pad":"..."}`: compact JSON, so the stored bytes are the
/// bytes sent on every path; mostly small, one in 256 spanning blocks.
fn payload(id: &str, rng: &mut Rng) -> String {
    const CHARS: [&str; 8] = ["a", "b", "x", "y", "0", "7", "-", "é"];
    let len = if rng.chance(1, 256) {
        4000 + rng.below(6000)
    } else {
        rng.below(160)
    };
    let pad: String = (0..len).map(|_| CHARS[rng.below(8) as usize]).collect();
    format!(r#"{{"id":"{id}","pad":"{pad}"}}"#)
}

/// A short random pause between bursts: keeps the volume bounded.
fn pause(rng: &mut Rng) {
    std::thread::sleep(Duration::from_micros(1000 + rng.below(4000)));
}

// ------------------------------------------------------------ writers

fn http_writer(srv: &Server, st: &Store, sh: &Shared, mut rng: Rng, worker: u64) {
    let mut n = 0;
    while sh.go() {
        let (i, p) = sh.begin(Via::Http, worker, &mut n, &mut rng);
        let r = srv
            .post(&st.path("/data"))
            .key(&st.key)
            .body("application/json", format!(r#"{{"data":{p}}}"#))
            .try_send();
        match r {
            Ok(r) if r.status == 201 => match r.json()["timestamp"].as_i64() {
                Some(ts) => sh.ack(i, ts),
                None => sh.refused(i, &r.text()),
            },
            Ok(r) => sh.refused(i, &format!("{} {}", r.status, r.text())),
            Err(e) => return sh.broken("http insert", e),
        }
        pause(&mut rng);
    }
}

fn ndjson_writer(srv: &Server, st: &Store, sh: &Shared, mut rng: Rng) {
    let mut n = 0;
    while sh.go() {
        let burst = sh.begin_burst(Via::Ndjson, 0, &mut n, &mut rng, 16);
        let idx: Vec<usize> = burst.iter().map(|(i, _)| *i).collect();
        let body: String = burst
            .iter()
            .map(|(_, p)| format!("{{\"data\":{p}}}\n"))
            .collect();
        let r = srv
            .post(&st.path("/data"))
            .key(&st.key)
            .body("application/x-ndjson", body)
            .try_send();
        let r = match r {
            Ok(r) => r,
            Err(e) => return sh.broken("ndjson batch", e),
        };
        if r.status != 200 {
            sh.refused(idx[0], &format!("batch: {} {}", r.status, r.text()));
            continue;
        }
        let v = r.json();
        for res in v["results"].as_array().into_iter().flatten() {
            let line = res["line"].as_u64().unwrap_or(0) as usize;
            let Some(&i) = idx.get(line.wrapping_sub(1)) else {
                sh.refused(idx[0], &format!("batch result for no line: {res}"));
                continue;
            };
            match res["timestamp"].as_i64() {
                Some(ts) => sh.ack(i, ts),
                None => sh.refused(i, &res.to_string()),
            }
        }
        pause(&mut rng);
    }
}

fn unix_writer(sock: &Path, st: &Store, sh: &Shared, mut rng: Rng, worker: u64) {
    let what = "unix socket";
    let s = match UnixStream::connect(sock) {
        Ok(s) => s,
        Err(e) => return sh.broken(what, e),
    };
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // An answer read up to its newline; `None` if the stream broke first.
    let mut answer = |r: &mut BufReader<UnixStream>| -> Result<String, String> {
        line.clear();
        match r.read_line(&mut line) {
            Ok(_) if line.ends_with('\n') => Ok(line.trim_end().to_string()),
            Ok(_) => Err(format!("stream ended after {line:?}")),
            Err(e) => Err(e.to_string()),
        }
    };
    if let Err(e) = w.write_all(format!("AUTH {} {}\n", st.name, st.key).as_bytes()) {
        return sh.broken(what, e);
    }
    match answer(&mut r) {
        Ok(a) if a == "OK" => {}
        Ok(a) => return sh.led().problem(format!("unix AUTH answered {a:?}")),
        Err(e) => return sh.broken(what, e),
    }
    let mut n = 0;
    while sh.go() {
        // Pipelined: a burst of lines in one write, then their answers.
        let burst = sh.begin_burst(Via::Unix, worker, &mut n, &mut rng, 32);
        let bytes: String = burst.iter().map(|(_, p)| format!("{p}\n")).collect();
        if let Err(e) = w.write_all(bytes.as_bytes()) {
            return sh.broken(what, e);
        }
        for &(i, _) in &burst {
            match answer(&mut r) {
                Ok(a) => match a.strip_prefix("OK ").and_then(|t| t.parse().ok()) {
                    Some(ts) => sh.ack(i, ts),
                    None => sh.refused(i, &a),
                },
                Err(e) => return sh.broken(what, e),
            }
        }
        pause(&mut rng);
    }
}

/// Sends a burst of `{"data": payload}` text frames and reads one answer
/// per frame, in order: an `ack` acknowledges.
fn ws_burst<S: Read + Write>(
    ws: &mut WebSocket<S>,
    sh: &Shared,
    via: Via,
    worker: u64,
    n: &mut u64,
    rng: &mut Rng,
) -> Result<(), tungstenite::Error> {
    let burst = sh.begin_burst(via, worker, n, rng, 16);
    for (_, p) in &burst {
        ws.write(Message::Text(format!(r#"{{"data":{p}}}"#).into()))?;
    }
    ws.flush()?;
    let mut idx = burst.into_iter().map(|(i, _)| i);
    let mut next = idx.next();
    while let Some(i) = next {
        match ws.read()? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                match (v["type"].as_str(), v["timestamp"].as_i64()) {
                    (Some("ack"), Some(ts)) => sh.ack(i, ts),
                    _ => sh.refused(i, &t),
                }
                next = idx.next();
            }
            Message::Close(_) => return Err(tungstenite::Error::ConnectionClosed),
            _ => {}
        }
    }
    Ok(())
}

fn ws_writer(srv: &Server, st: &Store, sh: &Shared, mut rng: Rng) {
    let what = "/ws/write";
    let tcp = match TcpStream::connect(srv.addr) {
        Ok(t) => t,
        Err(e) => return sh.broken(what, e),
    };
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let url = format!(
        "ws://{}{}?api_key={}",
        srv.addr,
        st.path("/ws/write"),
        st.key
    );
    let mut ws = match tungstenite::client(url.as_str(), tcp) {
        Ok((ws, _)) => ws,
        Err(e) => return sh.broken(what, e),
    };
    let mut n = 0;
    while sh.go() {
        if let Err(e) = ws_burst(&mut ws, sh, Via::Ws, 0, &mut n, &mut rng) {
            return sh.broken(what, e);
        }
        pause(&mut rng);
    }
    let _ = ws.close(None);
}

fn deleter(srv: &Server, st: &Store, sh: &Shared, mut rng: Rng) {
    while sh.go() {
        std::thread::sleep(Duration::from_millis(5 + rng.below(30)));
        let Some((d, ts)) = sh.begin_delete(&mut rng) else {
            continue;
        };
        let r = srv
            .delete(&st.path(&format!("/data/time/{ts}")))
            .key(&st.key)
            .try_send();
        match r {
            Ok(r) if r.status == 200 => sh.end_delete(d, true),
            Ok(r) if r.status == 404 => sh.end_delete(d, false),
            Ok(r) => {
                sh.led()
                    .problem(format!("delete {ts} answered {} {}", r.status, r.text()));
            }
            Err(e) => return sh.broken("delete", e),
        }
    }
}

fn resetter(srv: &Server, st: &Store, sh: &Shared, after: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < after {
        if !sh.go() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if !sh.go() {
        return;
    }
    sh.led().reset = Some(Reset {
        sent: sh.tick(),
        done: None,
    });
    match srv.post(&st.path("/reset")).key(&st.key).try_send() {
        Ok(r) if r.status == 200 => {
            let t = sh.tick();
            let mut l = sh.led();
            l.reset.as_mut().unwrap().done = Some(t);
            l.resets_done += 1;
        }
        Ok(r) => sh
            .led()
            .problem(format!("reset answered {} {}", r.status, r.text())),
        Err(e) => sh.broken("reset", e),
    }
}

// ------------------------------------------------------------ the remote

/// The feeder threads, by the server instance whose connection they serve.
type Feeders = Arc<Mutex<Vec<(u64, JoinHandle<()>)>>>;

/// The WebSocket server a `pull` connection dials: on each connection it
/// feeds bursts of messages while writers run, and records the `ack`s.
struct Remote {
    port: u16,
    sh: Arc<Shared>,
    feeders: Feeders,
    acceptor: Option<JoinHandle<()>>,
}

impl Remote {
    fn start(sh: Arc<Shared>) -> Remote {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let feeders: Feeders = Arc::default();
        let (sh2, f2) = (sh.clone(), feeders.clone());
        let acceptor = std::thread::spawn(move || {
            let mut conns = 0u64;
            while !sh2.done.load(SeqCst) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        conns += 1;
                        let gen = sh2.gen.load(SeqCst);
                        let sh3 = sh2.clone();
                        let rng = Rng::new(sh2.seed ^ conns.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                        let h = std::thread::spawn(move || feed(tcp, &sh3, gen, conns, rng));
                        f2.lock().unwrap().push((gen, h));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Remote {
            port,
            sh,
            feeders,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/feed", self.port)
    }

    /// Waits for the feeders of server instances before `gen` to finish:
    /// their connections died with the server, and they record nothing
    /// after this.
    fn join_before(&self, gen: u64) {
        let old: Vec<_> = {
            let mut f = self.feeders.lock().unwrap();
            let (old, keep) = f.drain(..).partition(|(g, _)| *g < gen);
            *f = keep;
            old
        };
        for (_, h) in old {
            h.join().expect("pull feeder panicked");
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.sh.done.store(true, SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.join_before(u64::MAX);
    }
}

/// Counts a pull burst in progress for as long as it lives.
struct Feeding<'a>(&'a AtomicUsize);

impl Drop for Feeding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

fn feed(tcp: TcpStream, sh: &Shared, gen: u64, worker: u64, mut rng: Rng) {
    let what = "pull connection";
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let Ok(mut ws) = tungstenite::accept(tcp) else {
        // A server killed while it dialled.
        return;
    };
    let mut n = 0;
    loop {
        if sh.done.load(SeqCst) || sh.gen.load(SeqCst) != gen {
            return;
        }
        // Counted before the check, so a graceful stop that sees no burst
        // in progress also sees that none will start.
        sh.feeding.fetch_add(1, SeqCst);
        let busy = Feeding(&sh.feeding);
        if !sh.go() {
            drop(busy);
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if let Err(e) = ws_burst(&mut ws, sh, Via::Pull, worker, &mut n, &mut rng) {
            return sh.broken(what, e);
        }
        drop(busy);
        pause(&mut rng);
    }
}

// ------------------------------------------------------------ sessions

enum End {
    /// SIGKILL after this long.
    Kill(Duration),
    /// Stop the writers once every path has an acknowledgement.
    Stop,
}

/// Runs every writer until the kill or the stop.
fn session(srv: &Server, st: &Store, sh: &Shared, sock: &Path, rng: &mut Rng, end: End) {
    sh.session.fetch_add(1, SeqCst);
    sh.killed_at.store(u64::MAX, SeqCst);
    sh.dead.store(false, SeqCst);
    {
        let mut l = sh.led();
        l.session_acks.clear();
        l.killed = None;
    }
    let reset_after = match end {
        End::Kill(d) if rng.chance(1, 3) => Some(Duration::from_micros(
            rng.below(d.as_micros() as u64 + 200_000),
        )),
        _ => None,
    };
    let seeds: Vec<u64> = (0..6).map(|_| rng.next_u64()).collect();
    sh.running.store(true, SeqCst);
    std::thread::scope(|s| {
        let r = |i: usize| Rng::new(seeds[i]);
        s.spawn(move || http_writer(srv, st, sh, r(0), 0));
        s.spawn(move || http_writer(srv, st, sh, r(1), 1));
        s.spawn(move || ndjson_writer(srv, st, sh, r(2)));
        s.spawn(move || unix_writer(sock, st, sh, r(3), 0));
        s.spawn(move || ws_writer(srv, st, sh, r(4)));
        s.spawn(move || deleter(srv, st, sh, r(5)));
        if let Some(after) = reset_after {
            s.spawn(move || resetter(srv, st, sh, after));
        }
        match end {
            End::Kill(d) => {
                std::thread::sleep(d);
                sh.killed_at.store(sh.tick(), SeqCst);
                common::signal(srv.pid(), "KILL");
                // Delivered by now: acknowledgements are dated against this.
                sh.led().killed = Some(Instant::now());
                sh.dead.store(true, SeqCst);
            }
            End::Stop => {
                let all = eventually(Duration::from_secs(20), || {
                    let l = sh.led();
                    PATHS
                        .iter()
                        .all(|p| l.session_acks.get(p).is_some_and(|&n| n > 0))
                });
                if !all {
                    let acks = format!("{:?}", sh.led().session_acks);
                    sh.led().problem(format!(
                        "the restarted server did not acknowledge a write on every path \
                         within 20 s: {acks}"
                    ));
                }
                sh.stop.store(true, SeqCst);
            }
        }
    });
    if matches!(end, End::Stop) {
        assert!(
            eventually(IO_TIMEOUT, || sh.feeding.load(SeqCst) == 0),
            "the pull feeder did not finish its burst"
        );
    }
    sh.running.store(false, SeqCst);
    sh.stop.store(false, SeqCst);
}

// ------------------------------------------------------------ checks

#[derive(Deserialize)]
struct Listed {
    objects: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    timestamp: i64,
    data: Box<RawValue>,
}

/// Sends a request again while the server answers 503 (a store still
/// opening), for up to 30 s.
fn patient(mut send: impl FnMut() -> common::Resp) -> common::Resp {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = send();
        if r.status != 503 || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The id inside a stored payload.
fn id_of(raw: &str) -> Option<String> {
    let v: Value = serde_json::from_str(raw).ok()?;
    v["id"].as_str().map(str::to_string)
}

/// Reads the whole store back and checks it against the ledger (the
/// module's doc lists the checks); then records what it saw. Returns the
/// number of objects there.
fn verify(srv: &Server, st: &Store, sh: &Shared, rng: &mut Rng, after: &str) -> usize {
    let r = patient(|| {
        srv.get(&st.path("/data/oldest?limit=1000000"))
            .key(&st.key)
            .send()
    });
    assert_eq!(r.status, 200, "{after}: full read: {}", r.text());
    let listed: Listed = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{after}: full read is not a list ({e})"));
    let stats = patient(|| srv.get(&st.path("/stats")).key(&st.key).send());
    assert_eq!(stats.status, 200, "{after}: stats: {}", stats.text());
    let stats = stats.json();
    // A test whose ring wrapped could not require old objects: its sizing
    // is wrong, which is not a finding about durability.
    let blocks = stats["active_blocks"].as_u64().unwrap_or(u64::MAX);
    assert!(
        blocks + 8 < NUM_BLOCKS,
        "{after}: the ring is nearly full, the test writes too much: {stats}"
    );
    let now = sh.tick();
    let mut l = sh.led();
    l.blocks = l.blocks.max(blocks);
    let mut problems = Vec::new();

    // What is there: each object sent once, with its bytes, in order.
    let mut found: HashMap<usize, i64> = HashMap::new();
    for w in listed.objects.windows(2) {
        if w[0].timestamp >= w[1].timestamp {
            problems.push(format!(
                "timestamps do not increase: {} then {}",
                w[0].timestamp, w[1].timestamp
            ));
        }
    }
    for it in &listed.objects {
        let raw = it.data.get();
        let Some(&i) = id_of(raw).and_then(|id| l.ids.get(&id)) else {
            problems.push(format!(
                "object at {} was never sent: {:.80}",
                it.timestamp, raw
            ));
            continue;
        };
        let o = &l.objs[i];
        if found.insert(i, it.timestamp).is_some() {
            problems.push(format!("{} {} is there twice", o.via.name(), o.id));
        }
        if raw != o.payload {
            problems.push(format!(
                "{} {} reads back other bytes: {:.80}",
                o.via.name(),
                o.id,
                raw
            ));
        }
        if let Some(ts) = o.known_ts().filter(|&ts| ts != it.timestamp) {
            problems.push(format!(
                "{} {} is at {} instead of {ts}",
                o.via.name(),
                o.id,
                it.timestamp
            ));
        }
    }
    let count = stats["object_count"].as_u64();
    if count != Some(listed.objects.len() as u64) {
        problems.push(format!(
            "stats count {count:?} objects, a full read returns {}",
            listed.objects.len()
        ));
    }

    // What must be there (Some(true)), must not (Some(false)), or may.
    let mut must: Vec<Option<bool>> = l
        .objs
        .iter()
        .map(|o| match o.seen {
            Seen::Present { .. } => Some(true),
            Seen::Absent => Some(false),
            Seen::New => o.ack.map(|_| true),
        })
        .collect();
    let mut why: HashMap<usize, &str> = HashMap::new();
    let reset_sent_before = |t: u64| l.reset.as_ref().is_some_and(|r| r.sent < t);
    for d in &l.deletes {
        match d.answer {
            Answer::Deleted(_) => {
                must[d.target] = Some(false);
                why.insert(d.target, "deleted");
            }
            Answer::InFlight if must[d.target] == Some(true) => must[d.target] = None,
            // Only a reset may have taken it first.
            Answer::NotFound(t) if !reset_sent_before(t) => problems.push(format!(
                "deleting {} {} answered 404 with no reset before",
                l.objs[d.target].via.name(),
                l.objs[d.target].id
            )),
            _ => {}
        }
    }
    if let Some(r) = &l.reset {
        match r.done {
            Some(done) => {
                for (i, o) in l.objs.iter().enumerate() {
                    if must[i] == Some(false) {
                        continue;
                    }
                    if o.stored_by().is_some_and(|t| t < r.sent) {
                        must[i] = Some(false);
                        why.insert(i, "reset");
                    } else if o.sent < done {
                        must[i] = None;
                    }
                }
            }
            None => {
                // In flight at the kill: all or nothing of what it covers.
                let covered: Vec<bool> = (0..l.objs.len())
                    .map(|i| {
                        must[i] == Some(true) && l.objs[i].stored_by().is_some_and(|t| t < r.sent)
                    })
                    .collect();
                let kept = found.keys().filter(|&&i| covered[i]).count();
                // Kept any: not applied, and what it covers must all be
                // there (the comparison below reports what is missing).
                if kept == 0 {
                    // Applied (or nothing to tell): what came after may
                    // have been stored before it.
                    for (i, &c) in covered.iter().enumerate() {
                        if must[i] == Some(true) {
                            must[i] = if c { Some(false) } else { None };
                        }
                        if c {
                            why.insert(i, "reset");
                        }
                    }
                }
            }
        }
    }

    // Compare.
    let killed = l.killed;
    let mut lost: Vec<(Via, Duration, bool)> = Vec::new();
    let mut back = 0;
    for (i, o) in l.objs.iter().enumerate() {
        match (must[i], found.contains_key(&i)) {
            (Some(true), false) => {
                let age = match (o.ack, killed) {
                    (Some(a), Some(k)) => k.saturating_duration_since(a.at),
                    _ => Duration::ZERO,
                };
                let earlier = o.seen != Seen::New;
                lost.push((o.via, age, earlier));
                if lost.len() <= 5 {
                    problems.push(format!(
                        "{} {} at {:?} was acknowledged {} and is lost",
                        o.via.name(),
                        o.id,
                        o.known_ts(),
                        if earlier {
                            "in an earlier session".to_string()
                        } else {
                            format!("{age:.0?} before the kill")
                        }
                    ));
                }
            }
            (Some(false), true) => {
                back += 1;
                if back <= 5 {
                    problems.push(format!(
                        "{} {} came back ({})",
                        o.via.name(),
                        o.id,
                        why.get(&i)
                            .copied()
                            .unwrap_or("missing at an earlier restart")
                    ));
                }
            }
            _ => {}
        }
    }
    if back > 5 {
        problems.push(format!("... {back} objects came back in all"));
    }
    if lost.len() > 5 {
        problems.push(format!(
            "... {} acknowledged objects lost in all",
            lost.len()
        ));
    }
    l.losing += u32::from(!lost.is_empty());
    for (via, age, earlier) in lost {
        let e = l.lost.entry(via).or_default();
        e.count += 1;
        e.oldest = e.oldest.max(age);
        e.earlier += u64::from(earlier);
    }

    // A sample by timestamp: present ones with their bytes, deleted ones
    // gone.
    let mut present: Vec<usize> = found.keys().copied().collect();
    present.sort_unstable();
    let deleted: Vec<usize> = l
        .deletes
        .iter()
        .filter(|d| matches!(d.answer, Answer::Deleted(_)))
        .map(|d| d.target)
        .collect();
    let mut probes: Vec<(usize, bool)> = Vec::new();
    for _ in 0..present.len().min(24) {
        probes.push((present[rng.below(present.len() as u64) as usize], true));
    }
    for _ in 0..deleted.len().min(8) {
        probes.push((deleted[rng.below(deleted.len() as u64) as usize], false));
    }
    for (i, there) in probes {
        let o = &l.objs[i];
        let Some(ts) = found.get(&i).copied().or(o.known_ts()) else {
            continue;
        };
        let r = srv
            .get(&st.path(&format!("/data/time/{ts}")))
            .key(&st.key)
            .send();
        let got: Option<String> = (r.status == 200)
            .then(|| serde_json::from_slice::<Item>(&r.body).ok())
            .flatten()
            .map(|it| it.data.get().to_string());
        let ok = match (&got, there) {
            (Some(raw), true) => *raw == o.payload,
            (Some(raw), false) => id_of(raw).as_deref() != Some(&o.id),
            (None, there) => !there && r.status == 404,
        };
        if !ok {
            problems.push(format!(
                "reading {} {} at {ts} by time: {} {:.80}",
                o.via.name(),
                o.id,
                r.status,
                r.text()
            ));
        }
    }

    // What this restart showed is what the next one must show.
    for (i, o) in l.objs.iter_mut().enumerate() {
        o.seen = match found.get(&i) {
            Some(&ts) => Seen::Present {
                ts,
                tick: o.stored_by().unwrap_or(now),
            },
            None => Seen::Absent,
        };
    }
    l.deletable = present;
    l.deletes.clear();
    l.reset = None;
    for p in problems {
        l.problem(format!("{after}: {p}"));
    }
    listed.objects.len()
}

// ------------------------------------------------------------ the test

fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={s:?} is not a number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

fn rounds() -> u32 {
    std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS)
}

/// The server, allowed to dial the test's pull peer on 127.0.0.1 (the
/// outbound policy refuses loopback to store keys by default).
fn start(data: &Path, sock: &Path) -> Server {
    Server::builder()
        .data_dir(data)
        .socket(sock)
        .config(&super::outbound::loopback_allowed(""))
        .start()
}

/// Waits for the killed server to exit and checks it died of the SIGKILL,
/// not of something else first; then retires its pull connections.
fn reap(srv: &mut Server, sh: &Shared, remote: &Remote, ctx: &str) {
    let log = srv.log();
    let status = srv.wait_exit();
    assert_eq!(
        status.signal(),
        Some(9),
        "{ctx}: the server did not die of the SIGKILL ({status:?}); log:\n{log}"
    );
    sh.running.store(false, SeqCst);
    let gen = sh.gen.fetch_add(1, SeqCst) + 1;
    remote.join_before(gen);
}

fn run(policy: &str) {
    let seed = seed();
    let name = format!("kill_9 under {policy}");
    eprintln!("{name}: seed {seed} (replay: {SEED_ENV}={seed})");
    let t0 = Instant::now();
    let mut rng = Rng::new(seed);
    let data = tempfile::tempdir().unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock: PathBuf = sock_dir.path().join("tsstore.sock");
    let sh = Arc::new(Shared::new(seed));
    let remote = Remote::start(sh.clone());

    let mut srv = start(data.path(), &sock);
    let st = srv.create_store(
        "kill",
        json!({ "num_blocks": NUM_BLOCKS, "durability": policy }),
    );
    let r = srv
        .post(&st.path("/ws/connections"))
        .key(&st.key)
        .json(&json!({ "mode": "pull", "url": remote.url() }))
        .send();
    assert_eq!(r.status, 201, "create the pull connection: {}", r.text());

    let (mut kills, mut startup_kills) = (0u32, 0u32);
    let rounds = rounds();
    while kills < rounds && (kills < MIN_ROUNDS || t0.elapsed() < BUDGET) {
        let delay = if rng.chance(1, 5) {
            Duration::from_millis(rng.below(40))
        } else {
            Duration::from_millis(150 + rng.below(750))
        };
        session(&srv, &st, &sh, &sock, &mut rng, End::Kill(delay));
        kills += 1;
        let ctx = format!("{name}, kill {kills} (seed {seed})");
        reap(&mut srv, &sh, &remote, &ctx);
        srv = start(data.path(), &sock);
        if rng.chance(1, 4) {
            // Again at once: while it starts and opens the store.
            std::thread::sleep(Duration::from_millis(rng.below(30)));
            common::signal(srv.pid(), "KILL");
            reap(&mut srv, &sh, &remote, &format!("{ctx}, at start-up"));
            startup_kills += 1;
            srv = start(data.path(), &sock);
        }
        verify(&srv, &st, &sh, &mut rng, &format!("after kill {kills}"));
    }
    // The restarted server takes writes on every path; stopped writers
    // leave nothing in flight, so all of it must be there.
    session(&srv, &st, &sh, &sock, &mut rng, End::Stop);
    let kept = verify(&srv, &st, &sh, &mut rng, "at the end");
    // The remote first: its idle connections close before the server's
    // shutdown would wait on them.
    drop(remote);
    drop(srv);

    let l = sh.led();
    let acked: u64 = l.acks.values().sum();
    let per_path: Vec<String> = PATHS
        .iter()
        .map(|p| format!("{} {}", p.name(), l.acks.get(p).copied().unwrap_or(0)))
        .collect();
    let mut summary = format!(
        "{name}: {kills} kills (+{startup_kills} at start-up), {} objects sent, {acked} \
         acknowledged ({}), {} deletes and {} resets acknowledged, {kept} objects at the end, \
         at most {} of {NUM_BLOCKS} blocks used, {:.1?} (seed {seed})",
        l.sent,
        per_path.join(", "),
        l.deletes_done,
        l.resets_done,
        l.blocks,
        t0.elapsed()
    );
    for (via, lost) in &l.lost {
        summary.push_str(&format!(
            "\n  {}: {} acknowledged objects lost ({} from earlier sessions), acknowledged up \
             to {:.0?} before their kill",
            via.name(),
            lost.count,
            lost.earlier,
            lost.oldest
        ));
    }
    if l.losing > 0 {
        summary.push_str(&format!(
            "\n  {} of {} checks (one after each kill, one at the end) found acknowledged \
             objects lost",
            l.losing,
            kills + 1
        ));
    }
    eprintln!("{summary}");
    for p in PATHS {
        assert!(
            l.acks.get(&p).is_some_and(|&n| n > 0),
            "{summary}\nno write was acknowledged on {}",
            p.name()
        );
    }
    if !l.problems.is_empty() {
        let first: Vec<&str> = l.problems.iter().take(25).map(String::as_str).collect();
        panic!(
            "{summary}\n{} problems; the first:\n  {}",
            l.problems.len(),
            first.join("\n  ")
        );
    }
}
