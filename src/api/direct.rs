//! Direct uploads: `POST /upload-url` hands the client a signed URL to PUT its file to, so large
//! files need not pass through the service. With a bucket as the input store the URL is the
//! bucket's own (V4 signed), and the bucket's finalize event (`/transcode`) starts the job; with
//! a local store it is `PUT /upload-url/{videoId}` on this service, signed with HMAC, and the
//! job starts once the body is stored. Either way the request is kept beside the object as
//! `pending/<videoId>.json`, so the uploader's metadata comes back in status.json.

mod receive;
mod signature;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::upload::{MAX_METADATA_BYTES, safe_file_name};
use super::{ApiError, AppState};
use crate::storage::{StoreError, UploadTerms};
pub use receive::receive;
pub use signature::UploadSigner;

/// What `POST /upload-url` takes; a member it does not know is refused.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UploadUrlRequest {
    file_name: String,
    content_type: String,
    #[serde(deserialize_with = "whole_number")]
    size_bytes: u64,
    #[serde(default, deserialize_with = "present")]
    metadata: Option<Value>,
}

/// A non-negative integer, written as JSON Schema's `integer` allows (`1000` or `1000.0`).
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(d)?;
    match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => Ok(n),
        (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not a non-negative whole number"
        ))),
    }
}

/// An optional member that, when present, is not null.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Err(serde::de::Error::custom("null is not a value here")),
        value => Ok(Some(value)),
    }
}

/// A pending upload, kept as `pending/<videoId>.json` in the input store from the moment its URL
/// is handed out: what was declared, and the metadata the job's status will carry.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingUpload {
    pub video_id: String,
    /// The object the upload goes to: `pending/<videoId>_<safe name>`.
    pub key: String,
    pub content_type: String,
    pub size_bytes: u64,
    /// Unix seconds after which the URL is refused.
    pub expires: u64,
    pub metadata: Option<Value>,
    /// `POST /upload` is receiving it and queues it itself: until `expires`, the object's own
    /// bucket event is answered 429 (see `receiving`).
    #[serde(default)]
    pub receiving: bool,
}

impl PendingUpload {
    /// Where the record of upload `video_id` is kept.
    pub fn key_of(video_id: &str) -> String {
        format!("pending/{video_id}.json")
    }

    /// The record of the direct upload whose object is `key` (`pending/<videoId>_<name>`),
    /// while it is there; `None` for any other object.
    pub async fn of_object(state: &AppState, video_id: &str, key: &str) -> Option<Self> {
        if !key.starts_with(&format!("pending/{video_id}_")) {
            return None; // not an upload's object: nothing to read
        }
        let record = state.input.get(&Self::key_of(video_id)).await.ok()??;
        let pending: PendingUpload = serde_json::from_slice(&record).ok()?;
        (pending.key == key).then_some(pending)
    }

    /// Seconds left while `POST /upload` is still receiving or queueing the object itself, so
    /// its bucket event must wait: the upload's plan carries the uploader's metadata, and a
    /// refused upload deletes the object the event would read. `None` once it has let go (or
    /// died).
    pub fn receiving_left(&self) -> Option<u64> {
        let left = self.expires.saturating_sub(now_unix());
        (self.receiving && left > 0).then_some(left)
    }

    /// Writes the record of an upload `POST /upload` receives, which holds its bucket event
    /// back for `hold`.
    pub async fn hold(
        state: &AppState,
        key: &str,
        video_id: &str,
        metadata: Option<Value>,
        hold: Duration,
    ) -> Result<(), StoreError> {
        let pending = PendingUpload {
            video_id: video_id.to_string(),
            key: key.to_string(),
            content_type: "application/octet-stream".into(),
            size_bytes: 0,
            expires: now_unix() + hold.as_secs(),
            metadata,
            receiving: true,
        };
        let record = serde_json::to_vec(&pending).expect("serialisable");
        state
            .input
            .put(&Self::key_of(video_id), record.into())
            .await
    }

    /// Whether `key` is such a record (not a source: its own finalize event starts nothing).
    pub fn is_record(key: &str) -> bool {
        key.strip_prefix("pending/")
            .and_then(|name| name.strip_suffix(".json"))
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
    }
}

/// The answer: where and how to send the file, and where to follow the video.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadUrl {
    video_id: String,
    upload_url: String,
    method: &'static str,
    /// Headers the PUT must carry exactly (they are signed).
    headers: serde_json::Map<String, Value>,
    expires_at: String,
    status_url: String,
    playback_url: String,
}

