//! `GET /static/{path}`: the console's CSS, scripts and icon from
//! `web/static/`, embedded in the binary by rust-embed (debug builds read
//! the folder at run time, so edits show without a rebuild).
//!
//! Each answer has its content type from the extension, an ETag (the
//! file's SHA-256, computed at build time) and `Cache-Control: no-cache`:
//! browsers revalidate and get a 304 while the binary is unchanged.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/static/"]
pub struct Assets;

/// The content type of an asset, by extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("css") => "text/css; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Total bytes of the embedded assets.
pub fn total_bytes() -> usize {
    Assets::iter()
        .filter_map(|p| Assets::get(&p).map(|f| f.data.len()))
        .sum()
}

/// `GET /static/{*path}`.
pub async fn static_get(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(file) = Assets::get(&path) else {
        return super::error_page(StatusCode::NOT_FOUND, "not found");
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!(
        "\"{}\"",
        hash[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let cache = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let mut res = (cache, file.data.into_owned()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_budget() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("console.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("icon.svg"), "image/svg+xml");
        assert!(Assets::get("console.css").is_some());
        // The budget: all embedded assets within 150 KB.
        assert!(total_bytes() <= 150 * 1024, "{} bytes", total_bytes());
    }
}
