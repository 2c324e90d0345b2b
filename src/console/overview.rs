//! `GET /`: every store the session may see with its figures, and the
//! server's own (version, uptime, free space, TLS, Unix socket).
//!
//! The insert rate is the number of objects stored in the last
//! [`RATE_WINDOW`] divided by its length: read from the store's time index
//! (handles only, no data), so it needs no counter kept elsewhere.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{format, render, Nav, Viewer};
use crate::state::AppState;
use crate::store::{self, Query, Store};

/// The window the insert rate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Most handles counted for the rate (bounds the work per page view).
const RATE_MAX: usize = 100_000;

pub struct StoreRow {
    pub name: String,
    pub data_type: String,
    pub size: String,
    pub fill: String,
    pub objects: u64,
    pub oldest: String,
    pub newest: String,
    pub rate: String,
    /// Set when the store could not be opened.
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: Nav,
    stores: Vec<StoreRow>,
    version: &'static str,
    uptime: String,
    free_space: String,
    tls: bool,
    socket: String,
}

/// Objects per second stored over the last [`RATE_WINDOW`].
pub fn insert_rate(s: &Store) -> f64 {
    let now = store::now_ns();
    let start = now - RATE_WINDOW.as_nanos() as i64;
    let q = Query::range(start, now, RATE_MAX);
    let n = s.handles(&q).map(|h| h.len()).unwrap_or(0);
    n as f64 / RATE_WINDOW.as_secs_f64()
}

fn row(name: &str, s: &Arc<Store>) -> StoreRow {
    match s.stats() {
        Ok(st) => StoreRow {
            name: name.to_string(),
            data_type: st.data_type.as_str().to_string(),
            size: format::human_bytes(st.footprint_bytes),
            fill: format::percent(st.active_blocks as u64, st.num_blocks as u64),
            objects: st.object_count,
            oldest: format::time(st.oldest_timestamp),
            newest: format::time(st.newest_timestamp),
            rate: format::rate(insert_rate(s)),
            error: None,
        },
        Err(e) => broken(name, &e.to_string()),
    }
}

fn broken(name: &str, error: &str) -> StoreRow {
    StoreRow {
        name: name.to_string(),
        data_type: String::new(),
        size: String::new(),
        fill: String::new(),
        objects: 0,
        oldest: String::new(),
        newest: String::new(),
        rate: String::new(),
        error: Some(error.to_string()),
    }
}

/// Free bytes of the file system holding `path`.
fn free_space(path: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// `GET /`.
pub async fn overview_show(State(state): State<AppState>, viewer: Viewer) -> Response {
    let scope = viewer.session.scope.clone();
    let registry = state.stores.clone();
    let names: Vec<String> = tokio::task::spawn_blocking(move || registry.list())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|n| scope.opens(n))
        .collect();
    // Together: a store that is recovering delays the page by one
    // BUSY_WAIT at most, and shows as such.
    let opened = futures_util::future::join_all(names.iter().map(|n| state.stores.open(n))).await;
    let stores = tokio::task::spawn_blocking(move || {
        names
            .iter()
            .zip(opened)
            .map(|(n, s)| match s {
                Ok(s) => row(n, &s),
                Err(e) => broken(n, &e.to_string()),
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let page = OverviewPage {
        nav: viewer.nav(),
        stores,
        version: env!("CARGO_PKG_VERSION"),
        uptime: format::uptime(state.console.started.elapsed()),
        free_space: free_space(&state.config.base_path)
            .map(format::human_bytes)
            .unwrap_or_else(|| "unknown".into()),
        tls: state.config.tls.is_some(),
        socket: state
            .config
            .socket_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "disabled".into()),
    };
    render(&page)
}
