//! MQTT sinks of a store (store key):
//! `GET/POST /api/stores/:store/mqtt/connections`,
//! `GET/DELETE /api/stores/:store/mqtt/connections/:id`. The sinks
//! themselves live in [`crate::outbound::mqtt::sink`].
//!
//! As for the WebSocket connections, a create is held to the outbound
//! policy of its caller's role (a refused broker is a 403) and a `ca_file`
//! must be in the CA directory (else a 400 that says nothing about the
//! file). Every bad field is a 400 naming it. The password is kept in the
//! store's `mqtt_connections.json` (mode 0600) and never returned.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value};

use super::{mqtt_links, ApiError, ApiResult, AppState};
use crate::auth::StoreAccess;
use crate::clock;
use crate::codec::agg::Params;
use crate::outbound::mqtt::sink::{Spec, DEFAULT_WINDOW, MAX_WINDOW};
use crate::outbound::mqtt::{Broker, Sink};
use crate::outbound::policy::Role;
use crate::store::{now_ns, DataType};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/stores/{store}/mqtt/connections",
            get(mqtt_links::list::<Sink>).post(mqtt_connections_create),
        )
        .route(
            "/api/stores/{store}/mqtt/connections/{id}",
            get(mqtt_links::get_one::<Sink>).delete(mqtt_links::delete::<Sink>),
        )
}

async fn mqtt_connections_create(
    access: StoreAccess,
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let spec =
        parse_create(&body, access.store.config().data_type).map_err(ApiError::bad_request)?;
    let role = if access.admin {
        Role::Admin
    } else {
        Role::Store
    };
    super::rules::check_conn_rules(&state, &access, &spec.rules, role).await?;
    mqtt_links::create::<Sink>(&state, &access, spec).await
}

/// The longest `topic`, `client_id`, `username` and `password`, in bytes.
pub const MAX_TOPIC: usize = 1024;
pub const MAX_CLIENT_ID: usize = 256;
pub const MAX_CREDENTIAL: usize = 1024;

fn string_field(m: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("invalid {name}: must be a string")),
    }
}

/// A string of at most `max` bytes without NUL (MQTT strings may not hold
/// one), or absent.
fn short_string(m: &Map<String, Value>, name: &str, max: usize) -> Result<Option<String>, String> {
    let s = string_field(m, name)?;
    if let Some(s) = &s {
        if s.len() > max {
            return Err(format!("invalid {name}: longer than {max} bytes"));
        }
        if s.contains('\0') {
            return Err(format!("invalid {name}: must not contain NUL"));
        }
    }
    Ok(s)
}

fn bool_field(m: &Map<String, Value>, name: &str) -> Result<bool, String> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("invalid {name}: must be a boolean")),
    }
}

