//! The web console over HTTP, against the real binary: security headers
//! and no inline code on every page, the session cookie's flags, sign-in
//! refusals, CSRF and Origin checks of cookie-authenticated API calls, a
//! store session confined to its store, and escaping of hostile values.
//! (The browser tests in `tests/console/` drive the same pages in
//! Chromium.)

use serde_json::json;

use super::common::{Resp, Server, ADMIN};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const XSS_SCRIPT: &str = "<script>alert(1)</script>";
const XSS_IMG: &str = "<img src=x onerror=alert(1)>";

pub(super) fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `Set-Cookie` value of a response.
fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .collect()
}

fn cookie_value(r: &Resp, name: &str) -> Option<String> {
    set_cookies(r).iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

/// The value of `<input ... name="csrf" value="...">` or of the
/// `csrf-token` meta element.
fn csrf_in(html: &str) -> String {
    for marker in ["name=\"csrf\" value=\"", "name=\"csrf-token\" content=\""] {
        if let Some(i) = html.find(marker) {
            let rest = &html[i + marker.len()..];
            return rest[..rest.find('"').unwrap()].to_string();
        }
    }
    panic!("no CSRF token in page:\n{html}");
}

/// A signed-in console session.
pub(super) struct Session {
    cookie: String,
    pub(super) csrf: String,
}

impl Session {
    pub(super) fn header(&self) -> String {
        format!("tsstore_session={}", self.cookie)
    }
}

/// Signs in through the login form; the response of the POST on refusal.
fn try_login(srv: &Server, key: &str, store: &str) -> Result<Session, Resp> {
    let page = srv.get("/login").send();
    assert_eq!(page.status, 200);
    let pre = cookie_value(&page, "tsstore_login_csrf").expect("login CSRF cookie");
    let token = csrf_in(&page.text());
    assert_eq!(pre, token, "double-submit token: cookie and field agree");
    let r = post_login(srv, &token, key, store);
    if r.status != 303 {
        return Err(r);
    }
    assert_eq!(r.header("location"), Some("/"));
    let cookie = cookie_value(&r, "tsstore_session").expect("session cookie");
    let home = srv
        .get("/")
        .header("Cookie", &format!("tsstore_session={cookie}"))
        .send();
    assert_eq!(home.status, 200, "{}", home.text());
    let csrf = csrf_in(&home.text());
    Ok(Session { cookie, csrf })
}

/// Posts the sign-in form with `token` as both the CSRF cookie and field.
fn post_login(srv: &Server, token: &str, key: &str, store: &str) -> Resp {
    srv.post("/login")
        .header("Cookie", &format!("tsstore_login_csrf={token}"))
        .body(
            "application/x-www-form-urlencoded",
            form(&[("key", key), ("store", store), ("csrf", token)]),
        )
        .send()
}

pub(super) fn login(srv: &Server, key: &str) -> Session {
    try_login(srv, key, "").unwrap_or_else(|r| panic!("login: {} {}", r.status, r.text()))
}

fn get_page(srv: &Server, s: &Session, path: &str) -> Resp {
    srv.get(path).header("Cookie", &s.header()).send()
}

/// No inline script, style or event handler: what the CSP would block.
/// Only markup is examined (escaped text has no raw `<`).
fn assert_no_inline_code(path: &str, html: &str) {
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..i + lower[i..].find('>').unwrap()];
        assert!(
            tag.contains(" src=\"/static/"),
            "{path}: inline script {tag}"
        );
        assert!(
            lower[i..].starts_with(&format!("{tag}></script>")),
            "{path}: script with a body"
        );
    }
    assert!(!lower.contains("<style"), "{path}: <style> element");
    for tag in lower.split('<').skip(1) {
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        for (name, value) in attributes(tag) {
            assert!(name != "style", "{path}: style attribute in <{tag}>");
            assert!(
                !name.starts_with("on"),
                "{path}: event handler attribute in <{tag}>"
            );
            assert!(
                !value.trim_start().starts_with("javascript:"),
                "{path}: javascript: URL in <{tag}>"
            );
        }
    }
}

