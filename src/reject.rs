//! Why an insert was refused, as one typed reason carried from where the
//! refusal is decided to every edge: the HTTP status, the message a client
//! gets (HTTP JSON body, socket `ERROR` line, WebSocket error frame) and
//! the `reason` label of `tsstore_rejected_inserts_total` in `/metrics`.
//!
//! Invariant: no edge picks a reason from a message's text; an error
//! either carries its [`Reason`] or gets it from its type
//! ([`Reason::of`] for the engine's errors).

use axum::http::StatusCode;

use crate::store;

/// Why an insert was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request's media type is not the store's.
    ContentType,
    /// The body or message is not JSON of the expected shape.
    InvalidJson,
    /// A timestamp that is not positive, or too far ahead of the clock.
    InvalidTimestamp,
    /// A timestamp not after the store's newest.
    OutOfOrder,
    /// Larger than the request limit or than the store can hold.
    TooLarge,
    /// Data that is not valid for the store (type, schema, encoding).
    InvalidData,
    /// A fault of the server or its disk, not of the client.
    Internal,
}

impl Reason {
    /// The `/metrics` label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::ContentType => "content_type",
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::OutOfOrder => "out_of_order",
            Reason::TooLarge => "too_large",
            Reason::InvalidData => "invalid_data",
            Reason::Internal => "internal",
        }
    }

    /// The HTTP status of a refusal for this reason.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The reason of an HTTP error that carries none of its own: by its
    /// status class.
    pub fn of_status(status: StatusCode) -> Reason {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Reason::TooLarge
        } else if status.is_client_error() {
            Reason::InvalidData
        } else {
            Reason::Internal
        }
    }

    /// The reason of an engine error.
    pub fn of(e: &store::Error) -> Reason {
        use store::Error as E;
        match e {
            E::TimestampOutOfOrder { .. } => Reason::OutOfOrder,
            E::InvalidTimestamp { .. } => Reason::InvalidTimestamp,
            E::ObjectTooLarge { .. } => Reason::TooLarge,
            e if e.is_client_error() => Reason::InvalidData,
            _ => Reason::Internal,
        }
    }

    /// The message every edge answers for this reason in place of the
    /// engine's own text: the original's wording of the two timestamp
    /// errors, which its clients match on.
    pub fn fixed_message(self) -> Option<&'static str> {
        match self {
            Reason::OutOfOrder => Some("timestamp must be greater than newest entry"),
            Reason::InvalidTimestamp => Some("invalid timestamp"),
            _ => None,
        }
    }

    /// The message for engine error `e` of this reason.
    pub fn message(self, e: &store::Error) -> String {
        self.fixed_message()
            .map_or_else(|| e.to_string(), str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_get_their_reason_status_and_message() {
        let cases = [
            (
                store::Error::TimestampOutOfOrder {
                    timestamp: 1,
                    newest: 2,
                },
                Reason::OutOfOrder,
                400,
                "timestamp must be greater than newest entry",
            ),
            (
                store::Error::InvalidTimestamp { timestamp: -1 },
                Reason::InvalidTimestamp,
                400,
                "invalid timestamp",
            ),
            (
                store::Error::ObjectTooLarge { size: 9, max: 8 },
                Reason::TooLarge,
                413,
                "object of 9 bytes is too large: the store holds at most 8 bytes in one object",
            ),
            (
                store::Error::InvalidData { reason: "x".into() },
                Reason::InvalidData,
                400,
                "invalid data: x",
            ),
            (
                store::Error::Closed,
                Reason::Internal,
                500,
                "store is closed",
            ),
        ];
        for (e, reason, status, message) in cases {
            let r = Reason::of(&e);
            assert_eq!(r, reason, "{e}");
            assert_eq!(r.status().as_u16(), status, "{e}");
            assert_eq!(r.message(&e), message);
        }
    }

    #[test]
    fn labels_are_the_metrics_names() {
        assert_eq!(Reason::OutOfOrder.label(), "out_of_order");
        assert_eq!(
            Reason::of_status(StatusCode::PAYLOAD_TOO_LARGE),
            Reason::TooLarge
        );
        assert_eq!(
            Reason::of_status(StatusCode::NOT_FOUND),
            Reason::InvalidData
        );
        assert_eq!(
            Reason::of_status(StatusCode::INSUFFICIENT_STORAGE),
            Reason::Internal
        );
    }
}