fn int_field(m: &Map<String, Value>, name: &str, default: i64) -> Result<i64, String> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| format!("invalid {name}: must be an integer")),
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
    let broker_url = match string_field(&m, "broker_url")? {
        None => return Err("broker_url is required".into()),
        Some(u) if u.is_empty() => return Err("broker_url is required".into()),
        Some(u) => u,
    };
    Broker::parse(&broker_url)?;
    let topic = match short_string(&m, "topic", MAX_TOPIC)? {
        None => return Err("topic is required".into()),
        Some(t) if t.is_empty() => return Err("topic is required".into()),
        Some(t) => t,
    };
    if topic.contains(['+', '#']) {
        return Err(
            "invalid topic: wildcards (+ and #) are for subscriptions, not publishing".into(),
        );
    }
    let from = int_field(&m, "from", 0)?;
    if from < -1 {
        return Err(
            "invalid from: must be 0 (the oldest), -1 (now) or a Unix timestamp in nanoseconds"
                .into(),
        );
    }
    let cursor_persist_interval = int_field(&m, "cursor_persist_interval", 0)?;
    if !(-1..=86_400).contains(&cursor_persist_interval) {
        return Err("invalid cursor_persist_interval: must be -1 (one shot), 0 (in memory) or seconds up to 86400".into());
    }
    let qos = int_field(&m, "qos", 1)?;
    if !(0..=2).contains(&qos) {
        return Err("invalid qos: must be 0, 1 or 2".into());
    }
    let window = int_field(&m, "window", DEFAULT_WINDOW.into())?;
    if !(1..=i64::from(MAX_WINDOW)).contains(&window) {
        return Err(format!("invalid window: must be 1 to {MAX_WINDOW}"));
    }
    let format = match string_field(&m, "format")?.as_deref() {
        None | Some("") | Some("full") => "full".to_string(),
        Some("compact") => "compact".to_string(),
        Some(_) => return Err("invalid format: must be 'full' or 'compact'".into()),
    };
    let client_id = short_string(&m, "client_id", MAX_CLIENT_ID)?.unwrap_or_default();
    let username = short_string(&m, "username", MAX_CREDENTIAL)?.filter(|s| !s.is_empty());
    let password = short_string(&m, "password", MAX_CREDENTIAL)?.filter(|s| !s.is_empty());
    if password.is_some() && username.is_none() {
        return Err("invalid password: needs a username (MQTT 3.1.1)".into());
    }
    let ca_file = string_field(&m, "ca_file")?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    Ok(Spec {
        id: String::new(),
        broker_url,
        topic,
        from,
        include_timestamp: bool_field(&m, "include_timestamp")?,
        cursor_persist_interval,
        client_id,
        username,
        password,
        ca_file,
        qos: qos as u8,
        retain: bool_field(&m, "retain")?,
        window: window as u16,
        format,
        created_at: clock::rfc3339_nanos(now_ns()),
        created_by: Role::Store,
        last_timestamp: 0,
        agg: Params::from_body(&m, dt)?,
        rules: super::rules::parse_rules(m.get("rules"))?,
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
        let ok = r#""broker_url":"tcp://h","topic":"t""#;
        assert!(err(r#"{"topic":"t"}"#).contains("broker_url is required"));
        assert!(err(r#"{"broker_url":"http://h","topic":"t"}"#).contains("broker_url"));
        assert!(err(r#"{"broker_url":"tcp://h"}"#).contains("topic is required"));
        assert!(err(r#"{"broker_url":"tcp://h","topic":""}"#).contains("topic is required"));
        assert!(err(r#"{"broker_url":"tcp://h","topic":"a/+"}"#).contains("invalid topic"));
        assert!(err(r#"{"broker_url":"tcp://h","topic":"a/#"}"#).contains("invalid topic"));
        assert!(err(r#"{"broker_url":"tcp://h","topic":"a\u0000"}"#).contains("invalid topic"));
        let long = format!(
            r#"{{"broker_url":"tcp://h","topic":"{}"}}"#,
            "a".repeat(1025)
        );
        assert!(err(&long).contains("invalid topic"));
        for (field, bad) in [
            ("from", "-2"),
            ("from", "\"x\""),
            ("cursor_persist_interval", "-2"),
            ("cursor_persist_interval", "1.5"),
            ("qos", "3"),
            ("qos", "-1"),
            ("window", "0"),
            ("window", "1025"),
            ("format", "\"x\""),
            ("include_timestamp", "1"),
            ("retain", "\"yes\""),
            ("client_id", "7"),
            ("username", "[]"),
            ("ca_file", "1"),
        ] {
            let e = err(&format!("{{{ok},\"{field}\":{bad}}}"));
            assert!(e.contains(field), "{field}={bad}: {e}");
        }
        assert!(err(&format!("{{{ok},\"password\":\"p\"}}")).contains("password"));
        assert!(err("[1]").contains("object"));
        let s = parse_create(
            br#"{"broker_url":"mqtts://h","topic":"a/b","from":-1,"qos":2,"retain":true,"window":8,"include_timestamp":true,"cursor_persist_interval":5,"username":"u","password":"p","format":"compact"}"#,
            DataType::Json,
        )
        .unwrap();
        assert_eq!(
            (s.from, s.qos, s.window, s.cursor_persist_interval),
            (-1, 2, 8, 5)
        );
        assert!(s.retain && s.include_timestamp);
        assert_eq!(s.format, "compact");
        assert_eq!(s.client_id, "");
        let d = parse_create(format!("{{{ok}}}").as_bytes(), DataType::Json).unwrap();
        assert_eq!(
            (d.from, d.qos, d.window, d.cursor_persist_interval, d.retain),
            (0, 1, 64, 0, false)
        );
    }
}
