//! Secrets kept out of the log. A URL carries keys in its userinfo
//! (`user:pass@`) and its query (`?api_key=`, the way WebSocket clients
//! authenticate): every URL the server logs goes through [`url`], which
//! replaces the userinfo and each query value with `***` and drops the
//! fragment, keeping what an operator needs (scheme, host, port, path,
//! parameter names). The HTTP trace logs request URIs through
//! [`http_span`] for the same reason, and [`log_filter`] keeps the one
//! dependency that logs whole requests (tungstenite's client handshake, at
//! trace level) quiet whatever `TSSTORE_LOG` asks for.

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// `s` (an absolute URL or a request URI) fit for the log.
pub fn url(s: &str) -> String {
    let s = s.split('#').next().unwrap_or_default();
    let (base, query) = match s.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (s, None),
    };
    let mut out = String::with_capacity(s.len());
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            out.push_str(scheme);
            out.push_str("://");
            match authority.rfind('@') {
                Some(at) => {
                    out.push_str(MASK);
                    out.push_str(&authority[at..]);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    if let Some(q) = query {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) => format!("{k}={MASK}"),
                None if p.is_empty() => String::new(),
                // A bare token may be the secret itself.
                None => MASK.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Log targets that write whole requests (URL, headers) at trace level.
const REQUEST_DUMPERS: &[&str] = &["tungstenite::handshake::client"];

/// `filter` with [`REQUEST_DUMPERS`] capped at debug: more specific than
/// any level set for a whole crate or for everything.
pub fn log_filter(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    REQUEST_DUMPERS
        .iter()
        .fold(filter, |f, t| match format!("{t}=debug").parse() {
            Ok(d) => f.add_directive(d),
            Err(_) => f,
        })
}

/// The span of the HTTP trace layer: tower-http's default fields, the URI
/// redacted.
pub fn http_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %req.method(),
        uri = %url(&req.uri().to_string()),
        version = ?req.version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_query_values_are_masked() {
        for (given, want) in [
            ("ws://h:9/in", "ws://h:9/in"),
            (
                "wss://user:hunter2@h.example:443/x?api_key=tsstore_abc&from=0",
                "wss://***@h.example:443/x?api_key=***&from=***",
            ),
            ("ws://tok@h?secret", "ws://***@h?***"),
            ("ws://[::1]:9/p?a=1&&b=", "ws://[::1]:9/p?a=***&&b=***"),
            ("ws://h/p@q?k=v#frag", "ws://h/p@q?k=***"),
            (
                "/api/stores/s/ws/read?api_key=k1&from=now",
                "/api/stores/s/ws/read?api_key=***&from=***",
            ),
            ("/health", "/health"),
            ("", ""),
        ] {
            assert_eq!(url(given), want, "{given}");
        }
    }
}
