//! `POST /upload`: a multipart upload (`file`, optional `metadata`, no other part) streamed into
//! the input store, then queued as a job. The body never sits in memory: chunks go to the store
//! as they arrive, and a size past `MAX_VIDEO_SIZE` stops the upload with nothing kept.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Multipart, State, multipart::Field};
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Accepted, ApiError, AppState, PendingUpload};
use crate::jobs::{Admitted, JobRequest, Source, watchdog};
use crate::media::input::Origin;
use crate::media::source::SourceInfo;
use crate::storage::StoreObject;

/// Largest `metadata` part.
pub(super) const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Room for multipart framing and the metadata part beyond the file itself.
const MULTIPART_OVERHEAD: u64 = 1024 * 1024;

/// How long the bucket event of an object `/upload` is still receiving waits for it (the
/// longest request Cloud Run serves), and then, once it is stored, for its job to be queued.
const RECEIVING: Duration = Duration::from_secs(3600);
const QUEUEING: Duration = Duration::from_secs(120);

/// Body bytes read and thrown away after refusing an upload, at most, and for how long.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

pub async fn upload(
    State(state): State<AppState>,
    version: Version,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    match receive(&state, &headers, &mut multipart).await {
        Ok(response) => response,
        Err(error) => refuse(error, version, multipart),
    }
}

/// Answers with `error`, and reads the rest of the body in the background (up to a cap): an
/// HTTP/1.1 client still sending would otherwise see a broken pipe instead of the answer.
fn refuse(error: ApiError, version: Version, mut multipart: Multipart) -> Response {
    tokio::spawn(async move {
        let mut left = DRAIN_BYTES;
        let drain = async {
            while let Ok(Some(mut field)) = multipart.next_field().await {
                while let Ok(Some(chunk)) = field.chunk().await {
                    left = left.saturating_sub(chunk.len());
                    if left == 0 {
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    });
    error.into_refusal(version)
}

/// Stores the upload and queues its job.
async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    multipart: &mut Multipart,
) -> Result<Response, ApiError> {
    let max = state.settings.transcode.max_video_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max + MULTIPART_OVERHEAD) {
        return Err(ApiError::TooLarge(max));
    }
    state.jobs.check_room()?;

    let video_id = uuid::Uuid::new_v4().to_string();
    let mut stored: Option<(String, u64)> = None;
    let mut metadata = None;
    let result = async {
        while let Some(field) = multipart.next_field().await.map_err(bad_multipart)? {
            match field.name() {
                Some("file") if stored.is_none() => {
                    let name = safe_file_name(field.file_name())?;
                    let key = format!("pending/{video_id}_{name}");
                    PendingUpload::hold(state, &key, &video_id, metadata.clone(), RECEIVING)
                        .await?;
                    let size = stream_to_store(state, &key, field, max).await?;
                    stored = Some((key, size));
                }
                Some("file") => {
                    return Err(ApiError::BadRequest("more than one `file` part".into()));
                }
                Some("metadata") if metadata.is_none() => {
                    metadata = Some(read_metadata(field).await?);
                }
                Some("metadata") => {
                    return Err(ApiError::BadRequest("more than one `metadata` part".into()));
                }
                Some(other) => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown part `{}`: only `file` and `metadata` are read",
                        other.escape_default()
                    )));
                }
                None => {
                    return Err(ApiError::BadRequest("a part without a name".into()));
                }
            }
        }
        Ok(())
    }
    .await;
    let stored_key = stored.as_ref().map(|(key, _)| key.clone());
    if let Err(e) = result {
        if let Some(key) = &stored_key {
            let _ = state.input.delete(key).await;
        }
        let _ = state.input.delete(&PendingUpload::key_of(&video_id)).await;
        return Err(e);
    }
    let Some((key, size)) = stored else {
        return Err(ApiError::BadRequest(
            "the multipart body has no `file` part".into(),
        ));
    };
    metrics::counter!("transcoder_upload_bytes_total").increment(size);
    tracing::info!(%video_id, size, key = %key, "upload stored");
    // The record now carries the metadata, for whoever plans the video.
    PendingUpload::hold(state, &key, &video_id, metadata.clone(), QUEUEING).await?;
    start_stored(state, video_id, key, metadata).await
}

