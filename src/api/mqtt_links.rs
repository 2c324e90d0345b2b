//! The routes the MQTT sinks (`/mqtt/connections`) and subscriptions
//! (`/mqtt/subscriptions`) share: list, get and delete, the same for both
//! kinds of link but for their words. Each kind's create, which parses its
//! own fields, is in [`super::mqtt_connections`] and
//! [`super::mqtt_subscriptions`].

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};
use crate::auth::StoreAccess;
use crate::outbound::links::{Kind, Links};
use crate::outbound::mqtt::{Sink, Subscription};

/// A kind of MQTT link served under `/api/stores/:store/mqtt/`.
pub trait Served: Kind {
    /// What one is called in messages: "connection", "subscription".
    const NOUN: &'static str;
    fn links(state: &AppState) -> &Arc<Links<Self>>;
}

impl Served for Sink {
    const NOUN: &'static str = "connection";
    fn links(state: &AppState) -> &Arc<Links<Self>> {
        &state.mqtt.sinks
    }
}

impl Served for Subscription {
    const NOUN: &'static str = "subscription";
    fn links(state: &AppState) -> &Arc<Links<Self>> {
        &state.mqtt.subscriptions
    }
}

fn not_found<K: Served>() -> ApiError {
    ApiError::not_found(format!("{} not found", K::NOUN))
}

/// `GET .../mqtt/<kind>`: `{"<kind>": [status, ...]}`, oldest first.
pub async fn list<K: Served>(access: StoreAccess, State(state): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = K::links(&state)
        .list(&access.name)
        .iter()
        .map(|l| K::status_json(l))
        .collect();
    let mut out = serde_json::Map::new();
    out.insert(K::LIST.to_string(), Value::Array(list));
    Json(Value::Object(out))
}

/// `GET .../mqtt/<kind>/:id`: the status object.
pub async fn get_one<K: Served>(
    access: StoreAccess,
    State(state): State<AppState>,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let l = K::links(&state)
        .get(&access.name, &id)
        .ok_or_else(not_found::<K>)?;
    Ok(Json(K::status_json(&l)))
}

/// `DELETE .../mqtt/<kind>/:id`: stops it (within a second) and forgets it.
pub async fn delete<K: Served>(
    access: StoreAccess,
    State(state): State<AppState>,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let deleted = K::links(&state)
        .delete(&access.name, &id)
        .await
        .map_err(ApiError::internal)?;
    if deleted {
        Ok(Json(json!({ "message": format!("{} deleted", K::NOUN) })))
    } else {
        Err(not_found::<K>())
    }
}