/// The (name, value) attributes of a tag's text (after `<`, before `>`);
/// quoted values are skipped over, so text inside them is never a name.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = tag.chars().peekable();
    // The element name.
    while chars.peek().is_some_and(|c| !c.is_whitespace()) {
        chars.next();
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            match chars.peek().copied() {
                Some(q @ ('"' | '\'')) => {
                    chars.next();
                    for c in chars.by_ref() {
                        if c == q {
                            break;
                        }
                        value.push(c);
                    }
                }
                _ => {
                    while chars.peek().is_some_and(|c| !c.is_whitespace()) {
                        value.push(chars.next().unwrap());
                    }
                }
            }
        }
        if name.is_empty() {
            chars.next();
            continue;
        }
        out.push((name, value));
    }
}

/// `html` with askama's numeric entities for `<`, `>` written as named ones.
fn entities(html: &str) -> String {
    html.replace("&#60;", "&lt;").replace("&#62;", "&gt;")
}

fn assert_security_headers(path: &str, r: &Resp) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{path}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{path}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
}

#[test]
fn every_page_has_the_csp_and_no_inline_code() {
    let srv = Server::start();
    srv.json_store("plain");
    srv.create_store("typed", json!({ "num_blocks": 64, "data_type": "schema" }));
    let login_page = srv.get("/login").send();
    assert_security_headers("/login", &login_page);
    assert_no_inline_code("/login", &login_page.text());
    let redirect = srv.get("/").send();
    assert_eq!(redirect.status, 303);
    assert_eq!(redirect.header("location"), Some("/login"));
    assert_security_headers("/ (no session)", &redirect);

    let s = login(&srv, ADMIN);
    for path in [
        "/",
        "/create",
        "/stores/plain",
        "/stores/plain/query",
        "/stores/plain/connections",
        "/stores/typed/schema",
        "/stores/typed/alerts",
        "/stores/nope",
    ] {
        let r = get_page(&srv, &s, path);
        let want = if path == "/stores/nope" { 404 } else { 200 };
        assert_eq!(r.status, want, "{path}: {}", r.text());
        assert!(
            r.header("content-type").unwrap().starts_with("text/html"),
            "{path}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert_security_headers(path, &r);
        assert_no_inline_code(path, &r.text());
    }
    // Assets: content types, ETag revalidation.
    for (path, ty) in [
        ("/static/console.css", "text/css"),
        ("/static/app.js", "text/javascript"),
        ("/static/icon.svg", "image/svg+xml"),
    ] {
        let r = srv.get(path).send();
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ty), "{path}");
        assert_security_headers(path, &r);
        let etag = r.header("etag").expect("etag").to_string();
        let again = srv.get(path).header("If-None-Match", &etag).send();
        assert_eq!(again.status, 304, "{path}");
    }
    assert_eq!(srv.get("/static/nope.js").send().status, 404);
}

#[test]
fn session_cookie_flags_and_sign_out() {
    let srv = Server::start();
    let page = srv.get("/login").send();
    let pre = set_cookies(&page).join("\n");
    assert!(
        pre.contains("HttpOnly") && pre.contains("SameSite=Strict"),
        "{pre}"
    );
    let s = login(&srv, ADMIN);
    // The flags of the session cookie, as set by the sign-in.
    let token = csrf_in(&srv.get("/login").send().text());
    let r = post_login(&srv, &token, ADMIN, "");
    assert_eq!(r.status, 303);
    let c = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("tsstore_session="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(c.contains(flag), "{flag} missing: {c}");
    }
    assert!(!c.contains("Secure"), "no Secure flag over plain HTTP: {c}");
    assert!(!c.contains(ADMIN), "the key is not in the cookie");

    // Sign-out needs the CSRF token, then ends the session.
    let bad = srv
        .post("/logout")
        .header("Cookie", &s.header())
        .body("application/x-www-form-urlencoded", "csrf=wrong")
        .send();
    assert_eq!(bad.status, 403);
    assert_eq!(get_page(&srv, &s, "/").status, 200);
    let out = srv
        .post("/logout")
        .header("Cookie", &s.header())
        .body(
            "application/x-www-form-urlencoded",
            form(&[("csrf", &s.csrf)]),
        )
        .send();
    assert_eq!(out.status, 303);
    assert_eq!(get_page(&srv, &s, "/").status, 303);
    assert!(!srv.log().contains(ADMIN), "the admin key was logged");
}

