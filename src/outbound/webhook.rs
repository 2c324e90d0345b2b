//! One webhook POST: an `http://` or `https://` URL dialled under the
//! outbound [`policy`](super::policy), the request written by hyper's
//! HTTP/1.1 client over the TCP stream (and rustls session, ring provider,
//! the config of [`super::tls`]) dialled here, and the answer's status
//! classified. The queue and retries of alert rules are
//! `crate::rules::webhook`.
//!
//! Invariants:
//! - The policy decides on the resolved addresses at every attempt, for
//!   the role of whoever created the rule; only addresses that passed are
//!   connected to (as outbound connections do, see [`super::policy`]).
//! - One attempt, whole (resolve, connect, TLS, request, response head),
//!   takes at most the timeout given; the connection is closed after it
//!   (no pool: alerts are rare).
//! - What a client sets is bounded: a URL of at most [`MAX_URL`] bytes,
//!   at most [`MAX_HEADERS`] headers, names of at most [`MAX_HEADER_NAME`]
//!   and values of at most [`MAX_HEADER_VALUE`] bytes, none of
//!   [`RESERVED`]. Header values are secrets: no error text of this module
//!   carries one, and the URL only ever reaches the log through
//!   [`crate::redact::url`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::http::{header, HeaderName, HeaderValue, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::policy::{split_authority, Policy, Refusal, ResolveError, Role, Target, REFUSED};
use super::tls::client_tls;

/// The longest webhook URL.
pub const MAX_URL: usize = 2048;
/// The most `webhook_headers`.
pub const MAX_HEADERS: usize = 16;
/// The longest header name.
pub const MAX_HEADER_NAME: usize = 64;
/// The longest header value.
pub const MAX_HEADER_VALUE: usize = 1024;

/// Headers the server sets itself (from the URL and the body) or that
/// belong to the connection, not to the request: refused in
/// `webhook_headers`.
pub const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

/// A checked webhook URL: where to dial and what to ask for.
#[derive(Debug, Clone)]
pub struct Url {
    pub target: Target,
    /// The `Host` header: the URL's authority.
    host_header: String,
    /// The request target: path and query (`/` if none).
    path: String,
}

/// The message of every refused URL (names no part of it).
pub const BAD_URL: &str =
    "invalid webhook: must be an http:// or https:// URL with a host and no credentials, at most 2048 characters";

impl Url {
    /// Parses an `http://` or `https://` URL with a host and a valid port,
    /// without userinfo (credentials go in `webhook_headers`, whose values
    /// are never shown).
    pub fn parse(url: &str) -> Result<Url, String> {
        let bad = || BAD_URL.to_string();
        if url.len() > MAX_URL {
            return Err(bad());
        }
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') {
            return Err(bad());
        }
        let hp = authority.as_str();
        let (host, port) = split_authority(hp, if tls { 443 } else { 80 }).ok_or_else(bad)?;
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_string();
        Ok(Url {
            target: Target { host, port, tls },
            host_header: hp.to_string(),
            path,
        })
    }
}

/// Checks `webhook_headers`: names and values HTTP allows, within the
/// bounds, none reserved. The messages name the header, never its value.
pub fn check_headers(h: &BTreeMap<String, String>) -> Result<(), String> {
    if h.len() > MAX_HEADERS {
        return Err(format!(
            "invalid webhook_headers: at most {MAX_HEADERS} headers"
        ));
    }
    for (k, v) in h {
        let shown: String = k.chars().take(MAX_HEADER_NAME).collect();
        if k.is_empty()
            || k.len() > MAX_HEADER_NAME
            || HeaderName::from_bytes(k.as_bytes()).is_err()
        {
            return Err(format!(
                "invalid webhook header {shown:?}: a header name of at most {MAX_HEADER_NAME} characters"
            ));
        }
        if v.len() > MAX_HEADER_VALUE || HeaderValue::from_str(v).is_err() {
            return Err(format!(
                "invalid webhook header {shown:?}: a value of at most {MAX_HEADER_VALUE} visible ASCII characters"
            ));
        }
        if reserved(k) {
            return Err(format!(
                "invalid webhook header {shown:?}: set by the server"
            ));
        }
    }
    Ok(())
}

/// True if `webhook_headers` may not set `name`.
pub fn reserved(name: &str) -> bool {
    RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r))
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered(u16),
    /// Not worth repeating: a 4xx (or a redirect, not followed), or the
    /// policy refused every address. The text is for `last_webhook_error`.
    Final(String),
    /// Worth repeating: no connection, a timeout, a 5xx.
    Retry(String),
}

/// Why the policy refused (for the log only; the client sees [`REFUSED`]).
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub Refusal);

