//! `docs/openapi.yaml` against the server: every route the router declares
//! is documented, and every documented operation is a route.
//!
//! Two independent checks, so that neither has to be trusted alone:
//!
//! * **Source.** The routes are read from `src/**/*.rs` (every
//!   `.route("PATH", get(h).post(h2)...)`) by a small tokenizer and compared
//!   with the `paths` of the document.
//! * **Live.** The real binary is started and every documented (method, path)
//!   is requested with dummy path parameters; the router must not answer with
//!   its fallback (404 `{"error":"not found"}`) nor with 405 (a known path
//!   without that method).
//!
//! It also checks that `GET /api/openapi.yaml` and `tsstore swagger` serve the
//! file byte for byte, and the document's internal consistency (`$ref`
//! targets exist, path parameters are declared, every operation has
//! responses). Self-contained: it uses no other test module.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_tsstore");
const ADMIN_KEY: &str = "openapi-test-admin-key-0123456789";
/// Exact body of the router's fallback (`src/api/mod.rs`).
const FALLBACK_BODY: &[u8] = br#"{"error":"not found"}"#;
/// Methods of OpenAPI path items, which are also axum method routers.
const METHODS: [&str; 8] = [
    "get", "post", "put", "delete", "patch", "head", "options", "trace",
];
/// Method routers whose methods cannot be read off the source: the parser
/// refuses them instead of guessing.
const UNSUPPORTED_ROUTERS: [&str; 5] = ["any", "on", "any_service", "on_service", "get_service"];

type Route = (String, String);

// ---------------------------------------------------------------------------
// Route extraction from the source.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Ident(String),
    Punct(char),
}

