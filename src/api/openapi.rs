//! The OpenAPI 3 description of the API (`docs/openapi.yaml`), embedded in
//! the binary and served at `GET /api/openapi.yaml`.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The OpenAPI document.
pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/openapi.yaml", get(openapi_get))
}

async fn openapi_get() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}
