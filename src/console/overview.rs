//! `GET /`: every store the session may see with its figures, and the
//! server's own (version, uptime, free space, TLS, Unix socket).
//!
//! The figures are the ones `GET /api/summary` serves ([`crate::summary`]),
//! which `web/static/overview.js` polls to keep the table current: one
//! request per interval whatever the number of stores.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{format, render, Nav, Viewer};
use crate::state::AppState;
use crate::summary::{LinkCounts, StoreSummary};

pub struct StoreRow {
    pub name: String,
    pub data_type: String,
    pub size: String,
    pub fill: String,
    pub objects: u64,
    pub oldest: String,
    pub newest: String,
    pub rate: String,
    /// The outbound links by status ("1 connected, 2 error"), "none".
    pub links: String,
    /// `status-error`, `status-connected`, `status-connecting` or empty.
    pub links_class: &'static str,
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

/// "1 connected, 2 error" and its class, as overview.js writes them.
fn links_text(l: &LinkCounts) -> (String, &'static str) {
    if l.0.is_empty() {
        return ("none".into(), "");
    }
    let text =
        l.0.iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ");
    let class = if l.0.contains_key("error") {
        "status-error"
    } else if l.0.contains_key("connected") {
        "status-connected"
    } else {
        "status-connecting"
    };
    (text, class)
}

fn row(s: StoreSummary) -> StoreRow {
    let (links, links_class) = links_text(&s.links);
    match s.figures {
        Some(f) => StoreRow {
            name: s.name,
            data_type: f.data_type,
            size: format::human_bytes(f.footprint_bytes),
            fill: format::percent(f.active_blocks as u64, f.num_blocks as u64),
            objects: f.object_count,
            oldest: format::time(f.oldest_timestamp),
            newest: format::time(f.newest_timestamp),
            rate: format::rate(f.insert_rate),
            links,
            links_class,
            error: None,
        },
        None => StoreRow {
            name: s.name,
            data_type: String::new(),
            size: String::new(),
            fill: String::new(),
            objects: 0,
            oldest: String::new(),
            newest: String::new(),
            rate: String::new(),
            links,
            links_class,
            error: Some(s.error.unwrap_or_default()),
        },
    }
}

/// Free bytes of the file system holding `path`.
fn free_space(path: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// `GET /`.
pub async fn overview_show(State(state): State<AppState>, viewer: Viewer) -> Response {
    let stores = state
        .summary(&viewer.session.scope, None)
        .await
        .into_iter()
        .map(row)
        .collect();
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
