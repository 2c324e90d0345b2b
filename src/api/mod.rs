//! The REST API (axum): the router, its shared state, errors and auth.
//!
//! Every client error is a 4xx with a JSON body `{"error": "..."}`; an
//! internal fault is logged and answered with a generic 500; a store that
//! is busy (recovering, being created, reset or deleted) answers 503 with
//! `Retry-After` and a body naming it; a client that failed to
//! authenticate too often answers 429 with `Retry-After` ([`throttle`]).
//! Errors the HTTP layer answers by itself get the same JSON body (here,
//! and in `app::listen` for those hyper answers). Routes follow
//! the original's paths, parameters and JSON shapes (see
//! `docs/compatibility.md`).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use crate::config::Config;
use crate::keys::KeyCache;
use crate::registry::{self, Hooks, Registry};
use crate::reject::Reason;
use crate::store;

pub mod auth;
pub mod connections;
pub mod data;
pub mod duration;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod schema;
pub mod stores;
pub mod throttle;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub stores: Arc<Registry>,
    pub keys: Arc<KeyCache>,
    pub metrics: Arc<metrics::Metrics>,
    /// Set to true when the server starts shutting down: long-lived
    /// streams close themselves (1001) instead of holding it up.
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    /// The outbound WebSocket connections of every store.
    pub outbound: Arc<crate::stream::outbound::Outbound>,
    /// The web console's sessions and start time.
    pub console: Arc<crate::console::Console>,
    /// Failed authentications per client.
    pub throttle: Arc<throttle::Throttle>,
}

impl AppState {
    pub fn new(config: Config) -> AppState {
        let config = Arc::new(config);
        let keys = Arc::new(KeyCache::new());
        let stores = Arc::new(Registry::new(config.base_path.clone(), keys.clone()));
        let metrics = Arc::new(metrics::Metrics::default());
        let outbound = Arc::new(crate::stream::outbound::Outbound::new(
            stores.clone(),
            metrics.clone(),
            crate::stream::outbound::Timing::default(),
            crate::stream::outbound::policy::Policy::new(&config.outbound),
            config.max_future,
        ));
        let console = Arc::new(crate::console::Console::new());
        stores.set_hooks(lifecycle_hooks(&outbound, &console, &metrics));
        AppState {
            throttle: Arc::new(throttle::Throttle::new(config.auth_limit)),
            stores,
            keys,
            metrics,
            shutdown: Arc::new(tokio::sync::watch::channel(false).0),
            outbound,
            console,
            config,
        }
    }
}

/// What else happens when a store comes or goes, run by the registry for
/// every caller alike (REST, console).
fn lifecycle_hooks(
    outbound: &Arc<crate::stream::outbound::Outbound>,
    console: &Arc<crate::console::Console>,
    metrics: &Arc<metrics::Metrics>,
) -> Hooks {
    // Weak: the outbound connections hold the registry.
    let outbound = Arc::downgrade(outbound);
    let (console, metrics) = (console.clone(), metrics.clone());
    Hooks {
        before_delete: Box::new(move |name| {
            let outbound = outbound.clone();
            Box::pin(async move {
                if let Some(o) = outbound.upgrade() {
                    o.remove_store(&name).await;
                }
            })
        }),
        deleted: Box::new(move |name| console.sessions.remove_store(name)),
        created: Box::new(move |_| metrics.store_created()),
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    use tower::ServiceBuilder;
    use tower_http::timeout::TimeoutLayer;

    let limit = state.config.max_body_bytes;
    Router::new()
        .merge(health::routes())
        .merge(stores::routes())
        .merge(data::routes())
        .merge(crate::stream::ws::routes())
        .merge(connections::routes())
        .merge(schema::routes())
        .merge(metrics::routes())
        .merge(openapi::routes())
        .merge(crate::console::routes())
        .fallback(not_found)
        .layer(
            ServiceBuilder::new()
                .layer(
                    tower_http::trace::TraceLayer::new_for_http()
                        .make_span_with(crate::redact::http_span),
                )
                .layer(cors())
                .layer(axum::middleware::map_response_with_state(
                    state.clone(),
                    json_errors,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    announced_body_limit,
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_secs(30),
                ))
                .layer(axum::extract::DefaultBodyLimit::max(limit)),
        )
        .with_state(state)
}

/// CORS as the original sends it, so browser clients keep working: any
/// origin, the API's methods and headers, a day of preflight caching. No
/// credentials: the API authenticates with headers, never cookies.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderName, Method};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::ORIGIN,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-admin-key"),
        ])
        .max_age(Duration::from_secs(86_400))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

