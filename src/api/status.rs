//! Read-only endpoints: a job's status, liveness, readiness, metrics and the API description.

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState};
use crate::jobs::validate_video_id;

/// `GET /video-status/{id}`: the job's status.json, never cached; 503 when the output store
/// cannot be read (not 404: the video may well exist).
pub async fn video_status(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    validate_video_id(&id).map_err(ApiError::BadRequest)?;
    let status = state
        .jobs
        .status(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no video `{id}`")))?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(status)).into_response())
}

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when this instance should get work: media libraries loaded and the same
/// major.minor versions as the build's headers, the input store readable and the output store
/// writable, not shutting down, and enough free disk for scratch; else 503 saying which check
/// failed. The store and disk checks are at most `REFRESH` old (see `readiness`). `libav` lists
/// each library's run-time and build-time version.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let media = crate::media::init().map_err(|e| e.to_string());
    let draining = match state.jobs.is_draining() {
        true => Err("shutting down".to_string()),
        false => Ok(()),
    };
    let slow = state.readiness.checks(&state).await;
    let libav = crate::media::versions::libraries();
    let versions = crate::media::versions::check(&libav);
    let checks = [
        ("media", media),
        ("libavVersions", versions),
        ("inputStore", slow.input),
        ("outputStore", slow.output),
        ("notDraining", draining),
        ("disk", slow.disk),
    ];
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let details: serde_json::Map<_, _> = checks
        .into_iter()
        .map(|(name, r)| {
            (
                name.to_string(),
                json!(r.err().unwrap_or_else(|| "ok".into())),
            )
        })
        .collect();
    let code = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let libav: serde_json::Map<_, _> = libav
        .iter()
        .map(|l| {
            (
                l.name.to_string(),
                json!({"runtime": l.runtime, "compiled": l.compiled}),
            )
        })
        .collect();
    let body = json!({"ready": ready, "checks": details, "libav": libav});
    (code, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text, with the memory gauges read now.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(rss) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    let available = state.jobs.engine().scheduler.available_memory();
    metrics::gauge!("transcoder_memory_available_bytes").set(available as f64);
    metrics::gauge!("transcoder_queue_depth")
        .set(state.jobs.engine().scheduler.queue_depth() as f64);
    metrics::gauge!("transcoder_jobs_active").set(state.jobs.active_count() as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// This process's resident memory.
pub(super) fn resident_bytes() -> Option<u64> {
    let pid = sysinfo::get_current_pid().ok()?;
    let mut system = sysinfo::System::new().ok()?;
    system.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), false);
    system.process(pid).map(sysinfo::Process::memory)
}

/// `GET /openapi.json`: the API description.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}
