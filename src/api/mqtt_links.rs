//! The routes the MQTT sinks (`/mqtt/connections`) and subscriptions
//! (`/mqtt/subscriptions`) share: list, get and delete, the same for both
//! kinds of link but for their words. Each kind's create, which parses its
//! own fields, is in [`super::mqtt_connections`] and
//! [`super::mqtt_subscriptions`].

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};
use crate::auth::StoreAccess;
use crate::outbound::links::{CreateError, Kind, Links};
use crate::outbound::mqtt::{Sink, Subscription};
use crate::outbound::policy::Role;

/// A kind of MQTT link served under `/api/stores/:store/mqtt/`.
pub trait Served: Kind {
    /// What one is called in messages: "connection", "subscription".
    const NOUN: &'static str;
    fn links(state: &AppState) -> &Arc<Links<Self>>;
    /// Records who creates it: the outbound policy holds it to that role.
    fn set_role(spec: &mut Self::Spec, role: Role);
}

impl Served for Sink {
    const NOUN: &'static str = "connection";
    fn links(state: &AppState) -> &Arc<Links<Self>> {
        &state.mqtt.sinks
    }
    fn set_role(spec: &mut Self::Spec, role: Role) {
        spec.created_by = role;
    }
}

impl Served for Subscription {
    const NOUN: &'static str = "subscription";
    fn links(state: &AppState) -> &Arc<Links<Self>> {
        &state.mqtt.subscriptions
    }
    fn set_role(spec: &mut Self::Spec, role: Role) {
        spec.created_by = role;
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

/// Creates a link of a parsed, valid `spec` for the caller: 201 and its
/// status object; 400 for what only the create can tell (the `ca_file`,
/// the cap per store), 403 if the outbound policy refuses the broker for
/// the caller's role, 404 if the store went meanwhile.
pub async fn create<K: Served>(
    state: &AppState,
    access: &StoreAccess,
    mut spec: K::Spec,
) -> ApiResult<(StatusCode, Json<Value>)> {
    K::set_role(
        &mut spec,
        if access.admin {
            Role::Admin
        } else {
            Role::Store
        },
    );
    let link = K::links(state)
        .create(&access.name, &access.store, spec)
        .await
        .map_err(|e| match e {
            CreateError::Invalid(m) => ApiError::bad_request(m),
            e @ CreateError::Refused => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            e @ CreateError::Gone => ApiError::not_found(e.to_string()),
            e => ApiError::internal(e),
        })?;
    Ok((StatusCode::CREATED, Json(K::status_json(&link))))
}
