#!/usr/bin/env python3
"""A tsstore binary under the attacks the security limits bound (README
"Security"): prints figures, asserts nothing. Loopback only; every attack is
bounded in count and time (about 30 s each). To compare two builds, run it
on each binary in turn on an otherwise idle machine:

    python3 benches/attacks.py target/debug/tsstore after
    python3 benches/attacks.py /path/to/older/tsstore before slowloris socket

Scenarios (all by default):
  slowloris         5,000 connections from one address (127.0.2.1) sending a
                    request head a header a second; /health probed from
                    127.0.0.1
  slowloris-reopen  the same, reopening every connection the server closes
  slowloris-reopen-nocap
                    the same with server.max_connections_per_address out of the
                    way: the baseline of the cap per address
  guess             32 clients from 32 addresses guessing keys of 8 stores
                    (each guess names a real key id: an argon2 hash unless
                    refused first), /health latency alone and meanwhile
  guess-nothrottle  the same with server.auth_limit out of the way
  guess1            the 32 guessers from one address
  flood             32 clients from one address flooding GET /health (no key):
                    what request volume alone costs, to compare with guess1
  socket            a Unix-socket writer (connect, AUTH, one insert) alone and
                    while 256 connections that never send AUTH are held open
"""
import http.client, json, os, socket, subprocess, sys, tempfile, threading, time

ADMIN = "measure-admin-key-0123456789"
if len(sys.argv) < 3:
    raise SystemExit(__doc__)
BIN, LABEL = sys.argv[1], sys.argv[2]
WHAT = sys.argv[3:]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

