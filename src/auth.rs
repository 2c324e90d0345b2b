//! Authentication: the admin key for store creation, store API keys for
//! everything under `/api/stores/:store/` (the admin key opens those too).
//!
//! Every key given is checked through the per-client
//! [`Throttle`](super::throttle::Throttle): a client that failed too often
//! gets 429 with `Retry-After`, unverified, until its bucket refills. A
//! store key verified before is the exception: it passes on a comparison.
//!
//! A store key is taken from `X-API-Key`, then `Authorization: Bearer`, then
//! the `api_key` query parameter, the first one present. Keys are verified
//! through the [`crate::keys::KeyCache`]; comparisons are constant-time.
//!
//! With no key at all, the web console's session cookie is a credential
//! too: an admin session opens everything, a store session its store.
//! Because a browser sends cookies by itself, a cookie-authenticated
//! request that changes state must carry the session's CSRF token in
//! `X-CSRF-Token`, and a cookie-authenticated WebSocket upgrade must come
//! from a page of this server (`Origin` matching `Host`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::StatusCode;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::keys::{self, Rejection};
use crate::session::Scope;
use crate::state::AppState;
use crate::store::{self, Store};
use crate::throttle::{Client, Throttled};

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let q = parts.uri.query()?;
    url_pairs(q).find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Decoded `key=value` pairs of a query string.
pub fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, msg)
}

/// True if the request carries the admin key (header or query).
fn admin_key_of(parts: &Parts) -> Option<String> {
    header(parts, "x-admin-key").or_else(|| query_param(parts, "admin_key"))
}

fn admin_matches(state: &AppState, given: &str) -> bool {
    match &state.config.admin_key {
        Some(k) => k.len() == given.len() && bool::from(k.as_bytes().ct_eq(given.as_bytes())),
        None => false,
    }
}

/// The client a request comes from, for the [`Throttle`](super::throttle::Throttle).
pub fn client_of(parts: &Parts) -> Client {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(Client::Shared, |c| Client::of_ip(c.0.ip()))
}

/// The requesting client as an extractor (never fails).
pub struct ClientOf(pub Client);

impl<S: Send + Sync> FromRequestParts<S> for ClientOf {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientOf, Self::Rejection> {
        Ok(ClientOf(client_of(parts)))
    }
}

/// Checks a given admin key through the throttle: `Ok(true)` if it is the
/// admin key, `Ok(false)` if not (a failure counted), 429 if the client
/// has no failure left.
pub fn check_admin(state: &AppState, client: Client, given: &str) -> Result<bool, ApiError> {
    state.throttle.check(client).map_err(ApiError::throttled)?;
    if admin_matches(state, given) {
        return Ok(true);
    }
    state.throttle.fail(client);
    Ok(false)
}

/// Why a store key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Not the shape of a store key.
    Malformed,
    /// Not a key of the store.
    Invalid,
    /// The store's key file is missing or unreadable.
    Unavailable,
    /// The client has no failure left: not verified at all.
    Throttled(Throttled),
}

/// Checks a store key the same way on every entry point (REST, WebSocket
/// upgrades, the Unix socket): a key verified before passes at the cost of
/// a comparison; any other is looked at only while the client has
/// failures left (see [`super::throttle`]), checked again when its hash's
/// turn comes (see [`KeyCache::verify`]); a refused key counts as a
/// failure.
///
/// [`KeyCache::verify`]: crate::keys::KeyCache::verify
pub async fn check_store_key(
    state: &AppState,
    client: Client,
    name: &str,
    key: &str,
) -> Result<String, KeyRefusal> {
    let dir = state.stores.dir(name);
    if keys::well_formed(key) {
        if let Some(id) = state.keys.check_cached(name, &dir, key) {
            return Ok(id);
        }
    }
    state
        .throttle
        .check(client)
        .map_err(KeyRefusal::Throttled)?;
    let refusal = if keys::well_formed(key) {
        let mut throttled = None;
        let gate = || match state.throttle.check(client) {
            Ok(()) => true,
            Err(t) => {
                throttled = Some(t);
                false
            }
        };
        match state.keys.verify(name, dir, key, gate).await {
            Ok(id) => return Ok(id),
            Err(Rejection::Refused) => {
                return Err(KeyRefusal::Throttled(
                    throttled.unwrap_or(Throttled { retry_after: 1 }),
                ))
            }
            Err(Rejection::Invalid) => KeyRefusal::Invalid,
            Err(Rejection::Unavailable) => KeyRefusal::Unavailable,
        }
    } else {
        KeyRefusal::Malformed
    };
    state.throttle.fail(client);
    Err(refusal)
}

fn forbidden(msg: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, msg)
}

/// True if `Origin` names the host the request was sent to.
pub fn same_origin(parts: &Parts) -> bool {
    let (Some(origin), Some(host)) = (header(parts, "origin"), header(parts, "host")) else {
        return false;
    };
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| r.eq_ignore_ascii_case(&host))
}

