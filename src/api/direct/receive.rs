//! `PUT /upload-url/{videoId}`: a direct upload received by the service itself (local input
//! store). Nothing is stored unless the URL's signature, expiry and signed Content-Type hold.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Version, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};

use super::{PendingUpload, local_signer, now_unix};
use crate::api::upload::start_stored;
use crate::api::{ApiError, AppState};
use crate::storage::StoreError;

/// The signed part of a local upload URL: `expires` and `signature` from its query (read as
/// text, so a malformed one is an unsigned URL, 403, like any other).
#[derive(Default)]
pub struct SignedQuery {
    expires: Option<u64>,
    signature: Option<String>,
}

impl SignedQuery {
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut query = Self::default();
        for (name, value) in pairs {
            match name.as_str() {
                "expires" => query.expires = value.parse().ok(),
                "signature" => query.signature = Some(value),
                _ => {}
            }
        }
        query
    }
}

/// `PUT /upload-url/{videoId}` (local input store): checks the signature, the expiry and the
/// signed Content-Type before a byte is stored, streams the body into the input store (at most
/// the declared size), then queues the job (202) with the uploader's metadata.
pub async fn receive(
    State(state): State<AppState>,
    Path(video_id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let query = SignedQuery::from_pairs(pairs);
    match store(&state, &video_id, &query, &headers, body).await {
        Ok(response) => response,
        Err((error, Some(body))) => {
            crate::api::auth::drain(body);
            error.into_refusal(version)
        }
        Err((error, None)) => error.into_response(),
    }
}

/// Stores the body and starts the job; a refusal before the body is read hands it back.
async fn store(
    state: &AppState,
    video_id: &str,
    query: &SignedQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, (ApiError, Option<Body>)> {
    let pending = match check(state, video_id, query, headers).await {
        Ok(pending) => pending,
        Err(e) => return Err((e, Some(body))),
    };
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(format!("the upload was cut short: {e}")))
        .boxed();
    let stored = state
        .input
        .put_stream(&pending.key, stream, pending.size_bytes)
        .await;
    let size = match stored {
        Ok(size) => size,
        Err(StoreError::TooLarge(_)) => {
            return Err((ApiError::TooLarge(pending.size_bytes), None));
        }
        Err(e) => return Err((e.into(), None)),
    };
    metrics::counter!("transcoder_upload_bytes_total").increment(size);
    tracing::info!(%video_id, size, key = %pending.key, "direct upload stored");
    start_stored(state, pending.video_id, pending.key, pending.metadata)
        .await
        .map_err(|e| (e, None))
}

/// The checks made before anything is stored: 403 for a URL that was not signed here, has
/// expired or is sent with another Content-Type than signed; 409 once the file is there.
async fn check(
    state: &AppState,
    video_id: &str,
    query: &SignedQuery,
    headers: &HeaderMap,
) -> Result<PendingUpload, ApiError> {
    if state.input.bucket().is_some() {
        return Err(ApiError::NotFound(
            "uploads go to the input bucket's signed URL".into(),
        ));
    }
    let signer = local_signer(state).await?;
    let (Some(expires), Some(signature)) = (query.expires, query.signature.as_deref()) else {
        return Err(ApiError::Forbidden(
            "the upload URL is not signed (expires, signature)".into(),
        ));
    };
    if !signer.verify(video_id, expires, signature) {
        return Err(ApiError::Forbidden(
            "the upload URL's signature does not match".into(),
        ));
    }
    if now_unix() > expires {
        return Err(ApiError::Forbidden(format!(
            "the upload URL expired at {}",
            chrono::DateTime::from_timestamp(expires as i64, 0).unwrap_or_default()
        )));
    }
    let record = state
        .input
        .get(&PendingUpload::key_of(video_id))
        .await?
        .ok_or_else(|| ApiError::Forbidden("this upload is no longer pending".into()))?;
    let pending: PendingUpload = serde_json::from_slice(&record).map_err(anyhow::Error::from)?;
    let sent_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if sent_type != Some(pending.content_type.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "the upload URL was signed for Content-Type `{}`",
            pending.content_type
        )));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > pending.size_bytes) {
        return Err(ApiError::TooLarge(pending.size_bytes));
    }
    if state.input.size(&pending.key).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "video {video_id} has been uploaded already"
        )));
    }
    state.jobs.check_room()?;
    Ok(pending)
}