/// Turns the errors axum and tower answer by themselves (405 with an empty
/// body, 413 "length limit exceeded" as text, 408 on timeout, extractor
/// rejections) into the `{"error": ...}` body every other error has.
async fn json_errors(
    axum::extract::State(state): axum::extract::State<AppState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    res: Response,
) -> Response {
    let status = res.status();
    // JSON errors and the console's HTML error pages are answered as is.
    let keep = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || keep {
        return res;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        count_too_large(&state, &method, &uri);
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut out = ApiError::new(status, message).into_response();
    // Keep headers such as `Allow`, but not the old body's framing.
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Counts an insert refused for its size in `/metrics`.
fn count_too_large(state: &AppState, method: &axum::http::Method, uri: &axum::http::Uri) {
    if method == axum::http::Method::POST && uri.path().ends_with("/data") {
        state.metrics.rejected(Reason::TooLarge);
    }
}

/// Answers 413 at once to a request whose `Content-Length` is over
/// `server.max_body_bytes`, instead of waiting for that many bytes to
/// arrive (axum's limit counts the bytes as they come).
async fn announced_body_limit(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = state.config.max_body_bytes;
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        count_too_large(&state, req.method(), req.uri());
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: the limit is {limit} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for the `Retry-After` header (503 and 429).
    pub retry_after: Option<u64>,
    /// Why an insert was refused (its `/metrics` label): given where the
    /// refusal is decided, else from the status class.
    pub reason: Reason,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            reason: Reason::of_status(status),
        }
    }

    /// Says why an insert was refused (see [`Reason`]).
    pub fn reason(self, reason: Reason) -> ApiError {
        ApiError { reason, ..self }
    }

    /// 503 with `Retry-After`: the store will be back (it is recovering,
    /// being created, reset or deleted).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(registry::RETRY_AFTER_SECS),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 429 with `Retry-After`: the client failed to authenticate too often.
    pub fn throttled(t: throttle::Throttled) -> ApiError {
        ApiError {
            retry_after: Some(t.retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, throttle::MESSAGE)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// An internal fault: logged in full, answered generically.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> ApiError {
        use registry::Error as E;
        match e {
            E::Busy { .. } | E::ShuttingDown => ApiError::unavailable(e.to_string()),
            E::Store(e) => ApiError::from(&*e),
            _ => ApiError::internal(e),
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> ApiError {
        ApiError::from(&e)
    }
}

impl From<&store::Error> for ApiError {
    /// The status and message of an engine error: those of its [`Reason`],
    /// but for the errors that are no refused insert (lookups, store
    /// lifecycle, a full disk), which have their own.
    fn from(e: &store::Error) -> ApiError {
        use store::Error as E;
        let reason = Reason::of(e);
        let answer = match e {
            E::TimestampNotFound { .. } => ApiError::not_found("timestamp not found"),
            E::ObjectNotFound => ApiError::not_found("object not found"),
            E::InvalidRange { .. } => {
                ApiError::bad_request("invalid time range: start_time is after end_time")
            }
            E::NotFound { .. } => ApiError::not_found("store not found"),
            E::AlreadyExists { .. } => ApiError::new(StatusCode::CONFLICT, "store already exists"),
            E::Schema(s) => ApiError::bad_request(format!("schema validation failed: {s}")),
            E::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, io.to_string())
            }
            _ if reason == Reason::Internal => ApiError::internal(e),
            _ => ApiError::new(reason.status(), reason.message(e)),
        };
        answer.reason(reason)
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