/// The scope of the console session named by the request's cookie, if
/// any, once the request passed the cookie's extra checks (CSRF token for
/// state-changing methods, same origin for WebSocket upgrades).
pub fn cookie_scope(parts: &Parts, state: &AppState) -> Result<Option<Scope>, ApiError> {
    let Some((_, session)) = state.console.sessions.from_headers(&parts.headers) else {
        return Ok(None);
    };
    let is_upgrade = header(parts, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if is_upgrade && !same_origin(parts) {
        return Err(forbidden("cross-origin WebSocket refused"));
    }
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !safe {
        let given = header(parts, "x-csrf-token").unwrap_or_default();
        if !session.csrf_ok(&given) {
            return Err(forbidden("missing or invalid CSRF token"));
        }
    }
    Ok(Some(session.scope))
}

/// A request authorised with the admin key (or an admin console session).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        let Some(given) = admin_key_of(parts) else {
            return match cookie_scope(parts, state)? {
                Some(Scope::Admin) => Ok(Admin),
                Some(Scope::Store(_)) => Err(forbidden("admin session required")),
                None => Err(unauthorized("admin key required")),
            };
        };
        if check_admin(state, client_of(parts), &given)? {
            Ok(Admin)
        } else {
            Err(unauthorized("invalid admin key"))
        }
    }
}

/// A request authorised by the admin key or a console session, with the
/// stores it may see: every one (admin), or the session's store.
pub struct Scoped(pub Scope);

impl FromRequestParts<AppState> for Scoped {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Scoped, ApiError> {
        let Some(given) = admin_key_of(parts) else {
            return match cookie_scope(parts, state)? {
                Some(scope) => Ok(Scoped(scope)),
                None => Err(unauthorized("admin key or console session required")),
            };
        };
        if check_admin(state, client_of(parts), &given)? {
            Ok(Scoped(Scope::Admin))
        } else {
            Err(unauthorized("invalid admin key"))
        }
    }
}

/// A request authorised for the store named in its path.
pub struct StoreAccess {
    pub name: String,
    pub store: Arc<Store>,
    /// Authorised by the admin key or an admin console session.
    pub admin: bool,
}

impl FromRequestParts<AppState> for StoreAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<StoreAccess, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("store name required"))?;
        let name = params
            .iter()
            .find(|(k, _)| *k == "store")
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| ApiError::bad_request("store name required"))?;
        if let Err(e) = store::validate_name(&name) {
            return Err(ApiError::bad_request(e.to_string()));
        }
        // The admin key opens every store; a wrong one is a failure (and
        // the store key, if any, is checked next).
        let admin = match admin_key_of(parts) {
            Some(k) => check_admin(state, client_of(parts), &k)?,
            None => false,
        };
        if !admin {
            let key = header(parts, "x-api-key")
                .or_else(|| {
                    header(parts, "authorization")
                        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
                })
                .or_else(|| query_param(parts, "api_key"));
            let Some(key) = key else {
                return match cookie_scope(parts, state)? {
                    Some(scope) if scope.opens(&name) => {
                        open(state, name, scope == Scope::Admin).await
                    }
                    Some(_) => Err(forbidden("this session cannot open that store")),
                    None => Err(unauthorized("API key required")),
                };
            };
            // A well-formed key for a store that does not exist: 404, as
            // before any key is looked at.
            if keys::well_formed(&key) && !state.stores.known(&name).await {
                return Err(ApiError::not_found("store not found"));
            }
            match check_store_key(state, client_of(parts), &name, &key).await {
                Ok(_) => {}
                Err(KeyRefusal::Malformed) => return Err(unauthorized("invalid API key format")),
                Err(KeyRefusal::Invalid) => return Err(unauthorized("invalid API key")),
                Err(KeyRefusal::Unavailable) => return Err(unauthorized("authentication failed")),
                Err(KeyRefusal::Throttled(t)) => return Err(ApiError::throttled(t)),
            }
        }
        open(state, name, admin).await
    }
}

/// Opens store `name` (authorised by the caller): 404 if it does not
/// exist, 503 while it is busy (recovering, being created, reset or
/// deleted).
async fn open(state: &AppState, name: String, admin: bool) -> Result<StoreAccess, ApiError> {
    let store = state.stores.open(&name).await?;
    Ok(StoreAccess { name, store, admin })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let v: Vec<_> = url_pairs("a=1&filter=BUILDING+A&x=%2Fp%3F&bad=%zz&e").collect();
        assert_eq!(v[1].1, "BUILDING A");
        assert_eq!(v[2].1, "/p?");
        assert_eq!(v[3].1, "%zz");
        assert_eq!(v[4], ("e".into(), "".into()));
        assert_eq!(percent_decode("%4"), "%4");
    }
}
