//! Outbound connections of a store (store key):
//! `GET/POST /api/stores/:store/ws/connections`,
//! `GET/DELETE /api/stores/:store/ws/connections/:id`. The connections
//! themselves live in [`crate::outbound`].
//!
//! A create is held to the outbound policy of its caller's role (the admin
//! key's or a store key's, see [`crate::outbound::policy`]): a
//! URL the policy refuses is a 403, a `ca_file` outside the CA directory a
//! 400 that says nothing about the file. The role is kept with the
//! connection and applies at every dial.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::{ApiError, ApiResult, AppState};
use crate::auth::StoreAccess;
use crate::clock;
use crate::codec::agg::Params;
use crate::outbound::policy::Role;
use crate::outbound::session::reserved_header;
use crate::outbound::{check_url, CreateError, Mode, Spec};
use crate::store::{now_ns, DataType};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/stores/{store}/ws/connections",
            get(connections_list).post(connections_create),
        )
        .route(
            "/api/stores/{store}/ws/connections/{id}",
            get(connections_get).delete(connections_delete),
        )
}

async fn connections_list(access: StoreAccess, State(state): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = state
        .outbound
        .list(&access.name)
        .iter()
        .map(|c| c.status_json())
        .collect();
    Json(json!({ "connections": list }))
}

fn not_found() -> ApiError {
    ApiError::not_found("connection not found")
}

async fn connections_get(
    access: StoreAccess,
    State(state): State<AppState>,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let c = state
        .outbound
        .get(&access.name, &id)
        .ok_or_else(not_found)?;
    Ok(Json(c.status_json()))
}

async fn connections_delete(
    access: StoreAccess,
    State(state): State<AppState>,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    if state
        .outbound
        .delete(&access.name, &id)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(Json(json!({ "message": "connection deleted" })))
    } else {
        Err(not_found())
    }
}

async fn connections_create(
    access: StoreAccess,
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut spec =
        parse_create(&body, access.store.config().data_type).map_err(ApiError::bad_request)?;
    spec.created_by = if access.admin {
        Role::Admin
    } else {
        Role::Store
    };
    super::rules::check_conn_rules(&state, &access, &spec.rules, spec.created_by).await?;
    let conn = state
        .outbound
        .create(&access.name, &access.store, spec)
        .await
        .map_err(|e| match e {
            CreateError::Invalid(m) => ApiError::bad_request(m),
            e @ CreateError::Refused => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            e @ CreateError::Gone => ApiError::not_found(e.to_string()),
            e => ApiError::internal(e),
        })?;
    Ok((StatusCode::CREATED, Json(conn.status_json())))
}

fn string_field(m: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("invalid {name}: must be a string")),
    }
}

/// Validates a create request into a spec (without its id); `dt`: the
/// store's type, which aggregation needs to be json or schema.
fn parse_create(body: &[u8], dt: DataType) -> Result<Spec, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    let Value::Object(m) = v else {
        return Err("invalid request body: must be a JSON object".into());
    };
    let mode = match string_field(&m, "mode")?.as_deref() {
        None | Some("") => return Err("mode is required ('push' or 'pull')".into()),
        Some("push") => Mode::Push,
        Some("pull") => Mode::Pull,
        Some(_) => return Err("invalid mode: must be 'push' or 'pull'".into()),
    };
    let url = match string_field(&m, "url")? {
        None => return Err("url is required".into()),
        Some(u) if u.is_empty() => return Err("url is required".into()),
        Some(u) => u,
    };
    check_url(&url)?;
    let from = match m.get("from") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => n,
            _ => return Err("invalid from: must be 0 or a Unix timestamp in nanoseconds".into()),
        },
    };
    let format = match string_field(&m, "format")?.as_deref() {
        None | Some("") | Some("full") => "full".to_string(),
        Some("compact") => "compact".to_string(),
        Some(_) => return Err("invalid format: must be 'full' or 'compact'".into()),
    };
    let mut headers = BTreeMap::new();
    match m.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let Value::String(v) = v else {
                    return Err(format!("invalid header {k:?}: value must be a string"));
                };
                if tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                    .is_err()
                    || tokio_tungstenite::tungstenite::http::HeaderValue::from_str(v).is_err()
                {
                    return Err(format!("invalid header {k:?}"));
                }
                if reserved_header(k) {
                    return Err(format!(
                        "invalid header {k:?}: set by the server on every dial"
                    ));
                }
                headers.insert(k.clone(), v.clone());
            }
        }
        Some(_) => return Err("invalid headers: must be an object of strings".into()),
    }
    let (filter, filter_ignore_case) = match mode {
        Mode::Push => (
            string_field(&m, "filter")?.unwrap_or_default(),
            match m.get("filter_ignore_case") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("invalid filter_ignore_case: must be a boolean".into()),
            },
        ),
        Mode::Pull => (String::new(), false),
    };
    let ca_file = string_field(&m, "ca_file")?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let agg = Params::from_body(&m, dt)?;
    if mode == Mode::Pull && agg.given() {
        return Err("aggregation applies to push connections".into());
    }
    let rules = match m.get("rules") {
        Some(Value::Array(_)) if mode == Mode::Pull => {
            return Err("invalid rules: only on push connections".into())
        }
        r => super::rules::parse_rules(r)?,
    };
    Ok(Spec {
        id: String::new(),
        mode,
        url,
        from: if mode == Mode::Push { from } else { 0 },
        format,
        headers,
        filter,
        filter_ignore_case,
        created_at: clock::rfc3339_nanos(now_ns()),
        last_timestamp: 0,
        ca_file,
        created_by: Role::Store,
        agg,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse_create(body.as_bytes(), DataType::Json).unwrap_err()
    }

    #[test]
    fn create_requests_are_validated() {
        assert_eq!(
            err(r#"{"mode":"sideways","url":"ws://h"}"#),
            "invalid mode: must be 'push' or 'pull'"
        );
        assert!(err(r#"{"url":"ws://h"}"#).contains("mode is required"));
        assert!(err(r#"{"mode":"push"}"#).contains("url is required"));
        assert!(err(r#"{"mode":"push","url":"http://h"}"#).contains("ws:// or wss://"));
        assert!(err(r#"{"mode":"push","url":"ws://h","format":"x"}"#).contains("format"));
        assert!(err(r#"{"mode":"push","url":"ws://h","from":-1}"#).contains("from"));
        assert!(err(r#"{"mode":"push","url":"ws://h","headers":{"a b":"c"}}"#).contains("header"));
        for reserved in [
            "Host",
            "connection",
            "Upgrade",
            "Sec-WebSocket-Key",
            "Transfer-Encoding",
        ] {
            let body =
                format!(r#"{{"mode":"push","url":"ws://h","headers":{{"{reserved}":"x"}}}}"#);
            assert!(err(&body).contains("set by the server"), "{reserved}");
        }
        assert!(err(r#"{"mode":"push","url":"ws://h:99999"}"#).contains("invalid url"));
        assert!(err("[1]").contains("object"));
        let s = parse_create(
            br#"{"mode":"push","url":"wss://h/x","from":7,"format":"compact","headers":{"Authorization":"Bearer t"},"filter":"n","filter_ignore_case":true}"#,
            DataType::Json,
        )
        .unwrap();
        assert_eq!(
            (s.mode, s.from, s.format.as_str(), s.filter.as_str()),
            (Mode::Push, 7, "compact", "n")
        );
        assert!(s.filter_ignore_case);
        assert_eq!(s.headers["Authorization"], "Bearer t");
    }
}
