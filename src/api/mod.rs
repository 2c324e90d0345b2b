//! The REST API (axum): one file per resource, each with its `routes()`
//! (merged by `app`).
//!
//! Every client error is a 4xx with a JSON body `{"error": "..."}`
//! ([`crate::error`]); a store that is busy (recovering, being created,
//! reset or deleted) answers 503 with `Retry-After` and a body naming it;
//! a client that failed to authenticate too often answers 429 with
//! `Retry-After` ([`crate::throttle`]). Routes follow
//! the original's paths, parameters and JSON shapes (see
//! `docs/compatibility.md`).

pub use crate::error::{ApiError, ApiResult};
pub use crate::state::AppState;

pub mod connections;
pub mod data;
pub mod export;
pub mod health;
pub mod metrics;
pub mod mqtt_connections;
pub mod mqtt_links;
pub mod mqtt_subscriptions;
pub mod openapi;
pub mod rules;
pub mod schema;
pub mod stores;
