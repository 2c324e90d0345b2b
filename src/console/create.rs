//! Store creation (admin sessions): the form, its submission (the new key
//! is shown once, never again), and `GET /create/calc`, the `tsstore calc`
//! figures as JSON for the form's live preview (one implementation: the
//! CLI's, [`crate::units::capacity`]).

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{error_page, format, render, Nav, Viewer};
use crate::state::AppState;
use crate::store;

#[derive(Template)]
#[template(path = "create.html")]
struct CreatePage<'a> {
    nav: Nav,
    form: &'a CreateForm,
    error: Option<&'a str>,
    defaults: Defaults,
}

struct Defaults {
    num_blocks: u32,
    data_block_size: u32,
    index_block_size: u32,
}

#[derive(Template)]
#[template(path = "created.html")]
struct CreatedPage<'a> {
    nav: Nav,
    name: &'a str,
    key: &'a str,
}

#[derive(Deserialize, Default)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    data_type: String,
    #[serde(default)]
    num_blocks: String,
    #[serde(default)]
    data_block_size: String,
    #[serde(default)]
    index_block_size: String,
}

fn defaults(state: &AppState) -> Defaults {
    let d = state.config.store_defaults();
    Defaults {
        num_blocks: d.num_blocks,
        data_block_size: d.data_block_size,
        index_block_size: d.index_block_size,
    }
}

/// The refusal page for a store session, `None` for an admin.
fn refuse_non_admin(viewer: &Viewer) -> Option<Response> {
    (!viewer.session.scope.is_admin())
        .then(|| error_page(StatusCode::FORBIDDEN, "creating stores needs the admin key"))
}

/// `GET /create`.
pub async fn create_show(State(state): State<AppState>, viewer: Viewer) -> Response {
    if let Some(r) = refuse_non_admin(&viewer) {
        return r;
    }
    let form = CreateForm {
        data_type: "json".into(),
        ..CreateForm::default()
    };
    render(&CreatePage {
        nav: viewer.nav(),
        form: &form,
        error: None,
        defaults: defaults(&state),
    })
}

fn number(field: &str, v: &str) -> Result<u32, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(0);
    }
    v.parse()
        .map_err(|_| format!("{field} must be a whole number"))
}

/// `POST /create`.
pub async fn create_submit(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<CreateForm>,
) -> Response {
    if let Some(r) = refuse_non_admin(&viewer) {
        return r;
    }
    let again = |status: StatusCode, msg: &str| {
        (
            status,
            render(&CreatePage {
                nav: viewer.nav(),
                form: &form,
                error: Some(msg),
                defaults: defaults(&state),
            }),
        )
            .into_response()
    };
    if !viewer.csrf_ok(&form.csrf) {
        return again(StatusCode::FORBIDDEN, "invalid CSRF token: reload the page");
    }
    let name = form.name.trim().to_string();
    if name.is_empty() {
        return again(StatusCode::BAD_REQUEST, "name is required");
    }
    if let Err(e) = store::validate_name(&name) {
        return again(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let mut cfg = state.config.store_defaults();
    let parsed = (|| -> Result<(), String> {
        for (field, v, slot) in [
            ("blocks", &form.num_blocks, &mut cfg.num_blocks),
            (
                "data block size",
                &form.data_block_size,
                &mut cfg.data_block_size,
            ),
            (
                "index block size",
                &form.index_block_size,
                &mut cfg.index_block_size,
            ),
        ] {
            let n = number(field, v)?;
            if n != 0 {
                *slot = n;
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        return again(StatusCode::BAD_REQUEST, &e);
    }
    if !form.data_type.is_empty() {
        match form.data_type.parse() {
            Ok(t) => cfg.data_type = t,
            Err(_) => {
                return again(
                    StatusCode::BAD_REQUEST,
                    "invalid data type: must be binary, text, json, or schema",
                )
            }
        }
    }
    if let Err(e) = cfg.validate() {
        return again(StatusCode::BAD_REQUEST, &e.to_string());
    }
    if let Err(e) = state.check_space(&cfg).await {
        return again(e.status, &e.message);
    }
    match state.stores.create(&name, cfg).await {
        Ok((_, key)) => {
            tracing::info!(store = %name, "console: store created");
            render(&CreatedPage {
                nav: viewer.nav(),
                name: &name,
                key: &key.api_key,
            })
        }
        Err(e) => {
            let e = crate::error::ApiError::from(e);
            let mut res = again(e.status, &e.message);
            if let Some(secs) = e.retry_after {
                res.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, secs.into());
            }
            res
        }
    }
}

#[derive(Deserialize)]
pub struct CalcQuery {
    #[serde(default)]
    blocks: Option<u64>,
    #[serde(default)]
    data_size: Option<u32>,
    #[serde(default)]
    object_size: Option<u32>,
    #[serde(default)]
    rate: Option<f64>,
}

/// `GET /create/calc?blocks=&data_size=&object_size=&rate=`: capacity in
/// objects and retention at `rate` objects per second.
pub async fn create_calc(
    State(state): State<AppState>,
    _viewer: Viewer,
    Query(q): Query<CalcQuery>,
) -> Response {
    let d = state.config.store_defaults();
    let blocks = q
        .blocks
        .unwrap_or(d.num_blocks as u64)
        .clamp(2, u32::MAX as u64);
    let data_size = q.data_size.unwrap_or(d.data_block_size);
    let probe = store::Config {
        num_blocks: blocks as u32,
        data_block_size: data_size,
        ..store::Config::default()
    };
    if let Err(e) = probe.validate() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response();
    }
    let object_size = q.object_size.unwrap_or(100).max(1);
    let rate = q.rate.filter(|r| r.is_finite() && *r > 0.0).unwrap_or(1.0);
    let c = crate::units::capacity(blocks, data_size, object_size);
    let retention = c.capacity as f64 / rate;
    Json(json!({
        "objects_per_block": c.objects_per_block,
        "blocks_per_object": c.blocks_per_object,
        "capacity": c.capacity,
        "data_bytes": c.data_bytes,
        "data_size": format::human_bytes(c.data_bytes),
        "retention_seconds": retention,
        "retention": format::human_duration(retention),
    }))
    .into_response()
}