class Server:
    def __init__(self, config="{}"):
        self.dir = tempfile.mkdtemp(prefix="tsm-")
        self.port = free_port()
        self.sock = os.path.join(self.dir, "s.sock")
        cfg = os.path.join(self.dir, "config.json")
        open(cfg, "w").write(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TSSTORE_")}
        env.update(TSSTORE_ADMIN_KEY=ADMIN, TSSTORE_HOST="127.0.0.1", TSSTORE_PORT=str(self.port),
                   TSSTORE_DATA_PATH=os.path.join(self.dir, "data"), TSSTORE_SOCKET_PATH=self.sock,
                   TSSTORE_CONFIG=cfg)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.p = subprocess.Popen([BIN, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                if self.get("/health")[0] == 200: return
            except OSError: pass
            time.sleep(0.05)
        raise SystemExit("server did not start")
    def status(self, field):
        for l in open(f"/proc/{self.p.pid}/status"):
            if l.startswith(field + ":"): return int(l.split()[1])
    def fds(self): return len(os.listdir(f"/proc/{self.p.pid}/fd"))
    def req(self, method, path, body=None, headers={}, source="127.0.0.1", timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(source, 0))
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse(); return r.status, r.read()
        finally: c.close()
    def get(self, path, **kw): return self.req("GET", path, **kw)
    def store(self, name):
        st, b = self.req("POST", "/api/stores", json.dumps({"name": name, "num_blocks": 16}),
                         {"X-Admin-Key": ADMIN, "Content-Type": "application/json"})
        assert st == 201, (st, b)
        return json.loads(b)["api_key"]
    def metric(self, name):
        for l in self.get("/metrics")[1].decode().splitlines():
            if l.startswith(name + " "): return float(l.split()[1])
        return None
    def stop(self):
        self.p.terminate(); self.p.wait(20)

FAILS = {}
def pct(v, p): v = sorted(v); return v[min(int(len(v) * p), len(v) - 1)]
def ms(x): return f"{x*1000:.1f} ms"

def probe(srv, secs, out):
    """/health on a new connection every 5 ms for secs."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            st, _ = srv.get("/health", timeout=30)
        except OSError as e:
            st = type(e).__name__
        out.append(time.monotonic() - t if st == 200 else float("inf"))
        if st != 200: FAILS[st] = FAILS.get(st, 0) + 1
        time.sleep(0.005)
    return out

def slow_conn(port):
    s = socket.socket(); s.settimeout(10)
    try:
        s.bind((SLOW_SOURCE, 0)); s.connect(("127.0.0.1", port)); s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    except OSError:
        s.close(); return None
    s.setblocking(False); return s

SLOW_SOURCE = "127.0.2.1"  # the attacker's address, not the probes'

def slowloris(n=5000, secs=30, reopen=False, config="{}", note=""):
    FAILS.clear()
    srv = Server(config)
    time.sleep(0.5)
    rss0, fd0 = srv.status("VmRSS"), srv.fds()
    conns = [c for c in (slow_conn(srv.port) for _ in range(n)) if c]
    t0 = time.monotonic()
    opened = len(conns)
    open_ = set(conns); peak_rss = peak_fd = 0; health = []
    while time.monotonic() - t0 < secs:
        while reopen and len(open_) < n:
            c = slow_conn(srv.port)
            if not c: break
            open_.add(c); opened += 1
        for s in list(open_):
            try:
                s.send(b"X-a: b\r\n")
                try:
                    d = s.recv(4096)
                    if d == b"": open_.discard(s); s.close()
                except BlockingIOError: pass
            except OSError:
                open_.discard(s); s.close()
        peak_rss = max(peak_rss, srv.status("VmRSS")); peak_fd = max(peak_fd, srv.fds())
        probe(srv, 0.2, health)
        time.sleep(max(0, 1.0 - 0.2))
    rss_end, fd_end = srv.status("VmRSS"), srv.fds()
    hwm = srv.status("VmHWM")
    ok = sum(1 for h in health if h != float("inf"))
    print(f"[{LABEL}] slowloris {n} conns for {secs}s{' (closed ones reopened)' if reopen else ''}{note}, {opened} opened: server RSS idle {rss0} kB -> peak {peak_rss} kB "
          f"(VmHWM {hwm} kB), at end {rss_end} kB; fds {fd0} -> peak {peak_fd}, at end {fd_end}; "
          f"attack conns still open at end {len(open_)}; /health during attack {ok}/{len(health)} ok, "
          f"p50 {ms(pct(health,0.5))} p99 {ms(pct(health,0.99))}, failures {FAILS}", flush=True)
    for s in open_: s.close()
    srv.stop()

def guess(guessers=32, stores=8, alone=10, under=20, config="{}", one_address=False, note="", no_key=False):
    srv = Server(config)
    keys = [srv.store(f"t{i}") for i in range(stores)]
    guesses = [k[:16] + "-0000-4000-8000-000000000000" for k in keys]
    base = probe(srv, alone, [])
    FAILS.clear()
    stop = threading.Event(); counts = {}; lock = threading.Lock()
    def guesser(g):
        src = "127.0.1.1" if one_address else f"127.0.1.{g+1}"
        i = g % stores
        while not stop.is_set():
            try:
                if no_key: st, _ = srv.get("/health", source=src)
                else: st, _ = srv.get(f"/api/stores/t{i}/stats", headers={"X-API-Key": guesses[i]}, source=src)
            except OSError: st = "err"
            with lock: counts[st] = counts.get(st, 0) + 1
    th = [threading.Thread(target=guesser, args=(g,)) for g in range(guessers)]
    for t in th: t.start()
    time.sleep(1)
    h0, t0 = srv.metric("tsstore_key_hashes_total"), time.monotonic()
    c0 = dict(counts)
    # The probe in a process of its own: the guessers' threads must not
    # hold it up (the GIL).
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    pr = ctx.Process(target=lambda: q.put((probe(srv, under, []), FAILS)))
    pr.start(); res, fails = q.get(); pr.join()
    FAILS.update(fails)
    h1, t1 = srv.metric("tsstore_key_hashes_total"), time.monotonic()
    c1 = dict(counts)
    stop.set()
    for t in th: t.join()
    el = t1 - t0
    rate = {k: round((c1.get(k, 0) - c0.get(k, 0)) / el, 1) for k in c1}
    hashes = f"{(h1-h0)/el:.1f}/s (tsstore_key_hashes_total)" if h0 is not None else \
        f"{rate.get(401,0)}/s (no tsstore_key_hashes_total: the 401s, one hash each in a build without the key-id check)"
    print(f"[{LABEL}] {guessers} guessers{note}: /health alone ({len(base)} probes) p50 {ms(pct(base,.5))} "
          f"p99 {ms(pct(base,.99))}; under guessing ({len(res)} probes) p50 {ms(pct(res,.5))} p99 {ms(pct(res,.99))} "
          f"max {ms(max(res))}, failures {FAILS}; answers/s {rate}; hashes reaching argon2 {hashes}; RSS peak {srv.status('VmHWM')} kB",
          flush=True)
    srv.stop()

def socket_flood(flood=256, secs=20):
    srv = Server()
    key = srv.store("w")
    stop = threading.Event(); held = [0]
    def flooder():
        conns = []
        while not stop.is_set():
            # Keep `flood` connections open, reopening the closed ones.
            alive = []
            for c in conns:
                try:
                    c.setblocking(False)
                    d = c.recv(100)
                    if d == b"": c.close(); continue
                    alive.append(c)  # got an error line: closing soon
                except BlockingIOError: alive.append(c)
                except OSError: c.close()
            conns = alive
            while len(conns) < flood and not stop.is_set():
                c = socket.socket(socket.AF_UNIX)
                try: c.connect(srv.sock); conns.append(c)
                except OSError: c.close(); break
            held[0] = len(conns)
            time.sleep(0.05)
        for c in conns: c.close()
    def writer(n_attempts, out):
        for i in range(n_attempts):
            t = time.monotonic()
            c = socket.socket(socket.AF_UNIX); c.settimeout(15)
            try:
                c.connect(srv.sock); f = c.makefile("rwb")
                f.write(f"AUTH w {key}\n".encode()); f.flush()
                a = f.readline().decode().strip()
                if a == "OK":
                    f.write(b'{"v":1}\n'); f.flush(); a = f.readline().decode().strip()
                out.append((a.split(" ")[0] if a.startswith("OK") else a, time.monotonic() - t))
            except OSError as e:
                out.append((f"error {e}", time.monotonic() - t))
            finally: c.close()
            time.sleep(0.25)
    alone = []; writer(20, alone)
    f = threading.Thread(target=flooder); f.start(); time.sleep(1)
    under = []; writer(int(secs / 0.3), under)
    stop.set(); f.join()
    def summary(v):
        ok = [t for a, t in v if a == "OK"]
        other = {}
        for a, _ in v:
            if a != "OK": other[a] = other.get(a, 0) + 1
        return f"{len(ok)}/{len(v)} stored" + (f" (p50 {ms(pct(ok,.5))}, max {ms(max(ok))})" if ok else "") + (f", refused {other}" if other else "")
    print(f"[{LABEL}] unix socket: writer (connect+AUTH+1 insert, every 0.25 s) alone: {summary(alone)}; "
          f"with {flood} unauthenticated connections held and reopened: {summary(under)}; "
          f"server fds {srv.fds()}, RSS {srv.status('VmRSS')} kB", flush=True)
    srv.stop()

SCENARIOS = {
    "slowloris": lambda: slowloris(),
    "slowloris-reopen": lambda: slowloris(reopen=True),
    "slowloris-reopen-nocap": lambda: slowloris(
        reopen=True, config='{"server": {"max_connections_per_address": 512}}',
        note=", cap per address out of the way (the global cap alone)"),
    "guess": lambda: guess(note=", 32 addresses, default config"),
    "guess-nothrottle": lambda: guess(
        config='{"server": {"auth_limit": {"burst": 1000000, "window_seconds": 1}}}',
        note=", 32 addresses, throttle out of the way (the hashing cap alone)"),
    "guess1": lambda: guess(one_address=True, note=", one address, default config"),
    "flood": lambda: guess(one_address=True, no_key=True,
                           note=" replaced by 32 clients flooding GET /health from one address"),
    "socket": lambda: socket_flood(),
}
for w in WHAT or list(SCENARIOS):
    SCENARIOS[w]()
