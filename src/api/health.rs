//! `GET /health`: liveness, no authentication.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::clock;
use crate::store::now_ns;

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health_get))
}

async fn health_get() -> Json<Value> {
    Json(json!({ "status": "ok", "time": clock::rfc3339_secs(now_ns()) }))
}
