//! `GET /thumbnail/{id}.jpg?time=S&width=W` (or `.png`): one picture of a video at any time,
//! decoded on demand from its nearest published rendition (`jobs::frames`), a few at once at
//! most (beyond: 429).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::{ApiError, AppState};
use crate::jobs::frames::{self, ThumbnailError};
use crate::jobs::validate_video_id;
use crate::media::picture::ImageFormat;

use crate::jobs::frames::MAX_WIDTH;
/// How long a client waits before trying a refused thumbnail again.
const RETRY_AFTER: u64 = 1;
/// Cache-Control of a finished video's thumbnail: its renditions no longer change.
const FINISHED: &str = "public, max-age=86400";

/// Decodes allowed at once (`THUMBNAIL_CONCURRENCY`), shared by every request of the route.
#[derive(Clone)]
pub struct Decodes(pub Arc<Semaphore>);

pub async fn thumbnail(
    State(state): State<AppState>,
    axum::Extension(decodes): axum::Extension<Decodes>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (id, as_format) = match file.rsplit_once('.') {
        Some((id, "jpg")) => (id, ImageFormat::Jpeg),
        Some((id, "png")) => (id, ImageFormat::Png),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "`{file}` is not `<videoId>.jpg` or `<videoId>.png`"
            )));
        }
    };
    validate_video_id(id).map_err(ApiError::BadRequest)?;
    let (time, width) = parse_query(query.as_deref().unwrap_or(""))?;
    let status = state
        .jobs
        .status(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no video `{id}`")))?;
    if let Some(source) = &status.source
        && time > source.duration_seconds + 1e-3
    {
        let duration = source.duration_seconds;
        return Err(ApiError::BadRequest(
            ThumbnailError::PastTheEnd { time, duration }.to_string(),
        ));
    }
    let _permit = decodes.0.try_acquire().map_err(|_| ApiError::Busy {
        message: "too many thumbnails are being made; try again shortly".into(),
        retry_after: RETRY_AFTER,
    })?;
    let made = frames::thumbnail(state.output().clone(), &status, time, width, as_format).await;
    let (bytes, _, _) = made.map_err(|e| match e {
        ThumbnailError::NotPublished => ApiError::NotFound(format!("`{id}`: {e}")),
        ThumbnailError::PastTheEnd { .. } => ApiError::BadRequest(e.to_string()),
        ThumbnailError::Media(e) => ApiError::Unexpected(anyhow::Error::new(e)),
    })?;
    let cache = match status.is_made() {
        true => FINISHED,
        false => "no-cache",
    };
    let headers = [
        (header::CONTENT_TYPE, as_format.content_type()),
        (header::CACHE_CONTROL, cache),
    ];
    Ok((headers, bytes).into_response())
}

/// `time` (seconds, default 0) and `width` (pixels, 1–`MAX_WIDTH`) from the query string;
/// other parameters are ignored, a repeated or malformed one is refused.
fn parse_query(query: &str) -> Result<(f64, Option<u32>), ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let (mut time, mut width) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            percent_encoding::percent_decode_str(&s)
                .decode_utf8()
                .map(|v| v.to_string())
                .map_err(|_| bad("the query is not UTF-8".into()))
        };
        let (name, value) = (decode(name)?, decode(value)?);
        match name.as_str() {
            "time" if time.is_none() => {
                let t: f64 = value
                    .parse()
                    .map_err(|_| bad(format!("time `{value}` is not a number")))?;
                if !t.is_finite() || t < 0.0 {
                    return Err(bad(format!("time {value} is not 0 or more seconds")));
                }
                time = Some(t);
            }
            "width" if width.is_none() => {
                let w: u32 = value
                    .parse()
                    .ok()
                    .filter(|w| (1..=MAX_WIDTH).contains(w))
                    .ok_or_else(|| {
                        bad(format!("width `{value}` is not 1 to {MAX_WIDTH} pixels"))
                    })?;
                width = Some(w);
            }
            "time" | "width" => return Err(bad(format!("`{name}` is given twice"))),
            _ => {}
        }
    }
    Ok((time.unwrap_or(0.0), width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_gives_a_time_and_a_width_or_a_reason() {
        assert_eq!(parse_query("").unwrap(), (0.0, None));
        assert_eq!(parse_query("time=2.5&width=320").unwrap(), (2.5, Some(320)));
        assert_eq!(parse_query("width=1920&x=1").unwrap(), (0.0, Some(1920)));
        for bad in [
            "time=-1",
            "time=abc",
            "time=inf",
            "width=0",
            "width=1921",
            "width=-5",
            "time=1&time=2",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }
}
