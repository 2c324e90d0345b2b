//! Sign-in and sign-out.
//!
//! The login form is CSRF-safe before any session exists by double submit:
//! `GET /login` sets a random `tsstore_login_csrf` cookie (HttpOnly,
//! SameSite=Strict, Path=/login) and puts the same value in a hidden field;
//! `POST /login` accepts only when both match. A key is checked exactly as
//! the API checks it: the admin key by constant-time comparison, a store
//! key through the [`crate::keys::KeyCache`] (argon2, off the async
//! workers). The key itself is never stored, logged or echoed. Each
//! sign-in takes one of the client's attempts
//! ([`crate::throttle`]): after too many failures the form answers
//! 429 with `Retry-After`, without looking at the key.

use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{cookie_header, render, Viewer};
use crate::auth::ClientOf;
use crate::keys;
use crate::session::{self, Scope, LOGIN_COOKIE};
use crate::state::AppState;
use crate::throttle::Client;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    error: Option<&'a str>,
    store: &'a str,
}

fn login_page(state: &AppState, status: StatusCode, error: Option<&str>, store: &str) -> Response {
    let token = session::random_token();
    let page = LoginPage {
        csrf: &token,
        error,
        store,
    };
    (
        status,
        [cookie_header(state, LOGIN_COOKIE, &token, "/login", None)],
        render(&page),
    )
        .into_response()
}

/// `GET /login`.
pub async fn login_show(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.console.sessions.from_headers(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login_page(&state, StatusCode::OK, None, "")
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    key: String,
    /// For a store key: which store (optional; every store is tried).
    #[serde(default)]
    store: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login`.
pub async fn login_submit(
    State(state): State<AppState>,
    ClientOf(client): ClientOf,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !session::tokens_equal(&expected, &form.csrf) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired. Please try again."),
            &form.store,
        );
    }
    let store = form.store.trim().to_string();
    let key = form.key.trim();
    if key.is_empty() {
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Invalid key: use the admin key or a store API key."),
            &store,
        );
    }
    // One failure per sign-in, however many stores the key is tried on.
    if let Err(t) = state.throttle.check(client) {
        tracing::info!("console: sign-in refused, too many failures");
        let mut res = login_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed sign-ins: wait a little, then try again."),
            &store,
        );
        res.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, t.retry_after.into());
        return res;
    }
    let Some(scope) = verify(&state, client, key, &store).await else {
        state.throttle.fail(client);
        tracing::info!("console: sign-in refused");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Invalid key: use the admin key or a store API key."),
            &store,
        );
    };
    tracing::info!(scope = ?scope, "console: signed in");
    let token = state.console.sessions.create(scope);
    let target = "/";
    // Two Set-Cookie headers: appended, not replaced.
    (
        axum::response::AppendHeaders([
            cookie_header(&state, session::COOKIE, &token, "/", None),
            cookie_header(&state, LOGIN_COOKIE, "", "/login", Some(0)),
        ]),
        Redirect::to(target),
    )
        .into_response()
}

/// The scope `key` opens: the admin key, or a key of `store` (of any
/// store when `store` is empty).
async fn verify(state: &AppState, client: Client, key: &str, store: &str) -> Option<Scope> {
    if let Some(admin) = &state.config.admin_key {
        if admin.len() == key.len() && bool::from(admin.as_bytes().ct_eq(key.as_bytes())) {
            return Some(Scope::Admin);
        }
    }
    if !keys::well_formed(key) {
        return None;
    }
    let candidates: Vec<String> = if store.is_empty() {
        state.stores.list()
    } else if crate::store::validate_name(store).is_ok() && state.stores.exists(store) {
        vec![store.to_string()]
    } else {
        return None;
    };
    let _turn = state.console.sign_in.acquire().await.ok()?;
    for name in candidates {
        let dir = state.stores.dir(&name);
        let gate = || state.throttle.check(client).is_ok();
        if state.keys.verify(&name, dir, key, gate).await.is_ok() {
            return Some(Scope::Store(name));
        }
    }
    None
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session.
pub async fn logout_submit(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !viewer.csrf_ok(&form.csrf) {
        return super::error_page(StatusCode::FORBIDDEN, "invalid CSRF token");
    }
    state.console.sessions.remove(&viewer.token);
    (
        [cookie_header(&state, session::COOKIE, "", "/", Some(0))],
        Redirect::to("/login"),
    )
        .into_response()
}