#[test]
fn wrong_key_is_refused_with_a_message() {
    let srv = Server::start();
    let store = srv.json_store("s1");
    for key in [
        "wrong-admin-key-0123456789",
        "tsstore_00000000-0000-4000-8000-000000000000",
        "",
    ] {
        let r = try_login(&srv, key, "").err().expect("refused");
        assert_eq!(r.status, 401, "{key}");
        assert!(r.text().contains("Invalid key"), "{}", r.text());
        assert!(cookie_value(&r, "tsstore_session").is_none());
    }
    // A form without the pre-session token is refused.
    let r = srv
        .post("/login")
        .body(
            "application/x-www-form-urlencoded",
            form(&[("key", ADMIN), ("csrf", "x")]),
        )
        .send();
    assert_eq!(r.status, 403);
    assert!(cookie_value(&r, "tsstore_session").is_none());
    // The store key signs in, with or without the store named.
    try_login(&srv, &store.key, "s1").unwrap_or_else(|r| panic!("{}", r.text()));
    try_login(&srv, &store.key, "").unwrap_or_else(|r| panic!("{}", r.text()));
    assert!(!srv.log().contains(&store.key), "a store key was logged");
}

#[test]
fn cookie_authenticated_writes_need_the_csrf_token() {
    let srv = Server::start();
    let store = srv.json_store("w");
    let s = login(&srv, ADMIN);
    let insert = |token: Option<&str>| {
        let mut r = srv.post(&store.path("/data")).header("Cookie", &s.header());
        if let Some(t) = token {
            r = r.header("X-CSRF-Token", t);
        }
        r.json(&json!({ "data": { "v": 1 } })).send()
    };
    let r = insert(None);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("CSRF"));
    assert_eq!(insert(Some("not-the-token")).status, 403);
    let ok = insert(Some(&s.csrf));
    assert!(ok.status == 200 || ok.status == 201, "{}", ok.text());
    // Reads need no token.
    let r = srv
        .get(&store.path("/data/newest"))
        .header("Cookie", &s.header())
        .send();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["count"], 1);
    // The admin route too.
    let r = srv
        .post("/api/stores")
        .header("Cookie", &s.header())
        .json(&json!({ "name": "other" }))
        .send();
    assert_eq!(r.status, 403);
    let r = srv
        .post("/api/stores")
        .header("Cookie", &s.header())
        .header("X-CSRF-Token", &s.csrf)
        .json(&json!({ "name": "other" }))
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    // Console forms check the token too.
    let r = srv
        .post("/stores/w/reset")
        .header("Cookie", &s.header())
        .body(
            "application/x-www-form-urlencoded",
            form(&[("csrf", "bad"), ("confirm", "w")]),
        )
        .send();
    assert_eq!(r.status, 403);
    let r = srv
        .post("/stores/w/reset")
        .header("Cookie", &s.header())
        .body(
            "application/x-www-form-urlencoded",
            form(&[("csrf", &s.csrf), ("confirm", "not-w")]),
        )
        .send();
    assert_eq!(r.status, 400, "typed confirmation must match");
    let r = srv
        .post("/create")
        .header("Cookie", &s.header())
        .body(
            "application/x-www-form-urlencoded",
            form(&[("csrf", "bad"), ("name", "x1")]),
        )
        .send();
    assert_eq!(r.status, 403);
}

fn ws_upgrade(srv: &Server, path: &str, cookie: &str, origin: Option<&str>) -> Resp {
    let mut r = srv
        .get(path)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Cookie", cookie);
    if let Some(o) = origin {
        r = r.header("Origin", o);
    }
    // The request sets `Connection: close` too; a 101 answer is read up
    // to the end of its headers.
    r.send_head()
}

#[test]
fn cookie_websocket_upgrade_needs_a_same_origin() {
    let srv = Server::start();
    let store = srv.json_store("live");
    let s = login(&srv, ADMIN);
    let path = store.path("/ws/read?from=now");
    let foreign = ws_upgrade(&srv, &path, &s.header(), Some("http://evil.example"));
    assert_eq!(foreign.status, 403, "{}", foreign.text());
    let none = ws_upgrade(&srv, &path, &s.header(), None);
    assert_eq!(none.status, 403);
    let own = format!("http://{}", srv.addr);
    let ok = ws_upgrade(&srv, &path, &s.header(), Some(&own));
    assert_eq!(ok.status, 101);
}

