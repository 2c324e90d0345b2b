//! The pages of one store: the store page (figures, live tail and chart,
//! soft delete, reset and delete), the query, schema and connections
//! pages. The live parts are scripts in `web/static/` that talk to the
//! REST API and the WebSocket read stream with the session cookie.
//!
//! Reset and delete are HTML forms: they need the session's CSRF token and
//! the store's name typed again.

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{error_page, format, open_for, render, store_error, Nav, Viewer};
use crate::state::AppState;
use crate::store::DataType;

/// Which tab of a store's pages is shown.
pub struct Tabs {
    pub name: String,
    pub current: &'static str,
    pub schema: bool,
    /// Alert rules apply (json and schema stores).
    pub rules: bool,
}

impl Tabs {
    pub fn new(name: String, current: &'static str, data_type: DataType) -> Tabs {
        Tabs {
            name,
            current,
            schema: data_type == DataType::Schema,
            rules: matches!(data_type, DataType::Json | DataType::Schema),
        }
    }
}

#[derive(Template)]
#[template(path = "store.html")]
struct StorePage {
    nav: Nav,
    tabs: Tabs,
    data_type: String,
    size: String,
    fill: String,
    objects: u64,
    oldest: String,
    newest: String,
    rate: String,
    blocks: String,
    durability: String,
    message: Option<String>,
}

/// `GET /stores/{name}`.
pub async fn store_show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    store_page(&state, &viewer, &name, StatusCode::OK, None).await
}

async fn store_page(
    state: &AppState,
    viewer: &Viewer,
    name: &str,
    status: StatusCode,
    message: Option<String>,
) -> Response {
    let s = match open_for(state, viewer, name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let st = match s.stats() {
        Ok(st) => st,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let page = StorePage {
        nav: viewer.nav(),
        tabs: Tabs::new(name.to_string(), "store", st.data_type),
        data_type: st.data_type.as_str().to_string(),
        size: format::human_bytes(st.footprint_bytes),
        fill: format::percent(st.active_blocks as u64, st.num_blocks as u64),
        objects: st.object_count,
        oldest: format::time(st.oldest_timestamp),
        newest: format::time(st.newest_timestamp),
        rate: format::rate(crate::summary::insert_rate(&state.rates, name, &s)),
        blocks: format!(
            "{} × {} (index blocks {})",
            st.num_blocks,
            format::human_bytes(st.data_block_size as u64),
            format::human_bytes(st.index_block_size as u64)
        ),
        durability: st.durability.clone(),
        message,
    };
    (status, render(&page)).into_response()
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    /// The store's name, typed again.
    #[serde(default)]
    confirm: String,
}

/// Checks a reset/delete form: CSRF token and the typed name.
fn confirmed(viewer: &Viewer, name: &str, form: &ConfirmForm) -> Result<(), (StatusCode, String)> {
    if !viewer.csrf_ok(&form.csrf) {
        return Err((StatusCode::FORBIDDEN, "invalid CSRF token".into()));
    }
    if form.confirm.trim() != name {
        return Err((
            StatusCode::BAD_REQUEST,
            "Type the store's name exactly to confirm.".into(),
        ));
    }
    Ok(())
}

/// `POST /stores/{name}/reset`: removes every object (typed confirmation).
pub async fn store_reset(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    if let Err(r) = open_for(&state, &viewer, &name).await {
        return r;
    }
    if let Err((status, msg)) = confirmed(&viewer, &name, &form) {
        return store_page(&state, &viewer, &name, status, Some(msg)).await;
    }
    match state.stores.reset(&name).await {
        Ok(()) => {
            tracing::info!(store = %name, "console: store reset");
            store_page(
                &state,
                &viewer,
                &name,
                StatusCode::OK,
                Some("Store reset.".into()),
            )
            .await
        }
        Err(e) => store_error(e),
    }
}

/// `POST /stores/{name}/delete`: deletes the store (typed confirmation).
pub async fn store_delete(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    if let Err(r) = open_for(&state, &viewer, &name).await {
        return r;
    }
    if let Err((status, msg)) = confirmed(&viewer, &name, &form) {
        return store_page(&state, &viewer, &name, status, Some(msg)).await;
    }
    match state.stores.delete(&name).await {
        Ok(()) => {
            tracing::info!(store = %name, "console: store deleted");
            Redirect::to(if viewer.session.scope.is_admin() {
                "/"
            } else {
                "/login"
            })
            .into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Template)]
#[template(path = "query.html")]
struct QueryPage {
    nav: Nav,
    tabs: Tabs,
}

/// `GET /stores/{name}/query`.
pub async fn query_show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    tab_page(&state, &viewer, name, "query", |nav, tabs| QueryPage {
        nav,
        tabs,
    })
    .await
}

pub struct FieldRow {
    pub index: u32,
    pub name: String,
    pub ty: String,
}

#[derive(Template)]
#[template(path = "schema.html")]
struct SchemaPage {
    nav: Nav,
    tabs: Tabs,
    version: u32,
    fields: Vec<FieldRow>,
    types: Vec<&'static str>,
}

/// The field types a schema accepts (the names its JSON uses).
const FIELD_TYPES: &[&str] = &[
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32",
    "float64", "string",
];

/// `GET /stores/{name}/schema`.
pub async fn schema_show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    let s = match open_for(&state, &viewer, &name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if s.config().data_type != DataType::Schema {
        return error_page(StatusCode::NOT_FOUND, "not a schema store");
    }
    let schema = s.schema();
    let fields = schema
        .as_ref()
        .map(|sc| {
            sc.fields
                .iter()
                .map(|f| FieldRow {
                    index: f.index,
                    name: f.name.clone(),
                    ty: f.ty.as_str().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    render(&SchemaPage {
        nav: viewer.nav(),
        tabs: Tabs::new(name, "schema", DataType::Schema),
        version: schema.map(|s| s.version).unwrap_or(0),
        fields,
        types: FIELD_TYPES.to_vec(),
    })
}

#[derive(Template)]
#[template(path = "connections.html")]
struct ConnectionsPage {
    nav: Nav,
    tabs: Tabs,
}

/// `GET /stores/{name}/connections`.
pub async fn connections_show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    tab_page(&state, &viewer, name, "connections", |nav, tabs| {
        ConnectionsPage { nav, tabs }
    })
    .await
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    nav: Nav,
    tabs: Tabs,
}

/// `GET /stores/{name}/alerts`: the store's alert rules and the alerts
/// they fired (json and schema stores; others have no rules: 404).
pub async fn alerts_show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    let s = match open_for(&state, &viewer, &name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tabs = Tabs::new(name, "alerts", s.config().data_type);
    if !tabs.rules {
        return error_page(
            StatusCode::NOT_FOUND,
            "alert rules are only available for json and schema stores",
        );
    }
    render(&AlertsPage {
        nav: viewer.nav(),
        tabs,
    })
}

/// A store's tab page that needs only its navigation: `page` builds it.
async fn tab_page<T: Template>(
    state: &AppState,
    viewer: &Viewer,
    name: String,
    current: &'static str,
    page: impl FnOnce(Nav, Tabs) -> T,
) -> Response {
    let s = match open_for(state, viewer, &name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tabs = Tabs::new(name, current, s.config().data_type);
    render(&page(viewer.nav(), tabs))
}