/// Whether the service takes a source of this Content-Type: any `video/*`, or
/// `application/octet-stream` (what the file is, the probe decides, as for `/upload`).
fn acceptable_type(content_type: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match content_type.split_once('/') {
        Some(("video", subtype)) => token(subtype),
        _ => content_type == "application/octet-stream",
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /upload-url`: 201 with a signed URL for a new video.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: UploadUrlRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{fileName, contentType, sizeBytes, metadata?}}: {e}"
        ))
    })?;
    let max = state.settings.transcode.max_video_size;
    if request.size_bytes == 0 || request.size_bytes > max {
        return Err(ApiError::BadRequest(format!(
            "sizeBytes {} is not between 1 and MAX_VIDEO_SIZE ({max} bytes)",
            request.size_bytes
        )));
    }
    if !acceptable_type(&request.content_type) {
        return Err(ApiError::BadRequest(format!(
            "contentType `{}` is not taken: send video/* or application/octet-stream",
            request.content_type.escape_default()
        )));
    }
    if request.file_name.is_empty() {
        return Err(ApiError::BadRequest("fileName is empty".into()));
    }
    let name = safe_file_name(Some(&request.file_name))?;
    if let Some(metadata) = &request.metadata {
        if !metadata.is_object() {
            return Err(ApiError::BadRequest(
                "`metadata` must be a JSON object".into(),
            ));
        }
        if metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(ApiError::BadRequest(format!(
                "`metadata` is larger than {MAX_METADATA_BYTES} bytes"
            )));
        }
    }
    state.jobs.check_room()?;

    let video_id = uuid::Uuid::new_v4().to_string();
    let valid_for = Duration::from_secs(state.settings.upload_url_ttl);
    let pending = PendingUpload {
        key: format!("pending/{video_id}_{name}"),
        content_type: request.content_type,
        size_bytes: request.size_bytes,
        expires: now_unix() + valid_for.as_secs(),
        metadata: request.metadata,
        video_id,
        receiving: false,
    };
    let terms = UploadTerms {
        content_type: pending.content_type.clone(),
        max_bytes: pending.size_bytes,
        valid_for,
    };
    let signed = match state.input.signed_upload(&pending.key, &terms).await {
        Ok(signed) => signed,
        Err(StoreError::Denied(why)) => {
            tracing::error!("cannot sign an upload URL: {why}");
            return Err(ApiError::Unavailable(
                "this instance cannot sign upload URLs now; see its logs".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let (upload_url, signed_headers) = match signed {
        Some(signed) => (signed.url, signed.headers),
        None => {
            let signer = local_signer(&state).await?;
            let url = format!(
                "{}/upload-url/{}?expires={}&signature={}",
                own_base_url(&headers),
                pending.video_id,
                pending.expires,
                signer.sign(&pending.video_id, pending.expires)
            );
            let headers = vec![("content-type".into(), pending.content_type.clone())];
            (url, headers)
        }
    };
    let record = serde_json::to_vec(&pending).map_err(anyhow::Error::from)?;
    state
        .input
        .put(&PendingUpload::key_of(&pending.video_id), record.into())
        .await?;
    tracing::info!(video_id = %pending.video_id, key = %pending.key, size = pending.size_bytes, "upload URL issued");

    let id = &pending.video_id;
    let expires_at = chrono::DateTime::from_timestamp(pending.expires as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let answer = UploadUrl {
        video_id: id.clone(),
        upload_url,
        method: "PUT",
        headers: signed_headers
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        expires_at,
        status_url: format!("/video-status/{id}"),
        playback_url: format!("{}/videos/{id}/manifest/master.m3u8", state.public_base_url),
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// The signer of this service's own upload URLs: its key is read from the input store, or made
/// there, on first use (so a store never used for direct uploads gets no key file).
async fn local_signer(state: &AppState) -> Result<&UploadSigner, ApiError> {
    let signer = state
        .upload_signer
        .get_or_try_init(|| UploadSigner::for_store(state.input.as_ref()))
        .await?;
    Ok(signer)
}

/// This service as the client reached it (its `Host`; https when a proxy says so).
fn own_base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_content_types_are_taken_and_others_are_not() {
        for good in [
            "video/mp4",
            "video/quicktime",
            "video/x-matroska",
            "application/octet-stream",
        ] {
            assert!(acceptable_type(good), "{good}");
        }
        for bad in [
            "text/html",
            "video/",
            "video/mp4; x=1",
            "image/png",
            "",
            "VIDEO/MP4",
        ] {
            assert!(!acceptable_type(bad), "{bad}");
        }
    }

    #[test]
    fn only_records_of_direct_uploads_are_records() {
        let id = uuid::Uuid::new_v4();
        assert!(PendingUpload::is_record(&format!("pending/{id}.json")));
        for other in [
            format!("pending/{id}_clip.json"),
            "pending/x.json".into(),
            format!("{id}.json"),
        ] {
            assert!(!PendingUpload::is_record(&other), "{other}");
        }
    }
}
