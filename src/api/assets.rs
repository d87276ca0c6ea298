//! `GET /assets/hls.min.js`: the pinned hls.js build.rs fetched from the npm registry and checked
//! against its SHA-512, embedded in the binary so the player page needs no third-party CDN.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The hls.js release embedded (build.rs's `VERSION`).
pub const HLS_JS_VERSION: &str = env!("HLS_JS_VERSION");

const HLS_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hls.min.js"));

/// Where the player page loads the embedded hls.js from, relative to `/player/<id>`; the
/// version in the query makes the year-long cache safe across upgrades.
pub fn hls_js_path() -> String {
    format!("../assets/hls.min.js?v={HLS_JS_VERSION}")
}

pub async fn hls_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        HLS_JS,
    )
        .into_response()
}
