//! `/api/stores/:store/rules` (create, list, get, delete) and
//! `/api/stores/:store/alerts`: a store's alert rules and the alerts they
//! fired (see [`crate::rules`]). Store key or admin key.
//!
//! A rule's `webhook` is held to the outbound policy of its creator's role,
//! as outbound connections are: the admin key's or a store key's (see
//! [`crate::outbound::policy`]). A URL the policy refuses at create is a 403
//! with the policy's one text; the role is kept with the rule and applies
//! at every delivery attempt.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};
use crate::auth::StoreAccess;
use crate::outbound::policy::{Role, REFUSED};
use crate::outbound::webhook::check_policy;
use crate::rules::{Rule, RuleError, Spec, StoreRules, MAX_ALERTS};
use crate::store::DataType;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a create waits for the webhook's host to resolve.
const CREATE_RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Alerts answered when `limit` is not given.
pub const DEFAULT_ALERTS: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/stores/{store}/rules",
            get(rules_list).post(rules_create),
        )
        .route(
            "/api/stores/{store}/rules/{name}",
            get(rules_get).delete(rules_delete),
        )
        .route("/api/stores/{store}/alerts", get(alerts_list))
}

fn rule_error(e: RuleError) -> ApiError {
    match e {
        RuleError::Duplicate(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        // The store's directory went away under the write: the store was
        // deleted meanwhile.
        RuleError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ApiError::not_found("store not found")
        }
        RuleError::Io(e) => ApiError::internal(e),
        RuleError::NotOpen => ApiError::unavailable("store is not open, retry later"),
        e => ApiError::bad_request(e.to_string()),
    }
}

/// The rules of the store `access` opened.
fn store_rules(state: &AppState, access: &StoreAccess) -> ApiResult<Arc<StoreRules>> {
    state
        .rules
        .get(&access.name)
        .ok_or_else(|| rule_error(RuleError::NotOpen))
}

fn not_found() -> ApiError {
    ApiError::not_found("rule not found")
}

async fn rules_list(access: StoreAccess, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let rules = store_rules(&state, &access)?;
    let list: Vec<Value> = rules.list().iter().map(|r| r.status()).collect();
    Ok(Json(json!({ "rules": list, "count": list.len() })))
}

async fn rules_get(
    access: StoreAccess,
    State(state): State<AppState>,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rule = store_rules(&state, &access)?
        .get(&name)
        .ok_or_else(not_found)?;
    Ok(Json(rule.status()))
}

async fn rules_delete(
    access: StoreAccess,
    State(state): State<AppState>,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rules = store_rules(&state, &access)?;
    let gone = tokio::task::spawn_blocking(move || rules.remove(&name))
        .await
        .map_err(ApiError::internal)?
        .map_err(rule_error)?;
    if gone {
        Ok(Json(json!({ "message": "rule deleted" })))
    } else {
        Err(not_found())
    }
}

/// The body of a create, checked for its shape (the values are checked by
/// [`Rule::new`]).
fn parse_create(body: &[u8]) -> Result<Spec, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    parse_rule(&v)
}

/// The `rules` of a push connection or an MQTT sink: an array of at most
/// [`crate::rules::MAX_RULES`] rule objects, each checked for its shape
/// (as persisted specs; [`check_conn_rules`] checks their values).
pub(super) fn parse_rules(v: Option<&Value>) -> Result<Vec<Value>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            if a.len() > crate::rules::MAX_RULES {
                return Err(RuleError::TooMany.to_string());
            }
            a.iter()
                .map(|r| serde_json::to_value(parse_rule(r)?).map_err(|e| e.to_string()))
                .collect()
        }
        Some(_) => Err("invalid rules: must be an array of rule objects".into()),
    }
}

