//! [`ApiError`]: the one error every HTTP edge answers with (REST, the
//! console's JSON calls, the WebSocket upgrade), and the mapping of the
//! registry's and the engine's errors onto it. Client faults are a 4xx
//! with a JSON `{"error": ...}`; internal faults are logged and answered
//! with a generic 500; a busy store is a 503 with `Retry-After`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::registry;
use crate::reject::Reason;
use crate::store;
use crate::throttle;

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
