//! The built-in web console: server-rendered pages (askama templates in
//! `web/templates/`, compiled into the binary) and static assets
//! (`web/static/`, embedded with rust-embed), served under `/`.
//!
//! Invariants:
//! - Every console response carries [`CSP`] (no inline script or style is
//!   ever needed), `X-Content-Type-Options: nosniff` and
//!   `Referrer-Policy: no-referrer`; pages are `Cache-Control: no-store`.
//! - Pages need a session ([`session`]); a store session sees its store
//!   only. Keys are taken only from the login form's body: never from a
//!   URL, never written to a log, a page or the browser's storage.
//! - Every state-changing form carries the session's CSRF token, checked
//!   here; the JavaScript sends it as `X-CSRF-Token` to the REST API
//!   (see [`crate::auth`]).
//! - Templates escape HTML by default; stored values reach the page only
//!   through them or through `textContent` in the scripts.

use std::sync::Arc;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::registry;
use crate::state::AppState;
use crate::store::Store;

pub mod assets;
pub mod create;
pub mod format;
pub mod login;
pub mod overview;
pub mod store_pages;

use crate::session::{self, Scope, Session};

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::overview_show))
        .route("/login", get(login::login_show).post(login::login_submit))
        .route("/logout", post(login::logout_submit))
        .route(
            "/create",
            get(create::create_show).post(create::create_submit),
        )
        .route("/create/calc", get(create::create_calc))
        .route("/stores/{name}", get(store_pages::store_show))
        .route("/stores/{name}/reset", post(store_pages::store_reset))
        .route("/stores/{name}/delete", post(store_pages::store_delete))
        .route("/stores/{name}/query", get(store_pages::query_show))
        .route("/stores/{name}/schema", get(store_pages::schema_show))
        .route("/stores/{name}/alerts", get(store_pages::alerts_show))
        .route(
            "/stores/{name}/connections",
            get(store_pages::connections_show),
        )
        .route("/static/{*path}", get(assets::static_get))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// What every page's layout needs.
pub struct Nav {
    /// The session's CSRF token (a `<meta>` for the scripts, hidden fields).
    pub csrf: String,
    pub admin: bool,
    /// The store a store session is limited to.
    pub store: Option<String>,
}

/// The signed-in person of a page request; without a live session the
/// request is sent to `/login`.
pub struct Viewer {
    pub token: String,
    pub session: Session,
}

impl Viewer {
    pub fn nav(&self) -> Nav {
        Nav {
            csrf: self.session.csrf.clone(),
            admin: self.session.scope.is_admin(),
            store: match &self.session.scope {
                Scope::Admin => None,
                Scope::Store(s) => Some(s.clone()),
            },
        }
    }

    /// True if `given` (a form field) is this session's CSRF token.
    pub fn csrf_ok(&self, given: &str) -> bool {
        self.session.csrf_ok(given)
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Viewer, Response> {
        match state.console.sessions.from_headers(&parts.headers) {
            Some((token, session)) => Ok(Viewer { token, session }),
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

/// Renders a template as an HTML page; a render failure is a logged 500.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            error_page(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

/// A plain error page (no layout: the session may be unknown).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        message,
    };
    let body = page
        .render()
        .unwrap_or_else(|_| "<!doctype html><title>error</title>error".into());
    (status, Html(body)).into_response()
}

/// Opens store `name` for `viewer`: 404 if it does not exist, 403 if the
/// session may not open it, 503 while it is busy (recovering, being
/// created, reset or deleted).
pub async fn open_for(
    state: &AppState,
    viewer: &Viewer,
    name: &str,
) -> Result<Arc<Store>, Response> {
    if !state.stores.known(name).await {
        return Err(error_page(StatusCode::NOT_FOUND, "store not found"));
    }
    if !viewer.session.scope.opens(name) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "this session cannot open that store",
        ));
    }
    state.stores.open(name).await.map_err(store_error)
}

/// The page answering a failed store operation: 503 with `Retry-After`
/// for a busy store, else the API's answer (a logged 500 for a fault).
pub fn store_error(e: registry::Error) -> Response {
    // A fault is logged by the conversion.
    let e = crate::error::ApiError::from(e);
    let mut res = error_page(e.status, &e.message);
    if let Some(secs) = e.retry_after {
        res.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    res
}

/// `Set-Cookie` with the `Secure` flag when the server runs TLS.
pub fn cookie_header(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<u64>,
) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        session::set_cookie(name, value, path, state.config.tls.is_some(), max_age),
    )
}