/// One rule object, checked for its shape (a store's rule, or one of a
/// push connection's `rules`).
pub(super) fn parse_rule(v: &Value) -> Result<Spec, String> {
    let Some(obj) = v.as_object() else {
        return Err("invalid rule: expected a JSON object".into());
    };
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "name" | "condition" | "cooldown" | "webhook" | "webhook_headers"
        ) {
            return Err(format!(
                "invalid rule: unknown field '{}'",
                k.chars().take(64).collect::<String>()
            ));
        }
    }
    let text = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("invalid rule: {k} must be a string")),
        }
    };
    let mut webhook_headers = BTreeMap::new();
    match obj.get("webhook_headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let Value::String(v) = v else {
                    return Err(format!(
                        "invalid webhook header {:?}: value must be a string",
                        k.chars().take(64).collect::<String>()
                    ));
                };
                webhook_headers.insert(k.clone(), v.clone());
            }
        }
        Some(_) => return Err("invalid webhook_headers: must be an object of strings".into()),
    }
    Ok(Spec {
        name: text("name")?.ok_or("invalid rule: name is required")?,
        condition: text("condition")?.ok_or("invalid rule: condition is required")?,
        cooldown: text("cooldown")?,
        webhook: text("webhook")?,
        webhook_headers,
        created_by: Role::Store,
    })
}

async fn rules_create(
    access: StoreAccess,
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !matches!(
        access.store.config().data_type,
        DataType::Json | DataType::Schema
    ) {
        return Err(rule_error(RuleError::DataType));
    }
    let mut spec = parse_create(&body).map_err(ApiError::bad_request)?;
    spec.created_by = if access.admin {
        Role::Admin
    } else {
        Role::Store
    };
    let rule = Rule::new(spec).map_err(rule_error)?;
    check_webhook(&state, &access.name, &rule).await?;
    let rules = store_rules(&state, &access)?;
    let rule = tokio::task::spawn_blocking(move || rules.add(rule))
        .await
        .map_err(ApiError::internal)?
        .map_err(rule_error)?;
    Ok((StatusCode::CREATED, Json(rule.status())))
}

/// Refuses (403) a rule whose webhook the outbound policy refuses for its
/// creator's role; the reason goes to the log.
pub(super) async fn check_webhook(state: &AppState, store: &str, rule: &Rule) -> ApiResult<()> {
    let Some(o) = rule.webhook() else {
        return Ok(());
    };
    let policy = state.outbound.policy();
    if let Err(why) = check_policy(
        policy,
        rule.spec.created_by,
        o.url(),
        CREATE_RESOLVE_TIMEOUT,
    )
    .await
    {
        tracing::info!(%store, rule = %rule.spec.name, url = %crate::redact::url(rule.spec.webhook.as_deref().unwrap_or_default()), role = ?rule.spec.created_by, reason = %why.0, "webhook refused by the outbound policy");
        return Err(ApiError::new(StatusCode::FORBIDDEN, REFUSED));
    }
    Ok(())
}

/// Checks a push connection's rules (400 with a rule's message, 403 for a
/// webhook the policy refuses) as a store's rule is checked.
pub(super) async fn check_conn_rules(
    state: &AppState,
    access: &StoreAccess,
    specs: &[Value],
    role: Role,
) -> ApiResult<()> {
    if specs.is_empty() {
        return Ok(());
    }
    if !matches!(
        access.store.config().data_type,
        DataType::Json | DataType::Schema
    ) {
        return Err(rule_error(RuleError::DataType));
    }
    // Parsed here for the messages and the policy; the connection makes
    // its own (whose webhooks run).
    let rules =
        crate::rules::conn::ConnRules::new(&access.name, specs, role, None).map_err(rule_error)?;
    for r in rules.rules() {
        check_webhook(state, &access.name, r).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct AlertsParams {
    limit: Option<String>,
}

async fn alerts_list(
    access: StoreAccess,
    State(state): State<AppState>,
    Query(p): Query<AlertsParams>,
) -> ApiResult<Json<Value>> {
    let limit = match p.limit.as_deref() {
        None => DEFAULT_ALERTS,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_ALERTS).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid limit: an integer from 1 to {MAX_ALERTS}"
                )))
            }
        },
    };
    let alerts: Vec<Value> = store_rules(&state, &access)?
        .alerts(limit)
        .iter()
        .map(|a| a.to_json())
        .collect();
    Ok(Json(json!({ "count": alerts.len(), "alerts": alerts })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_deleted_under_a_rule_write_is_a_404() {
        let gone = RuleError::Io(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(rule_error(gone).status, StatusCode::NOT_FOUND);
        let full = RuleError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(rule_error(full).status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
