//! Console sessions: an in-memory map from a random token (the
//! `tsstore_session` cookie) to what it may open and its CSRF token.
//!
//! Invariants: a token is 256 random bits from the OS (two v4 UUIDs' worth
//! of randomness, hex); the key a person signed in with is never kept, only
//! its scope; a session idle for [`IDLE`] is gone. Sessions do not survive
//! a restart (signing in again is the recovery).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// The session cookie.
pub const COOKIE: &str = "tsstore_session";
/// The pre-session cookie of the login form (double-submit CSRF token).
pub const LOGIN_COOKIE: &str = "tsstore_login_csrf";
/// A session unused this long expires.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the least recently used one goes first.
const MAX_SESSIONS: usize = 1024;

/// What a session may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Signed in with the admin key: every store, store creation.
    Admin,
    /// Signed in with this store's API key: that store only.
    Store(String),
}

impl Scope {
    /// True if this scope opens store `name`.
    pub fn opens(&self, name: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Store(s) => s == name,
        }
    }

    pub fn is_admin(&self) -> bool {
        *self == Scope::Admin
    }
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub scope: Scope,
    /// Sent back by state-changing requests (header or form field).
    pub csrf: String,
    last_seen: Instant,
}

impl Session {
    /// True if `given` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, given: &str) -> bool {
        tokens_equal(&self.csrf, given)
    }
}

/// Constant-time comparison of two tokens.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// 256 random bits as 64 hex digits.
pub fn random_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let c = uuid::Uuid::new_v4();
    // A v4 UUID has 122 random bits; three give more than 256.
    let mut s = String::with_capacity(96);
    for u in [a, b, c] {
        s.push_str(&u.simple().to_string());
    }
    s.truncate(64);
    s
}

/// Every live session.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::with_idle(IDLE)
    }
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// Sessions that expire after `idle` unused.
    pub fn with_idle(idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// Starts a session; returns its token.
    pub fn create(&self, scope: Scope) -> String {
        self.create_at(scope, Instant::now())
    }

    /// [`Sessions::create`] at the instant `now`.
    fn create_at(&self, scope: Scope, now: Instant) -> String {
        let token = random_token();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let idle = self.idle;
        map.retain(|_, s| now.duration_since(s.last_seen) < idle);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            Session {
                scope,
                csrf: random_token(),
                last_seen: now,
            },
        );
        token
    }

    /// The live session of `token`, touched (its idle time restarts).
    pub fn get(&self, token: &str) -> Option<Session> {
        self.get_at(token, Instant::now())
    }

    /// [`Sessions::get`] at the instant `now`.
    fn get_at(&self, token: &str, now: Instant) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get_mut(token)?;
        if now.duration_since(s.last_seen) >= self.idle {
            map.remove(token);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    /// Ends every session of a store (it was deleted).
    pub fn remove_store(&self, name: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.scope != Scope::Store(name.to_string()));
    }

    /// The session named by the request's cookie, with its token.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let token = cookie(headers, COOKIE)?;
        let s = self.get(&token)?;
        Some((token, s))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, `Secure` under TLS.
/// `max_age` 0 deletes the cookie; `None` makes it last the browser session.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    secure: bool,
    max_age: Option<u64>,
) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The console's state kept in `AppState`.
pub struct Console {
    pub sessions: Sessions,
    /// When the server started (uptime on the overview).
    pub started: Instant,
    /// One sign-in verified at a time: a store key without a store name
    /// is tried against every store (an argon2 hash each), so parallel
    /// sign-ins must not take every core.
    pub sign_in: tokio::sync::Semaphore,
}

impl Console {
    pub fn new() -> Console {
        Console {
            sessions: Sessions::new(),
            started: Instant::now(),
            sign_in: tokio::sync::Semaphore::new(1),
        }
    }
}

impl Default for Console {
    fn default() -> Console {
        Console::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn sessions_scope_and_removal() {
        let s = Sessions::new();
        let t = s.create(Scope::Store("a".into()));
        let got = s.get(&t).unwrap();
        assert!(got.scope.opens("a"));
        assert!(!got.scope.opens("b"));
        assert!(got.csrf_ok(&got.csrf.clone()));
        assert!(!got.csrf_ok(""));
        s.remove_store("a");
        assert!(s.get(&t).is_none());
        assert!(s.get("nope").is_none());
    }

    #[test]
    fn idle_sessions_expire() {
        // The clock is stepped, not slept: a slow machine (qemu) cannot
        // stretch the gaps past the idle time.
        let ms = Duration::from_millis;
        let s = Sessions::with_idle(ms(30));
        let t0 = Instant::now();
        let t = s.create_at(Scope::Admin, t0);
        assert!(s.get_at(&t, t0).is_some());
        assert!(s.get_at(&t, t0 + ms(20)).is_some());
        assert!(
            s.get_at(&t, t0 + ms(40)).is_some(),
            "use restarts the idle time"
        );
        assert!(s.get_at(&t, t0 + ms(69)).is_some());
        assert!(
            s.get_at(&t, t0 + ms(99)).is_none(),
            "expired after the idle time"
        );
        assert!(s.get_at(&t, t0 + ms(100)).is_none(), "and stays gone");
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; tsstore_session=xyz ; b=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(COOKIE, "v", "/", true, None);
        assert_eq!(
            c,
            "tsstore_session=v; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
    }
}
