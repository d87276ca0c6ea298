//! Local mode's CDN: the output store's `videos/` served over HTTP with the headers a player
//! needs (HLS MIME types, byte ranges, CORS, cache rules). With a bucket, the CDN serves it.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;

use super::AppState;
use crate::storage::{ObjectMeta, Store};

/// The `/videos` service when the output store is a local folder.
pub fn local_cdn(store: &dyn Store) -> Option<Router<AppState>> {
    let root = store.local_path("videos")?;
    std::fs::create_dir_all(&root).ok()?;
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers(Any)
        .expose_headers([header::CONTENT_LENGTH, header::CONTENT_RANGE]);
    Some(
        Router::new()
            // A folder is not a file: 404, as a bucket CDN answers, not a redirect to `…/`.
            .fallback_service(ServeDir::new(root).append_index_html_on_directories(false))
            .layer(axum::middleware::from_fn(player_headers))
            .layer(cors),
    )
}

/// Longest name (bytes) a folder entry can have, and longest path below the store this CDN
/// looks up: nothing published is near either, and asking the file system about a longer one
/// fails with ENAMETOOLONG, which ServeDir answers with 500.
const MAX_NAME: usize = 255;
const MAX_PATH: usize = 1024;

/// Content-Type and Cache-Control by file name, as the GCS backend sets them on objects; 404
/// for a path too long to name a file.
async fn player_headers(request: Request, next: Next) -> Response {
    let path: Vec<u8> = percent_encoding::percent_decode_str(request.uri().path()).collect();
    if path.len() > MAX_PATH || path.split(|b| *b == b'/').any(|name| name.len() > MAX_NAME) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let meta = ObjectMeta::for_key(request.uri().path());
    let mut response = next.run(request).await;
    if response.status().is_success() {
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(meta.content_type),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(meta.cache_control),
        );
    }
    response
}
