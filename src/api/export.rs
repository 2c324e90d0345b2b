//! `GET /api/stores/:store/export`: every object of a range, oldest first,
//! as a CSV or NDJSON download ([`crate::codec::export`] for the formats).
//!
//! The range is read in batches, each one blocking call (off the async
//! workers) under one hold of the store's lock; each batch's chunk goes
//! through a channel of [`CHANNEL_CHUNKS`] slots into the streamed body,
//! and the next batch is read only once its chunk found a slot. So a slow
//! client holds the reader back, the server never buffers more than those
//! chunks whatever the range, and a waiting export holds no thread (slow
//! clients cannot use up the blocking pool the stores' syncs need).
//! Server shutdown ends an export like a deleted store does.
//!
//! A store deleted or reset during the export ends the body with an error:
//! hyper then cuts the connection without the final chunk, so the client
//! sees an incomplete transfer (curl: exit 18), never a file that looks
//! complete.

use std::sync::Arc;

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
use crate::store::{Filter, Store};

/// Chunks buffered between the reader and the client at most.
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
    let (plan, resets) = tokio::task::spawn_blocking(move || {
        let plan = Plan::new(&s, format, start, end, filter, fields)?;
        Ok::<_, ExportError>((plan, Plan::resets(&s)?))
    })
    .await
    .map_err(ApiError::internal)??;
    state.metrics.query();
    let name = export::file_name(&access.name, start, end, format);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_CHUNKS);
    tokio::spawn(pump(state, access.name, store, Arc::new(plan), resets, tx));
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

/// Reads the range batch by batch into `tx` until it is done or the
/// client went away (the send fails); a store deleted, reset or closed, or
/// the server shutting down, ends the body with an error instead, which
/// cuts the transfer.
async fn pump(
    state: AppState,
    name: String,
    store: Arc<Store>,
    plan: Arc<Plan>,
    resets: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    const SHUTTING_DOWN: &str = "the server is shutting down";
    let mut shutdown = state.shutdown.subscribe();
    // Sends one chunk; false if the client went away or shutdown began.
    async fn send(
        tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
        chunk: String,
    ) -> bool {
        tokio::select! {
            r = tx.send(Ok(Bytes::from(chunk))) => r.is_ok(),
            _ = shutdown.wait_for(|s| *s) => false,
        }
    }
    let header = plan.header();
    // A failed send returns, unless shutdown began: the loop's first check
    // then ends the body with its error.
    if !header.is_empty() && !send(&tx, &mut shutdown, header).await && !*shutdown.borrow() {
        return;
    }
    let mut lo = Some(plan.start);
    let failed = loop {
        let Some(l) = lo.filter(|l| *l <= plan.end) else {
            return;
        };
        if *shutdown.borrow() {
            break SHUTTING_DOWN.to_string();
        }
        if !state.stores.is_open(&name, &store) {
            break ExportError::Gone.to_string();
        }
        let (p, s) = (plan.clone(), store.clone());
        match tokio::task::spawn_blocking(move || p.batch(&s, l, resets)).await {
            Ok(Ok((chunk, _, next))) => {
                if !chunk.is_empty() && !send(&tx, &mut shutdown, chunk).await {
                    if *shutdown.borrow() {
                        break SHUTTING_DOWN.to_string();
                    }
                    return;
                }
                lo = next;
            }
            Ok(Err(e)) => break e.to_string(),
            Err(e) => break e.to_string(),
        }
    };
    tracing::info!(store = %name, "export ended early: {failed}");
    // The error takes the next free slot, after the chunks before it; the
    // sender stays alive until then (or until the connection is dropped),
    // since a dropped sender would end the body as if it were complete.
    // The store is let go first: a stalled client must not keep a deleted
    // store's memory.
    drop((store, plan));
    let _ = tx.send(Err(std::io::Error::other(failed))).await;
}
