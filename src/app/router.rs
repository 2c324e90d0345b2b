//! The whole HTTP router: each area's `routes()` merged, and the layers
//! every route gets (trace, CORS, JSON errors, body limits, timeout).
//! Errors the HTTP layer answers by itself get the same JSON body as every
//! other error (here, and in `listen` for those hyper answers).

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::error::ApiError;
use crate::reject::Reason;
use crate::state::AppState;
use crate::{api, console, stream};

/// The whole API.
pub fn router(state: AppState) -> Router {
    use tower::ServiceBuilder;
    use tower_http::timeout::TimeoutLayer;

    let limit = state.config.max_body_bytes;
    Router::new()
        .merge(api::health::routes())
        .merge(api::stores::routes())
        .merge(api::data::routes())
        .merge(api::export::routes())
        .merge(stream::ws::routes())
        .merge(api::connections::routes())
        .merge(api::mqtt_connections::routes())
        .merge(api::mqtt_subscriptions::routes())
        .merge(api::schema::routes())
        .merge(api::rules::routes())
        .merge(api::metrics::routes())
        .merge(api::openapi::routes())
        .merge(console::routes())
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