#[test]
fn a_store_session_sees_only_its_store() {
    let srv = Server::start();
    let a = srv.json_store("alpha");
    srv.json_store("beta");
    let s = login(&srv, &a.key);
    let read = |store: &str| {
        srv.get(&format!("/api/stores/{store}/data/newest"))
            .header("Cookie", &s.header())
            .send()
    };
    assert_eq!(read("alpha").status, 200);
    let r = read("beta");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(get_page(&srv, &s, "/stores/alpha").status, 200);
    assert_eq!(get_page(&srv, &s, "/stores/beta").status, 403);
    assert_eq!(get_page(&srv, &s, "/stores/beta/query").status, 403);
    assert_eq!(get_page(&srv, &s, "/create").status, 403);
    let home = get_page(&srv, &s, "/").text();
    assert!(home.contains("/stores/alpha"));
    assert!(!home.contains("beta"), "overview lists another store");
    // Nor the admin routes.
    let r = srv
        .post("/api/stores")
        .header("Cookie", &s.header())
        .header("X-CSRF-Token", &s.csrf)
        .json(&json!({ "name": "gamma" }))
        .send();
    assert_eq!(r.status, 403);
    let ws = ws_upgrade(
        &srv,
        "/api/stores/beta/ws/read",
        &s.header(),
        Some(&format!("http://{}", srv.addr)),
    );
    assert_eq!(ws.status, 403);
}

