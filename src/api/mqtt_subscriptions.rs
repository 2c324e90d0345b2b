//! MQTT subscriptions of a store (store key):
//! `GET/POST /api/stores/:store/mqtt/subscriptions`,
//! `GET/DELETE /api/stores/:store/mqtt/subscriptions/:id`. The
//! subscriptions themselves live in [`crate::outbound::mqtt::subscribe`].
//!
//! A create is held to the outbound policy of its caller's role, as the
//! WebSocket connections are (a broker the policy refuses is a 403, a
//! `ca_file` outside the CA directory a 400). A bad request is a 400 whose
//! `error` names every bad field, `; `-separated. The password is never
//! returned.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::{mqtt_links, ApiError, ApiResult, AppState};
use crate::auth::StoreAccess;
use crate::clock;
use crate::outbound::mqtt::subscribe::{
    check_filter, Spec, Subscription, TimestampFrom, Unit, MAX_TOPICS,
};
use crate::outbound::mqtt::Broker;
use crate::outbound::policy::Role;
use crate::store::{now_ns, DataType};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/stores/{store}/mqtt/subscriptions",
            get(mqtt_links::list::<Subscription>).post(subscriptions_create),
        )
        .route(
            "/api/stores/{store}/mqtt/subscriptions/{id}",
            get(mqtt_links::get_one::<Subscription>).delete(mqtt_links::delete::<Subscription>),
        )
}

async fn subscriptions_create(
    access: StoreAccess,
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let spec =
        parse_create(&body, access.store.config().data_type).map_err(ApiError::bad_request)?;
    // Two clients with one id take the session from each other at the
    // broker, over and over.
    let broker = Broker::parse(&spec.broker_url).map_err(ApiError::bad_request)?;
    let client_id = spec.client_id(&access.name);
    for name in state.stores.list() {
        for l in state.mqtt.subscriptions.list(&name) {
            if l.spec.client_id(&name) == client_id
                && Broker::parse(&l.spec.broker_url).is_ok_and(|b| b == broker)
            {
                return Err(ApiError::bad_request(format!(
                    "invalid client_id: subscription {} uses it on the same broker",
                    l.id()
                )));
            }
        }
    }
    mqtt_links::create::<Subscription>(&state, &access, spec).await
}

/// The longest `client_id`, `username`, `password` and `timestamp_field`.
const MAX_STRING: usize = 1024;

const FIELDS: [&str; 12] = [
    "broker_url",
    "topics",
    "qos",
    "client_id",
    "username",
    "password",
    "ca_file",
    "clean_session",
    "timestamp",
    "timestamp_field",
    "timestamp_unit",
    "include_topic",
];