/// Whether a client's webhook URL is refused by the policy for `role` now:
/// `Err` only when the name resolved (within `within`) and no address
/// passed. A name that does not resolve yet is let through: every attempt
/// checks again.
pub async fn check_policy(
    policy: &Policy,
    role: Role,
    url: &Url,
    within: Duration,
) -> Result<(), Refused> {
    match tokio::time::timeout(within, policy.resolve(role, &url.target)).await {
        Ok(Err(ResolveError::Refused(r))) => Err(Refused(r)),
        _ => Ok(()),
    }
}

/// One POST of `body` (JSON) to `url` with `headers`, all within `timeout`.
/// A policy refusal is returned with its reason for the log.
pub async fn post(
    policy: &Policy,
    role: Role,
    url: &Url,
    headers: &BTreeMap<String, String>,
    body: String,
    timeout: Duration,
) -> (Outcome, Option<Refusal>) {
    match tokio::time::timeout(timeout, attempt(policy, role, url, headers, body)).await {
        Ok(r) => r,
        Err(_) => (Outcome::Retry(format!("timed out after {timeout:?}")), None),
    }
}

async fn attempt(
    policy: &Policy,
    role: Role,
    url: &Url,
    headers: &BTreeMap<String, String>,
    body: String,
) -> (Outcome, Option<Refusal>) {
    let addrs = match policy.resolve(role, &url.target).await {
        Ok(a) => a,
        Err(ResolveError::Refused(r)) => return (Outcome::Final(REFUSED.into()), Some(r)),
        Err(ResolveError::Unresolved(m)) => {
            return (Outcome::Retry(format!("cannot resolve host: {m}")), None)
        }
    };
    let req = match request(url, headers, body) {
        Ok(r) => r,
        Err(e) => return (Outcome::Final(e), None),
    };
    let tcp = match connect_any(&addrs).await {
        Ok(s) => s,
        Err(e) => return (Outcome::Retry(format!("connect failed: {e}")), None),
    };
    let status = if url.target.tls {
        let cfg = match client_tls(Vec::new()) {
            Ok(c) => c,
            Err(e) => return (Outcome::Retry(format!("TLS: {e}")), None),
        };
        let Ok(name) = rustls::pki_types::ServerName::try_from(url.target.host.clone()) else {
            return (Outcome::Final("TLS: invalid server name".into()), None);
        };
        match tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
        {
            Ok(tls) => exchange(tls, req).await,
            Err(e) => return (Outcome::Retry(format!("TLS: {e}")), None),
        }
    } else {
        exchange(tcp, req).await
    };
    let outcome = match status {
        Err(e) => Outcome::Retry(format!("HTTP: {e}")),
        Ok(s) if (200..300).contains(&s) => Outcome::Delivered(s),
        Ok(s) if s >= 500 => Outcome::Retry(format!("HTTP status {s}")),
        Ok(s) if (300..400).contains(&s) => {
            Outcome::Final(format!("HTTP status {s} (redirects are not followed)"))
        }
        Ok(s) => Outcome::Final(format!("HTTP status {s}")),
    };
    (outcome, None)
}

