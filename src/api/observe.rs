//! Per-request span (with the Cloud Trace link) and request metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::AppState;
use crate::telemetry::cloud_trace;

/// Runs the request inside a `request` span and counts it by route pattern (never the raw
/// path, which would make a label per video) and status.
pub async fn request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // The local CDN is a nested file service: no route pattern, so one label for all of it.
    let route = match request.extensions().get::<MatchedPath>() {
        Some(matched) => matched.as_str(),
        None if request.uri().path().starts_with("/videos/") => "/videos/{path}",
        None => "unmatched",
    }
    .to_string();
    let trace = request
        .headers()
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| cloud_trace(v, state.settings.google_cloud_project.as_deref()));
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        trace = tracing::field::Empty,
    );
    if let Some(trace) = trace {
        span.record("trace", trace);
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    span.in_scope(|| {
        if method == Method::GET && status < 400 {
            tracing::debug!(status, seconds, "request served");
        } else {
            tracing::info!(status, seconds, "request served");
        }
    });
    metrics::counter!("transcoder_http_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("transcoder_http_request_duration_seconds", "route" => route)
        .record(seconds);
    response
}