/// Splits Rust source into string literals, identifiers (numbers included)
/// and punctuation; comments and whitespace are dropped. Handles escapes,
/// raw strings, byte strings, char literals and lifetimes, which is all the
/// router code needs.
fn tokenize(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            let mut s = String::new();
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                    match at(i) {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        '0' => s.push('\0'),
                        '\n' => {
                            // Line continuation: skip the leading whitespace.
                            while at(i + 1).is_whitespace() {
                                i += 1;
                            }
                        }
                        e => s.push(e),
                    }
                } else {
                    s.push(c[i]);
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // Escaped char literal: '\n', '\'', '\u{..}'.
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3; // 'x'
            } else {
                out.push(Tok::Punct('\'')); // a lifetime
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            if (word == "r" || word == "br") && (at(i) == '"' || at(i) == '#') {
                let mut hashes = 0;
                while at(i) == '#' {
                    hashes += 1;
                    i += 1;
                }
                assert_eq!(at(i), '"', "malformed raw string");
                i += 1;
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let rest: String = c[i..].iter().collect();
                let end = rest.find(&close).expect("unterminated raw string");
                out.push(Tok::Str(rest[..end].to_string()));
                i += rest[..end].chars().count() + close.chars().count();
            } else if word == "b" && at(i) == '"' {
                // Byte string: the next iteration reads it as a string.
            } else if word == "b" && at(i) == '\'' {
                // Byte literal: the next iteration skips it as a char.
            } else {
                out.push(Tok::Ident(word));
            }
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

fn ident(t: Option<&Tok>, name: &str) -> bool {
    matches!(t, Some(Tok::Ident(s)) if s == name)
}

fn punct(t: Option<&Tok>, p: char) -> bool {
    t == Some(&Tok::Punct(p))
}

/// Index just past the balanced group opening at `open` (`(`, `[` or `{`).
fn skip_group(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0i32;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced group at token {open}");
}

/// Drops `#[cfg(test)] mod name { ... }` blocks: routers built by unit tests
/// are not the server's.
fn without_test_modules(toks: Vec<Tok>) -> Vec<Tok> {
    let pattern = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if toks[i..].starts_with(&pattern)
            && ident(toks.get(i + 7), "mod")
            && punct(toks.get(i + 9), '{')
        {
            i = skip_group(&toks, i + 9);
            continue;
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// The (METHOD, path) pairs declared by `.route(...)` calls in `src`.
/// Panics on any router construct it cannot read, so that a new style of
/// route declaration breaks this test instead of being skipped.
fn routes_in(file: &str, src: &str) -> Vec<Route> {
    let toks = without_test_modules(tokenize(src));
    let mut routes = Vec::new();
    for i in 0..toks.len() {
        if !punct(toks.get(i), '.') || !punct(toks.get(i + 2), '(') {
            continue;
        }
        let Some(Tok::Ident(call)) = toks.get(i + 1) else {
            continue;
        };
        match call.as_str() {
            "route" => {}
            "nest" | "nest_service" | "route_service" | "fallback_service" => panic!(
                "{file}: `.{call}(` is not understood by this test's route parser; extend it"
            ),
            _ => continue,
        }
        let path = match toks.get(i + 3) {
            Some(Tok::Str(p)) => p.clone(),
            other => panic!("{file}: `.route(` whose path is not a string literal: {other:?}"),
        };
        assert!(
            punct(toks.get(i + 4), ','),
            "{file}: `.route({path:?}` is not followed by a comma"
        );
        let end = skip_group(&toks, i + 2) - 1; // the closing `)`
        let mut methods = Vec::new();
        let mut depth = 0i32;
        for j in i + 5..end {
            match &toks[j] {
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']' | '}') => depth -= 1,
                Tok::Ident(m) if depth == 0 && punct(toks.get(j + 1), '(') => {
                    if METHODS.contains(&m.as_str()) {
                        methods.push(m.to_ascii_uppercase());
                    } else if UNSUPPORTED_ROUTERS.contains(&m.as_str()) || m.ends_with("_service") {
                        panic!("{file}: route {path:?} uses `{m}(`, which this test cannot read");
                    }
                }
                _ => {}
            }
        }
        assert!(
            !methods.is_empty(),
            "{file}: route {path:?} has no method router this test recognises"
        );
        for m in methods {
            routes.push((m, path.clone()));
        }
    }
    routes
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every route of the server, from `src/**/*.rs`.
fn source_routes() -> BTreeSet<Route> {
    let dir = Path::new(MANIFEST_DIR).join("src");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(!files.is_empty(), "no Rust files under {}", dir.display());
    // `tsstore swagger` (src/commands.rs) is a server of its own, not the API.
    files.retain(|f| !f.ends_with("commands.rs"));
    let mut all = BTreeSet::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let name = f
            .strip_prefix(MANIFEST_DIR)
            .unwrap_or(f)
            .display()
            .to_string();
        let found = routes_in(&name, &src);
        if src.contains("fn routes(") {
            assert!(
                !found.is_empty(),
                "{name} has `fn routes(` but no `.route(` was parsed from it"
            );
        }
        for r in found {
            assert!(all.insert(r.clone()), "route {r:?} declared twice");
        }
    }
    assert!(
        all.len() >= 5,
        "only {} routes parsed from src; the parser is probably broken: {all:?}",
        all.len()
    );
    all
}

/// `/a/{store}/b/{id}` -> `/a/{}/b/{}`: parameter names may differ.
fn normalise(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for ch in path.chars() {
        match ch {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            c => out.push(c),
        }
    }
    out
}

fn normalised(set: &BTreeSet<Route>) -> BTreeMap<Route, Route> {
    set.iter()
        .map(|(m, p)| ((m.clone(), normalise(p)), (m.clone(), p.clone())))
        .collect()
}

// ---------------------------------------------------------------------------
// The document.

fn doc_path() -> PathBuf {
    Path::new(MANIFEST_DIR).join("docs/openapi.yaml")
}

fn load_doc() -> Yaml {
    let text = std::fs::read_to_string(doc_path()).unwrap();
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("docs/openapi.yaml is not valid YAML: {e}"));
    assert_eq!(
        docs.len(),
        1,
        "docs/openapi.yaml must hold one YAML document"
    );
    docs.remove(0)
}

fn key_str(k: &Yaml) -> &str {
    k.as_str()
        .unwrap_or_else(|| panic!("non-string key in docs/openapi.yaml: {k:?}"))
}

/// The documented (METHOD, path) pairs.
fn documented_routes(doc: &Yaml) -> BTreeSet<Route> {
    let paths = doc["paths"]
        .as_hash()
        .expect("docs/openapi.yaml has no `paths` mapping");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let path = key_str(path);
        assert!(path.starts_with('/'), "path {path:?} does not start with /");
        let item = item
            .as_hash()
            .unwrap_or_else(|| panic!("path {path} is not a mapping"));
        for (k, op) in item {
            let k = key_str(k);
            if METHODS.contains(&k) {
                assert!(
                    op["responses"].as_hash().is_some_and(|r| !r.is_empty()),
                    "{k} {path} has no responses"
                );
                out.insert((k.to_ascii_uppercase(), path.to_string()));
            }
        }
    }
    assert!(!out.is_empty(), "docs/openapi.yaml documents no operation");
    out
}