/// Queues the job for an upload just stored as `key` (202), or removes it if the job cannot be
/// queued.
pub(in crate::api) async fn start_stored(
    state: &AppState,
    video_id: String,
    key: String,
    metadata: Option<serde_json::Value>,
) -> Result<Response, ApiError> {
    // Probed where it lies (a bucket's object by ranged reads, never copied into scratch).
    let probe = probe_stored(state, &key).await;
    let duration = probe.as_ref().map(|p| p.duration_seconds);
    let request = JobRequest {
        video_id: video_id.clone(),
        source: Source::Object {
            store: state.input.clone(),
            key: key.clone(),
        },
        output: state.output().clone(),
        metadata,
        probe,
    };
    let status = match state.jobs.submit(request).await {
        Ok(Admitted::New(status) | Admitted::Existing(status)) => status,
        Err(e) => {
            let _ = state.input.delete(&key).await;
            let _ = state.input.delete(&PendingUpload::key_of(&video_id)).await;
            return Err(e.into());
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted::new(state, &status, duration)),
    )
        .into_response())
}

fn bad_multipart(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::BadRequest(format!("the multipart body could not be read: {e}"))
}

/// Sends the part's chunks to the store as they arrive (a small bounded channel between the
/// two, so a slow store slows the upload instead of filling memory). Both run in this request's
/// task: if the client goes away, the store's write is dropped with it and keeps nothing.
async fn stream_to_store(
    state: &AppState,
    key: &str,
    mut field: Field<'_>,
    max: u64,
) -> Result<u64, ApiError> {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
    .boxed();
    let feed = async move {
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return None; // the store stopped (too large, or failed): it says why
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    let cut = std::io::Error::other("the upload was cut short");
                    let _ = tx.send(Err(cut)).await;
                    return Some(bad_multipart(e));
                }
            }
        }
    };
    let (written, read_error) = tokio::join!(state.input.put_stream(key, body, max), feed);
    match (written, read_error) {
        (Err(crate::storage::StoreError::TooLarge(limit)), _) => Err(ApiError::TooLarge(limit)),
        (_, Some(e)) => Err(e),
        (written, None) => Ok(written?),
    }
}

async fn read_metadata(mut field: Field<'_>) -> Result<serde_json::Value, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(bad_multipart)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(ApiError::BadRequest(format!(
                "`metadata` is larger than {MAX_METADATA_BYTES} bytes"
            )));
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "`metadata` is empty: send a JSON object, or leave the part out".into(),
        ));
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err(ApiError::BadRequest(
            "`metadata` must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!("`metadata` is not JSON: {e}"))),
    }
}

/// The uploaded file's name made safe for an object name: path-like or control characters are
/// refused (400), anything else outside `[A-Za-z0-9._-]` becomes `_`.
pub(super) fn safe_file_name(name: Option<&str>) -> Result<String, ApiError> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok("upload".into());
    };
    if name.contains(['/', '\\']) || name.chars().any(char::is_control) || name.starts_with('.') {
        return Err(ApiError::BadRequest(format!(
            "the file name `{}` is not acceptable (no paths, control characters or leading dots)",
            name.escape_default()
        )));
    }
    let safe: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .take(120)
        .collect();
    Ok(safe)
}

/// The source probed, when the store keeps it as a local file: its duration gives the time
/// estimate and the job uses it as is. `None` if it cannot be probed here; the job then probes
/// it itself and reports any problem.
pub async fn probe_local(state: &AppState, key: &str) -> Option<SourceInfo> {
    let path = state.input.local_path(key)?;
    if !path.is_file() {
        return None;
    }
    probe_origin(state, Origin::File(path)).await
}

/// [`probe_local`] for a just-stored upload, wherever it lies: a bucket's object is probed in
/// place by ranged reads.
async fn probe_stored(state: &AppState, key: &str) -> Option<SourceInfo> {
    if state.input.local_path(key).is_some() {
        return probe_local(state, key).await;
    }
    let object = StoreObject::open(state.input.clone(), key).await.ok()?;
    probe_origin(state, Origin::Object(Arc::new(object))).await
}

async fn probe_origin(state: &AppState, origin: Origin) -> Option<SourceInfo> {
    let limits = state.settings.transcode.source_limits();
    // Under the jobs' stall and time limits: a source whose reads hang must not hold the request.
    let watch = state.jobs.engine().limits(0.0);
    let unstoppable = tokio_util::sync::CancellationToken::new();
    watchdog::probe(origin, limits, watch, &unstoppable)
        .await
        .ok()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_cannot_make_paths() {
        assert_eq!(
            safe_file_name(Some("IMG_0001.MOV")).unwrap(),
            "IMG_0001.MOV"
        );
        assert_eq!(
            safe_file_name(Some("My clip (1).mp4")).unwrap(),
            "My_clip__1_.mp4"
        );
        assert_eq!(safe_file_name(None).unwrap(), "upload");
        for bad in ["../etc/passwd", "a/b.mp4", "a\\b.mp4", ".hidden", "a\u{0}b"] {
            assert!(safe_file_name(Some(bad)).is_err(), "{bad}");
        }
    }
}