/// Validates a create request into a spec (without its id) for a store of
/// type `dt`; the error names every bad field.
fn parse_create(body: &[u8], dt: DataType) -> Result<Spec, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    let Value::Object(m) = v else {
        return Err("invalid request body: must be a JSON object".into());
    };
    let mut bad: Vec<String> = Vec::new();
    let mut unknown: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !FIELDS.contains(k))
        .collect();
    unknown.sort_unstable();
    for k in unknown.iter().take(8) {
        bad.push(format!("unknown field {k:?}"));
    }
    let string = |name: &str, bad: &mut Vec<String>| -> Option<String> {
        match m.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() > MAX_STRING => {
                bad.push(format!("invalid {name}: longer than {MAX_STRING} bytes"));
                None
            }
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                bad.push(format!("invalid {name}: contains control characters"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                bad.push(format!("invalid {name}: must be a string"));
                None
            }
        }
    };
    let broker_url = string("broker_url", &mut bad).unwrap_or_default();
    if broker_url.is_empty() {
        if !bad.iter().any(|b| b.contains("broker_url")) {
            bad.push("broker_url is required".into());
        }
    } else if let Err(e) = Broker::parse(&broker_url) {
        bad.push(e);
    }
    let client_id = string("client_id", &mut bad);
    if client_id.as_deref() == Some("") {
        bad.push("invalid client_id: must not be empty (omit it for the default)".into());
    }
    let username = string("username", &mut bad).filter(|s| !s.is_empty());
    let password = string("password", &mut bad);
    if password.is_some() && username.is_none() {
        bad.push("invalid password: needs a username".into());
    }
    let ca_file = string("ca_file", &mut bad)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let timestamp_field = string("timestamp_field", &mut bad).filter(|s| !s.is_empty());
    let timestamp = match string("timestamp", &mut bad).as_deref() {
        None | Some("") => {
            if timestamp_field.is_some() {
                TimestampFrom::Field
            } else {
                TimestampFrom::Now
            }
        }
        Some("now") => TimestampFrom::Now,
        Some("field") => TimestampFrom::Field,
        Some(_) => {
            bad.push("invalid timestamp: must be 'now' or 'field'".into());
            TimestampFrom::Now
        }
    };
    match (timestamp, &timestamp_field) {
        (TimestampFrom::Field, None) if !bad.iter().any(|b| b.contains("timestamp_field")) => {
            bad.push("timestamp_field is required with timestamp 'field'".into())
        }
        (TimestampFrom::Now, Some(_)) => {
            bad.push("invalid timestamp_field: only with timestamp 'field'".into())
        }
        (TimestampFrom::Field, Some(_)) if !matches!(dt, DataType::Json | DataType::Schema) => {
            bad.push("invalid timestamp_field: needs a json or schema store".into())
        }
        _ => {}
    }
    let timestamp_unit = match string("timestamp_unit", &mut bad).as_deref() {
        None | Some("") => Unit::Ns,
        Some(u) => Unit::parse(u).unwrap_or_else(|| {
            bad.push("invalid timestamp_unit: must be 'ns', 'us', 'ms' or 's'".into());
            Unit::Ns
        }),
    };
    let boolean = |name: &str, bad: &mut Vec<String>| -> bool {
        match m.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                bad.push(format!("invalid {name}: must be a boolean"));
                false
            }
        }
    };
    let clean_session = boolean("clean_session", &mut bad);
    let include_topic = boolean("include_topic", &mut bad);
    if include_topic && dt != DataType::Json {
        bad.push("invalid include_topic: needs a json store".into());
    }
    let qos = match m.get("qos") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(q @ (0 | 1)) => q as u8,
            _ => {
                bad.push("invalid qos: must be 0 or 1".into());
                1
            }
        },
    };
    let mut topics = Vec::new();
    match m.get("topics") {
        None | Some(Value::Null) => bad.push("topics is required".into()),
        Some(Value::Array(a)) if a.is_empty() => {
            bad.push("invalid topics: must not be empty".into())
        }
        Some(Value::Array(a)) if a.len() > MAX_TOPICS => {
            bad.push(format!("invalid topics: at most {MAX_TOPICS}"))
        }
        Some(Value::Array(a)) => {
            for t in a {
                match t {
                    Value::String(s) => match check_filter(s) {
                        Ok(()) if !topics.contains(s) => topics.push(s.clone()),
                        Ok(()) => {}
                        Err(e) => {
                            bad.push(format!("invalid topics: {e}"));
                            break;
                        }
                    },
                    _ => {
                        bad.push("invalid topics: must be a list of strings".into());
                        break;
                    }
                }
            }
        }
        Some(_) => bad.push("invalid topics: must be a list of topic filters".into()),
    }
    if !bad.is_empty() {
        return Err(bad.join("; "));
    }
    Ok(Spec {
        id: String::new(),
        broker_url,
        topics,
        qos,
        client_id,
        username,
        password,
        ca_file,
        clean_session,
        timestamp,
        timestamp_field,
        timestamp_unit,
        include_topic,
        created_at: clock::rfc3339_nanos(now_ns()),
        created_by: Role::Store,
        last_timestamp: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: &str) -> String {
        parse_create(body.as_bytes(), DataType::Json).unwrap_err()
    }

    #[test]
    fn create_requests_are_validated() {
        let e = err(
            r#"{"broker_url":"http://h","topics":["a/#/b"],"qos":2,"timestamp_unit":"h","clean_session":"no","colour":1}"#,
        );
        for field in [
            "broker_url",
            "topics",
            "qos",
            "timestamp_unit",
            "clean_session",
            "\"colour\"",
        ] {
            assert!(e.contains(field), "{field} in {e}");
        }
        assert!(err(r#"{"topics":["a"]}"#).contains("broker_url is required"));
        assert!(err(r#"{"broker_url":"tcp://h"}"#).contains("topics is required"));
        assert!(err(r#"{"broker_url":"tcp://h","topics":[]}"#).contains("must not be empty"));
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        let body = json!({"broker_url":"tcp://h","topics":many}).to_string();
        assert!(err(&body).contains("at most 64"));
        let long = json!({"broker_url":"tcp://h","topics":["a".repeat(1025)]}).to_string();
        assert!(err(&long).contains("1024"));
        assert!(
            err(r#"{"broker_url":"tcp://h","topics":["a"],"timestamp":"field"}"#)
                .contains("timestamp_field is required")
        );
        assert!(err(
            r#"{"broker_url":"tcp://h","topics":["a"],"timestamp":"now","timestamp_field":"t"}"#
        )
        .contains("timestamp_field"));
        assert!(
            err(r#"{"broker_url":"tcp://h","topics":["a"],"password":"p"}"#)
                .contains("needs a username")
        );
        assert!(
            err(r#"{"broker_url":"tcp://h","topics":["a"],"client_id":""}"#).contains("client_id")
        );
        let text = parse_create(
            br#"{"broker_url":"tcp://h","topics":["a"],"include_topic":true,"timestamp_field":"t"}"#,
            DataType::Text,
        )
        .unwrap_err();
        assert!(
            text.contains("include_topic") && text.contains("timestamp_field"),
            "{text}"
        );

        let s = parse_create(
            br#"{"broker_url":"mqtts://h","topics":["z/+","z/+"],"qos":0,"timestamp_field":"ts","timestamp_unit":"ms","include_topic":true,"username":"u","password":"p"}"#,
            DataType::Json,
        )
        .unwrap();
        assert_eq!(s.topics, ["z/+"]);
        assert_eq!(
            (s.qos, s.timestamp, s.timestamp_unit, s.include_topic),
            (0, TimestampFrom::Field, Unit::Ms, true)
        );
        assert!(!s.clean_session);
        let d = parse_create(
            br#"{"broker_url":"tcp://h","topics":["a"]}"#,
            DataType::Binary,
        )
        .unwrap();
        assert_eq!((d.qos, d.timestamp), (1, TimestampFrom::Now));
    }
}