/// The node a local `$ref` (`#/components/...`) points to.
fn resolve<'a>(doc: &'a Yaml, reference: &str) -> Option<&'a Yaml> {
    let pointer = reference.strip_prefix("#/")?;
    let mut node = doc;
    for part in pointer.split('/') {
        let part = part.replace("~1", "/").replace("~0", "~");
        node = node.as_hash()?.get(&Yaml::String(part))?;
    }
    Some(node)
}

fn collect_refs(node: &Yaml, out: &mut Vec<String>) {
    match node {
        Yaml::Hash(h) => {
            for (k, v) in h {
                if k.as_str() == Some("$ref") {
                    out.push(v.as_str().expect("$ref is not a string").to_string());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Yaml::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Follows `$ref` chains.
fn deref<'a>(doc: &'a Yaml, mut node: &'a Yaml) -> &'a Yaml {
    for _ in 0..16 {
        match node["$ref"].as_str() {
            Some(r) => node = resolve(doc, r).unwrap_or_else(|| panic!("unresolved $ref {r}")),
            None => return node,
        }
    }
    panic!("$ref chain too long");
}

/// Names of the `in: path` parameters of a parameter list.
fn path_params(doc: &Yaml, params: &Yaml) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in params.as_vec().map(|v| v.as_slice()).unwrap_or_default() {
        let p = deref(doc, p);
        if p["in"].as_str() == Some("path") {
            assert_eq!(
                p["required"].as_bool(),
                Some(true),
                "path parameter {:?} must be required",
                p["name"]
            );
            out.insert(
                p["name"]
                    .as_str()
                    .expect("parameter without name")
                    .to_string(),
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client and process helpers.

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_fallback(&self) -> bool {
        self.status == 404 && self.body == FALLBACK_BODY
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").expect("bad chunk");
        let size_text = std::str::from_utf8(&b[..nl]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("bad chunk size");
        b = &b[nl + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads
/// the whole response.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: reading the response: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no header end in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = dechunk(&resp.body);
    }
    resp
}

/// A child process killed on drop, with its output lines on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Runs the binary in `dir` with a clean tsstore environment; `stderr`
    /// chooses which stream feeds `lines` (the other is discarded).
    fn spawn(dir: &Path, args: &[&str], stderr: bool) -> Proc {
        let mut cmd = crate::runner::command(BIN);
        cmd.args(args).current_dir(dir).stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TSSTORE_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("TSSTORE_ADMIN_KEY", ADMIN_KEY)
            .env("TSSTORE_LOG", "tsstore=info");
        if stderr {
            cmd.stderr(Stdio::piped()).stdout(Stdio::null());
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {BIN}: {e}"));
        let stream: Box<dyn Read + Send> = if stderr {
            Box::new(child.stderr.take().unwrap())
        } else {
            Box::new(child.stdout.take().unwrap())
        };
        let (tx, lines) = mpsc::channel();
        // Drains the pipe for the life of the process so it never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Proc { child, lines }
    }

    /// Waits for the first line containing `marker`; returns what follows it.
    fn wait_for(&mut self, marker: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(pos) = line.find(marker) {
                        return line[pos + marker.len()..].to_string();
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!("no line with {marker:?} (exit status {status:?}); output: {seen:#?}")
                }
            }
        }
    }
}

/// Starts `tsstore serve` on an ephemeral loopback port.
fn start_server(dir: &Path) -> (Proc, SocketAddr) {
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let mut p = Proc::spawn(
        dir,
        &[
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-socket",
            "--data-path",
            data,
        ],
        true,
    );
    let rest = p.wait_for("Starting tsstore server on ");
    let addr = rest
        .split(" (")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read the address from {rest:?}"));
    (p, addr)
}

/// A concrete request path for a route template.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut param = None::<String>;
    for ch in path.chars() {
        match (ch, &mut param) {
            ('{', _) => param = Some(String::new()),
            ('}', Some(name)) => {
                out.push_str(match name.as_str() {
                    "store" => "openapi-probe",
                    "timestamp" => "1",
                    _ => "x",
                });
                param = None;
            }
            (c, Some(name)) => name.push(c),
            (c, None) => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn route_parser_reads_the_code_style() {
    let src = r##"
        //! Docs that mention `.route("/doc-comment", get(x))` are ignored.
        use axum::routing::{get, post};
        /* .route("/block-comment", get(x)) */
        pub fn routes() -> Router<AppState> {
            Router::new()
                .route("/a", post(create).get(list))
                .route("/a/{id}", axum::routing::delete(remove))
                .route(
                    "/a/{id}/b",
                    get(b_get)
                        .put(b_put),
                )
                .route("/c", get(|| async { (")", '"', "not .route(\"/x\", get(y))") }))
                .route(r#"/raw/{k}"#, routing::patch(h))
                .route("/d", get(handler_with_get.get(1)).delete(d))
        }
        fn helper<'a>(s: &'a str) -> char { let _ = b'"'; s.chars().next().unwrap_or('\'') }
        #[cfg(test)]
        mod tests {
            #[test]
            fn t() { let _ = Router::new().route("/test-only", get(h)); }
        }
    "##;
    let got: BTreeSet<Route> = routes_in("sample.rs", src).into_iter().collect();
    let want: BTreeSet<Route> = [
        ("POST", "/a"),
        ("GET", "/a"),
        ("DELETE", "/a/{id}"),
        ("GET", "/a/{id}/b"),
        ("PUT", "/a/{id}/b"),
        ("GET", "/c"),
        ("PATCH", "/raw/{k}"),
        ("GET", "/d"),
        ("DELETE", "/d"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        normalise("/api/stores/{store}/data/time/{timestamp}"),
        "/api/stores/{}/data/time/{}"
    );

    let refused = std::panic::catch_unwind(|| routes_in("x.rs", r#"r.route("/x", any(h))"#));
    assert!(refused.is_err(), "`any(` must be refused");
    let refused = std::panic::catch_unwind(|| routes_in("x.rs", r#"r.nest("/x", other())"#));
    assert!(refused.is_err(), "`.nest(` must be refused");
    let refused = std::panic::catch_unwind(|| routes_in("x.rs", r#"r.route(PATH, get(h))"#));
    assert!(refused.is_err(), "a non-literal path must be refused");
}

#[test]
fn document_lists_exactly_the_router_routes() {
    let src = normalised(&source_routes());
    let doc = normalised(&documented_routes(&load_doc()));
    let missing: Vec<_> = src
        .iter()
        .filter(|(k, _)| !doc.contains_key(*k))
        .map(|(_, v)| v)
        .collect();
    let extra: Vec<_> = doc
        .iter()
        .filter(|(k, _)| !src.contains_key(*k))
        .map(|(_, v)| v)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/openapi.yaml and the router (src) disagree.\n\
         Routes missing from the document: {missing:#?}\n\
         Documented operations that are not routes: {extra:#?}"
    );
}

#[test]
fn document_is_self_consistent() {
    let doc = load_doc();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0.")),
        "openapi must be 3.0.x, is {:?}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].as_str().is_some());
    assert!(doc["info"]["version"].as_str().is_some());

    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    let broken: Vec<_> = refs.iter().filter(|r| resolve(&doc, r).is_none()).collect();
    assert!(broken.is_empty(), "unresolved $ref: {broken:?}");

    let schemes = doc["components"]["securitySchemes"]
        .as_hash()
        .expect("no securitySchemes");
    let mut requirements: Vec<&Yaml> = vec![&doc["security"]];
    for (path, item) in doc["paths"].as_hash().unwrap() {
        let path = key_str(path);
        let wanted: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_string)
            .collect();
        let shared = path_params(&doc, &item["parameters"]);
        for (method, op) in item.as_hash().unwrap() {
            if !METHODS.contains(&key_str(method)) {
                continue;
            }
            requirements.push(&op["security"]);
            let mut declared = shared.clone();
            declared.extend(path_params(&doc, &op["parameters"]));
            assert_eq!(
                declared,
                wanted,
                "{} {path}: declared path parameters differ from the template",
                key_str(method)
            );
        }
    }
    for req in requirements {
        for alt in req.as_vec().map(|v| v.as_slice()).unwrap_or_default() {
            for (name, _) in alt
                .as_hash()
                .expect("security requirement is not a mapping")
            {
                assert!(
                    schemes.contains_key(name),
                    "security requirement names unknown scheme {name:?}"
                );
            }
        }
    }
}

#[test]
fn live_server_answers_every_documented_route() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start_server(dir.path());

    // Controls: the detection below must see the fallback and a 405.
    let r = http(addr, "GET", "/api/openapi-no-such-route", &[]);
    assert!(
        r.is_fallback(),
        "an unknown path must get the fallback, got {} {:?}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let r = http(addr, "PATCH", "/health", &[]);
    assert_eq!(r.status, 405, "a wrong method on a known path");

    let mut routes = documented_routes(&load_doc());
    routes.extend(source_routes());
    let mut failures = Vec::new();
    for (method, path) in &routes {
        let target = concrete(path);
        let r = http(addr, method, &target, &[]);
        if r.is_fallback() || r.status == 405 {
            failures.push(format!(
                "{method} {path} ({target}): {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the router does not serve these (method, path) pairs:\n{}",
        failures.join("\n")
    );
}

#[test]
fn openapi_endpoint_serves_the_file() {
    let file = std::fs::read(doc_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start_server(dir.path());
    let r = http(addr, "GET", "/api/openapi.yaml", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/yaml"));
    assert!(
        r.body == file,
        "GET /api/openapi.yaml differs from docs/openapi.yaml ({} vs {} bytes); rebuild the binary",
        r.body.len(),
        file.len()
    );
}

#[test]
fn swagger_command_serves_the_document_with_cors() {
    let file = std::fs::read(doc_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proc::spawn(dir.path(), &["swagger", "--port", "0"], false);
    // First stdout line: `Serving swagger.yaml on http://localhost:<port>/swagger.yaml`.
    let rest = p.wait_for("Serving swagger.yaml on http://localhost:");
    let port: u16 = rest
        .split('/')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no port in {rest:?}"));
    assert_ne!(port, 0);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = http(
        addr,
        "GET",
        "/swagger.yaml",
        &[("Origin", "https://editor.swagger.io")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("content-type"), Some("application/yaml"));
    assert!(
        r.body == file,
        "swagger.yaml differs from docs/openapi.yaml"
    );
    drop(p); // kills the server
}
