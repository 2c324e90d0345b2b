//! `GET /api/stores/:store/export`: every object of a range, oldest first,
//! as a CSV or NDJSON download ([`crate::codec::export`] for the formats).
//!
//! The range is read on a blocking thread in batches that release the
//! store's lock between them; each batch's chunk goes through a channel of
//! [`CHANNEL_CHUNKS`] slots into the streamed body, so a slow client holds
//! the reader back (the blocking send waits) and the server never buffers
//! more than those chunks, whatever the range.
//!
//! A store deleted or reset during the export ends the body with an error:
//! hyper then cuts the connection without the final chunk, so the client
//! sees an incomplete transfer (curl: exit 18), never a file that looks
//! complete.

use axum::body::{Body, Bytes};
use axum::extract::RawQuery;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::{url_pairs, StoreAccess};
use crate::codec::export::{self, ExportError, Format, Plan};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::Filter;

/// Chunks buffered between the reader thread and the client at most.
pub const CHANNEL_CHUNKS: usize = 4;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/stores/{store}/export", get(data_export))
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> ApiError {
        match e {
            ExportError::Invalid(m) => ApiError::bad_request(m),
            ExportError::Store(e) => e.into(),
            ExportError::Gone => ApiError::bad_request(e.to_string()),
        }
    }
}

#[derive(Default)]
struct Params {
    format: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    since: Option<String>,
    filter: Option<String>,
    filter_ignore_case: Option<String>,
    fields: Option<String>,
}

async fn data_export(
    access: StoreAccess,
    axum::extract::State(state): axum::extract::State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut p = Params::default();
    for (k, v) in url_pairs(q.as_deref().unwrap_or("")) {
        let slot = match k.as_str() {
            "format" => &mut p.format,
            "start_time" => &mut p.start_time,
            "end_time" => &mut p.end_time,
            "since" => &mut p.since,
            "filter" => &mut p.filter,
            "filter_ignore_case" => &mut p.filter_ignore_case,
            "fields" => &mut p.fields,
            _ => continue,
        };
        *slot = Some(v);
    }
    let format = Format::parse(p.format.as_deref()).map_err(ApiError::bad_request)?;
    let (start, end) = export::resolve_range(
        p.start_time.as_deref(),
        p.end_time.as_deref(),
        p.since.as_deref(),
    )?;
    let fields = export::parse_fields(p.fields.as_deref())?;
    let filter = p.filter.as_deref().filter(|f| !f.is_empty()).map(|f| {
        let ic = matches!(p.filter_ignore_case.as_deref(), Some("true") | Some("1"));
        Filter::new(f, ic)
    });
    let store = access.store.clone();
    // The plan may read the whole range (a json store's CSV columns): off
    // the async workers, and before the response starts, so that its
    // refusal is still a 400.
    let s = store.clone();
    let plan =
        tokio::task::spawn_blocking(move || Plan::new(&s, format, start, end, filter, fields))
            .await
            .map_err(ApiError::internal)??;
    state.metrics.query();
    let name = export::file_name(&access.name, start, end, format);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_CHUNKS);
    let registry = state.stores.clone();
    let store_name = access.name.clone();
    tokio::task::spawn_blocking(move || {
        let r = plan.run(
            &store,
            || registry.is_open(&store_name, &store),
            |chunk| tx.blocking_send(Ok(Bytes::from(chunk))).is_ok(),
        );
        if let Err(e) = r {
            tracing::info!(store = %store_name, "export ended early: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
