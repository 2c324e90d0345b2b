//! Store management: create (admin key), list (no auth), delete, reset and
//! stats (store key).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};
use crate::auth::{Admin, Scoped, StoreAccess};
use crate::clock;
use crate::store;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/stores", post(stores_create).get(stores_list))
        .route("/api/stores/{store}", axum::routing::delete(stores_delete))
        .route("/api/stores/{store}/reset", post(stores_reset))
        .route("/api/stores/{store}/stats", get(stores_stats))
        .route("/api/summary", get(stores_summary))
}

#[derive(Deserialize)]
struct SummaryQuery {
    store: Option<String>,
}

/// `GET /api/summary[?store=NAME]`: the figures of every store the admin
/// key or console session may see (see [`crate::summary`]), by name.
async fn stores_summary(
    Scoped(scope): Scoped,
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<SummaryQuery>,
) -> ApiResult<Json<Value>> {
    let only = q.store.filter(|s| !s.is_empty());
    if let Some(name) = &only {
        store::validate_name(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if !scope.opens(name) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this session cannot open that store",
            ));
        }
        if !state.stores.known(name).await {
            return Err(ApiError::not_found("store not found"));
        }
    }
    let stores = state.summary(&scope, only.as_deref()).await;
    Ok(Json(json!({ "stores": stores })))
}

#[derive(Deserialize)]
struct CreateRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    num_blocks: u32,
    #[serde(default)]
    data_block_size: u32,
    #[serde(default)]
    index_block_size: u32,
    #[serde(default)]
    data_type: Option<String>,
    /// Beyond the original: `always`, `interval`, `interval:<ms>`, `never`.
    #[serde(default)]
    durability: Option<String>,
}

async fn stores_create(
    _admin: Admin,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    if req.name.is_empty() {
        return Err(ApiError::bad_request("name is required"));
    }
    store::validate_name(&req.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut cfg = state.config.store_defaults();
    if req.num_blocks != 0 {
        cfg.num_blocks = req.num_blocks;
    }
    if req.data_block_size != 0 {
        cfg.data_block_size = req.data_block_size;
    }
    if req.index_block_size != 0 {
        cfg.index_block_size = req.index_block_size;
    }
    if let Some(t) = req.data_type.filter(|t| !t.is_empty()) {
        cfg.data_type = t.parse().map_err(|_| {
            ApiError::bad_request("invalid data type: must be binary, text, json, or schema")
        })?;
    }
    if let Some(d) = req.durability.filter(|d| !d.is_empty()) {
        cfg.durability = d
            .parse()
            .map_err(|e: store::Error| ApiError::bad_request(e.to_string()))?;
    }
    cfg.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    state.check_space(&cfg).await?;
    let (_, key) = state.stores.create(&req.name, cfg).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": req.name, "api_key": key.api_key, "key_id": key.key_id })),
    ))
}

async fn stores_list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    // Reads the data path: off the async workers.
    let stores = state.stores.clone();
    let names = tokio::task::spawn_blocking(move || stores.list())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "stores": names })))
}

async fn stores_delete(
    access: StoreAccess,
    State(state): State<AppState>,
) -> ApiResult<Json<Value>> {
    let name = access.name.clone();
    drop(access);
    state.stores.delete(&name).await?;
    Ok(Json(json!({ "message": "store deleted" })))
}

async fn stores_reset(
    access: StoreAccess,
    State(state): State<AppState>,
) -> ApiResult<Json<Value>> {
    state.stores.reset(&access.name).await?;
    Ok(Json(json!({ "message": "store reset" })))
}

async fn stores_stats(access: StoreAccess) -> ApiResult<Json<Value>> {
    let st = access.store.stats()?;
    Ok(Json(stats_json(&st)))
}

/// The stats object: the original's fields, always present, plus ours.
pub fn stats_json(st: &store::Stats) -> Value {
    json!({
        "num_blocks": st.num_blocks,
        "data_block_size": st.data_block_size,
        "index_block_size": st.index_block_size,
        "data_type": st.data_type.as_str(),
        "head_block": st.head_block,
        "tail_block": st.tail_block,
        "active_blocks": st.active_blocks,
        "oldest_timestamp": st.oldest_timestamp,
        "oldest_time": clock::rfc3339_secs(st.oldest_timestamp),
        "newest_timestamp": st.newest_timestamp,
        "newest_time": clock::rfc3339_secs(st.newest_timestamp),
        "object_count": st.object_count,
        "bytes_used": st.bytes_used,
        "footprint_bytes": st.footprint_bytes,
        "durability": st.durability,
    })
}
