//! What operators watch: `/metrics` in the Prometheus text format, `/readyz` and `/healthz`.

use serde_json::json;

use crate::common::*;
use crate::support::*;

/// `/metrics` is valid Prometheus text with the job, request, upload, encode and memory
/// series after a job; `/readyz` says ready and `/healthz` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_readiness_and_health_after_a_job() {
    let ws = Workspace::new("api_metrics");
    let clip = small_clip(&ws, "clip.mp4");
    let clip_size = std::fs::metadata(&clip).unwrap().len() as f64;
    let app = spawn_app(&[]).await;
    let api = &app.api;

    let id = api.upload_accepted(&clip).await;
    let status = api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");

    let samples = scrape_until(api, |s| {
        metric(s, "transcoder_jobs_total", &[("state", "ready")]).is_some_and(|v| v >= 1.0)
    })
    .await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric(&samples, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in {samples:#?}"))
    };
    let uploads = value(
        "transcoder_http_requests_total",
        &[("route", "/upload"), ("status", "202")],
    );
    assert!(uploads >= 1.0, "{uploads}");
    let bytes = value("transcoder_upload_bytes_total", &[]);
    assert!(bytes >= clip_size, "{bytes} < {clip_size}");
    let encodes = value("transcoder_encode_seconds_bucket", &[("le", "+Inf")]);
    assert!(encodes >= 1.0, "{encodes}");
    assert!(value("transcoder_encode_seconds_count", &[]) >= 1.0);
    let rss = value("process_resident_memory_bytes", &[]);
    assert!(rss > 0.0, "{rss}");
    let available = value("transcoder_memory_available_bytes", &[]);
    assert!(available >= 0.0, "{available}");

    let ready = api.get("/readyz").await;
    assert_eq!(ready.code, 200, "{:?}", ready.body);
    assert_eq!(ready.body["ready"], true);
    let health = api.get("/healthz").await;
    assert_eq!((health.code, &health.body["status"]), (200, &json!("ok")));
    app.stop().await;
}