/// The request: `POST <path>`, `Host` from the URL, the JSON body, then
/// the rule's headers.
fn request(
    url: &Url,
    headers: &BTreeMap<String, String>,
    body: String,
) -> Result<Request<String>, String> {
    let mut b = Request::post(url.path.as_str())
        .header(header::HOST, url.host_header.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .header(
            header::USER_AGENT,
            concat!("tsstore/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers.iter().filter(|(k, _)| !reserved(k)) {
        // Checked at create; a bad one from an edited file is an error
        // that names the header, not its value.
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            return Err(format!("invalid webhook header {k:?}"));
        };
        b = b.header(k, v);
    }
    b.body(body)
        .map_err(|_| "invalid webhook request".to_string())
}

/// Connects to the first of `addrs` that answers.
async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

/// Sends `req` over `io` (HTTP/1.1) and returns the answer's status.
async fn exchange<S>(io: S, req: Request<String>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    // The connection is driven here, beside the request, not on a task of
    // its own: when the attempt times out, dropping this future closes the
    // socket; nothing outlives the attempt.
    let mut conn = std::pin::pin!(conn);
    let mut answer = std::pin::pin!(sender.send_request(req));
    let answer = tokio::select! {
        a = &mut answer => a,
        ended = &mut conn => match ended {
            // The connection ended (the peer closed it after answering):
            // the answer, if one came, is waiting; else this is an error.
            Ok(()) => answer.await,
            Err(e) => Err(e),
        },
    };
    answer
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials() {
        let u = Url::parse("https://Hooks.Example.com/a/b?x=1").unwrap();
        assert_eq!(
            (u.target.host.as_str(), u.target.port, u.target.tls),
            ("hooks.example.com", 443, true)
        );
        assert_eq!(
            (u.host_header.as_str(), u.path.as_str()),
            ("Hooks.Example.com", "/a/b?x=1")
        );
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.target.port, u.target.tls, u.path.as_str()),
            (8080, false, "/")
        );
        let u = Url::parse("http://[::1]:9/x").unwrap();
        assert_eq!(
            (u.target.host.as_str(), u.host_header.as_str()),
            ("::1", "[::1]:9")
        );
        let long = format!("http://h/{}", "a".repeat(MAX_URL));
        for bad in [
            "ws://h/x",
            "ftp://h",
            "http://",
            "http://user:pw@h/x",
            "http://h:0/",
            "http://h:99999/",
            "/relative",
            "",
            long.as_str(),
        ] {
            assert_eq!(Url::parse(bad).unwrap_err(), BAD_URL, "{bad}");
        }
    }

    /// A receiver that accepts one connection, reads the request head and
    /// answers `status`; returns its port.
    async fn answer_once(status: u16) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let _ = s.read(&mut buf).await;
            let r = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
            let _ = s.write_all(r.as_bytes()).await;
        });
        port
    }

    #[tokio::test]
    async fn each_attempt_is_judged_by_the_policy_and_classified() {
        use crate::outbound::policy::OutboundConfig;
        let strict = Policy::new(&OutboundConfig::default());
        let none = BTreeMap::new();
        let t = Duration::from_secs(5);
        // A store role may not reach the loopback, at any attempt: the
        // dial never happens (nothing listens on port 9 either way).
        let u = Url::parse("http://127.0.0.1:9/x").unwrap();
        let (o, why) = post(&strict, Role::Store, &u, &none, "{}".into(), t).await;
        assert_eq!(
            (o, why),
            (Outcome::Final(REFUSED.into()), Some(Refusal::Loopback))
        );
        for (status, want) in [
            (204, Outcome::Delivered(204)),
            (503, Outcome::Retry("HTTP status 503".into())),
            (404, Outcome::Final("HTTP status 404".into())),
            (
                302,
                Outcome::Final("HTTP status 302 (redirects are not followed)".into()),
            ),
        ] {
            let port = answer_once(status).await;
            let u = Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
            let (o, _) = post(&strict, Role::Admin, &u, &none, "{}".into(), t).await;
            assert_eq!(o, want, "{status}");
        }
        // Nothing listening: retried.
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let u = Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        let (o, _) = post(&strict, Role::Admin, &u, &none, "{}".into(), t).await;
        assert!(
            matches!(&o, Outcome::Retry(e) if e.starts_with("connect failed")),
            "{o:?}"
        );
        // A peer that never answers: the attempt's timeout, retried.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let u = Url::parse(&format!("http://{}/x", l.local_addr().unwrap())).unwrap();
        let (o, _) = post(
            &strict,
            Role::Admin,
            &u,
            &none,
            "{}".into(),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(o, Outcome::Retry("timed out after 300ms".into()));
        // https:// to a plain HTTP peer: the TLS handshake fails, retried.
        let port = answer_once(200).await;
        let u = Url::parse(&format!("https://127.0.0.1:{port}/x")).unwrap();
        let (o, _) = post(&strict, Role::Admin, &u, &none, "{}".into(), t).await;
        assert!(
            matches!(&o, Outcome::Retry(e) if e.starts_with("TLS:")),
            "{o:?}"
        );
    }

    #[test]
    fn headers_are_bounded_and_reserved_ones_refused() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(check_headers(&one("Authorization", "Bearer s3cret")).is_ok());
        for k in [
            "Host",
            "content-length",
            "Content-Type",
            "Connection",
            "Transfer-Encoding",
        ] {
            let e = check_headers(&one(k, "x")).unwrap_err();
            assert!(e.ends_with("set by the server"), "{k}: {e}");
        }
        let e = check_headers(&one("a b", "x")).unwrap_err();
        assert!(e.contains("header name"), "{e}");
        let e = check_headers(&one(&"a".repeat(MAX_HEADER_NAME + 1), "x")).unwrap_err();
        assert!(e.contains("header name"), "{e}");
        let e = check_headers(&one("X-Key", "line\nbreak-secret")).unwrap_err();
        assert!(e.contains("value") && !e.contains("secret"), "{e}");
        let e = check_headers(&one("X-Key", &"v".repeat(MAX_HEADER_VALUE + 1))).unwrap_err();
        assert!(e.contains("value"), "{e}");
        let many: BTreeMap<String, String> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-{i}"), "v".to_string()))
            .collect();
        assert!(check_headers(&many).unwrap_err().contains("at most"));
    }
}