#[test]
fn hostile_values_are_escaped_in_pages() {
    let srv = Server::start();
    let s = login(&srv, ADMIN);
    // Echoed form values: the login form's store field, the create form.
    let page = srv.get("/login").send();
    let pre = cookie_value(&page, "tsstore_login_csrf").unwrap();
    let r = post_login(&srv, &pre, "nope", XSS_SCRIPT);
    assert_eq!(r.status, 401);
    let html = r.text();
    assert!(!html.contains(XSS_SCRIPT), "{html}");
    assert!(
        entities(&html).contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    let r = srv
        .post("/create")
        .header("Cookie", &s.header())
        .body(
            "application/x-www-form-urlencoded",
            form(&[("csrf", &s.csrf), ("name", XSS_IMG)]),
        )
        .send();
    assert_eq!(r.status, 400);
    let html = r.text();
    assert!(!html.contains(XSS_IMG), "{html}");
    assert!(
        entities(&html).contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert_no_inline_code("/create (refused)", &html);

    // Stored values: the server renders schema field names; data reaches
    // pages only through the scripts (textContent, tested in Chromium).
    srv.create_store("typed", json!({ "num_blocks": 64, "data_type": "schema" }));
    let r = srv
        .put("/api/stores/typed/schema")
        .admin()
        .json(&json!({ "fields": [{ "index": 1, "name": XSS_IMG, "type": "int32" }] }))
        .send();
    if r.status == 200 {
        let html = get_page(&srv, &s, "/stores/typed/schema").text();
        assert!(!html.contains(XSS_IMG), "{html}");
        assert!(entities(&html).contains("&lt;img src=x onerror=alert(1)&gt;"));
    }
    let json_store = srv.json_store("j");
    let r = srv
        .post(&json_store.path("/data"))
        .key(&json_store.key)
        .json(&json!({ "data": { "msg": XSS_SCRIPT } }))
        .send();
    assert!(r.status < 300, "{}", r.text());
    for path in ["/", "/stores/j", "/stores/j/query"] {
        let html = get_page(&srv, &s, path).text();
        assert!(!html.contains(XSS_SCRIPT), "{path}");
        assert_no_inline_code(path, &html);
    }
}

#[test]
fn calc_figures_match_the_cli() {
    let srv = Server::start();
    let s = login(&srv, ADMIN);
    let r = get_page(
        &srv,
        &s,
        "/create/calc?blocks=1024&data_size=4096&object_size=100&rate=10",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let out = super::common::cli(
        srv.work(),
        &[
            "calc",
            "--blocks",
            "1024",
            "--data-size",
            "4096",
            "--object-size",
            "100",
            "--rate",
            "10",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let cap = v["capacity"].as_u64().unwrap();
    assert!(
        text.contains(&format!("Capacity:          {cap} objects")),
        "{text} vs {v}"
    );
    assert!(
        text.contains(v["retention"].as_str().unwrap()),
        "{text} vs {v}"
    );
}

#[test]
fn cookies_are_secure_under_tls() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cert) = super::common::test_cert(dir.path()) else {
        eprintln!("openssl is not installed: HTTPS console test skipped");
        return;
    };
    let mut srv = Server::builder()
        .env("TSSTORE_TLS_CERT", cert.cert.to_str().unwrap())
        .env("TSSTORE_TLS_KEY", cert.key.to_str().unwrap())
        .start();
    srv.set_tls_client(super::common::TlsClient::trusting(&cert.root));
    let page = srv.get("/login").send();
    assert_eq!(page.status, 200);
    let pre = set_cookies(&page).join("\n");
    assert!(pre.contains("; Secure"), "{pre}");
    let token = cookie_value(&page, "tsstore_login_csrf").unwrap();
    let r = post_login(&srv, &token, ADMIN, "");
    assert_eq!(r.status, 303);
    let c = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("tsstore_session="))
        .unwrap();
    assert!(c.contains("; Secure") && c.contains("HttpOnly"), "{c}");
    // The console answers under the same TLS as the API.
    let cookie = cookie_value(&r, "tsstore_session").unwrap();
    let home = srv
        .get("/")
        .header("Cookie", &format!("tsstore_session={cookie}"))
        .send();
    assert_eq!(home.status, 200);
    assert_eq!(home.header("content-security-policy"), Some(CSP));
}

/// `GET /api/summary` (issue 16, item 6): one request for the overview's
/// figures. Admin key and admin session see every store, a store session
/// only its own, no credentials none; the insert rate follows the inserts
/// themselves (old timestamps here: a rate read off the objects' own
/// timestamps would stay 0).
#[test]
fn summary_figures_scopes_and_a_live_rate() {
    let srv = Server::start();
    let a = srv.json_store("alpha");
    srv.json_store("beta");
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["stores"]
            .as_array()
            .expect("stores")
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };

    let r = srv.get("/api/summary").send();
    assert_eq!(r.status, 401, "{}", r.text());
    let r = srv.get("/api/summary").key(&a.key).send();
    assert_eq!(
        r.status,
        401,
        "a store key alone names no scope: {}",
        r.text()
    );

    let r = srv.get("/api/summary").admin().send();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(names(&v), ["alpha", "beta"]);
    let s = &v["stores"][0];
    for k in [
        "data_type",
        "footprint_bytes",
        "num_blocks",
        "active_blocks",
        "object_count",
        "oldest_timestamp",
        "oldest_time",
        "newest_timestamp",
        "newest_time",
        "insert_rate",
        "links",
    ] {
        assert!(s.get(k).is_some(), "no {k} in {s}");
    }
    assert!(s.get("error").is_none(), "{s}");
    assert_eq!(s["data_type"], "json");
    assert_eq!(s["object_count"], 0);
    assert_eq!(s["insert_rate"], 0.0);
    assert_eq!(s["links"], json!({}));

    let admin = login(&srv, ADMIN);
    let r = srv
        .get("/api/summary")
        .header("Cookie", &admin.header())
        .send();
    assert_eq!(names(&r.json()), ["alpha", "beta"]);

    let session = login(&srv, &a.key);
    let mine = |q: &str| {
        srv.get(&format!("/api/summary{q}"))
            .header("Cookie", &session.header())
            .send()
    };
    let r = mine("");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(names(&r.json()), ["alpha"]);
    assert_eq!(mine("?store=alpha").status, 200);
    assert_eq!(mine("?store=beta").status, 403);
    let r = srv.get("/api/summary?store=gamma").admin().send();
    assert_eq!(r.status, 404, "{}", r.text());
    let r = srv.get("/api/summary?store=beta").admin().send();
    assert_eq!(names(&r.json()), ["beta"]);

    // Inserting (timestamps of 1970) while the summary is read: the rate
    // goes above 0; the object count follows.
    let started = std::time::Instant::now();
    let mut n = 0;
    let mut rate = 0.0;
    while started.elapsed() < std::time::Duration::from_secs(10) {
        for _ in 0..10 {
            n += 1;
            let body = json!({ "timestamp": n, "data": { "n": n } });
            let r = srv.post(&a.path("/data")).key(&a.key).json(&body).send();
            assert_eq!(r.status, 201, "{}", r.text());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let v = mine("?store=alpha").json();
        assert_eq!(v["stores"][0]["object_count"], n);
        rate = v["stores"][0]["insert_rate"].as_f64().unwrap();
        if rate > 0.0 {
            break;
        }
    }
    assert!(rate > 0.0, "insert rate still {rate} after {n} inserts");
}
