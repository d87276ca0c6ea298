//! `POST /transcode`: a job for a source already in the input store. Three shapes arrive here:
//! the direct JSON trigger, a Pub/Sub push envelope (carrying either that JSON or a GCS object
//! notification), and a binary-mode CloudEvent for a finalized GCS object (Eventarc). All
//! become the same job; a redelivery finds the job it already started.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Accepted, ApiError, AppState, PendingUpload, upload};
use crate::jobs::{Admitted, JobRequest, Source, validate_video_id};
use crate::storage::validate_key;

mod body;

use body::{Parsed, parse};

/// `POST /transcode`: 202 with a new job, 200 with the job that already exists.
pub async fn transcode(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut trigger = match parse(&headers, &body)? {
        Parsed::Job(trigger) => trigger,
        Parsed::Ignored(why) => return Ok(ignored(why)),
    };
    validate_video_id(&trigger.video_id).map_err(ApiError::BadRequest)?;
    validate_key(&trigger.input_path)?;
    check_bucket(
        "inputBucket",
        trigger.input_bucket.as_deref(),
        state.input.bucket(),
    )?;
    check_bucket(
        "outputBucket",
        trigger.output_bucket.as_deref(),
        state.output().bucket(),
    )?;
    if trigger.names_object {
        match state.input.key_of_object(&trigger.input_path) {
            Some(key) => trigger.input_path = key,
            None => {
                let why = format!(
                    "object `{}` is outside the input store {}",
                    trigger.input_path,
                    state.input.describe()
                );
                return Ok(ignored(why));
            }
        }
    }
    if PendingUpload::is_record(&trigger.input_path) {
        return Ok(ignored(format!(
            "`{}` records a direct upload; it is not a source",
            trigger.input_path
        )));
    }
    if trigger.names_object {
        // An event may come after its object is gone (a refused upload removes its own).
        match state.input.size(&trigger.input_path).await {
            Ok(None) => {
                return Ok(ignored(format!(
                    "`{}` no longer exists",
                    trigger.input_path
                )));
            }
            Ok(Some(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (video_id, key) = (&trigger.video_id, &trigger.input_path);
    // A direct upload's finalize event: the uploader's metadata was kept beside the object.
    let upload = PendingUpload::of_object(&state, video_id, key).await;
    if let Some(left) = upload.as_ref().and_then(PendingUpload::receiving_left)
        && state.jobs.status(video_id).await?.is_none()
    {
        return Err(ApiError::Busy {
            message: format!("`{key}` is still being uploaded and queued by /upload; retry later"),
            retry_after: left.min(30),
        });
    }
    let metadata = upload.and_then(|u| u.metadata);
    let probe = upload::probe_local(&state, &trigger.input_path).await;
    let duration = probe.as_ref().map(|p| p.duration_seconds);
    let request = JobRequest {
        video_id: trigger.video_id,
        source: Source::Object {
            store: state.input.clone(),
            key: trigger.input_path,
        },
        output: state.output().clone(),
        metadata,
        probe,
    };
    let (code, status) = match state.jobs.submit(request).await? {
        Admitted::New(status) => (StatusCode::ACCEPTED, status),
        Admitted::Existing(status) => (StatusCode::OK, status),
    };
    tracing::info!(video_id = %status.video_id, code = code.as_u16(), "trigger accepted");
    Ok((code, Json(Accepted::new(&state, &status, duration))).into_response())
}

/// 200 `{"ignored": why}`: acknowledged, so the sender does not deliver it again.
fn ignored(why: String) -> Response {
    tracing::info!("ignored event: {why}");
    (StatusCode::OK, Json(json!({"ignored": why}))).into_response()
}

/// A store that is a bucket only takes triggers naming it (or naming none: the service's own);
/// a local store takes any name.
fn check_bucket(field: &str, named: Option<&str>, served: Option<&str>) -> Result<(), ApiError> {
    match (named, served) {
        (Some(named), Some(served)) if named != served => Err(ApiError::BadRequest(format!(
            "{field} `{named}` is not served by this service (it uses `{served}`)"
        ))),
        _ => Ok(()),
    }
}
