//! `GET/PUT /api/stores/:store/schema`: the schema of a schema store, with
//! append-only evolution.

use axum::body::Bytes;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};
use crate::auth::StoreAccess;
use crate::store::{DataType, Field, FieldType};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/stores/{store}/schema",
        get(schema_get).put(schema_put),
    )
}

fn require_schema_store(access: &StoreAccess) -> ApiResult<()> {
    if access.store.config().data_type != DataType::Schema {
        return Err(ApiError::bad_request(
            "schema endpoint only available for schema-type stores",
        ));
    }
    Ok(())
}

async fn schema_get(access: StoreAccess) -> ApiResult<Json<Value>> {
    require_schema_store(&access)?;
    let s = access
        .store
        .schema()
        .ok_or_else(|| ApiError::not_found("no schema defined"))?;
    Ok(Json(json!({ "version": s.version, "fields": s.fields })))
}

#[derive(Deserialize)]
struct SchemaRequest {
    fields: Option<Vec<Field>>,
}

async fn schema_put(access: StoreAccess, body: Bytes) -> ApiResult<Json<Value>> {
    require_schema_store(&access)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid schema: {e}")))?;
    // The original's message for a type it does not know.
    if let Some(fields) = value.get("fields").and_then(Value::as_array) {
        for f in fields {
            if let Some(t) = f.get("type").and_then(Value::as_str) {
                if serde_json::from_value::<FieldType>(Value::String(t.to_string())).is_err() {
                    return Err(ApiError::bad_request(format!("invalid field type: {t}")));
                }
            }
        }
    }
    let req: SchemaRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid schema: {e}")))?;
    let fields = req
        .fields
        .ok_or_else(|| ApiError::bad_request("invalid schema: fields is required"))?;
    let s = access.store.clone();
    let schema = tokio::task::spawn_blocking(move || s.set_schema(fields))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            crate::store::Error::Schema(se) => {
                ApiError::bad_request(format!("invalid schema: {se}"))
            }
            other => ApiError::from(other),
        })?;
    Ok(Json(
        json!({ "message": "schema updated", "version": schema.version }),
    ))
}
