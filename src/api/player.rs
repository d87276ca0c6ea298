//! `GET /player/{id}`: a small page that plays the video with hls.js and shows the job's
//! progress while tiers are still encoding.

use axum::extract::{Path, State};
use axum::response::Html;

use super::{ApiError, AppState};
use crate::jobs::validate_video_id;

pub async fn player(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, ApiError> {
    validate_video_id(&id).map_err(ApiError::BadRequest)?;
    Ok(Html(page(
        &id,
        &state.public_base_url,
        &state.settings.hls_js_url,
    )))
}

/// The page for video `id`; `base` is the public base URL of the output store.
pub fn page(id: &str, base: &str, hls_js_url: &str) -> String {
    format!(
        "<!doctype html><title>{id}</title><video id=v controls></video>\
         <script src=\"{hls_js_url}\"></script><script>\
         const h=new Hls();h.loadSource('{base}/videos/{id}/manifest/master.m3u8');\
         h.attachMedia(document.getElementById('v'));</script>"
    )
}
